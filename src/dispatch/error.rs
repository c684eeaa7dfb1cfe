//! The proxy's own errors: what went wrong, whose fault it was, and the one place where an
//! error becomes the bytes a client reads and the `slotproxy_errors_total{kind}` label.
//!
//! A Redis error *reply* from a node is not one of these: it is forwarded as it is. These are
//! the errors the proxy answers itself, in Redis's words where Redis has them (so clients and
//! their error handling see what one Redis would say).

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use crate::backend::{BackendError, NodeAddr};
use crate::resp::encode;

/// Whose fault an error is: decides how it is counted and logged, and whether an operator
/// needs to look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something one Redis would refuse too (CROSSSLOT, bad arguments).
    Client,
    /// The proxy's policy or limits (an unsupported command, a full budget).
    Proxy,
    /// A node failed (unreachable, connection lost, timed out, malformed reply).
    Node,
    /// The cluster as a whole can't serve the request (slot not served, redirect loop).
    Cluster,
}

/// What went wrong; each kind has its Redis error code and metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Keys in more than one slot where one is needed.
    CrossSlot,
    /// A command or argument the proxy refuses as Redis would (wrong arity, bad value...).
    BadRequest,
    /// Not authenticated yet.
    NoAuth,
    /// A command the proxy does not support, or allows only with a flag.
    Unsupported,
    /// A proxy limit was reached (`max_blocking_connections`, ...).
    Limit,
    /// A transaction that can't run (EXECABORT).
    ExecAbort,
    /// No node serves the slot.
    SlotNotServed,
    /// MOVED/ASK followed more often than `max_redirects`.
    TooManyRedirects,
    /// Wrong credentials (AUTH, HELLO AUTH).
    WrongPass,
    /// The client broke the protocol (its connection is closed after the reply).
    Protocol,
    /// The whole cluster is down (no primary known).
    ClusterDown,
    /// A node answered something the proxy can't use (a merge of unexpected replies, a lost
    /// WAIT connection).
    Node,
    /// A round trip to a node failed.
    Backend(&'static str),
}

/// An error the proxy answers itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyError {
    pub kind: ErrorKind,
    /// The whole error line after `-`, starting with its code (`ERR ...`, `CROSSSLOT ...`).
    message: Cow<'static, str>,
    /// The node it concerns, if one.
    pub node: Option<NodeAddr>,
}

/// Every `kind` label [`ProxyError::answer`] counts (failed round trips are counted by the
/// driver under `BackendError::kind()`), so `/metrics` can show each at zero from the start.
pub const METRIC_KINDS: &[&str] = &[
    "crossslot",
    "bad_request",
    "noauth",
    "unsupported",
    "limit",
    "execabort",
    "slot_not_served",
    "too_many_redirects",
    "client_auth",
    "client_protocol",
    "clusterdown",
    "node_reply",
];

/// Redis's own CROSSSLOT text.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";
const SLOT_NOT_SERVED: &str = "CLUSTERDOWN Hash slot not served";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
const CLUSTER_DOWN: &str = "CLUSTERDOWN The cluster is down";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

impl ProxyError {
    fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> ProxyError {
        ProxyError {
            kind,
            message: message.into(),
            node: None,
        }
    }

    pub fn cross_slot() -> ProxyError {
        ProxyError::new(ErrorKind::CrossSlot, CROSSSLOT)
    }

    /// A request one Redis would refuse too; `message` starts with its code.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> ProxyError {
        ProxyError::new(ErrorKind::BadRequest, message)
    }

    pub fn no_auth() -> ProxyError {
        ProxyError::new(ErrorKind::NoAuth, "NOAUTH Authentication required.")
    }

    /// Not authenticated, in the words of the command that needs it; starts with `NOAUTH`.
    pub fn no_auth_because(message: &'static str) -> ProxyError {
        ProxyError::new(ErrorKind::NoAuth, message)
    }

    pub fn wrong_pass() -> ProxyError {
        ProxyError::new(ErrorKind::WrongPass, WRONGPASS)
    }

    /// A protocol error in what the client sent (Redis's own wording, after `ERR`).
    pub fn protocol(error: &dyn std::fmt::Display) -> ProxyError {
        ProxyError::new(ErrorKind::Protocol, format!("ERR {error}"))
    }

    pub fn cluster_down() -> ProxyError {
        ProxyError::new(ErrorKind::ClusterDown, CLUSTER_DOWN)
    }

    /// A node's answer the proxy can't use; `message` starts with its code.
    pub fn node(message: impl Into<Cow<'static, str>>) -> ProxyError {
        ProxyError::new(ErrorKind::Node, message)
    }

    /// A command the proxy refuses: `ERR <NAME> is not supported by slotproxy: <why>`.
    pub fn unsupported(name: &str, why: &str) -> ProxyError {
        ProxyError::new(
            ErrorKind::Unsupported,
            format!("ERR {} is not supported by slotproxy: {why}", shown(name)),
        )
    }

    /// A command that changes every node, refused without `--admin-commands`.
    pub fn admin_commands_off(name: &str) -> ProxyError {
        ProxyError::new(
            ErrorKind::Unsupported,
            format!(
                "ERR {} would change every node of the cluster: start slotproxy with --admin-commands to allow it",
                shown(name)
            ),
        )
    }

    /// Any other refusal of the proxy's policy; `message` starts with its code.
    pub fn proxy_policy(message: impl Into<Cow<'static, str>>) -> ProxyError {
        ProxyError::new(ErrorKind::Unsupported, message)
    }

    pub fn limit(message: impl Into<Cow<'static, str>>) -> ProxyError {
        ProxyError::new(ErrorKind::Limit, message)
    }

    pub fn exec_abort() -> ProxyError {
        ProxyError::new(ErrorKind::ExecAbort, EXECABORT)
    }

    pub fn slot_not_served() -> ProxyError {
        ProxyError::new(ErrorKind::SlotNotServed, SLOT_NOT_SERVED)
    }

    /// Out of redirects; `last` is the node's last redirect reply (`-MOVED ...\r\n`).
    pub fn too_many_redirects(last: &[u8]) -> ProxyError {
        let text = String::from_utf8_lossy(last.get(1..).unwrap_or_default());
        ProxyError::new(
            ErrorKind::TooManyRedirects,
            format!("ERR too many cluster redirects, last: {}", text.trim_end()),
        )
    }

    /// A failed round trip to a node.
    pub fn backend(error: &BackendError) -> ProxyError {
        let mut proxy_error =
            ProxyError::new(ErrorKind::Backend(error.kind()), format!("ERR {error}"));
        // A real address (`host:port`), not a placeholder for an unknown one.
        if error.addr().contains(':') {
            proxy_error.node = Some(NodeAddr::from(error.addr()));
        }
        proxy_error
    }

    /// A node that could not be reached and did not come back (nor a replacement) within
    /// `recovery_timeout`.
    pub fn not_recovered(
        error: &BackendError,
        recovery_timeout: std::time::Duration,
    ) -> ProxyError {
        let mut proxy_error = ProxyError::backend(error);
        proxy_error.message = format!(
            "{}; not back within recovery_timeout_ms = {}",
            proxy_error.message,
            recovery_timeout.as_millis()
        )
        .into();
        proxy_error
    }

    /// A node that could not be reached while `size` other requests already wait for theirs.
    pub fn recovery_queue_full(error: &BackendError, size: usize) -> ProxyError {
        let mut proxy_error = ProxyError::backend(error);
        proxy_error.message = format!(
            "{}; the recovery queue is full (recovery_queue_size = {size})",
            proxy_error.message
        )
        .into();
        proxy_error
    }

    /// The Redis error code: the message's first word (`ERR`, `CROSSSLOT`, `NOAUTH`...).
    pub fn code(&self) -> &str {
        self.message.split(' ').next().unwrap_or_default()
    }

    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self.kind {
            ErrorKind::CrossSlot
            | ErrorKind::BadRequest
            | ErrorKind::NoAuth
            | ErrorKind::WrongPass
            | ErrorKind::Protocol
            | ErrorKind::ExecAbort => Fault::Client,
            ErrorKind::Unsupported | ErrorKind::Limit => Fault::Proxy,
            ErrorKind::Node | ErrorKind::Backend(_) => Fault::Node,
            ErrorKind::SlotNotServed | ErrorKind::TooManyRedirects | ErrorKind::ClusterDown => {
                Fault::Cluster
            }
        }
    }

    /// The `kind` label of `slotproxy_errors_total`.
    pub fn metric_kind(&self) -> &'static str {
        match self.kind {
            ErrorKind::CrossSlot => "crossslot",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NoAuth => "noauth",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Limit => "limit",
            ErrorKind::ExecAbort => "execabort",
            ErrorKind::SlotNotServed => "slot_not_served",
            ErrorKind::TooManyRedirects => "too_many_redirects",
            ErrorKind::WrongPass => "client_auth",
            ErrorKind::Protocol => "client_protocol",
            ErrorKind::ClusterDown => "clusterdown",
            ErrorKind::Node => "node_reply",
            ErrorKind::Backend(kind) => kind,
        }
    }

    /// The error line without `-` and CRLF.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The reply a client reads: `-<message>\r\n`.
    pub fn to_reply(&self) -> Bytes {
        error_reply(&self.message)
    }

    /// The reply for the client, counted once under `slotproxy_errors_total{kind}`. A failed
    /// round trip to a node is not counted here: the driver counts every failed attempt where
    /// it happens, retried or not.
    pub fn answer(&self) -> Bytes {
        if !matches!(self.kind, ErrorKind::Backend(_)) {
            metrics::counter!("slotproxy_errors_total", "kind" => self.metric_kind()).increment(1);
        }
        self.to_reply()
    }
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// `-{message}\r\n`; `message` starts with its error code.
fn error_reply(message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 3);
    encode::error(&mut out, message);
    out.freeze()
}

/// `config|set` → `CONFIG SET`, as error messages name commands.
fn shown(name: &str) -> String {
    name.replace('|', " ").to_uppercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_codes_faults_and_labels() {
        let lost = BackendError::Lost {
            addr: "127.0.0.1:7000".into(),
        };
        let cases: Vec<(ProxyError, &str, Fault, &str)> = vec![
            (
                ProxyError::cross_slot(),
                "-CROSSSLOT Keys in request don't hash to the same slot\r\n",
                Fault::Client,
                "crossslot",
            ),
            (
                ProxyError::no_auth(),
                "-NOAUTH Authentication required.\r\n",
                Fault::Client,
                "noauth",
            ),
            (
                ProxyError::unsupported("cluster|failover", "it would change the cluster"),
                "-ERR CLUSTER FAILOVER is not supported by slotproxy: it would change the cluster\r\n",
                Fault::Proxy,
                "unsupported",
            ),
            (
                ProxyError::admin_commands_off("config|set"),
                "-ERR CONFIG SET would change every node of the cluster: start slotproxy with --admin-commands to allow it\r\n",
                Fault::Proxy,
                "unsupported",
            ),
            (
                ProxyError::slot_not_served(),
                "-CLUSTERDOWN Hash slot not served\r\n",
                Fault::Cluster,
                "slot_not_served",
            ),
            (
                ProxyError::too_many_redirects(b"-MOVED 1 127.0.0.1:7001\r\n"),
                "-ERR too many cluster redirects, last: MOVED 1 127.0.0.1:7001\r\n",
                Fault::Cluster,
                "too_many_redirects",
            ),
            (
                ProxyError::backend(&lost),
                "-ERR connection to node 127.0.0.1:7000 was lost after the command was sent; it may or may not have run\r\n",
                Fault::Node,
                "lost",
            ),
            (
                ProxyError::wrong_pass(),
                "-WRONGPASS invalid username-password pair or user is disabled.\r\n",
                Fault::Client,
                "client_auth",
            ),
            (
                ProxyError::cluster_down(),
                "-CLUSTERDOWN The cluster is down\r\n",
                Fault::Cluster,
                "clusterdown",
            ),
            (
                ProxyError::protocol(&"Protocol error: invalid multibulk length"),
                "-ERR Protocol error: invalid multibulk length\r\n",
                Fault::Client,
                "client_protocol",
            ),
            (
                ProxyError::exec_abort(),
                "-EXECABORT Transaction discarded because of previous errors.\r\n",
                Fault::Client,
                "execabort",
            ),
        ];
        for (error, reply, fault, label) in cases {
            if !matches!(error.kind, ErrorKind::Backend(_)) {
                assert!(METRIC_KINDS.contains(&label), "{label} is registered");
            }
            assert_eq!(error.to_reply(), reply.as_bytes(), "{error:?}");
            assert!(reply[1..].starts_with(error.code()), "{error:?}");
            assert_eq!(error.fault(), fault, "{error:?}");
            assert_eq!(error.metric_kind(), label, "{error:?}");
        }
    }

    #[test]
    fn a_failed_round_trip_names_its_node() {
        let lost = BackendError::Lost {
            addr: "127.0.0.1:7000".into(),
        };
        assert_eq!(
            ProxyError::backend(&lost).node,
            Some(NodeAddr::from("127.0.0.1:7000"))
        );
        assert_eq!(ProxyError::backend(&BackendError::closed()).node, None);
        assert_eq!(ProxyError::cross_slot().code(), "CROSSSLOT");
    }

    #[test]
    fn an_error_line_never_carries_a_line_break() {
        let error = ProxyError::bad_request("ERR bad\r\nvalue");
        assert_eq!(error.to_reply().iter().filter(|&&b| b == b'\n').count(), 1);
    }
}

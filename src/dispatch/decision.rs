//! What to do after each reply or failure of a request to a node: the one decision behind
//! every path that talks to a node (shared pipes, dedicated connections, EXEC, WATCH). A pure
//! function of the outcome and what happened so far, tested as a table; the driver
//! (`driver::drive`) carries it out, so redirects, backoff, deadlines and their metrics are the
//! same everywhere.

use std::time::Duration;

use bytes::Bytes;

use super::error::ProxyError;
use crate::backend::BackendError;
use crate::cluster::redirect::{classify, Redirect};
use crate::cluster::Slot;

/// Reconnect attempts for a request whose node can't be reached: enough to pick up a fresh
/// slot map after a failover, few enough that requests for a dead node fail fast.
pub const MAX_RECONNECTS: u32 = 2;

/// Whether a request may be sent again after its connection broke once it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resend {
    /// Reads: running them twice is harmless.
    Safe,
    /// Writes: never risk running them twice; answer an error instead.
    Never,
}

/// The outcome of one attempt: the node's reply, or why there is none.
#[derive(Clone, Copy, Debug)]
pub enum Outcome<'a> {
    Reply(&'a Bytes),
    Failed(&'a BackendError),
}

/// What a kind of request allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub max_redirects: u32,
    pub resend: Resend,
    /// Follow MOVED/ASK and retry TRYAGAIN/CLUSTERDOWN/LOADING at all (false for an EXEC under
    /// WATCH: only the node that watched can run it).
    pub follow: bool,
    /// `ASKING` can precede the request (not for MULTI...EXEC: ASKING applies to one command,
    /// so a transaction waits for the migration to finish instead).
    pub can_ask: bool,
    /// How long a request may wait for an unreachable node (`recovery_timeout_ms`).
    pub recovery_timeout: Duration,
    /// The recovery queue's size, for the error that says it is full.
    pub recovery_queue_size: usize,
    /// A blocking command (BLPOP, XREAD BLOCK, ...): when its node stops being a primary while
    /// it waits, the node answers `-UNBLOCKED ... instance state changed` before anything was
    /// popped, so it is sent again to the slot's new primary instead.
    pub reissue_unblocked: bool,
}

/// What happened to the request so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    pub redirects: u32,
    pub reconnects: u32,
    /// The last attempt went to a replica (a read under a replica read policy).
    pub on_replica: bool,
    pub recovery: Recovery,
}

/// Where a request stands while its node can't be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Recovery {
    /// Its node has answered every attempt so far.
    #[default]
    NotNeeded,
    /// In the recovery queue, waiting for the node (or its replacement) since this long.
    Waiting(Duration),
    /// The recovery queue had no room for it.
    QueueFull,
}

/// Why a request is retried after a pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryKind {
    TryAgain,
    ClusterDown,
    Loading,
    /// ASK inside a transaction: wait for the migration to finish.
    Migrating,
    /// The connection failed before the request could have run (or it is a read).
    Reconnect,
    /// A blocking command whose node became a replica while it waited.
    Unblocked,
    /// MOVED to the very address the reply came from: the name now leads to another process
    /// (see [`moved_to_itself`]); the node's connections are dropped and the request is sent
    /// again over a new one, which resolves the name again.
    MovedToItself,
}

impl RetryKind {
    /// Every kind counted under `slotproxy_retries_total` (reconnects are counted as errors).
    pub const COUNTED: [RetryKind; 6] = [
        RetryKind::TryAgain,
        RetryKind::ClusterDown,
        RetryKind::Loading,
        RetryKind::Migrating,
        RetryKind::Unblocked,
        RetryKind::MovedToItself,
    ];

    /// The `kind` label of `slotproxy_retries_total`.
    pub fn label(self) -> &'static str {
        match self {
            RetryKind::TryAgain => "tryagain",
            RetryKind::ClusterDown => "clusterdown",
            RetryKind::Loading => "loading",
            RetryKind::Migrating => "migrating",
            RetryKind::Reconnect => "reconnect",
            RetryKind::Unblocked => "unblocked",
            RetryKind::MovedToItself => "moved_to_itself",
        }
    }
}

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next<'a> {
    /// The reply goes to the client as it is.
    Final,
    /// The slot moved for good: patch the map, refresh, send to `to`.
    Moved { slot: Slot, to: &'a str },
    /// Send this request to `to`, preceded by `ASKING`.
    Ask { to: &'a str },
    /// A replica is loading: the slot's primary serves the read at once.
    ToPrimary,
    /// Wait (backing off) and send again where the map then says; past the deadline the
    /// outcome goes to the client as it is. `refresh`: the map is probably stale.
    Retry { kind: RetryKind, refresh: bool },
    /// Give up with this error.
    Fail(ProxyError),
}

/// Decides what follows `outcome`, which came from the node at `from` (as the proxy dialled
/// it; empty when unknown).
pub fn decide<'a>(
    outcome: Outcome<'a>,
    from: &str,
    attempts: &Attempts,
    rules: &Rules,
) -> Next<'a> {
    match outcome {
        Outcome::Reply(bytes) => {
            if rules.follow && rules.reissue_unblocked && unblocked_by_role_change(bytes) {
                return Next::Retry {
                    kind: RetryKind::Unblocked,
                    refresh: true,
                };
            }
            let Some(redirect) = classify(bytes).filter(|_| rules.follow) else {
                return Next::Final;
            };
            let out_of_redirects = attempts.redirects >= rules.max_redirects;
            match redirect {
                // Not a redirect at all: following it would send the request back to the same
                // connection, which would answer the same, until the redirects run out. Bounded
                // by the request deadline instead, as the name may take a moment to move.
                Redirect::Moved { addr, .. } if moved_to_itself(addr, from) => Next::Retry {
                    kind: RetryKind::MovedToItself,
                    refresh: true,
                },
                Redirect::Moved { .. } | Redirect::Ask { .. } if out_of_redirects => {
                    Next::Fail(ProxyError::too_many_redirects(bytes))
                }
                Redirect::Moved { slot, addr } => Next::Moved { slot, to: addr },
                Redirect::Ask { addr, .. } if rules.can_ask => Next::Ask { to: addr },
                Redirect::Ask { .. } => Next::Retry {
                    kind: RetryKind::Migrating,
                    refresh: false,
                },
                Redirect::Loading if attempts.on_replica => Next::ToPrimary,
                Redirect::Loading => Next::Retry {
                    kind: RetryKind::Loading,
                    refresh: false,
                },
                Redirect::TryAgain => Next::Retry {
                    kind: RetryKind::TryAgain,
                    refresh: false,
                },
                Redirect::ClusterDown => Next::Retry {
                    kind: RetryKind::ClusterDown,
                    refresh: true,
                },
            }
        }
        Outcome::Failed(error) => {
            let may_resend = error.certainly_not_sent() || rules.resend == Resend::Safe;
            let reconnect = Next::Retry {
                kind: RetryKind::Reconnect,
                refresh: true,
            };
            if !rules.follow || !may_resend {
                return Next::Fail(ProxyError::backend(error));
            }
            if attempts.reconnects < MAX_RECONNECTS {
                // A stale map (a failover) is fixed by a refresh and another try at once.
                return reconnect;
            }
            if !error.node_unreachable() {
                return Next::Fail(ProxyError::backend(error));
            }
            // The node is down or restarting: wait for it or its replacement, within bounds.
            match attempts.recovery {
                Recovery::QueueFull => Next::Fail(ProxyError::recovery_queue_full(
                    error,
                    rules.recovery_queue_size,
                )),
                Recovery::Waiting(waited) if waited >= rules.recovery_timeout => {
                    Next::Fail(ProxyError::not_recovered(error, rules.recovery_timeout))
                }
                Recovery::Waiting(_) | Recovery::NotNeeded => reconnect,
            }
        }
    }
}

/// Whether a MOVED to `to` sent by the node the proxy reached at `from` names that same
/// address. With `cluster-preferred-endpoint-type hostname` nodes announce names, and a
/// managed cluster (ElastiCache, MemoryDB) replaces a node by pointing its name at a new
/// process that took over the old one's data: the old process, now a replica, answers MOVED to
/// its own name. Only a new connection, which resolves the name again, reaches the new one.
/// Host names compare without regard to case, as DNS does; an unknown `from` matches nothing.
pub fn moved_to_itself(to: &str, from: &str) -> bool {
    !from.is_empty() && to.eq_ignore_ascii_case(from)
}

/// Redis's answer to the commands blocked on a primary that turns into a replica (a
/// failover): nothing was served to them. Not `-UNBLOCKED client unblocked via CLIENT
/// UNBLOCK`, which a client asked for.
fn unblocked_by_role_change(reply: &[u8]) -> bool {
    reply.starts_with(b"-UNBLOCKED force unblock from blocking operation, instance state changed")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPE_READ: Rules = Rules {
        max_redirects: 5,
        resend: Resend::Safe,
        follow: true,
        can_ask: true,
        reissue_unblocked: false,
        recovery_timeout: Duration::from_secs(2),
        recovery_queue_size: 100,
    };
    const BLOCKING: Rules = Rules {
        resend: Resend::Never,
        reissue_unblocked: true,
        ..PIPE_READ
    };
    const PIPE_WRITE: Rules = Rules {
        resend: Resend::Never,
        ..PIPE_READ
    };
    const EXEC: Rules = Rules {
        resend: Resend::Never,
        can_ask: false,
        ..PIPE_READ
    };
    const WATCHED_EXEC: Rules = Rules {
        follow: false,
        ..EXEC
    };

    /// Where the replies of the tables come from.
    const FROM: &str = "127.0.0.1:7000";

    fn slot(n: u64) -> Slot {
        Slot::new(n).unwrap()
    }

    fn retry(kind: RetryKind, refresh: bool) -> Next<'static> {
        Next::Retry { kind, refresh }
    }

    #[test]
    fn replies() {
        let fresh = Attempts::default();
        let many = Attempts {
            redirects: 5,
            ..Attempts::default()
        };
        let replica = Attempts {
            on_replica: true,
            ..Attempts::default()
        };
        let cases: Vec<(&str, &[u8], Attempts, Rules, Next)> = vec![
            ("a value", b"$1\r\nv\r\n", fresh, PIPE_READ, Next::Final),
            (
                "an ordinary error",
                b"-ERR no\r\n",
                fresh,
                PIPE_READ,
                Next::Final,
            ),
            (
                "moved",
                b"-MOVED 3999 127.0.0.1:7002\r\n",
                fresh,
                PIPE_WRITE,
                Next::Moved {
                    slot: slot(3999),
                    to: "127.0.0.1:7002",
                },
            ),
            (
                "ask",
                b"-ASK 3999 127.0.0.1:7002\r\n",
                fresh,
                PIPE_WRITE,
                Next::Ask {
                    to: "127.0.0.1:7002",
                },
            ),
            (
                "moved past max_redirects",
                b"-MOVED 3999 127.0.0.1:7002\r\n",
                many,
                PIPE_READ,
                Next::Fail(ProxyError::too_many_redirects(
                    b"-MOVED 3999 127.0.0.1:7002\r\n",
                )),
            ),
            (
                "ask past max_redirects",
                b"-ASK 1 127.0.0.1:7002\r\n",
                many,
                PIPE_READ,
                Next::Fail(ProxyError::too_many_redirects(b"-ASK 1 127.0.0.1:7002\r\n")),
            ),
            (
                "tryagain",
                b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
                fresh,
                PIPE_WRITE,
                retry(RetryKind::TryAgain, false),
            ),
            (
                "clusterdown refreshes",
                b"-CLUSTERDOWN The cluster is down\r\n",
                fresh,
                PIPE_READ,
                retry(RetryKind::ClusterDown, true),
            ),
            (
                "loading primary: wait",
                b"-LOADING Redis is loading the dataset in memory\r\n",
                fresh,
                PIPE_READ,
                retry(RetryKind::Loading, false),
            ),
            (
                "blocking command whose primary became a replica: sent again",
                b"-UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)\r\n",
                fresh,
                BLOCKING,
                retry(RetryKind::Unblocked, true),
            ),
            (
                "unblocked by CLIENT UNBLOCK: the client's answer",
                b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n",
                fresh,
                BLOCKING,
                Next::Final,
            ),
            (
                "role change on a non-blocking request: final",
                b"-UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)\r\n",
                fresh,
                PIPE_WRITE,
                Next::Final,
            ),
            (
                "loading replica: the primary serves",
                b"-LOADING Redis is loading the dataset in memory\r\n",
                replica,
                PIPE_READ,
                Next::ToPrimary,
            ),
            (
                "exec: moved is followed",
                b"-MOVED 1 127.0.0.1:7001\r\n",
                fresh,
                EXEC,
                Next::Moved {
                    slot: slot(1),
                    to: "127.0.0.1:7001",
                },
            ),
            (
                "exec: ask waits for the migration",
                b"-ASK 1 127.0.0.1:7001\r\n",
                fresh,
                EXEC,
                retry(RetryKind::Migrating, false),
            ),
            (
                "watched exec: moved is the answer",
                b"-MOVED 1 127.0.0.1:7001\r\n",
                fresh,
                WATCHED_EXEC,
                Next::Final,
            ),
            (
                "moved to the node that sent it: new connection, after a pause",
                b"-MOVED 3999 127.0.0.1:7000\r\n",
                fresh,
                PIPE_WRITE,
                retry(RetryKind::MovedToItself, true),
            ),
            (
                "moved to itself past max_redirects: still bounded by the deadline only",
                b"-MOVED 3999 127.0.0.1:7000\r\n",
                many,
                PIPE_READ,
                retry(RetryKind::MovedToItself, true),
            ),
            (
                "exec moved to itself: nothing ran, new connection",
                b"-MOVED 1 127.0.0.1:7000\r\n",
                fresh,
                EXEC,
                retry(RetryKind::MovedToItself, true),
            ),
            (
                "watched exec moved to itself: the answer, as any redirect",
                b"-MOVED 1 127.0.0.1:7000\r\n",
                fresh,
                WATCHED_EXEC,
                Next::Final,
            ),
            (
                "ask to itself is an ordinary ask",
                b"-ASK 1 127.0.0.1:7000\r\n",
                fresh,
                PIPE_READ,
                Next::Ask {
                    to: "127.0.0.1:7000",
                },
            ),
            (
                "watched exec: tryagain is the answer",
                b"-TRYAGAIN x\r\n",
                fresh,
                WATCHED_EXEC,
                Next::Final,
            ),
        ];
        for (name, reply, attempts, rules, expected) in cases {
            let reply = Bytes::from_static(reply);
            assert_eq!(
                decide(Outcome::Reply(&reply), FROM, &attempts, &rules),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn moved_to_itself_compares_whole_addresses() {
        let cases: &[(&str, &str, bool)] = &[
            ("cache-0001.example:6379", "cache-0001.example:6379", true),
            ("Cache-0001.Example:6379", "cache-0001.example:6379", true),
            ("127.0.0.1:7000", "127.0.0.1:7000", true),
            ("[::1]:7000", "[::1]:7000", true),
            // Another port, another host, or a prefix of the address: a real redirect.
            ("cache-0001.example:6380", "cache-0001.example:6379", false),
            ("cache-0002.example:6379", "cache-0001.example:6379", false),
            ("127.0.0.1:700", "127.0.0.1:7000", false),
            ("127.0.0.2:7000", "127.0.0.1:7000", false),
            // Where the reply came from is unknown: never taken for a loop.
            ("127.0.0.1:7000", "", false),
        ];
        for &(to, from, expected) in cases {
            assert_eq!(
                moved_to_itself(to, from),
                expected,
                "MOVED {to} from {from}"
            );
        }
    }

    #[test]
    fn failures() {
        let addr = || "127.0.0.1:7000".to_string();
        let not_sent = BackendError::NotSent { addr: addr() };
        let unreachable = BackendError::Unreachable {
            addr: addr(),
            reason: "refused".into(),
        };
        let lost = BackendError::Lost { addr: addr() };
        let timeout = BackendError::Timeout {
            addr: addr(),
            ms: 10,
        };
        let fresh = Attempts::default();
        let spent = Attempts {
            reconnects: MAX_RECONNECTS,
            ..Attempts::default()
        };
        let waiting = |ms| Attempts {
            recovery: Recovery::Waiting(Duration::from_millis(ms)),
            ..spent
        };
        let auth = BackendError::Auth {
            addr: addr(),
            reason: "WRONGPASS".into(),
        };
        let reconnect = retry(RetryKind::Reconnect, true);
        let cases: Vec<(&str, &BackendError, Attempts, Rules, Next)> = vec![
            (
                "unsent write",
                &not_sent,
                fresh,
                PIPE_WRITE,
                reconnect.clone(),
            ),
            (
                "unreachable write",
                &unreachable,
                fresh,
                PIPE_WRITE,
                reconnect.clone(),
            ),
            (
                "a write that may have run is never resent",
                &lost,
                fresh,
                PIPE_WRITE,
                Next::Fail(ProxyError::backend(&lost)),
            ),
            (
                "a timed-out write is never resent",
                &timeout,
                fresh,
                PIPE_WRITE,
                Next::Fail(ProxyError::backend(&timeout)),
            ),
            (
                "a lost read is resent",
                &lost,
                fresh,
                PIPE_READ,
                reconnect.clone(),
            ),
            (
                "out of quick reconnects, the node unreachable: wait for it",
                &not_sent,
                spent,
                PIPE_READ,
                reconnect.clone(),
            ),
            (
                "waiting for the node, within recovery_timeout",
                &unreachable,
                waiting(1999),
                PIPE_WRITE,
                reconnect.clone(),
            ),
            (
                "not back within recovery_timeout",
                &unreachable,
                waiting(2000),
                PIPE_WRITE,
                Next::Fail(ProxyError::not_recovered(
                    &unreachable,
                    Duration::from_secs(2),
                )),
            ),
            (
                "no room in the recovery queue",
                &unreachable,
                Attempts {
                    recovery: Recovery::QueueFull,
                    ..spent
                },
                PIPE_READ,
                Next::Fail(ProxyError::recovery_queue_full(&unreachable, 100)),
            ),
            (
                "the first quick reconnects need no room in the recovery queue",
                &unreachable,
                Attempts {
                    recovery: Recovery::QueueFull,
                    ..fresh
                },
                PIPE_READ,
                reconnect.clone(),
            ),
            (
                "a lost read out of reconnects: the node answered before, no wait",
                &lost,
                spent,
                PIPE_READ,
                Next::Fail(ProxyError::backend(&lost)),
            ),
            (
                "refused credentials: waiting does not cure them",
                &auth,
                spent,
                PIPE_READ,
                Next::Fail(ProxyError::backend(&auth)),
            ),
            (
                "an exec that may have run",
                &lost,
                fresh,
                EXEC,
                Next::Fail(ProxyError::backend(&lost)),
            ),
            (
                "an exec never sent",
                &not_sent,
                fresh,
                EXEC,
                reconnect.clone(),
            ),
            (
                "a watched exec never moves",
                &not_sent,
                fresh,
                WATCHED_EXEC,
                Next::Fail(ProxyError::backend(&not_sent)),
            ),
        ];
        for (name, error, attempts, rules, expected) in cases {
            assert_eq!(
                decide(Outcome::Failed(error), FROM, &attempts, &rules),
                expected,
                "{name}"
            );
        }
    }
}

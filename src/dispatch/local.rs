//! Commands the proxy answers itself, as a single Redis server would.

use bytes::{Bytes, BytesMut};

use super::error::ProxyError;
use super::reply;
use super::session::ClientState;
use super::worker::Worker;
use crate::auth::{AuthResult, Users};
use crate::cluster::Slot;
use crate::resp::{encode, Command, Protocol};
use crate::shared::Counters;

/// `PING [message]`; more arguments get Redis's arity error (its table says "at least one").
pub fn ping(cmd: &Command) -> Result<Bytes, ProxyError> {
    if cmd.argc() > 2 {
        return Err(ping_arity());
    }
    Ok(match cmd.arg(1) {
        None => Bytes::from_static(b"+PONG\r\n"),
        Some(message) => reply::bulk(message),
    })
}

fn ping_arity() -> ProxyError {
    ProxyError::bad_request("ERR wrong number of arguments for 'ping' command")
}

/// PING in subscriber mode answers `["pong", message]`, as Redis does.
pub fn subscribed_ping(cmd: &Command) -> Result<Bytes, ProxyError> {
    if cmd.argc() > 2 {
        return Err(ping_arity());
    }
    let mut out = BytesMut::with_capacity(32);
    encode::array_header(&mut out, 2);
    encode::bulk(&mut out, b"pong");
    encode::bulk(&mut out, cmd.arg(1).unwrap_or_default());
    Ok(out.freeze())
}

pub fn echo(cmd: &Command) -> Bytes {
    reply::bulk(cmd.arg(1).unwrap_or_default())
}

pub fn select(cmd: &Command) -> Result<Bytes, ProxyError> {
    match cmd.arg(1) {
        Some(b"0") => Ok(reply::ok()),
        Some(db)
            if std::str::from_utf8(db)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .is_none() =>
        {
            Err(ProxyError::bad_request(
                "ERR value is not an integer or out of range",
            ))
        }
        _ => Err(ProxyError::bad_request(
            "ERR SELECT is not allowed in cluster mode",
        )),
    }
}

/// `AUTH [user] password`, against the proxy's own users (see `auth.rs`), never the nodes'.
pub fn auth(cmd: &Command, client: &mut ClientState, users: &Users) -> Result<Bytes, ProxyError> {
    let (user, password) = match cmd.argc() {
        2 => (None, cmd.arg(1).unwrap_or_default()),
        _ => (cmd.arg(1), cmd.arg(2).unwrap_or_default()),
    };
    authenticate(client, users, user, password)?;
    Ok(reply::ok())
}

/// Checks credentials; on success the client is authenticated.
fn authenticate(
    client: &mut ClientState,
    users: &Users,
    user: Option<&[u8]>,
    password: &[u8],
) -> Result<(), ProxyError> {
    match users.check(user, password) {
        AuthResult::Ok => {
            client.authenticated = true;
            client.user = user.map(|u| String::from_utf8_lossy(u).into_owned());
            Ok(())
        }
        AuthResult::WrongPass => Err(ProxyError::wrong_pass()),
        AuthResult::NoPasswordConfigured if user.is_some() => {
            // `AUTH default x` with a nopass default user: Redis accepts it.
            client.authenticated = true;
            client.user = None;
            Ok(())
        }
        AuthResult::NoPasswordConfigured => Err(ProxyError::bad_request(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        )),
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: switches the client to RESP2 or RESP3
/// (the switch takes effect with this reply, which is a map in RESP3) and names it.
pub fn hello(cmd: &Command, client: &mut ClientState, users: &Users) -> Result<Bytes, ProxyError> {
    let hello = Hello::parse(cmd, client.protocol)?;
    match hello.credentials {
        Some((user, password)) => authenticate(client, users, Some(user), password)?,
        None if !client.authenticated => {
            return Err(ProxyError::no_auth_because("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
        }
        None => {}
    }
    if let Some(name) = hello.name {
        if !valid_client_name(&name) {
            return Err(bad_client_name());
        }
        client.name = (!name.is_empty()).then_some(name);
    }
    client.protocol = hello.protocol;
    Ok(hello_reply(client.id, hello.protocol))
}

/// The arguments of a HELLO.
struct Hello<'a> {
    protocol: Protocol,
    credentials: Option<(&'a [u8], &'a [u8])>,
    name: Option<Bytes>,
}

impl<'a> Hello<'a> {
    /// `current`: the client's protocol, kept when HELLO names none.
    fn parse(cmd: &'a Command, current: Protocol) -> Result<Hello<'a>, ProxyError> {
        let mut hello = Hello {
            protocol: current,
            credentials: None,
            name: None,
        };
        let mut i = 1;
        if let Some(version) = cmd.arg(1) {
            hello.protocol = match std::str::from_utf8(version)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
            {
                Some(2) => Protocol::Resp2,
                Some(3) => Protocol::Resp3,
                Some(_) => {
                    return Err(ProxyError::bad_request(
                        "NOPROTO unsupported protocol version",
                    ))
                }
                None => {
                    return Err(ProxyError::bad_request(
                        "ERR Protocol version is not an integer or out of range",
                    ))
                }
            };
            i = 2;
        }
        while let Some(option) = cmd.arg(i) {
            if option.eq_ignore_ascii_case(b"AUTH") && i + 2 < cmd.argc() {
                hello.credentials = Some((
                    cmd.arg(i + 1).unwrap_or_default(),
                    cmd.arg(i + 2).unwrap_or_default(),
                ));
                i += 3;
            } else if option.eq_ignore_ascii_case(b"SETNAME") && i + 1 < cmd.argc() {
                hello.name = cmd.arg_bytes(i + 1);
                i += 2;
            } else {
                return Err(ProxyError::bad_request(format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(option)
                )));
            }
        }
        Ok(hello)
    }
}

/// HELLO's server description, as a RESP2 array or a RESP3 map.
fn hello_reply(id: u64, protocol: Protocol) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    match protocol {
        Protocol::Resp2 => encode::array_header(&mut out, 14),
        Protocol::Resp3 => encode::map_header(&mut out, 7),
    }
    for (key, value) in [
        ("server", "slotproxy"),
        ("version", env!("CARGO_PKG_VERSION")),
    ] {
        encode::bulk(&mut out, key.as_bytes());
        encode::bulk(&mut out, value.as_bytes());
    }
    encode::bulk(&mut out, b"proto");
    encode::integer(
        &mut out,
        match protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        },
    );
    encode::bulk(&mut out, b"id");
    encode::integer(&mut out, id as i64);
    for (key, value) in [("mode", "standalone"), ("role", "master")] {
        encode::bulk(&mut out, key.as_bytes());
        encode::bulk(&mut out, value.as_bytes());
    }
    encode::bulk(&mut out, b"modules");
    encode::array_header(&mut out, 0);
    out.freeze()
}

pub(super) fn bad_client_name() -> ProxyError {
    ProxyError::bad_request(
        "ERR Client names cannot contain spaces, newlines or special characters.",
    )
}

pub(super) fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

pub fn keyslot(cmd: &Command) -> Bytes {
    reply::integer(i64::from(Slot::of(cmd.arg(2).unwrap_or_default()).get()))
}

/// The `# Proxy` section of INFO.
pub fn proxy_info(worker: &Worker) -> String {
    let shared = &worker.shared;
    let map = shared.topology.map();
    let mut info = format!(
        "# Proxy\r\nproxy_version:{}\r\nproxy_uptime_in_seconds:{}\r\nproxy_workers:{}\r\nproxy_connected_clients:{}\r\n\
proxy_cluster_shards:{}\r\nproxy_replicas_known:{}\r\nproxy_slots_covered:{}\r\nproxy_topology_generation:{}\r\nproxy_topology_age_ms:{}\r\nproxy_commands_known:{}\r\n\
proxy_moved_redirects:{}\r\nproxy_ask_redirects:{}\r\nproxy_retries:{}\r\nproxy_backend_errors:{}\r\n",
        env!("CARGO_PKG_VERSION"),
        shared.started.elapsed().as_secs(),
        shared.workers,
        shared.connected_clients(),
        map.shards().len(),
        map.shards().iter().map(|s| s.replicas.len()).sum::<usize>(),
        map.covered_slots(),
        shared.topology.generation(),
        shared.topology.age().map_or(-1, |a| a.as_millis() as i64),
        shared.commands.load().len(),
        Counters::get(&shared.counters.moved),
        Counters::get(&shared.counters.ask),
        Counters::get(&shared.counters.retries),
        Counters::get(&shared.counters.backend_errors),
    );
    if shared.config.near_cache.enabled {
        use std::sync::atomic::Ordering::Relaxed;
        let n = &shared.near_cache;
        info.push_str(&format!(
            "proxy_near_cache_hits:{}\r\nproxy_near_cache_misses:{}\r\nproxy_near_cache_invalidations:{}\r\n\
proxy_near_cache_evictions:{}\r\nproxy_near_cache_bytes:{}\r\nproxy_near_cache_entries:{}\r\n",
            n.hits.load(Relaxed),
            n.misses.load(Relaxed),
            n.invalidations.load(Relaxed),
            n.evictions.load(Relaxed),
            n.bytes.load(Relaxed),
            n.entries.load(Relaxed),
        ));
    }
    info
}

/// The payload of a bulk string reply.
pub fn bulk_text(reply: &[u8]) -> Option<&[u8]> {
    match reply.first() {
        // A RESP3 node answers INFO with a verbatim string: `=len\r\ntxt:...`.
        Some(b'=') => bulk_body(reply.get(1..)?)?.get(4..),
        _ => bulk_body(reply.strip_prefix(b"$")?),
    }
}

/// The payload of a bulk string given without its type byte.
fn bulk_body(rest: &[u8]) -> Option<&[u8]> {
    let line_end = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..line_end]).ok()?.parse().ok()?;
    rest.get(line_end + 2..line_end + 2 + len)
}

/// Whether `INFO args` asks for the proxy section.
pub fn wants_proxy_section(cmd: &Command) -> bool {
    cmd.argc() == 1
        || cmd.args().skip(1).any(|s| {
            ["proxy", "all", "everything", "default"]
                .iter()
                .any(|w| s.eq_ignore_ascii_case(w.as_bytes()))
        })
}

/// Whether the node should be asked at all (`INFO proxy` alone needs no node).
pub fn only_proxy_section(cmd: &Command) -> bool {
    cmd.argc() > 1 && cmd.args().skip(1).all(|s| s.eq_ignore_ascii_case(b"proxy"))
}

//! The `CLIENT` command family, answered from the proxy's own clients (the registry every
//! worker shares) in Redis 7's words and formats: LIST, INFO, ID, KILL, SETNAME, GETNAME,
//! SETINFO, NO-EVICT, NO-TOUCH, REPLY, PAUSE, UNPAUSE, UNBLOCK; TRACKING and its queries are
//! [`tracking`]'s. Also what `CLIENT PAUSE` holds ([`pause_hold`]).

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::driver::{self, Resend, Target};
use super::error::ProxyError;
use super::local::{bad_client_name, valid_client_name};
use super::reply::{self, Reply};
use super::session::ClientState;
use super::tracking;
use super::worker::Worker;
use crate::command::CommandTable;
use crate::registry::{flag, ClientEntry, ClientType, PauseMode, Registry};
use crate::resp::{Command, Protocol};

/// The reply to `CLIENT <sub> ...`.
pub fn client(worker: &Rc<Worker>, client: &mut ClientState, cmd: &Command) -> Reply {
    let sub = String::from_utf8_lossy(cmd.arg(1).unwrap_or_default()).to_lowercase();
    let result = match sub.as_str() {
        "unblock" => {
            client.hold_until_replied = true;
            return unblock(worker, cmd);
        }
        "tracking" if cmd.argc() >= 3 => return tracking::tracking(worker, client, cmd),
        "help" => {
            // Redis's own help text, from any node.
            return Reply::later(driver::execute(
                worker.clone(),
                cmd.raw().clone(),
                Target::Any,
                Resend::Safe,
            ));
        }
        _ => answer(worker, client, &sub, cmd),
    };
    result.unwrap_or_else(|error| error.answer()).into()
}

/// Subcommands answered at once.
fn answer(
    worker: &Worker,
    client: &mut ClientState,
    sub: &str,
    cmd: &Command,
) -> Result<Bytes, ProxyError> {
    let argc = cmd.argc();
    let fixed = match sub {
        "id" | "getname" | "info" | "unpause" | "getredir" | "trackinginfo" => Some(2),
        "setname" | "no-evict" | "no-touch" | "reply" | "caching" => Some(3),
        "setinfo" => Some(4),
        _ => None,
    };
    if fixed.is_some_and(|n| n != argc) {
        return Err(wrong_arity(sub));
    }
    let registry = &worker.shared.clients;
    Ok(match sub {
        "id" => reply::integer(client.id as i64),
        "getname" => client
            .name
            .as_deref()
            .map_or_else(|| reply::nil(client.protocol), reply::bulk),
        "setname" => {
            let name = cmd.arg_bytes(2).unwrap_or_default();
            if !valid_client_name(&name) {
                return Err(bad_client_name());
            }
            client.name = (!name.is_empty()).then_some(name);
            client.publish();
            reply::ok()
        }
        "setinfo" => {
            setinfo(client, cmd)?;
            client.publish();
            reply::ok()
        }
        "info" => {
            let table = worker.shared.commands.load();
            let line = registry.line(client.entry(), &last_command(&table, client.entry()));
            verbatim(client.protocol, line.as_bytes())
        }
        "list" => list(worker, client, cmd)?,
        "kill" => kill(worker, client, cmd)?,
        "no-evict" => {
            client.entry().set_flag(flag::NO_EVICT, on_off(cmd.arg(2))?);
            reply::ok()
        }
        "no-touch" => {
            client.entry().set_flag(flag::NO_TOUCH, on_off(cmd.arg(2))?);
            reply::ok()
        }
        "reply" => reply_mode(client, cmd.arg(2).unwrap_or_default())?,
        "pause" => pause(registry, cmd)?,
        "unpause" => {
            registry.pause.stop();
            reply::ok()
        }
        "getredir" => tracking::getredir(worker, client),
        "trackinginfo" => tracking::trackinginfo(worker, client),
        "caching" => tracking::caching(client, cmd)?,
        _ => {
            return Err(ProxyError::bad_request(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(cmd.arg(1).unwrap_or_default())
            )))
        }
    })
}

fn wrong_arity(sub: &str) -> ProxyError {
    ProxyError::bad_request(format!(
        "ERR wrong number of arguments for 'client|{sub}' command"
    ))
}

fn syntax_error() -> ProxyError {
    ProxyError::bad_request("ERR syntax error")
}

/// `on` / `off`, case-insensitive, else Redis's syntax error.
fn on_off(arg: Option<&[u8]>) -> Result<bool, ProxyError> {
    match arg {
        Some(a) if a.eq_ignore_ascii_case(b"on") => Ok(true),
        Some(a) if a.eq_ignore_ascii_case(b"off") => Ok(false),
        _ => Err(syntax_error()),
    }
}

fn setinfo(client: &mut ClientState, cmd: &Command) -> Result<(), ProxyError> {
    let attr = cmd.arg(2).unwrap_or_default();
    let value = cmd.arg_bytes(3).unwrap_or_default();
    if attr.eq_ignore_ascii_case(b"lib-name") {
        client.lib_name = Some(value);
    } else if attr.eq_ignore_ascii_case(b"lib-ver") {
        client.lib_ver = Some(value);
    } else {
        return Err(ProxyError::bad_request(format!(
            "ERR Unrecognized option '{}'",
            String::from_utf8_lossy(attr)
        )));
    }
    Ok(())
}

/// The name of `entry`'s last command, as `cmd=` shows it (`NULL` before the first).
fn last_command(table: &CommandTable, entry: &ClientEntry) -> String {
    entry
        .last_command()
        .and_then(|id| table.by_id(id))
        .map_or_else(|| "NULL".to_string(), |spec| spec.name.clone())
}

/// Text as Redis sends CLIENT LIST/INFO: a verbatim string in RESP3, a bulk string in RESP2.
fn verbatim(protocol: Protocol, text: &[u8]) -> Bytes {
    match protocol {
        Protocol::Resp2 => reply::bulk(text),
        Protocol::Resp3 => {
            let mut out = BytesMut::with_capacity(text.len() + 16);
            out.extend_from_slice(format!("={}\r\ntxt:", text.len() + 4).as_bytes());
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
            out.freeze()
        }
    }
}

/// `CLIENT LIST [TYPE type | ID id [id ...]]`.
fn list(worker: &Worker, client: &ClientState, cmd: &Command) -> Result<Bytes, ProxyError> {
    let registry = &worker.shared.clients;
    let mut clients = registry.all();
    match cmd.arg(2) {
        None => {}
        Some(option) if option.eq_ignore_ascii_case(b"type") && cmd.argc() == 4 => {
            let name = cmd.arg(3).unwrap_or_default();
            let kind = ClientType::parse(name).ok_or_else(|| unknown_type(name))?;
            clients.retain(|c| c.client_type() == kind);
        }
        Some(option) if option.eq_ignore_ascii_case(b"id") && cmd.argc() >= 4 => {
            let mut ids = Vec::with_capacity(cmd.argc() - 3);
            for arg in cmd.args().skip(3) {
                ids.push(
                    parse_i64(arg)
                        .ok_or_else(|| ProxyError::bad_request("ERR Invalid client ID"))?,
                );
            }
            // In the order asked, as Redis lists them.
            clients = ids
                .into_iter()
                .filter_map(|id| u64::try_from(id).ok().and_then(|id| registry.get(id)))
                .collect();
        }
        Some(_) => return Err(syntax_error()),
    }
    let table = worker.shared.commands.load();
    let mut text = String::with_capacity(clients.len() * 320);
    for entry in &clients {
        text.push_str(&registry.line(entry, &last_command(&table, entry)));
    }
    Ok(verbatim(client.protocol, text.as_bytes()))
}

fn unknown_type(name: &[u8]) -> ProxyError {
    ProxyError::bad_request(format!(
        "ERR Unknown client type '{}'",
        String::from_utf8_lossy(name)
    ))
}

fn parse_i64(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// The filters of `CLIENT KILL`; every one given must match.
#[derive(Default)]
struct KillFilter {
    id: Option<u64>,
    addr: Option<String>,
    laddr: Option<String>,
    kind: Option<ClientType>,
    user: Option<String>,
    /// Only clients connected longer than this many seconds (Redis 7.4's MAXAGE).
    max_age: Option<u64>,
    skip_me: bool,
}

impl KillFilter {
    /// The old form `CLIENT KILL ip:port` (never skips the caller), or the filters.
    fn parse(worker: &Worker, cmd: &Command) -> Result<(KillFilter, bool), ProxyError> {
        if cmd.argc() == 3 {
            let addr = String::from_utf8_lossy(cmd.arg(2).unwrap_or_default()).into_owned();
            let filter = KillFilter {
                addr: Some(addr),
                ..KillFilter::default()
            };
            return Ok((filter, true));
        }
        let mut filter = KillFilter {
            skip_me: true,
            ..KillFilter::default()
        };
        let mut i = 2;
        while i < cmd.argc() {
            let (Some(option), Some(value)) = (cmd.arg(i), cmd.arg(i + 1)) else {
                return Err(syntax_error());
            };
            let text = || String::from_utf8_lossy(value).into_owned();
            match option.to_ascii_lowercase().as_slice() {
                b"id" => {
                    let id = parse_i64(value).filter(|&id| id > 0).ok_or_else(|| {
                        ProxyError::bad_request("ERR client-id should be greater than 0")
                    })?;
                    filter.id = Some(id as u64);
                }
                b"type" => {
                    filter.kind =
                        Some(ClientType::parse(value).ok_or_else(|| unknown_type(value))?);
                }
                b"addr" => filter.addr = Some(text()),
                b"laddr" => filter.laddr = Some(text()),
                b"user" => {
                    if !worker.shared.users.load().exists(value) {
                        return Err(ProxyError::bad_request(format!(
                            "ERR No such user '{}'",
                            text()
                        )));
                    }
                    filter.user = Some(text());
                }
                b"skipme" => {
                    filter.skip_me = match value.to_ascii_lowercase().as_slice() {
                        b"yes" => true,
                        b"no" => false,
                        _ => return Err(syntax_error()),
                    }
                }
                b"maxage" => {
                    let age = parse_i64(value).ok_or_else(|| {
                        ProxyError::bad_request("ERR value is not an integer or out of range")
                    })?;
                    filter.max_age = u64::try_from(age).ok().filter(|&a| a > 0);
                }
                _ => return Err(syntax_error()),
            }
            i += 2;
        }
        Ok((filter, false))
    }

    fn matches(&self, registry: &Registry, entry: &ClientEntry, me: u64) -> bool {
        let laddr = registry.laddr_of(entry).map(|a| a.to_string());
        self.addr
            .as_ref()
            .is_none_or(|a| *a == entry.addr.to_string())
            && self
                .laddr
                .as_ref()
                .is_none_or(|a| Some(a) == laddr.as_ref())
            && self.kind.is_none_or(|k| k == entry.client_type())
            && self.id.is_none_or(|id| id == entry.id)
            && self.user.as_ref().is_none_or(|u| *u == entry.user())
            && !(self.skip_me && entry.id == me)
            && self
                .max_age
                .is_none_or(|age| registry.age_secs(entry) > age)
    }
}

/// `CLIENT KILL ip:port` (`+OK` or `-ERR No such client`) or `CLIENT KILL <filter> <value>
/// ...` (how many). The caller itself closes once this reply is written; others at once.
fn kill(worker: &Worker, client: &mut ClientState, cmd: &Command) -> Result<Bytes, ProxyError> {
    let (filter, old_form) = KillFilter::parse(worker, cmd)?;
    let registry = &worker.shared.clients;
    let mut killed = 0;
    for entry in registry.all() {
        if !filter.matches(registry, &entry, client.id) {
            continue;
        }
        if entry.id == client.id {
            client.closing = true;
            entry.set_flag(flag::CLOSE_AFTER_REPLY, true);
        } else {
            entry.kill();
        }
        killed += 1;
    }
    match (old_form, killed) {
        (true, 0) => Err(ProxyError::bad_request("ERR No such client")),
        (true, _) => Ok(reply::ok()),
        (false, n) => Ok(reply::integer(n)),
    }
}

/// `CLIENT REPLY ON|OFF|SKIP`: only ON answers (OFF and SKIP are silent in Redis too).
fn reply_mode(client: &mut ClientState, mode: &[u8]) -> Result<Bytes, ProxyError> {
    match mode.to_ascii_lowercase().as_slice() {
        b"on" => {
            client.reply = Default::default();
            Ok(reply::ok())
        }
        b"off" => {
            client.reply.off = true;
            Ok(Bytes::new())
        }
        b"skip" => {
            if !client.reply.off {
                client.reply.skip_next = true;
            }
            Ok(Bytes::new())
        }
        _ => Err(syntax_error()),
    }
}

/// `CLIENT PAUSE timeout [WRITE|ALL]`: every client of the proxy, on every worker.
fn pause(registry: &Registry, cmd: &Command) -> Result<Bytes, ProxyError> {
    let timeout = parse_i64(cmd.arg(2).unwrap_or_default())
        .ok_or_else(|| ProxyError::bad_request("ERR timeout is not an integer or out of range"))?;
    if timeout < 0 {
        return Err(ProxyError::bad_request("ERR timeout is negative"));
    }
    let mode =
        match (cmd.argc(), cmd.arg(3)) {
            (3, _) => PauseMode::All,
            (4, Some(m)) if m.eq_ignore_ascii_case(b"write") => PauseMode::Write,
            (4, Some(m)) if m.eq_ignore_ascii_case(b"all") => PauseMode::All,
            (4, _) => {
                return Err(ProxyError::bad_request(
                    "ERR CLIENT PAUSE mode must be WRITE or ALL",
                ))
            }
            _ => return Err(ProxyError::bad_request(
                "ERR unknown subcommand or wrong number of arguments for 'pause'. Try CLIENT HELP.",
            )),
        };
    let now = registry.now_ms();
    registry
        .pause
        .start(now, mode, now.saturating_add(timeout as u64));
    Ok(reply::ok())
}

/// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`: the client's blocking command waits on a node
/// connection of its own; that connection is unblocked on its node (by its id there), so the
/// client gets exactly the node's reply (a timeout's null, or `-UNBLOCKED ...`). 1 if it was
/// blocked, else 0.
fn unblock(worker: &Rc<Worker>, cmd: &Command) -> Reply {
    if cmd.argc() != 3 && cmd.argc() != 4 {
        return wrong_arity("unblock").answer().into();
    }
    let Some(id) = parse_i64(cmd.arg(2).unwrap_or_default()) else {
        return ProxyError::bad_request("ERR value is not an integer or out of range")
            .answer()
            .into();
    };
    let error = match cmd.arg(3) {
        None => false,
        Some(r) if r.eq_ignore_ascii_case(b"timeout") => false,
        Some(r) if r.eq_ignore_ascii_case(b"error") => true,
        Some(_) => {
            return ProxyError::bad_request("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
                .answer()
                .into()
        }
    };
    let blocked_on = u64::try_from(id)
        .ok()
        .and_then(|id| worker.shared.clients.get(id))
        .and_then(|entry| entry.snapshot().blocked_on);
    let Some((node, backend_id)) = blocked_on else {
        return reply::integer(0).into();
    };
    let backend_id = backend_id.to_string();
    let mut args: Vec<&[u8]> = vec![b"CLIENT", b"UNBLOCK", backend_id.as_bytes()];
    if error {
        args.push(b"ERROR");
    }
    let payload = Command::from_args(&args).into_raw();
    Reply::later(driver::execute(
        worker.clone(),
        payload,
        Target::Node(node),
        Resend::Safe,
    ))
}

/// Whether `CLIENT PAUSE` holds `cmd` now: `Some(write)` if held, where `write` says whether
/// a WRITE pause holds it too (else only ALL does). Commands Redis refuses before it looks
/// at a pause (unknown, wrong arity, not authenticated) are not held: their error goes back
/// at once.
pub fn pause_hold(worker: &Worker, client: &ClientState, cmd: &Command) -> Option<bool> {
    let registry = &worker.shared.clients;
    let mode = registry.pause.active(registry.now_ms())?;
    let table = worker.shared.commands.load();
    let spec = table.lookup(cmd)?;
    if !spec.check_arity(cmd.argc()) || !client.authenticated {
        return None;
    }
    // A RESP2 subscriber's refused command is answered at once too.
    if client.protocol == Protocol::Resp2
        && client.subs.as_ref().is_some_and(|s| s.active())
        && !super::allowed_when_subscribed(spec.route)
    {
        return None;
    }
    let write = spec.is_write()
        || spec.may_replicate()
        || (spec.name == "exec" && client.tx.queued_writes());
    let held = mode == PauseMode::All || write;
    if held {
        // Redis shows the held command as the client's last (`cmd=set`).
        client.entry().note_command(spec.id);
    }
    held.then_some(write)
}

/// Waits until no pause holds a command `pause_hold` described by `write`.
pub async fn pause_over(registry: &Registry, write: bool) {
    registry
        .pause
        .wait_over(|| registry.now_ms(), |mode| mode == PauseMode::All || write)
        .await
}

/// Whether `cmd` answers with push messages (the (un)subscribe family), which `CLIENT REPLY
/// OFF|SKIP` does not silence (Redis 7 marks them as pushed).
pub fn answers_with_pushes(cmd: &Command) -> bool {
    [
        "subscribe",
        "psubscribe",
        "ssubscribe",
        "unsubscribe",
        "punsubscribe",
        "sunsubscribe",
    ]
    .iter()
    .any(|n| cmd.name().eq_ignore_ascii_case(n.as_bytes()))
}

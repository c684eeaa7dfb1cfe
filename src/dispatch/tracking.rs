//! `CLIENT TRACKING` for one client: its options, `CLIENT CACHING`, `CLIENT TRACKINGINFO` and
//! `GETREDIR`, the keys its reads leave in the process's table ([`crate::tracking`]), and how
//! invalidations are written to it. The nodes' side is [`super::invalidation_feed`].

use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::decision::Resend;
use super::error::ProxyError;
use super::invalidation_feed;
use super::plan::Plan;
use super::reply::{self, Reply};
use super::session::ClientState;
use super::worker::Worker;
use crate::command::CommandSpec;
use crate::config::ReadFrom;
use crate::registry::{flag, ClientEntry};
use crate::resp::{encode, Command, Protocol};
use crate::shared::Shared;
use crate::tracking::{prefix_collision, Delivery, Invalidation, Options, Table};

/// The Pub/Sub channel a RESP2 redirect client hears invalidations on.
const CHANNEL: &[u8] = b"__redis__:invalidate";

/// A tracking client's own state.
#[derive(Clone, Debug, Default)]
pub struct ClientTracking {
    pub options: Options,
    /// `CLIENT CACHING yes|no` was the previous command: it applies to this one.
    caching: bool,
}

/// `CLIENT TRACKING ON|OFF [REDIRECT id] [BCAST] [PREFIX p]... [OPTIN] [OPTOUT] [NOLOOP]`,
/// checked as Redis checks it. ON answers once the proxy hears every primary's changes.
pub fn tracking(worker: &Rc<Worker>, client: &mut ClientState, cmd: &Command) -> Reply {
    match turn(worker, client, cmd) {
        Ok(false) => reply::ok().into(),
        Ok(true) => {
            client.hold_until_replied = true;
            Reply::later(covered(worker.clone(), client.id))
        }
        Err(error) => error.answer().into(),
    }
}

/// Applies the command; true when tracking is (still) on.
fn turn(worker: &Rc<Worker>, client: &mut ClientState, cmd: &Command) -> Result<bool, ProxyError> {
    let mut new = Options::default();
    let mut redirect: Option<u64> = None;
    let args: Vec<&[u8]> = (3..cmd.argc()).filter_map(|i| cmd.arg(i)).collect();
    let mut at = 0;
    while let Some(arg) = args.get(at) {
        at += 1;
        let word = arg.to_ascii_lowercase();
        let value = args.get(at).copied();
        match (word.as_slice(), value) {
            (b"redirect", Some(value)) => {
                at += 1;
                if redirect.is_some() {
                    return Err(ProxyError::bad_request(
                        "ERR A client can only redirect to a single other client",
                    ));
                }
                let id = std::str::from_utf8(value)
                    .ok()
                    .and_then(|a| a.parse::<i64>().ok())
                    .ok_or_else(|| {
                        ProxyError::bad_request("ERR value is not an integer or out of range")
                    })?;
                let target = u64::try_from(id)
                    .ok()
                    .filter(|&id| worker.shared.clients.get(id).is_some());
                if target.is_none() {
                    return Err(ProxyError::bad_request(
                        "ERR The client ID you want redirect to does not exist",
                    ));
                }
                redirect = target;
            }
            (b"prefix", Some(value)) => {
                at += 1;
                new.prefixes.push(Bytes::copy_from_slice(value));
            }
            (b"bcast", _) => new.bcast = true,
            (b"optin", _) => new.optin = true,
            (b"optout", _) => new.optout = true,
            (b"noloop", _) => new.noloop = true,
            _ => return Err(syntax_error()),
        }
    }
    new.redirect = redirect;
    let on = cmd.arg(2).unwrap_or_default();
    if on.eq_ignore_ascii_case(b"off") {
        stop(&worker.shared, client);
        return Ok(false);
    }
    if !on.eq_ignore_ascii_case(b"on") {
        return Err(syntax_error());
    }
    let old = client.tracking.as_ref().map(|t| &t.options);
    if !new.bcast && !new.prefixes.is_empty() {
        return Err(ProxyError::bad_request(
            "ERR PREFIX option requires BCAST mode to be enabled",
        ));
    }
    if old.is_some_and(|old| old.bcast != new.bcast) {
        return Err(ProxyError::bad_request("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode."));
    }
    if new.bcast && (new.optin || new.optout) {
        return Err(ProxyError::bad_request(
            "ERR OPTIN and OPTOUT are not compatible with BCAST",
        ));
    }
    if new.optin && new.optout {
        return Err(ProxyError::bad_request(
            "ERR You can't use both OPTIN and OPTOUT",
        ));
    }
    if old.is_some_and(|old| (new.optin && old.optout) || (new.optout && old.optin)) {
        return Err(ProxyError::bad_request("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode."));
    }
    let existing: &[Bytes] = old.map_or(&[], |old| &old.prefixes);
    if new.bcast {
        if let Some(collision) = prefix_collision(existing, &new.prefixes) {
            return Err(ProxyError::bad_request(collision));
        }
    }
    // As Redis's enableTracking: prefixes add up, the other options are the new ones.
    let mut prefixes = existing.to_vec();
    prefixes.append(&mut new.prefixes);
    new.prefixes = prefixes;
    client.tracking = Some(ClientTracking {
        options: new.clone(),
        caching: false,
    });
    let entry = client.entry();
    entry.set_flag(flag::TRACKING, true);
    entry.set_flag(flag::TRACKING_BCAST, new.bcast);
    entry.set_flag(flag::TRACKING_BROKEN_REDIR, false);
    entry.update(|d| d.tracking_redirect = new.redirect);
    let mut table = worker.shared.tracking.table();
    table.start(client.id, new);
    show_count(&table);
    drop(table);
    if worker.shared.tracking.feed_needed() {
        tokio::task::spawn_local(invalidation_feed::run(worker.clone()));
    }
    Ok(true)
}

/// `CLIENT TRACKING ON`'s reply: OK once the invalidation feed hears every primary (changes
/// after that are reported), else an error, and tracking is off again.
async fn covered(worker: Rc<Worker>, id: u64) -> Bytes {
    let wait = worker
        .shared
        .config
        .connect_timeout()
        .saturating_mul(2)
        .max(Duration::from_secs(1));
    let mut covered = worker.shared.tracking.covered();
    let ready = tokio::time::timeout(wait, covered.wait_for(|covered| *covered)).await;
    if matches!(ready, Ok(Ok(_))) {
        return reply::ok();
    }
    stop_in_table(&worker.shared, id);
    if let Some(entry) = worker.shared.clients.get(id) {
        show_off(&entry);
    }
    ProxyError::proxy_policy(
        "ERR slotproxy: tracking needs a connection to every primary to hear their key changes, and some primary did not accept one in time",
    )
    .answer()
}

/// Tracking off (CLIENT TRACKING OFF, RESET, disconnect).
pub fn stop(shared: &Shared, client: &mut ClientState) {
    if client.tracking.take().is_some() {
        show_off(client.entry());
        stop_in_table(shared, client.id);
    }
}

fn stop_in_table(shared: &Shared, id: u64) {
    let mut table = shared.tracking.table();
    table.stop(id);
    show_count(&table);
}

/// `slotproxy_tracking_clients`.
fn show_count(table: &Table) {
    metrics::gauge!("slotproxy_tracking_clients").set(table.tracking_clients() as f64);
}

/// `CLIENT LIST` shows the client not tracking.
fn show_off(entry: &ClientEntry) {
    for bit in [
        flag::TRACKING,
        flag::TRACKING_BCAST,
        flag::TRACKING_BROKEN_REDIR,
    ] {
        entry.set_flag(bit, false);
    }
    entry.update(|d| d.tracking_redirect = None);
}

/// `CLIENT CACHING yes|no`.
pub fn caching(client: &mut ClientState, cmd: &Command) -> Result<Bytes, ProxyError> {
    let Some(tracking) = client.tracking.as_mut() else {
        return Err(ProxyError::bad_request("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"));
    };
    let yes = cmd.arg(2).unwrap_or_default();
    if yes.eq_ignore_ascii_case(b"yes") {
        if !tracking.options.optin {
            return Err(ProxyError::bad_request(
                "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            ));
        }
    } else if yes.eq_ignore_ascii_case(b"no") {
        if !tracking.options.optout {
            return Err(ProxyError::bad_request(
                "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            ));
        }
    } else {
        return Err(syntax_error());
    }
    tracking.caching = true;
    Ok(reply::ok())
}

/// `CLIENT GETREDIR`: -1 when not tracking, 0 without a redirect.
pub fn getredir(worker: &Worker, client: &ClientState) -> Bytes {
    let redirect = match worker.shared.tracking.table().options(client.id) {
        None => -1,
        Some(options) => options.redirect.map_or(0, |id| id as i64),
    };
    reply::integer(redirect)
}

/// `CLIENT TRACKINGINFO`, in Redis's order of flags.
pub fn trackinginfo(worker: &Worker, client: &ClientState) -> Bytes {
    let protocol = client.protocol;
    let mut flags: Vec<&[u8]> = Vec::new();
    let mut prefixes: Vec<Bytes> = Vec::new();
    // The table says whether tracking is on: a `CLIENT TRACKING ON` whose feed never came
    // up left it off there.
    let options = worker.shared.tracking.table().options(client.id).cloned();
    let caching = client.tracking.as_ref().is_some_and(|t| t.caching);
    let redirect = match &options {
        None => {
            flags.push(b"off");
            -1
        }
        Some(options) => {
            flags.push(b"on");
            for (set, name) in [
                (options.bcast, b"bcast".as_slice()),
                (options.optin, b"optin"),
                (options.optout, b"optout"),
                (caching && options.optin, b"caching-yes"),
                (caching && options.optout, b"caching-no"),
                (options.noloop, b"noloop"),
                (options.broken_redirect, b"broken_redirect"),
            ] {
                if set {
                    flags.push(name);
                }
            }
            prefixes = options.prefixes.clone();
            options.redirect.map_or(0, |id| id as i64)
        }
    };
    let mut out = BytesMut::with_capacity(96);
    match protocol {
        Protocol::Resp2 => encode::array_header(&mut out, 6),
        Protocol::Resp3 => encode::map_header(&mut out, 3),
    }
    encode::bulk(&mut out, b"flags");
    match protocol {
        Protocol::Resp2 => encode::array_header(&mut out, flags.len()),
        Protocol::Resp3 => out.extend_from_slice(format!("~{}\r\n", flags.len()).as_bytes()),
    }
    for flag in flags {
        encode::bulk(&mut out, flag);
    }
    encode::bulk(&mut out, b"redirect");
    encode::integer(&mut out, redirect);
    encode::bulk(&mut out, b"prefixes");
    encode::array_header(&mut out, prefixes.len());
    for prefix in &prefixes {
        encode::bulk(&mut out, prefix);
    }
    out.freeze()
}

/// Before a tracking client's command is carried out: its read remembers its keys (default
/// mode, as OPTIN/OPTOUT and `CLIENT CACHING` allow), and reads go to primaries, whose
/// changes the feed hears (a replica could still serve a value older than an invalidation
/// already delivered). `CLIENT CACHING` applies to the next command other than a `CLIENT`
/// one.
pub fn note_command(
    worker: &Worker,
    client: &mut ClientState,
    spec: &CommandSpec,
    cmd: &Command,
    plan: &mut Plan,
) {
    let Some(tracking) = client.tracking.as_mut() else {
        return;
    };
    // As Redis: any CLIENT subcommand keeps the flag for the command after it.
    if cmd.name().eq_ignore_ascii_case(b"client") {
        return;
    }
    let caching = std::mem::take(&mut tracking.caching);
    let options = &tracking.options;
    if worker.read_from != ReadFrom::Primary {
        match plan {
            Plan::Send(send) => send.resend = Resend::Never,
            Plan::Split { resend, .. } => *resend = Resend::Never,
            _ => {}
        }
    }
    remember_read(worker, client.id, options, caching, spec, cmd);
}

/// A command queued in MULTI: its read is remembered now, before EXEC runs it (an invalidation
/// in between is delivered after EXEC's reply, as it must). Inside a transaction Redis keeps
/// `CLIENT CACHING` for every command up to EXEC.
pub fn note_queued(worker: &Worker, client: &ClientState, spec: &CommandSpec, cmd: &Command) {
    if let Some(tracking) = client.tracking.as_ref() {
        remember_read(
            worker,
            client.id,
            &tracking.options,
            tracking.caching,
            spec,
            cmd,
        );
    }
}

/// Remembers the keys of a read by client `id`, as its mode and `caching` say.
fn remember_read(
    worker: &Worker,
    id: u64,
    options: &Options,
    caching: bool,
    spec: &CommandSpec,
    cmd: &Command,
) {
    let wanted = if options.optin {
        caching
    } else if options.optout {
        !caching
    } else {
        true
    };
    if options.bcast || !wanted || !spec.is_readonly() {
        return;
    }
    let mut indices = Vec::new();
    spec.key_indices(cmd, &mut indices);
    if indices.is_empty() {
        return;
    }
    let keys = indices.iter().filter_map(|&i| cmd.arg(i));
    let made_room = worker.shared.tracking.table().remember(id, keys);
    deliver(&worker.shared, made_room);
}

/// Hands each delivery to its client's session; a redirect client that went away is
/// reported to the tracking client once (RESP3 `tracking-redir-broken`).
pub fn deliver(shared: &Shared, deliveries: Vec<Delivery>) {
    for delivery in deliveries {
        metrics::counter!("slotproxy_tracking_invalidations_total").increment(1);
        if let Some(entry) = shared.clients.get(delivery.to) {
            entry.push_invalidation(delivery.what);
        } else if delivery.to != delivery.from && shared.tracking.table().mark_broken(delivery.from)
        {
            if let Some(entry) = shared.clients.get(delivery.from) {
                entry.set_flag(flag::TRACKING_BROKEN_REDIR, true);
                entry.push_invalidation(Invalidation::RedirectBroken(delivery.to));
            }
        }
    }
}

/// Invalidations a session holds back while its client keeps replies in flight: past this
/// many they are folded into one "everything is invalid", so a client that pipelines without
/// a pause costs bounded memory (it loses its cache, never gets a stale read).
const MAX_HELD_INVALIDATIONS: usize = 1024;

/// Adds `new` to what the session holds, folding past [`MAX_HELD_INVALIDATIONS`].
pub fn hold(held: &mut Vec<Invalidation>, new: Vec<Invalidation>) {
    held.extend(new);
    if held.len() > MAX_HELD_INVALIDATIONS {
        let broken: Vec<Invalidation> = held
            .drain(..)
            .filter(|what| matches!(what, Invalidation::RedirectBroken(_)))
            .take(1)
            .collect();
        held.push(Invalidation::All);
        held.extend(broken);
    }
}

/// Writes invalidations as Redis does: RESP3 `invalidate` pushes; for a RESP2 client (a
/// redirect target) messages of the `__redis__:invalidate` channel while it is subscribed to
/// anything, else nothing (RESP2 has no other way to say it).
pub fn write_invalidations(
    client: &ClientState,
    invalidations: impl Iterator<Item = Invalidation>,
    out: &mut BytesMut,
) {
    let resp3 = client.protocol == Protocol::Resp3;
    let subscribed = client.subs.as_ref().is_some_and(|s| s.active());
    for what in invalidations {
        match (&what, resp3) {
            (Invalidation::RedirectBroken(id), true) => {
                encode::push_header(out, 2);
                encode::bulk(out, b"tracking-redir-broken");
                encode::integer(out, *id as i64);
                continue;
            }
            (Invalidation::RedirectBroken(_), false) => continue,
            (_, true) => {
                encode::push_header(out, 2);
                encode::bulk(out, b"invalidate");
            }
            (_, false) if subscribed => {
                encode::array_header(out, 3);
                encode::bulk(out, b"message");
                encode::bulk(out, CHANNEL);
            }
            (_, false) => continue,
        }
        match what {
            Invalidation::Keys(keys) => {
                encode::array_header(out, keys.len());
                for key in &keys {
                    encode::bulk(out, key);
                }
            }
            _ => encode::null(out, client.protocol),
        }
    }
}

fn syntax_error() -> ProxyError {
    ProxyError::bad_request("ERR syntax error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_invalidations_fold_into_everything_past_the_bound() {
        let key = |i: usize| Invalidation::Keys(vec![Bytes::from(format!("k{i}"))]);
        let mut held = Vec::new();
        hold(&mut held, (0..10).map(key).collect());
        assert_eq!(held.len(), 10);
        let mut many: Vec<Invalidation> = (0..MAX_HELD_INVALIDATIONS).map(key).collect();
        many.push(Invalidation::RedirectBroken(7));
        hold(&mut held, many);
        assert_eq!(
            held,
            vec![Invalidation::All, Invalidation::RedirectBroken(7)]
        );
    }
}

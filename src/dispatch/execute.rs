//! Carries out a [`Plan`]: answers here, sends, splits, broadcasts, or hands the command to
//! the session's own state (transactions, subscriptions, WAIT).

use std::rc::Rc;

use bytes::Bytes;

use super::clients;
use super::cluster_wide;
use super::driver::{self, execute as run, Resend, Started, Target};
use super::error::ProxyError;
use super::local;
use super::merge;
use super::near_cache;
use super::plan::{Plan, Send};
use super::pubsub;
use super::reply::{self, Reply};
use super::scripts;
use super::server_config;
use super::session::ClientState;
use super::transaction;
use super::wait;
use super::worker::Worker;
use crate::cluster::SlotMap;
use crate::command::route::{Local, Merge, Script, SessionCommand, SplitKind, Subscription};
use crate::command::CommandSpec;
use crate::registry::flag;
use crate::resp::{Command, Protocol};

/// The reply to `cmd` as `plan` says; `map` is the snapshot the plan was made with.
pub fn execute(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    map: &SlotMap,
    spec: &CommandSpec,
    cmd: Command,
    plan: Plan,
) -> Reply {
    match plan {
        Plan::Local(command) => local(worker, client, command, &cmd),
        Plan::Send(send) => {
            if let Some(cache) = &worker.near_cache {
                match cache.read(client, map, spec, &cmd, &send) {
                    near_cache::Read::Hit(reply) => return Reply::Ready(reply),
                    near_cache::Read::Miss(miss) => {
                        return miss.attach(send_one(worker, client, map, cmd, send))
                    }
                    near_cache::Read::Pass => {}
                }
            }
            send_one(worker, client, map, cmd, send)
        }
        Plan::Split {
            kind,
            parts,
            resend,
        } => split(worker, client, map, kind, parts, resend),
        Plan::Broadcast { merge, resend } => broadcast(
            worker,
            map,
            cmd,
            cluster_wide::primaries_of(map),
            merge,
            resend,
        ),
        Plan::BroadcastAside(merge) => {
            client.hold_until_replied = true;
            Reply::later(cluster_wide::broadcast_aside(
                worker.clone(),
                cmd.into_raw(),
                cluster_wide::primaries_of(map),
                merge,
            ))
        }
        // Every node answers the same as one server would (OK; ACL DELUSER's count).
        Plan::EveryNode => broadcast(
            worker,
            map,
            cmd,
            cluster_wide::nodes_of(map),
            Merge::Same,
            Resend::Never,
        ),
        Plan::EveryNodeSettled => {
            client.hold_until_replied = true;
            Reply::later(cluster_wide::every_node_settled(
                worker.clone(),
                cmd.into_raw(),
                cluster_wide::nodes_of(map),
            ))
        }
        Plan::ConfigSet => {
            client.hold_until_replied = true;
            Reply::later(server_config::config_set(worker.clone(), cmd, map.nodes()))
        }
        Plan::Publish(kind, send) => publish(worker, client, map, cmd, kind, send),
        Plan::Walk(walk) => {
            use crate::command::route::Walk;
            let worker = worker.clone();
            client.hold_until_replied = true;
            match walk {
                Walk::Keys => Reply::later(cluster_wide::keys(worker, cmd)),
                Walk::Scan => Reply::later(cluster_wide::scan(worker, cmd)),
                Walk::RandomKey => Reply::later(cluster_wide::random_key(worker, cmd)),
            }
        }
        Plan::Info => info(worker, client, cluster_wide::primaries_of(map), cmd),
        Plan::Blocking { target, write } => {
            if write {
                client.writes.note_elsewhere();
            }
            Reply::Parked(Box::pin(driver::execute_blocking(
                worker.clone(),
                cmd,
                target,
                client.entry().clone(),
            )))
        }
        Plan::Session(command) => session(worker, client, map, spec, cmd, command),
        Plan::ScriptLoad => {
            if let Some(body) = cmd.arg(2) {
                worker.shared.scripts.remember(body);
            }
            let primaries = cluster_wide::primaries_of(map);
            broadcast(worker, map, cmd, primaries, Merge::Same, Resend::Safe)
        }
        Plan::ScriptFlush => {
            worker.shared.scripts.forget_all();
            let primaries = cluster_wide::primaries_of(map);
            broadcast(worker, map, cmd, primaries, Merge::AllOk, Resend::Safe)
        }
        Plan::Script(script, send) => {
            if script == Script::Eval {
                if let Some(body) = cmd.arg(1) {
                    worker.shared.scripts.remember(body);
                }
            }
            run_script(worker, client, map, script, cmd, send)
        }
        Plan::Emulate(emulation) => {
            if emulation.writes() {
                client.writes.note_elsewhere();
            }
            client.hold_until_replied = true;
            Reply::later(super::emulate::run(
                worker.clone(),
                spec.name.clone(),
                cmd,
                emulation,
            ))
        }
        Plan::Fail(error) => error.answer().into(),
    }
}

/// A reply, or the error in its place.
fn answer(result: Result<Bytes, ProxyError>) -> Reply {
    result.unwrap_or_else(|error| error.answer()).into()
}

fn local(worker: &Rc<Worker>, client: &mut ClientState, command: Local, cmd: &Command) -> Reply {
    let subscribed =
        client.protocol == Protocol::Resp2 && client.subs.as_ref().is_some_and(|s| s.active());
    match command {
        Local::Ping if subscribed => answer(local::subscribed_ping(cmd)),
        Local::Ping => match local::ping(cmd) {
            // Asked only when nothing of the client's own is in flight: a PING behind its
            // own script runs after it, as on one server.
            Ok(pong) if worker.shared.running_scripts.any() && client.nothing_in_flight => {
                client.hold_until_replied = true;
                Reply::later(scripts::ping(worker.clone(), pong))
            }
            pong => answer(pong),
        },
        Local::Echo => local::echo(cmd).into(),
        Local::Quit => {
            client.closing = true;
            reply::ok().into()
        }
        Local::Select => answer(local::select(cmd)),
        Local::Auth => {
            let answered = answer(local::auth(cmd, client, &worker.shared.users.load()));
            client.publish();
            answered
        }
        Local::Hello => {
            let answered = answer(local::hello(cmd, client, &worker.shared.users.load()));
            client.publish();
            answered
        }
        Local::Ok => reply::ok().into(),
        Local::Reset => {
            client.authenticated = !worker.shared.users.load().required();
            client.user = None;
            client.name = None;
            client.subs = None;
            super::tracking::stop(&worker.shared, client);
            client.protocol = Protocol::Resp2;
            transaction::reset(&mut client.tx);
            // As Redis 7.2's RESET: reply mode, NO-EVICT and NO-TOUCH back to their defaults
            // (the library name and version stay; a CLIENT PAUSE is server-wide and stays).
            // (A SKIP already in force still silences this very reply, as in Redis.)
            client.reply.off = false;
            client.reply.skip_next = false;
            client.entry().set_flag(flag::NO_EVICT, false);
            client.entry().set_flag(flag::NO_TOUCH, false);
            client.publish();
            client.publish_subscriptions();
            Bytes::from_static(b"+RESET\r\n").into()
        }
        // By argv[1], not by the table: the cluster may predate a subcommand the proxy
        // answers itself (CLIENT SETINFO is Redis 7.2+, and clients send it on connect).
        Local::Client => clients::client(worker, client, cmd),
        Local::KeySlot => local::keyslot(cmd).into(),
        Local::PubSub => answer(pubsub::introspect(cmd, &worker.shared.subscribers)),
    }
}

/// Notes a write for WAIT, right after it was queued on the shared pipes: the pipe in
/// service for its node at this moment is the one that carries it.
fn note_write(worker: &Worker, client: &mut ClientState, map: &SlotMap, send: &Send) {
    if let Some(slot) = send.write_to {
        client.writes.note(worker, map, slot);
    }
}

/// Sends `payload` as `send` says and notes a write for WAIT.
fn start_send(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    map: &SlotMap,
    payload: Bytes,
    send: &Send,
) -> Started {
    let started = driver::start(worker, map, payload, send.target.clone(), send.resend);
    note_write(worker, client, map, send);
    started
}

/// Inline: the path of nearly every command. Each call on it costs its moves of the reply
/// (about a hundred bytes) besides the call itself; the deferred case stays out of line.
#[inline(always)]
fn send_one(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    map: &SlotMap,
    cmd: Command,
    send: Send,
) -> Reply {
    match start_send(worker, client, map, cmd.into_raw(), &send) {
        Started::InFlight(in_flight) => Reply::InFlight(in_flight),
        Started::Deferred {
            payload,
            target,
            resend,
        } => deferred(worker, payload, target, resend),
    }
}

/// A request with no node to go to right now, to the driver.
#[inline(never)]
fn deferred(worker: &Rc<Worker>, payload: Bytes, target: Target, resend: Resend) -> Reply {
    Reply::later(run(worker.clone(), payload, target, resend))
}

/// A script on a connection of its own when its client has nothing else in flight and a
/// permit is free, else on the shared pipe (see `dispatch::scripts`).
fn run_script(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    map: &SlotMap,
    script: Script,
    cmd: Command,
    send: Send,
) -> Reply {
    let running = worker.shared.running_scripts.start();
    let own = client
        .nothing_in_flight
        .then(|| {
            worker
                .shared
                .script_permits
                .clone()
                .try_acquire_owned()
                .ok()
        })
        .flatten();
    let connection = match own {
        Some(permit) => {
            client.hold_until_replied = true;
            if send.write_to.is_some() {
                client.writes.note_elsewhere();
            }
            scripts::Connection::Own(permit)
        }
        None => {
            scripts::Connection::Pipe(start_send(worker, client, map, cmd.raw().clone(), &send))
        }
    };
    // On a connection of its own, parked like a blocking command: a client that hangs up
    // abandons it, and the script is killed (see `scripts::Abandoned`). On the pipe, awaited.
    let own = matches!(connection, scripts::Connection::Own(_));
    let reply = scripts::run(worker.clone(), connection, running, script, cmd, send);
    if own {
        Reply::Parked(Box::pin(reply))
    } else {
        Reply::later(reply)
    }
}

/// PUBLISH/SPUBLISH goes to the cluster (subscribers on the nodes and behind other proxies
/// get the message too); the reply counts the proxy's own clients that receive it.
fn publish(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    map: &SlotMap,
    cmd: Command,
    kind: Subscription,
    send: Send,
) -> Reply {
    let channel = Bytes::copy_from_slice(cmd.arg(1).unwrap_or_default());
    let send = match kind {
        // To the node of this proxy's subscriptions (see `Shared::pubsub_slot`).
        Subscription::Channel => Send {
            target: Target::Slot(worker.shared.pubsub_slot),
            ..send
        },
        _ => send,
    };
    let started = start_send(worker, client, map, cmd.into_raw(), &send);
    let worker = worker.clone();
    Reply::later(async move {
        let reply = started.reply(worker.clone()).await;
        pubsub::published(reply, kind, &channel, &worker.shared.subscribers)
    })
}

/// Every part is sent now, so the parts run in parallel on their nodes; the future only
/// collects the replies (and retries a part whose first answer was a redirect).
fn split(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    map: &SlotMap,
    kind: SplitKind,
    parts: Vec<super::split::SlotPart>,
    resend: Resend,
) -> Reply {
    let total = parts.iter().map(|p| p.positions.len()).sum();
    let mut positions = Vec::with_capacity(parts.len());
    let mut started = Vec::with_capacity(parts.len());
    for part in parts {
        positions.push(part.positions);
        started.push(driver::start(
            worker,
            map,
            part.payload,
            Target::Slot(part.slot),
            resend,
        ));
        if resend == Resend::Never {
            client.writes.note(worker, map, part.slot);
        }
    }
    let worker = worker.clone();
    Reply::later(async move {
        let mut replies = Vec::with_capacity(started.len());
        for request in started {
            replies.push(request.reply(worker.clone()).await);
        }
        match kind {
            SplitKind::Values => merge::by_position(&positions, &replies, total),
            SplitKind::Pairs => merge::all_ok(&replies),
            SplitKind::Count => merge::sum(&replies),
        }
    })
}

/// To each of `targets` (from the command's snapshot), merged.
/// Sent to every target now, as one command is (a command pipelined after it must not
/// overtake it: FLUSHALL then SET, FUNCTION LOAD then FCALL); the replies merged as they come.
fn broadcast(
    worker: &Rc<Worker>,
    map: &SlotMap,
    cmd: Command,
    targets: Vec<Target>,
    merge: Merge,
    resend: Resend,
) -> Reply {
    let payload = cmd.into_raw();
    let started: Vec<Started> = targets
        .into_iter()
        .map(|target| driver::start(worker, map, payload.clone(), target, resend))
        .collect();
    Reply::later(cluster_wide::gather_started(
        worker.clone(),
        payload,
        started,
        merge,
    ))
}

fn session(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    map: &SlotMap,
    spec: &CommandSpec,
    cmd: Command,
    command: SessionCommand,
) -> Reply {
    match command {
        SessionCommand::Multi => transaction::multi(&mut client.tx).into(),
        SessionCommand::Exec => {
            client.writes.note_elsewhere();
            transaction::exec(worker, &mut client.tx)
        }
        SessionCommand::Discard => transaction::discard(&mut client.tx).into(),
        SessionCommand::Watch => transaction::watch(worker, map, &mut client.tx, spec, cmd),
        SessionCommand::Unwatch => transaction::unwatch(&mut client.tx).into(),
        SessionCommand::Subscribe(kind) => {
            let confirmations = subscriptions(worker, client).subscribe(worker, map, kind, &cmd);
            client.publish_subscriptions();
            confirmations
        }
        SessionCommand::Unsubscribe(kind) => {
            let confirmations = subscriptions(worker, client).unsubscribe(worker, map, kind, &cmd);
            client.publish_subscriptions();
            confirmations.into()
        }
        SessionCommand::Wait => {
            let entry = client.entry().clone();
            wait::wait(worker, &mut client.writes, cmd, entry)
        }
    }
}

/// The client's subscriptions, created on its first (un)subscribe, in its current protocol.
fn subscriptions<'c>(
    worker: &Worker,
    client: &'c mut ClientState,
) -> &'c mut super::pubsub::Subscriptions {
    let protocol = client.protocol;
    let subs = client.subs.get_or_insert_with(|| {
        Box::new(super::pubsub::Subscriptions::new(
            worker.shared.subscribers.clone(),
        ))
    });
    subs.protocol = protocol;
    subs
}

fn info(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    targets: Vec<Target>,
    cmd: Command,
) -> Reply {
    if local::only_proxy_section(&cmd) {
        return reply::bulk(local::proxy_info(worker).as_bytes()).into();
    }
    // Sent when first polled: the client's next commands wait, so they can't overtake it.
    client.hold_until_replied = true;
    let wants_proxy = local::wants_proxy_section(&cmd);
    let worker = worker.clone();
    Reply::later(async move {
        let answers = futures_util::future::join_all(
            targets
                .into_iter()
                .map(|t| run(worker.clone(), cmd.raw().clone(), t, Resend::Safe)),
        )
        .await;
        if let Some(error) = answers.iter().find(|a| a.starts_with(b"-")) {
            return error.clone();
        }
        let texts: Vec<String> = answers
            .iter()
            .filter_map(|a| local::bulk_text(a))
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect();
        let mut merged = super::info::merge(&texts);
        if wants_proxy {
            if !merged.is_empty() && !merged.ends_with("\r\n\r\n") {
                merged.push_str("\r\n");
            }
            merged.push_str(&local::proxy_info(&worker));
        }
        reply::bulk(merged.as_bytes())
    })
}

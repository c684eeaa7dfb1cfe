//! Decides how each command is served (answered here, sent to one slot's owner, split per slot,
//! or sent to every primary) and produces the reply that goes into the client's queue.

pub mod cluster_wide;
pub mod info;
pub mod local;
pub mod merge;
pub mod reply;
pub mod route;
pub mod scripts;
pub mod split;
pub mod transaction;
pub mod wait;

use quanta::Instant;
use std::rc::Rc;

use bytes::Bytes;

pub use reply::Reply;

use crate::client::pubsub::Kind;
use crate::client::state::ClientState;
use crate::cluster::Slot;
use crate::command::{CommandError, CommandSpec};
use crate::resp::{Command, Protocol};
use crate::worker::{CommandMetrics, Worker};
use cluster_wide::Merge;
use route::{execute, Resend, Started, Target};
use split::split_by_slot;
use wait::Writes;

/// How a multi-key command's keys are laid out and its parts merged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Split {
    /// MGET: one key per argument, values merged back in key order.
    Values,
    /// MSET: key/value pairs, OK when every part is OK.
    Pairs,
    /// DEL, UNLINK, EXISTS, TOUCH: one key per argument, integer replies summed.
    Count,
}

/// Produces the reply for one command. Called in arrival order; the returned reply is queued
/// so replies go back in the order the client sent its commands.
/// `arrived`: when the read that brought the command completed (one clock read per batch).
pub fn dispatch(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    cmd: Command,
    arrived: &mut Option<Instant>,
) -> Dispatched {
    let table = worker.shared.commands.load();
    if client.tx.in_multi() && !transaction::runs_in_multi(cmd.name()) {
        let spec = table.lookup(&cmd);
        let refusal = match spec {
            None => Some(unknown_command(&cmd)),
            Some(spec) if !spec.check_arity(cmd.argc()) => Some(wrong_arity(spec)),
            Some(_) => None,
        };
        return Dispatched::untimed(transaction::queue(
            worker,
            &mut client.tx,
            spec,
            cmd,
            refusal,
        ));
    }
    let Some(spec) = table.lookup(&cmd) else {
        return Dispatched::untimed(unknown_command(&cmd));
    };
    if !spec.check_arity(cmd.argc()) {
        return Dispatched::untimed(wrong_arity(spec));
    }
    if !client.authenticated && !matches!(spec.name.as_str(), "auth" | "hello" | "quit") {
        return Dispatched::untimed(reply::error("NOAUTH Authentication required."));
    }
    // RESP3 clients get messages as push frames between replies, so any command may follow.
    if client.protocol == Protocol::Resp2
        && client.subs.as_ref().is_some_and(|s| s.active())
        && !allowed_when_subscribed(&spec.name)
    {
        let message = format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        );
        return Dispatched::untimed(reply::error(&message));
    }
    if !worker.shared.config.admin.metrics {
        return Dispatched {
            reply: plan(worker, client, spec, cmd),
            latency: None,
        };
    }
    let metrics = worker.command_metrics(spec.id, &spec.name);
    metrics.received.set(metrics.received.get() + 1);
    let started = *arrived.get_or_insert_with(Instant::now);
    Dispatched {
        reply: plan(worker, client, spec, cmd),
        latency: Some((started, metrics)),
    }
}

/// A command's reply-to-be and, for commands of the table, where its latency is recorded
/// once the reply is complete.
pub struct Dispatched {
    pub reply: Reply,
    pub latency: Option<(Instant, Rc<CommandMetrics>)>,
}

impl Dispatched {
    pub fn untimed(reply: Bytes) -> Dispatched {
        Dispatched {
            reply: Reply::Ready(reply),
            latency: None,
        }
    }
}

fn plan(worker: &Rc<Worker>, client: &mut ClientState, spec: &CommandSpec, cmd: Command) -> Reply {
    let name = spec.name.as_str();
    match name {
        "ping"
            if client.protocol == Protocol::Resp2
                && client.subs.as_ref().is_some_and(|s| s.active()) =>
        {
            local::subscribed_ping(&cmd).into()
        }
        "ping" => local::ping(&cmd).into(),
        "echo" => local::echo(&cmd).into(),
        "quit" => {
            client.closing = true;
            reply::ok().into()
        }
        "select" => local::select(&cmd).into(),
        "auth" => local::auth(&cmd, client, &worker.shared.users.load()).into(),
        "hello" => local::hello(&cmd, client, &worker.shared.users.load()).into(),
        "readonly" | "readwrite" => reply::ok().into(),
        "reset" => {
            client.authenticated = !worker.shared.users.load().required();
            client.name = None;
            client.subs = None;
            client.protocol = Protocol::Resp2;
            transaction::reset(&mut client.tx);
            Bytes::from_static(b"+RESET\r\n").into()
        }
        _ if name.starts_with("client|") || name == "client" => {
            // By argv[1], not by the table: the cluster may predate a subcommand the proxy
            // answers itself (CLIENT SETINFO is Redis 7.2+, and clients send it on connect).
            let sub = format!(
                "client|{}",
                String::from_utf8_lossy(cmd.arg(1).unwrap_or_default()).to_lowercase()
            );
            local::client(&sub, &cmd, client).into()
        }
        "cluster|keyslot" => local::keyslot(&cmd).into(),
        "cluster|info" | "cluster|nodes" | "cluster|slots" | "cluster|shards" | "cluster|myid"
        | "cluster|links" | "cluster|help" => any_node(worker, cmd),
        "cluster|countkeysinslot" | "cluster|getkeysinslot" => {
            match cmd
                .arg(2)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse().ok())
                .and_then(Slot::new)
            {
                Some(slot) => send(worker, cmd, Target::Slot(slot), Resend::Safe),
                None => reply::error("ERR Invalid or out of range slot").into(),
            }
        }
        _ if name == "cluster" || name.starts_with("cluster|") => {
            refuse(name, "it would change the cluster behind the proxy")
        }
        "info" => info(worker, cmd),
        "command"
        | "command|count"
        | "command|info"
        | "command|docs"
        | "command|list"
        | "command|getkeys"
        | "command|getkeysandflags"
        | "command|help" => any_node(worker, cmd),
        "keys" => Reply::later(cluster_wide::keys(worker.clone(), cmd)),
        "scan" => Reply::later(cluster_wide::scan(worker.clone(), cmd)),
        "randomkey" => Reply::later(cluster_wide::random_key(worker.clone(), cmd)),
        "dbsize" => broadcast(worker, cmd, Merge::Sum, Resend::Safe),
        // Subscriptions made through the proxy live on several nodes: ask them all.
        "pubsub|channels" | "pubsub|shardchannels" => {
            broadcast(worker, cmd, Merge::Union, Resend::Safe)
        }
        "pubsub|numsub" | "pubsub|shardnumsub" => {
            broadcast(worker, cmd, Merge::SumPairs, Resend::Safe)
        }
        "pubsub|numpat" => broadcast(worker, cmd, Merge::Sum, Resend::Safe),
        "flushall" | "flushdb" => broadcast(worker, cmd, Merge::AllOk, Resend::Never),
        "script|load" => {
            if let Some(body) = cmd.arg(2) {
                worker.shared.scripts.remember(body);
            }
            broadcast(worker, cmd, Merge::Same, Resend::Safe)
        }
        "eval" | "eval_ro" => {
            if let Some(body) = cmd.arg(1) {
                worker.shared.scripts.remember(body);
            }
            keyed(worker, &mut client.writes, spec, cmd)
        }
        "evalsha" | "evalsha_ro" => match target_of(worker, spec, &cmd) {
            Ok(target) => {
                let resend = if spec.is_readonly() {
                    Resend::Safe
                } else {
                    note_write(worker, &mut client.writes, target.clone());
                    Resend::Never
                };
                Reply::later(scripts::evalsha(worker.clone(), cmd, target, resend))
            }
            Err(crossslot) => crossslot.into(),
        },
        "script|exists" => broadcast(worker, cmd, Merge::LogicalAnd, Resend::Safe),
        "script|flush" => broadcast(worker, cmd, Merge::AllOk, Resend::Safe),
        "function|load" | "function|restore" => broadcast(worker, cmd, Merge::Same, Resend::Never),
        "function|delete" | "function|flush" => broadcast(worker, cmd, Merge::AllOk, Resend::Never),
        "multi" => transaction::multi(&mut client.tx).into(),
        "exec" => {
            client.writes.note_elsewhere();
            transaction::exec(worker, &mut client.tx)
        }
        "discard" => transaction::discard(&mut client.tx).into(),
        "watch" => transaction::watch(worker, &mut client.tx, spec, cmd),
        "unwatch" => transaction::unwatch(&mut client.tx).into(),
        "subscribe" | "psubscribe" | "ssubscribe" => {
            let subs = client.subs.get_or_insert_with(Box::default);
            subs.protocol = client.protocol;
            subs.subscribe(worker, pubsub_kind(name), &cmd).into()
        }
        "unsubscribe" | "punsubscribe" | "sunsubscribe" => {
            let subs = client.subs.get_or_insert_with(Box::default);
            subs.protocol = client.protocol;
            subs.unsubscribe(worker, pubsub_kind(name), &cmd).into()
        }
        "wait" => wait::wait(worker, &mut client.writes, cmd),
        "waitaof" => refuse(name, "it needs the connection of the client's last write"),
        "debug"
            if cmd
                .arg(1)
                .is_some_and(|a| a.eq_ignore_ascii_case(b"OBJECT")) =>
        {
            match cmd.arg(2) {
                Some(key) => send(
                    worker,
                    cmd.clone(),
                    Target::Slot(Slot::of(key)),
                    Resend::Safe,
                ),
                None => {
                    reply::error("ERR wrong number of arguments for 'debug|object' command").into()
                }
            }
        }
        // Server configuration of every node: only when the operator allowed it.
        "config|set" | "config|resetstat" | "acl|setuser" | "acl|deluser" | "debug" => {
            if worker.shared.config.admin.commands {
                Reply::later(cluster_wide::broadcast_all_nodes(
                    worker.clone(),
                    cmd.into_raw(),
                    Merge::AllOk,
                    Resend::Never,
                ))
            } else {
                let shown = name.replace('|', " ").to_uppercase();
                reply::error(&format!(
                    "ERR {shown} would change every node of the cluster: start slotproxy with --admin-commands to allow it"
                ))
                .into()
            }
        }
        "slowlog|get" | "latency|latest" | "latency|history" => {
            broadcast(worker, cmd, Merge::Concat, Resend::Safe)
        }
        "slowlog|len" | "latency|reset" => broadcast(worker, cmd, Merge::Sum, Resend::Safe),
        "slowlog|reset" => broadcast(worker, cmd, Merge::AllOk, Resend::Safe),
        "monitor" | "sync" | "psync" | "shutdown" | "replicaof" | "slaveof" | "failover"
        | "save" | "bgsave" | "bgrewriteaof" | "swapdb" | "move" => {
            refuse(name, "it acts on one node of the cluster")
        }
        "xread" | "xreadgroup" if has_block_option(&cmd) => blocking(worker, client, spec, cmd),
        _ if spec.is_blocking() && !matches!(name, "xread" | "xreadgroup") => {
            blocking(worker, client, spec, cmd)
        }
        "config|get" | "time" | "lastsave" | "role" | "lolwut" | "memory|stats"
        | "latency|doctor" | "latency|graph" | "latency|histogram" | "slowlog|help"
        | "latency|help" | "memory|doctor" | "function|list" | "function|dump"
        | "function|stats" => any_node(worker, cmd),
        _ if spec.is_admin() => refuse(name, "it is an administrative command for one node"),
        "mget" => split(worker, &mut client.writes, spec, cmd, Split::Values),
        "mset" => split(worker, &mut client.writes, spec, cmd, Split::Pairs),
        "del" | "unlink" | "exists" | "touch" => {
            split(worker, &mut client.writes, spec, cmd, Split::Count)
        }
        _ => keyed(worker, &mut client.writes, spec, cmd),
    }
}

/// The command goes to the owner of its keys' slot (any primary when it has no keys).
fn keyed(worker: &Rc<Worker>, writes: &mut Writes, spec: &CommandSpec, cmd: Command) -> Reply {
    let target = match target_of(worker, spec, &cmd) {
        Ok(target) => target,
        Err(crossslot) => return crossslot.into(),
    };
    let resend = if spec.is_readonly() {
        Resend::Safe
    } else {
        // Noted before sending: the write goes on the pipe current at this number.
        note_write(worker, writes, target.clone());
        Resend::Never
    };
    send(worker, cmd, target, resend)
}

/// Notes a write for WAIT (see [`wait`]).
fn note_write(worker: &Worker, writes: &mut Writes, target: Target) {
    if let Target::Slot(slot) = target {
        writes.note(worker, slot);
    }
}

/// A command that parks its connection until data arrives or its timeout passes: it gets a
/// backend connection of its own, so it blocks only its own client, as on a single Redis.
fn blocking(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    spec: &CommandSpec,
    cmd: Command,
) -> Reply {
    if !spec.is_readonly() {
        client.writes.note_elsewhere();
    }
    match target_of(worker, spec, &cmd) {
        Ok(target) => Reply::Parked(Box::pin(route::execute_blocking(
            worker.clone(),
            cmd.into_raw(),
            target,
        ))),
        Err(crossslot) => crossslot.into(),
    }
}

/// The slot of the command's keys (any primary when it has none), or Redis's CROSSSLOT reply.
/// Behind a standalone Redis one node has every key: any keys go together.
pub(crate) fn target_of(
    worker: &Worker,
    spec: &CommandSpec,
    cmd: &Command,
) -> Result<Target, Bytes> {
    let mut keys = Vec::new();
    spec.key_indices(cmd, &mut keys);
    let standalone = worker.shared.topology.map().is_standalone();
    let mut slot: Option<Slot> = None;
    for &i in &keys {
        let s = Slot::of(cmd.arg(i).unwrap_or_default());
        match slot {
            None => slot = Some(s),
            Some(first) if first != s && !standalone => return Err(reply::error(reply::CROSSSLOT)),
            Some(_) => {}
        }
    }
    Ok(slot.map_or(Target::Any, Target::Slot))
}

fn send(worker: &Rc<Worker>, cmd: Command, target: Target, resend: Resend) -> Reply {
    match route::start(worker, cmd.into_raw(), target, resend) {
        Started::InFlight(in_flight) => Reply::InFlight(in_flight),
        Started::Deferred {
            payload,
            target,
            resend,
        } => Reply::later(execute(worker.clone(), payload, target, resend)),
    }
}

fn any_node(worker: &Rc<Worker>, cmd: Command) -> Reply {
    send(worker, cmd, Target::Any, Resend::Safe)
}

fn broadcast(worker: &Rc<Worker>, cmd: Command, merge: Merge, resend: Resend) -> Reply {
    Reply::later(cluster_wide::broadcast(
        worker.clone(),
        cmd.raw().clone(),
        merge,
        resend,
    ))
}

fn refuse(name: &str, why: &str) -> Reply {
    let shown = name.replace('|', " ").to_uppercase();
    reply::error(&format!("ERR {shown} is not supported by slotproxy: {why}")).into()
}

fn has_block_option(cmd: &Command) -> bool {
    cmd.args()
        .skip(1)
        .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
        .any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}

fn info(worker: &Rc<Worker>, cmd: Command) -> Reply {
    if local::only_proxy_section(&cmd) {
        return reply::bulk(local::proxy_info(worker).as_bytes()).into();
    }
    let wants_proxy = local::wants_proxy_section(&cmd);
    let worker = worker.clone();
    Reply::later(async move {
        let targets = cluster_wide::primaries(&worker);
        let answers = futures_util::future::join_all(
            targets
                .into_iter()
                .map(|t| execute(worker.clone(), cmd.raw().clone(), t, Resend::Safe)),
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
        let mut merged = info::merge(&texts);
        if wants_proxy {
            if !merged.is_empty() && !merged.ends_with("\r\n\r\n") {
                merged.push_str("\r\n");
            }
            merged.push_str(&local::proxy_info(&worker));
        }
        reply::bulk(merged.as_bytes())
    })
}

/// Splits a multi-key command into one command per slot, runs them concurrently and merges.
fn split(
    worker: &Rc<Worker>,
    writes: &mut Writes,
    spec: &CommandSpec,
    cmd: Command,
    kind: Split,
) -> Reply {
    let step = if kind == Split::Pairs { 2 } else { 1 };
    let resend = if spec.is_readonly() {
        Resend::Safe
    } else {
        Resend::Never
    };
    if worker.shared.topology.map().is_standalone() {
        if resend == Resend::Never {
            note_write(worker, writes, Target::Slot(Slot::of(b"")));
        }
        return send(worker, cmd, Target::Any, resend);
    }
    let mut parts = split_by_slot(&cmd, step);
    if resend == Resend::Never {
        for part in &parts {
            note_write(worker, writes, Target::Slot(part.slot));
        }
    }
    if parts.len() <= 1 {
        let target = parts.pop().map_or(Target::Any, |p| Target::Slot(p.slot));
        return send(worker, cmd, target, resend);
    }
    let total = parts.iter().map(|p| p.positions.len()).sum();
    // Every part is sent now, so the parts run in parallel on their nodes; the future only
    // collects the replies (and retries a part whose first answer was a redirect).
    let mut positions = Vec::with_capacity(parts.len());
    let mut started = Vec::with_capacity(parts.len());
    for part in parts {
        positions.push(part.positions);
        started.push(route::start(
            worker,
            part.payload,
            Target::Slot(part.slot),
            resend,
        ));
    }
    let worker = worker.clone();
    Reply::later(async move {
        let mut replies = Vec::with_capacity(started.len());
        for request in started {
            replies.push(request.reply(worker.clone()).await);
        }
        match kind {
            Split::Values => {
                merge::by_position(positions.into_iter().zip(replies).collect(), total)
            }
            Split::Pairs => merge::all_ok(&replies),
            Split::Count => merge::sum(&replies),
        }
    })
}

/// What a RESP2 client in subscriber mode may still send, as in Redis.
fn allowed_when_subscribed(name: &str) -> bool {
    matches!(
        name,
        "subscribe"
            | "psubscribe"
            | "ssubscribe"
            | "unsubscribe"
            | "punsubscribe"
            | "sunsubscribe"
            | "ping"
            | "quit"
            | "reset"
    )
}

fn pubsub_kind(name: &str) -> Kind {
    match name {
        "psubscribe" | "punsubscribe" => Kind::Pattern,
        "ssubscribe" | "sunsubscribe" => Kind::Shard,
        _ => Kind::Channel,
    }
}

/// Redis's reply for a command it does not know.
fn unknown_command(cmd: &Command) -> Bytes {
    reply::error(&format!("ERR {}", CommandError::unknown_command(cmd)))
}

/// Redis's reply for a wrong number of arguments.
fn wrong_arity(spec: &CommandSpec) -> Bytes {
    reply::error(&format!("ERR {}", CommandError::wrong_arity(spec)))
}

//! Decides how each command is served and produces the reply that goes into the client's
//! queue, in three steps: classify (table lookup, arity, authentication, what a subscribed
//! or transacting client may send), plan (a pure function of the command's route, its
//! arguments and one slot-map snapshot: [`plan::plan`]), execute ([`execute::execute`]).

pub mod clients;
pub mod cluster_wide;
pub mod decision;
pub mod driver;
pub mod emulate;
pub mod error;
pub mod execute;
pub mod guard;
pub mod info;
pub mod invalidation_feed;
pub mod local;
pub mod merge;
pub mod near_cache;
pub mod pinned;
pub mod plan;
pub mod pubsub;
pub mod reply;
pub mod scripts;
pub mod server_config;
pub mod session;
pub mod split;
pub mod tracking;
pub mod transaction;
pub mod wait;
pub mod worker;

use quanta::Instant;
use std::rc::Rc;

use bytes::Bytes;

/// The client-list flags the session sets (held by CLIENT PAUSE).
pub use crate::registry::flag;
pub use driver::{InFlight, Settled};
pub use error::ProxyError;
pub use reply::Reply;
pub use session::ClientState;
pub use worker::{CommandMetrics, Worker};

use crate::command::route::{Local, Route, SessionCommand};
use crate::command::{CommandError, CommandSpec};
use crate::resp::{Command, Protocol};
use plan::{plan, Allowed};

/// Produces the reply for one command. Called in arrival order; the returned reply is queued
/// so replies go back in the order the client sent its commands.
/// `arrived`: when the read that brought the command completed (one clock read per batch).
pub fn dispatch(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    cmd: Command,
    arrived: &mut Option<Instant>,
) -> Dispatched {
    // CLIENT REPLY: only looked at when it is not the default.
    let pushed = !client.reply.is_on() && clients::answers_with_pushes(&cmd);
    let mut dispatched = dispatch_command(worker, client, cmd, arrived);
    if !client.reply.is_on() {
        dispatched.silent = client.reply.command_done(pushed);
    }
    client.publish_multi();
    dispatched
}

fn dispatch_command(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    cmd: Command,
    arrived: &mut Option<Instant>,
) -> Dispatched {
    let table = worker.command_table();
    // One snapshot of the slot map for the whole command: planning and sending see the same.
    let map = worker.slot_map();
    if client.tx.in_multi() && !transaction::runs_in_multi(cmd.name()) {
        let spec = table.lookup(&cmd);
        if let Some(spec) = spec {
            client.entry().note_command(spec.id);
        }
        let refusal = match spec {
            None => Some(unknown_command(&cmd)),
            Some(spec) if !spec.check_arity(cmd.argc()) => Some(wrong_arity(spec)),
            Some(spec) => {
                if client.tracking.is_some() {
                    tracking::note_queued(worker, client, spec, &cmd);
                }
                if let Some(cache) = &worker.near_cache {
                    cache.queued(spec, &cmd);
                }
                None
            }
        };
        return Dispatched {
            reply: transaction::queue(worker, &map, &mut client.tx, spec, cmd, refusal),
            latency: None,
            silent: false,
        };
    }
    let spec = match classify(worker.lookup(&table, &cmd), &cmd, client) {
        Ok(spec) => spec,
        Err(error) => return Dispatched::untimed(error.answer()),
    };
    // `cmd=` of CLIENT LIST: one relaxed store.
    client.entry().note_command(spec.id);
    if matches!(spec.route, Route::EveryNode | Route::ConfigSet) {
        let credentials = worker.shared.topology.credentials();
        let user = credentials.username.as_deref().unwrap_or("default");
        if let Some(refusal) = guard::refusal(&spec.name, &cmd, user) {
            return Dispatched::untimed(refusal.answer());
        }
    }
    let allowed = Allowed {
        admin_commands: worker.shared.config.admin.commands,
        cross_slot: worker.shared.config.admin.cross_slot,
    };
    let mut planned = plan(spec, &cmd, allowed, &map);
    if client.tracking.is_some() {
        tracking::note_command(worker, client, spec, &cmd, &mut planned);
    }
    // The near cache: a write's keys are invalidated now and again once it is answered.
    let written = match &worker.near_cache {
        Some(cache) => cache.written(&table, spec, &cmd, &client.tx),
        None => None,
    };
    let latency = if worker.shared.config.admin.metrics {
        let metrics = worker.command_metrics(&table, spec);
        metrics.received.set(metrics.received.get() + 1);
        Some((*arrived.get_or_insert_with(Instant::now), metrics))
    } else {
        None
    };
    let reply = execute::execute(worker, client, &map, spec, cmd, planned);
    Dispatched {
        reply: match written {
            Some(written) => written.after(reply),
            None => reply,
        },
        latency,
        silent: false,
    }
}

/// The command's table entry (`spec`, `None` for a name the table does not know), or why the
/// client may not run it now (as one Redis would say).
fn classify<'t>(
    spec: Option<&'t CommandSpec>,
    cmd: &Command,
    client: &ClientState,
) -> Result<&'t CommandSpec, ProxyError> {
    let Some(spec) = spec else {
        return Err(unknown_command(cmd));
    };
    if !spec.check_arity(cmd.argc()) {
        return Err(wrong_arity(spec));
    }
    let authenticating = matches!(
        spec.route,
        Route::Local(Local::Auth | Local::Hello | Local::Quit)
    );
    if !client.authenticated && !authenticating {
        return Err(ProxyError::no_auth());
    }
    // RESP3 clients get messages as push frames between replies, so any command may follow.
    if client.protocol == Protocol::Resp2
        && client.subs.as_ref().is_some_and(|s| s.active())
        && !allowed_when_subscribed(spec.route)
    {
        return Err(ProxyError::bad_request(format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        )));
    }
    Ok(spec)
}

/// A command's reply-to-be and, for commands of the table, where its latency is recorded
/// once the reply is complete.
pub struct Dispatched {
    pub reply: Reply,
    pub latency: Option<(Instant, Rc<CommandMetrics>)>,
    /// Silenced by `CLIENT REPLY OFF|SKIP`: awaited in its place, never written.
    pub silent: bool,
}

impl Dispatched {
    pub fn untimed(reply: Bytes) -> Dispatched {
        Dispatched {
            reply: Reply::Ready(reply),
            latency: None,
            silent: false,
        }
    }
}

/// What a RESP2 client in subscriber mode may still send, as in Redis.
fn allowed_when_subscribed(route: Route) -> bool {
    matches!(
        route,
        Route::Session(SessionCommand::Subscribe(_) | SessionCommand::Unsubscribe(_))
            | Route::Local(Local::Ping | Local::Quit | Local::Reset)
    )
}

/// Redis's reply for a command it does not know.
fn unknown_command(cmd: &Command) -> ProxyError {
    ProxyError::bad_request(format!("ERR {}", CommandError::unknown_command(cmd)))
}

/// Redis's reply for a wrong number of arguments.
fn wrong_arity(spec: &CommandSpec) -> ProxyError {
    ProxyError::bad_request(format!("ERR {}", CommandError::wrong_arity(spec)))
}

//! Scripts and functions (EVAL, EVALSHA, FCALL and their `_RO` forms).
//!
//! A script runs on a connection of its own when the client has nothing else in flight (the
//! usual case: one request at a time) and a `max_script_connections` permit is free. A node
//! does not read the rest of a connection while a script of that connection runs, so a long
//! script on a shared pipe would hold back every other client's commands to that node behind
//! it, SCRIPT KILL included; on a connection of its own, the others get `BUSY` from the node
//! at once, as from one server, and SCRIPT KILL reaches it. The client's later commands wait
//! for the script's reply (`hold_until_replied`), so nothing overtakes it. A script pipelined
//! behind other commands of its client goes on the shared pipe, which keeps their order.
//!
//! EVALSHA answered with NOSCRIPT, typically by a replica promoted after a failover (script
//! caches are not replicated), is repaired with the body the proxy saw in a SCRIPT LOAD or
//! EVAL (`shared::ScriptCache`): the proxy loads it on that node and runs the EVALSHA again.
//!
//! While any script is in flight, PING asks the primaries whether one is busy ([`ping`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

use super::driver::{
    execute, execute_dedicated, execute_dedicated_noting, Resend, Started, Target,
};
use super::plan::Send;
use super::worker::Worker;
use crate::backend::NodeAddr;
use crate::command::route::Script;
use crate::resp::Command;
use crate::shared::running::Running;

/// How long PING waits for the primaries' own PING while scripts are in flight: a node busy
/// with a script answers at once, a node finishing a short one within its busy threshold.
const BUSY_CHECK: Duration = Duration::from_millis(500);

/// Where a script runs.
pub enum Connection {
    /// A connection of its own, while this permit is held.
    Own(tokio::sync::OwnedSemaphorePermit),
    /// The shared pipe, already sent.
    Pipe(Started),
}

/// Runs the script `cmd` of kind `script` as `send` says on `connection`; counted in
/// flight by `running` until its reply.
pub async fn run(
    worker: Rc<Worker>,
    connection: Connection,
    running: Running,
    script: Script,
    cmd: Command,
    send: Send,
) -> Bytes {
    let _running = running;
    let (answer, permit) = match connection {
        Connection::Own(permit) => {
            let mut abandoned = Abandoned::new(&worker, script);
            let payload = cmd.raw().clone();
            let target = send.target.clone();
            let noted = |node: &NodeAddr| abandoned.note(node);
            let answer = execute_dedicated_noting(worker.clone(), payload, target, &noted).await;
            abandoned.answered();
            (answer, Some(permit))
        }
        Connection::Pipe(started) => (started.reply(worker.clone()).await, None),
    };
    if script != Script::EvalSha || !answer.starts_with(b"-NOSCRIPT") {
        return answer;
    }
    if !load_known_body(&worker, &cmd, &send.target).await {
        return answer;
    }
    let payload = cmd.into_raw();
    match permit {
        Some(_permit) => execute_dedicated(worker, payload, send.target).await,
        None => execute(worker, payload, send.target, send.resend).await,
    }
}

/// Kills a script whose client went away before its reply (the client's session dropped the
/// request, which closes the script's connection): nobody waits for its result, and a node
/// keeps running a script whose client is gone until it ends, answering everyone else BUSY.
/// `SCRIPT KILL` (or `FUNCTION KILL`) on that node stops it unless it already wrote (then the
/// node answers UNKILLABLE and it runs to its end, as on one server). A node runs one script
/// at a time, so the script running there is this one; the kill goes out right after the
/// connection closes.
struct Abandoned {
    worker: Rc<Worker>,
    script: Script,
    node: RefCell<Option<NodeAddr>>,
    answered: bool,
}

impl Abandoned {
    fn new(worker: &Rc<Worker>, script: Script) -> Abandoned {
        Abandoned {
            worker: worker.clone(),
            script,
            node: RefCell::new(None),
            answered: false,
        }
    }

    /// The script was sent to `node` (each attempt: a redirect moves it).
    fn note(&self, node: &NodeAddr) {
        *self.node.borrow_mut() = Some(node.clone());
    }

    fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        let Some(node) = self.node.take() else {
            return;
        };
        if self.answered {
            return;
        }
        let kill: &[&[u8]] = match self.script {
            Script::Function => &[b"FUNCTION", b"KILL"],
            _ => &[b"SCRIPT", b"KILL"],
        };
        let payload = Command::from_args(kill).into_raw();
        let worker = self.worker.clone();
        tracing::debug!(%node, "killing the script of a client that went away");
        metrics::counter!("slotproxy_scripts_abandoned_total").increment(1);
        tokio::task::spawn_local(async move {
            let _ = execute_dedicated(worker, payload, Target::Node(node)).await;
        });
    }
}

/// EVALSHA answered NOSCRIPT: loads the body the proxy knows for its SHA on the node that
/// serves `target`. False when the body is unknown or the load failed (NOSCRIPT stands).
async fn load_known_body(worker: &Rc<Worker>, cmd: &Command, target: &Target) -> bool {
    let Some(body) = cmd.arg(1).and_then(|sha| worker.shared.scripts.body(sha)) else {
        return false;
    };
    let load = Command::from_args(&[b"SCRIPT".as_slice(), b"LOAD", &body]);
    let loaded = execute(
        worker.clone(),
        load.into_raw(),
        target.clone(),
        Resend::Safe,
    )
    .await;
    if loaded.starts_with(b"-") {
        return false;
    }
    metrics::counter!("slotproxy_scripts_reloaded_total").increment(1);
    true
}

/// PING while scripts are in flight: the first primary's `BUSY`, if one is busy running a
/// script (one server would answer PING so), else `pong`.
pub async fn ping(worker: Rc<Worker>, pong: Bytes) -> Bytes {
    let map = worker.shared.topology.map();
    let ping = Command::from_args(&[b"PING".as_slice()]).into_raw();
    let asked = map.shards().iter().map(|shard| {
        let worker = worker.clone();
        let ping = ping.clone();
        let target = Target::Node(shard.primary.clone());
        async move {
            tokio::time::timeout(BUSY_CHECK, execute_dedicated(worker, ping, target))
                .await
                .unwrap_or_default()
        }
    });
    join_all(asked)
        .await
        .into_iter()
        .find(|answer| answer.starts_with(b"-BUSY"))
        .unwrap_or(pong)
}

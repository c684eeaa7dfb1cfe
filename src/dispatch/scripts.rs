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
use crate::resp::{Command, Value};
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
    match connection {
        Connection::Pipe(started) => {
            let answer = started.reply(worker.clone()).await;
            if !wants_body(script, &answer) || !load_known_body(&worker, &cmd, &send.target).await {
                return answer;
            }
            execute(worker, cmd.into_raw(), send.target, send.resend).await
        }
        Connection::Own(_permit) => {
            let (answer, ran_on) =
                run_own_repairing(&worker, script, &cmd, send.target.clone()).await;
            if send.target == Target::Any && answer.starts_with(NON_LOCAL_KEY) {
                rerun_elsewhere(&worker, script, &cmd, ran_on, answer).await
            } else {
                answer
            }
        }
    }
}

/// An EVALSHA the node did not know (`NOSCRIPT`): the proxy may know its body.
fn wants_body(script: Script, answer: &[u8]) -> bool {
    script == Script::EvalSha && answer.starts_with(b"-NOSCRIPT")
}

/// [`run_own`]; after `NOSCRIPT`, the body the proxy knows is loaded on the node that said it,
/// and the script runs there again.
async fn run_own_repairing(
    worker: &Rc<Worker>,
    script: Script,
    cmd: &Command,
    target: Target,
) -> (Bytes, Option<NodeAddr>) {
    let (answer, ran_on) = run_own(worker, script, cmd, target).await;
    if !wants_body(script, &answer) {
        return (answer, ran_on);
    }
    let Some(node) = ran_on.clone() else {
        return (answer, ran_on);
    };
    let there = Target::Node(node);
    if !load_known_body(worker, cmd, &there).await {
        return (answer, ran_on);
    }
    run_own(worker, script, cmd, there).await
}

/// Runs the script on a connection of its own; its answer and the node that gave it.
async fn run_own(
    worker: &Rc<Worker>,
    script: Script,
    cmd: &Command,
    target: Target,
) -> (Bytes, Option<NodeAddr>) {
    let mut abandoned = Abandoned::new(worker, script);
    let payload = cmd.raw().clone();
    let noted = |node: &NodeAddr| abandoned.note(node);
    let answer = execute_dedicated_noting(worker.clone(), payload, target, &noted).await;
    abandoned.answered();
    (answer, abandoned.node.take())
}

/// A node's refusal of a script that touched a key of a slot it does not serve.
const NON_LOCAL_KEY: &[u8] = b"-ERR Script attempted to access a non local key in a cluster node";

/// A script that declares no keys runs on any primary, as it would on one server; when its
/// first key lives on another node, that node refuses it with [`NON_LOCAL_KEY`] before it
/// touched any key. One server would have run it, so it runs again on each other primary in
/// turn (at most once each) until one serves that key, if [`may_rerun_elsewhere`] allows.
async fn rerun_elsewhere(
    worker: &Rc<Worker>,
    script: Script,
    cmd: &Command,
    ran_on: Option<NodeAddr>,
    refused: Bytes,
) -> Bytes {
    let read_only = cmd
        .name()
        .get(cmd.name().len().saturating_sub(3)..)
        .is_some_and(|tail| tail.eq_ignore_ascii_case(b"_ro"));
    let code = match script {
        Script::Eval => cmd.arg(1).map(Bytes::copy_from_slice),
        Script::EvalSha => cmd.arg(1).and_then(|sha| worker.shared.scripts.body(sha)),
        Script::Function => match cmd.arg(1) {
            Some(name) => function_code(worker, name).await,
            None => None,
        },
        Script::Load | Script::Flush => None,
    };
    if !may_rerun_elsewhere(code.as_deref(), read_only) {
        return refused;
    }
    let primaries: Vec<NodeAddr> = worker
        .shared
        .topology
        .map()
        .shards()
        .iter()
        .map(|shard| shard.primary.clone())
        .filter(|primary| Some(primary) != ran_on.as_ref())
        .collect();
    let mut answer = refused;
    for primary in primaries {
        metrics::counter!("slotproxy_scripts_rerun_total").increment(1);
        (answer, _) = run_own_repairing(worker, script, cmd, Target::Node(primary)).await;
        if !answer.starts_with(NON_LOCAL_KEY) {
            break;
        }
    }
    answer
}

/// Whether a script a node refused with [`NON_LOCAL_KEY`] may run again elsewhere. The node
/// stops a script at its first key when that key is not local, and every later key of a
/// script must share the first one's slot, so it wrote nothing, unless it may touch keys of
/// several slots (the `allow-cross-slot-keys` flag: an earlier key may have been written).
/// A `PUBLISH` before the first key would be repeated, so a script that may publish does not
/// run again either. `code` is the script's body or its function library's code; when it is
/// unknown, only a read-only form (`_RO`: no writes, no PUBLISH) runs again.
pub fn may_rerun_elsewhere(code: Option<&[u8]>, read_only: bool) -> bool {
    let Some(code) = code else {
        return read_only;
    };
    let mentions = |word: &[u8]| {
        code.windows(word.len())
            .any(|window| window.eq_ignore_ascii_case(word))
    };
    !mentions(b"allow-cross-slot-keys") && !mentions(b"publish")
}

/// The code of the function library that holds function `name` (FUNCTION LIST WITHCODE on
/// any primary: every primary holds the same libraries); `None` if not found.
async fn function_code(worker: &Rc<Worker>, name: &[u8]) -> Option<Bytes> {
    let list = Command::from_args(&[b"FUNCTION".as_slice(), b"LIST", b"WITHCODE"]).into_raw();
    let reply = execute(worker.clone(), list, Target::Any, Resend::Safe).await;
    let (libraries, _) = Value::parse(&reply).ok().flatten()?;
    libraries.as_array()?.iter().find_map(|library| {
        let functions = library.field("functions")?.as_array()?;
        let holds = functions.iter().any(|function| {
            function
                .field("name")
                .and_then(Value::as_bytes)
                .is_some_and(|n| n == name)
        });
        holds
            .then(|| {
                library
                    .field("library_code")?
                    .as_bytes()
                    .map(Bytes::copy_from_slice)
            })
            .flatten()
    })
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

#[cfg(test)]
mod tests {
    use super::may_rerun_elsewhere;

    #[test]
    fn only_scripts_that_wrote_and_published_nothing_run_again() {
        let cases: &[(Option<&str>, bool, bool)] = &[
            (Some("return redis.call('GET', ARGV[1])"), false, true),
            (Some("return redis.call('INCR', ARGV[1])"), false, true),
            (
                Some("#!lua flags=no-writes\nreturn redis.call('GET', ARGV[1])"),
                true,
                true,
            ),
            (
                Some("#!lua flags=allow-cross-slot-keys\nreturn 1"),
                false,
                false,
            ),
            (
                Some("#!lua flags=allow-cross-slot-keys\nreturn 1"),
                true,
                false,
            ),
            (
                Some("redis.call('Publish', 'c', 'm') return 1"),
                false,
                false,
            ),
            (
                Some("redis.call('SPUBLISH', 'c', 'm') return 1"),
                false,
                false,
            ),
            (None, true, true),
            (None, false, false),
        ];
        for &(code, read_only, expected) in cases {
            assert_eq!(
                may_rerun_elsewhere(code.map(str::as_bytes), read_only),
                expected,
                "{code:?} read_only={read_only}"
            );
        }
    }
}

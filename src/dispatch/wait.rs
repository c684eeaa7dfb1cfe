//! `WAIT numreplicas timeout` through the proxy.
//!
//! Redis's WAIT waits for the writes of the connection it runs on. A client's writes travel
//! over the worker's shared pipes, so the proxy notes, per node, which pipe carried the
//! client's latest write; WAIT then runs on that very pipe, taken out of service first (WAIT
//! blocks its connection, and other clients' commands must not queue behind it). Writes that
//! went to several nodes (a split MSET, writes to several slots) get one WAIT per node, and
//! the answer is the smallest count, as for writes acknowledged by every node.

use std::rc::Rc;
use std::sync::Arc;

use crate::backend::reply_slot as oneshot;
use bytes::Bytes;
use futures_util::future::join_all;

use super::driver::{self, Target};
use super::error::ProxyError;
use super::reply;
use super::worker::Worker;
use super::Reply;
use crate::backend::pipe::{Pipe, ReplyResult};
use crate::backend::NodeAddr;
use crate::cluster::{Slot, SlotMap};
use crate::registry::ClientEntry;
use crate::resp::{parse_integer, Command};

/// Where a client's writes went since it connected: one entry per node.
#[derive(Default)]
pub struct Writes {
    via_pipes: Vec<NodeWrites>,
    /// A write ran on a connection of its own (EXEC, a blocking write) since the last WAIT,
    /// which WAIT can't reach: the next WAIT says so (once).
    elsewhere: bool,
}

struct NodeWrites {
    addr: NodeAddr,
    /// The pool's write mark right after the latest write to this node was queued.
    noted: u64,
    /// The pipe a WAIT ran on since that write, kept for the next WAIT: its connection is the
    /// one whose writes Redis counts (a new write to the node lets it go).
    waited_on: Option<Rc<Pipe>>,
}

impl Writes {
    /// Notes a write just queued for the owner of `slot` on the shared pipes.
    pub fn note(&mut self, worker: &Worker, map: &SlotMap, slot: Slot) {
        let Some(addr) = map.primary(slot) else {
            return;
        };
        let noted = worker.pool.write_mark();
        match self.via_pipes.iter_mut().find(|n| n.addr == *addr) {
            Some(entry) => {
                entry.noted = noted;
                entry.waited_on = None;
            }
            None => self.via_pipes.push(NodeWrites {
                addr: addr.clone(),
                noted,
                waited_on: None,
            }),
        }
    }

    /// Notes a write that ran on a dedicated connection (a transaction, a blocking command).
    pub fn note_elsewhere(&mut self) {
        self.elsewhere = true;
    }
}

/// Runs `WAIT` for the writes noted in `writes`; `entry`: the client's, which shows it blocked.
pub fn wait(
    worker: &Rc<Worker>,
    writes: &mut Writes,
    cmd: Command,
    entry: Arc<ClientEntry>,
) -> Reply {
    match prepare(worker, writes, &cmd) {
        Ok(Prepared::NothingWritten) => {
            // Nothing written: Redis answers at once with the replicas that are connected.
            Reply::Parked(Box::pin(driver::execute_blocking(
                worker.clone(),
                cmd,
                Target::Any,
                entry,
            )))
        }
        Ok(Prepared::On(waits)) => Reply::Parked(Box::pin(least_of(waits))),
        Err(error) => error.answer().into(),
    }
}

/// Where a WAIT runs.
enum Prepared {
    NothingWritten,
    /// On these pipes (one per node written to), already sent.
    On(Vec<(Rc<Pipe>, oneshot::Receiver<ReplyResult>)>),
}

/// Checks the arguments and sends the WAIT on the pipe of each node's writes.
fn prepare(worker: &Worker, writes: &mut Writes, cmd: &Command) -> Result<Prepared, ProxyError> {
    let numreplicas = cmd.arg(1).and_then(parse_integer);
    let timeout = cmd.arg(2).and_then(parse_integer);
    let (Some(_), Some(timeout)) = (numreplicas, timeout) else {
        return Err(ProxyError::bad_request(
            "ERR value is not an integer or out of range",
        ));
    };
    if timeout < 0 {
        return Err(ProxyError::bad_request("ERR timeout is negative"));
    }
    if std::mem::take(&mut writes.elsewhere) {
        return Err(ProxyError::proxy_policy(
            "ERR WAIT is not supported by slotproxy after a transaction or a blocking write: they ran on connections of their own",
        ));
    }
    if writes.via_pipes.is_empty() {
        return Ok(Prepared::NothingWritten);
    }
    let mut waits = Vec::with_capacity(writes.via_pipes.len());
    for node in &mut writes.via_pipes {
        let pipe = match node.waited_on.take() {
            Some(pipe) => Some(pipe),
            None => worker.pool.retire_for_wait(&node.addr, node.noted),
        };
        let Some(pipe) = pipe.filter(|p| !p.state().is_closed()) else {
            return Err(ProxyError::node(format!(
                "ERR the connection that carried this client's writes to {} was lost: WAIT can't tell whether they reached its replicas",
                node.addr
            )));
        };
        let rx = pipe.send_untimed(cmd.raw().clone());
        node.waited_on = Some(pipe.clone());
        waits.push((pipe, rx));
    }
    Ok(Prepared::On(waits))
}

/// The smallest count of the WAITs: the replicas that have every node's writes.
async fn least_of(waits: Vec<(Rc<Pipe>, oneshot::Receiver<ReplyResult>)>) -> Bytes {
    let answers = join_all(waits.into_iter().map(|(pipe, rx)| async move {
        let answer = rx.await;
        drop(pipe); // the retired connection closes once nothing else needs it
        answer
    }))
    .await;
    let mut least: Option<i64> = None;
    for answer in answers {
        let bytes: Bytes = match answer {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(error)) => return ProxyError::backend(&error).answer(),
            Err(_) => return ProxyError::node("ERR the connection for WAIT closed").answer(),
        };
        match super::merge::integer(&bytes) {
            Some(n) => least = Some(least.map_or(n, |l| l.min(n))),
            None => return bytes,
        }
    }
    reply::integer(least.unwrap_or(0))
}

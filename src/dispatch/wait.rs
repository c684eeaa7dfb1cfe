//! `WAIT numreplicas timeout` through the proxy.
//!
//! Redis's WAIT waits for the writes of the connection it runs on. A client's writes travel
//! over the worker's shared pipes, so the proxy notes, per node, which pipe carried the
//! client's latest write; WAIT then runs on that very pipe, taken out of service first (WAIT
//! blocks its connection, and other clients' commands must not queue behind it). Writes that
//! went to several nodes (a split MSET, writes to several slots) get one WAIT per node, and
//! the answer is the smallest count, as for writes acknowledged by every node.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;

use super::reply;
use super::route::{self, Target};
use super::worker::Worker;
use super::Reply;
use crate::backend::pipe::Pipe;
use crate::backend::NodeAddr;
use crate::cluster::{Slot, SlotMap};
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

/// Runs `WAIT` for the writes noted in `writes`.
pub fn wait(worker: &Rc<Worker>, writes: &mut Writes, cmd: Command) -> Reply {
    let numreplicas = cmd.arg(1).and_then(parse_integer);
    let timeout = cmd.arg(2).and_then(parse_integer);
    let (Some(_), Some(timeout)) = (numreplicas, timeout) else {
        return reply::error("ERR value is not an integer or out of range").into();
    };
    if timeout < 0 {
        return reply::error("ERR timeout is negative").into();
    }
    if std::mem::take(&mut writes.elsewhere) {
        return reply::error(
            "ERR WAIT is not supported by slotproxy after a transaction or a blocking write: they ran on connections of their own",
        )
        .into();
    }
    if writes.via_pipes.is_empty() {
        // Nothing written: Redis answers at once with the replicas that are connected.
        return Reply::Parked(Box::pin(route::execute_blocking(
            worker.clone(),
            cmd.into_raw(),
            Target::Any,
        )));
    }
    let mut waits = Vec::with_capacity(writes.via_pipes.len());
    for node in &mut writes.via_pipes {
        let pipe = match node.waited_on.take() {
            Some(pipe) => Some(pipe),
            None => worker.pool.retire_for_wait(&node.addr, node.noted),
        };
        let Some(pipe) = pipe.filter(|p| !p.state().is_closed()) else {
            return reply::error(&format!(
                "ERR the connection that carried this client's writes to {} was lost: WAIT can't tell whether they reached its replicas",
                node.addr
            ))
            .into();
        };
        let rx = pipe.send_untimed(cmd.raw().clone());
        node.waited_on = Some(pipe.clone());
        waits.push((pipe, rx));
    }
    Reply::Parked(Box::pin(async move {
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
                Ok(Err(error)) => return reply::error(&format!("ERR {error}")),
                Err(_) => return reply::error("ERR the connection for WAIT closed"),
            };
            match super::merge::integer(&bytes) {
                Some(n) => least = Some(least.map_or(n, |l| l.min(n))),
                None => return bytes,
            }
        }
        let mut out = bytes::BytesMut::new();
        crate::resp::encode::integer(&mut out, least.unwrap_or(0));
        out.freeze()
    }))
}

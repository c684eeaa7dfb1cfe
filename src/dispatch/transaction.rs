//! MULTI/EXEC/DISCARD and WATCH/UNWATCH over a cluster.
//!
//! MULTI queues commands in the proxy and answers `+QUEUED`, as Redis does. The transaction is
//! pinned to the slot of its first keyed command (or of its WATCH); a command for another slot
//! is refused with `-CROSSSLOT` at once and makes EXEC answer `-EXECABORT`, like any error
//! while queuing on a single Redis. EXEC sends MULTI, the queued commands and EXEC back to back
//! on a connection of its own to the slot's owner and returns EXEC's reply as it is. WATCH
//! holds a connection to the watched keys' owner until EXEC, DISCARD or UNWATCH, so the
//! node itself detects concurrent changes (EXEC then answers a null array). Without a WATCH, a
//! slot that moved while the client queued is followed: the whole transaction is sent again to
//! the new owner (nothing ran on the old one: Redis refuses every command of it).

use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::Mutex;

use super::decision::{Resend, Rules};
use super::driver::{drive, rules, Exchange, Target};
use super::error::ProxyError;
use super::plan::target_of;
use super::reply::{self, Reply};
use super::worker::Worker;
use crate::backend::dedicated::exchange_many;
use crate::backend::pipe::ReplyResult;
use crate::backend::stream::BackendStream;
use crate::backend::NodeAddr;
use crate::cluster::redirect::classify;
use crate::cluster::{Slot, SlotMap};
use crate::command::CommandSpec;
use crate::resp::Command;

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// A client's transaction state.
#[derive(Default)]
pub struct TxState {
    multi: Option<Queued>,
    watch: Option<Watch>,
}

impl TxState {
    pub fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// Commands queued, or `None` outside MULTI (`CLIENT LIST`'s `multi=`).
    pub fn queued(&self) -> Option<usize> {
        self.multi.as_ref().map(|q| q.commands.len())
    }

    /// Whether a queued command writes (or may replicate): `CLIENT PAUSE WRITE` holds its EXEC.
    pub fn queued_writes(&self) -> bool {
        self.multi.as_ref().is_some_and(|q| q.writes)
    }
}

#[derive(Default)]
struct Queued {
    commands: Vec<Command>,
    slot: Option<Slot>,
    /// An error while queuing: EXEC answers EXECABORT.
    failed: bool,
    /// A queued command writes or may replicate.
    writes: bool,
}

/// The connection that carries a client's WATCH, filled in by the WATCH command's future.
/// EXEC locks it, so an EXEC pipelined right behind its WATCH waits for the WATCH to land.
struct Watch {
    slot: Slot,
    conn: Arc<Mutex<Option<(NodeAddr, BackendStream)>>>,
}

/// Commands that a client inside MULTI runs at once rather than queues (as in Redis).
pub fn runs_in_multi(name: &[u8]) -> bool {
    ["exec", "discard", "multi", "watch", "quit", "reset"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Queues a command inside MULTI; the reply is `+QUEUED` or the error that aborts the
/// transaction. `spec` is `None` for a command the cluster does not know.
pub fn queue(
    map: &SlotMap,
    state: &mut TxState,
    spec: Option<&CommandSpec>,
    cmd: Command,
    refusal: Option<ProxyError>,
) -> Bytes {
    let watch_slot = state.watch.as_ref().map(|w| w.slot);
    let Some(queued) = state.multi.as_mut() else {
        return ProxyError::bad_request("ERR EXEC without MULTI").answer();
    };
    let verdict = match (spec, refusal) {
        (_, Some(error)) => Err(error),
        (None, None) => Err(ProxyError::bad_request("ERR unknown command")),
        (Some(spec), None) if spec.is_no_multi() => Err(ProxyError::bad_request(
            "ERR Command not allowed inside a transaction",
        )),
        (Some(spec), None) => match target_of(spec, &cmd, map) {
            Err(crossslot) => Err(crossslot),
            Ok(Target::Slot(slot)) => match queued.slot.or(watch_slot) {
                Some(pinned) if pinned != slot && !map.is_standalone() => {
                    Err(ProxyError::cross_slot())
                }
                _ => {
                    queued.slot = Some(slot);
                    Ok(())
                }
            },
            Ok(_) => Ok(()),
        },
    };
    match verdict {
        Ok(()) => {
            queued.writes |= spec.is_some_and(|s| s.is_write() || s.may_replicate());
            queued.commands.push(cmd);
            Bytes::from_static(b"+QUEUED\r\n")
        }
        Err(error) => {
            queued.failed = true;
            error.answer()
        }
    }
}

pub fn multi(state: &mut TxState) -> Bytes {
    if state.multi.is_some() {
        return ProxyError::bad_request("ERR MULTI calls can not be nested").answer();
    }
    state.multi = Some(Queued::default());
    reply::ok()
}

pub fn discard(state: &mut TxState) -> Bytes {
    if state.multi.take().is_none() {
        return ProxyError::bad_request("ERR DISCARD without MULTI").answer();
    }
    state.watch = None;
    reply::ok()
}

pub fn unwatch(state: &mut TxState) -> Bytes {
    state.watch = None;
    reply::ok()
}

pub fn reset(state: &mut TxState) {
    *state = TxState::default();
}

pub fn exec(worker: &Rc<Worker>, state: &mut TxState) -> Reply {
    let Some(queued) = state.multi.take() else {
        return ProxyError::bad_request("ERR EXEC without MULTI")
            .answer()
            .into();
    };
    let watch = state.watch.take();
    if queued.failed {
        return ProxyError::exec_abort().answer().into();
    }
    let slot = queued.slot.or(watch.as_ref().map(|w| w.slot));
    let mut payload =
        BytesMut::with_capacity(32 + queued.commands.iter().map(|c| c.raw().len()).sum::<usize>());
    payload.extend_from_slice(MULTI);
    for cmd in &queued.commands {
        payload.extend_from_slice(cmd.raw());
    }
    payload.extend_from_slice(EXEC);
    let replies = queued.commands.len() + 2;
    let worker = worker.clone();
    Reply::later(run_exec(worker, payload.freeze(), replies, slot, watch))
}

async fn run_exec(
    worker: Rc<Worker>,
    payload: Bytes,
    replies: usize,
    slot: Option<Slot>,
    watch: Option<Watch>,
) -> Bytes {
    if let Some(watch) = watch {
        let held = watch.conn.lock().await.take();
        if let Some((addr, mut conn)) = held {
            // With a WATCH the node must be the one that watched: no redirect is followed.
            return match exchange_many(&mut conn, &addr, &payload, replies).await {
                Ok(mut all) => {
                    worker.dedicated.checkin(&addr, conn);
                    all.pop()
                        .unwrap_or_else(|| ProxyError::exec_abort().to_reply())
                }
                Err(error) => ProxyError::backend(&error).answer(),
            };
        }
        // The WATCH itself failed (its error went to the client): run unwatched, as Redis
        // would after a WATCH that did not happen.
    }
    let target = slot.map_or(Target::Any, Target::Slot);
    let mut exec = ExecExchange {
        payload: &payload,
        replies,
        exec_reply: None,
    };
    // The EXEC may have run once it was written: never send it again. ASKING can't be queued
    // inside MULTI, so a migrating slot is waited for instead.
    let rules = Rules {
        can_ask: false,
        ..rules(&worker, Resend::Never)
    };
    match drive(&worker, &mut exec, &target, rules, None).await {
        // Out of time while the slot moved: EXEC's own answer (nothing of it ran).
        Ok(answer) if classify(&answer).is_some() => exec.exec_reply.unwrap_or(answer),
        Ok(answer) => answer,
        Err(error) => error.answer(),
    }
}

/// MULTI, the queued commands and EXEC on a connection of their own. The reply the driver
/// decides on is the first redirect among the queuing answers (the slot moved while the
/// client queued: nothing ran, Redis refused every command), else EXEC's reply.
struct ExecExchange<'a> {
    payload: &'a Bytes,
    replies: usize,
    /// EXEC's reply when a queuing answer was a redirect (EXECABORT).
    exec_reply: Option<Bytes>,
}

impl Exchange for ExecExchange<'_> {
    const REPLICA_READS: bool = false;

    async fn exchange(&mut self, worker: &Worker, addr: &NodeAddr, _asking: bool) -> ReplyResult {
        let mut conn = worker.dedicated.checkout(addr).await?;
        let mut all = exchange_many(&mut conn, addr, self.payload, self.replies).await?;
        worker.dedicated.checkin(addr, conn);
        let exec = all
            .pop()
            .unwrap_or_else(|| ProxyError::exec_abort().to_reply());
        // Queuing answers sit between MULTI's +OK and EXEC's reply.
        let redirect = all.iter().skip(1).find(|r| classify(r).is_some()).cloned();
        match redirect {
            Some(redirect) => {
                self.exec_reply = Some(exec);
                Ok(redirect)
            }
            None => Ok(exec),
        }
    }
}

/// `WATCH key...`: keys in one slot, held on a connection to that slot's owner.
pub fn watch(
    worker: &Rc<Worker>,
    map: &SlotMap,
    state: &mut TxState,
    spec: &CommandSpec,
    cmd: Command,
) -> Reply {
    if state.multi.is_some() {
        return ProxyError::bad_request("ERR WATCH inside MULTI is not allowed")
            .answer()
            .into();
    }
    let slot = match target_of(spec, &cmd, map) {
        Ok(Target::Slot(slot)) => slot,
        Ok(_) => {
            return ProxyError::bad_request("ERR wrong number of arguments for 'watch' command")
                .answer()
                .into()
        }
        Err(crossslot) => return crossslot.answer().into(),
    };
    match &state.watch {
        Some(existing) if existing.slot != slot => ProxyError::cross_slot().answer().into(),
        Some(existing) => {
            // Another WATCH on the same connection, once the first has landed.
            let conn = existing.conn.clone();
            let worker = worker.clone();
            Reply::later(async move {
                let mut held = conn.lock().await;
                match held.as_mut() {
                    Some((addr, stream)) => match exchange_many(stream, addr, cmd.raw(), 1).await {
                        Ok(mut r) => r.pop().unwrap_or_else(reply::ok),
                        Err(error) => {
                            *held = None;
                            ProxyError::backend(&error).answer()
                        }
                    },
                    None => first_watch(&worker, &mut held, &cmd, slot).await,
                }
            })
        }
        None => {
            let conn = Arc::new(Mutex::new(None));
            // Taken now, in command order, so an EXEC queued behind this WATCH waits for it.
            let Ok(mut held) = conn.clone().try_lock_owned() else {
                return ProxyError::proxy_policy("ERR slotproxy: WATCH state busy")
                    .answer()
                    .into();
            };
            state.watch = Some(Watch { slot, conn });
            let worker = worker.clone();
            Reply::later(async move { first_watch(&worker, &mut held, &cmd, slot).await })
        }
    }
}

/// Opens the watch connection to the slot's owner (following redirects like any request) and
/// sends the WATCH; the connection is held when the node answered OK.
async fn first_watch(
    worker: &Worker,
    held: &mut Option<(NodeAddr, BackendStream)>,
    cmd: &Command,
    slot: Slot,
) -> Bytes {
    let mut watch = WatchExchange {
        payload: cmd.raw(),
        held: None,
    };
    // A WATCH on the importing node of a migrating slot would watch the wrong node: wait for
    // the migration instead of following ASK.
    let rules = Rules {
        can_ask: false,
        ..rules(worker, Resend::Safe)
    };
    match drive(worker, &mut watch, &Target::Slot(slot), rules, None).await {
        Ok(answer) => {
            if answer.as_ref() == b"+OK\r\n" {
                *held = watch.held.take();
            }
            answer
        }
        Err(error) => error.answer(),
    }
}

/// WATCH on a connection of its own, kept (in `held`) when the node said OK.
struct WatchExchange<'a> {
    payload: &'a [u8],
    held: Option<(NodeAddr, BackendStream)>,
}

impl Exchange for WatchExchange<'_> {
    const REPLICA_READS: bool = false;

    async fn exchange(&mut self, worker: &Worker, addr: &NodeAddr, _asking: bool) -> ReplyResult {
        if let Some((previous, conn)) = self.held.take() {
            worker.dedicated.checkin(&previous, conn);
        }
        let mut conn = worker.dedicated.checkout(addr).await?;
        let answer = exchange_many(&mut conn, addr, self.payload, 1)
            .await?
            .pop()
            .unwrap_or_else(reply::ok);
        if answer.as_ref() == b"+OK\r\n" {
            self.held = Some((addr.clone(), conn));
        } else {
            worker.dedicated.checkin(addr, conn);
        }
        Ok(answer)
    }
}

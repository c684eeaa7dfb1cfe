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
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::Mutex;

use super::reply::{self, Reply};
use super::route::Target;
use super::target_of;
use super::worker::Worker;
use crate::backend::dedicated::exchange_many;
use crate::backend::stream::BackendStream;
use crate::backend::NodeAddr;
use crate::cluster::redirect::{classify, Redirect};
use crate::cluster::Slot;
use crate::command::CommandSpec;
use crate::resp::Command;

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
const RETRY_PAUSE: Duration = Duration::from_millis(20);

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
}

#[derive(Default)]
struct Queued {
    commands: Vec<Command>,
    slot: Option<Slot>,
    /// An error while queuing: EXEC answers EXECABORT.
    failed: bool,
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
    worker: &Worker,
    state: &mut TxState,
    spec: Option<&CommandSpec>,
    cmd: Command,
    refusal: Option<Bytes>,
) -> Bytes {
    let watch_slot = state.watch.as_ref().map(|w| w.slot);
    let Some(queued) = state.multi.as_mut() else {
        return reply::error("ERR EXEC without MULTI");
    };
    let verdict = match (spec, refusal) {
        (_, Some(error)) => Err(error),
        (None, None) => Err(reply::error("ERR unknown command")),
        (Some(spec), None) if spec.is_no_multi() => {
            Err(reply::error("ERR Command not allowed inside a transaction"))
        }
        (Some(spec), None) => match target_of(worker, spec, &cmd) {
            Err(crossslot) => Err(crossslot),
            Ok(Target::Slot(slot)) => match queued.slot.or(watch_slot) {
                Some(pinned) if pinned != slot && !worker.shared.topology.map().is_standalone() => {
                    Err(reply::error(reply::CROSSSLOT))
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
            queued.commands.push(cmd);
            Bytes::from_static(b"+QUEUED\r\n")
        }
        Err(error) => {
            queued.failed = true;
            error
        }
    }
}

pub fn multi(state: &mut TxState) -> Bytes {
    if state.multi.is_some() {
        return reply::error("ERR MULTI calls can not be nested");
    }
    state.multi = Some(Queued::default());
    reply::ok()
}

pub fn discard(state: &mut TxState) -> Bytes {
    if state.multi.take().is_none() {
        return reply::error("ERR DISCARD without MULTI");
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
        return reply::error("ERR EXEC without MULTI").into();
    };
    let watch = state.watch.take();
    if queued.failed {
        return reply::error(EXECABORT).into();
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
                    all.pop().unwrap_or_else(|| reply::error(EXECABORT))
                }
                Err(error) => reply::error(&format!("ERR {error}")),
            };
        }
        // The WATCH itself failed (its error went to the client): run unwatched, as Redis
        // would after a WATCH that did not happen.
    }
    let topology = &worker.shared.topology;
    let deadline = Instant::now() + worker.retry_deadline;
    let mut redirected: Option<NodeAddr> = None;
    let mut redirects = 0;
    loop {
        let addr = match redirected.take() {
            Some(addr) => addr,
            None => {
                let map = topology.map();
                let found = match slot {
                    Some(slot) => map.primary(slot).cloned(),
                    None => map.shards().first().map(|s| s.primary.clone()),
                };
                match found {
                    Some(addr) => addr,
                    None => return reply::error("CLUSTERDOWN Hash slot not served"),
                }
            }
        };
        let mut conn = match worker.dedicated.checkout(&addr).await {
            Ok(conn) => conn,
            Err(error) => return reply::error(&format!("ERR {error}")),
        };
        let mut all = match exchange_many(&mut conn, &addr, &payload, replies).await {
            Ok(all) => all,
            // The EXEC may have run: never send it again.
            Err(error) => return reply::error(&format!("ERR {error}")),
        };
        worker.dedicated.checkin(&addr, conn);
        // Queuing answers sit between MULTI's +OK and EXEC's reply.
        let redirect = all
            .iter()
            .skip(1)
            .take(replies.saturating_sub(2))
            .find_map(|r| classify(r));
        match redirect {
            None => return all.pop().unwrap_or_else(|| reply::error(EXECABORT)),
            Some(Redirect::Moved { slot, addr: to }) if redirects < worker.max_redirects => {
                redirects += 1;
                topology.apply_moved(slot, to);
                topology.request_refresh();
                redirected = Some(NodeAddr::from(to));
            }
            Some(_) if Instant::now() + RETRY_PAUSE < deadline => {
                // ASK, TRYAGAIN, CLUSTERDOWN: the slot is moving or down; ASKING cannot be
                // queued inside MULTI, so wait for the move to finish.
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Some(_) => return all.pop().unwrap_or_else(|| reply::error(EXECABORT)),
        }
    }
}

/// `WATCH key...`: keys in one slot, held on a connection to that slot's owner.
pub fn watch(worker: &Rc<Worker>, state: &mut TxState, spec: &CommandSpec, cmd: Command) -> Reply {
    if state.multi.is_some() {
        return reply::error("ERR WATCH inside MULTI is not allowed").into();
    }
    let slot = match target_of(worker, spec, &cmd) {
        Ok(Target::Slot(slot)) => slot,
        Ok(_) => return reply::error("ERR wrong number of arguments for 'watch' command").into(),
        Err(crossslot) => return crossslot.into(),
    };
    match &state.watch {
        Some(existing) if existing.slot != slot => reply::error(reply::CROSSSLOT).into(),
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
                            reply::error(&format!("ERR {error}"))
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
                return reply::error("ERR slotproxy: WATCH state busy").into();
            };
            state.watch = Some(Watch { slot, conn });
            let worker = worker.clone();
            Reply::later(async move { first_watch(&worker, &mut held, &cmd, slot).await })
        }
    }
}

/// Opens the watch connection to the slot's owner (following MOVED) and sends the WATCH.
async fn first_watch(
    worker: &Worker,
    held: &mut Option<(NodeAddr, BackendStream)>,
    cmd: &Command,
    slot: Slot,
) -> Bytes {
    let topology = &worker.shared.topology;
    let mut addr = match topology.map().primary(slot).cloned() {
        Some(addr) => addr,
        None => return reply::error("CLUSTERDOWN Hash slot not served"),
    };
    for _ in 0..=worker.max_redirects {
        let mut conn = match worker.dedicated.checkout(&addr).await {
            Ok(conn) => conn,
            Err(error) => return reply::error(&format!("ERR {error}")),
        };
        let answer = match exchange_many(&mut conn, &addr, cmd.raw(), 1).await {
            Ok(mut r) => r.pop().unwrap_or_else(reply::ok),
            Err(error) => return reply::error(&format!("ERR {error}")),
        };
        if let Some(Redirect::Moved { slot, addr: to }) = classify(&answer) {
            topology.apply_moved(slot, to);
            topology.request_refresh();
            worker.dedicated.checkin(&addr, conn);
            addr = NodeAddr::from(to);
            continue;
        }
        if answer.as_ref() == b"+OK\r\n" {
            *held = Some((addr, conn));
        }
        return answer;
    }
    reply::error("ERR too many cluster redirects for WATCH")
}

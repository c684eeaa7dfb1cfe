//! Sends one request to the node that should run it and deals with what comes back:
//! redirects, retries and broken connections, so the client sees only a final reply.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::reply;
use crate::backend::pipe::ReplyResult;
use crate::backend::BackendError;
use crate::cluster::redirect::{classify, Redirect};
use crate::cluster::slot_map::NodeAddr;
use crate::cluster::Slot;
use crate::config::ReadFrom;
use crate::shared::Counters;
use crate::worker::Worker;

/// Where a request goes.
#[derive(Clone, Debug)]
pub enum Target {
    /// The primary that owns this slot.
    Slot(Slot),
    /// This node (broadcasts, SCAN).
    Node(NodeAddr),
    /// Any primary (keyless commands).
    Any,
}

/// Whether a request may be sent again after its connection broke once it was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resend {
    /// Reads: running them twice is harmless.
    Safe,
    /// Writes: never risk running them twice; answer an error instead.
    Never,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// Reconnect attempts for a request whose node can't be reached: enough to pick up a fresh
/// slot map after a failover, few enough that requests for a dead node fail fast.
const MAX_CONNECT_RETRIES: u32 = 2;

/// A request already sent to the node the map named, waiting for its reply: the fast path.
/// Most replies are final; only a redirect or a failure goes on to [`finish`].
pub struct InFlight {
    pub reply: oneshot::Receiver<ReplyResult>,
    pub payload: Bytes,
    pub target: Target,
    pub resend: Resend,
}

/// A request started at once: normally in flight; deferred when there is no node to send it to
/// right now (slot not covered, node backing off), for [`execute`] to deal with.
pub enum Started {
    InFlight(InFlight),
    Deferred {
        payload: Bytes,
        target: Target,
        resend: Resend,
    },
}

/// Sends `payload` to the node for `target` now, if there is one.
pub fn start(worker: &Worker, payload: Bytes, target: Target, resend: Resend) -> Started {
    let sent = resolve(worker, &target, resend == Resend::Safe)
        .and_then(|addr| worker.pool.send(&addr, payload.clone(), false).ok());
    match sent {
        Some(reply) => Started::InFlight(InFlight {
            reply,
            payload,
            target,
            resend,
        }),
        None => Started::Deferred {
            payload,
            target,
            resend,
        },
    }
}

impl Started {
    /// The final reply, with redirects and retries handled.
    pub async fn reply(self, worker: Rc<Worker>) -> Bytes {
        match self {
            Started::InFlight(mut in_flight) => {
                let outcome = (&mut in_flight.reply)
                    .await
                    .unwrap_or_else(|_| Err(BackendError::closed()));
                match final_reply(&outcome) {
                    Some(bytes) => bytes.clone(),
                    None => finish(worker, in_flight, outcome).await,
                }
            }
            Started::Deferred {
                payload,
                target,
                resend,
            } => execute(worker, payload, target, resend).await,
        }
    }
}

/// The final reply for a fast-path outcome, if it is final (no redirect, no failure).
pub fn final_reply(outcome: &ReplyResult) -> Option<&Bytes> {
    match outcome {
        Ok(bytes) if classify(bytes).is_none() => Some(bytes),
        _ => None,
    }
}

/// Continues a fast-path request whose first outcome was not final.
pub async fn finish(worker: Rc<Worker>, request: InFlight, first: ReplyResult) -> Bytes {
    run(
        worker,
        request.payload,
        request.target,
        request.resend,
        Some(first),
        Via::Pipe,
    )
    .await
}

/// Runs `payload` on the node for `target` and returns the final raw reply.
pub async fn execute(worker: Rc<Worker>, payload: Bytes, target: Target, resend: Resend) -> Bytes {
    run(worker, payload, target, resend, None, Via::Pipe).await
}

/// Which connection a request travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// The worker's shared, pipelined connection to the node.
    Pipe,
    /// A connection of the request's own (commands that park their connection).
    Dedicated,
}

/// Runs a command that parks its connection (BLPOP, XREAD BLOCK, ...) on a dedicated
/// connection, within the `max_blocking_connections` budget.
pub async fn execute_blocking(worker: Rc<Worker>, payload: Bytes, target: Target) -> Bytes {
    let Ok(_permit) = worker.shared.blocking_permits.clone().try_acquire_owned() else {
        return reply::error(&format!(
            "ERR max number of blocked clients reached (max_blocking_connections = {})",
            worker.shared.config.backend.max_blocking_connections
        ));
    };
    // Never resent after it was written: a blocking pop that ran twice would lose an element.
    run(worker, payload, target, Resend::Never, None, Via::Dedicated).await
}

async fn run(
    worker: Rc<Worker>,
    payload: Bytes,
    target: Target,
    resend: Resend,
    mut first: Option<ReplyResult>,
    via: Via,
) -> Bytes {
    let deadline = Instant::now() + worker.retry_deadline;
    let topology = &worker.shared.topology;
    let counters = &worker.shared.counters;
    let mut redirects = 0u32;
    let mut connect_retries = 0u32;
    let mut backoff = FIRST_BACKOFF;
    // Set by MOVED/ASK: the next attempt goes there instead of where the map says.
    let mut redirect_to: Option<(NodeAddr, bool)> = None;
    // Reads may go to replicas until one fails or is loading: then the primary serves.
    let mut replica_ok = resend == Resend::Safe && via == Via::Pipe;
    loop {
        let outcome = match first.take() {
            Some(outcome) => outcome,
            None => {
                let (addr, asking) = match redirect_to.take() {
                    Some(to) => to,
                    None => match resolve(&worker, &target, replica_ok) {
                        Some(addr) => (addr, false),
                        None => {
                            topology.request_refresh();
                            if !wait(&mut backoff, deadline).await {
                                return reply::error("CLUSTERDOWN Hash slot not served");
                            }
                            continue;
                        }
                    },
                };
                match via {
                    Via::Pipe => match worker.pool.send(&addr, payload.clone(), asking) {
                        Ok(rx) => rx.await.unwrap_or_else(|_| {
                            Err(BackendError::Lost {
                                addr: addr.to_string(),
                            })
                        }),
                        Err(e) => Err(e),
                    },
                    Via::Dedicated => worker.dedicated.round_trip(&addr, &payload, asking).await,
                }
            }
        };
        let error = match outcome {
            Ok(bytes) => {
                let Some(redirect) = classify(&bytes) else {
                    return bytes;
                };
                match redirect {
                    Redirect::Moved { slot, addr: to } => {
                        Counters::bump(&counters.moved);
                        metrics::counter!("slotproxy_redirects_total", "kind" => "moved")
                            .increment(1);
                        redirects += 1;
                        if redirects > worker.max_redirects {
                            return too_many_redirects(&bytes);
                        }
                        topology.apply_moved(slot, to);
                        topology.request_refresh();
                        redirect_to = Some((NodeAddr::from(to), false));
                    }
                    Redirect::Ask { addr: to, .. } => {
                        Counters::bump(&counters.ask);
                        metrics::counter!("slotproxy_redirects_total", "kind" => "ask")
                            .increment(1);
                        redirects += 1;
                        if redirects > worker.max_redirects {
                            return too_many_redirects(&bytes);
                        }
                        redirect_to = Some((NodeAddr::from(to), true));
                    }
                    Redirect::TryAgain | Redirect::ClusterDown | Redirect::Loading => {
                        let kind = match redirect {
                            Redirect::TryAgain => "tryagain",
                            Redirect::ClusterDown => "clusterdown",
                            _ => "loading",
                        };
                        Counters::bump(&counters.retries);
                        metrics::counter!("slotproxy_retries_total", "kind" => kind).increment(1);
                        if redirect == Redirect::ClusterDown {
                            topology.request_refresh();
                        }
                        if redirect == Redirect::Loading && replica_ok {
                            replica_ok = false;
                            continue; // the primary serves it now, no need to wait
                        }
                        if !wait(&mut backoff, deadline).await {
                            return bytes; // out of time: the cluster's own answer is the clearest
                        }
                    }
                }
                continue;
            }
            Err(error) => error,
        };
        Counters::bump(&counters.backend_errors);
        metrics::counter!("slotproxy_errors_total", "kind" => error.kind()).increment(1);
        topology.request_refresh();
        replica_ok = false;
        let may_resend = error.certainly_not_sent() || resend == Resend::Safe;
        if may_resend && connect_retries < MAX_CONNECT_RETRIES {
            connect_retries += 1;
            // Give the refresher a moment: after a failover the map will point elsewhere.
            if wait(&mut backoff, deadline).await {
                continue;
            }
        }
        return reply::error(&format!("ERR {error}"));
    }
}

/// The node for `target`. `replica_ok`: a read that the read-from policy may send to one of
/// the slot's replicas.
fn resolve(worker: &Worker, target: &Target, replica_ok: bool) -> Option<NodeAddr> {
    let map = worker.shared.topology.map();
    match target {
        Target::Slot(slot) if replica_ok && worker.read_from != ReadFrom::Primary => {
            let replicas = map.replicas(*slot);
            let primary = map.primary(*slot);
            let pick = match worker.read_from {
                ReadFrom::Any => fastrand::usize(..=replicas.len()),
                _ => fastrand::usize(..replicas.len().max(1)),
            };
            replicas.get(pick).or(primary).cloned()
        }
        Target::Slot(slot) => map.primary(*slot).cloned(),
        Target::Node(addr) => Some(addr.clone()),
        Target::Any => {
            let shards = map.shards();
            if shards.is_empty() {
                return None;
            }
            shards
                .get(fastrand::usize(..shards.len()))
                .map(|s| s.primary.clone())
        }
    }
}

/// Sleeps for the current backoff (then doubles it) unless that would pass the deadline.
async fn wait(backoff: &mut Duration, deadline: Instant) -> bool {
    if Instant::now() + *backoff > deadline {
        return false;
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    true
}

fn too_many_redirects(last: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(last.get(1..).unwrap_or_default());
    reply::error(&format!(
        "ERR too many cluster redirects, last: {}",
        text.trim_end()
    ))
}

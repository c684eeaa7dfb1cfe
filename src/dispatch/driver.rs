//! The request driver: sends one request to the node that should run it and carries out the
//! decision ([`decide`]) after each reply or failure (follow MOVED, ASKING + resend, retry with
//! backoff inside the deadline, resend only if provably unsent, fail), so the client sees only
//! a final reply. Every path that talks to a node goes through [`drive`]: the shared pipes,
//! dedicated connections (blocking commands), EXEC and WATCH, each as an [`Exchange`].

use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use crate::backend::reply_slot as oneshot;

use super::decision::{decide, Attempts, Next, Outcome, Recovery, RetryKind, Rules};
use super::error::ProxyError;
use super::worker::Worker;
use crate::backend::pipe::ReplyResult;
use crate::backend::{BackendError, NodeAddr};
use crate::cluster::redirect::classify;
use crate::cluster::{Slot, SlotMap};
use crate::command::block_timeout;
use crate::config::ReadFrom;
use crate::registry::{flag, ClientEntry};
use crate::resp::Command;
use crate::shared::Counters;

pub use super::decision::Resend;

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The primary that owns this slot (or one of its replicas, for a read under a replica
    /// read policy).
    Slot(Slot),
    /// This node (broadcasts, SCAN).
    Node(NodeAddr),
    /// Any primary (keyless commands).
    Any,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// One kind of connection a request can travel on.
pub(crate) trait Exchange {
    /// Whether reads may go to replicas on this kind of connection.
    const REPLICA_READS: bool;

    /// Sends the request to `addr` (preceded by `ASKING` when `asking`) and returns the reply
    /// the decision is about.
    async fn exchange(&mut self, worker: &Worker, addr: &NodeAddr, asking: bool) -> ReplyResult;

    /// Drops the connections to `addr` that may have carried the last attempt (a node that
    /// answered MOVED to its own address), so the next attempt opens a new one, which resolves
    /// the node's name again. Connections of their own go back to the idle list after a
    /// redirect: those are dropped.
    fn forget_connections(&self, worker: &Worker, addr: &NodeAddr) {
        worker.dedicated.forget(addr);
    }
}

/// The worker's shared, pipelined connection to each node.
struct ViaPipe<'a> {
    payload: &'a Bytes,
    /// The pool's mark right after the last attempt was queued (see `Pool::reconnect`).
    sent_mark: u64,
}

impl<'a> ViaPipe<'a> {
    fn new(payload: &'a Bytes) -> ViaPipe<'a> {
        ViaPipe {
            payload,
            sent_mark: 0,
        }
    }
}

impl Exchange for ViaPipe<'_> {
    const REPLICA_READS: bool = true;

    async fn exchange(&mut self, worker: &Worker, addr: &NodeAddr, asking: bool) -> ReplyResult {
        let sent = worker.pool.send(addr, self.payload.clone(), asking);
        self.sent_mark = worker.pool.write_mark();
        match sent {
            Ok(rx) => rx.await.unwrap_or_else(|_| {
                Err(BackendError::Lost {
                    addr: addr.to_string(),
                })
            }),
            Err(e) => Err(e),
        }
    }

    fn forget_connections(&self, worker: &Worker, addr: &NodeAddr) {
        // Only the pipe that carried this request: the others in flight on it get the same
        // MOVED, and must not close the new pipe the first of them opened.
        if worker.pool.reconnect(addr, self.sent_mark) {
            tracing::info!(
                node = %addr,
                "node answered MOVED to its own address: reconnecting, its name leads elsewhere now"
            );
        }
        worker.dedicated.forget(addr);
    }
}

/// A connection of the request's own (commands that park their connection).
struct ViaDedicated<'a>(&'a [u8]);

impl Exchange for ViaDedicated<'_> {
    const REPLICA_READS: bool = false;

    async fn exchange(&mut self, worker: &Worker, addr: &NodeAddr, asking: bool) -> ReplyResult {
        worker.dedicated.round_trip(addr, self.0, asking).await
    }
}

/// A connection of its own whose node is told to `noted` as each attempt picks it (a script's:
/// killed there if its client goes away).
struct ViaNoted<'a> {
    payload: &'a [u8],
    noted: &'a dyn Fn(&NodeAddr),
}

impl Exchange for ViaNoted<'_> {
    const REPLICA_READS: bool = false;

    async fn exchange(&mut self, worker: &Worker, addr: &NodeAddr, asking: bool) -> ReplyResult {
        (self.noted)(addr);
        worker
            .dedicated
            .round_trip(addr, self.payload, asking)
            .await
    }
}

/// A blocking command's connection of its own, whose id on its node is noted in the client's
/// entry while the command waits (for `CLIENT UNBLOCK`). Sent again (its node failed over, its
/// slot moved), the command carries only the time it has left.
struct ViaBlocked<'a> {
    cmd: &'a Command,
    sent_at: Option<Instant>,
    entry: &'a ClientEntry,
}

impl Exchange for ViaBlocked<'_> {
    const REPLICA_READS: bool = false;

    async fn exchange(&mut self, worker: &Worker, addr: &NodeAddr, asking: bool) -> ReplyResult {
        let entry = self.entry;
        let noted = |id| entry.set_blocked_on(Some((addr.clone(), id)));
        let again;
        let payload = match self.sent_at {
            None => {
                self.sent_at = Some(Instant::now());
                self.cmd.raw()
            }
            Some(first) => {
                again = block_timeout::with_time_left(self.cmd, first.elapsed());
                again.raw()
            }
        };
        worker
            .dedicated
            .round_trip_noting_id(addr, payload, asking, &noted)
            .await
    }
}

/// The rules of a request on the shared pipes or a dedicated connection.
pub(crate) fn rules(worker: &Worker, resend: Resend) -> Rules {
    Rules {
        max_redirects: worker.max_redirects,
        resend,
        follow: true,
        can_ask: true,
        reissue_unblocked: false,
        recovery_timeout: worker.recovery_timeout,
        recovery_queue_size: worker.shared.config.backend.recovery_queue_size,
    }
}

/// An attempt already made (the fast path): its outcome, the node it went to, and whether
/// that is a replica.
pub(crate) struct FirstAttempt {
    outcome: ReplyResult,
    addr: NodeAddr,
    on_replica: bool,
}

/// Drives one request to its final reply or error. `first`: an attempt already made.
pub(crate) async fn drive<E: Exchange>(
    worker: &Worker,
    exchange: &mut E,
    target: &Target,
    rules: Rules,
    first: Option<FirstAttempt>,
) -> Result<Bytes, ProxyError> {
    let mut driver = Driver::new(worker, rules, E::REPLICA_READS);
    let mut pending = first.map(|first| {
        driver.attempts.on_replica = first.on_replica;
        (first.outcome, first.addr)
    });
    loop {
        let (outcome, addr) = match pending.take() {
            Some(made) => made,
            None => {
                let (addr, asking) = driver.next_node(target).await?;
                (exchange.exchange(worker, &addr, asking).await, addr)
            }
        };
        let next = driver.decide(&outcome, &addr);
        if matches!(
            next,
            Next::Retry {
                kind: RetryKind::MovedToItself,
                ..
            }
        ) {
            tracing::trace!(node = %addr, "MOVED to its own address: reconnecting");
            exchange.forget_connections(worker, &addr);
        }
        if let Some(done) = driver.follow(next, &outcome, target).await {
            return done;
        }
    }
}

/// The state of one request between attempts.
struct Driver<'w> {
    worker: &'w Worker,
    rules: Rules,
    attempts: Attempts,
    deadline: Instant,
    backoff: Duration,
    /// Set by MOVED/ASK: the next attempt goes there instead of where the map says.
    redirect_to: Option<(NodeAddr, bool)>,
    /// Reads may go to replicas until one fails or is loading: then the primary serves.
    replica_ok: bool,
    /// A place in the recovery queue, held from the first time the node could not be reached
    /// until the request ends, and that time.
    recovering: Option<(Option<OwnedSemaphorePermit>, Instant)>,
}

impl<'w> Driver<'w> {
    fn new(worker: &'w Worker, rules: Rules, replica_reads: bool) -> Driver<'w> {
        Driver {
            worker,
            rules,
            attempts: Attempts::default(),
            deadline: Instant::now() + worker.retry_deadline,
            backoff: FIRST_BACKOFF,
            redirect_to: None,
            replica_ok: replica_reads && rules.resend == Resend::Safe,
            recovering: None,
        }
    }

    /// The node of the next attempt (and whether to send `ASKING` first), waiting while no
    /// node serves the target until the deadline.
    async fn next_node(&mut self, target: &Target) -> Result<(NodeAddr, bool), ProxyError> {
        if let Some(to) = self.redirect_to.take() {
            self.attempts.on_replica = false;
            return Ok(to);
        }
        let topology = &self.worker.shared.topology;
        loop {
            if let Some((addr, on_replica)) =
                resolve(self.worker, &topology.map(), target, self.replica_ok)
            {
                self.attempts.on_replica = on_replica;
                return Ok((addr, false));
            }
            topology.request_refresh();
            if !wait(&mut self.backoff, self.deadline).await {
                return Err(ProxyError::slot_not_served());
            }
        }
    }

    fn decide<'o>(&mut self, outcome: &'o ReplyResult, from: &NodeAddr) -> Next<'o> {
        match outcome {
            Ok(bytes) => decide(Outcome::Reply(bytes), from, &self.attempts, &self.rules),
            Err(error) => {
                // Whatever follows, the map may be stale and replicas are out for this request.
                record_failure(self.worker, error);
                self.worker.shared.topology.request_refresh();
                self.replica_ok = false;
                if error.node_unreachable() {
                    self.attempts.recovery = self.recovery();
                }
                decide(Outcome::Failed(error), from, &self.attempts, &self.rules)
            }
        }
    }

    /// The request's place in the recovery queue, taken when its node is first unreachable.
    fn recovery(&mut self) -> Recovery {
        let (permit, since) = self.recovering.get_or_insert_with(|| {
            let permit = self
                .worker
                .shared
                .recovery_permits
                .clone()
                .try_acquire_owned()
                .ok();
            (permit, Instant::now())
        });
        match permit {
            Some(_) => Recovery::Waiting(since.elapsed()),
            None => Recovery::QueueFull,
        }
    }

    /// Carries out `next`; the request's result when it is over.
    async fn follow(
        &mut self,
        next: Next<'_>,
        outcome: &ReplyResult,
        target: &Target,
    ) -> Option<Result<Bytes, ProxyError>> {
        record(self.worker, &next);
        let topology = &self.worker.shared.topology;
        match next {
            Next::Final => return Some(final_result(outcome)),
            Next::Moved { slot, to } => {
                self.attempts.redirects += 1;
                topology.apply_moved(slot, to);
                topology.request_refresh();
                self.redirect_to = Some((NodeAddr::from(to), false));
            }
            Next::Ask { to } => {
                self.attempts.redirects += 1;
                self.redirect_to = Some((NodeAddr::from(to), true));
            }
            // The primary serves it now, no need to wait.
            Next::ToPrimary => self.replica_ok = false,
            Next::Retry { kind, refresh } => {
                if refresh {
                    topology.request_refresh();
                }
                if kind == RetryKind::Reconnect {
                    self.attempts.reconnects += 1;
                }
                // A shard the cluster reports down with no replica to take over: waiting until
                // the deadline would not help, so its slots fail at once, in Redis's words.
                if matches!(kind, RetryKind::Reconnect | RetryKind::ClusterDown) {
                    if let Target::Slot(slot) = target {
                        if topology.map().slot_down(*slot) {
                            return Some(Err(ProxyError::slot_not_served()));
                        }
                    }
                }
                if !wait(&mut self.backoff, self.deadline).await {
                    // Out of time: the cluster's own answer (or the failure) is the clearest.
                    return Some(final_result(outcome));
                }
            }
            Next::Fail(error) => return Some(Err(error)),
        }
        None
    }
}

/// An outcome as the request's result: the reply, or the failure as an error.
fn final_result(outcome: &ReplyResult) -> Result<Bytes, ProxyError> {
    match outcome {
        Ok(bytes) => Ok(bytes.clone()),
        Err(error) => Err(ProxyError::backend(error)),
    }
}

/// Counts what the driver does, in the same way for every kind of request.
pub(crate) fn record(worker: &Worker, next: &Next) {
    let counters = &worker.shared.counters;
    match next {
        Next::Moved { .. } => {
            Counters::bump(&counters.moved);
            metrics::counter!("slotproxy_redirects_total", "kind" => "moved").increment(1);
        }
        Next::Ask { .. } => {
            Counters::bump(&counters.ask);
            metrics::counter!("slotproxy_redirects_total", "kind" => "ask").increment(1);
        }
        Next::ToPrimary => {
            Counters::bump(&counters.retries);
            metrics::counter!("slotproxy_retries_total", "kind" => RetryKind::Loading.label())
                .increment(1);
        }
        Next::Retry { kind, .. } if *kind != RetryKind::Reconnect => {
            Counters::bump(&counters.retries);
            metrics::counter!("slotproxy_retries_total", "kind" => kind.label()).increment(1);
        }
        Next::Retry { .. } | Next::Final | Next::Fail(_) => {}
    }
}

fn record_failure(worker: &Worker, error: &BackendError) {
    Counters::bump(&worker.shared.counters.backend_errors);
    metrics::counter!("slotproxy_errors_total", "kind" => error.kind()).increment(1);
}

/// A request already sent to the node the map named, waiting for its reply: the fast path.
/// The session's reply queue polls it without a task or future of its own; most replies are
/// final, only a redirect or a failure goes on to the driver.
pub struct InFlight {
    reply: oneshot::Receiver<ReplyResult>,
    payload: Bytes,
    target: Target,
    resend: Resend,
    /// The node it went to, and the pool's mark right after it was queued: a MOVED to that
    /// same address drops that pipe (see `decision::moved_to_itself`).
    addr: NodeAddr,
    sent_mark: u64,
    on_replica: bool,
    /// The near cache's part when the reply arrives (fill it, or invalidate a write's keys).
    near_cache: NearCacheHook,
}

/// The near cache's part of an [`InFlight`], if it has one. Nearly every request has none, and
/// dropping an `Option<Box<OnReply>>` is a call into its drop glue even then (13 instructions
/// a GET, callgrind); this checks in place and calls only for a hook that is still set.
#[derive(Default)]
struct NearCacheHook(ManuallyDrop<Option<Box<super::near_cache::OnReply>>>);

impl Drop for NearCacheHook {
    #[inline]
    fn drop(&mut self) {
        // Taken out, the `ManuallyDrop` holds `None`: nothing is left undropped.
        if let Some(hook) = self.0.take() {
            drop(hook);
        }
    }
}

/// The node's side of an [`InFlight`] made by `InFlight::for_tests`: dropped unanswered, it
/// is a connection lost with the request written.
#[cfg(test)]
pub(crate) struct TestNode(oneshot::Sender<ReplyResult>);

#[cfg(test)]
impl TestNode {
    pub(crate) fn reply(self, bytes: &'static [u8]) {
        let _ = self.0.send(Ok(Bytes::from_static(bytes)));
    }
}

/// What an in-flight request came to.
pub enum Settled {
    /// The reply for the client.
    Final(Bytes),
    /// Not final (a redirect, a failure): the driver takes it from here.
    Retry(Pin<Box<dyn Future<Output = Bytes>>>),
}

impl InFlight {
    /// A request in flight and the end its node's reply comes from, for unit tests of the
    /// reply queue.
    #[cfg(test)]
    pub(crate) fn for_tests(target: Target, resend: Resend) -> (InFlight, TestNode) {
        let (tx, reply) = oneshot::channel();
        let in_flight = InFlight {
            reply,
            payload: Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
            target,
            resend,
            addr: NodeAddr::from("127.0.0.1:7000"),
            sent_mark: 0,
            on_replica: false,
            near_cache: NearCacheHook::default(),
        };
        (in_flight, TestNode(tx))
    }

    /// Waits for the reply. Cancel safety: safe; the outcome is settled as soon as it is taken.
    pub fn poll_settle(&mut self, cx: &mut Context<'_>, worker: &Rc<Worker>) -> Poll<Settled> {
        Pin::new(&mut self.reply).poll(cx).map(|outcome| {
            let outcome = outcome.unwrap_or_else(|_| Err(BackendError::closed()));
            self.settle(outcome, worker)
        })
    }

    /// The outcome if the reply has arrived, without waiting.
    pub fn try_settle(&mut self, worker: &Rc<Worker>) -> Option<Settled> {
        use oneshot::error::TryRecvError;
        let outcome = match self.reply.try_recv() {
            Ok(outcome) => outcome,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Closed) => Err(BackendError::closed()),
        };
        Some(self.settle(outcome, worker))
    }

    /// The node it was sent to.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Whether it was sent to a replica.
    pub fn on_replica(&self) -> bool {
        self.on_replica
    }

    /// Has the near cache see the reply when it settles.
    pub fn on_reply(&mut self, hook: Box<super::near_cache::OnReply>) {
        *self.near_cache.0 = Some(hook);
    }

    fn settle(&mut self, outcome: ReplyResult, worker: &Rc<Worker>) -> Settled {
        let settled = self.settle_outcome(outcome, worker);
        match self.near_cache.0.take() {
            None => settled,
            Some(hook) => (*hook).settled(settled),
        }
    }

    fn settle_outcome(&mut self, outcome: ReplyResult, worker: &Rc<Worker>) -> Settled {
        match outcome {
            Ok(bytes) if classify(&bytes).is_none() => Settled::Final(bytes),
            outcome => {
                let worker = worker.clone();
                let payload = std::mem::take(&mut self.payload);
                let target = self.target.clone();
                let rules = rules(&worker, self.resend);
                let first = Some(FirstAttempt {
                    outcome,
                    addr: self.addr.clone(),
                    on_replica: self.on_replica,
                });
                let sent_mark = self.sent_mark;
                Settled::Retry(Box::pin(async move {
                    let mut via = ViaPipe {
                        payload: &payload,
                        sent_mark,
                    };
                    drive(&worker, &mut via, &target, rules, first)
                        .await
                        .unwrap_or_else(|e| e.answer())
                }))
            }
        }
    }
}

/// A request started at once: normally in flight; deferred when there is no node to send it to
/// right now (slot not covered, node backing off), for the driver to deal with.
pub enum Started {
    InFlight(InFlight),
    Deferred {
        payload: Bytes,
        target: Target,
        resend: Resend,
    },
}

/// Sends `payload` to the node `map` names for `target` now, if there is one.
pub fn start(
    worker: &Worker,
    map: &SlotMap,
    payload: Bytes,
    target: Target,
    resend: Resend,
) -> Started {
    let sent =
        resolve(worker, map, &target, resend == Resend::Safe).and_then(|(addr, on_replica)| {
            let rx = worker.pool.send(&addr, payload.clone(), false).ok()?;
            Some((rx, worker.pool.write_mark(), addr, on_replica))
        });
    match sent {
        Some((reply, sent_mark, addr, on_replica)) => Started::InFlight(InFlight {
            reply,
            payload,
            target,
            resend,
            addr,
            sent_mark,
            on_replica,
            near_cache: NearCacheHook::default(),
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
                let settled = std::future::poll_fn(|cx| in_flight.poll_settle(cx, &worker)).await;
                match settled {
                    Settled::Final(bytes) => bytes,
                    Settled::Retry(future) => future.await,
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

/// Runs `payload` on the node for `target` over the shared pipes and returns the final reply.
pub async fn execute(worker: Rc<Worker>, payload: Bytes, target: Target, resend: Resend) -> Bytes {
    let rules = rules(&worker, resend);
    drive(&worker, &mut ViaPipe::new(&payload), &target, rules, None)
        .await
        .unwrap_or_else(|e| e.answer())
}

/// As [`execute`], with a failed round trip (unreachable, lost, timed out) kept apart from
/// the node's reply, for callers that must know whether the node answered (CONFIG SET's
/// roll-back).
pub async fn try_execute(
    worker: &Worker,
    payload: &Bytes,
    target: &Target,
    resend: Resend,
) -> Result<Bytes, ProxyError> {
    let rules = rules(worker, resend);
    drive(worker, &mut ViaPipe::new(payload), target, rules, None).await
}

/// Runs a command that parks its connection (BLPOP, XREAD BLOCK, ...) on a dedicated
/// connection, within the `max_blocking_connections` budget. The client's `entry` shows it
/// blocked meanwhile, with the node connection `CLIENT UNBLOCK` would unblock.
pub async fn execute_blocking(
    worker: Rc<Worker>,
    cmd: Command,
    target: Target,
    entry: Arc<ClientEntry>,
) -> Bytes {
    let Ok(_permit) = worker.shared.blocking_permits.clone().try_acquire_owned() else {
        return ProxyError::limit(format!(
            "ERR max number of blocked clients reached (max_blocking_connections = {})",
            worker.shared.config.backend.max_blocking_connections
        ))
        .answer();
    };
    // Never resent after it was written: a blocking pop that ran twice would lose an element.
    // Its node's answer that it stopped being a primary before serving it is another matter.
    let blocked = Blocked::on(entry);
    let rules = Rules {
        reissue_unblocked: true,
        ..rules(&worker, Resend::Never)
    };
    let mut via = ViaBlocked {
        cmd: &cmd,
        sent_at: None,
        entry: &blocked.0,
    };
    drive(&worker, &mut via, &target, rules, None)
        .await
        .unwrap_or_else(|e| e.answer())
}

/// Shows a client blocked for as long as it lives (however its command ends).
struct Blocked(Arc<ClientEntry>);

impl Blocked {
    fn on(entry: Arc<ClientEntry>) -> Blocked {
        entry.set_flag(flag::BLOCKED, true);
        Blocked(entry)
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        self.0.set_blocked_on(None);
    }
}

/// Runs `payload` on the node for `target` on a connection of its own (a dedicated one, not
/// the shared pipe) and returns the final reply; sent again only if certainly not sent.
pub async fn execute_dedicated(worker: Rc<Worker>, payload: Bytes, target: Target) -> Bytes {
    let rules = rules(&worker, Resend::Never);
    drive(&worker, &mut ViaDedicated(&payload), &target, rules, None)
        .await
        .unwrap_or_else(|e| e.answer())
}

/// [`execute_dedicated`], telling `noted` the node of each attempt before it is sent.
pub async fn execute_dedicated_noting(
    worker: Rc<Worker>,
    payload: Bytes,
    target: Target,
    noted: &dyn Fn(&NodeAddr),
) -> Bytes {
    let rules = rules(&worker, Resend::Never);
    let mut via = ViaNoted {
        payload: &payload,
        noted,
    };
    drive(&worker, &mut via, &target, rules, None)
        .await
        .unwrap_or_else(|e| e.answer())
}

/// The node for `target` in `map`, and whether it is a replica. `replica_ok`: a read that the
/// read-from policy may send to one of the slot's replicas.
fn resolve(
    worker: &Worker,
    map: &SlotMap,
    target: &Target,
    replica_ok: bool,
) -> Option<(NodeAddr, bool)> {
    match target {
        Target::Slot(slot) if replica_ok && worker.read_from != ReadFrom::Primary => {
            let candidates = map.read_candidates(*slot, worker.read_from)?;
            let (node, on_replica) = candidates.get(fastrand::usize(..candidates.len().max(1)))?;
            if let Some(locality) = candidates.locality {
                worker.count_zone_read(locality);
            }
            Some((node.clone(), on_replica))
        }
        Target::Slot(slot) => map.primary(*slot).map(|p| (p.clone(), false)),
        Target::Node(addr) => Some((addr.clone(), false)),
        Target::Any => {
            let shards = map.shards();
            if shards.is_empty() {
                return None;
            }
            shards
                .get(fastrand::usize(..shards.len()))
                .map(|s| (s.primary.clone(), false))
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

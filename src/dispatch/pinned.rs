//! A connection of one client's own to one node, held across several of its commands: the
//! connection a WATCH lives on, and a transaction that queues on the node as the client
//! queues (so the node's own checks, such as OOM, answer each command while it is queued, as
//! one Redis would).
//!
//! The connection belongs to a task that runs the client's jobs one after the other, in the
//! order the client sent the commands: a job is handed over at dispatch time (in command
//! order) and its reply comes back later through a oneshot. Jobs already waiting when the
//! task is free go out in one write (a pipelined transaction costs one round trip).
//! Dropping the [`Pinned`] ends the task; a connection not given back clean is closed, which
//! makes the node forget its WATCH and MULTI.

use std::cell::Cell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::decision::{Resend, Rules};
use super::driver::{drive, rules, Exchange, Target};
use super::error::ProxyError;
use super::worker::Worker;
use crate::backend::dedicated::exchange_many;
use crate::backend::pipe::ReplyResult;
use crate::backend::stream::BackendStream;
use crate::backend::{BackendError, NodeAddr};
use crate::cluster::redirect::{classify, Redirect};
use crate::cluster::Slot;

/// The replies of one job, in order, or why there are none.
pub type JobResult = Result<Vec<Bytes>, ProxyError>;

/// The client's end of a pinned connection.
pub struct Pinned {
    jobs: mpsc::UnboundedSender<Job>,
    /// The node the slot map named when the connection was asked for (the node it is on,
    /// unless a redirect was followed while opening it).
    node: NodeAddr,
    /// Set by the task when a node answered a queued command with a redirect: the slot moved
    /// while the client queued, and the node will abort the transaction.
    redirected: Rc<Cell<bool>>,
}

struct Job {
    kind: JobKind,
    payload: Bytes,
    replies: usize,
    done: oneshot::Sender<JobResult>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum JobKind {
    /// Opens the connection to the owner of the slot (following redirects) with `payload`.
    /// `cleanup` undoes the payload's state on a node that turned out to be the wrong one.
    Open { slot: Slot, cleanup: &'static [u8] },
    /// On the held connection.
    Send,
    /// On the held connection, which then goes back to the worker's idle list (the payload
    /// leaves it clean: EXEC, DISCARD, UNWATCH); the task ends.
    Finish,
}

impl Pinned {
    /// A pinned connection (not yet open) expected on `node`.
    pub fn new(worker: &Rc<Worker>, node: NodeAddr) -> Pinned {
        let (jobs, rx) = mpsc::unbounded_channel();
        let redirected = Rc::new(Cell::new(false));
        tokio::task::spawn_local(run(worker.clone(), rx, redirected.clone()));
        Pinned {
            jobs,
            node,
            redirected,
        }
    }

    pub fn node(&self) -> &NodeAddr {
        &self.node
    }

    /// Set once a queued command was answered with a redirect (read it once the reply of a
    /// later job is in: jobs are answered in order).
    pub fn redirected_flag(&self) -> Rc<Cell<bool>> {
        self.redirected.clone()
    }

    /// Opens the connection to `slot`'s owner with `payload` (`replies` replies).
    pub fn open(
        &self,
        slot: Slot,
        cleanup: &'static [u8],
        payload: Bytes,
        replies: usize,
    ) -> Answer {
        self.submit(JobKind::Open { slot, cleanup }, payload, replies)
    }

    /// Sends `payload` on the connection.
    pub fn send(&self, payload: Bytes, replies: usize) -> Answer {
        self.submit(JobKind::Send, payload, replies)
    }

    /// Sends `payload`, which leaves the connection clean, and gives the connection back.
    pub fn finish(self, payload: Bytes, replies: usize) -> Answer {
        self.submit(JobKind::Finish, payload, replies)
    }

    fn submit(&self, kind: JobKind, payload: Bytes, replies: usize) -> Answer {
        let (done, rx) = oneshot::channel();
        let job = Job {
            kind,
            payload,
            replies,
            done,
        };
        Answer(self.jobs.send(job).is_ok().then_some(rx))
    }
}

/// The replies of a submitted job, to come.
pub struct Answer(Option<oneshot::Receiver<JobResult>>);

impl Answer {
    pub async fn get(self) -> JobResult {
        match self.0 {
            Some(rx) => rx.await.unwrap_or_else(|_| Err(lost())),
            None => Err(lost()),
        }
    }
}

fn lost() -> ProxyError {
    ProxyError::node(
        "ERR slotproxy: the connection that held this client's WATCH or MULTI was lost",
    )
}

/// The task that owns the connection.
async fn run(
    worker: Rc<Worker>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    redirected: Rc<Cell<bool>>,
) {
    let mut conn: Option<(NodeAddr, BackendStream)> = None;
    while let Some(job) = jobs.recv().await {
        if let JobKind::Open { slot, cleanup } = job.kind {
            if conn.is_none() {
                let result = open(&worker, slot, cleanup, &job.payload, job.replies).await;
                let _ = job.done.send(result.map(|(held, replies)| {
                    conn = held;
                    replies
                }));
                continue;
            }
        }
        // Every job already waiting goes out in the same write.
        let mut batch = vec![job];
        while !batch.iter().any(|j| j.kind == JobKind::Finish) {
            match jobs.try_recv() {
                Ok(next) if matches!(next.kind, JobKind::Open { .. }) && conn.is_none() => {
                    // Can't happen (an open job comes first), but never batch one.
                    let _ = next.done.send(Err(lost()));
                }
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let finish = batch.iter().any(|j| j.kind == JobKind::Finish);
        let Some((addr, stream)) = conn.as_mut() else {
            for job in batch {
                let _ = job.done.send(Err(lost()));
            }
            continue;
        };
        let mut payload = BytesMut::new();
        for job in &batch {
            payload.extend_from_slice(&job.payload);
        }
        let total = batch.iter().map(|j| j.replies).sum();
        match exchange_many(stream, addr, &payload, total).await {
            Ok(replies) => {
                let mut replies = replies.into_iter();
                for job in batch {
                    let mine: Vec<Bytes> = replies.by_ref().take(job.replies).collect();
                    if job.kind == JobKind::Send && mine.iter().any(is_redirect) {
                        redirected.set(true);
                    }
                    let _ = job.done.send(Ok(mine));
                }
                if finish {
                    if let Some((addr, stream)) = conn.take() {
                        worker.dedicated.checkin(&addr, stream);
                    }
                    return;
                }
            }
            Err(error) => {
                conn = None;
                let error = ProxyError::backend(&error);
                for job in batch {
                    let _ = job.done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// A reply that says the command belongs to another node.
pub fn is_redirect(reply: &Bytes) -> bool {
    matches!(
        classify(reply),
        Some(Redirect::Moved { .. } | Redirect::Ask { .. })
    )
}

/// Opens a connection to the owner of `slot` with `payload`, following redirects like any
/// request. Nothing of the payload runs before EXEC, so it may be sent again.
async fn open(
    worker: &Worker,
    slot: Slot,
    cleanup: &'static [u8],
    payload: &Bytes,
    replies: usize,
) -> Result<(Option<(NodeAddr, BackendStream)>, Vec<Bytes>), ProxyError> {
    let mut exchange = OpenExchange {
        payload,
        replies,
        cleanup,
        held: None,
        all: Vec::new(),
    };
    // ASKING would be queued inside MULTI instead of applying to the next command: wait for
    // a migrating slot to settle instead.
    let rules = Rules {
        can_ask: false,
        ..rules(worker, Resend::Safe)
    };
    let answer = drive(worker, &mut exchange, &Target::Slot(slot), rules, None).await?;
    if exchange.held.is_none() {
        // Out of time while the slot moved: the decision's answer is all there is.
        return Ok((None, vec![answer]));
    }
    Ok((exchange.held, exchange.all))
}

/// The opening payload on a connection of its own; the connection is kept unless a reply says
/// the slot is elsewhere (then `cleanup` undoes the payload and the connection goes back).
struct OpenExchange<'a> {
    payload: &'a Bytes,
    replies: usize,
    cleanup: &'static [u8],
    held: Option<(NodeAddr, BackendStream)>,
    all: Vec<Bytes>,
}

impl Exchange for OpenExchange<'_> {
    const REPLICA_READS: bool = false;

    async fn exchange(&mut self, worker: &Worker, addr: &NodeAddr, _asking: bool) -> ReplyResult {
        let mut conn = worker.dedicated.checkout(addr).await?;
        let all = exchange_many(&mut conn, addr, self.payload, self.replies).await?;
        // The reply the decision is about: the first that sends the request elsewhere or
        // asks to retry, else the last (the client's own command).
        if let Some(elsewhere) = all.iter().find(|r| classify(r).is_some()).cloned() {
            let _ = exchange_many(&mut conn, addr, self.cleanup, 1).await?;
            worker.dedicated.checkin(addr, conn);
            return Ok(elsewhere);
        }
        let last = all.last().cloned().ok_or_else(|| BackendError::Lost {
            addr: addr.to_string(),
        })?;
        self.all = all;
        self.held = Some((addr.clone(), conn));
        Ok(last)
    }
}

//! One client's ordered reply queue.
//!
//! Replies leave strictly in the order the commands arrived. Most commands are a single
//! request already sent to a backend ([`Reply::InFlight`]): the queue reads the backend's reply
//! straight from its channel, and only the head's channel wakes the session, so a pipeline of
//! N commands costs no per-command task or wake-up. Commands that need more than one round
//! trip (splits, broadcasts, redirect and retry handling) run as futures the queue drives
//! concurrently; their results wait in their slot until it reaches the head.

use quanta::Instant;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;

use crate::dispatch::{CommandMetrics, Dispatched, InFlight, Reply, Settled, Worker};

enum State {
    Ready(Bytes),
    InFlight(InFlight),
    /// A future in `driven` will fill this slot.
    Driven,
}

struct Entry {
    state: State,
    latency: Option<(Instant, Rc<CommandMetrics>)>,
    parked: bool,
}

/// A driven future tagged with its slot's sequence number.
struct Tagged {
    seq: u64,
    future: Pin<Box<dyn Future<Output = Bytes>>>,
}

impl Future for Tagged {
    type Output = (u64, Bytes);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<(u64, Bytes)> {
        let seq = self.seq;
        self.future.as_mut().poll(cx).map(|bytes| (seq, bytes))
    }
}

pub struct ReplyQueue {
    worker: Rc<Worker>,
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    head_seq: u64,
    driven: FuturesUnordered<Tagged>,
    /// Entries that hold a backend connection until data arrives (blocking commands).
    parked: usize,
}

impl ReplyQueue {
    pub fn new(worker: Rc<Worker>) -> ReplyQueue {
        ReplyQueue {
            worker,
            entries: VecDeque::new(),
            head_seq: 0,
            driven: FuturesUnordered::new(),
            parked: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a queued command is parked on a backend connection waiting for data: such a
    /// command may never finish, so a client that hangs up is not waited for.
    pub fn has_parked(&self) -> bool {
        self.parked > 0
    }

    pub fn push(&mut self, dispatched: Dispatched) {
        let seq = self.head_seq + self.entries.len() as u64;
        let parked = matches!(dispatched.reply, Reply::Parked(_));
        let state = match dispatched.reply {
            Reply::Ready(bytes) => State::Ready(bytes),
            Reply::InFlight(in_flight) => State::InFlight(in_flight),
            Reply::Later(future) | Reply::Parked(future) => {
                self.driven.push(Tagged { seq, future });
                State::Driven
            }
        };
        self.parked += usize::from(parked);
        self.entries.push_back(Entry {
            state,
            latency: dispatched.latency,
            parked,
        });
    }

    /// Moves every reply that is complete at the head of the queue into `out`, without waiting.
    pub fn drain_ready(&mut self, out: &mut BytesMut) {
        while let Some(Some((seq, bytes))) = self.driven.next().now_or_never() {
            self.fill(seq, bytes);
        }
        // One clock read for every reply of this batch (they go out in the same write).
        let mut now = None;
        while let Some(front) = self.entries.front_mut() {
            match &mut front.state {
                State::Ready(_) => self.pop_into(out, &mut now),
                State::InFlight(in_flight) => match in_flight.try_settle(&self.worker) {
                    Some(settled) => self.settle(0, settled),
                    None => break,
                },
                State::Driven => break,
            }
        }
    }

    /// Waits until the head can make progress: its backend reply arrived or a driven future
    /// completed. Cancel safety: safe; a reply taken from a channel is stored before returning.
    pub async fn progress(&mut self) {
        std::future::poll_fn(|cx| {
            if let Some(Entry {
                state: State::InFlight(in_flight),
                ..
            }) = self.entries.front_mut()
            {
                if let Poll::Ready(settled) = in_flight.poll_settle(cx, &self.worker) {
                    self.settle(0, settled);
                    return Poll::Ready(());
                }
            }
            let mut progressed = false;
            while let Poll::Ready(Some((seq, bytes))) = self.driven.poll_next_unpin(cx) {
                self.fill(seq, bytes);
                progressed = true;
            }
            if progressed {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    fn pop_into(&mut self, out: &mut BytesMut, now: &mut Option<Instant>) {
        if let Some(entry) = self.entries.pop_front() {
            self.head_seq += 1;
            self.parked -= usize::from(entry.parked);
            if let Some((started, metrics)) = entry.latency {
                let now = *now.get_or_insert_with(Instant::now);
                metrics
                    .latency
                    .record(now.saturating_duration_since(started));
            }
            if let State::Ready(bytes) = entry.state {
                out.extend_from_slice(&bytes);
            }
        }
    }

    fn fill(&mut self, seq: u64, bytes: Bytes) {
        let index = seq.wrapping_sub(self.head_seq) as usize;
        if let Some(entry) = self.entries.get_mut(index) {
            entry.state = State::Ready(bytes);
        }
    }

    /// Records what the in-flight request at `index` came to: a final reply fills the slot;
    /// a redirect or failure is driven on as a future. After a hand-off the rest of the queue
    /// is checked too, so a burst of redirects (a slot just moved) is retried all at once
    /// rather than one per round trip as each reaches the head.
    fn settle(&mut self, index: usize, settled: Settled) {
        let handed_off = self.settle_one(index, settled);
        if handed_off {
            for i in (index + 1)..self.entries.len() {
                let settled = match self.entries.get_mut(i).map(|e| &mut e.state) {
                    Some(State::InFlight(in_flight)) => match in_flight.try_settle(&self.worker) {
                        Some(settled) => settled,
                        None => continue,
                    },
                    _ => continue,
                };
                self.settle_one(i, settled);
            }
        }
    }

    /// Returns whether the request was handed to the driver.
    fn settle_one(&mut self, index: usize, settled: Settled) -> bool {
        let Some(entry) = self.entries.get_mut(index) else {
            return false;
        };
        match settled {
            Settled::Final(bytes) => {
                entry.state = State::Ready(bytes);
                false
            }
            Settled::Retry(future) => {
                entry.state = State::Driven;
                let seq = self.head_seq + index as u64;
                self.driven.push(Tagged { seq, future });
                true
            }
        }
    }
}

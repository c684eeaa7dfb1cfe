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

use super::flush::Head;
use super::spares::{self, Spares};
use crate::dispatch::{CommandMetrics, Dispatched, InFlight, Reply, Settled, Worker};

/// A ready reply at least this large, reaching an empty output buffer, is moved into it rather
/// than copied (small replies are copied: batching them into one write is what matters there).
const TAKE_WHOLE: usize = 1024 * 1024;

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
    /// `CLIENT REPLY OFF|SKIP`: completes in its place but writes nothing.
    silent: bool,
    /// The last command of what one read brought (see [`ReplyQueue::end_batch`]).
    ends_batch: bool,
}

/// Emptied queue storage kept for the next client whose queue grows (see [`spares`]): a
/// worker keeps at most this many, each of at most [`SPARE_QUEUE_ENTRIES`] entries (128 bytes
/// each: at most 256 KiB per worker).
const SPARE_QUEUES: usize = 32;
const SPARE_QUEUE_ENTRIES: usize = 64;

thread_local! {
    static QUEUE_SPARES: Spares<VecDeque<Entry>> = const { Spares::new(SPARE_QUEUES) };
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

/// Appends `reply` to the output buffer. A large reply (a merged KEYS) that reaches an empty
/// buffer and is owned by nothing else becomes the buffer itself, instead of a second copy.
fn append_reply(out: &mut BytesMut, reply: Bytes) {
    if out.is_empty() && reply.len() >= TAKE_WHOLE {
        *out = reply
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(shared.as_ref()));
    } else {
        out.extend_from_slice(&reply);
    }
}

#[cold]
#[inline(never)]
fn take_spare_output(out: &mut BytesMut) {
    if let Some(spare) = spares::take(&spares::OUTPUTS) {
        *out = spare;
    }
}

pub struct ReplyQueue {
    worker: Rc<Worker>,
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    head_seq: u64,
    /// Made on first use and dropped with the queue's storage when the client is idle: most
    /// clients never need it, and an empty one still cost 152 bytes per client.
    driven: Option<FuturesUnordered<Tagged>>,
    /// Entries that hold a backend connection until data arrives (blocking commands).
    parked: usize,
}

impl ReplyQueue {
    pub fn new(worker: Rc<Worker>) -> ReplyQueue {
        ReplyQueue {
            worker,
            entries: VecDeque::new(),
            head_seq: 0,
            driven: None,
            parked: 0,
        }
    }

    fn drive(&mut self, tagged: Tagged) {
        self.driven
            .get_or_insert_with(FuturesUnordered::new)
            .push(tagged);
    }

    /// Gives back the queue's storage once it is empty, so an idle client keeps at most one
    /// entry's room (a pipeline's 4 or more: 480 bytes per client, 10,000 idle clients held
    /// 6 MiB more). The one entry is kept: a client sending one command at a time then costs
    /// no allocation per command. A pipeline's storage goes to the worker's spares, for the
    /// next burst of this client or another.
    #[inline(always)]
    pub fn release_idle(&mut self) {
        if self.entries.is_empty() && (self.entries.capacity() > 1 || self.driven.is_some()) {
            self.release_storage();
        }
    }

    #[cold]
    #[inline(never)]
    fn release_storage(&mut self) {
        if self.entries.capacity() > 1 {
            let storage = std::mem::take(&mut self.entries);
            if storage.capacity() <= SPARE_QUEUE_ENTRIES {
                spares::give(&QUEUE_SPARES, storage);
            }
        }
        if self.driven.as_ref().is_some_and(|d| d.is_empty()) {
            self.driven = None;
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

    /// Inline in the session's dispatch loop: a call moved the reply (about a hundred bytes)
    /// once more.
    #[inline(always)]
    pub fn push(&mut self, dispatched: Dispatched) {
        let seq = self.head_seq + self.entries.len() as u64;
        let parked = matches!(dispatched.reply, Reply::Parked(_));
        let state = match dispatched.reply {
            Reply::Ready(bytes) => State::Ready(bytes),
            Reply::InFlight(in_flight) => State::InFlight(in_flight),
            Reply::Later(future) | Reply::Parked(future) => {
                self.drive(Tagged { seq, future });
                State::Driven
            }
        };
        self.parked += usize::from(parked);
        if self.entries.len() == self.entries.capacity() && self.entries.capacity() <= 1 {
            self.make_room();
        }
        self.entries.push_back(Entry {
            state,
            latency: dispatched.latency,
            parked,
            silent: dispatched.silent,
            ends_batch: false,
        });
    }

    /// Room for a first command: room for one, the most a client sending one command at a
    /// time ever needs (a spare taken then would go back at once, and cycle through the
    /// spares with every command). Room for a second: a spare pipeline's storage if the
    /// worker has one; else, and past a spare's room, the queue grows as any `VecDeque` does.
    #[cold]
    #[inline(never)]
    fn make_room(&mut self) {
        if self.entries.capacity() == 0 {
            self.entries.reserve_exact(1);
        } else if let Some(mut spare) = spares::take(&QUEUE_SPARES) {
            while let Some(entry) = self.entries.pop_front() {
                spare.push_back(entry);
            }
            self.entries = spare;
        }
    }

    /// Marks the last queued command as the end of a batch: the commands one read brought,
    /// which the client sent together (a pipeline). The session may hold a batch's first
    /// replies until the rest of it is ready, to write them in one send.
    pub fn end_batch(&mut self) {
        if let Some(last) = self.entries.back_mut() {
            last.ends_batch = true;
        }
    }

    /// What the head of the queue (the first reply owed) is, for [`flush::sends_now`].
    ///
    /// [`flush::sends_now`]: super::flush::sends_now
    pub fn head(&self) -> Head {
        match self.entries.front() {
            None => Head::Nothing,
            Some(Entry {
                state: State::InFlight(_),
                parked: false,
                ..
            }) => Head::Request,
            Some(_) => Head::Other,
        }
    }

    /// Moves every reply that is complete at the head of the queue into `out`, without waiting,
    /// until `out` holds more than `limit` bytes (0 = no limit: the session's
    /// `client_output_buffer_limit`, which then closes the client). Past the limit, replies are
    /// not copied into a buffer that is about to be dropped: a client that does not read
    /// replies of a node that answers fast would otherwise have them all copied first.
    /// Returns whether one of the replies moved was the last of its batch
    /// ([`ReplyQueue::end_batch`]).
    ///
    /// Inline for the check of an empty queue (the session calls this on every turn).
    #[inline(always)]
    pub fn drain_ready(&mut self, out: &mut BytesMut, limit: usize) -> bool {
        if self.entries.is_empty() && self.driven.as_ref().is_none_or(|d| d.is_empty()) {
            return false;
        }
        self.drain_entries(out, limit)
    }

    #[inline(never)]
    fn drain_entries(&mut self, out: &mut BytesMut, limit: usize) -> bool {
        // Polling an empty `FuturesUnordered` still costs a waker registration.
        while let Some(driven) = self.driven.as_mut().filter(|d| !d.is_empty()) {
            match driven.next().now_or_never() {
                Some(Some((seq, bytes))) => self.fill(seq, bytes),
                _ => break,
            }
        }
        // One clock read for every reply of this batch (they go out in the same write).
        let mut now = None;
        let pipelined = self.entries.len() > 1;
        let mut batch_ended = false;
        while let Some(front) = self.entries.front_mut() {
            if limit > 0 && out.len() > limit {
                break;
            }
            match &mut front.state {
                State::Ready(bytes) => {
                    // A pipeline's replies go into a spare buffer rather than one that grows
                    // in steps as they are copied in (a reply moved in whole needs none).
                    if out.capacity() == 0 && pipelined && bytes.len() < TAKE_WHOLE {
                        take_spare_output(out);
                    }
                    batch_ended |= self.pop_into(out, &mut now);
                }
                State::InFlight(in_flight) => match in_flight.try_settle(&self.worker) {
                    Some(settled) => self.settle(0, settled),
                    None => break,
                },
                State::Driven => break,
            }
        }
        batch_ended
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
            while let Some(driven) = self.driven.as_mut().filter(|d| !d.is_empty()) {
                let Poll::Ready(Some((seq, bytes))) = driven.poll_next_unpin(cx) else {
                    break;
                };
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

    /// Moves the head's reply into `out`; returns whether it ended a batch.
    fn pop_into(&mut self, out: &mut BytesMut, now: &mut Option<Instant>) -> bool {
        let Some(entry) = self.entries.pop_front() else {
            return false;
        };
        self.head_seq += 1;
        self.parked -= usize::from(entry.parked);
        if let Some((started, metrics)) = entry.latency {
            let now = *now.get_or_insert_with(Instant::now);
            metrics
                .latency
                .record(now.saturating_duration_since(started));
        }
        if let State::Ready(bytes) = entry.state {
            if !entry.silent {
                append_reply(out, bytes);
            }
        }
        entry.ends_batch
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
                self.drive(Tagged { seq, future });
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;
    use crate::dispatch::driver::{Resend, Target, TestNode};
    use crate::dispatch::worker::test_worker;

    fn ready(bytes: &'static [u8]) -> Dispatched {
        Dispatched::untimed(Bytes::from_static(bytes))
    }

    /// A request in flight and its node's end.
    fn in_flight(resend: Resend) -> (Dispatched, TestNode) {
        let (in_flight, node) = InFlight::for_tests(Target::Any, resend);
        (
            Dispatched {
                reply: Reply::InFlight(in_flight),
                latency: None,
                silent: false,
            },
            node,
        )
    }

    /// A future that completes with what is sent on the returned sender.
    fn later() -> (Dispatched, oneshot::Sender<Bytes>) {
        let (tx, rx) = oneshot::channel::<Bytes>();
        let reply = Reply::later(async move { rx.await.unwrap_or_default() });
        (
            Dispatched {
                reply,
                latency: None,
                silent: false,
            },
            tx,
        )
    }

    fn drained(queue: &mut ReplyQueue) -> Vec<u8> {
        let mut out = BytesMut::new();
        queue.drain_ready(&mut out, 0);
        out.to_vec()
    }

    /// Runs `test` on a LocalSet with tokio's clock paused (the driver sleeps between retries).
    async fn local(test: impl Future<Output = ()>) {
        tokio::task::LocalSet::new().run_until(test).await;
    }

    #[tokio::test(start_paused = true)]
    async fn replies_leave_in_command_order_whatever_order_they_complete_in() {
        local(async {
            let mut queue = ReplyQueue::new(test_worker(Duration::ZERO));
            let (first, first_tx) = in_flight(Resend::Safe);
            let (second, second_tx) = later();
            queue.push(first);
            queue.push(second);
            queue.push(ready(b"+third\r\n"));
            assert_eq!(drained(&mut queue), b"");
            // The second completes first: it waits for the head.
            second_tx.send(Bytes::from_static(b"+second\r\n")).unwrap();
            queue.progress().await;
            assert_eq!(drained(&mut queue), b"");
            assert_eq!(queue.len(), 3);
            first_tx.reply(b"+first\r\n");
            assert_eq!(drained(&mut queue), b"+first\r\n+second\r\n+third\r\n");
            assert!(queue.is_empty());
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn draining_says_when_a_batch_ended_and_the_head_what_is_owed_next() {
        local(async {
            let mut queue = ReplyQueue::new(test_worker(Duration::ZERO));
            assert_eq!(queue.head(), Head::Nothing);
            // One read brought two commands, the next read one.
            queue.push(ready(b"+a\r\n"));
            let (second, node) = in_flight(Resend::Safe);
            queue.push(second);
            queue.end_batch();
            queue.push(ready(b"+c\r\n"));
            queue.end_batch();
            let mut out = BytesMut::new();
            assert!(
                !queue.drain_ready(&mut out, 0),
                "only the first batch's start"
            );
            assert_eq!(&out[..], b"+a\r\n");
            assert_eq!(queue.head(), Head::Request);
            node.reply(b"+b\r\n");
            assert!(queue.drain_ready(&mut out, 0));
            assert_eq!(&out[..], b"+a\r\n+b\r\n+c\r\n");
            assert_eq!(queue.head(), Head::Nothing);
            // A command carried out in steps is not a plain request.
            let (third, _tx) = later();
            queue.push(third);
            assert_eq!(queue.head(), Head::Other);
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn progress_wakes_on_the_head_reply() {
        local(async {
            let mut queue = ReplyQueue::new(test_worker(Duration::ZERO));
            let (head, tx) = in_flight(Resend::Safe);
            queue.push(head);
            queue.push(ready(b"+next\r\n"));
            tokio::task::spawn_local(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.reply(b":1\r\n");
            });
            queue.progress().await;
            assert_eq!(drained(&mut queue), b":1\r\n+next\r\n");
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_that_is_not_final_goes_to_the_driver_and_keeps_its_place() {
        local(async {
            // No retry time: the driver gives the node's own answer back at once.
            let mut queue = ReplyQueue::new(test_worker(Duration::ZERO));
            let (head, head_tx) = in_flight(Resend::Safe);
            let (second, second_tx) = in_flight(Resend::Safe);
            queue.push(head);
            queue.push(second);
            second_tx.reply(b"+ok\r\n");
            head_tx.reply(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n");
            assert_eq!(drained(&mut queue), b"");
            queue.progress().await;
            assert_eq!(
                drained(&mut queue),
                b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n+ok\r\n".as_slice()
            );
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_connection_answers_an_error_in_its_place() {
        local(async {
            let mut queue = ReplyQueue::new(test_worker(Duration::ZERO));
            let (write, write_tx) = in_flight(Resend::Never);
            queue.push(write);
            queue.push(ready(b"+after\r\n"));
            drop(write_tx); // the connection task ended with the request in it
            queue.progress().await;
            assert_eq!(
                drained(&mut queue),
                b"-ERR connection to node (connection closed) was lost after the command was sent; it may or may not have run\r\n+after\r\n"
            );
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn parked_commands_are_known_until_answered() {
        local(async {
            let mut queue = ReplyQueue::new(test_worker(Duration::ZERO));
            let (tx, rx) = oneshot::channel::<Bytes>();
            queue.push(Dispatched {
                reply: Reply::Parked(Box::pin(async move { rx.await.unwrap_or_default() })),
                latency: None,
                silent: false,
            });
            assert!(queue.has_parked());
            tx.send(Bytes::from_static(b"*-1\r\n")).unwrap();
            queue.progress().await;
            assert_eq!(drained(&mut queue), b"*-1\r\n");
            assert!(!queue.has_parked());
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_pipelines_queue_storage_goes_to_the_next_queue_that_grows() {
        local(async {
            let worker = test_worker(Duration::ZERO);
            let mut first = ReplyQueue::new(worker.clone());
            for _ in 0..10 {
                first.push(ready(b"+OK\r\n"));
            }
            let capacity = first.entries.capacity();
            assert!(capacity >= 10);
            drained(&mut first);
            first.release_idle();
            assert_eq!(first.entries.capacity(), 0);
            // The next queue's first command gets room for one, its second takes it whole.
            let mut second = ReplyQueue::new(worker.clone());
            second.push(ready(b"+OK\r\n"));
            assert_eq!(second.entries.capacity(), 1);
            second.push(ready(b"+OK\r\n"));
            assert_eq!(second.entries.capacity(), capacity);
            // A queue of one command at a time keeps its room for one, and gives nothing.
            let mut third = ReplyQueue::new(worker.clone());
            third.push(ready(b"+OK\r\n"));
            assert_eq!(third.entries.capacity(), 1);
            drained(&mut third);
            third.release_idle();
            assert_eq!(third.entries.capacity(), 1);
            // The second gives it back; one command at a time after that does not take it
            // (it would cycle through the spares with every command).
            drained(&mut second);
            second.release_idle();
            assert_eq!(second.entries.capacity(), 0);
            second.push(ready(b"+OK\r\n"));
            assert_eq!(second.entries.capacity(), 1);
            // A second command in flight: the queue of one takes the spare.
            third.push(ready(b"+OK\r\n"));
            third.push(ready(b"+OK\r\n"));
            assert_eq!(third.entries.capacity(), capacity);
            assert_eq!(drained(&mut third), b"+OK\r\n+OK\r\n");
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_pipelines_replies_go_into_a_spare_output_buffer() {
        local(async {
            let mut queue = ReplyQueue::new(test_worker(Duration::ZERO));
            let spare = BytesMut::with_capacity(2048);
            let at = spare.as_ptr();
            spares::give(&spares::OUTPUTS, spare);
            // One reply: copied into the buffer as it is; the spare stays.
            queue.push(ready(b"+one\r\n"));
            let mut out = BytesMut::new();
            queue.drain_ready(&mut out, 0);
            assert_ne!(out.as_ptr(), at);
            // Two: the spare takes them.
            queue.push(ready(b"+first\r\n"));
            queue.push(ready(b"+second\r\n"));
            let mut out = BytesMut::new();
            queue.drain_ready(&mut out, 0);
            assert_eq!(out.as_ptr(), at);
            assert_eq!(out, b"+first\r\n+second\r\n".as_slice());
        })
        .await;
    }

    #[test]
    fn a_large_reply_becomes_the_empty_output_buffer_without_a_copy() {
        let large = BytesMut::from(vec![b'k'; TAKE_WHOLE].as_slice()).freeze();
        let at = large.as_ptr();
        let mut out = BytesMut::new();
        append_reply(&mut out, large);
        assert_eq!((out.as_ptr(), out.len()), (at, TAKE_WHOLE));
        // Behind other output, or shared with another owner, it is copied.
        append_reply(&mut out, Bytes::from_static(b"+OK\r\n"));
        assert!(out.ends_with(b"k+OK\r\n"));
        let shared = BytesMut::from(vec![b'k'; TAKE_WHOLE].as_slice()).freeze();
        let mut out = BytesMut::new();
        append_reply(&mut out, shared.clone());
        assert_ne!(out.as_ptr(), shared.as_ptr());
        assert_eq!(out, shared);
    }
}

//! One client connection: read → decode every complete command → dispatch in arrival order →
//! write replies from the head of the queue, batching every reply that is ready into one write
//! (and a pipeline's first replies with the rest of it: see `flush`).
//!
//! Reading, completing replies and writing all happen in one loop that waits on them all at
//! once, so a client that pipelines a huge batch before reading anything cannot deadlock
//! against the proxy: the proxy keeps reading while its writes wait, up to
//! `max_pipeline_depth` commands in flight.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::time::Sleep;

use super::flush;
use super::io::{write_copying, ClientStream};
use super::replies::ReplyQueue;
use super::spares::{self, OUTPUTS, OUTPUT_CAPACITY};
use crate::dispatch::clients;
use crate::dispatch::pubsub::Subscriptions;
use crate::dispatch::tracking;
use crate::dispatch::Worker;
use crate::dispatch::{dispatch, flag, ClientState, Dispatched, ProxyError};
use crate::resp::{Command, RequestDecoder};

/// The idle timer's delay while `client_idle_timeout` is off (it is then never polled).
const IDLE_TIMER_OFF: Duration = Duration::from_secs(365 * 24 * 3600);
/// Buffers that grew past this for a large value are given back once they are empty.
const KEEP_BUFFER: usize = 64 * 1024;
/// An emptied output buffer that never held more than this (an input buffer with no more room
/// than this) is kept even when nothing more is owed: a client sending one command at a time
/// would otherwise cost an allocation for every reply (about 300 instructions per request at
/// `-P 1`, callgrind), and this much per idle client is little (10,000 idle clients: at most
/// 5 MiB, in practice the few dozen bytes of their last reply).
const SMALL_BUFFER: usize = 512;
/// Input read ahead while a command is held by CLIENT PAUSE; beyond it the socket waits.
const HELD_INPUT_LIMIT: usize = 1024 * 1024;

/// The proxy's end of a client's TCP connection, as `CLIENT LIST` shows it (`laddr=`, `fd=`).
#[derive(Clone, Copy, Debug)]
pub struct LocalEnd {
    pub addr: Option<SocketAddr>,
    pub fd: i32,
}

impl LocalEnd {
    pub fn of(stream: &tokio::net::TcpStream) -> LocalEnd {
        #[cfg(unix)]
        let fd = std::os::fd::AsRawFd::as_raw_fd(stream);
        #[cfg(not(unix))]
        let fd = -1;
        LocalEnd {
            addr: stream.local_addr().ok(),
            fd,
        }
    }
}

pub async fn serve<S: ClientStream>(
    worker: Rc<Worker>,
    stream: S,
    peer: SocketAddr,
    local: LocalEnd,
) {
    let shared = worker.shared.clone();
    shared.client_connected();
    if shared.connected_clients() > shared.client_limits.load().max_clients {
        metrics::counter!("slotproxy_errors_total", "kind" => "max_clients").increment(1);
        tracing::debug!(%peer, "refused a client: max_clients reached");
        if stream.writable().await.is_ok() {
            let _ = stream.try_write(b"-ERR max number of clients reached\r\n");
        }
        shared.client_disconnected();
        return;
    }
    let id = shared.next_client_id();
    let registration = shared.clients.register(id, peer, local.addr, local.fd);
    let mut client = ClientState::new(id, peer, !shared.users.load().required(), registration);
    tracing::debug!(client = id, %peer, "client connected");
    if let Err(error) = run(&worker, stream, &mut client).await {
        tracing::debug!(client = id, %error, "client connection error");
    }
    tracking::stop(&shared, &mut client);
    tracing::debug!(client = id, "client disconnected");
    shared.client_disconnected();
}

async fn run<S: ClientStream>(
    worker: &Rc<Worker>,
    stream: S,
    client: &mut ClientState,
) -> std::io::Result<()> {
    let mut decoder = RequestDecoder::new(worker.limits.clone());
    // Buffers start empty and are dropped again whenever the client is idle: an idle
    // connection then costs no buffer memory at all.
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    // The most `output` held since it was last given back (its capacity no longer says once
    // written: `advance` moves its start), so that giving back a large one returns the memory.
    let mut output_high = 0usize;
    // `output` holds the last reply of a batch: it goes out without waiting (see `flush`).
    let mut batch_ended = false;
    let mut pending = ReplyQueue::new(worker.clone());
    let bytes = &worker.bytes;
    // No more input will be read: the client sent QUIT, a protocol error, or hung up.
    let mut input_done = false;
    // The client shut its sending side: what it sent is still carried out, as far as the
    // commands holding the rest allow, then input is over.
    let mut peer_closed = false;
    let mut idle = Idle::default();
    let idle_timer = tokio::time::sleep(IDLE_TIMER_OFF);
    tokio::pin!(idle_timer);
    // CLIENT KILL from any client: close at once. Invalidations (CLIENT TRACKING) come the
    // same way and wait here until they can go out between replies.
    let entry = client.entry().clone();
    let mut invalidations = Vec::new();
    // A command CLIENT PAUSE holds, and whether a WRITE pause holds it (else only ALL):
    // nothing after it is dispatched until the pause is over, as Redis blocks the client.
    let mut held: Option<(Command, bool)> = None;
    let registry = worker.shared.clients.clone();
    // Checked on every turn: the cache costs one atomic load while nothing changed (a plain
    // `ArcSwap::load` several times that, callgrind).
    let mut limits = arc_swap::Cache::new(&worker.shared.client_limits);
    loop {
        // The limits may change with a reload (SIGHUP): read them as the client goes.
        let (output_limit, idle_timeout) = {
            let limits = limits.load();
            (limits.output_limit, limits.idle_timeout)
        };
        idle.follow(idle_timeout, idle_timer.as_mut());
        // Replies that completed first: taking them out of the queue makes room for the
        // commands still waiting in `input` (a full pipeline stops dispatching, and nothing
        // else would wake the session for input that is already read).
        batch_ended |= pending.drain_ready(&mut output, output_limit);
        if !input_done && held.is_none() {
            input_done = dispatch_decoded(
                worker,
                client,
                &mut decoder,
                &mut input,
                &mut pending,
                &mut held,
            );
            // Everything already complete goes out in one write.
            batch_ended |= pending.drain_ready(&mut output, output_limit);
        }
        // A command carried out in steps held the ones after it back until its reply was out.
        if client.hold_until_replied && pending.is_empty() && !input_done && held.is_none() {
            input_done = dispatch_decoded(
                worker,
                client,
                &mut decoder,
                &mut input,
                &mut pending,
                &mut held,
            );
            batch_ended |= pending.drain_ready(&mut output, output_limit);
        }
        output_high = output_high.max(output.len());
        if peer_closed
            && !input_done
            && held.is_none()
            && !client.hold_until_replied
            && pending.len() < worker.max_pipeline_depth
        {
            // Nothing holds the input back and the pipeline had room: every complete command
            // it held has been dispatched.
            input_done = true;
        }
        if output_limit > 0 && output.len() > output_limit {
            metrics::counter!("slotproxy_errors_total", "kind" => "client_output_buffer")
                .increment(1);
            tracing::info!(
                client = client.id,
                peer = %client.peer,
                bytes = output.len(),
                "closing a client that does not read its replies (client_output_buffer_limit)"
            );
            return Ok(());
        }
        if pending.is_empty() {
            // Messages go out only once every earlier command has its reply.
            if let Some(subs) = client.subs.as_mut() {
                subs.flush(&mut output);
            }
            if !invalidations.is_empty() {
                tracking::write_invalidations(client, invalidations.drain(..), &mut output);
            }
        }
        // Written at once rather than on the next turn of the loop: the socket nearly always
        // has room, and learning so through readiness and another `select!` cost about a
        // thousand instructions per request at `-P 1` (callgrind). `try_write` answers
        // `WouldBlock` without a system call while the socket is known to be full.
        if !output.is_empty() && sends_now(&output, output_limit, batch_ended, &pending) {
            let n = write_some(&stream, &mut output, pending.is_empty(), &mut output_high)?;
            bytes.count_written(n);
            batch_ended &= !output.is_empty();
        }
        if input_done && pending.is_empty() && output.is_empty() {
            return Ok(());
        }
        // An emptied input buffer with little room left is kept like a small output buffer:
        // the next request is copied into it once the requests split from it are answered
        // (see `ClientStream::read_into`), instead of arriving in a new buffer every time.
        if input.is_empty()
            && ((pending.is_empty() && input.capacity() > SMALL_BUFFER)
                || input.capacity() > KEEP_BUFFER)
        {
            input = BytesMut::new();
        }
        if pending.is_empty() {
            pending.release_idle();
        }
        // While a command holds the ones after it (a pause, a command carried out in steps,
        // a script), input is still read up to a bound: a client that hangs up is noticed
        // (its parked command abandoned), one that keeps sending is not buffered without end.
        let holding = held.is_some() || client.hold_until_replied;
        let can_read = !input_done
            && !peer_closed
            && pending.len() < worker.max_pipeline_depth
            && (!holding || input.len() < HELD_INPUT_LIMIT);
        let held_write = held.as_ref().map(|(_, write)| *write);
        // In a fixed order: replies first (they make room), reading last (it adds work). A
        // random start would buy nothing here: the earlier sources cannot stay ready for ever
        // (replies come only from commands already read, at most `max_pipeline_depth` of
        // them), so reading is never starved. Polled by hand rather than through `select!`,
        // whose branch loop cost about 90 instructions per turn (two turns per request at
        // `-P 1`, callgrind); the futures live in this block, so each handler below may use
        // what they borrowed.
        let replies_owed = !pending.is_empty();
        let owes_output =
            !output.is_empty() && sends_now(&output, output_limit, batch_ended, &pending);
        let subscribed = client.subs.is_some();
        let idle_on = idle.is_on();
        let event = {
            let mut progress = std::pin::pin!(pending.progress());
            let mut attention = std::pin::pin!(entry.attention());
            let mut pause_over = std::pin::pin!(clients::pause_over(
                &registry,
                held_write.unwrap_or_default()
            ));
            let mut subscription =
                std::pin::pin!(next_subscription_event(worker, client.subs.as_deref_mut()));
            std::future::poll_fn(|cx| {
                // As `select!` does: once the task's coop budget is spent it yields, so the
                // worker's other tasks run first (tokio's sockets and timers, polled below,
                // would answer pending then too).
                if !tokio::task::coop::has_budget_remaining() {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if replies_owed && progress.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Progress);
                }
                if attention.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Attention);
                }
                if held_write.is_some() && pause_over.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::PauseOver);
                }
                if subscribed && subscription.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Subscription);
                }
                if owes_output {
                    if let Poll::Ready(ready) = stream.poll_write_ready(cx) {
                        return Poll::Ready(Event::Writable(ready));
                    }
                }
                if can_read {
                    if let Poll::Ready(ready) = stream.poll_read_ready(cx) {
                        return Poll::Ready(Event::Readable(ready));
                    }
                }
                if idle_on && idle_timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::IdleTimer);
                }
                Poll::Pending
            })
            .await
        };
        match event {
            Event::Progress | Event::Subscription => {}
            Event::Attention => {
                if entry.is_killed() {
                    tracing::debug!(client = client.id, "closing a client (CLIENT KILL)");
                    return Ok(());
                }
                // Shutdown: answer what was sent, then close.
                if entry.take_stop_reading() {
                    input_done = true;
                }
                tracking::hold(&mut invalidations, entry.take_invalidations());
            }
            Event::PauseOver => {
                if let Some((command, _)) = held.take() {
                    client.entry().set_flag(flag::BLOCKED, false);
                    client.nothing_in_flight = pending.is_empty();
                    pending.push(dispatch(
                        worker.speaking_to(client.protocol),
                        client,
                        command,
                        &mut None,
                    ));
                    pending.end_batch();
                    if client.closing {
                        input_done = true;
                    }
                }
            }
            Event::Writable(ready) => {
                ready?;
                let n = write_some(&stream, &mut output, pending.is_empty(), &mut output_high)?;
                bytes.count_written(n);
                batch_ended &= !output.is_empty();
            }
            Event::Readable(ready) => {
                ready?;
                match stream.read_into(&mut worker.read_scratch.borrow_mut(), &mut input) {
                    // The client hung up (or shut down its sending side): finish what it
                    // sent, then close; unless a command is parked waiting for data, which
                    // may never come (Redis too frees a blocked client that disconnects).
                    Ok(0) if pending.has_parked() => return Ok(()),
                    Ok(0) => peer_closed = true,
                    Ok(n) => {
                        bytes.count_read(n);
                        idle.touch();
                        client.entry().touch(registry.recent_ms());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Event::IdleTimer => {
                // As in Redis: clients waiting on a blocking command, subscribed, or in a
                // transaction are not idle.
                let busy = !pending.is_empty()
                    || !output.is_empty()
                    || client.subs.is_some()
                    || client.tx.in_multi();
                if idle.expired(busy, idle_timer.as_mut()) {
                    tracing::debug!(
                        client = client.id,
                        "closing an idle client (client_idle_timeout)"
                    );
                    return Ok(());
                }
            }
        }
    }
}

/// What the session woke for, in the order it looks.
enum Event {
    /// A reply is ready (or a command's next step may run).
    Progress,
    /// Killed, asked to stop reading, or invalidations to write.
    Attention,
    /// The pause holding a command is over.
    PauseOver,
    /// A Pub/Sub message to hand on (or the subscriptions' state moved).
    Subscription,
    /// The socket takes output again.
    Writable(std::io::Result<()>),
    /// Input to read (or the client hung up).
    Readable(std::io::Result<()>),
    /// The idle timer fired.
    IdleTimer,
}

/// Decodes and dispatches every complete command in `input`, in arrival order, as long as the
/// pipeline has room; they are one batch (see `flush`), whose end is marked on its last
/// command. Returns whether input is over (QUIT, or a protocol error, which Redis reports and
/// then closes that connection only).
fn dispatch_decoded(
    worker: &Rc<Worker>,
    client: &mut ClientState,
    decoder: &mut RequestDecoder,
    input: &mut BytesMut,
    pending: &mut ReplyQueue,
    held: &mut Option<(Command, bool)>,
) -> bool {
    if client.hold_until_replied {
        if !pending.is_empty() {
            return false;
        }
        client.hold_until_replied = false;
    }
    // One clock read for the latency of every command of this read.
    let mut arrived = None;
    let input_done = loop {
        if pending.len() >= worker.max_pipeline_depth || client.hold_until_replied {
            break false;
        }
        match decoder.decode(input) {
            Ok(Some(command)) => {
                // One relaxed load per command while no pause was ever set.
                if worker.shared.clients.pause.maybe_active() {
                    if let Some(write) = clients::pause_hold(worker, client, &command) {
                        client.entry().set_flag(flag::BLOCKED, true);
                        *held = Some((command, write));
                        break false;
                    }
                }
                client.nothing_in_flight = pending.is_empty();
                pending.push(dispatch(
                    worker.speaking_to(client.protocol),
                    client,
                    command,
                    &mut arrived,
                ));
                if client.closing {
                    break true;
                }
            }
            Ok(None) => break false,
            Err(error) => {
                pending.push(Dispatched::untimed(ProxyError::protocol(&error).answer()));
                break true;
            }
        }
    };
    pending.end_batch();
    input_done
}

/// Whether the replies in `output` go out now ([`flush::sends_now`]).
#[inline(always)]
fn sends_now(
    output: &BytesMut,
    output_limit: usize,
    batch_ended: bool,
    pending: &ReplyQueue,
) -> bool {
    flush::sends_now(
        output.len(),
        flush::hold_limit(output_limit),
        batch_ended,
        || pending.head(),
    )
}

/// Writes what the socket takes of `output` now; the number of bytes written. An emptied
/// buffer that grew large (`high`: the most it held), or whose client has nothing more owed
/// and that held more than a small reply, is given back, and a large one's memory returned to
/// the system.
fn write_some<S: ClientStream>(
    stream: &S,
    output: &mut BytesMut,
    nothing_owed: bool,
    high: &mut usize,
) -> std::io::Result<usize> {
    // A buffer that grew large is written by copy: its memory is given back (and returned to
    // the system) right below once it is empty, which a buffer handed over to the socket
    // would escape (measured: 49 MiB kept after a 48 MiB `KEYS` reply).
    let written = if *high > KEEP_BUFFER {
        write_copying(stream, output)
    } else {
        stream.write_from(output)
    };
    match written {
        Ok(n) => {
            if output.is_empty() {
                // Its start moved to its end as it was written (or it is the last send's
                // emptied buffer): take back the room before it, which the next reply would
                // take back anyway, so its size is known here.
                let _ = output.try_reclaim(output.capacity() + 1);
                release_emptied(output, nothing_owed, high);
            }
            Ok(n)
        }
        Err(e) => Err(e),
    }
}

/// What becomes of an output buffer once it is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Emptied {
    /// The client keeps it: a small one, or replies are still owed.
    Keep,
    /// To the worker's spares, for the next pipeline's replies.
    Spare,
    /// Dropped; `Released` also returns its memory to the system (it grew large).
    Dropped,
    Released,
}

/// An emptied output buffer that held more than [`KEEP_BUFFER`] (`high`) is dropped and its
/// memory returned to the system. One that held, or has room for, more than a small reply
/// leaves its client once nothing more is owed: to the spares unless it has more room than
/// they keep.
fn emptied_output(high: usize, capacity: usize, nothing_owed: bool) -> Emptied {
    if high > KEEP_BUFFER {
        Emptied::Released
    } else if !nothing_owed || (high <= SMALL_BUFFER && capacity <= SMALL_BUFFER) {
        Emptied::Keep
    } else if capacity <= OUTPUT_CAPACITY {
        Emptied::Spare
    } else {
        Emptied::Dropped
    }
}

/// Carries out [`emptied_output`] on the session's emptied output buffer.
#[inline(always)]
fn release_emptied(output: &mut BytesMut, nothing_owed: bool, high: &mut usize) {
    match emptied_output(*high, output.capacity(), nothing_owed) {
        Emptied::Keep => {}
        fate => give_back_output(output, fate, high),
    }
}

#[cold]
#[inline(never)]
fn give_back_output(output: &mut BytesMut, fate: Emptied, high: &mut usize) {
    let emptied = std::mem::take(output);
    let held = std::mem::take(high);
    match fate {
        Emptied::Spare => spares::give(&OUTPUTS, emptied),
        Emptied::Released => {
            drop(emptied);
            crate::memory::released(held);
        }
        Emptied::Keep | Emptied::Dropped => {}
    }
}

/// The idle timeout of one client: one timer, moved on only when it fires (not on every read).
struct Idle {
    limit: Option<Duration>,
    last_active: Instant,
}

impl Default for Idle {
    fn default() -> Idle {
        Idle {
            limit: None,
            last_active: Instant::now(),
        }
    }
}

impl Idle {
    fn is_on(&self) -> bool {
        self.limit.is_some()
    }

    /// Follows the configured limit (a reload may change it).
    fn follow(&mut self, limit: Option<Duration>, timer: Pin<&mut Sleep>) {
        if limit == self.limit {
            return;
        }
        self.limit = limit;
        let deadline = match limit {
            Some(limit) => self.last_active + limit,
            None => Instant::now() + IDLE_TIMER_OFF,
        };
        timer.reset(deadline.into());
    }

    /// The client sent something.
    fn touch(&mut self) {
        if self.limit.is_some() {
            self.last_active = Instant::now();
        }
    }

    /// The timer fired: whether the client has been idle past the limit (a `busy` client is
    /// active now); otherwise the timer is set for the new deadline.
    fn expired(&mut self, busy: bool, timer: Pin<&mut Sleep>) -> bool {
        let limit = self.limit.unwrap_or_default();
        if busy {
            self.last_active = Instant::now();
        } else if self.last_active.elapsed() >= limit {
            return true;
        }
        timer.reset((self.last_active + limit).into());
        false
    }
}

/// The next Pub/Sub event of a subscribed client (never completes without subscriptions).
async fn next_subscription_event(worker: &Worker, subs: Option<&mut Subscriptions>) {
    match subs {
        Some(subs) => subs.next_event(worker).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emptied_output_buffer_is_kept_spared_dropped_or_released() {
        use Emptied::*;
        let small = SMALL_BUFFER;
        let table = [
            // (most it held, room it has, nothing more owed) -> fate
            ((71, 71, true), Keep), // one small reply at a time: no allocation per reply
            ((small, small, true), Keep), // the edge of small
            ((71, 2048, false), Keep), // replies still owed: it is needed again soon
            ((1136, 2048, false), Keep),
            ((1136, 2048, true), Spare), // a pipeline's replies, all answered
            ((71, 2048, true), Spare),   // a spare that carried little: not kept per client
            ((small + 1, small + 1, true), Spare),
            ((4096, OUTPUT_CAPACITY, true), Spare),
            ((4096, OUTPUT_CAPACITY + 1, true), Dropped), // more room than spares keep
            ((KEEP_BUFFER, KEEP_BUFFER, true), Dropped),
            ((KEEP_BUFFER + 1, KEEP_BUFFER + 1, true), Released), // a large value's buffer
            ((KEEP_BUFFER + 1, KEEP_BUFFER + 1, false), Released), // even with more owed
        ];
        for ((high, capacity, nothing_owed), want) in table {
            assert_eq!(
                emptied_output(high, capacity, nothing_owed),
                want,
                "high={high} capacity={capacity} nothing_owed={nothing_owed}"
            );
        }
    }

    #[test]
    fn an_emptied_pipeline_buffer_goes_to_the_spares_and_a_small_one_stays() {
        let mut emptied = BytesMut::with_capacity(2048);
        let at = emptied.as_ptr();
        let mut high = 1136;
        release_emptied(&mut emptied, true, &mut high);
        assert_eq!((emptied.capacity(), high), (0, 0));
        assert_eq!(spares::take(&OUTPUTS).map(|b| b.as_ptr()), Some(at));
        let mut small = BytesMut::with_capacity(80);
        let mut high = 71;
        release_emptied(&mut small, true, &mut high);
        assert_eq!((small.capacity(), high), (80, 71));
        assert!(spares::take(&OUTPUTS).is_none());
    }
}

//! One multiplexed, pipelined connection to a node, shared by every client of a worker.
//!
//! Requests queue on a channel; the writer takes everything queued at once and sends it in one
//! `write`; the reader finds the end of each reply without parsing it and hands the raw bytes
//! to the oldest waiting request (Redis answers in order on a connection).
//!
//! The connection task is generic over its byte stream, opened by a [`Connector`]: production
//! pipes use [`NodeConnector`] (TCP or TLS to a node), the unit tests (`pipe/tests.rs`)
//! an in-memory stream with a scripted node on the other end.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::reply_slot as oneshot;
// tokio's clock rather than std's: the same clock in production, and the one a test pauses.
use tokio::time::Instant;

use super::addr::NodeAddr;
use super::connect::connect;
use super::connect::Credentials;
use super::stream::{BackendReader, BackendWriter};
use super::BackendError;
use crate::resp::{Protocol, ReplyScanner};
use queue::Queue;

mod queue;

/// The reply to one request: the raw reply bytes, or why there is none.
pub type ReplyResult = Result<Bytes, BackendError>;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
/// Requests taken from the queue per write: bounds one write's size and the reader's wait.
const MAX_BATCH: usize = 1024;
const READ_CHUNK: usize = 16 * 1024;
/// Buffers that grew past this for a large value are replaced once empty.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Settings every pipe of a worker shares.
pub struct PipeSettings {
    pub credentials: Credentials,
    /// Send READONLY on every new connection, so replicas serve reads (replica-read policies).
    pub readonly: bool,
    /// The protocol of the clients this connection serves (`HELLO 3` on connect for RESP3).
    pub protocol: Protocol,
    pub connect_timeout: Duration,
    pub command_timeout: Option<Duration>,
}

pub struct Request {
    payload: Bytes,
    asking: bool,
    /// Exempt from the command timeout (`WAIT`: it takes as long as its own timeout says).
    untimed: bool,
    reply: oneshot::Sender<ReplyResult>,
}

struct Waiting {
    /// Replies to drop before this request's own (the `ASKING` acknowledgement).
    skip: u8,
    /// When it was written; `None` for a request the command timeout does not apply to.
    sent_at: Option<Instant>,
    reply: oneshot::Sender<ReplyResult>,
}

/// Lets the writer, once every handle is gone, wait for the replies still owed before the
/// connection closes: a retired pipe (see `Pool::retire_for_wait`) must finish its work.
#[derive(Default)]
struct Drain {
    closing: Cell<bool>,
    done: Notify,
}

/// Opens the byte stream a pipe runs on, already authenticated and split into its halves.
///
/// A type parameter of the connection task rather than a trait object, so the production pipe
/// is compiled for the concrete [`BackendReader`]/[`BackendWriter`] enums exactly as before:
/// no virtual call and no allocation per read, write or request.
pub trait Connector: 'static {
    type Reader: AsyncRead + Unpin + 'static;
    type Writer: AsyncWrite + Unpin + 'static;

    fn connect(
        &self,
        addr: &NodeAddr,
        settings: &PipeSettings,
    ) -> impl Future<Output = Result<(Self::Reader, Self::Writer), BackendError>>;
}

/// Connects to a real node: TCP (or TLS), AUTH, READONLY and HELLO as the settings ask.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeConnector;

impl Connector for NodeConnector {
    type Reader = BackendReader;
    type Writer = BackendWriter;

    async fn connect(
        &self,
        addr: &NodeAddr,
        settings: &PipeSettings,
    ) -> Result<(BackendReader, BackendWriter), BackendError> {
        let stream = connect(
            addr,
            &settings.credentials,
            settings.connect_timeout,
            settings.readonly,
            settings.protocol,
        )
        .await?;
        Ok(stream.into_split())
    }
}

/// Handle to a pipe; the connection task ends when every handle is gone.
pub struct Pipe {
    queue: Rc<Queue<Request>>,
    state: Rc<PipeState>,
}

impl Drop for Pipe {
    fn drop(&mut self) {
        self.queue.close_handle();
    }
}

/// What the pool needs to know about a pipe's connection.
#[derive(Default)]
pub struct PipeState {
    closed: Cell<bool>,
    /// Set when the connection could not be opened at all (drives the reconnect backoff).
    connect_error: RefCell<Option<(Instant, String)>>,
}

impl PipeState {
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    pub fn connect_error(&self) -> Option<(Instant, String)> {
        self.connect_error.borrow().clone()
    }
}

impl Pipe {
    /// Opens a pipe to `addr`; connecting happens in the background and requests sent
    /// meanwhile wait for it. `on_close` runs once when the connection is gone. `retrying`:
    /// the previous pipe to `addr` could not connect (its failure was logged; repeats are
    /// logged at debug, so a dead node doesn't flood the log).
    pub fn open(
        addr: NodeAddr,
        settings: Rc<PipeSettings>,
        retrying: bool,
        on_close: impl FnOnce(&PipeState) + 'static,
    ) -> Pipe {
        Pipe::open_with(NodeConnector, addr, settings, retrying, on_close)
    }

    /// [`Pipe::open`] over the stream that `connector` opens.
    pub fn open_with<C: Connector>(
        connector: C,
        addr: NodeAddr,
        settings: Rc<PipeSettings>,
        retrying: bool,
        on_close: impl FnOnce(&PipeState) + 'static,
    ) -> Pipe {
        let queue = Rc::new(Queue::default());
        let state = Rc::new(PipeState::default());
        let task_state = state.clone();
        let task_queue = queue.clone();
        tokio::task::spawn_local(async move {
            run(
                &connector,
                addr,
                settings,
                retrying,
                &task_queue,
                &task_state,
            )
            .await;
            task_state.closed.set(true);
            on_close(&task_state);
        });
        Pipe { queue, state }
    }

    pub fn state(&self) -> &PipeState {
        &self.state
    }

    /// Queues a request. `asking` sends `ASKING` right before it on the same connection.
    pub fn send(&self, payload: Bytes, asking: bool) -> oneshot::Receiver<ReplyResult> {
        self.queue(payload, asking, false)
    }

    /// Queues a request that may take longer than the command timeout (`WAIT`).
    pub fn send_untimed(&self, payload: Bytes) -> oneshot::Receiver<ReplyResult> {
        self.queue(payload, false, true)
    }

    /// Inline: once per request; the refusal of a pipe whose task is gone is out of line.
    #[inline(always)]
    fn queue(&self, payload: Bytes, asking: bool, untimed: bool) -> oneshot::Receiver<ReplyResult> {
        let (reply, rx) = oneshot::channel();
        if let Err(request) = self.queue.push(Request {
            payload,
            asking,
            untimed,
            reply,
        }) {
            not_sent(request);
        }
        rx
    }
}

/// The task is gone: nothing was written, so the caller may resend elsewhere.
#[cold]
#[inline(never)]
fn not_sent(request: Request) {
    let _ = request.reply.send(Err(BackendError::NotSent {
        addr: String::new(),
    }));
}

async fn run<C: Connector>(
    connector: &C,
    addr: NodeAddr,
    settings: Rc<PipeSettings>,
    retrying: bool,
    queue: &Queue<Request>,
    state: &PipeState,
) {
    let (reader, writer) = match connector.connect(&addr, &settings).await {
        Ok(halves) => {
            if retrying {
                tracing::info!(node = %addr, "backend connected again");
            }
            halves
        }
        Err(error) => {
            if retrying {
                tracing::debug!(node = %addr, %error, "backend connect failed again");
            } else {
                tracing::warn!(node = %addr, %error, "backend connect failed");
            }
            let reason = match &error {
                BackendError::Connect { reason, .. } | BackendError::Auth { reason, .. } => {
                    reason.clone()
                }
                other => other.to_string(),
            };
            *state.connect_error.borrow_mut() = Some((Instant::now(), reason));
            state.closed.set(true);
            fail_queued(queue, &error);
            return;
        }
    };
    tracing::debug!(node = %addr, "backend connected");
    let connections = metrics::gauge!("slotproxy_backend_connections", "node" => addr.to_string());
    connections.increment(1.0);
    let waiting = RefCell::new(VecDeque::<Waiting>::new());
    let drain = Drain::default();
    let outcome = tokio::select! {
        r = write_loop(writer, queue, &waiting, &drain) => r,
        r = read_loop(reader, &addr, &waiting, &drain, settings.command_timeout) => r,
    };
    state.closed.set(true);
    connections.decrement(1.0);
    let error = match outcome {
        Ok(()) => BackendError::Lost {
            addr: addr.to_string(),
        },
        Err(e) => {
            tracing::warn!(node = %addr, error = %e, "backend connection closed");
            e
        }
    };
    // Sent (or maybe sent) requests: the node may have run them.
    for w in waiting.borrow_mut().drain(..) {
        let _ = w.reply.send(Err(match &error {
            BackendError::Timeout { .. } | BackendError::Protocol { .. } => error.clone(),
            _ => BackendError::Lost {
                addr: addr.to_string(),
            },
        }));
    }
    // Still queued: certainly not written.
    fail_queued(
        queue,
        &BackendError::NotSent {
            addr: addr.to_string(),
        },
    );
}

fn fail_queued(queue: &Queue<Request>, error: &BackendError) {
    for request in queue.close() {
        let _ = request.reply.send(Err(error.clone()));
    }
}

/// Cancel safety: dropped by `select!` only when the connection is over.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    queue: &Queue<Request>,
    waiting: &RefCell<VecDeque<Waiting>>,
    drain: &Drain,
) -> Result<(), BackendError> {
    let mut batch = VecDeque::new();
    let mut out = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if queue.take(&mut batch, MAX_BATCH).await == 0 {
            // Every handle is gone: deliver the replies still owed, then close.
            drain.closing.set(true);
            while !waiting.borrow().is_empty() {
                drain.done.notified().await;
            }
            return Ok(());
        }
        let now = Instant::now();
        {
            let mut waiting = waiting.borrow_mut();
            for request in batch.drain(..) {
                if request.reply.is_closed() {
                    continue; // the client is gone and the command was never sent: skip it
                }
                if request.asking {
                    out.extend_from_slice(ASKING);
                }
                out.extend_from_slice(&request.payload);
                waiting.push_back(Waiting {
                    skip: u8::from(request.asking),
                    sent_at: (!request.untimed).then_some(now),
                    reply: request.reply,
                });
            }
        }
        if out.is_empty() {
            continue;
        }
        let lost = |_| BackendError::Lost {
            addr: String::new(),
        };
        writer.write_all(&out).await.map_err(lost)?;
        // TLS keeps what the socket did not take yet; for plain TCP this returns at once.
        writer.flush().await.map_err(lost)?;
        out.clear();
        if out.capacity() > KEEP_BUFFER {
            out = BytesMut::with_capacity(READ_CHUNK); // give back the memory of a burst
        }
    }
}

/// Cancel safety: dropped by `select!` only when the connection is over.
async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: R,
    addr: &str,
    waiting: &RefCell<VecDeque<Waiting>>,
    drain: &Drain,
    command_timeout: Option<Duration>,
) -> Result<(), BackendError> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scanner = ReplyScanner::default();
    // One timer for the connection's life, moved only when it fires: a timeout around every
    // read cost a timer-wheel entry per read (about 50 instructions per request at `-P 1`,
    // callgrind); a clock read per read is cheaper.
    let mut deadline = command_timeout.map(|limit| Box::pin(tokio::time::sleep(limit)));
    let mut last_read = Instant::now();
    loop {
        // A large reply nobody waited for any more (its client hung up, a merge past
        // `max_merged_reply` gave up on it) was dropped here: once the buffer has moved off
        // its allocation, the memory goes back to the system.
        let mut dropped_large = 0;
        // The largest reply handed over: its slice shares the buffer's allocation.
        let mut largest = 0;
        while let Some(len) = scanner.scan(&buf).map_err(|e| BackendError::Protocol {
            addr: addr.to_string(),
            reason: e.to_string(),
        })? {
            let reply = buf.split_to(len).freeze();
            largest = largest.max(len);
            let mut queue = waiting.borrow_mut();
            let Some(front) = queue.front_mut() else {
                return Err(BackendError::Protocol {
                    addr: addr.to_string(),
                    reason: "reply without a request".into(),
                });
            };
            if front.skip > 0 {
                front.skip -= 1;
                continue;
            }
            if let Some(w) = queue.pop_front() {
                if let Err(Ok(unwanted)) = w.reply.send(Ok(reply)) {
                    dropped_large = dropped_large.max(unwanted.len());
                }
            }
            if drain.closing.get() && queue.is_empty() {
                drain.done.notify_one();
            }
        }
        // Give back the memory of a large reply: an empty buffer still pointing into the
        // allocation of a reply it handed over (whatever room is left at its end) would keep
        // that allocation alive after the reply is gone.
        if buf.is_empty() && (buf.capacity() > KEEP_BUFFER || largest > KEEP_BUFFER) {
            buf = BytesMut::with_capacity(READ_CHUNK);
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK.max(buf.len()));
        }
        crate::memory::released(dropped_large);
        let read = match (command_timeout, deadline.as_mut()) {
            (Some(limit), Some(deadline)) => tokio::select! {
                biased;
                read = reader.read_buf(&mut buf) => {
                    last_read = Instant::now();
                    read
                }
                () = deadline.as_mut() => {
                    let oldest = waiting.borrow().front().and_then(|w| w.sent_at);
                    match read_timeout(Instant::now(), last_read, oldest, limit) {
                        ReadTimeout::Expired => {
                            return Err(BackendError::Timeout {
                                addr: addr.to_string(),
                                ms: limit.as_millis() as u64,
                            })
                        }
                        ReadTimeout::WaitUntil(at) => deadline.as_mut().reset(at),
                    }
                    continue;
                }
            },
            _ => reader.read_buf(&mut buf).await,
        };
        match read {
            Ok(0) => {
                return Err(BackendError::Lost {
                    addr: addr.to_string(),
                })
            }
            Ok(_) => {}
            Err(_) => {
                return Err(BackendError::Lost {
                    addr: addr.to_string(),
                })
            }
        }
    }
}

/// What the command timeout's timer, having fired, decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadTimeout {
    /// The connection is stuck: nothing was read for the whole `limit`, and the oldest timed
    /// request has waited at least as long.
    Expired,
    /// Not yet: look again then.
    WaitUntil(Instant),
}

/// The timeout counts from the last read rather than from each request: a large reply that
/// arrives slowly is progress, not a stuck node. `oldest`: when the oldest request still
/// waiting was written, if the timeout applies to it.
fn read_timeout(
    now: Instant,
    last_read: Instant,
    oldest: Option<Instant>,
    limit: Duration,
) -> ReadTimeout {
    let quiet = now.saturating_duration_since(last_read) >= limit;
    match oldest {
        Some(sent) if quiet && now.saturating_duration_since(sent) >= limit => ReadTimeout::Expired,
        Some(sent) => ReadTimeout::WaitUntil(last_read.max(sent) + limit),
        None => ReadTimeout::WaitUntil(last_read.max(now) + limit),
    }
}

#[cfg(test)]
pub(super) mod tests;

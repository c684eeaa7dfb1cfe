//! The pipe against a scripted node on the far end of an in-memory stream, with tokio's clock
//! paused (it jumps ahead whenever every task waits, so timeouts take no real time). The fake
//! node and connector here serve the pool's tests too.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::backend::reply_slot as oneshot;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::LocalSet;
use tokio::time::Instant;

use super::*;
use crate::resp::Protocol;

/// The node's address in every test (only error messages and logs show it).
pub(crate) const ADDR: &str = "10.0.0.1:6379";
const ASKING_BYTES: &[u8] = b"*1\r\n$6\r\nASKING\r\n";

pub(crate) fn addr() -> NodeAddr {
    NodeAddr::from(ADDR)
}

pub(crate) fn settings(command_timeout: Option<Duration>) -> Rc<PipeSettings> {
    Rc::new(PipeSettings {
        credentials: Default::default(),
        readonly: false,
        protocol: Protocol::Resp2,
        connect_timeout: Duration::from_secs(1),
        command_timeout,
    })
}

/// Runs a test body where `spawn_local` works (pipes run on a worker's `LocalSet`).
pub(crate) async fn local<F: Future>(body: F) -> F::Output {
    LocalSet::new().run_until(body).await
}

/// Lets every task run until all of them wait; the paused clock moves only 1 ms.
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Awaits `future`, failing the test rather than hanging when it never completes (the paused
/// clock jumps to the limit at once).
pub(crate) async fn within<F: Future>(future: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(3600), future).await {
        Ok(output) => output,
        Err(_) => panic!("did not complete"),
    }
}

/// A command in RESP, as a client would send it.
pub(crate) fn cmd(args: &[&str]) -> Bytes {
    let mut out = format!("*{}\r\n", args.len());
    for arg in args {
        out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    Bytes::from(out)
}

pub(crate) fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The reply a request got, failing the test if it has none yet.
pub(crate) fn reply_now(rx: &mut oneshot::Receiver<ReplyResult>) -> ReplyResult {
    match rx.try_recv() {
        Ok(result) => result,
        Err(e) => panic!("no reply yet: {e:?}"),
    }
}

/// True while a request still waits for its reply.
pub(crate) fn pending(rx: &mut oneshot::Receiver<ReplyResult>) -> bool {
    matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Empty))
}

pub(crate) fn ok(bytes: &[u8]) -> ReplyResult {
    Ok(Bytes::copy_from_slice(bytes))
}

/// Compares results by their exact variant, address and bytes (`BackendError` has no `Eq`).
#[track_caller]
pub(crate) fn assert_result(got: ReplyResult, want: ReplyResult) {
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
}

pub(crate) fn lost() -> ReplyResult {
    Err(BackendError::Lost {
        addr: ADDR.to_string(),
    })
}

pub(crate) fn not_sent() -> ReplyResult {
    Err(BackendError::NotSent {
        addr: ADDR.to_string(),
    })
}

/// The pipe's write half, recording each write it makes so a test sees how requests were
/// batched.
pub(crate) struct Recorder {
    inner: WriteHalf<DuplexStream>,
    writes: Rc<RefCell<Vec<Vec<u8>>>>,
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.writes.borrow_mut().push(buf[..n].to_vec());
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type Halves = (ReadHalf<DuplexStream>, Recorder);

/// The node's end of one connection: reads what the pipe wrote and writes scripted replies.
pub(crate) struct FakeNode {
    stream: DuplexStream,
    writes: Rc<RefCell<Vec<Vec<u8>>>>,
    received: BytesMut,
}

impl FakeNode {
    /// Waits until the pipe has written `expected.len()` more bytes and checks that they are
    /// exactly `expected`.
    #[track_caller]
    pub(crate) fn expect<'a>(&'a mut self, expected: &'a [u8]) -> impl Future<Output = ()> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            while self.received.len() < expected.len() {
                let read = within(self.stream.read_buf(&mut self.received)).await;
                if read.expect("read from the pipe") == 0 {
                    break;
                }
            }
            let got = self
                .received
                .split_to(self.received.len().min(expected.len()));
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(expected),
                "what the node received (expected at {caller})"
            );
        }
    }

    /// Checks that the pipe wrote nothing more and has not closed the connection.
    pub(crate) async fn expect_nothing(&mut self) {
        settle().await;
        let mut byte = [0u8; 1];
        let read = futures_util::FutureExt::now_or_never(self.stream.read(&mut byte));
        assert!(
            read.is_none(),
            "the pipe wrote or closed: {read:?} {byte:?}"
        );
    }

    /// Checks that the pipe closed the connection without writing anything more.
    pub(crate) async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        within(self.stream.read_to_end(&mut rest))
            .await
            .expect("read from the pipe");
        assert_eq!(String::from_utf8_lossy(&rest), "", "written before closing");
    }

    pub(crate) async fn reply(&mut self, bytes: &[u8]) {
        within(self.stream.write_all(bytes))
            .await
            .expect("write to the pipe");
    }

    /// Every write the pipe made on this connection, in order.
    pub(crate) fn writes(&self) -> Vec<String> {
        self.writes
            .borrow()
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect()
    }
}

/// A connection whose far end is a [`FakeNode`]; `capacity` bytes fit in each direction before
/// a write waits for the other side to read.
fn connection(capacity: usize) -> (FakeNode, Halves) {
    let (near, far) = tokio::io::duplex(capacity);
    let (reader, writer) = tokio::io::split(near);
    let writes = Rc::new(RefCell::new(Vec::new()));
    let node = FakeNode {
        stream: far,
        writes: writes.clone(),
        received: BytesMut::new(),
    };
    (
        node,
        (
            reader,
            Recorder {
                inner: writer,
                writes,
            },
        ),
    )
}

/// Hands each connect the next scripted outcome: a connection to a [`FakeNode`] or an error.
/// A connect with nothing scripted fails, so an unexpected reconnect shows in `attempts`.
#[derive(Clone, Default)]
pub(crate) struct FakeConnector {
    script: Rc<RefCell<VecDeque<Result<Halves, BackendError>>>>,
    attempts: Rc<Cell<usize>>,
}

impl FakeConnector {
    /// Scripts the next connect to succeed; returns the node's end of it.
    pub(crate) fn accept(&self) -> FakeNode {
        self.accept_with_capacity(64 * 1024)
    }

    pub(crate) fn accept_with_capacity(&self, capacity: usize) -> FakeNode {
        let (node, halves) = connection(capacity);
        self.script.borrow_mut().push_back(Ok(halves));
        node
    }

    /// Scripts the next connect to fail with `BackendError::Connect { reason }`.
    pub(crate) fn refuse(&self, reason: &str) {
        self.script
            .borrow_mut()
            .push_back(Err(BackendError::Connect {
                addr: ADDR.to_string(),
                reason: reason.to_string(),
            }));
    }

    /// How many connects the pipes made so far.
    pub(crate) fn attempts(&self) -> usize {
        self.attempts.get()
    }
}

impl Connector for FakeConnector {
    type Reader = ReadHalf<DuplexStream>;
    type Writer = Recorder;

    async fn connect(&self, addr: &NodeAddr, _: &PipeSettings) -> Result<Halves, BackendError> {
        self.attempts.set(self.attempts.get() + 1);
        let next = self.script.borrow_mut().pop_front();
        next.unwrap_or_else(|| {
            Err(BackendError::Connect {
                addr: addr.to_string(),
                reason: "no connection scripted".into(),
            })
        })
    }
}

/// A pipe over `connector`, and a count of its `on_close` calls.
fn open(connector: &FakeConnector, command_timeout: Option<Duration>) -> (Pipe, Rc<Cell<u32>>) {
    let closes = Rc::new(Cell::new(0));
    let counter = closes.clone();
    let pipe = Pipe::open_with(
        connector.clone(),
        addr(),
        settings(command_timeout),
        false,
        move |_| counter.set(counter.get() + 1),
    );
    (pipe, closes)
}

#[tokio::test(start_paused = true)]
async fn requests_queued_while_the_writer_waits_go_out_in_one_write() {
    local(async {
        let connector = FakeConnector::default();
        let mut node = connector.accept();
        let (pipe, _) = open(&connector, None);
        let (a, b, c, d, e) = (
            cmd(&["GET", "a"]),
            cmd(&["GET", "b"]),
            cmd(&["SET", "c", "1"]),
            cmd(&["GET", "d"]),
            cmd(&["GET", "e"]),
        );
        // Queued before the connection task has run at all.
        let mut rx_a = pipe.send(a.clone(), false);
        let mut rx_b = pipe.send(b.clone(), false);
        let mut rx_c = pipe.send(c.clone(), false);
        node.expect(&concat(&[&a, &b, &c])).await;
        // Then one request alone, and two queued while the writer is idle again.
        let mut rx_d = pipe.send(d.clone(), false);
        node.expect(&d).await;
        let mut rx_e = pipe.send(e.clone(), false);
        let mut rx_f = pipe.send(a.clone(), false);
        node.expect(&concat(&[&e, &a])).await;
        let batch = |parts: &[&[u8]]| String::from_utf8_lossy(&concat(parts)).into_owned();
        assert_eq!(
            node.writes(),
            [batch(&[&a, &b, &c]), batch(&[&d]), batch(&[&e, &a])]
        );

        node.reply(b"$1\r\nA\r\n$1\r\nB\r\n+OK\r\n$1\r\nD\r\n$-1\r\n$1\r\nF\r\n")
            .await;
        settle().await;
        assert_result(reply_now(&mut rx_a), ok(b"$1\r\nA\r\n"));
        assert_result(reply_now(&mut rx_b), ok(b"$1\r\nB\r\n"));
        assert_result(reply_now(&mut rx_c), ok(b"+OK\r\n"));
        assert_result(reply_now(&mut rx_d), ok(b"$1\r\nD\r\n"));
        assert_result(reply_now(&mut rx_e), ok(b"$-1\r\n"));
        assert_result(reply_now(&mut rx_f), ok(b"$1\r\nF\r\n"));
    })
    .await;
}

/// Replies of several shapes, so that splits fall inside headers, payloads and nested arrays.
const REPLIES: [&[u8]; 5] = [
    b"+OK\r\n",
    b"$5\r\nhello\r\n",
    b"*2\r\n$1\r\na\r\n:12\r\n",
    b"-MOVED 3999 10.0.0.2:6379\r\n",
    b"*-1\r\n",
];

/// Sends one request per reply in `REPLIES`, then lets the node answer in reads that end at
/// `cuts`; after each read, exactly the requests whose reply is complete have it.
async fn answer_in_pieces(cuts: &[usize]) {
    let connector = FakeConnector::default();
    let mut node = connector.accept();
    let (pipe, _) = open(&connector, None);
    let requests: Vec<Bytes> = (0..REPLIES.len())
        .map(|i| cmd(&["GET", &format!("key{i}")]))
        .collect();
    let mut rxs: Vec<_> = requests
        .iter()
        .map(|request| pipe.send(request.clone(), false))
        .collect();
    let parts: Vec<&[u8]> = requests.iter().map(|r| &r[..]).collect();
    node.expect(&concat(&parts)).await;

    let all = concat(&REPLIES);
    let ends: Vec<usize> = REPLIES
        .iter()
        .scan(0, |end, reply| {
            *end += reply.len();
            Some(*end)
        })
        .collect();
    let mut from = 0;
    let mut delivered = 0;
    for &cut in cuts.iter().chain([&all.len()]) {
        node.reply(&all[from..cut]).await;
        settle().await;
        from = cut;
        while delivered < REPLIES.len() && ends[delivered] <= cut {
            assert_result(reply_now(&mut rxs[delivered]), ok(REPLIES[delivered]));
            delivered += 1;
        }
        for rx in &mut rxs[delivered..] {
            assert!(pending(rx), "a reply was delivered before it was complete");
        }
    }
    assert_eq!(delivered, REPLIES.len());
    node.expect_nothing().await;
}

#[tokio::test(start_paused = true)]
async fn replies_go_to_requests_in_order_whatever_the_reads() {
    local(async {
        let total = concat(&REPLIES).len();
        // Every reply in one read.
        answer_in_pieces(&[]).await;
        // Two reads, split at every byte.
        for cut in 1..total {
            answer_in_pieces(&[cut]).await;
        }
        // One byte per read.
        answer_in_pieces(&(1..total).collect::<Vec<_>>()).await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn asking_goes_right_before_its_request_and_its_ack_reaches_nobody() {
    local(async {
        let connector = FakeConnector::default();
        let mut node = connector.accept();
        let (pipe, _) = open(&connector, None);
        let (a, b, c) = (cmd(&["GET", "a"]), cmd(&["GET", "b"]), cmd(&["GET", "c"]));
        let mut rx_a = pipe.send(a.clone(), false);
        let mut rx_b = pipe.send(b.clone(), true);
        let mut rx_c = pipe.send(c.clone(), false);
        node.expect(&concat(&[&a, ASKING_BYTES, &b, &c])).await;

        node.reply(b"$1\r\nA\r\n+OK\r\n").await;
        settle().await;
        assert_result(reply_now(&mut rx_a), ok(b"$1\r\nA\r\n"));
        assert!(pending(&mut rx_b), "the ASKING ack was delivered");
        node.reply(b"$1\r\nB\r\n$1\r\nC\r\n").await;
        settle().await;
        assert_result(reply_now(&mut rx_b), ok(b"$1\r\nB\r\n"));
        assert_result(reply_now(&mut rx_c), ok(b"$1\r\nC\r\n"));
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_connection_fails_written_requests_as_lost_and_unwritten_ones_as_not_sent() {
    local(async {
        let connector = FakeConnector::default();
        // Room for a few small requests only, so a large one blocks the writer half-way.
        let mut node = connector.accept_with_capacity(64);
        let (pipe, closes) = open(&connector, None);
        let a = cmd(&["GET", "a"]);
        let b = cmd(&["SET", "b", "1"]);
        let large = cmd(&["SET", "large", &"x".repeat(200)]);
        let mut rx_a = pipe.send(a.clone(), false);
        let mut rx_b = pipe.send(b.clone(), false);
        node.expect(&concat(&[&a, &b])).await;
        node.reply(b"$1\r\nA\r\n").await;
        let mut rx_large = pipe.send(large.clone(), false);
        node.expect(&large[..10]).await;
        settle().await;
        // The writer is stuck in the large write, so these stay queued.
        let mut rx_c = pipe.send(cmd(&["GET", "c"]), false);
        let mut rx_d = pipe.send(cmd(&["GET", "d"]), true);
        settle().await;
        assert!(pending(&mut rx_c) && pending(&mut rx_d));

        drop(node);
        settle().await;
        assert_result(reply_now(&mut rx_a), ok(b"$1\r\nA\r\n"));
        // Written (wholly or in part): the node may have run them.
        let written_b = reply_now(&mut rx_b);
        assert!(!written_b
            .as_ref()
            .is_err_and(BackendError::certainly_not_sent));
        assert_result(written_b, lost());
        assert_result(reply_now(&mut rx_large), lost());
        // Never written: safe to send again.
        let queued_c = reply_now(&mut rx_c);
        assert!(queued_c
            .as_ref()
            .is_err_and(BackendError::certainly_not_sent));
        assert_result(queued_c, not_sent());
        assert_result(reply_now(&mut rx_d), not_sent());
        assert!(pipe.state().is_closed());
        assert!(pipe.state().connect_error().is_none());
        assert_eq!(closes.get(), 1);

        // The task is gone: a later request is refused without being written anywhere.
        let mut late = pipe.send(cmd(&["GET", "e"]), false);
        let late = reply_now(&mut late);
        assert!(late.as_ref().is_err_and(BackendError::certainly_not_sent));
        assert_eq!(connector.attempts(), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_node_that_never_answers_times_out_written_requests_but_not_an_untimed_one() {
    local(async {
        let limit = Duration::from_millis(100);
        let connector = FakeConnector::default();
        let mut node = connector.accept();
        let (pipe, closes) = open(&connector, Some(limit));
        let (a, b) = (cmd(&["GET", "a"]), cmd(&["GET", "b"]));
        let start = Instant::now();
        let rx_a = pipe.send(a.clone(), false);
        let mut rx_b = pipe.send(b.clone(), false);
        node.expect(&concat(&[&a, &b])).await;
        let timeout = Err(BackendError::Timeout {
            addr: ADDR.to_string(),
            ms: 100,
        });
        assert_result(within(rx_a).await.expect("a reply"), timeout.clone());
        assert_eq!(start.elapsed(), limit);
        assert_result(reply_now(&mut rx_b), timeout);
        node.expect_closed().await;
        assert_eq!(closes.get(), 1);

        // WAIT takes as long as its own timeout: the command timeout does not apply.
        let mut node = connector.accept();
        let (pipe, closes) = open(&connector, Some(limit));
        let wait = cmd(&["WAIT", "1", "0"]);
        let mut rx_wait = pipe.send_untimed(wait.clone());
        node.expect(&wait).await;
        tokio::time::sleep(limit * 50).await;
        assert!(pending(&mut rx_wait));
        assert!(!pipe.state().is_closed());
        node.reply(b":1\r\n").await;
        settle().await;
        assert_result(reply_now(&mut rx_wait), ok(b":1\r\n"));
        assert_eq!(closes.get(), 0);
    })
    .await;
}

/// The timer restarts with each read rather than with each request, so a request written
/// while the connection was idle fails between one and two timeouts after it was written.
#[tokio::test(start_paused = true)]
async fn a_request_written_mid_period_times_out_within_two_periods() {
    local(async {
        let limit = Duration::from_millis(100);
        let connector = FakeConnector::default();
        let mut node = connector.accept();
        let (pipe, _) = open(&connector, Some(limit));
        settle().await; // connected, reader waiting with its timer started
        tokio::time::sleep(limit * 6 / 10).await;
        let a = cmd(&["GET", "a"]);
        let written = Instant::now();
        let rx = pipe.send(a.clone(), false);
        node.expect(&a).await;
        let result = within(rx).await.expect("a reply");
        assert!(matches!(result, Err(BackendError::Timeout { ms: 100, .. })));
        let waited = written.elapsed();
        assert!(waited >= limit && waited < limit * 2, "{waited:?}");
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_caller_left_before_it_was_written_is_never_written() {
    local(async {
        let connector = FakeConnector::default();
        let mut node = connector.accept();
        let (pipe, _) = open(&connector, None);
        drop(pipe.send(cmd(&["SET", "gone", "1"]), false));
        node.expect_nothing().await;
        assert!(node.writes().is_empty());

        let b = cmd(&["GET", "b"]);
        drop(pipe.send(cmd(&["SET", "gone", "2"]), true));
        let mut rx_b = pipe.send(b.clone(), false);
        node.expect(&b).await;
        node.reply(b"$1\r\nB\r\n").await;
        settle().await;
        assert_result(reply_now(&mut rx_b), ok(b"$1\r\nB\r\n"));
        assert_eq!(node.writes(), [String::from_utf8_lossy(&b)]);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_reply_without_a_request_closes_the_connection() {
    local(async {
        let connector = FakeConnector::default();
        let mut node = connector.accept();
        let (pipe, closes) = open(&connector, None);
        let a = cmd(&["GET", "a"]);
        let mut rx_a = pipe.send(a.clone(), false);
        node.expect(&a).await;
        node.reply(b"$1\r\nA\r\n+EXTRA\r\n").await;
        node.expect_closed().await;
        assert_result(reply_now(&mut rx_a), ok(b"$1\r\nA\r\n"));
        assert!(pipe.state().is_closed());
        assert_eq!(closes.get(), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_malformed_reply_fails_the_written_requests_as_a_protocol_error() {
    local(async {
        let connector = FakeConnector::default();
        let mut node = connector.accept();
        let (pipe, _) = open(&connector, None);
        let (a, b) = (cmd(&["GET", "a"]), cmd(&["GET", "b"]));
        let rx_a = pipe.send(a.clone(), false);
        let mut rx_b = pipe.send(b.clone(), false);
        node.expect(&concat(&[&a, &b])).await;
        node.reply(b"?what\r\n").await;
        let got = within(rx_a).await.expect("a reply");
        assert!(
            matches!(&got, Err(BackendError::Protocol { addr, .. }) if addr == ADDR),
            "{got:?}"
        );
        assert_result(reply_now(&mut rx_b), got);
        node.expect_closed().await;
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_pipe_whose_handles_are_gone_delivers_what_it_owes_then_closes() {
    local(async {
        let connector = FakeConnector::default();
        let mut node = connector.accept();
        let (pipe, closes) = open(&connector, None);
        let a = cmd(&["WAIT", "1", "0"]);
        let mut rx_a = pipe.send_untimed(a.clone());
        drop(pipe);
        node.expect(&a).await;
        node.expect_nothing().await;
        assert_eq!(closes.get(), 0, "closed with a reply owed");
        node.reply(b":1\r\n").await;
        node.expect_closed().await;
        assert_result(reply_now(&mut rx_a), ok(b":1\r\n"));
        assert_eq!(closes.get(), 1);
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_connect_fails_the_queued_requests_as_not_sent() {
    local(async {
        let connector = FakeConnector::default();
        connector.refuse("connection refused");
        let (pipe, closes) = open(&connector, None);
        let mut rx = pipe.send(cmd(&["GET", "a"]), false);
        settle().await;
        let got = reply_now(&mut rx);
        assert!(got.as_ref().is_err_and(BackendError::certainly_not_sent));
        assert_result(
            got,
            Err(BackendError::Connect {
                addr: ADDR.to_string(),
                reason: "connection refused".into(),
            }),
        );
        let (at, reason) = pipe.state().connect_error().expect("a connect error");
        assert_eq!(reason, "connection refused");
        assert_eq!(at.elapsed(), Duration::from_millis(1));
        assert!(pipe.state().is_closed());
        assert_eq!(closes.get(), 1);
    })
    .await;
}

#[test]
fn the_read_timeout_expires_only_when_reads_stopped_and_the_oldest_request_waited_as_long() {
    let limit = Duration::from_millis(100);
    let base = Instant::now();
    let at = |ms: u64| base + Duration::from_millis(ms);
    // (now, last read, oldest timed request written at, decision)
    let cases = [
        // Quiet for the limit and the request waited as long: stuck.
        (300, 200, Some(150), ReadTimeout::Expired),
        (300, 200, Some(200), ReadTimeout::Expired),
        // Quiet, but the request was written mid-period: its own limit, not the next period.
        (300, 200, Some(260), ReadTimeout::WaitUntil(at(360))),
        // Reads still arrive (a slow, large reply): the limit counts from the last read.
        (300, 250, Some(100), ReadTimeout::WaitUntil(at(350))),
        // Nothing waits (or only untimed requests): look again a limit from now.
        (300, 100, None, ReadTimeout::WaitUntil(at(400))),
        (300, 290, None, ReadTimeout::WaitUntil(at(400))),
    ];
    for (now, last_read, oldest, want) in cases {
        let got = read_timeout(at(now), at(last_read), oldest.map(at), limit);
        assert_eq!(
            got, want,
            "now {now} last read {last_read} oldest {oldest:?}"
        );
    }
}

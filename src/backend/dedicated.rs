//! Connections that one client holds for the length of one command that parks the connection
//! (BLPOP, XREAD BLOCK, ...), so a blocked client never stalls the shared pipes.
//!
//! A connection goes back to a small per-node idle list after a complete reply (job queues
//! call BLPOP in a loop); one whose command was cancelled (the client went away) is dropped,
//! which closes it and frees the node's blocked client at once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::addr::NodeAddr;
use super::connect::connect;
use super::pipe::PipeSettings;
use super::stream::BackendStream;
use super::BackendError;
use crate::resp::ReplyScanner;

const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
const CLIENT_ID: &[u8] = b"*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";
/// Idle dedicated connections kept per node and worker.
const MAX_IDLE_PER_NODE: usize = 8;
const READ_CHUNK: usize = 4 * 1024;

pub struct DedicatedPool {
    idle: RefCell<HashMap<NodeAddr, Vec<BackendStream>>>,
    settings: Rc<PipeSettings>,
}

impl DedicatedPool {
    pub fn new(settings: Rc<PipeSettings>) -> DedicatedPool {
        DedicatedPool {
            idle: RefCell::new(HashMap::new()),
            settings,
        }
    }

    /// Sends one request on a connection of its own and waits for its reply, however long
    /// the node takes (a blocking command's timeout is the node's business).
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection, which closes it.
    pub async fn round_trip(
        &self,
        addr: &NodeAddr,
        payload: &[u8],
        asking: bool,
    ) -> Result<Bytes, BackendError> {
        self.round_trip_with(addr, payload, asking, None).await
    }

    /// [`round_trip`](Self::round_trip), first telling `noted` the connection's id on its node
    /// (`CLIENT ID`, pipelined in front of the request), as soon as the node answers it and
    /// while the request may still be waiting: for `CLIENT UNBLOCK`.
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection, which closes it.
    pub async fn round_trip_noting_id(
        &self,
        addr: &NodeAddr,
        payload: &[u8],
        asking: bool,
        noted: &dyn Fn(u64),
    ) -> Result<Bytes, BackendError> {
        self.round_trip_with(addr, payload, asking, Some(noted))
            .await
    }

    async fn round_trip_with(
        &self,
        addr: &NodeAddr,
        payload: &[u8],
        asking: bool,
        noted: Option<&dyn Fn(u64)>,
    ) -> Result<Bytes, BackendError> {
        let reused = self.idle.borrow_mut().get_mut(addr).and_then(Vec::pop);
        let fresh = reused.is_none();
        let mut stream = match reused {
            Some(stream) => stream,
            None => self.open(addr).await?,
        };
        let result = exchange(&mut stream, addr, payload, asking, noted).await;
        match result {
            Err(BackendError::Lost { .. }) if !fresh => {
                // An idle connection the node had closed meanwhile (timeout, restart): the
                // write went nowhere, so one fresh connection may try again.
                let mut stream = self.open(addr).await?;
                let reply = exchange(&mut stream, addr, payload, asking, noted).await?;
                self.keep(addr, stream);
                Ok(reply)
            }
            Ok(reply) => {
                self.keep(addr, stream);
                Ok(reply)
            }
            Err(e) => Err(e),
        }
    }

    /// Closes the idle connections to `addr`: they lead to a process its name no longer
    /// names (it answered MOVED to its own address); new ones resolve the name again.
    pub fn forget(&self, addr: &NodeAddr) {
        self.idle.borrow_mut().remove(addr);
    }

    /// A connection to `addr` for the caller to hold (a WATCH, a transaction): an idle one,
    /// or a new one.
    pub async fn checkout(&self, addr: &NodeAddr) -> Result<BackendStream, BackendError> {
        let reused = self.idle.borrow_mut().get_mut(addr).and_then(Vec::pop);
        match reused {
            Some(stream) => Ok(stream),
            None => self.open(addr).await,
        }
    }

    async fn open(&self, addr: &NodeAddr) -> Result<BackendStream, BackendError> {
        connect(
            addr,
            &self.settings.credentials,
            self.settings.connect_timeout,
            false,
            self.settings.protocol,
        )
        .await
    }

    /// Gives back a connection whose last exchange completed (no reply left unread).
    pub fn checkin(&self, addr: &NodeAddr, stream: BackendStream) {
        self.keep(addr, stream);
    }

    fn keep(&self, addr: &NodeAddr, stream: BackendStream) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr.clone()).or_default();
        if list.len() < MAX_IDLE_PER_NODE {
            list.push(stream);
        }
    }
}

/// One request (after `ASKING` when `asking`, after `CLIENT ID` when `noted`, which is told
/// the id as soon as it arrives) and its reply.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: &str,
    payload: &[u8],
    asking: bool,
    noted: Option<&dyn Fn(u64)>,
) -> Result<Bytes, BackendError> {
    let lost = |_| BackendError::Lost {
        addr: addr.to_string(),
    };
    if noted.is_some() {
        stream.write_all(CLIENT_ID).await.map_err(lost)?;
    }
    if asking {
        stream.write_all(ASKING).await.map_err(lost)?;
    }
    let count = 1 + usize::from(asking) + usize::from(noted.is_some());
    let mut on_reply = |index: usize, reply: &[u8]| {
        if let (0, Some(noted)) = (index, noted) {
            if let Some(id) = integer_reply(reply) {
                noted(id);
            }
        }
    };
    let mut replies = write_and_read(stream, addr, payload, count, &mut on_reply).await?;
    replies.pop().ok_or_else(|| BackendError::Lost {
        addr: addr.to_string(),
    })
}

/// The value of an integer reply (`:42\r\n`).
fn integer_reply(reply: &[u8]) -> Option<u64> {
    let digits = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Writes `payload` (one or more commands) and reads `count` whole replies. Generic so the
/// unit tests can run it over an in-memory stream; callers pass a [`BackendStream`].
///
/// # Cancel safety
/// Not cancel safe: replies left unread make the connection unusable; drop it.
pub async fn exchange_many<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: &str,
    payload: &[u8],
    count: usize,
) -> Result<Vec<Bytes>, BackendError> {
    write_and_read(stream, addr, payload, count, &mut |_, _| {}).await
}

/// [`exchange_many`], handing each reply to `on_reply` (with its index) as soon as it is read.
async fn write_and_read<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    addr: &str,
    payload: &[u8],
    count: usize,
    on_reply: &mut dyn FnMut(usize, &[u8]),
) -> Result<Vec<Bytes>, BackendError> {
    let lost = |_| BackendError::Lost {
        addr: addr.to_string(),
    };
    stream.write_all(payload).await.map_err(lost)?;
    // TLS keeps what the socket did not take yet; plain TCP returns at once.
    stream.flush().await.map_err(lost)?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut scanner = ReplyScanner::default();
    let mut replies = Vec::with_capacity(count);
    while replies.len() < count {
        let scanned = scanner.scan(&buf).map_err(|e| BackendError::Protocol {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
        if let Some(len) = scanned {
            let reply = buf.split_to(len).freeze();
            on_reply(replies.len(), &reply);
            replies.push(reply);
            continue;
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK.max(buf.len()));
        }
        if stream.read_buf(&mut buf).await.map_err(lost)? == 0 {
            return Err(BackendError::Lost {
                addr: addr.to_string(),
            });
        }
    }
    Ok(replies)
}

#[cfg(test)]
mod tests {
    use tokio::io::DuplexStream;

    use super::*;

    const ADDR: &str = "10.0.0.1:6379";
    const MULTI: &[u8] =
        b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*1\r\n$4\r\nEXEC\r\n";
    const REPLIES: [&[u8]; 3] = [b"+OK\r\n", b"+QUEUED\r\n", b"*1\r\n+OK\r\n"];

    /// Reads exactly what the proxy should have written, then sends `script`'s reads one by
    /// one (the node's end of the connection), then closes when `close` says so.
    async fn node(mut far: DuplexStream, expected: &[u8], script: &[&[u8]], close: bool) {
        let mut got = vec![0u8; expected.len()];
        far.read_exact(&mut got).await.expect("the request");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
        for piece in script {
            far.write_all(piece).await.expect("a reply");
            tokio::task::yield_now().await;
        }
        if !close {
            // Keep the connection open until the proxy side is done with it.
            let mut rest = Vec::new();
            let _ = far.read_to_end(&mut rest).await;
        }
    }

    async fn run(script: &[&[u8]], close: bool) -> Result<Vec<Bytes>, BackendError> {
        let (mut near, far) = tokio::io::duplex(4096);
        let proxy = async {
            let result = exchange_many(&mut near, ADDR, MULTI, REPLIES.len()).await;
            drop(near);
            result
        };
        tokio::join!(proxy, node(far, MULTI, script, close)).0
    }

    fn shown(result: Result<Vec<Bytes>, BackendError>) -> String {
        format!("{result:?}")
    }

    #[tokio::test]
    async fn exchange_many_collects_the_replies_in_order_whatever_the_reads() {
        let all = REPLIES.concat();
        let want = shown(Ok(REPLIES.iter().map(|r| Bytes::from_static(r)).collect()));
        assert_eq!(shown(run(&[&all], false).await), want);
        for cut in 1..all.len() {
            assert_eq!(shown(run(&[&all[..cut], &all[cut..]], false).await), want);
        }
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(shown(run(&bytes, false).await), want);
    }

    #[tokio::test]
    async fn exchange_many_fails_as_lost_when_the_node_closes_mid_way() {
        let all = REPLIES.concat();
        let lost = shown(Err(BackendError::Lost {
            addr: ADDR.to_string(),
        }));
        // Every length short of the whole: between replies and inside one.
        for cut in 0..all.len() {
            assert_eq!(
                shown(run(&[&all[..cut]], true).await),
                lost,
                "closed after {cut}"
            );
        }
    }

    #[tokio::test]
    async fn exchange_many_fails_on_a_malformed_reply() {
        let got = run(&[b"+OK\r\n?what\r\n"], false).await;
        assert!(
            matches!(&got, Err(BackendError::Protocol { addr, .. }) if addr == ADDR),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_noting_exchange_tells_the_connection_id_before_the_reply() {
        let (mut near, far) = tokio::io::duplex(4096);
        let blpop = b"*3\r\n$5\r\nBLPOP\r\n$1\r\nk\r\n$1\r\n0\r\n";
        let expected = [CLIENT_ID, blpop].concat();
        let noted = std::cell::Cell::new(None);
        let note = |id| noted.set(Some(id));
        let proxy = async {
            let result = exchange(&mut near, ADDR, blpop, false, Some(&note)).await;
            drop(near);
            result
        };
        let (got, ()) = tokio::join!(
            proxy,
            node(far, &expected, &[b":42\r\n", b"*-1\r\n"], false)
        );
        assert_eq!(noted.get(), Some(42));
        assert_eq!(got.ok(), Some(Bytes::from_static(b"*-1\r\n")));
    }

    #[tokio::test]
    async fn an_asking_exchange_returns_the_reply_after_the_ack() {
        let (mut near, far) = tokio::io::duplex(4096);
        let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let expected = [ASKING, get].concat();
        let proxy = async {
            let result = exchange(&mut near, ADDR, get, true, None).await;
            drop(near);
            result
        };
        let (got, ()) = tokio::join!(proxy, node(far, &expected, &[b"+OK\r\n$1\r\nv\r\n"], false));
        assert_eq!(
            format!("{got:?}"),
            format!(
                "{:?}",
                Ok::<_, BackendError>(Bytes::from_static(b"$1\r\nv\r\n"))
            )
        );
    }
}

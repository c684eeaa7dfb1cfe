//! The invalidation feed: while any client tracks (`CLIENT TRACKING ON`), one RESP3 connection
//! per primary in broadcast mode (`CLIENT TRACKING ON BCAST`), on which the node reports every
//! key that changes on it (written, expired, evicted; everything on a flush). Each report goes
//! through the process's table ([`crate::tracking`]) to the clients that read the key.
//!
//! What the feed did not hear can't be told, so whenever it stops hearing a primary (a lost
//! connection, a failover, a primary added or removed) every tracking client is told that
//! everything is invalid, once at once and again when every primary is heard once more:
//! anything read in between is dropped too. While a primary is not heard, `CLIENT TRACKING ON`
//! waits for it.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::tracking::deliver;
use super::worker::Worker;
use crate::backend::connect::{connect, Credentials};
use crate::backend::NodeAddr;
use crate::resp::{Command, Protocol, Value};

/// How often the feed looks for new or gone primaries, and whether it may stop.
const LOOK_AGAIN: Duration = Duration::from_millis(100);
/// The pause before a lost primary's connection is opened again.
const RECONNECT_AFTER: Duration = Duration::from_millis(200);
/// The feed connections' name on the nodes (`CLIENT LIST`).
pub const FEED_NAME: &[u8] = b"slotproxy-invalidations";
/// A report larger than this is not a key list any node sends: the connection is dropped
/// (and everything invalidated) rather than buffered without end.
const MAX_REPORT: usize = 64 * 1024 * 1024;

enum Event {
    /// The node accepted broadcast tracking: its changes are heard from now on.
    Heard(NodeAddr),
    Changed(Vec<Bytes>),
    /// A flush.
    Everything,
    Lost(NodeAddr),
}

/// Runs until no client tracks.
pub async fn run(worker: Rc<Worker>) {
    let shared = worker.shared.clone();
    tracing::info!("client tracking: opening the invalidation feed on every primary");
    let (events_tx, mut events) = mpsc::unbounded_channel();
    // Each primary's connection task, and whether it is heard.
    let mut feeds: HashMap<NodeAddr, (JoinHandle<()>, bool)> = HashMap::new();
    // Every primary was heard at some point: losing one later calls for a flush on regaining.
    let mut ever_covered = false;
    let mut gap = false;
    let mut look = tokio::time::interval(LOOK_AGAIN);
    loop {
        if shared.tracking.feed_may_stop() {
            for (_, (task, _)) in feeds.drain() {
                task.abort();
            }
            tracing::info!("client tracking: no client tracks any more; invalidation feed closed");
            return;
        }
        let primaries = shared.topology.map().primaries();
        let before = feeds.len();
        feeds.retain(|addr, (task, _)| {
            let keep = primaries.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        let mut changed = feeds.len() != before;
        for primary in &primaries {
            if !feeds.contains_key(primary) {
                let task = tokio::task::spawn_local(listen(
                    primary.clone(),
                    shared.topology.credentials().clone(),
                    shared.config.connect_timeout(),
                    events_tx.clone(),
                ));
                feeds.insert(primary.clone(), (task, false));
                changed = true;
            }
        }
        if changed && ever_covered {
            lose_sight(&shared, &mut gap);
        }
        let covered = !feeds.is_empty() && feeds.values().all(|(_, heard)| *heard);
        if covered && gap {
            // Regained: what was read while a primary went unheard may be stale.
            let deliveries = shared.tracking.table().invalidate_all();
            deliver(&shared, deliveries);
            gap = false;
        }
        ever_covered |= covered;
        shared.tracking.set_covered(covered);
        tokio::select! {
            _ = look.tick() => {}
            Some(event) = events.recv() => match event {
                Event::Heard(addr) => {
                    if let Some((_, heard)) = feeds.get_mut(&addr) {
                        *heard = true;
                    }
                }
                Event::Changed(keys) => {
                    let deliveries = shared.tracking.table().invalidate(&keys);
                    deliver(&shared, deliveries);
                }
                Event::Everything => {
                    let deliveries = shared.tracking.table().invalidate_all();
                    deliver(&shared, deliveries);
                }
                Event::Lost(addr) => {
                    // Its task ends right after this: the next look replaces it (or drops
                    // it, if no longer a primary) and tells every client.
                    if let Some((_, heard)) = feeds.get_mut(&addr) {
                        *heard = false;
                    }
                    shared.tracking.set_covered(false);
                }
            },
        }
    }
}

/// A primary is no longer heard: everything tracked so far is invalid.
fn lose_sight(shared: &crate::shared::Shared, gap: &mut bool) {
    metrics::counter!("slotproxy_tracking_feed_gaps_total").increment(1);
    // The table is unlocked before delivering: delivery locks it again for a broken redirect.
    let deliveries = shared.tracking.table().invalidate_all();
    deliver(shared, deliveries);
    *gap = true;
}

/// One primary's broadcast-tracking connection: reports its invalidations until it breaks.
async fn listen(
    addr: NodeAddr,
    credentials: Credentials,
    timeout: Duration,
    events: mpsc::UnboundedSender<Event>,
) {
    if let Err(reason) = listen_until_lost(&addr, &credentials, timeout, &events).await {
        tracing::warn!(node = %addr, %reason, "client tracking: invalidation feed connection lost");
    }
    tokio::time::sleep(RECONNECT_AFTER).await;
    let _ = events.send(Event::Lost(addr));
}

async fn listen_until_lost(
    addr: &NodeAddr,
    credentials: &Credentials,
    timeout: Duration,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(), String> {
    let mut feed = FeedConnection::open(addr, credentials, timeout, FEED_NAME, &[]).await?;
    if events.send(Event::Heard(addr.clone())).is_err() {
        return Ok(());
    }
    loop {
        let event = match feed.next().await? {
            Report::Keys(keys) => Event::Changed(keys),
            Report::Everything => Event::Everything,
        };
        if events.send(event).is_err() {
            return Ok(());
        }
    }
}

/// What a broadcast-tracking connection reports.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Report {
    /// These keys changed (written, expired, evicted).
    Keys(Vec<Bytes>),
    /// A flush: everything changed.
    Everything,
}

/// One RESP3 connection to a node in broadcast tracking mode (`CLIENT TRACKING ON BCAST
/// [PREFIX p]...`), shared by the client-tracking feed and the near cache
/// (`super::near_cache`), which differ in what they do with the reports.
pub(crate) struct FeedConnection {
    stream: crate::backend::stream::BackendStream,
    buf: BytesMut,
}

impl FeedConnection {
    /// Connects, names the connection `name` (for the node's `CLIENT LIST`) and turns broadcast
    /// tracking on for `prefixes` (none: every key). Returns once the node accepted it: every
    /// change on the node after that is reported on this connection.
    pub(crate) async fn open(
        addr: &NodeAddr,
        credentials: &Credentials,
        timeout: Duration,
        name: &[u8],
        prefixes: &[Bytes],
    ) -> Result<FeedConnection, String> {
        let stream = connect(addr, credentials, timeout, false, Protocol::Resp3)
            .await
            .map_err(|e| e.to_string())?;
        let mut feed = FeedConnection {
            stream,
            buf: BytesMut::with_capacity(4096),
        };
        let setname = Command::from_args(&[b"CLIENT".as_slice(), b"SETNAME", name]);
        let mut on: Vec<&[u8]> = vec![b"CLIENT", b"TRACKING", b"ON", b"BCAST"];
        for prefix in prefixes {
            on.push(b"PREFIX");
            on.push(prefix);
        }
        let mut request = setname.raw().to_vec();
        request.extend_from_slice(Command::from_args(&on).raw());
        feed.send(&request).await?;
        // SETNAME's reply (whatever it says), then TRACKING's.
        let mut owed = 2;
        while owed > 0 {
            let value = feed.next_value().await?;
            if owed == 2 && !matches!(value, Value::Array(_)) {
                owed = 1;
                continue;
            }
            if let Value::Error(e) = &value {
                return Err(format!(
                    "the node refused CLIENT TRACKING ON BCAST: {}",
                    String::from_utf8_lossy(e)
                ));
            }
            owed = 0;
        }
        Ok(feed)
    }

    /// Writes `bytes` (a `PING`, for a heartbeat).
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| e.to_string())?;
        self.stream.flush().await.map_err(|e| e.to_string())
    }

    /// The next invalidation report; other replies and pushes are skipped.
    ///
    /// # Cancel safety
    /// Safe: it waits only in a read into the connection's buffer; what was read stays there.
    pub(crate) async fn next(&mut self) -> Result<Report, String> {
        loop {
            if let Some(report) = report(self.next_value().await?) {
                return Ok(report);
            }
        }
    }

    /// The next value of any kind (a reply or a push). Cancel safety: as [`Self::next`].
    pub(crate) async fn next_value(&mut self) -> Result<Value, String> {
        loop {
            if let Some((value, len)) = Value::parse(&self.buf).map_err(|e| e.to_string())? {
                let _ = self.buf.split_to(len);
                return Ok(value);
            }
            if self.buf.len() > MAX_REPORT {
                return Err("an invalidation report past 64 MiB".into());
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(4096.max(self.buf.len()));
            }
            if self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| e.to_string())?
                == 0
            {
                return Err("the node closed the connection".into());
            }
        }
    }
}

/// What an `invalidate` push says (other pushes and replies say nothing to the feed).
pub(crate) fn report(value: Value) -> Option<Report> {
    let Value::Array(mut items) = value else {
        return None;
    };
    if items.len() != 2
        || !items[0]
            .as_bytes()
            .is_some_and(|kind| kind.eq_ignore_ascii_case(b"invalidate"))
    {
        return None;
    }
    match items.pop()? {
        Value::Nil => Some(Report::Everything),
        Value::Array(keys) => Some(Report::Keys(
            keys.into_iter()
                .filter_map(|key| match key {
                    Value::Bulk(key) | Value::Simple(key) => Some(key),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Value {
        Value::parse(raw).unwrap().unwrap().0
    }

    #[test]
    fn invalidate_pushes_name_keys_or_everything() {
        let keys = report(parse(
            b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n",
        ));
        assert!(
            matches!(keys, Some(Report::Keys(k)) if k == vec![Bytes::from("a"), Bytes::from("b")])
        );
        let all = report(parse(b">2\r\n$10\r\ninvalidate\r\n_\r\n"));
        assert_eq!(all, Some(Report::Everything));
        assert!(report(parse(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n")).is_none());
        assert!(report(parse(b"+OK\r\n")).is_none());
    }
}

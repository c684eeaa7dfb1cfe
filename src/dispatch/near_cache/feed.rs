//! The near cache's invalidation connections: one per primary per worker, in broadcast mode
//! for the cache's prefixes (`CLIENT TRACKING ON BCAST PREFIX p ...`, named
//! `slotproxy-near-cache` in the node's `CLIENT LIST`), read on the worker's own thread so a
//! report is applied to that worker's cache as soon as it is read.
//!
//! A node counts as heard from the acknowledgement of its `CLIENT TRACKING` until its
//! connection breaks, falls silent (a `PING` every second; nothing read for 3 s counts as
//! broken), or the node stops being a primary; then its entries are dropped and the
//! connection is opened again. Nothing read from a node is stored while it is not heard.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::NearCache;
use crate::backend::connect::Credentials;
use crate::backend::NodeAddr;
use crate::dispatch::invalidation_feed::{report, FeedConnection, Report};
use crate::shared::Shared;

/// The connections' name on the nodes (`CLIENT LIST`).
pub const FEED_NAME: &[u8] = b"slotproxy-near-cache";
/// How often the primaries of the slot map are compared with the connections held.
const LOOK_AGAIN: Duration = Duration::from_millis(100);
/// The pause before a lost connection is opened again.
const RECONNECT_AFTER: Duration = Duration::from_millis(200);
/// A `PING` this often keeps a silent connection honest...
const HEARTBEAT: Duration = Duration::from_secs(1);
/// ...and one that read nothing (no report, no `PONG`) for this long is taken as broken.
const SILENCE: Duration = Duration::from_secs(3);

/// The connection tasks, aborted when the feed ends (worker shutdown).
struct Connections(HashMap<NodeAddr, JoinHandle<()>>);

impl Drop for Connections {
    fn drop(&mut self) {
        for (_, task) in self.0.drain() {
            task.abort();
        }
    }
}

/// Keeps one connection per primary of the current slot map, for as long as the worker runs.
pub async fn run(cache: Rc<NearCache>, shared: Arc<Shared>) {
    let mut held = Connections(HashMap::new());
    loop {
        let primaries = shared.topology.map().primaries();
        held.0.retain(|addr, task| {
            let keep = primaries.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
                cache.node_lost(addr);
            }
            keep
        });
        for primary in primaries {
            if let Entry::Vacant(vacant) = held.0.entry(primary.clone()) {
                vacant.insert(tokio::task::spawn_local(listen(
                    primary,
                    cache.clone(),
                    shared.topology.credentials().clone(),
                    shared.config.connect_timeout(),
                )));
            }
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(LOOK_AGAIN) => {}
        }
    }
}

/// One primary's connection, opened again whenever it breaks.
async fn listen(addr: NodeAddr, cache: Rc<NearCache>, credentials: Credentials, timeout: Duration) {
    let mut down = false;
    loop {
        // The connect has its own timeout; this one also covers a node that accepts but
        // never answers the handshake (the task would otherwise wait on it for good).
        let opened = tokio::time::timeout(
            timeout + SILENCE,
            FeedConnection::open(&addr, &credentials, timeout, FEED_NAME, cache.prefixes()),
        )
        .await
        .unwrap_or_else(|_| Err("CLIENT TRACKING not answered in time".into()));
        let reason = match opened {
            Ok(mut connection) => {
                cache.node_heard(&addr);
                if down {
                    tracing::info!(node = %addr, "near cache: invalidation connection back");
                    down = false;
                }
                let reason = hear(&mut connection, &cache).await;
                cache.node_lost(&addr);
                reason
            }
            Err(reason) => reason,
        };
        if !down {
            tracing::warn!(node = %addr, %reason, "near cache: invalidation connection lost; the node's entries are dropped until it is back");
            down = true;
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Applies the connection's reports until it breaks or falls silent; returns why it ended.
async fn hear(connection: &mut FeedConnection, cache: &NearCache) -> String {
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    let mut last_read = Instant::now();
    loop {
        tokio::select! {
            value = connection.next_value() => match value {
                Ok(value) => {
                    last_read = Instant::now();
                    match report(value) {
                        Some(Report::Keys(keys)) => cache.invalidate_keys(&keys),
                        Some(Report::Everything) => cache.invalidate_all(),
                        None => {}
                    }
                }
                Err(reason) => return reason,
            },
            _ = beat.tick() => {
                if last_read.elapsed() > SILENCE {
                    return format!("nothing heard for {} s", SILENCE.as_secs());
                }
                if let Err(reason) = connection.send(b"*1\r\n$4\r\nPING\r\n").await {
                    return reason;
                }
            }
        }
    }
}

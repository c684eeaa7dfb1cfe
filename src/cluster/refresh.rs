//! The shared, atomically swapped slot map and the task that keeps it fresh.
//!
//! One refresher per proxy: it runs periodically and when asked (after a MOVED or a lost
//! connection). Asks coalesce into one refresh (single flight) and refreshes are spaced by a
//! minimum interval (debounce), so a burst of MOVED replies costs one round of queries.
//! Every known node is a candidate, not only the seeds, so losing the seed node is survived.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::slot_map::{NodeAddr, SlotMap};
use super::topology::{announced_hostnames, parse_shards, parse_slots};
use super::Slot;
use crate::backend::connect::query;
use crate::config::Credentials;
use crate::resp::Value;

pub struct Topology {
    map: ArcSwap<SlotMap>,
    wake: Notify,
    seeds: Vec<String>,
    credentials: Credentials,
    timeout: Duration,
    /// Monotonic count of published maps.
    generation: AtomicU64,
    /// Milliseconds since `started` at the last successful refresh (0 = never).
    refreshed_at_ms: AtomicU64,
    started: Instant,
}

impl Topology {
    pub fn new(seeds: Vec<String>, credentials: Credentials, timeout: Duration) -> Topology {
        Topology {
            map: ArcSwap::from_pointee(SlotMap::empty()),
            wake: Notify::new(),
            seeds,
            credentials,
            timeout,
            generation: AtomicU64::new(0),
            refreshed_at_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    /// The current map; cheap, never blocks.
    pub fn map(&self) -> arc_swap::Guard<Arc<SlotMap>> {
        self.map.load()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Time since the last successful refresh, if there was one.
    pub fn age(&self) -> Option<Duration> {
        match self.refreshed_at_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                self.started
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Asks the refresher for a new map soon (coalesced with other asks).
    pub fn request_refresh(&self) {
        self.wake.notify_one();
    }

    /// Applies a MOVED at once: routes `slot` to `addr` in a new snapshot.
    pub fn apply_moved(&self, slot: Slot, addr: &str) {
        if self.map.load().primary(slot).is_some_and(|p| &**p == addr) {
            return;
        }
        self.map.rcu(|map| map.with_moved(slot, addr));
        self.generation.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("slotproxy_slot_map_patches_total").increment(1);
    }

    fn publish(&self, map: SlotMap) {
        let changed = !self.map.load().same_routing(&map);
        if changed {
            tracing::info!(
                shards = map.shards().len(),
                covered = map.covered_slots(),
                "topology changed"
            );
        }
        self.map.store(Arc::new(map));
        self.generation.fetch_add(1, Ordering::Relaxed);
        let ms = (self.started.elapsed().as_millis() as u64).max(1);
        self.refreshed_at_ms.store(ms, Ordering::Relaxed);
    }

    /// Nodes to ask, most likely useful first: known primaries, replicas, then the seeds.
    fn candidates(&self) -> Vec<NodeAddr> {
        let mut nodes = self.map.load().nodes();
        for seed in &self.seeds {
            if !nodes.iter().any(|n| &**n == seed.as_str()) {
                nodes.push(Arc::from(seed.as_str()));
            }
        }
        nodes
    }

    /// Asks nodes in turn until one gives a map that covers every slot; publishes the best map
    /// seen. Returns whether a map was published.
    pub async fn refresh(&self) -> bool {
        metrics::counter!("slotproxy_topology_refreshes_total").increment(1);
        let mut best: Option<SlotMap> = None;
        // The last failure is logged when no node answers: it is the one clue an operator
        // needs (an untrusted certificate, a refused password, a wrong port).
        let mut last_error = None;
        for node in self.candidates() {
            match self.ask(&node).await {
                Ok(map) if map.is_complete() => {
                    self.publish(map);
                    return true;
                }
                Ok(map) => {
                    tracing::debug!(%node, covered = map.covered_slots(), "partial topology");
                    if best
                        .as_ref()
                        .is_none_or(|b| b.covered_slots() < map.covered_slots())
                    {
                        best = Some(map);
                    }
                }
                Err(reason) => {
                    tracing::debug!(%node, %reason, "topology query failed");
                    last_error = Some(reason);
                }
            }
        }
        match best {
            Some(map) if map.covered_slots() > 0 => {
                tracing::warn!(
                    covered = map.covered_slots(),
                    "no node reports full slot coverage"
                );
                self.publish(map);
                true
            }
            _ => {
                metrics::counter!("slotproxy_topology_refresh_failures_total").increment(1);
                tracing::warn!(
                    last_error = last_error.as_deref().unwrap_or("no node to ask"),
                    "topology refresh failed: no node answered"
                );
                false
            }
        }
    }

    async fn ask(&self, node: &NodeAddr) -> Result<SlotMap, String> {
        let shards = query(
            node,
            &self.credentials,
            self.timeout,
            &[b"CLUSTER", b"SHARDS"],
        )
        .await;
        match shards {
            Ok(Value::Error(_)) => {}
            Ok(reply) => {
                let tls = self.credentials.tls.as_ref();
                let map = parse_shards(&reply, node, tls.is_some()).map_err(|e| e.to_string())?;
                if let Some(tls) = tls {
                    if map.is_complete() {
                        tls.learn_hostnames(announced_hostnames(&reply, node, true));
                    }
                }
                return Ok(map);
            }
            Err(e) => return Err(e.to_string()),
        }
        match query(
            node,
            &self.credentials,
            self.timeout,
            &[b"CLUSTER", b"SLOTS"],
        )
        .await
        {
            Ok(Value::Error(e)) => {
                let error = String::from_utf8_lossy(&e).into_owned();
                if self.is_standalone(node).await {
                    return Ok(SlotMap::standalone(node.clone()));
                }
                Err(error)
            }
            Ok(reply) => parse_slots(&reply, node).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether `node` is a plain Redis (`cluster_enabled:0`), served in pass-through mode.
    async fn is_standalone(&self, node: &NodeAddr) -> bool {
        match query(
            node,
            &self.credentials,
            self.timeout,
            &[b"INFO", b"cluster"],
        )
        .await
        {
            Ok(info) => info
                .as_bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .is_some_and(|text| text.lines().any(|l| l.trim() == "cluster_enabled:0")),
            Err(_) => false,
        }
    }

    /// The refresher: periodic, plus on request, at most once per `min_interval`.
    pub async fn run(
        self: Arc<Self>,
        interval: Duration,
        min_interval: Duration,
        shutdown: CancellationToken,
    ) {
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
            }
            let since = last.elapsed();
            if since < min_interval {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(min_interval - since) => {}
                }
            }
            self.refresh().await;
            last = Instant::now();
        }
    }
}

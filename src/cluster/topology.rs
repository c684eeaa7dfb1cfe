//! The shared, atomically swapped slot map and the task that keeps it fresh.
//!
//! One refresher per proxy: it runs periodically and when asked (after a MOVED or a lost
//! connection). Asks coalesce into one refresh (single flight) and refreshes are spaced by a
//! minimum interval (debounce), so a burst of MOVED replies costs one round of queries.
//! Every known node is a candidate, not only the seeds, so losing the seed node is survived.
//!
//! Along the way it records what it learned about reaching nodes ([`BackendStatus`]): which
//! nodes failed to answer and whether authentication was refused, so that `/readyz` can say
//! why the proxy is not ready. It does not probe nodes on its own beyond that, except to
//! recheck a primary it found unreachable before (so the mark is lifted once it is back).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::node_zones::ZoneBook;
use super::settings::ServerSettings;
use super::shards_reply::{announced_hostnames, parse_shards, parse_slots, TopologyError};
use super::slot_map::{NodeAddr, SlotMap};
use super::zones::{zone_from_info, ZoneSettings};
use super::Slot;
use crate::backend::connect::query;
use crate::backend::connect::Credentials;
use crate::backend::BackendError;
use crate::resp::Value;

/// A node the refresher could not use, and the error it got (a Redis error text or a
/// connection error; never a password, which Redis does not echo).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFailure {
    pub node: NodeAddr,
    pub error: String,
}

/// What the refresher knows about reaching the nodes, as of its last refresh.
#[derive(Clone, Debug, Default)]
pub struct BackendStatus {
    /// Set when a node refused the proxy's credentials (`WRONGPASS`, `NOAUTH`, ...) in the
    /// last refresh; cleared once a node accepts them.
    pub auth_failure: Option<NodeFailure>,
    /// Nodes whose last query failed at the connection level (refused, timed out, lost);
    /// a node leaves the list when it answers again or leaves the topology.
    pub unreachable: Vec<NodeFailure>,
}

impl BackendStatus {
    /// The error of `node`'s last failed query, if it is marked unreachable.
    pub fn unreachable_error(&self, node: &str) -> Option<&str> {
        self.unreachable
            .iter()
            .find(|f| &*f.node == node)
            .map(|f| f.error.as_str())
    }
}

/// Why one node gave no topology.
enum AskError {
    /// The node refused the credentials: no other node will accept them either, most likely.
    Auth(String),
    /// The node could not be reached or did not answer in time.
    Unreachable(String),
    /// It answered, but not with a usable topology.
    Other(String),
}

impl From<BackendError> for AskError {
    fn from(error: BackendError) -> AskError {
        match error {
            BackendError::Auth { reason, .. } => AskError::Auth(reason),
            BackendError::Protocol { .. } => AskError::Other(error.to_string()),
            other => AskError::Unreachable(other.to_string()),
        }
    }
}

/// A Redis error reply that means "who are you?": the credentials are wrong or missing.
fn is_auth_error(text: &[u8]) -> bool {
    text.starts_with(b"NOAUTH") || text.starts_with(b"WRONGPASS")
}

/// What one refresh learned, applied to [`BackendStatus`] at its end.
#[derive(Default)]
struct Round {
    answered: Vec<NodeAddr>,
    unreachable: Vec<NodeFailure>,
    auth_failure: Option<NodeFailure>,
}

impl Round {
    fn note(&mut self, node: &NodeAddr, error: AskError) {
        match error {
            AskError::Auth(error) => {
                tracing::debug!(%node, %error, "authentication refused");
                if self.auth_failure.is_none() {
                    self.auth_failure = Some(NodeFailure {
                        node: node.clone(),
                        error,
                    });
                }
            }
            AskError::Unreachable(error) => {
                tracing::debug!(%node, %error, "topology query failed");
                self.unreachable.push(NodeFailure {
                    node: node.clone(),
                    error,
                });
            }
            AskError::Other(error) => {
                // It answered: reachable, and the credentials (if any) were accepted.
                tracing::debug!(%node, %error, "topology query failed");
                self.answered.push(node.clone());
            }
        }
    }
}

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
    /// Refreshes attempted (periodic, requested and at start-up).
    refreshes: AtomicU64,
    /// Refreshes in a row that published nothing: failures are logged when they start and
    /// when they end (with this count), not on every attempt.
    failed_in_a_row: AtomicU64,
    /// Written by the refresher at the end of each refresh, read by the admin listener; a
    /// plain mutex is enough (never held across an await, never on the request path).
    status: Mutex<BackendStatus>,
    max_replica_lag: AtomicU64,
    /// The settings applied through the proxy (`CONFIG SET`), applied by each refresh to the
    /// nodes that joined since the last map.
    pub settings: ServerSettings,
    /// The nodes' availability zones, laid over every map published.
    zones: std::sync::OnceLock<ZoneBook>,
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
            refreshes: AtomicU64::new(0),
            failed_in_a_row: AtomicU64::new(0),
            status: Mutex::new(BackendStatus::default()),
            max_replica_lag: AtomicU64::new(0),
            settings: ServerSettings::default(),
            zones: std::sync::OnceLock::new(),
        }
    }

    /// Sets the proxy's zone, the configured node zones and whether to ask nodes for theirs;
    /// once, before the first refresh (later calls are ignored: zones need a restart).
    pub fn configure_zones(&self, settings: ZoneSettings) {
        let _ = self.zones.set(ZoneBook::new(settings));
    }

    /// Replicas further behind their primary than this many bytes serve no reads (0: no
    /// limit); see `parse_shards`.
    pub fn set_max_replica_lag(&self, bytes: u64) {
        self.max_replica_lag.store(bytes, Ordering::Relaxed);
    }

    pub fn max_replica_lag(&self) -> u64 {
        self.max_replica_lag.load(Ordering::Relaxed)
    }

    /// Refreshes attempted so far.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// What the last refreshes learned about reaching the nodes.
    pub fn status(&self) -> BackendStatus {
        self.lock_status().clone()
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, BackendStatus> {
        // The status is replaced field by field with plain values: a panic elsewhere cannot
        // leave it half-written in a way that matters, so a poisoned lock is still usable.
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current map; cheap, never blocks.
    pub fn map(&self) -> arc_swap::Guard<Arc<SlotMap>> {
        self.map.load()
    }

    /// Where the current map is published, for a worker's cache of it.
    pub fn map_source(&self) -> &ArcSwap<SlotMap> {
        &self.map
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

    /// How long one query to a node may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
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

    /// Publishes `map`; returns the nodes that joined (or changed role) since the last
    /// refresh's map.
    fn publish(&self, map: SlotMap) -> Vec<NodeAddr> {
        let map = match self.zones.get() {
            Some(zones) => zones.apply(map),
            None => map,
        };
        let joined = self.settings.joined_in(&map);
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
        joined
    }

    /// Nodes to ask, most likely useful first: known primaries, replicas, then the seeds.
    fn candidates(&self) -> Vec<NodeAddr> {
        let mut nodes = self.map.load().nodes();
        for seed in &self.seeds {
            if !nodes.iter().any(|n| &**n == seed.as_str()) {
                nodes.push(NodeAddr::from(seed.as_str()));
            }
        }
        nodes
    }

    /// Asks nodes in turn until one gives a map that covers every slot; publishes the best map
    /// seen. Returns whether a map was published.
    pub async fn refresh(&self) -> bool {
        metrics::counter!("slotproxy_topology_refreshes_total").increment(1);
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let mut round = Round::default();
        let mut best: Option<SlotMap> = None;
        let mut published = false;
        let mut joined = Vec::new();
        for node in self.candidates() {
            match self.ask(&node).await {
                Ok(map) => {
                    round.answered.push(node.clone());
                    if map.is_complete() {
                        joined = self.publish(map);
                        published = true;
                        break;
                    }
                    tracing::debug!(%node, covered = map.covered_slots(), "partial topology");
                    if best
                        .as_ref()
                        .is_none_or(|b| b.covered_slots() < map.covered_slots())
                    {
                        best = Some(map);
                    }
                }
                Err(error) => round.note(&node, error),
            }
        }
        if !published {
            match best {
                Some(map) if map.covered_slots() > 0 => {
                    tracing::warn!(
                        covered = map.covered_slots(),
                        "no node reports full slot coverage"
                    );
                    joined = self.publish(map);
                    published = true;
                }
                _ => {
                    metrics::counter!("slotproxy_topology_refresh_failures_total").increment(1);
                    let first = self.failed_in_a_row.fetch_add(1, Ordering::Relaxed) == 0;
                    // An authentication failure is logged as such when recorded.
                    if first && round.auth_failure.is_none() {
                        tracing::warn!("topology refresh failed: no node answered");
                    }
                }
            }
        }
        if published {
            let failed = self.failed_in_a_row.swap(0, Ordering::Relaxed);
            if failed > 0 {
                tracing::info!(failed, "topology refresh works again");
            }
        }
        if published {
            self.recheck_unreachable(&mut round).await;
            self.learn_zones().await;
        }
        // After the map is published: a CONFIG SET that finishes meanwhile applies its
        // settings to the nodes of this map itself (see `dispatch::server_config`).
        self.settings
            .apply_to(&joined, &self.credentials, self.timeout)
            .await;
        self.record(round);
        published
    }

    /// Every node worth tracking: candidates, and nodes the cluster lists but routing leaves
    /// out (a failed node, until the cluster forgets it).
    fn known_nodes(&self) -> Vec<NodeAddr> {
        let mut nodes = self.candidates();
        for info in self.map.load().node_info() {
            if !nodes.contains(&info.addr) {
                nodes.push(info.addr.clone());
            }
        }
        nodes
    }

    /// PINGs the known nodes that an earlier refresh found unreachable and this one did not
    /// ask: a refresh stops at the first node that answers, so without this a node that came
    /// back would stay marked unreachable. Usually there are none, so this costs nothing.
    async fn recheck_unreachable(&self, round: &mut Round) {
        let known = self.known_nodes();
        let asked = |node: &NodeAddr| {
            round.answered.contains(node) || round.unreachable.iter().any(|f| f.node == *node)
        };
        let recheck: Vec<NodeAddr> = self
            .lock_status()
            .unreachable
            .iter()
            .map(|f| f.node.clone())
            .filter(|n| known.contains(n) && !asked(n))
            .collect();
        let pings = recheck.iter().map(|node| async move {
            let outcome = query(node, &self.credentials, self.timeout, &[b"PING"]).await;
            (node, outcome)
        });
        for (node, outcome) in futures_util::future::join_all(pings).await {
            match outcome {
                Ok(Value::Error(e)) if is_auth_error(&e) => round.note(
                    node,
                    AskError::Auth(String::from_utf8_lossy(&e).into_owned()),
                ),
                Ok(_) => round.answered.push(node.clone()),
                Err(error) => round.note(node, error.into()),
            }
        }
    }

    /// Asks the map's nodes whose zone is unknown or old for it (`INFO server`, all at once),
    /// and lays the map over again when a zone changed. After the map is published, so a
    /// slow node delays no routing change, and before the refresh ends, so the first
    /// refresh at start-up ends with every zone known.
    async fn learn_zones(&self) {
        let Some(zones) = self.zones.get() else {
            return;
        };
        let ask = zones.to_ask(&self.map.load(), Instant::now());
        if ask.is_empty() {
            return;
        }
        let asks = ask.into_iter().map(|node| async move {
            let answer = match query(
                node.as_str(),
                &self.credentials,
                self.timeout,
                &[b"INFO", b"server"],
            )
            .await
            {
                Ok(Value::Error(e)) => Err(String::from_utf8_lossy(&e).into_owned()),
                Ok(info) => Ok(info
                    .as_bytes()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .and_then(zone_from_info)),
                Err(error) => Err(error.to_string()),
            };
            (node, answer)
        });
        let answers = futures_util::future::join_all(asks).await;
        if zones.record(answers, &self.known_nodes(), Instant::now()) {
            self.map.rcu(|map| zones.apply(SlotMap::clone(map)));
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Applies what a refresh learned, logging changes (not every failed attempt).
    fn record(&self, round: Round) {
        let known = self.known_nodes();
        let mut status = self.lock_status();
        status.unreachable.retain(|f| {
            let back = round.answered.contains(&f.node);
            if back {
                tracing::info!(node = %f.node, "node reachable again");
            }
            !back && known.contains(&f.node)
        });
        for failure in round.unreachable {
            match status
                .unreachable
                .iter_mut()
                .find(|f| f.node == failure.node)
            {
                Some(known) => known.error = failure.error,
                None => {
                    tracing::warn!(node = %failure.node, error = %failure.error, "node unreachable");
                    status.unreachable.push(failure);
                }
            }
        }
        match round.auth_failure {
            Some(failure) => {
                if status.auth_failure.as_ref() != Some(&failure) {
                    tracing::error!(
                        node = %failure.node,
                        error = %failure.error,
                        "backend authentication failed: check the user and password of the upstream URL"
                    );
                }
                status.auth_failure = Some(failure);
            }
            None if !round.answered.is_empty() => {
                if let Some(previous) = status.auth_failure.take() {
                    tracing::info!(node = %previous.node, "backend authentication works again");
                }
            }
            None => {} // nobody answered: nothing learned about the credentials
        }
    }

    async fn ask(&self, node: &NodeAddr) -> Result<SlotMap, AskError> {
        let shards = query(
            node,
            &self.credentials,
            self.timeout,
            &[b"CLUSTER", b"SHARDS"],
        )
        .await?;
        match shards {
            Value::Error(e) if is_auth_error(&e) => {
                return Err(AskError::Auth(String::from_utf8_lossy(&e).into_owned()))
            }
            Value::Error(_) => {}
            reply => {
                let tls = self.credentials.tls.as_ref();
                match parse_shards(
                    &reply,
                    node,
                    tls.is_some(),
                    self.max_replica_lag.load(Ordering::Relaxed),
                ) {
                    Ok(map) => {
                        if let Some(tls) = tls {
                            if map.is_complete() {
                                tls.learn_hostnames(announced_hostnames(&reply, node, true));
                            }
                        }
                        return Ok(map);
                    }
                    // Which of two primaries serves: CLUSTER SLOTS says, below.
                    Err(TopologyError::AmbiguousPrimary { .. }) => {
                        tracing::debug!(%node, "CLUSTER SHARDS names two primaries for a shard; asking CLUSTER SLOTS");
                    }
                    Err(e) => return Err(AskError::Other(e.to_string())),
                }
            }
        }
        match query(
            node,
            &self.credentials,
            self.timeout,
            &[b"CLUSTER", b"SLOTS"],
        )
        .await?
        {
            Value::Error(e) => {
                let error = String::from_utf8_lossy(&e).into_owned();
                if self.is_standalone(node).await {
                    return Ok(SlotMap::standalone(node.clone()));
                }
                Err(AskError::Other(error))
            }
            reply => parse_slots(&reply, node).map_err(|e| AskError::Other(e.to_string())),
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

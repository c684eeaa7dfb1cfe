//! The Prometheus recorder, installed once per process and shared by every proxy in it (tests
//! run several proxies in one process).
//!
//! The names in DESIGN.md are a contract, so every fixed-label series is registered at
//! install time: a scraper sees `slotproxy_redirects_total{kind="ask"} 0` before the first
//! ASK instead of a missing series. Series labelled by command or node appear with their first
//! use. Recording sites live with the code that observes the event.

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::dispatch::decision::RetryKind;
use crate::dispatch::error::METRIC_KINDS;
use crate::shared::Shared;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder if no other recorder is installed; returns the handle that renders
/// `/metrics`, or `None` when another recorder owns the process.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            // `slotproxy_command_duration_seconds` is not the recorder's: see `latency.rs`.
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    register_fixed_series();
                    Some(handle)
                }
                Err(_) => None,
            }
        })
        .clone()
}

/// `slotproxy_errors_total` kinds of failed round trips (`BackendError::kind()`); the proxy's
/// own errors are `dispatch::error::METRIC_KINDS`.
const BACKEND_ERROR_KINDS: &[&str] = &[
    "connect",
    "unreachable",
    "auth",
    "not_sent",
    "lost",
    "timeout",
    "protocol",
];

/// Registers every series whose labels are known in advance, at zero.
fn register_fixed_series() {
    use metrics::{counter, gauge};
    for kind in ["moved", "ask"] {
        counter!("slotproxy_redirects_total", "kind" => kind).increment(0);
    }
    for kind in RetryKind::COUNTED {
        counter!("slotproxy_retries_total", "kind" => kind.label()).increment(0);
    }
    for &kind in BACKEND_ERROR_KINDS.iter().chain(METRIC_KINDS) {
        counter!("slotproxy_errors_total", "kind" => kind).increment(0);
    }
    for direction in ["in", "out"] {
        counter!("slotproxy_bytes_total", "direction" => direction).increment(0);
    }
    gauge!("slotproxy_client_connections").increment(0.0);
    counter!("slotproxy_topology_refreshes_total").increment(0);
    counter!("slotproxy_topology_refresh_failures_total").increment(0);
    counter!("slotproxy_slot_map_patches_total").increment(0);
    for name in [
        "slotproxy_near_cache_hits_total",
        "slotproxy_near_cache_misses_total",
        "slotproxy_near_cache_invalidations_total",
        "slotproxy_near_cache_evictions_total",
    ] {
        counter!(name).increment(0);
    }
    gauge!("slotproxy_near_cache_bytes").increment(0.0);
    gauge!("slotproxy_near_cache_entries").increment(0.0);
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_counter!(
        "slotproxy_commands_total",
        "Commands received, by command name"
    );
    describe_counter!(
        "slotproxy_emulated_commands_total",
        "Commands whose keys span several slots carried out by the proxy itself (cross_slot = \"emulate\"), by command name"
    );
    describe_counter!(
        "slotproxy_errors_total",
        "Errors: failed backend round trips, and errors the proxy answered itself (CROSSSLOT, NOAUTH, protocol errors...), by kind"
    );
    describe_counter!(
        "slotproxy_redirects_total",
        "MOVED and ASK redirects followed inside the proxy"
    );
    describe_counter!(
        "slotproxy_retries_total",
        "TRYAGAIN, CLUSTERDOWN and LOADING replies, and MOVED to the answering node's own address, retried inside the proxy"
    );
    describe_counter!(
        "slotproxy_replica_reads_total",
        "Reads routed by a zone-aware read_from policy, by locality: same_zone (a node in the proxy's zone), other_zone (a replica elsewhere), primary (no replica)"
    );
    describe_gauge!("slotproxy_client_connections", "Open client connections");
    describe_gauge!(
        "slotproxy_backend_connections",
        "Open backend connections, by node"
    );
    describe_counter!(
        "slotproxy_topology_refreshes_total",
        "Topology refreshes attempted"
    );
    describe_counter!(
        "slotproxy_topology_refresh_failures_total",
        "Topology refreshes in which no node answered"
    );
    describe_counter!(
        "slotproxy_slot_map_patches_total",
        "Slot map updates applied from MOVED replies"
    );
    describe_counter!(
        "slotproxy_bytes_total",
        Unit::Bytes,
        "Bytes exchanged with clients, by direction"
    );
    describe_gauge!(
        "slotproxy_slot_map_age_seconds",
        Unit::Seconds,
        "Time since the slot map was last refreshed from the cluster (since start-up while no refresh has succeeded)"
    );
    describe_counter!(
        "slotproxy_near_cache_hits_total",
        "GETs answered from the near cache"
    );
    describe_counter!(
        "slotproxy_near_cache_misses_total",
        "GETs of keys under the near cache's prefixes that were not in it (sent to the cluster)"
    );
    describe_counter!(
        "slotproxy_near_cache_invalidations_total",
        "Near-cache entries dropped because their key changed (a node's report or a write through the proxy), or their node or slot could no longer vouch for them"
    );
    describe_counter!(
        "slotproxy_near_cache_evictions_total",
        "Near-cache entries evicted (least recently used) to stay within near_cache.max_memory"
    );
    describe_gauge!(
        "slotproxy_near_cache_bytes",
        Unit::Bytes,
        "Bytes held by the near cache (keys, values, per-entry overhead), all workers"
    );
    describe_gauge!(
        "slotproxy_near_cache_entries",
        "Entries in the near cache, all workers"
    );
    describe_gauge!(
        "slotproxy_slots_covered",
        "Slots (of 16384) that have a known primary"
    );
}

/// Sets the gauges that describe the slot map. Called by the upkeep and before each scrape,
/// so a scrape sees the age at scrape time. With several proxies in one process (tests) the
/// last one to call it wins.
pub fn record_topology(shared: &Shared) {
    let age = shared
        .topology
        .age()
        .unwrap_or_else(|| shared.started.elapsed());
    metrics::gauge!("slotproxy_slot_map_age_seconds").set(age.as_secs_f64());
    let covered = shared.topology.map().covered_slots();
    metrics::gauge!("slotproxy_slots_covered").set(covered as f64);
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds histogram samples into buckets periodically (the recorder queues every sample until
/// then, so without this an unscraped proxy's memory would grow with every command), and keeps
/// the slot-map gauges current.
pub async fn run_upkeep(
    handle: PrometheusHandle,
    shared: Arc<Shared>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        record_topology(&shared);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(UPKEEP_INTERVAL) => handle.run_upkeep(),
        }
    }
}

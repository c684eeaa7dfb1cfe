//! The Prometheus recorder, installed once per process and shared by every proxy in it (tests
//! run several proxies in one process).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Command latency buckets, in seconds: 50 µs (a pipelined GET) to 5 s (a retry deadline).
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder if no other recorder is installed; returns the handle that renders
/// `/metrics`, or `None` when another recorder owns the process.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets_for_metric(
                Matcher::Full("slotproxy_command_duration_seconds".into()),
                LATENCY_BUCKETS,
            );
            let Ok(builder) = builder else { return None };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    Some(handle)
                }
                Err(_) => None,
            }
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "slotproxy_commands_total",
        "Commands received, by command name"
    );
    describe_histogram!(
        "slotproxy_command_duration_seconds",
        Unit::Seconds,
        "Time from a command's arrival to its reply"
    );
    describe_counter!(
        "slotproxy_errors_total",
        "Failed backend round trips and client protocol errors, by kind"
    );
    describe_counter!(
        "slotproxy_redirects_total",
        "MOVED and ASK redirects followed inside the proxy"
    );
    describe_counter!(
        "slotproxy_retries_total",
        "TRYAGAIN, CLUSTERDOWN and LOADING replies retried inside the proxy"
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
}

/// How often recorded histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds histogram samples into buckets periodically. The recorder queues every sample until
/// then, so without this an unscraped proxy's memory would grow with every command.
pub async fn run_upkeep(handle: PrometheusHandle, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(UPKEEP_INTERVAL) => handle.run_upkeep(),
        }
    }
}

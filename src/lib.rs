//! slotproxy: a cluster-aware Redis proxy.
//!
//! Clients speak plain RESP to the proxy as if it were one Redis server; the proxy hashes each
//! command's keys to a slot, forwards it over multiplexed backend connections to the shard that
//! owns the slot, follows redirects, and returns replies in the client's order.
//!
//! [`Proxy::start`] runs a whole proxy in-process (the binary and the tests both use it).

pub mod admin;
pub mod auth;
pub mod backend;
pub mod client;
pub mod cluster;
pub mod command;
pub mod config;
pub mod dispatch;
pub mod latency;
pub mod memory;
pub mod metrics;
pub mod registry;
pub mod reload;
pub mod resp;
pub mod server;
pub mod shared;
pub mod tls;
pub mod tracking;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::backend::connect::{query, Credentials};
use crate::cluster::topology::Topology;
use crate::command::CommandTable;
pub use crate::config::Config;
pub use crate::reload::{ReloadReport, Reloader};
use crate::resp::Value;
use crate::shared::Shared;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("bad TLS material: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Io(String),
}

/// How long `start` waits for a first topology before serving anyway (clients then get
/// CLUSTERDOWN until the refresher reaches a node).
const STARTUP_TOPOLOGY_WAIT: Duration = Duration::from_secs(10);

/// A running proxy. Dropping it stops it.
pub struct Proxy {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    /// Cancelled to stop: workers stop accepting and finish the replies they owe.
    shutdown: CancellationToken,
    /// Cancelled once the workers are done: the control thread (topology, admin HTTP) keeps
    /// serving until then, so `/readyz` reports the shutdown and in-flight commands can still
    /// follow the topology.
    stopped: CancellationToken,
    workers: Vec<JoinHandle<()>>,
    control: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Binds the listeners, loads the topology and the command table, starts the workers, and
    /// returns once the proxy serves clients.
    pub fn start(config: Config) -> Result<Proxy, StartError> {
        config.validate().map_err(StartError::Config)?;
        let users = config.users().map_err(StartError::Config)?;
        let seeds: Vec<String> = config.seeds().iter().map(|s| s.addr.clone()).collect();
        let workers = config.worker_count();
        let io_uring = server::use_io_uring(config.listener.io).map_err(StartError::Io)?;
        let listen: SocketAddr = config
            .listener
            .listen
            .parse()
            .map_err(|_| StartError::Config(vec!["listen".into()]))?;
        let listeners =
            server::bind_listeners(listen, workers).map_err(|source| StartError::Listen {
                addr: config.listener.listen.clone(),
                source,
            })?;
        let local_addr = listeners
            .first()
            .and_then(|l| l.local_addr().ok())
            .unwrap_or(listen);
        let admin_listener = match &config.admin.listen {
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| StartError::Listen {
                        addr: addr.clone(),
                        source,
                    })?,
            ),
            None => None,
        };
        let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
        let metrics = if config.admin.metrics {
            metrics::install()
        } else {
            None
        };

        let mut credentials = Credentials::from_seeds(config.seeds());
        if config.backend_tls_enabled() {
            let backend_tls = backend::tls::BackendTls::new(&config.tls.backend, config.seeds())
                .inspect_err(|error| tracing::error!(%error, "cannot set up TLS to the cluster"))?;
            if config.tls.backend.insecure_skip_verify {
                tracing::warn!(
                    "TLS to the cluster accepts ANY certificate (insecure_skip_verify, --upstream-tls-insecure): \
                     the traffic can be read and changed by anyone on the path"
                );
            }
            credentials.tls = Some(Arc::new(backend_tls));
        }
        let client_tls = tls::acceptor(&config.tls.client).inspect_err(
            |error| tracing::error!(%error, "cannot set up TLS on the client listener"),
        )?;
        let topology = Arc::new(Topology::new(seeds, credentials, config.connect_timeout()));
        topology.set_max_replica_lag(config.replicas.max_lag);
        topology.configure_zones(cluster::zones::ZoneSettings {
            own: config.backend.zone.clone(),
            configured: config.backend.node_zones.clone(),
            learn: config.backend.read_from.is_zone_aware(),
        });
        if config.backend.read_from.is_zone_aware() && config.backend.zone.is_none() {
            tracing::warn!(
                read_from = ?config.backend.read_from,
                "read_from is zone-aware but the proxy has no zone (zone, --zone, SLOTPROXY_ZONE): \
                 reads go to any replica, as with prefer-replica"
            );
        }
        let refresh_interval = config.cluster.refresh_interval;
        let refresh_min_interval = config.cluster.refresh_min_interval;
        let mut shared = Shared::new(config, topology.clone(), workers, users);
        shared.client_tls = arc_swap::ArcSwapOption::new(client_tls.map(Arc::new));
        let shared = Arc::new(shared);
        let shutdown = shared.shutdown.clone();
        let stopped = CancellationToken::new();
        let mut workers_threads = Vec::new();

        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let control_thread = {
            let shared = shared.clone();
            let stopped = stopped.clone();
            std::thread::Builder::new()
                .name("slotproxy-control".into())
                .spawn(move || {
                    control(
                        shared,
                        admin_listener,
                        metrics,
                        refresh_interval,
                        refresh_min_interval,
                        stopped,
                        ready_tx,
                    )
                })
                .map_err(StartError::Thread)?
        };
        // Wait for the control thread's first topology (or its give-up).
        let _ = ready_rx.recv_timeout(STARTUP_TOPOLOGY_WAIT + Duration::from_secs(5));

        for (i, listener) in listeners.into_iter().enumerate() {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            let thread = std::thread::Builder::new()
                .name(format!("slotproxy-worker-{i}"))
                .spawn(move || {
                    if let Err(error) = server::run_worker(shared, listener, shutdown, io_uring) {
                        tracing::error!(%error, "worker failed");
                    }
                })
                .map_err(StartError::Thread)?;
            workers_threads.push(thread);
        }
        tracing::info!(
            %local_addr,
            workers,
            io = if io_uring { "io_uring" } else { "epoll" },
            tls = shared.client_tls.load().is_some(),
            backend_tls = shared.topology.credentials().tls.is_some(),
            "slotproxy listening"
        );
        Ok(Proxy {
            local_addr,
            admin_addr,
            shutdown,
            stopped,
            workers: workers_threads,
            control: Some(control_thread),
            shared,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// True once every slot has a known primary.
    pub fn is_ready(&self) -> bool {
        self.shared.topology.map().is_complete()
    }

    /// Blocks until the proxy stops (for the binary).
    pub fn wait(mut self) {
        self.join();
    }

    /// Waits for the workers (they end after a shutdown, once their clients are served or
    /// the grace period is over), then stops the control thread.
    fn join(&mut self) {
        for thread in self.workers.drain(..) {
            let _ = thread.join();
        }
        self.stopped.cancel();
        if let Some(control) = self.control.take() {
            let _ = control.join();
        }
    }

    /// A handle that applies a new configuration to the running proxy (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader::new(self.shared.clone())
    }

    /// A token that stops the proxy when cancelled (signal handlers use it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.join();
    }
}

/// Loads every TLS file the configuration names and builds both sides' rustls configurations,
/// as start-up would, so `--check-config` reports bad TLS material too.
///
/// # Errors
/// Every problem found, one line each.
pub fn check_tls(config: &Config) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if config.backend_tls_enabled() {
        if let Err(e) = backend::tls::BackendTls::new(&config.tls.backend, config.seeds()) {
            problems.push(e.to_string());
        }
    }
    if let Err(e) = tls::acceptor(&config.tls.client) {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// The control thread: topology refresher, command table, admin listener.
fn control(
    shared: Arc<Shared>,
    admin_listener: Option<std::net::TcpListener>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    refresh_interval: Duration,
    refresh_min_interval: Duration,
    shutdown: CancellationToken,
    ready: std::sync::mpsc::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start the control runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let clock = shared.clients.clone();
        let clock_stop = shutdown.clone();
        tokio::spawn(async move { clock.run_clock(clock_stop).await });
        let topology = shared.topology.clone();
        let started = Instant::now();
        loop {
            if topology.refresh().await {
                break;
            }
            // Wrong credentials will not fix themselves: say so (the refresher logged the
            // node's error) and serve at once, /readyz reporting it, instead of waiting.
            if topology.status().auth_failure.is_some() {
                break;
            }
            if started.elapsed() > STARTUP_TOPOLOGY_WAIT || shutdown.is_cancelled() {
                tracing::warn!(
                    "no cluster node answered yet; serving anyway and retrying in the background"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        load_command_table(&shared).await;
        let _ = ready.send(());
        if let Some(handle) = metrics.clone() {
            tokio::spawn(metrics::run_upkeep(
                handle,
                shared.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(listener) = admin_listener {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    // `shutdown` here is the proxy's `stopped`: the listener outlives the
                    // workers' drain, during which `shared.shutdown` makes /readyz fail.
                    tokio::spawn(admin::serve(
                        listener,
                        shared.clone(),
                        metrics,
                        shared.shutdown.clone(),
                        shutdown.clone(),
                    ));
                }
                Err(error) => tracing::error!(%error, "admin listener failed"),
            }
        }
        let watch_interval = shared.config.cluster.watch_interval;
        if !watch_interval.is_zero() {
            tokio::spawn(cluster::watch::run(
                topology.clone(),
                watch_interval,
                shutdown.clone(),
            ));
        }
        topology
            .run(refresh_interval, refresh_min_interval, shutdown)
            .await;
    });
}

/// Learns key positions of every command the cluster knows (modules included) from `COMMAND`;
/// keeps the built-in Redis 7 table when no node answers.
async fn load_command_table(shared: &Shared) {
    let nodes = shared.topology.map().nodes();
    let creds = shared.topology.credentials().clone();
    for node in nodes {
        match query(&node, &creds, Duration::from_secs(5), &[b"COMMAND"]).await {
            Ok(reply @ Value::Array(_)) => match CommandTable::from_command_reply(&reply) {
                Ok(table) => {
                    tracing::info!(%node, commands = table.len(), "command table learned from the cluster");
                    shared.commands.store(Arc::new(table));
                    return;
                }
                Err(error) => {
                    tracing::warn!(%node, %error, "cannot use the cluster's COMMAND reply")
                }
            },
            Ok(_) => tracing::warn!(%node, "unexpected COMMAND reply"),
            Err(error) => tracing::debug!(%node, %error, "COMMAND failed"),
        }
    }
    tracing::warn!("using the built-in Redis 7 command table");
}

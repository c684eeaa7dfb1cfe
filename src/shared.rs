//! State shared by every worker thread: read-mostly, swapped whole, never locked on the hot path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::auth::Users;
use crate::cluster::topology::Topology;
use crate::cluster::Slot;
use crate::command::CommandTable;
use crate::config::Config;
use crate::latency::LatencyTotals;
use crate::registry::Registry;
use crate::tracking::Tracking;
use running::RunningScripts;

pub mod glob;
pub mod pubsub;
pub mod running;

pub struct Shared {
    pub config: Config,
    pub topology: Arc<Topology>,
    /// Learned from the cluster's `COMMAND` once it answers; the built-in snapshot until then.
    pub commands: ArcSwap<CommandTable>,
    next_client_id: AtomicU64,
    connected_clients: AtomicUsize,
    pub started: Instant,
    pub workers: usize,
    /// This proxy's own counts (Prometheus metrics are per process; these are per proxy, for
    /// INFO's `# Proxy` section).
    pub counters: Counters,
    /// One permit per backend connection held by a blocked client (`max_blocking_connections`).
    pub blocking_permits: Arc<tokio::sync::Semaphore>,
    /// One permit per request waiting for an unreachable node (`recovery_queue_size`).
    pub recovery_permits: Arc<tokio::sync::Semaphore>,
    /// One permit per backend connection a script runs on (`max_script_connections`).
    pub script_permits: Arc<tokio::sync::Semaphore>,
    /// Scripts and functions in flight, for PING's busy check.
    pub running_scripts: Arc<RunningScripts>,
    /// Script bodies seen, to repair NOSCRIPT after a failover.
    pub scripts: ScriptCache,
    /// Who may connect (`requirepass`, `users_file`); swapped whole on a reload.
    pub users: ArcSwap<Users>,
    /// Cancelled when the proxy starts shutting down (SIGTERM, `Proxy` dropped).
    pub shutdown: CancellationToken,
    /// TLS on the client listener: every accepted connection does the handshake first.
    pub client_tls: arc_swap::ArcSwapOption<tokio_rustls::TlsAcceptor>,
    /// Client limits; swapped whole on a reload (SIGHUP) and read by sessions as they go.
    pub client_limits: ArcSwap<ClientLimits>,
    /// Command latency histograms, folded in by the workers every second.
    pub latency: LatencyTotals,
    /// Every connected client, for `CLIENT LIST/KILL/UNBLOCK`, and `CLIENT PAUSE`.
    pub clients: Arc<Registry>,
    /// Every client's Pub/Sub subscriptions, counted (PUBLISH's reply, PUBSUB).
    pub subscribers: Arc<pubsub::SubscriberCounts>,
    /// The slot whose owner carries this proxy's classic Pub/Sub: every client's SUBSCRIBE
    /// and PSUBSCRIBE, and every PUBLISH. A cluster spreads a PUBLISH to the other nodes
    /// asynchronously, so a subscription on another node than the PUBLISH's could still
    /// receive a message published before it was made; on one node the order is one
    /// server's. Chosen at random per process, so that many sidecars spread over the nodes.
    pub pubsub_slot: Slot,
    /// `CLIENT TRACKING`: who read which key, and the invalidation feed's state.
    pub tracking: Tracking,
    /// The near cache's counts over every worker, folded in by each worker every second
    /// (INFO's `# Proxy` section).
    pub near_cache: NearCacheTotals,
}

/// The near caches' counts, summed over the workers (each worker adds what changed).
#[derive(Default)]
pub struct NearCacheTotals {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub invalidations: AtomicU64,
    pub evictions: AtomicU64,
    pub bytes: AtomicI64,
    pub entries: AtomicI64,
}

/// The client limits of the configuration, which a reload may change for every client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_clients: usize,
    /// Close a client idle this long (`client_idle_timeout`).
    pub idle_timeout: Option<Duration>,
    /// Close a client whose unwritten replies pass this many bytes; 0 = no limit.
    pub output_limit: usize,
    /// Refuse a reply merged from several nodes past this many bytes (`max_merged_reply`);
    /// 0 = no limit.
    pub max_merged_reply: usize,
    /// How long a shutdown waits for owed replies.
    pub shutdown_grace: Duration,
}

impl ClientLimits {
    pub fn of(config: &Config) -> ClientLimits {
        ClientLimits {
            max_clients: config.clients.max_clients,
            idle_timeout: config.client_idle_timeout(),
            output_limit: config.clients.output_buffer_limit,
            max_merged_reply: config.clients.max_merged_reply,
            shutdown_grace: config.clients.shutdown_grace,
        }
    }
}

#[derive(Default)]
pub struct Counters {
    pub moved: AtomicU64,
    pub ask: AtomicU64,
    pub retries: AtomicU64,
    pub backend_errors: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl Shared {
    pub fn new(config: Config, topology: Arc<Topology>, workers: usize, users: Users) -> Shared {
        let blocking_permits = Arc::new(tokio::sync::Semaphore::new(
            config.backend.max_blocking_connections,
        ));
        let script_permits = Arc::new(tokio::sync::Semaphore::new(
            config.backend.max_script_connections,
        ));
        let recovery_permits = Arc::new(tokio::sync::Semaphore::new(
            config.backend.recovery_queue_size,
        ));
        Shared {
            topology,
            commands: ArcSwap::from_pointee(CommandTable::builtin().clone()),
            next_client_id: AtomicU64::new(1),
            connected_clients: AtomicUsize::new(0),
            started: Instant::now(),
            workers,
            counters: Counters::default(),
            blocking_permits,
            recovery_permits,
            script_permits,
            running_scripts: Arc::default(),
            scripts: ScriptCache::default(),
            users: ArcSwap::from_pointee(users),
            shutdown: CancellationToken::new(),
            client_tls: arc_swap::ArcSwapOption::empty(),
            client_limits: ArcSwap::from_pointee(ClientLimits::of(&config)),
            latency: LatencyTotals::default(),
            clients: Arc::new(Registry::default()),
            subscribers: Arc::default(),
            pubsub_slot: Slot::random(),
            tracking: Tracking::new(config.limits.max_tracked_keys),
            near_cache: NearCacheTotals::default(),
            config,
        }
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn client_connected(&self) {
        self.connected_clients.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("slotproxy_client_connections").increment(1.0);
    }

    pub fn client_disconnected(&self) {
        self.connected_clients.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("slotproxy_client_connections").decrement(1.0);
    }

    pub fn connected_clients(&self) -> usize {
        self.connected_clients.load(Ordering::Relaxed)
    }
}

/// Bodies remembered at most; beyond it new scripts are simply not repaired (a client that
/// generates scripts endlessly must not grow the proxy without bound).
const MAX_SCRIPTS: usize = 10_000;

/// SHA1 (lowercase hex, as Redis names scripts) → body.
#[derive(Default)]
pub struct ScriptCache {
    bodies: Mutex<HashMap<String, Bytes>>,
}

impl ScriptCache {
    /// Remembers `body`. Called for SCRIPT LOAD and EVAL only, never on the GET/SET path.
    pub fn remember(&self, body: &[u8]) {
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        let Ok(mut bodies) = self.bodies.lock() else {
            return;
        };
        if bodies.len() < MAX_SCRIPTS || bodies.contains_key(&sha) {
            bodies
                .entry(sha)
                .or_insert_with(|| Bytes::copy_from_slice(body));
        }
    }

    /// SCRIPT FLUSH: every body forgotten, so an EVALSHA after it gets NOSCRIPT, as from one
    /// server.
    pub fn forget_all(&self) {
        if let Ok(mut bodies) = self.bodies.lock() {
            bodies.clear();
        }
    }

    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        let sha = std::str::from_utf8(sha).ok()?.to_ascii_lowercase();
        self.bodies.lock().ok()?.get(&sha).cloned()
    }
}

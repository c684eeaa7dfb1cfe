//! Proxy configuration as plain data: sections that compare as whole values, the defaults,
//! and validation that reports every problem at once.
//!
//! Where the values come from (defaults, the TOML file, the environment, flags) is
//! [`layer`]; the flags themselves are [`flags`]. Each section derives `PartialEq`, so a reload
//! (`crate::reload`) sees what changed by comparing sections, and `Serialize` with the TOML key
//! names, so it can name the changed keys without a list of them.

pub mod duration;
pub mod flags;
pub mod layer;
pub mod upstream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::auth::Users;
use crate::resp::RequestLimits;

pub use flags::Flags;
pub use layer::{Layer, LoadError};
pub use upstream::{parse_upstream, parse_upstreams, Upstream};

/// Everything the proxy needs to run, one section per concern. The sections a running proxy
/// can change (`log_level`, `clients`, `auth`, `replicas`, the certificates of `tls`) are
/// separate from those that need a restart, so a reload decides by section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub listener: Listener,
    pub admin: Admin,
    pub cluster: Cluster,
    pub backend: Backend,
    pub limits: Limits,
    pub logging: Logging,
    pub log_level: LogLevel,
    pub clients: Clients,
    pub auth: Auth,
    pub replicas: Replicas,
    pub tls: Tls,
    pub near_cache: NearCache,
}

/// The client listener (restart to change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// Client listener address (`listen`).
    pub listen: String,
    /// Worker threads, each with its own listener and backend connections; 0 = available cores.
    pub workers: usize,
    /// How client sockets are read and written (`io`): io_uring where the kernel allows it, or
    /// epoll readiness (`client::uring`).
    pub io: IoMode,
}

impl Default for Listener {
    fn default() -> Self {
        Listener {
            listen: "127.0.0.1:6380".to_string(),
            workers: 0,
            io: IoMode::Auto,
        }
    }
}

/// What operators reach besides the data path (restart to change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Admin {
    /// Admin HTTP listener (`/healthz`, `/metrics`); `None` turns it off.
    #[serde(rename = "admin_listen")]
    pub listen: Option<String>,
    /// Record Prometheus metrics (served on `/metrics`). Off: no recorder, every recording
    /// site is a no-op (for measuring what recording costs).
    pub metrics: bool,
    /// Allow commands that change every node's server configuration (CONFIG SET/RESETSTAT,
    /// keyless DEBUG, ACL SETUSER/DELUSER); they then run on all nodes.
    #[serde(rename = "admin_commands")]
    pub commands: bool,
    /// What a command whose keys span several slots gets: Redis Cluster's CROSSSLOT error
    /// (`refuse`), or the proxy carrying it out itself (`emulate`, `dispatch::emulate`).
    pub cross_slot: CrossSlot,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            listen: Some("127.0.0.1:9180".to_string()),
            metrics: true,
            commands: false,
            cross_slot: CrossSlot::Refuse,
        }
    }
}

/// Finding the cluster and following its topology (restart to change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Cluster {
    /// Seed nodes, parsed from `redis://[user[:password]@]host:port` URLs (`rediss://` for
    /// TLS). Any reachable node is enough.
    pub upstreams: Vec<Upstream>,
    /// Period of the background topology refresh.
    #[serde(rename = "refresh_interval_ms")]
    pub refresh_interval: Duration,
    /// Least time between two refreshes triggered by MOVED or connection loss (debounce).
    #[serde(rename = "refresh_min_interval_ms")]
    pub refresh_min_interval: Duration,
    /// How often the topology watch asks a node for `CLUSTER NODES` and refreshes when it
    /// changed, so a failover or slot move is followed without traffic (0 = off).
    #[serde(rename = "watch_interval_ms")]
    pub watch_interval: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            upstreams: Vec::new(),
            refresh_interval: Duration::from_secs(10),
            refresh_min_interval: Duration::from_millis(100),
            watch_interval: Duration::from_millis(500),
        }
    }
}

/// Backend connections and how commands travel over them (restart to change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Backend {
    /// Time allowed to open (and authenticate) a backend connection.
    #[serde(rename = "connect_timeout_ms")]
    pub connect_timeout: Duration,
    /// A backend that has answered nothing for this long while requests wait is considered
    /// dead: its connection is closed and the waiting requests get an error. `None` = never.
    #[serde(rename = "command_timeout_ms")]
    pub command_timeout: Option<Duration>,
    /// Time a command may spend in TRYAGAIN / CLUSTERDOWN / LOADING retries and reconnects.
    #[serde(rename = "retry_deadline_ms")]
    pub retry_deadline: Duration,
    /// MOVED/ASK redirects followed per command before giving up (a loop means a broken cluster).
    pub max_redirects: u32,
    /// After a failed connect, requests for that node fail at once for this long.
    #[serde(rename = "reconnect_backoff_ms")]
    pub reconnect_backoff: Duration,
    /// A request whose node can't be reached (every connection to it dropped, connects
    /// refused) waits this long for the node or its replacement before it gets an error
    /// (within `retry_deadline_ms`; 0 = fail at once).
    #[serde(rename = "recovery_timeout_ms")]
    pub recovery_timeout: Duration,
    /// Requests that may wait for an unreachable node at once, over all workers; past it a
    /// request for such a node gets an error at once.
    pub recovery_queue_size: usize,
    /// Backend connections that blocked clients (BLPOP, XREAD BLOCK, ...) may hold at once,
    /// over all workers; a blocking command past it gets an error instead of a connection.
    pub max_blocking_connections: usize,
    /// Backend connections that scripts and functions (EVAL, EVALSHA, FCALL) may run on at
    /// once, over all workers, so a long script never holds back the shared pipes; past it
    /// a script goes on the shared pipe.
    pub max_script_connections: usize,
    /// Where read-only commands go: `primary`, `prefer-replica`, `replica`, `any`,
    /// `zone-affinity` or `zone-affinity-all`.
    pub read_from: ReadFrom,
    /// The availability zone the proxy runs in (`us-east-1a`), for the `zone-affinity`
    /// policies; `None` (also for an empty value): those policies act as `prefer-replica`.
    pub zone: Option<String>,
    /// Zones of nodes that report none themselves (Redis, Valkey without `availability-zone`),
    /// by address as the cluster announces it (`10.0.0.1:6379`); it wins over what a node
    /// reports (`[backend.node_zones]`).
    #[serde(rename = "backend.node_zones")]
    pub node_zones: BTreeMap<String, String>,
}

impl Default for Backend {
    fn default() -> Self {
        Backend {
            connect_timeout: Duration::from_secs(1),
            command_timeout: Some(Duration::from_secs(10)),
            retry_deadline: Duration::from_secs(5),
            max_redirects: 5,
            reconnect_backoff: Duration::from_millis(200),
            recovery_timeout: Duration::from_secs(2),
            recovery_queue_size: 10_000,
            max_blocking_connections: 1000,
            max_script_connections: 256,
            read_from: ReadFrom::Primary,
            zone: None,
            node_zones: BTreeMap::new(),
        }
    }
}

/// Request size limits and per-client pipelining (restart to change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Largest bulk string a client may send (Redis: proto-max-bulk-len).
    pub max_bulk_len: usize,
    /// Most arguments in one command.
    pub max_array_len: usize,
    /// Largest single command, in bytes (Redis: client-query-buffer-limit).
    pub max_query_buffer: usize,
    /// Longest inline (telnet-style) command line.
    pub max_inline_len: usize,
    /// Commands of one client waiting for a backend before the proxy stops reading its socket;
    /// TCP then pushes back on the client, so a fast writer can't grow the proxy's memory.
    pub max_pipeline_depth: usize,
    /// Keys remembered for `CLIENT TRACKING` clients (which client read which key); past it
    /// a remembered key is invalidated at once to make room (Redis: tracking-table-max-keys).
    pub max_tracked_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let request = RequestLimits::default();
        Limits {
            max_bulk_len: request.max_bulk_len,
            max_array_len: request.max_array_len,
            max_query_buffer: request.max_query_buffer,
            max_inline_len: request.max_inline_len,
            max_pipeline_depth: 4096,
            max_tracked_keys: 1_000_000,
        }
    }
}

/// How log lines are written: chosen when the logger is installed (restart to change).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Logging {
    /// Log line format on stderr: `text` for people, `json` for log collectors.
    #[serde(rename = "log_format")]
    pub format: LogFormat,
}

/// Which log lines are written: the binary applies a new filter at once on a reload.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LogLevel {
    /// Log filter (`info`, `debug`, `slotproxy=debug,warn`); unset: `RUST_LOG`, else `info`.
    #[serde(rename = "log_level")]
    pub filter: Option<String>,
}

/// Limits every client follows; a reload applies them to connected clients too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Clients {
    /// Client connections served at once; one more gets `-ERR max number of clients reached`.
    pub max_clients: usize,
    /// A client idle this long (no command in flight) is closed; `None` = never.
    #[serde(rename = "client_idle_timeout")]
    pub idle_timeout: Option<Duration>,
    /// Bytes of replies waiting for a client that does not read; past it, the client is
    /// disconnected. 0 = no limit.
    #[serde(rename = "client_output_buffer_limit")]
    pub output_buffer_limit: usize,
    /// Largest reply the proxy assembles from the parts of several nodes (`KEYS` without a
    /// hash tag, `SLOWLOG GET`, `PUBSUB CHANNELS`...); past it the client gets an error
    /// (`use SCAN` for KEYS) and the connection stays usable. 0 = no limit.
    ///
    /// Such a reply is the one thing a single command can make the proxy hold that no node
    /// holds: the nodes' parts, then the merged reply, then the client's copy. The default
    /// equals `client_output_buffer_limit`'s, because a reply larger than the output limit
    /// would get the client disconnected anyway (it is queued whole before a byte is
    /// written), so this turns that disconnection into a clear error, checked as the parts
    /// arrive, before the merge allocates anything.
    pub max_merged_reply: usize,
    /// How long a shutdown (SIGTERM/SIGINT) waits for replies owed to clients to be written.
    pub shutdown_grace: Duration,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            max_clients: 10_000,
            idle_timeout: None,
            output_buffer_limit: 64 * 1024 * 1024,
            max_merged_reply: 64 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Who may connect; a reload swaps the users for new clients.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Auth {
    /// Password of the `default` user: clients must `AUTH` before anything else.
    pub requirepass: Option<Secret>,
    /// ACL-style users file (`user alice on >password`), see `src/auth.rs`.
    pub users_file: Option<String>,
}

/// Which replicas serve reads; a reload applies a new bound at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Replicas {
    /// A replica more than this many bytes of replication stream behind its primary serves no
    /// reads until it catches up; 0 = no limit.
    #[serde(rename = "max_replica_lag")]
    pub max_lag: u64,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas {
            max_lag: 16 * 1024 * 1024,
        }
    }
}

/// The near cache (`[near_cache]`, `dispatch::near_cache`): `GET` replies of keys under the
/// configured prefixes kept in the proxy's memory, invalidated by the nodes (restart to
/// change: a restart starts with an empty cache).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NearCache {
    /// Serve cached `GET`s from memory.
    #[serde(rename = "near_cache.enabled")]
    pub enabled: bool,
    /// Only keys that start with one of these are cached; each is a `CLIENT TRACKING ON BCAST
    /// PREFIX` of the nodes' invalidation connections, so only their changes are reported.
    #[serde(rename = "near_cache.prefixes")]
    pub prefixes: Vec<String>,
    /// Bytes the cache may hold (keys, values and a fixed overhead per entry), over all
    /// workers: each worker's cache gets an equal share; past it, least recently used
    /// entries are evicted.
    #[serde(rename = "near_cache.max_memory")]
    pub max_memory: usize,
    /// A value larger than this is not cached (its reply is passed on as usual).
    #[serde(rename = "near_cache.max_value_size")]
    pub max_value_size: usize,
}

impl Default for NearCache {
    fn default() -> Self {
        NearCache {
            enabled: false,
            prefixes: Vec::new(),
            max_memory: 64 * 1024 * 1024,
            max_value_size: 1024 * 1024,
        }
    }
}

/// TLS on both sides (`[backend.tls]`, `[client.tls]`). A reload reads the certificates again;
/// turning TLS on or off needs a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tls {
    pub backend: BackendTlsConfig,
    pub client: ClientTlsConfig,
}

/// TLS to the cluster (`[backend.tls]`; on as well when the seeds are `rediss://` URLs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BackendTlsConfig {
    /// Speak TLS to every node, as `rediss://` seeds do.
    pub enabled: bool,
    /// CA bundle (PEM) that signed the nodes' certificates; none = the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for clusters that require one (mTLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for tests and emergencies: anyone on the path can
    /// then read and change the traffic, so start-up says so at warn level.
    pub insecure_skip_verify: bool,
    /// Name every node's certificate is checked against, when one certificate names the
    /// cluster rather than each node; none = each node's announced hostname, else the seed's
    /// DNS name, else the node's IP address.
    pub server_name: Option<String>,
}

/// TLS on the client listener (`[client.tls]`): on when a certificate and key are given; the
/// listener then accepts TLS clients only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientTlsConfig {
    /// The proxy's certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// CA bundle (PEM): when set, clients must present a certificate it signed (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

impl ClientTlsConfig {
    /// Either file set means TLS was asked for (a missing other half is a config problem,
    /// never a silent plain-text listener).
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// A secret from the configuration (a password): `Debug` never shows it, so it can't reach
/// a log line or a panic message.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Lets clap read `--requirepass` straight into a `Secret`, so even `Debug` of the parsed
/// flags can't show it.
impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text)
    }
}

/// Serialized (to compare configurations) as its SHA-256, never as itself: a change still
/// shows, the secret does not.
impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.0.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        serializer.serialize_str(&hex)
    }
}

/// How log lines are written.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans).
    Json,
}

/// Read-from-replica policy. Writes always go to primaries; a read sent to a replica that is
/// unreachable or loading falls back to the primary.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReadFrom {
    /// Every command on the slot's primary (always up to date).
    #[default]
    Primary,
    /// Reads on a replica of the slot's shard when it has one, else on the primary.
    PreferReplica,
    /// Reads on a replica; the primary only when no replica is reachable.
    Replica,
    /// Reads spread over the primary and its replicas.
    Any,
    /// Reads on a replica in the proxy's own `zone`, else on any replica, else on the primary
    /// (Valkey GLIDE's `AZAffinity`): a same-zone read saves a cross-zone hop and its cost.
    ZoneAffinity,
    /// Reads on a replica in the proxy's `zone`, else the primary if it is in that zone, else
    /// any replica, else the primary (GLIDE's `AZAffinityReplicasAndPrimary`).
    ZoneAffinityAll,
}

impl ReadFrom {
    /// Whether the policy looks at the nodes' availability zones.
    pub fn is_zone_aware(self) -> bool {
        matches!(self, ReadFrom::ZoneAffinity | ReadFrom::ZoneAffinityAll)
    }
}

/// How client sockets are read and written (`io`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum IoMode {
    /// io_uring where the kernel allows it, else epoll (said once in the log at start).
    #[default]
    Auto,
    /// Readiness through epoll: one `recv` and one `send` system call per client turn.
    Epoll,
    /// io_uring only: the proxy does not start where the kernel refuses it.
    Uring,
}

/// What a command whose keys span several slots gets (`cross_slot`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum CrossSlot {
    /// Redis Cluster's own `-CROSSSLOT Keys in request don't hash to the same slot`.
    #[default]
    Refuse,
    /// The proxy reads the sources from their owners and writes the result itself (RENAME,
    /// SMOVE, SUNIONSTORE, SORT ... BY/GET, ...): the result of one Redis, without its
    /// atomicity.
    Emulate,
}

impl Config {
    /// The defaults with the settings of a TOML file laid over them (no environment, no
    /// flags): for tests and tools. The binary uses [`Config::load`].
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let file = Layer::from_toml(text)?;
        Config::layered([file], |_| None).map_err(|e| e.to_string())
    }

    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_bulk_len: self.limits.max_bulk_len,
            max_array_len: self.limits.max_array_len,
            max_query_buffer: self.limits.max_query_buffer,
            max_inline_len: self.limits.max_inline_len,
        }
    }

    pub fn worker_count(&self) -> usize {
        if self.listener.workers > 0 {
            self.listener.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        self.backend.connect_timeout
    }

    pub fn command_timeout(&self) -> Option<Duration> {
        self.backend.command_timeout
    }

    pub fn client_idle_timeout(&self) -> Option<Duration> {
        self.clients.idle_timeout
    }

    pub fn retry_deadline(&self) -> Duration {
        self.backend.retry_deadline
    }

    /// The seed nodes.
    pub fn seeds(&self) -> &[Upstream] {
        &self.cluster.upstreams
    }

    /// The users clients authenticate as, from `requirepass` and `users_file`.
    pub fn users(&self) -> Result<Users, Vec<String>> {
        let file = match &self.auth.users_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(e) => return Err(vec![format!("users_file: cannot read {path}: {e}")]),
            },
            None => None,
        };
        Users::new(
            self.auth.requirepass.as_ref().map(|s| s.0.as_str()),
            file.as_deref(),
        )
    }

    /// Whether backend connections use TLS: `rediss://` seeds or `[backend.tls] enabled`.
    pub fn backend_tls_enabled(&self) -> bool {
        self.tls.backend.enabled || self.seeds().iter().any(|s| s.tls)
    }

    /// Checks the whole configuration and returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = self.seed_problems();
        problems.append(&mut self.problems_besides_seeds());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn seed_problems(&self) -> Vec<String> {
        let seeds = self.seeds();
        if seeds.is_empty() {
            return vec![
                "upstreams: at least one seed node is needed (--upstream redis://host:port)".into(),
            ];
        }
        if seeds.iter().any(|s| s.tls) && seeds.iter().any(|s| !s.tls) {
            return vec![
                "upstreams: mix redis:// and rediss:// seeds; the cluster speaks TLS or it does not"
                    .into(),
            ];
        }
        Vec::new()
    }

    /// Every problem but those of the seed list (which `layer` reports itself when a URL
    /// could not be read).
    fn problems_besides_seeds(&self) -> Vec<String> {
        let mut problems = Vec::new();
        self.validate_addresses(&mut problems);
        self.validate_tls(&mut problems);
        self.validate_numbers(&mut problems);
        self.validate_zones(&mut problems);
        self.validate_near_cache(&mut problems);
        if let Err(mut users) = self.users() {
            problems.append(&mut users);
        }
        problems
    }

    fn validate_addresses(&self, problems: &mut Vec<String>) {
        let listen = &self.listener.listen;
        if listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "listen: '{listen}' is not an address like 127.0.0.1:6380"
            ));
        }
        if let Some(admin) = &self.admin.listen {
            if admin.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!(
                    "admin_listen: '{admin}' is not an address like 127.0.0.1:9180"
                ));
            }
        }
    }

    fn validate_numbers(&self, problems: &mut Vec<String>) {
        let limits = &self.limits;
        let positive = [
            ("max_bulk_len", limits.max_bulk_len == 0),
            ("max_array_len", limits.max_array_len == 0),
            ("max_query_buffer", limits.max_query_buffer == 0),
            ("max_inline_len", limits.max_inline_len == 0),
            ("max_pipeline_depth", limits.max_pipeline_depth == 0),
            ("max_tracked_keys", limits.max_tracked_keys == 0),
            ("connect_timeout_ms", self.backend.connect_timeout.is_zero()),
            (
                "refresh_interval_ms",
                self.cluster.refresh_interval.is_zero(),
            ),
        ];
        for (name, _) in positive.iter().filter(|(_, zero)| *zero) {
            problems.push(format!("{name}: must be greater than 0"));
        }
        if self.listener.workers > 1024 {
            problems.push(format!(
                "workers: {} is more than 1024",
                self.listener.workers
            ));
        }
        if self.clients.max_clients == 0 {
            problems.push("max_clients: must be greater than 0".into());
        }
    }

    /// A node of the zone mapping is named `host:port`, as the cluster announces it, and has
    /// a zone (an empty one would match no proxy: a mistake to report).
    fn validate_zones(&self, problems: &mut Vec<String>) {
        for (node, zone) in &self.backend.node_zones {
            let port = node.rsplit_once(':').and_then(|(host, port)| {
                (!host.is_empty()).then_some(())?;
                port.parse::<u16>().ok()
            });
            if port.is_none() {
                problems.push(format!(
                    "backend.node_zones: '{node}' is not a node address like 10.0.0.1:6379"
                ));
            }
            if zone.trim().is_empty() {
                problems.push(format!("backend.node_zones: the zone of '{node}' is empty"));
            }
        }
    }

    /// The near cache needs prefixes the nodes accept on one connection: non-empty (an empty
    /// one would report every key's change), and none the start of another (Redis refuses
    /// overlapping prefixes).
    fn validate_near_cache(&self, problems: &mut Vec<String>) {
        let cache = &self.near_cache;
        if !cache.enabled {
            return;
        }
        if cache.prefixes.is_empty() {
            problems.push(
                "near_cache.prefixes: the near cache needs at least one key prefix (--near-cache-prefix user:)"
                    .into(),
            );
        }
        if cache.prefixes.iter().any(String::is_empty) {
            problems.push("near_cache.prefixes: a prefix can't be empty".into());
        }
        for (i, a) in cache.prefixes.iter().enumerate() {
            for b in cache.prefixes.iter().skip(i + 1) {
                if !a.is_empty()
                    && !b.is_empty()
                    && (a.starts_with(b.as_str()) || b.starts_with(a.as_str()))
                {
                    problems.push(format!(
                        "near_cache.prefixes: '{a}' and '{b}' overlap (one starts with the other); keep the shorter"
                    ));
                }
            }
        }
        if cache.max_memory == 0 {
            problems.push("near_cache.max_memory: must be greater than 0".into());
        }
    }

    /// TLS settings that contradict each other or do nothing; the files themselves are read
    /// by `tls::check` and at start-up.
    fn validate_tls(&self, problems: &mut Vec<String>) {
        let backend = &self.tls.backend;
        if !self.backend_tls_enabled() {
            let set = [
                ("ca_file", backend.ca_file.is_some()),
                ("cert_file", backend.cert_file.is_some()),
                ("key_file", backend.key_file.is_some()),
                ("insecure_skip_verify", backend.insecure_skip_verify),
                ("server_name", backend.server_name.is_some()),
            ];
            for (name, _) in set.iter().filter(|(_, set)| *set) {
                problems.push(format!(
                    "backend.tls.{name}: TLS to the cluster is off; use rediss:// seeds or backend.tls.enabled = true"
                ));
            }
        }
        if backend.cert_file.is_some() != backend.key_file.is_some() {
            problems.push(
                "backend.tls: cert_file and key_file go together (the client certificate and its key)".into(),
            );
        }
        if let Some(name) = &backend.server_name {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                problems.push(format!(
                    "backend.tls.server_name: '{name}' is not a DNS name or IP address"
                ));
            }
        }
        let client = &self.tls.client;
        if client.cert_file.is_some() != client.key_file.is_some() {
            problems.push(
                "client.tls: cert_file and key_file go together (the listener's certificate and its key)".into(),
            );
        }
        if client.client_ca_file.is_some() && !client.enabled() {
            problems.push(
                "client.tls.client_ca_file: needs cert_file and key_file (TLS on the listener)"
                    .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_seeds(urls: &str) -> Config {
        let mut config = Config::default();
        config.cluster.upstreams = parse_upstreams(&[urls.to_string()]).unwrap();
        config
    }

    #[test]
    fn comma_separated_seeds_and_all_problems_reported() {
        assert_eq!(with_seeds("redis://a:1, redis://b:2").seeds().len(), 2);
        let mut bad = Config::default();
        bad.listener.listen = "nope".into();
        bad.limits.max_bulk_len = 0;
        let problems = bad.validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn near_cache_prefixes_are_checked_when_on() {
        let with = |enabled: bool, prefixes: &[&str], max_memory: usize| {
            let mut config = with_seeds("redis://a:1");
            config.near_cache = NearCache {
                enabled,
                prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
                max_memory,
                ..NearCache::default()
            };
            config.validate().err().unwrap_or_default()
        };
        let cases: &[(bool, &[&str], usize, &[&str])] = &[
            (false, &[], 0, &[]),
            (true, &["user:", "cart:"], 1, &[]),
            (
                true,
                &[],
                1,
                &["near_cache.prefixes: the near cache needs at least one key prefix"],
            ),
            (
                true,
                &["user:", ""],
                1,
                &["near_cache.prefixes: a prefix can't be empty"],
            ),
            (
                true,
                &["user:", "user:1"],
                1,
                &["near_cache.prefixes: 'user:' and 'user:1' overlap"],
            ),
            (
                true,
                &["a"],
                0,
                &["near_cache.max_memory: must be greater than 0"],
            ),
        ];
        for (enabled, prefixes, max_memory, want) in cases {
            let problems = with(*enabled, prefixes, *max_memory);
            assert_eq!(problems.len(), want.len(), "{prefixes:?}: {problems:?}");
            for (problem, want) in problems.iter().zip(want.iter()) {
                assert!(problem.starts_with(want), "{problem} / {want}");
            }
        }
    }

    #[test]
    fn tls_seeds_and_settings() {
        let tls = with_seeds("rediss://a:1");
        assert!(tls.backend_tls_enabled());
        assert!(tls.validate().is_ok());
        let mixed = with_seeds("rediss://a:1,redis://b:2");
        assert_eq!(mixed.validate().unwrap_err().len(), 1);
        let mut loose = with_seeds("redis://a:1");
        loose.tls.backend.ca_file = Some("ca.pem".into());
        loose.tls.backend.cert_file = Some("c.pem".into());
        loose.tls.client.client_ca_file = Some("ca.pem".into());
        // ca_file and cert_file without TLS, cert without key, client CA without a listener cert.
        assert_eq!(loose.validate().unwrap_err().len(), 4);
        let parsed = Config::from_toml(
            "[backend.tls]\nenabled = true\nca_file = \"ca.pem\"\n[client.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n",
        )
        .unwrap();
        assert!(parsed.backend_tls_enabled() && parsed.tls.client.enabled());
        assert!(Config::from_toml("[backend.tls]\nca = \"x\"").is_err());
    }

    #[test]
    fn secrets_stay_out_of_errors_debug_and_serialization() {
        let error = parse_upstream("redis://:s3cret@host").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        let error = parse_upstream("http://:s3cret@host:1").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        let mut config = with_seeds("redis://:s3cret@host:1");
        config.auth.requirepass = Some(Secret("s3cret".into()));
        assert!(!format!("{config:?}").contains("s3cret"));
        let json = serde_json::to_string(&(&config.cluster, &config.auth)).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
        let other = serde_json::to_string(&Secret("other".into())).unwrap();
        assert_ne!(
            other,
            serde_json::to_string(&Secret("s3cret".into())).unwrap()
        );
    }

    #[test]
    fn zone_settings_are_checked() {
        let cases: &[(&str, &[&str])] = &[
            ("zone = \"us-east-1a\"\n[backend.node_zones]\n\"10.0.0.1:6379\" = \"b\"\n\"[::1]:7000\" = \"c\"\n\"cache.example:6380\" = \"d\"", &[]),
            // An empty zone is no zone (see `layer`), not a problem.
            ("zone = \" \"", &[]),
            (
                "[backend.node_zones]\n\"nohost\" = \"z\"\n\":1\" = \"z\"\n\"a:port\" = \"z\"",
                &[
                    "backend.node_zones: ':1' is not a node address like 10.0.0.1:6379",
                    "backend.node_zones: 'a:port' is not a node address like 10.0.0.1:6379",
                    "backend.node_zones: 'nohost' is not a node address like 10.0.0.1:6379",
                ],
            ),
            (
                "[backend.node_zones]\n\"a:1\" = \"\"",
                &["backend.node_zones: the zone of 'a:1' is empty"],
            ),
        ];
        for (text, want) in cases {
            let mut config = Config::from_toml(text).unwrap();
            config.cluster.upstreams = parse_upstreams(&["a:1".to_string()]).unwrap();
            let problems = config.validate().err().unwrap_or_default();
            assert_eq!(problems, *want, "{text}");
        }
    }

    #[test]
    fn toml_rejects_unknown_keys() {
        assert!(Config::from_toml("listen = \"127.0.0.1:1\"\nworkers = 2").is_ok());
        let error = Config::from_toml("lisen = 1").unwrap_err();
        assert!(error.contains("unknown field `lisen`"), "{error}");
    }
}

#[cfg(test)]
mod example_files {
    use super::*;

    /// The documented example must stay loadable and list the real defaults.
    #[test]
    fn example_config_matches_defaults() {
        let text = include_str!("../../config/slotproxy.toml");
        let parsed = Config::from_toml(text).unwrap();
        let defaults = Config::default();
        assert_eq!(
            format!(
                "{:?}",
                Config {
                    cluster: Cluster {
                        upstreams: vec![],
                        ..parsed.cluster
                    },
                    ..parsed
                }
            ),
            format!("{defaults:?}")
        );
        let dev = Config::from_toml(include_str!("../../config/dev.toml")).unwrap();
        assert!(dev.validate().is_ok());
    }
}

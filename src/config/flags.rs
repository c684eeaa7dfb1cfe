//! The command-line flags, each also settable as a `SLOTPROXY_*` environment variable (clap
//! takes the flag over the variable). Their names and meanings are a contract: scripts and
//! deployments use them. Every flag is unset unless given, so it only overrides what it names;
//! [`Flags::layer`] turns them into the layer laid over the file.

use std::path::PathBuf;
use std::time::Duration;

use super::duration;
use super::layer::{
    BackendTable, BackendTlsLayer, ClientTable, ClientTlsLayer, Layer, NearCacheLayer,
};
use super::{CrossSlot, IoMode, LogFormat, ReadFrom, Secret};

/// Every setting that has a flag, grouped by section.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct Flags {
    #[command(flatten)]
    pub listener: ListenerFlags,
    #[command(flatten)]
    pub cluster: ClusterFlags,
    #[command(flatten)]
    pub admin: AdminFlags,
    #[command(flatten)]
    pub backend: BackendFlags,
    #[command(flatten)]
    pub backend_tls: BackendTlsFlags,
    #[command(flatten)]
    pub client_tls: ClientTlsFlags,
    #[command(flatten)]
    pub logging: LoggingFlags,
    #[command(flatten)]
    pub auth: AuthFlags,
    #[command(flatten)]
    pub clients: ClientsFlags,
    #[command(flatten)]
    pub near_cache: NearCacheFlags,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct NearCacheFlags {
    /// Serve GETs of keys under --near-cache-prefix from the proxy's memory, invalidated by the nodes
    #[arg(long = "near-cache", env = "SLOTPROXY_NEAR_CACHE")]
    pub near_cache: bool,
    /// Key prefix whose GETs the near cache keeps; repeat or comma-separate
    #[arg(
        long = "near-cache-prefix",
        env = "SLOTPROXY_NEAR_CACHE_PREFIX",
        value_delimiter = ','
    )]
    pub near_cache_prefixes: Vec<String>,
    /// Bytes the near cache may hold over all workers [default: 67108864]
    #[arg(
        long = "near-cache-max-memory",
        env = "SLOTPROXY_NEAR_CACHE_MAX_MEMORY",
        value_name = "BYTES"
    )]
    pub near_cache_max_memory: Option<usize>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct ListenerFlags {
    /// Client listener address [default: 127.0.0.1:6380]
    #[arg(long, env = "SLOTPROXY_LISTEN")]
    pub listen: Option<String>,
    /// Worker threads [default: available cores]
    #[arg(long, env = "SLOTPROXY_WORKERS")]
    pub workers: Option<usize>,
    /// Client socket I/O: auto (io_uring where the kernel allows it, else epoll), epoll or uring [default: auto]
    #[arg(long, env = "SLOTPROXY_IO")]
    pub io: Option<IoMode>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClusterFlags {
    /// Seed node URL, redis://[user[:password]@]host:port (rediss:// for TLS); repeat or comma-separate
    #[arg(long = "upstream", env = "SLOTPROXY_UPSTREAM", value_delimiter = ',')]
    pub upstreams: Vec<String>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct BackendFlags {
    /// Where read-only commands go: primary, prefer-replica, replica, any, zone-affinity or zone-affinity-all [default: primary]
    #[arg(long, env = "SLOTPROXY_READ_FROM")]
    pub read_from: Option<ReadFrom>,
    /// The proxy's availability zone (e.g. us-east-1a), for read_from = zone-affinity[-all] [default: none]
    #[arg(long, env = "SLOTPROXY_ZONE")]
    pub zone: Option<String>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct AdminFlags {
    /// Admin HTTP listener (/healthz, /readyz, /metrics) [default: 127.0.0.1:9180]
    #[arg(long, env = "SLOTPROXY_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Run CONFIG SET, CONFIG RESETSTAT, keyless DEBUG, ACL SETUSER/DELUSER on every node
    #[arg(long, env = "SLOTPROXY_ADMIN_COMMANDS")]
    pub admin_commands: bool,
    /// Commands whose keys span several slots: refuse (CROSSSLOT) or emulate [default: refuse]
    #[arg(long, env = "SLOTPROXY_CROSS_SLOT")]
    pub cross_slot: Option<CrossSlot>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct BackendTlsFlags {
    /// CA bundle (PEM) for the nodes' certificates [default: the system's trust store]
    #[arg(long, env = "SLOTPROXY_UPSTREAM_TLS_CA")]
    pub upstream_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for nodes that require one (mTLS)
    #[arg(long, env = "SLOTPROXY_UPSTREAM_TLS_CERT")]
    pub upstream_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --upstream-tls-cert
    #[arg(long, env = "SLOTPROXY_UPSTREAM_TLS_KEY")]
    pub upstream_tls_key: Option<PathBuf>,
    /// Accept any node certificate (tests and emergencies only: no protection on the path)
    #[arg(long, env = "SLOTPROXY_UPSTREAM_TLS_INSECURE")]
    pub upstream_tls_insecure: bool,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClientTlsFlags {
    /// Certificate (PEM) of the client listener, which then accepts TLS clients only
    #[arg(long, env = "SLOTPROXY_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(long, env = "SLOTPROXY_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM): clients must present a certificate it signed (mTLS)
    #[arg(long, env = "SLOTPROXY_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct LoggingFlags {
    /// Log filter, e.g. info or slotproxy=debug (RUST_LOG also works)
    #[arg(long, env = "SLOTPROXY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format on stderr: text or json [default: text]
    #[arg(long, env = "SLOTPROXY_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct AuthFlags {
    /// Password clients must AUTH with (the default user's); prefer the environment variable
    #[arg(long, env = "SLOTPROXY_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<Secret>,
    /// ACL-style users file: `user alice on >password` per line
    #[arg(long, env = "SLOTPROXY_USERS_FILE")]
    pub users_file: Option<String>,
}

#[derive(clap::Args, Clone, Debug, Default)]
pub struct ClientsFlags {
    /// Most client connections at once [default: 10000]
    #[arg(long, env = "SLOTPROXY_MAX_CLIENTS")]
    pub max_clients: Option<usize>,
    /// Close clients idle for this many seconds (or 500ms, 2m, ...); 0 = never [default: 0]
    #[arg(long, env = "SLOTPROXY_CLIENT_IDLE_TIMEOUT", value_name = "SECS", value_parser = duration::parse_seconds)]
    pub client_idle_timeout: Option<Duration>,
    /// Disconnect a client whose unread replies pass this many bytes; 0 = no limit [default: 67108864]
    #[arg(
        long,
        env = "SLOTPROXY_CLIENT_OUTPUT_BUFFER_LIMIT",
        value_name = "BYTES"
    )]
    pub client_output_buffer_limit: Option<usize>,
    /// Refuse (with an error; KEYS: use SCAN) a reply merged from several nodes that passes this many bytes; 0 = no limit [default: 67108864]
    #[arg(long, env = "SLOTPROXY_MAX_MERGED_REPLY", value_name = "BYTES")]
    pub max_merged_reply: Option<usize>,
    /// Seconds (or 500ms, 1m, ...) a shutdown waits for owed replies to be written [default: 10]
    #[arg(long, env = "SLOTPROXY_SHUTDOWN_GRACE", value_name = "SECS", value_parser = duration::parse_seconds)]
    pub shutdown_grace: Option<Duration>,
}

impl Flags {
    /// The flags given, as a layer over the file. The on/off switches only ever turn a setting
    /// on: leaving one out keeps the file's value.
    pub fn layer(&self) -> Layer {
        let Flags {
            listener,
            cluster,
            admin,
            backend,
            backend_tls,
            client_tls,
            logging,
            auth,
            clients,
            near_cache,
        } = self.clone();
        Layer {
            listen: listener.listen,
            workers: listener.workers,
            io: listener.io,
            upstreams: (!cluster.upstreams.is_empty()).then_some(cluster.upstreams),
            read_from: backend.read_from,
            zone: backend.zone,
            admin_listen: admin.admin_listen,
            admin_commands: admin.admin_commands.then_some(true),
            cross_slot: admin.cross_slot,
            log_level: logging.log_level,
            log_format: logging.log_format,
            requirepass: auth.requirepass,
            users_file: auth.users_file,
            max_clients: clients.max_clients,
            client_idle_timeout: clients.client_idle_timeout,
            client_output_buffer_limit: clients.client_output_buffer_limit,
            max_merged_reply: clients.max_merged_reply,
            shutdown_grace: clients.shutdown_grace,
            backend: BackendTable {
                tls: BackendTlsLayer {
                    ca_file: backend_tls.upstream_tls_ca,
                    cert_file: backend_tls.upstream_tls_cert,
                    key_file: backend_tls.upstream_tls_key,
                    insecure_skip_verify: backend_tls.upstream_tls_insecure.then_some(true),
                    ..BackendTlsLayer::default()
                },
                node_zones: None,
            },
            client: ClientTable {
                tls: ClientTlsLayer {
                    cert_file: client_tls.tls_cert,
                    key_file: client_tls.tls_key,
                    client_ca_file: client_tls.tls_client_ca,
                },
            },
            near_cache: NearCacheLayer {
                enabled: near_cache.near_cache.then_some(true),
                prefixes: (!near_cache.near_cache_prefixes.is_empty())
                    .then_some(near_cache.near_cache_prefixes),
                max_memory: near_cache.near_cache_max_memory,
                max_value_size: None,
            },
            ..Layer::default()
        }
    }
}

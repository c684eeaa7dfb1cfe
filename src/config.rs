//! Proxy configuration: defaults, the TOML file, and validation that reports every problem at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::auth::Users;
use crate::resp::RequestLimits;

/// Everything the proxy needs to run. Flags (in `main.rs`) override the file, the file
/// overrides these defaults.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Client listener address.
    pub listen: String,
    /// Seed nodes: `redis://[user[:password]@]host:port` (`rediss://` for TLS). Any reachable
    /// node is enough.
    pub upstreams: Vec<String>,
    /// Admin HTTP listener (`/healthz`, `/metrics`); `None` turns it off.
    pub admin_listen: Option<String>,
    /// Worker threads, each with its own listener and backend connections; 0 = available cores.
    pub workers: usize,
    /// Log line format on stderr: `text` for people, `json` for log collectors.
    /// Log filter (`info`, `debug`, `slotproxy=debug,warn`); unset: `RUST_LOG`, else `info`.
    /// A reload (SIGHUP) applies a new level at once.
    pub log_level: Option<String>,
    pub log_format: LogFormat,
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
    /// Time allowed to open (and authenticate) a backend connection.
    pub connect_timeout_ms: u64,
    /// A backend that has answered nothing for this long while requests wait is considered
    /// dead: its connection is closed and the waiting requests get an error. 0 = never.
    pub command_timeout_ms: u64,
    /// Time a command may spend in TRYAGAIN / CLUSTERDOWN / LOADING retries and reconnects.
    pub retry_deadline_ms: u64,
    /// MOVED/ASK redirects followed per command before giving up (a loop means a broken cluster).
    pub max_redirects: u32,
    /// Period of the background topology refresh.
    pub refresh_interval_ms: u64,
    /// Least time between two refreshes triggered by MOVED or connection loss (debounce).
    pub refresh_min_interval_ms: u64,
    /// After a failed connect, requests for that node fail at once for this long.
    pub reconnect_backoff_ms: u64,
    /// Backend connections that blocked clients (BLPOP, XREAD BLOCK, ...) may hold at once,
    /// over all workers; a blocking command past it gets an error instead of a connection.
    pub max_blocking_connections: usize,
    /// Where read-only commands go: `primary`, `prefer-replica`, `replica` or `any`.
    pub read_from: ReadFrom,
    /// A replica more than this many bytes of replication stream behind its primary serves no
    /// reads until it catches up; 0 = no limit.
    pub max_replica_lag: u64,
    /// Allow commands that change every node's server configuration (CONFIG SET/RESETSTAT,
    /// keyless DEBUG, ACL SETUSER/DELUSER); they then run on all nodes.
    pub admin_commands: bool,
    /// Record Prometheus metrics (served on `/metrics`). Off: no recorder, every recording
    /// site is a no-op (for measuring what recording costs).
    pub metrics: bool,
    /// Password of the `default` user: clients must `AUTH` before anything else.
    pub requirepass: Option<Secret>,
    /// ACL-style users file (`user alice on >password`), see `src/auth.rs`.
    pub users_file: Option<String>,
    /// Client connections served at once; one more gets `-ERR max number of clients reached`.
    pub max_clients: usize,
    /// Seconds a client may stay idle (no command in flight) before it is closed; 0 = never.
    pub client_idle_timeout: u64,
    /// Bytes of replies waiting for a client that does not read; past it, the client is
    /// disconnected. 0 = no limit.
    pub client_output_buffer_limit: usize,
    /// Seconds a shutdown (SIGTERM/SIGINT) waits for replies owed to clients to be written.
    pub shutdown_grace: u64,
    /// Backend settings kept in a section of their own (`[backend.tls]`).
    pub backend: BackendConfig,
    /// Client-side settings kept in a section of their own (`[client.tls]`).
    pub client: ClientConfig,
}

/// The `[backend]` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendConfig {
    /// `[backend.tls]`.
    pub tls: BackendTlsConfig,
}

/// TLS to the cluster (`[backend.tls]`; on as well when the seeds are `rediss://` URLs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
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

/// The `[client]` section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// `[client.tls]`.
    pub tls: ClientTlsConfig,
}

/// TLS on the client listener (`[client.tls]`): on when a certificate and key are given; the
/// listener then accepts TLS clients only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields, spans).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("'{other}': expected text or json")),
        }
    }
}

/// Read-from-replica policy. Writes always go to primaries; a read sent to a replica that is
/// unreachable or loading falls back to the primary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
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
}

impl std::str::FromStr for ReadFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<ReadFrom, String> {
        match s {
            "primary" => Ok(ReadFrom::Primary),
            "prefer-replica" => Ok(ReadFrom::PreferReplica),
            "replica" => Ok(ReadFrom::Replica),
            "any" => Ok(ReadFrom::Any),
            other => Err(format!(
                "'{other}': expected primary, prefer-replica, replica or any"
            )),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let limits = RequestLimits::default();
        Config {
            listen: "127.0.0.1:6380".to_string(),
            upstreams: Vec::new(),
            admin_listen: Some("127.0.0.1:9180".to_string()),
            workers: 0,
            log_level: None,
            log_format: LogFormat::Text,
            max_bulk_len: limits.max_bulk_len,
            max_array_len: limits.max_array_len,
            max_query_buffer: limits.max_query_buffer,
            max_inline_len: limits.max_inline_len,
            max_pipeline_depth: 4096,
            connect_timeout_ms: 1000,
            command_timeout_ms: 10_000,
            retry_deadline_ms: 5_000,
            max_redirects: 5,
            refresh_interval_ms: 10_000,
            refresh_min_interval_ms: 100,
            reconnect_backoff_ms: 200,
            max_blocking_connections: 1000,
            read_from: ReadFrom::Primary,
            max_replica_lag: 16 * 1024 * 1024,
            admin_commands: false,
            metrics: true,
            requirepass: None,
            users_file: None,
            max_clients: 10_000,
            client_idle_timeout: 0,
            client_output_buffer_limit: 64 * 1024 * 1024,
            shutdown_grace: 10,
            backend: BackendConfig::default(),
            client: ClientConfig::default(),
        }
    }
}

/// A seed node parsed from a `redis://` or `rediss://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `rediss://`: TLS to the cluster.
    pub tls: bool,
}

/// What every new backend connection needs to be let in: the password or ACL user sent with
/// `AUTH`, and the TLS client set-up (CA, client certificate) when the cluster speaks TLS.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    /// Built once at start-up (`Proxy::start`); `None` = plain TCP.
    pub tls: Option<Arc<crate::backend::tls::BackendTls>>,
}

/// Written by hand so that a stray `{:?}` can never print the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Config {
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn limits(&self) -> RequestLimits {
        RequestLimits {
            max_bulk_len: self.max_bulk_len,
            max_array_len: self.max_array_len,
            max_query_buffer: self.max_query_buffer,
            max_inline_len: self.max_inline_len,
        }
    }

    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn command_timeout(&self) -> Option<Duration> {
        (self.command_timeout_ms > 0).then(|| Duration::from_millis(self.command_timeout_ms))
    }

    /// The users clients authenticate as, from `requirepass` and `users_file`.
    pub fn users(&self) -> Result<Users, Vec<String>> {
        let file = match &self.users_file {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Some(text),
                Err(e) => return Err(vec![format!("users_file: cannot read {path}: {e}")]),
            },
            None => None,
        };
        Users::new(
            self.requirepass.as_ref().map(|s| s.0.as_str()),
            file.as_deref(),
        )
    }

    pub fn client_idle_timeout(&self) -> Option<Duration> {
        (self.client_idle_timeout > 0).then(|| Duration::from_secs(self.client_idle_timeout))
    }

    pub fn retry_deadline(&self) -> Duration {
        Duration::from_millis(self.retry_deadline_ms)
    }

    /// Seeds parsed from `upstreams` (entries may also be comma-separated lists).
    pub fn seeds(&self) -> Result<Vec<Upstream>, String> {
        self.upstreams
            .iter()
            .flat_map(|u| u.split(','))
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(parse_upstream)
            .collect()
    }

    /// Backend credentials: those of the first seed that names any.
    pub fn credentials(&self) -> Credentials {
        self.seeds()
            .unwrap_or_default()
            .into_iter()
            .find(|s| s.password.is_some() || s.username.is_some())
            .map(|s| Credentials {
                username: s.username,
                password: s.password,
                tls: None,
            })
            .unwrap_or_default()
    }

    /// Whether backend connections use TLS: `rediss://` seeds or `[backend.tls] enabled`.
    pub fn backend_tls_enabled(&self) -> bool {
        self.backend.tls.enabled || self.seeds().unwrap_or_default().iter().any(|s| s.tls)
    }

    /// Checks the whole configuration and returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "listen: '{}' is not an address like 127.0.0.1:6380",
                self.listen
            ));
        }
        if let Some(admin) = &self.admin_listen {
            if admin.parse::<std::net::SocketAddr>().is_err() {
                problems.push(format!(
                    "admin_listen: '{admin}' is not an address like 127.0.0.1:9180"
                ));
            }
        }
        match self.seeds() {
            Ok(seeds) if seeds.is_empty() => problems.push(
                "upstreams: at least one seed node is needed (--upstream redis://host:port)".into(),
            ),
            Ok(seeds) => {
                if seeds.iter().any(|s| s.tls) && seeds.iter().any(|s| !s.tls) {
                    problems.push(
                        "upstreams: mix redis:// and rediss:// seeds; the cluster speaks TLS or it does not".into(),
                    );
                }
            }
            Err(e) => problems.push(format!("upstreams: {e}")),
        }
        self.validate_tls(&mut problems);
        let positive = [
            ("max_bulk_len", self.max_bulk_len as u64),
            ("max_array_len", self.max_array_len as u64),
            ("max_query_buffer", self.max_query_buffer as u64),
            ("max_inline_len", self.max_inline_len as u64),
            ("max_pipeline_depth", self.max_pipeline_depth as u64),
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("refresh_interval_ms", self.refresh_interval_ms),
        ];
        for (name, value) in positive {
            if value == 0 {
                problems.push(format!("{name}: must be greater than 0"));
            }
        }
        if self.workers > 1024 {
            problems.push(format!("workers: {} is more than 1024", self.workers));
        }
        if self.max_clients == 0 {
            problems.push("max_clients: must be greater than 0".into());
        }
        if let Err(mut users) = self.users() {
            problems.append(&mut users);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

impl Config {
    /// TLS settings that contradict each other or do nothing; the files themselves are read
    /// by `check_tls` (lib.rs) and at start-up.
    fn validate_tls(&self, problems: &mut Vec<String>) {
        let backend = &self.backend.tls;
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
        let client = &self.client.tls;
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

/// Parses `redis://[user[:password]@]host:port` or `rediss://...` (TLS); a bare `host:port`
/// is accepted too.
pub fn parse_upstream(url: &str) -> Result<Upstream, String> {
    let (rest, tls) = if let Some(rest) = url.strip_prefix("redis://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("rediss://") {
        (rest, true)
    } else if url.contains("://") {
        // Everything after the scheme may hold a password: name the scheme only.
        let scheme = url.split("://").next().unwrap_or_default();
        return Err(format!(
            "'{scheme}://...': the scheme must be redis:// or rediss://"
        ));
    } else {
        (url, false)
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (
                (!user.is_empty()).then(|| user.to_string()),
                Some(pass.to_string()),
            ),
            None => (Some(u.to_string()), None),
        },
    };
    let Some((host, port)) = hostport.rsplit_once(':') else {
        // Named by host and port only: the rest of the URL may hold a password.
        return Err(format!("'{hostport}': expected host:port"));
    };
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!(
            "'{hostport}': expected host:port with a port from 1 to 65535"
        ));
    }
    Ok(Upstream {
        addr: hostport.to_string(),
        username,
        password,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = parse_upstream("redis://127.0.0.1:7000").unwrap();
        assert_eq!(u.addr, "127.0.0.1:7000");
        assert_eq!(u.password, None);
        let u = parse_upstream("redis://alice:s3cret@host:7001").unwrap();
        assert_eq!(
            (u.username.as_deref(), u.password.as_deref()),
            (Some("alice"), Some("s3cret"))
        );
        let u = parse_upstream("redis://:pw@[::1]:7001").unwrap();
        assert_eq!(
            (u.username, u.password.as_deref(), u.addr.as_str()),
            (None, Some("pw"), "[::1]:7001")
        );
        assert!(parse_upstream("redis://host").is_err());
        assert!(parse_upstream("http://host:1").is_err());
    }

    #[test]
    fn comma_separated_seeds_and_all_problems_reported() {
        let config = Config {
            upstreams: vec!["redis://a:1, redis://b:2".into()],
            ..Config::default()
        };
        assert_eq!(config.seeds().unwrap().len(), 2);
        let bad = Config {
            listen: "nope".into(),
            max_bulk_len: 0,
            ..Config::default()
        };
        let problems = bad.validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn tls_seeds_and_settings() {
        let u = parse_upstream("rediss://alice:pw@cache.example:6380").unwrap();
        assert!(u.tls);
        assert_eq!(u.addr, "cache.example:6380");
        let tls = Config {
            upstreams: vec!["rediss://a:1".into()],
            ..Config::default()
        };
        assert!(tls.backend_tls_enabled());
        assert!(tls.validate().is_ok());
        let mixed = Config {
            upstreams: vec!["rediss://a:1,redis://b:2".into()],
            ..Config::default()
        };
        assert_eq!(mixed.validate().unwrap_err().len(), 1);
        let mut loose = Config {
            upstreams: vec!["redis://a:1".into()],
            ..Config::default()
        };
        loose.backend.tls.ca_file = Some("ca.pem".into());
        loose.backend.tls.cert_file = Some("c.pem".into());
        loose.client.tls.client_ca_file = Some("ca.pem".into());
        // ca_file and cert_file without TLS, cert without key, client CA without a listener cert.
        assert_eq!(loose.validate().unwrap_err().len(), 4);
        let parsed = Config::from_toml(
            "[backend.tls]\nenabled = true\nca_file = \"ca.pem\"\n[client.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n",
        )
        .unwrap();
        assert!(parsed.backend_tls_enabled() && parsed.client.tls.enabled());
        assert!(Config::from_toml("[backend.tls]\nca = \"x\"").is_err());
    }

    #[test]
    fn secrets_stay_out_of_errors_and_debug() {
        let error = parse_upstream("redis://:s3cret@host").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        let error = parse_upstream("http://:s3cret@host:1").unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        let config = Config {
            upstreams: vec!["redis://:s3cret@host:1".into()],
            ..Config::default()
        };
        assert!(!format!("{:?}", config.credentials()).contains("s3cret"));
    }

    #[test]
    fn toml_rejects_unknown_keys() {
        assert!(Config::from_toml("listen = \"127.0.0.1:1\"\nworkers = 2").is_ok());
        assert!(Config::from_toml("lisen = 1").is_err());
    }
}

#[cfg(test)]
mod example_files {
    use super::*;

    /// The documented example must stay loadable and list the real defaults.
    #[test]
    fn example_config_matches_defaults() {
        let text = include_str!("../config/slotproxy.toml");
        let parsed = Config::from_toml(text).unwrap();
        let defaults = Config::default();
        assert_eq!(
            format!(
                "{:?}",
                Config {
                    upstreams: vec![],
                    ..parsed
                }
            ),
            format!("{defaults:?}")
        );
        let dev = Config::from_toml(include_str!("../config/dev.toml")).unwrap();
        assert!(dev.validate().is_ok());
    }
}

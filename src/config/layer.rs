//! Where the configuration comes from, in one place: the defaults, then the TOML file, then
//! the environment and flags (clap takes a flag over its `SLOTPROXY_*` variable), and last,
//! when no upstream is configured anywhere, an application's `REDIS_*` variables.
//!
//! Every source is a [`Layer`]: the keys of the TOML file, each unset unless the source sets
//! it. The file's keys are flat (`max_clients = 5`) apart from `[backend.tls]` and
//! `[client.tls]`, and that contract is kept here, so the sections in `Config` can be arranged
//! for the code without renaming a key anyone has written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::{parse_upstreams, Config, LogFormat, ReadFrom, Secret};

/// One source's settings, named and nested exactly as in the TOML file. Unknown keys are
/// refused (a typo would otherwise be silently ignored).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Layer {
    pub listen: Option<String>,
    pub upstreams: Option<Vec<String>>,
    pub admin_listen: Option<String>,
    pub workers: Option<usize>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub max_bulk_len: Option<usize>,
    pub max_array_len: Option<usize>,
    pub max_query_buffer: Option<usize>,
    pub max_inline_len: Option<usize>,
    pub max_pipeline_depth: Option<usize>,
    #[serde(deserialize_with = "duration::millis")]
    pub connect_timeout_ms: Option<Duration>,
    /// 0 = never.
    #[serde(deserialize_with = "duration::millis")]
    pub command_timeout_ms: Option<Duration>,
    #[serde(deserialize_with = "duration::millis")]
    pub retry_deadline_ms: Option<Duration>,
    pub max_redirects: Option<u32>,
    #[serde(deserialize_with = "duration::millis")]
    pub refresh_interval_ms: Option<Duration>,
    #[serde(deserialize_with = "duration::millis")]
    pub refresh_min_interval_ms: Option<Duration>,
    #[serde(deserialize_with = "duration::millis")]
    pub reconnect_backoff_ms: Option<Duration>,
    pub max_blocking_connections: Option<usize>,
    pub read_from: Option<ReadFrom>,
    pub max_replica_lag: Option<u64>,
    pub admin_commands: Option<bool>,
    pub metrics: Option<bool>,
    pub requirepass: Option<Secret>,
    pub users_file: Option<String>,
    pub max_clients: Option<usize>,
    /// Bare numbers in seconds; 0 = never.
    #[serde(deserialize_with = "duration::seconds")]
    pub client_idle_timeout: Option<Duration>,
    pub client_output_buffer_limit: Option<usize>,
    /// Bare numbers in seconds.
    #[serde(deserialize_with = "duration::seconds")]
    pub shutdown_grace: Option<Duration>,
    /// `[backend]`, which holds only `[backend.tls]`.
    pub backend: BackendTable,
    /// `[client]`, which holds only `[client.tls]`.
    pub client: ClientTable,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendTable {
    pub tls: BackendTlsLayer,
}

/// `[backend.tls]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendTlsLayer {
    pub enabled: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: Option<bool>,
    pub server_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTable {
    pub tls: ClientTlsLayer,
}

/// `[client.tls]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientTlsLayer {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
}

/// Why no configuration came out.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read or parsed (a TOML error, an unknown key, a bad value).
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// A seed URL could not be read; the problems of the other settings come with it, so one
    /// run still lists every problem.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

impl Layer {
    pub fn from_toml(text: &str) -> Result<Layer, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// The file at `path`.
    pub fn read(path: &Path) -> Result<Layer, LoadError> {
        std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| Layer::from_toml(&text))
            .map_err(|reason| LoadError::Read {
                path: path.display().to_string(),
                reason,
            })
    }

    /// Lays this source over `config`: what it sets wins, the rest stays. The seed URLs are
    /// handed back instead, to be parsed once every source is in (a bad URL in the file that
    /// a flag replaces is no problem). Destructured whole, so a key added to the file cannot
    /// be forgotten here.
    fn apply(self, config: &mut Config, upstreams: &mut Vec<String>) {
        let Layer {
            listen,
            upstreams: urls,
            admin_listen,
            workers,
            log_level,
            log_format,
            max_bulk_len,
            max_array_len,
            max_query_buffer,
            max_inline_len,
            max_pipeline_depth,
            connect_timeout_ms,
            command_timeout_ms,
            retry_deadline_ms,
            max_redirects,
            refresh_interval_ms,
            refresh_min_interval_ms,
            reconnect_backoff_ms,
            max_blocking_connections,
            read_from,
            max_replica_lag,
            admin_commands,
            metrics,
            requirepass,
            users_file,
            max_clients,
            client_idle_timeout,
            client_output_buffer_limit,
            shutdown_grace,
            backend,
            client,
        } = self;
        set(upstreams, urls);
        let c = config;
        set(&mut c.listener.listen, listen);
        set(&mut c.listener.workers, workers);
        set(&mut c.admin.listen, admin_listen.map(Some));
        set(&mut c.admin.metrics, metrics);
        set(&mut c.admin.commands, admin_commands);
        set(&mut c.cluster.refresh_interval, refresh_interval_ms);
        set(&mut c.cluster.refresh_min_interval, refresh_min_interval_ms);
        set(&mut c.backend.connect_timeout, connect_timeout_ms);
        set(
            &mut c.backend.command_timeout,
            command_timeout_ms.map(never_if_zero),
        );
        set(&mut c.backend.retry_deadline, retry_deadline_ms);
        set(&mut c.backend.max_redirects, max_redirects);
        set(&mut c.backend.reconnect_backoff, reconnect_backoff_ms);
        set(
            &mut c.backend.max_blocking_connections,
            max_blocking_connections,
        );
        set(&mut c.backend.read_from, read_from);
        set(&mut c.limits.max_bulk_len, max_bulk_len);
        set(&mut c.limits.max_array_len, max_array_len);
        set(&mut c.limits.max_query_buffer, max_query_buffer);
        set(&mut c.limits.max_inline_len, max_inline_len);
        set(&mut c.limits.max_pipeline_depth, max_pipeline_depth);
        set(&mut c.logging.format, log_format);
        set(&mut c.log_level.filter, log_level.map(Some));
        set(&mut c.clients.max_clients, max_clients);
        set(
            &mut c.clients.idle_timeout,
            client_idle_timeout.map(never_if_zero),
        );
        set(
            &mut c.clients.output_buffer_limit,
            client_output_buffer_limit,
        );
        set(&mut c.clients.shutdown_grace, shutdown_grace);
        set(&mut c.auth.requirepass, requirepass.map(Some));
        set(&mut c.auth.users_file, users_file.map(Some));
        set(&mut c.replicas.max_lag, max_replica_lag);
        backend.tls.apply(&mut c.tls.backend);
        client.tls.apply(&mut c.tls.client);
    }
}

impl BackendTlsLayer {
    fn apply(self, tls: &mut super::BackendTlsConfig) {
        let BackendTlsLayer {
            enabled,
            ca_file,
            cert_file,
            key_file,
            insecure_skip_verify,
            server_name,
        } = self;
        set(&mut tls.enabled, enabled);
        set(&mut tls.ca_file, ca_file.map(Some));
        set(&mut tls.cert_file, cert_file.map(Some));
        set(&mut tls.key_file, key_file.map(Some));
        set(&mut tls.insecure_skip_verify, insecure_skip_verify);
        set(&mut tls.server_name, server_name.map(Some));
    }
}

impl ClientTlsLayer {
    fn apply(self, tls: &mut super::ClientTlsConfig) {
        let ClientTlsLayer {
            cert_file,
            key_file,
            client_ca_file,
        } = self;
        set(&mut tls.cert_file, cert_file.map(Some));
        set(&mut tls.key_file, key_file.map(Some));
        set(&mut tls.client_ca_file, client_ca_file.map(Some));
    }
}

/// A layer's value replaces the one below it; an unset one leaves it.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// The file and flags say "0" for "never".
fn never_if_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl Config {
    /// The configuration the binary runs with: the defaults, the file at `file` if any, then
    /// `flags` (flags and their environment variables, as clap resolved them), then
    /// `REDIS_*` from `env` when no upstream is set. Run again on SIGHUP, so a reload sees
    /// exactly what a restart would.
    pub fn load(
        file: Option<&Path>,
        flags: Layer,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, LoadError> {
        let file = file.map(Layer::read).transpose()?;
        Config::layered(file.into_iter().chain([flags]), env)
    }

    /// `layers` over the defaults, lowest first; the seed URLs are parsed once, at the end.
    pub fn layered(
        layers: impl IntoIterator<Item = Layer>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, LoadError> {
        let mut config = Config::default();
        let mut upstreams = Vec::new();
        for layer in layers {
            layer.apply(&mut config, &mut upstreams);
        }
        if upstreams.is_empty() {
            upstreams.extend(upstream_from_app_env(env));
        }
        match parse_upstreams(&upstreams) {
            Ok(seeds) => {
                config.cluster.upstreams = seeds;
                Ok(config)
            }
            Err(e) => {
                let mut problems = vec![format!("upstreams: {e}")];
                problems.append(&mut config.problems_besides_seeds());
                Err(LoadError::Invalid(problems))
            }
        }
    }
}

/// The upstream from an application's usual settings (`REDIS_HOST`, `REDIS_PORT`,
/// `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_SSL`), used when no upstream is configured, so an
/// app's existing environment drives its sidecar.
pub fn upstream_from_app_env(env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let host = var("REDIS_HOST")?;
    let port = var("REDIS_PORT").unwrap_or_else(|| "6379".to_string());
    let scheme = match var("REDIS_SSL")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("true" | "1" | "yes") => "rediss",
        _ => "redis",
    };
    // Encoded because the URL is decoded when read: a password such as `p%40ss` or `a:b@c`
    // must arrive as it was written.
    let encode = |part: String| {
        percent_encoding::utf8_percent_encode(&part, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let userinfo = match (
        var("REDIS_USERNAME").map(encode),
        var("REDIS_PASSWORD").map(encode),
    ) {
        (Some(user), Some(pass)) => format!("{user}:{pass}@"),
        (None, Some(pass)) => format!(":{pass}@"),
        (Some(user), None) => format!("{user}@"),
        (None, None) => String::new(),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]") // an IPv6 address
    } else {
        host
    };
    Some(format!("{scheme}://{userinfo}{host}:{port}"))
}

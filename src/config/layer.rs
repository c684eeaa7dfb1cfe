//! Where the configuration comes from, in one place: the defaults, then the TOML file, then
//! the environment and flags (clap takes a flag over its `SLOTPROXY_*` variable), and last,
//! when no upstream is configured anywhere, an application's `REDIS_*` variables.
//!
//! Every source is a [`Layer`]: the keys of the TOML file, each unset unless the source sets
//! it. The file's keys are flat (`max_clients = 5`) apart from `[backend.tls]` and
//! `[client.tls]`, and that contract is kept here, so the sections in `Config` can be arranged
//! for the code without renaming a key anyone has written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::duration;
use super::{parse_upstreams, Config, CrossSlot, IoMode, LogFormat, ReadFrom, Secret};

/// One source's settings, named and nested exactly as in the TOML file. Unknown keys are
/// refused (a typo would otherwise be silently ignored).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Layer {
    pub listen: Option<String>,
    pub upstreams: Option<Vec<String>>,
    pub admin_listen: Option<String>,
    pub workers: Option<usize>,
    pub io: Option<IoMode>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub max_bulk_len: Option<usize>,
    pub max_array_len: Option<usize>,
    pub max_query_buffer: Option<usize>,
    pub max_inline_len: Option<usize>,
    pub max_pipeline_depth: Option<usize>,
    pub max_tracked_keys: Option<usize>,
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
    pub watch_interval_ms: Option<Duration>,
    #[serde(deserialize_with = "duration::millis")]
    pub reconnect_backoff_ms: Option<Duration>,
    #[serde(deserialize_with = "duration::millis")]
    pub recovery_timeout_ms: Option<Duration>,
    pub recovery_queue_size: Option<usize>,
    pub max_blocking_connections: Option<usize>,
    pub max_script_connections: Option<usize>,
    pub read_from: Option<ReadFrom>,
    pub zone: Option<String>,
    pub max_replica_lag: Option<u64>,
    pub admin_commands: Option<bool>,
    pub cross_slot: Option<CrossSlot>,
    pub metrics: Option<bool>,
    pub requirepass: Option<Secret>,
    pub users_file: Option<String>,
    pub max_clients: Option<usize>,
    /// Bare numbers in seconds; 0 = never.
    #[serde(deserialize_with = "duration::seconds")]
    pub client_idle_timeout: Option<Duration>,
    pub client_output_buffer_limit: Option<usize>,
    pub max_merged_reply: Option<usize>,
    /// Bare numbers in seconds.
    #[serde(deserialize_with = "duration::seconds")]
    pub shutdown_grace: Option<Duration>,
    /// `[backend]`, which holds only `[backend.tls]` and `[backend.node_zones]`.
    pub backend: BackendTable,
    /// `[client]`, which holds only `[client.tls]`.
    pub client: ClientTable,
    /// `[near_cache]`.
    pub near_cache: NearCacheLayer,
}

/// `[near_cache]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NearCacheLayer {
    pub enabled: Option<bool>,
    pub prefixes: Option<Vec<String>>,
    pub max_memory: Option<usize>,
    pub max_value_size: Option<usize>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackendTable {
    pub tls: BackendTlsLayer,
    /// `[backend.node_zones]`: `"host:port" = "zone"`; a layer that sets it replaces the
    /// whole table of the layers below.
    pub node_zones: Option<BTreeMap<String, String>>,
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
            io,
            log_level,
            log_format,
            max_bulk_len,
            max_array_len,
            max_query_buffer,
            max_inline_len,
            max_pipeline_depth,
            max_tracked_keys,
            connect_timeout_ms,
            command_timeout_ms,
            retry_deadline_ms,
            max_redirects,
            refresh_interval_ms,
            refresh_min_interval_ms,
            watch_interval_ms,
            reconnect_backoff_ms,
            recovery_timeout_ms,
            recovery_queue_size,
            max_blocking_connections,
            max_script_connections,
            read_from,
            zone,
            max_replica_lag,
            admin_commands,
            cross_slot,
            metrics,
            requirepass,
            users_file,
            max_clients,
            client_idle_timeout,
            client_output_buffer_limit,
            max_merged_reply,
            shutdown_grace,
            backend,
            client,
            near_cache,
        } = self;
        set(upstreams, urls);
        let c = config;
        set(&mut c.listener.listen, listen);
        set(&mut c.listener.workers, workers);
        set(&mut c.listener.io, io);
        set(&mut c.admin.listen, admin_listen.map(Some));
        set(&mut c.admin.metrics, metrics);
        set(&mut c.admin.commands, admin_commands);
        set(&mut c.admin.cross_slot, cross_slot);
        set(&mut c.cluster.refresh_interval, refresh_interval_ms);
        set(&mut c.cluster.refresh_min_interval, refresh_min_interval_ms);
        set(&mut c.cluster.watch_interval, watch_interval_ms);
        set(&mut c.backend.connect_timeout, connect_timeout_ms);
        set(
            &mut c.backend.command_timeout,
            command_timeout_ms.map(never_if_zero),
        );
        set(&mut c.backend.retry_deadline, retry_deadline_ms);
        set(&mut c.backend.max_redirects, max_redirects);
        set(&mut c.backend.reconnect_backoff, reconnect_backoff_ms);
        set(&mut c.backend.recovery_timeout, recovery_timeout_ms);
        set(&mut c.backend.recovery_queue_size, recovery_queue_size);
        set(
            &mut c.backend.max_blocking_connections,
            max_blocking_connections,
        );
        set(
            &mut c.backend.max_script_connections,
            max_script_connections,
        );
        set(&mut c.backend.read_from, read_from);
        // An empty zone is no zone (a deployment's template whose zone variable is unset);
        // it also clears a zone set by a lower layer.
        set(
            &mut c.backend.zone,
            zone.map(|z| Some(z).filter(|z| !z.trim().is_empty())),
        );
        set(&mut c.backend.node_zones, backend.node_zones);
        set(&mut c.limits.max_bulk_len, max_bulk_len);
        set(&mut c.limits.max_array_len, max_array_len);
        set(&mut c.limits.max_query_buffer, max_query_buffer);
        set(&mut c.limits.max_inline_len, max_inline_len);
        set(&mut c.limits.max_pipeline_depth, max_pipeline_depth);
        set(&mut c.limits.max_tracked_keys, max_tracked_keys);
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
        set(&mut c.clients.max_merged_reply, max_merged_reply);
        set(&mut c.clients.shutdown_grace, shutdown_grace);
        set(&mut c.auth.requirepass, requirepass.map(Some));
        set(&mut c.auth.users_file, users_file.map(Some));
        set(&mut c.replicas.max_lag, max_replica_lag);
        backend.tls.apply(&mut c.tls.backend);
        client.tls.apply(&mut c.tls.client);
        near_cache.apply(&mut c.near_cache);
    }
}

impl NearCacheLayer {
    fn apply(self, cache: &mut super::NearCache) {
        let NearCacheLayer {
            enabled,
            prefixes,
            max_memory,
            max_value_size,
        } = self;
        set(&mut cache.enabled, enabled);
        set(&mut cache.prefixes, prefixes);
        set(&mut cache.max_memory, max_memory);
        set(&mut cache.max_value_size, max_value_size);
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{parse_upstreams, Flags};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: Flags,
    }

    /// clap reads the process's `SLOTPROXY_*` variables while it parses: the one test that
    /// sets them holds this lock, and every parse takes it, so no other test sees them.
    static ENVIRONMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn flags(args: &[&str]) -> Layer {
        let _environment = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
        parse_flags(args)
    }

    fn parse_flags(args: &[&str]) -> Layer {
        let args = std::iter::once("slotproxy").chain(args.iter().copied());
        Cli::try_parse_from(args).unwrap().flags.layer()
    }

    fn file(text: &str) -> Layer {
        Layer::from_toml(text).unwrap()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// Every key of the TOML contract, set away from its default, lands in its section.
    #[test]
    fn every_file_key_lands_in_its_section() {
        let text = r#"
            listen = "0.0.0.0:1"
            upstreams = ["rediss://u:p@a:1", "rediss://b:2,rediss://c:3"]
            admin_listen = "0.0.0.0:2"
            workers = 3
            io = "epoll"
            log_level = "debug"
            log_format = "json"
            max_bulk_len = 4
            max_array_len = 5
            max_query_buffer = 6
            max_inline_len = 7
            max_pipeline_depth = 8
            max_tracked_keys = 21
            connect_timeout_ms = 9
            command_timeout_ms = 0
            retry_deadline_ms = "2s"
            max_redirects = 11
            recovery_timeout_ms = "750ms"
            recovery_queue_size = 33
            refresh_interval_ms = "1m"
            refresh_min_interval_ms = 13
            watch_interval_ms = 22
            reconnect_backoff_ms = 14
            max_blocking_connections = 15
            max_script_connections = 20
            read_from = "zone-affinity-all"
            zone = "us-east-1a"
            max_replica_lag = 16
            admin_commands = true
            cross_slot = "emulate"
            metrics = false
            requirepass = "pw"
            users_file = "users.acl"
            max_clients = 17
            client_idle_timeout = 18
            client_output_buffer_limit = 19
            max_merged_reply = 23
            shutdown_grace = "250ms"
            [backend.tls]
            enabled = true
            ca_file = "ca.pem"
            cert_file = "c.pem"
            key_file = "k.pem"
            insecure_skip_verify = true
            server_name = "redis.example"
            [backend.node_zones]
            "10.0.0.1:6379" = "us-east-1b"
            "[::1]:7000" = "us-east-1c"
            [client.tls]
            cert_file = "lc.pem"
            key_file = "lk.pem"
            client_ca_file = "lca.pem"
            [near_cache]
            enabled = true
            prefixes = ["user:", "cart:"]
            max_memory = 24
            max_value_size = 25
        "#;
        let config = Config::from_toml(text).unwrap();
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let want = Config {
            listener: super::super::Listener {
                listen: "0.0.0.0:1".into(),
                workers: 3,
                io: IoMode::Epoll,
            },
            admin: super::super::Admin {
                listen: Some("0.0.0.0:2".into()),
                metrics: false,
                commands: true,
                cross_slot: CrossSlot::Emulate,
            },
            cluster: super::super::Cluster {
                upstreams: parse_upstreams(&["rediss://u:p@a:1,rediss://b:2,rediss://c:3".into()])
                    .unwrap(),
                refresh_interval: s(60),
                refresh_min_interval: ms(13),
                watch_interval: ms(22),
            },
            backend: super::super::Backend {
                connect_timeout: ms(9),
                command_timeout: None,
                retry_deadline: s(2),
                max_redirects: 11,
                reconnect_backoff: ms(14),
                recovery_timeout: ms(750),
                recovery_queue_size: 33,
                max_blocking_connections: 15,
                max_script_connections: 20,
                read_from: ReadFrom::ZoneAffinityAll,
                zone: Some("us-east-1a".into()),
                node_zones: [
                    ("10.0.0.1:6379", "us-east-1b"),
                    ("[::1]:7000", "us-east-1c"),
                ]
                .into_iter()
                .map(|(n, z)| (n.to_string(), z.to_string()))
                .collect(),
            },
            limits: super::super::Limits {
                max_bulk_len: 4,
                max_array_len: 5,
                max_query_buffer: 6,
                max_inline_len: 7,
                max_pipeline_depth: 8,
                max_tracked_keys: 21,
            },
            logging: super::super::Logging {
                format: LogFormat::Json,
            },
            log_level: super::super::LogLevel {
                filter: Some("debug".into()),
            },
            clients: super::super::Clients {
                max_clients: 17,
                idle_timeout: Some(s(18)),
                output_buffer_limit: 19,
                max_merged_reply: 23,
                shutdown_grace: ms(250),
            },
            auth: super::super::Auth {
                requirepass: Some(Secret("pw".into())),
                users_file: Some("users.acl".into()),
            },
            replicas: super::super::Replicas { max_lag: 16 },
            tls: super::super::Tls {
                backend: super::super::BackendTlsConfig {
                    enabled: true,
                    ca_file: Some("ca.pem".into()),
                    cert_file: Some("c.pem".into()),
                    key_file: Some("k.pem".into()),
                    insecure_skip_verify: true,
                    server_name: Some("redis.example".into()),
                },
                client: super::super::ClientTlsConfig {
                    cert_file: Some("lc.pem".into()),
                    key_file: Some("lk.pem".into()),
                    client_ca_file: Some("lca.pem".into()),
                },
            },
            near_cache: super::super::NearCache {
                enabled: true,
                prefixes: vec!["user:".into(), "cart:".into()],
                max_memory: 24,
                max_value_size: 25,
            },
        };
        assert_eq!(config, want);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let cases = [
            ("lisen = 1", "unknown field `lisen`"),
            ("[backend]\ntimeout = 1", "unknown field `timeout`"),
            ("[backend.tls]\nca = \"x\"", "unknown field `ca`"),
            ("[client]\nx = 1", "unknown field `x`"),
            ("[client.tls]\ncert = \"x\"", "unknown field `cert`"),
            ("[near_cache]\nprefix = \"x\"", "unknown field `prefix`"),
            ("read_from = \"nearest\"", "unknown variant `nearest`"),
            ("[backend.node_zones]\n\"a:1\" = 5", "invalid type"),
            ("log_format = \"xml\"", "unknown variant `xml`"),
            ("connect_timeout_ms = \"soon\"", "'soon'"),
            ("shutdown_grace = -1", "seconds"),
        ];
        for (text, want) in cases {
            let error = Config::from_toml(text).unwrap_err();
            assert!(error.contains(want), "{text}: {error}");
        }
    }

    /// Defaults < file < environment < flags, key by key.
    #[test]
    fn later_layers_win_and_unset_ones_leave_the_value() {
        let file = || {
            file("max_clients = 5\nworkers = 2\nshutdown_grace = 3\nadmin_commands = true\nupstreams = [\"a:1\"]")
        };
        let cases: &[(Vec<Layer>, usize, usize, Duration, bool)] = &[
            (vec![], 10_000, 0, Duration::from_secs(10), false),
            (vec![file()], 5, 2, Duration::from_secs(3), true),
            (vec![file(), flags(&[])], 5, 2, Duration::from_secs(3), true),
            (
                vec![
                    file(),
                    flags(&["--max-clients", "7", "--shutdown-grace", "500ms"]),
                ],
                7,
                2,
                Duration::from_millis(500),
                true,
            ),
            (
                vec![flags(&["--workers", "4", "--admin-commands"])],
                10_000,
                4,
                Duration::from_secs(10),
                true,
            ),
        ];
        let emulating =
            Config::layered(vec![file(), flags(&["--cross-slot", "emulate"])], no_env).unwrap();
        assert_eq!(emulating.admin.cross_slot, CrossSlot::Emulate);
        assert_eq!(
            Config::layered(vec![file()], no_env)
                .unwrap()
                .admin
                .cross_slot,
            CrossSlot::Refuse
        );
        for (layers, max_clients, workers, grace, admin_commands) in cases {
            let config = Config::layered(layers.clone(), no_env).unwrap();
            let got = (
                config.clients.max_clients,
                config.listener.workers,
                config.clients.shutdown_grace,
                config.admin.commands,
            );
            assert_eq!(
                got,
                (*max_clients, *workers, *grace, *admin_commands),
                "{layers:?}"
            );
        }
    }

    /// clap reads each flag's `SLOTPROXY_*` variable when the flag is absent, the flag when
    /// both are there. The variables are the process's, so one test sets them all.
    #[test]
    fn environment_sits_between_the_file_and_the_flags() {
        let environment = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
        std::env::set_var("SLOTPROXY_WORKERS", "6");
        std::env::set_var("SLOTPROXY_READ_FROM", "replica");
        std::env::set_var("SLOTPROXY_ZONE", "env-zone");
        std::env::set_var("SLOTPROXY_CLIENT_IDLE_TIMEOUT", "30");
        std::env::set_var("SLOTPROXY_MAX_MERGED_REPLY", "1000");
        std::env::set_var("SLOTPROXY_IO", "uring");
        let base = || {
            file("workers = 2\nread_from = \"any\"\nmax_merged_reply = 10\nzone = \"file-zone\"\nupstreams = [\"a:1\"]")
        };
        let from_env = Config::layered([base(), parse_flags(&[])], no_env).unwrap();
        let flagged = Config::layered(
            [
                base(),
                parse_flags(&[
                    "--workers",
                    "8",
                    "--read-from",
                    "prefer-replica",
                    "--max-merged-reply",
                    "2000",
                    "--zone",
                    "flag-zone",
                    "--io",
                    "epoll",
                ]),
            ],
            no_env,
        )
        .unwrap();
        std::env::remove_var("SLOTPROXY_WORKERS");
        std::env::remove_var("SLOTPROXY_READ_FROM");
        std::env::remove_var("SLOTPROXY_ZONE");
        std::env::remove_var("SLOTPROXY_CLIENT_IDLE_TIMEOUT");
        std::env::remove_var("SLOTPROXY_MAX_MERGED_REPLY");
        std::env::remove_var("SLOTPROXY_IO");
        drop(environment);
        let file_only = Config::layered([base()], no_env).unwrap();
        assert_eq!(
            (
                file_only.clients.max_merged_reply,
                from_env.clients.max_merged_reply,
                flagged.clients.max_merged_reply
            ),
            (10, 1000, 2000)
        );
        assert_eq!(
            (from_env.listener.workers, from_env.backend.read_from),
            (6, ReadFrom::Replica)
        );
        assert_eq!(from_env.clients.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            (
                file_only.listener.io,
                from_env.listener.io,
                flagged.listener.io
            ),
            (IoMode::Auto, IoMode::Uring, IoMode::Epoll)
        );
        let cleared = Config::layered([base(), parse_flags(&["--zone", ""])], no_env).unwrap();
        assert_eq!(cleared.backend.zone, None, "an empty zone is none");
        assert_eq!(
            (
                file_only.backend.zone.as_deref(),
                from_env.backend.zone.as_deref(),
                flagged.backend.zone.as_deref()
            ),
            (Some("file-zone"), Some("env-zone"), Some("flag-zone"))
        );
        assert_eq!(
            (flagged.listener.workers, flagged.backend.read_from),
            (8, ReadFrom::PreferReplica)
        );
    }

    #[test]
    fn seeds_are_parsed_once_every_layer_is_in() {
        let addrs = |config: &Config| -> Vec<String> {
            config.seeds().iter().map(|s| s.addr.clone()).collect()
        };
        // A flag replaces the file's list, bad entries included.
        let config = Config::layered(
            [
                file("upstreams = [\"http://x\"]"),
                flags(&["--upstream", "a:1,b:2"]),
            ],
            no_env,
        )
        .unwrap();
        assert_eq!(addrs(&config), ["a:1", "b:2"]);
        // A bad URL is reported with the other settings' problems, not with "no seed".
        let Err(LoadError::Invalid(problems)) = Config::layered(
            [file("upstreams = [\"redis://host\"]\nlisten = \"nope\"")],
            no_env,
        ) else {
            panic!("a bad seed URL must be refused");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(problems[0], "upstreams: 'host': expected host:port");
        assert!(problems[1].starts_with("listen:"), "{problems:?}");
    }

    #[test]
    fn app_variables_are_the_last_resort_for_the_upstream() {
        let env = |name: &str| match name {
            "REDIS_HOST" => Some("::1".to_string()),
            "REDIS_PORT" => Some("7001".to_string()),
            "REDIS_USERNAME" => Some("app".to_string()),
            "REDIS_PASSWORD" => Some("p%40ss:w@rd/".to_string()),
            "REDIS_SSL" => Some("TRUE".to_string()),
            _ => None,
        };
        let config = Config::layered([Layer::default()], env).unwrap();
        let seed = &config.seeds()[0];
        assert_eq!((seed.addr.as_str(), seed.tls), ("[::1]:7001", true));
        assert_eq!(seed.username.as_deref(), Some("app"));
        // Taken as written, not URL-decoded.
        assert_eq!(seed.password, Some(Secret("p%40ss:w@rd/".into())));
        let configured = Config::layered([file("upstreams = [\"a:1\"]")], env).unwrap();
        assert_eq!(configured.seeds()[0].addr, "a:1");
        let plain = |name: &str| (name == "REDIS_HOST").then(|| "cache".to_string());
        assert_eq!(
            upstream_from_app_env(plain).as_deref(),
            Some("redis://cache:6379")
        );
        assert_eq!(upstream_from_app_env(no_env), None);
    }
}

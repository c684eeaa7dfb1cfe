//! Applying a new configuration to a running proxy (SIGHUP).
//!
//! What may change is decided per section of `Config`: `clients`, `auth`, `replicas` and the
//! certificates of `tls` are applied (`log_level` too, by the binary, which owns the logger);
//! every other section needs a restart, and its changed keys are named by comparing the
//! sections, so a setting added to a restart-only section is reported without being listed.

use std::sync::Arc;

use serde::Serialize;

use crate::backend::tls::BackendTls;
use crate::config::Config;
use crate::shared::{ClientLimits, Shared};

/// Applies what can change safely while the proxy runs: client passwords and users, client
/// limits (every client, connected or not, follows them from then on), the replica lag bound
/// and the TLS certificates of both sides.
pub struct Reloader {
    shared: Arc<Shared>,
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Settings that changed and now apply.
    pub applied: Vec<&'static str>,
    /// Settings that changed but need a restart (by their TOML keys); the proxy keeps the old
    /// values.
    pub not_reloaded: Vec<String>,
}

/// Certificates read again from their files, before anything is applied.
struct FreshTls {
    backend: Option<BackendTls>,
    client: Option<tokio_rustls::TlsAcceptor>,
}

impl Reloader {
    pub(crate) fn new(shared: Arc<Shared>) -> Reloader {
        Reloader { shared }
    }

    /// Checks `new` as a whole (nothing is applied if any problem is found), then applies it.
    pub fn reload(&self, new: &Config) -> Result<ReloadReport, Vec<String>> {
        new.validate()?;
        let users = new.users()?;
        let fresh = self.read_tls(new)?;
        let mut report = ReloadReport {
            applied: Vec::new(),
            not_reloaded: restart_only_changes(&self.shared.config, new),
        };
        self.apply_tls(new, fresh, &mut report);
        let limits = ClientLimits::of(new);
        if **self.shared.client_limits.load() != limits {
            report.applied.push("client limits");
            self.shared.client_limits.store(Arc::new(limits));
        }
        let topology = &self.shared.topology;
        if topology.max_replica_lag() != new.replicas.max_lag {
            report.applied.push("max_replica_lag");
            topology.set_max_replica_lag(new.replicas.max_lag);
        }
        if **self.shared.users.load() != users {
            report.applied.push("requirepass/users_file");
            self.shared.users.store(Arc::new(users));
        }
        Ok(report)
    }

    /// TLS files are read again even when their paths are the same: certificates are rotated
    /// in place. Only the sides that run TLS now are read (turning it on needs a restart).
    fn read_tls(&self, new: &Config) -> Result<FreshTls, Vec<String>> {
        let backend_running = self.shared.topology.credentials().tls.is_some();
        let backend = if backend_running && new.backend_tls_enabled() {
            let tls = BackendTls::new(&new.tls.backend, new.seeds());
            Some(tls.map_err(|e| vec![e.to_string()])?)
        } else {
            None
        };
        let client = if self.shared.client_tls.load().is_some() {
            crate::tls::acceptor(&new.tls.client).map_err(|e| vec![e.to_string()])?
        } else {
            None
        };
        Ok(FreshTls { backend, client })
    }

    fn apply_tls(&self, new: &Config, fresh: FreshTls, report: &mut ReloadReport) {
        let running_backend = self.shared.topology.credentials().tls.clone();
        if running_backend.is_some() != new.backend_tls_enabled() {
            report
                .not_reloaded
                .push("backend.tls (turning TLS on or off)".into());
        }
        if let (Some(running), Some(fresh)) = (&running_backend, fresh.backend) {
            if running.same_names(&fresh) {
                running.reload_certificates(fresh);
                report.applied.push("backend TLS certificates");
            } else {
                report.not_reloaded.push("backend.tls.server_name".into());
            }
        }
        let client_running = self.shared.client_tls.load().is_some();
        match (client_running, fresh.client) {
            (true, Some(acceptor)) => {
                self.shared.client_tls.store(Some(Arc::new(acceptor)));
                report.applied.push("client TLS certificates");
            }
            (true, None) => report
                .not_reloaded
                .push("client.tls (turning TLS off)".into()),
            (false, _) if new.tls.client.cert_file.is_some() => {
                report
                    .not_reloaded
                    .push("client.tls (turning TLS on)".into());
            }
            (false, _) => {}
        }
    }
}

/// The keys of every restart-only section that differ between `running` and `new`.
fn restart_only_changes(running: &Config, new: &Config) -> Vec<String> {
    // Destructured whole: a new section does not compile until it is sorted in here.
    let Config {
        listener,
        admin,
        cluster,
        backend,
        limits,
        logging,
        near_cache,
        // Reloadable: the binary applies the level, `Reloader::reload` the rest.
        log_level: _,
        clients: _,
        auth: _,
        replicas: _,
        tls: _,
    } = new;
    [
        changed_keys(&running.listener, listener),
        changed_keys(&running.admin, admin),
        changed_keys(&running.cluster, cluster),
        changed_keys(&running.backend, backend),
        changed_keys(&running.limits, limits),
        changed_keys(&running.logging, logging),
        changed_keys(&running.near_cache, near_cache),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The keys whose values differ between two versions of a section, named as in the TOML file
/// (the sections serialize under those names).
fn changed_keys<T: Serialize + PartialEq>(running: &T, new: &T) -> Vec<String> {
    if running == new {
        return Vec::new();
    }
    match (serde_json::to_value(running), serde_json::to_value(new)) {
        (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) => old
            .iter()
            .filter(|(key, value)| new.get(key.as_str()) != Some(value))
            .map(|(key, _)| key.clone())
            .collect(),
        // Sections are structs, so this is not expected; still name the change somehow.
        _ => vec![std::any::type_name::<T>().to_string()],
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{parse_upstreams, LogFormat, ReadFrom, Secret};

    /// Each change, and the keys a reload must name as needing a restart (none: reloadable).
    #[test]
    fn restart_only_settings_are_named_and_reloadable_ones_are_not() {
        type Change = fn(&mut Config);
        let cases: &[(&str, Change, &[&str])] = &[
            (
                "listen",
                |c| c.listener.listen = "0.0.0.0:1".into(),
                &["listen"],
            ),
            ("workers", |c| c.listener.workers = 3, &["workers"]),
            (
                "io",
                |c| c.listener.io = crate::config::IoMode::Epoll,
                &["io"],
            ),
            ("admin_listen", |c| c.admin.listen = None, &["admin_listen"]),
            ("metrics", |c| c.admin.metrics = false, &["metrics"]),
            (
                "admin_commands",
                |c| c.admin.commands = true,
                &["admin_commands"],
            ),
            (
                "cross_slot",
                |c| c.admin.cross_slot = crate::config::CrossSlot::Emulate,
                &["cross_slot"],
            ),
            (
                "upstreams",
                |c| c.cluster.upstreams = parse_upstreams(&["redis://b:2".into()]).unwrap(),
                &["upstreams"],
            ),
            (
                "an upstream password",
                |c| c.cluster.upstreams = parse_upstreams(&["redis://:new@a:1".into()]).unwrap(),
                &["upstreams"],
            ),
            (
                "refresh intervals",
                |c| {
                    c.cluster.refresh_interval = Duration::from_secs(1);
                    c.cluster.refresh_min_interval = Duration::from_secs(1);
                },
                &["refresh_interval_ms", "refresh_min_interval_ms"],
            ),
            (
                "connect_timeout_ms",
                |c| c.backend.connect_timeout = Duration::from_millis(5),
                &["connect_timeout_ms"],
            ),
            (
                "command_timeout_ms",
                |c| c.backend.command_timeout = None,
                &["command_timeout_ms"],
            ),
            (
                "retry_deadline_ms",
                |c| c.backend.retry_deadline = Duration::ZERO,
                &["retry_deadline_ms"],
            ),
            (
                "max_redirects",
                |c| c.backend.max_redirects = 1,
                &["max_redirects"],
            ),
            (
                "reconnect_backoff_ms",
                |c| c.backend.reconnect_backoff = Duration::ZERO,
                &["reconnect_backoff_ms"],
            ),
            (
                "max_blocking_connections",
                |c| c.backend.max_blocking_connections = 1,
                &["max_blocking_connections"],
            ),
            (
                "read_from",
                |c| c.backend.read_from = ReadFrom::Any,
                &["read_from"],
            ),
            (
                "zone",
                |c| c.backend.zone = Some("us-east-1a".into()),
                &["zone"],
            ),
            (
                "backend.node_zones",
                |c| {
                    c.backend.node_zones =
                        [("a:1".to_string(), "z".to_string())].into_iter().collect()
                },
                &["backend.node_zones"],
            ),
            (
                "max_bulk_len",
                |c| c.limits.max_bulk_len = 1,
                &["max_bulk_len"],
            ),
            (
                "max_array_len",
                |c| c.limits.max_array_len = 1,
                &["max_array_len"],
            ),
            (
                "max_query_buffer",
                |c| c.limits.max_query_buffer = 1,
                &["max_query_buffer"],
            ),
            (
                "max_inline_len",
                |c| c.limits.max_inline_len = 1,
                &["max_inline_len"],
            ),
            (
                "max_pipeline_depth",
                |c| c.limits.max_pipeline_depth = 1,
                &["max_pipeline_depth"],
            ),
            (
                "log_format",
                |c| c.logging.format = LogFormat::Json,
                &["log_format"],
            ),
            // Reloadable: applied, never named.
            (
                "log_level",
                |c| c.log_level.filter = Some("debug".into()),
                &[],
            ),
            ("max_clients", |c| c.clients.max_clients = 1, &[]),
            (
                "client_idle_timeout",
                |c| c.clients.idle_timeout = Some(Duration::from_secs(1)),
                &[],
            ),
            (
                "client_output_buffer_limit",
                |c| c.clients.output_buffer_limit = 1,
                &[],
            ),
            ("max_merged_reply", |c| c.clients.max_merged_reply = 1, &[]),
            (
                "shutdown_grace",
                |c| c.clients.shutdown_grace = Duration::ZERO,
                &[],
            ),
            (
                "requirepass",
                |c| c.auth.requirepass = Some(Secret("pw".into())),
                &[],
            ),
            (
                "users_file",
                |c| c.auth.users_file = Some("users.acl".into()),
                &[],
            ),
            ("max_replica_lag", |c| c.replicas.max_lag = 0, &[]),
            (
                "backend.tls.ca_file",
                |c| c.tls.backend.ca_file = Some("ca.pem".into()),
                &[],
            ),
            (
                "client.tls.cert_file",
                |c| c.tls.client.cert_file = Some("c.pem".into()),
                &[],
            ),
        ];
        let mut running = Config::default();
        running.cluster.upstreams = parse_upstreams(&["redis://:old@a:1".into()]).unwrap();
        assert!(restart_only_changes(&running, &running.clone()).is_empty());
        for (name, change, want) in cases {
            let mut new = running.clone();
            change(&mut new);
            assert_ne!(new, running, "{name} changes nothing");
            assert_eq!(restart_only_changes(&running, &new), *want, "{name}");
        }
    }

    /// A proxy's shared state as `Proxy::start` builds it, without starting anything.
    fn running(config: &Config) -> Reloader {
        let topology = crate::cluster::topology::Topology::new(
            vec!["a:1".into()],
            crate::backend::connect::Credentials::default(),
            Duration::from_secs(1),
        );
        topology.set_max_replica_lag(config.replicas.max_lag);
        let users = config.users().unwrap();
        Reloader::new(Arc::new(Shared::new(
            config.clone(),
            Arc::new(topology),
            1,
            users,
        )))
    }

    /// Each reloadable change, what the report calls it, and whether the running proxy follows.
    #[test]
    fn reloadable_settings_are_applied() {
        type Change = fn(&mut Config);
        type Applied = fn(&Shared) -> bool;
        let cases: &[(Change, &[&str], Applied)] = &[
            (|_| {}, &[], |_| true),
            (
                |c| c.clients.max_clients = 1,
                &["client limits"],
                |s| s.client_limits.load().max_clients == 1,
            ),
            (
                |c| c.clients.idle_timeout = Some(Duration::from_secs(7)),
                &["client limits"],
                |s| s.client_limits.load().idle_timeout == Some(Duration::from_secs(7)),
            ),
            (
                |c| c.clients.shutdown_grace = Duration::from_millis(1500),
                &["client limits"],
                |s| s.client_limits.load().shutdown_grace == Duration::from_millis(1500),
            ),
            (
                |c| c.replicas.max_lag = 5,
                &["max_replica_lag"],
                |s| s.topology.max_replica_lag() == 5,
            ),
            (
                |c| c.auth.requirepass = Some(Secret("pw".into())),
                &["requirepass/users_file"],
                |s| **s.users.load() != crate::auth::Users::new(None, None).unwrap(),
            ),
        ];
        let mut config = Config::default();
        config.cluster.upstreams = parse_upstreams(&["redis://a:1".into()]).unwrap();
        for (change, want, applied) in cases {
            let reloader = running(&config);
            let mut new = config.clone();
            change(&mut new);
            let report = reloader.reload(&new).unwrap();
            assert_eq!(report.applied, *want, "{new:?}");
            assert!(report.not_reloaded.is_empty(), "{report:?}");
            assert!(applied(&reloader.shared), "{want:?} not applied");
        }
    }

    #[test]
    fn restart_only_changes_keep_their_running_values_and_invalid_ones_apply_nothing() {
        let mut config = Config::default();
        config.cluster.upstreams = parse_upstreams(&["redis://a:1".into()]).unwrap();
        let reloader = running(&config);
        let mut new = config.clone();
        new.listener.workers = 3;
        new.clients.max_clients = 2;
        let report = reloader.reload(&new).unwrap();
        assert_eq!(report.not_reloaded, ["workers"]);
        assert_eq!(report.applied, ["client limits"]);
        assert_eq!(reloader.shared.config.listener.workers, 0);
        new.listener.listen = "nope".into();
        new.clients.max_clients = 9;
        assert!(reloader.reload(&new).is_err());
        assert_eq!(reloader.shared.client_limits.load().max_clients, 2);
    }
}

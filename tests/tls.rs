//! TLS end to end: the proxy in front of a Redis Cluster that speaks TLS only (`rediss://`,
//! CA file, client certificates, a wrong CA, `insecure_skip_verify`), and the proxy's own TLS
//! listener (redis-cli --tls, mTLS with `--tls-client-ca`, a plain-text client on the TLS
//! port).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::raw::{encode, RawClient, Reply};
use common::tls::{try_tls_cli, TlsClient, TlsCluster, TlsNodes};
use common::{spawn, start_proxy_configured, tag_for_slot, unique_prefix};

/// One 3-primary, 1-replica-each TLS cluster (client certificates optional) per test binary.
/// Never dropped: its nodes die with the process (PR_SET_PDEATHSIG).
fn shared() -> &'static TlsCluster {
    static SHARED: OnceLock<TlsCluster> = OnceLock::new();
    SHARED.get_or_init(|| TlsCluster::start(3, 1, false))
}

/// A proxy with TLS to `cluster`, trusting `ca`, with `adjust` for anything else.
fn tls_proxy(
    cluster: &TlsCluster,
    ca: &Path,
    adjust: impl FnOnce(&mut slotproxy::Config),
) -> slotproxy::Proxy {
    start_proxy_configured(vec![cluster.seed_url()], |config| {
        config.tls.backend.ca_file = Some(ca.to_path_buf());
        adjust(config);
    })
}

/// Keys on each of the three shards (slot ranges as `redis-cli --cluster create` assigns them).
fn keys_on_every_shard(test: &str) -> Vec<String> {
    let prefix = unique_prefix(test);
    [100, 6000, 12000]
        .iter()
        .map(|&slot| format!("{{{}}}:k", tag_for_slot(slot, &prefix)))
        .collect()
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Some(text.as_bytes().to_vec()))
}

/// SET on every shard, GET and MGET back, over any client.
fn set_get_mget(call: &mut dyn FnMut(&[&str]) -> Reply, test: &str) {
    let keys = keys_on_every_shard(test);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            call(&["SET", key, &format!("v{i}")]),
            Reply::Simple("OK".into())
        );
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(call(&["GET", key]), bulk(&format!("v{i}")));
    }
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    assert_eq!(
        call(&mget),
        Reply::Array(Some(vec![bulk("v0"), bulk("v1"), bulk("v2")]))
    );
}

#[test]
fn rediss_seed_with_ca_serves_every_kind_of_backend_connection() {
    let cluster = shared();
    let proxy = tls_proxy(cluster, &cluster.files.ca, |_| {});
    let mut client = RawClient::connect(proxy.local_addr());
    // Shared pipes: single-slot commands and an MGET split over three shards.
    set_get_mget(
        &mut |args| client.call(args),
        "rediss_seed_with_ca_serves_every_kind_of_backend_connection",
    );
    let keys = keys_on_every_shard("tls-dedicated");
    // A transaction connection.
    assert_eq!(client.call(&["MULTI"]), Reply::Simple("OK".into()));
    assert_eq!(
        client.call(&["SET", &keys[1], "in-multi"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(
        client.call(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Simple("OK".into())]))
    );
    assert_eq!(client.call(&["GET", &keys[1]]), bulk("in-multi"));
    // A dedicated connection (blocking command), answered at once since the list has an item.
    assert_eq!(client.call(&["RPUSH", &keys[2], "job"]), Reply::Int(1));
    assert_eq!(
        client.call(&["BLPOP", &keys[2], "5"]),
        Reply::Array(Some(vec![bulk(&keys[2]), bulk("job")]))
    );
    // A pub/sub connection.
    let mut subscriber = RawClient::connect(proxy.local_addr());
    let channel = format!("{}-chan", keys[0]);
    assert_eq!(
        subscriber.call(&["SUBSCRIBE", &channel]),
        Reply::Array(Some(vec![bulk("subscribe"), bulk(&channel), Reply::Int(1)]))
    );
    common::wait_until(
        "a PUBLISH through the proxy to reach the subscriber's node",
        Duration::from_secs(10),
        || match client.call(&["PUBLISH", &channel, "hello"]) {
            Reply::Int(n) if n >= 1 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(
        subscriber.read_reply(),
        Reply::Array(Some(vec![bulk("message"), bulk(&channel), bulk("hello")]))
    );
}

#[test]
fn killed_primary_is_replaced_by_its_tls_replica() {
    let cluster = TlsCluster::start(3, 1, false);
    let proxy = tls_proxy(&cluster, &cluster.files.ca, |_| {});
    let mut client = RawClient::connect(proxy.local_addr());
    let key = format!(
        "{{{}}}:failover",
        tag_for_slot(6000, &unique_prefix("tls-failover"))
    );
    assert_eq!(
        client.call(&["SET", &key, "before"]),
        Reply::Simple("OK".into())
    );
    let primary = cluster.primary_for_slot(6000);
    // The replica must have the key before its primary dies (replication runs over TLS too).
    common::wait_until(
        "the key to reach the replica",
        common::CLUSTER_DEADLINE,
        || {
            let replicas: Vec<u16> = cluster
                .ports()
                .into_iter()
                .filter(|&p| p != primary)
                .collect();
            for port in replicas {
                let info = cluster.cli(port, &["INFO", "replication"]);
                if common::info_field(&info, "master_port").as_deref() == Some(&primary.to_string())
                {
                    let keys = cluster.cli(port, &["DBSIZE"]);
                    return match keys.trim().parse::<u64>() {
                        Ok(n) if n >= 1 => Ok(()),
                        _ => Err(format!("replica {port} has {keys:?} keys")),
                    };
                }
            }
            Err("no replica of the primary yet".into())
        },
    );
    cluster.kill(primary);
    // The proxy loses its TLS connection, refreshes over TLS, and finds the promoted replica.
    common::wait_until(
        "the proxy to write to the promoted replica",
        common::CLUSTER_DEADLINE,
        || match client.call(&["SET", &key, "after"]) {
            Reply::Simple(ok) if ok == "OK" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(client.call(&["GET", &key]), bulk("after"));
}

#[test]
fn client_certificate_lets_the_proxy_into_an_mtls_cluster() {
    let cluster = TlsCluster::start(3, 0, true);
    let files = cluster.files.clone();
    let proxy = tls_proxy(&cluster, &files.ca, |config| {
        config.tls.backend.cert_file = Some(files.client_cert.clone());
        config.tls.backend.key_file = Some(files.client_key.clone());
    });
    let mut client = RawClient::connect(proxy.local_addr());
    set_get_mget(
        &mut |args| client.call(args),
        "client_certificate_lets_the_proxy_into_an_mtls_cluster",
    );
    // Without the certificate the nodes refuse the proxy, and its log says why.
    let log = proxy_binary_log(
        &[
            "--upstream",
            &cluster.seed_url(),
            "--upstream-tls-ca",
            &files.ca.display().to_string(),
        ],
        |line| line.contains("node unreachable"),
    );
    assert!(
        log.to_ascii_lowercase().contains("certificate"),
        "the log should name the missing certificate: {log}"
    );
}

#[test]
fn node_certificates_are_checked_against_announced_hostnames() {
    // Each node's certificate names only its announced hostname; the seed is reached as
    // localhost. Connecting by IP, or checking every node against the seed's name, fails.
    let options = TlsNodes {
        named: true,
        ..TlsNodes::default()
    };
    let cluster = TlsCluster::start_with(3, 0, options);
    let seed = format!("rediss://localhost:{}", cluster.seed_port());
    let proxy = start_proxy_configured(vec![seed], |config| {
        config.tls.backend.ca_file = Some(cluster.files.ca.clone());
    });
    let mut client = RawClient::connect(proxy.local_addr());
    set_get_mget(
        &mut |args| client.call(args),
        "node_certificates_are_checked_against_announced_hostnames",
    );
    // Reached by IP, a node whose certificate names a host is refused.
    let log = proxy_binary_log(
        &[
            "--upstream",
            &cluster.seed_url(),
            "--upstream-tls-ca",
            &cluster.files.ca.display().to_string(),
        ],
        |line| line.contains("node unreachable"),
    );
    assert!(
        log.contains("certificate not valid for name"),
        "a node reached by IP must not pass with a certificate naming a host: {log}"
    );
}

#[test]
fn wrong_ca_is_reported_and_insecure_skip_verify_connects_anyway() {
    let cluster = shared();
    let log = proxy_binary_log(
        &[
            "--upstream",
            &cluster.seed_url(),
            "--upstream-tls-ca",
            &cluster.files.other_ca.display().to_string(),
        ],
        |line| line.contains("node unreachable"),
    );
    assert!(
        log.contains("certificate") && log.contains("UnknownIssuer"),
        "the log should say the certificate is not trusted: {log}"
    );
    let proxy = tls_proxy(cluster, &cluster.files.other_ca, |config| {
        config.tls.backend.ca_file = None;
        config.tls.backend.insecure_skip_verify = true;
    });
    let mut client = RawClient::connect(proxy.local_addr());
    set_get_mget(
        &mut |args| client.call(args),
        "wrong_ca_is_reported_and_insecure_skip_verify_connects_anyway",
    );
    let log = proxy_binary_log(
        &["--upstream", &cluster.seed_url(), "--upstream-tls-insecure"],
        |line| line.contains("ANY certificate"),
    );
    assert!(
        log.contains("WARN"),
        "insecure mode is logged at warn: {log}"
    );
}

#[test]
fn check_config_reports_unusable_tls_files() {
    let dir = std::env::temp_dir().join(format!("slotproxy-tls-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let not_pem = dir.join("not-pem.txt");
    std::fs::write(&not_pem, "hello").expect("write a file");
    let out = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args(["--upstream", "rediss://127.0.0.1:1", "--check-config"])
        .arg("--upstream-tls-ca")
        .arg(&not_pem)
        .args(["--tls-cert", "/nonexistent/cert.pem", "--tls-key"])
        .arg(&not_pem)
        .output()
        .expect("run slotproxy --check-config");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("backend.tls.ca_file") && stderr.contains("client.tls.cert_file"),
        "both sides' problems are reported at once: {stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_slotproxy"))
        .args([
            "--upstream",
            "redis://127.0.0.1:1",
            "--upstream-tls-ca",
            "/x.pem",
            "--check-config",
        ])
        .output()
        .expect("run slotproxy --check-config");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("TLS to the cluster is off"), "{stderr}");
}

#[test]
fn tls_listener_serves_redis_cli_and_rustls_clients() {
    let cluster = shared();
    let files = cluster.files.clone();
    let proxy = tls_proxy(cluster, &files.ca, |config| {
        config.tls.client.cert_file = Some(files.server_cert.clone());
        config.tls.client.key_file = Some(files.server_key.clone());
    });
    let port = proxy.local_addr().port();
    let key = format!("{{{}}}:cli", tag_for_slot(6000, &unique_prefix("tls-cli")));
    let ca_only = vec![
        "--tls".to_string(),
        "--cacert".into(),
        files.ca.display().to_string(),
    ];
    let set = try_tls_cli(&ca_only, port, &["SET", &key, "over-tls"]).unwrap();
    assert_eq!(set.trim(), "OK");
    let get = try_tls_cli(&ca_only, port, &["GET", &key]).unwrap();
    assert_eq!(get.trim(), "over-tls");
    let mut client = TlsClient::try_connect(proxy.local_addr(), &files.ca, None).unwrap();
    set_get_mget(
        &mut |args| client.call(args),
        "tls_listener_serves_redis_cli_and_rustls_clients",
    );
    // A pipeline of many commands in one TLS write comes back whole and in order.
    let keys = keys_on_every_shard("tls-pipeline");
    let mut pipeline = Vec::new();
    for i in 0..2000 {
        let value = i.to_string();
        pipeline.extend(encode(&[b"SET", keys[i % 3].as_bytes(), value.as_bytes()]));
        pipeline.extend(encode(&[b"GET", keys[i % 3].as_bytes()]));
    }
    client.send_raw(&pipeline).unwrap();
    for i in 0..2000 {
        assert_eq!(client.read_reply().unwrap(), Reply::Simple("OK".into()));
        assert_eq!(client.read_reply().unwrap(), bulk(&i.to_string()));
    }
    // Values larger than any TLS record or copy buffer, both ways, through both TLS legs.
    let big = "x".repeat(3 * 1024 * 1024 + 7);
    assert_eq!(
        client.call(&["SET", &keys[0], &big]),
        Reply::Simple("OK".into())
    );
    assert_eq!(client.call(&["GET", &keys[0]]), bulk(&big));
    // QUIT closes the TLS connection cleanly.
    assert_eq!(client.call(&["QUIT"]), Reply::Simple("OK".into()));
    assert!(client.try_call(&["PING"]).is_err());
}

#[test]
fn tls_listener_with_client_ca_requires_a_client_certificate() {
    let cluster = shared();
    let files = cluster.files.clone();
    let proxy = tls_proxy(cluster, &files.ca, |config| {
        config.tls.client.cert_file = Some(files.server_cert.clone());
        config.tls.client.key_file = Some(files.server_key.clone());
        config.tls.client.client_ca_file = Some(files.ca.clone());
    });
    let addr = proxy.local_addr();
    let with_cert = TlsClient::try_connect(
        addr,
        &files.ca,
        Some((&files.client_cert, &files.client_key)),
    );
    let mut with_cert = with_cert.unwrap();
    assert_eq!(with_cert.call(&["PING"]), Reply::Simple("PONG".into()));
    let pong = try_tls_cli(&files.cli_args(), addr.port(), &["PING"]).unwrap();
    assert_eq!(pong.trim(), "PONG");
    // Without a certificate: refused during the handshake, or (TLS 1.3, where the client's
    // side of the handshake ends first) at the first command.
    let refused = TlsClient::try_connect(addr, &files.ca, None)
        .and_then(|mut client| client.try_call(&["PING"]));
    assert!(
        refused.is_err(),
        "a client without a certificate got {refused:?}"
    );
    let ca_only = vec![
        "--tls".to_string(),
        "--cacert".into(),
        files.ca.display().to_string(),
    ];
    assert!(try_tls_cli(&ca_only, addr.port(), &["PING"]).is_err());
    // The client with a certificate was not disturbed.
    assert_eq!(with_cert.call(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn plain_text_client_on_the_tls_port_leaves_tls_clients_alone() {
    let cluster = shared();
    let files = cluster.files.clone();
    let proxy = tls_proxy(cluster, &files.ca, |config| {
        config.tls.client.cert_file = Some(files.server_cert.clone());
        config.tls.client.key_file = Some(files.server_key.clone());
        config.listener.workers = 1; // the plain client and the TLS client share a worker
    });
    let addr = proxy.local_addr();
    let mut tls = TlsClient::try_connect(addr, &files.ca, None).unwrap();
    let key = format!(
        "{{{}}}:plain",
        tag_for_slot(100, &unique_prefix("tls-plain"))
    );
    assert_eq!(tls.call(&["SET", &key, "1"]), Reply::Simple("OK".into()));
    // RESP in plain text on the TLS port: that connection gets a TLS alert record (content
    // type 0x15) at most, never a RESP reply, and is closed; nothing else happens.
    let mut plain = RawClient::connect(addr);
    plain.send(&[b"PING"]);
    if let Err(got) = plain.is_closed_by_server() {
        assert!(got.contains(r#"got "\u{15}"#), "{got}");
        plain.is_closed_by_server().unwrap();
    }
    // Garbage that looks like the start of a TLS record, then a hang-up mid-handshake.
    let mut half = RawClient::connect(addr);
    half.send_raw(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01]);
    drop(half);
    assert_eq!(tls.call(&["INCR", &key]), Reply::Int(2));
    let mut another = TlsClient::try_connect(addr, &files.ca, None).unwrap();
    assert_eq!(another.call(&["GET", &key]), bulk("2"));
}

/// Runs the `slotproxy` binary with `args` (listeners on port 0) until a log line satisfies
/// `until` (or 20 s pass), kills it, and returns its log so far.
fn proxy_binary_log(args: &[&str], until: impl Fn(&str) -> bool + Send + 'static) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slotproxy"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn(command).expect("start the slotproxy binary");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let done = until(&line);
            if tx.send(line).is_err() || done {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    log
}

#[test]
fn a_reload_rotates_listener_and_backend_certificates_in_place() {
    let cluster = shared();
    let files = cluster.files.clone();
    let dir = std::env::temp_dir().join(unique_prefix("tls-reload"));
    std::fs::create_dir_all(&dir).unwrap();
    let (listener_cert, listener_key, backend_ca) = (
        dir.join("listener.pem"),
        dir.join("listener.key"),
        dir.join("backend-ca.pem"),
    );
    std::fs::copy(&files.server_cert, &listener_cert).unwrap();
    std::fs::copy(&files.server_key, &listener_key).unwrap();
    std::fs::copy(&files.ca, &backend_ca).unwrap();
    // The same settings for start and reload: only the files' contents change.
    let settings = |config: &mut slotproxy::Config| {
        config.tls.backend.ca_file = Some(backend_ca.clone());
        config.tls.client.cert_file = Some(listener_cert.clone());
        config.tls.client.key_file = Some(listener_key.clone());
    };
    let proxy = start_proxy_configured(vec![cluster.seed_url()], settings);
    let mut config = slotproxy::Config::default();
    config.listener.listen = "127.0.0.1:0".into();
    config.cluster.upstreams = slotproxy::config::parse_upstreams(&[cluster.seed_url()]).unwrap();
    config.admin.listen = Some("127.0.0.1:0".into());
    config.listener.workers = 2;
    settings(&mut config);
    let addr = proxy.local_addr();
    let key = format!("{{{}}}:k", tag_for_slot(6000, &unique_prefix("tls-reload")));
    let mut old = TlsClient::try_connect(addr, &files.ca, None).unwrap();
    assert_eq!(old.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));

    // The listener's certificate is replaced in place by one from another CA, then reloaded.
    let rotated = common::tls::TlsFiles::generate(&dir.join("rotated"), 0);
    std::fs::copy(&rotated.server_cert, &listener_cert).unwrap();
    std::fs::copy(&rotated.server_key, &listener_key).unwrap();
    let report = proxy.reloader().reload(&config).unwrap();
    assert!(
        report.applied.contains(&"client TLS certificates")
            && report.applied.contains(&"backend TLS certificates"),
        "{report:?}"
    );
    assert!(report.not_reloaded.is_empty(), "{report:?}");

    // New clients get the new certificate; the old CA no longer verifies it.
    let mut new = TlsClient::try_connect(addr, &rotated.ca, None).unwrap();
    assert_eq!(new.call(&["GET", &key]), bulk("v"));
    assert!(TlsClient::try_connect(addr, &files.ca, None).is_err());
    // The connection made before the reload goes on.
    assert_eq!(old.call(&["GET", &key]), bulk("v"));

    // An unusable file refuses the whole reload: the running certificates stay.
    std::fs::write(&listener_key, "not a key").unwrap();
    let problems = proxy.reloader().reload(&config).unwrap_err();
    assert!(problems.iter().any(|p| p.contains("key")), "{problems:?}");
    let mut after = TlsClient::try_connect(addr, &rotated.ca, None).unwrap();
    assert_eq!(after.call(&["GET", &key]), bulk("v"));
    let _ = std::fs::remove_dir_all(&dir);
}

//! The admin HTTP listener: liveness, readiness (with its JSON reasons), the JSON views of the
//! proxy's topology checked against the real cluster's `CLUSTER SHARDS`, and the Prometheus
//! metrics whose names DESIGN.md makes a contract.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{
    pick_node_port, proxy_client, query, shared, spawn, start_proxy, start_proxy_configured,
    try_query, unique_prefix, wait_until, Cluster,
};
use serde_json::Value as Json;

/// `METHOD path` on the admin listener; returns (status code, body).
fn admin_request(proxy: &slotproxy::Proxy, method: &str, path: &str) -> (u16, String) {
    let addr = proxy.admin_addr().expect("admin listener is on");
    common::http::request(addr, method, path)
}

fn admin_get(proxy: &slotproxy::Proxy, path: &str) -> (u16, String) {
    admin_request(proxy, "GET", path)
}

/// `GET path`, its body parsed as JSON.
fn admin_json(proxy: &slotproxy::Proxy, path: &str) -> (u16, Json) {
    let (status, body) = admin_get(proxy, path);
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path} ({status}): body is not JSON ({e}): {body:?}"));
    (status, json)
}

#[test]
fn health_readiness_and_metrics_endpoints_answer() {
    let proxy = start_proxy(shared());
    assert!(proxy.is_ready());
    assert_eq!(admin_get(&proxy, "/healthz").0, 200);
    let (status, ready) = admin_json(&proxy, "/readyz");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["covered_slots"], 16384, "{ready}");
    assert_eq!(ready["uncovered_slots"], 0, "{ready}");

    let mut con = proxy_client(&proxy);
    let key = unique_prefix("admin");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(got, "v");

    // Workers fold their command latencies into the histograms once a second.
    let mut metrics = String::new();
    common::wait_until(
        "the GET latency on /metrics",
        Duration::from_secs(10),
        || {
            let (status, body) = admin_get(&proxy, "/metrics");
            metrics = body;
            match status {
                200 if metrics
                    .contains("slotproxy_command_duration_seconds_count{command=\"get\"} ") =>
                {
                    Ok(())
                }
                _ => Err(format!("{status}")),
            }
        },
    );
    // Every name of DESIGN.md's contract (with the labels it names), plus the slot-map age.
    for series in [
        "slotproxy_commands_total{command=\"set\"}",
        "slotproxy_command_duration_seconds_bucket{command=\"get\"",
        "slotproxy_errors_total{kind=",
        "slotproxy_redirects_total{kind=\"moved\"}",
        "slotproxy_redirects_total{kind=\"ask\"}",
        "slotproxy_retries_total{kind=\"tryagain\"}",
        "slotproxy_retries_total{kind=\"clusterdown\"}",
        "slotproxy_client_connections ",
        "slotproxy_backend_connections{node=\"127.0.0.1:",
        "slotproxy_topology_refreshes_total ",
        "slotproxy_bytes_total{direction=\"in\"}",
        "slotproxy_bytes_total{direction=\"out\"}",
        "slotproxy_slot_map_age_seconds ",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(series)),
            "/metrics has no {series}:\n{metrics}"
        );
    }
    assert_eq!(admin_get(&proxy, "/no-such-page").0, 404);
    assert_eq!(admin_request(&proxy, "POST", "/readyz").0, 405);
    assert_eq!(admin_request(&proxy, "DELETE", "/cluster/info").0, 405);
}

// --- the cluster as the real nodes describe it ----------------------------------------------

/// `[field, value, field, value, ...]` (CLUSTER SHARDS in RESP2) as a map.
fn pairs(value: &redis::Value) -> HashMap<String, &redis::Value> {
    let redis::Value::Array(items) = value else {
        panic!("expected a field/value array, got {value:?}");
    };
    items
        .chunks(2)
        .filter_map(|pair| match pair {
            [name, value] => Some((text(name), value)),
            _ => None,
        })
        .collect()
}

fn text(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Int(n) => n.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

/// One node as `CLUSTER SHARDS` reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RealNode {
    id: String,
    address: String,
    role: &'static str,
    /// Id of the shard's primary, for replicas.
    primary_id: Option<String>,
    /// Slot ranges of the shard, for primaries.
    slots: Vec<[u64; 2]>,
}

fn real_nodes(port: u16) -> Vec<RealNode> {
    let shards: redis::Value = query(port, &["CLUSTER", "SHARDS"]);
    let redis::Value::Array(shards) = shards else {
        panic!("CLUSTER SHARDS: not an array: {shards:?}");
    };
    let mut out = Vec::new();
    for shard in &shards {
        let shard = pairs(shard);
        let slots: Vec<u64> = match shard["slots"] {
            redis::Value::Array(items) => items.iter().map(|v| text(v).parse().unwrap()).collect(),
            other => panic!("slots: {other:?}"),
        };
        let mut slots: Vec<[u64; 2]> = slots.chunks(2).map(|r| [r[0], r[1]]).collect();
        slots.sort();
        let redis::Value::Array(nodes) = shard["nodes"] else {
            panic!("nodes: {:?}", shard["nodes"]);
        };
        let nodes: Vec<HashMap<String, &redis::Value>> = nodes.iter().map(pairs).collect();
        let primary_id = nodes
            .iter()
            .find(|n| text(n["role"]) == "master")
            .map(|n| text(n["id"]))
            .expect("a shard with a primary");
        for node in &nodes {
            let primary = text(node["role"]) == "master";
            out.push(RealNode {
                id: text(node["id"]),
                address: format!("{}:{}", text(node["ip"]), text(node["port"])),
                role: if primary { "primary" } else { "replica" },
                primary_id: (!primary).then(|| primary_id.clone()),
                slots: if primary { slots.clone() } else { Vec::new() },
            });
        }
    }
    out.sort();
    out
}

fn json_str(value: &Json) -> Option<String> {
    value.as_str().map(str::to_string)
}

fn json_ranges(value: &Json) -> Vec<[u64; 2]> {
    let mut ranges: Vec<[u64; 2]> = value
        .as_array()
        .unwrap_or_else(|| panic!("slot ranges: {value}"))
        .iter()
        .map(|r| [r[0].as_u64().unwrap(), r[1].as_u64().unwrap()])
        .collect();
    ranges.sort();
    ranges
}

#[test]
fn cluster_views_match_cluster_shards() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let real = real_nodes(cluster.seed_port());
    assert_eq!(real.len(), 6, "{real:?}");

    let (status, nodes) = admin_json(&proxy, "/cluster/nodes");
    assert_eq!(status, 200);
    let mut seen: Vec<RealNode> = nodes["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("/cluster/nodes: {nodes}"))
        .iter()
        .map(|n| RealNode {
            id: json_str(&n["id"]).unwrap_or_default(),
            address: json_str(&n["address"]).unwrap_or_default(),
            role: match n["role"].as_str() {
                Some("primary") => "primary",
                Some("replica") => "replica",
                other => panic!("role {other:?} in {n}"),
            },
            primary_id: json_str(&n["primary_id"]),
            slots: json_ranges(&n["slots"]),
        })
        .collect();
    seen.sort();
    assert_eq!(seen, real, "/cluster/nodes: {nodes}");
    for node in nodes["nodes"].as_array().unwrap() {
        assert_eq!(node["reachable"], true, "{node}");
        if node["role"] == "primary" {
            assert_eq!(node["health"], "online", "{node}");
        }
    }

    let (status, slots) = admin_json(&proxy, "/cluster/slots");
    assert_eq!(status, 200);
    assert_eq!(slots["covered"], 16384, "{slots}");
    assert_eq!(slots["uncovered_ranges"], Json::Array(vec![]), "{slots}");
    let owner: BTreeMap<u64, &RealNode> = real
        .iter()
        .flat_map(|n| n.slots.iter().map(move |r| (r[0], n)))
        .collect();
    let mut total = 0;
    for range in slots["ranges"].as_array().unwrap() {
        let (first, last) = (
            range["first"].as_u64().unwrap(),
            range["last"].as_u64().unwrap(),
        );
        total += last - first + 1;
        let primary = owner
            .range(..=first)
            .next_back()
            .map(|(_, n)| *n)
            .unwrap_or_else(|| panic!("no real primary for {range}"));
        assert_eq!(range["primary"], primary.address.as_str(), "{range}");
        assert_eq!(range["primary_id"], primary.id.as_str(), "{range}");
    }
    assert_eq!(total, 16384, "{slots}");

    let (status, info) = admin_json(&proxy, "/cluster/info");
    assert_eq!(status, 200);
    assert_eq!(info["state"], "ok", "{info}");
    assert_eq!(info["standalone"], false, "{info}");
    assert_eq!(info["slots_covered"], 16384, "{info}");
    assert_eq!(info["slots_uncovered"], 0, "{info}");
    assert_eq!(info["shards"], 3, "{info}");
    assert_eq!(info["primaries"], 3, "{info}");
    assert_eq!(info["replicas"], 3, "{info}");
    assert!(info["refreshes"].as_u64().unwrap() >= 1, "{info}");
    assert!(
        info["slot_map_age_seconds"].as_f64().unwrap() >= 0.0,
        "{info}"
    );
    assert_eq!(info["auth_failure"], Json::Null, "{info}");
}

// --- not ready, and why ---------------------------------------------------------------------

/// Waits until `/readyz` answers 200 (`what` names the moment, for the failure message).
fn wait_ready(proxy: &slotproxy::Proxy, what: &str) {
    wait_until(what, common::CLUSTER_DEADLINE, || {
        match admin_json(proxy, "/readyz") {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        }
    });
}

/// The proxy's `/readyz` once it says 503, with its JSON body.
fn wait_not_ready(proxy: &slotproxy::Proxy, reason: &str) -> Json {
    wait_until(
        &format!("/readyz to answer 503 \"{reason}\""),
        common::CLUSTER_DEADLINE,
        || {
            let (status, body) = admin_json(proxy, "/readyz");
            if status == 503 && body["ready"] == false && body["reason"] == reason {
                Ok(body)
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
}

#[test]
fn a_wrong_password_makes_readyz_report_the_nodes_error() {
    let password = "pw-that-must-not-leak-4711";
    let seed = format!("127.0.0.1:{}", shared().seed_port());
    // A user that does not exist: Redis answers WRONGPASS (the default user takes any password).
    let upstream = format!("redis://slotproxy-no-such-user:{password}@{seed}");
    let started = std::time::Instant::now();
    let proxy = start_proxy_configured(vec![upstream], |_| {});
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "start-up waited {:?} although the credentials were refused",
        started.elapsed()
    );
    let ready = wait_not_ready(&proxy, "backend authentication failed");
    assert_eq!(ready["node"], seed.as_str(), "{ready}");
    assert!(
        ready["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("WRONGPASS"),
        "{ready}"
    );
    for path in ["/readyz", "/cluster/info", "/cluster/nodes", "/metrics"] {
        let (_, body) = admin_get(&proxy, path);
        assert!(
            !body.contains(password),
            "{path} shows the password: {body}"
        );
    }
    let (_, info) = admin_json(&proxy, "/cluster/info");
    assert_eq!(info["state"], "empty", "{info}");
    assert!(
        info["auth_failure"]["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("WRONGPASS"),
        "{info}"
    );
}

/// One plain `redis-server` with `requirepass`, killed by PID on drop.
struct PasswordRedis {
    port: u16,
    child: Child,
}

impl PasswordRedis {
    fn start(password: &str) -> PasswordRedis {
        let port = pick_node_port();
        let mut command = Command::new(common::server_program());
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--logfile", ""])
            .args(["--requirepass", password])
            .stdout(Stdio::null());
        let child = spawn(command).unwrap_or_else(|e| panic!("start redis-server: {e}"));
        wait_until(
            "the password-protected redis-server to answer",
            Duration::from_secs(10),
            || match try_query::<String>(port, &["PING"]) {
                Err(e) if e.contains("NOAUTH") => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
        PasswordRedis { port, child }
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn missing_credentials_are_reported_and_the_right_ones_make_it_ready() {
    let redis = PasswordRedis::start("right-password");
    let addr = format!("127.0.0.1:{}", redis.port);

    let without = start_proxy_configured(vec![format!("redis://{addr}")], |_| {});
    let ready = wait_not_ready(&without, "backend authentication failed");
    assert!(
        ready["error"].as_str().unwrap_or("").starts_with("NOAUTH"),
        "{ready}"
    );
    drop(without);

    let with = start_proxy_configured(vec![format!("redis://:right-password@{addr}")], |_| {});
    let (status, ready) = admin_json(&with, "/readyz");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["standalone"], true, "{ready}");
    let (_, nodes) = admin_json(&with, "/cluster/nodes");
    let addresses: BTreeSet<String> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| json_str(&n["address"]))
        .collect();
    assert_eq!(addresses, BTreeSet::from([addr]), "{nodes}");
}

/// Credentials that stop working while the proxy runs (the node's password changed under
/// it): `/readyz` says so with the node's error, and a client whose command needs a new
/// connection gets an error naming the node and the refusal, never the password. Once the
/// password is back, the proxy is ready again and serves.
#[test]
fn credentials_that_stop_working_are_reported_until_they_work_again() {
    let redis = PasswordRedis::start("first-password");
    let addr = format!("127.0.0.1:{}", redis.port);
    let proxy = start_proxy_configured(vec![format!("redis://:first-password@{addr}")], |c| {
        c.cluster.refresh_interval = Duration::from_millis(300);
    });
    let ok = Reply::Simple("OK".into());
    let mut client = RawClient::connect(proxy.local_addr());
    assert_eq!(client.call(&["SET", "creds:k", "v"]), ok);
    let mut direct = RawClient::connect(addr.parse().expect("address"));
    assert_eq!(direct.call(&["AUTH", "first-password"]), ok);
    assert_eq!(
        direct.call(&["CONFIG", "SET", "requirepass", "second-password"]),
        ok
    );
    // Cut the proxy's authenticated connections: it has to log in again.
    let killed = direct.call(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    assert!(matches!(killed, Reply::Int(n) if n > 0), "{killed:?}");
    let ready = wait_not_ready(&proxy, "backend authentication failed");
    assert!(
        ready["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("WRONGPASS"),
        "{ready}"
    );
    assert_eq!(ready["node"], addr.as_str(), "{ready}");
    wait_until(
        "a client error naming the refusal",
        common::CLUSTER_DEADLINE,
        || match client.call(&["GET", "creds:k"]) {
            Reply::Error(e) if e.contains(&addr) && e.contains("WRONGPASS") => {
                assert!(e.starts_with("ERR authentication to node"), "{e}");
                assert!(
                    !e.contains("first-password") && !e.contains("second-password"),
                    "{e}"
                );
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    );
    // Back to the configured password: ready again, and serving.
    assert_eq!(
        direct.call(&["CONFIG", "SET", "requirepass", "first-password"]),
        ok
    );
    wait_ready(&proxy, "/readyz 200 again");
    wait_until(
        "GET to work again",
        common::CLUSTER_DEADLINE,
        || match client.call(&["GET", "creds:k"]) {
            Reply::Bulk(Some(v)) if v == b"v" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// A failover that no traffic notices (no client touches the shard, and the periodic refresh
/// is 10 s away): the topology watch sees `CLUSTER NODES` change and the proxy's routing and
/// `/cluster/nodes` show the promoted replica as primary within 2 s of the cluster agreeing on
/// it.
#[test]
fn topology_changes_without_traffic_show_within_two_seconds() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.cluster.refresh_interval = Duration::from_secs(10);
    });
    let role_of = |addr: &str| -> Option<String> {
        let (_, nodes) = admin_json(&proxy, "/cluster/nodes");
        nodes["nodes"].as_array()?.iter().find_map(|n| {
            (n["address"].as_str() == Some(addr))
                .then(|| n["role"].as_str().unwrap_or("").to_string())
        })
    };
    let primary = cluster.primaries()[0];
    let replica = cluster.replicas_of(primary)[0];
    let replica_addr = format!("127.0.0.1:{replica}");
    wait_until(
        "the proxy to know the replica",
        common::CLUSTER_DEADLINE,
        || match role_of(&replica_addr).as_deref() {
            Some("replica") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    cluster.wait_replicated(primary);
    cluster.failover(replica);
    wait_until(
        "/cluster/nodes to show the promoted replica",
        Duration::from_secs(2),
        || match role_of(&replica_addr).as_deref() {
            Some("primary") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn readyz_answers_503_once_shutdown_starts() {
    let proxy = start_proxy(shared());
    assert_eq!(admin_get(&proxy, "/readyz").0, 200);
    proxy.shutdown_token().cancel();
    wait_not_ready(&proxy, "shutting down");
    // Still alive while it stops: only readiness changes.
    assert_eq!(admin_get(&proxy, "/healthz").0, 200);
}

#[test]
fn readyz_reports_a_dead_primary_until_its_replica_takes_over() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.cluster.refresh_interval = Duration::from_millis(300);
    });
    wait_ready(&proxy, "/readyz 200");
    // The refresher asks primaries in address order, so it asks this one first and sees it go.
    let victim = cluster
        .primaries()
        .into_iter()
        .min_by_key(|p| format!("127.0.0.1:{p}"))
        .expect("a primary");
    let victim_addr = format!("127.0.0.1:{victim}");
    let replica = cluster.replicas_of(victim)[0];
    cluster.wait_replicated(victim);
    cluster.kill(victim);

    let down = wait_not_ready(&proxy, "primary unreachable");
    let listed: Vec<&str> = down["unreachable_primaries"]
        .as_array()
        .unwrap_or_else(|| panic!("{down}"))
        .iter()
        .filter_map(|f| f["node"].as_str())
        .collect();
    assert_eq!(listed, [victim_addr.as_str()], "{down}");

    cluster.wait_promoted(replica);
    wait_ready(&proxy, "/readyz 200 after the promotion");
    let (_, nodes) = admin_json(&proxy, "/cluster/nodes");
    let nodes = nodes["nodes"].as_array().unwrap();
    let dead = nodes
        .iter()
        .find(|n| n["address"] == victim_addr.as_str())
        .unwrap_or_else(|| panic!("{victim_addr} not listed: {nodes:?}"));
    assert_eq!(dead["reachable"], false, "{dead}");
    assert!(dead["slots"].as_array().unwrap().is_empty(), "{dead}");
    let promoted = nodes
        .iter()
        .find(|n| n["address"] == format!("127.0.0.1:{replica}").as_str())
        .unwrap_or_else(|| panic!("promoted replica not listed: {nodes:?}"));
    assert_eq!(promoted["role"], "primary", "{promoted}");
    assert_eq!(promoted["reachable"], true, "{promoted}");
}

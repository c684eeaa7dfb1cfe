//! Zone-aware reads (`read_from = zone-affinity | zone-affinity-all`): reads stay on the nodes
//! in the proxy's availability zone, fall back to other replicas (or the primary) when the
//! zone has none, and follow a replica lost in the zone without an error.
//!
//! The nodes' zones come from the nodes themselves on Valkey (`availability-zone`, set on each
//! node with `CONFIG SET` before the proxy starts, and read by the proxy from `INFO server`),
//! and from `[backend.node_zones]` on Redis 7, which has no such setting. Where each read ran
//! is read from the nodes' own `INFO commandstats`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{
    backend_is_valkey, command_calls, local_keyslot, query, start_proxy_configured, unique_prefix,
    wait_for_known_replicas, wait_until, Cluster, CLUSTER_DEADLINE,
};
use serde_json::Value as Json;
use slotproxy::config::ReadFrom;

/// Reads per measurement: with two candidates, each gets one with near certainty (2^-39).
const READS: u64 = 40;

/// The shard the test key lives in: its primary and replicas `near` (in `zone-a`, the
/// primary's zone) and `far` (in `zone-b`). Every other node is in `zone-c`.
struct Shard {
    primary: u16,
    near: u16,
    far: u16,
}

/// Zone of each node, by port.
fn zones(cluster: &Cluster, shard: &Shard) -> BTreeMap<u16, &'static str> {
    cluster
        .ports()
        .into_iter()
        .map(|port| {
            let zone = match port {
                p if p == shard.primary || p == shard.near => "zone-a",
                p if p == shard.far => "zone-b",
                _ => "zone-c",
            };
            (port, zone)
        })
        .collect()
}

/// `[backend.node_zones]` for `zones`.
fn mapping(zones: &BTreeMap<u16, &str>) -> BTreeMap<String, String> {
    zones
        .iter()
        .map(|(port, zone)| (format!("127.0.0.1:{port}"), zone.to_string()))
        .collect()
}

/// A proxy in `zone` reading under `policy`, with `node_zones` configured.
fn proxy(
    cluster: &Cluster,
    zone: &str,
    policy: ReadFrom,
    node_zones: &BTreeMap<String, String>,
) -> slotproxy::Proxy {
    start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.backend.read_from = policy;
        c.backend.zone = Some(zone.to_string());
        c.backend.node_zones = node_zones.clone();
    })
}

/// Waits until the proxy knows `replicas` online replicas and shows each live node's zone as
/// `want` says in `/cluster/nodes` (learned zones arrive with the first refresh).
fn wait_for_zones(proxy: &slotproxy::Proxy, replicas: usize, want: &BTreeMap<u16, &str>) {
    wait_for_known_replicas(&mut RawClient::connect(proxy.local_addr()), replicas);
    let admin = proxy.admin_addr().expect("admin listener is on");
    wait_until(
        "the proxy to show every node's zone",
        CLUSTER_DEADLINE,
        || {
            let (_, body) = common::http::get(admin, "/cluster/nodes");
            let nodes: Json = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let shown: BTreeMap<u16, String> = nodes["nodes"]
                .as_array()
                .ok_or("no node list")?
                .iter()
                .filter_map(|n| {
                    let port = n["address"].as_str()?.rsplit(':').next()?.parse().ok()?;
                    Some((port, n["zone"].as_str().unwrap_or("null").to_string()))
                })
                .collect();
            let missing: Vec<String> = want
                .iter()
                .filter(|(port, zone)| shown.get(port).is_some_and(|s| s != *zone))
                .map(|(port, zone)| format!("{port}: want {zone}, shown {:?}", shown.get(port)))
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing.join("; "))
            }
        },
    );
}

/// Sends `n` GETs of `key` through `raw`, each of which must read `v`, and returns how many
/// GETs each of `nodes` ran meanwhile.
fn gets_on(raw: &mut RawClient, key: &str, n: u64, nodes: &[u16]) -> Vec<u64> {
    let before: Vec<u64> = nodes.iter().map(|&p| command_calls(p, "get")).collect();
    for _ in 0..n {
        assert_eq!(raw.call(&["GET", key]), Reply::Bulk(Some(b"v".to_vec())));
    }
    nodes
        .iter()
        .zip(before)
        .map(|(&p, b)| command_calls(p, "get") - b)
        .collect()
}

/// Asserts that the `READS` reads of one measurement ran on the nodes of `expected` only,
/// each of them serving some (`names` name the measured nodes for the message).
fn assert_reads(case: &str, counts: &[u64], names: &[&str], expected: &[&str]) {
    let total: u64 = counts.iter().sum();
    assert_eq!(
        total, READS,
        "{case}: every read runs once: {names:?} {counts:?}"
    );
    for (name, count) in names.iter().zip(counts) {
        if expected.contains(name) {
            assert!(
                *count > 0,
                "{case}: no read on {name}: {names:?} {counts:?}"
            );
        } else {
            assert_eq!(*count, 0, "{case}: reads on {name}: {names:?} {counts:?}");
        }
    }
}

/// `slotproxy_replica_reads_total{locality}` as /metrics shows it (0 when absent).
fn reads_counted(proxy: &slotproxy::Proxy, locality: &str) -> u64 {
    let (_, metrics) = common::http::get(proxy.admin_addr().unwrap(), "/metrics");
    let series = format!("slotproxy_replica_reads_total{{locality=\"{locality}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn reads_stay_in_the_proxys_zone_and_follow_a_lost_replica() {
    let cluster = Cluster::start(3, 2);
    let key = format!("{}:k", unique_prefix("zone"));
    let primary = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
    let replicas = cluster.replicas_of(primary);
    let [near, far] = replicas[..] else {
        panic!("the key's primary {primary} has replicas {replicas:?}, not two");
    };
    let shard = Shard { primary, near, far };
    let zones = zones(&cluster, &shard);
    // Valkey: each node says its zone, the proxy learns it. Redis 7 has no zone setting: the
    // configuration says it (the case "learned from the server" cannot run there).
    let node_zones = if backend_is_valkey() {
        for (port, zone) in &zones {
            let _: () = query(*port, &["CONFIG", "SET", "availability-zone", zone]);
        }
        BTreeMap::new()
    } else {
        eprintln!(
            "Redis has no availability-zone: zones come from [backend.node_zones]; \
             the zones-learned-from-the-server case runs on Valkey only"
        );
        mapping(&zones)
    };
    let names = ["primary", "near", "far"];
    let measured = [primary, near, far];

    // Proxy A, in zone-a, zone-affinity: the replica in its zone only.
    let a = proxy(&cluster, "zone-a", ReadFrom::ZoneAffinity, &node_zones);
    wait_for_zones(&a, 6, &zones);
    let mut raw_a = RawClient::connect(a.local_addr());
    assert_eq!(raw_a.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
    cluster.wait_replicated(primary);
    let counts = gets_on(&mut raw_a, &key, READS, &measured);
    assert_reads("zone-a, zone-affinity", &counts, &names, &["near"]);
    wait_until(
        "the same-zone reads to be counted",
        Duration::from_secs(5),
        || {
            let counted = reads_counted(&a, "same_zone");
            (counted >= READS).then_some(()).ok_or(format!("{counted}"))
        },
    );

    // Proxy B, in zone-a, zone-affinity-all: the replica in its zone before its primary,
    // which is in the same zone (as Valkey GLIDE's AZAffinityReplicasAndPrimary).
    let b = proxy(&cluster, "zone-a", ReadFrom::ZoneAffinityAll, &node_zones);
    wait_for_zones(&b, 6, &zones);
    let mut raw_b = RawClient::connect(b.local_addr());
    let counts = gets_on(&mut raw_b, &key, READS, &measured);
    assert_reads("zone-a, zone-affinity-all", &counts, &names, &["near"]);

    // In zone-b: the replica there. In a zone without a node of the shard: any replica.
    let cases: &[(&str, ReadFrom, &[&str])] = &[
        ("zone-b", ReadFrom::ZoneAffinityAll, &["far"]),
        ("zone-b", ReadFrom::ZoneAffinity, &["far"]),
        ("zone-x", ReadFrom::ZoneAffinityAll, &["near", "far"]),
    ];
    for &(zone, policy, expected) in cases {
        let other = proxy(&cluster, zone, policy, &node_zones);
        wait_for_zones(&other, 6, &zones);
        let mut raw = RawClient::connect(other.local_addr());
        let counts = gets_on(&mut raw, &key, READS, &measured);
        assert_reads(&format!("{zone}, {policy:?}"), &counts, &names, expected);
    }

    // A configured zone wins over the one the node reports: on Valkey, a mapping that swaps
    // the replicas' zones moves zone-a's reads to the other replica.
    if backend_is_valkey() {
        let mut swapped = zones.clone();
        swapped.insert(near, "zone-b");
        swapped.insert(far, "zone-a");
        let mapped = proxy(
            &cluster,
            "zone-a",
            ReadFrom::ZoneAffinity,
            &mapping(&swapped),
        );
        wait_for_zones(&mapped, 6, &swapped);
        let mut raw = RawClient::connect(mapped.local_addr());
        let counts = gets_on(&mut raw, &key, READS, &measured);
        assert_reads(
            "zone-a, zone-affinity, swapped by the mapping",
            &counts,
            &names,
            &["far"],
        );
    }

    // The replica in zone-a dies (SIGKILL): every read still succeeds (the primary serves
    // those whose replica is gone), and once the cluster marks it failed, A reads from the
    // other replica and B from its same-zone primary.
    cluster.kill(near);
    let mut remaining = zones.clone();
    remaining.remove(&near);
    for (raw, proxy) in [(&mut raw_a, &a), (&mut raw_b, &b)] {
        let mut reads = 0;
        wait_until(
            "the proxy to drop the killed replica",
            CLUSTER_DEADLINE,
            || {
                for _ in 0..10 {
                    assert_eq!(raw.call(&["GET", &key]), Reply::Bulk(Some(b"v".to_vec())));
                    reads += 1;
                }
                let info = raw.call(&["INFO", "proxy"]).text();
                match common::info_field(&info, "proxy_replicas_known").as_deref() {
                    Some("5") => Ok(()),
                    other => Err(format!("{other:?} replicas known after {reads} reads")),
                }
            },
        );
        wait_for_zones(proxy, 5, &remaining);
    }
    let alive = [primary, far];
    let alive_names = ["primary", "far"];
    let counts = gets_on(&mut raw_a, &key, READS, &alive);
    assert_reads(
        "zone-a, zone-affinity, near replica killed",
        &counts,
        &alive_names,
        &["far"],
    );
    let counts = gets_on(&mut raw_b, &key, READS, &alive);
    assert_reads(
        "zone-a, zone-affinity-all, near replica killed",
        &counts,
        &alive_names,
        &["primary"],
    );
}

//! Nodes whose address changes under the proxy, with traffic running, as managed and
//! orchestrated clusters do it:
//!
//! - a primary replaced under the same name (ElastiCache, MemoryDB): its hostname comes to
//!   point at a new process holding its data, and the old one answers `MOVED` to its own name;
//! - a node restarted with the same node id on another address (a rescheduled pod);
//! - the seed given as a name (a configuration endpoint) that comes to lead to other nodes
//!   after every node the proxy knew is gone.
//!
//! Names live in `/etc/hosts` (`common::names::Hosts`); nodes run on 127.0.0.x. Writes go
//! through the checker (`common::checker`), which reads every acknowledged one back.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::checker::Checker;
use common::names::{loopback, At, Hosts, LoopCluster, Options};
use common::traffic::Traffic;
use common::{local_keyslot, proxy_client, start_proxy_configured, unique_prefix, PROXY_WORKERS};

/// Writer threads of the checker: each has at most one write in flight.
const WRITERS: usize = 4;

/// `n` list keys spread over the keyspace (and so over every primary).
fn spread_keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

/// The value of `series` (name and labels) on the proxy's `/metrics`; 0 when absent.
fn metric(proxy: &slotproxy::Proxy, series: &str) -> f64 {
    let admin = proxy.admin_addr().expect("the admin listener");
    let (status, body) = common::http::get(admin, "/metrics");
    assert_eq!(status, 200, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_primary_replaced_twice_under_its_name_is_followed_without_a_lost_write() {
    let hosts = Hosts::new("replace");
    let cluster = LoopCluster::start(
        Some(&hosts),
        3,
        1,
        &[loopback(2), loopback(3)],
        Options {
            hostnames: true,
            appendonly: false,
            node_timeout_ms: 2000,
        },
    );
    let seed = cluster.nodes()[0];
    let seed_name = cluster.hostname(seed).expect("the seed's name");
    let proxy = start_proxy_configured(vec![format!("redis://{seed_name}:{}", seed.port)], |_| {});
    let mut victim = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != seed)
        .expect("a primary that is not the seed");
    let name = cluster.hostname(victim).expect("the victim's name");
    let victim_slots: HashSet<u16> = cluster.slots_of(victim).into_iter().collect();
    let prefix = unique_prefix("replaced");
    let checker = Checker::start(proxy.local_addr(), spread_keys(&prefix, 150), WRITERS);
    let traffic = Traffic::start(proxy.local_addr(), spread_keys(&format!("{prefix}:t"), 120));
    checker.wait_for_more(1000);

    let mut switches = Vec::new();
    for ip in [loopback(2), loopback(3)] {
        let new = At {
            ip,
            port: victim.port,
        };
        // The new process: same name and port, another address, the old one's data.
        cluster.add_replica(new, Some(name.clone()), victim);
        checker.wait_for_more(200);
        let flipped_at = checker.elapsed();
        hosts.set(&name, ip);
        cluster.failover(new);
        let promoted_at = checker.elapsed();
        checker.wait_for_more(300);
        // The old process, a replica announcing the new primary's name:port now, goes away.
        cluster.remove(victim);
        let removed_at = checker.elapsed();
        checker.wait_for_more(300);
        traffic.wait_for_more_ops(100);
        switches.push((flipped_at, promoted_at, removed_at));
        victim = new;
    }

    let report = traffic.stop();
    let (writes, keys) = checker.stop();
    let verdict = writes.verify(&keys, &mut proxy_client(&proxy));
    eprintln!(
        "primary replaced twice under {name}: {} writes acknowledged, {} lost, {} failed \
         ({} of them on the replaced shard); {} other operations, {} errors; \
         switches (flip, promoted, removed): {switches:?}; failures: {:#?}; traffic errors: {:#?}",
        verdict.acknowledged,
        verdict.lost.len(),
        writes.failed.len(),
        writes
            .failed
            .iter()
            .filter(|w| victim_slots.contains(&local_keyslot(w.key.as_bytes())))
            .count(),
        report.ops,
        report.error_count,
        writes.failures,
        report.errors,
    );
    verdict.assert_nothing_lost();
    // The old processes did answer MOVED to their own name, and the proxy went around it.
    let moved_to_itself = metric(&proxy, "slotproxy_retries_total{kind=\"moved_to_itself\"}");
    eprintln!("MOVED to itself, retried over a new connection: {moved_to_itself}");
    assert!(
        moved_to_itself > 0.0,
        "no MOVED to the node's own name was seen"
    );
    // A MOVED means the write did not run, so it is sent again over a new connection: the
    // clients see nothing of the two switches.
    writes.assert_no_failures();
    report.assert_clean();
    assert!(verdict.acknowledged > 2000);
}

/// The proxy's view of the nodes (`/cluster/nodes`): (node id, address, role).
fn proxy_nodes(proxy: &slotproxy::Proxy) -> Vec<(String, String, String)> {
    let admin = proxy.admin_addr().expect("the admin listener");
    let (status, body) = common::http::get(admin, "/cluster/nodes");
    assert_eq!(status, 200, "/cluster/nodes: {body}");
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/cluster/nodes {body:?}: {e}"));
    json["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    let text = |field: &str| n[field].as_str().unwrap_or_default().to_string();
                    (text("id"), text("address"), text("role"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_primary_restarted_with_its_node_id_on_another_address_is_followed() {
    // A longer node timeout than the restart takes: the node comes back as the same primary
    // (no failover), only its address changed.
    let cluster = LoopCluster::start(
        None,
        3,
        1,
        &[loopback(4)],
        Options {
            hostnames: false,
            appendonly: true,
            node_timeout_ms: 5000,
        },
    );
    let seed = cluster.nodes()[0];
    let proxy = start_proxy_configured(vec![format!("redis://{seed}")], |_| {});
    let old = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != seed)
        .expect("a primary that is not the seed");
    let id = cluster.node_id(old);
    let slots: HashSet<u16> = cluster.slots_of(old).into_iter().collect();
    let on_node = |key: &str| slots.contains(&local_keyslot(key.as_bytes()));
    let prefix = unique_prefix("rescheduled");
    let checker = Checker::start(proxy.local_addr(), spread_keys(&prefix, 150), WRITERS);
    checker.wait_for_more(1000);

    let new = At {
        ip: loopback(4),
        port: old.port,
    };
    let stop_at = checker.elapsed();
    cluster.stop(old);
    cluster.start_at(old, new);
    let started_at = checker.elapsed();
    common::wait_until(
        "the proxy to route to the node at its new address",
        Duration::from_secs(10),
        || {
            let nodes = proxy_nodes(&proxy);
            if nodes
                .iter()
                .any(|(i, a, r)| *i == id && *a == new.to_string() && r == "primary")
            {
                Ok(())
            } else {
                Err(format!("{nodes:?}"))
            }
        },
    );
    let followed_at = checker.elapsed();
    cluster.wait_stable();
    let stable_at = checker.elapsed();
    common::wait_until(
        "the proxy to forget the old address",
        Duration::from_secs(15),
        || {
            let nodes = proxy_nodes(&proxy);
            if nodes.iter().any(|(_, a, _)| *a == old.to_string()) {
                Err(format!("{nodes:?}"))
            } else {
                Ok(())
            }
        },
    );
    assert_eq!(cluster.node_id(new), id, "same node id after the restart");
    checker.wait_for_more(1000);
    let (writes, keys) = checker.stop();
    let verdict = writes.verify(&keys, &mut proxy_client(&proxy));
    // The longest the node's slots went without an acknowledged write: how long its clients
    // waited.
    let mut on_node_acks: Vec<Duration> = writes
        .acknowledged
        .iter()
        .filter(|w| on_node(&w.key))
        .map(|w| w.at)
        .collect();
    on_node_acks.sort();
    let longest_wait = on_node_acks
        .windows(2)
        .map(|p| p[1] - p[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "longest wait for the restarted node's slots: {longest_wait:?}; primary {id} restarted from {old} at {new}: {} writes acknowledged, {} lost, {} failed \
         ({} ran anyway); stopped at {stop_at:?}, started {:?} later, cluster stable {:?} later, \
         proxy followed {:?} after the stop; failures: {:#?}",
        verdict.acknowledged,
        verdict.lost.len(),
        writes.failed.len(),
        verdict.failed_present,
        started_at - stop_at,
        stable_at - stop_at,
        followed_at - stop_at,
        writes.failures,
    );
    verdict.assert_nothing_lost();
    // Only a write in flight to the node when it went down may fail (it was sent, so it is
    // never sent again): on that node's slots, between the stop and the restart. A writer has
    // one write in flight at a time, and a node shutting down on SIGTERM holds writes until it
    // exits. Each proxy worker holds its own connection to the node, and their closes are not
    // simultaneous; a writer whose write failed opens a new client connection, which may be
    // served by the other worker, whose connection the exit has not closed yet: so up to one
    // failure per writer per worker (seen: 5 failures from 4 writers, one writer's two 4 ms
    // apart as the node exited).
    let outside: Vec<_> = writes
        .failed
        .iter()
        .filter(|w| {
            !on_node(&w.key) || w.at < stop_at || w.at > started_at + Duration::from_secs(1)
        })
        .collect();
    assert!(
        outside.is_empty(),
        "writes failed off the node or outside its restart (stopped at {stop_at:?}, started at \
         {started_at:?}): {outside:#?}"
    );
    assert!(
        writes.failed.len() <= WRITERS * PROXY_WORKERS,
        "{} writes failed: {:#?}",
        writes.failed.len(),
        writes.failures
    );
    // Requests waiting for the node get it within the request deadline (retry_deadline_ms).
    assert!(
        longest_wait < Duration::from_secs(5),
        "the restarted node's slots went {longest_wait:?} without a write"
    );
    for w in &writes.failed {
        assert!(
            on_node(&w.key) && w.at >= stop_at && w.at <= started_at + Duration::from_secs(1),
            "{} on {} failed at {:?}, outside the restart ({stop_at:?}..{started_at:?}) or \
             not on the restarted node",
            w.value,
            w.key,
            w.at
        );
    }
}

#[test]
fn a_seed_name_is_resolved_again_when_every_node_the_proxy_knew_is_gone() {
    let hosts = Hosts::new("seed");
    let cluster = LoopCluster::start(
        Some(&hosts),
        3,
        1,
        &[loopback(5)],
        Options {
            hostnames: false,
            appendonly: true,
            node_timeout_ms: 5000,
        },
    );
    // The configuration endpoint: a name for the first node's port.
    let endpoint = hosts.name("cfg");
    hosts.set(&endpoint, loopback(1));
    let seed = cluster.nodes()[0];
    let proxy = start_proxy_configured(vec![format!("redis://{endpoint}:{}", seed.port)], |_| {});
    let prefix = unique_prefix("seedname");
    let checker = Checker::start(proxy.local_addr(), spread_keys(&prefix, 150), 2);
    checker.wait_for_more(1000);
    let (writes, keys) = checker.stop();
    writes.assert_no_failures();

    // Every node moves to another address (primaries first, so each waits for its replica),
    // keeping its id and data; they find each other again at the new addresses.
    let old: Vec<At> = cluster.primaries();
    let all: Vec<At> = old
        .iter()
        .copied()
        .chain(cluster.nodes().into_iter().filter(|n| !old.contains(n)))
        .collect();
    for &node in &all {
        cluster.stop(node);
    }
    for &node in &all {
        cluster.start_at(
            node,
            At {
                ip: loopback(5),
                port: node.port,
            },
        );
    }
    for node in cluster.nodes() {
        cluster.meet_all(node);
    }
    cluster.wait_stable();

    // No address the proxy knows leads anywhere, the name included: it cannot serve.
    let mut client = proxy_client(&proxy);
    let probe = keys[0].clone();
    let refused = redis::cmd("LLEN").arg(&probe).query::<i64>(&mut client);
    assert!(
        refused.is_err(),
        "the proxy served LLEN with every node it knew gone: {refused:?}"
    );

    // The name leads to the moved cluster now: the next refresh resolves it again.
    hosts.set(&endpoint, loopback(5));
    let flipped = std::time::Instant::now();
    common::wait_until(
        "the proxy to serve again through the seed's name",
        Duration::from_secs(20),
        || {
            let mut client =
                common::try_proxy_client(proxy.local_addr()).map_err(|e| e.to_string())?;
            redis::cmd("LLEN")
                .arg(&probe)
                .query::<i64>(&mut client)
                .map_err(|e| e.to_string())
        },
    );
    let back_after = flipped.elapsed();
    let nodes = proxy_nodes(&proxy);
    assert!(
        nodes.iter().all(|(_, a, _)| a.starts_with("127.0.0.5:")),
        "the proxy still lists old addresses: {nodes:?}"
    );
    let verdict = writes.verify(&keys, &mut proxy_client(&proxy));
    verdict.assert_nothing_lost();

    // And it keeps following the cluster: a failover is picked up.
    let primary = cluster.primaries()[0];
    let replica = cluster.replicas_of(primary)[0];
    cluster.failover(replica);
    let replica_id = cluster.node_id(replica);
    common::wait_until(
        "the proxy to see the failover",
        Duration::from_secs(10),
        || {
            let nodes = proxy_nodes(&proxy);
            if nodes
                .iter()
                .any(|(i, a, r)| *i == replica_id && *a == replica.to_string() && r == "primary")
            {
                Ok(())
            } else {
                Err(format!("{nodes:?}"))
            }
        },
    );
    let checker = Checker::start(
        proxy.local_addr(),
        spread_keys(&format!("{prefix}:after"), 60),
        2,
    );
    checker.wait_for_more(500);
    let (after, after_keys) = checker.stop();
    after.assert_no_failures();
    after
        .verify(&after_keys, &mut proxy_client(&proxy))
        .assert_nothing_lost();
    eprintln!(
        "every node moved to 127.0.0.5: {} earlier writes all there; the proxy served again \
         {back_after:?} after the seed's name was pointed there, and followed a failover",
        verdict.acknowledged
    );
}

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

use common::checker::Checker;
use common::names::{loopback, At, Hosts, LoopCluster, Options};
use common::traffic::Traffic;
use common::{local_keyslot, proxy_client, start_proxy_configured, unique_prefix};

/// Writer threads of the checker: each has at most one write in flight.
const WRITERS: usize = 4;

/// `n` list keys spread over the keyspace (and so over every primary).
fn spread_keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

#[test]
fn a_primary_replaced_twice_under_its_name_is_followed_without_a_lost_write() {
    let hosts = Hosts::new("replace");
    let cluster = LoopCluster::start(
        &hosts,
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
    // A MOVED means the write did not run, so it is sent again over a new connection: the
    // clients see nothing of the two switches.
    writes.assert_no_failures();
    report.assert_clean();
    assert!(verdict.acknowledged > 2000);
}

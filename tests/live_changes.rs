//! Topology changes while clients use the proxy: a manual slot migration (ASK), a 600-slot
//! reshard with `redis-cli` (MOVED/ASK), a manual failover, a primary killed by PID, and the
//! seed node going away. Each test has its own cluster.
//!
//! Background traffic (`common::traffic`) checks every reply as it goes; the tests then read
//! every acknowledged write back through the proxy and directly from the owning primary.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::traffic::{Traffic, TrafficReport};
use common::{
    local_keyslot, proxy_client, start_proxy, start_proxy_configured, tag_for_slot, try_role,
    unique_prefix, Cluster, Role, CLUSTER_DEADLINE,
};

/// A request for a dead node's slots must fail (or succeed) within this; never hang.
const FAIL_FAST: Duration = Duration::from_secs(2);

/// `n` keys spread over the keyspace (and so over every primary).
fn spread_keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

/// Reads every acknowledged write back through the proxy and from the owning primary.
fn assert_writes_kept(cluster: &Cluster, proxy: &slotproxy::Proxy, report: &TrafficReport) {
    assert!(
        !report.last_written.is_empty(),
        "traffic acknowledged no write"
    );
    let mut con = proxy_client(proxy);
    for (key, value) in &report.last_written {
        let got: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
        assert_eq!(got.as_ref(), Some(value), "{key} through the proxy");
        let owner = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
        let direct: Option<String> = redis::cmd("GET")
            .arg(key)
            .query(&mut cluster.direct(owner))
            .unwrap();
        assert_eq!(direct.as_ref(), Some(value), "{key} on its owner {owner}");
    }
}

#[test]
fn manual_slot_migration_under_traffic_loses_nothing() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let p = unique_prefix("migration");
    let tag = format!("{p}:tag");
    let slot = local_keyslot(tag.as_bytes());
    let from = cluster.primary_for_slot(slot);
    let to = *cluster
        .primaries()
        .iter()
        .find(|&&x| x != from)
        .expect("a second primary");

    // Keys only the main thread touches, to check ASK handling deterministically.
    let fixed: Vec<String> = (0..10).map(|i| format!("{{{tag}}}:fixed:{i}")).collect();
    let mut con = proxy_client(&proxy);
    for (i, key) in fixed.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(format!("fixed-{i}"))
            .query(&mut con)
            .unwrap();
    }

    // Traffic over 40 keys of the migrating slot and 40 keys elsewhere.
    let mut keys: Vec<String> = (0..40).map(|i| format!("{{{tag}}}:{i}")).collect();
    keys.extend(spread_keys(&format!("{p}:other"), 40));
    let traffic = Traffic::start(proxy.local_addr(), keys);
    traffic.wait_for_more_ops(600);

    cluster.begin_migration(slot, to);
    traffic.wait_for_more_ops(300);
    let fixed_refs: Vec<&str> = fixed.iter().map(String::as_str).collect();
    cluster.move_named_keys(slot, &fixed_refs[..5]);
    for _ in 0..4 {
        cluster.move_keys(slot, 5);
        traffic.wait_for_more_ops(200);
    }

    // Half-moved: fixed[0..5] live only on the target now.
    let on_source: Vec<String> = common::query(
        from,
        &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "1000"],
    );
    let on_target: usize = common::query(to, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert!(
        !on_source.is_empty() && on_target > 0,
        "slot {slot} should be split: {} keys on source, {on_target} on target",
        on_source.len()
    );
    for key in &fixed[..5] {
        assert!(!on_source.contains(key), "{key} should have moved");
    }
    for (i, key) in fixed.iter().enumerate() {
        let got: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
        assert_eq!(
            got,
            Some(format!("fixed-{i}")),
            "{key} while the slot is split"
        );
    }
    // A new key of the slot is created on the target (ASK), not on the source.
    let new_key = format!("{{{tag}}}:new");
    let _: () = redis::cmd("SET")
        .arg(&new_key)
        .arg("created-mid-migration")
        .query(&mut con)
        .unwrap();
    let (_, on_target): ((), Option<String>) = redis::pipe()
        .cmd("ASKING")
        .cmd("GET")
        .arg(&new_key)
        .query(&mut cluster.direct(to))
        .unwrap();
    assert_eq!(on_target.as_deref(), Some("created-mid-migration"));
    let err = redis::cmd("GET")
        .arg(&new_key)
        .query::<Option<String>>(&mut cluster.direct(from))
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some("ASK"),
        "the source must not have {new_key}: {err}"
    );
    traffic.wait_for_more_ops(1000);

    cluster.finish_migration(slot);
    traffic.wait_for_more_ops(600);
    let report = traffic.stop();
    report.assert_clean();
    assert_writes_kept(&cluster, &proxy, &report);
    for (i, key) in fixed.iter().enumerate() {
        let got: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
        assert_eq!(got, Some(format!("fixed-{i}")), "{key} after the migration");
    }
    let got: Option<String> = redis::cmd("GET").arg(&new_key).query(&mut con).unwrap();
    assert_eq!(got.as_deref(), Some("created-mid-migration"));
}

#[test]
fn reshard_of_600_slots_under_traffic_loses_nothing() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let p = unique_prefix("reshard");
    let from = cluster.primary_for_slot(0);
    let to = *cluster
        .primaries()
        .iter()
        .find(|&&x| x != from)
        .expect("a second primary");
    let before = cluster.slot_map();
    let from_slots = cluster.slots_of(from);
    // Half the keys in the lowest slots of `from` (where redis-cli takes slots from), half
    // anywhere.
    let mut keys: Vec<String> = (0..150)
        .map(|i| {
            let slot = from_slots[(i * 4) % 600];
            format!("{{{}}}:{i}", tag_for_slot(slot, &p))
        })
        .collect();
    keys.extend(spread_keys(&format!("{p}:any"), 150));

    let traffic = Traffic::start(proxy.local_addr(), keys.clone());
    traffic.wait_for_more_ops(900);
    cluster.reshard(from, to, 600);
    traffic.wait_for_more_ops(900);
    let report = traffic.stop();

    let after = cluster.slot_map();
    let gained =
        |map: &std::collections::BTreeMap<u16, u16>| map.values().filter(|&&o| o == to).count();
    assert_eq!(gained(&after), gained(&before) + 600);
    let moved_keys = keys
        .iter()
        .filter(|k| {
            let slot = local_keyslot(k.as_bytes());
            before[&slot] != after[&slot]
        })
        .count();
    assert!(
        moved_keys >= 100,
        "only {moved_keys} of the traffic's keys changed owner"
    );
    report.assert_clean();
    assert_writes_kept(&cluster, &proxy, &report);
}

#[test]
fn manual_failover_under_traffic_loses_nothing() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let keys = spread_keys(&unique_prefix("failover"), 300);
    let primary = cluster.primaries()[0];
    let replica = cluster.replicas_of(primary)[0];
    let on_shard = keys
        .iter()
        .filter(|k| cluster.primary_for_slot(local_keyslot(k.as_bytes())) == primary)
        .count();
    assert!(
        on_shard > 50,
        "only {on_shard} keys on the failed-over shard"
    );

    let traffic = Traffic::start(proxy.local_addr(), keys);
    traffic.wait_for_more_ops(900);
    cluster.failover(replica);
    traffic.wait_for_more_ops(900);
    let report = traffic.stop();

    assert_eq!(try_role(replica).unwrap(), Role::Primary);
    report.assert_clean();
    assert_writes_kept(&cluster, &proxy, &report);
}

/// Keys whose slots belong to `primary`, and keys whose slots do not.
fn keys_on_and_off(
    cluster: &Cluster,
    primary: u16,
    prefix: &str,
    n: usize,
) -> (Vec<String>, Vec<String>) {
    let owned: HashSet<u16> = cluster.slots_of(primary).into_iter().collect();
    let mut on = Vec::new();
    let mut off = Vec::new();
    for i in 0.. {
        if on.len() == n && off.len() == n {
            break;
        }
        let key = format!("{prefix}:{i}");
        let list = if owned.contains(&local_keyslot(key.as_bytes())) {
            &mut on
        } else {
            &mut off
        };
        if list.len() < n {
            list.push(key);
        }
    }
    (on, off)
}

/// GET through the proxy, timed; panics if it takes longer than [`FAIL_FAST`].
fn timed_get(con: &mut redis::Connection, key: &str) -> redis::RedisResult<Option<String>> {
    let start = Instant::now();
    let result = redis::cmd("GET").arg(key).query(con);
    let took = start.elapsed();
    assert!(
        took < FAIL_FAST,
        "GET {key} took {took:?} (must answer within {FAIL_FAST:?}): {result:?}"
    );
    result
}

/// A proxy whose requests for an unreachable node fail at once (`recovery_timeout_ms = 0`)
/// instead of waiting for its replacement (the recovery queue has tests of its own, in
/// `reliability.rs`).
fn start_failing_fast_proxy(cluster: &Cluster) -> slotproxy::Proxy {
    start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.backend.recovery_timeout = Duration::ZERO;
    })
}

/// Kills `victim` (a primary) and checks, on one client connection: requests for its slots fail
/// fast, other slots keep working, and once its replica is promoted its slots work again with
/// the data written before the kill.
fn kill_primary_and_expect_recovery(cluster: &Cluster, proxy: &slotproxy::Proxy, victim: u16) {
    let p = unique_prefix("kill");
    let (dead_keys, live_keys) = keys_on_and_off(cluster, victim, &p, 20);
    let replica = cluster.replicas_of(victim)[0];
    let mut con = proxy_client(proxy);
    for key in dead_keys.iter().chain(&live_keys) {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(format!("before-{key}"))
            .query(&mut con)
            .unwrap();
    }
    cluster.wait_replicated(victim);

    cluster.kill(victim);
    // The replica cannot be promoted before the 2 s node timeout: this must be an error.
    let first = timed_get(&mut con, &dead_keys[0]);
    assert!(
        first.is_err(),
        "GET on a killed primary's slot answered {first:?}"
    );
    for key in &live_keys {
        let got =
            timed_get(&mut con, key).unwrap_or_else(|e| panic!("GET {key} on a live shard: {e}"));
        assert_eq!(got, Some(format!("before-{key}")));
    }

    // Until promotion: errors allowed on the dead slots (fast), none elsewhere.
    let start = Instant::now();
    let mut errors_seen = 1;
    let mut last_error = String::new();
    loop {
        let mut all_ok = true;
        for key in &dead_keys {
            match timed_get(&mut con, key) {
                Ok(got) => assert_eq!(got, Some(format!("before-{key}")), "{key} after failover"),
                Err(e) => {
                    all_ok = false;
                    errors_seen += 1;
                    last_error = e.to_string();
                }
            }
        }
        for key in live_keys.iter().step_by(5) {
            let got = timed_get(&mut con, key)
                .unwrap_or_else(|e| panic!("GET {key} on a live shard during failover: {e}"));
            assert_eq!(got, Some(format!("before-{key}")));
        }
        if all_ok {
            break;
        }
        assert!(
            start.elapsed() < CLUSTER_DEADLINE,
            "slots of the killed primary {victim} still fail after {CLUSTER_DEADLINE:?} \
             ({errors_seen} errors, last: {last_error}; replica {replica} role {:?})",
            try_role(replica)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(try_role(replica).unwrap(), Role::Primary);

    // Writes work again on the promoted replica, on the same client connection.
    for key in &dead_keys {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("after")
            .query(&mut con)
            .unwrap();
        let got: String = redis::cmd("GET").arg(key).query(&mut con).unwrap();
        assert_eq!(got, "after");
        let direct: String = redis::cmd("GET")
            .arg(key)
            .query(&mut cluster.direct(replica))
            .unwrap();
        assert_eq!(direct, "after", "{key} on the promoted replica");
    }
}

#[test]
fn killed_primary_fails_fast_then_recovers_after_promotion() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_failing_fast_proxy(&cluster);
    // Not the seed: the proxy's seed stays reachable in this test.
    let victim = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != cluster.seed_port())
        .expect("a primary that is not the seed");
    kill_primary_and_expect_recovery(&cluster, &proxy, victim);
}

#[test]
fn killed_seed_primary_recovers_from_topology_of_other_nodes() {
    let cluster = Cluster::start(3, 1);
    let seed = cluster.seed_port();
    if try_role(seed).unwrap() != Role::Primary {
        cluster.failover(seed);
    }
    let proxy = start_failing_fast_proxy(&cluster);
    // With the seed dead, only the other nodes can tell the proxy who owns its slots now.
    kill_primary_and_expect_recovery(&cluster, &proxy, seed);
}

#[test]
fn proxy_keeps_working_after_the_seed_is_failed_over_and_killed() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let seed = cluster.seed_port();
    let keys = spread_keys(&unique_prefix("seed"), 300);
    let traffic = Traffic::start(proxy.local_addr(), keys);
    traffic.wait_for_more_ops(600);

    if try_role(seed).unwrap() == Role::Primary {
        let replica = cluster.replicas_of(seed)[0];
        cluster.failover(replica);
    }
    assert!(matches!(try_role(seed).unwrap(), Role::Replica { .. }));
    traffic.wait_for_more_ops(600);
    cluster.kill(seed);
    cluster.wait_stable();
    traffic.wait_for_more_ops(600);

    // Another topology change the proxy must follow without its seed.
    let replica = cluster
        .primaries()
        .into_iter()
        .find_map(|p| cluster.replicas_of(p).first().copied())
        .expect("a primary that still has a replica");
    cluster.failover(replica);
    traffic.wait_for_more_ops(900);
    let report = traffic.stop();
    report.assert_clean();
    assert_writes_kept(&cluster, &proxy, &report);

    let live: HashSet<u16> = cluster.live_ports().into_iter().collect();
    assert!(!live.contains(&seed));
}

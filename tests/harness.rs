//! Self-test of the cluster harness in `tests/common`: start-up, slot coverage, key slots,
//! killing nodes, manual migration, failover, and clean-up on drop.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{local_keyslot, tag_for_slot, wait_until, Cluster, Role, SLOTS};

fn pid_exists(pid: u32) -> bool {
    // SAFETY: signal 0 only probes for the process.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn cluster_starts_with_full_coverage_and_is_cleaned_up_on_drop() {
    let cluster = Cluster::start(3, 1);
    let ports = cluster.ports();
    assert_eq!(ports.len(), 6);
    assert_eq!(
        ports.iter().collect::<HashSet<_>>().len(),
        6,
        "ports must be distinct: {ports:?}"
    );
    for &port in &ports {
        assert!((20000..45000).contains(&port), "port {port} out of range");
        let pong: String = common::query(port, &["PING"]);
        assert_eq!(pong, "PONG");
    }
    assert_eq!(
        cluster.seed_url(),
        format!("redis://127.0.0.1:{}", ports[0])
    );

    let primaries = cluster.primaries();
    let replicas = cluster.replicas();
    assert_eq!(primaries.len(), 3, "primaries: {primaries:?}");
    assert_eq!(replicas.len(), 3, "replicas: {replicas:?}");
    for &primary in &primaries {
        assert_eq!(
            cluster.replicas_of(primary).len(),
            1,
            "replicas of {primary}"
        );
    }

    // Every slot is owned by one of the primaries, and CLUSTER SHARDS agrees with CLUSTER NODES.
    let map = cluster.slot_map();
    assert_eq!(map.len(), SLOTS);
    assert!(map.values().all(|owner| primaries.contains(owner)));
    for slot in [0u16, 1, 5460, 5461, 10922, 10923, 16383] {
        assert_eq!(
            cluster.primary_for_slot(slot),
            map[&slot],
            "owner of slot {slot}"
        );
    }
    let check = cluster.cli(
        ports[0],
        &["--cluster", "check", &format!("127.0.0.1:{}", ports[0])],
    );
    assert!(check.contains("[OK] All 16384 slots covered."), "{check}");

    // Key slots: the spec's vectors, and the local hash agrees with the server.
    assert_eq!(cluster.keyslot("foo"), 12182);
    assert_eq!(cluster.keyslot("hello"), 866);
    assert_eq!(cluster.keyslot("{user1000}.following"), 3443);
    assert_eq!(cluster.keyslot("{user1000}.followers"), 3443);
    for key in [
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "{}",
        "a{b",
        "x}y{",
        "",
    ] {
        assert_eq!(
            cluster.keyslot(key),
            local_keyslot(key.as_bytes()),
            "slot of {key:?}"
        );
    }
    for i in 0..200 {
        let key = format!("k{i}:{}", fastrand::u64(..));
        assert_eq!(
            cluster.keyslot(&key),
            local_keyslot(key.as_bytes()),
            "slot of {key:?}"
        );
    }
    let tag = tag_for_slot(1234, "t");
    assert_eq!(cluster.keyslot(&format!("{{{tag}}}:x")), 1234);

    // Kill a replica by PID: the process is gone and the others notice.
    let victim = replicas[0];
    let pid = cluster.pid(victim);
    assert!(pid_exists(pid));
    cluster.kill(victim);
    assert!(
        !pid_exists(pid),
        "redis-server {pid} still exists after kill"
    );
    assert!(common::try_query::<String>(victim, &["PING"]).is_err());
    assert!(!cluster.live_ports().contains(&victim));
    assert_eq!(cluster.replicas().len(), 2);
    wait_until(
        "the other nodes to flag the killed replica as failed",
        Duration::from_secs(30),
        || {
            for port in cluster.live_ports() {
                let nodes = common::try_cluster_nodes(port)?;
                let line = nodes
                    .iter()
                    .find(|n| n.port == victim)
                    .ok_or_else(|| format!("{port} forgot {victim}"))?;
                if !line.flags.iter().any(|f| f == "fail") {
                    return Err(format!("{port} sees {victim} as {:?}", line.flags));
                }
            }
            Ok(())
        },
    );
    cluster.wait_stable();

    // Drop kills every node and removes the directory; the ports are free again.
    let pids: Vec<u32> = ports.iter().map(|&p| cluster.pid(p)).collect();
    let dir = cluster.node_dir(ports[0]);
    drop(cluster);
    for pid in pids {
        assert!(!pid_exists(pid), "redis-server {pid} survived drop");
    }
    assert!(!dir.exists(), "{} survived drop", dir.display());
    for port in ports {
        assert!(
            common::port_is_free(port),
            "port {port} still bound after drop"
        );
        assert!(
            common::port_is_free(port + 10000),
            "bus port {} still bound after drop",
            port + 10000
        );
    }
}

#[test]
fn manual_migration_and_failover_move_data_and_roles() {
    let cluster = Cluster::start(3, 1);
    let slot = 777u16;
    let tag = tag_for_slot(slot, "mig");
    let from = cluster.primary_for_slot(slot);
    let to = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != from)
        .expect("another primary");

    let mut source = cluster.direct(from);
    let keys: Vec<String> = (0..250).map(|i| format!("{{{tag}}}:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(i)
            .query(&mut source)
            .expect("SET");
    }

    // Half-moved: some keys on each side, and the source answers ASK for moved ones.
    cluster.begin_migration(slot, to);
    assert_eq!(cluster.move_keys(slot, 100), 100);
    let moved_to_target: usize =
        common::query(to, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert_eq!(moved_to_target, 100);
    let on_source: Vec<Vec<u8>> = common::query(
        from,
        &["CLUSTER", "GETKEYSINSLOT", &slot.to_string(), "1000"],
    );
    assert_eq!(on_source.len(), 150);
    let moved_key = keys
        .iter()
        .find(|k| !on_source.contains(&k.as_bytes().to_vec()))
        .expect("a moved key");
    let err = redis::cmd("GET")
        .arg(moved_key)
        .query::<Option<String>>(&mut source)
        .expect_err("GET of a moved key on the source must redirect");
    assert_eq!(err.code(), Some("ASK"), "{err}");
    cluster.finish_migration(slot);

    assert_eq!(cluster.primary_for_slot(slot), to);
    let mut target = cluster.direct(to);
    for (i, key) in keys.iter().enumerate() {
        let value: String = redis::cmd("GET")
            .arg(key)
            .query(&mut target)
            .expect("GET on target");
        assert_eq!(value, i.to_string(), "{key}");
    }

    // Manual failover of that primary's replica swaps the roles.
    let replica = cluster.replicas_of(to)[0];
    cluster.failover(replica);
    assert_eq!(common::try_role(replica).expect("role"), Role::Primary);
    assert_eq!(
        common::try_role(to).expect("role"),
        Role::Replica {
            primary_port: replica,
            connected: true
        }
    );
    assert_eq!(cluster.primary_for_slot(slot), replica);

    // And redis-cli's reshard moves slots back.
    let before = cluster.slot_map().values().filter(|&&o| o == from).count();
    cluster.reshard(replica, from, 50);
    let after = cluster.slot_map().values().filter(|&&o| o == from).count();
    assert_eq!(after, before + 50);
}

#[test]
fn shared_cluster_is_started_once() {
    let a = common::shared();
    let b = common::shared();
    assert!(std::ptr::eq(a, b));
    assert_eq!(a.primaries().len(), 3);
    a.wait_stable();
}

#[test]
fn traffic_checker_reports_errors_it_sees() {
    // Straight at one cluster node (no proxy), most keys answer MOVED: the checker must count
    // them and refuse the run.
    let cluster = common::shared();
    let node = cluster.primaries()[0];
    let keys: Vec<String> = (0..50)
        .map(|i| format!("{}:{i}", common::unique_prefix("tc")))
        .collect();
    let traffic = common::traffic::Traffic::start(([127, 0, 0, 1], node).into(), keys);
    traffic.wait_for_more_ops(200);
    let report = traffic.stop();
    assert!(report.error_count > 0, "no error recorded: {report:?}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.to_ascii_lowercase().contains("moved")),
        "{:?}",
        report.errors
    );
    let refused = std::panic::catch_unwind(|| report.assert_clean());
    assert!(refused.is_err(), "assert_clean accepted a run with errors");
}

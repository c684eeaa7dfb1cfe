//! Read-from-replica policies: reads go to replicas (READONLY connections), writes always to
//! primaries, and a read whose replica is gone falls back to the primary.

mod common;

use common::raw::{RawClient, Reply};
use common::{
    info_field, local_keyslot, query, start_proxy_configured, unique_prefix,
    wait_for_known_replicas, Cluster,
};
use slotproxy::config::ReadFrom;

/// How many times `port` has run `command`, from its INFO commandstats.
fn calls(port: u16, command: &str) -> u64 {
    let stats: String = query(port, &["INFO", "commandstats"]);
    info_field(&stats, &format!("cmdstat_{command}"))
        .and_then(|v| {
            v.split(',')
                .find_map(|p| p.strip_prefix("calls=")?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn reads_go_to_replicas_writes_to_primaries_and_a_lost_replica_falls_back() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.backend.read_from = ReadFrom::Replica
    });
    let p = unique_prefix("replica");
    let key = format!("{p}:k");
    let primary = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
    let replica = cluster.replicas_of(primary)[0];
    let mut raw = RawClient::connect(proxy.local_addr());
    // Right after the cluster forms, nodes may still report replicas as `loading` (no
    // replication offset seen yet); the proxy only reads from replicas reported online.
    wait_for_known_replicas(&mut raw, 3);

    let (primary_sets, replica_gets, primary_gets) = (
        calls(primary, "set"),
        calls(replica, "get"),
        calls(primary, "get"),
    );
    assert_eq!(raw.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
    cluster.wait_replicated(primary);
    for _ in 0..50 {
        assert_eq!(raw.call(&["GET", &key]).text(), "v");
    }
    assert_eq!(
        calls(primary, "set"),
        primary_sets + 1,
        "the write must run on the primary"
    );
    assert_eq!(
        calls(replica, "get"),
        replica_gets + 50,
        "reads must run on the replica"
    );
    assert_eq!(
        calls(primary, "get"),
        primary_gets,
        "no read on the primary while its replica serves"
    );

    // The replica dies: reads still succeed, on the primary.
    cluster.kill(replica);
    for _ in 0..20 {
        assert_eq!(raw.call(&["GET", &key]).text(), "v");
    }
    assert!(
        calls(primary, "get") >= primary_gets + 20,
        "reads must fall back to the primary"
    );
}

//! Read-from-replica policies: reads go to replicas (READONLY connections), writes always to
//! primaries, and a read whose replica is gone falls back to the primary.

mod common;

use common::raw::{RawClient, Reply};
use common::{
    command_calls, local_keyslot, start_proxy_configured, unique_prefix, wait_for_known_replicas,
    Cluster,
};
use slotproxy::config::ReadFrom;

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
        command_calls(primary, "set"),
        command_calls(replica, "get"),
        command_calls(primary, "get"),
    );
    assert_eq!(raw.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
    cluster.wait_replicated(primary);
    for _ in 0..50 {
        assert_eq!(raw.call(&["GET", &key]).text(), "v");
    }
    assert_eq!(
        command_calls(primary, "set"),
        primary_sets + 1,
        "the write must run on the primary"
    );
    assert_eq!(
        command_calls(replica, "get"),
        replica_gets + 50,
        "reads must run on the replica"
    );
    assert_eq!(
        command_calls(primary, "get"),
        primary_gets,
        "no read on the primary while its replica serves"
    );

    // The replica dies: reads still succeed, on the primary.
    cluster.kill(replica);
    for _ in 0..20 {
        assert_eq!(raw.call(&["GET", &key]).text(), "v");
    }
    assert!(
        command_calls(primary, "get") >= primary_gets + 20,
        "reads must fall back to the primary"
    );
}

//! Scripts through the proxy: a script loaded once runs for keys on every shard, and a node
//! that lost its script cache (a promoted replica after a failover: script caches are not
//! replicated) is repaired by the proxy, which remembers the bodies it has seen. SCRIPT KILL
//! reaches the node that runs a busy script, whichever node that is.

mod common;

use common::raw::{RawClient, Reply};
use common::{
    local_keyslot, query, shared, start_proxy, try_query, unique_prefix, wait_until, Cluster,
    CLUSTER_DEADLINE,
};

#[test]
fn evalsha_survives_a_node_that_forgot_the_script() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("noscript");
    let mut raw = RawClient::connect(proxy.local_addr());

    let loaded_body = format!("return 'loaded-{p}'");
    let sha = raw.call(&["SCRIPT", "LOAD", &loaded_body]).text();
    let eval_body = format!("return redis.call('GET', KEYS[1]) .. '-{p}'");
    let key = format!("{p}:k");
    assert_eq!(raw.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
    assert_eq!(
        raw.call(&["EVAL", &eval_body, "1", &key]).text(),
        format!("v-{p}")
    );
    let eval_sha: String = query(cluster.primaries()[0], &["SCRIPT", "LOAD", &eval_body]);

    // Every primary forgets every script, as promoted replicas would.
    for port in cluster.primaries() {
        let _: String = query(port, &["SCRIPT", "FLUSH"]);
    }
    let owner = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
    let exists: Vec<i64> = query(owner, &["SCRIPT", "EXISTS", &eval_sha]);
    assert_eq!(
        exists,
        vec![0],
        "the flush must have removed the script from {owner}"
    );

    // Keys on every shard: each node gets the body again from the proxy.
    for i in 0..30 {
        let k = format!("{p}:spread:{i}");
        assert_eq!(
            raw.call(&["EVALSHA", &sha, "1", &k]).text(),
            format!("loaded-{p}")
        );
    }
    assert_eq!(
        raw.call(&["EVALSHA", &eval_sha, "1", &key]).text(),
        format!("v-{p}")
    );
    assert_eq!(
        raw.call(&["EVALSHA_RO", &eval_sha, "1", &key]).text(),
        format!("v-{p}")
    );

    // A script the proxy never saw still gets Redis's own answer.
    let unknown = "0123456789012345678901234567890123456789";
    let err = raw.call(&["EVALSHA", unknown, "1", &key]);
    assert!(err.error().starts_with("NOSCRIPT"), "{err:?}");
}

#[test]
fn script_kill_reaches_the_node_running_the_script() {
    let cluster = Cluster::start(3, 0);
    // Asked now: a busy node answers nothing but BUSY.
    let primaries = cluster.primaries();
    // Nodes answer other connections (BUSY, SCRIPT KILL) 100 ms into a script, not 5 s.
    for &port in &primaries {
        let _: String = query(port, &["CONFIG", "SET", "busy-reply-threshold", "100"]);
    }
    let proxy = start_proxy(&cluster);
    // A keyless script runs on any primary, over the shared pipe to it.
    let mut runner = RawClient::connect(proxy.local_addr());
    runner.send(&[b"EVAL", b"while true do end", b"0"]);
    wait_until("a node is busy with the script", CLUSTER_DEADLINE, || {
        let busy = primaries.iter().any(
            |&port| matches!(try_query::<String>(port, &["PING"]), Err(e) if e.contains("BUSY")),
        );
        if busy {
            Ok(())
        } else {
            Err("every primary answers PING".to_string())
        }
    });
    let mut killer = RawClient::connect(proxy.local_addr());
    assert_eq!(killer.call(&["SCRIPT", "KILL"]), Reply::Simple("OK".into()));
    let killed = runner.read_reply();
    assert!(killed.error().contains("killed"), "{killed:?}");
    // Nothing is busy any more: the next kill finds no script, and the runner goes on.
    let again = killer.call(&["SCRIPT", "KILL"]);
    assert!(again.error().starts_with("NOTBUSY"), "{again:?}");
    assert_eq!(runner.call(&["PING"]), Reply::Simple("PONG".into()));
}

//! A shard lost for good in a cluster that runs with `cluster-require-full-coverage no`
//! (every test cluster does): once the cluster reports its primary failed and it has no
//! replica to take over, its slots fail at once with Redis's `CLUSTERDOWN Hash slot not
//! served`, instead of every request waiting for the retry deadline; every other slot keeps
//! working.

mod common;

use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{local_keyslot, query, start_proxy_configured, unique_prefix, wait_until, Cluster};

#[test]
fn a_lost_shard_fails_fast_and_the_others_keep_working() {
    let cluster = Cluster::start(3, 0);
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |c| {
        // Far longer than the client's read timeout (10 s): a request that waited for it
        // instead of failing fast would time the client out.
        c.backend.retry_deadline = Duration::from_secs(60);
    });
    let mut client = RawClient::connect(proxy.local_addr());
    let p = unique_prefix("partial");
    let keys: Vec<String> = (0..30).map(|i| format!("{p}:{i}")).collect();
    for key in &keys {
        assert_eq!(client.call(&["SET", key, "v"]), Reply::Simple("OK".into()));
    }
    let victim = cluster.primaries()[0];
    let lost = |key: &String| cluster.primary_for_slot(local_keyslot(key.as_bytes())) == victim;
    let (on_lost, elsewhere): (Vec<&String>, Vec<&String>) = keys.iter().partition(|k| lost(k));
    assert!(!on_lost.is_empty() && !elsewhere.is_empty());
    cluster.kill(victim);
    let survivor = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != victim)
        .unwrap_or(victim);
    wait_until(
        "the cluster to mark the primary failed",
        common::CLUSTER_DEADLINE,
        || {
            let nodes: String = query(survivor, &["CLUSTER", "NODES"]);
            let failed = nodes.lines().any(|l| {
                l.contains(&format!(":{victim}@")) && l.contains("fail") && !l.contains("fail?")
            });
            if failed {
                Ok(())
            } else {
                Err(nodes)
            }
        },
    );
    // Once the proxy's map says so, the lost shard's keys fail at once, in Redis's words.
    wait_until(
        "the lost shard's slots to fail fast",
        common::CLUSTER_DEADLINE,
        || match client.call(&["GET", on_lost[0]]) {
            Reply::Error(e) if e == "CLUSTERDOWN Hash slot not served" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    for key in &on_lost {
        assert_eq!(
            client.call(&["SET", key, "w"]),
            Reply::Error("CLUSTERDOWN Hash slot not served".into())
        );
    }
    // Every other slot works as before.
    for key in &elsewhere {
        assert_eq!(client.call(&["GET", key]), Reply::Bulk(Some(b"v".to_vec())));
        assert_eq!(client.call(&["SET", key, "w"]), Reply::Simple("OK".into()));
    }
}

//! Nodes that come back `LOADING` their dataset, with traffic running: a restarted replica
//! serves no reads until loaded (they go to its primary), and requests for a primary that is
//! loading wait for it, up to the request deadline, instead of leaking `-LOADING`.
//!
//! Loading is slowed down for real with Redis's `key-load-delay` (a pause per key loaded) and
//! `loading-process-events-interval-bytes` (the node answers clients while it loads, as a
//! large production dataset does), both written into the node's configuration file before a
//! SIGTERM restart; the node saves its dataset on the way down and loads it on the way up.

mod common;

use std::time::{Duration, Instant};

use common::checker::Checker;
use common::raw::{RawClient, Reply};
use common::{
    command_calls, info_field, local_keyslot, query, start_proxy, start_proxy_configured,
    tag_for_slot, try_query, unique_prefix, wait_for_known_replicas, wait_until, Cluster,
};
use slotproxy::config::ReadFrom;

/// Keys each loading node holds: with `KEY_LOAD_DELAY_US` per key, several seconds of loading.
const FILL_KEYS: &str = "30000";
const KEY_LOAD_DELAY_US: &str = "50";
/// Loading must last at least this long for the test to mean anything.
const MIN_LOADING: Duration = Duration::from_millis(1500);

/// Gives the node on `port` a dataset (the same keys and values on every node it is called
/// for: `DEBUG POPULATE` is deterministic and not replicated), makes it save that dataset when
/// it stops and load it slowly when it starts, and writes this into its configuration file.
fn prepare_slow_load(port: u16, tag: &str) {
    let prefix = format!("{{{tag}}}:fill");
    let _: String = query(port, &["DEBUG", "POPULATE", FILL_KEYS, &prefix, "16"]);
    for (name, value) in [
        ("save", "3600 1"),
        ("key-load-delay", KEY_LOAD_DELAY_US),
        ("loading-process-events-interval-bytes", "1024"),
    ] {
        let _: String = query(port, &["CONFIG", "SET", name, value]);
    }
    let _: String = query(port, &["CONFIG", "REWRITE"]);
}

/// Whether the node on `port` says it is loading its dataset (`false` if it does not answer).
fn is_loading(port: u16) -> bool {
    try_query::<String>(port, &["INFO", "persistence"])
        .ok()
        .and_then(|info| info_field(&info, "loading"))
        .is_some_and(|v| v == "1")
}

/// `n` list keys spread over the keyspace, keeping only those `keep` accepts by slot.
fn keys_where(prefix: &str, n: usize, keep: impl Fn(u16) -> bool) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| keep(local_keyslot(k.as_bytes())))
        .take(n)
        .collect()
}

#[test]
fn a_replica_restarted_with_a_large_dataset_serves_no_read_until_loaded() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.backend.read_from = ReadFrom::Replica
    });
    let mut raw = RawClient::connect(proxy.local_addr());
    wait_for_known_replicas(&mut raw, 3);
    let primary = cluster.primaries()[0];
    let replica = cluster.replicas_of(primary)[0];
    let slot = *cluster
        .slot_map()
        .iter()
        .find(|&(_, &owner)| owner == primary)
        .map(|(slot, _)| slot)
        .expect("the primary owns a slot");
    let prefix = unique_prefix("loading-replica");
    let tag = tag_for_slot(slot, &prefix);
    let probes: Vec<(String, String)> = (0..20)
        .map(|i| (format!("{{{tag}}}:probe:{i}"), format!("value-{i}")))
        .collect();
    for (key, value) in &probes {
        assert_eq!(raw.call(&["SET", key, value]), Reply::Simple("OK".into()));
    }
    prepare_slow_load(primary, &tag);
    prepare_slow_load(replica, &tag);
    cluster.wait_replicated(primary);
    let checker = Checker::start(proxy.local_addr(), keys_where(&prefix, 90, |_| true), 3);
    checker.wait_for_more(200);

    cluster.restart(replica);
    let loading_from = Instant::now();
    let mut reads_while_loading = 0;
    while is_loading(replica) {
        for (key, value) in &probes {
            assert_eq!(
                raw.call(&["GET", key]),
                Reply::Bulk(Some(value.clone().into_bytes())),
                "a read while the replica loads ({reads_while_loading} right so far)"
            );
            reads_while_loading += 1;
        }
    }
    let loading_time = loading_from.elapsed();
    assert!(
        loading_time >= MIN_LOADING,
        "the replica loaded in {loading_time:?}: too fast to test anything"
    );
    assert!(reads_while_loading >= 100, "{reads_while_loading} reads");
    checker.wait_for_more(200);

    // Loaded: the replica serves reads again (once the proxy sees it online).
    wait_until(
        "reads back on the loaded replica",
        Duration::from_secs(30),
        || {
            for (key, value) in &probes {
                let got = raw.call(&["GET", key]);
                if got != Reply::Bulk(Some(value.clone().into_bytes())) {
                    return Err(format!("GET {key}: {got:?}"));
                }
            }
            match command_calls(replica, "get") {
                0 => Err("no read on the replica yet".into()),
                _ => Ok(()),
            }
        },
    );

    let (writes, keys) = checker.stop();
    writes.assert_no_failures();
    // Read back through a proxy that reads primaries: the restarted replica may still be
    // resynchronising (replica reads are eventually consistent, as on Redis itself).
    let reader = start_proxy(&cluster);
    let verdict = writes.verify(&keys, &mut common::proxy_client(&reader));
    verdict.assert_nothing_lost();
    eprintln!(
        "replica loading for {loading_time:?}: {reads_while_loading} reads served right meanwhile; \
         {} acknowledged writes, 0 lost, 0 failed",
        verdict.acknowledged
    );
}

#[test]
fn requests_for_a_loading_primary_wait_for_it_up_to_the_deadline() {
    let cluster = Cluster::start(3, 1);
    // A primary that loads for seconds must not be failed over meanwhile (production node
    // timeouts are 15 s and more; the harness's 2 s would turn this into a failover test).
    for port in cluster.ports() {
        let _: String = query(port, &["CONFIG", "SET", "cluster-node-timeout", "30000"]);
    }
    // A restarted primary answers `-CLUSTERDOWN` until it has loaded and then for Redis's
    // 2 s "writable delay"; a deadline of 20 s covers both here (the default is 5 s).
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.backend.retry_deadline = Duration::from_secs(20)
    });
    let impatient = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.backend.retry_deadline = Duration::from_millis(200)
    });
    let primary = cluster.primaries()[0];
    let replica = cluster.replicas_of(primary)[0];
    let owned: std::collections::HashSet<u16> = cluster
        .slot_map()
        .into_iter()
        .filter(|&(_, owner)| owner == primary)
        .map(|(slot, _)| slot)
        .collect();
    let slot = *owned.iter().next().expect("the primary owns a slot");
    let prefix = unique_prefix("loading-primary");
    let tag = tag_for_slot(slot, &prefix);
    let mut raw = RawClient::connect(proxy.local_addr());
    // Its requests may wait for the whole deadline.
    raw.set_read_timeout(Duration::from_secs(30));
    let mut hasty = RawClient::connect(impatient.local_addr());
    let probe = format!("{{{tag}}}:probe");
    assert_eq!(
        raw.call(&["SET", &probe, "before"]),
        Reply::Simple("OK".into())
    );
    prepare_slow_load(primary, &tag);
    prepare_slow_load(replica, &tag);
    cluster.wait_replicated(primary);
    // Traffic on the other shards the whole time: a primary restarted without a failover
    // fails the writes in flight to it (the proxy cannot know whether they ran), so the
    // checker's keys avoid it; what this test asks of the loading primary is below.
    let checker = Checker::start(
        proxy.local_addr(),
        keys_where(&prefix, 60, |s| !owned.contains(&s)),
        2,
    );
    checker.wait_for_more(200);

    cluster.restart(primary);
    assert!(
        is_loading(primary),
        "the primary must be loading after its restart"
    );
    let loading_from = Instant::now();
    // The impatient proxy gives up after its deadline, with Redis's own error: `-LOADING`,
    // or `-CLUSTERDOWN` while the restarted primary's cluster state is not yet ok (which Redis
    // checks first, and keeps for 2 s after a restarted primary loads).
    match hasty.call(&["GET", &probe]) {
        Reply::Error(e) => assert!(
            e.starts_with("LOADING") || e.starts_with("CLUSTERDOWN"),
            "{e}"
        ),
        other => panic!("expected an error past a 200 ms deadline, got {other:?}"),
    }
    // The 20 s deadline outlasts the loading: requests wait and succeed.
    let mut served = 0;
    let mut longest = Duration::ZERO;
    while loading_from.elapsed() < Duration::from_secs(20) {
        let still_loading = is_loading(primary);
        let sent = Instant::now();
        let key = format!("{{{tag}}}:during:{served}");
        assert_eq!(
            raw.call(&["SET", &key, "x"]),
            Reply::Simple("OK".into()),
            "write {served} to a loading primary"
        );
        assert_eq!(raw.call(&["GET", &probe]).text(), "before");
        longest = longest.max(sent.elapsed());
        served += 1;
        if !still_loading {
            break;
        }
    }
    let loading_time = loading_from.elapsed();
    assert!(!is_loading(primary), "still loading after {loading_time:?}");
    assert!(
        loading_time >= MIN_LOADING,
        "the primary loaded in {loading_time:?}: too fast to test anything"
    );
    assert!(
        longest >= MIN_LOADING / 2,
        "no request waited for the loading primary (longest {longest:?})"
    );
    for i in 0..served {
        let key = format!("{{{tag}}}:during:{i}");
        assert_eq!(raw.call(&["GET", &key]).text(), "x", "{key}");
    }

    let (writes, keys) = checker.stop();
    writes.assert_no_failures();
    let verdict = writes.verify(&keys, &mut common::proxy_client(&proxy));
    verdict.assert_nothing_lost();
    eprintln!(
        "primary loading for {loading_time:?}: {served} write+read pairs served (the longest \
         waited {longest:?}); other shards: {} acknowledged writes, 0 lost, 0 failed",
        verdict.acknowledged
    );
}

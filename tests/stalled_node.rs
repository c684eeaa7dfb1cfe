//! A primary that stalls (SIGSTOP, for less than the cluster's node timeout, so no failover)
//! and resumes: other nodes' traffic goes on untouched, the requests in flight to it complete
//! once it resumes, and with a request deadline (`command_timeout_ms`) shorter than the stall
//! the waiting requests get a clear timeout error instead, and the node serves again after.

mod common;

use std::time::Duration;

use common::raw::{encode, RawClient, Reply};
use common::{local_keyslot, start_proxy_configured, unique_prefix, Cluster};

/// The test cluster's node timeout is 2 s; the stalls stay well under it.
const STALL: Duration = Duration::from_millis(1200);

/// A key owned by `node`, and one owned by another primary.
fn keys(cluster: &Cluster, prefix: &str, node: u16) -> (String, String) {
    let owner = |k: &String| cluster.primary_for_slot(local_keyslot(k.as_bytes()));
    let on = (0..)
        .map(|i| format!("{prefix}:on:{i}"))
        .find(|k| owner(k) == node)
        .expect("a key on the node");
    let off = (0..)
        .map(|i| format!("{prefix}:off:{i}"))
        .find(|k| owner(k) != node)
        .expect("a key elsewhere");
    (on, off)
}

/// Stops `node` for [`STALL`] while `during` runs, and resumes it even if `during` panics.
fn stalled<T>(cluster: &Cluster, node: u16, during: impl FnOnce() -> T) -> T {
    cluster.signal(node, "-STOP");
    let started = std::time::Instant::now();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(during));
    std::thread::sleep(STALL.saturating_sub(started.elapsed()));
    cluster.signal(node, "-CONT");
    outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

#[test]
fn a_stalled_primary_holds_only_its_own_requests() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |_| {});
    let node = cluster.primaries()[0];
    let (on, off) = keys(&cluster, &unique_prefix("stall"), node);
    let mut waiting = RawClient::connect(proxy.local_addr());
    let mut other = RawClient::connect(proxy.local_addr());
    assert_eq!(waiting.call(&["SET", &on, "0"]), Reply::Simple("OK".into()));
    stalled(&cluster, node, || {
        // In flight to the stalled node: 20 increments.
        let mut batch = Vec::new();
        for _ in 0..20 {
            batch.extend(encode(&[b"INCR", on.as_bytes()]));
        }
        waiting.send_raw(&batch);
        // Meanwhile other nodes answer as usual.
        for i in 0..50 {
            let value = i.to_string();
            assert_eq!(
                other.call(&["SET", &off, &value]),
                Reply::Simple("OK".into())
            );
            assert_eq!(
                other.call(&["GET", &off]),
                Reply::Bulk(Some(value.into_bytes()))
            );
        }
    });
    // Resumed: every request in flight completes, in order, each once.
    for i in 1..=20 {
        assert_eq!(waiting.read_reply(), Reply::Int(i));
    }
    assert_eq!(
        waiting.call(&["GET", &on]),
        Reply::Bulk(Some(b"20".to_vec()))
    );
}

#[test]
fn past_the_request_deadline_a_stalled_primary_gets_a_clear_timeout() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.backend.command_timeout = Some(Duration::from_millis(300));
    });
    let node = cluster.primaries()[0];
    let (on, off) = keys(&cluster, &unique_prefix("deadline"), node);
    let mut client = RawClient::connect(proxy.local_addr());
    assert_eq!(client.call(&["SET", &on, "v"]), Reply::Simple("OK".into()));
    let answer = stalled(&cluster, node, || client.call(&["GET", &on]));
    match answer {
        Reply::Error(e) => assert!(
            e.starts_with("ERR ") && e.contains("did not answer within 300 ms"),
            "{e}"
        ),
        other => panic!("expected a timeout error, got {other:?}"),
    }
    // Resumed: the node serves again, and the other nodes never stopped.
    common::wait_until(
        "the node to serve again",
        common::CLUSTER_DEADLINE,
        || match client.call(&["GET", &on]) {
            Reply::Bulk(Some(v)) if v == b"v" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(client.call(&["SET", &off, "w"]), Reply::Simple("OK".into()));
}

//! WAIT through the proxy: it runs on the connection that carried the client's writes (on
//! every node they went to), answers as Redis does, and never stalls other clients, even when
//! a replica is stopped and WAIT runs into its timeout.
//!
//! One test stops a replica, so the tests of this binary run one at a time (`SERIAL`).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::raw::{RawClient, Reply};
use common::{local_keyslot, shared, start_proxy, unique_prefix, Cluster};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One key per primary of the cluster.
fn key_per_primary(cluster: &Cluster, prefix: &str) -> Vec<String> {
    let mut keys: Vec<(u16, String)> = Vec::new();
    for i in 0.. {
        let key = format!("{prefix}:{i}");
        let owner = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
        if !keys.iter().any(|(o, _)| *o == owner) {
            keys.push((owner, key));
        }
        if keys.len() == cluster.primaries().len() {
            break;
        }
    }
    keys.into_iter().map(|(_, k)| k).collect()
}

#[test]
fn wait_counts_the_replicas_that_have_the_clients_writes() {
    let _serial = serial();
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("wait");
    let keys = key_per_primary(cluster, &p);
    let mut c = RawClient::connect(proxy.local_addr());

    // No write yet: answered at once with the connected replicas, as on Redis.
    assert_eq!(c.call(&["WAIT", "1", "1000"]), Reply::Int(1));
    assert_eq!(c.call(&["SET", &keys[0], "v"]), Reply::Simple("OK".into()));
    assert_eq!(c.call(&["WAIT", "1", "2000"]), Reply::Int(1));
    // More replicas than exist: the timeout runs out, the count is what acknowledged.
    let started = Instant::now();
    assert_eq!(c.call(&["WAIT", "2", "300"]), Reply::Int(1));
    assert!(started.elapsed() >= Duration::from_millis(280));

    // A write split over every primary: WAIT on each, the smallest count wins.
    let mut mset: Vec<&str> = vec!["MSET"];
    for key in &keys {
        mset.extend([key.as_str(), "x"]);
    }
    assert_eq!(c.call(&mset), Reply::Simple("OK".into()));
    assert_eq!(c.call(&["WAIT", "1", "2000"]), Reply::Int(1));
    for key in &keys {
        assert_eq!(
            cluster
                .cli(
                    cluster.primary_for_slot(local_keyslot(key.as_bytes())),
                    &["GET", key]
                )
                .trim(),
            "x"
        );
    }

    // Pipelined: SET then WAIT in one write; the WAIT covers the SET.
    c.send_raw(&common::raw::encode(&[b"SET", keys[1].as_bytes(), b"y"]));
    c.send_raw(&common::raw::encode(&[b"WAIT", b"1", b"2000"]));
    assert_eq!(c.read_reply(), Reply::Simple("OK".into()));
    assert_eq!(c.read_reply(), Reply::Int(1));

    // Arguments are checked as Redis checks them.
    assert_eq!(
        c.call(&["WAIT", "x", "0"]).error(),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        c.call(&["WAIT", "1", "-1"]).error(),
        "ERR timeout is negative"
    );

    // A transaction ran on a connection of its own: the next WAIT says it can't cover it.
    let tagged = format!("{{{p}}}:tx");
    c.call(&["MULTI"]);
    c.call(&["SET", &tagged, "1"]);
    assert!(matches!(c.call(&["EXEC"]), Reply::Array(Some(_))));
    let err = c.call(&["WAIT", "1", "100"]).error().to_string();
    assert!(err.contains("transaction"), "{err}");
    assert_eq!(c.call(&["SET", &keys[0], "z"]), Reply::Simple("OK".into()));
    assert_eq!(c.call(&["WAIT", "1", "2000"]), Reply::Int(1));
}

#[test]
fn a_wait_that_times_out_does_not_stall_other_clients() {
    let _serial = serial();
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("wait-stall");
    let key = format!("{p}:k");
    let primary = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
    let replica = cluster.replicas_of(primary)[0];
    let mut waiter = RawClient::connect(proxy.local_addr());
    let mut other = RawClient::connect(proxy.local_addr());
    assert_eq!(waiter.call(&["SET", &key, "1"]), Reply::Simple("OK".into()));
    assert_eq!(waiter.call(&["WAIT", "1", "2000"]), Reply::Int(1));

    cluster.signal(replica, "-STOP");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_eq!(waiter.call(&["SET", &key, "2"]), Reply::Simple("OK".into()));
        let started = Instant::now();
        waiter.send(&[b"WAIT", b"1", b"1500"]);
        // Meanwhile, another client's commands to the same node go through at once.
        for i in 0..20 {
            let asked = Instant::now();
            assert_eq!(other.call(&["INCR", &format!("{key}:{i}")]), Reply::Int(1));
            assert!(
                asked.elapsed() < Duration::from_millis(500),
                "a command waited {:?} behind WAIT",
                asked.elapsed()
            );
        }
        assert!(started.elapsed() < Duration::from_millis(1400));
        assert_eq!(waiter.read_reply(), Reply::Int(0));
        assert!(started.elapsed() >= Duration::from_millis(1400));
    }));
    cluster.signal(replica, "-CONT");
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    // The replica caught up: the same client's WAIT counts it again.
    assert_eq!(waiter.call(&["WAIT", "1", "5000"]), Reply::Int(1));
}

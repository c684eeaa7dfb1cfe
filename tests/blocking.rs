//! Blocking commands through the proxy: each blocked client gets a backend connection of its
//! own, so it blocks only itself; timeouts are the node's; a client that goes away frees its
//! backend connection; the number of such connections is bounded.
//!
//! The tests share one cluster and count blocked clients on its nodes, so they run one at a
//! time (`SERIAL`).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::raw::{RawClient, Reply};
use common::{
    info_field, local_keyslot, query, shared, start_proxy, start_proxy_configured, unique_prefix,
    wait_until, Cluster, CLUSTER_DEADLINE,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Clients blocked on the primaries, as the nodes report them.
fn blocked_clients(cluster: &Cluster) -> usize {
    cluster
        .primaries()
        .iter()
        .map(|&port| {
            let info: String = query(port, &["INFO", "clients"]);
            info_field(&info, "blocked_clients")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        })
        .sum()
}

fn wait_blocked(cluster: &Cluster, n: usize) {
    wait_until(
        &format!("{n} blocked clients on the nodes"),
        CLUSTER_DEADLINE,
        || {
            let now = blocked_clients(cluster);
            if now == n {
                Ok(())
            } else {
                Err(format!("{now} blocked"))
            }
        },
    );
}

#[test]
fn blocking_commands_time_out_like_redis_and_wake_on_data() {
    let _serial = serial();
    let proxy = start_proxy(shared());
    let p = unique_prefix("wake");
    let mut raw = RawClient::connect(proxy.local_addr());

    let started = Instant::now();
    assert_eq!(
        raw.call(&["BLPOP", &format!("{p}:empty"), "1"]),
        Reply::Array(None)
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "BLPOP returned after {waited:?}, before its 1 s timeout"
    );

    // Each command blocks, then another client supplies the data.
    let list = format!("{{{p}}}:list");
    let dest = format!("{{{p}}}:dest");
    let zset = format!("{{{p}}}:zset");
    let stream = format!("{{{p}}}:stream");
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec!["BLPOP".into(), list.clone(), "10".into()],
            vec!["RPUSH".into(), list.clone(), "a".into()],
        ),
        (
            vec!["BRPOP".into(), list.clone(), "10".into()],
            vec!["RPUSH".into(), list.clone(), "b".into()],
        ),
        (
            vec![
                "BLMOVE".into(),
                list.clone(),
                dest.clone(),
                "LEFT".into(),
                "RIGHT".into(),
                "10".into(),
            ],
            vec!["RPUSH".into(), list.clone(), "c".into()],
        ),
        (
            vec![
                "BLMPOP".into(),
                "10".into(),
                "1".into(),
                list.clone(),
                "LEFT".into(),
            ],
            vec!["RPUSH".into(), list.clone(), "d".into()],
        ),
        (
            vec!["BZPOPMIN".into(), zset.clone(), "10".into()],
            vec!["ZADD".into(), zset.clone(), "1".into(), "m".into()],
        ),
        (
            vec![
                "XREAD".into(),
                "BLOCK".into(),
                "10000".into(),
                "STREAMS".into(),
                stream.clone(),
                "$".into(),
            ],
            vec![
                "XADD".into(),
                stream.clone(),
                "*".into(),
                "f".into(),
                "v".into(),
            ],
        ),
    ];
    let mut pusher = RawClient::connect(proxy.local_addr());
    for (block, supply) in cases {
        let before = blocked_clients(shared());
        let block_refs: Vec<&[u8]> = block.iter().map(|a| a.as_bytes()).collect();
        raw.send(&block_refs);
        wait_blocked(shared(), before + 1);
        let supply_refs: Vec<&str> = supply.iter().map(String::as_str).collect();
        assert!(
            !matches!(pusher.call(&supply_refs), Reply::Error(_)),
            "{supply:?}"
        );
        let got = raw.read_reply();
        assert!(
            !matches!(
                got,
                Reply::Error(_) | Reply::Array(None) | Reply::Bulk(None)
            ),
            "{block:?} answered {got:?}"
        );
    }
    assert_eq!(
        raw.call(&["LRANGE", &dest, "0", "-1"]),
        Reply::Array(Some(vec![Reply::Bulk(Some(b"c".to_vec()))]))
    );
    // Keys in two slots: Redis's own error, before anything blocks.
    let err = raw.call(&["BLPOP", &format!("{p}:x"), &format!("{p}:y{}", 0), "1"]);
    if local_keyslot(format!("{p}:x").as_bytes()) != local_keyslot(format!("{p}:y0").as_bytes()) {
        assert_eq!(
            err.error(),
            "CROSSSLOT Keys in request don't hash to the same slot"
        );
    }
}

#[test]
fn five_hundred_blocked_clients_do_not_stall_other_clients() {
    let _serial = serial();
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("many");
    let before = blocked_clients(cluster);
    let mut blocked: Vec<(String, RawClient)> = (0..500)
        .map(|i| {
            let key = format!("{p}:{i}");
            let mut client = RawClient::connect(proxy.local_addr());
            client.send(&[b"BLPOP", key.as_bytes(), b"60"]);
            (key, client)
        })
        .collect();
    wait_blocked(cluster, before + 500);

    // The shared pipes keep serving everyone else.
    let mut other = RawClient::connect(proxy.local_addr());
    for i in 0..200 {
        let key = format!("{p}:other:{i}");
        assert_eq!(other.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
        assert_eq!(other.call(&["GET", &key]).text(), "v");
    }

    for (key, _) in &blocked {
        assert_eq!(other.call(&["RPUSH", key, "job"]), Reply::Int(1));
    }
    for (key, client) in &mut blocked {
        let got = client.read_reply();
        assert_eq!(
            got,
            Reply::Array(Some(vec![
                Reply::Bulk(Some(key.as_bytes().to_vec())),
                Reply::Bulk(Some(b"job".to_vec()))
            ]))
        );
    }
    wait_blocked(cluster, before);
}

#[test]
fn a_client_that_disconnects_while_blocked_frees_its_backend_connection() {
    let _serial = serial();
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("gone");
    let before = blocked_clients(cluster);
    let mut client = RawClient::connect(proxy.local_addr());
    client.send(&[b"BLPOP", format!("{p}:q").as_bytes(), b"0"]);
    wait_blocked(cluster, before + 1);
    drop(client);
    // The node sees its blocked client go away (the proxy closed that connection).
    wait_blocked(cluster, before);
}

#[test]
fn blocked_clients_past_the_limit_get_a_clear_error() {
    let _serial = serial();
    let cluster = shared();
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.backend.max_blocking_connections = 2
    });
    let p = unique_prefix("limit");
    let before = blocked_clients(cluster);
    let mut first = RawClient::connect(proxy.local_addr());
    let mut second = RawClient::connect(proxy.local_addr());
    first.send(&[b"BLPOP", format!("{p}:1").as_bytes(), b"30"]);
    second.send(&[b"BLPOP", format!("{p}:2").as_bytes(), b"30"]);
    wait_blocked(cluster, before + 2);

    let mut third = RawClient::connect(proxy.local_addr());
    let err = third.call(&["BLPOP", &format!("{p}:3"), "30"]);
    assert_eq!(
        err.error(),
        "ERR max number of blocked clients reached (max_blocking_connections = 2)"
    );
    // Not blocked: the connection stays usable, and non-blocking commands are unaffected.
    assert_eq!(third.call(&["PING"]), Reply::Simple("PONG".into()));

    assert_eq!(
        third.call(&["RPUSH", &format!("{p}:1"), "x"]),
        Reply::Int(1)
    );
    assert!(matches!(first.read_reply(), Reply::Array(Some(_))));
    // A connection is free again.
    third.send(&[b"BLPOP", format!("{p}:3").as_bytes(), b"30"]);
    wait_blocked(cluster, before + 2);
    let mut pusher = RawClient::connect(proxy.local_addr());
    assert_eq!(
        pusher.call(&["RPUSH", &format!("{p}:3"), "y"]),
        Reply::Int(1)
    );
    assert!(matches!(third.read_reply(), Reply::Array(Some(_))));
    assert_eq!(
        pusher.call(&["RPUSH", &format!("{p}:2"), "z"]),
        Reply::Int(1)
    );
    assert!(matches!(second.read_reply(), Reply::Array(Some(_))));
    wait_blocked(cluster, before);
}

//! Keyspace notifications through the proxy, as from one server: a node publishes them only
//! for its own keys, so a subscription that can match `__keyspace@…`/`__keyevent@…` is
//! subscribed on every primary and the notifications merged into the client's stream, each
//! once; ordinary messages (a cluster PUBLISH reaches every node) still arrive once.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{local_keyslot, start_proxy, unique_prefix, Cluster};

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn array(items: Vec<Reply>) -> Reply {
    Reply::Array(Some(items))
}

fn confirmation(kind: &str, name: &str, count: i64) -> Reply {
    array(vec![bulk(kind), bulk(name), Reply::Int(count)])
}

/// Every reply that arrives until the connection is quiet for a moment.
fn drain(client: &mut RawClient) -> Vec<Reply> {
    client.set_read_timeout(Duration::from_millis(500));
    let mut got = Vec::new();
    while let Ok(reply) = client.try_read_reply() {
        got.push(reply);
    }
    client.set_read_timeout(Duration::from_secs(10));
    got
}

/// Reads `n` replies, sorted (the nodes' messages arrive in no particular order).
fn read_sorted(client: &mut RawClient, n: usize) -> Vec<String> {
    let mut got: Vec<String> = (0..n)
        .map(|_| format!("{:?}", client.read_reply()))
        .collect();
    got.sort();
    got
}

fn sorted(replies: Vec<Reply>) -> Vec<String> {
    let mut got: Vec<String> = replies.iter().map(|r| format!("{r:?}")).collect();
    got.sort();
    got
}

#[test]
fn keyspace_notifications_come_from_every_primary_once() {
    let cluster = Cluster::start(3, 0);
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    for &port in &primaries {
        assert_eq!(
            cluster
                .cli(port, &["CONFIG", "SET", "notify-keyspace-events", "KEA"])
                .trim(),
            "OK"
        );
    }
    let proxy = start_proxy(&cluster);
    let p = unique_prefix("keyspace");
    // One key on each primary.
    let mut by_node: BTreeMap<u16, String> = BTreeMap::new();
    for i in 0.. {
        let key = format!("{p}:k{i}");
        let node = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
        by_node.entry(node).or_insert(key);
        if by_node.len() == primaries.len() {
            break;
        }
    }
    let keys: Vec<String> = by_node.into_values().collect();

    let space = "__keyspace@0__:*";
    let event = "__keyevent@0__:set";
    let mut spaces = RawClient::connect(proxy.local_addr());
    let mut events = RawClient::connect(proxy.local_addr());
    let mut all = RawClient::connect(proxy.local_addr());
    let mut writer = RawClient::connect(proxy.local_addr());
    assert_eq!(
        spaces.call(&["PSUBSCRIBE", space]),
        confirmation("psubscribe", space, 1)
    );
    assert_eq!(
        events.call(&["SUBSCRIBE", event]),
        confirmation("subscribe", event, 1)
    );
    // Confirmations stay one server's: one per name, the client's own count.
    events.send(&[b"SUBSCRIBE", event.as_bytes(), b"__keyevent@0__:del"]);
    assert_eq!(events.read_reply(), confirmation("subscribe", event, 1));
    assert_eq!(
        events.read_reply(),
        confirmation("subscribe", "__keyevent@0__:del", 2)
    );
    assert_eq!(
        all.call(&["PSUBSCRIBE", "*"]),
        confirmation("psubscribe", "*", 1)
    );

    for key in &keys {
        assert_eq!(writer.call(&["SET", key, "v"]), Reply::Simple("OK".into()));
    }
    let want_spaces = sorted(
        keys.iter()
            .map(|k| {
                array(vec![
                    bulk("pmessage"),
                    bulk(space),
                    bulk(&format!("__keyspace@0__:{k}")),
                    bulk("set"),
                ])
            })
            .collect(),
    );
    let want_events = sorted(
        keys.iter()
            .map(|k| array(vec![bulk("message"), bulk(event), bulk(k)]))
            .collect(),
    );
    assert_eq!(read_sorted(&mut spaces, keys.len()), want_spaces);
    assert_eq!(read_sorted(&mut events, keys.len()), want_events);
    // Exactly once each: nothing more follows.
    assert_eq!(drain(&mut spaces), vec![]);
    assert_eq!(drain(&mut events), vec![]);

    // `*` gets both notifications of every key, once, and a PUBLISH once (not once per node).
    let news = format!("{p}:news");
    assert_eq!(writer.call(&["PUBLISH", &news, "hi"]), Reply::Int(1));
    let mut want_all: Vec<Reply> = keys
        .iter()
        .flat_map(|k| {
            [
                array(vec![
                    bulk("pmessage"),
                    bulk("*"),
                    bulk(&format!("__keyspace@0__:{k}")),
                    bulk("set"),
                ]),
                array(vec![
                    bulk("pmessage"),
                    bulk("*"),
                    bulk("__keyevent@0__:set"),
                    bulk(k),
                ]),
            ]
        })
        .collect();
    want_all.push(array(vec![
        bulk("pmessage"),
        bulk("*"),
        bulk(&news),
        bulk("hi"),
    ]));
    assert_eq!(sorted(drain(&mut all)), sorted(want_all));

    // Unsubscribing stops them, on every node.
    assert_eq!(
        spaces.call(&["PUNSUBSCRIBE", space]),
        confirmation("punsubscribe", space, 0)
    );
    events.send(&[b"UNSUBSCRIBE"]);
    let mut confirmations = sorted(vec![events.read_reply(), events.read_reply()]);
    confirmations.sort();
    assert_eq!(
        confirmations.len(),
        2,
        "one confirmation per channel: {confirmations:?}"
    );
    assert_eq!(
        all.call(&["PUNSUBSCRIBE"]),
        confirmation("punsubscribe", "*", 0)
    );
    for key in &keys {
        assert_eq!(writer.call(&["DEL", key]), Reply::Int(1));
    }
    std::thread::sleep(Duration::from_millis(300));
    for client in [&mut spaces, &mut events, &mut all] {
        assert_eq!(client.call(&["PING"]), Reply::Simple("PONG".into()));
    }
}

/// Sets fresh keys in `slot_of`'s slot through `writer` until `sub` gets the keyspace
/// notification of one of them (a subscription on a new primary is in place once it does).
fn set_until_notified(
    writer: &mut RawClient,
    sub: &mut RawClient,
    prefix: &str,
    cluster: &Cluster,
    node: u16,
) {
    let deadline = std::time::Instant::now() + common::CLUSTER_DEADLINE;
    sub.set_read_timeout(Duration::from_millis(300));
    for i in 0.. {
        let key = format!("{prefix}:{node}:{i}");
        if cluster.primary_for_slot(local_keyslot(key.as_bytes())) != node {
            continue;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no notification from node {node}"
        );
        assert_eq!(writer.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
        let channel = format!("__keyspace@0__:{key}");
        while let Ok(reply) = sub.try_read_reply() {
            if reply
                == array(vec![
                    bulk("pmessage"),
                    bulk("__keyspace@0__:*"),
                    bulk(&channel),
                    bulk("set"),
                ])
            {
                sub.set_read_timeout(Duration::from_secs(10));
                return;
            }
        }
    }
}

#[test]
fn keyspace_subscriptions_follow_failovers() {
    let cluster = Cluster::start(3, 1);
    for port in cluster.ports() {
        assert_eq!(
            cluster
                .cli(port, &["CONFIG", "SET", "notify-keyspace-events", "KEA"])
                .trim(),
            "OK"
        );
    }
    let proxy = start_proxy(&cluster);
    let p = unique_prefix("ksfailover");
    let space = "__keyspace@0__:*";
    let mut sub = RawClient::connect(proxy.local_addr());
    let mut writer = RawClient::connect(proxy.local_addr());
    assert_eq!(
        sub.call(&["PSUBSCRIBE", space]),
        confirmation("psubscribe", space, 1)
    );
    for node in cluster.primaries() {
        set_until_notified(&mut writer, &mut sub, &p, &cluster, node);
    }
    // Every shard fails over: the home connection and the others move to the new primaries.
    for primary in cluster.primaries() {
        let replica = cluster.replicas_of(primary)[0];
        cluster.failover(replica);
    }
    for node in cluster.primaries() {
        set_until_notified(&mut writer, &mut sub, &p, &cluster, node);
    }
    // Once each: one key per primary, three notifications, nothing more.
    drain(&mut sub);
    let mut want = Vec::new();
    for node in cluster.primaries() {
        let key = (0..)
            .map(|i| format!("{p}:last{i}"))
            .find(|k| cluster.primary_for_slot(local_keyslot(k.as_bytes())) == node)
            .unwrap_or_default();
        assert_eq!(writer.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
        want.push(array(vec![
            bulk("pmessage"),
            bulk(space),
            bulk(&format!("__keyspace@0__:{key}")),
            bulk("set"),
        ]));
    }
    assert_eq!(sorted(drain(&mut sub)), sorted(want));
}

//! Pub/Sub through the proxy: SUBSCRIBE/PSUBSCRIBE (any node: cluster PUBLISH reaches all),
//! SSUBSCRIBE routed by the channel's slot with several nodes merged into one stream, the
//! RESP2 subscriber-mode rules, and shard subscriptions that survive a failover and the loss
//! of the node that served them.

mod common;

use std::time::{Duration, Instant};

use common::raw::{RawClient, Reply};
use common::{
    local_keyslot, shared, start_proxy, start_proxy_configured, unique_prefix, Cluster,
    CLUSTER_DEADLINE,
};

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn array(items: Vec<Reply>) -> Reply {
    Reply::Array(Some(items))
}

fn confirmation(kind: &str, name: &str, count: i64) -> Reply {
    array(vec![bulk(kind), bulk(name), Reply::Int(count)])
}

#[test]
fn subscribers_get_messages_from_every_kind_of_subscription() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("pubsub");
    let (chan, pat) = (format!("{p}:news"), format!("{p}:n*"));
    let (shard_a, shard_b) = cluster.names_on_two_primaries(&p);
    let mut sub = RawClient::connect(proxy.local_addr());
    let mut publisher = RawClient::connect(proxy.local_addr());

    assert_eq!(
        sub.call(&["SUBSCRIBE", &chan]),
        confirmation("subscribe", &chan, 1)
    );
    assert_eq!(
        sub.call(&["PSUBSCRIBE", &pat]),
        confirmation("psubscribe", &pat, 2)
    );
    sub.send(&[b"SSUBSCRIBE", shard_a.as_bytes(), shard_b.as_bytes()]);
    assert_eq!(sub.read_reply(), confirmation("ssubscribe", &shard_a, 1));
    assert_eq!(sub.read_reply(), confirmation("ssubscribe", &shard_b, 2));

    // Subscriber mode: only the subscription commands, PING and QUIT.
    let err = sub.call(&["GET", "x"]).error().to_string();
    assert!(err.starts_with("ERR Can't execute 'get'"), "{err}");
    assert_eq!(sub.call(&["PING"]), array(vec![bulk("pong"), bulk("")]));

    // The subscriptions are in place on the nodes once a publish reaches them; poll.
    let deadline = Instant::now() + CLUSTER_DEADLINE;
    loop {
        let Reply::Int(n) = publisher.call(&["SPUBLISH", &shard_a, "first"]) else {
            panic!("SPUBLISH")
        };
        if n == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shard subscription never reached its node"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sub.read_reply(),
        array(vec![bulk("smessage"), bulk(&shard_a), bulk("first")])
    );

    // PUBSUB asks every node: the subscriptions live wherever the proxy put them.
    // (The plain subscription travels on its own connection: wait until its node has it.)
    let deadline = Instant::now() + CLUSTER_DEADLINE;
    while publisher.call(&["PUBSUB", "CHANNELS", &format!("{p}:*")]) != array(vec![bulk(&chan)]) {
        assert!(
            Instant::now() < deadline,
            "PUBSUB CHANNELS never listed {chan}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        publisher.call(&["PUBSUB", "NUMSUB", &chan]),
        array(vec![bulk(&chan), Reply::Int(1)])
    );
    let Reply::Int(patterns) = publisher.call(&["PUBSUB", "NUMPAT"]) else {
        panic!("NUMPAT")
    };
    assert!(patterns >= 1, "NUMPAT {patterns}");
    let Reply::Array(Some(mut shards)) =
        publisher.call(&["PUBSUB", "SHARDCHANNELS", &format!("{p}:*")])
    else {
        panic!("SHARDCHANNELS")
    };
    shards.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(shards, vec![bulk(&shard_a), bulk(&shard_b)]);
    assert_eq!(
        publisher.call(&["SPUBLISH", &shard_b, "second"]),
        Reply::Int(1)
    );
    assert_eq!(
        sub.read_reply(),
        array(vec![bulk("smessage"), bulk(&shard_b), bulk("second")])
    );
    assert!(matches!(
        publisher.call(&["PUBLISH", &chan, "hello"]),
        Reply::Int(_)
    ));
    let mut got = vec![sub.read_reply(), sub.read_reply()];
    got.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        got,
        vec![
            array(vec![bulk("message"), bulk(&chan), bulk("hello")]),
            array(vec![
                bulk("pmessage"),
                bulk(&pat),
                bulk(&chan),
                bulk("hello")
            ]),
        ]
    );

    // Unsubscribing everything returns the client to normal mode.
    assert_eq!(
        sub.call(&["UNSUBSCRIBE"]),
        confirmation("unsubscribe", &chan, 1)
    );
    assert_eq!(
        sub.call(&["PUNSUBSCRIBE"]),
        confirmation("punsubscribe", &pat, 0)
    );
    sub.send(&[b"SUNSUBSCRIBE"]);
    assert_eq!(sub.read_reply(), confirmation("sunsubscribe", &shard_a, 1));
    assert_eq!(sub.read_reply(), confirmation("sunsubscribe", &shard_b, 0));
    assert_eq!(sub.call(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(
        sub.call(&["GET", &format!("{p}:nothing")]),
        Reply::Bulk(None)
    );
}

/// Publishes until the subscriber gets the message (the subscription may be moving: SPUBLISH
/// counts the proxy's subscribers, who are subscribed all along, so only the message tells).
fn publish_until_received(publisher: &mut RawClient, sub: &mut RawClient, channel: &str) {
    let deadline = Instant::now() + CLUSTER_DEADLINE;
    sub.set_read_timeout(Duration::from_millis(300));
    let mut n = 0;
    loop {
        n += 1;
        let message = format!("after-{n}");
        // An error while the slot has no reachable owner; then the count of one subscriber.
        let published = publisher.call(&["SPUBLISH", channel, &message]);
        if published != Reply::Int(1) {
            std::thread::sleep(Duration::from_millis(50));
        } else if let Ok(got) = sub.try_read_reply() {
            let Reply::Array(Some(items)) = &got else {
                panic!("{got:?}")
            };
            assert_eq!(items[0], bulk("smessage"));
            sub.set_read_timeout(common::IO_TIMEOUT);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no subscriber for {channel} after the change"
        );
    }
}

#[test]
fn shard_subscriptions_survive_a_failover_and_a_killed_node() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let p = unique_prefix("sfailover");
    let channel = format!("{p}:ch");
    let slot = local_keyslot(channel.as_bytes());
    let mut sub = RawClient::connect(proxy.local_addr());
    let mut publisher = RawClient::connect(proxy.local_addr());
    assert_eq!(
        sub.call(&["SSUBSCRIBE", &channel]),
        confirmation("ssubscribe", &channel, 1)
    );
    publish_until_received(&mut publisher, &mut sub, &channel);

    let primary = cluster.primary_for_slot(slot);
    let replica = cluster.replicas_of(primary)[0];
    cluster.failover(replica);
    publish_until_received(&mut publisher, &mut sub, &channel);

    // The node serving the subscription dies; once its replica is promoted, the proxy has
    // subscribed again there.
    let owner = cluster.primary_for_slot(slot);
    cluster.kill(owner);
    publish_until_received(&mut publisher, &mut sub, &channel);
}

#[test]
fn a_shard_subscription_refused_with_moved_follows_the_slot() {
    let cluster = Cluster::start(3, 0);
    // No periodic refresh during the test: the proxy's map stays stale until a node says so.
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |config| {
        config.cluster.refresh_interval = Duration::from_secs(600);
    });
    let p = unique_prefix("smoved");
    let channel = format!("{p}:ch");
    let slot = local_keyslot(channel.as_bytes());
    let mut sub = RawClient::connect(proxy.local_addr());
    let mut publisher = RawClient::connect(proxy.local_addr());
    assert_eq!(sub.call(&["PING"]), Reply::Simple("PONG".into()));
    // The slot moves behind the proxy's back: its SSUBSCRIBE goes to the old owner, which
    // answers MOVED.
    let owner = cluster.primary_for_slot(slot);
    let other = cluster
        .primaries()
        .into_iter()
        .find(|&p| p != owner)
        .expect("another primary");
    cluster.migrate_slot(slot, other);
    assert_eq!(
        sub.call(&["SSUBSCRIBE", &channel]),
        confirmation("ssubscribe", &channel, 1)
    );
    publish_until_received(&mut publisher, &mut sub, &channel);
}

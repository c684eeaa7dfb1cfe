//! Pub/Sub counts as one server gives them: PUBLISH answers how many of the proxy's clients
//! received the message (channel subscribers plus, per client, each matching pattern), and
//! PUBSUB NUMSUB/NUMPAT/CHANNELS and the shard variants agree with it, through subscribe,
//! unsubscribe, RESET and disconnect. Each test has a proxy of its own: its counts are its
//! clients' only.

mod common;

use common::raw::{RawClient, Reply};
use common::{shared, start_proxy, unique_prefix, wait_until, CLUSTER_DEADLINE};

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn array(items: Vec<Reply>) -> Reply {
    Reply::Array(Some(items))
}

fn confirmation(kind: &str, name: &str, count: i64) -> Reply {
    array(vec![bulk(kind), bulk(name), Reply::Int(count)])
}

fn message(channel: &str, text: &str) -> Reply {
    array(vec![bulk("message"), bulk(channel), bulk(text)])
}

fn pmessage(pattern: &str, channel: &str, text: &str) -> Reply {
    array(vec![
        bulk("pmessage"),
        bulk(pattern),
        bulk(channel),
        bulk(text),
    ])
}

/// The names of an array reply, sorted.
fn sorted_names(reply: Reply) -> Vec<Reply> {
    let Reply::Array(Some(mut names)) = reply else {
        panic!("not an array: {reply:?}")
    };
    names.sort_by_key(|r| format!("{r:?}"));
    names
}

/// Reads replies (messages published earlier) until `want`.
fn read_until(client: &mut RawClient, want: &Reply) {
    for _ in 0..100 {
        if client.read_reply() == *want {
            return;
        }
    }
    panic!("never read {want:?}");
}

/// Waits until `PUBLISH channel` through `publisher` answers `want` (a disconnect is noticed
/// by the proxy a moment after the client leaves).
fn wait_publish_count(publisher: &mut RawClient, channel: &str, want: i64) {
    wait_until(
        &format!("PUBLISH {channel} to count {want}"),
        CLUSTER_DEADLINE,
        || match publisher.call(&["PUBLISH", channel, "probe"]) {
            Reply::Int(n) if n == want => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn publish_counts_channel_subscribers_once_per_client() {
    let proxy = start_proxy(shared());
    let p = unique_prefix("counts");
    let chan = format!("{p}:chan1");
    let mut publisher = RawClient::connect(proxy.local_addr());
    let mut a = RawClient::connect(proxy.local_addr());
    let mut b = RawClient::connect(proxy.local_addr());

    assert_eq!(publisher.call(&["PUBLISH", &chan, "nobody"]), Reply::Int(0));
    assert_eq!(
        a.call(&["SUBSCRIBE", &chan]),
        confirmation("subscribe", &chan, 1)
    );
    // PUBLISH/SUBSCRIBE basics: right after the confirmation the message is delivered.
    assert_eq!(publisher.call(&["PUBLISH", &chan, "hello"]), Reply::Int(1));
    assert_eq!(a.read_reply(), message(&chan, "hello"));

    // Two clients: two receivers; subscribing again changes nothing.
    assert_eq!(
        b.call(&["SUBSCRIBE", &chan]),
        confirmation("subscribe", &chan, 1)
    );
    assert_eq!(
        a.call(&["SUBSCRIBE", &chan]),
        confirmation("subscribe", &chan, 1)
    );
    assert_eq!(publisher.call(&["PUBLISH", &chan, "both"]), Reply::Int(2));
    assert_eq!(a.read_reply(), message(&chan, "both"));
    assert_eq!(b.read_reply(), message(&chan, "both"));
    assert_eq!(
        publisher.call(&["PUBSUB", "NUMSUB", &chan, "other"]),
        array(vec![
            bulk(&chan),
            Reply::Int(2),
            bulk("other"),
            Reply::Int(0)
        ])
    );
    assert_eq!(
        publisher.call(&["PUBSUB", "CHANNELS", &format!("{p}:*")]),
        array(vec![bulk(&chan)])
    );

    // Unsubscribe: one less; a disconnect: none.
    assert_eq!(
        a.call(&["UNSUBSCRIBE", &chan]),
        confirmation("unsubscribe", &chan, 0)
    );
    assert_eq!(publisher.call(&["PUBLISH", &chan, "b only"]), Reply::Int(1));
    assert_eq!(b.read_reply(), message(&chan, "b only"));
    drop(b);
    wait_publish_count(&mut publisher, &chan, 0);
    assert_eq!(
        publisher.call(&["PUBSUB", "NUMSUB", &chan]),
        array(vec![bulk(&chan), Reply::Int(0)])
    );
    assert_eq!(
        publisher.call(&["PUBSUB", "CHANNELS", &format!("{p}:*")]),
        array(vec![])
    );
}

#[test]
fn publish_counts_each_matching_pattern_per_client() {
    let proxy = start_proxy(shared());
    let p = unique_prefix("patterns");
    let chan = format!("{p}.news.tech");
    let (by_prefix, by_suffix) = (format!("{p}.news.*"), format!("{p}.*.tech"));
    let mut publisher = RawClient::connect(proxy.local_addr());
    let mut c = RawClient::connect(proxy.local_addr());
    let mut d = RawClient::connect(proxy.local_addr());

    // Mix SUBSCRIBE and PSUBSCRIBE: one client, the channel and two matching patterns,
    // receives three messages and counts three.
    assert_eq!(
        c.call(&["SUBSCRIBE", &chan]),
        confirmation("subscribe", &chan, 1)
    );
    c.send(&[b"PSUBSCRIBE", by_prefix.as_bytes(), by_suffix.as_bytes()]);
    assert_eq!(c.read_reply(), confirmation("psubscribe", &by_prefix, 2));
    assert_eq!(c.read_reply(), confirmation("psubscribe", &by_suffix, 3));
    assert_eq!(publisher.call(&["PUBLISH", &chan, "m"]), Reply::Int(3));
    let got = sorted_names(array(vec![c.read_reply(), c.read_reply(), c.read_reply()]));
    let mut want = vec![
        message(&chan, "m"),
        pmessage(&by_prefix, &chan, "m"),
        pmessage(&by_suffix, &chan, "m"),
    ];
    want.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(got, want);

    // Another client on one of the patterns: NUMPAT counts unique patterns.
    assert_eq!(
        d.call(&["PSUBSCRIBE", &by_prefix]),
        confirmation("psubscribe", &by_prefix, 1)
    );
    assert_eq!(publisher.call(&["PUBLISH", &chan, "n"]), Reply::Int(4));
    let Reply::Int(patterns) = publisher.call(&["PUBSUB", "NUMPAT"]) else {
        panic!("NUMPAT")
    };
    assert_eq!(patterns, 2);
    // Pattern subscribers are not channel subscribers.
    assert_eq!(
        publisher.call(&["PUBSUB", "NUMSUB", &chan]),
        array(vec![bulk(&chan), Reply::Int(1)])
    );
    // A channel only the patterns match.
    assert_eq!(
        publisher.call(&["PUBLISH", &format!("{p}.news.art"), "o"]),
        Reply::Int(2)
    );

    // RESET drops the client's subscriptions; PUNSUBSCRIBE the other's.
    c.send(&[b"RESET"]);
    read_until(&mut c, &Reply::Simple("RESET".into()));
    assert_eq!(publisher.call(&["PUBLISH", &chan, "p"]), Reply::Int(1));
    assert_eq!(
        publisher.call(&["PUBSUB", "NUMPAT"]),
        Reply::Int(1),
        "NUMPAT after RESET"
    );
    d.send(&[b"PUNSUBSCRIBE"]);
    read_until(&mut d, &confirmation("punsubscribe", &by_prefix, 0));
    assert_eq!(publisher.call(&["PUBLISH", &chan, "q"]), Reply::Int(0));
    assert_eq!(publisher.call(&["PUBSUB", "NUMPAT"]), Reply::Int(0));
}

#[test]
fn shard_channels_are_counted_apart() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("shardcounts");
    let (shard_a, shard_b) = cluster.names_on_two_primaries(&p);
    let mut publisher = RawClient::connect(proxy.local_addr());
    let mut e = RawClient::connect(proxy.local_addr());

    e.send(&[b"SSUBSCRIBE", shard_a.as_bytes(), shard_b.as_bytes()]);
    assert_eq!(e.read_reply(), confirmation("ssubscribe", &shard_a, 1));
    assert_eq!(e.read_reply(), confirmation("ssubscribe", &shard_b, 2));
    assert_eq!(publisher.call(&["SPUBLISH", &shard_a, "s"]), Reply::Int(1));
    assert_eq!(
        e.read_reply(),
        array(vec![bulk("smessage"), bulk(&shard_a), bulk("s")])
    );
    // A shard channel is not a channel.
    assert_eq!(publisher.call(&["PUBLISH", &shard_a, "x"]), Reply::Int(0));
    assert_eq!(
        publisher.call(&["PUBSUB", "SHARDNUMSUB", &shard_a, &shard_b]),
        array(vec![
            bulk(&shard_a),
            Reply::Int(1),
            bulk(&shard_b),
            Reply::Int(1)
        ])
    );
    let mut want = vec![bulk(&shard_a), bulk(&shard_b)];
    want.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        sorted_names(publisher.call(&["PUBSUB", "SHARDCHANNELS", &format!("{p}*")])),
        want
    );
    assert_eq!(
        publisher.call(&["PUBSUB", "CHANNELS", &format!("{p}*")]),
        array(vec![])
    );
    drop(e);
    wait_until(
        "the shard subscriber to be gone",
        CLUSTER_DEADLINE,
        || match publisher.call(&["SPUBLISH", &shard_b, "t"]) {
            Reply::Int(0) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(publisher.call(&["PUBSUB", "SHARDCHANNELS"]), array(vec![]));
}

/// As on one server, a message published before a subscription is never delivered to it: the
/// cluster spreads a PUBLISH to the other nodes asynchronously, so the proxy subscribes and
/// publishes on one node. Each round publishes before and after subscribing a new channel;
/// the next message the subscriber reads must be the later one.
#[test]
fn a_message_published_before_a_subscription_is_not_delivered() {
    let proxy = start_proxy(shared());
    let p = unique_prefix("order");
    let mut publisher = RawClient::connect(proxy.local_addr());
    let mut subscriber = RawClient::connect(proxy.local_addr());
    for round in 0..150 {
        let chan = format!("{p}:{round}");
        assert_eq!(publisher.call(&["PUBLISH", &chan, "early"]), Reply::Int(0));
        assert_eq!(
            subscriber.call(&["SUBSCRIBE", &chan]),
            confirmation("subscribe", &chan, round + 1)
        );
        assert_eq!(publisher.call(&["PUBLISH", &chan, "late"]), Reply::Int(1));
        assert_eq!(
            subscriber.read_reply(),
            message(&chan, "late"),
            "round {round}"
        );
    }
}

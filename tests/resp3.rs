//! RESP3 through the proxy: `HELLO 3` switches one client (and only that client) to RESP3,
//! its replies come from RESP3 backend connections unchanged (maps, sets, doubles, nulls), and
//! Pub/Sub arrives as push frames while the client keeps sending ordinary commands.

mod common;

use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{shared, start_proxy, unique_prefix};

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn push(items: Vec<Reply>) -> Reply {
    Reply::Push(items)
}

/// The value of `key` in a map reply.
fn map_field<'a>(reply: &'a Reply, key: &str) -> &'a Reply {
    match reply {
        Reply::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| *k == bulk(key))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {key:?} in {reply:?}")),
        other => panic!("expected a map, got {other:?}"),
    }
}

#[test]
fn hello_3_switches_one_client_to_resp3_replies() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("resp3");
    let (a, b) = cluster.names_on_two_primaries(&p);
    let mut c = RawClient::connect(proxy.local_addr());
    let mut other = RawClient::connect(proxy.local_addr());

    let hello = c.call(&["HELLO", "3", "SETNAME", "resp3-client"]);
    assert_eq!(map_field(&hello, "proto"), &Reply::Int(3), "{hello:?}");
    assert_eq!(map_field(&hello, "server"), &bulk("slotproxy"));

    assert_eq!(c.call(&["SET", &a, "1"]), Reply::Simple("OK".into()));
    assert_eq!(c.call(&["GET", &a]), bulk("1"));
    assert_eq!(c.call(&["GET", &format!("{p}:missing")]), Reply::Null);
    assert_eq!(c.call(&["CLIENT", "GETNAME"]), bulk("resp3-client"));

    // Types RESP2 flattens arrive as Redis sends them in RESP3.
    let h = format!("{p}:h");
    c.call(&["HSET", &h, "f1", "v1", "f2", "v2"]);
    let mut fields = match c.call(&["HGETALL", &h]) {
        Reply::Map(pairs) => pairs,
        other => panic!("HGETALL in RESP3 is a map, got {other:?}"),
    };
    fields.sort_by_key(|(k, _)| format!("{k:?}"));
    assert_eq!(
        fields,
        vec![(bulk("f1"), bulk("v1")), (bulk("f2"), bulk("v2"))]
    );
    let s = format!("{p}:s");
    c.call(&["SADD", &s, "m"]);
    assert_eq!(c.call(&["SMEMBERS", &s]), Reply::Set(vec![bulk("m")]));
    let z = format!("{p}:z");
    c.call(&["ZADD", &z, "1.5", "m"]);
    assert_eq!(c.call(&["ZSCORE", &z, "m"]), Reply::Double("1.5".into()));

    // A split command merges RESP3 parts: the missing key is RESP3's null.
    assert_eq!(
        c.call(&["MGET", &a, &format!("{p}:nope"), &b]),
        Reply::Array(Some(vec![bulk("1"), Reply::Null, Reply::Null]))
    );
    assert_eq!(c.call(&["EXISTS", &a, &b]), Reply::Int(1));
    // INFO from RESP3 nodes is merged like RESP2's.
    let info = c.call(&["INFO", "keyspace"]);
    let text = match &info {
        Reply::Bulk(Some(t)) | Reply::Verbatim(_, t) => String::from_utf8_lossy(t).into_owned(),
        other => panic!("INFO reply {other:?}"),
    };
    assert!(text.contains("# Keyspace"), "{text}");

    // Another client on the same worker stays on RESP2.
    assert_eq!(
        other.call(&["GET", &format!("{p}:missing")]),
        Reply::Bulk(None)
    );
    assert_eq!(other.call(&["CLIENT", "GETNAME"]), Reply::Bulk(None));

    // HELLO 2 switches back; an unknown version is refused as Redis does.
    let hello = c.call(&["HELLO", "2"]);
    assert!(matches!(hello, Reply::Array(Some(_))), "{hello:?}");
    assert_eq!(c.call(&["GET", &format!("{p}:missing")]), Reply::Bulk(None));
    assert_eq!(
        c.call(&["HELLO", "4"]).error(),
        "NOPROTO unsupported protocol version"
    );
    // RESET goes back to RESP2 too.
    c.call(&["HELLO", "3"]);
    assert_eq!(c.call(&["RESET"]), Reply::Simple("RESET".into()));
    assert_eq!(c.call(&["GET", &format!("{p}:missing")]), Reply::Bulk(None));
}

#[test]
fn resp3_blocking_commands_and_transactions_answer_resp3_nulls() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("resp3-block");
    let key = format!("{p}:list");
    let mut c = RawClient::connect(proxy.local_addr());
    c.call(&["HELLO", "3"]);

    // A blocking command that times out: RESP3's null, from a RESP3 dedicated connection.
    assert_eq!(c.call(&["BLPOP", &key, "0.1"]), Reply::Null);
    let mut pusher = RawClient::connect(proxy.local_addr());
    c.send(&[b"BLPOP", key.as_bytes(), b"5"]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(pusher.call(&["RPUSH", &key, "job"]), Reply::Int(1));
    assert_eq!(
        c.read_reply(),
        Reply::Array(Some(vec![bulk(&key), bulk("job")]))
    );

    // A transaction, then a WATCH broken by another client: EXEC answers RESP3's null.
    let counter = format!("{p}:counter");
    assert_eq!(c.call(&["MULTI"]), Reply::Simple("OK".into()));
    assert_eq!(c.call(&["INCR", &counter]), Reply::Simple("QUEUED".into()));
    assert_eq!(c.call(&["EXEC"]), Reply::Array(Some(vec![Reply::Int(1)])));
    c.call(&["WATCH", &counter]);
    pusher.call(&["INCR", &counter]);
    c.call(&["MULTI"]);
    c.call(&["INCR", &counter]);
    assert_eq!(c.call(&["EXEC"]), Reply::Null);
}

#[test]
fn resp3_subscribers_get_push_messages_and_keep_sending_commands() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("resp3-pubsub");
    let chan = format!("{p}:news");
    let (shard_a, shard_b) = cluster.names_on_two_primaries(&format!("{p}:shard"));
    let key = format!("{p}:k");
    let mut sub = RawClient::connect(proxy.local_addr());
    let mut publisher = RawClient::connect(proxy.local_addr());
    sub.call(&["HELLO", "3"]);

    assert_eq!(
        sub.call(&["SUBSCRIBE", &chan]),
        push(vec![bulk("subscribe"), bulk(&chan), Reply::Int(1)])
    );
    sub.send(&[b"SSUBSCRIBE", shard_a.as_bytes(), shard_b.as_bytes()]);
    assert_eq!(
        sub.read_reply(),
        push(vec![bulk("ssubscribe"), bulk(&shard_a), Reply::Int(1)])
    );
    assert_eq!(
        sub.read_reply(),
        push(vec![bulk("ssubscribe"), bulk(&shard_b), Reply::Int(2)])
    );

    // Subscribed, a RESP3 client may still run any command, as on Redis.
    assert_eq!(sub.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
    assert_eq!(sub.call(&["GET", &key]), bulk("v"));
    assert_eq!(sub.call(&["PING"]), Reply::Simple("PONG".into()));

    // The node subscriptions are made in the background: wait until the nodes have them.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let numsub = Reply::Array(Some(vec![bulk(&chan), Reply::Int(1)]));
    while publisher.call(&["PUBSUB", "NUMSUB", &chan]) != numsub {
        assert!(
            std::time::Instant::now() < deadline,
            "{chan}: no subscriber"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(
        publisher.call(&["PUBLISH", &chan, "hello"]),
        Reply::Int(_)
    ));
    assert_eq!(
        sub.read_reply(),
        push(vec![bulk("message"), bulk(&chan), bulk("hello")])
    );
    let published = |publisher: &mut RawClient, cmd: &str, channel: &str| loop {
        if publisher.call(&[cmd, channel, "hello"]) == Reply::Int(1) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{channel}: no subscriber"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    published(&mut publisher, "SPUBLISH", &shard_b);
    assert_eq!(
        sub.read_reply(),
        push(vec![bulk("smessage"), bulk(&shard_b), bulk("hello")])
    );
    // A reply after a push is still the reply to the command.
    assert_eq!(sub.call(&["GET", &key]), bulk("v"));

    assert_eq!(
        sub.call(&["UNSUBSCRIBE"]),
        push(vec![bulk("unsubscribe"), bulk(&chan), Reply::Int(0)])
    );
}

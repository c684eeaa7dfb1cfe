//! Single commands through the proxy against a real cluster: data types, commands the proxy
//! answers itself, errors, inline and malformed input, scripts and movable-key commands, and
//! multi-key commands that must stay in one slot.

mod common;

use common::raw::{RawClient, Reply};
use common::{cli, local_keyslot, proxy_client, shared, start_proxy, unique_prefix};

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// Two keys under `prefix` that hash to different slots.
fn keys_in_two_slots(prefix: &str) -> (String, String) {
    let a = format!("{prefix}:a");
    let b = (0..)
        .map(|i| format!("{prefix}:b{i}"))
        .find(|b| local_keyslot(b.as_bytes()) != local_keyslot(a.as_bytes()))
        .expect("a key in another slot");
    (a, b)
}

/// Runs `args` on the proxy and returns the error text, panicking on a non-error reply.
fn proxy_error(raw: &mut RawClient, args: &[&str]) -> String {
    match raw.call(args) {
        Reply::Error(e) => e,
        other => panic!("{args:?}: expected an error, got {other:?}"),
    }
}

#[test]
fn data_type_commands_round_trip_and_land_on_the_owning_node() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let mut con = proxy_client(&proxy);
    let p = unique_prefix("basic");

    let s = format!("{p}:string");
    let _: () = redis::cmd("SET")
        .arg(&s)
        .arg("hello")
        .query(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg(&s).query(&mut con).unwrap();
    assert_eq!(got, "hello");
    let len: usize = redis::cmd("APPEND")
        .arg(&s)
        .arg(" world")
        .query(&mut con)
        .unwrap();
    assert_eq!(len, 11);
    let got: String = redis::cmd("GET").arg(&s).query(&mut con).unwrap();
    assert_eq!(got, "hello world");
    // The value really lives on the primary that owns the key's slot.
    let owner = cluster.primary_for_slot(cluster.keyslot(&s));
    let direct: String = redis::cmd("GET")
        .arg(&s)
        .query(&mut cluster.direct(owner))
        .unwrap();
    assert_eq!(direct, "hello world");

    let n = format!("{p}:counter");
    for expected in 1..=5 {
        let got: i64 = redis::cmd("INCR").arg(&n).query(&mut con).unwrap();
        assert_eq!(got, expected);
    }
    let got: i64 = redis::cmd("INCRBY")
        .arg(&n)
        .arg(10)
        .query(&mut con)
        .unwrap();
    assert_eq!(got, 15);
    let got: i64 = redis::cmd("DECR").arg(&n).query(&mut con).unwrap();
    assert_eq!(got, 14);

    let h = format!("{p}:hash");
    let added: i64 = redis::cmd("HSET")
        .arg(&h)
        .arg("f1")
        .arg("v1")
        .arg("f2")
        .arg("v2")
        .query(&mut con)
        .unwrap();
    assert_eq!(added, 2);
    let got: Option<String> = redis::cmd("HGET")
        .arg(&h)
        .arg("f2")
        .query(&mut con)
        .unwrap();
    assert_eq!(got.as_deref(), Some("v2"));
    let mut all: Vec<(String, String)> = redis::cmd("HGETALL").arg(&h).query(&mut con).unwrap();
    all.sort();
    assert_eq!(
        all,
        vec![("f1".into(), "v1".into()), ("f2".into(), "v2".into())]
    );

    let l = format!("{p}:list");
    let len: i64 = redis::cmd("LPUSH")
        .arg(&l)
        .arg("a")
        .arg("b")
        .arg("c")
        .query(&mut con)
        .unwrap();
    assert_eq!(len, 3);
    let len: i64 = redis::cmd("RPUSH")
        .arg(&l)
        .arg("z")
        .query(&mut con)
        .unwrap();
    assert_eq!(len, 4);
    let items: Vec<String> = redis::cmd("LRANGE")
        .arg(&l)
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(items, ["c", "b", "a", "z"]);
    let popped: String = redis::cmd("LPOP").arg(&l).query(&mut con).unwrap();
    assert_eq!(popped, "c");

    let set = format!("{p}:set");
    let added: i64 = redis::cmd("SADD")
        .arg(&set)
        .arg("x")
        .arg("y")
        .arg("x")
        .query(&mut con)
        .unwrap();
    assert_eq!(added, 2);
    let mut members: Vec<String> = redis::cmd("SMEMBERS").arg(&set).query(&mut con).unwrap();
    members.sort();
    assert_eq!(members, ["x", "y"]);

    let z = format!("{p}:zset");
    let added: i64 = redis::cmd("ZADD")
        .arg(&z)
        .arg(2)
        .arg("two")
        .arg(1)
        .arg("one")
        .query(&mut con)
        .unwrap();
    assert_eq!(added, 2);
    let ranked: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&z)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut con)
        .unwrap();
    assert_eq!(ranked, vec![("one".into(), 1.0), ("two".into(), 2.0)]);

    let e = format!("{p}:expiring");
    let _: () = redis::cmd("SET")
        .arg(&e)
        .arg("v")
        .arg("EX")
        .arg(1000)
        .query(&mut con)
        .unwrap();
    let ttl: i64 = redis::cmd("TTL").arg(&e).query(&mut con).unwrap();
    assert!((990..=1000).contains(&ttl), "TTL {ttl}");
    let kind: String = redis::cmd("TYPE").arg(&h).query(&mut con).unwrap();
    assert_eq!(kind, "hash");
    let deleted: i64 = redis::cmd("DEL").arg(&e).query(&mut con).unwrap();
    assert_eq!(deleted, 1);
    let got: Option<String> = redis::cmd("GET").arg(&e).query(&mut con).unwrap();
    assert_eq!(got, None);
    // A Redis error reply (WRONGTYPE) comes back as it is, and the connection stays usable.
    let err = redis::cmd("GET")
        .arg(&h)
        .query::<Option<String>>(&mut con)
        .unwrap_err();
    assert_eq!(err.code(), Some("WRONGTYPE"), "{err}");
    let got: String = redis::cmd("GET").arg(&s).query(&mut con).unwrap();
    assert_eq!(got, "hello world");

    // redis-cli talks to the proxy like to any server.
    let port = proxy.local_addr().port();
    let k = format!("{p}:cli");
    assert_eq!(cli(port, &["SET", &k, "from-cli"]).trim(), "OK");
    assert_eq!(cli(port, &["GET", &k]).trim(), "from-cli");
    assert_eq!(cli(port, &["PING"]).trim(), "PONG");
}

#[test]
fn proxy_answers_ping_echo_select_and_client_name_itself() {
    let proxy = start_proxy(shared());
    let mut raw = RawClient::connect(proxy.local_addr());
    assert_eq!(raw.call(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(raw.call(&["PING", "hi there"]).text(), "hi there");
    assert_eq!(raw.call(&["ECHO", "echo me"]).text(), "echo me");
    assert_eq!(raw.call(&["SELECT", "0"]), Reply::Simple("OK".into()));
    let err = proxy_error(&mut raw, &["SELECT", "1"]);
    assert!(err.starts_with("ERR"), "SELECT 1: {err}");
    // Still usable after the error.
    assert_eq!(raw.call(&["PING"]), Reply::Simple("PONG".into()));

    assert_eq!(raw.call(&["CLIENT", "GETNAME"]), Reply::Bulk(None));
    assert_eq!(
        raw.call(&["CLIENT", "SETNAME", "worker-1"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(raw.call(&["CLIENT", "GETNAME"]).text(), "worker-1");
    let Reply::Int(id1) = raw.call(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID is not an integer");
    };
    let mut other = RawClient::connect(proxy.local_addr());
    assert_eq!(other.call(&["CLIENT", "GETNAME"]), Reply::Bulk(None));
    let Reply::Int(id2) = other.call(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID is not an integer");
    };
    assert!(id1 > 0 && id2 > 0 && id1 != id2, "client ids {id1} {id2}");
    let Reply::Int(again) = raw.call(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID is not an integer");
    };
    assert_eq!(again, id1, "CLIENT ID is stable for a connection");

    // What client libraries send on connect (CLIENT SETINFO is Redis 7.2+, answered here).
    for (attr, value) in [("lib-name", "redis-py"), ("lib-ver", "5.0.1")] {
        assert_eq!(
            raw.call(&["CLIENT", "SETINFO", attr, value]),
            Reply::Simple("OK".into())
        );
    }
    let info = raw.call(&["CLIENT", "INFO"]).text();
    assert!(
        info.contains("name=worker-1") && info.contains("lib-name=redis-py"),
        "{info}"
    );
    let err = proxy_error(&mut raw, &["CLIENT", "SETINFO", "lib-name"]);
    assert!(err.contains("wrong number of arguments"), "{err}");
    let Reply::Array(Some(hello)) = raw.call(&["HELLO", "2", "SETNAME", "renamed"]) else {
        panic!("HELLO 2 is not an array");
    };
    assert_eq!(hello.len(), 14, "HELLO 2 reply: {hello:?}");
    assert_eq!(raw.call(&["CLIENT", "GETNAME"]).text(), "renamed");
    let err = proxy_error(&mut raw, &["HELLO", "4"]);
    assert!(err.starts_with("NOPROTO"), "HELLO 4: {err}");
}

#[test]
fn cluster_keyslot_matches_the_cluster_for_2000_keys() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let mut con = proxy_client(&proxy);
    let mut node = cluster.direct(cluster.seed_port());

    let mut keys: Vec<Vec<u8>> = [
        "{user1000}.following",
        "{user1000}.followers",
        "foo{}{bar}",
        "foo{{bar}}zap",
        "foo{bar}{zap}",
        "{}",
        "{}foo",
        "foo{",
        "}foo{bar",
        "123456789",
        "",
    ]
    .iter()
    .map(|k| k.as_bytes().to_vec())
    .collect();
    let alphabet = b"ab{}{}xyz019:_-\x00\xff";
    while keys.len() < 2000 {
        let len = fastrand::usize(0..24);
        keys.push(
            (0..len)
                .map(|_| alphabet[fastrand::usize(..alphabet.len())])
                .collect(),
        );
    }
    let mut via_proxy = redis::pipe();
    let mut via_node = redis::pipe();
    for key in &keys {
        via_proxy.cmd("CLUSTER").arg("KEYSLOT").arg(key);
        via_node.cmd("CLUSTER").arg("KEYSLOT").arg(key);
    }
    let from_proxy: Vec<u16> = via_proxy.query(&mut con).unwrap();
    let from_node: Vec<u16> = via_node.query(&mut node).unwrap();
    assert_eq!(from_proxy.len(), keys.len());
    for ((key, p), n) in keys.iter().zip(&from_proxy).zip(&from_node) {
        assert_eq!(
            p,
            n,
            "CLUSTER KEYSLOT {:?}: proxy {p}, cluster {n}",
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(from_proxy[0], 3443);
    assert_eq!(from_proxy[1], 3443);
}

#[test]
fn unknown_commands_and_wrong_arity_get_redis_errors() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let mut raw = RawClient::connect(proxy.local_addr());
    let err = proxy_error(&mut raw, &["NOSUCHCOMMAND", "x", "y"]);
    assert!(err.starts_with("ERR unknown command"), "{err}");

    // Same text as Redis itself for a wrong argument count.
    let mut node = RawClient::connect(([127, 0, 0, 1], cluster.seed_port()).into());
    for args in [
        &["GET"][..],
        &["SET", "k"],
        &["HSET", "h", "f"],
        &["GETSET"],
    ] {
        let from_proxy = proxy_error(&mut raw, args);
        let from_redis = proxy_error(&mut node, args);
        assert!(
            from_proxy.starts_with("ERR wrong number of arguments"),
            "{args:?}: {from_proxy}"
        );
        assert_eq!(from_proxy, from_redis, "{args:?}");
    }
    assert_eq!(raw.call(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn info_includes_a_proxy_section() {
    let proxy = start_proxy(shared());
    let mut con = proxy_client(&proxy);
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    assert!(
        info.contains("# Proxy"),
        "INFO without a proxy section:\n{info}"
    );
}

#[test]
fn inline_commands_work_over_a_raw_socket() {
    let proxy = start_proxy(shared());
    let mut raw = RawClient::connect(proxy.local_addr());
    let key = unique_prefix("inline");
    raw.send_raw(b"PING\r\n");
    assert_eq!(raw.read_reply(), Reply::Simple("PONG".into()));
    raw.send_raw(format!("SET {key} inline-value\r\n").as_bytes());
    assert_eq!(raw.read_reply(), Reply::Simple("OK".into()));
    raw.send_raw(format!("GET {key}\r\n").as_bytes());
    assert_eq!(raw.read_reply().text(), "inline-value");
    // Inline and RESP commands mixed in one packet keep their order.
    let mut batch = b"PING\r\n".to_vec();
    batch.extend(common::raw::encode(&[b"GET", key.as_bytes()]));
    batch.extend(format!("ECHO {key}\r\n").as_bytes());
    raw.send_raw(&batch);
    assert_eq!(raw.read_reply(), Reply::Simple("PONG".into()));
    assert_eq!(raw.read_reply().text(), "inline-value");
    assert_eq!(raw.read_reply().text(), key);
}

#[test]
fn malformed_input_gets_a_protocol_error_and_closes_only_that_connection() {
    let proxy = start_proxy(shared());
    let key = unique_prefix("malformed");
    let mut bystander = RawClient::connect(proxy.local_addr());
    assert_eq!(
        bystander.call(&["SET", &key, "before"]),
        Reply::Simple("OK".into())
    );

    let mut bad = RawClient::connect(proxy.local_addr());
    bad.send_raw(b"*1\r\n$x\r\n");
    let err = bad.read_reply().error().to_string();
    assert!(err.starts_with("ERR Protocol error"), "{err}");
    bad.is_closed_by_server()
        .unwrap_or_else(|e| panic!("after a protocol error: {e}"));

    assert_eq!(bystander.call(&["GET", &key]).text(), "before");
    assert_eq!(
        bystander.call(&["SET", &key, "after"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(bystander.call(&["GET", &key]).text(), "after");
}

#[test]
fn eval_routes_by_its_keys_and_refuses_keys_in_two_slots() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let mut con = proxy_client(&proxy);
    let mut raw = RawClient::connect(proxy.local_addr());
    let p = unique_prefix("eval");
    let script = "return redis.call('GET', KEYS[1])";

    // Keys on every primary, so the script must run on each of them.
    let keys: Vec<String> = (0..30).map(|i| format!("{p}:{i}")).collect();
    let owners: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| cluster.primary_for_slot(local_keyslot(k.as_bytes())))
        .collect();
    assert_eq!(owners.len(), 3, "keys should cover every primary");
    for (i, key) in keys.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(format!("value-{i}"))
            .query(&mut con)
            .unwrap();
        let got: String = redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(key)
            .query(&mut con)
            .unwrap();
        assert_eq!(got, format!("value-{i}"), "EVAL on {key}");
    }
    // EVAL_RO and a script that writes.
    let written: String = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])")
        .arg(1)
        .arg(&keys[0])
        .arg("from-script")
        .query(&mut con)
        .unwrap();
    assert_eq!(written, "from-script");
    let got: String = redis::cmd("GET").arg(&keys[0]).query(&mut con).unwrap();
    assert_eq!(got, "from-script");

    let (a, b) = keys_in_two_slots(&p);
    let err = proxy_error(
        &mut raw,
        &[
            "EVAL",
            "return redis.call('MGET', KEYS[1], KEYS[2])",
            "2",
            &a,
            &b,
        ],
    );
    assert!(err.starts_with("CROSSSLOT"), "{err}");
    // Same slot is fine.
    let tagged = [format!("{{{p}}}:x"), format!("{{{p}}}:y")];
    let _: () = redis::cmd("MSET")
        .arg(&tagged[0])
        .arg("1")
        .arg(&tagged[1])
        .arg("2")
        .query(&mut con)
        .unwrap();
    let both: Vec<String> = redis::cmd("EVAL")
        .arg("return redis.call('MGET', KEYS[1], KEYS[2])")
        .arg(2)
        .arg(&tagged[0])
        .arg(&tagged[1])
        .query(&mut con)
        .unwrap();
    assert_eq!(both, ["1", "2"]);
}

#[test]
fn xread_and_zunionstore_route_by_their_movable_keys() {
    let proxy = start_proxy(shared());
    let mut con = proxy_client(&proxy);
    let mut raw = RawClient::connect(proxy.local_addr());
    let p = unique_prefix("movable");
    let s1 = format!("{{{p}}}:stream1");
    let s2 = format!("{{{p}}}:stream2");
    let id1: String = redis::cmd("XADD")
        .arg(&s1)
        .arg("*")
        .arg("f")
        .arg("v1")
        .query(&mut con)
        .unwrap();
    let id2: String = redis::cmd("XADD")
        .arg(&s2)
        .arg("*")
        .arg("g")
        .arg("v2")
        .query(&mut con)
        .unwrap();
    // [[key, [[id, [field, value]]]], ...]
    type Streams = Vec<(String, Vec<(String, Vec<String>)>)>;
    let read: Streams = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&s1)
        .arg(&s2)
        .arg("0")
        .arg("0")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        read,
        vec![
            (
                s1.clone(),
                vec![(id1, vec!["f".to_string(), "v1".to_string()])]
            ),
            (
                s2.clone(),
                vec![(id2, vec!["g".to_string(), "v2".to_string()])]
            ),
        ]
    );
    let (a, b) = keys_in_two_slots(&p);
    let err = proxy_error(&mut raw, &["XREAD", "STREAMS", &a, &b, "0", "0"]);
    assert!(err.starts_with("CROSSSLOT"), "{err}");

    let z1 = format!("{{{p}}}:z1");
    let z2 = format!("{{{p}}}:z2");
    let out = format!("{{{p}}}:zout");
    let _: i64 = redis::cmd("ZADD")
        .arg(&z1)
        .arg(1)
        .arg("a")
        .arg(2)
        .arg("b")
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("ZADD")
        .arg(&z2)
        .arg(10)
        .arg("b")
        .arg(5)
        .arg("c")
        .query(&mut con)
        .unwrap();
    let n: i64 = redis::cmd("ZUNIONSTORE")
        .arg(&out)
        .arg(2)
        .arg(&z1)
        .arg(&z2)
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 3);
    let union: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&out)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        union,
        vec![("a".into(), 1.0), ("c".into(), 5.0), ("b".into(), 12.0)]
    );
    let err = proxy_error(&mut raw, &["ZUNIONSTORE", &out, "2", &a, &b]);
    assert!(err.starts_with("CROSSSLOT"), "{err}");
}

#[test]
fn unsplittable_multi_key_commands_refuse_cross_slot_and_work_with_hash_tags() {
    let proxy = start_proxy(shared());
    let mut con = proxy_client(&proxy);
    let mut raw = RawClient::connect(proxy.local_addr());
    let p = unique_prefix("crossslot");
    let (a, b) = keys_in_two_slots(&p);
    assert_eq!(raw.call(&["SADD", &a, "m"]), Reply::Int(1));
    assert_eq!(raw.call(&["RPUSH", &b, "x"]), Reply::Int(1));

    for args in [
        vec!["MSETNX", &a, "1", &b, "2"],
        vec!["RENAME", &a, &b],
        vec!["SMOVE", &a, &b, "m"],
        vec!["SINTERSTORE", &a, &a, &b],
        vec!["RPOPLPUSH", &b, &a],
    ] {
        assert_eq!(proxy_error(&mut raw, &args), CROSSSLOT, "{args:?}");
    }
    // Nothing was changed by the refused commands.
    let members: Vec<String> = redis::cmd("SMEMBERS").arg(&a).query(&mut con).unwrap();
    assert_eq!(members, ["m"]);
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg(&b)
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(list, ["x"]);

    let t = |name: &str| format!("{{{p}}}:{name}");
    let set: bool = redis::cmd("MSETNX")
        .arg(t("m1"))
        .arg("1")
        .arg(t("m2"))
        .arg("2")
        .query(&mut con)
        .unwrap();
    assert!(set);
    let set: bool = redis::cmd("MSETNX")
        .arg(t("m2"))
        .arg("x")
        .arg(t("m3"))
        .arg("3")
        .query(&mut con)
        .unwrap();
    assert!(!set, "MSETNX must not set anything when a key exists");
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg(t("m1"))
        .arg(t("m2"))
        .arg(t("m3"))
        .query(&mut con)
        .unwrap();
    assert_eq!(got, [Some("1".into()), Some("2".into()), None]);

    let _: () = redis::cmd("RENAME")
        .arg(t("m1"))
        .arg(t("renamed"))
        .query(&mut con)
        .unwrap();
    let got: Option<String> = redis::cmd("GET").arg(t("renamed")).query(&mut con).unwrap();
    assert_eq!(got.as_deref(), Some("1"));

    let _: i64 = redis::cmd("SADD")
        .arg(t("s1"))
        .arg("a")
        .arg("b")
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("SADD")
        .arg(t("s2"))
        .arg("b")
        .arg("c")
        .query(&mut con)
        .unwrap();
    let moved: bool = redis::cmd("SMOVE")
        .arg(t("s1"))
        .arg(t("s2"))
        .arg("a")
        .query(&mut con)
        .unwrap();
    assert!(moved);
    let n: i64 = redis::cmd("SINTERSTORE")
        .arg(t("inter"))
        .arg(t("s1"))
        .arg(t("s2"))
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
    let inter: Vec<String> = redis::cmd("SMEMBERS")
        .arg(t("inter"))
        .query(&mut con)
        .unwrap();
    assert_eq!(inter, ["b"]);

    let _: i64 = redis::cmd("RPUSH")
        .arg(t("l1"))
        .arg("one")
        .arg("two")
        .query(&mut con)
        .unwrap();
    let popped: String = redis::cmd("RPOPLPUSH")
        .arg(t("l1"))
        .arg(t("l2"))
        .query(&mut con)
        .unwrap();
    assert_eq!(popped, "two");
    let l2: Vec<String> = redis::cmd("LRANGE")
        .arg(t("l2"))
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(l2, ["two"]);
}

/// The proxy's own redirect counter from INFO's `# Proxy` section.
fn moved_redirects(raw: &mut RawClient) -> u64 {
    let info = raw.call(&["INFO", "proxy"]).text();
    info.lines()
        .find_map(|l| l.strip_prefix("proxy_moved_redirects:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no proxy_moved_redirects in {info}"))
}

/// Commands whose keys are not simply argv[1] must reach the key's owner directly: a wrong
/// guess would still succeed (the proxy follows MOVED), so the test checks that no MOVED was
/// needed at all. Ten keys per command make a lucky wrong guess impossible in practice.
#[test]
fn movable_key_commands_go_straight_to_the_owning_node() {
    let proxy = start_proxy(shared());
    let mut raw = RawClient::connect(proxy.local_addr());
    let p = unique_prefix("straight");
    let lib = p.replace([':', '-'], "_");
    let function = format!(
        "#!lua name={lib}\nredis.register_function{{function_name='{lib}_get', callback=function(keys, args) return redis.call('GET', keys[1]) end, flags={{'no-writes'}}}}"
    );
    assert_eq!(
        raw.call(&["FUNCTION", "LOAD", "REPLACE", &function]).text(),
        lib
    );
    let sha = raw
        .call(&["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"])
        .text();
    let before = moved_redirects(&mut raw);
    for i in 0..10 {
        let t = format!("{{{p}:{i}}}");
        let k = format!("{t}:k");
        let ok = |r: Reply| assert!(!matches!(r, Reply::Error(_)), "{r:?}");
        assert_eq!(
            raw.call(&[
                "EVAL",
                "return redis.call('SET', KEYS[1], ARGV[1])",
                "1",
                &k,
                "v"
            ]),
            Reply::Simple("OK".into())
        );
        assert_eq!(raw.call(&["EVALSHA", &sha, "1", &k]).text(), "v");
        assert_eq!(
            raw.call(&["EVAL_RO", "return redis.call('GET', KEYS[1])", "1", &k])
                .text(),
            "v"
        );
        assert_eq!(
            raw.call(&["FCALL", &format!("{lib}_get"), "1", &k]).text(),
            "v"
        );
        assert_eq!(
            raw.call(&["FCALL_RO", &format!("{lib}_get"), "1", &k])
                .text(),
            "v"
        );
        ok(raw.call(&["XADD", &format!("{t}:s"), "*", "f", "v"]));
        ok(raw.call(&["XREAD", "COUNT", "1", "STREAMS", &format!("{t}:s"), "0"]));
        ok(raw.call(&["XGROUP", "CREATE", &format!("{t}:s"), "g", "$"]));
        ok(raw.call(&["XINFO", "STREAM", &format!("{t}:s")]));
        ok(raw.call(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            &format!("{t}:s"),
            ">",
        ]));
        ok(raw.call(&["ZADD", &format!("{t}:z1"), "1", "a"]));
        ok(raw.call(&[
            "ZUNIONSTORE",
            &format!("{t}:zu"),
            "2",
            &format!("{t}:z1"),
            &format!("{t}:z2"),
        ]));
        ok(raw.call(&["ZINTER", "2", &format!("{t}:z1"), &format!("{t}:z2")]));
        ok(raw.call(&["ZINTERCARD", "1", &format!("{t}:z1")]));
        ok(raw.call(&["ZMPOP", "2", &format!("{t}:z2"), &format!("{t}:z1"), "MIN"]));
        ok(raw.call(&["RPUSH", &format!("{t}:l"), "x", "y"]));
        ok(raw.call(&["LMPOP", "2", &format!("{t}:l0"), &format!("{t}:l"), "LEFT"]));
        ok(raw.call(&["SINTERCARD", "2", &format!("{t}:s1"), &format!("{t}:s2")]));
        ok(raw.call(&["BITOP", "OR", &format!("{t}:b"), &k, &format!("{t}:b2")]));
        ok(raw.call(&["OBJECT", "ENCODING", &k]));
        ok(raw.call(&["MEMORY", "USAGE", &k]));
        ok(raw.call(&[
            "SORT",
            &format!("{t}:l"),
            "ALPHA",
            "STORE",
            &format!("{t}:sorted"),
        ]));
        ok(raw.call(&["GEOADD", &format!("{t}:g"), "13.36", "38.11", "p"]));
        ok(raw.call(&[
            "GEORADIUS",
            &format!("{t}:g"),
            "15",
            "37",
            "200",
            "km",
            "STORE",
            &format!("{t}:gs"),
        ]));
        ok(raw.call(&["SPUBLISH", &k, "hello"]));
    }
    assert_eq!(
        moved_redirects(&mut raw),
        before,
        "some command was routed by the wrong argument"
    );

    // The destination keys found by keyword (STORE) count: in another slot they are refused.
    let (a, b) = keys_in_two_slots(&p);
    for args in [
        vec!["SORT", a.as_str(), "STORE", b.as_str()],
        vec![
            "GEORADIUS",
            a.as_str(),
            "15",
            "37",
            "200",
            "km",
            "STORE",
            b.as_str(),
        ],
        vec!["BITOP", "AND", a.as_str(), b.as_str()],
    ] {
        assert_eq!(proxy_error(&mut raw, &args), CROSSSLOT, "{args:?}");
    }
}

/// Admin commands as a single server would take them: per-node diagnostics merged,
/// cluster-wide configuration changes only when the operator allowed them.
#[test]
fn admin_commands_are_merged_or_gated_by_the_admin_flag() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("admin");
    let mut raw = RawClient::connect(proxy.local_addr());
    let err = proxy_error(&mut raw, &["CONFIG", "SET", "slowlog-max-len", "200"]);
    assert!(err.contains("--admin-commands"), "{err}");
    let err = proxy_error(&mut raw, &["DEBUG", "SET-ACTIVE-EXPIRE", "1"]);
    assert!(err.contains("--admin-commands"), "{err}");
    assert!(matches!(raw.call(&["SLOWLOG", "LEN"]), Reply::Int(_)));
    assert!(matches!(
        raw.call(&["SLOWLOG", "GET", "1"]),
        Reply::Array(Some(_))
    ));
    let key = format!("{p}:k");
    assert_eq!(raw.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
    let object = raw.call(&["DEBUG", "OBJECT", &key]).text();
    assert!(object.contains("encoding:embstr"), "{object}");

    let admin = common::start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.admin.commands = true;
        c.cluster.refresh_interval = std::time::Duration::from_millis(200);
    });
    let mut raw = RawClient::connect(admin.local_addr());
    // Every node means replicas too: wait until the nodes report them online.
    common::wait_for_known_replicas(&mut raw, 3);
    assert_eq!(
        raw.call(&["CONFIG", "SET", "slowlog-max-len", "200"]),
        Reply::Simple("OK".into())
    );
    for port in cluster.ports() {
        let got: Vec<String> = common::query(port, &["CONFIG", "GET", "slowlog-max-len"]);
        assert_eq!(got[1], "200", "slowlog-max-len on node {port}");
    }
    assert_eq!(
        raw.call(&["CONFIG", "SET", "slowlog-max-len", "128"]),
        Reply::Simple("OK".into())
    );
}

/// DEBUG goes where its subcommand acts: by key, to any one node for what only concerns the
/// connection (PROTOCOL's reply types come back intact), to every node for server state.
/// PING's arity is Redis's.
#[test]
fn debug_subcommands_go_where_they_act_and_local_errors_are_redis_own() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("debug");
    let mut raw = RawClient::connect(proxy.local_addr());
    let (a, b) = (format!("{{{p}}}:a"), format!("{{{p}}}:b"));
    assert_eq!(raw.call(&["RPUSH", &a, "x", "y"]), Reply::Int(2));
    assert_eq!(
        raw.call(&["COPY", &a, &b]),
        Reply::Int(1),
        "COPY in one slot"
    );
    // Equal values have equal digests, however many slots' keys are asked about.
    let Reply::Array(Some(digests)) = raw.call(&["DEBUG", "DIGEST-VALUE", &a, &b]) else {
        panic!("DIGEST-VALUE answers an array");
    };
    assert_eq!(digests.len(), 2);
    assert_eq!(digests[0], digests[1]);
    let small_hash = format!("{{{p}}}:h");
    assert_eq!(raw.call(&["HSET", &small_hash, "f", "v"]), Reply::Int(1));
    // The node prints the listpack to its log; a node without the key would have refused.
    assert!(matches!(
        raw.call(&["DEBUG", "LISTPACK", &small_hash]),
        Reply::Simple(_)
    ));
    assert_eq!(
        raw.call(&["DEBUG", "DIGEST-VALUE", &a, &format!("{p}:elsewhere")])
            .error(),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    assert_eq!(raw.call(&["DEBUG", "PROTOCOL", "true"]), Reply::Int(1));
    assert_eq!(
        raw.call(&["DEBUG", "PROTOCOL", "bignum"]),
        Reply::Bulk(Some(b"1234567999999999999999999999999999999".to_vec()))
    );
    assert_eq!(
        raw.call(&["DEBUG", "SLEEP", "0"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        raw.call(&["PING", "x", "y", "z"]).error(),
        "ERR wrong number of arguments for 'ping' command"
    );
    assert_eq!(raw.call(&["PING", "x"]), Reply::Bulk(Some(b"x".to_vec())));
}

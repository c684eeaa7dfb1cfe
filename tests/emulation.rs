//! Cross-slot emulation (`cross_slot = "emulate"`): commands over keys in different slots give
//! what one Redis gives. The oracle is a plain `redis-server` started here: every scenario
//! runs the same commands on it and through the proxy, and the replies must be equal (set
//! replies compared as sets: their order is Redis's hash table order). With `refuse` the
//! cluster's CROSSSLOT stays, and same-slot commands never go through emulation.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{
    local_keyslot, pick_node_port, shared, spawn, start_proxy_configured, try_query, unique_prefix,
    wait_until,
};
use slotproxy::config::CrossSlot;

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// One `redis-server` without cluster mode: the single Redis the proxy must behave like.
struct Oracle {
    port: u16,
    child: Child,
}

impl Oracle {
    fn start() -> Oracle {
        let port = pick_node_port();
        let mut command = Command::new(common::server_program());
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--logfile", ""])
            .stdout(std::process::Stdio::null());
        let child = spawn(command).unwrap_or_else(|e| panic!("start redis-server: {e}"));
        wait_until("the oracle answers PING", Duration::from_secs(10), || {
            try_query::<String>(port, &["PING"])
        });
        Oracle { port, child }
    }

    fn client(&self) -> RawClient {
        RawClient::connect(SocketAddr::from(([127, 0, 0, 1], self.port)))
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proxy (emulating unless told otherwise) and the oracle, driven side by side.
struct Pair {
    proxy: RawClient,
    oracle: RawClient,
    _server: slotproxy::Proxy,
    admin: SocketAddr,
}

fn pair(oracle: &Oracle, mode: CrossSlot) -> Pair {
    let cluster = shared();
    let server = start_proxy_configured(vec![cluster.seed_url()], |c| c.admin.cross_slot = mode);
    Pair {
        proxy: RawClient::connect(server.local_addr()),
        oracle: oracle.client(),
        admin: server.admin_addr().expect("admin listener"),
        _server: server,
    }
}

/// Sorts the elements of array replies (set replies in hash-table order).
fn as_set(reply: Reply) -> Reply {
    match reply {
        Reply::Array(Some(mut items)) | Reply::Set(mut items) => {
            items.sort_by_key(|r| format!("{r:?}"));
            Reply::Array(Some(items))
        }
        other => other,
    }
}

impl Pair {
    /// Runs `args` on both; the replies must be equal. Returns the proxy's.
    fn same(&mut self, args: &[&str]) -> Reply {
        let want = self.oracle.call(args);
        let got = self.proxy.call(args);
        assert_eq!(got, want, "{args:?}");
        got
    }

    /// Like `same`, comparing the elements as a set.
    fn same_set(&mut self, args: &[&str]) -> Reply {
        let want = as_set(self.oracle.call(args));
        let got = as_set(self.proxy.call(args));
        assert_eq!(got, want, "{args:?}");
        got
    }

    fn emulated(&self, command: &str) -> u64 {
        let (_, text) = common::http::get(self.admin, "/metrics");
        let series = format!("slotproxy_emulated_commands_total{{command=\"{command}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse().unwrap_or(0))
    }
}

/// `n` key names under `prefix` in `n` different slots.
fn keys(prefix: &str, names: &[&str]) -> Vec<String> {
    let keys: Vec<String> = names.iter().map(|n| format!("{prefix}:{n}")).collect();
    let mut slots: Vec<u16> = keys.iter().map(|k| local_keyslot(k.as_bytes())).collect();
    slots.sort_unstable();
    slots.dedup();
    assert_eq!(
        slots.len(),
        keys.len(),
        "{keys:?} should be in different slots"
    );
    keys
}

#[test]
fn set_algebra_across_slots_matches_one_redis() {
    let oracle = Oracle::start();
    let mut p = pair(&oracle, CrossSlot::Emulate);
    let k = keys(&unique_prefix("sets"), &["a", "b", "c", "d", "s", "n"]);
    let (a, b, c, d, s, missing) = (&k[0], &k[1], &k[2], &k[3], &k[4], &k[5]);
    p.same(&["SADD", a, "1", "2", "3", "x", "y"]);
    p.same(&["SADD", b, "2", "3", "4", "y"]);
    p.same(&["SADD", c, "3", "y", "z"]);
    p.same(&["SET", s, "string"]);
    let before = p.emulated("sinter");
    p.same_set(&["SINTER", a, b, c]);
    p.same_set(&["SUNION", a, b, c, missing]);
    p.same_set(&["SDIFF", a, b, missing]);
    p.same_set(&["SINTER", a, missing]);
    p.same(&["SINTERCARD", "3", a, b, c]);
    p.same(&["SINTERCARD", "2", a, b, "LIMIT", "1"]);
    p.same(&["SUNIONSTORE", d, a, b, c]);
    p.same_set(&["SMEMBERS", d]);
    p.same(&["SINTERSTORE", d, a, b]);
    p.same_set(&["SMEMBERS", d]);
    p.same(&["SDIFFSTORE", d, a, b, c]);
    p.same_set(&["SMEMBERS", d]);
    // An empty result deletes the destination.
    p.same(&["SINTERSTORE", d, a, missing]);
    p.same(&["EXISTS", d]);
    // Errors are Redis's own.
    p.same(&["SINTER", a, s]);
    p.same(&["SUNIONSTORE", d, a, s]);
    p.same(&["SINTERCARD", "2", a, b, "LIMIT", "-1"]);
    assert!(p.emulated("sinter") >= before + 2);
}

#[test]
fn sorted_set_algebra_across_slots_matches_one_redis() {
    let oracle = Oracle::start();
    let mut p = pair(&oracle, CrossSlot::Emulate);
    let k = keys(&unique_prefix("zsets"), &["a", "b", "c", "d", "s"]);
    let (a, b, c, d, s) = (&k[0], &k[1], &k[2], &k[3], &k[4]);
    p.same(&["ZADD", a, "1", "one", "2", "two", "3", "three"]);
    p.same(&["ZADD", b, "10", "two", "20", "three", "30", "four"]);
    p.same(&["SADD", c, "one", "four"]);
    p.same(&["SET", s, "x"]);
    p.same(&["ZUNION", "3", a, b, c, "WITHSCORES"]);
    p.same(&[
        "ZINTER",
        "2",
        a,
        b,
        "WEIGHTS",
        "2",
        "0.5",
        "AGGREGATE",
        "MAX",
        "WITHSCORES",
    ]);
    p.same(&["ZDIFF", "2", a, b, "WITHSCORES"]);
    p.same(&["ZINTERCARD", "2", a, b]);
    p.same(&["ZUNIONSTORE", d, "3", a, b, c, "AGGREGATE", "MIN"]);
    p.same(&["ZRANGE", d, "0", "-1", "WITHSCORES"]);
    p.same(&["ZINTERSTORE", d, "2", a, b]);
    p.same(&["ZRANGE", d, "0", "-1", "WITHSCORES"]);
    p.same(&["ZDIFFSTORE", d, "2", b, a]);
    p.same(&["ZRANGE", d, "0", "-1", "WITHSCORES"]);
    p.same(&["ZRANGESTORE", d, a, "1", "2", "BYSCORE", "LIMIT", "0", "1"]);
    p.same(&["ZRANGE", d, "0", "-1", "WITHSCORES"]);
    p.same(&["ZUNIONSTORE", d, "2", a, s]);
    p.same(&["ZUNION", "2", a, b, "AGGREGATE", "NOPE"]);
}

#[test]
fn hyperloglog_bitop_and_geo_across_slots_match_one_redis() {
    let oracle = Oracle::start();
    let mut p = pair(&oracle, CrossSlot::Emulate);
    let k = keys(
        &unique_prefix("misc"),
        &["h1", "h2", "hd", "b1", "b2", "bd", "g", "gd", "s"],
    );
    p.same(&["PFADD", &k[0], "a", "b", "c", "d"]);
    p.same(&["PFADD", &k[1], "c", "d", "e"]);
    p.same(&["SET", &k[8], "not a hll"]);
    p.same(&["PFCOUNT", &k[0], &k[1]]);
    p.same(&["PFMERGE", &k[2], &k[0], &k[1]]);
    p.same(&["PFCOUNT", &k[2]]);
    p.same(&["PFCOUNT", &k[0], &k[8]]);
    p.same(&["SET", &k[3], "foobar"]);
    p.same(&["SET", &k[4], "abcdef"]);
    p.same(&["BITOP", "AND", &k[5], &k[3], &k[4]]);
    p.same(&["GET", &k[5]]);
    p.same(&["BITOP", "XOR", &k[5], &k[3], &k[4], &k[2]]);
    p.same(&["GET", &k[5]]);
    p.same(&[
        "GEOADD",
        &k[6],
        "13.361389",
        "38.115556",
        "Palermo",
        "15.087269",
        "37.502669",
        "Catania",
    ]);
    p.same(&["GEORADIUS", &k[6], "15", "37", "200", "km", "STORE", &k[7]]);
    p.same(&["ZRANGE", &k[7], "0", "-1", "WITHSCORES"]);
    p.same(&[
        "GEORADIUSBYMEMBER",
        &k[6],
        "Palermo",
        "300",
        "km",
        "STOREDIST",
        &k[7],
    ]);
    p.same(&["ZRANGE", &k[7], "0", "-1", "WITHSCORES"]);
    p.same(&[
        "GEOSEARCHSTORE",
        &k[7],
        &k[6],
        "FROMLONLAT",
        "15",
        "37",
        "BYRADIUS",
        "100",
        "km",
        "ASC",
    ]);
    p.same(&["ZRANGE", &k[7], "0", "-1", "WITHSCORES"]);
    p.same(&["LCS", &k[3], &k[4]]);
}

/// The emulation metric is the process's, shared by every proxy of this test binary: tests
/// that emulate RENAME take turns, so the one that counts them sees only its own.
static RENAME_METRIC: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn counting_renames() -> std::sync::MutexGuard<'static, ()> {
    RENAME_METRIC.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn rename_copy_and_moves_across_slots_match_one_redis() {
    let _turn = counting_renames();
    let oracle = Oracle::start();
    let mut p = pair(&oracle, CrossSlot::Emulate);
    let k = keys(
        &unique_prefix("moves"),
        &["a", "b", "c", "l1", "l2", "s1", "s2", "str"],
    );
    let (a, b, c) = (&k[0], &k[1], &k[2]);
    // RENAME keeps the value, its type and its TTL, and removes the source.
    p.same(&["HSET", a, "f", "v", "g", "w"]);
    p.same(&["PEXPIRE", a, "100000"]);
    p.same(&["RENAME", a, b]);
    p.same(&["EXISTS", a]);
    p.same(&["HGETALL", b]);
    let ttl = p.proxy.call(&["PTTL", b]);
    assert!(
        matches!(ttl, Reply::Int(t) if t > 90_000 && t <= 100_000),
        "{ttl:?}"
    );
    p.same(&["RENAME", a, b]);
    // RENAME over an existing key of another type replaces it.
    p.same(&["SET", c, "old"]);
    p.same(&["RENAME", b, c]);
    p.same(&["TYPE", c]);
    p.same(&["RENAMENX", a, b]);
    p.same(&["SET", a, "1"]);
    p.same(&["RENAMENX", a, c]);
    p.same(&["RENAMENX", a, b]);
    p.same(&["MGET", a, b]);
    // COPY: nothing without REPLACE onto an existing key; TTL copied.
    p.same(&["COPY", b, c]);
    p.same(&["COPY", b, c, "REPLACE"]);
    p.same(&["GET", c]);
    p.same(&["COPY", a, c]);
    p.same(&["COPY", b, a, "BOGUS"]);
    p.same(&["COPY", b, a]);
    p.same(&["GET", a]);
    p.same(&["COPY", c, a, "DB", "0", "REPLACE"]);
    p.same(&["COPY", c, a, "DB", "x"]);
    p.same(&["TYPE", a]);
    // SMOVE.
    let (s1, s2, st) = (&k[5], &k[6], &k[7]);
    p.same(&["SADD", s1, "m", "n"]);
    p.same(&["SET", st, "x"]);
    p.same(&["SMOVE", s1, s2, "m"]);
    p.same(&["SMOVE", s1, s2, "zz"]);
    p.same(&["SMOVE", "nosuchset", s2, "m"]);
    p.same(&["SMOVE", s1, st, "n"]);
    p.same(&["SMOVE", st, s2, "n"]);
    p.same(&["SMOVE", "nosuchset", st, "n"]);
    p.same_set(&["SMEMBERS", s1]);
    p.same_set(&["SMEMBERS", s2]);
    // LMOVE / RPOPLPUSH.
    let (l1, l2) = (&k[3], &k[4]);
    p.same(&["RPUSH", l1, "a", "b", "c"]);
    p.same(&["LMOVE", l1, l2, "LEFT", "RIGHT"]);
    p.same(&["RPOPLPUSH", l1, l2]);
    p.same(&["LMOVE", l1, l2, "RIGHT", "LEFT"]);
    p.same(&["LRANGE", l2, "0", "-1"]);
    p.same(&["EXISTS", l1]);
    p.same(&["LMOVE", l1, l2, "LEFT", "LEFT"]);
    p.same(&["RPOPLPUSH", l1, l2]);
    p.same(&["LMOVE", l2, st, "LEFT", "LEFT"]);
    p.same(&["LMOVE", st, l2, "LEFT", "LEFT"]);
    p.same(&["LMOVE", l2, l1, "UP", "LEFT"]);
    p.same(&["LRANGE", l2, "0", "-1"]);
}

#[test]
fn msetnx_across_slots_sets_all_or_nothing() {
    let oracle = Oracle::start();
    let mut p = pair(&oracle, CrossSlot::Emulate);
    let k = keys(&unique_prefix("msetnx"), &["a", "b", "c", "d"]);
    p.same(&["MSETNX", &k[0], "1", &k[1], "2", &k[2], "3"]);
    p.same(&["MGET", &k[0], &k[1], &k[2]]);
    p.same(&["MSETNX", &k[3], "4", &k[1], "x"]);
    p.same(&["MGET", &k[3], &k[1]]);
    p.same(&["MSETNX", &k[3], "4", &k[1]]);
}

#[test]
fn sort_with_by_and_get_patterns_matches_one_redis() {
    let oracle = Oracle::start();
    let mut p = pair(&oracle, CrossSlot::Emulate);
    let prefix = unique_prefix("sort");
    let ids = format!("{prefix}:ids");
    let set = format!("{prefix}:set");
    let dest = format!("{prefix}:dest");
    let by = format!("{prefix}:w_*");
    let name = format!("{prefix}:o_*->name");
    let string = format!("{prefix}:v_*");
    p.same(&["RPUSH", &ids, "3", "1", "2", "10", "5"]);
    p.same(&["SADD", &set, "b", "a", "c"]);
    for (id, w) in [("3", "0.5"), ("1", "20"), ("2", "-3"), ("10", "20")] {
        p.same(&["SET", &format!("{prefix}:w_{id}"), w]);
        p.same(&[
            "HSET",
            &format!("{prefix}:o_{id}"),
            "name",
            &format!("obj{id}"),
        ]);
    }
    p.same(&["SET", &format!("{prefix}:v_a"), "va"]);
    p.same(&["HSET", &format!("{prefix}:v_b"), "f", "hash, not string"]);
    p.same(&["SORT", &ids, "BY", &by]);
    p.same(&["SORT", &ids, "BY", &by, "DESC", "GET", "#", "GET", &name]);
    p.same(&[
        "SORT", &ids, "BY", &by, "LIMIT", "1", "3", "GET", &name, "GET", "#",
    ]);
    p.same(&["SORT", &ids, "BY", &by, "ALPHA"]);
    p.same(&["SORT", &ids, "BY", &by, "ALPHA", "DESC", "LIMIT", "0", "2"]);
    p.same(&["SORT", &ids, "GET", &name, "GET", "#"]);
    p.same(&["SORT", &ids, "BY", "nosort", "GET", &name]);
    p.same(&["SORT_RO", &ids, "BY", &by, "GET", &name]);
    p.same(&["SORT", &ids, "BY", &name, "ALPHA", "DESC"]);
    p.same(&["SORT", &ids, "BY", &name, "GET", &by]);
    p.same(&["SORT", &set, "ALPHA", "GET", &string, "GET", "#"]);
    p.same(&["SORT", &set, "BY", "nosort", "GET", &string, "STORE", &dest]);
    p.same(&["LRANGE", &dest, "0", "-1"]);
    p.same(&["SORT", &ids, "BY", &by, "GET", &name, "STORE", &dest]);
    p.same(&["LRANGE", &dest, "0", "-1"]);
    p.same(&["SORT", &ids, "STORE", &dest]);
    p.same(&["LRANGE", &dest, "0", "-1"]);
    p.same(&["SORT", "nosuchlist", "BY", &by, "STORE", &dest]);
    p.same(&["EXISTS", &dest]);
    // Errors as one Redis gives them.
    p.same(&["SET", &format!("{prefix}:w_5"), "not a number"]);
    p.same(&["SORT", &ids, "BY", &by]);
    p.same(&["SORT", &ids, "BY", &by, "GET"]);
    p.same(&["SORT", &ids, "LIMIT", "x", "1", "GET", "#"]);
    p.same(&["SORT", &format!("{prefix}:v_a"), "BY", &by]);
    p.same(&["SORT_RO", &ids, "GET", "#", "STORE", &dest]);
}

#[test]
fn resp3_clients_get_resp3_nulls() {
    let oracle = Oracle::start();
    let mut p = pair(&oracle, CrossSlot::Emulate);
    // HELLO's replies differ (server name, version): only the protocol matters here.
    p.proxy.call(&["HELLO", "3"]);
    p.oracle.call(&["HELLO", "3"]);
    let k = keys(&unique_prefix("resp3"), &["a", "b", "ids"]);
    p.same(&["LMOVE", &k[0], &k[1], "LEFT", "LEFT"]);
    p.same(&["RPUSH", &k[2], "1", "2"]);
    p.same(&[
        "SORT",
        &k[2],
        "GET",
        &format!("{}:nothing_*", k[0]),
        "GET",
        "#",
    ]);
    p.same(&["SADD", &k[0], "x"]);
    p.same_set(&["SUNION", &k[0], &k[1]]);
}

#[test]
fn refuse_keeps_crossslot_and_same_slot_commands_are_not_emulated() {
    let _turn = counting_renames();
    let cluster = shared();
    let prefix = unique_prefix("refuse");
    let (a, b) = (format!("{prefix}:a"), format!("{prefix}:b"));
    assert_ne!(local_keyslot(a.as_bytes()), local_keyslot(b.as_bytes()));
    let refusing = start_proxy_configured(vec![cluster.seed_url()], |_| {});
    let mut raw = RawClient::connect(refusing.local_addr());
    assert_eq!(raw.call(&["SET", &a, "1"]), Reply::Simple("OK".into()));
    assert_eq!(raw.call(&["RENAME", &a, &b]).error(), CROSSSLOT);
    assert_eq!(raw.call(&["SUNION", &a, &b]).error(), CROSSSLOT);
    // The node's own words (Valkey 8 adds why: "... when keys formed by the pattern may be
    // in different slots.").
    let sort = raw.call(&["SORT", &a, "BY", "w_*"]);
    assert!(
        sort.error()
            .starts_with("ERR BY option of SORT denied in Cluster mode"),
        "{sort:?}"
    );

    let emulating = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.admin.cross_slot = CrossSlot::Emulate
    });
    let admin = emulating.admin_addr().unwrap();
    let metric = |command: &str| {
        let (_, text) = common::http::get(admin, "/metrics");
        let series = format!("slotproxy_emulated_commands_total{{command=\"{command}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap_or(0))
    };
    let mut raw = RawClient::connect(emulating.local_addr());
    let before = metric("rename");
    let (t1, t2) = (format!("{{{prefix}}}1"), format!("{{{prefix}}}2"));
    assert_eq!(raw.call(&["SET", &t1, "v"]), Reply::Simple("OK".into()));
    assert_eq!(raw.call(&["RENAME", &t1, &t2]), Reply::Simple("OK".into()));
    assert_eq!(
        metric("rename"),
        before,
        "a same-slot RENAME is not emulated"
    );
    assert_eq!(raw.call(&["RENAME", &a, &b]), Reply::Simple("OK".into()));
    assert_eq!(metric("rename"), before + 1);
    assert_eq!(raw.call(&["GET", &b]), Reply::Bulk(Some(b"1".to_vec())));
    // Inside MULTI nothing is emulated: it could not be atomic.
    assert_eq!(raw.call(&["MULTI"]), Reply::Simple("OK".into()));
    assert_eq!(raw.call(&["RENAME", &b, &a]).error(), CROSSSLOT);
    assert!(raw.call(&["EXEC"]).error().starts_with("EXECABORT"));
    // Nor in a script.
    assert_eq!(
        raw.call(&[
            "EVAL",
            "return redis.call('RENAME', KEYS[1], KEYS[2])",
            "2",
            &b,
            &a
        ])
        .error(),
        CROSSSLOT
    );
    // Commands that are not emulated keep CROSSSLOT.
    assert_eq!(
        raw.call(&["BLMOVE", &b, &a, "LEFT", "LEFT", "0"]).error(),
        CROSSSLOT
    );
    // No temporary key is left behind.
    for port in cluster.primaries() {
        let keys: Vec<String> = common::query(port, &["KEYS", "*slotproxy:emulate:*"]);
        assert!(keys.is_empty(), "{port}: {keys:?}");
    }
}

/// A pipelined command after an emulated one waits for it, so it sees its effect, as on one
/// Redis (the emulation's steps would otherwise be overtaken by the next command).
#[test]
fn pipelined_commands_after_an_emulated_one_see_its_effect() {
    let _turn = counting_renames();
    let oracle = Oracle::start();
    let mut p = pair(&oracle, CrossSlot::Emulate);
    let k = keys(&unique_prefix("pipeline"), &["a", "b", "l1", "l2"]);
    let (a, b, l1, l2) = (&k[0], &k[1], &k[2], &k[3]);
    let script: Vec<Vec<&str>> = vec![
        vec!["SET", a, "1"],
        vec!["RENAME", a, b],
        vec!["GET", b],
        vec!["EXISTS", a],
        vec!["RPUSH", l1, "x", "y", "z"],
        vec!["RPOPLPUSH", l1, l2],
        vec!["RPOPLPUSH", l1, l2],
        vec!["LRANGE", l2, "0", "-1"],
        vec!["RENAME", b, a],
        vec!["RENAME", a, b],
        vec!["MGET", a, b],
    ];
    let mut bytes = Vec::new();
    for args in &script {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        bytes.extend(common::raw::encode(&args));
    }
    p.proxy.send_raw(&bytes);
    p.oracle.send_raw(&bytes);
    for args in &script {
        let want = p.oracle.read_reply();
        assert_eq!(p.proxy.read_reply(), want, "{args:?}");
    }

    // The same from a client that half-closes right after sending: everything behind an
    // emulated command is still carried out and answered, then the connection closes.
    let again: Vec<Vec<&str>> = vec![
        vec!["RENAME", b, a],
        vec!["GET", a],
        vec!["RENAME", a, b],
        vec!["EXISTS", a, b],
    ];
    let mut bytes = Vec::new();
    for args in &again {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        bytes.extend(common::raw::encode(&args));
    }
    let mut leaving = RawClient::connect(p._server.local_addr());
    leaving.send_raw(&bytes);
    leaving.shutdown_write();
    p.oracle.send_raw(&bytes);
    for args in &again {
        let want = p.oracle.read_reply();
        assert_eq!(leaving.read_reply(), want, "{args:?}");
    }
    leaving
        .is_closed_by_server()
        .expect("closed after the last reply");
}

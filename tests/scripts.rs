//! Scripts through the proxy: a script loaded once runs for keys on every shard, and a node
//! that lost its script cache (a promoted replica after a failover: script caches are not
//! replicated) is repaired by the proxy, which remembers the bodies it has seen. SCRIPT KILL
//! reaches the node that runs a busy script, whichever node that is.

mod common;

use common::raw::{RawClient, Reply};
use common::{
    local_keyslot, query, shared, start_proxy, try_query, unique_prefix, wait_until, Cluster,
    CLUSTER_DEADLINE,
};

#[test]
fn evalsha_survives_a_node_that_forgot_the_script() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("noscript");
    let mut raw = RawClient::connect(proxy.local_addr());

    let loaded_body = format!("return 'loaded-{p}'");
    let sha = raw.call(&["SCRIPT", "LOAD", &loaded_body]).text();
    let eval_body = format!("return redis.call('GET', KEYS[1]) .. '-{p}'");
    let key = format!("{p}:k");
    assert_eq!(raw.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
    assert_eq!(
        raw.call(&["EVAL", &eval_body, "1", &key]).text(),
        format!("v-{p}")
    );
    let eval_sha: String = query(cluster.primaries()[0], &["SCRIPT", "LOAD", &eval_body]);

    // Every primary forgets every script, as promoted replicas would.
    for port in cluster.primaries() {
        let _: String = query(port, &["SCRIPT", "FLUSH"]);
    }
    let owner = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
    let exists: Vec<i64> = query(owner, &["SCRIPT", "EXISTS", &eval_sha]);
    assert_eq!(
        exists,
        vec![0],
        "the flush must have removed the script from {owner}"
    );

    // Keys on every shard: each node gets the body again from the proxy.
    for i in 0..30 {
        let k = format!("{p}:spread:{i}");
        assert_eq!(
            raw.call(&["EVALSHA", &sha, "1", &k]).text(),
            format!("loaded-{p}")
        );
    }
    assert_eq!(
        raw.call(&["EVALSHA", &eval_sha, "1", &key]).text(),
        format!("v-{p}")
    );
    assert_eq!(
        raw.call(&["EVALSHA_RO", &eval_sha, "1", &key]).text(),
        format!("v-{p}")
    );

    // A script the proxy never saw still gets Redis's own answer.
    let unknown = "0123456789012345678901234567890123456789";
    let err = raw.call(&["EVALSHA", unknown, "1", &key]);
    assert!(err.error().starts_with("NOSCRIPT"), "{err:?}");
}

/// Waits until `port` answers a direct PING with BUSY: a script runs there past the busy
/// threshold.
fn wait_busy(port: u16) {
    wait_until(
        "the node is busy with the script",
        CLUSTER_DEADLINE,
        || match try_query::<String>(port, &["PING"]) {
            Err(e) if e.contains("BUSY") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// Whether `reply` holds the bulk string `text`, at any depth.
fn mentions(reply: &Reply, text: &str) -> bool {
    match reply {
        Reply::Bulk(Some(bytes)) => bytes == text.as_bytes(),
        Reply::Array(Some(items)) => items.iter().any(|item| mentions(item, text)),
        _ => false,
    }
}

/// A busy script holds back its own node and nothing else, as one server's script holds back
/// that server: other clients' commands for that node get BUSY at once (the shared pipe is not
/// stuck behind the script), other nodes answer as usual, PING answers BUSY as one server's
/// would, FUNCTION STATS shows the running function, and SCRIPT KILL / FUNCTION KILL reach the
/// node that runs it, whichever that is.
#[test]
fn a_busy_script_holds_back_only_its_own_node() {
    let cluster = Cluster::start(3, 0);
    // Nodes answer other connections (BUSY, SCRIPT KILL) 100 ms into a script, not 5 s.
    for &port in &cluster.primaries() {
        let _: String = query(port, &["CONFIG", "SET", "busy-reply-threshold", "100"]);
    }
    let proxy = start_proxy(&cluster);
    let (busy_key, other_key) = cluster.names_on_two_primaries(&unique_prefix("busy"));
    let busy_node = cluster.primary_for_slot(local_keyslot(busy_key.as_bytes()));
    let mut other = RawClient::connect(proxy.local_addr());

    // A read-only script (killable) that never ends, on the node of `busy_key`.
    let mut runner = RawClient::connect(proxy.local_addr());
    let spin = "redis.call('GET', KEYS[1]) while true do end";
    runner.send(&[b"EVAL", spin.as_bytes(), b"1", busy_key.as_bytes()]);
    wait_busy(busy_node);
    assert!(other.call(&["GET", &busy_key]).error().starts_with("BUSY"));
    assert_eq!(
        other.call(&["SET", &other_key, "v"]),
        Reply::Simple("OK".into())
    );
    assert!(other.call(&["PING"]).error().starts_with("BUSY"));
    assert_eq!(other.call(&["SCRIPT", "KILL"]), Reply::Simple("OK".into()));
    let killed = runner.read_reply();
    assert!(killed.error().contains("killed"), "{killed:?}");
    // Nothing is busy any more: the next kill finds no script, and the runner goes on.
    let again = other.call(&["SCRIPT", "KILL"]);
    assert!(again.error().starts_with("NOTBUSY"), "{again:?}");
    assert_eq!(runner.call(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(other.call(&["PING"]), Reply::Simple("PONG".into()));

    // The same for a function, pipelined behind its FUNCTION LOAD (so on the shared pipe).
    let library = "#!lua name=spinlib\nredis.register_function{function_name='spin', \
                   callback=function(keys) redis.call('GET', keys[1]) while true do end end, \
                   flags={'no-writes'}}";
    let mut pipelined = Vec::new();
    for args in [
        vec![
            b"FUNCTION".as_slice(),
            b"LOAD",
            b"REPLACE",
            library.as_bytes(),
        ],
        vec![b"FCALL", b"spin", b"1", busy_key.as_bytes()],
    ] {
        pipelined.extend_from_slice(&common::raw::encode(&args));
    }
    runner.send_raw(&pipelined);
    wait_busy(busy_node);
    assert!(other.call(&["PING"]).error().starts_with("BUSY"));
    let stats = other.call(&["FUNCTION", "STATS"]);
    assert!(mentions(&stats, "spin"), "{stats:?}");
    assert_eq!(
        other.call(&["FUNCTION", "KILL"]),
        Reply::Simple("OK".into())
    );
    // As from one server, the load's reply comes with the function's: a node writes nothing
    // to a connection while a script of that connection runs.
    assert_eq!(runner.read_reply().text(), "spinlib");
    let killed = runner.read_reply();
    assert!(killed.error().contains("killed"), "{killed:?}");
    assert_eq!(other.call(&["GET", &busy_key]), Reply::Bulk(None));

    // A script whose client hangs up is killed: nobody waits for it, and it would keep the
    // node busy for everyone else.
    let mut leaver = RawClient::connect(proxy.local_addr());
    leaver.send(&[b"EVAL", spin.as_bytes(), b"1", busy_key.as_bytes()]);
    wait_busy(busy_node);
    drop(leaver);
    wait_until(
        "the abandoned script is killed",
        CLUSTER_DEADLINE,
        || match try_query::<String>(busy_node, &["PING"]) {
            Ok(pong) if pong == "PONG" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(other.call(&["PING"]), Reply::Simple("PONG".into()));

    // SCRIPT EXISTS and SCRIPT FLUSH as one server: a keyless EVAL is cached on one node but
    // runs anywhere through the proxy, so it exists; after a flush it is gone everywhere,
    // the proxy's own memory of it included (no repair of NOSCRIPT).
    let body = "return 'cached'";
    let sha = sha1_smol::Sha1::from(body).digest().to_string();
    assert_eq!(other.call(&["EVAL", body, "0"]).text(), "cached");
    let unknown = "0000000000000000000000000000000000000000";
    assert_eq!(
        other.call(&["SCRIPT", "EXISTS", &sha, unknown]),
        Reply::Array(Some(vec![Reply::Int(1), Reply::Int(0)]))
    );
    assert_eq!(other.call(&["SCRIPT", "FLUSH"]), Reply::Simple("OK".into()));
    let flushed = other.call(&["EVALSHA", &sha, "0"]);
    assert!(flushed.error().starts_with("NOSCRIPT"), "{flushed:?}");
    assert_eq!(
        other.call(&["SCRIPT", "EXISTS", &sha]),
        Reply::Array(Some(vec![Reply::Int(0)]))
    );
}

/// A script waits for the client's earlier commands and holds back its later ones, on
/// whichever connection it runs: pipelined, every reply is what one server gives.
#[test]
fn scripts_keep_their_place_in_a_pipeline() {
    let proxy = start_proxy(shared());
    let key = format!("{}:k", unique_prefix("script-order"));
    let get = "return redis.call('GET', KEYS[1])";
    let set = "return redis.call('SET', KEYS[1], ARGV[1])";
    let mut raw = RawClient::connect(proxy.local_addr());
    let mut pipelined = Vec::new();
    for round in 0..20 {
        let value = format!("v{round}");
        for args in [
            vec!["SET", &key, &value],
            vec!["EVAL", get, "1", &key],
            vec!["EVAL", set, "1", &key, "by-script"],
            vec!["GET", &key],
        ] {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            pipelined.extend_from_slice(&common::raw::encode(&args));
        }
    }
    raw.send_raw(&pipelined);
    for round in 0..20 {
        assert_eq!(raw.read_reply(), Reply::Simple("OK".into()));
        assert_eq!(raw.read_reply().text(), format!("v{round}"));
        assert_eq!(raw.read_reply(), Reply::Simple("OK".into()));
        assert_eq!(raw.read_reply().text(), "by-script");
    }
    // A function called right behind its load, in one pipeline: the load reached every
    // primary first.
    let name = unique_prefix("lib").replace([':', '-'], "_");
    let library = format!(
        "#!lua name={name}\nredis.register_function{{function_name='{name}_get', \
         callback=function(keys) return redis.call('GET', keys[1]) end, flags={{'no-writes'}}}}"
    );
    let fcall_name = format!("{name}_get");
    let mut pipelined = common::raw::encode(&[b"FUNCTION", b"LOAD", library.as_bytes()]);
    pipelined.extend_from_slice(&common::raw::encode(&[
        b"FCALL_RO",
        fcall_name.as_bytes(),
        b"1",
        key.as_bytes(),
    ]));
    raw.send_raw(&pipelined);
    assert_eq!(raw.read_reply().text(), name);
    assert_eq!(raw.read_reply().text(), "by-script");
    assert_eq!(
        raw.call(&["FUNCTION", "DELETE", &name]),
        Reply::Simple("OK".into())
    );

    // One at a time too (each script then runs on a connection of its own).
    for round in 0..5 {
        let value = format!("w{round}");
        assert_eq!(raw.call(&["SET", &key, &value]), Reply::Simple("OK".into()));
        assert_eq!(raw.call(&["EVAL", get, "1", &key]).text(), value);
        let missing = raw.call(&["FCALL_RO", "no-such-function", "1", &key]);
        assert!(missing.error().starts_with("ERR"), "{missing:?}");
    }
}

/// A script that declares no keys but touches one runs where that key lives, as on one
/// server: the node it first went to refuses it at that key before touching anything, and
/// the proxy runs it on the other primaries in turn. Keys on every shard are tried, EVAL,
/// EVALSHA and FCALL alike. A script that may have written before the refusal
/// (`allow-cross-slot-keys`) or that publishes is never run twice: it keeps the node's error.
#[test]
fn a_script_without_declared_keys_runs_where_its_key_lives() {
    let proxy = start_proxy(shared());
    let p = unique_prefix("undeclared");
    let mut raw = RawClient::connect(proxy.local_addr());
    let name = p.replace([':', '-'], "_");
    let library = format!(
        "#!lua name={name}\nredis.register_function('{name}_incr', \
         function(keys, args) return redis.call('INCR', args[1]) end)"
    );
    assert_eq!(raw.call(&["FUNCTION", "LOAD", &library]).text(), name);
    let incr = "return redis.call('INCR', ARGV[1])";
    let sha = raw.call(&["SCRIPT", "LOAD", incr]).text();
    let fcall = format!("{name}_incr");
    // 24 keys spread over the shards; each is incremented once by each form.
    for i in 0..24 {
        let key = format!("{p}:{i}");
        assert_eq!(raw.call(&["EVAL", incr, "0", &key]), Reply::Int(1), "{key}");
        assert_eq!(raw.call(&["EVALSHA", &sha, "0", &key]), Reply::Int(2));
        assert_eq!(raw.call(&["FCALL", &fcall, "0", &key]), Reply::Int(3));
        let read = raw.call(&["EVAL_RO", "return redis.call('GET', ARGV[1])", "0", &key]);
        assert_eq!(read.text(), "3");
        assert_eq!(raw.call(&["GET", &key]).text(), "3");
    }
    assert_eq!(
        raw.call(&["FUNCTION", "DELETE", &name]),
        Reply::Simple("OK".into())
    );
    // Nodes that forgot the script (SCRIPT FLUSH on each, as promoted replicas would have):
    // the body is loaded where NOSCRIPT came from, and the script still finds its key.
    for port in shared().primaries() {
        let _: String = query(port, &["SCRIPT", "FLUSH"]);
    }
    for i in 0..24 {
        let key = format!("{p}:{i}");
        assert_eq!(
            raw.call(&["EVALSHA", &sha, "0", &key]),
            Reply::Int(4),
            "{key}"
        );
    }

    // Never run twice: one of these keys lives elsewhere than where the script first runs,
    // so some tries fail, and when one does its key must still be untouched.
    let publishing = "redis.call('PUBLISH', 'undeclared-channel', 'm') \
                      return redis.call('INCR', ARGV[1])";
    let cross = "#!lua flags=allow-cross-slot-keys\nreturn redis.call('INCR', ARGV[1])";
    let mut refused = 0;
    for i in 0..24 {
        for body in [publishing, cross] {
            let key = format!("{p}:once:{i}:{}", body.len());
            match raw.call(&["EVAL", body, "0", &key]) {
                Reply::Int(1) => {}
                Reply::Error(e) => {
                    assert!(e.contains("non local key"), "{e}");
                    refused += 1;
                    assert_eq!(raw.call(&["GET", &key]), Reply::Bulk(None));
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(
        refused > 0,
        "with 3 primaries, some of 48 keys live elsewhere"
    );
}

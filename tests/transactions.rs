//! MULTI/EXEC/DISCARD and WATCH through the proxy: queued on the slot's owner as the client
//! queues (the node answers each command, OOM included), pinned to one slot; a concurrent
//! change to a watched key aborts EXEC, with keys of several slots of one node watched
//! together; a slot that moves while the client queues is followed.

mod common;

use common::raw::{RawClient, Reply};
use common::{local_keyslot, proxy_client, query, shared, start_proxy, unique_prefix, Cluster};

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn queued() -> Reply {
    Reply::Simple("QUEUED".into())
}

#[test]
fn multi_exec_runs_on_the_slot_owner_and_returns_execs_array() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("tx");
    let key = format!("{{{p}}}:counter");
    let mut raw = RawClient::connect(proxy.local_addr());
    assert_eq!(raw.call(&["MULTI"]), ok());
    assert_eq!(raw.call(&["SET", &key, "1"]), queued());
    assert_eq!(raw.call(&["INCR", &key]), queued());
    assert_eq!(raw.call(&["GET", &key]), queued());
    assert_eq!(raw.call(&["PING"]), queued());
    assert_eq!(
        raw.call(&["EXEC"]),
        Reply::Array(Some(vec![
            ok(),
            Reply::Int(2),
            bulk("2"),
            Reply::Simple("PONG".into())
        ]))
    );
    let owner = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
    assert_eq!(query::<String>(owner, &["GET", &key]), "2");
    // Back to normal: commands run at once again.
    assert_eq!(raw.call(&["GET", &key]), bulk("2"));

    // The redis crate's atomic pipeline (MULTI ... EXEC) works too.
    let mut con = proxy_client(&proxy);
    let (set, incr): (String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&key)
        .arg(10)
        .cmd("INCRBY")
        .arg(&key)
        .arg(5)
        .query(&mut con)
        .unwrap();
    assert_eq!((set.as_str(), incr), ("OK", 15));
}

#[test]
fn a_command_for_another_slot_is_refused_at_once_and_aborts_exec() {
    let proxy = start_proxy(shared());
    let p = unique_prefix("cross");
    let a = format!("{{{p}a}}:k");
    let b = (0..)
        .map(|i| format!("{{{p}b{i}}}:k"))
        .find(|b| local_keyslot(b.as_bytes()) != local_keyslot(a.as_bytes()))
        .unwrap();
    let mut raw = RawClient::connect(proxy.local_addr());
    assert_eq!(raw.call(&["MULTI"]), ok());
    assert_eq!(raw.call(&["SET", &a, "1"]), queued());
    assert_eq!(
        raw.call(&["SET", &b, "1"]).error(),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    assert_eq!(raw.call(&["EXEC"]).error(), EXECABORT);
    assert_eq!(
        raw.call(&["GET", &a]),
        Reply::Bulk(None),
        "nothing of an aborted transaction runs"
    );

    // Unknown commands and wrong arity abort too, as on a single Redis.
    for bad in [vec!["NOSUCHCOMMAND"], vec!["GET"]] {
        assert_eq!(raw.call(&["MULTI"]), ok());
        assert!(matches!(raw.call(&bad), Reply::Error(_)), "{bad:?}");
        assert_eq!(raw.call(&["SET", &a, "1"]), queued());
        assert_eq!(raw.call(&["EXEC"]).error(), EXECABORT);
    }
    assert_eq!(raw.call(&["GET", &a]), Reply::Bulk(None));
}

#[test]
fn errors_inside_exec_nesting_and_discard_behave_as_on_redis() {
    let proxy = start_proxy(shared());
    let p = unique_prefix("errors");
    let s = format!("{{{p}}}:string");
    let mut raw = RawClient::connect(proxy.local_addr());
    assert_eq!(raw.call(&["EXEC"]).error(), "ERR EXEC without MULTI");
    assert_eq!(raw.call(&["DISCARD"]).error(), "ERR DISCARD without MULTI");
    assert_eq!(raw.call(&["MULTI"]), ok());
    assert_eq!(
        raw.call(&["MULTI"]).error(),
        "ERR MULTI calls can not be nested"
    );
    assert_eq!(
        raw.call(&["WATCH", &s]).error(),
        "ERR WATCH inside MULTI is not allowed"
    );
    assert_eq!(raw.call(&["SET", &s, "text"]), queued());
    assert_eq!(raw.call(&["LPUSH", &s, "x"]), queued());
    assert_eq!(raw.call(&["APPEND", &s, "!"]), queued());
    let Reply::Array(Some(results)) = raw.call(&["EXEC"]) else {
        panic!("EXEC is not an array")
    };
    assert_eq!(results[0], ok());
    assert!(
        results[1].error().starts_with("WRONGTYPE"),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2], Reply::Int(5));

    assert_eq!(raw.call(&["MULTI"]), ok());
    assert_eq!(raw.call(&["SET", &s, "discarded"]), queued());
    assert_eq!(raw.call(&["DISCARD"]), ok());
    assert_eq!(raw.call(&["GET", &s]), bulk("text!"));
}

#[test]
fn watch_aborts_exec_when_another_client_changes_the_key() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("watch");
    let key = format!("{{{p}}}:balance");
    let mut alice = RawClient::connect(proxy.local_addr());
    let mut bob = RawClient::connect(proxy.local_addr());
    assert_eq!(alice.call(&["SET", &key, "100"]), ok());

    // Changed by someone else between WATCH and EXEC: EXEC answers a null array.
    assert_eq!(alice.call(&["WATCH", &key]), ok());
    assert_eq!(bob.call(&["SET", &key, "50"]), ok());
    assert_eq!(alice.call(&["MULTI"]), ok());
    assert_eq!(alice.call(&["SET", &key, "0"]), queued());
    assert_eq!(alice.call(&["EXEC"]), Reply::Array(None));
    assert_eq!(alice.call(&["GET", &key]), bulk("50"));

    // Unchanged: EXEC runs.
    assert_eq!(alice.call(&["WATCH", &key]), ok());
    assert_eq!(alice.call(&["MULTI"]), ok());
    assert_eq!(alice.call(&["DECRBY", &key, "20"]), queued());
    assert_eq!(
        alice.call(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Int(30)]))
    );

    // UNWATCH forgets the watch: a later change does not abort.
    assert_eq!(alice.call(&["WATCH", &key]), ok());
    assert_eq!(alice.call(&["UNWATCH"]), ok());
    assert_eq!(bob.call(&["SET", &key, "7"]), ok());
    assert_eq!(alice.call(&["MULTI"]), ok());
    assert_eq!(alice.call(&["INCR", &key]), queued());
    assert_eq!(
        alice.call(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Int(8)]))
    );

    // WATCH, MULTI and EXEC pipelined in one write: EXEC waits for its WATCH to land.
    let other = format!("{{{p}}}:other");
    alice.send(&[b"WATCH", key.as_bytes()]);
    alice.send(&[b"MULTI"]);
    alice.send(&[b"SET", other.as_bytes(), b"v"]);
    alice.send(&[b"EXEC"]);
    assert_eq!(alice.read_reply(), ok());
    assert_eq!(alice.read_reply(), ok());
    assert_eq!(alice.read_reply(), queued());
    assert_eq!(alice.read_reply(), Reply::Array(Some(vec![ok()])));

    // A transaction for a slot of another node than the watched keys' is refused.
    let watched_node = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
    let elsewhere = (0..)
        .map(|i| format!("{p}:elsewhere:{i}"))
        .find(|k| cluster.primary_for_slot(local_keyslot(k.as_bytes())) != watched_node)
        .unwrap();
    assert_eq!(alice.call(&["WATCH", &key]), ok());
    assert_eq!(alice.call(&["MULTI"]), ok());
    assert_eq!(
        alice.call(&["SET", &elsewhere, "1"]).error(),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    assert_eq!(alice.call(&["EXEC"]).error(), EXECABORT);
}

#[test]
fn exec_follows_a_slot_that_moved_while_the_client_queued() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let p = unique_prefix("moved");
    let key = format!("{{{p}}}:k");
    let slot = local_keyslot(key.as_bytes());
    let from = cluster.primary_for_slot(slot);
    let to = *cluster.primaries().iter().find(|&&x| x != from).unwrap();
    let mut raw = RawClient::connect(proxy.local_addr());
    assert_eq!(raw.call(&["SET", &key, "1"]), ok());
    assert_eq!(raw.call(&["MULTI"]), ok());
    assert_eq!(raw.call(&["INCR", &key]), queued());
    cluster.migrate_slot(slot, to);
    assert_eq!(raw.call(&["EXEC"]), Reply::Array(Some(vec![Reply::Int(2)])));
    assert_eq!(query::<String>(to, &["GET", &key]), "2");
}

/// The proxy of `cluster` with `--admin-commands` (CONFIG SET reaches every node).
fn admin_proxy(cluster: &Cluster) -> slotproxy::Proxy {
    common::start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.admin.commands = true;
    })
}

#[test]
fn the_node_answers_each_command_while_it_is_queued() {
    // Its own cluster: it runs out of memory on purpose.
    let cluster = Cluster::start(3, 0);
    let proxy = admin_proxy(&cluster);
    let p = unique_prefix("oom");
    let (a, b) = (format!("{{{p}}}:a"), format!("{{{p}}}:b"));
    let mut raw = RawClient::connect(proxy.local_addr());
    let mut admin = RawClient::connect(proxy.local_addr());

    // Out of memory before the command is queued: the node's OOM at once, and DISCARD works.
    assert_eq!(admin.call(&["CONFIG", "SET", "maxmemory", "1"]), ok());
    assert_eq!(raw.call(&["MULTI"]), ok());
    assert!(raw.call(&["SET", &a, "1"]).error().starts_with("OOM "));
    assert_eq!(raw.call(&["DISCARD"]), ok());

    // An error while queuing (the node's) aborts EXEC; nothing of it ran.
    assert_eq!(admin.call(&["CONFIG", "SET", "maxmemory", "0"]), ok());
    assert_eq!(raw.call(&["MULTI"]), ok());
    assert_eq!(raw.call(&["SET", &a, "1"]), queued());
    assert_eq!(admin.call(&["CONFIG", "SET", "maxmemory", "1"]), ok());
    assert!(raw.call(&["LPUSH", &b, "x"]).error().starts_with("OOM "));
    assert_eq!(admin.call(&["CONFIG", "SET", "maxmemory", "0"]), ok());
    assert_eq!(raw.call(&["SET", &b, "2"]), queued());
    assert_eq!(raw.call(&["EXEC"]).error(), EXECABORT);
    assert_eq!(raw.call(&["EXISTS", &a, &b]), Reply::Int(0));

    // Out of memory by EXEC: the node's EXECABORT names the reason; a read-only one runs.
    assert_eq!(raw.call(&["MULTI"]), ok());
    assert_eq!(raw.call(&["SET", &a, "1"]), queued());
    assert_eq!(admin.call(&["CONFIG", "SET", "maxmemory", "1"]), ok());
    let abort = raw.call(&["EXEC"]).error().to_string();
    assert!(
        abort.starts_with("EXECABORT") && abort.contains("OOM"),
        "{abort}"
    );
    assert_eq!(admin.call(&["CONFIG", "SET", "maxmemory", "0"]), ok());
    assert_eq!(raw.call(&["MULTI"]), ok());
    assert_eq!(raw.call(&["GET", &a]), queued());
    assert_eq!(raw.call(&["PING"]), queued());
    assert_eq!(admin.call(&["CONFIG", "SET", "maxmemory", "1"]), ok());
    assert_eq!(
        raw.call(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Bulk(None), Reply::Simple("PONG".into())]))
    );
    assert_eq!(admin.call(&["CONFIG", "SET", "maxmemory", "0"]), ok());
}

#[test]
fn keys_of_several_slots_of_one_node_can_be_watched_together() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("watchmany");
    let first = format!("{p}:0");
    let node = cluster.primary_for_slot(local_keyslot(first.as_bytes()));
    let same_node = |k: &String| cluster.primary_for_slot(local_keyslot(k.as_bytes())) == node;
    let others: Vec<String> = (1..)
        .map(|i| format!("{p}:{i}"))
        .filter(|k| local_keyslot(k.as_bytes()) != local_keyslot(first.as_bytes()))
        .filter(same_node)
        .take(2)
        .collect();
    let (second, third) = (&others[0], &others[1]);
    let mut alice = RawClient::connect(proxy.local_addr());
    let mut bob = RawClient::connect(proxy.local_addr());

    // One WATCH over two slots, then another WATCH: a change to any of them aborts EXEC.
    assert_eq!(alice.call(&["WATCH", &first, second]), ok());
    assert_eq!(alice.call(&["WATCH", third]), ok());
    assert_eq!(bob.call(&["SET", third, "changed"]), ok());
    assert_eq!(alice.call(&["MULTI"]), ok());
    assert_eq!(alice.call(&["SET", &first, "mine"]), queued());
    assert_eq!(alice.call(&["EXEC"]), Reply::Array(None));
    assert_eq!(alice.call(&["EXISTS", &first]), Reply::Int(0));

    // Unchanged: the transaction runs, on any of the watched slots.
    assert_eq!(alice.call(&["WATCH", &first, second, third]), ok());
    assert_eq!(alice.call(&["MULTI"]), ok());
    assert_eq!(alice.call(&["SET", second, "mine"]), queued());
    assert_eq!(alice.call(&["EXEC"]), Reply::Array(Some(vec![ok()])));
    assert_eq!(alice.call(&["GET", second]), bulk("mine"));

    // Keys of two nodes can't be checked by one node.
    let far = (1..)
        .map(|i| format!("{p}:far:{i}"))
        .find(|k| !same_node(k))
        .unwrap();
    assert_eq!(
        alice.call(&["WATCH", &first, &far]).error(),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    assert_eq!(alice.call(&["WATCH", &first]), ok());
    assert_eq!(
        alice.call(&["WATCH", &far]).error(),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    assert_eq!(alice.call(&["UNWATCH"]), ok());
}

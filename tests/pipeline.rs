//! Long pipelines over many slots: every reply comes back in request order with the value a
//! single Redis would have given, also with several clients pipelining at once. A pipeline's
//! replies go out together, but are never held for a blocking command or a later pipeline.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

use common::raw::{encode, RawClient, Reply};
use common::{
    local_keyslot, proxy_client, query, shared, start_proxy, tag_for_slot, unique_prefix,
};

/// Builds a pipeline of `n` SET/GET/INCR/MGET commands over 1,000 keys and 100 counters under
/// `prefix`, and the reply a single Redis server would give to each.
fn mixed_pipeline(prefix: &str, n: usize) -> (redis::Pipeline, Vec<Value>) {
    let key = |j: usize| format!("{prefix}:k{j}");
    let mut strings: HashMap<String, String> = HashMap::new();
    let mut counters: HashMap<String, i64> = HashMap::new();
    let mut pipe = redis::pipe();
    let mut expected = Vec::with_capacity(n);
    let bulk = |v: Option<&String>| match v {
        Some(v) => Value::BulkString(v.clone().into_bytes()),
        None => Value::Nil,
    };
    for i in 0..n {
        let k = key((i * 7919) % 1000);
        match i % 4 {
            0 => {
                let value = format!("v{i}");
                pipe.cmd("SET").arg(&k).arg(&value);
                strings.insert(k, value);
                expected.push(Value::Okay);
            }
            1 => {
                pipe.cmd("GET").arg(&k);
                expected.push(bulk(strings.get(&k)));
            }
            2 => {
                let c = format!("{prefix}:c{}", i % 100);
                pipe.cmd("INCR").arg(&c);
                let n = counters.entry(c).or_insert(0);
                *n += 1;
                expected.push(Value::Int(*n));
            }
            _ => {
                let ks = [k, key((i * 31) % 1000), key((i * 131 + 5) % 1000)];
                pipe.cmd("MGET").arg(&ks);
                expected.push(Value::Array(
                    ks.iter().map(|k| bulk(strings.get(k))).collect(),
                ));
            }
        }
    }
    (pipe, expected)
}

fn check_replies(got: &[Value], expected: &[Value]) {
    assert_eq!(got.len(), expected.len(), "number of replies");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g, e, "reply {i} of {}", expected.len());
    }
}

#[test]
fn twenty_thousand_pipelined_commands_come_back_in_order() {
    let proxy = start_proxy(shared());
    let mut con = proxy_client(&proxy);
    let (pipe, expected) = mixed_pipeline(&unique_prefix("pipeline"), 24_000);
    let got: Vec<Value> = pipe.query(&mut con).expect("pipeline through the proxy");
    check_replies(&got, &expected);
    // The connection is still in step afterwards.
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn concurrent_clients_pipelining_each_get_their_own_replies_in_order() {
    let proxy = start_proxy(shared());
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let proxy = &proxy;
                scope.spawn(move || {
                    let mut con = proxy_client(proxy);
                    for round in 0..3 {
                        let prefix = unique_prefix(&format!("concurrent-{t}-{round}"));
                        let (pipe, expected) = mixed_pipeline(&prefix, 5_000);
                        let got: Vec<Value> = pipe
                            .query(&mut con)
                            .unwrap_or_else(|e| panic!("client {t} round {round}: {e}"));
                        check_replies(&got, &expected);
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().expect("a pipelining client failed");
        }
    });
}

/// Two keys under `prefix` that live on different primaries.
fn keys_on_two_primaries(prefix: &str) -> (String, String) {
    let cluster = shared();
    let owner = cluster.primary_for_slot(100);
    let other = (0..16384u16)
        .step_by(1000)
        .find(|&slot| cluster.primary_for_slot(slot) != owner)
        .expect("a slot on another primary");
    let key = |slot| format!("{{{}}}k", tag_for_slot(slot, prefix));
    (key(100), key(other))
}

/// Holds writes for `ms` milliseconds on the primary that owns `key` (`CLIENT PAUSE` on the node
/// itself): a write to it through the proxy waits there as a plain request.
fn pause_writes_of(key: &str, ms: u32) {
    let node = shared().primary_for_slot(local_keyslot(key.as_bytes()));
    let _: () = query(node, &["CLIENT", "PAUSE", &ms.to_string(), "WRITE"]);
}

#[test]
fn a_pipelines_replies_go_out_together() {
    // The GET's node answers at once; the SET's node holds writes for 300 ms (CLIENT PAUSE on
    // the node itself, so the SET waits there as a plain request). The GET's reply waits for
    // the SET's, and the client gets both in one send, as from one Redis, not two.
    let proxy = start_proxy(shared());
    let (fast_key, slow_key) = keys_on_two_primaries(&unique_prefix("together"));
    let mut client = RawClient::connect(proxy.local_addr());
    assert_eq!(client.call(&["PING"]), Reply::Simple("PONG".into()));
    pause_writes_of(&slow_key, 300);
    let mut batch = encode(&[b"GET", fast_key.as_bytes()]);
    batch.extend(encode(&[b"SET", slow_key.as_bytes(), b"v"]));
    client.send_raw(&batch);
    assert_eq!(client.read_reply(), Reply::Bulk(None));
    assert!(
        !client.buffered().is_empty(),
        "the GET's reply came alone, before the SET's"
    );
    assert_eq!(client.read_reply(), Reply::Simple("OK".into()));
}

#[test]
fn replies_are_not_held_for_a_blocking_command() {
    // BLPOP may wait for ever: the SET's reply before it goes out at once, as Redis sends it.
    let proxy = start_proxy(shared());
    let tag = tag_for_slot(100, &unique_prefix("unheld"));
    let (key, list) = (format!("{{{tag}}}k"), format!("{{{tag}}}list"));
    let mut client = RawClient::connect(proxy.local_addr());
    let mut batch = encode(&[b"SET", key.as_bytes(), b"v"]);
    batch.extend(encode(&[b"BLPOP", list.as_bytes(), b"0"]));
    client.send_raw(&batch);
    assert_eq!(client.read_reply(), Reply::Simple("OK".into()));
    assert!(client.buffered().is_empty(), "BLPOP answered early");
    let mut other = RawClient::connect(proxy.local_addr());
    assert_eq!(other.call(&["RPUSH", &list, "x"]), Reply::Int(1));
    assert_eq!(
        client.read_reply(),
        Reply::Array(Some(vec![
            Reply::Bulk(Some(list.into_bytes())),
            Reply::Bulk(Some(b"x".to_vec())),
        ]))
    );
}

#[test]
fn a_complete_pipeline_is_not_held_for_the_next() {
    // Two one-command pipelines, each a SET waiting at its node (CLIENT PAUSE on the node):
    // the first for 300 ms, the second, sent 100 ms after it, for a second. The first reply is
    // out once its node answers, though the second pipeline is still at its node.
    let proxy = start_proxy(shared());
    let (first_key, second_key) = keys_on_two_primaries(&unique_prefix("next"));
    let mut client = RawClient::connect(proxy.local_addr());
    assert_eq!(client.call(&["PING"]), Reply::Simple("PONG".into()));
    pause_writes_of(&second_key, 1000);
    pause_writes_of(&first_key, 300);
    client.send(&[b"SET", first_key.as_bytes(), b"1"]);
    std::thread::sleep(Duration::from_millis(100));
    client.send(&[b"SET", second_key.as_bytes(), b"2"]);
    assert_eq!(client.read_reply(), Reply::Simple("OK".into()));
    assert!(
        client.buffered().is_empty(),
        "the first pipeline's reply waited for the second's"
    );
    assert_eq!(client.read_reply(), Reply::Simple("OK".into()));
}

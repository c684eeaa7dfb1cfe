//! Long pipelines over many slots: every reply comes back in request order with the value a
//! single Redis would have given, also with several clients pipelining at once.

mod common;

use std::collections::HashMap;

use redis::Value;

use common::{proxy_client, shared, start_proxy, unique_prefix};

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

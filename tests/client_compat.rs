//! Real client libraries through the proxy, with their default handshakes: the same scenario
//! (connect, SET/GET, pipeline, MULTI/EXEC, pub/sub, BLPOP, EVAL) driven by the Rust `redis`
//! crate, redis-py (PyPI) and ioredis (npm), in RESP2 and, where the library speaks it, RESP3.
//! scripts/install-deps.sh (run by the README's test command) installs redis-py and ioredis.

mod common;

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{run_with_timeout, shared, start_proxy, unique_prefix, CLUSTER_DEADLINE};

/// Runs an external scenario script and checks it said `scenario ok`.
fn run_scenario(program: &str, script: &str, args: &[String], install_hint: &str) {
    let mut command = Command::new(program);
    command.arg(script).args(args);
    let output = run_with_timeout(command, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("scenario ok"),
        "{script} failed ({install_hint})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

fn redis_py(protocol: u8) {
    let proxy = start_proxy(shared());
    run_scenario(
        "python3",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/scenario.py"),
        &[
            proxy.local_addr().port().to_string(),
            unique_prefix(&format!("redis-py{protocol}")),
            protocol.to_string(),
        ],
        "install it with `python3 -m pip install 'redis>=5,<6'`, which scripts/install-deps.sh does",
    );
}

#[test]
fn redis_py_runs_the_compatibility_scenario() {
    redis_py(2);
}

#[test]
fn redis_py_runs_the_compatibility_scenario_over_resp3() {
    redis_py(3);
}

#[test]
fn ioredis_runs_the_compatibility_scenario() {
    let proxy = start_proxy(shared());
    run_scenario(
        "node",
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/scenario.js"),
        &[
            proxy.local_addr().port().to_string(),
            unique_prefix("ioredis"),
        ],
        "install node and run `npm ci --prefix tests/compat`, which scripts/install-deps.sh does",
    );
}

/// The scenario with the Rust `redis` crate; `protocol` is its URL parameter.
fn redis_crate(protocol: &str) {
    let proxy = start_proxy(shared());
    let url = format!(
        "redis://127.0.0.1:{}/?protocol={protocol}",
        proxy.local_addr().port()
    );
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut r = client.get_connection().unwrap();
    r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let prefix = unique_prefix(&format!("redis-rs-{protocol}"));

    let pong: String = redis::cmd("PING").query(&mut r).unwrap();
    assert_eq!(pong, "PONG");
    let key = format!("{prefix}:k");
    let _: () = redis::cmd("SET").arg(&key).arg("v").query(&mut r).unwrap();
    let value: String = redis::cmd("GET").arg(&key).query(&mut r).unwrap();
    assert_eq!(value, "v");

    // A plain pipeline over many slots: replies in order.
    let mut pipe = redis::pipe();
    for i in 0..200 {
        pipe.cmd("SET")
            .arg(format!("{prefix}:p:{i}"))
            .arg(i)
            .ignore();
        pipe.cmd("GET").arg(format!("{prefix}:p:{i}"));
    }
    let values: Vec<i64> = pipe.query(&mut r).unwrap();
    assert_eq!(values, (0..200).collect::<Vec<i64>>());

    // MULTI/EXEC on one slot.
    let tag = format!("{{{prefix}}}");
    let (a, b) = (format!("{tag}:a"), format!("{tag}:b"));
    let (incremented, both): (i64, Vec<Option<String>>) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(&a)
        .arg(1)
        .ignore()
        .cmd("INCR")
        .arg(&a)
        .cmd("MGET")
        .arg(&a)
        .arg(&b)
        .query(&mut r)
        .unwrap();
    assert_eq!((incremented, both), (2, vec![Some("2".into()), None]));

    // Pub/sub: subscribe on one connection, publish from another, receive.
    let channel = format!("{prefix}:chan");
    let mut sub_con = client.get_connection().unwrap();
    let mut publisher = client.get_connection().unwrap();
    let mut sub = sub_con.as_pubsub();
    sub.subscribe(&channel).unwrap();
    sub.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + CLUSTER_DEADLINE;
    let payload = loop {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("hello")
            .query(&mut publisher)
            .unwrap();
        match sub.get_message() {
            Ok(message) => break message.get_payload::<String>().unwrap(),
            Err(e) if e.is_timeout() && Instant::now() < deadline => {}
            Err(e) => panic!("no message on {channel}: {e}"),
        }
    };
    assert_eq!(payload, "hello");
    drop(sub);

    // BLPOP: blocks until another client pushes.
    let queue = format!("{prefix}:queue");
    let pusher = {
        let queue = queue.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            let _: i64 = redis::cmd("RPUSH")
                .arg(&queue)
                .arg("job")
                .query(&mut publisher)
                .unwrap();
        })
    };
    let popped: (String, String) = redis::cmd("BLPOP")
        .arg(&queue)
        .arg(10)
        .query(&mut r)
        .unwrap();
    assert_eq!(popped, (queue, "job".to_string()));
    pusher.join().unwrap();

    // EVAL with a key.
    let got: String = redis::cmd("EVAL")
        .arg("return redis.call('GET', KEYS[1])")
        .arg(1)
        .arg(&key)
        .query(&mut r)
        .unwrap();
    assert_eq!(got, "v");

    // A hash: a RESP3 map or RESP2's flat array, read the same by the crate.
    let h = format!("{prefix}:h");
    let _: () = redis::cmd("HSET")
        .arg(&h)
        .arg("f")
        .arg("v")
        .query(&mut r)
        .unwrap();
    let raw: redis::Value = redis::cmd("HGETALL").arg(&h).query(&mut r).unwrap();
    match protocol {
        "resp3" => assert!(matches!(raw, redis::Value::Map(_)), "{raw:?}"),
        _ => assert!(matches!(raw, redis::Value::Array(_)), "{raw:?}"),
    }
}

#[test]
fn redis_crate_runs_the_compatibility_scenario() {
    redis_crate("resp2");
}

#[test]
fn redis_crate_runs_the_compatibility_scenario_over_resp3() {
    redis_crate("resp3");
}

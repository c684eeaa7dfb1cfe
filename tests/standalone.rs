//! A plain (non-cluster) Redis behind the proxy: detected from `cluster_enabled:0` and served
//! in pass-through mode, so the sidecar works before and after a move to cluster mode.

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{
    local_keyslot, pick_node_port, query, spawn, start_proxy_with_seeds, try_query, wait_until,
};

/// One `redis-server` without cluster mode, killed on drop.
struct PlainRedis {
    port: u16,
    child: Child,
}

impl PlainRedis {
    fn start() -> PlainRedis {
        let port = pick_node_port();
        let mut command = Command::new(common::server_program());
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args([
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
                "--logfile",
                "",
            ])
            .stdout(std::process::Stdio::null());
        let child = spawn(command).unwrap_or_else(|e| panic!("start redis-server: {e}"));
        wait_until(
            "the plain redis-server answers PING",
            Duration::from_secs(10),
            || try_query::<String>(port, &["PING"]),
        );
        PlainRedis { port, child }
    }
}

impl Drop for PlainRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_standalone_redis_is_served_in_pass_through_mode() {
    let redis = PlainRedis::start();
    let proxy = start_proxy_with_seeds(vec![format!("redis://127.0.0.1:{}", redis.port)]);
    let mut raw = RawClient::connect(proxy.local_addr());

    let info = raw.call(&["INFO", "proxy"]).text();
    assert!(info.contains("proxy_slots_covered:16384"), "{info}");
    assert!(info.contains("proxy_cluster_shards:1"), "{info}");

    // Keys in different slots go together: there is no CROSSSLOT on one server.
    let (a, b) = ("standalone:a", "standalone:b");
    assert_ne!(local_keyslot(a.as_bytes()), local_keyslot(b.as_bytes()));
    assert_eq!(
        raw.call(&["MSET", a, "1", b, "2"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        raw.call(&["MGET", a, b, "standalone:missing"]),
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"1".to_vec())),
            Reply::Bulk(Some(b"2".to_vec())),
            Reply::Bulk(None)
        ]))
    );
    assert_eq!(
        raw.call(&["MSETNX", "standalone:c", "3", "standalone:d", "4"]),
        Reply::Int(1)
    );
    assert_eq!(
        raw.call(&["RENAME", a, "standalone:renamed"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        raw.call(&[
            "SUNIONSTORE",
            "standalone:u",
            "standalone:s1",
            "standalone:s2"
        ]),
        Reply::Int(0)
    );
    assert_eq!(raw.call(&["MULTI"]), Reply::Simple("OK".into()));
    assert_eq!(
        raw.call(&["INCR", "standalone:x"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(
        raw.call(&["INCR", "standalone:y"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(
        raw.call(&["EXEC"]),
        Reply::Array(Some(vec![Reply::Int(1), Reply::Int(1)]))
    );
    assert_eq!(
        raw.call(&["DEL", "standalone:x", "standalone:y", b]),
        Reply::Int(3)
    );

    let direct: i64 = query(redis.port, &["DBSIZE"]);
    assert_eq!(raw.call(&["DBSIZE"]), Reply::Int(direct));
    assert_eq!(
        query::<String>(redis.port, &["GET", "standalone:renamed"]),
        "1"
    );
}

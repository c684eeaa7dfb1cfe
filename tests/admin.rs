//! The admin HTTP listener: liveness, readiness, and the Prometheus metrics whose names
//! DESIGN.md makes a contract.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{proxy_client, shared, start_proxy, unique_prefix};

/// `GET path` on the admin listener; returns (status code, body).
fn admin_get(proxy: &slotproxy::Proxy, path: &str) -> (u16, String) {
    let addr = proxy.admin_addr().expect("admin listener is on");
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to admin {addr}: {e}"));
    stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("reading GET {path}: {e}"));
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: bad response {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn health_readiness_and_metrics_endpoints_answer() {
    let proxy = start_proxy(shared());
    assert!(proxy.is_ready());
    assert_eq!(admin_get(&proxy, "/healthz").0, 200);
    let (status, body) = admin_get(&proxy, "/readyz");
    assert_eq!(status, 200, "{body}");

    let mut con = proxy_client(&proxy);
    let key = unique_prefix("admin");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("v")
        .query(&mut con)
        .unwrap();
    let got: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(got, "v");

    let (status, metrics) = admin_get(&proxy, "/metrics");
    assert_eq!(status, 200);
    for name in [
        "slotproxy_commands_total",
        "slotproxy_command_duration_seconds",
        "slotproxy_client_connections",
        "slotproxy_topology_refreshes_total",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "/metrics has no {name}:\n{metrics}"
        );
    }
    assert_eq!(admin_get(&proxy, "/no-such-page").0, 404);
}

//! Real client libraries through the proxy, with their default handshakes: the same scenario
//! (connect, SET/GET, pipeline, MULTI/EXEC, pub/sub, BLPOP, EVAL) driven by redis-py
//! (installed by the README's test command). The Rust `redis` crate drives every other test.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_with_timeout, shared, start_proxy, unique_prefix};

#[test]
fn redis_py_runs_the_compatibility_scenario() {
    let proxy = start_proxy(shared());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/scenario.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .arg(proxy.local_addr().port().to_string())
        .arg(unique_prefix("redis-py"));
    let output = run_with_timeout(command, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("scenario ok"),
        "redis-py scenario failed (install it with `python3 -m pip install 'redis>=5,<6'`, which scripts/test.sh does)\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

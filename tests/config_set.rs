//! CONFIG SET as one server takes it (with `--admin-commands`): every node, replicas included,
//! or none (a node that refuses leaves every node as it was, and the client reads that node's
//! own error); the settings reach nodes that join or are promoted later; CONFIG GET reads one
//! primary, always the same; CONFIG RESETSTAT reaches every node.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{
    query, shared, start_proxy_configured, try_query, wait_for_known_replicas, wait_until, Cluster,
    CLUSTER_DEADLINE,
};

/// The tests on the shared cluster change its settings and ACL: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn admin_proxy(cluster: &Cluster) -> slotproxy::Proxy {
    start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.admin.commands = true;
        c.cluster.refresh_interval = Duration::from_millis(200);
    })
}

fn config_get(port: u16, name: &str) -> String {
    let got: Vec<String> = query(port, &["CONFIG", "GET", name]);
    got.get(1)
        .cloned()
        .unwrap_or_else(|| panic!("{name} on {port}: {got:?}"))
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

/// Every node has these values.
fn assert_everywhere(cluster: &Cluster, settings: &[(&str, &str)], when: &str) {
    for port in cluster.ports() {
        for (name, value) in settings {
            assert_eq!(
                config_get(port, name),
                *value,
                "{name} on node {port} {when}"
            );
        }
    }
}

/// Takes `config|set` away from the default user of one node, and gives it back on drop.
struct DeniedOn(u16);

impl DeniedOn {
    fn new(port: u16) -> DeniedOn {
        let reply: String = query(port, &["ACL", "SETUSER", "default", "-config|set"]);
        assert_eq!(reply, "OK");
        DeniedOn(port)
    }
}

impl Drop for DeniedOn {
    fn drop(&mut self) {
        let _ = try_query::<String>(self.0, &["ACL", "SETUSER", "default", "+config|set"]);
    }
}

#[test]
fn config_set_reaches_every_node_or_none() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = shared();
    let proxy = admin_proxy(cluster);
    let mut raw = RawClient::connect(proxy.local_addr());
    wait_for_known_replicas(&mut raw, 3);

    // Several parameters, every node (3 primaries, 3 replicas).
    assert_eq!(
        raw.call(&[
            "CONFIG",
            "SET",
            "slowlog-max-len",
            "201",
            "maxmemory-samples",
            "7"
        ]),
        ok()
    );
    let set = [("slowlog-max-len", "201"), ("maxmemory-samples", "7")];
    assert_everywhere(cluster, &set, "after CONFIG SET");
    let Reply::Array(Some(got)) = raw.call(&["CONFIG", "GET", "slowlog-max-len"]) else {
        panic!("CONFIG GET")
    };
    assert_eq!(
        got,
        vec![
            Reply::Bulk(Some(b"slowlog-max-len".to_vec())),
            Reply::Bulk(Some(b"201".to_vec()))
        ]
    );

    // A value every node refuses: Redis's own error, nothing changed.
    let bad = [
        "CONFIG",
        "SET",
        "slowlog-max-len",
        "202",
        "maxmemory-samples",
        "notanumber",
    ];
    let direct = cluster.cli(cluster.seed_port(), &bad);
    let Reply::Error(error) = raw.call(&bad) else {
        panic!("an invalid value was accepted")
    };
    assert_eq!(error, direct.trim(), "the node's own error text");
    assert_everywhere(cluster, &set, "after a refused CONFIG SET");

    // One node (a replica) refuses: the others are set back to what they had.
    let replica = cluster.replicas()[0];
    {
        let _denied = DeniedOn::new(replica);
        let Reply::Error(error) = raw.call(&[
            "CONFIG",
            "SET",
            "slowlog-max-len",
            "203",
            "maxmemory-samples",
            "8",
        ]) else {
            panic!("CONFIG SET succeeded with a node refusing it")
        };
        assert!(error.starts_with("NOPERM"), "{error}");
        assert_everywhere(cluster, &set, "after one node refused");
    }

    // RESETSTAT reaches every node: a command run on each is no longer counted.
    for port in cluster.ports() {
        let _: String = query(port, &["ECHO", "counted"]);
    }
    assert_eq!(raw.call(&["CONFIG", "RESETSTAT"]), ok());
    for port in cluster.ports() {
        let calls: String = query(port, &["INFO", "commandstats"]);
        assert!(
            !calls.contains("cmdstat_echo:"),
            "commandstats not reset on {port}: {calls}"
        );
    }

    assert_eq!(
        raw.call(&[
            "CONFIG",
            "SET",
            "slowlog-max-len",
            "128",
            "maxmemory-samples",
            "5"
        ]),
        ok()
    );
    assert_everywhere(
        cluster,
        &[("slowlog-max-len", "128"), ("maxmemory-samples", "5")],
        "restored",
    );
}

/// A redis-server the test starts on its own and kills on drop (a node to add).
struct ExtraNode {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl ExtraNode {
    fn start() -> ExtraNode {
        let port = common::pick_node_port();
        let dir = std::env::temp_dir().join(format!(
            "slotproxy-config-set-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut command = Command::new(common::server_program());
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.display().to_string(),
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = common::spawn(command).expect("start redis-server");
        let node = ExtraNode { port, child, dir };
        wait_until("the new node to answer", CLUSTER_DEADLINE, || {
            try_query::<String>(port, &["PING"]).map(|_| ())
        });
        node
    }
}

impl Drop for ExtraNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn settings_reach_nodes_that_are_promoted_or_join() {
    let cluster = Cluster::start(3, 1);
    let proxy = admin_proxy(&cluster);
    let mut raw = RawClient::connect(proxy.local_addr());
    wait_for_known_replicas(&mut raw, 3);
    assert_eq!(raw.call(&["CONFIG", "SET", "slowlog-max-len", "321"]), ok());
    assert_everywhere(&cluster, &[("slowlog-max-len", "321")], "after CONFIG SET");

    // A replica that lost the setting (as a restarted node would) is promoted: the proxy
    // sees a new primary and applies the settings to it.
    let replica = cluster.replicas()[0];
    let _: String = query(replica, &["CONFIG", "SET", "slowlog-max-len", "128"]);
    cluster.failover(replica);
    wait_until(
        "the promoted node to have the setting",
        CLUSTER_DEADLINE,
        || match config_get(replica, "slowlog-max-len").as_str() {
            "321" => Ok(()),
            other => Err(other.to_string()),
        },
    );

    // A node added to the cluster (a replica) gets the settings once the proxy sees it.
    let node = ExtraNode::start();
    let primary = cluster.primaries()[0];
    let mut command = Command::new(common::cli_program());
    command.args([
        "--cluster",
        "add-node",
        &format!("127.0.0.1:{}", node.port),
        &format!("127.0.0.1:{primary}"),
        "--cluster-slave",
        "--cluster-master-id",
        &cluster.node_id(primary),
    ]);
    let out = common::run_with_timeout(command, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "add-node: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_until(
        "the added node to have the setting",
        CLUSTER_DEADLINE,
        || match config_get(node.port, "slowlog-max-len").as_str() {
            "321" => Ok(()),
            other => Err(other.to_string()),
        },
    );
}

/// What the proxy's own node connections depend on can't be changed through it: a client
/// that set `requirepass` or switched the proxy's user off would cut every other client off.
#[test]
fn settings_and_the_user_the_proxy_relies_on_are_refused() {
    let cluster = shared();
    let proxy = admin_proxy(cluster);
    let mut raw = RawClient::connect(proxy.local_addr());
    for args in [
        &["CONFIG", "SET", "requirepass", "secret"][..],
        &[
            "CONFIG",
            "SET",
            "maxmemory-policy",
            "noeviction",
            "port",
            "1",
        ],
        &["ACL", "SETUSER", "default", "off"],
        &["ACL", "DELUSER", "default"],
    ] {
        let Reply::Error(error) = raw.call(args) else {
            panic!("{args:?} was not refused");
        };
        assert!(error.starts_with("ERR slotproxy:"), "{args:?}: {error}");
    }
    // Nothing reached any node, and the proxy still opens new connections to them.
    for port in cluster.ports() {
        assert_eq!(config_get(port, "requirepass"), "");
    }
    let mut fresh = RawClient::connect(proxy.local_addr());
    assert_eq!(fresh.call(&["SET", "guard:k", "v"]), ok());
    // Another user is the operator's business.
    let user = format!("guard-{}", std::process::id());
    assert_eq!(raw.call(&["ACL", "SETUSER", &user, "on", ">p"]), ok());
    assert_eq!(raw.call(&["ACL", "DELUSER", &user]), Reply::Int(1));
}

/// `BGREWRITEAOF` and `DEBUG LOADAOF` right after `CONFIG SET appendonly yes` (which starts an
/// AOF rewrite on every node at once) wait, node by node, for that rewrite to end: Redis 7.0
/// answers "already in progress" to the one and exits on the other. Every node rewrites its
/// AOF, stays up, and the data is still there.
#[test]
fn loadaof_right_after_turning_aof_on_keeps_every_node_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = shared();
    let proxy = admin_proxy(cluster);
    let mut raw = RawClient::connect(proxy.local_addr());
    let keys: Vec<String> = (0..200).map(|i| format!("loadaof:{i}")).collect();
    for key in &keys {
        assert_eq!(raw.call(&["SET", key, "v"]), ok());
    }
    for round in 0..3 {
        assert_eq!(raw.call(&["CONFIG", "SET", "appendonly", "yes"]), ok());
        if round == 1 {
            assert_eq!(
                raw.call(&["BGREWRITEAOF"]),
                Reply::Simple("Background append only file rewriting started".into())
            );
        }
        assert_eq!(raw.call(&["DEBUG", "LOADAOF"]), ok(), "round {round}");
        for port in cluster.ports() {
            assert_eq!(
                try_query::<String>(port, &["PING"]).as_deref(),
                Ok("PONG"),
                "node {port}, round {round}"
            );
        }
        assert_eq!(raw.call(&["CONFIG", "SET", "appendonly", "no"]), ok());
    }
    for key in &keys {
        assert_eq!(raw.call(&["GET", key]), Reply::Bulk(Some(b"v".to_vec())));
    }
}

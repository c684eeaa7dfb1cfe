//! Test harness: real `redis-server` cluster nodes on loopback ports, plus helpers to start the
//! proxy in-process and talk to it.
//!
//! Every test binary does `mod common;`. A `Cluster` owns its `redis-server` processes: `Drop`
//! kills them by PID and removes their directory. As a second line of defence every child is
//! forked from one process-lifetime spawner thread with `PR_SET_PDEATHSIG = SIGKILL`, so the
//! nodes of a cluster that is never dropped (the `static` one behind [`shared`]) still die with
//! the test process. Nothing here sleeps and hopes: every wait polls a condition with a deadline
//! and panics with what it was waiting for and the last thing it saw.
#![allow(dead_code)]

pub mod checker;
pub mod http;
pub mod names;
pub mod raw;
pub mod tls;
pub mod traffic;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use redis::Value;

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// How long cluster-wide waits (start-up, failover, stabilising) may take before the test fails.
pub const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);

/// Per-request timeout on every connection the harness opens, so a hung server or proxy fails
/// the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Workers of a proxy from [`start_proxy_configured`] (unless `adjust` changes it): each holds
/// its own connection to every node.
pub const PROXY_WORKERS: usize = 2;

/// What the README tells people to run to get `redis-server` and `redis-cli`.
const SETUP_HINT: &str =
    "run scripts/test.sh, which installs them (or scripts/install-deps.sh as root)";

// --- backend -------------------------------------------------------------------------------

/// The servers the tests run: Redis (`redis-server`, `redis-cli`) unless
/// `SLOTPROXY_TEST_BACKEND=valkey` asks for Valkey (`valkey-server`, `valkey-cli`).
pub fn backend_is_valkey() -> bool {
    std::env::var("SLOTPROXY_TEST_BACKEND").is_ok_and(|b| b.eq_ignore_ascii_case("valkey"))
}

/// The server program of the backend under test.
pub fn server_program() -> &'static str {
    if backend_is_valkey() {
        "valkey-server"
    } else {
        "redis-server"
    }
}

/// The command-line client of the backend under test (`--cluster create`, `reshard`, ...).
pub fn cli_program() -> &'static str {
    if backend_is_valkey() {
        "valkey-cli"
    } else {
        "redis-cli"
    }
}

// --- waiting -------------------------------------------------------------------------------

/// Polls `check` until it returns `Ok`, or panics after `timeout` with `what` and the last
/// error `check` returned.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => {
                if start.elapsed() >= timeout {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Waits (up to 30 s) until `count()` is `more` above what it is now, for tests that need
/// background threads (`workers`, counting `unit`) to make progress across a cluster event.
/// Panics at once if `ended()` says the threads are gone: nothing more will come.
/// `status(done)` describes the progress for the time-out message.
pub fn wait_for_more(
    workers: &str,
    unit: &str,
    more: u64,
    count: impl Fn() -> u64,
    ended: impl Fn() -> bool,
    status: impl Fn(u64) -> String,
) {
    let target = count() + more;
    wait_until(
        &format!("{workers} to reach {target} {unit}"),
        Duration::from_secs(30),
        || {
            let done = count();
            if done >= target {
                Ok(())
            } else if ended() {
                panic!("{workers} ended early at {done} {unit}");
            } else {
                Err(status(done))
            }
        },
    );
}

// --- child processes -----------------------------------------------------------------------

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// The sender half of the spawner thread's queue. The thread lives as long as the process:
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked a child exits, so forking from a
/// short-lived test thread would kill the servers as soon as that test's thread ended.
fn spawner() -> &'static mpsc::Sender<SpawnJob> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("redis-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // SAFETY: the closure only calls prctl(2), which is async-signal-safe, and
                    // allocates nothing between fork and exec.
                    unsafe {
                        command.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                                return Err(io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("start the redis-spawner thread");
        tx
    })
}

/// Spawns `command` from the spawner thread (see [`spawner`]).
pub fn spawn(command: Command) -> io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    spawner()
        .send((command, tx))
        .expect("redis-spawner thread is gone");
    rx.recv()
        .expect("redis-spawner thread dropped a spawn request")
}

/// Runs `command` to completion (stdout and stderr captured), killing it and panicking if it
/// takes longer than `timeout`.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> Output {
    let shown = format!("{command:?}");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(command).unwrap_or_else(|e| {
        panic!("cannot run {shown}: {e}; the tests need redis-server and redis-cli: {SETUP_HINT}")
    });
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait on a child") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let out = stdout.join().unwrap_or_default();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "{shown} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// Whether a process with this PID exists (signal 0 probes without delivering anything).
fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

// --- ports ---------------------------------------------------------------------------------

/// Ports (and their bus ports) handed out by this process, so two clusters in one test binary
/// never pick the same port even before either server has bound it.
fn reserved_ports() -> MutexGuard<'static, HashSet<u16>> {
    static RESERVED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    RESERVED
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Whether `port` can be bound on 127.0.0.1 right now.
pub fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A random port in 20000..45000 such that it and its cluster bus port (+10000) are bindable
/// and not handed out before by this process.
pub fn pick_node_port() -> u16 {
    let mut reserved = reserved_ports();
    for _ in 0..10_000 {
        let port = fastrand::u16(20000..45000);
        let bus = port + 10000;
        if reserved.contains(&port) || reserved.contains(&bus) {
            continue;
        }
        if port_is_free(port) && port_is_free(bus) {
            reserved.insert(port);
            reserved.insert(bus);
            return port;
        }
    }
    panic!("no free loopback port pair (port, port+10000) found in 20000..45000");
}

// --- talking to nodes ----------------------------------------------------------------------

/// Opens a connection to a node, or says why not (for polling).
pub fn try_connect(port: u16) -> Result<redis::Connection, String> {
    try_connect_to(&format!("127.0.0.1:{port}"))
}

/// Opens a connection to the node at `addr` (`host:port`), or says why not (for polling).
pub fn try_connect_to(addr: &str) -> Result<redis::Connection, String> {
    let client =
        redis::Client::open(format!("redis://{addr}")).map_err(|e| format!("{addr}: {e}"))?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    con.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| con.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("set timeouts on {addr}: {e}"))?;
    Ok(con)
}

/// Runs one command on a node over a fresh connection, or says why it failed (for polling).
pub fn try_query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, String> {
    try_query_to(&format!("127.0.0.1:{port}"), args)
}

/// [`try_query`] for the node at `addr` (`host:port`).
pub fn try_query_to<T: redis::FromRedisValue>(addr: &str, args: &[&str]) -> Result<T, String> {
    let mut con = try_connect_to(addr)?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut con)
        .map_err(|e| format!("{addr} {}: {e}", args.join(" ")))
}

/// [`try_query`] that panics on failure.
pub fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> T {
    try_query(port, args).unwrap_or_else(|e| panic!("{e}"))
}

/// How many times the node on `port` has run `command` (`calls=` in its `INFO commandstats`;
/// 0 when absent).
#[allow(dead_code)]
pub fn command_calls(port: u16, command: &str) -> u64 {
    let stats: String = query(port, &["INFO", "commandstats"]);
    info_field(&stats, &format!("cmdstat_{command}"))
        .and_then(|v| {
            v.split(',')
                .find_map(|p| p.strip_prefix("calls=")?.parse().ok())
        })
        .unwrap_or(0)
}

/// A field of `INFO`/`CLUSTER INFO` text (`name:value` lines).
pub fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key == name).then(|| value.trim().to_string())
    })
}

/// The role a node reports for itself (`ROLE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Primary,
    /// A replica of the primary on `primary_port`; `connected` is the replication link state.
    Replica {
        primary_port: u16,
        connected: bool,
    },
}

fn value_str(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".into()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn value_int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => value_str(other)?.parse().ok(),
    }
}

/// Asks a node for its own role.
pub fn try_role(port: u16) -> Result<Role, String> {
    let value: Value = try_query(port, &["ROLE"])?;
    let Value::Array(items) = &value else {
        return Err(format!("ROLE on {port}: unexpected reply {value:?}"));
    };
    match items.first().and_then(value_str).as_deref() {
        Some("master") => Ok(Role::Primary),
        Some("slave") => {
            let primary_port = items
                .get(2)
                .and_then(value_int)
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("ROLE on {port}: no primary port in {value:?}"))?;
            let state = items.get(3).and_then(value_str).unwrap_or_default();
            Ok(Role::Replica {
                primary_port,
                connected: state == "connected",
            })
        }
        _ => Err(format!("ROLE on {port}: unexpected reply {value:?}")),
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub flags: Vec<String>,
    /// Node id of the primary, for replicas.
    pub primary_id: Option<String>,
    pub connected: bool,
    /// Owned slot ranges (inclusive).
    pub slots: Vec<(u16, u16)>,
    /// Whether the line carries `[slot->-id]` / `[slot-<-id]` migration markers.
    pub migrating: bool,
}

impl NodeLine {
    pub fn is_primary(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }
    pub fn is_myself(&self) -> bool {
        self.flags.iter().any(|f| f == "myself")
    }
    pub fn is_failing(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }
}

/// Parses `CLUSTER NODES` output.
pub fn parse_cluster_nodes(text: &str) -> Result<Vec<NodeLine>, String> {
    let mut nodes = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(format!("short CLUSTER NODES line: {line:?}"));
        }
        // ip:port@cport[,hostname]
        let port = fields[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("bad address in CLUSTER NODES line: {line:?}"))?;
        let mut slots = Vec::new();
        let mut migrating = false;
        for field in &fields[8..] {
            if field.starts_with('[') {
                migrating = true;
                continue;
            }
            let range = match field.split_once('-') {
                Some((a, b)) => (a.parse(), b.parse()),
                None => (field.parse(), field.parse()),
            };
            match range {
                (Ok(a), Ok(b)) => slots.push((a, b)),
                _ => return Err(format!("bad slot range {field:?} in {line:?}")),
            }
        }
        nodes.push(NodeLine {
            id: fields[0].to_string(),
            port,
            flags: fields[2].split(',').map(str::to_string).collect(),
            primary_id: (fields[3] != "-").then(|| fields[3].to_string()),
            connected: fields[7] == "connected",
            slots,
            migrating,
        });
    }
    Ok(nodes)
}

/// `CLUSTER NODES` as seen by one node.
pub fn try_cluster_nodes(port: u16) -> Result<Vec<NodeLine>, String> {
    let text: String = try_query(port, &["CLUSTER", "NODES"])?;
    parse_cluster_nodes(&text)
}

/// Slot → owning primary's port, as one node's `CLUSTER NODES` describes it.
fn slot_owners(nodes: &[NodeLine]) -> Vec<Option<u16>> {
    let mut owners = vec![None; SLOTS];
    for node in nodes.iter().filter(|n| n.is_primary()) {
        for &(a, b) in &node.slots {
            for slot in a..=b {
                owners[usize::from(slot)] = Some(node.port);
            }
        }
    }
    owners
}

/// Hash slot of `key` computed locally (CRC16/XMODEM with hash tags), for choosing keys that
/// land in a given slot without a round trip per candidate. Tests cross-check it against
/// `CLUSTER KEYSLOT`.
pub fn local_keyslot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc & 0x3FFF
}

/// A hash tag (without braces) whose keys all land in `slot`: `{tag}anything` hashes to `slot`.
pub fn tag_for_slot(slot: u16, prefix: &str) -> String {
    (0u64..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|tag| local_keyslot(tag.as_bytes()) == slot)
        .expect("some tag hashes to every slot")
}

/// A per-process unique prefix for keys, so tests sharing a cluster never touch each other's data.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{test}:{}:{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

// --- the cluster ---------------------------------------------------------------------------

struct Node {
    port: u16,
    dir: PathBuf,
    /// `None` once the node has been killed.
    child: Option<Child>,
    pid: u32,
}

/// The `redis-server` processes of one test cluster (plain or TLS), in their directory
/// `root`. Dropped, it kills them by PID and removes the directory; when a test failed, it
/// keeps the directory and prints each node's last log lines instead.
struct Nodes {
    root: PathBuf,
    list: Mutex<Vec<Node>>,
}

impl Nodes {
    fn new(root: PathBuf, capacity: usize) -> Nodes {
        Nodes {
            root,
            list: Mutex::new(Vec::with_capacity(capacity)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Node>> {
        // A panic while holding the lock (a failed assertion in a helper) must not stop Drop
        // from killing the nodes.
        self.list.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ports(&self) -> Vec<u16> {
        self.lock().iter().map(|n| n.port).collect()
    }

    /// Kills the node on `port` with SIGKILL (by PID) and reaps it.
    fn kill(&self, port: u16) {
        let mut nodes = self.lock();
        let (_, mut child) = take_child(&mut nodes, port);
        child.kill().expect("SIGKILL a redis-server");
        child.wait().expect("reap a killed redis-server");
    }
}

/// The node on `port` in the (locked) list, and its process taken out of it for stopping: the
/// caller keeps the list locked until the node is gone (or back), so no one sees it half-way.
/// Panics if there is no such node or it was killed already.
fn take_child(nodes: &mut [Node], port: u16) -> (&mut Node, Child) {
    let node = nodes
        .iter_mut()
        .find(|n| n.port == port)
        .unwrap_or_else(|| panic!("no node on port {port}"));
    let child = node
        .child
        .take()
        .unwrap_or_else(|| panic!("node {port} was already killed"));
    (node, child)
}

impl Nodes {
    /// Stops the node on `port` (SIGTERM by PID, as a service manager would), then starts it
    /// again on the same port, configuration and directory (its `nodes.conf` keeps its
    /// identity), and waits until it answers.
    fn restart(&self, port: u16) {
        let mut nodes = self.lock();
        let (node, mut child) = take_child(&mut nodes, port);
        // SAFETY: kill(2) on a PID this process started and has not reaped yet.
        let sent = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM node {port}");
        child.wait().expect("reap a stopped redis-server");
        let child = launch_node(port, &node.dir, &|port| {
            try_query::<String>(port, &["INFO", "server"])
        })
        .unwrap_or_else(|e| panic!("restart node {port}: {e}"));
        node.pid = child.id();
        node.child = Some(child);
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        let mut nodes = self.lock();
        for node in nodes.iter_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if failing {
            // Keep the directory for a post-mortem (the next run's stale-dir sweep removes it)
            // and show what the nodes said last.
            for node in nodes.iter() {
                eprintln!(
                    "--- redis-server {} (log in {}) ---\n{}",
                    node.port,
                    node.dir.display(),
                    log_tail(&node.dir, 15)
                );
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// A slot half-way through a manual migration (see [`Cluster::begin_migration`]).
#[derive(Debug, Clone, Copy)]
struct Migration {
    from: u16,
    to: u16,
}

/// A Redis Cluster of real `redis-server` processes on loopback ports.
pub struct Cluster {
    nodes: Nodes,
    migrations: Mutex<HashMap<u16, Migration>>,
}

/// Temp directory that holds every cluster's node directories.
fn tests_root() -> PathBuf {
    std::env::temp_dir().join("slotproxy-tests")
}

/// Removes `slotproxy-tests/<pid>-<n>` directories left by test processes that are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(tests_root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i32 && !pid_alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn node_config(port: u16, dir: &Path, node_timeout_ms: u32) -> String {
    format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         cluster-enabled yes\n\
         cluster-config-file nodes.conf\n\
         cluster-node-timeout {node_timeout_ms}\n\
         cluster-require-full-coverage no\n\
         cluster-allow-replica-migration no\n\
         enable-debug-command local\n\
         save \"\"\n\
         appendonly no\n\
         protected-mode no\n\
         daemonize no\n\
         logfile redis.log\n\
         dir {}\n",
        dir.display()
    )
}

/// The last `lines` lines of a node's log, for failure messages.
fn log_tail(dir: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
    let out = std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default();
    let all: Vec<&str> = log.lines().chain(out.lines()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts one `redis-server` in `root/<port>/`, retrying on another port if the chosen one was
/// taken between the check and the bind (other test processes pick ports too).
fn start_node(root: &Path) -> Node {
    start_node_with(
        root,
        |port, dir| node_config(port, dir, 2000),
        |port| try_query::<String>(port, &["INFO", "server"]),
    )
}

/// Starts one `redis-server` in `root/<port>/` with the configuration `config(port, dir)`,
/// and waits until `info(port)` (its `INFO server`, over whatever connection the node takes)
/// shows the child's own pid; retries on another port if the chosen one was taken between the
/// check and the bind.
fn start_node_with(
    root: &Path,
    config: impl Fn(u16, &Path) -> String,
    info: impl Fn(u16) -> Result<String, String>,
) -> Node {
    let mut last_failure = String::new();
    for _ in 0..5 {
        let port = pick_node_port();
        let dir = root.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("create node dir");
        std::fs::write(dir.join("redis.conf"), config(port, &dir)).expect("write redis.conf");
        match launch_node(port, &dir, &info) {
            Ok(child) => {
                let pid = child.id();
                return Node {
                    port,
                    dir,
                    child: Some(child),
                    pid,
                };
            }
            Err(failure) => {
                let _ = std::fs::remove_dir_all(&dir);
                last_failure = failure;
            }
        }
    }
    panic!("could not start a redis-server after 5 attempts; last failure: {last_failure}");
}

/// Starts `redis-server dir/redis.conf` in `dir` and waits until `info(port)` shows the child's
/// own pid (the server answering is ours, not another process's on the same port).
fn launch_node(
    port: u16,
    dir: &Path,
    info: &impl Fn(u16) -> Result<String, String>,
) -> Result<Child, String> {
    let conf = dir.join("redis.conf");
    let stdout = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("stdout.log"))
        .expect("open stdout.log");
    let stderr = stdout.try_clone().expect("clone stdout.log handle");
    let mut command = Command::new(server_program());
    command
        .arg(&conf)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    let mut child = spawn(command).unwrap_or_else(|e| {
        panic!("cannot start redis-server: {e}; the integration tests need redis-server and redis-cli: {SETUP_HINT}")
    });
    let pid = child.id();
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "redis-server on port {port} exited ({status}):\n{}",
                log_tail(dir, 20)
            ));
        }
        let info = info(port);
        if let Ok(info) = &info {
            if info_field(info, "process_id").as_deref() == Some(&pid.to_string()) {
                return Ok(child);
            }
        }
        if start.elapsed() > CLUSTER_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "redis-server on port {port} did not answer within {CLUSTER_DEADLINE:?} (last: {info:?}):\n{}",
                log_tail(dir, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Cluster {
    /// Starts `primaries * (1 + replicas_per_primary)` nodes, creates the cluster with
    /// `redis-cli --cluster create` and waits until it is healthy.
    pub fn start(primaries: usize, replicas_per_primary: usize) -> Cluster {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        remove_stale_dirs();
        let root = tests_root().join(format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create cluster temp dir");
        let total = primaries * (1 + replicas_per_primary);
        let cluster = Cluster {
            nodes: Nodes::new(root, total),
            migrations: Mutex::new(HashMap::new()),
        };
        // Nodes are pushed one by one so that a panic half-way still kills those started.
        for _ in 0..total {
            let node = start_node(&cluster.nodes.root);
            cluster.lock_nodes().push(node);
        }
        let ports = cluster.ports();
        let mut command = Command::new(cli_program());
        command.args(["--cluster", "create"]);
        command.args(ports.iter().map(|p| format!("127.0.0.1:{p}")));
        command.args([
            "--cluster-replicas",
            &replicas_per_primary.to_string(),
            "--cluster-yes",
        ]);
        let out = run_with_timeout(command, Duration::from_secs(60));
        if !out.status.success() {
            panic!(
                "redis-cli --cluster create failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_healthy(total);
        cluster
    }

    fn lock_nodes(&self) -> MutexGuard<'_, Vec<Node>> {
        self.nodes.lock()
    }

    /// Start-up wait: every node ok and knowing all `total` nodes, replicas linked, and
    /// `redis-cli --cluster check` clean.
    fn wait_healthy(&self, total: usize) {
        wait_until(
            "the new cluster to become healthy",
            CLUSTER_DEADLINE,
            || {
                for port in self.ports() {
                    let nodes = try_cluster_nodes(port)?;
                    if nodes.len() != total {
                        return Err(format!("{port} knows {} of {total} nodes", nodes.len()));
                    }
                }
                self.check_stable()?;
                self.check_with_redis_cli()
            },
        );
    }

    /// `redis-cli --cluster check` against the first live node.
    fn check_with_redis_cli(&self) -> Result<(), String> {
        let port = self.any_live_port();
        let mut command = Command::new(cli_program());
        command.args(["--cluster", "check", &format!("127.0.0.1:{port}")]);
        let out = run_with_timeout(command, Duration::from_secs(30));
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if out.status.success()
            && text.contains("[OK] All 16384 slots covered.")
            && text.contains("[OK] All nodes agree about slots configuration.")
            && !text.contains("[ERR]")
            && !text.contains("[WARNING]")
        {
            Ok(())
        } else {
            Err(format!(
                "redis-cli --cluster check ({}):\n{text}",
                out.status
            ))
        }
    }

    /// Every node's port (live or killed), in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.ports()
    }

    /// Ports of nodes that have not been killed.
    pub fn live_ports(&self) -> Vec<u16> {
        self.lock_nodes()
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    fn any_live_port(&self) -> u16 {
        *self
            .live_ports()
            .first()
            .expect("every node of the cluster has been killed")
    }

    /// `redis://127.0.0.1:<first node's port>`, the proxy's seed.
    pub fn seed_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.seed_port())
    }

    /// Port of the first node (the proxy's seed).
    pub fn seed_port(&self) -> u16 {
        self.ports()[0]
    }

    /// PID of the node on `port`.
    pub fn pid(&self, port: u16) -> u32 {
        self.lock_nodes()
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
            .pid
    }

    /// Directory (config, log, nodes.conf) of the node on `port`.
    pub fn node_dir(&self, port: u16) -> PathBuf {
        self.lock_nodes()
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
            .dir
            .clone()
    }

    /// Live nodes that say they are primaries.
    pub fn primaries(&self) -> Vec<u16> {
        self.live_ports()
            .into_iter()
            .filter(|&p| try_role(p).unwrap_or_else(|e| panic!("{e}")) == Role::Primary)
            .collect()
    }

    /// Live nodes that say they are replicas.
    pub fn replicas(&self) -> Vec<u16> {
        self.live_ports()
            .into_iter()
            .filter(|&p| try_role(p).unwrap_or_else(|e| panic!("{e}")) != Role::Primary)
            .collect()
    }

    /// Live replicas that say they replicate `primary_port`.
    pub fn replicas_of(&self, primary_port: u16) -> Vec<u16> {
        self.live_ports()
            .into_iter()
            .filter(|&p| {
                matches!(try_role(p).unwrap_or_else(|e| panic!("{e}")),
                    Role::Replica { primary_port: of, .. } if of == primary_port)
            })
            .collect()
    }

    /// Port of the primary owning `slot`, from `CLUSTER SHARDS` of a live node.
    pub fn primary_for_slot(&self, slot: u16) -> u16 {
        let port = self.any_live_port();
        let shards: Value = query(port, &["CLUSTER", "SHARDS"]);
        let Value::Array(shards) = shards else {
            panic!("CLUSTER SHARDS on {port}: not an array: {shards:?}");
        };
        for shard in &shards {
            let fields = as_pairs(shard);
            let ranges: Vec<i64> = match fields.get("slots") {
                Some(Value::Array(items)) => items.iter().filter_map(value_int).collect(),
                _ => Vec::new(),
            };
            let owns = ranges
                .chunks(2)
                .any(|r| r.len() == 2 && (r[0]..=r[1]).contains(&i64::from(slot)));
            if !owns {
                continue;
            }
            let Some(Value::Array(nodes)) = fields.get("nodes") else {
                panic!("CLUSTER SHARDS on {port}: shard without nodes: {shard:?}");
            };
            let listed: Vec<u16> = nodes
                .iter()
                .map(as_pairs)
                .filter(|node| {
                    node.get("role").and_then(|v| value_str(v)).as_deref() == Some("master")
                })
                .map(|node| {
                    node.get("port")
                        .and_then(|v| value_int(v))
                        .and_then(|p| u16::try_from(p).ok())
                        .unwrap_or_else(|| panic!("CLUSTER SHARDS: primary without port: {node:?}"))
                })
                .collect();
            // Valkey 8.0 groups nodes by shard id: right after a failover other nodes may still
            // list the demoted primary as a primary next to the promoted one. The one that says
            // it is a primary itself is.
            let primary = match listed.as_slice() {
                [only] => Some(*only),
                _ => listed
                    .iter()
                    .copied()
                    .find(|&p| matches!(try_role(p), Ok(Role::Primary))),
            };
            if let Some(primary) = primary {
                return primary;
            }
        }
        panic!("CLUSTER SHARDS on {port}: no primary owns slot {slot}");
    }

    /// Node id (`CLUSTER MYID`) of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        query(port, &["CLUSTER", "MYID"])
    }

    /// Sends `signal` (`-STOP`, `-CONT`, ...) to the node on `port`, by PID.
    pub fn signal(&self, port: u16, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid(port).to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} node {port}");
    }

    /// Names (keys or shard channels) under `prefix` whose slots have different primaries.
    pub fn names_on_two_primaries(&self, prefix: &str) -> (String, String) {
        let a = format!("{prefix}:a");
        let owner_a = self.primary_for_slot(local_keyslot(a.as_bytes()));
        let b = (0..)
            .map(|i| format!("{prefix}:b{i}"))
            .find(|b| self.primary_for_slot(local_keyslot(b.as_bytes())) != owner_a)
            .expect("the cluster has two primaries");
        (a, b)
    }

    /// Kills the node on `port` with SIGKILL (by PID) and reaps it.
    pub fn kill(&self, port: u16) {
        self.nodes.kill(port);
    }

    /// Stops the node on `port` with SIGTERM and starts it again with the same configuration
    /// and `nodes.conf` (a restart, as in a rolling upgrade), waiting until it answers.
    pub fn restart(&self, port: u16) {
        self.nodes.restart(port);
    }

    /// A plain connection to one node.
    pub fn direct(&self, port: u16) -> redis::Connection {
        try_connect(port).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `redis-cli -h 127.0.0.1 -p <port> <args>` and returns its stdout (panics if it fails).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args)
    }

    /// `CLUSTER KEYSLOT key`, asked of a live node.
    pub fn keyslot(&self, key: &str) -> u16 {
        query(self.any_live_port(), &["CLUSTER", "KEYSLOT", key])
    }

    /// Waits until every live node reports `cluster_state:ok`, all of them agree on which live
    /// primary owns each of the 16384 slots, no live node is flagged failing, no migration is in
    /// progress, and every replica of a live primary has its replication link up.
    pub fn wait_stable(&self) {
        wait_until("the cluster to become stable", CLUSTER_DEADLINE, || {
            self.check_stable()
        });
    }

    fn check_stable(&self) -> Result<(), String> {
        let live = self.live_ports();
        let mut first_view: Option<(u16, Vec<Option<u16>>)> = None;
        for &port in &live {
            let info: String = try_query(port, &["CLUSTER", "INFO"])?;
            if info_field(&info, "cluster_state").as_deref() != Some("ok") {
                return Err(format!("{port}: cluster_state is not ok"));
            }
            let nodes = try_cluster_nodes(port)?;
            for node in &nodes {
                if live.contains(&node.port) && node.is_failing() {
                    return Err(format!(
                        "{port} flags live node {} {:?}",
                        node.port, node.flags
                    ));
                }
                if live.contains(&node.port) && !node.is_myself() && !node.connected {
                    return Err(format!("{port} has no link to {}", node.port));
                }
                if node.migrating {
                    return Err(format!(
                        "{port}: slot migration in progress on {}",
                        node.port
                    ));
                }
            }
            let owners = slot_owners(&nodes);
            if let Some(slot) = owners.iter().position(|o| o.is_none()) {
                return Err(format!("{port}: slot {slot} has no owner"));
            }
            if let Some(slot) = owners
                .iter()
                .position(|o| !o.is_some_and(|p| live.contains(&p)))
            {
                return Err(format!(
                    "{port}: slot {slot} is owned by dead node {:?}",
                    owners[slot]
                ));
            }
            match &first_view {
                None => first_view = Some((port, owners)),
                Some((first, view)) => {
                    if let Some(slot) = (0..SLOTS).find(|&s| view[s] != owners[s]) {
                        return Err(format!(
                            "{first} and {port} disagree on slot {slot}: {:?} vs {:?}",
                            view[slot], owners[slot]
                        ));
                    }
                }
            }
            if let Role::Replica {
                primary_port,
                connected,
            } = try_role(port)?
            {
                if live.contains(&primary_port) && !connected {
                    return Err(format!("replica {port}: link to {primary_port} is not up"));
                }
                let info: String = try_query(port, &["INFO", "replication"])?;
                if live.contains(&primary_port)
                    && info_field(&info, "master_link_status").as_deref() != Some("up")
                {
                    return Err(format!("replica {port}: master_link_status is not up"));
                }
            }
        }
        Ok(())
    }

    /// Waits until every replica of `primary_port` has acknowledged all of its writes.
    pub fn wait_replicated(&self, primary_port: u16) {
        wait_until(
            &format!("replicas of {primary_port} to catch up"),
            CLUSTER_DEADLINE,
            || {
                let info: String = try_query(primary_port, &["INFO", "replication"])?;
                let offset =
                    info_field(&info, "master_repl_offset").ok_or("no master_repl_offset")?;
                let replicas: usize = info_field(&info, "connected_slaves")
                    .and_then(|n| n.parse().ok())
                    .ok_or("no connected_slaves")?;
                if replicas == 0 {
                    return Err(format!("{primary_port} has no connected replica"));
                }
                for i in 0..replicas {
                    let line = info_field(&info, &format!("slave{i}")).unwrap_or_default();
                    if !line.contains(&format!("offset={offset},")) {
                        return Err(format!("replica {line} behind offset {offset}"));
                    }
                }
                Ok(())
            },
        );
    }

    /// Manual failover: `CLUSTER FAILOVER` on the replica, then waits until it is a primary, every
    /// live node sees it as one, and the cluster is stable.
    pub fn failover(&self, replica_port: u16) {
        let Role::Replica { primary_port, .. } =
            try_role(replica_port).unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("failover: node {replica_port} is not a replica");
        };
        let reply: String = query(replica_port, &["CLUSTER", "FAILOVER"]);
        assert_eq!(reply, "OK", "CLUSTER FAILOVER on {replica_port}");
        self.wait_promoted(replica_port);
        if self.live_ports().contains(&primary_port) {
            wait_until(
                &format!("old primary {primary_port} to become a replica of {replica_port}"),
                CLUSTER_DEADLINE,
                || match try_role(primary_port)? {
                    Role::Replica {
                        primary_port: of, ..
                    } if of == replica_port => Ok(()),
                    other => Err(format!("{primary_port} is {other:?}")),
                },
            );
        }
        self.wait_stable();
    }

    /// Waits until `port` is a primary owning slots in the view of every live node (after a
    /// manual failover, or an automatic one after its primary was killed).
    pub fn wait_promoted(&self, port: u16) {
        wait_until(
            &format!("{port} to be promoted to primary"),
            CLUSTER_DEADLINE,
            || {
                if try_role(port)? != Role::Primary {
                    return Err(format!("{port} does not say it is a primary yet"));
                }
                for live in self.live_ports() {
                    let nodes = try_cluster_nodes(live)?;
                    let me = nodes
                        .iter()
                        .find(|n| n.port == port)
                        .ok_or_else(|| format!("{live} does not know {port}"))?;
                    if !me.is_primary() || me.slots.is_empty() {
                        return Err(format!(
                            "{live} sees {port} as {:?} with slots {:?}",
                            me.flags, me.slots
                        ));
                    }
                }
                Ok(())
            },
        );
    }

    /// Moves `slots` slots from one primary to another with `redis-cli --cluster reshard`, then
    /// waits until the cluster is stable.
    pub fn reshard(&self, from_primary: u16, to_primary: u16, slots: usize) {
        self.wait_stable();
        let from_id = self.node_id(from_primary);
        let to_id = self.node_id(to_primary);
        let mut command = Command::new(cli_program());
        command.args([
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", self.any_live_port()),
            "--cluster-from",
            &from_id,
            "--cluster-to",
            &to_id,
            "--cluster-slots",
            &slots.to_string(),
            "--cluster-yes",
        ]);
        let out = run_with_timeout(command, Duration::from_secs(300));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || stdout.contains("[ERR]") {
            panic!(
                "redis-cli --cluster reshard {from_primary} -> {to_primary} failed ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.wait_stable();
    }

    /// Moves one slot to `to_primary` by hand (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE)
    /// and waits until the cluster is stable.
    pub fn migrate_slot(&self, slot: u16, to_primary: u16) {
        self.begin_migration(slot, to_primary);
        self.finish_migration(slot);
    }

    /// Marks `slot` IMPORTING on `to_primary` and MIGRATING on its owner; keys stay where they
    /// are until [`Cluster::move_keys`] / [`Cluster::finish_migration`]. Between the two, reads
    /// of moved keys on the source answer `-ASK` and multi-key commands over split keys
    /// `-TRYAGAIN`.
    pub fn begin_migration(&self, slot: u16, to_primary: u16) {
        let from = self.primary_for_slot(slot);
        assert_ne!(from, to_primary, "slot {slot} is already on {to_primary}");
        let from_id = self.node_id(from);
        let to_id = self.node_id(to_primary);
        let slot_arg = slot.to_string();
        let ok: String = query(
            to_primary,
            &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id],
        );
        assert_eq!(ok, "OK");
        let ok: String = query(
            from,
            &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id],
        );
        assert_eq!(ok, "OK");
        self.migrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                slot,
                Migration {
                    from,
                    to: to_primary,
                },
            );
    }

    fn migration(&self, slot: u16) -> Migration {
        *self
            .migrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot)
            .unwrap_or_else(|| panic!("slot {slot} is not being migrated"))
    }

    /// Migrates up to `n` keys of a slot under migration; returns how many were moved.
    pub fn move_keys(&self, slot: u16, n: usize) -> usize {
        let Migration { from, to } = self.migration(slot);
        let mut con = self.direct(from);
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(n)
            .query(&mut con)
            .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT {slot} on {from}: {e}"));
        if keys.is_empty() {
            return 0;
        }
        migrate_keys(&mut con, slot, to, &keys);
        keys.len()
    }

    /// Migrates the named keys (all in `slot`, all still on the source) of a slot under migration.
    pub fn move_named_keys(&self, slot: u16, keys: &[&str]) {
        let Migration { from, to } = self.migration(slot);
        for key in keys {
            assert_eq!(
                local_keyslot(key.as_bytes()),
                slot,
                "{key} is not in slot {slot}"
            );
        }
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        migrate_keys(&mut self.direct(from), slot, to, &keys);
    }

    /// Moves the remaining keys of a slot under migration, assigns the slot to the target on
    /// the target, the source and every other primary (in that order, as `redis-cli` does),
    /// then waits until the cluster is stable.
    pub fn finish_migration(&self, slot: u16) {
        let Migration { from, to } = self.migration(slot);
        while self.move_keys(slot, 100) > 0 {}
        let to_id = self.node_id(to);
        let slot_arg = slot.to_string();
        let mut order = vec![to, from];
        order.extend(
            self.primaries()
                .into_iter()
                .filter(|p| *p != to && *p != from),
        );
        for port in order {
            let ok: String = query(port, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
            assert_eq!(ok, "OK", "CLUSTER SETSLOT {slot} NODE on {port}");
        }
        self.migrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&slot);
        self.wait_stable();
        let owner = self.primary_for_slot(slot);
        assert_eq!(
            owner, to,
            "slot {slot} should be owned by {to} after migration"
        );
    }

    /// Where each slot lives right now: slot → primary port, from a live node's view.
    pub fn slot_map(&self) -> BTreeMap<u16, u16> {
        let nodes = try_cluster_nodes(self.any_live_port()).unwrap_or_else(|e| panic!("{e}"));
        slot_owners(&nodes)
            .into_iter()
            .enumerate()
            .filter_map(|(slot, owner)| Some((slot as u16, owner?)))
            .collect()
    }

    /// The slots `primary_port` owns right now, in ascending order, from a live node's view.
    pub fn slots_of(&self, primary_port: u16) -> Vec<u16> {
        self.slot_map()
            .into_iter()
            .filter(|&(_, owner)| owner == primary_port)
            .map(|(slot, _)| slot)
            .collect()
    }
}

/// `MIGRATE` of `keys` from the node behind `source` to `to_port` (no REPLACE: a key already on
/// the target means a client wrote it there while it still existed on the source, which the
/// tests must notice).
fn migrate_keys(source: &mut redis::Connection, slot: u16, to_port: u16, keys: &[Vec<u8>]) {
    let reply: String = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to_port)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(keys)
        .query(source)
        .unwrap_or_else(|e| {
            panic!(
                "MIGRATE of {} keys of slot {slot} to {to_port}: {e}",
                keys.len()
            )
        });
    assert_eq!(reply, "OK", "MIGRATE of slot {slot} keys to {to_port}");
}

/// `CLUSTER SHARDS` entries are flat `[name, value, name, value, ...]` arrays in RESP2.
fn as_pairs(value: &Value) -> HashMap<String, &Value> {
    let mut map = HashMap::new();
    match value {
        Value::Array(items) => {
            for pair in items.chunks(2) {
                if let [name, value] = pair {
                    if let Some(name) = value_str(name) {
                        map.insert(name, value);
                    }
                }
            }
        }
        Value::Map(pairs) => {
            for (name, value) in pairs {
                if let Some(name) = value_str(name) {
                    map.insert(name, value);
                }
            }
        }
        _ => {}
    }
    map
}

/// Runs `redis-cli -h 127.0.0.1 -p <port> <args>` (raw output) and returns its stdout; panics if
/// it exits non-zero or takes longer than 30 s.
pub fn cli(port: u16, args: &[&str]) -> String {
    let mut command = Command::new(cli_program());
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let out = run_with_timeout(command, Duration::from_secs(30));
    if !out.status.success() {
        panic!(
            "redis-cli -p {port} {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One 3-primary, 1-replica-each cluster per test binary, for tests that do not change the
/// topology. Never dropped: its nodes die with the process (PR_SET_PDEATHSIG).
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| Cluster::start(3, 1))
}

// --- the proxy -----------------------------------------------------------------------------

/// Starts the proxy in-process on `127.0.0.1:0` (admin too), seeded with the cluster's first node.
pub fn start_proxy(cluster: &Cluster) -> slotproxy::Proxy {
    start_proxy_with_seeds(vec![cluster.seed_url()])
}

/// Starts the proxy in-process with the given seed URLs.
pub fn start_proxy_with_seeds(upstreams: Vec<String>) -> slotproxy::Proxy {
    start_proxy_configured(upstreams, |_| {})
}

/// Starts the proxy in-process with the given seed URLs and settings changed by `adjust`.
pub fn start_proxy_configured(
    upstreams: Vec<String>,
    adjust: impl FnOnce(&mut slotproxy::Config),
) -> slotproxy::Proxy {
    let mut config = slotproxy::Config::default();
    config.listener.listen = "127.0.0.1:0".into();
    config.cluster.upstreams = slotproxy::config::parse_upstreams(&upstreams).unwrap();
    config.admin.listen = Some("127.0.0.1:0".into());
    config.listener.workers = PROXY_WORKERS;
    adjust(&mut config);
    slotproxy::Proxy::start(config).unwrap_or_else(|e| panic!("the proxy failed to start: {e:?}"))
}

/// Waits until the proxy behind `raw` knows `n` online replicas (INFO's `# Proxy` section).
/// Right after a cluster forms, nodes may still report replicas as `loading` (no replication
/// offset seen yet), and the proxy only uses replicas reported online.
pub fn wait_for_known_replicas(raw: &mut raw::RawClient, n: usize) {
    let want = n.to_string();
    wait_until(
        &format!("the proxy knows {n} replicas"),
        CLUSTER_DEADLINE,
        || {
            let info = raw.call(&["INFO", "proxy"]).text();
            match info_field(&info, "proxy_replicas_known") {
                Some(known) if known == want => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
}

/// The proxy's client address.
pub fn proxy_addr(proxy: &slotproxy::Proxy) -> SocketAddr {
    proxy.local_addr()
}

/// A plain (non-cluster) `redis` client connection to the proxy, with I/O timeouts.
pub fn proxy_client(proxy: &slotproxy::Proxy) -> redis::Connection {
    let addr = proxy.local_addr();
    try_proxy_client(addr).unwrap_or_else(|e| panic!("connect to the proxy at {addr}: {e}"))
}

/// [`proxy_client`] by address, or why not: background client threads (traffic, the write
/// checker) count a failed connect as a failed request and try again.
pub fn try_proxy_client(addr: SocketAddr) -> redis::RedisResult<redis::Connection> {
    let con = redis::Client::open(format!("redis://{addr}"))?
        .get_connection_with_timeout(Duration::from_secs(5))?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

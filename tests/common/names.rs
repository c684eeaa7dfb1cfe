//! Nodes reached by name, and nodes that move: what managed and orchestrated clusters do to
//! the addresses of their nodes.
//!
//! [`Hosts`] points test names (`sp-<pid>-<n>-<label>.test`) at loopback addresses through
//! `/etc/hosts` (glibc reads it again on every lookup, so a change is seen at once) and
//! removes its own lines when dropped, whatever else the file holds. [`LoopCluster`] runs
//! nodes on any 127.0.0.0/8 address (`bind`, `cluster-announce-ip`), optionally announcing a
//! hostname (`cluster-announce-hostname` + `cluster-preferred-endpoint-type hostname`, so
//! MOVED and `CLUSTER SHARDS` name nodes by name), and can add a node under another node's
//! name, fail over to it, remove a node, and restart a node on another address with its
//! `nodes.conf` (same node id). Nodes are known by [`At`] (address and port), since two of
//! them may share a port on different addresses. The port-keyed [`super::Cluster`] stays as
//! it is; this reuses its process spawning and start-up wait.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::{
    cli_program, info_field, launch_node, log_tail, pid_alive, port_is_free, reserved_ports,
    run_with_timeout, tests_root, wait_until, CLUSTER_DEADLINE, SLOTS,
};

// --- /etc/hosts ----------------------------------------------------------------------------

const HOSTS: &str = "/etc/hosts";

/// Every line this harness writes ends with this, then `pid=<pid> set=<n>`.
const TAG: &str = "# slotproxy-test";

/// Serialises this process's edits of `/etc/hosts` (tests of one binary run in parallel).
fn hosts_lock() -> MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The names one test put in `/etc/hosts`; dropped, it removes exactly its own lines.
pub struct Hosts {
    tag: String,
    label: String,
    names: Mutex<BTreeMap<String, Ipv4Addr>>,
}

impl Hosts {
    /// Takes a set of lines in `/etc/hosts` for names made from `label`. Panics with a clear
    /// message when the file cannot be written: these tests cannot run without it, and must
    /// not pass without running.
    pub fn new(label: &str) -> Hosts {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let set = NEXT.fetch_add(1, Ordering::Relaxed);
        let hosts = Hosts {
            tag: format!("{TAG} pid={} set={set}", std::process::id()),
            label: format!("sp-{}-{set}-{label}", std::process::id()),
            names: Mutex::new(BTreeMap::new()),
        };
        let _guard = hosts_lock();
        if let Err(e) = std::fs::OpenOptions::new().append(true).open(HOSTS) {
            panic!(
                "these tests point test names at loopback addresses through {HOSTS}, which \
                 this user cannot write ({e}); run them as root, as the test container does"
            );
        }
        // Lines of test processes that died without cleaning up.
        rewrite_hosts(|line| match tagged_pid(line) {
            Some(pid) => pid == std::process::id() as i32 || pid_alive(pid),
            None => true,
        });
        hosts
    }

    /// The name `<label>.test` unique to this process and set.
    pub fn name(&self, label: &str) -> String {
        format!("{}-{label}.test", self.label)
    }

    /// Points `name` at `ip` (adding the line, or changing it), and waits until this process
    /// resolves it so.
    pub fn set(&self, name: &str, ip: Ipv4Addr) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.insert(name.to_string(), ip);
        let ours: Vec<String> = names
            .iter()
            .map(|(name, ip)| format!("{ip} {name} {}", self.tag))
            .collect();
        drop(names);
        {
            let _guard = hosts_lock();
            let tag = self.tag.clone();
            rewrite_hosts_with(|line| !line.ends_with(&tag), &ours);
        }
        wait_until(
            &format!("{name} to resolve to {ip}"),
            Duration::from_secs(5),
            || {
                let found: Vec<_> = (name, 1)
                    .to_socket_addrs()
                    .map_err(|e| e.to_string())?
                    .collect();
                if found.iter().any(|a| a.ip() == ip) {
                    Ok(())
                } else {
                    Err(format!("resolves to {found:?}"))
                }
            },
        );
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _guard = hosts_lock();
        let tag = self.tag.clone();
        rewrite_hosts(|line| !line.ends_with(&tag));
    }
}

/// The pid in a line this harness wrote.
fn tagged_pid(line: &str) -> Option<i32> {
    let (_, tail) = line.split_once(TAG)?;
    tail.split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
}

/// Keeps the lines of `/etc/hosts` that `keep` accepts.
fn rewrite_hosts(keep: impl Fn(&str) -> bool) {
    rewrite_hosts_with(keep, &[]);
}

/// Keeps the lines `keep` accepts and appends `add`. Written in place (the file is often a
/// bind mount, which a rename would not replace), in one write.
fn rewrite_hosts_with(keep: impl Fn(&str) -> bool, add: &[String]) {
    let text = std::fs::read_to_string(HOSTS).unwrap_or_else(|e| panic!("read {HOSTS}: {e}"));
    let mut out = String::new();
    for line in text
        .lines()
        .filter(|l| keep(l))
        .map(str::to_string)
        .chain(add.iter().cloned())
    {
        out.push_str(&line);
        out.push('\n');
    }
    if out == text {
        return;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(HOSTS)
        .unwrap_or_else(|e| panic!("open {HOSTS} for writing: {e}"));
    file.write_all(out.as_bytes())
        .unwrap_or_else(|e| panic!("write {HOSTS}: {e}"));
}

// --- nodes on any loopback address -------------------------------------------------------

/// Where a node listens: a loopback address and a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct At {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.ip, self.port)
    }
}

/// `127.0.0.<n>`.
pub fn loopback(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}

/// A connection to the node at `at`, or why not (for polling).
pub fn try_connect_at(at: At) -> Result<redis::Connection, String> {
    super::try_connect_to(&at.to_string())
}

/// One command on the node at `at` over a fresh connection, or why it failed.
pub fn try_query_at<T: redis::FromRedisValue>(at: At, args: &[&str]) -> Result<T, String> {
    super::try_query_to(&at.to_string(), args)
}

/// [`try_query_at`] that panics on failure.
pub fn query_at<T: redis::FromRedisValue>(at: At, args: &[&str]) -> T {
    try_query_at(at, args).unwrap_or_else(|e| panic!("{e}"))
}

/// A line of `CLUSTER NODES`, with the node's address.
#[derive(Clone, Debug)]
pub struct Listed {
    pub id: String,
    pub at: Option<At>,
    pub hostname: Option<String>,
    pub flags: Vec<String>,
    pub primary_id: Option<String>,
    pub connected: bool,
    pub slots: Vec<(u16, u16)>,
}

impl Listed {
    pub fn is_primary(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }
    fn is_failing(&self) -> bool {
        self.flags.iter().any(|f| f == "fail" || f == "fail?")
    }
    fn is_myself(&self) -> bool {
        self.flags.iter().any(|f| f == "myself")
    }
}

/// `CLUSTER NODES` of the node at `at`.
pub fn try_listed(at: At) -> Result<Vec<Listed>, String> {
    let text: String = try_query_at(at, &["CLUSTER", "NODES"])?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            return Err(format!("short CLUSTER NODES line {line:?}"));
        }
        // ip:port@cport[,hostname]
        let (addr, hostname) = match f[1].split_once(',') {
            Some((a, h)) => (a, (!h.is_empty()).then(|| h.to_string())),
            None => (f[1], None),
        };
        let addr = addr.split('@').next().unwrap_or_default();
        let at = addr.rsplit_once(':').and_then(|(ip, port)| {
            Some(At {
                ip: ip.parse().ok()?,
                port: port.parse().ok()?,
            })
        });
        let mut slots = Vec::new();
        for field in &f[8..] {
            if field.starts_with('[') {
                return Err(format!("{at:?}: slot migration in progress: {line}"));
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
        out.push(Listed {
            id: f[0].to_string(),
            at,
            hostname,
            flags: f[2].split(',').map(str::to_string).collect(),
            primary_id: (f[3] != "-").then(|| f[3].to_string()),
            connected: f[7] == "connected",
            slots,
        });
    }
    Ok(out)
}

/// How the nodes of a [`LoopCluster`] run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Announce a hostname (made by [`Hosts::name`], pointed at the node) and prefer it as
    /// the endpoint in MOVED, `CLUSTER SHARDS` and `CLUSTER SLOTS`.
    pub hostnames: bool,
    /// `appendonly yes`: a node stopped with SIGTERM and started again keeps its data.
    pub appendonly: bool,
    pub node_timeout_ms: u32,
}

struct Member {
    at: At,
    hostname: Option<String>,
    dir: PathBuf,
    /// `None` once stopped.
    child: Option<Child>,
}

/// Nodes on loopback addresses of our choice. Dropped, it kills them by PID and removes its
/// directory (kept, with the nodes' last log lines printed, when the test failed).
pub struct LoopCluster {
    root: PathBuf,
    options: Options,
    members: Mutex<Vec<Member>>,
}

/// A port whose node and bus ports are free on every address in `ips`, reserved for this
/// process.
fn pick_port(ips: &[Ipv4Addr]) -> u16 {
    let mut reserved = reserved_ports();
    let free = |port: u16| {
        port_is_free(port)
            && ips
                .iter()
                .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok())
    };
    for _ in 0..10_000 {
        let port = fastrand::u16(20000..45000);
        let bus = port + 10000;
        if reserved.contains(&port) || reserved.contains(&bus) {
            continue;
        }
        if free(port) && free(bus) {
            reserved.insert(port);
            reserved.insert(bus);
            return port;
        }
    }
    panic!("no free port pair (port, port+10000) on {ips:?}");
}

fn node_config(at: At, hostname: Option<&str>, dir: &Path, options: &Options) -> String {
    let mut conf = format!(
        "port {port}\n\
         bind {ip}\n\
         cluster-announce-ip {ip}\n\
         cluster-enabled yes\n\
         cluster-config-file nodes.conf\n\
         cluster-node-timeout {timeout}\n\
         cluster-require-full-coverage no\n\
         cluster-allow-replica-migration no\n\
         save \"\"\n\
         appendonly {aof}\n\
         protected-mode no\n\
         daemonize no\n\
         logfile redis.log\n\
         dir {dir}\n",
        port = at.port,
        ip = at.ip,
        timeout = options.node_timeout_ms,
        aof = if options.appendonly { "yes" } else { "no" },
        dir = dir.display(),
    );
    if let Some(name) = hostname {
        conf.push_str(&format!(
            "cluster-announce-hostname {name}\ncluster-preferred-endpoint-type hostname\n"
        ));
    }
    conf
}

impl LoopCluster {
    /// Starts `primaries * (1 + replicas_per_primary)` nodes on 127.0.0.1, each on a port
    /// also free on `spare` (the addresses nodes will move to), each named in `hosts` when
    /// `options.hostnames` (which needs `hosts`), and creates the cluster.
    pub fn start(
        hosts: Option<&Hosts>,
        primaries: usize,
        replicas_per_primary: usize,
        spare: &[Ipv4Addr],
        options: Options,
    ) -> LoopCluster {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = tests_root().join(format!(
            "{}-loop{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("create cluster temp dir");
        let cluster = LoopCluster {
            root,
            options,
            members: Mutex::new(Vec::new()),
        };
        let mut ips = vec![loopback(1)];
        ips.extend_from_slice(spare);
        let total = primaries * (1 + replicas_per_primary);
        for i in 0..total {
            let at = At {
                ip: loopback(1),
                port: pick_port(&ips),
            };
            let hostname = options.hostnames.then(|| {
                let hosts = hosts.expect("announced hostnames need Hosts");
                let name = hosts.name(&format!("n{i}"));
                hosts.set(&name, at.ip);
                name
            });
            cluster.launch(at, hostname, &format!("{}", at.port));
        }
        let nodes = cluster.nodes();
        let mut command = Command::new(cli_program());
        command.args(["--cluster", "create"]);
        command.args(nodes.iter().map(At::to_string));
        command.args([
            "--cluster-replicas",
            &replicas_per_primary.to_string(),
            "--cluster-yes",
        ]);
        let out = run_with_timeout(command, Duration::from_secs(60));
        if !out.status.success() {
            panic!(
                "{} --cluster create failed ({}):\n{}\n{}",
                cli_program(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_stable();
        cluster
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Member>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the configuration of a node at `at` into `root/<dir>` and starts it there.
    fn launch(&self, at: At, hostname: Option<String>, dir: &str) {
        let dir = self.root.join(dir);
        std::fs::create_dir_all(&dir).expect("create node dir");
        std::fs::write(
            dir.join("redis.conf"),
            node_config(at, hostname.as_deref(), &dir, &self.options),
        )
        .expect("write redis.conf");
        let ip = at.ip;
        let child = launch_node(at.port, &dir, &|port| {
            try_query_at::<String>(At { ip, port }, &["INFO", "server"])
        })
        .unwrap_or_else(|e| panic!("start a node at {at}: {e}"));
        let mut members = self.lock();
        match members.iter_mut().find(|m| m.dir == dir) {
            Some(member) => {
                member.at = at;
                member.child = Some(child);
            }
            None => members.push(Member {
                at,
                hostname,
                dir,
                child: Some(child),
            }),
        }
    }

    /// The running nodes.
    pub fn nodes(&self) -> Vec<At> {
        self.lock()
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.at)
            .collect()
    }

    /// The hostname the node at `at` announces.
    pub fn hostname(&self, at: At) -> Option<String> {
        self.lock()
            .iter()
            .find(|m| m.at == at && m.child.is_some())
            .and_then(|m| m.hostname.clone())
    }

    /// PID of the node at `at`.
    pub fn pid(&self, at: At) -> u32 {
        self.lock()
            .iter()
            .find(|m| m.at == at)
            .and_then(|m| m.child.as_ref())
            .map(Child::id)
            .unwrap_or_else(|| panic!("no running node at {at}"))
    }

    /// `CLUSTER MYID` of the node at `at`.
    pub fn node_id(&self, at: At) -> String {
        query_at(at, &["CLUSTER", "MYID"])
    }

    /// Running nodes that say they are primaries (`ROLE`).
    pub fn primaries(&self) -> Vec<At> {
        self.nodes()
            .into_iter()
            .filter(|&at| role_of(at).as_deref() == Some("master"))
            .collect()
    }

    /// The running replicas of the primary at `primary`, as the cluster lists them.
    pub fn replicas_of(&self, primary: At) -> Vec<At> {
        let id = self.node_id(primary);
        let listed = try_listed(primary).unwrap_or_else(|e| panic!("{e}"));
        let running = self.nodes();
        listed
            .iter()
            .filter(|l| l.primary_id.as_deref() == Some(&id))
            .filter_map(|l| l.at)
            .filter(|at| running.contains(at))
            .collect()
    }

    /// The slots the primary at `primary` owns, in its own view.
    pub fn slots_of(&self, primary: At) -> Vec<u16> {
        let listed = try_listed(primary).unwrap_or_else(|e| panic!("{e}"));
        listed
            .iter()
            .filter(|l| l.is_myself())
            .flat_map(|l| l.slots.iter().flat_map(|&(a, b)| a..=b))
            .collect()
    }

    /// Starts a new node at `at` (a fresh identity) announcing `hostname`, introduces it to
    /// the cluster and makes it a replica of `primary`; returns once it has synced.
    pub fn add_replica(&self, at: At, hostname: Option<String>, primary: At) {
        let primary_id = self.node_id(primary);
        self.launch(at, hostname, &format!("{}-{}", at.port, at.ip.octets()[3]));
        let ok: String = query_at(
            at,
            &[
                "CLUSTER",
                "MEET",
                &primary.ip.to_string(),
                &primary.port.to_string(),
            ],
        );
        assert_eq!(ok, "OK", "CLUSTER MEET from {at}");
        let new_id = self.node_id(at);
        wait_until(
            &format!("every node to know the new node {at}"),
            CLUSTER_DEADLINE,
            || {
                for node in self.nodes() {
                    let listed = try_listed(node)?;
                    if !listed.iter().any(|l| l.id == new_id && l.connected) {
                        return Err(format!("{node} does not know {at} yet"));
                    }
                }
                // REPLICATE needs the primary known to the new node too.
                let listed = try_listed(at)?;
                if !listed.iter().any(|l| l.id == primary_id) {
                    return Err(format!("{at} does not know {primary} yet"));
                }
                Ok(())
            },
        );
        let ok: String = query_at(at, &["CLUSTER", "REPLICATE", &primary_id]);
        assert_eq!(ok, "OK", "CLUSTER REPLICATE on {at}");
        self.wait_synced(primary, at);
    }

    /// Waits until the replica at `replica` has its link to `primary` up and all of its
    /// writes.
    pub fn wait_synced(&self, primary: At, replica: At) {
        wait_until(
            &format!("{replica} to sync from {primary}"),
            CLUSTER_DEADLINE,
            || {
                let info: String = try_query_at(replica, &["INFO", "replication"])?;
                if info_field(&info, "master_link_status").as_deref() != Some("up") {
                    return Err(format!("{replica}: link to {primary} not up"));
                }
                let theirs: String = try_query_at(primary, &["INFO", "replication"])?;
                let want = info_field(&theirs, "master_repl_offset").unwrap_or_default();
                let have = info_field(&info, "slave_repl_offset").unwrap_or_default();
                if want == have {
                    Ok(())
                } else {
                    Err(format!("{replica} at offset {have}, {primary} at {want}"))
                }
            },
        );
    }

    /// `CLUSTER FAILOVER` on the replica at `replica`; waits until it is the primary in every
    /// running node's view and the cluster is stable.
    pub fn failover(&self, replica: At) {
        let ok: String = query_at(replica, &["CLUSTER", "FAILOVER"]);
        assert_eq!(ok, "OK", "CLUSTER FAILOVER on {replica}");
        let id = self.node_id(replica);
        wait_until(
            &format!("{replica} to be promoted"),
            CLUSTER_DEADLINE,
            || {
                if role_of(replica).as_deref() != Some("master") {
                    return Err(format!("{replica} is not a primary yet"));
                }
                for node in self.nodes() {
                    let listed = try_listed(node)?;
                    let me = listed
                        .iter()
                        .find(|l| l.id == id)
                        .ok_or_else(|| format!("{node} does not know {replica}"))?;
                    if !me.is_primary() || me.slots.is_empty() {
                        return Err(format!("{node} sees {replica} as {:?}", me.flags));
                    }
                }
                Ok(())
            },
        );
        self.wait_stable();
    }

    /// Stops the node at `at` with SIGTERM (by PID, as a service manager would) and reaps it.
    pub fn stop(&self, at: At) {
        let mut members = self.lock();
        let member = members
            .iter_mut()
            .find(|m| m.at == at && m.child.is_some())
            .unwrap_or_else(|| panic!("no running node at {at}"));
        let mut child = member.child.take().expect("a running node has a child");
        // SAFETY: kill(2) on a PID this process started and has not reaped yet.
        let sent = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM the node at {at}");
        child.wait().expect("reap a stopped node");
    }

    /// Removes the node at `at` for good: stops it, then `CLUSTER FORGET` on every other node.
    pub fn remove(&self, at: At) {
        let id = self.node_id(at);
        self.stop(at);
        for node in self.nodes() {
            let ok: String = query_at(node, &["CLUSTER", "FORGET", &id]);
            assert_eq!(ok, "OK", "CLUSTER FORGET {id} on {node}");
        }
        self.wait_stable();
    }

    /// Starts the stopped node last at `from` again at `to`, with its directory and
    /// `nodes.conf` (same node id and data), as a rescheduled pod comes back elsewhere.
    /// Waits until it answers; the caller waits for the cluster to take it in.
    pub fn start_at(&self, from: At, to: At) {
        let (hostname, dir) = {
            let members = self.lock();
            let member = members
                .iter()
                .find(|m| m.at == from && m.child.is_none())
                .unwrap_or_else(|| panic!("no stopped node at {from}"));
            (member.hostname.clone(), member.dir.clone())
        };
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("node dir name")
            .to_string();
        self.launch(to, hostname, &name);
    }

    /// `CLUSTER MEET` from `at` to every other running node (nodes that all moved find each
    /// other again this way; a known node id at a new address takes that address).
    pub fn meet_all(&self, at: At) {
        for other in self.nodes().into_iter().filter(|&o| o != at) {
            let ok: String = query_at(
                at,
                &[
                    "CLUSTER",
                    "MEET",
                    &other.ip.to_string(),
                    &other.port.to_string(),
                ],
            );
            assert_eq!(ok, "OK", "CLUSTER MEET {other} from {at}");
        }
    }

    /// Waits until every running node reports `cluster_state:ok`, knows exactly the running
    /// nodes, at their current addresses, linked and not failing, and all agree on the owner
    /// of every slot; every replica's link is up.
    pub fn wait_stable(&self) {
        wait_until("the cluster to become stable", CLUSTER_DEADLINE, || {
            self.check_stable()
        });
    }

    fn check_stable(&self) -> Result<(), String> {
        let running = self.nodes();
        let mut first: Option<(At, Vec<Option<String>>)> = None;
        for &node in &running {
            let info: String = try_query_at(node, &["CLUSTER", "INFO"])?;
            if info_field(&info, "cluster_state").as_deref() != Some("ok") {
                return Err(format!("{node}: cluster_state is not ok"));
            }
            let listed = try_listed(node)?;
            if listed.len() != running.len() {
                return Err(format!(
                    "{node} knows {} nodes, {} are running",
                    listed.len(),
                    running.len()
                ));
            }
            for l in &listed {
                let Some(at) = l.at.filter(|at| running.contains(at)) else {
                    return Err(format!("{node} lists {:?} at {:?}", l.id, l.at));
                };
                if l.is_failing() || (!l.is_myself() && !l.connected) {
                    return Err(format!("{node} sees {at} as {:?}", l.flags));
                }
            }
            let mut owners = vec![None; SLOTS];
            for l in listed.iter().filter(|l| l.is_primary()) {
                for &(a, b) in &l.slots {
                    for slot in a..=b {
                        owners[usize::from(slot)] = Some(l.id.clone());
                    }
                }
            }
            if let Some(slot) = owners.iter().position(Option::is_none) {
                return Err(format!("{node}: slot {slot} has no owner"));
            }
            match &first {
                None => first = Some((node, owners)),
                Some((first_node, view)) => {
                    if let Some(slot) = (0..SLOTS).find(|&s| view[s] != owners[s]) {
                        return Err(format!("{first_node} and {node} disagree on slot {slot}"));
                    }
                }
            }
            if role_of(node).as_deref() == Some("slave") {
                let info: String = try_query_at(node, &["INFO", "replication"])?;
                if info_field(&info, "master_link_status").as_deref() != Some("up") {
                    return Err(format!("replica {node}: link not up"));
                }
            }
        }
        Ok(())
    }
}

/// `ROLE`'s first word (`master` / `slave`) of the node at `at`.
pub fn role_of(at: At) -> Option<String> {
    let value: redis::Value = try_query_at(at, &["ROLE"]).ok()?;
    match value {
        redis::Value::Array(items) => match items.first()? {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

impl Drop for LoopCluster {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        let mut members = self.lock();
        for member in members.iter_mut() {
            if let Some(mut child) = member.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if failing {
            for member in members.iter() {
                eprintln!(
                    "--- node {} (log in {}) ---\n{}",
                    member.at,
                    member.dir.display(),
                    log_tail(&member.dir, 15)
                );
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

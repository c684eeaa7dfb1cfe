//! TLS fixtures: test certificates made with rcgen, a Redis Cluster that speaks TLS only
//! (`port 0`, `tls-port`, TLS on the cluster bus and for replication), driven with
//! `redis-cli --tls`, and a small synchronous TLS client for the proxy's TLS listener.
//!
//! Like [`super::Cluster`], a [`TlsCluster`] kills its nodes by PID on Drop (and they die with
//! the test process through `PR_SET_PDEATHSIG`), and every wait polls with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::raw::{encode, Reply};
use super::{
    info_field, node_config, remove_stale_dirs, run_with_timeout, start_node_with, tests_root,
    wait_until, Node, Nodes, CLUSTER_DEADLINE, IO_TIMEOUT, SLOTS,
};

// --- certificates --------------------------------------------------------------------------

/// PEM files for one test run: a CA, a certificate it signed for `127.0.0.1` and `localhost`
/// (used by the nodes and the proxy's listener, for serving and as a client), a client
/// certificate, and a second CA that signed nothing the servers use ("the wrong CA").
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    /// Per-node certificate and key whose only name is [`node_hostname`] (the first node's
    /// also names `localhost`, so a seed can be reached by name); empty unless asked for.
    pub node_certs: Vec<(PathBuf, PathBuf)>,
}

/// The hostname the `i`-th node of a cluster with named nodes announces.
pub fn node_hostname(i: usize) -> String {
    format!("node{i}.slotproxy.test")
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("self-sign the CA");
    (cert, key)
}

fn leaf(
    name: &str,
    sans: &[&str],
    usages: Vec<ExtendedKeyUsagePurpose>,
    issuer: &(rcgen::Certificate, KeyPair),
) -> (String, String) {
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = usages;
    let key = KeyPair::generate().expect("leaf key");
    let cert = params
        .signed_by(&key, &issuer.0, &issuer.1)
        .expect("sign a leaf certificate");
    (cert.pem(), key.serialize_pem())
}

impl TlsFiles {
    /// Generates fresh certificates into `dir`, with `named_nodes` per-node certificates.
    pub fn generate(dir: &Path, named_nodes: usize) -> TlsFiles {
        std::fs::create_dir_all(dir).expect("create the certificate dir");
        let authority = ca("slotproxy test CA");
        let other = ca("slotproxy untrusted CA");
        // The nodes use their certificate as a client too (cluster bus, replication).
        let (server_cert, server_key) = leaf(
            "slotproxy test server",
            &["127.0.0.1", "localhost"],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            &authority,
        );
        let (client_cert, client_key) = leaf(
            "slotproxy test client",
            &["client.slotproxy.test"],
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            &authority,
        );
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            node_certs: (0..named_nodes)
                .map(|i| {
                    (
                        dir.join(format!("node{i}.pem")),
                        dir.join(format!("node{i}.key")),
                    )
                })
                .collect(),
        };
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()))
        };
        write(&files.ca, &authority.0.pem());
        write(&files.other_ca, &other.0.pem());
        write(&files.server_cert, &server_cert);
        write(&files.server_key, &server_key);
        write(&files.client_cert, &client_cert);
        write(&files.client_key, &client_key);
        for (i, (cert_path, key_path)) in files.node_certs.iter().enumerate() {
            let name = node_hostname(i);
            let sans: Vec<&str> = if i == 0 {
                vec![&name, "localhost"]
            } else {
                vec![&name]
            };
            let (cert, key) = leaf(
                &name,
                &sans,
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ],
                &authority,
            );
            write(cert_path, &cert);
            write(key_path, &key);
        }
        files
    }

    /// `redis-cli` arguments for a TLS connection with the client certificate.
    pub fn cli_args(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            self.ca.display().to_string(),
            "--cert".into(),
            self.client_cert.display().to_string(),
            "--key".into(),
            self.client_key.display().to_string(),
        ]
    }
}

// --- redis-cli over TLS --------------------------------------------------------------------

/// Runs `redis-cli <tls args> -h 127.0.0.1 -p <port> <args>`; stdout, or why it failed.
pub fn try_tls_cli(tls_args: &[String], port: u16, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new(super::cli_program());
    command
        .args(tls_args)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let out = run_with_timeout(command, Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // redis-cli exits 0 after printing "Could not connect" or an error reply to stdout.
    if out.status.success()
        && !stdout.starts_with("Could not connect")
        && !stdout.starts_with("ERR")
        && !stdout.contains("Error:")
        && !stderr.contains("Error")
    {
        Ok(stdout)
    } else {
        Err(format!(
            "redis-cli --tls -p {port} {args:?} ({}): {stdout}{stderr}",
            out.status
        ))
    }
}

// --- the cluster ---------------------------------------------------------------------------

/// A Redis Cluster whose nodes accept TLS only.
pub struct TlsCluster {
    pub files: TlsFiles,
    nodes: Nodes,
}

/// How the nodes of a [`TlsCluster`] are set up.
#[derive(Clone, Copy, Debug, Default)]
pub struct TlsNodes {
    /// `tls-auth-clients yes`: clients need a certificate from the test CA.
    pub require_client_cert: bool,
    /// Each node has a certificate of its own naming only [`node_hostname`], and announces
    /// that hostname (`cluster-announce-hostname`); the first also answers to `localhost`.
    pub named: bool,
}

fn tls_node_config(
    port: u16,
    dir: &Path,
    (cert, key): (&Path, &Path),
    ca: &Path,
    require_client_cert: bool,
    hostname: Option<&str>,
) -> String {
    let plain = node_config(port, dir, 2000);
    let rest = plain
        .split_once('\n')
        .map(|(_, rest)| rest)
        .expect("node_config starts with the port line");
    format!(
        "port 0\n\
         tls-port {port}\n\
         tls-cert-file {}\n\
         tls-key-file {}\n\
         tls-ca-cert-file {}\n\
         tls-auth-clients {}\n\
         tls-cluster yes\n\
         tls-replication yes\n\
         {}\
         {rest}",
        cert.display(),
        key.display(),
        ca.display(),
        if require_client_cert {
            "yes"
        } else {
            "optional"
        },
        hostname.map_or(String::new(), |h| format!(
            "cluster-announce-hostname {h}\n"
        )),
    )
}

impl TlsCluster {
    /// Starts `primaries * (1 + replicas_per_primary)` TLS-only nodes, creates the cluster with
    /// `redis-cli --tls --cluster create` and waits until it is healthy. With
    /// `require_client_cert`, nodes refuse clients without a certificate from the test CA.
    pub fn start(
        primaries: usize,
        replicas_per_primary: usize,
        require_client_cert: bool,
    ) -> TlsCluster {
        TlsCluster::start_with(
            primaries,
            replicas_per_primary,
            TlsNodes {
                require_client_cert,
                named: false,
            },
        )
    }

    /// [`TlsCluster::start`] with every node option.
    pub fn start_with(
        primaries: usize,
        replicas_per_primary: usize,
        options: TlsNodes,
    ) -> TlsCluster {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        remove_stale_dirs();
        let root = tests_root().join(format!(
            "{}-tls{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let total = primaries * (1 + replicas_per_primary);
        let files = TlsFiles::generate(&root.join("certs"), if options.named { total } else { 0 });
        let cluster = TlsCluster {
            files,
            nodes: Nodes::new(root, total),
        };
        for i in 0..total {
            let node = cluster.start_node(i, options);
            cluster.nodes.lock().push(node);
        }
        let mut command = Command::new(super::cli_program());
        command.args(cluster.files.cli_args());
        command.args(["--cluster", "create"]);
        command.args(cluster.ports().iter().map(|p| format!("127.0.0.1:{p}")));
        command.args([
            "--cluster-replicas",
            &replicas_per_primary.to_string(),
            "--cluster-yes",
        ]);
        let out = run_with_timeout(command, Duration::from_secs(60));
        if !out.status.success() {
            panic!(
                "redis-cli --tls --cluster create failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        wait_until(
            "the TLS cluster to become healthy",
            CLUSTER_DEADLINE,
            || cluster.check_healthy(total),
        );
        cluster
    }

    /// Starts one node, retrying on another port if the chosen one was taken meanwhile.
    fn start_node(&self, index: usize, options: TlsNodes) -> Node {
        let (cert, key) = match self.files.node_certs.get(index) {
            Some((cert, key)) => (cert.as_path(), key.as_path()),
            None => (
                self.files.server_cert.as_path(),
                self.files.server_key.as_path(),
            ),
        };
        let hostname = options.named.then(|| node_hostname(index));
        // A redis-server built without TLS exits at once; start_node_with shows its log.
        start_node_with(
            &self.nodes.root,
            |port, dir| {
                tls_node_config(
                    port,
                    dir,
                    (cert, key),
                    &self.files.ca,
                    options.require_client_cert,
                    hostname.as_deref(),
                )
            },
            |port| try_tls_cli(&self.files.cli_args(), port, &["INFO", "server"]),
        )
    }

    /// Every node ok, knowing all nodes and all slots; replicas linked; `redis-cli --cluster
    /// check` clean (all nodes agree on the slots).
    fn check_healthy(&self, total: usize) -> Result<(), String> {
        let args = self.files.cli_args();
        for port in self.ports() {
            let info = try_tls_cli(&args, port, &["CLUSTER", "INFO"])?;
            let field = |name| info_field(&info, name).unwrap_or_default();
            if field("cluster_state") != "ok"
                || field("cluster_known_nodes") != total.to_string()
                || field("cluster_slots_ok") != SLOTS.to_string()
            {
                return Err(format!("{port}: {info}"));
            }
            let replication = try_tls_cli(&args, port, &["INFO", "replication"])?;
            if info_field(&replication, "role").as_deref() == Some("slave")
                && info_field(&replication, "master_link_status").as_deref() != Some("up")
            {
                return Err(format!("replica {port}: link to its primary is not up"));
            }
        }
        let mut command = Command::new(super::cli_program());
        command.args(&args).args([
            "--cluster",
            "check",
            &format!("127.0.0.1:{}", self.seed_port()),
        ]);
        let out = run_with_timeout(command, Duration::from_secs(30));
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success()
            && text.contains("[OK] All nodes agree about slots configuration.")
            && !text.contains("[ERR]")
            && !text.contains("[WARNING]")
        {
            Ok(())
        } else {
            Err(format!("redis-cli --cluster check: {text}"))
        }
    }

    pub fn ports(&self) -> Vec<u16> {
        self.nodes.ports()
    }

    pub fn seed_port(&self) -> u16 {
        self.ports()[0]
    }

    /// `rediss://127.0.0.1:<first node's TLS port>`, the proxy's seed.
    pub fn seed_url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.seed_port())
    }

    /// Kills the node on `port` with SIGKILL (by PID) and reaps it.
    pub fn kill(&self, port: u16) {
        self.nodes.kill(port);
    }

    /// Port of the primary owning `slot` (`CLUSTER NODES` of the seed node).
    pub fn primary_for_slot(&self, slot: u16) -> u16 {
        let text = self.cli(self.seed_port(), &["CLUSTER", "NODES"]);
        let nodes = super::parse_cluster_nodes(&text).unwrap_or_else(|e| panic!("{e}"));
        nodes
            .iter()
            .filter(|n| n.is_primary())
            .find(|n| n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no primary owns slot {slot}: {text}"))
    }

    /// Runs a command on one node over TLS (with the client certificate).
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        try_tls_cli(&self.files.cli_args(), port, args).unwrap_or_else(|e| panic!("{e}"))
    }
}

// --- a TLS client for the proxy's listener -------------------------------------------------

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A synchronous RESP client over rustls, trusting `ca` and optionally presenting a client
/// certificate, for the proxy's TLS listener.
pub struct TlsClient {
    stream: BufReader<TlsStream>,
}

impl TlsClient {
    /// Connects and completes the handshake, or says why it could not.
    pub fn try_connect(
        addr: SocketAddr,
        ca: &Path,
        client_cert: Option<(&Path, &Path)>,
    ) -> Result<TlsClient, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in load_pem_certs(ca) {
            roots.add(cert).map_err(|e| format!("CA: {e}"))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client_cert {
            Some((cert, key)) => {
                use rustls::pki_types::pem::PemObject;
                let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("client key: {e}"))?;
                builder
                    .with_client_auth_cert(load_pem_certs(cert), key)
                    .map_err(|e| e.to_string())?
            }
            None => builder.with_no_client_auth(),
        };
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(Arc::new(config), name.to_owned())
            .map_err(|e| e.to_string())?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| tcp.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        }
        Ok(TlsClient {
            stream: BufReader::new(stream),
        })
    }

    /// Writes bytes as they are (a whole pipeline in one go, for instance).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stream = self.stream.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .map_err(|e| format!("write: {e}"))
    }

    /// Sends one command and reads its reply, or says why not.
    pub fn try_call(&mut self, args: &[&str]) -> Result<Reply, String> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send_raw(&encode(&args))?;
        self.read_reply()
    }

    /// [`TlsClient::try_call`] that panics on failure.
    pub fn call(&mut self, args: &[&str]) -> Reply {
        self.try_call(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Reads one reply, or says why none could be read.
    pub fn read_reply(&mut self) -> Result<Reply, String> {
        let mut line = String::new();
        let n = self
            .stream
            .read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 || !line.ends_with("\r\n") || line.len() < 3 {
            return Err(format!("connection closed or bad line: {line:?}"));
        }
        let rest = line[1..line.len() - 2].to_string();
        let number = |rest: &str| {
            rest.parse::<i64>()
                .map_err(|e| format!("bad number {rest:?}: {e}"))
        };
        match &line[..1] {
            "+" => Ok(Reply::Simple(rest)),
            "-" => Ok(Reply::Error(rest)),
            ":" => Ok(Reply::Int(number(&rest)?)),
            "$" => {
                let len = number(&rest)?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut buf = vec![0; len as usize + 2];
                self.stream
                    .read_exact(&mut buf)
                    .map_err(|e| format!("read: {e}"))?;
                buf.truncate(len as usize);
                Ok(Reply::Bulk(Some(buf)))
            }
            "*" => {
                let len = number(&rest)?;
                if len < 0 {
                    return Ok(Reply::Array(None));
                }
                let items = (0..len)
                    .map(|_| self.read_reply())
                    .collect::<Result<_, _>>()?;
                Ok(Reply::Array(Some(items)))
            }
            _ => Err(format!("unexpected reply line {line:?}")),
        }
    }
}

fn load_pem_certs(path: &Path) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

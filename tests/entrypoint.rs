//! The binary as the container runs it: configured only through environment variables
//! (`SLOTPROXY_LISTEN=0.0.0.0:...`, `SLOTPROXY_ADMIN_LISTEN`, `SLOTPROXY_UPSTREAM`, no flags),
//! serving RESP and `/healthz`, passing the Dockerfile's own HEALTHCHECK command, stopping
//! cleanly on SIGTERM; and its JSON log format.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::raw::{RawClient, Reply};
use common::{run_with_timeout, shared, spawn, wait_until, CLUSTER_DEADLINE};

/// A port free on every interface right now (the binary binds 0.0.0.0).
fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// The `slotproxy` binary, killed by PID on drop; its stderr lines arrive on `stderr`.
struct Binary {
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Binary {
    fn start(mut command: Command) -> Binary {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn(command).unwrap_or_else(|e| panic!("start slotproxy: {e}"));
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Binary { child, stderr }
    }

    /// Sends SIGTERM (what `docker stop` and Kubernetes send) and waits for the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's PID, which has not been reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "slotproxy did not exit within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with an empty environment, like a container that sets only what it needs.
fn bare_binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_slotproxy"));
    command.env_clear();
    command
}

/// `GET path` over plain HTTP/1.1; (status, body), or why not (for polling).
fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(common::IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad response {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The `HEALTHCHECK ... CMD [...]` of the Dockerfile, as its exec-form argument list.
fn dockerfile_healthcheck() -> Vec<String> {
    let dockerfile = include_str!("../Dockerfile");
    let mut lines = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"));
    let cmd = lines
        .find_map(|l| l.trim().strip_prefix("CMD "))
        .expect("the Dockerfile has a HEALTHCHECK ... CMD [...]");
    serde_json::from_str(cmd)
        .unwrap_or_else(|e| panic!("HEALTHCHECK CMD is not exec form ({e}): {cmd}"))
}

/// Runs the Dockerfile's health check with the image's admin address; true when it passes.
fn healthcheck_passes(admin_port: u16) -> bool {
    let argv = dockerfile_healthcheck();
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env("SLOTPROXY_ADMIN_LISTEN", format!("0.0.0.0:{admin_port}"));
    run_with_timeout(command, Duration::from_secs(10))
        .status
        .success()
}

#[test]
fn the_container_entrypoint_is_configured_by_environment_alone() {
    let cluster = shared();
    let (port, admin_port) = (free_port(), free_port());
    let mut command = bare_binary();
    command
        .env("SLOTPROXY_LISTEN", format!("0.0.0.0:{port}"))
        .env("SLOTPROXY_ADMIN_LISTEN", format!("0.0.0.0:{admin_port}"))
        .env("SLOTPROXY_UPSTREAM", cluster.seed_url());
    let mut binary = Binary::start(command);
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();
    wait_until(
        "/healthz on 127.0.0.1 to answer 200",
        CLUSTER_DEADLINE,
        || match http_get(admin, "/healthz")? {
            (200, _) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    wait_until(
        "/readyz to answer 200",
        CLUSTER_DEADLINE,
        || match http_get(admin, "/readyz")? {
            (200, body) => Ok(body),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(
        healthcheck_passes(admin_port),
        "the Dockerfile's HEALTHCHECK fails against a healthy proxy"
    );

    let mut client = RawClient::connect(([127, 0, 0, 1], port).into());
    assert_eq!(client.call(&["PING"]), Reply::Simple("PONG".into()));
    let key = common::unique_prefix("entrypoint");
    assert_eq!(client.call(&["SET", &key, "v"]), Reply::Simple("OK".into()));
    assert_eq!(client.call(&["GET", &key]).text(), "v");
    drop(client);

    let status = binary.terminate();
    assert!(
        status.success(),
        "slotproxy exited with {status} on SIGTERM"
    );
    assert!(
        !healthcheck_passes(admin_port),
        "the Dockerfile's HEALTHCHECK passes with no proxy running"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (mut binary, mut lines) = start_logging(bare_binary(), &["--workers", "1"]);
    let status = binary.terminate();
    assert!(
        status.success(),
        "slotproxy exited with {status} on SIGTERM"
    );
    lines.extend(binary.stderr.try_iter().map(log_event));
    assert!(lines.len() >= 2, "{lines:#?}");
    for event in &lines {
        assert!(event.is_object(), "a log line is not JSON: {event}");
        for field in ["timestamp", "level", "message", "target"] {
            assert!(event.get(field).is_some(), "no {field} in {event}");
        }
    }
    let listening = lines
        .iter()
        .find(|e| message(e) == "slotproxy listening")
        .unwrap_or_else(|| panic!("no \"slotproxy listening\" log line: {lines:#?}"));
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert!(listening.get("local_addr").is_some(), "{listening}");
}

/// The example deployment files set only environment variables the binary reads (a typo there
/// would be silently ignored by the container).
#[test]
fn example_deployments_use_only_known_environment_variables() {
    let output = run_with_timeout(bare_binary_with(&["--help"]), Duration::from_secs(10));
    assert!(output.status.success(), "slotproxy --help failed");
    let help = String::from_utf8_lossy(&output.stdout);
    let known = slotproxy_variables(&help);
    assert!(known.contains("SLOTPROXY_UPSTREAM"), "{help}");
    for (name, text) in [
        ("Dockerfile", include_str!("../Dockerfile")),
        (
            "config/kubernetes-sidecar.yaml",
            include_str!("../config/kubernetes-sidecar.yaml"),
        ),
        (
            "config/docker-compose.yml",
            include_str!("../config/docker-compose.yml"),
        ),
    ] {
        let used = slotproxy_variables(text);
        assert!(!used.is_empty(), "{name} sets no SLOTPROXY_ variable");
        let unknown: Vec<&String> = used.difference(&known).collect();
        assert!(
            unknown.is_empty(),
            "{name} uses unknown variables {unknown:?}"
        );
    }
}

fn bare_binary_with(args: &[&str]) -> Command {
    let mut command = bare_binary();
    command.args(args);
    command
}

/// Every `SLOTPROXY_...` name in `text`.
fn slotproxy_variables(text: &str) -> std::collections::BTreeSet<String> {
    text.match_indices("SLOTPROXY_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// Makes `io_uring_setup` fail with EPERM in the child, as Docker's default seccomp profile
/// does: a filter installed between fork and exec.
fn forbid_io_uring(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let filter = [
        // The system call number (offset 0 of `struct seccomp_data`).
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    // SAFETY: only async-signal-safe calls (prctl) between fork and exec, on memory the
    // closure owns.
    unsafe {
        command.pre_exec(move || {
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &program as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// One stderr line as a JSON log event; a line that is not JSON (a start error is printed as
/// plain text) as a JSON string.
fn log_event(line: String) -> serde_json::Value {
    serde_json::from_str(&line).unwrap_or(serde_json::Value::String(line))
}

/// The binary (`command` plus `args`) with JSON logs on loopback, seeded with the shared
/// cluster, and the lines it logged up to "slotproxy listening" (or its exit).
fn start_logging(mut command: Command, args: &[&str]) -> (Binary, Vec<serde_json::Value>) {
    let cluster = shared();
    command.args([
        "--log-format",
        "json",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--upstream",
        &cluster.seed_url(),
    ]);
    command.args(args);
    let binary = Binary::start(command);
    let mut lines = Vec::new();
    let deadline = Instant::now() + CLUSTER_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match binary.stderr.recv_timeout(left) {
            Ok(line) => {
                let event = log_event(line);
                let done = message(&event) == "slotproxy listening";
                lines.push(event);
                if done {
                    return (binary, lines);
                }
            }
            // The sender is gone: the binary exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => return (binary, lines),
            Err(e) => panic!("no \"slotproxy listening\" log line ({e}); so far:\n{lines:#?}"),
        }
    }
}

/// A field of a JSON log event, at the top or under `fields`.
fn field<'a>(event: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    match event.get(name) {
        Some(value) => value,
        None => &event["fields"][name],
    }
}

fn message(event: &serde_json::Value) -> &str {
    field(event, "message").as_str().unwrap_or_default()
}

#[test]
fn where_io_uring_is_forbidden_auto_serves_on_epoll_and_says_so_once() {
    let mut command = bare_binary();
    forbid_io_uring(&mut command);
    let (mut binary, lines) = start_logging(command, &["--workers", "2", "--io", "auto"]);
    let warnings: Vec<_> = lines
        .iter()
        .filter(|l| message(l).contains("io_uring is not available"))
        .collect();
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert_eq!(warnings[0]["level"], "WARN", "{lines:#?}");
    let listening = lines
        .iter()
        .find(|l| message(l) == "slotproxy listening")
        .unwrap_or_else(|| panic!("did not start: {lines:#?}"));
    assert_eq!(field(listening, "io"), "epoll", "{listening}");
    let addr: SocketAddr = field(listening, "local_addr")
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no local_addr in {listening}"));
    let mut client = RawClient::connect(addr);
    assert_eq!(
        client.call(&["SET", "io:fallback", "ok"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(client.call(&["GET", "io:fallback"]).text(), "ok");
    assert!(binary.terminate().success());
}

#[test]
fn where_io_uring_is_forbidden_io_uring_refuses_to_start() {
    let mut command = bare_binary();
    forbid_io_uring(&mut command);
    let (mut binary, lines) = start_logging(command, &["--io", "uring"]);
    let status = binary.child.wait().expect("wait for the binary");
    assert!(!status.success(), "started without io_uring: {lines:#?}");
    let stderr: Vec<String> = binary.stderr.try_iter().collect();
    let said = lines
        .iter()
        .map(|l| l.to_string())
        .chain(stderr)
        .any(|l| l.contains("io_uring is not available here"));
    assert!(said, "no reason given: {lines:#?}");
}

#[test]
fn where_io_uring_works_auto_uses_it() {
    if let Err(error) = slotproxy::client::uring::probe() {
        eprintln!("io_uring is not available here ({error}): nothing to check");
        return;
    }
    let (mut binary, lines) = start_logging(bare_binary(), &["--workers", "1"]);
    let listening = lines
        .iter()
        .find(|l| message(l) == "slotproxy listening")
        .unwrap_or_else(|| panic!("did not start: {lines:#?}"));
    assert_eq!(field(listening, "io"), "io_uring", "{listening}");
    assert!(!lines
        .iter()
        .any(|l| message(l).contains("io_uring is not available")));
    assert!(binary.terminate().success());
}

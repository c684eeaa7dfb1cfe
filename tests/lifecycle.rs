//! The proxy's lifecycle and client limits: a graceful SIGTERM that answers every command
//! already received, `max_clients`, `client_idle_timeout`, `client_output_buffer_limit`, and
//! the binary configured only by an application's `REDIS_*` environment variables.
//!
//! One test stops a primary, so the tests of this binary run one at a time (`SERIAL`).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::raw::{RawClient, Reply};
use common::{local_keyslot, shared, start_proxy_configured, unique_prefix, wait_until};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// The `slotproxy` binary, killed on drop if still running.
struct Binary {
    child: Child,
    addr: SocketAddr,
    /// Where its log (stderr) goes.
    log: std::path::PathBuf,
}

impl Binary {
    fn start(args: &[&str], env: &[(&str, String)]) -> Binary {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("{}.log", unique_prefix("slotproxy-bin")));
        let mut command = Command::new(env!("CARGO_BIN_EXE_slotproxy"));
        command
            .args(args)
            .env_clear()
            .env("SLOTPROXY_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "SLOTPROXY_ADMIN_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = command.spawn().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut binary = Binary { child, addr, log };
        wait_until("the proxy binary serves", Duration::from_secs(30), || {
            if let Ok(Some(status)) = binary.child.try_wait() {
                panic!("slotproxy exited early: {status}");
            }
            let mut c = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            c.set_read_timeout(Some(Duration::from_secs(2))).ok();
            c.write_all(b"*2\r\n$3\r\nGET\r\n$5\r\nready\r\n")
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            let n = std::io::Read::read(&mut c, &mut buf).map_err(|e| e.to_string())?;
            match &buf[..n] {
                // Ready: a value, or (with a password set) the demand for one.
                b"$-1\r\n" => Ok(()),
                other if other.starts_with(b"-NOAUTH") => Ok(()),
                other => Err(String::from_utf8_lossy(other).into_owned()),
            }
        });
        binary.child.try_wait().unwrap();
        binary
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

#[test]
fn sigterm_answers_every_command_already_received() {
    let _serial = serial();
    let cluster = shared();
    let proxy = Binary::start(
        &["--upstream", &cluster.seed_url(), "--shutdown-grace", "20"],
        &[],
    );
    let key = unique_prefix("graceful");
    let primary = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
    let mut client = RawClient::connect(proxy.addr);
    assert_eq!(client.call(&["PING"]), Reply::Simple("PONG".into()));

    // 1,000 commands in flight: their node is stopped, so none can be answered yet.
    cluster.signal(primary, "-STOP");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut batch = Vec::new();
        for _ in 0..1000 {
            batch.extend(common::raw::encode(&[b"INCR", key.as_bytes()]));
        }
        client.send_raw(&batch);
        std::thread::sleep(Duration::from_millis(300));
        proxy.signal("-TERM");
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            TcpStream::connect_timeout(&proxy.addr, Duration::from_secs(1)).is_err(),
            "the proxy still accepts clients after SIGTERM"
        );
    }));
    cluster.signal(primary, "-CONT");
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    for i in 1..=1000 {
        assert_eq!(client.read_reply(), Reply::Int(i), "reply {i} of 1000");
    }
    client.is_closed_by_server().unwrap();
    let mut proxy = proxy;
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the proxy did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn max_clients_refuses_the_extra_client() {
    let _serial = serial();
    let proxy = start_proxy_configured(vec![shared().seed_url()], |c| c.clients.max_clients = 3);
    let mut clients: Vec<RawClient> = (0..3)
        .map(|_| RawClient::connect(proxy.local_addr()))
        .collect();
    for c in &mut clients {
        assert_eq!(c.call(&["PING"]), Reply::Simple("PONG".into()));
    }
    let mut extra = RawClient::connect(proxy.local_addr());
    assert_eq!(
        extra.read_reply().error(),
        "ERR max number of clients reached"
    );
    extra.is_closed_by_server().unwrap();
    // One leaves: a new client gets in.
    clients.pop();
    wait_until("a slot frees up", Duration::from_secs(10), || {
        let mut c = RawClient::connect(proxy.local_addr());
        c.send(&[b"PING"]);
        match c.try_read_reply()? {
            Reply::Simple(s) if s == "PONG" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

#[test]
fn idle_clients_are_closed_but_blocked_ones_are_not() {
    let _serial = serial();
    let proxy = start_proxy_configured(vec![shared().seed_url()], |c| {
        c.clients.idle_timeout = Some(Duration::from_secs(1))
    });
    let key = unique_prefix("idle");
    let mut idle = RawClient::connect(proxy.local_addr());
    let mut blocked = RawClient::connect(proxy.local_addr());
    assert_eq!(idle.call(&["PING"]), Reply::Simple("PONG".into()));
    blocked.send(&[b"BLPOP", key.as_bytes(), b"3"]);
    let started = Instant::now();
    idle.is_closed_by_server().unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // BLPOP's own 3 s timeout answers it: it was never idle.
    assert_eq!(blocked.read_reply(), Reply::Array(None));
}

#[test]
fn a_client_that_does_not_read_is_disconnected_at_the_output_limit() {
    let _serial = serial();
    let limit = 1024 * 1024;
    let proxy = start_proxy_configured(vec![shared().seed_url()], |c| {
        c.clients.output_buffer_limit = limit;
    });
    let key = unique_prefix("obl");
    let mut writer = RawClient::connect(proxy.local_addr());
    let value = "x".repeat(64 * 1024);
    assert_eq!(
        writer.call(&["SET", &key, &value]),
        Reply::Simple("OK".into())
    );

    // 2,000 GETs of 64 KiB (125 MiB of replies) without reading any.
    let mut stream = TcpStream::connect(proxy.local_addr()).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let one = common::raw::encode(&[b"GET", key.as_bytes()]);
    let mut written = 0;
    for _ in 0..2000 {
        if stream.write_all(&one).is_err() {
            break; // already closed by the proxy
        }
        written += 1;
    }
    // Reading now drains what the kernel buffered, then meets the close: far fewer bytes
    // than the replies to every GET, and an end of stream, not a read timeout.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    let ended = loop {
        match std::io::Read::read(&mut stream, &mut buf) {
            Ok(0) => break "eof".to_string(),
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset".into(),
            Err(e) => break format!("error {e}"),
        }
    };
    assert!(
        ended == "eof" || ended == "reset",
        "{ended} after {total} bytes"
    );
    assert!(
        total < written * 64 * 1024 / 2,
        "{total} bytes of replies for {written} GETs: not disconnected at the limit"
    );
    // Other clients are unaffected.
    assert_eq!(writer.call(&["STRLEN", &key]), Reply::Int(64 * 1024));
}

#[test]
fn the_binary_follows_an_apps_redis_environment() {
    let _serial = serial();
    let cluster = shared();
    let proxy = Binary::start(
        &[],
        &[
            ("REDIS_HOST", "127.0.0.1".to_string()),
            ("REDIS_PORT", cluster.seed_port().to_string()),
            ("REDIS_SSL", "false".to_string()),
        ],
    );
    let key = unique_prefix("env");
    let mut c = RawClient::connect(proxy.addr);
    assert_eq!(c.call(&["SET", &key, "1"]), Reply::Simple("OK".into()));
    assert_eq!(c.call(&["GET", &key]), Reply::Bulk(Some(b"1".to_vec())));
}

#[test]
fn sighup_reloads_passwords_and_limits_and_names_what_it_cannot() {
    let _serial = serial();
    let cluster = shared();
    let dir = std::env::temp_dir().join(unique_prefix("reload"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("slotproxy.toml");
    let write_config = |password: &str, workers: usize, max_clients: usize, level: &str| {
        std::fs::write(
            &file,
            format!(
                "upstreams = [\"{}\"]\nrequirepass = \"{password}\"\nworkers = {workers}\nmax_clients = {max_clients}\nlog_level = \"{level}\"\n",
                cluster.seed_url()
            ),
        )
        .unwrap();
    };
    write_config("first-pw", 2, 100, "info");
    let proxy = Binary::start(&["--config", &file.to_string_lossy()], &[]);
    let mut old = RawClient::connect(proxy.addr);
    assert_eq!(old.call(&["AUTH", "first-pw"]), Reply::Simple("OK".into()));

    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(
        !log.contains("client connected"),
        "no debug lines at info:\n{log}"
    );
    write_config("second-pw", 3, 2, "debug");
    proxy.signal("-HUP");
    wait_until("the reload is logged", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
        if log.contains("configuration reloaded") {
            Ok(())
        } else {
            Err(log)
        }
    });
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(
        log.contains("not reloaded") && log.contains("workers"),
        "the log must name what was not reloaded:\n{log}"
    );
    assert!(
        !log.contains("second-pw") && !log.contains("first-pw"),
        "{log}"
    );
    // The connected client stays connected and authenticated.
    assert_eq!(old.call(&["PING"]), Reply::Simple("PONG".into()));
    // New clients need the new password.
    let mut new = RawClient::connect(proxy.addr);
    assert_eq!(
        new.call(&["AUTH", "first-pw"]).error(),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(new.call(&["AUTH", "second-pw"]), Reply::Simple("OK".into()));
    // The new level applies at once: a client's connection is logged at debug.
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(
        log.contains("client connected"),
        "debug lines after the reload:\n{log}"
    );
    // max_clients went down to 2: a third client is refused.
    let mut third = RawClient::connect(proxy.addr);
    assert_eq!(
        third.read_reply().error(),
        "ERR max number of clients reached"
    );

    // An invalid file is refused whole; the running configuration stays.
    std::fs::write(&file, "max_clients = 0\nlisten = \"nope\"\n").unwrap();
    proxy.signal("-HUP");
    wait_until("the refusal is logged", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&proxy.log).unwrap_or_default();
        if log.contains("reload refused") {
            Ok(())
        } else {
            Err(log)
        }
    });
    assert_eq!(new.call(&["PING"]), Reply::Simple("PONG".into()));
    let _ = std::fs::remove_dir_all(&dir);
}

//! Client authentication to the proxy: `requirepass` and an ACL-style users file, through raw
//! RESP, the `redis` crate and `redis-cli`, and never a secret in an error or the metrics.

mod common;

use std::process::Command;

use common::raw::{RawClient, Reply};
use common::{run_with_timeout, shared, start_proxy_configured, unique_prefix};
use slotproxy::config::Secret;

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

#[test]
fn requirepass_gates_every_command_until_auth() {
    let cluster = shared();
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.auth.requirepass = Some(Secret("s3cret-pw".into()));
    });
    let key = unique_prefix("auth");
    let mut c = RawClient::connect(proxy.local_addr());

    assert_eq!(c.call(&["GET", &key]).error(), NOAUTH);
    assert_eq!(c.call(&["PING"]).error(), NOAUTH);
    assert_eq!(c.call(&["MULTI"]).error(), NOAUTH);
    let hello = c.call(&["HELLO", "3"]).error().to_string();
    assert!(hello.starts_with("NOAUTH HELLO must be called"), "{hello}");
    let wrong = c.call(&["AUTH", "not-it"]).error().to_string();
    assert_eq!(wrong, WRONGPASS);
    assert!(!wrong.contains("not-it"));
    assert_eq!(c.call(&["AUTH", "s3cret-pw"]), ok());
    assert_eq!(c.call(&["SET", &key, "v"]), ok());
    assert_eq!(c.call(&["GET", &key]), Reply::Bulk(Some(b"v".to_vec())));
    // RESET makes the client anonymous again, as on Redis.
    assert_eq!(c.call(&["RESET"]), Reply::Simple("RESET".into()));
    assert_eq!(c.call(&["GET", &key]).error(), NOAUTH);

    // HELLO with AUTH authenticates and switches protocol in one go.
    let mut h = RawClient::connect(proxy.local_addr());
    assert_eq!(
        h.call(&["HELLO", "3", "AUTH", "default", "wrong"]).error(),
        WRONGPASS
    );
    assert!(matches!(
        h.call(&["HELLO", "3", "AUTH", "default", "s3cret-pw"]),
        Reply::Map(_)
    ));
    assert_eq!(h.call(&["GET", &key]), Reply::Bulk(Some(b"v".to_vec())));

    // Real clients: the redis crate with the password in its URL, redis-cli with -a.
    let url = format!(
        "redis://:s3cret-pw@127.0.0.1:{}/",
        proxy.local_addr().port()
    );
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let got: String = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(got, "v");
    let bad = format!("redis://:nope@127.0.0.1:{}/", proxy.local_addr().port());
    let refused = redis::Client::open(bad.as_str()).unwrap().get_connection();
    assert!(refused.is_err(), "a wrong password must be refused");
    let mut cli = Command::new(common::cli_program());
    cli.args(["-p", &proxy.local_addr().port().to_string()])
        .args(["--no-auth-warning", "-a", "s3cret-pw", "GET", &key]);
    let out = run_with_timeout(cli, std::time::Duration::from_secs(10));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v");

    // No secret in the metrics.
    let admin = proxy.admin_addr().unwrap();
    let (_, metrics) = common::http::get(admin, "/metrics");
    assert!(!metrics.contains("s3cret-pw") && !metrics.contains("not-it"));
}

#[test]
fn users_file_users_authenticate_by_name() {
    let cluster = shared();
    let dir = std::env::temp_dir().join(unique_prefix("users"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users.acl");
    // sha256("hashed-pw")
    let hash = "d53a3e619328665a84a4cf3c1057b09eb45c71915d361a475c656359e9130530";
    std::fs::write(
        &file,
        format!(
            "# app users\nuser app on >app-pw ~* +@all\nuser ops on >ops-1 >ops-2\nuser gone off >gone-pw\nuser hashed on #{hash}\nuser default off\n"
        ),
    )
    .unwrap();
    let proxy = start_proxy_configured(vec![cluster.seed_url()], |c| {
        c.auth.users_file = Some(file.to_string_lossy().into_owned());
    });
    let mut c = RawClient::connect(proxy.local_addr());
    assert_eq!(c.call(&["PING"]).error(), NOAUTH);
    assert_eq!(c.call(&["AUTH", "app", "wrong"]).error(), WRONGPASS);
    assert_eq!(c.call(&["AUTH", "gone", "gone-pw"]).error(), WRONGPASS);
    assert_eq!(c.call(&["AUTH", "nobody", "x"]).error(), WRONGPASS);
    // The default user is off: a bare password can't log in.
    assert_eq!(c.call(&["AUTH", "app-pw"]).error(), WRONGPASS);
    assert_eq!(c.call(&["AUTH", "ops", "ops-2"]), ok());
    assert_eq!(c.call(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(c.call(&["AUTH", "app", "app-pw"]), ok());
    assert_eq!(c.call(&["AUTH", "hashed", "hashed-pw"]), ok());

    let url = format!(
        "redis://app:app-pw@127.0.0.1:{}/",
        proxy.local_addr().port()
    );
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_users_file_with_narrow_rules_is_refused_at_start() {
    let cluster = shared();
    let dir = std::env::temp_dir().join(unique_prefix("users-bad"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("users.acl");
    std::fs::write(&file, "user app on >pw -@dangerous\nuser x on #nothex\n").unwrap();
    let mut config = slotproxy::Config::default();
    config.listener.listen = "127.0.0.1:0".into();
    config.cluster.upstreams = slotproxy::config::parse_upstreams(&[cluster.seed_url()]).unwrap();
    config.admin.listen = None;
    config.auth.users_file = Some(file.to_string_lossy().into_owned());
    let error = match slotproxy::Proxy::start(config) {
        Ok(_) => panic!("a users file with -@dangerous must be refused"),
        Err(e) => e.to_string(),
    };
    // Both problems at once; neither echoes the rule text.
    assert!(
        error.contains("line 1") && error.contains("line 2"),
        "{error}"
    );
    assert!(!error.contains("dangerous"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

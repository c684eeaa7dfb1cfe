//! The `slotproxy` binary: flags, logging, then the library does the rest.

use std::process::ExitCode;

use clap::Parser;

/// The request path allocates small, short-lived buffers and futures on every worker thread;
/// mimalloc's thread-local free lists serve them far cheaper than glibc's malloc (measured:
/// glibc's malloc/free were a fifth of the proxy's CPU time under pipelined load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use slotproxy::config::LogFormat;
use slotproxy::{Config, Proxy};

/// A cluster-aware Redis proxy: one plain Redis endpoint in front of a Redis Cluster.
#[derive(Parser, Debug)]
#[command(name = "slotproxy", version, about)]
struct Args {
    /// Client listener address [default: 127.0.0.1:6380]
    #[arg(long, env = "SLOTPROXY_LISTEN")]
    listen: Option<String>,
    /// Seed node URL, redis://[user[:password]@]host:port (rediss:// for TLS); repeat or comma-separate
    #[arg(long = "upstream", env = "SLOTPROXY_UPSTREAM", value_delimiter = ',')]
    upstreams: Vec<String>,
    /// Admin HTTP listener (/healthz, /readyz, /metrics) [default: 127.0.0.1:9180]
    #[arg(long, env = "SLOTPROXY_ADMIN_LISTEN")]
    admin_listen: Option<String>,
    /// Worker threads [default: available cores]
    #[arg(long, env = "SLOTPROXY_WORKERS")]
    workers: Option<usize>,
    /// Where read-only commands go: primary, prefer-replica, replica or any [default: primary]
    #[arg(long, env = "SLOTPROXY_READ_FROM")]
    read_from: Option<slotproxy::config::ReadFrom>,
    /// Run CONFIG SET, CONFIG RESETSTAT, keyless DEBUG, ACL SETUSER/DELUSER on every node
    #[arg(long, env = "SLOTPROXY_ADMIN_COMMANDS")]
    admin_commands: bool,
    /// CA bundle (PEM) for the nodes' certificates [default: the system's trust store]
    #[arg(long, env = "SLOTPROXY_UPSTREAM_TLS_CA")]
    upstream_tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for nodes that require one (mTLS)
    #[arg(long, env = "SLOTPROXY_UPSTREAM_TLS_CERT")]
    upstream_tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --upstream-tls-cert
    #[arg(long, env = "SLOTPROXY_UPSTREAM_TLS_KEY")]
    upstream_tls_key: Option<std::path::PathBuf>,
    /// Accept any node certificate (tests and emergencies only: no protection on the path)
    #[arg(long, env = "SLOTPROXY_UPSTREAM_TLS_INSECURE")]
    upstream_tls_insecure: bool,
    /// Certificate (PEM) of the client listener, which then accepts TLS clients only
    #[arg(long, env = "SLOTPROXY_TLS_CERT")]
    tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(long, env = "SLOTPROXY_TLS_KEY")]
    tls_key: Option<std::path::PathBuf>,
    /// CA bundle (PEM): clients must present a certificate it signed (mTLS)
    #[arg(long, env = "SLOTPROXY_TLS_CLIENT_CA")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// TOML configuration file (flags override it)
    #[arg(long, env = "SLOTPROXY_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// Validate the configuration and exit
    #[arg(long, env = "SLOTPROXY_CHECK_CONFIG")]
    check_config: bool,
    /// Log filter, e.g. info or slotproxy=debug (RUST_LOG also works)
    #[arg(long, env = "SLOTPROXY_LOG_LEVEL")]
    log_level: Option<String>,
    /// Password clients must AUTH with (the default user's); prefer the environment variable
    #[arg(long, env = "SLOTPROXY_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// ACL-style users file: `user alice on >password` per line
    #[arg(long, env = "SLOTPROXY_USERS_FILE")]
    users_file: Option<String>,
    /// Most client connections at once [default: 10000]
    #[arg(long, env = "SLOTPROXY_MAX_CLIENTS")]
    max_clients: Option<usize>,
    /// Close clients idle for this many seconds; 0 = never [default: 0]
    #[arg(long, env = "SLOTPROXY_CLIENT_IDLE_TIMEOUT", value_name = "SECS")]
    client_idle_timeout: Option<u64>,
    /// Disconnect a client whose unread replies pass this many bytes; 0 = no limit [default: 67108864]
    #[arg(
        long,
        env = "SLOTPROXY_CLIENT_OUTPUT_BUFFER_LIMIT",
        value_name = "BYTES"
    )]
    client_output_buffer_limit: Option<usize>,
    /// Seconds a shutdown waits for owed replies to be written [default: 10]
    #[arg(long, env = "SLOTPROXY_SHUTDOWN_GRACE", value_name = "SECS")]
    shutdown_grace: Option<u64>,
    /// Log format on stderr: text or json [default: text]
    #[arg(long, env = "SLOTPROXY_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

/// The configuration: defaults, then the file (`--config`), then flags and their `SLOTPROXY_*`
/// variables. Run again on SIGHUP, so a reload sees exactly what a restart would.
fn build_config(args: &Args) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| Config::from_toml(&t))
        {
            Ok(config) => config,
            Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
        },
        None => Config::default(),
    };
    if let Some(listen) = args.listen.clone() {
        config.listen = listen;
    }
    if !args.upstreams.is_empty() {
        config.upstreams = args.upstreams.clone();
    }
    if let Some(admin) = args.admin_listen.clone() {
        config.admin_listen = Some(admin);
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    if args.admin_commands {
        config.admin_commands = true;
    }
    if let Some(read_from) = args.read_from {
        config.read_from = read_from;
    }
    if let Some(password) = args.requirepass.clone() {
        config.requirepass = Some(slotproxy::config::Secret(password));
    }
    if let Some(path) = args.users_file.clone() {
        config.users_file = Some(path);
    }
    if let Some(n) = args.max_clients {
        config.max_clients = n;
    }
    if let Some(secs) = args.client_idle_timeout {
        config.client_idle_timeout = secs;
    }
    if let Some(bytes) = args.client_output_buffer_limit {
        config.client_output_buffer_limit = bytes;
    }
    if let Some(secs) = args.shutdown_grace {
        config.shutdown_grace = secs;
    }
    if config.upstreams.is_empty() {
        config.upstreams.extend(upstream_from_app_env());
    }
    let backend_tls = &mut config.backend.tls;
    if let Some(path) = &args.upstream_tls_ca {
        backend_tls.ca_file = Some(path.clone());
    }
    if let Some(path) = &args.upstream_tls_cert {
        backend_tls.cert_file = Some(path.clone());
    }
    if let Some(path) = &args.upstream_tls_key {
        backend_tls.key_file = Some(path.clone());
    }
    if args.upstream_tls_insecure {
        backend_tls.insecure_skip_verify = true;
    }
    let client_tls = &mut config.client.tls;
    if let Some(path) = &args.tls_cert {
        client_tls.cert_file = Some(path.clone());
    }
    if let Some(path) = &args.tls_key {
        client_tls.key_file = Some(path.clone());
    }
    if let Some(path) = &args.tls_client_ca {
        client_tls.client_ca_file = Some(path.clone());
    }
    if let Some(level) = args.log_level.clone() {
        config.log_level = Some(level);
    }
    if let Some(format) = args.log_format {
        config.log_format = format;
    }
    Ok(config)
}

/// Changes the log filter of the running logger (SIGHUP).
type SetLogLevel = Box<dyn Fn(&str) -> Result<(), String> + Send>;

/// The filter to log with: the configured level, else `RUST_LOG`, else `info`.
fn log_filter(level: Option<&str>) -> String {
    level
        .map(str::to_string)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string())
}

/// Installs the stderr logger. JSON puts one object per line (fields flattened, the current
/// span included) so collectors such as Fluent Bit or Loki parse it without a custom pattern.
/// Returns how to change its level later.
fn init_logging(level: Option<&str>, format: LogFormat) -> SetLogLevel {
    let filter = log_filter(level);
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|error| {
        eprintln!("slotproxy: ignoring the log filter '{filter}' ({error}); using info");
        "info".into()
    });
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let parse = |filter: &str| {
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| format!("'{filter}': {e}"))
    };
    match format {
        LogFormat::Text => {
            let builder = builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |filter| handle.reload(parse(filter)?).map_err(|e| e.to_string()))
        }
        LogFormat::Json => {
            let builder = builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            Box::new(move |filter| handle.reload(parse(filter)?).map_err(|e| e.to_string()))
        }
    }
}

/// SIGHUP: reads the configuration again and applies what can change while running; names
/// what can't (it keeps its old value until a restart).
fn reload(args: &Args, reloader: &slotproxy::Reloader, set_log_level: &SetLogLevel) {
    let config = match build_config(args) {
        Ok(config) => config,
        Err(error) => {
            tracing::warn!(%error, "reload failed; the running configuration stays");
            return;
        }
    };
    if let Err(error) = set_log_level(&log_filter(config.log_level.as_deref())) {
        tracing::warn!(%error, "reload: the log level stays");
    }
    match reloader.reload(&config) {
        Ok(report) => {
            tracing::info!(applied = ?report.applied, "configuration reloaded");
            if !report.not_reloaded.is_empty() {
                tracing::warn!(
                    settings = ?report.not_reloaded,
                    "changed settings that are not reloaded (restart to apply them)"
                );
            }
        }
        Err(problems) => {
            for problem in problems {
                tracing::warn!(%problem, "reload refused: invalid configuration");
            }
        }
    }
}

/// The upstream from an application's usual settings (`REDIS_HOST`, `REDIS_PORT`,
/// `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_SSL`), used when no upstream is configured, so an
/// app's existing environment drives its sidecar.
fn upstream_from_app_env() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let host = var("REDIS_HOST")?;
    let port = var("REDIS_PORT").unwrap_or_else(|| "6379".to_string());
    let scheme = match var("REDIS_SSL")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("true" | "1" | "yes") => "rediss",
        _ => "redis",
    };
    let userinfo = match (var("REDIS_USERNAME"), var("REDIS_PASSWORD")) {
        (Some(user), Some(pass)) => format!("{user}:{pass}@"),
        (None, Some(pass)) => format!(":{pass}@"),
        (Some(user), None) => format!("{user}@"),
        (None, None) => String::new(),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]") // an IPv6 address
    } else {
        host
    };
    Some(format!("{scheme}://{userinfo}{host}:{port}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The configuration is built before logging starts because it may choose the log format;
    // its errors go straight to stderr.
    let config = match build_config(&args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("slotproxy: {error}");
            return ExitCode::from(2);
        }
    };
    let set_log_level = init_logging(config.log_level.as_deref(), config.log_format);
    // Settings and TLS files together, so one run lists every problem.
    let problems: Vec<String> = [config.validate(), slotproxy::check_tls(&config)]
        .into_iter()
        .filter_map(Result::err)
        .flatten()
        .collect();
    if !problems.is_empty() {
        eprintln!("slotproxy: invalid configuration:");
        for p in problems {
            eprintln!("  {p}");
        }
        return ExitCode::from(2);
    }
    if args.check_config {
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    // Signal handlers first: a SIGHUP or SIGTERM that arrives while the proxy starts must not
    // kill it with the default action.
    let Ok(signal_runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("slotproxy: cannot start the signal runtime");
        return ExitCode::FAILURE;
    };
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let _entered = signal_runtime.enter();
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(hup)) => (term, hup),
            _ => {
                eprintln!("slotproxy: cannot install the signal handlers");
                return ExitCode::FAILURE;
            }
        }
    };
    let proxy = match Proxy::start(config) {
        Ok(proxy) => proxy,
        Err(error) => {
            eprintln!("slotproxy: {error}");
            return ExitCode::FAILURE;
        }
    };
    let token = proxy.shutdown_token();
    let reloader = proxy.reloader();
    std::thread::spawn(move || {
        let (mut term, mut hup) = signals;
        signal_runtime.block_on(async {
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    _ = hup.recv() => reload(&args, &reloader, &set_log_level),
                }
            }
            tracing::info!(
                "shutting down: no new clients; answering the commands already received"
            );
            token.cancel();
        });
    });
    proxy.wait();
    ExitCode::SUCCESS
}

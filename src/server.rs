//! Listener sockets and the accept loop: one listener per worker on the same address with
//! SO_REUSEPORT, so the kernel spreads new connections across workers without a shared accept
//! queue; each worker thread runs its own single-threaded runtime and serves the clients it
//! accepts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::client::{self, session};
use crate::config::IoMode;
use crate::dispatch::Worker;
use crate::shared::Shared;

/// How often a worker moves its command latencies into the shared histograms (and looks
/// whether clients left, to give their memory back).
const LATENCY_FOLD_INTERVAL: Duration = Duration::from_secs(1);

/// The I/O the workers use, decided once at start: whether io_uring works here, and what
/// `io` asks for. `Err` only for `uring` where it does not work.
pub fn use_io_uring(mode: IoMode) -> Result<bool, String> {
    #[cfg(target_os = "linux")]
    let probe = client::uring::probe;
    #[cfg(not(target_os = "linux"))]
    let probe = || Err(std::io::Error::other("io_uring is Linux only"));
    decide_io(mode, probe)
}

fn decide_io(mode: IoMode, probe: impl FnOnce() -> std::io::Result<()>) -> Result<bool, String> {
    match mode {
        IoMode::Epoll => Ok(false),
        IoMode::Uring => probe()
            .map(|()| true)
            .map_err(|error| format!("io = \"uring\" but io_uring is not available here: {error}")),
        IoMode::Auto => match probe() {
            Ok(()) => Ok(true),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "io_uring is not available (a seccomp profile, kernel.io_uring_disabled or \
                     a kernel before 6.0): client sockets use epoll"
                );
                Ok(false)
            }
        },
    }
}

/// Opens `count` listeners on `addr`; with port 0, all share the port the first one got.
pub fn bind_listeners(
    addr: SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let listener = bind_one(addr)?;
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Runs a worker's accept loop on the current thread until `shutdown`. `io_uring`: plain TCP
/// clients are served through this worker's ring (`client::uring`) rather than epoll.
pub fn run_worker(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    shutdown: CancellationToken,
    io_uring: bool,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let listener = TcpListener::from_std(listener)?;
        if let Ok(addr) = listener.local_addr() {
            shared.clients.set_local_addr(addr);
        }
        let worker = Worker::new(shared.clone());
        let sessions = TaskTracker::new();
        let uring = io_uring.then(start_uring).flatten();
        let near_cache_feed = worker.near_cache.clone().map(|cache| {
            tokio::task::spawn_local(crate::dispatch::near_cache::feed::run(
                cache,
                shared.clone(),
            ))
        });
        // Clients accepted since the release check last looked.
        let arrivals = std::rc::Rc::new(std::cell::Cell::new(0_usize));
        let folding = {
            let worker = worker.clone();
            let sessions = sessions.clone();
            let driver = uring.as_ref().map(|(driver, _)| driver.clone());
            let arrivals = arrivals.clone();
            tokio::task::spawn_local(async move {
                let mut clients = 0;
                loop {
                    tokio::time::sleep(LATENCY_FOLD_INTERVAL).await;
                    worker.fold_latencies();
                    // The allocator is per thread: this worker's departed clients' memory is
                    // given back from this thread.
                    let now = sessions.len();
                    if crate::memory::worth_releasing(clients, arrivals.replace(0), now) {
                        crate::memory::release_now();
                    }
                    if now == 0 {
                        if let Some(driver) = &driver {
                            release_idle_buffers(driver);
                        }
                    }
                    clients = now;
                }
            })
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        arrivals.set(arrivals.get() + 1);
                        let _ = stream.set_nodelay(true);
                        match worker.shared.client_tls.load_full() {
                            None => {
                                let local = session::LocalEnd::of(&stream);
                                match &uring {
                                    None => sessions.spawn_local(session::serve(worker.clone(), stream, peer, local)),
                                    Some((driver, _)) => match adopt(driver, stream) {
                                        Ok(stream) => sessions.spawn_local(session::serve(worker.clone(), stream, peer, local)),
                                        Err(error) => {
                                            tracing::warn!(%error, %peer, "cannot hand a client to io_uring");
                                            continue;
                                        }
                                    },
                                }
                            }
                            Some(tls) => sessions.spawn_local(client::tls::serve((*tls).clone(), worker.clone(), stream, peer, shutdown.clone())),
                        };
                    }
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        // Stop accepting, then let every session write the replies it owes (each closes once
        // its commands are answered; idle ones at once), within the grace period.
        drop(listener);
        shared.clients.shut_down();
        sessions.close();
        let grace = shared.client_limits.load().shutdown_grace;
        if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
            tracing::warn!(
                clients = sessions.len(),
                grace_secs = grace.as_secs(),
                "shutdown grace period over: closing the clients still waiting for replies"
            );
        }
        if let Some((driver, task)) = uring {
            flush_uring(&driver, grace).await;
            task.abort();
        }
        folding.abort();
        if let Some(feed) = near_cache_feed {
            feed.abort();
        }
        worker.fold_latencies();
        Ok(())
    })
}

#[cfg(target_os = "linux")]
type Uring = (
    std::rc::Rc<client::uring::Driver>,
    tokio::task::JoinHandle<()>,
);
#[cfg(not(target_os = "linux"))]
type Uring = (std::rc::Rc<()>, tokio::task::JoinHandle<()>);

/// This worker's io_uring driver, running; `None` (epoll) if its ring cannot be set up although
/// the probe at start passed (a per-process limit reached by many workers, say).
#[cfg(target_os = "linux")]
fn start_uring() -> Option<Uring> {
    match client::uring::Driver::new() {
        Ok(driver) => {
            let task = tokio::task::spawn_local(driver.clone().run());
            Some((driver, task))
        }
        Err(error) => {
            tracing::error!(%error, "this worker cannot set up its io_uring ring: its clients use epoll");
            None
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn start_uring() -> Option<Uring> {
    None
}

/// An idle worker's io_uring receive buffers go back to the system (see
/// `Driver::release_buffers`).
#[cfg(target_os = "linux")]
fn release_idle_buffers(driver: &client::uring::Driver) {
    driver.release_buffers();
}

#[cfg(not(target_os = "linux"))]
fn release_idle_buffers(_: &()) {}

#[cfg(target_os = "linux")]
fn adopt(
    driver: &std::rc::Rc<client::uring::Driver>,
    stream: tokio::net::TcpStream,
) -> std::io::Result<client::uring::UringStream> {
    // Out of tokio's reactor: from here on the ring alone reads and writes the socket.
    let stream = stream.into_std()?;
    Ok(client::uring::UringStream::new(driver, stream.into()))
}

#[cfg(not(target_os = "linux"))]
fn adopt(
    _: &std::rc::Rc<()>,
    stream: tokio::net::TcpStream,
) -> std::io::Result<tokio::net::TcpStream> {
    Ok(stream)
}

/// Replies that closed sessions handed to the ring may still be on their way: wait for them
/// (within the shutdown grace period) before the ring goes with the worker.
#[cfg(target_os = "linux")]
async fn flush_uring(driver: &client::uring::Driver, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while driver.sockets() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(not(target_os = "linux"))]
async fn flush_uring(_: &(), _: Duration) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_io_mode_and_the_probe_decide() {
        let works = || Ok(());
        let refused = || Err(std::io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(decide_io(IoMode::Auto, works), Ok(true));
        assert_eq!(decide_io(IoMode::Auto, refused), Ok(false));
        assert_eq!(decide_io(IoMode::Epoll, works), Ok(false));
        assert_eq!(decide_io(IoMode::Uring, works), Ok(true));
        let error = decide_io(IoMode::Uring, refused).unwrap_err();
        assert!(error.contains("not available"), "{error}");
    }
}

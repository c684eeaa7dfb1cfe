//! Client socket I/O through io_uring (`io = "auto" | "uring"`), where the kernel allows it.
//!
//! With epoll, every client turn at `-P 1` costs two system calls: one `recv` and one `send`.
//! Here each worker has one ring: a multishot receive per socket delivers requests into
//! provided buffers without being asked again, and every send and re-armed receive that the
//! worker's sessions queue in a turn goes to the kernel in one `io_uring_enter`. Sessions see
//! the same readiness interface as with epoll ([`UringStream`]), so the session loop is one.
//!
//! Container runtimes often forbid io_uring (Docker's default seccomp profile does), and
//! `kernel.io_uring_disabled` may: [`probe`] tries everything the driver needs at start, and
//! `auto` falls back to epoll, saying so once.

mod conn;
mod driver;
mod ring;
mod stream;

pub use driver::Driver;
pub use ring::probe;
pub use stream::UringStream;

use crate::config::IoMode;

/// The I/O the workers use, decided once at start: whether io_uring works here, and what
/// `io` asks for. `Err` only for `uring` where it does not work.
pub fn decide(mode: IoMode) -> Result<bool, String> {
    decide_with(mode, probe)
}

fn decide_with(mode: IoMode, probe: impl FnOnce() -> std::io::Result<()>) -> Result<bool, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_and_the_probe_decide() {
        let works = || Ok(());
        let refused = || Err(std::io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(decide_with(IoMode::Auto, works), Ok(true));
        assert_eq!(decide_with(IoMode::Auto, refused), Ok(false));
        assert_eq!(decide_with(IoMode::Epoll, works), Ok(false));
        assert_eq!(decide_with(IoMode::Uring, works), Ok(true));
        let error = decide_with(IoMode::Uring, refused).unwrap_err();
        assert!(error.contains("not available"), "{error}");
    }
}

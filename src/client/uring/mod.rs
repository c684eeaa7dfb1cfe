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

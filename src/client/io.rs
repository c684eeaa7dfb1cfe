//! What a session needs from its client socket: readiness waits and non-blocking reads and
//! writes, so one session loop serves plain TCP clients directly and TLS clients through the
//! socket pair that `client::tls` bridges (a TLS stream cannot be read by readiness).
//!
//! Static dispatch: each socket type gets its own copy of the session loop, so the plain TCP
//! path compiles to exactly the calls it made before.

use std::future::Future;
use std::io;
use std::task::{Context, Poll};

use bytes::BufMut;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// A readiness-based client socket (tokio's `TcpStream` and `UnixStream` methods of the same
/// names).
pub trait ClientStream {
    /// Waits until the socket may be readable: polls [`ClientStream::poll_read_ready`], whose
    /// waker lives in the socket's own registration. tokio's `readable()` / `writable()` futures
    /// carry a waiter node of 152 bytes each, and a session waits on both in one `select!`, so
    /// every session task, idle or not, carried both (measured: the task went from 2,176 to
    /// 1,920 bytes, mimalloc's 2 KiB size class instead of 2.5 KiB). One task owns each socket,
    /// so the single waker per direction is enough.
    fn readable(&self) -> impl Future<Output = io::Result<()>> {
        std::future::poll_fn(move |cx| self.poll_read_ready(cx))
    }
    /// Waits until the socket may be writable (as [`ClientStream::readable`]).
    fn writable(&self) -> impl Future<Output = io::Result<()>> {
        std::future::poll_fn(move |cx| self.poll_write_ready(cx))
    }
    /// Polls for read readiness. Cheaper than a `readable()` future made on every turn of
    /// the session loop (no waiter to link and unlink); only the latest waker is woken, which
    /// suits a socket that one session owns.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Polls for write readiness (as [`ClientStream::poll_read_ready`]).
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Writes what the socket takes now, or `WouldBlock`.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    /// Reads what the socket has now into `buf`, or `WouldBlock`.
    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize>;
    /// Runs `f`, clearing the readiness for `interest` if it returns `WouldBlock`.
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

/// Forwards every method to the inherent method of the same name; the readiness waits are the
/// trait's own, which poll `poll_read_ready` / `poll_write_ready` rather than awaiting tokio's
/// `readable()` / `writable()`.
macro_rules! client_stream {
    ($ty:ty) => {
        impl ClientStream for $ty {
            #[inline]
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$ty>::poll_read_ready(self, cx)
            }
            #[inline]
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$ty>::poll_write_ready(self, cx)
            }
            #[inline]
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$ty>::try_write(self, buf)
            }
            #[inline]
            fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
                <$ty>::try_read_buf(self, buf)
            }
            #[inline]
            fn try_io<R>(
                &self,
                interest: Interest,
                f: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                <$ty>::try_io(self, interest, f)
            }
        }
    };
}

client_stream!(TcpStream);
client_stream!(UnixStream);

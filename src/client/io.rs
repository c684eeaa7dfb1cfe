//! What a session needs from its client socket: readiness waits and non-blocking reads and
//! writes, so one session loop serves plain TCP clients directly and TLS clients through the
//! socket pair that `client::tls` bridges (a TLS stream cannot be read by readiness).
//!
//! Static dispatch: each socket type gets its own copy of the session loop, so the plain TCP
//! path compiles to exactly the calls it made before.

use std::future::Future;
use std::io;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// A readiness-based client socket (tokio's `TcpStream` and `UnixStream` methods of the same
/// names).
pub trait ClientStream {
    /// Waits until the socket may be readable: polls [`ClientStream::poll_read_ready`], whose
    /// waker lives in the socket's own registration. tokio's `readable()` / `writable()` futures
    /// carry a waiter node of 152 bytes each, and a session waits on both in one wait, so
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

    /// Appends what the socket has now to `input`: the number of bytes, `Ok(0)` at the end of
    /// the stream, or `WouldBlock`. `scratch` is the worker's read buffer, for sockets that
    /// read through one ([`read_draining`]).
    fn read_into(&self, scratch: &mut BytesMut, input: &mut BytesMut) -> io::Result<usize>;

    /// Writes from the front of `output` what the socket takes now and removes it from
    /// `output`: the number of bytes, 0 when it takes none. A socket may take `output`'s
    /// buffer itself, leaving an empty one in its place: callers that must see a large
    /// buffer's memory go write through [`write_copying`].
    fn write_from(&self, output: &mut BytesMut) -> io::Result<usize> {
        write_copying(self, output)
    }
}

/// [`ClientStream::write_from`] through [`ClientStream::try_write`]: the socket copies what
/// it takes.
pub(crate) fn write_copying<S: ClientStream + ?Sized>(
    stream: &S,
    output: &mut BytesMut,
) -> io::Result<usize> {
    match stream.try_write(output) {
        Ok(n) => {
            output.advance(n);
            Ok(n)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) => Err(e),
    }
}

/// The reads of an epoll socket that [`read_draining`] is made of (tokio's `TcpStream` and
/// `UnixStream` methods of the same names).
trait DrainingRead {
    /// Reads what the socket has now into `buf`, or `WouldBlock`.
    fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize>;
    /// Runs `f`, clearing the readiness for `interest` if it returns `WouldBlock`.
    fn try_io<R>(&self, interest: Interest, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

/// The most one read takes from a readiness-based socket.
const READ_CHUNK: usize = 16 * 1024;

/// Reads what the socket has into `input`, through the worker's scratch buffer: the bytes are
/// then copied into `input` at their real size, so a command waiting for its backend pins a
/// few dozen bytes rather than a whole read buffer (10,000 clients with a GET in flight would
/// otherwise hold 16 KiB each).
///
/// A read that leaves buffer space unused has drained the socket, so the readiness is cleared
/// at once: the next wait goes to epoll instead of costing a `recv` that returns EAGAIN
/// (tokio's `poll_read` does the same; `try_read` does not). With edge-triggered epoll, data
/// arriving later raises a new event, so nothing is missed.
fn read_draining<S: DrainingRead>(
    stream: &S,
    scratch: &mut BytesMut,
    input: &mut BytesMut,
) -> std::io::Result<usize> {
    scratch.clear();
    if scratch.capacity() < READ_CHUNK {
        scratch.reserve(READ_CHUNK);
    }
    let mut read = None;
    let outcome = stream.try_io(Interest::READABLE, || {
        let space = scratch.capacity();
        let n = stream.try_read_buf(scratch)?;
        read = Some(n);
        if n > 0 && n < space {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    let n = match (outcome, read) {
        (Err(e), Some(n)) if e.kind() == std::io::ErrorKind::WouldBlock => n,
        (outcome, _) => outcome?,
    };
    input.extend_from_slice(scratch);
    Ok(n)
}

/// Forwards the socket methods to tokio's inherent methods of the same name, and reads through
/// [`read_draining`]; the readiness waits are the trait's own, which poll `poll_read_ready` /
/// `poll_write_ready` rather than awaiting tokio's `readable()` / `writable()`.
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
            fn read_into(&self, scratch: &mut BytesMut, input: &mut BytesMut) -> io::Result<usize> {
                read_draining(self, scratch, input)
            }
        }

        impl DrainingRead for $ty {
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

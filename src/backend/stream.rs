//! A backend connection's byte stream: plain TCP, or TLS over TCP.
//!
//! One enum rather than a boxed trait object, so the plain path costs a `match` and nothing
//! else: no allocation, no virtual call, and the TCP halves stay tokio's lock-free owned
//! halves. The TLS stream is boxed (it carries rustls's buffers, far larger than a socket) and
//! split with `tokio::io::split`, whose small lock only TLS connections pay for.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// An open, authenticated connection to a node.
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// The read half of a [`BackendStream`], for connection tasks that read and write at once.
pub enum BackendReader {
    Plain(OwnedReadHalf),
    Tls(ReadHalf<Box<TlsStream<TcpStream>>>),
}

/// The write half of a [`BackendStream`].
pub enum BackendWriter {
    Plain(OwnedWriteHalf),
    Tls(WriteHalf<Box<TlsStream<TcpStream>>>),
}

impl BackendStream {
    /// Splits the connection for a reader and a writer polled concurrently by one task.
    pub fn into_split(self) -> (BackendReader, BackendWriter) {
        match self {
            BackendStream::Plain(tcp) => {
                let (r, w) = tcp.into_split();
                (BackendReader::Plain(r), BackendWriter::Plain(w))
            }
            BackendStream::Tls(tls) => {
                let (r, w) = tokio::io::split(tls);
                (BackendReader::Tls(r), BackendWriter::Tls(w))
            }
        }
    }
}

/// Forwards `AsyncRead` to whichever variant is inside.
macro_rules! forward_read {
    ($ty:ident) => {
        impl AsyncRead for $ty {
            #[inline]
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    $ty::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Forwards `AsyncWrite` (vectored writes included) to whichever variant is inside.
macro_rules! forward_write {
    ($ty:ident) => {
        impl AsyncWrite for $ty {
            #[inline]
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    $ty::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            #[inline]
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    $ty::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $ty::Plain(s) => s.is_write_vectored(),
                    $ty::Tls(s) => s.is_write_vectored(),
                }
            }

            #[inline]
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_flush(cx),
                    $ty::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    $ty::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_read!(BackendStream);
forward_read!(BackendReader);
forward_write!(BackendStream);
forward_write!(BackendWriter);

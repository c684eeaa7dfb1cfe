//! A client socket served by the io_uring driver, behind the same readiness interface the
//! session loop uses for epoll sockets: "readable" means the driver holds received bytes (or
//! the end of the stream), "writable" means the driver takes more reply bytes.

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;

use super::conn::{ConnIo, KEEP_BUFFER, OUTBOX_LIMIT, SEND_CHUNK};
use super::driver::{Conn, Driver};
use crate::client::io::{write_copying, ClientStream};

pub struct UringStream {
    driver: Rc<Driver>,
    conn: Rc<Conn>,
}

impl UringStream {
    /// Serves `fd` (a connected, non-blocking TCP socket) through `driver`.
    pub fn new(driver: &Rc<Driver>, fd: OwnedFd) -> UringStream {
        UringStream {
            conn: driver.adopt(fd),
            driver: driver.clone(),
        }
    }
}

fn keep_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

/// Received bytes, the end of the stream, or a failed send (the connection is broken: the
/// session learns it from its read as well, as epoll reports an error to both directions).
fn read_ready(io: &ConnIo) -> bool {
    !io.inbox.is_empty() || io.read_end.is_some() || io.write_error.is_some()
}

/// What a read finds when no bytes wait: the end of the stream, the socket's error, or
/// `WouldBlock`.
fn nothing_received(io: &ConnIo) -> io::Result<usize> {
    match (io.read_end, io.write_error) {
        (Some(Ok(())), _) => Ok(0),
        (Some(Err(errno)), _) | (None, Some(errno)) => Err(io::Error::from_raw_os_error(errno)),
        (None, None) => Err(io::ErrorKind::WouldBlock.into()),
    }
}

fn write_ready(io: &ConnIo) -> bool {
    io.write_error.is_some() || io.queued.len() < OUTBOX_LIMIT
}

impl ClientStream for UringStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut io = self.conn.io.borrow_mut();
        if read_ready(&io) {
            return Poll::Ready(Ok(()));
        }
        keep_waker(&mut io.read_waker, cx);
        drop(io);
        // A receive cancelled while the session was not reading starts again now.
        self.driver.settle(&self.conn);
        Poll::Pending
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut io = self.conn.io.borrow_mut();
        if write_ready(&io) {
            return Poll::Ready(Ok(()));
        }
        keep_waker(&mut io.write_waker, cx);
        Poll::Pending
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut io = self.conn.io.borrow_mut();
        if let Some(errno) = io.write_error {
            return Err(io::Error::from_raw_os_error(errno));
        }
        if !io.send_in_flight {
            let n = buf.len().min(SEND_CHUNK);
            io.sending.extend_from_slice(&buf[..n]);
            io.send_size = n;
            io.send_in_flight = true;
            self.driver.send(&self.conn, &io);
            return Ok(n);
        }
        let room = OUTBOX_LIMIT.saturating_sub(io.queued.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(buf.len());
        io.queued.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// When `input` is empty (a client that waits for each reply, and the end of every
    /// pipeline), the received bytes are copied into it if its buffer can be reused (the
    /// requests split from it are answered and it has the room): the inbox then keeps its own
    /// buffer for the next receive. Otherwise the inbox, already a buffer of the received
    /// bytes' own size, becomes `input` with no copy. Reusing saves, per request at `-P 1`,
    /// an allocation for the inbox, one for sharing the buffer on its first split, and their
    /// frees (about 250 instructions, callgrind); a copy of a request costs a few dozen.
    fn read_into(&self, _scratch: &mut BytesMut, input: &mut BytesMut) -> io::Result<usize> {
        let mut io = self.conn.io.borrow_mut();
        if io.inbox.is_empty() {
            return nothing_received(&io);
        }
        let n = io.inbox.len();
        if input.is_empty() && !input.try_reclaim(n) {
            *input = std::mem::take(&mut io.inbox);
        } else {
            input.extend_from_slice(&io.inbox);
            io.inbox.clear();
            if io.inbox.capacity() > KEEP_BUFFER {
                io.inbox = BytesMut::new();
            }
        }
        drop(io);
        // Reading made room: a receive stopped for a full inbox starts again.
        self.driver.settle(&self.conn);
        Ok(n)
    }

    /// With no send in flight, the session's output itself becomes the send: it is swapped
    /// with the emptied buffer of the last send instead of copied into it.
    fn write_from(&self, output: &mut BytesMut) -> io::Result<usize> {
        let mut io = self.conn.io.borrow_mut();
        if let Some(errno) = io.write_error {
            return Err(io::Error::from_raw_os_error(errno));
        }
        if io.send_in_flight || output.is_empty() || output.len() > SEND_CHUNK {
            drop(io);
            return write_copying(self, output);
        }
        std::mem::swap(&mut io.sending, output);
        output.clear();
        let n = io.sending.len();
        io.send_size = n;
        io.send_in_flight = true;
        self.driver.send(&self.conn, &io);
        Ok(n)
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        {
            let mut io = self.conn.io.borrow_mut();
            io.released = true;
            io.read_waker = None;
            io.write_waker = None;
            io.inbox = BytesMut::new();
        }
        // Cancels the receive; the socket closes once the replies it was given are sent.
        self.driver.settle(&self.conn);
    }
}

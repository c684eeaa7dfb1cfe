//! The per-worker io_uring driver: it owns the ring, keeps every client socket's state in a
//! slab indexed by the operations' `user_data`, submits what the worker's sessions asked for
//! in one `io_uring_enter` per turn, and turns completions into inbox bytes and wake-ups.
//!
//! It runs as one task of the worker's runtime: the ring's eventfd is registered with tokio's
//! reactor (the kernel signals it when completions wait), and sessions kick the task when they
//! queue work. A kick only schedules the task, so it runs after every session already woken
//! in this turn: all their sends and receives go to the kernel in one system call.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::Buf;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::conn::{self, ConnIo, Linger, LingerAction, OpKind, Recv, RecvAction};
use super::ring::{self, BufRing, BUFFER_GROUP};

const IORING_ENTER_GETEVENTS: u32 = 1;

/// Rounds of submit-and-reap per wake-up of the driver before it yields: sends complete
/// inline during submission, and their completions are reaped without another system call.
const MAX_ROUNDS: usize = 8;

/// Completions from one enter past which another enter follows even without a sign of work:
/// the kernel runs task work in bounded batches (20 items per pass on Linux 6.13+), so a
/// busy turn may have left some. (Asking for more with `min_complete` and a zero timeout arms
/// a timer on every enter: measured, 40% of the worker's CPU went to it.)
const MAYBE_MORE: usize = 16;

/// One client socket, owned by the driver while the kernel may still use it.
pub(super) struct Conn {
    fd: OwnedFd,
    slot: usize,
    pub io: RefCell<ConnIo>,
}

pub struct Driver {
    /// The ring's eventfd, signalled when completions are pending, in tokio's reactor.
    readiness: AsyncFd<OwnedFd>,
    ring: RefCell<IoUring>,
    bufs: RefCell<BufRing>,
    conns: RefCell<Slab>,
    /// Work was queued since the task last ran.
    kicked: Cell<bool>,
    /// The task is running a turn: a kick then needs no wake-up (the turn submits it).
    in_turn: Cell<bool>,
    waker: RefCell<Option<Waker>>,
    /// A receive filled a buffer since they were last given back to the system.
    buffers_touched: Cell<bool>,
    /// Entries that did not fit the submission queue, submitted next turn.
    backlog: RefCell<Vec<squeue::Entry>>,
    reaped: RefCell<Vec<(u64, i32, u32)>>,
}

#[derive(Default)]
struct Slab {
    slots: Vec<Option<Rc<Conn>>>,
    free: Vec<usize>,
}

impl Driver {
    /// Sets up this worker's ring; must run inside the worker's runtime (the reactor).
    pub fn new() -> io::Result<Rc<Driver>> {
        let ring = ring::new_ring()?;
        let bufs = ring::buffers(&ring)?;
        // SAFETY: plain syscall; the fd is checked before it is owned.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if eventfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(eventfd) };
        ring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        // The eventfd is never read: the reactor is edge-triggered and every signal is an edge.
        // SAFETY: `readiness` owns the descriptor, so it stays open as long as the registration.
        let readiness = unsafe {
            AsyncFd::register_with_interest(eventfd, Interest::READABLE)
                .map_err(|e| e.into_parts().1)?
        };
        Ok(Rc::new(Driver {
            ring: RefCell::new(ring),
            bufs: RefCell::new(bufs),
            readiness,
            conns: RefCell::new(Slab::default()),
            kicked: Cell::new(false),
            in_turn: Cell::new(false),
            buffers_touched: Cell::new(false),
            waker: RefCell::new(None),
            backlog: RefCell::new(Vec::new()),
            reaped: RefCell::new(Vec::with_capacity(256)),
        }))
    }

    /// Takes a connected client socket over; its receive starts at once.
    pub(super) fn adopt(self: &Rc<Self>, fd: OwnedFd) -> Rc<Conn> {
        let mut conns = self.conns.borrow_mut();
        let slot = conns.free.pop().unwrap_or(conns.slots.len());
        let conn = Rc::new(Conn {
            fd,
            slot,
            io: RefCell::new(ConnIo::new()),
        });
        if slot == conns.slots.len() {
            conns.slots.push(Some(conn.clone()));
        } else {
            conns.slots[slot] = Some(conn.clone());
        }
        drop(conns);
        self.settle(&conn);
        conn
    }

    /// Client sockets the driver holds (sessions' and those still finishing a send).
    pub fn sockets(&self) -> usize {
        let conns = self.conns.borrow();
        conns.slots.len() - conns.free.len()
    }

    /// Gives the receive buffers' memory back to the system when no client socket is left
    /// (so no receive is armed): a worker idle after a burst of clients returns to its size
    /// at start.
    pub fn release_buffers(&self) {
        if self.buffers_touched.get() && self.sockets() == 0 {
            self.bufs.borrow().discard();
            self.buffers_touched.set(false);
        }
    }

    /// Starts a send of `conn`'s `sending` bytes (or of their rest after a short send).
    pub(super) fn send(&self, conn: &Conn, io: &ConnIo) {
        let entry = opcode::Send::new(
            types::Fd(conn.fd.as_raw_fd()),
            io.sending.as_ptr(),
            io.sending.len() as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(conn::user_data(conn.slot, 0, OpKind::Send));
        self.push(entry);
    }

    /// Arms or cancels the receive as the socket's state asks, and lets the socket go once
    /// nothing of it is left in the kernel.
    pub(super) fn settle(&self, conn: &Conn) {
        let mut io = conn.io.borrow_mut();
        match io.recv_action() {
            RecvAction::Nothing => {}
            RecvAction::Arm => {
                io.generation = io.generation.wrapping_add(1);
                io.recv = Recv::Armed;
                let entry = opcode::RecvMulti::new(types::Fd(conn.fd.as_raw_fd()), BUFFER_GROUP)
                    .build()
                    .user_data(conn::user_data(conn.slot, io.generation, OpKind::Recv));
                self.push(entry);
            }
            RecvAction::Cancel => {
                io.recv = Recv::Cancelling;
                io.cancels += 1;
                let target = conn::user_data(conn.slot, io.generation, OpKind::Recv);
                let entry = opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(conn::user_data(conn.slot, io.generation, OpKind::Cancel));
                self.push(entry);
            }
        }
        match io.linger_action() {
            LingerAction::Nothing => {}
            LingerAction::Start => {
                io.lingering = Linger::Armed;
                let entry = opcode::Timeout::new(&io.linger)
                    .build()
                    .user_data(conn::user_data(conn.slot, 0, OpKind::Linger));
                self.push(entry);
            }
            LingerAction::Remove => {
                io.lingering = Linger::Removing;
                io.cancels += 1;
                let entry =
                    opcode::TimeoutRemove::new(conn::user_data(conn.slot, 0, OpKind::Linger))
                        .build()
                        .user_data(conn::user_data(conn.slot, 0, OpKind::Cancel));
                self.push(entry);
            }
        }
        if io.finished() {
            drop(io);
            let mut conns = self.conns.borrow_mut();
            if let Some(slot) = conns.slots.get_mut(conn.slot) {
                if slot.take().is_some() {
                    conns.free.push(conn.slot);
                }
            }
        }
    }

    fn push(&self, entry: squeue::Entry) {
        let mut ring = self.ring.borrow_mut();
        // SAFETY: every entry points at memory that outlives its operation: a socket's
        // `sending` buffer and its descriptor stay in the slab until its completions are in,
        // the provided buffers for the ring's life.
        let pushed = unsafe { ring.submission().push(&entry).is_ok() };
        if !pushed {
            // Full: submit what is there (the kernel copies the entries out) and retry once.
            let _ = ring.submit();
            // SAFETY: as above.
            if unsafe { ring.submission().push(&entry).is_err() } {
                self.backlog.borrow_mut().push(entry);
            }
        }
        drop(ring);
        self.kick();
    }

    fn kick(&self) {
        if self.in_turn.get() || self.kicked.replace(true) {
            return;
        }
        if let Some(waker) = self.waker.borrow().as_ref() {
            waker.wake_by_ref();
        }
    }

    /// The driver task: a turn whenever completions wait or work was queued.
    pub async fn run(self: Rc<Self>) {
        loop {
            std::future::poll_fn(|cx| {
                if self.kicked.replace(false) {
                    return Poll::Ready(());
                }
                {
                    let mut waker = self.waker.borrow_mut();
                    if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *waker = Some(cx.waker().clone());
                    }
                }
                match self.readiness.poll_read_ready(cx) {
                    // Cleared before the turn: work the kernel adds after that signals the
                    // eventfd again (a new edge), so none is missed.
                    Poll::Ready(Ok(mut guard)) => {
                        guard.clear_ready();
                        Poll::Ready(())
                    }
                    Poll::Ready(Err(error)) => {
                        tracing::error!(%error, "io_uring: the reactor lost the ring");
                        Poll::Ready(())
                    }
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            self.turn();
        }
    }

    fn turn(&self) {
        self.in_turn.set(true);
        let mut force = false;
        for _ in 0..MAX_ROUNDS {
            let entered = self.submit(force);
            let reaped = self.reap();
            if !entered && reaped == 0 {
                break;
            }
            force = entered && reaped >= MAYBE_MORE;
        }
        self.in_turn.set(false);
        self.kicked.set(false);
        // Anything queued in the last round's completions but not submitted.
        if !self.ring.borrow_mut().submission().is_empty() || !self.backlog.borrow().is_empty() {
            self.kick();
        }
    }

    /// Hands what the sessions queued to the kernel and has it post the completions waiting;
    /// whether there was anything to do (one `io_uring_enter`).
    fn submit(&self, force: bool) -> bool {
        let mut ring = self.ring.borrow_mut();
        {
            // In the order they were queued (a cancel before the receive armed after it).
            let mut backlog = self.backlog.borrow_mut();
            let mut sq = ring.submission();
            let mut moved = 0;
            for entry in backlog.iter() {
                // SAFETY: as in `push`.
                if unsafe { sq.push(entry).is_err() } {
                    break;
                }
                moved += 1;
            }
            backlog.drain(..moved);
        }
        // Pending task work (completions not posted yet) needs an enter too: `submit` adds
        // GETEVENTS for it.
        if !force && ring.submission().is_empty() && !ring.submission().taskrun() {
            return false;
        }
        let to_submit = ring.submission().len() as u32;
        // GETEVENTS with no minimum: pending task work runs (posting its completions) and the
        // call returns at once.
        // SAFETY: no argument pointer; the submitted entries are valid as `push` says.
        let entered = unsafe {
            ring.submitter()
                .enter::<libc::sigset_t>(to_submit, 0, IORING_ENTER_GETEVENTS, None)
        };
        if let Err(error) = entered {
            // EBUSY/EAGAIN: completions must be reaped first; the next round does.
            tracing::debug!(%error, "io_uring submit deferred");
        }
        true
    }

    /// Reads every completion waiting; the number read.
    fn reap(&self) -> usize {
        let mut reaped = self.reaped.borrow_mut();
        reaped.clear();
        reaped.extend(
            self.ring
                .borrow_mut()
                .completion()
                .map(|c: cqueue::Entry| (c.user_data(), c.result(), c.flags())),
        );
        for &(user_data, result, flags) in reaped.iter() {
            self.complete(user_data, result, flags);
        }
        reaped.len()
    }

    fn complete(&self, user_data: u64, result: i32, flags: u32) {
        let (slot, generation, kind) = conn::decode(user_data);
        let Some(conn) = self.conns.borrow().slots.get(slot).cloned().flatten() else {
            return;
        };
        let wake = match kind {
            OpKind::Recv => self.received(&conn, generation, result, flags),
            OpKind::Send => self.sent(&conn, result),
            OpKind::Cancel => {
                let mut io = conn.io.borrow_mut();
                io.cancels = io.cancels.saturating_sub(1);
                None
            }
            OpKind::Linger => {
                let mut io = conn.io.borrow_mut();
                io.lingering = Linger::Off;
                // Fired (not removed) with the send still owed: the client did not read in
                // time; the send fails with ECANCELED and the socket closes.
                if result == -libc::ETIME && io.send_in_flight {
                    io.cancels += 1;
                    let entry = opcode::AsyncCancel::new(conn::user_data(slot, 0, OpKind::Send))
                        .build()
                        .user_data(conn::user_data(slot, 0, OpKind::Cancel));
                    self.push(entry);
                }
                None
            }
        };
        self.settle(&conn);
        if let Some(waker) = wake {
            waker.wake();
        }
    }

    fn received(&self, conn: &Conn, generation: u8, result: i32, flags: u32) -> Option<Waker> {
        let mut io = conn.io.borrow_mut();
        if generation != io.generation {
            return None; // cannot happen: one receive at a time per socket
        }
        if result > 0 {
            match cqueue::buffer_select(flags) {
                Some(bid) => {
                    self.buffers_touched.set(true);
                    let mut bufs = self.bufs.borrow_mut();
                    if !io.released {
                        io.inbox.extend_from_slice(bufs.chunk(bid, result as usize));
                    }
                    bufs.give_back(bid);
                }
                None => io.read_end = Some(Err(libc::EIO)),
            }
        } else if result == 0 {
            io.read_end = Some(Ok(()));
        } else {
            match -result {
                // Out of buffers for a moment, or cancelled on purpose: armed again as the
                // state says.
                libc::ENOBUFS | libc::ECANCELED => {}
                errno => io.read_end = Some(Err(errno)),
            }
        }
        if !cqueue::more(flags) {
            io.recv = Recv::Idle;
        }
        io.read_waker.take()
    }

    fn sent(&self, conn: &Conn, result: i32) -> Option<Waker> {
        let mut io = conn.io.borrow_mut();
        if result < 0 && matches!(-result, libc::EINTR | libc::EAGAIN) {
            self.send(conn, &io);
            return None;
        }
        if result < 0 || (result == 0 && !io.sending.is_empty()) {
            io.write_error = Some(if result < 0 { -result } else { libc::EPIPE });
            io.send_in_flight = false;
            io.sending = bytes::BytesMut::new();
            io.queued = bytes::BytesMut::new();
            // The session learns it from its next read as well.
            if let Some(waker) = io.read_waker.take() {
                waker.wake();
            }
            return io.write_waker.take();
        }
        let sent = (result as usize).min(io.sending.len());
        io.sending.advance(sent);
        if !io.sending.is_empty() {
            self.send(conn, &io);
            return None;
        }
        // An emptied buffer keeps its allocation (`advance` only moves its start): one that
        // carried a large send is given back.
        let was_large = io.send_size > conn::KEEP_BUFFER;
        if io.queued.is_empty() {
            io.send_in_flight = false;
            if was_large {
                io.sending = bytes::BytesMut::new();
            }
        } else {
            let ConnIo {
                sending,
                queued,
                send_size,
                ..
            } = &mut *io;
            std::mem::swap(sending, queued);
            *send_size = sending.len();
            if was_large {
                *queued = bytes::BytesMut::new();
            } else {
                queued.clear();
            }
            self.send(conn, &io);
        }
        io.write_waker.take()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Sockets with operations in flight: the kernel may use their buffers until the
        // ring's teardown is over, which finishes after this. Leaked with the buffer ring (the
        // worker is ending).
        let conns = std::mem::take(&mut *self.conns.borrow_mut());
        std::mem::forget(conns);
    }
}

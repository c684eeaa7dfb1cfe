//! The ring itself: an `io_uring` instance with a provided-buffer ring for multishot receives,
//! and the probe that tells at start whether this kernel (and its sandbox) allows all of it.

use std::alloc::{alloc_zeroed, Layout};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{cqueue, opcode, types, IoUring};

/// The buffer group the receives take their buffers from.
pub(super) const BUFFER_GROUP: u16 = 0;

/// Submission queue entries; completions get four times as many (sends and receives of every
/// client of a turn complete together).
const SQ_ENTRIES: u32 = 1024;

/// Buffers the kernel receives into, and their size. A buffer is copied into its socket's
/// inbox and given back as soon as its completion is read, so few are in use at once; a
/// receive that finds none ends (`ENOBUFS`) and is simply armed again. 256 × 2 KiB = 512 KiB
/// per worker, touched in turn.
const BUFFERS: u16 = 256;
const BUFFER_SIZE: usize = 2048;

pub(super) fn new_ring() -> io::Result<IoUring> {
    build(SQ_ENTRIES)
}

/// Completions are posted by task work that runs when the worker next enters the kernel
/// (`COOP_TASKRUN`, Linux 5.19), rather than interrupting it for each (the default: measured at
/// `-P 1`, CPU per request doubled against epoll). A worker asleep in `epoll_wait` is still
/// woken for it. The kernel flags pending work (`TASKRUN_FLAG`) and signals the ring's eventfd
/// when completions are posted; tokio's reactor watches the eventfd.
///
/// Not `DEFER_TASKRUN`: on 6.18 a request that arrived while the worker was sending on the same
/// socket was posted only about 16 ms later (every request at one client), whatever the driver
/// entered.
fn build(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(entries * 4)
        .build(entries)
}

/// A provided-buffer ring (`IORING_REGISTER_PBUF_RING`, Linux 5.19): the kernel picks a free
/// buffer for each received chunk and names it in the completion; the driver copies the chunk
/// out and puts the buffer back at the ring's tail.
pub(super) struct BufRing {
    entries: *mut types::BufRingEntry,
    data: *mut u8,
    count: u16,
    size: usize,
    tail: u16,
}

impl BufRing {
    /// Allocates and registers the ring with every buffer in it.
    ///
    /// The memory is never freed: the kernel may still write into it until the ring's own
    /// teardown, which finishes asynchronously after its file is closed. One per worker, for
    /// the life of the worker.
    pub fn register(ring: &IoUring, count: u16, size: usize) -> io::Result<BufRing> {
        debug_assert!(count.is_power_of_two());
        let entries_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<types::BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        // SAFETY: the layout has a non-zero size.
        let entries = unsafe { alloc_zeroed(entries_layout).cast::<types::BufRingEntry>() };
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        // The buffers are mapped rather than allocated: their pages become resident only as
        // receives fill them (an allocator zeroing 512 KiB would touch them all at start),
        // and `discard` can hand back whole pages.
        // SAFETY: an anonymous private mapping at an address of the kernel's choice; no
        // existing memory is affected.
        let data = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                usize::from(count) * size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if data == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let data = data.cast::<u8>();
        let mut bufs = BufRing {
            entries,
            data,
            count,
            size,
            tail: 0,
        };
        // SAFETY: `entries` is page-aligned memory for `count` entries that is never freed.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                entries as u64,
                count,
                BUFFER_GROUP,
                0,
            )?;
        }
        for bid in 0..count {
            bufs.give_back(bid);
        }
        Ok(bufs)
    }

    /// Gives the buffers' pages back to the system (they read as zeros when next touched).
    /// The kernel picks buffers in ring order, so under traffic every one of them becomes
    /// resident (512 KiB per worker) and would stay so while the worker is idle.
    ///
    /// Only while no receive is armed on the ring: a receive in progress could be writing
    /// into a buffer.
    pub fn discard(&self) {
        // SAFETY: `data` is a mapping of `count * size` bytes owned by this ring;
        // MADV_DONTNEED on private anonymous memory only replaces its contents with zeros,
        // which no reader relies on (a buffer is read only after a completion filled it). The
        // caller guarantees that the kernel is not filling any.
        let result = unsafe {
            libc::madvise(
                self.data.cast(),
                usize::from(self.count) * self.size,
                libc::MADV_DONTNEED,
            )
        };
        if result != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "io_uring: buffers kept");
        }
    }

    /// The first `len` bytes of buffer `bid`, as a completion delivered them.
    pub fn chunk(&self, bid: u16, len: usize) -> &[u8] {
        let bid = usize::from(bid % self.count);
        let len = len.min(self.size);
        // SAFETY: in bounds (`bid < count`, `len <= size`); the kernel wrote these bytes and
        // does not touch the buffer again until it is given back.
        unsafe { std::slice::from_raw_parts(self.data.add(bid * self.size), len) }
    }

    /// Puts buffer `bid` back for the kernel to fill.
    pub fn give_back(&mut self, bid: u16) {
        let bid = bid % self.count;
        let index = usize::from(self.tail & (self.count - 1));
        // SAFETY: `index < count`; the kernel reads entries only up to the published tail.
        unsafe {
            let entry = &mut *self.entries.add(index);
            entry.set_addr(self.data.add(usize::from(bid) * self.size) as u64);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field lives in the first entry, aligned for a u16; the kernel reads
        // it concurrently, hence the atomic store that publishes the entry written above.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

pub(super) fn buffers(ring: &IoUring) -> io::Result<BufRing> {
    BufRing::register(ring, BUFFERS, BUFFER_SIZE)
}

/// Whether io_uring works here as the driver uses it: a ring can be set up (container
/// runtimes' seccomp profiles and `kernel.io_uring_disabled` refuse that), a buffer ring
/// registered (5.19), cooperative task work (5.19), a multishot receive delivers into it and
/// stays armed (6.0), and a send completes. Tried for real on a socket pair, so what the
/// driver needs is what was tested.
///
/// On a thread of its own: the kernel's teardown of a ring interrupts every thread that used
/// it (task work signalled like a signal), and a blocking `recv` with a timeout on such a
/// thread then fails with EINTR (seen in the tests, whose threads start the proxy).
pub fn probe() -> io::Result<()> {
    std::thread::Builder::new()
        .name("slotproxy-io-probe".into())
        .spawn(probe_here)?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the io_uring probe panicked")))
}

fn probe_here() -> io::Result<()> {
    let mut ring = build(8)?;
    let mut bufs = BufRing::register(&ring, 4, 64)?;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    let recv = opcode::RecvMulti::new(types::Fd(ours.as_raw_fd()), BUFFER_GROUP)
        .build()
        .user_data(1);
    let message = b"ping";
    let send = opcode::Send::new(
        types::Fd(theirs.as_raw_fd()),
        message.as_ptr(),
        message.len() as u32,
    )
    .build()
    .user_data(2);
    // SAFETY: `message` and the socket pair outlive the ring's use of them (waited below).
    unsafe {
        let mut sq = ring.submission();
        sq.push(&recv).map_err(io::Error::other)?;
        sq.push(&send).map_err(io::Error::other)?;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        if seen.len() >= 2 {
            break;
        }
        ring.submit_and_wait(1)?;
        seen.extend(
            ring.completion()
                .map(|c: cqueue::Entry| (c.user_data(), c.result(), c.flags())),
        );
    }
    let check = |user_data: u64| {
        seen.iter()
            .find(|(u, _, _)| *u == user_data)
            .copied()
            .ok_or_else(|| io::Error::other("no completion"))
    };
    let (_, sent, _) = check(2)?;
    let (_, received, flags) = check(1)?;
    if sent < 0 {
        return Err(io::Error::from_raw_os_error(-sent));
    }
    if received < 0 {
        return Err(io::Error::from_raw_os_error(-received));
    }
    let bid = cqueue::buffer_select(flags)
        .ok_or_else(|| io::Error::other("a receive completed without a provided buffer"))?;
    if bufs.chunk(bid, received as usize) != message || !cqueue::more(flags) {
        return Err(io::Error::other("multishot receive is not supported"));
    }
    bufs.give_back(bid);
    // End the receive before the ring goes (its last completion: end of stream).
    drop(theirs);
    let mut ended = false;
    for _ in 0..4 {
        ring.submit_and_wait(1)?;
        if ring
            .completion()
            .any(|c: cqueue::Entry| c.user_data() == 1 && !cqueue::more(c.flags()))
        {
            ended = true;
            break;
        }
    }
    if !ended {
        return Err(io::Error::other("a multishot receive did not end"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where a ring can be set up at all (no seccomp profile or sysctl forbids it), the probe
    /// must pass on the kernels we support (6.0 and later): a failure means the driver would
    /// never run.
    #[test]
    fn the_probe_passes_where_io_uring_is_allowed() {
        if IoUring::new(2).is_err() {
            return; // forbidden here: `auto` falls back, as tests/io_uring.rs checks
        }
        if let Err(error) = probe() {
            panic!("io_uring is allowed here but the probe failed: {error}");
        }
    }
}

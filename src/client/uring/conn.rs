//! One client socket's state in the io_uring driver: what was received and not read yet, what
//! is being sent, and the decisions about its receive and its end as pure functions (tested as
//! tables below).

use std::task::Waker;
use std::time::Duration;

use bytes::BytesMut;

/// Received bytes held for a session that is not reading (its pipeline is full): past this the
/// receive is cancelled, so a client that keeps sending waits in its socket buffer, as it
/// would with epoll, instead of in the proxy's memory.
pub(super) const INBOX_LIMIT: usize = 64 * 1024;
/// Reply bytes taken for sending while one send is still in flight; past this `try_write`
/// answers `WouldBlock` and the rest waits in the session's own output buffer (where the
/// client output buffer limit sees it).
pub(super) const OUTBOX_LIMIT: usize = 64 * 1024;
/// The most one send takes from the session at once: a large reply goes out in pieces of this
/// size from the session's own output buffer, rather than being copied whole (a 48 MiB `KEYS`
/// reply was held twice, and the copy's memory not returned to the system after).
pub(super) const SEND_CHUNK: usize = 256 * 1024;
/// How long replies handed to the kernel may still take once their session is gone (it
/// closed the client, or killed it: `CLIENT KILL`, the output buffer limit). A client that
/// does not read would otherwise keep its socket open for as long as it likes.
pub(super) const LINGER: Duration = Duration::from_secs(10);
/// Emptied buffers that grew past this are given back rather than kept for the next turn.
pub(super) const KEEP_BUFFER: usize = 16 * 1024;

/// Where the socket's multishot receive stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Recv {
    /// None in flight.
    Idle,
    /// In flight: completions carry data until one comes without `IORING_CQE_F_MORE`.
    Armed,
    /// A cancel was asked for; the receive's last completion has not come yet.
    Cancelling,
}

/// How reading ended: the peer closed (`Ok`) or the socket failed (the errno).
pub(super) type ReadEnd = Result<(), i32>;

pub(super) struct ConnIo {
    /// Bumped on every arm, so a cancel names exactly the receive it means.
    pub generation: u8,
    pub recv: Recv,
    /// Cancels submitted whose own completion has not come yet.
    pub cancels: u8,
    pub inbox: BytesMut,
    pub read_end: Option<ReadEnd>,
    /// The bytes of the send in flight: not touched until its completion (the kernel reads
    /// them).
    pub sending: BytesMut,
    /// The size `sending` had when its send started.
    pub send_size: usize,
    pub send_in_flight: bool,
    /// Taken while a send was in flight: the next send.
    pub queued: BytesMut,
    pub write_error: Option<i32>,
    pub read_waker: Option<Waker>,
    pub write_waker: Option<Waker>,
    /// The session dropped its stream: queued replies still go out, then the socket closes.
    pub released: bool,
    /// Where the linger timeout (see [`LINGER`]) stands.
    pub lingering: Linger,
    /// The linger timeout's duration, read by the kernel when it is submitted: it lives here,
    /// at a stable address, as long as the socket.
    pub linger: io_uring::types::Timespec,
}

impl ConnIo {
    pub fn new() -> ConnIo {
        ConnIo {
            generation: 0,
            recv: Recv::Idle,
            cancels: 0,
            inbox: BytesMut::new(),
            read_end: None,
            sending: BytesMut::new(),
            send_size: 0,
            send_in_flight: false,
            queued: BytesMut::new(),
            write_error: None,
            read_waker: None,
            write_waker: None,
            released: false,
            lingering: Linger::Off,
            linger: io_uring::types::Timespec::from(LINGER),
        }
    }

    pub fn recv_action(&self) -> RecvAction {
        recv_action(
            self.recv,
            self.inbox.len(),
            self.read_end.is_some(),
            self.released,
        )
    }

    pub fn finished(&self) -> bool {
        finished(self.recv, self.send_in_flight, self.cancels, self.released)
            && self.lingering == Linger::Off
    }

    pub fn linger_action(&self) -> LingerAction {
        linger_action(self.released, self.send_in_flight, self.lingering)
    }
}

/// What to do next about a socket's receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RecvAction {
    Nothing,
    Arm,
    Cancel,
}

/// Receive while someone will read and there is room; stop when nobody will or the inbox is
/// full. Never two receives at once on one socket: their data could interleave.
pub(super) fn recv_action(
    recv: Recv,
    inbox_len: usize,
    read_over: bool,
    released: bool,
) -> RecvAction {
    match recv {
        Recv::Idle if !released && !read_over && inbox_len < INBOX_LIMIT => RecvAction::Arm,
        Recv::Armed if released || inbox_len >= INBOX_LIMIT => RecvAction::Cancel,
        _ => RecvAction::Nothing,
    }
}

/// A socket may be closed (and its slot reused) once its session let go of it and the kernel
/// holds nothing of it any more: no receive, send or cancel whose completion is still owed.
pub(super) fn finished(recv: Recv, send_in_flight: bool, cancels: u8, released: bool) -> bool {
    released && recv == Recv::Idle && !send_in_flight && cancels == 0
}

/// The linger timeout of a socket whose session is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Linger {
    Off,
    /// In flight.
    Armed,
    /// Its removal was asked for; its completion has not come yet.
    Removing,
}

/// What to do about the linger timeout of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LingerAction {
    Nothing,
    /// The session is gone with a send still in flight: bound how long it may take.
    Start,
    /// The send finished first: the timeout is not needed any more.
    Remove,
}

pub(super) fn linger_action(
    released: bool,
    send_in_flight: bool,
    lingering: Linger,
) -> LingerAction {
    match lingering {
        Linger::Off if released && send_in_flight => LingerAction::Start,
        Linger::Armed if !send_in_flight => LingerAction::Remove,
        _ => LingerAction::Nothing,
    }
}

/// What a completion is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OpKind {
    Recv,
    Send,
    /// A cancel or a timeout removal: its completion only counts down.
    Cancel,
    /// The linger timeout.
    Linger,
}

/// `user_data` of an operation: the socket's slot, the receive generation and the kind.
pub(super) fn user_data(slot: usize, generation: u8, kind: OpKind) -> u64 {
    let kind = match kind {
        OpKind::Recv => 0,
        OpKind::Send => 1,
        OpKind::Cancel => 2,
        OpKind::Linger => 3,
    };
    ((slot as u64) << 10) | (u64::from(generation) << 2) | kind
}

pub(super) fn decode(user_data: u64) -> (usize, u8, OpKind) {
    let kind = match user_data & 3 {
        0 => OpKind::Recv,
        1 => OpKind::Send,
        2 => OpKind::Cancel,
        _ => OpKind::Linger,
    };
    (
        (user_data >> 10) as usize,
        ((user_data >> 2) & 0xff) as u8,
        kind,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_decisions() {
        use Recv::*;
        use RecvAction as A;
        let full = INBOX_LIMIT;
        // (state, inbox, read over, released) -> action
        let table = [
            (Idle, 0, false, false, A::Arm),
            (Idle, full - 1, false, false, A::Arm),
            (Idle, full, false, false, A::Nothing),
            (Idle, 0, true, false, A::Nothing),
            (Idle, 0, false, true, A::Nothing),
            (Armed, 0, false, false, A::Nothing),
            (Armed, full - 1, false, false, A::Nothing),
            (Armed, full, false, false, A::Cancel),
            (Armed, 0, false, true, A::Cancel),
            (Armed, 0, true, false, A::Nothing),
            (Cancelling, 0, false, false, A::Nothing),
            (Cancelling, full, false, true, A::Nothing),
        ];
        for (recv, inbox, over, released, want) in table {
            assert_eq!(
                recv_action(recv, inbox, over, released),
                want,
                "{recv:?} inbox={inbox} over={over} released={released}"
            );
        }
    }

    #[test]
    fn a_socket_closes_only_when_the_kernel_holds_nothing_of_it() {
        use Recv::*;
        let table = [
            (Idle, false, 0, true, true),
            (Idle, false, 0, false, false),
            (Armed, false, 0, true, false),
            (Cancelling, false, 0, true, false),
            (Idle, true, 0, true, false),
            (Idle, false, 1, true, false),
        ];
        for (recv, sending, cancels, released, want) in table {
            assert_eq!(
                finished(recv, sending, cancels, released),
                want,
                "{recv:?} sending={sending} cancels={cancels} released={released}"
            );
        }
    }

    #[test]
    fn a_send_outliving_its_session_is_bounded() {
        use LingerAction as L;
        // (released, send in flight, lingering) -> action
        let table = [
            (false, false, Linger::Off, L::Nothing),
            (false, true, Linger::Off, L::Nothing),
            (true, false, Linger::Off, L::Nothing),
            (true, true, Linger::Off, L::Start),
            (true, true, Linger::Armed, L::Nothing),
            (true, false, Linger::Armed, L::Remove),
            (true, false, Linger::Removing, L::Nothing),
            (true, true, Linger::Removing, L::Nothing),
        ];
        for (released, sending, lingering, want) in table {
            assert_eq!(
                linger_action(released, sending, lingering),
                want,
                "released={released} sending={sending} lingering={lingering:?}"
            );
        }
    }

    #[test]
    fn user_data_round_trips() {
        for (slot, generation, kind) in [
            (0, 0, OpKind::Recv),
            (1, 255, OpKind::Send),
            (123_456, 7, OpKind::Cancel),
            (usize::MAX >> 10, 1, OpKind::Recv),
            (9, 0, OpKind::Linger),
        ] {
            assert_eq!(
                decode(user_data(slot, generation, kind)),
                (slot, generation, kind)
            );
        }
    }
}

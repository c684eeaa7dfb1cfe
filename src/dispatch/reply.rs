//! Replies as the session queues them: ready now, or a future that completes later.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};

use super::driver::InFlight;
use crate::resp::{encode, Protocol};

/// How the reply to one command will come: ready now, from a request already sent (the fast
/// path: the session reads the backend's reply straight from its channel), or from a future
/// the session drives (splits, broadcasts, retries).
pub enum Reply {
    Ready(Bytes),
    InFlight(InFlight),
    Later(Pin<Box<dyn Future<Output = Bytes>>>),
    /// Like `Later`, for a command that holds a backend connection until data arrives
    /// (BLPOP...): if the client hangs up, it is abandoned instead of awaited.
    Parked(Pin<Box<dyn Future<Output = Bytes>>>),
}

impl Reply {
    pub fn later(future: impl Future<Output = Bytes> + 'static) -> Reply {
        Reply::Later(Box::pin(future))
    }
}

impl From<Bytes> for Reply {
    fn from(bytes: Bytes) -> Reply {
        Reply::Ready(bytes)
    }
}

pub fn ok() -> Bytes {
    Bytes::from_static(b"+OK\r\n")
}

pub fn integer(n: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    encode::integer(&mut out, n);
    out.freeze()
}

pub fn bulk(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    encode::bulk(&mut out, data);
    out.freeze()
}

/// The null reply of `protocol`.
pub fn nil(protocol: Protocol) -> Bytes {
    match protocol {
        Protocol::Resp2 => Bytes::from_static(b"$-1\r\n"),
        Protocol::Resp3 => Bytes::from_static(b"_\r\n"),
    }
}

/// The null array of `protocol` (EXEC's reply when a watched transaction did not run).
pub fn null_array(protocol: Protocol) -> Bytes {
    match protocol {
        Protocol::Resp2 => Bytes::from_static(b"*-1\r\n"),
        Protocol::Resp3 => Bytes::from_static(b"_\r\n"),
    }
}

/// A null reply in either protocol (a backend's answer on a RESP2 or a RESP3 connection).
pub fn is_nil(reply: &[u8]) -> bool {
    matches!(reply, b"$-1\r\n" | b"*-1\r\n" | b"_\r\n")
}

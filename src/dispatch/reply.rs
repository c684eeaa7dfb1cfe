//! Replies as the session queues them: ready now, or a future that completes later.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use metrics::Histogram;

use crate::resp::encode;

/// One entry of a client's ordered reply queue.
pub enum Reply {
    Ready(Option<Bytes>),
    Later {
        future: Pin<Box<dyn Future<Output = Bytes>>>,
        /// When the command arrived and where its latency goes, recorded on completion
        /// (kept here rather than in a wrapping future to avoid a second allocation).
        timer: Option<(Instant, Histogram)>,
    },
}

impl Reply {
    pub fn later(future: impl Future<Output = Bytes> + 'static) -> Reply {
        Reply::Later {
            future: Box::pin(future),
            timer: None,
        }
    }

    /// Records the command's latency in `histogram` when the reply completes.
    pub fn timed(self, started: Instant, histogram: Histogram) -> Reply {
        match self {
            Reply::Ready(bytes) => {
                histogram.record(started.elapsed().as_secs_f64());
                Reply::Ready(bytes)
            }
            Reply::Later { future, .. } => Reply::Later {
                future,
                timer: Some((started, histogram)),
            },
        }
    }
}

impl Future for Reply {
    type Output = Bytes;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Bytes> {
        match self.get_mut() {
            Reply::Ready(bytes) => Poll::Ready(bytes.take().unwrap_or_default()),
            Reply::Later { future, timer } => {
                let bytes = std::task::ready!(future.as_mut().poll(cx));
                if let Some((started, histogram)) = timer.take() {
                    histogram.record(started.elapsed().as_secs_f64());
                }
                Poll::Ready(bytes)
            }
        }
    }
}

impl From<Bytes> for Reply {
    fn from(bytes: Bytes) -> Reply {
        Reply::Ready(Some(bytes))
    }
}

/// `-{message}\r\n`; `message` starts with its error code (`ERR`, `CROSSSLOT`, ...).
pub fn error(message: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(message.len() + 3);
    encode::error(&mut out, message);
    out.freeze()
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

pub fn nil() -> Bytes {
    Bytes::from_static(b"$-1\r\n")
}

pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

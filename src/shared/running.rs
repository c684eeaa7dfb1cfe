//! Scripts and functions in flight through this proxy, counted across the workers.
//!
//! A node that runs a script past its busy threshold answers every other connection `BUSY`,
//! and one server's PING would too; the proxy answers PING itself, so while any script is
//! in flight PING asks the primaries first (`dispatch::scripts::ping`). The count keeps that
//! question off every other PING.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Default)]
pub struct RunningScripts(AtomicUsize);

impl RunningScripts {
    /// One more script in flight, until the returned guard is dropped (its reply arrived, or
    /// the client went away and the request was abandoned).
    pub fn start(self: &Arc<Self>) -> Running {
        self.0.fetch_add(1, Ordering::Relaxed);
        Running(self.clone())
    }

    /// Whether any script is in flight.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// One script in flight.
pub struct Running(Arc<RunningScripts>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_until_every_guard_is_dropped() {
        let running = Arc::new(RunningScripts::default());
        assert!(!running.any());
        let first = running.start();
        let second = running.start();
        drop(first);
        assert!(running.any());
        drop(second);
        assert!(!running.any());
    }
}

//! A write checker for cluster events: threads `RPUSH` unique values to lists spread over the
//! keyspace through the proxy, recording each write the proxy acknowledged and each that
//! failed. Reading the lists back at the end tells, per write, whether it is there once
//! (kept), missing (lost), or there twice (sent again after it ran): lists keep every value,
//! so unlike `SET` a loss of an older write can't hide behind a newer one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{try_proxy_client, wait_for_more};

/// Hard bounds on one writer thread, whatever the test does.
const MAX_WRITES: u64 = 2_000_000;
const MAX_TIME: Duration = Duration::from_secs(300);
/// Most failures kept verbatim per thread (all are counted).
const KEPT_FAILURES: usize = 20;

/// One write: `RPUSH key value`, and when its reply (or failure) came, from the checker's
/// start.
#[derive(Clone, Debug)]
pub struct Write {
    pub key: String,
    pub value: String,
    pub at: Duration,
}

/// What the writer threads did.
#[derive(Debug, Default)]
pub struct Writes {
    pub acknowledged: Vec<Write>,
    pub failed: Vec<Write>,
    /// The first failures' messages.
    pub failures: Vec<String>,
    /// False if a thread stopped on its own bound instead of being stopped by the test.
    pub stopped_by_test: bool,
}

/// What reading the lists back found.
#[derive(Debug)]
pub struct Verdict {
    pub acknowledged: usize,
    /// Acknowledged writes that are not in their list.
    pub lost: Vec<Write>,
    /// Values found more than once: a write the proxy sent again after it ran.
    pub duplicated: Vec<String>,
    /// Writes that failed and are nowhere (what a client that saw the error assumes).
    pub failed_absent: usize,
    /// Writes that failed yet ran (their reply was lost with the connection).
    pub failed_present: usize,
}

impl Verdict {
    /// Panics unless every acknowledged write is there exactly once.
    pub fn assert_nothing_lost(&self) {
        assert!(self.acknowledged > 0, "no write was acknowledged");
        assert!(
            self.lost.is_empty(),
            "{} of {} acknowledged writes lost; first: {:?}",
            self.lost.len(),
            self.acknowledged,
            &self.lost[..self.lost.len().min(10)]
        );
        assert!(
            self.duplicated.is_empty(),
            "values written twice: {:?}",
            &self.duplicated[..self.duplicated.len().min(10)]
        );
    }
}

/// Running writer threads.
pub struct Checker {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    started: Instant,
    keys: Vec<String>,
    handles: Vec<JoinHandle<Writes>>,
}

impl Checker {
    /// Starts `threads` writers through the proxy at `addr`, over the lists `keys`.
    pub fn start(addr: SocketAddr, keys: Vec<String>, threads: usize) -> Checker {
        assert!(!keys.is_empty() && threads > 0);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let handles = (0..threads)
            .map(|t| {
                let (stop, acked, failed) = (stop.clone(), acked.clone(), failed.clone());
                let keys = keys.clone();
                std::thread::Builder::new()
                    .name(format!("writer-{t}"))
                    .spawn(move || write(addr, t, &keys, started, &stop, &acked, &failed))
                    .expect("spawn writer thread")
            })
            .collect();
        Checker {
            stop,
            acked,
            failed,
            started,
            keys,
            handles,
        }
    }

    /// Acknowledged writes so far.
    pub fn acknowledged(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Failed writes so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Time since the checker started, on the clock of [`Write::at`].
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits until `more` further writes have been acknowledged (up to 30 s).
    pub fn wait_for_more(&self, more: u64) {
        wait_for_more(
            "writer threads",
            "acknowledged writes",
            more,
            || self.acknowledged(),
            || self.handles.iter().all(|h| h.is_finished()),
            |done| format!("{done} acknowledged, {} failed", self.failed()),
        );
    }

    /// Stops the writers and returns what they did.
    pub fn stop(mut self) -> (Writes, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Writes {
            stopped_by_test: true,
            ..Writes::default()
        };
        for handle in self.handles.drain(..) {
            let writes = handle.join().expect("writer thread panicked");
            all.acknowledged.extend(writes.acknowledged);
            all.failed.extend(writes.failed);
            all.failures.extend(writes.failures);
            all.stopped_by_test &= writes.stopped_by_test;
        }
        (all, std::mem::take(&mut self.keys))
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Writes {
    /// Reads every list back over `con` and compares it with what was written.
    pub fn verify(&self, keys: &[String], con: &mut redis::Connection) -> Verdict {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for key in keys {
            let values: Vec<String> = redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(con)
                .unwrap_or_else(|e| panic!("LRANGE {key}: {e}"));
            for value in values {
                *seen.entry(value).or_default() += 1;
            }
        }
        let lost = self
            .acknowledged
            .iter()
            .filter(|w| !seen.contains_key(&w.value))
            .cloned()
            .collect();
        let duplicated = seen
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(v, n)| format!("{v} x{n}"))
            .collect();
        let failed_present = self
            .failed
            .iter()
            .filter(|w| seen.contains_key(&w.value))
            .count();
        Verdict {
            acknowledged: self.acknowledged.len(),
            lost,
            duplicated,
            failed_absent: self.failed.len() - failed_present,
            failed_present,
        }
    }

    /// Panics with the first failures if any write failed or a thread hit its own bound.
    pub fn assert_no_failures(&self) {
        assert!(
            self.stopped_by_test,
            "a writer hit its own bound ({MAX_WRITES} writes / {MAX_TIME:?})"
        );
        assert!(
            self.failed.is_empty(),
            "{} of {} writes failed; first:\n{}",
            self.failed.len(),
            self.failed.len() + self.acknowledged.len(),
            self.failures.join("\n")
        );
    }
}

fn write(
    addr: SocketAddr,
    thread: usize,
    keys: &[String],
    started: Instant,
    stop: &AtomicBool,
    acked: &AtomicU64,
    failed: &AtomicU64,
) -> Writes {
    let mut writes = Writes::default();
    let mut con: Option<redis::Connection> = None;
    let mut seq: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            writes.stopped_by_test = true;
            break;
        }
        if seq >= MAX_WRITES || started.elapsed() > MAX_TIME {
            break;
        }
        // Each thread walks the keys from its own offset, so threads rarely write one list at
        // the same moment and every list gets writes from all of them.
        let key = &keys[(seq as usize + thread * 7) % keys.len()];
        let value = format!("w{thread}-{seq}");
        seq += 1;
        let c = match con.as_mut() {
            Some(c) => c,
            None => match try_proxy_client(addr) {
                Ok(c) => con.insert(c),
                Err(e) => {
                    note_failure(&mut writes, failed, key, &value, started, &e.to_string());
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        match redis::cmd("RPUSH").arg(key).arg(&value).query::<i64>(c) {
            Ok(_) => {
                writes.acknowledged.push(Write {
                    key: key.clone(),
                    value,
                    at: started.elapsed(),
                });
                acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                // After an I/O-level failure the connection's state is unknown: a new one.
                con = None;
                note_failure(&mut writes, failed, key, &value, started, &e.to_string());
            }
        }
        // Leave CPU for the nodes on small machines: their failure detector runs on a 2 s
        // node timeout.
        if seq.is_multiple_of(50) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    writes
}

fn note_failure(
    writes: &mut Writes,
    failed: &AtomicU64,
    key: &str,
    value: &str,
    started: Instant,
    what: &str,
) {
    let at = started.elapsed();
    failed.fetch_add(1, Ordering::Relaxed);
    if writes.failures.len() < KEPT_FAILURES {
        writes
            .failures
            .push(format!("[{at:?}] RPUSH {key} {value}: {what}"));
    }
    writes.failed.push(Write {
        key: key.to_string(),
        value: value.to_string(),
        at,
    });
}

//! Background client traffic through the proxy while a test changes the cluster: SET, GET and
//! MGET in a loop, bounded in count and time, recording every error and every acknowledged write.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{local_keyslot, try_proxy_client, wait_for_more};

/// Hard bounds on one traffic thread, whatever the test does.
const MAX_OPS: u64 = 5_000_000;
const MAX_TIME: Duration = Duration::from_secs(240);
/// Most errors kept verbatim in the report (all are counted).
const KEPT_ERRORS: usize = 50;

/// What a traffic thread did.
#[derive(Debug)]
pub struct TrafficReport {
    pub ops: u64,
    pub error_count: u64,
    /// The first errors, with the op number and command.
    pub errors: Vec<String>,
    /// Last value acknowledged (`OK`) for every key written.
    pub last_written: HashMap<String, String>,
    /// False if the thread stopped on its own bound instead of being stopped by the test.
    pub stopped_by_test: bool,
}

impl TrafficReport {
    /// Panics with the recorded errors if there were any, or if the thread hit its own bound.
    pub fn assert_clean(&self) {
        assert!(
            self.stopped_by_test,
            "traffic hit its own bound ({MAX_OPS} ops / {MAX_TIME:?}) before the test stopped it"
        );
        assert!(self.ops > 0, "traffic did not run a single operation");
        assert_eq!(
            self.error_count,
            0,
            "{} of {} operations failed; first errors:\n{}",
            self.error_count,
            self.ops,
            self.errors.join("\n")
        );
    }
}

/// A running traffic thread.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    handle: Option<JoinHandle<TrafficReport>>,
}

impl Traffic {
    /// Starts SET/GET/MGET traffic over `keys` through the proxy at `addr`.
    ///
    /// Each op picks the next key round-robin. A GET must return the last value this thread
    /// set (or nil before the first SET); an MGET asks for the key plus up to two keys of other
    /// slots, so no sub-request ever spans a half-migrated slot (that would be a legitimate
    /// `-TRYAGAIN`), and checks every value.
    pub fn start(addr: SocketAddr, keys: Vec<String>) -> Traffic {
        assert!(!keys.is_empty(), "traffic needs keys");
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, ops, errors) = (stop.clone(), ops.clone(), errors.clone());
            std::thread::Builder::new()
                .name("traffic".into())
                .spawn(move || run(addr, keys, &stop, &ops, &errors))
                .expect("spawn traffic thread")
        };
        Traffic {
            stop,
            ops,
            errors,
            handle: Some(handle),
        }
    }

    /// Operations completed so far.
    pub fn ops(&self) -> u64 {
        self.ops.load(Ordering::Relaxed)
    }

    /// Errors seen so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Waits until `more` further operations have completed (up to 30 s).
    pub fn wait_for_more_ops(&self, more: u64) {
        wait_for_more(
            "traffic thread",
            "operations",
            more,
            || self.ops(),
            || self.handle.as_ref().is_some_and(|h| h.is_finished()),
            |done| format!("{done} operations"),
        );
    }

    /// Stops the thread and returns its report.
    pub fn stop(mut self) -> TrafficReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("traffic thread handle")
            .join()
            .expect("traffic thread panicked")
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

fn run(
    addr: SocketAddr,
    keys: Vec<String>,
    stop: &AtomicBool,
    ops: &AtomicU64,
    error_count: &AtomicU64,
) -> TrafficReport {
    let start = Instant::now();
    let mut report = TrafficReport {
        ops: 0,
        error_count: 0,
        errors: Vec::new(),
        last_written: HashMap::new(),
        stopped_by_test: false,
    };
    let mut con: Option<redis::Connection> = None;
    let record = |report: &mut TrafficReport, what: String| {
        report.error_count += 1;
        error_count.fetch_add(1, Ordering::Relaxed);
        if report.errors.len() < KEPT_ERRORS {
            report
                .errors
                .push(format!("[{:?}] {what}", start.elapsed()));
        }
    };
    // Partners for MGET: keys of slots other than the key's own and each other's.
    let partners: Vec<Vec<usize>> = (0..keys.len())
        .map(|i| {
            let mut slots = vec![local_keyslot(keys[i].as_bytes())];
            let mut chosen = Vec::new();
            for step in [7usize, 13, 29, 31, 57] {
                let j = (i + step) % keys.len();
                let slot = local_keyslot(keys[j].as_bytes());
                if chosen.len() < 2 && !slots.contains(&slot) {
                    slots.push(slot);
                    chosen.push(j);
                }
            }
            chosen
        })
        .collect();
    let mut i: u64 = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            report.stopped_by_test = true;
            break;
        }
        if i >= MAX_OPS || start.elapsed() > MAX_TIME {
            break;
        }
        let c = match con.as_mut() {
            Some(c) => c,
            None => match try_proxy_client(addr) {
                Ok(c) => con.insert(c),
                Err(e) => {
                    record(&mut report, format!("op {i}: connect to the proxy: {e}"));
                    i += 1;
                    // Bounded by MAX_OPS / MAX_TIME; don't spin on a dead listener.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        let k = (i as usize) % keys.len();
        let key = &keys[k];
        let outcome: Result<(), String> = match i % 3 {
            0 => {
                let value = format!("v{i}");
                match redis::cmd("SET").arg(key).arg(&value).query::<String>(c) {
                    Ok(ok) if ok == "OK" => {
                        report.last_written.insert(key.clone(), value);
                        Ok(())
                    }
                    Ok(other) => Err(format!("SET {key}: replied {other:?}")),
                    Err(e) => Err(format!("SET {key}: {e}")),
                }
            }
            1 => match redis::cmd("GET").arg(key).query::<Option<String>>(c) {
                Ok(got) if got.as_ref() == report.last_written.get(key) => Ok(()),
                Ok(got) => Err(format!(
                    "GET {key}: got {got:?}, expected {:?}",
                    report.last_written.get(key)
                )),
                Err(e) => Err(format!("GET {key}: {e}")),
            },
            _ => {
                let asked: Vec<&String> = std::iter::once(key)
                    .chain(partners[k].iter().map(|&j| &keys[j]))
                    .collect();
                let expected: Vec<Option<&String>> =
                    asked.iter().map(|k| report.last_written.get(*k)).collect();
                match redis::cmd("MGET")
                    .arg(&asked)
                    .query::<Vec<Option<String>>>(c)
                {
                    Ok(got) if got.iter().map(Option::as_ref).eq(expected.iter().copied()) => {
                        Ok(())
                    }
                    Ok(got) => Err(format!(
                        "MGET {asked:?}: got {got:?}, expected {expected:?}"
                    )),
                    Err(e) => Err(format!("MGET {asked:?}: {e}")),
                }
            }
        };
        if let Err(what) = outcome {
            // After an I/O-level failure the connection's state is unknown: start a new one.
            con = None;
            record(&mut report, format!("op {i}: {what}"));
        }
        i += 1;
        ops.store(i, Ordering::Relaxed);
        // Leave CPU for the cluster nodes on small machines: their failure detector runs on a
        // 2 s node timeout.
        if i.is_multiple_of(50) {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    report.ops = i;
    report
}

//! The near cache (`[near_cache]`): `GET`s of keys under its prefixes answered from the proxy's
//! memory (the node's `get` count stays put), and never a value older than a change the proxy
//! was told about: writes on the node itself, through another proxy or through this one, a
//! flush, the invalidation connection cut, the slot moved; bounded by `max_memory` (LRU).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::raw::{RawClient, Reply};
use common::{
    command_calls, info_field, local_keyslot, proxy_client, shared, start_proxy,
    start_proxy_configured, unique_prefix, wait_until, Cluster,
};

/// The tests take turns: they count `get` calls on shared nodes, and one flushes a node.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A proxy whose near cache keeps keys under `prefix`.
fn caching_proxy(cluster: &Cluster, prefix: &str, max_memory: usize) -> slotproxy::Proxy {
    let prefix = prefix.to_string();
    start_proxy_configured(vec![cluster.seed_url()], move |config| {
        config.near_cache.enabled = true;
        config.near_cache.prefixes = vec![prefix];
        config.near_cache.max_memory = max_memory;
    })
}

fn owner(cluster: &Cluster, key: &str) -> u16 {
    cluster.primary_for_slot(local_keyslot(key.as_bytes()))
}

fn get(con: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(con).expect("GET")
}

fn set(con: &mut redis::Connection, key: &str, value: impl redis::ToRedisArgs) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(con)
        .expect("SET");
}

/// Waits until `key` is answered from the cache on `con`: a second GET leaves the node's
/// `get` count unchanged (the cache fills once the node's invalidation connection is heard).
fn wait_cached(con: &mut redis::Connection, cluster: &Cluster, key: &str) {
    let port = owner(cluster, key);
    wait_until(
        &format!("{key} answered from the near cache"),
        Duration::from_secs(10),
        || {
            get(con, key);
            let before = command_calls(port, "get");
            get(con, key);
            let after = command_calls(port, "get");
            if after == before {
                Ok(())
            } else {
                Err(format!("{} GET reached the node", after - before))
            }
        },
    );
}

/// A count of INFO's `# Proxy` section (the near cache's folds trail by up to a second).
fn proxy_count(proxy: &slotproxy::Proxy, field: &str) -> i64 {
    let mut raw = RawClient::connect(proxy.local_addr());
    let info = raw.call(&["INFO", "proxy"]).text();
    info_field(&info, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {info}"))
}

fn wait_count(proxy: &slotproxy::Proxy, field: &str, at_least: i64) {
    wait_until(
        &format!("{field} >= {at_least}"),
        Duration::from_secs(5),
        || {
            let now = proxy_count(proxy, field);
            (now >= at_least).then_some(()).ok_or(now.to_string())
        },
    );
}

#[test]
fn hits_are_answered_without_the_node_and_only_plain_gets_of_the_prefix_are() {
    let _turn = serial();
    let cluster = shared();
    let prefix = unique_prefix("nc-hit");
    let proxy = caching_proxy(cluster, &format!("{prefix}:"), 1 << 20);
    let mut con = proxy_client(&proxy);
    let key = format!("{prefix}:k");
    set(&mut con, &key, "v");
    wait_cached(&mut con, cluster, &key);
    let port = owner(cluster, &key);
    let before = command_calls(port, "get");
    for _ in 0..100 {
        assert_eq!(get(&mut con, &key).as_deref(), Some("v"));
    }
    assert_eq!(command_calls(port, "get"), before, "a hit reached the node");
    wait_count(&proxy, "proxy_near_cache_hits", 100);
    assert!(proxy_count(&proxy, "proxy_near_cache_entries") >= 1);

    // Keys outside the prefix are never cached.
    let outside = format!("other-{prefix}");
    let outside_port = owner(cluster, &outside);
    set(&mut con, &outside, "x");
    let before = command_calls(outside_port, "get");
    for _ in 0..10 {
        assert_eq!(get(&mut con, &outside).as_deref(), Some("x"));
    }
    assert_eq!(command_calls(outside_port, "get"), before + 10);

    // A GET inside MULTI is the node's.
    let before = command_calls(port, "get");
    let (value,): (String,) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg(&key)
        .query(&mut con)
        .unwrap();
    assert_eq!(value, "v");
    assert_eq!(command_calls(port, "get"), before + 1);

    // A missing key is cached too, and answered in the client's protocol: filled by a RESP2
    // read (`$-1`), then served to the same connection in RESP3 (`_`).
    let missing = format!("{prefix}:missing");
    let missing_port = owner(cluster, &missing);
    let mut raw = RawClient::connect(proxy.local_addr());
    wait_until("the missing key cached", Duration::from_secs(10), || {
        assert_eq!(raw.call(&["GET", &missing]), Reply::Bulk(None));
        let before = command_calls(missing_port, "get");
        assert_eq!(raw.call(&["GET", &missing]), Reply::Bulk(None));
        let after = command_calls(missing_port, "get");
        (after == before)
            .then_some(())
            .ok_or(format!("{}", after - before))
    });
    assert!(matches!(raw.call(&["HELLO", "3"]), Reply::Map(_)));
    let before = command_calls(missing_port, "get");
    assert_eq!(raw.call(&["GET", &missing]), Reply::Null);
    assert_eq!(command_calls(missing_port, "get"), before);
}

#[test]
fn a_write_on_the_node_or_through_another_proxy_is_seen_and_own_writes_at_once() {
    let _turn = serial();
    let cluster = shared();
    let prefix = unique_prefix("nc-write");
    let proxy = caching_proxy(cluster, &format!("{prefix}:"), 1 << 20);
    let other = start_proxy(cluster);
    let mut con = proxy_client(&proxy);
    let mut via_other = proxy_client(&other);
    let key = format!("{prefix}:k");
    let mut node = cluster.direct(owner(cluster, &key));

    set(&mut con, &key, "0");
    wait_cached(&mut con, cluster, &key);
    let invalidations = proxy_count(&proxy, "proxy_near_cache_invalidations");
    set(&mut node, &key, "node");
    let seen = |con: &mut redis::Connection, want: &str| {
        let start = Instant::now();
        wait_until(&format!("{key} = {want}"), Duration::from_secs(2), || {
            let got = get(con, &key);
            (got.as_deref() == Some(want))
                .then_some(())
                .ok_or(format!("{got:?}"))
        });
        start.elapsed()
    };
    let took = seen(&mut con, "node");
    wait_count(&proxy, "proxy_near_cache_invalidations", invalidations + 1);
    wait_cached(&mut con, cluster, &key);
    set(&mut via_other, &key, "other");
    let took_other = seen(&mut con, "other");
    eprintln!("direct write seen after {took:?}, through another proxy after {took_other:?}");

    // Read-your-writes on one connection, every time, with the key cached in between.
    for i in 0..300 {
        let value = i.to_string();
        set(&mut con, &key, &value);
        assert_eq!(get(&mut con, &key), Some(value.clone()), "round {i}");
        assert_eq!(get(&mut con, &key), Some(value), "round {i}, cached");
    }
    // The same through a transaction (its own connection to the node).
    for i in 0..50 {
        let value = format!("tx{i}");
        let () = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(&key)
            .arg(&value)
            .ignore()
            .query(&mut con)
            .unwrap();
        assert_eq!(get(&mut con, &key), Some(value), "transaction round {i}");
    }
}

/// The key property, checked against a writer on the node itself: a read through the proxy
/// that starts `GRACE` after a write was acknowledged never returns an older value (the
/// report's trip on loopback takes well under a millisecond; the grace absorbs a loaded
/// machine's scheduling), and a reader never goes back to an older value than one it read.
#[test]
fn concurrent_writes_on_the_node_are_never_read_stale_past_the_report() {
    const GRACE: Duration = Duration::from_millis(300);
    const WRITES: u64 = 3000;
    let _turn = serial();
    let cluster = shared();
    let prefix = unique_prefix("nc-race");
    let proxy = caching_proxy(cluster, &format!("{prefix}:"), 1 << 20);
    let key = format!("{prefix}:counter");
    let port = owner(cluster, &key);
    let mut con = proxy_client(&proxy);
    set(&mut con, &key, 0);
    wait_cached(&mut con, cluster, &key);

    let start = Instant::now();
    // acked[i] = when write i was acknowledged (µs since start), 0 until then.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..=WRITES).map(|_| AtomicU64::new(0)).collect());
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, done) = (acked.clone(), done.clone());
        let mut node = cluster.direct(port);
        let key = key.clone();
        std::thread::spawn(move || {
            for i in 1..=WRITES {
                set(&mut node, &key, i);
                acked[i as usize].store(start.elapsed().as_micros() as u64 + 1, Ordering::SeqCst);
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut last_seen = 0u64;
    let mut reads = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
        let issued = start.elapsed();
        // The newest write acknowledged at least GRACE before this read was issued.
        let floor = (1..=WRITES)
            .rev()
            .find(|&i| {
                let at = acked[i as usize].load(Ordering::SeqCst);
                at != 0 && Duration::from_micros(at - 1) + GRACE <= issued
            })
            .unwrap_or(0);
        let value: u64 = get(&mut con, &key).unwrap().parse().unwrap();
        reads += 1;
        assert!(
            value >= floor,
            "read {value} at {issued:?}, but write {floor} was acknowledged more than {GRACE:?} before"
        );
        assert!(value >= last_seen, "read {value} after {last_seen}");
        last_seen = value;
    }
    writer.join().unwrap();
    assert!(
        done.load(Ordering::SeqCst),
        "the writer did not finish in time"
    );
    // Once the writer is done, the last value is read within the grace.
    std::thread::sleep(GRACE);
    assert_eq!(get(&mut con, &key), Some(WRITES.to_string()));
    let hits = proxy_count(&proxy, "proxy_near_cache_hits");
    eprintln!("{reads} reads during {WRITES} writes; hits so far {hits}");
}

#[test]
fn a_cut_invalidation_connection_drops_its_nodes_entries() {
    let _turn = serial();
    let cluster = shared();
    let prefix = unique_prefix("nc-cut");
    let proxy = caching_proxy(cluster, &format!("{prefix}:"), 1 << 20);
    let mut con = proxy_client(&proxy);
    let key = format!("{prefix}:k");
    let port = owner(cluster, &key);
    set(&mut con, &key, "old");
    wait_cached(&mut con, cluster, &key);
    let invalidations = proxy_count(&proxy, "proxy_near_cache_invalidations");

    // Cut this proxy's connections (every worker's) and write at once, before they are back:
    // no report of this write will ever come, so only dropping the entries saves the read.
    let mut node = cluster.direct(port);
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut node).unwrap();
    let ids: Vec<String> = list
        .lines()
        .filter(|line| line.contains("name=slotproxy-near-cache "))
        .filter_map(|line| {
            line.strip_prefix("id=")?
                .split(' ')
                .next()
                .map(String::from)
        })
        .collect();
    assert!(
        !ids.is_empty(),
        "no near-cache connection on the node:\n{list}"
    );
    for id in &ids {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut node)
            .unwrap();
    }
    set(&mut node, &key, "new");
    wait_until("the new value", Duration::from_secs(2), || {
        let got = get(&mut con, &key);
        (got.as_deref() == Some("new"))
            .then_some(())
            .ok_or(format!("{got:?}"))
    });
    wait_count(&proxy, "proxy_near_cache_invalidations", invalidations + 1);
    // And the connection comes back: the key is cached again.
    wait_cached(&mut con, cluster, &key);
}

#[test]
fn a_flush_on_the_node_clears_the_cache() {
    let _turn = serial();
    let cluster = shared();
    let prefix = unique_prefix("nc-flush");
    let proxy = caching_proxy(cluster, &format!("{prefix}:"), 1 << 20);
    let mut con = proxy_client(&proxy);
    let key = format!("{prefix}:k");
    set(&mut con, &key, "v");
    wait_cached(&mut con, cluster, &key);
    let mut node = cluster.direct(owner(cluster, &key));
    let () = redis::cmd("FLUSHALL").query(&mut node).unwrap();
    wait_until("the flushed key reads nil", Duration::from_secs(2), || {
        let got = get(&mut con, &key);
        got.is_none().then_some(()).ok_or(format!("{got:?}"))
    });
}

#[test]
fn the_memory_bound_holds_and_evictions_are_counted() {
    const MAX: usize = 8192;
    let _turn = serial();
    let cluster = shared();
    let prefix = unique_prefix("nc-lru");
    let proxy = caching_proxy(cluster, &format!("{prefix}:"), MAX);
    let mut con = proxy_client(&proxy);
    let value = "x".repeat(100);
    let warm = format!("{prefix}:warm");
    set(&mut con, &warm, &value);
    wait_cached(&mut con, cluster, &warm);
    for i in 0..200 {
        let key = format!("{prefix}:{i}");
        set(&mut con, &key, &value);
        assert_eq!(get(&mut con, &key).as_deref(), Some(value.as_str()));
        assert_eq!(get(&mut con, &key).as_deref(), Some(value.as_str()));
    }
    wait_count(&proxy, "proxy_near_cache_evictions", 100);
    let bytes = proxy_count(&proxy, "proxy_near_cache_bytes");
    let entries = proxy_count(&proxy, "proxy_near_cache_entries");
    assert!(bytes as usize <= MAX, "{bytes} bytes held, bound {MAX}");
    assert!(entries > 0 && entries < 100, "{entries} entries");
}

/// A slot moved to another primary takes its entries along, even with no write to report: a
/// missing key (cached as such) in an empty slot is read again from its new owner.
#[test]
fn a_moved_slot_drops_its_entries() {
    let _turn = serial();
    let cluster = Cluster::start(3, 0);
    let prefix = unique_prefix("nc-move");
    let proxy = caching_proxy(&cluster, &format!("{prefix}:"), 1 << 20);
    let mut con = proxy_client(&proxy);
    let key = format!("{prefix}:absent");
    let slot = local_keyslot(key.as_bytes());
    let from = owner(&cluster, &key);
    let to = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != from)
        .expect("another primary");
    wait_cached(&mut con, &cluster, &key);
    let invalidations = proxy_count(&proxy, "proxy_near_cache_invalidations");
    let before = command_calls(to, "get");
    cluster.migrate_slot(slot, to);
    wait_until(
        "the moved slot's key read from its new owner",
        Duration::from_secs(10),
        || {
            assert_eq!(get(&mut con, &key), None);
            let calls = command_calls(to, "get");
            (calls > before).then_some(()).ok_or(calls.to_string())
        },
    );
    wait_count(&proxy, "proxy_near_cache_invalidations", invalidations + 1);
    wait_cached(&mut con, &cluster, &key);
}

//! What production clusters do to a proxy, done for real with traffic running: a rolling
//! restart of every primary, a primary SIGKILLed (the writes Redis's asynchronous replication
//! loses, measured), and clients blocked on a primary that fails over. Each test has its own
//! cluster; writes go through the checker (`common::checker`), which reads every one back.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::checker::Checker;
use common::traffic::Traffic;
use common::{
    info_field, local_keyslot, proxy_client, start_proxy, tag_for_slot, try_query, try_role,
    unique_prefix, wait_until, Cluster, Role, CLUSTER_DEADLINE,
};

/// `n` list keys spread over the keyspace (and so over every primary).
fn spread_keys(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}:{i}")).collect()
}

#[test]
fn rolling_restart_of_every_primary_loses_no_write_and_shows_no_error() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let prefix = unique_prefix("rolling");
    let checker = Checker::start(proxy.local_addr(), spread_keys(&prefix, 120), 3);
    let traffic = Traffic::start(proxy.local_addr(), spread_keys(&format!("{prefix}:t"), 120));
    checker.wait_for_more(300);

    for primary in cluster.primaries() {
        let replica = cluster.replicas_of(primary)[0];
        // Fail over to the replica, restart the old primary (now its replica), fail back.
        cluster.failover(replica);
        checker.wait_for_more(200);
        cluster.restart(primary);
        cluster.wait_stable();
        checker.wait_for_more(200);
        cluster.failover(primary);
        checker.wait_for_more(200);
        traffic.wait_for_more_ops(100);
    }

    let report = traffic.stop();
    let (writes, keys) = checker.stop();
    report.assert_clean();
    writes.assert_no_failures();
    let verdict = writes.verify(&keys, &mut proxy_client(&proxy));
    verdict.assert_nothing_lost();
    eprintln!(
        "rolling restart of 3 primaries: {} acknowledged writes, 0 lost, 0 failed; {} other operations clean",
        verdict.acknowledged, report.ops
    );
}

#[test]
fn a_killed_primary_loses_only_what_replication_had_not_carried_and_the_proxy_adds_nothing() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let victim = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != cluster.seed_port())
        .expect("a primary that is not the seed");
    let replica = cluster.replicas_of(victim)[0];
    let prefix = unique_prefix("sigkill");
    let keys = spread_keys(&prefix, 150);
    let victim_slots: HashSet<u16> = cluster.slots_of(victim).into_iter().collect();
    let on_victim = |key: &str| victim_slots.contains(&local_keyslot(key.as_bytes()));

    let checker = Checker::start(proxy.local_addr(), keys, 4);
    checker.wait_for_more(2000);
    let kill_at = checker.elapsed();
    cluster.kill(victim);
    let killed_at = checker.elapsed();
    cluster.wait_promoted(replica);
    let promoted_at = checker.elapsed();
    checker.wait_for_more(2000);
    let (writes, keys) = checker.stop();

    let verdict = writes.verify(&keys, &mut proxy_client(&proxy));
    let lost_window: Vec<i128> = verdict
        .lost
        .iter()
        .map(|w| w.at.as_millis() as i128 - kill_at.as_millis() as i128)
        .collect();
    eprintln!(
        "SIGKILL of a primary: {} writes acknowledged, {} lost (acknowledged {:?} ms relative to the kill), \
         {} failed ({} of them ran anyway), replica promoted {} ms after the kill",
        verdict.acknowledged,
        verdict.lost.len(),
        lost_window,
        writes.failed.len(),
        verdict.failed_present,
        (promoted_at - kill_at).as_millis()
    );
    // Sent twice would show as a value twice: the proxy never resends a write that may have run.
    assert!(
        verdict.duplicated.is_empty(),
        "values written twice: {:?}",
        verdict.duplicated
    );
    // Only the killed primary's own writes fail or go missing; every other shard is untouched.
    for w in writes.failed.iter().chain(&verdict.lost) {
        assert!(
            on_victim(&w.key),
            "{} ({} at {:?}) failed or was lost, yet its slot is not the killed primary's",
            w.value,
            w.key,
            w.at
        );
    }
    // What asynchronous replication may lose: writes the old primary acknowledged just before
    // it died (on loopback, the replica is well under a second behind). A write acknowledged
    // long before, or by the promoted replica, would be the proxy's loss.
    for w in &verdict.lost {
        assert!(
            w.at + Duration::from_secs(1) >= kill_at
                && w.at <= killed_at + Duration::from_millis(500),
            "{} on {} was acknowledged at {:?} and lost, but the primary died at {kill_at:?}",
            w.value,
            w.key,
            w.at
        );
    }
    assert!(verdict.acknowledged > 4000);
}

/// A blocking command sent on its own connection (read timeout beyond its block time).
fn blocked_client(
    proxy: &slotproxy::Proxy,
    args: Vec<String>,
) -> std::thread::JoinHandle<(redis::RedisResult<redis::Value>, Duration)> {
    let mut con = proxy_client(proxy);
    con.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut cmd = redis::cmd(&args[0]);
        for a in &args[1..] {
            cmd.arg(a);
        }
        let result = cmd.query::<redis::Value>(&mut con);
        (result, start.elapsed())
    })
}

fn blocked_clients_on(port: u16) -> usize {
    try_query::<String>(port, &["INFO", "clients"])
        .ok()
        .and_then(|info| info_field(&info, "blocked_clients"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn wait_blocked(port: u16, n: usize) {
    wait_until(
        &format!("{n} clients blocked on {port}"),
        CLUSTER_DEADLINE,
        || match blocked_clients_on(port) {
            got if got >= n => Ok(()),
            got => Err(format!("{got} blocked")),
        },
    );
}

fn strings(value: &redis::Value) -> Vec<String> {
    match value {
        redis::Value::BulkString(b) => vec![String::from_utf8_lossy(b).into_owned()],
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().flat_map(strings).collect()
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| strings(k).into_iter().chain(strings(v)))
            .collect(),
        redis::Value::SimpleString(s) => vec![s.clone()],
        _ => Vec::new(),
    }
}

#[test]
fn clients_blocked_on_a_primary_that_fails_over_are_served_by_the_new_one() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let primary = cluster.primaries()[0];
    let replica = cluster.replicas_of(primary)[0];
    let slot = *cluster
        .slots_of(primary)
        .first()
        .expect("a slot of the primary");
    let tag = tag_for_slot(slot, &unique_prefix("blocked"));
    let key = |name: &str| format!("{{{tag}}}:{name}");
    let mut con = proxy_client(&proxy);
    for stream in ["xread", "xgroup"] {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(key(stream))
            .arg("g")
            .arg("$")
            .arg("MKSTREAM")
            .query(&mut con)
            .unwrap();
    }

    let waiters = vec![
        ("BLPOP", vec!["BLPOP".into(), key("a"), "25".into()]),
        ("BRPOP", vec!["BRPOP".into(), key("b"), "25".into()]),
        (
            "BLMOVE",
            vec![
                "BLMOVE".into(),
                key("c"),
                key("moved"),
                "LEFT".into(),
                "RIGHT".into(),
                "25".into(),
            ],
        ),
        (
            "XREAD",
            vec![
                "XREAD".into(),
                "BLOCK".into(),
                "25000".into(),
                "STREAMS".into(),
                key("xread"),
                "$".into(),
            ],
        ),
        (
            "XREADGROUP",
            vec![
                "XREADGROUP".into(),
                "GROUP".into(),
                "g".into(),
                "c1".into(),
                "BLOCK".into(),
                "25000".into(),
                "STREAMS".into(),
                key("xgroup"),
                ">".into(),
            ],
        ),
        // Never served: must time out 6 s after it was sent, not 6 s after the failover.
        (
            "BLPOP-timeout",
            vec!["BLPOP".into(), key("never"), "6".into()],
        ),
    ];
    let started = Instant::now();
    let handles: Vec<_> = waiters
        .into_iter()
        .map(|(name, args)| (name, blocked_client(&proxy, args)))
        .collect();
    wait_blocked(primary, handles.len());
    cluster.failover(replica);
    let failed_over_after = started.elapsed();
    // Every waiter but the one about to time out waits again on the new primary.
    wait_blocked(replica, handles.len() - 1);

    let _: i64 = redis::cmd("LPUSH")
        .arg(key("a"))
        .arg("A")
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("RPUSH")
        .arg(key("b"))
        .arg("B")
        .query(&mut con)
        .unwrap();
    let _: i64 = redis::cmd("LPUSH")
        .arg(key("c"))
        .arg("C")
        .query(&mut con)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(key("xread"))
        .arg("*")
        .arg("f")
        .arg("X")
        .query(&mut con)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(key("xgroup"))
        .arg("*")
        .arg("f")
        .arg("G")
        .query(&mut con)
        .unwrap();

    for (name, handle) in handles {
        let (result, took) = handle.join().expect("blocked client thread");
        let value = result.unwrap_or_else(|e| panic!("{name} failed across the failover: {e}"));
        let got = strings(&value);
        match name {
            "BLPOP" => assert_eq!(got, [key("a"), "A".into()], "{name}"),
            "BRPOP" => assert_eq!(got, [key("b"), "B".into()], "{name}"),
            "BLMOVE" => assert_eq!(got, ["C"], "{name}"),
            "XREAD" => assert!(got.contains(&"X".to_string()), "{name}: {got:?}"),
            "XREADGROUP" => assert!(got.contains(&"G".to_string()), "{name}: {got:?}"),
            _ => {
                assert_eq!(value, redis::Value::Nil, "{name}");
                // Sent again with the time it had left: about 6 s in all. Sent with its whole
                // timeout again, it would end 6 s after the failover (here after
                // {failed_over_after:?}).
                assert!(
                    took >= Duration::from_millis(5900) && took < Duration::from_millis(7500),
                    "{name} answered after {took:?} (failover done after {failed_over_after:?})"
                );
            }
        }
    }
    // Each element delivered once: nothing left behind, nothing twice.
    for list in ["a", "b", "c"] {
        let len: i64 = redis::cmd("LLEN").arg(key(list)).query(&mut con).unwrap();
        assert_eq!(len, 0, "{list} still holds an element");
    }
    let moved: Vec<String> = redis::cmd("LRANGE")
        .arg(key("moved"))
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(moved, ["C"]);
    let pending: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(key("xgroup"))
        .arg("g")
        .query(&mut con)
        .unwrap();
    assert_eq!(pending.first(), Some(&redis::Value::Int(1)), "{pending:?}");
    assert_eq!(try_role(replica).unwrap(), Role::Primary);
}

/// `total_connections_received` summed over every node.
fn connections_received(cluster: &Cluster) -> u64 {
    cluster
        .live_ports()
        .into_iter()
        .map(|port| {
            let info: String = try_query(port, &["INFO", "stats"]).unwrap();
            info_field(&info, "total_connections_received")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no total_connections_received on {port}"))
        })
        .sum()
}

/// Transactions at a steady rate for `length`, half of them under WATCH, on `threads`
/// connections; returns how many ran (EXEC answered) and how many were aborted by WATCH.
fn transactions(
    proxy: &slotproxy::Proxy,
    prefix: &str,
    threads: usize,
    per_second: u64,
    length: Duration,
) -> (u64, u64) {
    let per_thread = per_second / threads as u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mut con = proxy_client(proxy);
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let start = Instant::now();
                let (mut ran, mut aborted) = (0u64, 0u64);
                let mut n = 0u64;
                while start.elapsed() < length {
                    // Paced: the n-th transaction starts no earlier than n / rate.
                    let due = Duration::from_secs_f64(n as f64 / per_thread as f64);
                    if let Some(early) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(early);
                    }
                    let key = format!("{{{prefix}:{t}:{}}}", n % 64);
                    let watched = n.is_multiple_of(2);
                    let mut pipe = redis::pipe();
                    if watched {
                        let _: () = redis::cmd("WATCH").arg(&key).query(&mut con).unwrap();
                    }
                    pipe.atomic()
                        .cmd("INCR")
                        .arg(&key)
                        .cmd("SET")
                        .arg(format!("{key}:last"))
                        .arg(n);
                    let reply: Option<(i64, String)> = pipe.query(&mut con).unwrap();
                    match reply {
                        Some(_) => ran += 1,
                        None => aborted += 1,
                    }
                    n += 1;
                }
                (ran, aborted)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("transaction thread"))
        .fold((0, 0), |(r, a), (r2, a2)| (r + r2, a + a2))
}

#[test]
fn transactions_at_3000_per_second_open_almost_no_backend_connections() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let prefix = unique_prefix("churn");
    // Warm up: the proxy opens the connections it keeps.
    transactions(&proxy, &prefix, 6, 600, Duration::from_secs(2));
    let before = connections_received(&cluster);
    let length = Duration::from_secs(60);
    let started = Instant::now();
    let (ran, aborted) = transactions(&proxy, &prefix, 6, 3000, length);
    let took = started.elapsed();
    let opened = connections_received(&cluster) - before;
    let rate = (ran + aborted) as f64 / took.as_secs_f64();
    eprintln!(
        "transactions: {ran} ran + {aborted} aborted by WATCH in {took:?} ({rate:.0}/s); \
         {opened} backend connections opened meanwhile"
    );
    assert_eq!(aborted, 0, "nobody else touched the watched keys");
    // The pace is a target, not a timed assertion: the check is that it was kept up at all.
    assert!(ran > 60_000, "only {ran} transactions ran in {took:?}");
    // What stays: the periodic topology refreshes' one-off queries (every 10 s) and nothing per
    // transaction.
    assert!(
        opened <= 40,
        "{opened} backend connections opened for {ran} transactions"
    );
}

/// GET of `key` on a connection of its own, with how long it took.
fn timed_get_on(
    proxy: &slotproxy::Proxy,
    key: String,
) -> std::thread::JoinHandle<(Result<Option<String>, String>, Duration)> {
    let mut con = proxy_client(proxy);
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::thread::spawn(move || {
        let start = Instant::now();
        let result = redis::cmd("GET")
            .arg(&key)
            .query::<Option<String>>(&mut con)
            .map_err(|e| e.to_string());
        (result, start.elapsed())
    })
}

#[test]
fn requests_for_a_lost_node_wait_in_a_bounded_queue_for_its_replacement() {
    let cluster = Cluster::start(3, 1);
    let victim = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != cluster.seed_port())
        .expect("a primary that is not the seed");
    let replica = cluster.replicas_of(victim)[0];
    let configured = |timeout_ms: u64, size: usize| {
        common::start_proxy_configured(vec![cluster.seed_url()], move |c| {
            c.backend.recovery_timeout = Duration::from_millis(timeout_ms);
            c.backend.recovery_queue_size = size;
            c.backend.retry_deadline = Duration::from_secs(20);
        })
    };
    // Waits long enough for the promotion (node timeout 2 s, then an election).
    let patient = configured(15_000, 10_000);
    // Room for two waiting requests only.
    let small_queue = configured(15_000, 2);
    // Waits 300 ms only.
    let impatient = configured(300, 10_000);

    let prefix = unique_prefix("recovery");
    let victim_slots: HashSet<u16> = cluster.slots_of(victim).into_iter().collect();
    let dead_keys: Vec<String> = (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| victim_slots.contains(&local_keyslot(k.as_bytes())))
        .take(8)
        .collect();
    let mut con = proxy_client(&patient);
    for key in &dead_keys {
        let _: () = redis::cmd("SET").arg(key).arg(key).query(&mut con).unwrap();
    }
    cluster.wait_replicated(victim);
    // Every proxy knows the victim's connections before it dies.
    for proxy in [&small_queue, &impatient] {
        let got: Option<String> = redis::cmd("GET")
            .arg(&dead_keys[0])
            .query(&mut proxy_client(proxy))
            .unwrap();
        assert_eq!(got.as_deref(), Some(dead_keys[0].as_str()));
    }
    let checker = Checker::start(
        patient.local_addr(),
        spread_keys(&format!("{prefix}:w"), 90),
        3,
    );
    checker.wait_for_more(500);

    cluster.kill(victim);
    let patient_gets: Vec<_> = dead_keys
        .iter()
        .map(|k| timed_get_on(&patient, k.clone()))
        .collect();
    let queued_gets: Vec<_> = dead_keys[..5]
        .iter()
        .map(|k| timed_get_on(&small_queue, k.clone()))
        .collect();
    let (impatient_result, impatient_took) = timed_get_on(&impatient, dead_keys[0].clone())
        .join()
        .unwrap();
    cluster.wait_promoted(replica);
    checker.wait_for_more(500);

    // Past recovery_timeout_ms: a clear error, soon after the bound.
    let error = impatient_result.expect_err("a GET past recovery_timeout_ms must fail");
    assert!(
        error.contains("not back within recovery_timeout_ms = 300"),
        "{error}"
    );
    assert!(
        impatient_took < Duration::from_secs(2),
        "{impatient_took:?}"
    );
    // Within it: each request waited for the promoted replica and got its value.
    for (key, handle) in dead_keys.iter().zip(patient_gets) {
        let (result, took) = handle.join().unwrap();
        assert_eq!(result, Ok(Some(key.clone())), "GET {key} after {took:?}");
    }
    // Past the queue's size: an error at once for the requests that found no room.
    let mut full = 0;
    let mut served = 0;
    for (key, handle) in dead_keys.iter().zip(queued_gets) {
        match handle.join().unwrap() {
            (Ok(got), _) => {
                assert_eq!(got.as_ref(), Some(key));
                served += 1;
            }
            (Err(e), took) => {
                assert!(
                    e.contains("recovery queue is full (recovery_queue_size = 2)"),
                    "{e}"
                );
                assert!(took < Duration::from_secs(1), "{took:?}");
                full += 1;
            }
        }
    }
    assert_eq!((served, full), (2, 3));

    // The writers: only a write in flight when the node died may fail (it may have run, so it
    // is never sent again); the rest waited. Nothing is written twice.
    let (writes, keys) = checker.stop();
    let verdict = writes.verify(&keys, &mut proxy_client(&patient));
    assert!(verdict.duplicated.is_empty(), "{:?}", verdict.duplicated);
    assert!(
        writes.failed.len() <= 3,
        "{} writes failed: {:?}",
        writes.failed.len(),
        writes.failures
    );
    for failure in &writes.failures {
        assert!(failure.contains("may or may not have run"), "{failure}");
    }
    eprintln!(
        "recovery queue: {} writes acknowledged while the primary was replaced, {} failed in flight, {} lost",
        verdict.acknowledged,
        writes.failed.len(),
        verdict.lost.len()
    );
}

//! Commands sent to every primary and merged: KEYS, SCAN, DBSIZE, FLUSHALL, RANDOMKEY, and
//! SCRIPT LOAD/EXISTS followed by EVALSHA on every shard.

mod common;

use std::collections::{BTreeSet, HashSet};

use common::{local_keyslot, proxy_client, start_proxy, tag_for_slot, wait_until, Cluster};

/// SCANs the whole keyspace through `con`; asserts the cursor is a plain unsigned integer.
fn scan_all(con: &mut redis::Connection, pattern: Option<&str>) -> Vec<String> {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    for _ in 0..100_000 {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(&cursor);
        if let Some(pattern) = pattern {
            cmd.arg("MATCH").arg(pattern);
        }
        cmd.arg("COUNT").arg(10);
        let (next, batch): (String, Vec<String>) = cmd.query(con).unwrap();
        assert!(
            next.parse::<u64>().is_ok() && (next == "0" || !next.starts_with('0')),
            "SCAN cursor {next:?} is not a plain unsigned integer"
        );
        keys.extend(batch);
        if next == "0" {
            return keys;
        }
        cursor = next;
    }
    panic!("SCAN did not finish within 100,000 calls");
}

#[test]
fn keyspace_commands_cover_every_primary() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let mut con = proxy_client(&proxy);
    let primaries = cluster.primaries();

    let mut all: BTreeSet<String> = (0..300).map(|i| format!("bc:{i}")).collect();
    let tag = tag_for_slot(4242, "scan");
    let tagged: BTreeSet<String> = (0..25).map(|i| format!("{{{tag}}}:{i}")).collect();
    all.extend(tagged.iter().cloned());
    for key in &all {
        let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut con).unwrap();
    }
    let owners: HashSet<u16> = all
        .iter()
        .map(|k| cluster.primary_for_slot(local_keyslot(k.as_bytes())))
        .collect();
    assert_eq!(owners.len(), 3, "keys should be on every primary");

    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert_eq!(keys.len(), all.len(), "KEYS * returns every key once");
    assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), all);
    let keys: Vec<String> = redis::cmd("KEYS").arg("bc:1?").query(&mut con).unwrap();
    let want: BTreeSet<String> = (10..20).map(|i| format!("bc:{i}")).collect();
    assert_eq!(keys.into_iter().collect::<BTreeSet<_>>(), want);

    let scanned = scan_all(&mut con, None);
    let distinct: BTreeSet<String> = scanned.iter().cloned().collect();
    assert_eq!(distinct, all, "SCAN must return every key at least once");
    let scanned = scan_all(&mut con, Some(&format!("{{{tag}}}*")));
    assert_eq!(scanned.into_iter().collect::<BTreeSet<_>>(), tagged);

    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    let per_primary: i64 = primaries
        .iter()
        .map(|&p| common::query::<i64>(p, &["DBSIZE"]))
        .sum();
    assert_eq!(dbsize, per_primary);
    assert_eq!(dbsize, all.len() as i64);

    // INFO answers as one server: the keyspace is the whole cluster's, plus the proxy section.
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    let keys_line = format!("db0:keys={},", all.len());
    assert!(
        info.contains(&keys_line),
        "INFO keyspace should count {} keys:\n{info}",
        all.len()
    );
    assert!(
        info.contains("# Server") && info.contains("# Proxy"),
        "{info}"
    );
    let keyspace: String = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    assert!(
        keyspace.contains(&keys_line) && !keyspace.contains("# Proxy"),
        "{keyspace}"
    );

    for _ in 0..20 {
        let key: Option<String> = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
        let key = key.expect("RANDOMKEY on a non-empty keyspace");
        assert!(all.contains(&key), "RANDOMKEY returned unknown key {key}");
    }

    let ok: String = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    assert_eq!(ok, "OK");
    for &p in &primaries {
        assert_eq!(common::query::<i64>(p, &["DBSIZE"]), 0, "DBSIZE of {p}");
    }
    for replica in cluster.replicas() {
        wait_until(
            &format!("replica {replica} to replicate FLUSHALL"),
            common::CLUSTER_DEADLINE,
            || match common::try_query::<i64>(replica, &["DBSIZE"])? {
                0 => Ok(()),
                n => Err(format!("{n} keys")),
            },
        );
    }
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(dbsize, 0);
    let key: Option<String> = redis::cmd("RANDOMKEY").query(&mut con).unwrap();
    assert_eq!(key, None);
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    assert!(scan_all(&mut con, None).is_empty());
}

#[test]
fn script_load_reaches_every_primary_and_evalsha_runs_on_each_shard() {
    let cluster = Cluster::start(3, 1);
    let proxy = start_proxy(&cluster);
    let mut con = proxy_client(&proxy);
    let primaries = cluster.primaries();
    let script = "return {KEYS[1], redis.call('GET', KEYS[1])}";

    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(script)
        .query(&mut con)
        .unwrap();
    assert_eq!(sha.len(), 40, "{sha}");
    for &p in &primaries {
        let exists: Vec<i64> = common::query(p, &["SCRIPT", "EXISTS", &sha]);
        assert_eq!(exists, [1], "script on primary {p}");
    }
    let unknown = "0".repeat(40);
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg(&unknown)
        .query(&mut con)
        .unwrap();
    assert_eq!(exists, [1, 0]);

    // Keys on every primary.
    let keys: Vec<String> = (0..30).map(|i| format!("sc:{i}")).collect();
    let owners: HashSet<u16> = keys
        .iter()
        .map(|k| cluster.primary_for_slot(local_keyslot(k.as_bytes())))
        .collect();
    assert_eq!(owners.len(), 3);
    for (i, key) in keys.iter().enumerate() {
        let _: () = redis::cmd("SET").arg(key).arg(i).query(&mut con).unwrap();
        let got: (String, String) = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(key)
            .query(&mut con)
            .unwrap();
        assert_eq!(got, (key.clone(), i.to_string()));
    }
}

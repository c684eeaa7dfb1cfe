//! Multi-key commands split across shards: MGET keeps key order, MSET writes each key to its
//! owner, DEL/EXISTS/TOUCH/UNLINK add up per-slot counts the way Redis counts them.

mod common;

use std::collections::HashSet;

use common::{local_keyslot, proxy_client, shared, start_proxy, unique_prefix, Cluster};

/// `n` keys under `prefix` that together cover every primary of `cluster`.
fn spread_keys(cluster: &Cluster, prefix: &str, n: usize) -> Vec<String> {
    let keys: Vec<String> = (0..n).map(|i| format!("{prefix}:{i}")).collect();
    let owners: HashSet<u16> = keys.iter().map(|k| owner(cluster, k)).collect();
    assert_eq!(owners.len(), 3, "{n} keys should cover all 3 primaries");
    keys
}

fn owner(cluster: &Cluster, key: &str) -> u16 {
    cluster.primary_for_slot(local_keyslot(key.as_bytes()))
}

#[test]
fn mget_across_shards_keeps_key_order_with_nil_for_missing_keys() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let mut con = proxy_client(&proxy);
    let keys = spread_keys(cluster, &unique_prefix("mget"), 100);

    // Written straight to the owning primaries, so this test depends on MGET alone.
    let mut expected = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        if i % 3 == 1 {
            expected.push(None);
            continue;
        }
        let value = format!("value-{i}");
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(&value)
            .query(&mut cluster.direct(owner(cluster, key)))
            .unwrap();
        expected.push(Some(value));
    }
    let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
    assert_eq!(got, expected);

    // Reversed and with duplicates: still one reply per key, in the order asked.
    let mut asked: Vec<&String> = keys.iter().rev().collect();
    asked.push(&keys[0]);
    asked.insert(0, &keys[0]);
    let want: Vec<Option<String>> = asked
        .iter()
        .map(|k| expected[keys.iter().position(|x| x == *k).unwrap()].clone())
        .collect();
    let got: Vec<Option<String>> = redis::cmd("MGET").arg(&asked).query(&mut con).unwrap();
    assert_eq!(got, want);
}

#[test]
fn mset_across_shards_writes_every_key_to_its_owner() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let mut con = proxy_client(&proxy);
    let keys = spread_keys(cluster, &unique_prefix("mset"), 100);
    let mut cmd = redis::cmd("MSET");
    for (i, key) in keys.iter().enumerate() {
        cmd.arg(key).arg(format!("mset-{i}"));
    }
    let reply: String = cmd.query(&mut con).unwrap();
    assert_eq!(reply, "OK");
    for (i, key) in keys.iter().enumerate() {
        let got: Option<String> = redis::cmd("GET")
            .arg(key)
            .query(&mut cluster.direct(owner(cluster, key)))
            .unwrap();
        assert_eq!(got, Some(format!("mset-{i}")), "{key} on its owner");
    }
    // A repeated key: the last value wins, as in Redis.
    let reply: String = redis::cmd("MSET")
        .arg(&keys[0])
        .arg("first")
        .arg(&keys[1])
        .arg("x")
        .arg(&keys[0])
        .arg("last")
        .query(&mut con)
        .unwrap();
    assert_eq!(reply, "OK");
    let got: String = redis::cmd("GET").arg(&keys[0]).query(&mut con).unwrap();
    assert_eq!(got, "last");
}

#[test]
fn del_exists_touch_unlink_sum_like_redis_with_duplicates() {
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let mut con = proxy_client(&proxy);
    let p = unique_prefix("counting");
    // Three existing keys on three different primaries, and one missing key.
    let mut existing: Vec<String> = Vec::new();
    let mut owners = HashSet::new();
    for i in 0.. {
        let key = format!("{p}:{i}");
        if owners.insert(owner(cluster, &key)) {
            existing.push(key);
        }
        if existing.len() == 3 {
            break;
        }
    }
    let [a, b, c] = [&existing[0], &existing[1], &existing[2]];
    let missing = format!("{p}:missing");
    for key in &existing {
        let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut con).unwrap();
    }

    let count = |con: &mut redis::Connection, name: &str, keys: &[&String]| -> i64 {
        redis::cmd(name).arg(keys).query(con).unwrap()
    };
    assert_eq!(count(&mut con, "EXISTS", &[a, a]), 2);
    assert_eq!(count(&mut con, "EXISTS", &[a, a, b, &missing, c]), 4);
    assert_eq!(count(&mut con, "TOUCH", &[a, b, b, &missing]), 3);
    // Deleting a key twice in one command counts it once.
    assert_eq!(count(&mut con, "UNLINK", &[a, a, &missing]), 1);
    assert_eq!(count(&mut con, "EXISTS", &[a, b, c]), 2);
    assert_eq!(count(&mut con, "DEL", &[b, c, c, &missing, b]), 2);
    assert_eq!(count(&mut con, "EXISTS", &[a, b, c, &missing]), 0);
    for key in &existing {
        let exists: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut cluster.direct(owner(cluster, key)))
            .unwrap();
        assert_eq!(exists, 0, "{key} still on its owner");
    }

    // Over 100 keys on every shard.
    let keys = spread_keys(cluster, &format!("{p}:many"), 100);
    for key in keys.iter().step_by(2) {
        let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut con).unwrap();
    }
    let all: Vec<&String> = keys.iter().collect();
    assert_eq!(count(&mut con, "EXISTS", &all), 50);
    assert_eq!(count(&mut con, "DEL", &all), 50);
    assert_eq!(count(&mut con, "EXISTS", &all), 0);
}

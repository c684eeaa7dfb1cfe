//! Client-side caching through the proxy (`CLIENT TRACKING`), as one server does it: a client
//! that read a key hears when it changes, whoever changed it (another client of the proxy, or
//! a client of the node itself), on whichever node it lives; RESP3 push or the RESP2
//! redirect client's `__redis__:invalidate` messages; BCAST prefixes, OPTIN with
//! `CLIENT CACHING`, the tracking queries and Redis's errors.

mod common;

use std::time::Duration;

use common::raw::{RawClient, Reply};
use common::{local_keyslot, query, shared, start_proxy, unique_prefix, Cluster};

/// The tests take turns: one of them cuts the proxies' invalidation feeds, which every
/// tracking client of the moment hears about.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Some(text.as_bytes().to_vec()))
}

/// A RESP3 client (HELLO 3) with tracking on, `options` after `CLIENT TRACKING ON`.
fn tracking_client(proxy: &slotproxy::Proxy, options: &[&str]) -> RawClient {
    let mut client = RawClient::connect(proxy.local_addr());
    assert!(matches!(client.call(&["HELLO", "3"]), Reply::Map(_)));
    let mut on = vec!["CLIENT", "TRACKING", "ON"];
    on.extend_from_slice(options);
    assert_eq!(client.call(&on), ok());
    client
}

/// The next invalidation push: the keys it names (`None`: everything).
fn invalidation(client: &mut RawClient) -> Option<Vec<String>> {
    match client.read_reply() {
        Reply::Push(items) => {
            assert_eq!(items.first(), Some(&bulk("invalidate")), "{items:?}");
            match items.get(1) {
                Some(Reply::Array(Some(keys))) => Some(keys.iter().map(Reply::text).collect()),
                Some(Reply::Null) => None,
                other => panic!("unexpected invalidation payload {other:?}"),
            }
        }
        other => panic!("expected an invalidation push, got {other:?}"),
    }
}

/// Nothing arrives within a short while.
fn silent(client: &mut RawClient) {
    client.set_read_timeout(Duration::from_millis(300));
    let got = client.try_read_reply();
    assert!(got.is_err(), "expected nothing, got {got:?}");
    client.set_read_timeout(Duration::from_secs(10));
}

/// Keys spread over every shard of `cluster`.
fn spread_keys(cluster: &Cluster, prefix: &str) -> Vec<String> {
    let mut owners = std::collections::HashSet::new();
    let mut keys = Vec::new();
    for i in 0.. {
        let key = format!("{prefix}:{i}");
        if owners.insert(cluster.primary_for_slot(local_keyslot(key.as_bytes()))) || i < 6 {
            keys.push(key);
        }
        if owners.len() == cluster.primaries().len() && keys.len() >= 6 {
            break;
        }
    }
    keys
}

#[test]
fn a_reader_hears_of_each_change_once_whoever_makes_it() {
    let _serial = serial();
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let mut reader = tracking_client(&proxy, &[]);
    let mut writer = RawClient::connect(proxy.local_addr());
    for key in spread_keys(cluster, &unique_prefix("track")) {
        assert_eq!(writer.call(&["SET", &key, "v1"]), ok());
        assert_eq!(reader.call(&["GET", &key]), bulk("v1"));
        // Through the proxy.
        assert_eq!(writer.call(&["SET", &key, "v2"]), ok());
        assert_eq!(invalidation(&mut reader), Some(vec![key.clone()]));
        // Told once: until it reads the key again, further changes are not reported.
        assert_eq!(writer.call(&["SET", &key, "v3"]), ok());
        silent(&mut reader);
        // Directly on the node that holds it, bypassing the proxy.
        assert_eq!(reader.call(&["GET", &key]), bulk("v3"));
        let owner = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
        let _: () = query(owner, &["DEL", &key]);
        assert_eq!(invalidation(&mut reader), Some(vec![key.clone()]));
    }
    // A read of several keys remembers each of them.
    let p = unique_prefix("track-m");
    let (a, b) = (format!("{{{p}}}:a"), format!("{{{p}}}:b"));
    assert_eq!(
        reader.call(&["MGET", &a, &b]),
        Reply::Array(Some(vec![Reply::Null, Reply::Null]))
    );
    assert_eq!(writer.call(&["SET", &b, "x"]), ok());
    assert_eq!(invalidation(&mut reader), Some(vec![b.clone()]));
    // A read inside a transaction too.
    assert_eq!(reader.call(&["MULTI"]), ok());
    assert_eq!(reader.call(&["GET", &b]), Reply::Simple("QUEUED".into()));
    assert_eq!(reader.call(&["EXEC"]), Reply::Array(Some(vec![bulk("x")])));
    assert_eq!(writer.call(&["SET", &b, "y"]), ok());
    assert_eq!(invalidation(&mut reader), Some(vec![b.clone()]));
    // Off: nothing more.
    assert_eq!(reader.call(&["GET", &a]), Reply::Null);
    assert_eq!(reader.call(&["CLIENT", "TRACKING", "OFF"]), ok());
    assert_eq!(writer.call(&["SET", &a, "x"]), ok());
    silent(&mut reader);
}

#[test]
fn a_resp2_client_redirects_to_a_subscriber_of_the_invalidate_channel() {
    let _serial = serial();
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let mut listener = RawClient::connect(proxy.local_addr());
    let Reply::Int(listener_id) = listener.call(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID")
    };
    let subscribed = listener.call(&["SUBSCRIBE", "__redis__:invalidate"]);
    assert!(
        matches!(subscribed, Reply::Array(Some(_))),
        "{subscribed:?}"
    );
    let id = listener_id.to_string();
    let mut reader = RawClient::connect(proxy.local_addr());
    assert_eq!(
        reader.call(&["CLIENT", "TRACKING", "ON", "REDIRECT", &id]),
        ok()
    );
    assert_eq!(
        reader.call(&["CLIENT", "GETREDIR"]),
        Reply::Int(listener_id)
    );
    assert_eq!(
        reader.call(&["CLIENT", "TRACKINGINFO"]),
        Reply::Array(Some(vec![
            bulk("flags"),
            Reply::Array(Some(vec![bulk("on")])),
            bulk("redirect"),
            Reply::Int(listener_id),
            bulk("prefixes"),
            Reply::Array(Some(vec![])),
        ]))
    );
    let mut writer = RawClient::connect(proxy.local_addr());
    let key = format!("{}:k", unique_prefix("redirect"));
    assert_eq!(reader.call(&["GET", &key]), Reply::Bulk(None));
    assert_eq!(writer.call(&["SET", &key, "v"]), ok());
    assert_eq!(
        listener.read_reply(),
        Reply::Array(Some(vec![
            bulk("message"),
            bulk("__redis__:invalidate"),
            Reply::Array(Some(vec![bulk(&key)])),
        ]))
    );
    // The listener goes away: the next invalidation finds no one, and the redirect shows
    // broken.
    drop(listener);
    assert_eq!(reader.call(&["GET", &key]), bulk("v"));
    assert_eq!(writer.call(&["SET", &key, "w"]), ok());
    common::wait_until(
        "the broken redirect to show",
        Duration::from_secs(5),
        || match reader.call(&["CLIENT", "TRACKINGINFO"]) {
            Reply::Array(Some(info))
                if info.get(1)
                    == Some(&Reply::Array(Some(vec![
                        bulk("on"),
                        bulk("broken_redirect"),
                    ]))) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn broadcast_prefixes_and_optin_caching() {
    let _serial = serial();
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let p = unique_prefix("bcast");
    let users = format!("{p}:user:");
    let mut bcast = tracking_client(&proxy, &["BCAST", "PREFIX", &users]);
    let mut writer = RawClient::connect(proxy.local_addr());
    // Never read, still reported: every key of the prefix, on every shard.
    for key in spread_keys(cluster, &format!("{users}x")) {
        assert_eq!(writer.call(&["SET", &key, "1"]), ok());
        assert_eq!(invalidation(&mut bcast), Some(vec![key.clone()]));
    }
    assert_eq!(writer.call(&["SET", &format!("{p}:other"), "1"]), ok());
    silent(&mut bcast);
    let Reply::Map(info) = bcast.call(&["CLIENT", "TRACKINGINFO"]) else {
        panic!("TRACKINGINFO over RESP3 is a map")
    };
    assert_eq!(info[0].1, Reply::Set(vec![bulk("on"), bulk("bcast")]));
    assert_eq!(info[2].1, Reply::Array(Some(vec![bulk(&users)])));

    // OPTIN: only the read right after CLIENT CACHING yes is remembered.
    let mut optin = tracking_client(&proxy, &["OPTIN"]);
    let (a, b) = (format!("{p}:a"), format!("{p}:b"));
    assert_eq!(optin.call(&["GET", &a]), Reply::Null);
    assert_eq!(optin.call(&["CLIENT", "CACHING", "yes"]), ok());
    assert_eq!(optin.call(&["GET", &b]), Reply::Null);
    assert_eq!(writer.call(&["SET", &a, "1"]), ok());
    assert_eq!(writer.call(&["SET", &b, "1"]), ok());
    assert_eq!(invalidation(&mut optin), Some(vec![b.clone()]));
    silent(&mut optin);
}

#[test]
fn options_and_errors_as_redis_words_them() {
    let _serial = serial();
    let proxy = start_proxy(shared());
    let mut c = RawClient::connect(proxy.local_addr());
    assert_eq!(c.call(&["CLIENT", "GETREDIR"]), Reply::Int(-1));
    let refusals: &[(&[&str], &str)] = &[
        (&["CLIENT", "TRACKING", "ON", "PREFIX", "a"], "ERR PREFIX option requires BCAST mode to be enabled"),
        (&["CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"], "ERR You can't use both OPTIN and OPTOUT"),
        (&["CLIENT", "TRACKING", "ON", "BCAST", "OPTIN"], "ERR OPTIN and OPTOUT are not compatible with BCAST"),
        (&["CLIENT", "TRACKING", "ON", "REDIRECT", "999999999"], "ERR The client ID you want redirect to does not exist"),
        (&["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "ab", "PREFIX", "a"], "ERR Prefix 'ab' overlaps with another provided prefix 'a'. Prefixes for a single client must not overlap."),
        (&["CLIENT", "TRACKING", "MAYBE"], "ERR syntax error"),
        (&["CLIENT", "TRACKING", "ON", "SOMETIMES"], "ERR syntax error"),
        (&["CLIENT", "CACHING", "yes"], "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"),
    ];
    for (args, error) in refusals {
        assert_eq!(c.call(args), Reply::Error((*error).into()), "{args:?}");
    }
    assert_eq!(c.call(&["CLIENT", "GETREDIR"]), Reply::Int(-1));
    assert_eq!(
        c.call(&["CLIENT", "TRACKING", "ON", "OPTOUT", "NOLOOP"]),
        ok()
    );
    assert_eq!(c.call(&["CLIENT", "GETREDIR"]), Reply::Int(0));
    assert_eq!(
        c.call(&["CLIENT", "CACHING", "yes"]),
        Reply::Error(
            "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.".into()
        )
    );
    assert_eq!(c.call(&["CLIENT", "CACHING", "no"]), ok());
    assert_eq!(
        c.call(&["CLIENT", "TRACKINGINFO"]),
        Reply::Array(Some(vec![
            bulk("flags"),
            Reply::Array(Some(vec![
                bulk("on"),
                bulk("optout"),
                bulk("caching-no"),
                bulk("noloop")
            ])),
            bulk("redirect"),
            Reply::Int(0),
            bulk("prefixes"),
            Reply::Array(Some(vec![])),
        ]))
    );
    assert_eq!(
        c.call(&["CLIENT", "TRACKING", "ON", "OPTIN"]),
        Reply::Error("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.".into())
    );
    assert_eq!(
        c.call(&["CLIENT", "TRACKING", "ON", "BCAST"]),
        Reply::Error("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.".into())
    );
    // RESET turns tracking off.
    assert_eq!(c.call(&["RESET"]), Reply::Simple("RESET".into()));
    assert_eq!(c.call(&["CLIENT", "GETREDIR"]), Reply::Int(-1));
}

/// The proxy can't report changes it did not hear: when its feed connection to a node breaks,
/// every tracking client is told that everything is invalid, at once and again once the node
/// is heard again (what was read in between may be stale); then changes are reported as before.
#[test]
fn a_lost_feed_invalidates_everything_until_heard_again() {
    let _serial = serial();
    let cluster = shared();
    let proxy = start_proxy(cluster);
    let mut reader = tracking_client(&proxy, &[]);
    let mut writer = RawClient::connect(proxy.local_addr());
    // A client whose redirect target has left: the "everything" meant for it finds no one,
    // and it is told its redirect broke.
    let mut orphan = RawClient::connect(proxy.local_addr());
    let mut target_client = RawClient::connect(proxy.local_addr());
    let Reply::Int(target_id) = target_client.call(&["CLIENT", "ID"]) else {
        panic!("CLIENT ID")
    };
    assert_eq!(
        orphan.call(&[
            "CLIENT",
            "TRACKING",
            "ON",
            "REDIRECT",
            &target_id.to_string()
        ]),
        ok()
    );
    drop(target_client);
    let key = format!("{}:k", unique_prefix("feed"));
    assert_eq!(reader.call(&["GET", &key]), Reply::Null);
    let owner = cluster.primary_for_slot(local_keyslot(key.as_bytes()));
    let list: String = query(owner, &["CLIENT", "LIST"]);
    let feeds: Vec<&str> = list
        .lines()
        .filter(|line| line.contains("name=slotproxy-invalidations "))
        .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect();
    assert!(!feeds.is_empty(), "no feed connection on {owner}: {list}");
    for id in feeds {
        let _: i64 = query(owner, &["CLIENT", "KILL", "ID", id]);
    }
    assert_eq!(invalidation(&mut reader), None);
    assert_eq!(invalidation(&mut reader), None);
    let Reply::Array(Some(info)) = orphan.call(&["CLIENT", "TRACKINGINFO"]) else {
        panic!("TRACKINGINFO")
    };
    assert_eq!(
        info[1],
        Reply::Array(Some(vec![bulk("on"), bulk("broken_redirect")]))
    );
    assert_eq!(reader.call(&["GET", &key]), Reply::Null);
    assert_eq!(writer.call(&["SET", &key, "v"]), ok());
    assert_eq!(invalidation(&mut reader), Some(vec![key.clone()]));
}

//! The CLIENT command family, answered from the proxy's own clients (every worker's) in
//! Redis 7's formats: LIST/INFO lines and filters, KILL in both forms and by every filter,
//! REPLY ON/OFF/SKIP, PAUSE WRITE/ALL and UNPAUSE, UNBLOCK of a blocking command parked on
//! a node, NO-EVICT/NO-TOUCH, the tracking queries of a client that does not track, and what
//! RESET undoes.

mod common;

use std::collections::HashMap;

use common::raw::{RawClient, Reply};
use common::{shared, start_proxy, unique_prefix, wait_until, CLUSTER_DEADLINE};

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn int(reply: Reply) -> i64 {
    match reply {
        Reply::Int(n) => n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

/// One `CLIENT LIST` line as its fields, in order.
fn fields(line: &str) -> Vec<(String, String)> {
    line.split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn field_map(line: &str) -> HashMap<String, String> {
    fields(line).into_iter().collect()
}

/// The lines of a `CLIENT LIST` reply.
fn lines(reply: Reply) -> Vec<String> {
    let text = reply.text();
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    text.lines().map(str::to_string).collect()
}

fn list(c: &mut RawClient, args: &[&str]) -> Vec<HashMap<String, String>> {
    let mut all = vec!["CLIENT", "LIST"];
    all.extend_from_slice(args);
    lines(c.call(&all)).iter().map(|l| field_map(l)).collect()
}

fn id_of(c: &mut RawClient) -> i64 {
    int(c.call(&["CLIENT", "ID"]))
}

/// The client's own line, by CLIENT INFO.
fn info(c: &mut RawClient) -> HashMap<String, String> {
    field_map(c.call(&["CLIENT", "INFO"]).text().trim_end())
}

#[test]
fn client_list_and_info_have_redis_7_fields_in_order() {
    let proxy = start_proxy(shared());
    let mut a = RawClient::connect(proxy.local_addr());
    let mut b = RawClient::connect(proxy.local_addr());
    assert_eq!(a.call(&["CLIENT", "SETNAME", "alpha"]), ok());
    assert_eq!(b.call(&["PING"]), Reply::Simple("PONG".into()));
    let (id_a, id_b) = (id_of(&mut a), id_of(&mut b));

    let line = a.call(&["CLIENT", "INFO"]).text();
    assert!(line.ends_with('\n'), "{line:?}");
    let keys: Vec<String> = fields(line.trim_end())
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "addr",
            "laddr",
            "fd",
            "name",
            "age",
            "idle",
            "flags",
            "db",
            "sub",
            "psub",
            "ssub",
            "multi",
            "qbuf",
            "qbuf-free",
            "argv-mem",
            "multi-mem",
            "rbs",
            "rbp",
            "obl",
            "oll",
            "omem",
            "tot-mem",
            "events",
            "cmd",
            "user",
            "redir",
            "resp",
            "lib-name",
            "lib-ver"
        ]
    );
    let me = info(&mut a);
    assert_eq!(me["id"], id_a.to_string());
    assert_eq!(me["name"], "alpha");
    assert_eq!(me["flags"], "N");
    assert_eq!(me["db"], "0");
    assert_eq!(me["multi"], "-1");
    assert_eq!(me["cmd"], "client|info");
    assert_eq!(me["user"], "default");
    assert_eq!(me["resp"], "2");
    assert_eq!(me["laddr"], proxy.local_addr().to_string());
    assert!(
        me["fd"].parse::<i32>().unwrap() > 0,
        "the proxy's socket: {me:?}"
    );
    assert!(me["addr"].starts_with("127.0.0.1:"), "{me:?}");

    // Every client of the proxy (both workers), in id order, each with its last command.
    let all = list(&mut b, &[]);
    let ids: Vec<i64> = all.iter().map(|c| c["id"].parse().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    let line_a = all.iter().find(|c| c["id"] == id_a.to_string()).unwrap();
    assert_eq!(line_a["cmd"], "client|info");
    assert_eq!(line_a["name"], "alpha");
    let line_b = all.iter().find(|c| c["id"] == id_b.to_string()).unwrap();
    assert_eq!(line_b["cmd"], "client|list");

    // Clients of every worker (the kernel spreads connections over the proxy's two).
    let mut many: Vec<RawClient> = (0..8)
        .map(|_| RawClient::connect(proxy.local_addr()))
        .collect();
    let many_ids: Vec<String> = many.iter_mut().map(|c| id_of(c).to_string()).collect();
    let listed: Vec<String> = list(&mut a, &[])
        .into_iter()
        .map(|c| c["id"].clone())
        .collect();
    for id in &many_ids {
        assert!(listed.contains(id), "client {id} missing from {listed:?}");
    }
    drop(many);

    // ID filter: in the order asked; unknown ids are left out.
    let by_id = list(
        &mut b,
        &["ID", &id_b.to_string(), "999999", &id_a.to_string()],
    );
    let ids: Vec<&str> = by_id.iter().map(|c| c["id"].as_str()).collect();
    assert_eq!(ids, [id_b.to_string(), id_a.to_string()]);

    // MULTI shows in flags and multi=.
    assert_eq!(a.call(&["MULTI"]), ok());
    assert_eq!(a.call(&["PING"]), Reply::Simple("QUEUED".into()));
    let during = list(&mut b, &["ID", &id_a.to_string()]);
    assert_eq!(during[0]["flags"], "x");
    assert_eq!(during[0]["multi"], "1");
    assert_eq!(a.call(&["DISCARD"]), ok());

    // TYPE filter: a subscriber is pubsub, not normal.
    let mut sub = RawClient::connect(proxy.local_addr());
    let id_sub = id_of(&mut sub);
    let p = unique_prefix("list-type");
    sub.call(&["SUBSCRIBE", &format!("{p}:c")]);
    sub.call(&["PSUBSCRIBE", &format!("{p}:*")]);
    let pubsub = list(&mut b, &["TYPE", "pubsub"]);
    assert_eq!(pubsub.len(), 1, "{pubsub:?}");
    assert_eq!(pubsub[0]["id"], id_sub.to_string());
    assert_eq!(pubsub[0]["flags"], "P");
    assert_eq!(pubsub[0]["sub"], "1");
    assert_eq!(pubsub[0]["psub"], "1");
    let normal = list(&mut b, &["type", "NORMAL"]);
    assert!(normal.iter().all(|c| c["id"] != id_sub.to_string()));
    assert!(normal.iter().any(|c| c["id"] == id_a.to_string()));
    assert!(list(&mut b, &["TYPE", "master"]).is_empty());
    assert!(list(&mut b, &["TYPE", "replica"]).is_empty());

    // Redis's errors.
    assert_eq!(
        b.call(&["CLIENT", "LIST", "TYPE", "foo"]).error(),
        "ERR Unknown client type 'foo'"
    );
    assert_eq!(
        b.call(&["CLIENT", "LIST", "ID", "1", "x"]).error(),
        "ERR Invalid client ID"
    );
    for args in [
        &["CLIENT", "LIST", "foo"][..],
        &["CLIENT", "LIST", "ID"],
        &["CLIENT", "LIST", "TYPE", "normal", "ID", "1"],
    ] {
        assert_eq!(b.call(args).error(), "ERR syntax error", "{args:?}");
    }
    assert_eq!(
        b.call(&["CLIENT", "INFO", "x"]).error(),
        "ERR wrong number of arguments for 'client|info' command"
    );
    assert_eq!(
        b.call(&["CLIENT", "NOSUCH"]).error(),
        "ERR unknown subcommand 'NOSUCH'. Try CLIENT HELP."
    );

    // RESP3: a verbatim string.
    b.call(&["HELLO", "3"]);
    match b.call(&["CLIENT", "INFO"]) {
        Reply::Verbatim(format, text) => {
            assert_eq!(format, "txt");
            let line = field_map(String::from_utf8_lossy(&text).trim_end());
            assert_eq!(line["resp"], "3");
        }
        other => panic!("CLIENT INFO in RESP3: {other:?}"),
    }
}

#[test]
fn client_kill_by_old_form_and_every_filter() {
    let proxy = start_proxy(shared());
    let mut admin = RawClient::connect(proxy.local_addr());
    let closed = |victim: &mut RawClient| {
        victim
            .is_closed_by_server()
            .unwrap_or_else(|e| panic!("the killed client: {e}"))
    };

    // Old form: +OK, or Redis's error.
    let mut victim = RawClient::connect(proxy.local_addr());
    let addr = info(&mut victim)["addr"].clone();
    assert_eq!(admin.call(&["CLIENT", "KILL", &addr]), ok());
    closed(&mut victim);
    assert_eq!(
        admin.call(&["CLIENT", "KILL", &addr]).error(),
        "ERR No such client"
    );

    // ID
    let mut victim = RawClient::connect(proxy.local_addr());
    let id = id_of(&mut victim).to_string();
    assert_eq!(admin.call(&["CLIENT", "KILL", "ID", &id]), Reply::Int(1));
    closed(&mut victim);
    assert_eq!(admin.call(&["CLIENT", "KILL", "ID", &id]), Reply::Int(0));

    // ADDR
    let mut victim = RawClient::connect(proxy.local_addr());
    let addr = info(&mut victim)["addr"].clone();
    assert_eq!(
        admin.call(&["CLIENT", "KILL", "ADDR", &addr]),
        Reply::Int(1)
    );
    closed(&mut victim);

    // TYPE pubsub: only the subscriber.
    let mut victim = RawClient::connect(proxy.local_addr());
    let mut bystander = RawClient::connect(proxy.local_addr());
    victim.call(&["SUBSCRIBE", &unique_prefix("kill-type")]);
    assert_eq!(
        admin.call(&["CLIENT", "KILL", "TYPE", "pubsub"]),
        Reply::Int(1)
    );
    closed(&mut victim);
    assert_eq!(bystander.call(&["PING"]), Reply::Simple("PONG".into()));

    // USER default with SKIPME yes (the default): everyone but the caller.
    let mut victim = RawClient::connect(proxy.local_addr());
    id_of(&mut victim);
    let killed = int(admin.call(&["CLIENT", "KILL", "USER", "default"]));
    assert_eq!(killed, 2, "the victim and the bystander");
    closed(&mut victim);
    closed(&mut bystander);
    assert_eq!(admin.call(&["PING"]), Reply::Simple("PONG".into()));

    // LADDR (the proxy's listener) with MAXAGE: nobody is that old yet.
    let mut victim = RawClient::connect(proxy.local_addr());
    id_of(&mut victim);
    let laddr = proxy.local_addr().to_string();
    assert_eq!(
        admin.call(&["CLIENT", "KILL", "LADDR", &laddr, "MAXAGE", "100000"]),
        Reply::Int(0)
    );
    assert_eq!(
        admin.call(&["CLIENT", "KILL", "LADDR", &laddr]),
        Reply::Int(1)
    );
    closed(&mut victim);

    // SKIPME no: the caller gets its reply, then its connection closes.
    let mut me = RawClient::connect(proxy.local_addr());
    let my_id = id_of(&mut me).to_string();
    assert_eq!(
        me.call(&["CLIENT", "KILL", "ID", &my_id, "SKIPME", "no"]),
        Reply::Int(1)
    );
    closed(&mut me);
    let mut me = RawClient::connect(proxy.local_addr());
    let my_id = id_of(&mut me).to_string();
    assert_eq!(
        me.call(&["CLIENT", "KILL", "ID", &my_id]),
        Reply::Int(0),
        "SKIPME yes by default"
    );

    // Redis's errors.
    for (args, error) in [
        (
            &["CLIENT", "KILL", "ID", "0"][..],
            "ERR client-id should be greater than 0",
        ),
        (
            &["CLIENT", "KILL", "ID", "abc"],
            "ERR client-id should be greater than 0",
        ),
        (
            &["CLIENT", "KILL", "USER", "nosuch"],
            "ERR No such user 'nosuch'",
        ),
        (
            &["CLIENT", "KILL", "TYPE", "foo"],
            "ERR Unknown client type 'foo'",
        ),
        (&["CLIENT", "KILL", "SKIPME", "maybe"], "ERR syntax error"),
        (
            &["CLIENT", "KILL", "ADDR", "1.2.3.4:5", "ID"],
            "ERR syntax error",
        ),
        (&["CLIENT", "KILL", "FOO", "bar"], "ERR syntax error"),
        (
            &["CLIENT", "KILL", "MAXAGE", "x"],
            "ERR value is not an integer or out of range",
        ),
    ] {
        assert_eq!(me.call(args).error(), error, "{args:?}");
    }
}

#[test]
fn client_reply_off_and_skip_silence_replies_as_redis_does() {
    let proxy = start_proxy(shared());
    let mut c = RawClient::connect(proxy.local_addr());
    let p = unique_prefix("reply");
    let key = format!("{p}:k");
    // Every silenced reply would come before the next one read.
    c.send(&[b"CLIENT", b"REPLY", b"OFF"]);
    c.send(&[b"SET", key.as_bytes(), b"v"]);
    c.send(&[b"GET", key.as_bytes()]);
    c.send(&[b"NOSUCHCOMMAND"]);
    c.send(&[b"CLIENT", b"REPLY", b"SKIP"]); // ignored while OFF
    assert_eq!(c.call(&["CLIENT", "REPLY", "ON"]), ok());
    assert_eq!(c.call(&["GET", &key]), bulk("v"));

    c.send(&[b"CLIENT", b"REPLY", b"SKIP"]);
    c.send(&[b"GET", key.as_bytes()]);
    assert_eq!(c.call(&["PING", "after"]), bulk("after"));
    // SKIP twice: the second SKIP's own (empty) reply is skipped, then one more command.
    c.send(&[b"CLIENT", b"REPLY", b"SKIP"]);
    c.send(&[b"CLIENT", b"REPLY", b"SKIP"]);
    c.send(&[b"PING", b"z"]);
    assert_eq!(c.call(&["PING", "w"]), bulk("w"));
    assert_eq!(
        c.call(&["CLIENT", "REPLY", "maybe"]).error(),
        "ERR syntax error"
    );

    // Subscription confirmations and messages are pushed: never silenced.
    let mut publisher = RawClient::connect(proxy.local_addr());
    let channel = format!("{p}:ch");
    c.send(&[b"CLIENT", b"REPLY", b"OFF"]);
    let confirmation = c.call(&["SUBSCRIBE", &channel]);
    assert_eq!(
        confirmation,
        Reply::Array(Some(vec![bulk("subscribe"), bulk(&channel), Reply::Int(1)]))
    );
    wait_until(
        "the subscription on its node",
        CLUSTER_DEADLINE,
        || match publisher.call(&["PUBSUB", "NUMSUB", &channel]) {
            Reply::Array(Some(pair)) if pair.get(1) == Some(&Reply::Int(1)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    publisher.call(&["PUBLISH", &channel, "hello"]);
    assert_eq!(
        c.read_reply(),
        Reply::Array(Some(vec![bulk("message"), bulk(&channel), bulk("hello")]))
    );
    // PING in subscriber mode is an ordinary reply: silenced; UNSUBSCRIBE is not.
    c.send(&[b"PING"]);
    assert_eq!(
        c.call(&["UNSUBSCRIBE"]),
        Reply::Array(Some(vec![
            bulk("unsubscribe"),
            bulk(&channel),
            Reply::Int(0)
        ]))
    );
    assert_eq!(c.call(&["CLIENT", "REPLY", "ON"]), ok());
    assert_eq!(c.call(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn client_pause_write_holds_writes_but_not_reads_until_unpause() {
    let proxy = start_proxy(shared());
    let mut admin = RawClient::connect(proxy.local_addr());
    let mut writer = RawClient::connect(proxy.local_addr());
    let mut reader = RawClient::connect(proxy.local_addr());
    let p = unique_prefix("pause");
    let key = format!("{p}:k");
    let writer_id = id_of(&mut writer).to_string();

    assert_eq!(admin.call(&["CLIENT", "PAUSE", "100000", "WRITE"]), ok());
    writer.send(&[b"SET", key.as_bytes(), b"v"]);
    // Pipelined behind the held SET: not run before it, even though it only reads.
    writer.send(&[b"GET", key.as_bytes()]);
    // The writer shows as blocked, its SET did not run, and reads go on for everyone else.
    wait_until("the writer held", CLUSTER_DEADLINE, || {
        let line = list(&mut admin, &["ID", &writer_id]);
        match line.first().map(|l| (l["flags"].clone(), l["cmd"].clone())) {
            Some((flags, cmd)) if flags == "b" && cmd == "set" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(reader.call(&["GET", &key]), Reply::Bulk(None));
    assert_eq!(reader.call(&["PING"]), Reply::Simple("PONG".into()));
    // Writes and commands that may replicate are held for other clients too.
    assert_eq!(admin.call(&["CLIENT", "UNPAUSE"]), ok());
    assert_eq!(writer.read_reply(), ok());
    assert_eq!(writer.read_reply(), bulk("v"));

    // ALL holds reads too; a short pause ends by itself.
    assert_eq!(admin.call(&["CLIENT", "PAUSE", "300"]), ok());
    assert_eq!(reader.call(&["GET", &key]), bulk("v"));

    // EXEC of a transaction that writes is held; its queueing SET as well (as Redis 7.0).
    assert_eq!(admin.call(&["CLIENT", "PAUSE", "100000", "write"]), ok());
    assert_eq!(reader.call(&["MULTI"]), ok());
    assert_eq!(reader.call(&["GET", &key]), Reply::Simple("QUEUED".into()));
    reader.send(&[b"SET", key.as_bytes(), b"w"]);
    reader.send(&[b"EXEC"]);
    let admin_id = id_of(&mut admin).to_string();
    wait_until("the transaction's client held", CLUSTER_DEADLINE, || {
        let held: Vec<String> = list(&mut admin, &[])
            .into_iter()
            .filter(|l| l["flags"].contains('b') && l["id"] != admin_id)
            .map(|l| l["cmd"].clone())
            .collect();
        match held.as_slice() {
            [cmd] if cmd == "set" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(admin.call(&["CLIENT", "UNPAUSE"]), ok());
    assert_eq!(reader.read_reply(), Reply::Simple("QUEUED".into()));
    assert_eq!(
        reader.read_reply(),
        Reply::Array(Some(vec![bulk("v"), ok()]))
    );

    // Redis's errors.
    for (args, error) in [
        (
            &["CLIENT", "PAUSE", "x"][..],
            "ERR timeout is not an integer or out of range",
        ),
        (&["CLIENT", "PAUSE", "-1"], "ERR timeout is negative"),
        (
            &["CLIENT", "PAUSE", "10", "foo"],
            "ERR CLIENT PAUSE mode must be WRITE or ALL",
        ),
        (
            &["CLIENT", "UNPAUSE", "x"],
            "ERR wrong number of arguments for 'client|unpause' command",
        ),
    ] {
        assert_eq!(admin.call(args).error(), error, "{args:?}");
    }
}

#[test]
fn client_unblock_frees_a_blocked_pop_on_its_node() {
    let proxy = start_proxy(shared());
    let mut admin = RawClient::connect(proxy.local_addr());
    let mut blocked = RawClient::connect(proxy.local_addr());
    let p = unique_prefix("unblock");
    let list_key = format!("{p}:list");
    let id = id_of(&mut blocked).to_string();
    assert_eq!(admin.call(&["CLIENT", "UNBLOCK", &id]), Reply::Int(0));

    // The node may take a moment to park the BLPOP: until then UNBLOCK answers 0.
    let unblock = |admin: &mut RawClient, args: &[&str]| {
        wait_until("the client unblocked", CLUSTER_DEADLINE, || {
            match int(admin.call(args)) {
                1 => Ok(()),
                n => Err(format!("CLIENT UNBLOCK answered {n}")),
            }
        })
    };
    for reason in [None, Some("TIMEOUT"), Some("timeout")] {
        blocked.send(&[b"BLPOP", list_key.as_bytes(), b"0"]);
        let mut args = vec!["CLIENT", "UNBLOCK", &id];
        args.extend(reason);
        unblock(&mut admin, &args);
        assert_eq!(blocked.read_reply(), Reply::Array(None), "{reason:?}");
    }
    blocked.send(&[b"BLPOP", list_key.as_bytes(), b"0"]);
    unblock(&mut admin, &["CLIENT", "UNBLOCK", &id, "ERROR"]);
    assert_eq!(
        blocked.read_reply().error(),
        "UNBLOCKED client unblocked via CLIENT UNBLOCK"
    );

    // Blocked is shown in CLIENT LIST; and the client still works afterwards.
    blocked.send(&[b"BRPOP", list_key.as_bytes(), b"0"]);
    wait_until("flags=b", CLUSTER_DEADLINE, || {
        let line = list(&mut admin, &["ID", &id]);
        match line.first().map(|l| l["flags"].clone()) {
            Some(flags) if flags == "b" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    unblock(&mut admin, &["CLIENT", "UNBLOCK", &id]);
    assert_eq!(blocked.read_reply(), Reply::Array(None));
    assert_eq!(list(&mut admin, &["ID", &id])[0]["flags"], "N");
    assert_eq!(blocked.call(&["RPUSH", &list_key, "x"]), Reply::Int(1));
    assert_eq!(
        blocked.call(&["BLPOP", &list_key, "0"]),
        Reply::Array(Some(vec![bulk(&list_key), bulk("x")]))
    );

    assert_eq!(
        admin.call(&["CLIENT", "UNBLOCK", "asd"]).error(),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        admin.call(&["CLIENT", "UNBLOCK", &id, "maybe"]).error(),
        "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR"
    );
}

#[test]
fn reset_undoes_the_client_settings_but_not_a_pause() {
    let proxy = start_proxy(shared());
    let mut c = RawClient::connect(proxy.local_addr());
    assert_eq!(c.call(&["CLIENT", "SETNAME", "before"]), ok());
    assert_eq!(c.call(&["CLIENT", "NO-EVICT", "on"]), ok());
    assert_eq!(c.call(&["CLIENT", "NO-TOUCH", "ON"]), ok());
    assert_eq!(c.call(&["CLIENT", "SETINFO", "lib-name", "mylib"]), ok());
    let before = info(&mut c);
    assert_eq!(before["flags"], "eT");
    assert_eq!(before["name"], "before");
    assert_eq!(
        c.call(&["CLIENT", "NO-EVICT", "maybe"]).error(),
        "ERR syntax error"
    );
    assert_eq!(
        c.call(&["CLIENT", "NO-TOUCH", "maybe"]).error(),
        "ERR syntax error"
    );
    assert_eq!(c.call(&["CLIENT", "NO-EVICT", "off"]), ok());
    assert_eq!(info(&mut c)["flags"], "T");

    // RESET turns replies back on (its own included), but a SKIP already in force still
    // silences it, as in Redis.
    c.send(&[b"CLIENT", b"REPLY", b"OFF"]);
    assert_eq!(c.call(&["RESET"]), Reply::Simple("RESET".into()));
    let after = info(&mut c);
    assert_eq!(after["flags"], "N", "NO-EVICT and NO-TOUCH are off again");
    assert_eq!(after["name"], "");
    assert_eq!(after["lib-name"], "mylib", "the library is kept");
    c.send(&[b"CLIENT", b"REPLY", b"SKIP"]);
    c.send(&[b"RESET"]);
    assert_eq!(c.call(&["PING"]), Reply::Simple("PONG".into()));

    // A pause is the server's, not the client's: RESET and a disconnect leave it.
    let mut other = RawClient::connect(proxy.local_addr());
    assert_eq!(c.call(&["CLIENT", "PAUSE", "100000", "WRITE"]), ok());
    assert_eq!(c.call(&["RESET"]), Reply::Simple("RESET".into()));
    drop(c);
    let key = unique_prefix("reset-pause");
    other.send(&[b"SET", key.as_bytes(), b"v"]);
    let mut third = RawClient::connect(proxy.local_addr());
    assert_eq!(
        third.call(&["GET", &key]),
        Reply::Bulk(None),
        "the SET is held"
    );
    assert_eq!(third.call(&["CLIENT", "UNPAUSE"]), ok());
    assert_eq!(other.read_reply(), ok());
}

#[test]
fn tracking_queries_answer_for_a_client_that_does_not_track() {
    let proxy = start_proxy(shared());
    let mut c = RawClient::connect(proxy.local_addr());
    assert_eq!(c.call(&["CLIENT", "GETREDIR"]), Reply::Int(-1));
    assert_eq!(
        c.call(&["CLIENT", "TRACKINGINFO"]),
        Reply::Array(Some(vec![
            bulk("flags"),
            Reply::Array(Some(vec![bulk("off")])),
            bulk("redirect"),
            Reply::Int(-1),
            bulk("prefixes"),
            Reply::Array(Some(vec![])),
        ]))
    );
    assert_eq!(
        c.call(&["CLIENT", "CACHING", "yes"]).error(),
        "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled"
    );
    // Tracking itself: tests/tracking.rs.
    assert_eq!(
        c.call(&["CLIENT", "TRACKING", "on"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(c.call(&["CLIENT", "GETREDIR"]), Reply::Int(0));
    // CLIENT HELP is Redis's own.
    match c.call(&["CLIENT", "HELP"]) {
        Reply::Array(Some(lines)) => assert!(lines.len() > 10, "{lines:?}"),
        other => panic!("CLIENT HELP: {other:?}"),
    }
}

#[test]
fn killed_blocked_clients_go_and_refusals_are_not_held_by_a_pause() {
    let proxy = start_proxy(shared());
    let mut admin = RawClient::connect(proxy.local_addr());
    let p = unique_prefix("kill-blocked");

    // A client blocked on its node is killed like any other, and leaves the list.
    let mut blocked = RawClient::connect(proxy.local_addr());
    let id = id_of(&mut blocked).to_string();
    blocked.send(&[b"BLPOP", format!("{p}:l").as_bytes(), b"0"]);
    wait_until("flags=b", CLUSTER_DEADLINE, || {
        match list(&mut admin, &["ID", &id]).first() {
            Some(line) if line["flags"] == "b" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(admin.call(&["CLIENT", "KILL", "ID", &id]), Reply::Int(1));
    blocked
        .is_closed_by_server()
        .unwrap_or_else(|e| panic!("the killed client: {e}"));
    assert!(list(&mut admin, &["ID", &id]).is_empty());

    // Under PAUSE ALL, what Redis refuses before it looks at a pause is answered at once.
    let mut sub = RawClient::connect(proxy.local_addr());
    sub.call(&["SUBSCRIBE", &format!("{p}:ch")]);
    assert_eq!(admin.call(&["CLIENT", "PAUSE", "2000", "ALL"]), ok());
    let mut other = RawClient::connect(proxy.local_addr());
    assert!(other
        .call(&["NOSUCHCOMMAND"])
        .error()
        .starts_with("ERR unknown command"));
    assert_eq!(
        other.call(&["GET"]).error(),
        "ERR wrong number of arguments for 'get' command"
    );
    assert!(sub
        .call(&["GET", "k"])
        .error()
        .starts_with("ERR Can't execute 'get'"));
    // (CLIENT UNPAUSE itself is held by ALL, as in Redis: this proxy's pause just ends.)
}

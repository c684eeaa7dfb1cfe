//! Command table and key extraction tests, against the captured Redis 7.0 table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use crate::resp::{Command, Value};

use super::*;

fn cmd(line: &str) -> Command {
    let args: Vec<&str> = line
        .split(' ')
        .map(|a| if a == "\"\"" { "" } else { a })
        .collect();
    Command::from_args(&args)
}

/// Key indices of `line` under the built-in table.
fn keys(line: &str) -> Vec<usize> {
    let command = cmd(line);
    let spec = CommandTable::builtin()
        .lookup(&command)
        .unwrap_or_else(|| panic!("no spec for {line}"));
    let mut out = Vec::new();
    spec.key_indices(&command, &mut out);
    out
}

#[test]
fn builtin_snapshot_parses_with_every_command() {
    let table = CommandTable::builtin();
    assert!(table.len() > 200, "only {} commands", table.len());
    assert!(!table.is_empty());
    for (i, spec) in table.iter().enumerate() {
        assert_eq!(usize::from(spec.id), i);
        assert_eq!(table.get(&spec.name).map(|s| s.id), Some(spec.id));
    }
    let get = table.get("get").unwrap();
    assert_eq!(get.arity, 2);
    assert!(get.is_readonly() && !get.is_write());
    assert!(get.flags.contains(CommandFlags::FAST));
    assert!(table.get("set").unwrap().is_write());
    assert!(table.get("blpop").unwrap().is_blocking());
    assert!(table.get("object").unwrap().has_subcommands());
    assert!(table.get("object|encoding").is_some());
    let mget = table.get("mget").unwrap();
    assert_eq!(mget.request_policy.as_deref(), Some("multi_shard"));
    let dbsize = table.get("dbsize").unwrap();
    assert_eq!(dbsize.request_policy.as_deref(), Some("all_shards"));
    assert_eq!(dbsize.response_policy.as_deref(), Some("agg_sum"));
}

#[test]
fn lookup_is_case_insensitive_and_finds_subcommands() {
    let table = CommandTable::builtin();
    assert_eq!(table.lookup(&cmd("gEt k")).unwrap().name, "get");
    assert_eq!(
        table.lookup(&cmd("OBJECT Encoding k")).unwrap().name,
        "object|encoding"
    );
    assert_eq!(
        table.lookup(&cmd("xinfo STREAM k")).unwrap().name,
        "xinfo|stream"
    );
    // Container without or with an unknown subcommand: the container itself.
    assert_eq!(table.lookup(&cmd("object")).unwrap().name, "object");
    assert_eq!(
        table.lookup(&cmd("object nosuch k")).unwrap().name,
        "object"
    );
    assert!(table.lookup(&cmd("nosuchcommand")).is_none());
    assert!(table.lookup(&cmd(&"a".repeat(200))).is_none());
    assert!(table.lookup(&Command::from_args::<&[u8]>(&[])).is_none());
}

#[test]
fn arity_follows_redis() {
    let table = CommandTable::builtin();
    let get = table.get("get").unwrap();
    assert!(get.check_arity(2));
    assert!(!get.check_arity(1) && !get.check_arity(3));
    let mget = table.get("mget").unwrap();
    assert!(!mget.check_arity(1));
    assert!(mget.check_arity(2) && mget.check_arity(100));
    assert!(table.get("object|encoding").unwrap().check_arity(3));
}

#[test]
fn keys_of_simple_commands() {
    let cases: &[(&str, &[usize])] = &[
        ("GET k", &[1]),
        ("SET k v EX 10", &[1]),
        ("MSET a 1 b 2 a 3", &[1, 3, 5]),
        ("MGET a b a", &[1, 2, 3]),
        ("DEL a b c", &[1, 2, 3]),
        ("BITOP AND dst a b", &[2, 3, 4]),
        ("OBJECT ENCODING k", &[2]),
        ("MEMORY USAGE k", &[2]),
        ("XGROUP CREATE k g $", &[2]),
        ("XINFO STREAM k", &[2]),
        ("SPUBLISH ch msg", &[1]),
        ("SSUBSCRIBE a b", &[1, 2]),
        ("PING", &[]),
        ("RENAME a b", &[1, 2]),
        ("BLPOP a b 0", &[1, 2]),
    ];
    for (line, expected) in cases {
        assert_eq!(keys(line), *expected, "{line}");
    }
}

#[test]
fn keys_of_keynum_commands() {
    let cases: &[(&str, &[usize])] = &[
        ("EVAL s 0", &[]),
        ("EVAL s 1 a x", &[3]),
        ("EVAL s 3 a b c x y", &[3, 4, 5]),
        ("EVALSHA sha 0 x", &[]),
        ("EVALSHA sha 1 a", &[3]),
        ("EVALSHA sha 3 a b c", &[3, 4, 5]),
        ("FCALL f 0", &[]),
        ("FCALL f 1 a", &[3]),
        ("FCALL_RO f 3 a b c x", &[3, 4, 5]),
        ("ZUNIONSTORE dst 2 a b WEIGHTS 1 2", &[1, 3, 4]),
        ("ZINTER 2 a b", &[2, 3]),
        ("ZINTERCARD 2 a b LIMIT 1", &[2, 3]),
        ("LMPOP 2 a b LEFT", &[2, 3]),
        ("ZMPOP 2 a b MIN COUNT 1", &[2, 3]),
        ("BLMPOP 0 2 a b LEFT", &[3, 4]),
        ("BZMPOP 0 2 a b MAX", &[3, 4]),
        // Invalid counts: no keys, the backend reports the error.
        ("EVAL s 5 a", &[]),
        ("EVAL s x a", &[]),
        ("EVAL s -1 a", &[]),
        ("ZUNIONSTORE dst 3 a b", &[]),
    ];
    for (line, expected) in cases {
        assert_eq!(keys(line), *expected, "{line}");
    }
}

#[test]
fn keys_of_keyword_commands() {
    let cases: &[(&str, &[usize])] = &[
        ("XREAD COUNT 1 STREAMS a b 0 0", &[4, 5]),
        ("xread streams a 0", &[2]),
        ("XREAD BLOCK 0 STREAMS a b c 0 0 0", &[4, 5, 6]),
        ("XREADGROUP GROUP g c STREAMS a 0", &[5]),
        ("GEORADIUS k 0 0 1 km", &[1]),
        ("GEORADIUS k 0 0 1 km STORE dst", &[1, 7]),
        ("GEORADIUS k 0 0 1 km STOREDIST dst", &[1, 7]),
        // Redis never examines the last argument for the keyword, so a trailing STORE is
        // not found and only the source key remains.
        ("GEORADIUS k 0 0 1 km STORE", &[1]),
        // Keyword absent: the spec finds nothing (and is not an error).
        ("XREAD COUNT 1", &[]),
    ];
    for (line, expected) in cases {
        assert_eq!(keys(line), *expected, "{line}");
    }
}

#[test]
fn keys_of_natively_handled_commands() {
    let cases: &[(&str, &[usize])] = &[
        ("SORT k", &[1]),
        ("SORT k BY x STORE dst", &[1, 5]),
        ("sort k store d1 store d2", &[1, 5]),
        ("SORT k BY store", &[1]),
        ("SORT k LIMIT 0 1 GET # STORE dst", &[1, 8]),
        ("SORT k STORE", &[1]),
        ("SORT_RO k BY x", &[1]),
        ("SORT_RO k STORE dst", &[1]),
        ("MIGRATE h p k 0 5000", &[3]),
        ("MIGRATE h p \"\" 0 5000 KEYS a b", &[7, 8]),
        (
            "MIGRATE h p \"\" 0 5000 COPY REPLACE AUTH keys KEYS a",
            &[11],
        ),
        ("MIGRATE h p \"\" 0 5000 AUTH2 u keys KEYS a b", &[10, 11]),
        ("MIGRATE h p k 0 5000 KEYS a b", &[]),
        // KEYS as the last argument is never reached by the spec search: argv[3] only.
        ("MIGRATE h p k 0 5000 COPY KEYS", &[3]),
    ];
    for (line, expected) in cases {
        assert_eq!(keys(line), *expected, "{line}");
    }
}

#[test]
fn key_indices_appends_after_existing_entries() {
    let table = CommandTable::builtin();
    let mut out = vec![99];
    let command = cmd("MGET a b");
    table
        .lookup(&command)
        .unwrap()
        .key_indices(&command, &mut out);
    assert_eq!(out, vec![99, 1, 2]);
    let command = cmd("EVAL s 9 a");
    table
        .lookup(&command)
        .unwrap()
        .key_indices(&command, &mut out);
    assert_eq!(out, vec![99, 1, 2]);
}

#[test]
fn tables_parse_resp3_maps_and_pre7_entries() {
    // One Redis 7 entry with a RESP3 map key spec, one Redis 6 style entry (no key specs).
    let reply = b"*2\r\n\
*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n*0\r\n*0\r\n\
*1\r\n%3\r\n+flags\r\n*1\r\n+RO\r\n\
+begin_search\r\n%2\r\n+type\r\n+index\r\n+spec\r\n%1\r\n+index\r\n:1\r\n\
+find_keys\r\n%2\r\n+type\r\n+range\r\n+spec\r\n%3\r\n+lastkey\r\n:0\r\n+keystep\r\n:1\r\n+limit\r\n:0\r\n\
*0\r\n\
*7\r\n$4\r\nMGET\r\n:-2\r\n*1\r\n+readonly\r\n:1\r\n:-1\r\n:1\r\n*0\r\n";
    let (value, _) = Value::parse(reply).unwrap().unwrap();
    let table = CommandTable::from_command_reply(&value).unwrap();
    assert_eq!(table.len(), 2);
    let mut out = Vec::new();
    let get = cmd("GET k");
    table.lookup(&get).unwrap().key_indices(&get, &mut out);
    assert_eq!(out, vec![1]);
    out.clear();
    let mget = cmd("mget a b c");
    let spec = table.lookup(&mget).unwrap();
    assert!(spec.is_readonly());
    spec.key_indices(&mget, &mut out);
    assert_eq!(out, vec![1, 2, 3]);
}

#[test]
fn malformed_command_replies_are_refused() {
    assert!(CommandTable::from_command_reply(&Value::Integer(1)).is_err());
    let no_arity = Value::Array(vec![Value::Array(vec![Value::Simple("get".into())])]);
    assert!(matches!(
        CommandTable::from_command_reply(&no_arity),
        Err(CommandError::MalformedReply(_))
    ));
}

#[test]
fn client_errors_use_redis_wording() {
    assert_eq!(
        CommandError::unknown_command(&cmd("foo a b")).to_string(),
        "unknown command 'foo', with args beginning with: 'a' 'b' "
    );
    assert_eq!(
        CommandError::unknown_subcommand(&cmd("object nope")).to_string(),
        "unknown subcommand 'nope'. Try OBJECT HELP."
    );
    let spec = CommandTable::builtin().get("object|encoding").unwrap();
    assert_eq!(
        CommandError::wrong_arity(spec).to_string(),
        "wrong number of arguments for 'object|encoding' command"
    );
}

#[test]
fn the_single_key_shortcut_agrees_with_the_key_specs_for_every_command() {
    let table = CommandTable::builtin();
    let mut shortcuts = 0;
    for spec in table.iter() {
        let Some(index) = spec.single_key_index() else {
            continue;
        };
        shortcuts += 1;
        // Argument lists of every length the arity allows, up to a few beyond it.
        let least = usize::try_from(spec.arity.unsigned_abs()).unwrap();
        for argc in least..least + 4 {
            let mut args = vec![spec.name.split('|').next().unwrap().to_owned()];
            if let Some((_, sub)) = spec.name.split_once('|') {
                args.push(sub.to_owned());
            }
            while args.len() < argc {
                args.push(format!("a{}", args.len()));
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let command = Command::from_args(&refs);
            let mut out = Vec::new();
            spec.key_indices(&command, &mut out);
            assert_eq!(out, vec![index], "{} with {argc} arguments", spec.name);
        }
    }
    // GET, SET, HGET, INCR...: most of the table.
    assert!(
        shortcuts > 100,
        "only {shortcuts} commands take the shortcut"
    );
    for name in ["get", "set", "hget", "incr", "lpush", "zadd", "expire"] {
        assert_eq!(
            table.get(name).unwrap().single_key_index(),
            Some(1),
            "{name}"
        );
    }
    for name in ["mget", "del", "eval", "sort", "migrate", "xread", "ping"] {
        assert_eq!(table.get(name).unwrap().single_key_index(), None, "{name}");
    }
}

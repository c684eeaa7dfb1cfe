//! The plan for one command: a pure function of the command's route (from the command table),
//! its arguments, what the session allows and one slot-map snapshot. It decides; `execute`
//! carries the plan out.

use super::driver::{Resend, Target};
use super::emulate::{self, Emulation};
use super::error::{ErrorKind, ProxyError};
use super::split::{split_by_slot, SlotPart};
use crate::cluster::{Slot, SlotMap};
use crate::command::route::{
    Local, Merge, Route, Script, SessionCommand, SplitKind, Subscription, Walk,
};
use crate::command::CommandSpec;
use crate::config::CrossSlot;
use crate::resp::Command;

/// One request to one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    pub target: Target,
    pub resend: Resend,
    /// A write to this slot's owner over the shared pipes, noted for WAIT.
    pub write_to: Option<Slot>,
}

/// What to do with one command.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Answered by the proxy.
    Local(Local),
    /// One request to one node.
    Send(Send),
    /// One request per slot, run concurrently, merged.
    Split {
        kind: SplitKind,
        parts: Vec<SlotPart>,
        resend: Resend,
    },
    /// To every primary, merged.
    Broadcast { merge: Merge, resend: Resend },
    /// To every primary on connections of their own, merged.
    BroadcastAside(Merge),
    /// To every node, replicas included (allowed by `--admin-commands`).
    EveryNode,
    /// As [`Plan::EveryNode`], on each node once no background AOF rewrite runs there
    /// (`DEBUG LOADAOF`).
    EveryNodeSettled,
    /// CONFIG SET on every node or none (allowed by `--admin-commands`).
    ConfigSet,
    /// PUBLISH/SPUBLISH: sent as planned, answered with the proxy's subscriber count.
    Publish(Subscription, Send),
    /// The key space, shard by shard.
    Walk(Walk),
    /// INFO, merged over the primaries.
    Info,
    /// On a connection of its own until data arrives. `write`: WAIT can't reach it later.
    Blocking { target: Target, write: bool },
    /// The client's own session (transactions, subscriptions, WAIT).
    Session(SessionCommand),
    /// SCRIPT LOAD: remembered and loaded on every primary.
    ScriptLoad,
    /// SCRIPT FLUSH: forgotten by the proxy and flushed on every primary.
    ScriptFlush,
    /// EVAL (remembered), EVALSHA (repaired on NOSCRIPT) or FCALL: sent by its keys, on a
    /// connection of its own when it can (see `dispatch::scripts`).
    Script(Script, Send),
    /// Keys in several slots, carried out by the proxy (`cross_slot = "emulate"`).
    Emulate(Emulation),
    /// Answered with this error.
    Fail(ProxyError),
}

/// What the proxy's configuration allows every client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// `--admin-commands`: commands that change every node's configuration.
    pub admin_commands: bool,
    /// `cross_slot`: whether keys in several slots are refused (CROSSSLOT) or emulated.
    pub cross_slot: CrossSlot,
}

/// The plan for `cmd` (whose table entry is `spec`) against the slot map `map`.
pub fn plan(spec: &CommandSpec, cmd: &Command, allowed: Allowed, map: &SlotMap) -> Plan {
    let name = spec.name.as_str();
    match spec.route {
        Route::Local(local) => Plan::Local(local),
        Route::Keyed if allowed.cross_slot == CrossSlot::Emulate => emulated(spec, cmd, map),
        Route::Keyed => keyed(spec, cmd, map),
        Route::AnyPrimary => Plan::Send(any_primary()),
        Route::FirstPrimary => Plan::Send(read(first_primary(map))),
        Route::SlotArgument => match cmd
            .arg(2)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .and_then(Slot::new)
        {
            Some(slot) => Plan::Send(read(Target::Slot(slot))),
            None => Plan::Fail(ProxyError::bad_request("ERR Invalid or out of range slot")),
        },
        Route::Split(kind) => split(spec, cmd, kind, map),
        Route::Broadcast(merge) => Plan::Broadcast {
            merge,
            // Only a write must never run twice on a node (FLUSHALL, FUNCTION LOAD); the rest
            // (SCRIPT EXISTS, PUBSUB NUMSUB, SLOWLOG) is harmless to ask again.
            resend: if spec.is_write() {
                Resend::Never
            } else {
                Resend::Safe
            },
        },
        Route::BroadcastAside(merge) => Plan::BroadcastAside(merge),
        Route::EveryNode => every_node(name, allowed),
        Route::EveryNodeSettled => settled(every_node(name, allowed)),
        Route::Debug => match debug_scope(cmd) {
            DebugScope::Keys => keyed_debug(spec, cmd, map),
            DebugScope::AnyNode => Plan::Send(any_primary()),
            DebugScope::EveryNode => every_node(name, allowed),
            DebugScope::EveryNodeSettled => settled(every_node(name, allowed)),
        },
        Route::ConfigSet => match every_node(name, allowed) {
            Plan::EveryNode => Plan::ConfigSet,
            refused => refused,
        },
        Route::Publish(kind) => match keyed(spec, cmd, map) {
            Plan::Send(send) => Plan::Publish(kind, send),
            other => other,
        },
        Route::Walk(walk) => Plan::Walk(walk),
        Route::Info => Plan::Info,
        Route::MaybeBlocking if has_block_option(cmd) => blocking(spec, cmd, map),
        Route::MaybeBlocking => keyed(spec, cmd, map),
        Route::Blocking => blocking(spec, cmd, map),
        Route::Session(command) => Plan::Session(command),
        Route::Script(Script::Load) => Plan::ScriptLoad,
        Route::Script(Script::Flush) => Plan::ScriptFlush,
        Route::Script(script) => match keyed(spec, cmd, map) {
            Plan::Send(send) => Plan::Script(script, send),
            other => other,
        },
        Route::Refuse(why) => Plan::Fail(ProxyError::unsupported(name, why)),
    }
}

/// The slot of the command's keys (any primary when it has none), or Redis's CROSSSLOT.
/// Behind a standalone Redis one node has every key: any keys go together.
pub fn target_of(spec: &CommandSpec, cmd: &Command, map: &SlotMap) -> Result<Target, ProxyError> {
    // Most commands have one key at a fixed place (GET, SET, HGET...): no list to build.
    // (With fewer arguments the specs do not fit: the general path decides.)
    if let Some(key) = spec.single_key_index().and_then(|i| cmd.arg(i)) {
        return Ok(Target::Slot(Slot::of(key)));
    }
    let mut keys = Vec::new();
    spec.key_indices(cmd, &mut keys);
    let mut slot: Option<Slot> = None;
    for &i in &keys {
        let s = Slot::of(cmd.arg(i).unwrap_or_default());
        match slot {
            None => slot = Some(s),
            Some(first) if first != s && !map.is_standalone() => {
                return Err(ProxyError::cross_slot())
            }
            Some(_) => {}
        }
    }
    Ok(slot.map_or(Target::Any, Target::Slot))
}

/// Reads may be sent again after a broken connection; writes never.
fn resend_of(spec: &CommandSpec) -> Resend {
    if spec.is_readonly() {
        Resend::Safe
    } else {
        Resend::Never
    }
}

fn read(target: Target) -> Send {
    Send {
        target,
        resend: Resend::Safe,
        write_to: None,
    }
}

fn any_primary() -> Send {
    read(Target::Any)
}

/// The primary with the lowest address (any primary when the map has none yet: the request
/// then fails as any would).
fn first_primary(map: &SlotMap) -> Target {
    map.shards()
        .iter()
        .map(|s| &s.primary)
        .min()
        .map_or(Target::Any, |p| Target::Node(p.clone()))
}

/// To the owner of its keys' slot; a write is noted for WAIT.
fn keyed(spec: &CommandSpec, cmd: &Command, map: &SlotMap) -> Plan {
    match target_of(spec, cmd, map) {
        Ok(target) => Plan::Send(keyed_send(spec, target)),
        Err(error) => Plan::Fail(error),
    }
}

/// `keyed`, except that where that is CROSSSLOT the command is emulated if it can be (and
/// SORT with BY/GET patterns always is: cluster nodes refuse patterns).
fn emulated(spec: &CommandSpec, cmd: &Command, map: &SlotMap) -> Plan {
    if !emulate::applies(map) {
        return keyed(spec, cmd, map);
    }
    if let Some(sort) = emulate::sort_with_patterns(spec, cmd) {
        return sort.map_or_else(Plan::Fail, Plan::Emulate);
    }
    match target_of(spec, cmd, map) {
        Ok(target) => Plan::Send(keyed_send(spec, target)),
        Err(error) if error.kind == ErrorKind::CrossSlot => {
            emulate::plan(spec, cmd).map_or_else(Plan::Fail, Plan::Emulate)
        }
        Err(error) => Plan::Fail(error),
    }
}

fn keyed_send(spec: &CommandSpec, target: Target) -> Send {
    let resend = resend_of(spec);
    let write_to = match (&target, resend) {
        (Target::Slot(slot), Resend::Never) => Some(*slot),
        _ => None,
    };
    Send {
        target,
        resend,
        write_to,
    }
}

fn blocking(spec: &CommandSpec, cmd: &Command, map: &SlotMap) -> Plan {
    match target_of(spec, cmd, map) {
        Ok(target) => Plan::Blocking {
            target,
            write: !spec.is_readonly(),
        },
        Err(error) => Plan::Fail(error),
    }
}

/// Split per slot (Redis's `multi_shard`); one slot (or a standalone Redis) needs no split.
fn split(spec: &CommandSpec, cmd: &Command, kind: SplitKind, map: &SlotMap) -> Plan {
    let resend = resend_of(spec);
    let write = resend == Resend::Never;
    if map.is_standalone() {
        return Plan::Send(Send {
            target: Target::Any,
            resend,
            write_to: write.then(|| Slot::of(b"")),
        });
    }
    let step = if kind == SplitKind::Pairs { 2 } else { 1 };
    let mut parts = split_by_slot(cmd, step);
    if parts.len() <= 1 {
        let target = parts.pop().map_or(Target::Any, |p| Target::Slot(p.slot));
        return Plan::Send(keyed_send(spec, target));
    }
    Plan::Split {
        kind,
        parts,
        resend,
    }
}

fn every_node(name: &str, allowed: Allowed) -> Plan {
    if allowed.admin_commands {
        Plan::EveryNode
    } else {
        Plan::Fail(ProxyError::admin_commands_off(name))
    }
}

/// [`Plan::EveryNode`] made to wait for each node's background AOF rewrite; a refusal as it is.
fn settled(plan: Plan) -> Plan {
    match plan {
        Plan::EveryNode => Plan::EveryNodeSettled,
        refused => refused,
    }
}

/// Where a `DEBUG` subcommand acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DebugScope {
    /// On keys given from argv\[2\] on (`OBJECT`, `DIGEST-VALUE`, `LISTPACK`...): their slot's owner.
    Keys,
    /// Only on the connection that sent it, changing nothing on the server (`PROTOCOL`,
    /// `STRINGMATCH-LEN`, `SLEEP`, `HELP`): any one node, whose answer goes back as it is.
    AnyNode,
    /// On the server's state or settings (`RELOAD`, `SET-ACTIVE-EXPIRE`,
    /// `QUICKLIST-PACKED-THRESHOLD`...): every node, with `--admin-commands`.
    EveryNode,
    /// `LOADAOF`: every node, each once no background AOF rewrite runs there (Redis 7.0
    /// exits on a `LOADAOF` that meets one, as right after `CONFIG SET appendonly yes`).
    EveryNodeSettled,
}

fn debug_scope(cmd: &Command) -> DebugScope {
    const KEYS: [&[u8]; 5] = [
        b"OBJECT",
        b"DIGEST-VALUE",
        b"LISTPACK",
        b"QUICKLIST",
        b"SDSLEN",
    ];
    const ANY_NODE: [&[u8]; 5] = [b"PROTOCOL", b"STRINGMATCH-LEN", b"SLEEP", b"HELP", b"LOG"];
    let sub = cmd.arg(1).unwrap_or_default();
    if KEYS.iter().any(|k| sub.eq_ignore_ascii_case(k)) {
        DebugScope::Keys
    } else if sub.eq_ignore_ascii_case(b"LOADAOF") {
        DebugScope::EveryNodeSettled
    } else if ANY_NODE.iter().any(|k| sub.eq_ignore_ascii_case(k)) {
        DebugScope::AnyNode
    } else {
        DebugScope::EveryNode
    }
}

/// `DEBUG <sub> key [key...]`: the keys' slot (all in one).
fn keyed_debug(spec: &CommandSpec, cmd: &Command, map: &SlotMap) -> Plan {
    let mut slot: Option<Slot> = None;
    for key in cmd.args().skip(2) {
        let s = Slot::of(key);
        match slot {
            Some(first) if first != s && !map.is_standalone() => {
                return Plan::Fail(ProxyError::cross_slot())
            }
            _ => slot = Some(s),
        }
    }
    match slot {
        Some(slot) => Plan::Send(read(Target::Slot(slot))),
        None => Plan::Fail(ProxyError::bad_request(format!(
            "ERR wrong number of arguments for '{}|{}' command",
            spec.name,
            String::from_utf8_lossy(cmd.arg(1).unwrap_or_default()).to_lowercase()
        ))),
    }
}

/// XREAD/XREADGROUP with `BLOCK` before `STREAMS`.
fn has_block_option(cmd: &Command) -> bool {
    cmd.args()
        .skip(1)
        .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
        .any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::NodeAddr;
    use crate::cluster::slot_map::Shard;
    use crate::command::CommandTable;

    /// Three primaries: 0-5460, 5461-10922, 10923-16383, as `redis-cli --cluster create`.
    fn cluster() -> SlotMap {
        let shard = |port: u16| Shard {
            primary: NodeAddr::from(format!("127.0.0.1:{port}")),
            primary_id: None,
            replicas: vec![],
        };
        SlotMap::from_ranges(vec![
            (0, 5460, shard(7000)),
            (5461, 10922, shard(7001)),
            (10923, 16383, shard(7002)),
        ])
    }

    fn planned(args: &[&str], allowed: Allowed, map: &SlotMap) -> Plan {
        let cmd = Command::from_args(args);
        let table = CommandTable::builtin();
        let spec = table.lookup(&cmd).expect("a command of the table");
        plan(spec, &cmd, allowed, map)
    }

    const DEFAULT: Allowed = Allowed {
        admin_commands: false,
        cross_slot: CrossSlot::Refuse,
    };
    const ADMIN: Allowed = Allowed {
        admin_commands: true,
        cross_slot: CrossSlot::Refuse,
    };
    const EMULATE: Allowed = Allowed {
        admin_commands: false,
        cross_slot: CrossSlot::Emulate,
    };

    fn slot(key: &str) -> Slot {
        Slot::of(key.as_bytes())
    }

    fn read_of(key: &str) -> Plan {
        Plan::Send(read(Target::Slot(slot(key))))
    }

    fn write_of(key: &str) -> Plan {
        Plan::Send(Send {
            target: Target::Slot(slot(key)),
            resend: Resend::Never,
            write_to: Some(slot(key)),
        })
    }

    fn fail(message: &str) -> Plan {
        Plan::Fail(ProxyError::bad_request(message.to_string()))
    }

    /// Every command family with its plan on a three-shard cluster.
    #[test]
    fn plans_by_family() {
        let map = cluster();
        let keyless_read = || Plan::Send(read(Target::Any));
        let cases: Vec<(&[&str], Plan)> = vec![
            // Answered by the proxy.
            (&["PING"], Plan::Local(Local::Ping)),
            (&["ping", "hi"], Plan::Local(Local::Ping)),
            (&["ECHO", "x"], Plan::Local(Local::Echo)),
            (&["QUIT"], Plan::Local(Local::Quit)),
            (&["SELECT", "0"], Plan::Local(Local::Select)),
            (&["AUTH", "pw"], Plan::Local(Local::Auth)),
            (&["HELLO", "3"], Plan::Local(Local::Hello)),
            (&["READONLY"], Plan::Local(Local::Ok)),
            (&["RESET"], Plan::Local(Local::Reset)),
            (&["CLIENT", "SETNAME", "a"], Plan::Local(Local::Client)),
            (&["CLIENT", "ID"], Plan::Local(Local::Client)),
            (&["CLUSTER", "KEYSLOT", "k"], Plan::Local(Local::KeySlot)),
            // One key, one slot: reads may be resent, writes never (and are noted for WAIT).
            (&["GET", "foo"], read_of("foo")),
            (&["SET", "foo", "v"], write_of("foo")),
            (&["HGETALL", "{u}.h"], read_of("{u}.h")),
            (&["LPUSH", "list", "a", "b"], write_of("list")),
            (
                &["ZUNIONSTORE", "{t}d", "2", "{t}a", "{t}b"],
                write_of("{t}d"),
            ),
            (
                &["SORT", "k", "STORE", "other"],
                Plan::Fail(ProxyError::cross_slot()),
            ),
            (&["SORT", "k", "STORE", "{k}x"], write_of("k")),
            (
                &["RENAME", "foo", "bar"],
                Plan::Fail(ProxyError::cross_slot()),
            ),
            (&["MSETNX", "{a}1", "x", "{a}2", "y"], write_of("{a}1")),
            (
                &["MSETNX", "a", "x", "b", "y"],
                Plan::Fail(ProxyError::cross_slot()),
            ),
            // Keyless, node-independent: any primary.
            (&["COMMAND", "COUNT"], keyless_read()),
            (&["TIME"], keyless_read()),
            (&["CLUSTER", "INFO"], keyless_read()),
            // Per-node state read from one node, always the same one.
            (
                &["CONFIG", "GET", "maxmemory"],
                Plan::Send(read(Target::Node(NodeAddr::from("127.0.0.1:7000")))),
            ),
            (&["FUNCTION", "LIST"], keyless_read()),
            (&["MEMORY", "STATS"], keyless_read()),
            (
                &["CLUSTER", "COUNTKEYSINSLOT", "42"],
                Plan::Send(read(Target::Slot(Slot::new(42).unwrap()))),
            ),
            (
                &["CLUSTER", "COUNTKEYSINSLOT", "16384"],
                fail("ERR Invalid or out of range slot"),
            ),
            // Broadcast to every primary, merged.
            (
                &["DBSIZE"],
                Plan::Broadcast {
                    merge: Merge::Sum,
                    resend: Resend::Safe,
                },
            ),
            (
                &["FLUSHALL"],
                Plan::Broadcast {
                    merge: Merge::AllOk,
                    resend: Resend::Never,
                },
            ),
            (
                &["SCRIPT", "EXISTS", "abc"],
                Plan::Broadcast {
                    merge: Merge::LogicalOr,
                    resend: Resend::Safe,
                },
            ),
            (&["SCRIPT", "FLUSH"], Plan::ScriptFlush),
            (
                &["FUNCTION", "LOAD", "code"],
                Plan::Broadcast {
                    merge: Merge::Same,
                    resend: Resend::Never,
                },
            ),
            (
                &["FUNCTION", "DELETE", "lib"],
                Plan::Broadcast {
                    merge: Merge::AllOk,
                    resend: Resend::Never,
                },
            ),
            // Pub/Sub: the proxy counts its own clients' subscriptions, as one server.
            (&["PUBSUB", "NUMSUB", "c"], Plan::Local(Local::PubSub)),
            (&["PUBSUB", "CHANNELS"], Plan::Local(Local::PubSub)),
            (&["PUBSUB", "SHARDNUMSUB", "c"], Plan::Local(Local::PubSub)),
            (&["PUBSUB", "NUMPAT"], Plan::Local(Local::PubSub)),
            (
                &["PUBLISH", "c", "m"],
                Plan::Publish(
                    Subscription::Channel,
                    Send {
                        target: Target::Any,
                        resend: Resend::Never,
                        write_to: None,
                    },
                ),
            ),
            (
                &["SLOWLOG", "GET"],
                Plan::Broadcast {
                    merge: Merge::Concat,
                    resend: Resend::Safe,
                },
            ),
            (
                &["SLOWLOG", "LEN"],
                Plan::Broadcast {
                    merge: Merge::Sum,
                    resend: Resend::Safe,
                },
            ),
            // To the node running a script, which its shared pipe may be stuck behind.
            (
                &["SCRIPT", "KILL"],
                Plan::BroadcastAside(Merge::OneSucceeded),
            ),
            (
                &["FUNCTION", "KILL"],
                Plan::BroadcastAside(Merge::OneSucceeded),
            ),
            // The key space, shard by shard.
            (&["KEYS", "*"], Plan::Walk(Walk::Keys)),
            (&["SCAN", "0"], Plan::Walk(Walk::Scan)),
            (&["RANDOMKEY"], Plan::Walk(Walk::RandomKey)),
            (&["INFO"], Plan::Info),
            // A connection of its own.
            (
                &["BLPOP", "q", "0"],
                Plan::Blocking {
                    target: Target::Slot(slot("q")),
                    write: true,
                },
            ),
            (
                &["BLPOP", "q1", "q2", "0"],
                Plan::Fail(ProxyError::cross_slot()),
            ),
            (
                &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
                Plan::Blocking {
                    target: Target::Slot(slot("s")),
                    write: false,
                },
            ),
            (&["XREAD", "STREAMS", "s", "0"], read_of("s")),
            // The session's own state.
            (&["MULTI"], Plan::Session(SessionCommand::Multi)),
            (&["EXEC"], Plan::Session(SessionCommand::Exec)),
            (&["WATCH", "k"], Plan::Session(SessionCommand::Watch)),
            (
                &["SSUBSCRIBE", "c"],
                Plan::Session(SessionCommand::Subscribe(Subscription::Shard)),
            ),
            (
                &["PUNSUBSCRIBE"],
                Plan::Session(SessionCommand::Unsubscribe(Subscription::Pattern)),
            ),
            (&["WAIT", "1", "0"], Plan::Session(SessionCommand::Wait)),
            // Scripts.
            (&["SCRIPT", "LOAD", "return 1"], Plan::ScriptLoad),
            (
                &["EVAL", "return 1", "1", "k"],
                Plan::Script(
                    Script::Eval,
                    Send {
                        target: Target::Slot(slot("k")),
                        resend: Resend::Never,
                        write_to: Some(slot("k")),
                    },
                ),
            ),
            (
                &["EVAL_RO", "return 1", "1", "k"],
                Plan::Script(Script::Eval, read(Target::Slot(slot("k")))),
            ),
            (
                &["EVALSHA", "abc", "0"],
                Plan::Script(
                    Script::EvalSha,
                    Send {
                        target: Target::Any,
                        resend: Resend::Never,
                        write_to: None,
                    },
                ),
            ),
            (
                &["FCALL_RO", "f", "1", "k"],
                Plan::Script(Script::Function, read(Target::Slot(slot("k")))),
            ),
            (
                &["EVAL", "return 1", "2", "a", "b"],
                Plan::Fail(ProxyError::cross_slot()),
            ),
            // Refused.
            (
                &["MOVE", "k", "1"],
                Plan::Fail(ProxyError::unsupported(
                    "move",
                    "it acts on one node of the cluster",
                )),
            ),
            (
                &["CLUSTER", "FAILOVER"],
                Plan::Fail(ProxyError::unsupported(
                    "cluster|failover",
                    "it would change the cluster behind the proxy",
                )),
            ),
            (
                &["BGSAVE"],
                Plan::Fail(ProxyError::unsupported(
                    "bgsave",
                    "it acts on one node of the cluster",
                )),
            ),
            (&["DEBUG", "SLEEP", "0"], Plan::Send(any_primary())),
            (
                &["CONFIG", "SET", "maxmemory", "0"],
                Plan::Fail(ProxyError::admin_commands_off("config|set")),
            ),
            (&["DEBUG", "OBJECT", "k"], read_of("k")),
            (&["debug", "digest-value", "{k}1", "{k}2"], read_of("{k}1")),
            (&["DEBUG", "LISTPACK", "k"], read_of("k")),
            (
                &["DEBUG", "DIGEST-VALUE", "a", "b"],
                Plan::Fail(ProxyError::cross_slot()),
            ),
            (
                &["DEBUG", "OBJECT"],
                Plan::Fail(ProxyError::bad_request(
                    "ERR wrong number of arguments for 'debug|object' command",
                )),
            ),
            (&["DEBUG", "PROTOCOL", "attrib"], Plan::Send(any_primary())),
            (&["DEBUG", "STRINGMATCH-LEN"], Plan::Send(any_primary())),
            (
                &["DEBUG", "SET-ACTIVE-EXPIRE", "0"],
                Plan::Fail(ProxyError::admin_commands_off("debug")),
            ),
        ];
        for (args, expected) in cases {
            assert_eq!(planned(args, DEFAULT, &map), expected, "{args:?}");
        }
    }

    /// With `cross_slot = "emulate"` only what would be CROSSSLOT changes (and SORT with
    /// patterns); same-slot commands, scripts and blocking commands plan as before.
    #[test]
    fn emulation_replaces_only_crossslot() {
        let map = cluster();
        for args in [
            &["GET", "foo"][..],
            &["RENAME", "{a}1", "{a}2"],
            &["SUNIONSTORE", "{t}d", "{t}a", "{t}b"],
            &["SORT", "k", "STORE", "{k}x"],
            &["SORT", "k", "BY", "nosort"],
            &["EVAL", "return 1", "2", "a", "b"],
            &["BLPOP", "q1", "q2", "0"],
            &["MGET", "a", "b"],
        ] {
            assert_eq!(
                planned(args, EMULATE, &map),
                planned(args, DEFAULT, &map),
                "{args:?}"
            );
        }
        assert!(matches!(
            planned(&["RENAME", "foo", "bar"], EMULATE, &map),
            Plan::Emulate(Emulation::Rename { nx: false })
        ));
        assert!(matches!(
            planned(&["SORT", "{k}a", "BY", "{k}w_*"], EMULATE, &map),
            Plan::Emulate(Emulation::Sort(_))
        ));
        assert_eq!(
            planned(&["LMOVE", "a", "b", "UP", "LEFT"], EMULATE, &map),
            fail("ERR syntax error")
        );
        assert_eq!(
            planned(&["XREAD", "STREAMS", "a", "b", "0", "0"], EMULATE, &map),
            Plan::Fail(ProxyError::cross_slot())
        );
        // One Redis behind the proxy: nothing to emulate.
        let standalone = SlotMap::standalone(NodeAddr::from("127.0.0.1:6379"));
        assert_eq!(
            planned(&["SORT", "k", "BY", "w_*"], EMULATE, &standalone),
            Plan::Send(Send {
                target: Target::Slot(slot("k")),
                resend: Resend::Never,
                write_to: Some(slot("k")),
            })
        );
    }

    #[test]
    fn admin_commands_reach_every_node_only_when_allowed() {
        let map = cluster();
        assert_eq!(
            planned(&["CONFIG", "SET", "maxmemory", "0"], ADMIN, &map),
            Plan::ConfigSet
        );
        for args in [
            &["CONFIG", "RESETSTAT"][..],
            &["ACL", "SETUSER", "u"],
            &["DEBUG", "SET-ACTIVE-EXPIRE", "0"],
            &["DEBUG", "RELOAD"],
        ] {
            assert_eq!(planned(args, ADMIN, &map), Plan::EveryNode, "{args:?}");
        }
        assert_eq!(
            planned(&["DEBUG", "LOADAOF"], ADMIN, &map),
            Plan::EveryNodeSettled
        );
        assert_eq!(
            planned(&["BGREWRITEAOF"], ADMIN, &map),
            Plan::EveryNodeSettled
        );
        assert_eq!(
            planned(&["BGREWRITEAOF"], DEFAULT, &map),
            Plan::Fail(ProxyError::admin_commands_off("bgrewriteaof"))
        );
        assert_eq!(
            planned(&["DEBUG", "LOADAOF"], DEFAULT, &map),
            Plan::Fail(ProxyError::admin_commands_off("debug"))
        );
    }

    #[test]
    fn multi_key_commands_split_per_slot() {
        let map = cluster();
        let Plan::Split {
            kind,
            parts,
            resend,
        } = planned(&["MGET", "a", "b", "{a}c"], DEFAULT, &map)
        else {
            panic!("MGET over two slots is split");
        };
        assert_eq!((kind, resend), (SplitKind::Values, Resend::Safe));
        let slots: Vec<(Slot, Vec<usize>)> = parts
            .into_iter()
            .map(|p| (p.slot, p.positions.to_vec()))
            .collect();
        assert_eq!(slots, [(slot("a"), vec![0, 2]), (slot("b"), vec![1])]);
        for (args, expected_kind, expected_resend) in [
            (
                &["MSET", "a", "1", "b", "2"][..],
                SplitKind::Pairs,
                Resend::Never,
            ),
            (&["DEL", "a", "b"], SplitKind::Count, Resend::Never),
            (&["EXISTS", "a", "b"], SplitKind::Count, Resend::Safe),
            (&["UNLINK", "a", "b"], SplitKind::Count, Resend::Never),
            (&["TOUCH", "a", "b"], SplitKind::Count, Resend::Safe),
        ] {
            match planned(args, DEFAULT, &map) {
                Plan::Split { kind, resend, .. } => {
                    assert_eq!((kind, resend), (expected_kind, expected_resend), "{args:?}")
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
        // One slot: no split, a plain keyed request.
        assert_eq!(
            planned(&["MGET", "{a}1", "{a}2"], DEFAULT, &map),
            read_of("{a}1")
        );
        assert_eq!(
            planned(&["DEL", "{a}1", "{a}2"], DEFAULT, &map),
            write_of("{a}1")
        );
    }

    #[test]
    fn a_standalone_redis_takes_any_keys_together() {
        let map = SlotMap::standalone(NodeAddr::from("127.0.0.1:6379"));
        assert_eq!(
            planned(&["MGET", "a", "b"], DEFAULT, &map),
            Plan::Send(read(Target::Any))
        );
        assert_eq!(
            planned(&["DEL", "a", "b"], DEFAULT, &map),
            Plan::Send(Send {
                target: Target::Any,
                resend: Resend::Never,
                write_to: Some(Slot::of(b"")),
            })
        );
        assert_eq!(planned(&["RENAME", "a", "b"], DEFAULT, &map), write_of("a"));
    }
}

//! The plan for one command: a pure function of the command's route (from the command table),
//! its arguments, what the session allows and one slot-map snapshot. It decides; `execute`
//! carries the plan out.

use super::error::ProxyError;
use super::route::{Resend, Target};
use super::split::{split_by_slot, SlotPart};
use crate::cluster::{Slot, SlotMap};
use crate::command::route::{Local, Merge, Route, Script, SessionCommand, SplitKind, Walk};
use crate::command::CommandSpec;
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
    /// To every node, replicas included (allowed by `--admin-commands`).
    EveryNode,
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
    /// EVAL: remembered, then sent by its keys.
    Eval(Send),
    /// EVALSHA: sent by its keys, repaired on NOSCRIPT.
    EvalSha(Send),
    /// Answered with this error.
    Fail(ProxyError),
}

/// What the proxy's configuration allows every client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// `--admin-commands`: commands that change every node's configuration.
    pub admin_commands: bool,
}

/// The plan for `cmd` (whose table entry is `spec`) against the slot map `map`.
pub fn plan(spec: &CommandSpec, cmd: &Command, allowed: Allowed, map: &SlotMap) -> Plan {
    let name = spec.name.as_str();
    match spec.route {
        Route::Local(local) => Plan::Local(local),
        Route::Keyed => keyed(spec, cmd, map),
        Route::AnyPrimary => Plan::Send(any_primary()),
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
            resend: resend_of(spec),
        },
        Route::EveryNode => every_node(name, allowed),
        Route::Debug if is_debug_object(cmd) => match cmd.arg(2) {
            Some(key) => Plan::Send(read(Target::Slot(Slot::of(key)))),
            None => Plan::Fail(ProxyError::bad_request(
                "ERR wrong number of arguments for 'debug|object' command",
            )),
        },
        Route::Debug => every_node(name, allowed),
        Route::Walk(walk) => Plan::Walk(walk),
        Route::Info => Plan::Info,
        Route::MaybeBlocking if has_block_option(cmd) => blocking(spec, cmd, map),
        Route::MaybeBlocking => keyed(spec, cmd, map),
        Route::Blocking => blocking(spec, cmd, map),
        Route::Session(command) => Plan::Session(command),
        Route::Script(Script::Load) => Plan::ScriptLoad,
        Route::Script(Script::Eval) => match keyed(spec, cmd, map) {
            Plan::Send(send) => Plan::Eval(send),
            other => other,
        },
        Route::Script(Script::EvalSha) => match keyed(spec, cmd, map) {
            Plan::Send(send) => Plan::EvalSha(send),
            other => other,
        },
        Route::Refuse(why) => Plan::Fail(ProxyError::unsupported(name, why)),
    }
}

/// The slot of the command's keys (any primary when it has none), or Redis's CROSSSLOT.
/// Behind a standalone Redis one node has every key: any keys go together.
pub fn target_of(spec: &CommandSpec, cmd: &Command, map: &SlotMap) -> Result<Target, ProxyError> {
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

/// To the owner of its keys' slot; a write is noted for WAIT.
fn keyed(spec: &CommandSpec, cmd: &Command, map: &SlotMap) -> Plan {
    match target_of(spec, cmd, map) {
        Ok(target) => Plan::Send(keyed_send(spec, target)),
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

fn is_debug_object(cmd: &Command) -> bool {
    cmd.arg(1)
        .is_some_and(|a| a.eq_ignore_ascii_case(b"OBJECT"))
}

/// XREAD/XREADGROUP with `BLOCK` before `STREAMS`.
fn has_block_option(cmd: &Command) -> bool {
    cmd.args()
        .skip(1)
        .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
        .any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}

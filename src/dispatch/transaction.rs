//! MULTI/EXEC/DISCARD and WATCH/UNWATCH over a cluster.
//!
//! A transaction queues on the node as the client queues, so the node answers each command
//! while it is queued exactly as one Redis would (`+QUEUED`, or an error such as OOM that
//! makes EXEC abort). It lives on a connection of the client's own ([`Pinned`]) to the owner
//! of its first keyed command's slot: MULTI and any keyless commands queued before it go out
//! with that command, and every later command goes out as it arrives. A transaction with no
//! key at all is sent whole at EXEC, to any primary. A command for another slot is refused
//! with `-CROSSSLOT` at once (Redis Cluster would abort at EXEC) and makes EXEC answer
//! `-EXECABORT`.
//!
//! WATCH holds the same kind of connection to the owner of the watched keys, which the node
//! itself then checks at EXEC (a null array after a concurrent change). Keys of several slots
//! may be watched as long as one node owns them all (one WATCH per slot on that connection):
//! that node is where the transaction then runs. Without a WATCH, a slot that moved while
//! the client queued is followed: the node refused the command (a redirect, so it aborts the
//! transaction) and the whole transaction is sent again to the new owner at EXEC (nothing ran
//! on the old one).

use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::decision::{Resend, Rules};
use super::driver::{drive, rules, Exchange, Target};
use super::error::ProxyError;
use super::pinned::{is_redirect, Answer, Pinned};
use super::plan::target_of;
use super::reply::{self, Reply};
use super::worker::Worker;
use crate::backend::dedicated::exchange_many;
use crate::backend::pipe::ReplyResult;
use crate::backend::NodeAddr;
use crate::cluster::redirect::classify;
use crate::cluster::{Slot, SlotMap};
use crate::command::CommandSpec;
use crate::resp::Command;

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";
const QUEUED: &[u8] = b"+QUEUED\r\n";
const DISCARD: &[u8] = b"*1\r\n$7\r\nDISCARD\r\n";
const UNWATCH: &[u8] = b"*1\r\n$7\r\nUNWATCH\r\n";

/// A client's transaction state.
#[derive(Default)]
pub struct TxState {
    multi: Option<Queued>,
    /// The connection the client's WATCH or live transaction is on.
    pinned: Option<Pinned>,
    /// A WATCH was sent on `pinned` (and not undone).
    watching: bool,
}

impl TxState {
    pub fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// Commands queued, or `None` outside MULTI (`CLIENT LIST`'s `multi=`).
    pub fn queued(&self) -> Option<usize> {
        self.multi.as_ref().map(|q| q.commands.len())
    }

    /// The commands queued so far (none outside MULTI): the near cache invalidates their keys
    /// after EXEC.
    pub fn queued_commands(&self) -> &[Command] {
        self.multi.as_ref().map_or(&[], |q| q.commands.as_slice())
    }

    /// Whether a queued command writes (or may replicate): `CLIENT PAUSE WRITE` holds its EXEC.
    pub fn queued_writes(&self) -> bool {
        self.multi.as_ref().is_some_and(|q| q.writes)
    }
}

#[derive(Default)]
struct Queued {
    /// Every command queued so far, to send the transaction again if its slot moved.
    commands: Vec<Command>,
    slot: Option<Slot>,
    /// The proxy refused a command while queuing: EXEC answers EXECABORT.
    failed: bool,
    /// MULTI and the commands so far are on the node (on `TxState::pinned`).
    live: bool,
    /// A queued command writes or may replicate.
    writes: bool,
}

/// Commands that a client inside MULTI runs at once rather than queues (as in Redis).
pub fn runs_in_multi(name: &[u8]) -> bool {
    ["exec", "discard", "multi", "watch", "quit", "reset"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n.as_bytes()))
}

/// Queues a command inside MULTI; the reply is the node's answer to it (`+QUEUED` or the error
/// that aborts the transaction), or the proxy's own refusal. `spec` is `None` for a command
/// the cluster does not know.
pub fn queue(
    worker: &Rc<Worker>,
    map: &SlotMap,
    state: &mut TxState,
    spec: Option<&CommandSpec>,
    cmd: Command,
    refusal: Option<ProxyError>,
) -> Reply {
    let watched_node = state
        .pinned
        .as_ref()
        .filter(|_| state.watching)
        .map(|p| p.node().clone());
    let Some(queued) = state.multi.as_mut() else {
        return ProxyError::bad_request("ERR EXEC without MULTI")
            .answer()
            .into();
    };
    let verdict = match (spec, refusal) {
        (_, Some(error)) => Err(error),
        (None, None) => Err(ProxyError::bad_request("ERR unknown command")),
        (Some(spec), None) if spec.is_no_multi() => Err(ProxyError::bad_request(
            "ERR Command not allowed inside a transaction",
        )),
        (Some(spec), None) => target_of(spec, &cmd, map).and_then(|target| {
            let Target::Slot(slot) = target else {
                return Ok(None);
            };
            let elsewhere = match (queued.slot, &watched_node) {
                (Some(pinned), _) => pinned != slot,
                // The transaction runs where the keys are watched.
                (None, Some(node)) => map.primary(slot) != Some(node),
                (None, None) => false,
            };
            if elsewhere && !map.is_standalone() {
                return Err(ProxyError::cross_slot());
            }
            queued.slot = Some(slot);
            Ok(Some(slot))
        }),
    };
    let slot = match verdict {
        Ok(slot) => slot,
        Err(error) => {
            queued.failed = true;
            return error.answer().into();
        }
    };
    queued.writes |= spec.is_some_and(|s| s.is_write() || s.may_replicate());
    queued.commands.push(cmd.clone());
    if queued.live {
        let Some(pinned) = state.pinned.as_ref() else {
            return ProxyError::node("ERR slotproxy: the transaction's connection is gone")
                .answer()
                .into();
        };
        return Reply::later(queuing_answer(pinned.send(cmd.raw().clone(), 1)));
    }
    let Some(slot) = slot else {
        // No node yet: queued in the proxy until the first key (or EXEC) says where.
        return Bytes::from_static(QUEUED).into();
    };
    // The first keyed command: MULTI, what was queued so far and this command go to the node.
    queued.live = true;
    let payload = transaction_payload(&queued.commands, false);
    let replies = queued.commands.len() + 1;
    let answer = match &state.pinned {
        Some(pinned) => pinned.send(payload, replies),
        None => {
            let Some(node) = map.primary(slot).cloned() else {
                queued.failed = true;
                return ProxyError::slot_not_served().answer().into();
            };
            let pinned = Pinned::new(worker, node);
            let answer = pinned.open(slot, DISCARD, payload, replies);
            state.pinned = Some(pinned);
            answer
        }
    };
    Reply::later(queuing_answer(answer))
}

/// MULTI, the commands and (when `exec`) EXEC, back to back.
fn transaction_payload(commands: &[Command], exec: bool) -> Bytes {
    let mut payload =
        BytesMut::with_capacity(32 + commands.iter().map(|c| c.raw().len()).sum::<usize>());
    payload.extend_from_slice(MULTI);
    for cmd in commands {
        payload.extend_from_slice(cmd.raw());
    }
    if exec {
        payload.extend_from_slice(EXEC);
    }
    payload.freeze()
}

/// The client's answer to one queued command: the node's (the last reply of its job). A
/// redirect is the slot moving while the client queues: one Redis would have said QUEUED, and
/// EXEC sends the transaction again where the slot went.
async fn queuing_answer(job: Answer) -> Bytes {
    match job.get().await {
        Ok(mut replies) => match replies.pop() {
            Some(reply) if is_redirect(&reply) => Bytes::from_static(QUEUED),
            Some(reply) => reply,
            None => ProxyError::exec_abort().to_reply(),
        },
        Err(error) => error.answer(),
    }
}

pub fn multi(state: &mut TxState) -> Bytes {
    if state.multi.is_some() {
        return ProxyError::bad_request("ERR MULTI calls can not be nested").answer();
    }
    state.multi = Some(Queued::default());
    reply::ok()
}

/// Ends the transaction (and, as in Redis, the WATCH).
pub fn discard(state: &mut TxState) -> Bytes {
    let Some(queued) = state.multi.take() else {
        return ProxyError::bad_request("ERR DISCARD without MULTI").answer();
    };
    state.watching = false;
    if let Some(pinned) = state.pinned.take() {
        abandon(pinned, queued.live);
    }
    reply::ok()
}

/// Ends what the node holds for the client (its MULTI when `live`, else its WATCH) and gives
/// the connection back. The node's answer changes nothing: it runs in the background, in
/// order after the client's earlier commands.
fn abandon(pinned: Pinned, live: bool) {
    drop(pinned.finish(Bytes::from_static(if live { DISCARD } else { UNWATCH }), 1));
}

pub fn unwatch(state: &mut TxState) -> Bytes {
    state.watching = false;
    if let Some(pinned) = state.pinned.take() {
        abandon(pinned, false);
    }
    reply::ok()
}

/// RESET or a disconnect: the connection is closed, and the node forgets WATCH and MULTI.
pub fn reset(state: &mut TxState) {
    *state = TxState::default();
}

pub fn exec(worker: &Rc<Worker>, state: &mut TxState) -> Reply {
    let Some(queued) = state.multi.take() else {
        return ProxyError::bad_request("ERR EXEC without MULTI")
            .answer()
            .into();
    };
    let watching = std::mem::take(&mut state.watching);
    let pinned = state.pinned.take();
    if queued.failed {
        if let Some(pinned) = pinned {
            abandon(pinned, queued.live);
        }
        return ProxyError::exec_abort().answer().into();
    }
    let worker = worker.clone();
    match pinned {
        Some(pinned) if queued.live => {
            let redirected = pinned.redirected_flag();
            let exec = pinned.finish(Bytes::from_static(EXEC), 1);
            Reply::later(async move {
                let reply = match exec.get().await {
                    Ok(mut replies) => replies
                        .pop()
                        .unwrap_or_else(|| ProxyError::exec_abort().to_reply()),
                    Err(error) => return error.answer(),
                };
                // The slot moved while the client queued, or before EXEC (the node refused
                // the transaction: nothing of it ran).
                let moved = redirected.get() || is_redirect(&reply);
                match (moved, watching) {
                    // The whole transaction goes to the new owner.
                    (true, false) => run_exec(worker, &queued.commands, queued.slot).await,
                    // The watching node can no longer check it: as for a watched key that
                    // changed, the transaction did not run and the client may try again.
                    (true, true) => reply::null_array(worker.protocol),
                    (false, _) => reply,
                }
            })
        }
        // Watched, every command keyless: the whole transaction on the watching connection.
        Some(pinned) => {
            let payload = transaction_payload(&queued.commands, true);
            let exec = pinned.finish(payload, queued.commands.len() + 2);
            Reply::later(async move {
                match exec.get().await {
                    Ok(mut replies) => replies
                        .pop()
                        .unwrap_or_else(|| ProxyError::exec_abort().to_reply()),
                    Err(error) => error.answer(),
                }
            })
        }
        None => Reply::later(async move { run_exec(worker, &queued.commands, queued.slot).await }),
    }
}

/// The whole transaction, unwatched, on a connection of its own to the slot's owner (any
/// primary when no command has a key), following the slot if it moved.
async fn run_exec(worker: Rc<Worker>, commands: &[Command], slot: Option<Slot>) -> Bytes {
    let payload = transaction_payload(commands, true);
    let replies = commands.len() + 2;
    let target = slot.map_or(Target::Any, Target::Slot);
    let mut exec = ExecExchange {
        payload: &payload,
        replies,
        exec_reply: None,
    };
    // The EXEC may have run once it was written: never send it again. ASKING can't be queued
    // inside MULTI, so a migrating slot is waited for instead.
    let rules = Rules {
        can_ask: false,
        ..rules(&worker, Resend::Never)
    };
    match drive(&worker, &mut exec, &target, rules, None).await {
        // Out of time while the slot moved: EXEC's own answer (nothing of it ran).
        Ok(answer) if classify(&answer).is_some() => exec.exec_reply.unwrap_or(answer),
        Ok(answer) => answer,
        Err(error) => error.answer(),
    }
}

/// MULTI, the queued commands and EXEC on a connection of their own. The reply the driver
/// decides on is the first redirect among the queuing answers (the slot moved while the
/// client queued: nothing ran, Redis refused every command), else EXEC's reply.
struct ExecExchange<'a> {
    payload: &'a Bytes,
    replies: usize,
    /// EXEC's reply when a queuing answer was a redirect (EXECABORT).
    exec_reply: Option<Bytes>,
}

impl Exchange for ExecExchange<'_> {
    const REPLICA_READS: bool = false;

    async fn exchange(&mut self, worker: &Worker, addr: &NodeAddr, _asking: bool) -> ReplyResult {
        let mut conn = worker.dedicated.checkout(addr).await?;
        let mut all = exchange_many(&mut conn, addr, self.payload, self.replies).await?;
        worker.dedicated.checkin(addr, conn);
        let exec = all
            .pop()
            .unwrap_or_else(|| ProxyError::exec_abort().to_reply());
        // Queuing answers sit between MULTI's +OK and EXEC's reply.
        let redirect = all.iter().skip(1).find(|r| classify(r).is_some()).cloned();
        match redirect {
            Some(redirect) => {
                self.exec_reply = Some(exec);
                Ok(redirect)
            }
            None => Ok(exec),
        }
    }
}

/// `WATCH key...`: held on a connection to the node that owns the keys (one WATCH per slot,
/// so keys of several slots of one node can be watched together).
pub fn watch(
    worker: &Rc<Worker>,
    map: &SlotMap,
    state: &mut TxState,
    spec: &CommandSpec,
    cmd: Command,
) -> Reply {
    if state.multi.is_some() {
        return ProxyError::bad_request("ERR WATCH inside MULTI is not allowed")
            .answer()
            .into();
    }
    let groups = watch_groups(spec, &cmd);
    let Some(&(first_slot, _)) = groups.first() else {
        return ProxyError::bad_request("ERR wrong number of arguments for 'watch' command")
            .answer()
            .into();
    };
    let node = match watch_node(map, &groups, state.pinned.as_ref().map(Pinned::node)) {
        Ok(node) => node,
        Err(error) => return error.answer().into(),
    };
    let payload = if groups.len() == 1 {
        cmd.raw().clone()
    } else {
        let mut payload = BytesMut::new();
        for (_, keys) in &groups {
            let args: Vec<&[u8]> = std::iter::once(&b"WATCH"[..])
                .chain(keys.iter().copied())
                .collect();
            payload.extend_from_slice(Command::from_args(&args).raw());
        }
        payload.freeze()
    };
    let replies = groups.len();
    let answer = match &state.pinned {
        Some(pinned) => pinned.send(payload, replies),
        None => {
            let pinned = Pinned::new(worker, node);
            let answer = pinned.open(first_slot, UNWATCH, payload, replies);
            state.pinned = Some(pinned);
            answer
        }
    };
    state.watching = true;
    Reply::later(async move {
        match answer.get().await {
            Ok(replies) => match replies.into_iter().find(|r| r.as_ref() != b"+OK\r\n") {
                // A slot moved away from the watching node since the map was read.
                Some(reply) if is_redirect(&reply) => ProxyError::cross_slot().answer(),
                Some(reply) => reply,
                None => reply::ok(),
            },
            Err(error) => error.answer(),
        }
    })
}

/// The watched keys by slot, in the order the slots first appear.
fn watch_groups<'c>(spec: &CommandSpec, cmd: &'c Command) -> Vec<(Slot, Vec<&'c [u8]>)> {
    let mut indices = Vec::new();
    spec.key_indices(cmd, &mut indices);
    let mut groups: Vec<(Slot, Vec<&[u8]>)> = Vec::new();
    for i in indices {
        let key = cmd.arg(i).unwrap_or_default();
        let slot = Slot::of(key);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, keys)) => keys.push(key),
            None => groups.push((slot, vec![key])),
        }
    }
    groups
}

/// The one node that owns every watched slot (and that already holds the client's earlier
/// WATCH, if any): a transaction can only be checked by one node.
fn watch_node(
    map: &SlotMap,
    groups: &[(Slot, Vec<&[u8]>)],
    watching: Option<&NodeAddr>,
) -> Result<NodeAddr, ProxyError> {
    let mut node: Option<&NodeAddr> = watching;
    for (slot, _) in groups {
        let owner = map.primary(*slot).ok_or_else(ProxyError::slot_not_served)?;
        match node {
            Some(n) if n != owner && !map.is_standalone() => return Err(ProxyError::cross_slot()),
            Some(_) => {}
            None => node = Some(owner),
        }
    }
    node.cloned().ok_or_else(ProxyError::slot_not_served)
}

//! Cross-slot emulation (`cross_slot = "emulate"`): commands whose keys span several slots,
//! which Redis Cluster refuses with CROSSSLOT, carried out by the proxy so the client gets
//! what one Redis would answer. Chosen by `plan` only where the plan would otherwise be
//! CROSSSLOT (and for SORT with BY/GET patterns, which cluster nodes refuse), never inside
//! MULTI or a script; the fast path of same-slot commands never comes here.
//!
//! Three ways, each the most exact one for its family:
//! - [`gather`]: copy the sources of other slots (DUMP/RESTORE) into temporary keys of the
//!   destination's slot (or the first key's, for reads), run the real command there, delete
//!   the temporaries. Redis computes the result itself: set/zset algebra, PFCOUNT/PFMERGE,
//!   BITOP, ZRANGESTORE, GEORADIUS/GEOSEARCHSTORE ... STORE, SORT ... STORE, LCS.
//! - [`moves`]: two-key writes done step by step with type checks first, copy before delete,
//!   and a compensating write when the second step fails: RENAME, RENAMENX, COPY, SMOVE,
//!   LMOVE, RPOPLPUSH; and [`msetnx`]: check every slot, set per slot, undo on a lost race.
//! - [`sort`]: SORT/SORT_RO with BY/GET patterns, whose pattern keys live anywhere: the
//!   elements and the pattern values are read from their owners and sorted here as Redis's
//!   `sortCompare` does.
//!
//! What is lost against one Redis is atomicity: another client may see (or change) the keys
//! between the steps. The README's "Cross-slot emulation" lists it command by command.
//! Every sub-request goes through the request driver, so MOVED/ASK/retries apply to each.

pub mod gather;
pub mod moves;
pub mod msetnx;
pub mod sort;

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;

use super::driver::{execute, Resend, Target};
use super::error::ProxyError;
use super::worker::Worker;
use crate::cluster::{Slot, SlotMap};
use crate::command::CommandSpec;
use crate::resp::{is_error_reply, Command};

/// Most bytes of source data (DUMP payloads, elements, pattern values) one emulated command
/// may read: the proxy holds them in memory until the command is done, so one command can't
/// take more than this of the proxy's memory. Past it the command fails with a `-ERR` naming
/// this limit, before anything was written.
pub const MAX_SOURCE_BYTES: usize = 64 * 1024 * 1024;

/// Temporary keys expire after this long even if the proxy dies before deleting them (they
/// are deleted as soon as the command is done; the TTL is only the safety net).
const TEMP_TTL_MS: u64 = 5 * 60 * 1000;

/// Read commands run on the first key's slot with copies of the other keys.
const GATHER_READS: &[&str] = &[
    "sinter",
    "sunion",
    "sdiff",
    "sintercard",
    "zunion",
    "zinter",
    "zdiff",
    "zintercard",
    "pfcount",
    "lcs",
];

/// Commands that write one destination from sources: run on the destination's slot.
/// The destination's argument index; `None`: the last key (GEORADIUS ... STORE, SORT ... STORE).
const GATHER_STORES: &[(&str, Option<usize>)] = &[
    ("sunionstore", Some(1)),
    ("sinterstore", Some(1)),
    ("sdiffstore", Some(1)),
    ("zunionstore", Some(1)),
    ("zinterstore", Some(1)),
    ("zdiffstore", Some(1)),
    ("zrangestore", Some(1)),
    ("geosearchstore", Some(1)),
    ("pfmerge", Some(1)),
    ("bitop", Some(2)),
    ("georadius", None),
    ("georadiusbymember", None),
    ("sort", None),
];

/// A list end (LMOVE's LEFT/RIGHT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Left,
    Right,
}

/// How one cross-slot command is carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emulation {
    /// The real command on the owner of `anchor`, the keys at `copied` (argument indices, all
    /// in other slots) replaced by temporary copies in `anchor`'s slot.
    Gather {
        anchor: Slot,
        copied: Vec<usize>,
        resend: Resend,
    },
    /// RENAME (`nx`: RENAMENX).
    Rename {
        nx: bool,
    },
    Copy,
    SMove,
    /// LMOVE, RPOPLPUSH (RIGHT LEFT).
    LMove {
        from: End,
        to: End,
    },
    MSetNx,
    /// SORT/SORT_RO with BY or GET patterns.
    Sort(sort::SortOptions),
}

impl Emulation {
    /// Whether it may write (for WAIT, which can't follow these writes).
    pub fn writes(&self) -> bool {
        match self {
            Emulation::Gather { resend, .. } => *resend == Resend::Never,
            Emulation::Sort(options) => options.store.is_some(),
            _ => true,
        }
    }
}

/// The emulation of `cmd`, whose keys span several slots, or the error to answer: CROSSSLOT
/// for a command the proxy does not emulate, Redis's own error for arguments one Redis would
/// refuse before looking at any key (LMOVE's directions, MSETNX's pairs, SORT's options).
pub fn plan(spec: &CommandSpec, cmd: &Command) -> Result<Emulation, ProxyError> {
    let name = spec.name.as_str();
    let mut keys = Vec::new();
    spec.key_indices(cmd, &mut keys);
    match name {
        "rename" => Ok(Emulation::Rename { nx: false }),
        "renamenx" => Ok(Emulation::Rename { nx: true }),
        "copy" => Ok(Emulation::Copy),
        "smove" => Ok(Emulation::SMove),
        "rpoplpush" => Ok(Emulation::LMove {
            from: End::Right,
            to: End::Left,
        }),
        "lmove" => match (end_of(cmd.arg(3)), end_of(cmd.arg(4))) {
            (Some(from), Some(to)) => Ok(Emulation::LMove { from, to }),
            _ => Err(syntax_error()),
        },
        "msetnx" if cmd.argc().is_multiple_of(2) => Err(ProxyError::bad_request(
            "ERR wrong number of arguments for 'msetnx' command",
        )),
        "msetnx" => Ok(Emulation::MSetNx),
        "sort" | "sort_ro" => match sort::parse(cmd, name == "sort_ro") {
            (Err(error), _) => Err(error),
            (Ok(options), true) => Ok(Emulation::Sort(options)),
            (Ok(_), false) => gather_plan(cmd, &keys, keys.iter().max().copied(), spec),
        },
        _ if GATHER_READS.contains(&name) => gather_plan(cmd, &keys, keys.first().copied(), spec),
        _ => match GATHER_STORES.iter().find(|(n, _)| *n == name) {
            Some((_, Some(dest))) => gather_plan(cmd, &keys, Some(*dest), spec),
            Some((_, None)) => gather_plan(cmd, &keys, keys.iter().max().copied(), spec),
            None => Err(ProxyError::cross_slot()),
        },
    }
}

/// SORT/SORT_RO with a BY pattern that has a `*` or a GET pattern: cluster nodes refuse those
/// ("BY option of SORT denied in Cluster mode."), so under emulation they are always carried
/// out here, whatever the slots. `None`: not such a SORT (or not SORT at all).
pub fn sort_with_patterns(
    spec: &CommandSpec,
    cmd: &Command,
) -> Option<Result<Emulation, ProxyError>> {
    let readonly = match spec.name.as_str() {
        "sort" => false,
        "sort_ro" => true,
        _ => return None,
    };
    match sort::parse(cmd, readonly) {
        (_, false) => None,
        (Ok(options), true) => Some(Ok(Emulation::Sort(options))),
        (Err(error), true) => Some(Err(error)),
    }
}

fn gather_plan(
    cmd: &Command,
    keys: &[usize],
    anchor_at: Option<usize>,
    spec: &CommandSpec,
) -> Result<Emulation, ProxyError> {
    let Some(anchor_key) = anchor_at.and_then(|i| cmd.arg(i)) else {
        return Err(ProxyError::cross_slot());
    };
    let anchor = Slot::of(anchor_key);
    let copied = keys
        .iter()
        .copied()
        .filter(|&i| cmd.arg(i).is_some_and(|k| Slot::of(k) != anchor))
        .collect();
    Ok(Emulation::Gather {
        anchor,
        copied,
        resend: if spec.is_readonly() {
            Resend::Safe
        } else {
            Resend::Never
        },
    })
}

fn end_of(arg: Option<&[u8]>) -> Option<End> {
    match arg {
        Some(a) if a.eq_ignore_ascii_case(b"LEFT") => Some(End::Left),
        Some(a) if a.eq_ignore_ascii_case(b"RIGHT") => Some(End::Right),
        _ => None,
    }
}

/// Carries out `emulation` of `cmd` (the table's `name`) and returns the client's reply.
pub async fn run(worker: Rc<Worker>, name: String, cmd: Command, emulation: Emulation) -> Bytes {
    metrics::counter!("slotproxy_emulated_commands_total", "command" => name.clone()).increment(1);
    let result = match emulation {
        Emulation::Gather {
            anchor,
            copied,
            resend,
        } => gather::run(&worker, &name, &cmd, anchor, &copied, resend).await,
        Emulation::Rename { nx } => moves::rename(&worker, &name, &cmd, nx).await,
        Emulation::Copy => moves::copy(&worker, &name, &cmd).await,
        Emulation::SMove => moves::smove(&worker, &cmd).await,
        Emulation::LMove { from, to } => moves::lmove(&worker, &cmd, from, to).await,
        Emulation::MSetNx => msetnx::run(&worker, &cmd).await,
        Emulation::Sort(options) => sort::run(&worker, &name, &cmd, options).await,
    };
    result.unwrap_or_else(|error| error.answer())
}

// --- helpers shared by the families ---

/// One sub-request through the request driver; its final reply (an error reply included).
/// The request is encoded at once, so the future borrows nothing.
fn call<A: AsRef<[u8]>>(
    worker: &Rc<Worker>,
    target: Target,
    resend: Resend,
    args: &[A],
) -> impl std::future::Future<Output = Bytes> + 'static {
    execute(
        worker.clone(),
        Command::from_args(args).into_raw(),
        target,
        resend,
    )
}

/// The owner of `key`'s slot.
fn owner(key: &[u8]) -> Target {
    Target::Slot(Slot::of(key))
}

/// The value of a bulk reply: `Some(None)` for a null, `None` for another shape.
fn bulk_value(reply: &Bytes) -> Option<Option<Bytes>> {
    if super::reply::is_nil(reply) {
        return Some(None);
    }
    let rest = reply.strip_prefix(b"$")?;
    let line_end = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(rest.get(..line_end)?)
        .ok()?
        .parse()
        .ok()?;
    let start = 1 + line_end + 2;
    (reply.len() == start + len + 2).then(|| Some(reply.slice(start..start + len)))
}

/// The text of a simple-string reply (`+set\r\n` → `set`).
fn simple(reply: &[u8]) -> Option<&[u8]> {
    reply.strip_prefix(b"+")?.strip_suffix(b"\r\n")
}

fn syntax_error() -> ProxyError {
    ProxyError::bad_request("ERR syntax error")
}

fn wrong_type() -> ProxyError {
    ProxyError::bad_request("WRONGTYPE Operation against a key holding the wrong kind of value")
}

fn malformed(what: &str) -> ProxyError {
    ProxyError::node(format!(
        "ERR slotproxy: unexpected reply to {what} while emulating a cross-slot command"
    ))
}

/// How much source data a command has read so far, against [`MAX_SOURCE_BYTES`].
struct Budget<'a> {
    name: &'a str,
    left: usize,
}

impl<'a> Budget<'a> {
    fn new(name: &'a str) -> Budget<'a> {
        Budget {
            name,
            left: MAX_SOURCE_BYTES,
        }
    }

    fn take(&mut self, bytes: usize) -> Result<(), ProxyError> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(ProxyError::limit(format!(
                "ERR slotproxy: emulating {} across slots would read more than {MAX_SOURCE_BYTES} bytes of source data (MAX_SOURCE_BYTES)",
                self.name.to_uppercase()
            ))),
        }
    }
}

/// Temporary keys of one command, all in one slot: `{tag}slotproxy:emulate:<nonce>:<i>`,
/// where `tag` hashes to that slot and `nonce` is unique in the process (and random across
/// processes), so two commands never share one.
struct Temps {
    slot: Slot,
    prefix: String,
    count: usize,
}

impl Temps {
    fn new(slot: Slot) -> Temps {
        static BASE: OnceLock<u64> = OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = *BASE.get_or_init(|| fastrand::u64(..));
        let nonce = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        Temps {
            slot,
            prefix: format!("{{{}}}slotproxy:emulate:{nonce:x}:", slot_tag(slot)),
            count: 0,
        }
    }

    /// A new temporary key name.
    fn name(&mut self) -> Bytes {
        self.count += 1;
        Bytes::from(format!("{}{}", self.prefix, self.count))
    }

    fn target(&self) -> Target {
        Target::Slot(self.slot)
    }

    /// Deletes every temporary key handed out (missing ones are no matter).
    async fn delete(&self, worker: &Rc<Worker>) {
        if self.count == 0 {
            return;
        }
        let mut args: Vec<Bytes> = vec![Bytes::from_static(b"DEL")];
        args.extend((1..=self.count).map(|i| Bytes::from(format!("{}{i}", self.prefix))));
        let reply = call(worker, self.target(), Resend::Never, &args).await;
        if is_error_reply(&reply) {
            tracing::warn!(
                prefix = %self.prefix,
                error = %String::from_utf8_lossy(&reply).trim_end(),
                "could not delete the temporary keys of a cross-slot emulation (they expire by themselves)"
            );
        }
    }
}

/// A short hash tag for each slot (`{tag}` puts a key in that slot): the first base-36
/// numbers that hash to it, found once.
fn slot_tag(slot: Slot) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); crate::cluster::slot::SLOT_COUNT];
        let mut missing = tags.len();
        let mut n: u64 = 0;
        while missing > 0 {
            let tag = base36(n);
            if let Some(t) = tags.get_mut(Slot::of(tag.as_bytes()).index()) {
                if t.is_empty() {
                    *t = tag;
                    missing -= 1;
                }
            }
            n += 1;
        }
        tags
    });
    tags.get(slot.index()).map_or("", String::as_str)
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Whether emulation is possible at all against `map` (a standalone Redis needs none).
pub fn applies(map: &SlotMap) -> bool {
    !map.is_standalone()
}

#[cfg(test)]
mod tests;

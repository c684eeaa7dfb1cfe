//! Commands that concern the whole data set: sent to every primary and merged, or walked shard
//! by shard (SCAN).

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;

use super::driver::{execute, execute_dedicated, Resend, Started, Target};
use super::error::ProxyError;
use super::merge;
use super::reply;
use super::worker::Worker;
use crate::cluster::slot::pattern_slot;
use crate::cluster::SlotMap;
use crate::resp::{encode, Command, ReplyScanner};

pub use crate::command::route::Merge;

/// Every primary of `map`, as targets.
pub fn primaries_of(map: &SlotMap) -> Vec<Target> {
    map.shards()
        .iter()
        .map(|s| Target::Node(s.primary.clone()))
        .collect()
}

/// Every node of `map`, replicas included (server configuration changes), as targets.
pub fn nodes_of(map: &SlotMap) -> Vec<Target> {
    map.nodes().into_iter().map(Target::Node).collect()
}

/// Every primary of the current map, as targets.
pub fn primaries(worker: &Worker) -> Vec<Target> {
    primaries_of(&worker.shared.topology.map())
}

/// Sends `payload` to every primary and merges the replies.
pub async fn broadcast(worker: Rc<Worker>, payload: Bytes, merge: Merge, resend: Resend) -> Bytes {
    let targets = primaries(&worker);
    broadcast_to(worker, payload, targets, merge, resend).await
}

/// Sends `payload` to each of `targets` and merges the replies.
pub async fn broadcast_to(
    worker: Rc<Worker>,
    payload: Bytes,
    targets: Vec<Target>,
    merge: Merge,
    resend: Resend,
) -> Bytes {
    let limit = merged_reply_limit(&worker);
    gather(targets, merge, limit, &payload, |t| {
        execute(worker.clone(), payload.clone(), t, resend)
    })
    .await
}

/// Sends `payload` to each of `targets` on connections of their own (not the shared pipes,
/// where a busy node's script may hold it back) and merges the replies.
pub async fn broadcast_aside(
    worker: Rc<Worker>,
    payload: Bytes,
    targets: Vec<Target>,
    merge: Merge,
) -> Bytes {
    let limit = merged_reply_limit(&worker);
    gather(targets, merge, limit, &payload, |t| {
        execute_dedicated(worker.clone(), payload.clone(), t)
    })
    .await
}

/// How long `DEBUG LOADAOF` waits for a node's background AOF rewrite to end.
const REWRITE_WAIT: Duration = Duration::from_secs(10);
const REWRITE_POLL: Duration = Duration::from_millis(20);

/// Sends `payload` (`DEBUG LOADAOF`, `BGREWRITEAOF`) to each of `targets` once no background
/// AOF rewrite runs there: Redis 7.0 exits when a LOADAOF meets a rewrite in progress, and
/// BGREWRITEAOF answers "already in progress" (both right after `CONFIG SET appendonly yes`,
/// which starts one on every node at once). A rewrite still running after [`REWRITE_WAIT`] is
/// the node's to handle.
pub async fn every_node_settled(worker: Rc<Worker>, payload: Bytes, targets: Vec<Target>) -> Bytes {
    gather(targets, Merge::Same, 0, &payload, |target| {
        let (worker, payload) = (worker.clone(), payload.clone());
        async move {
            wait_for_no_rewrite(&worker, &target).await;
            execute(worker, payload, target, Resend::Never).await
        }
    })
    .await
}

async fn wait_for_no_rewrite(worker: &Rc<Worker>, target: &Target) {
    let info = Command::from_args(&[b"INFO".as_slice(), b"persistence"]).into_raw();
    let deadline = Instant::now() + REWRITE_WAIT;
    while Instant::now() < deadline {
        let reply = execute(worker.clone(), info.clone(), target.clone(), Resend::Safe).await;
        let rewriting = [
            b"aof_rewrite_in_progress:1".as_slice(),
            b"aof_rewrite_scheduled:1",
        ]
        .iter()
        .any(|field| reply.windows(field.len()).any(|w| w == *field));
        if !rewriting {
            return;
        }
        tokio::time::sleep(REWRITE_POLL).await;
    }
}

/// The replies of requests already sent (each of `payload`), merged.
pub async fn gather_started(
    worker: Rc<Worker>,
    payload: Bytes,
    started: Vec<Started>,
    merge: Merge,
) -> Bytes {
    if started.is_empty() {
        return ProxyError::cluster_down().answer();
    }
    let limit = merged_reply_limit(&worker);
    let requests = started.into_iter().map(|s| s.reply(worker.clone()));
    finish(collect(requests, merge, limit).await, merge, limit, || {
        command_name(&payload)
    })
}

/// Runs `request` (of `payload`) for every target at once and merges the replies.
async fn gather<F, R>(
    targets: Vec<Target>,
    merge: Merge,
    limit: usize,
    payload: &[u8],
    request: F,
) -> Bytes
where
    F: FnMut(Target) -> R,
    R: Future<Output = Bytes>,
{
    if targets.is_empty() {
        return ProxyError::cluster_down().answer();
    }
    let requests = targets.into_iter().map(request);
    finish(collect(requests, merge, limit).await, merge, limit, || {
        command_name(payload)
    })
}

/// `max_merged_reply` as it is now (a reload may change it).
fn merged_reply_limit(worker: &Worker) -> usize {
    worker.shared.client_limits.load().max_merged_reply
}

/// Whether `merge` builds a reply as large as its parts together (the others reduce them to
/// a number, an OK, one part).
fn concatenates(merge: Merge) -> bool {
    matches!(merge, Merge::Concat | Merge::Union | Merge::SumPairs)
}

/// The replies of `requests`, in their order. For a merge that concatenates, the parts'
/// sizes are added up as they arrive: once the total passes `limit` (0 = none) the parts
/// already in are dropped at once, and each part still to come is dropped as it arrives, so
/// a refused reply is never held whole. The refusal waits for those last parts (as long as
/// the reply would have taken) rather than abandoning them, so that once it is answered every
/// part is gone and their memory can be returned. `Err` carries the size reached.
async fn collect<R: Future<Output = Bytes>>(
    requests: impl Iterator<Item = R>,
    merge: Merge,
    limit: usize,
) -> Result<Vec<Bytes>, usize> {
    if limit == 0 || !concatenates(merge) {
        return Ok(join_all(requests).await);
    }
    let mut running: FuturesUnordered<_> = requests
        .enumerate()
        .map(|(i, request)| async move { (i, request.await) })
        .collect();
    let mut parts = vec![Bytes::new(); running.len()];
    let mut total = 0usize;
    while let Some((i, part)) = running.next().await {
        total = total.saturating_add(part.len());
        if total > limit {
            parts = Vec::new();
        } else if let Some(slot) = parts.get_mut(i) {
            *slot = part;
        }
    }
    if total > limit {
        Err(total)
    } else {
        Ok(parts)
    }
}

/// The merged reply, or the `max_merged_reply` error naming the command (`name` is only
/// worked out for the error).
fn finish(
    collected: Result<Vec<Bytes>, usize>,
    merge: Merge,
    limit: usize,
    name: impl FnOnce() -> String,
) -> Bytes {
    match collected {
        Ok(parts) => merged(merge, parts),
        Err(reached) => {
            let name = name();
            tracing::debug!(command = %name, bytes = reached, limit, "merged reply refused (max_merged_reply)");
            // Every part has been dropped by now.
            crate::memory::released(reached);
            too_large(&name, limit).answer()
        }
    }
}

/// `-ERR slotproxy: the KEYS reply is larger than max_merged_reply (N bytes); use SCAN`.
fn too_large(name: &str, limit: usize) -> ProxyError {
    let name = if name.is_empty() { "merged" } else { name };
    let hint = if name == "KEYS" { "; use SCAN" } else { "" };
    ProxyError::limit(format!(
        "ERR slotproxy: the {name} reply is larger than max_merged_reply ({limit} bytes){hint}"
    ))
}

/// The command a request's payload names, upper-cased, with its subcommand (`SLOWLOG GET`)
/// when the second argument is a word; empty when the payload is not a RESP array.
fn command_name(payload: &[u8]) -> String {
    let mut words = Vec::new();
    let mut rest = payload;
    if rest.first() != Some(&b'*') {
        return String::new();
    }
    for _ in 0..3 {
        let Some(line_end) = rest.iter().position(|&b| b == b'\n') else {
            break;
        };
        rest = &rest[line_end + 1..];
        if words.len() == 2 {
            break;
        }
        let Some(len) = rest
            .strip_prefix(b"$")
            .and_then(|r| r.iter().position(|&b| b == b'\r').map(|e| &r[..e]))
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<usize>().ok())
        else {
            break;
        };
        let Some(start) = rest.iter().position(|&b| b == b'\n').map(|p| p + 1) else {
            break;
        };
        let Some(word) = rest.get(start..start + len) else {
            break;
        };
        words.push(word);
        rest = &rest[start + len..];
    }
    let mut name = String::new();
    for (i, word) in words.iter().enumerate() {
        let is_word = word.len() <= 32 && word.iter().all(|b| b.is_ascii_alphabetic());
        if i > 0 && (!is_word || name == "KEYS") {
            break;
        }
        if i > 0 {
            name.push(' ');
        }
        name.push_str(&String::from_utf8_lossy(word).to_ascii_uppercase());
    }
    name
}

fn merged(merge: Merge, parts: Vec<Bytes>) -> Bytes {
    match merge {
        Merge::Sum => merge::sum(&parts),
        Merge::AllOk => merge::all_ok(&parts),
        Merge::Same => merge::same(&parts),
        Merge::Concat => merge::concat(parts),
        Merge::LogicalAnd => merge::logical_and(&parts),
        Merge::LogicalOr => merge::logical_or(&parts),
        Merge::Union => merge::union(&parts),
        Merge::SumPairs => merge::sum_pairs(&parts),
        Merge::OneSucceeded => merge::one_succeeded(&parts),
        Merge::RunningScript => merge::running_script(&parts),
    }
}

/// KEYS pattern: one shard when the pattern fixes the slot, else all of them.
pub async fn keys(worker: Rc<Worker>, cmd: Command) -> Bytes {
    match cmd.arg(1).and_then(pattern_slot) {
        Some(slot) => execute(worker, cmd.raw().clone(), Target::Slot(slot), Resend::Safe).await,
        None => broadcast(worker, cmd.raw().clone(), Merge::Concat, Resend::Safe).await,
    }
}

/// RANDOMKEY: a random primary first, then the others until one has a key.
pub async fn random_key(worker: Rc<Worker>, cmd: Command) -> Bytes {
    let mut targets = primaries(&worker);
    if targets.is_empty() {
        return ProxyError::cluster_down().answer();
    }
    let start = fastrand::usize(..targets.len());
    targets.rotate_left(start);
    for target in targets {
        let answer = execute(worker.clone(), cmd.raw().clone(), target, Resend::Safe).await;
        if !reply::is_nil(&answer) {
            return answer;
        }
    }
    reply::nil(worker.protocol)
}

fn invalid_cursor() -> Bytes {
    ProxyError::bad_request("ERR invalid cursor").answer()
}

/// Bits of the proxy's SCAN cursor that hold the shard index: up to 1024 shards, leaving 54
/// bits for the node's own cursor (Redis cursors stay far below that).
const SHARD_BITS: u32 = 10;
const SHARD_MASK: u64 = (1 << SHARD_BITS) - 1;

/// SCAN over the primaries in address order. The proxy's cursor is one unsigned integer:
/// `node_cursor << 10 | shard_index`, so clients that parse cursors as numbers keep working.
/// With `MATCH {tag}*` only the shard of that slot is scanned and its cursor is passed through.
pub async fn scan(worker: Rc<Worker>, cmd: Command) -> Bytes {
    let Some(cursor) = cmd
        .arg(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return invalid_cursor();
    };
    let mut pattern = None;
    let mut i = 2;
    while let Some(option) = cmd.arg(i) {
        if option.eq_ignore_ascii_case(b"MATCH") {
            pattern = cmd.arg(i + 1);
        }
        i += 2;
    }
    if let Some(slot) = pattern.and_then(pattern_slot) {
        return execute(worker, cmd.raw().clone(), Target::Slot(slot), Resend::Safe).await;
    }
    let shard = (cursor & SHARD_MASK) as usize;
    let node_cursor = cursor >> SHARD_BITS;
    let (target, shard_count) = {
        let map = worker.shared.topology.map();
        let shards = map.shards();
        match shards.get(shard) {
            Some(s) => (Target::Node(s.primary.clone()), shards.len()),
            None if shards.is_empty() => return ProxyError::cluster_down().answer(),
            None => return invalid_cursor(),
        }
    };
    let mut args: Vec<Bytes> = cmd.args().map(Bytes::copy_from_slice).collect();
    if let Some(c) = args.get_mut(1) {
        *c = Bytes::from(node_cursor.to_string());
    }
    let sub = Command::from_args(&args);
    let answer = execute(worker, sub.raw().clone(), target, Resend::Safe).await;
    let Some((next, keys)) = split_scan_reply(&answer) else {
        return answer;
    };
    let next_cursor = if next != 0 {
        if next >> (64 - SHARD_BITS) != 0 {
            return ProxyError::node("ERR slotproxy: node SCAN cursor too large to encode")
                .answer();
        }
        (next << SHARD_BITS) | shard as u64
    } else if shard + 1 < shard_count {
        (shard + 1) as u64
    } else {
        0
    };
    let mut out = BytesMut::with_capacity(keys.len() + 32);
    encode::array_header(&mut out, 2);
    encode::bulk(&mut out, next_cursor.to_string().as_bytes());
    out.extend_from_slice(&keys);
    out.freeze()
}

/// `*2 $cursor *keys` → (cursor, raw keys array).
fn split_scan_reply(answer: &Bytes) -> Option<(u64, Bytes)> {
    let rest = answer.strip_prefix(b"*2\r\n")?;
    let cursor_len = ReplyScanner::default().scan(rest).ok()??;
    let cursor_reply = &rest[..cursor_len];
    let cursor_text = cursor_reply.strip_prefix(b"$")?;
    let start = cursor_text.iter().position(|&b| b == b'\n')? + 1;
    let cursor: u64 = std::str::from_utf8(cursor_text.get(start..cursor_text.len() - 2)?)
        .ok()?
        .parse()
        .ok()?;
    Some((cursor, answer.slice(4 + cursor_len..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collected(parts: &[&'static str], merge: Merge, limit: usize) -> Result<Vec<Bytes>, usize> {
        let requests = parts
            .iter()
            .map(|p| std::future::ready(Bytes::from_static(p.as_bytes())));
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(collect(requests, merge, limit))
    }

    #[test]
    fn merges_that_concatenate_stop_past_max_merged_reply() {
        let parts = ["*1\r\n$1\r\na\r\n", "*1\r\n$1\r\nb\r\n"];
        // Within the limit (or none): every part, in target order.
        let all = collected(&parts, Merge::Concat, 22).unwrap();
        assert_eq!(all, parts.map(|p| Bytes::from_static(p.as_bytes())));
        assert_eq!(merged(Merge::Concat, all), "*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        assert!(collected(&parts, Merge::Concat, 0).is_ok());
        // Past it: the size of every part (each dropped as it came).
        assert_eq!(collected(&parts, Merge::Concat, 21), Err(22));
        assert_eq!(collected(&parts, Merge::Union, 5), Err(22));
        // Merges that reduce their parts are not limited.
        assert!(collected(&[":1\r\n", ":2\r\n"], Merge::Sum, 1).is_ok());
    }

    #[test]
    fn the_limit_error_names_the_command() {
        let keys = Command::from_args(&["KEYS", "*"]).into_raw();
        assert_eq!(command_name(&keys), "KEYS");
        assert_eq!(
            too_large(&command_name(&keys), 100).to_reply(),
            "-ERR slotproxy: the KEYS reply is larger than max_merged_reply (100 bytes); use SCAN\r\n"
        );
        let slowlog = Command::from_args(&["slowlog", "get", "10"]).into_raw();
        assert_eq!(command_name(&slowlog), "SLOWLOG GET");
        assert_eq!(
            too_large(&command_name(&slowlog), 7).to_reply(),
            "-ERR slotproxy: the SLOWLOG GET reply is larger than max_merged_reply (7 bytes)\r\n"
        );
        let channels = Command::from_args(&["PUBSUB", "CHANNELS", "news.*"]).into_raw();
        assert_eq!(command_name(&channels), "PUBSUB CHANNELS");
        assert_eq!(command_name(b"PING\r\n"), "");
        assert_eq!(command_name(b"*2\r\n$4\r\nKE"), "");
        assert_eq!(
            too_large("", 1).to_reply(),
            "-ERR slotproxy: the merged reply is larger than max_merged_reply (1 bytes)\r\n"
        );
    }

    #[test]
    fn scan_reply_split() {
        let answer = Bytes::from_static(b"*2\r\n$3\r\n128\r\n*1\r\n$1\r\na\r\n");
        let (cursor, keys) = split_scan_reply(&answer).unwrap();
        assert_eq!(cursor, 128);
        assert_eq!(keys.as_ref(), b"*1\r\n$1\r\na\r\n");
    }
}

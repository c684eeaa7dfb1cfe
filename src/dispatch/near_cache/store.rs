//! The near cache's memory of one worker, as plain data (no I/O, no clock), so every rule is
//! a table test: the entries (LRU, bounded in bytes), the reads in flight that may fill them
//! (the "filling" placeholders), and which nodes' invalidation connections are heard.
//!
//! A read's reply is stored only if nothing that could make it stale happened between the
//! moment the read was sent and the moment its reply arrived: its key was not invalidated
//! (the placeholder is still there, with the generation the read took), and the connection
//! that reports the node's changes was heard the whole time (its epoch did not change).

use std::collections::HashMap;

use bytes::Bytes;
use lru::LruCache;

use crate::backend::NodeAddr;
use crate::cluster::Slot;

/// Bytes counted for each entry besides its key and value: the two `Bytes` handles, the LRU
/// links and the hash table's slot, rounded up.
pub const ENTRY_OVERHEAD: usize = 96;

/// Reads in flight remembered at most; past it they are all forgotten (none of them will be
/// stored: always safe), so a client that never collects its replies can't grow this map.
const MAX_FILLING: usize = 65_536;

/// A cached `GET` reply, in a form that answers a RESP2 and a RESP3 client alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    /// The whole bulk-string reply (`$3\r\nfoo\r\n`), the same in both protocols.
    Bulk(Bytes),
    /// The key does not exist: `$-1` in RESP2, `_` in RESP3.
    Nil,
}

impl Cached {
    /// The value of a `GET` reply, if it is one that may be cached (not an error, not a
    /// value larger than `max_value`).
    pub fn of_reply(reply: &[u8], max_value: usize) -> Option<Cached> {
        if reply == b"$-1\r\n" || reply == b"_\r\n" {
            return Some(Cached::Nil);
        }
        let rest = reply.strip_prefix(b"$")?;
        let end = rest.iter().position(|&b| b == b'\r')?;
        let len: usize = std::str::from_utf8(rest.get(..end)?).ok()?.parse().ok()?;
        // `$`, the length, CRLF, the value, CRLF: exactly one bulk string.
        let whole = 1 + end + 2 + len + 2;
        (len <= max_value && reply.len() == whole && reply.ends_with(b"\r\n"))
            .then(|| Cached::Bulk(Bytes::copy_from_slice(reply)))
    }

    fn size(&self) -> usize {
        match self {
            Cached::Bulk(reply) => reply.len(),
            Cached::Nil => 0,
        }
    }
}

struct Entry {
    value: Cached,
    /// The placeholder generation of the read that filled it.
    generation: u64,
    /// Index in `Store::nodes` of the primary it was read from.
    node: u16,
    slot: Slot,
}

/// A primary's invalidation connection, as the store knows it.
struct Node {
    addr: NodeAddr,
    /// Its `CLIENT TRACKING ON BCAST` was acknowledged and the connection has not broken since.
    heard: bool,
    /// Bumped each time it stops being heard: a read sent before that can't be stored.
    epoch: u64,
}

/// What a read in flight carries, to be stored when its reply arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
    node: u16,
    epoch: u64,
    pub slot: Slot,
}

/// Counts since start-up (the caller folds differences into the metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped because the node reported their key changed (or everything did, or
    /// the proxy wrote the key), or because their node or slot can no longer vouch for them.
    pub invalidations: u64,
    /// Entries dropped to stay within the memory bound.
    pub evictions: u64,
}

pub struct Store {
    entries: LruCache<Bytes, Entry>,
    /// Keys with a read in flight that may fill them, and that read's generation.
    filling: HashMap<Bytes, u64>,
    next_generation: u64,
    nodes: Vec<Node>,
    bytes: usize,
    max_bytes: usize,
    max_value: usize,
    pub stats: Stats,
}

impl Store {
    pub fn new(max_bytes: usize, max_value: usize) -> Store {
        Store {
            entries: LruCache::unbounded(),
            filling: HashMap::new(),
            next_generation: 0,
            nodes: Vec::new(),
            bytes: 0,
            max_bytes,
            max_value,
            stats: Stats::default(),
        }
    }

    /// Bytes held (keys, values, overhead).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached reply of `key` (now the most recently used), counted as a hit or a miss.
    pub fn get(&mut self, key: &[u8]) -> Option<&Cached> {
        match self.entries.get(key) {
            Some(entry) => {
                self.stats.hits += 1;
                Some(&entry.value)
            }
            None => {
                self.stats.misses += 1;
                None
            }
        }
    }

    /// A read of `key` (slot `slot`) is being sent to `addr`: the ticket its reply needs to
    /// be stored, or `None` when it can't be (that node's changes are not heard now, or the
    /// key alone passes the bound). `key` is copied only when a placeholder is made.
    pub fn begin_fill(
        &mut self,
        key: &[u8],
        slot: Slot,
        addr: &NodeAddr,
    ) -> Option<(Bytes, Ticket)> {
        let node = self.nodes.iter().position(|n| n.addr == *addr)?;
        let state = self.nodes.get(node)?;
        if !state.heard || key.len() + ENTRY_OVERHEAD > self.max_bytes {
            return None;
        }
        let ticket = |generation| Ticket {
            generation,
            node: u16::try_from(node).unwrap_or(u16::MAX),
            epoch: state.epoch,
            slot,
        };
        if let Some((key, &generation)) = self.filling.get_key_value(key) {
            // Another read of the key is in flight: either reply may fill it, while nothing
            // invalidated it since the first was sent (later is only stricter).
            return Some((key.clone(), ticket(generation)));
        }
        if self.filling.len() >= MAX_FILLING {
            self.filling.clear();
        }
        self.next_generation += 1;
        let key = Bytes::copy_from_slice(key);
        self.filling.insert(key.clone(), self.next_generation);
        Some((key, ticket(self.next_generation)))
    }

    /// The reply of a read made with `ticket` arrived; `owner` is the slot's primary in the
    /// current slot map. Returns whether it was stored.
    pub fn finish_fill(
        &mut self,
        key: &Bytes,
        ticket: &Ticket,
        owner: Option<&NodeAddr>,
        reply: &[u8],
    ) -> bool {
        // The placeholder is still there; or it was taken by a read of the same generation
        // whose entry nothing invalidated since: this reply, later on the same connection, is
        // at least as new and replaces it (so a client never reads a value older than the
        // last one it read).
        if self.filling.get(key) == Some(&ticket.generation) {
            self.filling.remove(key);
        } else if self
            .entries
            .peek(key)
            .is_none_or(|entry| entry.generation != ticket.generation)
        {
            return false;
        }
        let Some(node) = self.nodes.get(usize::from(ticket.node)) else {
            return false;
        };
        if !node.heard || node.epoch != ticket.epoch || owner != Some(&node.addr) {
            return false;
        }
        let Some(value) = Cached::of_reply(reply, self.max_value) else {
            return false;
        };
        let size = key.len() + value.size() + ENTRY_OVERHEAD;
        if size > self.max_bytes {
            return false;
        }
        let entry = Entry {
            value,
            generation: ticket.generation,
            node: ticket.node,
            slot: ticket.slot,
        };
        if let Some((old_key, old)) = self.entries.push(key.clone(), entry) {
            self.bytes -= old_key.len() + old.value.size() + ENTRY_OVERHEAD;
        }
        self.bytes += size;
        while self.bytes > self.max_bytes {
            let Some((old_key, old)) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= old_key.len() + old.value.size() + ENTRY_OVERHEAD;
            self.stats.evictions += 1;
        }
        true
    }

    /// A read made with `ticket` ended without a reply to store (redirected, failed, its
    /// client gone): its placeholder goes, unless a later read took it over... which has the
    /// same generation and may still store; forgetting it only costs that read its fill.
    pub fn abandon(&mut self, key: &[u8], ticket: &Ticket) {
        if self.filling.get(key) == Some(&ticket.generation) {
            self.filling.remove(key);
        }
    }

    /// These keys changed: their entries go, and no read in flight may store them.
    pub fn invalidate<'k>(&mut self, keys: impl IntoIterator<Item = &'k [u8]>) {
        for key in keys {
            self.filling.remove(key);
            if let Some((key, old)) = self.entries.pop_entry(key) {
                self.bytes -= key.len() + old.value.size() + ENTRY_OVERHEAD;
                self.stats.invalidations += 1;
            }
        }
    }

    /// Everything changed (a flush).
    pub fn invalidate_all(&mut self) {
        self.filling.clear();
        self.stats.invalidations += self.entries.len() as u64;
        self.entries.clear();
        self.bytes = 0;
    }

    /// `addr`'s invalidation connection is established: its changes are heard from now on.
    pub fn node_heard(&mut self, addr: &NodeAddr) {
        match self.nodes.iter_mut().find(|n| n.addr == *addr) {
            Some(node) => node.heard = true,
            None => self.nodes.push(Node {
                addr: addr.clone(),
                heard: true,
                epoch: 0,
            }),
        }
    }

    /// `addr`'s invalidation connection broke (or it is no longer a primary): what it could
    /// have reported may be lost, so its entries go, and reads in flight to it won't store.
    pub fn node_lost(&mut self, addr: &NodeAddr) {
        let Some(index) = self.nodes.iter().position(|n| n.addr == *addr) else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(index) {
            node.heard = false;
            node.epoch += 1;
        }
        self.drop_where(|entry, _| usize::from(entry.node) == index);
    }

    /// The slot map changed: an entry stays only while the node it was read from still owns
    /// its slot (`owner`: the new map's primary of a slot).
    pub fn keep_owned<'m>(&mut self, owner: impl Fn(Slot) -> Option<&'m NodeAddr>) {
        let nodes = std::mem::take(&mut self.nodes);
        self.drop_where(|entry, _| {
            nodes
                .get(usize::from(entry.node))
                .is_none_or(|node| owner(entry.slot) != Some(&node.addr))
        });
        self.nodes = nodes;
    }

    fn drop_where(&mut self, dropped: impl Fn(&Entry, &Bytes) -> bool) {
        let gone: Vec<Bytes> = self
            .entries
            .iter()
            .filter(|(key, entry)| dropped(entry, key))
            .map(|(key, _)| key.clone())
            .collect();
        self.invalidate(gone.iter().map(|k| k.as_ref()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "127.0.0.1:7000";
    const B: &str = "127.0.0.1:7001";

    fn addr(a: &str) -> NodeAddr {
        NodeAddr::from(a)
    }

    fn slot(n: u64) -> Slot {
        Slot::new(n).unwrap()
    }

    fn store() -> Store {
        let mut store = Store::new(10_000, 100);
        store.node_heard(&addr(A));
        store.node_heard(&addr(B));
        store
    }

    /// A read of `key` from A, filled with `reply`.
    fn read(store: &mut Store, key: &str, reply: &[u8]) -> bool {
        let (key, ticket) = store.begin_fill(key.as_bytes(), slot(1), &addr(A)).unwrap();
        store.finish_fill(&key, &ticket, Some(&addr(A)), reply)
    }

    #[test]
    fn replies_that_may_be_cached() {
        let bulk = |s: &'static [u8]| Some(Cached::Bulk(Bytes::from_static(s)));
        let cases: &[(&[u8], Option<Cached>)] = &[
            (b"$3\r\nfoo\r\n", bulk(b"$3\r\nfoo\r\n")),
            (b"$0\r\n\r\n", bulk(b"$0\r\n\r\n")),
            (b"$-1\r\n", Some(Cached::Nil)),
            (b"_\r\n", Some(Cached::Nil)),
            (b"-WRONGTYPE Operation against a key\r\n", None),
            (b"-MOVED 1 127.0.0.1:7001\r\n", None),
            (b":1\r\n", None),
            (b"$3\r\nfo\r\n", None),
            (b"$3\r\nfoo\r\n$1\r\nx\r\n", None),
            (b"$101\r\n", None),
        ];
        for (reply, want) in cases {
            assert_eq!(&Cached::of_reply(reply, 100), want, "{reply:?}");
        }
        let long = format!("$101\r\n{}\r\n", "x".repeat(101));
        assert_eq!(Cached::of_reply(long.as_bytes(), 100), None);
    }

    #[test]
    fn a_filled_read_is_served_until_its_key_changes() {
        let mut store = store();
        assert!(read(&mut store, "k", b"$1\r\nv\r\n"));
        assert_eq!(
            store.get(b"k"),
            Some(&Cached::Bulk(Bytes::from_static(b"$1\r\nv\r\n")))
        );
        assert_eq!(store.bytes(), 1 + 7 + ENTRY_OVERHEAD);
        store.invalidate([b"k".as_slice()]);
        assert_eq!(store.get(b"k"), None);
        assert_eq!(store.bytes(), 0);
        assert_eq!(
            store.stats,
            Stats {
                hits: 1,
                misses: 1,
                invalidations: 1,
                evictions: 0
            }
        );
    }

    /// The race the placeholder exists for: the node's report of a change arrives before the
    /// reply of a read sent earlier, which may hold the old value.
    #[test]
    fn a_reply_that_arrives_after_its_key_was_invalidated_is_not_stored() {
        let mut store = store();
        let (key, ticket) = store.begin_fill(b"k", slot(1), &addr(A)).unwrap();
        store.invalidate([b"k".as_slice()]);
        assert!(!store.finish_fill(&key, &ticket, Some(&addr(A)), b"$3\r\nold\r\n"));
        assert!(store.is_empty());
        // Everything (a flush) counts too.
        let (key, ticket) = store.begin_fill(b"k", slot(1), &addr(A)).unwrap();
        store.invalidate_all();
        assert!(!store.finish_fill(&key, &ticket, Some(&addr(A)), b"$3\r\nold\r\n"));
        // Another key's change does not.
        let (key, ticket) = store.begin_fill(b"k", slot(1), &addr(A)).unwrap();
        store.invalidate([b"other".as_slice()]);
        assert!(store.finish_fill(&key, &ticket, Some(&addr(A)), b"$3\r\nnew\r\n"));
    }

    #[test]
    fn two_reads_in_flight_share_the_placeholder() {
        let mut store = store();
        let (key, first) = store.begin_fill(b"k", slot(1), &addr(A)).unwrap();
        let (_, second) = store.begin_fill(b"k", slot(1), &addr(A)).unwrap();
        assert_eq!(first, second);
        assert!(store.finish_fill(&key, &first, Some(&addr(A)), b"$1\r\na\r\n"));
        // The second reply, sent later on the same connection, replaces the first's.
        assert!(store.finish_fill(&key, &second, Some(&addr(A)), b"$1\r\nb\r\n"));
        assert_eq!(
            store.get(b"k"),
            Some(&Cached::Bulk(Bytes::from_static(b"$1\r\nb\r\n")))
        );
        // Unless the key was invalidated in between.
        let (key, first) = store.begin_fill(b"k2", slot(1), &addr(A)).unwrap();
        let (_, second) = store.begin_fill(b"k2", slot(1), &addr(A)).unwrap();
        assert!(store.finish_fill(&key, &first, Some(&addr(A)), b"$1\r\na\r\n"));
        store.invalidate([b"k2".as_slice()]);
        assert!(!store.finish_fill(&key, &second, Some(&addr(A)), b"$1\r\nb\r\n"));
        // An abandoned read takes its placeholder with it.
        let (key, third) = store.begin_fill(b"j", slot(1), &addr(A)).unwrap();
        store.abandon(&key, &third);
        assert!(!store.finish_fill(&key, &third, Some(&addr(A)), b"$1\r\na\r\n"));
    }

    #[test]
    fn nothing_is_filled_from_a_node_whose_changes_are_not_heard() {
        let mut store = Store::new(10_000, 100);
        // Not heard yet.
        assert!(store.begin_fill(b"k", slot(1), &addr(A)).is_none());
        store.node_heard(&addr(A));
        let (key, ticket) = store.begin_fill(b"k", slot(1), &addr(A)).unwrap();
        // Lost while the read was in flight (even if heard again since).
        store.node_lost(&addr(A));
        store.node_heard(&addr(A));
        assert!(!store.finish_fill(&key, &ticket, Some(&addr(A)), b"$1\r\nv\r\n"));
        // The slot moved to B while in flight.
        let (key, ticket) = store.begin_fill(b"k", slot(1), &addr(A)).unwrap();
        assert!(!store.finish_fill(&key, &ticket, Some(&addr(B)), b"$1\r\nv\r\n"));
    }

    #[test]
    fn a_lost_node_takes_its_entries_and_a_moved_slot_its_own() {
        let mut store = store();
        for (key, slot_n, node) in [("a1", 1, A), ("a2", 2, A), ("b1", 3, B)] {
            let (key, ticket) = store
                .begin_fill(key.as_bytes(), slot(slot_n), &addr(node))
                .unwrap();
            assert!(store.finish_fill(&key, &ticket, Some(&addr(node)), b"$1\r\nv\r\n"));
        }
        // Slot 2 moved to B; the others stay where they were.
        let (a, b) = (addr(A), addr(B));
        store.keep_owned(|s| Some(if s == slot(1) { &a } else { &b }));
        assert!(store.get(b"a1").is_some());
        assert!(store.get(b"a2").is_none());
        assert!(store.get(b"b1").is_some());
        store.node_lost(&addr(B));
        assert!(store.get(b"b1").is_none());
        assert!(store.get(b"a1").is_some());
        assert_eq!(store.stats.invalidations, 2);
        assert_eq!(store.bytes(), 2 + 7 + ENTRY_OVERHEAD);
    }

    #[test]
    fn the_memory_bound_evicts_the_least_recently_used() {
        let size = 2 + 7 + ENTRY_OVERHEAD;
        let mut store = Store::new(3 * size, 100);
        store.node_heard(&addr(A));
        for key in ["k1", "k2", "k3"] {
            assert!(read(&mut store, key, b"$1\r\nv\r\n"));
        }
        assert!(store.get(b"k1").is_some()); // k2 is now the least recently used
        assert!(read(&mut store, "k4", b"$1\r\nv\r\n"));
        assert_eq!(store.bytes(), 3 * size);
        assert!(store.get(b"k2").is_none());
        assert!(store.get(b"k1").is_some());
        assert_eq!(store.stats.evictions, 1);
        // Stored again, a key replaces its entry without counting twice.
        assert!(read(&mut store, "k4", b"$1\r\nw\r\n"));
        assert_eq!((store.len(), store.bytes()), (3, 3 * size));
        // A value over the bound (or over max_value) is not stored.
        let mut small = Store::new(size, 100);
        small.node_heard(&addr(A));
        assert!(!read(&mut small, "k1", b"$2\r\nvv\r\n"));
        assert!(read(&mut small, "k1", b"$1\r\nv\r\n"));
    }
}

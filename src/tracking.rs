//! Client-side caching through the proxy (`CLIENT TRACKING`): who reads which key, and who
//! must hear that it changed.
//!
//! A node tracks the keys a connection read and tells that connection when they change. The
//! proxy's connections are shared by many clients, so the nodes can't say which client read
//! what. Instead, while any client tracks, the proxy holds one connection per primary in
//! broadcast mode (`CLIENT TRACKING ON BCAST`: every changed key of that node, the invalidation
//! feed) and keeps here, as one server would, which client read which key. A change reported by
//! a node reaches the clients that read that key since their last invalidation (default mode)
//! or whose prefixes match it (BCAST mode), at their own connection or the one they redirect
//! to.
//!
//! Keys are remembered when a read is dispatched, not when it is answered: an invalidation
//! that arrives while the read is in flight is then delivered, after the read's reply (the
//! session writes invalidations only between replies), so a client never keeps a value read
//! before a change it was not told about.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::watch;

/// What a client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// These keys changed (or expired, or were evicted).
    Keys(Vec<Bytes>),
    /// Everything: a flush, or the proxy lost sight of a node for a while.
    All,
    /// The client this one redirects to (the id) went away.
    RedirectBroken(u64),
}

/// A client's `CLIENT TRACKING ON` options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub bcast: bool,
    pub prefixes: Vec<Bytes>,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    /// The client that receives this one's invalidations (`None`: itself).
    pub redirect: Option<u64>,
    /// The redirect client went away (told once, shown by `CLIENT TRACKINGINFO`).
    pub broken_redirect: bool,
}

/// The process's tracking state: the table, and the invalidation feed that serves it.
pub struct Tracking {
    state: Mutex<State>,
    /// Whether the feed has a broadcast connection on every primary now: `CLIENT TRACKING
    /// ON` answers once it has, so no change after its reply goes unreported.
    covered: watch::Sender<bool>,
}

struct State {
    table: Table,
    feed_running: bool,
}

impl Tracking {
    pub fn new(max_keys: usize) -> Tracking {
        Tracking {
            state: Mutex::new(State {
                table: Table::new(max_keys),
                feed_running: false,
            }),
            covered: watch::channel(false).0,
        }
    }

    /// The table, locked (briefly: no await while held).
    pub fn table(&self) -> TableGuard<'_> {
        TableGuard(self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A client turned tracking on: true when the feed must be started (the caller starts
    /// it; the next caller is told it runs).
    pub fn feed_needed(&self) -> bool {
        let mut state = self.table().0;
        if state.feed_running || state.table.tracking_clients() == 0 {
            return false;
        }
        state.feed_running = true;
        true
    }

    /// The feed asks whether it may stop: yes once no client tracks (then it is marked
    /// stopped under the same lock, so a client turning tracking on starts a new one).
    pub fn feed_may_stop(&self) -> bool {
        let mut state = self.table().0;
        if state.table.tracking_clients() > 0 {
            return false;
        }
        state.feed_running = false;
        self.covered.send_replace(false);
        true
    }

    pub fn set_covered(&self, covered: bool) {
        self.covered
            .send_if_modified(|now| std::mem::replace(now, covered) != covered);
    }

    pub fn covered(&self) -> watch::Receiver<bool> {
        self.covered.subscribe()
    }
}

/// [`Tracking::table`]: the locked table.
pub struct TableGuard<'a>(MutexGuard<'a, State>);

impl std::ops::Deref for TableGuard<'_> {
    type Target = Table;
    fn deref(&self) -> &Table {
        &self.0.table
    }
}

impl std::ops::DerefMut for TableGuard<'_> {
    fn deref_mut(&mut self) -> &mut Table {
        &mut self.0.table
    }
}

/// One delivery: `to` (the client itself or its redirect) gets `what`, on behalf of `from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub from: u64,
    pub to: u64,
    pub what: Invalidation,
}

/// Which clients track, and which keys each default-mode client read.
#[derive(Debug)]
pub struct Table {
    clients: HashMap<u64, Options>,
    /// Key → the default-mode clients that read it since its last invalidation. Entries of
    /// clients that stopped tracking are dropped when the key is next invalidated.
    keys: HashMap<Bytes, Vec<u64>>,
    /// At most this many keys are remembered; past it the oldest-looking entry is invalidated
    /// at once (as Redis's `tracking-table-max-keys`).
    max_keys: usize,
}

impl Table {
    pub fn new(max_keys: usize) -> Table {
        Table {
            clients: HashMap::new(),
            keys: HashMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    pub fn tracking_clients(&self) -> usize {
        self.clients.len()
    }

    pub fn remembered_keys(&self) -> usize {
        self.keys.len()
    }

    pub fn options(&self, id: u64) -> Option<&Options> {
        self.clients.get(&id)
    }

    /// The client turns tracking on, or changes its options while on.
    pub fn start(&mut self, id: u64, options: Options) {
        self.clients.insert(id, options);
    }

    /// The client turns tracking off (or went away).
    pub fn stop(&mut self, id: u64) {
        self.clients.remove(&id);
    }

    /// Clients that redirect to `target`.
    pub fn redirecting_to(&self, target: u64) -> Vec<u64> {
        self.clients
            .iter()
            .filter(|(_, o)| o.redirect == Some(target))
            .map(|(id, _)| *id)
            .collect()
    }

    /// `id` read `keys` (default mode). Returns what must be delivered to make room.
    pub fn remember<'k>(
        &mut self,
        id: u64,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Vec<Delivery> {
        if self.clients.get(&id).is_none_or(|o| o.bcast) {
            return Vec::new();
        }
        for key in keys {
            match self.keys.get_mut(key) {
                Some(readers) if readers.contains(&id) => {}
                Some(readers) => readers.push(id),
                None => {
                    self.keys.insert(Bytes::copy_from_slice(key), vec![id]);
                }
            }
        }
        let mut made_room = Vec::new();
        while self.keys.len() > self.max_keys {
            let Some(key) = self.keys.keys().next().cloned() else {
                break;
            };
            made_room.extend(self.invalidate_keys(&[key], false));
        }
        made_room
    }

    /// A node reported these keys changed: each reader (default mode) is told once and
    /// forgets the key; BCAST clients are told of the keys their prefixes match.
    pub fn invalidate(&mut self, keys: &[Bytes]) -> Vec<Delivery> {
        self.invalidate_keys(keys, true)
    }

    fn invalidate_keys(&mut self, keys: &[Bytes], broadcast: bool) -> Vec<Delivery> {
        let mut per_client: HashMap<u64, Vec<Bytes>> = HashMap::new();
        for key in keys {
            for reader in self.keys.remove(key).unwrap_or_default() {
                if self.clients.get(&reader).is_some_and(|o| !o.bcast) {
                    per_client.entry(reader).or_default().push(key.clone());
                }
            }
        }
        if broadcast {
            for (id, options) in &self.clients {
                if !options.bcast {
                    continue;
                }
                let matching: Vec<Bytes> = keys
                    .iter()
                    .filter(|key| {
                        options.prefixes.is_empty()
                            || options.prefixes.iter().any(|p| key.starts_with(p))
                    })
                    .cloned()
                    .collect();
                if !matching.is_empty() {
                    per_client.entry(*id).or_default().extend(matching);
                }
            }
        }
        let mut deliveries: Vec<Delivery> = per_client
            .into_iter()
            .map(|(from, keys)| Delivery {
                from,
                to: self.recipient(from),
                what: Invalidation::Keys(keys),
            })
            .collect();
        deliveries.sort_by_key(|d| d.from);
        deliveries
    }

    /// Everything is invalid (a flush, or a node the feed lost): every tracking client is
    /// told, and nothing stays remembered.
    pub fn invalidate_all(&mut self) -> Vec<Delivery> {
        self.keys.clear();
        let mut deliveries: Vec<Delivery> = self
            .clients
            .keys()
            .map(|&from| Delivery {
                from,
                to: self.recipient(from),
                what: Invalidation::All,
            })
            .collect();
        deliveries.sort_by_key(|d| d.from);
        deliveries
    }

    /// The redirect client of `id` is gone: true the first time (then `id` is told).
    pub fn mark_broken(&mut self, id: u64) -> bool {
        match self.clients.get_mut(&id) {
            Some(options) if !options.broken_redirect => {
                options.broken_redirect = true;
                true
            }
            _ => false,
        }
    }

    fn recipient(&self, id: u64) -> u64 {
        self.clients.get(&id).and_then(|o| o.redirect).unwrap_or(id)
    }
}

/// `CLIENT TRACKING ON` prefixes that overlap (one starts with another), in Redis's words;
/// `existing` are the client's prefixes so far.
pub fn prefix_collision(existing: &[Bytes], new: &[Bytes]) -> Option<String> {
    let overlap = |a: &[u8], b: &[u8]| a.starts_with(b) || b.starts_with(a);
    for (i, prefix) in new.iter().enumerate() {
        if let Some(old) = existing.iter().find(|old| overlap(old, prefix)) {
            return Some(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                String::from_utf8_lossy(prefix),
                String::from_utf8_lossy(old)
            ));
        }
        if let Some(other) = new.iter().skip(i + 1).find(|other| overlap(other, prefix)) {
            return Some(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                String::from_utf8_lossy(prefix),
                String::from_utf8_lossy(other)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn keys(list: &[&str]) -> Invalidation {
        Invalidation::Keys(list.iter().map(|k| b(k)).collect())
    }

    fn delivery(from: u64, to: u64, what: Invalidation) -> Delivery {
        Delivery { from, to, what }
    }

    #[test]
    fn readers_are_told_once_per_read() {
        let mut table = Table::new(100);
        table.start(1, Options::default());
        table.start(2, Options::default());
        assert!(table.remember(1, [b"a".as_slice(), b"b"]).is_empty());
        assert!(table.remember(2, [b"a".as_slice()]).is_empty());
        assert_eq!(
            table.invalidate(&[b("a")]),
            vec![delivery(1, 1, keys(&["a"])), delivery(2, 2, keys(&["a"]))]
        );
        // Told once: a second change of `a` reaches nobody until it is read again.
        assert_eq!(table.invalidate(&[b("a")]), vec![]);
        assert_eq!(
            table.invalidate(&[b("b"), b("c")]),
            vec![delivery(1, 1, keys(&["b"]))]
        );
        assert_eq!(table.remembered_keys(), 0);
    }

    #[test]
    fn broadcast_clients_hear_their_prefixes_and_redirects_are_followed() {
        let mut table = Table::new(100);
        table.start(
            1,
            Options {
                bcast: true,
                prefixes: vec![b("user:"), b("cart:")],
                ..Options::default()
            },
        );
        table.start(
            2,
            Options {
                bcast: true,
                redirect: Some(9),
                ..Options::default()
            },
        );
        table.start(
            3,
            Options {
                redirect: Some(9),
                ..Options::default()
            },
        );
        // A BCAST client's reads are not remembered.
        assert!(table.remember(1, [b"user:1".as_slice()]).is_empty());
        assert!(table.remember(3, [b"other".as_slice()]).is_empty());
        assert_eq!(
            table.invalidate(&[b("user:1"), b("other"), b("cart:7")]),
            vec![
                delivery(1, 1, keys(&["user:1", "cart:7"])),
                delivery(2, 9, keys(&["user:1", "other", "cart:7"])),
                delivery(3, 9, keys(&["other"])),
            ]
        );
    }

    #[test]
    fn stopped_clients_and_flushes() {
        let mut table = Table::new(100);
        table.start(1, Options::default());
        table.start(2, Options::default());
        table.remember(1, [b"a".as_slice()]);
        table.remember(2, [b"a".as_slice()]);
        table.stop(2);
        assert_eq!(
            table.invalidate(&[b("a")]),
            vec![delivery(1, 1, keys(&["a"]))]
        );
        table.remember(1, [b"x".as_slice()]);
        assert_eq!(
            table.invalidate_all(),
            vec![delivery(1, 1, Invalidation::All)]
        );
        assert_eq!(table.remembered_keys(), 0);
        // Not tracking: nothing is remembered.
        assert!(table.remember(2, [b"a".as_slice()]).is_empty());
        assert_eq!(table.remembered_keys(), 0);
    }

    #[test]
    fn a_full_table_invalidates_to_make_room() {
        let mut table = Table::new(2);
        table.start(1, Options::default());
        assert!(table.remember(1, [b"a".as_slice(), b"b"]).is_empty());
        let made_room = table.remember(1, [b"c".as_slice()]);
        assert_eq!(made_room.len(), 1);
        assert_eq!(table.remembered_keys(), 2);
    }

    #[test]
    fn overlapping_prefixes_are_refused_in_redis_words() {
        assert_eq!(prefix_collision(&[], &[b("a"), b("b")]), None);
        assert_eq!(
            prefix_collision(&[b("user:")], &[b("user:1")]),
            Some("ERR Prefix 'user:1' overlaps with an existing prefix 'user:'. Prefixes for a single client must not overlap.".into())
        );
        assert_eq!(
            prefix_collision(&[], &[b("ab"), b("a")]),
            Some("ERR Prefix 'ab' overlaps with another provided prefix 'a'. Prefixes for a single client must not overlap.".into())
        );
    }
}

//! The near cache (`[near_cache]`, off by default): `GET` replies of keys under the configured
//! prefixes kept in the proxy's memory, so a repeated read is answered without the hop to the
//! cluster. What it owns: deciding which commands it answers, filling it from replies, and
//! invalidating it. The memory itself is [`store`]; the nodes' reports are [`feed`].
//!
//! **One cache per worker.** Workers are single-threaded and share nothing on the request
//! path, so each has its own cache (a `RefCell`, no lock; `max_memory` is split evenly) and
//! its own invalidation connection to each primary, read on the worker's own thread: a
//! report is applied as soon as that worker reads it, with no hand-off between threads. The
//! price is that each worker fills its own cache, and N workers hold N connections per
//! primary (a sidecar runs one or two workers). The client-tracking feed
//! (`super::invalidation_feed`) is process-wide, runs only while a client tracks, listens to
//! every key and feeds a locked table; the near cache shares its connection code
//! (`FeedConnection`) but not its connections: different prefixes, lifetime and consumers.
//!
//! **What is answered from the cache**: a plain top-level `GET key` whose key starts with a
//! configured prefix and whose plan is one request to the slot's owner. Not: anything queued
//! in `MULTI` (it is queued before this point), scripts, other commands, and commands of a
//! client with `CLIENT TRACKING` on (the process-wide feed may already have told it of a
//! change this worker's feed has not read yet; its cache would then keep the old value). A
//! hit is the stored reply (`$n\r\nvalue\r\n`, the same in RESP2 and RESP3; a missing key is
//! cached too and answered `$-1` or `_` in the client's protocol).
//!
//! **When a reply is stored** (the rules, each for a race):
//! - Only replies from a primary whose invalidation connection was acknowledged (`CLIENT
//!   TRACKING ON BCAST PREFIX ...` answered `OK`) before the read was sent, and has not broken
//!   since: every change after the acknowledgement is reported, so none made after the read
//!   can go unheard.
//! - A read takes a placeholder for its key when it is sent; an invalidation of the key (or of
//!   everything) removes it; the reply is stored only if the placeholder is still there. The
//!   report and the reply travel on different connections, so a report of a change made after
//!   the read ran may arrive before the read's (old) reply: the placeholder catches exactly
//!   that (the "caching in progress" marker of Redis's client-side caching guidance).
//! - Only if the slot's primary is still the node that answered, in the current slot map;
//!   reads that went to a replica (`read_from`) are not stored (a replica may lag behind the
//!   reports of its primary).
//!
//! **When entries go**: the key's report arrives (`invalidate`); a flush is reported as
//! everything; a node's invalidation connection breaks or falls silent (no `PING` answer for
//! 3 s): that node's entries; a primary leaves the slot map: its entries; the slot map
//! changes: entries whose slot's primary is no longer the node they came from; a write
//! through this proxy (any command flagged `write` or `may_replicate`, scripts and functions
//! but their `_RO` forms, `EXEC` of a transaction with such commands, `FLUSHALL`/`FLUSHDB`):
//! its keys (everything for a flush) when it is dispatched and again when its reply arrives,
//! so a client reads its own write whatever connection the write took (a transaction's, a
//! script's) and whichever read filled the cache meanwhile; past `max_memory`, the least
//! recently used.
//!
//! What stays out of reach: read-your-writes across workers (a write on a connection served
//! by another worker is seen once the node's report reaches this worker, as a write through
//! another proxy); a script that writes keys it did not declare (the node's report still
//! invalidates them, within the report's delay); a value changed while the proxy can't hear
//! its node but the node is still reachable (the heartbeat bounds that to 3 s); a slot that
//! moves away and back between two reads of this worker while the node it visited was not
//! yet heard.

pub mod feed;
pub mod store;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use metrics::{Counter, Gauge};

use super::driver::{Settled, Target};
use super::plan::Send;
use super::reply::Reply;
use super::session::ClientState;
use super::transaction::TxState;
use crate::backend::NodeAddr;
use crate::cluster::topology::Topology;
use crate::cluster::{Slot, SlotMap};
use crate::command::route::{Route, Script, SessionCommand};
use crate::command::{CommandSpec, CommandTable};
use crate::resp::{Command, Protocol};
use crate::shared::NearCacheTotals;
use store::{Cached, Stats, Store, Ticket};

/// A worker's near cache (shared with its RESP3 twin: same thread, same cache).
pub struct NearCache {
    store: RefCell<Store>,
    prefixes: Vec<Bytes>,
    topology: Arc<Topology>,
    /// The slot map the entries were last checked against (held, so its address can't be
    /// reused by a later map).
    seen_map: RefCell<Option<Arc<SlotMap>>>,
    folded: Cell<(Stats, usize, usize)>,
    metrics: Metrics,
}

struct Metrics {
    hits: Counter,
    misses: Counter,
    invalidations: Counter,
    evictions: Counter,
    bytes: Gauge,
    entries: Gauge,
}

/// What the cache says about a command.
pub enum Read {
    /// The reply, from memory.
    Hit(Bytes),
    /// A cacheable read that missed: send it, then [`Miss::attach`] its reply.
    Miss(Miss),
    /// Not the cache's business.
    Pass,
}

impl NearCache {
    /// The cache of one worker of `workers`, or `None` when it is off.
    pub fn new(
        config: &crate::config::NearCache,
        workers: usize,
        topology: Arc<Topology>,
    ) -> Option<Rc<NearCache>> {
        if !config.enabled {
            return None;
        }
        let max_bytes = config.max_memory / workers.max(1);
        Some(Rc::new(NearCache {
            store: RefCell::new(Store::new(max_bytes, config.max_value_size)),
            prefixes: config
                .prefixes
                .iter()
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect(),
            topology,
            seen_map: RefCell::new(None),
            folded: Cell::new((Stats::default(), 0, 0)),
            metrics: Metrics {
                hits: metrics::counter!("slotproxy_near_cache_hits_total"),
                misses: metrics::counter!("slotproxy_near_cache_misses_total"),
                invalidations: metrics::counter!("slotproxy_near_cache_invalidations_total"),
                evictions: metrics::counter!("slotproxy_near_cache_evictions_total"),
                bytes: metrics::gauge!("slotproxy_near_cache_bytes"),
                entries: metrics::gauge!("slotproxy_near_cache_entries"),
            },
        }))
    }

    /// The prefixes the nodes report changes of.
    pub fn prefixes(&self) -> &[Bytes] {
        &self.prefixes
    }

    fn covers(&self, key: &[u8]) -> bool {
        self.prefixes.iter().any(|p| key.starts_with(p))
    }

    /// The hot path: a `GET` of a covered key answered from memory, or marked to fill.
    pub fn read(
        self: &Rc<Self>,
        client: &ClientState,
        map: &SlotMap,
        spec: &CommandSpec,
        cmd: &Command,
        send: &Send,
    ) -> Read {
        let Target::Slot(slot) = send.target else {
            return Read::Pass;
        };
        if spec.name != "get" || client.tracking.is_some() {
            return Read::Pass;
        }
        let Some(key) = cmd.arg(1).filter(|key| self.covers(key)) else {
            return Read::Pass;
        };
        self.check_map(map);
        let mut store = self.store.borrow_mut();
        match store.get(key) {
            Some(Cached::Bulk(reply)) => Read::Hit(reply.clone()),
            Some(Cached::Nil) => Read::Hit(Bytes::from_static(match client.protocol {
                Protocol::Resp2 => b"$-1\r\n",
                Protocol::Resp3 => b"_\r\n",
            })),
            None => Read::Miss(Miss {
                cache: self.clone(),
                key: cmd.arg_bytes(1).unwrap_or_default(),
                slot,
            }),
        }
    }

    /// Entries whose slot changed hands since the last look go, before anything is served.
    fn check_map(&self, map: &SlotMap) {
        let same = self
            .seen_map
            .borrow()
            .as_ref()
            .is_some_and(|seen| std::ptr::eq(Arc::as_ptr(seen), map));
        if same {
            return;
        }
        let newest = self.topology.map().clone();
        let previous = self.seen_map.replace(Some(newest.clone()));
        // Every refresh publishes a new map, mostly the same routing: the entries are walked
        // only when some slot's primary changed.
        let moved = previous.is_none_or(|previous| {
            (0..crate::cluster::SLOT_COUNT as u64)
                .filter_map(Slot::new)
                .any(|slot| previous.primary(slot) != newest.primary(slot))
        });
        if moved {
            self.store
                .borrow_mut()
                .keep_owned(|slot| newest.primary(slot));
        }
    }

    /// A command about to run: if it writes keys the cache covers, they are invalidated now
    /// and the returned [`Written`] invalidates them again when the reply arrives.
    /// `tx`: the client's transaction (EXEC's keys are those of the commands it queued).
    pub fn written(
        self: &Rc<Self>,
        table: &CommandTable,
        spec: &CommandSpec,
        cmd: &Command,
        tx: &TxState,
    ) -> Option<Written> {
        let keys = if spec.route == Route::Session(SessionCommand::Exec) {
            let mut keys = Vec::new();
            for queued in tx.queued_commands() {
                if let Some(spec) = table.lookup(queued) {
                    match self.written_keys(spec, queued) {
                        Some(None) => return Some(self.invalidate_now(None)),
                        Some(Some(mut more)) => keys.append(&mut more),
                        None => {}
                    }
                }
            }
            (!keys.is_empty()).then_some(Some(keys))?
        } else {
            self.written_keys(spec, cmd)?
        };
        Some(self.invalidate_now(keys))
    }

    /// A command queued in MULTI that writes: its keys are invalidated now (and again after
    /// EXEC, see [`Self::written`]).
    pub fn queued(&self, spec: &CommandSpec, cmd: &Command) {
        if let Some(keys) = self.written_keys(spec, cmd) {
            self.invalidate(keys.as_deref());
        }
    }

    /// The covered keys `cmd` writes: `None` if none; `Some(None)` for everything (a flush).
    fn written_keys(&self, spec: &CommandSpec, cmd: &Command) -> Option<Option<Vec<Bytes>>> {
        // Scripts and functions may write their declared keys whatever their flags say
        // (Redis 7.0 does not flag EVAL `may_replicate`); the `_ro` forms can't.
        let script = matches!(
            spec.route,
            Route::Script(Script::Eval | Script::EvalSha | Script::Function)
        ) && !spec.name.ends_with("_ro");
        if !(spec.is_write() || spec.may_replicate() || script) {
            return None;
        }
        if spec.name == "flushall" || spec.name == "flushdb" {
            return Some(None);
        }
        let mut indices = Vec::new();
        spec.key_indices(cmd, &mut indices);
        let keys: Vec<Bytes> = indices
            .into_iter()
            .filter_map(|i| cmd.arg_bytes(i))
            .filter(|key| self.covers(key))
            .collect();
        (!keys.is_empty()).then_some(Some(keys))
    }

    fn invalidate_now(self: &Rc<Self>, keys: Option<Vec<Bytes>>) -> Written {
        self.invalidate(keys.as_deref());
        Written {
            cache: self.clone(),
            keys,
        }
    }

    /// `None`: everything.
    fn invalidate(&self, keys: Option<&[Bytes]>) {
        let mut store = self.store.borrow_mut();
        match keys {
            Some(keys) => store.invalidate(keys.iter().map(|k| k.as_ref())),
            None => store.invalidate_all(),
        }
    }

    /// The nodes reported these keys changed.
    pub fn invalidate_keys(&self, keys: &[Bytes]) {
        self.invalidate(Some(keys));
    }

    /// A flush was reported.
    pub fn invalidate_all(&self) {
        self.invalidate(None);
    }

    pub fn node_heard(&self, addr: &NodeAddr) {
        self.store.borrow_mut().node_heard(addr);
    }

    pub fn node_lost(&self, addr: &NodeAddr) {
        self.store.borrow_mut().node_lost(addr);
    }

    /// Moves the counts since the last fold into the metrics and `totals` (the proxy's).
    pub fn fold(&self, totals: &NearCacheTotals) {
        let store = self.store.borrow();
        let (now, bytes, len) = (store.stats, store.bytes(), store.len());
        let (before, before_bytes, before_len) = self.folded.replace((now, bytes, len));
        let m = &self.metrics;
        let counts = [
            (&m.hits, &totals.hits, now.hits - before.hits),
            (&m.misses, &totals.misses, now.misses - before.misses),
            (
                &m.invalidations,
                &totals.invalidations,
                now.invalidations - before.invalidations,
            ),
            (
                &m.evictions,
                &totals.evictions,
                now.evictions - before.evictions,
            ),
        ];
        for (counter, total, delta) in counts {
            counter.increment(delta);
            total.fetch_add(delta, Ordering::Relaxed);
        }
        let bytes_delta = bytes as i64 - before_bytes as i64;
        let len_delta = len as i64 - before_len as i64;
        m.bytes.increment(bytes_delta as f64);
        m.entries.increment(len_delta as f64);
        totals.bytes.fetch_add(bytes_delta, Ordering::Relaxed);
        totals.entries.fetch_add(len_delta, Ordering::Relaxed);
    }

    /// Counts and size now: `(stats, bytes, entries)`.
    pub fn snapshot(&self) -> (Stats, usize, usize) {
        let store = self.store.borrow();
        (store.stats, store.bytes(), store.len())
    }
}

impl Drop for NearCache {
    /// The gauges are the process's (tests run several proxies): a cache that goes takes its
    /// share with it.
    fn drop(&mut self) {
        let (_, bytes, len) = self.folded.get();
        self.metrics.bytes.decrement(bytes as f64);
        self.metrics.entries.decrement(len as f64);
    }
}

/// A cacheable read that missed, before it is sent.
pub struct Miss {
    cache: Rc<NearCache>,
    key: Bytes,
    slot: Slot,
}

impl Miss {
    /// The read's reply-to-be, which fills the cache when it arrives, if it may (a request in
    /// flight to a primary whose changes are heard; not a deferred or redirected one).
    pub fn attach(self, reply: Reply) -> Reply {
        let Reply::InFlight(mut in_flight) = reply else {
            return reply;
        };
        if in_flight.on_replica() {
            return Reply::InFlight(in_flight);
        }
        let begun =
            self.cache
                .store
                .borrow_mut()
                .begin_fill(&self.key, self.slot, in_flight.addr());
        if let Some((key, ticket)) = begun {
            in_flight.on_reply(Box::new(OnReply::Fill(Fill {
                cache: self.cache,
                key,
                ticket: Some(ticket),
            })));
        }
        Reply::InFlight(in_flight)
    }
}

/// What the cache does when a request's reply arrives (see `InFlight::on_reply`).
pub enum OnReply {
    Fill(Fill),
    Invalidate(Written),
}

impl OnReply {
    /// The request settled as `settled`; returns it, after the cache did its part.
    pub fn settled(self, settled: Settled) -> Settled {
        match (self, settled) {
            (OnReply::Fill(mut fill), Settled::Final(bytes)) => {
                fill.store(&bytes);
                Settled::Final(bytes)
            }
            // Redirected or failed: not stored (dropping the fill forgets its placeholder).
            (OnReply::Fill(_), settled) => settled,
            (OnReply::Invalidate(written), Settled::Final(bytes)) => {
                written.apply();
                Settled::Final(bytes)
            }
            (OnReply::Invalidate(written), Settled::Retry(future)) => {
                Settled::Retry(Box::pin(async move {
                    let reply = future.await;
                    written.apply();
                    reply
                }))
            }
        }
    }
}

/// A read in flight that may fill its key.
pub struct Fill {
    cache: Rc<NearCache>,
    key: Bytes,
    ticket: Option<Ticket>,
}

impl Fill {
    fn store(&mut self, reply: &[u8]) {
        if let Some(ticket) = self.ticket.take() {
            let owner = self.cache.topology.map().primary(ticket.slot).cloned();
            self.cache
                .store
                .borrow_mut()
                .finish_fill(&self.key, &ticket, owner.as_ref(), reply);
        }
    }
}

impl Drop for Fill {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            if let Ok(mut store) = self.cache.store.try_borrow_mut() {
                store.abandon(&self.key, &ticket);
            }
        }
    }
}

/// A write through this proxy to covered keys (`None`: everything), invalidated when it is
/// dispatched and again when its reply arrives.
pub struct Written {
    cache: Rc<NearCache>,
    keys: Option<Vec<Bytes>>,
}

impl Written {
    fn apply(&self) {
        self.cache.invalidate(self.keys.as_deref());
    }

    /// `reply` (the write's), invalidating its keys again once it is complete.
    pub fn after(self, reply: Reply) -> Reply {
        match reply {
            Reply::Ready(bytes) => {
                self.apply();
                Reply::Ready(bytes)
            }
            Reply::InFlight(mut in_flight) => {
                in_flight.on_reply(Box::new(OnReply::Invalidate(self)));
                Reply::InFlight(in_flight)
            }
            Reply::Later(future) => Reply::Later(Box::pin(async move {
                let reply = future.await;
                self.apply();
                reply
            })),
            Reply::Parked(future) => Reply::Parked(Box::pin(async move {
                let reply = future.await;
                self.apply();
                reply
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::connect::Credentials;

    const NODE: &str = "127.0.0.1:7000";

    fn cache() -> Rc<NearCache> {
        let config = crate::config::NearCache {
            enabled: true,
            prefixes: vec!["user:".into()],
            ..crate::config::NearCache::default()
        };
        let topology = Arc::new(Topology::new(
            Vec::new(),
            Credentials::default(),
            Duration::from_millis(10),
        ));
        let cache = NearCache::new(&config, 1, topology).unwrap();
        cache.node_heard(&NodeAddr::from(NODE));
        cache
    }

    /// Stores `key` as if a read of it had been answered `v`.
    fn fill(cache: &NearCache, key: &str) {
        let mut store = cache.store.borrow_mut();
        let (key, ticket) = store
            .begin_fill(key.as_bytes(), Slot::new(1).unwrap(), &NodeAddr::from(NODE))
            .unwrap();
        let node = NodeAddr::from(NODE);
        assert!(store.finish_fill(&key, &ticket, Some(&node), b"$1\r\nv\r\n"));
    }

    fn cached(cache: &NearCache, key: &str) -> bool {
        cache.store.borrow_mut().get(key.as_bytes()).is_some()
    }

    fn cmd(args: &[&str]) -> Command {
        Command::from_args(args)
    }

    /// What a command through the proxy does to the cached keys when it is dispatched.
    #[test]
    fn writes_through_the_proxy_drop_their_covered_keys() {
        let table = CommandTable::builtin();
        let tx = TxState::default();
        let cases: &[(&[&str], &[&str])] = &[
            // (command, keys still cached afterwards, of user:a user:b)
            (&["GET", "user:a"], &["user:a", "user:b"]),
            (&["SET", "user:a", "1"], &["user:b"]),
            (&["DEL", "user:a", "user:b"], &[]),
            (&["MSET", "user:b", "1", "other", "2"], &["user:a"]),
            (&["EXPIRE", "user:a", "10"], &["user:b"]),
            (&["EVAL", "return 1", "1", "user:b"], &["user:a"]),
            (&["FCALL", "f", "1", "user:a"], &["user:b"]),
            (
                &["EVAL_RO", "return 1", "1", "user:b"],
                &["user:a", "user:b"],
            ),
            (&["SET", "other", "1"], &["user:a", "user:b"]),
            (&["PUBLISH", "user:a", "m"], &["user:a", "user:b"]),
            (&["FLUSHALL"], &[]),
            (&["FLUSHDB", "ASYNC"], &[]),
        ];
        for (args, kept) in cases {
            let cache = cache();
            fill(&cache, "user:a");
            fill(&cache, "user:b");
            let command = cmd(args);
            let spec = table.lookup(&command).unwrap();
            let written = cache.written(table, spec, &command, &tx);
            let still: Vec<&str> = ["user:a", "user:b"]
                .into_iter()
                .filter(|k| cached(&cache, k))
                .collect();
            assert_eq!(&still, kept, "{args:?}");
            assert_eq!(written.is_some(), still.len() < 2, "{args:?}");
        }
    }

    /// A value read while the write was on its way is dropped again when the write's reply
    /// arrives (the write may have run after that read on another connection).
    #[tokio::test(flavor = "current_thread")]
    async fn a_write_drops_its_keys_again_when_answered() {
        let cache = cache();
        let table = CommandTable::builtin();
        let command = cmd(&["SET", "user:a", "2"]);
        let spec = table.lookup(&command).unwrap();
        let written = cache
            .written(table, spec, &command, &TxState::default())
            .unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<Bytes>();
        let reply = written.after(Reply::later(async move { rx.await.unwrap_or_default() }));
        fill(&cache, "user:a");
        assert!(cached(&cache, "user:a"));
        tx.send(Bytes::from_static(b"+OK\r\n")).unwrap();
        let Reply::Later(future) = reply else {
            panic!("a later reply stays later");
        };
        assert_eq!(future.await, Bytes::from_static(b"+OK\r\n"));
        assert!(!cached(&cache, "user:a"));
    }
}

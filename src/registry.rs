//! Every client connected to the proxy, across all workers: what `CLIENT LIST`, `CLIENT KILL`
//! and `CLIENT UNBLOCK` see, and the server-wide `CLIENT PAUSE`.
//!
//! A client is entered at connect and removed at disconnect (the only times the map is
//! locked by a session). While it runs, the session updates its [`ClientEntry`] only with
//! relaxed atomic stores (last command, last interaction) and, for rare events (a name, a
//! subscription, a blocked command), a small per-client lock nobody else holds on the hot
//! path. Formatting lines and matching `CLIENT KILL` filters happen here; deciding what a
//! command means is dispatch's business.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::backend::NodeAddr;
use crate::tracking::Invalidation;

/// How often [`Registry::recent_ms`] moves on.
pub const CLOCK_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// The proxy's clients, by id (so `CLIENT LIST` is in connection order, as in Redis).
pub struct Registry {
    clients: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
    /// The clock every entry's times count from.
    epoch: Instant,
    /// [`Registry::now_ms`] as of the clock's last tick (0 before the first), for the time of
    /// a client's last interaction, which every request records.
    recent_ms: AtomicU64,
    /// The client listener's address (`laddr=`): every worker listens on the same one.
    local_addr: OnceLock<SocketAddr>,
    /// `CLIENT PAUSE`, server-wide.
    pub pause: Pause,
    /// The proxy is shutting down: every session, and every one that registers from now on,
    /// stops reading (see [`Registry::shut_down`]).
    shutting_down: AtomicBool,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            clients: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
            recent_ms: AtomicU64::new(0),
            local_addr: OnceLock::new(),
            pause: Pause::default(),
            shutting_down: AtomicBool::new(false),
        }
    }
}

impl Registry {
    /// Enters a new client; it leaves the registry when the returned handle is dropped.
    /// `laddr`, `fd`: the proxy's end of the connection, where known.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        addr: SocketAddr,
        laddr: Option<SocketAddr>,
        fd: i32,
    ) -> Registration {
        let now = self.now_ms();
        let entry = Arc::new(ClientEntry {
            id,
            addr,
            laddr,
            fd,
            created_ms: now,
            last_interaction_ms: AtomicU64::new(now),
            last_cmd: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            subs: [AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)],
            multi: AtomicI64::new(-1),
            resp: AtomicU8::new(2),
            killed: AtomicBool::new(false),
            kill_waker: AtomicWaker::new(),
            inbox: Mutex::new(Vec::new()),
            inbox_full: AtomicBool::new(false),
            stop_reading: AtomicBool::new(false),
            details: Mutex::new(None),
        });
        lock(&self.clients).insert(id, entry.clone());
        // After the insert: a shutdown that began before it is seen here, one that begins
        // after it finds the entry (`shut_down` sets the flag before it takes the lock).
        if self.shutting_down.load(Ordering::SeqCst) {
            entry.stop_reading();
        }
        Registration {
            registry: self.clone(),
            entry,
        }
    }

    /// Shutdown: every session stops reading, answers what it was sent, then closes. Told
    /// through each client's attention waker, which its session polls anyway, rather than a
    /// cancellation future every session would poll on every turn (about 340 instructions per
    /// request at `-P 1`, callgrind). Idempotent (each worker calls it).
    pub fn shut_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for entry in lock(&self.clients).values() {
            entry.stop_reading();
        }
    }

    /// Remembers the client listener's address (the first call wins: all workers share it).
    pub fn set_local_addr(&self, addr: SocketAddr) {
        let _ = self.local_addr.set(addr);
    }

    /// The client `id`, unless it is gone (or killed: its session may still be closing).
    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        lock(&self.clients)
            .get(&id)
            .filter(|e| !e.is_killed())
            .cloned()
    }

    /// Every client now, in id order (killed ones are gone at once, as in Redis).
    pub fn all(&self) -> Vec<Arc<ClientEntry>> {
        lock(&self.clients)
            .values()
            .filter(|e| !e.is_killed())
            .cloned()
            .collect()
    }

    /// Milliseconds since the registry was made: the clock of every entry's times.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// [`Registry::now_ms`] at most [`CLOCK_TICK`] ago (exact before the clock first ticks).
    /// A clock read on every request cost about 70 instructions at `-P 1` (callgrind) and a
    /// vDSO call; `idle=` is shown in seconds, and Redis too stamps a client's last
    /// interaction with a cached time.
    pub fn recent_ms(&self) -> u64 {
        match self.recent_ms.load(Ordering::Relaxed) {
            0 => self.now_ms(),
            ms => ms,
        }
    }

    /// Keeps [`Registry::recent_ms`] current until `stop` is cancelled (on the control
    /// thread).
    pub async fn run_clock(&self, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(CLOCK_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.recent_ms
                .store(self.now_ms().max(1), Ordering::Relaxed);
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
        }
    }

    /// One `CLIENT LIST` line (with its `\n`); `cmd`: the name of its last command.
    pub fn line(&self, entry: &ClientEntry, cmd: &str) -> String {
        let now = self.now_ms();
        let details = entry.snapshot();
        let laddr = self
            .laddr_of(entry)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let shown = |b: &Option<Bytes>| {
            String::from_utf8_lossy(b.as_deref().unwrap_or_default()).into_owned()
        };
        let mut line = String::with_capacity(320);
        // Redis 7.0's fields in its order (7.2's lib-name/lib-ver last). What a proxy can't
        // know the way a server does (its buffers, its socket) gets the value of an idle
        // client: empty buffers, `events=r`.
        let _ = writeln!(
            line,
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db=0 sub={} psub={} ssub={} multi={} \
qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir={} resp={} lib-name={} lib-ver={}",
            entry.id,
            entry.addr,
            laddr,
            entry.fd,
            shown(&details.name),
            now.saturating_sub(entry.created_ms) / 1000,
            now.saturating_sub(entry.last_interaction_ms.load(Ordering::Relaxed)) / 1000,
            entry.flag_letters(),
            entry.subs[0].load(Ordering::Relaxed),
            entry.subs[1].load(Ordering::Relaxed),
            entry.subs[2].load(Ordering::Relaxed),
            entry.multi.load(Ordering::Relaxed),
            cmd,
            details.user.as_deref().unwrap_or("default"),
            match entry.flags.load(Ordering::Relaxed) & flag::TRACKING {
                0 => -1,
                _ => details.tracking_redirect.map_or(0, |id| id as i64),
            },
            entry.resp.load(Ordering::Relaxed),
            shown(&details.lib_name),
            shown(&details.lib_ver),
        );
        line
    }

    /// Seconds since `entry` connected.
    pub fn age_secs(&self, entry: &ClientEntry) -> u64 {
        self.now_ms().saturating_sub(entry.created_ms) / 1000
    }

    /// The proxy's address on `entry`'s connection (`laddr=`): the socket's own, else the
    /// listener's.
    pub fn laddr_of(&self, entry: &ClientEntry) -> Option<SocketAddr> {
        entry.laddr.or_else(|| self.local_addr.get().copied())
    }
}

/// A client's place in the registry; dropping it (the session ended) removes the client.
pub struct Registration {
    registry: Arc<Registry>,
    pub entry: Arc<ClientEntry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.registry.clients).remove(&self.entry.id);
        // A blocked command's connection dies with the session; nothing is left to unblock.
        self.entry.set_blocked_on(None);
    }
}

/// Flag bits of [`ClientEntry::flags`].
pub mod flag {
    /// Subscribed to something (`P`).
    pub const PUBSUB: u32 = 1;
    /// Inside MULTI (`x`).
    pub const MULTI: u32 = 1 << 1;
    /// Waiting on a blocking command or held by `CLIENT PAUSE` (`b`).
    pub const BLOCKED: u32 = 1 << 2;
    /// `CLIENT NO-EVICT on` (`e`).
    pub const NO_EVICT: u32 = 1 << 3;
    /// `CLIENT NO-TOUCH on` (`T`).
    pub const NO_TOUCH: u32 = 1 << 4;
    /// Closes once its replies are written (`c`).
    pub const CLOSE_AFTER_REPLY: u32 = 1 << 5;
    /// `CLIENT TRACKING ON` (`t`).
    pub const TRACKING: u32 = 1 << 6;
    /// Its tracking redirect client went away (`R`).
    pub const TRACKING_BROKEN_REDIR: u32 = 1 << 7;
    /// Tracking in BCAST mode (`B`).
    pub const TRACKING_BCAST: u32 = 1 << 8;
}

/// What others may read about one client, and how they reach it.
pub struct ClientEntry {
    pub id: u64,
    pub addr: SocketAddr,
    laddr: Option<SocketAddr>,
    /// The proxy's socket (`fd=`; -1 when it has none of its own).
    fd: i32,
    created_ms: u64,
    last_interaction_ms: AtomicU64,
    /// Command-table id + 1 of the last command (0: none yet).
    last_cmd: AtomicU32,
    flags: AtomicU32,
    /// Channels, patterns, shard channels.
    subs: [AtomicU32; 3],
    /// Commands queued in MULTI, -1 outside.
    multi: AtomicI64,
    resp: AtomicU8,
    /// Set by `CLIENT KILL`: the session closes at once.
    killed: AtomicBool,
    /// The session waiting for a kill or an invalidation (lock-free: polled on every wake-up
    /// of the session).
    kill_waker: AtomicWaker,
    /// Invalidations for this client (`CLIENT TRACKING`) its session has not taken yet.
    inbox: Mutex<Vec<Invalidation>>,
    inbox_full: AtomicBool,
    /// Shutdown asks the session to stop reading (taken once by the session).
    stop_reading: AtomicBool,
    /// `None` until something sets a detail: most clients never name themselves, and the
    /// whole of `Details` (168 bytes) in every entry made 10,000 idle clients cost 1.5 MiB
    /// more.
    details: Mutex<Option<Box<Details>>>,
}

/// The parts of a client that change rarely.
#[derive(Default, Clone)]
pub struct Details {
    pub name: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
    /// The user it authenticated as (`None`: default).
    pub user: Option<String>,
    /// The node connection its blocking command waits on, and that connection's id on the
    /// node, for `CLIENT UNBLOCK`.
    pub blocked_on: Option<(NodeAddr, u64)>,
    /// The client its tracking invalidations go to (`redir=`), while it tracks.
    pub tracking_redirect: Option<u64>,
}

/// `CLIENT LIST TYPE` / `CLIENT KILL TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientType {
    Normal,
    Replica,
    Primary,
    PubSub,
}

impl ClientType {
    /// Redis's names (`slave` is `replica`), case-insensitive.
    pub fn parse(name: &[u8]) -> Option<ClientType> {
        let lower = name.to_ascii_lowercase();
        match lower.as_slice() {
            b"normal" => Some(ClientType::Normal),
            b"slave" | b"replica" => Some(ClientType::Replica),
            b"master" => Some(ClientType::Primary),
            b"pubsub" => Some(ClientType::PubSub),
            _ => None,
        }
    }
}

impl ClientEntry {
    fn details(&self) -> MutexGuard<'_, Option<Box<Details>>> {
        lock(&self.details)
    }

    /// Changes the rarely changing parts.
    pub fn update(&self, change: impl FnOnce(&mut Details)) {
        change(self.details().get_or_insert_with(Box::default));
    }

    /// A copy of the rarely changing parts.
    pub fn snapshot(&self) -> Details {
        self.details().as_deref().cloned().unwrap_or_default()
    }

    /// `CLIENT KILL`: its session closes at once.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill_waker.wake();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Shutdown: the session stops reading (see [`Registry::shut_down`]).
    fn stop_reading(&self) {
        self.stop_reading.store(true, Ordering::Release);
        self.kill_waker.wake();
    }

    /// Whether shutdown asked the session to stop reading; true once.
    pub fn take_stop_reading(&self) -> bool {
        self.stop_reading.load(Ordering::Acquire) && self.stop_reading.swap(false, Ordering::AcqRel)
    }

    /// Completes once the client is killed, has invalidations to take or is to stop reading. Lock-free to poll,
    /// so the session can keep it among the things it waits for on every turn.
    ///
    /// # Cancel safety
    /// Safe: it only looks at flags.
    pub async fn attention(&self) {
        let wanted = || {
            self.is_killed()
                || self.inbox_full.load(Ordering::Acquire)
                || self.stop_reading.load(Ordering::Acquire)
        };
        std::future::poll_fn(|cx| {
            if wanted() {
                return std::task::Poll::Ready(());
            }
            self.kill_waker.register(cx.waker());
            if wanted() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Hands the client an invalidation (`CLIENT TRACKING`), from any thread; its session
    /// writes it between replies.
    pub fn push_invalidation(&self, what: Invalidation) {
        self.inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(what);
        self.inbox_full.store(true, Ordering::Release);
        self.kill_waker.wake();
    }

    /// The invalidations handed to the client so far (its session's part).
    pub fn take_invalidations(&self) -> Vec<Invalidation> {
        if !self.inbox_full.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The client sent something (`idle=`). `now_ms`: [`Registry::now_ms`].
    pub fn touch(&self, now_ms: u64) {
        self.last_interaction_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The client's latest command, by command-table id (`cmd=`).
    pub fn note_command(&self, id: u16) {
        self.last_cmd.store(u32::from(id) + 1, Ordering::Relaxed);
    }

    /// The command-table id of the latest command.
    pub fn last_command(&self) -> Option<u16> {
        match self.last_cmd.load(Ordering::Relaxed) {
            0 => None,
            n => u16::try_from(n - 1).ok(),
        }
    }

    pub fn set_flag(&self, bit: u32, on: bool) {
        if on {
            self.flags.fetch_or(bit, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    pub fn has_flag(&self, bit: u32) -> bool {
        self.flags.load(Ordering::Relaxed) & bit != 0
    }

    /// Subscription counts: channels, patterns, shard channels.
    pub fn set_subscriptions(&self, channels: usize, patterns: usize, shard: usize) {
        for (cell, n) in self.subs.iter().zip([channels, patterns, shard]) {
            cell.store(n as u32, Ordering::Relaxed);
        }
        self.set_flag(flag::PUBSUB, channels + patterns + shard > 0);
    }

    /// Commands queued in MULTI, or `None` outside a transaction.
    pub fn set_multi(&self, queued: Option<usize>) {
        self.multi
            .store(queued.map_or(-1, |n| n as i64), Ordering::Relaxed);
        self.set_flag(flag::MULTI, queued.is_some());
    }

    pub fn set_resp(&self, resp: u8) {
        self.resp.store(resp, Ordering::Relaxed);
    }

    /// Where its blocking command waits (`None`: no longer).
    pub fn set_blocked_on(&self, on: Option<(NodeAddr, u64)>) {
        self.set_flag(flag::BLOCKED, on.is_some());
        let mut details = self.details();
        // Every session clears it as it ends: no need to make the details for that.
        if on.is_some() || details.is_some() {
            details.get_or_insert_with(Box::default).blocked_on = on;
        }
    }

    pub fn client_type(&self) -> ClientType {
        if self.has_flag(flag::PUBSUB) {
            ClientType::PubSub
        } else {
            ClientType::Normal
        }
    }

    /// The user it runs as (Redis's `default` when none).
    pub fn user(&self) -> String {
        self.details()
            .as_ref()
            .and_then(|d| d.user.clone())
            .unwrap_or_else(|| "default".to_string())
    }

    /// `flags=`, in Redis's letter order.
    fn flag_letters(&self) -> String {
        let flags = self.flags.load(Ordering::Relaxed);
        let mut out = String::new();
        for (bit, letter) in [
            (flag::PUBSUB, 'P'),
            (flag::MULTI, 'x'),
            (flag::BLOCKED, 'b'),
            (flag::TRACKING, 't'),
            (flag::TRACKING_BROKEN_REDIR, 'R'),
            (flag::TRACKING_BCAST, 'B'),
            (flag::CLOSE_AFTER_REPLY, 'c'),
            (flag::NO_EVICT, 'e'),
            (flag::NO_TOUCH, 'T'),
        ] {
            if flags & bit != 0 {
                out.push(letter);
            }
        }
        if out.is_empty() {
            out.push('N');
        }
        out
    }
}

/// What `CLIENT PAUSE` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PauseMode {
    /// Commands that write or may replicate (and EXEC of such).
    Write = 1,
    /// Every command.
    All = 2,
}

/// The server-wide pause. Readers (every command while a pause is on) take no lock: one
/// atomic load when no pause was ever set.
#[derive(Default)]
pub struct Pause {
    /// 0: none; else a [`PauseMode`].
    mode: AtomicU8,
    /// When it ends, in [`Registry::now_ms`] milliseconds.
    end_ms: AtomicU64,
    /// Serialises writers (the two atomics change together).
    writer: Mutex<()>,
    /// Woken when a pause ends early or changes.
    changed: Notify,
}

impl Pause {
    /// The pause in force at `now_ms`, if any.
    pub fn active(&self, now_ms: u64) -> Option<PauseMode> {
        let mode = match self.mode.load(Ordering::Acquire) {
            1 => PauseMode::Write,
            2 => PauseMode::All,
            _ => return None,
        };
        (now_ms < self.end_ms.load(Ordering::Acquire)).then_some(mode)
    }

    /// Whether a pause may be in force (one relaxed load: the hot path's check).
    pub fn maybe_active(&self) -> bool {
        self.mode.load(Ordering::Relaxed) != 0
    }

    /// Pauses until `end_ms`; as Redis 7.0, a pause already in force keeps the later end
    /// and the stricter mode.
    pub fn start(&self, now_ms: u64, mode: PauseMode, end_ms: u64) {
        let _writer = lock(&self.writer);
        let (old_mode, old_end) = match self.active(now_ms) {
            Some(old) => (old as u8, self.end_ms.load(Ordering::Acquire)),
            None => (0, 0),
        };
        self.end_ms.store(end_ms.max(old_end), Ordering::Release);
        self.mode
            .store((mode as u8).max(old_mode), Ordering::Release);
        self.changed.notify_waiters();
    }

    /// `CLIENT UNPAUSE`: held clients go on at once.
    pub fn stop(&self) {
        let _writer = lock(&self.writer);
        self.mode.store(0, Ordering::Release);
        self.end_ms.store(0, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Waits until no pause in force holds a command that `holds` says the mode holds.
    /// `now`: the registry's clock.
    pub async fn wait_over(&self, now: impl Fn() -> u64, holds: impl Fn(PauseMode) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now_ms = now();
            match self.active(now_ms) {
                Some(mode) if holds(mode) => {}
                _ => return,
            }
            let left = self.end_ms.load(Ordering::Acquire).saturating_sub(now_ms);
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep(Duration::from_millis(left)) => {}
            }
        }
    }
}

/// Locks `mutex`, recovering from a poisoned lock (the data are plain values, never left
/// half-changed by a panic in between).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[tokio::test]
    async fn the_recent_clock_is_exact_until_it_ticks_then_at_most_a_tick_behind() {
        let registry = Arc::new(Registry::default());
        std::thread::sleep(std::time::Duration::from_millis(30));
        let before = registry.recent_ms();
        assert!(before >= 30 && before <= registry.now_ms(), "{before}");

        let stop = tokio_util::sync::CancellationToken::new();
        let clock = tokio::spawn({
            let (registry, stop) = (registry.clone(), stop.clone());
            async move { registry.run_clock(stop).await }
        });
        let mut last = before;
        for _ in 0..3 {
            tokio::time::sleep(CLOCK_TICK * 2).await;
            let recent = registry.recent_ms();
            assert!(
                recent > last && recent <= registry.now_ms(),
                "{recent} after {last}"
            );
            // The runtime's one thread is blocked here, so the clock cannot tick: the time
            // read stays what the last tick stored.
            std::thread::sleep(std::time::Duration::from_millis(20));
            assert_eq!(registry.recent_ms(), recent);
            last = recent;
        }
        stop.cancel();
        assert!(clock.await.is_ok());
    }

    #[test]
    fn clients_are_listed_in_id_order_and_leave_when_dropped() {
        let registry = Arc::new(Registry::default());
        let b = registry.register(7, addr(2), None, -1);
        let a = registry.register(3, addr(1), None, -1);
        let ids: Vec<u64> = registry.all().iter().map(|e| e.id).collect();
        assert_eq!(ids, [3, 7]);
        drop(a);
        assert!(registry.get(3).is_none());
        assert_eq!(registry.get(7).map(|e| e.addr), Some(addr(2)));
        drop(b);
        assert!(registry.all().is_empty());
    }

    #[test]
    fn a_line_has_every_field_of_redis_in_its_order() {
        let registry = Arc::new(Registry::default());
        registry.set_local_addr(addr(6380));
        let client = registry.register(5, addr(5000), None, 9);
        client
            .entry
            .update(|d| d.name = Some(Bytes::from_static(b"worker")));
        client.entry.set_flag(flag::NO_EVICT, true);
        client.entry.set_multi(Some(2));
        let line = registry.line(&client.entry, "client|list");
        let keys: Vec<&str> = line
            .trim_end()
            .split(' ')
            .map(|kv| kv.split('=').next().unwrap_or_default())
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
        assert!(line.starts_with("id=5 addr=127.0.0.1:5000 laddr=127.0.0.1:6380 fd=9 "));
        assert!(line.contains(" name=worker age=0 idle=0 flags=xe db=0 "));
        assert!(line.contains(" multi=2 "));
        assert!(
            line.ends_with(" cmd=client|list user=default redir=-1 resp=2 lib-name= lib-ver=\n")
        );
    }

    #[test]
    fn a_pause_keeps_the_later_end_and_the_stricter_mode() {
        let pause = Pause::default();
        assert_eq!(pause.active(0), None);
        pause.start(0, PauseMode::All, 100);
        pause.start(0, PauseMode::Write, 50);
        assert_eq!(pause.active(10), Some(PauseMode::All));
        assert_eq!(pause.active(100), None);
        pause.start(200, PauseMode::Write, 300);
        assert_eq!(pause.active(250), Some(PauseMode::Write));
        pause.stop();
        assert_eq!(pause.active(250), None);
        assert!(!pause.maybe_active());
    }
}

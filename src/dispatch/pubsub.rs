//! Pub/Sub for one client: SUBSCRIBE/PSUBSCRIBE on a connection of the client's own to one
//! primary, its home (a cluster PUBLISH reaches every node), SSUBSCRIBE on one connection per
//! node that owns the shard channels' slots.
//!
//! Keyspace notifications (`__keyspace@<db>__:<key>`, `__keyevent@<db>__:<event>`) are
//! published only on the key's node: a channel or pattern that can match one is subscribed on
//! every primary, the home connection and one more connection per other primary. Those extra
//! connections forward only notification messages (a PUBLISH reaches every node, so anything
//! else arrives once already, from the home node). Their set follows the topology: primaries
//! that appear get one, gone ones are closed, a home that is no longer a primary is replaced.
//!
//! The proxy keeps the client's subscriptions itself and answers the (un)subscribe
//! confirmations, so the counts are the client's totals however many nodes serve it; only
//! messages are forwarded from the nodes, as their raw bytes. A shard channel whose slot moves
//! (the node sends `sunsubscribe` on its own) or whose node connection breaks is subscribed
//! again on the slot's current owner.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::decision::{decide, Attempts, Next, Outcome, Resend, RetryKind, Rules};
use super::driver;
use super::error::ProxyError;
use super::reply::{self, Reply};
use super::worker::Worker;
use crate::backend::connect::connect;
use crate::backend::connect::Credentials;
use crate::backend::NodeAddr;
use crate::cluster::redirect;
use crate::cluster::{Slot, SlotMap};
use crate::resp::{encode, Command, Protocol, ReplyScanner, Value};
use crate::shared::pubsub::SubscriberCounts;

/// The three kinds of subscription (a command-table type: the route of each command says it).
pub use crate::command::route::Subscription as Kind;

impl Kind {
    fn subscribe(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"subscribe",
            Kind::Pattern => b"psubscribe",
            Kind::Shard => b"ssubscribe",
        }
    }

    fn unsubscribe(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"unsubscribe",
            Kind::Pattern => b"punsubscribe",
            Kind::Shard => b"sunsubscribe",
        }
    }
}

/// What a node connection reports to the session.
enum Event {
    /// A message to forward as it is.
    Message(Bytes),
    /// The node dropped a shard channel on its own (its slot moved away).
    ShardDropped(Bytes),
    /// A (un)subscribe was refused with a redirect or retry error (a shard channel's slot
    /// moved, is migrating, or the cluster is down), on this connection.
    Refused(ConnKey, Bytes),
    /// The connection is gone.
    Lost(ConnKey),
    /// Time to subscribe again what a lost connection or a moved slot took away.
    Retry(Retry),
    /// The topology changed: keyspace subscriptions follow the primaries.
    Topology,
}

enum Retry {
    Shard(Bytes),
    Conn(ConnKey),
}

/// Which connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ConnKey {
    /// The home connection: channels and patterns; every message forwarded.
    Home,
    /// A shard node's: shard channels.
    Shard(NodeAddr),
    /// Another primary's than the home's: the keyspace notification channels and patterns
    /// (see [`is_keyspace`]); only notification messages forwarded.
    Keyspace(NodeAddr),
}

/// Whether `channel` is a keyspace or keyevent notification channel.
fn is_notification(channel: &[u8]) -> bool {
    channel.starts_with(b"__keyspace@") || channel.starts_with(b"__keyevent@")
}

/// Whether a subscription can match a notification channel, decided conservatively: a
/// notification channel, or a pattern whose literal start (up to its first glob or escape
/// character) is compatible with `__keyspace@` or `__keyevent@` (so `*`, `__key*`,
/// `__keyevent@*__:expired`, `?x`, but not `news.*`).
pub fn is_keyspace(kind: Kind, name: &[u8]) -> bool {
    match kind {
        Kind::Shard => false,
        Kind::Channel => is_notification(name),
        Kind::Pattern => {
            let literal = name
                .iter()
                .position(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'))
                .map_or(name, |end| &name[..end]);
            [b"__keyspace@".as_slice(), b"__keyevent@"]
                .iter()
                .any(|prefix| prefix.starts_with(literal) || literal.starts_with(prefix))
        }
    }
}

/// The primary that serves this proxy's channels and patterns: the owner of its Pub/Sub slot
/// (see `Shared::pubsub_slot`), or, while the map has no owner for it, any primary.
fn home_primary(worker: &Worker, map: &SlotMap) -> Option<NodeAddr> {
    map.primary(worker.shared.pubsub_slot).cloned().or_else(|| {
        let shards = map.shards();
        shards
            .get(fastrand::usize(..shards.len().max(1)))
            .map(|shard| shard.primary.clone())
    })
}

/// How often a subscribed client checks the topology (its home follows the Pub/Sub slot's
/// owner; keyspace subscriptions follow the primaries).
const TOPOLOGY_CHECK: Duration = Duration::from_secs(1);

/// A (un)subscribe for a node connection, and who waits for the node to confirm it.
struct Outgoing {
    payload: Bytes,
    confirmed: Option<Waiter>,
}

/// Told once the node confirmed `kind` `name` (or failed to: dropped).
struct Waiter {
    kind: &'static [u8],
    name: Bytes,
    tx: oneshot::Sender<()>,
}

/// How long a subscription's confirmation waits for the node's. Redis confirms once the
/// subscription is in place, and clients rely on it (publish right after subscribing and
/// expect the message): the proxy's confirmation waits for the node's, up to this long (a node
/// that does not answer must not hold the client; the subscription is retried on its own).
const CONFIRM_WAIT: Duration = Duration::from_secs(2);

pub struct Subscriptions {
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
    shard_channels: BTreeSet<Bytes>,
    conns: HashMap<ConnKey, mpsc::UnboundedSender<Outgoing>>,
    /// The primary of the home connection, once opened.
    home: Option<NodeAddr>,
    /// A task watches the topology (started with the first keyspace subscription).
    watching: bool,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    /// Messages that arrived while replies to earlier commands were still owed.
    held: Vec<Bytes>,
    /// The client left a subscription: from then on a message may arrive for a name it no
    /// longer holds, and each is checked ([`Subscriptions::still_wanted`]). Until then every
    /// message is for a held name and goes out unparsed.
    left_any: bool,
    /// The client's protocol: RESP3 clients get confirmations and messages as push frames.
    pub protocol: Protocol,
    /// Every client's subscriptions, counted: kept in step with the sets above.
    counts: Arc<SubscriberCounts>,
}

impl Subscriptions {
    pub fn new(counts: Arc<SubscriberCounts>) -> Subscriptions {
        let (events_tx, events) = mpsc::unbounded_channel();
        Subscriptions {
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            shard_channels: BTreeSet::new(),
            conns: HashMap::new(),
            home: None,
            watching: false,
            events_tx,
            events,
            held: Vec::new(),
            left_any: false,
            protocol: Protocol::Resp2,
            counts,
        }
    }

    /// Subscribed to anything: the client is in subscriber mode.
    pub fn active(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard_channels.is_empty())
    }

    /// Channels, patterns and shard channels subscribed (`CLIENT LIST`'s sub/psub/ssub).
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.channels.len(),
            self.patterns.len(),
            self.shard_channels.len(),
        )
    }

    fn set(&mut self, kind: Kind) -> &mut BTreeSet<Bytes> {
        match kind {
            Kind::Channel => &mut self.channels,
            Kind::Pattern => &mut self.patterns,
            Kind::Shard => &mut self.shard_channels,
        }
    }

    /// Redis's count in confirmations: channels + patterns, or shard channels.
    fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.shard_channels.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// `(P|S)SUBSCRIBE name...`: one confirmation per name, once the nodes confirmed the new
    /// subscriptions (see [`CONFIRM_WAIT`]).
    pub fn subscribe(
        &mut self,
        worker: &Worker,
        map: &SlotMap,
        kind: Kind,
        cmd: &Command,
    ) -> Reply {
        let mut out = BytesMut::new();
        let mut waiting = Vec::new();
        for name in cmd.args().skip(1) {
            let name = Bytes::copy_from_slice(name);
            if self.set(kind).insert(name.clone()) {
                self.counts.add(kind, &name);
                let (tx, rx) = oneshot::channel();
                let waiter = Waiter {
                    kind: kind.subscribe(),
                    name: name.clone(),
                    tx,
                };
                self.send(worker, map, kind, &[kind.subscribe(), &name], Some(waiter));
                waiting.push(rx);
                if is_keyspace(kind, &name) {
                    self.subscribe_elsewhere(worker, map, kind, &name, &mut waiting);
                }
            }
            confirmation(
                &mut out,
                self.protocol,
                kind.subscribe(),
                Some(&name),
                self.count(kind),
            );
        }
        let out = out.freeze();
        if waiting.is_empty() {
            return out.into();
        }
        Reply::later(async move {
            let _ = tokio::time::timeout(CONFIRM_WAIT, join_all(waiting)).await;
            out
        })
    }

    /// `(P|S)UNSUBSCRIBE [name...]`: all of that kind when no name is given.
    pub fn unsubscribe(
        &mut self,
        worker: &Worker,
        map: &SlotMap,
        kind: Kind,
        cmd: &Command,
    ) -> Bytes {
        let names: Vec<Bytes> = if cmd.argc() > 1 {
            cmd.args().skip(1).map(Bytes::copy_from_slice).collect()
        } else {
            self.set(kind).iter().cloned().collect()
        };
        let mut out = BytesMut::new();
        if names.is_empty() {
            confirmation(
                &mut out,
                self.protocol,
                kind.unsubscribe(),
                None,
                self.count(kind),
            );
        }
        for name in names {
            if self.set(kind).remove(&name) {
                self.left_any = true;
                self.counts.remove(kind, &name);
                self.send(worker, map, kind, &[kind.unsubscribe(), &name], None);
                if is_keyspace(kind, &name) {
                    self.unsubscribe_elsewhere(kind, &name);
                }
            }
            confirmation(
                &mut out,
                self.protocol,
                kind.unsubscribe(),
                Some(&name),
                self.count(kind),
            );
        }
        out.freeze()
    }

    /// Sends a (un)subscribe to the connection that serves it, opening it if needed.
    /// `confirmed` is told when the node confirms it (dropped if it is never sent).
    fn send(
        &mut self,
        worker: &Worker,
        map: &SlotMap,
        kind: Kind,
        args: &[&[u8]],
        confirmed: Option<Waiter>,
    ) {
        let key = match kind {
            Kind::Shard => {
                let slot = Slot::of(args.get(1).copied().unwrap_or_default());
                match map.primary(slot) {
                    Some(addr) => ConnKey::Shard(addr.clone()),
                    None => return, // no owner yet: subscribed again once the map heals
                }
            }
            _ => ConnKey::Home,
        };
        self.send_to(worker, map, key, args, confirmed);
    }

    /// Sends a (un)subscribe on the connection `key`, opening it if needed (a home
    /// connection at a random primary).
    fn send_to(
        &mut self,
        worker: &Worker,
        map: &SlotMap,
        key: ConnKey,
        args: &[&[u8]],
        confirmed: Option<Waiter>,
    ) {
        let mut outgoing = Outgoing {
            payload: Command::from_args(args).into_raw(),
            confirmed,
        };
        if let Some(tx) = self.conns.get(&key) {
            match tx.send(outgoing) {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => outgoing = back,
            }
        }
        let addr = match &key {
            ConnKey::Shard(addr) | ConnKey::Keyspace(addr) => addr.clone(),
            ConnKey::Home => match home_primary(worker, map) {
                Some(primary) => primary,
                None => return,
            },
        };
        if key == ConnKey::Home {
            // A new home: its keyspace connection would duplicate its notifications (the old
            // home's primary gets one when the lost home is synced again).
            self.conns.remove(&ConnKey::Keyspace(addr.clone()));
            self.home = Some(addr.clone());
            self.watch(worker);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(outgoing);
        let credentials = worker.shared.topology.credentials().clone();
        let timeout = worker.shared.config.connect_timeout();
        tokio::task::spawn_local(run_connection(
            addr,
            key.clone(),
            credentials,
            timeout,
            rx,
            self.events_tx.clone(),
        ));
        self.conns.insert(key, tx);
    }

    /// The primaries other than the home connection's (none before it is opened).
    fn other_primaries(&self, map: &SlotMap) -> Vec<NodeAddr> {
        let Some(home) = &self.home else {
            return Vec::new();
        };
        map.shards()
            .iter()
            .map(|s| s.primary.clone())
            .filter(|p| p != home)
            .collect()
    }

    /// The channels and patterns that are subscribed on every primary.
    fn keyspace_names(&self) -> Vec<(Kind, Bytes)> {
        self.channels
            .iter()
            .map(|c| (Kind::Channel, c))
            .chain(self.patterns.iter().map(|p| (Kind::Pattern, p)))
            .filter(|(kind, name)| is_keyspace(*kind, name))
            .map(|(kind, name)| (kind, name.clone()))
            .collect()
    }

    /// Subscribes a keyspace `name` on every primary but the home one (already sent), each
    /// confirmation awaited. A primary without a connection yet gets every keyspace name.
    fn subscribe_elsewhere(
        &mut self,
        worker: &Worker,
        map: &SlotMap,
        kind: Kind,
        name: &Bytes,
        waiting: &mut Vec<oneshot::Receiver<()>>,
    ) {
        for addr in self.other_primaries(map) {
            let key = ConnKey::Keyspace(addr);
            let fresh = !self.conns.contains_key(&key);
            let (tx, rx) = oneshot::channel();
            let waiter = Waiter {
                kind: kind.subscribe(),
                name: name.clone(),
                tx,
            };
            self.send_to(
                worker,
                map,
                key.clone(),
                &[kind.subscribe(), name],
                Some(waiter),
            );
            waiting.push(rx);
            if fresh {
                for (k, other) in self.keyspace_names() {
                    if !(k == kind && other == name) {
                        self.send_to(worker, map, key.clone(), &[k.subscribe(), &other], None);
                    }
                }
            }
        }
        self.watch(worker);
    }

    /// Unsubscribes a keyspace `name` on the other primaries; their connections close once
    /// no keyspace subscription is left.
    fn unsubscribe_elsewhere(&mut self, kind: Kind, name: &[u8]) {
        if self.keyspace_names().is_empty() {
            self.conns.retain(|k, _| !matches!(k, ConnKey::Keyspace(_)));
            return;
        }
        let payload = Command::from_args(&[kind.unsubscribe(), name]).into_raw();
        for (key, tx) in &self.conns {
            if matches!(key, ConnKey::Keyspace(_)) {
                let _ = tx.send(Outgoing {
                    payload: payload.clone(),
                    confirmed: None,
                });
            }
        }
    }

    /// Starts the task that reports topology changes (once per client; it ends with the
    /// client's subscriptions).
    fn watch(&mut self, worker: &Worker) {
        if self.watching {
            return;
        }
        self.watching = true;
        let shared = worker.shared.clone();
        let events = self.events_tx.clone();
        tokio::task::spawn_local(async move {
            let mut seen = shared.topology.generation();
            loop {
                tokio::time::sleep(TOPOLOGY_CHECK).await;
                if events.is_closed() {
                    return;
                }
                let now = shared.topology.generation();
                if now != seen {
                    seen = now;
                    if events.send(Event::Topology).is_err() {
                        return;
                    }
                }
            }
        });
    }

    /// Brings the keyspace connections in line with the current primaries: one per primary
    /// other than the home one, each with every keyspace subscription. A home connection whose
    /// node no longer owns the proxy's Pub/Sub slot is moved to its owner first (PUBLISH goes
    /// there; a home that is no longer a primary would also miss notifications, or duplicate
    /// the promoted node's).
    fn sync_keyspace(&mut self, worker: &Worker) {
        let map = worker.shared.topology.map();
        let owner = map.primary(worker.shared.pubsub_slot);
        if self.conns.contains_key(&ConnKey::Home) && owner.is_some() && self.home.as_ref() != owner
        {
            self.conns.remove(&ConnKey::Home);
            self.home = None;
            self.resubscribe(worker, ConnKey::Home); // syncs again
            return;
        }
        if self.keyspace_names().is_empty() {
            self.conns.retain(|k, _| !matches!(k, ConnKey::Keyspace(_)));
            return;
        }
        if !self.conns.contains_key(&ConnKey::Home) {
            return; // being subscribed again: synced once it is
        }
        let targets = self.other_primaries(&map);
        self.conns.retain(|k, _| match k {
            ConnKey::Keyspace(addr) => targets.contains(addr),
            _ => true,
        });
        let names = self.keyspace_names();
        for addr in targets {
            let key = ConnKey::Keyspace(addr);
            if self.conns.contains_key(&key) {
                continue;
            }
            for (kind, name) in &names {
                self.send_to(worker, &map, key.clone(), &[kind.subscribe(), name], None);
            }
        }
    }

    /// Waits for the next thing to do: a message, or a subscription to re-establish.
    /// Cancel safety: safe (events wait in the channel; handling one does not await).
    pub async fn next_event(&mut self, worker: &Worker) {
        let Some(event) = self.events.recv().await else {
            return;
        };
        match event {
            Event::Message(bytes) => self.held.push(bytes),
            Event::ShardDropped(channel) => {
                if self.shard_channels.contains(&channel) {
                    // The slot moved: give the refresher a moment, then subscribe at the owner.
                    worker.shared.topology.request_refresh();
                    self.retry_later(Retry::Shard(channel));
                }
            }
            Event::Lost(key) => {
                self.conns.remove(&key);
                worker.shared.topology.request_refresh();
                self.retry_later(Retry::Conn(key));
            }
            Event::Retry(Retry::Shard(channel)) => {
                if self.shard_channels.contains(&channel) {
                    let map = worker.shared.topology.map();
                    self.send(worker, &map, Kind::Shard, &[b"ssubscribe", &channel], None);
                }
            }
            Event::Topology => self.sync_keyspace(worker),
            Event::Retry(Retry::Conn(key)) => self.resubscribe(worker, key),
            Event::Refused(key, reply) => self.refused(worker, key, &reply),
        }
    }

    /// A subscription the node refused, decided as any request's reply is: after a MOVED the
    /// map is patched and that slot's shard channels are subscribed at the new owner at once;
    /// anything else (ASK during a migration, TRYAGAIN, CLUSTERDOWN, LOADING) is tried again
    /// after a pause, when the slot has settled.
    fn refused(&mut self, worker: &Worker, key: ConnKey, reply: &Bytes) {
        // A subscription is one connection's state: ASKING would place it on a node that
        // forgets it when the migration ends, so a migrating slot is waited for.
        let rules = Rules {
            can_ask: false,
            ..driver::rules(worker, Resend::Safe)
        };
        // The home connection's node is whichever the map named when it opened: unknown here.
        let from = match &key {
            ConnKey::Shard(addr) | ConnKey::Keyspace(addr) => addr.as_str(),
            ConnKey::Home => "",
        };
        let next = decide(Outcome::Reply(reply), from, &Attempts::default(), &rules);
        driver::record(worker, &next);
        let topology = &worker.shared.topology;
        if let Next::Retry {
            kind: RetryKind::MovedToItself,
            ..
        } = next
        {
            // Its name leads to another process now: a new connection resolves it again.
            self.conns.remove(&key);
        }
        match next {
            Next::Moved { slot, to } => {
                topology.apply_moved(slot, to);
                topology.request_refresh();
                let map = topology.map();
                let moved: Vec<Bytes> = self
                    .shard_channels
                    .iter()
                    .filter(|c| Slot::of(c) == slot)
                    .cloned()
                    .collect();
                for channel in moved {
                    self.send(worker, &map, Kind::Shard, &[b"ssubscribe", &channel], None);
                }
            }
            Next::Retry { refresh, .. } => {
                if refresh {
                    topology.request_refresh();
                }
                self.retry_later(Retry::Conn(key));
            }
            Next::Final | Next::Ask { .. } | Next::ToPrimary | Next::Fail(_) => {}
        }
    }

    fn retry_later(&self, retry: Retry) {
        let events = self.events_tx.clone();
        tokio::task::spawn_local(async move {
            tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
            let _ = events.send(Event::Retry(retry));
        });
    }

    /// Subscribes again everything the lost connection carried. A duplicate subscription
    /// on a connection that still has it is harmless (the node ignores it).
    fn resubscribe(&mut self, worker: &Worker, lost: ConnKey) {
        let (kind, names): (Vec<Kind>, Vec<Bytes>) = match &lost {
            ConnKey::Keyspace(addr) => {
                // Refused (the connection stays) or lost (it is gone): subscribe its names
                // again if it is still wanted, then open what else is missing.
                let key = ConnKey::Keyspace(addr.clone());
                if self.conns.contains_key(&key) {
                    let map = worker.shared.topology.map();
                    for (kind, name) in self.keyspace_names() {
                        self.send_to(worker, &map, key.clone(), &[kind.subscribe(), &name], None);
                    }
                }
                return self.sync_keyspace(worker);
            }
            ConnKey::Home => self
                .channels
                .iter()
                .map(|c| (Kind::Channel, c.clone()))
                .chain(self.patterns.iter().map(|p| (Kind::Pattern, p.clone())))
                .unzip(),
            ConnKey::Shard(_) => self
                .shard_channels
                .iter()
                .map(|c| (Kind::Shard, c.clone()))
                .unzip(),
        };
        let map = worker.shared.topology.map();
        for (kind, name) in kind.into_iter().zip(names) {
            self.send(worker, &map, kind, &[kind.subscribe(), &name], None);
        }
        if lost == ConnKey::Home {
            self.sync_keyspace(worker);
        }
    }

    /// Moves the messages received so far into `out`: those of subscriptions the client
    /// still holds. An unsubscribe is confirmed to the client at once while the nodes'
    /// connections may still deliver a message or two for it; one server sends none after.
    pub fn flush(&mut self, out: &mut BytesMut) {
        for m in std::mem::take(&mut self.held) {
            if self.still_wanted(&m) {
                forward(out, &m, self.protocol);
            }
        }
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::Message(m) if self.still_wanted(&m) => forward(out, &m, self.protocol),
                Event::Message(_) => {}
                other => {
                    // Handled by `next_event`; put it back by re-sending to ourselves.
                    let _ = self.events_tx.send(other);
                    break;
                }
            }
        }
    }
}

impl Subscriptions {
    /// Whether the client still holds the subscription a message arrived for.
    fn still_wanted(&self, message: &[u8]) -> bool {
        if !self.left_any {
            return true;
        }
        let Ok(Some((value, _))) = Value::parse(message) else {
            return true;
        };
        let Some([kind, name, ..]) = value.as_array() else {
            return true;
        };
        let (Some(kind), Some(name)) = (kind.as_bytes(), name.as_bytes()) else {
            return true;
        };
        let held = if kind.eq_ignore_ascii_case(b"message") {
            &self.channels
        } else if kind.eq_ignore_ascii_case(b"pmessage") {
            &self.patterns
        } else if kind.eq_ignore_ascii_case(b"smessage") {
            &self.shard_channels
        } else {
            return true;
        };
        held.contains(name)
    }
}

/// The client is gone (disconnected, RESET): its subscriptions no longer count. Its node
/// connections close as their senders drop.
impl Drop for Subscriptions {
    fn drop(&mut self) {
        for (kind, names) in [
            (Kind::Channel, &self.channels),
            (Kind::Pattern, &self.patterns),
            (Kind::Shard, &self.shard_channels),
        ] {
            for name in names {
                self.counts.remove(kind, name);
            }
        }
    }
}

/// The reply to PUBLISH (`kind` [`Kind::Channel`]) or SPUBLISH ([`Kind::Shard`]) once the
/// cluster took the message: the number of the proxy's clients that receive it, as one server
/// counts its own (the node's count covers only its own clients, of which the proxy is one
/// connection at most). An error from the cluster is passed on.
pub fn published(reply: Bytes, kind: Kind, channel: &[u8], counts: &SubscriberCounts) -> Bytes {
    if !reply.starts_with(b":") {
        return reply;
    }
    let receivers = match kind {
        Kind::Shard => counts.subscribers(Kind::Shard, channel),
        _ => counts.receivers(channel),
    };
    reply::integer(i64::try_from(receivers).unwrap_or(i64::MAX))
}

/// `PUBSUB CHANNELS|SHARDCHANNELS [pattern]`, `NUMSUB|SHARDNUMSUB [channel ...]`, `NUMPAT`,
/// answered from the proxy's count of its clients' subscriptions (Redis's reply shapes: flat
/// name/count arrays, in both protocols).
pub fn introspect(cmd: &Command, counts: &SubscriberCounts) -> Result<Bytes, ProxyError> {
    let sub = cmd.arg(1).unwrap_or_default();
    let argc = cmd.argc();
    let kind = |shard: bool| if shard { Kind::Shard } else { Kind::Channel };
    let lower = sub.to_ascii_lowercase();
    let mut out = BytesMut::new();
    match lower.as_slice() {
        b"channels" | b"shardchannels" if argc <= 3 => {
            let names = counts.names(kind(lower.starts_with(b"shard")), cmd.arg(2));
            encode::array_header(&mut out, names.len());
            for name in names {
                encode::bulk(&mut out, &name);
            }
        }
        b"numsub" | b"shardnumsub" => {
            let kind = kind(lower.starts_with(b"shard"));
            encode::array_header(&mut out, argc.saturating_sub(2) * 2);
            for name in cmd.args().skip(2) {
                encode::bulk(&mut out, name);
                let n = counts.subscribers(kind, name);
                encode::integer(&mut out, i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        b"numpat" if argc == 2 => {
            let n = counts.patterns();
            encode::integer(&mut out, i64::try_from(n).unwrap_or(i64::MAX));
        }
        _ => {
            return Err(ProxyError::bad_request(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try PUBSUB HELP.",
                String::from_utf8_lossy(sub)
            )))
        }
    }
    Ok(out.freeze())
}

/// Appends a message from a node's (RESP2) subscription connection: as it is for a RESP2
/// client, as a push frame (the same frame with `>` for `*`) for a RESP3 client.
fn forward(out: &mut BytesMut, message: &[u8], protocol: Protocol) {
    match (protocol, message.split_first()) {
        (Protocol::Resp3, Some((b'*', rest))) => {
            out.extend_from_slice(b">");
            out.extend_from_slice(rest);
        }
        _ => out.extend_from_slice(message),
    }
}

const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(200);

fn confirmation(
    out: &mut BytesMut,
    protocol: Protocol,
    kind: &[u8],
    name: Option<&[u8]>,
    count: usize,
) {
    match protocol {
        Protocol::Resp2 => encode::array_header(out, 3),
        Protocol::Resp3 => encode::push_header(out, 3),
    }
    encode::bulk(out, kind);
    match name {
        Some(name) => encode::bulk(out, name),
        None => encode::null(out, protocol),
    }
    encode::integer(out, count as i64);
}

/// One subscription connection: writes what the session sends, forwards messages back.
async fn run_connection(
    addr: NodeAddr,
    key: ConnKey,
    credentials: Credentials,
    timeout: Duration,
    mut commands: mpsc::UnboundedReceiver<Outgoing>,
    events: mpsc::UnboundedSender<Event>,
) {
    let stream = match connect(&addr, &credentials, timeout, false, Protocol::Resp2).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(node = %addr, %error, "subscription connection failed");
            let _ = events.send(Event::Lost(key));
            return;
        }
    };
    let (mut reader, mut writer) = stream.into_split();
    // Both halves run in this one task; neither holds the borrow across an await.
    let waiters: RefCell<Vec<Waiter>> = RefCell::new(Vec::new());
    let writing = async {
        while let Some(outgoing) = commands.recv().await {
            if let Some(waiter) = outgoing.confirmed {
                waiters.borrow_mut().push(waiter);
            }
            // flush: TLS keeps what the socket did not take yet (a no-op for plain TCP).
            if writer.write_all(&outgoing.payload).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
    };
    let reading = async {
        let mut buf = BytesMut::with_capacity(4096);
        let mut scanner = ReplyScanner::default();
        loop {
            while let Ok(Some(len)) = scanner.scan(&buf) {
                let reply = buf.split_to(len).freeze();
                confirm(&mut waiters.borrow_mut(), &reply);
                if let Some(event) = classify(reply, &key) {
                    if events.send(event).is_err() {
                        return;
                    }
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096.max(buf.len()));
            }
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::select! {
        _ = writing => {}   // the session dropped the connection: close it
        _ = reading => { let _ = events.send(Event::Lost(key)); }
    }
}

/// Tells the waiters a node's reply concerns: those of the subscription it confirms; all of
/// them after an error (which can't be told apart: a waiter told early only answers early).
fn confirm(waiters: &mut Vec<Waiter>, reply: &[u8]) {
    if waiters.is_empty() {
        return;
    }
    if reply.starts_with(b"-") {
        waiters.clear();
        return;
    }
    let Ok(Some((value, _))) = Value::parse(reply) else {
        return;
    };
    let Some([kind, name, ..]) = value.as_array() else {
        return;
    };
    let (Some(kind), Some(name)) = (kind.as_bytes(), name.as_bytes()) else {
        return;
    };
    let mut i = 0;
    while i < waiters.len() {
        match waiters.get(i) {
            Some(w) if w.kind.eq_ignore_ascii_case(kind) && w.name.as_ref() == name => {
                let waiter = waiters.swap_remove(i);
                let _ = waiter.tx.send(());
            }
            _ => i += 1,
        }
    }
}

/// Messages are forwarded; the node's own confirmations are dropped (the proxy answers them);
/// a `sunsubscribe` is reported, since the node also sends one when the slot moves away; so is
/// a redirect or retry error (other errors, like a confirmation, say nothing new).
fn classify(reply: Bytes, key: &ConnKey) -> Option<Event> {
    if redirect::classify(&reply).is_some() {
        return Some(Event::Refused(key.clone(), reply));
    }
    let (value, _) = Value::parse(&reply).ok()??;
    let kind = value.as_array()?.first()?.as_bytes()?.to_ascii_lowercase();
    match kind.as_slice() {
        b"message" | b"pmessage" | b"smessage" => {
            if let ConnKey::Keyspace(_) = key {
                // Only notifications: the home node forwards everything else.
                let at = if kind.as_slice() == b"pmessage" { 2 } else { 1 };
                if !is_notification(value.as_array()?.get(at)?.as_bytes()?) {
                    return None;
                }
            }
            Some(Event::Message(reply))
        }
        b"sunsubscribe" => {
            let channel = value.as_array()?.get(1)?.as_bytes()?;
            Some(Event::ShardDropped(Bytes::copy_from_slice(channel)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> SubscriberCounts {
        let counts = SubscriberCounts::default();
        counts.add(Kind::Channel, &Bytes::from_static(b"c1"));
        counts.add(Kind::Channel, &Bytes::from_static(b"c1"));
        counts.add(Kind::Pattern, &Bytes::from_static(b"c*"));
        counts.add(Kind::Shard, &Bytes::from_static(b"s1"));
        counts
    }

    fn introspected(args: &[&str]) -> Bytes {
        let cmd = Command::from_args(args);
        introspect(&cmd, &counts()).unwrap_or_else(|e| e.to_reply())
    }

    #[test]
    fn pubsub_introspection_replies() {
        let cases: &[(&[&str], &[u8])] = &[
            (&["PUBSUB", "NUMPAT"], b":1\r\n"),
            (
                &["PUBSUB", "NUMSUB", "c1", "c2"],
                b"*4\r\n$2\r\nc1\r\n:2\r\n$2\r\nc2\r\n:0\r\n",
            ),
            (&["PUBSUB", "NUMSUB"], b"*0\r\n"),
            (
                &["pubsub", "shardnumsub", "s1"],
                b"*2\r\n$2\r\ns1\r\n:1\r\n",
            ),
            (&["PUBSUB", "CHANNELS"], b"*1\r\n$2\r\nc1\r\n"),
            (&["PUBSUB", "CHANNELS", "x*"], b"*0\r\n"),
            (&["PUBSUB", "SHARDCHANNELS", "s?"], b"*1\r\n$2\r\ns1\r\n"),
            (
                &["PUBSUB", "CHANNELS", "a", "b"],
                b"-ERR unknown subcommand or wrong number of arguments for 'CHANNELS'. Try PUBSUB HELP.\r\n",
            ),
        ];
        for (args, want) in cases {
            assert_eq!(introspected(args).as_ref(), *want, "{args:?}");
        }
    }

    #[test]
    fn node_confirmations_release_their_waiters() {
        let mut waiters = Vec::new();
        let mut receivers = Vec::new();
        for (kind, name) in [
            (Kind::Channel, "a"),
            (Kind::Pattern, "a"),
            (Kind::Channel, "b"),
        ] {
            let (tx, rx) = oneshot::channel();
            waiters.push(Waiter {
                kind: kind.subscribe(),
                name: Bytes::copy_from_slice(name.as_bytes()),
                tx,
            });
            receivers.push(rx);
        }
        // A message and another kind's confirmation release nothing.
        confirm(
            &mut waiters,
            b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n",
        );
        confirm(
            &mut waiters,
            b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:0\r\n",
        );
        assert_eq!(waiters.len(), 3);
        confirm(&mut waiters, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(waiters.len(), 2);
        assert!(receivers[0].try_recv().is_ok());
        assert!(receivers[1].try_recv().is_err());
        // An error can't be matched: it releases every waiter.
        confirm(&mut waiters, b"-MOVED 1 127.0.0.1:7001\r\n");
        assert!(waiters.is_empty());
    }

    #[test]
    fn keyspace_subscriptions_are_recognised() {
        let cases: &[(Kind, &str, bool)] = &[
            (Kind::Channel, "__keyspace@0__:foo", true),
            (Kind::Channel, "__keyevent@0__:set", true),
            (Kind::Channel, "news", false),
            (Kind::Channel, "__key", false),
            (Kind::Pattern, "__keyspace@0__:*", true),
            (Kind::Pattern, "__key*__:*", true),
            (Kind::Pattern, "__keyevent@*__:expired", true),
            (Kind::Pattern, "*", true),
            (Kind::Pattern, "?x", true),
            (Kind::Pattern, "[_]*", true),
            (Kind::Pattern, "_*", true),
            (Kind::Pattern, "news.*", false),
            (Kind::Pattern, "__keyfoo*", false),
            (Kind::Shard, "__keyspace@0__:foo", false),
        ];
        for (kind, name, want) in cases {
            assert_eq!(
                is_keyspace(*kind, name.as_bytes()),
                *want,
                "{kind:?} {name}"
            );
        }
    }

    #[test]
    fn other_primaries_forward_only_notifications() {
        let other = ConnKey::Keyspace(NodeAddr::from("127.0.0.1:7001"));
        let notification = Bytes::from_static(
            b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$18\r\n__keyspace@0__:foo\r\n$3\r\nset\r\n",
        );
        let published =
            Bytes::from_static(b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$4\r\nnews\r\n$2\r\nhi\r\n");
        let channel = Bytes::from_static(
            b"*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$3\r\nfoo\r\n",
        );
        let forwarded = |reply: &Bytes, key: &ConnKey| {
            matches!(classify(reply.clone(), key), Some(Event::Message(_)))
        };
        assert!(forwarded(&notification, &other));
        assert!(forwarded(&channel, &other));
        assert!(!forwarded(&published, &other));
        for m in [&notification, &published, &channel] {
            assert!(forwarded(m, &ConnKey::Home));
        }
    }

    #[test]
    fn publish_answers_the_proxy_count() {
        let counts = counts();
        let node = Bytes::from_static(b":0\r\n");
        let cases: &[(Kind, &str, &[u8])] = &[
            (Kind::Channel, "c1", b":3\r\n"), // two channel subscribers + one pattern
            (Kind::Channel, "cx", b":1\r\n"),
            (Kind::Channel, "x", b":0\r\n"),
            (Kind::Shard, "s1", b":1\r\n"),
            (Kind::Shard, "c1", b":0\r\n"), // shard channels have no patterns
        ];
        for (kind, channel, want) in cases {
            let got = published(node.clone(), *kind, channel.as_bytes(), &counts);
            assert_eq!(got.as_ref(), *want, "{kind:?} {channel}");
        }
        let error = Bytes::from_static(b"-CLUSTERDOWN The cluster is down\r\n");
        assert_eq!(
            published(error.clone(), Kind::Channel, b"c1", &counts),
            error
        );
    }
}

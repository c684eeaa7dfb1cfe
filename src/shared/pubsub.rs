//! The Pub/Sub subscriptions of every client of this proxy, counted across the workers, so
//! that `PUBLISH`, `SPUBLISH` and `PUBSUB` answer as one server would for the clients
//! connected through it.
//!
//! Each client's own subscriptions stay with its session (`dispatch::pubsub`); this only
//! counts, per channel, pattern or shard channel, how many clients hold it. Sessions add and
//! remove as they (un)subscribe, reset or disconnect; `PUBLISH` reads. Subscribers connected
//! to the nodes directly or through another proxy are not counted: one server's count is that
//! of its own clients.

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use super::glob;
use crate::command::route::Subscription as Kind;

type Counts = HashMap<Bytes, usize>;

/// Clients subscribed, per name, for each kind of subscription.
#[derive(Default)]
pub struct SubscriberCounts {
    channels: RwLock<Counts>,
    patterns: RwLock<Counts>,
    shard_channels: RwLock<Counts>,
}

impl SubscriberCounts {
    fn counts(&self, kind: Kind) -> &RwLock<Counts> {
        match kind {
            Kind::Channel => &self.channels,
            Kind::Pattern => &self.patterns,
            Kind::Shard => &self.shard_channels,
        }
    }

    // A count is a plain integer per name, written whole: a panic elsewhere can't leave it
    // half-updated, so a poisoned lock is still usable.
    fn read(&self, kind: Kind) -> RwLockReadGuard<'_, Counts> {
        self.counts(kind).read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, kind: Kind) -> RwLockWriteGuard<'_, Counts> {
        self.counts(kind).write().unwrap_or_else(|e| e.into_inner())
    }

    /// One more client subscribed to `name` (called once per client and name).
    pub fn add(&self, kind: Kind, name: &Bytes) {
        *self.write(kind).entry(name.clone()).or_insert(0) += 1;
    }

    /// One client less subscribed to `name`; the name is forgotten at zero.
    pub fn remove(&self, kind: Kind, name: &[u8]) {
        let mut counts = self.write(kind);
        if let Some(n) = counts.get_mut(name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(name);
            }
        }
    }

    /// The clients a `PUBLISH channel` reaches, counted as Redis does
    /// (`pubsubPublishMessage`): each client subscribed to the channel, plus, for every
    /// pattern that matches it, each client subscribed to that pattern (a client with the
    /// channel and two matching patterns receives, and counts, three messages).
    pub fn receivers(&self, channel: &[u8]) -> usize {
        let direct = self.subscribers(Kind::Channel, channel);
        let by_pattern: usize = self
            .read(Kind::Pattern)
            .iter()
            .filter(|(pattern, _)| glob::matches(pattern, channel))
            .map(|(_, n)| n)
            .sum();
        direct + by_pattern
    }

    /// Clients subscribed to `name` itself (`PUBSUB NUMSUB`, `SHARDNUMSUB`; `SPUBLISH`'s
    /// count with [`Kind::Shard`]: shard channels have no patterns).
    pub fn subscribers(&self, kind: Kind, name: &[u8]) -> usize {
        self.read(kind).get(name).copied().unwrap_or(0)
    }

    /// Patterns with at least one subscriber (`PUBSUB NUMPAT`: unique patterns).
    pub fn patterns(&self) -> usize {
        self.read(Kind::Pattern).len()
    }

    /// Names of `kind` with at least one subscriber, those matching `pattern` if one is given
    /// (`PUBSUB CHANNELS`, `SHARDCHANNELS`), in no particular order (as Redis).
    pub fn names(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.read(kind)
            .keys()
            .filter(|name| pattern.is_none_or(|p| glob::matches(p, name)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn publish_counts_channel_and_pattern_subscriptions_per_client() {
        let counts = SubscriberCounts::default();
        assert_eq!(counts.receivers(b"news.tech"), 0);
        // Client 1: the channel and two matching patterns; client 2: one of the patterns.
        counts.add(Kind::Channel, &b("news.tech"));
        counts.add(Kind::Pattern, &b("news.*"));
        counts.add(Kind::Pattern, &b("*.tech"));
        counts.add(Kind::Pattern, &b("news.*"));
        counts.add(Kind::Pattern, &b("sport.*"));
        assert_eq!(counts.receivers(b"news.tech"), 4);
        assert_eq!(counts.receivers(b"news.art"), 2);
        assert_eq!(counts.receivers(b"other"), 0);
        assert_eq!(counts.subscribers(Kind::Channel, b"news.tech"), 1);
        assert_eq!(counts.patterns(), 3);
        counts.remove(Kind::Pattern, b"news.*");
        assert_eq!(counts.patterns(), 3);
        counts.remove(Kind::Pattern, b"news.*");
        assert_eq!(counts.patterns(), 2);
        assert_eq!(counts.receivers(b"news.tech"), 2);
        // Removing what is not there changes nothing.
        counts.remove(Kind::Channel, b"never");
        counts.remove(Kind::Channel, b"news.tech");
        counts.remove(Kind::Channel, b"news.tech");
        assert_eq!(counts.receivers(b"news.tech"), 1);
    }

    #[test]
    fn shard_channels_are_counted_apart() {
        let counts = SubscriberCounts::default();
        counts.add(Kind::Shard, &b("s1"));
        counts.add(Kind::Shard, &b("s1"));
        counts.add(Kind::Pattern, &b("*"));
        assert_eq!(counts.subscribers(Kind::Shard, b"s1"), 2);
        assert_eq!(counts.subscribers(Kind::Channel, b"s1"), 0);
        assert_eq!(counts.names(Kind::Shard, None), vec![b("s1")]);
        assert!(counts.names(Kind::Channel, None).is_empty());
    }

    #[test]
    fn channel_names_filtered_by_pattern() {
        let counts = SubscriberCounts::default();
        for name in ["a1", "a2", "b1"] {
            counts.add(Kind::Channel, &b(name));
        }
        let mut names = counts.names(Kind::Channel, Some(b"a*"));
        names.sort();
        assert_eq!(names, vec![b("a1"), b("a2")]);
        assert_eq!(counts.names(Kind::Channel, None).len(), 3);
    }
}

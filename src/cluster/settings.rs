//! The server settings the proxy applied to every node (`CONFIG SET` through the proxy), kept
//! so that a node that joins the cluster later, or comes back, or is promoted, gets them too:
//! behind the proxy the cluster is one server, and one server does not forget its settings
//! when a node changes.
//!
//! The store sits here, with the topology, because the topology refresh is what sees nodes
//! join (it applies the settings to them, [`ServerSettings::apply_to`]); the all-or-none
//! `CONFIG SET` itself (read the old values, set everywhere, roll back) is a dispatch matter
//! and only records here what succeeded.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

use super::slot_map::{NodeAddr, SlotMap};
use crate::backend::connect::{query, Credentials};
use crate::resp::Value;

/// Parameter (lowercase, as the client named it) → value, in the order they were last set.
pub type Settings = Vec<(Bytes, Bytes)>;

#[derive(Default)]
pub struct ServerSettings {
    applied: Mutex<Settings>,
    /// The nodes (and whether primary) of the last map a refresh published: what joined is
    /// judged against them, not against the current map, which a MOVED may have patched
    /// with a node no refresh has seen yet.
    seen: Mutex<Vec<(NodeAddr, bool)>>,
    /// One `CONFIG SET` at a time across the workers: two interleaved would leave nodes with
    /// different values. Held across the whole change (reads, sets, roll-back).
    pub changing: tokio::sync::Mutex<()>,
}

impl ServerSettings {
    fn lock(&self) -> std::sync::MutexGuard<'_, Settings> {
        // A list of plain pairs, replaced entry by entry: still usable after a panic elsewhere.
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers settings every node accepted.
    pub fn record(&self, pairs: &[(Bytes, Bytes)]) {
        recorded(&mut self.lock(), pairs);
    }

    /// The nodes of `map` (a refresh's) that joined since the last refresh's map; remembers
    /// `map`'s nodes for the next time.
    pub fn joined_in(&self, map: &SlotMap) -> Vec<NodeAddr> {
        let now = roles(map);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let joined = joined(&seen, &now);
        *seen = now;
        joined
    }

    /// The settings applied so far, oldest first.
    pub fn applied(&self) -> Settings {
        self.lock().clone()
    }

    /// Applies the remembered settings to `nodes` (nodes that joined), one `CONFIG SET` per
    /// parameter in the order they were set, so that of two names for one parameter
    /// (`hash-max-ziplist-value`, `hash-max-listpack-value`) the last one set wins, as it did
    /// on the other nodes. Refusals and failures are logged: the node serves on regardless.
    pub async fn apply_to(&self, nodes: &[NodeAddr], credentials: &Credentials, timeout: Duration) {
        let settings = self.applied();
        if settings.is_empty() || nodes.is_empty() {
            return;
        }
        let each = nodes.iter().map(|node| {
            let settings = &settings;
            async move {
                for (name, value) in settings {
                    let args: [&[u8]; 4] = [b"CONFIG", b"SET", name, value];
                    let parameter = String::from_utf8_lossy(name);
                    match query(node, credentials, timeout, &args).await {
                        Ok(Value::Error(error)) => tracing::warn!(
                            %node,
                            %parameter,
                            error = %String::from_utf8_lossy(&error),
                            "a joining node refused a setting the others have"
                        ),
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%node, %parameter, %error, "could not apply a setting to a joining node");
                            return;
                        }
                    }
                }
                tracing::info!(%node, settings = settings.len(), "settings applied to a joining node");
            }
        });
        join_all(each).await;
    }
}

/// `pairs` set over `current`: a parameter set again moves to the end, so replaying the list
/// in order ends with the latest value of each parameter under any of its names.
pub fn recorded(current: &mut Settings, pairs: &[(Bytes, Bytes)]) {
    for (name, value) in pairs {
        current.retain(|(n, _)| n != name);
        current.push((name.clone(), value.clone()));
    }
}

/// Every node of `map` that routing uses, with whether it is a primary.
fn roles(map: &SlotMap) -> Vec<(NodeAddr, bool)> {
    let mut nodes: Vec<(NodeAddr, bool)> = map
        .shards()
        .iter()
        .map(|s| (s.primary.clone(), true))
        .collect();
    nodes.extend(
        map.shards()
            .iter()
            .flat_map(|s| s.replicas.iter().map(|r| (r.clone(), false))),
    );
    nodes
}

/// The nodes of `now` that were not in `before` in the same role: nodes that joined, came
/// back after being left out (failed, loading) or were promoted. They may lack the settings.
pub fn joined(before: &[(NodeAddr, bool)], now: &[(NodeAddr, bool)]) -> Vec<NodeAddr> {
    now.iter()
        .filter(|node| !before.contains(node))
        .map(|(addr, _)| addr.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::slot_map::Shard;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn settings_set_again_move_to_the_end() {
        let mut current = Settings::new();
        recorded(&mut current, &[(b("maxmemory"), b("1")), (b("a"), b("x"))]);
        recorded(&mut current, &[(b("maxmemory"), b("2"))]);
        assert_eq!(current, vec![(b("a"), b("x")), (b("maxmemory"), b("2"))]);
    }

    fn map(shards: &[(&str, &[&str])]) -> SlotMap {
        let count = shards.len() as u16;
        let width = 16384 / count;
        SlotMap::from_ranges(
            shards
                .iter()
                .enumerate()
                .map(|(i, (primary, replicas))| {
                    let start = i as u16 * width;
                    let end = if i as u16 + 1 == count {
                        16383
                    } else {
                        start + width - 1
                    };
                    let shard = Shard {
                        primary: NodeAddr::from(*primary),
                        primary_id: None,
                        replicas: replicas.iter().map(|r| NodeAddr::from(*r)).collect(),
                    };
                    (start, end, shard)
                })
                .collect(),
        )
    }

    #[test]
    fn nodes_that_joined_or_changed_role() {
        let before = map(&[("a:1", &["a:2"]), ("b:1", &[])]);
        let cases: Vec<(SlotMap, Vec<&str>)> = vec![
            (map(&[("a:1", &["a:2"]), ("b:1", &[])]), vec![]),
            // A replica added (or back from a failure).
            (map(&[("a:1", &["a:2"]), ("b:1", &["b:2"])]), vec!["b:2"]),
            // A failover: the replica is promoted, the old primary becomes its replica.
            (map(&[("a:2", &["a:1"]), ("b:1", &[])]), vec!["a:2", "a:1"]),
            // A node left: nothing to apply.
            (map(&[("a:1", &[]), ("b:1", &[])]), vec![]),
            // A new shard.
            (
                map(&[("a:1", &["a:2"]), ("b:1", &[]), ("c:1", &[])]),
                vec!["c:1"],
            ),
        ];
        for (after, want) in cases {
            let want: Vec<NodeAddr> = want.into_iter().map(NodeAddr::from).collect();
            assert_eq!(joined(&roles(&before), &roles(&after)), want);
        }
        // Judged against the last refresh's map.
        let settings = ServerSettings::default();
        assert_eq!(settings.joined_in(&before).len(), 3);
        assert_eq!(settings.joined_in(&before), Vec::<NodeAddr>::new());
    }
}

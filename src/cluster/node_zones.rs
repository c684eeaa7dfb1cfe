//! What the proxy knows about each node's availability zone, and where it learned it: the
//! configuration (`[backend.node_zones]`, which wins), the node's own `INFO server`
//! (`availability_zone`, Valkey 8.0+), or the topology reply (`CLUSTER SHARDS` lists it from
//! Valkey 9.1).
//!
//! The refresher asks a node once when it first appears in the map, and again every
//! [`RELEARN_AFTER`] (an operator may `CONFIG SET availability-zone`); a node that could not
//! be asked is asked again after [`RETRY_AFTER`]. Querying is the refresher's (`topology`);
//! this book only says whom to ask and lays what it knows over a map.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::slot_map::{NodeAddr, SlotMap};
use super::zones::ZoneSettings;

/// How long a learned zone is trusted before the node is asked again. Zones change only by
/// an operator's hand, and until the node is asked again its reads may cross a zone.
pub const RELEARN_AFTER: Duration = Duration::from_secs(60);

/// How soon a node that could not be asked is asked again: soon, but not on every refresh
/// (a MOVED storm asks for one every `refresh_min_interval_ms`, and a node that hangs would
/// hold each of them up to the connect timeout).
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// One node's zone as last asked.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Learned {
    /// `None`: the node reports no zone (or was never reached).
    zone: Option<String>,
    at: Instant,
    /// The last ask failed (`zone` is from before, if any).
    failed: bool,
}

/// The zone settings and what was learned from the nodes.
#[derive(Debug, Default)]
pub struct ZoneBook {
    settings: ZoneSettings,
    /// Only written by the refresher; a plain mutex (never held across an await).
    learned: Mutex<HashMap<NodeAddr, Learned>>,
}

impl ZoneBook {
    pub fn new(settings: ZoneSettings) -> ZoneBook {
        ZoneBook {
            settings,
            learned: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &ZoneSettings {
        &self.settings
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeAddr, Learned>> {
        // Entries are replaced whole: a panic elsewhere cannot leave one half-written.
        self.learned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether zones matter at all: without a zone of its own, a mapping or learning, the
    /// map is left as the cluster described it.
    fn in_use(&self) -> bool {
        let s = &self.settings;
        s.own.is_some() || !s.configured.is_empty() || s.learn
    }

    /// `map` with every node's zone (configured, else as the node answered when asked, else as
    /// the topology reply said) and
    /// each shard's nodes in the proxy's zone.
    pub fn apply(&self, map: SlotMap) -> SlotMap {
        if !self.in_use() {
            return map;
        }
        let learned = self.lock();
        map.with_zones(self.settings.own.as_deref(), |addr, reported| {
            // What a node said when asked is newer than the zone the map holds for it
            // (which, on a map laid over before, is an older answer).
            match (
                self.settings.configured.get(addr.as_str()),
                learned.get(addr),
            ) {
                (Some(zone), _) => Some(zone.clone()),
                (None, Some(asked)) => asked.zone.clone(),
                (None, None) => reported.map(str::to_string),
            }
        })
    }

    /// The routing nodes of `map` to ask for their zone at `now`: not configured, not
    /// reported by the topology reply, and never asked or asked too long ago.
    pub fn to_ask(&self, map: &SlotMap, now: Instant) -> Vec<NodeAddr> {
        if !self.settings.learn {
            return Vec::new();
        }
        let learned = self.lock();
        map.nodes()
            .into_iter()
            .filter(|addr| !self.settings.configured.contains_key(addr.as_str()))
            .filter(|addr| match learned.get(addr) {
                // A zone in the map that was not learned came with the topology reply.
                None => map.zone_of(addr).is_none(),
                Some(l) => {
                    let wait = if l.failed { RETRY_AFTER } else { RELEARN_AFTER };
                    now.saturating_duration_since(l.at) >= wait
                }
            })
            .collect()
    }

    /// Records the answers (`Err`: the node could not be asked) and forgets nodes no longer
    /// in `known`; returns whether a node's zone changed (the map must be laid over again).
    pub fn record(
        &self,
        answers: Vec<(NodeAddr, Result<Option<String>, String>)>,
        known: &[NodeAddr],
        now: Instant,
    ) -> bool {
        let mut learned = self.lock();
        learned.retain(|addr, _| known.contains(addr));
        let mut changed = false;
        for (node, answer) in answers {
            let before = learned.get(&node).and_then(|l| l.zone.clone());
            let entry = match answer {
                Ok(zone) => {
                    if zone != before {
                        tracing::info!(%node, zone = zone.as_deref().unwrap_or("none"), "node zone");
                        changed = true;
                    }
                    Learned {
                        zone,
                        at: now,
                        failed: false,
                    }
                }
                Err(error) => {
                    tracing::debug!(%node, %error, "cannot ask the node for its zone");
                    Learned {
                        zone: before,
                        at: now,
                        failed: true,
                    }
                }
            };
            learned.insert(node, entry);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::slot_map::{NodeInfo, Role, Shard};

    fn addr(name: &str) -> NodeAddr {
        NodeAddr::from(name)
    }

    /// Primary `p:1` with replicas `r:2` and `s:3`; `reported`: zones in the topology reply.
    fn map(reported: &[(&str, &str)]) -> SlotMap {
        let shard = Shard {
            primary: addr("p:1"),
            primary_id: None,
            replicas: vec![addr("r:2"), addr("s:3")],
        };
        let info = |name: &str, role| NodeInfo {
            addr: addr(name),
            id: None,
            role,
            primary: None,
            health: Some("online".into()),
            zone: reported
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, z)| z.to_string()),
        };
        SlotMap::from_ranges(vec![(0, 16383, shard)]).with_node_info(vec![
            info("p:1", Role::Primary),
            info("r:2", Role::Replica),
            info("s:3", Role::Replica),
        ])
    }

    fn book(configured: &[(&str, &str)], learn: bool) -> ZoneBook {
        ZoneBook::new(ZoneSettings {
            own: Some("a".into()),
            configured: configured
                .iter()
                .map(|(n, z)| (n.to_string(), z.to_string()))
                .collect::<BTreeMap<_, _>>(),
            learn,
        })
    }

    fn zones(map: &SlotMap) -> Vec<Option<&str>> {
        ["p:1", "r:2", "s:3"]
            .iter()
            .map(|n| map.zone_of(n))
            .collect()
    }

    #[test]
    fn configured_zones_win_then_learned_then_reported() {
        let now = Instant::now();
        let book = book(&[("r:2", "a")], true);
        // Asked: every routing node that is neither configured nor reported.
        let reported = map(&[("s:3", "b")]);
        assert_eq!(book.to_ask(&reported, now), vec![addr("p:1")]);
        let known = reported.nodes();
        let changed = book.record(
            vec![
                (addr("p:1"), Ok(Some("c".into()))),
                // A stale answer for a configured node does not override the configuration.
                (addr("r:2"), Ok(Some("z".into()))),
            ],
            &known,
            now,
        );
        assert!(changed);
        let laid = book.apply(reported);
        assert_eq!(zones(&laid), [Some("c"), Some("a"), Some("b")]);
        // Nothing more to ask until the zones are old.
        assert!(book.to_ask(&laid, now).is_empty());
        assert_eq!(book.to_ask(&laid, now + RELEARN_AFTER), vec![addr("p:1")]);
    }

    #[test]
    fn failed_asks_keep_the_old_zone_and_retry_sooner() {
        let now = Instant::now();
        let book = book(&[], true);
        let plain = map(&[]);
        let known = plain.nodes();
        assert_eq!(book.to_ask(&plain, now).len(), 3);
        book.record(
            vec![
                (addr("p:1"), Ok(Some("a".into()))),
                (addr("r:2"), Ok(None)),
                (addr("s:3"), Err("refused".into())),
            ],
            &known,
            now,
        );
        assert_eq!(zones(&book.apply(map(&[]))), [Some("a"), None, None]);
        assert_eq!(book.to_ask(&plain, now + RETRY_AFTER), vec![addr("s:3")]);
        // The same answers again: nothing changed.
        let again = vec![
            (addr("p:1"), Ok(Some("a".into()))),
            (addr("p:1"), Err("x".into())),
        ];
        assert!(!book.record(again, &known, now));
        assert_eq!(zones(&book.apply(map(&[]))), [Some("a"), None, None]);
        // A node that left the topology is forgotten.
        assert!(!book.record(Vec::new(), &[addr("r:2")], now));
        assert_eq!(zones(&book.apply(map(&[]))), [None, None, None]);
    }

    #[test]
    fn without_learning_nothing_is_asked() {
        let now = Instant::now();
        assert!(book(&[], false).to_ask(&map(&[]), now).is_empty());
        let unused = ZoneBook::default();
        assert_eq!(
            zones(&unused.apply(map(&[("p:1", "x")]))),
            [Some("x"), None, None]
        );
    }
}

//! An immutable snapshot of which node serves each slot.
//!
//! A new snapshot replaces the old one whole (readers hold an `Arc` to the one they started
//! with), so routing never sees a half-updated map.

use super::zones::{read_target, Locality, ReadTarget, ShardLocality};
use super::{Slot, SLOT_COUNT};
use crate::config::ReadFrom;

/// Marks a slot that no known primary serves.
const UNASSIGNED: u16 = u16::MAX;

pub use crate::backend::NodeAddr;

/// One shard: a primary and its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub primary: NodeAddr,
    pub primary_id: Option<String>,
    pub replicas: Vec<NodeAddr>,
}

/// A node's role as the cluster reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// What the cluster said about one node. Routing never reads it (it uses [`Shard`]); it is
/// kept for the admin views, which must also show nodes that routing leaves out (a failed
/// replica, a primary without slots), and for telling a shard that is down for good from one
/// that is failing over ([`SlotMap::slot_down`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub addr: NodeAddr,
    /// The cluster's node id (`CLUSTER MYID`); none for a standalone Redis.
    pub id: Option<String>,
    pub role: Role,
    /// The primary a replica follows.
    pub primary: Option<NodeAddr>,
    /// As the cluster reports it (`online`, `failed`, `loading`); `None` when the reply does
    /// not say (`CLUSTER SLOTS`, a standalone Redis).
    pub health: Option<String>,
    /// Its availability zone: what it reports (`availability-zone`) or the configured one;
    /// `None` when neither says (see `node_zones`).
    pub zone: Option<String>,
}

/// The nodes a read of one slot may go to: one is picked at random among `replicas`, and
/// `primary` when set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadCandidates<'m> {
    pub replicas: &'m [NodeAddr],
    pub primary: Option<&'m NodeAddr>,
    /// How a zone-aware policy counts the read; `None` for the other policies.
    pub locality: Option<Locality>,
}

impl<'m> ReadCandidates<'m> {
    /// The candidate at `index` (below [`ReadCandidates::len`]) and whether it is a replica.
    pub fn get(&self, index: usize) -> Option<(&'m NodeAddr, bool)> {
        match self.replicas.get(index) {
            Some(replica) => Some((replica, true)),
            None => self.primary.map(|p| (p, false)),
        }
    }

    /// How many nodes the read picks from.
    pub fn len(&self) -> usize {
        self.replicas.len() + usize::from(self.primary.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
pub struct SlotMap {
    /// Index into `shards` per slot, or `UNASSIGNED`.
    owners: Box<[u16]>,
    shards: Vec<Shard>,
    /// A plain (non-cluster) Redis behind the proxy: one node has every key, so nothing is
    /// split and no CROSSSLOT applies.
    standalone: bool,
    /// Every node the topology reply listed, for the admin views.
    node_info: Vec<NodeInfo>,
    /// Per shard (same index as `shards`), its nodes in the proxy's zone; empty until
    /// [`SlotMap::with_zones`], which routing then reads without comparing a zone name.
    locality: Vec<ShardLocality>,
}

impl SlotMap {
    /// Builds a map from `(first slot, last slot, shard)` ranges. Later ranges win on overlap.
    pub fn from_ranges(ranges: Vec<(u16, u16, Shard)>) -> SlotMap {
        let mut map = SlotMap {
            owners: vec![UNASSIGNED; SLOT_COUNT].into_boxed_slice(),
            shards: Vec::new(),
            standalone: false,
            node_info: Vec::new(),
            locality: Vec::new(),
        };
        for (first, last, shard) in ranges {
            let index = map.shard_index(shard);
            let last = usize::from(last).min(SLOT_COUNT - 1);
            // A whole range at once: slot by slot through an iterator cost about 500,000
            // instructions per map (callgrind), on every topology refresh.
            if let Some(owners) = map.owners.get_mut(usize::from(first)..=last) {
                owners.fill(index);
            }
        }
        map.drop_unused_shards();
        map
    }

    /// The map of a standalone Redis: every slot on `node`.
    pub fn standalone(node: NodeAddr) -> SlotMap {
        let info = NodeInfo {
            addr: node.clone(),
            id: None,
            role: Role::Primary,
            primary: None,
            health: None,
            zone: None,
        };
        let shard = Shard {
            primary: node,
            primary_id: None,
            replicas: Vec::new(),
        };
        let mut map = SlotMap::from_ranges(vec![(0, (SLOT_COUNT - 1) as u16, shard)])
            .with_node_info(vec![info]);
        map.standalone = true;
        map
    }

    /// The same map, describing its nodes with what the cluster reported about them.
    pub fn with_node_info(mut self, node_info: Vec<NodeInfo>) -> SlotMap {
        self.node_info = node_info;
        self
    }

    /// The same map with each node's zone, `zone_of(node, zone the map holds for it)`, and
    /// for each shard its nodes in the proxy's zone `own` (none without one).
    pub fn with_zones(
        mut self,
        own: Option<&str>,
        zone_of: impl Fn(&NodeAddr, Option<&str>) -> Option<String>,
    ) -> SlotMap {
        for info in &mut self.node_info {
            info.zone = zone_of(&info.addr, info.zone.as_deref());
        }
        let zones: Vec<(NodeAddr, Option<String>)> = self
            .shards
            .iter()
            .flat_map(|s| std::iter::once(&s.primary).chain(&s.replicas))
            .filter(|addr| !self.node_info.iter().any(|i| &i.addr == *addr))
            .map(|addr| (addr.clone(), zone_of(addr, None)))
            .collect();
        let zone = |addr: &NodeAddr| {
            self.node_info
                .iter()
                .find(|i| &i.addr == addr)
                .map(|i| i.zone.as_deref())
                .or_else(|| {
                    zones
                        .iter()
                        .find(|(a, _)| a == addr)
                        .map(|(_, z)| z.as_deref())
                })
                .flatten()
        };
        let locality = self
            .shards
            .iter()
            .map(|shard| ShardLocality::of(shard, own, zone))
            .collect();
        self.locality = locality;
        self
    }

    /// The zone the map holds for `addr`, if any.
    pub fn zone_of(&self, addr: &str) -> Option<&str> {
        self.node_info
            .iter()
            .find(|i| &*i.addr == addr)
            .and_then(|i| i.zone.as_deref())
    }

    /// The nodes a read of `slot` may go to under `policy` (`None`: no primary serves it).
    pub fn read_candidates(&self, slot: Slot, policy: ReadFrom) -> Option<ReadCandidates<'_>> {
        let index = self.shard_of(slot)?;
        let shard = self.shards.get(index)?;
        let local = self.locality.get(index);
        let local_replicas = local.map_or(&[][..], |l| l.local_replicas.as_slice());
        let primary_local = local.is_some_and(|l| l.primary_local);
        let target = read_target(
            policy,
            local_replicas.len(),
            primary_local,
            shard.replicas.len(),
        );
        let (replicas, primary) = match target {
            ReadTarget::LocalReplica => (local_replicas, None),
            ReadTarget::Replica => (shard.replicas.as_slice(), None),
            ReadTarget::ReplicaOrPrimary => (shard.replicas.as_slice(), Some(&shard.primary)),
            ReadTarget::LocalPrimary | ReadTarget::Primary => (&[][..], Some(&shard.primary)),
        };
        Some(ReadCandidates {
            replicas,
            primary,
            locality: Locality::of(policy, target),
        })
    }

    /// What the cluster reported about each node, in the order of its reply.
    pub fn node_info(&self) -> &[NodeInfo] {
        &self.node_info
    }

    pub fn is_standalone(&self) -> bool {
        self.standalone
    }

    /// An empty map: every slot unassigned.
    pub fn empty() -> SlotMap {
        SlotMap::from_ranges(Vec::new())
    }

    fn shard_index(&mut self, shard: Shard) -> u16 {
        if let Some(i) = self.shards.iter().position(|s| s.primary == shard.primary) {
            let existing = &mut self.shards[i];
            for r in shard.replicas {
                if !existing.replicas.contains(&r) {
                    existing.replicas.push(r);
                }
            }
            if existing.primary_id.is_none() {
                existing.primary_id = shard.primary_id;
            }
            return i as u16;
        }
        self.shards.push(shard);
        (self.shards.len() - 1) as u16
    }

    /// Keeps the shard list to primaries that own slots, sorted by address, so that the order
    /// of primaries (which SCAN cursors encode) is stable across equal topologies.
    fn drop_unused_shards(&mut self) {
        let mut used: Vec<bool> = vec![false; self.shards.len()];
        for &o in self.owners.iter() {
            if o != UNASSIGNED {
                used[usize::from(o)] = true;
            }
        }
        let mut order: Vec<usize> = (0..self.shards.len()).filter(|&i| used[i]).collect();
        order.sort_by(|&a, &b| self.shards[a].primary.cmp(&self.shards[b].primary));
        let mut remap = vec![UNASSIGNED; self.shards.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old] = new as u16;
        }
        for o in self.owners.iter_mut() {
            if *o != UNASSIGNED {
                *o = remap[usize::from(*o)];
            }
        }
        let old = std::mem::take(&mut self.shards);
        let mut old: Vec<Option<Shard>> = old.into_iter().map(Some).collect();
        self.shards = order.iter().filter_map(|&i| old[i].take()).collect();
        // The zones follow their shards (a MOVED to a new primary reorders them).
        if !self.locality.is_empty() {
            let old = std::mem::take(&mut self.locality);
            let mut old: Vec<Option<ShardLocality>> = old.into_iter().map(Some).collect();
            self.locality = order
                .iter()
                .map(|&i| old.get_mut(i).and_then(Option::take).unwrap_or_default())
                .collect();
        }
    }

    /// The primary serving `slot`.
    pub fn primary(&self, slot: Slot) -> Option<&NodeAddr> {
        let owner = *self.owners.get(slot.index())?;
        self.shards.get(usize::from(owner)).map(|s| &s.primary)
    }

    /// Whether `slot`'s shard is down with nothing to take over: the cluster reports its
    /// primary failed and none of its replicas online (a shard lost in a cluster that runs
    /// with `cluster-require-full-coverage no`). Waiting would not help; a shard whose
    /// primary is failing but has an online replica is not down (a failover is coming).
    pub fn slot_down(&self, slot: Slot) -> bool {
        let Some(shard) = self.shard_of(slot).and_then(|i| self.shards.get(i)) else {
            return false;
        };
        let health = |addr: &NodeAddr| {
            self.node_info
                .iter()
                .find(|info| &info.addr == addr)
                .and_then(|info| info.health.as_deref())
        };
        let failed = |h: Option<&str>| h.is_some_and(|h| h.starts_with("fail"));
        failed(health(&shard.primary))
            && !shard.replicas.iter().any(|r| health(r) == Some("online"))
    }

    /// The online replicas of the shard serving `slot`.
    pub fn replicas(&self, slot: Slot) -> &[NodeAddr] {
        self.shard_of(slot)
            .and_then(|i| self.shards.get(i))
            .map_or(&[], |s| s.replicas.as_slice())
    }

    /// Index of the shard serving `slot` in [`SlotMap::shards`].
    pub fn shard_of(&self, slot: Slot) -> Option<usize> {
        let owner = *self.owners.get(slot.index())?;
        (owner != UNASSIGNED).then_some(usize::from(owner))
    }

    /// Shards that serve at least one slot, sorted by primary address.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The primary of every shard, in shard order.
    pub fn primaries(&self) -> Vec<NodeAddr> {
        self.shards.iter().map(|s| s.primary.clone()).collect()
    }

    /// Every node known: primaries, then replicas.
    pub fn nodes(&self) -> Vec<NodeAddr> {
        let mut nodes = self.primaries();
        nodes.extend(self.shards.iter().flat_map(|s| s.replicas.iter().cloned()));
        nodes
    }

    /// Number of slots that have an owner.
    pub fn covered_slots(&self) -> usize {
        self.owners.iter().filter(|&&o| o != UNASSIGNED).count()
    }

    pub fn is_complete(&self) -> bool {
        self.covered_slots() == SLOT_COUNT
    }

    /// A copy in which `slot` belongs to `addr`: what a MOVED reply tells us, applied at once
    /// so that the next request for the slot goes straight to its new owner.
    pub fn with_moved(&self, slot: Slot, addr: &str) -> SlotMap {
        let mut next = self.clone();
        let index = match next.shards.iter().position(|s| &*s.primary == addr) {
            Some(i) => i as u16,
            None => {
                next.shards.push(Shard {
                    primary: NodeAddr::from(addr),
                    primary_id: None,
                    replicas: Vec::new(),
                });
                if !next.locality.is_empty() {
                    // Its zone is learned at the next refresh.
                    next.locality.push(ShardLocality::default());
                }
                (next.shards.len() - 1) as u16
            }
        };
        if let Some(owner) = next.owners.get_mut(slot.index()) {
            *owner = index;
        }
        next.drop_unused_shards();
        next
    }

    /// Ranges of slots without an owner, as `(first, last)`.
    pub fn uncovered_ranges(&self) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (slot, &owner) in self.owners.iter().enumerate() {
            if owner != UNASSIGNED {
                continue;
            }
            match out.last_mut() {
                Some((_, last)) if usize::from(*last) + 1 == slot => *last = slot as u16,
                _ => out.push((slot as u16, slot as u16)),
            }
        }
        out
    }

    /// Slot ranges per shard, for reports: `(first, last, shard index)`.
    pub fn ranges(&self) -> Vec<(u16, u16, usize)> {
        let mut out: Vec<(u16, u16, usize)> = Vec::new();
        for (slot, &owner) in self.owners.iter().enumerate() {
            if owner == UNASSIGNED {
                continue;
            }
            match out.last_mut() {
                Some((_, last, shard))
                    if *shard == usize::from(owner) && usize::from(*last) + 1 == slot =>
                {
                    *last = slot as u16
                }
                _ => out.push((slot as u16, slot as u16, usize::from(owner))),
            }
        }
        out
    }

    /// True when both maps route every slot to the same primary.
    ///
    /// Shards are matched by primary once, then slots compared as shard indices: comparing the
    /// primaries' addresses slot by slot cost about 1.2 million instructions per topology
    /// refresh (callgrind).
    pub fn same_routing(&self, other: &SlotMap) -> bool {
        let counterpart: Vec<Option<u16>> = self
            .shards
            .iter()
            .map(|mine| {
                let found = other.shards.iter().position(|o| o.primary == mine.primary);
                found.and_then(|i| u16::try_from(i).ok())
            })
            .collect();
        self.owners
            .iter()
            .zip(other.owners.iter())
            .all(|(&mine, &theirs)| {
                if mine == UNASSIGNED || theirs == UNASSIGNED {
                    return mine == theirs;
                }
                counterpart.get(usize::from(mine)).copied().flatten() == Some(theirs)
                    // Two shards of `other` with one primary (not in a map a cluster reports):
                    // compared by address after all.
                    || self.shards.get(usize::from(mine)).map(|s| &s.primary)
                        == other.shards.get(usize::from(theirs)).map(|s| &s.primary)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(addr: &str) -> Shard {
        Shard {
            primary: NodeAddr::from(addr),
            primary_id: None,
            replicas: vec![],
        }
    }

    #[test]
    fn ranges_and_moves() {
        let map = SlotMap::from_ranges(vec![
            (0, 5460, shard("b:2")),
            (5461, 10922, shard("a:1")),
            (10923, 16383, shard("c:3")),
        ]);
        assert!(map.is_complete());
        assert_eq!(&**map.primary(Slot::new(0).unwrap()).unwrap(), "b:2");
        assert_eq!(map.shards()[0].primary.as_ref(), "a:1");
        let moved = map.with_moved(Slot::new(0).unwrap(), "d:4");
        assert_eq!(&**moved.primary(Slot::new(0).unwrap()).unwrap(), "d:4");
        assert_eq!(&**moved.primary(Slot::new(1).unwrap()).unwrap(), "b:2");
        assert_eq!(moved.shards().len(), 4);
        assert_eq!(moved.ranges().len(), 4);
        assert!(!map.same_routing(&moved));
    }

    #[test]
    fn same_routing_agrees_with_comparing_every_slot_by_address() {
        let slot_by_slot = |a: &SlotMap, b: &SlotMap| {
            (0..SLOT_COUNT as u64)
                .filter_map(Slot::new)
                .all(|s| a.primary(s) == b.primary(s))
        };
        let thirds = SlotMap::from_ranges(vec![
            (0, 5460, shard("a:1")),
            (5461, 10922, shard("b:2")),
            (10923, 16383, shard("c:3")),
        ]);
        let maps = [
            thirds.clone(),
            // The same routing listed in another order, and with a replica more.
            SlotMap::from_ranges(vec![
                (10923, 16383, shard("c:3")),
                (0, 5460, shard("a:1")),
                (
                    5461,
                    10922,
                    Shard {
                        replicas: vec![NodeAddr::from("b:22")],
                        ..shard("b:2")
                    },
                ),
            ]),
            thirds.with_moved(Slot::new(0).unwrap(), "d:4"),
            thirds.with_moved(Slot::new(16383).unwrap(), "a:1"),
            // A slot nobody owns, at each end.
            SlotMap::from_ranges(vec![(1, 5460, shard("a:1")), (5461, 16383, shard("b:2"))]),
            SlotMap::from_ranges(vec![(0, 5460, shard("a:1")), (5461, 16382, shard("b:2"))]),
            SlotMap::from_ranges(vec![]),
            SlotMap::standalone(NodeAddr::from("a:1")),
            // Shard indices alike, primaries not.
            SlotMap::from_ranges(vec![(0, 8191, shard("a:1")), (8192, 16383, shard("b:2"))]),
            SlotMap::from_ranges(vec![(0, 8191, shard("a:1")), (8192, 16383, shard("c:3"))]),
        ];
        for (i, a) in maps.iter().enumerate() {
            for (j, b) in maps.iter().enumerate() {
                assert_eq!(a.same_routing(b), slot_by_slot(a, b), "maps {i} and {j}");
            }
        }
        assert!(maps[0].same_routing(&maps[1]));
        assert!(!maps[0].same_routing(&maps[2]));
    }

    #[test]
    fn a_shard_is_down_when_its_primary_failed_and_no_replica_is_online() {
        let info = |addr: &str, role: Role, health: &str| NodeInfo {
            addr: NodeAddr::from(addr),
            id: None,
            role,
            primary: None,
            health: Some(health.to_string()),
            zone: None,
        };
        let with_replica = Shard {
            replicas: vec![NodeAddr::from("r:9")],
            ..shard("p:1")
        };
        let cases: &[(&str, &str, bool)] = &[
            // primary, replica, down?
            ("online", "online", false),
            ("failed", "online", false),
            ("failed", "failed", true),
            ("failed", "loading", true),
            ("online", "failed", false),
        ];
        for &(primary, replica, down) in cases {
            let map =
                SlotMap::from_ranges(vec![(0, 16383, with_replica.clone())]).with_node_info(vec![
                    info("p:1", Role::Primary, primary),
                    info("r:9", Role::Replica, replica),
                ]);
            assert_eq!(
                map.slot_down(Slot::new(7).unwrap()),
                down,
                "{primary} {replica}"
            );
        }
        // Nothing reported (CLUSTER SLOTS): never down.
        let map = SlotMap::from_ranges(vec![(0, 16383, shard("p:1"))]);
        assert!(!map.slot_down(Slot::new(7).unwrap()));
    }

    #[test]
    fn gaps_are_unassigned() {
        let map = SlotMap::from_ranges(vec![(0, 99, shard("a:1")), (200, 16382, shard("b:2"))]);
        assert_eq!(map.covered_slots(), 16283);
        assert!(map.primary(Slot::new(100).unwrap()).is_none());
        assert_eq!(map.uncovered_ranges(), vec![(100, 199), (16383, 16383)]);
        assert!(SlotMap::empty().uncovered_ranges() == vec![(0, 16383)]);
    }
}

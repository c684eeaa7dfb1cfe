//! Availability zones: which nodes of a shard sit in the proxy's own zone, and where a read
//! goes under each read-from policy (`read_from`), as pure functions.
//!
//! A cross-zone read costs a network hop and, in the clouds, a transfer fee; the
//! `zone-affinity` policies keep reads in the proxy's zone when a node there can serve them.
//! Where each node's zone comes from (what it reports, the configured mapping) is
//! [`super::topology`]'s business; this module only compares names, once per map, so routing a
//! read is an index lookup and a random pick ([`super::SlotMap::read_candidates`]).

use std::collections::BTreeMap;

use super::slot_map::{NodeAddr, Shard};
use crate::config::ReadFrom;

/// The nodes of one shard in the proxy's zone, worked out when the map is built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardLocality {
    /// The shard's routing replicas that are in the proxy's zone, in the shard's order.
    pub local_replicas: Vec<NodeAddr>,
    /// Whether the shard's primary is in the proxy's zone.
    pub primary_local: bool,
}

impl ShardLocality {
    /// Which of `shard`'s nodes are in `own` zone; `zone_of` gives a node's zone, if known.
    /// Without a zone of its own the proxy has no local node.
    pub fn of<'z>(
        shard: &Shard,
        own: Option<&str>,
        zone_of: impl Fn(&NodeAddr) -> Option<&'z str>,
    ) -> ShardLocality {
        let Some(own) = own else {
            return ShardLocality::default();
        };
        let local = |addr: &NodeAddr| zone_of(addr) == Some(own);
        ShardLocality {
            local_replicas: shard
                .replicas
                .iter()
                .filter(|r| local(r))
                .cloned()
                .collect(),
            primary_local: local(&shard.primary),
        }
    }
}

/// The set of a shard's nodes a read picks from (at random, which spreads reads as evenly
/// as round robin without a shared counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadTarget {
    /// The replicas in the proxy's zone.
    LocalReplica,
    /// The primary, which is in the proxy's zone (`zone-affinity-all`).
    LocalPrimary,
    /// Any replica.
    Replica,
    /// Any replica or the primary (`any`).
    ReplicaOrPrimary,
    /// The primary.
    Primary,
}

/// Where a read of a shard goes. `local_replicas`: its replicas in the proxy's zone;
/// `primary_local`: whether its primary is there; `replicas`: its routing replicas. A proxy
/// without a zone has no local node, so the zone-affinity policies then act as
/// `prefer-replica`, as GLIDE's do without a client zone.
pub fn read_target(
    policy: ReadFrom,
    local_replicas: usize,
    primary_local: bool,
    replicas: usize,
) -> ReadTarget {
    let replica_else_primary = if replicas > 0 {
        ReadTarget::Replica
    } else {
        ReadTarget::Primary
    };
    match policy {
        ReadFrom::Primary => ReadTarget::Primary,
        ReadFrom::PreferReplica | ReadFrom::Replica => replica_else_primary,
        ReadFrom::Any => ReadTarget::ReplicaOrPrimary,
        ReadFrom::ZoneAffinity if local_replicas > 0 => ReadTarget::LocalReplica,
        ReadFrom::ZoneAffinity => replica_else_primary,
        ReadFrom::ZoneAffinityAll if local_replicas > 0 => ReadTarget::LocalReplica,
        ReadFrom::ZoneAffinityAll if primary_local => ReadTarget::LocalPrimary,
        ReadFrom::ZoneAffinityAll => replica_else_primary,
    }
}

/// Where a zone-aware read went, for `slotproxy_replica_reads_total{locality}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locality {
    /// A node in the proxy's zone (a replica, or the primary under `zone-affinity-all`).
    SameZone,
    /// A replica in another zone (or of unknown zone): no replica in the proxy's zone.
    OtherZone,
    /// The primary, not in the proxy's zone (or of unknown zone): the shard has no replica.
    Primary,
}

impl Locality {
    /// Every locality, in the order of [`Locality::index`].
    pub const ALL: [Locality; 3] = [Locality::SameZone, Locality::OtherZone, Locality::Primary];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Locality::SameZone => "same_zone",
            Locality::OtherZone => "other_zone",
            Locality::Primary => "primary",
        }
    }

    /// Position in [`Locality::ALL`], for arrays of counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The locality of a read sent to `target` under `policy`; `None` for policies that do
    /// not look at zones (nothing to count).
    pub fn of(policy: ReadFrom, target: ReadTarget) -> Option<Locality> {
        if !policy.is_zone_aware() {
            return None;
        }
        Some(match target {
            ReadTarget::LocalReplica | ReadTarget::LocalPrimary => Locality::SameZone,
            ReadTarget::Replica | ReadTarget::ReplicaOrPrimary => Locality::OtherZone,
            ReadTarget::Primary => Locality::Primary,
        })
    }
}

/// The zone of the `availability_zone` field of an `INFO server` reply (Valkey 8.0+); `None`
/// when the field is missing (Redis) or empty (not configured).
pub fn zone_from_info(info: &str) -> Option<String> {
    info.lines()
        .find_map(|line| line.strip_prefix("availability_zone:"))
        .map(str::trim)
        .filter(|zone| !zone.is_empty())
        .map(str::to_string)
}

/// Where the zone settings of the proxy come from: its own zone, the configured per-node
/// zones, and whether to ask nodes for theirs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneSettings {
    /// The proxy's zone (`zone`).
    pub own: Option<String>,
    /// Node address → zone (`[backend.node_zones]`); wins over what a node reports.
    pub configured: BTreeMap<String, String>,
    /// Ask each node for its zone (`INFO server`): on only under a zone-aware policy, so
    /// other policies cost no query.
    pub learn: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{Slot, SlotMap};

    /// A shard of nodes `name:1`.
    fn shard(primary: &str, replicas: &[&str]) -> Shard {
        let addr = |name: &str| NodeAddr::from(format!("{name}:1"));
        Shard {
            primary: addr(primary),
            primary_id: None,
            replicas: replicas.iter().map(|r| addr(r)).collect(),
        }
    }

    /// Node zones × the proxy's zone × policy → the nodes a read may go to, and how the read
    /// is counted. Nodes are named after their zone: `pa` is a primary in zone `a`, `r1b` a
    /// replica in `b`, `r9` a replica of unknown zone.
    #[test]
    fn reads_go_to_the_nearest_nodes_the_policy_allows() {
        use Locality as L;
        use ReadFrom::*;
        let zone_of = |addr: &NodeAddr| -> Option<&'static str> {
            let name = addr.as_str().split(':').next().unwrap_or_default();
            match name.chars().last() {
                Some(z @ 'a'..='c') => Some(match z {
                    'a' => "a",
                    'b' => "b",
                    _ => "c",
                }),
                _ => None,
            }
        };
        type Case = (
            &'static str,
            &'static [&'static str],
            Option<&'static str>,
            ReadFrom,
            &'static [&'static str],
            Option<Locality>,
        );
        let cases: &[Case] = &[
            // primary, replicas, the proxy's zone, policy → candidates, counted as
            (
                "pa",
                &["r1a", "r2b"],
                Some("a"),
                ZoneAffinity,
                &["r1a"],
                Some(L::SameZone),
            ),
            (
                "pa",
                &["r1a", "r2a", "r3b"],
                Some("a"),
                ZoneAffinity,
                &["r1a", "r2a"],
                Some(L::SameZone),
            ),
            (
                "pa",
                &["r1b", "r2c"],
                Some("a"),
                ZoneAffinity,
                &["r1b", "r2c"],
                Some(L::OtherZone),
            ),
            (
                "pa",
                &[],
                Some("a"),
                ZoneAffinity,
                &["pa"],
                Some(L::Primary),
            ),
            (
                "pb",
                &["r9"],
                Some("a"),
                ZoneAffinity,
                &["r9"],
                Some(L::OtherZone),
            ),
            // The same-zone replica first, even when the primary is local too.
            (
                "pa",
                &["r1a", "r2b"],
                Some("a"),
                ZoneAffinityAll,
                &["r1a"],
                Some(L::SameZone),
            ),
            (
                "pa",
                &["r1b", "r2c"],
                Some("a"),
                ZoneAffinityAll,
                &["pa"],
                Some(L::SameZone),
            ),
            (
                "pb",
                &["r1b", "r2c"],
                Some("a"),
                ZoneAffinityAll,
                &["r1b", "r2c"],
                Some(L::OtherZone),
            ),
            (
                "pb",
                &[],
                Some("a"),
                ZoneAffinityAll,
                &["pb"],
                Some(L::Primary),
            ),
            (
                "pa",
                &[],
                Some("a"),
                ZoneAffinityAll,
                &["pa"],
                Some(L::SameZone),
            ),
            // No zone of its own: prefer-replica.
            (
                "pa",
                &["r1a", "r2b"],
                None,
                ZoneAffinity,
                &["r1a", "r2b"],
                Some(L::OtherZone),
            ),
            (
                "pa",
                &["r1a", "r2b"],
                None,
                ZoneAffinityAll,
                &["r1a", "r2b"],
                Some(L::OtherZone),
            ),
            ("pa", &[], None, ZoneAffinityAll, &["pa"], Some(L::Primary)),
            // A zone no node is in.
            (
                "pa",
                &["r1a"],
                Some("z"),
                ZoneAffinityAll,
                &["r1a"],
                Some(L::OtherZone),
            ),
            // The other policies ignore zones and are not counted.
            ("pa", &["r1a", "r2b"], Some("a"), Primary, &["pa"], None),
            (
                "pa",
                &["r1a", "r2b"],
                Some("b"),
                PreferReplica,
                &["r1a", "r2b"],
                None,
            ),
            (
                "pa",
                &["r1a", "r2b"],
                Some("a"),
                Replica,
                &["r1a", "r2b"],
                None,
            ),
            ("pa", &[], Some("a"), Replica, &["pa"], None),
            (
                "pa",
                &["r1a", "r2b"],
                Some("a"),
                Any,
                &["r1a", "r2b", "pa"],
                None,
            ),
        ];
        for &(primary, replicas, own, policy, want, counted) in cases {
            let map = SlotMap::from_ranges(vec![(0, 16383, shard(primary, replicas))])
                .with_zones(own, |addr, _| zone_of(addr).map(str::to_string));
            let slot = Slot::new(42).unwrap();
            let got = map.read_candidates(slot, policy).unwrap();
            let names: Vec<&str> = got
                .replicas
                .iter()
                .chain(got.primary)
                .map(|n| n.as_str().trim_end_matches(":1"))
                .collect();
            let case = format!("{primary} {replicas:?} own={own:?} {policy:?}");
            assert_eq!(names, want, "{case}");
            assert_eq!(got.locality, counted, "{case}");
        }
    }

    #[test]
    fn the_zone_is_read_from_info_server() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "# Server\r\nredis_version:7.2.4\r\navailability_zone:us-east-1a\r\n",
                Some("us-east-1a"),
            ),
            ("# Server\r\navailability_zone:\r\nprocess_id:1\r\n", None),
            ("# Server\r\nredis_version:7.0.15\r\n", None),
        ];
        for (info, want) in cases {
            assert_eq!(zone_from_info(info).as_deref(), *want, "{info}");
        }
    }
}

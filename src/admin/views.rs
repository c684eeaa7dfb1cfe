//! The JSON bodies of `/readyz` and `/cluster/*`: readiness and the proxy's view of the
//! cluster, built from one slot-map snapshot and the refresher's [`BackendStatus`]. Pure
//! functions, so they are tested without sockets; the HTTP side lives in the parent module.

use std::time::Duration;

use serde::Serialize;

use crate::cluster::slot_map::{NodeInfo, Role};
use crate::cluster::topology::{BackendStatus, NodeFailure};
use crate::cluster::SlotMap;

/// Everything a view may show, read once per request.
pub struct Snapshot<'a> {
    pub map: &'a SlotMap,
    pub status: &'a BackendStatus,
    /// Time since the last successful refresh; `None` while no topology has been loaded.
    pub age: Option<Duration>,
    pub refreshes: u64,
    pub generation: u64,
    pub shutting_down: bool,
}

/// A node the proxy cannot use, and why.
#[derive(Debug, Serialize)]
pub struct Failure {
    pub node: String,
    pub error: String,
}

impl From<&NodeFailure> for Failure {
    fn from(f: &NodeFailure) -> Failure {
        Failure {
            node: f.node.to_string(),
            error: f.error.clone(),
        }
    }
}

/// The `/readyz` body. `reason` names the first blocking problem, in this order: shutting
/// down, credentials refused, no topology, uncovered slots, unreachable primaries.
#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The node that refused the credentials and its error text (Redis never echoes the
    /// password, and neither does the proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub covered_slots: usize,
    pub uncovered_slots: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable_primaries: Vec<Failure>,
    pub standalone: bool,
    pub slot_map_age_seconds: Option<f64>,
}

/// Primaries of the map that the cluster reports not online, or that the refresher could
/// not reach: their slots have no reachable primary.
fn unreachable_primaries(snap: &Snapshot<'_>) -> Vec<Failure> {
    snap.map
        .shards()
        .iter()
        .filter_map(|shard| {
            let addr = &*shard.primary;
            if let Some(error) = snap.status.unreachable_error(addr) {
                return Some(Failure {
                    node: addr.to_string(),
                    error: error.to_string(),
                });
            }
            let health = info_for(snap.map, addr).and_then(|i| i.health.as_deref())?;
            (health != "online").then(|| Failure {
                node: addr.to_string(),
                error: format!("the cluster reports this primary {health}"),
            })
        })
        .collect()
}

/// Whether the proxy can serve every key now, and if not, the first reason why (probes and
/// load balancers act on the status code; people read the reason).
pub fn readiness(snap: &Snapshot<'_>) -> Readiness {
    let covered = snap.map.covered_slots();
    let mut view = Readiness {
        ready: false,
        reason: None,
        node: None,
        error: None,
        covered_slots: covered,
        uncovered_slots: crate::cluster::SLOT_COUNT - covered,
        unreachable_primaries: Vec::new(),
        standalone: snap.map.is_standalone(),
        slot_map_age_seconds: snap.age.map(|a| a.as_secs_f64()),
    };
    if snap.shutting_down {
        view.reason = Some("shutting down");
    } else if let Some(failure) = &snap.status.auth_failure {
        view.reason = Some("backend authentication failed");
        view.node = Some(failure.node.to_string());
        view.error = Some(failure.error.clone());
    } else if snap.age.is_none() {
        view.reason = Some("topology not loaded");
    } else if view.uncovered_slots > 0 {
        view.reason = Some("slots not covered");
    } else {
        view.unreachable_primaries = unreachable_primaries(snap);
        if view.unreachable_primaries.is_empty() {
            view.ready = true;
        } else {
            view.reason = Some("primary unreachable");
        }
    }
    view
}

/// The `/cluster/info` body: a summary for dashboards.
#[derive(Debug, Serialize)]
pub struct ClusterInfo {
    /// `ok` when every slot has a primary, `incomplete` when some do, `empty` before any.
    pub state: &'static str,
    pub standalone: bool,
    pub slots_covered: usize,
    pub slots_uncovered: usize,
    pub uncovered_ranges: Vec<[u16; 2]>,
    pub shards: usize,
    pub primaries: usize,
    pub replicas: usize,
    pub slot_map_age_seconds: Option<f64>,
    pub refreshes: u64,
    /// Slot maps published so far (refreshes that changed nothing and MOVED patches count).
    pub slot_map_generation: u64,
    pub auth_failure: Option<Failure>,
    pub unreachable_nodes: Vec<Failure>,
}

/// The summary of `/cluster/info`.
pub fn cluster_info(snap: &Snapshot<'_>) -> ClusterInfo {
    let covered = snap.map.covered_slots();
    let nodes = nodes(snap);
    let primaries = nodes.iter().filter(|n| n.role == "primary").count();
    ClusterInfo {
        state: match covered {
            0 => "empty",
            crate::cluster::SLOT_COUNT => "ok",
            _ => "incomplete",
        },
        standalone: snap.map.is_standalone(),
        slots_covered: covered,
        slots_uncovered: crate::cluster::SLOT_COUNT - covered,
        uncovered_ranges: pairs(snap.map.uncovered_ranges()),
        shards: snap.map.shards().len(),
        primaries,
        replicas: nodes.len() - primaries,
        slot_map_age_seconds: snap.age.map(|a| a.as_secs_f64()),
        refreshes: snap.refreshes,
        slot_map_generation: snap.generation,
        auth_failure: snap.status.auth_failure.as_ref().map(Failure::from),
        unreachable_nodes: snap.status.unreachable.iter().map(Failure::from).collect(),
    }
}

/// One node in `/cluster/nodes`.
#[derive(Debug, Serialize)]
pub struct NodeView {
    pub id: Option<String>,
    pub address: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    /// The address of the primary a replica follows.
    pub primary: Option<String>,
    pub primary_id: Option<String>,
    /// The cluster's own view (`online`, `failed`, `loading`); `null` when it does not say.
    pub health: Option<String>,
    /// Its availability zone, as it reports it or as `[backend.node_zones]` says; `null`
    /// when neither does.
    pub zone: Option<String>,
    /// The proxy's view: false when its last query to the node failed.
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Slot ranges this node serves as primary in the proxy's map, `[first, last]`.
    pub slots: Vec<[u16; 2]>,
}

/// The `/cluster/nodes` body.
#[derive(Debug, Serialize)]
pub struct NodesView {
    pub nodes: Vec<NodeView>,
}

fn info_for<'m>(map: &'m SlotMap, addr: &str) -> Option<&'m NodeInfo> {
    map.node_info().iter().find(|n| &*n.addr == addr)
}

fn pairs(ranges: Vec<(u16, u16)>) -> Vec<[u16; 2]> {
    ranges.into_iter().map(|(a, b)| [a, b]).collect()
}

/// Every node the cluster listed, plus any the map routes to that it did not list (a MOVED
/// target learned between refreshes), sorted by address.
fn nodes(snap: &Snapshot<'_>) -> Vec<NodeView> {
    let map = snap.map;
    let ranges = map.ranges();
    let mut listed: Vec<NodeInfo> = map.node_info().to_vec();
    for shard in map.shards() {
        if !listed.iter().any(|n| n.addr == shard.primary) {
            listed.push(NodeInfo {
                addr: shard.primary.clone(),
                id: shard.primary_id.clone(),
                role: Role::Primary,
                primary: None,
                health: None,
                zone: None,
            });
        }
        for replica in &shard.replicas {
            if !listed.iter().any(|n| n.addr == *replica) {
                listed.push(NodeInfo {
                    addr: replica.clone(),
                    id: None,
                    role: Role::Replica,
                    primary: Some(shard.primary.clone()),
                    health: None,
                    zone: None,
                });
            }
        }
    }
    listed.sort_by(|a, b| a.addr.cmp(&b.addr));
    listed
        .into_iter()
        .map(|info| {
            let shard = map.shards().iter().position(|s| s.primary == info.addr);
            let slots = match shard {
                Some(index) => ranges
                    .iter()
                    .filter(|&&(_, _, s)| s == index)
                    .map(|&(a, b, _)| [a, b])
                    .collect(),
                None => Vec::new(),
            };
            let error = snap
                .status
                .unreachable_error(&info.addr)
                .map(str::to_string);
            let primary_id = info
                .primary
                .as_ref()
                .and_then(|p| info_for(map, p))
                .and_then(|p| p.id.clone());
            NodeView {
                id: info.id,
                address: info.addr.to_string(),
                role: match info.role {
                    Role::Primary => "primary",
                    Role::Replica => "replica",
                },
                primary: info.primary.map(|p| p.to_string()),
                primary_id,
                health: info.health,
                zone: info.zone,
                reachable: error.is_none(),
                error,
                slots,
            }
        })
        .collect()
}

/// The node list of `/cluster/nodes`.
pub fn cluster_nodes(snap: &Snapshot<'_>) -> NodesView {
    NodesView { nodes: nodes(snap) }
}

/// One slot range in `/cluster/slots`: who serves it.
#[derive(Debug, Serialize)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
    pub primary: String,
    pub primary_id: Option<String>,
    /// Online replicas of the range's shard (those the proxy may read from).
    pub replicas: Vec<String>,
}

/// The `/cluster/slots` body.
#[derive(Debug, Serialize)]
pub struct SlotsView {
    pub covered: usize,
    pub uncovered: usize,
    pub ranges: Vec<SlotRange>,
    pub uncovered_ranges: Vec<[u16; 2]>,
}

/// The slot ranges of `/cluster/slots`, in slot order.
pub fn cluster_slots(snap: &Snapshot<'_>) -> SlotsView {
    let map = snap.map;
    let covered = map.covered_slots();
    let ranges = map
        .ranges()
        .into_iter()
        .filter_map(|(first, last, index)| {
            let shard = map.shards().get(index)?;
            Some(SlotRange {
                first,
                last,
                primary: shard.primary.to_string(),
                primary_id: shard.primary_id.clone(),
                replicas: shard.replicas.iter().map(|r| r.to_string()).collect(),
            })
        })
        .collect();
    SlotsView {
        covered,
        uncovered: crate::cluster::SLOT_COUNT - covered,
        ranges,
        uncovered_ranges: pairs(map.uncovered_ranges()),
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::NodeAddr;

    use super::*;
    use crate::cluster::slot_map::Shard;

    fn shard(primary: &str, replica: &str) -> Shard {
        Shard {
            primary: NodeAddr::from(primary),
            primary_id: Some(format!("id-{primary}")),
            replicas: vec![NodeAddr::from(replica)],
        }
    }

    fn info(addr: &str, role: Role, primary: Option<&str>, health: &str) -> NodeInfo {
        NodeInfo {
            addr: NodeAddr::from(addr),
            id: Some(format!("id-{addr}")),
            role,
            primary: primary.map(NodeAddr::from),
            health: Some(health.to_string()),
            zone: None,
        }
    }

    fn two_shards() -> SlotMap {
        SlotMap::from_ranges(vec![
            (0, 8191, shard("a:1", "c:3")),
            (8192, 16383, shard("b:2", "d:4")),
        ])
        .with_node_info(vec![
            info("a:1", Role::Primary, None, "online"),
            info("c:3", Role::Replica, Some("a:1"), "online"),
            info("b:2", Role::Primary, None, "online"),
            info("d:4", Role::Replica, Some("b:2"), "online"),
        ])
    }

    fn snapshot<'a>(map: &'a SlotMap, status: &'a BackendStatus) -> Snapshot<'a> {
        Snapshot {
            map,
            status,
            age: Some(Duration::from_millis(1500)),
            refreshes: 3,
            generation: 2,
            shutting_down: false,
        }
    }

    #[test]
    fn complete_map_is_ready() {
        let (map, status) = (two_shards(), BackendStatus::default());
        let ready = readiness(&snapshot(&map, &status));
        assert!(ready.ready);
        assert_eq!(ready.reason, None);
        let json = serde_json::to_value(&ready).unwrap();
        assert_eq!(json["ready"], true);
        assert_eq!(json["covered_slots"], 16384);
        assert!(json.get("reason").is_none());
    }

    #[test]
    fn reasons_in_order_of_importance() {
        let map = two_shards();
        let mut status = BackendStatus {
            auth_failure: Some(NodeFailure {
                node: NodeAddr::from("a:1"),
                error: "WRONGPASS invalid username-password pair".into(),
            }),
            unreachable: vec![NodeFailure {
                node: NodeAddr::from("b:2"),
                error: "connection refused".into(),
            }],
        };
        let mut snap = snapshot(&map, &status);
        snap.shutting_down = true;
        assert_eq!(readiness(&snap).reason, Some("shutting down"));
        snap.shutting_down = false;
        let auth = readiness(&snap);
        assert_eq!(auth.reason, Some("backend authentication failed"));
        assert_eq!(auth.node.as_deref(), Some("a:1"));
        status.auth_failure = None;
        let snap = snapshot(&map, &status);
        let down = readiness(&snap);
        assert_eq!(down.reason, Some("primary unreachable"));
        assert_eq!(down.unreachable_primaries[0].node, "b:2");

        let empty = SlotMap::empty();
        let mut snap = snapshot(&empty, &status);
        snap.age = None;
        assert_eq!(readiness(&snap).reason, Some("topology not loaded"));
        let partial = SlotMap::from_ranges(vec![(0, 99, shard("a:1", "c:3"))]);
        let ready = readiness(&snapshot(&partial, &status));
        assert_eq!(ready.reason, Some("slots not covered"));
        assert_eq!(ready.uncovered_slots, 16284);
    }

    #[test]
    fn a_primary_the_cluster_reports_failed_is_not_ready() {
        let map = SlotMap::from_ranges(vec![(0, 16383, shard("a:1", "c:3"))])
            .with_node_info(vec![info("a:1", Role::Primary, None, "failed")]);
        let status = BackendStatus::default();
        let ready = readiness(&snapshot(&map, &status));
        assert_eq!(ready.reason, Some("primary unreachable"));
    }

    #[test]
    fn nodes_and_slots_views() {
        let map = two_shards();
        let status = BackendStatus {
            auth_failure: None,
            unreachable: vec![NodeFailure {
                node: NodeAddr::from("d:4"),
                error: "timed out".into(),
            }],
        };
        let snap = snapshot(&map, &status);
        let nodes = cluster_nodes(&snap).nodes;
        let addrs: Vec<&str> = nodes.iter().map(|n| n.address.as_str()).collect();
        assert_eq!(addrs, ["a:1", "b:2", "c:3", "d:4"]);
        assert_eq!(nodes[0].slots, vec![[0, 8191]]);
        assert_eq!(nodes[2].role, "replica");
        assert_eq!(nodes[2].primary.as_deref(), Some("a:1"));
        assert_eq!(nodes[2].primary_id.as_deref(), Some("id-a:1"));
        assert!(nodes[2].slots.is_empty());
        assert!(!nodes[3].reachable);
        assert_eq!(nodes[3].error.as_deref(), Some("timed out"));

        let slots = cluster_slots(&snap);
        assert_eq!(slots.covered, 16384);
        assert_eq!(slots.ranges.len(), 2);
        assert_eq!(slots.ranges[1].first, 8192);
        assert_eq!(slots.ranges[1].primary, "b:2");
        assert_eq!(slots.ranges[1].replicas, vec!["d:4".to_string()]);

        let info = cluster_info(&snap);
        assert_eq!(info.state, "ok");
        assert_eq!((info.shards, info.primaries, info.replicas), (2, 2, 2));
        assert_eq!(info.unreachable_nodes.len(), 1);
    }
}

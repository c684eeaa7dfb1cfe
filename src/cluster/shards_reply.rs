//! Turning `CLUSTER SHARDS` (Redis 7) or `CLUSTER SLOTS` replies into a [`SlotMap`].

use std::collections::HashMap;

use super::slot_map::{NodeAddr, NodeInfo, Role, Shard, SlotMap};
use super::SLOT_COUNT;
use crate::backend::addr::host_of;
use crate::resp::Value;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("unexpected {command} reply from {node}: {detail}")]
    BadReply {
        command: &'static str,
        node: String,
        detail: &'static str,
    },
    /// A shard with slots lists two online primaries: Valkey 8.0 groups nodes by shard id,
    /// and for a while after a manual failover other nodes still list the demoted primary as
    /// a primary next to the promoted one. `CLUSTER SLOTS`, which names one owner per slot
    /// range, says which one serves.
    #[error("CLUSTER SHARDS from {node} lists two online primaries for one shard")]
    AmbiguousPrimary { node: String },
}

/// Formats `host:port`, bracketing IPv6 literals.
pub fn node_addr(host: &str, port: i64) -> NodeAddr {
    if host.contains(':') && !host.starts_with('[') {
        NodeAddr::from(format!("[{host}]:{port}"))
    } else {
        NodeAddr::from(format!("{host}:{port}"))
    }
}

/// Resolves an announced endpoint: NULL and `""` mean "the host you asked", `"?"` an unknown node.
fn endpoint(value: Option<&Value>, asked_host: &str) -> Option<String> {
    match value {
        None | Some(Value::Nil) => Some(asked_host.to_string()),
        Some(v) => match v.as_str() {
            Some("") => Some(asked_host.to_string()),
            Some("?") => None,
            Some(s) => Some(s.to_string()),
            None => None,
        },
    }
}

/// The address to reach a `CLUSTER SHARDS` node entry at. A node may announce a plain `port`
/// and a `tls-port`; `tls` picks the one the proxy speaks, falling back to the other (a
/// cluster with `--port 0` lists only `tls-port`).
fn shard_node_addr(node: &Value, asked_host: &str, tls: bool) -> Option<NodeAddr> {
    let (first, second) = if tls {
        ("tls-port", "port")
    } else {
        ("port", "tls-port")
    };
    let port = node
        .field(first)
        .and_then(Value::as_int)
        .or_else(|| node.field(second).and_then(Value::as_int))?;
    let host = endpoint(node.field("endpoint"), asked_host)?;
    Some(node_addr(&host, port))
}

/// Node address → the hostname it announces (`cluster-announce-hostname`), from a
/// `CLUSTER SHARDS` reply: the name its TLS certificate is checked against.
pub fn announced_hostnames(reply: &Value, asked: &str, tls: bool) -> HashMap<String, String> {
    let asked_host = host_of(asked);
    let nodes = reply
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|shard| shard.field("nodes").and_then(Value::as_array))
        .flatten();
    nodes
        .filter_map(|node| {
            let hostname = node.field("hostname").and_then(Value::as_str)?;
            let addr = shard_node_addr(node, asked_host, tls)?;
            (!hostname.is_empty()).then(|| (addr.to_string(), hostname.to_string()))
        })
        .collect()
}

/// Parses a `CLUSTER SHARDS` reply (`tls`: the proxy reaches nodes on their `tls-port`).
/// Nodes reported as `failed` are left out of the replica lists; a shard whose primary is
/// failed keeps its slots (they are still its until a failover), so requests for them fail
/// fast instead of being sent elsewhere.
///
/// A replica whose replication offset is more than `max_replica_lag` bytes behind its
/// primary's is left out of the replica lists too (0: no limit), so replica reads don't serve
/// data that far behind; it is back once it catches up, at a later refresh. The offsets are
/// the answering node's view (its own exact, the others' from gossip, about a second old).
pub fn parse_shards(
    reply: &Value,
    asked: &str,
    tls: bool,
    max_replica_lag: u64,
) -> Result<SlotMap, TopologyError> {
    let bad = |detail| TopologyError::BadReply {
        command: "CLUSTER SHARDS",
        node: asked.to_string(),
        detail,
    };
    let asked_host = host_of(asked);
    let shards = reply.as_array().ok_or_else(|| bad("not an array"))?;
    let mut ranges = Vec::new();
    let mut node_info = Vec::new();
    for shard in shards {
        let slots = shard
            .field("slots")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("shard without slots"))?;
        let nodes = shard
            .field("nodes")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("shard without nodes"))?;
        let mut primary = None;
        let mut online_primaries = 0;
        let mut replicas = Vec::new();
        let listed = node_info.len();
        for node in nodes {
            let Some(addr) = shard_node_addr(node, asked_host, tls) else {
                continue;
            };
            let role = node.field("role").and_then(Value::as_str).unwrap_or("");
            let health = node
                .field("health")
                .and_then(Value::as_str)
                .unwrap_or("online");
            let id = node.field("id").and_then(Value::as_str).map(str::to_string);
            let offset = node.field("replication-offset").and_then(Value::as_int);
            node_info.push(NodeInfo {
                addr: addr.clone(),
                id: id.clone(),
                role: if role == "master" {
                    Role::Primary
                } else {
                    Role::Replica
                },
                primary: None,
                health: Some(health.to_string()),
                zone: reported_zone(node),
            });
            if role == "master" {
                online_primaries += usize::from(health == "online");
                // A failed former primary may still be listed as a master after its replica
                // took over: the healthy one wins.
                let healthy = health == "online";
                if primary
                    .as_ref()
                    .is_none_or(|(_, _, was_healthy, _)| healthy && !was_healthy)
                {
                    primary = Some((addr, id, healthy, offset));
                }
            } else if health == "online" {
                replicas.push((addr, offset));
            }
        }
        if online_primaries > 1 && !slots.is_empty() {
            return Err(TopologyError::AmbiguousPrimary {
                node: asked.to_string(),
            });
        }
        let Some((primary, primary_id, _, primary_offset)) = primary else {
            continue;
        };
        let replicas = replicas
            .into_iter()
            .filter(|(_, offset)| match (primary_offset, offset) {
                (Some(p), Some(r)) if max_replica_lag > 0 => {
                    u64::try_from(p.saturating_sub(*r)).unwrap_or(0) <= max_replica_lag
                }
                _ => true,
            })
            .map(|(addr, _)| addr)
            .collect();
        for info in node_info.iter_mut().skip(listed) {
            if info.role == Role::Replica {
                info.primary = Some(primary.clone());
            }
        }
        let shard = Shard {
            primary,
            primary_id,
            replicas,
        };
        for pair in slots.chunks(2) {
            let (first, last) = slot_range(pair).ok_or_else(|| bad("bad slot range"))?;
            ranges.push((first, last, shard.clone()));
        }
    }
    Ok(SlotMap::from_ranges(ranges).with_node_info(node_info))
}

/// The availability zone a `CLUSTER SHARDS` node entry names (Valkey 9.1 lists it; the
/// spelling of INFO's field is accepted too); `None` when absent or empty.
fn reported_zone(node: &Value) -> Option<String> {
    ["availability-zone", "availability_zone"]
        .iter()
        .find_map(|name| node.field(name).and_then(Value::as_str))
        .filter(|zone| !zone.is_empty())
        .map(str::to_string)
}

/// The `first, last` slot bounds at the start of `items`, if both are valid slots in order.
fn slot_range(items: &[Value]) -> Option<(u16, u16)> {
    let bound = |i: usize| {
        let n = items.get(i)?.as_int()?;
        u16::try_from(n)
            .ok()
            .filter(|&n| usize::from(n) < SLOT_COUNT)
    };
    let (first, last) = (bound(0)?, bound(1)?);
    (first <= last).then_some((first, last))
}

/// Parses a `CLUSTER SLOTS` reply (the fallback before Redis 7).
pub fn parse_slots(reply: &Value, asked: &str) -> Result<SlotMap, TopologyError> {
    let bad = |detail| TopologyError::BadReply {
        command: "CLUSTER SLOTS",
        node: asked.to_string(),
        detail,
    };
    let asked_host = host_of(asked);
    let entries = reply.as_array().ok_or_else(|| bad("not an array"))?;
    let mut ranges = Vec::new();
    let mut node_info: Vec<NodeInfo> = Vec::new();
    for entry in entries {
        let items = entry
            .as_array()
            .ok_or_else(|| bad("range is not an array"))?;
        let (first, last) = slot_range(items).ok_or_else(|| bad("bad slot range"))?;
        let mut nodes = items.iter().skip(2).filter_map(|n| {
            let n = n.as_array()?;
            let host = endpoint(n.first(), asked_host)?;
            let port = n.get(1)?.as_int()?;
            let id = n.get(2).and_then(Value::as_str).map(str::to_string);
            Some((node_addr(&host, port), id))
        });
        let Some((primary, primary_id)) = nodes.next() else {
            continue;
        };
        describe(&mut node_info, &primary, primary_id.clone(), None);
        let replicas: Vec<NodeAddr> = nodes
            .map(|(addr, id)| {
                describe(&mut node_info, &addr, id, Some(&primary));
                addr
            })
            .collect();
        ranges.push((
            first,
            last,
            Shard {
                primary,
                primary_id,
                replicas,
            },
        ));
    }
    Ok(SlotMap::from_ranges(ranges).with_node_info(node_info))
}

/// Adds a node seen in `CLUSTER SLOTS` once (a primary appears once per slot range).
fn describe(
    node_info: &mut Vec<NodeInfo>,
    addr: &NodeAddr,
    id: Option<String>,
    primary: Option<&NodeAddr>,
) {
    if node_info.iter().any(|n| n.addr == *addr) {
        return;
    }
    node_info.push(NodeInfo {
        addr: addr.clone(),
        id,
        role: if primary.is_some() {
            Role::Replica
        } else {
            Role::Primary
        },
        primary: primary.cloned(),
        health: None,
        zone: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Slot;

    fn parse(raw: &[u8]) -> Value {
        Value::parse(raw).unwrap().unwrap().0
    }

    #[test]
    fn shards_reply() {
        let raw = b"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n\
*12\r\n$2\r\nid\r\n$3\r\nabc\r\n$4\r\nport\r\n:7000\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n\
*12\r\n$2\r\nid\r\n$3\r\ndef\r\n$4\r\nport\r\n:7001\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
        let map = parse_shards(&parse(raw), "10.0.0.1:7000", false, 0).unwrap();
        assert!(map.is_complete());
        assert_eq!(
            &**map.primary(Slot::new(100).unwrap()).unwrap(),
            "127.0.0.1:7000"
        );
        assert_eq!(
            map.shards()[0].replicas,
            vec![NodeAddr::from("10.0.0.1:7001")]
        );
        assert_eq!(map.shards()[0].primary_id.as_deref(), Some("abc"));
        let info = map.node_info();
        assert_eq!(info.len(), 2);
        assert_eq!(info[1].role, Role::Replica);
        assert_eq!(info[1].id.as_deref(), Some("def"));
        assert_eq!(info[1].primary.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(info[1].health.as_deref(), Some("online"));
    }

    /// Valkey 8.0 right after a manual failover: other nodes list the demoted primary as a
    /// primary of the same shard, next to the promoted one.
    #[test]
    fn two_online_primaries_in_one_shard_are_ambiguous() {
        let node = |id: &str, port: u16, role: &str| {
            format!(
                "*10\r\n$2\r\nid\r\n${}\r\n{id}\r\n$4\r\nport\r\n:{port}\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n${}\r\n{role}\r\n$6\r\nhealth\r\n$6\r\nonline\r\n",
                id.len(),
                role.len()
            )
        };
        let shard = |second: &str| {
            format!(
                "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n{}{}",
                node("old", 7000, "master"),
                node("new", 7001, second),
            )
        };
        let ambiguous = parse(shard("master").as_bytes());
        assert!(matches!(
            parse_shards(&ambiguous, "127.0.0.1:7002", false, 0),
            Err(TopologyError::AmbiguousPrimary { .. })
        ));
        let clear = parse(shard("replica").as_bytes());
        assert!(parse_shards(&clear, "127.0.0.1:7002", false, 0).is_ok());
    }

    #[test]
    fn lagging_replicas_serve_no_reads() {
        let node = |id: &str, port: u16, role: &str, offset: i64| {
            format!(
                "*12\r\n$2\r\nid\r\n${}\r\n{id}\r\n$4\r\nport\r\n:{port}\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n${}\r\n{role}\r\n$18\r\nreplication-offset\r\n:{offset}\r\n$6\r\nhealth\r\n$6\r\nonline\r\n",
                id.len(),
                role.len()
            )
        };
        let raw = format!(
            "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*3\r\n{}{}{}",
            node("p", 7000, "master", 50_000_000),
            node("near", 7001, "replica", 49_999_000),
            node("far", 7002, "replica", 10_000_000),
        );
        let reply = parse(raw.as_bytes());
        let replicas = |lag| {
            parse_shards(&reply, "127.0.0.1:7000", false, lag)
                .unwrap()
                .shards()[0]
                .replicas
                .clone()
        };
        assert_eq!(replicas(1_000_000), vec![NodeAddr::from("127.0.0.1:7001")]);
        assert_eq!(replicas(0).len(), 2, "0 means no lag limit");
        assert_eq!(replicas(40_000_000).len(), 2);
    }

    #[test]
    fn a_zone_listed_with_a_node_is_kept() {
        let node = |port: u16, role: &str, zone: &str| {
            format!(
                "*10\r\n$4\r\nport\r\n:{port}\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n${}\r\n{role}\r\n$6\r\nhealth\r\n$6\r\nonline\r\n$17\r\navailability-zone\r\n${}\r\n{zone}\r\n",
                role.len(),
                zone.len()
            )
        };
        let raw = format!(
            "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n{}{}",
            node(7000, "master", "us-east-1a"),
            node(7001, "replica", ""),
        );
        let map = parse_shards(&parse(raw.as_bytes()), "127.0.0.1:7000", false, 0).unwrap();
        let zones: Vec<Option<&str>> = map.node_info().iter().map(|n| n.zone.as_deref()).collect();
        assert_eq!(zones, [Some("us-east-1a"), None]);
    }

    #[test]
    fn tls_port_and_hostname() {
        let raw = b"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n\
*12\r\n$4\r\nport\r\n:6379\r\n$8\r\ntls-port\r\n:6380\r\n$8\r\nendpoint\r\n$8\r\n10.0.0.1\r\n$8\r\nhostname\r\n$6\r\nnode-a\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
        let reply = parse(raw);
        let slot = Slot::new(0).unwrap();
        let plain = parse_shards(&reply, "10.0.0.1:6379", false, 0).unwrap();
        assert_eq!(&**plain.primary(slot).unwrap(), "10.0.0.1:6379");
        let tls = parse_shards(&reply, "10.0.0.1:6380", true, 0).unwrap();
        assert_eq!(&**tls.primary(slot).unwrap(), "10.0.0.1:6380");
        let names = announced_hostnames(&reply, "10.0.0.1:6380", true);
        assert_eq!(
            names.get("10.0.0.1:6380").map(String::as_str),
            Some("node-a")
        );
    }

    #[test]
    fn slots_reply() {
        let raw = b"*2\r\n*4\r\n:0\r\n:8000\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$3\r\nabc\r\n*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$3\r\nxyz\r\n\
*3\r\n:8001\r\n:16383\r\n*3\r\n$-1\r\n:7001\r\n$3\r\ndef\r\n";
        let map = parse_slots(&parse(raw), "127.0.0.2:7000").unwrap();
        assert!(map.is_complete());
        assert_eq!(
            &**map.primary(Slot::new(9000).unwrap()).unwrap(),
            "127.0.0.2:7001"
        );
        assert_eq!(map.shards().len(), 2);
        let roles: Vec<(&str, Role)> = map.node_info().iter().map(|n| (&*n.addr, n.role)).collect();
        assert_eq!(
            roles,
            vec![
                ("127.0.0.1:7000", Role::Primary),
                ("127.0.0.1:7003", Role::Replica),
                ("127.0.0.2:7001", Role::Primary)
            ]
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(&*node_addr("::1", 7000), "[::1]:7000");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(host_of("example.com:7000"), "example.com");
    }
}

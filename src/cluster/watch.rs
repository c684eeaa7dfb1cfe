//! The topology watch: between full refreshes, one kept connection asks a node for `CLUSTER
//! NODES` every `watch_interval` and asks for a refresh as soon as what it says changes: a
//! failover, a replica added or removed, a slot moved, a node failing. So the routing and
//! `/cluster/nodes` follow the cluster within about a second even when no client touches the
//! shard that changed (traffic only notices a change through MOVED or a lost connection, and
//! the periodic refresh comes every `refresh_interval`).
//!
//! `CLUSTER NODES` also carries what changes all the time (ping and pong times, link state);
//! the [`fingerprint`] leaves those out, so an idle healthy cluster asks for no refresh.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::topology::Topology;
use crate::backend::connect::query_on;
use crate::backend::stream::BackendStream;

/// How many asks after a change still refresh (a change reaches every node by gossip).
const SETTLE: u32 = 4;

/// Watches until `shutdown`; `every`: how often it asks.
pub async fn run(topology: Arc<Topology>, every: Duration, shutdown: CancellationToken) {
    let mut connection: Option<(String, BackendStream)> = None;
    let mut last: Option<u64> = None;
    let mut turn = 0usize;
    let mut settling = 0u32;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if connection.is_none() {
            connection = open(&topology, &mut turn).await;
        }
        let Some((node, stream)) = connection.as_mut() else {
            continue;
        };
        let asked = query_on(
            stream,
            node,
            topology.timeout(),
            &[b"CLUSTER".as_slice(), b"NODES"],
        )
        .await;
        let text = match asked {
            Ok(value) => value
                .as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            Err(error) => {
                tracing::debug!(%node, %error, "topology watch: lost its node");
                None
            }
        };
        let Some(text) = text else {
            // Another node next time: this one may be the one that changed.
            connection = None;
            turn += 1;
            continue;
        };
        let now = fingerprint(&text);
        // The first answer is compared with nothing: the map may predate it (the cluster
        // changed between the last refresh and this watch's start), so it refreshes too.
        if last.is_none_or(|before| before != now) {
            if last.is_some() {
                tracing::debug!(%node, "topology watch: the cluster changed; refreshing");
                metrics::counter!("slotproxy_topology_watch_changes_total").increment(1);
            }
            settling = SETTLE;
        }
        // The refresh may ask a node that has not heard of the change yet: refresh again on
        // the next few asks too, until every node had time to agree.
        if settling > 0 {
            settling -= 1;
            topology.request_refresh();
        }
        last = Some(now);
    }
}

/// A connection to one of the map's nodes (the `turn`-th, rotating on failures).
async fn open(topology: &Topology, turn: &mut usize) -> Option<(String, BackendStream)> {
    let nodes = topology.map().nodes();
    if nodes.is_empty() {
        return None;
    }
    for _ in 0..nodes.len() {
        let node = nodes.get(*turn % nodes.len())?.to_string();
        match crate::backend::connect::connect(
            &node,
            topology.credentials(),
            topology.timeout(),
            false,
            crate::resp::Protocol::Resp2,
        )
        .await
        {
            Ok(stream) => return Some((node, stream)),
            Err(error) => {
                tracing::debug!(%node, %error, "topology watch: cannot connect");
                *turn += 1;
            }
        }
    }
    None
}

/// What in a `CLUSTER NODES` text describes the topology: each node's id, address, flags,
/// primary and slots, in a stable order. Left out: ping-sent, pong-recv and link state
/// (they change every second), the config epoch (it moves with the fields kept), and the
/// `myself` flag (which node answered does not matter).
pub fn fingerprint(text: &str) -> u64 {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags: Vec<&str> = fields
                .get(2)
                .map(|f| f.split(',').filter(|f| *f != "myself").collect())
                .unwrap_or_default();
            let mut kept = vec![
                fields.first().copied().unwrap_or_default().to_string(),
                fields.get(1).copied().unwrap_or_default().to_string(),
                flags.join(","),
                fields.get(3).copied().unwrap_or_default().to_string(),
            ];
            kept.extend(fields.iter().skip(8).map(|s| s.to_string()));
            kept.join(" ")
        })
        .collect();
    lines.sort();
    let mut hasher = DefaultHasher::new();
    lines.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    const BEFORE: &str = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";

    #[test]
    fn only_topology_changes_change_the_fingerprint() {
        let base = fingerprint(BEFORE);
        let cases: &[(&str, bool)] = &[
            // Pings and pongs, link state, the answering node, line order: the same.
            (&BEFORE.replace("1426238317239", "1426238399999"), false),
            (&BEFORE.replace("4 connected", "4 disconnected"), false),
            (&BEFORE.replace("myself,master", "master"), false),
            (
                "e7d1 127.0.0.1:30001@40001 master - 0 0 1 connected 0-5460\n\
                 292f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383\n\
                 67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922\n\
                 07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected\n",
                false,
            ),
            // A failover, a failing node, a slot moved, a node added: different.
            (
                &BEFORE
                    .replace(
                        "07c3 127.0.0.1:30004@40004 slave e7d1",
                        "07c3 127.0.0.1:30004@40004 master -",
                    )
                    .replace(
                        "myself,master - 0 0 1 connected 0-5460",
                        "myself,slave 07c3 0 0 1 connected",
                    ),
                true,
            ),
            (
                &BEFORE.replace("master - 0 1426238316232", "master,fail - 0 1426238316232"),
                true,
            ),
            (
                &BEFORE
                    .replace("5461-10922", "5462-10922")
                    .replace("0-5460", "0-5461"),
                true,
            ),
            (
                &format!("{BEFORE}aaaa 127.0.0.1:30005@40005 slave e7d1 0 1 4 connected\n"),
                true,
            ),
        ];
        for (text, changed) in cases {
            assert_eq!(fingerprint(text) != base, *changed, "{text}");
        }
    }
}

//! `CONFIG SET` as one server takes it: every node (primaries and replicas) or none.
//!
//! First each node's current values of the named parameters are read (`CONFIG GET`, one name
//! per request, so an alias is answered under the name asked and a glob-like name is never
//! expanded), then the command goes to every node at once. If every node accepts, the settings
//! are remembered (`cluster::settings`) and the topology refresh applies them to nodes that
//! join later. If any node refuses (or can't be reached), the nodes that may have applied it
//! are set back to their own old values and the client gets the refusing node's own error
//! text, as one Redis would answer; the node is logged. One change runs at a time across the
//! workers.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;

use super::driver::{execute, try_execute, Resend, Target};
use super::error::ProxyError;
use super::worker::Worker;
use crate::backend::NodeAddr;
use crate::resp::{Command, Value};

/// How one node took the `CONFIG SET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetOutcome {
    /// `+OK`.
    Accepted,
    /// The node's error reply: it changed nothing (Redis 7 applies a multi-parameter
    /// `CONFIG SET` whole or not at all).
    Refused(Bytes),
    /// No usable answer (unreachable, lost, timed out, unexpected reply): it may or may not
    /// have applied it. The reply for the client in its place.
    Failed(Bytes),
}

/// What to do once every node answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every node has the new values.
    Applied,
    /// Set these nodes (indices into the outcomes) back to their old values, and answer this.
    RollBack { nodes: Vec<usize>, answer: Bytes },
}

/// All or none: applied when every node accepted; otherwise every node that may have applied
/// the change is rolled back, and the answer is the first refusal (a node's own error text),
/// else the first failure.
pub fn verdict(outcomes: &[SetOutcome]) -> Verdict {
    if outcomes.iter().all(|o| *o == SetOutcome::Accepted) {
        return Verdict::Applied;
    }
    let refused = outcomes.iter().find_map(|o| match o {
        SetOutcome::Refused(error) => Some(error.clone()),
        _ => None,
    });
    let failed = outcomes.iter().find_map(|o| match o {
        SetOutcome::Failed(error) => Some(error.clone()),
        _ => None,
    });
    let nodes = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| !matches!(o, SetOutcome::Refused(_)))
        .map(|(i, _)| i)
        .collect();
    Verdict::RollBack {
        nodes,
        answer: refused.or(failed).unwrap_or_default(),
    }
}

/// The `(parameter, value)` pairs of `CONFIG SET p v [p v ...]`, parameters lowercased
/// (Redis's names are case-insensitive); `None` when they don't pair up.
pub fn setting_pairs(cmd: &Command) -> Option<Vec<(Bytes, Bytes)>> {
    let args: Vec<&[u8]> = cmd.args().skip(2).collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return None;
    }
    Some(
        args.chunks_exact(2)
            .filter_map(|pair| match pair {
                [name, value] => Some((
                    Bytes::from(name.to_ascii_lowercase()),
                    Bytes::copy_from_slice(value),
                )),
                _ => None,
            })
            .collect(),
    )
}

/// Whether `CONFIG GET name` would read `name` as a pattern: no parameter has these bytes in
/// its name, so there is no old value to keep (and `CONFIG SET` refuses the name anyway).
fn is_glob(name: &[u8]) -> bool {
    name.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// The value in a `CONFIG GET name` reply (flat pairs in RESP2, a map in RESP3); `None` when
/// the node has no such parameter. `Err` carries the node's error reply.
fn got_value(reply: &Bytes) -> Result<Option<Bytes>, Bytes> {
    match Value::parse(reply) {
        Ok(Some((Value::Error(_), _))) => Err(reply.clone()),
        Ok(Some((Value::Array(items), _))) => Ok(items
            .get(1)
            .and_then(Value::as_bytes)
            .map(Bytes::copy_from_slice)),
        Ok(Some((Value::Map(entries), _))) => Ok(entries
            .first()
            .and_then(|(_, v)| v.as_bytes())
            .map(Bytes::copy_from_slice)),
        _ => Err(ProxyError::node("ERR slotproxy: unexpected CONFIG GET reply").answer()),
    }
}

/// One node's current values of `names` (`None`: no such parameter), or the reply explaining
/// why they can't be read.
async fn old_values(
    worker: &Worker,
    node: &NodeAddr,
    names: &[Bytes],
) -> Result<Vec<(Bytes, Option<Bytes>)>, Bytes> {
    let target = Target::Node(node.clone());
    let reads = names.iter().map(|name| {
        let target = &target;
        async move {
            if is_glob(name) {
                return Ok((name.clone(), None));
            }
            let payload = Command::from_args(&[&b"CONFIG"[..], b"GET", name]).into_raw();
            let reply = try_execute(worker, &payload, target, Resend::Safe)
                .await
                .map_err(|e| e.answer())?;
            Ok((name.clone(), got_value(&reply)?))
        }
    });
    join_all(reads).await.into_iter().collect()
}

/// `CONFIG SET` with the old values a node had, for the parameters it has.
fn roll_back_command(old: &[(Bytes, Option<Bytes>)]) -> Option<Bytes> {
    let mut args: Vec<&[u8]> = vec![b"CONFIG", b"SET"];
    for (name, value) in old {
        if let Some(value) = value {
            args.push(name);
            args.push(value);
        }
    }
    (args.len() > 2).then(|| Command::from_args(&args).into_raw())
}

/// Runs `CONFIG SET` (`cmd`) on every node of `nodes` or on none; see the module.
pub async fn config_set(worker: Rc<Worker>, cmd: Command, nodes: Vec<NodeAddr>) -> Bytes {
    let Some(pairs) = setting_pairs(&cmd) else {
        // Not pairs: Redis's own error from one node, which changes nothing.
        return execute(worker, cmd.into_raw(), Target::Any, Resend::Safe).await;
    };
    if nodes.is_empty() {
        return ProxyError::cluster_down().answer();
    }
    let settings = &worker.shared.topology.settings;
    let _turn = settings.changing.lock().await;
    let mut names: Vec<Bytes> = Vec::with_capacity(pairs.len());
    for (name, _) in &pairs {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }

    let mut old = Vec::with_capacity(nodes.len());
    for (node, values) in nodes
        .iter()
        .zip(join_all(nodes.iter().map(|n| old_values(&worker, n, &names))).await)
    {
        match values {
            Ok(values) => old.push(values),
            Err(answer) => {
                tracing::warn!(%node, error = %String::from_utf8_lossy(answer.trim_ascii_end()), "CONFIG SET not applied: a node's current values could not be read");
                return answer;
            }
        }
    }

    let payload = cmd.into_raw();
    let sets = nodes.iter().map(|node| {
        let (worker, payload) = (&worker, &payload);
        async move {
            match try_execute(worker, payload, &Target::Node(node.clone()), Resend::Never).await {
                Ok(reply) if reply.as_ref() == b"+OK\r\n" => SetOutcome::Accepted,
                Ok(reply) if reply.starts_with(b"-") => SetOutcome::Refused(reply),
                Ok(_) => SetOutcome::Failed(
                    ProxyError::node("ERR slotproxy: unexpected CONFIG SET reply").answer(),
                ),
                Err(error) => SetOutcome::Failed(error.answer()),
            }
        }
    });
    let outcomes = join_all(sets).await;

    match verdict(&outcomes) {
        Verdict::Applied => {
            settings.record(&pairs);
            // A node that joined while this ran may have been given the settings before
            // they were recorded: give them to it now.
            let now = worker.shared.topology.map().nodes();
            let late: Vec<NodeAddr> = now.into_iter().filter(|n| !nodes.contains(n)).collect();
            let topology = &worker.shared.topology;
            settings
                .apply_to(
                    &late,
                    topology.credentials(),
                    worker.shared.config.connect_timeout(),
                )
                .await;
            super::reply::ok()
        }
        Verdict::RollBack {
            nodes: back,
            answer,
        } => {
            for (node, outcome) in nodes.iter().zip(&outcomes) {
                if let SetOutcome::Refused(error) | SetOutcome::Failed(error) = outcome {
                    tracing::warn!(%node, error = %String::from_utf8_lossy(error.trim_ascii_end()), "CONFIG SET refused by a node: rolled back on the others");
                }
            }
            let rollbacks = back.into_iter().filter_map(|i| {
                let node = nodes.get(i)?;
                let command = roll_back_command(old.get(i)?)?;
                let worker = &worker;
                Some(async move {
                    let target = Target::Node(node.clone());
                    match try_execute(worker, &command, &target, Resend::Never).await {
                        Ok(reply) if reply.as_ref() == b"+OK\r\n" => {}
                        Ok(reply) => tracing::error!(%node, error = %String::from_utf8_lossy(reply.trim_ascii_end()), "CONFIG SET roll-back refused: the node keeps the new values"),
                        Err(error) => tracing::error!(%node, %error, "CONFIG SET roll-back failed: the node may keep the new values"),
                    }
                })
            });
            join_all(rollbacks).await;
            answer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &'static str) -> Bytes {
        Bytes::from(format!("-{text}\r\n"))
    }

    #[test]
    fn all_or_none() {
        use SetOutcome::{Accepted, Failed, Refused};
        let bad = err("ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be a memory value");
        let noperm = err("NOPERM this user has no permissions to run the 'config|set' command");
        let lost = err("ERR connection to 127.0.0.1:7002 lost");
        let cases: Vec<(Vec<SetOutcome>, Verdict)> = vec![
            (vec![Accepted, Accepted, Accepted], Verdict::Applied),
            (
                vec![Accepted, Refused(noperm.clone()), Accepted],
                Verdict::RollBack {
                    nodes: vec![0, 2],
                    answer: noperm.clone(),
                },
            ),
            // Refused everywhere: nothing to roll back, Redis's error as it is.
            (
                vec![Refused(bad.clone()), Refused(bad.clone())],
                Verdict::RollBack {
                    nodes: vec![],
                    answer: bad.clone(),
                },
            ),
            // A node that did not answer may have applied it: rolled back too; a refusal is
            // the better answer.
            (
                vec![Failed(lost.clone()), Accepted, Refused(noperm.clone())],
                Verdict::RollBack {
                    nodes: vec![0, 1],
                    answer: noperm.clone(),
                },
            ),
            (
                vec![Accepted, Failed(lost.clone())],
                Verdict::RollBack {
                    nodes: vec![0, 1],
                    answer: lost.clone(),
                },
            ),
        ];
        for (outcomes, want) in cases {
            assert_eq!(verdict(&outcomes), want, "{outcomes:?}");
        }
    }

    #[test]
    fn pairs_of_config_set() {
        let pairs = |args: &[&str]| setting_pairs(&Command::from_args(args));
        assert_eq!(
            pairs(&[
                "CONFIG",
                "SET",
                "MaxMemory",
                "1mb",
                "maxmemory-policy",
                "allkeys-lru"
            ]),
            Some(vec![
                (Bytes::from("maxmemory"), Bytes::from("1mb")),
                (Bytes::from("maxmemory-policy"), Bytes::from("allkeys-lru")),
            ])
        );
        assert_eq!(pairs(&["CONFIG", "SET", "maxmemory"]), None);
        assert_eq!(pairs(&["CONFIG", "SET", "maxmemory", "1", "x"]), None);
    }

    #[test]
    fn config_get_values() {
        // The reply, and the value read (`Err`: the node's error).
        type Case = (&'static [u8], Result<Option<&'static str>, ()>);
        let cases: Vec<Case> = vec![
            (b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n", Ok(Some("0"))),
            (b"%1\r\n$9\r\nmaxmemory\r\n$3\r\n100\r\n", Ok(Some("100"))),
            (b"*0\r\n", Ok(None)),
            (b"%0\r\n", Ok(None)),
            (b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n", Ok(Some(""))),
            (b"-NOPERM no\r\n", Err(())),
        ];
        for (reply, want) in cases {
            let got = got_value(&Bytes::copy_from_slice(reply));
            let got = got
                .map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned()))
                .map_err(|_| ());
            assert_eq!(got, want.map(|v| v.map(str::to_string)), "{reply:?}");
        }
    }

    #[test]
    fn roll_back_sets_the_old_values_a_node_had() {
        let old = vec![
            (Bytes::from("maxmemory"), Some(Bytes::from("0"))),
            (Bytes::from("nosuch"), None),
            (Bytes::from("save"), Some(Bytes::from(""))),
        ];
        assert_eq!(
            roll_back_command(&old),
            Some(Command::from_args(&["CONFIG", "SET", "maxmemory", "0", "save", ""]).into_raw())
        );
        assert_eq!(roll_back_command(&[(Bytes::from("x"), None)]), None);
    }
}

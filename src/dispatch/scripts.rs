//! Script bodies the proxy has seen (SCRIPT LOAD, EVAL), so that an EVALSHA answered with
//! NOSCRIPT, typically by a replica promoted after a failover (script caches are not
//! replicated), is repaired: the proxy loads the body on that node and runs the EVALSHA again.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Mutex;

use bytes::Bytes;

use super::route::{execute, Resend, Target};
use crate::resp::Command;
use crate::worker::Worker;

/// Bodies remembered at most; beyond it new scripts are simply not repaired (a client that
/// generates scripts endlessly must not grow the proxy without bound).
const MAX_SCRIPTS: usize = 10_000;

/// SHA1 (lowercase hex, as Redis names scripts) → body.
#[derive(Default)]
pub struct ScriptCache {
    bodies: Mutex<HashMap<String, Bytes>>,
}

impl ScriptCache {
    /// Remembers `body`. Called for SCRIPT LOAD and EVAL only, never on the GET/SET path.
    pub fn remember(&self, body: &[u8]) {
        let sha = sha1_smol::Sha1::from(body).digest().to_string();
        let Ok(mut bodies) = self.bodies.lock() else {
            return;
        };
        if bodies.len() < MAX_SCRIPTS || bodies.contains_key(&sha) {
            bodies
                .entry(sha)
                .or_insert_with(|| Bytes::copy_from_slice(body));
        }
    }

    pub fn body(&self, sha: &[u8]) -> Option<Bytes> {
        let sha = std::str::from_utf8(sha).ok()?.to_ascii_lowercase();
        self.bodies.lock().ok()?.get(&sha).cloned()
    }
}

/// Runs an EVALSHA/EVALSHA_RO; on NOSCRIPT with a known body, loads it on the node that
/// serves `target` and runs the command once more.
pub async fn evalsha(worker: Rc<Worker>, cmd: Command, target: Target, resend: Resend) -> Bytes {
    let payload = cmd.raw().clone();
    let answer = execute(worker.clone(), payload.clone(), target.clone(), resend).await;
    if !answer.starts_with(b"-NOSCRIPT") {
        return answer;
    }
    let Some(body) = cmd.arg(1).and_then(|sha| worker.shared.scripts.body(sha)) else {
        return answer;
    };
    let load = Command::from_args(&[b"SCRIPT".as_slice(), b"LOAD", &body]);
    let loaded = execute(
        worker.clone(),
        load.into_raw(),
        target.clone(),
        Resend::Safe,
    )
    .await;
    if loaded.starts_with(b"-") {
        return answer;
    }
    metrics::counter!("slotproxy_scripts_reloaded_total").increment(1);
    execute(worker, payload, target, resend).await
}

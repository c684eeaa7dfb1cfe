//! EVALSHA with repair: an EVALSHA answered with NOSCRIPT, typically by a replica promoted after
//! a failover (script caches are not replicated), is repaired with the body the proxy saw in a
//! SCRIPT LOAD or EVAL (`shared::ScriptCache`): the proxy loads it on that node and runs the
//! EVALSHA again.

use std::rc::Rc;

use bytes::Bytes;

use super::driver::{execute, Resend, Started};
use super::plan::Send;
use super::worker::Worker;
use crate::resp::Command;

/// Finishes an EVALSHA/EVALSHA_RO already `started` (sent at once, so WAIT can find the
/// connection of a write); on NOSCRIPT with a known body, loads it on the node that serves
/// the target and runs the command once more.
pub async fn evalsha(worker: Rc<Worker>, started: Started, cmd: Command, send: Send) -> Bytes {
    let answer = started.reply(worker.clone()).await;
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
        send.target.clone(),
        Resend::Safe,
    )
    .await;
    if loaded.starts_with(b"-") {
        return answer;
    }
    metrics::counter!("slotproxy_scripts_reloaded_total").increment(1);
    execute(worker, cmd.into_raw(), send.target, send.resend).await
}

//! MSETNX across slots: nothing is set when any key exists (EXISTS in every slot first), then
//! one MSETNX per slot; if one of them finds a key that appeared meanwhile, the slots already
//! set are deleted again and the reply is 0, as if the check had found it.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;

use super::{call, malformed};
use crate::cluster::Slot;
use crate::dispatch::driver::{Resend, Target};
use crate::dispatch::error::ProxyError;
use crate::dispatch::merge::integer;
use crate::dispatch::reply;
use crate::dispatch::worker::Worker;
use crate::resp::{is_error_reply, Command};

/// Key/value pairs of one slot.
type SlotPairs<'a> = (Slot, Vec<(&'a [u8], &'a [u8])>);

/// The pairs of `cmd` grouped by slot, in the order slots first appear.
fn by_slot(cmd: &Command) -> Vec<SlotPairs<'_>> {
    let mut groups: Vec<SlotPairs<'_>> = Vec::new();
    let mut i = 1;
    while let (Some(key), Some(value)) = (cmd.arg(i), cmd.arg(i + 1)) {
        let slot = Slot::of(key);
        match groups.iter_mut().find(|g| g.0 == slot) {
            Some(group) => group.1.push((key, value)),
            None => groups.push((slot, vec![(key, value)])),
        }
        i += 2;
    }
    groups
}

pub async fn run(worker: &Rc<Worker>, cmd: &Command) -> Result<Bytes, ProxyError> {
    let groups = by_slot(cmd);
    let exists = join_all(groups.iter().map(|(slot, pairs)| {
        let mut args: Vec<&[u8]> = vec![b"EXISTS"];
        args.extend(pairs.iter().map(|(k, _)| *k));
        call(worker, Target::Slot(*slot), Resend::Never, &args)
    }))
    .await;
    let mut found = 0;
    for reply in &exists {
        if is_error_reply(reply) {
            return Ok(reply.clone());
        }
        found += integer(reply).ok_or_else(|| malformed("EXISTS"))?;
    }
    if found > 0 {
        return Ok(reply::integer(0));
    }
    let set = join_all(groups.iter().map(|(slot, pairs)| {
        let mut args: Vec<&[u8]> = vec![b"MSETNX"];
        for (k, v) in pairs {
            args.push(k);
            args.push(v);
        }
        call(worker, Target::Slot(*slot), Resend::Never, &args)
    }))
    .await;
    if set.iter().all(|r| integer(r) == Some(1)) {
        return Ok(reply::integer(1));
    }
    // A key appeared meanwhile (or a slot failed): undo the slots that were set.
    let undo = join_all(
        groups
            .iter()
            .zip(&set)
            .filter_map(|((slot, pairs), reply)| {
                if integer(reply) != Some(1) {
                    return None;
                }
                let mut args: Vec<&[u8]> = vec![b"DEL"];
                args.extend(pairs.iter().map(|(k, _)| *k));
                Some(call(worker, Target::Slot(*slot), Resend::Never, &args))
            }),
    )
    .await;
    drop(undo);
    match set.into_iter().find(|r| is_error_reply(r)) {
        Some(error) => Ok(error),
        None => Ok(reply::integer(0)),
    }
}

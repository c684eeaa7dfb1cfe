//! Gather: the sources that live in other slots are copied (DUMP, then RESTORE with a safety
//! TTL) into temporary keys of the anchor's slot (the destination's, or the first key's for a
//! read), the real command runs there with those keys renamed, and the temporaries are
//! deleted. Redis itself computes the result, so replies and errors (WRONGTYPE, a missing
//! source read as empty) are its own; the destination is written by the real command, so it
//! gets no TTL and its encoding is Redis's choice, as with one Redis.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;

use super::{bulk_value, call, malformed, owner, Budget, Temps, TEMP_TTL_MS};
use crate::cluster::Slot;
use crate::dispatch::driver::{Resend, Target};
use crate::dispatch::error::ProxyError;
use crate::dispatch::worker::Worker;
use crate::resp::{is_error_reply, Command};

/// Runs `cmd` on `anchor`'s owner with the keys at `copied` replaced by temporary copies.
pub async fn run(
    worker: &Rc<Worker>,
    name: &str,
    cmd: &Command,
    anchor: Slot,
    copied: &[usize],
    resend: Resend,
) -> Result<Bytes, ProxyError> {
    // Each distinct source key once, however often it is named.
    let mut sources: Vec<&[u8]> = Vec::new();
    let mut source_of_arg: Vec<(usize, usize)> = Vec::new();
    for &i in copied {
        let Some(key) = cmd.arg(i) else { continue };
        let at = match sources.iter().position(|k| *k == key) {
            Some(at) => at,
            None => {
                sources.push(key);
                sources.len() - 1
            }
        };
        source_of_arg.push((i, at));
    }
    let dumps = join_all(
        sources
            .iter()
            .map(|key| call(worker, owner(key), resend, &[b"DUMP".as_slice(), key])),
    )
    .await;
    let mut budget = Budget::new(name);
    let mut payloads = Vec::with_capacity(dumps.len());
    for dump in &dumps {
        if is_error_reply(dump) {
            return Ok(dump.clone());
        }
        let payload = bulk_value(dump).ok_or_else(|| malformed("DUMP"))?;
        if let Some(p) = &payload {
            budget.take(p.len())?;
        }
        payloads.push(payload);
    }
    let mut temps = Temps::new(anchor);
    let names: Vec<Bytes> = sources.iter().map(|_| temps.name()).collect();
    let ttl = TEMP_TTL_MS.to_string();
    let restores = join_all(names.iter().zip(&payloads).filter_map(|(temp, payload)| {
        let payload = payload.as_ref()?;
        let args: [&[u8]; 4] = [b"RESTORE", temp, ttl.as_bytes(), payload];
        Some(call(worker, temps.target(), Resend::Never, &args))
    }))
    .await;
    if let Some(error) = restores.into_iter().find(|r| is_error_reply(r)) {
        temps.delete(worker).await;
        return Ok(error);
    }
    let mut args: Vec<Bytes> = cmd.args().map(Bytes::copy_from_slice).collect();
    for (arg, source) in source_of_arg {
        if let (Some(slot), Some(temp)) = (args.get_mut(arg), names.get(source)) {
            *slot = temp.clone();
        }
    }
    // On the primary even for a read: a replica may not have the temporaries yet.
    let reply = call(worker, Target::Slot(anchor), Resend::Never, &args).await;
    temps.delete(worker).await;
    Ok(reply)
}

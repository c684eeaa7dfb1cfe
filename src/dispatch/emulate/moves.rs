//! Two-key writes across slots, step by step: what one Redis checks first is checked first
//! (a missing source, the types), the value is written to the destination before it is
//! removed from the source, and a failed second step is undone where it can be (SMOVE and
//! LMOVE put the member or element back). RENAME/RENAMENX/COPY move the whole value with
//! DUMP/RESTORE, so type, encoding and TTL travel with it.

use std::rc::Rc;

use bytes::Bytes;

use super::{bulk_value, call, malformed, owner, simple, wrong_type, Budget, End, Temps};
use crate::cluster::Slot;
use crate::dispatch::driver::Resend;
use crate::dispatch::error::ProxyError;
use crate::dispatch::merge::integer;
use crate::dispatch::reply;
use crate::dispatch::worker::Worker;
use crate::resp::{is_error_reply, Command};

/// Sub-requests of a write go to primaries and are never sent twice.
const WRITE: Resend = Resend::Never;

/// A key's value as DUMP serialises it, and its remaining time to live (0: none).
struct Snapshot {
    payload: Bytes,
    ttl_ms: i64,
}

/// The source's value and TTL, `None` when it does not exist; an error reply as `Err(Ok)`.
async fn snapshot(
    worker: &Rc<Worker>,
    name: &str,
    key: &[u8],
) -> Result<Option<Snapshot>, Result<Bytes, ProxyError>> {
    let (dump, pttl) = futures_util::join!(
        call(worker, owner(key), WRITE, &[b"DUMP".as_slice(), key]),
        call(worker, owner(key), WRITE, &[b"PTTL".as_slice(), key]),
    );
    for r in [&dump, &pttl] {
        if is_error_reply(r) {
            return Err(Ok(r.clone()));
        }
    }
    let payload = bulk_value(&dump).ok_or(Err(malformed("DUMP")))?;
    let ttl = integer(&pttl).ok_or(Err(malformed("PTTL")))?;
    match (payload, ttl) {
        // Gone between the two reads: as if it had never been there.
        (None, _) | (_, -2) => Ok(None),
        (Some(payload), ttl) => {
            Budget::new(name).take(payload.len()).map_err(Err)?;
            Ok(Some(Snapshot {
                payload,
                ttl_ms: ttl.max(0),
            }))
        }
    }
}

fn arg(cmd: &Command, i: usize) -> Result<&[u8], ProxyError> {
    cmd.arg(i)
        .ok_or_else(|| ProxyError::bad_request("ERR wrong number of arguments"))
}

/// RENAME / RENAMENX: RESTORE at the destination (REPLACE unless NX), then DEL the source.
pub async fn rename(
    worker: &Rc<Worker>,
    name: &str,
    cmd: &Command,
    nx: bool,
) -> Result<Bytes, ProxyError> {
    let (src, dst) = (arg(cmd, 1)?, arg(cmd, 2)?);
    let snap = match snapshot(worker, name, src).await {
        Ok(Some(snap)) => snap,
        Ok(None) => return Err(ProxyError::bad_request("ERR no such key")),
        Err(answer) => return answer,
    };
    let ttl = snap.ttl_ms.to_string();
    let mut args: Vec<&[u8]> = vec![b"RESTORE", dst, ttl.as_bytes(), &snap.payload];
    if !nx {
        args.push(b"REPLACE");
    }
    let restored = call(worker, owner(dst), WRITE, &args).await;
    if nx && restored.starts_with(b"-BUSYKEY") {
        return Ok(reply::integer(0));
    }
    if is_error_reply(&restored) {
        return Ok(restored);
    }
    let deleted = call(worker, owner(src), WRITE, &[b"DEL".as_slice(), src]).await;
    if is_error_reply(&deleted) {
        return Ok(deleted);
    }
    Ok(if nx { reply::integer(1) } else { reply::ok() })
}

/// COPY src dst [DB n] [REPLACE]: the options are checked by the node itself (a COPY between
/// two missing temporary keys of the source's slot), then RESTORE at the destination.
pub async fn copy(worker: &Rc<Worker>, name: &str, cmd: &Command) -> Result<Bytes, ProxyError> {
    let (src, dst) = (arg(cmd, 1)?, arg(cmd, 2)?);
    let mut temps = Temps::new(Slot::of(src));
    let mut check: Vec<Bytes> = vec![Bytes::from_static(b"COPY"), temps.name(), temps.name()];
    check.extend(cmd.args().skip(3).map(Bytes::copy_from_slice));
    let checked = call(worker, temps.target(), WRITE, &check).await;
    if is_error_reply(&checked) {
        return Ok(checked);
    }
    let mut replace = false;
    let mut i = 3;
    while let Some(option) = cmd.arg(i) {
        if option.eq_ignore_ascii_case(b"REPLACE") {
            replace = true;
        } else if option.eq_ignore_ascii_case(b"DB") {
            i += 1;
        }
        i += 1;
    }
    let snap = match snapshot(worker, name, src).await {
        Ok(Some(snap)) => snap,
        Ok(None) => return Ok(reply::integer(0)),
        Err(answer) => return answer,
    };
    let ttl = snap.ttl_ms.to_string();
    let mut args: Vec<&[u8]> = vec![b"RESTORE", dst, ttl.as_bytes(), &snap.payload];
    if replace {
        args.push(b"REPLACE");
    }
    let restored = call(worker, owner(dst), WRITE, &args).await;
    if restored.starts_with(b"-BUSYKEY") {
        return Ok(reply::integer(0));
    }
    if is_error_reply(&restored) {
        return Ok(restored);
    }
    Ok(reply::integer(1))
}

/// The type of `key` as TYPE names it (`none` when missing).
async fn type_of(worker: &Rc<Worker>, key: &[u8]) -> Result<Bytes, Result<Bytes, ProxyError>> {
    let reply = call(worker, owner(key), WRITE, &[b"TYPE".as_slice(), key]).await;
    if is_error_reply(&reply) {
        return Err(Ok(reply));
    }
    simple(&reply)
        .map(Bytes::copy_from_slice)
        .ok_or(Err(malformed("TYPE")))
}

/// SMOVE src dst member: Redis answers 0 for a missing source before looking at the
/// destination's type, WRONGTYPE for either key of another type; then SREM at the source and
/// SADD at the destination (the member goes back to the source if that fails).
pub async fn smove(worker: &Rc<Worker>, cmd: &Command) -> Result<Bytes, ProxyError> {
    let (src, dst, member) = (arg(cmd, 1)?, arg(cmd, 2)?, arg(cmd, 3)?);
    let dst_type = match type_of(worker, dst).await {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    if !matches!(dst_type.as_ref(), b"none" | b"set") {
        let exists = call(worker, owner(src), WRITE, &[b"EXISTS".as_slice(), src]).await;
        if is_error_reply(&exists) {
            return Ok(exists);
        }
        return match integer(&exists) {
            Some(0) => Ok(reply::integer(0)),
            Some(_) => Err(wrong_type()),
            None => Err(malformed("EXISTS")),
        };
    }
    let removed = call(
        worker,
        owner(src),
        WRITE,
        &[b"SREM".as_slice(), src, member],
    )
    .await;
    if is_error_reply(&removed) {
        return Ok(removed);
    }
    match integer(&removed) {
        Some(0) => return Ok(reply::integer(0)),
        Some(_) => {}
        None => return Err(malformed("SREM")),
    }
    let added = call(
        worker,
        owner(dst),
        WRITE,
        &[b"SADD".as_slice(), dst, member],
    )
    .await;
    if is_error_reply(&added) {
        let _ = call(
            worker,
            owner(src),
            WRITE,
            &[b"SADD".as_slice(), src, member],
        )
        .await;
        return Ok(added);
    }
    Ok(reply::integer(1))
}

fn pop(end: End) -> &'static [u8] {
    match end {
        End::Left => b"LPOP",
        End::Right => b"RPOP",
    }
}

fn push(end: End) -> &'static [u8] {
    match end {
        End::Left => b"LPUSH",
        End::Right => b"RPUSH",
    }
}

/// LMOVE / RPOPLPUSH: null for a missing source, WRONGTYPE for a source or destination of
/// another type (as Redis checks them), then pop at the source and push at the destination
/// (the element goes back where it came from if that fails). The reply is the element.
pub async fn lmove(
    worker: &Rc<Worker>,
    cmd: &Command,
    from: End,
    to: End,
) -> Result<Bytes, ProxyError> {
    let (src, dst) = (arg(cmd, 1)?, arg(cmd, 2)?);
    let (src_type, dst_type) = futures_util::join!(type_of(worker, src), type_of(worker, dst));
    let src_type = match src_type {
        Ok(t) => t,
        Err(answer) => return answer,
    };
    match src_type.as_ref() {
        b"none" => return Ok(reply::nil(worker.protocol)),
        b"list" => {}
        _ => return Err(wrong_type()),
    }
    match dst_type {
        Ok(t) if matches!(t.as_ref(), b"none" | b"list") => {}
        Ok(_) => return Err(wrong_type()),
        Err(answer) => return answer,
    }
    let popped = call(worker, owner(src), WRITE, &[pop(from), src]).await;
    if is_error_reply(&popped) {
        return Ok(popped);
    }
    let Some(value) = bulk_value(&popped).ok_or_else(|| malformed("a pop"))? else {
        return Ok(reply::nil(worker.protocol));
    };
    let pushed = call(worker, owner(dst), WRITE, &[push(to), dst, &value]).await;
    if is_error_reply(&pushed) {
        let _ = call(worker, owner(src), WRITE, &[push(from), src, &value]).await;
        return Ok(pushed);
    }
    Ok(popped)
}

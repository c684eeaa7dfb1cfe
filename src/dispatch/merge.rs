//! Combining the replies of a split or broadcast request into the one reply the client expects.
//! Every merge fails with the first error reply among the parts, in argument (or shard) order.

use bytes::{Bytes, BytesMut};
use smallvec::{smallvec, SmallVec};

use super::error::ProxyError;
use super::reply;
use super::split::Positions;
use crate::resp::{encode, is_error_reply, ReplyScanner};

fn first_error(parts: &[Bytes]) -> Option<Bytes> {
    parts.iter().find(|p| is_error_reply(p)).cloned()
}

fn malformed() -> Bytes {
    ProxyError::node("ERR slotproxy: unexpected reply shape from a node while merging").answer()
}

/// The integer in a `:n\r\n` reply.
pub fn integer(reply: &[u8]) -> Option<i64> {
    let body = reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

/// The elements of an array reply, as zero-copy slices; `None` for anything else.
pub fn array_elements(reply: &Bytes) -> Option<Vec<Bytes>> {
    let ranges = element_ranges(reply)?;
    Some(
        ranges
            .into_iter()
            .map(|(start, end)| reply.slice(start..end))
            .collect(),
    )
}

fn array(elements: impl ExactSizeIterator<Item = Bytes>) -> Bytes {
    let mut parts: Vec<Bytes> = Vec::with_capacity(elements.len());
    parts.extend(elements);
    let mut out = BytesMut::with_capacity(16 + parts.iter().map(Bytes::len).sum::<usize>());
    encode::array_header(&mut out, parts.len());
    for p in &parts {
        out.extend_from_slice(p);
    }
    out.freeze()
}

/// The byte ranges of an array reply's elements; `None` for anything else (or for an array
/// whose elements do not fill the reply exactly).
fn element_ranges(reply: &[u8]) -> Option<SmallVec<[(usize, usize); 4]>> {
    let (count, mut at) = array_header(reply)?;
    let mut ranges = SmallVec::new();
    for _ in 0..count {
        let len = ReplyScanner::default().scan(reply.get(at..)?).ok()??;
        ranges.push((at, at + len));
        at += len;
    }
    (at == reply.len()).then_some(ranges)
}

/// MGET: each part answered for the keys at `positions[i]`; put every value back at its key's
/// position. Values are copied straight from the parts' replies into the merged one.
pub fn by_position(positions: &[Positions], replies: &[Bytes], total: usize) -> Bytes {
    if let Some(e) = first_error(replies) {
        return e;
    }
    // For each key position: (part, start, end) of its value in that part's reply.
    let mut values: SmallVec<[Option<(usize, usize, usize)>; 16]> = smallvec![None; total];
    let mut size = 16;
    for (part, (positions, reply)) in positions.iter().zip(replies).enumerate() {
        let Some(ranges) = element_ranges(reply) else {
            return malformed();
        };
        if ranges.len() != positions.len() {
            return malformed();
        }
        for (&position, (start, end)) in positions.iter().zip(ranges) {
            if let Some(value) = values.get_mut(position) {
                *value = Some((part, start, end));
                size += end - start;
            }
        }
    }
    let mut out = BytesMut::with_capacity(size);
    encode::array_header(&mut out, total);
    for value in &values {
        let Some(value) = value.and_then(|(part, start, end)| replies.get(part)?.get(start..end))
        else {
            return malformed();
        };
        out.extend_from_slice(value);
    }
    out.freeze()
}

/// DEL, EXISTS, DBSIZE...: the sum of the parts' integers.
pub fn sum(parts: &[Bytes]) -> Bytes {
    if let Some(e) = first_error(parts) {
        return e;
    }
    let mut total: i64 = 0;
    for p in parts {
        let Some(n) = integer(p) else {
            return malformed();
        };
        total = total.saturating_add(n);
    }
    reply::integer(total)
}

/// MSET, FLUSHALL...: OK when every part is OK.
pub fn all_ok(parts: &[Bytes]) -> Bytes {
    if let Some(e) = first_error(parts) {
        return e;
    }
    if parts.iter().all(|p| p.as_ref() == b"+OK\r\n") {
        reply::ok()
    } else {
        malformed()
    }
}

/// SCRIPT LOAD, FUNCTION LOAD: every node answers the same (the SHA, the library name).
pub fn same(parts: &[Bytes]) -> Bytes {
    if let Some(e) = first_error(parts) {
        return e;
    }
    match parts.first() {
        Some(first) if parts.iter().all(|p| p == first) => first.clone(),
        _ => malformed(),
    }
}

/// SCRIPT KILL, FUNCTION KILL: the first reply that is not an error (the node that ran the
/// script), else the error of the node that has a script (UNKILLABLE: it wrote), else the
/// first error (NOTBUSY everywhere: no script was running).
pub fn one_succeeded(parts: &[Bytes]) -> Bytes {
    match parts.iter().find(|p| !is_error_reply(p)) {
        Some(ok) => ok.clone(),
        None => parts
            .iter()
            .find(|p| !p.starts_with(b"-NOTBUSY"))
            .or(parts.first())
            .cloned()
            .unwrap_or_else(malformed),
    }
}

/// FUNCTION STATS: the reply of the node running a script or function (its `running_script`
/// is not null), else the first reply; the libraries and engines are the same everywhere
/// (functions are loaded on every primary).
pub fn running_script(parts: &[Bytes]) -> Bytes {
    if let Some(e) = first_error(parts) {
        return e;
    }
    parts
        .iter()
        .find(|p| running_script_is_set(p))
        .or(parts.first())
        .cloned()
        .unwrap_or_else(malformed)
}

/// Whether a FUNCTION STATS reply (an array or a RESP3 map, `running_script` first) names a
/// running script.
fn running_script_is_set(reply: &[u8]) -> bool {
    let Some(header_end) = reply.iter().position(|&b| b == b'\n') else {
        return false;
    };
    let rest = &reply[header_end + 1..];
    let Ok(Some(name_len)) = ReplyScanner::default().scan(rest) else {
        return false;
    };
    let value = &rest[name_len..];
    !(value.is_empty()
        || value.starts_with(b"*-1")
        || value.starts_with(b"$-1")
        || value.starts_with(b"_"))
}

/// `*N\r\n` at the start of an array reply: (N, the header's length). A reply came whole off
/// a node connection (the pipe's scanner found its end), so N elements follow the header and
/// nothing else.
fn array_header(reply: &[u8]) -> Option<(usize, usize)> {
    let rest = reply.strip_prefix(b"*")?;
    let line_end = rest.iter().position(|&b| b == b'\r')?;
    let count: usize = std::str::from_utf8(rest.get(..line_end)?)
        .ok()?
        .parse()
        .ok()?;
    (rest.get(line_end + 1) == Some(&b'\n')).then_some((count, 1 + line_end + 2))
}

/// KEYS: the concatenation of the parts' arrays, in shard order.
///
/// Each part's elements are copied as one block behind the new header (no per-element
/// bookkeeping: 2 million keys would otherwise cost two 64 MB vectors of handles), into a
/// buffer allocated once at its final size, and each part is dropped as soon as it is
/// copied, so the proxy holds the parts and the merged reply together only briefly.
pub fn concat(parts: Vec<Bytes>) -> Bytes {
    if let Some(e) = first_error(&parts) {
        return e;
    }
    let mut headers = Vec::with_capacity(parts.len());
    let (mut count, mut size) = (0usize, 0usize);
    for p in &parts {
        let Some((n, header_len)) = array_header(p) else {
            return malformed();
        };
        count = count.saturating_add(n);
        size = size.saturating_add(p.len() - header_len);
        headers.push(header_len);
    }
    let mut out = BytesMut::with_capacity(24 + size);
    encode::array_header(&mut out, count);
    for (part, header_len) in parts.into_iter().zip(headers) {
        if let Some(elements) = part.get(header_len..) {
            out.extend_from_slice(elements);
        }
    }
    out.freeze()
}

/// PUBSUB CHANNELS: every node's names, each once.
pub fn union(parts: &[Bytes]) -> Bytes {
    if let Some(e) = first_error(parts) {
        return e;
    }
    let mut seen = std::collections::HashSet::new();
    let mut all = Vec::new();
    for p in parts {
        let Some(items) = array_elements(p) else {
            return malformed();
        };
        for item in items {
            if seen.insert(item.clone()) {
                all.push(item);
            }
        }
    }
    array(all.into_iter())
}

/// PUBSUB NUMSUB: `[channel, count, ...]` from every node, counts summed per channel.
pub fn sum_pairs(parts: &[Bytes]) -> Bytes {
    if let Some(e) = first_error(parts) {
        return e;
    }
    let mut names: Vec<Bytes> = Vec::new();
    let mut counts: Vec<i64> = Vec::new();
    for p in parts {
        let Some(items) = array_elements(p) else {
            return malformed();
        };
        for pair in items.chunks(2) {
            let (Some(name), Some(count)) = (pair.first(), pair.get(1).and_then(|c| integer(c)))
            else {
                return malformed();
            };
            match names.iter().position(|n| n == name) {
                Some(i) => counts[i] += count,
                None => {
                    names.push(name.clone());
                    counts.push(count);
                }
            }
        }
    }
    let mut out = BytesMut::new();
    encode::array_header(&mut out, names.len() * 2);
    for (name, count) in names.iter().zip(counts) {
        out.extend_from_slice(name);
        encode::integer(&mut out, count);
    }
    out.freeze()
}

/// 1 at a position only if every node answered 1 there.
pub fn logical_and(parts: &[Bytes]) -> Bytes {
    combine_flags(parts, |a, b| a && b)
}

/// SCRIPT EXISTS: 1 at a position if any node has that script (see `Merge::LogicalOr`).
pub fn logical_or(parts: &[Bytes]) -> Bytes {
    combine_flags(parts, |a, b| a || b)
}

/// Arrays of 0/1 combined position by position with `op`.
fn combine_flags(parts: &[Bytes], op: fn(bool, bool) -> bool) -> Bytes {
    if let Some(e) = first_error(parts) {
        return e;
    }
    let mut result: Option<Vec<i64>> = None;
    for p in parts {
        let Some(items) = array_elements(p) else {
            return malformed();
        };
        let Some(values) = items
            .iter()
            .map(|i| integer(i))
            .collect::<Option<Vec<i64>>>()
        else {
            return malformed();
        };
        result = Some(match result {
            None => values,
            Some(acc) if acc.len() == values.len() => acc
                .iter()
                .zip(&values)
                .map(|(a, b)| i64::from(op(*a != 0, *b != 0)))
                .collect(),
            Some(_) => return malformed(),
        });
    }
    let values = result.unwrap_or_default();
    array(
        values
            .into_iter()
            .map(reply::integer)
            .collect::<Vec<_>>()
            .into_iter(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn mget_positions() {
        let merged = by_position(
            &[smallvec![0, 2], smallvec![1]],
            &[b("*2\r\n$1\r\na\r\n$-1\r\n"), b("*1\r\n$2\r\nbb\r\n")],
            3,
        );
        assert_eq!(merged, b("*3\r\n$1\r\na\r\n$2\r\nbb\r\n$-1\r\n"));
        let failed = by_position(
            &[smallvec![0], smallvec![1]],
            &[b("*1\r\n$1\r\na\r\n"), b("-TRYAGAIN x\r\n")],
            2,
        );
        assert_eq!(failed, b("-TRYAGAIN x\r\n"));
    }

    /// Parts whose replies do not fit their keys give the merge error, never a reply with a
    /// value missing or in the wrong place.
    #[test]
    fn mget_parts_that_do_not_fit_are_malformed() {
        let one = || b("*1\r\n$1\r\na\r\n");
        let cases: Vec<(&str, Vec<Positions>, Vec<Bytes>, usize)> = vec![
            (
                "not an array",
                vec![smallvec![0]],
                vec![b("$1\r\na\r\n")],
                1,
            ),
            ("too few values", vec![smallvec![0, 1]], vec![one()], 2),
            (
                "too many values",
                vec![smallvec![0]],
                vec![b("*2\r\n:1\r\n:2\r\n")],
                1,
            ),
            (
                "trailing bytes",
                vec![smallvec![0]],
                vec![b("*1\r\n:1\r\n:2\r\n")],
                1,
            ),
            (
                "cut short",
                vec![smallvec![0]],
                vec![b("*1\r\n$3\r\nab")],
                1,
            ),
            ("a position unanswered", vec![smallvec![0]], vec![one()], 2),
            (
                "a position past the end",
                vec![smallvec![1]],
                vec![one()],
                1,
            ),
        ];
        for (what, positions, replies, total) in cases {
            assert_eq!(
                by_position(&positions, &replies, total),
                malformed(),
                "{what}"
            );
        }
        let values = by_position(
            &[smallvec![3, 0], smallvec![2], smallvec![1]],
            &[
                b("*2\r\n$1\r\nd\r\n*1\r\n:0\r\n"),
                b("*1\r\n_\r\n"),
                b("*1\r\n$-1\r\n"),
            ],
            4,
        );
        assert_eq!(values, b("*4\r\n*1\r\n:0\r\n$-1\r\n_\r\n$1\r\nd\r\n"));
    }

    #[test]
    fn one_node_succeeding_is_enough() {
        let notbusy = || b("-NOTBUSY No scripts in execution right now.\r\n");
        assert_eq!(
            one_succeeded(&[notbusy(), b("+OK\r\n"), notbusy()]),
            b("+OK\r\n")
        );
        assert_eq!(one_succeeded(&[notbusy(), notbusy()]), notbusy());
        let unkillable = b("-UNKILLABLE Sorry the script already executed write commands\r\n");
        assert_eq!(
            one_succeeded(&[notbusy(), unkillable.clone(), notbusy()]),
            unkillable
        );
    }

    #[test]
    fn sums_and_oks() {
        assert_eq!(sum(&[b(":1\r\n"), b(":2\r\n")]), b(":3\r\n"));
        assert_eq!(all_ok(&[b("+OK\r\n"), b("+OK\r\n")]), b("+OK\r\n"));
        assert_eq!(all_ok(&[b("+OK\r\n"), b("-ERR no\r\n")]), b("-ERR no\r\n"));
        assert_eq!(
            concat(vec![b("*1\r\n$1\r\na\r\n"), b("*0\r\n")]),
            b("*1\r\n$1\r\na\r\n")
        );
        assert_eq!(
            concat(vec![
                b("*1\r\n$1\r\na\r\n"),
                b("*2\r\n$1\r\nb\r\n*1\r\n:1\r\n")
            ]),
            b("*3\r\n$1\r\na\r\n$1\r\nb\r\n*1\r\n:1\r\n")
        );
        assert_eq!(
            concat(vec![b("*1\r\n$1\r\na\r\n"), b("-ERR x\r\n")]),
            b("-ERR x\r\n")
        );
        assert_eq!(
            concat(vec![b("*1\r\n$1\r\na\r\n"), b(":1\r\n")]),
            malformed()
        );
        assert_eq!(concat(vec![b("*-1\r\n")]), malformed());
        assert_eq!(
            logical_or(&[b("*3\r\n:1\r\n:0\r\n:0\r\n"), b("*3\r\n:0\r\n:0\r\n:1\r\n")]),
            b("*3\r\n:1\r\n:0\r\n:1\r\n")
        );
        assert_eq!(
            logical_and(&[b("*2\r\n:1\r\n:1\r\n"), b("*2\r\n:0\r\n:1\r\n")]),
            b("*2\r\n:0\r\n:1\r\n")
        );
        assert_eq!(
            same(&[b("$2\r\nab\r\n"), b("$2\r\nab\r\n")]),
            b("$2\r\nab\r\n")
        );
    }

    #[test]
    fn array_elements_rejects_trailing_garbage() {
        assert!(array_elements(&b("*1\r\n:1\r\n:2\r\n")).is_none());
        assert_eq!(
            array_elements(&b("*2\r\n*1\r\n:1\r\n$-1\r\n"))
                .unwrap()
                .len(),
            2
        );
    }
}

#[cfg(test)]
mod function_stats_tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn function_stats_comes_from_the_node_running_a_script() {
        let engines = "$7\r\nengines\r\n*2\r\n$3\r\nLUA\r\n*4\r\n$15\r\nlibraries_count\r\n:1\r\n$15\r\nfunctions_count\r\n:1\r\n";
        let idle = b(&format!("*4\r\n$14\r\nrunning_script\r\n*-1\r\n{engines}"));
        let idle3 = b(&format!("%2\r\n$14\r\nrunning_script\r\n_\r\n{engines}"));
        let busy = b(&format!(
            "*4\r\n$14\r\nrunning_script\r\n*6\r\n$4\r\nname\r\n$4\r\ntest\r\n$7\r\ncommand\r\n*3\r\n$5\r\nfcall\r\n$4\r\ntest\r\n$1\r\n0\r\n$11\r\nduration_ms\r\n:812\r\n{engines}"
        ));
        let cases: &[(&[Bytes], Bytes)] = &[
            (&[idle.clone(), busy.clone(), idle.clone()], busy.clone()),
            (&[idle.clone(), idle.clone()], idle.clone()),
            (&[idle3.clone(), idle3.clone()], idle3.clone()),
            (std::slice::from_ref(&busy), busy.clone()),
        ];
        for (parts, want) in cases {
            assert_eq!(&running_script(parts), want);
        }
    }
}

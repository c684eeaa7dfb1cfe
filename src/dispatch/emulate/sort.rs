//! SORT / SORT_RO with BY or GET patterns. Cluster nodes refuse patterns ("BY option of SORT
//! denied in Cluster mode."), because the keys they name may live anywhere; here they are
//! looked up on their owners, as `lookupKeyByPattern` does on one Redis (`#` is the element,
//! `prefix*suffix` a string key, `prefix*suffix->field` a hash field; anything else is null).
//!
//! Without a BY pattern (GET only) the source's node still sorts (its own SORT without the
//! GETs), so the order is exactly Redis's. With a BY pattern the elements are read in the
//! source's order and sorted here as `sortCompare` does: by score (`strtod` of the weight, a
//! missing one is 0, equal scores by element bytes), or with ALPHA by the weights' bytes (a
//! missing weight first); DESC reverses. ALPHA compares bytes, as Redis does for STORE and
//! under the C locale (the nodes' `strcoll` may differ under another locale). STORE writes the
//! result through the destination's own SORT (a temporary list sorted with `BY nosort`), so
//! an empty result deletes the destination as Redis does.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;

use super::{bulk_value, call, malformed, owner, syntax_error, Budget, Temps};
use crate::cluster::Slot;
use crate::dispatch::driver::Resend;
use crate::dispatch::error::ProxyError;
use crate::dispatch::merge::array_elements;
use crate::dispatch::worker::Worker;
use crate::resp::{encode, is_error_reply, Command};

/// SORT's options, as Redis's `sortCommandGeneric` reads them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SortOptions {
    pub by: Option<Bytes>,
    pub gets: Vec<Bytes>,
    /// LIMIT offset count, as given.
    pub limit: Option<(i64, i64)>,
    pub desc: bool,
    pub alpha: bool,
    pub store: Option<Bytes>,
    pub readonly: bool,
}

impl SortOptions {
    /// The BY pattern when it names keys (has a `*`); one without is "don't sort".
    fn by_pattern(&self) -> Option<&Bytes> {
        self.by.as_ref().filter(|p| p.contains(&b'*'))
    }
}

/// The options of `cmd` (or Redis's error for them), and whether it uses key patterns (a GET,
/// or a BY with `*`) up to where reading stopped.
pub fn parse(cmd: &Command, readonly: bool) -> (Result<SortOptions, ProxyError>, bool) {
    let mut options = SortOptions {
        readonly,
        ..SortOptions::default()
    };
    let mut patterns = false;
    let argc = cmd.argc();
    let mut j = 2;
    while let Some(word) = cmd.arg(j) {
        let left = argc - j - 1;
        let next = || Bytes::copy_from_slice(cmd.arg(j + 1).unwrap_or_default());
        if word.eq_ignore_ascii_case(b"ASC") {
            options.desc = false;
        } else if word.eq_ignore_ascii_case(b"DESC") {
            options.desc = true;
        } else if word.eq_ignore_ascii_case(b"ALPHA") {
            options.alpha = true;
        } else if word.eq_ignore_ascii_case(b"LIMIT") && left >= 2 {
            match (long(cmd.arg(j + 1)), long(cmd.arg(j + 2))) {
                (Some(offset), Some(count)) => options.limit = Some((offset, count)),
                _ => {
                    let error =
                        ProxyError::bad_request("ERR value is not an integer or out of range");
                    return (Err(error), patterns);
                }
            }
            j += 2;
        } else if word.eq_ignore_ascii_case(b"STORE") && left >= 1 && !readonly {
            options.store = Some(next());
            j += 1;
        } else if word.eq_ignore_ascii_case(b"BY") && left >= 1 {
            let by = next();
            patterns |= by.contains(&b'*');
            options.by = Some(by);
            j += 1;
        } else if word.eq_ignore_ascii_case(b"GET") && left >= 1 {
            options.gets.push(next());
            patterns = true;
            j += 1;
        } else {
            return (Err(syntax_error()), patterns);
        }
        j += 1;
    }
    (Ok(options), patterns)
}

/// Redis's `string2l`: an optional `-`, digits, nothing else.
fn long(arg: Option<&[u8]>) -> Option<i64> {
    let arg = arg?;
    if arg.first() == Some(&b'+') {
        return None;
    }
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// What a pattern names for one element.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// `#`: the element itself.
    Itself,
    /// No `*`: nothing (null).
    Nothing,
    /// A string key, or a hash field when `field` is set.
    Key { key: Bytes, field: Option<Bytes> },
}

/// `lookupKeyByPattern`'s substitution: the first `*` becomes the element; a `->field` after
/// it (with a non-empty field) names a hash field.
pub fn lookup(pattern: &[u8], element: &[u8]) -> Lookup {
    if pattern == b"#" {
        return Lookup::Itself;
    }
    let Some(star) = pattern.iter().position(|&b| b == b'*') else {
        return Lookup::Nothing;
    };
    let after = pattern.get(star + 1..).unwrap_or_default();
    let arrow = after
        .windows(2)
        .position(|w| w == b"->")
        .filter(|&a| a + 2 < after.len());
    let (postfix, field) = match arrow {
        Some(a) => (
            after.get(..a).unwrap_or_default(),
            Some(Bytes::copy_from_slice(
                after.get(a + 2..).unwrap_or_default(),
            )),
        ),
        None => (after, None),
    };
    let mut key = Vec::with_capacity(pattern.len() + element.len());
    key.extend_from_slice(pattern.get(..star).unwrap_or_default());
    key.extend_from_slice(element);
    key.extend_from_slice(postfix);
    Lookup::Key {
        key: Bytes::from(key),
        field,
    }
}

/// `strtod` as SORT uses it: leading white space skipped, the whole rest must be the number,
/// overflow, underflow and NaN are errors (`None`); an empty weight is 0.
pub fn score(weight: &[u8]) -> Option<f64> {
    if weight.is_empty() {
        return Some(0.0);
    }
    let text = std::str::from_utf8(weight).ok()?;
    let number = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let value: f64 = number.parse().ok()?;
    let unsigned = number.trim_start_matches(['+', '-']);
    let mantissa = unsigned.split(['e', 'E']).next().unwrap_or_default();
    let literal_inf = unsigned
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("inf"));
    if value.is_nan()
        || (value.is_infinite() && !literal_inf)
        || (value == 0.0 && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)))
    {
        return None;
    }
    Some(value)
}

/// One element and what it sorts by.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub element: Bytes,
    pub score: f64,
    pub weight: Option<Bytes>,
}

/// `sortCompare` with a BY pattern.
pub fn compare(a: &Item, b: &Item, alpha: bool, desc: bool) -> Ordering {
    let order = if alpha {
        match (&a.weight, &b.weight) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => x.cmp(y),
        }
    } else {
        match a.score.partial_cmp(&b.score) {
            Some(Ordering::Equal) | None => a.element.cmp(&b.element),
            Some(order) => order,
        }
    };
    if desc {
        order.reverse()
    } else {
        order
    }
}

/// The positions LIMIT keeps of `len` sorted elements (Redis's start/end clamping).
pub fn limit_range(limit: Option<(i64, i64)>, len: usize) -> std::ops::Range<usize> {
    let (offset, count) = limit.unwrap_or((0, -1));
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let mut start = offset.max(0);
    let mut end = if count < 0 {
        len - 1
    } else {
        start.saturating_add(count) - 1
    };
    if start >= len {
        start = len - 1;
        end = len - 2;
    }
    if end >= len {
        end = len - 1;
    }
    if end < start || start < 0 {
        return 0..0;
    }
    let to = |n: i64| usize::try_from(n).unwrap_or(0);
    to(start)..to(end) + 1
}

/// The values of `lookups` from their owners (string keys with GET, hash fields with HGET); a
/// key of another type is null, as in Redis. An error reply of another kind ends the command.
async fn fetch(
    worker: &Rc<Worker>,
    budget: &mut Budget<'_>,
    lookups: Vec<Lookup>,
    resend: Resend,
) -> Result<HashMap<Lookup, Option<Bytes>>, Result<Bytes, ProxyError>> {
    let mut unique: Vec<Lookup> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for l in lookups {
        if matches!(l, Lookup::Key { .. }) && seen.insert(l.clone()) {
            unique.push(l);
        }
    }
    let replies = join_all(unique.iter().map(|l| {
        let (key, args): (&[u8], Vec<&[u8]>) = match l {
            Lookup::Key { key, field: None } => (key, vec![b"GET", key]),
            Lookup::Key {
                key,
                field: Some(field),
            } => (key, vec![b"HGET", key, field]),
            // Filtered out above.
            _ => (b"", vec![b"PING"]),
        };
        call(worker, owner(key), resend, &args)
    }))
    .await;
    let mut values = HashMap::with_capacity(unique.len());
    for (l, reply) in unique.into_iter().zip(replies) {
        let value = if reply.starts_with(b"-WRONGTYPE") {
            None
        } else if is_error_reply(&reply) {
            return Err(Ok(reply));
        } else {
            bulk_value(&reply).ok_or(Err(malformed("GET")))?
        };
        if let Some(v) = &value {
            budget.take(v.len()).map_err(Err)?;
        }
        values.insert(l, value);
    }
    Ok(values)
}

fn value_of(l: &Lookup, element: &Bytes, values: &HashMap<Lookup, Option<Bytes>>) -> Option<Bytes> {
    match l {
        Lookup::Itself => Some(element.clone()),
        Lookup::Nothing => None,
        Lookup::Key { .. } => values.get(l).cloned().flatten(),
    }
}

/// The elements of an array reply (bulk strings).
fn elements(reply: &Bytes, budget: &mut Budget<'_>) -> Result<Vec<Bytes>, ProxyError> {
    let items = array_elements(reply).ok_or_else(|| malformed("SORT"))?;
    let mut out = Vec::with_capacity(items.len());
    for item in &items {
        let value = bulk_value(item)
            .flatten()
            .ok_or_else(|| malformed("SORT"))?;
        budget.take(value.len())?;
        out.push(value);
    }
    Ok(out)
}

pub async fn run(
    worker: &Rc<Worker>,
    name: &str,
    cmd: &Command,
    options: SortOptions,
) -> Result<Bytes, ProxyError> {
    match sorted(worker, name, cmd, &options).await {
        Ok(reply) | Err(Ok(reply)) => Ok(reply),
        Err(Err(error)) => Err(error),
    }
}

async fn sorted(
    worker: &Rc<Worker>,
    name: &str,
    cmd: &Command,
    options: &SortOptions,
) -> Result<Bytes, Result<Bytes, ProxyError>> {
    let src = cmd.arg(1).unwrap_or_default();
    let resend = if options.store.is_some() {
        Resend::Never
    } else {
        Resend::Safe
    };
    let mut budget = Budget::new(name);
    // The elements in their final order, LIMIT applied.
    let chosen: Vec<Bytes> = match options.by_pattern() {
        None => {
            // The node sorts: its SORT without the patterns (BY without `*` is allowed).
            let mut args: Vec<&[u8]> = vec![b"SORT", src];
            if let Some(by) = &options.by {
                args.extend([b"BY".as_slice(), by]);
            }
            let limit = options.limit.map(|(o, c)| (o.to_string(), c.to_string()));
            if let Some((offset, count)) = &limit {
                args.extend([b"LIMIT".as_slice(), offset.as_bytes(), count.as_bytes()]);
            }
            if options.desc {
                args.push(b"DESC");
            }
            if options.alpha {
                args.push(b"ALPHA");
            }
            if options.store.is_some() {
                // With STORE Redis sorts a set even without BY and compares bytes: let the
                // node store, then read the list back.
                let mut temps = Temps::new(Slot::of(src));
                let temp = temps.name();
                args.extend([b"STORE".as_slice(), &temp]);
                let stored = call(worker, owner(src), Resend::Never, &args).await;
                let listed = if is_error_reply(&stored) {
                    stored
                } else {
                    let range: [&[u8]; 4] = [b"LRANGE", &temp, b"0", b"-1"];
                    call(worker, temps.target(), Resend::Never, &range).await
                };
                temps.delete(worker).await;
                if is_error_reply(&listed) {
                    return Err(Ok(listed));
                }
                elements(&listed, &mut budget).map_err(Err)?
            } else {
                args[0] = b"SORT_RO";
                let reply = call(worker, owner(src), resend, &args).await;
                if is_error_reply(&reply) {
                    return Err(Ok(reply));
                }
                elements(&reply, &mut budget).map_err(Err)?
            }
        }
        Some(by) => {
            let natural: [&[u8]; 4] = [b"SORT_RO", src, b"BY", b"nosort"];
            let reply = call(worker, owner(src), resend, &natural).await;
            if is_error_reply(&reply) {
                return Err(Ok(reply));
            }
            let all = elements(&reply, &mut budget).map_err(Err)?;
            let lookups: Vec<Lookup> = all.iter().map(|e| lookup(by, e)).collect();
            let values = fetch(worker, &mut budget, lookups.clone(), resend).await?;
            let mut items = Vec::with_capacity(all.len());
            let mut unconvertible = false;
            for (element, l) in all.into_iter().zip(&lookups) {
                let weight = value_of(l, &element, &values);
                let score = match (&weight, options.alpha) {
                    (Some(w), false) => score(w).unwrap_or_else(|| {
                        unconvertible = true;
                        0.0
                    }),
                    _ => 0.0,
                };
                items.push(Item {
                    element,
                    score,
                    weight,
                });
            }
            if unconvertible {
                return Err(Err(ProxyError::bad_request(
                    "ERR One or more scores can't be converted into double",
                )));
            }
            items.sort_by(|a, b| compare(a, b, options.alpha, options.desc));
            let range = limit_range(options.limit, items.len());
            items
                .into_iter()
                .skip(range.start)
                .take(range.len())
                .map(|i| i.element)
                .collect()
        }
    };
    // The output: the elements, or for each element one value per GET.
    let output: Vec<Option<Bytes>> = if options.gets.is_empty() {
        chosen.into_iter().map(Some).collect()
    } else {
        let lookups: Vec<Lookup> = chosen
            .iter()
            .flat_map(|e| options.gets.iter().map(move |g| lookup(g, e)))
            .collect();
        let values = fetch(worker, &mut budget, lookups.clone(), resend).await?;
        let elements = chosen
            .iter()
            .flat_map(|e| std::iter::repeat_n(e, options.gets.len()));
        lookups
            .iter()
            .zip(elements)
            .map(|(l, e)| value_of(l, e, &values))
            .collect()
    };
    match &options.store {
        None => {
            let mut out = BytesMut::new();
            encode::array_header(&mut out, output.len());
            for value in &output {
                match value {
                    Some(v) => encode::bulk(&mut out, v),
                    None => encode::null(&mut out, worker.protocol),
                }
            }
            Ok(out.freeze())
        }
        Some(dest) => {
            // The destination's own SORT stores the list (or deletes dest when it is empty).
            let mut temps = Temps::new(Slot::of(dest));
            let temp = temps.name();
            if !output.is_empty() {
                let mut args: Vec<&[u8]> = vec![b"RPUSH", &temp];
                args.extend(output.iter().map(|v| v.as_deref().unwrap_or_default()));
                let pushed = call(worker, temps.target(), Resend::Never, &args).await;
                if is_error_reply(&pushed) {
                    temps.delete(worker).await;
                    return Err(Ok(pushed));
                }
            }
            let store: [&[u8]; 6] = [b"SORT", &temp, b"BY", b"nosort", b"STORE", dest];
            let stored = call(worker, temps.target(), Resend::Never, &store).await;
            temps.delete(worker).await;
            Ok(stored)
        }
    }
}

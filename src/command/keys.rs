//! Key extraction: Redis 7.0's `getKeysUsingKeySpecs` (db.c) over a command's key specs, and
//! the native rules Redis falls back to where specs are incomplete (`sortGetKeys`,
//! `sortROGetKeys`, `migrateGetKeys`).
//!
//! Pure functions of (spec, argv) so the tests are tables of arguments and expected indices.

use crate::resp::Command;

use super::table::{BeginSearch, CommandSpec, FindKeys, KeyRule, KeySpec, KeySpecFlags};

/// Appends the key indices of `cmd` under `spec` to `out`. See [`CommandSpec::key_indices`].
///
/// Mirrors `getKeysFromCommandWithSpecs`: the key specs first; if one of them does not fit the
/// arguments, or an `incomplete` spec matched, the command's native rule instead (SORT,
/// SORT_RO, MIGRATE), or no keys for commands without one.
pub(crate) fn key_indices(spec: &CommandSpec, cmd: &Command, out: &mut Vec<usize>) {
    if keys_from_specs(&spec.key_specs, cmd, out) == Outcome::Complete {
        return;
    }
    match spec.key_rule {
        KeyRule::Specs => {}
        KeyRule::Sort => sort_keys(cmd, true, out),
        KeyRule::SortRo => sort_keys(cmd, false, out),
        KeyRule::Migrate => migrate_keys(cmd, out),
    }
}

/// What one spec yields for one argv.
enum SpecKeys {
    /// The spec's keyword is absent: it contributes nothing, and that is fine.
    None,
    /// The arguments contradict the spec, or the spec cannot be evaluated: Redis's
    /// `invalid_spec`.
    Invalid,
    /// Keys at `first, first + step, ..., <= last`.
    Range { first: i64, last: i64, step: i64 },
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// `out` holds every key.
    Complete,
    /// Nothing was appended; the native rule (if any) must decide.
    Fallback,
}

/// `getKeysUsingKeySpecs` with `GET_KEYSPEC_INCLUDE_NOT_KEYS` and without
/// `GET_KEYSPEC_RETURN_PARTIAL`: an invalid spec discards every key found so far. For the
/// commands with a native rule that rule then decides; for the others no keys are routed on,
/// and the backend reports the syntax error (Redis's native key functions find none either).
fn keys_from_specs(specs: &[KeySpec], cmd: &Command, out: &mut Vec<usize>) -> Outcome {
    let start_len = out.len();
    let argc = i64::try_from(cmd.argc()).unwrap_or(i64::MAX);
    for spec in specs {
        match spec_keys(spec, cmd, argc) {
            SpecKeys::None => {}
            SpecKeys::Invalid => {
                out.truncate(start_len);
                return Outcome::Fallback;
            }
            // An incomplete spec that matched (MIGRATE's KEYS) may have missed keys.
            SpecKeys::Range { .. } if spec.flags.contains(KeySpecFlags::INCOMPLETE) => {
                out.truncate(start_len);
                return Outcome::Fallback;
            }
            SpecKeys::Range { first, last, step } => {
                let mut i = first;
                while i <= last {
                    if let Ok(index) = usize::try_from(i) {
                        out.push(index);
                    }
                    i = i.saturating_add(step);
                }
            }
        }
    }
    Outcome::Complete
}

fn spec_keys(spec: &KeySpec, cmd: &Command, argc: i64) -> SpecKeys {
    let first = match &spec.begin_search {
        BeginSearch::Index { pos } => *pos,
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => match find_keyword(cmd, argc, keyword, *start_from) {
            Some(first) => first,
            None => return SpecKeys::None,
        },
        BeginSearch::Unknown => return SpecKeys::Invalid,
    };
    let (first, last, step) = match spec.find_keys {
        FindKeys::Range {
            last_key,
            key_step,
            limit,
        } => {
            let last = if last_key >= 0 {
                first.saturating_add(last_key)
            } else if limit == 0 {
                argc.saturating_add(last_key)
            } else if limit > 0 {
                first.saturating_add((argc.saturating_sub(first) / limit).saturating_add(last_key))
            } else {
                return SpecKeys::Invalid;
            };
            (first, last, key_step)
        }
        FindKeys::Keynum {
            keynum_idx,
            first_key,
            key_step,
        } => {
            if keynum_idx >= argc.saturating_sub(first) {
                return SpecKeys::Invalid;
            }
            let numkeys = usize::try_from(first.saturating_add(keynum_idx))
                .ok()
                .and_then(|i| cmd.arg(i))
                .and_then(crate::resp::parse_integer)
                .filter(|&n| n >= 0);
            let Some(numkeys) = numkeys else {
                return SpecKeys::Invalid;
            };
            let first = first.saturating_add(first_key);
            (
                first,
                first.saturating_add(numkeys).saturating_sub(1),
                key_step,
            )
        }
        FindKeys::Unknown => return SpecKeys::Invalid,
    };
    // `first < 1` and `step < 1` cannot come from a real server; refusing them keeps argv[0]
    // out of the keys and the loop finite.
    if last >= argc || last < first || first >= argc || first < 1 || step < 1 {
        return SpecKeys::Invalid;
    }
    SpecKeys::Range { first, last, step }
}

/// Index after the keyword, searching as Redis does: from `start_from` towards the end, or for
/// a negative `start_from` from `argc + start_from` back towards argv\[1\] (the end point itself is
/// not examined, exactly like the C loop).
fn find_keyword(cmd: &Command, argc: i64, keyword: &[u8], start_from: i64) -> Option<i64> {
    let (start, end) = if start_from > 0 {
        (start_from, argc - 1)
    } else {
        (argc.saturating_add(start_from), 1)
    };
    let mut i = start;
    while i != end {
        if i >= argc || i < 1 {
            break;
        }
        let arg = usize::try_from(i).ok().and_then(|i| cmd.arg(i));
        if arg.is_some_and(|a| a.eq_ignore_ascii_case(keyword)) {
            return Some(i + 1);
        }
        i = if start <= end { i + 1 } else { i - 1 };
    }
    None
}

/// `sortGetKeys` / `sortROGetKeys`: the sorted key, plus (SORT only) the destination after the
/// last `STORE`. Options with arguments are skipped so that e.g. `BY store` is not a STORE.
fn sort_keys(cmd: &Command, with_store: bool, out: &mut Vec<usize>) {
    if cmd.argc() < 2 {
        return;
    }
    out.push(1);
    if !with_store {
        return;
    }
    let mut store = None;
    let mut i = 2;
    while i < cmd.argc() {
        let arg = cmd.arg(i).unwrap_or_default();
        if arg.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"get") || arg.eq_ignore_ascii_case(b"by") {
            i += 1;
        } else if arg.eq_ignore_ascii_case(b"store") && i + 1 < cmd.argc() {
            // The last STORE wins, as in SORT itself.
            store = Some(i + 1);
        }
        i += 1;
    }
    out.extend(store);
}

/// `migrateGetKeys`: argv\[3\], or with the `KEYS` option (which requires an empty argv\[3\])
/// every argument after it.
fn migrate_keys(cmd: &Command, out: &mut Vec<usize>) {
    let argc = cmd.argc();
    if argc <= 3 {
        return;
    }
    let mut i = 6;
    while i < argc {
        let arg = cmd.arg(i).unwrap_or_default();
        if arg.eq_ignore_ascii_case(b"keys") {
            if !cmd.arg(3).unwrap_or_default().is_empty() {
                // Redis rejects KEYS with a non-empty key argument; no keys.
                return;
            }
            out.extend(i + 1..argc);
            return;
        }
        if arg.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if arg.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        }
        i += 1;
    }
    out.push(3);
}

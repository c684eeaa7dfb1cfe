//! The pure parts of emulation as tables: which plan each command gets, SORT's option
//! reading, pattern substitution, `strtod`, comparison and LIMIT, the slot tags.

use bytes::Bytes;

use super::sort::{compare, limit_range, lookup, parse, score, Item, Lookup, SortOptions};
use super::*;
use crate::command::CommandTable;

fn planned(args: &[&str]) -> Result<Emulation, ProxyError> {
    let cmd = Command::from_args(args);
    let table = CommandTable::builtin();
    let spec = table.lookup(&cmd).expect("a command of the table");
    plan(spec, &cmd)
}

fn slot(key: &str) -> Slot {
    Slot::of(key.as_bytes())
}

fn gather(anchor: &str, copied: &[usize], resend: Resend) -> Result<Emulation, ProxyError> {
    Ok(Emulation::Gather {
        anchor: slot(anchor),
        copied: copied.to_vec(),
        resend,
    })
}

#[test]
fn each_family_gets_its_emulation() {
    let w = Resend::Never;
    let r = Resend::Safe;
    let cases: Vec<(&[&str], Result<Emulation, ProxyError>)> = vec![
        (&["RENAME", "a", "b"], Ok(Emulation::Rename { nx: false })),
        (&["RENAMENX", "a", "b"], Ok(Emulation::Rename { nx: true })),
        (&["COPY", "a", "b", "REPLACE"], Ok(Emulation::Copy)),
        (&["SMOVE", "a", "b", "m"], Ok(Emulation::SMove)),
        (
            &["RPOPLPUSH", "a", "b"],
            Ok(Emulation::LMove {
                from: End::Right,
                to: End::Left,
            }),
        ),
        (
            &["LMOVE", "a", "b", "left", "RIGHT"],
            Ok(Emulation::LMove {
                from: End::Left,
                to: End::Right,
            }),
        ),
        (&["LMOVE", "a", "b", "UP", "LEFT"], Err(syntax_error())),
        (&["MSETNX", "a", "1", "b", "2"], Ok(Emulation::MSetNx)),
        (
            &["MSETNX", "a", "1", "b"],
            Err(ProxyError::bad_request(
                "ERR wrong number of arguments for 'msetnx' command",
            )),
        ),
        // Reads run where the first key lives; the other keys are copied there.
        (&["SINTER", "a", "b", "{a}c"], gather("a", &[2], r)),
        (&["SUNION", "a", "b", "c"], gather("a", &[2, 3], r)),
        (&["SINTERCARD", "2", "a", "b"], gather("a", &[3], r)),
        (
            &["ZUNION", "2", "a", "b", "WITHSCORES"],
            gather("a", &[3], r),
        ),
        (&["LCS", "a", "b"], gather("a", &[2], r)),
        // Stores run where the destination lives.
        (&["SUNIONSTORE", "d", "a", "b"], gather("d", &[2, 3], w)),
        (
            &["ZINTERSTORE", "d", "2", "{d}a", "b", "WEIGHTS", "1", "2"],
            gather("d", &[4], w),
        ),
        (&["BITOP", "AND", "d", "a", "b"], gather("d", &[3, 4], w)),
        (&["PFMERGE", "d", "a"], gather("d", &[2], w)),
        (
            &[
                "GEOSEARCHSTORE",
                "d",
                "a",
                "FROMMEMBER",
                "m",
                "BYRADIUS",
                "1",
                "km",
            ],
            gather("d", &[2], w),
        ),
        (
            &["GEORADIUS", "a", "0", "0", "1", "km", "STORE", "d"],
            gather("d", &[1], w),
        ),
        (&["SORT", "a", "STORE", "d"], gather("d", &[1], w)),
        (
            &["SORT", "a", "BY", "w_*"],
            Ok(Emulation::Sort(SortOptions {
                by: Some(Bytes::from_static(b"w_*")),
                ..SortOptions::default()
            })),
        ),
        // Not emulated: CROSSSLOT stays.
        (
            &["BLMOVE", "a", "b", "LEFT", "LEFT", "0"],
            Err(ProxyError::cross_slot()),
        ),
        (
            &["XREAD", "STREAMS", "a", "b", "0", "0"],
            Err(ProxyError::cross_slot()),
        ),
        (
            &["LMPOP", "2", "a", "b", "LEFT"],
            Err(ProxyError::cross_slot()),
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(planned(args), expected, "{args:?}");
    }
}

#[test]
fn sort_options_are_read_as_redis_reads_them() {
    let read = |args: &[&str], readonly| parse(&Command::from_args(args), readonly);
    let (options, patterns) = read(
        &[
            "SORT", "k", "BY", "w_*", "LIMIT", "1", "-1", "GET", "#", "DESC", "ALPHA", "STORE", "d",
        ],
        false,
    );
    assert!(patterns);
    assert_eq!(
        options,
        Ok(SortOptions {
            by: Some(Bytes::from_static(b"w_*")),
            gets: vec![Bytes::from_static(b"#")],
            limit: Some((1, -1)),
            desc: true,
            alpha: true,
            store: Some(Bytes::from_static(b"d")),
            readonly: false,
        })
    );
    // BY without `*` only means "don't sort": no key is named.
    assert!(!read(&["SORT", "k", "BY", "nosort"], false).1);
    assert!(read(&["SORT", "k", "GET", "#"], false).1);
    let syntax = Err(syntax_error());
    assert_eq!(read(&["SORT", "k", "GET"], false), (syntax.clone(), false));
    assert_eq!(
        read(&["SORT_RO", "k", "GET", "#", "STORE", "d"], true),
        (syntax.clone(), true)
    );
    assert_eq!(
        read(&["SORT", "k", "GET", "#", "NOPE"], false),
        (syntax, true)
    );
    let not_integer = Err(ProxyError::bad_request(
        "ERR value is not an integer or out of range",
    ));
    assert_eq!(
        read(&["SORT", "k", "LIMIT", "+1", "2"], false).0,
        not_integer
    );
    assert_eq!(
        read(&["SORT", "k", "LIMIT", "x", "2"], false).0,
        not_integer
    );
}

#[test]
fn patterns_substitute_the_first_star() {
    let key = |k: &str, f: Option<&str>| Lookup::Key {
        key: Bytes::from(k.to_string()),
        field: f.map(|f| Bytes::from(f.to_string())),
    };
    let cases = [
        ("#", "e", Lookup::Itself),
        ("w_", "e", Lookup::Nothing),
        ("w_*", "e", key("w_e", None)),
        ("w_*_x*", "e", key("w_e_x*", None)),
        ("o_*->name", "e", key("o_e", Some("name"))),
        ("o_*->", "e", key("o_e->", None)),
        ("o->_*", "e", key("o->_e", None)),
        ("{t}*:h->f->g", "e", key("{t}e:h", Some("f->g"))),
    ];
    for (pattern, element, want) in cases {
        assert_eq!(
            lookup(pattern.as_bytes(), element.as_bytes()),
            want,
            "{pattern}"
        );
    }
}

#[test]
fn weights_convert_like_strtod() {
    let cases: &[(&str, Option<f64>)] = &[
        ("", Some(0.0)),
        ("1", Some(1.0)),
        ("-2.5", Some(-2.5)),
        ("  3", Some(3.0)),
        ("1e3", Some(1000.0)),
        ("+4", Some(4.0)),
        ("inf", Some(f64::INFINITY)),
        ("-Infinity", Some(f64::NEG_INFINITY)),
        (" ", None),
        ("3 ", None),
        ("abc", None),
        ("nan", None),
        ("1e400", None),
        ("1e-400", None),
        ("0e-400", Some(0.0)),
    ];
    for (text, want) in cases {
        assert_eq!(score(text.as_bytes()), *want, "{text:?}");
    }
}

#[test]
fn items_compare_like_sort_compare() {
    let item = |e: &str, s: f64, w: Option<&str>| Item {
        element: Bytes::from(e.to_string()),
        score: s,
        weight: w.map(|w| Bytes::from(w.to_string())),
    };
    use std::cmp::Ordering::*;
    let cases = [
        (
            item("a", 1.0, None),
            item("b", 2.0, None),
            false,
            false,
            Less,
        ),
        (
            item("a", 2.0, None),
            item("b", 2.0, None),
            false,
            false,
            Less,
        ),
        (
            item("a", 2.0, None),
            item("b", 2.0, None),
            false,
            true,
            Greater,
        ),
        (
            item("a", 0.0, None),
            item("b", 0.0, Some("x")),
            true,
            false,
            Less,
        ),
        (
            item("a", 0.0, None),
            item("b", 0.0, None),
            true,
            false,
            Equal,
        ),
        (
            item("a", 0.0, Some("y")),
            item("b", 0.0, Some("x")),
            true,
            false,
            Greater,
        ),
        (
            item("a", 0.0, Some("y")),
            item("b", 0.0, Some("x")),
            true,
            true,
            Less,
        ),
    ];
    for (a, b, alpha, desc, want) in cases {
        assert_eq!(
            compare(&a, &b, alpha, desc),
            want,
            "{a:?} {b:?} {alpha} {desc}"
        );
    }
}

#[test]
fn limit_clamps_like_redis() {
    type Case = (Option<(i64, i64)>, usize, std::ops::Range<usize>);
    let cases: &[Case] = &[
        (None, 5, 0..5),
        (Some((0, -1)), 5, 0..5),
        (Some((1, 2)), 5, 1..3),
        (Some((-3, 2)), 5, 0..2),
        (Some((3, 100)), 5, 3..5),
        (Some((5, 1)), 5, 0..0),
        (Some((9, 1)), 5, 0..0),
        (Some((0, 0)), 5, 0..0),
        (None, 0, 0..0),
    ];
    for (limit, len, want) in cases {
        assert_eq!(limit_range(*limit, *len), *want, "{limit:?} of {len}");
    }
}

#[test]
fn every_slot_has_a_tag_that_hashes_to_it() {
    for n in 0..crate::cluster::slot::SLOT_COUNT as u64 {
        let slot = Slot::new(n).unwrap();
        let tag = slot_tag(slot);
        assert!(!tag.is_empty() && !tag.contains(['{', '}']));
        assert_eq!(Slot::of(format!("{{{tag}}}x").as_bytes()), slot);
    }
    let mut temps = Temps::new(slot("dest"));
    assert_eq!(Slot::of(&temps.name()), slot("dest"));
    assert_ne!(temps.name(), Temps::new(slot("dest")).name());
}

#[test]
fn the_source_budget_refuses_past_its_limit() {
    let mut budget = Budget::new("sunionstore");
    assert_eq!(budget.take(MAX_SOURCE_BYTES - 1), Ok(()));
    assert_eq!(budget.take(1), Ok(()));
    let refused = budget.take(1).unwrap_err();
    assert_eq!(refused.fault(), crate::dispatch::error::Fault::Proxy);
    let text = String::from_utf8_lossy(&refused.answer()).into_owned();
    assert!(
        text.starts_with("-ERR slotproxy: emulating SUNIONSTORE across slots would read more than"),
        "{text}"
    );
}

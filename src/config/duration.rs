//! Durations in the file and on the command line.
//!
//! One convention for every duration setting: a bare whole number is in the unit the setting
//! has always had (milliseconds for the `*_ms` keys, seconds for `client_idle_timeout` and
//! `shutdown_grace`), so existing files and flags keep their meaning; a string carries its own
//! unit (`"250ms"`, `"10s"`, `"1m"`, `"1h"`). In code every duration is a `Duration`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// The unit a bare number is read in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Seconds,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Millis => "milliseconds",
            Unit::Seconds => "seconds",
        }
    }

    fn times(self, n: u64) -> Duration {
        match self {
            Unit::Millis => Duration::from_millis(n),
            Unit::Seconds => Duration::from_secs(n),
        }
    }
}

/// Parses `"250ms"`, `"10s"`, `"2m"`, `"1h"`, or a bare number in `bare` units.
pub fn parse(text: &str, bare: Unit) -> Result<Duration, String> {
    let text = text.trim();
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    let invalid = || {
        format!(
            "'{text}': expected a duration such as 250ms, 10s, 1m or 1h, or a whole number of {}",
            bare.name()
        )
    };
    let n: u64 = number.parse().map_err(|_| invalid())?;
    let seconds = |factor: u64| n.checked_mul(factor).map(Duration::from_secs);
    match unit.trim() {
        "" => Some(bare.times(n)),
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => None,
    }
    .ok_or_else(invalid)
}

/// Flag parser for settings whose bare numbers are milliseconds.
pub fn parse_millis(text: &str) -> Result<Duration, String> {
    parse(text, Unit::Millis)
}

/// Flag parser for settings whose bare numbers are seconds.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    parse(text, Unit::Seconds)
}

/// `deserialize_with` for an optional `*_ms` key.
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor(Unit::Millis)).map(Some)
}

/// `deserialize_with` for an optional key counted in seconds.
pub fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor(Unit::Seconds)).map(Some)
}

/// Takes a TOML integer (in the key's unit) or a string with a unit.
struct DurationVisitor(Unit);

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a whole number of {} or a string with a unit such as \"250ms\", \"10s\", \"1m\"",
            self.0.name()
        )
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
        Ok(self.0.times(n))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
        match u64::try_from(n) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(n), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        parse(text, self.0).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_numbers() {
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        let cases: &[(&str, Unit, Option<Duration>)] = &[
            ("250ms", Unit::Seconds, Some(ms(250))),
            ("10s", Unit::Millis, Some(s(10))),
            ("2m", Unit::Millis, Some(s(120))),
            ("1h", Unit::Millis, Some(s(3600))),
            (" 5 s ", Unit::Millis, Some(s(5))),
            ("1500", Unit::Millis, Some(ms(1500))),
            ("20", Unit::Seconds, Some(s(20))),
            ("0", Unit::Seconds, Some(Duration::ZERO)),
            ("", Unit::Millis, None),
            ("ms", Unit::Millis, None),
            ("1.5s", Unit::Millis, None),
            ("-1s", Unit::Millis, None),
            ("10d", Unit::Millis, None),
            ("99999999999999999999h", Unit::Millis, None),
        ];
        for (text, bare, want) in cases {
            assert_eq!(parse(text, *bare).ok(), *want, "{text:?} in {bare:?}");
        }
    }

    #[test]
    fn toml_integers_and_strings() {
        #[derive(serde::Deserialize)]
        struct Keys {
            #[serde(default, deserialize_with = "millis")]
            a_ms: Option<Duration>,
            #[serde(default, deserialize_with = "seconds")]
            b: Option<Duration>,
        }
        let keys: Keys = toml::from_str("a_ms = 1000\nb = \"250ms\"").unwrap();
        assert_eq!(keys.a_ms, Some(Duration::from_secs(1)));
        assert_eq!(keys.b, Some(Duration::from_millis(250)));
        let keys: Keys = toml::from_str("b = 3").unwrap();
        assert_eq!((keys.a_ms, keys.b), (None, Some(Duration::from_secs(3))));
        let error = toml::from_str::<Keys>("a_ms = -5")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("milliseconds"), "{error}");
        let error = toml::from_str::<Keys>("b = \"soon\"")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("'soon'"), "{error}");
        assert!(toml::from_str::<Keys>("b = 1.5").is_err());
    }
}

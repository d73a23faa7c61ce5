//! The one duration grammar of Confab's configuration.
//!
//! A duration is a string of whole numbers, each with a unit, from the
//! largest unit to the smallest, each unit at most once: `"250ms"`, `"30s"`,
//! `"2m"`, `"1m30s"`, `"1h"`, `"7d"`, `"2s500ms"`. Units: `d`, `h`, `m`,
//! `s`, `ms`, `us`, `ns`. Spaces between the parts are allowed
//! (`"1m 30s"`). A bare number is refused, in a file (`5000`) as in a
//! string (`"5000"`): the error says to add a unit, so that nobody has to
//! guess whether it meant seconds or milliseconds.
//!
//! [`format()`] writes the shortest form [`parse`] reads back, without days
//! (`"24h"`, `"1m30s"`, `"1s500ms"`, `"0s"`).
//!
//! Use it on a field with `#[serde(with = "confab_config::duration")]`.

use std::fmt;
use std::time::Duration;

use serde::Serializer;
use serde::de::{self, Deserializer, Visitor};

/// The units, largest first, with their length in nanoseconds.
const UNITS: &[(&str, u128)] = &[
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// The unit list as error messages show it.
const UNIT_LIST: &str = "d, h, m, s, ms, us, ns";

/// Why a text is not a duration. The message quotes the text and says how
/// to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

impl DurationError {
    fn new(text: &str, problem: impl fmt::Display) -> Self {
        Self(format!("invalid duration {text:?}: {problem}"))
    }
}

/// Parses a duration of the grammar (see the [module docs](self)).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::new(
            text,
            "empty; write a number with a unit, e.g. \"30s\"",
        ));
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(DurationError::new(text, no_unit(trimmed)));
    }
    let mut rest = trimmed;
    let mut total: u128 = 0;
    let mut last_unit: Option<usize> = None; // index into UNITS
    while !rest.is_empty() {
        let (number, after) = split_number(text, rest)?;
        let (unit, after) = split_unit(text, number, after)?;
        if last_unit.is_some_and(|last| unit <= last) {
            return Err(DurationError::new(
                text,
                "units go from the largest to the smallest, each once (e.g. \"1m30s\")",
            ));
        }
        last_unit = Some(unit);
        total = number
            .checked_mul(UNITS[unit].1)
            .and_then(|n| n.checked_add(total))
            .ok_or_else(|| DurationError::new(text, "too long"))?;
        rest = after.trim_start();
    }
    from_nanos(total).ok_or_else(|| DurationError::new(text, "too long"))
}

/// Writes `d` in the grammar, the largest units first, without days.
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut left = d.as_nanos();
    let mut out = String::new();
    for &(unit, nanos) in &UNITS[1..] {
        let n = left / nanos;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            left %= nanos;
        }
    }
    out
}

/// Serializes a duration as its [`format()`] string (for
/// `#[serde(with = "confab_config::duration")]`).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// Deserializes a duration from a string of the grammar; numbers are
/// refused with a message saying to add a unit (for
/// `#[serde(with = "confab_config::duration")]`).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"250ms\", \"30s\", \"2m\" or \"1h\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Err(E::custom(format!("duration {}", no_unit(&v.to_string()))))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Err(E::custom(format!("duration {}", no_unit(&v.to_string()))))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Err(E::custom(format!("duration {}", no_unit(&v.to_string()))))
    }
}

/// The message for a number without a unit.
fn no_unit(number: &str) -> String {
    format!(
        "{number} has no unit: add one, e.g. \"{number}ms\" or \"{number}s\" (units: {UNIT_LIST})"
    )
}

/// Splits the leading whole number off `rest`.
fn split_number<'a>(text: &str, rest: &'a str) -> Result<(u128, &'a str), DurationError> {
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    if end == 0 {
        let problem = match rest.chars().next() {
            Some('-') => "durations are never negative".to_owned(),
            _ => format!("expected a number at {rest:?}"),
        };
        return Err(DurationError::new(text, problem));
    }
    let number = rest[..end]
        .parse::<u128>()
        .map_err(|_| DurationError::new(text, "too long"))?;
    let after = &rest[end..];
    if after.starts_with(['.', ',']) {
        return Err(DurationError::new(
            text,
            "whole numbers only; use a smaller unit (\"1m30s\", not \"1.5m\")",
        ));
    }
    Ok((number, after.trim_start()))
}

/// Splits the unit after a number off `rest`; returns its index in [`UNITS`].
fn split_unit<'a>(
    text: &str,
    number: u128,
    rest: &'a str,
) -> Result<(usize, &'a str), DurationError> {
    let end = rest
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let unit = &rest[..end];
    if unit.is_empty() {
        return Err(DurationError::new(
            text,
            format!("{number} has no unit (units: {UNIT_LIST})"),
        ));
    }
    let index = UNITS
        .iter()
        .position(|(name, _)| *name == unit)
        .ok_or_else(|| {
            DurationError::new(text, format!("unknown unit {unit:?} (units: {UNIT_LIST})"))
        })?;
    Ok((index, &rest[end..]))
}

fn from_nanos(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    // The remainder is below 10^9, so it fits.
    let sub = (nanos % 1_000_000_000) as u32;
    Some(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[test]
    fn good_inputs() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("250ms", ms(250)),
            ("30s", ms(30_000)),
            ("2m", ms(120_000)),
            ("1m30s", ms(90_000)),
            ("1h", ms(3_600_000)),
            ("7d", ms(7 * 86_400_000)),
            ("1h30m", ms(5_400_000)),
            ("2s500ms", ms(2_500)),
            (" 1m 30s ", ms(90_000)),
            ("2 m", ms(120_000)),
            ("0s", Duration::ZERO),
            ("0ms", Duration::ZERO),
            ("1500us", Duration::from_micros(1_500)),
            ("7ns", Duration::from_nanos(7)),
            ("1d2h3m4s5ms6us7ns", Duration::new(93_784, 5_006_007)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn bad_inputs_say_what_is_wrong() {
        for (text, message) in [
            ("", "empty"),
            ("   ", "empty"),
            ("5000", "has no unit: add one, e.g. \"5000ms\" or \"5000s\""),
            ("0", "has no unit"),
            ("5x", "unknown unit \"x\""),
            ("2w", "unknown unit \"w\""),
            ("5 sec", "unknown unit \"sec\""),
            ("1m30", "30 has no unit"),
            ("s", "expected a number at \"s\""),
            ("abc", "expected a number"),
            ("-3s", "never negative"),
            ("1.5h", "whole numbers only"),
            ("30s1m", "from the largest to the smallest"),
            ("1s1s", "from the largest to the smallest"),
            ("999999999999999999999999d", "too long"),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(message), "{text:?}: {err}");
            assert!(err.contains(&format!("{text:?}")), "{text:?}: {err}");
        }
    }

    #[test]
    fn format_is_read_back() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_millis(1_500), "1s500ms"),
            (Duration::new(3_661, 1_001), "1h1m1s1us1ns"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d), "{text}");
        }
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        #[serde(with = "super")]
        every: Duration,
    }

    #[test]
    fn serde_reads_strings_and_refuses_numbers() {
        let h: Holder = serde_json::from_str(r#"{"every":"1m30s"}"#).unwrap();
        assert_eq!(h.every, Duration::from_secs(90));
        assert_eq!(serde_json::to_string(&h).unwrap(), r#"{"every":"1m30s"}"#);
        for number in ["5000", "-5", "1.5"] {
            let err = serde_json::from_str::<Holder>(&format!(r#"{{"every":{number}}}"#))
                .unwrap_err()
                .to_string();
            assert!(err.contains("has no unit: add one"), "{number}: {err}");
            assert!(err.contains(&format!("\"{number}ms\"")), "{number}: {err}");
        }
        let err = serde_json::from_str::<Holder>(r#"{"every":"soon"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration \"soon\""), "{err}");
    }
}

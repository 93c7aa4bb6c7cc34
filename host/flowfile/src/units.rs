//! Sizes (`64MiB`) and durations (`500ms`, `1h30m`): their parsers, and the serde and JSON
//! Schema types that use them, so the parser and the schema's patterns sit side by side.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::diagnostic::with_hint;

/// What a size must look like, as a regular expression (the schema's pattern for strings).
pub(crate) const SIZE_PATTERN: &str = r"^0*[1-9][0-9]* ?(B|KiB|MiB|GiB|KB|MB|GB)?$";

/// What a duration must look like, as a regular expression (the schema's pattern).
pub(crate) const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";

const SIZE_HINT: &str = "a size is a whole number of bytes with an optional unit: B, KiB, MiB, GiB (powers of 1024) or KB, MB, GB (powers of 1000), e.g. `64MiB`";
const DURATION_HINT: &str = "a duration is a whole number with a unit: ms, s, m, h or d, e.g. `500ms`, `30s`, `5m`, `1h30m`";

/// Parses `64MiB`, `1 GB`, `512B` or `1024` into bytes; a size is never 0.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(format!("expected a size like 64MiB, found `{text}`")),
    };
    if digits.is_empty() {
        return Err(format!("expected a size like 64MiB, found `{text}`"));
    }
    match digits
        .parse::<u64>()
        .ok()
        .map(|n| n.checked_mul(multiplier))
    {
        Some(Some(0)) => Err(format!("a size must be more than 0 bytes, not `{text}`")),
        Some(Some(bytes)) => Ok(bytes),
        _ => Err(format!("the size `{text}` is too large")),
    }
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `1d` and sums like `1h30m` into a duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration like 30s, found `{text}`");
    let too_long = || format!("the duration `{text}` is too long");
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(bad());
        }
        let (digits, tail) = rest.split_at(digits_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let millis_per: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        let millis = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(millis_per))
            .ok_or_else(too_long)?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(too_long)?;
        rest = next;
    }
    Ok(total)
}

/// A size in bytes, written `64MiB` or as a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Size(pub(crate) u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like 64MiB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Size, E> {
                Err(E::custom(with_hint(
                    &format!("expected a size like 64MiB, found `{v}`"),
                    SIZE_HINT,
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v)
                    .map(Size)
                    .map_err(|m| E::custom(with_hint(&m, SIZE_HINT)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Size, E> {
                Err(E::custom(with_hint(
                    &format!("expected a size like 64MiB, found `{v}`"),
                    SIZE_HINT,
                )))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: a whole number, or a number with a unit B, KiB, MiB, GiB (powers of 1024) or KB, MB, GB (powers of 1000), e.g. `64MiB`.",
            "anyOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": SIZE_PATTERN }
            ]
        })
    }
}

/// A span of time, written `500ms`, `30s`, `5m`, `2h`, `1d` or a sum like `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Period(pub(crate) Duration);

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PeriodVisitor;
        impl Visitor<'_> for PeriodVisitor {
            type Value = Period;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 30s")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Period, E> {
                Err(E::custom(with_hint(
                    &format!("expected a duration like 30s, found the bare number `{v}`"),
                    &format!("add a unit, e.g. `{v}s`; {DURATION_HINT}"),
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Period, E> {
                Err(E::custom(with_hint(
                    &format!("expected a duration like 30s, found `{v}`"),
                    DURATION_HINT,
                )))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Period, E> {
                Err(E::custom(with_hint(
                    &format!("expected a duration like 30s, found `{v}`"),
                    DURATION_HINT,
                )))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Period, E> {
                Err(E::custom(with_hint(
                    &format!("expected a duration like 30s, found `{v}`"),
                    DURATION_HINT,
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Period, E> {
                parse_duration(v)
                    .map(Period)
                    .map_err(|m| E::custom(with_hint(&m, DURATION_HINT)))
            }
        }
        deserializer.deserialize_any(PeriodVisitor)
    }
}

impl JsonSchema for Period {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A span of time: whole numbers with units ms, s, m, h, d, e.g. `500ms`, `30s`, `5m`, `1h30m`.",
            "type": "string",
            "pattern": DURATION_PATTERN
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1 GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("3KiB"), Ok(3072));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("0MiB").is_err());
        assert_eq!(parse_size("010"), Ok(10));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("64 mb").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size("18446744073709551615GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("1m5s250ms"),
            Ok(Duration::from_millis(65_250))
        );
        for bad in [
            "", "5", "s", "5x", "5 s", "1.5s", "-1s", "5S", "1h 30m", "ms5",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
    }
}

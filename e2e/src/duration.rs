//! Durations as people type them (`150ms`, `2s`, `1.5m`), for echo-http's
//! `delay` control and the client's `--timeout`, and latencies as they are
//! printed.
//!
//! A bare number is refused rather than guessed: `delay=150` meant
//! milliseconds to one person and seconds to another.

use std::time::Duration;

/// Longer than any test should wait on one request; a typo such as `2h`
/// for `2s` is refused instead of wedging a test run.
pub const MAX_DURATION: Duration = Duration::from_secs(60 * 60);

/// Each unit's length in nanoseconds; the text after the number must be
/// one of these exactly.
const UNITS: [(&str, f64); 4] = [("us", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9)];

/// Why a duration was refused; the `Display` is the whole explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty: write a duration like 150ms or 2s")]
    Empty,
    #[error("`{0}` has no unit: write it like 150ms or 2s (units: us, ms, s, m)")]
    NoUnit(String),
    #[error("`{0}` does not start with a number: write it like 150ms or 2s")]
    NotANumber(String),
    #[error("`{value}` has an unknown unit `{unit}`: use us, ms, s or m")]
    UnknownUnit { value: String, unit: String },
    #[error("`{0}` is longer than the limit of 1h")]
    TooLong(String),
}

/// Parses `<number><unit>` with unit `us`, `ms`, `s` or `m`; the number may
/// have a fraction (`1.5s`).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| DurationError::NotANumber(text.to_owned()))?;
    if unit.is_empty() {
        return Err(DurationError::NoUnit(text.to_owned()));
    }
    let nanos_per_unit = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, nanos)| *nanos)
        .ok_or_else(|| DurationError::UnknownUnit {
            value: text.to_owned(),
            unit: unit.to_owned(),
        })?;
    // Exact for the integers people type (150ms is 1.5e8 ns); a fraction is
    // rounded to the nanosecond.
    let nanos = (number * nanos_per_unit).round();
    if nanos > MAX_DURATION.as_nanos() as f64 {
        return Err(DurationError::TooLong(text.to_owned()));
    }
    // `nanos` is finite, non-negative and at most an hour's worth here.
    Ok(Duration::from_nanos(nanos as u64))
}

/// A latency in milliseconds with two decimals (`1.23ms`): one unit for a
/// whole line of numbers, so they compare at a glance.
pub fn format_millis(millis: f64) -> String {
    format!("{millis:.2}ms")
}

/// A duration as fractional milliseconds, as the JSON summary has them.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("150ms"), Ok(Duration::from_millis(150)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_fractions_and_surrounding_space() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 0.25s "), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(".5ms"), Ok(Duration::from_micros(500)));
    }

    #[test]
    fn refuses_a_bare_number() {
        assert_eq!(
            parse_duration("150"),
            Err(DurationError::NoUnit("150".into()))
        );
        assert!(
            DurationError::NoUnit("150".into())
                .to_string()
                .contains("150ms")
        );
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("ms"),
            Err(DurationError::NotANumber("ms".into()))
        );
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::NotANumber("-1s".into()))
        );
        assert_eq!(
            parse_duration("1.2.3s"),
            Err(DurationError::NotANumber("1.2.3s".into()))
        );
        assert_eq!(
            parse_duration("5sec"),
            Err(DurationError::UnknownUnit {
                value: "5sec".into(),
                unit: "sec".into()
            })
        );
        assert_eq!(
            parse_duration("2h"),
            Err(DurationError::UnknownUnit {
                value: "2h".into(),
                unit: "h".into()
            })
        );
    }

    #[test]
    fn refuses_more_than_an_hour() {
        assert_eq!(parse_duration("60m"), Ok(MAX_DURATION));
        assert_eq!(
            parse_duration("61m"),
            Err(DurationError::TooLong("61m".into()))
        );
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::TooLong("99999999999999999999s".into()))
        );
    }

    #[test]
    fn formats_milliseconds() {
        assert_eq!(format_millis(millis(Duration::from_micros(1234))), "1.23ms");
        assert_eq!(format_millis(millis(Duration::from_secs(2))), "2000.00ms");
        assert_eq!(millis(Duration::from_micros(1500)), 1.5);
    }
}

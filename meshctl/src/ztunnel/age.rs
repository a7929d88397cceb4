//! Timestamps of the admin API as ages relative to "now": "5m ago",
//! "in 23h". `now` is always a parameter, so rendering stays a pure function
//! and tests pin the clock.

use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An RFC 3339 timestamp, or `None` when it does not parse (it is then
/// shown as sent, never guessed at).
pub fn parse(timestamp: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(timestamp, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// `at` relative to `now`: "5m ago" for the past, "in 5m" for the future,
/// "now" within a second.
pub fn relative(at: SystemTime, now: SystemTime) -> String {
    match now.duration_since(at) {
        Ok(past) if past < Duration::from_secs(1) => "now".to_owned(),
        Ok(past) => format!("{} ago", short(past)),
        Err(future) if future.duration() < Duration::from_secs(1) => "now".to_owned(),
        Err(future) => format!("in {}", short(future.duration())),
    }
}

/// [`relative`] of a timestamp; the timestamp itself when it does not parse.
pub fn relative_str(timestamp: &str, now: SystemTime) -> String {
    match parse(timestamp) {
        Some(at) => relative(at, now),
        None => timestamp.to_owned(),
    }
}

/// How long ago `timestamp` was, without the "ago": a table's AGE column.
/// A time in the future (clock skew) reads as "0s".
pub fn age_str(timestamp: &str, now: SystemTime) -> String {
    match parse(timestamp) {
        Some(at) => short(now.duration_since(at).unwrap_or_default()),
        None => timestamp.to_owned(),
    }
}

/// kubectl's style: the largest unit, with the next one where it still
/// matters ("90s", "5m", "3h12m", "2d4h").
pub fn short(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    let (secs_left, mins_left, hours_left) = (secs % 60, mins % 60, hours % 24);
    if secs < 120 {
        format!("{secs}s")
    } else if mins < 10 && secs_left != 0 {
        format!("{mins}m{secs_left}s")
    } else if hours < 1 {
        format!("{mins}m")
    } else if hours < 24 && mins_left != 0 {
        format!("{hours}h{mins_left}m")
    } else if days < 1 {
        format!("{hours}h")
    } else if days < 7 && hours_left != 0 {
        format!("{days}d{hours_left}h")
    } else {
        format!("{days}d")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(timestamp: &str) -> SystemTime {
        parse(timestamp).unwrap()
    }

    #[test]
    fn parses_rfc3339_in_utc_and_with_offsets() {
        assert_eq!(at("2026-12-01T08:10:00Z"), at("2026-12-01T09:10:00+01:00"));
        assert_eq!(
            at("2026-12-01T08:10:00Z") + Duration::from_millis(500),
            at("2026-12-01T08:10:00.5Z")
        );
        assert_eq!(parse("yesterday"), None);
        assert_eq!(relative_str("yesterday", SystemTime::now()), "yesterday");
    }

    #[test]
    fn relative_times_read_like_kubectl() {
        let now = at("2026-12-01T08:15:00Z");
        assert_eq!(relative(at("2026-12-01T08:10:00Z"), now), "5m ago");
        assert_eq!(relative(at("2026-12-01T08:14:15Z"), now), "45s ago");
        assert_eq!(relative(at("2026-12-01T08:11:30Z"), now), "3m30s ago");
        assert_eq!(relative(at("2026-12-01T05:03:00Z"), now), "3h12m ago");
        assert_eq!(relative(at("2026-12-02T08:10:00Z"), now), "in 23h55m");
        assert_eq!(relative(at("2026-11-28T04:15:00Z"), now), "3d4h ago");
        assert_eq!(relative(at("2026-10-01T08:15:00Z"), now), "61d ago");
        assert_eq!(relative(now, now), "now");
        assert_eq!(age_str("2026-12-01T08:20:00Z", now), "0s");
        assert_eq!(age_str("2026-12-01T08:12:30Z", now), "2m30s");
    }
}

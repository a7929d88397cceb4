//! The scalar checks of the waypoint route translation: Gateway API
//! durations, and the strings the waypoint would refuse.
//!
//! The waypoint rejects a whole `WaypointRoutes` resource when one string
//! in it does not parse, and keeps serving the service's previous routes.
//! Checking the same things here confines a mistake to the rule that holds
//! it, and names the `HTTPRoute` in `/debug/diagnostics`, where an operator
//! looks, instead of in a NACK. The rules mirror `waypoint/src/route/convert.rs`.

use std::fmt;

/// Why a value cannot be sent; the message names the value and the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Invalid(pub(super) String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(super) fn invalid(message: impl Into<String>) -> Invalid {
    Invalid(message.into())
}

/// A Gateway API duration (GEP-2257): one to four components, each one to
/// five digits followed by `h`, `m`, `s` or `ms`, e.g. `1h30m`, `500ms`,
/// `0s`. No sign, no fractions, no spaces.
pub(super) fn duration(field: &str, text: &str) -> Result<prost_types::Duration, Invalid> {
    let bad = || {
        invalid(format!(
            "{field} {text:?} is not a Gateway API duration: write up to four parts of 1-5 digits \
             and a unit h, m, s or ms, e.g. \"10s\", \"500ms\", \"1h30m\""
        ))
    };
    let mut millis: u64 = 0;
    let mut rest = text.as_bytes();
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if !(1..=5).contains(&digits) {
            return Err(bad());
        }
        // At most five digits: the number fits, and so does the sum below.
        let number: u64 = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        rest = &rest[digits..];
        let (unit_millis, unit_len) = match rest {
            [b'm', b's', ..] => (1, 2),
            [b'h', ..] => (3_600_000, 1),
            [b'm', ..] => (60_000, 1),
            [b's', ..] => (1_000, 1),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        millis += number * unit_millis;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    // Both fit: at most 4 * 99999 hours in milliseconds.
    let seconds = i64::try_from(millis / 1_000).map_err(|_| bad())?;
    let nanos = i32::try_from((millis % 1_000) * 1_000_000).map_err(|_| bad())?;
    Ok(prost_types::Duration { seconds, nanos })
}

/// A header name the waypoint accepts (as `http::HeaderName` parses it).
pub(super) fn header_name(name: &str) -> Result<(), Invalid> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(drop)
        .map_err(|_| {
            invalid(format!(
                "header name {name:?} is not a valid HTTP header name"
            ))
        })
}

/// A header value without control characters or line breaks.
pub(super) fn header_value(name: &str, value: &str) -> Result<(), Invalid> {
    http::HeaderValue::from_bytes(value.as_bytes())
        .map(drop)
        .map_err(|_| {
            invalid(format!(
                "the value {value:?} of header {name:?} is not a valid HTTP header value: \
                 control characters and line breaks are not allowed"
            ))
        })
}

/// The Gateway API's methods, which are case-sensitive.
pub(super) fn method(method: &str) -> Result<(), Invalid> {
    const METHODS: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    if METHODS.contains(&method) {
        Ok(())
    } else {
        Err(invalid(format!(
            "method {method:?} is not one of {} (methods are case-sensitive)",
            METHODS.join(", ")
        )))
    }
}

/// The Gateway API's `PreciseHostname`: a lowercase RFC 1123 DNS name.
pub(super) fn hostname(hostname: &str) -> Result<(), Invalid> {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if hostname.len() <= 253 && hostname.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(invalid(format!(
            "hostname {hostname:?} is not a valid host name: write a lowercase DNS name \
             (RFC 1123) without a port"
        )))
    }
}

/// An absolute path, as path matches and path modifiers need.
pub(super) fn absolute_path(what: &str, path: &str) -> Result<(), Invalid> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(invalid(format!("{what} {path:?} does not start with `/`")))
    }
}

/// A regular expression the waypoint can compile (RE2 syntax, as the
/// `regex` crate reads it).
pub(super) fn regex(what: &str, pattern: &str) -> Result<(), Invalid> {
    regex::Regex::new(pattern).map(drop).map_err(|_| {
        invalid(format!(
            "the {what} regular expression {pattern:?} does not compile; write it in RE2 syntax"
        ))
    })
}

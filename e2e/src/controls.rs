//! What a request asks echo-http to do to it: answer a status code, wait
//! first, or fail a fraction of the time. Tests of the mesh steer the
//! server per request this way (the waypoint's retries need `fail`), so one
//! binary plays every misbehaving backend.
//!
//! Each control is a query parameter (`?status=503`) or, where the query is
//! not the client's to choose, a request header (`x-echo-status: 503`).
//! The query wins when both are given. Parsing is pure: [`Controls::parse`]
//! takes the query and the headers and returns data, and deciding the
//! answer ([`Controls::answer`]) takes the random roll as an argument.
//!
//! Values are plain ASCII tokens (`503`, `150ms`, `0.5`) and are not
//! percent-decoded: an encoded value is refused like any other bad value.

use std::fmt;
use std::time::Duration;

use hyper::StatusCode;
use hyper::header::HeaderMap;

use crate::duration::parse_duration;

/// What one request asks for; `None` means "as normal".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Controls {
    /// The status to answer instead of 200.
    pub status: Option<StatusCode>,
    /// How long to wait before answering.
    pub delay: Option<Duration>,
    /// The fraction of such requests answered 503, from 0 to 1.
    pub fail: Option<f64>,
}

/// The answer [`Controls::answer`] picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    /// Whether `fail` turned this request into a 503.
    pub injected_failure: bool,
}

/// One of the controls, by the names a request uses for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameter {
    Status,
    Delay,
    Fail,
}

/// Where a control's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Query,
    Header,
}

/// A control with a value that cannot be used, worded for the person who
/// wrote the request: which parameter, what it was, and what it should be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {reason}", describe(*.parameter, *.origin))]
pub struct ControlError {
    pub parameter: Parameter,
    pub origin: Origin,
    pub reason: String,
}

/// Lowest and highest status a request may ask for: 1xx are not final
/// answers, and HTTP has nothing above 599.
const STATUS_RANGE: std::ops::RangeInclusive<u16> = 200..=599;

// === impl Controls ===

impl Controls {
    /// Reads the controls from a request's query string and headers.
    pub fn parse(query: Option<&str>, headers: &HeaderMap) -> Result<Self, ControlError> {
        Ok(Controls {
            status: control(Parameter::Status, query, headers, parse_status)?,
            delay: control(Parameter::Delay, query, headers, |value| {
                parse_duration(value).map_err(|error| error.to_string())
            })?,
            fail: control(Parameter::Fail, query, headers, parse_fail)?,
        })
    }

    /// These controls, with each one the request left unset taken from
    /// `defaults` (the server's own flags), so that one pod can play a
    /// broken endpoint while a request can still ask for something else.
    pub fn or(self, defaults: Controls) -> Controls {
        Controls {
            status: self.status.or(defaults.status),
            delay: self.delay.or(defaults.delay),
            fail: self.fail.or(defaults.fail),
        }
    }

    /// The status to answer, given `roll`, a random number in `[0, 1)`
    /// drawn per request: with `fail = f` the request fails when
    /// `roll < f`, so `fail=1` always fails and `fail=0` never does.
    pub fn answer(&self, roll: f64) -> Answer {
        if self.fail.is_some_and(|fraction| roll < fraction) {
            return Answer {
                status: StatusCode::SERVICE_UNAVAILABLE,
                injected_failure: true,
            };
        }
        Answer {
            status: self.status.unwrap_or(StatusCode::OK),
            injected_failure: false,
        }
    }
}

// === impl Parameter ===

impl Parameter {
    /// The query parameter's name.
    pub fn query_name(self) -> &'static str {
        match self {
            Parameter::Status => "status",
            Parameter::Delay => "delay",
            Parameter::Fail => "fail",
        }
    }

    /// The request header's name.
    pub fn header_name(self) -> &'static str {
        match self {
            Parameter::Status => "x-echo-status",
            Parameter::Delay => "x-echo-delay",
            Parameter::Fail => "x-echo-fail",
        }
    }
}

impl fmt::Display for Parameter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.query_name())
    }
}

fn describe(parameter: Parameter, origin: Origin) -> String {
    match origin {
        Origin::Query => format!("query parameter `{}`", parameter.query_name()),
        Origin::Header => format!("header `{}`", parameter.header_name()),
    }
}

/// The value of one control, if the request gives it, parsed by `parse`
/// (whose error is the reason, without the parameter's name).
fn control<T>(
    parameter: Parameter,
    query: Option<&str>,
    headers: &HeaderMap,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, ControlError> {
    let Some((origin, value)) = lookup(parameter, query, headers)? else {
        return Ok(None);
    };
    parse(value).map(Some).map_err(|reason| ControlError {
        parameter,
        origin,
        reason,
    })
}

/// The raw value of `parameter`: from the query if it is there, else from
/// the header. Given twice in the same place is refused: which one the
/// sender meant is anyone's guess.
fn lookup<'a>(
    parameter: Parameter,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
) -> Result<Option<(Origin, &'a str)>, ControlError> {
    let refused = |origin, reason: &str| ControlError {
        parameter,
        origin,
        reason: reason.to_owned(),
    };

    let mut from_query = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(name, _)| *name == parameter.query_name())
        .map(|(_, value)| value);
    if let Some(value) = from_query.next() {
        if from_query.next().is_some() {
            return Err(refused(Origin::Query, "given more than once: give it once"));
        }
        return Ok(Some((Origin::Query, value)));
    }

    let mut from_headers = headers.get_all(parameter.header_name()).iter();
    let Some(value) = from_headers.next() else {
        return Ok(None);
    };
    if from_headers.next().is_some() {
        return Err(refused(
            Origin::Header,
            "given more than once: give it once",
        ));
    }
    let value = value.to_str().map_err(|_| {
        refused(
            Origin::Header,
            "not plain ASCII: write it like the query parameter",
        )
    })?;
    Ok(Some((Origin::Header, value.trim())))
}

fn parse_status(value: &str) -> Result<StatusCode, String> {
    let wrong = || {
        format!(
            "`{value}` is not a status code from {} to {}: write it like 503",
            STATUS_RANGE.start(),
            STATUS_RANGE.end()
        )
    };
    let code: u16 = value.parse().map_err(|_| wrong())?;
    if !STATUS_RANGE.contains(&code) {
        return Err(wrong());
    }
    StatusCode::from_u16(code).map_err(|_| wrong())
}

/// A `fail` fraction, from a request or from echo-http's `--fail`.
pub fn parse_fail(value: &str) -> Result<f64, String> {
    let wrong = || {
        format!(
            "`{value}` is not a fraction from 0 to 1: write it like 0.1 to fail one request in ten"
        )
    };
    let fraction: f64 = value.parse().map_err(|_| wrong())?;
    // Also refuses NaN, which compares false to everything.
    if !(0.0..=1.0).contains(&fraction) {
        return Err(wrong());
    }
    Ok(fraction)
}

#[cfg(test)]
mod tests;

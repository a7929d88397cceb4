//! The edge between pushed config and fault injection: a `WaypointFaults`
//! resource (`proto::waypoint`, type URL [`proto::WAYPOINT_FAULTS_TYPE_URL`])
//! becomes [`ServiceFaults`].
//!
//! Everything a value can get wrong is checked here, once, so that
//! deciding cannot fail: percentages (0 to 100, finite), statuses (200 to
//! 599, gRPC's 0 to 16), delays (set, not negative), header names, regexes, and that each
//! string match and each fault sets something. A resource is
//! all-or-nothing: its first problem rejects it, with the way down to the
//! field, so the xDS client NACKs it and the service keeps its previous
//! faults.

use std::time::Duration;

use http::{HeaderName, StatusCode};
use proto::waypoint as pb;
use proto::waypoint::fault_string_match::Kind;
use regex::bytes::Regex;

use super::{Abort, Delay, Fault, FaultMatch, FaultRule, ServiceFaults, StringMatcher};
use crate::located::Located;
use crate::route::is_precise_hostname;

/// The highest gRPC status code, `UNAUTHENTICATED` (grpc/grpc
/// `doc/statuscodes.md`).
const MAX_GRPC_STATUS: u16 = 16;

/// A `WaypointFaults` resource that cannot become [`ServiceFaults`], and
/// where: `rule 1 match 0 header x-test: ...`. Positions count from 0.
pub type ConvertError = Located<Problem>;

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error(
        "hostname `{0}` is not a valid host name: write a lowercase DNS name (RFC 1123) without \
         a port"
    )]
    InvalidHostname(String),
    #[error("percentage {0} is not from 0 to 100")]
    InvalidPercentage(String),
    #[error("status {0} is not from 200 to 599")]
    InvalidStatus(u32),
    #[error("gRPC status {0} is not from 0 to 16")]
    InvalidGrpcStatus(u32),
    #[error("delay {0:?} is negative or out of range")]
    InvalidDelay(prost_types::Duration),
    #[error("`fault` sets neither a delay nor an abort")]
    EmptyFault,
    #[error("header name `{0}` is not a valid HTTP header name")]
    InvalidHeaderName(String),
    #[error("regex `{0}` does not compile (RE2 syntax): {1}")]
    InvalidRegex(String, String),
}

// === impl ServiceFaults ===

impl TryFrom<pb::WaypointFaults> for ServiceFaults {
    type Error = ConvertError;

    fn try_from(resource: pb::WaypointFaults) -> Result<Self, Self::Error> {
        let pb::WaypointFaults { hostname, rules } = resource;
        if hostname.is_empty() {
            return Err(Problem::Missing("the service hostname").into());
        }
        if !is_precise_hostname(&hostname) {
            return Err(Problem::InvalidHostname(hostname).into());
        }
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| convert_rule(rule).map_err(|e| e.at(format_args!("rule {i}"))))
            .collect::<Result<_, _>>()?;
        Ok(ServiceFaults {
            hostname: hostname.into(),
            rules,
        })
    }
}

fn convert_rule(rule: pb::FaultRule) -> Result<FaultRule, ConvertError> {
    let pb::FaultRule {
        source,
        matches,
        fault,
    } = rule;
    let matches = matches
        .into_iter()
        .enumerate()
        .map(|(i, m)| convert_match(m).map_err(|e| e.at(format_args!("match {i}"))))
        .collect::<Result<_, _>>()?;
    let fault = fault
        .map(|fault| convert_fault(fault).map_err(|e| e.at("fault")))
        .transpose()?;
    Ok(FaultRule {
        source: source.into(),
        matches,
        fault,
    })
}

fn convert_match(m: pb::FaultMatch) -> Result<FaultMatch, ConvertError> {
    let pb::FaultMatch {
        uri,
        headers,
        method,
    } = m;
    let uri = uri
        .map(|m| convert_string_match(m).map_err(|e| e.at("uri")))
        .transpose()?;
    let method = method
        .map(|m| convert_string_match(m).map_err(|e| e.at("method")))
        .transpose()?;
    let headers = headers
        .into_iter()
        .map(|header| {
            let at = |e: ConvertError| e.at(format_args!("header {}", header.name));
            let name = HeaderName::from_bytes(header.name.as_bytes())
                .map_err(|_| at(Problem::InvalidHeaderName(header.name.clone()).into()))?;
            let value = header
                .value
                .ok_or_else(|| at(Problem::Missing("the header's value").into()))?;
            Ok((name, convert_string_match(value).map_err(at)?))
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(FaultMatch {
        uri,
        headers,
        method,
    })
}

fn convert_string_match(m: pb::FaultStringMatch) -> Result<StringMatcher, ConvertError> {
    match m.kind {
        None => Err(Problem::Missing("exact, prefix or regex").into()),
        Some(Kind::Exact(value)) => Ok(StringMatcher::Exact(value)),
        Some(Kind::Prefix(value)) => Ok(StringMatcher::Prefix(value)),
        Some(Kind::Regex(pattern)) => {
            // Compiled alone first, so that `a)|(b` cannot escape the
            // anchoring group.
            let anchored = Regex::new(&pattern)
                .and_then(|_| Regex::new(&format!("^(?:{pattern})$")))
                .map_err(|e| Problem::InvalidRegex(pattern.clone(), e.to_string()))?;
            Ok(StringMatcher::Regex(anchored))
        }
    }
}

fn convert_fault(fault: pb::Fault) -> Result<Fault, ConvertError> {
    let pb::Fault { delay, abort } = fault;
    if delay.is_none() && abort.is_none() {
        return Err(Problem::EmptyFault.into());
    }
    let delay = delay
        .map(|delay| -> Result<Delay, ConvertError> {
            let at = |e: ConvertError| e.at("delay");
            let fixed = delay
                .fixed_delay
                .ok_or_else(|| at(Problem::Missing("fixed_delay").into()))?;
            let duration =
                Duration::try_from(fixed).map_err(|_| at(Problem::InvalidDelay(fixed).into()))?;
            Ok(Delay {
                duration,
                percentage: percentage(delay.percentage).map_err(at)?,
            })
        })
        .transpose()?;
    let abort = abort
        .map(|abort| -> Result<Abort, ConvertError> {
            let at = |e: ConvertError| e.at("abort");
            let status = u16::try_from(abort.http_status)
                .ok()
                .filter(|s| (200..=599).contains(s))
                .and_then(|s| StatusCode::from_u16(s).ok())
                .ok_or_else(|| at(Problem::InvalidStatus(abort.http_status).into()))?;
            let grpc_status = abort
                .grpc_status
                .map(|code| {
                    u16::try_from(code)
                        .ok()
                        .filter(|code| *code <= MAX_GRPC_STATUS)
                        .ok_or_else(|| at(Problem::InvalidGrpcStatus(code).into()))
                })
                .transpose()?;
            Ok(Abort {
                status,
                grpc_status,
                percentage: percentage(abort.percentage).map_err(at)?,
            })
        })
        .transpose()?;
    Ok(Fault { delay, abort })
}

fn percentage(value: f64) -> Result<f64, ConvertError> {
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(Problem::InvalidPercentage(value.to_string()).into())
    }
}

//! Fault injection, from the `fault` of Istio `VirtualService`s: one
//! [`ServiceFaults`] per service, built with `TryFrom` from the pushed
//! `WaypointFaults` resource (see `convert`).
//!
//! The phase runs after L7 authorization and before routing, where
//! Envoy's fault filter sits (after RBAC, before the router): a denied
//! request is never delayed, and the fault sees the request as the client
//! sent it, before any route filter rewrites it. The first rule with a
//! matching match decides, as the first matching `http` entry does in
//! Istio; its delay and its abort each apply to their own percentage of
//! the requests it matches, the delay first.
//!
//! [`ServiceFaults::decide`] is pure: the two dice are passed in
//! ([`Rolls`]), so tests choose them and the data path draws them.

mod convert;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method, StatusCode};
use regex::bytes::Regex;

pub use self::convert::{ConvertError, Problem};

/// The fault rules of one service.
#[derive(Debug, Clone)]
pub struct ServiceFaults {
    /// Fully qualified hostname of the service.
    pub hostname: Arc<str>,
    /// In order; the first that matches decides.
    rules: Vec<FaultRule>,
}

/// One `http` entry of a VirtualService.
#[derive(Debug, Clone)]
struct FaultRule {
    /// `<ns>/<name> http <n>`, for logs.
    source: Arc<str>,
    /// Any one must match; empty matches every request.
    matches: Vec<FaultMatch>,
    /// `None`: the requests it matches are left alone.
    fault: Option<Fault>,
}

/// Every condition set must hold.
#[derive(Debug, Clone)]
struct FaultMatch {
    uri: Option<StringMatcher>,
    headers: Vec<(HeaderName, StringMatcher)>,
    method: Option<StringMatcher>,
}

/// Istio's `StringMatch`.
#[derive(Debug, Clone)]
enum StringMatcher {
    Exact(String),
    Prefix(String),
    /// Anchored: it must match the whole value.
    Regex(Regex),
}

/// A delay, an abort, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub delay: Option<Delay>,
    pub abort: Option<Abort>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delay {
    pub duration: Duration,
    /// 0 to 100.
    pub percentage: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Abort {
    pub status: StatusCode,
    /// Istio's `grpcStatus` (0 to 16): what a gRPC request is answered
    /// with instead of the status mapped from `status` (which is then 200,
    /// as Envoy aborts a gRPC fault).
    pub grpc_status: Option<u16>,
    /// 0 to 100.
    pub percentage: f64,
}

/// The two dice of one request, each uniform in `[0, 100)`: a fault
/// applies when its die is below its percentage, so 0 never applies and
/// 100 always does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rolls {
    pub delay: f64,
    pub abort: f64,
}

/// What to do to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The rule that decided, for the log.
    pub source: Arc<str>,
    pub delay: Option<Duration>,
    pub abort: Option<StatusCode>,
    /// With `abort`: the `grpc-status` a gRPC request gets instead of the
    /// one mapped from `abort`.
    pub grpc_status: Option<u16>,
}

/// What of a request the matches read: the normalized path without the
/// query, the method, the headers.
#[derive(Debug, Clone, Copy)]
pub struct FaultRequest<'a> {
    pub path: &'a str,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

// === impl Rolls ===

impl Rolls {
    /// Two fresh dice.
    pub fn draw() -> Self {
        Rolls {
            delay: fastrand::f64() * 100.0,
            abort: fastrand::f64() * 100.0,
        }
    }
}

// === impl ServiceFaults ===

impl ServiceFaults {
    /// What the first matching rule does to `request` with these dice;
    /// `None` when no rule matches, the rule has no fault, or neither die
    /// falls within its percentage.
    pub fn decide(&self, request: &FaultRequest<'_>, rolls: Rolls) -> Option<Injection> {
        let rule = self.rules.iter().find(|rule| rule.matches(request))?;
        let fault = rule.fault.as_ref()?;
        let delay = fault
            .delay
            .as_ref()
            .filter(|delay| rolls.delay < delay.percentage)
            .map(|delay| delay.duration);
        let abort = fault
            .abort
            .as_ref()
            .filter(|abort| rolls.abort < abort.percentage);
        if delay.is_none() && abort.is_none() {
            return None;
        }
        Some(Injection {
            source: rule.source.clone(),
            delay,
            abort: abort.map(|abort| abort.status),
            grpc_status: abort.and_then(|abort| abort.grpc_status),
        })
    }
}

// === impl FaultRule ===

impl FaultRule {
    fn matches(&self, request: &FaultRequest<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(request))
    }
}

// === impl FaultMatch ===

impl FaultMatch {
    fn matches(&self, request: &FaultRequest<'_>) -> bool {
        let uri = self
            .uri
            .as_ref()
            .is_none_or(|m| m.matches(request.path.as_bytes()));
        let method = self
            .method
            .as_ref()
            .is_none_or(|m| m.matches(request.method.as_str().as_bytes()));
        uri && method
            && self
                .headers
                .iter()
                .all(|(name, m)| header_matches(request.headers, name, m))
    }
}

// === impl StringMatcher ===

impl StringMatcher {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            StringMatcher::Exact(exact) => value == exact.as_bytes(),
            StringMatcher::Prefix(prefix) => value.starts_with(prefix.as_bytes()),
            StringMatcher::Regex(regex) => regex.is_match(value),
        }
    }
}

/// A header holds if it is present and its value matches; a repeated
/// header is read as one comma-separated value, as Envoy does.
fn header_matches(headers: &HeaderMap, name: &HeaderName, matcher: &StringMatcher) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let mut joined = first.as_bytes().to_vec();
    for value in values {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    matcher.matches(&joined)
}

//! The edge between pushed config and the route table: a `WaypointRoutes`
//! resource (`proto::waypoint`, type URL
//! [`proto::WAYPOINT_ROUTES_TYPE_URL`]) becomes the plain data of
//! [`super::config`], and from there a [`RouteTable`].
//!
//! Everything a string or a number can get wrong is checked here, once,
//! when the resource arrives: header names and values, methods, status
//! codes, ports, hostnames, paths, durations and timestamps, and that each
//! `oneof` is set. What needs a whole rule or table (regexes, filter
//! combinations) is left to [`RouteTable::new`]. A resource is
//! all-or-nothing: its first problem rejects it, with an error that says
//! where (route, rule, and the way down to the field), so the xDS client
//! can NACK it and keep serving the table it has.
//!
//! Defaults for unset fields are the ones `waypoint.proto` documents; the
//! Gateway API's own defaults (a weight of 1, a mirror percent of 100) are
//! the control plane's to fill in, so zero means zero here.

use crate::located::Located;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use proto::waypoint as pb;
use proto::waypoint::{filter, path_match, path_modifier, string_match, weighted_backend};

use super::config::{
    Backend, Filter, Fraction, HeaderMatch, HeaderModifier, PathMatch, PathModifier,
    QueryParamMatch, RedirectStatus, RequestMatch, RequestMirror, RequestRedirect, Retry, Route,
    Rule, ServiceKey, Timeouts, UrlRewrite, ValueMatch, WeightedBackend,
};
use super::table::{BuildError, RouteTable, RuleName};

/// A `WaypointRoutes` resource that cannot become a route table.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A field does not hold a valid value.
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    /// The fields are valid one by one, but the table cannot be built.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// A field of a pushed resource that does not hold a valid value, and
/// where it is: `HTTPRoute shop/catalog rule 2 filter 1 set 0: header name
/// `bad name` is not a valid HTTP header name`. Positions count from 0, as
/// in the lists of the resource (and of [`BuildError`]).
/// The location is empty for a field of the resource itself (its hostname
/// and port).
pub type InvalidField = Located<Problem>;

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
    #[error("port {0} is not from 1 to 65535")]
    InvalidPort(u32),
    #[error("header name `{0}` is not a valid HTTP header name")]
    InvalidHeaderName(String),
    #[error(
        "the value {value:?} of header `{name}` is not a valid HTTP header value: control \
         characters and line breaks are not allowed"
    )]
    InvalidHeaderValue { name: String, value: String },
    #[error(
        "method `{0}` is not one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH \
         (methods are case-sensitive)"
    )]
    InvalidMethod(String),
    #[error("path `{0}` does not start with `/`")]
    RelativePath(String),
    #[error("scheme `{0}` is neither `http` nor `https`")]
    InvalidScheme(String),
    #[error("redirect status code {0} is not one of 301, 302, 303, 307, 308")]
    InvalidRedirectStatus(u32),
    #[error("retry code {0} is not an HTTP status code from 400 to 599")]
    InvalidRetryCode(u32),
    #[error(
        "fraction {numerator}/{denominator} is not a share: the denominator must be at least 1 \
         and the numerator no larger than it"
    )]
    InvalidFraction { numerator: u32, denominator: u32 },
    #[error("duration {seconds}s {nanos}ns is negative; leave it unset for none")]
    NegativeDuration { seconds: i64, nanos: i32 },
    #[error(
        "duration {seconds}s {nanos}ns is not normalized: nanos must be within ±999999999 and \
         have the sign of seconds"
    )]
    UnnormalizedDuration { seconds: i64, nanos: i32 },
    #[error(
        "timestamp {seconds}s {nanos}ns is out of range: nanos must be from 0 to 999999999 and \
         the time representable"
    )]
    InvalidTimestamp { seconds: i64, nanos: i32 },
}

/// The routes of `resource`, each field checked, in the order given: what
/// [`RouteTable::new`] takes. [`RouteTable`]'s `TryFrom` does both steps.
pub fn routes_from_proto(
    resource: pb::WaypointRoutes,
) -> Result<(ServiceKey, Vec<Route>), InvalidField> {
    let service = service_key(resource.hostname, resource.port)?;
    let routes = resource
        .routes
        .into_iter()
        .map(Route::try_from)
        .collect::<Result<_, _>>()?;
    Ok((service, routes))
}

// === impl RouteTable ===

impl TryFrom<pb::WaypointRoutes> for RouteTable {
    type Error = ConvertError;

    fn try_from(resource: pb::WaypointRoutes) -> Result<Self, Self::Error> {
        let (service, routes) = routes_from_proto(resource)?;
        Ok(RouteTable::new(service, routes)?)
    }
}

// === impl Route ===

impl TryFrom<pb::Route> for Route {
    type Error = InvalidField;

    fn try_from(route: pb::Route) -> Result<Self, Self::Error> {
        let pb::Route {
            namespace,
            name,
            creation_timestamp,
            rules,
        } = route;
        let at_route = |e: InvalidField| e.at(format_args!("HTTPRoute {namespace}/{name}"));
        if namespace.is_empty() {
            return Err(at_route(Problem::Missing("the route namespace").into()));
        }
        if name.is_empty() {
            return Err(at_route(Problem::Missing("the route name").into()));
        }
        let Some(creation_timestamp) = creation_timestamp else {
            return Err(at_route(Problem::Missing("the creation timestamp").into()));
        };
        let creation_timestamp = timestamp(creation_timestamp)
            .map_err(|problem| at_route(InvalidField::from(problem).at("creation_timestamp")))?;
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(index, r)| rule(index, r))
            .collect::<Result<_, _>>()
            .map_err(at_route)?;
        Ok(Route {
            namespace: namespace.into(),
            name: name.into(),
            creation_timestamp,
            rules,
        })
    }
}

fn rule(index: usize, rule: pb::Rule) -> Result<Rule, InvalidField> {
    let name: Option<Arc<str>> = (!rule.name.is_empty()).then(|| rule.name.into());
    let at_rule = |e: InvalidField| {
        e.at(RuleName {
            index,
            name: name.clone(),
        })
    };
    let matches = each(rule.matches, "match", request_match).map_err(at_rule)?;
    let filters = each(rule.filters, "filter", filter).map_err(at_rule)?;
    let backends = each(rule.backends, "backend", weighted_backend).map_err(at_rule)?;
    let timeouts = rule
        .timeouts
        .map(timeouts)
        .transpose()
        .map_err(at_rule)?
        .unwrap_or_default();
    let retry = rule.retry.map(retry).transpose().map_err(at_rule)?;
    Ok(Rule {
        name,
        matches,
        filters,
        backends,
        timeouts,
        retry,
    })
}

// === matches ===

fn request_match(m: pb::RequestMatch) -> Result<RequestMatch, InvalidField> {
    let path = match m.path {
        None => RequestMatch::default().path,
        Some(path) => path_match(path)?,
    };
    let method = if m.method.is_empty() {
        None
    } else {
        Some(method(m.method)?)
    };
    Ok(RequestMatch {
        path,
        headers: each(m.headers, "header", header_match)?,
        query_params: each(m.query_params, "query parameter", query_param_match)?,
        method,
    })
}

fn path_match(path: pb::PathMatch) -> Result<PathMatch, Problem> {
    match path.kind {
        None => Err(Problem::Missing(
            "the path match kind (exact, prefix or regular_expression)",
        )),
        Some(path_match::Kind::Exact(path)) => absolute(path).map(PathMatch::Exact),
        Some(path_match::Kind::Prefix(path)) => absolute(path).map(PathMatch::Prefix),
        Some(path_match::Kind::RegularExpression(pattern)) => {
            Ok(PathMatch::RegularExpression(pattern))
        }
    }
}

fn header_match(m: pb::HeaderMatch) -> Result<HeaderMatch, InvalidField> {
    Ok(HeaderMatch {
        name: header_name(m.name)?,
        value: value_match(m.value)?,
    })
}

fn query_param_match(m: pb::QueryParamMatch) -> Result<QueryParamMatch, InvalidField> {
    if m.name.is_empty() {
        return Err(Problem::Missing("the query parameter name").into());
    }
    Ok(QueryParamMatch {
        name: m.name,
        value: value_match(m.value)?,
    })
}

fn value_match(value: Option<pb::StringMatch>) -> Result<ValueMatch, Problem> {
    match value.and_then(|v| v.kind) {
        None => Err(Problem::Missing(
            "the value match kind (exact or regular_expression)",
        )),
        Some(string_match::Kind::Exact(value)) => Ok(ValueMatch::Exact(value)),
        Some(string_match::Kind::RegularExpression(pattern)) => {
            Ok(ValueMatch::RegularExpression(pattern))
        }
    }
}

/// The methods the Gateway API's `HTTPMethod` allows. Anything else would
/// parse as an extension method (`get` included) and never match.
fn method(method: String) -> Result<Method, Problem> {
    Ok(match method.as_str() {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        "CONNECT" => Method::CONNECT,
        "OPTIONS" => Method::OPTIONS,
        "TRACE" => Method::TRACE,
        "PATCH" => Method::PATCH,
        _ => return Err(Problem::InvalidMethod(method)),
    })
}

// === filters ===

fn filter(filter: pb::Filter) -> Result<Filter, InvalidField> {
    Ok(match filter.kind {
        None => {
            return Err(Problem::Missing(
                "the filter kind (request_header_modifier, response_header_modifier, \
                 request_redirect, url_rewrite or request_mirror)",
            )
            .into());
        }
        Some(filter::Kind::RequestHeaderModifier(m)) => {
            Filter::RequestHeaderModifier(header_modifier(m)?)
        }
        Some(filter::Kind::ResponseHeaderModifier(m)) => {
            Filter::ResponseHeaderModifier(header_modifier(m)?)
        }
        Some(filter::Kind::RequestRedirect(r)) => Filter::RequestRedirect(redirect(r)?),
        Some(filter::Kind::UrlRewrite(r)) => Filter::UrlRewrite(url_rewrite(r)?),
        Some(filter::Kind::RequestMirror(m)) => Filter::RequestMirror(mirror(m)?),
    })
}

fn header_modifier(m: pb::HeaderModifier) -> Result<HeaderModifier, InvalidField> {
    Ok(HeaderModifier {
        set: each(m.set, "set", header)?,
        add: each(m.add, "add", header)?,
        remove: each(m.remove, "remove", header_name)?,
    })
}

fn header(h: pb::Header) -> Result<(HeaderName, HeaderValue), InvalidField> {
    let name = header_name(h.name)?;
    // `from_bytes`, not `from_str`: UTF-8 beyond ASCII is obs-text, which
    // HTTP allows in values; control characters are still refused.
    let value =
        HeaderValue::from_bytes(h.value.as_bytes()).map_err(|_| Problem::InvalidHeaderValue {
            name: name.as_str().to_owned(),
            value: h.value,
        })?;
    Ok((name, value))
}

fn redirect(r: pb::RequestRedirect) -> Result<RequestRedirect, InvalidField> {
    let scheme = match r.scheme.as_str() {
        "" => None,
        "http" => Some(Scheme::HTTP),
        "https" => Some(Scheme::HTTPS),
        _ => return Err(Problem::InvalidScheme(r.scheme).into()),
    };
    let port = match r.port {
        0 => None,
        port => Some(service_port(port)?),
    };
    let status = match r.status_code {
        0 | 302 => RedirectStatus::Found,
        301 => RedirectStatus::MovedPermanently,
        303 => RedirectStatus::SeeOther,
        307 => RedirectStatus::TemporaryRedirect,
        308 => RedirectStatus::PermanentRedirect,
        other => return Err(Problem::InvalidRedirectStatus(other).into()),
    };
    Ok(RequestRedirect {
        scheme,
        hostname: optional_hostname(r.hostname)?,
        port,
        path: r.path.map(path_modifier).transpose()?,
        status,
    })
}

fn url_rewrite(r: pb::UrlRewrite) -> Result<UrlRewrite, InvalidField> {
    Ok(UrlRewrite {
        hostname: optional_hostname(r.hostname)?,
        path: r.path.map(path_modifier).transpose()?,
    })
}

fn path_modifier(m: pb::PathModifier) -> Result<PathModifier, Problem> {
    match m.kind {
        None => Err(Problem::Missing(
            "the path modifier kind (replace_full_path or replace_prefix_match)",
        )),
        Some(path_modifier::Kind::ReplaceFullPath(path)) => Ok(PathModifier::ReplaceFullPath(path)),
        Some(path_modifier::Kind::ReplacePrefixMatch(path)) => {
            Ok(PathModifier::ReplacePrefixMatch(path))
        }
    }
}

fn mirror(m: pb::RequestMirror) -> Result<RequestMirror, InvalidField> {
    let backend = m.backend.ok_or(Problem::Missing("the mirror backend"))?;
    let fraction = match m.fraction {
        None => Fraction::ALL,
        Some(f) if f.denominator == 0 || f.numerator > f.denominator => {
            return Err(Problem::InvalidFraction {
                numerator: f.numerator,
                denominator: f.denominator,
            }
            .into());
        }
        Some(f) => Fraction {
            numerator: f.numerator,
            denominator: f.denominator,
        },
    };
    Ok(RequestMirror {
        backend: service_key(backend.hostname, backend.port)?,
        fraction,
    })
}

// === backends, timeouts, retry ===

fn weighted_backend(b: pb::WeightedBackend) -> Result<WeightedBackend, InvalidField> {
    let backend = match b.backend {
        None => return Err(Problem::Missing("the backend (service or invalid)").into()),
        Some(weighted_backend::Backend::Service(service)) => {
            Backend::Service(service_key(service.hostname, service.port)?)
        }
        Some(weighted_backend::Backend::Invalid(invalid)) => Backend::Invalid {
            reason: invalid.reason.into(),
        },
    };
    Ok(WeightedBackend {
        backend,
        weight: b.weight,
        filters: each(b.filters, "filter", filter)?,
    })
}

fn timeouts(t: pb::Timeouts) -> Result<Timeouts, InvalidField> {
    // Zero is the Gateway API's `0s`: disabled.
    let timeout = |d: Option<prost_types::Duration>, field: &'static str| {
        d.map(duration)
            .transpose()
            .map(|d| d.filter(|d| !d.is_zero()))
            .map_err(|problem| InvalidField::from(problem).at(field))
    };
    Ok(Timeouts {
        request: timeout(t.request, "timeouts.request")?,
        backend_request: timeout(t.backend_request, "timeouts.backend_request")?,
    })
}

fn retry(r: pb::Retry) -> Result<Retry, InvalidField> {
    let codes = r
        .codes
        .into_iter()
        .map(|code| {
            u16::try_from(code)
                .ok()
                .filter(|code| (400..=599).contains(code))
                .and_then(|code| StatusCode::from_u16(code).ok())
                .ok_or(Problem::InvalidRetryCode(code))
        })
        .collect::<Result<_, _>>()?;
    let backoff = r
        .backoff
        .map(duration)
        .transpose()
        .map_err(|problem| InvalidField::from(problem).at("retry.backoff"))?;
    Ok(Retry {
        codes,
        attempts: r.attempts,
        backoff,
    })
}

// === scalars ===

fn service_key(hostname: String, port: u32) -> Result<ServiceKey, Problem> {
    if hostname.is_empty() {
        return Err(Problem::Missing("the service hostname"));
    }
    Ok(ServiceKey {
        hostname: self::hostname(hostname)?,
        port: service_port(port)?,
    })
}

fn service_port(port: u32) -> Result<u16, Problem> {
    u16::try_from(port)
        .ok()
        .filter(|port| *port != 0)
        .ok_or(Problem::InvalidPort(port))
}

fn optional_hostname(hostname: String) -> Result<Option<Arc<str>>, Problem> {
    if hostname.is_empty() {
        return Ok(None);
    }
    self::hostname(hostname).map(Some)
}

fn hostname(hostname: String) -> Result<Arc<str>, Problem> {
    if is_precise_hostname(&hostname) {
        Ok(hostname.into())
    } else {
        Err(Problem::InvalidHostname(hostname))
    }
}

/// The Gateway API's `PreciseHostname`: a lowercase RFC 1123 DNS name.
/// Shared with `authz`, whose resources name services the same way.
pub(crate) fn is_precise_hostname(hostname: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    hostname.len() <= 253 && hostname.split('.').all(label_ok)
}

fn header_name(name: String) -> Result<HeaderName, Problem> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| Problem::InvalidHeaderName(name))
}

fn absolute(path: String) -> Result<String, Problem> {
    if path.starts_with('/') {
        Ok(path)
    } else {
        Err(Problem::RelativePath(path))
    }
}

/// A protobuf `Duration`, which must be normalized and not negative.
fn duration(d: prost_types::Duration) -> Result<Duration, Problem> {
    let prost_types::Duration { seconds, nanos } = d;
    let normalized = (-999_999_999..=999_999_999).contains(&nanos)
        && !(seconds > 0 && nanos < 0)
        && !(seconds < 0 && nanos > 0);
    if !normalized {
        return Err(Problem::UnnormalizedDuration { seconds, nanos });
    }
    match (u64::try_from(seconds), u32::try_from(nanos)) {
        (Ok(whole), Ok(fraction)) => Ok(Duration::new(whole, fraction)),
        _ => Err(Problem::NegativeDuration { seconds, nanos }),
    }
}

/// A protobuf `Timestamp` (possibly before the epoch) as a `SystemTime`.
fn timestamp(t: prost_types::Timestamp) -> Result<SystemTime, Problem> {
    let prost_types::Timestamp { seconds, nanos } = t;
    let invalid = Problem::InvalidTimestamp { seconds, nanos };
    let Ok(fraction) = u32::try_from(nanos) else {
        return Err(invalid);
    };
    if fraction > 999_999_999 {
        return Err(invalid);
    }
    let whole = Duration::from_secs(seconds.unsigned_abs());
    let at_second = if seconds >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(whole)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(whole)
    };
    at_second
        .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(fraction))))
        .ok_or(invalid)
}

/// Converts every item, naming the position of the first that fails:
/// `filter 1`.
fn each<P, T, E>(
    items: Vec<P>,
    step: &str,
    convert: impl Fn(P) -> Result<T, E>,
) -> Result<Vec<T>, InvalidField>
where
    E: Into<InvalidField>,
{
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| convert(item).map_err(|e| e.into().at(format_args!("{step} {index}"))))
        .collect()
}

#[cfg(test)]
mod tests;

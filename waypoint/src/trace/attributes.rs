//! What the waypoint's spans say, as pure functions of what it knows of a
//! request (or of one attempt of it) when it ends. Names follow what
//! Istio's Envoy puts on its spans where Envoy has one (`http.method`,
//! `http.url`, `http.status_code`, `response_flags`, `upstream_address`,
//! `upstream_cluster`, `component`), so that searches written for Istio's
//! traces work; the mesh's own facts use the dotted names of the access
//! log (`source.workload`, `destination.principal`, `route.name`, ...).

use std::net::SocketAddr;

use http::StatusCode;
use telemetry::otlp::{Attribute, SpanStatus};
use workload::{Service, Workload};

use crate::metrics::{Completed, ResponseFlag};

/// What the server span adds to [`Completed`] (which the metrics use too).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerFacts<'a> {
    pub(crate) completed: &'a Completed<'a>,
    pub(crate) method: &'a str,
    /// `http://<authority><path>`, as the client sent it (no query: it
    /// may carry secrets).
    pub(crate) url: &'a str,
    /// `<ns>/<name>` of the HTTPRoute that matched, and its rule's index.
    pub(crate) route: Option<(&'a str, usize)>,
    /// Attempts sent upstream (0: answered before any).
    pub(crate) attempts: u32,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AttemptEnd<'a> {
    /// The response head arrived with this status.
    Answered(StatusCode),
    /// No response: the connection failed (`UF`) or broke (`UC`).
    Failed { flag: ResponseFlag, error: &'a str },
    /// No response head before the deadline (`UT`).
    TimedOut,
}

/// What a client span says of one attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttemptFacts<'a> {
    /// 1 for the first attempt, 2 for the first retry, ...
    pub(crate) attempt: u32,
    pub(crate) method: &'a str,
    pub(crate) url: &'a str,
    pub(crate) service: &'a Service,
    pub(crate) port: u16,
    pub(crate) endpoint: &'a Workload,
    pub(crate) endpoint_addr: SocketAddr,
    pub(crate) end: AttemptEnd<'a>,
}

/// The server span's attributes.
pub(crate) fn server(facts: &ServerFacts<'_>) -> Vec<Attribute> {
    let completed = facts.completed;
    let mut attributes = vec![
        Attribute::new("component", "proxy"),
        Attribute::new("http.method", facts.method),
        Attribute::new("http.url", facts.url),
        Attribute::new("response_flags", completed.flag.code()),
        Attribute::new("source.principal", &**completed.source_principal),
        Attribute::new("destination.service", &*completed.service.hostname),
        Attribute::new("upstream.attempts", facts.attempts),
    ];
    if let Some(status) = completed.status {
        attributes.push(Attribute::new("http.status_code", status.as_u16()));
    }
    if let Some(source) = completed.source {
        attributes.push(Attribute::new("source.workload", &*source.workload_name));
        attributes.push(Attribute::new("source.namespace", &*source.namespace));
    }
    if let Some(destination) = completed.destination {
        push_destination(&mut attributes, destination);
    }
    if let Some((route, rule)) = facts.route {
        attributes.push(Attribute::new("route.name", route));
        attributes.push(Attribute::new(
            "route.rule",
            i64::try_from(rule).unwrap_or(i64::MAX),
        ));
    }
    attributes
}

/// The client span's attributes.
pub(crate) fn attempt(facts: &AttemptFacts<'_>) -> Vec<Attribute> {
    let mut attributes = vec![
        Attribute::new("component", "proxy"),
        Attribute::new("http.method", facts.method),
        Attribute::new("http.url", facts.url),
        Attribute::new("upstream.attempt", facts.attempt),
        Attribute::new("upstream_address", facts.endpoint_addr.to_string()),
        Attribute::new("upstream_cluster", cluster(facts.service, facts.port)),
        Attribute::new("destination.service", &*facts.service.hostname),
    ];
    push_destination(&mut attributes, facts.endpoint);
    match facts.end {
        AttemptEnd::Answered(status) => {
            attributes.push(Attribute::new("http.status_code", status.as_u16()));
        }
        AttemptEnd::Failed { flag, .. } => {
            attributes.push(Attribute::new("response_flags", flag.code()));
        }
        AttemptEnd::TimedOut => {
            attributes.push(Attribute::new(
                "response_flags",
                ResponseFlag::UpstreamTimeout.code(),
            ));
        }
    }
    attributes
}

fn push_destination(attributes: &mut Vec<Attribute>, destination: &Workload) {
    attributes.push(Attribute::new(
        "destination.workload",
        &*destination.workload_name,
    ));
    attributes.push(Attribute::new(
        "destination.namespace",
        &*destination.namespace,
    ));
    attributes.push(Attribute::new(
        "destination.principal",
        destination.identity.to_string(),
    ));
}

/// The server span's status: an error for a 5xx (the waypoint or the
/// upstream failed the request), unset otherwise, as Envoy marks them.
pub(crate) fn server_status(completed: &Completed<'_>) -> SpanStatus {
    match completed.status {
        Some(status) if status.is_server_error() => {
            SpanStatus::Error(error_text(status, completed.flag))
        }
        Some(_) => SpanStatus::Unset,
        // The client went away before an answer.
        None => SpanStatus::Error("no response".into()),
    }
}

/// The client span's status: an error for a 5xx or no response.
pub(crate) fn attempt_status(end: &AttemptEnd<'_>) -> SpanStatus {
    match end {
        AttemptEnd::Answered(status) if status.is_server_error() => {
            SpanStatus::Error(status.as_u16().to_string())
        }
        AttemptEnd::Answered(_) => SpanStatus::Unset,
        AttemptEnd::Failed { error, .. } => SpanStatus::Error((*error).to_owned()),
        AttemptEnd::TimedOut => SpanStatus::Error("upstream request timeout".into()),
    }
}

fn error_text(status: StatusCode, flag: ResponseFlag) -> String {
    match flag {
        ResponseFlag::None => status.as_u16().to_string(),
        flag => format!("{} {}", status.as_u16(), flag.code()),
    }
}

/// Envoy's cluster name of a service port, as Istio names it.
fn cluster(service: &Service, port: u16) -> String {
    format!("outbound|{port}||{}", service.hostname)
}

/// The server span's name, as Istio's proxies name theirs:
/// `<service hostname>:<port>/*`.
pub(crate) fn server_span_name(service: &Service, port: u16) -> String {
    format!("{}:{port}/*", service.hostname)
}

/// The client span's name, as Envoy's router names its upstream spans.
pub(crate) fn attempt_span_name(service: &Service, port: u16) -> String {
    format!("router {} egress", cluster(service, port))
}

#[cfg(test)]
mod tests;

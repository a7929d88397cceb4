//! OpenTelemetry traces of the requests through the waypoint: a SERVER
//! span per request and a CLIENT span per upstream attempt, so retries
//! show as siblings under the request, exported with OTLP/gRPC by
//! `telemetry::otlp` when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! # Propagation (W3C Trace Context)
//!
//! A request's `traceparent` (`context`) is continued: the server span
//! takes its trace id and has the caller's span as parent. Without one,
//! or with one that is not valid, a new trace starts (and an unusable
//! `tracestate` goes with the invalid `traceparent`). Each attempt's
//! request carries a `traceparent` naming that attempt's client span;
//! `tracestate` passes through as received. Unsampled requests take part
//! too (their `traceparent` says "not sampled"), so the next hops make
//! the same decision; only sampled ones are recorded.
//!
//! # Sampling (`sampling`)
//!
//! The caller's sampled flag is honoured, either way; a request without
//! a caller decision is sampled with the configured percentage
//! (`TRACE_SAMPLING`, 1 by default as Istio's `PILOT_TRACE_SAMPLING`).
//!
//! # Spans (`attributes`)
//!
//! Pure functions of what the access log and the metrics know, so the
//! three always agree. The server span ends with the response body
//! (where the access-log event is written); a client span when its
//! attempt's response head arrives, or it fails or times out.
//!
//! With tracing off, nothing here runs and the headers pass untouched.

mod attributes;
mod context;
mod sampling;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Request};
use telemetry::otlp::{FLAG_SAMPLED, SpanData, SpanKind, SpanQueue};
use tracing::debug;
use workload::{Service, Workload};

pub(crate) use attributes::{AttemptEnd, AttemptFacts, ServerFacts};
pub use sampling::{SamplingError, SamplingPercent};

use context::{TRACEPARENT, TRACESTATE};

/// Starts the trace of each request; shared by the whole data path.
#[derive(Debug, Clone)]
pub struct Tracer {
    /// Where finished spans go (the OTLP exporter's queue).
    queue: SpanQueue,
    sampling: SamplingPercent,
}

/// The trace of one request: its server span's context, and what every
/// client span of it needs. Cheap to clone (the request's head carries a
/// copy to the attempts).
#[derive(Debug, Clone)]
pub(crate) struct RequestTrace {
    inner: Arc<Context>,
}

#[derive(Debug)]
struct Context {
    trace_id: [u8; 16],
    /// The server span.
    span_id: [u8; 8],
    /// The caller's span, from its `traceparent`.
    parent: Option<[u8; 8]>,
    trace_state: String,
    /// `Some` when sampled: spans are recorded.
    queue: Option<SpanQueue>,
    name: String,
    start: SystemTime,
}

/// One attempt's client span, from the moment its request is sent.
#[derive(Debug)]
pub(crate) struct ClientSpan {
    trace: RequestTrace,
    span_id: [u8; 8],
    attempt: u32,
    start: SystemTime,
    /// The request as sent, for the attributes (kept only when sampled).
    method: String,
    url: String,
}

// === impl Tracer ===

impl Tracer {
    pub fn new(queue: SpanQueue, sampling: SamplingPercent) -> Self {
        Tracer { queue, sampling }
    }

    /// The trace of a request to `service:port` with these headers:
    /// continued from its `traceparent`, or started. An invalid
    /// `traceparent` is ignored, and its `tracestate` removed with it.
    pub(crate) fn start(
        &self,
        headers: &mut HeaderMap,
        service: &Service,
        port: u16,
    ) -> RequestTrace {
        let parent = match context::traceparent(headers) {
            Ok(parent) => parent,
            Err(error) => {
                debug!(%error, "the request's traceparent is not valid; starting a new trace");
                headers.remove(TRACESTATE);
                None
            }
        };
        let sampled = sampling::sampled(parent.as_ref(), self.sampling, fastrand::f64());
        let trace_state = headers
            .get_all(TRACESTATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        RequestTrace {
            inner: Arc::new(Context {
                trace_id: parent.map_or_else(new_trace_id, |p| p.trace_id),
                span_id: new_span_id(),
                parent: parent.map(|p| p.parent_id),
                trace_state,
                queue: sampled.then(|| self.queue.clone()),
                name: attributes::server_span_name(service, port),
                start: SystemTime::now(),
            }),
        }
    }
}

/// The request's trace when tracing is on: started from its headers, and
/// carried in its head's extensions to the attempts (which name their
/// client spans upstream).
pub(crate) fn begin(
    tracer: Option<&Tracer>,
    parts: &mut http::request::Parts,
    service: &Service,
    port: u16,
) -> Option<RequestTrace> {
    let trace = tracer?.start(&mut parts.headers, service, port);
    parts.extensions.insert(trace.clone());
    Some(trace)
}

// === impl RequestTrace ===

impl RequestTrace {
    fn sampled(&self) -> bool {
        self.inner.queue.is_some()
    }

    fn flags(&self) -> u8 {
        if self.sampled() { FLAG_SAMPLED } else { 0 }
    }

    /// Starts attempt `attempt`'s client span and names it in the
    /// request's `traceparent`.
    pub(crate) fn attempt<B>(&self, attempt: u32, request: &mut Request<B>) -> ClientSpan {
        let span = ClientSpan {
            trace: self.clone(),
            span_id: new_span_id(),
            attempt,
            start: SystemTime::now(),
            method: String::new(),
            url: String::new(),
        };
        let header = context::header(&self.inner.trace_id, &span.span_id, self.sampled());
        request.headers_mut().insert(TRACEPARENT, header);
        if !self.sampled() {
            return span;
        }
        ClientSpan {
            method: request.method().as_str().to_owned(),
            url: upstream_url(request),
            ..span
        }
    }

    /// Ends the server span (when sampled).
    pub(crate) fn finish(&self, facts: &ServerFacts<'_>) {
        let Some(queue) = &self.inner.queue else {
            return;
        };
        queue.push(SpanData {
            trace_id: self.inner.trace_id,
            span_id: self.inner.span_id,
            parent_span_id: self.inner.parent,
            parent_is_remote: true,
            trace_state: self.inner.trace_state.clone(),
            flags: self.flags(),
            name: self.inner.name.clone(),
            kind: SpanKind::Server,
            start: self.inner.start,
            end: SystemTime::now(),
            attributes: attributes::server(facts),
            status: attributes::server_status(facts.completed),
        });
    }
}

// === impl ClientSpan ===

impl ClientSpan {
    /// Ends the span (when sampled) with how the attempt to `endpoint` of
    /// `service:port` ended.
    pub(crate) fn finish(
        self,
        service: &Service,
        port: u16,
        endpoint: (&Workload, SocketAddr),
        end: AttemptEnd<'_>,
    ) {
        let Some(queue) = &self.trace.inner.queue else {
            return;
        };
        let facts = AttemptFacts {
            attempt: self.attempt,
            method: &self.method,
            url: &self.url,
            service,
            port,
            endpoint: endpoint.0,
            endpoint_addr: endpoint.1,
            end,
        };
        let context = &self.trace.inner;
        queue.push(SpanData {
            trace_id: context.trace_id,
            span_id: self.span_id,
            parent_span_id: Some(context.span_id),
            parent_is_remote: false,
            trace_state: context.trace_state.clone(),
            flags: self.trace.flags(),
            name: attributes::attempt_span_name(service, port),
            kind: SpanKind::Client,
            start: self.start,
            end: SystemTime::now(),
            attributes: attributes::attempt(&facts),
            status: attributes::attempt_status(&end),
        });
    }
}

/// `http://<authority><path>` of a request (no query), from its URI or
/// its `Host`.
pub(crate) fn url_of(uri: &http::Uri, headers: &HeaderMap) -> String {
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or_default();
    format!("http://{authority}{}", uri.path())
}

fn upstream_url<B>(request: &Request<B>) -> String {
    url_of(request.uri(), request.headers())
}

/// Random, never all zeroes (which W3C reserves for "invalid"). Not
/// cryptographic: trace ids need to be unique, not secret.
fn new_trace_id() -> [u8; 16] {
    fastrand::u128(1..).to_be_bytes()
}

fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

/// The `traceparent` a request to the next hop would carry, for tests.
#[cfg(test)]
pub(crate) fn header_of(request: &Request<()>) -> Option<&http::HeaderValue> {
    request.headers().get(TRACEPARENT)
}

#[cfg(test)]
mod tests;

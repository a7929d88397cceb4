//! The waypoint's Prometheus metrics: Istio's request metrics
//! (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`) and TCP metrics
//! (`istio_tcp_connections_opened_total`,
//! `istio_tcp_connections_closed_total`, `istio_tcp_sent_bytes_total`,
//! `istio_tcp_received_bytes_total`) with Istio's labels, as a waypoint
//! reports them (`reporter="waypoint"`), so that dashboards and alerts
//! written for Istio's waypoint work unchanged.
//!
//! One sample per request, recorded with its access-log event when the
//! response has been sent (or the client went away); the waypoint's own
//! answers (403, 404, 503, 504, ...) count as well, with Envoy's response
//! flags saying why. Building the labels is pure ([`RequestLabels::new`],
//! [`ConnectionLabels::new`]); recording never blocks for long (atomic
//! updates behind a read-mostly map per metric).
//!
//! The TCP metrics count the tunnels passed through as TCP: opened when
//! the upstream connection is up (or at once, with the flag that says why,
//! when there is none: refused by the connection limit, no endpoint, the
//! connect failed), closed with the bytes of each direction when the
//! passthrough ends. Each series' opened minus closed is what is open.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use http::{HeaderMap, StatusCode};
use identity::Identity;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use workload::{Service, Workload};

use crate::fast_map::FastMap;

/// Istio's default buckets of `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Istio's buckets of the byte histograms: 1 to 10^7, by factors of 10.
fn size_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(1.0, 10.0, 8)
}

/// A label value: a constant, a name shared with the mesh state (no
/// copy), or a number written as it is encoded (no allocation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Text {
    Static(&'static str),
    Shared(Arc<str>),
    Number(u16),
}

impl From<&Arc<str>> for Text {
    fn from(value: &Arc<str>) -> Self {
        Text::Shared(value.clone())
    }
}

impl EncodeLabelValue for Text {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        match self {
            Text::Static(text) => fmt::Write::write_str(encoder, text),
            Text::Shared(text) => fmt::Write::write_str(encoder, text),
            Text::Number(n) => fmt::Write::write_fmt(encoder, format_args!("{n}")),
        }
    }
}

const UNKNOWN: Text = Text::Static("unknown");

/// The labels Istio's request and TCP metrics share, first in both: who
/// called, which workload answered, which service was asked. An unknown
/// value is `unknown`, as in Istio.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PeerLabels {
    pub reporter: Text,
    pub source_workload: Text,
    pub source_workload_namespace: Text,
    pub source_canonical_service: Text,
    pub source_canonical_revision: Text,
    pub source_principal: Text,
    pub source_cluster: Text,
    pub destination_workload: Text,
    pub destination_workload_namespace: Text,
    pub destination_canonical_service: Text,
    pub destination_canonical_revision: Text,
    pub destination_principal: Text,
    pub destination_cluster: Text,
    /// The hostname of the service the request went to (after routing),
    /// or the one the tunnel named.
    pub destination_service: Text,
    pub destination_service_name: Text,
    pub destination_service_namespace: Text,
}

/// Istio's labels of the request metrics, as a waypoint fills them;
/// `grpc_response_status` is empty unless the request is gRPC and its
/// status arrived.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub peers: PeerLabels,
    pub request_protocol: Text,
    pub response_code: Text,
    pub grpc_response_status: Text,
    pub response_flags: Text,
    /// Always `mutual_tls`: the waypoint is only reached through HBONE.
    pub connection_security_policy: Text,
}

/// Istio's labels of the TCP metrics: those of the request metrics
/// without `response_code` and `grpc_response_status`, with
/// `request_protocol="tcp"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ConnectionLabels {
    #[prometheus(flatten)]
    pub peers: PeerLabels,
    pub request_protocol: Text,
    pub response_flags: Text,
    /// Always `mutual_tls`: the waypoint is only reached through HBONE.
    pub connection_security_policy: Text,
}

/// `http`, or `grpc` when the request says so by its content type, as
/// Istio decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestProtocol {
    Http,
    Grpc,
}

impl RequestProtocol {
    pub fn of(headers: &HeaderMap) -> Self {
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            RequestProtocol::Grpc
        } else {
            RequestProtocol::Http
        }
    }
}

/// Why the waypoint answered itself, as Envoy's response flags say it.
/// Policy denials, redirects and malformed requests have no flag (`-`),
/// as in Istio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResponseFlag {
    #[default]
    None,
    /// `NR`: routes are attached and none matches (404).
    NoRoute,
    /// `NC`: the rule's backend is not a known service.
    NoCluster,
    /// `UH`: no healthy endpoint (503).
    NoHealthyUpstream,
    /// `UF`: connecting to the endpoint (or its ztunnel) failed (503).
    UpstreamConnectFailure,
    /// `UC`: the upstream connection failed after it was up (503).
    UpstreamConnectionTermination,
    /// `UT`: no response head within the route's timeout (504).
    UpstreamTimeout,
    /// `URX`: the answer of the last attempt, because the rule's retries
    /// ran out or the retry budget refused one more.
    UpstreamRetryLimitExceeded,
    /// `UO`: the service's `DestinationRule` request limit is reached
    /// (503, circuit breaking).
    UpstreamOverflow,
    /// `DI`: a VirtualService fault delayed the request (which then went
    /// on; an upstream flag of its own replaces this one).
    DelayInjected,
    /// `FI`: a VirtualService fault aborted the request.
    FaultInjected,
    /// `DI,FI`: delayed, then aborted.
    DelayAndFaultInjected,
}

impl ResponseFlag {
    /// Envoy's short code.
    pub fn code(self) -> &'static str {
        match self {
            ResponseFlag::None => "-",
            ResponseFlag::NoRoute => "NR",
            ResponseFlag::NoCluster => "NC",
            ResponseFlag::NoHealthyUpstream => "UH",
            ResponseFlag::UpstreamConnectFailure => "UF",
            ResponseFlag::UpstreamConnectionTermination => "UC",
            ResponseFlag::UpstreamTimeout => "UT",
            ResponseFlag::UpstreamRetryLimitExceeded => "URX",
            ResponseFlag::UpstreamOverflow => "UO",
            ResponseFlag::DelayInjected => "DI",
            ResponseFlag::FaultInjected => "FI",
            ResponseFlag::DelayAndFaultInjected => "DI,FI",
        }
    }
}

/// What the waypoint knows of a request when it completes.
#[derive(Debug, Clone, Copy)]
pub struct Completed<'a> {
    pub source: Option<&'a Workload>,
    /// `spiffe://...`, proven by the client certificate of the tunnel.
    pub source_principal: &'a Arc<str>,
    /// The endpoint the request was sent to, if it got that far.
    pub destination: Option<&'a Workload>,
    pub service: &'a Service,
    pub protocol: RequestProtocol,
    pub status: Option<StatusCode>,
    /// The `grpc-status` of a gRPC response, from its trailers (or
    /// headers, for a trailers-only response).
    pub grpc_status: Option<&'a Text>,
    pub flag: ResponseFlag,
}

/// What the waypoint knows of a passed-through connection.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    pub source: Option<&'a Workload>,
    /// `spiffe://...`, proven by the client certificate of the tunnel.
    pub source_principal: &'a Arc<str>,
    /// The endpoint it goes to, once one was chosen.
    pub destination: Option<&'a Workload>,
    pub service: &'a Service,
    /// Why it was refused, or `None`.
    pub flag: ResponseFlag,
}

/// A workload's label: its field, `unknown` when absent or empty.
fn workload_label(workload: Option<&Workload>, field: fn(&Workload) -> &Arc<str>) -> Text {
    workload
        .map(field)
        .filter(|v| !v.is_empty())
        .map_or(UNKNOWN, Text::from)
}

// === impl PeerLabels ===

impl PeerLabels {
    /// Allocates only the destination principal (an identity has no string
    /// form to share); everything else is a shared name or a constant.
    fn new(
        source: Option<&Workload>,
        source_principal: &Arc<str>,
        destination: Option<&Workload>,
        service: &Service,
    ) -> Self {
        let of = workload_label;
        PeerLabels {
            reporter: Text::Static("waypoint"),
            source_workload: of(source, |w| &w.workload_name),
            source_workload_namespace: of(source, |w| &w.namespace),
            source_canonical_service: of(source, |w| &w.canonical_name),
            source_canonical_revision: of(source, |w| &w.canonical_revision),
            source_principal: Text::from(source_principal),
            source_cluster: of(source, |w| &w.cluster_id),
            destination_workload: of(destination, |w| &w.workload_name),
            destination_workload_namespace: of(destination, |w| &w.namespace),
            destination_canonical_service: of(destination, |w| &w.canonical_name),
            destination_canonical_revision: of(destination, |w| &w.canonical_revision),
            destination_principal: destination.map_or(UNKNOWN, |w| principal(&w.identity)),
            destination_cluster: of(destination, |w| &w.cluster_id),
            destination_service: Text::from(&service.hostname),
            destination_service_name: Text::from(&service.name),
            destination_service_namespace: Text::from(&service.namespace),
        }
    }
}

// === impl RequestLabels ===

impl RequestLabels {
    /// The labels of one request.
    pub fn new(request: &Completed<'_>) -> Self {
        RequestLabels {
            peers: PeerLabels::new(
                request.source,
                request.source_principal,
                request.destination,
                request.service,
            ),
            request_protocol: Text::Static(match request.protocol {
                RequestProtocol::Http => "http",
                RequestProtocol::Grpc => "grpc",
            }),
            response_code: Text::Number(request.status.map_or(0, |s| s.as_u16())),
            grpc_response_status: match (request.protocol, request.grpc_status) {
                (RequestProtocol::Grpc, Some(status)) => status.clone(),
                _ => Text::Static(""),
            },
            response_flags: Text::Static(request.flag.code()),
            connection_security_policy: Text::Static("mutual_tls"),
        }
    }
}

// === impl ConnectionLabels ===

impl ConnectionLabels {
    /// The labels of one connection.
    pub fn new(connection: &Connection<'_>) -> Self {
        ConnectionLabels {
            peers: PeerLabels::new(
                connection.source,
                connection.source_principal,
                connection.destination,
                connection.service,
            ),
            request_protocol: Text::Static("tcp"),
            response_flags: Text::Static(connection.flag.code()),
            connection_security_policy: Text::Static("mutual_tls"),
        }
    }
}

/// `spiffe://<td>/ns/<ns>/sa/<sa>`, Istio's form of a principal label.
pub fn principal(identity: &Identity) -> Text {
    Text::Shared(identity.to_string().into())
}

/// The `grpc-status` of `headers` (trailers, or the head of a
/// trailers-only response), without allocating for the standard codes.
pub fn grpc_status(headers: &HeaderMap) -> Option<Text> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(match value.parse::<u16>() {
        Ok(code) => Text::Number(code),
        Err(_) => Text::Shared(value.into()),
    })
}

/// One request's measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// From the request head to the end of the response.
    pub duration_ms: f64,
    /// Request body bytes read from the client.
    pub request_bytes: u64,
    /// Response body bytes sent to the client.
    pub response_bytes: u64,
}

/// The bytes of one passed-through connection, counted at the client's
/// side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpSample {
    /// Sent to the client (Istio: "sent during response").
    pub sent_bytes: u64,
    /// Received from the client (Istio: "received during request").
    pub received_bytes: u64,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The request and TCP metrics, shared by every request and connection
/// of the waypoint.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
    /// Per connection, not per request: the plain families are enough.
    tcp_opened: Family<ConnectionLabels, Counter>,
    tcp_closed: Family<ConnectionLabels, Counter>,
    tcp_sent_bytes: Family<ConnectionLabels, Counter>,
    tcp_received_bytes: Family<ConnectionLabels, Counter>,
    /// The four series of each label set seen, found with one lookup and
    /// a fast hash: the families each hash the whole set with SipHash (four
    /// hashes and four locks per request, 3.4% of the waypoint's CPU at
    /// one connection). Series are never removed, so a handle here is the
    /// family's own.
    series: RwLock<FastMap<RequestLabels, Series>>,
}

/// Handles on the families' series of one label set; prometheus-client's
/// counters and histograms share their state between clones.
#[derive(Debug, Clone)]
struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS_MS)),
            request_bytes: Family::new_with_constructor(|| Histogram::new(size_buckets())),
            response_bytes: Family::new_with_constructor(|| Histogram::new(size_buckets())),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_sent_bytes: Family::default(),
            tcp_received_bytes: Family::default(),
            series: RwLock::default(),
        }
    }
}

// === impl Series ===

impl Series {
    fn record(&self, sample: &Sample) {
        self.requests.inc();
        self.duration.observe(sample.duration_ms);
        self.request_bytes.observe(sample.request_bytes as f64);
        self.response_bytes.observe(sample.response_bytes as f64);
    }
}

// === impl Metrics ===

impl Metrics {
    /// Registers every metric under Istio's names (the client library adds
    /// `_total` to the counters).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "istio_requests",
            "Requests handled by the waypoint",
            self.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request durations, from the request head to the end of the response",
            self.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes",
            self.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes",
            self.response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections passed through the waypoint, counted when opened",
            self.tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections passed through the waypoint, counted when closed",
            self.tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the client on TCP connections, counted when closed",
            self.tcp_sent_bytes.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the client on TCP connections, counted when closed",
            self.tcp_received_bytes.clone(),
        );
    }

    /// Counts a TCP connection opened.
    pub fn tcp_opened(&self, labels: &ConnectionLabels) {
        self.tcp_opened.get_or_create(labels).inc();
    }

    /// Counts a TCP connection closed, with its bytes.
    pub fn tcp_closed(&self, labels: &ConnectionLabels, sample: TcpSample) {
        self.tcp_closed.get_or_create(labels).inc();
        self.tcp_sent_bytes
            .get_or_create(labels)
            .inc_by(sample.sent_bytes);
        self.tcp_received_bytes
            .get_or_create(labels)
            .inc_by(sample.received_bytes);
    }

    /// Records one completed request: in place under the read lock once
    /// its label set is known, no handle cloned.
    pub fn record(&self, labels: &RequestLabels, sample: Sample) {
        let known = self.series.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = known.get(labels) {
            return series.record(&sample);
        }
        drop(known);
        let series = Series {
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        };
        self.series
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(labels.clone())
            .or_insert(series)
            .record(&sample);
    }
}

#[cfg(test)]
mod tests;

//! OTLP/gRPC span export: finished spans go into a bounded queue
//! ([`SpanQueue::push`], which never waits), and a background task sends
//! them in batches to a collector's
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` (Jaeger
//! and the OpenTelemetry Collector serve it on 4317).
//!
//! The data path must never wait on the collector: a slow or absent one
//! fills the queue, and then spans are dropped and counted
//! (`otlp_spans_dropped_total`), never buffered without bound. An
//! unreachable collector is retried with backoff, and its state is logged
//! when it changes, so an outage is one warning and one recovery line,
//! whatever the traffic.
//!
//! # Layout
//!
//! - `span`: [`SpanData`], a finished span in our own terms, and its
//!   conversion into OTLP messages (pure).
//! - `queue`: [`SpanQueue`], the non-blocking hand-over, and
//!   [`ExporterStats`], its counters.
//! - `export`: the batching and retrying task.
//! - [`receiver`] (feature `testing`): a real OTLP/gRPC receiver for tests.

mod export;
mod queue;
#[cfg(feature = "testing")]
pub mod receiver;
mod span;

use std::time::Duration;

use proto::otlp::collector::trace_service_client::TraceServiceClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Endpoint, Uri};

pub use queue::{ExporterStats, SpanQueue};
pub use span::{
    Attribute, FLAG_SAMPLED, Origin, SpanData, SpanKind, SpanStatus, Value, export_request,
};

/// OTLP/gRPC's port, when an endpoint names none.
pub const DEFAULT_OTLP_GRPC_PORT: u16 = 4317;

/// How the exporter batches, queues and retries. The defaults follow the
/// OpenTelemetry SDKs' batch span processor (2,048 queued, 512 per
/// export), with a shorter flush interval so that a trace shows up within
/// a second or two.
#[derive(Debug, Clone)]
pub struct ExporterConfig {
    /// `http://host[:port]` of the collector's OTLP/gRPC listener.
    pub endpoint: String,
    /// Spans waiting for export at most; beyond, new spans are dropped.
    pub queue_capacity: usize,
    /// Spans per `Export` call at most.
    pub max_batch: usize,
    /// How long the first span of a batch waits for others.
    pub flush_interval: Duration,
    /// The deadline of one `Export` call.
    pub export_timeout: Duration,
    /// The first retry's wait; it doubles per failure, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// What the exporter last heard from the collector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CollectorState {
    /// Nothing sent yet.
    #[default]
    Unknown,
    /// The last export went through.
    Accepting,
    /// The last export failed with a retryable status (connection refused,
    /// unavailable, timed out, overloaded): the batch is being retried.
    Unreachable(String),
    /// The last export was refused for good (e.g. `UNIMPLEMENTED`: not an
    /// OTLP endpoint); the batch was dropped.
    Refusing(String),
}

/// Why an exporter was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    #[error(
        "OTLP endpoint `{endpoint}` is not valid: {reason} \
         (expected http://host:port, e.g. http://jaeger-collector.istio-system:4317)"
    )]
    Endpoint { endpoint: String, reason: String },
}

/// A running exporter: the queue to push spans into and the task that
/// sends them.
#[derive(Debug)]
pub struct SpanExporter {
    queue: SpanQueue,
    state: watch::Receiver<CollectorState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

// === impl ExporterConfig ===

impl ExporterConfig {
    /// The defaults (see the type) for `endpoint`.
    pub fn new(endpoint: impl Into<String>) -> Self {
        ExporterConfig {
            endpoint: endpoint.into(),
            queue_capacity: 2048,
            max_batch: 512,
            flush_interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

// === impl SpanExporter ===

impl SpanExporter {
    /// Checks the endpoint and starts the export task on the current
    /// runtime. The connection is made lazily, by the first export, so a
    /// collector that is not up yet is not an error here.
    pub fn start(
        config: ExporterConfig,
        origin: Origin,
        stats: ExporterStats,
    ) -> Result<SpanExporter, OtlpError> {
        let uri = parse_endpoint(&config.endpoint)?;
        let channel = Endpoint::from(uri)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .connect_lazy();
        let (queue, spans) = SpanQueue::bounded(config.queue_capacity, stats.clone());
        let (state_tx, state) = watch::channel(CollectorState::Unknown);
        let (stop, stop_rx) = watch::channel(false);
        let task = export::ExportTask {
            client: TraceServiceClient::new(channel),
            config,
            origin,
            spans,
            stats,
            state: state_tx,
            stop: stop_rx,
        };
        Ok(SpanExporter {
            queue,
            state,
            stop,
            task: tokio::spawn(task.run()),
        })
    }

    /// Where to push finished spans.
    pub fn queue(&self) -> &SpanQueue {
        &self.queue
    }

    /// What the collector last answered; changes are observable.
    pub fn state(&self) -> watch::Receiver<CollectorState> {
        self.state.clone()
    }

    /// Sends what is queued (one try each, no retries) and stops, within
    /// `deadline`. Spans pushed afterwards are dropped.
    pub async fn shutdown(mut self, deadline: Duration) {
        self.stop.send_replace(true);
        // On timeout, dropping `self` aborts the task.
        let _ = tokio::time::timeout(deadline, &mut self.task).await;
    }
}

impl Drop for SpanExporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An OTLP/gRPC endpoint: `http://host[:port]` (port 4317 when none). TLS
/// to the collector is not supported yet, so `https` is refused rather
/// than silently sent in the clear.
pub fn parse_endpoint(endpoint: &str) -> Result<Uri, OtlpError> {
    let invalid = |reason: &str| OtlpError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = endpoint
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                "TLS to the collector is not supported yet; use http://",
            ));
        }
        Some(other) => return Err(invalid(&format!("scheme `{other}` is not http"))),
        None => return Err(invalid("it has no scheme")),
    }
    let Some(authority) = uri.authority() else {
        return Err(invalid("it has no host"));
    };
    if authority.host().is_empty() {
        return Err(invalid("it has no host"));
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(invalid("OTLP/gRPC takes no path"));
    }
    let host = authority.host();
    let port = match authority.port_u16() {
        Some(port) => port,
        // `http` parses a non-numeric port as none at all.
        None if authority.as_str() != host => {
            let rest = &authority.as_str()[host.len()..];
            return Err(invalid(&format!("`{rest}` after the host is not a port")));
        }
        None => DEFAULT_OTLP_GRPC_PORT,
    };
    format!("http://{host}:{port}")
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_endpoint_gets_the_otlp_port_when_it_names_none() {
        let uri = parse_endpoint("http://jaeger-collector.istio-system:4317").unwrap();
        assert_eq!(
            uri.to_string(),
            "http://jaeger-collector.istio-system:4317/"
        );
        let uri = parse_endpoint("http://10.0.0.5").unwrap();
        assert_eq!(uri.to_string(), "http://10.0.0.5:4317/");
        let uri = parse_endpoint("http://[::1]:14317/").unwrap();
        assert_eq!(uri.to_string(), "http://[::1]:14317/");
    }

    #[test]
    fn a_bad_endpoint_says_what_is_wrong_and_what_is_expected() {
        for (endpoint, says) in [
            ("https://collector:4317", "TLS"),
            ("collector:4317", "scheme"),
            ("grpc://collector:4317", "scheme `grpc`"),
            ("http://collector:4317/v1/traces", "no path"),
            ("http://collector:notaport", "`:notaport` after the host"),
            ("", "empty"),
        ] {
            let error = match parse_endpoint(endpoint) {
                Ok(uri) => panic!("{endpoint} parsed as {uri}"),
                Err(error) => error.to_string(),
            };
            assert!(error.contains(says), "{endpoint}: {error}");
            assert!(error.contains("expected http://host:port"), "{error}");
        }
    }
}

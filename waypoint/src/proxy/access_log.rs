//! One access-log event and one metrics sample per request, emitted when
//! the response body has been sent to the end (or the client went away),
//! so that they carry the byte counts and the whole duration. The body
//! wrappers here count bytes as they stream past; nothing is buffered.
//!
//! A request upgraded by a 101 (see `upgrade`) completes instead when
//! its upgraded stream ends ([`TunnelLog`]), as Envoy logs a WebSocket:
//! `response_code` 101, the bytes that went through the stream each way,
//! and the duration of the whole session.
//!
//! `protocol` is the client's HTTP version as Envoy's `%PROTOCOL%` spells
//! it (`HTTP/1.1`, `HTTP/2`); a gRPC request also logs `grpc_status`, the
//! code from the response's trailers (or its head, when trailers-only),
//! as the metrics' `grpc_response_status` has it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use telemetry::logging::socket_addr;
use tracing::field;
use workload::{Service, Workload};

use super::request::Downstream;
use crate::metrics::{
    Completed, Metrics, RequestLabels, RequestProtocol, ResponseFlag, Sample, Text, grpc_status,
};
use crate::trace::{RequestTrace, ServerFacts};

/// What is known of one request so far.
#[derive(Debug)]
pub(crate) struct RequestLog {
    started: Instant,
    pub(crate) src_addr: std::net::SocketAddr,
    /// The workload at the tunnel's source address, if the mesh knows it.
    pub(crate) source: Option<Arc<Workload>>,
    /// `spiffe://...` of the tunnel's client certificate.
    pub(crate) source_principal: Arc<str>,
    /// The service whose VIP the tunnel named.
    pub(crate) service: Arc<Service>,
    /// The service the route sent the request to, once chosen.
    pub(crate) backend: Option<Arc<Service>>,
    /// The endpoint the request was sent to, once chosen.
    pub(crate) destination: Option<Arc<Workload>>,
    pub(crate) dst_addr: Option<std::net::SocketAddr>,
    pub(crate) method: http::Method,
    /// The HTTP version the client spoke.
    version: http::Version,
    pub(crate) path: String,
    pub(crate) authority: String,
    pub(crate) protocol: RequestProtocol,
    /// `<ns>/<name>` of the HTTPRoute that matched, if one did.
    pub(crate) route: Option<String>,
    /// The index of the matched rule in that route.
    pub(crate) route_rule: Option<usize>,
    pub(crate) status: Option<StatusCode>,
    /// The `grpc-status` of the response, once seen.
    pub(crate) grpc_status: Option<Text>,
    /// Why the waypoint answered itself (denied, no route, upstream down).
    pub(crate) reason: Option<String>,
    pub(crate) flag: ResponseFlag,
    /// Attempts sent upstream, retries included (0: answered locally
    /// before any).
    pub(crate) attempts: u32,
    /// Request body bytes read from the client, shared with [`Counted`].
    pub(crate) bytes_received: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    /// The request's trace, when tracing is on: its server span ends here.
    pub(crate) trace: Option<RequestTrace>,
}

// === impl RequestLog ===

impl RequestLog {
    pub(crate) fn new(
        downstream: &Downstream,
        head: &http::request::Parts,
        metrics: Arc<Metrics>,
    ) -> Self {
        RequestLog {
            started: Instant::now(),
            src_addr: downstream.peer_addr,
            source: downstream.source.clone(),
            source_principal: downstream.peer_principal.clone(),
            service: downstream.service.clone(),
            backend: None,
            destination: None,
            dst_addr: None,
            method: head.method.clone(),
            version: head.version,
            path: head.uri.path().to_owned(),
            authority: head
                .uri
                .authority()
                .map(|a| a.as_str().to_owned())
                .or_else(|| {
                    head.headers
                        .get(http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .map(str::to_owned)
                })
                .unwrap_or_default(),
            protocol: RequestProtocol::of(&head.headers),
            route: None,
            route_rule: None,
            status: None,
            grpc_status: None,
            reason: None,
            flag: ResponseFlag::None,
            attempts: 0,
            bytes_received: Arc::default(),
            metrics,
            trace: None,
        }
    }

    /// The end of the request: its access-log event and its metrics.
    fn complete(&self, bytes_sent: u64) {
        let duration = self.started.elapsed();
        let bytes_received = self.bytes_received.load(Ordering::Relaxed);
        let destination = self.destination.as_deref();
        tracing::info!(
            target: "access",
            protocol = protocol_name(self.version),
            src.addr = %socket_addr(self.src_addr),
            src.identity = %self.source_principal,
            src.workload = self.source.as_ref().map(|w| &*w.name),
            dst.service = %self.service.hostname,
            dst.workload = destination.map(|w| &*w.name),
            dst.addr = self.dst_addr.map(|addr| field::display(socket_addr(addr))),
            dst.identity = destination.map(|w| field::display(&w.identity)),
            method = %self.method,
            path = %self.path,
            authority = %self.authority,
            route = self.route.as_deref(),
            response_code = self.status.map(|s| s.as_u16()),
            grpc_status = self.grpc_status.as_ref().map(|status| field::display(GrpcStatus(status))),
            response_flags = self.flag.code(),
            upstream.attempts = self.attempts,
            reason = self.reason.as_deref(),
            bytes_sent,
            bytes_recv = bytes_received,
            duration = %format_args!("{}ms", duration.as_millis()),
            "request complete",
        );
        let completed = Completed {
            source: self.source.as_deref(),
            source_principal: &self.source_principal,
            destination,
            service: self.backend.as_deref().unwrap_or(&self.service),
            protocol: self.protocol,
            status: self.status,
            grpc_status: self.grpc_status.as_ref(),
            flag: self.flag,
        };
        if let Some(trace) = &self.trace {
            let url = format!("http://{}{}", self.authority, self.path);
            trace.finish(&ServerFacts {
                completed: &completed,
                method: self.method.as_str(),
                url: &url,
                route: self.route.as_deref().zip(self.route_rule),
                attempts: self.attempts,
            });
        }
        let labels = RequestLabels::new(&completed);
        self.metrics.record(
            &labels,
            Sample {
                duration_ms: duration.as_secs_f64() * 1000.0,
                request_bytes: bytes_received,
                response_bytes: bytes_sent,
            },
        );
    }
}

/// `%PROTOCOL%` of Envoy's access log.
fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2",
        http::Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A `grpc-status` as the access log writes it: the number, or the text
/// of a non-standard value.
struct GrpcStatus<'a>(&'a Text);

impl std::fmt::Display for GrpcStatus<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Text::Static(text) => f.write_str(text),
            Text::Shared(text) => f.write_str(text),
            Text::Number(code) => write!(f, "{code}"),
        }
    }
}

/// A body that counts the data bytes passing through it.
#[derive(Debug)]
pub(crate) struct Counted<B> {
    inner: B,
    bytes: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, bytes: Arc<AtomicU64>) -> Self {
        Counted { inner, bytes }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body the waypoint answers with: the upstream's, streamed, or one
/// of its own; the request completes when it is dropped.
pub(crate) type ResponseBody = Logged;

/// A response body that completes its request (access log, metrics) when
/// done.
pub(crate) struct Logged {
    inner: UnsyncBoxBody<Bytes, hyper::Error>,
    bytes_sent: u64,
    /// Boxed: a response is moved several times on its way out, and on
    /// HTTP/2 its body lives in the task hyper spawns for the stream,
    /// which tokio moves in at spawn and writes over at the end; the log
    /// is most of the body's size.
    log: Option<Box<RequestLog>>,
}

impl std::fmt::Debug for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logged")
            .field("bytes_sent", &self.bytes_sent)
            .finish_non_exhaustive()
    }
}

impl Logged {
    pub(crate) fn upstream(body: Incoming, log: RequestLog) -> Self {
        Logged {
            inner: UnsyncBoxBody::new(body),
            bytes_sent: 0,
            log: Some(Box::new(log)),
        }
    }

    pub(crate) fn local(body: Bytes, log: RequestLog) -> Self {
        let full = Full::new(body).map_err(|never| match never {});
        Logged {
            inner: UnsyncBoxBody::new(full),
            bytes_sent: 0,
            log: Some(Box::new(log)),
        }
    }
}

impl Logged {
    /// The empty body of a 101, which completes nothing: its request
    /// completes when the upgraded stream ends ([`TunnelLog`]).
    pub(crate) fn switching() -> Self {
        let empty = Empty::new().map_err(|never| match never {});
        Logged {
            inner: UnsyncBoxBody::new(empty),
            bytes_sent: 0,
            log: None,
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes_sent += data.len() as u64;
            } else if let Some(trailers) = frame.trailers_ref()
                && let Some(log) = &mut self.log
                && log.protocol == RequestProtocol::Grpc
            {
                log.grpc_status = grpc_status(trailers).or(log.grpc_status.take());
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.complete(self.bytes_sent);
        }
    }
}

/// The request of an upgraded connection: completed (access log,
/// metrics) when dropped, however its stream ends: both sides closed, an
/// error, or the tunnel cut at the drain deadline.
pub(crate) struct TunnelLog {
    log: RequestLog,
    /// Bytes written to the client through the upgraded stream.
    sent: Arc<AtomicU64>,
}

impl std::fmt::Debug for TunnelLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelLog")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

// === impl TunnelLog ===

impl TunnelLog {
    pub(crate) fn new(log: RequestLog) -> Self {
        TunnelLog {
            log,
            sent: Arc::default(),
        }
    }

    /// The count of bytes read from the client (its request body's
    /// count, which the stream's bytes add to).
    pub(crate) fn received(&self) -> Arc<AtomicU64> {
        self.log.bytes_received.clone()
    }

    /// The count of bytes written to the client.
    pub(crate) fn sent(&self) -> Arc<AtomicU64> {
        self.sent.clone()
    }

    /// Why the stream ended other than by both sides closing.
    pub(crate) fn set_reason(&mut self, reason: String) {
        self.log.reason = Some(reason);
    }
}

impl Drop for TunnelLog {
    fn drop(&mut self) {
        self.log.complete(self.sent.load(Ordering::Relaxed));
    }
}

/// The headers that describe one connection (RFC 9110, section 7.6.1, and
/// the pre-standard `keep-alive` and `proxy-connection`), besides those
/// that `connection` names.
static HOP_BY_HOP: [http::HeaderName; 8] = [
    http::header::CONNECTION,
    http::header::PROXY_AUTHENTICATE,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
];

/// Strips the hop-by-hop headers: they describe one connection, and each
/// side of the waypoint has its own.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    use http::header::{CONNECTION, TE};
    // Most messages carry none: one pass over their few names decides,
    // instead of a hashed removal for each of the eight, twice a request.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<http::HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    // `te: trailers` is how a gRPC client says it understands trailers,
    // and the only value HTTP/2 allows: keep that one.
    let keep_te = headers
        .get(TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in HOP_BY_HOP.iter().filter(|&name| !(keep_te && *name == TE)) {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn protocol_is_the_http_version_as_envoy_names_it() {
        assert_eq!(protocol_name(http::Version::HTTP_11), "HTTP/1.1");
        assert_eq!(protocol_name(http::Version::HTTP_2), "HTTP/2");
        assert_eq!(protocol_name(http::Version::HTTP_10), "HTTP/1.0");
        assert_eq!(GrpcStatus(&Text::Number(14)).to_string(), "14");
        assert_eq!(
            GrpcStatus(&Text::Shared("weird".into())).to_string(),
            "weird"
        );
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_rest_stay() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_static("close, x-secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        let mut names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["te", "x-kept"]);
        headers.insert("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut headers);
        assert!(!headers.contains_key("te"));
    }

    #[test]
    fn each_hop_by_hop_header_goes_when_it_is_the_only_one() {
        for name in [
            "connection",
            "proxy-authenticate",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "proxy-connection",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static("gzip"));
            headers.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut headers);
            let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, vec!["x-kept"], "{name}");
        }
        let mut plain = HeaderMap::new();
        plain.insert("content-type", HeaderValue::from_static("text/plain"));
        plain.insert("x-kept", HeaderValue::from_static("1"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
    }
}

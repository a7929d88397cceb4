//! One access-log event per request, emitted when the response body has
//! been sent to the end (or the client went away), so that it carries the
//! byte counts and the whole duration. The body wrappers here count bytes
//! as they stream past; nothing is buffered.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use identity::Identity;
use tracing::field;

/// What is known of one request so far.
#[derive(Debug)]
pub(crate) struct RequestLog {
    started: Instant,
    pub(crate) src_addr: std::net::SocketAddr,
    pub(crate) src_identity: Identity,
    pub(crate) src_workload: Option<Arc<str>>,
    pub(crate) dst_service: Arc<str>,
    pub(crate) dst_workload: Option<Arc<str>>,
    pub(crate) dst_addr: Option<std::net::SocketAddr>,
    pub(crate) dst_identity: Option<Identity>,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) authority: String,
    /// `<ns>/<name>` of the HTTPRoute that matched, if one did.
    pub(crate) route: Option<String>,
    pub(crate) status: Option<StatusCode>,
    /// Why the waypoint answered itself (denied, no route, upstream down).
    pub(crate) reason: Option<String>,
    /// Request body bytes read from the client, shared with [`Counted`].
    pub(crate) bytes_received: Arc<AtomicU64>,
}

// === impl RequestLog ===

impl RequestLog {
    pub(crate) fn new(
        src_addr: std::net::SocketAddr,
        src_identity: Identity,
        dst_service: Arc<str>,
        head: &http::request::Parts,
    ) -> Self {
        RequestLog {
            started: Instant::now(),
            src_addr,
            src_identity,
            src_workload: None,
            dst_service,
            dst_workload: None,
            dst_addr: None,
            dst_identity: None,
            method: head.method.clone(),
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
            route: None,
            status: None,
            reason: None,
            bytes_received: Arc::default(),
        }
    }

    fn emit(&self, bytes_sent: u64) {
        tracing::info!(
            target: "access",
            protocol = "http",
            src.addr = %self.src_addr,
            src.identity = %self.src_identity,
            src.workload = self.src_workload.as_deref(),
            dst.service = %self.dst_service,
            dst.workload = self.dst_workload.as_deref(),
            dst.addr = self.dst_addr.as_ref().map(field::display),
            dst.identity = self.dst_identity.as_ref().map(field::display),
            method = %self.method,
            path = %self.path,
            authority = %self.authority,
            route = self.route.as_deref(),
            response_code = self.status.map(|s| s.as_u16()),
            reason = self.reason.as_deref(),
            bytes_sent,
            bytes_recv = self.bytes_received.load(Ordering::Relaxed),
            duration = %format_args!("{}ms", self.started.elapsed().as_millis()),
            "request complete",
        );
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
/// of its own; the access-log event goes out when it is dropped.
pub(crate) type ResponseBody = Logged;

/// A response body that emits its request's access-log event when done.
pub(crate) struct Logged {
    inner: UnsyncBoxBody<Bytes, hyper::Error>,
    bytes_sent: u64,
    log: Option<RequestLog>,
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
            log: Some(log),
        }
    }

    pub(crate) fn local(body: Bytes, log: RequestLog) -> Self {
        let full = Full::new(body).map_err(|never| match never {});
        Logged {
            inner: UnsyncBoxBody::new(full),
            bytes_sent: 0,
            log: Some(log),
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
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes_sent += data.len() as u64;
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
            log.emit(self.bytes_sent);
        }
    }
}

/// Strips the hop-by-hop headers (RFC 9110, section 7.6.1): they describe
/// one connection, and each side of the waypoint has its own.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    use http::header::{CONNECTION, PROXY_AUTHENTICATE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
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
    for name in [
        CONNECTION,
        PROXY_AUTHENTICATE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
    if !keep_te {
        headers.remove(TE);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

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
}

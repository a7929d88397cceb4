//! HTTP/1.1 Upgrade (RFC 9110, section 7.8) through the waypoint: the
//! WebSocket handshake, as Envoy with Istio's `upgrade_configs`
//! (`websocket`) serves it.
//!
//! A request asks for an upgrade with the `upgrade` token in `Connection`
//! and an `Upgrade` header, over HTTP/1.1 ([`asked`]; an HTTP/1.0 request
//! has its `Upgrade` ignored, as RFC 9110 says, and HTTP/2 has no such
//! headers: its extended `CONNECT`, RFC 8441, is not served). Then:
//!
//! - `websocket`: the request goes through every phase of any request
//!   (policy, faults, route, filters, endpoint), then one attempt, on a
//!   connection of the service's pool like any HTTP/1.1 request, with
//!   `Connection: upgrade` and its `Upgrade` kept (every other hop-by-hop
//!   header goes). It is not retried and not mirrored: what follows a 101
//!   is a stream, which cannot be replayed. A 101 goes to the client with
//!   its `Upgrade` ([`Requested::switch`]); from then on the two
//!   connections are one stream of bytes, copied both ways until both
//!   sides have closed, each side's close passed on as a half-close. Any
//!   other answer is an ordinary response, and that upstream connection
//!   is not reused.
//! - `h2c`: the request is served as plain HTTP/1.1, its upgrade headers
//!   stripped with the other hop-by-hop headers, as Envoy's codec does:
//!   once switched, the client's HTTP/2 requests would pass the waypoint
//!   unseen by policy.
//! - any other protocol: 403 with an empty body, and the connection
//!   closed after it, as Envoy answers an upgrade no route allows.
//!
//! Where the stream runs: hyper writes the 101 and hands the client's
//! connection over, which ends the tunnel's HTTP connection. The request
//! left the [`Switched`] stream in the tunnel's [`Handoff`], and the
//! tunnel runs it in place of HTTP: counted as an open tunnel for drain,
//! and cut at the drain deadline as every tunnel is. The upstream
//! connection stays counted against the service's connection limits until
//! the stream ends (`pool::UpgradedConnection`), and the request completes
//! then (`access_log::TunnelLog`).
//!
//! hyper hands the connection over at its end to the last request that
//! carried an `Upgrade` (or was a `CONNECT`) even when no 101 was sent:
//! the [`Handoff`] keeps that request's handle too, and the tunnel then
//! closes the connection gracefully, as hyper closes any other; dropped
//! instead, the tunnel would be reset, and an answer not yet passed on
//! (a refusal with `Connection: close`) lost.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::debug;

use super::access_log::{Logged, RequestLog, ResponseBody, TunnelLog, strip_hop_by_hop};
use super::pool::UpgradedConnection;
use crate::filter;
use crate::route::HeaderModifier;

/// The one upgrade Istio configures Envoy for.
const WEBSOCKET: &[u8] = b"websocket";

/// What a request's `Connection` and `Upgrade` headers ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Asked {
    /// No upgrade, or one served as a plain request (`h2c`, HTTP/1.0).
    Nothing,
    /// A WebSocket, with the client's `Upgrade` value.
    WebSocket(HeaderValue),
    /// Another protocol: refused.
    Unsupported(HeaderValue),
}

/// What the request head asks for; pure.
pub(super) fn asked(version: Version, headers: &HeaderMap) -> Asked {
    if version != Version::HTTP_11 || !is_upgrade(headers) {
        return Asked::Nothing;
    }
    let Some(protocol) = headers.get(UPGRADE) else {
        return Asked::Nothing;
    };
    let name = protocol.as_bytes().trim_ascii();
    if name.eq_ignore_ascii_case(WEBSOCKET) {
        Asked::WebSocket(protocol.clone())
    } else if name.eq_ignore_ascii_case(b"h2c") {
        Asked::Nothing
    } else {
        Asked::Unsupported(protocol.clone())
    }
}

/// Whether `headers` ask for an upgrade: the `upgrade` token in
/// `Connection`, and an `Upgrade` header. Upstream, only an upgrade
/// request still has them (the others lose them with the hop-by-hop
/// headers).
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The answer to an upgrade that is refused: closes the connection, as
/// Envoy does, so that no byte the client sent as the new protocol is read
/// as a request.
pub(super) fn refused(mut response: Response<ResponseBody>) -> Response<ResponseBody> {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A WebSocket upgrade on its way: the protocol to ask the upstream for,
/// and hyper's handle on the client's connection, which it hands over
/// once it has written the 101. Dropped without a 101 (a local answer, a
/// failed attempt, another status), it leaves that handle in the
/// tunnel's [`Handoff`], for the connection's end.
#[derive(Debug)]
pub(super) struct Requested<'a> {
    protocol: HeaderValue,
    /// `None` once switched.
    client: Option<OnUpgrade>,
    handoff: &'a Handoff,
}

// === impl Requested ===

impl<'a> Requested<'a> {
    /// Takes hyper's handle on the client's connection from `request`.
    pub(super) fn take(
        request: &mut Request<Incoming>,
        protocol: HeaderValue,
        handoff: &'a Handoff,
    ) -> Self {
        Requested {
            protocol,
            client: Some(hyper::upgrade::on(request)),
            handoff,
        }
    }

    /// Puts the upgrade back on a head whose hop-by-hop headers went.
    pub(super) fn restore_headers(&self, headers: &mut HeaderMap) {
        set_upgrade_headers(headers, self.protocol.clone());
    }

    /// The upstream's 101 for the client (its `Upgrade`, the route's
    /// response header filters), and the stream left in the handoff for
    /// the tunnel to run once the 101 is written. `log` completes when
    /// that stream ends.
    pub(super) fn switch(
        mut self,
        mut response: Response<Incoming>,
        response_filters: &[HeaderModifier],
        mut log: RequestLog,
    ) -> Response<ResponseBody> {
        let upstream = hyper::upgrade::on(&mut response);
        let (mut head, _empty) = response.into_parts();
        let connection = head.extensions.remove::<UpgradedConnection>();
        let protocol = match head.headers.get(UPGRADE) {
            Some(protocol) => protocol.clone(),
            None => self.protocol.clone(),
        };
        strip_hop_by_hop(&mut head.headers);
        for modifier in response_filters {
            filter::apply_header_modifier(modifier, &mut head.headers);
        }
        // The connection's own headers, whatever a filter did.
        set_upgrade_headers(&mut head.headers, protocol);
        log.status = Some(head.status);
        if let Some(client) = self.client.take() {
            self.handoff.set(Handed::Switched(Box::new(Switched {
                client,
                upstream,
                connection,
                log: TunnelLog::new(log),
            })));
        }
        Response::from_parts(head, Logged::switching())
    }
}

impl Drop for Requested<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.handoff.set(Handed::Unswitched(client));
        }
    }
}

fn set_upgrade_headers(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, protocol);
}

/// What hyper hands the tunnel's HTTP/1.1 connection to when it ends,
/// one per tunnel: the stream of a 101 (a connection switches at most
/// once, and ends when it does), or the last upgrade not switched.
#[derive(Debug, Default)]
pub(crate) struct Handoff {
    handed: Mutex<Handed>,
}

#[derive(Debug, Default)]
enum Handed {
    /// No request carried an upgrade (or HTTP/2: none can).
    #[default]
    Nothing,
    /// hyper's handle from the last request that carried one, not
    /// switched.
    Unswitched(OnUpgrade),
    /// Boxed: most connections never switch, and carry the handoff all
    /// the same.
    Switched(Box<Switched>),
}

// === impl Handoff ===

impl Handoff {
    /// Keeps hyper's handle from a request that carries one (an `Upgrade`
    /// header, or `CONNECT`) but is not switched.
    pub(super) fn keep_unswitched(&self, request: &mut Request<Incoming>) {
        if let Some(client) = request.extensions_mut().remove::<OnUpgrade>() {
            self.set(Handed::Unswitched(client));
        }
    }

    fn set(&self, handed: Handed) {
        *self.lock() = handed;
    }

    /// Once the tunnel's HTTP connection has ended: the switched stream
    /// until it ends, or the graceful close of a connection hyper handed
    /// to an upgrade that was not switched.
    pub(super) async fn finish(&self) {
        let handed = std::mem::take(&mut *self.lock());
        match handed {
            Handed::Nothing => {}
            Handed::Switched(switched) => {
                debug!("the connection switched protocols; copying its bytes");
                switched.run().await;
            }
            // An error when hyper ended the connection itself.
            Handed::Unswitched(client) => {
                if let Ok(client) = client.await {
                    let _ = TokioIo::new(client).shutdown().await;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Handed> {
        self.handed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection switched by a 101, both sides of it.
#[derive(Debug)]
pub(crate) struct Switched {
    /// The client's connection, once hyper has written the 101.
    client: OnUpgrade,
    /// The upstream's, once hyper has read the 101.
    upstream: OnUpgrade,
    /// Keeps the upstream connection counted against the service's
    /// connection limits until the stream ends.
    connection: Option<UpgradedConnection>,
    /// Completes the request when dropped, with the stream's bytes.
    log: TunnelLog,
}

// === impl Switched ===

impl Switched {
    /// Copies bytes both ways until both sides have closed or one fails;
    /// dropped before that (the drain deadline), it ends the stream all
    /// the same, and the request completes.
    pub(super) async fn run(self) {
        let Switched {
            client,
            upstream,
            connection,
            mut log,
        } = self;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(error) => {
                debug!(%error, "the upgrade did not complete");
                log.set_reason(format!("the upgrade did not complete: {error}"));
                return;
            }
        };
        let mut client = Counting {
            io: TokioIo::new(client),
            read: log.received(),
            written: log.sent(),
        };
        let mut upstream = TokioIo::new(upstream);
        match hbone::copy_bidirectional(&mut client, &mut upstream).await {
            Ok(_) => debug!("upgraded stream closed by both sides"),
            Err(error) => {
                debug!(%error, "upgraded stream failed");
                log.set_reason(format!("the upgraded stream failed: {error}"));
            }
        }
        // Counted until both sides are closed, then let go before the log.
        drop(connection);
    }
}

/// The client's side of a switched stream (or of a TCP passthrough),
/// counting the bytes each way for the access log and the metrics, also
/// when the stream fails.
pub(super) struct Counting<S> {
    pub(super) io: S,
    pub(super) read: Arc<AtomicU64>,
    pub(super) written: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().len().saturating_sub(before);
            self.read.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            self.written.fetch_add(written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_websocket_handshake_asks_for_an_upgrade() {
        let handshake = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(
            asked(Version::HTTP_11, &handshake),
            Asked::WebSocket(HeaderValue::from_static("WebSocket"))
        );
        assert!(is_upgrade(&handshake));
        // The token may come in a `Connection` header of its own.
        let split = headers(&[
            ("connection", "keep-alive"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(matches!(
            asked(Version::HTTP_11, &split),
            Asked::WebSocket(_)
        ));
    }

    #[test]
    fn without_both_headers_or_over_http_1_0_nothing_is_asked() {
        let no_token = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert_eq!(asked(Version::HTTP_11, &no_token), Asked::Nothing);
        assert!(!is_upgrade(&no_token));
        let no_upgrade = headers(&[("connection", "upgrade")]);
        assert_eq!(asked(Version::HTTP_11, &no_upgrade), Asked::Nothing);
        assert!(!is_upgrade(&no_upgrade));
        let handshake = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert_eq!(asked(Version::HTTP_10, &handshake), Asked::Nothing);
    }

    #[test]
    fn h2c_is_served_plain_and_other_protocols_are_refused() {
        let h2c = headers(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert_eq!(asked(Version::HTTP_11, &h2c), Asked::Nothing);
        let other = headers(&[("connection", "upgrade"), ("upgrade", "spdy/3.1")]);
        assert_eq!(
            asked(Version::HTTP_11, &other),
            Asked::Unsupported(HeaderValue::from_static("spdy/3.1"))
        );
    }

    #[test]
    fn the_upgrade_survives_the_hop_by_hop_headers_alone() {
        let mut head = headers(&[
            ("connection", "keep-alive, Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        strip_hop_by_hop(&mut head);
        set_upgrade_headers(&mut head, HeaderValue::from_static("websocket"));
        let mut names: Vec<&str> = head.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["connection", "sec-websocket-key", "upgrade"]);
        assert_eq!(head["connection"], "upgrade");
        assert!(is_upgrade(&head));
    }

    #[tokio::test]
    async fn counting_counts_both_ways() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (near, mut far) = tokio::io::duplex(64);
        let (read, written) = (Arc::default(), Arc::default());
        let mut counting = Counting {
            io: near,
            read: Arc::clone(&read),
            written: Arc::clone(&written),
        };
        counting.write_all(b"hello").await.unwrap();
        far.write_all(b"hi").await.unwrap();
        let mut two = [0; 2];
        counting.read_exact(&mut two).await.unwrap();
        assert_eq!(
            (
                read.load(Ordering::Relaxed),
                written.load(Ordering::Relaxed)
            ),
            (2, 5)
        );
    }
}

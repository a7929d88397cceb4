//! Outbound (15001): the pod's own connections, redirected to the proxy.
//!
//! The original destination comes from the socket; [`super::route::resolve`]
//! decides where it goes; then the proxy connects (HBONE through the pool,
//! presenting the pod's certificate, or plaintext) and pipes. SOCKS5 shares
//! everything after the destination: [`Inner::connect_outbound`] and
//! [`Inner::pipe_outbound`].

use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hbone::{ConnectRequest, Tunnel};
use http::{HeaderMap, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tracing::{Instrument, debug_span};

use super::access_log::{AccessLog, Direction};
use super::inbound_plaintext::original_dst;
use super::route::{self, Route};
use super::{Inner, ProxyError};
use crate::connections::Protocol;

/// Where the proxy's side of an outbound connection goes.
#[derive(Debug)]
pub(super) enum Upstream {
    Hbone(Tunnel),
    Plaintext(TcpStream),
}

// === impl Inner ===

impl Inner {
    pub(super) async fn outbound_captured(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let span = debug_span!("outbound", src.addr = %peer);
        async move {
            let mut log = AccessLog::new(Direction::Outbound, peer);
            let dst = match original_dst(&tcp) {
                Ok(dst) => dst,
                Err(error) => return log.finish(Err(&error)),
            };
            let early = first_flight(&tcp);
            let early_sent = early.len() as u64;
            match self.connect_outbound(peer, dst, early, &mut log).await {
                Ok(upstream) => self.pipe_outbound(tcp, upstream, early_sent, log).await,
                Err(error) => log.finish(Err(&error)),
            }
        }
        .instrument(span)
        .await;
    }

    /// Resolves `dst` for this pod, connects and sends `early` (what the
    /// client sent before the upstream existed): through HBONE with the
    /// `CONNECT`, in plaintext once connected. Fills in the log's
    /// destination as it learns it.
    pub(super) async fn connect_outbound(
        &self,
        src: SocketAddr,
        dst: SocketAddr,
        early: Bytes,
        log: &mut AccessLog,
    ) -> Result<Upstream, ProxyError> {
        log.dst_addr = Some(dst);
        let state = self.state.snapshot();
        let source = self.local_workload(&state)?;
        log.source(&source);
        match route::resolve(&state, &source, dst, &self.balancer)? {
            Route::Hbone(route) => {
                log.service(route.service.as_ref());
                log.destination(&route.workload);
                log.dst_addr = Some(route.hbone_addr);
                log.dst_hbone_addr = Some(route.authority);
                let cert = self.certificate(&source.identity).await?;
                let request = ConnectRequest {
                    source: cert,
                    destination: route.hbone_addr,
                    expected_identities: route.expected_identities,
                    authority: route.authority.to_string(),
                    headers: forwarded_for(src.ip()),
                    early_data: early,
                };
                let tunnel = self.pool.connect(request).await?;
                Ok(Upstream::Hbone(tunnel))
            }
            Route::Plaintext(route) => {
                log.service(route.service.as_ref());
                if let Some(workload) = &route.workload {
                    log.destination(workload);
                }
                log.dst_addr = Some(route.addr);
                let mut tcp = self.connect_plaintext(route.addr).await?;
                tcp.write_all(&early).await?;
                Ok(Upstream::Plaintext(tcp))
            }
        }
    }

    /// Pipes until both halves closed and writes the access log, counting
    /// the `early_sent` bytes [`Inner::connect_outbound`] already sent.
    pub(super) async fn pipe_outbound(
        &self,
        mut downstream: TcpStream,
        mut upstream: Upstream,
        early_sent: u64,
        log: AccessLog,
    ) {
        let protocol = match upstream {
            Upstream::Hbone(_) => Protocol::Hbone,
            Upstream::Plaintext(_) => Protocol::Tcp,
        };
        // Outbound connections are not re-checked: the destination's proxy
        // enforces policy (and closes what it no longer allows).
        let tracked = log.track(&self.connections, protocol, None);
        let copy = async {
            let mut transferred = match &mut upstream {
                Upstream::Hbone(tunnel) => hbone::copy_tunnel(tunnel, &mut downstream)
                    .await?
                    .reversed(),
                Upstream::Plaintext(tcp) => hbone::copy_bidirectional(&mut downstream, tcp).await?,
            };
            transferred.a_to_b += early_sent;
            Ok(transferred)
        };
        let result = tracked.pipe(copy).await.map_err(ProxyError::from);
        log.finish(result.as_ref().copied());
    }
}

/// The most a connection's first flight carries with the `CONNECT`: an
/// HTTP request head or a TLS ClientHello fits.
const FIRST_FLIGHT: usize = 8 * 1024;

/// What the client has sent so far, without waiting for more: nothing for
/// a protocol where the server speaks first, or if it has not arrived yet.
/// A read error is left for the pipe to meet.
fn first_flight(tcp: &TcpStream) -> Bytes {
    let mut buf = [0u8; FIRST_FLIGHT];
    // A plain read of the nonblocking socket: `try_read` would answer
    // WouldBlock unread until tokio's driver has seen the socket readable.
    // Tokio is not misled: a later read that finds nothing waits for the
    // next edge as usual.
    let socket = socket2::SockRef::from(tcp);
    match (&*socket).read(&mut buf) {
        Ok(n) => Bytes::copy_from_slice(&buf[..n]),
        Err(_) => Bytes::new(),
    }
}

/// `forwarded: for=<ip>` (RFC 7239; IPv6 quoted and bracketed), so the
/// destination learns the original client address.
fn forwarded_for(ip: IpAddr) -> HeaderMap {
    let mut value = String::with_capacity(48);
    // Writing to a String cannot fail.
    let _ = match ip {
        IpAddr::V4(ip) => write!(value, "for={ip}"),
        IpAddr::V6(ip) => write!(value, "for=\"[{ip}]\""),
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(http::header::FORWARDED, value);
    }
    headers
}

// Upstream is both kinds of stream, so one copy loop serves both routes.

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upstream::Hbone(tunnel) => Pin::new(tunnel).poll_read(cx, buf),
            Upstream::Plaintext(tcp) => Pin::new(tcp).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Upstream::Hbone(tunnel) => Pin::new(tunnel).poll_write(cx, buf),
            Upstream::Plaintext(tcp) => Pin::new(tcp).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upstream::Hbone(tunnel) => Pin::new(tunnel).poll_flush(cx),
            Upstream::Plaintext(tcp) => Pin::new(tcp).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Upstream::Hbone(tunnel) => Pin::new(tunnel).poll_shutdown(cx),
            Upstream::Plaintext(tcp) => Pin::new(tcp).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_quotes_ipv6() {
        let v4 = forwarded_for("10.0.0.1".parse().unwrap());
        assert_eq!(v4[http::header::FORWARDED], "for=10.0.0.1");
        let v6 = forwarded_for("fd00::1".parse().unwrap());
        assert_eq!(v6[http::header::FORWARDED], "for=\"[fd00::1]\"");
    }
}

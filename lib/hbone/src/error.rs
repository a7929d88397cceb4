//! HBONE errors say which hop failed (TCP, TLS, HTTP/2, the peer's answer)
//! and what to check, because an operator reading a log line has nothing else.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

/// Why an HBONE tunnel could not be opened or served.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to {addr} failed: {source}: is the destination's HBONE port open?")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("connect to {addr} timed out after {after:?}: is port {} reachable from here?", addr.port())]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    #[error("TLS handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "TLS handshake with {addr} timed out after {after:?}: the peer accepted TCP but is not answering TLS"
    )]
    HandshakeTimeout { addr: SocketAddr, after: Duration },
    #[error("{addr} did not negotiate ALPN \"h2\": it is not an HBONE server")]
    NotHbone { addr: SocketAddr },
    #[error("cannot build the TLS config: {0}")]
    Tls(#[from] identity::tls::TlsError),
    #[error("HTTP/2 with {addr} failed: {source}")]
    Http2 {
        addr: SocketAddr,
        #[source]
        source: h2::Error,
    },
    #[error("invalid HBONE target authority {authority:?}: {reason}")]
    BadAuthority { authority: String, reason: String },
    #[error("CONNECT {authority} via {addr} was denied by policy (HTTP 401)")]
    Denied { addr: SocketAddr, authority: String },
    #[error("CONNECT {authority} via {addr} was refused with HTTP {status}: {}", rejection_hint(*.status))]
    Refused {
        addr: SocketAddr,
        authority: String,
        status: StatusCode,
    },
}

fn rejection_hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "the peer found the request malformed",
        StatusCode::SERVICE_UNAVAILABLE => {
            "the destination application did not accept the connection"
        }
        _ => "unexpected status from the HBONE peer",
    }
}

// === impl Error ===

impl Error {
    /// Whether a new attempt on a fresh connection may succeed: true for
    /// connection-level failures, false for the peer's deliberate answers.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Http2 { .. })
    }
}

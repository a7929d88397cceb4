//! The HBONE server: TLS, then HTTP/2, then one handler call per `CONNECT`.
//!
//! Each accepted TCP connection runs on its own task: a TLS handshake (with a
//! deadline, so a silent client cannot hold a task), a check that the peer
//! spoke ALPN `h2`, then an HTTP/2 accept loop. Every `CONNECT` stream gets a
//! task of its own that calls the [`ConnectHandler`]; anything else gets 400.
//! A connection that fails any step is closed without touching the others.
//!
//! Draining: when the drain signal fires, listeners stop accepting and every
//! connection sends GOAWAY; streams already open run to completion.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use identity::Identity;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, debug_span, warn};

use crate::coalesce::Coalesced;
use crate::settings::H2Settings;
use crate::tunnel::Tunnel;

/// The content type of a TLS handshake record: every TLS client's first byte.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Decides what to do with each inbound `CONNECT`.
///
/// The handler answers through [`InboundConnect`]: `accept` (200, then pipe
/// bytes on the returned [`Tunnel`]) or `reject`. A request dropped without
/// an answer is answered 503, so a handler bug never leaves a client hanging.
pub trait ConnectHandler: Send + Sync + 'static {
    fn handle(&self, request: InboundConnect) -> impl Future<Output = ()> + Send;
}

/// How an inbound `CONNECT` can be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 401: policy said no.
    Denied,
    /// 400: the request itself is wrong (authority, headers).
    BadRequest,
    /// 503: the upstream could not be reached.
    Unavailable,
}

/// One inbound `CONNECT`, with everything a policy decision needs.
#[derive(Debug)]
pub struct InboundConnect {
    /// The client's identity, proven by its certificate in the handshake.
    pub peer_identity: Identity,
    /// The TCP peer of the HBONE connection.
    pub peer_addr: SocketAddr,
    /// The `:authority`: where the client wants to go (`<ip>:<port>`).
    pub authority: String,
    /// Request headers (`forwarded`, `baggage`, `traceparent`, ...).
    pub headers: HeaderMap,
    /// The stream's two halves; taken by the first answer.
    stream: Option<(SendResponse<Bytes>, RecvStream)>,
}

/// Server knobs beyond TLS: HTTP/2 settings and the handshake deadline.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub h2: H2Settings,
    pub handshake_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            h2: H2Settings::default(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves HBONE on accepted TCP connections.
pub struct Server<H> {
    tls: TlsAcceptor,
    handler: Arc<H>,
    config: ServerConfig,
}

impl<H> Clone for Server<H> {
    fn clone(&self) -> Self {
        Server {
            tls: self.tls.clone(),
            handler: self.handler.clone(),
            config: self.config.clone(),
        }
    }
}

impl<H> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

// === impl Server ===

impl<H: ConnectHandler> Server<H> {
    /// `tls` must come from `identity::tls::server_config` so that clients
    /// are verified and ALPN `h2` is offered.
    pub fn new(tls: Arc<rustls::ServerConfig>, handler: Arc<H>, config: ServerConfig) -> Self {
        Server {
            tls: TlsAcceptor::from(tls),
            handler,
            config,
        }
    }

    /// Accepts connections until `drain` turns true, then stops accepting;
    /// connections already open drain on their own tasks.
    pub async fn serve(&self, listener: TcpListener, mut drain: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = drain.wait_for(|draining| *draining) => break,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let server = self.clone();
                    let drain = drain.clone();
                    tokio::spawn(async move { server.serve_connection(tcp, peer, drain).await });
                }
                // Out of file descriptors and the like: back off briefly
                // instead of spinning on the error.
                Err(error) => {
                    warn!(%error, "accepting an HBONE connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Serves one TCP connection to the end. Errors are logged, not returned:
    /// a bad client affects only its own connection.
    pub async fn serve_connection(
        &self,
        tcp: TcpStream,
        peer_addr: SocketAddr,
        drain: watch::Receiver<bool>,
    ) {
        let span = debug_span!("hbone_inbound", peer.addr = %peer_addr);
        async move {
            if let Err(error) = self.run_connection(tcp, peer_addr, drain).await {
                debug!(%error, "HBONE connection closed with an error");
            }
        }
        .instrument(span)
        .await
    }

    async fn run_connection(
        &self,
        tcp: TcpStream,
        peer_addr: SocketAddr,
        mut drain: watch::Receiver<bool>,
    ) -> Result<(), ConnectionError> {
        // Tunnels carry small interactive writes; never delay them.
        let _ = tcp.set_nodelay(true);
        let deadline = tokio::time::Instant::now() + self.config.handshake_timeout;
        let timed_out = |_| ConnectionError::HandshakeTimeout(self.config.handshake_timeout);
        // A client that does not open with a TLS handshake record gets the
        // connection closed without a byte: not even a TLS alert.
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout_at(deadline, tcp.peek(&mut first))
            .await
            .map_err(timed_out)?;
        if peeked.map_err(ConnectionError::Tls)? == 0 || first[0] != TLS_HANDSHAKE_RECORD {
            return Err(ConnectionError::NotTls);
        }
        let mut tls = tokio::time::timeout_at(deadline, self.tls.accept(tcp))
            .await
            .map_err(timed_out)?
            .map_err(ConnectionError::Tls)?;
        tls.get_mut()
            .1
            .set_buffer_limit(Some(self.config.h2.tls_send_buffer()));
        let (_, session) = tls.get_ref();
        if session.alpn_protocol() != Some(identity::tls::ALPN_H2) {
            return Err(ConnectionError::NoAlpn);
        }
        let peer_identity =
            identity::tls::peer_identity(session).map_err(ConnectionError::PeerIdentity)?;
        debug!(peer.identity = %peer_identity, "HBONE connection established");

        let mut conn = self
            .config
            .h2
            .server_builder()
            .handshake::<_, Bytes>(Coalesced::new(tls))
            .await?;
        let mut draining = *drain.borrow();
        if draining {
            conn.graceful_shutdown();
        }
        loop {
            let next = tokio::select! {
                next = conn.accept() => next,
                _ = drain.wait_for(|d| *d), if !draining => {
                    draining = true;
                    conn.graceful_shutdown();
                    continue;
                }
            };
            let Some(stream) = next else { return Ok(()) };
            let (request, respond) = stream?;
            let handler = self.handler.clone();
            let identity = peer_identity.clone();
            tokio::spawn(dispatch(handler, request, respond, identity, peer_addr));
        }
    }
}

/// Validates the request shape and hands good `CONNECT`s to the handler.
async fn dispatch<H: ConnectHandler>(
    handler: Arc<H>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer_identity: Identity,
    peer_addr: SocketAddr,
) {
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    let (true, Some(authority)) = (request.method() == Method::CONNECT, authority) else {
        debug!(method = %request.method(), uri = %request.uri(), "refusing a non-CONNECT request");
        let _ = respond.send_response(status_only(StatusCode::BAD_REQUEST), true);
        return;
    };
    let (parts, body) = request.into_parts();
    let inbound = InboundConnect {
        peer_identity,
        peer_addr,
        authority,
        headers: parts.headers,
        stream: Some((respond, body)),
    };
    handler.handle(inbound).await;
}

fn status_only(status: StatusCode) -> Response<()> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    response
}

// === impl InboundConnect ===

impl InboundConnect {
    /// Answers 200 and returns the tunnel. Call it only after the upstream is
    /// connected and policy passed: the client takes 200 as "connected".
    pub fn accept(mut self) -> Result<Tunnel, h2::Error> {
        // `accept` and `reject` consume self, so the stream is always here.
        let Some((mut respond, body)) = self.stream.take() else {
            return Err(h2::Reason::INTERNAL_ERROR.into());
        };
        let send = respond.send_response(status_only(StatusCode::OK), false)?;
        Ok(Tunnel::new(send, body, None))
    }

    /// Answers with the rejection's status and ends the stream.
    pub fn reject(mut self, rejection: Rejection) {
        self.answer(rejection);
    }

    fn answer(&mut self, rejection: Rejection) {
        let status = match rejection {
            Rejection::Denied => StatusCode::UNAUTHORIZED,
            Rejection::BadRequest => StatusCode::BAD_REQUEST,
            Rejection::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        if let Some((mut respond, _)) = self.stream.take() {
            let _ = respond.send_response(status_only(status), true);
        }
    }
}

impl Drop for InboundConnect {
    fn drop(&mut self) {
        self.answer(Rejection::Unavailable);
    }
}

/// Why one inbound connection ended early; logged, never propagated.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("TLS handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("client did not start a TLS handshake: plaintext on the HBONE port?")]
    NotTls,
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("client did not negotiate ALPN h2: not an HBONE client")]
    NoAlpn,
    #[error("client certificate has no usable identity: {0}")]
    PeerIdentity(identity::tls::TlsError),
    #[error("HTTP/2: {0}")]
    Http2(#[from] h2::Error),
}

//! The upstream side: which endpoint gets a request (by the service's
//! `DestinationRule` policy, see `load`), and the HTTP connections to
//! endpoints, reused across requests.
//!
//! An endpoint that speaks HBONE is reached through a tunnel to its
//! ztunnel (`<endpoint-ip>:15008`, `:authority` `<endpoint-ip>:<port>`),
//! presenting the waypoint's certificate and expecting the endpoint's
//! identity; any other endpoint over plain TCP. On that stream the
//! waypoint speaks the request's own HTTP version (HTTP/2 stays HTTP/2, so
//! gRPC trailers survive), and keeps the connection for the next request:
//! HTTP/1 connections one request at a time, HTTP/2 ones shared.
//!
//! Connections are keyed by endpoint address, transport, version and the
//! identity they were checked against, so that a connection proved to
//! reach identity A never carries a request meant for B.
//!
//! [`Upstreams::send`] is one attempt; retries and timeouts wrap it (see
//! `attempts`).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use hbone::Connector as _;
use http::{HeaderMap, Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use identity::Identity;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tracing::debug;
use workload::{Service, TunnelProtocol, Workload};

use super::CertFuture;
pub(crate) use super::body::UpstreamBody;
use super::load::{InFlight, Loads, Refusal};
use crate::balance::BackendPolicy;
use crate::metrics::ResponseFlag;

/// One endpoint chosen for a request.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) workload: Arc<Workload>,
    /// `<endpoint-ip>:<target-port>`.
    pub(crate) addr: SocketAddr,
}

/// Why an attempt got no response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("no certificate to present to {addr}: {source}")]
    Certificate {
        addr: SocketAddr,
        #[source]
        source: identity::CertManagerError,
    },
    #[error("HBONE to the ztunnel of {addr} failed: {source}")]
    Hbone {
        addr: SocketAddr,
        #[source]
        source: hbone::Error,
    },
    #[error("connecting to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP with {addr} failed: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

// === impl UpstreamError ===

impl UpstreamError {
    /// Envoy's flag for it: the connection never came up (`UF`), or it
    /// broke under the request (`UC`).
    pub(crate) fn response_flag(&self) -> ResponseFlag {
        match self {
            UpstreamError::Certificate { .. }
            | UpstreamError::Hbone { .. }
            | UpstreamError::Connect { .. } => ResponseFlag::UpstreamConnectFailure,
            UpstreamError::Http { .. } => ResponseFlag::UpstreamConnectionTermination,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConnectionKey {
    addr: SocketAddr,
    /// `Some` when tunnelled: the identity the tunnel checked.
    hbone_identity: Option<Identity>,
    http2: bool,
}

#[derive(Debug)]
enum Sender {
    Http1(http1::SendRequest<UpstreamBody>),
    Http2(http2::SendRequest<UpstreamBody>),
}

/// Upstream HTTP connections, shared by every request of the waypoint.
#[derive(Debug)]
pub(crate) struct Upstreams {
    hbone: hbone::Pool,
    /// Opens plain TCP to endpoints (the HBONE pool has the same one).
    connector: SourceConnector,
    idle: Mutex<HashMap<ConnectionKey, Vec<Sender>>>,
    /// Requests in flight, round-robin positions and outlier state, per
    /// service.
    loads: Arc<Loads>,
}

// === impl Upstreams ===

impl Upstreams {
    pub(crate) fn new(hbone: hbone::Pool, connector: SourceConnector) -> Self {
        Upstreams {
            hbone,
            connector,
            idle: Mutex::default(),
            loads: Arc::default(),
        }
    }

    /// An endpoint for a connection or a mirrored request, with Istio's
    /// default balancer and no limits: see [`Upstreams::choose_for_attempt`].
    pub(crate) fn choose_endpoint<'a>(
        &self,
        endpoints: impl Iterator<Item = &'a Arc<Workload>>,
        service: &Service,
        port: u16,
        tried: &[SocketAddr],
    ) -> Option<Endpoint> {
        let default = Arc::new(BackendPolicy::default());
        self.choose_for_attempt(endpoints, service, port, tried, &default)
            .ok()
            .map(|(endpoint, _counted_until_here)| endpoint)
    }

    /// The endpoint of `service` that serves `port` for one attempt, by the
    /// service's `DestinationRule` policy (least request by default) over
    /// the healthy endpoints that outlier detection has not ejected,
    /// leaving out those at the addresses in `tried` (the earlier attempts
    /// of a request) unless no other is left. The guard counts the attempt
    /// in flight until it is dropped; `Overflow` when the service's
    /// request limit is reached.
    pub(crate) fn choose_for_attempt<'a>(
        &self,
        endpoints: impl Iterator<Item = &'a Arc<Workload>>,
        service: &Service,
        port: u16,
        tried: &[SocketAddr],
        policy: &Arc<BackendPolicy>,
    ) -> Result<(Endpoint, InFlight), Refusal> {
        let key = service.key();
        let mut candidates: Vec<Endpoint> = endpoints
            .filter(|w| w.healthy)
            .filter_map(|w| {
                let target = w.target_port(&key, port)?;
                let ip = *w.addresses.first()?;
                Some(Endpoint {
                    workload: w.clone(),
                    addr: SocketAddr::new(ip, target),
                })
            })
            .collect();
        // Envoy's `previous_hosts` predicate: a retry goes elsewhere when
        // it can, so that one bad endpoint of several is recoverable.
        if candidates.iter().any(|e| !tried.contains(&e.addr)) {
            candidates.retain(|e| !tried.contains(&e.addr));
        }
        let addrs: Vec<SocketAddr> = candidates.iter().map(|e| e.addr).collect();
        // Only first attempts turn the round-robin wheel: were retries to
        // turn it too, with two endpoints every first attempt would land
        // on the failing one.
        let (chosen, in_flight) = self.loads.choose(
            &service.hostname,
            &addrs,
            policy,
            tried.is_empty(),
            std::time::Instant::now(),
        )?;
        Ok((candidates.swap_remove(chosen), in_flight))
    }

    /// Opens a byte stream to `endpoint`: a tunnel through its ztunnel, or
    /// TCP. For TCP passthrough, and under each new HTTP connection. `cert`
    /// (the waypoint's own) is awaited only for a tunnel.
    pub(crate) async fn connect(
        &self,
        endpoint: &Endpoint,
        cert: CertFuture<'_>,
    ) -> Result<Box<dyn Stream>, UpstreamError> {
        let addr = endpoint.addr;
        match endpoint.workload.protocol {
            TunnelProtocol::Hbone => {
                let cert = cert
                    .await
                    .map_err(|source| UpstreamError::Certificate { addr, source })?;
                let request = hbone::ConnectRequest {
                    source: cert,
                    destination: SocketAddr::new(addr.ip(), hbone::HBONE_PORT),
                    expected_identities: vec![endpoint.workload.identity.clone()],
                    authority: addr.to_string(),
                    headers: HeaderMap::new(),
                };
                let tunnel = self
                    .hbone
                    .connect(request)
                    .await
                    .map_err(|source| UpstreamError::Hbone { addr, source })?;
                Ok(Box::new(tunnel))
            }
            TunnelProtocol::None => {
                let tcp = self
                    .connector
                    .connect(addr)
                    .await
                    .map_err(|source| UpstreamError::Connect { addr, source })?;
                let _ = tcp.set_nodelay(true);
                Ok(Box::new(tcp))
            }
        }
    }

    /// One attempt: sends `request` to `endpoint` on a pooled connection
    /// that is free, or on a new one, and returns the response head with
    /// its body still streaming. `cert` is awaited only to open a tunnel.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        cert: CertFuture<'_>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let addr = endpoint.addr;
        let http = |source| UpstreamError::Http { addr, source };
        let key = ConnectionKey {
            addr,
            hbone_identity: (endpoint.workload.protocol == TunnelProtocol::Hbone)
                .then(|| endpoint.workload.identity.clone()),
            http2: request.version() == Version::HTTP_2,
        };
        let request = match self.send_pooled(&key, request) {
            Pooled::Sent(response) => return response.await.map_err(http),
            Pooled::NoneFree(request) => *request,
        };
        let io = TokioIo::new(self.connect(endpoint, cert).await?);
        let mut sender = if key.http2 {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(http)?;
            tokio::spawn(drive(connection, addr));
            Sender::Http2(sender)
        } else {
            let (mut sender, connection) = http1::handshake(io).await.map_err(http)?;
            tokio::spawn(drive(connection, addr));
            sender.ready().await.map_err(http)?;
            Sender::Http1(sender)
        };
        debug!(upstream.addr = %addr, http2 = key.http2, "new upstream connection");
        let response = sender.send(request);
        self.keep(key, sender);
        response.await.map_err(http)
    }

    /// Sends on a pooled connection that is free, if there is one; else
    /// hands the request back.
    fn send_pooled(&self, key: &ConnectionKey, request: Request<UpstreamBody>) -> Pooled {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let free = idle.get_mut(key).and_then(|senders| {
            senders.retain(|s| !s.is_closed());
            senders.iter_mut().find(|s| s.is_ready())
        });
        match free {
            Some(sender) => Pooled::Sent(sender.send(request)),
            None => Pooled::NoneFree(Box::new(request)),
        }
    }

    /// Pools a new connection, unless the key holds enough already: then
    /// it carries this one request and closes.
    fn keep(&self, key: ConnectionKey, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget endpoints whose connections have all closed (gone or
        // idle-closed by the peer), so the map follows live endpoints.
        idle.retain(|_, senders| {
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        });
        let senders = idle.entry(key).or_default();
        if senders.len() < MAX_CONNECTIONS_PER_KEY {
            senders.push(sender);
        }
    }
}

/// Connections kept per endpoint (and version): bounds what a burst of
/// HTTP/1 requests leaves behind.
const MAX_CONNECTIONS_PER_KEY: usize = 64;

/// What [`Upstreams::send_pooled`] did with a request.
enum Pooled {
    Sent(ResponseFuture),
    /// Boxed: a request head is large, and this is the rarer case.
    NoneFree(Box<Request<UpstreamBody>>),
}

type ResponseFuture = Pin<Box<dyn Future<Output = hyper::Result<Response<Incoming>>> + Send>>;

// === impl Sender ===

impl Sender {
    fn is_ready(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_ready(),
            Sender::Http2(s) => s.is_ready(),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::Http2(s) => s.is_closed(),
        }
    }

    fn send(&mut self, request: Request<UpstreamBody>) -> ResponseFuture {
        match self {
            Sender::Http1(s) => Box::pin(s.send_request(request)),
            Sender::Http2(s) => Box::pin(s.send_request(request)),
        }
    }
}

/// Runs one upstream connection to its end.
async fn drive<F: Future<Output = hyper::Result<()>>>(connection: F, addr: SocketAddr) {
    if let Err(error) = connection.await {
        debug!(upstream.addr = %addr, %error, "upstream connection ended with an error");
    }
}

/// Opens connections from the waypoint's own address when it listens on
/// one: the destination's ztunnel lets its waypoint in only from the
/// waypoint's workload address (see ztunnel's `authz::waypoint`), and on a
/// host with several addresses the kernel would otherwise pick any.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceConnector {
    pub source: Option<IpAddr>,
}

impl hbone::Connector for SourceConnector {
    fn connect(&self, addr: SocketAddr) -> hbone::ConnectFuture<'_> {
        let source = self.source;
        Box::pin(async move {
            let Some(ip) = source else {
                return TcpStream::connect(addr).await;
            };
            let socket = match ip {
                IpAddr::V4(_) => TcpSocket::new_v4()?,
                IpAddr::V6(_) => TcpSocket::new_v6()?,
            };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await
        })
    }
}

/// A byte stream to an endpoint: a tunnel or TCP.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<S: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for S {}

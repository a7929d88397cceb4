//! The upstream side: which endpoint gets a request (by the service's
//! `DestinationRule` policy, see `load`), and the HTTP connections to
//! endpoints, reused across requests (see `pool`).
//!
//! An endpoint that speaks HBONE is reached through a tunnel to its
//! ztunnel (`<endpoint-ip>:15008`, `:authority` `<endpoint-ip>:<port>`),
//! presenting the waypoint's certificate and expecting the endpoint's
//! identity; any other endpoint over plain TCP. On that stream the
//! waypoint speaks the request's own HTTP version (HTTP/2 stays HTTP/2, so
//! gRPC trailers survive), and keeps the connection for the next request:
//! HTTP/1 connections one request at a time, HTTP/2 ones shared, within
//! the service's `connectionPool` limits.
//!
//! [`Upstreams::send`] is one attempt; retries and timeouts wrap it (see
//! `attempts`), and so bound its wait for a connection too.
//!
//! An upgrade request (see `upgrade`) takes a connection as any HTTP/1
//! request does, but never gives it back: answered 101, the connection
//! becomes the upgraded stream, and the response carries an
//! [`UpgradedConnection`] in its extensions that keeps it counted against
//! the service's limits until that stream ends; answered otherwise, it
//! closes after the response.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hbone::Connector as _;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tracing::debug;
use workload::{Service, TunnelProtocol, Workload};

pub(crate) use super::body::UpstreamBody;
use super::load::{InFlight, Loads, Refusal};
use super::pool::{
    Checkout, ConnectionKey, ConnectionPool, Http1Connection, Lease, Slot, TcpOverflow, TcpSlot,
    UpgradedConnection,
};
use super::upgrade;
use super::{Candidates, CertRequest};
use crate::balance::{BackendPolicy, Limits};
use crate::metrics::ResponseFlag;

/// One endpoint chosen for a request.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) workload: Arc<Workload>,
    /// `<endpoint-ip>:<target-port>`.
    pub(crate) addr: SocketAddr,
    /// The service it was chosen for: whose connections (and limits on
    /// them) its requests use.
    pub(crate) service: Arc<str>,
    /// That service's `connectionPool` limits, as the policy of the
    /// choice said.
    pub(crate) limits: Limits,
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
    #[error(
        "no connection to {service} is free and {waiting} requests wait for one already: \
         raise the DestinationRule's `connectionPool.tcp.maxConnections` or \
         `http.http1MaxPendingRequests` if the service can take more"
    )]
    Overflow { service: Arc<str>, waiting: u32 },
}

// === impl UpstreamError ===

impl UpstreamError {
    /// Envoy's flag for it: the connection never came up (`UF`), it
    /// broke under the request (`UC`), or the connection pool was full
    /// (`UO`).
    pub(crate) fn response_flag(&self) -> ResponseFlag {
        match self {
            UpstreamError::Certificate { .. }
            | UpstreamError::Hbone { .. }
            | UpstreamError::Connect { .. } => ResponseFlag::UpstreamConnectFailure,
            UpstreamError::Http { .. } => ResponseFlag::UpstreamConnectionTermination,
            UpstreamError::Overflow { .. } => ResponseFlag::UpstreamOverflow,
        }
    }
}

/// Upstream HTTP connections, shared by every request of the waypoint.
#[derive(Debug)]
pub(crate) struct Upstreams {
    hbone: hbone::Pool,
    /// Opens plain TCP to endpoints (the HBONE pool has the same one).
    connector: SourceConnector,
    /// Connections kept for the next request, per service, within its
    /// limits.
    pool: Arc<ConnectionPool>,
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
            pool: Arc::default(),
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
        // On the stack, as `addrs` below: each attempt builds them.
        let mut candidates: Candidates<Endpoint> = service.with_key(|key| {
            endpoints
                .filter(|w| w.healthy)
                .filter_map(|w| {
                    let target = w.target_port(key, port)?;
                    let ip = *w.addresses.first()?;
                    Some(Endpoint {
                        workload: w.clone(),
                        addr: SocketAddr::new(ip, target),
                        service: service.hostname.clone(),
                        limits: policy.limits,
                    })
                })
                .collect()
        });
        // Envoy's `previous_hosts` predicate: a retry goes elsewhere when
        // it can, so that one bad endpoint of several is recoverable.
        if candidates.iter().any(|e| !tried.contains(&e.addr)) {
            candidates.retain(|e| !tried.contains(&e.addr));
        }
        let addrs: Candidates<SocketAddr> = candidates.iter().map(|e| e.addr).collect();
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

    /// A connection of `service`'s count for a TCP passthrough, held until
    /// it ends; refused at `limits`' `maxConnections` (see `pool`).
    pub(super) fn open_tcp(
        &self,
        service: &Arc<str>,
        limits: &Limits,
    ) -> Result<TcpSlot, TcpOverflow> {
        self.pool.open_tcp(service, limits)
    }

    /// Opens a byte stream to `endpoint`: a tunnel through its ztunnel, or
    /// TCP. For TCP passthrough, and under each new HTTP connection. `cert`
    /// (the waypoint's own) is fetched only for a tunnel.
    pub(crate) async fn connect(
        &self,
        endpoint: &Endpoint,
        cert: CertRequest<'_>,
    ) -> Result<Box<dyn Stream>, UpstreamError> {
        let addr = endpoint.addr;
        match endpoint.workload.protocol {
            TunnelProtocol::Hbone => {
                let cert = cert
                    .fetch()
                    .await
                    .map_err(|source| UpstreamError::Certificate { addr, source })?;
                let request = hbone::ConnectRequest {
                    source: cert,
                    destination: SocketAddr::new(addr.ip(), hbone::HBONE_PORT),
                    expected_identities: vec![endpoint.workload.identity.clone()],
                    authority: addr.to_string(),
                    headers: HeaderMap::new(),
                    early_data: bytes::Bytes::new(),
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
    /// of its service that is free, or on a new one, waiting for either
    /// when the service's limits say so, and returns the response head
    /// with its body still streaming. `cert` is fetched only to open a
    /// tunnel. `Overflow` when the line of waiting requests is full.
    pub(crate) async fn send(
        &self,
        endpoint: &Endpoint,
        cert: CertRequest<'_>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let addr = endpoint.addr;
        let http = |source| UpstreamError::Http { addr, source };
        let key = ConnectionKey {
            worker: hbone::current_worker(),
            addr,
            hbone_identity: (endpoint.workload.protocol == TunnelProtocol::Hbone)
                .then(|| endpoint.workload.identity.clone()),
            http2: request.version() == Version::HTTP_2,
        };
        let overflow = |waiting| UpstreamError::Overflow {
            service: endpoint.service.clone(),
            waiting,
        };
        let lease = match self
            .pool
            .checkout(&endpoint.service, &key, &endpoint.limits)
        {
            Checkout::Ready(lease) => lease,
            Checkout::Wait(waiting) => {
                debug!(
                    upstream.addr = %addr,
                    dst.service = %endpoint.service,
                    "waiting for a free upstream connection"
                );
                // `None` cannot happen (see `Waiting::lease`); were it to,
                // the request was refused a connection all the same.
                waiting.lease().await.ok_or_else(|| overflow(0))?
            }
            Checkout::Overflow { waiting } => return Err(overflow(waiting)),
        };
        match lease {
            Lease::Http1(connection) => self
                .send_http1(connection, &endpoint.limits, request)
                .await
                .map_err(http),
            Lease::Http2(mut sender) => sender.send_request(request).await.map_err(http),
            // Boxed: opening a connection (TLS, HBONE, the HTTP handshake)
            // is a large state machine that only the first requests to an
            // endpoint need; inline, it made every request's future larger.
            Lease::Open(slot) => Box::pin(self.open_and_send(endpoint, slot, cert, request)).await,
        }
    }

    /// Opens a connection counted by `slot` and sends `request` on it;
    /// the connection goes to the pool for the requests after it.
    async fn open_and_send(
        &self,
        endpoint: &Endpoint,
        slot: Slot,
        cert: CertRequest<'_>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let addr = endpoint.addr;
        let http = |source| UpstreamError::Http { addr, source };
        let key = slot.key().clone();
        let io = TokioIo::new(self.connect(endpoint, cert).await?);
        debug!(upstream.addr = %addr, http2 = key.endpoint.http2, "new upstream connection");
        if key.endpoint.http2 {
            let executor = CountedExecutor {
                slot: Arc::new(slot),
            };
            let slot = executor.slot.clone();
            let (sender, connection) = http2::handshake(executor, io).await.map_err(http)?;
            tokio::spawn(drive(connection, addr, slot));
            let mut sender = self.pool.add_http2(&key, sender, &endpoint.limits);
            sender.send_request(request).await.map_err(http)
        } else {
            let (mut sender, connection) = http1::handshake(io).await.map_err(http)?;
            // With upgrades: at a 101 the connection is handed to the
            // response (`hyper::upgrade::on`) instead of being closed.
            let slot = Arc::new(slot);
            tokio::spawn(drive(connection.with_upgrades(), addr, slot.clone()));
            sender.ready().await.map_err(http)?;
            let connection = Http1Connection::new(sender, &slot);
            self.send_http1(connection, &endpoint.limits, request)
                .await
                .map_err(http)
        }
    }

    /// Sends on an HTTP/1 connection that is ready, and puts it back in
    /// the pool for the next request, unless it has carried
    /// `maxRequestsPerConnection` requests, or the request asks for an
    /// upgrade: then it is let go, and hyper closes it when this response
    /// is done, or hands it over at a 101 (counted on by the
    /// [`UpgradedConnection`] in the response's extensions).
    fn send_http1(
        &self,
        mut connection: Http1Connection,
        limits: &Limits,
        request: Request<UpstreamBody>,
    ) -> impl Future<Output = hyper::Result<Response<Incoming>>> + use<> {
        // Only an upgrade still has them: every other request lost them
        // with its hop-by-hop headers (`request::prepare_upstream_head`).
        let upgrading = upgrade::is_upgrade(request.headers());
        let hold = upgrading.then(|| connection.hold_for_upgrade()).flatten();
        let (response, reusable) = connection.send(request, limits);
        if reusable && !upgrading {
            self.pool.put_back(connection);
        }
        async move {
            let mut response = response.await?;
            if let Some(hold) = hold
                && response.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                response.extensions_mut().insert::<UpgradedConnection>(hold);
            }
            Ok(response)
        }
    }
}

/// Runs one upstream connection to its end; `slot` counts it until then.
async fn drive<F, S>(connection: F, addr: SocketAddr, slot: S)
where
    F: Future<Output = hyper::Result<()>>,
{
    if let Err(error) = connection.await {
        debug!(upstream.addr = %addr, %error, "upstream connection ended with an error");
    }
    drop(slot);
}

/// Runs the tasks of an HTTP/2 connection (hyper drives the connection
/// and each request body on tasks of their own) holding the connection's
/// slot, so that it is counted until the last of them has ended, not only
/// until the pool lets go of its sender.
#[derive(Debug, Clone)]
struct CountedExecutor {
    slot: Arc<Slot>,
}

impl<F> hyper::rt::Executor<F> for CountedExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        let slot = self.slot.clone();
        tokio::spawn(async move {
            future.await;
            drop(slot);
        });
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

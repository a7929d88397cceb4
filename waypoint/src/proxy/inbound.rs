//! HBONE in (15008): TLS with the waypoint's current certificate, one
//! `CONNECT` per tunnel, then HTTP or TCP on the tunnel (see the module
//! doc of `proxy`).
//!
//! Drain: the listener stops accepting, each HBONE connection sends GOAWAY,
//! and each HTTP connection on a tunnel is shut down gracefully: requests
//! in flight finish, keep-alive connections close after them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use hbone::{ConnectHandler, InboundConnect, Rejection, Server, ServerConfig, Workers};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use identity::{Identity, WorkloadCert};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{Instrument, debug, debug_span, info, warn};
use workload::{Service, State};

use super::request::Downstream;
use super::sniff::{self, Prefixed, Protocol};
use super::{Inner, Open, Proxy};

/// Bytes read to tell HTTP from TCP before giving up and calling it TCP.
const SNIFF_LIMIT: usize = 64;

/// How long a tunnel may stay silent before it is taken for TCP whose
/// server speaks first. Long enough for a client's first write on a slow
/// network; Istio's old protocol detection used 100 ms and was often too
/// short.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_millis(500);

/// The server config of the certificate generation last seen.
#[derive(Debug, Default)]
pub struct TlsCache {
    current: Mutex<Option<(Arc<WorkloadCert>, Arc<rustls::ServerConfig>)>>,
}

// === impl TlsCache ===

impl TlsCache {
    /// The config presenting `cert`: the cached one while `cert` is the same
    /// certificate (the same `Arc`, as the manager hands out until rotation).
    pub fn config_for(
        &self,
        cert: Arc<WorkloadCert>,
    ) -> Result<Arc<rustls::ServerConfig>, identity::tls::TlsError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((cached, config)) = &*current
            && Arc::ptr_eq(cached, &cert)
        {
            return Ok(config.clone());
        }
        let config = Arc::new(identity::tls::server_config(&cert)?);
        *current = Some((cert, config.clone()));
        Ok(config)
    }
}

/// Hands each `CONNECT` to the proxy.
struct Handler(Arc<Inner>);

impl ConnectHandler for Handler {
    async fn handle(&self, request: InboundConnect) {
        self.0.clone().tunnel(request).await;
    }
}

// === impl Proxy ===

impl Proxy {
    /// Accepts HBONE connections until drain begins, each served on one of
    /// `workers` for its whole life.
    pub async fn serve(&self, listener: TcpListener, workers: &Workers) {
        let mut drain = self.inner.drain_signal();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = drain.wait_for(|d| *d) => return,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let inner = self.inner.clone();
                    let drain = drain.clone();
                    let served =
                        workers.serve(tcp, move |tcp| inner.serve_connection(tcp, peer, drain));
                    if let Err(error) = served {
                        warn!(%error, src.addr = %peer, "cannot hand an HBONE connection to a worker");
                    }
                }
                // Out of descriptors and the like: back off, don't spin.
                Err(error) => {
                    warn!(%error, "accepting an HBONE connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

// === impl Inner ===

impl Inner {
    async fn serve_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        drain: watch::Receiver<bool>,
    ) {
        let tls = match self.certs.fetch(&self.identity).await {
            Ok(cert) => self.tls.config_for(cert),
            Err(error) => {
                info!(%error, src.addr = %peer, "refusing an HBONE connection: no certificate yet");
                return;
            }
        };
        let tls = match tls {
            Ok(tls) => tls,
            Err(error) => {
                warn!(%error, "cannot build the TLS config of the waypoint's certificate");
                return;
            }
        };
        let server = Server::new(tls, Arc::new(Handler(self)), ServerConfig::default());
        server.serve_connection(tcp, peer, drain).await;
    }

    /// One `CONNECT`: find the service, answer, then serve what it carries.
    async fn tunnel(self: Arc<Self>, request: InboundConnect) {
        let span = debug_span!(
            "tunnel",
            src.addr = %request.peer_addr,
            src.identity = %request.peer_identity,
            authority = %request.authority,
        );
        async move {
            let Some((service, port)) = self.service_for(&request.authority) else {
                info!(
                    src.identity = %request.peer_identity,
                    authority = %request.authority,
                    "refusing a tunnel: the authority is not a VIP and port of a service that \
                     uses this waypoint"
                );
                request.reject(Rejection::BadRequest);
                return;
            };
            let source = self
                .mesh
                .snapshot()
                .workload_by_address(&self.network, request.peer_addr.ip())
                .cloned();
            let downstream = Arc::new(Downstream {
                peer_identity: request.peer_identity.clone(),
                peer_principal: request.peer_identity.to_string().into(),
                peer_addr: request.peer_addr,
                source,
                service,
                port,
                upgrade: Default::default(),
            });
            let mut tunnel = match request.accept() {
                Ok(tunnel) => tunnel,
                Err(error) => return debug!(%error, "the client went away before the 200"),
            };
            let _open = Open::new(self.clone());
            let mut prefix = BytesMut::with_capacity(SNIFF_LIMIT);
            let protocol = loop {
                if let Some(protocol) = sniff::classify(&prefix) {
                    break protocol;
                }
                if prefix.len() >= SNIFF_LIMIT {
                    break Protocol::Tcp;
                }
                let silent_so_far = prefix.is_empty();
                let read = tunnel.read_buf(&mut prefix);
                let read = if silent_so_far {
                    // A protocol whose server speaks first (SMTP, MySQL)
                    // sends nothing: after a while, it is TCP.
                    match tokio::time::timeout(FIRST_BYTE_TIMEOUT, read).await {
                        Ok(read) => read,
                        Err(_) => break Protocol::Tcp,
                    }
                } else {
                    read.await
                };
                match read {
                    Ok(0) if prefix.is_empty() => return,
                    Ok(0) => break Protocol::Tcp,
                    Ok(_) => {}
                    Err(error) => return debug!(%error, "tunnel closed while sniffing"),
                }
            };
            let stream = Prefixed::new(prefix.freeze(), tunnel);
            let serve = async {
                match protocol {
                    Protocol::Http1 | Protocol::Http2 => self.serve_http(stream, downstream).await,
                    Protocol::Tcp => self.pass_through(stream, &downstream).await,
                }
            };
            let mut closed = self.closed.subscribe();
            let closed = async move {
                let _ = closed.wait_for(|c| *c).await;
            };
            tokio::select! {
                () = serve => {}
                () = closed => debug!("tunnel closed: the drain deadline passed"),
            }
        }
        .instrument(span)
        .await;
    }

    /// The service whose VIP and port `authority` names, if this waypoint
    /// is that service's waypoint. Serving another service would let a
    /// client skip that service's own waypoint and its L7 policy, and
    /// reach its pods with this waypoint's identity, which their ztunnel
    /// may let in.
    fn service_for(&self, authority: &str) -> Option<(Arc<Service>, u16)> {
        let addr: SocketAddr = authority.parse().ok()?;
        let state = self.mesh.snapshot();
        let service = state.service_by_vip(&self.network, addr.ip())?;
        (serves(&state, service, &self.identity) && service.has_port(addr.port()))
            .then(|| (service.clone(), addr.port()))
    }

    /// HTTP/1.1 or HTTP/2 (hyper tells them apart by the preface) until the
    /// client closes, or drain shuts the connection down gracefully; then
    /// what hyper handed the connection to, if anything: the stream of a
    /// 101, until it ends (see `upgrade`).
    async fn serve_http(
        self: &Arc<Self>,
        stream: Prefixed<hbone::Tunnel>,
        downstream: Arc<Downstream>,
    ) {
        let inner = self.clone();
        let tunnel = downstream.clone();
        let service = service_fn(move |request| {
            let inner = inner.clone();
            let downstream = downstream.clone();
            // Boxed: on HTTP/2, hyper moves each request's future into a
            // task of its own, and tokio writes over it when the task
            // ends. The state machine of `handle` (fault delay, body
            // buffering, attempts and retries) is large, a box is a
            // pointer: 7% less CPU per request at a steady 1,000 requests
            // a second (docs/performance.md).
            Box::pin(async move {
                Ok::<_, std::convert::Infallible>(inner.handle(&downstream, request).await)
            })
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let mut drain = self.drain_signal();
        let draining = async move {
            let _ = drain.wait_for(|d| *d).await;
        };
        let finished = tokio::select! {
            result = connection.as_mut() => Some(result),
            () = draining => None,
        };
        let result = match finished {
            Some(result) => result,
            None => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            debug!(%error, "HTTP connection on the tunnel ended with an error");
        }
        // hyper may have handed the connection to an upgrade.
        tunnel.upgrade.finish().await;
    }
}

/// Whether the waypoint with `identity` is `service`'s waypoint: the
/// service's waypoint resolves to workloads with that identity.
pub(crate) fn serves(state: &State, service: &Service, identity: &Identity) -> bool {
    service.waypoint.as_ref().is_some_and(|waypoint| {
        state
            .gateway_workloads(waypoint)
            .iter()
            .any(|w| w.identity == *identity)
    })
}

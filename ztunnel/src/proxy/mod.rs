//! The data path for one local pod, as in Istio's in-pod mode: one [`Proxy`]
//! per enrolled pod, knowing the pod's workload (by uid), fetching the pod's
//! certificate from a [`CertSource`], and serving the listeners it is given.
//!
//! | listener | module | what arrives | what leaves |
//! | --- | --- | --- | --- |
//! | 15008 | `inbound` | HBONE from other proxies and waypoints | plaintext to the app |
//! | 15006 | `inbound_plaintext` | redirected plaintext from outside the mesh | plaintext to the app |
//! | 15001 | `outbound` | the pod's own redirected connections | HBONE, or plaintext passthrough |
//! | 15080 | `socks5` | explicit SOCKS5 `CONNECT`s | as 15001 |
//!
//! Life of a connection, in phases (every phase may end it, and every end
//! writes exactly one access-log event, `access_log`):
//! 1. *accept*: a listener hands over a TCP stream (or an HBONE stream);
//! 2. *destination*: `SO_ORIGINAL_DST`, the SOCKS5 request or the
//!    `:authority` says where the client wanted to go;
//! 3. *decide*: outbound resolves a [`route::Route`] from the state snapshot
//!    (a pure function); inbound checks that the destination is this pod and
//!    evaluates L4 policy;
//! 4. *connect*: to the app, to a peer over HBONE, or plaintext passthrough,
//!    under a deadline; only then is the client told "connected" (HBONE
//!    200, SOCKS5 success);
//! 5. *pipe*: `hbone::copy_bidirectional` until both halves closed.
//!
//! Every connection reads one state snapshot taken when it starts and never
//! waits on the control plane. Reasons for a refusal (which policy denied)
//! go to the access log, never to the peer.
//!
//! Connections to apps and peers are opened by an [`hbone::Connector`]: in a
//! pod it creates marked sockets in the pod's network namespace, in tests it
//! binds the pod's loopback address, so the proxy itself is the same in both.

mod access_log;
mod error;
mod inbound;
mod inbound_plaintext;
mod outbound;
pub mod route;
pub mod socks5;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hbone::{Connector, Pool, PoolConfig};
use identity::{CaClient, CertManager, CertManagerError, Identity, WorkloadCert};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::warn;

use crate::connections::ConnectionTracker;
use crate::state::{State, StateStore, Workload};

pub use self::error::ProxyError;
pub use self::route::{HboneRoute, PlaintextRoute, RoundRobin, Route, RouteError};

/// Istio's ports for the listeners a proxy serves.
pub const OUTBOUND_PORT: u16 = 15001;
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
pub const INBOUND_HBONE_PORT: u16 = hbone::HBONE_PORT;
pub const SOCKS5_PORT: u16 = 15080;

/// The future a [`CertSource`] returns.
pub type CertFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Arc<WorkloadCert>, CertManagerError>> + Send + 'a>>;

/// Where the proxy gets its pod's current certificate. Called once per
/// connection, so it must be cheap when the certificate is cached (as
/// [`CertManager::fetch`] is).
pub trait CertSource: Send + Sync + fmt::Debug + 'static {
    fn fetch<'a>(&'a self, identity: &'a Identity) -> CertFuture<'a>;

    /// Starts obtaining `identity`'s certificate in the background, so the
    /// first connection of a new pod does not wait for the CA.
    fn prefetch(&self, _identity: &Identity) {}

    /// Stops renewing `identity`'s certificate: no local pod needs it.
    fn forget(&self, _identity: &Identity) {}
}

impl<C: CaClient> CertSource for CertManager<C> {
    fn fetch<'a>(&'a self, identity: &'a Identity) -> CertFuture<'a> {
        Box::pin(CertManager::fetch(self, identity))
    }

    fn prefetch(&self, identity: &Identity) {
        CertManager::prefetch(self, identity);
    }

    fn forget(&self, identity: &Identity) {
        CertManager::forget(self, identity);
    }
}

/// Deadlines and the HBONE settings of both ends.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The HBONE client pool towards peers and waypoints.
    pub pool: PoolConfig,
    /// The HBONE server on 15008.
    pub hbone_server: hbone::ServerConfig,
    /// Deadline for a plaintext connect (to the app, or passthrough).
    pub connect_timeout: Duration,
    /// A SOCKS5 client must finish its handshake within this.
    pub socks5_handshake_timeout: Duration,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            pool: PoolConfig::default(),
            hbone_server: hbone::ServerConfig::default(),
            connect_timeout: Duration::from_secs(5),
            socks5_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// The proxy of one local pod. Cheap to clone; clones share the HBONE pool,
/// the TLS config cache and the load-balancing counters.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The pod this proxy serves, looked up in each snapshot (so a changed
    /// address or identity takes effect on the next connection).
    workload_uid: Arc<str>,
    state: Arc<StateStore>,
    certs: Arc<dyn CertSource>,
    /// Opens plaintext connections (to the app, passthrough); the pool has
    /// the same one for HBONE.
    connector: Arc<dyn Connector>,
    pool: Pool,
    /// The node's registry of open connections (and their metrics).
    connections: ConnectionTracker,
    /// Round-robin position per service, shared by 15001 and 15080.
    balancer: RoundRobin,
    /// The inbound TLS config of the current certificate generation.
    inbound_tls: inbound::TlsCache,
    config: ProxyConfig,
}

// === impl Proxy ===

impl Proxy {
    /// A proxy for the workload `workload_uid` (its xDS resource name).
    pub fn new(
        workload_uid: impl Into<Arc<str>>,
        state: Arc<StateStore>,
        certs: Arc<dyn CertSource>,
        connector: Arc<dyn Connector>,
        connections: ConnectionTracker,
        config: ProxyConfig,
    ) -> Self {
        let pool = Pool::with_connector(config.pool.clone(), connector.clone());
        Proxy {
            inner: Arc::new(Inner {
                workload_uid: workload_uid.into(),
                state,
                certs,
                connector,
                connections,
                pool,
                balancer: RoundRobin::default(),
                inbound_tls: inbound::TlsCache::default(),
                config,
            }),
        }
    }

    /// The uid of the workload this proxy serves.
    pub fn workload_uid(&self) -> &str {
        &self.inner.workload_uid
    }

    /// The HBONE client pool (for status pages and tests).
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Serves HBONE (15008) until `drain` turns true.
    pub async fn serve_inbound(&self, listener: TcpListener, drain: watch::Receiver<bool>) {
        let inner = self.inner.clone();
        let serve_drain = drain.clone();
        accept_loop(listener, drain, "inbound HBONE", move |tcp, peer| {
            inner.clone().serve_hbone(tcp, peer, serve_drain.clone())
        })
        .await;
    }

    /// Serves redirected plaintext inbound traffic (15006).
    pub async fn serve_inbound_plaintext(
        &self,
        listener: TcpListener,
        drain: watch::Receiver<bool>,
    ) {
        let inner = self.inner.clone();
        accept_loop(listener, drain, "inbound plaintext", move |tcp, peer| {
            inner.clone().inbound_plaintext(tcp, peer)
        })
        .await;
    }

    /// Serves the pod's redirected outbound traffic (15001).
    pub async fn serve_outbound(&self, listener: TcpListener, drain: watch::Receiver<bool>) {
        let inner = self.inner.clone();
        accept_loop(listener, drain, "outbound", move |tcp, peer| {
            inner.clone().outbound_captured(tcp, peer)
        })
        .await;
    }

    /// Serves SOCKS5 (15080), the explicit outbound path.
    pub async fn serve_socks5(&self, listener: TcpListener, drain: watch::Receiver<bool>) {
        let inner = self.inner.clone();
        accept_loop(listener, drain, "SOCKS5", move |tcp, peer| {
            inner.clone().socks5(tcp, peer)
        })
        .await;
    }
}

// === impl Inner ===

impl Inner {
    /// This pod's workload in `state`. A pod the control plane does not (or
    /// no longer) know has no identity to present or policy to apply, so
    /// its traffic fails closed.
    fn local_workload(&self, state: &State) -> Result<Arc<Workload>, ProxyError> {
        state
            .workload_by_uid(&self.workload_uid)
            .cloned()
            .ok_or_else(|| ProxyError::UnknownLocalWorkload(self.workload_uid.clone()))
    }

    async fn certificate(&self, identity: &Identity) -> Result<Arc<WorkloadCert>, ProxyError> {
        self.certs
            .fetch(identity)
            .await
            .map_err(ProxyError::Certificate)
    }

    /// A plaintext connection through the connector, under the deadline.
    async fn connect_plaintext(&self, addr: SocketAddr) -> Result<TcpStream, ProxyError> {
        let after = self.config.connect_timeout;
        let tcp = tokio::time::timeout(after, self.connector.connect(addr))
            .await
            .map_err(|_| ProxyError::ConnectTimeout { addr, after })?
            .map_err(|source| ProxyError::Connect { addr, source })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }
}

/// Accepts until `drain` turns true; each connection runs on its own task,
/// so one slow or hostile client never holds up another.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut drain: watch::Receiver<bool>,
    what: &'static str,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = drain.wait_for(|draining| *draining) => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // The proxy writes what arrives as it arrives: an HTTP/2
                // response relayed from a waypoint comes as a HEADERS and
                // a DATA frame, two small writes, and with Nagle the
                // second waits for the client's delayed ACK (40 ms).
                let _ = tcp.set_nodelay(true);
                tokio::spawn(handle(tcp, peer));
            }
            // Out of file descriptors and the like: back off briefly
            // instead of spinning on the error.
            Err(error) => {
                warn!(%error, listener = what, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every accepted connection is handed over with Nagle off, so that a
    /// relayed response in several small writes is not held back.
    #[tokio::test]
    async fn accepted_connections_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_drain_tx, drain) = watch::channel(false);
        let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
        let seen_tx = std::sync::Mutex::new(Some(seen_tx));
        tokio::spawn(accept_loop(listener, drain, "test", move |tcp, _| {
            if let Some(tx) = seen_tx.lock().unwrap().take() {
                let _ = tx.send(tcp.nodelay().unwrap());
            }
            async {}
        }));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(seen_rx.await.unwrap(), "TCP_NODELAY is off");
    }
}

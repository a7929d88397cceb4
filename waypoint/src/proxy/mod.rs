//! The waypoint's data path: HBONE in, HTTP (or TCP) through, HBONE out.
//!
//! # Life of a tunnel (`inbound`)
//!
//! 1. TLS with the waypoint's current certificate; the client's identity
//!    comes from its certificate.
//! 2. `CONNECT` to `<vip>:<port>`: the service holding that VIP must be
//!    known, use this waypoint (its waypoint resolves to workloads with
//!    the waypoint's identity) and expose the port, else 400.
//! 3. 200, then the first bytes decide: HTTP/1 or HTTP/2 are served by
//!    hyper on the tunnel, one request at a time or multiplexed; anything
//!    else is passed through as TCP to an endpoint of the service
//!    (`passthrough`), within the service's connection limit, with
//!    Istio's TCP metrics.
//!
//! # Life of a request (`request`)
//!
//! 0. the path normalized (`normalize`; 400 when malformed), so policy,
//!    routing and the app read one path;
//! 1. L7 authorization of the request as the client sent it (403);
//!    then the service's VirtualService faults (`crate::fault`): a delay,
//!    and an abort with the configured status;
//! 2. the route table of the service port: matched rule, or 404 when routes
//!    are attached and none matches, or the service itself without routes;
//! 3. the rule's filters (headers, redirect, rewrite), then a weighted
//!    backend and its filters (500 for an invalid backend);
//! 4. an endpoint of the backend by its `DestinationRule` policy
//!    (`load`: least request by default, outlier ejections skipped; 503
//!    `UH` when none, 503 `UO` over the request limit);
//! 5. one upstream attempt (`upstream`) on a reused connection of the
//!    service's pool (`pool`: within its connection limits, waiting for
//!    a connection, 503 `UO` when too many wait; 503 when it fails), or,
//!    when the rule retries and the body is kept (`body`), attempts to
//!    other endpoints within the rule's retries and the service's budget
//!    (`attempts`); the response streams back, with response header
//!    filters.
//!
//! Each request ends with one access-log event and one sample of Istio's
//! request metrics (`access_log`, `crate::metrics`), local answers
//! included.
//!
//! A WebSocket upgrade (`upgrade`) goes through the same phases in one
//! attempt; answered 101, the tunnel then carries its bytes both ways, and
//! the request ends when they stop.

mod access_log;
mod attempts;
mod body;
mod inbound;
pub(crate) use inbound::serves;
mod load;
mod mirror;
mod passthrough;
mod pool;
mod request;
mod sniff;
mod upgrade;
mod upstream;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use identity::{CaClient, CertManager, CertManagerError, Identity, WorkloadCert};
use tokio::sync::watch;
use workload::StateStore;

use crate::metrics::Metrics;
use crate::retry::RetryBudgets;
use crate::snapshot::ConfigStore;
use crate::trace::Tracer;

pub use inbound::TlsCache;
pub use upstream::SourceConnector;

/// One value per endpoint of a service, for one attempt: on the stack up
/// to 8 endpoints, where most services are.
pub(crate) type Candidates<T> = smallvec::SmallVec<[T; 8]>;

/// The future a [`CertSource`] returns.
pub type CertFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Arc<WorkloadCert>, CertManagerError>> + Send + 'a>>;

/// Where the waypoint gets its current certificate; cheap when cached, as
/// [`CertManager::fetch`] is.
pub trait CertSource: Send + Sync + fmt::Debug + 'static {
    fn fetch<'a>(&'a self, identity: &'a Identity) -> CertFuture<'a>;
}

impl<C: CaClient> CertSource for CertManager<C> {
    fn fetch<'a>(&'a self, identity: &'a Identity) -> CertFuture<'a> {
        Box::pin(CertManager::fetch(self, identity))
    }
}

/// The waypoint's certificate, fetched only if asked for: an upstream
/// attempt needs it only to open a tunnel, which most attempts do not
/// (they reuse a pooled connection), and fetching makes a boxed future.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CertRequest<'a> {
    source: &'a dyn CertSource,
    identity: &'a Identity,
}

impl<'a> CertRequest<'a> {
    pub(crate) fn new(source: &'a dyn CertSource, identity: &'a Identity) -> Self {
        CertRequest { source, identity }
    }

    pub(crate) fn fetch(self) -> CertFuture<'a> {
        self.source.fetch(self.identity)
    }
}

/// What the data path is built from.
#[derive(Debug)]
pub struct ProxyParts {
    /// Services, endpoints and identities (from `istio.workload.Address`).
    pub mesh: Arc<StateStore>,
    /// Routes and L7 policies.
    pub config: Arc<ConfigStore>,
    pub certs: Arc<dyn CertSource>,
    /// The waypoint's own identity, presented both ways.
    pub identity: Identity,
    /// The network whose VIPs the waypoint serves (Istio's `NETWORK`).
    pub network: Arc<str>,
    /// The address outbound connections come from (`None`: the kernel's
    /// choice).
    pub source: Option<std::net::IpAddr>,
    /// Turns true on drain: stop accepting, shut HTTP connections down
    /// gracefully.
    pub drain: watch::Receiver<bool>,
    /// Where each request's metrics go.
    pub metrics: Arc<Metrics>,
    /// Starts each request's trace; `None` when tracing is off.
    pub tracer: Option<Tracer>,
}

/// The data path, shared by every tunnel and request.
#[derive(Debug, Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mesh: Arc<StateStore>,
    config: Arc<ConfigStore>,
    certs: Arc<dyn CertSource>,
    identity: Identity,
    network: Arc<str>,
    /// Shared with mirrored requests, which outlive their request.
    upstreams: Arc<upstream::Upstreams>,
    /// One retry budget per backend service, for the rules that retry.
    retry_budgets: RetryBudgets,
    tls: TlsCache,
    metrics: Arc<Metrics>,
    tracer: Option<Tracer>,
    /// Counts open tunnels; drain waits for it to reach zero.
    open: watch::Sender<usize>,
    drain: watch::Receiver<bool>,
    /// Turns true when drain's deadline passed: every tunnel still open
    /// ends at once.
    closed: watch::Sender<bool>,
}

/// Held by each open tunnel; dropping it lets drain see the tunnel gone.
#[derive(Debug)]
struct Open(Arc<Inner>);

// === impl Proxy ===

impl Proxy {
    pub fn new(parts: ProxyParts) -> Self {
        Proxy {
            inner: Arc::new(Inner {
                mesh: parts.mesh,
                config: parts.config,
                certs: parts.certs,
                identity: parts.identity,
                network: parts.network,
                upstreams: {
                    let connector = upstream::SourceConnector {
                        source: parts.source,
                    };
                    let pool = hbone::Pool::with_connector(
                        hbone::PoolConfig::default(),
                        Arc::new(connector),
                    );
                    Arc::new(upstream::Upstreams::new(pool, connector))
                },
                retry_budgets: RetryBudgets::default(),
                tls: TlsCache::default(),
                metrics: parts.metrics,
                tracer: parts.tracer,
                open: watch::channel(0).0,
                drain: parts.drain,
                closed: watch::channel(false).0,
            }),
        }
    }

    /// Tunnels open right now.
    pub fn open_tunnels(&self) -> usize {
        *self.inner.open.borrow()
    }

    /// Ends every tunnel still open (the end of drain).
    pub fn close_all(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Resolves once no tunnel is open.
    pub async fn idle(&self) {
        let mut open = self.inner.open.subscribe();
        let _ = open.wait_for(|n| *n == 0).await;
    }
}

// === impl Inner ===

impl Inner {
    fn drain_signal(&self) -> watch::Receiver<bool> {
        self.drain.clone()
    }
}

// === impl Open ===

impl Open {
    fn new(inner: Arc<Inner>) -> Self {
        inner.open.send_modify(|n| *n += 1);
        Open(inner)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n = n.saturating_sub(1));
    }
}

//! The istiod-lite process: the pipeline, the CA, and the two ports.
//!
//! - **15012, gRPC over TLS**: delta ADS and `IstioCertificateService` on one
//!   port, as istiod serves them. The serving certificate is signed by the
//!   mesh root for `istiod.istio-system.svc` (and the other names in
//!   [`SERVING_NAMES`]); clients trust the root, which is also written to
//!   `<state_dir>/root-cert.pem` for them. No client certificate is asked
//!   for: proxies authenticate to the CA with bearer tokens, chosen by
//!   [`CaAuth`]: node bootstrap tokens (file mode) or service-account tokens
//!   the Kubernetes API server reviews (Kubernetes mode).
//! - **15014, HTTP**: `/ready`, `/metrics`, `/debug/config_dump`,
//!   `/debug/diagnostics`.
//!
//! Discovery streams are admitted only once the first full config is pushed
//! (see `gate`); the CA serves from the start.
//!
//! # Lifecycle
//!
//! [`Server::bind`] does everything that can fail at startup (CA, tokens,
//! serving certificate, both listeners) so that a misconfiguration is
//! reported before anything is served. [`Server::serve`] then runs until its
//! shutdown future completes, and shuts down in order: stop accepting on both
//! ports, end every discovery stream (`disconnect_all`; clients reconnect
//! elsewhere and keep their config meanwhile), let tonic drain for at most
//! [`DRAIN_TIMEOUT`], return. [`Server::run`] is the binary's entry point:
//! bind, start the config source, serve until SIGTERM or ctrl-c.

mod debug;
mod gate;
mod http;
mod metrics;
mod tls;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use identity::CaError;
use identity::tls::TlsError;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tracing::{info, warn};
use xds::{DeltaAdsServer, ResourceStore};

use crate::ca::{
    AuthError, Authenticator, CaConfig, CaService, CaStore, CaStoreError, Caller, NodeTokens,
    TokenReviewConfig, TokenReviewer,
};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineHandle};
use crate::sources::SourceEvent;

/// DNS names (and an IP) on the serving certificate: the in-cluster service
/// names ztunnel uses by default, our own name, and loopback for local runs.
pub const SERVING_NAMES: &[&str] = &[
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "istiod-lite",
    "localhost",
    "127.0.0.1",
];

/// Where clients find the mesh root, under the state directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

/// Lifetime of the serving certificate. It is reissued at every start; a
/// process running longer than this needs a restart (rotation in place is
/// not implemented yet).
const SERVING_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// How long open gRPC connections get to finish after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Source events queued before the source waits for the pipeline.
const SOURCE_QUEUE: usize = 1024;

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Root CA, node tokens and `root-cert.pem` live here.
    pub state_dir: PathBuf,
    /// Istio plug-in CA files (`ca-cert.pem`, ...), instead of a generated root.
    pub plugin_ca_dir: Option<PathBuf>,
    /// gRPC (xDS + CA) over TLS; Istio's port is 15012.
    pub grpc_addr: SocketAddr,
    /// HTTP (ready, metrics, debug); Istio's port is 15014.
    pub http_addr: SocketAddr,
    pub pipeline: PipelineConfig,
    pub ca: CaConfig,
    /// How CA callers prove who they are.
    pub auth: CaAuth,
}

/// How the CA authenticates its callers.
#[derive(Clone, Default)]
pub enum CaAuth {
    /// File mode: a ztunnel presents its node's bootstrap token, created in
    /// `<state_dir>/tokens/` for every node the config names.
    #[default]
    NodeTokens,
    /// Kubernetes mode: a caller presents its projected service-account
    /// token, reviewed by the API server behind `client`. No bootstrap
    /// tokens are created.
    Kubernetes {
        client: kube::Client,
        review: TokenReviewConfig,
    },
}

/// The authenticator [`CaAuth`] selects. An enum because
/// [`Authenticator`] returns `impl Future` and so cannot be a trait object.
/// Shared by the CA and the discovery gate: every caller of 15012
/// authenticates the same way.
#[derive(Debug, Clone)]
enum CaAuthenticator {
    NodeTokens(Arc<NodeTokens>),
    TokenReview(Arc<TokenReviewer>),
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    CaStore(#[from] CaStoreError),
    #[error("cannot issue the serving certificate: {0}")]
    ServingCert(#[source] CaError),
    #[error("cannot build the gRPC server's TLS config: {0}")]
    Tls(#[source] TlsError),
    #[error("cannot write the root certificate to {path}: {source}")]
    WriteRoot {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for {what}: {source} (is another istiod running there?)")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Grpc(#[source] tonic::transport::Error),
    #[error("cannot install the signal handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// A bound, not yet serving, control plane.
pub struct Server {
    grpc: TcpListener,
    http: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ads: DeltaAdsServer,
    ca: CaService<CaAuthenticator, Arc<crate::pipeline::WorkloadNodes>>,
    /// Discovery streams authenticate like CA calls.
    xds_auth: CaAuthenticator,
    pipeline: Pipeline,
    handle: PipelineHandle,
    http_state: Arc<http::HttpState>,
    /// The source's end of the event channel; cloned by [`Server::source_events`].
    events: mpsc::Sender<SourceEvent>,
    /// The pipeline's end, until `serve` starts it.
    events_rx: mpsc::Receiver<SourceEvent>,
    root_cert: PathBuf,
    /// What `root_cert` holds: the mesh root(s), PEM. Fixed for the life of
    /// the process (the CA is opened once).
    roots_pem: Arc<str>,
    /// The bootstrap tokens in file mode; `None` in Kubernetes mode.
    tokens: Option<Arc<NodeTokens>>,
    state_dir: PathBuf,
}

// === impl CaAuth ===

impl fmt::Debug for CaAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaAuth::NodeTokens => f.write_str("NodeTokens"),
            // kube::Client has no Debug; its config is not ours to print.
            CaAuth::Kubernetes { review, .. } => f
                .debug_struct("Kubernetes")
                .field("review", review)
                .finish_non_exhaustive(),
        }
    }
}

// === impl CaAuthenticator ===

impl Authenticator for CaAuthenticator {
    fn authenticate(
        &self,
        metadata: &MetadataMap,
    ) -> impl Future<Output = Result<Caller, AuthError>> + Send {
        match self {
            CaAuthenticator::NodeTokens(tokens) => Either::Left(tokens.authenticate(metadata)),
            CaAuthenticator::TokenReview(reviewer) => {
                Either::Right(reviewer.authenticate(metadata))
            }
        }
    }
}

// === impl Server ===

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("grpc", &self.grpc_addr())
            .field("http", &self.http_addr())
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the CA (and the tokens in file mode), issues the serving
    /// certificate, writes the root for clients and binds both ports.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let mesh = &config.pipeline.mesh;
        let ca_store = CaStore::open(
            &config.state_dir,
            &mesh.trust_domain,
            config.plugin_ca_dir.as_deref(),
        )?;
        let root_cert = config.state_dir.join(ROOT_CERT_FILE);
        let roots_pem: Arc<str> = ca_store.roots_pem().concat().into();
        write_root(&root_cert, &roots_pem)?;
        let (chain, key) = ca_store
            .ca()
            .issue_server_cert(SERVING_NAMES, SERVING_CERT_TTL)
            .map_err(ServerError::ServingCert)?;
        let tls_config =
            identity::tls::control_plane_server_config(chain, key).map_err(ServerError::Tls)?;
        let (authenticator, tokens) = match &config.auth {
            CaAuth::NodeTokens => {
                let tokens = Arc::new(NodeTokens::open(&config.state_dir, [] as [&str; 0])?);
                (CaAuthenticator::NodeTokens(tokens.clone()), Some(tokens))
            }
            CaAuth::Kubernetes { client, review } => {
                let reviewer =
                    TokenReviewer::new(client.clone(), &mesh.trust_domain, review.clone());
                (CaAuthenticator::TokenReview(Arc::new(reviewer)), None)
            }
        };

        let store = Arc::new(ResourceStore::new());
        let ads = DeltaAdsServer::new(store.clone());
        let (pipeline, handle) =
            Pipeline::new(config.pipeline.clone(), store.clone(), tokens.clone());
        let ca = CaService::new(
            ca_store.ca().clone(),
            authenticator.clone(),
            handle.nodes(),
            config.ca.clone(),
        );
        let registry = metrics::registry(metrics::Counters {
            xds: ads.stats(),
            ca: ca.stats(),
            pipeline: handle.clone(),
            store: store.clone(),
        });
        let http_state = Arc::new(http::HttpState {
            pipeline: handle.clone(),
            store,
            registry,
        });

        let grpc = listen("gRPC (xDS and CA)", config.grpc_addr).await?;
        let http = listen("HTTP (ready, metrics, debug)", config.http_addr).await?;
        let (events, events_rx) = mpsc::channel(SOURCE_QUEUE);
        Ok(Server {
            grpc,
            http,
            acceptor: tls::acceptor(tls_config),
            ads,
            ca,
            xds_auth: authenticator,
            pipeline,
            handle,
            http_state,
            events,
            events_rx,
            root_cert,
            roots_pem,
            tokens,
            state_dir: config.state_dir,
        })
    }

    /// The bound gRPC address (useful with port 0).
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc.local_addr().ok()
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr().ok()
    }

    /// Where the mesh root was written for clients.
    pub fn root_cert_path(&self) -> &Path {
        &self.root_cert
    }

    /// The mesh root(s), PEM, as written to [`Server::root_cert_path`]; on
    /// Kubernetes, published in every namespace (`root_cert`).
    pub fn roots_pem(&self) -> Arc<str> {
        self.roots_pem.clone()
    }

    /// Where a node's bootstrap token is (or will be) kept. In Kubernetes
    /// mode there are no bootstrap tokens: this is where file mode would keep
    /// it, and nothing is ever written there.
    pub fn token_path(&self, node: &str) -> PathBuf {
        match &self.tokens {
            Some(tokens) => tokens.token_path(node),
            // `NodeTokens`' layout under the state directory.
            None => self.state_dir.join("tokens").join(format!("{node}.token")),
        }
    }

    /// The channel a config source sends its events into. The pipeline ends
    /// (keeping the last pushed config) when every sender is dropped.
    pub fn source_events(&self) -> mpsc::Sender<SourceEvent> {
        self.events.clone()
    }

    /// Readiness, status and counters of the pipeline.
    pub fn pipeline(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// The delta ADS server (stats, `disconnect_all`).
    pub fn ads(&self) -> &DeltaAdsServer {
        &self.ads
    }

    /// Serves until `shutdown` completes, then shuts down gracefully.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let Server {
            grpc,
            http,
            acceptor,
            ads,
            ca,
            xds_auth,
            pipeline,
            handle,
            http_state,
            events,
            events_rx,
            ..
        } = self;
        // Our own sender must not keep the pipeline alive after the source
        // is gone; sources hold clones from `source_events`.
        drop(events);
        let pipeline = tokio::spawn(pipeline.run(events_rx));

        let (stop, stop_rx) = watch::channel(false);
        let incoming = tls::incoming(grpc, acceptor, stop_rx.clone());
        let http = tokio::spawn(http::serve(http, http_state, stop_rx.clone()));
        let gated = gate::GatedAds {
            inner: ads.clone(),
            auth: xds_auth,
            status: handle.watch_status(),
            stop: stop_rx.clone(),
        };
        let mut grpc_stopped = stop_rx;
        let grpc = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(gated.into_service())
                .add_service(ca.into_server())
                .serve_with_incoming_shutdown(ReceiverStream::new(incoming), async move {
                    stopped(&mut grpc_stopped).await;
                }),
        );
        info!("serving");

        shutdown.await;
        info!("shutting down: no new connections, closing discovery streams");
        let _ = stop.send(true);
        ads.disconnect_all();
        let result = match tokio::time::timeout(DRAIN_TIMEOUT, grpc).await {
            Ok(Ok(result)) => result.map_err(ServerError::Grpc),
            Ok(Err(join)) => {
                warn!(error = %join, "the gRPC server task failed");
                Ok(())
            }
            Err(_) => {
                warn!(timeout = ?DRAIN_TIMEOUT, "gRPC connections did not close in time; exiting anyway");
                Ok(())
            }
        };
        http.abort();
        pipeline.abort();
        info!("stopped");
        result
    }

    /// Binds, starts the config source (and whatever else runs beside the
    /// server: `source` gets the bound server, to take the event channel
    /// and the root from), and serves until SIGTERM or ctrl-c.
    pub async fn run<F, Fut>(config: ServerConfig, source: F) -> Result<(), ServerError>
    where
        F: FnOnce(&Server) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let server = Server::bind(config).await?;
        info!(
            grpc = ?server.grpc_addr(),
            http = ?server.http_addr(),
            root_cert = %server.root_cert_path().display(),
            "istiod-lite bound"
        );
        tokio::spawn(source(&server));
        let signal = shutdown_signal()?;
        server.serve(signal).await
    }
}

/// Completes on SIGTERM (what Kubernetes sends) or ctrl-c.
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send, ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signal)?;
    Ok(async move {
        let ctrl_c = async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                // Without ctrl-c handling, SIGTERM still stops us.
                warn!(%error, "cannot listen for ctrl-c");
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            () = ctrl_c => info!("interrupt received"),
        }
    })
}

/// Completes once shutdown has begun (or the server is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, not held across awaits.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts the next connection, or `None` once `shutdown` fires. Accept
/// errors (out of file descriptors and the like) are logged and retried
/// after a pause instead of spinning on an error that persists.
async fn accept_until_stopped(
    listener: &TcpListener,
    what: &'static str,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            () = stopped(shutdown) => return None,
            result = listener.accept() => match result {
                Ok(pair) => return Some(pair),
                Err(error) => {
                    tracing::warn!(%error, what, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

async fn listen(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// The root is public: readable by anyone, written whole (temporary name,
/// then rename) so a client never reads half a PEM.
fn write_root(path: &Path, pem: &str) -> Result<(), ServerError> {
    let error = |source| ServerError::WriteRoot {
        path: path.to_owned(),
        source,
    };
    let partial = path.with_extension("pem.partial");
    std::fs::write(&partial, pem).map_err(error)?;
    std::fs::rename(&partial, path).map_err(error)
}

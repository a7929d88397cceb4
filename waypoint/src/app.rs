//! The composition root: builds every part of the waypoint from its
//! settings, starts them, and runs the shutdown protocol.
//!
//! ```text
//!  XDS_ADDRESS ── DeltaClient ──▶ WaypointHandler ──┬─▶ StateStore (services, endpoints)
//!                                                   └─▶ ConfigStore (routes, L7 policies)
//!  CA_ADDRESS  ── GrpcCaClient ──▶ CertManager (the waypoint's own certificate)
//!  15008 HBONE ──▶ Proxy (reads the two snapshots) ──▶ HBONE / TCP to endpoints
//!                    ├─▶ Metrics (one sample per request)
//!                    └─▶ Tracer ──▶ SpanExporter ── OTLP/gRPC ──▶ OTEL_EXPORTER_OTLP_ENDPOINT
//!  15020 metrics: Istio's request metrics, Prometheus text
//!  15021 readiness: synced with the control plane and holding a certificate
//!  15000 admin (loopback): /config_dump, /certs, /logging
//! ```
//!
//! # Shutdown (drain)
//!
//! [`App::drain`]: readiness turns 503; the listener stops accepting; each
//! HBONE connection gets a GOAWAY and each HTTP connection a graceful
//! shutdown, so requests in flight finish; at the deadline every tunnel
//! still open is closed. Then the spans still queued are sent, briefly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hbone::Workers;
use identity::manager::CertState;
use identity::{CertManager, CertManagerConfig, Identity};
use prometheus_client::registry::Registry;
use proto::core::Node;
use telemetry::admin::metrics_page;
use telemetry::http::{self, StatusCode};
use telemetry::logging::LogControl;
use telemetry::otlp::{Attribute, ExporterConfig, ExporterStats, Origin, SpanExporter};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use workload::StateStore;
use xds::{
    CaClientConfig, ChannelConfig, ChannelError, ClientConfig, ClientStatus, ControlPlaneService,
    DeltaClient, GrpcCaClient, TokenSource,
};

use crate::admin::Admin;
use crate::config::{Args, ConfigError};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyParts};
use crate::snapshot::ConfigStore;
use crate::trace::Tracer;
use crate::xds::WaypointHandler;

/// How long drain gives the spans still queued to reach the collector.
const SPAN_FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// Why the waypoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Channel(#[from] ChannelError),
    #[error("cannot start tracing: {0}")]
    Tracing(#[from] telemetry::otlp::OtlpError),
    #[error("cannot start {count} worker threads for the data path: {source}")]
    Workers {
        count: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} for {what}: {source}: is another waypoint running?")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running waypoint.
#[derive(Debug)]
pub struct App {
    /// Turns true on drain.
    drain: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
    proxy: Proxy,
    mesh: Arc<StateStore>,
    config: Arc<ConfigStore>,
    identity: Identity,
    xds_status: watch::Receiver<ClientStatus>,
    hbone_addr: SocketAddr,
    stats_addr: SocketAddr,
    readiness_addr: SocketAddr,
    admin_addr: SocketAddr,
    drain_deadline: Duration,
    /// Sends the spans, when tracing is on; flushed at the end of drain.
    exporter: Option<SpanExporter>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The data path's threads; dropping the app ends them.
    _workers: Arc<Workers>,
}

// === impl App ===

impl App {
    /// Validates `args`, binds the listeners and starts everything; the
    /// first control-plane connection happens on the spawned client task.
    pub async fn start(args: &Args) -> Result<App, AppError> {
        App::start_with_logging(args, None).await
    }

    /// As [`App::start`], with the log filter `/logging` can change (the
    /// binary's; tests share one subscriber and leave it alone).
    pub async fn start_with_logging(
        args: &Args,
        logging: Option<LogControl>,
    ) -> Result<App, AppError> {
        args.validate()?;
        let identity = args.identity()?;
        let mesh = Arc::new(StateStore::new());
        let config = Arc::new(ConfigStore::new());

        let token = TokenSource::file(&args.auth_token);
        let mut ca_channel = ChannelConfig::new(
            ControlPlaneService::Ca,
            args.ca_address(),
            args.ca_root_ca(),
        );
        ca_channel.server_name = args.alt_ca_hostname.clone();
        let ca_config = CaClientConfig::new(ca_channel, token.clone());
        let certs = CertManager::new(GrpcCaClient::new(ca_config)?, CertManagerConfig::default());
        // Fetch at once and keep rotating: the first tunnel should not wait.
        certs.prefetch(&identity);

        let mut xds_channel = ChannelConfig::new(
            ControlPlaneService::Xds,
            &args.xds_address,
            &args.xds_root_ca,
        );
        xds_channel.server_name = args.alt_xds_hostname.clone();
        let node = Node {
            id: args.node_id(),
            cluster: args.cluster_id.clone(),
            ..Node::default()
        };
        let mut client_config = ClientConfig::new(node, WaypointHandler::type_urls());
        client_config.token = token;
        let handler = Arc::new(WaypointHandler::new(mesh.clone(), config.clone()));
        let client = DeltaClient::new(xds_channel.connect_lazy()?, client_config, handler);
        let xds_status = client.status();

        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let exporter = start_exporter(args, &mut registry)?;
        let tracer = exporter
            .as_ref()
            .map(|e| Tracer::new(e.queue().clone(), args.trace_sampling));

        let (drain, _) = watch::channel(false);
        let proxy = Proxy::new(ProxyParts {
            mesh: mesh.clone(),
            config: config.clone(),
            certs: Arc::new(certs.clone()),
            identity: identity.clone(),
            network: args.network.as_str().into(),
            // Connections to endpoints leave from the address the waypoint
            // listens on, its workload address.
            source: Some(args.hbone_addr.ip()).filter(|ip| !ip.is_unspecified()),
            drain: drain.subscribe(),
            metrics,
            tracer,
        });

        // HBONE connections are served on worker threads of their own, each
        // pinned to one (see `hbone::workers`); everything else stays on
        // the caller's runtime.
        let workers = Workers::start("waypoint-worker", args.worker_threads)
            .map(Arc::new)
            .map_err(|source| AppError::Workers {
                count: args.worker_threads,
                source,
            })?;
        let hbone_listener = listen("HBONE", args.hbone_addr).await?;
        let stats_listener = listen("metrics", args.stats_addr).await?;
        let readiness_listener = listen("readiness", args.readiness_addr).await?;
        let admin_listener = listen("admin", args.admin_addr).await?;
        let admin_addr = admin_listener.local_addr().unwrap_or(args.admin_addr);
        let hbone_addr = hbone_listener.local_addr().unwrap_or(args.hbone_addr);
        let stats_addr = stats_listener.local_addr().unwrap_or(args.stats_addr);
        let readiness_addr = readiness_listener
            .local_addr()
            .unwrap_or(args.readiness_addr);

        let mut tasks = Vec::new();
        let draining = Arc::new(AtomicBool::new(false));
        let status_certs = certs.clone();
        let admin = Admin {
            identity: identity.clone(),
            xds_address: args.xds_address.as_str().into(),
            xds_status: xds_status.clone(),
            mesh: mesh.clone(),
            config: config.clone(),
            certs: Arc::new(move || status_certs.status()),
            proxy: proxy.clone(),
            logging,
        };
        let readiness = Readiness {
            draining: draining.clone(),
            xds_status: xds_status.clone(),
            xds_address: args.xds_address.as_str().into(),
            certs,
            identity: identity.clone(),
        };
        // Admin stays up while draining, to watch the drain.
        tasks.push(tokio::spawn(http::serve(
            admin_listener,
            move |request| admin.handle(request),
            std::future::pending::<()>(),
        )));
        // Readiness answers 503 while draining; it stops with the app.
        tasks.push(tokio::spawn(http::serve(
            readiness_listener,
            move |request| readiness.handle(request),
            std::future::pending::<()>(),
        )));
        // Metrics stay up while draining: the last requests are counted
        // too, and a scrape may still fetch them.
        let registry = Arc::new(registry);
        tasks.push(tokio::spawn(http::serve(
            stats_listener,
            move |request| metrics_page(&registry, request),
            std::future::pending::<()>(),
        )));
        tasks.push(tokio::spawn(client.run()));
        let serving = proxy.clone();
        let serving_workers = workers.clone();
        tasks.push(tokio::spawn(async move {
            serving.serve(hbone_listener, &serving_workers).await;
        }));
        info!(
            identity = %identity,
            xds = %args.xds_address,
            hbone = %hbone_addr,
            "waypoint started"
        );
        Ok(App {
            drain,
            draining,
            proxy,
            mesh,
            config,
            identity,
            xds_status,
            hbone_addr,
            stats_addr,
            readiness_addr,
            admin_addr,
            drain_deadline: args.drain_deadline(),
            exporter,
            tasks,
            _workers: workers,
        })
    }

    pub fn hbone_addr(&self) -> SocketAddr {
        self.hbone_addr
    }

    /// Where `/metrics` is served.
    pub fn stats_addr(&self) -> SocketAddr {
        self.stats_addr
    }

    pub fn readiness_addr(&self) -> SocketAddr {
        self.readiness_addr
    }

    /// Where `/config_dump` is served.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Services and endpoints, as pushed.
    pub fn mesh(&self) -> &Arc<StateStore> {
        &self.mesh
    }

    /// Routes and L7 policies, as pushed. Tests also write it directly,
    /// with the functions the xDS handler uses.
    pub fn config(&self) -> &Arc<ConfigStore> {
        &self.config
    }

    pub fn xds_status(&self) -> watch::Receiver<ClientStatus> {
        self.xds_status.clone()
    }

    /// The shutdown protocol (see the module doc). Returns when every
    /// tunnel has ended, or at the deadline.
    pub async fn drain(mut self) {
        self.draining.store(true, Ordering::Relaxed);
        self.drain.send_replace(true);
        let open = self.proxy.open_tunnels();
        info!(open, deadline = ?self.drain_deadline, "draining");
        if tokio::time::timeout(self.drain_deadline, self.proxy.idle())
            .await
            .is_err()
        {
            warn!(
                open = self.proxy.open_tunnels(),
                "drain deadline passed; closing the tunnels still open"
            );
            self.proxy.close_all();
            // Closed tunnels unregister as their tasks wake; a moment.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.proxy.idle()).await;
        }
        if let Some(exporter) = self.exporter.take() {
            exporter.shutdown(SPAN_FLUSH_DEADLINE).await;
        }
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
        }
        info!("waypoint stopped");
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// `/healthz/ready`: ready once the control plane's config arrived and the
/// waypoint holds a certificate; not while draining.
struct Readiness {
    draining: Arc<AtomicBool>,
    xds_status: watch::Receiver<ClientStatus>,
    xds_address: Arc<str>,
    certs: CertManager<GrpcCaClient>,
    identity: Identity,
}

impl Readiness {
    fn handle(&self, request: &http::Request<()>) -> http::Response<String> {
        if request.uri().path() != "/healthz/ready" {
            return http::text(StatusCode::NOT_FOUND, "readiness is at /healthz/ready\n");
        }
        match self.readiness() {
            Ok(()) => http::text(StatusCode::OK, "ready\n"),
            Err(reason) => http::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        }
    }

    fn readiness(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining".into());
        }
        if !self.xds_status.borrow().synced {
            return Err(format!(
                "no configuration received from the control plane at {} yet",
                self.xds_address
            ));
        }
        let holds_cert = self.certs.status().iter().any(|c| {
            c.identity == self.identity
                && c.cert.is_some()
                && matches!(c.state, CertState::Available | CertState::Failed { .. })
        });
        if !holds_cert {
            return Err(format!("no certificate for {} yet", self.identity));
        }
        Ok(())
    }
}

/// The span exporter, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, with its
/// counters on the metrics page.
fn start_exporter(args: &Args, registry: &mut Registry) -> Result<Option<SpanExporter>, AppError> {
    let Some(endpoint) = args.otlp_endpoint() else {
        return Ok(None);
    };
    let stats = ExporterStats::default();
    stats.register(registry);
    let origin = Origin {
        resource: vec![Attribute::new("service.name", args.trace_service_name())],
        scope_name: "waypoint".into(),
        scope_version: env!("CARGO_PKG_VERSION").into(),
    };
    let exporter = SpanExporter::start(ExporterConfig::new(endpoint), origin, stats)?;
    info!(
        endpoint,
        sampling = %args.trace_sampling,
        service.name = %args.trace_service_name(),
        "tracing: spans go to the OTLP collector"
    );
    Ok(Some(exporter))
}

async fn listen(what: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { what, addr, source })
}

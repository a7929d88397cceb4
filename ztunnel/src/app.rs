//! The composition root: builds every part of ztunnel from its settings,
//! starts them, and runs the shutdown protocol.
//!
//! The control runtime (one thread) runs the xDS and CA clients, the pod
//! manager and the status servers; the data path's worker threads
//! (`ZTUNNEL_WORKER_THREADS`, one single-threaded runtime each) run every
//! pod's listeners and connections, each pod on one of them
//! (`pods::DataThreads`), so a slow status page or a large push never
//! delays a byte.
//!
//! ```text
//!  XDS_ADDRESS ── DeltaClient ──▶ StateHandler ──▶ StateStore ──┬─▶ PodManager ─▶ Proxy per pod
//!  CA_ADDRESS  ── GrpcCaClient ──▶ CertManager ─────────────────┤        (listeners, rules)
//!                                                                └─▶ re-check open connections
//!  15000 admin, 15020 metrics, 15021 readiness ◀── snapshots of all of the above
//! ```
//!
//! # Shutdown (drain)
//!
//! [`App::drain`]: readiness turns 503; every pod's listeners stop accepting
//! and its HBONE connections get a GOAWAY (streams in flight continue);
//! open connections get until the deadline to finish; whatever is still
//! open then is closed. Capture rules stay (see `pods`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use identity::{CertManager, CertManagerConfig};
use prometheus_client::registry::Registry;
use proto::core::Node;
use telemetry::logging::LogControl;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use xds::{
    CaClientConfig, ChannelConfig, ChannelError, ClientConfig, ClientStatus, ControlPlaneService,
    DeltaClient, GrpcCaClient, TokenSource,
};

use crate::admin::Admin;
use crate::capture::Redirection;
use crate::config::{Args, Capture, ConfigError};
use crate::connections::ConnectionTracker;
use crate::metrics::Metrics;
use crate::pods::{CaptureMode, DataThreads, PodDirectory, PodManager, ProxyParts};
use crate::proxy::{CertSource, ProxyConfig};
use crate::state::StateStore;
use crate::xds::StateHandler;

/// Why ztunnel could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Channel(#[from] ChannelError),
    #[error("cannot listen on {addr} for the {what} server: {source}: is another ztunnel running?")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running ztunnel.
#[derive(Debug)]
pub struct App {
    /// Turns true on drain: pods stop accepting, HBONE connections GOAWAY.
    drain: watch::Sender<bool>,
    /// Turns true when the status servers should stop (after drain).
    stop_servers: watch::Sender<bool>,
    draining: Arc<AtomicBool>,
    connections: ConnectionTracker,
    state: Arc<StateStore>,
    pods: PodDirectory,
    xds_status: watch::Receiver<ClientStatus>,
    admin_addr: SocketAddr,
    stats_addr: SocketAddr,
    readiness_addr: SocketAddr,
    drain_deadline: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

// === impl App ===

impl App {
    /// Validates `args`, binds the status servers and starts everything.
    /// Nothing is sent to the control plane before this returns; the first
    /// connection attempt happens on the spawned client task.
    ///
    /// Call it on the control runtime: the control-plane clients, the pod
    /// manager and the status servers run there; every pod's listeners and
    /// connections run on `data`. (Tests pass their own runtime for both.)
    pub async fn start(
        args: &Args,
        logging: Option<LogControl>,
        data: DataThreads,
    ) -> Result<App, AppError> {
        args.validate()?;
        let state = Arc::new(StateStore::new());
        let metrics = Arc::new(Metrics::default());
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let connections = ConnectionTracker::new(metrics.clone());

        let token = TokenSource::file(&args.auth_token);
        let mut ca_channel = ChannelConfig::new(
            ControlPlaneService::Ca,
            args.ca_address(),
            args.ca_root_ca(),
        );
        ca_channel.server_name = args.alt_ca_hostname.clone();
        let mut ca_config = CaClientConfig::new(ca_channel, token.clone());
        ca_config.ttl = args.secret_ttl;
        let cert_manager =
            CertManager::new(GrpcCaClient::new(ca_config)?, CertManagerConfig::default());
        let status_manager = cert_manager.clone();
        let certs: Arc<dyn CertSource> = Arc::new(cert_manager);

        let mut xds_channel = ChannelConfig::new(
            ControlPlaneService::Xds,
            &args.xds_address,
            &args.xds_root_ca,
        );
        xds_channel.server_name = args.alt_xds_hostname.clone();
        let node = Node {
            id: args.node_id(),
            ..Node::default()
        };
        let mut client_config = ClientConfig::new(node, StateHandler::type_urls());
        client_config.token = token;
        let handler = Arc::new(StateHandler::new(state.clone()));
        let client = DeltaClient::new(xds_channel.connect_lazy()?, client_config, handler);
        let xds_status = client.status();

        let mode = match args.capture {
            Capture::Netns => CaptureMode::Netns {
                dir: args.netns_dir.clone(),
                redirection: Redirection {
                    mark: args.mark,
                    ..Redirection::default()
                },
            },
            Capture::Explicit => CaptureMode::Explicit,
        };
        let parts = ProxyParts {
            state: state.clone(),
            certs,
            connections: connections.clone(),
            config: ProxyConfig::default(),
            data,
        };
        let manager = PodManager::new(args.node_name.as_str(), mode, parts, metrics);
        let pods = manager.directory();

        let (drain, _) = watch::channel(false);
        let (stop_servers, _) = watch::channel(false);
        let draining = Arc::new(AtomicBool::new(false));
        let admin = Admin {
            node: args.node_name.as_str().into(),
            xds_address: args.xds_address.as_str().into(),
            xds_status: xds_status.clone(),
            state: state.clone(),
            pods: pods.clone(),
            certs: Arc::new(move || status_manager.status()),
            connections: connections.clone(),
            logging,
            registry: Arc::new(registry),
        };
        let admin_listener = listen("admin", args.admin_addr).await?;
        let stats_listener = listen("metrics", args.stats_addr).await?;
        let readiness_listener = listen("readiness", args.readiness_addr).await?;
        let (admin_addr, stats_addr, readiness_addr) = (
            local_addr(&admin_listener, args.admin_addr),
            local_addr(&stats_listener, args.stats_addr),
            local_addr(&readiness_listener, args.readiness_addr),
        );

        let mut tasks = Vec::new();
        let serve = |listener, handler: fn(&Admin, &_) -> _| {
            let admin = admin.clone();
            let mut stop = stop_servers.subscribe();
            tokio::spawn(telemetry::http::serve(
                listener,
                move |request| handler(&admin, request),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ))
        };
        tasks.push(serve(admin_listener, Admin::handle_admin));
        tasks.push(serve(stats_listener, Admin::handle_stats));
        let ready_flag = draining.clone();
        let ready_admin = admin.clone();
        let mut stop = stop_servers.subscribe();
        tasks.push(tokio::spawn(telemetry::http::serve(
            readiness_listener,
            move |request| {
                if ready_flag.load(Ordering::Relaxed) {
                    return telemetry::http::text(
                        telemetry::http::StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: draining\n",
                    );
                }
                ready_admin.handle_readiness(request)
            },
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));

        tasks.push(tokio::spawn(client.run()));
        tasks.push(tokio::spawn(
            manager.run(drain.subscribe(), xds_status.clone()),
        ));
        tasks.push(tokio::spawn(revalidate_on_change(
            state.clone(),
            connections.clone(),
            drain.subscribe(),
        )));
        info!(
            node = %args.node_name,
            xds = %args.xds_address,
            admin = %admin_addr,
            capture = ?args.capture,
            "ztunnel started"
        );
        Ok(App {
            drain,
            stop_servers,
            draining,
            connections,
            state,
            pods,
            xds_status,
            admin_addr,
            stats_addr,
            readiness_addr,
            drain_deadline: args.drain_deadline,
            tasks,
        })
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn stats_addr(&self) -> SocketAddr {
        self.stats_addr
    }

    pub fn readiness_addr(&self) -> SocketAddr {
        self.readiness_addr
    }

    pub fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    pub fn connections(&self) -> &ConnectionTracker {
        &self.connections
    }

    pub fn pods(&self) -> &PodDirectory {
        &self.pods
    }

    pub fn xds_status(&self) -> watch::Receiver<ClientStatus> {
        self.xds_status.clone()
    }

    /// The shutdown protocol (see the module doc). Returns when every
    /// connection has ended, or at the deadline after closing the rest.
    pub async fn drain(mut self) {
        self.draining.store(true, Ordering::Relaxed);
        self.drain.send_replace(true);
        let open = self.connections.count();
        info!(open, deadline = ?self.drain_deadline, "draining");
        if tokio::time::timeout(self.drain_deadline, self.connections.idle())
            .await
            .is_err()
        {
            let closed = self.connections.close_all("ztunnel is shutting down");
            warn!(
                closed,
                "drain deadline passed; closing the connections still open"
            );
            // Revoked pipes unregister as their tasks wake; give them a moment.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.connections.idle()).await;
        }
        self.stop_servers.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
        }
        info!("ztunnel stopped");
    }
}

impl Drop for App {
    /// Dropping without draining stops everything at once: the pod
    /// manager's task ends, which drops every pod's stop switch and so ends
    /// its listeners.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Closes open connections that a policy change no longer allows.
async fn revalidate_on_change(
    state: Arc<StateStore>,
    connections: ConnectionTracker,
    mut drain: watch::Receiver<bool>,
) {
    let mut updates = state.subscribe();
    loop {
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = drain.wait_for(|d| *d) => return,
        }
        let closed = connections.revalidate(&state.snapshot());
        if closed > 0 {
            info!(
                closed,
                "policy change closed connections it no longer allows"
            );
        }
    }
}

async fn listen(what: &'static str, addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { what, addr, source })
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

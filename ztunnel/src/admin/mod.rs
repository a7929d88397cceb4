//! ztunnel's status servers: admin (15000, loopback only), Prometheus
//! metrics (15020) and readiness (15021). The JSON they serve is a contract
//! with `meshctl ztunnel`, written down in `docs/ztunnel-admin.md`.
//!
//! Every page is computed from snapshots (the state store, the pod
//! directory, the cert manager's status, the connection tracker) when asked
//! for; nothing here holds a lock the data path waits on for longer than a
//! copy of a list.

use std::sync::Arc;

use identity::manager::CertStatus;
use prometheus_client::registry::Registry;
use serde_json::json;
use telemetry::admin::{CertView, ControlPlaneView, logging_page, metrics_page, pretty};
use telemetry::http::{self, Method, Request, Response, StatusCode};
use telemetry::logging::LogControl;
use tokio::sync::watch;
use xds::ClientStatus;

use crate::connections::ConnectionTracker;
use crate::pods::PodDirectory;
use crate::state::StateStore;
pub use telemetry::admin::rfc3339;

/// The certificate status source (the cert manager, whatever its CA client).
pub type CertStatusFn = Arc<dyn Fn() -> Vec<CertStatus> + Send + Sync>;

/// What the status pages read.
#[derive(Clone)]
pub struct Admin {
    pub node: Arc<str>,
    /// The configured control plane address, as shown.
    pub xds_address: Arc<str>,
    pub xds_status: watch::Receiver<ClientStatus>,
    pub state: Arc<StateStore>,
    pub pods: PodDirectory,
    pub certs: CertStatusFn,
    pub connections: ConnectionTracker,
    /// `None` when the process did not install a reloadable subscriber.
    pub logging: Option<LogControl>,
    pub registry: Arc<Registry>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

// === impl Admin ===

impl Admin {
    /// `/config_dump`.
    pub fn config_dump(&self) -> serde_json::Value {
        let state = self.state.snapshot();
        let mut workloads: Vec<_> = state.workloads().collect();
        workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
        let mut services: Vec<_> = state.services().collect();
        services.sort_by_key(|s| s.key());
        let mut policies: Vec<_> = state.policies().collect();
        policies.sort_by_key(|p| p.key());
        json!({
            "node": &*self.node,
            "control_plane": self.control_plane(),
            "pods": self.pods.list(),
            "workloads": workloads,
            "services": services,
            "policies": policies,
            "certificates": self.certificates(),
            "connections": self.connections.list(),
        })
    }

    fn control_plane(&self) -> ControlPlaneView {
        ControlPlaneView::new(&self.xds_address, &self.xds_status.borrow())
    }

    fn certificates(&self) -> Vec<CertView> {
        (self.certs)().iter().map(CertView::from).collect()
    }

    /// Ready once the first config arrived and every local pod is captured.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.xds_status.borrow().synced {
            return Err(format!(
                "no configuration received from the control plane at {} yet",
                self.xds_address
            ));
        }
        if !self.pods.caught_up() {
            return Err("the local pods of the first configuration are not set up yet".to_owned());
        }
        if !self.pods.all_captured() {
            let failed: Vec<String> = self
                .pods
                .list()
                .into_iter()
                .filter_map(|p| p.error.map(|e| format!("{}/{}: {e}", p.namespace, p.name)))
                .collect();
            return Err(format!("pods not captured yet: {}", failed.join("; ")));
        }
        Ok(())
    }

    /// The admin server's routes.
    pub fn handle_admin(&self, request: &Request<()>) -> Response<String> {
        let method = request.method();
        match (method, request.uri().path()) {
            (&Method::GET, "/config_dump") => pretty(&self.config_dump()),
            (&Method::GET, "/certs") => pretty(&self.certificates()),
            (&Method::GET, "/connections") => pretty(&self.connections.list()),
            (&Method::GET | &Method::POST, "/logging") => self.logging(request),
            (&Method::GET, "/") => http::text(
                StatusCode::OK,
                "ztunnel admin: /config_dump /certs /connections /logging[?level=<filter>]\n",
            ),
            (_, path) => http::text(
                StatusCode::NOT_FOUND,
                format!(
                    "no admin page {path}: try /config_dump, /certs, /connections or /logging\n"
                ),
            ),
        }
    }

    fn logging(&self, request: &Request<()>) -> Response<String> {
        logging_page(self.logging.as_ref(), request)
    }

    /// The metrics server's routes.
    pub fn handle_stats(&self, request: &Request<()>) -> Response<String> {
        metrics_page(&self.registry, request)
    }

    /// The readiness server's routes.
    pub fn handle_readiness(&self, request: &Request<()>) -> Response<String> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(pods: PodDirectory) -> Admin {
        let (_, xds_status) = watch::channel(crate::pods::tests::status(true));
        Admin {
            node: "node-x".into(),
            xds_address: "https://istiod:15012".into(),
            xds_status,
            state: Arc::new(StateStore::new()),
            pods,
            certs: Arc::new(Vec::new),
            connections: ConnectionTracker::new(Arc::default()),
            logging: None,
            registry: Arc::default(),
        }
    }

    #[test]
    fn not_ready_until_the_pod_manager_has_set_up_the_first_config() {
        // Synced, and no pod in the list is failing, yet the manager has
        // not gone over the config: an empty list proves nothing.
        let pods = PodDirectory::default();
        let admin = admin(pods.clone());
        let error = admin.readiness().unwrap_err();
        assert!(error.contains("not set up yet"), "{error}");

        pods.set_caught_up();
        assert_eq!(admin.readiness(), Ok(()));
    }
}

//! The waypoint's admin server (15000, loopback only, as ztunnel's):
//! `/config_dump`, `/certs`, `/logging`. It answers "what does this
//! waypoint know": which services it serves, with their endpoints, the
//! HTTPRoutes and L7 policies in force for each, its certificate and its
//! control-plane connection.
//!
//! Every page is computed from the snapshots the data path reads (the
//! mesh state and the waypoint config), when asked for; nothing here holds
//! a lock the data path waits on.

use std::sync::Arc;

use identity::Identity;
use identity::manager::CertStatus;
use serde::Serialize;
use serde_json::json;
use telemetry::admin::{CertView, ControlPlaneView, logging_page, pretty};
use telemetry::http::{self, Method, Request, Response, StatusCode};
use telemetry::logging::LogControl;
use tokio::sync::watch;
use workload::{Service, State, StateStore};
use xds::ClientStatus;

use crate::authz::Action;
use crate::proxy::{Proxy, serves};
use crate::route::ServiceKey;
use crate::snapshot::{ConfigStore, WaypointConfig};

/// The certificate status source (the cert manager, whatever its CA client).
pub type CertStatusFn = Arc<dyn Fn() -> Vec<CertStatus> + Send + Sync>;

/// What the admin pages read.
#[derive(Clone)]
pub struct Admin {
    pub identity: Identity,
    /// The configured control plane address, as shown.
    pub xds_address: Arc<str>,
    pub xds_status: watch::Receiver<ClientStatus>,
    pub mesh: Arc<StateStore>,
    pub config: Arc<ConfigStore>,
    pub certs: CertStatusFn,
    pub proxy: Proxy,
    /// `None` when the process did not install a reloadable subscriber.
    pub logging: Option<LogControl>,
}

/// One service this waypoint serves, in `/config_dump`.
#[derive(Debug, Serialize)]
struct ServiceView<'a> {
    hostname: &'a str,
    namespace: &'a str,
    /// `<name> <address>` of each endpoint, healthy or not.
    endpoints: Vec<String>,
    /// The HTTPRoutes attached to each port that has any.
    routes: Vec<PortRoutes>,
    /// `<namespace>/<name> <ACTION>[ dry-run]` of each L7 policy.
    policies: Vec<String>,
}

#[derive(Debug, Serialize)]
struct PortRoutes {
    port: u16,
    /// `<namespace>/<name> (<n> rules)`, in the order given.
    routes: Vec<String>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

// === impl Admin ===

impl Admin {
    /// `/config_dump`.
    pub fn config_dump(&self) -> serde_json::Value {
        let state = self.mesh.snapshot();
        let config = self.config.snapshot();
        let services = served_services(&state, &self.identity);
        let services: Vec<ServiceView<'_>> = services
            .iter()
            .map(|service| service_view(&state, &config, service))
            .collect();
        json!({
            "identity": self.identity.to_string(),
            "control_plane": ControlPlaneView::new(&self.xds_address, &self.xds_status.borrow()),
            "certificates": self.certificates(),
            "tunnels_open": self.proxy.open_tunnels(),
            "services": services,
        })
    }

    fn certificates(&self) -> Vec<CertView> {
        (self.certs)().iter().map(CertView::from).collect()
    }

    /// The admin server's routes.
    pub fn handle(&self, request: &Request<()>) -> Response<String> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/config_dump") => pretty(&self.config_dump()),
            (&Method::GET, "/certs") => pretty(&self.certificates()),
            (&Method::GET | &Method::POST, "/logging") => {
                logging_page(self.logging.as_ref(), request)
            }
            (&Method::GET, "/") => http::text(
                StatusCode::OK,
                "waypoint admin: /config_dump /certs /logging[?level=<filter>]\n",
            ),
            (_, path) => http::text(
                StatusCode::NOT_FOUND,
                format!("no admin page {path}: try /config_dump, /certs or /logging\n"),
            ),
        }
    }
}

/// The services whose waypoint resolves to workloads with this waypoint's
/// identity (the ones its HBONE listener accepts), by hostname.
fn served_services(state: &State, identity: &Identity) -> Vec<Arc<Service>> {
    let mut served: Vec<Arc<Service>> = state
        .services()
        .filter(|service| serves(state, service, identity))
        .cloned()
        .collect();
    served.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    served
}

fn service_view<'a>(
    state: &State,
    config: &WaypointConfig,
    service: &'a Service,
) -> ServiceView<'a> {
    let mut endpoints: Vec<String> = state
        .endpoints(service)
        .map(|w| {
            let address = w.addresses.first().map(ToString::to_string);
            let health = if w.healthy { "" } else { " (unhealthy)" };
            format!("{} {}{health}", w.name, address.as_deref().unwrap_or("-"))
        })
        .collect();
    endpoints.sort();
    let routes = service
        .ports
        .iter()
        .filter_map(|&(port, _)| {
            let key = ServiceKey {
                hostname: service.hostname.clone(),
                port,
            };
            let table = config.routes(&key).filter(|t| !t.is_empty())?;
            let routes = table
                .routes()
                .iter()
                .map(|r| format!("{}/{} ({} rules)", r.namespace, r.name, r.rules.len()))
                .collect();
            Some(PortRoutes { port, routes })
        })
        .collect();
    let policies = config
        .policies(&service.hostname)
        .map(|p| {
            p.policies
                .iter()
                .map(|policy| {
                    let action = match policy.action {
                        Action::Allow => "ALLOW",
                        Action::Deny => "DENY",
                        Action::Audit => "AUDIT",
                    };
                    let dry_run = if policy.dry_run { " dry-run" } else { "" };
                    format!("{} {action}{dry_run}", policy.name)
                })
                .collect()
        })
        .unwrap_or_default();
    ServiceView {
        hostname: &service.hostname,
        namespace: &service.namespace,
        endpoints,
        routes,
        policies,
    }
}

//! Waypoint deployment on Kubernetes: for each `Gateway` of class
//! `istio-waypoint`, istiod-lite creates and owns the waypoint's
//! `ServiceAccount`, `Deployment` and `Service`, and reports on the
//! Gateway's status, as Istio's gateway deployment controller does. Without
//! Kubernetes (the file source, the local mesh) nobody runs this: `meshctl
//! waypoint apply` starts the waypoint process itself.
//!
//! The split is the crate's usual one:
//!
//! - `desired` (pure): a Gateway plus [`WaypointSettings`] to the three
//!   objects, or a [`WaypointProblem`] saying what in the Gateway is wrong.
//! - `status` (pure): what the Gateway's `status` should say after a
//!   reconcile, keeping each condition's transition time while its status
//!   holds, so that a reconcile that changes nothing writes nothing new.
//! - `controller`: the kube-rs `Controller` that watches Gateways (and the
//!   objects it owns, so a deleted Deployment comes back), server-side
//!   applies the three objects and the status, and retries failures with
//!   per-Gateway exponential backoff.
//!
//! Every object carries an owner reference to its Gateway with
//! `controller: true`, so Kubernetes garbage collection removes them when
//! the Gateway goes: there is no delete path here to get wrong.

mod controller;
mod desired;
mod status;

pub(crate) use self::controller::{Retries, watch_status_code};
pub use self::controller::{RetryBackoff, WaypointController, WaypointError};
pub use self::desired::{WaypointObjects, WaypointProblem, desired_objects};
pub use self::status::{ReconcileOutcome, desired_status};

/// The server-side apply field manager of everything istiod-lite writes.
pub const FIELD_MANAGER: &str = "istiod-lite";

/// Label Istio puts on every object it creates for a Gateway; our owned-object
/// watches select on it.
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";
/// The value of [`MANAGED_LABEL`] for waypoints (Istio's mesh controller).
pub const MANAGED_VALUE: &str = "istio.io-mesh-controller";
/// Label naming the Gateway an object belongs to; the Deployment and the
/// Service select the waypoint's pods with it.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Label naming the Gateway's class.
pub const GATEWAY_CLASS_LABEL: &str = "gateway.networking.k8s.io/gateway-class-name";

/// The listener a waypoint Gateway must have: `mesh` on 15008 / `HBONE`.
pub const MESH_LISTENER: &str = "mesh";
/// The waypoint's inbound HBONE port.
pub const HBONE_PORT: u16 = 15008;
/// The protocol of the `mesh` listener.
pub const HBONE_PROTOCOL: &str = "HBONE";
/// The waypoint's Prometheus port (`/stats/prometheus`).
pub const METRICS_PORT: u16 = 15020;
/// The waypoint's readiness port (`/healthz/ready`).
pub const STATUS_PORT: u16 = 15021;

/// What istiod-lite puts into every waypoint it deploys, from its flags.
#[derive(Clone, Debug, PartialEq)]
pub struct WaypointSettings {
    /// The waypoint container image.
    pub image: String,
    /// Where waypoints reach delta xDS and the CA (`XDS_ADDRESS`,
    /// `CA_ADDRESS`): istiod-lite's own Service.
    pub xds_address: String,
    /// Trust domain of the waypoint's identity (`TRUST_DOMAIN`).
    pub trust_domain: String,
    /// Cluster id (`CLUSTER_ID`).
    pub cluster_id: String,
    /// Audience of the projected service-account token the waypoint
    /// presents, which must be one istiod-lite reviews tokens for.
    pub token_audience: String,
    /// Where and how much the waypoint traces.
    pub tracing: TracingSettings,
}

/// The waypoint's tracing settings, under the names the waypoint reads.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingSettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, an OTLP/gRPC collector such as
    /// Jaeger's `:4317`. `None` leaves the variable unset: tracing off.
    pub otlp_endpoint: Option<String>,
    /// `TRACE_SAMPLING`: the percentage of requests that start a trace
    /// (0 to 100; 1 by default, as Istio's).
    pub sampling_percent: f64,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sampling_percent: DEFAULT_TRACE_SAMPLING,
        }
    }
}

/// Istio's default sampling percentage.
pub const DEFAULT_TRACE_SAMPLING: f64 = 1.0;

impl Default for WaypointSettings {
    fn default() -> Self {
        Self {
            image: "waypoint:dev".to_owned(),
            xds_address: "https://istiod.istio-system.svc:15012".to_owned(),
            trust_domain: "cluster.local".to_owned(),
            cluster_id: "Kubernetes".to_owned(),
            token_audience: "istio-ca".to_owned(),
            tracing: TracingSettings::default(),
        }
    }
}

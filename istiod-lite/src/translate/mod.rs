//! Kubernetes objects to the resources ztunnel consumes, as pure functions.
//!
//! The input is an [`Index`] of objects and a [`MeshConfig`]; the output is
//! Istio's `istio.workload.Address` resources (one per pod and per service)
//! and `istio.security.Authorization` resources (one per ztunnel-enforced
//! policy), keyed by the resource names Istio uses, plus [`Diagnostic`]s that
//! explain what was dropped or made stricter and why. No I/O, no clocks: the
//! same input always gives the same output, which is what lets the push
//! layer diff and the tests compare.
//!
//! Incremental translation works per output resource: the [`Index`] records
//! which objects changed since the last translation and what they were then
//! ([`Changes`]), [`affected`] maps those changes to the resources whose
//! content may depend on them, and [`translate_affected`] re-translates only
//! those. The contract, tested on fixtures, is that applying the [`Delta`] to
//! the previous full output gives exactly the new full output.
//!
//! # Layout
//!
//! - `index`: the object store with its range-scan lookups, and the changes
//!   since the last translation.
//! - `workload`: `Pod` to `Workload` (enrollment, services, identity, health).
//! - `service`: `Service` to `Service`.
//! - `waypoint`: `istio.io/use-waypoint` resolution, shared by both.
//! - `authorization`: `AuthorizationPolicy` and `PeerAuthentication` to
//!   `Authorization`, with the fail-closed handling of L7 attributes.
//! - `waypoint_routes`: `HTTPRoute`s with a Service parent (GAMMA) to the
//!   waypoint's `WaypointRoutes`, one per service port.
//! - `waypoint_authz`: `AuthorizationPolicy`s with `targetRefs` to the
//!   waypoint's `WaypointAuthorization`, one per service.
//! - `waypoint_faults`: the `fault` of `VirtualService`s to the waypoint's
//!   `WaypointFaults`, one per service.
//! - `waypoint_backends`: the `trafficPolicy` of `DestinationRule`s to the
//!   waypoint's `WaypointBackendPolicy`, one per service.
//!
//! The waypoint resource sets are not translated per target: they are
//! re-translated whole whenever a kind they read changes ([`WAYPOINT_INPUTS`];
//! pods are not among them, so the frequent changes never pay for it), and
//! the store diffs them by content, so clients still receive only what
//! differs.
//! - `affected`: which resources a set of changed objects touches.

mod affected;
mod authorization;
mod index;
mod notes;
mod service;
mod waypoint;
mod waypoint_authz;
mod waypoint_backends;
mod waypoint_faults;
mod waypoint_routes;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use proto::security::Authorization;
use proto::waypoint::{
    WaypointAuthorization, WaypointBackendPolicy, WaypointFaults, WaypointRoutes,
};
use proto::workload::Address;

use crate::model::{ObjectKey, ObjectKind};

pub use self::affected::{Target, affected};
pub use self::authorization::STATIC_STRICT_POLICY_NAME;
pub use self::index::{Changes, Index};
pub(crate) use self::waypoint::GATEWAY_NAME_LABEL;
pub use self::waypoint::is_waypoint_instance;
pub use self::waypoint_authz::{
    WaypointAuthorizationsTranslated, translate_waypoint_authorizations,
};
pub use self::waypoint_backends::{WaypointBackendsTranslated, translate_waypoint_backends};
pub use self::waypoint_faults::{WaypointFaultsTranslated, translate_waypoint_faults};
pub use self::waypoint_routes::{
    DEFAULT_RETRY_ATTEMPTS, WaypointRoutesTranslated, translate_waypoint_routes,
};
pub use self::workload::{is_enrolled, pod_uid};

/// Mesh-wide settings the translation depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// Cluster name, the first segment of workload uids.
    pub cluster_id: String,
    /// Trust domain of workload SPIFFE identities.
    pub trust_domain: String,
    /// DNS suffix of services: `<name>.<ns>.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// Namespace whose policies apply mesh-wide.
    pub root_namespace: String,
}

/// Which resource set a name belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// `istio.workload.Address`: workload uid or `<ns>/<hostname>`.
    Address,
    /// `istio.security.Authorization`: `<ns>/<name>`.
    Authorization,
    /// `mesh.waypoint.v1.WaypointRoutes`: `<hostname>:<port>`.
    WaypointRoutes,
    /// `mesh.waypoint.v1.WaypointAuthorization`: `<hostname>` (diagnostics
    /// name the policy, `<ns>/<name>`).
    WaypointAuthorization,
    /// `mesh.waypoint.v1.WaypointFaults`: `<hostname>` (diagnostics name
    /// the VirtualService, `<ns>/<name>`).
    WaypointFaults,
    /// `mesh.waypoint.v1.WaypointBackendPolicy`: `<hostname>` (diagnostics
    /// name the DestinationRule, `<ns>/<name>`).
    WaypointBackendPolicy,
}

/// The kinds the waypoint resources are translated from.
pub const WAYPOINT_INPUTS: [ObjectKind; 7] = [
    ObjectKind::HttpRoute,
    ObjectKind::AuthorizationPolicy,
    ObjectKind::VirtualService,
    ObjectKind::DestinationRule,
    ObjectKind::Service,
    ObjectKind::Gateway,
    ObjectKind::Namespace,
];

/// How much a diagnostic matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Expected behaviour worth knowing (e.g. a policy left to waypoints).
    Info,
    /// Config was dropped, made stricter, or could not be resolved.
    Warning,
}

/// A note about one output resource, for `/debug` and logs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    /// The resource set of the output it concerns.
    pub resource_type: ResourceType,
    /// The output resource name it concerns (which may have no resource,
    /// e.g. an AUDIT policy that is not sent).
    pub resource: String,
    pub severity: Severity,
    /// The object whose config caused it.
    pub object: ObjectKey,
    pub message: String,
}

/// The full translated state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translated {
    pub addresses: BTreeMap<String, Address>,
    pub authorizations: BTreeMap<String, Authorization>,
    pub waypoint: WaypointTranslated,
    /// Sorted, so two translations of the same input compare equal.
    pub diagnostics: Vec<Diagnostic>,
}

/// The waypoint's resource sets, always translated whole.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaypointTranslated {
    pub routes: BTreeMap<String, WaypointRoutes>,
    pub authorizations: BTreeMap<String, WaypointAuthorization>,
    pub faults: BTreeMap<String, WaypointFaults>,
    pub backends: BTreeMap<String, WaypointBackendPolicy>,
    /// Sorted; every diagnostic of the waypoint resource types.
    pub diagnostics: Vec<Diagnostic>,
}

/// Changes to one resource set.
#[derive(Clone, Debug, PartialEq)]
pub struct ResourceDelta<T> {
    /// Re-translated resources (some may be unchanged).
    pub upserts: BTreeMap<String, T>,
    /// Names that no longer have a resource.
    pub removals: BTreeSet<String>,
}

/// The result of re-translating the resources affected by some changes.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Delta {
    pub addresses: ResourceDelta<Address>,
    pub authorizations: ResourceDelta<Authorization>,
    /// The fresh diagnostics of every re-translated resource (upserted or
    /// removed); they replace that resource's previous diagnostics.
    pub diagnostics: Vec<Diagnostic>,
    /// The whole waypoint state, when a kind it reads changed; it replaces
    /// the previous one, diagnostics included.
    pub waypoint: Option<WaypointTranslated>,
}

/// One translated resource: its name, the resource (if the source yields
/// one) and diagnostics.
pub(crate) struct Output<T> {
    pub(crate) name: String,
    pub(crate) resource: Option<T>,
    pub(crate) diagnostics: Vec<Diagnostic>,
}

/// Translates everything in `index`.
pub fn translate_all(index: &Index, config: &MeshConfig) -> Translated {
    let mut out = Translated::default();
    for target in affected::all_targets(index) {
        out.record(translate_target(index, config, &target));
    }
    out.waypoint = translate_waypoint(index, config);
    out.diagnostics
        .extend(out.waypoint.diagnostics.iter().cloned());
    out.diagnostics.sort();
    out
}

/// Every waypoint resource set of `index`.
pub fn translate_waypoint(index: &Index, config: &MeshConfig) -> WaypointTranslated {
    let routes = translate_waypoint_routes(index, config);
    let authorizations = translate_waypoint_authorizations(index, config);
    let faults = translate_waypoint_faults(index, config);
    let backends = translate_waypoint_backends(index, config);
    let mut diagnostics = routes.diagnostics;
    diagnostics.extend(authorizations.diagnostics);
    diagnostics.extend(faults.diagnostics);
    diagnostics.extend(backends.diagnostics);
    diagnostics.sort();
    WaypointTranslated {
        routes: routes.routes,
        authorizations: authorizations.policies,
        faults: faults.faults,
        backends: backends.policies,
        diagnostics,
    }
}

/// Re-translates the resources that `changes` (from [`Index::take_changes`];
/// `index` is the state after them) may affect.
pub fn translate_affected(index: &Index, config: &MeshConfig, changes: &Changes) -> Delta {
    let mut delta = Delta::default();
    for target in affected(index, config, changes) {
        match translate_target(index, config, &target) {
            TargetOutput::Address(output) => {
                delta.diagnostics.extend(output.diagnostics);
                match output.resource {
                    Some(resource) => {
                        delta.addresses.upserts.insert(output.name, resource);
                    }
                    None => {
                        delta.addresses.removals.insert(output.name);
                    }
                }
            }
            TargetOutput::Authorization(output) => {
                delta.diagnostics.extend(output.diagnostics);
                match output.resource {
                    Some(resource) => {
                        delta.authorizations.upserts.insert(output.name, resource);
                    }
                    None => {
                        delta.authorizations.removals.insert(output.name);
                    }
                }
            }
        }
    }
    if changes
        .keys()
        .any(|key| WAYPOINT_INPUTS.contains(&key.kind))
    {
        delta.waypoint = Some(translate_waypoint(index, config));
    }
    delta.diagnostics.sort();
    delta
}

pub(crate) enum TargetOutput {
    // Boxed: a workload is several times larger than an authorization.
    Address(Box<Output<Address>>),
    Authorization(Output<Authorization>),
}

fn translate_target(index: &Index, config: &MeshConfig, target: &Target) -> TargetOutput {
    match target {
        Target::Workload { namespace, name } => TargetOutput::Address(Box::new(
            workload::translate_pod(index, config, namespace, name),
        )),
        Target::Service { namespace, name } => TargetOutput::Address(Box::new(
            service::translate_service(index, config, namespace, name),
        )),
        Target::Policy { namespace, name } => TargetOutput::Authorization(
            authorization::translate_policy(index, config, namespace, name),
        ),
        Target::StaticStrict => {
            TargetOutput::Authorization(authorization::static_strict(index, config))
        }
    }
}

// === impl MeshConfig ===

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            cluster_id: "Kubernetes".to_string(),
            trust_domain: "cluster.local".to_string(),
            cluster_domain: "cluster.local".to_string(),
            root_namespace: "istio-system".to_string(),
        }
    }
}

// === impl Diagnostic ===

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{severity}: {} ({}): {}",
            self.object, self.resource, self.message
        )
    }
}

// === impl Translated ===

impl Translated {
    fn record(&mut self, output: TargetOutput) {
        match output {
            TargetOutput::Address(output) => {
                self.diagnostics.extend(output.diagnostics);
                if let Some(resource) = output.resource {
                    self.addresses.insert(output.name, resource);
                }
            }
            TargetOutput::Authorization(output) => {
                self.diagnostics.extend(output.diagnostics);
                if let Some(resource) = output.resource {
                    self.authorizations.insert(output.name, resource);
                }
            }
        }
    }

    /// Applies an incremental result: upserts and removals replace
    /// resources, and every re-translated resource's diagnostics are
    /// replaced by the delta's.
    pub fn apply(&mut self, delta: &Delta) {
        let touched = |resource_type: ResourceType, name: &str| match resource_type {
            ResourceType::Address => {
                delta.addresses.upserts.contains_key(name)
                    || delta.addresses.removals.contains(name)
            }
            ResourceType::Authorization => {
                delta.authorizations.upserts.contains_key(name)
                    || delta.authorizations.removals.contains(name)
            }
            // Replaced whole, below.
            ResourceType::WaypointRoutes
            | ResourceType::WaypointAuthorization
            | ResourceType::WaypointFaults
            | ResourceType::WaypointBackendPolicy => false,
        };
        self.diagnostics
            .retain(|d| !touched(d.resource_type, &d.resource));
        self.diagnostics.extend(delta.diagnostics.iter().cloned());
        if let Some(waypoint) = &delta.waypoint {
            self.diagnostics.retain(|d| {
                !matches!(
                    d.resource_type,
                    ResourceType::WaypointRoutes
                        | ResourceType::WaypointAuthorization
                        | ResourceType::WaypointFaults
                        | ResourceType::WaypointBackendPolicy
                )
            });
            self.diagnostics
                .extend(waypoint.diagnostics.iter().cloned());
            self.waypoint = waypoint.clone();
        }
        self.diagnostics.sort();
        for name in &delta.addresses.removals {
            self.addresses.remove(name);
        }
        for (name, resource) in &delta.addresses.upserts {
            self.addresses.insert(name.clone(), resource.clone());
        }
        for name in &delta.authorizations.removals {
            self.authorizations.remove(name);
        }
        for (name, resource) in &delta.authorizations.upserts {
            self.authorizations.insert(name.clone(), resource.clone());
        }
    }
}

// === impl ResourceDelta ===

impl<T> Default for ResourceDelta<T> {
    fn default() -> Self {
        Self {
            upserts: BTreeMap::new(),
            removals: BTreeSet::new(),
        }
    }
}

impl<T> ResourceDelta<T> {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// Shorthand for building a diagnostic about an address resource.
pub(crate) fn address_diagnostic(
    resource: &str,
    severity: Severity,
    object: ObjectKey,
    message: String,
) -> Diagnostic {
    Diagnostic {
        resource_type: ResourceType::Address,
        resource: resource.to_string(),
        severity,
        object,
        message,
    }
}

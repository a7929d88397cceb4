//! The Kubernetes kinds the control plane reads, as plain data.
//!
//! Core kinds (`Namespace`, `Pod`, `Service`) are k8s-openapi's; the Istio
//! and Gateway API kinds are our own `kube::CustomResource` definitions,
//! written from the public API definitions (istio/api `security/v1beta1`,
//! `networking/v1alpha3`,
//! kubernetes-sigs/gateway-api `apis/v1`). Every kind deserializes from the
//! same YAML a user would `kubectl apply`, so the file source and the
//! Kubernetes source produce identical objects.
//!
//! [`KubeObject`] is the closed set of kinds we read; [`parse_documents`]
//! turns multi-document YAML into objects, reporting every document it cannot
//! use (including kinds we do not read) instead of dropping it.

mod destination_rule;
mod gateway;
mod istio;
mod networking;
mod parse;

use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use self::destination_rule::*;
pub use self::gateway::*;
pub use self::istio::*;
pub use self::networking::*;
pub use self::parse::{ParseError, parse_documents};

/// Label that enrolls a namespace or pod in the mesh (`ambient`), or opts a
/// pod out (`none`).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// Label naming the waypoint a namespace, service or pod uses (`none` opts out).
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// Label naming the namespace of the waypoint in [`USE_WAYPOINT_LABEL`].
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
/// Label on a waypoint `Gateway` saying which traffic it serves:
/// `service` (the default), `workload`, `all` or `none`.
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
/// The `GatewayClass` name of waypoints.
pub const WAYPOINT_GATEWAY_CLASS: &str = "istio-waypoint";

/// The kinds we read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    Namespace,
    Pod,
    Service,
    AuthorizationPolicy,
    PeerAuthentication,
    Gateway,
    HttpRoute,
    VirtualService,
    DestinationRule,
}

/// Identity of an object in the store: kind, namespace (empty for
/// cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
}

/// One object of a kind we read.
#[derive(Clone, Debug, PartialEq)]
pub enum KubeObject {
    Namespace(Box<Namespace>),
    Pod(Box<Pod>),
    Service(Box<Service>),
    AuthorizationPolicy(Box<AuthorizationPolicy>),
    PeerAuthentication(Box<PeerAuthentication>),
    Gateway(Box<Gateway>),
    HttpRoute(Box<HTTPRoute>),
    VirtualService(Box<VirtualService>),
    DestinationRule(Box<DestinationRule>),
}

// === impl ObjectKind ===

impl ObjectKind {
    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::Pod => "Pod",
            Self::Service => "Service",
            Self::AuthorizationPolicy => "AuthorizationPolicy",
            Self::PeerAuthentication => "PeerAuthentication",
            Self::Gateway => "Gateway",
            Self::HttpRoute => "HTTPRoute",
            Self::VirtualService => "VirtualService",
            Self::DestinationRule => "DestinationRule",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn is_namespaced(self) -> bool {
        !matches!(self, Self::Namespace)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl ObjectKey ===

impl ObjectKey {
    pub fn new(kind: ObjectKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

// === impl KubeObject ===

impl KubeObject {
    pub fn kind(&self) -> ObjectKind {
        match self {
            Self::Namespace(_) => ObjectKind::Namespace,
            Self::Pod(_) => ObjectKind::Pod,
            Self::Service(_) => ObjectKind::Service,
            Self::AuthorizationPolicy(_) => ObjectKind::AuthorizationPolicy,
            Self::PeerAuthentication(_) => ObjectKind::PeerAuthentication,
            Self::Gateway(_) => ObjectKind::Gateway,
            Self::HttpRoute(_) => ObjectKind::HttpRoute,
            Self::VirtualService(_) => ObjectKind::VirtualService,
            Self::DestinationRule(_) => ObjectKind::DestinationRule,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Namespace(o) => &o.metadata,
            Self::Pod(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::AuthorizationPolicy(o) => &o.metadata,
            Self::PeerAuthentication(o) => &o.metadata,
            Self::Gateway(o) => &o.metadata,
            Self::HttpRoute(o) => &o.metadata,
            Self::VirtualService(o) => &o.metadata,
            Self::DestinationRule(o) => &o.metadata,
        }
    }

    /// The store key. Cluster-scoped kinds have an empty namespace; a
    /// namespaced object without one is in `default`, where `kubectl apply`
    /// would have put it ([`parse_documents`] fills it in).
    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        let kind = self.kind();
        let namespace = if kind.is_namespaced() {
            meta.namespace
                .clone()
                .unwrap_or_else(|| "default".to_string())
        } else {
            String::new()
        };
        ObjectKey {
            kind,
            namespace,
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

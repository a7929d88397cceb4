//! `istio.io/use-waypoint` resolution, as Istio does it.
//!
//! An object's own label wins over its namespace's; the value `none` on the
//! object opts it out even when its namespace names a waypoint. The waypoint
//! lives in the object's namespace unless `istio.io/use-waypoint-namespace`
//! says otherwise. A waypoint is a `Gateway` of class `istio-waypoint`; it
//! serves service traffic unless its `istio.io/waypoint-for` label says
//! `workload` or `all` (Istio's default is `service`, so a pod reaches its
//! namespace's waypoint only when the waypoint is for workloads too). Its
//! address is the ClusterIP of the Service that fronts it, which Istio's
//! waypoint deployment names after the Gateway.
//!
//! Istio waits for the Gateway's status address; files carry no status, so
//! we look at the fronting Service directly, which is what that status
//! address is derived from.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proto::workload::{GatewayAddress, NetworkAddress, gateway_address};

use super::{Index, Severity};
use crate::model::{
    USE_WAYPOINT_LABEL, USE_WAYPOINT_NAMESPACE_LABEL, WAYPOINT_FOR_LABEL, WAYPOINT_GATEWAY_CLASS,
};

/// Port on which waypoints accept HBONE with mutual TLS.
pub(crate) const HBONE_MTLS_PORT: u32 = 15008;

/// Label Istio puts on the Service and Deployment it creates for a waypoint.
pub(crate) const MANAGED_GATEWAY_LABEL: &str = "gateway.istio.io/managed";
pub(crate) const MANAGED_GATEWAY_MESH_CONTROLLER: &str = "istio.io-mesh-controller";
/// Label on the pods of a Gateway's deployment naming the Gateway.
pub(crate) const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Whether `pod` runs a waypoint: it carries the Gateway-name label of a
/// Gateway of class `istio-waypoint` in its namespace. Such a pod speaks
/// HBONE itself (it is never captured), and a node proxy may obtain its
/// identity, since on a node without Kubernetes the waypoint
/// authenticates with its node's token.
pub fn is_waypoint_instance(index: &Index, pod: &k8s_openapi::api::core::v1::Pod) -> bool {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    pod.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(GATEWAY_NAME_LABEL))
        .and_then(|gateway| index.gateway(namespace, gateway))
        .is_some_and(|gateway| gateway.spec.gateway_class_name == WAYPOINT_GATEWAY_CLASS)
}

/// Which kind of traffic is asking for a waypoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TrafficType {
    Service,
    Workload,
}

/// A waypoint named by labels: `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct WaypointRef {
    pub(crate) namespace: String,
    pub(crate) name: String,
}

/// Which waypoint (if any) the labels of `meta` and its namespace ask for.
pub(crate) fn waypoint_reference(
    meta: &ObjectMeta,
    namespace: Option<&Namespace>,
) -> Option<WaypointRef> {
    let object_ns = meta.namespace.as_deref().unwrap_or("default");
    if let Some(labels) = &meta.labels
        && let Some(reference) = reference_from_labels(labels, object_ns)
    {
        // "none" on the object is a local opt-out: no namespace fallback.
        return reference;
    }
    let labels = namespace?.metadata.labels.as_ref()?;
    reference_from_labels(labels, object_ns).flatten()
}

/// `None`: no label; `Some(None)`: the label says `none`.
fn reference_from_labels(
    labels: &BTreeMap<String, String>,
    default_namespace: &str,
) -> Option<Option<WaypointRef>> {
    let name = labels.get(USE_WAYPOINT_LABEL)?;
    if name == "none" {
        return Some(None);
    }
    let namespace = labels
        .get(USE_WAYPOINT_NAMESPACE_LABEL)
        .map_or(default_namespace, String::as_str);
    Some(Some(WaypointRef {
        namespace: namespace.to_string(),
        name: name.clone(),
    }))
}

/// Resolves a reference to the waypoint's address for `traffic`, or says
/// why it cannot.
pub(crate) fn resolve(
    index: &Index,
    reference: &WaypointRef,
    traffic: TrafficType,
) -> Result<GatewayAddress, (Severity, String)> {
    let WaypointRef { namespace, name } = reference;
    let Some(gateway) = index.gateway(namespace, name) else {
        let message = format!(
            "waypoint {namespace}/{name} does not exist: no Gateway {name} in namespace {namespace}; \
             create it (class {WAYPOINT_GATEWAY_CLASS}) or fix the {USE_WAYPOINT_LABEL} label"
        );
        return Err((Severity::Warning, message));
    };
    if gateway.spec.gateway_class_name != WAYPOINT_GATEWAY_CLASS {
        let message = format!(
            "Gateway {namespace}/{name} is of class {:?}, not {WAYPOINT_GATEWAY_CLASS}, so it is not a waypoint",
            gateway.spec.gateway_class_name
        );
        return Err((Severity::Warning, message));
    }
    let serves = gateway
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(WAYPOINT_FOR_LABEL))
        .map_or("service", String::as_str);
    let allowed = match traffic {
        TrafficType::Service => matches!(serves, "service" | "all"),
        TrafficType::Workload => matches!(serves, "workload" | "all"),
    };
    if !allowed {
        let wanted = match traffic {
            TrafficType::Service => "service",
            TrafficType::Workload => "workload",
        };
        let message = format!(
            "waypoint {namespace}/{name} serves {serves:?} traffic, not {wanted} traffic \
             (set its {WAYPOINT_FOR_LABEL} label to {wanted:?} or \"all\")"
        );
        // Expected rather than a mistake: a namespace's service waypoint is
        // not meant for its pods.
        return Err((Severity::Info, message));
    }
    let address = index
        .service(namespace, name)
        .and_then(|svc| svc.spec.as_ref())
        .and_then(|spec| spec.cluster_ip.as_deref())
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    let Some(address) = address else {
        let message = format!(
            "waypoint {namespace}/{name} has no address yet: Service {namespace}/{name} with a ClusterIP is missing"
        );
        return Err((Severity::Warning, message));
    };
    Ok(GatewayAddress {
        destination: Some(gateway_address::Destination::Address(NetworkAddress {
            network: String::new(),
            address: ip_bytes(address),
        })),
        hbone_mtls_port: HBONE_MTLS_PORT,
    })
}

/// Raw address bytes as the workload API carries them (4 or 16).
pub(crate) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

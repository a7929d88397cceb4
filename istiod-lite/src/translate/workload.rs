//! `Pod` to Istio's workload-API `Workload`.
//!
//! Every running pod with an IP becomes a workload, enrolled or not: ztunnel
//! needs to know the pods outside the mesh too (they are reached without a
//! tunnel). Enrollment only decides the tunnel protocol.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proto::workload::{self as wl, TunnelProtocol, WorkloadStatus, WorkloadType};

use super::waypoint::{self, TrafficType};
use super::{Index, MeshConfig, Output, Severity, address_diagnostic, authorization, service};
use crate::model::{DATAPLANE_MODE_LABEL, ObjectKey, ObjectKind};

/// Istio's workload uid of a pod: `<cluster>//Pod/<ns>/<name>` (cluster,
/// empty API group, kind, namespace, name).
pub fn pod_uid(config: &MeshConfig, namespace: &str, name: &str) -> String {
    format!("{}//Pod/{namespace}/{name}", config.cluster_id)
}

/// Whether a pod is in the mesh: the pod or its namespace says
/// `istio.io/dataplane-mode=ambient`, and the pod does not say `none`.
pub fn is_enrolled(pod: &Pod, namespace: Option<&Namespace>) -> bool {
    match label(pod.metadata.labels.as_ref(), DATAPLANE_MODE_LABEL) {
        Some("none") => false,
        Some("ambient") => true,
        _ => namespace.is_some_and(|ns| {
            label(ns.metadata.labels.as_ref(), DATAPLANE_MODE_LABEL) == Some("ambient")
        }),
    }
}

pub(crate) fn translate_pod(
    index: &Index,
    config: &MeshConfig,
    namespace: &str,
    name: &str,
) -> Output<wl::Address> {
    let uid = pod_uid(config, namespace, name);
    let mut diagnostics = Vec::new();
    let Some(pod) = index.pod(namespace, name) else {
        return empty(uid, diagnostics);
    };
    let key = ObjectKey::new(ObjectKind::Pod, namespace, name);
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();

    // Finished pods hold no traffic, and host-network pods share the node's
    // address, so neither is a workload (as in Istio).
    let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    if finished || spec.host_network == Some(true) {
        return empty(uid, diagnostics);
    }

    let mut addresses = Vec::new();
    let ips: Vec<&str> = match &status.pod_ips {
        Some(ips) if !ips.is_empty() => ips.iter().map(|ip| ip.ip.as_str()).collect(),
        _ => status.pod_ip.as_deref().into_iter().collect(),
    };
    for ip in ips {
        match ip.parse::<IpAddr>() {
            Ok(ip) => addresses.push(waypoint::ip_bytes(ip)),
            Err(_) => diagnostics.push(address_diagnostic(
                &uid,
                Severity::Warning,
                key.clone(),
                format!("pod IP {ip:?} is not an IP address; it is left out"),
            )),
        }
    }
    // A pod without an address (not scheduled yet) is not reachable.
    if addresses.is_empty() {
        return empty(uid, diagnostics);
    }

    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let ns_object = index.namespace(namespace);
    // A waypoint terminates HBONE itself, captured or not.
    let is_waypoint_instance = waypoint::is_waypoint_instance(index, pod);
    let tunnel_protocol = if is_enrolled(pod, ns_object) || is_waypoint_instance {
        TunnelProtocol::Hbone
    } else {
        TunnelProtocol::None
    };

    let services = backed_services(index, config, pod, &uid, &key, &mut diagnostics);

    let (workload_name, workload_type) = workload_name_and_type(pod, name);
    let (canonical_name, canonical_revision) = canonical_service(&labels, &workload_name);

    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let health = if ready {
        WorkloadStatus::Healthy
    } else {
        WorkloadStatus::Unhealthy
    };

    // A waypoint's own pods never go through a waypoint.
    let mut waypoint = None;
    if !is_waypoint_instance
        && let Some(reference) = waypoint::waypoint_reference(&pod.metadata, ns_object)
    {
        match waypoint::resolve(index, &reference, TrafficType::Workload) {
            Ok(address) => waypoint = Some(address),
            Err((severity, reason)) => diagnostics.push(address_diagnostic(
                &uid,
                severity,
                key.clone(),
                format!("{reason}; the workload is left without a waypoint"),
            )),
        }
    }

    let authorization_policies =
        authorization::workload_policies(index, config, namespace, &labels, &uid, &mut diagnostics);

    let service_account = spec
        .service_account_name
        .filter(|sa| !sa.is_empty())
        .unwrap_or_else(|| "default".to_string());

    let workload = wl::Workload {
        uid: uid.clone(),
        name: name.to_string(),
        namespace: namespace.to_string(),
        addresses,
        network: String::new(),
        tunnel_protocol: tunnel_protocol as i32,
        // Istio leaves this empty for the default "cluster.local"; we always
        // say it, which ztunnel reads the same way and is explicit.
        trust_domain: config.trust_domain.clone(),
        service_account,
        waypoint,
        node: spec.node_name.unwrap_or_default(),
        canonical_name,
        canonical_revision,
        workload_type: workload_type as i32,
        workload_name,
        authorization_policies,
        status: health as i32,
        cluster_id: config.cluster_id.clone(),
        services,
        ..Default::default()
    };
    Output {
        name: uid,
        resource: Some(wl::Address {
            r#type: Some(wl::address::Type::Workload(workload)),
        }),
        diagnostics,
    }
}

fn empty(uid: String, diagnostics: Vec<super::Diagnostic>) -> Output<wl::Address> {
    Output {
        name: uid,
        resource: None,
        diagnostics,
    }
}

/// The services (in the pod's namespace, with a non-empty selector matching
/// the pod) and their ports on this pod. A named target port is resolved
/// against the pod's container ports; a name the pod does not declare
/// leaves that port out for this pod, as in Istio.
fn backed_services(
    index: &Index,
    config: &MeshConfig,
    pod: &Pod,
    uid: &str,
    key: &ObjectKey,
    diagnostics: &mut Vec<super::Diagnostic>,
) -> BTreeMap<String, wl::PortList> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut services = BTreeMap::new();
    for svc in index.services(Some(namespace)) {
        let Some(spec) = &svc.spec else { continue };
        if !selects(spec.selector.as_ref(), &labels) {
            continue;
        }
        let svc_name = svc.metadata.name.as_deref().unwrap_or_default();
        let mut ports = Vec::new();
        for port in spec.ports.iter().flatten() {
            let Ok(service_port) = u32::try_from(port.port) else {
                continue;
            };
            let target_port = match port.target_port.as_ref() {
                Some(IntOrString::String(named)) if named.parse::<u32>().is_err() => {
                    match container_port(pod, named) {
                        Some(number) => number,
                        None => {
                            diagnostics.push(address_diagnostic(
                                uid,
                                Severity::Info,
                                key.clone(),
                                format!(
                                    "Service {namespace}/{svc_name} port {service_port} targets port name {named:?}, \
                                     which no container of this pod declares; that port is left out for this pod"
                                ),
                            ));
                            continue;
                        }
                    }
                }
                other => service::numeric_target_port(port.port, other).unwrap_or(0),
            };
            ports.push(wl::Port {
                service_port,
                target_port,
            });
        }
        services.insert(
            service::resource_name(config, namespace, svc_name),
            wl::PortList { ports },
        );
    }
    services
}

/// Whether a service selector selects these labels. An empty or missing
/// selector selects nothing: such services have manually managed endpoints.
pub(crate) fn selects(
    selector: Option<&BTreeMap<String, String>>,
    labels: &BTreeMap<String, String>,
) -> bool {
    match selector {
        Some(selector) if !selector.is_empty() => {
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        }
        _ => false,
    }
}

fn container_port(pod: &Pod, name: &str) -> Option<u32> {
    pod.spec
        .iter()
        .flat_map(|spec| spec.containers.iter())
        .flat_map(|container| container.ports.iter().flatten())
        .find(|port| port.name.as_deref() == Some(name))
        .and_then(|port| u32::try_from(port.container_port).ok())
}

/// The controller name and type for telemetry, with Istio's heuristics: a
/// ReplicaSet named `<deployment>-<pod-template-hash>` is a Deployment, a
/// Job named `<cronjob>-<8 to 10 digits>` is a CronJob; anything else is
/// reported as the pod itself.
fn workload_name_and_type(pod: &Pod, pod_name: &str) -> (String, WorkloadType) {
    let controller = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true));
    let Some(owner) = controller else {
        return (pod_name.to_string(), WorkloadType::Pod);
    };
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let hash = label(pod.metadata.labels.as_ref(), "pod-template-hash");
            match hash.and_then(|h| owner.name.strip_suffix(h)?.strip_suffix('-')) {
                Some(deployment) => (deployment.to_string(), WorkloadType::Deployment),
                None => (pod_name.to_string(), WorkloadType::Pod),
            }
        }
        "Job" => match owner.name.rsplit_once('-') {
            Some((cronjob, stamp))
                if (8..=10).contains(&stamp.len()) && stamp.bytes().all(|b| b.is_ascii_digit()) =>
            {
                (cronjob.to_string(), WorkloadType::Cronjob)
            }
            _ => (owner.name.clone(), WorkloadType::Job),
        },
        _ => (pod_name.to_string(), WorkloadType::Pod),
    }
}

/// Canonical service name and revision from the usual labels, in Istio's
/// order of precedence; the name falls back to the workload name and the
/// revision to `latest`.
pub(crate) fn canonical_service(
    labels: &BTreeMap<String, String>,
    workload_name: &str,
) -> (String, String) {
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| labels.get(*k).filter(|v| !v.is_empty()).cloned())
    };
    let name = first(&[
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| workload_name.to_string());
    let revision = first(&[
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".to_string());
    (name, revision)
}

fn label<'a>(labels: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    labels?.get(key).map(String::as_str)
}

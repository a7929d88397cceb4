//! Kubernetes `Service` to Istio's workload-API `Service`.
//!
//! The workload-API service carries no endpoints: which workloads back it
//! is recorded on each workload (`Workload.services`). That keeps a pod
//! change from touching its services, and a service resource small.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proto::workload::{self as wl, IpFamilies, NetworkAddress};

use super::waypoint::{
    self, MANAGED_GATEWAY_LABEL, MANAGED_GATEWAY_MESH_CONTROLLER, TrafficType, WaypointRef,
};
use super::{Index, MeshConfig, Output, Severity, address_diagnostic};
use crate::model::{ObjectKey, ObjectKind, WAYPOINT_GATEWAY_CLASS};

/// `<name>.<ns>.svc.<cluster-domain>`.
pub(crate) fn hostname(config: &MeshConfig, namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.svc.{}", config.cluster_domain)
}

/// Istio's resource name of a service: `<ns>/<hostname>`.
pub(crate) fn resource_name(config: &MeshConfig, namespace: &str, name: &str) -> String {
    format!("{namespace}/{}", hostname(config, namespace, name))
}

pub(crate) fn translate_service(
    index: &Index,
    config: &MeshConfig,
    namespace: &str,
    name: &str,
) -> Output<wl::Address> {
    let resource = resource_name(config, namespace, name);
    let mut diagnostics = Vec::new();
    let Some(svc) = index.service(namespace, name) else {
        return Output {
            name: resource,
            resource: None,
            diagnostics,
        };
    };
    let key = ObjectKey::new(ObjectKind::Service, namespace, name);
    let spec = svc.spec.clone().unwrap_or_default();

    let mut addresses = Vec::new();
    for ip in cluster_ips(svc) {
        match ip.parse::<IpAddr>() {
            Ok(ip) => addresses.push(NetworkAddress {
                network: String::new(),
                address: waypoint::ip_bytes(ip),
            }),
            Err(_) => diagnostics.push(address_diagnostic(
                &resource,
                Severity::Warning,
                key.clone(),
                format!("clusterIP {ip:?} is not an IP address; it is left out"),
            )),
        }
    }

    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|port| {
            let service_port = u32::try_from(port.port).ok()?;
            Some(wl::Port {
                service_port,
                // A named target port is resolved per workload; here it is 0.
                target_port: numeric_target_port(port.port, port.target_port.as_ref()).unwrap_or(0),
            })
        })
        .collect();

    let ip_families = match spec.ip_families.as_deref() {
        Some([one]) if one == "IPv4" => IpFamilies::Ipv4Only,
        Some([one]) if one == "IPv6" => IpFamilies::Ipv6Only,
        Some([_, _]) => IpFamilies::Dual,
        _ => IpFamilies::Automatic,
    };

    let mut waypoint = None;
    match service_waypoint(index, svc, namespace, name) {
        None => {}
        Some(Ok((_, address))) => waypoint = Some(address),
        Some(Err((severity, reason))) => diagnostics.push(address_diagnostic(
            &resource,
            severity,
            key.clone(),
            format!("{reason}; the service is left without a waypoint"),
        )),
    }

    let service = wl::Service {
        name: name.to_string(),
        namespace: namespace.to_string(),
        hostname: hostname(config, namespace, name),
        addresses,
        ports,
        waypoint,
        ip_families: ip_families as i32,
        ..Default::default()
    };
    Output {
        name: resource,
        resource: Some(wl::Address {
            r#type: Some(wl::address::Type::Service(service)),
        }),
        diagnostics,
    }
}

/// The waypoint service traffic to `svc` goes through: `None` when its
/// labels (and its namespace's) ask for none, or when it is a waypoint's
/// own Service (which never goes through a waypoint); an error when the
/// labels name a waypoint that cannot be used.
pub(crate) fn service_waypoint(
    index: &Index,
    svc: &Service,
    namespace: &str,
    name: &str,
) -> Option<Result<(WaypointRef, wl::GatewayAddress), (Severity, String)>> {
    let is_waypoint_service = svc
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(MANAGED_GATEWAY_LABEL))
        .is_some_and(|value| value == MANAGED_GATEWAY_MESH_CONTROLLER)
        || index
            .gateway(namespace, name)
            .is_some_and(|gw| gw.spec.gateway_class_name == WAYPOINT_GATEWAY_CLASS);
    if is_waypoint_service {
        return None;
    }
    let reference = waypoint::waypoint_reference(&svc.metadata, index.namespace(namespace))?;
    Some(
        waypoint::resolve(index, &reference, TrafficType::Service)
            .map(|address| (reference, address)),
    )
}

/// The cluster IPs of a service, without `None` (headless) and duplicates.
fn cluster_ips(svc: &Service) -> Vec<String> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let mut ips: Vec<String> = Vec::new();
    let all = spec
        .cluster_ip
        .iter()
        .chain(spec.cluster_ips.iter().flatten());
    for ip in all {
        if ip.is_empty() || ip == "None" || ips.contains(ip) {
            continue;
        }
        ips.push(ip.clone());
    }
    ips
}

/// The numeric target port of a service port: the number, or the service
/// port when unset (the API server's default); `None` for a named port.
pub(crate) fn numeric_target_port(port: i32, target: Option<&IntOrString>) -> Option<u32> {
    match target {
        None => u32::try_from(port).ok(),
        Some(IntOrString::Int(n)) => u32::try_from(*n).ok(),
        Some(IntOrString::String(s)) => s.parse::<u32>().ok(),
    }
}

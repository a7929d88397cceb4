//! Pods and services to workload-API addresses, from
//! `fixtures/translate_mesh.yaml`: enrollment, named target ports, VIPs,
//! waypoints, readiness, canonical names and workload types.

// Helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

use istiod_lite::translate::{
    Diagnostic, Index, MeshConfig, ResourceType, Severity, Translated, translate_all,
};
use proto::workload::{
    GatewayAddress, IpFamilies, NetworkAddress, Port, Service, TunnelProtocol, Workload,
    WorkloadStatus, WorkloadType, address, gateway_address,
};

fn translated() -> Translated {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/translate_mesh.yaml"
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let index = Index::from_yaml(&yaml).unwrap();
    translate_all(&index, &MeshConfig::default())
}

fn workload<'a>(out: &'a Translated, ns: &str, name: &str) -> &'a Workload {
    let uid = format!("Kubernetes//Pod/{ns}/{name}");
    match out.addresses.get(&uid).and_then(|a| a.r#type.as_ref()) {
        Some(address::Type::Workload(w)) => w,
        other => panic!("no workload {uid}: {other:?}"),
    }
}

fn service<'a>(out: &'a Translated, ns: &str, name: &str) -> &'a Service {
    let key = format!("{ns}/{name}.{ns}.svc.cluster.local");
    match out.addresses.get(&key).and_then(|a| a.r#type.as_ref()) {
        Some(address::Type::Service(s)) => s,
        other => panic!("no service {key}: {other:?}"),
    }
}

fn diagnostics_for<'a>(out: &'a Translated, resource: &str) -> Vec<&'a Diagnostic> {
    out.diagnostics
        .iter()
        .filter(|d| d.resource_type == ResourceType::Address && d.resource == resource)
        .collect()
}

fn waypoint_at(ip: [u8; 4]) -> Option<GatewayAddress> {
    Some(GatewayAddress {
        destination: Some(gateway_address::Destination::Address(NetworkAddress {
            network: String::new(),
            address: ip.to_vec(),
        })),
        hbone_mtls_port: 15008,
    })
}

fn port(service_port: u32, target_port: u32) -> Port {
    Port {
        service_port,
        target_port,
    }
}

#[test]
fn enrollment_by_namespace_pod_label_and_none_override() {
    let out = translated();
    let hbone = TunnelProtocol::Hbone as i32;
    let none = TunnelProtocol::None as i32;
    // Namespace label.
    assert_eq!(
        workload(&out, "apps", "reviews-v1-5d8f9c-abcde").tunnel_protocol,
        hbone
    );
    // Pod says none inside an ambient namespace.
    assert_eq!(workload(&out, "apps", "ratings").tunnel_protocol, none);
    // Pod label in a plain namespace.
    assert_eq!(workload(&out, "legacy", "opted-in").tunnel_protocol, hbone);
    // Neither.
    assert_eq!(workload(&out, "legacy", "legacy-app").tunnel_protocol, none);
}

#[test]
fn pod_to_workload_fields() {
    let out = translated();
    let w = workload(&out, "apps", "reviews-v1-5d8f9c-abcde");
    assert_eq!(w.uid, "Kubernetes//Pod/apps/reviews-v1-5d8f9c-abcde");
    assert_eq!(w.name, "reviews-v1-5d8f9c-abcde");
    assert_eq!(w.namespace, "apps");
    let v6: std::net::Ipv6Addr = "fd00:10:244::5".parse().unwrap();
    assert_eq!(w.addresses, vec![vec![10, 244, 1, 5], v6.octets().to_vec()]);
    assert_eq!(w.node, "node-a");
    assert_eq!(w.service_account, "bookinfo-reviews");
    assert_eq!(w.trust_domain, "cluster.local");
    assert_eq!(w.cluster_id, "Kubernetes");
    assert_eq!(w.workload_name, "reviews-v1");
    assert_eq!(w.workload_type, WorkloadType::Deployment as i32);
    assert_eq!(
        (w.canonical_name.as_str(), w.canonical_revision.as_str()),
        ("reviews", "v1")
    );

    let ratings = workload(&out, "apps", "ratings");
    assert_eq!(ratings.service_account, "default", "unset service account");
    assert_eq!(ratings.workload_type, WorkloadType::Pod as i32);
    assert_eq!(ratings.workload_name, "ratings");

    let cron = workload(&out, "legacy", "legacy-app");
    assert_eq!(cron.workload_name, "nightly");
    assert_eq!(cron.workload_type, WorkloadType::Cronjob as i32);
}

#[test]
fn pod_without_ip_is_not_a_workload() {
    let out = translated();
    assert!(!out.addresses.contains_key("Kubernetes//Pod/legacy/pending"));
}

#[test]
fn readiness_decides_status() {
    let out = translated();
    let healthy = WorkloadStatus::Healthy as i32;
    let unhealthy = WorkloadStatus::Unhealthy as i32;
    assert_eq!(
        workload(&out, "apps", "reviews-v1-5d8f9c-abcde").status,
        healthy
    );
    assert_eq!(
        workload(&out, "apps", "ratings").status,
        unhealthy,
        "Ready=False"
    );
    assert_eq!(
        workload(&out, "legacy", "opted-in").status,
        unhealthy,
        "no Ready condition"
    );
}

#[test]
fn canonical_name_and_revision_precedence() {
    let out = translated();
    // canonical-name beats app.kubernetes.io/name beats app; likewise for
    // the revision labels.
    let ratings = workload(&out, "apps", "ratings");
    assert_eq!(ratings.canonical_name, "ratings-canonical");
    assert_eq!(ratings.canonical_revision, "2.0");
    // No labels: the workload name and "latest".
    let ghost = workload(&out, "legacy", "ghost-user");
    assert_eq!(ghost.canonical_name, "ghost-user");
    assert_eq!(ghost.canonical_revision, "latest");
    // `app` alone.
    let cron = workload(&out, "legacy", "legacy-app");
    assert_eq!(cron.canonical_name, "legacy");
}

#[test]
fn named_target_ports_are_resolved_per_pod() {
    let out = translated();
    let w = workload(&out, "apps", "reviews-v1-5d8f9c-abcde");
    let ports = &w.services["apps/reviews.apps.svc.cluster.local"].ports;
    // http -> 9080 from the container; grpc is declared by no container and
    // is left out; numeric 15090 stays; a missing targetPort is the port.
    assert_eq!(
        ports,
        &vec![port(9080, 9080), port(15090, 15090), port(8080, 8080)]
    );
    assert_eq!(w.services.len(), 1, "only services whose selector matches");
    let notes = diagnostics_for(&out, &w.uid);
    assert!(
        notes
            .iter()
            .any(|d| d.severity == Severity::Info && d.message.contains("\"grpc\"")),
        "{notes:?}"
    );

    let ratings = workload(&out, "apps", "ratings");
    assert_eq!(
        ratings.services["apps/ratings.apps.svc.cluster.local"].ports,
        vec![port(9080, 9080)]
    );
    // A service without selector backs nothing.
    let opted_in = workload(&out, "legacy", "opted-in");
    assert!(opted_in.services.is_empty());
}

#[test]
fn service_hostname_vips_and_ports() {
    let out = translated();
    let s = service(&out, "apps", "reviews");
    assert_eq!(s.name, "reviews");
    assert_eq!(s.namespace, "apps");
    assert_eq!(s.hostname, "reviews.apps.svc.cluster.local");
    let v6: std::net::Ipv6Addr = "fd00:96::1".parse().unwrap();
    let addresses: Vec<_> = s
        .addresses
        .iter()
        .map(|a| (a.network.as_str(), a.address.clone()))
        .collect();
    assert_eq!(
        addresses,
        vec![("", vec![10, 96, 1, 1]), ("", v6.octets().to_vec())]
    );
    // Named target ports are 0 on the service: resolved per workload.
    assert_eq!(
        s.ports,
        vec![
            port(9080, 0),
            port(9090, 0),
            port(15090, 15090),
            port(8080, 8080)
        ]
    );
    assert_eq!(s.ip_families, IpFamilies::Dual as i32);
    assert_eq!(
        service(&out, "legacy", "legacy").ip_families,
        IpFamilies::Ipv4Only as i32
    );

    let headless = service(&out, "apps", "ratings");
    assert!(headless.addresses.is_empty(), "clusterIP None is not a VIP");
}

#[test]
fn service_waypoint_from_namespace_and_service_labels() {
    let out = translated();
    // Namespace label.
    assert_eq!(
        service(&out, "apps", "reviews").waypoint,
        waypoint_at([10, 96, 0, 10])
    );
    // Service label.
    assert_eq!(
        service(&out, "legacy", "external").waypoint,
        waypoint_at([10, 96, 0, 20])
    );
    // `none` on the service beats the namespace label.
    assert_eq!(service(&out, "apps", "ratings").waypoint, None);
    // The waypoint's own service never uses a waypoint.
    assert_eq!(service(&out, "apps", "waypoint").waypoint, None);
}

#[test]
fn unknown_waypoint_is_a_diagnostic_and_no_waypoint() {
    let out = translated();
    let s = service(&out, "legacy", "legacy");
    assert_eq!(s.waypoint, None);
    let notes = diagnostics_for(&out, "legacy/legacy.legacy.svc.cluster.local");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].severity, Severity::Warning);
    assert!(
        notes[0]
            .message
            .contains("legacy/missing-waypoint does not exist"),
        "{}",
        notes[0]
    );

    let ghost = workload(&out, "legacy", "ghost-user");
    assert_eq!(ghost.waypoint, None);
    let notes = diagnostics_for(&out, &ghost.uid);
    assert!(
        notes
            .iter()
            .any(|d| d.severity == Severity::Warning && d.message.contains("legacy/ghost"))
    );
}

#[test]
fn workload_waypoint_respects_waypoint_for() {
    let out = translated();
    // `all` waypoint, by the pod's own label.
    assert_eq!(
        workload(&out, "legacy", "opted-in").waypoint,
        waypoint_at([10, 96, 0, 20])
    );
    // The namespace waypoint serves services only (Istio's default), so the
    // namespace's pods do not get it; that is noted, not warned about.
    let reviews = workload(&out, "apps", "reviews-v1-5d8f9c-abcde");
    assert_eq!(reviews.waypoint, None);
    let notes = diagnostics_for(&out, &reviews.uid);
    assert!(
        notes
            .iter()
            .any(|d| d.severity == Severity::Info && d.message.contains("serves \"service\""))
    );
    // A waypoint instance gets no waypoint and no note about one.
    let instance = workload(&out, "apps", "waypoint-7f9-xyz");
    assert_eq!(instance.waypoint, None);
    assert!(diagnostics_for(&out, &instance.uid).is_empty());
    // Out of capture, yet reached over HBONE: the waypoint terminates it.
    assert_eq!(instance.tunnel_protocol, TunnelProtocol::Hbone as i32);
    // An app pod out of capture is plain TCP.
    let legacy = workload(&out, "legacy", "legacy-app");
    assert_eq!(legacy.tunnel_protocol, TunnelProtocol::None as i32);
}

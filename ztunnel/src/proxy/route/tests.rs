use std::collections::BTreeMap;

use proto::workload as wl;

use super::*;

const SVC: &str = "b/server.b.svc.cluster.local";
const WAYPOINT_SVC: &str = "b/waypoint.b.svc.cluster.local";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa).unwrap()
}

/// A healthy HBONE workload in namespace `b` with service account `name`,
/// backing `services` with port 80 mapped to `target`.
fn workload(name: &str, ip: &str, services: &[&str], target: u32) -> wl::Workload {
    let ip: IpAddr = ip.parse().unwrap();
    let bytes = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    wl::Workload {
        uid: format!("Kubernetes//Pod/b/{name}"),
        name: name.into(),
        namespace: "b".into(),
        addresses: vec![bytes],
        tunnel_protocol: wl::TunnelProtocol::Hbone as i32,
        trust_domain: "cluster.local".into(),
        service_account: name.into(),
        services: services
            .iter()
            .map(|s| {
                let ports = vec![wl::Port {
                    service_port: 80,
                    target_port: target,
                }];
                ((*s).to_owned(), wl::PortList { ports })
            })
            .collect::<BTreeMap<_, _>>(),
        ..wl::Workload::default()
    }
}

fn service(name: &str, vip: [u8; 4], target: u32) -> wl::Service {
    wl::Service {
        name: name.into(),
        namespace: "b".into(),
        hostname: format!("{name}.b.svc.cluster.local"),
        addresses: vec![wl::NetworkAddress {
            network: String::new(),
            address: vip.to_vec(),
        }],
        ports: vec![wl::Port {
            service_port: 80,
            target_port: target,
        }],
        ..wl::Service::default()
    }
}

fn waypoint_by_hostname() -> wl::GatewayAddress {
    wl::GatewayAddress {
        destination: Some(wl::gateway_address::Destination::Hostname(
            wl::NamespacedHostname {
                namespace: "b".into(),
                hostname: "waypoint.b.svc.cluster.local".into(),
            },
        )),
        hbone_mtls_port: 15008,
    }
}

fn waypoint_by_address(ip: [u8; 4]) -> wl::GatewayAddress {
    wl::GatewayAddress {
        destination: Some(wl::gateway_address::Destination::Address(
            wl::NetworkAddress {
                network: String::new(),
                address: ip.to_vec(),
            },
        )),
        hbone_mtls_port: 15009,
    }
}

fn state(workloads: Vec<wl::Workload>, services: Vec<wl::Service>) -> State {
    let mut state = State::default();
    let mut upserts: Vec<(String, wl::Address)> = workloads
        .into_iter()
        .map(|w| {
            let name = w.uid.clone();
            let r#type = Some(wl::address::Type::Workload(w));
            (name, wl::Address { r#type })
        })
        .collect();
    upserts.extend(services.into_iter().map(|s| {
        let name = format!("{}/{}", s.namespace, s.hostname);
        let r#type = Some(wl::address::Type::Service(s));
        (name, wl::Address { r#type })
    }));
    let rejected = state.apply_addresses(upserts, &[]);
    assert!(rejected.is_empty(), "{rejected:?}");
    state
}

fn client() -> wl::Workload {
    workload("client", "10.0.0.1", &[], 0)
}

fn resolve_from_client(
    state: &State,
    dst: &str,
    balancer: &RoundRobin,
) -> Result<Route, RouteError> {
    let source = state
        .workload_by_uid("Kubernetes//Pod/b/client")
        .unwrap()
        .clone();
    resolve(state, &source, addr(dst), balancer)
}

fn hbone(route: Result<Route, RouteError>) -> HboneRoute {
    match route {
        Ok(Route::Hbone(route)) => route,
        other => panic!("expected an HBONE route, got {other:?}"),
    }
}

fn plaintext(route: Result<Route, RouteError>) -> PlaintextRoute {
    match route {
        Ok(Route::Plaintext(route)) => route,
        other => panic!("expected a plaintext route, got {other:?}"),
    }
}

#[test]
fn a_service_vip_goes_to_an_endpoint_on_its_target_port() {
    let mut svc = service("server", [10, 96, 0, 1], 0);
    svc.subject_alt_names = vec![
        "spiffe://cluster.local/ns/b/sa/extra".into(),
        "not-a-spiffe-id".into(),
    ];
    let state = state(
        vec![client(), workload("server", "10.0.1.5", &[SVC], 8080)],
        vec![svc],
    );
    let route = hbone(resolve_from_client(
        &state,
        "10.96.0.1:80",
        &RoundRobin::default(),
    ));
    assert_eq!(route.hbone_addr, addr("10.0.1.5:15008"));
    assert_eq!(route.authority, addr("10.0.1.5:8080"));
    assert_eq!(
        route.expected_identities,
        vec![id("b", "server"), id("b", "extra")]
    );
    assert_eq!(&*route.workload.name, "server");
    assert_eq!(route.service.as_ref().map(|s| s.key()), Some(SVC.into()));
    assert!(!route.via_waypoint);
}

#[test]
fn target_port_falls_back_to_the_service_then_the_service_port() {
    // The endpoint maps 80 to 0: the service's target port decides.
    let state1 = state(
        vec![client(), workload("server", "10.0.1.5", &[SVC], 0)],
        vec![service("server", [10, 96, 0, 1], 9090)],
    );
    let route = hbone(resolve_from_client(
        &state1,
        "10.96.0.1:80",
        &RoundRobin::default(),
    ));
    assert_eq!(route.authority, addr("10.0.1.5:9090"));
    // Both 0: the service port itself.
    let state2 = state(
        vec![client(), workload("server", "10.0.1.5", &[SVC], 0)],
        vec![service("server", [10, 96, 0, 1], 0)],
    );
    let route = hbone(resolve_from_client(
        &state2,
        "10.96.0.1:80",
        &RoundRobin::default(),
    ));
    assert_eq!(route.authority, addr("10.0.1.5:80"));
}

#[test]
fn endpoints_take_turns_and_unhealthy_ones_are_skipped() {
    let mut sick = workload("server-3", "10.0.1.7", &[SVC], 8080);
    sick.status = wl::WorkloadStatus::Unhealthy as i32;
    let state = state(
        vec![
            client(),
            workload("server-1", "10.0.1.5", &[SVC], 8080),
            workload("server-2", "10.0.1.6", &[SVC], 8080),
            sick,
        ],
        vec![service("server", [10, 96, 0, 1], 0)],
    );
    let balancer = RoundRobin::default();
    let picked: Vec<String> = (0..4)
        .map(|_| {
            hbone(resolve_from_client(&state, "10.96.0.1:80", &balancer))
                .workload
                .name
                .to_string()
        })
        .collect();
    assert_eq!(picked, ["server-1", "server-2", "server-1", "server-2"]);
}

#[test]
fn round_robin_is_per_service() {
    let balancer = RoundRobin::default();
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    assert_eq!(balancer.pick(&a, &[1, 2]), Some(&1));
    assert_eq!(balancer.pick(&b, &[1, 2]), Some(&1));
    assert_eq!(balancer.pick(&a, &[1, 2]), Some(&2));
    assert_eq!(balancer.pick::<u8>(&a, &[]), None);
}

#[test]
fn a_service_without_the_port_or_healthy_endpoints_is_refused() {
    let mut sick = workload("server", "10.0.1.5", &[SVC], 8080);
    sick.status = wl::WorkloadStatus::Unhealthy as i32;
    let state = state(
        vec![client(), sick],
        vec![service("server", [10, 96, 0, 1], 0)],
    );
    let balancer = RoundRobin::default();
    assert_eq!(
        resolve_from_client(&state, "10.96.0.1:81", &balancer),
        Err(RouteError::PortNotExposed {
            service: SVC.into(),
            port: 81
        })
    );
    assert_eq!(
        resolve_from_client(&state, "10.96.0.1:80", &balancer),
        Err(RouteError::NoHealthyEndpoint {
            service: SVC.into(),
            port: 80
        })
    );
}

#[test]
fn a_workload_address_goes_to_that_workload() {
    let state = state(
        vec![client(), workload("server", "10.0.1.5", &[], 0)],
        vec![],
    );
    let route = hbone(resolve_from_client(
        &state,
        "10.0.1.5:7000",
        &RoundRobin::default(),
    ));
    assert_eq!(route.hbone_addr, addr("10.0.1.5:15008"));
    assert_eq!(route.authority, addr("10.0.1.5:7000"));
    assert_eq!(route.expected_identities, vec![id("b", "server")]);
    assert!(route.service.is_none());
}

#[test]
fn workloads_outside_the_mesh_get_plaintext() {
    let mut legacy = workload("legacy", "10.0.1.9", &[SVC], 8080);
    legacy.tunnel_protocol = wl::TunnelProtocol::None as i32;
    let state = state(
        vec![client(), legacy],
        vec![service("server", [10, 96, 0, 1], 0)],
    );
    let balancer = RoundRobin::default();
    let direct = plaintext(resolve_from_client(&state, "10.0.1.9:7000", &balancer));
    assert_eq!(direct.addr, addr("10.0.1.9:7000"));
    assert_eq!(
        direct.workload.map(|w| w.name.to_string()).as_deref(),
        Some("legacy")
    );
    let via_service = plaintext(resolve_from_client(&state, "10.96.0.1:80", &balancer));
    assert_eq!(via_service.addr, addr("10.0.1.9:8080"));
    assert!(via_service.service.is_some());
}

#[test]
fn unknown_destinations_pass_through() {
    let state = state(vec![client()], vec![]);
    let route = plaintext(resolve_from_client(
        &state,
        "93.184.216.34:443",
        &RoundRobin::default(),
    ));
    assert_eq!(route.addr, addr("93.184.216.34:443"));
    assert!(route.workload.is_none() && route.service.is_none());
}

#[test]
fn addresses_of_another_network_are_not_ours() {
    let mut remote = workload("server", "10.0.1.5", &[], 0);
    remote.network = "remote".into();
    let state = state(vec![client(), remote], vec![]);
    let route = plaintext(resolve_from_client(
        &state,
        "10.0.1.5:80",
        &RoundRobin::default(),
    ));
    assert!(route.workload.is_none());
}

#[test]
fn a_service_with_a_waypoint_goes_to_the_waypoint_with_the_vip_authority() {
    let mut svc = service("server", [10, 96, 0, 1], 0);
    svc.waypoint = Some(waypoint_by_hostname());
    let state = state(
        vec![
            client(),
            workload("server", "10.0.1.5", &[SVC], 8080),
            workload("waypoint", "10.0.2.1", &[WAYPOINT_SVC], 0),
        ],
        vec![svc, service("waypoint", [10, 96, 0, 2], 0)],
    );
    let route = hbone(resolve_from_client(
        &state,
        "10.96.0.1:80",
        &RoundRobin::default(),
    ));
    assert!(route.via_waypoint);
    assert_eq!(route.hbone_addr, addr("10.0.2.1:15008"));
    assert_eq!(route.authority, addr("10.96.0.1:80"));
    assert_eq!(route.expected_identities, vec![id("b", "waypoint")]);
    assert_eq!(route.service.map(|s| s.key()), Some(SVC.into()));
}

#[test]
fn a_workload_with_a_waypoint_address_goes_there() {
    let mut server = workload("server", "10.0.1.5", &[], 0);
    server.waypoint = Some(waypoint_by_address([10, 0, 2, 1]));
    let state = state(
        vec![client(), server, workload("waypoint", "10.0.2.1", &[], 0)],
        vec![],
    );
    let route = hbone(resolve_from_client(
        &state,
        "10.0.1.5:7000",
        &RoundRobin::default(),
    ));
    assert!(route.via_waypoint);
    assert_eq!(route.hbone_addr, addr("10.0.2.1:15009"));
    assert_eq!(route.authority, addr("10.0.1.5:7000"));
    assert_eq!(&*route.workload.name, "waypoint");
}

#[test]
fn a_waypoint_address_may_be_a_service_vip() {
    let mut server = workload("server", "10.0.1.5", &[], 0);
    server.waypoint = Some(waypoint_by_address([10, 96, 0, 2]));
    let state = state(
        vec![
            client(),
            server,
            workload("waypoint", "10.0.2.1", &[WAYPOINT_SVC], 0),
        ],
        vec![service("waypoint", [10, 96, 0, 2], 0)],
    );
    let route = hbone(resolve_from_client(
        &state,
        "10.0.1.5:7000",
        &RoundRobin::default(),
    ));
    assert_eq!(route.hbone_addr, addr("10.0.2.1:15009"));
}

#[test]
fn an_unresolvable_waypoint_fails_closed() {
    let mut svc = service("server", [10, 96, 0, 1], 0);
    svc.waypoint = Some(waypoint_by_hostname());
    let mut server = workload("server", "10.0.1.5", &[SVC], 8080);
    server.waypoint = Some(waypoint_by_address([10, 0, 2, 99]));
    let state1 = state(vec![client(), server], vec![svc.clone()]);
    let balancer = RoundRobin::default();
    for dst in ["10.96.0.1:80", "10.0.1.5:8080"] {
        let error = resolve_from_client(&state1, dst, &balancer).unwrap_err();
        assert!(
            matches!(error, RouteError::WaypointUnresolved { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("refusing to bypass"), "{error}");
    }
    // The waypoint service exists but has no healthy endpoint.
    let mut sick = workload("waypoint", "10.0.2.1", &[WAYPOINT_SVC], 0);
    sick.status = wl::WorkloadStatus::Unhealthy as i32;
    let state2 = state(
        vec![client(), workload("server", "10.0.1.5", &[SVC], 8080), sick],
        vec![svc, service("waypoint", [10, 96, 0, 2], 0)],
    );
    let error = resolve_from_client(&state2, "10.96.0.1:80", &balancer).unwrap_err();
    assert!(error.to_string().contains("no healthy endpoint"), "{error}");
}

#[test]
fn the_waypoint_itself_goes_straight_to_the_destination() {
    let mut svc = service("server", [10, 96, 0, 1], 0);
    svc.waypoint = Some(waypoint_by_hostname());
    let state = state(
        vec![
            workload("server", "10.0.1.5", &[SVC], 8080),
            workload("waypoint", "10.0.2.1", &[WAYPOINT_SVC], 0),
        ],
        vec![svc, service("waypoint", [10, 96, 0, 2], 0)],
    );
    let source = state
        .workload_by_uid("Kubernetes//Pod/b/waypoint")
        .unwrap()
        .clone();
    let route = hbone(resolve(
        &state,
        &source,
        addr("10.96.0.1:80"),
        &RoundRobin::default(),
    ));
    assert!(!route.via_waypoint);
    assert_eq!(route.authority, addr("10.0.1.5:8080"));
}

#[test]
fn an_endpoint_is_reached_on_the_vips_address_family() {
    let mut dual = workload("server", "fd00::5", &[SVC], 8080);
    dual.addresses.insert(0, vec![10, 0, 1, 5]);
    let mut svc = service("server", [10, 96, 0, 1], 0);
    svc.addresses.push(wl::NetworkAddress {
        network: String::new(),
        address: "fd00::96:1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .to_vec(),
    });
    let state = state(vec![client(), dual], vec![svc]);
    let balancer = RoundRobin::default();
    let v4 = hbone(resolve_from_client(&state, "10.96.0.1:80", &balancer));
    assert_eq!(v4.authority, addr("10.0.1.5:8080"));
    let v6 = hbone(resolve_from_client(&state, "[fd00::96:1]:80", &balancer));
    assert_eq!(v6.authority, addr("[fd00::5]:8080"));
    assert_eq!(v6.hbone_addr, addr("[fd00::5]:15008"));
}

use std::collections::BTreeMap;

use proto::security as sec;
use proto::workload as wl;

use super::*;

fn workload(name: &str, ip: [u8; 4], services: &[&str]) -> wl::Workload {
    wl::Workload {
        uid: format!("Kubernetes//Pod/b/{name}"),
        name: name.into(),
        namespace: "b".into(),
        addresses: vec![ip.to_vec()],
        tunnel_protocol: wl::TunnelProtocol::Hbone as i32,
        trust_domain: "cluster.local".into(),
        service_account: "server".into(),
        node: "node-1".into(),
        services: services
            .iter()
            .map(|s| {
                (
                    (*s).to_owned(),
                    wl::PortList {
                        ports: vec![wl::Port {
                            service_port: 80,
                            target_port: 8080,
                        }],
                    },
                )
            })
            .collect::<BTreeMap<_, _>>(),
        authorization_policies: vec!["b/selected".into()],
        ..wl::Workload::default()
    }
}

fn service(name: &str, vip: [u8; 4]) -> wl::Service {
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
            target_port: 0,
        }],
        ..wl::Service::default()
    }
}

fn address_of_workload(w: wl::Workload) -> (String, wl::Address) {
    (
        w.uid.clone(),
        wl::Address {
            r#type: Some(wl::address::Type::Workload(w)),
        },
    )
}

fn address_of_service(s: wl::Service) -> (String, wl::Address) {
    (
        format!("{}/{}", s.namespace, s.hostname),
        wl::Address {
            r#type: Some(wl::address::Type::Service(s)),
        },
    )
}

fn policy(name: &str, scope: sec::Scope) -> (String, sec::Authorization) {
    (
        format!("b/{name}"),
        sec::Authorization {
            name: name.into(),
            namespace: "b".into(),
            scope: scope as i32,
            action: sec::Action::Deny as i32,
            groups: vec![],
            dry_run: false,
        },
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn workloads_and_services_are_found_by_every_key() {
    let mut state = State::default();
    let rejected = state.apply_addresses(
        vec![
            address_of_workload(workload(
                "server-1",
                [10, 0, 1, 5],
                &["b/server.b.svc.cluster.local"],
            )),
            address_of_service(service("server", [10, 96, 0, 10])),
        ],
        &[],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    let w = state.workload_by_address("", ip("10.0.1.5")).unwrap();
    assert_eq!(&*w.uid, "Kubernetes//Pod/b/server-1");
    assert_eq!(
        w.identity.to_string(),
        "spiffe://cluster.local/ns/b/sa/server"
    );
    assert_eq!(w.protocol, TunnelProtocol::Hbone);
    assert!(w.healthy);
    assert_eq!(
        w.target_port("b/server.b.svc.cluster.local", 80),
        Some(8080)
    );
    assert_eq!(w.target_port("b/server.b.svc.cluster.local", 81), None);
    assert!(
        state
            .workload_by_uid("Kubernetes//Pod/b/server-1")
            .is_some()
    );
    assert!(state.workload_by_address("", ip("10.0.1.6")).is_none());
    assert!(
        state
            .workload_by_address("other-network", ip("10.0.1.5"))
            .is_none()
    );

    let s = state.service_by_vip("", ip("10.96.0.10")).unwrap();
    assert_eq!(&*s.hostname, "server.b.svc.cluster.local");
    assert!(s.has_port(80) && !s.has_port(81));
    let endpoints: Vec<_> = state.endpoints(s).map(|w| w.name.clone()).collect();
    assert_eq!(endpoints, vec![Arc::<str>::from("server-1")]);
}

#[test]
fn updates_and_removals_keep_the_indexes_consistent() {
    let mut state = State::default();
    let svc = "b/server.b.svc.cluster.local";
    state.apply_addresses(
        vec![
            address_of_workload(workload("server-1", [10, 0, 1, 5], &[svc])),
            address_of_service(service("server", [10, 96, 0, 10])),
        ],
        &[],
    );
    // The pod moves to a new IP and stops backing the service.
    state.apply_addresses(
        vec![address_of_workload(workload(
            "server-1",
            [10, 0, 1, 9],
            &[],
        ))],
        &[],
    );
    assert!(state.workload_by_address("", ip("10.0.1.5")).is_none());
    assert!(state.workload_by_address("", ip("10.0.1.9")).is_some());
    let s = state.service_by_key(svc).unwrap().clone();
    assert_eq!(state.endpoints(&s).count(), 0);

    // Removal by resource name, for a workload and a service.
    state.apply_addresses(
        vec![],
        &["Kubernetes//Pod/b/server-1".to_owned(), svc.to_owned()],
    );
    assert!(state.workload_by_address("", ip("10.0.1.9")).is_none());
    assert!(state.service_by_vip("", ip("10.96.0.10")).is_none());
    assert_eq!(state.workloads().count() + state.services().count(), 0);
}

#[test]
fn an_address_taken_over_is_not_lost_when_the_old_owner_goes() {
    let mut state = State::default();
    state.apply_addresses(
        vec![address_of_workload(workload("old", [10, 0, 1, 5], &[]))],
        &[],
    );
    state.apply_addresses(
        vec![address_of_workload(workload("new", [10, 0, 1, 5], &[]))],
        &[],
    );
    state.apply_addresses(vec![], &["Kubernetes//Pod/b/old".to_owned()]);
    let w = state.workload_by_address("", ip("10.0.1.5")).unwrap();
    assert_eq!(&*w.name, "new");
}

#[test]
fn a_bad_resource_is_rejected_and_the_previous_version_stays() {
    let mut state = State::default();
    state.apply_addresses(
        vec![address_of_workload(workload("w", [10, 0, 1, 5], &[]))],
        &[],
    );

    let mut bad = workload("w", [10, 0, 1, 6], &[]);
    bad.addresses = vec![vec![10, 0, 1]];
    let mut good = workload("other", [10, 0, 1, 7], &[]);
    good.service_account = "other".into();
    let rejected = state.apply_addresses(
        vec![address_of_workload(bad), address_of_workload(good)],
        &[],
    );
    assert_eq!(rejected.len(), 1);
    assert!(
        rejected[0].to_string().contains("3 bytes"),
        "{}",
        rejected[0]
    );
    assert!(
        rejected[0].to_string().contains("Kubernetes//Pod/b/w"),
        "{}",
        rejected[0]
    );
    // The old version of the rejected one still serves; the good one applied.
    assert!(state.workload_by_address("", ip("10.0.1.5")).is_some());
    assert!(state.workload_by_address("", ip("10.0.1.6")).is_none());
    assert!(state.workload_by_address("", ip("10.0.1.7")).is_some());
}

#[test]
fn a_resource_under_the_wrong_name_is_rejected() {
    let mut state = State::default();
    let (_, address) = address_of_workload(workload("w", [10, 0, 1, 5], &[]));
    let rejected = state.apply_addresses(vec![("not-the-uid".to_owned(), address)], &[]);
    assert_eq!(rejected.len(), 1);
    assert!(state.workload_by_address("", ip("10.0.1.5")).is_none());

    let rejected = state.apply_addresses(vec![("x".to_owned(), wl::Address { r#type: None })], &[]);
    assert_eq!(rejected.len(), 1);
}

#[test]
fn policies_apply_by_scope() {
    let mut state = State::default();
    let mut other_ns = policy("other-ns", sec::Scope::Namespace);
    other_ns.1.namespace = "c".into();
    other_ns.0 = "c/other-ns".into();
    let mut global = policy("global", sec::Scope::Global);
    global.1.namespace = "istio-system".into();
    global.0 = "istio-system/global".into();
    let rejected = state.apply_policies(
        vec![
            policy("ns-wide", sec::Scope::Namespace),
            policy("selected", sec::Scope::WorkloadSelector),
            policy("not-selected", sec::Scope::WorkloadSelector),
            other_ns,
            global,
        ],
        &[],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    state.apply_addresses(
        vec![address_of_workload(workload("w", [10, 0, 1, 5], &[]))],
        &[],
    );
    let w = state.workload_by_address("", ip("10.0.1.5")).unwrap();
    let names: Vec<String> = state
        .policies_for(w)
        .iter()
        .map(|p| p.key().to_string())
        .collect();
    assert_eq!(
        names,
        vec!["b/ns-wide", "b/selected", "istio-system/global"]
    );

    state.apply_policies(vec![], &["b/selected".to_owned()]);
    let w = state.workload_by_address("", ip("10.0.1.5")).unwrap();
    assert_eq!(state.policies_for(w).len(), 2);
}

#[test]
fn a_policy_with_a_bad_address_is_rejected_not_widened() {
    let mut state = State::default();
    let (name, mut p) = policy("p", sec::Scope::Namespace);
    p.groups = vec![sec::Group {
        rules: vec![sec::Rules {
            matches: vec![sec::Match {
                source_ips: vec![sec::Address {
                    address: vec![10, 0, 0, 0],
                    length: 33,
                }],
                ..sec::Match::default()
            }],
        }],
    }];
    let rejected = state.apply_policies(vec![(name, p)], &[]);
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].reason.contains("33"), "{}", rejected[0]);
    assert!(state.policy("b/p").is_none());
}

#[test]
fn the_store_publishes_whole_snapshots() {
    let store = StateStore::new();
    let before = store.snapshot();
    store.update(|state| {
        state.apply_addresses(
            vec![address_of_workload(workload("w", [10, 0, 1, 5], &[]))],
            &[],
        )
    });
    // A reader holding the old snapshot is not disturbed.
    assert!(before.workload_by_address("", ip("10.0.1.5")).is_none());
    assert!(
        store
            .snapshot()
            .workload_by_address("", ip("10.0.1.5"))
            .is_some()
    );
}

#[test]
fn a_gateway_reference_resolves_to_its_workloads() {
    let mut state = State::default();
    let rejected = state.apply_addresses(
        vec![
            address_of_workload(workload(
                "waypoint-1",
                [10, 0, 1, 50],
                &["b/waypoint.b.svc.cluster.local"],
            )),
            address_of_service(service("waypoint", [10, 96, 0, 50])),
        ],
        &[],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    let names = |gateway: GatewayAddress| -> Vec<Arc<str>> {
        state
            .gateway_workloads(&gateway)
            .into_iter()
            .map(|w| w.name.clone())
            .collect()
    };
    let by = |destination| GatewayAddress {
        destination,
        hbone_port: 15008,
    };
    let expected = vec![Arc::<str>::from("waypoint-1")];
    let hostname = GatewayDestination::Hostname {
        namespace: "b".into(),
        hostname: "waypoint.b.svc.cluster.local".into(),
    };
    assert_eq!(names(by(hostname)), expected);
    for ip in ["10.96.0.50", "10.0.1.50"] {
        let address = GatewayDestination::Address {
            network: "".into(),
            ip: ip.parse().unwrap(),
        };
        assert_eq!(names(by(address)), expected, "{ip}");
    }
    let unknown = GatewayDestination::Hostname {
        namespace: "b".into(),
        hostname: "nope.b.svc.cluster.local".into(),
    };
    assert!(names(by(unknown)).is_empty());
}

#[test]
fn the_key_built_on_the_stack_is_the_key() {
    let short = Service::try_from(service("server", [10, 96, 0, 10])).unwrap();
    assert_eq!(
        short.with_key(str::to_owned),
        "b/server.b.svc.cluster.local"
    );
    assert_eq!(short.with_key(str::to_owned), *short.key());
    // Past the stack buffer, the same key, allocated.
    let mut long = short.clone();
    long.hostname = format!("{}.svc.cluster.local", "a".repeat(400)).into();
    assert_eq!(long.with_key(str::to_owned), *long.key());
    assert!(long.with_key(|key| key.len() > 320 && key.starts_with("b/aaa")));
    // Exactly the buffer's size still fits.
    let mut full = short.clone();
    full.hostname = "h".repeat(320 - 2).into();
    assert_eq!(full.with_key(str::to_owned), *full.key());
}

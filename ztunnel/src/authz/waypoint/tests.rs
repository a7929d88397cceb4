//! The waypoint in front of a workload is let in (positive), and nobody
//! else is: not another identity, not the waypoint's identity from
//! another address, and not the waypoint when a DENY policy names it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use identity::Identity;
use proto::security as sec;
use proto::workload as wl;

use super::*;

const WAYPOINT_IP: [u8; 4] = [10, 0, 0, 50];

fn pod(name: &str, sa: &str, ip: [u8; 4], services: &[&str]) -> (String, wl::Address) {
    let uid = format!("Kubernetes//Pod/b/{name}");
    let workload = wl::Workload {
        uid: uid.clone(),
        name: name.into(),
        namespace: "b".into(),
        addresses: vec![ip.to_vec()],
        tunnel_protocol: wl::TunnelProtocol::Hbone as i32,
        trust_domain: "cluster.local".into(),
        service_account: sa.into(),
        node: "node-b".into(),
        status: wl::WorkloadStatus::Healthy as i32,
        services: services
            .iter()
            .map(|s| {
                let ports = wl::PortList {
                    ports: vec![wl::Port {
                        service_port: 80,
                        target_port: 8080,
                    }],
                };
                ((*s).to_owned(), ports)
            })
            .collect::<BTreeMap<_, _>>(),
        ..wl::Workload::default()
    };
    (
        uid,
        wl::Address {
            r#type: Some(wl::address::Type::Workload(workload)),
        },
    )
}

fn service(name: &str, vip: [u8; 4], waypoint: Option<&str>) -> (String, wl::Address) {
    let hostname = format!("{name}.b.svc.cluster.local");
    let service = wl::Service {
        name: name.into(),
        namespace: "b".into(),
        hostname: hostname.clone(),
        addresses: vec![wl::NetworkAddress {
            network: String::new(),
            address: vip.to_vec(),
        }],
        ports: vec![wl::Port {
            service_port: 80,
            target_port: 8080,
        }],
        waypoint: waypoint.map(|w| wl::GatewayAddress {
            destination: Some(wl::gateway_address::Destination::Hostname(
                wl::NamespacedHostname {
                    namespace: "b".into(),
                    hostname: format!("{w}.b.svc.cluster.local"),
                },
            )),
            hbone_mtls_port: 15008,
        }),
        ..wl::Service::default()
    };
    (
        format!("b/{hostname}"),
        wl::Address {
            r#type: Some(wl::address::Type::Service(service)),
        },
    )
}

/// `echo` (behind the waypoint) and `plain` (no waypoint) in namespace
/// `b`, the waypoint's pod and service, and `policy` for namespace `b`.
fn state(policy: Option<(sec::Action, &str)>) -> State {
    let mut state = State::default();
    let rejected = state.apply_addresses(
        vec![
            service("waypoint", [10, 96, 0, 50], None),
            service("echo", [10, 96, 0, 1], Some("waypoint")),
            service("plain", [10, 96, 0, 2], None),
            pod(
                "waypoint",
                "waypoint",
                WAYPOINT_IP,
                &["b/waypoint.b.svc.cluster.local"],
            ),
            pod(
                "echo",
                "echo",
                [10, 0, 0, 20],
                &["b/echo.b.svc.cluster.local"],
            ),
            pod(
                "plain",
                "plain",
                [10, 0, 0, 21],
                &["b/plain.b.svc.cluster.local"],
            ),
        ],
        &[],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    if let Some((action, principal)) = policy {
        let authorization = sec::Authorization {
            name: "only".into(),
            namespace: "b".into(),
            scope: sec::Scope::Namespace as i32,
            action: action as i32,
            groups: vec![sec::Group {
                rules: vec![sec::Rules {
                    matches: vec![sec::Match {
                        principals: vec![sec::StringMatch {
                            match_type: Some(sec::string_match::MatchType::Exact(principal.into())),
                        }],
                        ..sec::Match::default()
                    }],
                }],
            }],
            dry_run: false,
        };
        let rejected = state.apply_policies(vec![("b/only".into(), authorization)], &[]);
        assert!(rejected.is_empty(), "{rejected:?}");
    }
    state
}

fn from(sa: &str, ip: [u8; 4]) -> Connection {
    let id = Identity::new("cluster.local", "b", sa).unwrap();
    Connection::new(
        IpAddr::from(ip),
        Some(id),
        IpAddr::from([10, 0, 0, 20]),
        8080,
    )
}

fn workload<'a>(state: &'a State, name: &str) -> &'a Workload {
    state
        .workload_by_uid(&format!("Kubernetes//Pod/b/{name}"))
        .unwrap()
}

#[test]
fn the_waypoint_of_the_workloads_service_is_let_in_past_an_allow_policy() {
    let state = state(Some((sec::Action::Allow, "cluster.local/ns/a/sa/a")));
    let echo = workload(&state, "echo");
    let verdict = authorize(&state, echo, &from("waypoint", WAYPOINT_IP));
    assert_eq!(verdict.decision, Decision::Allow);
}

#[test]
fn another_identity_is_still_subject_to_policy() {
    let state = state(Some((sec::Action::Allow, "cluster.local/ns/a/sa/a")));
    let echo = workload(&state, "echo");
    let verdict = authorize(&state, echo, &from("intruder", WAYPOINT_IP));
    assert_eq!(verdict.decision, Decision::NotAllowed);
}

#[test]
fn the_waypoint_identity_from_another_address_is_not_the_waypoint() {
    let state = state(Some((sec::Action::Allow, "cluster.local/ns/a/sa/a")));
    let echo = workload(&state, "echo");
    assert!(!from_own_waypoint(
        &state,
        echo,
        &from("waypoint", [10, 0, 0, 99])
    ));
    let verdict = authorize(&state, echo, &from("waypoint", [10, 0, 0, 99]));
    assert_eq!(verdict.decision, Decision::NotAllowed);
}

#[test]
fn a_waypoint_is_only_let_in_to_the_workloads_behind_it() {
    let state = state(Some((sec::Action::Allow, "cluster.local/ns/a/sa/a")));
    let plain = workload(&state, "plain");
    assert!(!from_own_waypoint(
        &state,
        plain,
        &from("waypoint", WAYPOINT_IP)
    ));
    let verdict = authorize(&state, plain, &from("waypoint", WAYPOINT_IP));
    assert_eq!(verdict.decision, Decision::NotAllowed);
}

#[test]
fn a_deny_policy_naming_the_waypoint_still_denies_it() {
    let state = state(Some((sec::Action::Deny, "cluster.local/ns/b/sa/waypoint")));
    let echo = workload(&state, "echo");
    let verdict = authorize(&state, echo, &from("waypoint", WAYPOINT_IP));
    assert_eq!(verdict.decision, Decision::DeniedBy("b/only".into()));
}

use std::net::Ipv4Addr;

use super::*;
use crate::mesh::topology::Topology;

const MESH: &str = "
name: t
network: {nodes: 192.168.50.0/24, services: 10.96.0.0/24}
nodes:
  - {name: a, podCIDR: 10.1.0.0/24}
  - {name: b, podCIDR: 10.2.0.0/24}
pods:
  - {name: web, namespace: shop, node: a}
  - {name: db, namespace: shop, node: b}
  - {name: web, namespace: ops, node: a}
resources:
  - kind: Service
    metadata: {name: web, namespace: shop}
    spec: {ports: [{port: 80}]}
  - kind: Service
    metadata: {name: db, namespace: shop}
    spec: {clusterIP: 10.96.0.11, ports: [{port: 5432}]}
";

fn plan() -> Plan {
    let topology = Topology::parse("t.yaml", MESH).unwrap();
    Plan::new("t.yaml", &topology, "m1").unwrap()
}

fn command() -> Vec<String> {
    vec!["/bin/waypoint".to_owned()]
}

#[test]
fn a_waypoint_gets_the_next_free_pod_address_vip_and_veth() {
    let mut plan = plan();
    let pod = plan
        .add_waypoint("shop", "waypoint", None, command())
        .unwrap()
        .clone();
    // Node a holds 10.1.0.10 and .11; VIPs .10 (web) and .11 (db) are taken.
    assert_eq!(pod.name, "waypoint");
    assert_eq!(pod.node, "a");
    assert_eq!(pod.ip, Ipv4Addr::new(10, 1, 0, 12));
    assert_eq!(pod.host_veth, "wp0");
    assert_eq!(pod.netns, "m1-shop-waypoint");
    assert_eq!(pod.service_account, "waypoint");
    assert_eq!(pod.labels[GATEWAY_NAME_LABEL], "waypoint");
    assert_eq!(pod.labels["istio.io/dataplane-mode"], "none");
    assert_eq!(pod.command, command());
    let (_, service) = plan.waypoints().next().unwrap();
    assert_eq!(service.vip, Ipv4Addr::new(10, 96, 0, 12));
    assert_eq!(service.ports, vec![15008]);
    // Pods resolve it like any Service.
    let web = plan.find_pod("shop/web").unwrap();
    assert!(
        plan.hosts_file(web)
            .contains("10.96.0.12\twaypoint.shop.svc.cluster.local"),
        "{}",
        plan.hosts_file(web)
    );

    let other = plan
        .add_waypoint("ops", "waypoint", Some("b"), command())
        .unwrap();
    assert_eq!(other.ip, Ipv4Addr::new(10, 2, 0, 11));
    assert_eq!(other.host_veth, "wp1");
    assert_eq!(plan.waypoints().count(), 2);
}

#[test]
fn what_cannot_be_added_is_refused_with_the_way_out() {
    let mut plan = plan();
    let error = plan
        .add_waypoint("nowhere", "waypoint", None, command())
        .unwrap_err();
    assert!(
        error.contains("no namespace `nowhere`") && error.contains("shop"),
        "{error}"
    );
    let error = plan
        .add_waypoint("shop", "web", None, command())
        .unwrap_err();
    assert!(
        error.contains("already has a Service `web`") && error.contains("--name"),
        "{error}"
    );
    let error = plan
        .add_waypoint("shop", "waypoint", Some("c"), command())
        .unwrap_err();
    assert!(error.contains("no node `c`"), "{error}");
    plan.add_waypoint("shop", "waypoint", None, command())
        .unwrap();
    let error = plan
        .add_waypoint("shop", "waypoint", None, command())
        .unwrap_err();
    assert!(
        error.contains("meshctl waypoint delete -n shop --name waypoint"),
        "{error}"
    );
    // Refusals change nothing.
    assert_eq!(plan.waypoints().count(), 1);
    assert_eq!(plan.pods.len(), 4);
}

#[test]
fn removing_a_waypoint_frees_its_address_and_vip() {
    let mut plan = plan();
    let before = plan.clone();
    let added = plan
        .add_waypoint("shop", "waypoint", None, command())
        .unwrap()
        .clone();
    let removed = plan.remove_waypoint("shop", "waypoint").unwrap();
    assert_eq!(removed, added);
    assert_eq!(plan, before);
    let error = plan.remove_waypoint("shop", "waypoint").unwrap_err();
    assert!(error.contains("meshctl waypoint list"), "{error}");
    let again = plan
        .add_waypoint("shop", "waypoint", None, command())
        .unwrap();
    assert_eq!(again.ip, added.ip);
}

#[test]
fn the_objects_are_a_waypoint_gateway_and_its_managed_service() {
    let mut plan = plan();
    plan.add_waypoint("shop", "waypoint", None, command())
        .unwrap();
    let (pod, service) = plan.waypoints().next().unwrap();
    let [gateway, svc] = objects(pod, service).try_into().unwrap();
    assert_eq!(gateway["kind"], "Gateway");
    assert_eq!(gateway["spec"]["gatewayClassName"], "istio-waypoint");
    assert_eq!(gateway["spec"]["listeners"][0]["name"], "mesh");
    assert_eq!(gateway["spec"]["listeners"][0]["port"], 15008);
    assert_eq!(gateway["spec"]["listeners"][0]["protocol"], "HBONE");
    assert_eq!(svc["kind"], "Service");
    assert_eq!(svc["metadata"]["labels"][MANAGED_LABEL], MANAGED_VALUE);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.12");
    assert_eq!(svc["spec"]["selector"][GATEWAY_NAME_LABEL], "waypoint");
    assert_eq!(file_name("shop", "waypoint"), "waypoint-shop-waypoint.yaml");
}

#[test]
fn enrolling_a_namespace_sets_and_removes_its_label() {
    let plan = plan();
    let shop = plan.namespaces.iter().find(|ns| ns.name == "shop").unwrap();
    let enrolled = with_use_waypoint(shop, Some("waypoint"));
    assert_eq!(enrolled.labels[USE_WAYPOINT_LABEL], "waypoint");
    let released = with_use_waypoint(&enrolled, None);
    assert_eq!(&released, shop);
}

#[test]
fn a_state_saved_before_service_networks_were_recorded_still_loads() {
    let mut saved = serde_json::to_value(plan()).unwrap();
    saved.as_object_mut().unwrap().remove("service_network");
    let loaded: Plan = serde_json::from_value(saved).unwrap();
    assert_eq!(loaded.service_network.to_string(), "10.96.0.0/16");
}

use serde_json::{Value, json};

use super::*;

fn now() -> SystemTime {
    age::parse("2026-12-01T08:15:00Z").unwrap()
}

fn pod(name: &str, state: &str, error: Value) -> Value {
    json!({
        "uid": format!("Kubernetes//Pod/demo/{name}"), "name": name, "namespace": "demo",
        "addresses": ["10.20.1.4"], "capture": format!("netns /var/run/netns/demo-{name}"),
        "state": state, "error": error, "since": "2026-12-01T08:14:00Z"
    })
}

fn cert(sa: &str, state: &str, error: Value, not_after: Value) -> Value {
    json!({
        "identity": format!("spiffe://cluster.local/ns/demo/sa/{sa}"), "state": state,
        "error": error, "serial": if not_after.is_null() { Value::Null } else { json!("5f0c") },
        "not_before": if not_after.is_null() { Value::Null } else { json!("2026-11-30T08:10:01Z") },
        "not_after": not_after
    })
}

fn connection(id: u64, direction: &str) -> Value {
    json!({
        "id": id, "direction": direction, "protocol": "HBONE", "src_addr": "10.20.2.7:40312",
        "src_identity": null, "src_workload": null, "dst_addr": "10.20.1.4:8080",
        "dst_workload": null, "dst_identity": null, "dst_service": null,
        "started": "2026-12-01T08:12:30Z"
    })
}

/// A node whose everything is fine: two pods, three mesh workloads, two
/// certificates, three connections.
fn healthy() -> Value {
    let workload = |name: &str| {
        json!({
            "uid": format!("Kubernetes//Pod/demo/{name}"), "name": name, "namespace": "demo",
            "protocol": "HBONE", "healthy": true
        })
    };
    json!({
        "node": "node-1",
        "control_plane": {
            "address": "https://127.0.0.1:15012", "connected": true,
            "since": "2026-12-01T08:10:00Z", "synced": true, "config_version": "17",
            "responses": 12, "nacks": 0, "last_error": null
        },
        "pods": [pod("backend-v1", "captured", Value::Null), pod("frontend", "captured", Value::Null)],
        "workloads": [workload("backend-v1"), workload("frontend"), workload("db")],
        "services": [{"name": "backend", "namespace": "demo", "hostname": "backend.demo.svc.cluster.local"}],
        "policies": [],
        "certificates": [
            cert("frontend", "available", Value::Null, json!("2026-12-02T08:10:00Z")),
            cert("backend", "available", Value::Null, json!("2026-12-01T20:15:00Z")),
        ],
        "connections": [connection(1, "inbound"), connection(2, "outbound"), connection(3, "inbound")]
    })
}

fn dump(value: Value) -> ConfigDump {
    serde_json::from_value(value).unwrap()
}

#[test]
fn a_healthy_node_at_a_glance() {
    let text = render(&dump(healthy()), Output::Table, now()).unwrap();
    assert_eq!(
        text,
        "\
Node:           node-1
Control plane:  connected to https://127.0.0.1:15012 since 2026-12-01T08:10:00Z (5m ago)
Config:         version 17, synced, 12 responses, 0 NACKs
Local pods:     2 captured, 0 failed
Mesh:           3 workloads, 1 service, 0 policies
Certificates:   2 of 2 valid, nearest expiry spiffe://cluster.local/ns/demo/sa/backend in 12h
Connections:    3 open (2 inbound, 1 outbound)
"
    );
    assert_eq!(render(&dump(healthy()), Output::Wide, now()).unwrap(), text);
}

#[test]
fn a_disconnected_control_plane_says_since_when_and_why() {
    let mut value = healthy();
    value["control_plane"] = json!({
        "address": "https://istiod.istio-system:15012", "connected": false,
        "since": "2026-12-01T07:45:00Z", "synced": true, "config_version": "17",
        "responses": 12, "nacks": 2,
        "last_error": "transport error: connection refused"
    });
    let text = render(&dump(value.clone()), Output::Table, now()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1],
        "Control plane:  DISCONNECTED from https://istiod.istio-system:15012 since 2026-12-01T07:45:00Z (30m ago): serving the config it holds"
    );
    assert_eq!(
        lines[2],
        "Config:         version 17, synced, 12 responses, 2 NACKs"
    );
    assert_eq!(
        lines[3],
        "Last error:     transport error: connection refused"
    );

    // Never connected: no config at all.
    value["control_plane"] = json!({
        "address": "https://istiod:15012", "connected": false, "since": null, "synced": false,
        "config_version": null, "responses": 0, "nacks": 0, "last_error": "dns error"
    });
    let text = render(&dump(value), Output::Table, now()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1],
        "Control plane:  DISCONNECTED from https://istiod:15012: no complete config yet"
    );
    assert_eq!(
        lines[2],
        "Config:         no version yet, not synced (waiting for every config type), 0 responses, 0 NACKs"
    );
}

#[test]
fn a_failed_pod_is_counted_and_its_error_shown() {
    let mut value = healthy();
    value["pods"] = json!([
        pod("frontend", "captured", Value::Null),
        pod(
            "worker",
            "failed",
            json!("netns /var/run/netns/demo-worker: no such file or directory")
        ),
        pod("api", "failed", Value::Null),
    ]);
    let summary = Summary::new(&dump(value.clone()), now());
    assert_eq!(
        (
            summary.pods.total,
            summary.pods.captured,
            summary.pods.failed
        ),
        (3, 1, 2)
    );
    let text = render(&dump(value), Output::Table, now()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[3], "Local pods:     1 captured, 2 failed");
    assert_eq!(
        lines[4],
        "                demo/api failed: no reason given (since 2026-12-01T08:14:00Z (60s ago))"
    );
    assert_eq!(
        lines[5],
        "                demo/worker failed: netns /var/run/netns/demo-worker: no such file or directory (since 2026-12-01T08:14:00Z (60s ago))"
    );
    assert_eq!(
        lines[6],
        "Mesh:           3 workloads, 1 service, 0 policies"
    );
}

#[test]
fn expired_failed_and_pending_certificates_are_called_out() {
    let mut value = healthy();
    value["certificates"] = json!([
        cert(
            "frontend",
            "available",
            Value::Null,
            json!("2026-12-02T08:10:00Z")
        ),
        cert(
            "db",
            "expired",
            json!("CA unreachable"),
            json!("2026-12-01T06:15:00Z")
        ),
        cert(
            "backend",
            "failed",
            json!("CSR refused: identity not authorized"),
            json!("2026-12-01T10:15:00Z")
        ),
        cert("new", "initializing", Value::Null, Value::Null),
        // `available`, but past its not_after: not served, whatever the state.
        cert(
            "stale",
            "available",
            Value::Null,
            json!("2026-12-01T08:14:00Z")
        ),
    ]);
    let summary = Summary::new(&dump(value.clone()), now());
    let certs = &summary.certificates;
    assert_eq!((certs.total, certs.valid), (5, 2));
    let nearest = certs.nearest_expiry.as_ref().unwrap();
    assert_eq!(
        nearest.identity,
        "spiffe://cluster.local/ns/demo/sa/backend"
    );
    let problems: Vec<(&str, bool)> = certs
        .problems
        .iter()
        .map(|p| (p.identity.rsplit('/').next().unwrap(), p.valid))
        .collect();
    assert_eq!(
        problems,
        [
            ("backend", true),
            ("db", false),
            ("new", false),
            ("stale", false)
        ]
    );

    let text = render(&dump(value), Output::Table, now()).unwrap();
    let lines: Vec<&str> = text.lines().skip(5).take(5).collect();
    assert_eq!(
        lines,
        [
            "Certificates:   2 of 5 valid, nearest expiry spiffe://cluster.local/ns/demo/sa/backend in 2h",
            "                spiffe://cluster.local/ns/demo/sa/backend: renewal FAILED (retried); still served, expires in 2h: CSR refused: identity not authorized",
            "                spiffe://cluster.local/ns/demo/sa/db: EXPIRED 2h ago, its connections fail closed: CA unreachable",
            "                spiffe://cluster.local/ns/demo/sa/new: waiting for the CA, no certificate yet",
            "                spiffe://cluster.local/ns/demo/sa/stale: EXPIRED 60s ago, its connections fail closed",
        ]
    );
}

#[test]
fn an_empty_node_says_so() {
    let mut value = healthy();
    for list in [
        "pods",
        "workloads",
        "services",
        "policies",
        "certificates",
        "connections",
    ] {
        value[list] = json!([]);
    }
    let text = render(&dump(value), Output::Table, now()).unwrap();
    let lines: Vec<&str> = text.lines().skip(3).collect();
    assert_eq!(
        lines,
        [
            "Local pods:     none enrolled on this node",
            "Mesh:           0 workloads, 0 services, 0 policies",
            "Certificates:   none (no local workload identities)",
            "Connections:    0 open (0 inbound, 0 outbound)",
        ]
    );
}

#[test]
fn json_and_yaml_print_the_summary_object() {
    let mut value = healthy();
    value["pods"][1] = pod("frontend", "failed", json!("nftables: permission denied"));
    let json: Value =
        serde_json::from_str(&render(&dump(value.clone()), Output::Json, now()).unwrap()).unwrap();
    assert_eq!(json["node"], "node-1");
    assert_eq!(json["control_plane"]["connected"], true);
    assert_eq!(json["control_plane"]["config_version"], "17");
    assert_eq!(
        json["pods"],
        json!({
            "total": 2, "captured": 1, "failed": 1,
            "not_captured": [{
                "namespace": "demo", "name": "frontend", "state": "failed",
                "error": "nftables: permission denied", "since": "2026-12-01T08:14:00Z"
            }]
        })
    );
    assert_eq!(
        json["mesh"],
        json!({"workloads": 3, "services": 1, "policies": 0})
    );
    assert_eq!(
        json["certificates"],
        json!({
            "total": 2, "valid": 2, "problems": [],
            "nearest_expiry": {
                "identity": "spiffe://cluster.local/ns/demo/sa/backend",
                "not_after": "2026-12-01T20:15:00Z"
            }
        })
    );
    assert_eq!(
        json["connections"],
        json!({"open": 3, "inbound": 2, "outbound": 1})
    );

    let yaml: Value =
        serde_yaml_ng::from_str(&render(&dump(value), Output::Yaml, now()).unwrap()).unwrap();
    assert_eq!(yaml, json);
}

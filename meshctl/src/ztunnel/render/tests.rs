use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

/// The clock of every test: 08:15 on the day of the doc's examples.
fn now() -> SystemTime {
    age::parse("2026-12-01T08:15:00Z").unwrap()
}

fn parse<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn workload(namespace: &str, name: &str, extra: Value) -> Value {
    let mut w = json!({
        "uid": format!("Kubernetes//Pod/{namespace}/{name}"),
        "name": name,
        "namespace": namespace,
        "addresses": ["10.20.1.4"],
        "network": "",
        "protocol": "HBONE",
        "identity": format!("spiffe://cluster.local/ns/{namespace}/sa/{name}"),
        "waypoint": null,
        "node": "node-1",
        "canonical_name": name,
        "canonical_revision": "latest",
        "workload_name": name,
        "cluster_id": "Kubernetes",
        "authorization_policies": [],
        "healthy": true,
        "services": {}
    });
    for (key, value) in extra.as_object().unwrap() {
        w[key] = value.clone();
    }
    w
}

fn workloads_fixture() -> Vec<Workload> {
    parse(json!([
        workload(
            "demo",
            "frontend",
            json!({
                "addresses": ["10.20.2.7", "fd00::7"],
                "node": "node-2",
                "services": {"demo/frontend.demo.svc.cluster.local": [{"service_port": 80, "target_port": 8080}]}
            })
        ),
        workload(
            "default",
            "legacy-db",
            json!({
                "addresses": [], "protocol": "NONE", "healthy": false, "node": null
            })
        ),
        workload(
            "demo",
            "backend-v1",
            json!({
                "waypoint": {"destination": {"Hostname": {"namespace": "demo", "hostname": "waypoint.demo.svc.cluster.local"}}, "hbone_port": 15008},
                "services": {
                    "demo/backend.demo.svc.cluster.local": [{"service_port": 80, "target_port": 8080}],
                    "demo/api.demo.svc.cluster.local": [{"service_port": 443, "target_port": 8443}]
                }
            })
        ),
    ]))
}

#[test]
fn workloads_table_sorted_by_namespace_then_name() {
    let text = workloads(&workloads_fixture(), Output::Table).unwrap();
    assert_eq!(
        text,
        "\
NAMESPACE   NAME         ADDRESS             NODE     PROTOCOL
default     legacy-db    -                   -        NONE
demo        backend-v1   10.20.1.4           node-1   HBONE
demo        frontend     10.20.2.7,fd00::7   node-2   HBONE
"
    );
}

#[test]
fn workloads_wide_adds_identity_waypoint_services_health() {
    let text = workloads(&workloads_fixture(), Output::Wide).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "NAMESPACE   NAME         ADDRESS             NODE     PROTOCOL   IDENTITY                                         WAYPOINT                                SERVICES                                                              HEALTHY",
            "default     legacy-db    -                   -        NONE       spiffe://cluster.local/ns/default/sa/legacy-db   -                                       -                                                                     false",
            "demo        backend-v1   10.20.1.4           node-1   HBONE      spiffe://cluster.local/ns/demo/sa/backend-v1     waypoint.demo.svc.cluster.local:15008   demo/api.demo.svc.cluster.local,demo/backend.demo.svc.cluster.local   true",
            "demo        frontend     10.20.2.7,fd00::7   node-2   HBONE      spiffe://cluster.local/ns/demo/sa/frontend       -                                       demo/frontend.demo.svc.cluster.local                                  true",
        ]
    );
}

#[test]
fn workloads_json_and_yaml_are_the_objects_as_sent_sorted() {
    let fixture = workloads_fixture();
    let json: Value = serde_json::from_str(&workloads(&fixture, Output::Json).unwrap()).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["legacy-db", "backend-v1", "frontend"]);
    assert_eq!(
        json[0],
        workload(
            "default",
            "legacy-db",
            json!({
                "addresses": [], "protocol": "NONE", "healthy": false, "node": null
            })
        )
    );

    let yaml = workloads(&fixture, Output::Yaml).unwrap();
    let from_yaml: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(from_yaml, json);
    // Enums read as in the JSON, not as YAML tags (`!Hostname`).
    assert!(
        yaml.contains(
            "    destination:\n      Hostname:\n        namespace: demo\n        hostname: waypoint.demo.svc.cluster.local\n"
        ),
        "{yaml}"
    );
    assert!(!yaml.contains('!'), "{yaml}");
    assert!(
        yaml.starts_with("- uid: Kubernetes//Pod/default/legacy-db\n  name: legacy-db\n"),
        "fields in ztunnel's order: {yaml}"
    );
}

#[test]
fn empty_lists_say_so_in_tables_and_are_empty_arrays_in_json() {
    assert_eq!(
        workloads(&[], Output::Table).unwrap(),
        "No workloads in ztunnel's config.\n"
    );
    assert_eq!(
        services(&[], Output::Wide).unwrap(),
        "No services in ztunnel's config.\n"
    );
    assert_eq!(
        connections(&[], Output::Table, now()).unwrap(),
        "No open connections.\n"
    );
    assert_eq!(policies(&[], Output::Json).unwrap(), "[]\n");
    assert_eq!(certs(&[], Output::Yaml, now()).unwrap(), "[]\n");
}

fn services_fixture() -> Vec<Service> {
    parse(json!([
        {
            "name": "backend", "namespace": "demo", "hostname": "backend.demo.svc.cluster.local",
            "vips": [{"network": "", "ip": "10.96.0.10"}],
            "ports": [[80, 8080], [443, 0], [9090, 9090]],
            "subject_alt_names": [],
            "waypoint": {"destination": {"Address": {"network": "", "ip": "10.20.1.9"}}, "hbone_port": 15008}
        },
        {
            "name": "api", "namespace": "demo", "hostname": "api.demo.svc.cluster.local",
            "vips": [{"network": "west", "ip": "10.96.0.11"}, {"network": "", "ip": "fd00::b"}],
            "ports": [[443, 8443]],
            "subject_alt_names": ["spiffe://cluster.local/ns/demo/sa/api", "spiffe://other/ns/demo/sa/api"],
            "waypoint": null
        }
    ]))
}

#[test]
fn services_table_and_wide() {
    assert_eq!(
        services(&services_fixture(), Output::Table).unwrap(),
        "\
NAMESPACE   NAME      VIPS                      PORTS
demo        api       west/10.96.0.11,fd00::b   443->8443
demo        backend   10.96.0.10                80->8080,443,9090
"
    );
    let wide = services(&services_fixture(), Output::Wide).unwrap();
    let lines: Vec<&str> = wide.lines().collect();
    assert!(lines[0].ends_with("PORTS               HOSTNAME                         WAYPOINT          SUBJECT-ALT-NAMES"), "{}", lines[0]);
    assert!(lines[1].ends_with("api.demo.svc.cluster.local       -                 spiffe://cluster.local/ns/demo/sa/api,spiffe://other/ns/demo/sa/api"), "{}", lines[1]);
    assert!(
        lines[2].ends_with("backend.demo.svc.cluster.local   10.20.1.9:15008   -"),
        "{}",
        lines[2]
    );
}

fn policies_fixture() -> Vec<Policy> {
    parse(json!([
        {
            "name": "deny-legacy", "namespace": "demo", "scope": "NAMESPACE", "action": "DENY",
            "groups": [
                [[{"source_ips": ["10.30.0.0/16"]}, {"not_principals": [{"Prefix": "cluster.local/ns/demo/"}]}],
                 [{"destination_ports": [5432, 6379]}]],
                []
            ],
            "dry_run": true
        },
        {
            "name": "allow-frontend", "namespace": "demo", "scope": "WORKLOAD_SELECTOR", "action": "ALLOW",
            "groups": [[[{"principals": [{"Exact": "cluster.local/ns/demo/sa/frontend"}, "Presence"], "namespaces": [{"Suffix": "-prod"}], "...": []}]]],
            "dry_run": false
        },
        {
            "name": "nothing", "namespace": "default", "scope": "GLOBAL", "action": "ALLOW",
            "groups": [], "dry_run": false
        }
    ]))
}

#[test]
fn policies_table() {
    assert_eq!(
        policies(&policies_fixture(), Output::Table).unwrap(),
        "\
NAMESPACE   NAME             SCOPE               ACTION   DRY-RUN
default     nothing          GLOBAL              ALLOW    false
demo        allow-frontend   WORKLOAD_SELECTOR   ALLOW    false
demo        deny-legacy      NAMESPACE           DENY     true
"
    );
}

#[test]
fn policies_wide_spells_out_the_rules() {
    let wide = policies(&policies_fixture(), Output::Wide).unwrap();
    let rules: Vec<&str> = wide
        .lines()
        .map(|line| {
            line.split("   ")
                .filter(|cell| !cell.is_empty())
                .last()
                .unwrap()
                .trim()
        })
        .collect();
    assert_eq!(
        rules,
        [
            "RULES",
            "(no groups: matches nothing)",
            "namespaces=*-prod,principals=cluster.local/ns/demo/sa/frontend|*",
            "(source_ips=10.30.0.0/16 or not_principals=cluster.local/ns/demo/*) and destination_ports=5432|6379; any connection",
        ]
    );
}

fn certs_fixture() -> Vec<Certificate> {
    parse(json!([
        {
            "identity": "spiffe://cluster.local/ns/demo/sa/frontend", "state": "failed",
            "error": "CA unreachable: connection refused", "serial": "7a",
            "not_before": "2026-12-01T06:15:00Z", "not_after": "2026-12-01T10:15:00Z"
        },
        {
            "identity": "spiffe://cluster.local/ns/demo/sa/backend", "state": "available",
            "error": null, "serial": "5f0c",
            "not_before": "2026-12-01T08:10:01Z", "not_after": "2026-12-02T08:10:01Z"
        },
        {
            "identity": "spiffe://cluster.local/ns/demo/sa/new", "state": "initializing",
            "error": null, "serial": null, "not_before": null, "not_after": null
        },
        {
            "identity": "spiffe://cluster.local/ns/demo/sa/db", "state": "expired",
            "error": "CA unreachable: connection refused", "serial": "11",
            "not_before": "2026-11-30T06:15:00Z", "not_after": "2026-12-01T06:15:00Z"
        }
    ]))
}

#[test]
fn certs_table_shows_relative_expiry() {
    assert_eq!(
        certs(&certs_fixture(), Output::Table, now()).unwrap(),
        "\
IDENTITY                                     STATE          EXPIRES
spiffe://cluster.local/ns/demo/sa/backend    available      in 23h55m
spiffe://cluster.local/ns/demo/sa/db         expired        2h ago
spiffe://cluster.local/ns/demo/sa/frontend   failed         in 2h
spiffe://cluster.local/ns/demo/sa/new        initializing   -
"
    );
}

#[test]
fn certs_wide_adds_times_serial_and_error() {
    let wide = certs(&certs_fixture(), Output::Wide, now()).unwrap();
    let lines: Vec<&str> = wide.lines().collect();
    assert!(
        lines[0]
            .ends_with("EXPIRES     NOT-BEFORE             NOT-AFTER              SERIAL   ERROR"),
        "{}",
        lines[0]
    );
    assert!(
        lines[3].ends_with("in 2h       2026-12-01T06:15:00Z   2026-12-01T10:15:00Z   7a       CA unreachable: connection refused"),
        "{}",
        lines[3]
    );
    assert!(
        lines[4].ends_with("-           -                      -                      -        -"),
        "{}",
        lines[4]
    );
}

fn connections_fixture() -> Vec<Connection> {
    parse(json!([
        {
            "id": 42, "direction": "inbound", "protocol": "HBONE",
            "src_addr": "10.20.2.7:40312", "src_identity": "spiffe://cluster.local/ns/demo/sa/frontend",
            "src_workload": "frontend", "dst_addr": "10.20.1.4:8080", "dst_workload": "backend-v1",
            "dst_identity": "spiffe://cluster.local/ns/demo/sa/backend",
            "dst_service": "backend.demo.svc.cluster.local", "started": "2026-12-01T08:12:30Z"
        },
        {
            "id": 7, "direction": "outbound", "protocol": "TCP",
            "src_addr": "10.20.1.4:51000", "src_identity": null, "src_workload": "backend-v1",
            "dst_addr": "93.184.216.34:443", "dst_workload": null, "dst_identity": null,
            "dst_service": null, "started": "2026-11-30T06:15:00Z"
        },
        {
            "id": 43, "direction": "inbound", "protocol": "TCP",
            "src_addr": "192.168.1.20:6000", "src_identity": null, "src_workload": null,
            "dst_addr": "10.20.1.4:8080", "dst_workload": "backend-v1", "dst_identity": null,
            "dst_service": null, "started": "2026-12-01T08:14:59Z"
        }
    ]))
}

#[test]
fn connections_table_sorted_by_id_with_workloads_where_known() {
    assert_eq!(
        connections(&connections_fixture(), Output::Table, now()).unwrap(),
        "\
ID   DIRECTION   PROTOCOL   SOURCE              DESTINATION         AGE
7    outbound    TCP        backend-v1          93.184.216.34:443   1d2h
42   inbound     HBONE      frontend            backend-v1          2m30s
43   inbound     TCP        192.168.1.20:6000   backend-v1          1s
"
    );
}

#[test]
fn connections_wide_adds_addresses_identities_service() {
    let wide = connections(&connections_fixture(), Output::Wide, now()).unwrap();
    let lines: Vec<&str> = wide.lines().collect();
    assert!(lines[0].ends_with("AGE     SRC-ADDR            SRC-IDENTITY                                 DST-ADDR            DST-IDENTITY                                DST-SERVICE                      STARTED"), "{}", lines[0]);
    assert!(
        lines[2].ends_with("2m30s   10.20.2.7:40312     spiffe://cluster.local/ns/demo/sa/frontend   10.20.1.4:8080      spiffe://cluster.local/ns/demo/sa/backend   backend.demo.svc.cluster.local   2026-12-01T08:12:30Z"),
        "{}",
        lines[2]
    );
}

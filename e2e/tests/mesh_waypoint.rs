//! Local-mesh scenarios of the waypoint (issue 6): deployed with
//! `meshctl waypoint apply --enroll-namespace`, the namespace's service
//! traffic goes through it and is routed and authorized per request.
//! Each test brings up its own mesh (see `mesh_support`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use std::time::Duration;

use mesh_support::waypoint::{
    answered_by, deploy_waypoint, request, route_b, topology, wait_answered_by,
};
use mesh_support::{Mesh, can_run, eventually, text};

#[test]
fn w01_traffic_goes_through_the_waypoint_until_it_is_removed() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w01"));
    let (code, _) = request(&mesh, "a", "GET", "http://b.ns-b:8080/before", &[]);
    assert_eq!(code, 200, "b answers before there is a waypoint");

    deploy_waypoint(&mesh);
    let list = text(&mesh.meshctl(&["waypoint", "list"]));
    assert!(
        list.lines()
            .any(|l| l.contains("ns-b") && l.contains("running") && l.trim_end().ends_with("ns-b")),
        "{list}"
    );
    eventually(
        "requests go through the waypoint",
        Duration::from_secs(10),
        || {
            let (code, body) = request(&mesh, "a", "GET", "http://b.ns-b:8080/through", &[]);
            let log = mesh.log("ns-b/waypoint");
            if code == 200 && log.contains("path=/through") {
                Ok(())
            } else {
                Err(format!("{code} {body}; waypoint log:\n{log}"))
            }
        },
    );
    let log = mesh.log("ns-b/waypoint");
    let line = log.lines().find(|l| l.contains("path=/through")).unwrap();
    // The waypoint knows who called, and the app's ztunnel let it in.
    assert!(
        line.contains("src.identity=spiffe://cluster.local/ns/ns-a/sa/a"),
        "{line}"
    );
    assert!(line.contains("response_code=200"), "{line}");
    // Its metrics moved: Istio's request counter, from inside its pod.
    let metrics = mesh.exec(
        "ns-b/waypoint",
        &["curl", "-sS", "-m", "5", "http://127.0.0.1:15020/metrics"],
    );
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let counted = metrics.lines().find(|l| {
        l.starts_with("istio_requests_total{")
            && l.contains("reporter=\"waypoint\"")
            && l.contains("source_principal=\"spiffe://cluster.local/ns/ns-a/sa/a\"")
            && l.contains("destination_service=\"b.ns-b.svc.cluster.local\"")
            && l.contains("response_code=\"200\"")
    });
    let count: f64 = counted
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counted request in:\n{metrics}"));
    assert!(count >= 1.0, "{metrics}");

    let out = mesh.meshctl(&["waypoint", "delete", "-n", "ns-b"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("no longer uses it"), "{}", text(&out));
    // Straight to b again: the removed waypoint is no longer in the path.
    eventually(
        "requests reach b without the waypoint",
        Duration::from_secs(10),
        || match request(&mesh, "a", "GET", "http://b.ns-b:8080/after", &[]) {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        },
    );
    let list = text(&mesh.meshctl(&["waypoint", "list"]));
    assert!(list.starts_with("no waypoints"), "{list}");
    assert!(!mesh.state()["netns"].to_string().contains("ns-b-waypoint"));
}

#[test]
fn w02_a_header_route_sends_requests_to_v2_and_the_rest_to_v1() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w02"));
    deploy_waypoint(&mesh);
    route_b(
        &mesh,
        "route",
        r#"
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: b-v2, port: 8080}]
  - backendRefs: [{name: b-v1, port: 8080}]
"#,
    );
    wait_answered_by(&mesh, "x-version: v2", "b-v2");
    for _ in 0..5 {
        let (code, body) = request(&mesh, "a", "GET", "http://b.ns-b:8080/", &["x-version: v2"]);
        assert_eq!((code, answered_by(&body).as_str()), (200, "b-v2"));
        let (code, body) = request(&mesh, "a", "GET", "http://b.ns-b:8080/", &[]);
        assert_eq!((code, answered_by(&body).as_str()), (200, "b-v1"));
    }
}

#[test]
fn w03_l7_policy_allows_reads_and_admin_writes_only_for_its_caller() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w03"));
    deploy_waypoint(&mesh);
    mesh.apply(
        "policy",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: b-l7, namespace: ns-b}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]
  action: ALLOW
  rules:
  - to: [{operation: {methods: [GET], paths: ["/public*"]}}]
  - from: [{source: {principals: [cluster.local/ns/ns-a/sa/a2]}}]
    to: [{operation: {methods: [POST], paths: ["/admin*"]}}]
"#,
    );
    eventually(
        "the policy is in force",
        Duration::from_secs(10),
        || match request(&mesh, "a", "POST", "http://b.ns-b:8080/admin", &[]) {
            (403, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        },
    );
    let (code, body) = request(&mesh, "a", "POST", "http://b.ns-b:8080/admin", &[]);
    assert_eq!(code, 403);
    // Envoy's words, which Istio users' tooling already knows; no rule named.
    assert_eq!(body.trim(), "RBAC: access denied");
    let (code, _) = request(&mesh, "a", "GET", "http://b.ns-b:8080/public/x", &[]);
    assert_eq!(code, 200, "GET /public is allowed for everyone");
    let (code, _) = request(&mesh, "a2", "POST", "http://b.ns-b:8080/admin", &[]);
    assert_eq!(code, 200, "POST /admin is allowed for a2");
    let (code, _) = request(&mesh, "a2", "DELETE", "http://b.ns-b:8080/admin", &[]);
    assert_eq!(code, 403, "what no rule allows is refused, for a2 too");
}

#[test]
fn w04_a_90_10_canary_splits_1000_requests_within_5_points() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w04"));
    deploy_waypoint(&mesh);
    // The probe rule tells when the resource is in force: it arrives whole.
    route_b(
        &mesh,
        "canary",
        r#"
  - matches: [{headers: [{name: x-probe, value: canary}]}]
    backendRefs: [{name: b-v2, port: 8080}]
  - backendRefs:
    - {name: b-v1, port: 8080, weight: 90}
    - {name: b-v2, port: 8080, weight: 10}
"#,
    );
    wait_answered_by(&mesh, "x-probe: canary", "b-v2");
    let out = mesh.exec(
        "a",
        &[
            "traffic",
            "http",
            "http://b.ns-b:8080/",
            "-n",
            "1000",
            "-c",
            "4",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["succeeded"], 1000, "{summary}");
    let v1 = summary["servers"]["b-v1"].as_u64().unwrap_or(0);
    let v2 = summary["servers"]["b-v2"].as_u64().unwrap_or(0);
    assert_eq!(v1 + v2, 1000, "{summary}");
    eprintln!("canary split over 1000 requests: b-v1 {v1}, b-v2 {v2}");
    // 90% of 1000 with a binomial spread of about 9.5: 5 points is 5 sigma.
    assert!(
        (850..=950).contains(&v1),
        "b-v1 got {v1} of 1000, b-v2 {v2}"
    );
}

#[test]
fn w05_a_request_timeout_answers_504_in_time() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w05"));
    deploy_waypoint(&mesh);
    route_b(
        &mesh,
        "timeout",
        r#"
  - backendRefs: [{name: b, port: 8080}]
    timeouts: {request: 500ms}
"#,
    );
    let slow = "http://b.ns-b:8080/?delay=3s";
    let started = eventually("the timeout is in force", Duration::from_secs(15), || {
        let started = std::time::Instant::now();
        match request(&mesh, "a", "GET", slow, &[]) {
            (504, body) => Ok((started.elapsed(), body)),
            (code, body) => Err(format!("{code} {body}")),
        }
    });
    let (elapsed, body) = started;
    assert_eq!(body.trim(), "upstream request timeout");
    // 500 ms plus an exec and a curl; well before the 3 s answer.
    assert!(
        elapsed < Duration::from_millis(2500),
        "504 after {elapsed:?}"
    );
    let (code, _) = request(&mesh, "a", "GET", "http://b.ns-b:8080/?delay=100ms", &[]);
    assert_eq!(code, 200, "an answer within the timeout passes");
}

//! Local-mesh scenarios of the waypoint (issue 6): deployed with
//! `meshctl waypoint apply --enroll-namespace`, the namespace's service
//! traffic goes through it and is routed and authorized per request.
//! Each test brings up its own mesh (see `mesh_support`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use std::time::Duration;

use mesh_support::{Mesh, can_run, eventually, text};

/// ns-a: callers `a` and `a2` (service accounts of their own). ns-b: `b-v1`
/// (node-b) and `b-v2` (node-a), both behind Service `b`, each also behind
/// a Service of its version.
fn topology(name: &str) -> String {
    format!(
        r#"
name: {name}
nodes:
  - {{name: node-a, podCIDR: 10.20.1.0/24}}
  - {{name: node-b, podCIDR: 10.20.2.0/24}}
namespaces:
  - {{name: ns-a, labels: {{istio.io/dataplane-mode: ambient}}}}
  - {{name: ns-b, labels: {{istio.io/dataplane-mode: ambient}}}}
pods:
  - {{name: a, namespace: ns-a, node: node-a, serviceAccount: a}}
  - {{name: a2, namespace: ns-a, node: node-b, serviceAccount: a2}}
  - {{name: b-v1, namespace: ns-b, node: node-b, serviceAccount: b, labels: {{app: b, version: v1}},
     command: [echo-http, --listen, "0.0.0.0:8080"], ports: [8080]}}
  - {{name: b-v2, namespace: ns-b, node: node-a, serviceAccount: b, labels: {{app: b, version: v2}},
     command: [echo-http, --listen, "0.0.0.0:8080"], ports: [8080]}}
resources:
  - apiVersion: v1
    kind: Service
    metadata: {{name: b, namespace: ns-b}}
    spec: {{selector: {{app: b}}, ports: [{{name: http, port: 8080}}]}}
  - apiVersion: v1
    kind: Service
    metadata: {{name: b-v1, namespace: ns-b}}
    spec: {{selector: {{app: b, version: v1}}, ports: [{{name: http, port: 8080}}]}}
  - apiVersion: v1
    kind: Service
    metadata: {{name: b-v2, namespace: ns-b}}
    spec: {{selector: {{app: b, version: v2}}, ports: [{{name: http, port: 8080}}]}}
"#
    )
}

/// `meshctl waypoint apply -n ns-b --enroll-namespace`, checked.
fn deploy_waypoint(mesh: &Mesh) {
    let out = mesh.meshctl(&["waypoint", "apply", "-n", "ns-b", "--enroll-namespace"]);
    assert!(
        out.status.success(),
        "waypoint apply failed:\n{}",
        text(&out)
    );
    assert!(
        text(&out).contains("namespace `ns-b` now uses it"),
        "{}",
        text(&out)
    );
}

/// The status code and body of one request from `pod`.
fn request(mesh: &Mesh, pod: &str, method: &str, url: &str, headers: &[&str]) -> (u16, String) {
    let mut command = vec![
        "curl",
        "-sS",
        "-m",
        "10",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
        url,
    ];
    for header in headers {
        command.extend(["-H", header]);
    }
    let out = mesh.exec(pod, &command);
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = body.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The `pod` field of echo-http's answer.
fn answered_by(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["pod"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("<not echo-http: {body}>"))
}

/// Applies, under `name`, an HTTPRoute on Service b's port 8080 with these
/// `rules` (YAML list items at the `rules:` indentation).
fn route_b(mesh: &Mesh, name: &str, rules: &str) {
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: b, namespace: ns-b}}\nspec:\n  \
         parentRefs: [{{group: \"\", kind: Service, name: b, port: 8080}}]\n  rules:\n{rules}"
    );
    mesh.apply(name, &yaml);
}

/// Waits until a request from a with `header` is answered by `pod`: a
/// route arrives whole, so once its probe rule answers, all of it is in
/// force.
fn wait_answered_by(mesh: &Mesh, header: &str, pod: &str) {
    let what = format!("requests with {header} are answered by {pod}");
    eventually(&what, Duration::from_secs(10), || {
        let (_, body) = request(mesh, "a", "GET", "http://b.ns-b:8080/", &[header]);
        match answered_by(&body) {
            answered if answered == pod => Ok(()),
            other => Err(other),
        }
    });
}

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

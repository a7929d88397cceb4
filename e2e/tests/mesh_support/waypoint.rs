//! What the waypoint scenarios share (`mesh_waypoint*.rs`): their
//! topology, deploying the waypoint, one request from a pod, and an
//! HTTPRoute on Service `b`.

use std::time::Duration;

use super::{Mesh, eventually, text};

/// ns-a: callers `a` and `a2` (service accounts of their own). ns-b: `b-v1`
/// (node-b) and `b-v2` (node-a), both behind Service `b`, each also behind
/// a Service of its version.
pub fn topology(name: &str) -> String {
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
pub fn deploy_waypoint(mesh: &Mesh) {
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
pub fn request(mesh: &Mesh, pod: &str, method: &str, url: &str, headers: &[&str]) -> (u16, String) {
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
pub fn answered_by(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["pod"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("<not echo-http: {body}>"))
}

/// Applies, under `name`, an HTTPRoute on Service b's port 8080 with these
/// `rules` (YAML list items at the `rules:` indentation).
pub fn route_b(mesh: &Mesh, name: &str, rules: &str) {
    let yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: b, namespace: ns-b}}\nspec:\n  \
         parentRefs: [{{group: \"\", kind: Service, name: b, port: 8080}}]\n  rules:\n{rules}"
    );
    mesh.apply(name, &yaml);
}

/// Waits until route_b's route is in force, then until a request from a
/// with `header` (the route's probe rule) is answered by `pod`.
///
/// The probe alone cannot tell: its pod is also an endpoint of Service b,
/// so before the route arrives it answers about half the probes anyway.
/// The waypoint's `/config_dump` does tell, since a route arrives whole.
pub fn wait_answered_by(mesh: &Mesh, header: &str, pod: &str) {
    eventually(
        "the waypoint holds route ns-b/b",
        Duration::from_secs(10),
        || {
            let out = mesh.exec(
                "ns-b/waypoint",
                &[
                    "curl",
                    "-sS",
                    "-m",
                    "5",
                    "http://127.0.0.1:15000/config_dump",
                ],
            );
            let dump: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
            let routed = dump["services"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["hostname"] == "b.ns-b.svc.cluster.local")
                .flat_map(|s| s["routes"].as_array().into_iter().flatten())
                .filter(|p| p["port"] == 8080)
                .flat_map(|p| p["routes"].as_array().into_iter().flatten())
                .any(|r| r.as_str().is_some_and(|r| r.starts_with("ns-b/b ")));
            if routed {
                Ok(())
            } else {
                Err(dump["services"].to_string())
            }
        },
    );
    let what = format!("requests with {header} are answered by {pod}");
    eventually(&what, Duration::from_secs(10), || {
        let (_, body) = request(mesh, "a", "GET", "http://b.ns-b:8080/", &[header]);
        match answered_by(&body) {
            answered if answered == pod => Ok(()),
            other => Err(other),
        }
    });
}

/// The shared topology, with `b-v2` answering every request 503
/// (`echo-http --fail 1`): half of Service b's endpoints, so half of its
/// requests, fail.
pub fn topology_with_broken_v2(name: &str) -> String {
    let topology = topology(name);
    let (before, after) = topology.split_once("name: b-v2,").unwrap();
    let after = after.replacen(
        r#"command: [echo-http, --listen, "0.0.0.0:8080"]"#,
        r#"command: [echo-http, --listen, "0.0.0.0:8080", --fail, "1"]"#,
        1,
    );
    format!("{before}name: b-v2,{after}")
}

/// `traffic http` from pod a: the summary as JSON (failed requests are
/// counted in it, not an error).
pub fn traffic(mesh: &Mesh, url: &str, requests: u64, concurrency: u64) -> serde_json::Value {
    let (n, c) = (requests.to_string(), concurrency.to_string());
    let args = [
        "traffic",
        "http",
        url,
        "-n",
        &n,
        "-c",
        &c,
        "-o",
        "json",
        "--allow-errors",
    ];
    let out = mesh.exec("a", &args);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The waypoint's access-log events for `path`, one per request, in the
/// order they completed.
pub fn logged(mesh: &Mesh, path: &str) -> Vec<String> {
    let needle = format!("path={path} ");
    mesh.log("ns-b/waypoint")
        .lines()
        .filter(|l| l.contains("request complete") && l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

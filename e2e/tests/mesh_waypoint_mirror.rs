//! Local-mesh scenario of the waypoint's `RequestMirror` filter (issue 6):
//! a copy of each request reaches the mirror service, marked as a copy,
//! while the client gets the real backend's answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use std::time::Duration;

use mesh_support::waypoint::{
    answered_by, deploy_waypoint, request, route_b, topology, wait_answered_by,
};
use mesh_support::{Mesh, bin_dir, can_run, eventually};

/// The shared topology plus pod `m` in ns-b behind Service `mirror`: an
/// echo-http that logs every request it answers (debug), so the test can
/// see the copies it gets.
fn topology_with_mirror(name: &str) -> String {
    let echo = bin_dir().join("echo-http");
    let (pods, resources) = topology(name)
        .split_once("resources:\n")
        .map(|(p, r)| (p.to_owned(), r.to_owned()))
        .unwrap();
    format!(
        r#"{pods}  - {{name: m, namespace: ns-b, node: node-b, serviceAccount: m, labels: {{app: mirror}},
     command: [env, RUST_LOG=debug, "{echo}", --listen, "0.0.0.0:8080"], ports: [8080]}}
resources:
  - apiVersion: v1
    kind: Service
    metadata: {{name: mirror, namespace: ns-b}}
    spec: {{selector: {{app: mirror}}, ports: [{{name: http, port: 8080}}]}}
{resources}"#,
        echo = echo.display()
    )
}

/// The requests pod `m` answered, as its log lines.
fn answered_by_mirror(mesh: &Mesh, path: &str) -> Vec<String> {
    // `path="/x"` or `path=/x`, whichever the log format quotes.
    let (quoted, bare) = (format!("path=\"{path}\""), format!("path={path} "));
    mesh.log("ns-b/m")
        .lines()
        .filter(|l| l.contains("answered") && (l.contains(&quoted) || l.contains(&bare)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn w12_a_mirror_gets_a_copy_of_each_request_and_the_client_the_real_answer() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology_with_mirror("e2e-w12"));
    deploy_waypoint(&mesh);
    route_b(
        &mesh,
        "mirror",
        r#"
  - matches: [{headers: [{name: x-probe, value: mirror}]}]
    backendRefs: [{name: b-v2, port: 8080}]
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: mirror, port: 8080}}
    backendRefs: [{name: b-v1, port: 8080}]
"#,
    );
    wait_answered_by(&mesh, "x-probe: mirror", "b-v2");

    for _ in 0..5 {
        let (code, body) = request(&mesh, "a", "POST", "http://b.ns-b:8080/copied", &[]);
        assert_eq!(code, 200, "{body}");
        // The client gets the real backend's answer, never the mirror's.
        assert_eq!(answered_by(&body), "b-v1");
    }
    // Copies are sent in the background: they may land just after.
    let copies = eventually(
        "the mirror answers a copy of each request",
        Duration::from_secs(10),
        || match answered_by_mirror(&mesh, "/copied") {
            copies if copies.len() == 5 => Ok(copies),
            copies => Err(format!("{} copies: {copies:?}", copies.len())),
        },
    );
    // A POST with its body, mirrored as it was sent.
    assert!(
        copies.iter().all(|l| l.contains("method=POST")),
        "{copies:?}"
    );
    // Requests the rule does not mirror send no copy.
    let (code, _) = request(
        &mesh,
        "a",
        "GET",
        "http://b.ns-b:8080/probe",
        &["x-probe: mirror"],
    );
    assert_eq!(code, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert!(answered_by_mirror(&mesh, "/probe").is_empty());
}

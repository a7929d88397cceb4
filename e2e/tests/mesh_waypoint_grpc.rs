//! Local-mesh scenarios of the waypoint's HTTP/2 and gRPC (issue 6):
//! unary gRPC calls from a real gRPC client (`traffic grpc`, tonic) to a
//! real gRPC server (`echo-grpc`) through the waypoint, with OK and error
//! statuses; and plain HTTP/2 with prior knowledge from curl. Each test
//! brings up its own mesh (see `mesh_support`), named `e2e-w4x`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use std::time::Duration;

use mesh_support::waypoint::deploy_waypoint;
use mesh_support::{Mesh, bin_dir, can_run, eventually, text};

/// The gRPC method echo-grpc serves, as the waypoint logs its path.
const ECHO_PATH: &str = "/mesh.sample.v1.Echo/Echo";

/// ns-a: caller `a`. ns-b: `g-v1` (node-b) and `g-v2` (node-a) behind
/// Service `g`, each serving gRPC (echo-grpc) on 9090 and HTTP/1.1 and
/// h2c (echo-http) on 8080.
fn topology(name: &str) -> String {
    let serve = r#"command: [sh, -c, "echo-http --listen 0.0.0.0:8080 & exec echo-grpc --listen 0.0.0.0:9090"],
     ports: [8080, 9090]"#;
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
  - {{name: g-v1, namespace: ns-b, node: node-b, serviceAccount: g, labels: {{app: g, version: v1}},
     {serve}}}
  - {{name: g-v2, namespace: ns-b, node: node-a, serviceAccount: g, labels: {{app: g, version: v2}},
     {serve}}}
resources:
  - apiVersion: v1
    kind: Service
    metadata: {{name: g, namespace: ns-b}}
    spec:
      selector: {{app: g}}
      ports: [{{name: grpc, port: 9090}}, {{name: http, port: 8080}}]
"#
    )
}

/// The shared checks, plus the gRPC app these scenarios run.
fn can_run_grpc() -> bool {
    if !can_run() {
        return false;
    }
    let echo_grpc = bin_dir().join("echo-grpc");
    assert!(
        echo_grpc.is_file(),
        "{} is missing: cargo build --workspace --bins",
        echo_grpc.display()
    );
    true
}

/// `traffic grpc g.ns-b:9090` from pod a with `args`: the summary.
fn traffic_grpc(mesh: &Mesh, args: &[&str]) -> serde_json::Value {
    let mut command = vec![
        "traffic",
        "grpc",
        "g.ns-b:9090",
        "-o",
        "json",
        "--allow-errors",
    ];
    command.extend_from_slice(args);
    let out = mesh.exec("a", &command);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)))
}

/// The waypoint's access-log lines that contain every needle.
fn waypoint_log_lines(mesh: &Mesh, needles: &[&str]) -> Vec<String> {
    mesh.log("ns-b/waypoint")
        .lines()
        .filter(|line| needles.iter().all(|needle| line.contains(needle)))
        .map(str::to_owned)
        .collect()
}

/// The value of the waypoint's `istio_requests_total` sample whose labels
/// contain every needle (0 when there is none).
fn requests_total(mesh: &Mesh, needles: &[&str]) -> f64 {
    let out = mesh.exec(
        "ns-b/waypoint",
        &["curl", "-sS", "-m", "5", "http://127.0.0.1:15020/metrics"],
    );
    let metrics = String::from_utf8_lossy(&out.stdout).into_owned();
    metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| needles.iter().all(|needle| l.contains(needle)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn w40_grpc_unary_calls_keep_their_statuses_and_messages_through_the_waypoint() {
    if !can_run_grpc() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w40"));
    deploy_waypoint(&mesh);
    eventually(
        "gRPC calls go through the waypoint",
        Duration::from_secs(10),
        || {
            let summary = traffic_grpc(&mesh, &["-n", "1"]);
            let through = !waypoint_log_lines(&mesh, &[ECHO_PATH]).is_empty();
            if summary["grpc_statuses"]["OK"] == 1 && through {
                Ok(())
            } else {
                Err(format!("{summary}"))
            }
        },
    );

    // OK: every reply echoed the message (traffic checks it) and came from
    // one of the two endpoints.
    let ok = traffic_grpc(&mesh, &["-n", "20", "-c", "2", "--message", "hello-w40"]);
    assert_eq!(ok["succeeded"], 20, "{ok}");
    assert_eq!(ok["grpc_statuses"]["OK"], 20, "{ok}");
    let servers = ok["servers"].as_object().unwrap();
    let answered: u64 = servers.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(answered, 20, "{ok}");
    assert!(
        servers.keys().all(|pod| pod == "g-v1" || pod == "g-v2"),
        "{ok}"
    );

    // An error status and its message pass through unchanged, and are not
    // the waypoint's: each names the pod that answered.
    let failed = traffic_grpc(
        &mesh,
        &[
            "-n",
            "4",
            "--metadata",
            "x-echo-grpc-status=NOT_FOUND",
            "--metadata",
            "x-echo-grpc-message=no item 42 in ns-b",
        ],
    );
    assert_eq!(failed["grpc_statuses"]["NOT_FOUND"], 4, "{failed}");
    assert_eq!(
        failed["grpc_messages"]["NOT_FOUND: no item 42 in ns-b"], 4,
        "{failed}"
    );
    assert_eq!(failed["errors"], 0, "{failed}");
    let answered: u64 = failed["servers"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(answered, 4, "{failed}");

    // The waypoint's access log: HTTP/2, HTTP 200, and the gRPC status.
    let logged_ok = waypoint_log_lines(
        &mesh,
        &[
            ECHO_PATH,
            "protocol=\"HTTP/2\"",
            "response_code=200",
            "grpc_status=0",
        ],
    );
    assert!(logged_ok.len() >= 20, "{logged_ok:#?}");
    assert!(
        logged_ok[0].contains("src.identity=spiffe://cluster.local/ns/ns-a/sa/a"),
        "{}",
        logged_ok[0]
    );
    let logged_not_found = waypoint_log_lines(&mesh, &[ECHO_PATH, "grpc_status=5"]);
    assert_eq!(logged_not_found.len(), 4, "{logged_not_found:#?}");

    // Its metrics: Istio's request counter with the gRPC protocol and status.
    let grpc = [
        "reporter=\"waypoint\"",
        "destination_service=\"g.ns-b.svc.cluster.local\"",
        "request_protocol=\"grpc\"",
        "response_code=\"200\"",
    ];
    let with = |status: &'static str| -> Vec<&'static str> {
        grpc.iter().copied().chain([status]).collect()
    };
    assert!(
        requests_total(&mesh, &with("grpc_response_status=\"0\"")) >= 21.0,
        "OK calls counted"
    );
    assert_eq!(
        requests_total(&mesh, &with("grpc_response_status=\"5\"")),
        4.0,
        "NOT_FOUND calls counted"
    );
}

#[test]
fn w41_http2_with_prior_knowledge_stays_http2_through_the_waypoint() {
    if !can_run_grpc() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w41"));
    deploy_waypoint(&mesh);
    // curl as an HTTP/2 client: `-w` says which version it spoke.
    let curl = |version: &str, path: &str| -> (String, serde_json::Value) {
        let url = format!("http://g.ns-b:8080{path}");
        let out = mesh.exec(
            "a",
            &[
                "curl",
                "-sS",
                "-m",
                "10",
                version,
                "-w",
                "\n%{http_version} %{http_code}",
                &url,
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", ""));
        let report = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
        (status.to_owned(), report)
    };
    eventually(
        "HTTP/2 requests go through the waypoint",
        Duration::from_secs(10),
        || {
            let (status, report) = curl("--http2-prior-knowledge", "/probe-h2");
            let through = !waypoint_log_lines(&mesh, &["path=/probe-h2"]).is_empty();
            if status == "2 200" && through {
                Ok(())
            } else {
                Err(format!("{status} {report}"))
            }
        },
    );

    for n in 0..5 {
        let path = format!("/h2-{n}");
        let (status, report) = curl("--http2-prior-knowledge", &path);
        assert_eq!(status, "2 200", "{report}");
        // The app got HTTP/2 too: the waypoint keeps the client's version.
        assert_eq!(report["http_version"], "HTTP/2.0", "{report}");
        assert_eq!(report["path"], path.as_str(), "{report}");
    }
    let logged = waypoint_log_lines(
        &mesh,
        &["path=/h2-", "protocol=\"HTTP/2\"", "response_code=200"],
    );
    assert_eq!(logged.len(), 5, "{logged:#?}");
    // No gRPC status on a request that is not gRPC.
    assert!(
        logged.iter().all(|line| !line.contains("grpc_status")),
        "{logged:#?}"
    );

    // HTTP/1.1 beside it, on the same port, stays HTTP/1.1.
    let (status, report) = curl("--http1.1", "/h1");
    assert_eq!(status, "1.1 200", "{report}");
    assert_eq!(report["http_version"], "HTTP/1.1", "{report}");
    let logged = waypoint_log_lines(&mesh, &["path=/h1", "protocol=\"HTTP/1.1\""]);
    assert_eq!(logged.len(), 1, "{}", mesh.log("ns-b/waypoint"));
}

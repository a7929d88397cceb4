//! Local-mesh scenarios of the waypoint's traces (issue 6): the waypoint
//! exports its spans with OTLP/gRPC to a real receiver, `otlp-sink`,
//! running in a pod of the mesh (its stdout, one JSON line per span, is
//! the pod's log). The mesh's `tracing` block points every waypoint at it
//! with sampling 0, so only requests whose caller sampled them are traced.
//! Each test brings up its own mesh (see `mesh_support`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use std::time::Duration;

use mesh_support::waypoint::{deploy_waypoint, request, route_b, wait_answered_by};
use mesh_support::{Mesh, bin_dir, can_run, eventually};
use serde_json::Value;

/// The caller's trace and span, as a client instrumented with OTel sends.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The waypoint scenarios' pods and services (`mesh_support::waypoint`)
/// on `10.<net>.x`, plus namespace `observability` (not in the mesh)
/// with `otlp-sink` as node-b's first pod, so at `10.<net>.2.10`.
fn topology(name: &str, net: u8) -> String {
    format!(
        r#"
name: {name}
nodes:
  - {{name: node-a, podCIDR: 10.{net}.1.0/24}}
  - {{name: node-b, podCIDR: 10.{net}.2.0/24}}
namespaces:
  - {{name: ns-a, labels: {{istio.io/dataplane-mode: ambient}}}}
  - {{name: ns-b, labels: {{istio.io/dataplane-mode: ambient}}}}
  - {{name: observability}}
pods:
  - {{name: otlp-sink, namespace: observability, node: node-b,
     command: [otlp-sink, --listen, "0.0.0.0:4317"], ports: [4317]}}
  - {{name: a, namespace: ns-a, node: node-a, serviceAccount: a}}
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
tracing: {{otlpEndpoint: "http://10.{net}.2.10:4317", sampling: 0}}
"#
    )
}

/// Whether the scenarios can run, and the sink is built.
fn ready_to_run() -> bool {
    if !can_run() {
        return false;
    }
    let sink = bin_dir().join("otlp-sink");
    assert!(
        sink.is_file(),
        "{} is missing: cargo build --workspace --bins",
        sink.display()
    );
    true
}

/// Every span the sink has received.
fn received(mesh: &Mesh) -> Vec<Value> {
    mesh.log("observability/otlp-sink")
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Waits until the sink has at least `count` spans of `trace_id`.
fn spans_of(mesh: &Mesh, trace_id: &str, count: usize) -> Vec<Value> {
    let what = format!("{count} spans of trace {trace_id} reach the sink");
    eventually(&what, Duration::from_secs(20), || {
        let spans: Vec<Value> = received(mesh)
            .into_iter()
            .filter(|s| s["trace_id"] == trace_id)
            .collect();
        if spans.len() >= count {
            Ok(spans)
        } else {
            Err(format!("{} so far: {spans:?}", spans.len()))
        }
    })
}

fn traceparent(trace_id: &str, span_id: &str, flags: &str) -> String {
    format!("traceparent: 00-{trace_id}-{span_id}-{flags}")
}

fn by_kind<'a>(spans: &'a [Value], kind: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["kind"] == kind).collect()
}

#[test]
fn w20_a_traced_request_gives_a_server_span_and_a_client_span_per_attempt() {
    if !ready_to_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w20", 21));
    deploy_waypoint(&mesh);
    assert!(
        mesh.log("ns-b/waypoint")
            .contains("tracing: spans go to the OTLP collector"),
        "the waypoint got the mesh's tracing settings"
    );
    route_b(
        &mesh,
        "route",
        r#"
  - matches: [{headers: [{name: x-probe, value: traces}]}]
    backendRefs: [{name: b-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /slow}}]
    timeouts: {request: 300ms}
    backendRefs: [{name: b, port: 8080}]
  - backendRefs: [{name: b, port: 8080}]
    retry: {codes: [503], attempts: 2, backoff: 5ms}
"#,
    );
    wait_answered_by(&mesh, "x-probe: traces", "b-v1");

    // One request, continued from the caller's trace.
    let (code, body) = request(
        &mesh,
        "a",
        "GET",
        "http://b.ns-b:8080/traced?token=secret",
        &[
            &traceparent(TRACE_ID, CALLER_SPAN, "01"),
            "tracestate: vendor=1",
        ],
    );
    assert_eq!(code, 200, "{body}");
    let spans = spans_of(&mesh, TRACE_ID, 2);
    let (servers, clients) = (by_kind(&spans, "server"), by_kind(&spans, "client"));
    assert_eq!((servers.len(), clients.len()), (1, 1), "{spans:?}");
    let (server, client) = (servers[0], clients[0]);

    assert_eq!(
        server["parent_span_id"], CALLER_SPAN,
        "the caller's span is the parent"
    );
    assert_eq!(server["name"], "b.ns-b.svc.cluster.local:8080/*");
    assert_eq!(server["service_name"], "waypoint.ns-b");
    assert_eq!(server["trace_state"], "vendor=1");
    assert_eq!(server["status"], "unset");
    let attributes = &server["attributes"];
    assert_eq!(attributes["http.method"], "GET");
    assert_eq!(
        attributes["http.url"], "http://b.ns-b:8080/traced",
        "no query"
    );
    assert_eq!(attributes["http.status_code"], 200);
    assert_eq!(attributes["response_flags"], "-");
    assert_eq!(
        attributes["source.principal"],
        "spiffe://cluster.local/ns/ns-a/sa/a"
    );
    assert_eq!(attributes["source.namespace"], "ns-a");
    assert!(attributes["source.workload"].is_string(), "{attributes}");
    assert_eq!(
        attributes["destination.service"],
        "b.ns-b.svc.cluster.local"
    );
    assert_eq!(attributes["destination.namespace"], "ns-b");
    assert_eq!(
        attributes["destination.principal"],
        "spiffe://cluster.local/ns/ns-b/sa/b"
    );
    assert_eq!(attributes["route.name"], "ns-b/b");
    assert_eq!(attributes["route.rule"], 2);
    assert_eq!(attributes["upstream.attempts"], 1);

    assert_eq!(
        client["parent_span_id"], server["span_id"],
        "the attempt is the request's child"
    );
    assert_eq!(
        client["name"],
        "router outbound|8080||b.ns-b.svc.cluster.local egress"
    );
    assert_eq!(client["attributes"]["upstream.attempt"], 1);
    assert_eq!(client["attributes"]["http.status_code"], 200);
    assert!(
        client["attributes"]["upstream_address"]
            .as_str()
            .is_some_and(|a| a.ends_with(":8080")),
        "{client}"
    );
    // The app was told its parent is the client span, in the same trace.
    let report: Value = serde_json::from_str(&body).unwrap();
    let sent = format!("00-{TRACE_ID}-{}-01", client["span_id"].as_str().unwrap());
    assert_eq!(report["headers"]["traceparent"], sent.as_str(), "{report}");
    assert_eq!(report["headers"]["tracestate"], "vendor=1");

    // Retries are visible: every attempt is a client span of its own.
    let retried = "0af7651916cd43dd8448eb211c80319c";
    let (code, _) = request(
        &mesh,
        "a",
        "GET",
        "http://b.ns-b:8080/failing",
        &[
            &traceparent(retried, CALLER_SPAN, "01"),
            "x-echo-status: 503",
        ],
    );
    assert_eq!(code, 503);
    let spans = spans_of(&mesh, retried, 4);
    let (servers, clients) = (by_kind(&spans, "server"), by_kind(&spans, "client"));
    assert_eq!((servers.len(), clients.len()), (1, 3), "{spans:?}");
    let server = servers[0];
    assert_eq!(server["status"], "error");
    assert_eq!(server["status_message"], "503 URX");
    assert_eq!(server["attributes"]["response_flags"], "URX");
    assert_eq!(server["attributes"]["upstream.attempts"], 3);
    let mut attempts: Vec<i64> = clients
        .iter()
        .map(|c| {
            assert_eq!(c["parent_span_id"], server["span_id"]);
            assert_eq!(c["status"], "error");
            assert_eq!(c["attributes"]["http.status_code"], 503);
            c["attributes"]["upstream.attempt"].as_i64().unwrap()
        })
        .collect();
    attempts.sort_unstable();
    assert_eq!(attempts, [1, 2, 3]);

    // The waypoint's own answer (504 at the route's timeout) is traced too.
    let timed_out = "1af7651916cd43dd8448eb211c80319c";
    let (code, _) = request(
        &mesh,
        "a",
        "GET",
        "http://b.ns-b:8080/slow",
        &[
            &traceparent(timed_out, CALLER_SPAN, "01"),
            "x-echo-delay: 2s",
        ],
    );
    assert_eq!(code, 504);
    let spans = spans_of(&mesh, timed_out, 2);
    let server = by_kind(&spans, "server")[0];
    assert_eq!(server["attributes"]["http.status_code"], 504);
    assert_eq!(server["status_message"], "504 UT");
    let client = by_kind(&spans, "client")[0];
    assert_eq!(client["attributes"]["response_flags"], "UT");
}

#[test]
fn w21_with_sampling_0_only_requests_the_caller_sampled_are_exported() {
    if !ready_to_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w21", 22));
    deploy_waypoint(&mesh);
    let unsampled = "2af7651916cd43dd8448eb211c80319c";
    for _ in 0..5 {
        let (code, _) = request(&mesh, "a", "GET", "http://b.ns-b:8080/untraced", &[]);
        assert_eq!(code, 200);
        let header = traceparent(unsampled, CALLER_SPAN, "00");
        let (code, body) = request(&mesh, "a", "GET", "http://b.ns-b:8080/declined", &[&header]);
        assert_eq!(code, 200);
        // The caller's "not sampled" goes on to the app, in its trace.
        let report: Value = serde_json::from_str(&body).unwrap();
        let sent = report["headers"]["traceparent"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            sent.starts_with(&format!("00-{unsampled}-")) && sent.ends_with("-00"),
            "{sent}"
        );
    }
    // A sampled request last: spans leave in order, so once its spans are
    // in, any of the requests before would be too.
    let marker = "3af7651916cd43dd8448eb211c80319c";
    let header = traceparent(marker, CALLER_SPAN, "01");
    let (code, _) = request(&mesh, "a", "GET", "http://b.ns-b:8080/marker", &[&header]);
    assert_eq!(code, 200);
    spans_of(&mesh, marker, 2);
    let others: Vec<Value> = received(&mesh)
        .into_iter()
        .filter(|s| s["trace_id"] != marker)
        .collect();
    assert!(
        others.is_empty(),
        "unsampled requests were exported: {others:?}"
    );
}

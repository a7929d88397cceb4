//! The waypoint's traces on the real data path, in process: the waypoint
//! exports to a real OTLP/gRPC receiver (`telemetry::otlp::receiver`) on
//! loopback with sampling 0, so only the requests whose caller sampled
//! them are traced. A forwarded request gives a server span and a client
//! span in the caller's trace; the waypoint's own 404 gives a server span;
//! an unsampled request gives nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use proto::otlp::collector::ExportTraceServiceRequest;
use proto::otlp::common::any_value::Value;
use proto::otlp::trace::{Span, span};
use support::{ECHO_HOST, Mesh, WAIT, eventually, get1, ip};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use waypoint::route::ServiceKey;

const ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo-v1-only
  namespace: b
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: echo
    port: 80
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /v1
    backendRefs:
    - name: echo
      port: 80
---
"#;

const FORWARDED: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ANSWERED_LOCALLY: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn text(value: &str) -> Option<Value> {
    Some(Value::StringValue(value.into()))
}

/// Receives exports until `count` spans came; returns them with the
/// exports' `service.name`.
async fn receive(
    exports: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    count: usize,
) -> (Vec<Span>, Vec<Option<Value>>) {
    let (mut spans, mut services) = (Vec::new(), Vec::new());
    while spans.len() < count {
        let export = tokio::time::timeout(WAIT, exports.recv())
            .await
            .expect("spans within the wait")
            .unwrap();
        for resource_spans in export.resource_spans {
            let resource = resource_spans.resource.unwrap();
            services.push(resource.attributes[0].value.clone().unwrap().value);
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    (spans, services)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_are_traced_and_unsampled_ones_are_not() {
    let net = 61;
    let listener = TcpListener::bind(SocketAddr::new(ip(net, 100), 0))
        .await
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let mut exports = telemetry::otlp::receiver::serve(listener, None);
    let flags = ["--otlp-endpoint", &endpoint, "--trace-sampling", "0"];
    let mesh = Mesh::start_with(net, ROUTE, &flags).await;
    let config = mesh.waypoint.config().clone();
    let key = ServiceKey {
        hostname: ECHO_HOST.into(),
        port: 80,
    };
    eventually("the pushed route", || {
        let arrived = config.snapshot().routes(&key).is_some();
        async move { arrived }
    })
    .await;

    let mut client = mesh.http1().await;
    // Not sampled, at 0%: nothing. Sent first, so that its spans, were
    // there any, would come before the others.
    let (status, _, _) = get1(&mut client, "/v1/untraced", &[]).await;
    assert_eq!(status, 200);
    let forwarded = format!("00-{FORWARDED}-{CALLER_SPAN}-01");
    let (status, _, body) = get1(
        &mut client,
        "/v1/traced?q=1",
        &[("traceparent", &forwarded)],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "v1 GET /v1/traced HTTP/1.1"));
    let local = format!("00-{ANSWERED_LOCALLY}-{CALLER_SPAN}-01");
    let (status, _, _) = get1(&mut client, "/nowhere", &[("traceparent", &local)]).await;
    assert_eq!(status, 404);

    let (spans, services) = receive(&mut exports, 3).await;
    assert!(
        services.iter().all(|s| *s == text("waypoint.b")),
        "{services:?}"
    );
    let of = |trace: &str, kind: span::SpanKind| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| hex(&s.trace_id) == trace && s.kind == kind as i32)
            .collect()
    };
    let server = of(FORWARDED, span::SpanKind::Server);
    let client_spans = of(FORWARDED, span::SpanKind::Client);
    assert_eq!((server.len(), client_spans.len()), (1, 1), "{spans:?}");
    let (server, client_span) = (server[0], client_spans[0]);
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(server.name, "echo.b.svc.cluster.local:80/*");
    assert_eq!(
        attribute(server, "http.status_code"),
        Some(&Value::IntValue(200))
    );
    assert_eq!(
        attribute(server, "route.name").cloned(),
        text("b/echo-v1-only")
    );
    assert_eq!(attribute(server, "route.rule"), Some(&Value::IntValue(0)));
    assert_eq!(
        attribute(server, "source.principal").cloned(),
        text("spiffe://cluster.local/ns/a/sa/a")
    );
    assert_eq!(
        attribute(server, "destination.namespace").cloned(),
        text("b")
    );
    assert_eq!(client_span.parent_span_id, server.span_id);
    assert_eq!(
        attribute(client_span, "upstream.attempt"),
        Some(&Value::IntValue(1))
    );
    assert_eq!(
        attribute(client_span, "http.status_code"),
        Some(&Value::IntValue(200))
    );

    let local = of(ANSWERED_LOCALLY, span::SpanKind::Server);
    assert_eq!(local.len(), 1, "{spans:?}");
    assert_eq!(
        attribute(local[0], "http.status_code"),
        Some(&Value::IntValue(404))
    );
    assert_eq!(attribute(local[0], "response_flags").cloned(), text("NR"));
    assert_eq!(
        attribute(local[0], "upstream.attempts"),
        Some(&Value::IntValue(0))
    );
    assert!(of(ANSWERED_LOCALLY, span::SpanKind::Client).is_empty());
    assert_eq!(
        spans.len(),
        3,
        "the unsampled request was traced: {spans:?}"
    );
}

use std::sync::Arc;

use http::{HeaderValue, StatusCode, header::HOST};
use telemetry::otlp::{ExporterStats, SpanData, SpanKind, SpanStatus};
use tokio::sync::mpsc;

use super::context::{Hex, parse};
use super::*;
use crate::metrics::{Completed, RequestProtocol, ResponseFlag};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn tracer(percent: f64) -> (Tracer, mpsc::Receiver<SpanData>) {
    let (queue, spans) = SpanQueue::bounded(16, ExporterStats::default());
    (
        Tracer::new(queue, SamplingPercent::new(percent).unwrap()),
        spans,
    )
}

fn service() -> Service {
    Service {
        name: "b".into(),
        namespace: "ns-b".into(),
        hostname: "b.ns-b.svc.cluster.local".into(),
        vips: vec![],
        ports: vec![(8080, 8080)],
        subject_alt_names: vec![],
        waypoint: None,
    }
}

fn endpoint() -> Workload {
    Workload::try_from(proto::workload::Workload {
        uid: "Kubernetes//Pod/ns-b/b-v1".into(),
        name: "b-v1".into(),
        namespace: "ns-b".into(),
        service_account: "b".into(),
        addresses: vec![vec![10, 0, 0, 1]],
        ..Default::default()
    })
    .unwrap()
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(*name, HeaderValue::from_static(value));
    }
    headers
}

fn upstream_request() -> Request<()> {
    Request::builder()
        .method("GET")
        .uri("/x?secret=1")
        .header(HOST, "b.ns-b:8080")
        .body(())
        .unwrap()
}

/// The server span's end, as `RequestLog::complete` calls it.
fn finish_server(trace: &RequestTrace, status: StatusCode) {
    let service = service();
    let principal: Arc<str> = "spiffe://cluster.local/ns/ns-a/sa/a".into();
    let completed = Completed {
        source: None,
        source_principal: &principal,
        destination: None,
        service: &service,
        protocol: RequestProtocol::Http,
        status: Some(status),
        grpc_status: None,
        flag: ResponseFlag::None,
    };
    trace.finish(&ServerFacts {
        completed: &completed,
        method: "GET",
        url: "http://b.ns-b:8080/x",
        route: None,
        attempts: 1,
    });
}

#[test]
fn a_sampled_caller_is_continued_and_each_attempt_is_named_upstream() {
    let (tracer, mut spans) = tracer(0.0);
    let mut request_headers = headers(&[("traceparent", PARENT), ("tracestate", "vendor=1")]);
    let trace = tracer.start(&mut request_headers, &service(), 8080);

    let mut upstream = upstream_request();
    let first = trace.attempt(1, &mut upstream);
    let sent = parse(header_of(&upstream).unwrap().as_bytes()).unwrap();
    assert_eq!(
        Hex(&sent.trace_id).to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(sent.sampled());
    assert_eq!(
        sent.parent_id, first.span_id,
        "the next hop's parent is the client span"
    );
    let (endpoint, addr) = (endpoint(), "10.0.0.1:8080".parse().unwrap());
    first.finish(
        &service(),
        8080,
        (&endpoint, addr),
        AttemptEnd::Answered(StatusCode::SERVICE_UNAVAILABLE),
    );
    let second = trace.attempt(2, &mut upstream);
    let resent = parse(header_of(&upstream).unwrap().as_bytes()).unwrap();
    assert_eq!(resent.parent_id, second.span_id);
    assert_ne!(
        resent.parent_id, sent.parent_id,
        "a retry is a span of its own"
    );
    second.finish(
        &service(),
        8080,
        (&endpoint, addr),
        AttemptEnd::Answered(StatusCode::OK),
    );
    finish_server(&trace, StatusCode::OK);

    let (client1, client2, server) = (
        spans.try_recv().unwrap(),
        spans.try_recv().unwrap(),
        spans.try_recv().unwrap(),
    );
    assert_eq!(server.kind, SpanKind::Server);
    assert_eq!(server.name, "b.ns-b.svc.cluster.local:8080/*");
    assert_eq!(
        Hex(&server.trace_id).to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(
        Hex(&server.parent_span_id.unwrap()).to_string(),
        "00f067aa0ba902b7"
    );
    assert!(server.parent_is_remote);
    assert_eq!(server.trace_state, "vendor=1");
    for (client, attempt) in [(&client1, 1), (&client2, 2)] {
        assert_eq!(client.kind, SpanKind::Client);
        assert_eq!(client.trace_id, server.trace_id);
        assert_eq!(client.parent_span_id, Some(server.span_id));
        assert!(!client.parent_is_remote);
        let number = client
            .attributes
            .iter()
            .find(|a| a.key == "upstream.attempt");
        assert_eq!(number.unwrap().value, telemetry::otlp::Value::Int(attempt));
        let url = client.attributes.iter().find(|a| a.key == "http.url");
        assert_eq!(
            url.unwrap().value,
            "http://b.ns-b:8080/x".into(),
            "no query"
        );
    }
    assert_eq!(client1.status, SpanStatus::Error("503".into()));
    assert_eq!(client2.status, SpanStatus::Unset);
    assert!(spans.try_recv().is_err());
}

#[test]
fn an_unsampled_caller_is_propagated_but_nothing_is_recorded() {
    let (tracer, mut spans) = tracer(100.0);
    let mut request_headers = headers(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )]);
    let trace = tracer.start(&mut request_headers, &service(), 8080);
    let mut upstream = upstream_request();
    let span = trace.attempt(1, &mut upstream);
    let sent = parse(header_of(&upstream).unwrap().as_bytes()).unwrap();
    assert_eq!(
        Hex(&sent.trace_id).to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert!(!sent.sampled(), "the caller's decision goes on");
    let (endpoint, addr) = (endpoint(), "10.0.0.1:8080".parse().unwrap());
    span.finish(&service(), 8080, (&endpoint, addr), AttemptEnd::TimedOut);
    finish_server(&trace, StatusCode::GATEWAY_TIMEOUT);
    assert!(spans.try_recv().is_err());
}

#[test]
fn an_invalid_traceparent_starts_a_new_trace_without_its_tracestate() {
    let (tracer, mut spans) = tracer(100.0);
    let mut request_headers = headers(&[
        (
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ),
        ("tracestate", "vendor=1"),
    ]);
    let trace = tracer.start(&mut request_headers, &service(), 8080);
    assert!(!request_headers.contains_key("tracestate"));
    finish_server(&trace, StatusCode::OK);
    let server = spans.try_recv().unwrap();
    assert_ne!(server.trace_id, [0; 16]);
    assert_eq!(server.parent_span_id, None, "a root span");
    assert_eq!(server.trace_state, "");
}

#[test]
fn without_a_caller_the_percentage_decides() {
    let (all, mut recorded) = tracer(100.0);
    let trace = all.start(&mut HeaderMap::new(), &service(), 8080);
    finish_server(&trace, StatusCode::INTERNAL_SERVER_ERROR);
    let server = recorded.try_recv().unwrap();
    assert_eq!(server.parent_span_id, None);
    assert_eq!(server.status, SpanStatus::Error("500".into()));

    let (none, mut nothing) = tracer(0.0);
    let trace = none.start(&mut HeaderMap::new(), &service(), 8080);
    let mut upstream = upstream_request();
    trace.attempt(1, &mut upstream);
    let sent = parse(header_of(&upstream).unwrap().as_bytes()).unwrap();
    assert!(!sent.sampled(), "the next hop hears the decision");
    finish_server(&trace, StatusCode::OK);
    assert!(nothing.try_recv().is_err());
}

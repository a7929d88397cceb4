use std::sync::Arc;

use telemetry::otlp::Value;

use super::*;
use crate::metrics::RequestProtocol;

fn workload(name: &str, ns: &str, sa: &str) -> Workload {
    Workload::try_from(proto::workload::Workload {
        uid: format!("Kubernetes//Pod/{ns}/{name}"),
        name: name.into(),
        namespace: ns.into(),
        service_account: sa.into(),
        workload_name: format!("{name}-deploy"),
        canonical_name: name.into(),
        cluster_id: "Kubernetes".into(),
        addresses: vec![vec![10, 0, 0, 1]],
        ..Default::default()
    })
    .unwrap()
}

fn service(name: &str, ns: &str) -> Service {
    Service {
        name: name.into(),
        namespace: ns.into(),
        hostname: format!("{name}.{ns}.svc.cluster.local").into(),
        vips: vec![],
        ports: vec![(8080, 8080)],
        subject_alt_names: vec![],
        waypoint: None,
    }
}

fn value<'a>(attributes: &'a [Attribute], key: &str) -> Option<&'a Value> {
    attributes.iter().find(|a| a.key == key).map(|a| &a.value)
}

fn text(s: &str) -> Option<Value> {
    Some(Value::String(s.into()))
}

#[test]
fn a_forwarded_request_names_both_ends_the_route_and_the_answer() {
    let (a, b) = (workload("a", "ns-a", "a"), workload("b-v1", "ns-b", "b"));
    let service = service("b", "ns-b");
    let principal: Arc<str> = "spiffe://cluster.local/ns/ns-a/sa/a".into();
    let completed = Completed {
        source: Some(&a),
        source_principal: &principal,
        destination: Some(&b),
        service: &service,
        protocol: RequestProtocol::Http,
        status: Some(StatusCode::OK),
        grpc_status: None,
        flag: ResponseFlag::None,
    };
    let facts = ServerFacts {
        completed: &completed,
        method: "GET",
        url: "http://b.ns-b:8080/x",
        route: Some(("ns-b/b", 1)),
        attempts: 2,
    };
    let attributes = server(&facts);
    assert_eq!(value(&attributes, "http.method").cloned(), text("GET"));
    assert_eq!(
        value(&attributes, "http.url").cloned(),
        text("http://b.ns-b:8080/x")
    );
    assert_eq!(
        value(&attributes, "http.status_code"),
        Some(&Value::Int(200))
    );
    assert_eq!(value(&attributes, "response_flags").cloned(), text("-"));
    assert_eq!(
        value(&attributes, "source.workload").cloned(),
        text("a-deploy")
    );
    assert_eq!(
        value(&attributes, "source.namespace").cloned(),
        text("ns-a")
    );
    assert_eq!(
        value(&attributes, "source.principal").cloned(),
        text("spiffe://cluster.local/ns/ns-a/sa/a")
    );
    assert_eq!(
        value(&attributes, "destination.workload").cloned(),
        text("b-v1-deploy")
    );
    assert_eq!(
        value(&attributes, "destination.namespace").cloned(),
        text("ns-b")
    );
    assert_eq!(
        value(&attributes, "destination.principal").cloned(),
        text("spiffe://cluster.local/ns/ns-b/sa/b")
    );
    assert_eq!(
        value(&attributes, "destination.service").cloned(),
        text("b.ns-b.svc.cluster.local")
    );
    assert_eq!(value(&attributes, "route.name").cloned(), text("ns-b/b"));
    assert_eq!(value(&attributes, "route.rule"), Some(&Value::Int(1)));
    assert_eq!(
        value(&attributes, "upstream.attempts"),
        Some(&Value::Int(2))
    );
    assert_eq!(server_status(&completed), SpanStatus::Unset);
    assert_eq!(
        server_span_name(&service, 8080),
        "b.ns-b.svc.cluster.local:8080/*"
    );
}

#[test]
fn a_local_answer_has_no_destination_and_a_5xx_is_an_error() {
    let service = service("b", "ns-b");
    let principal: Arc<str> = "spiffe://cluster.local/ns/ns-a/sa/a".into();
    let mut completed = Completed {
        source: None,
        source_principal: &principal,
        destination: None,
        service: &service,
        protocol: RequestProtocol::Http,
        status: Some(StatusCode::NOT_FOUND),
        grpc_status: None,
        flag: ResponseFlag::NoRoute,
    };
    let facts = ServerFacts {
        completed: &completed,
        method: "GET",
        url: "http://b.ns-b:8080/nowhere",
        route: None,
        attempts: 0,
    };
    let attributes = server(&facts);
    assert_eq!(value(&attributes, "response_flags").cloned(), text("NR"));
    assert_eq!(
        value(&attributes, "http.status_code"),
        Some(&Value::Int(404))
    );
    assert!(value(&attributes, "destination.workload").is_none());
    assert!(value(&attributes, "source.workload").is_none());
    assert!(value(&attributes, "route.name").is_none());
    assert_eq!(
        server_status(&completed),
        SpanStatus::Unset,
        "a 4xx is the client's"
    );

    completed.status = Some(StatusCode::SERVICE_UNAVAILABLE);
    completed.flag = ResponseFlag::NoHealthyUpstream;
    assert_eq!(
        server_status(&completed),
        SpanStatus::Error("503 UH".into())
    );
    completed.status = Some(StatusCode::GATEWAY_TIMEOUT);
    completed.flag = ResponseFlag::None;
    assert_eq!(server_status(&completed), SpanStatus::Error("504".into()));
}

#[test]
fn an_attempt_names_its_number_endpoint_and_outcome() {
    let b = workload("b-v1", "ns-b", "b");
    let service = service("b", "ns-b");
    let mut facts = AttemptFacts {
        attempt: 2,
        method: "POST",
        url: "http://b.ns-b:8080/x",
        service: &service,
        port: 8080,
        endpoint: &b,
        endpoint_addr: "10.0.0.1:8080".parse().unwrap(),
        end: AttemptEnd::Answered(StatusCode::SERVICE_UNAVAILABLE),
    };
    let attributes = attempt(&facts);
    assert_eq!(value(&attributes, "upstream.attempt"), Some(&Value::Int(2)));
    assert_eq!(
        value(&attributes, "upstream_address").cloned(),
        text("10.0.0.1:8080")
    );
    assert_eq!(
        value(&attributes, "upstream_cluster").cloned(),
        text("outbound|8080||b.ns-b.svc.cluster.local")
    );
    assert_eq!(
        value(&attributes, "http.status_code"),
        Some(&Value::Int(503))
    );
    assert_eq!(
        value(&attributes, "destination.workload").cloned(),
        text("b-v1-deploy")
    );
    assert_eq!(attempt_status(&facts.end), SpanStatus::Error("503".into()));
    assert_eq!(
        attempt_span_name(&service, 8080),
        "router outbound|8080||b.ns-b.svc.cluster.local egress"
    );

    facts.end = AttemptEnd::Failed {
        flag: ResponseFlag::UpstreamConnectFailure,
        error: "connect refused",
    };
    let attributes = attempt(&facts);
    assert_eq!(value(&attributes, "response_flags").cloned(), text("UF"));
    assert!(value(&attributes, "http.status_code").is_none());
    assert_eq!(
        attempt_status(&facts.end),
        SpanStatus::Error("connect refused".into())
    );

    facts.end = AttemptEnd::TimedOut;
    assert_eq!(
        value(&attempt(&facts), "response_flags").cloned(),
        text("UT")
    );
    facts.end = AttemptEnd::Answered(StatusCode::OK);
    assert_eq!(attempt_status(&facts.end), SpanStatus::Unset);
}

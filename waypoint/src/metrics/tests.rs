use http::HeaderValue;

use super::*;

fn workload(name: &str, ns: &str, sa: &str) -> Workload {
    Workload::try_from(proto::workload::Workload {
        uid: format!("Kubernetes//Pod/{ns}/{name}"),
        name: name.into(),
        namespace: ns.into(),
        service_account: sa.into(),
        workload_name: format!("{name}-deploy"),
        canonical_name: name.into(),
        canonical_revision: "v1".into(),
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
        ports: vec![(80, 8080)],
        subject_alt_names: vec![],
        waypoint: None,
    }
}

fn principal_of(ns: &str, sa: &str) -> Arc<str> {
    format!("spiffe://cluster.local/ns/{ns}/sa/{sa}").into()
}

fn scrape(metrics: &Metrics) -> String {
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

fn sample() -> Sample {
    Sample {
        duration_ms: 3.0,
        request_bytes: 0,
        response_bytes: 20,
    }
}

#[test]
fn a_forwarded_request_is_labelled_as_istio_labels_it() {
    let (a, echo) = (workload("a", "a", "a"), workload("echo", "b", "echo"));
    let echo_service = service("echo", "b");
    let source_principal = principal_of("a", "a");
    let labels = RequestLabels::new(&Completed {
        source: Some(&a),
        source_principal: &source_principal,
        destination: Some(&echo),
        service: &echo_service,
        protocol: RequestProtocol::Http,
        status: Some(StatusCode::OK),
        grpc_status: None,
        flag: ResponseFlag::None,
    });
    let metrics = Metrics::default();
    metrics.record(&labels, sample());
    let text = scrape(&metrics);
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap_or_else(|| panic!("no request counter in:\n{text}"));
    for expected in [
        "reporter=\"waypoint\"",
        "source_workload=\"a-deploy\"",
        "source_workload_namespace=\"a\"",
        "source_principal=\"spiffe://cluster.local/ns/a/sa/a\"",
        "source_cluster=\"Kubernetes\"",
        "destination_workload=\"echo-deploy\"",
        "destination_workload_namespace=\"b\"",
        "destination_canonical_revision=\"v1\"",
        "destination_principal=\"spiffe://cluster.local/ns/b/sa/echo\"",
        "destination_service=\"echo.b.svc.cluster.local\"",
        "destination_service_name=\"echo\"",
        "destination_service_namespace=\"b\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "grpc_response_status=\"\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(line.contains(expected), "{expected} missing in {line}");
    }
    assert!(line.ends_with(" 1"), "{line}");
    // Istio's bucket bounds (and `+Inf`), one observation in each histogram.
    let buckets = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
            .count()
    };
    assert_eq!(buckets("istio_request_duration_milliseconds"), 20);
    assert_eq!(buckets("istio_request_bytes"), 9);
    // 3 ms: above Istio's first two bounds, within the third.
    let duration_bucket = |le: &str| {
        let prefix = format!("istio_request_duration_milliseconds_bucket{{le=\"{le}\",");
        text.lines().find(|l| l.starts_with(&prefix)).unwrap()
    };
    assert!(duration_bucket("1.0").ends_with(" 0"), "{text}");
    assert!(duration_bucket("5.0").ends_with(" 1"), "{text}");
    assert!(duration_bucket("3600000.0").ends_with(" 1"), "{text}");
    for count in [
        "istio_request_duration_milliseconds_count{",
        "istio_request_bytes_count{",
        "istio_response_bytes_count{",
    ] {
        let line = text.lines().find(|l| l.starts_with(count)).unwrap();
        assert!(line.ends_with(" 1"), "{line}");
    }
    let response_sum = text
        .lines()
        .find(|l| l.starts_with("istio_response_bytes_sum{"))
        .unwrap();
    assert!(response_sum.ends_with(" 20.0"), "{response_sum}");
}

#[test]
fn a_local_answer_has_no_destination_workload_and_says_why() {
    let a = workload("a", "a", "a");
    let echo_service = service("echo", "b");
    let source_principal = principal_of("a", "a");
    let labels = RequestLabels::new(&Completed {
        source: Some(&a),
        source_principal: &source_principal,
        destination: None,
        service: &echo_service,
        protocol: RequestProtocol::Http,
        status: Some(StatusCode::NOT_FOUND),
        grpc_status: None,
        flag: ResponseFlag::NoRoute,
    });
    assert_eq!(labels.peers.destination_workload, UNKNOWN);
    assert_eq!(labels.peers.destination_principal, UNKNOWN);
    assert_eq!(labels.response_code, Text::Number(404));
    assert_eq!(labels.response_flags, Text::Static("NR"));
    // An unknown source (no workload at the tunnel's address) still has
    // the principal its certificate proved.
    let unknown_source = RequestLabels::new(&Completed {
        source: None,
        ..Completed {
            source: Some(&a),
            source_principal: &source_principal,
            destination: None,
            service: &echo_service,
            protocol: RequestProtocol::Http,
            status: None,
            grpc_status: None,
            flag: ResponseFlag::None,
        }
    });
    assert_eq!(unknown_source.peers.source_workload, UNKNOWN);
    assert_eq!(
        unknown_source.peers.source_principal,
        Text::from(&source_principal)
    );
    assert_eq!(unknown_source.response_code, Text::Number(0));
}

#[test]
fn response_flags_use_envoys_codes() {
    let codes = [
        (ResponseFlag::None, "-"),
        (ResponseFlag::NoRoute, "NR"),
        (ResponseFlag::NoCluster, "NC"),
        (ResponseFlag::NoHealthyUpstream, "UH"),
        (ResponseFlag::UpstreamConnectFailure, "UF"),
        (ResponseFlag::UpstreamConnectionTermination, "UC"),
        (ResponseFlag::UpstreamTimeout, "UT"),
        (ResponseFlag::UpstreamRetryLimitExceeded, "URX"),
    ];
    for (flag, code) in codes {
        assert_eq!(flag.code(), code, "{flag:?}");
    }
}

#[test]
fn grpc_status_is_a_label_of_grpc_requests_only() {
    let mut headers = HeaderMap::new();
    assert_eq!(RequestProtocol::of(&headers), RequestProtocol::Http);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc+proto"),
    );
    assert_eq!(RequestProtocol::of(&headers), RequestProtocol::Grpc);

    let mut trailers = HeaderMap::new();
    assert_eq!(grpc_status(&trailers), None);
    trailers.insert("grpc-status", HeaderValue::from_static("14"));
    let status = grpc_status(&trailers);
    assert_eq!(status, Some(Text::Number(14)));

    let echo_service = service("echo", "b");
    let source_principal = principal_of("a", "a");
    let completed = |protocol| Completed {
        source: None,
        source_principal: &source_principal,
        destination: None,
        service: &echo_service,
        protocol,
        status: Some(StatusCode::OK),
        grpc_status: status.as_ref(),
        flag: ResponseFlag::None,
    };
    let grpc = RequestLabels::new(&completed(RequestProtocol::Grpc));
    assert_eq!(grpc.request_protocol, Text::Static("grpc"));
    assert_eq!(grpc.grpc_response_status, Text::Number(14));
    // A `grpc-status` on a plain HTTP exchange is not a gRPC status.
    let http = RequestLabels::new(&completed(RequestProtocol::Http));
    assert_eq!(http.grpc_response_status, Text::Static(""));
}

#[test]
fn requests_with_the_same_labels_share_a_series_and_others_do_not() {
    let echo_service = service("echo", "b");
    let source_principal = principal_of("a", "a");
    let completed = |status, flag| Completed {
        source: None,
        source_principal: &source_principal,
        destination: None,
        service: &echo_service,
        protocol: RequestProtocol::Http,
        status: Some(status),
        grpc_status: None,
        flag,
    };
    let metrics = Metrics::default();
    let ok = RequestLabels::new(&completed(StatusCode::OK, ResponseFlag::None));
    metrics.record(&ok, sample());
    metrics.record(&ok, sample());
    let timeout = RequestLabels::new(&completed(
        StatusCode::GATEWAY_TIMEOUT,
        ResponseFlag::UpstreamTimeout,
    ));
    metrics.record(&timeout, sample());
    let text = scrape(&metrics);
    let counters: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    assert_eq!(counters.len(), 2, "{counters:?}");
    let ok_line = counters
        .iter()
        .find(|l| l.contains("response_code=\"200\""))
        .unwrap();
    assert!(ok_line.ends_with(" 2"), "{ok_line}");
    let timeout_line = counters
        .iter()
        .find(|l| l.contains("response_code=\"504\""))
        .unwrap();
    assert!(
        timeout_line.contains("response_flags=\"UT\""),
        "{timeout_line}"
    );
    assert!(timeout_line.ends_with(" 1"), "{timeout_line}");
    // The histograms of a label set move with its counter.
    for histogram in [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        let count = format!("{histogram}_count{{");
        let ok_count = text
            .lines()
            .find(|l| l.starts_with(&count) && l.contains("response_code=\"200\""))
            .unwrap_or_else(|| panic!("no {count} line in\n{text}"));
        assert!(ok_count.ends_with(" 2"), "{ok_count}");
    }
}

#[test]
fn a_passed_through_connection_is_counted_with_istios_tcp_labels() {
    let (a, echo) = (workload("a", "a", "a"), workload("echo", "b", "echo"));
    let echo_service = service("echo", "b");
    let source_principal = principal_of("a", "a");
    let labels = ConnectionLabels::new(&Connection {
        source: Some(&a),
        source_principal: &source_principal,
        destination: Some(&echo),
        service: &echo_service,
        flag: ResponseFlag::None,
    });
    let metrics = Metrics::default();
    metrics.tcp_opened(&labels);
    let sample = TcpSample {
        sent_bytes: 7,
        received_bytes: 5,
    };
    metrics.tcp_closed(&labels, sample);
    let text = scrape(&metrics);
    let line = |name: &str| {
        let prefix = format!("{name}{{");
        text.lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
            .to_owned()
    };
    let opened = line("istio_tcp_connections_opened_total");
    for expected in [
        "reporter=\"waypoint\"",
        "source_workload=\"a-deploy\"",
        "source_principal=\"spiffe://cluster.local/ns/a/sa/a\"",
        "destination_workload=\"echo-deploy\"",
        "destination_principal=\"spiffe://cluster.local/ns/b/sa/echo\"",
        "destination_service=\"echo.b.svc.cluster.local\"",
        "destination_service_name=\"echo\"",
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(opened.contains(expected), "{expected} missing in {opened}");
    }
    for request_only in ["response_code", "grpc_response_status"] {
        assert!(!opened.contains(request_only), "{opened}");
    }
    assert!(opened.ends_with(" 1"), "{opened}");
    assert!(line("istio_tcp_connections_closed_total").ends_with(" 1"));
    assert!(line("istio_tcp_sent_bytes_total").ends_with(" 7"));
    assert!(line("istio_tcp_received_bytes_total").ends_with(" 5"));
    assert!(
        !text.contains("istio_requests_total{"),
        "no request was counted:\n{text}"
    );
}

#[test]
fn a_refused_connection_has_its_flag_and_no_destination_workload() {
    let a = workload("a", "a", "a");
    let echo_service = service("echo", "b");
    let source_principal = principal_of("a", "a");
    let labels = ConnectionLabels::new(&Connection {
        source: Some(&a),
        source_principal: &source_principal,
        destination: None,
        service: &echo_service,
        flag: ResponseFlag::UpstreamOverflow,
    });
    assert_eq!(labels.response_flags, Text::Static("UO"));
    assert_eq!(labels.peers.destination_workload, Text::Static("unknown"));
    assert_eq!(labels.peers.destination_principal, Text::Static("unknown"));
}

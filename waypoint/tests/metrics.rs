//! Istio's request metrics on the waypoint's stats port, scraped after
//! real requests through the mesh: forwarded ones (HTTP/1.1 and gRPC),
//! the waypoint's own answers (403 from policy, 404 from no route, 503
//! from an endpoint that cannot be reached), and one that bypasses the
//! waypoint and must not be counted.

// The helpers below are test code too: a malformed scrape fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use support::{ECHO_HOST, Mesh, eventually, get1, http_get, scrape, value, vip};
use waypoint::route::ServiceKey;

/// `/v1...` routed to `echo`, nothing else; `/v1/admin...` denied.
const ROUTE_AND_POLICY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
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
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-admin
  namespace: b
spec:
  targetRefs:
  - group: ""
    kind: Service
    name: echo
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/v1/admin*"]
---
"#;

async fn http1_to(
    mesh: &Mesh,
    dst: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let tcp = mesh.connect(dst).await;
    let (client, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_through_the_waypoint_is_counted_with_istios_labels() {
    let net = 60;
    let mesh = Mesh::start(net, ROUTE_AND_POLICY).await;
    let config = mesh.waypoint.config().clone();
    let key = ServiceKey {
        hostname: ECHO_HOST.into(),
        port: 80,
    };
    eventually("the pushed route and policy", || {
        let snapshot = config.snapshot();
        let arrived = snapshot.routes(&key).is_some() && snapshot.policies(ECHO_HOST).is_some();
        async move { arrived }
    })
    .await;

    // Opted out of the waypoint: ztunnel sends it straight to the pod.
    let mut bypass = http1_to(&mesh, SocketAddr::new(vip(net, 4), 80)).await;
    let (status, _, body) = get1(&mut bypass, "/v1/direct", &[]).await;
    assert_eq!((status, body.as_str()), (200, "v1 GET /v1/direct HTTP/1.1"));

    let mut client = mesh.http1().await;
    for path in ["/v1/a", "/v1/b"] {
        let (status, _, body) = get1(&mut client, path, &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _, _) = get1(&mut client, "/v1/admin", &[]).await;
    assert_eq!(status, 403);
    let (status, _, _) = get1(&mut client, "/other", &[]).await;
    assert_eq!(status, 404);
    // gRPC over HTTP/2: the app ends with the trailer `grpc-status: 0`.
    let mut grpc = mesh.http2().await;
    let request = http::Request::post(format!("http://{ECHO_HOST}/v1/echo.Echo/Say"))
        .header("content-type", "application/grpc")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = grpc.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap();
    let mut down = http1_to(&mesh, SocketAddr::new(vip(net, 3), 80)).await;
    let (status, _, _) = get1(&mut down, "/", &[]).await;
    assert_eq!(status, 503);

    // Samples are recorded when each response body is done: a moment.
    let deadline = tokio::time::Instant::now() + support::WAIT;
    let text = loop {
        let text = scrape(&mesh).await;
        if value(&text, "istio_requests_total", &[]) >= 6 {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "six requests never counted:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let total = value(&text, "istio_requests_total", &[]);
    assert_eq!(total, 6, "only what went through the waypoint:\n{text}");
    assert!(
        !text.contains("no-waypoint"),
        "the bypassing request is not counted:\n{text}"
    );

    let common = [
        "reporter=\"waypoint\"",
        "source_principal=\"spiffe://cluster.local/ns/a/sa/a\"",
        "source_workload_namespace=\"a\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    let echo = "destination_service=\"echo.b.svc.cluster.local\"";
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        common.iter().chain(extra).copied().collect()
    };
    let forwarded = with(&[
        echo,
        "destination_service_name=\"echo\"",
        "destination_service_namespace=\"b\"",
        "destination_principal=\"spiffe://cluster.local/ns/b/sa/echo\"",
        "destination_workload_namespace=\"b\"",
        "request_protocol=\"http\"",
        "response_code=\"200\"",
        "grpc_response_status=\"\"",
        "response_flags=\"-\"",
    ]);
    assert_eq!(
        value(&text, "istio_requests_total", &forwarded),
        2,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "istio_request_duration_milliseconds_count",
            &forwarded
        ),
        2,
        "{text}"
    );
    assert_eq!(
        value(&text, "istio_response_bytes_count", &forwarded),
        2,
        "{text}"
    );
    let grpc_ok = with(&[
        echo,
        "request_protocol=\"grpc\"",
        "response_code=\"200\"",
        "grpc_response_status=\"0\"",
    ]);
    assert_eq!(value(&text, "istio_requests_total", &grpc_ok), 1, "{text}");
    // The waypoint's own answers: no endpoint was chosen for them. With
    // the three above that makes the six: nothing else was counted.
    let denied = with(&[
        echo,
        "response_code=\"403\"",
        "response_flags=\"-\"",
        "destination_workload=\"unknown\"",
    ]);
    assert_eq!(value(&text, "istio_requests_total", &denied), 1, "{text}");
    let no_route = with(&[echo, "response_code=\"404\"", "response_flags=\"NR\""]);
    assert_eq!(value(&text, "istio_requests_total", &no_route), 1, "{text}");
    let unreachable = with(&[
        "destination_service=\"down.b.svc.cluster.local\"",
        "response_code=\"503\"",
        "response_flags=\"UF\"",
    ]);
    assert_eq!(
        value(&text, "istio_requests_total", &unreachable),
        1,
        "{text}"
    );
    // Istio's proxies serve the same page at /stats/prometheus.
    let (status, istio_path) = http_get(mesh.waypoint.stats_addr(), "/stats/prometheus")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(value(&istio_path, "istio_requests_total", &[]), 6);
}

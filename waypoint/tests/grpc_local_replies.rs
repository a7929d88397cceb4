//! The waypoint's own answers to gRPC calls, through the whole mesh, read
//! by a real gRPC client (tonic): a call no route matches gets
//! `UNIMPLEMENTED` (12) and one L7 policy denies gets `PERMISSION_DENIED`
//! (7), each with the reply's text as its message, as Envoy answers them,
//! and the access log and metrics record `response_code` 200 with the gRPC
//! status. A VirtualService abort with `grpcStatus` answers with that
//! status. Requests that are not gRPC (HTTP/1.1, and gRPC-Web, whose
//! clients need their own framing) still get the plain 404 and 403.

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Uri;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Empty};
use hyper::body::Body;
use hyper_util::rt::TokioIo;
use support::{ECHO_HOST, Mesh, WAIT, eventually, get1, http_get, ip, socks_connect, vip};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};
use waypoint::route::ServiceKey;

/// gRPC methods of `echo.Echo` routed to `echo`, nothing else;
/// `echo.Echo/Admin...` denied; `echo.Echo/Flaky...` aborted by a fault
/// with Istio's `grpcStatus`. (The tests of this file run at once and
/// share the access log: each calls its own paths.)
const ROUTE_AND_POLICY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo-grpc
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
        value: /echo.Echo
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
        paths: ["/echo.Echo/Admin*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: echo-faults
  namespace: b
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  hosts: [echo]
  http:
  - match:
    - uri:
        prefix: /echo.Echo/Flaky
    fault:
      abort:
        grpcStatus: RESOURCE_EXHAUSTED
---
"#;

/// The mesh with the route and the policy in force at the waypoint.
async fn mesh(net: u8) -> Mesh {
    let mesh = Mesh::start(net, ROUTE_AND_POLICY).await;
    let config = mesh.waypoint.config().clone();
    let key = ServiceKey {
        hostname: ECHO_HOST.into(),
        port: 80,
    };
    eventually("the pushed route, policy and faults", || {
        let snapshot = config.snapshot();
        let arrived = snapshot.routes(&key).is_some()
            && snapshot.policies(ECHO_HOST).is_some()
            && snapshot.faults(ECHO_HOST).is_some();
        async move { arrived }
    })
    .await;
    mesh
}

/// Connects as pod `a` does, through its ztunnel's SOCKS5 listener, to the
/// `echo` VIP, whatever the URI says.
#[derive(Clone)]
struct FromPodA {
    socks: SocketAddr,
    service: SocketAddr,
}

impl tonic::codegen::Service<Uri> for FromPodA {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(TokioIo::new(socks_connect(this.socks, this.service).await)) })
    }
}

/// A tonic channel from pod `a` to the `echo` service.
fn grpc_channel(net: u8) -> Channel {
    let connector = FromPodA {
        socks: SocketAddr::new(ip(net, 10), 15080),
        service: SocketAddr::new(vip(net, 1), 80),
    };
    Endpoint::from_shared(format!("http://{ECHO_HOST}"))
        .unwrap()
        .connect_with_connector_lazy(connector)
}

/// One unary call of `path` with an empty message; the status the client
/// reads (the calls here never succeed).
async fn call(channel: &Channel, path: &'static str) -> tonic::Status {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let answer = tokio::time::timeout(
        WAIT,
        client.unary(
            tonic::Request::new(()),
            PathAndQuery::from_static(path),
            codec,
        ),
    )
    .await
    .expect("no answer in time");
    answer.expect_err("the waypoint answers this call itself")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_the_waypoint_answers_get_a_grpc_status() {
    let net = 83;
    let mesh = mesh(net).await;
    let channel = grpc_channel(net);

    let no_route = call(&channel, "/other.Service/Call").await;
    assert_eq!(no_route.code(), tonic::Code::Unimplemented, "{no_route:?}");
    assert_eq!(no_route.message(), "no route matches the request");

    let denied = call(&channel, "/echo.Echo/Admin").await;
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert_eq!(denied.message(), "RBAC: access denied");

    // The fault's own status, not one mapped from an HTTP code.
    let aborted = call(&channel, "/echo.Echo/Flaky").await;
    assert_eq!(
        aborted.code(),
        tonic::Code::ResourceExhausted,
        "{aborted:?}"
    );
    assert_eq!(aborted.message(), "fault filter abort");

    // On the wire: a trailers-only response, HTTP 200 and the status in
    // the head, which is what the client above decoded.
    let mut http2 = mesh.http2().await;
    let request = http::Request::post(format!("http://{ECHO_HOST}/other.Service/Raw"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(WAIT, http2.send_request(request))
        .await
        .expect("no response in time")
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "12");
    assert_eq!(headers["grpc-message"], "no route matches the request");
    assert!(response.body().is_end_stream(), "no body, no trailers");
    let collected = response.into_body().collect().await.unwrap();
    assert!(collected.trailers().is_none());
    assert!(collected.to_bytes().is_empty());

    // Recorded as Envoy reports a converted reply: 200, the gRPC status,
    // the flag and the reason kept. (A field ends with a space: the paths
    // cannot match the other test's longer ones.)
    let events =
        support::wait_for_events(1, &["request complete", "path=/other.Service/Call "]).await;
    let event = &events[0];
    for field in [
        "response_code=200",
        "grpc_status=12",
        "response_flags=\"NR\"",
        "reason=\"no HTTPRoute rule matches\"",
    ] {
        assert!(event.contains(field), "{field} in {event}");
    }
    let events = support::wait_for_events(1, &["request complete", "path=/echo.Echo/Admin "]).await;
    assert!(events[0].contains("response_code=200"), "{}", events[0]);
    assert!(events[0].contains("grpc_status=7"), "{}", events[0]);
    let events = support::wait_for_events(1, &["request complete", "path=/echo.Echo/Flaky "]).await;
    for field in [
        "response_code=200",
        "grpc_status=8",
        "response_flags=\"FI\"",
    ] {
        assert!(events[0].contains(field), "{field} in {}", events[0]);
    }

    let labels = [
        "request_protocol=\"grpc\"",
        "response_code=\"200\"",
        "grpc_response_status=\"12\"",
        "response_flags=\"NR\"",
    ];
    eventually("the no-route call in istio_requests_total", || async {
        let (_, text) = http_get(mesh.waypoint.stats_addr(), "/metrics")
            .await
            .unwrap();
        text.lines().any(|line| {
            line.starts_with("istio_requests_total{") && labels.iter().all(|l| line.contains(l))
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_grpc_still_get_plain_http_errors() {
    let mesh = mesh(84).await;

    let mut client = mesh.http1().await;
    let (status, headers, body) = get1(&mut client, "/other.Service/Plain", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (404, "no route matches the request\n")
    );
    assert_eq!(headers["content-type"], "text/plain");
    assert!(headers.get("grpc-status").is_none());
    let (status, headers, body) = get1(&mut client, "/echo.Echo/AdminPlain", &[]).await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    assert!(headers.get("grpc-status").is_none());
    // A gRPC fault aborts others with 200 and its body, as Envoy does.
    let (status, headers, body) = get1(&mut client, "/echo.Echo/FlakyPlain", &[]).await;
    assert_eq!((status, body.as_str()), (200, "fault filter abort"));
    assert!(headers.get("grpc-status").is_none());

    // gRPC-Web is not gRPC to the waypoint, as to Envoy.
    let mut http2 = mesh.http2().await;
    let request = http::Request::post(format!("http://{ECHO_HOST}/other.Service/Web"))
        .header("content-type", "application/grpc-web+proto")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = tokio::time::timeout(WAIT, http2.send_request(request))
        .await
        .expect("no response in time")
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers().get("grpc-status").is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "no route matches the request\n");
}

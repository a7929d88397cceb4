//! gRPC statuses and retries on the real data path: a rule that retries
//! sends a trailers-only `UNAVAILABLE` again to the other endpoint, and
//! passes every other gRPC status to the client as it came, in one
//! attempt. The apps count what reaches them, so the attempts are the
//! backends' figures, not the waypoint's own account.

// Test helpers and apps: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::retrying::retrying_service;
use support::{Mesh, WAIT, ip, vip};
use tokio::net::TcpListener;

const GRPC_HOST: &str = "grpc.b.svc.cluster.local";

/// A gRPC-shaped HTTP/2 app that answers every call trailers-only (HTTP
/// 200, `grpc-status` in the head, no body), as gRPC servers answer an
/// error, with `grpc_status`. Returns the count of calls it got.
async fn grpc_status_app(addr: SocketAddr, grpc_status: &'static str) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::Relaxed);
                        request.into_body().collect().await.unwrap();
                        let mut response = Response::new(Empty::<Bytes>::new());
                        let headers = response.headers_mut();
                        headers
                            .insert("content-type", HeaderValue::from_static("application/grpc"));
                        headers.insert("grpc-status", HeaderValue::from_static(grpc_status));
                        headers.insert(
                            "grpc-message",
                            HeaderValue::from_static("answered by the app"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    calls
}

/// The mesh plus service `grpc` (VIP `.5`, port 80 to 8080) with two pods
/// on node B at `.23` and `.24` answering `statuses`, and a route that
/// retries 503 (an HTTP code: gRPC has none in HTTPRoute) three times.
async fn grpc_mesh(net: u8, statuses: [&'static str; 2]) -> (Mesh, [Arc<AtomicUsize>; 2]) {
    let first = grpc_status_app(SocketAddr::new(ip(net, 23), 8080), statuses[0]).await;
    let second = grpc_status_app(SocketAddr::new(ip(net, 24), 8080), statuses[1]).await;
    let mesh = retrying_service(net, "grpc", "grpc").await;
    (mesh, [first, second])
}

/// `calls` unary calls on one HTTP/2 connection from pod a: the
/// `grpc-status` and `grpc-message` of each answer.
async fn call(mesh: &Mesh, calls: usize) -> Vec<(String, String)> {
    let tcp = mesh.connect(SocketAddr::new(vip(mesh.net, 5), 80)).await;
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut answers = Vec::new();
    for _ in 0..calls {
        let request = Request::post(format!("http://{GRPC_HOST}/echo.Echo/Say"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .expect("no response in time")
            .unwrap();
        assert_eq!(response.status(), 200);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        answers.push((header("grpc-status"), header("grpc-message")));
        response.into_body().collect().await.unwrap();
    }
    answers
}

#[tokio::test]
async fn a_trailers_only_unavailable_is_retried_on_the_other_endpoint() {
    let (mesh, [unavailable, ok]) = grpc_mesh(77, ["14", "0"]).await;
    let answers = call(&mesh, 30).await;
    assert!(
        answers.iter().all(|(status, _)| status == "0"),
        "{answers:?}"
    );
    // The default balancer sends each first attempt to either endpoint
    // with even odds (none at all to the failing one: one chance in 2^30),
    // and each of those is retried on the other one.
    assert_eq!(ok.load(Ordering::Relaxed), 30);
    let failed = unavailable.load(Ordering::Relaxed);
    assert!(
        (1..=30).contains(&failed),
        "{failed} calls to the failing endpoint"
    );
}

#[tokio::test]
async fn other_grpc_statuses_reach_the_client_unchanged_in_one_attempt() {
    let (mesh, [not_found, internal]) = grpc_mesh(78, ["5", "13"]).await;
    let answers = call(&mesh, 10).await;
    for (status, message) in &answers {
        assert!(status == "5" || status == "13", "{answers:?}");
        assert_eq!(message, "answered by the app");
    }
    let sent = not_found.load(Ordering::Relaxed) + internal.load(Ordering::Relaxed);
    assert_eq!(sent, 10, "one attempt per call, none retried");
}

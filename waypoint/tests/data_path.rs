//! The waypoint's data path with real peers: a client pod's ztunnel sends
//! service traffic to the waypoint, which routes it and tunnels it on to
//! the app pod's ztunnel (see `support`).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use support::{ECHO_HOST, Mesh, get1, vip};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_request_through_the_waypoint_reaches_the_app() {
    let mesh = Mesh::start(1, "").await;
    let mut client = mesh.http1().await;
    let (status, _, body) = get1(&mut client, "/hello", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "v1 GET /hello HTTP/1.1");
    // The connection is kept: a second request on it works too.
    let (status, _, body) = get1(&mut client, "/again", &[]).await;
    assert_eq!((status, body.as_str()), (200, "v1 GET /again HTTP/1.1"));
    let events =
        support::wait_for_events(1, &["request complete", "path=/hello", "response_code=200"])
            .await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert!(
        event.contains("src.identity=spiffe://cluster.local/ns/a/sa/a"),
        "{event}"
    );
    assert!(
        event.contains("dst.identity=spiffe://cluster.local/ns/b/sa/echo"),
        "{event}"
    );
    assert!(
        event.contains(&format!("dst.service={ECHO_HOST}")),
        "{event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_goes_through_as_http2_with_its_trailers() {
    let mesh = Mesh::start(2, "").await;
    let mut client = mesh.http2().await;
    let request = Request::get(format!("http://{ECHO_HOST}/grpc.Echo/Say"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = client.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .cloned()
        .expect("trailers pass through");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(collected.to_bytes(), "v1 GET /grpc.Echo/Say HTTP/2.0");
    let events = support::wait_for_events(1, &["request complete", "path=/grpc.Echo/Say"]).await;
    assert_eq!(events.len(), 1, "the waypoint handled it: {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_that_are_not_http_pass_through_as_tcp() {
    let mesh = Mesh::start(3, "").await;
    let mut tcp = mesh.connect(SocketAddr::new(vip(3, 1), 9000)).await;
    let payload = b"\x00\x01 not http at all\n";
    tcp.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(support::WAIT, tcp.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, payload);
    drop(tcp);
    support::eventually("the waypoint's passthrough log", || async {
        !support::access_events(&["TCP passthrough complete", "dst.workload=echo "]).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_cannot_be_reached_answers_503() {
    let net = 4;
    let mesh = Mesh::start(net, "").await;
    let tcp = mesh.connect(SocketAddr::new(vip(net, 3), 80)).await;
    let (mut client, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let (status, _, body) = get1(&mut client, "/", &[]).await;
    assert_eq!(status, 503, "{body}");
    support::wait_for_events(1, &["request complete", "response_code=503", "HBONE"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_across_requests_and_clients() {
    let mesh = Mesh::start(5, "").await;
    for i in 0..5 {
        // A new client connection, so a new tunnel into the waypoint, each
        // time; the waypoint's side to the app stays one connection.
        let mut client = mesh.http1().await;
        let (status, _, _) = get1(&mut client, &format!("/{i}"), &[]).await;
        assert_eq!(status, 200);
    }
    assert_eq!(mesh.echo_connections.load(Ordering::Relaxed), 1);
    // HTTP/2 gets a connection of its own, shared by its requests.
    let mut client = mesh.http2().await;
    for _ in 0..3 {
        let request = Request::get(format!("http://{ECHO_HOST}/h2"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = client.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(mesh.echo_connections.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_whose_server_speaks_first_passes_through() {
    let mesh = Mesh::start(6, "").await;
    let mut tcp = mesh.connect(SocketAddr::new(vip(6, 1), 9001)).await;
    let mut greeting = [0u8; 11];
    tokio::time::timeout(support::WAIT, tcp.read_exact(&mut greeting))
        .await
        .expect("the greeting arrives although the client sent nothing")
        .unwrap();
    assert_eq!(&greeting, b"220 hello\r\n");
    tcp.write_all(b"QUIT\r\n").await.unwrap();
    let mut back = [0u8; 6];
    tcp.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"QUIT\r\n");
}

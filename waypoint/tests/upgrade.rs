//! HTTP/1.1 Upgrade (WebSocket) through the waypoint, with raw HTTP/1.1
//! from pod `a` to service `ws`, whose app answers an upgrade with 101,
//! greets, then echoes every byte until the client closes:
//!
//! - the 101 reaches the client (with the route's response header), the
//!   app gets the upgrade headers (and the route's request header), bytes
//!   flow both ways, the client's close ends the app's side, and the
//!   request is logged and counted once, at the end, with the stream's
//!   bytes;
//! - an upgrade an L7 policy denies gets 403 and never reaches the app,
//!   nor does one to another protocol than WebSocket;
//! - an upgrade the app answers 200 is an ordinary response, the upstream
//!   connection that carried it is not reused, and plain requests keep
//!   their connections on both sides;
//! - drain waits for an upgraded stream, and its deadline cuts it;
//! - an upgraded upstream connection counts against `maxConnections`
//!   until its stream ends.

// The helpers below are test code too: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::{
    Mesh, NODE_B, WAIT, access_events, eventually, http_get, ip, pod, vip, wait_for_events,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use waypoint::route::ServiceKey;

const HOST: &str = "ws.b.svc.cluster.local";

/// What the app sends first on every upgraded stream, before echoing.
const GREETING: &[u8] = b"hello\n";

/// `/timed...` may take 300 ms in all; every other request gets the
/// route's headers both ways. `/denied...` is denied by L7 policy.
const ROUTE_AND_POLICY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: ws
  namespace: b
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: ws
    port: 80
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /timed
    timeouts:
      request: 300ms
    backendRefs:
    - name: ws
      port: 80
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-route
          value: ws
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add:
        - name: x-from-route
          value: ws
    backendRefs:
    - name: ws
      port: 80
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-denied
  namespace: b
spec:
  targetRefs:
  - group: ""
    kind: Service
    name: ws
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/denied*"]
---
"#;

/// At most one upstream connection to `ws`.
const ONE_CONNECTION: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ws
  namespace: b
spec:
  host: ws
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 10
---
";

/// A request as the app saw it.
#[derive(Debug)]
struct Arrival {
    path: String,
    connection: Option<String>,
    upgrade: Option<String>,
    /// Set by the route's request header filter.
    x_route: Option<String>,
}

/// The app behind service `ws`, and what the test sees of it.
struct WsApp {
    /// One per request that reached it.
    arrivals: mpsc::UnboundedReceiver<Arrival>,
    /// The path of each upgraded stream whose client side has ended.
    ended: mpsc::UnboundedReceiver<String>,
    /// TCP connections it has accepted.
    connections: Arc<AtomicUsize>,
}

impl WsApp {
    async fn arrival(&mut self) -> Arrival {
        timeout(WAIT, self.arrivals.recv())
            .await
            .expect("a request reaches the app in time")
            .expect("the app runs")
    }

    async fn stream_end(&mut self) -> String {
        timeout(WAIT, self.ended.recv())
            .await
            .expect("the app's side of the stream ends in time")
            .expect("the app runs")
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn header(request: &Request<Incoming>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// An HTTP/1.1 app at `addr`: to an upgrade it answers 101, sends
/// [`GREETING`], then echoes until the client's side ends; to an upgrade
/// of `/refuse`, 200 `no upgrade for /refuse`; to anything else, 200
/// `plain <path>`.
async fn ws_app(addr: SocketAddr) -> WsApp {
    let listener = TcpListener::bind(addr).await.unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let (ends, ended) = mpsc::unbounded_channel();
    let accepted = connections.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let arrived = arrived.clone();
            let ends = ends.clone();
            let service = service_fn(move |mut request: Request<Incoming>| {
                let path = request.uri().path().to_owned();
                let upgrade = header(&request, "upgrade");
                let _ = arrived.send(Arrival {
                    path: path.clone(),
                    connection: header(&request, "connection"),
                    upgrade: upgrade.clone(),
                    x_route: header(&request, "x-route"),
                });
                let mut response = Response::new(Full::new(Bytes::from(format!("plain {path}"))));
                if upgrade.is_some() && path == "/refuse" {
                    *response.body_mut() = Full::new(Bytes::from("no upgrade for /refuse"));
                } else if upgrade.is_some() {
                    let switched = hyper::upgrade::on(&mut request);
                    let ends = ends.clone();
                    tokio::spawn(async move {
                        let Ok(switched) = switched.await else {
                            return;
                        };
                        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(switched));
                        if writer.write_all(GREETING).await.is_ok() {
                            let _ = tokio::io::copy(&mut reader, &mut writer).await;
                            let _ = writer.shutdown().await;
                        }
                        let _ = ends.send(path);
                    });
                    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    *response.body_mut() = Full::default();
                    let headers = response.headers_mut();
                    headers.insert("connection", HeaderValue::from_static("Upgrade"));
                    headers.insert("upgrade", HeaderValue::from_static("websocket"));
                    headers.insert("sec-websocket-accept", HeaderValue::from_static("test"));
                }
                async move { Ok::<_, Infallible>(response) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    WsApp {
        arrivals,
        ended,
        connections,
    }
}

/// The mesh plus service `ws` (VIP `.5`, port 80 to 8080) with one pod on
/// node B at `.23` running [`ws_app`], its route and policy, and
/// `extra_yaml` (a `DestinationRule` for `ws`, when not empty). Returns
/// once the waypoint has all of it.
async fn ws_mesh(net: u8, extra_yaml: &str, flags: &[&str]) -> (Mesh, WsApp) {
    let app = ws_app(SocketAddr::new(ip(net, 23), 8080)).await;
    let mut yaml = pod("b", "ws", "ws", NODE_B, ip(net, 23), "app: ws");
    yaml.push_str(&format!(
        "apiVersion: v1
kind: Service
metadata:
  name: ws
  namespace: b
spec:
  clusterIP: {vip}
  selector:
    app: ws
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
{ROUTE_AND_POLICY}{extra_yaml}",
        vip = vip(net, 5)
    ));
    let mesh = Mesh::start_with(net, &yaml, flags).await;
    let limited = !extra_yaml.is_empty();
    eventually(
        "the waypoint to have ws's endpoint, route and policy",
        || {
            let state = mesh.waypoint.mesh().snapshot();
            let endpoint = state
                .service_by_vip("", vip(net, 5))
                .is_some_and(|service| state.endpoints(service).any(|w| w.healthy));
            let config = mesh.waypoint.config().snapshot();
            let key = ServiceKey {
                hostname: HOST.into(),
                port: 80,
            };
            let ready = endpoint
                && config.routes(&key).is_some()
                && config.policies(HOST).is_some()
                && (!limited || config.backend_policy(HOST).is_some());
            async move { ready }
        },
    )
    .await;
    (mesh, app)
}

/// A TCP connection from pod `a` to service `ws`, through its ztunnel
/// and the waypoint.
async fn connect(mesh: &Mesh) -> TcpStream {
    mesh.connect(SocketAddr::new(vip(mesh.net, 5), 80)).await
}

/// Sends a WebSocket handshake for `path`.
async fn send_upgrade(tcp: &mut TcpStream, path: &str) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {HOST}\r\nconnection: keep-alive, Upgrade\r\n\
         upgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
}

/// Sends a plain GET for `path`.
async fn send_get(tcp: &mut TcpStream, path: &str) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: {HOST}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
}

/// A response head, read byte by byte so that nothing after it is taken:
/// the status, and the header lines in lower case.
async fn read_head(tcp: &mut TcpStream) -> (u16, String) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = timeout(WAIT, tcp.read_u8())
            .await
            .expect("a response head in time")
            .expect("the connection stays open until the head is read");
        head.push(byte);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head)
}

/// A whole response with a `content-length` body: status, head, body.
async fn read_response(tcp: &mut TcpStream) -> (u16, String, String) {
    let (status, head) = read_head(tcp).await;
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0; length];
    timeout(WAIT, tcp.read_exact(&mut body))
        .await
        .expect("the body in time")
        .unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

async fn read_exactly(tcp: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    timeout(WAIT, tcp.read_exact(&mut bytes))
        .await
        .expect("the bytes in time")
        .unwrap();
    bytes
}

/// Opens an upgraded stream for `path` and checks it both ways: the
/// app's greeting, then `ping` echoed.
async fn open_stream(mesh: &Mesh, app: &mut WsApp, path: &str) -> TcpStream {
    let mut tcp = connect(mesh).await;
    send_upgrade(&mut tcp, path).await;
    let (status, head) = read_head(&mut tcp).await;
    assert_eq!(status, 101, "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    let arrival = app.arrival().await;
    assert_eq!(arrival.path, path);
    assert_eq!(read_exactly(&mut tcp, GREETING.len()).await, GREETING);
    tcp.write_all(b"ping").await.unwrap();
    assert_eq!(read_exactly(&mut tcp, 4).await, b"ping");
    tcp
}

/// Closes the client's side, and waits for the app's side to end and for
/// the waypoint to close the client's connection after it.
async fn close_stream(mut tcp: TcpStream, app: &mut WsApp) -> String {
    tcp.shutdown().await.unwrap();
    let path = app.stream_end().await;
    let mut rest = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("the waypoint closes the client's side too")
        .unwrap();
    assert!(rest.is_empty(), "nothing after the echo: {rest:?}");
    path
}

/// The value of the first sample of `metric` whose labels hold every
/// needle.
fn sample(scrape: &str, metric: &str, needles: &[&str]) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_switches_and_its_bytes_flow_both_ways() {
    let (mesh, mut app) = ws_mesh(120, "", &[]).await;
    let mut tcp = connect(&mesh).await;
    send_upgrade(&mut tcp, "/chat").await;
    let (status, head) = read_head(&mut tcp).await;
    assert_eq!(status, 101, "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(
        head.contains("\r\nsec-websocket-accept: test\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nx-from-route: ws\r\n"), "{head}");
    // The app got the upgrade (and no other hop-by-hop token), routed.
    let arrival = app.arrival().await;
    assert_eq!(arrival.path, "/chat");
    assert_eq!(arrival.connection.as_deref(), Some("upgrade"));
    assert_eq!(arrival.upgrade.as_deref(), Some("websocket"));
    assert_eq!(arrival.x_route.as_deref(), Some("ws"));
    // App to client, then client to app and back.
    assert_eq!(read_exactly(&mut tcp, GREETING.len()).await, GREETING);
    tcp.write_all(b"ping").await.unwrap();
    assert_eq!(read_exactly(&mut tcp, 4).await, b"ping");
    tcp.write_all(b"pong!").await.unwrap();
    assert_eq!(read_exactly(&mut tcp, 5).await, b"pong!");
    assert!(
        access_events(&["request complete", "path=/chat "]).is_empty(),
        "the request is logged when its stream ends, not at the 101"
    );
    assert_eq!(close_stream(tcp, &mut app).await, "/chat");
    let events = wait_for_events(1, &["request complete", "path=/chat "]).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert!(event.contains("response_code=101 "), "{event}");
    assert!(event.contains(&format!("dst.service={HOST} ")), "{event}");
    // 6 bytes of greeting and 9 echoed out, 9 in.
    assert!(event.contains("bytes_sent=15 "), "{event}");
    assert!(event.contains("bytes_recv=9 "), "{event}");
    let (_, scrape) = http_get(mesh.waypoint.stats_addr(), "/metrics")
        .await
        .unwrap();
    let switched = [
        "destination_service=\"ws.b.svc.cluster.local\"",
        "response_code=\"101\"",
    ];
    assert_eq!(
        sample(&scrape, "istio_requests_total", &switched),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, "istio_response_bytes_sum", &switched),
        Some(15.0),
        "{scrape}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_denied_by_l7_policy_gets_403_and_never_reaches_the_app() {
    let (mesh, mut app) = ws_mesh(121, "", &[]).await;
    let mut tcp = connect(&mesh).await;
    send_upgrade(&mut tcp, "/denied/chat").await;
    let (status, head, body) = read_response(&mut tcp).await;
    assert_eq!(
        (status, body.as_str()),
        (403, "RBAC: access denied"),
        "{head}"
    );
    assert!(!head.contains("upgrade"), "{head}");
    // The same connection serves on; the app's first request is this one.
    send_get(&mut tcp, "/after").await;
    let (status, _, body) = read_response(&mut tcp).await;
    assert_eq!((status, body.as_str()), (200, "plain /after"));
    assert_eq!(app.arrival().await.path, "/after");
    let events = wait_for_events(1, &["request complete", "path=/denied/chat "]).await;
    assert!(events[0].contains("response_code=403 "), "{}", events[0]);
    // An upgrade to anything but a WebSocket is refused before policy,
    // and the connection closed after the answer, as Envoy does.
    let request = format!(
        "GET /spdy HTTP/1.1\r\nhost: {HOST}\r\nconnection: upgrade\r\nupgrade: spdy/3.1\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let (status, head, body) = read_response(&mut tcp).await;
    assert_eq!((status, body.as_str()), (403, ""), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    let mut rest = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("the connection is closed after the refusal")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    let mut tcp = connect(&mesh).await;
    send_get(&mut tcp, "/after-spdy").await;
    let (status, _, _) = read_response(&mut tcp).await;
    assert_eq!(status, 200);
    assert_eq!(app.arrival().await.path, "/after-spdy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_answered_200_is_an_ordinary_response_and_plain_requests_keep_alive() {
    let (mesh, mut app) = ws_mesh(122, "", &[]).await;
    let mut tcp = connect(&mesh).await;
    for path in ["/one", "/two"] {
        send_get(&mut tcp, path).await;
        let (status, _, body) = read_response(&mut tcp).await;
        assert_eq!((status, body), (200, format!("plain {path}")));
        let arrival = app.arrival().await;
        assert_eq!((arrival.connection, arrival.upgrade), (None, None));
    }
    assert_eq!(app.connections(), 1, "plain requests share a connection");
    // The upgrade takes that free connection, and is refused on it.
    send_upgrade(&mut tcp, "/refuse").await;
    let (status, head, body) = read_response(&mut tcp).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "no upgrade for /refuse"),
        "{head}"
    );
    let arrival = app.arrival().await;
    assert_eq!(arrival.upgrade.as_deref(), Some("websocket"));
    assert_eq!(app.connections(), 1);
    // The client's connection serves on; the upstream one that carried
    // the upgrade is not reused, the next request opens another.
    send_get(&mut tcp, "/three").await;
    let (status, _, body) = read_response(&mut tcp).await;
    assert_eq!((status, body.as_str()), (200, "plain /three"));
    assert_eq!(app.connections(), 2);
    let events = wait_for_events(1, &["request complete", "path=/refuse "]).await;
    assert!(events[0].contains("response_code=200 "), "{}", events[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_an_upgraded_stream_and_its_deadline_cuts_it() {
    let (mesh, mut app) = ws_mesh(123, "", &["--drain-seconds", "2"]).await;
    let mut tcp = open_stream(&mesh, &mut app, "/drained").await;
    let Mesh { waypoint, .. } = mesh;
    let drained = tokio::spawn(waypoint.drain());
    // Draining, the stream still carries bytes, and holds drain up.
    tcp.write_all(b"still").await.unwrap();
    assert_eq!(read_exactly(&mut tcp, 5).await, b"still");
    assert!(!drained.is_finished(), "drain waits for the open stream");
    timeout(WAIT, drained)
        .await
        .expect("drain ends at its deadline")
        .unwrap();
    let mut rest = Vec::new();
    let cut = timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("the client's side is closed at the deadline");
    assert!(rest.is_empty(), "{cut:?} {rest:?}");
    assert_eq!(app.stream_end().await, "/drained");
    let events = wait_for_events(1, &["request complete", "path=/drained "]).await;
    assert!(events[0].contains("response_code=101 "), "{}", events[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_counts_against_max_connections_until_it_closes() {
    let (mesh, mut app) = ws_mesh(124, ONE_CONNECTION, &[]).await;
    let stream = open_stream(&mesh, &mut app, "/held").await;
    // The service's one connection is the stream: a request waits for
    // it until its route's 300 ms are up.
    let mut tcp = connect(&mesh).await;
    send_get(&mut tcp, "/timed").await;
    let (status, head, body) = read_response(&mut tcp).await;
    assert_eq!(
        (status, body.as_str()),
        (504, "upstream request timeout\n"),
        "{head}"
    );
    assert_eq!(app.connections(), 1);
    assert_eq!(close_stream(stream, &mut app).await, "/held");
    // Logged once the stream has ended and let go of its connection.
    wait_for_events(1, &["request complete", "path=/held "]).await;
    send_get(&mut tcp, "/timed/after").await;
    let (status, _, body) = read_response(&mut tcp).await;
    assert_eq!((status, body.as_str()), (200, "plain /timed/after"));
    assert_eq!(app.arrival().await.path, "/timed/after");
}

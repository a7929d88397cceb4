//! TCP passthrough through the waypoint, against the mesh's TCP echo app
//! (service `echo`, port 9000):
//!
//! - Istio's TCP metrics on the stats port: a connection to an app that
//!   greets, then echoes, is counted opened and closed with its bytes
//!   each way (sent: to the client) and Istio's labels;
//!   one whose endpoint cannot be reached (`UF`) or that has no endpoint
//!   (`UH`) is counted with its flag;
//! - `DestinationRule` `tcp.maxConnections: 1`: a second passthrough is
//!   refused (closed, `UO`) while the first is open, the first keeps
//!   working, and one after it has closed goes through; an HTTP
//!   connection of the service takes the same count; without limits two
//!   passthroughs are open at once.
//!
//! The tests wait on what the waypoint reports (its metrics), never on
//! time.

// The helpers below are test code too: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use support::{ECHO_HOST, Mesh, WAIT, eventually, get1, hbone_as, id, ip, scrape, value, vip};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use waypoint::balance::Limits;

/// At most one upstream connection to `echo`, HTTP and TCP together.
const ONE_CONNECTION: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
  namespace: b
spec:
  host: echo
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
---
";

/// Service `empty` (VIP `.6`): uses the waypoint, has no endpoint.
fn empty_service(net: u8) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: empty
  namespace: b
spec:
  clusterIP: {vip}
  selector:
    app: nobody
  ports:
  - name: tcp
    port: 9000
---
",
        vip = vip(net, 6)
    )
}

/// Bytes no sniffing takes for HTTP.
const PAYLOAD: &[u8] = b"\x00\x01 not http, echoed\n";

/// `echo`'s port to the app that speaks first (`support::greeter_app`),
/// and what it says.
const GREETER_PORT: u16 = 9001;
const GREETING: &[u8] = b"220 hello\r\n";

fn echo_tcp(mesh: &Mesh) -> SocketAddr {
    SocketAddr::new(vip(mesh.net, 1), 9000)
}

/// Sends `payload` and reads it back.
async fn echoes(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    let mut back = vec![0; payload.len()];
    timeout(WAIT, stream.read_exact(&mut back))
        .await
        .expect("echoed in time")
        .expect("echoed");
    assert_eq!(back, payload);
}

/// Sends `payload` to a passthrough that should be refused; returns what
/// came back before the waypoint closed it (an error counts as closed).
async fn answer_of_refused(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> Vec<u8> {
    // Writing may already fail if the close was quick.
    let _ = stream.write_all(PAYLOAD).await;
    let mut back = Vec::new();
    match timeout(WAIT, stream.read_to_end(&mut back)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => eprintln!("the refused passthrough closed with {error}"),
        Err(_) => panic!("not closed, but open and answering {back:?}"),
    }
    back
}

/// Ends a passthrough as a client does: its side closed, then the app's.
async fn close(mut stream: impl AsyncRead + AsyncWrite + Unpin) {
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("the app closes its side in time")
        .unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

/// Scrapes until `metric` with `needles` reaches `at_least` (recorded
/// as the passthrough ends: a moment after its client sees the end).
async fn scrape_until(mesh: &Mesh, metric: &str, needles: &[&str], at_least: u64) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = scrape(mesh).await;
        if value(&text, metric, needles) >= at_least {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{metric} {needles:?} never reached {at_least}:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The mesh with `extra_yaml`; returns once the waypoint has `limits` for
/// `echo`.
async fn mesh_with(net: u8, extra_yaml: &str, limits: Limits) -> Mesh {
    let mesh = Mesh::start(net, extra_yaml).await;
    eventually("the waypoint to have echo's limits", || {
        let applied = mesh
            .waypoint
            .config()
            .snapshot()
            .backend_policy(ECHO_HOST)
            .map_or(Limits::default(), |policy| policy.limits);
        async move { applied == limits }
    })
    .await;
    mesh
}

const OPENED: &str = "istio_tcp_connections_opened_total";
const CLOSED: &str = "istio_tcp_connections_closed_total";
const SENT: &str = "istio_tcp_sent_bytes_total";
const RECEIVED: &str = "istio_tcp_received_bytes_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passthrough_is_counted_with_istios_tcp_metrics() {
    let net = 95;
    let mesh = Mesh::start(net, &empty_service(net)).await;
    eventually("the waypoint to know the service empty", || {
        let known = mesh
            .waypoint
            .mesh()
            .snapshot()
            .service_by_vip("", vip(net, 6))
            .is_some();
        async move { known }
    })
    .await;

    // To the app that greets first, then echoes: more bytes are sent to
    // the client than received from it.
    let mut tcp = mesh
        .connect(SocketAddr::new(vip(net, 1), GREETER_PORT))
        .await;
    tcp.write_all(PAYLOAD).await.unwrap();
    let mut back = vec![0; GREETING.len() + PAYLOAD.len()];
    timeout(WAIT, tcp.read_exact(&mut back))
        .await
        .expect("greeted and echoed in time")
        .unwrap();
    assert_eq!(back, [GREETING, PAYLOAD].concat());
    let opened_while_open = scrape_until(&mesh, OPENED, &[], 1).await;
    assert_eq!(value(&opened_while_open, CLOSED, &[]), 0, "still open");
    echoes(&mut tcp, b"\x00ok").await;
    close(tcp).await;
    let received = PAYLOAD.len() as u64 + 3;
    let sent = GREETING.len() as u64 + received;

    // Its endpoint's ztunnel cannot connect to the app: UF.
    let mut down = mesh.connect(SocketAddr::new(vip(net, 3), 80)).await;
    assert_eq!(answer_of_refused(&mut down).await, b"");
    // No endpoint at all: UH. ztunnel need not send a service without
    // endpoints to the waypoint, so the test tunnels to it itself.
    let mut empty = hbone_as(
        &mesh.plane,
        ("a", "a"),
        ip(net, 50),
        id("b", "waypoint"),
        SocketAddr::new(vip(net, 6), 9000),
    )
    .await
    .expect("the waypoint accepts a tunnel for a service it serves");
    assert_eq!(answer_of_refused(&mut empty).await, b"");

    let text = scrape_until(&mesh, CLOSED, &[], 3).await;
    let echoed = [
        "reporter=\"waypoint\"",
        "source_workload_namespace=\"a\"",
        "source_principal=\"spiffe://cluster.local/ns/a/sa/a\"",
        "destination_workload_namespace=\"b\"",
        "destination_principal=\"spiffe://cluster.local/ns/b/sa/echo\"",
        "destination_service=\"echo.b.svc.cluster.local\"",
        "destination_service_name=\"echo\"",
        "destination_service_namespace=\"b\"",
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
        "connection_security_policy=\"mutual_tls\"",
    ];
    assert_eq!(value(&text, OPENED, &echoed), 1, "{text}");
    assert_eq!(value(&text, CLOSED, &echoed), 1, "{text}");
    assert_eq!(value(&text, SENT, &echoed), sent, "{text}");
    assert_eq!(value(&text, RECEIVED, &echoed), received, "{text}");
    let unreachable = [
        "destination_service=\"down.b.svc.cluster.local\"",
        "destination_principal=\"spiffe://cluster.local/ns/b/sa/down\"",
        "response_flags=\"UF\"",
    ];
    assert_eq!(value(&text, OPENED, &unreachable), 1, "{text}");
    assert_eq!(value(&text, CLOSED, &unreachable), 1, "{text}");
    assert_eq!(value(&text, SENT, &unreachable), 0, "{text}");
    let no_endpoint = [
        "destination_service=\"empty.b.svc.cluster.local\"",
        "destination_workload=\"unknown\"",
        "response_flags=\"UH\"",
    ];
    assert_eq!(value(&text, OPENED, &no_endpoint), 1, "{text}");
    assert_eq!(value(&text, CLOSED, &no_endpoint), 1, "{text}");
    // Those three, nothing else; and TCP has no request labels.
    assert_eq!(value(&text, OPENED, &[]), 3, "{text}");
    let tcp_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_tcp_"))
        .collect();
    assert!(
        tcp_lines
            .iter()
            .all(|l| !l.contains("response_code") && !l.contains("grpc_response_status")),
        "{tcp_lines:?}"
    );
    assert_eq!(
        value(&text, "istio_requests_total", &[]),
        0,
        "a passthrough is no request:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_connection_a_second_passthrough_is_refused_until_the_first_closes() {
    let net = 96;
    let limits = Limits {
        max_connections: Some(1),
        ..Limits::default()
    };
    let mesh = mesh_with(net, ONE_CONNECTION, limits).await;
    let mut first = mesh.connect(echo_tcp(&mesh)).await;
    echoes(&mut first, PAYLOAD).await;

    let mut second = mesh.connect(echo_tcp(&mesh)).await;
    assert_eq!(
        answer_of_refused(&mut second).await,
        b"",
        "refused while the first is open"
    );
    // The first is untouched by it.
    echoes(&mut first, b"\x00still here").await;
    let overflow = ["response_flags=\"UO\"", "destination_workload=\"unknown\""];
    let text = scrape_until(&mesh, CLOSED, &overflow, 1).await;
    assert_eq!(value(&text, OPENED, &overflow), 1, "{text}");
    assert_eq!(value(&text, CLOSED, &["response_flags=\"-\""]), 0, "{text}");
    let src = format!("src.addr={}:", ip(net, 10));
    let refused = support::wait_for_events(
        1,
        &[
            "TCP passthrough complete",
            &src,
            "response_flags=\"UO\"",
            // The reason names the limit that refused it.
            "maxConnections",
        ],
    )
    .await;
    assert_eq!(refused.len(), 1, "{refused:?}");

    close(first).await;
    // Counted closed once its connection is let go.
    scrape_until(&mesh, CLOSED, &["response_flags=\"-\""], 1).await;
    let mut third = mesh.connect(echo_tcp(&mesh)).await;
    echoes(&mut third, PAYLOAD).await;
    close(third).await;
    let text = scrape_until(&mesh, CLOSED, &["response_flags=\"-\""], 2).await;
    assert_eq!(value(&text, OPENED, &overflow), 1, "one refused: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_limits_two_passthroughs_are_open_at_once() {
    let mesh = mesh_with(97, "", Limits::default()).await;
    let mut first = mesh.connect(echo_tcp(&mesh)).await;
    echoes(&mut first, PAYLOAD).await;
    let mut second = mesh.connect(echo_tcp(&mesh)).await;
    echoes(&mut second, PAYLOAD).await;
    echoes(&mut first, b"\x00first").await;
    close(first).await;
    close(second).await;
    let text = scrape_until(&mesh, CLOSED, &[], 2).await;
    assert_eq!(
        value(&text, OPENED, &["response_flags=\"UO\""]),
        0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_connection_of_the_service_takes_the_same_count() {
    let mesh = mesh_with(
        98,
        ONE_CONNECTION,
        Limits {
            max_connections: Some(1),
            ..Limits::default()
        },
    )
    .await;
    // The waypoint keeps the upstream connection of this request open
    // for the next one: the service's one connection.
    let mut http = mesh.http1().await;
    let (status, _, body) = get1(&mut http, "/kept", &[]).await;
    assert_eq!(status, 200, "{body}");
    let mut tcp = mesh.connect(echo_tcp(&mesh)).await;
    assert_eq!(answer_of_refused(&mut tcp).await, b"");
    let text = scrape_until(&mesh, CLOSED, &["response_flags=\"UO\""], 1).await;
    assert_eq!(value(&text, OPENED, &["response_flags=\"-\""]), 0, "{text}");
    // HTTP is not refused by its own connection.
    let (status, _, body) = get1(&mut http, "/again", &[]).await;
    assert_eq!(status, 200, "{body}");
}

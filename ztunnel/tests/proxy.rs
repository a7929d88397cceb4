//! The proxy in process, on loopback, with real TLS and HBONE: pods A
//! (`.10`), B (`.20`), C (`.30`), each with its own proxy, a client going
//! through A's (or C's) SOCKS5 listener, and B's apps behind B's proxy.
//! Every policy has its positive and its negative case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use hbone::{ConnectRequest, Pool, PoolConfig};
use http::{HeaderMap, StatusCode};
use proto::security as sec;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Socks5 reply codes the tests expect.
const NOT_ALLOWED: u8 = 2;
const CONNECTION_REFUSED: u8 = 5;
const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 8;

/// A mesh with pods A, B and C (proxies running) and an echo app on B:8080.
async fn abc(net: u8) -> (Mesh, Pod, Pod, Pod) {
    let mesh = Mesh::new(net);
    mesh.apply(
        vec![
            mesh.workload("a", HOST_A),
            mesh.workload("b", HOST_B),
            mesh.workload("c", HOST_C),
        ],
        vec![],
    );
    let a = mesh.start_pod("a", HOST_A).await;
    let b = mesh.start_pod("b", HOST_B).await;
    let c = mesh.start_pod("c", HOST_C).await;
    echo_app(mesh.addr(HOST_B, 8080)).await;
    (mesh, a, b, c)
}

/// Outbound access events of `mesh` from the pod named `src`.
fn outbound_from(mesh: &Mesh, src: &'static str) -> impl Fn(&AccessEvent) -> bool {
    let net = format!("127.77.{}.", mesh.net);
    move |e| {
        field(e, "direction") == "outbound"
            && field(e, "src.workload") == src
            && field(e, "dst.addr").starts_with(&net)
    }
}

/// B's inbound access events for connections from `src`.
fn inbound_to_b(mesh: &Mesh, src: u8) -> impl Fn(&AccessEvent) -> bool {
    let src = format!("{}:", mesh.ip(src));
    let dst = format!("{}:", mesh.ip(HOST_B));
    move |e| {
        field(e, "direction") == "inbound"
            && field(e, "src.addr").starts_with(&src)
            && field(e, "dst.addr").starts_with(&dst)
    }
}

#[tokio::test]
async fn a_reaches_b_over_hbone_and_b_sees_a_identity() {
    let (mesh, a, b, _c) = abc(1).await;
    let tcp = socks_connect(a.socks, mesh.addr(HOST_B, 8080))
        .await
        .unwrap();
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(round_trip(tcp, &payload).await, payload);

    let inbound = wait_for_events(1, inbound_to_b(&mesh, HOST_A)).await;
    let event = &inbound[0];
    assert_eq!(field(event, "src.identity"), a.identity.to_string());
    assert_eq!(field(event, "src.workload"), "a");
    assert_eq!(field(event, "dst.workload"), "b");
    assert_eq!(field(event, "dst.identity"), b.identity.to_string());
    assert_eq!(
        field(event, "dst.hbone_addr"),
        mesh.addr(HOST_B, 8080).to_string()
    );
    assert_eq!(field(event, "bytes_sent"), "1000000");
    assert_eq!(field(event, "bytes_recv"), "1000000");
    assert!(!event.contains_key("error"), "{event:?}");

    let hbone_addr = mesh.addr(HOST_B, 15008).to_string();
    let outbound = wait_for_events(1, |e| {
        field(e, "direction") == "outbound" && field(e, "dst.addr") == hbone_addr
    })
    .await;
    let event = &outbound[0];
    assert_eq!(field(event, "src.identity"), a.identity.to_string());
    assert_eq!(field(event, "dst.identity"), b.identity.to_string());
    assert_eq!(
        field(event, "dst.hbone_addr"),
        mesh.addr(HOST_B, 8080).to_string()
    );
    assert_eq!(field(event, "bytes_sent"), "1000000");
    assert!(field(event, "duration").ends_with("ms"), "{event:?}");
}

#[tokio::test]
async fn allow_only_from_a_lets_a_in_and_keeps_c_out() {
    let (mesh, a, _b, c) = abc(2).await;
    let from_a = sec::Match {
        principals: vec![exact("cluster.local/ns/a/sa/a")],
        ..sec::Match::default()
    };
    mesh.apply_policies(vec![policy("b", "allow-a", sec::Action::Allow, from_a)]);

    let tcp = socks_connect(a.socks, mesh.addr(HOST_B, 8080))
        .await
        .unwrap();
    assert_eq!(round_trip(tcp, b"from a").await, b"from a");

    // 401 on the HBONE side; the SOCKS client is told "not allowed" and
    // its connection closes.
    let refused = socks_connect(c.socks, mesh.addr(HOST_B, 8080)).await;
    assert_eq!(refused.unwrap_err(), NOT_ALLOWED);
    let denied = wait_for_events(1, inbound_to_b(&mesh, HOST_C)).await;
    assert_eq!(field(&denied[0], "src.identity"), c.identity.to_string());
    assert!(
        field(&denied[0], "error").contains("no ALLOW policy matched"),
        "{denied:?}"
    );
    let outbound = wait_for_events(1, outbound_from(&mesh, "c")).await;
    assert!(field(&outbound[0], "error").contains("401"), "{outbound:?}");
}

#[tokio::test]
async fn deny_by_namespace_keeps_that_namespace_out() {
    let (mesh, a, _b, c) = abc(3).await;
    let from_c = sec::Match {
        namespaces: vec![exact("c")],
        ..sec::Match::default()
    };
    mesh.apply_policies(vec![policy("b", "deny-c", sec::Action::Deny, from_c)]);

    assert_eq!(
        socks_connect(c.socks, mesh.addr(HOST_B, 8080))
            .await
            .unwrap_err(),
        NOT_ALLOWED
    );
    let tcp = socks_connect(a.socks, mesh.addr(HOST_B, 8080))
        .await
        .unwrap();
    assert_eq!(round_trip(tcp, b"from a").await, b"from a");
    let denied = wait_for_events(1, inbound_to_b(&mesh, HOST_C)).await;
    assert!(
        field(&denied[0], "error").contains("b/deny-c"),
        "{denied:?}"
    );
}

/// Bytes a client sends before its SOCKS5 reply go with the `CONNECT`, so
/// they reach the app only through a connection that policy let in: a
/// denied caller's never do, an allowed caller's arrive first.
#[tokio::test]
async fn early_bytes_reach_the_app_only_through_an_allowed_connection() {
    let (mesh, a, _b, c) = abc(12).await;
    let dst = mesh.addr(HOST_B, 9191);
    let app = TcpListener::bind(dst).await.unwrap();
    let from_c = sec::Match {
        namespaces: vec![exact("c")],
        ..sec::Match::default()
    };
    mesh.apply_policies(vec![policy("b", "deny-c", sec::Action::Deny, from_c)]);

    let denied = socks_connect_with(c.socks, dst, b"from c, early").await;
    assert_eq!(denied.unwrap_err(), NOT_ALLOWED);
    let _allowed = socks_connect_with(a.socks, dst, b"from a, early")
        .await
        .unwrap();

    let wait = std::time::Duration::from_secs(5);
    let (mut first, _) = tokio::time::timeout(wait, app.accept())
        .await
        .expect("the allowed connection reaches the app")
        .unwrap();
    let mut got = [0u8; 13];
    first.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"from a, early", "the app's first connection is A's");
    let more = tokio::time::timeout(std::time::Duration::from_millis(300), app.accept()).await;
    assert!(
        more.is_err(),
        "C's denied connection must not reach the app"
    );
}

#[tokio::test]
async fn allow_on_one_port_only() {
    let (mesh, a, _b, _c) = abc(4).await;
    echo_app(mesh.addr(HOST_B, 9090)).await;
    let port_8080 = sec::Match {
        destination_ports: vec![8080],
        ..sec::Match::default()
    };
    mesh.apply_policies(vec![policy(
        "b",
        "allow-8080",
        sec::Action::Allow,
        port_8080,
    )]);

    let tcp = socks_connect(a.socks, mesh.addr(HOST_B, 8080))
        .await
        .unwrap();
    assert_eq!(round_trip(tcp, b"8080").await, b"8080");
    assert_eq!(
        socks_connect(a.socks, mesh.addr(HOST_B, 9090))
            .await
            .unwrap_err(),
        NOT_ALLOWED
    );
}

#[tokio::test]
async fn a_service_vip_spreads_connections_across_its_endpoints() {
    let mesh = Mesh::new(5);
    const SVC: &str = "b/echo.b.svc.cluster.local";
    let (mut b, mut d) = (mesh.workload("b", HOST_B), mesh.workload("d", 40));
    backs(&mut b, SVC, 80, 8080);
    backs(&mut d, SVC, 80, 8080);
    let vip = mesh.ip(100);
    mesh.apply(
        vec![mesh.workload("a", HOST_A), b, d],
        vec![service("b", "echo", vip, 80)],
    );
    let a = mesh.start_pod("a", HOST_A).await;
    mesh.start_pod("b", HOST_B).await;
    mesh.start_pod("d", 40).await;
    name_app(mesh.addr(HOST_B, 8080), "b").await;
    name_app(mesh.addr(40, 8080), "d").await;

    let mut served = BTreeMap::new();
    for _ in 0..6 {
        let tcp = socks_connect(a.socks, mesh.addr(100, 80)).await.unwrap();
        let name = String::from_utf8(round_trip(tcp, b"").await).unwrap();
        *served.entry(name).or_insert(0) += 1;
    }
    assert_eq!(served, BTreeMap::from([("b".into(), 3), ("d".into(), 3)]));
    let events = wait_for_events(6, outbound_from(&mesh, "a")).await;
    assert!(
        events
            .iter()
            .all(|e| field(e, "dst.service") == "echo.b.svc.cluster.local")
    );
    assert!(
        events
            .iter()
            .all(|e| field(e, "dst.hbone_addr").ends_with(":8080"))
    );
}

#[tokio::test]
async fn an_app_that_refuses_closes_the_client_and_503s_the_tunnel() {
    let (mesh, a, _b, _c) = abc(6).await;
    // Nothing listens on B:9999.
    assert_eq!(
        socks_connect(a.socks, mesh.addr(HOST_B, 9999))
            .await
            .unwrap_err(),
        CONNECTION_REFUSED
    );
    let inbound = wait_for_events(1, inbound_to_b(&mesh, HOST_A)).await;
    assert!(
        field(&inbound[0], "error").contains("connect to"),
        "{inbound:?}"
    );
    let outbound = wait_for_events(1, outbound_from(&mesh, "a")).await;
    assert!(field(&outbound[0], "error").contains("503"), "{outbound:?}");
}

#[tokio::test]
async fn an_authority_naming_another_pod_is_a_bad_request() {
    let (mesh, a, b, _c) = abc(7).await;
    let pool = Pool::with_connector(PoolConfig::default(), Arc::new(PodConnector(a.ip)));
    let cert = mesh.certs.fetch(&a.identity).await.unwrap();
    let request = |authority: String| ConnectRequest {
        source: cert.clone(),
        destination: mesh.addr(HOST_B, 15008),
        expected_identities: vec![b.identity.clone()],
        authority,
        headers: HeaderMap::new(),
        early_data: bytes::Bytes::new(),
    };
    let error = pool
        .connect(request(mesh.addr(HOST_C, 8080).to_string()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            hbone::Error::Refused {
                status: StatusCode::BAD_REQUEST,
                ..
            }
        ),
        "{error}"
    );
    // The same connection still serves a good request.
    let tunnel = pool
        .connect(request(mesh.addr(HOST_B, 8080).to_string()))
        .await
        .unwrap();
    drop(tunnel);
    assert_eq!(pool.connections_opened(), 1);
}

#[tokio::test]
async fn plaintext_to_15008_is_closed_without_disturbing_a_tunnel() {
    let (mesh, a, _b, _c) = abc(8).await;
    let mut good = socks_connect(a.socks, mesh.addr(HOST_B, 8080))
        .await
        .unwrap();
    good.write_all(b"before ").await.unwrap();

    let mut plaintext = TcpStream::connect(mesh.addr(HOST_B, 15008)).await.unwrap();
    plaintext
        .write_all(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n")
        .await
        .unwrap();
    assert_closed(&mut plaintext).await;

    good.write_all(b"after").await.unwrap();
    assert_eq!(round_trip(good, b"").await, b"before after");
}

#[tokio::test]
async fn malformed_socks_is_closed_without_disturbing_others() {
    let (mesh, a, _b, _c) = abc(9).await;
    let mut good = socks_connect(a.socks, mesh.addr(HOST_B, 8080))
        .await
        .unwrap();
    good.write_all(b"still ").await.unwrap();

    // Not SOCKS5 at all: closed without a reply.
    let mut http = TcpStream::connect(a.socks).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_closed(&mut http).await;

    // A domain name: "address type not supported", then closed.
    let mut named = TcpStream::connect(a.socks).await.unwrap();
    named.write_all(&[5, 1, 0]).await.unwrap();
    let mut request = vec![5, 1, 0, 3, 11];
    request.extend(b"example.com");
    request.extend(80u16.to_be_bytes());
    named.write_all(&request).await.unwrap();
    let mut replies = [0u8; 12];
    named.read_exact(&mut replies).await.unwrap();
    assert_eq!(&replies[..2], &[5, 0]);
    assert_eq!(replies[3], ADDRESS_TYPE_NOT_SUPPORTED);
    assert_closed(&mut named).await;

    good.write_all(b"fine").await.unwrap();
    assert_eq!(round_trip(good, b"").await, b"still fine");
}

#[tokio::test]
async fn unknown_destinations_pass_through_in_plaintext() {
    let (mesh, a, _b, _c) = abc(10).await;
    // An address no workload or service has: straight there, no tunnel.
    let outside = mesh.addr(200, 7000);
    echo_app(outside).await;
    let tcp = socks_connect(a.socks, outside).await.unwrap();
    assert_eq!(round_trip(tcp, b"plain").await, b"plain");
    let events = wait_for_events(1, |e| field(e, "dst.addr") == outside.to_string()).await;
    assert!(!events[0].contains_key("dst.hbone_addr"), "{events:?}");
}

/// Connects to `listener` from `<net>.<host>` and expects it to be closed,
/// with an access-log event saying the connection was not redirected.
async fn assert_refused_as_not_redirected(mesh: &Mesh, host: u8, listener: std::net::SocketAddr) {
    let client = tokio::net::TcpSocket::new_v4().unwrap();
    client.bind(mesh.addr(host, 0)).unwrap();
    let mut tcp = client.connect(listener).await.unwrap();
    assert_closed(&mut tcp).await;
    let src = format!("{}:", mesh.ip(host));
    let events = wait_for_events(1, |e| field(e, "src.addr").starts_with(&src)).await;
    // Without conntrack there is no original destination; with it, it is
    // the listener itself. Either way: not redirected, refused.
    assert!(
        field(&events[0], "error").contains("redirected"),
        "{events:?}"
    );
}

#[tokio::test]
async fn capture_listeners_refuse_connections_that_were_not_redirected() {
    let (mesh, a, b, _c) = abc(11).await;
    let inbound = TcpListener::bind(mesh.addr(HOST_B, 15006)).await.unwrap();
    let outbound = TcpListener::bind(mesh.addr(HOST_A, 15001)).await.unwrap();
    let (drain1, drain2) = (mesh.drain.subscribe(), mesh.drain.subscribe());
    let (b_proxy, a_proxy) = (b.proxy.clone(), a.proxy.clone());
    tokio::spawn(async move { b_proxy.serve_inbound_plaintext(inbound, drain1).await });
    tokio::spawn(async move { a_proxy.serve_outbound(outbound, drain2).await });

    assert_refused_as_not_redirected(&mesh, 50, mesh.addr(HOST_B, 15006)).await;
    let events = access_events(|e| field(e, "src.addr").starts_with("127.77.11.50:"));
    assert_eq!(field(&events[0], "direction"), "inbound");
    assert_refused_as_not_redirected(&mesh, 51, mesh.addr(HOST_A, 15001)).await;
    let events = access_events(|e| field(e, "src.addr").starts_with("127.77.11.51:"));
    assert_eq!(field(&events[0], "direction"), "outbound");
}

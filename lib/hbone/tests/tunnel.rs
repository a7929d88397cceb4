//! The data path: bytes through tunnels, half-close, refusals.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod support;

use std::hash::Hasher;

use hbone::{Error, Pool, PoolConfig, Rejection};
use http::HeaderValue;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn round_trip_carries_identity_authority_and_headers() {
    let ca = ca();
    let client = cert(&ca, "frontend", "web");
    let recorder = Recorder::default();
    let server = serve(&cert(&ca, "backend", "api"), recorder.clone()).await;
    let pool = Pool::new(PoolConfig::default());
    let mut request = request(&client, &server);
    request.headers.insert(
        "traceparent",
        HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    request.headers.insert(
        "baggage",
        HeaderValue::from_static("k8s.namespace.name=frontend"),
    );

    let mut tunnel = pool.connect(request).await.unwrap();
    tunnel.write_all(b"hello through the mesh").await.unwrap();
    tunnel.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    tunnel.read_to_end(&mut echoed).await.unwrap();
    assert_eq!(echoed, b"hello through the mesh");

    let seen = recorder.0.lock().unwrap()[0].clone();
    assert_eq!(seen.peer_identity, client.identity);
    assert_eq!(seen.authority, "10.0.0.7:8080");
    assert!(
        seen.headers["traceparent"]
            .to_str()
            .unwrap()
            .starts_with("00-0af7")
    );
    assert_eq!(seen.headers["baggage"], "k8s.namespace.name=frontend");
}

/// A reproducible byte stream, so both ends can check 256 MiB without
/// holding it in memory.
fn pattern_chunk(seed: &mut u64, chunk: &mut [u8]) {
    for word in chunk.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        word.copy_from_slice(&seed.to_le_bytes()[..word.len()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_256_mib_round_trips_with_matching_checksum() {
    const TOTAL: usize = 256 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let ca = ca();
    let client = cert(&ca, "a", "bulk");
    let server = serve(&cert(&ca, "b", "echo"), Echo).await;
    let pool = Pool::new(PoolConfig::default());
    let tunnel = pool.connect(request(&client, &server)).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(tunnel);

    let send = tokio::spawn(async move {
        let mut hasher = std::hash::DefaultHasher::new();
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut chunk = vec![0u8; CHUNK];
        for _ in 0..TOTAL / CHUNK {
            pattern_chunk(&mut seed, &mut chunk);
            hasher.write(&chunk);
            writer.write_all(&chunk).await.unwrap();
        }
        writer.shutdown().await.unwrap();
        hasher.finish()
    });
    let mut hasher = std::hash::DefaultHasher::new();
    let mut received = 0usize;
    let mut buffer = vec![0u8; CHUNK];
    let mut pending = Vec::with_capacity(CHUNK);
    loop {
        let n = reader.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        received += n;
        // Hash in fixed-size chunks so chunk boundaries match the sender's.
        pending.extend_from_slice(&buffer[..n]);
        while pending.len() >= CHUNK {
            hasher.write(&pending[..CHUNK]);
            pending.drain(..CHUNK);
        }
    }
    assert!(pending.is_empty());
    assert_eq!(received, TOTAL);
    assert_eq!(hasher.finish(), send.await.unwrap(), "checksums differ");
}

#[tokio::test]
async fn half_close_from_the_client_still_gets_the_answer() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    // Answers only after the client's EOF, like a request/response protocol.
    struct ReadAllThenAnswer;
    impl hbone::ConnectHandler for ReadAllThenAnswer {
        async fn handle(&self, request: hbone::InboundConnect) {
            let mut tunnel = request.accept().unwrap();
            let mut body = Vec::new();
            tunnel.read_to_end(&mut body).await.unwrap();
            let answer = format!("got {} bytes after EOF", body.len());
            tunnel.write_all(answer.as_bytes()).await.unwrap();
            tunnel.shutdown().await.unwrap();
        }
    }
    let server = serve(&cert(&ca, "b", "server"), ReadAllThenAnswer).await;
    let pool = Pool::new(PoolConfig::default());
    let mut tunnel = pool.connect(request(&client, &server)).await.unwrap();
    tunnel.write_all(&[1u8; 5000]).await.unwrap();
    tunnel.shutdown().await.unwrap();
    let mut answer = String::new();
    tunnel.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "got 5000 bytes after EOF");
}

#[tokio::test]
async fn half_close_from_the_server_still_takes_the_clients_bytes() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    // Speaks first and closes its side, then keeps reading, like a banner.
    struct BannerThenRead(tokio::sync::mpsc::Sender<Vec<u8>>);
    impl hbone::ConnectHandler for BannerThenRead {
        async fn handle(&self, request: hbone::InboundConnect) {
            let mut tunnel = request.accept().unwrap();
            tunnel.write_all(b"banner").await.unwrap();
            tunnel.shutdown().await.unwrap();
            let mut rest = Vec::new();
            tunnel.read_to_end(&mut rest).await.unwrap();
            self.0.send(rest).await.unwrap();
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let server = serve(&cert(&ca, "b", "server"), BannerThenRead(tx)).await;
    let pool = Pool::new(PoolConfig::default());
    let mut tunnel = pool.connect(request(&client, &server)).await.unwrap();
    let mut banner = Vec::new();
    tunnel.read_to_end(&mut banner).await.unwrap();
    assert_eq!(banner, b"banner", "client sees the server's EOF");
    tunnel.write_all(b"still talking").await.unwrap();
    tunnel.shutdown().await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), b"still talking");
}

#[tokio::test]
async fn policy_denial_reaches_the_client_as_a_named_error() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server = serve(&cert(&ca, "b", "server"), Refuse(Rejection::Denied)).await;
    let pool = Pool::new(PoolConfig::default());
    let error = pool.connect(request(&client, &server)).await.unwrap_err();
    assert!(matches!(error, Error::Denied { .. }), "{error:?}");
    assert!(
        error.to_string().contains("denied by policy (HTTP 401)"),
        "{error}"
    );

    // Positive twin: the same client and pool get through an allowing server.
    let open = serve(&cert(&ca, "b", "server"), Echo).await;
    pool.connect(request(&client, &open)).await.unwrap();
}

#[tokio::test]
async fn unavailable_upstream_and_forgotten_answers_are_503() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let pool = Pool::new(PoolConfig::default());
    for server in [
        serve(&cert(&ca, "b", "server"), Refuse(Rejection::Unavailable)).await,
        serve(&cert(&ca, "b", "server"), Forget).await,
    ] {
        let error = pool.connect(request(&client, &server)).await.unwrap_err();
        assert!(
            matches!(error, Error::Refused { status, .. } if status == 503),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn non_connect_requests_get_400() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server = serve(&cert(&ca, "b", "server"), Echo).await;
    // A raw HTTP/2 client over the same mTLS, sending GET instead of CONNECT.
    let tls =
        identity::tls::client_config(&client, std::slice::from_ref(&server.identity)).unwrap();
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(server.addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(name, tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let mut send = send.ready().await.unwrap();
    let get = http::Request::get("https://10.0.0.7:8080/")
        .body(())
        .unwrap();
    let (response, _) = send.send_request(get, true).unwrap();
    assert_eq!(response.await.unwrap().status(), 400);

    // The same connection still serves a proper CONNECT afterwards.
    let connect = http::Request::connect("10.0.0.7:8080").body(()).unwrap();
    let (response, _) = send.send_request(connect, false).unwrap();
    assert_eq!(response.await.unwrap().status(), 200);
}

#[tokio::test]
async fn plaintext_client_gets_only_a_closed_connection() {
    let ca = ca();
    let server = serve(&cert(&ca, "b", "server"), Echo).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"CONNECT 10.0.0.7:8080 HTTP/1.1\r\nHost: 10.0.0.7:8080\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    // EOF or reset are both a closed connection; what matters is that no
    // byte of an HTTP answer (or anything else) comes back.
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(
        answer.is_empty(),
        "plaintext client received {:?}",
        String::from_utf8_lossy(&answer)
    );

    // And the server is unharmed: a real client still gets through.
    let client = cert(&ca, "a", "client");
    let pool = Pool::new(PoolConfig::default());
    pool.connect(request(&client, &server)).await.unwrap();
}

#[tokio::test]
async fn unexpected_server_identity_fails_the_handshake() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server = serve(&cert(&ca, "b", "impostor"), Echo).await;
    let pool = Pool::new(PoolConfig::default());
    let mut request = request(&client, &server);
    request.expected_identities = vec!["spiffe://cluster.local/ns/b/sa/server".parse().unwrap()];
    let error = pool.connect(request).await.unwrap_err();
    assert!(matches!(error, Error::Handshake { .. }), "{error:?}");
    assert!(error.to_string().contains("ns/b/sa/impostor"), "{error}");
    assert_eq!(pool.open_connections(), 0);
}

//! Connection pooling: reuse, limits, idle release, keepalive, GOAWAY.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hbone::{Error, Placement, Pool, PoolConfig, Server, ServerConfig, Workers};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

async fn echo_once(tunnel: &mut hbone::Tunnel, message: &[u8]) {
    tunnel.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    tunnel.read_exact(&mut back).await.unwrap();
    assert_eq!(back, message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_streams_share_one_tls_connection() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server = serve(&cert(&ca, "b", "server"), Echo).await;
    let pool = Pool::new(PoolConfig::default());
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let pool = pool.clone();
        let request = request(&client, &server);
        tasks.push(tokio::spawn(async move {
            let mut tunnel = pool.connect(request).await.unwrap();
            echo_once(&mut tunnel, format!("stream {i}").as_bytes()).await;
            tunnel
        }));
    }
    let mut tunnels = Vec::new();
    for task in tasks {
        tunnels.push(task.await.unwrap());
    }
    assert_eq!(tunnels.len(), 100);
    assert_eq!(
        pool.connections_opened(),
        1,
        "all 100 streams must share one connection"
    );
    assert_eq!(pool.open_connections(), 1);
}

#[tokio::test]
async fn a_full_connection_makes_the_pool_open_another() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server = serve(&cert(&ca, "b", "server"), Echo).await;
    let pool = Pool::new(PoolConfig {
        max_streams_per_connection: 2,
        ..PoolConfig::default()
    });
    let mut first = pool.connect(request(&client, &server)).await.unwrap();
    let mut second = pool.connect(request(&client, &server)).await.unwrap();
    assert_eq!(pool.connections_opened(), 1);
    let mut third = pool.connect(request(&client, &server)).await.unwrap();
    assert_eq!(
        pool.connections_opened(),
        2,
        "the third stream exceeds the limit of 2"
    );
    for tunnel in [&mut first, &mut second, &mut third] {
        echo_once(tunnel, b"ok").await;
    }
    // A freed slot is reused instead of dialing again.
    drop(first);
    let _fourth = pool.connect(request(&client, &server)).await.unwrap();
    assert_eq!(pool.connections_opened(), 2);
}

#[tokio::test]
async fn different_sources_or_expectations_never_share_a_connection() {
    let ca = ca();
    let alice = cert(&ca, "a", "alice");
    let bob = cert(&ca, "a", "bob");
    let server = serve(&cert(&ca, "b", "server"), Echo).await;
    let pool = Pool::new(PoolConfig::default());
    let _a = pool.connect(request(&alice, &server)).await.unwrap();
    let _b = pool.connect(request(&bob, &server)).await.unwrap();
    let mut wider = request(&alice, &server);
    wider
        .expected_identities
        .push("spiffe://cluster.local/ns/b/sa/other".parse().unwrap());
    let _c = pool.connect(wider).await.unwrap();
    assert_eq!(pool.connections_opened(), 3);
}

#[tokio::test]
async fn each_worker_dials_connections_of_its_own_and_reuses_them() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server = serve(&cert(&ca, "b", "server"), Echo).await;
    let pool = Pool::new(PoolConfig::default());
    let workers = Workers::start("pool-worker", 2).unwrap();
    // Held together, the two placements are on the two workers.
    let (first, second) = (workers.place(), workers.place());
    // A tunnel opened and used on `placement`'s worker, kept open.
    let tunnel_on = |placement: &Placement| {
        let pool = pool.clone();
        let request = request(&client, &server);
        placement.handle().spawn(async move {
            let mut tunnel = pool.connect(request).await.unwrap();
            echo_once(&mut tunnel, b"ok").await;
            tunnel
        })
    };
    let _one = tunnel_on(&first).await.unwrap();
    let _two = tunnel_on(&first).await.unwrap();
    assert_eq!(
        pool.connections_opened(),
        1,
        "a worker reuses its connection"
    );
    let _three = tunnel_on(&second).await.unwrap();
    assert_eq!(
        pool.connections_opened(),
        2,
        "a tunnel from another worker went over the first worker's connection"
    );
    // Off the workers (this test's runtime) is a place of its own too.
    let _four = pool.connect(request(&client, &server)).await.unwrap();
    assert_eq!(pool.connections_opened(), 3);
}

#[tokio::test]
async fn idle_connections_are_released() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server = serve(&cert(&ca, "b", "server"), Echo).await;
    let idle_timeout = Duration::from_millis(200);
    let pool = Pool::new(PoolConfig {
        idle_timeout,
        ..PoolConfig::default()
    });
    let mut tunnel = pool.connect(request(&client, &server)).await.unwrap();
    echo_once(&mut tunnel, b"busy").await;
    // In use: kept well past the idle timeout.
    tokio::time::sleep(idle_timeout * 3).await;
    assert_eq!(
        pool.open_connections(),
        1,
        "a connection with a stream is not idle"
    );
    drop(tunnel);
    tokio::time::sleep(idle_timeout * 3).await;
    assert_eq!(pool.open_connections(), 0, "an idle connection is released");
    // And the next request dials afresh.
    pool.connect(request(&client, &server)).await.unwrap();
    assert_eq!(pool.connections_opened(), 2);
}

/// Forwards TCP between a client and `upstream` until told to black-hole,
/// after which bytes are swallowed in both directions: a peer that died
/// without closing its socket.
async fn blackhole_proxy(
    upstream: std::net::SocketAddr,
) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cut_rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, cut_rx.clone()));
            tokio::spawn(pump(server_read, client_write, cut_rx.clone()));
        }
    });
    (addr, cut)
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !*cut.borrow() && to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn keepalive_pings_detect_a_dead_peer() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server = serve(&cert(&ca, "b", "server"), Echo).await;
    let (proxy, cut) = blackhole_proxy(server.addr).await;
    let pool = Pool::new(PoolConfig {
        keepalive_interval: Duration::from_millis(100),
        keepalive_timeout: Duration::from_millis(200),
        ..PoolConfig::default()
    });
    let mut request = request(&client, &server);
    request.destination = proxy;
    let mut tunnel = pool.connect(request.clone()).await.unwrap();
    echo_once(&mut tunnel, b"alive").await;
    // Pings keep succeeding while the peer answers.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(pool.open_connections(), 1, "a live peer answers pings");

    cut.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        pool.open_connections(),
        0,
        "a silent peer is dropped after a late pong"
    );
    let mut buf = [0u8; 1];
    let read = tunnel.read(&mut buf).await;
    assert!(
        read.is_err() || read.unwrap() == 0,
        "streams on a dead connection end"
    );
}

#[tokio::test]
async fn goaway_lets_open_streams_finish_and_sends_new_ones_elsewhere() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server_cert = cert(&ca, "b", "server");
    let tls = Arc::new(identity::tls::server_config(&server_cert).unwrap());
    let server = Server::new(tls, Arc::new(Echo), ServerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The first connection gets its own drain signal, so only it is told
    // to go away while the listener keeps accepting.
    let (drain_first, drain_first_rx) = watch::channel(false);
    let (_keep, keep_rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((tcp, peer)) = listener.accept().await {
            let drain = if first {
                drain_first_rx.clone()
            } else {
                keep_rx.clone()
            };
            first = false;
            let server = server.clone();
            tokio::spawn(async move { server.serve_connection(tcp, peer, drain).await });
        }
    });
    let pool = Pool::new(PoolConfig::default());
    let request = request_to(&client, addr, vec![server_cert.identity.clone()]);
    let mut old = pool.connect(request.clone()).await.unwrap();
    echo_once(&mut old, b"before goaway").await;

    drain_first.send(true).unwrap();
    // Give the GOAWAY (and h2's follow-up ping) time to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut new = pool.connect(request).await.unwrap();
    assert_eq!(
        pool.connections_opened(),
        2,
        "new streams go to a new connection"
    );
    echo_once(&mut new, b"new connection").await;
    echo_once(&mut old, b"old stream still flows").await;
    old.shutdown().await.unwrap();
    let mut rest = Vec::new();
    old.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn a_server_that_never_speaks_tls_times_out_the_handshake() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let pool = Pool::new(PoolConfig {
        handshake_timeout: Duration::from_millis(200),
        ..PoolConfig::default()
    });
    let request = request_to(&client, addr, vec![]);
    let error = pool.connect(request).await.unwrap_err();
    assert!(matches!(error, Error::HandshakeTimeout { .. }), "{error:?}");
    assert!(error.to_string().contains("timed out"), "{error}");
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_that_says_so() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let pool = Pool::new(PoolConfig::default());
    let request = request_to(&client, closed, vec![]);
    let error = pool.connect(request).await.unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains(&closed.to_string()), "{error}");
}

/// A loopback listener and the TLS side of an HBONE server, for tests
/// that speak HTTP/2 themselves to see what the pool sends.
async fn raw_h2_listener(
    cert: &identity::WorkloadCert,
) -> (TcpListener, tokio_rustls::TlsAcceptor, std::net::SocketAddr) {
    let tls =
        tokio_rustls::TlsAcceptor::from(Arc::new(identity::tls::server_config(cert).unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, tls, addr)
}

/// Serves one HBONE connection with a raw HTTP/2 server made by `builder`,
/// for tests that see what the pool sends: `handle` gets the first
/// `CONNECT` (on a task of its own) while the connection keeps being
/// driven.
async fn serve_first_connect<F, Fut>(
    cert: &identity::WorkloadCert,
    builder: h2::server::Builder,
    handle: F,
) -> std::net::SocketAddr
where
    F: FnOnce(http::Request<h2::RecvStream>, h2::server::SendResponse<bytes::Bytes>) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (listener, tls, addr) = raw_h2_listener(cert).await;
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut connection = builder
            .handshake(tls.accept(tcp).await.unwrap())
            .await
            .unwrap();
        let (request, respond) = connection.accept().await.unwrap().unwrap();
        tokio::spawn(handle(request, respond));
        while connection.accept().await.is_some() {}
    });
    addr
}

/// The client's early data leaves with the `CONNECT`: this server reads the
/// stream's first DATA frame before it answers, which a client that waited
/// for the answer would never have sent.
#[tokio::test]
async fn early_data_goes_out_with_the_connect() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server_cert = cert(&ca, "b", "server");
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    let builder = h2::server::Builder::new();
    let addr = serve_first_connect(&server_cert, builder, |request, mut respond| async move {
        let mut body = request.into_body();
        let first = tokio::time::timeout(Duration::from_secs(2), body.data()).await;
        let _ = seen_tx.send(first.ok().flatten().map(Result::unwrap));
        let ok = http::Response::builder().status(200).body(()).unwrap();
        let _ = respond.send_response(ok, false);
    })
    .await;
    let pool = Pool::new(PoolConfig::default());
    let mut request = request_to(&client, addr, vec![server_cert.identity.clone()]);
    request.early_data = bytes::Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n");

    let _tunnel = pool.connect(request).await.unwrap();

    let seen = seen_rx.await.unwrap();
    assert_eq!(
        seen.as_deref(),
        Some(&b"GET / HTTP/1.1\r\n\r\n"[..]),
        "the server must have the early data before it answers"
    );
}

/// A bulk write leaves in DATA frames as large as the peer allows, not in
/// 64 KiB ones (fewer, larger writes to the socket: docs/performance.md),
/// and a small write stays one small frame.
#[tokio::test]
async fn a_large_write_goes_out_in_large_frames_and_a_small_one_in_a_small_frame() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server_cert = cert(&ca, "b", "server");
    // The frame sizes this server records, one entry per DATA frame.
    let (frames_tx, frames_rx) = tokio::sync::oneshot::channel();
    let settings = hbone::H2Settings::default();
    let mut builder = h2::server::Builder::new();
    builder
        .max_frame_size(settings.max_frame_size)
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window);
    let addr = serve_first_connect(&server_cert, builder, |request, mut respond| async move {
        let ok = http::Response::builder().status(200).body(()).unwrap();
        let _stream = respond.send_response(ok, false).unwrap();
        let mut body = request.into_body();
        let mut frames = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            if !chunk.is_empty() {
                frames.push(chunk.len());
            }
        }
        let _ = frames_tx.send(frames);
    })
    .await;
    let pool = Pool::new(PoolConfig::default());
    let mut tunnel = pool
        .connect(request_to(
            &client,
            addr,
            vec![server_cert.identity.clone()],
        ))
        .await
        .unwrap();

    tunnel.write_all(b"hello").await.unwrap();
    tunnel.flush().await.unwrap();
    // The small write goes out on its own before the large one starts.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let bulk = 512 * 1024;
    tunnel.write_all(&vec![7u8; bulk]).await.unwrap();
    tunnel.shutdown().await.unwrap();

    let frames = tokio::time::timeout(Duration::from_secs(5), frames_rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        frames.first(),
        Some(&5),
        "the small write, alone: {frames:?}"
    );
    assert_eq!(frames.iter().sum::<usize>(), 5 + bulk, "{frames:?}");
    assert!(
        frames.iter().any(|&len| len > 64 * 1024),
        "the bulk write went out in frames of at most 64 KiB: {frames:?}"
    );
}

/// Early data changes nothing about the answer: a refusal is still one.
#[tokio::test]
async fn a_refusal_with_early_data_is_still_a_refusal() {
    let ca = ca();
    let server = serve(&cert(&ca, "b", "server"), Refuse(hbone::Rejection::Denied)).await;
    let mut request = request(&cert(&ca, "a", "client"), &server);
    request.early_data = bytes::Bytes::from_static(b"secret");

    let error = Pool::new(PoolConfig::default())
        .connect(request)
        .await
        .unwrap_err();

    assert!(matches!(error, Error::Denied { .. }), "{error:?}");
}

/// A server that takes each `CONNECT` (and reads its early data, if any)
/// and then drops the whole connection without a GOAWAY, as a crashing
/// peer would. Counts the `CONNECT`s it saw.
async fn crashing_server(
    cert: &identity::WorkloadCert,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let (listener, tls, addr) = raw_h2_listener(cert).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = tls.accept(tcp).await else {
                continue;
            };
            let Ok(mut connection) = h2::server::handshake(tls).await else {
                continue;
            };
            if let Some(Ok((request, _respond))) = connection.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut body = request.into_body();
                let _ = tokio::time::timeout(Duration::from_millis(100), body.data()).await;
            }
            drop(connection);
        }
    });
    (addr, seen)
}

/// A pooled connection that dies under a `CONNECT` is worth one retry on
/// a fresh one, unless early data went with it: the peer may have passed
/// that on, and a second `CONNECT` could deliver it to the app twice.
#[tokio::test]
async fn a_connect_with_early_data_is_not_retried_after_the_connection_dies() {
    let ca = ca();
    let client = cert(&ca, "a", "client");
    let server_cert = cert(&ca, "b", "server");
    for (early, expected_connects) in [(&b""[..], 2), (&b"POST /pay"[..], 1)] {
        let (addr, seen) = crashing_server(&server_cert).await;
        let pool = Pool::new(PoolConfig::default());
        let mut request = request_to(&client, addr, vec![server_cert.identity.clone()]);
        request.early_data = bytes::Bytes::from_static(early);

        let result = pool.connect(request).await;

        assert!(result.is_err(), "the server never answers");
        assert_eq!(
            seen.load(Ordering::SeqCst),
            expected_connects,
            "CONNECTs the server saw with {} bytes of early data",
            early.len()
        );
        assert_eq!(pool.connections_opened(), expected_connects as u64);
    }
}

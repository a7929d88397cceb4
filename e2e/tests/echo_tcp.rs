//! echo-tcp, in-process and as the built binary: echo until half-close,
//! the banner, and a clean stop.

// Helpers outside `#[test]` functions panic on failure too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use e2e::echo_tcp::Config;
use support::{Process, start_echo_tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads exactly `n` bytes, with a deadline so that a missing echo fails
/// the test instead of hanging it.
async fn read_exactly(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buffer = vec![0; n];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buffer))
        .await
        .expect("no echo within 5s")
        .unwrap();
    buffer
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut buffer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buffer))
        .await
        .expect("no end of stream within 5s")
        .unwrap();
    buffer
}

#[tokio::test]
async fn echoes_until_the_client_half_closes() {
    let server = start_echo_tcp(Config::new(None)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();

    // Echoes as it reads: each piece comes back before the next is sent,
    // and the connection stays open in between.
    stream.write_all(b"first ").await.unwrap();
    assert_eq!(read_exactly(&mut stream, 6).await, b"first ");
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"second").await.unwrap();
    assert_eq!(read_exactly(&mut stream, 6).await, b"second");

    // Half-close: the server answers with its own end of stream.
    stream.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut stream).await, b"");
    server.stop().await;
}

#[tokio::test]
async fn echoes_more_than_the_socket_buffers_hold() {
    let server = start_echo_tcp(Config::new(None)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let mut payload = vec![0u8; 4 << 20];
    fastrand::fill(&mut payload);

    let (mut reader, mut writer) = stream.split();
    let send = async {
        writer.write_all(&payload).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let receive = reader.read_to_end(&mut echoed);
    let ((), received) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(send, receive)
    })
    .await
    .expect("the echo did not finish within 20s");
    received.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "the echo differs from what was sent");
    server.stop().await;
}

#[tokio::test]
async fn sends_the_banner_first() {
    let server = start_echo_tcp(Config::new(Some("db-0"))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    // Before the client sends anything.
    assert_eq!(read_exactly(&mut stream, 5).await, b"db-0\n");
    stream.write_all(b"ping").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut stream).await, b"ping");

    // On every connection.
    let mut again = TcpStream::connect(server.addr).await.unwrap();
    again.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut again).await, b"db-0\n");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_half_closes_open_connections() {
    let server = start_echo_tcp(Config::new(None)).await;
    let addr = server.addr;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"before").await.unwrap();
    assert_eq!(read_exactly(&mut idle, 6).await, b"before");

    server.stop().await;
    // A clean end of stream, not a reset, and nothing left unsaid.
    assert_eq!(read_to_end(&mut idle).await, b"");
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[tokio::test]
async fn the_binary_echoes_and_stops_on_sigterm() {
    let mut process = Process::spawn(
        env!("CARGO_BIN_EXE_echo-tcp"),
        &["--listen", "127.0.0.1:0", "--banner", "pod-b"],
        &[],
    );
    let addr = process.listening_addr().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"hello").await.unwrap();
    stream.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut stream).await, b"pod-b\nhello");

    process.terminate().await;
    let (status, log) = process.wait().await;
    assert!(status.success(), "exit {status}: {log}");
    assert!(log.contains("signal=SIGTERM"), "{log}");
    assert!(log.contains("echo-tcp stopped"), "{log}");
}

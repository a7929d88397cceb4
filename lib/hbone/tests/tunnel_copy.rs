//! `copy_tunnel` as the proxies use it: a byte stream on each side of the
//! tunnel, both piped by the zero-copy loop.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used)]

mod support;

use std::hash::Hasher;
use std::sync::{Arc, Mutex};

use hbone::copy::Transferred;
use hbone::{ConnectHandler, InboundConnect, Pool, PoolConfig, copy_tunnel};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

/// Server side of a proxy: pipes each accepted tunnel to a fresh in-memory
/// "app" with `copy_tunnel`, and hands the app end to the test.
#[derive(Clone)]
struct PipeToApp {
    apps: tokio::sync::mpsc::Sender<DuplexStream>,
    moved: Arc<Mutex<Vec<Transferred>>>,
}

impl ConnectHandler for PipeToApp {
    async fn handle(&self, request: InboundConnect) {
        let mut tunnel = request.accept().unwrap();
        let (mut proxy_end, app_end) = duplex(64 * 1024);
        self.apps.send(app_end).await.unwrap();
        let moved = copy_tunnel(&mut tunnel, &mut proxy_end).await.unwrap();
        self.moved.lock().unwrap().push(moved);
    }
}

struct World {
    /// The client app's end; its bytes go through the client-side loop.
    client: DuplexStream,
    /// The next app the server side connected to.
    apps: tokio::sync::mpsc::Receiver<DuplexStream>,
    client_moved: tokio::task::JoinHandle<Transferred>,
    server_moved: Arc<Mutex<Vec<Transferred>>>,
}

async fn world() -> World {
    let ca = ca();
    let (apps_tx, apps) = tokio::sync::mpsc::channel(1);
    let server_moved = Arc::new(Mutex::new(Vec::new()));
    let handler = PipeToApp {
        apps: apps_tx,
        moved: server_moved.clone(),
    };
    let server = serve(&cert(&ca, "b", "server"), handler).await;
    let source = cert(&ca, "a", "client");
    let pool = Pool::new(PoolConfig::default());
    let mut tunnel = pool.connect(request(&source, &server)).await.unwrap();
    let (client, mut proxy_end) = duplex(64 * 1024);
    let client_moved = tokio::spawn(async move {
        let _pool = pool;
        copy_tunnel(&mut tunnel, &mut proxy_end).await.unwrap()
    });
    World {
        client,
        apps,
        client_moved,
        server_moved,
    }
}

fn pattern(seed: &mut u64, chunk: &mut [u8]) {
    for word in chunk.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        word.copy_from_slice(&seed.to_le_bytes()[..word.len()]);
    }
}

/// Writes `total` pattern bytes in `chunk`-sized writes, then EOF; returns
/// the hash of what it wrote.
async fn send_pattern(mut to: impl AsyncWriteExt + Unpin, total: usize, chunk: usize) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ total as u64;
    let mut buffer = vec![0u8; chunk];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        pattern(&mut seed, &mut buffer[..n]);
        hasher.write(&buffer[..n]);
        to.write_all(&buffer[..n]).await.unwrap();
        left -= n;
    }
    to.shutdown().await.unwrap();
    hasher.finish()
}

/// Reads to EOF; returns the byte count and the hash (hashed in the
/// sender's chunk size, so boundaries match).
async fn receive(mut from: impl AsyncReadExt + Unpin, chunk: usize) -> (usize, u64) {
    let mut hasher = std::hash::DefaultHasher::new();
    let mut all = 0;
    let mut pending = Vec::new();
    let mut buffer = vec![0u8; 128 * 1024];
    loop {
        let n = from.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        all += n;
        pending.extend_from_slice(&buffer[..n]);
        while pending.len() >= chunk {
            hasher.write(&pending[..chunk]);
            pending.drain(..chunk);
        }
    }
    if !pending.is_empty() {
        hasher.write(&pending);
    }
    (all, hasher.finish())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_directions_at_once_arrive_whole_and_counted() {
    // Different sizes each way, not multiples of any buffer size, and
    // chunk sizes that make the loop both split and coalesce.
    const UP: usize = 48 * 1024 * 1024 + 7;
    const DOWN: usize = 20 * 1024 * 1024 + 12_345;
    let mut world = world().await;
    let app = world.apps.recv().await.unwrap();
    let (client_read, client_write) = tokio::io::split(world.client);
    let (app_read, app_write) = tokio::io::split(app);

    let up_sent = tokio::spawn(send_pattern(client_write, UP, 300_001));
    let down_sent = tokio::spawn(send_pattern(app_write, DOWN, 1_000));
    let up_received = tokio::spawn(receive(app_read, 300_001));
    let (down_len, down_hash) = receive(client_read, 1_000).await;

    let (up_len, up_hash) = up_received.await.unwrap();
    assert_eq!(up_len, UP);
    assert_eq!(up_hash, up_sent.await.unwrap(), "upload corrupted");
    assert_eq!(down_len, DOWN);
    assert_eq!(down_hash, down_sent.await.unwrap(), "download corrupted");

    // The client's loop counts tunnel -> client as a_to_b; the server's
    // counts tunnel -> app.
    let client_moved = world.client_moved.await.unwrap();
    assert_eq!(
        client_moved,
        Transferred {
            a_to_b: DOWN as u64,
            b_to_a: UP as u64
        }
    );
    let server_moved = world.server_moved.lock().unwrap().clone();
    assert_eq!(
        server_moved,
        vec![Transferred {
            a_to_b: UP as u64,
            b_to_a: DOWN as u64
        }]
    );
}

#[tokio::test]
async fn an_eof_crosses_both_loops_while_the_other_direction_flows() {
    let mut world = world().await;
    let mut app = world.apps.recv().await.unwrap();

    world.client.write_all(b"request").await.unwrap();
    world.client.shutdown().await.unwrap();
    let mut request = Vec::new();
    app.read_to_end(&mut request).await.unwrap();
    assert_eq!(request, b"request", "the app sees the client's EOF");

    // The app may answer after the client's EOF, and only then close.
    app.write_all(b"answer after EOF").await.unwrap();
    let mut first = [0u8; 16];
    world.client.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"answer after EOF");
    assert!(
        !world.client_moved.is_finished(),
        "the client's loop must keep running until the app closes too"
    );
    app.shutdown().await.unwrap();
    let mut rest = Vec::new();
    world.client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    let moved = world.client_moved.await.unwrap();
    assert_eq!(
        moved,
        Transferred {
            a_to_b: 16,
            b_to_a: 7
        }
    );
}

/// Reads one byte, then drops the tunnel with both halves open: a reset.
struct ResetAfterOneByte;

impl ConnectHandler for ResetAfterOneByte {
    async fn handle(&self, request: InboundConnect) {
        let mut tunnel = request.accept().unwrap();
        let mut one = [0u8; 1];
        tunnel.read_exact(&mut one).await.unwrap();
        drop(tunnel);
    }
}

#[tokio::test]
async fn a_reset_stream_ends_the_loop_with_an_error_and_closes_the_app() {
    let ca = ca();
    let server = serve(&cert(&ca, "b", "server"), ResetAfterOneByte).await;
    let pool = Pool::new(PoolConfig::default());
    let source = cert(&ca, "a", "client");
    let mut tunnel = pool.connect(request(&source, &server)).await.unwrap();
    let (mut client, mut proxy_end) = duplex(1024);
    let copy = tokio::spawn(async move {
        let result = copy_tunnel(&mut tunnel, &mut proxy_end).await;
        // Dropping the proxy's end is what closes the app's connection.
        drop(proxy_end);
        result
    });
    client.write_all(b"x").await.unwrap();
    let error = tokio::time::timeout(std::time::Duration::from_secs(10), copy)
        .await
        .expect("a reset must end the loop")
        .unwrap()
        .expect_err("a reset is not a clean end");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
}

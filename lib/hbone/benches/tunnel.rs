//! Plain TCP vs TLS-only vs HBONE over loopback, measured in one run.
//!
//! Throughput: a 16 MiB bulk upload on an open connection, acknowledged by
//! the server once all bytes arrived. Latency: a 1 KiB echo round trip on an
//! open connection. All three transports run the same application code on
//! both ends, so the differences are the transports'. At the end the bench
//! prints HBONE/TLS and HBONE/TCP ratios from the mean of every measured
//! iteration.
//!
//! Run: `cargo bench -p hbone --bench tunnel` (2 worker threads), and with
//! `BENCH_RUNTIME=current_thread` for one thread (CPU cost without hand-offs).

// A bench is a test program: a panic is the failure report, and its summary
// goes to stdout like criterion's own.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use hbone::{
    ConnectHandler, ConnectRequest, InboundConnect, Pool, PoolConfig, Server, ServerConfig,
};
use identity::Identity;
use identity::ca::Ca;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BULK: usize = 16 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;
const ECHO: usize = 1024;

/// Server side of the bench protocol: `B` = count BULK bytes then ack with
/// one byte, forever; `E` = echo ECHO-byte messages, forever.
async fn app<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut mode = [0u8; 1];
    if stream.read_exact(&mut mode).await.is_err() {
        return;
    }
    let mut buffer = vec![0u8; CHUNK];
    match mode[0] {
        b'B' => loop {
            let mut received = 0;
            while received < BULK {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received += n,
                }
            }
            if stream.write_all(b"k").await.is_err() || stream.flush().await.is_err() {
                return;
            }
        },
        _ => loop {
            if stream.read_exact(&mut buffer[..ECHO]).await.is_err() {
                return;
            }
            if stream.write_all(&buffer[..ECHO]).await.is_err() || stream.flush().await.is_err() {
                return;
            }
        },
    }
}

async fn bulk<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, chunk: &[u8]) {
    for _ in 0..BULK / CHUNK {
        stream.write_all(chunk).await.unwrap();
    }
    stream.flush().await.unwrap();
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack).await.unwrap();
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, message: &mut [u8]) {
    stream.write_all(message).await.unwrap();
    stream.flush().await.unwrap();
    stream.read_exact(message).await.unwrap();
}

struct AppHandler;

impl ConnectHandler for AppHandler {
    async fn handle(&self, request: InboundConnect) {
        if let Ok(tunnel) = request.accept() {
            app(tunnel).await;
        }
    }
}

type Boxed = Box<dyn AsyncStream>;
trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncStream for T {}

/// Opens connections over one of the three transports.
struct Transport {
    name: &'static str,
    open: Box<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Boxed> + Send>> + Send + Sync>,
}

async fn listen() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

async fn transports() -> Vec<Transport> {
    let ca = Ca::self_signed("cluster.local", Duration::from_secs(86400)).unwrap();
    let ttl = Duration::from_secs(3600);
    let client = Arc::new(
        ca.issue(&Identity::new("cluster.local", "a", "client").unwrap(), ttl)
            .unwrap(),
    );
    let server = ca
        .issue(&Identity::new("cluster.local", "b", "server").unwrap(), ttl)
        .unwrap();
    let server_tls = Arc::new(identity::tls::server_config(&server).unwrap());
    let client_tls = Arc::new(
        identity::tls::client_config(&client, std::slice::from_ref(&server.identity)).unwrap(),
    );

    let (tcp_listener, tcp_addr) = listen().await;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = tcp_listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            tokio::spawn(app(tcp));
        }
    });

    let (tls_listener, tls_addr) = listen().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls.clone());
    tokio::spawn(async move {
        while let Ok((tcp, _)) = tls_listener.accept().await {
            tcp.set_nodelay(true).unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move { app(acceptor.accept(tcp).await.unwrap()).await });
        }
    });

    let (hbone_listener, hbone_addr) = listen().await;
    let hbone_server = Server::new(server_tls, Arc::new(AppHandler), ServerConfig::default());
    let (drain, drain_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _never_drained = drain;
        hbone_server.serve(hbone_listener, drain_rx).await
    });
    let pool = Pool::new(PoolConfig::default());
    let server_identity = server.identity.clone();

    vec![
        Transport {
            name: "tcp",
            open: Box::new(move || {
                Box::pin(async move {
                    let tcp = TcpStream::connect(tcp_addr).await.unwrap();
                    tcp.set_nodelay(true).unwrap();
                    Box::new(tcp) as Boxed
                })
            }),
        },
        Transport {
            name: "tls",
            open: Box::new(move || {
                let connector = tokio_rustls::TlsConnector::from(client_tls.clone());
                Box::pin(async move {
                    let tcp = TcpStream::connect(tls_addr).await.unwrap();
                    tcp.set_nodelay(true).unwrap();
                    let name = rustls_pki_types::ServerName::IpAddress(tls_addr.ip().into());
                    Box::new(connector.connect(name, tcp).await.unwrap()) as Boxed
                })
            }),
        },
        Transport {
            name: "hbone",
            open: Box::new(move || {
                let pool = pool.clone();
                let request = ConnectRequest {
                    source: client.clone(),
                    destination: hbone_addr,
                    expected_identities: vec![server_identity.clone()],
                    authority: "127.0.0.1:8080".into(),
                    headers: http::HeaderMap::new(),
                    early_data: bytes::Bytes::new(),
                };
                Box::pin(async move { Box::new(pool.connect(request).await.unwrap()) as Boxed })
            }),
        },
    ]
}

/// Mean time per iteration over everything criterion measured, per bench.
static MEANS: Mutex<BTreeMap<String, (Duration, u64)>> = Mutex::new(BTreeMap::new());

fn record(name: &str, elapsed: Duration, iterations: u64) {
    let mut means = MEANS.lock().unwrap();
    let entry = means.entry(name.to_owned()).or_default();
    entry.0 += elapsed;
    entry.1 += iterations;
}

fn mean(name: &str) -> f64 {
    let means = MEANS.lock().unwrap();
    let (total, iterations) = means[name];
    total.as_secs_f64() / iterations as f64
}

fn main() {
    // BENCH_RUNTIME=current_thread puts both ends on one thread: no
    // cross-thread hand-offs, so the ratios show CPU cost alone.
    let single_thread = std::env::var("BENCH_RUNTIME").is_ok_and(|v| v == "current_thread");
    let runtime = if single_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let transports = runtime.block_on(transports());
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();

    let mut group = criterion.benchmark_group("throughput");
    group.throughput(Throughput::Bytes(BULK as u64));
    for transport in &transports {
        let mut stream = runtime.block_on(async {
            let mut stream = (transport.open)().await;
            stream.write_all(b"B").await.unwrap();
            stream
        });
        let chunk = vec![0x5au8; CHUNK];
        let key = format!("throughput/{}", transport.name);
        group.bench_function(transport.name, |b| {
            b.iter_custom(|iterations| {
                let elapsed = runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iterations {
                        bulk(&mut stream, &chunk).await;
                    }
                    start.elapsed()
                });
                record(&key, elapsed, iterations);
                elapsed
            })
        });
    }
    group.finish();

    let mut group = criterion.benchmark_group("latency_1k_echo");
    for transport in &transports {
        let mut stream = runtime.block_on(async {
            let mut stream = (transport.open)().await;
            stream.write_all(b"E").await.unwrap();
            stream
        });
        let mut message = vec![0xa5u8; ECHO];
        let key = format!("latency/{}", transport.name);
        group.bench_function(transport.name, |b| {
            b.iter_custom(|iterations| {
                let elapsed = runtime.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iterations {
                        echo(&mut stream, &mut message).await;
                    }
                    start.elapsed()
                });
                record(&key, elapsed, iterations);
                elapsed
            })
        });
    }
    group.finish();
    criterion.final_summary();
    report();
}

fn report() {
    if MEANS.lock().unwrap().len() < 6 {
        return; // a filtered run: nothing to compare
    }
    let mib = BULK as f64 / (1024.0 * 1024.0);
    let rate = |name: &str| mib / mean(&format!("throughput/{name}"));
    let rtt = |name: &str| mean(&format!("latency/{name}")) * 1e6;
    println!("\n== HBONE vs baselines (loopback, same run) ==");
    for name in ["tcp", "tls", "hbone"] {
        println!(
            "{name:>6}: throughput {:>8.1} MiB/s   1 KiB echo RTT {:>7.1} us",
            rate(name),
            rtt(name)
        );
    }
    println!(
        "HBONE/TLS throughput ratio {:.2} (bar >= 0.85), HBONE/TCP {:.2}",
        rate("hbone") / rate("tls"),
        rate("hbone") / rate("tcp")
    );
    println!(
        "HBONE/TLS latency ratio    {:.2} (bar <= 1.30), HBONE/TCP {:.2}",
        rtt("hbone") / rtt("tls"),
        rtt("hbone") / rtt("tcp")
    );
}

//! The load: an echo server in pod B and blocking clients that run inside
//! pod A's namespace (a thread that entered it), so the same code measures
//! the direct path and the captured one.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ztunnel::capture::PodNetns;

/// The size of one request and of its echo.
pub(crate) const MESSAGE: usize = 1024;

/// Echoes every connection until it closes, on a runtime of its own thread.
pub(crate) fn echo_server(netns: &PodNetns, port: u16) {
    let listener = netns
        .bind(SocketAddr::from(([0, 0, 0, 0], port)))
        .expect("bind the echo server in pod B");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("echo server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((mut tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = tcp.read(&mut buf).await {
                        if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    });
}

/// Latency percentiles of 1 KiB echoes on one open connection.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// `rounds` echoes of [`MESSAGE`] bytes from pod A to `dst`, after a
/// warm-up.
pub(crate) fn round_trips(from: &PodNetns, dst: SocketAddr, rounds: usize) -> Latency {
    let mut samples = from
        .run(move || {
            let mut tcp = connect(dst);
            let request = [7u8; MESSAGE];
            let mut reply = [0u8; MESSAGE];
            let mut samples = Vec::with_capacity(rounds);
            for i in 0..rounds + rounds / 10 {
                let started = Instant::now();
                tcp.write_all(&request).expect("send a request");
                tcp.read_exact(&mut reply).expect("read the echo");
                if i >= rounds / 10 {
                    samples.push(started.elapsed());
                }
            }
            samples
        })
        .expect("run in pod A");
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Latency {
        p50_us: at(0.50).as_secs_f64() * 1e6,
        p99_us: at(0.99).as_secs_f64() * 1e6,
    }
}

/// Sequential new connections for `duration`, each carrying one 1-byte
/// echo before it closes: connections per second.
pub(crate) fn connection_rate(from: &PodNetns, dst: SocketAddr, duration: Duration) -> f64 {
    from.run(move || {
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed() < duration {
            let mut tcp = connect(dst);
            tcp.write_all(b"x").expect("send a byte");
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).expect("read the echo");
            count += 1;
        }
        count as f64 / started.elapsed().as_secs_f64()
    })
    .expect("run in pod A")
}

/// Opens `count` connections from pod A, each proven end to end by one
/// echo, and returns them open.
pub(crate) fn hold(from: &PodNetns, dst: SocketAddr, count: usize) -> Vec<TcpStream> {
    from.run(move || {
        (0..count)
            .map(|_| {
                let mut tcp = connect(dst);
                tcp.write_all(b"x").expect("send a byte");
                let mut byte = [0u8; 1];
                tcp.read_exact(&mut byte).expect("read the echo");
                tcp
            })
            .collect()
    })
    .expect("run in pod A")
}

fn connect(dst: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect_timeout(&dst, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {dst}: {e}"));
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    tcp
}

/// One iperf3 client run from pod A to the server in pod B: Gbit/s.
pub(crate) fn iperf3(a_name: &str, b_name: &str, b_ip: &str, streams: u32, seconds: u32) -> f64 {
    let server = std::process::Command::new("ip")
        .args(["netns", "exec", b_name, "iperf3", "-s", "-1", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start iperf3 -s in pod B (install the iperf3 package)");
    std::thread::sleep(Duration::from_millis(300));
    let output = std::process::Command::new("ip")
        .args([
            "netns", "exec", a_name, "iperf3", "-c", b_ip, "-p", "5201", "-J",
        ])
        .args(["-t", &seconds.to_string(), "-P", &streams.to_string()])
        .output()
        .expect("run iperf3 -c in pod A");
    let mut server = server;
    let _ = server.wait();
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("iperf3 -J prints JSON");
    let bits = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no throughput in the iperf3 report: {report}"));
    bits / 1e9
}

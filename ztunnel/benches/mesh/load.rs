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

/// New connections for a while: how many a second, and the slowest ones,
/// which tell a rate cut by a few stalls (a SYN retransmitted after 1 s)
/// from one that is slow all along.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(crate) struct Rate {
    pub(crate) per_second: f64,
    pub(crate) slowest_ms: f64,
    /// Connections that took more than [`STALL`], echo included.
    pub(crate) stalled: u64,
}

/// A connection slower than this stalled: the rest take well under 1 ms.
pub(crate) const STALL: Duration = Duration::from_millis(100);

/// Sequential new connections for `duration`, each carrying one 1-byte
/// echo before it closes.
pub(crate) fn connection_rate(from: &PodNetns, dst: SocketAddr, duration: Duration) -> Rate {
    parallel_connection_rate(from, dst, duration, 1)
}

/// The same with `clients` threads at once, each connecting in turn: what
/// a server sees from many clients, where one wake-up of a proxy can serve
/// several connections' events. Connections per second, all together.
pub(crate) fn parallel_connection_rate(
    from: &PodNetns,
    dst: SocketAddr,
    duration: Duration,
    clients: usize,
) -> Rate {
    from.run(move || {
        let started = Instant::now();
        // Threads made here inherit this thread's namespace: pod A's.
        let clients: Vec<std::thread::JoinHandle<Tally>> = (0..clients)
            .map(|_| std::thread::spawn(move || connect_until(dst, started + duration)))
            .collect();
        let tallies: Vec<Tally> = clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect();
        let elapsed = started.elapsed().as_secs_f64();
        Rate {
            per_second: tallies.iter().map(|t| t.count).sum::<u64>() as f64 / elapsed,
            slowest_ms: tallies
                .iter()
                .map(|t| t.slowest.as_secs_f64() * 1e3)
                .fold(0.0, f64::max),
            stalled: tallies.iter().map(|t| t.stalled).sum(),
        }
    })
    .expect("run in pod A")
}

/// One client's connections.
#[derive(Default)]
struct Tally {
    count: u64,
    slowest: Duration,
    stalled: u64,
}

/// One connection after another until `deadline`, each carrying one
/// 1-byte echo before it closes.
fn connect_until(dst: SocketAddr, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        let began = Instant::now();
        let mut tcp = connect(dst);
        tcp.write_all(b"x").expect("send a byte");
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).expect("read the echo");
        let took = began.elapsed();
        tally.count += 1;
        tally.slowest = tally.slowest.max(took);
        tally.stalled += u64::from(took > STALL);
    }
    tally
}

/// Opens `count` connections from pod A, each proven end to end by one
/// echo, and returns them open.
pub(crate) fn hold(from: &PodNetns, dst: SocketAddr, count: usize) -> Vec<TcpStream> {
    from.run(move || {
        (0..count)
            .map(|i| {
                let mut tcp = connect(dst);
                // Which connection failed, and how: a failure here has
                // been seen once and not again.
                tcp.write_all(b"x")
                    .unwrap_or_else(|e| panic!("held connection {i} of {count}: send: {e}"));
                let mut byte = [0u8; 1];
                tcp.read_exact(&mut byte)
                    .unwrap_or_else(|e| panic!("held connection {i} of {count}: echo: {e}"));
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

/// One iperf3 client run: its rate, and what it cost the whole machine.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct Transfer {
    pub gbps: f64,
    /// Busy CPU seconds of the whole machine (every process, kernel and
    /// softirq included) per GB received: what the path costs per byte,
    /// whoever pays it.
    pub cpu_seconds_per_gb: f64,
    /// Busy share of all CPUs during the run: 1.0 means CPU-bound.
    pub busy: f64,
}

/// The port of the iperf3 server in pod B.
pub(crate) const IPERF_PORT: u16 = 5201;

/// One iperf3 client run from pod A to `to` (the server in pod B, or what
/// leads to it).
pub(crate) fn iperf3(
    a_name: &str,
    b_name: &str,
    to: SocketAddr,
    streams: u32,
    seconds: u32,
) -> Transfer {
    let server = std::process::Command::new("ip")
        .args(["netns", "exec", b_name, "iperf3", "-s", "-1", "-p"])
        .arg(IPERF_PORT.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start iperf3 -s in pod B (install the iperf3 package)");
    std::thread::sleep(Duration::from_millis(300));
    let before = MachineCpu::now();
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", a_name, "iperf3", "-J", "-c"])
        .arg(to.ip().to_string())
        .args(["-p", &to.port().to_string()])
        .args(["-t", &seconds.to_string(), "-P", &streams.to_string()])
        .output()
        .expect("run iperf3 -c in pod A");
    let after = MachineCpu::now();
    let mut server = server;
    let _ = server.wait();
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("iperf3 -J prints JSON");
    let received = &report["end"]["sum_received"];
    let (Some(bits), Some(bytes)) = (
        received["bits_per_second"].as_f64(),
        received["bytes"].as_f64(),
    ) else {
        panic!("no throughput in the iperf3 report: {report}");
    };
    let busy_seconds = after.busy - before.busy;
    Transfer {
        gbps: bits / 1e9,
        cpu_seconds_per_gb: busy_seconds / (bytes / 1e9),
        busy: busy_seconds / (after.total - before.total),
    }
}

/// The `cpu` line of `/proc/stat`, in seconds summed over all CPUs.
struct MachineCpu {
    busy: f64,
    total: f64,
}

impl MachineCpu {
    fn now() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
        let line = stat.lines().next().expect("/proc/stat has a cpu line");
        // user nice system idle iowait irq softirq steal (guest time is
        // already inside user). Steal is the hypervisor's, not ours.
        let ticks: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|t| t.parse().expect("numeric /proc/stat field"))
            .collect();
        let [user, nice, system, idle, iowait, irq, softirq, _steal] = ticks[..] else {
            panic!("unexpected /proc/stat cpu line: {line}");
        };
        // USER_HZ is 100 on Linux.
        let busy = (user + nice + system + irq + softirq) / 100.0;
        MachineCpu {
            busy,
            total: busy + (idle + iowait) / 100.0,
        }
    }
}

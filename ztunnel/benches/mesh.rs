//! ztunnel on the real path against the direct one, in one run:
//!
//! ```text
//!  pod A app ──(captured)──▶ ztunnel A ══ HBONE over veth ══▶ ztunnel B ──▶ pod B echo
//!  pod A app ─────────────────────── plain TCP over veth ──────────────────▶ pod B echo
//! ```
//!
//! Two pod network namespaces joined by a veth pair; istiod-lite in this
//! process; two ztunnel *processes* (the binary cargo built for this bench)
//! in netns capture mode, one per node, so each one's memory and CPU are
//! its own. The same client code runs both paths, from a thread inside pod
//! A's namespace.
//!
//! Measured: iperf3 throughput (1 and 4 streams; one stream also through
//! two plain TCP relays, see `relay`), 1 KiB echo round trips on
//! one connection (p50, p99), new connections per second (one client,
//! then several at once), each
//! ztunnel's resident memory idle and with 1,000 open tunnelled
//! connections, CPU seconds per phase, and the whole machine's CPU seconds
//! per GB in the single-stream runs: when both runs are CPU-bound, their
//! ratio is the share of direct throughput the mesh path can reach.
//! Printed as a table with ratios and the issue's bars; written as JSON to `<target>/tmp/ztunnel-mesh.json`.
//!
//! Needs root (namespaces, nftables) and iperf3:
//! `sudo -E cargo bench -p ztunnel --bench mesh`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_debug_implementations
)]

#[path = "../tests/netns_support/mod.rs"]
mod netns_support;
#[path = "../tests/node_support/mod.rs"]
mod node_support;

#[path = "mesh/load.rs"]
mod load;
#[path = "mesh/procs.rs"]
mod procs;
#[path = "mesh/relay.rs"]
mod relay;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use netns_support::{Pods, require_root};
use node_support::{ControlPlane, NODE_A, NODE_B, pods_yaml};
use procs::{Settings, Ztunnel};

const ROUNDS: usize = 20_000;
const RATE_SECONDS: u64 = 5;
const IPERF_SECONDS: u32 = 5;
const HELD: usize = 1_000;
/// Clients of the parallel new-connection run.
const CLIENTS: usize = 4;

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Path {
    iperf_1: load::Transfer,
    iperf_4: load::Transfer,
    latency: load::Latency,
    connections: load::Rate,
    /// With [`CLIENTS`] clients connecting at once.
    parallel_connections: load::Rate,
}

/// Echo ports: one for the long-lived connections, and one per phase for
/// the new-connection runs, so that the thousands of client sockets the
/// direct run leaves in TIME_WAIT (60 s) do not slow the mesh run's port
/// allocation (`connect()` then searches past them: milliseconds each).
const ECHO_PORT: u16 = 8080;
const RATE_PORT_DIRECT: u16 = 8081;
const RATE_PORT_MESH: u16 = 8082;
/// The parallel runs' ports: `rate_port + PARALLEL_PORT_OFFSET`.
const PARALLEL_PORT_OFFSET: u16 = 10;
/// The plain relays' ports, in pod A and pod B: measured before capture
/// starts, like the direct path.
const RELAY_PORT_A: u16 = 6001;
const RELAY_PORT_B: u16 = 6002;

fn measure(pods: &Pods, what: &str, rate_port: u16) -> Path {
    let dst = SocketAddr::from((pods.b_ip, ECHO_PORT));
    println!("measuring {what}...");
    let iperf = SocketAddr::from((pods.b_ip, load::IPERF_PORT));
    Path {
        iperf_1: load::iperf3(&pods.a_name, &pods.b_name, iperf, 1, IPERF_SECONDS),
        iperf_4: load::iperf3(&pods.a_name, &pods.b_name, iperf, 4, IPERF_SECONDS),
        latency: load::round_trips(&pods.a, dst, ROUNDS),
        connections: load::connection_rate(
            &pods.a,
            SocketAddr::from((pods.b_ip, rate_port)),
            Duration::from_secs(RATE_SECONDS),
        ),
        parallel_connections: load::parallel_connection_rate(
            &pods.a,
            SocketAddr::from((pods.b_ip, rate_port + PARALLEL_PORT_OFFSET)),
            Duration::from_secs(RATE_SECONDS),
            CLIENTS,
        ),
    }
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

fn main() {
    require_root();
    assert!(
        std::process::Command::new("iperf3")
            .arg("--version")
            .output()
            .is_ok(),
        "iperf3 is missing: apt-get install -y iperf3"
    );
    raise_fd_limit();
    let pods = Pods::new();
    // Reuse TIME_WAIT ports for new connections (safe with timestamps),
    // a load generator's usual setting, in both pods: in pod A for the
    // client; in pod B because through the mesh ztunnel B is the side that
    // closes first towards the app, so *its* sockets pile up in TIME_WAIT
    // (the direct path's server closes second and keeps none).
    for pod in [&pods.a_name, &pods.b_name] {
        netns_support::sh(&format!(
            "ip netns exec {pod} sysctl -qw net.ipv4.tcp_tw_reuse=1"
        ));
    }
    for port in [
        ECHO_PORT,
        RATE_PORT_DIRECT,
        RATE_PORT_MESH,
        RATE_PORT_DIRECT + PARALLEL_PORT_OFFSET,
        RATE_PORT_MESH + PARALLEL_PORT_OFFSET,
    ] {
        load::echo_server(&pods.b, port);
    }
    let direct = measure(&pods, "the direct path", RATE_PORT_DIRECT);
    println!("measuring two plain TCP relays...");
    relay::start(
        &pods.a,
        &pods.b,
        pods.b_ip,
        (RELAY_PORT_A, RELAY_PORT_B, load::IPERF_PORT),
    );
    let relayed = load::iperf3(
        &pods.a_name,
        &pods.b_name,
        SocketAddr::from(([127, 0, 0, 1], RELAY_PORT_A)),
        1,
        IPERF_SECONDS,
    );

    // The mesh: istiod-lite here, on a runtime of its own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let plane = runtime.block_on(ControlPlane::start());
    let mesh = pods_yaml(&[
        ("a", NODE_A, IpAddr::V4(pods.a_ip)),
        ("b", NODE_B, IpAddr::V4(pods.b_ip)),
    ]);
    runtime.block_on(plane.apply(&mesh));
    let scratch = tempfile::TempDir::new().unwrap();
    let (dir_a, dir_b) = (pods.netns_dir(&pods.a_name), pods.netns_dir(&pods.b_name));
    let xds = format!("https://{}", plane.grpc);
    let mut ztunnels: Vec<(Ztunnel, std::path::PathBuf)> =
        [(NODE_A, &dir_a, 0), (NODE_B, &dir_b, 100)]
            .into_iter()
            .map(|(node, dir, port_offset)| {
                let log = scratch.path().join(format!("{node}.log"));
                let token = plane.token(node);
                let root = plane.root_cert();
                let settings = Settings {
                    node,
                    xds: xds.clone(),
                    root_cert: &root,
                    token: &token,
                    netns_dir: dir.path(),
                    port_offset: port_offset + 30_000,
                    log: &log,
                };
                (Ztunnel::start(&settings), log)
            })
            .collect();
    for (ztunnel, log) in &mut ztunnels {
        ztunnel.wait_ready(log);
    }
    // A first connection fetches certificates and warms the pool.
    load::hold(&pods.a, SocketAddr::from((pods.b_ip, ECHO_PORT)), 1);
    // For profiling by hand: the mesh stays up this long before the runs.
    if let Ok(pause) = std::env::var("MESH_BENCH_PAUSE_SECS") {
        println!(
            "mesh ready: pod A {} ({}), pod B {} ({}), echo on :8080; pausing {pause} s",
            pods.a_name, pods.a_ip, pods.b_name, pods.b_ip
        );
        std::thread::sleep(Duration::from_secs(pause.parse().unwrap_or(60)));
    }
    std::thread::sleep(Duration::from_secs(1));
    let idle: Vec<f64> = ztunnels.iter().map(|(z, _)| z.rss_mib()).collect();
    let cpu_before: Vec<f64> = ztunnels.iter().map(|(z, _)| z.cpu_seconds()).collect();
    let meshed = measure(&pods, "through the mesh", RATE_PORT_MESH);
    let cpu: Vec<f64> = ztunnels
        .iter()
        .zip(&cpu_before)
        .map(|((z, _), before)| z.cpu_seconds() - before)
        .collect();
    let held = load::hold(&pods.a, SocketAddr::from((pods.b_ip, ECHO_PORT)), HELD);
    std::thread::sleep(Duration::from_millis(500));
    let loaded: Vec<f64> = ztunnels.iter().map(|(z, _)| z.rss_mib()).collect();
    drop(held);

    report(&direct, &relayed, &meshed, &idle, &loaded, &cpu);
    if let Ok(keep) = std::env::var("MESH_BENCH_KEEP_LOGS") {
        for (ztunnel, log) in &ztunnels {
            let to = std::path::Path::new(&keep).join(format!("{}.log", ztunnel.node));
            std::fs::copy(log, &to).unwrap();
            println!("log of {} kept in {}", ztunnel.node, to.display());
        }
    }
    drop(ztunnels);
    drop(plane);
}

fn report(
    direct: &Path,
    relayed: &load::Transfer,
    meshed: &Path,
    idle: &[f64],
    loaded: &[f64],
    cpu: &[f64],
) {
    let per_conn_kib: Vec<f64> = idle
        .iter()
        .zip(loaded)
        .map(|(i, l)| (l - i) * 1024.0 / HELD as f64)
        .collect();
    let row = |what: &str, d: f64, m: f64, unit: &str| {
        println!("| {what} | {d:.2} {unit} | {m:.2} {unit} | {:.2} |", m / d);
    };
    println!("\n| | direct | mesh | mesh/direct |\n| --- | --- | --- | --- |");
    row(
        "iperf3, 1 stream",
        direct.iperf_1.gbps,
        meshed.iperf_1.gbps,
        "Gbit/s",
    );
    row(
        "iperf3, 4 streams",
        direct.iperf_4.gbps,
        meshed.iperf_4.gbps,
        "Gbit/s",
    );
    row(
        "machine CPU per GB, 1 stream",
        direct.iperf_1.cpu_seconds_per_gb,
        meshed.iperf_1.cpu_seconds_per_gb,
        "s",
    );
    row(
        "machine busy, 1 stream",
        direct.iperf_1.busy * 100.0,
        meshed.iperf_1.busy * 100.0,
        "%",
    );
    println!(
        "| two plain TCP relays, 1 stream | {:.2} Gbit/s, {:.2} CPU s/GB, {:.0}% busy | | {:.2} |",
        relayed.gbps,
        relayed.cpu_seconds_per_gb,
        relayed.busy * 100.0,
        relayed.gbps / direct.iperf_1.gbps
    );
    row(
        "1 KiB echo p50",
        direct.latency.p50_us,
        meshed.latency.p50_us,
        "µs",
    );
    row(
        "1 KiB echo p99",
        direct.latency.p99_us,
        meshed.latency.p99_us,
        "µs",
    );
    row(
        "new connections",
        direct.connections.per_second,
        meshed.connections.per_second,
        "/s",
    );
    row(
        &format!("new connections, {CLIENTS} clients at once"),
        direct.parallel_connections.per_second,
        meshed.parallel_connections.per_second,
        "/s",
    );
    for (i, node) in [NODE_A, NODE_B].iter().enumerate() {
        println!(
            "\nztunnel {node}: {:.1} MiB idle, {:.1} MiB with {HELD} connections \
             ({:.1} KiB each), {:.1} CPU s during the mesh runs",
            idle[i], loaded[i], per_conn_kib[i], cpu[i]
        );
    }
    let added_p50 = meshed.latency.p50_us - direct.latency.p50_us;
    let bar = |ok: bool| if ok { "met" } else { "MISSED" };
    let throughput = meshed.iperf_1.gbps / direct.iperf_1.gbps;
    // When both runs keep every CPU busy, throughput is the inverse of the
    // cost per byte: this is the share the mesh's CPU cost allows.
    let cost_bound = direct.iperf_1.cpu_seconds_per_gb / meshed.iperf_1.cpu_seconds_per_gb;
    let rate = meshed.connections.per_second / direct.connections.per_second;
    let max_idle = idle.iter().cloned().fold(0.0, f64::max);
    let max_per_conn = per_conn_kib.iter().cloned().fold(0.0, f64::max);
    println!("\nbars:");
    println!(
        "  throughput {:.0}% of direct (>= 40%): {}",
        throughput * 100.0,
        bar(throughput >= 0.40)
    );
    println!(
        "    the mesh path costs the machine {:.1}x the CPU per byte of the direct one: \
         CPU-bound, it can reach {:.0}% of direct",
        1.0 / cost_bound,
        cost_bound * 100.0
    );
    println!(
        "    two plain TCP relays (no TLS, no HTTP/2) cost {:.1}x: {:.0}% of direct at best",
        relayed.cpu_seconds_per_gb / direct.iperf_1.cpu_seconds_per_gb,
        100.0 * direct.iperf_1.cpu_seconds_per_gb / relayed.cpu_seconds_per_gb
    );
    println!(
        "  added p50 {added_p50:.0} µs (<= 80 µs): {}",
        bar(added_p50 <= 80.0)
    );
    println!(
        "  new connections {:.0}% of direct (>= 25%): {}",
        rate * 100.0,
        bar(rate >= 0.25)
    );
    println!(
        "    with {CLIENTS} clients at once: {:.0}% of direct",
        100.0 * meshed.parallel_connections.per_second / direct.parallel_connections.per_second
    );
    for (what, path) in [("direct", direct), ("mesh", meshed)] {
        let (one, many) = (path.connections, path.parallel_connections);
        println!(
            "    {what}: slowest connection {:.1} ms, {} over {} ms (1 client); \
             {:.1} ms, {} ({CLIENTS} clients)",
            one.slowest_ms,
            one.stalled,
            load::STALL.as_millis(),
            many.slowest_ms,
            many.stalled
        );
    }
    println!(
        "  idle memory {max_idle:.1} MiB (<= 13 MiB): {}",
        bar(max_idle <= 13.0)
    );
    println!(
        "  per connection {max_per_conn:.1} KiB (<= 25 KiB): {}",
        bar(max_per_conn <= 25.0)
    );

    let ztunnels: Vec<serde_json::Value> = [NODE_A, NODE_B]
        .iter()
        .enumerate()
        .map(|(i, node)| {
            serde_json::json!({
                "node": node,
                "idle_rss_mib": idle[i],
                "rss_mib_with_connections": loaded[i],
                "held_connections": HELD,
                "kib_per_connection": per_conn_kib[i],
                "cpu_seconds": cpu[i],
            })
        })
        .collect::<Vec<_>>();
    let json = serde_json::json!({
        "direct": direct,
        "two_plain_relays_1_stream": relayed,
        "mesh": meshed,
        "ztunnel": ztunnels,
        "ratios": {
            "throughput_1_stream": throughput,
            "throughput_4_streams": meshed.iperf_4.gbps / direct.iperf_4.gbps,
            "throughput_allowed_by_cpu_cost": cost_bound,
            "added_p50_us": added_p50,
            "added_p99_us": meshed.latency.p99_us - direct.latency.p99_us,
            "connections_per_second": rate,
            "parallel_connections_per_second": meshed.parallel_connections.per_second
                / direct.parallel_connections.per_second,
        },
    });
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ztunnel-mesh.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    println!("\nwritten to {}", path.display());
}

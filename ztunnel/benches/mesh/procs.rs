//! The ztunnel processes under test: started from the binary cargo built
//! for this bench, one per node, in netns capture mode; their memory and
//! CPU read from `/proc`.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running ztunnel process, killed on drop.
pub(crate) struct Ztunnel {
    pub(crate) node: String,
    pub(crate) child: Child,
    pub(crate) readiness: SocketAddr,
}

pub(crate) struct Settings<'a> {
    pub(crate) node: &'a str,
    pub(crate) xds: String,
    pub(crate) root_cert: &'a Path,
    pub(crate) token: &'a Path,
    pub(crate) netns_dir: &'a Path,
    /// Ports 15000/15020/15021 shifted by this, so two ztunnels coexist.
    pub(crate) port_offset: u16,
    pub(crate) log: &'a Path,
}

impl Ztunnel {
    pub(crate) fn start(settings: &Settings<'_>) -> Ztunnel {
        let port = |base: u16| format!("127.0.0.1:{}", base + settings.port_offset);
        // A ztunnel left over from another run would answer our readiness
        // probe: refuse to measure it.
        for base in [15000, 15020, 15021] {
            if let Err(error) = std::net::TcpListener::bind(port(base)) {
                panic!(
                    "port {} is taken ({error}): is another mesh bench running?",
                    port(base)
                );
            }
        }
        let log = fs::File::create(settings.log).expect("create the ztunnel log file");
        // MESH_BENCH_ZTUNNEL runs another build (an A/B against a saved
        // binary of an earlier commit, in one sitting).
        let binary = std::env::var_os("MESH_BENCH_ZTUNNEL")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_ztunnel").into());
        let child = Command::new(binary)
            .env("NODE_NAME", settings.node)
            .env("XDS_ADDRESS", &settings.xds)
            .env("XDS_ROOT_CA", settings.root_cert)
            .env("ALT_XDS_HOSTNAME", "istiod.istio-system.svc")
            .env("ALT_CA_HOSTNAME", "istiod.istio-system.svc")
            .env("AUTH_TOKEN", settings.token)
            .env("ZTUNNEL_CAPTURE", "netns")
            .env("ZTUNNEL_NETNS_DIR", settings.netns_dir)
            .env("ZTUNNEL_ADMIN_ADDR", port(15000))
            .env("ZTUNNEL_STATS_ADDR", port(15020))
            .env("ZTUNNEL_READINESS_ADDR", port(15021))
            // Access logs at info, as deployed: one line per connection
            // (MESH_BENCH_LOG overrides, e.g. to profile with debug logs).
            .env(
                "RUST_LOG",
                std::env::var("MESH_BENCH_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the ztunnel binary");
        Ztunnel {
            node: settings.node.to_owned(),
            child,
            readiness: port(15021).parse().expect("readiness address"),
        }
    }

    /// Waits for `/healthz/ready` to answer 200.
    pub(crate) fn wait_ready(&mut self, log: &Path) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = fs::read_to_string(log).unwrap_or_default();
                panic!("ztunnel {} exited with {status}:\n{log}", self.node);
            }
            if ready(self.readiness) && self.child.try_wait().ok().flatten().is_none() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = fs::read_to_string(log).unwrap_or_default();
        panic!("ztunnel {} not ready within 30 s:\n{log}", self.node);
    }

    /// Resident memory, MiB.
    pub(crate) fn rss_mib(&self) -> f64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/<pid>/status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib / 1024.0
    }

    /// User + system CPU time so far, seconds.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("read /proc/<pid>/stat");
        // Fields after the command name (which is in parentheses).
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 =
            fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
        // USER_HZ is 100 on Linux.
        ticks / 100.0
    }
}

impl Drop for Ztunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
    else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(1)));
    if tcp
        .write_all(b"GET /healthz/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200")
}

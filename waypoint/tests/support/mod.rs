//! A mesh with a waypoint in one process: a real istiod-lite fed
//! Kubernetes YAML, two real ztunnels in explicit mode (node A serves the
//! client pod `a`, node B the app pods of namespace `b`), the real waypoint
//! (`App`, the code the binary runs) for namespace `b` on its own node, and
//! HTTP and TCP echo apps. Everything listens on `127.79.<net>.<host>`;
//! each test takes its own `<net>` so tests run in parallel.
//!
//! A client reaches a service as a captured pod would: through the SOCKS5
//! listener of pod `a`'s ztunnel, to the service VIP. That ztunnel sends
//! the connection to the waypoint over HBONE, and the waypoint on to the
//! app pod's ztunnel (B) over HBONE.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

pub mod apps;
pub mod retrying;

pub use apps::*;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use istiod_lite::ca::NodeTokens;
use istiod_lite::model::parse_documents;
use istiod_lite::pipeline::PipelineConfig;
use istiod_lite::server::{CaAuth, Server, ServerConfig};
use istiod_lite::sources::{Change, SourceEvent};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

pub const WAIT: Duration = Duration::from_secs(10);
pub const NODE_A: &str = "node-a";
pub const NODE_B: &str = "node-b";
/// The waypoint's node: no ztunnel runs there, so nothing captures it.
pub const NODE_W: &str = "node-w";
pub const ECHO_HOST: &str = "echo.b.svc.cluster.local";
pub const ECHO_V2_HOST: &str = "echo-v2.b.svc.cluster.local";

pub fn ip(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 79, net, host))
}

/// The VIP of `echo` (`.1`) or `echo-v2` (`.2`); never bound: only the
/// ztunnels and the waypoint know it.
pub fn vip(net: u8, n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 97, net, n))
}

pub struct Mesh {
    pub net: u8,
    pub plane: ControlPlane,
    pub node_a: ztunnel::app::App,
    pub node_b: ztunnel::app::App,
    pub waypoint: waypoint::app::App,
    /// TCP connections the `echo` (v1) app has accepted.
    pub echo_connections: Arc<AtomicUsize>,
}

impl Mesh {
    /// Starts everything for `net`, with `extra_yaml` applied with the mesh
    /// (policies), and waits until all of it is ready.
    pub async fn start(net: u8, extra_yaml: &str) -> Mesh {
        Self::start_with(net, extra_yaml, &[]).await
    }

    /// As [`Mesh::start`], with extra waypoint flags.
    pub async fn start_with(net: u8, extra_yaml: &str, waypoint_flags: &[&str]) -> Mesh {
        capture_access_log();
        let echo_connections = http_app(SocketAddr::new(ip(net, 20), 8080), "v1").await;
        http_app(SocketAddr::new(ip(net, 21), 8080), "v2").await;
        tcp_echo_app(SocketAddr::new(ip(net, 20), 9000)).await;
        greeter_app(SocketAddr::new(ip(net, 20), 9001)).await;
        let plane = ControlPlane::start().await;
        plane
            .apply(&format!("{}{extra_yaml}", mesh_yaml(net)))
            .await;
        let node_a = plane.ztunnel(NODE_A).await;
        let node_b = plane.ztunnel(NODE_B).await;
        let waypoint = waypoint::app::App::start(&plane.waypoint_args(net, waypoint_flags))
            .await
            .unwrap();
        let mesh = Mesh {
            net,
            plane,
            node_a,
            node_b,
            waypoint,
            echo_connections,
        };
        mesh.wait_ready().await;
        mesh
    }

    async fn wait_ready(&self) {
        let readiness = self.waypoint.readiness_addr();
        eventually("the waypoint to be ready", || async move {
            http_get_status(readiness, "/healthz/ready").await == Some(200)
        })
        .await;
        for node in [&self.node_a, &self.node_b] {
            let readiness = node.readiness_addr();
            eventually("ztunnel synced with its pods captured", || async move {
                http_get_status(readiness, "/healthz/ready").await == Some(200)
            })
            .await;
        }
        eventually("the waypoint to know the echo services", || {
            let state = self.waypoint.mesh().snapshot();
            let known = state.service_by_vip("", vip(self.net, 1)).is_some()
                && state.service_by_vip("", vip(self.net, 2)).is_some()
                && state.service_by_vip("", vip(self.net, 3)).is_some()
                && state.service_by_vip("", vip(self.net, 4)).is_some()
                && state.workloads().count() >= 5;
            async move { known }
        })
        .await;
    }

    /// A TCP connection from pod `a` to `<vip>:<port>`, through its ztunnel.
    pub async fn connect(&self, dst: SocketAddr) -> TcpStream {
        socks_connect(SocketAddr::new(ip(self.net, 10), 15080), dst).await
    }

    /// An HTTP/1.1 client connection from pod `a` to the service `echo`.
    pub async fn http1(&self) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
        let tcp = self.connect(SocketAddr::new(vip(self.net, 1), 80)).await;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }

    /// An HTTP/2 (prior knowledge) client connection from pod `a` to `echo`.
    pub async fn http2(&self) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
        let tcp = self.connect(SocketAddr::new(vip(self.net, 1), 80)).await;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(connection);
        sender
    }
}

/// One GET through an HTTP/1.1 connection: status, headers, body.
pub async fn get1(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, HeaderMap, String) {
    let mut request = Request::get(path).header("host", ECHO_HOST);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender.ready().await.unwrap();
    let response = tokio::time::timeout(
        WAIT,
        sender.send_request(request.body(Empty::new()).unwrap()),
    )
    .await
    .expect("no response in time")
    .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

/// istiod-lite in this process, with node tokens for the three nodes.
pub struct ControlPlane {
    pub state: TempDir,
    pub grpc: SocketAddr,
    /// The delta ADS store istiod-lite serves from: tests put resources
    /// there that they write by hand (malformed ones included).
    pub ads: Arc<xds::ResourceStore>,
    events: mpsc::Sender<SourceEvent>,
    _stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ControlPlane {
    pub async fn start() -> ControlPlane {
        let state = TempDir::new().unwrap();
        NodeTokens::open(state.path(), [NODE_A, NODE_B, NODE_W]).unwrap();
        let config = ServerConfig {
            state_dir: state.path().to_owned(),
            plugin_ca_dir: None,
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            pipeline: PipelineConfig {
                debounce: Duration::from_millis(5),
                max_debounce: Duration::from_millis(50),
                ..PipelineConfig::default()
            },
            ca: istiod_lite::ca::CaConfig::default(),
            auth: CaAuth::NodeTokens,
        };
        let server = Server::bind(config).await.unwrap();
        let grpc = server.grpc_addr().unwrap();
        let events = server.source_events();
        let ads = server.ads().store().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        ControlPlane {
            state,
            grpc,
            ads,
            events,
            _stop: stop,
            task,
        }
    }

    /// Applies every object of `yaml` as one change set, then marks the
    /// source synced.
    pub async fn apply(&self, yaml: &str) {
        let changes = parse_documents(yaml)
            .into_iter()
            .map(|o| Change::Upsert(o.unwrap()))
            .collect();
        self.events
            .send(SourceEvent::Changes {
                origin: "test".into(),
                changes,
            })
            .await
            .unwrap();
        self.events.send(SourceEvent::Synced).await.unwrap();
    }

    pub fn root_cert(&self) -> PathBuf {
        self.state.path().join("root-cert.pem")
    }

    pub fn token(&self, node: &str) -> PathBuf {
        self.state
            .path()
            .join("tokens")
            .join(format!("{node}.token"))
    }

    pub async fn ztunnel(&self, node: &str) -> ztunnel::app::App {
        let xds = format!("https://{}", self.grpc);
        let root = self.root_cert().display().to_string();
        let token = self.token(node).display().to_string();
        let args = ztunnel::config::Args::try_parse_from([
            "ztunnel",
            "--node-name",
            node,
            "--xds-address",
            &xds,
            "--xds-root-ca",
            &root,
            "--alt-xds-hostname",
            "istiod.istio-system.svc",
            "--alt-ca-hostname",
            "istiod.istio-system.svc",
            "--auth-token",
            &token,
            "--admin-addr",
            "127.0.0.1:0",
            "--stats-addr",
            "127.0.0.1:0",
            "--readiness-addr",
            "127.0.0.1:0",
            "--capture",
            "explicit",
        ])
        .unwrap();
        let data = ztunnel::pods::DataThreads::Runtime(tokio::runtime::Handle::current());
        ztunnel::app::App::start(&args, None, data).await.unwrap()
    }

    /// The settings of the waypoint of namespace `b` (service account
    /// `waypoint`), on its pod's address. In file mode istiod-lite's CA
    /// authorizes node tokens, so the waypoint uses its node's.
    pub fn waypoint_args(&self, net: u8, extra: &[&str]) -> waypoint::config::Args {
        let xds = format!("https://{}", self.grpc);
        let root = self.root_cert().display().to_string();
        let token = self.token(NODE_W).display().to_string();
        let hbone = SocketAddr::new(ip(net, 50), 15008).to_string();
        let mut argv = vec![
            "waypoint",
            "--xds-address",
            &xds,
            "--xds-root-ca",
            &root,
            "--alt-xds-hostname",
            "istiod.istio-system.svc",
            "--alt-ca-hostname",
            "istiod.istio-system.svc",
            "--auth-token",
            &token,
            "--pod-namespace",
            "b",
            "--service-account",
            "waypoint",
            "--pod-name",
            "waypoint",
            "--node-name",
            NODE_W,
            "--hbone-addr",
            &hbone,
            "--admin-addr",
            "127.0.0.1:0",
            "--stats-addr",
            "127.0.0.1:0",
            "--readiness-addr",
            "127.0.0.1:0",
        ];
        argv.extend_from_slice(extra);
        waypoint::config::Args::try_parse_from(argv).unwrap()
    }

    /// A certificate for `identity`, signed by the mesh root (for test
    /// clients that speak HBONE themselves).
    pub fn issue(&self, ns: &str, sa: &str) -> identity::WorkloadCert {
        let ca = identity::Ca::load_plugin(&self.state.path().join("ca"), "cluster.local").unwrap();
        let id = identity::Identity::new("cluster.local", ns, sa).unwrap();
        ca.issue(&id, Duration::from_secs(3600)).unwrap()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Namespaces `a` (client pod on node A) and `b` (enrolled, using the
/// waypoint `waypoint`): pods `echo` (`.20`, app `echo`), `echo-v2`
/// (`.21`, app `echo-v2`) and `down` (`.22`, no app running) on node B,
/// services `echo` (80 to 8080, 9000 to a TCP echo, 9001 to a TCP app that
/// speaks first), `echo-v2` and `down` (80 to 8080), `no-waypoint`
/// (`echo`'s pods, opted out of the waypoint),
/// and the waypoint (`Gateway`, its `Service` and its pod on node W at
/// `.50`).
pub fn mesh_yaml(net: u8) -> String {
    let mut yaml = String::new();
    for ns in ["a", "b"] {
        let waypoint = if ns == "b" {
            "\n    istio.io/use-waypoint: waypoint"
        } else {
            ""
        };
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    \
             istio.io/dataplane-mode: ambient{waypoint}\n---\n"
        ));
    }
    yaml.push_str(&pod("a", "a", "a", NODE_A, ip(net, 10), "app: a"));
    yaml.push_str(&pod("b", "echo", "echo", NODE_B, ip(net, 20), "app: echo"));
    yaml.push_str(&pod(
        "b",
        "echo-v2",
        "echo",
        NODE_B,
        ip(net, 21),
        "app: echo-v2",
    ));
    // Nothing listens on `down`'s address: its ztunnel cannot connect.
    yaml.push_str(&pod("b", "down", "down", NODE_B, ip(net, 22), "app: down"));
    yaml.push_str(&pod(
        "b",
        "waypoint",
        "waypoint",
        NODE_W,
        ip(net, 50),
        "gateway.networking.k8s.io/gateway-name: waypoint",
    ));
    yaml.push_str(&format!(
        "apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: b
spec:
  clusterIP: {echo}
  selector:
    app: echo
  ports:
  - name: http
    port: 80
    targetPort: 8080
  - name: tcp
    port: 9000
  - name: greeter
    port: 9001
---
apiVersion: v1
kind: Service
metadata:
  name: echo-v2
  namespace: b
spec:
  clusterIP: {echo_v2}
  selector:
    app: echo-v2
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: down
  namespace: b
spec:
  clusterIP: {down}
  selector:
    app: down
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: no-waypoint
  namespace: b
  labels:
    istio.io/use-waypoint: none
spec:
  clusterIP: {no_waypoint}
  selector:
    app: echo
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: b
  labels:
    istio.io/use-waypoint: none
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - name: mesh
    port: 15008
    protocol: HBONE
---
apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: b
  labels:
    gateway.istio.io/managed: istio.io-mesh-controller
    istio.io/use-waypoint: none
spec:
  clusterIP: {waypoint}
  selector:
    gateway.networking.k8s.io/gateway-name: waypoint
  ports:
  - name: mesh
    port: 15008
---
",
        echo = vip(net, 1),
        echo_v2 = vip(net, 2),
        down = vip(net, 3),
        no_waypoint = vip(net, 4),
        waypoint = vip(net, 50),
    ));
    yaml
}

pub fn pod(ns: &str, name: &str, sa: &str, node: &str, ip: IpAddr, label: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  uid: uid-{ns}-{name}
  labels:
    {label}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
  containers:
  - name: app
    image: app
status:
  phase: Running
  conditions:
  - type: Ready
    status: \"True\"
  podIP: {ip}
  podIPs:
  - ip: {ip}
---
"
    )
}

/// An `AuthorizationPolicy` (L4, enforced by ztunnel) for every workload
/// of `ns`.
pub fn policy(ns: &str, name: &str, action: &str, rules: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: {name}
  namespace: {ns}
spec:
  action: {action}
  rules:
{rules}
---
"
    )
}

/// SOCKS5 `CONNECT` through `proxy` to `dst`; panics on refusal.
pub async fn socks_connect(proxy: SocketAddr, dst: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    tcp.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [5, 0]);
    let SocketAddr::V4(dst) = dst else {
        unreachable!("the tests use IPv4")
    };
    let mut request = vec![5, 1, 0, 1];
    request.extend(dst.ip().octets());
    request.extend(dst.port().to_be_bytes());
    tcp.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    tcp.read_exact(&mut reply).await.unwrap();
    assert_eq!(reply[1], 0, "SOCKS5 refused {dst}");
    tcp
}

/// The status of a bare HTTP/1.1 GET, or `None` when nothing answers.
pub async fn http_get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    http_get(addr, path).await.map(|(status, _)| status)
}

/// The status and body of a bare HTTP/1.1 GET (the server must not
/// chunk), or `None` when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.ok()?;
    let status = response.get(9..12)?.parse().ok()?;
    let (_, body) = response.split_once("\r\n\r\n")?;
    Some((status, body.to_owned()))
}

/// Polls `check` until it holds or `WAIT` passes.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The waypoint's access-log events (target `access`, message
/// `request complete`), each as `field=value` text.
static ACCESS_LOG: OnceLock<Mutex<Vec<String>>> = OnceLock::new();

pub fn capture_access_log() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let fmt = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(tracing_subscriber::EnvFilter::from_default_env());
        tracing_subscriber::registry()
            .with(CaptureAccess)
            .with(fmt)
            .init();
    });
}

/// Access-log lines of the waypoint so far that contain every one of
/// `needles`.
pub fn access_events(needles: &[&str]) -> Vec<String> {
    ACCESS_LOG
        .get_or_init(Mutex::default)
        .lock()
        .unwrap()
        .iter()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .cloned()
        .collect()
}

/// Waits until at least `count` access-log lines contain every needle.
pub async fn wait_for_events(count: usize, needles: &[&str]) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = access_events(needles);
        if events.len() >= count {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "wanted {count} access-log events with {needles:?}, got {events:?}; all: {:?}",
            access_events(&[])
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct CaptureAccess;

impl<S: tracing::Subscriber> Layer<S> for CaptureAccess {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() != "access" {
            return;
        }
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={:?} ", field.name(), value));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        ACCESS_LOG
            .get_or_init(Mutex::default)
            .lock()
            .unwrap()
            .push(fields.0);
    }
}

/// Opens an HBONE tunnel as the test itself, presenting a certificate for
/// `ns/sa` from the mesh CA, to `<ip>:15008` with `:authority` `authority`.
pub async fn hbone_as(
    plane: &ControlPlane,
    (ns, sa): (&str, &str),
    to: IpAddr,
    expected: identity::Identity,
    authority: SocketAddr,
) -> Result<hbone::Tunnel, hbone::Error> {
    let cert = Arc::new(plane.issue(ns, sa));
    let pool = hbone::Pool::new(hbone::PoolConfig::default());
    pool.connect(hbone::ConnectRequest {
        source: cert,
        destination: SocketAddr::new(to, 15008),
        expected_identities: vec![expected],
        authority: authority.to_string(),
        headers: HeaderMap::new(),
        early_data: bytes::Bytes::new(),
    })
    .await
}

pub fn id(ns: &str, sa: &str) -> identity::Identity {
    identity::Identity::new("cluster.local", ns, sa).unwrap()
}

/// The waypoint's `/metrics`, which must answer 200.
pub async fn scrape(mesh: &Mesh) -> String {
    let (status, body) = http_get(mesh.waypoint.stats_addr(), "/metrics")
        .await
        .expect("the stats port answers");
    assert_eq!(status, 200, "{body}");
    body
}

/// The sum of the samples of `metric` whose labels contain every needle.
pub fn value(scrape: &str, metric: &str, needles: &[&str]) -> u64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

//! A whole mesh in one process: a real istiod-lite (gRPC over TLS, the CA
//! with node tokens) fed Kubernetes YAML, and real ztunnels (`App`, the same
//! code the binary runs) in explicit mode, each serving the pods of its
//! node on loopback addresses `127.78.<net>.<host>`.
//!
//! Each test takes its own `<net>`, so tests run in parallel.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use istiod_lite::ca::{CaConfig, NodeTokens};
use istiod_lite::model::parse_documents;
use istiod_lite::pipeline::PipelineConfig;
use istiod_lite::server::{CaAuth, Server, ServerConfig};
use istiod_lite::sources::{Change, SourceEvent};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use ztunnel::app::App;
use ztunnel::config::Args;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
pub const NODE_A: &str = "node-a";
pub const NODE_B: &str = "node-b";

/// istiod-lite, restartable on the same port and state directory.
pub struct ControlPlane {
    pub state: TempDir,
    pub grpc: SocketAddr,
    events: Option<mpsc::Sender<SourceEvent>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ControlPlane {
    pub async fn start() -> ControlPlane {
        let state = TempDir::new().unwrap();
        NodeTokens::open(state.path(), [NODE_A, NODE_B]).unwrap();
        let mut plane = ControlPlane {
            state,
            grpc: "127.0.0.1:0".parse().unwrap(),
            events: None,
            stop: None,
            task: None,
        };
        plane.serve().await;
        plane
    }

    async fn serve(&mut self) {
        let config = ServerConfig {
            state_dir: self.state.path().to_owned(),
            plugin_ca_dir: None,
            grpc_addr: self.grpc,
            http_addr: "127.0.0.1:0".parse().unwrap(),
            pipeline: PipelineConfig {
                debounce: Duration::from_millis(5),
                max_debounce: Duration::from_millis(50),
                ..PipelineConfig::default()
            },
            ca: CaConfig::default(),
            auth: CaAuth::NodeTokens,
        };
        let server = Server::bind(config).await.unwrap();
        self.grpc = server.grpc_addr().unwrap();
        self.events = Some(server.source_events());
        let (stop, stopped) = oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(async move {
            server
                .serve(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        }));
    }

    /// Stops serving (streams end, ztunnels lose their control plane).
    pub async fn stop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .expect("istiod-lite did not stop")
            .unwrap();
        self.events = None;
    }

    /// Starts again on the same port with the same state (root, tokens);
    /// it knows nothing until `apply` is called.
    pub async fn restart(&mut self) {
        self.serve().await;
    }

    /// Applies every object of `yaml` as one change set, then marks the
    /// source synced (the first call makes istiod-lite serve).
    pub async fn apply(&self, yaml: &str) {
        let changes = parse_documents(yaml)
            .into_iter()
            .map(|o| Change::Upsert(o.unwrap()))
            .collect();
        let events = self.events.as_ref().unwrap();
        events
            .send(SourceEvent::Changes {
                origin: "test".into(),
                changes,
            })
            .await
            .unwrap();
        events.send(SourceEvent::Synced).await.unwrap();
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

    /// The settings of a ztunnel for `node` in explicit mode, with every
    /// port of its own on loopback chosen by the kernel.
    pub fn ztunnel_args(&self, node: &str, extra: &[&str]) -> Args {
        let xds = format!("https://{}", self.grpc);
        let root = self.root_cert().display().to_string();
        let token = self.token(node).display().to_string();
        let mut argv = vec![
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
        ];
        if !extra.contains(&"--capture") {
            argv.extend_from_slice(&["--capture", "explicit"]);
        }
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    pub async fn ztunnel(&self, node: &str, extra: &[&str]) -> App {
        let data = ztunnel::pods::DataThreads::Runtime(tokio::runtime::Handle::current());
        App::start(&self.ztunnel_args(node, extra), None, data)
            .await
            .unwrap()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub fn pod_ip(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 78, net, host))
}

/// Namespaces `a`, `b`, `c` enrolled in the mesh, and one pod in each:
/// `a` on node A (`.10`), `b` on node B (`.20`), `c` on node A (`.30`),
/// each with service account `<ns>`.
pub fn mesh_yaml(net: u8) -> String {
    pods_yaml(&[
        ("a", NODE_A, pod_ip(net, 10)),
        ("b", NODE_B, pod_ip(net, 20)),
        ("c", NODE_A, pod_ip(net, 30)),
    ])
}

/// An enrolled namespace `<ns>` per entry holding one pod `<ns>` (service
/// account `<ns>`) on `node` at `ip`.
pub fn pods_yaml(pods: &[(&str, &str, IpAddr)]) -> String {
    let mut yaml = String::new();
    for (ns, node, ip) in pods {
        yaml.push_str(&format!(
            "apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata:
  name: {ns}
  namespace: {ns}
  uid: uid-{ns}
  labels:
    app: {ns}
spec:
  nodeName: {node}
  serviceAccountName: {ns}
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
        ));
    }
    yaml
}

/// An `AuthorizationPolicy` for every workload of `ns`.
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

/// Waits until `app` holds workloads and is ready.
pub async fn ready(app: &App, workloads: usize) {
    let readiness = app.readiness_addr();
    eventually("ztunnel synced with its pods captured", || {
        let count = app.state().snapshot().workloads().count();
        async move { count >= workloads && http_get(readiness, "/healthz/ready").await.0 == 200 }
    })
    .await;
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

/// One echo round trip on an open connection.
pub async fn echo(tcp: &mut TcpStream, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    tcp.write_all(payload).await?;
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::other("echo timed out"))??;
    Ok(back)
}

/// A bare HTTP/1.1 GET; the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path).await
}

/// A bare HTTP/1.1 request without a body; the status code and body.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

//! A small mesh on loopback for proxy tests: one CA behind a real cert
//! manager, a state store fed with Istio's proto messages, pods as loopback
//! addresses each with its own proxy, apps, a SOCKS5 client, and the access
//! log captured from tracing.
//!
//! Tests run in parallel, so each mesh lives in its own /24 of loopback,
//! `127.77.<net>.0/24`, where pod A is `.10`, B `.20`, C `.30`; each pod's
//! proxy listens on `<pod-ip>:15008` (HBONE) and `<pod-ip>:15080` (SOCKS5).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hbone::{ConnectFuture, Connector};
use identity::manager::BoxError;
use identity::{Ca, CaClient, CertManager, CertManagerConfig, Identity, WorkloadCert};
use proto::security as sec;
use proto::workload as wl;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{EnvFilter, Layer};
use ztunnel::connections::ConnectionTracker;
use ztunnel::metrics::Metrics;
use ztunnel::proxy::{Proxy, ProxyConfig};
use ztunnel::state::StateStore;

pub const TTL: Duration = Duration::from_secs(3600);
pub const HOST_A: u8 = 10;
pub const HOST_B: u8 = 20;
pub const HOST_C: u8 = 30;

/// Signs locally, as the CA service would after checking the caller.
pub struct LocalCa(pub Arc<Ca>);

impl CaClient for LocalCa {
    async fn fetch_certificate(&self, id: &Identity) -> Result<WorkloadCert, BoxError> {
        Ok(self.0.issue(id, TTL)?)
    }
}

/// Opens sockets from a pod's address, as a connector in the pod's network
/// namespace would: peers see the pod's IP.
#[derive(Debug)]
pub struct PodConnector(pub IpAddr);

impl Connector for PodConnector {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_> {
        Box::pin(async move {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(self.0, 0))?;
            socket.connect(addr).await
        })
    }
}

/// One mesh: state, CA and cert manager, and the drain switch of every
/// proxy started in it.
pub struct Mesh {
    pub net: u8,
    pub state: Arc<StateStore>,
    pub ca: Arc<Ca>,
    pub certs: Arc<CertManager<LocalCa>>,
    pub drain: watch::Sender<bool>,
    pub connections: ConnectionTracker,
}

/// A pod with a running proxy.
pub struct Pod {
    pub ip: IpAddr,
    pub identity: Identity,
    pub proxy: Proxy,
    pub socks: SocketAddr,
}

impl Mesh {
    pub fn new(net: u8) -> Self {
        capture_access_log();
        let ca = Arc::new(Ca::self_signed("cluster.local", 24 * TTL).unwrap());
        let certs = CertManager::new(LocalCa(ca.clone()), CertManagerConfig::default());
        Mesh {
            net,
            state: Arc::new(StateStore::new()),
            ca,
            certs: Arc::new(certs),
            drain: watch::channel(false).0,
            connections: ConnectionTracker::new(Arc::new(Metrics::default())),
        }
    }

    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 77, self.net, host))
    }

    pub fn addr(&self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip(host), port)
    }

    /// An HBONE pod `name` in namespace `name` with service account `name`.
    pub fn workload(&self, name: &str, host: u8) -> wl::Workload {
        let IpAddr::V4(ip) = self.ip(host) else {
            unreachable!()
        };
        wl::Workload {
            uid: uid(name),
            name: name.into(),
            namespace: name.into(),
            addresses: vec![ip.octets().to_vec()],
            tunnel_protocol: wl::TunnelProtocol::Hbone as i32,
            trust_domain: "cluster.local".into(),
            service_account: name.into(),
            node: "node".into(),
            ..wl::Workload::default()
        }
    }

    pub fn apply(&self, workloads: Vec<wl::Workload>, services: Vec<wl::Service>) {
        let mut upserts: Vec<(String, wl::Address)> = Vec::new();
        for w in workloads {
            let name = w.uid.clone();
            upserts.push((name, address(wl::address::Type::Workload(w))));
        }
        for s in services {
            let name = format!("{}/{}", s.namespace, s.hostname);
            upserts.push((name, address(wl::address::Type::Service(s))));
        }
        let rejected = self.state.update(|s| s.apply_addresses(upserts, &[]));
        assert!(rejected.is_empty(), "{rejected:?}");
    }

    pub fn apply_policies(&self, policies: Vec<sec::Authorization>) {
        let upserts = policies
            .into_iter()
            .map(|p| (format!("{}/{}", p.namespace, p.name), p))
            .collect();
        let rejected = self.state.update(|s| s.apply_policies(upserts, &[]));
        assert!(rejected.is_empty(), "{rejected:?}");
    }

    /// Starts the proxy of the pod `name` at `host`: HBONE and SOCKS5.
    pub async fn start_pod(&self, name: &str, host: u8) -> Pod {
        let ip = self.ip(host);
        let proxy = Proxy::new(
            uid(name),
            self.state.clone(),
            self.certs.clone(),
            Arc::new(PodConnector(ip)),
            self.connections.clone(),
            ProxyConfig::default(),
        );
        let hbone = TcpListener::bind((ip, 15008)).await.unwrap();
        let socks = TcpListener::bind((ip, 15080)).await.unwrap();
        let socks_addr = socks.local_addr().unwrap();
        let (p1, p2) = (proxy.clone(), proxy.clone());
        let (d1, d2) = (self.drain.subscribe(), self.drain.subscribe());
        tokio::spawn(async move { p1.serve_inbound(hbone, d1).await });
        tokio::spawn(async move { p2.serve_socks5(socks, d2).await });
        Pod {
            ip,
            identity: Identity::new("cluster.local", name, name).unwrap(),
            proxy,
            socks: socks_addr,
        }
    }
}

pub fn uid(name: &str) -> String {
    format!("Kubernetes//Pod/{name}/{name}")
}

fn address(r#type: wl::address::Type) -> wl::Address {
    wl::Address {
        r#type: Some(r#type),
    }
}

/// Makes `workload` back `service` (`<ns>/<hostname>`) with `port -> target`.
pub fn backs(workload: &mut wl::Workload, service: &str, port: u32, target: u32) {
    let ports = vec![wl::Port {
        service_port: port,
        target_port: target,
    }];
    workload
        .services
        .insert(service.to_owned(), wl::PortList { ports });
}

pub fn service(namespace: &str, name: &str, vip: IpAddr, port: u32) -> wl::Service {
    let IpAddr::V4(vip) = vip else { unreachable!() };
    wl::Service {
        name: name.into(),
        namespace: namespace.into(),
        hostname: format!("{name}.{namespace}.svc.cluster.local"),
        addresses: vec![wl::NetworkAddress {
            network: String::new(),
            address: vip.octets().to_vec(),
        }],
        ports: vec![wl::Port {
            service_port: port,
            target_port: 0,
        }],
        ..wl::Service::default()
    }
}

/// A namespace-wide policy with one match.
pub fn policy(
    namespace: &str,
    name: &str,
    action: sec::Action,
    m: sec::Match,
) -> sec::Authorization {
    sec::Authorization {
        name: name.into(),
        namespace: namespace.into(),
        scope: sec::Scope::Namespace as i32,
        action: action as i32,
        groups: vec![sec::Group {
            rules: vec![sec::Rules { matches: vec![m] }],
        }],
        dry_run: false,
    }
}

pub fn exact(value: &str) -> sec::StringMatch {
    sec::StringMatch {
        match_type: Some(sec::string_match::MatchType::Exact(value.into())),
    }
}

/// An app that echoes until the client half-closes, then half-closes.
pub async fn echo_app(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut reader, mut writer) = tcp.split();
                if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
                    let _ = writer.shutdown().await;
                }
            });
        }
    });
}

/// An app that answers every connection with `name` and closes.
pub async fn name_app(addr: SocketAddr, name: &'static str) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let _ = tcp.write_all(name.as_bytes()).await;
            let _ = tcp.shutdown().await;
        }
    });
}

/// SOCKS5 `CONNECT` through `proxy`; the reply code on refusal, after
/// checking that the proxy then closed the connection.
pub async fn socks_connect(proxy: SocketAddr, dst: SocketAddr) -> Result<TcpStream, u8> {
    socks_connect_with(proxy, dst, &[]).await
}

/// [`socks_connect`], sending `early` right behind the request, before the
/// reply, as a client that does not wait would.
pub async fn socks_connect_with(
    proxy: SocketAddr,
    dst: SocketAddr,
    early: &[u8],
) -> Result<TcpStream, u8> {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(&[5, 1, 0]).await.unwrap();
    let mut method = [0u8; 2];
    tcp.read_exact(&mut method).await.unwrap();
    assert_eq!(method, [5, 0]);
    let SocketAddr::V4(dst) = dst else {
        unreachable!()
    };
    let mut request = vec![5, 1, 0, 1];
    request.extend(dst.ip().octets());
    request.extend(dst.port().to_be_bytes());
    request.extend(early);
    tcp.write_all(&request).await.unwrap();
    let mut reply = [0u8; 10];
    tcp.read_exact(&mut reply).await.unwrap();
    if reply[1] == 0 {
        return Ok(tcp);
    }
    assert_closed(&mut tcp).await;
    Err(reply[1])
}

/// The peer closes: EOF or a reset, and nothing else, within a few seconds.
pub async fn assert_closed(tcp: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .expect("the connection should have been closed");
    if read.is_ok() {
        assert!(rest.is_empty(), "unexpected bytes before close: {rest:?}");
    }
}

/// Writes `payload`, half-closes, reads everything back.
pub async fn round_trip(mut tcp: TcpStream, payload: &[u8]) -> Vec<u8> {
    let (mut reader, mut writer) = tcp.split();
    let write = async {
        writer.write_all(payload).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let mut received = Vec::new();
    let read = reader.read_to_end(&mut received);
    let (_, read) = tokio::join!(write, read);
    read.unwrap();
    received
}

// === the access log ===

/// One access-log event: field name to its recorded value.
pub type AccessEvent = BTreeMap<String, String>;

static ACCESS_LOG: Mutex<Vec<AccessEvent>> = Mutex::new(Vec::new());

struct CaptureAccess;

impl<S: tracing::Subscriber> Layer<S> for CaptureAccess {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "access" {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        ACCESS_LOG.lock().unwrap().push(fields.0);
    }
}

#[derive(Default)]
struct Fields(AccessEvent);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// Installs the capturing subscriber once per test binary (plus readable
/// logs with `RUST_LOG`).
pub fn capture_access_log() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let fmt = tracing_subscriber::fmt::layer()
            .with_test_writer()
            .with_filter(EnvFilter::from_default_env());
        let subscriber = tracing_subscriber::registry().with(CaptureAccess).with(fmt);
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
}

/// Access-log events so far that `matches`.
pub fn access_events(matches: impl Fn(&AccessEvent) -> bool) -> Vec<AccessEvent> {
    ACCESS_LOG
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches(e))
        .cloned()
        .collect()
}

/// Waits up to five seconds for `count` events that match (the proxy logs
/// when a connection ends, which may trail the client's view of the end).
pub async fn wait_for_events(
    count: usize,
    matches: impl Fn(&AccessEvent) -> bool,
) -> Vec<AccessEvent> {
    for _ in 0..100 {
        let events = access_events(&matches);
        if events.len() >= count {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = access_events(&matches);
    assert!(
        events.len() >= count,
        "expected {count} access events, got {events:#?}"
    );
    events
}

/// An event field, or "" when absent.
pub fn field<'a>(event: &'a AccessEvent, name: &str) -> &'a str {
    event.get(name).map_or("", String::as_str)
}

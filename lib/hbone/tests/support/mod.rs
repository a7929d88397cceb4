//! A small HBONE world for tests: one CA, servers on loopback with chosen
//! handlers, and a pool to dial them.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hbone::{ConnectHandler, ConnectRequest, InboundConnect, Rejection, Server, ServerConfig};
use http::HeaderMap;
use identity::ca::Ca;
use identity::{Identity, WorkloadCert};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub const TTL: Duration = Duration::from_secs(3600);

pub fn ca() -> Ca {
    Ca::self_signed("cluster.local", 24 * TTL).unwrap()
}

pub fn cert(ca: &Ca, namespace: &str, sa: &str) -> Arc<WorkloadCert> {
    let id = Identity::new("cluster.local", namespace, sa).unwrap();
    Arc::new(ca.issue(&id, TTL).unwrap())
}

/// A running HBONE server; dropping it does not stop it (tests are short).
pub struct TestServer {
    pub addr: SocketAddr,
    pub identity: Identity,
    pub drain: watch::Sender<bool>,
}

pub async fn serve<H: ConnectHandler>(cert: &WorkloadCert, handler: H) -> TestServer {
    let tls = Arc::new(identity::tls::server_config(cert).unwrap());
    let server = Server::new(tls, Arc::new(handler), ServerConfig::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (drain, drain_rx) = watch::channel(false);
    tokio::spawn(async move { server.serve(listener, drain_rx).await });
    TestServer {
        addr,
        identity: cert.identity.clone(),
        drain,
    }
}

pub fn request(source: &Arc<WorkloadCert>, server: &TestServer) -> ConnectRequest {
    request_to(source, server.addr, vec![server.identity.clone()])
}

/// A `CONNECT` for `10.0.0.7:8080` through the HBONE endpoint at `addr`,
/// which must prove one of `expected`; no extra headers, no early data.
pub fn request_to(
    source: &Arc<WorkloadCert>,
    addr: SocketAddr,
    expected: Vec<Identity>,
) -> ConnectRequest {
    ConnectRequest {
        source: source.clone(),
        destination: addr,
        expected_identities: expected,
        authority: "10.0.0.7:8080".into(),
        headers: HeaderMap::new(),
        early_data: bytes::Bytes::new(),
    }
}

/// Accepts every CONNECT and echoes bytes back until the client half-closes,
/// then half-closes too.
pub struct Echo;

impl ConnectHandler for Echo {
    async fn handle(&self, request: InboundConnect) {
        let Ok(tunnel) = request.accept() else { return };
        let (mut reader, mut writer) = tokio::io::split(tunnel);
        if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
            let _ = writer.shutdown().await;
        }
    }
}

/// Refuses every CONNECT the given way.
pub struct Refuse(pub Rejection);

impl ConnectHandler for Refuse {
    async fn handle(&self, request: InboundConnect) {
        request.reject(self.0);
    }
}

/// Forgets to answer: the library must answer 503 for it.
pub struct Forget;

impl ConnectHandler for Forget {
    async fn handle(&self, request: InboundConnect) {
        drop(request);
    }
}

/// What a handler saw of a request, for assertions.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer_identity: Identity,
    pub authority: String,
    pub headers: HeaderMap,
}

/// Records each request, then echoes.
#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Seen>>>);

impl ConnectHandler for Recorder {
    async fn handle(&self, request: InboundConnect) {
        self.0.lock().unwrap().push(Seen {
            peer_identity: request.peer_identity.clone(),
            authority: request.authority.clone(),
            headers: request.headers.clone(),
        });
        Echo.handle(request).await;
    }
}

//! Shared by `tests/push.rs` and `tests/server.rs` (included with
//! `#[path]`): a real istiod-lite server on 127.0.0.1:0, a TLS channel that
//! trusts only the mesh root and checks the DNS name
//! `istiod.istio-system.svc`, a raw delta ADS stream, and a bare HTTP GET.
//! Compiled on its own too, as an empty test binary.

// Helpers panic on failure: a panic is the report a test wants.
#![allow(
    dead_code,
    unreachable_pub,
    missing_debug_implementations,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use istiod_lite::ca::CaConfig;
use istiod_lite::model::{KubeObject, parse_documents};
use istiod_lite::pipeline::{PipelineConfig, PipelineHandle};
use istiod_lite::server::{Server, ServerConfig};
use istiod_lite::sources::{Change, SourceEvent};
use proto::core::Node;
use proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// The DNS name clients verify, as ztunnel does by default.
pub const ISTIOD_NAME: &str = "istiod.istio-system.svc";
/// The node whose token test clients present on discovery streams.
pub const TEST_CLIENT_NODE: &str = "test-client";

/// A running server with its state directory and event channel.
pub struct Running {
    pub state: TempDir,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub events: mpsc::Sender<SourceEvent>,
    pub pipeline: PipelineHandle,
    pub ads: xds::DeltaAdsServer,
    pub token_dir: std::path::PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), istiod_lite::server::ServerError>>>,
}

impl Running {
    /// Starts a server with `debounce` / `max_debounce`.
    pub async fn start(debounce: Duration, max_debounce: Duration) -> Running {
        let state = TempDir::new().unwrap();
        let config = ServerConfig {
            state_dir: state.path().to_owned(),
            plugin_ca_dir: None,
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            pipeline: PipelineConfig {
                debounce,
                max_debounce,
                ..PipelineConfig::default()
            },
            ca: CaConfig::default(),
            auth: istiod_lite::server::CaAuth::NodeTokens,
        };
        // The token test clients present on discovery streams: a node
        // provisioned before any pod runs there.
        istiod_lite::ca::NodeTokens::open(state.path(), [TEST_CLIENT_NODE]).unwrap();
        let server = Server::bind(config).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let mut running = Running {
            grpc: server.grpc_addr().unwrap(),
            http: server.http_addr().unwrap(),
            events: server.source_events(),
            pipeline: server.pipeline(),
            ads: server.ads().clone(),
            token_dir: server.token_path("x").parent().unwrap().to_owned(),
            state,
            stop: Some(stop),
            task: None,
        };
        running.task = Some(tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        })));
        running
    }

    /// Sends every object of `yaml` as one change set.
    pub async fn upsert(&self, yaml: &str) {
        let changes = objects(yaml).into_iter().map(Change::Upsert).collect();
        self.send(changes).await;
    }

    pub async fn send(&self, changes: Vec<Change>) {
        self.events
            .send(SourceEvent::Changes {
                origin: "test".into(),
                changes,
            })
            .await
            .unwrap();
    }

    pub async fn synced(&self) {
        self.events.send(SourceEvent::Synced).await.unwrap();
    }

    /// A TLS channel trusting only the mesh root written to the state dir.
    pub fn channel(&self) -> Channel {
        let root = std::fs::read(self.state.path().join("root-cert.pem")).unwrap();
        tls_channel(self.grpc, &root, ISTIOD_NAME)
    }

    /// The bearer token of discovery streams opened by tests.
    pub fn xds_token(&self) -> String {
        self.token(TEST_CLIENT_NODE)
    }

    pub fn token(&self, node: &str) -> String {
        let path = self.token_dir.join(format!("{node}.token"));
        std::fs::read_to_string(path).unwrap().trim().to_owned()
    }

    /// Stops the server and checks that it shut down cleanly.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(WAIT, self.task.take().unwrap())
            .await
            .expect("server did not stop in time")
            .unwrap();
        result.unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Parses inline YAML, panicking on any document that does not parse.
pub fn objects(yaml: &str) -> Vec<KubeObject> {
    parse_documents(yaml)
        .into_iter()
        .map(|o| o.unwrap())
        .collect()
}

/// A channel to `addr` over TLS 1.3 / h2 that trusts only the roots in
/// `root_pem` and checks the server's certificate for `name`.
pub fn tls_channel(addr: SocketAddr, root_pem: &[u8], name: &str) -> Channel {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(identity::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnector {
        addr,
        name: ServerName::try_from(name.to_owned()).unwrap(),
        config: Arc::new(config),
    };
    // The URI only names the authority; the connector decides where to go.
    Endpoint::from_shared(format!("http://{name}:15012"))
        .unwrap()
        .connect_with_connector_lazy(connector)
}

/// Connects TCP to a fixed address and runs the TLS handshake for a fixed
/// server name: what a proxy with `XDS_ADDRESS=https://istiod...` does.
#[derive(Clone)]
struct TlsConnector {
    addr: SocketAddr,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(this.name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A discovery stream driven by hand through the generated client.
pub struct RawStream {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

impl RawStream {
    /// Opens a stream presenting `token` as `authorization: Bearer`.
    pub async fn open(channel: Channel, token: &str) -> Result<RawStream, tonic::Status> {
        let (requests, rx) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let responses = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .delta_aggregated_resources(request)
            .await?
            .into_inner();
        Ok(RawStream {
            requests,
            responses,
        })
    }

    /// Wildcard subscription to `type_url`.
    pub async fn subscribe(&self, type_url: &str) {
        self.requests
            .send(DeltaDiscoveryRequest {
                node: Some(Node {
                    id: "ztunnel~10.0.0.1~node-a~istio-system.svc.cluster.local".into(),
                    ..Node::default()
                }),
                type_url: type_url.to_string(),
                ..DeltaDiscoveryRequest::default()
            })
            .await
            .unwrap();
    }

    /// Receives one response and ACKs it.
    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        let response = tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("no response in time")
            .unwrap()
            .expect("stream ended");
        self.requests
            .send(DeltaDiscoveryRequest {
                type_url: response.type_url.clone(),
                response_nonce: response.nonce.clone(),
                ..DeltaDiscoveryRequest::default()
            })
            .await
            .unwrap();
        response
    }

    /// A response if one arrives within `within`.
    pub async fn try_recv(&mut self, within: Duration) -> Option<DeltaDiscoveryResponse> {
        tokio::time::timeout(within, self.recv()).await.ok()
    }
}

/// `GET path` over plain HTTP/1.1; returns the status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: istiod\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// Polls `check` every 20 ms until it holds; fails the test after `WAIT`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached in {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! Shared test scaffolding: a real tonic server on loopback and a raw
//! generated client stream for protocol-level assertions.

// Each test binary uses a different part of this module; helpers panic on
// failure because a panic is the report a test wants.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prost_types::Any;
use proto::core::Node;
use proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint, Server};
use xds::server::ServerConfig;
use xds::{DeltaAdsServer, ResourceStore};

pub const TYPE_A: &str = "type.googleapis.com/test.A";
pub const TYPE_B: &str = "type.googleapis.com/test.B";

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be confident that nothing happens.
pub const QUIET: Duration = Duration::from_millis(300);

pub fn body(type_url: &str, content: &str) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: content.as_bytes().to_vec(),
    }
}

/// Upserts `(name, content)` pairs of `TYPE_A`.
pub fn put(store: &ResourceStore, items: &[(&str, &str)]) {
    let upserts = items
        .iter()
        .map(|(name, content)| (name.to_string(), body(TYPE_A, content)))
        .collect();
    store.apply(TYPE_A, upserts, vec![]).unwrap();
}

pub fn remove(store: &ResourceStore, names: &[&str]) {
    let removals = names.iter().map(|n| n.to_string()).collect();
    store.apply(TYPE_A, vec![], removals).unwrap();
}

pub fn node(id: &str) -> Node {
    Node {
        id: id.to_string(),
        ..Node::default()
    }
}

/// A running server on 127.0.0.1:0.
pub struct Harness {
    pub addr: SocketAddr,
    pub store: Arc<ResourceStore>,
    pub server: DeltaAdsServer,
    task: JoinHandle<()>,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(ServerConfig::default()).await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = Arc::new(ResourceStore::new());
        let server = DeltaAdsServer::with_config(store.clone(), config);
        let service = server.clone().into_service();
        let task = tokio::spawn(async move {
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Self {
            addr,
            store,
            server,
            task,
        }
    }

    pub fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect_lazy()
    }

    pub async fn raw(&self) -> RawStream {
        RawStream::open(self.channel()).await
    }

    /// Receives and ACKs one response, then waits until the server has
    /// counted the ACK, so that a following store change cannot overtake it
    /// (which would make the ACK stale).
    pub async fn recv_acked(&self, stream: &mut RawStream) -> DeltaDiscoveryResponse {
        let before = self.server.stats().snapshot().acks;
        let response = stream.recv_ack().await;
        self.stats_until(|s| s.acks > before).await;
        response
    }

    /// Polls the server's stats until `check` holds.
    pub async fn stats_until(
        &self,
        check: impl Fn(&xds::StatsSnapshot) -> bool,
    ) -> xds::StatsSnapshot {
        let stats = self.server.stats();
        eventually(|| check(&stats.snapshot())).await;
        stats.snapshot()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.disconnect_all();
        self.task.abort();
    }
}

/// Polls `check` every 10 ms until it holds; fails the test after `WAIT`.
pub async fn eventually(check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A discovery stream driven by hand through the generated client.
pub struct RawStream {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

impl RawStream {
    pub async fn open(channel: Channel) -> Self {
        let (requests, rx) = mpsc::channel(16);
        let responses = AggregatedDiscoveryServiceClient::new(channel)
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self {
            requests,
            responses,
        }
    }

    pub async fn send(&self, request: DeltaDiscoveryRequest) {
        self.requests.send(request).await.unwrap();
    }

    /// Subscribes to `type_url` (first request of the type on this stream).
    pub async fn subscribe(
        &self,
        type_url: &str,
        names: &[&str],
        initial: &BTreeMap<String, String>,
    ) {
        self.send(DeltaDiscoveryRequest {
            node: Some(node("test-node")),
            type_url: type_url.to_string(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            initial_resource_versions: initial.clone().into_iter().collect(),
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("no response in time")
            .unwrap()
            .expect("stream ended")
    }

    /// Receives the responses of one push: up to and including the first
    /// one that carries `system_version_info` (the last part).
    pub async fn recv_push(&mut self) -> Vec<DeltaDiscoveryResponse> {
        let mut parts = Vec::new();
        loop {
            let response = self.recv().await;
            let last = !response.system_version_info.is_empty();
            parts.push(response);
            if last {
                return parts;
            }
        }
    }

    /// Receives and ACKs one response.
    pub async fn recv_ack(&mut self) -> DeltaDiscoveryResponse {
        let response = self.recv().await;
        self.ack(&response).await;
        response
    }

    pub async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    }

    pub async fn nack(&self, response: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(proto::rpc::Status {
                code: 3,
                message: message.to_string(),
                details: vec![],
            }),
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    }

    /// Fails if anything arrives within `QUIET`.
    pub async fn expect_silence(&mut self) {
        if let Ok(message) = tokio::time::timeout(QUIET, self.responses.message()).await {
            panic!("expected no response, got {message:?}");
        }
    }

    /// Next message, which must be the end of the stream or an error.
    pub async fn end(&mut self) -> Result<Option<DeltaDiscoveryResponse>, tonic::Status> {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("stream did not end in time")
    }
}

/// name -> version of a response's resources.
pub fn versions(response: &DeltaDiscoveryResponse) -> BTreeMap<String, String> {
    response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

/// Encoded size of a response's resources and removed names, as the
/// server's budget counts them.
pub fn budgeted_bytes(response: &DeltaDiscoveryResponse) -> usize {
    use prost::Message;
    DeltaDiscoveryResponse {
        resources: response.resources.clone(),
        removed_resources: response.removed_resources.clone(),
        ..DeltaDiscoveryResponse::default()
    }
    .encoded_len()
}

pub fn names(response: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut names: Vec<String> = response.resources.iter().map(|r| r.name.clone()).collect();
    names.sort();
    names
}

pub fn removed(response: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut names = response.removed_resources.clone();
    names.sort();
    names
}

/// The store's versions of `type_url`, as a map.
pub fn store_versions(store: &ResourceStore, type_url: &str) -> BTreeMap<String, String> {
    store.versions(type_url).into_iter().collect()
}

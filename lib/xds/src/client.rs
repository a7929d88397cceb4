//! The delta ADS client: one long-lived stream to the control plane, wildcard
//! subscriptions to a list of type URLs, each response handed to a
//! [`ResourceHandler`] and then ACKed or NACKed.
//!
//! # The idea
//!
//! The client owns no configuration of its own: it only tracks which version
//! of which resource the handler accepted, so that after a reconnect it can
//! tell the server (`initial_resource_versions`) and receive only what
//! changed. The handler is expected to swap an immutable snapshot that the
//! data path reads; the client never makes the data path wait, and while the
//! control plane is away the handler's last good state simply stays.
//!
//! # Per-stream sequence
//!
//! ```text
//!  connect (authorization: Bearer <token read now>, if configured)
//!          -> for each type: request {node (first only), type_url,
//!                                     subscribe: [] (wildcard),
//!                                     initial_resource_versions: what the handler holds}
//!  loop: response -> handler.apply(upserts, removals)
//!          Ok            -> ACK  {type_url, response_nonce}
//!          Err(rejected) -> NACK {type_url, response_nonce, error_detail}
//!                           (accepted resources are kept and recorded)
//!  stream error or end -> wait (exponential backoff with jitter) -> connect
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::core::Node;
use proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use proto::rpc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tracing::Instrument;

use crate::server::MAX_MESSAGE_SIZE;
use crate::token::{TokenError, TokenSource};

/// How many rejections a NACK's message spells out; the rest are counted.
const NACK_DETAIL_LIMIT: usize = 10;

/// Receives the resources of every response. Implementations convert the
/// generated types into their own and publish them; they must be quick and
/// must not block (the stream waits for them, the data path must not).
pub trait ResourceHandler: Send + Sync + 'static {
    /// Applies one response of `type_url`: `upserts` added or changed,
    /// `removals` gone (or, for names never received, known not to exist).
    /// Either may be empty. The first response of each type that carries a
    /// `system_version_info` (the last of a split push) marks it synced.
    ///
    /// Resources that fail conversion are skipped and returned, each with the
    /// reason; everything else must still be applied. The client then NACKs
    /// the response with those reasons and remembers that the handler still
    /// holds the previous version of each rejected resource.
    fn apply(
        &self,
        type_url: &str,
        upserts: Vec<Resource>,
        removals: Vec<String>,
    ) -> Result<(), Vec<Rejection>>;
}

/// A resource the handler could not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The resource's name.
    pub name: String,
    /// Why it was rejected; sent to the control plane in the NACK.
    pub reason: String,
}

/// Why one stream ended. The client logs it and reconnects.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No bearer token to open the stream with.
    #[error("cannot open the discovery stream: {0}")]
    Token(#[source] TokenError),
    /// The stream could not be opened.
    #[error(
        "opening the discovery stream failed: {0}: is the control plane address right and reachable?"
    )]
    Open(#[source] tonic::Status),
    /// The server or the network ended the stream with an error.
    #[error("discovery stream failed: {0}")]
    Stream(#[source] tonic::Status),
    /// The server ended the stream cleanly, e.g. when it restarts.
    #[error("the control plane closed the discovery stream; reconnecting")]
    ClosedByServer,
    /// Our half of the stream closed while the server was still sending.
    #[error("the request half of the discovery stream closed unexpectedly")]
    RequestsClosed,
}

/// What the client is doing, for readiness and status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientStatus {
    /// A stream is open.
    pub connected: bool,
    /// When `connected` last changed.
    pub since: SystemTime,
    /// Every type has had at least one response since the client started;
    /// stays true across disconnects, since the held config keeps serving.
    pub synced: bool,
    /// `system_version_info` of the latest response.
    pub server_version: String,
    /// Responses handled since the client started.
    pub responses: u64,
    /// NACKs sent since the client started.
    pub nacks: u64,
    /// Why the latest stream ended, if one did.
    pub last_error: Option<String>,
}

/// Settings of a [`DeltaClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent in the first request of every stream.
    pub node: Node,
    /// Type URLs to subscribe to, each with a wildcard subscription.
    pub type_urls: Vec<String>,
    /// First wait before reconnecting; doubles per failed attempt.
    pub initial_backoff: Duration,
    /// Longest wait before reconnecting.
    pub max_backoff: Duration,
    /// Largest response accepted, in bytes.
    pub max_message_size: usize,
    /// The bearer token sent when each stream opens, read afresh each time.
    pub token: TokenSource,
}

// === impl ClientConfig ===

impl ClientConfig {
    /// Defaults: backoff from 100 ms up to 15 s, 64 MiB messages, no token.
    pub fn new(node: Node, type_urls: Vec<String>) -> Self {
        Self {
            node,
            type_urls,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            max_message_size: MAX_MESSAGE_SIZE,
            token: TokenSource::None,
        }
    }
}

/// A delta ADS client. Build it, keep a [`DeltaClient::status`] receiver if
/// needed, and spawn [`DeltaClient::run`]; abort that task to stop.
#[derive(Debug)]
pub struct DeltaClient<H> {
    channel: Channel,
    config: ClientConfig,
    handler: Arc<H>,
    /// type URL -> name -> version the handler accepted.
    held: HashMap<String, HashMap<String, String>>,
    /// Types that have had a response, for `ClientStatus::synced`.
    synced: HashSet<String>,
    status: watch::Sender<ClientStatus>,
}

// === impl DeltaClient ===

impl<H: ResourceHandler> DeltaClient<H> {
    /// A client that will open its streams on `channel` (typically made with
    /// `Endpoint::connect_lazy`, so that connecting is retried here too).
    pub fn new(channel: Channel, config: ClientConfig, handler: Arc<H>) -> Self {
        let (status, _) = watch::channel(ClientStatus {
            connected: false,
            since: SystemTime::now(),
            synced: false,
            server_version: String::new(),
            responses: 0,
            nacks: 0,
            last_error: None,
        });
        Self {
            channel,
            config,
            handler,
            held: HashMap::new(),
            synced: HashSet::new(),
            status,
        }
    }

    /// Follows the client's connection and sync state.
    pub fn status(&self) -> watch::Receiver<ClientStatus> {
        self.status.subscribe()
    }

    /// Keeps a stream open for as long as the task runs, reconnecting with
    /// exponential backoff and jitter. Never returns.
    pub async fn run(mut self) {
        let mut backoff = self.config.initial_backoff;
        loop {
            let span = tracing::info_span!("xds_client", node.id = %self.config.node.id);
            let (progressed, err) = self.run_stream().instrument(span).await;
            if progressed {
                backoff = self.config.initial_backoff;
            }
            tracing::warn!(error = %err, retry_in = ?backoff, "discovery stream ended; keeping the last good config");
            self.status.send_modify(|s| {
                if s.connected {
                    s.since = SystemTime::now();
                }
                s.connected = false;
                s.last_error = Some(err.to_string());
            });
            tokio::time::sleep(with_jitter(backoff)).await;
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One stream, from open to end. Returns whether any response arrived
    /// (which resets the backoff) and why the stream ended.
    async fn run_stream(&mut self) -> (bool, ClientError) {
        let types = self.config.type_urls.clone();
        // Initial requests, then one ACK/NACK per response: the queue never
        // holds more than a few.
        let (requests, rx) = mpsc::channel(types.len() + 4);
        for (i, type_url) in types.iter().enumerate() {
            let request = DeltaDiscoveryRequest {
                node: (i == 0).then(|| self.config.node.clone()),
                type_url: type_url.clone(),
                initial_resource_versions: self
                    .held
                    .get(type_url)
                    .map(|held| held.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
                ..DeltaDiscoveryRequest::default()
            };
            if requests.try_send(request).is_err() {
                return (false, ClientError::RequestsClosed);
            }
        }

        let mut client = AggregatedDiscoveryServiceClient::new(self.channel.clone())
            .max_decoding_message_size(self.config.max_message_size)
            .max_encoding_message_size(self.config.max_message_size);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Err(error) = self.config.token.attach(request.metadata_mut()) {
            return (false, ClientError::Token(error));
        }
        let mut responses = match client.delta_aggregated_resources(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return (false, ClientError::Open(status)),
        };
        tracing::info!(types = ?types, "discovery stream open");
        self.status.send_modify(|s| {
            s.connected = true;
            s.since = SystemTime::now();
        });

        let mut progressed = false;
        loop {
            let response = match responses.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return (progressed, ClientError::ClosedByServer),
                Err(status) => return (progressed, ClientError::Stream(status)),
            };
            progressed = true;
            let reply = self.on_response(response);
            if requests.send(reply).await.is_err() {
                return (progressed, ClientError::RequestsClosed);
            }
        }
    }

    /// Hands one response to the handler and builds its ACK or NACK.
    fn on_response(&mut self, response: DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        let DeltaDiscoveryResponse {
            system_version_info,
            resources,
            type_url,
            nonce,
            removed_resources,
        } = response;
        tracing::debug!(
            %type_url,
            %nonce,
            version = %system_version_info,
            resources = resources.len(),
            removed = removed_resources.len(),
            "response"
        );

        let total = resources.len();
        let rejected: Vec<Rejection> = if self.config.type_urls.contains(&type_url) {
            let versions: Vec<(String, String)> = resources
                .iter()
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect();
            let rejected = self
                .handler
                .apply(&type_url, resources, removed_resources.clone())
                .err()
                .unwrap_or_default();
            let rejected_names: HashSet<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
            let held = self.held.entry(type_url.clone()).or_default();
            for (name, version) in versions {
                // A rejected resource keeps whatever version the handler
                // still holds, so a reconnect asks for the new one again.
                if !rejected_names.contains(name.as_str()) {
                    held.insert(name, version);
                }
            }
            for name in &removed_resources {
                held.remove(name);
            }
            // A server may split one push over several responses; only the
            // last carries system_version_info (istiod sets it on every
            // response, each being a whole push).
            if !system_version_info.is_empty() {
                self.synced.insert(type_url.clone());
            }
            rejected
        } else {
            vec![Rejection {
                name: String::new(),
                reason: format!("type {type_url} was not subscribed to on this stream"),
            }]
        };

        let synced = self
            .config
            .type_urls
            .iter()
            .all(|t| self.synced.contains(t));
        let nack = !rejected.is_empty();
        self.status.send_modify(|s| {
            s.responses += 1;
            s.nacks += u64::from(nack);
            s.synced |= synced;
            if !system_version_info.is_empty() {
                s.server_version = system_version_info;
            }
        });

        let error_detail = nack.then(|| {
            let message = nack_message(&rejected, total);
            tracing::warn!(%type_url, %nonce, rejected = rejected.len(), error = %message, "rejecting resources (NACK); the rest is applied");
            rpc::Status {
                code: tonic::Code::InvalidArgument as i32,
                message,
                details: Vec::new(),
            }
        });
        DeltaDiscoveryRequest {
            type_url,
            response_nonce: nonce,
            error_detail,
            ..DeltaDiscoveryRequest::default()
        }
    }
}

/// "rejected 2 of 10 resources: a: bad port; b: no address".
fn nack_message(rejected: &[Rejection], total: usize) -> String {
    let mut message = format!("rejected {} of {} resources: ", rejected.len(), total);
    for (i, r) in rejected.iter().take(NACK_DETAIL_LIMIT).enumerate() {
        if i > 0 {
            message.push_str("; ");
        }
        message.push_str(&r.name);
        message.push_str(": ");
        message.push_str(&r.reason);
    }
    if rejected.len() > NACK_DETAIL_LIMIT {
        message.push_str(&format!(
            "; and {} more",
            rejected.len() - NACK_DETAIL_LIMIT
        ));
    }
    message
}

/// Half the delay plus a random part of the other half, so that clients cut
/// off together (a control-plane restart) do not come back together.
fn with_jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_delay() {
        for _ in 0..100 {
            let d = with_jitter(Duration::from_millis(100));
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(100));
        }
    }

    /// Accepts everything.
    struct AcceptAll;

    impl ResourceHandler for AcceptAll {
        fn apply(&self, _: &str, _: Vec<Resource>, _: Vec<String>) -> Result<(), Vec<Rejection>> {
            Ok(())
        }
    }

    /// Polls `check` until it holds, for at most five seconds.
    async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..500 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what}: not reached in 5 s");
    }

    #[tokio::test]
    async fn every_stream_sends_the_token_read_when_it_opens() {
        use tokio_stream::wrappers::TcpListenerStream;
        use tonic::service::interceptor::InterceptedService;

        // A server that records the authorization of every stream.
        let ads = crate::DeltaAdsServer::new(Arc::new(crate::ResourceStore::new()));
        let seen: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
        let recorder = seen.clone();
        let service = InterceptedService::new(
            ads.clone().into_service(),
            move |request: tonic::Request<()>| {
                let token = request
                    .metadata()
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned());
                recorder.lock().unwrap().push(token);
                Ok(request)
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("istio-token");
        std::fs::write(&path, "first\n").unwrap();
        let node = Node {
            id: "test-node".to_owned(),
            ..Node::default()
        };
        let mut config = ClientConfig::new(node, vec!["type.googleapis.com/test.A".to_owned()]);
        config.token = TokenSource::file(&path);
        config.initial_backoff = Duration::from_millis(10);
        config.max_backoff = Duration::from_millis(20);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let client = DeltaClient::new(channel, config, Arc::new(AcceptAll));
        let status = client.status();
        let task = tokio::spawn(client.run());
        let tokens = || seen.lock().unwrap().clone();
        eventually("first stream", || !tokens().is_empty()).await;
        assert_eq!(tokens(), vec![Some("Bearer first".to_owned())]);

        // The token rotated: the next stream carries the new one.
        std::fs::write(&path, "second\n").unwrap();
        ads.disconnect_all();
        eventually("stream with the rotated token", || {
            tokens().contains(&Some("Bearer second".to_owned()))
        })
        .await;

        // No token: no stream is opened, and the status says which file.
        std::fs::remove_file(&path).unwrap();
        let streams = tokens().len();
        ads.disconnect_all();
        eventually("token error in the status", || {
            status
                .borrow()
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains(path.to_str().unwrap()) && e.contains("AUTH_TOKEN"))
        })
        .await;
        assert_eq!(tokens().len(), streams);
        task.abort();
    }

    #[test]
    fn nack_message_names_the_first_rejections() {
        let rejected: Vec<Rejection> = (0..12)
            .map(|i| Rejection {
                name: format!("r{i}"),
                reason: "bad".into(),
            })
            .collect();
        let message = nack_message(&rejected, 20);
        assert!(message.starts_with("rejected 12 of 20 resources: r0: bad; r1: bad"));
        assert!(message.ends_with("r9: bad; and 2 more"));
    }
}

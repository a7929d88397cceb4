//! The delta ADS server: `DeltaAggregatedResources` over a [`ResourceStore`].
//!
//! # The idea
//!
//! Each stream gets its own task (`Connection`) that owns all of the
//! stream's bookkeeping, so nothing is shared between clients but the store's
//! immutable snapshots and a few counters. The task waits on two things: the
//! client's next request and the store's next snapshot. It answers requests
//! and pushes changes; it never sends anything the client already has.
//!
//! # Per-stream, per-type state machine
//!
//! For every type URL the client has mentioned, the stream keeps a
//! subscription (wildcard and/or explicit names), what the client holds
//! (name -> version: its `initial_resource_versions`, then everything we
//! sent), the store revision it has seen, and the nonces of the latest push.
//!
//! ```text
//!  (unknown) --first request--> send initial push (always, even empty) --> streaming
//!  streaming:
//!    store change      -> push changed + removed names the client wants (fresh nonces)
//!    request, nonce of the latest push, no error_detail -> ACK recorded
//!    request, error_detail set                          -> NACK: logged, counted, no resend
//!    request, any other nonce                           -> stale: the ACK is ignored
//!    subscribe / unsubscribe                            -> update interest; push what became wanted
//! ```
//!
//! - **Wildcard**: the first request for a type subscribes to everything when
//!   it names nothing or names `*`; `*` can be subscribed and unsubscribed
//!   later like any name. Explicit names add to the wildcard.
//! - **Initial push**: everything wanted whose version differs from the
//!   client's `initial_resource_versions`, and `removed_resources` for names
//!   it holds that no longer exist, or explicitly subscribed names that do
//!   not exist (the delta protocol's "does not exist" signal).
//! - **Versions are recorded when sent**, not when ACKed: a NACKed version is
//!   therefore not sent again until its content changes (no resend loop). The
//!   client keeps its last good config; after a reconnect it reports what it
//!   really holds and gets the rejected version once more. This is also what
//!   lets a wildcard stream hold no map of its own (see `state`).
//! - **Stale nonces**: only the nonces of a type's latest push are current.
//!   A request carrying an older one is not taken as an ACK; its subscription
//!   changes still apply, since in delta they are state changes a client
//!   (Envoy merges them into ACKs) would not repeat. A NACK is counted even
//!   when stale: it reports a real rejection.
//! - `initial_resource_versions` counts only on a type's first request.
//!
//! # Large pushes are split
//!
//! One response carries at most [`ServerConfig::response_budget`] bytes of
//! resources and removed names (their encoded size), but always at least
//! one resource, so a resource over the budget goes out alone. A push over
//! the budget (typically a client's first push of a type) goes out as
//! several responses back to back, each with its own nonce;
//! `removed_resources` ride in the last one. Every part is ACKed or NACKed on its own, and all
//! of them are current until the type's next push. A NACK of one part is
//! about that part's resources only: versions were recorded when sent, so
//! the other parts stay accepted and nothing is resent until it changes.
//!
//! **The last response of a push carries `system_version_info`** (the store
//! revision the push brings the client to); the responses before it leave
//! it empty. A push that fits in one response is its own last response. A
//! client that needs to know when it holds a whole push, its initial state
//! in particular, waits for a non-empty `system_version_info`. Envoy and
//! Istio's ztunnel ignore the field, so to them the parts are ordinary
//! responses.
//!
//! Why: tonic's encode buffer grows to the largest message of a stream and
//! keeps that allocation for the stream's life (see `chunks`).
//!
//! # Layout
//!
//! - this module: the tonic service and its settings.
//! - `connection`: one stream's task: requests, snapshots, responses.
//! - `state`: what one stream knows about one type, and the diff against
//!   a snapshot.
//! - `chunks`: splitting a push into responses of bounded size.

mod chunks;
mod connection;
mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use self::connection::Connection;
use crate::stats::ServerStats;
use crate::store::ResourceStore;

/// Responses queued per stream before the stream's task waits for the client
/// to read. One: the task skips to the newest snapshot anyway, and every
/// queued response holds a copy of its resources, so with 100 clients each
/// more queued response added some 30 MB to the peak of the scale bench.
const RESPONSE_QUEUE: usize = 1;

/// Largest request or response message, in bytes. Responses stay near the
/// [`ServerConfig::response_budget`]; a single resource may be larger.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Default [`ServerConfig::response_budget`], some 750 workloads: 1 KiB
/// under 256 KiB, so that a whole response (type URL, nonce and gRPC
/// header included) stays within 256 KiB, where tonic's encode buffer,
/// which grows by doubling, stops.
pub const DEFAULT_RESPONSE_BUDGET: usize = 255 * 1024;

/// Settings of a [`DeltaAdsServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Bytes of resources and removed names (their encoded size) one
    /// response carries at most; a larger push is split into several
    /// responses. A resource larger than this still goes out, alone.
    pub response_budget: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            response_budget: DEFAULT_RESPONSE_BUDGET,
        }
    }
}

/// Why a stream was closed by the server. Sent to the client as its status.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The first request did not identify the client.
    #[error(
        "the first DeltaDiscoveryRequest of a stream must carry node.id: set the proxy's node id"
    )]
    MissingNode,
    /// A request did not say which type it is about.
    #[error(
        "DeltaDiscoveryRequest without type_url: every ADS request must name its resource type"
    )]
    MissingTypeUrl,
}

impl From<&StreamError> for Status {
    fn from(err: &StreamError) -> Self {
        Status::invalid_argument(err.to_string())
    }
}

/// The delta ADS service. Cheap to clone; every clone serves the same store
/// and counts into the same stats.
#[derive(Debug, Clone)]
pub struct DeltaAdsServer {
    shared: Arc<Shared>,
}

/// What every stream of a server shares.
#[derive(Debug)]
struct Shared {
    store: Arc<ResourceStore>,
    stats: Arc<ServerStats>,
    config: ServerConfig,
    /// Random per process, so nonces of a restarted server never match ones
    /// a reconnecting client remembers.
    nonce_prefix: u32,
    nonces: AtomicU64,
    /// Bumped by [`DeltaAdsServer::disconnect_all`]; every stream ends when it
    /// changes.
    disconnect: watch::Sender<u64>,
}

// === impl Shared ===

impl Shared {
    /// A nonce never used before by this process.
    fn next_nonce(&self) -> String {
        format!(
            "{:08x}-{}",
            self.nonce_prefix,
            self.nonces.fetch_add(1, Ordering::Relaxed)
        )
    }
}

// === impl DeltaAdsServer ===

impl DeltaAdsServer {
    /// A server for the resources in `store`, with default settings.
    pub fn new(store: Arc<ResourceStore>) -> Self {
        Self::with_config(store, ServerConfig::default())
    }

    /// A server for the resources in `store`.
    pub fn with_config(store: Arc<ResourceStore>, config: ServerConfig) -> Self {
        let (disconnect, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                store,
                stats: Arc::new(ServerStats::default()),
                config,
                nonce_prefix: fastrand::u32(..),
                nonces: AtomicU64::new(0),
                disconnect,
            }),
        }
    }

    /// The counters, shared with every stream.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// The store this server pushes from.
    pub fn store(&self) -> &Arc<ResourceStore> {
        &self.shared.store
    }

    /// The settings this server was made with.
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// The tonic service, ready for `Server::add_service`, with message
    /// limits large enough for a full mesh.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// Ends every open stream (clients reconnect). Discovery streams never end
    /// by themselves, so a graceful server shutdown needs this first; new
    /// streams are still accepted.
    pub fn disconnect_all(&self) {
        self.shared
            .disconnect
            .send_modify(|generation| *generation += 1);
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for DeltaAdsServer {
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr();
        let requests = request.into_inner();
        let (responses, rx) = mpsc::channel(RESPONSE_QUEUE);
        let span = tracing::info_span!(
            "xds",
            peer = peer.map(|p| p.to_string()),
            node.id = tracing::field::Empty
        );
        let connection = Connection::new(self.shared.clone(), peer, span.clone());
        tokio::spawn(connection.run(requests, responses).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

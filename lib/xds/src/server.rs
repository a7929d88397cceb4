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
//! subscription (wildcard and/or explicit names), `sent` (name -> version the
//! client has: its `initial_resource_versions`, then everything we sent), the
//! store revision it has seen, and the latest nonce sent.
//!
//! ```text
//!  (unknown) --first request--> send initial response (always, even empty) --> streaming
//!  streaming:
//!    store change      -> push changed + removed names the client wants (fresh nonce)
//!    request, nonce = latest, no error_detail -> ACK recorded
//!    request, error_detail set                -> NACK: logged, counted, no resend
//!    request, nonce != latest                 -> stale: the ACK is ignored
//!    subscribe / unsubscribe                  -> update interest; push what became wanted
//! ```
//!
//! - **Wildcard**: the first request for a type subscribes to everything when
//!   it names nothing or names `*`; `*` can be subscribed and unsubscribed
//!   later like any name. Explicit names add to the wildcard.
//! - **Initial response**: everything wanted whose version differs from the
//!   client's `initial_resource_versions`, and `removed_resources` for names
//!   it holds that no longer exist, or explicitly subscribed names that do
//!   not exist (the delta protocol's "does not exist" signal).
//! - **Versions are recorded when sent**, not when ACKed: a NACKed version is
//!   therefore not sent again until its content changes (no resend loop). The
//!   client keeps its last good config; after a reconnect it reports what it
//!   really holds and gets the rejected version once more.
//! - **Stale nonces**: only the most recent nonce of a type is current. A
//!   request carrying an older one is not taken as an ACK; its subscription
//!   changes still apply, since in delta they are state changes a client
//!   (Envoy merges them into ACKs) would not repeat. A NACK is counted even
//!   when stale: it reports a real rejection.
//! - `initial_resource_versions` counts only on a type's first request.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::stats::{ConnectedGuard, ServerStats};
use crate::store::{ChangedSince, ResourceStore, Snapshot, StoredResource};

/// Responses queued per stream before the stream's task waits for the client
/// to read. Small: the task skips to the newest snapshot anyway.
const RESPONSE_QUEUE: usize = 8;

/// Largest request or response message, in bytes. A first response for
/// 10,000 workloads is a few MiB, over gRPC's 4 MiB default.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The wildcard resource name.
const WILDCARD: &str = "*";

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

#[derive(Debug)]
struct Shared {
    store: Arc<ResourceStore>,
    stats: Arc<ServerStats>,
    /// Random per process, so nonces of a restarted server never match ones
    /// a reconnecting client remembers.
    nonce_prefix: u32,
    nonces: AtomicU64,
    /// Bumped by [`DeltaAdsServer::disconnect_all`]; every stream ends when it
    /// changes.
    disconnect: watch::Sender<u64>,
}

// === impl DeltaAdsServer ===

impl DeltaAdsServer {
    /// A server for the resources in `store`.
    pub fn new(store: Arc<ResourceStore>) -> Self {
        let (disconnect, _) = watch::channel(0);
        Self {
            shared: Arc::new(Shared {
                store,
                stats: Arc::new(ServerStats::default()),
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

/// Why a stream's task stopped.
enum Stop {
    /// The client went away, or we were asked to disconnect.
    Done,
    /// The client broke the protocol; tell it why.
    Invalid(StreamError),
}

/// One discovery stream: its client and per-type bookkeeping.
struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    span: tracing::Span,
    /// `node.id` of the first request; empty until it arrives.
    node_id: String,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    types: HashMap<Arc<str>, TypeState>,
}

/// What one stream knows about one type URL.
#[derive(Debug)]
struct TypeState {
    type_url: Arc<str>,
    wildcard: bool,
    names: HashSet<Arc<str>>,
    /// name -> version the client has or has been sent.
    sent: HashMap<Arc<str>, Arc<str>>,
    /// Store revision this type has been brought up to.
    revision: u64,
    /// Nonce of the latest response of this type.
    latest_nonce: String,
}

/// A response being assembled.
#[derive(Default)]
struct Delta {
    upserts: Vec<Arc<StoredResource>>,
    removals: Vec<Arc<str>>,
}

// === impl Delta ===

impl Delta {
    fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

// === impl TypeState ===

impl TypeState {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Compares the named resources against what the client has.
    fn diff_names<'a>(
        &mut self,
        snapshot: &Snapshot,
        names: impl IntoIterator<Item = &'a Arc<str>>,
        delta: &mut Delta,
    ) {
        let resources = snapshot.resources(&self.type_url);
        for name in names {
            if !self.wants(name) {
                continue;
            }
            let current = resources.and_then(|m| m.get(name));
            match (current, self.sent.get(name)) {
                (Some(current), Some(sent)) if *sent == current.version => {}
                (Some(current), _) => {
                    self.sent
                        .insert(current.name.clone(), current.version.clone());
                    delta.upserts.push(current.clone());
                }
                (None, Some(_)) => {
                    self.sent.remove(name);
                    delta.removals.push(name.clone());
                }
                (None, None) => {}
            }
        }
    }

    /// Compares everything wanted against what the client has.
    fn diff_all(&mut self, snapshot: &Snapshot, delta: &mut Delta) {
        let resources = snapshot.resources(&self.type_url);
        let gone: Vec<Arc<str>> = self
            .sent
            .keys()
            .filter(|name| !resources.is_some_and(|m| m.contains_key(*name)))
            .cloned()
            .collect();
        for name in gone {
            self.sent.remove(&name);
            delta.removals.push(name);
        }
        if let Some(resources) = resources {
            for (name, current) in resources {
                if self.wants(name) && self.sent.get(name).is_none_or(|v| *v != current.version) {
                    self.sent.insert(name.clone(), current.version.clone());
                    delta.upserts.push(current.clone());
                }
            }
        }
    }

    /// Brings this type up to `snapshot`, plus `extra` names (newly
    /// subscribed) whatever their revision.
    fn catch_up(&mut self, snapshot: &Snapshot, extra: &[Arc<str>], delta: &mut Delta) {
        match snapshot.changed_since(&self.type_url, self.revision) {
            ChangedSince::Names(names) => {
                self.diff_names(snapshot, names.iter().chain(extra), delta)
            }
            ChangedSince::TooOld => self.diff_all(snapshot, delta),
        }
        self.revision = snapshot.revision;
    }

    /// Explicitly subscribed names that do not exist and that the client has
    /// not been told about: the delta protocol says so with `removed_resources`.
    fn absent<'a>(
        &self,
        snapshot: &Snapshot,
        names: impl IntoIterator<Item = &'a Arc<str>>,
        delta: &mut Delta,
    ) {
        let resources = snapshot.resources(&self.type_url);
        for name in names {
            let exists = resources.is_some_and(|m| m.contains_key(name));
            if !exists && !self.sent.contains_key(name) && !delta.removals.contains(name) {
                delta.removals.push(name.clone());
            }
        }
    }
}

// === impl Connection ===

impl Connection {
    fn new(shared: Arc<Shared>, peer: Option<SocketAddr>, span: tracing::Span) -> Self {
        let snapshots = shared.store.subscribe();
        Self {
            shared,
            peer,
            span,
            node_id: String::new(),
            snapshots,
            types: HashMap::new(),
        }
    }

    async fn run(
        mut self,
        mut requests: Streaming<DeltaDiscoveryRequest>,
        responses: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) {
        let stats = self.shared.stats.clone();
        ServerStats::add(&stats.connected, 1);
        ServerStats::add(&stats.streams, 1);
        let _connected = ConnectedGuard(stats);
        tracing::debug!(peer = ?self.peer, "discovery stream opened");

        match self.serve(&mut requests, &responses).await {
            Stop::Done => tracing::debug!("discovery stream closed"),
            Stop::Invalid(err) => {
                tracing::warn!(error = %err, "closing discovery stream: client broke the protocol");
                // The client may be gone already; nothing more to do then.
                let _ = responses.send(Err(Status::from(&err))).await;
            }
        }
    }

    async fn serve(
        &mut self,
        requests: &mut Streaming<DeltaDiscoveryRequest>,
        responses: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> Stop {
        let mut disconnect = self.shared.disconnect.subscribe();
        loop {
            tokio::select! {
                // Requests first: a subscription change should be answered
                // before pushing under the old interest.
                biased;
                _ = disconnect.changed() => return Stop::Done,
                _ = responses.closed() => return Stop::Done,
                request = requests.message() => match request {
                    Ok(Some(request)) => {
                        if let Err(stop) = self.on_request(request, responses).await {
                            return stop;
                        }
                    }
                    Ok(None) => return Stop::Done,
                    Err(status) => {
                        tracing::debug!(error = %status, "discovery stream failed");
                        return Stop::Done;
                    }
                },
                changed = self.snapshots.changed() => {
                    if changed.is_err() {
                        // The store is gone: the control plane is stopping.
                        return Stop::Done;
                    }
                    let snapshot = self.snapshots.borrow_and_update().clone();
                    if let Err(stop) = self.on_snapshot(&snapshot, responses).await {
                        return stop;
                    }
                }
            }
        }
    }

    /// Pushes to every type what changed up to `snapshot`.
    async fn on_snapshot(
        &mut self,
        snapshot: &Snapshot,
        responses: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> Result<(), Stop> {
        let mut pending = Vec::new();
        for state in self.types.values_mut() {
            let mut delta = Delta::default();
            state.catch_up(snapshot, &[], &mut delta);
            if !delta.is_empty() {
                pending.push((state.type_url.clone(), delta));
            }
        }
        for (type_url, delta) in pending {
            self.send(&type_url, snapshot, delta, responses).await?;
            self.shared
                .stats
                .observe_push_latency(snapshot.published.elapsed());
        }
        Ok(())
    }

    async fn on_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        responses: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> Result<(), Stop> {
        if self.node_id.is_empty() {
            match request.node.as_ref().map(|n| n.id.as_str()) {
                Some(id) if !id.is_empty() => {
                    self.node_id = id.to_string();
                    self.span.record("node.id", id);
                    tracing::info!(node.id = id, "client connected");
                }
                _ => return Err(Stop::Invalid(StreamError::MissingNode)),
            }
        }
        if request.type_url.is_empty() {
            return Err(Stop::Invalid(StreamError::MissingTypeUrl));
        }
        // Look at the newest snapshot without marking it seen, so that the
        // other types still get pushed their part of it.
        let snapshot = self.snapshots.borrow().clone();
        let first = !self.types.contains_key(request.type_url.as_str());
        if first {
            self.subscribe_first(request, &snapshot, responses).await
        } else {
            self.on_later_request(request, &snapshot, responses).await
        }
    }

    /// The first request of a type: set up its state and always answer, so
    /// the client knows it is in sync even when there is nothing to send.
    async fn subscribe_first(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: &Snapshot,
        responses: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> Result<(), Stop> {
        let type_url: Arc<str> = Arc::from(request.type_url.as_str());
        if !request.response_nonce.is_empty() {
            // A nonce from an earlier stream (or server): nothing to ACK.
            ServerStats::add(&self.shared.stats.stale_nonces, 1);
            tracing::debug!(%type_url, nonce = request.response_nonce, "nonce from an earlier stream ignored");
        }
        let subscribe = &request.resource_names_subscribe;
        let mut state = TypeState {
            type_url: type_url.clone(),
            wildcard: subscribe.is_empty() || subscribe.iter().any(|n| n == WILDCARD),
            names: subscribe
                .iter()
                .filter(|n| *n != WILDCARD)
                .map(|n| Arc::from(n.as_str()))
                .collect(),
            sent: HashMap::new(),
            revision: snapshot.revision,
            latest_nonce: String::new(),
        };
        for name in &request.resource_names_unsubscribe {
            unsubscribe(&mut state, name);
        }
        state.sent = request
            .initial_resource_versions
            .into_iter()
            .filter(|(name, _)| state.wants(name))
            .map(|(name, version)| (Arc::from(name), Arc::from(version)))
            .collect();
        tracing::debug!(
            %type_url,
            wildcard = state.wildcard,
            names = state.names.len(),
            initial_versions = state.sent.len(),
            "subscribed"
        );

        let mut delta = Delta::default();
        state.diff_all(snapshot, &mut delta);
        let explicit: Vec<Arc<str>> = state.names.iter().cloned().collect();
        state.absent(snapshot, &explicit, &mut delta);
        self.types.insert(type_url.clone(), state);
        self.send(&type_url, snapshot, delta, responses).await
    }

    /// ACK, NACK and subscription changes for a type already set up.
    async fn on_later_request(
        &mut self,
        request: DeltaDiscoveryRequest,
        snapshot: &Snapshot,
        responses: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> Result<(), Stop> {
        let stats = &self.shared.stats;
        let Some(state) = self.types.get_mut(request.type_url.as_str()) else {
            return Ok(());
        };
        let type_url = state.type_url.clone();
        let nonce = request.response_nonce.as_str();
        let current = !nonce.is_empty() && nonce == state.latest_nonce;
        if let Some(error) = &request.error_detail {
            ServerStats::add(&stats.nacks, 1);
            tracing::warn!(
                node.id = %self.node_id,
                %type_url,
                nonce,
                stale = !current,
                error.code = error.code,
                error.message = %error.message,
                "client rejected a response (NACK); it keeps its last good config"
            );
        } else if current {
            ServerStats::add(&stats.acks, 1);
            tracing::trace!(%type_url, nonce, "ACK");
        } else if !nonce.is_empty() {
            ServerStats::add(&stats.stale_nonces, 1);
            tracing::debug!(%type_url, nonce, latest = %state.latest_nonce, "stale nonce ignored");
        }

        for name in &request.resource_names_unsubscribe {
            unsubscribe(state, name);
        }
        let mut became_wildcard = false;
        let mut added: Vec<Arc<str>> = Vec::new();
        for name in &request.resource_names_subscribe {
            if name == WILDCARD {
                became_wildcard |= !state.wildcard;
                state.wildcard = true;
            } else if state.names.insert(Arc::from(name.as_str())) {
                added.push(Arc::from(name.as_str()));
            }
        }
        if !became_wildcard && added.is_empty() {
            return Ok(());
        }
        tracing::debug!(%type_url, wildcard = state.wildcard, added = added.len(), "subscription changed");

        let mut delta = Delta::default();
        if became_wildcard {
            state.diff_all(snapshot, &mut delta);
            state.revision = snapshot.revision;
        } else {
            state.catch_up(snapshot, &added, &mut delta);
        }
        state.absent(snapshot, &added, &mut delta);
        if delta.is_empty() {
            return Ok(());
        }
        self.send(&type_url, snapshot, delta, responses).await
    }

    /// Sends one response with a fresh nonce and records the nonce as the
    /// type's latest. Empty deltas are sent too: callers decide.
    async fn send(
        &mut self,
        type_url: &Arc<str>,
        snapshot: &Snapshot,
        delta: Delta,
        responses: &mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    ) -> Result<(), Stop> {
        let shared = &self.shared;
        let nonce = format!(
            "{:08x}-{}",
            shared.nonce_prefix,
            shared.nonces.fetch_add(1, Ordering::Relaxed)
        );
        if let Some(state) = self.types.get_mut(type_url) {
            state.latest_nonce.clone_from(&nonce);
        }
        let stats = &shared.stats;
        ServerStats::add(&stats.pushes, 1);
        ServerStats::add(&stats.resources_pushed, delta.upserts.len() as u64);
        ServerStats::add(&stats.removals_pushed, delta.removals.len() as u64);
        tracing::debug!(
            %type_url,
            nonce,
            revision = snapshot.revision,
            resources = delta.upserts.len(),
            removed = delta.removals.len(),
            "push"
        );
        let response = DeltaDiscoveryResponse {
            system_version_info: snapshot.revision.to_string(),
            resources: delta.upserts.iter().map(|r| to_wire(r)).collect(),
            type_url: type_url.to_string(),
            nonce,
            removed_resources: delta.removals.iter().map(|n| n.to_string()).collect(),
        };
        responses.send(Ok(response)).await.map_err(|_| Stop::Done)
    }
}

/// Stops watching `name` (or the wildcard). What is no longer wanted is
/// forgotten, so a later subscribe sends it again.
fn unsubscribe(state: &mut TypeState, name: &str) {
    if name == WILDCARD {
        state.wildcard = false;
    } else {
        state.names.remove(name);
    }
    if !state.wildcard {
        let names = &state.names;
        state.sent.retain(|n, _| names.contains(n));
    }
}

fn to_wire(resource: &StoredResource) -> Resource {
    Resource {
        version: resource.version.to_string(),
        resource: Some(resource.body.clone()),
        name: resource.name.to_string(),
        aliases: Vec::new(),
        ttl: None,
    }
}

//! One discovery stream's task: it reads the client's requests and the
//! store's snapshots, keeps a [`TypeState`] per type URL, and sends what the
//! diffs produce, split into responses of bounded size.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::chunks;
use super::state::{Delta, TypeState};
use super::{Shared, StreamError};
use crate::stats::{ConnectedGuard, ServerStats};
use crate::store::Snapshot;

type Responses = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// Why a stream's task stopped.
enum Stop {
    /// The client went away, or we were asked to disconnect.
    Done,
    /// The client broke the protocol; tell it why.
    Invalid(StreamError),
}

/// One discovery stream: its client and per-type bookkeeping.
pub(super) struct Connection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    span: tracing::Span,
    /// `node.id` of the first request; empty until it arrives.
    node_id: String,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    types: HashMap<Arc<str>, TypeState>,
}

// === impl Connection ===

impl Connection {
    pub(super) fn new(shared: Arc<Shared>, peer: Option<SocketAddr>, span: tracing::Span) -> Self {
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

    pub(super) async fn run(
        mut self,
        mut requests: Streaming<DeltaDiscoveryRequest>,
        responses: Responses,
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
        responses: &Responses,
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
        responses: &Responses,
    ) -> Result<(), Stop> {
        let mut pending = Vec::new();
        for state in self.types.values_mut() {
            let delta = state.catch_up(snapshot, &[]);
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
        responses: &Responses,
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
        responses: &Responses,
    ) -> Result<(), Stop> {
        let type_url: Arc<str> = Arc::from(request.type_url.as_str());
        if !request.response_nonce.is_empty() {
            // A nonce from an earlier stream (or server): nothing to ACK.
            ServerStats::add(&self.shared.stats.stale_nonces, 1);
            tracing::debug!(%type_url, nonce = request.response_nonce, "nonce from an earlier stream ignored");
        }
        let mut state = TypeState::first(
            type_url.clone(),
            &request.resource_names_subscribe,
            &request.resource_names_unsubscribe,
            request.initial_resource_versions,
            snapshot,
        );
        tracing::debug!(
            %type_url,
            wildcard = state.wildcard,
            names = state.names.len(),
            initial_versions = state.held_len(),
            "subscribed"
        );

        let mut delta = state.diff_all(snapshot);
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
        responses: &Responses,
    ) -> Result<(), Stop> {
        let stats = &self.shared.stats;
        let Some(state) = self.types.get_mut(request.type_url.as_str()) else {
            return Ok(());
        };
        let type_url = state.type_url.clone();
        let nonce = request.response_nonce.as_str();
        let current = !nonce.is_empty() && state.nonces.iter().any(|n| n == nonce);
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
            tracing::debug!(%type_url, nonce, latest = ?state.nonces.last(), "stale nonce ignored");
        }

        for name in &request.resource_names_unsubscribe {
            state.unsubscribe(name);
        }
        let (became_wildcard, added) = state.subscribe(&request.resource_names_subscribe);
        if !became_wildcard && added.is_empty() {
            return Ok(());
        }
        tracing::debug!(%type_url, wildcard = state.wildcard, added = added.len(), "subscription changed");

        let mut delta = if became_wildcard {
            state.diff_all(snapshot)
        } else {
            state.catch_up(snapshot, &added)
        };
        state.absent(snapshot, &added, &mut delta);
        if delta.is_empty() {
            return Ok(());
        }
        self.send(&type_url, snapshot, delta, responses).await
    }

    /// Sends one push: responses of at most the budget each, back to back,
    /// each with a fresh nonce; the last carries the removals and
    /// `system_version_info`. The nonces become the type's current ones.
    /// Empty deltas are sent too (one response): callers decide.
    async fn send(
        &mut self,
        type_url: &Arc<str>,
        snapshot: &Snapshot,
        delta: Delta,
        responses: &Responses,
    ) -> Result<(), Stop> {
        let shared = &self.shared;
        let Some(state) = self.types.get_mut(type_url) else {
            return Ok(());
        };
        let removal_bytes = chunks::removals_len(&delta.removals);
        let parts = chunks::split(&delta.upserts, removal_bytes, shared.config.response_budget);
        state.nonces.clear();
        for (index, range) in parts.iter().enumerate() {
            let last = index + 1 == parts.len();
            // Build a response only once there is room for it, so that a
            // slow client makes us hold one more response, not a whole push.
            let permit = responses.reserve().await.map_err(|_| Stop::Done)?;
            let nonce = shared.next_nonce();
            state.nonces.push(nonce.clone());
            let removals: &[Arc<str>] = if last { &delta.removals } else { &[] };
            let resources = &delta.upserts[range.clone()];
            let stats = &shared.stats;
            ServerStats::add(&stats.pushes, 1);
            ServerStats::add(&stats.resources_pushed, resources.len() as u64);
            ServerStats::add(&stats.removals_pushed, removals.len() as u64);
            tracing::debug!(
                %type_url,
                nonce,
                revision = snapshot.revision,
                part = index + 1,
                parts = parts.len(),
                resources = resources.len(),
                removed = removals.len(),
                "push"
            );
            permit.send(Ok(DeltaDiscoveryResponse {
                system_version_info: if last {
                    snapshot.revision.to_string()
                } else {
                    String::new()
                },
                resources: resources.iter().map(|r| chunks::to_wire(r)).collect(),
                type_url: type_url.to_string(),
                nonce,
                removed_resources: removals.iter().map(|n| n.to_string()).collect(),
            }));
        }
        Ok(())
    }
}

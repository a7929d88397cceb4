//! Discovery streams authenticate, then wait until the first full config
//! is pushed.
//!
//! Authentication is the CA's (a node's bootstrap token, or a reviewed
//! service-account token): the pushed config names every workload, address
//! and policy of the mesh, which is not for anyone who can reach 15012.
//! Any authenticated caller may subscribe, as with istiod. A caller that
//! fails is refused before it is held, with `UNAUTHENTICATED`, or
//! `UNAVAILABLE` when the check itself could not be made (retry).
//!
//! The delta protocol answers a new subscription at once with the server's
//! state, and tells a reconnecting client to remove whatever it holds that
//! the server lacks. Served from a store that the config source has not
//! filled yet, that would wipe the config of every proxy reconnecting to a
//! restarted control plane. So a stream is held (no response headers yet)
//! until the pipeline is ready, then handed to the real server; a proxy
//! keeps serving its last good config meanwhile. Shutdown releases held
//! streams with `UNAVAILABLE`, so that draining does not wait on them.

use std::sync::Arc;

use proto::discovery::DeltaDiscoveryRequest;
use proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};
use xds::DeltaAdsServer;
use xds::server::MAX_MESSAGE_SIZE;

use crate::ca::Authenticator;
use crate::pipeline::PipelineStatus;

/// [`DeltaAdsServer`] behind a readiness gate.
#[derive(Debug, Clone)]
pub(super) struct GatedAds<A> {
    pub(super) inner: DeltaAdsServer,
    pub(super) auth: A,
    pub(super) status: watch::Receiver<Arc<PipelineStatus>>,
    pub(super) stop: watch::Receiver<bool>,
}

// === impl GatedAds ===

impl<A: Authenticator + Clone> GatedAds<A> {
    /// The tonic service, with the same message limits as the inner server's.
    pub(super) fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }
}

#[tonic::async_trait]
impl<A: Authenticator + Clone> AggregatedDiscoveryService for GatedAds<A> {
    type DeltaAggregatedResourcesStream =
        <DeltaAdsServer as AggregatedDiscoveryService>::DeltaAggregatedResourcesStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let peer = request.remote_addr();
        let caller = match self.auth.authenticate(request.metadata()).await {
            Ok(caller) => caller,
            Err(error) => {
                warn!(?peer, %error, "discovery stream refused: not authenticated");
                let message = format!("discovery requires authentication: {error}");
                return Err(if error.is_retryable() {
                    Status::unavailable(message)
                } else {
                    Status::unauthenticated(message)
                });
            }
        };
        let mut status = self.status.clone();
        let mut stop = self.stop.clone();
        let ready = async {
            // Borrow guards are dropped inside; only the bool crosses awaits.
            status
                .wait_for(|status| status.synced && status.pushed)
                .await
                .is_ok()
        };
        let stopping = async { stop.wait_for(|stop| *stop).await.is_ok() };
        let ready = tokio::select! {
            ready = ready => ready,
            _ = stopping => false,
        };
        if !ready {
            return Err(Status::unavailable(
                "istiod-lite is shutting down: reconnect to another instance",
            ));
        }
        debug!(?peer, %caller, "discovery stream admitted");
        self.inner.delta_aggregated_resources(request).await
    }
}

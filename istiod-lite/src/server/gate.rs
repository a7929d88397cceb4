//! Discovery streams wait until the first full config is pushed.
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
use tracing::debug;
use xds::DeltaAdsServer;
use xds::server::MAX_MESSAGE_SIZE;

use crate::pipeline::PipelineStatus;

/// [`DeltaAdsServer`] behind a readiness gate.
#[derive(Debug, Clone)]
pub(super) struct GatedAds {
    pub(super) inner: DeltaAdsServer,
    pub(super) status: watch::Receiver<Arc<PipelineStatus>>,
    pub(super) stop: watch::Receiver<bool>,
}

// === impl GatedAds ===

impl GatedAds {
    /// The tonic service, with the same message limits as the inner server's.
    pub(super) fn into_service(self) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for GatedAds {
    type DeltaAggregatedResourcesStream =
        <DeltaAdsServer as AggregatedDiscoveryService>::DeltaAggregatedResourcesStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
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
        debug!(peer = ?request.remote_addr(), "discovery stream admitted");
        self.inner.delta_aggregated_resources(request).await
    }
}

//! TCP passthrough: a tunnel whose first bytes are not HTTP (or that
//! stays silent, see `inbound`) carries bytes both ways to one endpoint of
//! its service, as Envoy's TCP proxy does in Istio's waypoint.
//!
//! # Life of a passthrough
//!
//! 1. A connection of the service's count (`pool`), held for the whole
//!    passthrough, with the service's HTTP connections: at the
//!    `DestinationRule`'s `connectionPool.tcp.maxConnections` it is
//!    refused at once (`UO`), with no line to wait in, as Envoy's TCP
//!    proxy checks the cluster's circuit breaker before it picks a host.
//! 2. An endpoint, by Istio's default balancer over the healthy ones;
//!    none: `UH`.
//! 3. The upstream stream (HBONE to the endpoint's ztunnel, or TCP);
//!    failed: `UF`.
//! 4. Bytes both ways until both sides have closed, each close passed on
//!    as a half-close; or until the drain deadline cuts the tunnel.
//!
//! A refused passthrough is closed: its tunnel was answered 200 before
//! its first bytes were read, so closing is all that is left to say.
//!
//! Each passthrough ends with one access-log event and its TCP metrics
//! (`crate::metrics`), recorded when [`Passthrough`] is dropped, so
//! however it ends, cut by drain included: opened when the upstream
//! stream is up (or at the refusal, with its flag), closed and the bytes
//! at the end. The connection is let go first, so that whoever sees the
//! end sees its room too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tracing::{debug, field, info};
use workload::Workload;

use super::pool::TcpSlot;
use super::request::Downstream;
use super::sniff::Prefixed;
use super::upgrade::Counting;
use super::upstream::{Stream, UpstreamError};
use super::{CertRequest, Inner};
use crate::balance::Limits;
use crate::metrics::{Connection, ConnectionLabels, Metrics, ResponseFlag, TcpSample};

/// Why a passthrough got no upstream stream.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(
        "{service} has {open} connections open, its DestinationRule's \
         `connectionPool.tcp.maxConnections`: raise it if the service can take more"
    )]
    Overflow { service: Arc<str>, open: u32 },
    #[error("no healthy endpoint of {service} serves port {port}")]
    NoEndpoint { service: Arc<str>, port: u16 },
    #[error(transparent)]
    Upstream(UpstreamError),
}

// === impl Refused ===

impl Refused {
    /// Envoy's flag for it.
    fn response_flag(&self) -> ResponseFlag {
        match self {
            Refused::Overflow { .. } => ResponseFlag::UpstreamOverflow,
            Refused::NoEndpoint { .. } => ResponseFlag::NoHealthyUpstream,
            Refused::Upstream(error) => error.response_flag(),
        }
    }
}

/// What is known of one passthrough so far; its end (metrics, access
/// log) is recorded when it is dropped.
struct Passthrough<'a> {
    downstream: &'a Downstream,
    metrics: &'a Metrics,
    started: Instant,
    /// The service's connection it holds, once it got one.
    slot: Option<TcpSlot>,
    /// The endpoint chosen, once one was.
    destination: Option<Arc<Workload>>,
    dst_addr: Option<SocketAddr>,
    flag: ResponseFlag,
    /// Why it was refused or failed.
    reason: Option<String>,
    /// The labels it was counted opened with, once it was.
    opened: Option<ConnectionLabels>,
    /// From the client, and to it, counted by the client's stream.
    received: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

// === impl Inner ===

impl Inner {
    /// Not HTTP: bytes both ways to one endpoint of the service.
    pub(super) async fn pass_through(
        &self,
        stream: Prefixed<hbone::Tunnel>,
        downstream: &Downstream,
    ) {
        let mut passthrough = Passthrough::new(downstream, &self.metrics);
        let mut client = Counting {
            io: stream,
            read: passthrough.received.clone(),
            written: passthrough.sent.clone(),
        };
        match self.open_upstream(&mut passthrough).await {
            Ok(mut upstream) => {
                passthrough.count_opened();
                if let Err(error) = hbone::copy_bidirectional(&mut client, &mut upstream).await {
                    debug!(%error, "TCP passthrough failed");
                    passthrough.reason = Some(format!("the stream failed: {error}"));
                }
            }
            Err(refused) => {
                passthrough.flag = refused.response_flag();
                passthrough.reason = Some(refused.to_string());
                if let Err(error) = client.shutdown().await {
                    debug!(%error, "closing a refused TCP passthrough failed");
                }
            }
        }
    }

    /// Steps 1 to 3: a connection of the service's count, an endpoint
    /// and the stream to it.
    async fn open_upstream(
        &self,
        passthrough: &mut Passthrough<'_>,
    ) -> Result<Box<dyn Stream>, Refused> {
        let downstream = passthrough.downstream;
        let service = &downstream.service;
        let limits = self
            .config
            .snapshot()
            .backend_policy(&service.hostname)
            .map_or(Limits::default(), |policy| policy.limits);
        let slot = self
            .upstreams
            .open_tcp(&service.hostname, &limits)
            .map_err(|overflow| Refused::Overflow {
                service: service.hostname.clone(),
                open: overflow.open,
            })?;
        passthrough.slot = Some(slot);
        let state = self.mesh.snapshot();
        let endpoint = self
            .upstreams
            .choose_endpoint(state.endpoints(service), service, downstream.port, &[])
            .ok_or_else(|| Refused::NoEndpoint {
                service: service.hostname.clone(),
                port: downstream.port,
            })?;
        passthrough.destination = Some(endpoint.workload.clone());
        passthrough.dst_addr = Some(endpoint.addr);
        self.upstreams
            .connect(&endpoint, CertRequest::new(&*self.certs, &self.identity))
            .await
            .map_err(Refused::Upstream)
    }
}

// === impl Passthrough ===

impl<'a> Passthrough<'a> {
    fn new(downstream: &'a Downstream, metrics: &'a Metrics) -> Self {
        Passthrough {
            downstream,
            metrics,
            started: Instant::now(),
            slot: None,
            destination: None,
            dst_addr: None,
            flag: ResponseFlag::None,
            reason: None,
            opened: None,
            received: Arc::default(),
            sent: Arc::default(),
        }
    }

    fn labels(&self) -> ConnectionLabels {
        ConnectionLabels::new(&Connection {
            source: self.downstream.source.as_deref(),
            source_principal: &self.downstream.peer_principal,
            destination: self.destination.as_deref(),
            service: &self.downstream.service,
            flag: self.flag,
        })
    }

    /// The upstream stream is up.
    fn count_opened(&mut self) {
        let labels = self.labels();
        self.metrics.tcp_opened(&labels);
        self.opened = Some(labels);
    }
}

impl Drop for Passthrough<'_> {
    fn drop(&mut self) {
        drop(self.slot.take());
        let labels = match self.opened.take() {
            Some(labels) => labels,
            // Refused: opened and closed at once, with its flag.
            None => {
                let labels = self.labels();
                self.metrics.tcp_opened(&labels);
                labels
            }
        };
        let sample = TcpSample {
            sent_bytes: self.sent.load(Ordering::Relaxed),
            received_bytes: self.received.load(Ordering::Relaxed),
        };
        self.metrics.tcp_closed(&labels, sample);
        let downstream = self.downstream;
        info!(
            target: "access",
            protocol = "tcp",
            src.addr = %downstream.peer_addr,
            src.identity = %downstream.peer_identity,
            dst.service = %downstream.service.hostname,
            dst.workload = self.destination.as_ref().map(|w| field::display(&w.name)),
            dst.addr = self.dst_addr.map(field::display),
            duration_ms = self.started.elapsed().as_millis() as u64,
            bytes_sent = sample.sent_bytes,
            bytes_recv = sample.received_bytes,
            response_flags = self.flag.code(),
            reason = self.reason.as_deref(),
            "TCP passthrough complete",
        );
    }
}

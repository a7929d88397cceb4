//! One access-log event per connection, with Istio ztunnel's dotted field
//! names, on the tracing target `access`.
//!
//! A connection fills an [`AccessLog`] as it learns things (peer identity,
//! route, destination workload) and calls [`AccessLog::finish`] once, with
//! the bytes moved or the error. Fields not known are left out.
//!
//! `bytes_sent` counts bytes from the source to the destination,
//! `bytes_recv` bytes from the destination back to the source, whichever
//! side the proxy is on. A connection that broke mid-copy reports `error`
//! and no byte counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use hbone::copy::Transferred;
use identity::Identity;
use tracing::field;

use super::ProxyError;
pub(super) use crate::connections::Direction;
use crate::connections::{ConnectionInfo, ConnectionTracker, PolicyCheck, Protocol, Tracked};
use crate::metrics::{ConnectionLabels, Reporter};
use crate::state::{Service, Workload};

/// What is known of one connection so far.
#[derive(Debug)]
pub(super) struct AccessLog {
    direction: Direction,
    started: Instant,
    started_at: SystemTime,
    pub(super) src_addr: SocketAddr,
    /// The source workload, when known (for metrics labels).
    src: Option<Arc<Workload>>,
    /// The destination workload, when known.
    dst: Option<Arc<Workload>>,
    pub(super) src_workload: Option<Arc<str>>,
    pub(super) src_identity: Option<Identity>,
    /// Where the proxy connected: the app, a peer's 15008, a waypoint.
    pub(super) dst_addr: Option<SocketAddr>,
    /// The HBONE `:authority`, when there is a tunnel.
    pub(super) dst_hbone_addr: Option<SocketAddr>,
    /// The service hostname the client addressed.
    pub(super) dst_service: Option<Arc<str>>,
    pub(super) dst_workload: Option<Arc<str>>,
    pub(super) dst_identity: Option<Identity>,
}

// === impl AccessLog ===

impl AccessLog {
    pub(super) fn new(direction: Direction, src_addr: SocketAddr) -> Self {
        AccessLog {
            direction,
            started: Instant::now(),
            started_at: SystemTime::now(),
            src_addr,
            src: None,
            dst: None,
            src_workload: None,
            src_identity: None,
            dst_addr: None,
            dst_hbone_addr: None,
            dst_service: None,
            dst_workload: None,
            dst_identity: None,
        }
    }

    /// The source is `workload`, whose identity the proxy presents.
    pub(super) fn source(&mut self, workload: &Arc<Workload>) {
        self.peer(workload);
        self.src_identity = Some(workload.identity.clone());
    }

    /// The source address belongs to `workload`; its identity is whatever
    /// the peer proved (set separately), not the workload's.
    pub(super) fn peer(&mut self, workload: &Arc<Workload>) {
        self.src_workload = Some(workload.name.clone());
        self.src = Some(workload.clone());
    }

    pub(super) fn destination(&mut self, workload: &Arc<Workload>) {
        self.dst_workload = Some(workload.name.clone());
        self.dst_identity = Some(workload.identity.clone());
        self.dst = Some(workload.clone());
    }

    /// Registers the now established connection with the node's tracker.
    pub(super) fn track(
        &self,
        tracker: &ConnectionTracker,
        protocol: Protocol,
        check: Option<PolicyCheck>,
    ) -> Tracked {
        let mutual_tls = protocol == Protocol::Hbone;
        let reporter = match self.direction {
            Direction::Inbound => Reporter::Destination,
            Direction::Outbound => Reporter::Source,
        };
        let principal = self.src_identity.as_ref().map(ToString::to_string);
        let labels = ConnectionLabels::new(
            reporter,
            self.src.as_deref(),
            principal.as_deref().filter(|_| mutual_tls),
            self.dst.as_deref(),
            self.dst_service.as_deref(),
            mutual_tls,
        );
        let info = ConnectionInfo {
            id: 0,
            direction: self.direction,
            protocol,
            src_addr: self.src_addr,
            src_identity: self.src_identity.clone(),
            src_workload: self.src_workload.clone(),
            dst_addr: self.dst_hbone_addr.or(self.dst_addr),
            dst_workload: self.dst_workload.clone(),
            dst_identity: self.dst_identity.clone(),
            dst_service: self.dst_service.clone(),
            started: self.started_at,
        };
        tracker.track(info, labels, check)
    }

    pub(super) fn service(&mut self, service: Option<&Arc<Service>>) {
        self.dst_service = service.map(|s| s.hostname.clone());
    }

    /// Writes the event; consumes the log so that it is written once.
    pub(super) fn finish(self, result: Result<Transferred, &ProxyError>) {
        let direction = match self.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        };
        let (transferred, error) = match result {
            Ok(transferred) => (Some(transferred), None),
            Err(error) => (None, Some(error)),
        };
        tracing::info!(
            target: "access",
            direction,
            src.addr = %self.src_addr,
            src.workload = self.src_workload.as_deref(),
            src.identity = self.src_identity.as_ref().map(field::display),
            dst.addr = self.dst_addr.as_ref().map(field::display),
            dst.hbone_addr = self.dst_hbone_addr.as_ref().map(field::display),
            dst.service = self.dst_service.as_deref(),
            dst.workload = self.dst_workload.as_deref(),
            dst.identity = self.dst_identity.as_ref().map(field::display),
            bytes_sent = transferred.map(|t| t.a_to_b),
            bytes_recv = transferred.map(|t| t.b_to_a),
            duration = %format_args!("{}ms", self.started.elapsed().as_millis()),
            error = error.map(field::display),
            "connection complete",
        );
    }
}

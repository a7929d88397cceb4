//! Every connection this ztunnel is piping, node-wide.
//!
//! The tracker exists for three jobs that need to see all connections at
//! once: `/connections` (what is open), drain (wait until nothing is), and
//! policy changes (an inbound connection that the new policy would refuse is
//! closed, as Istio's ztunnel does). It also keeps the connection metrics,
//! since it sees every open and every close.
//!
//! A connection registers once it is established, holds a [`Tracked`] while
//! it pipes, and is unregistered when that is dropped, however the pipe
//! ended. Revoking a connection completes its [`Tracked::pipe`] with an
//! error; the copy future is dropped, which closes both sockets.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use hbone::copy::Transferred;
use identity::Identity;
use tokio::sync::{oneshot, watch};
use tracing::info;

use crate::authz::{self, Decision};
use crate::metrics::{ConnectionLabels, Metrics};
use crate::state::{Connection, State};

/// How a connection travels on the proxy's far side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Protocol {
    /// Inside an HBONE tunnel.
    #[serde(rename = "HBONE")]
    Hbone,
    /// Plaintext: passthrough outbound, or a client outside the mesh.
    #[serde(rename = "TCP")]
    Tcp,
}

/// Direction relative to the local pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// What `/connections` shows of one connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionInfo {
    pub id: u64,
    pub direction: Direction,
    pub protocol: Protocol,
    pub src_addr: SocketAddr,
    #[serde(serialize_with = "display_opt")]
    pub src_identity: Option<Identity>,
    pub src_workload: Option<Arc<str>>,
    pub dst_addr: Option<SocketAddr>,
    pub dst_workload: Option<Arc<str>>,
    #[serde(serialize_with = "display_opt")]
    pub dst_identity: Option<Identity>,
    pub dst_service: Option<Arc<str>>,
    #[serde(serialize_with = "crate::admin::rfc3339")]
    pub started: SystemTime,
}

/// What to re-check when policy changes: the local workload (by uid) the
/// connection arrived at, and the connection as policy saw it.
#[derive(Debug, Clone)]
pub struct PolicyCheck {
    pub workload_uid: Arc<str>,
    pub conn: Connection,
}

/// The node's connection registry. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConnectionTracker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
    /// The number of open connections, for drain.
    count: watch::Sender<usize>,
    metrics: Arc<Metrics>,
}

#[derive(Debug)]
struct Entry {
    info: ConnectionInfo,
    check: Option<PolicyCheck>,
    /// Taken when the connection is revoked; carries the reason.
    revoke: Option<oneshot::Sender<String>>,
}

/// A registered connection; unregisters on drop.
#[derive(Debug)]
pub struct Tracked {
    id: u64,
    shared: Arc<Shared>,
    labels: ConnectionLabels,
    revoked: oneshot::Receiver<String>,
}

/// How a tracked pipe ended early.
#[derive(Debug, thiserror::Error)]
pub enum PipeError {
    #[error("connection broke while proxying: {0}")]
    Io(#[from] io::Error),
    #[error("closed by ztunnel: {0}")]
    Revoked(String),
}

// === impl ConnectionTracker ===

impl ConnectionTracker {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ConnectionTracker {
            shared: Arc::new(Shared {
                next_id: AtomicU64::new(1),
                open: Mutex::new(HashMap::new()),
                count: watch::channel(0).0,
                metrics,
            }),
        }
    }

    /// Registers an established connection (its `id` is assigned here) and
    /// counts it opened. `check` makes it subject to policy re-checks.
    pub fn track(
        &self,
        mut info: ConnectionInfo,
        labels: ConnectionLabels,
        check: Option<PolicyCheck>,
    ) -> Tracked {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        info.id = id;
        let (revoke, revoked) = oneshot::channel();
        self.shared
            .metrics
            .connections_opened
            .get_or_create(&labels)
            .inc();
        let len = {
            let mut open = self.shared.lock();
            open.insert(
                id,
                Entry {
                    info,
                    check,
                    revoke: Some(revoke),
                },
            );
            open.len()
        };
        self.shared.count.send_replace(len);
        Tracked {
            id,
            shared: self.shared.clone(),
            labels,
            revoked,
        }
    }

    /// The open connections, oldest first.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let mut list: Vec<ConnectionInfo> = self
            .shared
            .lock()
            .values()
            .map(|e| e.info.clone())
            .collect();
        list.sort_by_key(|c| c.id);
        list
    }

    pub fn count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Resolves once no connection is open.
    pub async fn idle(&self) {
        let mut count = self.shared.count.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = count.wait_for(|n| *n == 0).await;
    }

    /// Re-evaluates every checked connection against `state` and closes
    /// those it no longer allows (their workload gone counts as not
    /// allowed: it has no policy to admit them). Returns how many closed.
    pub fn revalidate(&self, state: &State) -> usize {
        let mut open = self.shared.lock();
        let mut closed = 0;
        for entry in open.values_mut() {
            let Some(check) = &entry.check else { continue };
            let decision = match state.workload_by_uid(&check.workload_uid) {
                Some(workload) => authz::waypoint::authorize(state, workload, &check.conn).decision,
                None => Decision::NotAllowed,
            };
            if decision.is_allowed() {
                continue;
            }
            if let Some(revoke) = entry.revoke.take() {
                info!(
                    connection = entry.info.id,
                    src.addr = %entry.info.src_addr,
                    dst.addr = ?entry.info.dst_addr,
                    reason = %decision.reason(),
                    "closing a connection that policy no longer allows"
                );
                let _ = revoke.send(format!("policy no longer allows it: {}", decision.reason()));
                closed += 1;
            }
        }
        closed
    }
}

impl ConnectionTracker {
    /// Closes every open connection (the end of a drain). Returns how many.
    pub fn close_all(&self, reason: &str) -> usize {
        let mut open = self.shared.lock();
        let mut closed = 0;
        for entry in open.values_mut() {
            if let Some(revoke) = entry.revoke.take() {
                let _ = revoke.send(reason.to_owned());
                closed += 1;
            }
        }
        closed
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Tracked ===

impl Tracked {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Runs `copy` until it ends or the connection is revoked; counts the
    /// bytes of a completed copy.
    pub async fn pipe(
        mut self,
        copy: impl Future<Output = io::Result<Transferred>>,
    ) -> Result<Transferred, PipeError> {
        let result = tokio::select! {
            result = copy => result.map_err(PipeError::Io),
            reason = &mut self.revoked => Err(PipeError::Revoked(
                reason.unwrap_or_else(|_| "revoked".to_owned()),
            )),
        };
        if let Ok(transferred) = &result {
            let metrics = &self.shared.metrics;
            metrics
                .sent_bytes
                .get_or_create(&self.labels)
                .inc_by(transferred.a_to_b);
            metrics
                .received_bytes
                .get_or_create(&self.labels)
                .inc_by(transferred.b_to_a);
        }
        result
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.shared
            .metrics
            .connections_closed
            .get_or_create(&self.labels)
            .inc();
        let len = {
            let mut open = self.shared.lock();
            open.remove(&self.id);
            open.len()
        };
        self.shared.count.send_replace(len);
    }
}

fn display_opt<T: std::fmt::Display, S: serde::Serializer>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests;

//! The local pods this ztunnel serves: one [`Proxy`] per enrolled pod of
//! this node, started when the control plane says the pod is here and in
//! the mesh, stopped when it leaves.
//!
//! [`PodManager::run`] reconciles after every state update: [`plan`] says
//! (purely) what should run and what to change; this module does it. A pod
//! whose setup failed (its namespace not there yet, say) is kept as failed,
//! shown on `/config_dump` and retried every few seconds.
//!
//! Rules stay in place when ztunnel stops: a pod's traffic then has nowhere
//! to go but a closed port until ztunnel is back, which fails closed, and
//! the restarted ztunnel replaces the rules (atomically, never a second
//! copy). A pod that leaves the mesh gets its rules removed.
//!
//! # Layout
//!
//! - [`plan`]: which pods to serve and the changes to get there (pure).
//! - `serve`: one pod's listeners, rules and connector in each
//!   [`CaptureMode`].

pub mod plan;
mod serve;
mod threads;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use identity::Identity;
use tokio::sync::watch;
use tracing::{info, warn};
use xds::ClientStatus;

pub use self::plan::DesiredPod;
pub use self::serve::CaptureMode;
pub use self::threads::DataThreads;
use self::threads::PodThread;
use crate::capture::{self, PodNetns, rules};
use crate::connections::ConnectionTracker;
use crate::metrics::Metrics;
use crate::proxy::{CertSource, Proxy, ProxyConfig};
use crate::state::StateStore;

/// How often pods whose setup failed are tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Why a pod could not be served.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error(
        "no network namespace in {dir} has the pod's address {ip}: has the pod's sandbox \
         been created (and is ztunnel looking in the right place, ZTUNNEL_NETNS_DIR)?"
    )]
    NoNetns { ip: IpAddr, dir: PathBuf },
    #[error("{0}")]
    Capture(#[from] capture::Error),
    #[error("cannot listen on {addr}: {source}: is the pod's address assigned on this host?")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the pod panicked or was cancelled: {0}")]
    Task(String),
}

/// What `/config_dump` shows of a local pod.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PodStatus {
    pub uid: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub addresses: Vec<IpAddr>,
    /// `netns <path>` or `explicit`; `null` if setup failed before knowing.
    pub capture: Option<String>,
    pub state: PodState,
    pub error: Option<String>,
    #[serde(serialize_with = "crate::admin::rfc3339")]
    pub since: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PodState {
    Captured,
    Failed,
}

/// The local pods' statuses, shared with the admin server. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PodDirectory {
    pods: Arc<Mutex<BTreeMap<Arc<str>, PodStatus>>>,
    /// Set once the manager has finished a pass over a snapshot that holds
    /// the control plane's first full config. Until then an empty or
    /// partial list says nothing about capture: the manager sets pods up
    /// one after another, so `all_captured` alone holds as soon as the
    /// first one is.
    caught_up: Arc<AtomicBool>,
}

/// What every pod's proxy is built from and shares with the others.
#[derive(Debug, Clone)]
pub struct ProxyParts {
    pub state: Arc<StateStore>,
    pub certs: Arc<dyn CertSource>,
    pub connections: ConnectionTracker,
    pub config: ProxyConfig,
    /// The data path's threads: every pod's listeners and connections run
    /// there, never on the runtime of the manager and the control plane.
    pub data: DataThreads,
}

/// Starts and stops the local pods' proxies.
#[derive(Debug)]
pub struct PodManager {
    node: Arc<str>,
    mode: CaptureMode,
    parts: ProxyParts,
    metrics: Arc<Metrics>,
    directory: PodDirectory,
    running: HashMap<Arc<str>, RunningPod>,
}

/// A pod the manager started (or failed to start).
#[derive(Debug)]
struct RunningPod {
    addresses: Vec<IpAddr>,
    identity: Identity,
    /// `None` when setup failed.
    serving: Option<Serving>,
    netns: Option<PodNetns>,
}

/// A pod whose listeners are up.
#[derive(Debug)]
struct Serving {
    /// Turning it true stops the pod's listeners and drains its HBONE
    /// connections.
    stop: watch::Sender<bool>,
    /// The thread its listeners and connections run on, held so that the
    /// pod counts there.
    _thread: PodThread,
}

// === impl PodDirectory ===

impl PodDirectory {
    pub fn list(&self) -> Vec<PodStatus> {
        self.lock().values().cloned().collect()
    }

    /// Every local pod is captured (none failed).
    pub fn all_captured(&self) -> bool {
        self.lock().values().all(|p| p.state == PodState::Captured)
    }

    /// Every pod of the control plane's first full config has a status
    /// here (captured or failed); stays true from then on.
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    pub(crate) fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::Release);
    }

    fn set(&self, status: PodStatus) {
        self.lock().insert(status.uid.clone(), status);
    }

    fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Arc<str>, PodStatus>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl PodManager ===

impl PodManager {
    pub fn new(
        node: impl Into<Arc<str>>,
        mode: CaptureMode,
        parts: ProxyParts,
        metrics: Arc<Metrics>,
    ) -> Self {
        PodManager {
            node: node.into(),
            mode,
            parts,
            metrics,
            directory: PodDirectory::default(),
            running: HashMap::new(),
        }
    }

    pub fn directory(&self) -> PodDirectory {
        self.directory.clone()
    }

    /// Reconciles on every state update (and retries failed pods) until
    /// `drain` turns true; then stops every pod's listeners and drains its
    /// HBONE connections, leaving the rules in place. `xds` tells when the
    /// first full config has arrived, for [`PodDirectory::caught_up`].
    pub async fn run(
        mut self,
        mut drain: watch::Receiver<bool>,
        mut xds: watch::Receiver<ClientStatus>,
    ) {
        let mut updates = self.parts.state.subscribe();
        let mut retry = tokio::time::interval(RETRY_INTERVAL);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut xds_open = true;
        loop {
            // Read before the pass takes its snapshot: the client marks
            // itself synced only after the config is in the store, so a
            // pass that starts synced sees all of it.
            let synced = xds.borrow_and_update().synced;
            self.reconcile().await;
            if synced {
                self.directory.set_caught_up();
            }
            let failed = self.running.values().any(|p| p.serving.is_none());
            let waiting = xds_open && !self.directory.caught_up();
            tokio::select! {
                changed = updates.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                // The store may have been updated before the client said
                // synced: one more pass then, or readiness would wait for
                // the next change of config.
                changed = xds.changed(), if waiting => {
                    // A client that is gone will not sync: keep serving
                    // what the store holds.
                    xds_open = changed.is_ok();
                }
                _ = retry.tick(), if failed => {}
                _ = drain.wait_for(|d| *d) => break,
            }
        }
        for pod in self.running.values() {
            if let Some(serving) = &pod.serving {
                serving.stop.send_replace(true);
            }
        }
    }

    /// One pass: applies the plan's changes for the current snapshot.
    pub async fn reconcile(&mut self) {
        let snapshot = self.parts.state.snapshot();
        let desired = plan::desired(&snapshot, &self.node);
        let running: HashMap<Arc<str>, Vec<IpAddr>> = self
            .running
            .iter()
            .map(|(uid, pod)| (uid.clone(), pod.addresses.clone()))
            .collect();
        let failed: Vec<Arc<str>> = self
            .running
            .iter()
            .filter(|(_, pod)| pod.serving.is_none())
            .map(|(uid, _)| uid.clone())
            .collect();
        for change in plan::diff(&desired, &running, &failed) {
            match change {
                plan::Change::Start(pod) => self.start(pod).await,
                plan::Change::Stop(uid) => self.stop(&uid).await,
                plan::Change::Restart(pod) => {
                    self.stop(&pod.uid).await;
                    self.start(pod).await;
                }
            }
        }
        let (captured, failed) = self
            .running
            .values()
            .fold((0, 0), |(c, f), p| match p.serving {
                Some(_) => (c + 1, f),
                None => (c, f + 1),
            });
        self.metrics.pods_captured.set(captured);
        self.metrics.pods_failed.set(failed);
    }

    async fn start(&mut self, pod: DesiredPod) {
        self.parts.certs.prefetch(&pod.identity);
        let mode = self.mode.clone();
        let setup = pod.clone();
        let prepared = tokio::task::spawn_blocking(move || mode.prepare(&setup))
            .await
            .unwrap_or_else(|e| Err(PodError::Task(e.to_string())));
        let mut status = PodStatus {
            uid: pod.uid.clone(),
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            addresses: pod.addresses.clone(),
            capture: None,
            state: PodState::Captured,
            error: None,
            since: SystemTime::now(),
        };
        let mut running = RunningPod {
            addresses: pod.addresses.clone(),
            identity: pod.identity.clone(),
            serving: None,
            netns: None,
        };
        let served = prepared.map(|prepared| {
            status.capture = Some(prepared.capture.clone());
            running.netns = prepared.netns.clone();
            let parts = &self.parts;
            let proxy = Proxy::new(
                pod.uid.clone(),
                parts.state.clone(),
                parts.certs.clone(),
                prepared.connector(),
                parts.connections.clone(),
                parts.config.clone(),
            );
            let (stop, stopped) = watch::channel(false);
            let thread = parts.data.place();
            prepared.spawn(&proxy, &stopped, thread.handle());
            running.serving = Some(Serving {
                stop,
                _thread: thread,
            });
        });
        match served {
            Ok(()) => {
                info!(pod.uid = %pod.uid, capture = status.capture.as_deref(), "serving pod");
            }
            Err(error) => {
                warn!(pod.uid = %pod.uid, %error, "cannot serve pod yet; retrying");
                status.state = PodState::Failed;
                status.error = Some(error.to_string());
            }
        }
        self.directory.set(status);
        self.running.insert(pod.uid, running);
    }

    async fn stop(&mut self, uid: &Arc<str>) {
        let Some(pod) = self.running.remove(uid) else {
            return;
        };
        self.directory.remove(uid);
        if let Some(serving) = pod.serving {
            serving.stop.send_replace(true);
        }
        if let Some(netns) = pod.netns {
            let removed = tokio::task::spawn_blocking(move || rules::remove(&netns)).await;
            match removed {
                Ok(Ok(())) => {}
                // The namespace may be gone with the pod: nothing to remove.
                Ok(Err(error)) => info!(pod.uid = %uid, %error, "removing the pod's rules failed"),
                Err(error) => warn!(pod.uid = %uid, %error, "removing the pod's rules panicked"),
            }
        }
        if !self.running.values().any(|p| p.identity == pod.identity) {
            self.parts.certs.forget(&pod.identity);
        }
        info!(pod.uid = %uid, "stopped serving pod");
    }
}

#[cfg(test)]
pub(crate) mod tests;

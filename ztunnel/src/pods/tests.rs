//! The manager's `caught_up` latch, on a node with no pods of its own: it
//! must wait for the control plane's first full config, whichever of the
//! store update and the client's `synced` comes last.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use identity::Identity;
use tokio::sync::watch;
use xds::ClientStatus;

use super::{CaptureMode, PodManager, ProxyParts};
use crate::connections::ConnectionTracker;
use crate::proxy::{CertFuture, CertSource, ProxyConfig};
use crate::state::StateStore;

/// No pod on this node asks for a certificate.
#[derive(Debug)]
struct NoCertificates;

impl CertSource for NoCertificates {
    fn fetch<'a>(&'a self, _identity: &'a Identity) -> CertFuture<'a> {
        Box::pin(std::future::pending())
    }
}

/// A client's status, connected, `synced` or not; for the admin tests too.
pub(crate) fn status(synced: bool) -> ClientStatus {
    ClientStatus {
        connected: true,
        since: SystemTime::now(),
        synced,
        server_version: String::new(),
        responses: 0,
        nacks: 0,
        last_error: None,
    }
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_manager_is_caught_up_only_after_a_pass_over_the_synced_config() {
    let state = Arc::new(StateStore::new());
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let parts = ProxyParts {
        state: state.clone(),
        certs: Arc::new(NoCertificates),
        connections: ConnectionTracker::new(metrics.clone()),
        config: ProxyConfig::default(),
        data: super::DataThreads::Runtime(tokio::runtime::Handle::current()),
    };
    let manager = PodManager::new("node-x", CaptureMode::Explicit, parts, metrics);
    let directory = manager.directory();
    let (_drain, drained) = watch::channel(false);
    let (xds, xds_status) = watch::channel(status(false));
    tokio::spawn(manager.run(drained, xds_status));

    // Config in the store, but the client has not said synced: passes
    // over it run (the pod list is empty and all captured) and prove
    // nothing yet.
    state.update(|_| ());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(directory.all_captured());
    assert!(
        !directory.caught_up(),
        "caught up before the first full config"
    );

    // Synced with no further change to the store: the manager makes one
    // more pass on its own.
    xds.send_modify(|s| s.synced = true);
    wait_until("the manager to catch up", || directory.caught_up()).await;

    // And it stays caught up.
    state.update(|_| ());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(directory.caught_up());
}

//! `DeltaClient` against the real server over loopback gRPC: what a proxy's
//! handler sees, NACKs of resources that do not convert, and reconnects.

// The test handler panics on failure: that is the report a test wants.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use proto::discovery::Resource;
use tokio::task::JoinHandle;
use xds::{ClientConfig, ClientStatus, DeltaClient, Rejection, ResourceHandler};

/// One handler call: type URL, upserted names, removed names.
type Call = (String, Vec<String>, Vec<String>);

/// A handler that keeps `(type, name) -> content` like a proxy's state, and
/// rejects any resource whose content is "invalid".
#[derive(Default)]
struct Recorder {
    state: Mutex<BTreeMap<(String, String), String>>,
    calls: Mutex<Vec<Call>>,
}

impl ResourceHandler for Recorder {
    fn apply(
        &self,
        type_url: &str,
        upserts: Vec<Resource>,
        removals: Vec<String>,
    ) -> Result<(), Vec<Rejection>> {
        let mut state = self.state.lock().unwrap();
        let mut rejected = Vec::new();
        let names = upserts.iter().map(|r| r.name.clone()).collect();
        for resource in upserts {
            let content = String::from_utf8(resource.resource.unwrap_or_default().value).unwrap();
            if content == "invalid" {
                rejected.push(Rejection {
                    name: resource.name,
                    reason: "content is invalid".into(),
                });
                continue;
            }
            state.insert((type_url.to_string(), resource.name), content);
        }
        for name in &removals {
            state.remove(&(type_url.to_string(), name.clone()));
        }
        self.calls
            .lock()
            .unwrap()
            .push((type_url.to_string(), names, removals));
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(rejected)
        }
    }
}

impl Recorder {
    fn state(&self) -> BTreeMap<String, String> {
        self.state
            .lock()
            .unwrap()
            .iter()
            .filter(|((t, _), _)| t == TYPE_A)
            .map(|((_, n), c)| (n.clone(), c.clone()))
            .collect()
    }

    fn has(&self, expected: &[(&str, &str)]) -> bool {
        let expected: BTreeMap<String, String> = expected
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect();
        self.state() == expected
    }

    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Names upserted in calls from index `from` on.
    fn upserted_since(&self, from: usize) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        let mut names: Vec<String> = calls[from..].iter().flat_map(|c| c.1.clone()).collect();
        names.sort();
        names
    }
}

struct Running {
    recorder: Arc<Recorder>,
    status: tokio::sync::watch::Receiver<ClientStatus>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_client(h: &Harness, id: &str) -> Running {
    let recorder = Arc::new(Recorder::default());
    let mut config = ClientConfig::new(node(id), vec![TYPE_A.into(), TYPE_B.into()]);
    config.initial_backoff = Duration::from_millis(20);
    config.max_backoff = Duration::from_millis(200);
    let client = DeltaClient::new(h.channel(), config, recorder.clone());
    let status = client.status();
    let task = tokio::spawn(client.run());
    Running {
        recorder,
        status,
        task,
    }
}

#[tokio::test]
async fn client_applies_initial_state_and_deltas() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one"), ("a2", "two")]);
    let client = start_client(&h, "node-1");
    eventually(|| client.recorder.has(&[("a1", "one"), ("a2", "two")])).await;
    eventually(|| client.status.borrow().synced).await;
    assert!(client.status.borrow().connected);

    put(&h.store, &[("a3", "three"), ("a1", "one, changed")]);
    remove(&h.store, &["a2"]);
    eventually(|| {
        client
            .recorder
            .has(&[("a1", "one, changed"), ("a3", "three")])
    })
    .await;

    // Initial A and B, then one or two pushes depending on timing: all ACKed.
    let stats = h
        .stats_until(|s| s.acks >= 3 && s.acks + s.stale_nonces == s.pushes)
        .await;
    assert_eq!(stats.nacks, 0);
    assert_eq!(client.status.borrow().nacks, 0);
}

#[tokio::test]
async fn client_nacks_a_rejected_resource_and_keeps_the_rest() {
    let h = Harness::start().await;
    put(&h.store, &[("good1", "one"), ("bad", "fine for now")]);
    let client = start_client(&h, "node-1");
    eventually(|| {
        client
            .recorder
            .has(&[("bad", "fine for now"), ("good1", "one")])
    })
    .await;

    // One batch: one good resource, one that fails conversion.
    put(&h.store, &[("good2", "two"), ("bad", "invalid")]);
    eventually(|| {
        client
            .recorder
            .has(&[("bad", "fine for now"), ("good1", "one"), ("good2", "two")])
    })
    .await;
    let stats = h.stats_until(|s| s.nacks == 1).await;
    assert_eq!(client.status.borrow().nacks, 1);

    // No resend loop: nothing more arrives while nothing changes.
    let calls = client.recorder.calls();
    tokio::time::sleep(QUIET).await;
    assert_eq!(client.recorder.calls(), calls);
    assert_eq!(h.server.stats().snapshot().pushes, stats.pushes);

    // A fixed version is accepted.
    put(&h.store, &[("bad", "repaired")]);
    eventually(|| {
        client
            .recorder
            .has(&[("bad", "repaired"), ("good1", "one"), ("good2", "two")])
    })
    .await;
    assert_eq!(h.server.stats().snapshot().nacks, 1);
}

#[tokio::test]
async fn client_reconnects_and_receives_only_the_difference() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one"), ("a2", "two"), ("a3", "three")]);
    let client = start_client(&h, "node-1");
    eventually(|| {
        client
            .recorder
            .has(&[("a1", "one"), ("a2", "two"), ("a3", "three")])
    })
    .await;
    eventually(|| client.status.borrow().synced).await;
    let calls_before = client.recorder.calls();

    h.server.disconnect_all();
    put(&h.store, &[("a1", "one, changed")]);
    remove(&h.store, &["a2"]);

    eventually(|| {
        client
            .recorder
            .has(&[("a1", "one, changed"), ("a3", "three")])
    })
    .await;
    h.stats_until(|s| s.streams_total == 2 && s.connected_clients == 1)
        .await;
    // Whether the change landed before or after the reconnect, a1 is the
    // only resource sent again: the client reported what it held.
    assert_eq!(client.recorder.upserted_since(calls_before), ["a1"]);
    eventually(|| client.status.borrow().connected).await;
}

#[tokio::test]
async fn client_keeps_its_config_while_the_server_is_gone() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one")]);
    let client = start_client(&h, "node-1");
    eventually(|| client.recorder.has(&[("a1", "one")])).await;

    drop(h);
    eventually(|| !client.status.borrow().connected).await;
    tokio::time::sleep(QUIET).await;
    assert!(client.recorder.has(&[("a1", "one")]));
    let status = client.status.borrow().clone();
    assert!(status.synced && status.last_error.is_some());
}

#[tokio::test]
async fn two_clients_both_get_a_change() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one")]);
    let one = start_client(&h, "node-1");
    let two = start_client(&h, "node-2");
    eventually(|| one.recorder.has(&[("a1", "one")]) && two.recorder.has(&[("a1", "one")])).await;

    put(&h.store, &[("a2", "two")]);
    eventually(|| {
        one.recorder.has(&[("a1", "one"), ("a2", "two")])
            && two.recorder.has(&[("a1", "one"), ("a2", "two")])
    })
    .await;
    assert_eq!(h.server.stats().snapshot().connected_clients, 2);
}

#[tokio::test]
async fn a_split_initial_state_is_synced_only_once_whole() {
    // Each resource is about 100 bytes: 60 of them cannot fit one 1 KiB
    // response, so the initial state arrives in several.
    let h = Harness::start_with(xds::server::ServerConfig {
        response_budget: 1024,
    })
    .await;
    let contents: Vec<(String, String)> = (0..60)
        .map(|i| (format!("a{i:02}"), "x".repeat(90)))
        .collect();
    let items: Vec<(&str, &str)> = contents
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    put(&h.store, &items);
    // One type only, so that no other type's response can hold `synced`
    // back.
    let recorder = Arc::new(Recorder::default());
    let config = ClientConfig::new(node("node-1"), vec![TYPE_A.into()]);
    let client = DeltaClient::new(h.channel(), config, recorder.clone());
    let mut status = client.status();
    let task = tokio::spawn(client.run());
    // Single-threaded test runtime: nothing is applied between the status
    // turning synced and the check below.
    status.wait_for(|s| s.synced).await.unwrap();
    assert_eq!(recorder.state().len(), 60);
    assert!(
        recorder.calls() > 2,
        "the initial state was not split: {} calls",
        recorder.calls()
    );
    task.abort();
}

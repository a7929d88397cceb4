//! The delta ADS server against a raw generated client over loopback gRPC:
//! the protocol as a client sees it, message by message.

mod common;

use std::collections::BTreeMap;

use common::*;
use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use xds::server::ServerConfig;

fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

#[tokio::test]
async fn initial_response_carries_everything_and_empty_types_are_answered() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one"), ("a2", "two")]);

    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &[], &none()).await;
    let a = stream.recv().await;
    assert_eq!(a.type_url, TYPE_A);
    assert_eq!(versions(&a), store_versions(&h.store, TYPE_A));
    assert!(a.removed_resources.is_empty());
    assert!(!a.nonce.is_empty());
    assert_eq!(a.system_version_info, "1");
    let body = &a.resources[0].resource.as_ref().unwrap();
    assert_eq!(body.type_url, TYPE_A);

    // A type with nothing in it still gets a (empty) first response, so the
    // client knows it is in sync.
    stream.subscribe(TYPE_B, &["*"], &none()).await;
    let b = stream.recv().await;
    assert_eq!(b.type_url, TYPE_B);
    assert!(b.resources.is_empty() && b.removed_resources.is_empty());
    assert_ne!(a.nonce, b.nonce);

    let stats = h.stats_until(|s| s.connected_clients == 1).await;
    assert_eq!((stats.pushes, stats.resources_pushed), (2, 2));
}

#[tokio::test]
async fn add_update_remove_push_only_the_change() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one"), ("a2", "two")]);
    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &[], &none()).await;
    let initial = h.recv_acked(&mut stream).await;

    put(&h.store, &[("a3", "three")]);
    let added = h.recv_acked(&mut stream).await;
    assert_eq!(names(&added), ["a3"]);
    assert!(added.removed_resources.is_empty());

    put(&h.store, &[("a1", "one, changed")]);
    let updated = h.recv_acked(&mut stream).await;
    assert_eq!(names(&updated), ["a1"]);
    assert_ne!(versions(&updated)["a1"], versions(&initial)["a1"]);
    assert_ne!(updated.nonce, added.nonce);

    remove(&h.store, &["a2"]);
    let gone = h.recv_acked(&mut stream).await;
    assert!(gone.resources.is_empty());
    assert_eq!(removed(&gone), ["a2"]);

    // Unchanged content: same version, nothing sent.
    put(&h.store, &[("a1", "one, changed"), ("a3", "three")]);
    stream.expect_silence().await;
    let stats = h.stats_until(|s| s.acks == 4).await;
    assert_eq!(stats.nacks, 0);
    // The three change pushes (not the initial response) were timed.
    assert_eq!(stats.push_latency_buckets.iter().sum::<u64>(), 3);
    assert!(stats.push_latency_sum_seconds > 0.0);
}

#[tokio::test]
async fn unchanged_reapply_sends_nothing() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one")]);
    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &[], &none()).await;
    h.recv_acked(&mut stream).await;

    let revision = h.store.revision();
    put(&h.store, &[("a1", "one")]);
    remove(&h.store, &["never-existed"]);
    assert_eq!(h.store.revision(), revision);
    stream.expect_silence().await;
}

#[tokio::test]
async fn reconnect_with_initial_versions_gets_only_the_difference() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one"), ("a2", "two"), ("a3", "three")]);
    let mut first = h.raw().await;
    first.subscribe(TYPE_A, &[], &none()).await;
    let mut held = versions(&first.recv_ack().await);
    drop(first);

    put(&h.store, &[("a1", "one, changed"), ("a4", "four")]);
    remove(&h.store, &["a2"]);
    held.insert("ghost".into(), "0123".into());

    let mut second = h.raw().await;
    second.subscribe(TYPE_A, &[], &held).await;
    let response = second.recv().await;
    assert_eq!(names(&response), ["a1", "a4"]);
    assert_eq!(removed(&response), ["a2", "ghost"]);
    let now = store_versions(&h.store, TYPE_A);
    assert_eq!(versions(&response)["a1"], now["a1"]);

    // Holding everything at the current versions: an empty first response.
    let mut third = h.raw().await;
    third.subscribe(TYPE_A, &[], &now).await;
    let response = third.recv().await;
    assert!(response.resources.is_empty() && response.removed_resources.is_empty());
}

#[tokio::test]
async fn nack_is_counted_and_the_version_not_resent() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one"), ("a2", "two")]);
    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &[], &none()).await;
    h.recv_acked(&mut stream).await;

    put(&h.store, &[("a1", "broken")]);
    let bad = stream.recv().await;
    assert_eq!(names(&bad), ["a1"]);
    stream.nack(&bad, "a1: port out of range").await;
    let stats = h.stats_until(|s| s.nacks == 1).await;
    assert_eq!(stats.acks, 1);
    stream.expect_silence().await;

    // Another change carries only itself, not the rejected version again.
    put(&h.store, &[("a2", "two, changed")]);
    let next = h.recv_acked(&mut stream).await;
    assert_eq!(names(&next), ["a2"]);

    // A fixed version is sent.
    put(&h.store, &[("a1", "fixed")]);
    let fixed = h.recv_acked(&mut stream).await;
    assert_eq!(names(&fixed), ["a1"]);
    assert_eq!(h.server.stats().snapshot().nacks, 1);
}

#[tokio::test]
async fn explicit_subscription_gets_only_named_resources() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one"), ("a2", "two")]);
    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &["a1", "missing"], &none()).await;
    let initial = h.recv_acked(&mut stream).await;
    assert_eq!(names(&initial), ["a1"]);
    // A subscribed name that does not exist is reported removed.
    assert_eq!(removed(&initial), ["missing"]);

    put(&h.store, &[("a2", "two, changed")]);
    stream.expect_silence().await;

    put(&h.store, &[("missing", "now here"), ("a1", "one, changed")]);
    let update = h.recv_acked(&mut stream).await;
    assert_eq!(names(&update), ["a1", "missing"]);
}

#[tokio::test]
async fn subscribe_and_unsubscribe_later() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one"), ("a2", "two"), ("a3", "three")]);
    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &["a1"], &none()).await;
    assert_eq!(names(&h.recv_acked(&mut stream).await), ["a1"]);

    stream
        .send(DeltaDiscoveryRequest {
            type_url: TYPE_A.into(),
            resource_names_subscribe: vec!["a2".into()],
            resource_names_unsubscribe: vec!["a1".into()],
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    assert_eq!(names(&h.recv_acked(&mut stream).await), ["a2"]);
    put(&h.store, &[("a1", "one, changed")]);
    stream.expect_silence().await;

    // Subscribing to `*` later sends everything not already held.
    stream
        .send(DeltaDiscoveryRequest {
            type_url: TYPE_A.into(),
            resource_names_subscribe: vec!["*".into()],
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    assert_eq!(names(&h.recv_acked(&mut stream).await), ["a1", "a3"]);
    put(&h.store, &[("a3", "three, changed")]);
    assert_eq!(names(&h.recv_acked(&mut stream).await), ["a3"]);

    // Leaving the wildcard keeps the explicit name only.
    stream
        .send(DeltaDiscoveryRequest {
            type_url: TYPE_A.into(),
            resource_names_unsubscribe: vec!["*".into()],
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    // Requests are handled in order: once this one is answered, the
    // unsubscribe above has been applied.
    stream
        .send(DeltaDiscoveryRequest {
            type_url: TYPE_A.into(),
            resource_names_subscribe: vec!["absent".into()],
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    assert_eq!(removed(&h.recv_acked(&mut stream).await), ["absent"]);
    put(&h.store, &[("a3", "three, again")]);
    stream.expect_silence().await;
    put(&h.store, &[("a2", "two, changed")]);
    assert_eq!(names(&h.recv_acked(&mut stream).await), ["a2"]);
}

#[tokio::test]
async fn stale_nonce_is_not_an_ack_but_subscriptions_apply() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one"), ("b1", "b")]);
    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &["a1"], &none()).await;
    h.recv_acked(&mut stream).await;

    put(&h.store, &[("a1", "v2")]);
    let older = stream.recv().await;
    put(&h.store, &[("a1", "v3")]);
    let newer = stream.recv().await;

    // ACK of a superseded response: ignored, nothing sent back.
    stream.ack(&older).await;
    let stats = h.stats_until(|s| s.stale_nonces == 1).await;
    assert_eq!(stats.acks, 1);
    stream.expect_silence().await;

    // A stale request that also subscribes still gets its resources.
    stream
        .send(DeltaDiscoveryRequest {
            type_url: TYPE_A.into(),
            response_nonce: older.nonce.clone(),
            resource_names_subscribe: vec!["b1".into()],
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    let subscribed = stream.recv().await;
    assert_eq!(names(&subscribed), ["b1"]);

    // `newer` is no longer the latest either; the latest is ACKed.
    stream.ack(&newer).await;
    stream.ack(&subscribed).await;
    let stats = h.stats_until(|s| s.acks == 2).await;
    assert_eq!(stats.stale_nonces, 3);
    assert_eq!(stats.nacks, 0);
}

#[tokio::test]
async fn two_clients_both_get_a_change() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one")]);
    let mut one = h.raw().await;
    let mut two = h.raw().await;
    one.subscribe(TYPE_A, &[], &none()).await;
    two.subscribe(TYPE_A, &[], &none()).await;
    h.recv_acked(&mut one).await;
    h.recv_acked(&mut two).await;
    h.stats_until(|s| s.connected_clients == 2).await;

    put(&h.store, &[("a2", "two")]);
    assert_eq!(names(&h.recv_acked(&mut one).await), ["a2"]);
    assert_eq!(names(&h.recv_acked(&mut two).await), ["a2"]);

    drop(one);
    drop(two);
    let stats = h.stats_until(|s| s.connected_clients == 0).await;
    assert_eq!(stats.streams_total, 2);
}

#[tokio::test]
async fn first_request_without_node_is_refused() {
    let h = Harness::start().await;
    let mut stream = h.raw().await;
    stream
        .send(DeltaDiscoveryRequest {
            type_url: TYPE_A.into(),
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    let status = stream.end().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("node.id"), "{status:?}");
}

#[tokio::test]
async fn disconnect_all_ends_streams_and_new_ones_are_served() {
    let h = Harness::start().await;
    put(&h.store, &[("a1", "one")]);
    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &[], &none()).await;
    h.recv_acked(&mut stream).await;

    h.server.disconnect_all();
    assert!(stream.end().await.unwrap().is_none());

    let mut again = h.raw().await;
    again.subscribe(TYPE_A, &[], &none()).await;
    assert_eq!(names(&again.recv().await), ["a1"]);
}

/// A budget of four resources of [`filler`] per response.
const SMALL_BUDGET: usize = 400;

fn small_budget() -> ServerConfig {
    ServerConfig {
        response_budget: SMALL_BUDGET,
    }
}

/// `count` resources `r00`, `r01`, ... of about 100 encoded bytes each.
fn filler(count: usize, tag: &str) -> Vec<(String, String)> {
    (0..count)
        .map(|i| (format!("r{i:02}"), format!("{tag}{}", "x".repeat(40))))
        .collect()
}

fn put_all(store: &xds::ResourceStore, items: &[(String, String)]) {
    let items: Vec<(&str, &str)> = items
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    put(store, &items);
}

/// Checks the parts of one push: each within the budget (or a single
/// resource), only the last marked, distinct nonces, and no resource twice.
/// Returns the union of their resources.
fn check_parts(parts: &[DeltaDiscoveryResponse], revision: u64) -> BTreeMap<String, String> {
    let Some((last, rest)) = parts.split_last() else {
        panic!("a push has at least one response");
    };
    assert_eq!(last.system_version_info, revision.to_string());
    for part in rest {
        assert_eq!(part.system_version_info, "", "only the last part is marked");
        assert!(
            part.removed_resources.is_empty(),
            "removals ride in the last part"
        );
    }
    let mut union = BTreeMap::new();
    let mut nonces = std::collections::HashSet::new();
    for part in parts {
        assert!(
            budgeted_bytes(part) <= SMALL_BUDGET || part.resources.len() == 1,
            "a part of {} resources holds {} bytes",
            part.resources.len(),
            budgeted_bytes(part)
        );
        assert!(nonces.insert(part.nonce.clone()), "nonces are distinct");
        for (name, version) in versions(part) {
            assert!(
                union.insert(name.clone(), version).is_none(),
                "{name} sent twice"
            );
        }
    }
    union
}

#[tokio::test]
async fn large_push_is_split_and_only_the_last_part_is_marked() {
    let h = Harness::start_with(small_budget()).await;
    put_all(&h.store, &filler(20, "v1"));
    // Larger than the budget on its own: still sent, alone.
    put(&h.store, &[("huge", &"h".repeat(1000))]);

    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &[], &none()).await;
    let parts = stream.recv_push().await;
    assert!(parts.len() >= 6, "{} parts", parts.len());
    let union = check_parts(&parts, h.store.revision());
    assert_eq!(union, store_versions(&h.store, TYPE_A));
    assert!(parts.iter().any(|p| names(p) == ["huge"]));

    // Every part is current: each ACK counts, none is stale.
    for part in &parts {
        stream.ack(part).await;
    }
    let stats = h.stats_until(|s| s.acks == parts.len() as u64).await;
    assert_eq!((stats.stale_nonces, stats.nacks), (0, 0));
    assert_eq!(stats.pushes, parts.len() as u64);
    stream.expect_silence().await;

    // A small change is one response, marked as the last of its push.
    put(&h.store, &[("r03", "changed")]);
    let change = stream.recv_push().await;
    assert_eq!(change.len(), 1);
    assert_eq!(names(&change[0]), ["r03"]);
}

#[tokio::test]
async fn nack_of_a_middle_part_rejects_only_its_resources() {
    let h = Harness::start_with(small_budget()).await;
    put_all(&h.store, &filler(12, "v1"));
    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &[], &none()).await;
    let parts = stream.recv_push().await;
    assert_eq!(parts.len(), 3);
    check_parts(&parts, h.store.revision());

    stream.ack(&parts[0]).await;
    stream.nack(&parts[1], "bad resource").await;
    stream.ack(&parts[2]).await;
    let stats = h.stats_until(|s| s.acks == 2 && s.nacks == 1).await;
    assert_eq!(stats.stale_nonces, 0);
    // Nothing is resent: versions were recorded when sent.
    stream.expect_silence().await;

    // Changes elsewhere carry only themselves, not the rejected resources.
    let accepted = names(&parts[0])[0].clone();
    let rejected = names(&parts[1]);
    put(&h.store, &[(accepted.as_str(), "v2"), ("new", "v1")]);
    let next = stream.recv_push().await;
    assert_eq!(next.len(), 1);
    let mut expected = vec![accepted, "new".to_string()];
    expected.sort();
    assert_eq!(names(&next[0]), expected);
    stream.ack(&next[0]).await;

    // A rejected resource is sent again once it changes, and only it.
    put(&h.store, &[(rejected[0].as_str(), "fixed")]);
    let fixed = h.recv_acked(&mut stream).await;
    assert_eq!(names(&fixed), [rejected[0].clone()]);
    assert_eq!(h.server.stats().snapshot().nacks, 1);
}

#[tokio::test]
async fn large_delta_is_split_with_removals_in_the_last_part() {
    let h = Harness::start_with(small_budget()).await;
    put(&h.store, &[("old", "one"), ("kept", "one")]);
    let mut stream = h.raw().await;
    stream.subscribe(TYPE_A, &[], &none()).await;
    h.recv_acked(&mut stream).await;

    // One batch: many upserts and a removal.
    let upserts = filler(10, "v1")
        .into_iter()
        .map(|(name, content)| (name, body(TYPE_A, &content)))
        .collect();
    h.store
        .apply(TYPE_A, upserts, vec!["old".to_string()])
        .unwrap();
    let parts = stream.recv_push().await;
    assert_eq!(parts.len(), 3);
    let union = check_parts(&parts, h.store.revision());
    let mut expected = store_versions(&h.store, TYPE_A);
    expected.remove("kept");
    assert_eq!(union, expected);
    assert_eq!(removed(parts.last().unwrap()), ["old"]);

    // The parts' ACKs all count, even when they arrive after the last part.
    for part in &parts {
        stream.ack(part).await;
    }
    h.stats_until(|s| s.acks == 1 + parts.len() as u64).await;

    // Once a newer push is out, an ACK of an older part is stale.
    put(&h.store, &[("kept", "two")]);
    let newer = stream.recv().await;
    stream.ack(&parts[0]).await;
    h.stats_until(|s| s.stale_nonces == 1).await;
    stream.ack(&newer).await;
    let stats = h.stats_until(|s| s.acks == 2 + parts.len() as u64).await;
    assert_eq!(stats.nacks, 0);
}

use std::net::IpAddr;
use std::time::Duration;

use proto::security as sec;
use proto::workload as wl;

use super::*;
use crate::metrics::Reporter;

const UID: &str = "Kubernetes//Pod/b/b";

fn state_with(policies: Vec<sec::Authorization>) -> State {
    let workload = wl::Workload {
        uid: UID.into(),
        name: "b".into(),
        namespace: "b".into(),
        service_account: "b".into(),
        addresses: vec![vec![10, 0, 0, 2]],
        ..wl::Workload::default()
    };
    let mut state = State::default();
    let address = wl::Address {
        r#type: Some(wl::address::Type::Workload(workload)),
    };
    assert!(
        state
            .apply_addresses(vec![(UID.into(), address)], &[])
            .is_empty()
    );
    let policies = policies
        .into_iter()
        .map(|p| (format!("{}/{}", p.namespace, p.name), p))
        .collect();
    assert!(state.apply_policies(policies, &[]).is_empty());
    state
}

/// DENY everything from namespace `a`.
fn deny_from_a() -> sec::Authorization {
    sec::Authorization {
        name: "deny-a".into(),
        namespace: "b".into(),
        scope: sec::Scope::Namespace as i32,
        action: sec::Action::Deny as i32,
        groups: vec![sec::Group {
            rules: vec![sec::Rules {
                matches: vec![sec::Match {
                    namespaces: vec![sec::StringMatch {
                        match_type: Some(sec::string_match::MatchType::Exact("a".into())),
                    }],
                    ..sec::Match::default()
                }],
            }],
        }],
        dry_run: false,
    }
}

fn info(src: &str) -> ConnectionInfo {
    ConnectionInfo {
        id: 0,
        direction: Direction::Inbound,
        protocol: Protocol::Hbone,
        src_addr: format!("{src}:40000").parse().unwrap(),
        src_identity: None,
        src_workload: None,
        dst_addr: Some("10.0.0.2:8080".parse().unwrap()),
        dst_workload: Some("b".into()),
        dst_identity: None,
        dst_service: None,
        started: SystemTime::now(),
    }
}

fn check_from(ns: &str, src: &str) -> PolicyCheck {
    let identity = Identity::new("cluster.local", ns, "default").unwrap();
    let src: IpAddr = src.parse().unwrap();
    PolicyCheck {
        workload_uid: UID.into(),
        conn: Connection::new(src, Some(identity), "10.0.0.2".parse().unwrap(), 8080),
    }
}

fn labels() -> ConnectionLabels {
    ConnectionLabels::new(Reporter::Destination, None, None, None, None, true)
}

#[tokio::test]
async fn a_policy_change_closes_only_the_connections_it_denies() {
    let metrics = Arc::new(Metrics::default());
    let tracker = ConnectionTracker::new(metrics.clone());
    let from_a = tracker.track(
        info("10.0.0.1"),
        labels(),
        Some(check_from("a", "10.0.0.1")),
    );
    let from_c = tracker.track(
        info("10.0.0.3"),
        labels(),
        Some(check_from("c", "10.0.0.3")),
    );
    // Outbound connections carry no check and are never revoked.
    let outbound = tracker.track(info("10.0.0.2"), labels(), None);
    assert_eq!(tracker.count(), 3);
    assert_eq!(
        tracker.list().iter().map(|c| c.id).collect::<Vec<_>>(),
        [from_a.id(), from_c.id(), outbound.id()]
    );

    // Before the change everything is allowed: nothing closes.
    assert_eq!(tracker.revalidate(&state_with(vec![])), 0);
    assert_eq!(tracker.revalidate(&state_with(vec![deny_from_a()])), 1);
    // Revoking twice closes once.
    assert_eq!(tracker.revalidate(&state_with(vec![deny_from_a()])), 0);

    let pipe_a = tokio::spawn(from_a.pipe(std::future::pending()));
    let error = pipe_a.await.unwrap().unwrap_err();
    assert!(
        matches!(&error, PipeError::Revoked(reason) if reason.contains("b/deny-a")),
        "{error}"
    );
    // C's connection is still open: its pipe has not ended.
    let pipe_c = tokio::spawn(from_c.pipe(std::future::pending()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pipe_c.is_finished());
    assert_eq!(tracker.count(), 2);

    assert_eq!(tracker.close_all("shutting down"), 2);
    let error = pipe_c.await.unwrap().unwrap_err();
    assert!(
        matches!(&error, PipeError::Revoked(r) if r == "shutting down"),
        "{error}"
    );
    drop(outbound);
    tokio::time::timeout(Duration::from_secs(1), tracker.idle())
        .await
        .unwrap();
    assert_eq!(metrics.connections_opened.get_or_create(&labels()).get(), 3);
    assert_eq!(metrics.connections_closed.get_or_create(&labels()).get(), 3);
}

#[tokio::test]
async fn a_connection_whose_workload_left_is_closed_and_bytes_are_counted() {
    let metrics = Arc::new(Metrics::default());
    let tracker = ConnectionTracker::new(metrics.clone());
    let done = tracker.track(
        info("10.0.0.1"),
        labels(),
        Some(check_from("a", "10.0.0.1")),
    );
    let transferred = done
        .pipe(async {
            Ok(Transferred {
                a_to_b: 5,
                b_to_a: 7,
            })
        })
        .await
        .unwrap();
    assert_eq!(transferred.a_to_b, 5);
    assert_eq!(metrics.sent_bytes.get_or_create(&labels()).get(), 5);
    assert_eq!(metrics.received_bytes.get_or_create(&labels()).get(), 7);
    assert_eq!(tracker.count(), 0);

    let _open = tracker.track(
        info("10.0.0.1"),
        labels(),
        Some(check_from("a", "10.0.0.1")),
    );
    assert_eq!(tracker.revalidate(&State::default()), 1);
}

#[test]
fn the_listing_uses_the_admin_field_names() {
    let tracker = ConnectionTracker::new(Arc::new(Metrics::default()));
    let _tracked = tracker.track(info("10.0.0.1"), labels(), None);
    let json = serde_json::to_value(tracker.list()).unwrap();
    let entry = &json[0];
    assert_eq!(entry["direction"], "inbound");
    assert_eq!(entry["protocol"], "HBONE");
    assert_eq!(entry["src_addr"], "10.0.0.1:40000");
    assert_eq!(entry["src_identity"], serde_json::Value::Null);
    assert_eq!(entry["dst_addr"], "10.0.0.2:8080");
    assert!(entry["started"].as_str().unwrap().ends_with('Z'), "{entry}");
}

//! The mesh in one process: istiod-lite and two ztunnels (node A serving
//! pods `a` and `c`, node B serving `b`), in explicit mode on loopback.
//! Clients go through their pod's SOCKS5 listener, which takes the same
//! outbound path as captured traffic; capture itself is proved in network
//! namespaces (`tests/capture.rs`, `tests/netns_node.rs`).
//!
//! Every policy has its positive and its negative case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node_support;
mod support;

use std::time::Duration;

use node_support::*;
use support::{access_events, capture_access_log, echo_app, field, socks_connect, wait_for_events};
use ztunnel::app::App;

const NOT_ALLOWED: u8 = 2;

/// istiod-lite with the mesh of `mesh_yaml(net)` plus `extra`, both
/// ztunnels ready, and echo apps on every pod at 8080 and 9090.
async fn mesh(net: u8, extra: &str) -> (ControlPlane, App, App) {
    mesh_with(net, extra, &[]).await
}

/// As `mesh`, with extra flags for node B's ztunnel.
async fn mesh_with(net: u8, extra: &str, b_flags: &[&str]) -> (ControlPlane, App, App) {
    capture_access_log();
    let plane = ControlPlane::start().await;
    plane.apply(&format!("{}{extra}", mesh_yaml(net))).await;
    let node_a = plane.ztunnel(NODE_A, &[]).await;
    let node_b = plane.ztunnel(NODE_B, b_flags).await;
    ready(&node_a, 3).await;
    ready(&node_b, 3).await;
    for host in [10, 20, 30] {
        for port in [8080, 9090] {
            echo_app(std::net::SocketAddr::new(pod_ip(net, host), port)).await;
        }
    }
    (plane, node_a, node_b)
}

fn socks(net: u8, host: u8) -> std::net::SocketAddr {
    std::net::SocketAddr::new(pod_ip(net, host), 15080)
}

fn app(net: u8, host: u8, port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::new(pod_ip(net, host), port)
}

#[tokio::test]
async fn a_reaches_b_through_hbone_and_b_logs_a_identity() {
    let net = 1;
    let (_plane, node_a, node_b) = mesh(net, "").await;
    let mut tcp = socks_connect(socks(net, 10), app(net, 20, 8080))
        .await
        .unwrap();
    assert_eq!(echo(&mut tcp, b"hello b").await.unwrap(), b"hello b");

    // While open, both ztunnels list it, with the identities proven.
    let (status, body) = http_get(node_b.admin_addr(), "/connections").await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let inbound = &listed.as_array().unwrap()[0];
    assert_eq!(inbound["direction"], "inbound");
    assert_eq!(inbound["protocol"], "HBONE");
    assert_eq!(inbound["src_identity"], "spiffe://cluster.local/ns/a/sa/a");
    assert_eq!(inbound["dst_workload"], "b");
    assert_eq!(
        node_a.connections().list()[0].direction,
        ztunnel::connections::Direction::Outbound
    );
    drop(tcp);

    let b_ip = pod_ip(net, 20).to_string();
    let events = wait_for_events(1, |e| {
        field(e, "direction") == "inbound" && field(e, "dst.addr").starts_with(&b_ip)
    })
    .await;
    assert_eq!(
        field(&events[0], "src.identity"),
        "spiffe://cluster.local/ns/a/sa/a"
    );
    assert_eq!(field(&events[0], "src.workload"), "a");
    assert_eq!(
        field(&events[0], "dst.identity"),
        "spiffe://cluster.local/ns/b/sa/b"
    );

    // Istio's metrics, reported by the destination with A's principal.
    let (status, metrics) = http_get(node_b.stats_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let opened = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"destination\"")
        })
        .unwrap_or_else(|| panic!("no inbound connection counted:\n{metrics}"));
    assert!(
        opened.contains("source_principal=\"spiffe://cluster.local/ns/a/sa/a\""),
        "{opened}"
    );
    assert!(
        opened.contains("connection_security_policy=\"mutual_tls\""),
        "{opened}"
    );
    assert!(opened.ends_with(" 1"), "{opened}");

    // Ready, with the pods and certificates on /config_dump.
    assert_eq!(
        http_get(node_a.readiness_addr(), "/healthz/ready").await.0,
        200
    );
    let (_, dump) = http_get(node_a.admin_addr(), "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["node"], NODE_A);
    assert_eq!(dump["control_plane"]["connected"], true);
    let pods: Vec<&str> = dump["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(pods, ["a", "c"]);
    assert!(dump["pods"][0]["state"] == "captured", "{dump}");
    let certs = dump["certificates"].as_array().unwrap();
    assert!(
        certs
            .iter()
            .any(|c| c["identity"] == "spiffe://cluster.local/ns/a/sa/a"
                && c["state"] == "available"),
        "{certs:?}"
    );
}

#[tokio::test]
async fn a_may_call_b_and_b_may_not_call_a() {
    let net = 2;
    let policies = format!(
        "{}{}",
        policy(
            "b",
            "allow-a",
            "ALLOW",
            "  - from:\n    - source:\n        principals: [cluster.local/ns/a/sa/a]"
        ),
        policy(
            "a",
            "allow-c",
            "ALLOW",
            "  - from:\n    - source:\n        namespaces: [c]"
        ),
    );
    let (_plane, _node_a, _node_b) = mesh(net, &policies).await;
    let mut tcp = socks_connect(socks(net, 10), app(net, 20, 8080))
        .await
        .unwrap();
    assert_eq!(echo(&mut tcp, b"a to b").await.unwrap(), b"a to b");
    // B to A: A's ztunnel answers 401, B's client hears "not allowed".
    assert_eq!(
        socks_connect(socks(net, 20), app(net, 10, 8080))
            .await
            .unwrap_err(),
        NOT_ALLOWED
    );
    // C (same node as A) is allowed into A: the policy, not the node, decides.
    let mut tcp = socks_connect(socks(net, 30), app(net, 10, 8080))
        .await
        .unwrap();
    assert_eq!(echo(&mut tcp, b"c to a").await.unwrap(), b"c to a");
    let a_ip = pod_ip(net, 10).to_string();
    let denied = wait_for_events(1, |e| {
        field(e, "direction") == "inbound"
            && field(e, "dst.addr").starts_with(&a_ip)
            && field(e, "error").contains("no ALLOW policy matched")
    })
    .await;
    assert_eq!(
        field(&denied[0], "src.identity"),
        "spiffe://cluster.local/ns/b/sa/b"
    );
}

#[tokio::test]
async fn a_namespace_deny_and_a_port_allow() {
    let net = 3;
    let policies = format!(
        "{}{}",
        policy(
            "b",
            "deny-c",
            "DENY",
            "  - from:\n    - source:\n        namespaces: [c]"
        ),
        policy(
            "b",
            "only-8080",
            "ALLOW",
            "  - to:\n    - operation:\n        ports: [\"8080\"]"
        ),
    );
    let (_plane, _node_a, _node_b) = mesh(net, &policies).await;
    // A: allowed on 8080, not on 9090.
    let mut tcp = socks_connect(socks(net, 10), app(net, 20, 8080))
        .await
        .unwrap();
    assert_eq!(echo(&mut tcp, b"port ok").await.unwrap(), b"port ok");
    assert_eq!(
        socks_connect(socks(net, 10), app(net, 20, 9090))
            .await
            .unwrap_err(),
        NOT_ALLOWED
    );
    // C: denied by namespace even on the allowed port.
    assert_eq!(
        socks_connect(socks(net, 30), app(net, 20, 8080))
            .await
            .unwrap_err(),
        NOT_ALLOWED
    );
    let b_ip = pod_ip(net, 20).to_string();
    wait_for_events(1, |e| {
        field(e, "dst.addr").starts_with(&b_ip)
            && field(e, "error").contains("denied by DENY policy b/deny-c")
    })
    .await;
}

#[tokio::test]
async fn a_policy_change_closes_a_connection_no_longer_allowed() {
    let net = 4;
    let (plane, _node_a, node_b) = mesh(net, "").await;
    let mut from_a = socks_connect(socks(net, 10), app(net, 20, 8080))
        .await
        .unwrap();
    let mut from_c = socks_connect(socks(net, 30), app(net, 20, 8080))
        .await
        .unwrap();
    assert_eq!(echo(&mut from_a, b"before").await.unwrap(), b"before");
    assert_eq!(echo(&mut from_c, b"before").await.unwrap(), b"before");
    assert_eq!(node_b.connections().count(), 2);

    plane
        .apply(&policy(
            "b",
            "deny-a",
            "DENY",
            "  - from:\n    - source:\n        namespaces: [a]",
        ))
        .await;
    // A's connection is closed by B's ztunnel; C's keeps working.
    support::assert_closed(&mut from_a).await;
    assert_eq!(echo(&mut from_c, b"after").await.unwrap(), b"after");
    eventually("one connection left on B", || {
        let count = node_b.connections().count();
        async move { count == 1 }
    })
    .await;
    let b_ip = pod_ip(net, 20).to_string();
    wait_for_events(1, |e| {
        field(e, "dst.addr").starts_with(&b_ip)
            && field(e, "error").contains("policy no longer allows")
    })
    .await;
}

#[tokio::test]
async fn static_stability_without_the_control_plane() {
    let net = 5;
    let (mut plane, node_a, _node_b) = mesh(net, "").await;
    let mut open = socks_connect(socks(net, 10), app(net, 20, 8080))
        .await
        .unwrap();
    assert_eq!(echo(&mut open, b"one").await.unwrap(), b"one");

    plane.stop().await;
    let status = node_a.xds_status();
    eventually("node A noticed the control plane is gone", || {
        let connected = status.borrow().connected;
        async move { !connected }
    })
    .await;
    // The open connection and new ones keep working on the held config.
    assert_eq!(echo(&mut open, b"two").await.unwrap(), b"two");
    let mut new = socks_connect(socks(net, 10), app(net, 20, 8080))
        .await
        .unwrap();
    assert_eq!(echo(&mut new, b"three").await.unwrap(), b"three");
    assert_eq!(
        http_get(node_a.readiness_addr(), "/healthz/ready").await.0,
        200
    );

    // Back, with a DENY: changes flow again.
    plane.restart().await;
    let deny = policy(
        "b",
        "deny-a",
        "DENY",
        "  - from:\n    - source:\n        namespaces: [a]",
    );
    plane.apply(&format!("{}{deny}", mesh_yaml(net))).await;
    eventually("node A reconnected", || {
        let connected = status.borrow().connected;
        async move { connected }
    })
    .await;
    eventually("the DENY refuses new connections", || async {
        socks_connect(socks(net, 10), app(net, 20, 8080))
            .await
            .is_err()
    })
    .await;
}

#[tokio::test]
async fn drain_lets_open_connections_finish_until_the_deadline() {
    let net = 6;
    let (_plane, _node_a, node_b) = mesh_with(net, "", &["--drain-deadline", "1500ms"]).await;
    let mut open = socks_connect(socks(net, 10), app(net, 20, 8080))
        .await
        .unwrap();
    assert_eq!(echo(&mut open, b"before").await.unwrap(), b"before");

    let started = tokio::time::Instant::now();
    let drained = tokio::spawn(node_b.drain());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // New connections are refused: B's HBONE listener is closed.
    assert!(
        socks_connect(socks(net, 10), app(net, 20, 8080))
            .await
            .is_err()
    );
    // The open one still works inside the deadline...
    assert_eq!(echo(&mut open, b"during").await.unwrap(), b"during");
    // ...and is closed at it.
    support::assert_closed(&mut open).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
    tokio::time::timeout(WAIT, drained).await.unwrap().unwrap();
    assert!(!access_events(|e| field(e, "error").contains("shutting down")).is_empty());
}

#[tokio::test]
async fn a_resource_that_does_not_convert_is_nacked_and_the_rest_applied() {
    let net = 7;
    // A service account that is no SPIFFE path segment: istiod-lite's file
    // source passes it on, ztunnel cannot build an identity from it.
    let odd = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: odd
  namespace: a
spec:
  nodeName: {NODE_B}
  serviceAccountName: not a valid name
  containers:
  - name: app
    image: app
status:
  phase: Running
  podIP: {}
---
",
        pod_ip(net, 40)
    );
    let (_plane, node_a, _node_b) = mesh(net, &odd).await;
    let status = node_a.xds_status();
    eventually("a NACK", || {
        let nacks = status.borrow().nacks;
        async move { nacks >= 1 }
    })
    .await;
    let state = node_a.state().snapshot();
    assert!(state.workload_by_uid("Kubernetes//Pod/a/odd").is_none());
    for pod in ["a", "b", "c"] {
        let uid = format!("Kubernetes//Pod/{pod}/{pod}");
        assert!(state.workload_by_uid(&uid).is_some(), "{uid} missing");
    }
    let mut tcp = socks_connect(socks(net, 10), app(net, 20, 8080))
        .await
        .unwrap();
    assert_eq!(echo(&mut tcp, b"still fine").await.unwrap(), b"still fine");
    let (_, dump) = http_get(node_a.admin_addr(), "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert!(
        dump["control_plane"]["nacks"].as_u64().unwrap() >= 1,
        "{dump}"
    );
}

#[tokio::test]
async fn meshctl_shows_the_tunnel_status_from_the_admin_api() {
    use meshctl::ztunnel::{AdminClient, Output, View, admin, show};
    let net = 8;
    let (_plane, node_a, _node_b) = mesh(net, "").await;
    let mut open = socks_connect(socks(net, 10), app(net, 20, 8080))
        .await
        .unwrap();
    assert_eq!(echo(&mut open, b"status").await.unwrap(), b"status");
    let client = AdminClient::new(node_a.admin_addr().to_string(), admin::DEFAULT_TIMEOUT);

    let status = show(View::Status, Output::Table, &client).await.unwrap();
    for expected in [
        NODE_A,
        "connected to https://127.0.0.1:",
        "2 captured, 0 failed",
        "2 of 2 valid",
        "1 open",
    ] {
        assert!(
            status.contains(expected),
            "{expected:?} missing in\n{status}"
        );
    }
    let workloads = show(View::Workloads, Output::Table, &client).await.unwrap();
    for pod in ["a", "b", "c"] {
        let ip = pod_ip(
            net,
            match pod {
                "a" => 10,
                "b" => 20,
                _ => 30,
            },
        )
        .to_string();
        assert!(
            workloads.lines().any(|l| l.contains(&ip)),
            "{pod} missing in\n{workloads}"
        );
    }
    let connections = show(View::Connections, Output::Json, &client)
        .await
        .unwrap();
    let connections: serde_json::Value = serde_json::from_str(&connections).unwrap();
    assert_eq!(connections[0]["direction"], "outbound");
    assert_eq!(
        connections[0]["dst_identity"],
        "spiffe://cluster.local/ns/b/sa/b"
    );
    let certs = show(View::Certs, Output::Yaml, &client).await.unwrap();
    assert!(
        certs.contains("spiffe://cluster.local/ns/a/sa/a"),
        "{certs}"
    );
    assert!(certs.contains("available"), "{certs}");
}

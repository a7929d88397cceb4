//! The whole ztunnel with real capture: two pod network namespaces joined
//! by a veth pair, istiod-lite in this process, and one ztunnel `App` per
//! "node" in netns mode. The apps know nothing of the mesh: a plain
//! connect from pod A to pod B's address is captured, tunnelled, checked
//! and delivered. Needs root (namespaces, veth, nftables), as CI has;
//! without it the tests fail, they do not skip.
//!
//! Each ztunnel looks for pods in a scratch directory holding links to this
//! test's namespaces only, so tests elsewhere on the machine (with their
//! own namespaces) cannot be mistaken for our pods.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns_support;
mod node_support;
mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use netns_support::Pods;
use node_support::*;
use support::{capture_access_log, field, wait_for_events};
use tempfile::TempDir;
use ztunnel::app::App;
use ztunnel::capture::PodNetns;

/// An echo server inside pod B on 0.0.0.0:8080, on its own thread.
fn echo_in(netns: &PodNetns) {
    let listener = netns.bind(SocketAddr::from(([0, 0, 0, 0], 8080))).unwrap();
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        while let Ok((mut tcp, _)) = listener.accept() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = tcp.read(&mut buf) {
                    if n == 0 || tcp.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// The app in pod A: a plain connect and one echo round trip, on a thread
/// (blocking sockets), so the runtime keeps serving the proxies.
async fn call_from(netns: &PodNetns, dst: SocketAddr, payload: &'static [u8]) -> Vec<u8> {
    try_call_from(netns, dst, payload)
        .await
        .unwrap_or_else(|e| panic!("pod A's call to {dst} failed: {e}"))
}

async fn try_call_from(
    netns: &PodNetns,
    dst: SocketAddr,
    payload: &'static [u8],
) -> std::io::Result<Vec<u8>> {
    let netns = netns.clone();
    tokio::task::spawn_blocking(move || {
        let mut tcp = netns
            .run(|| TcpStream::connect_timeout(&dst, WAIT))
            .map_err(std::io::Error::other)??;
        tcp.set_read_timeout(Some(WAIT))?;
        tcp.write_all(payload)?;
        let mut back = vec![0u8; payload.len()];
        tcp.read_exact(&mut back)?;
        Ok(back)
    })
    .await
    .unwrap()
}

async fn ztunnel(plane: &ControlPlane, node: &str, dir: &TempDir) -> App {
    let dir = dir.path().display().to_string();
    plane
        .ztunnel(node, &["--capture", "netns", "--netns-dir", &dir])
        .await
}

#[tokio::test]
async fn captured_traffic_is_tunnelled_and_capture_follows_enrollment() {
    capture_access_log();
    let pods = Pods::new();
    echo_in(&pods.b);
    let plane = ControlPlane::start().await;
    let mesh = pods_yaml(&[
        ("a", NODE_A, IpAddr::V4(pods.a_ip)),
        ("b", NODE_B, IpAddr::V4(pods.b_ip)),
    ]);
    plane.apply(&mesh).await;
    let (dir_a, dir_b) = (pods.netns_dir(&pods.a_name), pods.netns_dir(&pods.b_name));
    let node_a = ztunnel(&plane, NODE_A, &dir_a).await;
    let _node_b = ztunnel(&plane, NODE_B, &dir_b).await;
    ready(&node_a, 2).await;
    ready(&_node_b, 2).await;
    let installed = pods
        .rules(&pods.a_name)
        .expect("pod A has the capture rules");
    assert!(
        pods.rules(&pods.b_name).is_some(),
        "pod B has the capture rules"
    );

    // A plain app connect from A to B: captured, tunnelled, delivered.
    let b_app = SocketAddr::from((pods.b_ip, 8080));
    assert_eq!(call_from(&pods.a, b_app, b"marker-1").await, b"marker-1");
    let b_addr = format!("{}:8080", pods.b_ip);
    let events = wait_for_events(1, |e| {
        field(e, "direction") == "inbound" && field(e, "dst.addr") == b_addr
    })
    .await;
    assert_eq!(
        field(&events[0], "src.identity"),
        "spiffe://cluster.local/ns/a/sa/a"
    );
    assert_eq!(field(&events[0], "dst.hbone_addr"), b_addr);

    // A restarted ztunnel takes over its pods again: the same one table.
    drop(node_a);
    let node_a = ztunnel(&plane, NODE_A, &dir_a).await;
    ready(&node_a, 2).await;
    assert_eq!(
        pods.rules(&pods.a_name).as_deref(),
        Some(installed.as_str())
    );
    assert_eq!(
        installed.matches("redirect to :15001").count(),
        1,
        "{installed}"
    );
    assert_eq!(call_from(&pods.a, b_app, b"marker-2").await, b"marker-2");

    // Pod A leaves the mesh: its rules go; it now reaches B in plaintext,
    // which B's ztunnel admits (PERMISSIVE) without an identity.
    let opted_out = mesh.replacen(
        "    app: a\n",
        "    app: a\n    istio.io/dataplane-mode: none\n",
        1,
    );
    plane.apply(&opted_out).await;
    eventually("pod A's rules removed", || {
        let gone = pods.rules(&pods.a_name).is_none();
        async move { gone }
    })
    .await;
    assert!(node_a.pods().list().is_empty());
    assert_eq!(call_from(&pods.a, b_app, b"marker-3").await, b"marker-3");
    let plaintext = wait_for_events(1, |e| {
        field(e, "direction") == "inbound"
            && field(e, "dst.addr") == b_addr
            && !e.contains_key("src.identity")
    })
    .await;
    assert!(field(&plaintext[0], "src.addr").starts_with(&pods.a_ip.to_string()));

    // STRICT in B's namespace: the same plaintext call is refused.
    let strict = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: b
spec:
  mtls:
    mode: STRICT
";
    plane.apply(&format!("{opted_out}---\n{strict}")).await;
    eventually("plaintext into B refused under STRICT", || async {
        try_call_from(&pods.a, b_app, b"marker-4").await.is_err()
    })
    .await;
    wait_for_events(1, |e| {
        field(e, "direction") == "inbound"
            && field(e, "dst.addr") == b_addr
            && field(e, "error").contains("policy")
    })
    .await;
}

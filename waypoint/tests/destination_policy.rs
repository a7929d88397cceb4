//! The destination's ztunnel lets the destination's waypoint in: an L4
//! ALLOW policy that names only the original client still admits the
//! traffic the waypoint forwards for it (positive), while any other
//! identity, and the waypoint's identity from another address, is still
//! subject to that policy (negative).

mod support;

use std::net::SocketAddr;

use support::{Mesh, get1, hbone_as, id, ip, policy};

fn only_a() -> String {
    policy(
        "b",
        "only-a",
        "ALLOW",
        "  - from:\n    - source:\n        principals: [\"cluster.local/ns/a/sa/a\"]\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waypoint_is_let_in_to_the_workloads_behind_it() {
    let mesh = Mesh::start(10, &only_a()).await;
    let mut client = mesh.http1().await;
    let (status, _, body) = get1(&mut client, "/through-the-waypoint", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "v1 GET /through-the-waypoint HTTP/1.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_identities_are_still_subject_to_the_destinations_policy() {
    let net = 11;
    let mesh = Mesh::start(net, &only_a()).await;
    let app = SocketAddr::new(ip(net, 20), 8080);
    let intruder = hbone_as(
        &mesh.plane,
        ("b", "intruder"),
        ip(net, 20),
        id("b", "echo"),
        app,
    )
    .await;
    assert!(
        matches!(intruder, Err(hbone::Error::Denied { .. })),
        "{intruder:?}"
    );
    // The waypoint's identity, but not from the waypoint's address (the
    // test dials from 127.0.0.1): not the waypoint.
    let impostor = hbone_as(
        &mesh.plane,
        ("b", "waypoint"),
        ip(net, 20),
        id("b", "echo"),
        app,
    )
    .await;
    assert!(
        matches!(impostor, Err(hbone::Error::Denied { .. })),
        "{impostor:?}"
    );
    // The original client's identity is what the policy names: allowed.
    let client = hbone_as(&mesh.plane, ("a", "a"), ip(net, 20), id("b", "echo"), app).await;
    assert!(client.is_ok(), "{client:?}");
}

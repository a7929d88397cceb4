//! Local-mesh scenario of the `istio.io/use-waypoint` label (issue 6): the
//! namespace's service traffic goes through the waypoint while the label
//! is on, straight to the service once it is removed (the waypoint still
//! running), and through it again when it is put back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use mesh_support::waypoint::{deploy_waypoint, logged, request, topology};
use std::time::Duration;

use mesh_support::{Mesh, can_run, eventually, text};

/// Whether the waypoint's access log has a request for `path`.
fn through_waypoint(mesh: &Mesh, path: &str) -> bool {
    !logged(mesh, path).is_empty()
}

/// Waits for the waypoint to log the request for `path` (its access-log
/// event is written as the response ends, so just after the client has
/// it).
fn wait_through_waypoint(mesh: &Mesh, path: &str) {
    eventually(
        &format!("the waypoint logs {path}"),
        Duration::from_secs(5),
        || match through_waypoint(mesh, path) {
            true => Ok(()),
            false => Err(mesh.log("ns-b/waypoint")),
        },
    );
}

fn use_waypoint(mesh: &Mesh, args: &[&str]) -> String {
    let mut command = vec!["namespace", "use-waypoint", "ns-b"];
    command.extend_from_slice(args);
    let out = mesh.meshctl(&command);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

#[test]
fn w13_traffic_leaves_the_waypoint_when_the_label_is_removed_and_returns_with_it() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w13"));
    deploy_waypoint(&mesh);
    let (code, _) = request(&mesh, "a", "GET", "http://b.ns-b:8080/labelled", &[]);
    assert_eq!(code, 200);
    wait_through_waypoint(&mesh, "/labelled");

    // `use-waypoint --none` waits until every ztunnel routes around it.
    let out = use_waypoint(&mesh, &["--none"]);
    assert!(out.contains("istio.io/use-waypoint removed"), "{out}");
    assert!(
        !out.contains("note:"),
        "the ztunnels followed in time: {out}"
    );
    for _ in 0..5 {
        let (code, _) = request(&mesh, "a", "GET", "http://b.ns-b:8080/unlabelled", &[]);
        assert_eq!(code, 200, "b answers without the waypoint");
    }
    // Long enough for an access-log event of those requests to be written.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !through_waypoint(&mesh, "/unlabelled"),
        "no request went through the waypoint without the label"
    );
    let list = text(&mesh.meshctl(&["waypoint", "list"]));
    let row = list.lines().find(|l| l.starts_with("ns-b")).unwrap();
    assert!(
        row.contains("running") && row.trim_end().ends_with('-'),
        "still running, used by no namespace: {list}"
    );

    let out = use_waypoint(&mesh, &["waypoint"]);
    assert!(out.contains("istio.io/use-waypoint=waypoint"), "{out}");
    let (code, _) = request(&mesh, "a", "GET", "http://b.ns-b:8080/relabelled", &[]);
    assert_eq!(code, 200);
    wait_through_waypoint(&mesh, "/relabelled");

    // A waypoint that does not exist is refused, naming how to make it.
    let out = mesh.meshctl(&["namespace", "use-waypoint", "ns-b", "other"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("meshctl waypoint apply -n ns-b --name other"),
        "{}",
        text(&out)
    );
}

//! Local-mesh scenarios for the mesh's behaviour under change, each on its
//! own mesh brought up with `meshctl up`: enrollment flipped live, a
//! Service VIP spreading connections over both nodes, the control plane
//! lost and back, a ztunnel restarted, and certificates rotating under
//! load. See docs/testing.md for what each proves and how to run one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use mesh_support::{Mesh, can_run, eventually, kill, policy, text, topology};

fn has_capture(mesh: &Mesh, pod: &str) -> bool {
    mesh.ruleset(pod).contains("table inet ztunnel")
}

/// Inbound connections b's ztunnel has logged from `src` (an identity).
fn logged_from(mesh: &Mesh, identity: &str) -> usize {
    mesh.log("ztunnel/node-b")
        .lines()
        .filter(|l| {
            l.contains("connection complete") && l.contains(&format!("src.identity={identity}"))
        })
        .count()
}

/// Scenario 5: a namespace leaves the mesh and joins again without
/// restarts; traffic flows before, between and after, tunnelled exactly
/// while enrolled.
#[test]
fn s05_enrollment_flips_live() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-s05", ""));
    let a = "spiffe://cluster.local/ns/ns-a/sa/a";
    let pid_b = mesh.pid("pod/ns-b/b");
    assert!(has_capture(&mesh, "b"));
    mesh.curl("a", "http://b.ns-b.pod:8080/").unwrap();
    eventually("tunnelled while enrolled", Duration::from_secs(10), || {
        (logged_from(&mesh, a) == 1)
            .then_some(())
            .ok_or_else(|| "not logged".to_owned())
    });

    let out = mesh.meshctl(&["namespace", "disable", "ns-b"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually("b's capture is removed", Duration::from_secs(15), || {
        (!has_capture(&mesh, "b"))
            .then_some(())
            .ok_or_else(|| "still captured".to_owned())
    });
    mesh.curl("a", "http://b.ns-b.pod:8080/")
        .expect("plaintext to b while it is out of the mesh");
    assert_eq!(
        logged_from(&mesh, a),
        1,
        "nothing tunnelled to b while it is out"
    );

    let out = mesh.meshctl(&["namespace", "enable", "ns-b"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually("b is captured again", Duration::from_secs(15), || {
        has_capture(&mesh, "b")
            .then_some(())
            .ok_or_else(|| "not captured".to_owned())
    });
    eventually("tunnelled again", Duration::from_secs(15), || {
        mesh.curl("a", "http://b.ns-b.pod:8080/")?;
        (logged_from(&mesh, a) >= 2)
            .then_some(())
            .ok_or_else(|| "not logged".to_owned())
    });
    assert_eq!(mesh.pid("pod/ns-b/b"), pid_b, "b was not restarted");
}

/// Scenario 6: connections to a Service VIP spread over its endpoints on
/// both nodes.
#[test]
fn s06_a_vip_spreads_connections_over_both_nodes() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-s06", ""));
    // Ten workers, each its own connection: ten endpoint picks.
    let out = mesh.exec(
        "a",
        &[
            "traffic",
            "http",
            "http://b.ns-b:8080/",
            "-n",
            "20",
            "-c",
            "10",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["succeeded"], 20, "{summary}");
    let servers = summary["servers"].as_object().unwrap();
    assert!(
        servers.contains_key("b"),
        "an endpoint on node-b answered: {summary}"
    );
    assert!(
        servers.contains_key("b2"),
        "an endpoint on node-a answered: {summary}"
    );
}

/// Scenario 7: with istiod-lite killed during traffic, no connection
/// fails and new ones are still authorized with the cached policy; once
/// it is back, a policy change takes effect.
#[test]
fn s07_traffic_survives_losing_the_control_plane() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-s07", ""));
    let only_a = "  - from: [{source: {principals: [cluster.local/ns/ns-a/sa/a]}}]\n";
    mesh.apply(
        "b-from-a",
        &policy("ns-b", "b-from-a", "b", "ALLOW", only_a),
    );
    eventually(
        "the policy is in force",
        Duration::from_secs(10),
        || match mesh.curl("client", "http://b.ns-b.pod:8080/") {
            Err(_) => Ok(()),
            Ok(body) => Err(body),
        },
    );
    let load = mesh.spawn(
        "a",
        &[
            "traffic",
            "http",
            "http://b.ns-b.pod:8080/?delay=20ms",
            "-n",
            "300",
            "-c",
            "2",
            "-o",
            "json",
        ],
    );
    let open = mesh.spawn(
        "a",
        &[
            "curl",
            "-sS",
            "-f",
            "-m",
            "20",
            "http://b.ns-b.pod:8080/?delay=4s",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    kill(mesh.pid("istiod-lite"), "-KILL");

    for i in 0..5 {
        mesh.curl("a", &format!("http://b.ns-b.pod:8080/new-{i}"))
            .expect("new connections while istiod-lite is down");
    }
    assert!(
        mesh.curl("client", "http://b.ns-b.pod:8080/").is_err(),
        "the cached policy still denies"
    );
    let load = load.wait_with_output().unwrap();
    assert!(load.status.success(), "no request failed: {}", text(&load));
    let summary: serde_json::Value = serde_json::from_slice(&load.stdout).unwrap();
    assert_eq!(summary["errors"], 0, "{summary}");
    let open = open.wait_with_output().unwrap();
    assert!(
        open.status.success(),
        "the open connection finished: {}",
        text(&open)
    );

    let out = mesh.meshctl(&["restart", "istiod-lite"]);
    assert!(out.status.success(), "{}", text(&out));
    let deny = "  - from: [{source: {namespaces: [ns-a]}}]\n";
    mesh.apply("deny-ns-a", &policy("ns-b", "deny-ns-a", "b", "DENY", deny));
    eventually(
        "the new DENY takes effect",
        Duration::from_secs(30),
        || match mesh.curl("a", "http://b.ns-b.pod:8080/") {
            Err(_) => Ok(()),
            Ok(body) => Err(body),
        },
    );
}

/// Scenario 8: a restarted ztunnel resumes capture and traffic, and its
/// rules are exactly those it had: none duplicated.
#[test]
fn s08_a_restarted_ztunnel_resumes_without_duplicating_rules() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-s08", ""));
    mesh.curl("a", "http://b.ns-b.pod:8080/").unwrap();
    let before = mesh.ruleset("a");
    assert_eq!(before.matches("table inet ztunnel").count(), 1, "{before}");

    let out = mesh.meshctl(&["restart", "ztunnel/node-a"]);
    assert!(out.status.success(), "{}", text(&out));
    mesh.wait_ztunnels_ready();
    eventually("traffic resumes", Duration::from_secs(20), || {
        mesh.curl("a", "http://b.ns-b.pod:8080/")
    });
    let after = mesh.ruleset("a");
    assert_eq!(after, before, "the same rules, once");
    let connections = mesh.ztunnel_json("node-a", "workloads");
    assert!(
        connections.as_array().is_some_and(|w| !w.is_empty()),
        "config came back"
    );
    let log = mesh.log("ztunnel/node-b");
    assert!(
        log.contains("src.identity=spiffe://cluster.local/ns/ns-a/sa/a"),
        "still tunnelled"
    );
}

/// Scenario 9: with certificates living 4 s, load across many rotations
/// sees no failed request.
#[test]
fn s09_certificates_rotate_under_load_without_failures() {
    if !can_run() {
        return;
    }
    let extra = "ztunnel:\n  args: [--secret-ttl, 4s, --allow-short-ttl]\n";
    let mesh = Mesh::up(&topology("e2e-s09", extra));
    let serials = |node: &str, identity: &str| -> Option<String> {
        let certs = mesh.ztunnel_json(node, "certs");
        certs
            .as_array()?
            .iter()
            .find(|c| c["identity"] == identity)
            .and_then(|c| c["serial"].as_str().map(str::to_owned))
    };
    let (mut seen_a, mut seen_b) = (BTreeSet::new(), BTreeSet::new());
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_secs(16) {
        // New connections every round: each one needs a certificate.
        let out = mesh.exec(
            "a",
            &[
                "traffic",
                "http",
                "http://b.ns-b.pod:8080/",
                "-n",
                "40",
                "-c",
                "4",
                "-o",
                "json",
            ],
        );
        assert!(
            out.status.success(),
            "no request failed across rotations: {}",
            text(&out)
        );
        requests += 40;
        seen_a.extend(serials("node-a", "spiffe://cluster.local/ns/ns-a/sa/a"));
        seen_b.extend(serials("node-b", "spiffe://cluster.local/ns/ns-b/sa/b"));
    }
    eprintln!(
        "{requests} requests, a's certificates: {}, b's: {}",
        seen_a.len(),
        seen_b.len()
    );
    assert!(
        seen_a.len() >= 5,
        "a's certificate rotated many times: {seen_a:?}"
    );
    assert!(
        seen_b.len() >= 5,
        "b's certificate rotated many times: {seen_b:?}"
    );
}

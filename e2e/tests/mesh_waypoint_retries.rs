//! Local-mesh scenarios of the waypoint's retries (issue 6): a rule's
//! `retry` recovers the failures of a broken endpoint, and the retry
//! budget keeps a service that fails everything from being sent every
//! retry the rule allows. Each test brings up its own mesh.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use mesh_support::waypoint::{
    deploy_waypoint, logged, route_b, topology, topology_with_broken_v2, traffic, wait_answered_by,
};
use mesh_support::{Mesh, can_run};

/// Retries the rules below allow after a first attempt.
const RETRIES: u64 = 3;

/// The waypoint's budget (waypoint/src/retry.rs): retries within the last
/// 10 s may reach 20% of the requests plus 10 per second of the window.
const BUDGET_RATIO: f64 = 0.2;
const BUDGET_FLOOR_PER_WINDOW: f64 = 100.0;

/// The upstream attempts of each request the waypoint logged for `path`,
/// in the order they completed.
fn attempts_logged(mesh: &Mesh, path: &str) -> Vec<u64> {
    logged(mesh, path)
        .iter()
        .map(|l| {
            let value = l.split("upstream.attempts=").nth(1).unwrap_or_default();
            let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
            digits
                .parse()
                .unwrap_or_else(|_| panic!("no attempts in: {l}"))
        })
        .collect()
}

/// A route on Service b that retries 503s, with a probe rule (header
/// `x-probe: retry`, to b-v1) that tells when it is in force.
fn route_b_with_retries(mesh: &Mesh) {
    route_b(
        mesh,
        "retry",
        &format!(
            r#"
  - matches: [{{headers: [{{name: x-probe, value: retry}}]}}]
    backendRefs: [{{name: b-v1, port: 8080}}]
  - backendRefs: [{{name: b, port: 8080}}]
    retry: {{codes: [503], attempts: {RETRIES}, backoff: 5ms}}
"#
        ),
    );
    wait_answered_by(mesh, "x-probe: retry", "b-v1");
}

#[test]
fn w10_retries_recover_the_failures_of_one_broken_endpoint_of_two() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology_with_broken_v2("e2e-w10"));
    deploy_waypoint(&mesh);

    // Without a retry, b-v2's share of the requests fails: the failure
    // this test recovers from is real.
    let before = traffic(&mesh, "http://b.ns-b:8080/before", 100, 2);
    let failed = before["statuses"]["503"].as_u64().unwrap_or(0);
    assert!(
        (25..=75).contains(&failed),
        "about half of 100 requests should fail without retries: {before}"
    );

    route_b_with_retries(&mesh);
    // 200 requests, about 100 of them needing one retry: within the
    // budget's floor of 100 plus 20% of the 300 requests in the window,
    // so none is refused a retry. (Faster than the floor, the budget would
    // start to refuse retries by design; ejecting the broken endpoint is
    // then outlier detection's job.)
    let summary = traffic(&mesh, "http://b.ns-b:8080/retried", 200, 2);
    let succeeded = summary["succeeded"].as_u64().unwrap_or(0);
    eprintln!("with retries: {summary}");
    assert!(
        succeeded >= 198,
        "at least 99% of 200 requests should succeed: {summary}"
    );
    assert_eq!(summary["servers"]["b-v1"], succeeded, "{summary}");

    // The waypoint did retry: some requests took two attempts, and a
    // retry went to the other endpoint, so none needed more.
    let attempts = attempts_logged(&mesh, "/retried");
    assert_eq!(attempts.len(), 200, "one access-log event per request");
    let retried = attempts.iter().filter(|&&a| a > 1).count();
    assert!(
        (50..=150).contains(&retried),
        "about half the requests need a retry, got {retried}"
    );
    assert!(attempts.iter().all(|&a| a <= 2), "{attempts:?}");
}

#[test]
fn w11_the_retry_budget_stops_retries_when_the_backend_fails_everything() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w11"));
    deploy_waypoint(&mesh);
    route_b_with_retries(&mesh);

    let requests = 300;
    let summary = traffic(&mesh, "http://b.ns-b:8080/down?fail=1", requests, 4);
    eprintln!("failing everything: {summary}");
    assert_eq!(summary["statuses"]["503"], requests, "{summary}");

    let attempts = attempts_logged(&mesh, "/down");
    assert_eq!(attempts.len() as u64, requests, "one event per request");
    let total: u64 = attempts.iter().sum();
    let unbounded = requests * (1 + RETRIES);
    // Within one 10 s window the budget allows 20% of the requests plus
    // 100; a slower run gets 10 more per extra second.
    let elapsed_s = summary["elapsed_ms"].as_f64().unwrap() / 1000.0;
    let extra_seconds = (elapsed_s - 9.0).max(0.0).ceil();
    let allowed_retries =
        BUDGET_RATIO * requests as f64 + BUDGET_FLOOR_PER_WINDOW + 10.0 * extra_seconds;
    eprintln!(
        "{total} attempts for {requests} requests in {elapsed_s:.1} s \
         (without a budget: {unbounded}; budget: {allowed_retries} retries)"
    );
    assert!(
        total > requests,
        "the budget's floor still allows some retries"
    );
    assert!(
        total as f64 <= requests as f64 + allowed_retries,
        "{total} attempts: the budget should have stopped retries"
    );
    // Once the floor is spent, retries come only from the 20% share: the
    // last 100 requests get about 20 among them, not 300.
    let last: u64 = attempts[attempts.len() - 100..].iter().sum();
    assert!(
        last <= 100 + 20 + 10 * (extra_seconds as u64) + 5,
        "the last 100 requests took {last} attempts"
    );
}

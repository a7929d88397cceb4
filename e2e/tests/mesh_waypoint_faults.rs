//! Local-mesh scenarios of the waypoint's resilience features from Istio's
//! networking API (issue 6): fault injection from a `VirtualService`
//! `fault`. Each test brings up its own mesh (`e2e-w3x`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod mesh_support;

use std::time::Duration;

use mesh_support::waypoint::{
    deploy_waypoint, logged, request, topology, topology_with_broken_v2, traffic,
};
use mesh_support::{Mesh, can_run, eventually};

/// The value of `field=` in an access-log line (up to the next space).
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let key = format!(" {name}=");
    line.split(&key)
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_default()
        .trim_matches('"')
}

/// A count of `n` independent trials with probability `p` lies within
/// four standard deviations of `n p` except about once in 15,000 runs
/// (normal approximation, good here with `n p (1 - p)` near 100), so a
/// failure means the percentage is wrong, not bad luck.
fn binomial_bounds(n: u64, p: f64) -> (u64, u64) {
    let n_f = n as f64;
    let sd = (n_f * p * (1.0 - p)).sqrt();
    let low = (n_f * p - 4.0 * sd).floor().max(0.0) as u64;
    let high = (n_f * p + 4.0 * sd).ceil() as u64;
    (low, high)
}

const REQUESTS: u64 = 400;
const ABORT_PERCENT: f64 = 30.0;
const DELAY_PERCENT: f64 = 40.0;
const DELAY_MS: f64 = 200.0;

#[test]
fn w30_faults_abort_and_delay_their_percentages_of_requests() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w30"));
    deploy_waypoint(&mesh);
    // A probe entry first (aborts with 418 every request carrying
    // `x-probe: fault`), so the test knows when the VirtualService is in
    // force; the route is reported as not applied, and requests still go
    // to Service b.
    mesh.apply(
        "faults",
        &format!(
            r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b-faults, namespace: ns-b}}
spec:
  hosts: [b]
  http:
  - match: [{{headers: {{x-probe: {{exact: fault}}}}}}]
    fault: {{abort: {{httpStatus: 418}}}}
  - match: [{{uri: {{prefix: /faulty}}}}]
    fault:
      delay: {{fixedDelay: {DELAY_MS}ms, percentage: {{value: {DELAY_PERCENT}}}}}
      abort: {{httpStatus: 503, percentage: {{value: {ABORT_PERCENT}}}}}
    route: [{{destination: {{host: b}}}}]
"#
        ),
    );
    eventually(
        "the VirtualService is in force",
        Duration::from_secs(10),
        || match request(
            &mesh,
            "a",
            "GET",
            "http://b.ns-b:8080/",
            &["x-probe: fault"],
        ) {
            (418, body) if body == "fault filter abort" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // A path no entry matches is left alone.
    let (status, _) = request(&mesh, "a", "GET", "http://b.ns-b:8080/healthy", &[]);
    assert_eq!(status, 200);

    let summary = traffic(&mesh, "http://b.ns-b:8080/faulty", REQUESTS, 8);
    eprintln!("through the faults: {summary}");
    let aborted = summary["statuses"]["503"].as_u64().unwrap_or(0);
    let succeeded = summary["statuses"]["200"].as_u64().unwrap_or(0);
    assert_eq!(
        aborted + succeeded,
        REQUESTS,
        "only 200s and 503s: {summary}"
    );
    let (low, high) = binomial_bounds(REQUESTS, ABORT_PERCENT / 100.0);
    assert!(
        (low..=high).contains(&aborted),
        "{aborted} of {REQUESTS} aborted, expected {low} to {high}"
    );

    // The waypoint's log says which requests it delayed (`DI`) and
    // aborted (`FI`), and how long each took.
    let lines = logged(&mesh, "/faulty");
    assert_eq!(
        lines.len() as u64,
        REQUESTS,
        "one access-log event per request"
    );
    let flags = |line: &String| field(line, "response_flags").to_owned();
    let delayed: Vec<&String> = lines.iter().filter(|l| flags(l).contains("DI")).collect();
    let aborted_logged = lines.iter().filter(|l| flags(l).contains("FI")).count() as u64;
    assert_eq!(aborted_logged, aborted, "every 503 is an injected abort");
    let (low, high) = binomial_bounds(REQUESTS, DELAY_PERCENT / 100.0);
    let delayed_count = delayed.len() as u64;
    assert!(
        (low..=high).contains(&delayed_count),
        "{delayed_count} of {REQUESTS} delayed, expected {low} to {high}"
    );
    // Delayed requests took at least the delay; the rest well under it
    // (echo-http answers in about a millisecond).
    let millis = |line: &String| -> f64 {
        field(line, "duration")
            .trim_end_matches("ms")
            .parse()
            .unwrap_or_else(|_| panic!("no duration in {line}"))
    };
    assert!(delayed.iter().all(|l| millis(l) >= DELAY_MS), "{delayed:?}");
    let fast = lines
        .iter()
        .filter(|l| !flags(l).contains("DI"))
        .filter(|l| millis(l) < DELAY_MS)
        .count() as u64;
    assert!(
        fast >= (REQUESTS - delayed_count) * 95 / 100,
        "requests not delayed should not take {DELAY_MS} ms: {fast} fast of {}",
        REQUESTS - delayed_count
    );
    // The client sees it too: about 40% took the delay, so the median did
    // not and the 90th percentile did.
    let p50 = summary["latency"]["p50_ms"].as_f64().unwrap();
    let p90 = summary["latency"]["p90_ms"].as_f64().unwrap();
    assert!(
        p50 < DELAY_MS && p90 >= DELAY_MS,
        "p50 {p50} ms, p90 {p90} ms"
    );

    // The metrics count injected aborts with Envoy's flags: FI alone, and
    // DI,FI for the ones delayed first.
    let metrics = mesh.exec(
        "ns-b/waypoint",
        &["curl", "-sS", "-m", "5", "http://127.0.0.1:15020/metrics"],
    );
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let counted: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("response_code=\"503\"")
                && (l.contains("response_flags=\"FI\"") || l.contains("response_flags=\"DI,FI\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(counted as u64, aborted, "{metrics}");
}

/// Applies a DestinationRule for Service b with this `trafficPolicy`.
fn destination_rule_b(mesh: &Mesh, policy: &str) {
    mesh.apply(
        "destination-rule",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{name: b, namespace: ns-b}}\nspec:\n  host: b\n  trafficPolicy:\n{policy}"
        ),
    );
}

#[test]
fn w31_outlier_detection_ejects_the_broken_endpoint_of_two() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology_with_broken_v2("e2e-w31"));
    deploy_waypoint(&mesh);
    // Without a DestinationRule about half the requests fail.
    let before = traffic(&mesh, "http://b.ns-b:8080/before", 100, 2);
    let failed = before["statuses"]["503"].as_u64().unwrap_or(0);
    assert!((25..=75).contains(&failed), "{before}");

    // Three 503s in a row eject b-v2 for a minute: one of two endpoints
    // may go, since at least one may always be ejected.
    destination_rule_b(
        &mesh,
        "    outlierDetection: {consecutive5xxErrors: 3, interval: 10s, baseEjectionTime: 60s, \
         maxEjectionPercent: 50}\n",
    );
    eventually("the waypoint ejects b-v2", Duration::from_secs(20), || {
        traffic(&mesh, "http://b.ns-b:8080/warmup", 10, 1);
        let log = mesh.log("ns-b/waypoint");
        if log.contains("outlier detection ejected an endpoint") {
            Ok(())
        } else {
            Err("no ejection logged yet".to_string())
        }
    });
    // While it is out, every request succeeds, answered by b-v1.
    let after = traffic(&mesh, "http://b.ns-b:8080/after", 100, 2);
    eprintln!("after the ejection: {after}");
    assert_eq!(after["statuses"]["200"].as_u64(), Some(100), "{after}");
    assert_eq!(after["servers"]["b-v1"].as_u64(), Some(100), "{after}");
}

#[test]
fn w32_a_request_limit_of_one_overflows_parallel_requests_with_uo() {
    if !can_run() {
        return;
    }
    let mesh = Mesh::up(&topology("e2e-w32"));
    deploy_waypoint(&mesh);
    destination_rule_b(&mesh, "    connectionPool: {http: {http2MaxRequests: 1}}\n");
    // 20 slow requests (300 ms each), 4 at a time: while one is in
    // flight the others overflow. Until the rule arrives, all succeed, so
    // run until some overflow.
    eventually(
        "parallel requests overflow the limit of one",
        Duration::from_secs(20),
        || {
            let summary = traffic(&mesh, "http://b.ns-b:8080/slow?delay=300ms", 20, 4);
            let overflowed = summary["statuses"]["503"].as_u64().unwrap_or(0);
            let succeeded = summary["statuses"]["200"].as_u64().unwrap_or(0);
            if overflowed > 0 && succeeded > 0 && overflowed + succeeded == 20 {
                Ok(())
            } else {
                Err(summary.to_string())
            }
        },
    );
    let lines = logged(&mesh, "/slow");
    let overflowed: Vec<&String> = lines
        .iter()
        .filter(|l| field(l, "response_flags") == "UO")
        .collect();
    assert!(!overflowed.is_empty(), "no UO in the access log");
    assert!(
        overflowed
            .iter()
            .all(|l| field(l, "response_code") == "503" && l.contains("http2MaxRequests")),
        "{overflowed:?}"
    );
    // One at a time stays within the limit.
    let serial = traffic(&mesh, "http://b.ns-b:8080/serial?delay=50ms", 10, 1);
    assert_eq!(serial["statuses"]["200"].as_u64(), Some(10), "{serial}");
}

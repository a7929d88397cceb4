use std::collections::BTreeMap;
use std::time::Duration;

use super::{Latency, Outcome, Protocol, Summary, percentile};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// 1ms, 2ms, ..., `n` ms.
fn one_to(n: u64) -> Vec<Duration> {
    (1..=n).map(ms).collect()
}

fn answered(status: u16, server: Option<&str>, latency_ms: u64) -> Outcome {
    Outcome::Answered {
        status: Some(status),
        server: server.map(str::to_owned),
        latency: ms(latency_ms),
    }
}

fn failed(reason: &str) -> Outcome {
    Outcome::Failed {
        reason: reason.to_owned(),
    }
}

#[test]
fn percentile_of_nothing_is_none() {
    assert_eq!(percentile(&[], 50.0), None);
    assert_eq!(Latency::from_samples(Vec::new()), None);
}

#[test]
fn percentile_of_one_sample_is_that_sample() {
    for p in [0.0, 50.0, 99.0, 100.0] {
        assert_eq!(percentile(&[ms(7)], p), Some(ms(7)));
    }
}

#[test]
fn percentile_of_a_hundred_is_the_rank() {
    let samples = one_to(100);
    assert_eq!(percentile(&samples, 0.0), Some(ms(1)));
    assert_eq!(percentile(&samples, 50.0), Some(ms(50)));
    assert_eq!(percentile(&samples, 90.0), Some(ms(90)));
    assert_eq!(percentile(&samples, 99.0), Some(ms(99)));
    assert_eq!(percentile(&samples, 100.0), Some(ms(100)));
}

#[test]
fn percentile_rounds_the_rank_up() {
    // Nearest rank: ceil(p/100 * n). For ten samples p99 is the slowest,
    // and p50 is the fifth, not an average of the fifth and sixth.
    let samples = one_to(10);
    assert_eq!(percentile(&samples, 50.0), Some(ms(5)));
    assert_eq!(percentile(&samples, 51.0), Some(ms(6)));
    assert_eq!(percentile(&samples, 90.0), Some(ms(9)));
    assert_eq!(percentile(&samples, 99.0), Some(ms(10)));
    // Three samples: p50 is the second.
    assert_eq!(percentile(&[ms(1), ms(5), ms(9)], 50.0), Some(ms(5)));
}

#[test]
fn percentile_clamps_out_of_range_p() {
    let samples = one_to(4);
    assert_eq!(percentile(&samples, -5.0), Some(ms(1)));
    assert_eq!(percentile(&samples, 250.0), Some(ms(4)));
    assert_eq!(percentile(&samples, f64::NAN), Some(ms(4)));
}

#[test]
fn latency_sorts_its_samples() {
    let mut samples = one_to(100);
    samples.reverse();
    samples.swap(3, 71);
    let latency = Latency::from_samples(samples).unwrap();
    assert_eq!(
        latency,
        Latency {
            p50_ms: 50.0,
            p90_ms: 90.0,
            p99_ms: 99.0,
            max_ms: 100.0,
        }
    );
}

#[test]
fn counts_statuses_servers_and_errors() {
    let outcomes = [
        answered(200, Some("a"), 1),
        answered(200, Some("b"), 2),
        answered(503, Some("a"), 3),
        failed("connect: connection refused"),
        failed("connect: connection refused"),
        failed("timeout"),
    ];
    let summary = Summary::new(Protocol::Http, &outcomes, ms(1500));
    assert_eq!(summary.attempts, 6);
    assert_eq!(summary.succeeded, 2);
    assert_eq!(summary.unsuccessful(), 4);
    assert!(!summary.all_succeeded());
    assert_eq!(
        summary.statuses.into_iter().collect::<Vec<_>>(),
        [(200, 2), (503, 1)]
    );
    assert_eq!(summary.errors, 3);
    assert_eq!(
        summary.error_reasons.into_iter().collect::<Vec<_>>(),
        [
            ("connect: connection refused".to_owned(), 2),
            ("timeout".to_owned(), 1)
        ]
    );
    assert_eq!(
        summary.servers.into_iter().collect::<Vec<_>>(),
        [("a".to_owned(), 2), ("b".to_owned(), 1)]
    );
    // Latency is over the three answers only.
    assert_eq!(summary.latency.unwrap().max_ms, 3.0);
    assert_eq!(summary.latency.unwrap().p50_ms, 2.0);
    assert_eq!(summary.elapsed_ms, 1500.0);
}

#[test]
fn only_2xx_succeeds() {
    for (status, success) in [
        (199, false),
        (200, true),
        (204, true),
        (299, true),
        (300, false),
    ] {
        assert_eq!(answered(status, None, 1).is_success(), success, "{status}");
    }
    let echoed = Outcome::Answered {
        status: None,
        server: None,
        latency: ms(1),
    };
    assert!(echoed.is_success());
    assert!(!failed("x").is_success());
}

#[test]
fn an_empty_run_did_not_succeed() {
    let summary = Summary::new(Protocol::Tcp, &[], Duration::ZERO);
    assert!(!summary.all_succeeded());
    assert_eq!(summary.latency, None);
}

#[test]
fn renders_text() {
    let outcomes = [
        answered(200, Some("pod-a"), 1),
        answered(503, Some("pod-a"), 2),
        failed("connect: connection refused"),
    ];
    let text = Summary::new(Protocol::Http, &outcomes, ms(250)).render_text();
    assert_eq!(
        text,
        "3 requests in 0.25s: 1 succeeded, 2 did not\n\
         status   200 x 1, 503 x 1\n\
         errors   connect: connection refused x 1\n\
         servers  pod-a x 2\n\
         latency  p50 1.00ms  p90 2.00ms  p99 2.00ms  max 2.00ms\n"
    );
}

#[test]
fn renders_tcp_text_without_statuses() {
    let outcomes = [Outcome::Answered {
        status: None,
        server: None,
        latency: ms(4),
    }];
    let text = Summary::new(Protocol::Tcp, &outcomes, ms(4)).render_text();
    assert_eq!(
        text,
        "1 connection in 0.00s: 1 succeeded, 0 did not\n\
         errors   none\n\
         latency  p50 4.00ms  p90 4.00ms  p99 4.00ms  max 4.00ms\n"
    );
}

#[test]
fn json_round_trips() {
    let outcomes = [answered(200, Some("a"), 1), failed("timeout")];
    let summary = Summary::new(Protocol::Http, &outcomes, ms(10));
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["protocol"], "http");
    assert_eq!(json["statuses"]["200"], 1);
    assert_eq!(json["error_reasons"]["timeout"], 1);
    assert_eq!(json["latency"]["p99_ms"], 1.0);
    let back: Summary = serde_json::from_value(json).unwrap();
    assert_eq!(back, summary);
}

#[test]
fn grpc_succeeds_only_with_ok_and_counts_status_names() {
    let outcomes = [
        answered(0, Some("b-v1"), 1),
        answered(14, Some("b-v2"), 2),
        answered(200, None, 3),
        failed("connect: connection refused"),
    ];
    let summary = Summary::new(Protocol::Grpc, &outcomes, ms(250));
    assert_eq!(summary.succeeded, 1);
    assert_eq!(
        summary.statuses,
        BTreeMap::from([(0, 1), (14, 1), (200, 1)])
    );
    assert_eq!(
        summary.grpc_statuses,
        BTreeMap::from([
            ("OK".to_owned(), 1),
            ("UNAVAILABLE".to_owned(), 1),
            // Not a gRPC code: said so rather than dropped.
            ("code 200".to_owned(), 1),
        ])
    );
    assert_eq!(
        summary.render_text().lines().take(2).collect::<Vec<_>>(),
        [
            "4 calls in 0.25s: 1 succeeded, 3 did not",
            "status   OK x 1, UNAVAILABLE x 1, code 200 x 1",
        ]
    );
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["protocol"], "grpc");
    assert_eq!(json["grpc_statuses"]["UNAVAILABLE"], 1);
    let http = serde_json::to_value(Summary::new(Protocol::Http, &outcomes, ms(1))).unwrap();
    assert!(http.get("grpc_statuses").is_none(), "{http}");
}

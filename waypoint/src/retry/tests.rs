use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::*;

/// Simulates `seconds` of traffic at `per_second` requests, of which every
/// `fail_every`-th fails (`Some(1)`: all of them, and every retry too) and
/// is retried up to `attempts` times while the budget allows; returns
/// (requests, retries granted).
fn simulate(seconds: u64, per_second: u64, fail_every: Option<u64>, attempts: u32) -> (u64, u64) {
    let origin = Instant::now();
    let mut budget = RetryBudget::new(origin);
    let (mut requests, mut retries) = (0, 0);
    for n in 0..seconds * per_second {
        // Requests spread evenly over each second.
        let now = origin + Duration::from_micros(n * 1_000_000 / per_second);
        budget.record_request(now);
        requests += 1;
        let failing = fail_every.is_some_and(|every| n % every == 0);
        if !failing {
            continue;
        }
        // Under 100% failure every retry fails again, so each request
        // asks for all its attempts; else the first retry succeeds.
        let wanted = if fail_every == Some(1) { attempts } else { 1 };
        for _ in 0..wanted {
            if !budget.try_retry(now) {
                break;
            }
            retries += 1;
        }
    }
    (requests, retries)
}

#[test]
fn under_total_failure_retries_stay_within_a_fifth_plus_the_floor() {
    // 100 requests/s for a minute, all failing, 3 retries each wanted.
    let (requests, retries) = simulate(60, 100, Some(1), 3);
    assert_eq!(requests, 6000);
    // Per 10 s window: 20% of 1000 requests plus 100 = 300 retries, far
    // below the 3000 asked for. Over 6 windows, at most 6 × 300.
    assert!(retries <= 6 * 300, "{retries} retries");
    // And the budget is not simply closed: it grants its share.
    assert!(retries >= 5 * 300, "{retries} retries");
}

#[test]
fn at_a_low_failure_rate_every_retry_is_allowed() {
    // 1 request in 50 fails (2%), well inside 20%.
    let (requests, retries) = simulate(60, 100, Some(50), 3);
    assert_eq!(retries, requests / 50);
}

#[test]
fn with_little_traffic_the_floor_still_allows_retries() {
    let now = Instant::now();
    let mut budget = RetryBudget::new(now);
    budget.record_request(now);
    let granted = (0..200).filter(|_| budget.try_retry(now)).count();
    // 10 per second over the 10 s window, plus 20% of one request.
    assert_eq!(granted, 100);
}

#[test]
fn retries_older_than_the_window_stop_counting() {
    let origin = Instant::now();
    let mut budget = RetryBudget::new(origin);
    while budget.try_retry(origin) {}
    assert!(!budget.try_retry(origin + Duration::from_secs(9)));
    assert!(budget.try_retry(origin + Duration::from_secs(10)));
}

#[test]
fn budgets_are_kept_per_service() {
    let budgets = RetryBudgets::default();
    let now = Instant::now();
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    while budgets.try_retry(&a, now) {}
    assert!(!budgets.try_retry(&a, now));
    assert!(budgets.try_retry(&b, now));
}

#[test]
fn backoff_grows_from_the_base_and_stops_at_ten_times() {
    let base = Duration::from_millis(25);
    let ceiling = |retry| backoff(base, retry, 1.0);
    assert_eq!(ceiling(1), Duration::from_millis(25));
    assert_eq!(ceiling(2), Duration::from_millis(50));
    assert_eq!(ceiling(3), Duration::from_millis(100));
    assert_eq!(ceiling(4), Duration::from_millis(200));
    assert_eq!(ceiling(5), Duration::from_millis(250));
    assert_eq!(ceiling(40), Duration::from_millis(250));
}

#[test]
fn backoff_jitter_is_a_share_of_the_ceiling() {
    let base = Duration::from_millis(25);
    assert_eq!(backoff(base, 3, 0.0), Duration::ZERO);
    assert_eq!(backoff(base, 3, 0.5), Duration::from_millis(50));
    // Out-of-range randoms are clamped, never longer than the ceiling.
    assert_eq!(backoff(base, 3, 7.0), Duration::from_millis(100));
}

#[test]
fn idempotent_methods_or_a_kept_body_are_replayable() {
    for method in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ] {
        assert!(is_replayable(&method, false), "{method}");
    }
    assert!(!is_replayable(&Method::POST, false));
    assert!(!is_replayable(&Method::PATCH, false));
    assert!(is_replayable(&Method::POST, true));
}

#[test]
fn answers_with_a_listed_code_or_grpc_unavailable_are_retried() {
    let codes = [StatusCode::SERVICE_UNAVAILABLE];
    let none = HeaderMap::new();
    assert!(is_retriable_answer(
        &codes,
        StatusCode::SERVICE_UNAVAILABLE,
        &none
    ));
    assert!(!is_retriable_answer(&codes, StatusCode::BAD_GATEWAY, &none));
    assert!(!is_retriable_answer(&codes, StatusCode::OK, &none));

    let grpc = |code: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from_static(code));
        headers
    };
    // Trailers-only UNAVAILABLE: retried even when `codes` lists nothing
    // that looks like it.
    assert!(is_retriable_answer(&[], StatusCode::OK, &grpc("14")));
    assert!(is_retriable_answer(&codes, StatusCode::OK, &grpc("14")));
    // Other gRPC statuses are the service's answer.
    for code in ["0", "2", "4", "5", "13", "140"] {
        assert!(
            !is_retriable_answer(&codes, StatusCode::OK, &grpc(code)),
            "grpc-status {code}"
        );
    }
    // A grpc-status on an HTTP error is judged by the HTTP status.
    assert!(!is_retriable_answer(
        &[],
        StatusCode::SERVICE_UNAVAILABLE,
        &grpc("14")
    ));
}

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

fn config() -> OutlierConfig {
    OutlierConfig {
        consecutive_5xx: Some(3),
        consecutive_gateway_errors: None,
        interval: Duration::from_secs(10),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent: 50,
    }
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 8080))
}

const FAIL: AttemptResult = AttemptResult::Status(503);
const OK: AttemptResult = AttemptResult::Status(200);

#[test]
fn consecutive_failures_eject_and_a_success_resets_the_count() {
    let config = config();
    let mut state = OutlierState::default();
    let t0 = Instant::now();
    assert_eq!(state.record(&config, addr(1), FAIL, 2, t0), None);
    assert_eq!(state.record(&config, addr(1), FAIL, 2, t0), None);
    // A success in between: the count starts over.
    assert_eq!(state.record(&config, addr(1), OK, 2, t0), None);
    assert_eq!(state.record(&config, addr(1), FAIL, 2, t0), None);
    assert_eq!(state.record(&config, addr(1), FAIL, 2, t0), None);
    assert!(!state.is_ejected(&addr(1), t0));
    let ejected = state.record(&config, addr(1), AttemptResult::ConnectionFailed, 2, t0);
    assert_eq!(ejected, Some(Duration::from_secs(30)));
    assert!(state.is_ejected(&addr(1), t0));
    assert!(!state.is_ejected(&addr(2), t0), "the other endpoint stays");
}

#[test]
fn an_ejected_endpoint_comes_back_and_stays_out_longer_each_time() {
    let config = config();
    let mut state = OutlierState::default();
    let t0 = Instant::now();
    let fail_three = |state: &mut OutlierState, at: Instant| {
        (0..3)
            .filter_map(|_| state.record(&config, addr(1), FAIL, 2, at))
            .last()
    };
    assert_eq!(fail_three(&mut state, t0), Some(Duration::from_secs(30)));
    let back = t0 + Duration::from_secs(30);
    assert!(state.is_ejected(&addr(1), back - Duration::from_millis(1)));
    assert!(!state.is_ejected(&addr(1), back));
    // Failing again right away: twice the base.
    assert_eq!(fail_three(&mut state, back), Some(Duration::from_secs(60)));
    let back = back + Duration::from_secs(60);
    // Two healthy intervals later the count has decayed by two: the next
    // ejection is back to the base.
    let later = back + Duration::from_secs(20);
    assert_eq!(state.record(&config, addr(1), OK, 2, later), None);
    assert_eq!(fail_three(&mut state, later), Some(Duration::from_secs(30)));
}

#[test]
fn the_backoff_is_capped_at_the_maximum_ejection_time() {
    let config = config();
    let mut state = OutlierState::default();
    let mut now = Instant::now();
    let mut last = None;
    for _ in 0..20 {
        for _ in 0..3 {
            if let Some(d) = state.record(&config, addr(1), FAIL, 2, now) {
                last = Some(d);
                now += d;
            }
        }
    }
    assert_eq!(last, Some(MAX_EJECTION_TIME));
}

#[test]
fn never_more_than_the_percentage_but_at_least_one() {
    let mut config = config();
    config.max_ejection_percent = 10;
    let mut state = OutlierState::default();
    let t0 = Instant::now();
    let fail_three = |state: &mut OutlierState, endpoint| {
        (0..3)
            .filter_map(|_| state.record(&config, endpoint, FAIL, 2, t0))
            .last()
    };
    // 10% of two endpoints is none, but one may go.
    assert!(fail_three(&mut state, addr(1)).is_some());
    assert_eq!(fail_three(&mut state, addr(2)), None, "the last one stays");
    assert!(!state.is_ejected(&addr(2), t0));
    config.max_ejection_percent = 0;
    let mut state = OutlierState::default();
    assert_eq!(
        (0..5)
            .filter_map(|_| state.record(&config, addr(1), FAIL, 2, t0))
            .last(),
        None
    );
}

#[test]
fn gateway_errors_count_only_502_to_504_and_other_answers_do_not_eject() {
    let config = OutlierConfig {
        consecutive_5xx: None,
        consecutive_gateway_errors: Some(2),
        ..config()
    };
    let mut state = OutlierState::default();
    let t0 = Instant::now();
    for status in [500, 500, 500, 404, 200] {
        assert_eq!(
            state.record(&config, addr(1), AttemptResult::Status(status), 2, t0),
            None
        );
    }
    assert_eq!(
        state.record(&config, addr(1), AttemptResult::Status(502), 2, t0),
        None
    );
    // A 500 in between breaks the run of gateway errors.
    assert_eq!(
        state.record(&config, addr(1), AttemptResult::Status(500), 2, t0),
        None
    );
    assert_eq!(
        state.record(&config, addr(1), AttemptResult::Status(504), 2, t0),
        None
    );
    assert!(
        state
            .record(&config, addr(1), AttemptResult::ConnectionFailed, 2, t0)
            .is_some()
    );
}

use std::time::Duration;

use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderValue};

use super::{ControlError, Controls, Origin, Parameter};

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

fn from_query(query: &str) -> Result<Controls, ControlError> {
    Controls::parse(Some(query), &HeaderMap::new())
}

#[test]
fn no_controls_is_a_plain_200() {
    let controls = Controls::parse(None, &HeaderMap::new()).unwrap();
    assert_eq!(controls, Controls::default());
    let answer = controls.answer(0.0);
    assert_eq!(answer.status, StatusCode::OK);
    assert!(!answer.injected_failure);
}

#[test]
fn reads_every_control_from_the_query() {
    let controls = from_query("status=418&delay=150ms&fail=0.25&other=x").unwrap();
    assert_eq!(
        controls,
        Controls {
            status: Some(StatusCode::IM_A_TEAPOT),
            delay: Some(Duration::from_millis(150)),
            fail: Some(0.25),
        }
    );
}

#[test]
fn reads_every_control_from_headers() {
    let map = headers(&[
        ("x-echo-status", "503"),
        ("x-echo-delay", " 2s "),
        ("x-echo-fail", "1"),
    ]);
    let controls = Controls::parse(Some("unrelated=1"), &map).unwrap();
    assert_eq!(
        controls,
        Controls {
            status: Some(StatusCode::SERVICE_UNAVAILABLE),
            delay: Some(Duration::from_secs(2)),
            fail: Some(1.0),
        }
    );
}

#[test]
fn the_query_wins_over_the_header() {
    let map = headers(&[("x-echo-status", "not even a number")]);
    let controls = Controls::parse(Some("status=201"), &map).unwrap();
    assert_eq!(controls.status, Some(StatusCode::CREATED));
}

#[test]
fn names_that_only_look_alike_are_ignored() {
    let controls = from_query("statuses=500&xstatus=500&Status=500").unwrap();
    assert_eq!(controls.status, None);
}

#[test]
fn fail_one_always_fails_and_fail_zero_never_does() {
    let always = from_query("fail=1.0&status=201").unwrap();
    let never = from_query("fail=0.0&status=201").unwrap();
    // Rolls are in [0, 1): try the edges and the middle.
    for roll in [0.0, 0.5, 0.999_999] {
        let failed = always.answer(roll);
        assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(failed.injected_failure);
        let passed = never.answer(roll);
        assert_eq!(passed.status, StatusCode::CREATED);
        assert!(!passed.injected_failure);
    }
}

#[test]
fn a_fraction_fails_the_rolls_below_it() {
    let controls = from_query("fail=0.3").unwrap();
    assert!(controls.answer(0.29).injected_failure);
    assert!(!controls.answer(0.3).injected_failure);
    assert!(!controls.answer(0.9).injected_failure);
}

#[test]
fn a_bad_status_names_the_parameter_and_the_range() {
    for query in ["status=abc", "status=99", "status=600", "status=", "status"] {
        let error = from_query(query).unwrap_err();
        assert_eq!(error.parameter, Parameter::Status, "{query}");
        assert_eq!(error.origin, Origin::Query);
        let message = error.to_string();
        assert!(message.contains("query parameter `status`"), "{message}");
        assert!(message.contains("200 to 599"), "{message}");
    }
}

#[test]
fn a_bad_delay_says_how_to_write_one() {
    let error = from_query("delay=150").unwrap_err();
    assert_eq!(error.parameter, Parameter::Delay);
    let message = error.to_string();
    assert!(message.starts_with("query parameter `delay`"), "{message}");
    assert!(message.contains("no unit"), "{message}");
    assert!(message.contains("150ms"), "{message}");
}

#[test]
fn a_bad_fail_fraction_is_refused() {
    for query in ["fail=2", "fail=-0.1", "fail=NaN", "fail=half", "fail=50%25"] {
        let error = from_query(query).unwrap_err();
        assert_eq!(error.parameter, Parameter::Fail, "{query}");
        assert!(error.to_string().contains("from 0 to 1"), "{error}");
    }
}

#[test]
fn a_bad_header_names_the_header() {
    let map = headers(&[("x-echo-delay", "soon")]);
    let error = Controls::parse(None, &map).unwrap_err();
    assert_eq!(error.parameter, Parameter::Delay);
    assert_eq!(error.origin, Origin::Header);
    assert!(
        error.to_string().starts_with("header `x-echo-delay`: "),
        "{error}"
    );
}

#[test]
fn a_header_that_is_not_ascii_is_refused() {
    let mut map = HeaderMap::new();
    map.insert("x-echo-status", HeaderValue::from_bytes(b"5\xff3").unwrap());
    let error = Controls::parse(None, &map).unwrap_err();
    assert_eq!(error.origin, Origin::Header);
    assert!(error.to_string().contains("not plain ASCII"), "{error}");
}

#[test]
fn a_control_given_twice_is_refused() {
    let error = from_query("status=200&status=500").unwrap_err();
    assert_eq!(error.parameter, Parameter::Status);
    assert!(error.to_string().contains("more than once"), "{error}");

    let map = headers(&[("x-echo-fail", "0"), ("x-echo-fail", "1")]);
    let error = Controls::parse(None, &map).unwrap_err();
    assert_eq!(
        (error.parameter, error.origin),
        (Parameter::Fail, Origin::Header)
    );
}

#[test]
fn the_servers_defaults_fill_only_what_the_request_left_unset() {
    let defaults = Controls {
        fail: Some(1.0),
        ..Controls::default()
    };
    let plain = from_query("").unwrap().or(defaults);
    assert_eq!(plain.answer(0.99).status, StatusCode::SERVICE_UNAVAILABLE);

    // A request that sets `fail` itself overrides the server's.
    let asked = from_query("fail=0").unwrap().or(defaults);
    assert_eq!(asked.fail, Some(0.0));
    assert_eq!(asked.answer(0.0).status, StatusCode::OK);

    let slow = from_query("delay=1s").unwrap().or(defaults);
    assert_eq!(
        (slow.delay, slow.fail),
        (Some(Duration::from_secs(1)), Some(1.0))
    );
}

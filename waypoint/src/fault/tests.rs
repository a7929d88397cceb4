// Helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderValue, Method, StatusCode};
use proto::waypoint as pb;
use proto::waypoint::fault_string_match::Kind;

use super::*;

const HOST: &str = "reviews.shop.svc.cluster.local";

fn string(kind: Kind) -> Option<pb::FaultStringMatch> {
    Some(pb::FaultStringMatch { kind: Some(kind) })
}

fn delay(ms: i32, percentage: f64) -> Option<pb::FaultDelay> {
    Some(pb::FaultDelay {
        fixed_delay: Some(prost_types::Duration {
            seconds: 0,
            nanos: ms * 1_000_000,
        }),
        percentage,
    })
}

fn abort(status: u32, percentage: f64) -> Option<pb::FaultAbort> {
    Some(pb::FaultAbort {
        http_status: status,
        percentage,
        grpc_status: None,
    })
}

/// `/healthz` shielded, then GET `/api*` with `x-test: chaos-*` delayed
/// 40% and aborted 30%, then everything else aborted always.
fn resource() -> pb::WaypointFaults {
    pb::WaypointFaults {
        hostname: HOST.into(),
        rules: vec![
            pb::FaultRule {
                source: "shop/vs http 0".into(),
                matches: vec![pb::FaultMatch {
                    uri: string(Kind::Exact("/healthz".into())),
                    ..pb::FaultMatch::default()
                }],
                fault: None,
            },
            pb::FaultRule {
                source: "shop/vs http 1".into(),
                matches: vec![pb::FaultMatch {
                    uri: string(Kind::Prefix("/api".into())),
                    headers: vec![pb::FaultHeaderMatch {
                        name: "x-test".into(),
                        value: string(Kind::Regex("chaos-[a-z]+".into())),
                    }],
                    method: string(Kind::Exact("GET".into())),
                }],
                fault: Some(pb::Fault {
                    delay: delay(200, 40.0),
                    abort: abort(503, 30.0),
                }),
            },
            pb::FaultRule {
                source: "shop/vs http 2".into(),
                matches: vec![],
                fault: Some(pb::Fault {
                    delay: None,
                    abort: abort(418, 100.0),
                }),
            },
        ],
    }
}

fn faults() -> ServiceFaults {
    match ServiceFaults::try_from(resource()) {
        Ok(faults) => faults,
        Err(error) => panic!("the test resource is rejected: {error}"),
    }
}

fn decide(path: &str, method: Method, header: Option<&str>, rolls: Rolls) -> Option<Injection> {
    let mut headers = HeaderMap::new();
    if let Some(value) = header {
        headers.insert("x-test", HeaderValue::from_str(value).unwrap());
    }
    let request = FaultRequest {
        path,
        method: &method,
        headers: &headers,
    };
    faults().decide(&request, rolls)
}

const LOW: Rolls = Rolls {
    delay: 0.0,
    abort: 0.0,
};

#[test]
fn a_matching_rule_delays_and_aborts_within_its_percentages() {
    let both = decide("/api/x", Method::GET, Some("chaos-monkey"), LOW).unwrap();
    assert_eq!(both.source.as_ref(), "shop/vs http 1");
    assert_eq!(both.delay, Some(Duration::from_millis(200)));
    assert_eq!(both.abort, Some(StatusCode::SERVICE_UNAVAILABLE));
    // Just under and at the percentages: the die must be below it.
    let delay_only = Rolls {
        delay: 39.9,
        abort: 30.0,
    };
    let injected = decide("/api", Method::GET, Some("chaos-x"), delay_only).unwrap();
    assert_eq!(
        (injected.delay, injected.abort),
        (Some(Duration::from_millis(200)), None)
    );
    let neither = Rolls {
        delay: 40.0,
        abort: 99.9,
    };
    assert_eq!(decide("/api", Method::GET, Some("chaos-x"), neither), None);
}

#[test]
fn the_first_matching_rule_decides_and_one_without_a_fault_shields_the_rest() {
    assert_eq!(decide("/healthz", Method::GET, None, LOW), None);
    // Not the whole header value, not GET, no header: rule 2 decides.
    for (method, header) in [
        (Method::GET, Some("chaos-X1")),
        (Method::POST, Some("chaos-x")),
        (Method::GET, None),
    ] {
        let injected = decide("/api", method, header, LOW).unwrap();
        assert_eq!(injected.source.as_ref(), "shop/vs http 2");
        assert_eq!(injected.abort, Some(StatusCode::IM_A_TEAPOT));
        assert_eq!(injected.delay, None);
    }
    // Istio's prefix is a plain string prefix, not segments.
    let injected = decide("/apiary", Method::GET, Some("chaos-x"), LOW).unwrap();
    assert_eq!(injected.source.as_ref(), "shop/vs http 1");
}

#[test]
fn zero_percent_never_applies_and_one_hundred_always_does() {
    let mut resource = resource();
    resource.rules[1].fault = Some(pb::Fault {
        delay: delay(5, 0.0),
        abort: abort(500, 100.0),
    });
    let faults = ServiceFaults::try_from(resource).unwrap();
    let headers: HeaderMap = [("x-test", HeaderValue::from_static("chaos-a"))]
        .into_iter()
        .map(|(k, v)| (http::HeaderName::from_static(k), v))
        .collect();
    let request = FaultRequest {
        path: "/api",
        method: &Method::GET,
        headers: &headers,
    };
    for die in [0.0, 50.0, 99.999] {
        let injected = faults
            .decide(
                &request,
                Rolls {
                    delay: die,
                    abort: die,
                },
            )
            .unwrap();
        assert_eq!(injected.delay, None);
        assert_eq!(injected.abort, Some(StatusCode::INTERNAL_SERVER_ERROR));
    }
}

#[test]
fn a_grpc_abort_carries_its_grpc_status() {
    let mut resource = resource();
    resource.rules[2].fault = Some(pb::Fault {
        delay: None,
        abort: Some(pb::FaultAbort {
            http_status: 200,
            percentage: 100.0,
            grpc_status: Some(14),
        }),
    });
    let faults = ServiceFaults::try_from(resource).unwrap();
    let request = FaultRequest {
        path: "/echo.Echo/Say",
        method: &Method::POST,
        headers: &HeaderMap::new(),
    };
    let injected = faults.decide(&request, LOW).unwrap();
    assert_eq!(injected.abort, Some(StatusCode::OK));
    assert_eq!(injected.grpc_status, Some(14));
    // An HTTP abort has none.
    let http = decide("/api", Method::POST, None, LOW).unwrap();
    assert_eq!(http.grpc_status, None);
}

#[test]
fn drawn_rolls_are_within_range() {
    for _ in 0..1000 {
        let rolls = Rolls::draw();
        assert!((0.0..100.0).contains(&rolls.delay));
        assert!((0.0..100.0).contains(&rolls.abort));
    }
}

/// Makes one value of the test resource bad.
type Spoil = fn(&mut pb::WaypointFaults);

#[test]
fn bad_values_reject_the_resource_and_say_where() {
    let cases: Vec<(Spoil, &str)> = vec![
        (
            |r| r.rules[1].fault.as_mut().unwrap().abort = abort(600, 10.0),
            "rule 1 fault abort: status 600 is not from 200 to 599",
        ),
        (
            |r| {
                r.rules[1].fault.as_mut().unwrap().abort = Some(pb::FaultAbort {
                    http_status: 200,
                    percentage: 10.0,
                    grpc_status: Some(17),
                });
            },
            "rule 1 fault abort: gRPC status 17 is not from 0 to 16",
        ),
        (
            |r| r.rules[1].fault.as_mut().unwrap().delay = delay(5, 100.5),
            "rule 1 fault delay: percentage 100.5 is not from 0 to 100",
        ),
        (
            |r| r.rules[1].fault.as_mut().unwrap().delay = delay(-5, 10.0),
            "rule 1 fault delay: delay",
        ),
        (
            |r| r.rules[2].fault = Some(pb::Fault::default()),
            "rule 2 fault: `fault` sets neither a delay nor an abort",
        ),
        (
            |r| r.rules[1].matches[0].headers[0].name = "bad header".into(),
            "rule 1 match 0 header bad header: header name `bad header`",
        ),
        (
            |r| r.rules[0].matches[0].uri = string(Kind::Regex("(".into())),
            "rule 0 match 0 uri: regex `(` does not compile",
        ),
        (
            |r| r.rules[0].matches[0].method = Some(pb::FaultStringMatch { kind: None }),
            "rule 0 match 0 method: exact, prefix or regex is not set",
        ),
        (
            |r| r.hostname = "Reviews:80".into(),
            "hostname `Reviews:80` is not a valid host name",
        ),
    ];
    for (spoil, expected) in cases {
        let mut resource = resource();
        spoil(&mut resource);
        let error = ServiceFaults::try_from(resource).unwrap_err().to_string();
        assert!(error.starts_with(expected), "{error:?} is not {expected:?}");
    }
}

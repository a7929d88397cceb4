//! The waypoint fault translation, from `tests/fixtures/waypoint_faults.yaml`;
//! what is sent is fed to the waypoint's own conversion.

// Helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

use super::*;
use proto::waypoint::{FaultAbort as PbAbort, FaultDelay as PbDelay};

const FIXTURE: &str = include_str!("../../../tests/fixtures/waypoint_faults.yaml");
const REVIEWS: &str = "reviews.shop.svc.cluster.local";
const RATINGS: &str = "ratings.shop.svc.cluster.local";

fn translated() -> WaypointFaultsTranslated {
    let index = Index::from_yaml(FIXTURE).unwrap();
    translate_waypoint_faults(&index, &MeshConfig::default())
}

fn messages_about(out: &WaypointFaultsTranslated, vs: &str) -> Vec<String> {
    out.diagnostics
        .iter()
        .filter(|d| d.resource == vs)
        .map(|d| d.message.clone())
        .collect()
}

fn exact(value: &str) -> Option<pb::FaultStringMatch> {
    Some(pb::FaultStringMatch {
        kind: Some(StringKind::Exact(value.into())),
    })
}

#[test]
fn only_named_services_behind_a_waypoint_get_resources() {
    let out = translated();
    let hostnames: Vec<&str> = out.faults.keys().map(String::as_str).collect();
    assert_eq!(hostnames, [RATINGS, REVIEWS]);
    let late = messages_about(&out, "shop/late");
    let has = |needle: &str| late.iter().any(|m| m.contains(needle));
    assert!(
        has("VirtualService shop/reviews-faults already applies"),
        "{late:?}"
    );
    assert!(has("\"*.example.com\" is not a service name"), "{late:?}");
    assert!(has("plain/web does not use a waypoint"), "{late:?}");
    assert!(
        has("\"missing\" (missing.shop.svc.cluster.local) is not a Service"),
        "{late:?}"
    );
}

#[test]
fn matches_and_faults_carry_over_in_order_with_entries_without_a_fault() {
    let out = translated();
    let rules = &out.faults[REVIEWS].rules;
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].source, "shop/reviews-faults http 0 (healthz)");
    assert_eq!(
        rules[0].matches,
        vec![pb::FaultMatch {
            uri: exact("/healthz"),
            ..pb::FaultMatch::default()
        }]
    );
    assert_eq!(rules[0].fault, None);
    // The match with `port` is left out; the other stays.
    assert_eq!(
        rules[1].matches,
        vec![pb::FaultMatch {
            uri: Some(pb::FaultStringMatch {
                kind: Some(StringKind::Prefix("/api".into())),
            }),
            headers: vec![pb::FaultHeaderMatch {
                name: "x-test".into(),
                value: Some(pb::FaultStringMatch {
                    kind: Some(StringKind::Regex("chaos-.*".into())),
                }),
            }],
            method: exact("GET"),
        }]
    );
    assert_eq!(
        rules[1].fault,
        Some(pb::Fault {
            delay: Some(PbDelay {
                fixed_delay: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 200_000_000,
                }),
                percentage: 40.0,
            }),
            abort: Some(PbAbort {
                http_status: 503,
                percentage: 30.5,
                grpc_status: None,
            }),
        })
    );
    let messages = messages_about(&out, "shop/reviews-faults");
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`route` is not applied"))
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`port` is not supported"))
    );
}

#[test]
fn unsupported_and_invalid_parts_are_dropped_alone_and_reported() {
    let out = translated();
    let rules = &out.faults[RATINGS].rules;
    // Entry 1 (only a queryParams match) is left out.
    assert_eq!(rules.len(), 2, "{rules:?}");
    // The deprecated `percent` is read; the gRPC abort goes as Istio sends
    // it to Envoy: HTTP 200 with the gRPC status, 100% when unset.
    assert_eq!(
        rules[0].fault,
        Some(pb::Fault {
            delay: Some(PbDelay {
                fixed_delay: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 500_000_000,
                }),
                percentage: 10.0,
            }),
            abort: Some(PbAbort {
                http_status: 200,
                percentage: 100.0,
                grpc_status: Some(14),
            }),
        })
    );
    // A status of 700 leaves the entry without a fault, still in place so
    // the first-match order holds.
    assert_eq!(rules[1].source, "shop/late http 2");
    assert_eq!(rules[1].fault, None);
    let late = messages_about(&out, "shop/late");
    let has = |needle: &str| late.iter().any(|m| m.contains(needle));
    assert!(has("`retries` is not applied"), "{late:?}");
    assert!(has("`queryParams` is not supported"), "{late:?}");
    assert!(has("no match is usable"), "{late:?}");
    assert!(
        has("httpStatus 700 is not a status from 200 to 599"),
        "{late:?}"
    );
}

#[test]
fn a_grpc_abort_takes_istios_status_names_and_one_status_only() {
    let abort = |http_status: Option<i32>, grpc_status: Option<&str>| {
        convert_abort(&FaultAbort {
            http_status,
            grpc_status: grpc_status.map(str::to_owned),
            ..FaultAbort::default()
        })
    };
    let grpc = |name: &str| abort(None, Some(name)).map(|a| (a.http_status, a.grpc_status));
    assert_eq!(grpc("OK"), Ok((200, Some(0))));
    assert_eq!(grpc("NOT_FOUND"), Ok((200, Some(5))));
    assert_eq!(grpc("UNAVAILABLE"), Ok((200, Some(14))));
    assert_eq!(grpc("UNAUTHENTICATED"), Ok((200, Some(16))));
    // Names only, in Istio's spelling.
    for bad in ["Unavailable", "14", "CANCELED", ""] {
        let why = grpc(bad).unwrap_err();
        assert!(why.contains("is not a gRPC status"), "{bad:?}: {why}");
    }
    let both = abort(Some(503), Some("UNAVAILABLE")).unwrap_err();
    assert!(both.contains("both httpStatus and grpcStatus"), "{both}");
    let neither = abort(None, None).unwrap_err();
    assert!(
        neither.contains("neither httpStatus nor grpcStatus"),
        "{neither}"
    );
    let http = abort(Some(503), None).unwrap();
    assert_eq!((http.http_status, http.grpc_status), (503, None));
}

#[test]
fn an_unset_percentage_is_every_request() {
    assert_eq!(percentage(None, None), Ok(100.0));
    assert_eq!(percentage(None, Some(25)), Ok(25.0));
    assert!(percentage(Some(&Percent { value: 100.5 }), None).is_err());
    assert!(percentage(Some(&Percent { value: f64::NAN }), None).is_err());
}

#[test]
fn durations_take_the_protobuf_and_the_kubernetes_forms() {
    let d = |s: &str| duration("fixedDelay", s).map(|d| (d.seconds, d.nanos));
    assert_eq!(d("5s"), Ok((5, 0)));
    assert_eq!(d("0.2s"), Ok((0, 200_000_000)));
    assert_eq!(d("200ms"), Ok((0, 200_000_000)));
    assert_eq!(d("2m"), Ok((120, 0)));
    for bad in ["", "5", "s", "-1s", "1.2.3s", "1d", "25h"] {
        assert!(d(bad).is_err(), "{bad:?} parsed");
    }
}

#[test]
fn host_names_resolve_to_services() {
    let config = MeshConfig::default();
    let of = |host: &str| service_of_host(&config, "shop", host);
    let svc = |ns: &str, name: &str| Some((ns.to_string(), name.to_string()));
    assert_eq!(of("reviews"), svc("shop", "reviews"));
    assert_eq!(of("reviews.other"), svc("other", "reviews"));
    assert_eq!(of("reviews.other.svc"), svc("other", "reviews"));
    assert_eq!(
        of("reviews.other.svc.cluster.local"),
        svc("other", "reviews")
    );
    assert_eq!(of("*.other.svc.cluster.local"), None);
    assert_eq!(of("example.com.au"), None);
    assert_eq!(of("*"), None);
}

#[test]
fn every_resource_converts_in_the_waypoint() {
    for resource in translated().faults.into_values() {
        let name = resource.hostname.clone();
        if let Err(error) = waypoint::fault::ServiceFaults::try_from(resource) {
            panic!("{name}: the waypoint rejects it: {error}");
        }
    }
}

//! The conversion of a pushed `WaypointRoutes`: every field set, carried
//! through protobuf bytes and converted, gives exactly the domain values;
//! unset fields give the documented defaults. Each invalid value is
//! rejected with an error that names the route, the rule and the field
//! (`rejections`).

use std::time::{Duration, SystemTime};

use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use prost::Message;
use proto::waypoint as pb;
use proto::waypoint::{filter, path_match, path_modifier, string_match, weighted_backend};

use super::*;
use crate::route::Selection;
use crate::testing::get;

// === builders ===

fn resource(routes: Vec<pb::Route>) -> pb::WaypointRoutes {
    pb::WaypointRoutes {
        hostname: "catalog.shop.svc.cluster.local".into(),
        port: 8080,
        routes,
    }
}

fn pb_route(namespace: &str, name: &str, created: i64, rules: Vec<pb::Rule>) -> pb::Route {
    pb::Route {
        namespace: namespace.into(),
        name: name.into(),
        creation_timestamp: Some(prost_types::Timestamp {
            seconds: created,
            nanos: 0,
        }),
        rules,
    }
}

fn service_ref(hostname: &str, port: u32) -> pb::ServiceRef {
    pb::ServiceRef {
        hostname: hostname.into(),
        port,
    }
}

fn to_service(hostname: &str, port: u32) -> pb::WeightedBackend {
    pb::WeightedBackend {
        backend: Some(weighted_backend::Backend::Service(service_ref(
            hostname, port,
        ))),
        weight: 1,
        filters: Vec::new(),
    }
}

fn header(name: &str, value: &str) -> pb::Header {
    pb::Header {
        name: name.into(),
        value: value.into(),
    }
}

fn set_header(name: &str, value: &str) -> pb::Filter {
    pb::Filter {
        kind: Some(filter::Kind::RequestHeaderModifier(pb::HeaderModifier {
            set: vec![header(name, value)],
            ..Default::default()
        })),
    }
}

fn exact_path(path: &str) -> pb::PathMatch {
    pb::PathMatch {
        kind: Some(path_match::Kind::Exact(path.into())),
    }
}

fn seconds(seconds: i64, nanos: i32) -> prost_types::Duration {
    prost_types::Duration { seconds, nanos }
}

/// `rule` as rule 2 of route `shop/catalog`, after two valid rules, so
/// that positions in errors are not all zero.
fn with_rule(rule: pb::Rule) -> pb::WaypointRoutes {
    let valid = pb::Rule {
        backends: vec![to_service("catalog.shop.svc.cluster.local", 8080)],
        ..Default::default()
    };
    resource(vec![pb_route(
        "shop",
        "catalog",
        1,
        vec![valid.clone(), valid, rule],
    )])
}

/// `filter` as filter 1 of rule 2 of route `shop/catalog`.
fn with_filter(filter: pb::Filter) -> pb::WaypointRoutes {
    with_rule(pb::Rule {
        filters: vec![set_header("x-ok", "yes"), filter],
        ..Default::default()
    })
}

/// `request_match` as match 0 of rule 2 of route `shop/catalog`.
fn with_match(request_match: pb::RequestMatch) -> pb::WaypointRoutes {
    with_rule(pb::Rule {
        matches: vec![request_match],
        ..Default::default()
    })
}

/// The message `resource` is rejected with, checked to be the same through
/// [`routes_from_proto`] and through `RouteTable::try_from`.
fn rejected(resource: pb::WaypointRoutes) -> String {
    let invalid = routes_from_proto(resource.clone()).unwrap_err();
    match RouteTable::try_from(resource) {
        Err(ConvertError::Invalid(same)) => assert_eq!(same, invalid),
        other => panic!("expected ConvertError::Invalid, got {other:?}"),
    }
    invalid.to_string()
}

// === every field, and the defaults ===

#[test]
fn every_field_survives_the_wire_and_converts() {
    let rule = pb::Rule {
        name: "checkout".into(),
        matches: vec![
            pb::RequestMatch {
                path: Some(exact_path("/cart")),
                headers: vec![
                    pb::HeaderMatch {
                        name: "X-Version".into(),
                        value: Some(pb::StringMatch {
                            kind: Some(string_match::Kind::Exact("v2".into())),
                        }),
                    },
                    pb::HeaderMatch {
                        name: "x-user".into(),
                        value: Some(pb::StringMatch {
                            kind: Some(string_match::Kind::RegularExpression("a.*".into())),
                        }),
                    },
                ],
                query_params: vec![
                    pb::QueryParamMatch {
                        name: "debug".into(),
                        value: Some(pb::StringMatch {
                            kind: Some(string_match::Kind::Exact("1".into())),
                        }),
                    },
                    pb::QueryParamMatch {
                        name: "id".into(),
                        value: Some(pb::StringMatch {
                            kind: Some(string_match::Kind::RegularExpression("[0-9]+".into())),
                        }),
                    },
                ],
                method: "POST".into(),
            },
            pb::RequestMatch {
                path: Some(pb::PathMatch {
                    kind: Some(path_match::Kind::Prefix("/api".into())),
                }),
                ..Default::default()
            },
            pb::RequestMatch {
                path: Some(pb::PathMatch {
                    kind: Some(path_match::Kind::RegularExpression("/v[0-9]+/.*".into())),
                }),
                ..Default::default()
            },
        ],
        filters: vec![
            pb::Filter {
                kind: Some(filter::Kind::RequestHeaderModifier(pb::HeaderModifier {
                    set: vec![header("x-set", "1")],
                    add: vec![header("X-Add", "café")],
                    remove: vec!["x-remove".into()],
                })),
            },
            pb::Filter {
                kind: Some(filter::Kind::ResponseHeaderModifier(pb::HeaderModifier {
                    set: vec![header("cache-control", "no-store")],
                    ..Default::default()
                })),
            },
            pb::Filter {
                kind: Some(filter::Kind::RequestRedirect(pb::RequestRedirect {
                    scheme: "https".into(),
                    hostname: "shop.example.com".into(),
                    port: 8443,
                    path: Some(pb::PathModifier {
                        kind: Some(path_modifier::Kind::ReplaceFullPath("/new".into())),
                    }),
                    status_code: 308,
                })),
            },
            pb::Filter {
                kind: Some(filter::Kind::RequestMirror(pb::RequestMirror {
                    backend: Some(service_ref("shadow.shop.svc.cluster.local", 8080)),
                    fraction: Some(pb::Fraction {
                        numerator: 5,
                        denominator: 1000,
                    }),
                })),
            },
        ],
        backends: vec![
            pb::WeightedBackend {
                backend: Some(weighted_backend::Backend::Service(service_ref(
                    "catalog-v2.shop.svc.cluster.local",
                    9090,
                ))),
                weight: 90,
                filters: vec![pb::Filter {
                    kind: Some(filter::Kind::UrlRewrite(pb::UrlRewrite {
                        hostname: "catalog-v2.internal".into(),
                        path: Some(pb::PathModifier {
                            kind: Some(path_modifier::Kind::ReplacePrefixMatch("/v2".into())),
                        }),
                    })),
                }],
            },
            pb::WeightedBackend {
                backend: Some(weighted_backend::Backend::Invalid(pb::InvalidBackend {
                    reason: "service \"gone\" not found".into(),
                })),
                weight: 10,
                filters: Vec::new(),
            },
        ],
        timeouts: Some(pb::Timeouts {
            request: Some(seconds(10, 500_000_000)),
            backend_request: Some(seconds(2, 0)),
        }),
        retry: Some(pb::Retry {
            codes: vec![503, 504],
            attempts: 3,
            backoff: Some(seconds(0, 25_000_000)),
        }),
    };
    let sent = resource(vec![
        pb::Route {
            creation_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 42,
            }),
            ..pb_route("shop", "catalog", 0, vec![rule])
        },
        pb_route("shop", "legacy", -10, Vec::new()),
    ]);
    let received = pb::WaypointRoutes::decode(sent.encode_to_vec().as_slice()).unwrap();
    assert_eq!(received, sent);

    let (service, routes) = routes_from_proto(received).unwrap();
    assert_eq!(
        service,
        ServiceKey {
            hostname: "catalog.shop.svc.cluster.local".into(),
            port: 8080,
        }
    );
    let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).unwrap();
    let value = |v: &str| HeaderValue::from_bytes(v.as_bytes()).unwrap();
    let expected_rule = Rule {
        name: Some("checkout".into()),
        matches: vec![
            RequestMatch {
                path: PathMatch::Exact("/cart".into()),
                headers: vec![
                    HeaderMatch {
                        name: name("x-version"),
                        value: ValueMatch::Exact("v2".into()),
                    },
                    HeaderMatch {
                        name: name("x-user"),
                        value: ValueMatch::RegularExpression("a.*".into()),
                    },
                ],
                query_params: vec![
                    QueryParamMatch {
                        name: "debug".into(),
                        value: ValueMatch::Exact("1".into()),
                    },
                    QueryParamMatch {
                        name: "id".into(),
                        value: ValueMatch::RegularExpression("[0-9]+".into()),
                    },
                ],
                method: Some(Method::POST),
            },
            RequestMatch {
                path: PathMatch::Prefix("/api".into()),
                ..RequestMatch::default()
            },
            RequestMatch {
                path: PathMatch::RegularExpression("/v[0-9]+/.*".into()),
                ..RequestMatch::default()
            },
        ],
        filters: vec![
            Filter::RequestHeaderModifier(HeaderModifier {
                set: vec![(name("x-set"), value("1"))],
                add: vec![(name("x-add"), value("café"))],
                remove: vec![name("x-remove")],
            }),
            Filter::ResponseHeaderModifier(HeaderModifier {
                set: vec![(name("cache-control"), value("no-store"))],
                ..HeaderModifier::default()
            }),
            Filter::RequestRedirect(RequestRedirect {
                scheme: Some(Scheme::HTTPS),
                hostname: Some("shop.example.com".into()),
                port: Some(8443),
                path: Some(PathModifier::ReplaceFullPath("/new".into())),
                status: RedirectStatus::PermanentRedirect,
            }),
            Filter::RequestMirror(RequestMirror {
                backend: ServiceKey {
                    hostname: "shadow.shop.svc.cluster.local".into(),
                    port: 8080,
                },
                fraction: Fraction {
                    numerator: 5,
                    denominator: 1000,
                },
            }),
        ],
        backends: vec![
            WeightedBackend {
                backend: Backend::Service(ServiceKey {
                    hostname: "catalog-v2.shop.svc.cluster.local".into(),
                    port: 9090,
                }),
                weight: 90,
                filters: vec![Filter::UrlRewrite(UrlRewrite {
                    hostname: Some("catalog-v2.internal".into()),
                    path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
                })],
            },
            WeightedBackend {
                backend: Backend::Invalid {
                    reason: "service \"gone\" not found".into(),
                },
                weight: 10,
                filters: Vec::new(),
            },
        ],
        timeouts: Timeouts {
            request: Some(Duration::from_millis(10_500)),
            backend_request: Some(Duration::from_secs(2)),
        },
        retry: Some(Retry {
            codes: vec![StatusCode::SERVICE_UNAVAILABLE, StatusCode::GATEWAY_TIMEOUT],
            attempts: 3,
            backoff: Some(Duration::from_millis(25)),
        }),
    };
    assert_eq!(
        routes,
        vec![
            Route {
                namespace: "shop".into(),
                name: "catalog".into(),
                creation_timestamp: SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 42),
                rules: vec![expected_rule],
            },
            Route {
                namespace: "shop".into(),
                name: "legacy".into(),
                creation_timestamp: SystemTime::UNIX_EPOCH - Duration::from_secs(10),
                rules: Vec::new(),
            },
        ]
    );
}

#[test]
fn unset_fields_take_the_documented_defaults() {
    let rule = pb::Rule {
        matches: vec![pb::RequestMatch::default()],
        filters: vec![
            pb::Filter {
                kind: Some(filter::Kind::RequestRedirect(pb::RequestRedirect::default())),
            },
            pb::Filter {
                kind: Some(filter::Kind::RequestMirror(pb::RequestMirror {
                    backend: Some(service_ref("shadow.shop.svc.cluster.local", 8080)),
                    fraction: None,
                })),
            },
        ],
        timeouts: Some(pb::Timeouts {
            request: Some(seconds(0, 0)),
            backend_request: None,
        }),
        retry: Some(pb::Retry::default()),
        ..Default::default()
    };
    let bare = pb::Rule::default();
    let (_, routes) = routes_from_proto(resource(vec![pb_route(
        "shop",
        "catalog",
        1,
        vec![rule, bare],
    )]))
    .unwrap();
    let rules = &routes[0].rules;

    assert_eq!(rules[0].name, None);
    assert_eq!(rules[0].matches, vec![RequestMatch::default()]);
    assert_eq!(
        rules[0].filters,
        vec![
            Filter::RequestRedirect(RequestRedirect::default()),
            Filter::RequestMirror(RequestMirror {
                backend: ServiceKey {
                    hostname: "shadow.shop.svc.cluster.local".into(),
                    port: 8080,
                },
                fraction: Fraction::ALL,
            }),
        ]
    );
    // A zero timeout is the Gateway API's `0s`: none.
    assert_eq!(rules[0].timeouts, Timeouts::default());
    assert_eq!(
        rules[0].retry,
        Some(Retry {
            codes: Vec::new(),
            attempts: 0,
            backoff: None,
        })
    );
    assert_eq!(rules[1], Rule::default());
}

#[test]
fn a_resource_becomes_a_route_table() {
    let routes = resource(vec![pb_route(
        "shop",
        "catalog",
        1,
        vec![pb::Rule {
            matches: vec![pb::RequestMatch {
                path: Some(exact_path("/cart")),
                ..Default::default()
            }],
            ..Default::default()
        }],
    )]);
    let table = RouteTable::try_from(routes).unwrap();
    assert_eq!(table.service().port, 8080);
    assert!(table.select(&get("/cart").head()).matched().is_some());
    assert!(matches!(
        table.select(&get("/other").head()),
        Selection::NoRoute
    ));

    let empty = RouteTable::try_from(resource(Vec::new())).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn what_only_the_table_can_check_is_a_build_error() {
    let bad_regex = with_match(pb::RequestMatch {
        path: Some(pb::PathMatch {
            kind: Some(path_match::Kind::RegularExpression("(".into())),
        }),
        ..Default::default()
    });
    assert!(routes_from_proto(bad_regex.clone()).is_ok());
    let error = RouteTable::try_from(bad_regex).unwrap_err();
    assert!(matches!(
        error,
        ConvertError::Build(BuildError::InvalidRegex(_))
    ));
    assert!(
        error
            .to_string()
            .starts_with("HTTPRoute shop/catalog rule 2 match 0:"),
        "{error}"
    );
}

mod rejections;

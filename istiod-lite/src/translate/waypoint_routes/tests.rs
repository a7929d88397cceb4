//! The waypoint route translation, from `tests/fixtures/waypoint_routes.yaml`
//! (the full feature set) and small inline documents (one failure each).

// Helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

use super::*;
use proto::waypoint::{filter, path_modifier};

const FIXTURE: &str = include_str!("../../../tests/fixtures/waypoint_routes.yaml");

/// The fixture's Namespace and Services, for inline routes to attach to.
fn services() -> &'static str {
    let head = FIXTURE.split("# A canary").next().unwrap();
    head.trim_end().trim_end_matches("---")
}

fn translate(yaml: &str) -> WaypointRoutesTranslated {
    let index = Index::from_yaml(yaml).unwrap();
    translate_waypoint_routes(&index, &MeshConfig::default())
}

/// Translates the fixture's Services plus `route` (a route document).
fn with_route(route: &str) -> WaypointRoutesTranslated {
    translate(&format!("{}---\n{route}", services()))
}

fn messages(out: &WaypointRoutesTranslated) -> Vec<String> {
    out.diagnostics.iter().map(|d| d.message.clone()).collect()
}

fn resource<'a>(out: &'a WaypointRoutesTranslated, name: &str) -> &'a pb::WaypointRoutes {
    out.routes
        .get(name)
        .unwrap_or_else(|| panic!("no resource {name}: {:?}", out.routes.keys()))
}

/// The only rule of the only route of `name`.
fn only_rule<'a>(out: &'a WaypointRoutesTranslated, name: &str) -> &'a pb::Rule {
    let routes = &resource(out, name).routes;
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].rules.len(), 1, "{:?}", routes[0].rules);
    &routes[0].rules[0]
}

fn service_backend(hostname: &str, port: u32, weight: u32) -> pb::WeightedBackend {
    pb::WeightedBackend {
        backend: Some(weighted_backend::Backend::Service(service_ref(
            hostname, port,
        ))),
        weight,
        filters: Vec::new(),
    }
}

fn service_ref(hostname: &str, port: u32) -> pb::ServiceRef {
    pb::ServiceRef {
        hostname: hostname.to_string(),
        port,
    }
}

fn invalid_backend(reason: &str, weight: u32) -> pb::WeightedBackend {
    pb::WeightedBackend {
        backend: Some(weighted_backend::Backend::Invalid(pb::InvalidBackend {
            reason: reason.to_string(),
        })),
        weight,
        filters: Vec::new(),
    }
}

fn header(name: &str, value: &str) -> pb::Header {
    pb::Header {
        name: name.to_string(),
        value: value.to_string(),
    }
}

fn exact(value: &str) -> Option<pb::StringMatch> {
    Some(pb::StringMatch {
        kind: Some(string_match::Kind::Exact(value.to_string())),
    })
}

fn path(kind: path_match::Kind) -> Option<pb::PathMatch> {
    Some(pb::PathMatch { kind: Some(kind) })
}

fn duration(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

const REVIEWS: &str = "reviews.shop.svc.cluster.local";
const REVIEWS_V2: &str = "reviews-v2.shop.svc.cluster.local";
const RATINGS: &str = "ratings.shop.svc.cluster.local";

/// A route on `ratings` (every port) with `rule` as its only rule.
fn ratings_rule(rule: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  \
         namespace: shop\nspec:\n  parentRefs:\n  - group: \"\"\n    kind: Service\n    name: \
         ratings\n  rules:\n  - {}\n",
        rule.trim().replace('\n', "\n    ")
    )
}

// === the fixture ===

#[test]
fn one_resource_per_attached_service_port_and_none_without_routes() {
    let out = translate(FIXTURE);
    let names: Vec<&str> = out.routes.keys().map(String::as_str).collect();
    // reviews: both ports (no port in the parentRef); ratings: the one
    // named; reviews-v2 has no route, so no resource.
    assert_eq!(
        names,
        [
            "ratings.shop.svc.cluster.local:8080",
            "reviews.shop.svc.cluster.local:9080",
            "reviews.shop.svc.cluster.local:9090",
        ]
    );
    let reviews = resource(&out, "reviews.shop.svc.cluster.local:9090");
    assert_eq!((reviews.hostname.as_str(), reviews.port), (REVIEWS, 9090));
    let route = &reviews.routes[0];
    assert_eq!(
        (route.namespace.as_str(), route.name.as_str()),
        ("shop", "reviews-canary")
    );
    // 2024-05-01T10:00:00Z.
    assert_eq!(
        route.creation_timestamp,
        Some(prost_types::Timestamp {
            seconds: 1_714_557_600,
            nanos: 0
        })
    );
}

#[test]
fn matches_keep_every_condition() {
    let out = translate(FIXTURE);
    let rule = &resource(&out, "reviews.shop.svc.cluster.local:9080").routes[0].rules[0];
    assert_eq!(rule.name, "to-v2");
    let first = pb::RequestMatch {
        path: path(path_match::Kind::Prefix("/api".into())),
        headers: vec![
            pb::HeaderMatch {
                name: "x-canary".into(),
                value: exact("yes"),
            },
            pb::HeaderMatch {
                name: "x-user".into(),
                value: Some(pb::StringMatch {
                    kind: Some(string_match::Kind::RegularExpression(
                        "tester-[0-9]+".into(),
                    )),
                }),
            },
        ],
        query_params: vec![pb::QueryParamMatch {
            name: "debug".into(),
            value: exact("1"),
        }],
        method: "GET".into(),
    };
    assert_eq!(
        rule.matches,
        [
            first,
            pb::RequestMatch {
                path: path(path_match::Kind::Exact("/health".into())),
                ..Default::default()
            },
            pb::RequestMatch {
                path: path(path_match::Kind::RegularExpression("/v[12]/.*".into())),
                ..Default::default()
            },
        ]
    );
    assert_eq!(rule.backends, [service_backend(REVIEWS_V2, 9080, 1)]);
}

#[test]
fn weighted_backends_timeouts_retry_and_a_missing_backend() {
    let out = translate(FIXTURE);
    let rule = &resource(&out, "reviews.shop.svc.cluster.local:9080").routes[0].rules[1];
    assert!(
        rule.matches.is_empty(),
        "no matches stays empty: PathPrefix /"
    );
    assert_eq!(
        rule.backends,
        [
            service_backend(REVIEWS, 9080, 90),
            service_backend(REVIEWS_V2, 9080, 10),
            // Missing: kept with its default weight, so 1/101 of requests get 500.
            invalid_backend("service \"shop/reviews-v3\" not found", 1),
        ]
    );
    assert_eq!(
        rule.timeouts,
        Some(pb::Timeouts {
            request: duration(10, 0),
            backend_request: duration(0, 500_000_000),
        })
    );
    assert_eq!(
        rule.retry,
        Some(pb::Retry {
            codes: vec![503, 504],
            attempts: 3,
            backoff: duration(0, 100_000_000),
        })
    );
    let warnings: Vec<&Diagnostic> = out
        .diagnostics
        .iter()
        .filter(|d| d.resource == "reviews.shop.svc.cluster.local:9080")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].resource_type, ResourceType::WaypointRoutes);
    assert_eq!(warnings[0].severity, Severity::Warning);
    assert_eq!(
        warnings[0].object,
        ObjectKey::new(ObjectKind::HttpRoute, "shop", "reviews-canary")
    );
    assert!(
        warnings[0].message.contains("reviews-v3") && warnings[0].message.contains("500"),
        "{}",
        warnings[0].message
    );
}

#[test]
fn filters_with_gateway_api_defaults_filled_in() {
    let out = translate(FIXTURE);
    let route = &resource(&out, "ratings.shop.svc.cluster.local:8080").routes[0];
    // No creationTimestamp in the file: the Unix epoch.
    assert_eq!(
        route.creation_timestamp,
        Some(prost_types::Timestamp::default())
    );

    let redirect = &route.rules[0];
    assert_eq!(
        redirect.filters,
        [pb::Filter {
            kind: Some(filter::Kind::RequestRedirect(pb::RequestRedirect {
                scheme: "https".into(),
                hostname: "ratings.example.com".into(),
                port: 0,
                path: Some(pb::PathModifier {
                    kind: Some(path_modifier::Kind::ReplacePrefixMatch("/new".into())),
                }),
                status_code: 302,
            })),
        }]
    );
    // GAMMA: no backendRefs means the parent service port.
    assert_eq!(redirect.backends, [service_backend(RATINGS, 8080, 1)]);

    let rule = &route.rules[1];
    let kinds: Vec<filter::Kind> = rule
        .filters
        .iter()
        .map(|f| f.kind.clone().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            filter::Kind::RequestHeaderModifier(pb::HeaderModifier {
                set: vec![header("x-route", "ratings")],
                add: vec![header("x-trace", "on")],
                remove: vec!["x-debug".into()],
            }),
            filter::Kind::ResponseHeaderModifier(pb::HeaderModifier {
                set: vec![header("cache-control", "no-store")],
                ..Default::default()
            }),
            filter::Kind::UrlRewrite(pb::UrlRewrite {
                hostname: "ratings-internal".into(),
                path: Some(pb::PathModifier {
                    kind: Some(path_modifier::Kind::ReplaceFullPath("/v2".into())),
                }),
            }),
            filter::Kind::RequestMirror(pb::RequestMirror {
                backend: Some(service_ref(REVIEWS_V2, 9080)),
                fraction: Some(pb::Fraction {
                    numerator: 25,
                    denominator: 100,
                }),
            }),
            // No percent: every request.
            filter::Kind::RequestMirror(pb::RequestMirror {
                backend: Some(service_ref(REVIEWS, 9090)),
                fraction: Some(pb::Fraction {
                    numerator: 100,
                    denominator: 100,
                }),
            }),
        ]
    );
    assert_eq!(rule.backends.len(), 1);
    assert_eq!(
        rule.backends[0].filters,
        [pb::Filter {
            kind: Some(filter::Kind::RequestHeaderModifier(pb::HeaderModifier {
                set: vec![header("x-backend", "ratings")],
                ..Default::default()
            })),
        }]
    );
}

#[test]
fn translation_is_deterministic() {
    assert_eq!(translate(FIXTURE), translate(FIXTURE));
}

// === attachment ===

#[test]
fn a_missing_parent_service_yields_nothing_and_a_warning() {
    let out = with_route(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  \
         namespace: shop\nspec:\n  parentRefs:\n  - {group: \"\", kind: Service, name: gone}\n  \
         rules:\n  - {}\n",
    );
    assert!(out.routes.is_empty());
    assert_eq!(out.diagnostics.len(), 1);
    assert_eq!(out.diagnostics[0].resource, "gone.shop.svc.cluster.local");
    assert!(
        out.diagnostics[0]
            .message
            .contains("shop/gone does not exist")
    );
}

#[test]
fn parent_refs_that_name_no_service_of_the_namespace() {
    let out = with_route(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  \
         namespace: shop\nspec:\n  parentRefs:\n  - {name: some-gateway}\n  - {kind: Service, \
         name: ratings}\n  - {group: \"\", kind: Service, name: other, namespace: elsewhere}\n  \
         - {group: \"\", kind: Service, name: ratings, port: 9999}\n  rules:\n  - {}\n",
    );
    assert!(out.routes.is_empty(), "{:?}", out.routes);
    let messages = messages(&out);
    // The Gateway parent is not ours and says nothing; the other three warn.
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("write `group: \"\"`")));
    assert!(messages.iter().any(|m| m.contains("consumer route")));
    assert!(messages.iter().any(|m| m.contains("has no port 9999")));
}

#[test]
fn section_name_selects_a_named_port_and_duplicates_attach_once() {
    let out = with_route(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: r\n  \
         namespace: shop\nspec:\n  parentRefs:\n  - {group: \"\", kind: Service, name: reviews, \
         sectionName: admin}\n  - {group: \"\", kind: Service, name: reviews, port: 9090}\n  \
         rules:\n  - {}\n",
    );
    let names: Vec<&String> = out.routes.keys().collect();
    assert_eq!(names, ["reviews.shop.svc.cluster.local:9090"]);
    assert_eq!(
        resource(&out, "reviews.shop.svc.cluster.local:9090")
            .routes
            .len(),
        1
    );
    // The default backend is the parent port the route attached to.
    assert_eq!(
        only_rule(&out, "reviews.shop.svc.cluster.local:9090").backends,
        [service_backend(REVIEWS, 9090, 1)]
    );
}

// === invalid config fails small ===

#[test]
fn unresolvable_backends_become_invalid_with_their_weight() {
    let out = with_route(&ratings_rule(
        "backendRefs:\n- {name: other, namespace: elsewhere, port: 80, weight: 3}\n- {name: \
         ratings}\n- {name: ratings, port: 1234}\n- {group: example.com, kind: Bucket, name: b}\n- \
         {name: ratings, port: 8080, weight: 0}",
    ));
    let backends = &only_rule(&out, "ratings.shop.svc.cluster.local:8080").backends;
    let reasons: Vec<(String, u32)> = backends
        .iter()
        .map(|b| match &b.backend {
            Some(weighted_backend::Backend::Invalid(i)) => (i.reason.clone(), b.weight),
            other => (format!("{other:?}"), b.weight),
        })
        .collect();
    assert!(reasons[0].0.contains("another namespace") && reasons[0].0.contains("ReferenceGrant"));
    assert_eq!(reasons[0].1, 3);
    assert!(reasons[1].0.contains("without a port"), "{reasons:?}");
    assert!(reasons[2].0.contains("has no port 1234"), "{reasons:?}");
    assert!(reasons[3].0.contains("Bucket.example.com"), "{reasons:?}");
    // Weight 0 is kept as 0: no traffic, not the default.
    assert_eq!(backends[4], service_backend(RATINGS, 8080, 0));
    assert_eq!(out.diagnostics.len(), 4, "{:?}", messages(&out));
}

#[test]
fn an_invalid_rule_keeps_its_matches_and_answers_500() {
    let cases = [
        (
            "filters:\n- type: ExtensionRef\n  extensionRef: {group: x, kind: Y, name: z}",
            "ExtensionRef",
        ),
        ("filters:\n- type: Bogus", "unknown type"),
        (
            "filters:\n- type: RequestHeaderModifier",
            "no matching field",
        ),
        ("timeouts: {request: 10 s}", "not a Gateway API duration"),
        ("retry: {codes: [302]}", "retry code 302"),
        (
            "filters:\n- type: RequestHeaderModifier\n  requestHeaderModifier:\n    set: [{name: \
             \"bad name\", value: v}]",
            "not a valid HTTP header name",
        ),
        (
            "filters:\n- type: RequestRedirect\n  requestRedirect: {statusCode: 305}",
            "status code 305",
        ),
        (
            "filters:\n- type: RequestRedirect\n  requestRedirect: {hostname: a}\n- type: \
             URLRewrite\n  urlRewrite: {hostname: b}",
            "cannot be combined",
        ),
        (
            "matches: [{path: {type: Exact, value: /a}}]\nfilters:\n- type: URLRewrite\n  \
             urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}",
            "exactly one match",
        ),
        (
            "filters:\n- type: RequestMirror\n  requestMirror: {backendRef: {name: ratings, port: \
             8080}, percent: 150}",
            "not a share",
        ),
    ];
    for (rule, expected) in cases {
        let out = with_route(&ratings_rule(&format!("name: broken\n{rule}")));
        let translated = only_rule(&out, "ratings.shop.svc.cluster.local:8080");
        assert_eq!(translated.name, "broken");
        assert!(
            translated.backends.is_empty() && translated.filters.is_empty(),
            "{rule}: {translated:?}"
        );
        assert_eq!((&translated.timeouts, &translated.retry), (&None, &None));
        let messages = messages(&out);
        assert_eq!(messages.len(), 1, "{rule}: {messages:?}");
        assert!(
            messages[0].contains(expected) && messages[0].contains("get 500"),
            "{rule}: {messages:?}"
        );
    }
}

#[test]
fn a_rule_with_invalid_matches_is_left_out() {
    let cases = [
        (
            "matches: [{path: {type: RegularExpression, value: \"(\"}}]",
            "does not compile",
        ),
        (
            "matches: [{path: {type: Exact, value: relative}}]",
            "does not start with `/`",
        ),
        ("matches: [{method: get}]", "case-sensitive"),
        (
            "matches: [{headers: [{name: \"a b\", value: v}]}]",
            "header name",
        ),
    ];
    for (rule, expected) in cases {
        let out = with_route(&ratings_rule(rule));
        let resource = resource(&out, "ratings.shop.svc.cluster.local:8080");
        assert!(resource.routes[0].rules.is_empty(), "{rule}");
        let messages = messages(&out);
        assert!(
            messages.len() == 1 && messages[0].contains(expected),
            "{rule}: {messages:?}"
        );
    }
}

#[test]
fn a_mirror_to_a_missing_service_is_dropped_alone() {
    let out = with_route(&ratings_rule(
        "filters:\n- type: RequestMirror\n  requestMirror: {backendRef: {name: gone, port: 80}}\n- \
         type: ResponseHeaderModifier\n  responseHeaderModifier: {remove: [server]}",
    ));
    let rule = only_rule(&out, "ratings.shop.svc.cluster.local:8080");
    assert_eq!(rule.filters.len(), 1);
    assert!(matches!(
        rule.filters[0].kind,
        Some(filter::Kind::ResponseHeaderModifier(_))
    ));
    assert_eq!(rule.backends, [service_backend(RATINGS, 8080, 1)]);
    assert!(messages(&out)[0].contains("not mirrored"));
}

#[test]
fn retry_defaults_and_fraction_mirrors() {
    let out = with_route(&ratings_rule(
        "retry: {codes: [503]}\nfilters:\n- type: RequestMirror\n  requestMirror: {backendRef: \
         {name: ratings, port: 8080}, fraction: {numerator: 1}}",
    ));
    let rule = only_rule(&out, "ratings.shop.svc.cluster.local:8080");
    assert_eq!(
        rule.retry,
        Some(pb::Retry {
            codes: vec![503],
            attempts: DEFAULT_RETRY_ATTEMPTS,
            backoff: None,
        })
    );
    let Some(filter::Kind::RequestMirror(mirror)) = &rule.filters[0].kind else {
        panic!("{:?}", rule.filters);
    };
    assert_eq!(
        mirror.fraction,
        Some(pb::Fraction {
            numerator: 1,
            denominator: 100
        })
    );
    assert!(out.diagnostics.is_empty(), "{:?}", messages(&out));
}

// === durations ===

#[test]
fn gateway_api_durations() {
    let ok = [
        ("0s", 0, 0),
        ("10s", 10, 0),
        ("500ms", 0, 500_000_000),
        ("1h", 3600, 0),
        ("1h30m", 5400, 0),
        ("1h1m1s1ms", 3661, 1_000_000),
        ("99999ms", 99, 999_000_000),
    ];
    for (text, seconds, nanos) in ok {
        assert_eq!(
            values::duration("d", text),
            Ok(prost_types::Duration { seconds, nanos }),
            "{text}"
        );
    }
    for text in [
        "",
        "1",
        "s",
        "1.5s",
        "-1s",
        "123456s",
        "1d",
        "10 s",
        "1s1s1s1s1s",
        "1S",
    ] {
        let error = values::duration("timeouts.request", text).unwrap_err();
        assert!(error.0.starts_with("timeouts.request"), "{text}: {error}");
    }
}

#[test]
fn every_fixture_resource_is_accepted_by_the_waypoint() {
    // The waypoint's own conversion is the contract: what we send, it takes.
    let out = translate(FIXTURE);
    assert!(!out.routes.is_empty());
    for (name, resource) in &out.routes {
        if let Err(error) = waypoint::route::RouteTable::try_from(resource.clone()) {
            panic!("the waypoint rejects {name}: {error}");
        }
    }
}

//! Each invalid value of a `WaypointRoutes` rejected, with the whole
//! message: where (route, rule, field) and what is wrong.

use super::*;

// === rejections: the resource and its routes ===

#[test]
fn rejects_a_service_without_a_valid_hostname_or_port() {
    let mut no_host = resource(Vec::new());
    no_host.hostname.clear();
    assert_eq!(rejected(no_host), "the service hostname is not set");

    let mut upper = resource(Vec::new());
    upper.hostname = "Catalog.shop".into();
    assert_eq!(
        rejected(upper),
        "hostname `Catalog.shop` is not a valid host name: write a lowercase DNS name (RFC 1123) \
         without a port"
    );

    for port in [0, 65_536] {
        let mut bad = resource(Vec::new());
        bad.port = port;
        assert_eq!(rejected(bad), format!("port {port} is not from 1 to 65535"));
    }
}

#[test]
fn rejects_a_route_without_namespace_name_or_valid_timestamp() {
    let no_namespace = resource(vec![pb_route("", "catalog", 1, Vec::new())]);
    assert_eq!(
        rejected(no_namespace),
        "HTTPRoute /catalog: the route namespace is not set"
    );
    let no_name = resource(vec![pb_route("shop", "", 1, Vec::new())]);
    assert_eq!(
        rejected(no_name),
        "HTTPRoute shop/: the route name is not set"
    );

    let mut no_timestamp = pb_route("shop", "catalog", 1, Vec::new());
    no_timestamp.creation_timestamp = None;
    assert_eq!(
        rejected(resource(vec![no_timestamp])),
        "HTTPRoute shop/catalog: the creation timestamp is not set"
    );

    for nanos in [-1, 1_000_000_000] {
        let mut bad = pb_route("shop", "catalog", 1, Vec::new());
        bad.creation_timestamp = Some(prost_types::Timestamp { seconds: 1, nanos });
        assert_eq!(
            rejected(resource(vec![bad])),
            format!(
                "HTTPRoute shop/catalog creation_timestamp: timestamp 1s {nanos}ns is out of \
                 range: nanos must be from 0 to 999999999 and the time representable"
            )
        );
    }
}

#[test]
fn a_named_rule_is_named_in_errors() {
    let named = with_rule(pb::Rule {
        name: "checkout".into(),
        filters: vec![pb::Filter { kind: None }],
        ..Default::default()
    });
    assert!(rejected(named).starts_with("HTTPRoute shop/catalog rule 2 (\"checkout\") filter 0: "),);
}

// === rejections: matches ===

#[test]
fn rejects_a_path_match_without_kind_or_leading_slash() {
    let no_kind = with_match(pb::RequestMatch {
        path: Some(pb::PathMatch { kind: None }),
        ..Default::default()
    });
    assert_eq!(
        rejected(no_kind),
        "HTTPRoute shop/catalog rule 2 match 0: the path match kind (exact, prefix or \
         regular_expression) is not set"
    );
    let relative = with_match(pb::RequestMatch {
        path: Some(pb::PathMatch {
            kind: Some(path_match::Kind::Prefix("api".into())),
        }),
        ..Default::default()
    });
    assert_eq!(
        rejected(relative),
        "HTTPRoute shop/catalog rule 2 match 0: path `api` does not start with `/`"
    );
}

#[test]
fn rejects_a_header_match_with_a_bad_name_or_no_value() {
    let ok = pb::HeaderMatch {
        name: "x-ok".into(),
        value: Some(pb::StringMatch {
            kind: Some(string_match::Kind::Exact("1".into())),
        }),
    };
    let bad_name = with_match(pb::RequestMatch {
        headers: vec![
            ok.clone(),
            pb::HeaderMatch {
                name: "bad name".into(),
                ..ok.clone()
            },
        ],
        ..Default::default()
    });
    assert_eq!(
        rejected(bad_name),
        "HTTPRoute shop/catalog rule 2 match 0 header 1: header name `bad name` is not a valid \
         HTTP header name"
    );
    let no_value = with_match(pb::RequestMatch {
        headers: vec![pb::HeaderMatch {
            value: None,
            ..ok.clone()
        }],
        ..Default::default()
    });
    assert_eq!(
        rejected(no_value),
        "HTTPRoute shop/catalog rule 2 match 0 header 0: the value match kind (exact or \
         regular_expression) is not set"
    );
}

#[test]
fn rejects_a_query_match_without_a_name() {
    let nameless = with_match(pb::RequestMatch {
        query_params: vec![pb::QueryParamMatch {
            name: String::new(),
            value: Some(pb::StringMatch {
                kind: Some(string_match::Kind::Exact("1".into())),
            }),
        }],
        ..Default::default()
    });
    assert_eq!(
        rejected(nameless),
        "HTTPRoute shop/catalog rule 2 match 0 query parameter 0: the query parameter name is not \
         set"
    );
}

#[test]
fn rejects_methods_the_gateway_api_does_not_name() {
    for method in ["get", "PURGE", "G ET"] {
        let bad = with_match(pb::RequestMatch {
            method: method.into(),
            ..Default::default()
        });
        assert_eq!(
            rejected(bad),
            format!(
                "HTTPRoute shop/catalog rule 2 match 0: method `{method}` is not one of GET, \
                 HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH (methods are \
                 case-sensitive)"
            )
        );
    }
}

// === rejections: filters ===

#[test]
fn rejects_a_filter_without_kind() {
    assert_eq!(
        rejected(with_filter(pb::Filter { kind: None })),
        "HTTPRoute shop/catalog rule 2 filter 1: the filter kind (request_header_modifier, \
         response_header_modifier, request_redirect, url_rewrite or request_mirror) is not set"
    );
}

#[test]
fn rejects_bad_header_names_in_modifiers() {
    assert_eq!(
        rejected(with_filter(set_header("bad name", "v"))),
        "HTTPRoute shop/catalog rule 2 filter 1 set 0: header name `bad name` is not a valid HTTP \
         header name"
    );
    let add = pb::Filter {
        kind: Some(filter::Kind::ResponseHeaderModifier(pb::HeaderModifier {
            add: vec![header("x-ok", "v"), header("", "v")],
            ..Default::default()
        })),
    };
    assert_eq!(
        rejected(with_filter(add)),
        "HTTPRoute shop/catalog rule 2 filter 1 add 1: header name `` is not a valid HTTP header \
         name"
    );
    let remove = pb::Filter {
        kind: Some(filter::Kind::RequestHeaderModifier(pb::HeaderModifier {
            remove: vec!["x:y".into()],
            ..Default::default()
        })),
    };
    assert_eq!(
        rejected(with_filter(remove)),
        "HTTPRoute shop/catalog rule 2 filter 1 remove 0: header name `x:y` is not a valid HTTP \
         header name"
    );
}

#[test]
fn rejects_header_values_with_control_characters() {
    assert_eq!(
        rejected(with_filter(set_header("x-evil", "a\r\nset-cookie: x"))),
        "HTTPRoute shop/catalog rule 2 filter 1 set 0: the value \"a\\r\\nset-cookie: x\" of \
         header `x-evil` is not a valid HTTP header value: control characters and line breaks \
         are not allowed"
    );
}

fn redirect(redirect: pb::RequestRedirect) -> pb::Filter {
    pb::Filter {
        kind: Some(filter::Kind::RequestRedirect(redirect)),
    }
}

#[test]
fn rejects_redirect_schemes_other_than_http_and_https() {
    let ftp = redirect(pb::RequestRedirect {
        scheme: "ftp".into(),
        ..Default::default()
    });
    assert_eq!(
        rejected(with_filter(ftp)),
        "HTTPRoute shop/catalog rule 2 filter 1: scheme `ftp` is neither `http` nor `https`"
    );
}

#[test]
fn rejects_redirect_status_codes_the_gateway_api_does_not_allow() {
    for code in [200, 304, 404] {
        let bad = redirect(pb::RequestRedirect {
            status_code: code,
            ..Default::default()
        });
        assert_eq!(
            rejected(with_filter(bad)),
            format!(
                "HTTPRoute shop/catalog rule 2 filter 1: redirect status code {code} is not one \
                 of 301, 302, 303, 307, 308"
            )
        );
    }
}

#[test]
fn rejects_bad_redirect_and_rewrite_hosts_and_ports() {
    let host_with_port = redirect(pb::RequestRedirect {
        hostname: "shop.example.com:8443".into(),
        ..Default::default()
    });
    assert_eq!(
        rejected(with_filter(host_with_port)),
        "HTTPRoute shop/catalog rule 2 filter 1: hostname `shop.example.com:8443` is not a valid \
         host name: write a lowercase DNS name (RFC 1123) without a port"
    );
    let big_port = redirect(pb::RequestRedirect {
        port: 70_000,
        ..Default::default()
    });
    assert_eq!(
        rejected(with_filter(big_port)),
        "HTTPRoute shop/catalog rule 2 filter 1: port 70000 is not from 1 to 65535"
    );
    let rewrite = pb::Filter {
        kind: Some(filter::Kind::UrlRewrite(pb::UrlRewrite {
            hostname: "-bad.example.com".into(),
            path: None,
        })),
    };
    assert_eq!(
        rejected(with_filter(rewrite)),
        "HTTPRoute shop/catalog rule 2 filter 1: hostname `-bad.example.com` is not a valid host \
         name: write a lowercase DNS name (RFC 1123) without a port"
    );
}

#[test]
fn rejects_a_path_modifier_without_kind() {
    let rewrite = pb::Filter {
        kind: Some(filter::Kind::UrlRewrite(pb::UrlRewrite {
            hostname: String::new(),
            path: Some(pb::PathModifier { kind: None }),
        })),
    };
    assert_eq!(
        rejected(with_filter(rewrite)),
        "HTTPRoute shop/catalog rule 2 filter 1: the path modifier kind (replace_full_path or \
         replace_prefix_match) is not set"
    );
}

fn mirror(backend: Option<pb::ServiceRef>, fraction: Option<pb::Fraction>) -> pb::Filter {
    pb::Filter {
        kind: Some(filter::Kind::RequestMirror(pb::RequestMirror {
            backend,
            fraction,
        })),
    }
}

#[test]
fn rejects_a_mirror_without_a_valid_backend() {
    assert_eq!(
        rejected(with_filter(mirror(None, None))),
        "HTTPRoute shop/catalog rule 2 filter 1: the mirror backend is not set"
    );
    let no_port = mirror(Some(service_ref("shadow.shop.svc.cluster.local", 0)), None);
    assert_eq!(
        rejected(with_filter(no_port)),
        "HTTPRoute shop/catalog rule 2 filter 1: port 0 is not from 1 to 65535"
    );
}

#[test]
fn rejects_a_mirror_fraction_that_is_not_a_share() {
    for (numerator, denominator) in [(1, 0), (101, 100)] {
        let bad = mirror(
            Some(service_ref("shadow.shop.svc.cluster.local", 8080)),
            Some(pb::Fraction {
                numerator,
                denominator,
            }),
        );
        assert_eq!(
            rejected(with_filter(bad)),
            format!(
                "HTTPRoute shop/catalog rule 2 filter 1: fraction {numerator}/{denominator} is \
                 not a share: the denominator must be at least 1 and the numerator no larger \
                 than it"
            )
        );
    }
}

// === rejections: backends, timeouts, retry ===

#[test]
fn rejects_a_backend_without_a_valid_target() {
    let unset = with_rule(pb::Rule {
        backends: vec![
            to_service("catalog.shop.svc.cluster.local", 8080),
            pb::WeightedBackend {
                backend: None,
                weight: 1,
                filters: Vec::new(),
            },
        ],
        ..Default::default()
    });
    assert_eq!(
        rejected(unset),
        "HTTPRoute shop/catalog rule 2 backend 1: the backend (service or invalid) is not set"
    );
    let no_host = with_rule(pb::Rule {
        backends: vec![to_service("", 8080)],
        ..Default::default()
    });
    assert_eq!(
        rejected(no_host),
        "HTTPRoute shop/catalog rule 2 backend 0: the service hostname is not set"
    );
}

#[test]
fn rejects_a_bad_filter_of_a_backend() {
    let backend = pb::WeightedBackend {
        filters: vec![set_header("x-ok", "1"), set_header("bad name", "1")],
        ..to_service("catalog.shop.svc.cluster.local", 8080)
    };
    let bad = with_rule(pb::Rule {
        backends: vec![backend],
        ..Default::default()
    });
    assert_eq!(
        rejected(bad),
        "HTTPRoute shop/catalog rule 2 backend 0 filter 1 set 0: header name `bad name` is not a \
         valid HTTP header name"
    );
}

#[test]
fn rejects_negative_and_unnormalized_timeouts() {
    let negative = with_rule(pb::Rule {
        timeouts: Some(pb::Timeouts {
            request: None,
            backend_request: Some(seconds(-1, 0)),
        }),
        ..Default::default()
    });
    assert_eq!(
        rejected(negative),
        "HTTPRoute shop/catalog rule 2 timeouts.backend_request: duration -1s 0ns is negative; \
         leave it unset for none"
    );
    let negative_nanos = with_rule(pb::Rule {
        timeouts: Some(pb::Timeouts {
            request: Some(seconds(0, -5)),
            backend_request: None,
        }),
        ..Default::default()
    });
    assert_eq!(
        rejected(negative_nanos),
        "HTTPRoute shop/catalog rule 2 timeouts.request: duration 0s -5ns is negative; leave it \
         unset for none"
    );
    for (secs, nanos) in [(1, 1_000_000_000), (1, -1), (-1, 1)] {
        let unnormalized = with_rule(pb::Rule {
            timeouts: Some(pb::Timeouts {
                request: Some(seconds(secs, nanos)),
                backend_request: None,
            }),
            ..Default::default()
        });
        assert_eq!(
            rejected(unnormalized),
            format!(
                "HTTPRoute shop/catalog rule 2 timeouts.request: duration {secs}s {nanos}ns is \
                 not normalized: nanos must be within ±999999999 and have the sign of seconds"
            )
        );
    }
}

#[test]
fn rejects_retry_codes_outside_400_to_599() {
    for code in [200, 399, 600, 70_000] {
        let bad = with_rule(pb::Rule {
            retry: Some(pb::Retry {
                codes: vec![503, code],
                attempts: 2,
                backoff: None,
            }),
            ..Default::default()
        });
        assert_eq!(
            rejected(bad),
            format!(
                "HTTPRoute shop/catalog rule 2: retry code {code} is not an HTTP status code \
                 from 400 to 599"
            )
        );
    }
}

#[test]
fn rejects_a_negative_retry_backoff() {
    let bad = with_rule(pb::Rule {
        retry: Some(pb::Retry {
            codes: vec![503],
            attempts: 2,
            backoff: Some(seconds(-2, 0)),
        }),
        ..Default::default()
    });
    assert_eq!(
        rejected(bad),
        "HTTPRoute shop/catalog rule 2 retry.backoff: duration -2s 0ns is negative; leave it \
         unset for none"
    );
}

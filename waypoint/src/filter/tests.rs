//! Every filter against the examples of the Gateway API spec.

use std::sync::Arc;

use http::uri::Scheme;
use http::{HeaderName, Method};

use super::*;
use crate::route::{Filter, Fraction, RedirectStatus, Selection};
use crate::testing::{MatchExt, get, prefix, request, route, rule, spread, table};

fn name(value: &'static str) -> HeaderName {
    HeaderName::from_static(value)
}

fn value(value: &'static str) -> HeaderValue {
    HeaderValue::from_static(value)
}

fn values<'h>(headers: &'h HeaderMap, header: &'static str) -> Vec<&'h str> {
    headers
        .get_all(header)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

// --- header modifiers ---

#[test]
fn set_replaces_every_value() {
    let mut headers = request(
        Method::GET,
        "/",
        &[("my-header", "foo"), ("my-header", "x")],
    )
    .headers;
    let modifier = HeaderModifier {
        set: vec![(name("my-header"), value("bar"))],
        ..HeaderModifier::default()
    };
    apply_header_modifier(&modifier, &mut headers);
    assert_eq!(values(&headers, "my-header"), ["bar"]);
}

#[test]
fn set_adds_a_missing_header() {
    let mut headers = HeaderMap::new();
    let modifier = HeaderModifier {
        set: vec![(name("x-new"), value("1"))],
        ..HeaderModifier::default()
    };
    apply_header_modifier(&modifier, &mut headers);
    assert_eq!(values(&headers, "x-new"), ["1"]);
}

#[test]
fn add_appends_to_existing_values() {
    let mut headers = request(Method::GET, "/", &[("my-header", "foo")]).headers;
    let modifier = HeaderModifier {
        add: vec![
            (name("my-header"), value("bar,baz")),
            (name("x-other"), value("1")),
        ],
        ..HeaderModifier::default()
    };
    apply_header_modifier(&modifier, &mut headers);
    assert_eq!(values(&headers, "my-header"), ["foo", "bar,baz"]);
    assert_eq!(values(&headers, "x-other"), ["1"]);
}

#[test]
fn remove_drops_every_value_whatever_the_case() {
    let mut headers = request(
        Method::GET,
        "/",
        &[
            ("My-Header1", "foo"),
            ("my-header2", "bar"),
            ("my-header3", "baz"),
            ("my-header1", "x"),
        ],
    )
    .headers;
    let modifier = HeaderModifier {
        remove: vec![
            HeaderName::from_bytes(b"MY-HEADER1").unwrap(),
            name("my-header3"),
            name("absent"),
        ],
        ..HeaderModifier::default()
    };
    apply_header_modifier(&modifier, &mut headers);
    assert!(headers.get("my-header1").is_none());
    assert!(headers.get("my-header3").is_none());
    assert_eq!(values(&headers, "my-header2"), ["bar"]);
}

#[test]
fn response_header_modifier_keeps_set_cookie_lines_apart() {
    let mut response = HeaderMap::new();
    response.append(header::SET_COOKIE, value("a=1"));
    response.insert(header::SERVER, value("backend"));
    let modifier = HeaderModifier {
        add: vec![(header::SET_COOKIE, value("b=2"))],
        remove: vec![header::SERVER],
        ..HeaderModifier::default()
    };
    apply_header_modifier(&modifier, &mut response);
    assert_eq!(values(&response, "set-cookie"), ["a=1", "b=2"]);
    assert!(response.get(header::SERVER).is_none());
}

// --- path modifiers ---

#[test]
fn replace_prefix_follows_the_gateway_api_table() {
    let table = [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
    ];
    for (path, prefix, replacement, expected) in table {
        assert_eq!(
            replace_prefix(path, prefix, replacement),
            expected,
            "{path} with prefix {prefix} replaced by {replacement:?}"
        );
    }
}

#[test]
fn replace_prefix_of_the_root_prefix_prepends() {
    assert_eq!(replace_prefix("/a/b", "/", "/v2"), "/v2/a/b");
    assert_eq!(replace_prefix("/", "/", "/v2"), "/v2/");
}

#[test]
fn replace_prefix_leaves_a_path_it_does_not_match() {
    assert_eq!(replace_prefix("/foobar", "/foo", "/xyz"), "/foobar");
}

#[test]
fn replace_full_path_and_missing_prefix() {
    let full = PathModifier::ReplaceFullPath("/new".into());
    assert_eq!(modify_path("/old/x", &full, None).unwrap(), "/new");
    let empty = PathModifier::ReplaceFullPath(String::new());
    assert_eq!(modify_path("/old", &empty, None).unwrap(), "/");
    let by_prefix = PathModifier::ReplacePrefixMatch("/new".into());
    assert!(matches!(
        modify_path("/old", &by_prefix, None),
        Err(FilterError::NoPrefixMatch)
    ));
}

// --- redirects ---

fn location(redirect: &Redirect) -> &str {
    redirect.location.to_str().unwrap()
}

#[test]
fn redirect_to_https_uses_its_well_known_port_and_omits_it() {
    let req = request(Method::GET, "/a?b=c", &[("host", "reviews:9080")]);
    let filter = RequestRedirect {
        scheme: Some(Scheme::HTTPS),
        ..RequestRedirect::default()
    };
    let answer = redirect(&req.head(), &filter, None, 9080).unwrap();
    assert_eq!(location(&answer), "https://reviews/a?b=c");
    assert_eq!(answer.status, StatusCode::FOUND, "302 by default");
}

#[test]
fn redirect_without_scheme_uses_the_listener_port() {
    let req = request(Method::GET, "/a", &[("host", "reviews")]);
    let filter = RequestRedirect {
        hostname: Some("ratings".into()),
        ..RequestRedirect::default()
    };
    let answer = redirect(&req.head(), &filter, None, 9080).unwrap();
    assert_eq!(location(&answer), "http://ratings:9080/a");
    let on_80 = redirect(&req.head(), &filter, None, 80).unwrap();
    assert_eq!(
        location(&on_80),
        "http://ratings/a",
        "port 80 is left out for http"
    );
}

#[test]
fn redirect_with_an_explicit_port() {
    let req = request(Method::GET, "/", &[("host", "reviews")]);
    let filter = RequestRedirect {
        scheme: Some(Scheme::HTTPS),
        port: Some(8443),
        status: RedirectStatus::MovedPermanently,
        ..RequestRedirect::default()
    };
    let answer = redirect(&req.head(), &filter, None, 9080).unwrap();
    assert_eq!(location(&answer), "https://reviews:8443/");
    assert_eq!(answer.status, StatusCode::MOVED_PERMANENTLY);

    let http_on_443 = RequestRedirect {
        port: Some(443),
        ..RequestRedirect::default()
    };
    let answer = redirect(&req.head(), &http_on_443, None, 9080).unwrap();
    assert_eq!(
        location(&answer),
        "http://reviews:443/",
        "443 is only the default for https"
    );
}

#[test]
fn redirect_keeps_the_request_host_from_uri_or_header() {
    let filter = RequestRedirect::default();
    let h2 = get("https://reviews.bookinfo:9443/p");
    assert_eq!(
        location(&redirect(&h2.head(), &filter, None, 9443).unwrap()),
        "https://reviews.bookinfo:9443/p"
    );
    let ipv6 = request(Method::GET, "/p", &[("host", "[fd00::1]:9080")]);
    assert_eq!(
        location(&redirect(&ipv6.head(), &filter, None, 9080).unwrap()),
        "http://[fd00::1]:9080/p"
    );
    let no_host = get("/p");
    assert!(matches!(
        redirect(&no_host.head(), &filter, None, 9080),
        Err(FilterError::MissingHost)
    ));
}

#[test]
fn redirect_rewrites_the_path_and_keeps_the_query() {
    let req = request(Method::GET, "/old/page?x=1", &[("host", "reviews")]);
    let full = RequestRedirect {
        path: Some(PathModifier::ReplaceFullPath("/moved".into())),
        status: RedirectStatus::PermanentRedirect,
        ..RequestRedirect::default()
    };
    let answer = redirect(&req.head(), &full, None, 80).unwrap();
    assert_eq!(location(&answer), "http://reviews/moved?x=1");
    assert_eq!(answer.status, StatusCode::PERMANENT_REDIRECT);

    let by_prefix = RequestRedirect {
        path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
        ..RequestRedirect::default()
    };
    let answer = redirect(&req.head(), &by_prefix, Some("/old"), 80).unwrap();
    assert_eq!(location(&answer), "http://reviews/new/page?x=1");
}

#[test]
fn redirect_status_codes() {
    let codes = [
        (RedirectStatus::MovedPermanently, 301),
        (RedirectStatus::Found, 302),
        (RedirectStatus::SeeOther, 303),
        (RedirectStatus::TemporaryRedirect, 307),
        (RedirectStatus::PermanentRedirect, 308),
    ];
    for (status, code) in codes {
        assert_eq!(status.status_code().as_u16(), code);
    }
}

#[test]
fn a_redirect_that_is_not_a_url_is_an_error() {
    let req = request(Method::GET, "/", &[("host", "reviews")]);
    let filter = RequestRedirect {
        hostname: Some(Arc::from("bad host")),
        ..RequestRedirect::default()
    };
    let error = redirect(&req.head(), &filter, None, 80).unwrap_err();
    assert!(matches!(error, FilterError::InvalidUrl { .. }), "{error:?}");
    assert!(
        error.to_string().contains("\"http://bad host/\""),
        "{error}"
    );
}

#[test]
fn the_selected_prefix_drives_the_redirect() {
    let mut moving = rule(vec![prefix("/shop/")]);
    moving
        .filters
        .push(Filter::RequestRedirect(RequestRedirect {
            path: Some(PathModifier::ReplacePrefixMatch("/store".into())),
            ..RequestRedirect::default()
        }));
    let routes = table(vec![route("ns", "r", 1, vec![moving])]);
    let req = request(Method::GET, "/shop/cart?id=7", &[("host", "web")]);
    let Selection::Matched(selected) = routes.select(&req.head()) else {
        panic!("the rule matches");
    };
    let Some(Filter::RequestRedirect(filter)) = selected.rule.filters.first() else {
        panic!("the rule redirects");
    };
    let port = routes.service().port;
    let answer = redirect(&req.head(), filter, selected.matched_prefix(), port).unwrap();
    assert_eq!(location(&answer), "http://web:9080/store/cart?id=7");
}

// --- URL rewrites ---

#[test]
fn rewrite_host_and_prefix_for_http1() {
    let mut req = request(
        Method::GET,
        "/api/v1/users?page=2",
        &[("host", "reviews:9080")],
    );
    let filter = UrlRewrite {
        hostname: Some("reviews-v2".into()),
        path: Some(PathModifier::ReplacePrefixMatch("/v1".into())),
    };
    let rewritten = rewrite_url(&req.head(), &filter, Some("/api/v1")).unwrap();
    assert_eq!(
        rewritten.path_and_query.as_ref().unwrap().as_str(),
        "/v1/users?page=2"
    );
    rewritten.apply(&mut req.uri, &mut req.headers).unwrap();
    assert_eq!(req.uri, "/v1/users?page=2");
    assert_eq!(values(&req.headers, "host"), ["reviews-v2"]);
}

#[test]
fn rewrite_for_http2_changes_the_authority_without_adding_host() {
    let mut req = get("http://reviews:9080/old");
    let filter = UrlRewrite {
        hostname: Some("ratings".into()),
        path: Some(PathModifier::ReplaceFullPath("/new".into())),
    };
    let rewritten = rewrite_url(&req.head(), &filter, None).unwrap();
    rewritten.apply(&mut req.uri, &mut req.headers).unwrap();
    assert_eq!(req.uri, "http://ratings/new");
    assert!(req.headers.get(header::HOST).is_none());
}

#[test]
fn rewrite_of_nothing_changes_nothing() {
    let mut req = request(Method::GET, "/same?q", &[("host", "reviews")]);
    let rewritten = rewrite_url(&req.head(), &UrlRewrite::default(), None).unwrap();
    assert_eq!(rewritten, RewrittenUrl::default());
    rewritten.apply(&mut req.uri, &mut req.headers).unwrap();
    assert_eq!(req.uri, "/same?q");
    assert_eq!(values(&req.headers, "host"), ["reviews"]);
}

#[test]
fn rewrite_host_only_keeps_the_path() {
    let mut req = request(Method::GET, "/keep?x=1", &[]);
    let filter = UrlRewrite {
        hostname: Some("ratings".into()),
        path: None,
    };
    let rewritten = rewrite_url(&req.head(), &filter, None).unwrap();
    rewritten.apply(&mut req.uri, &mut req.headers).unwrap();
    assert_eq!(req.uri, "/keep?x=1");
    assert_eq!(
        values(&req.headers, "host"),
        ["ratings"],
        "no authority, so the Host header"
    );
}

#[test]
fn rewrite_errors() {
    let req = get("/old");
    let by_prefix = UrlRewrite {
        hostname: None,
        path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
    };
    assert!(matches!(
        rewrite_url(&req.head(), &by_prefix, None),
        Err(FilterError::NoPrefixMatch)
    ));
    let bad_host = UrlRewrite {
        hostname: Some("bad host".into()),
        path: None,
    };
    let error = rewrite_url(&req.head(), &bad_host, None).unwrap_err();
    assert!(
        error.to_string().contains("rewritten host \"bad host\""),
        "{error}"
    );
}

// --- mirrors ---

fn mirrored(fraction: Fraction, samples: u32) -> u32 {
    let shares = (0..samples).filter(|&i| fraction.contains(spread(i, samples)));
    u32::try_from(shares.count()).unwrap()
}

#[test]
fn mirror_fraction_selects_its_share() {
    assert_eq!(mirrored(Fraction::ALL, 1000), 1000);
    assert_eq!(mirrored(Fraction::percent(100), 1000), 1000);
    assert_eq!(mirrored(Fraction::percent(0), 1000), 0);
    assert_eq!(mirrored(Fraction::percent(25), 1000), 250);
    let third = Fraction {
        numerator: 1,
        denominator: 3,
    };
    assert_eq!(mirrored(third, 3000), 1000);
    let zero_of_zero = Fraction {
        numerator: 0,
        denominator: 0,
    };
    assert_eq!(mirrored(zero_of_zero, 10), 0);
}

#[test]
fn header_filter_on_a_selected_rule_with_conditions() {
    let mut tagged = rule(vec![prefix("/").header("x-canary", "1")]);
    tagged
        .filters
        .push(Filter::RequestHeaderModifier(HeaderModifier {
            set: vec![(name("x-route"), value("canary"))],
            ..HeaderModifier::default()
        }));
    let routes = table(vec![route("ns", "r", 1, vec![tagged])]);
    let mut req = request(Method::GET, "/", &[("x-canary", "1")]);
    let selected = routes.select(&req.head()).matched().unwrap();
    let Some(Filter::RequestHeaderModifier(modifier)) = selected.rule.filters.first() else {
        panic!("the rule modifies headers");
    };
    apply_header_modifier(modifier, &mut req.headers);
    assert_eq!(values(&req.headers, "x-route"), ["canary"]);
}

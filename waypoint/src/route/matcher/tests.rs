//! Each condition of a match on its own: a request it accepts and one it
//! refuses.

use http::Method;

use super::*;
use crate::testing::{MatchExt, exact, get, prefix, regex, request};

fn compiled(config: RequestMatch) -> CompiledMatch {
    CompiledMatch::new(&config).unwrap()
}

fn accepts(config: &CompiledMatch, uri: &str) -> bool {
    config.matches(&get(uri).head())
}

#[test]
fn prefix_matches_whole_segments() {
    let foo = compiled(prefix("/foo"));
    assert!(accepts(&foo, "/foo"));
    assert!(accepts(&foo, "/foo/"));
    assert!(accepts(&foo, "/foo/bar"));
    assert!(
        accepts(&foo, "/foo?x=1"),
        "the query is not part of the path"
    );
    assert!(!accepts(&foo, "/foobar"));
    assert!(!accepts(&foo, "/fo"));
    assert!(!accepts(&foo, "/"));
    assert!(!accepts(&foo, "/Foo"), "paths are case-sensitive");
}

#[test]
fn prefix_ignores_a_trailing_slash() {
    let foo = compiled(prefix("/foo/"));
    assert!(accepts(&foo, "/foo"));
    assert!(accepts(&foo, "/foo/bar"));
    assert!(!accepts(&foo, "/foobar"));
    assert_eq!(foo.specificity(), compiled(prefix("/foo")).specificity());
}

#[test]
fn root_prefix_matches_every_path() {
    let root = compiled(prefix("/"));
    for uri in ["/", "/a", "/a/b/c?d=e"] {
        assert!(accepts(&root, uri), "{uri}");
    }
    assert!(accepts(&compiled(RequestMatch::default()), "/anything"));
}

#[test]
fn prefix_helper_is_segment_aware() {
    assert!(prefix_matches("", "/x"));
    assert!(prefix_matches("/a/b", "/a/b/c"));
    assert!(!prefix_matches("/a/b", "/a/bc"));
}

#[test]
fn exact_matches_only_the_whole_path() {
    let abc = compiled(exact("/abc"));
    assert!(accepts(&abc, "/abc"));
    assert!(accepts(&abc, "/abc?q=1"));
    assert!(!accepts(&abc, "/abc/"));
    assert!(!accepts(&abc, "/Abc"));
    assert!(!accepts(&abc, "/abcd"));
    assert!(!accepts(&abc, "/ab"));
}

#[test]
fn path_regex_must_match_the_whole_path() {
    let versioned = compiled(regex("/v[0-9]+"));
    assert!(accepts(&versioned, "/v1"));
    assert!(accepts(&versioned, "/v12?x=y"));
    assert!(!accepts(&versioned, "/v1/x"), "anchored at the end");
    assert!(!accepts(&versioned, "/x/v1"), "anchored at the start");
    assert!(!accepts(&versioned, "/v"));

    // Alternation binds inside the anchoring group.
    let either = compiled(regex("/a|/b"));
    assert!(accepts(&either, "/a"));
    assert!(accepts(&either, "/b"));
    assert!(!accepts(&either, "/a/b"));
    assert!(!accepts(&either, "/ab"));
}

#[test]
fn a_regex_cannot_escape_its_anchors() {
    let error = CompiledMatch::new(&regex("/a)|(/b")).unwrap_err();
    assert_eq!(error.field, MatchField::Path);
    assert_eq!(error.pattern, "/a)|(/b");
}

#[test]
fn invalid_regexes_name_their_field() {
    let header = CompiledMatch::new(&prefix("/").header_regex("x-version", "v[")).unwrap_err();
    assert_eq!(
        header.field,
        MatchField::Header(HeaderName::from_static("x-version"))
    );
    assert_eq!(header.field.to_string(), "header \"x-version\"");

    let query = CompiledMatch::new(&prefix("/").query_regex("page", "(")).unwrap_err();
    assert_eq!(query.field, MatchField::QueryParam("page".into()));
    assert_eq!(query.field.to_string(), "query parameter \"page\"");
}

#[test]
fn header_exact_name_is_case_insensitive_value_is_not() {
    let v2 = compiled(prefix("/").header("X-Version", "v2"));
    let head = |value: &str| request(Method::GET, "/", &[("x-VERSION", value)]);
    assert!(v2.matches(&head("v2").head()));
    assert!(!v2.matches(&head("V2").head()));
    assert!(!v2.matches(&head("v22").head()));
    assert!(
        !v2.matches(&get("/").head()),
        "a missing header does not match"
    );
}

#[test]
fn header_regex_must_match_the_whole_value() {
    let canary = compiled(prefix("/").header_regex("user", "(alice|bob)-[0-9]+"));
    let head = |value: &str| request(Method::GET, "/", &[("user", value)]);
    assert!(canary.matches(&head("alice-1").head()));
    assert!(canary.matches(&head("bob-42").head()));
    assert!(!canary.matches(&head("carol-1").head()));
    assert!(!canary.matches(&head("xalice-1").head()));
    assert!(!canary.matches(&head("alice-1x").head()));
}

#[test]
fn a_repeated_request_header_is_one_comma_joined_value() {
    let repeated = request(Method::GET, "/", &[("accept", "a"), ("accept", "b")]);
    assert!(compiled(prefix("/").header("accept", "a,b")).matches(&repeated.head()));
    assert!(!compiled(prefix("/").header("accept", "a")).matches(&repeated.head()));
    assert!(compiled(prefix("/").header_regex("accept", "a,.*")).matches(&repeated.head()));
}

#[test]
fn only_the_first_header_entry_of_a_name_counts() {
    let config = prefix("/")
        .header("x-env", "prod")
        .header("X-Env", "staging");
    let first_only = compiled(config);
    let prod = request(Method::GET, "/", &[("x-env", "prod")]);
    let staging = request(Method::GET, "/", &[("x-env", "staging")]);
    assert!(first_only.matches(&prod.head()));
    assert!(!first_only.matches(&staging.head()));
    assert_eq!(
        first_only.specificity(),
        compiled(prefix("/").header("x-env", "prod")).specificity(),
        "the ignored entry does not count towards precedence"
    );
}

#[test]
fn query_param_exact() {
    let page = compiled(prefix("/").query("page", "2"));
    assert!(accepts(&page, "/list?page=2"));
    assert!(accepts(&page, "/list?sort=asc&page=2&x"));
    assert!(!accepts(&page, "/list?page=3"));
    assert!(!accepts(&page, "/list?Page=2"), "names are case-sensitive");
    assert!(!accepts(&page, "/list?pages=2"));
    assert!(!accepts(&page, "/list"), "no query, no match");
}

#[test]
fn query_param_uses_the_first_value_and_is_decoded() {
    let page = compiled(prefix("/").query("page", "2"));
    assert!(accepts(&page, "/?page=2&page=3"));
    assert!(!accepts(&page, "/?page=3&page=2"));

    let spaced = compiled(prefix("/").query("q", "a b/c"));
    assert!(accepts(&spaced, "/?q=a%20b%2Fc"));
    assert!(compiled(prefix("/").query("a b", "1")).matches(&get("/?a%20b=1").head()));
}

#[test]
fn query_param_regex_must_match_the_whole_value() {
    let numeric = compiled(prefix("/").query_regex("id", "[0-9]+"));
    assert!(accepts(&numeric, "/?id=123"));
    assert!(!accepts(&numeric, "/?id=12a"));
    assert!(!accepts(&numeric, "/?id="));
    assert!(!accepts(&numeric, "/?other=1"));
}

#[test]
fn method_match() {
    let post = compiled(prefix("/").method(Method::POST));
    assert!(post.matches(&request(Method::POST, "/", &[]).head()));
    assert!(!post.matches(&get("/").head()));
    assert!(compiled(prefix("/")).matches(&request(Method::DELETE, "/", &[]).head()));
}

#[test]
fn every_condition_must_hold() {
    let all = compiled(
        prefix("/api")
            .method(Method::PUT)
            .header("x-team", "a")
            .query("dry", "1"),
    );
    let full = request(Method::PUT, "/api/x?dry=1", &[("x-team", "a")]);
    assert!(all.matches(&full.head()));
    let misses = [
        request(Method::GET, "/api/x?dry=1", &[("x-team", "a")]),
        request(Method::PUT, "/other?dry=1", &[("x-team", "a")]),
        request(Method::PUT, "/api/x?dry=1", &[("x-team", "b")]),
        request(Method::PUT, "/api/x?dry=0", &[("x-team", "a")]),
    ];
    for miss in misses {
        assert!(!all.matches(&miss.head()), "{miss:?}");
    }
}

#[test]
fn specificity_orders_exact_then_prefix_length_then_regex() {
    let s = |config: RequestMatch| compiled(config).specificity();
    assert!(s(exact("/a")) > s(prefix("/a/very/long/prefix")));
    assert!(s(prefix("/ab")) > s(prefix("/a")));
    assert!(s(prefix("/")) > s(regex("/some/long/regular/expression.*")));
    assert!(s(regex("/abc.*")) > s(regex("/a.*")));
}

#[test]
fn specificity_then_method_headers_query() {
    let s = |config: RequestMatch| compiled(config).specificity();
    let method = prefix("/").method(Method::GET);
    let two_headers = prefix("/").header("a", "1").header("b", "2");
    let one_header = prefix("/").header("a", "1");
    let two_params = prefix("/").query("a", "1").query("b", "2");
    assert!(s(method) > s(two_headers.clone()));
    assert!(s(two_headers) > s(one_header.clone()));
    assert!(s(one_header) > s(two_params.clone()));
    assert!(s(two_params) > s(prefix("/").query("a", "1")));
    // The path still comes first.
    assert!(s(prefix("/a")) > s(prefix("/").method(Method::GET).header("a", "1")));
}

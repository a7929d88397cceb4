//! Gateway API precedence across routes, one criterion at a time, each with
//! the order of the config arranged so that list order alone would choose
//! wrongly; then the tie-breakers, the defaults, and the build errors.

use std::error::Error as _;

use http::Method;

use super::*;
use crate::route::{Backend, RequestRedirect, UrlRewrite, WeightedBackend};
use crate::testing::{
    MatchExt, exact, get, prefix, regex, request, route, rule, service, table, winner, won,
};

#[test]
fn an_empty_table_forwards_by_default() {
    let empty = RouteTable::empty(service());
    assert!(matches!(
        empty.select(&get("/").head()),
        Selection::NoRoutes
    ));
    let built = RouteTable::new(service(), Vec::new()).unwrap();
    assert!(built.is_empty());
    assert!(matches!(
        built.select(&get("/").head()),
        Selection::NoRoutes
    ));
}

#[test]
fn routes_that_do_not_match_mean_404() {
    let routes = table(vec![route(
        "ns",
        "api",
        1,
        vec![rule(vec![prefix("/api")])],
    )]);
    assert!(matches!(
        routes.select(&get("/other").head()),
        Selection::NoRoute
    ));
    assert!(routes.select(&get("/other").head()).matched().is_none());
    assert_eq!(winner(&routes, &get("/api/x")), won("ns/api", 0, 0));
}

#[test]
fn a_route_without_rules_still_means_404() {
    let routes = table(vec![route("ns", "empty", 1, Vec::new())]);
    assert!(matches!(
        routes.select(&get("/").head()),
        Selection::NoRoute
    ));
}

#[test]
fn a_rule_without_matches_is_a_root_prefix_match() {
    let routes = table(vec![route(
        "ns",
        "r",
        1,
        vec![rule(Vec::new()), rule(vec![prefix("/api")])],
    )]);
    assert_eq!(
        routes.routes()[0].rules[0].matches,
        vec![RequestMatch::default()]
    );
    assert_eq!(winner(&routes, &get("/anything")), won("ns/r", 0, 0));
    // Being first in the list does not make it win over a longer prefix.
    assert_eq!(winner(&routes, &get("/api/v1")), won("ns/r", 1, 0));
    let selected = routes.select(&get("/x").head()).matched().unwrap();
    assert_eq!(selected.matched_prefix(), Some("/"));
}

#[test]
fn exact_beats_any_prefix() {
    // The prefix route is older and has more conditions; exact still wins.
    let routes = table(vec![
        route(
            "ns",
            "prefix",
            1,
            vec![rule(vec![
                prefix("/foo/bar").method(Method::GET).header("a", "1"),
            ])],
        ),
        route("ns", "exact", 2, vec![rule(vec![exact("/foo/bar")])]),
    ]);
    let req = request(Method::GET, "/foo/bar", &[("a", "1")]);
    assert_eq!(winner(&routes, &req), won("ns/exact", 0, 0));
    let deeper = request(Method::GET, "/foo/bar/baz", &[("a", "1")]);
    assert_eq!(winner(&routes, &deeper), won("ns/prefix", 0, 0));
}

#[test]
fn the_longest_prefix_wins() {
    let routes = table(vec![
        route("ns", "root", 1, vec![rule(vec![prefix("/")])]),
        route("ns", "api", 2, vec![rule(vec![prefix("/api")])]),
        route("ns", "api-v1", 3, vec![rule(vec![prefix("/api/v1")])]),
    ]);
    assert_eq!(
        winner(&routes, &get("/api/v1/users")),
        won("ns/api-v1", 0, 0)
    );
    assert_eq!(winner(&routes, &get("/api/v2")), won("ns/api", 0, 0));
    assert_eq!(winner(&routes, &get("/api")), won("ns/api", 0, 0));
    assert_eq!(
        winner(&routes, &get("/apiary")),
        won("ns/root", 0, 0),
        "segments, not characters"
    );
    assert_eq!(winner(&routes, &get("/")), won("ns/root", 0, 0));
}

#[test]
fn a_trailing_slash_does_not_lengthen_a_prefix() {
    // `/api/` and `/api` are the same prefix, so age decides, not length.
    let routes = table(vec![
        route("ns", "slash", 2, vec![rule(vec![prefix("/api/")])]),
        route("ns", "plain", 1, vec![rule(vec![prefix("/api")])]),
    ]);
    assert_eq!(winner(&routes, &get("/api/x")), won("ns/plain", 0, 0));
}

#[test]
fn prefix_beats_regex_and_longer_regex_beats_shorter() {
    let routes = table(vec![
        route("ns", "short-regex", 1, vec![rule(vec![regex("/api/.*")])]),
        route(
            "ns",
            "long-regex",
            2,
            vec![rule(vec![regex("/api/v[0-9]+/.*")])],
        ),
        route("ns", "prefix", 3, vec![rule(vec![prefix("/api/v1/admin")])]),
    ]);
    assert_eq!(
        winner(&routes, &get("/api/v1/admin/x")),
        won("ns/prefix", 0, 0)
    );
    assert_eq!(
        winner(&routes, &get("/api/v1/users")),
        won("ns/long-regex", 0, 0)
    );
    assert_eq!(
        winner(&routes, &get("/api/latest")),
        won("ns/short-regex", 0, 0)
    );
}

#[test]
fn a_method_match_beats_header_and_query_matches() {
    let routes = table(vec![
        route(
            "ns",
            "headers",
            1,
            vec![rule(vec![
                prefix("/")
                    .header("a", "1")
                    .header("b", "2")
                    .query("q", "1"),
            ])],
        ),
        route(
            "ns",
            "method",
            2,
            vec![rule(vec![prefix("/").method(Method::POST)])],
        ),
    ]);
    let both = request(Method::POST, "/?q=1", &[("a", "1"), ("b", "2")]);
    assert_eq!(winner(&routes, &both), won("ns/method", 0, 0));
    let get_both = request(Method::GET, "/?q=1", &[("a", "1"), ("b", "2")]);
    assert_eq!(winner(&routes, &get_both), won("ns/headers", 0, 0));
}

#[test]
fn more_header_matches_win() {
    let routes = table(vec![
        route(
            "ns",
            "one",
            1,
            vec![rule(vec![prefix("/").header("a", "1").query("x", "1")])],
        ),
        route(
            "ns",
            "two",
            2,
            vec![rule(vec![prefix("/").header("a", "1").header("b", "2")])],
        ),
    ]);
    let req = request(Method::GET, "/?x=1", &[("a", "1"), ("b", "2")]);
    assert_eq!(winner(&routes, &req), won("ns/two", 0, 0));
}

#[test]
fn header_matches_beat_query_matches() {
    let routes = table(vec![
        route(
            "ns",
            "query",
            1,
            vec![rule(vec![prefix("/").query("x", "1").query("y", "2")])],
        ),
        route(
            "ns",
            "header",
            2,
            vec![rule(vec![prefix("/").header("a", "1")])],
        ),
    ]);
    let req = request(Method::GET, "/?x=1&y=2", &[("a", "1")]);
    assert_eq!(winner(&routes, &req), won("ns/header", 0, 0));
}

#[test]
fn more_query_matches_win() {
    let routes = table(vec![
        route(
            "ns",
            "one",
            1,
            vec![rule(vec![prefix("/").query("x", "1")])],
        ),
        route(
            "ns",
            "two",
            2,
            vec![rule(vec![prefix("/").query("x", "1").query("y", "2")])],
        ),
    ]);
    assert_eq!(winner(&routes, &get("/?x=1&y=2")), won("ns/two", 0, 0));
    assert_eq!(winner(&routes, &get("/?x=1")), won("ns/one", 0, 0));
}

#[test]
fn ties_go_to_the_oldest_route() {
    // Given last and named last alphabetically, but created first.
    let routes = table(vec![
        route("a", "a", 20, vec![rule(vec![prefix("/api")])]),
        route("z", "z", 10, vec![rule(vec![prefix("/api")])]),
    ]);
    assert_eq!(winner(&routes, &get("/api")), won("z/z", 0, 0));
}

#[test]
fn ties_of_age_go_to_the_first_namespace_slash_name() {
    let routes = table(vec![
        route("ns", "b", 10, vec![rule(vec![prefix("/")])]),
        route("ns", "a", 10, vec![rule(vec![prefix("/")])]),
    ]);
    assert_eq!(winner(&routes, &get("/")), won("ns/a", 0, 0));

    // `{namespace}/{name}` as one string: `a-b/x` < `a/y` because `-` < `/`,
    // though comparing namespaces alone would put `a` first.
    let routes = table(vec![
        route("a", "y", 10, vec![rule(vec![prefix("/")])]),
        route("a-b", "x", 10, vec![rule(vec![prefix("/")])]),
    ]);
    assert_eq!(winner(&routes, &get("/")), won("a-b/x", 0, 0));
}

#[test]
fn ties_within_a_route_go_to_the_first_rule_then_the_first_match() {
    let routes = table(vec![route(
        "ns",
        "r",
        1,
        vec![
            rule(vec![
                prefix("/other"),
                prefix("/api").header("a", "1"),
                prefix("/api"),
            ]),
            rule(vec![prefix("/api").header("a", "1")]),
        ],
    )]);
    let with_header = request(Method::GET, "/api", &[("a", "1")]);
    assert_eq!(winner(&routes, &with_header), won("ns/r", 0, 1));
    assert_eq!(winner(&routes, &get("/api")), won("ns/r", 0, 2));

    let routes = table(vec![route(
        "ns",
        "r",
        1,
        vec![
            rule(vec![prefix("/x")]),
            rule(vec![prefix("/api")]),
            rule(vec![prefix("/api")]),
        ],
    )]);
    assert_eq!(winner(&routes, &get("/api")), won("ns/r", 1, 0));
}

#[test]
fn precedence_is_per_match_not_per_rule() {
    // Rule 0 has a weak match and a strong one; the strong one competes on
    // its own against the other route.
    let routes = table(vec![
        route(
            "ns",
            "mixed",
            2,
            vec![rule(vec![prefix("/"), exact("/login")])],
        ),
        route("ns", "login", 1, vec![rule(vec![prefix("/login")])]),
    ]);
    assert_eq!(winner(&routes, &get("/login")), won("ns/mixed", 0, 1));
    assert_eq!(winner(&routes, &get("/login/x")), won("ns/login", 0, 0));
}

#[test]
fn the_selection_exposes_rule_and_prefix() {
    let mut named = rule(vec![prefix("/shop/")]);
    named.name = Some("shop".into());
    let routes = table(vec![route("ns", "r", 1, vec![named])]);
    let selected = routes.select(&get("/shop/cart").head()).matched().unwrap();
    assert_eq!(selected.rule.name.as_deref(), Some("shop"));
    assert_eq!(selected.matched_prefix(), Some("/shop/"));
    assert_eq!(routes.service(), &service());

    let routes = table(vec![route("ns", "r", 1, vec![rule(vec![exact("/e")])])]);
    let selected = routes.select(&get("/e").head()).matched().unwrap();
    assert_eq!(selected.matched_prefix(), None);
}

#[test]
fn an_invalid_regex_fails_the_table_naming_route_rule_and_match() {
    let mut bad = rule(vec![prefix("/ok"), regex("/v[0-9")]);
    bad.name = Some("versions".into());
    let error = RouteTable::new(
        service(),
        vec![route(
            "shop",
            "catalog",
            1,
            vec![rule(vec![prefix("/")]), bad],
        )],
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(&error, BuildError::InvalidRegex(invalid) if invalid.match_index == 1),
        "{error:?}"
    );
    assert!(message.contains("HTTPRoute shop/catalog"), "{message}");
    assert!(message.contains("rule 1 (\"versions\")"), "{message}");
    assert!(message.contains("match 1"), "{message}");
    assert!(
        message.contains("path regular expression \"/v[0-9\""),
        "{message}"
    );
    assert!(message.contains("RE2"), "{message}");
    assert!(error.source().is_some(), "the regex error is the source");
}

#[test]
fn invalid_header_and_query_regexes_fail_the_table() {
    let header = RouteTable::new(
        service(),
        vec![route(
            "ns",
            "r",
            1,
            vec![rule(vec![prefix("/").header_regex("x-user", "*")])],
        )],
    )
    .unwrap_err();
    assert!(
        header
            .to_string()
            .contains("rule 0 match 0: the header \"x-user\""),
        "{header}"
    );

    let query = RouteTable::new(
        service(),
        vec![route(
            "ns",
            "r",
            1,
            vec![rule(vec![prefix("/").query_regex("id", "[")])],
        )],
    )
    .unwrap_err();
    assert!(
        query.to_string().contains("the query parameter \"id\""),
        "{query}"
    );
}

fn prefix_rewrite() -> Filter {
    Filter::UrlRewrite(UrlRewrite {
        hostname: None,
        path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
    })
}

#[test]
fn replace_prefix_match_needs_exactly_one_prefix_match() {
    let build = |matches: Vec<RequestMatch>| {
        let mut rewriting = rule(matches);
        rewriting.filters.push(prefix_rewrite());
        RouteTable::new(service(), vec![route("ns", "r", 1, vec![rewriting])])
    };
    assert!(build(vec![prefix("/old")]).is_ok());
    assert!(
        build(Vec::new()).is_ok(),
        "no matches is one PathPrefix / match"
    );
    for matches in [
        vec![exact("/old")],
        vec![regex("/old")],
        vec![prefix("/a"), prefix("/b")],
    ] {
        let error = build(matches).unwrap_err();
        assert!(
            matches!(error, BuildError::ReplacePrefixNeedsOnePrefixMatch { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("HTTPRoute ns/r rule 0"),
            "{error}"
        );
    }
}

#[test]
fn replace_prefix_match_on_a_backend_is_checked_too() {
    let mut rewriting = rule(vec![exact("/old")]);
    rewriting.backends.push(WeightedBackend {
        backend: Backend::Service(service()),
        weight: 1,
        filters: vec![prefix_rewrite()],
    });
    let error = RouteTable::new(service(), vec![route("ns", "r", 1, vec![rewriting])]).unwrap_err();
    assert!(
        matches!(error, BuildError::ReplacePrefixNeedsOnePrefixMatch { .. }),
        "{error:?}"
    );
}

#[test]
fn redirect_and_rewrite_cannot_be_combined() {
    let mut both = rule(vec![prefix("/")]);
    both.filters = vec![
        Filter::RequestRedirect(RequestRedirect::default()),
        Filter::UrlRewrite(UrlRewrite::default()),
    ];
    let error = RouteTable::new(service(), vec![route("ns", "r", 1, vec![both])]).unwrap_err();
    assert!(
        matches!(error, BuildError::RedirectWithRewrite { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("HTTPRoute ns/r rule 0"),
        "{error}"
    );
}

//! Matching: each of Istio's string forms, each field of `source`,
//! `operation` and `when` with its `not` field, and how rules, items and
//! lists combine. Each property has a request that matches and one that
//! does not.

use super::*;
use crate::authz::testing::*;

fn matches(policy: &Policy, call: &Call) -> bool {
    policy.matches(&call.request())
}

// === string forms ===

#[test]
fn string_forms_parse_as_istio_reads_them() {
    assert_eq!(StringMatch::parse("/a"), StringMatch::Exact("/a".into()));
    assert_eq!(StringMatch::parse("/a*"), StringMatch::Prefix("/a".into()));
    assert_eq!(
        StringMatch::parse("*.css"),
        StringMatch::Suffix(".css".into())
    );
    assert_eq!(StringMatch::parse("*"), StringMatch::Presence);
    // A `*` inside is literal, as in Istio.
    assert_eq!(
        StringMatch::parse("/a*b"),
        StringMatch::Exact("/a*b".into())
    );
    for form in ["/a", "/a*", "*.css", "*", "/a*b"] {
        assert_eq!(StringMatch::parse(form).to_string(), form);
    }
}

#[test]
fn exact_matches_only_the_whole_value() {
    let m = StringMatch::parse("/admin");
    assert!(m.matches("/admin"));
    assert!(!m.matches("/admin/users"));
    assert!(!m.matches("/Admin"));
    assert!(!m.matches(""));
}

#[test]
fn prefix_matches_the_start() {
    let m = StringMatch::parse("/admin*");
    assert!(m.matches("/admin"));
    assert!(m.matches("/admin/users"));
    assert!(m.matches("/administrator"));
    assert!(!m.matches("/public/admin"));
}

#[test]
fn suffix_matches_the_end() {
    let m = StringMatch::parse("*.css");
    assert!(m.matches("/static/site.css"));
    assert!(m.matches(".css"));
    assert!(!m.matches("/static/site.css.map"));
}

#[test]
fn presence_matches_any_value_that_is_there() {
    let m = StringMatch::parse("*");
    assert!(m.matches("/anything"));
    assert!(!m.matches(""));
    assert!(m.matches_optional(Some("cluster.local/ns/a/sa/b")));
    assert!(!m.matches_optional(None));
}

#[test]
fn ignoring_case_covers_every_form() {
    assert!(StringMatch::parse("Catalog.Shop").matches_ignore_ascii_case("catalog.shop"));
    assert!(StringMatch::parse("CATALOG.*").matches_ignore_ascii_case("catalog.shop"));
    assert!(StringMatch::parse("*.SHOP").matches_ignore_ascii_case("catalog.shop"));
    assert!(!StringMatch::parse("*.shop").matches_ignore_ascii_case("shop"));
    assert!(!StringMatch::parse("catalog.*").matches_ignore_ascii_case("cat"));
    assert!(!StringMatch::parse("*").matches_ignore_ascii_case(""));
}

// === source ===

#[test]
fn principals_match_the_peer_identity() {
    let p = allow(
        "p",
        vec![from(vec![principals(&["cluster.local/ns/shop/sa/web"])])],
    );
    assert!(matches(&p, &call()));
    assert!(!matches(&p, &call().by("cluster.local/ns/shop/sa/cron")));
    // Without mutual TLS there is no principal to match.
    assert!(!matches(&p, &call().plaintext()));
}

#[test]
fn principal_presence_means_any_authenticated_peer() {
    let p = allow("p", vec![from(vec![principals(&["*"])])]);
    assert!(matches(&p, &call().by("other.domain/ns/x/sa/y")));
    assert!(!matches(&p, &call().plaintext()));
}

#[test]
fn not_principals_exclude_and_pass_without_identity() {
    let source = Source {
        not_principals: strings(&["*/sa/cron"]),
        ..Source::default()
    };
    let p = allow("p", vec![from(vec![source])]);
    assert!(matches(&p, &call()));
    assert!(!matches(&p, &call().by("cluster.local/ns/shop/sa/cron")));
    // No identity matches no entry, so a `not` list passes (as in Envoy).
    assert!(matches(&p, &call().plaintext()));
}

#[test]
fn namespaces_match_the_peer_namespace() {
    let source = Source {
        namespaces: strings(&["shop", "front*"]),
        not_namespaces: strings(&["frontend-test"]),
        ..Source::default()
    };
    let p = allow("p", vec![from(vec![source])]);
    assert!(matches(&p, &call()));
    assert!(matches(&p, &call().by("cluster.local/ns/frontend/sa/web")));
    assert!(!matches(
        &p,
        &call().by("cluster.local/ns/frontend-test/sa/web")
    ));
    assert!(!matches(&p, &call().by("cluster.local/ns/billing/sa/web")));
    assert!(!matches(&p, &call().plaintext()));
}

#[test]
fn ip_blocks_match_the_source_address() {
    let source = Source {
        ip_blocks: vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::1/128".parse().unwrap(),
        ],
        not_ip_blocks: vec!["10.9.0.0/16".parse().unwrap()],
        ..Source::default()
    };
    let p = allow("p", vec![from(vec![source])]);
    assert!(matches(&p, &call().ip("10.1.2.3")));
    assert!(matches(&p, &call().ip("fd00::1")));
    assert!(!matches(&p, &call().ip("10.9.1.1")));
    assert!(!matches(&p, &call().ip("192.168.0.1")));
}

// === operation ===

#[test]
fn hosts_match_without_case() {
    let operation = Operation {
        hosts: strings(&["*.shop.svc.cluster.local"]),
        not_hosts: strings(&["admin.*"]),
        ..Operation::default()
    };
    let p = allow("p", vec![to(vec![operation])]);
    assert!(matches(&p, &call()));
    assert!(matches(&p, &call().host("Catalog.SHOP.svc.cluster.local")));
    assert!(!matches(&p, &call().host("admin.shop.svc.cluster.local")));
    assert!(!matches(
        &p,
        &call().host("catalog.billing.svc.cluster.local")
    ));
}

#[test]
fn ports_match_the_destination_port() {
    let operation = Operation {
        ports: vec![8080, 9090],
        ..Operation::default()
    };
    let not = Operation {
        not_ports: vec![9090],
        ..Operation::default()
    };
    let p = allow("p", vec![to(vec![operation])]);
    let q = allow("q", vec![to(vec![not])]);
    assert!(matches(&p, &call()));
    assert!(!matches(&p, &call().port(8443)));
    assert!(matches(&q, &call()));
    assert!(!matches(&q, &call().port(9090)));
}

#[test]
fn methods_match_case_sensitively() {
    let p = allow("p", vec![to(vec![methods(&["GET", "HEAD"])])]);
    assert!(matches(&p, &call()));
    assert!(matches(&p, &call().method("HEAD")));
    assert!(!matches(&p, &call().method("POST")));
    assert!(!matches(&p, &call().method("get")));
    let not = Operation {
        not_methods: strings(&["DELETE"]),
        ..Operation::default()
    };
    let q = allow("q", vec![to(vec![not])]);
    assert!(matches(&q, &call().method("POST")));
    assert!(!matches(&q, &call().method("DELETE")));
}

#[test]
fn paths_match_in_every_form() {
    let p = allow("p", vec![to(vec![paths(&["/public", "/api/*", "*.css"])])]);
    assert!(matches(&p, &call().path("/public")));
    assert!(matches(&p, &call().path("/api/v1/items")));
    assert!(matches(&p, &call().path("/static/site.css")));
    assert!(!matches(&p, &call().path("/public/more")));
    assert!(!matches(&p, &call().path("/admin")));
}

#[test]
fn not_paths_exclude() {
    let operation = Operation {
        paths: strings(&["/api/*"]),
        not_paths: strings(&["/api/admin*"]),
        ..Operation::default()
    };
    let p = allow("p", vec![to(vec![operation])]);
    assert!(matches(&p, &call().path("/api/items")));
    assert!(!matches(&p, &call().path("/api/admin/users")));
}

// === when ===

#[test]
fn header_conditions_match_values_and_not_values() {
    let p = allow(
        "p",
        vec![when(vec![header_condition(
            "x-env",
            &["prod", "stag*"],
            &["staging-old"],
        )])],
    );
    assert!(matches(&p, &call().header("x-env", "prod")));
    assert!(matches(&p, &call().header("X-Env", "staging")));
    assert!(!matches(&p, &call().header("x-env", "staging-old")));
    assert!(!matches(&p, &call().header("x-env", "dev")));
    assert!(!matches(&p, &call()));
}

#[test]
fn header_not_values_pass_when_the_header_is_absent() {
    let p = allow(
        "p",
        vec![when(vec![header_condition("x-debug", &[], &["*"])])],
    );
    assert!(matches(&p, &call()));
    assert!(!matches(&p, &call().header("x-debug", "")));
    assert!(!matches(&p, &call().header("x-debug", "1")));
}

#[test]
fn header_presence_matches_a_present_header_even_empty() {
    let p = allow(
        "p",
        vec![when(vec![header_condition("x-token", &["*"], &[])])],
    );
    assert!(matches(&p, &call().header("x-token", "")));
    assert!(matches(&p, &call().header("x-token", "abc")));
    assert!(!matches(&p, &call()));
}

#[test]
fn repeated_headers_are_matched_joined_with_commas() {
    let p = allow(
        "p",
        vec![when(vec![header_condition("x-tag", &["a,b"], &[])])],
    );
    assert!(matches(
        &p,
        &call().header("x-tag", "a").header("x-tag", "b")
    ));
    assert!(!matches(&p, &call().header("x-tag", "a")));
}

#[test]
fn source_conditions_match_the_peer_identity() {
    let namespace = Condition {
        key: ConditionKey::SourceNamespace,
        values: strings(&["shop"]),
        not_values: Vec::new(),
    };
    let principal = Condition {
        key: ConditionKey::SourcePrincipal,
        values: Vec::new(),
        not_values: strings(&["*/sa/cron"]),
    };
    let p = allow("p", vec![when(vec![namespace])]);
    let q = allow("q", vec![when(vec![principal])]);
    assert!(matches(&p, &call()));
    assert!(!matches(&p, &call().by("cluster.local/ns/billing/sa/web")));
    assert!(!matches(&p, &call().plaintext()));
    assert!(matches(&q, &call()));
    assert!(!matches(&q, &call().by("cluster.local/ns/shop/sa/cron")));
}

#[test]
fn every_condition_must_match() {
    let p = allow(
        "p",
        vec![when(vec![
            header_condition("x-env", &["prod"], &[]),
            header_condition("x-team", &["shop"], &[]),
        ])],
    );
    assert!(matches(
        &p,
        &call().header("x-env", "prod").header("x-team", "shop")
    ));
    assert!(!matches(&p, &call().header("x-env", "prod")));
}

// === how rules, lists and items combine ===

#[test]
fn a_rule_needs_from_to_and_when_all_to_match() {
    let rule = Rule {
        from: vec![principals(&["cluster.local/ns/shop/sa/web"])],
        to: vec![methods(&["GET"])],
        when: vec![header_condition("x-env", &["prod"], &[])],
    };
    let p = allow("p", vec![rule]);
    let good = call().header("x-env", "prod");
    assert!(matches(&p, &good));
    assert!(!matches(
        &p,
        &good.clone().by("cluster.local/ns/shop/sa/cron")
    ));
    assert!(!matches(&p, &good.clone().method("POST")));
    assert!(!matches(&p, &call()));
}

#[test]
fn any_item_of_from_or_to_matches() {
    let rule = Rule {
        from: vec![
            principals(&["cluster.local/ns/shop/sa/web"]),
            principals(&["cluster.local/ns/shop/sa/admin"]),
        ],
        to: vec![methods(&["GET"]), paths(&["/admin*"])],
        when: Vec::new(),
    };
    let p = allow("p", vec![rule]);
    assert!(matches(&p, &call()));
    assert!(matches(&p, &call().by("cluster.local/ns/shop/sa/admin")));
    assert!(matches(&p, &call().method("POST").path("/admin/x")));
    assert!(!matches(&p, &call().method("POST")));
    assert!(!matches(&p, &call().by("cluster.local/ns/shop/sa/cron")));
}

#[test]
fn every_field_of_an_item_must_match() {
    let operation = Operation {
        methods: strings(&["POST"]),
        paths: strings(&["/admin*"]),
        ..Operation::default()
    };
    let p = allow("p", vec![to(vec![operation])]);
    assert!(matches(&p, &call().method("POST").path("/admin")));
    assert!(!matches(&p, &call().method("GET").path("/admin")));
    assert!(!matches(&p, &call().method("POST").path("/public")));
}

#[test]
fn any_rule_of_a_policy_matches() {
    let p = allow(
        "p",
        vec![to(vec![methods(&["GET"])]), to(vec![paths(&["/upload"])])],
    );
    assert!(matches(&p, &call()));
    assert!(matches(&p, &call().method("PUT").path("/upload")));
    assert!(!matches(&p, &call().method("PUT")));
}

#[test]
fn an_empty_rule_matches_every_request() {
    let p = allow("p", vec![Rule::default()]);
    assert!(matches(&p, &call()));
    assert!(matches(
        &p,
        &call().plaintext().method("DELETE").path("/admin")
    ));
}

#[test]
fn a_policy_without_rules_matches_nothing() {
    for action in [Action::Allow, Action::Deny, Action::Audit] {
        let p = policy("p", action, Vec::new());
        assert!(!matches(&p, &call()));
        assert!(!matches(&p, &call().plaintext()));
    }
}

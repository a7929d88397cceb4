//! The waypoint authorization translation, from
//! `tests/fixtures/waypoint_authorization.yaml`.

// Helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

use super::*;
use proto::waypoint::authorization_policy::{Action, Condition, Operation, Rule, Source};

const FIXTURE: &str = include_str!("../../../tests/fixtures/waypoint_authorization.yaml");
const REVIEWS: &str = "reviews.shop.svc.cluster.local";
const RATINGS: &str = "ratings.shop.svc.cluster.local";

fn translated() -> WaypointAuthorizationsTranslated {
    let index = Index::from_yaml(FIXTURE).unwrap();
    translate_waypoint_authorizations(&index, &MeshConfig::default())
}

fn policy<'a>(
    out: &'a WaypointAuthorizationsTranslated,
    hostname: &str,
    name: &str,
) -> &'a pb::AuthorizationPolicy {
    let resource = out
        .policies
        .get(hostname)
        .unwrap_or_else(|| panic!("no resource {hostname}: {:?}", out.policies.keys()));
    resource
        .policies
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} does not reach {hostname}"))
}

fn names(out: &WaypointAuthorizationsTranslated, hostname: &str) -> Vec<String> {
    out.policies[hostname]
        .policies
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

fn messages_about(out: &WaypointAuthorizationsTranslated, policy: &str) -> Vec<String> {
    out.diagnostics
        .iter()
        .filter(|d| d.resource == policy)
        .map(|d| d.message.clone())
        .collect()
}

#[test]
fn only_services_behind_a_waypoint_get_resources_with_the_policies_that_reach_them() {
    let out = translated();
    let hostnames: Vec<&str> = out.policies.keys().map(String::as_str).collect();
    // Not legacy (opted out), web (no waypoint), or the waypoint's own
    // Service.
    assert_eq!(hostnames, [RATINGS, REVIEWS]);
    assert_eq!(
        names(&out, REVIEWS),
        [
            "istio-system/audit-everything",
            "shop/ext-check",
            "shop/no-admin-writes",
            "shop/public-reads",
        ]
    );
    assert_eq!(
        names(&out, RATINGS),
        [
            "istio-system/audit-everything",
            "shop/allow-lossy",
            "shop/deny-lossy",
            "shop/public-reads",
        ]
    );
    assert_eq!(out.policies[REVIEWS].hostname, REVIEWS);
}

#[test]
fn sources_operations_and_conditions_carry_over_with_service_accounts_as_principals() {
    let out = translated();
    let public = policy(&out, REVIEWS, "public-reads");
    assert_eq!(public.action, Action::Allow as i32);
    assert!(!public.dry_run);
    assert_eq!(
        public.rules,
        vec![Rule {
            from: vec![Source {
                principals: vec![
                    "cluster.local/ns/shop/sa/frontend".into(),
                    "cluster.local/ns/ops/sa/admin".into(),
                ],
                namespaces: vec!["shop".into()],
                ..Source::default()
            }],
            to: vec![Operation {
                methods: vec!["GET".into()],
                paths: vec!["/public".into(), "/public/*".into()],
                ports: vec![9080, 8080],
                ..Operation::default()
            }],
            when: vec![Condition {
                key: "request.headers[x-team]".into(),
                values: vec!["blue".into()],
                not_values: Vec::new(),
            }],
        }]
    );
    assert!(messages_about(&out, "shop/public-reads").is_empty());
}

#[test]
fn the_dry_run_annotation_is_carried() {
    let out = translated();
    let deny = policy(&out, REVIEWS, "no-admin-writes");
    assert_eq!(deny.action, Action::Deny as i32);
    assert!(deny.dry_run);
}

#[test]
fn a_lossy_deny_rule_stays_without_what_cannot_be_evaluated() {
    let out = translated();
    let deny = policy(&out, RATINGS, "deny-lossy");
    // The JWT source and the JWT condition are gone, and so is the whole
    // port list with its bad value: the rule denies every DELETE.
    assert_eq!(
        deny.rules,
        vec![Rule {
            from: Vec::new(),
            to: vec![Operation {
                methods: vec!["DELETE".into()],
                ..Operation::default()
            }],
            when: Vec::new(),
        }]
    );
    let messages = messages_about(&out, "shop/deny-lossy");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(
        messages[0].contains("from.source.requestPrincipals"),
        "{messages:?}"
    );
    assert!(
        messages[0].contains("request.auth.claims[group]"),
        "{messages:?}"
    );
    assert!(messages[0].contains("\"eighty\""), "{messages:?}");
    assert!(messages[0].contains("deny more"), "{messages:?}");
}

#[test]
fn a_lossy_allow_rule_is_dropped_and_the_others_stay() {
    let out = translated();
    let allow = policy(&out, RATINGS, "allow-lossy");
    assert_eq!(
        allow.rules,
        vec![Rule {
            to: vec![Operation {
                paths: vec!["/healthz".into()],
                ..Operation::default()
            }],
            ..Rule::default()
        }]
    );
    let messages = messages_about(&out, "shop/allow-lossy");
    assert!(
        messages[0].contains("remoteIpBlocks") && messages[0].contains("1 rule(s)"),
        "{messages:?}"
    );
}

#[test]
fn a_custom_policy_fails_closed_as_a_deny() {
    let out = translated();
    let custom = policy(&out, REVIEWS, "ext-check");
    assert_eq!(custom.action, Action::Deny as i32);
    assert_eq!(custom.rules.len(), 1);
    let messages = messages_about(&out, "shop/ext-check");
    assert!(messages[0].contains("\"opa\""), "{messages:?}");
}

#[test]
fn the_gateway_class_reaches_every_waypoint_service_from_the_root_namespace() {
    let out = translated();
    for hostname in [REVIEWS, RATINGS] {
        let audit = policy(&out, hostname, "audit-everything");
        assert_eq!(audit.action, Action::Audit as i32);
        assert_eq!(audit.rules, vec![Rule::default()]);
    }
}

#[test]
fn targets_nothing_enforces_are_ignored_with_a_warning_each() {
    let out = translated();
    let messages = messages_about(&out, "shop/unenforced");
    assert_eq!(messages.len(), 4, "{messages:?}");
    let expect = [
        "Service shop/legacy does not use a waypoint",
        "targetRef Service shop/missing does not exist",
        "targetRef kind Deployment (group apps) is not supported",
        "targetRef Service plain/web is in another namespace",
    ];
    for expected in expect {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "no {expected:?} in {messages:?}"
        );
    }
    // And the policy reaches nothing.
    for resource in out.policies.values() {
        assert!(resource.policies.iter().all(|p| p.name != "unenforced"));
    }
}

#[test]
fn selector_policies_are_not_the_waypoints() {
    let out = translated();
    for resource in out.policies.values() {
        assert!(resource.policies.iter().all(|p| p.name != "l4-only"));
    }
    assert!(messages_about(&out, "shop/l4-only").is_empty());
}

#[test]
fn every_resource_is_accepted_by_the_waypoint() {
    // The waypoint's own conversion is the contract: what we send, it takes.
    let out = translated();
    assert!(!out.policies.is_empty());
    for (hostname, resource) in &out.policies {
        if let Err(error) = waypoint::authz::ServicePolicies::try_from(resource.clone()) {
            panic!("the waypoint rejects {hostname}: {error}");
        }
    }
}

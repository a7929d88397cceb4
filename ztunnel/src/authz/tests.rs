//! Every rule has a positive and a negative case: the connection that the
//! policy lets through and the one it stops.

use std::net::IpAddr;
use std::sync::Arc;

use identity::Identity;
use ipnet::IpNet;

use super::*;
use crate::state::policy::{Match, Scope, ServiceAccountMatch, StringMatch};

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn conn(src: Option<Identity>, src_ip: &str, port: u16) -> Connection {
    Connection::new(ip(src_ip), src, ip("10.0.2.5"), port)
}

fn policy(name: &str, action: Action, groups: Vec<Vec<Vec<Match>>>) -> Arc<Policy> {
    Arc::new(Policy {
        name: name.into(),
        namespace: "b".into(),
        scope: Scope::Namespace,
        action,
        groups,
        dry_run: false,
    })
}

/// One group, one rule, one match.
fn single(m: Match) -> Vec<Vec<Vec<Match>>> {
    vec![vec![vec![m]]]
}

fn from_principal(p: &str) -> Match {
    Match {
        principals: vec![StringMatch::Exact(p.into())],
        ..Match::default()
    }
}

fn decide(policies: &[Arc<Policy>], conn: &Connection) -> Decision {
    evaluate(policies, conn).decision
}

#[test]
fn no_policy_allows() {
    assert_eq!(decide(&[], &conn(None, "10.0.1.1", 80)), Decision::Allow);
}

#[test]
fn allow_by_principal_lets_that_principal_in_and_no_one_else() {
    let allow = policy(
        "allow-a",
        Action::Allow,
        single(from_principal("cluster.local/ns/a/sa/client")),
    );
    let policies = [allow];
    assert!(decide(&policies, &conn(Some(id("a", "client")), "10.0.1.1", 80)).is_allowed());
    assert_eq!(
        decide(&policies, &conn(Some(id("c", "client")), "10.0.1.1", 80)),
        Decision::NotAllowed
    );
    // Plaintext has no principal at all.
    assert_eq!(
        decide(&policies, &conn(None, "10.0.1.1", 80)),
        Decision::NotAllowed
    );
}

#[test]
fn deny_wins_over_allow() {
    let allow_all_mtls = policy(
        "allow",
        Action::Allow,
        single(Match {
            principals: vec![StringMatch::Presence],
            ..Match::default()
        }),
    );
    let deny_ns = policy(
        "deny-c",
        Action::Deny,
        single(Match {
            namespaces: vec![StringMatch::Exact("c".into())],
            ..Match::default()
        }),
    );
    let policies = [allow_all_mtls, deny_ns];
    assert!(decide(&policies, &conn(Some(id("a", "x")), "10.0.1.1", 80)).is_allowed());
    assert_eq!(
        decide(&policies, &conn(Some(id("c", "x")), "10.0.1.1", 80)),
        Decision::DeniedBy("b/deny-c".into())
    );
}

#[test]
fn static_strict_policy_denies_plaintext_only() {
    // What istiod-lite sends for STRICT PeerAuthentication.
    let strict = policy(
        "istio_converted_static_strict",
        Action::Deny,
        single(Match {
            not_principals: vec![StringMatch::Presence],
            ..Match::default()
        }),
    );
    let policies = [strict];
    assert!(!decide(&policies, &conn(None, "10.0.1.1", 80)).is_allowed());
    assert!(decide(&policies, &conn(Some(id("a", "x")), "10.0.1.1", 80)).is_allowed());
}

#[test]
fn ports_and_not_ports() {
    let allow_8080 = policy(
        "p",
        Action::Allow,
        single(Match {
            destination_ports: vec![8080],
            ..Match::default()
        }),
    );
    assert!(
        decide(
            std::slice::from_ref(&allow_8080),
            &conn(None, "10.0.1.1", 8080)
        )
        .is_allowed()
    );
    assert!(!decide(&[allow_8080], &conn(None, "10.0.1.1", 9090)).is_allowed());

    let deny_not_80 = policy(
        "p",
        Action::Deny,
        single(Match {
            not_destination_ports: vec![80],
            ..Match::default()
        }),
    );
    assert!(
        decide(
            std::slice::from_ref(&deny_not_80),
            &conn(None, "10.0.1.1", 80)
        )
        .is_allowed()
    );
    assert!(!decide(&[deny_not_80], &conn(None, "10.0.1.1", 81)).is_allowed());
}

#[test]
fn source_ip_blocks() {
    let net: IpNet = "10.0.1.0/24".parse().unwrap();
    let allow = policy(
        "p",
        Action::Allow,
        single(Match {
            source_ips: vec![net],
            ..Match::default()
        }),
    );
    assert!(decide(std::slice::from_ref(&allow), &conn(None, "10.0.1.200", 80)).is_allowed());
    assert!(!decide(&[allow], &conn(None, "10.0.3.1", 80)).is_allowed());
}

#[test]
fn service_accounts_need_namespace_and_name() {
    let allow = policy(
        "p",
        Action::Allow,
        single(Match {
            service_accounts: vec![ServiceAccountMatch {
                namespace: "a".into(),
                service_account: "client".into(),
            }],
            ..Match::default()
        }),
    );
    let policies = [allow];
    assert!(decide(&policies, &conn(Some(id("a", "client")), "10.0.1.1", 80)).is_allowed());
    assert!(!decide(&policies, &conn(Some(id("b", "client")), "10.0.1.1", 80)).is_allowed());
    assert!(!decide(&policies, &conn(Some(id("a", "other")), "10.0.1.1", 80)).is_allowed());
}

#[test]
fn all_rules_of_a_group_must_match_and_any_group_suffices() {
    // (from a AND port 80) OR (from c)
    let groups = vec![
        vec![
            vec![from_principal("cluster.local/ns/a/sa/x")],
            vec![Match {
                destination_ports: vec![80],
                ..Match::default()
            }],
        ],
        vec![vec![from_principal("cluster.local/ns/c/sa/x")]],
    ];
    let policies = [policy("p", Action::Allow, groups)];
    assert!(decide(&policies, &conn(Some(id("a", "x")), "10.0.1.1", 80)).is_allowed());
    assert!(!decide(&policies, &conn(Some(id("a", "x")), "10.0.1.1", 81)).is_allowed());
    assert!(decide(&policies, &conn(Some(id("c", "x")), "10.0.1.1", 81)).is_allowed());
}

#[test]
fn an_allow_policy_without_rules_allows_nothing() {
    // `spec: {}` with action ALLOW: the deny-all idiom.
    let policies = [policy("deny-all", Action::Allow, vec![])];
    assert!(!decide(&policies, &conn(Some(id("a", "x")), "10.0.1.1", 80)).is_allowed());
}

#[test]
fn an_empty_match_matches_nothing() {
    let policies = [policy("p", Action::Deny, single(Match::default()))];
    assert!(decide(&policies, &conn(None, "10.0.1.1", 80)).is_allowed());
}

#[test]
fn prefix_and_suffix_principals() {
    let allow = policy(
        "p",
        Action::Allow,
        single(Match {
            principals: vec![StringMatch::Suffix("/sa/client".into())],
            ..Match::default()
        }),
    );
    let policies = [allow];
    assert!(decide(&policies, &conn(Some(id("q", "client")), "10.0.1.1", 80)).is_allowed());
    assert!(!decide(&policies, &conn(Some(id("q", "server")), "10.0.1.1", 80)).is_allowed());
}

#[test]
fn dry_run_policies_are_reported_not_enforced() {
    let mut deny = Policy::clone(&policy(
        "dry",
        Action::Deny,
        single(from_principal("cluster.local/ns/a/sa/x")),
    ));
    deny.dry_run = true;
    let verdict = evaluate(&[Arc::new(deny)], &conn(Some(id("a", "x")), "10.0.1.1", 80));
    assert_eq!(verdict.decision, Decision::Allow);
    assert_eq!(verdict.dry_run, vec![Arc::<str>::from("b/dry")]);

    let verdict = evaluate(
        &[] as &[Arc<Policy>],
        &conn(Some(id("a", "x")), "10.0.1.1", 80),
    );
    assert!(verdict.dry_run.is_empty());
}

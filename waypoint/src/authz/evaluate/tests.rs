//! Precedence, as Istio decides: DENY before ALLOW; ALLOW policies, when
//! there are any, must match; no ALLOW policy allows; AUDIT and dry-run
//! policies are reported and never change the verdict.

use super::*;
use crate::authz::testing::*;
use crate::authz::{Policy, Rule};

fn verdict(policies: &[Policy], call: &Call) -> Verdict {
    evaluate(policies, &call.request()).verdict
}

/// `DENY POST /admin*` and `ALLOW GET from shop`: the usual pair.
fn deny_admin_writes() -> Policy {
    deny(
        "deny-admin-writes",
        vec![to(vec![crate::authz::Operation {
            methods: strings(&["POST"]),
            paths: strings(&["/admin*"]),
            ..Default::default()
        }])],
    )
}

fn allow_from_shop() -> Policy {
    allow(
        "allow-from-shop",
        vec![from(vec![crate::authz::Source {
            namespaces: strings(&["shop"]),
            ..Default::default()
        }])],
    )
}

#[test]
fn no_policy_allows() {
    let decision = evaluate(&Vec::<Policy>::new(), &call().request());
    assert_eq!(
        decision,
        Decision {
            verdict: Verdict::Allow,
            audited_by: Vec::new(),
            dry_run: DryRun::default(),
        }
    );
    assert!(decision.is_allowed());
}

#[test]
fn without_allow_policies_what_no_deny_matches_is_allowed() {
    let policies = [deny_admin_writes()];
    assert_eq!(verdict(&policies, &call()), Verdict::Allow);
    assert_eq!(
        verdict(&policies, &call().method("POST").path("/admin/users")),
        Verdict::DeniedBy(name("deny-admin-writes"))
    );
}

#[test]
fn deny_wins_over_a_matching_allow() {
    let policies = [allow_from_shop(), deny_admin_writes()];
    let admin_write = call().method("POST").path("/admin");
    assert_eq!(
        verdict(&policies, &admin_write),
        Verdict::DeniedBy(name("deny-admin-writes"))
    );
    assert_eq!(verdict(&policies, &call()), Verdict::Allow);
}

#[test]
fn the_first_matching_deny_is_named() {
    let policies = [
        deny("first", vec![Rule::default()]),
        deny("second", vec![Rule::default()]),
    ];
    assert_eq!(
        verdict(&policies, &call()),
        Verdict::DeniedBy(name("first"))
    );
}

#[test]
fn with_allow_policies_one_must_match() {
    let policies = [allow_from_shop()];
    assert_eq!(verdict(&policies, &call()), Verdict::Allow);
    assert_eq!(
        verdict(&policies, &call().by("cluster.local/ns/billing/sa/web")),
        Verdict::NotAllowed
    );
    assert_eq!(verdict(&policies, &call().plaintext()), Verdict::NotAllowed);
}

#[test]
fn any_matching_allow_policy_allows() {
    let policies = [
        allow_from_shop(),
        allow("public-reads", vec![to(vec![paths(&["/public*"])])]),
    ];
    let billing = call().by("cluster.local/ns/billing/sa/web");
    assert_eq!(verdict(&policies, &billing), Verdict::Allow);
    assert_eq!(
        verdict(&policies, &billing.path("/private")),
        Verdict::NotAllowed
    );
}

#[test]
fn an_allow_policy_without_rules_denies_everything() {
    let policies = [allow("allow-nothing", Vec::new())];
    assert_eq!(verdict(&policies, &call()), Verdict::NotAllowed);
    assert_eq!(verdict(&policies, &call().plaintext()), Verdict::NotAllowed);
}

#[test]
fn an_allow_policy_with_an_empty_rule_allows_everything() {
    let policies = [allow("allow-all", vec![Rule::default()])];
    assert_eq!(
        verdict(&policies, &call().plaintext().path("/x")),
        Verdict::Allow
    );
}

#[test]
fn a_deny_policy_with_an_empty_rule_denies_everything() {
    let policies = [allow_from_shop(), deny("deny-all", vec![Rule::default()])];
    assert_eq!(
        verdict(&policies, &call()),
        Verdict::DeniedBy(name("deny-all"))
    );
}

#[test]
fn audit_policies_are_reported_and_never_decide() {
    let audit_admin = audit("audit-admin", vec![to(vec![paths(&["/admin*"])])]);
    let audit_all = audit("audit-all", vec![Rule::default()]);

    // Alone, a matching AUDIT policy does not deny, nor count as ALLOW.
    let decision = evaluate([&audit_admin], &call().path("/admin").request());
    assert_eq!(decision.verdict, Verdict::Allow);
    assert_eq!(decision.audited_by, vec![name("audit-admin")]);

    // With an ALLOW policy, a matching AUDIT policy does not allow.
    let policies = [allow("allow-nothing", Vec::new()), audit_all.clone()];
    let decision = evaluate(&policies, &call().request());
    assert_eq!(decision.verdict, Verdict::NotAllowed);
    assert_eq!(decision.audited_by, vec![name("audit-all")]);

    // Not matching: not reported.
    let decision = evaluate(&[audit_admin, audit_all], &call().request());
    assert_eq!(decision.audited_by, vec![name("audit-all")]);
}

#[test]
fn a_dry_run_deny_is_reported_and_does_not_deny() {
    let policies = [dry_run(deny_admin_writes())];
    let decision = evaluate(&policies, &call().method("POST").path("/admin").request());
    assert_eq!(decision.verdict, Verdict::Allow);
    assert_eq!(
        decision.dry_run,
        DryRun {
            deny: Some(Verdict::DeniedBy(name("deny-admin-writes"))),
            allow: None,
        }
    );
    let decision = evaluate(&policies, &call().request());
    assert_eq!(decision.dry_run.deny, Some(Verdict::Allow));
}

#[test]
fn a_dry_run_allow_is_reported_and_does_not_count_as_allow_policy() {
    // The dry-run ALLOW alone would deny billing, but there is no enforced
    // ALLOW policy, so the request is allowed.
    let policies = [dry_run(allow_from_shop())];
    let billing = call().by("cluster.local/ns/billing/sa/web");
    let decision = evaluate(&policies, &billing.request());
    assert_eq!(decision.verdict, Verdict::Allow);
    assert_eq!(
        decision.dry_run,
        DryRun {
            deny: None,
            allow: Some(Verdict::NotAllowed),
        }
    );
    let decision = evaluate(&policies, &call().request());
    assert_eq!(decision.dry_run.allow, Some(Verdict::Allow));
}

#[test]
fn a_dry_run_allow_does_not_rescue_a_request_no_allow_matches() {
    let policies = [
        allow("allow-nothing", Vec::new()),
        dry_run(allow("allow-all", vec![Rule::default()])),
    ];
    let decision = evaluate(&policies, &call().request());
    assert_eq!(decision.verdict, Verdict::NotAllowed);
    assert_eq!(decision.dry_run.allow, Some(Verdict::Allow));
}

#[test]
fn dry_run_policies_never_change_an_enforced_deny() {
    let policies = [
        deny_admin_writes(),
        dry_run(allow("allow-all", vec![Rule::default()])),
        dry_run(deny("deny-nothing", Vec::new())),
    ];
    let decision = evaluate(&policies, &call().method("POST").path("/admin").request());
    assert_eq!(
        decision.verdict,
        Verdict::DeniedBy(name("deny-admin-writes"))
    );
    assert_eq!(
        decision.dry_run,
        DryRun {
            deny: Some(Verdict::Allow),
            allow: Some(Verdict::Allow),
        }
    );
}

#[test]
fn the_order_of_policies_does_not_change_the_verdict() {
    let mut policies = vec![
        allow_from_shop(),
        deny_admin_writes(),
        audit("audit-all", vec![Rule::default()]),
        dry_run(deny("deny-all", vec![Rule::default()])),
    ];
    let calls = [
        call(),
        call().method("POST").path("/admin"),
        call().by("cluster.local/ns/billing/sa/web"),
        call().plaintext(),
    ];
    let forward: Vec<_> = calls.iter().map(|c| verdict(&policies, c)).collect();
    policies.reverse();
    let backward: Vec<_> = calls.iter().map(|c| verdict(&policies, c)).collect();
    assert_eq!(forward, backward);
    assert_eq!(
        forward,
        [
            Verdict::Allow,
            Verdict::DeniedBy(name("deny-admin-writes")),
            Verdict::NotAllowed,
            Verdict::NotAllowed,
        ]
    );
}

#[test]
fn reasons_name_the_policy_for_the_log_only() {
    assert_eq!(Verdict::Allow.reason(), "allowed");
    assert_eq!(
        Verdict::DeniedBy(name("deny-admin-writes")).reason(),
        "denied by DENY policy shop/deny-admin-writes"
    );
    assert_eq!(
        Verdict::NotAllowed.reason(),
        "denied: no ALLOW policy matched"
    );
    assert!(!Verdict::NotAllowed.is_allowed());
    assert_eq!(DENIED_STATUS, http::StatusCode::FORBIDDEN);
    assert!(!DENIED_BODY.contains("shop"));
}

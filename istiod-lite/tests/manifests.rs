#![allow(clippy::unwrap_used)]
//! The committed Kubernetes manifests agree with the code.
//!
//! - `manifests/crds.yaml` is generated from our `CustomResource` types and
//!   must not drift from them. Regenerate with
//!   `UPDATE_MANIFESTS=1 cargo test -p istiod-lite --test manifests`.
//! - `manifests/istiod-lite.yaml` grants the RBAC the Kubernetes source and
//!   the CA need: `list` and `watch` on every kind the source reads, `create`
//!   on TokenReviews. A kind added to the source without its RBAC fails here
//!   instead of in a cluster. Its only writes beyond that are the waypoint
//!   controller's and the root certificate controller's, which
//!   `tests/manifests_waypoints.rs` checks.
//!
//! Neither file is applied to an API server here (none can run on these
//! machines); this checks their content, not a cluster's reaction to them.

use std::path::PathBuf;

use istiod_lite::model::{
    AuthorizationPolicy, DestinationRule, Gateway, HTTPRoute, PeerAuthentication, VirtualService,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::CustomResourceExt;
use serde::Deserialize;

const GENERATED_HEADER: &str = "# Generated from istiod-lite/src/model by\n\
# `UPDATE_MANIFESTS=1 cargo test -p istiod-lite --test manifests`: do not edit.\n\
# These are the subsets of Istio's and Gateway API's CRDs that istiod-lite\n\
# reads. On a cluster that already has Istio's or Gateway API's CRDs, skip\n\
# this file: the served group/version/kind are the same.\n";

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("manifests")
}

fn generated_crds() -> String {
    let crds = [
        AuthorizationPolicy::crd(),
        PeerAuthentication::crd(),
        VirtualService::crd(),
        DestinationRule::crd(),
        Gateway::crd(),
        HTTPRoute::crd(),
    ];
    let mut out = String::from(GENERATED_HEADER);
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd).unwrap());
    }
    out
}

#[test]
fn committed_crds_match_the_model() {
    let path = manifests_dir().join("crds.yaml");
    let generated = generated_crds();
    if std::env::var_os("UPDATE_MANIFESTS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with istiod-lite/src/model: run \
         `UPDATE_MANIFESTS=1 cargo test -p istiod-lite --test manifests` and commit the result",
        path.display()
    );
}

/// The ClusterRole of `manifests/istiod-lite.yaml`.
fn istiod_cluster_role() -> ClusterRole {
    let path = manifests_dir().join("istiod-lite.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut roles = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = serde_yaml_ng::Value::deserialize(document).unwrap();
        if value.get("kind").and_then(|k| k.as_str()) == Some("ClusterRole") {
            roles.push(serde_yaml_ng::from_value::<ClusterRole>(value).unwrap());
        }
    }
    assert_eq!(
        roles.len(),
        1,
        "{} must hold one ClusterRole",
        path.display()
    );
    roles.pop().unwrap()
}

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|rule| {
        let has = |list: &Option<Vec<String>>, item: &str| {
            list.as_ref()
                .is_some_and(|l| l.iter().any(|x| x == item || x == "*"))
        };
        has(&rule.api_groups, group)
            && has(&rule.resources, resource)
            && rule.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn the_cluster_role_covers_every_watched_kind_and_token_reviews() {
    let role = istiod_cluster_role();
    let rules = role.rules.unwrap_or_default();
    let watched = [
        ("", "namespaces"),
        ("", "pods"),
        ("", "services"),
        ("security.istio.io", "authorizationpolicies"),
        ("security.istio.io", "peerauthentications"),
        ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "destinationrules"),
        ("gateway.networking.k8s.io", "gateways"),
        ("gateway.networking.k8s.io", "httproutes"),
    ];
    for (group, resource) in watched {
        for verb in ["list", "watch"] {
            assert!(
                grants(&rules, group, resource, verb),
                "the ClusterRole lacks {verb} on {resource}.{group}"
            );
        }
    }
    assert!(grants(
        &rules,
        "authentication.k8s.io",
        "tokenreviews",
        "create"
    ));
    // Least privilege: the control plane reads config; it writes nothing
    // but TokenReviews (which store nothing), the waypoints it deploys and
    // the root certificate ConfigMaps it publishes.
    for rule in &rules {
        let resources = rule.resources.as_deref().unwrap_or_default();
        let only = |allowed: &[&str]| resources.iter().all(|r| allowed.contains(&r.as_str()));
        for verb in &rule.verbs {
            let allowed = match verb.as_str() {
                "get" | "list" | "watch" => true,
                "create" => only(&[
                    "tokenreviews",
                    "serviceaccounts",
                    "services",
                    "deployments",
                    "configmaps",
                ]),
                "patch" => only(&[
                    "serviceaccounts",
                    "services",
                    "deployments",
                    "gateways/status",
                    "configmaps",
                ]),
                _ => false,
            };
            assert!(allowed, "unexpected verb {verb} in {rule:?}");
        }
    }
}

#[test]
fn the_rbac_check_notices_a_missing_grant() {
    // The check above must be able to fail: a rule set without pods.
    let rules = vec![PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(vec!["services".into()]),
        verbs: vec!["list".into(), "watch".into()],
        ..PolicyRule::default()
    }];
    assert!(grants(&rules, "", "services", "watch"));
    assert!(!grants(&rules, "", "pods", "watch"));
    assert!(!grants(&rules, "security.istio.io", "services", "watch"));
}

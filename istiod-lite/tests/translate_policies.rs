//! AuthorizationPolicy and PeerAuthentication to ztunnel authorizations,
//! from `fixtures/translate_policies.yaml`: scope, action, from/to/when,
//! the fail-closed L7 cases, AUDIT, targetRefs and STRICT mTLS.

// Helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

use istiod_lite::translate::{
    Diagnostic, Index, MeshConfig, ResourceType, STATIC_STRICT_POLICY_NAME, Severity, Translated,
    translate_all,
};
use proto::security::{
    Action, Address, Authorization, Group, Match, Rules, Scope, ServiceAccountMatch, StringMatch,
    string_match::MatchType,
};
use proto::workload::{Workload, address};

fn translated() -> Translated {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/translate_policies.yaml"
    );
    let yaml = std::fs::read_to_string(path).unwrap();
    let index = Index::from_yaml(&yaml).unwrap();
    translate_all(&index, &MeshConfig::default())
}

fn policy<'a>(out: &'a Translated, name: &str) -> &'a Authorization {
    out.authorizations
        .get(name)
        .unwrap_or_else(|| panic!("no authorization {name}"))
}

fn workload<'a>(out: &'a Translated, name: &str) -> &'a Workload {
    let uid = format!("Kubernetes//Pod/apps/{name}");
    match out.addresses.get(&uid).and_then(|a| a.r#type.as_ref()) {
        Some(address::Type::Workload(w)) => w,
        other => panic!("no workload {uid}: {other:?}"),
    }
}

fn warnings<'a>(out: &'a Translated, name: &str) -> Vec<&'a Diagnostic> {
    out.diagnostics
        .iter()
        .filter(|d| d.resource_type == ResourceType::Authorization && d.resource == name)
        .collect()
}

fn exact(s: &str) -> StringMatch {
    StringMatch {
        match_type: Some(MatchType::Exact(s.to_string())),
    }
}

fn matching(t: MatchType) -> StringMatch {
    StringMatch {
        match_type: Some(t),
    }
}

fn cidr(bytes: [u8; 4], length: u32) -> Address {
    Address {
        address: bytes.to_vec(),
        length,
    }
}

#[test]
fn scope_follows_selector_and_root_namespace() {
    let out = translated();
    let scope = |name| policy(&out, name).scope;
    assert_eq!(
        scope("apps/allow-from-sleep"),
        Scope::WorkloadSelector as i32
    );
    assert_eq!(scope("apps/deny-foreign"), Scope::Namespace as i32);
    assert_eq!(scope("istio-system/allow-all"), Scope::Global as i32);
    assert_eq!(
        scope("istio-system/root-selector"),
        Scope::WorkloadSelector as i32
    );
}

#[test]
fn action_and_allow_all_rule() {
    let out = translated();
    assert_eq!(
        policy(&out, "apps/deny-foreign").action,
        Action::Deny as i32
    );
    let allow_all = policy(&out, "istio-system/allow-all");
    assert_eq!(allow_all.action, Action::Allow as i32);
    // `rules: [{}]` is one group without conditions: it matches everything.
    assert_eq!(allow_all.groups, vec![Group { rules: vec![] }]);
    assert_eq!(
        (allow_all.name.as_str(), allow_all.namespace.as_str()),
        ("allow-all", "istio-system")
    );
}

#[test]
fn from_to_when_mapping() {
    let out = translated();
    let p = policy(&out, "apps/allow-from-sleep");
    let to = Rules {
        matches: vec![Match {
            destination_ports: vec![9080],
            not_destination_ports: vec![9090],
            ..Default::default()
        }],
    };
    let from = Rules {
        matches: vec![
            Match {
                principals: vec![
                    exact("cluster.local/ns/sleep/sa/sleep"),
                    matching(MatchType::Suffix("/sa/admin".into())),
                ],
                not_principals: vec![matching(MatchType::Prefix(
                    "cluster.local/ns/sleep/sa/bad".into(),
                ))],
                namespaces: vec![exact("sleep")],
                not_namespaces: vec![matching(MatchType::Presence(()))],
                source_ips: vec![cidr([10, 0, 0, 0], 8), cidr([192, 168, 1, 1], 32)],
                not_source_ips: vec![cidr([10, 1, 0, 0], 16)],
                service_accounts: vec![
                    ServiceAccountMatch {
                        namespace: "sleep".into(),
                        service_account: "sleep".into(),
                    },
                    ServiceAccountMatch {
                        namespace: "apps".into(),
                        service_account: "local-sa".into(),
                    },
                ],
                ..Default::default()
            },
            Match {
                namespaces: vec![exact("other")],
                ..Default::default()
            },
        ],
    };
    let when_ip = Rules {
        matches: vec![Match {
            source_ips: vec![cidr([172, 16, 0, 0], 12)],
            ..Default::default()
        }],
    };
    let when_port = Rules {
        matches: vec![Match {
            not_destination_ports: vec![15000],
            ..Default::default()
        }],
    };
    let when_principal = Rules {
        matches: vec![Match {
            principals: vec![matching(MatchType::Presence(()))],
            ..Default::default()
        }],
    };
    assert_eq!(
        p.groups,
        vec![Group {
            rules: vec![to, from, when_ip, when_port, when_principal]
        }]
    );
    assert!(warnings(&out, "apps/allow-from-sleep").is_empty());
}

#[test]
fn l7_allow_rules_are_dropped_and_policy_still_denies_by_default() {
    let out = translated();
    let p = policy(&out, "apps/l7-allow");
    assert_eq!(p.action, Action::Allow as i32);
    // Still sent, with nothing it can match: the workload has an ALLOW
    // policy, so everything else is denied.
    assert!(p.groups.is_empty());
    assert!(
        workload(&out, "details")
            .authorization_policies
            .contains(&"apps/l7-allow".to_string())
    );
    let notes = warnings(&out, "apps/l7-allow");
    assert!(notes.iter().all(|d| d.severity == Severity::Warning));
    assert!(
        notes
            .iter()
            .any(|d| d.message.contains("methods, paths, requestPrincipals")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|d| d.message.contains("allows nothing")),
        "{notes:?}"
    );

    // Only the L7 rule goes; the L4 rule stays.
    let partial = policy(&out, "apps/l7-allow-partial");
    assert_eq!(
        partial.groups,
        vec![Group {
            rules: vec![Rules {
                matches: vec![Match {
                    namespaces: vec![exact("apps")],
                    ..Default::default()
                }]
            }]
        }]
    );
    assert!(
        warnings(&out, "apps/l7-allow-partial")[0]
            .message
            .contains("(found: methods)")
    );
}

#[test]
fn l7_deny_rules_deny_on_their_l4_part() {
    let out = translated();
    let p = policy(&out, "apps/l7-deny");
    assert_eq!(p.action, Action::Deny as i32);
    let expected = Group {
        rules: vec![
            Rules {
                matches: vec![Match {
                    destination_ports: vec![8080],
                    ..Default::default()
                }],
            },
            Rules {
                matches: vec![Match {
                    namespaces: vec![exact("untrusted")],
                    ..Default::default()
                }],
            },
            // The header condition cannot be checked: it matches anything.
            Rules {
                matches: vec![Match::default()],
            },
        ],
    };
    assert_eq!(p.groups, vec![expected]);
    let notes = warnings(&out, "apps/l7-deny");
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0]
            .message
            .contains("methods, request.headers[x-token]"),
        "{}",
        notes[0]
    );
    assert!(notes[0].message.contains("DENY"), "{}", notes[0]);
}

#[test]
fn invalid_port_drops_the_allow_rule() {
    let out = translated();
    assert!(policy(&out, "apps/bad-port").groups.is_empty());
    assert!(
        warnings(&out, "apps/bad-port")[0]
            .message
            .contains("ports \"http\"")
    );
}

#[test]
fn audit_is_not_sent_and_says_so() {
    let out = translated();
    assert!(!out.authorizations.contains_key("apps/audit"));
    let notes = warnings(&out, "apps/audit");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].severity, Severity::Warning);
    assert!(notes[0].message.contains("AUDIT"));
}

#[test]
fn target_ref_policies_are_left_to_waypoints() {
    let out = translated();
    assert!(!out.authorizations.contains_key("apps/waypoint-bound"));
    let notes = warnings(&out, "apps/waypoint-bound");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].severity, Severity::Info);
}

#[test]
fn workloads_list_selecting_policies_and_static_strict() {
    let out = translated();
    let strict = format!("istio-system/{STATIC_STRICT_POLICY_NAME}");
    // Selector policies of its namespace, sorted, then STRICT from the
    // namespace PeerAuthentication. Namespace/global scoped ones are not listed.
    assert_eq!(
        workload(&out, "productpage").authorization_policies,
        vec![
            "apps/allow-from-sleep".to_string(),
            "apps/bad-port".to_string(),
            "apps/l7-deny".to_string(),
            strict.clone(),
        ]
    );
    // A root-namespace selector reaches other namespaces; the workload's own
    // PERMISSIVE PeerAuthentication overrides the namespace's STRICT.
    assert_eq!(
        workload(&out, "details").authorization_policies,
        vec![
            "apps/l7-allow".to_string(),
            "apps/l7-allow-partial".to_string(),
            "istio-system/root-selector".to_string(),
        ]
    );
}

#[test]
fn strict_peer_authentication_is_a_static_deny_of_plaintext() {
    let out = translated();
    let name = format!("istio-system/{STATIC_STRICT_POLICY_NAME}");
    let p = policy(&out, &name);
    assert_eq!(p.name, STATIC_STRICT_POLICY_NAME);
    assert_eq!(p.namespace, "istio-system");
    assert_eq!(p.scope, Scope::WorkloadSelector as i32);
    assert_eq!(p.action, Action::Deny as i32);
    assert_eq!(
        p.groups,
        vec![Group {
            rules: vec![Rules {
                matches: vec![Match {
                    not_principals: vec![matching(MatchType::Presence(()))],
                    ..Default::default()
                }]
            }]
        }]
    );
}

#[test]
fn no_peer_authentication_no_static_policy() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n";
    let out = translate_all(&Index::from_yaml(yaml).unwrap(), &MeshConfig::default());
    assert!(out.authorizations.is_empty());
}

//! `AuthorizationPolicy` and `PeerAuthentication` to ztunnel's L4
//! `Authorization`, with Istio's semantics.
//!
//! ztunnel sees TCP connections, not requests. A policy that names HTTP
//! attributes (methods, paths, hosts, request principals, remote IPs, L7
//! `when` keys) must therefore fail closed, exactly as Istio does it: in an
//! ALLOW policy, a rule that needs L7 is dropped (it can never match); in a
//! DENY policy, the rule is kept without its L7 parts (it denies on its L4
//! part alone). An ALLOW policy whose rules were all dropped is still sent,
//! with no groups: it matches nothing, and because an ALLOW policy exists
//! for the workload, everything else is denied by default. Each case leaves
//! a warning naming the policy and the attributes.
//!
//! Values ztunnel cannot parse (a port that is not a number, an IP block that
//! is not a CIDR) are handled the same fail-closed way, because silently
//! dropping them would widen an ALLOW rule to any port or address.
//!
//! ztunnel's protocol carries only ALLOW and DENY: AUDIT and CUSTOM policies
//! are not sent (as in Istio), with a warning. Policies with `targetRefs`
//! bind to waypoints and are not ztunnel's (an info note says so).
//!
//! `PeerAuthentication` STRICT becomes what Istio sends: one static policy
//! `<root-ns>/istio_converted_static_strict` (scope WORKLOAD_SELECTOR, DENY
//! when the peer has no principal, i.e. plaintext), pushed whenever any
//! PeerAuthentication exists, and referenced by every workload whose
//! effective mode (mesh, then namespace, then workload policy) is STRICT.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use proto::security::{
    self as sec, Action, Group, Match, Rules, Scope, ServiceAccountMatch, StringMatch,
    string_match::MatchType,
};

use super::{Diagnostic, Index, MeshConfig, Output, ResourceType, Severity, address_diagnostic};
use crate::model::{
    AuthorizationPolicy, Condition, MtlsMode, ObjectKey, ObjectKind, PeerAuthentication,
    PolicyAction, Rule,
};

/// Name of the synthetic policy that denies plaintext to STRICT workloads.
/// The underscores keep it apart from any Kubernetes object name.
pub const STATIC_STRICT_POLICY_NAME: &str = "istio_converted_static_strict";

/// The `when` keys ztunnel can evaluate.
const L4_WHEN_KEYS: [&str; 5] = [
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

fn policy_resource(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

pub(crate) fn translate_policy(
    index: &Index,
    config: &MeshConfig,
    namespace: &str,
    name: &str,
) -> Output<sec::Authorization> {
    let resource = policy_resource(namespace, name);
    let (authorization, diagnostics) = match index.authorization_policy(namespace, name) {
        Some(policy) => convert(policy, config, namespace, name, &resource),
        None => (None, Vec::new()),
    };
    Output {
        name: resource,
        resource: authorization,
        diagnostics,
    }
}

fn convert(
    policy: &AuthorizationPolicy,
    config: &MeshConfig,
    namespace: &str,
    name: &str,
    resource: &str,
) -> (Option<sec::Authorization>, Vec<Diagnostic>) {
    let key = ObjectKey::new(ObjectKind::AuthorizationPolicy, namespace, name);
    let diagnostic = |severity, message: String| Diagnostic {
        resource_type: ResourceType::Authorization,
        resource: resource.to_string(),
        severity,
        object: key.clone(),
        message,
    };
    let spec = &policy.spec;
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        let message = "bound with targetRefs, so it is enforced by a waypoint, not sent to ztunnel";
        return (None, vec![diagnostic(Severity::Info, message.to_string())]);
    }
    let action = match spec.action {
        PolicyAction::Allow => Action::Allow,
        PolicyAction::Deny => Action::Deny,
        PolicyAction::Audit | PolicyAction::Custom => {
            let action = if spec.action == PolicyAction::Audit {
                "AUDIT"
            } else {
                "CUSTOM"
            };
            let message = format!(
                "ztunnel does not support the {action} action; the policy is not sent to ztunnel \
                 and has no effect on L4 traffic"
            );
            return (None, vec![diagnostic(Severity::Warning, message)]);
        }
    };
    let scope = match (&spec.selector, namespace == config.root_namespace) {
        (Some(_), _) => Scope::WorkloadSelector,
        (None, true) => Scope::Global,
        (None, false) => Scope::Namespace,
    };

    let mut groups = Vec::new();
    let mut unsupported = BTreeSet::new();
    let mut invalid = BTreeSet::new();
    for rule in &spec.rules {
        let mut found = RuleProblems::default();
        let rules = convert_rule(rule, namespace, &mut found);
        let needs_l7 = !found.unsupported.is_empty() || !found.invalid.is_empty();
        unsupported.extend(found.unsupported);
        invalid.extend(found.invalid);
        // An ALLOW rule ztunnel cannot fully evaluate must never match; a
        // DENY rule keeps its L4 part, so it denies more, never less.
        if action == Action::Allow && needs_l7 {
            continue;
        }
        groups.push(Group { rules });
    }

    let mut diagnostics = Vec::new();
    let consequence = match action {
        Action::Allow => "in an ALLOW policy the rules using them are dropped and allow nothing",
        Action::Deny => "in a DENY policy the rules are enforced without them and deny more",
    };
    if !unsupported.is_empty() {
        let found = unsupported.into_iter().collect::<Vec<_>>().join(", ");
        diagnostics.push(diagnostic(
            Severity::Warning,
            format!(
                "ztunnel cannot evaluate HTTP attributes (found: {found}); {consequence}, \
                 which is stricter than written; bind the policy to a waypoint with targetRefs \
                 to enforce them"
            ),
        ));
    }
    if !invalid.is_empty() {
        let found = invalid.into_iter().collect::<Vec<_>>().join(", ");
        diagnostics.push(diagnostic(
            Severity::Warning,
            format!("invalid values ({found}); {consequence}, which is stricter than written"),
        ));
    }
    if action == Action::Allow && groups.is_empty() && !spec.rules.is_empty() {
        diagnostics.push(diagnostic(
            Severity::Warning,
            "no rule is left for ztunnel: the policy allows nothing, and as an ALLOW policy it \
             denies all other traffic to the workloads it applies to"
                .to_string(),
        ));
    }

    let authorization = sec::Authorization {
        name: name.to_string(),
        namespace: namespace.to_string(),
        scope: scope as i32,
        action: action as i32,
        groups,
        dry_run: false,
    };
    (Some(authorization), diagnostics)
}

/// What a rule uses that ztunnel cannot evaluate.
#[derive(Default)]
struct RuleProblems {
    /// L7 attributes, by their field or `when` key name.
    unsupported: BTreeSet<String>,
    /// Values that do not parse, as `field "value"`.
    invalid: BTreeSet<String>,
}

/// One rule to a conjunction of `Rules`: `to` (any of), `from` (any of), then
/// one `Rules` per `when` condition.
fn convert_rule(rule: &Rule, namespace: &str, found: &mut RuleProblems) -> Vec<Rules> {
    let mut out = Vec::new();
    let mut to_matches = Vec::new();
    for to in &rule.to {
        let op = &to.operation;
        for (field, values) in [
            ("hosts", &op.hosts),
            ("notHosts", &op.not_hosts),
            ("methods", &op.methods),
            ("notMethods", &op.not_methods),
            ("paths", &op.paths),
            ("notPaths", &op.not_paths),
        ] {
            if !values.is_empty() {
                found.unsupported.insert(field.to_string());
            }
        }
        to_matches.push(Match {
            destination_ports: ports("ports", &op.ports, found),
            not_destination_ports: ports("notPorts", &op.not_ports, found),
            ..Default::default()
        });
    }
    let mut from_matches = Vec::new();
    for from in &rule.from {
        let src = &from.source;
        for (field, values) in [
            ("requestPrincipals", &src.request_principals),
            ("notRequestPrincipals", &src.not_request_principals),
            ("remoteIpBlocks", &src.remote_ip_blocks),
            ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
        ] {
            if !values.is_empty() {
                found.unsupported.insert(field.to_string());
            }
        }
        from_matches.push(Match {
            namespaces: string_matches(&src.namespaces),
            not_namespaces: string_matches(&src.not_namespaces),
            principals: string_matches(&src.principals),
            not_principals: string_matches(&src.not_principals),
            source_ips: cidrs("ipBlocks", &src.ip_blocks, found),
            not_source_ips: cidrs("notIpBlocks", &src.not_ip_blocks, found),
            service_accounts: service_accounts(&src.service_accounts, namespace),
            not_service_accounts: service_accounts(&src.not_service_accounts, namespace),
            ..Default::default()
        });
    }
    if !to_matches.is_empty() {
        out.push(Rules {
            matches: to_matches,
        });
    }
    if !from_matches.is_empty() {
        out.push(Rules {
            matches: from_matches,
        });
    }
    for condition in &rule.when {
        out.push(Rules {
            matches: vec![when_match(condition, found)],
        });
    }
    out
}

/// A `when` condition as one match. An L7 key yields an empty match (which
/// matches anything): harmless, since an ALLOW rule with it is dropped and a
/// DENY rule should deny on its other parts.
fn when_match(condition: &Condition, found: &mut RuleProblems) -> Match {
    let key = condition.key.as_str();
    if !L4_WHEN_KEYS.contains(&key) {
        found.unsupported.insert(key.to_string());
        return Match::default();
    }
    let (values, not_values) = (&condition.values, &condition.not_values);
    let field = format!("when {key}");
    let mut m = Match::default();
    match key {
        "source.ip" => {
            m.source_ips = cidrs(&field, values, found);
            m.not_source_ips = cidrs(&field, not_values, found);
        }
        "source.namespace" => {
            m.namespaces = string_matches(values);
            m.not_namespaces = string_matches(not_values);
        }
        "source.principal" => {
            m.principals = string_matches(values);
            m.not_principals = string_matches(not_values);
        }
        "destination.ip" => {
            m.destination_ips = cidrs(&field, values, found);
            m.not_destination_ips = cidrs(&field, not_values, found);
        }
        _ => {
            m.destination_ports = ports(&field, values, found);
            m.not_destination_ports = ports(&field, not_values, found);
        }
    }
    m
}

/// Istio's string match syntax: `*` presence, `*x` suffix, `x*` prefix.
fn string_matches(values: &[String]) -> Vec<StringMatch> {
    values
        .iter()
        .map(|v| {
            let match_type = if v == "*" {
                MatchType::Presence(())
            } else if let Some(suffix) = v.strip_prefix('*') {
                MatchType::Suffix(suffix.to_string())
            } else if let Some(prefix) = v.strip_suffix('*') {
                MatchType::Prefix(prefix.to_string())
            } else {
                MatchType::Exact(v.clone())
            };
            StringMatch {
                match_type: Some(match_type),
            }
        })
        .collect()
}

fn ports(field: &str, values: &[String], found: &mut RuleProblems) -> Vec<u32> {
    let mut out = Vec::new();
    for value in values {
        match value.parse::<u16>() {
            Ok(port) => out.push(u32::from(port)),
            Err(_) => {
                found.invalid.insert(format!("{field} {value:?}"));
            }
        }
    }
    out
}

fn cidrs(field: &str, values: &[String], found: &mut RuleProblems) -> Vec<sec::Address> {
    let mut out = Vec::new();
    for value in values {
        match parse_cidr(value) {
            Some(address) => out.push(address),
            None => {
                found.invalid.insert(format!("{field} {value:?}"));
            }
        }
    }
    out
}

/// `1.2.3.4` (a /32) or `1.2.3.0/24`, v4 or v6.
fn parse_cidr(value: &str) -> Option<sec::Address> {
    let (ip, length) = match value.split_once('/') {
        Some((ip, length)) => (
            ip.parse::<IpAddr>().ok()?,
            Some(length.parse::<u32>().ok()?),
        ),
        None => (value.parse::<IpAddr>().ok()?, None),
    };
    let (bytes, bits) = match ip {
        IpAddr::V4(v4) => (v4.octets().to_vec(), 32),
        IpAddr::V6(v6) => (v6.octets().to_vec(), 128),
    };
    let length = length.unwrap_or(bits);
    (length <= bits).then_some(sec::Address {
        address: bytes,
        length,
    })
}

/// `sa` (in the policy's namespace) or `ns/sa`.
fn service_accounts(values: &[String], namespace: &str) -> Vec<ServiceAccountMatch> {
    values
        .iter()
        .map(|v| match v.split_once('/') {
            Some((ns, sa)) => ServiceAccountMatch {
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            },
            None => ServiceAccountMatch {
                namespace: namespace.to_string(),
                service_account: v.clone(),
            },
        })
        .collect()
}

/// Whether a selector-based policy applies to a pod: it selects in its own
/// namespace, or in every namespace when it lives in the root namespace.
pub(crate) fn policy_selects(
    policy: &AuthorizationPolicy,
    config: &MeshConfig,
    pod_namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let policy_ns = policy.metadata.namespace.as_deref().unwrap_or("default");
    let Some(selector) = &policy.spec.selector else {
        return false;
    };
    (policy_ns == pod_namespace || policy_ns == config.root_namespace)
        && selector
            .match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
}

/// The `authorization_policies` of a workload: the sorted names of the
/// selector-based policies sent to ztunnel that select it, then the static
/// STRICT policy when its effective mTLS mode is STRICT. Namespace- and
/// mesh-scoped policies are not listed: ztunnel applies them by scope.
pub(crate) fn workload_policies(
    index: &Index,
    config: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    uid: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<String> {
    let mut names = BTreeSet::new();
    let candidates = index
        .authorization_policies(Some(namespace))
        .chain(index.authorization_policies(Some(&config.root_namespace)));
    for policy in candidates {
        if !policy_selects(policy, config, namespace, labels) {
            continue;
        }
        let ns = policy.metadata.namespace.as_deref().unwrap_or("default");
        let name = policy.metadata.name.as_deref().unwrap_or_default();
        // Only policies that produce an Authorization are worth naming.
        if convert(policy, config, ns, name, "").0.is_some() {
            names.insert(policy_resource(ns, name));
        }
    }
    let mut names: Vec<String> = names.into_iter().collect();
    if effective_strict(index, config, namespace, labels, uid, diagnostics) {
        names.push(policy_resource(
            &config.root_namespace,
            STATIC_STRICT_POLICY_NAME,
        ));
    }
    names
}

/// The effective mTLS mode of a workload, resolved like Istio: the oldest
/// mesh-wide policy, overridden by the oldest namespace policy unless UNSET,
/// overridden by the oldest matching workload policy unless UNSET.
fn effective_strict(
    index: &Index,
    config: &MeshConfig,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    uid: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let unselected = |pa: &&PeerAuthentication| {
        pa.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    };
    let mesh = oldest(
        index
            .peer_authentications(Some(&config.root_namespace))
            .filter(unselected)
            .collect(),
    );
    let (ns_policy, workload_policy) = if namespace == config.root_namespace {
        (None, None)
    } else {
        let in_ns: Vec<_> = index.peer_authentications(Some(namespace)).collect();
        let ns_policy = oldest(in_ns.iter().copied().filter(unselected).collect());
        let workload_policy = oldest(
            in_ns
                .iter()
                .copied()
                .filter(|pa| {
                    pa.spec.selector.as_ref().is_some_and(|s| {
                        !s.match_labels.is_empty()
                            && s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
                })
                .collect(),
        );
        (ns_policy, workload_policy)
    };
    let mode = |pa: &PeerAuthentication| pa.spec.mtls.as_ref().map_or(MtlsMode::Unset, |m| m.mode);
    let mut strict = mesh.is_some_and(|pa| mode(pa) == MtlsMode::Strict);
    if let Some(pa) = ns_policy
        && mode(pa) != MtlsMode::Unset
    {
        strict = mode(pa) == MtlsMode::Strict;
    }
    let Some(pa) = workload_policy else {
        return strict;
    };
    if mode(pa) != MtlsMode::Unset {
        strict = mode(pa) == MtlsMode::Strict;
    }
    // Port-level exceptions need per-port DENY rules that are not
    // translated yet. Fail closed: any STRICT port makes the whole workload
    // STRICT, and PERMISSIVE ports under STRICT stay STRICT.
    let levels = &pa.spec.port_level_mtls;
    let any_strict_port = levels.values().any(|m| m.mode == MtlsMode::Strict);
    let any_relaxed_port = levels
        .values()
        .any(|m| matches!(m.mode, MtlsMode::Permissive | MtlsMode::Disable));
    if (!strict && any_strict_port) || (strict && any_relaxed_port) {
        let pa_ns = pa.metadata.namespace.as_deref().unwrap_or("default");
        let pa_name = pa.metadata.name.as_deref().unwrap_or_default();
        diagnostics.push(address_diagnostic(
            uid,
            Severity::Warning,
            ObjectKey::new(ObjectKind::PeerAuthentication, pa_ns, pa_name),
            "portLevelMtls is not translated for ztunnel yet; the workload is treated as STRICT \
             on every port, which is stricter than written"
                .to_string(),
        ));
        strict = true;
    }
    strict
}

/// The oldest policy (no timestamp counts as oldest, as Go's zero time
/// does), ties broken by name so the choice never depends on order.
fn oldest(candidates: Vec<&PeerAuthentication>) -> Option<&PeerAuthentication> {
    candidates.into_iter().min_by(|a, b| {
        (&a.metadata.creation_timestamp, &a.metadata.name)
            .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
    })
}

/// The static STRICT policy, sent whenever any PeerAuthentication exists.
pub(crate) fn static_strict(index: &Index, config: &MeshConfig) -> Output<sec::Authorization> {
    let name = policy_resource(&config.root_namespace, STATIC_STRICT_POLICY_NAME);
    let any = index.peer_authentications(None).next().is_some();
    let resource = any.then(|| sec::Authorization {
        name: STATIC_STRICT_POLICY_NAME.to_string(),
        namespace: config.root_namespace.clone(),
        scope: Scope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        groups: vec![Group {
            rules: vec![Rules {
                matches: vec![Match {
                    not_principals: vec![StringMatch {
                        match_type: Some(MatchType::Presence(())),
                    }],
                    ..Default::default()
                }],
            }],
        }],
        dry_run: false,
    });
    Output {
        name,
        resource,
        diagnostics: Vec::new(),
    }
}

//! One `AuthorizationPolicy`'s rules to the waypoint's form, fail-closed.
//!
//! The waypoint evaluates principals, namespaces and IP blocks of the
//! source; hosts, ports, methods and paths of the operation; and `when`
//! on request headers, `source.namespace` and `source.principal`. Anything
//! else (`requestPrincipals`, `remoteIpBlocks`, JWT claims, path
//! templates), and any value that does not parse, cannot be evaluated.
//! Such a field is dropped from its rule, which makes the rule match
//! more, and then:
//!
//! - in an ALLOW or AUDIT policy the whole rule is dropped, since a rule
//!   that matches more would allow (or report) more than written;
//! - in a DENY policy the rule stays without the field, so it denies more,
//!   never less.
//!
//! CUSTOM policies delegate to an external authorizer, which the waypoint
//! does not have: they become DENY policies over the same rules, so that
//! the requests they would have sent for checking are refused.
//! `serviceAccounts` are principals by another name (`sa` in the policy's
//! namespace, or `ns/sa`), and are sent as principals.

use std::collections::BTreeSet;
use std::net::IpAddr;

use proto::waypoint::authorization_policy::{self as pb_policy, Action};
use proto::waypoint::{self as pb};

use crate::model::{AuthorizationPolicy, Condition, Operation, PolicyAction, Rule, Source};
use crate::translate::notes::Notes;
use crate::translate::{MeshConfig, Severity};

/// The annotation that makes a policy report without enforcing.
const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// What could not be carried over from one rule.
#[derive(Default)]
struct Problems {
    /// Fields the waypoint cannot evaluate, by their YAML names.
    unsupported: BTreeSet<String>,
    /// Values that do not parse, as `field: value`.
    invalid: BTreeSet<String>,
}

pub(super) fn convert_policy(
    policy: &AuthorizationPolicy,
    namespace: &str,
    name: &str,
    config: &MeshConfig,
    notes: &mut Notes<'_>,
) -> pb::AuthorizationPolicy {
    let spec = &policy.spec;
    let action = match spec.action {
        PolicyAction::Allow => Action::Allow,
        PolicyAction::Deny => Action::Deny,
        PolicyAction::Audit => Action::Audit,
        PolicyAction::Custom => {
            let provider = spec.provider.as_ref().map_or("", |p| p.name.as_str());
            notes.push(
                Severity::Warning,
                format!(
                    "CUSTOM policies (provider {provider:?}) need an external authorizer, which \
                     the waypoint does not have: the requests its rules match are denied instead"
                ),
            );
            Action::Deny
        }
    };
    let dry_run = policy
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DRY_RUN_ANNOTATION))
        .is_some_and(|value| value.eq_ignore_ascii_case("true"));

    let mut rules = Vec::new();
    let mut dropped = 0;
    let mut problems = Problems::default();
    for rule in &spec.rules {
        let mut found = Problems::default();
        let converted = convert_rule(rule, namespace, config, &mut found);
        let lossy = !found.unsupported.is_empty() || !found.invalid.is_empty();
        problems.unsupported.extend(found.unsupported);
        problems.invalid.extend(found.invalid);
        if lossy && action != Action::Deny {
            dropped += 1;
            continue;
        }
        rules.push(converted);
    }
    report(&problems, action, dropped, notes);
    pb::AuthorizationPolicy {
        namespace: namespace.to_string(),
        name: name.to_string(),
        action: action as i32,
        dry_run,
        rules,
    }
}

fn report(problems: &Problems, action: Action, dropped: usize, notes: &mut Notes<'_>) {
    if problems.unsupported.is_empty() && problems.invalid.is_empty() {
        return;
    }
    let mut what = Vec::new();
    if !problems.unsupported.is_empty() {
        let fields: Vec<&str> = problems.unsupported.iter().map(String::as_str).collect();
        what.push(format!(
            "the waypoint cannot evaluate {}",
            fields.join(", ")
        ));
    }
    if !problems.invalid.is_empty() {
        let values: Vec<&str> = problems.invalid.iter().map(String::as_str).collect();
        what.push(format!("invalid values {}", values.join(", ")));
    }
    let consequence = if action == Action::Deny {
        "the rules are enforced without them and deny more".to_string()
    } else {
        format!("{dropped} rule(s) using them are dropped and match nothing")
    };
    notes.push(
        Severity::Warning,
        format!("{}; {consequence}", what.join("; ")),
    );
}

fn convert_rule(
    rule: &Rule,
    namespace: &str,
    config: &MeshConfig,
    problems: &mut Problems,
) -> pb_policy::Rule {
    pb_policy::Rule {
        from: rule
            .from
            .iter()
            .filter_map(|from| convert_source(&from.source, namespace, config, problems))
            .collect(),
        to: rule
            .to
            .iter()
            .filter_map(|to| convert_operation(&to.operation, problems))
            .collect(),
        when: rule
            .when
            .iter()
            .filter_map(|condition| convert_condition(condition, problems))
            .collect(),
    }
}

/// `None` when nothing the waypoint can check is left: an empty source
/// would be rejected, and leaving it out makes the rule match more.
fn convert_source(
    source: &Source,
    namespace: &str,
    config: &MeshConfig,
    problems: &mut Problems,
) -> Option<pb_policy::Source> {
    for (field, values) in [
        ("from.source.requestPrincipals", &source.request_principals),
        (
            "from.source.notRequestPrincipals",
            &source.not_request_principals,
        ),
        ("from.source.remoteIpBlocks", &source.remote_ip_blocks),
        (
            "from.source.notRemoteIpBlocks",
            &source.not_remote_ip_blocks,
        ),
    ] {
        if !values.is_empty() {
            problems.unsupported.insert(field.to_string());
        }
    }
    let principals = |field, values: &[String], accounts: &[String], problems: &mut Problems| {
        let mut all = strings(field, values, problems);
        all.extend(service_accounts(
            field, accounts, namespace, config, problems,
        ));
        all
    };
    let out = pb_policy::Source {
        principals: principals(
            "from.source.principals",
            &source.principals,
            &source.service_accounts,
            problems,
        ),
        not_principals: principals(
            "from.source.notPrincipals",
            &source.not_principals,
            &source.not_service_accounts,
            problems,
        ),
        namespaces: strings("from.source.namespaces", &source.namespaces, problems),
        not_namespaces: strings(
            "from.source.notNamespaces",
            &source.not_namespaces,
            problems,
        ),
        ip_blocks: ip_blocks("from.source.ipBlocks", &source.ip_blocks, problems),
        not_ip_blocks: ip_blocks("from.source.notIpBlocks", &source.not_ip_blocks, problems),
    };
    let empty = out.principals.is_empty()
        && out.not_principals.is_empty()
        && out.namespaces.is_empty()
        && out.not_namespaces.is_empty()
        && out.ip_blocks.is_empty()
        && out.not_ip_blocks.is_empty();
    (!empty).then_some(out)
}

fn convert_operation(
    operation: &Operation,
    problems: &mut Problems,
) -> Option<pb_policy::Operation> {
    let out = pb_policy::Operation {
        hosts: strings("to.operation.hosts", &operation.hosts, problems),
        not_hosts: strings("to.operation.notHosts", &operation.not_hosts, problems),
        ports: ports("to.operation.ports", &operation.ports, problems),
        not_ports: ports("to.operation.notPorts", &operation.not_ports, problems),
        methods: strings("to.operation.methods", &operation.methods, problems),
        not_methods: strings("to.operation.notMethods", &operation.not_methods, problems),
        paths: paths("to.operation.paths", &operation.paths, problems),
        not_paths: paths("to.operation.notPaths", &operation.not_paths, problems),
    };
    let empty = out.hosts.is_empty()
        && out.not_hosts.is_empty()
        && out.ports.is_empty()
        && out.not_ports.is_empty()
        && out.methods.is_empty()
        && out.not_methods.is_empty()
        && out.paths.is_empty()
        && out.not_paths.is_empty();
    (!empty).then_some(out)
}

fn convert_condition(
    condition: &Condition,
    problems: &mut Problems,
) -> Option<pb_policy::Condition> {
    let key = condition.key.as_str();
    let supported = key == "source.namespace"
        || key == "source.principal"
        || key
            .strip_prefix("request.headers[")
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|name| !name.is_empty());
    if !supported {
        problems.unsupported.insert(format!("when key {key:?}"));
        return None;
    }
    let field = format!("when[{key}]");
    let values = strings(&field, &condition.values, problems);
    let not_values = strings(&field, &condition.not_values, problems);
    if values.is_empty() && not_values.is_empty() {
        problems.invalid.insert(format!("{field}: no values"));
        return None;
    }
    Some(pb_policy::Condition {
        key: key.to_string(),
        values,
        not_values,
    })
}

/// All of `values`, or none of them (the field is then not checked) when
/// one is empty: dropping only the bad value would narrow the field.
fn strings(field: &str, values: &[String], problems: &mut Problems) -> Vec<String> {
    if values.iter().any(String::is_empty) {
        problems.invalid.insert(format!("{field}: \"\""));
        return Vec::new();
    }
    values.to_vec()
}

fn service_accounts(
    field: &str,
    accounts: &[String],
    namespace: &str,
    config: &MeshConfig,
    problems: &mut Problems,
) -> Vec<String> {
    let mut out = Vec::new();
    for account in accounts {
        let (ns, sa) = account.split_once('/').unwrap_or((namespace, account));
        if ns.is_empty() || sa.is_empty() || sa.contains('/') {
            problems
                .invalid
                .insert(format!("{field} serviceAccounts: {account:?}"));
            return Vec::new();
        }
        out.push(format!("{}/ns/{ns}/sa/{sa}", config.trust_domain));
    }
    out
}

fn ports(field: &str, values: &[String], problems: &mut Problems) -> Vec<u32> {
    let mut out = Vec::new();
    for value in values {
        match value.parse::<u16>() {
            Ok(port) if port > 0 => out.push(u32::from(port)),
            _ => {
                problems.invalid.insert(format!("{field}: {value:?}"));
                return Vec::new();
            }
        }
    }
    out
}

fn paths(field: &str, values: &[String], problems: &mut Problems) -> Vec<String> {
    if values.iter().any(|path| path.contains('{')) {
        problems
            .unsupported
            .insert(format!("path templates in {field}"));
        return Vec::new();
    }
    if let Some(bad) = values
        .iter()
        .find(|path| !(path.starts_with('/') || path.starts_with('*')))
    {
        problems.invalid.insert(format!("{field}: {bad:?}"));
        return Vec::new();
    }
    values.to_vec()
}

fn ip_blocks(field: &str, values: &[String], problems: &mut Problems) -> Vec<String> {
    for value in values {
        let (ip, prefix) = value.split_once('/').unwrap_or((value, ""));
        let valid = match ip.parse::<IpAddr>() {
            Ok(ip) if prefix.is_empty() => ip.is_ipv4() || ip.is_ipv6(),
            Ok(ip) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                prefix.parse::<u8>().is_ok_and(|p| p <= max)
            }
            Err(_) => false,
        };
        if !valid {
            problems.invalid.insert(format!("{field}: {value:?}"));
            return Vec::new();
        }
    }
    values.to_vec()
}

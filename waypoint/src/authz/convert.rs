//! The edge between pushed config and L7 authorization: a
//! `WaypointAuthorization` resource (`proto::waypoint`, type URL
//! [`proto::WAYPOINT_AUTHORIZATION_TYPE_URL`]) becomes
//! [`ServicePolicies`].
//!
//! Everything a string or a number can get wrong is checked here, once,
//! so that matching cannot fail: actions (CUSTOM is refused), `when` keys,
//! header names, addresses, ports and paths, and Istio's own validation
//! (no empty value, no empty `source` or `operation`, no `when` without
//! values). Strictness here is a safety property: a value silently dropped
//! or never matching would turn a DENY policy into no policy. A resource
//! is all-or-nothing: its first problem rejects it, with an error that
//! says where (policy, rule, and the way down to the field), so the xDS
//! client can NACK it and keep serving the policies it has.

use crate::located::Located;
use std::net::IpAddr;

use http::HeaderName;
use ipnet::IpNet;
use proto::waypoint as pb;
use proto::waypoint::authorization_policy as pb_policy;

use super::policy::{
    Action, Condition, ConditionKey, Operation, Policy, PolicyName, Rule, ServicePolicies, Source,
    StringMatch,
};
use crate::route::is_precise_hostname;

/// A `WaypointAuthorization` resource that cannot become
/// [`ServicePolicies`], and where: `AuthorizationPolicy shop/admin rule 1
/// from 0 source.ip_blocks 2: ip block `10.0.0/8` is neither an address
/// nor a CIDR block`. Positions count from 0, as in the resource's lists.
/// The location is empty for a field of the resource itself (its
/// hostname).
pub type ConvertError = Located<Problem>;

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error(
        "hostname `{0}` is not a valid host name: write a lowercase DNS name (RFC 1123) without \
         a port"
    )]
    InvalidHostname(String),
    #[error("action {0} is not one of ALLOW (0), DENY (1), AUDIT (2)")]
    UnknownAction(i32),
    #[error(
        "action CUSTOM (external authorization) is not supported by the waypoint: use ALLOW, \
         DENY or AUDIT"
    )]
    CustomAction,
    #[error("`{0}` sets no field: set at least one, or remove the entry")]
    EmptyItem(&'static str),
    #[error("the value is empty, which matches nothing: remove it, or write `*` for any value")]
    EmptyValue,
    #[error("condition `{0}` sets neither values nor not_values")]
    EmptyCondition(String),
    #[error(
        "key `{0}` is not one of `request.headers[<name>]`, `source.namespace`, \
         `source.principal`"
    )]
    UnknownKey(String),
    #[error("header name `{0}` is not a valid HTTP header name")]
    InvalidHeaderName(String),
    #[error("ip block `{0}` is neither an address (`10.0.0.1`) nor a CIDR block (`10.0.0.0/8`)")]
    InvalidIpBlock(String),
    #[error("port {0} is not from 1 to 65535")]
    InvalidPort(u32),
    #[error("path `{0}` starts with neither `/` nor `*`, so it would never match a request's path")]
    RelativePath(String),
    #[error("path `{0}` is a path template (`{{*}}`, `{{**}}`), which is not supported")]
    PathTemplate(String),
}

// === impl ServicePolicies ===

impl TryFrom<pb::WaypointAuthorization> for ServicePolicies {
    type Error = ConvertError;

    fn try_from(resource: pb::WaypointAuthorization) -> Result<Self, Self::Error> {
        let pb::WaypointAuthorization { hostname, policies } = resource;
        if hostname.is_empty() {
            return Err(Problem::Missing("the service hostname").into());
        }
        if !is_precise_hostname(&hostname) {
            return Err(Problem::InvalidHostname(hostname).into());
        }
        let policies = policies
            .into_iter()
            .map(Policy::try_from)
            .collect::<Result<_, _>>()?;
        Ok(ServicePolicies {
            hostname: hostname.into(),
            policies,
        })
    }
}

// === impl Policy ===

impl TryFrom<pb::AuthorizationPolicy> for Policy {
    type Error = ConvertError;

    fn try_from(policy: pb::AuthorizationPolicy) -> Result<Self, Self::Error> {
        let pb::AuthorizationPolicy {
            namespace,
            name,
            action,
            dry_run,
            rules,
        } = policy;
        let at_policy =
            |e: ConvertError| e.at(format_args!("AuthorizationPolicy {namespace}/{name}"));
        if namespace.is_empty() {
            return Err(at_policy(Problem::Missing("the policy namespace").into()));
        }
        if name.is_empty() {
            return Err(at_policy(Problem::Missing("the policy name").into()));
        }
        let action = match pb_policy::Action::try_from(action) {
            Ok(pb_policy::Action::Allow) => Action::Allow,
            Ok(pb_policy::Action::Deny) => Action::Deny,
            Ok(pb_policy::Action::Audit) => Action::Audit,
            Ok(pb_policy::Action::Custom) => return Err(at_policy(Problem::CustomAction.into())),
            Err(_) => return Err(at_policy(Problem::UnknownAction(action).into())),
        };
        let rules = each(rules, "rule", rule).map_err(at_policy)?;
        Ok(Policy {
            name: PolicyName {
                namespace: namespace.into(),
                name: name.into(),
            },
            action,
            dry_run,
            rules,
        })
    }
}

fn rule(rule: pb_policy::Rule) -> Result<Rule, ConvertError> {
    Ok(Rule {
        from: each(rule.from, "from", source)?,
        to: each(rule.to, "to", operation)?,
        when: each(rule.when, "when", condition)?,
    })
}

fn source(s: pb_policy::Source) -> Result<Source, ConvertError> {
    let source = Source {
        principals: strings(s.principals, "source.principals")?,
        not_principals: strings(s.not_principals, "source.not_principals")?,
        namespaces: strings(s.namespaces, "source.namespaces")?,
        not_namespaces: strings(s.not_namespaces, "source.not_namespaces")?,
        ip_blocks: each(s.ip_blocks, "source.ip_blocks", ip_block)?,
        not_ip_blocks: each(s.not_ip_blocks, "source.not_ip_blocks", ip_block)?,
    };
    if source == Source::default() {
        return Err(Problem::EmptyItem("source").into());
    }
    Ok(source)
}

fn operation(o: pb_policy::Operation) -> Result<Operation, ConvertError> {
    let operation = Operation {
        hosts: strings(o.hosts, "operation.hosts")?,
        not_hosts: strings(o.not_hosts, "operation.not_hosts")?,
        ports: each(o.ports, "operation.ports", port)?,
        not_ports: each(o.not_ports, "operation.not_ports", port)?,
        methods: strings(o.methods, "operation.methods")?,
        not_methods: strings(o.not_methods, "operation.not_methods")?,
        paths: each(o.paths, "operation.paths", path)?,
        not_paths: each(o.not_paths, "operation.not_paths", path)?,
    };
    if operation == Operation::default() {
        return Err(Problem::EmptyItem("operation").into());
    }
    Ok(operation)
}

fn condition(c: pb_policy::Condition) -> Result<Condition, ConvertError> {
    let key = condition_key(&c.key).map_err(|problem| ConvertError::from(problem).at("key"))?;
    if c.values.is_empty() && c.not_values.is_empty() {
        return Err(Problem::EmptyCondition(c.key).into());
    }
    Ok(Condition {
        key,
        values: strings(c.values, "values")?,
        not_values: strings(c.not_values, "not_values")?,
    })
}

fn condition_key(key: &str) -> Result<ConditionKey, Problem> {
    match key {
        "source.namespace" => Ok(ConditionKey::SourceNamespace),
        "source.principal" => Ok(ConditionKey::SourcePrincipal),
        _ => {
            let name = key
                .strip_prefix("request.headers[")
                .and_then(|rest| rest.strip_suffix(']'))
                .ok_or_else(|| Problem::UnknownKey(key.to_owned()))?;
            HeaderName::from_bytes(name.as_bytes())
                .map(ConditionKey::RequestHeader)
                .map_err(|_| Problem::InvalidHeaderName(name.to_owned()))
        }
    }
}

// === scalars ===

fn strings(values: Vec<String>, field: &str) -> Result<Vec<StringMatch>, ConvertError> {
    each(values, field, string_match)
}

fn string_match(value: String) -> Result<StringMatch, Problem> {
    if value.is_empty() {
        return Err(Problem::EmptyValue);
    }
    Ok(StringMatch::parse(&value))
}

fn path(path: String) -> Result<StringMatch, Problem> {
    let matcher = string_match(path.clone())?;
    if path.contains('{') {
        return Err(Problem::PathTemplate(path));
    }
    match &matcher {
        StringMatch::Exact(p) | StringMatch::Prefix(p) if !p.starts_with('/') => {
            Err(Problem::RelativePath(path))
        }
        _ => Ok(matcher),
    }
}

fn ip_block(block: String) -> Result<IpNet, Problem> {
    let net = if block.contains('/') {
        block.parse::<IpNet>().ok().map(|net| net.trunc())
    } else {
        block.parse::<IpAddr>().ok().map(IpNet::from)
    };
    net.ok_or(Problem::InvalidIpBlock(block))
}

fn port(port: u32) -> Result<u16, Problem> {
    u16::try_from(port)
        .ok()
        .filter(|port| *port != 0)
        .ok_or(Problem::InvalidPort(port))
}

/// Converts every item, naming the field and the position of the first
/// that fails: `source.principals 1`.
fn each<P, T, E>(
    items: Vec<P>,
    field: &str,
    convert: impl Fn(P) -> Result<T, E>,
) -> Result<Vec<T>, ConvertError>
where
    E: Into<ConvertError>,
{
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            convert(item).map_err(|e| e.into().at(format_args!("{field} {index}")))
        })
        .collect()
}

#[cfg(test)]
mod tests;

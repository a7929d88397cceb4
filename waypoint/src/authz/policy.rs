//! L7 `AuthorizationPolicy`s as plain data, and whether one matches a
//! request.
//!
//! Matching follows Istio's semantics: a policy matches when **any** of
//! its rules does; a rule when its `from`, `to` and `when` all do (an
//! empty list is not checked, so the empty rule `{}` matches every
//! request); `from` and `to` when **any** of their items does; an item
//! when **every** field it sets agrees, each positive list with one hit
//! and each `not` list with none; `when` when **every** condition does. A
//! policy without rules matches nothing.
//!
//! A value the request does not have (no peer identity on a plaintext
//! connection, an absent header) matches no entry: so it fails a positive
//! list and passes a `not` list, as in Envoy's RBAC filter.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// A policy's `<namespace>/<name>`: what logs and [`Decision`]s name.
///
/// [`Decision`]: super::Decision
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyName {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    /// Matches are reported for the access log; never decides.
    Audit,
}

/// One `AuthorizationPolicy` that applies to the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: PolicyName,
    pub action: Action,
    /// `istio.io/dry-run`: evaluated and reported, never enforced. Has no
    /// effect on an AUDIT policy, which is never enforced anyway.
    pub dry_run: bool,
    /// Any rule matching makes the policy match; none matches nothing.
    pub rules: Vec<Rule>,
}

/// The policies of one service, as pushed in a `WaypointAuthorization`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePolicies {
    /// The service's fully qualified hostname.
    pub hostname: Arc<str>,
    pub policies: Vec<Policy>,
}

/// One entry of `spec.rules`; empty lists are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    /// `from[i].source`: any one must match.
    pub from: Vec<Source>,
    /// `to[i].operation`: any one must match.
    pub to: Vec<Operation>,
    /// Every condition must match.
    pub when: Vec<Condition>,
}

/// `from.source`; fields left empty are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// Against the peer's principal, `cluster.local/ns/shop/sa/web`.
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    /// Against the peer's namespace.
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub ip_blocks: Vec<IpNet>,
    pub not_ip_blocks: Vec<IpNet>,
}

/// `to.operation`; fields left empty are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operation {
    /// Case-insensitive, against the host without its port.
    pub hosts: Vec<StringMatch>,
    pub not_hosts: Vec<StringMatch>,
    pub ports: Vec<u16>,
    pub not_ports: Vec<u16>,
    /// Case-sensitive.
    pub methods: Vec<StringMatch>,
    pub not_methods: Vec<StringMatch>,
    /// Against the normalized path without the query.
    pub paths: Vec<StringMatch>,
    pub not_paths: Vec<StringMatch>,
}

/// One entry of `when`: some entry of `values` (if any) matches the key's
/// value, and no entry of `not_values` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub key: ConditionKey,
    pub values: Vec<StringMatch>,
    pub not_values: Vec<StringMatch>,
}

/// The `when` keys the waypoint knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConditionKey {
    /// `request.headers[<name>]`. Several values of one header are matched
    /// joined with `,`, as Envoy does.
    RequestHeader(HeaderName),
    /// `source.namespace`.
    SourceNamespace,
    /// `source.principal`.
    SourcePrincipal,
}

/// Istio's string forms: `abc` exact, `abc*` prefix, `*abc` suffix, `*`
/// any value that is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    Exact(Arc<str>),
    Prefix(Arc<str>),
    Suffix(Arc<str>),
    Presence,
}

/// What L7 policy sees of a request, borrowed from it and from the HBONE
/// connection it came on, so that evaluating copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct L7Request<'a> {
    /// The peer's principal from its client certificate, without the
    /// scheme: `cluster.local/ns/shop/sa/web`. `None` without mutual TLS.
    pub source_principal: Option<&'a str>,
    /// The namespace of that identity.
    pub source_namespace: Option<&'a str>,
    pub source_ip: IpAddr,
    /// `:authority` or `Host`, without the port.
    pub host: &'a str,
    /// The destination (service) port.
    pub port: u16,
    pub method: &'a str,
    /// The normalized path, without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

// === impl PolicyName ===

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

// === impl Policy ===

impl Policy {
    /// Whether the policy matches `request` (see the module doc).
    pub fn matches(&self, request: &L7Request<'_>) -> bool {
        self.rules.iter().any(|rule| rule.matches(request))
    }
}

// === impl Rule ===

impl Rule {
    pub fn matches(&self, request: &L7Request<'_>) -> bool {
        any_or_unset(&self.from, |source| source.matches(request))
            && any_or_unset(&self.to, |operation| operation.matches(request))
            && self.when.iter().all(|condition| condition.matches(request))
    }
}

// === impl Source ===

impl Source {
    pub fn matches(&self, request: &L7Request<'_>) -> bool {
        let principal = |m: &StringMatch| m.matches_optional(request.source_principal);
        let namespace = |m: &StringMatch| m.matches_optional(request.source_namespace);
        let ip = |net: &IpNet| net.contains(&request.source_ip);
        field(&self.principals, &self.not_principals, principal)
            && field(&self.namespaces, &self.not_namespaces, namespace)
            && field(&self.ip_blocks, &self.not_ip_blocks, ip)
    }
}

// === impl Operation ===

impl Operation {
    pub fn matches(&self, request: &L7Request<'_>) -> bool {
        let host = |m: &StringMatch| m.matches_ignore_ascii_case(request.host);
        let port = |p: &u16| *p == request.port;
        let method = |m: &StringMatch| m.matches(request.method);
        let path = |m: &StringMatch| m.matches(request.path);
        field(&self.hosts, &self.not_hosts, host)
            && field(&self.ports, &self.not_ports, port)
            && field(&self.methods, &self.not_methods, method)
            && field(&self.paths, &self.not_paths, path)
    }
}

// === impl Condition ===

impl Condition {
    pub fn matches(&self, request: &L7Request<'_>) -> bool {
        match &self.key {
            ConditionKey::RequestHeader(name) => {
                let value = header_value(request.headers, name);
                let hit = |m: &StringMatch| m.matches_header(value.as_deref());
                field(&self.values, &self.not_values, hit)
            }
            ConditionKey::SourceNamespace => {
                let hit = |m: &StringMatch| m.matches_optional(request.source_namespace);
                field(&self.values, &self.not_values, hit)
            }
            ConditionKey::SourcePrincipal => {
                let hit = |m: &StringMatch| m.matches_optional(request.source_principal);
                field(&self.values, &self.not_values, hit)
            }
        }
    }
}

/// Every value of header `name` joined with `,`; borrowed when there is
/// only one, as almost always.
fn header_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, [u8]>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let Some(second) = values.next() else {
        return Some(Cow::Borrowed(first.as_bytes()));
    };
    let mut joined = first.as_bytes().to_vec();
    for value in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    Some(Cow::Owned(joined))
}

// === impl StringMatch ===

impl StringMatch {
    /// Parses Istio's form: `*` alone is presence, a leading `*` a suffix,
    /// a trailing `*` a prefix, anything else (a `*` inside included) is
    /// exact, as Istio's `StringMatcherWithPrefix` reads it.
    pub fn parse(value: &str) -> Self {
        if value == "*" {
            StringMatch::Presence
        } else if let Some(suffix) = value.strip_prefix('*') {
            StringMatch::Suffix(suffix.into())
        } else if let Some(prefix) = value.strip_suffix('*') {
            StringMatch::Prefix(prefix.into())
        } else {
            StringMatch::Exact(value.into())
        }
    }

    /// Against a value that is always there; presence means non-empty.
    pub fn matches(&self, value: &str) -> bool {
        self.matches_bytes(value.as_bytes())
    }

    /// Against a value the request may lack, which nothing matches;
    /// presence means it is there and non-empty.
    pub fn matches_optional(&self, value: Option<&str>) -> bool {
        value.is_some_and(|value| self.matches(value))
    }

    /// Against a header: presence means the header is there, even empty
    /// (Envoy's `present_match`).
    fn matches_header(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (_, None) => false,
            (StringMatch::Presence, Some(_)) => true,
            (_, Some(value)) => self.matches_bytes(value),
        }
    }

    fn matches_bytes(&self, value: &[u8]) -> bool {
        match self {
            StringMatch::Exact(s) => value == s.as_bytes(),
            StringMatch::Prefix(s) => value.starts_with(s.as_bytes()),
            StringMatch::Suffix(s) => value.ends_with(s.as_bytes()),
            StringMatch::Presence => !value.is_empty(),
        }
    }

    /// As [`Self::matches`], ignoring ASCII case: for hosts.
    pub fn matches_ignore_ascii_case(&self, value: &str) -> bool {
        let value = value.as_bytes();
        match self {
            StringMatch::Exact(s) => value.eq_ignore_ascii_case(s.as_bytes()),
            StringMatch::Prefix(s) => value
                .get(..s.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(s.as_bytes())),
            StringMatch::Suffix(s) => value
                .len()
                .checked_sub(s.len())
                .is_some_and(|at| value[at..].eq_ignore_ascii_case(s.as_bytes())),
            StringMatch::Presence => !value.is_empty(),
        }
    }
}

impl fmt::Display for StringMatch {
    /// Istio's form, as written in the policy.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringMatch::Exact(s) => write!(f, "{s}"),
            StringMatch::Prefix(s) => write!(f, "{s}*"),
            StringMatch::Suffix(s) => write!(f, "*{s}"),
            StringMatch::Presence => write!(f, "*"),
        }
    }
}

/// A list of `from` or `to` items: unset, or any item matches.
fn any_or_unset<T>(items: &[T], matches: impl Fn(&T) -> bool) -> bool {
    items.is_empty() || items.iter().any(matches)
}

/// One field and its `not` field: some positive entry hits (or none is
/// set) and no negative entry hits.
fn field<T>(positive: &[T], negative: &[T], hit: impl Fn(&T) -> bool) -> bool {
    any_or_unset(positive, &hit) && !negative.iter().any(hit)
}

#[cfg(test)]
mod tests;

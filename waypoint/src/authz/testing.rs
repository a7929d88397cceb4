//! Builders for policies and requests, shared by the `authz` unit tests.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{
    Action, Condition, ConditionKey, L7Request, Operation, Policy, PolicyName, Rule, Source,
    StringMatch,
};

/// Istio's string forms, parsed.
pub(super) fn strings(values: &[&str]) -> Vec<StringMatch> {
    values.iter().map(|v| StringMatch::parse(v)).collect()
}

pub(super) fn policy(name: &str, action: Action, rules: Vec<Rule>) -> Policy {
    Policy {
        name: PolicyName {
            namespace: "shop".into(),
            name: name.into(),
        },
        action,
        dry_run: false,
        rules,
    }
}

pub(super) fn allow(name: &str, rules: Vec<Rule>) -> Policy {
    policy(name, Action::Allow, rules)
}

pub(super) fn deny(name: &str, rules: Vec<Rule>) -> Policy {
    policy(name, Action::Deny, rules)
}

pub(super) fn audit(name: &str, rules: Vec<Rule>) -> Policy {
    policy(name, Action::Audit, rules)
}

pub(super) fn dry_run(mut policy: Policy) -> Policy {
    policy.dry_run = true;
    policy
}

pub(super) fn name(name: &str) -> PolicyName {
    PolicyName {
        namespace: "shop".into(),
        name: name.into(),
    }
}

/// A rule with only `from`.
pub(super) fn from(sources: Vec<Source>) -> Rule {
    Rule {
        from: sources,
        ..Rule::default()
    }
}

/// A rule with only `to`.
pub(super) fn to(operations: Vec<Operation>) -> Rule {
    Rule {
        to: operations,
        ..Rule::default()
    }
}

/// A rule with only `when`.
pub(super) fn when(conditions: Vec<Condition>) -> Rule {
    Rule {
        when: conditions,
        ..Rule::default()
    }
}

pub(super) fn paths(values: &[&str]) -> Operation {
    Operation {
        paths: strings(values),
        ..Operation::default()
    }
}

pub(super) fn methods(values: &[&str]) -> Operation {
    Operation {
        methods: strings(values),
        ..Operation::default()
    }
}

pub(super) fn principals(values: &[&str]) -> Source {
    Source {
        principals: strings(values),
        ..Source::default()
    }
}

pub(super) fn header_condition(name: &str, values: &[&str], not_values: &[&str]) -> Condition {
    Condition {
        key: ConditionKey::RequestHeader(HeaderName::try_from(name).unwrap()),
        values: strings(values),
        not_values: strings(not_values),
    }
}

/// An owned request, for tests to borrow an [`L7Request`] from. By
/// default: `GET /public` to `catalog.shop.svc.cluster.local:8080` from
/// `cluster.local/ns/shop/sa/web` at 10.0.0.5.
#[derive(Debug, Clone)]
pub(super) struct Call {
    principal: Option<String>,
    namespace: Option<String>,
    ip: IpAddr,
    host: String,
    port: u16,
    method: String,
    path: String,
    headers: HeaderMap,
}

pub(super) fn call() -> Call {
    Call {
        principal: None,
        namespace: None,
        ip: "10.0.0.5".parse().unwrap(),
        host: "catalog.shop.svc.cluster.local".into(),
        port: 8080,
        method: "GET".into(),
        path: "/public".into(),
        headers: HeaderMap::new(),
    }
    .by("cluster.local/ns/shop/sa/web")
}

impl Call {
    /// From the workload with this principal (`<td>/ns/<ns>/sa/<sa>`).
    pub(super) fn by(mut self, principal: &str) -> Self {
        let namespace = principal.split('/').nth(2).unwrap();
        self.namespace = Some(namespace.into());
        self.principal = Some(principal.into());
        self
    }

    /// Without mutual TLS: no identity.
    pub(super) fn plaintext(mut self) -> Self {
        self.principal = None;
        self.namespace = None;
        self
    }

    pub(super) fn ip(mut self, ip: &str) -> Self {
        self.ip = ip.parse().unwrap();
        self
    }

    pub(super) fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }

    pub(super) fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub(super) fn method(mut self, method: &str) -> Self {
        self.method = method.into();
        self
    }

    pub(super) fn path(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }

    /// Appends a value (a second call with the same name adds a value).
    pub(super) fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.append(
            HeaderName::try_from(name).unwrap(),
            HeaderValue::try_from(value).unwrap(),
        );
        self
    }

    pub(super) fn request(&self) -> L7Request<'_> {
        L7Request {
            source_principal: self.principal.as_deref(),
            source_namespace: self.namespace.as_deref(),
            source_ip: self.ip,
            host: &self.host,
            port: self.port,
            method: &self.method,
            path: &self.path,
            headers: &self.headers,
        }
    }
}

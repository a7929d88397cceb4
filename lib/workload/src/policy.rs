//! L4 authorization policies, from Istio's `istio.security.Authorization`,
//! and whether one matches a connection.
//!
//! Matching follows Istio's semantics: a policy matches when **any** group
//! matches; a group when **all** its rules match; a rule when **any** of its
//! matches does; a match when every field it sets agrees (each positive list
//! needs one hit, each negative list none). A group with no rules matches; a
//! policy without groups, and a match that sets no field, match nothing.
//!
//! Conversion is strict where Istio's ztunnel is lenient: an address or port
//! that does not parse rejects the policy (the client NACKs and keeps the
//! previous version) instead of being dropped from its list, because a
//! dropped entry could turn "only from 10.0.0.0/8" into "from anywhere".

use std::net::IpAddr;
use std::sync::Arc;

use identity::Identity;
use ipnet::IpNet;
use proto::security as xds;

use super::{ConversionError, ip_from_bytes, workload::port};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scope {
    /// Every workload in the mesh (policies of the root namespace).
    Global,
    /// Every workload in the policy's namespace.
    Namespace,
    /// The workloads that list the policy in `authorization_policies`.
    WorkloadSelector,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum StringMatch {
    Exact(Arc<str>),
    Prefix(Arc<str>),
    Suffix(Arc<str>),
    /// Any non-empty value.
    Presence,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ServiceAccountMatch {
    pub namespace: Arc<str>,
    pub service_account: Arc<str>,
}

/// One conjunction of conditions; unset fields are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Match {
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub service_accounts: Vec<ServiceAccountMatch>,
    pub not_service_accounts: Vec<ServiceAccountMatch>,
    #[serde(serialize_with = "super::display_all")]
    pub source_ips: Vec<IpNet>,
    #[serde(serialize_with = "super::display_all")]
    pub not_source_ips: Vec<IpNet>,
    #[serde(serialize_with = "super::display_all")]
    pub destination_ips: Vec<IpNet>,
    #[serde(serialize_with = "super::display_all")]
    pub not_destination_ips: Vec<IpNet>,
    pub destination_ports: Vec<u16>,
    pub not_destination_ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Policy {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub scope: Scope,
    pub action: Action,
    /// Any group matching makes the policy match.
    pub groups: Vec<Vec<Vec<Match>>>,
    /// Evaluated and logged, never enforced.
    pub dry_run: bool,
}

/// What L4 policy sees of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub src_ip: IpAddr,
    /// The peer's proven identity; `None` for plaintext.
    pub src_identity: Option<Identity>,
    /// The identity as Istio writes principals, without the scheme:
    /// `cluster.local/ns/a/sa/b`.
    principal: Option<String>,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
}

// === impl Connection ===

impl Connection {
    pub fn new(
        src_ip: IpAddr,
        src_identity: Option<Identity>,
        dst_ip: IpAddr,
        dst_port: u16,
    ) -> Self {
        let principal = src_identity.as_ref().map(|id| {
            let id = id.to_string();
            match id.strip_prefix("spiffe://") {
                Some(rest) => rest.to_owned(),
                None => id,
            }
        });
        Connection {
            src_ip,
            src_identity,
            principal,
            dst_ip,
            dst_port,
        }
    }
}

// === impl Policy ===

impl Policy {
    /// `<ns>/<name>`: the xDS resource name and store key.
    pub fn key(&self) -> Arc<str> {
        format!("{}/{}", self.namespace, self.name).into()
    }

    /// Whether the policy matches `conn` (see the module doc for the rules).
    pub fn matches(&self, conn: &Connection) -> bool {
        self.groups.iter().any(|rules| {
            rules
                .iter()
                .all(|matches| matches.iter().any(|m| m.matches(conn)))
        })
    }
}

impl TryFrom<xds::Authorization> for Policy {
    type Error = ConversionError;

    fn try_from(a: xds::Authorization) -> Result<Self, Self::Error> {
        let key = format!("{}/{}", a.namespace, a.name);
        let what = |reason: String| ConversionError::new("authorization", &key, reason);
        let scope = match xds::Scope::try_from(a.scope) {
            Ok(xds::Scope::Global) => Scope::Global,
            Ok(xds::Scope::Namespace) => Scope::Namespace,
            Ok(xds::Scope::WorkloadSelector) => Scope::WorkloadSelector,
            Err(_) => return Err(what(format!("unknown scope {}", a.scope))),
        };
        let action = match xds::Action::try_from(a.action) {
            Ok(xds::Action::Allow) => Action::Allow,
            Ok(xds::Action::Deny) => Action::Deny,
            Err(_) => return Err(what(format!("unknown action {}", a.action))),
        };
        let groups = a
            .groups
            .iter()
            .map(|group| {
                group
                    .rules
                    .iter()
                    .map(|rule| rule.matches.iter().map(Match::try_from).collect())
                    .collect()
            })
            .collect::<Result<Vec<Vec<Vec<Match>>>, String>>()
            .map_err(what)?;
        Ok(Policy {
            name: a.name.into(),
            namespace: a.namespace.into(),
            scope,
            action,
            groups,
            dry_run: a.dry_run,
        })
    }
}

// === impl Match ===

impl Match {
    fn is_empty(&self) -> bool {
        *self == Match::default()
    }

    fn matches(&self, conn: &Connection) -> bool {
        if self.is_empty() {
            return false;
        }
        let namespace = conn.src_identity.as_ref().map(Identity::namespace);
        let principal = conn.principal.as_deref();
        either(&self.namespaces, &self.not_namespaces, |m| {
            namespace.is_some_and(|ns| m.matches(ns))
        }) && either(&self.principals, &self.not_principals, |m| {
            principal.is_some_and(|p| m.matches(p))
        }) && either(&self.service_accounts, &self.not_service_accounts, |m| {
            conn.src_identity.as_ref().is_some_and(|id| {
                id.namespace() == &*m.namespace && id.service_account() == &*m.service_account
            })
        }) && either(&self.source_ips, &self.not_source_ips, |net| {
            net.contains(&conn.src_ip)
        }) && either(&self.destination_ips, &self.not_destination_ips, |net| {
            net.contains(&conn.dst_ip)
        }) && either(&self.destination_ports, &self.not_destination_ports, |p| {
            *p == conn.dst_port
        })
    }
}

/// One field pair: some positive entry hits (or none is set) and no
/// negative entry hits.
fn either<T>(positive: &[T], negative: &[T], hit: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&hit)) && !negative.iter().any(&hit)
}

impl TryFrom<&xds::Match> for Match {
    type Error = String;

    fn try_from(m: &xds::Match) -> Result<Self, Self::Error> {
        Ok(Match {
            namespaces: strings(&m.namespaces)?,
            not_namespaces: strings(&m.not_namespaces)?,
            principals: strings(&m.principals)?,
            not_principals: strings(&m.not_principals)?,
            service_accounts: accounts(&m.service_accounts),
            not_service_accounts: accounts(&m.not_service_accounts),
            source_ips: nets(&m.source_ips)?,
            not_source_ips: nets(&m.not_source_ips)?,
            destination_ips: nets(&m.destination_ips)?,
            not_destination_ips: nets(&m.not_destination_ips)?,
            destination_ports: ports(&m.destination_ports)?,
            not_destination_ports: ports(&m.not_destination_ports)?,
        })
    }
}

// === impl StringMatch ===

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == &**s,
            StringMatch::Prefix(s) => value.starts_with(&**s),
            StringMatch::Suffix(s) => value.ends_with(&**s),
            StringMatch::Presence => !value.is_empty(),
        }
    }
}

fn strings(list: &[xds::StringMatch]) -> Result<Vec<StringMatch>, String> {
    use xds::string_match::MatchType;
    list.iter()
        .map(|m| match &m.match_type {
            Some(MatchType::Exact(s)) => Ok(StringMatch::Exact(s.as_str().into())),
            Some(MatchType::Prefix(s)) => Ok(StringMatch::Prefix(s.as_str().into())),
            Some(MatchType::Suffix(s)) => Ok(StringMatch::Suffix(s.as_str().into())),
            Some(MatchType::Presence(_)) => Ok(StringMatch::Presence),
            None => Err("a string match sets no match type".to_owned()),
        })
        .collect()
}

fn accounts(list: &[xds::ServiceAccountMatch]) -> Vec<ServiceAccountMatch> {
    list.iter()
        .map(|m| ServiceAccountMatch {
            namespace: m.namespace.as_str().into(),
            service_account: m.service_account.as_str().into(),
        })
        .collect()
}

fn nets(list: &[xds::Address]) -> Result<Vec<IpNet>, String> {
    list.iter()
        .map(|a| {
            let ip = ip_from_bytes(&a.address)?;
            let length =
                u8::try_from(a.length).map_err(|_| format!("prefix length {}", a.length))?;
            IpNet::new(ip, length)
                .map_err(|_| format!("prefix length {length} is too long for {ip}"))
        })
        .collect()
}

fn ports(list: &[u32]) -> Result<Vec<u16>, String> {
    list.iter().map(|p| port(*p)).collect()
}

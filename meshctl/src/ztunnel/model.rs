//! The JSON of ztunnel's admin API, as docs/ztunnel-admin.md defines it.
//!
//! The contract lets ztunnel add fields, so these types are lenient where
//! the doc allows change and exact where meshctl relies on a meaning:
//!
//! - every record keeps the fields it does not know in `extra`, so
//!   `-o json` and `-o yaml` print what ztunnel sent, not what this meshctl
//!   knew of;
//! - states (`captured`, `available`, `inbound`...) are enums because the
//!   summary counts them, with an `Other` variant for a state added later;
//! - `null` values are `Option`; a list (or a string that is `""` when
//!   unset) reads as empty when absent or `null`;
//! - timestamps stay RFC 3339 strings: they are printed as sent and only
//!   read as times where an age is shown ([`super::age`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Fields a newer ztunnel sends that this meshctl does not know yet.
pub type Extra = Map<String, Value>;

/// `GET /config_dump`: everything ztunnel holds, in one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigDump {
    pub node: String,
    pub control_plane: ControlPlane,
    /// The enrolled pods of this node.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub pods: Vec<Pod>,
    /// The whole mesh as pushed.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub workloads: Vec<Workload>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub services: Vec<Service>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub policies: Vec<Policy>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub certificates: Vec<Certificate>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub connections: Vec<Connection>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The delta xDS stream to the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlPlane {
    pub address: String,
    /// A stream is open now.
    pub connected: bool,
    /// When `connected` last changed.
    pub since: Option<String>,
    /// Every subscribed type arrived at least once; stays true while
    /// disconnected, since the held config keeps serving.
    pub synced: bool,
    /// `system_version_info` of the latest response.
    pub config_version: Option<String>,
    pub responses: u64,
    pub nacks: u64,
    pub last_error: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A local pod ztunnel serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub addresses: Vec<String>,
    /// `netns <path>` or `explicit`; ztunnel sends `null` when capture
    /// failed before it knew which.
    pub capture: Option<String>,
    pub state: PodState,
    /// Why capture failed (it is retried).
    pub error: Option<String>,
    pub since: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodState {
    Captured,
    Failed,
    /// A state added after this meshctl was built.
    #[serde(untagged)]
    Other(String),
}

/// A workload of the mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub addresses: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub network: String,
    /// `HBONE` or `NONE`.
    pub protocol: String,
    pub identity: Option<String>,
    pub waypoint: Option<GatewayAddress>,
    pub node: Option<String>,
    pub canonical_name: Option<String>,
    pub canonical_revision: Option<String>,
    pub workload_name: Option<String>,
    pub cluster_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub authorization_policies: Vec<String>,
    pub healthy: bool,
    /// Services it backs, by `<ns>/<hostname>`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub services: BTreeMap<String, Vec<PortMapping>>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A service port and the workload port it forwards to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortMapping {
    pub service_port: u16,
    /// 0: the same as the service port.
    pub target_port: u16,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where a waypoint is reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayAddress {
    pub destination: GatewayDestination,
    pub hbone_port: u16,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Serialized by hand, like [`StringMatch`], as a one-entry map.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum GatewayDestination {
    Hostname(NamespacedHostname),
    Address(NetworkAddress),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespacedHostname {
    pub namespace: String,
    pub hostname: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An IP on a network (`""` is the default network).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkAddress {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub network: String,
    pub ip: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A service of the mesh.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub vips: Vec<NetworkAddress>,
    /// `(service_port, target_port)`; target 0: each workload's own mapping
    /// decides.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub ports: Vec<(u16, u16)>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub subject_alt_names: Vec<String>,
    pub waypoint: Option<GatewayAddress>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An L4 authorization policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub name: String,
    pub namespace: String,
    /// `GLOBAL`, `NAMESPACE` or `WORKLOAD_SELECTOR`.
    pub scope: String,
    /// `ALLOW` or `DENY`.
    pub action: String,
    /// Any group matches when all its rules match; a rule matches when any
    /// of its matches does.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub groups: Vec<Vec<Vec<Match>>>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub dry_run: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One conjunction of conditions of a policy rule; empty lists are not
/// checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Match {
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub service_accounts: Vec<ServiceAccountMatch>,
    pub not_service_accounts: Vec<ServiceAccountMatch>,
    /// CIDRs.
    pub source_ips: Vec<String>,
    pub not_source_ips: Vec<String>,
    pub destination_ips: Vec<String>,
    pub not_destination_ips: Vec<String>,
    pub destination_ports: Vec<u16>,
    pub not_destination_ports: Vec<u16>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any non-empty value.
    Presence,
}

/// The contract does not spell out a service-account match; ztunnel sends
/// `{"namespace", "service_account"}` today, and anything else is kept as
/// sent rather than failing the whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServiceAccountMatch {
    Named {
        namespace: String,
        service_account: String,
    },
    Other(Value),
}

/// The certificate of one local identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub identity: String,
    pub state: CertState,
    pub error: Option<String>,
    /// `null` until a certificate was issued, like the two times.
    pub serial: Option<String>,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertState {
    /// No answer from the CA yet.
    Initializing,
    Available,
    /// The latest renewal failed and is retried; the certificate shown is
    /// still valid and served.
    Failed,
    /// Nothing valid to serve: connections of that identity fail closed.
    Expired,
    #[serde(untagged)]
    Other(String),
}

/// An open connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub id: u64,
    pub direction: Direction,
    /// `HBONE` or `TCP`.
    pub protocol: String,
    pub src_addr: String,
    pub src_identity: Option<String>,
    pub src_workload: Option<String>,
    /// Always set in the contract's example, but ztunnel may not know it
    /// yet while a connection is being set up.
    pub dst_addr: Option<String>,
    pub dst_workload: Option<String>,
    pub dst_identity: Option<String>,
    pub dst_service: Option<String>,
    pub started: String,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Arrived at a local pod.
    Inbound,
    /// Opened by a local pod.
    Outbound,
    #[serde(untagged)]
    Other(String),
}

// === impl PodState ===

impl fmt::Display for PodState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PodState::Captured => "captured",
            PodState::Failed => "failed",
            PodState::Other(state) => state,
        })
    }
}

// === impl CertState ===

impl fmt::Display for CertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertState::Initializing => "initializing",
            CertState::Available => "available",
            CertState::Failed => "failed",
            CertState::Expired => "expired",
            CertState::Other(state) => state,
        })
    }
}

// === impl Direction ===

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Other(direction) => direction,
        })
    }
}

// === impl GatewayAddress ===

impl fmt::Display for GatewayAddress {
    /// `waypoint.demo.svc.cluster.local:15008`, or the IP with its port.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.destination {
            GatewayDestination::Hostname(name) => {
                write!(f, "{}:{}", name.hostname, self.hbone_port)
            }
            GatewayDestination::Address(addr) if addr.ip.contains(':') => {
                write!(f, "[{}]:{}", addr.ip, self.hbone_port)
            }
            GatewayDestination::Address(addr) => write!(f, "{}:{}", addr.ip, self.hbone_port),
        }
    }
}

// === impl GatewayDestination ===

impl Serialize for GatewayDestination {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            GatewayDestination::Hostname(name) => single_entry(serializer, "Hostname", name),
            GatewayDestination::Address(addr) => single_entry(serializer, "Address", addr),
        }
    }
}

// === impl StringMatch ===

impl Serialize for StringMatch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            StringMatch::Exact(value) => single_entry(serializer, "Exact", value),
            StringMatch::Prefix(value) => single_entry(serializer, "Prefix", value),
            StringMatch::Suffix(value) => single_entry(serializer, "Suffix", value),
            StringMatch::Presence => serializer.serialize_str("Presence"),
        }
    }
}

impl fmt::Display for StringMatch {
    /// Istio's own notation: `v`, `v*`, `*v`, `*`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringMatch::Exact(value) => f.write_str(value),
            StringMatch::Prefix(value) => write!(f, "{value}*"),
            StringMatch::Suffix(value) => write!(f, "*{value}"),
            StringMatch::Presence => f.write_str("*"),
        }
    }
}

// === impl ServiceAccountMatch ===

impl fmt::Display for ServiceAccountMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceAccountMatch::Named {
                namespace,
                service_account,
            } => write!(f, "{namespace}/{service_account}"),
            ServiceAccountMatch::Other(value) => write!(f, "{value}"),
        }
    }
}

/// `{"Variant": value}`: what serde derives for an externally tagged enum
/// in JSON, written as a plain map so that YAML reads the same instead of
/// carrying a tag (`!Hostname`).
fn single_entry<S: Serializer, T: Serialize>(
    serializer: S,
    variant: &str,
    value: &T,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(Some(1))?;
    map.serialize_entry(variant, value)?;
    map.end()
}

/// `null` or absent as the empty value: a `null` list is no reason to
/// refuse the whole document.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests;

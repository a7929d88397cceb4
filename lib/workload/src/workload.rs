//! A workload as the data path sees it, converted from Istio's
//! `istio.workload.Workload` at the edge. Conversion is strict: a field the
//! data path relies on (addresses, identity) that does not parse rejects the
//! whole resource, so the client NACKs it and keeps the previous version,
//! instead of tunnelling with half a config.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use identity::Identity;
use proto::workload as xds;

use super::{ConversionError, ip_from_bytes};

/// How traffic reaches a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TunnelProtocol {
    /// Plain TCP: the destination is not in the mesh.
    None,
    /// HBONE to port 15008 of the workload's address.
    Hbone,
}

/// Where a waypoint (or network gateway) is reached.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum GatewayDestination {
    /// A service, resolved through the service store.
    Hostname {
        namespace: Arc<str>,
        hostname: Arc<str>,
    },
    /// One address.
    Address { network: Arc<str>, ip: IpAddr },
}

/// A waypoint reference with its HBONE port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayAddress {
    pub destination: GatewayDestination,
    pub hbone_port: u16,
}

/// A service port and the workload port it forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PortMapping {
    pub service_port: u16,
    /// 0 means "same as the service port" in Istio's API.
    pub target_port: u16,
}

/// One pod (or other workload) of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    /// `<cluster>//Pod/<ns>/<name>`: the xDS resource name.
    pub uid: Arc<str>,
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub addresses: Vec<IpAddr>,
    pub network: Arc<str>,
    pub protocol: TunnelProtocol,
    /// SPIFFE identity: the certificate the workload presents and the one
    /// its peers expect.
    #[serde(serialize_with = "super::display")]
    pub identity: Identity,
    pub waypoint: Option<GatewayAddress>,
    /// Node the workload runs on; ztunnel serves the ones on its own node.
    pub node: Arc<str>,
    pub canonical_name: Arc<str>,
    pub canonical_revision: Arc<str>,
    pub workload_name: Arc<str>,
    pub cluster_id: Arc<str>,
    /// `<ns>/<name>` of the WORKLOAD_SELECTOR policies that select it.
    pub authorization_policies: Vec<Arc<str>>,
    pub healthy: bool,
    /// Services it backs, by `<ns>/<hostname>`, with their port mappings.
    pub services: BTreeMap<Arc<str>, Vec<PortMapping>>,
}

// === impl Workload ===

impl Workload {
    /// The port to dial on this workload for `service_port` of `service`, if
    /// the workload backs that service port.
    pub fn target_port(&self, service: &str, service_port: u16) -> Option<u16> {
        let ports = self.services.get(service)?;
        let mapping = ports.iter().find(|p| p.service_port == service_port)?;
        Some(match mapping.target_port {
            0 => service_port,
            port => port,
        })
    }
}

impl TryFrom<xds::Workload> for Workload {
    type Error = ConversionError;

    fn try_from(w: xds::Workload) -> Result<Self, Self::Error> {
        if w.uid.is_empty() {
            return Err(ConversionError::new("workload", &w.name, "uid is empty"));
        }
        let what = |reason: String| ConversionError::new("workload", &w.uid, reason);
        let addresses = w
            .addresses
            .iter()
            .map(|bytes| ip_from_bytes(bytes))
            .collect::<Result<Vec<_>, _>>()
            .map_err(what)?;
        let trust_domain = if w.trust_domain.is_empty() {
            "cluster.local"
        } else {
            &w.trust_domain
        };
        let service_account = if w.service_account.is_empty() {
            "default"
        } else {
            &w.service_account
        };
        let identity = Identity::new(trust_domain, &w.namespace, service_account)
            .map_err(|e| what(format!("identity: {e}")))?;
        let protocol = match xds::TunnelProtocol::try_from(w.tunnel_protocol) {
            Ok(xds::TunnelProtocol::None) => TunnelProtocol::None,
            Ok(xds::TunnelProtocol::Hbone) => TunnelProtocol::Hbone,
            Err(_) => {
                return Err(what(format!(
                    "unknown tunnel protocol {}",
                    w.tunnel_protocol
                )));
            }
        };
        let waypoint = w
            .waypoint
            .map(GatewayAddress::try_from)
            .transpose()
            .map_err(|e| what(format!("waypoint: {e}")))?;
        let services = w
            .services
            .into_iter()
            .map(|(name, list)| {
                let ports = list
                    .ports
                    .iter()
                    .map(|p| {
                        Ok(PortMapping {
                            service_port: port(p.service_port)?,
                            target_port: port(p.target_port)?,
                        })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok((Arc::from(name), ports))
            })
            .collect::<Result<BTreeMap<_, _>, String>>()
            .map_err(|e| what(format!("services: {e}")))?;
        let healthy = w.status == xds::WorkloadStatus::Healthy as i32;
        Ok(Workload {
            uid: w.uid.into(),
            name: w.name.into(),
            namespace: w.namespace.into(),
            addresses,
            network: w.network.into(),
            protocol,
            identity,
            waypoint,
            node: w.node.into(),
            canonical_name: w.canonical_name.into(),
            canonical_revision: w.canonical_revision.into(),
            workload_name: w.workload_name.into(),
            cluster_id: w.cluster_id.into(),
            authorization_policies: w
                .authorization_policies
                .into_iter()
                .map(Arc::from)
                .collect(),
            healthy,
            services,
        })
    }
}

/// A port from the API's `uint32`.
pub(super) fn port(value: u32) -> Result<u16, String> {
    u16::try_from(value).map_err(|_| format!("port {value} is above 65535"))
}

// === impl GatewayAddress ===

impl TryFrom<xds::GatewayAddress> for GatewayAddress {
    type Error = String;

    fn try_from(g: xds::GatewayAddress) -> Result<Self, Self::Error> {
        use xds::gateway_address::Destination;
        let destination = match g.destination {
            Some(Destination::Hostname(h)) => GatewayDestination::Hostname {
                namespace: h.namespace.into(),
                hostname: h.hostname.into(),
            },
            Some(Destination::Address(a)) => GatewayDestination::Address {
                network: a.network.into(),
                ip: ip_from_bytes(&a.address)?,
            },
            None => return Err("no destination".into()),
        };
        let hbone_port = match port(g.hbone_mtls_port)? {
            0 => 15008,
            port => port,
        };
        Ok(GatewayAddress {
            destination,
            hbone_port,
        })
    }
}

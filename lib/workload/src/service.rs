//! A service as the data path sees it, from Istio's `istio.workload.Service`.
//! Endpoints are not part of it: they are the workloads whose `services`
//! name this service, indexed by the state snapshot.

use std::net::IpAddr;
use std::sync::Arc;

use proto::workload as xds;

use super::workload::{GatewayAddress, port};
use super::{ConversionError, ip_from_bytes};

/// A VIP on a network.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct NetworkAddress {
    pub network: Arc<str>,
    pub ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub hostname: Arc<str>,
    pub vips: Vec<NetworkAddress>,
    /// Service port to target port (0: the workload's own mapping decides).
    pub ports: Vec<(u16, u16)>,
    /// Identities any endpoint may present, besides the endpoint's own.
    pub subject_alt_names: Vec<Arc<str>>,
    pub waypoint: Option<GatewayAddress>,
}

/// Room for a namespace (63 bytes at most), a '/' and a DNS name (253).
const KEY_BUFFER: usize = 320;

// === impl Service ===

impl Service {
    /// The xDS resource name and store key: `<ns>/<hostname>`.
    pub fn key(&self) -> Arc<str> {
        format!("{}/{}", self.namespace, self.hostname).into()
    }

    /// Calls `f` with [`Self::key`] built on the stack: the data path looks
    /// the key up for every request, and allocating it each time was two
    /// allocations a lookup. A key longer than the buffer (no DNS name and
    /// namespace make one) is allocated.
    pub fn with_key<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        let (namespace, hostname) = (self.namespace.as_bytes(), self.hostname.as_bytes());
        let len = namespace.len() + 1 + hostname.len();
        let mut buffer = [0u8; KEY_BUFFER];
        // Two strs and a '/' are UTF-8: only a key too long falls back.
        let stacked = buffer.get_mut(..len).and_then(|key| {
            key[..namespace.len()].copy_from_slice(namespace);
            key[namespace.len()] = b'/';
            key[namespace.len() + 1..].copy_from_slice(hostname);
            std::str::from_utf8(key).ok()
        });
        match stacked {
            Some(key) => f(key),
            None => f(&self.key()),
        }
    }

    /// Whether the service exposes `port`.
    pub fn has_port(&self, port: u16) -> bool {
        self.ports
            .iter()
            .any(|(service_port, _)| *service_port == port)
    }
}

impl TryFrom<xds::Service> for Service {
    type Error = ConversionError;

    fn try_from(s: xds::Service) -> Result<Self, Self::Error> {
        let key = format!("{}/{}", s.namespace, s.hostname);
        if s.hostname.is_empty() {
            return Err(ConversionError::new("service", &key, "hostname is empty"));
        }
        let what = |reason: String| ConversionError::new("service", &key, reason);
        let vips = s
            .addresses
            .iter()
            .map(|a| {
                Ok(NetworkAddress {
                    network: a.network.as_str().into(),
                    ip: ip_from_bytes(&a.address)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map_err(what)?;
        let ports = s
            .ports
            .iter()
            .map(|p| Ok((port(p.service_port)?, port(p.target_port)?)))
            .collect::<Result<Vec<_>, String>>()
            .map_err(what)?;
        let waypoint = s
            .waypoint
            .map(GatewayAddress::try_from)
            .transpose()
            .map_err(|e| what(format!("waypoint: {e}")))?;
        Ok(Service {
            name: s.name.into(),
            namespace: s.namespace.into(),
            hostname: s.hostname.into(),
            vips,
            ports,
            subject_alt_names: s.subject_alt_names.into_iter().map(Arc::from).collect(),
            waypoint,
        })
    }
}

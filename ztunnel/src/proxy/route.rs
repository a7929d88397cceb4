//! Where an outbound connection goes: a pure function of the state snapshot,
//! the source workload and the original destination. No I/O happens here;
//! the only thing it changes is the round-robin position of a service.
//!
//! Resolution order (as Istio's ztunnel):
//! 1. The destination is a **service VIP**:
//!    - the service must expose the port;
//!    - if the service has a waypoint, go to the waypoint over HBONE with
//!      `:authority` `<vip>:<service-port>`;
//!    - otherwise pick a healthy endpoint (round robin, below) and map the
//!      service port to the endpoint's target port.
//! 2. The destination is a **workload address**: that workload, via its
//!    waypoint if it has one (`:authority` `<workload-ip>:<port>`).
//! 3. Anything else is outside the mesh: **passthrough** in plaintext to the
//!    original destination.
//!
//! A chosen workload that speaks HBONE is reached at `<ip>:15008` with
//! `:authority` `<ip>:<target-port>`, expecting its identity (plus the
//! service's `subject_alt_names`); one that does not is reached in
//! plaintext.
//!
//! A waypoint that cannot be resolved (unknown service, no healthy
//! endpoint) fails the connection: bypassing it would bypass its policy.
//! Traffic *from* the waypoint itself does not go back to the waypoint.
//!
//! Target port: the endpoint's own mapping if it is not 0, else the
//! service's target port if it is not 0, else the service port.
//!
//! Load balancing: per service, round robin over the healthy endpoints that
//! have an address, in uid order. The position is one counter per service
//! key, shared by every connection of this proxy; with a changing endpoint
//! set it stays fair on average, not exactly. Counters of deleted services
//! stay (one word each) until the proxy goes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use identity::Identity;

use crate::state::workload::{GatewayAddress, GatewayDestination};
use crate::state::{Service, State, TunnelProtocol, Workload};

/// The decision for one outbound connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Through an HBONE tunnel: to an endpoint's proxy or a waypoint.
    Hbone(HboneRoute),
    /// Plain TCP: a workload outside the mesh, or an unknown destination.
    Plaintext(PlaintextRoute),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HboneRoute {
    /// What to dial: `<endpoint-ip>:15008`, or the waypoint's HBONE address.
    pub hbone_addr: SocketAddr,
    /// The `CONNECT` `:authority`.
    pub authority: SocketAddr,
    /// Identities the peer may prove; anything else fails the handshake.
    pub expected_identities: Vec<Identity>,
    /// The workload terminating the tunnel: the endpoint or the waypoint.
    pub workload: Arc<Workload>,
    /// The service the client addressed, if it addressed one.
    pub service: Option<Arc<Service>>,
    /// Whether `workload` is a waypoint in front of the destination.
    pub via_waypoint: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaintextRoute {
    pub addr: SocketAddr,
    /// The destination workload, when it is known but not in the mesh.
    pub workload: Option<Arc<Workload>>,
    pub service: Option<Arc<Service>>,
}

/// Why no route exists; the connection is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("service {service} does not expose port {port}")]
    PortNotExposed { service: Arc<str>, port: u16 },
    #[error("service {service} has no healthy endpoint for port {port}")]
    NoHealthyEndpoint { service: Arc<str>, port: u16 },
    #[error(
        "waypoint {waypoint} of {destination} cannot be resolved: {reason}; \
         refusing to bypass it"
    )]
    WaypointUnresolved {
        waypoint: String,
        destination: String,
        reason: &'static str,
    },
}

/// Round-robin positions, one per service key.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: Mutex<HashMap<Arc<str>, usize>>,
}

// === impl RoundRobin ===

impl RoundRobin {
    /// The next of `candidates` for `key`, or `None` if there are none.
    pub fn pick<'a, T>(&self, key: &Arc<str>, candidates: &'a [T]) -> Option<&'a T> {
        if candidates.is_empty() {
            return None;
        }
        // Only a counter moves under the lock: a poisoned one is still fine.
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let position = next.entry(key.clone()).or_insert(0);
        let index = *position % candidates.len();
        *position = position.wrapping_add(1);
        Some(&candidates[index])
    }
}

/// Resolves where a connection from `source` to `dst` goes (see the module
/// doc for the rules).
pub fn resolve(
    state: &State,
    source: &Workload,
    dst: SocketAddr,
    balancer: &RoundRobin,
) -> Result<Route, RouteError> {
    let network = &*source.network;
    if let Some(service) = state.service_by_vip(network, dst.ip()) {
        let key = service.key();
        let Some(&(_, service_target)) = service.ports.iter().find(|(p, _)| *p == dst.port())
        else {
            return Err(RouteError::PortNotExposed {
                service: key,
                port: dst.port(),
            });
        };
        if let Some(waypoint) = &service.waypoint
            && let Some(route) =
                via_waypoint(state, source, waypoint, dst, Some(service), balancer)?
        {
            return Ok(route);
        }
        let candidates: Vec<(&Arc<Workload>, IpAddr, u16)> = state
            .endpoints(service)
            .filter(|w| w.healthy)
            .filter_map(|w| {
                let ip = address_like(w, dst.ip())?;
                let own = w
                    .services
                    .get(&key)
                    .and_then(|ports| ports.iter().find(|p| p.service_port == dst.port()))
                    .map_or(0, |p| p.target_port);
                let port = [own, service_target, dst.port()]
                    .into_iter()
                    .find(|p| *p != 0)
                    .unwrap_or(dst.port());
                Some((w, ip, port))
            })
            .collect();
        let Some(&(endpoint, ip, port)) = balancer.pick(&key, &candidates) else {
            return Err(RouteError::NoHealthyEndpoint {
                service: key,
                port: dst.port(),
            });
        };
        return Ok(direct(
            endpoint,
            SocketAddr::new(ip, port),
            Some(service.clone()),
        ));
    }
    if let Some(workload) = state.workload_by_address(network, dst.ip()) {
        if let Some(waypoint) = &workload.waypoint
            && let Some(route) = via_waypoint(state, source, waypoint, dst, None, balancer)?
        {
            return Ok(route);
        }
        return Ok(direct(workload, dst, None));
    }
    Ok(Route::Plaintext(PlaintextRoute {
        addr: dst,
        workload: None,
        service: None,
    }))
}

/// To `workload` at `addr`: HBONE if it speaks it, plaintext otherwise.
fn direct(workload: &Arc<Workload>, addr: SocketAddr, service: Option<Arc<Service>>) -> Route {
    match workload.protocol {
        TunnelProtocol::Hbone => {
            let mut expected = vec![workload.identity.clone()];
            if let Some(service) = &service {
                // A SAN that is not a SPIFFE identity could never match a
                // peer's identity anyway; leaving it out changes nothing.
                expected.extend(
                    service
                        .subject_alt_names
                        .iter()
                        .filter_map(|san| san.parse::<Identity>().ok()),
                );
            }
            Route::Hbone(HboneRoute {
                hbone_addr: SocketAddr::new(addr.ip(), hbone::HBONE_PORT),
                authority: addr,
                expected_identities: expected,
                workload: workload.clone(),
                service,
                via_waypoint: false,
            })
        }
        TunnelProtocol::None => Route::Plaintext(PlaintextRoute {
            addr,
            workload: Some(workload.clone()),
            service,
        }),
    }
}

/// To the waypoint in front of `authority`; `None` when `source` is that
/// waypoint (its own traffic goes on to the destination).
fn via_waypoint(
    state: &State,
    source: &Workload,
    waypoint: &GatewayAddress,
    authority: SocketAddr,
    service: Option<&Arc<Service>>,
    balancer: &RoundRobin,
) -> Result<Option<Route>, RouteError> {
    let unresolved = |waypoint: String, reason| RouteError::WaypointUnresolved {
        waypoint,
        destination: match service {
            Some(service) => format!("service {}", service.key()),
            None => format!("workload at {}", authority.ip()),
        },
        reason,
    };
    let (waypoint_service, name) = match &waypoint.destination {
        GatewayDestination::Hostname {
            namespace,
            hostname,
        } => {
            let key = format!("{namespace}/{hostname}");
            let found = state.service_by_key(&key);
            (
                found.ok_or_else(|| unresolved(key.clone(), "no such service"))?,
                key,
            )
        }
        GatewayDestination::Address { network, ip } => {
            let name = ip.to_string();
            if let Some(workload) = state.workload_by_address(network, *ip) {
                if workload.uid == source.uid {
                    return Ok(None);
                }
                return Ok(Some(waypoint_route(
                    workload, *ip, waypoint, authority, service,
                )));
            }
            let found = state.service_by_vip(network, *ip);
            (
                found.ok_or_else(|| {
                    unresolved(name.clone(), "no workload or service has that address")
                })?,
                name,
            )
        }
    };
    let mut candidates: Vec<(&Arc<Workload>, IpAddr)> = Vec::new();
    for endpoint in state.endpoints(waypoint_service) {
        if endpoint.uid == source.uid {
            return Ok(None);
        }
        if let Some(ip) = endpoint
            .healthy
            .then(|| address_like(endpoint, authority.ip()))
            .flatten()
        {
            candidates.push((endpoint, ip));
        }
    }
    let &(endpoint, ip) = balancer
        .pick(&waypoint_service.key(), &candidates)
        .ok_or_else(|| unresolved(name, "it has no healthy endpoint"))?;
    Ok(Some(waypoint_route(
        endpoint, ip, waypoint, authority, service,
    )))
}

fn waypoint_route(
    waypoint: &Arc<Workload>,
    ip: IpAddr,
    gateway: &GatewayAddress,
    authority: SocketAddr,
    service: Option<&Arc<Service>>,
) -> Route {
    Route::Hbone(HboneRoute {
        hbone_addr: SocketAddr::new(ip, gateway.hbone_port),
        authority,
        expected_identities: vec![waypoint.identity.clone()],
        workload: waypoint.clone(),
        service: service.cloned(),
        via_waypoint: true,
    })
}

/// The workload's address of the same family as `like`, else its first.
fn address_like(workload: &Workload, like: IpAddr) -> Option<IpAddr> {
    let addresses = &workload.addresses;
    addresses
        .iter()
        .find(|ip| ip.is_ipv4() == like.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
}

#[cfg(test)]
mod tests;

//! What a proxy knows about the mesh: workloads, services and policies, as
//! immutable snapshots. Shared by ztunnel (which finds pods, peers and L4
//! policy in it) and the waypoint (which finds a service by the VIP it is
//! asked for and picks one of its endpoints). It must never do I/O: it
//! converts pushed resources and answers lookups, nothing else.
//!
//! The xDS handler is the only writer: it converts a response's resources,
//! builds the next [`State`] from the current one and publishes it. The
//! data path reads with [`StateStore::snapshot`], one atomic load, and keeps
//! the `Arc<State>` for as long as a decision takes; it never waits for the
//! control plane, and when the control plane is gone the last snapshot keeps
//! serving (static stability).
//!
//! # Layout
//!
//! - `workload`, `service`, `policy`: the domain types, each with `TryFrom`
//!   the generated protobuf type, strict about what the data path needs.
//! - `handler`: the delta ADS handler that decodes pushed `Address` and
//!   `Authorization` resources and applies them to a [`StateStore`].
//! - this module: the snapshot with its lookups and the pure `apply_*`
//!   functions that build the next one.

pub mod handler;
pub mod policy;
pub mod service;
pub mod workload;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use proto::workload::address::Type as AddressType;
use tokio::sync::watch;

pub use self::policy::{Connection, Policy, Scope};
pub use self::service::{NetworkAddress, Service};
pub use self::workload::{GatewayAddress, GatewayDestination, TunnelProtocol, Workload};

/// A resource that cannot be used, with the reason; becomes a NACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?} rejected: {reason}")]
pub struct ConversionError {
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
}

/// One immutable view of the mesh.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// By uid (the xDS resource name).
    workloads: HashMap<Arc<str>, Arc<Workload>>,
    /// (network, ip) to the uid of the workload holding it.
    workload_by_address: HashMap<NetworkAddress, Arc<str>>,
    /// By `<ns>/<hostname>` (the xDS resource name).
    services: HashMap<Arc<str>, Arc<Service>>,
    /// (network, vip) to the service key.
    service_by_vip: HashMap<NetworkAddress, Arc<str>>,
    /// Service key to the uids of the workloads that back it.
    endpoints: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    /// By `<ns>/<name>` (the xDS resource name).
    policies: HashMap<Arc<str>, Arc<Policy>>,
}

/// The published snapshot. One writer (the xDS handler), many readers.
#[derive(Debug)]
pub struct StateStore {
    current: ArcSwap<State>,
    /// Serializes writers so that no update is lost between load and store.
    write: Mutex<()>,
    /// Bumped after every published update, for the tasks that react to a
    /// change (pod capture, re-checking open connections); the data path
    /// never waits on it.
    generation: watch::Sender<u64>,
}

// === impl StateStore ===

impl Default for StateStore {
    fn default() -> Self {
        StateStore {
            current: ArcSwap::default(),
            write: Mutex::new(()),
            generation: watch::channel(0).0,
        }
    }
}

impl StateStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows updates: the value is the number of updates published so
    /// far. A slow receiver sees only the latest, which is all it needs
    /// since it reads the snapshot afresh.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The current snapshot; cheap, never blocks.
    pub fn snapshot(&self) -> Arc<State> {
        self.current.load_full()
    }

    /// Builds the next snapshot from the current one and publishes it.
    pub fn update<R>(&self, change: impl FnOnce(&mut State) -> R) -> R {
        let _guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = State::clone(&self.current.load());
        let result = change(&mut next);
        self.current.store(Arc::new(next));
        self.generation.send_modify(|generation| *generation += 1);
        result
    }
}

// === impl State ===

impl State {
    pub fn workload_by_uid(&self, uid: &str) -> Option<&Arc<Workload>> {
        self.workloads.get(uid)
    }

    pub fn workload_by_address(&self, network: &str, ip: IpAddr) -> Option<&Arc<Workload>> {
        let uid = self.workload_by_address.get(&NetworkAddress {
            network: network.into(),
            ip,
        })?;
        self.workloads.get(uid)
    }

    pub fn service_by_vip(&self, network: &str, ip: IpAddr) -> Option<&Arc<Service>> {
        let key = self.service_by_vip.get(&NetworkAddress {
            network: network.into(),
            ip,
        })?;
        self.services.get(key)
    }

    /// By `<ns>/<hostname>`.
    pub fn service_by_key(&self, key: &str) -> Option<&Arc<Service>> {
        self.services.get(key)
    }

    /// The workloads that back `service`, in uid order.
    pub fn endpoints<'a>(&'a self, service: &Service) -> impl Iterator<Item = &'a Arc<Workload>> {
        service
            .with_key(|key| self.endpoints.get(key))
            .into_iter()
            .flatten()
            .filter_map(|uid| self.workloads.get(uid))
    }

    /// The workloads a waypoint (or gateway) reference resolves to: the
    /// endpoints of the service it names, or the workload (else the
    /// service's endpoints) at the address it names. Empty when it does not
    /// resolve.
    pub fn gateway_workloads(&self, gateway: &GatewayAddress) -> Vec<&Arc<Workload>> {
        match &gateway.destination {
            GatewayDestination::Hostname {
                namespace,
                hostname,
            } => match self.service_by_key(&format!("{namespace}/{hostname}")) {
                Some(service) => self.endpoints(service).collect(),
                None => Vec::new(),
            },
            GatewayDestination::Address { network, ip } => {
                if let Some(workload) = self.workload_by_address(network, *ip) {
                    return vec![workload];
                }
                match self.service_by_vip(network, *ip) {
                    Some(service) => self.endpoints(service).collect(),
                    None => Vec::new(),
                }
            }
        }
    }

    pub fn policy(&self, key: &str) -> Option<&Arc<Policy>> {
        self.policies.get(key)
    }

    /// Every policy that applies to `workload`: global ones, those of its
    /// namespace, and the selector policies it names. Names it lists that
    /// are not (yet) known are skipped: the DENY-first evaluation treats a
    /// missing policy as absent, as Istio's ztunnel does.
    pub fn policies_for<'a>(&'a self, workload: &Workload) -> Vec<&'a Arc<Policy>> {
        let mut found: Vec<&Arc<Policy>> = self
            .policies
            .values()
            .filter(|p| match p.scope {
                Scope::Global => true,
                Scope::Namespace => p.namespace == workload.namespace,
                Scope::WorkloadSelector => false,
            })
            .collect();
        found.extend(
            workload
                .authorization_policies
                .iter()
                .filter_map(|key| self.policies.get(key))
                .filter(|p| p.scope == Scope::WorkloadSelector),
        );
        // A stable order makes "denied by <policy>" the same every time.
        found.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        found.dedup_by(|a, b| Arc::ptr_eq(a, b));
        found
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Arc<Workload>> {
        self.workloads.values()
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.values()
    }

    /// Applies one `istio.workload.Address` response: upserts by resource
    /// name, then removals. Resources that fail conversion are left as they
    /// were (the previous version keeps serving) and returned.
    pub fn apply_addresses(
        &mut self,
        upserts: Vec<(String, proto::workload::Address)>,
        removals: &[String],
    ) -> Vec<ConversionError> {
        let mut rejected = Vec::new();
        for (name, address) in upserts {
            match address.r#type {
                Some(AddressType::Workload(w)) => match Workload::try_from(w) {
                    Ok(w) if *w.uid == *name => self.insert_workload(w),
                    Ok(w) => rejected.push(ConversionError::new(
                        "workload",
                        &name,
                        format!("resource name differs from uid {:?}", w.uid),
                    )),
                    Err(e) => rejected.push(e),
                },
                Some(AddressType::Service(s)) => match Service::try_from(s) {
                    Ok(s) if *s.key() == *name => self.insert_service(s),
                    Ok(s) => rejected.push(ConversionError::new(
                        "service",
                        &name,
                        format!("resource name differs from <ns>/<hostname> {:?}", s.key()),
                    )),
                    Err(e) => rejected.push(e),
                },
                None => rejected.push(ConversionError::new(
                    "address",
                    &name,
                    "neither a workload nor a service",
                )),
            }
        }
        for name in removals {
            self.remove_workload(name);
            self.remove_service(name);
        }
        rejected
    }

    /// Applies one `istio.security.Authorization` response.
    pub fn apply_policies(
        &mut self,
        upserts: Vec<(String, proto::security::Authorization)>,
        removals: &[String],
    ) -> Vec<ConversionError> {
        let mut rejected = Vec::new();
        for (name, authorization) in upserts {
            match Policy::try_from(authorization) {
                Ok(p) if *p.key() == *name => {
                    self.policies.insert(p.key(), Arc::new(p));
                }
                Ok(p) => rejected.push(ConversionError::new(
                    "authorization",
                    &name,
                    format!("resource name differs from <ns>/<name> {:?}", p.key()),
                )),
                Err(e) => rejected.push(e),
            }
        }
        for name in removals {
            self.policies.remove(name.as_str());
        }
        rejected
    }

    fn insert_workload(&mut self, workload: Workload) {
        self.remove_workload(&workload.uid);
        let uid = workload.uid.clone();
        for ip in &workload.addresses {
            self.workload_by_address.insert(
                NetworkAddress {
                    network: workload.network.clone(),
                    ip: *ip,
                },
                uid.clone(),
            );
        }
        for service in workload.services.keys() {
            self.endpoints
                .entry(service.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.workloads.insert(uid, Arc::new(workload));
    }

    fn remove_workload(&mut self, uid: &str) {
        let Some(old) = self.workloads.remove(uid) else {
            return;
        };
        for ip in &old.addresses {
            let key = NetworkAddress {
                network: old.network.clone(),
                ip: *ip,
            };
            // Another workload may have taken the address since (a pod
            // replaced under the same IP): only drop our own entry.
            if self
                .workload_by_address
                .get(&key)
                .is_some_and(|u| **u == *uid)
            {
                self.workload_by_address.remove(&key);
            }
        }
        for service in old.services.keys() {
            if let Some(uids) = self.endpoints.get_mut(service) {
                uids.remove(uid);
                if uids.is_empty() {
                    self.endpoints.remove(service);
                }
            }
        }
    }

    fn insert_service(&mut self, service: Service) {
        let key = service.key();
        self.remove_service(&key);
        for vip in &service.vips {
            self.service_by_vip.insert(vip.clone(), key.clone());
        }
        self.services.insert(key, Arc::new(service));
    }

    fn remove_service(&mut self, key: &str) {
        let Some(old) = self.services.remove(key) else {
            return;
        };
        for vip in &old.vips {
            if self.service_by_vip.get(vip).is_some_and(|k| **k == *key) {
                self.service_by_vip.remove(vip);
            }
        }
    }
}

// === impl ConversionError ===

impl ConversionError {
    pub fn new(kind: &'static str, name: &str, reason: impl Into<String>) -> Self {
        ConversionError {
            kind,
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// An IP from the API's 4- or 16-byte encoding.
pub(crate) fn ip_from_bytes(bytes: &[u8]) -> Result<IpAddr, String> {
    if let Ok(octets) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Ok(octets) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::V6(Ipv6Addr::from(octets)));
    }
    Err(format!(
        "an address of {} bytes is neither IPv4 (4) nor IPv6 (16)",
        bytes.len()
    ))
}

/// Serializes a value by its `Display` form (for `/config_dump`).
pub(crate) fn display<T: fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Serializes a list by the `Display` form of each item.
pub(crate) fn display_all<T: fmt::Display, S: serde::Serializer>(
    values: &[T],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(values.iter().map(ToString::to_string))
}

#[cfg(test)]
mod tests;

//! The waypoint's own config as one immutable snapshot: the route table of
//! each service port, and the L7 policies and the faults of each service.
//!
//! The xDS handler is the only writer in the binary: it converts pushed
//! resources (`TryFrom`) and builds the next [`WaypointConfig`] with the
//! pure `apply_*` functions; the data path reads it with one atomic load
//! ([`ConfigStore::snapshot`]) and never waits for the control plane. A
//! resource that does not convert is left as it was (its previous version
//! keeps serving) and returned, so the client can NACK it.
//!
//! Resource names: `WaypointRoutes` are named `<hostname>:<port>` (one
//! table per service port), `WaypointAuthorization` and `WaypointFaults`
//! `<hostname>`. A name
//! that disagrees with the resource's own fields is rejected, because the
//! client tracks versions by name and a removal would miss the entry.

use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use proto::waypoint as pb;

use crate::authz::ServicePolicies;
use crate::balance::BackendPolicy;
use crate::fast_map::FastMap;
use crate::fault::ServiceFaults;
use crate::route::{RouteTable, ServiceKey};

/// A resource that cannot be used, with the reason; becomes a NACK.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?} rejected: {reason}")]
pub struct Rejected {
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
}

/// One immutable view of the waypoint's own config.
#[derive(Debug, Clone, Default)]
pub struct WaypointConfig {
    /// By service hostname and port.
    routes: FastMap<ServiceKey, Arc<RouteTable>>,
    /// By service hostname.
    policies: FastMap<Arc<str>, Arc<ServicePolicies>>,
    /// By service hostname.
    faults: FastMap<Arc<str>, Arc<ServiceFaults>>,
    /// By service hostname.
    backends: FastMap<Arc<str>, Arc<BackendPolicy>>,
}

/// The published snapshot. One writer (the xDS handler), many readers.
#[derive(Debug, Default)]
pub struct ConfigStore {
    current: ArcSwap<WaypointConfig>,
    /// Serializes writers so that no update is lost between load and store.
    write: Mutex<()>,
}

// === impl ConfigStore ===

impl ConfigStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current snapshot; cheap, never blocks.
    pub fn snapshot(&self) -> Arc<WaypointConfig> {
        self.current.load_full()
    }

    /// Builds the next snapshot from the current one and publishes it.
    pub fn update<R>(&self, change: impl FnOnce(&mut WaypointConfig) -> R) -> R {
        let _guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = WaypointConfig::clone(&self.current.load());
        let result = change(&mut next);
        self.current.store(Arc::new(next));
        result
    }
}

// === impl WaypointConfig ===

impl WaypointConfig {
    /// The route table attached to `service`, if any: without one, every
    /// request goes to the service itself.
    pub fn routes(&self, service: &ServiceKey) -> Option<&Arc<RouteTable>> {
        self.routes.get(service)
    }

    /// The L7 policies of the service `hostname`, if any.
    pub fn policies(&self, hostname: &str) -> Option<&Arc<ServicePolicies>> {
        self.policies.get(hostname)
    }

    /// The fault injection of the service `hostname`, if any.
    pub fn faults(&self, hostname: &str) -> Option<&Arc<ServiceFaults>> {
        self.faults.get(hostname)
    }

    /// The `DestinationRule` policy of the service `hostname`, if any:
    /// without one, least-request with no limits and no ejection.
    pub fn backend_policy(&self, hostname: &str) -> Option<&Arc<BackendPolicy>> {
        self.backends.get(hostname)
    }

    /// Attaches `table` to its service port, replacing any previous one.
    pub fn insert_routes(&mut self, table: RouteTable) {
        self.routes.insert(table.service().clone(), Arc::new(table));
    }

    /// Sets the L7 policies of their service, replacing any previous ones.
    pub fn insert_policies(&mut self, policies: ServicePolicies) {
        self.policies
            .insert(policies.hostname.clone(), Arc::new(policies));
    }

    /// Applies one `WaypointRoutes` response: upserts, then removals.
    pub fn apply_routes(
        &mut self,
        upserts: Vec<(String, pb::WaypointRoutes)>,
        removals: &[String],
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        for (name, resource) in upserts {
            let reject = |reason: String| Rejected {
                kind: "WaypointRoutes",
                name: name.clone(),
                reason,
            };
            match RouteTable::try_from(resource) {
                Ok(table) if routes_name(table.service()) == name => self.insert_routes(table),
                Ok(table) => rejected.push(reject(format!(
                    "the resource name differs from <hostname>:<port> {:?}",
                    routes_name(table.service())
                ))),
                Err(error) => rejected.push(reject(error.to_string())),
            }
        }
        for name in removals {
            // A name that is not `<hostname>:<port>` was never stored.
            if let Some(key) = parse_routes_name(name) {
                self.routes.remove(&key);
            }
        }
        rejected
    }

    /// Applies one `WaypointAuthorization` response: upserts, then removals.
    pub fn apply_authorization(
        &mut self,
        upserts: Vec<(String, pb::WaypointAuthorization)>,
        removals: &[String],
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        for (name, resource) in upserts {
            let reject = |reason: String| Rejected {
                kind: "WaypointAuthorization",
                name: name.clone(),
                reason,
            };
            match ServicePolicies::try_from(resource) {
                Ok(policies) if *policies.hostname == *name => self.insert_policies(policies),
                Ok(policies) => rejected.push(reject(format!(
                    "the resource name differs from the hostname {:?}",
                    policies.hostname
                ))),
                Err(error) => rejected.push(reject(error.to_string())),
            }
        }
        for name in removals {
            self.policies.remove(name.as_str());
        }
        rejected
    }

    /// Applies one `WaypointFaults` response: upserts, then removals.
    pub fn apply_faults(
        &mut self,
        upserts: Vec<(String, pb::WaypointFaults)>,
        removals: &[String],
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        for (name, resource) in upserts {
            let reject = |reason: String| Rejected {
                kind: "WaypointFaults",
                name: name.clone(),
                reason,
            };
            match ServiceFaults::try_from(resource) {
                Ok(faults) if *faults.hostname == *name => {
                    self.faults
                        .insert(faults.hostname.clone(), Arc::new(faults));
                }
                Ok(faults) => rejected.push(reject(format!(
                    "the resource name differs from the hostname {:?}",
                    faults.hostname
                ))),
                Err(error) => rejected.push(reject(error.to_string())),
            }
        }
        for name in removals {
            self.faults.remove(name.as_str());
        }
        rejected
    }

    /// Applies one `WaypointBackendPolicy` response: upserts, then removals.
    pub fn apply_backend_policies(
        &mut self,
        upserts: Vec<(String, pb::WaypointBackendPolicy)>,
        removals: &[String],
    ) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        for (name, resource) in upserts {
            let reject = |reason: String| Rejected {
                kind: "WaypointBackendPolicy",
                name: name.clone(),
                reason,
            };
            match BackendPolicy::try_from(resource) {
                Ok(policy) if *policy.hostname == *name => {
                    self.backends
                        .insert(policy.hostname.clone(), Arc::new(policy));
                }
                Ok(policy) => rejected.push(reject(format!(
                    "the resource name differs from the hostname {:?}",
                    policy.hostname
                ))),
                Err(error) => rejected.push(reject(error.to_string())),
            }
        }
        for name in removals {
            self.backends.remove(name.as_str());
        }
        rejected
    }
}

/// The resource name of a service port's route table.
pub fn routes_name(service: &ServiceKey) -> String {
    format!("{}:{}", service.hostname, service.port)
}

fn parse_routes_name(name: &str) -> Option<ServiceKey> {
    let (hostname, port) = name.rsplit_once(':')?;
    Some(ServiceKey {
        hostname: hostname.into(),
        port: port.parse().ok()?,
    })
}

#[cfg(test)]
mod tests;

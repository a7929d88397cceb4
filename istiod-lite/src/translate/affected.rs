//! Which output resources a set of changed objects may affect.
//!
//! Every output resource is a function of one source object (a [`Target`])
//! and of the objects it reads. This module inverts those reads:
//!
//! | changed object            | re-translated targets                                   |
//! | ------------------------- | ------------------------------------------------------- |
//! | Pod                       | its workload                                            |
//! | Namespace                 | pods and services in it                                 |
//! | Service                   | itself; pods in its namespace; users of it as waypoint  |
//! | Gateway                   | users of it as a waypoint; its service; its own pods    |
//! | AuthorizationPolicy       | itself; pods in its namespace (all pods if root)        |
//! | PeerAuthentication        | the static STRICT policy; pods as above                 |
//! | HTTPRoute                 | nothing yet (waypoint config is not translated here)    |
//!
//! A pod change touches no service: the workload-API service carries no
//! endpoints. Selector-based dependencies are widened to the namespace
//! because the index holds only the new version of a changed object, and the
//! pods its old selector matched must be re-translated too. The result is a
//! superset of what changed, never a subset: re-translating an unchanged
//! resource is harmless, missing a changed one is not.

use std::collections::BTreeSet;

use super::waypoint::{self, GATEWAY_NAME_LABEL, WaypointRef};
use super::{Index, MeshConfig};
use crate::model::{ObjectKey, ObjectKind};

/// A source of exactly one output resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// The workload of a pod.
    Workload { namespace: String, name: String },
    /// The service of a Kubernetes Service.
    Service { namespace: String, name: String },
    /// The authorization of an AuthorizationPolicy.
    Policy { namespace: String, name: String },
    /// The static STRICT policy derived from PeerAuthentications.
    StaticStrict,
}

/// Every target in the index.
pub(crate) fn all_targets(index: &Index) -> Vec<Target> {
    let mut targets: Vec<Target> = index
        .keys_of(ObjectKind::Pod, None)
        .map(|key| workload(&key.namespace, &key.name))
        .collect();
    targets.extend(
        index
            .keys_of(ObjectKind::Service, None)
            .map(|key| Target::Service {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            }),
    );
    targets.extend(
        index
            .keys_of(ObjectKind::AuthorizationPolicy, None)
            .map(|key| Target::Policy {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            }),
    );
    targets.push(Target::StaticStrict);
    targets
}

/// The targets whose output may differ after the objects in `changed` were
/// added, updated or removed. `index` is the state after the change.
pub fn affected(
    index: &Index,
    config: &MeshConfig,
    changed: &BTreeSet<ObjectKey>,
) -> BTreeSet<Target> {
    let mut out = BTreeSet::new();
    for key in changed {
        let ns = key.namespace.as_str();
        let name = key.name.as_str();
        match key.kind {
            ObjectKind::Pod => {
                out.insert(workload(ns, name));
            }
            ObjectKind::Namespace => {
                // A namespace's key has an empty namespace; its name is the
                // namespace its pods and services live in.
                pods_in(index, Some(name), &mut out);
                services_in(index, name, &mut out);
            }
            ObjectKind::Service => {
                out.insert(Target::Service {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                });
                pods_in(index, Some(ns), &mut out);
                waypoint_users(index, ns, name, &mut out);
            }
            ObjectKind::Gateway => {
                waypoint_users(index, ns, name, &mut out);
                out.insert(Target::Service {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                });
                for pod in index.pods(Some(ns)) {
                    let instance = pod
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|labels| labels.get(GATEWAY_NAME_LABEL))
                        .is_some_and(|gw| gw == name);
                    if instance {
                        out.insert(workload(
                            ns,
                            pod.metadata.name.as_deref().unwrap_or_default(),
                        ));
                    }
                }
            }
            ObjectKind::AuthorizationPolicy => {
                out.insert(Target::Policy {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                });
                pods_in(index, policy_reach(config, ns), &mut out);
            }
            ObjectKind::PeerAuthentication => {
                out.insert(Target::StaticStrict);
                pods_in(index, policy_reach(config, ns), &mut out);
            }
            ObjectKind::HttpRoute => {}
        }
    }
    out
}

fn workload(namespace: &str, name: &str) -> Target {
    Target::Workload {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// Policies in the root namespace reach every namespace.
fn policy_reach<'a>(config: &MeshConfig, namespace: &'a str) -> Option<&'a str> {
    (namespace != config.root_namespace).then_some(namespace)
}

fn pods_in(index: &Index, namespace: Option<&str>, out: &mut BTreeSet<Target>) {
    out.extend(
        index
            .keys_of(ObjectKind::Pod, namespace)
            .map(|key| workload(&key.namespace, &key.name)),
    );
}

fn services_in(index: &Index, namespace: &str, out: &mut BTreeSet<Target>) {
    out.extend(
        index
            .keys_of(ObjectKind::Service, Some(namespace))
            .map(|key| Target::Service {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
            }),
    );
}

/// Pods and services whose labels (or their namespace's) name the waypoint
/// `namespace/name`. A scan of the mesh: waypoint changes are rare next to
/// pod churn, and a reverse index would have to track label edits.
fn waypoint_users(index: &Index, namespace: &str, name: &str, out: &mut BTreeSet<Target>) {
    let wanted = WaypointRef {
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    let uses = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        let ns = meta.namespace.as_deref().unwrap_or("default");
        waypoint::waypoint_reference(meta, index.namespace(ns)).as_ref() == Some(&wanted)
    };
    for pod in index.pods(None) {
        if uses(&pod.metadata) {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            out.insert(workload(
                ns,
                pod.metadata.name.as_deref().unwrap_or_default(),
            ));
        }
    }
    for svc in index.services(None) {
        if uses(&svc.metadata) {
            out.insert(Target::Service {
                namespace: svc
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                name: svc.metadata.name.clone().unwrap_or_default(),
            });
        }
    }
}

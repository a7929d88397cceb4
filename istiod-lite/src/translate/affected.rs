//! Which output resources a set of changed objects may affect.
//!
//! Every output resource is a function of one source object (a [`Target`])
//! and of the objects it reads. This module inverts those reads:
//!
//! | changed object      | re-translated targets                                        |
//! | ------------------- | ------------------------------------------------------------ |
//! | Pod                 | its workload                                                 |
//! | Namespace           | pods and services in it                                      |
//! | Service             | itself; pods its old or new selector selects; users of it as a waypoint |
//! | Gateway             | users of it as a waypoint; its service; its own pods         |
//! | AuthorizationPolicy | itself; pods its old or new `selector` selects (1)           |
//! | PeerAuthentication  | the static STRICT policy; pods its old or new selector selects (2) |
//! | HTTPRoute, VirtualService, DestinationRule | none of these (3)                     |
//! | any kind, unchanged since the last translation (relist, re-read file) | nothing |
//!
//! (1) In its namespace, or in every namespace from the root namespace; no
//! pod at all for a policy without a selector (namespace or mesh scope).
//! (2) Without a selector: every pod of its namespace, or of the mesh from
//! the root namespace.
//! (3) The waypoint's resource sets are not targets: they are re-translated
//! whole when any of their input kinds changes (`WAYPOINT_INPUTS`).
//!
//! Why policies reach pods at all: a workload's `authorization_policies`
//! names the selector-based policies that select it, and the static STRICT
//! policy when its effective mTLS mode is STRICT. Namespace- and mesh-scoped
//! policies are not named (ztunnel applies them by their scope), so changing
//! one re-translates that policy alone. A pod change touches no service: the
//! workload-API service carries no endpoints.
//!
//! What an object's *old* selector matched must be re-translated too (a pod
//! a Service stopped selecting loses that service). [`Changes`] carries the
//! version every changed object had at the last translation, so both
//! selectors are evaluated, against today's pod labels: a pod whose labels
//! changed is in the batch itself, and every other pod has the same labels
//! it had then. Waypoint users and a Gateway's pods are found by labels the
//! same way, and a waypoint by name, so those need no old version.
//!
//! The selector tests are the translation's own (PeerAuthentication's
//! mirrors `effective_strict`), so the result is the resources that read
//! the changed objects: a superset of what changed, never a subset.
//! Re-translating an unchanged resource is harmless, missing a changed one
//! is not.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;

use super::authorization::policy_selects;
use super::index::Changes;
use super::waypoint::{self, GATEWAY_NAME_LABEL, WaypointRef};
use super::workload::selects;
use super::{Index, MeshConfig};
use crate::model::{KubeObject, ObjectKind};

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

/// The targets whose output may differ between the state the last
/// translation saw and `index`, given the objects changed in between and
/// their versions then.
pub fn affected(index: &Index, config: &MeshConfig, changes: &Changes) -> BTreeSet<Target> {
    let mut out = BTreeSet::new();
    for (key, before) in changes.iter() {
        let now = index.get(key);
        if before == now {
            continue;
        }
        // The versions the last translation and this one see.
        let versions = || before.into_iter().chain(now);
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
                for version in versions() {
                    if let KubeObject::Service(svc) = version {
                        let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
                        pods_where(index, Some(ns), &mut out, |_, labels| {
                            selects(selector, labels)
                        });
                    }
                }
                waypoint_users(index, ns, name, &mut out);
            }
            ObjectKind::Gateway => {
                waypoint_users(index, ns, name, &mut out);
                out.insert(Target::Service {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                });
                pods_where(index, Some(ns), &mut out, |_, labels| {
                    labels.get(GATEWAY_NAME_LABEL).is_some_and(|gw| gw == name)
                });
            }
            ObjectKind::AuthorizationPolicy => {
                out.insert(Target::Policy {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                });
                for version in versions() {
                    if let KubeObject::AuthorizationPolicy(policy) = version {
                        let reach = policy_reach(config, ns);
                        pods_where(index, reach, &mut out, |pod_ns, labels| {
                            policy_selects(policy, config, pod_ns, labels)
                        });
                    }
                }
            }
            ObjectKind::PeerAuthentication => {
                out.insert(Target::StaticStrict);
                for version in versions() {
                    let KubeObject::PeerAuthentication(policy) = version else {
                        continue;
                    };
                    let selector = policy.spec.selector.as_ref().map(|s| &s.match_labels);
                    match selector.filter(|labels| !labels.is_empty()) {
                        // Namespace-wide, or mesh-wide from the root namespace.
                        None => pods_in(index, policy_reach(config, ns), &mut out),
                        Some(selector) => pods_where(index, Some(ns), &mut out, |_, labels| {
                            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
                        }),
                    }
                }
            }
            ObjectKind::HttpRoute | ObjectKind::VirtualService | ObjectKind::DestinationRule => {}
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

/// Pods (in `namespace`, if given) for whose namespace and labels `wanted`
/// holds.
fn pods_where(
    index: &Index,
    namespace: Option<&str>,
    out: &mut BTreeSet<Target>,
    wanted: impl Fn(&str, &BTreeMap<String, String>) -> bool,
) {
    let empty = BTreeMap::new();
    for pod in index.pods(namespace) {
        let (ns, name) = pod_name(pod);
        if wanted(ns, pod.metadata.labels.as_ref().unwrap_or(&empty)) {
            out.insert(workload(ns, name));
        }
    }
}

fn pod_name(pod: &Pod) -> (&str, &str) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    (ns, pod.metadata.name.as_deref().unwrap_or_default())
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
            let (ns, name) = pod_name(pod);
            out.insert(workload(ns, name));
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

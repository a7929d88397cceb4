//! Which workload identities run on which node, for the CA's node
//! authorization, kept from the same index the translation reads.
//!
//! The pipeline owns the bookkeeping ([`Placements`]: each pod's node and
//! identity) and updates it incrementally from the keys of changed objects: a
//! pod change re-places that pod, a namespace change (which can enroll or
//! unenroll all its pods) re-places the namespace's pods. The CA reads the
//! result ([`WorkloadNodes`]) under a read lock held only for one lookup.

use std::collections::{BTreeSet, HashMap};
use std::sync::{PoisonError, RwLock};

use identity::Identity;
use tracing::warn;

use crate::ca::NodeDirectory;
use crate::model::{ObjectKey, ObjectKind};
use crate::translate::{GATEWAY_NAME_LABEL, Index, is_enrolled, is_waypoint_instance};

/// Node name to the identities of enrolled and waypoint pods on it, with pod counts (two
/// replicas share one identity; removing one must not revoke the other).
type ByNode = HashMap<String, HashMap<Identity, usize>>;

/// The CA's view: whether an identity has a pod on a node. Shared between
/// the pipeline (writer) and the CA service (reader).
#[derive(Debug, Default)]
pub struct WorkloadNodes {
    /// Written once per debounced batch, in place; read per CSR.
    by_node: RwLock<ByNode>,
}

/// Where one pod runs and as whom, as last placed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    node: String,
    identity: Identity,
}

/// The pipeline's side: every enrolled, scheduled pod's placement.
#[derive(Debug, Default)]
pub(super) struct Placements {
    pods: HashMap<ObjectKey, Placement>,
    /// Nodes seen on any pod (enrolled or not): each gets a bootstrap token.
    nodes: BTreeSet<String>,
}

// === impl WorkloadNodes ===

impl WorkloadNodes {
    /// The nodes with at least one enrolled workload, sorted; for `/debug`.
    pub fn nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.read().keys().cloned().collect();
        nodes.sort();
        nodes
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, ByNode> {
        // Writers update one counter at a time; a panic between two updates
        // leaves counts that are each still a real pod's, so a poisoned lock
        // is still safe to read.
        self.by_node.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl NodeDirectory for WorkloadNodes {
    fn has_identity_on_node(&self, node: &str, identity: &Identity) -> bool {
        self.read()
            .get(node)
            .is_some_and(|ids| ids.get(identity).is_some_and(|n| *n > 0))
    }
}

// === impl Placements ===

impl Placements {
    /// Re-places the pods that `changed` may affect; returns the nodes seen
    /// for the first time.
    pub(super) fn update(
        &mut self,
        index: &Index,
        trust_domain: &str,
        changed: &BTreeSet<ObjectKey>,
        shared: &WorkloadNodes,
    ) -> Vec<String> {
        let mut pods: BTreeSet<ObjectKey> = BTreeSet::new();
        for key in changed {
            match key.kind {
                ObjectKind::Pod => {
                    pods.insert(key.clone());
                }
                ObjectKind::Namespace => {
                    pods.extend(index.keys_of(ObjectKind::Pod, Some(&key.name)).cloned());
                    // Pods that the index no longer has are in `changed`
                    // themselves; those still placed here are re-checked.
                    pods.extend(
                        self.pods
                            .keys()
                            .filter(|pod| pod.namespace == key.name)
                            .cloned(),
                    );
                }
                // A Gateway makes its labelled pods waypoints, or no more.
                ObjectKind::Gateway => pods.extend(
                    index
                        .pods(Some(&key.namespace))
                        .filter(|pod| {
                            pod.metadata
                                .labels
                                .as_ref()
                                .and_then(|labels| labels.get(GATEWAY_NAME_LABEL))
                                .is_some_and(|gateway| *gateway == key.name)
                        })
                        .filter_map(|pod| pod.metadata.name.as_deref())
                        .map(|name| ObjectKey::new(ObjectKind::Pod, &key.namespace, name)),
                ),
                _ => {}
            }
        }
        if pods.is_empty() {
            return Vec::new();
        }

        let mut new_nodes = Vec::new();
        let mut by_node = shared
            .by_node
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for key in pods {
            let placement = self.place(index, trust_domain, &key, &mut new_nodes);
            let previous = match placement {
                Some(placement) => {
                    if self.pods.get(&key) == Some(&placement) {
                        continue;
                    }
                    let counts = by_node.entry(placement.node.clone()).or_default();
                    *counts.entry(placement.identity.clone()).or_default() += 1;
                    self.pods.insert(key, placement)
                }
                None => self.pods.remove(&key),
            };
            if let Some(previous) = previous {
                unplace(&mut by_node, &previous);
            }
        }
        new_nodes
    }

    /// Where `key` runs as whom, if it is an enrolled pod on a node.
    fn place(
        &mut self,
        index: &Index,
        trust_domain: &str,
        key: &ObjectKey,
        new_nodes: &mut Vec<String>,
    ) -> Option<Placement> {
        let pod = index.pod(&key.namespace, &key.name)?;
        let spec = pod.spec.as_ref()?;
        let node = spec.node_name.as_deref().filter(|n| !n.is_empty())?;
        if self.nodes.insert(node.to_owned()) {
            new_nodes.push(node.to_owned());
        }
        if !is_enrolled(pod, index.namespace(&key.namespace)) && !is_waypoint_instance(index, pod) {
            return None;
        }
        // Same default as the translation's workload service account.
        let sa = spec
            .service_account_name
            .as_deref()
            .filter(|sa| !sa.is_empty())
            .unwrap_or("default");
        match Identity::new(trust_domain, &key.namespace, sa) {
            Ok(identity) => Some(Placement {
                node: node.to_owned(),
                identity,
            }),
            Err(error) => {
                warn!(pod = %key, %error, "pod has no valid SPIFFE identity; the CA will not sign for it");
                None
            }
        }
    }
}

fn unplace(by_node: &mut ByNode, placement: &Placement) {
    if let Some(counts) = by_node.get_mut(&placement.node) {
        if let Some(count) = counts.get_mut(&placement.identity) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&placement.identity);
            }
        }
        if counts.is_empty() {
            by_node.remove(&placement.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: a1, namespace: apps}
spec: {nodeName: node-a, serviceAccountName: sa-a, containers: []}
---
apiVersion: v1
kind: Pod
metadata: {name: a2, namespace: apps}
spec: {nodeName: node-a, serviceAccountName: sa-a, containers: []}
---
apiVersion: v1
kind: Pod
metadata: {name: b1, namespace: apps}
spec: {nodeName: node-b, containers: []}
";

    fn id(sa: &str) -> Identity {
        Identity::new("cluster.local", "apps", sa).unwrap()
    }

    fn all_keys(index: &Index) -> BTreeSet<ObjectKey> {
        index.objects().map(|o| o.key()).collect()
    }

    #[test]
    fn identities_follow_pods_and_namespace_enrollment() {
        let mut index = Index::from_yaml(YAML).unwrap();
        let shared = WorkloadNodes::default();
        let mut placements = Placements::default();
        let new = placements.update(&index, "cluster.local", &all_keys(&index), &shared);
        assert_eq!(new, vec!["node-a".to_string(), "node-b".to_string()]);
        assert!(shared.has_identity_on_node("node-a", &id("sa-a")));
        assert!(shared.has_identity_on_node("node-b", &id("default")));
        assert!(!shared.has_identity_on_node("node-b", &id("sa-a")));

        // One of two replicas goes: the identity stays on the node.
        let a1 = ObjectKey::new(ObjectKind::Pod, "apps", "a1");
        index.remove(&a1);
        placements.update(&index, "cluster.local", &BTreeSet::from([a1]), &shared);
        assert!(shared.has_identity_on_node("node-a", &id("sa-a")));

        // The namespace leaves the mesh: nothing may be signed any more.
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n";
        let (key, _) = index.upsert(crate::model::parse_documents(ns).remove(0).unwrap());
        placements.update(&index, "cluster.local", &BTreeSet::from([key]), &shared);
        assert!(!shared.has_identity_on_node("node-a", &id("sa-a")));
        assert!(shared.nodes().is_empty());
    }
    #[test]
    fn a_waypoint_pod_out_of_capture_is_placed_once_its_gateway_exists() {
        const PODS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: Pod
metadata:
  name: wp-0
  namespace: apps
  labels: {gateway.networking.k8s.io/gateway-name: wp, istio.io/dataplane-mode: none}
spec: {nodeName: node-a, serviceAccountName: wp, containers: []}
---
apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: apps, labels: {gateway.networking.k8s.io/gateway-name: other}}
spec: {nodeName: node-a, serviceAccountName: plain, containers: []}
";
        const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: wp, namespace: apps}\nspec: {gatewayClassName: istio-waypoint}\n";
        const NOT_A_WAYPOINT: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: other, namespace: apps}\nspec: {gatewayClassName: istio}\n";
        let mut index = Index::from_yaml(PODS).unwrap();
        let shared = WorkloadNodes::default();
        let mut placements = Placements::default();
        placements.update(&index, "cluster.local", &all_keys(&index), &shared);
        // Not enrolled, and no Gateway yet: nothing may be signed.
        assert!(!shared.has_identity_on_node("node-a", &id("wp")));

        let mut changed = BTreeSet::new();
        for yaml in [GATEWAY, NOT_A_WAYPOINT] {
            let (key, _) = index.upsert(crate::model::parse_documents(yaml).remove(0).unwrap());
            changed.insert(key);
        }
        placements.update(&index, "cluster.local", &changed, &shared);
        assert!(shared.has_identity_on_node("node-a", &id("wp")));
        // Only on its own node, and only for a waypoint Gateway's pods.
        assert!(!shared.has_identity_on_node("node-b", &id("wp")));
        assert!(!shared.has_identity_on_node("node-a", &id("plain")));

        let gateway = ObjectKey::new(ObjectKind::Gateway, "apps", "wp");
        index.remove(&gateway);
        placements.update(&index, "cluster.local", &BTreeSet::from([gateway]), &shared);
        assert!(!shared.has_identity_on_node("node-a", &id("wp")));
    }
}

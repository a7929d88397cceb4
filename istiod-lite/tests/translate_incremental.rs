//! Incremental translation agrees with full translation: after any change,
//! applying the delta of the affected resources to the previous full
//! output gives exactly the new full output.

// Helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use istiod_lite::model::{ObjectKey, ObjectKind, parse_documents};
use istiod_lite::translate::{
    Index, MeshConfig, Target, Translated, affected, translate_affected, translate_all,
};

fn fixture_index() -> Index {
    let mut yaml = String::new();
    for name in ["translate_mesh.yaml", "translate_policies.yaml"] {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        yaml.push_str(&std::fs::read_to_string(path).unwrap());
        yaml.push_str("\n---\n");
    }
    Index::from_yaml(&yaml).unwrap()
}

enum Change {
    Upsert(&'static str),
    Remove(ObjectKind, &'static str, &'static str),
}

/// Applies one change and checks delta-on-previous == full-on-new.
fn check(index: &mut Index, previous: &mut Translated, change: Change) {
    let config = MeshConfig::default();
    let mut changed = BTreeSet::new();
    match change {
        Change::Upsert(yaml) => {
            for object in parse_documents(yaml) {
                changed.insert(index.upsert(object.unwrap()).0);
            }
        }
        Change::Remove(kind, ns, name) => {
            let key = ObjectKey::new(kind, ns, name);
            assert!(index.remove(&key).is_some(), "{key} missing");
            changed.insert(key);
        }
    }
    let delta = translate_affected(index, &config, &changed);
    let full = translate_all(index, &config);
    previous.apply(&delta);
    assert_eq!(*previous, full, "after changing {changed:?}");
}

#[test]
fn incremental_equals_full_across_changes() {
    let config = MeshConfig::default();
    let mut index = fixture_index();
    let mut out = translate_all(&index, &config);
    let changes = [
        // Namespace labels: enroll `legacy` and give it a waypoint.
        Change::Upsert(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: legacy\n  labels:\n    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: all-waypoint\n",
        ),
        // Pod relabelled: leaves `reviews`, joins `ratings`.
        Change::Upsert(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: reviews-v1-5d8f9c-abcde\n  namespace: apps\n  labels:\n    app.kubernetes.io/name: ratings\nspec:\n  containers: []\nstatus:\n  podIP: 10.244.1.5\n",
        ),
        // Service selector changed.
        Change::Upsert(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: legacy\n  namespace: legacy\nspec:\n  clusterIP: 10.96.2.1\n  selector:\n    istio.io/use-waypoint: ghost\n  ports:\n  - port: 80\n",
        ),
        Change::Remove(ObjectKind::Service, "apps", "reviews"),
        // The waypoint goes away and comes back with a new address.
        Change::Remove(ObjectKind::Gateway, "apps", "waypoint"),
        Change::Upsert(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: waypoint\n  namespace: apps\nspec:\n  gatewayClassName: istio-waypoint\n",
        ),
        Change::Upsert(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: waypoint\n  namespace: apps\nspec:\n  clusterIP: 10.96.9.9\n",
        ),
        // Policy selector moved to another workload.
        Change::Upsert(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-from-sleep\n  namespace: apps\nspec:\n  selector:\n    matchLabels:\n      app: details\n",
        ),
        Change::Remove(
            ObjectKind::AuthorizationPolicy,
            "istio-system",
            "root-selector",
        ),
        Change::Remove(ObjectKind::PeerAuthentication, "apps", "details-permissive"),
        Change::Remove(ObjectKind::PeerAuthentication, "apps", "strict"),
        // Mesh-wide STRICT from the root namespace.
        Change::Upsert(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: mesh\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n",
        ),
        Change::Upsert(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: new-pod\n  namespace: legacy\n  labels:\n    app: legacy\nspec:\n  containers: []\nstatus:\n  podIP: 10.244.2.99\n",
        ),
        Change::Remove(ObjectKind::Pod, "apps", "ratings"),
        Change::Remove(ObjectKind::Namespace, "", "apps"),
    ];
    for change in changes {
        check(&mut index, &mut out, change);
    }
}

#[test]
fn pod_change_touches_only_its_workload() {
    let index = fixture_index();
    let changed = BTreeSet::from([ObjectKey::new(ObjectKind::Pod, "apps", "ratings")]);
    let targets = affected(&index, &MeshConfig::default(), &changed);
    assert_eq!(
        targets,
        BTreeSet::from([Target::Workload {
            namespace: "apps".into(),
            name: "ratings".into()
        }])
    );
    let delta = translate_affected(&index, &MeshConfig::default(), &changed);
    assert_eq!(delta.addresses.upserts.len(), 1);
    assert!(delta.authorizations.is_empty());
}

#[test]
fn removed_objects_become_removals() {
    let mut index = fixture_index();
    let key = ObjectKey::new(ObjectKind::AuthorizationPolicy, "apps", "deny-foreign");
    index.remove(&key);
    let delta = translate_affected(&index, &MeshConfig::default(), &BTreeSet::from([key]));
    assert!(delta.authorizations.removals.contains("apps/deny-foreign"));
}

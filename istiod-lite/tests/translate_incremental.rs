//! Incremental translation agrees with full translation: after any batch of
//! changes, applying the delta of the affected resources to the previous
//! full output gives exactly the new full output. Each case also checks that
//! its change really alters the resources a too-small affected set would
//! miss, so the oracle cannot pass vacuously; and the affected set of a
//! policy change in a crowded namespace stays small.

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

/// Applies one batch of changes, checks delta-on-previous == full-on-new,
/// and returns the names of the resources whose content or diagnostics
/// changed.
fn check(index: &mut Index, previous: &mut Translated, batch: Vec<Change>) -> BTreeSet<String> {
    let config = MeshConfig::default();
    for change in batch {
        match change {
            Change::Upsert(yaml) => {
                for object in parse_documents(yaml) {
                    index.upsert(object.unwrap());
                }
            }
            Change::Remove(kind, ns, name) => {
                let key = ObjectKey::new(kind, ns, name);
                assert!(index.remove(&key), "{key} missing");
            }
        }
    }
    let changes = index.take_changes();
    let delta = translate_affected(index, &config, &changes);
    let full = translate_all(index, &config);
    let differ = differences(previous, &full);
    previous.apply(&delta);
    assert_eq!(*previous, full, "after changing {changes:?}");
    differ
}

/// Names whose resource or diagnostics differ between `a` and `b`.
fn differences(a: &Translated, b: &Translated) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for name in a.addresses.keys().chain(b.addresses.keys()) {
        if a.addresses.get(name) != b.addresses.get(name) {
            names.insert(name.clone());
        }
    }
    for name in a.authorizations.keys().chain(b.authorizations.keys()) {
        if a.authorizations.get(name) != b.authorizations.get(name) {
            names.insert(name.clone());
        }
    }
    let (wa, wb) = (&a.waypoint, &b.waypoint);
    for name in wa.routes.keys().chain(wb.routes.keys()) {
        if wa.routes.get(name) != wb.routes.get(name) {
            names.insert(format!("routes {name}"));
        }
    }
    for name in wa.authorizations.keys().chain(wb.authorizations.keys()) {
        if wa.authorizations.get(name) != wb.authorizations.get(name) {
            names.insert(format!("authorization {name}"));
        }
    }
    for name in wa.faults.keys().chain(wb.faults.keys()) {
        if wa.faults.get(name) != wb.faults.get(name) {
            names.insert(format!("faults {name}"));
        }
    }
    let a_diags: BTreeSet<_> = a.diagnostics.iter().collect();
    let b_diags: BTreeSet<_> = b.diagnostics.iter().collect();
    names.extend(
        a_diags
            .symmetric_difference(&b_diags)
            .map(|d| d.resource.clone()),
    );
    names
}

fn uid(ns: &str, name: &str) -> String {
    format!("Kubernetes//Pod/{ns}/{name}")
}

/// Runs `batches` in order from the fixture, asserting each changes at
/// least the names given with it.
fn run(batches: Vec<(Vec<Change>, Vec<String>)>) {
    let mut index = fixture_index();
    let mut out = translate_all(&index, &MeshConfig::default());
    for (batch, must_change) in batches {
        let changed = check(&mut index, &mut out, batch);
        for name in must_change {
            assert!(changed.contains(&name), "{name} unchanged: {changed:?}");
        }
    }
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
        check(&mut index, &mut out, vec![change]);
    }
}

const REVIEWS_SELECTS_DETAILS: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: apps\nspec:\n  clusterIP: 10.96.1.1\n  selector:\n    app: details\n  ports:\n  - port: 9080\n";
const REVIEWS_SELECTS_PRODUCTPAGE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: apps\nspec:\n  clusterIP: 10.96.1.1\n  selector:\n    app: productpage\n  ports:\n  - port: 9080\n";
const REVIEWS_SELECTS_REVIEWS: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: reviews\n  namespace: apps\nspec:\n  clusterIP: 10.96.1.1\n  selector:\n    app: reviews\n  ports:\n  - port: 9080\n";

#[test]
fn service_selector_move_updates_the_pods_it_left_and_joined() {
    let reviews = uid("apps", "reviews-v1-5d8f9c-abcde");
    run(vec![
        // From the reviews pod to the details pod.
        (
            vec![Change::Upsert(REVIEWS_SELECTS_DETAILS)],
            vec![reviews.clone(), uid("apps", "details")],
        ),
        // Back, through productpage, in one batch: the version last
        // translated (details), not the one in between, is what was left.
        (
            vec![
                Change::Upsert(REVIEWS_SELECTS_PRODUCTPAGE),
                Change::Upsert(REVIEWS_SELECTS_REVIEWS),
            ],
            vec![reviews.clone(), uid("apps", "details")],
        ),
        // Removed: the pod it selected loses it.
        (
            vec![Change::Remove(ObjectKind::Service, "apps", "reviews")],
            vec![reviews],
        ),
    ]);
}

#[test]
fn policy_selector_change_updates_old_and_new_workloads() {
    const ALLOW: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-from-sleep\n  namespace: apps\nspec:\n  selector:\n    matchLabels:\n      app: details\n";
    const ROOT: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: root-selector\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      app: legacy\n";
    const NO_SELECTOR: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-from-sleep\n  namespace: apps\nspec:\n  rules:\n  - {}\n";
    const AUDIT: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: l7-deny\n  namespace: apps\nspec:\n  selector:\n    matchLabels:\n      app: productpage\n  action: AUDIT\n";
    run(vec![
        // productpage -> details in the same namespace.
        (
            vec![Change::Upsert(ALLOW)],
            vec![uid("apps", "productpage"), uid("apps", "details")],
        ),
        // A root-namespace selector reaches another namespace.
        (
            vec![Change::Upsert(ROOT)],
            vec![uid("apps", "details"), uid("legacy", "legacy-app")],
        ),
        // Selector dropped: the workload it selected no longer names it.
        (
            vec![Change::Upsert(NO_SELECTOR)],
            vec![uid("apps", "details")],
        ),
        // Same selector, but no longer sent to ztunnel.
        (
            vec![Change::Upsert(AUDIT)],
            vec![uid("apps", "productpage")],
        ),
    ]);
}

#[test]
fn namespace_label_flip_updates_its_pods_and_services() {
    const ENROLLED: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: legacy\n  labels:\n    istio.io/dataplane-mode: ambient\n";
    const WAYPOINTED: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n  labels:\n    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: waypoint\n";
    let app = uid("legacy", "legacy-app");
    run(vec![
        // Enrollment: the tunnel protocol of its pods.
        (vec![Change::Upsert(ENROLLED)], vec![app.clone()]),
        // A namespace waypoint: its services.
        (
            vec![Change::Upsert(WAYPOINTED)],
            vec!["apps/reviews.apps.svc.cluster.local".into()],
        ),
        (
            vec![Change::Remove(ObjectKind::Namespace, "", "legacy")],
            vec![app],
        ),
    ]);
}

#[test]
fn peer_authentication_added_and_removed() {
    const LEGACY_STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\n  namespace: legacy\nspec:\n  mtls:\n    mode: STRICT\n";
    const OPTED_IN_STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: opted-in\n  namespace: legacy\nspec:\n  selector:\n    matchLabels:\n      istio.io/dataplane-mode: ambient\n  mtls:\n    mode: STRICT\n";
    const MESH_STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: mesh\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n";
    let (app, opted_in) = (uid("legacy", "legacy-app"), uid("legacy", "opted-in"));
    let strict = "istio-system/istio_converted_static_strict".to_string();
    run(vec![
        // Namespace-wide: every pod of the namespace.
        (
            vec![Change::Upsert(LEGACY_STRICT)],
            vec![app.clone(), opted_in.clone()],
        ),
        (
            vec![Change::Remove(
                ObjectKind::PeerAuthentication,
                "legacy",
                "strict",
            )],
            vec![app.clone(), opted_in.clone()],
        ),
        // Workload-level: only the pods it selects.
        (
            vec![Change::Upsert(OPTED_IN_STRICT)],
            vec![opted_in.clone()],
        ),
        (
            vec![Change::Remove(
                ObjectKind::PeerAuthentication,
                "legacy",
                "opted-in",
            )],
            vec![opted_in],
        ),
        // The last ones go: the static policy goes with them.
        (
            vec![
                Change::Remove(ObjectKind::PeerAuthentication, "apps", "strict"),
                Change::Remove(ObjectKind::PeerAuthentication, "apps", "details-permissive"),
            ],
            vec![strict.clone(), uid("apps", "productpage")],
        ),
        // Mesh-wide from the root namespace: every pod, and the static
        // policy again.
        (
            vec![Change::Upsert(MESH_STRICT)],
            vec![strict, app, uid("apps", "details")],
        ),
    ]);
}

#[test]
fn waypoint_added_updates_the_workloads_and_services_using_it() {
    const GHOST: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: ghost\n  namespace: legacy\n  labels:\n    istio.io/waypoint-for: all\nspec:\n  gatewayClassName: istio-waypoint\n";
    const GHOST_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: ghost\n  namespace: legacy\nspec:\n  clusterIP: 10.96.0.30\n  ports:\n  - port: 15008\n";
    const MISSING: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: missing-waypoint\n  namespace: legacy\nspec:\n  gatewayClassName: istio-waypoint\n";
    const MISSING_SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: missing-waypoint\n  namespace: legacy\nspec:\n  clusterIP: 10.96.0.31\n";
    let ghost_user = uid("legacy", "ghost-user");
    let legacy_service = "legacy/legacy.legacy.svc.cluster.local".to_string();
    run(vec![
        // The Gateway alone: "does not exist" becomes "has no address yet".
        (vec![Change::Upsert(GHOST)], vec![ghost_user.clone()]),
        // Its Service: the workload gets the address.
        (vec![Change::Upsert(GHOST_SERVICE)], vec![ghost_user]),
        // A service's waypoint, Gateway and Service in one batch.
        (
            vec![Change::Upsert(MISSING), Change::Upsert(MISSING_SERVICE)],
            vec![legacy_service.clone()],
        ),
        (
            vec![Change::Remove(
                ObjectKind::Gateway,
                "legacy",
                "missing-waypoint",
            )],
            vec![legacy_service],
        ),
    ]);
}

#[test]
fn waypoint_resources_follow_routes_policies_and_the_waypoint_itself() {
    const ROUTE: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: reviews\n  namespace: shop\nspec:\n  parentRefs:\n  - group: \"\"\n    kind: Service\n    name: reviews\n    port: 9080\n  rules:\n  - backendRefs:\n    - name: ratings\n      port: 8080\n";
    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: reviews-1\n  namespace: shop\n  labels:\n    app: reviews\nspec:\n  serviceAccountName: reviews\n  nodeName: node-a\nstatus:\n  podIP: 10.1.0.5\n  phase: Running\n";
    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: waypoint\n  namespace: shop\nspec:\n  gatewayClassName: istio-waypoint\n";
    let path = format!(
        "{}/tests/fixtures/waypoint_authorization.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut index = Index::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = translate_all(&index, &MeshConfig::default());
    let reviews = "reviews.shop.svc.cluster.local";
    assert!(out.waypoint.authorizations.contains_key(reviews));

    let changed = check(&mut index, &mut out, vec![Change::Upsert(ROUTE)]);
    assert!(
        changed.contains(&format!("routes {reviews}:9080")),
        "{changed:?}"
    );

    // Without its Gateway no service has a waypoint, so no policy reaches one.
    let changed = check(
        &mut index,
        &mut out,
        vec![Change::Remove(ObjectKind::Gateway, "shop", "waypoint")],
    );
    assert!(
        changed.contains(&format!("authorization {reviews}")),
        "{changed:?}"
    );
    assert!(out.waypoint.authorizations.is_empty());
    let changed = check(&mut index, &mut out, vec![Change::Upsert(GATEWAY)]);
    assert!(
        changed.contains(&format!("authorization {reviews}")),
        "{changed:?}"
    );

    // A pod is no input of the waypoint sets: they are not re-translated.
    for object in parse_documents(POD) {
        index.upsert(object.unwrap());
    }
    let changes = index.take_changes();
    let delta = translate_affected(&index, &MeshConfig::default(), &changes);
    assert!(delta.waypoint.is_none());
    out.apply(&delta);
    assert_eq!(out, translate_all(&index, &MeshConfig::default()));
}

#[test]
fn waypoint_faults_follow_virtual_services_and_the_waypoint() {
    const FAULTS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ratings-faults\n  namespace: shop\n  creationTimestamp: \"2026-03-01T00:00:00Z\"\nspec:\n  hosts: [ratings]\n  http:\n  - fault:\n      abort:\n        httpStatus: 503\n        percentage: {value: 30}\n";
    const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: waypoint\n  namespace: shop\nspec:\n  gatewayClassName: istio-waypoint\n";
    let path = format!(
        "{}/tests/fixtures/waypoint_faults.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut index = Index::from_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = translate_all(&index, &MeshConfig::default());
    let ratings = "ratings.shop.svc.cluster.local";

    // A newer VirtualService for ratings is ignored, with a diagnostic.
    let changed = check(&mut index, &mut out, vec![Change::Upsert(FAULTS)]);
    assert!(changed.contains("shop/ratings-faults"), "{changed:?}");
    // Without the one that held ratings, the new one takes over.
    let changed = check(
        &mut index,
        &mut out,
        vec![Change::Remove(ObjectKind::VirtualService, "shop", "late")],
    );
    assert!(
        changed.contains(&format!("faults {ratings}")),
        "{changed:?}"
    );
    assert_eq!(
        out.waypoint.faults[ratings].rules[0].source,
        "shop/ratings-faults http 0"
    );

    // Without its Gateway nothing injects faults: no resource at all.
    check(
        &mut index,
        &mut out,
        vec![Change::Remove(ObjectKind::Gateway, "shop", "waypoint")],
    );
    assert!(out.waypoint.faults.is_empty());
    let changed = check(&mut index, &mut out, vec![Change::Upsert(GATEWAY)]);
    assert!(
        changed.contains(&format!("faults {ratings}")),
        "{changed:?}"
    );
}

/// A namespace of 500 pods, ten per `app` label, and one policy.
fn crowded_index() -> Index {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: big\n  labels:\n    istio.io/dataplane-mode: ambient\n",
    );
    for i in 0..500 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{i}\n  namespace: big\n  labels:\n    app: app-{}\nstatus:\n  podIP: 10.1.{}.{}\n",
            i % 50,
            i / 250,
            i % 250 + 1
        ));
    }
    yaml.push_str(&policy_yaml("app-7"));
    Index::from_yaml(&yaml).unwrap()
}

fn policy_yaml(app: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow\n  namespace: big\nspec:\n  selector:\n    matchLabels:\n      app: {app}\n  rules:\n  - {{}}\n"
    )
}

fn upsert(index: &mut Index, yaml: &str) {
    for object in parse_documents(yaml) {
        index.upsert(object.unwrap());
    }
}

fn workloads_of(apps: &[usize]) -> BTreeSet<Target> {
    (0..500)
        .filter(|i| apps.contains(&(i % 50)))
        .map(|i| Target::Workload {
            namespace: "big".into(),
            name: format!("pod-{i}"),
        })
        .collect()
}

#[test]
fn policy_change_in_a_crowded_namespace_affects_only_what_it_selects() {
    let config = MeshConfig::default();
    let mut index = crowded_index();
    let policy = Target::Policy {
        namespace: "big".into(),
        name: "allow".into(),
    };

    // Selector moved from app-7 to app-8: the policy and those 20 pods.
    upsert(&mut index, &policy_yaml("app-8"));
    let changes = index.take_changes();
    let targets = affected(&index, &config, &changes);
    let mut expected = workloads_of(&[7, 8]);
    expected.insert(policy.clone());
    assert_eq!(targets, expected);

    // A namespace-scoped policy is applied by scope, named by no workload.
    upsert(
        &mut index,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny\n  namespace: big\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [other]\n",
    );
    let changes = index.take_changes();
    let targets = affected(&index, &config, &changes);
    let deny = Target::Policy {
        namespace: "big".into(),
        name: "deny".into(),
    };
    assert_eq!(targets, BTreeSet::from([deny]));

    // The same object again (a relist): nothing.
    upsert(&mut index, &policy_yaml("app-8"));
    let changes = index.take_changes();
    assert_eq!(changes.len(), 1);
    assert!(affected(&index, &config, &changes).is_empty());

    // A workload-level PeerAuthentication: the static policy and its pods.
    upsert(
        &mut index,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\n  namespace: big\nspec:\n  selector:\n    matchLabels:\n      app: app-3\n  mtls:\n    mode: STRICT\n",
    );
    let changes = index.take_changes();
    let targets = affected(&index, &config, &changes);
    let mut expected = workloads_of(&[3]);
    expected.insert(Target::StaticStrict);
    assert_eq!(targets, expected);
}

#[test]
fn pod_change_touches_only_its_workload() {
    let mut index = fixture_index();
    upsert(
        &mut index,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ratings\n  namespace: apps\nstatus:\n  podIP: 10.244.2.66\n",
    );
    let changes = index.take_changes();
    let targets = affected(&index, &MeshConfig::default(), &changes);
    assert_eq!(
        targets,
        BTreeSet::from([Target::Workload {
            namespace: "apps".into(),
            name: "ratings".into()
        }])
    );
    let delta = translate_affected(&index, &MeshConfig::default(), &changes);
    assert_eq!(delta.addresses.upserts.len(), 1);
    assert!(delta.authorizations.is_empty());
}

#[test]
fn removed_objects_become_removals() {
    let mut index = fixture_index();
    let key = ObjectKey::new(ObjectKind::AuthorizationPolicy, "apps", "deny-foreign");
    assert!(index.remove(&key));
    let changes = index.take_changes();
    let delta = translate_affected(&index, &MeshConfig::default(), &changes);
    assert!(delta.authorizations.removals.contains("apps/deny-foreign"));
}

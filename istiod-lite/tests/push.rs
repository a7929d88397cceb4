//! Push, end to end: source events into a real istiod-lite, delta ADS out
//! over TLS on loopback to the generated client. Nothing before `Synced`;
//! then the full state; then each kind of change as a delta; and a burst
//! debounced into a handful of responses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "server_support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use istiod_lite::model::{ObjectKey, ObjectKind};
use istiod_lite::sources::{Change, SourceEvent};
use istiod_lite::translate::{MeshConfig, pod_uid};
use prost::Message;
use proto::discovery::DeltaDiscoveryResponse;
use proto::workload::{Address, address};
use proto::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use support::{RawStream, Running};

const MESH: &str = "
apiVersion: v1
kind: Namespace
metadata:
  name: apps
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec:
  clusterIP: 10.96.0.20
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: apps, labels: {app: web}}
spec: {nodeName: node-a, serviceAccountName: web, containers: []}
status: {podIP: 10.244.0.5}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: apps}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from: [{source: {namespaces: [apps]}}]
";

const SERVICE: &str = "apps/web.apps.svc.cluster.local";
const POLICY: &str = "apps/allow-web";

fn pod(name: &str, ip: &str, app: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: apps, labels: {{app: {app}}}}}\n\
         spec: {{nodeName: node-a, serviceAccountName: web, containers: []}}\nstatus: {{podIP: {ip}}}\n"
    )
}

fn uid(name: &str) -> String {
    pod_uid(&MeshConfig::default(), "apps", name)
}

fn names(response: &DeltaDiscoveryResponse) -> BTreeMap<String, String> {
    response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

/// A stream subscribed to `type_url` alone.
async fn subscribe(running: &Running, type_url: &str) -> RawStream {
    let stream = RawStream::open(running.channel(), &running.xds_token())
        .await
        .unwrap();
    stream.subscribe(type_url).await;
    stream
}

/// A server with `MESH` synced, and one stream per type past its initial
/// response.
async fn synced_mesh(debounce: Duration) -> (Running, RawStream, RawStream) {
    let running = Running::start(debounce, Duration::from_secs(1)).await;
    running.upsert(MESH).await;
    running.synced().await;
    let mut addresses = subscribe(&running, ADDRESS_TYPE_URL).await;
    let mut authorizations = subscribe(&running, AUTHORIZATION_TYPE_URL).await;
    let initial = addresses.recv().await;
    assert!(names(&initial).contains_key(&uid("web-1")));
    let initial = authorizations.recv().await;
    assert!(names(&initial).contains_key(POLICY));
    (running, addresses, authorizations)
}

#[tokio::test]
async fn nothing_is_pushed_before_synced_then_the_full_state_once() {
    let running = Running::start(Duration::from_millis(20), Duration::from_millis(200)).await;
    let open = |channel, token: String| async move { RawStream::open(channel, &token).await };
    let addresses = tokio::spawn(open(running.channel(), running.xds_token()));
    let authorizations = tokio::spawn(open(running.channel(), running.xds_token()));
    running.upsert(MESH).await;

    // The streams are held until the first full push: no response, not even
    // an empty one that would tell a reconnecting proxy to drop its config.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !addresses.is_finished(),
        "a stream was answered before Synced"
    );
    assert!(!authorizations.is_finished());
    assert!(!running.pipeline.is_ready());
    assert_eq!(running.ads.stats().snapshot().pushes, 0);

    running.synced().await;
    let mut addresses = addresses.await.unwrap().unwrap();
    let mut authorizations = authorizations.await.unwrap().unwrap();
    addresses.subscribe(ADDRESS_TYPE_URL).await;
    authorizations.subscribe(AUTHORIZATION_TYPE_URL).await;

    let initial = addresses.recv().await;
    assert_eq!(initial.type_url, ADDRESS_TYPE_URL);
    let got: BTreeSet<String> = names(&initial).into_keys().collect();
    assert_eq!(got, BTreeSet::from([uid("web-1"), SERVICE.to_string()]));
    let workload = initial
        .resources
        .iter()
        .find(|r| r.name == uid("web-1"))
        .unwrap();
    let body = workload.resource.as_ref().unwrap();
    assert_eq!(body.type_url, ADDRESS_TYPE_URL);
    match Address::decode(body.value.as_slice()).unwrap().r#type {
        Some(address::Type::Workload(w)) => {
            assert_eq!(w.node, "node-a");
            assert_eq!(w.service_account, "web");
            assert_eq!(w.addresses, vec![vec![10, 244, 0, 5]]);
        }
        other => panic!("expected a workload, got {other:?}"),
    }
    let initial = authorizations.recv().await;
    assert_eq!(
        names(&initial).into_keys().collect::<Vec<_>>(),
        vec![POLICY]
    );

    // Once, not again: nothing more arrives without a change.
    assert!(
        addresses
            .try_recv(Duration::from_millis(300))
            .await
            .is_none()
    );
    running.shutdown().await;
}

#[tokio::test]
async fn pod_add_update_remove_and_policy_change_are_pushed_as_deltas() {
    let (running, mut addresses, mut authorizations) = synced_mesh(Duration::from_millis(20)).await;

    // Added pod: an upsert of its workload.
    running.upsert(&pod("web-2", "10.244.0.6", "web")).await;
    let added = addresses.recv().await;
    let versions = names(&added);
    assert!(versions.contains_key(&uid("web-2")), "{versions:?}");
    assert!(added.removed_resources.is_empty());
    let first_version = versions[&uid("web-2")].clone();

    // Updated pod: the same name with a new version.
    running.upsert(&pod("web-2", "10.244.0.7", "web")).await;
    let updated = addresses.recv().await;
    let version = names(&updated).get(&uid("web-2")).cloned();
    assert!(version.is_some_and(|v| v != first_version));

    // Removed pod: a removal.
    running
        .send(vec![Change::Remove(ObjectKey::new(
            ObjectKind::Pod,
            "apps",
            "web-2",
        ))])
        .await;
    let removed = addresses.recv().await;
    assert_eq!(removed.removed_resources, vec![uid("web-2")]);
    assert!(!names(&removed).contains_key(&uid("web-2")));

    // Policy change: an upsert of that authorization only.
    running
        .upsert(&MESH.replace("namespaces: [apps]", "namespaces: [apps, other]"))
        .await;
    let policy = authorizations.recv().await;
    assert_eq!(names(&policy).into_keys().collect::<Vec<_>>(), vec![POLICY]);
    running.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_1000_pod_changes_is_a_handful_of_pushes() {
    let (running, mut addresses, _authorizations) = synced_mesh(Duration::from_millis(100)).await;
    let batches_before = running.pipeline.counts().batches;

    // 1,000 separate events, as a watch would deliver a rollout.
    let sent = std::time::Instant::now();
    for i in 0..1000 {
        let name = format!("burst-{i}");
        let ip = format!("10.245.{}.{}", i / 250, i % 250 + 1);
        let objects = support::objects(&pod(&name, &ip, "web"));
        let changes = objects.into_iter().map(Change::Upsert).collect();
        running
            .events
            .send(SourceEvent::Changes {
                origin: format!("burst-{i}"),
                changes,
            })
            .await
            .unwrap();
    }
    let burst = sent.elapsed();

    let mut received = BTreeSet::new();
    let mut responses = 0;
    while let Some(response) = addresses.try_recv(Duration::from_millis(1500)).await {
        responses += 1;
        received.extend(names(&response).into_keys());
    }
    let expected: BTreeSet<String> = (0..1000).map(|i| uid(&format!("burst-{i}"))).collect();
    assert!(
        expected.is_subset(&received),
        "{} of 1000 pods pushed",
        expected.intersection(&received).count()
    );
    assert!(
        (1..=5).contains(&responses),
        "{responses} responses for a burst sent in {burst:?}"
    );
    let batches = running.pipeline.counts().batches - batches_before;
    assert!(batches <= 5, "{batches} debounced batches");
    running.shutdown().await;
}

/// `MESH` with a waypoint for namespace `apps`, a route on `web` and a
/// policy bound to the waypoint.
const WAYPOINT_MESH: &str = "
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: apps}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: waypoint, namespace: apps}
spec: {clusterIP: 10.96.0.2, ports: [{port: 15008}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: apps}
spec:
  parentRefs: [{group: '', kind: Service, name: web, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    backendRefs: [{name: web, port: 80}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-reads, namespace: apps}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}]
  action: ALLOW
  rules:
  - to: [{operation: {methods: [GET]}}]
";

#[tokio::test]
async fn waypoint_routes_and_authorizations_are_pushed_and_follow_their_objects() {
    use proto::{WAYPOINT_AUTHORIZATION_TYPE_URL, WAYPOINT_ROUTES_TYPE_URL};
    const ROUTES: &str = "web.apps.svc.cluster.local:80";
    const HOST: &str = "web.apps.svc.cluster.local";
    let running = Running::start(Duration::from_millis(20), Duration::from_secs(1)).await;
    let mesh = MESH.replace(
        "labels: {istio.io/dataplane-mode: ambient}",
        "labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}",
    );
    running.upsert(&format!("{mesh}---{WAYPOINT_MESH}")).await;
    running.synced().await;
    let mut routes = subscribe(&running, WAYPOINT_ROUTES_TYPE_URL).await;
    let mut authorizations = subscribe(&running, WAYPOINT_AUTHORIZATION_TYPE_URL).await;

    let initial = routes.recv().await;
    assert_eq!(
        names(&initial).into_keys().collect::<Vec<_>>(),
        vec![ROUTES]
    );
    let body = initial.resources[0].resource.as_ref().unwrap();
    assert_eq!(body.type_url, WAYPOINT_ROUTES_TYPE_URL);
    let decoded = proto::waypoint::WaypointRoutes::decode(body.value.as_slice()).unwrap();
    assert_eq!(decoded.hostname, HOST);
    assert_eq!(decoded.routes[0].name, "web");
    let initial = authorizations.recv().await;
    assert_eq!(names(&initial).into_keys().collect::<Vec<_>>(), vec![HOST]);
    let first_version = names(&initial)[HOST].clone();

    // A pod is no input of the waypoint's config: nothing is pushed to it.
    running.upsert(&pod("web-2", "10.244.0.6", "web")).await;
    assert!(routes.try_recv(Duration::from_millis(300)).await.is_none());
    assert!(
        authorizations
            .try_recv(Duration::from_millis(100))
            .await
            .is_none()
    );

    // A policy change: the service's authorization, with a new version.
    running
        .upsert(&WAYPOINT_MESH.replace("methods: [GET]", "methods: [GET, HEAD]"))
        .await;
    let changed = authorizations.recv().await;
    let version = names(&changed).get(HOST).cloned();
    assert!(version.is_some_and(|v| v != first_version), "{changed:?}");

    // The route gone: a removal.
    running
        .send(vec![Change::Remove(ObjectKey::new(
            ObjectKind::HttpRoute,
            "apps",
            "web",
        ))])
        .await;
    let removed = routes.recv().await;
    assert_eq!(removed.removed_resources, vec![ROUTES]);

    // The policy gone: a removal too (no policy reaches the service).
    running
        .send(vec![Change::Remove(ObjectKey::new(
            ObjectKind::AuthorizationPolicy,
            "apps",
            "web-reads",
        ))])
        .await;
    let removed = authorizations.recv().await;
    assert_eq!(removed.removed_resources, vec![HOST]);
    running.shutdown().await;
}

const FAULTS: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-faults, namespace: apps}
spec:
  hosts: [web]
  http:
  - fault:
      abort: {httpStatus: 503, percentage: {value: 30}}
";

#[tokio::test]
async fn waypoint_faults_are_pushed_and_follow_their_virtual_service() {
    use proto::WAYPOINT_FAULTS_TYPE_URL;
    const HOST: &str = "web.apps.svc.cluster.local";
    let running = Running::start(Duration::from_millis(20), Duration::from_secs(1)).await;
    let mesh = MESH.replace(
        "labels: {istio.io/dataplane-mode: ambient}",
        "labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}",
    );
    running
        .upsert(&format!("{mesh}---{WAYPOINT_MESH}---\n{FAULTS}"))
        .await;
    running.synced().await;
    let mut faults = subscribe(&running, WAYPOINT_FAULTS_TYPE_URL).await;

    let initial = faults.recv().await;
    assert_eq!(names(&initial).into_keys().collect::<Vec<_>>(), vec![HOST]);
    let body = initial.resources[0].resource.as_ref().unwrap();
    assert_eq!(body.type_url, WAYPOINT_FAULTS_TYPE_URL);
    let decoded = proto::waypoint::WaypointFaults::decode(body.value.as_slice()).unwrap();
    // What is pushed is what the waypoint accepts.
    let converted = waypoint::fault::ServiceFaults::try_from(decoded.clone()).unwrap();
    assert_eq!(&*converted.hostname, HOST);
    let abort = decoded.rules[0]
        .fault
        .as_ref()
        .unwrap()
        .abort
        .as_ref()
        .unwrap();
    assert_eq!((abort.http_status, abort.percentage), (503, 30.0));
    let first_version = names(&initial)[HOST].clone();

    // A change of percentage: a new version of the one resource.
    running
        .upsert(&FAULTS.replace("value: 30", "value: 40"))
        .await;
    let changed = faults.recv().await;
    let version = names(&changed).get(HOST).cloned();
    assert!(version.is_some_and(|v| v != first_version), "{changed:?}");

    running
        .send(vec![Change::Remove(ObjectKey::new(
            ObjectKind::VirtualService,
            "apps",
            "web-faults",
        ))])
        .await;
    let removed = faults.recv().await;
    assert_eq!(removed.removed_resources, vec![HOST]);
    running.shutdown().await;
}

const BACKENDS: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: apps}
spec:
  host: web
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 3}
";

#[tokio::test]
async fn waypoint_backend_policies_are_pushed_and_follow_their_destination_rule() {
    use proto::WAYPOINT_BACKEND_POLICY_TYPE_URL;
    const HOST: &str = "web.apps.svc.cluster.local";
    let running = Running::start(Duration::from_millis(20), Duration::from_secs(1)).await;
    let mesh = MESH.replace(
        "labels: {istio.io/dataplane-mode: ambient}",
        "labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}",
    );
    running
        .upsert(&format!("{mesh}---{WAYPOINT_MESH}---\n{BACKENDS}"))
        .await;
    running.synced().await;
    let mut policies = subscribe(&running, WAYPOINT_BACKEND_POLICY_TYPE_URL).await;

    let initial = policies.recv().await;
    assert_eq!(names(&initial).into_keys().collect::<Vec<_>>(), vec![HOST]);
    let body = initial.resources[0].resource.as_ref().unwrap();
    let decoded = proto::waypoint::WaypointBackendPolicy::decode(body.value.as_slice()).unwrap();
    // What is pushed is what the waypoint accepts, defaults filled in.
    let converted = waypoint::balance::BackendPolicy::try_from(decoded).unwrap();
    assert_eq!(
        converted.load_balancer,
        waypoint::balance::LoadBalancer::RoundRobin
    );
    let outlier = converted.outlier.unwrap();
    assert_eq!(outlier.consecutive_5xx, Some(3));
    assert_eq!(outlier.base_ejection_time, Duration::from_secs(30));

    running
        .send(vec![Change::Remove(ObjectKey::new(
            ObjectKind::DestinationRule,
            "apps",
            "web",
        ))])
        .await;
    let removed = policies.recv().await;
    assert_eq!(removed.removed_resources, vec![HOST]);
    running.shutdown().await;
}

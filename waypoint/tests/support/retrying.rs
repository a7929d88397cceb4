//! A service with two endpoints behind a route that retries, for the retry
//! tests (HTTP and gRPC): the apps are the caller's, started first.

use prost::Message;
use proto::WAYPOINT_ROUTES_TYPE_URL;
use proto::waypoint as pb;
use waypoint::route::ServiceKey;

use super::{Mesh, NODE_B, eventually, ip, pod, vip};

/// The mesh plus service `<name>` in namespace `b` (VIP `.5`, port 80 named
/// `port_name`, to 8080) with two pods on node B at `.23` and `.24`
/// (labelled `app: <name>`), and a route that retries 503 three times with
/// a 1 ms backoff base. Returns once the waypoint knows both endpoints and
/// holds the route.
pub async fn retrying_service(net: u8, name: &str, port_name: &str) -> Mesh {
    let label = format!("app: {name}");
    let mut yaml = pod("b", &format!("{name}-1"), name, NODE_B, ip(net, 23), &label);
    yaml.push_str(&pod(
        "b",
        &format!("{name}-2"),
        name,
        NODE_B,
        ip(net, 24),
        &label,
    ));
    yaml.push_str(&format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: b
spec:
  clusterIP: {vip}
  selector:
    app: {name}
  ports:
  - name: {port_name}
    port: 80
    targetPort: 8080
---
",
        vip = vip(net, 5)
    ));
    let mesh = Mesh::start(net, &yaml).await;
    eventually(
        &format!("the waypoint to know both endpoints of {name}"),
        || {
            let state = mesh.waypoint.mesh().snapshot();
            let ready = state
                .service_by_vip("", vip(net, 5))
                .is_some_and(|service| state.endpoints(service).filter(|w| w.healthy).count() == 2);
            async move { ready }
        },
    )
    .await;
    let hostname = format!("{name}.b.svc.cluster.local");
    let rule = pb::Rule {
        backends: vec![pb::WeightedBackend {
            backend: Some(pb::weighted_backend::Backend::Service(pb::ServiceRef {
                hostname: hostname.clone(),
                port: 80,
            })),
            weight: 1,
            filters: vec![],
        }],
        retry: Some(pb::Retry {
            codes: vec![503],
            attempts: 3,
            backoff: Some(prost_types::Duration {
                seconds: 0,
                nanos: 1_000_000,
            }),
        }),
        ..pb::Rule::default()
    };
    let routes = pb::WaypointRoutes {
        hostname: hostname.clone(),
        port: 80,
        routes: vec![pb::Route {
            namespace: "b".into(),
            name: name.into(),
            creation_timestamp: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            rules: vec![rule],
        }],
    };
    let resource = prost_types::Any {
        type_url: WAYPOINT_ROUTES_TYPE_URL.into(),
        value: routes.encode_to_vec(),
    };
    mesh.plane
        .ads
        .apply(
            WAYPOINT_ROUTES_TYPE_URL,
            vec![(format!("{hostname}:80"), resource)],
            vec![],
        )
        .unwrap();
    let key = ServiceKey {
        hostname: hostname.as_str().into(),
        port: 80,
    };
    eventually("the waypoint to have the retrying route", || {
        let applied = mesh.waypoint.config().snapshot().routes(&key).is_some();
        async move { applied }
    })
    .await;
    mesh
}

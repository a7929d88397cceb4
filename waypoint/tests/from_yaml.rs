//! The whole chain from Kubernetes YAML: istiod-lite translates a GAMMA
//! `HTTPRoute` and an `AuthorizationPolicy` with `targetRefs` and pushes
//! them over delta ADS; the waypoint routes and authorizes by them.

mod support;

use support::{ECHO_HOST, Mesh, eventually, get1};
use waypoint::route::ServiceKey;

const ROUTE_AND_POLICY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: echo-canary
  namespace: b
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: echo
    port: 80
  rules:
  - matches:
    - headers:
      - name: x-version
        value: v2
    backendRefs:
    - name: echo-v2
      port: 80
  - backendRefs:
    - name: echo
      port: 80
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: no-admin
  namespace: b
spec:
  targetRefs:
  - group: ""
    kind: Service
    name: echo
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin*"]
---
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_httproute_and_an_l7_policy_from_yaml_route_and_authorize() {
    let mesh = Mesh::start(50, ROUTE_AND_POLICY).await;
    let config = mesh.waypoint.config().clone();
    let key = ServiceKey {
        hostname: ECHO_HOST.into(),
        port: 80,
    };
    eventually("the pushed routes and policy", || {
        let snapshot = config.snapshot();
        let arrived = snapshot.routes(&key).is_some() && snapshot.policies(ECHO_HOST).is_some();
        async move { arrived }
    })
    .await;
    assert_eq!(mesh.waypoint.xds_status().borrow().nacks, 0);
    let mut client = mesh.http1().await;
    let (status, _, body) = get1(&mut client, "/", &[]).await;
    assert_eq!((status, body.as_str()), (200, "v1 GET / HTTP/1.1"));
    let (status, _, body) = get1(&mut client, "/", &[("x-version", "v2")]).await;
    assert_eq!((status, body.as_str()), (200, "v2 GET / HTTP/1.1"));
    let (status, _, body) = get1(&mut client, "/admin/x", &[]).await;
    assert_eq!(status, 403, "{body}");
}

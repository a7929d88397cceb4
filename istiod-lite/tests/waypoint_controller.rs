//! The waypoint controller against kube-rs's mocked API service
//! (`tower_test::mock::pair`). No API server can run on these machines, so
//! this stands in for one: a real `kube::Client` sends every request to
//! [`ApiServer`], which answers lists and watches the way a quiet cluster
//! would, and hands each write (every `PATCH`) to the test, which checks
//! its path, query and body and answers it as the API server would.
//!
//! What this proves: which requests the controller makes and with what
//! content, and how it reacts to the answers. What it cannot: that a real
//! API server accepts the objects (their schemas are k8s-openapi's, and the
//! status's is our CRD's).

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use istiod_lite::waypoints::{RetryBackoff, TracingSettings, WaypointController, WaypointSettings};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_test::mock::{self, SendResponse};

const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/gateways";
const DEPLOYMENTS: &str = "/apis/apps/v1/deployments";
const SERVICE_ACCOUNT: &str = "/api/v1/namespaces/apps/serviceaccounts/waypoint";
const SERVICE: &str = "/api/v1/namespaces/apps/services/waypoint";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/apps/deployments/waypoint";
const STATUS: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/apps/gateways/waypoint/status";

/// How long one step may wait for the controller. Generous: it covers the
/// controller's start and the (short, in these tests) retry backoff.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

type Pending = (Request<Body>, SendResponse<Response<Body>>);

/// The mocked API server: lists answered at once, watches held open
/// (except those of Gateways and Deployments, which the test answers),
/// writes queued for the test.
struct ApiServer {
    patches: mpsc::UnboundedReceiver<Pending>,
    gateway_watches: mpsc::UnboundedReceiver<SendResponse<Response<Body>>>,
    deployment_watches: mpsc::UnboundedReceiver<SendResponse<Response<Body>>>,
    /// Every GET, as `path?query`, for checks on what is watched.
    reads: Arc<Mutex<Vec<String>>>,
}

fn settings() -> WaypointSettings {
    WaypointSettings {
        image: "waypoint:test".to_owned(),
        tracing: TracingSettings {
            otlp_endpoint: Some("http://jaeger-collector.istio-system:4317".to_owned()),
            sampling_percent: 100.0,
        },
        ..WaypointSettings::default()
    }
}

/// Starts a controller over a mocked client; the Gateway list holds
/// `gateways`, every other list is empty.
fn start(gateways: Vec<Value>) -> ApiServer {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let backoff = RetryBackoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
    };
    tokio::spawn(
        WaypointController::new(client, settings())
            .with_backoff(backoff)
            .run(),
    );
    let (patches_tx, patches) = mpsc::unbounded_channel();
    let (watches_tx, gateway_watches) = mpsc::unbounded_channel();
    let (deployment_watches_tx, deployment_watches) = mpsc::unbounded_channel();
    let reads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&reads);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            if request.method() != Method::GET {
                // A closed queue means the test is over.
                let _ = patches_tx.send((request, respond));
                continue;
            }
            let path = request.uri().path().to_owned();
            seen.lock().unwrap().push(request.uri().to_string());
            if query(&request).get("watch").map(String::as_str) == Some("true") {
                if path == GATEWAYS {
                    let _ = watches_tx.send(respond);
                } else if path == DEPLOYMENTS {
                    let _ = deployment_watches_tx.send(respond);
                } else {
                    held.push(respond);
                }
                continue;
            }
            let items = if path == GATEWAYS {
                gateways.clone()
            } else {
                Vec::new()
            };
            let list = json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": { "resourceVersion": "10" },
                "items": items,
            });
            respond.send_response(json_response(StatusCode::OK, &list));
        }
    });
    ApiServer {
        patches,
        gateway_watches,
        deployment_watches,
        reads,
    }
}

// === impl ApiServer ===

impl ApiServer {
    /// The next write, asserted to be a forced server-side apply by
    /// istiod-lite at `path`; returns its body and the way to answer.
    async fn next_apply(&mut self, path: &str) -> (Value, SendResponse<Response<Body>>) {
        let (request, respond) = tokio::time::timeout(STEP_TIMEOUT, self.patches.recv())
            .await
            .unwrap_or_else(|_| panic!("no write within {STEP_TIMEOUT:?}, expected {path}"))
            .unwrap();
        assert_eq!(request.method(), Method::PATCH, "{}", request.uri());
        assert_eq!(request.uri().path(), path, "writes come in a fixed order");
        assert_eq!(
            query(&request),
            BTreeMap::from([
                ("fieldManager".to_owned(), "istiod-lite".to_owned()),
                ("force".to_owned(), "true".to_owned()),
            ]),
            "{}",
            request.uri()
        );
        assert_eq!(
            request.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let bytes = request.into_body().collect_bytes().await.unwrap();
        (serde_json::from_slice(&bytes).unwrap(), respond)
    }

    /// Answers the next apply at `path` with what was applied, plus
    /// `stored` (fields the API server fills in); returns the body.
    async fn accept_apply(&mut self, path: &str, stored: Value) -> Value {
        let (body, respond) = self.next_apply(path).await;
        let mut answer = body.clone();
        merge(&mut answer, stored);
        respond.send_response(json_response(StatusCode::OK, &answer));
        body
    }

    /// Answers the next watch of Gateways with `events`, one per line.
    async fn serve_gateway_watch(&mut self, events: &[Value]) {
        let respond = tokio::time::timeout(STEP_TIMEOUT, self.gateway_watches.recv())
            .await
            .expect("no Gateway watch")
            .unwrap();
        serve_events(respond, events);
    }

    /// Answers the next watch of Deployments with `events`, one per line.
    async fn serve_deployment_watch(&mut self, events: &[Value]) {
        let respond = tokio::time::timeout(STEP_TIMEOUT, self.deployment_watches.recv())
            .await
            .expect("no Deployment watch")
            .unwrap();
        serve_events(respond, events);
    }
}

/// A watch body: `events`, one JSON object per line, then its end.
fn serve_events(respond: SendResponse<Response<Body>>, events: &[Value]) {
    let body: String = events.iter().map(|event| format!("{event}\n")).collect();
    respond.send_response(
        Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(body.into_bytes()))
            .unwrap(),
    );
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn query(request: &Request<Body>) -> BTreeMap<String, String> {
    let query = request.uri().query().unwrap_or_default();
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// Merges `patch` into `target`, objects key by key.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (target, patch) => *target = patch,
    }
}

/// A Gateway as the API server lists it.
fn gateway(name: &str, class: &str, listener: Value) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": "apps",
            "uid": format!("uid-{name}"),
            "generation": 2,
            "resourceVersion": "7",
        },
        "spec": { "gatewayClassName": class, "listeners": [listener] },
    })
}

fn mesh_listener() -> Value {
    json!({ "name": "mesh", "port": 15008, "protocol": "HBONE" })
}

fn waypoint() -> Value {
    gateway("waypoint", "istio-waypoint", mesh_listener())
}

/// `type status reason` of each condition of an applied status.
fn conditions(status: &Value) -> Vec<String> {
    status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap()
            )
        })
        .collect()
}

/// Answers the status apply with the Gateway as stored.
async fn accept_status(api: &mut ApiServer) -> Value {
    let (body, respond) = api.next_apply(STATUS).await;
    let mut stored = waypoint();
    stored["status"] = body["status"].clone();
    respond.send_response(json_response(StatusCode::OK, &stored));
    body
}

#[tokio::test]
async fn a_waypoint_gateway_gets_its_three_objects_then_a_status_with_its_address() {
    let mut api = start(vec![waypoint()]);

    let service_account = api.accept_apply(SERVICE_ACCOUNT, json!({})).await;
    assert_eq!(service_account["kind"], "ServiceAccount");
    assert_eq!(service_account["apiVersion"], "v1");
    let owner = json!([{
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "name": "waypoint",
        "uid": "uid-waypoint",
        "controller": true,
    }]);
    assert_eq!(service_account["metadata"]["ownerReferences"], owner);
    assert_eq!(
        service_account["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"],
        "waypoint"
    );

    // The API server assigns the ClusterIP; the status reports it.
    let service = api
        .accept_apply(SERVICE, json!({ "spec": { "clusterIP": "10.96.0.20" } }))
        .await;
    assert_eq!(service["kind"], "Service");
    assert_eq!(service["metadata"]["ownerReferences"], owner);
    assert_eq!(
        service["spec"]["ports"],
        json!([
            { "name": "status-port", "port": 15021, "protocol": "TCP", "appProtocol": "tcp" },
            { "name": "mesh", "port": 15008, "protocol": "TCP", "appProtocol": "hbone" },
        ])
    );

    let deployment = api.accept_apply(DEPLOYMENT, json!({})).await;
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["apiVersion"], "apps/v1");
    assert_eq!(deployment["metadata"]["ownerReferences"], owner);
    let template = &deployment["spec"]["template"];
    assert_eq!(
        template["metadata"]["labels"]["istio.io/dataplane-mode"],
        "none"
    );
    let container = &template["spec"]["containers"][0];
    assert_eq!(container["image"], "waypoint:test");
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| (var["name"].as_str().unwrap(), &var["value"]))
        .collect();
    assert_eq!(
        env["OTEL_EXPORTER_OTLP_ENDPOINT"],
        "http://jaeger-collector.istio-system:4317"
    );
    assert_eq!(env["TRACE_SAMPLING"], "100");

    let status = accept_status(&mut api).await;
    assert_eq!(status["kind"], "Gateway");
    assert_eq!(
        conditions(&status),
        ["Accepted True Accepted", "Programmed True Programmed"]
    );
    assert_eq!(status["status"]["conditions"][0]["observedGeneration"], 2);
    assert_eq!(
        status["status"]["addresses"],
        json!([{ "type": "IPAddress", "value": "10.96.0.20" }])
    );

    // The owned objects are watched through the managed label only.
    let reads = api.reads.lock().unwrap().clone();
    for resource in [
        "/api/v1/serviceaccounts",
        "/api/v1/services",
        "/apis/apps/v1/deployments",
    ] {
        let read = reads
            .iter()
            .find(|read| read.starts_with(resource))
            .unwrap_or_else(|| panic!("{resource} is not watched: {reads:?}"));
        assert!(
            read.contains("labelSelector=gateway.istio.io%2Fmanaged%3Distio.io-mesh-controller"),
            "{read}"
        );
    }
}

#[tokio::test]
async fn a_gateway_of_another_class_gets_nothing_applied() {
    let ingress = gateway(
        "ingress",
        "istio",
        json!({ "name": "http", "port": 80, "protocol": "HTTP" }),
    );
    let mut api = start(vec![ingress]);
    // The ingress Gateway is reconciled from the list; the waypoint arrives
    // later, on the watch. The first write, and every write, is for the
    // waypoint: the other class was skipped without a request.
    api.serve_gateway_watch(&[json!({ "type": "ADDED", "object": waypoint() })])
        .await;
    api.accept_apply(SERVICE_ACCOUNT, json!({})).await;
    api.accept_apply(SERVICE, json!({ "spec": { "clusterIP": "10.96.0.21" } }))
        .await;
    api.accept_apply(DEPLOYMENT, json!({})).await;
    accept_status(&mut api).await;
}

#[tokio::test]
async fn a_refused_apply_is_retried_with_backoff() {
    let mut api = start(vec![waypoint()]);
    let (_, respond) = api.next_apply(SERVICE_ACCOUNT).await;
    let forbidden = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "serviceaccounts \"waypoint\" is forbidden: User \"system:serviceaccount:istio-system:istiod\" cannot patch resource \"serviceaccounts\" in API group \"\" in the namespace \"apps\"",
        "reason": "Forbidden",
        "code": 403,
    });
    respond.send_response(json_response(StatusCode::FORBIDDEN, &forbidden));
    // Again after the backoff, and once allowed, on to the end.
    let (_, respond) = api.next_apply(SERVICE_ACCOUNT).await;
    respond.send_response(json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500 }),
    ));
    api.accept_apply(SERVICE_ACCOUNT, json!({})).await;
    api.accept_apply(SERVICE, json!({ "spec": { "clusterIP": "10.96.0.22" } }))
        .await;
    api.accept_apply(DEPLOYMENT, json!({})).await;
    let status = accept_status(&mut api).await;
    assert_eq!(
        conditions(&status),
        ["Accepted True Accepted", "Programmed True Programmed"]
    );
}

#[tokio::test]
async fn a_waypoint_with_a_bad_listener_gets_only_a_status_saying_why() {
    let bad = gateway(
        "waypoint",
        "istio-waypoint",
        json!({ "name": "mesh", "port": 15009, "protocol": "HBONE" }),
    );
    let mut api = start(vec![bad]);
    // Nothing is applied: the first write is the status.
    let status = accept_status(&mut api).await;
    assert_eq!(
        conditions(&status),
        [
            "Accepted False ListenersNotValid",
            "Programmed False Invalid"
        ]
    );
    let message = status["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(message.contains("port 15009"), "{message}");
    assert!(status["status"].get("addresses").is_none());
}

#[tokio::test]
async fn a_deleted_waypoint_deployment_is_applied_again() {
    let mut api = start(vec![waypoint()]);
    api.accept_apply(SERVICE_ACCOUNT, json!({})).await;
    api.accept_apply(SERVICE, json!({ "spec": { "clusterIP": "10.96.0.23" } }))
        .await;
    api.accept_apply(DEPLOYMENT, json!({})).await;
    let first = accept_status(&mut api).await;

    // Someone deletes the Deployment: the watch of owned Deployments (their
    // metadata only) names it, and its controller owner leads back to the
    // Gateway, which is reconciled again.
    let deleted = json!({
        "type": "DELETED",
        "object": {
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": {
                "name": "waypoint",
                "namespace": "apps",
                "resourceVersion": "12",
                "labels": { "gateway.istio.io/managed": "istio.io-mesh-controller" },
                "ownerReferences": [{
                    "apiVersion": "gateway.networking.k8s.io/v1",
                    "kind": "Gateway",
                    "name": "waypoint",
                    "uid": "uid-waypoint",
                    "controller": true,
                }],
            },
        },
    });
    api.serve_deployment_watch(&[deleted]).await;
    api.accept_apply(SERVICE_ACCOUNT, json!({})).await;
    api.accept_apply(SERVICE, json!({ "spec": { "clusterIP": "10.96.0.23" } }))
        .await;
    let again = api.accept_apply(DEPLOYMENT, json!({})).await;
    assert_eq!(again["kind"], "Deployment");
    // The Gateway is unchanged, so its status says the same.
    let second = accept_status(&mut api).await;
    assert_eq!(conditions(&second), conditions(&first));
    assert_eq!(second["status"]["addresses"], first["status"]["addresses"]);
}

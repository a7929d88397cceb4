//! The root certificate controller against kube-rs's mocked API service
//! (`tower_test::mock::pair`), as `waypoint_controller.rs` tests the
//! waypoint controller: a real `kube::Client` sends every request to
//! [`ApiServer`], which answers the lists at once, hands the watches and
//! every write (`PATCH`) to the test, which checks the apply's path, query
//! and body and answers it as an API server would.
//!
//! What this proves: which ConfigMaps the controller applies, with what
//! content and field manager, and how it reacts to deletions, edits and
//! refusals. What it cannot: that a real API server accepts the object (its
//! schema is k8s-openapi's).

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use istiod_lite::root_cert::RootCertController;
use istiod_lite::waypoints::RetryBackoff;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_test::mock::{self, SendResponse};

const NAMESPACES: &str = "/api/v1/namespaces";
const CONFIG_MAPS: &str = "/api/v1/configmaps";
const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIBmeshroot\n-----END CERTIFICATE-----\n";

/// How long one step may wait for the controller.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a write that must not come. The retry backoff is
/// 10 ms here, so a retry would arrive well within it.
const QUIET: Duration = Duration::from_millis(500);

type Pending = (Request<Body>, SendResponse<Response<Body>>);

/// The mocked API server: lists answered at once, watches and writes
/// queued for the test.
struct ApiServer {
    patches: mpsc::UnboundedReceiver<Pending>,
    config_map_watches: mpsc::UnboundedReceiver<SendResponse<Response<Body>>>,
    /// Every GET, as `path?query`, for checks on what is watched.
    reads: Arc<Mutex<Vec<String>>>,
}

/// Starts a controller publishing [`ROOT`] over a mocked client; the
/// Namespace list holds `namespaces`, the ConfigMap list is empty.
fn start(namespaces: Vec<Value>) -> ApiServer {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let backoff = RetryBackoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(40),
    };
    tokio::spawn(
        RootCertController::new(client, ROOT)
            .with_backoff(backoff)
            .run(),
    );
    let (patches_tx, patches) = mpsc::unbounded_channel();
    let (watches_tx, config_map_watches) = mpsc::unbounded_channel();
    let reads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&reads);
    tokio::spawn(async move {
        // Watches of Namespaces stay open and quiet, as on a quiet cluster.
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
                if path == CONFIG_MAPS {
                    let _ = watches_tx.send(respond);
                } else {
                    held.push(respond);
                }
                continue;
            }
            let items = if path == NAMESPACES {
                namespaces.clone()
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
        config_map_watches,
        reads,
    }
}

// === impl ApiServer ===

impl ApiServer {
    /// The next write, asserted to be a forced server-side apply of a
    /// ConfigMap by istiod-lite; returns its path, body and the way to
    /// answer.
    async fn next_apply(&mut self) -> (String, Value, SendResponse<Response<Body>>) {
        let (request, respond) = tokio::time::timeout(STEP_TIMEOUT, self.patches.recv())
            .await
            .unwrap_or_else(|_| panic!("no write within {STEP_TIMEOUT:?}"))
            .unwrap();
        assert_eq!(request.method(), Method::PATCH, "{}", request.uri());
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
        let path = request.uri().path().to_owned();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        (path, serde_json::from_slice(&bytes).unwrap(), respond)
    }

    /// Answers the next apply with what was applied; returns its path and
    /// body.
    async fn accept_apply(&mut self) -> (String, Value) {
        let (path, body, respond) = self.next_apply().await;
        let mut stored = body.clone();
        stored["metadata"]["resourceVersion"] = json!("11");
        respond.send_response(json_response(StatusCode::OK, &stored));
        (path, body)
    }

    /// Asserts that no write comes for a while.
    async fn assert_no_write(&mut self) {
        if let Ok(Some((request, _))) = tokio::time::timeout(QUIET, self.patches.recv()).await {
            panic!("unexpected write: {} {}", request.method(), request.uri());
        }
    }

    /// Answers the next watch of ConfigMaps with `events`, one per line.
    async fn serve_config_map_watch(&mut self, events: &[Value]) {
        let respond = tokio::time::timeout(STEP_TIMEOUT, self.config_map_watches.recv())
            .await
            .expect("no ConfigMap watch")
            .unwrap();
        let body: String = events.iter().map(|event| format!("{event}\n")).collect();
        respond.send_response(
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(body.into_bytes()))
                .unwrap(),
        );
    }
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

/// A Namespace as the API server lists it.
fn namespace(name: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "uid": format!("uid-{name}"), "resourceVersion": "5" },
        "status": { "phase": phase },
    })
}

/// The path of `namespace`'s root certificate ConfigMap.
fn config_map_path(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/configmaps/istio-ca-root-cert")
}

/// The ConfigMap as the API server stores it, with `root` as its data.
fn stored_config_map(namespace: &str, root: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "istio-ca-root-cert",
            "namespace": namespace,
            "resourceVersion": resource_version,
            "labels": { "istio.io/config": "true" },
        },
        "data": { "root-cert.pem": root },
    })
}

/// The warnings and errors logged while the guard lives, on this thread
/// (a `#[tokio::test]` runs its spawned tasks on it).
fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let logs = Arc::new(Mutex::new(Vec::new()));
    let writer = Arc::clone(&logs);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || Captured(Arc::clone(&writer)))
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

fn logged(logs: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

#[tokio::test]
async fn every_serving_namespace_gets_the_root_by_server_side_apply() {
    let mut api = start(vec![
        namespace("apps", "Active"),
        namespace("kube-system", "Active"),
        namespace("old", "Terminating"),
        namespace("kube-public", "Active"),
    ]);
    let mut applied = BTreeMap::new();
    for _ in 0..2 {
        let (path, body) = api.accept_apply().await;
        applied.insert(path, body);
    }
    assert_eq!(
        applied.keys().cloned().collect::<Vec<_>>(),
        [config_map_path("apps"), config_map_path("kube-system")]
    );
    let body = &applied[&config_map_path("apps")];
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["kind"], "ConfigMap");
    assert_eq!(body["metadata"]["name"], "istio-ca-root-cert");
    assert_eq!(body["metadata"]["namespace"], "apps");
    assert_eq!(
        body["metadata"]["labels"],
        json!({ "istio.io/config": "true" })
    );
    assert_eq!(body["data"], json!({ "root-cert.pem": ROOT }));
    assert!(body["metadata"].get("ownerReferences").is_none());

    // The terminating namespace and kube-public get nothing.
    api.assert_no_write().await;

    // Only the ConfigMaps of that one name are watched.
    let reads = api.reads.lock().unwrap().clone();
    let watch = reads
        .iter()
        .find(|read| read.starts_with(CONFIG_MAPS))
        .unwrap_or_else(|| panic!("ConfigMaps are not watched: {reads:?}"));
    assert!(
        watch.contains("fieldSelector=metadata.name%3Distio-ca-root-cert"),
        "{watch}"
    );
}

#[tokio::test]
async fn a_deleted_or_edited_config_map_is_applied_again() {
    let mut api = start(vec![namespace("apps", "Active")]);
    let (path, _) = api.accept_apply().await;
    assert_eq!(path, config_map_path("apps"));

    // Someone deletes it: the watch names it, its namespace is reconciled,
    // and the apply creates it again.
    api.serve_config_map_watch(&[json!({
        "type": "DELETED",
        "object": stored_config_map("apps", ROOT, "12"),
    })])
    .await;
    let (path, body) = api.accept_apply().await;
    assert_eq!(path, config_map_path("apps"));
    assert_eq!(body["data"]["root-cert.pem"], ROOT);

    // Someone replaces the root (or it is an old istiod-lite's): the
    // forced apply puts the mesh root back.
    let stale = "-----BEGIN CERTIFICATE-----\nMIIBold\n-----END CERTIFICATE-----\n";
    api.serve_config_map_watch(&[json!({
        "type": "MODIFIED",
        "object": stored_config_map("apps", stale, "13"),
    })])
    .await;
    let (path, body) = api.accept_apply().await;
    assert_eq!(path, config_map_path("apps"));
    assert_eq!(body["data"]["root-cert.pem"], ROOT);
}

#[tokio::test]
async fn a_forbidden_apply_is_reported_with_the_missing_grant_and_retried() {
    let (logs, _guard) = capture_logs();
    let mut api = start(vec![namespace("apps", "Active")]);
    let (_, _, respond) = api.next_apply().await;
    let forbidden = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "configmaps \"istio-ca-root-cert\" is forbidden: User \"system:serviceaccount:istio-system:istiod\" cannot patch resource \"configmaps\" in API group \"\" in the namespace \"apps\"",
        "reason": "Forbidden",
        "details": { "name": "istio-ca-root-cert", "kind": "configmaps" },
        "code": 403,
    });
    respond.send_response(json_response(StatusCode::FORBIDDEN, &forbidden));
    // Again after the backoff; once allowed, done.
    let (path, _) = api.accept_apply().await;
    assert_eq!(path, config_map_path("apps"));
    api.assert_no_write().await;

    let logged = logged(&logs);
    assert!(
        logged.contains("cannot apply ConfigMap apps/istio-ca-root-cert: forbidden"),
        "{logged}"
    );
    assert!(
        logged.contains("grant istiod-lite's service account `create` and `patch` on configmaps"),
        "{logged}"
    );
}

#[tokio::test]
async fn a_namespace_found_terminating_at_apply_time_is_not_retried() {
    let (logs, _guard) = capture_logs();
    let mut api = start(vec![namespace("old", "Active")]);
    // Deleted between the list and the apply: the NamespaceLifecycle
    // admission plugin refuses the create.
    let (path, _, respond) = api.next_apply().await;
    assert_eq!(path, config_map_path("old"));
    let terminating = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "configmaps \"istio-ca-root-cert\" is forbidden: unable to create new content in namespace old because it is being terminated",
        "reason": "Forbidden",
        "details": {
            "name": "istio-ca-root-cert",
            "kind": "configmaps",
            "causes": [{
                "reason": "NamespaceTerminating",
                "message": "namespace old is being terminated",
                "field": "metadata.namespace",
            }],
        },
        "code": 403,
    });
    respond.send_response(json_response(StatusCode::FORBIDDEN, &terminating));
    // No retry, and no warning that would send the operator to RBAC.
    api.assert_no_write().await;
    let logged = logged(&logs);
    assert!(!logged.contains("forbidden"), "{logged}");
}

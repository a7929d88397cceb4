//! The Kubernetes source against kube-rs's mocked API service
//! (`tower_test::mock::pair`): a real `kube::Client` whose every HTTP request
//! lands in [`ApiServer`], which checks the request's path and query and
//! answers with the JSON a real API server would send. Each test scripts one
//! sequence (initial lists, watch events, a watch error, a relist) and
//! asserts the exact `SourceEvent`s the source reports.
//!
//! Requests of different kinds arrive concurrently, so the server keeps one
//! queue per resource path, and a test answers them in the order it chooses;
//! waiting for each resulting event before answering the next request makes
//! the event order deterministic.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use istiod_lite::sources::kubernetes::KubeSource;
use istiod_lite::sources::{Change, SourceEvent};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower_test::mock::{self, SendResponse};

const NAMESPACES: &str = "/api/v1/namespaces";
const PODS: &str = "/api/v1/pods";
const SERVICES: &str = "/api/v1/services";
const AUTHORIZATION_POLICIES: &str = "/apis/security.istio.io/v1/authorizationpolicies";
const PEER_AUTHENTICATIONS: &str = "/apis/security.istio.io/v1/peerauthentications";
const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/gateways";
const HTTP_ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
const VIRTUAL_SERVICES: &str = "/apis/networking.istio.io/v1/virtualservices";
const DESTINATION_RULES: &str = "/apis/networking.istio.io/v1/destinationrules";

/// Every collection the source watches (cluster-wide).
const RESOURCES: [&str; 9] = [
    NAMESPACES,
    PODS,
    SERVICES,
    AUTHORIZATION_POLICIES,
    PEER_AUTHENTICATIONS,
    GATEWAYS,
    HTTP_ROUTES,
    VIRTUAL_SERVICES,
    DESTINATION_RULES,
];

/// How long one step may wait for the source. Generous: a retry after an
/// error waits for the watcher's backoff (0.8 s, then 1.6 s, with jitter).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// A request the source made, and the way to answer it.
type Pending = (Request<Body>, SendResponse<Response<Body>>);

/// The mocked API server: one queue of requests per resource path.
struct ApiServer {
    requests: BTreeMap<&'static str, mpsc::UnboundedReceiver<Pending>>,
    /// Watches left open (never answered), as an idle real watch would be.
    held: Vec<SendResponse<Response<Body>>>,
}

/// Starts a source over a mocked client; returns the server side and the
/// source's events.
fn start() -> (ApiServer, mpsc::Receiver<SourceEvent>) {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (events_tx, events) = mpsc::channel(64);
    tokio::spawn(KubeSource::new(client).run(events_tx));

    let mut queues = BTreeMap::new();
    let mut requests = BTreeMap::new();
    for resource in RESOURCES {
        let (tx, rx) = mpsc::unbounded_channel();
        queues.insert(resource, tx);
        requests.insert(resource, rx);
    }
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let path = request.uri().path().to_string();
            let queue = queues
                .get(path.as_str())
                .unwrap_or_else(|| panic!("request for a path nobody watches: {}", request.uri()));
            // A closed queue means the test is over.
            let _ = queue.send((request, respond));
        }
    });
    let server = ApiServer {
        requests,
        held: Vec::new(),
    };
    (server, events)
}

// === impl ApiServer ===

impl ApiServer {
    async fn next_request(&mut self, resource: &str) -> Pending {
        let queue = self.requests.get_mut(resource).unwrap();
        tokio::time::timeout(STEP_TIMEOUT, queue.recv())
            .await
            .unwrap_or_else(|_| panic!("no request for {resource} within {STEP_TIMEOUT:?}"))
            .unwrap()
    }

    /// The next request for `resource`, asserted to be the watcher's list:
    /// a quorum read (no `resourceVersion`) in pages of 500.
    async fn next_list(&mut self, resource: &str) -> SendResponse<Response<Body>> {
        let (request, respond) = self.next_request(resource).await;
        assert_eq!(
            query(&request),
            pairs(&[("limit", "500")]),
            "expected a list of {resource}, got {}",
            request.uri()
        );
        respond
    }

    /// The next request for `resource`, asserted to be a watch resuming at
    /// `resource_version`, with bookmarks and without streaming lists.
    async fn next_watch(
        &mut self,
        resource: &str,
        resource_version: &str,
    ) -> SendResponse<Response<Body>> {
        let (request, respond) = self.next_request(resource).await;
        assert_eq!(
            query(&request),
            pairs(&[
                ("allowWatchBookmarks", "true"),
                ("resourceVersion", resource_version),
                ("timeoutSeconds", "290"),
                ("watch", "true"),
            ]),
            "expected a watch of {resource} from {resource_version}, got {}",
            request.uri()
        );
        respond
    }

    /// Answers the next list of `resource` with `items` at `resource_version`.
    async fn serve_list(&mut self, resource: &str, resource_version: &str, items: Vec<Value>) {
        let list = json!({
            "apiVersion": "v1",
            "kind": "List",
            "metadata": { "resourceVersion": resource_version },
            "items": items,
        });
        let respond = self.next_list(resource).await;
        respond.send_response(json_response(StatusCode::OK, &list));
    }

    /// Answers the next list of `resource` as an API server does for a
    /// group/version nobody serves (a CRD not installed): a plain-text 404.
    async fn serve_not_found(&mut self, resource: &str) {
        let respond = self.next_list(resource).await;
        let response = Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Body::from(b"404 page not found\n".to_vec()))
            .unwrap();
        respond.send_response(response);
    }

    /// Answers the next list of `resource` with a 403 `Status`, as RBAC does.
    async fn serve_forbidden(&mut self, resource: &str) {
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "pods is forbidden: User \"system:serviceaccount:istio-system:istiod-lite\" cannot list resource \"pods\" in API group \"\" at the cluster scope",
            "reason": "Forbidden",
            "details": { "kind": "pods" },
            "code": 403,
        });
        let respond = self.next_list(resource).await;
        respond.send_response(json_response(StatusCode::FORBIDDEN, &status));
    }

    /// Answers the next watch of `resource` with `events`, one JSON object
    /// per line, then ends the body (as a watch timing out does).
    async fn serve_watch(&mut self, resource: &str, resource_version: &str, events: &[Value]) {
        let body: String = events.iter().map(|event| format!("{event}\n")).collect();
        let respond = self.next_watch(resource, resource_version).await;
        respond.send_response(
            Response::builder()
                .header("content-type", "application/json")
                .body(Body::from(body.into_bytes()))
                .unwrap(),
        );
    }

    /// Accepts the next watch of `resource` and leaves it open.
    async fn hold_watch(&mut self, resource: &str, resource_version: &str) {
        let respond = self.next_watch(resource, resource_version).await;
        self.held.push(respond);
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
            (key.to_string(), value.to_string())
        })
        .collect()
}

fn pairs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

// --- objects, as the API server sends them ---
//
// List items carry no apiVersion/kind (the list does); watch event objects do.

fn namespace(name: &str, resource_version: &str) -> Value {
    json!({
        "metadata": {
            "name": name,
            "resourceVersion": resource_version,
            "labels": { "istio.io/dataplane-mode": "ambient" },
        },
    })
}

fn pod(name: &str, resource_version: &str) -> Value {
    json!({
        "metadata": { "name": name, "namespace": "default", "resourceVersion": resource_version },
        "spec": {
            "nodeName": "node-1",
            "serviceAccountName": "default",
            "containers": [{ "name": "app", "image": "app:1" }],
        },
        "status": { "podIP": "10.0.0.1" },
    })
}

fn authorization_policy(name: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": { "name": name, "namespace": "default", "resourceVersion": resource_version },
        "spec": { "action": "DENY", "rules": [{ "from": [{ "source": { "namespaces": ["other"] } }] }] },
    })
}

fn http_route(name: &str, resource_version: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": name, "namespace": "default", "resourceVersion": resource_version },
        "spec": { "parentRefs": [{ "group": "", "kind": "Service", "name": "reviews", "port": 9080 }] },
    })
}

/// A watch event line; `object` gets the type fields a watch carries.
fn watch_event(kind: &str, mut object: Value) -> Value {
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("Pod");
    json!({ "type": kind, "object": object })
}

fn bookmark(resource_version: &str) -> Value {
    json!({
        "type": "BOOKMARK",
        "object": { "apiVersion": "v1", "kind": "Pod", "metadata": { "resourceVersion": resource_version } },
    })
}

/// The `ERROR` event an API server sends when a watch resumes from a
/// resourceVersion that has been compacted away.
fn gone(resource_version: &str) -> Value {
    json!({
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": format!("too old resource version: {resource_version} (40)"),
            "reason": "Expired",
            "code": 410,
        },
    })
}

// --- events, as the test reads them ---

async fn next_event(events: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
    tokio::time::timeout(STEP_TIMEOUT, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no event from the source within {STEP_TIMEOUT:?}"))
        .expect("the source stopped")
}

/// One line per event: `kube:Pod: +Pod default/a@8, -Pod default/b`
/// (`@` is the upserted object's resourceVersion), `kube:Pod: problems [..]`,
/// or `synced`.
fn describe(event: &SourceEvent) -> String {
    match event {
        SourceEvent::Changes { origin, changes } => {
            let changes: Vec<String> = changes
                .iter()
                .map(|change| match change {
                    Change::Upsert(object) => format!(
                        "+{}@{}",
                        object.key(),
                        object.metadata().resource_version.as_deref().unwrap_or("?")
                    ),
                    Change::Remove(key) => format!("-{key}"),
                })
                .collect();
            format!("{origin}: {}", changes.join(", "))
        }
        SourceEvent::Problems { origin, problems } => format!("{origin}: problems {problems:?}"),
        SourceEvent::Synced => "synced".to_string(),
    }
}

async fn expect_event(events: &mut mpsc::Receiver<SourceEvent>, expected: &str) {
    assert_eq!(describe(&next_event(events).await), expected);
}

/// The problem reported for `origin`; it must be exactly one.
async fn expect_problem(events: &mut mpsc::Receiver<SourceEvent>, expected_origin: &str) -> String {
    match next_event(events).await {
        SourceEvent::Problems {
            origin,
            mut problems,
        } if origin == expected_origin => {
            assert_eq!(problems.len(), 1, "{problems:?}");
            problems.remove(0)
        }
        other => panic!(
            "expected a problem for {expected_origin}, got {}",
            describe(&other)
        ),
    }
}

/// Nothing more is reported (the source has had time to send anything it
/// had to: every event it sends precedes the request the test waited for).
async fn expect_quiet(events: &mut mpsc::Receiver<SourceEvent>) {
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Ok(event) = events.try_recv() {
        panic!("unexpected event: {}", describe(&event));
    }
}

// --- tests ---

/// The whole life of a watch: initial list, `Synced`, ADDED / MODIFIED /
/// DELETED, a bookmark, the body ending (resume, no relist), `410 Gone`
/// (relist), and the relist diffed against the store: an object deleted
/// during the gap is removed, a new one upserted, `Synced` not repeated.
#[tokio::test]
async fn kube_watch_events_and_relist_after_410_gone() {
    let (mut api, mut events) = start();

    api.serve_list(NAMESPACES, "5", vec![namespace("default", "3")])
        .await;
    expect_event(&mut events, "kube:Namespace: +Namespace default@3").await;
    api.serve_list(PODS, "10", vec![pod("a", "8"), pod("b", "9")])
        .await;
    expect_event(&mut events, "kube:Pod: +Pod default/a@8, +Pod default/b@9").await;
    // Empty kinds report nothing, but count for Synced.
    for resource in [
        SERVICES,
        AUTHORIZATION_POLICIES,
        PEER_AUTHENTICATIONS,
        GATEWAYS,
        HTTP_ROUTES,
        VIRTUAL_SERVICES,
        DESTINATION_RULES,
    ] {
        api.serve_list(resource, "1", vec![]).await;
    }
    expect_event(&mut events, "synced").await;

    // Each kind watches from its own list's resourceVersion.
    api.hold_watch(NAMESPACES, "5").await;
    for resource in [
        SERVICES,
        AUTHORIZATION_POLICIES,
        PEER_AUTHENTICATIONS,
        GATEWAYS,
        HTTP_ROUTES,
        VIRTUAL_SERVICES,
        DESTINATION_RULES,
    ] {
        api.hold_watch(resource, "1").await;
    }

    api.serve_watch(
        PODS,
        "10",
        &[
            watch_event("ADDED", pod("c", "11")),
            watch_event("MODIFIED", pod("a", "12")),
            watch_event("DELETED", pod("b", "13")),
            bookmark("15"),
        ],
    )
    .await;
    expect_event(&mut events, "kube:Pod: +Pod default/c@11").await;
    expect_event(&mut events, "kube:Pod: +Pod default/a@12").await;
    expect_event(&mut events, "kube:Pod: -Pod default/b").await;

    // The body ended: the watch resumes from the bookmark, without a relist.
    api.serve_watch(PODS, "15", &[gone("15")]).await;

    // 410 Gone: after its backoff the watcher relists. Meanwhile `a` was
    // deleted (no DELETED event will ever say so) and `d` created.
    api.serve_list(PODS, "20", vec![pod("c", "11"), pod("d", "19")])
        .await;
    expect_event(
        &mut events,
        "kube:Pod: +Pod default/c@11, +Pod default/d@19, -Pod default/a",
    )
    .await;
    api.hold_watch(PODS, "20").await;
    expect_quiet(&mut events).await;
}

/// Istio's CRDs are not installed: both Istio kinds answer 404 and are
/// reported as problems naming the CRD, while the other kinds sync. The
/// watcher keeps retrying (the same problem is not reported twice); once the
/// CRD exists its objects arrive and the problem is cleared.
#[tokio::test]
async fn kube_missing_crd_is_a_problem_and_other_kinds_still_sync() {
    let (mut api, mut events) = start();

    api.serve_not_found(AUTHORIZATION_POLICIES).await;
    let problem = expect_problem(&mut events, "kube:AuthorizationPolicy").await;
    assert!(
        problem.contains("authorizationpolicies.security.istio.io is not installed"),
        "{problem}"
    );
    assert!(problem.contains("install Istio's CRDs"), "{problem}");
    api.serve_not_found(PEER_AUTHENTICATIONS).await;
    let problem = expect_problem(&mut events, "kube:PeerAuthentication").await;
    assert!(
        problem.contains("peerauthentications.security.istio.io is not installed"),
        "{problem}"
    );

    // The networking CRDs missing too: the same kind of problem.
    api.serve_not_found(VIRTUAL_SERVICES).await;
    let problem = expect_problem(&mut events, "kube:VirtualService").await;
    assert!(
        problem.contains("virtualservices.networking.istio.io is not installed"),
        "{problem}"
    );
    assert!(problem.contains("install Istio's CRDs"), "{problem}");
    api.serve_not_found(DESTINATION_RULES).await;
    let problem = expect_problem(&mut events, "kube:DestinationRule").await;
    assert!(
        problem.contains("destinationrules.networking.istio.io is not installed"),
        "{problem}"
    );

    for resource in [NAMESPACES, PODS, SERVICES, GATEWAYS] {
        api.serve_list(resource, "1", vec![]).await;
    }
    api.serve_list(HTTP_ROUTES, "7", vec![http_route("reviews", "6")])
        .await;
    expect_event(&mut events, "kube:HTTPRoute: +HTTPRoute default/reviews@6").await;
    expect_event(&mut events, "synced").await;
    api.hold_watch(HTTP_ROUTES, "7").await;

    // Still not installed on the first retry: nothing new to say.
    api.serve_not_found(AUTHORIZATION_POLICIES).await;
    // Installed by the second retry.
    api.serve_list(
        AUTHORIZATION_POLICIES,
        "30",
        vec![authorization_policy("deny-other", "29")],
    )
    .await;
    expect_event(&mut events, "kube:AuthorizationPolicy: problems []").await;
    expect_event(
        &mut events,
        "kube:AuthorizationPolicy: +AuthorizationPolicy default/deny-other@29",
    )
    .await;
    api.hold_watch(AUTHORIZATION_POLICIES, "30").await;
    expect_quiet(&mut events).await;
}

/// A kind the source may not list (RBAC) is a problem that holds `Synced`
/// back: pushing from a partial view would remove every workload we cannot
/// see. Once the list succeeds the problem clears and the source syncs.
#[tokio::test]
async fn kube_forbidden_list_holds_synced_back_until_it_succeeds() {
    let (mut api, mut events) = start();

    api.serve_forbidden(PODS).await;
    let problem = expect_problem(&mut events, "kube:Pod").await;
    assert!(problem.contains("forbidden"), "{problem}");
    assert!(problem.contains("RBAC"), "{problem}");
    for resource in [
        NAMESPACES,
        SERVICES,
        AUTHORIZATION_POLICIES,
        PEER_AUTHENTICATIONS,
        GATEWAYS,
        HTTP_ROUTES,
        VIRTUAL_SERVICES,
        DESTINATION_RULES,
    ] {
        api.serve_list(resource, "1", vec![]).await;
    }
    api.hold_watch(NAMESPACES, "1").await;
    expect_quiet(&mut events).await;

    api.serve_list(PODS, "3", vec![pod("a", "2")]).await;
    expect_event(&mut events, "kube:Pod: problems []").await;
    expect_event(&mut events, "kube:Pod: +Pod default/a@2").await;
    expect_event(&mut events, "synced").await;
    api.hold_watch(PODS, "3").await;
    expect_quiet(&mut events).await;
}

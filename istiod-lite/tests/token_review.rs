//! Kubernetes-mode authentication against kube-rs's mocked API service
//! (`tower_test::mock::pair`, as in `kube_source.rs`): a real `kube::Client`
//! whose one request, the TokenReview, lands here. Each test checks the
//! request (path, token, audiences) and answers as an API server would;
//! then the CA service itself, to see which gRPC code a caller gets.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use identity::Identity;
use istiod_lite::ca::{
    AuthError, Authenticator, CaConfig, CaService, CaStore, Caller, IMPERSONATED_IDENTITY,
    NodeDirectory, TokenReviewConfig, TokenReviewer,
};
use kube::client::Body;
use prost_types::{Struct, Value as ProtoValue, value::Kind};
use proto::ca::IstioCertificateRequest;
use proto::ca::istio_certificate_service_server::IstioCertificateService;
use serde_json::{Value, json};
use tonic::Code;
use tonic::metadata::MetadataMap;
use tower_test::mock::{self, Handle};

const TRUST_DOMAIN: &str = "cluster.local";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.projected.token";
const ZTUNNEL: &str = "system:serviceaccount:istio-system:ztunnel";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// How long a test waits for the reviewer's request.
const WAIT: Duration = Duration::from_secs(10);

type ApiServer = Handle<Request<Body>, Response<Body>>;

/// A reviewer over a mocked API server, with the default config
/// (audience `istio-ca`, node proxies `istio-system/ztunnel`).
fn reviewer() -> (TokenReviewer, ApiServer) {
    reviewer_with(TokenReviewConfig::default())
}

fn reviewer_with(config: TokenReviewConfig) -> (TokenReviewer, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    (TokenReviewer::new(client, TRUST_DOMAIN, config), handle)
}

fn bearer(token: &str) -> MetadataMap {
    let mut metadata = MetadataMap::new();
    metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
    metadata
}

/// Authenticates `TOKEN` while the API server expects its TokenReview and
/// answers it with `answer`.
async fn authenticate(
    authenticator: &impl Authenticator,
    api: &mut ApiServer,
    answer: Response<Body>,
) -> Result<Caller, AuthError> {
    let metadata = bearer(TOKEN);
    let serve = answer_review(api, &["istio-ca"], answer);
    let (caller, ()) = tokio::join!(authenticator.authenticate(&metadata), serve);
    caller
}

/// Takes the next request, asserts it is the TokenReview of `TOKEN` for
/// `audiences`, and answers it.
async fn answer_review(api: &mut ApiServer, audiences: &[&str], answer: Response<Body>) {
    let (request, respond) = tokio::time::timeout(WAIT, api.next_request())
        .await
        .expect("no TokenReview request in time")
        .expect("the client is gone");
    assert_eq!(request.method(), Method::POST);
    assert_eq!(request.uri().path(), TOKEN_REVIEWS);
    let body = request.into_body().collect_bytes().await.unwrap();
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(review["kind"], "TokenReview");
    assert_eq!(
        review["spec"],
        json!({ "token": TOKEN, "audiences": audiences })
    );
    respond.send_response(answer);
}

/// The API server's answer: the review with `status`.
fn reviewed(status: Value) -> Response<Body> {
    json_response(
        StatusCode::CREATED,
        &json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "metadata": { "creationTimestamp": null },
            "spec": { "audiences": ["istio-ca"] },
            "status": status,
        }),
    )
}

/// An authenticated status for `username` in the service-accounts group,
/// bound to `node` if given.
fn authenticated(username: &str, node: Option<&str>) -> Value {
    let mut extra = serde_json::Map::new();
    extra.insert(
        "authentication.kubernetes.io/pod-name".into(),
        json!(["pod-1"]),
    );
    if let Some(node) = node {
        extra.insert(NODE_NAME.into(), json!([node]));
    }
    json!({
        "authenticated": true,
        "audiences": ["istio-ca"],
        "user": {
            "username": username,
            "uid": "0d5c4b4e-6a8f-4a9e-9a53-5f6b3f0f0a11",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"],
            "extra": extra,
        },
    })
}

/// A `Status` failure, as the API server sends with an error code.
fn failure(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new(TRUST_DOMAIN, ns, sa).unwrap()
}

#[tokio::test]
async fn a_ztunnel_token_bound_to_a_node_is_that_node() {
    let (reviewer, mut api) = reviewer();
    let answer = reviewed(authenticated(ZTUNNEL, Some("node-1")));
    let caller = authenticate(&reviewer, &mut api, answer).await;
    assert_eq!(caller, Ok(Caller::Node("node-1".into())));
}

#[tokio::test]
async fn a_ztunnel_token_without_a_node_name_is_refused() {
    let (reviewer, mut api) = reviewer();
    let answer = reviewed(authenticated(ZTUNNEL, None));
    let error = authenticate(&reviewer, &mut api, answer).await.unwrap_err();
    assert!(matches!(error, AuthError::NoNodeName { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("istio-system/ztunnel")
            && message.contains("1.30")
            && message.contains("bound projected"),
        "{message}"
    );
}

#[tokio::test]
async fn only_trusted_accounts_are_node_proxies() {
    // The same node-bound token from another account is just a workload:
    // a node name alone grants nothing.
    let (reviewer, mut api) = reviewer();
    let answer = reviewed(authenticated(
        "system:serviceaccount:istio-system:not-ztunnel",
        Some("node-1"),
    ));
    let caller = authenticate(&reviewer, &mut api, answer).await;
    assert_eq!(
        caller,
        Ok(Caller::Workload(id("istio-system", "not-ztunnel")))
    );

    // And the trusted accounts are configurable.
    let config = TokenReviewConfig {
        trusted_node_accounts: vec!["kube-system/node-agent".parse().unwrap()],
        ..TokenReviewConfig::default()
    };
    let (reviewer, mut api) = reviewer_with(config);
    let answer = reviewed(authenticated(
        "system:serviceaccount:kube-system:node-agent",
        Some("node-2"),
    ));
    let caller = authenticate(&reviewer, &mut api, answer).await;
    assert_eq!(caller, Ok(Caller::Node("node-2".into())));
    let answer = reviewed(authenticated(ZTUNNEL, Some("node-2")));
    let caller = authenticate(&reviewer, &mut api, answer).await;
    assert_eq!(caller, Ok(Caller::Workload(id("istio-system", "ztunnel"))));
}

#[tokio::test]
async fn a_workload_token_is_its_own_spiffe_identity() {
    let (reviewer, mut api) = reviewer();
    let answer = reviewed(authenticated(
        "system:serviceaccount:shop:checkout",
        Some("node-1"),
    ));
    let caller = authenticate(&reviewer, &mut api, answer).await;
    let Ok(Caller::Workload(identity)) = caller else {
        panic!("not a workload: {caller:?}");
    };
    assert_eq!(
        identity.to_string(),
        "spiffe://cluster.local/ns/shop/sa/checkout"
    );
}

#[tokio::test]
async fn configured_audiences_are_asked_for() {
    let config = TokenReviewConfig {
        audiences: vec!["istio-ca".into(), "mesh.example".into()],
        ..TokenReviewConfig::default()
    };
    let (reviewer, mut api) = reviewer_with(config);
    let mut status = authenticated("system:serviceaccount:shop:checkout", None);
    status["audiences"] = json!(["mesh.example"]);
    let metadata = bearer(TOKEN);
    let serve = answer_review(&mut api, &["istio-ca", "mesh.example"], reviewed(status));
    let (caller, ()) = tokio::join!(reviewer.authenticate(&metadata), serve);
    assert_eq!(caller, Ok(Caller::Workload(id("shop", "checkout"))));
}

#[tokio::test]
async fn an_unauthenticated_token_is_refused_with_the_api_servers_reason() {
    let (reviewer, mut api) = reviewer();
    let answer = reviewed(json!({
        "authenticated": false,
        "error": "[invalid bearer token, token has expired]",
        "user": {},
    }));
    let error = authenticate(&reviewer, &mut api, answer).await.unwrap_err();
    assert!(
        matches!(error, AuthError::TokenRejected { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("token has expired") && message.contains("istio-ca"),
        "{message}"
    );

    // No status at all is no authentication either.
    let answer = reviewed(Value::Null);
    let error = authenticate(&reviewer, &mut api, answer).await.unwrap_err();
    assert!(
        matches!(error, AuthError::TokenRejected { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (reviewer, mut api) = reviewer();
    let mut status = authenticated("system:serviceaccount:shop:checkout", None);
    status["audiences"] = json!(["https://kubernetes.default.svc.cluster.local"]);
    let error = authenticate(&reviewer, &mut api, reviewed(status))
        .await
        .unwrap_err();
    assert!(
        matches!(error, AuthError::TokenRejected { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_user_that_is_not_a_service_account_is_refused() {
    let (reviewer, mut api) = reviewer();
    let answer = reviewed(json!({
        "authenticated": true,
        "audiences": ["istio-ca"],
        "user": { "username": "system:node:node-1", "groups": ["system:nodes", "system:authenticated"] },
    }));
    let error = authenticate(&reviewer, &mut api, answer).await.unwrap_err();
    assert_eq!(
        error,
        AuthError::NotServiceAccount {
            username: "system:node:node-1".into()
        }
    );
}

#[tokio::test]
async fn an_api_server_error_is_retryable_and_fails_closed() {
    let (reviewer, mut api) = reviewer();
    let answer = failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "etcdserver: request timed out",
    );
    let error = authenticate(&reviewer, &mut api, answer).await.unwrap_err();
    assert!(
        matches!(error, AuthError::ReviewUnavailable { .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(error.to_string().contains("etcdserver"), "{error}");
}

#[tokio::test]
async fn a_review_forbidden_by_rbac_is_refused_with_what_to_check() {
    let (reviewer, mut api) = reviewer();
    let answer = failure(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:istio-system:istiod\" cannot create resource \"tokenreviews\"",
    );
    let error = authenticate(&reviewer, &mut api, answer).await.unwrap_err();
    assert!(
        matches!(error, AuthError::ReviewRefused { .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    let message = error.to_string();
    assert!(
        message.contains("`create` `tokenreviews.authentication.k8s.io`")
            && message.contains("cannot create resource"),
        "{message}"
    );
}

#[tokio::test]
async fn a_silent_api_server_times_out_as_retryable() {
    let config = TokenReviewConfig {
        timeout: Duration::from_millis(50),
        ..TokenReviewConfig::default()
    };
    let (reviewer, mut api) = reviewer_with(config);
    let metadata = bearer(TOKEN);
    let error = reviewer.authenticate(&metadata).await.unwrap_err();
    assert!(
        matches!(error, AuthError::ReviewUnavailable { .. }),
        "{error:?}"
    );
    // The request was sent, and never answered.
    let (request, _respond) = api.next_request().await.unwrap();
    assert_eq!(request.uri().path(), TOKEN_REVIEWS);
}

#[tokio::test]
async fn a_request_without_a_bearer_token_never_reaches_the_api_server() {
    let (reviewer, mut api) = reviewer();
    let error = reviewer
        .authenticate(&MetadataMap::new())
        .await
        .unwrap_err();
    assert_eq!(error, AuthError::MissingToken);
    let mut basic = MetadataMap::new();
    basic.insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    assert_eq!(
        reviewer.authenticate(&basic).await.unwrap_err(),
        AuthError::NotBearer
    );
    // With the client gone, the API server's queue ends: it never saw a request.
    drop(reviewer);
    let request = tokio::time::timeout(WAIT, api.next_request())
        .await
        .unwrap();
    assert!(request.is_none(), "the reviewer called the API server");
}

// --- through the CA service ---

/// `node-1` runs `shop/checkout`; nothing else runs anywhere.
struct OneWorkload;

impl NodeDirectory for OneWorkload {
    fn has_identity_on_node(&self, node: &str, identity: &Identity) -> bool {
        node == "node-1" && *identity == id("shop", "checkout")
    }
}

/// A CA service authenticating with a mocked TokenReview; its state
/// directory lives as long as the service needs the CA.
fn ca_service() -> (
    CaService<TokenReviewer, OneWorkload>,
    ApiServer,
    tempfile::TempDir,
) {
    let state = tempfile::TempDir::new().unwrap();
    let store = CaStore::open(state.path(), TRUST_DOMAIN, None).unwrap();
    let (reviewer, api) = reviewer();
    let service = CaService::new(
        store.ca().clone(),
        reviewer,
        OneWorkload,
        CaConfig::default(),
    );
    (service, api, state)
}

/// A ztunnel's request for `identity`: a CSR for it, impersonating it.
fn impersonating(identity: &Identity) -> tonic::Request<IstioCertificateRequest> {
    let key = identity::cert::generate_key().unwrap();
    let csr = identity::cert::build_csr(identity, &key).unwrap();
    let fields = BTreeMap::from([(
        IMPERSONATED_IDENTITY.to_owned(),
        ProtoValue {
            kind: Some(Kind::StringValue(identity.to_string())),
        },
    )]);
    let mut request = tonic::Request::new(IstioCertificateRequest {
        csr,
        validity_duration: 3600,
        metadata: Some(Struct { fields }),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

async fn create(
    service: &CaService<TokenReviewer, OneWorkload>,
    api: &mut ApiServer,
    identity: &Identity,
    answer: Response<Body>,
) -> Result<tonic::Response<proto::ca::IstioCertificateResponse>, tonic::Status> {
    let serve = answer_review(api, &["istio-ca"], answer);
    let (result, ()) = tokio::join!(service.create_certificate(impersonating(identity)), serve);
    result
}

#[tokio::test]
async fn a_ztunnel_obtains_workloads_on_its_own_node_only() {
    let (service, mut api, _state) = ca_service();
    let on_node_1 = || reviewed(authenticated(ZTUNNEL, Some("node-1")));
    let checkout = id("shop", "checkout");
    let response = create(&service, &mut api, &checkout, on_node_1())
        .await
        .unwrap();
    assert!(response.get_ref().cert_chain.len() >= 2);

    let status = create(&service, &mut api, &id("shop", "payments"), on_node_1())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let on_node_2 = reviewed(authenticated(ZTUNNEL, Some("node-2")));
    let status = create(&service, &mut api, &checkout, on_node_2)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let counts = service.stats().counts();
    assert_eq!((counts.issued, counts.denied), (1, 2));
}

#[tokio::test]
async fn review_failures_map_to_unavailable_or_unauthenticated() {
    let (service, mut api, _state) = ca_service();
    let checkout = id("shop", "checkout");
    let cases = [
        (
            failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "try again",
            ),
            Code::Unavailable,
        ),
        (
            failure(StatusCode::FORBIDDEN, "Forbidden", "cannot create resource"),
            Code::Unauthenticated,
        ),
        (
            reviewed(authenticated(ZTUNNEL, None)),
            Code::Unauthenticated,
        ),
        (
            reviewed(json!({ "authenticated": false })),
            Code::Unauthenticated,
        ),
    ];
    let mut seen = HashSet::new();
    for (answer, code) in cases {
        let status = create(&service, &mut api, &checkout, answer)
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        seen.insert(status.message().to_owned());
    }
    assert_eq!(seen.len(), 4, "each refusal says why: {seen:?}");
    let counts = service.stats().counts();
    assert_eq!(
        (counts.issued, counts.failed, counts.unauthenticated),
        (0, 1, 3)
    );
}

// --- mode selection in the server ---

/// Binds a server in `auth` mode and returns its state directory and the
/// token path it reports for `node-1`.
async fn bind(auth: istiod_lite::server::CaAuth) -> (tempfile::TempDir, std::path::PathBuf) {
    use istiod_lite::server::{Server, ServerConfig};
    let state = tempfile::TempDir::new().unwrap();
    let config = ServerConfig {
        state_dir: state.path().to_owned(),
        plugin_ca_dir: None,
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        pipeline: istiod_lite::pipeline::PipelineConfig::default(),
        ca: CaConfig::default(),
        auth,
    };
    let server = Server::bind(config).await.unwrap();
    let token_path = server.token_path("node-1");
    (state, token_path)
}

#[tokio::test]
async fn only_file_mode_keeps_bootstrap_tokens() {
    use istiod_lite::server::CaAuth;
    let (state, token_path) = bind(CaAuth::NodeTokens).await;
    assert!(state.path().join("tokens").is_dir());
    assert_eq!(token_path, state.path().join("tokens/node-1.token"));

    let (service, _api) = mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let auth = CaAuth::Kubernetes {
        client,
        review: TokenReviewConfig::default(),
    };
    let (state, token_path) = bind(auth).await;
    assert!(!state.path().join("tokens").exists());
    // Where file mode would keep it; nothing is written there.
    assert_eq!(token_path, state.path().join("tokens/node-1.token"));
    assert!(!token_path.exists());
}

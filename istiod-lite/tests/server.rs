//! The istiod-lite server as a proxy and an operator see it: TLS on the
//! gRPC port verified against the mesh root and the DNS name
//! `istiod.istio-system.svc`, the CA on the same port with a node token,
//! `/ready`, `/metrics`, the debug endpoints, and a graceful shutdown with
//! streams open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "server_support.rs"]
mod support;

use std::time::Duration;

use identity::Identity;
use istiod_lite::ca::IMPERSONATED_IDENTITY;
use istiod_lite::translate::{MeshConfig, pod_uid};
use prost_types::{Struct, Value, value::Kind};
use proto::ADDRESS_TYPE_URL;
use proto::ca::IstioCertificateRequest;
use proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use support::{ISTIOD_NAME, RawStream, Running, eventually, http_get, tls_channel};
use tonic::{Code, Request};

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
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: apps, labels: {app: web}}
spec: {nodeName: node-a, serviceAccountName: web, containers: []}
status: {podIP: 10.244.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: apps, labels: {app: db}}
spec: {nodeName: node-b, serviceAccountName: db, containers: []}
status: {podIP: 10.244.1.5}
";

async fn synced() -> Running {
    let running = Running::start(Duration::from_millis(20), Duration::from_millis(200)).await;
    running.upsert(MESH).await;
    running.synced().await;
    let pipeline = running.pipeline.clone();
    eventually("ready", || {
        let ready = pipeline.is_ready();
        async move { ready }
    })
    .await;
    running
}

fn csr_request(identity: &Identity, token: Option<&str>) -> Request<IstioCertificateRequest> {
    let key = identity::cert::generate_key().unwrap();
    let csr = identity::cert::build_csr(identity, &key).unwrap();
    let metadata = Struct {
        fields: [(
            IMPERSONATED_IDENTITY.to_owned(),
            Value {
                kind: Some(Kind::StringValue(identity.to_string())),
            },
        )]
        .into(),
    };
    let mut request = Request::new(IstioCertificateRequest {
        csr,
        validity_duration: 3600,
        metadata: Some(metadata),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn grpc_port_is_tls_for_the_istiod_name_under_the_mesh_root_only() {
    let running = synced().await;

    // Trusting the mesh root, checking istiod.istio-system.svc: served.
    let mut stream = RawStream::open(running.channel(), &running.xds_token())
        .await
        .unwrap();
    stream.subscribe(ADDRESS_TYPE_URL).await;
    let initial = stream.recv().await;
    assert_eq!(initial.type_url, ADDRESS_TYPE_URL);

    let root = std::fs::read(running.state.path().join("root-cert.pem")).unwrap();
    // Another name than the certificate's: the handshake fails.
    let wrong_name = tls_channel(running.grpc, &root, "istiod.elsewhere.svc");
    let error = RawStream::open(wrong_name, &running.xds_token())
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), Code::Unavailable, "{error}");

    // Another root: the handshake fails.
    let other = identity::Ca::self_signed("cluster.local", Duration::from_secs(3600)).unwrap();
    let other_root = other.roots_pem().concat();
    let untrusted = tls_channel(running.grpc, other_root.as_bytes(), ISTIOD_NAME);
    let error = RawStream::open(untrusted, &running.xds_token())
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), Code::Unavailable, "{error}");

    // The client address reaches the xDS server through our TLS wrapper.
    assert_eq!(running.ads.stats().snapshot().connected_clients, 1);
    running.shutdown().await;
}

#[tokio::test]
async fn discovery_streams_need_a_known_token() {
    let running = synced().await;
    // A known node token: served (the positive case of the test above).
    let mut stream = RawStream::open(running.channel(), &running.xds_token())
        .await
        .unwrap();
    stream.subscribe(ADDRESS_TYPE_URL).await;
    stream.recv().await;

    // An unknown token, and a stream without one at all: refused before
    // anything is served, and never admitted to the xDS server.
    let error = RawStream::open(running.channel(), "not-a-token")
        .await
        .err()
        .unwrap();
    assert_eq!(error.code(), Code::Unauthenticated, "{error}");
    assert!(error.message().contains("bearer token"), "{error}");
    let (requests, rx) = tokio::sync::mpsc::channel(1);
    let error = proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient::new(running.channel())
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .err()
        .unwrap();
    drop(requests);
    assert_eq!(error.code(), Code::Unauthenticated, "{error}");
    assert_eq!(running.ads.stats().snapshot().connected_clients, 1);
    running.shutdown().await;
}

#[tokio::test]
async fn ca_signs_over_the_tls_port_for_workloads_on_the_token_node_only() {
    let running = synced().await;
    // The pipeline created a bootstrap token for every node it saw.
    let token_a = running.token("node-a");
    assert!(!running.token("node-b").is_empty());
    let mut client = IstioCertificateServiceClient::new(running.channel());
    let web = Identity::new("cluster.local", "apps", "web").unwrap();
    let db = Identity::new("cluster.local", "apps", "db").unwrap();

    let response = client
        .create_certificate(csr_request(&web, Some(&token_a)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.cert_chain.len(), 2, "leaf, then root");
    let leaf = rustls_pki_types_der(&response.cert_chain[0]);
    let info = identity::cert::inspect(&leaf).unwrap();
    assert_eq!(info.uri_sans, vec![web.to_string()]);

    // db runs on node-b: node-a's token may not have it.
    let denied = client
        .create_certificate(csr_request(&db, Some(&token_a)))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");

    let anonymous = client
        .create_certificate(csr_request(&web, None))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous}");
    running.shutdown().await;
}

fn rustls_pki_types_der(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn ready_metrics_and_debug_endpoints_then_graceful_shutdown() {
    let running = Running::start(Duration::from_millis(20), Duration::from_millis(200)).await;
    let (status, body) = http_get(running.http, "/ready").await;
    assert_eq!(status, 503, "{body}");
    running.upsert(MESH).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(http_get(running.http, "/ready").await.0, 503);

    running.synced().await;
    let http = running.http;
    eventually("/ready answers 200", || async move {
        http_get(http, "/ready").await.0 == 200
    })
    .await;

    // A connected client, so the gauges and histogram have something.
    let mut stream = RawStream::open(running.channel(), &running.xds_token())
        .await
        .unwrap();
    stream.subscribe(ADDRESS_TYPE_URL).await;
    stream.recv().await;

    let (status, metrics) = http_get(running.http, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "pilot_xds ",
        "pilot_xds_pushes_total",
        "pilot_total_xds_rejects_total",
        "pilot_proxy_convergence_time_seconds_bucket",
        "istiod_lite_xds_resources{type=\"type.googleapis.com/istio.workload.Address\"} 3",
        "istiod_lite_csr_requests_total{result=\"issued\"}",
        "istiod_lite_debounce_batches_total",
        "istiod_lite_ready 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }

    let (status, dump) = http_get(running.http, "/debug/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let addresses = dump["resources"][ADDRESS_TYPE_URL].as_array().unwrap();
    let uid = pod_uid(&MeshConfig::default(), "apps", "web-1");
    let web = addresses.iter().find(|a| a["name"] == uid).unwrap();
    assert_eq!(web["kind"], "workload");
    assert_eq!(web["addresses"][0], "10.244.0.5");
    assert_eq!(web["node"], "node-a");
    assert!(!web["version"].as_str().unwrap().is_empty());
    assert!(
        addresses
            .iter()
            .any(|a| a["hostname"] == "web.apps.svc.cluster.local")
    );

    let (status, diagnostics) = http_get(running.http, "/debug/diagnostics").await;
    assert_eq!(status, 200);
    let diagnostics: serde_json::Value = serde_json::from_str(&diagnostics).unwrap();
    assert_eq!(diagnostics["synced"], true);
    assert!(diagnostics["diagnostics"].is_array());
    assert_eq!(http_get(running.http, "/nope").await.0, 404);

    // Shutdown with a stream open: it is ended, not waited out.
    let started = std::time::Instant::now();
    running.shutdown().await;
    assert!(started.elapsed() < istiod_lite::server::DRAIN_TIMEOUT);
    assert!(tokio::net::TcpStream::connect(http).await.is_err());
    drop(stream);
}

//! The proxies' side of the control plane connection against a real
//! istiod-lite: `xds::ChannelConfig` (TLS to 127.0.0.1 with the name
//! `istiod.istio-system.svc`, as `ALT_XDS_HOSTNAME` would give), the node's
//! bearer token from its file, `GrpcCaClient` asking for workload
//! certificates as Istio's ztunnel does, and a `DeltaClient` receiving the
//! full state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use identity::{CaClient, CertManager, CertManagerConfig, Identity, WorkloadCert};
use proto::core::Node;
use proto::discovery::Resource;
use proto::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use rustls::pki_types::ServerName;
use server_support::{ISTIOD_NAME, Running, eventually};
use tonic::Code;
use xds::{
    CaClientConfig, CaClientError, ChannelConfig, ClientConfig, ControlPlaneService, DeltaClient,
    GrpcCaClient, Rejection, ResourceHandler, TokenSource,
};

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
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: apps}
spec:
  selector: {matchLabels: {app: db}}
  rules: [{from: [{source: {principals: [cluster.local/ns/apps/sa/web]}}]}]
";

const HOUR: Duration = Duration::from_secs(60 * 60);

fn web() -> Identity {
    Identity::new("cluster.local", "apps", "web").unwrap()
}

fn db() -> Identity {
    Identity::new("cluster.local", "apps", "db").unwrap()
}

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

fn root_path(running: &Running) -> PathBuf {
    running.state.path().join("root-cert.pem")
}

fn node_token(running: &Running, node: &str) -> TokenSource {
    TokenSource::file(running.token_dir.join(format!("{node}.token")))
}

/// The server by IP, verified by its DNS name: `ALT_*_HOSTNAME`'s job.
fn channel_config(running: &Running, service: ControlPlaneService) -> ChannelConfig {
    let mut config = ChannelConfig::new(
        service,
        format!("https://{}", running.grpc),
        root_path(running),
    );
    config.server_name = Some(ISTIOD_NAME.to_owned());
    config
}

fn ca_client(running: &Running, token: TokenSource, ttl: Duration) -> GrpcCaClient {
    let mut config = CaClientConfig::new(channel_config(running, ControlPlaneService::Ca), token);
    config.ttl = ttl;
    GrpcCaClient::new(config).unwrap()
}

/// An in-memory mTLS handshake between two holders of `cert`, each side
/// verifying the other against the roots the certificate carries.
async fn handshake_with_itself(cert: &WorkloadCert) {
    let server = identity::tls::server_config(cert).unwrap();
    let client = identity::tls::client_config(cert, std::slice::from_ref(&cert.identity)).unwrap();
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    // HBONE checks the URI SAN, not this name.
    let name = ServerName::try_from("workload").unwrap();
    let (accepted, connected) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
    let accepted = accepted.unwrap();
    connected.unwrap();
    assert_eq!(
        identity::tls::peer_identity(accepted.get_ref().1).unwrap(),
        cert.identity
    );
}

#[tokio::test]
async fn node_token_obtains_a_certificate_for_a_workload_on_its_node() {
    let running = synced().await;
    let client = ca_client(&running, node_token(&running, "node-a"), HOUR);
    // Through the cert manager, as ztunnel will use it.
    let manager = CertManager::new(client, CertManagerConfig::default());
    let cert = manager.fetch(&web()).await.unwrap();

    assert_eq!(cert.identity, web());
    assert_eq!(cert.info.uri_sans, vec![web().to_string()]);
    // The trust roots are the root file's, and the chain leads to them.
    let root_pem = std::fs::read_to_string(root_path(&running)).unwrap();
    let roots: Vec<String> = cert.roots.iter().map(identity::cert::to_pem).collect();
    assert_eq!(roots.concat(), root_pem);
    assert!(!cert.chain.iter().any(|c| cert.roots.contains(c)));
    handshake_with_itself(&cert).await;
    running.shutdown().await;
}

#[tokio::test]
async fn node_token_is_refused_a_workload_on_another_node() {
    let running = synced().await;
    let client = ca_client(&running, node_token(&running, "node-a"), HOUR);
    let error = client.request_certificate(&db()).await.unwrap_err();
    let CaClientError::Rpc { code, .. } = &error else {
        panic!("expected a refusal, got {error}");
    };
    assert_eq!(*code, Code::PermissionDenied, "{error}");
    let message = error.to_string();
    assert!(message.contains(&running.grpc.to_string()), "{message}");
    assert!(message.contains("node-a"), "{message}");

    // node-b's own token does get it.
    let client = ca_client(&running, node_token(&running, "node-b"), HOUR);
    let cert = client.fetch_certificate(&db()).await.unwrap();
    assert_eq!(cert.identity, db());
    running.shutdown().await;
}

#[tokio::test]
async fn wrong_or_missing_token_is_refused() {
    let running = synced().await;
    let client = ca_client(&running, TokenSource::fixed("not-a-node-token"), HOUR);
    let error = client.request_certificate(&web()).await.unwrap_err();
    assert!(
        matches!(
            error,
            CaClientError::Rpc {
                code: Code::Unauthenticated,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("AUTH_TOKEN"), "{error}");

    let client = ca_client(&running, TokenSource::None, HOUR);
    let error = client.request_certificate(&web()).await.unwrap_err();
    assert!(
        matches!(
            error,
            CaClientError::Rpc {
                code: Code::Unauthenticated,
                ..
            }
        ),
        "{error}"
    );

    // A token file that is not there: nothing is sent, the path is named.
    let absent = running.token_dir.join("node-z.token");
    let client = ca_client(&running, TokenSource::file(&absent), HOUR);
    let error = client.request_certificate(&web()).await.unwrap_err();
    assert!(matches!(error, CaClientError::Token { .. }), "{error}");
    assert!(
        error.to_string().contains(&absent.display().to_string()),
        "{error}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn ttl_is_honoured_under_the_cap() {
    let running = synced().await;
    let remaining = |cert: &WorkloadCert| {
        cert.info
            .not_after
            .duration_since(SystemTime::now())
            .unwrap()
    };
    let close_to = |actual: Duration, expected: Duration| {
        actual <= expected && actual + Duration::from_secs(30) >= expected
    };

    let client = ca_client(&running, node_token(&running, "node-a"), HOUR);
    let cert = client.request_certificate(&web()).await.unwrap();
    assert!(close_to(remaining(&cert), HOUR), "{:?}", cert.info);

    // istiod-lite caps lifetimes at 24 h, as istiod does by default.
    let client = ca_client(&running, node_token(&running, "node-a"), 48 * HOUR);
    let cert = client.request_certificate(&web()).await.unwrap();
    assert!(close_to(remaining(&cert), 24 * HOUR), "{:?}", cert.info);
    running.shutdown().await;
}

#[tokio::test]
async fn handshake_failures_say_what_to_fix() {
    let running = synced().await;
    let mut channel = channel_config(&running, ControlPlaneService::Ca);
    channel.server_name = Some("istiod.elsewhere.svc".to_owned());
    let client =
        GrpcCaClient::new(CaClientConfig::new(channel, node_token(&running, "node-a"))).unwrap();
    let error = client.request_certificate(&web()).await.unwrap_err();
    assert!(
        matches!(
            error,
            CaClientError::Rpc {
                code: Code::Unavailable,
                ..
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    assert!(message.contains("TLS handshake"), "{message}");
    assert!(message.contains("istiod.elsewhere.svc"), "{message}");
    assert!(message.contains("ALT_CA_HOSTNAME"), "{message}");
    running.shutdown().await;
}

/// Holds `(type URL, name) -> version`, as a proxy's state would.
#[derive(Default)]
struct Held(Mutex<BTreeMap<(String, String), String>>);

impl ResourceHandler for Held {
    fn apply(
        &self,
        type_url: &str,
        upserts: Vec<Resource>,
        removals: Vec<String>,
    ) -> Result<(), Vec<Rejection>> {
        let mut held = self.0.lock().unwrap();
        for resource in upserts {
            held.insert((type_url.to_owned(), resource.name), resource.version);
        }
        for name in removals {
            held.remove(&(type_url.to_owned(), name));
        }
        Ok(())
    }
}

#[tokio::test]
async fn delta_client_with_a_token_receives_the_full_state_over_tls() {
    let running = synced().await;
    let store = running.ads.store().clone();
    let mut expected = BTreeMap::new();
    for type_url in [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL] {
        for (name, version) in store.versions(type_url) {
            expected.insert((type_url.to_owned(), name), version);
        }
    }
    assert!(
        expected.keys().any(|(t, _)| t == AUTHORIZATION_TYPE_URL),
        "the mesh has a policy"
    );

    let channel = channel_config(&running, ControlPlaneService::Xds)
        .connect_lazy()
        .unwrap();
    let node = Node {
        id: "ztunnel~10.0.0.1~node-a~istio-system.svc.cluster.local".to_owned(),
        ..Node::default()
    };
    let types = vec![
        ADDRESS_TYPE_URL.to_owned(),
        AUTHORIZATION_TYPE_URL.to_owned(),
    ];
    let mut config = ClientConfig::new(node, types);
    config.token = node_token(&running, "node-a");
    let held = Arc::new(Held::default());
    let client = DeltaClient::new(channel, config, held.clone());
    let status = client.status();
    let task = tokio::spawn(client.run());

    eventually("the full state", || {
        let done = status.borrow().synced && *held.0.lock().unwrap() == expected;
        async move { done }
    })
    .await;
    assert!(status.borrow().connected);
    assert_eq!(status.borrow().nacks, 0);
    assert_eq!(running.ads.stats().snapshot().connected_clients, 1);
    task.abort();
    running.shutdown().await;
}

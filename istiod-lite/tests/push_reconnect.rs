//! Delta ADS through a real istiod-lite, for the two things a proxy relies
//! on beyond plain pushes: a reconnect that declares what it holds
//! (`initial_resource_versions`) gets only what changed meanwhile, and a
//! NACK is counted on `/metrics`, logged with the client and the error, and
//! leaves the stream open and pushing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "server_support.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use istiod_lite::model::{ObjectKey, ObjectKind};
use istiod_lite::sources::Change;
use istiod_lite::translate::{MeshConfig, pod_uid};
use proto::ADDRESS_TYPE_URL;
use proto::core::Node;
use proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use support::{Running, WAIT, eventually, http_get, objects};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

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
";

const SERVICE: &str = "apps/web.apps.svc.cluster.local";

fn pod(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: apps, labels: {{app: web}}}}\n\
         spec: {{nodeName: node-a, serviceAccountName: web, containers: []}}\nstatus: {{podIP: {ip}}}\n"
    )
}

fn uid(name: &str) -> String {
    pod_uid(&MeshConfig::default(), "apps", name)
}

fn versions(response: &DeltaDiscoveryResponse) -> BTreeMap<String, String> {
    response
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect()
}

/// A server with `MESH` and pods `web-1..=3` synced and pushed.
async fn synced_mesh() -> Running {
    let running = Running::start(Duration::from_millis(20), Duration::from_millis(200)).await;
    let mut yaml = MESH.to_string();
    for i in 1..=3 {
        yaml.push_str(&format!(
            "---\n{}",
            pod(&format!("web-{i}"), &format!("10.244.0.{i}"))
        ));
    }
    running.upsert(&yaml).await;
    running.synced().await;
    eventually("the first full push", || async {
        running.pipeline.is_ready()
    })
    .await;
    running
}

/// A delta ADS stream driven by hand: nothing is ACKed unless a test says so.
struct Client {
    requests: mpsc::Sender<DeltaDiscoveryRequest>,
    responses: Streaming<DeltaDiscoveryResponse>,
}

impl Client {
    /// Opens a stream as node `node_id` and subscribes to every address,
    /// declaring `held` (name -> version) as already held.
    async fn connect(running: &Running, node_id: &str, held: BTreeMap<String, String>) -> Client {
        let (requests, rx) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        let bearer = format!("Bearer {}", running.xds_token());
        request
            .metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        let responses = AggregatedDiscoveryServiceClient::new(running.channel())
            .delta_aggregated_resources(request)
            .await
            .unwrap()
            .into_inner();
        let client = Client {
            requests,
            responses,
        };
        client
            .send(DeltaDiscoveryRequest {
                node: Some(Node {
                    id: node_id.to_string(),
                    ..Node::default()
                }),
                type_url: ADDRESS_TYPE_URL.to_string(),
                initial_resource_versions: held,
                ..DeltaDiscoveryRequest::default()
            })
            .await;
        client
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.requests.send(request).await.unwrap();
    }

    /// The next response, not ACKed.
    async fn next(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.responses.message())
            .await
            .expect("no response in time")
            .unwrap()
            .expect("stream ended")
    }

    /// A response if one arrives within `within`.
    async fn next_within(&mut self, within: Duration) -> Option<DeltaDiscoveryResponse> {
        match tokio::time::timeout(within, self.responses.message()).await {
            Ok(message) => Some(message.unwrap().expect("stream ended")),
            Err(_) => None,
        }
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    }

    async fn nack(&self, response: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            error_detail: Some(proto::rpc::Status {
                code: 3,
                message: message.to_string(),
                details: vec![],
            }),
            ..DeltaDiscoveryRequest::default()
        })
        .await;
    }
}

#[tokio::test]
async fn reconnect_with_initial_versions_gets_only_what_changed_meanwhile() {
    let running = synced_mesh().await;
    let node = "ztunnel~10.0.0.1~node-a~istio-system.svc.cluster.local";

    // First connection: the full state, ACKed, then gone.
    let mut client = Client::connect(&running, node, BTreeMap::new()).await;
    let initial = client.next().await;
    client.ack(&initial).await;
    let held = versions(&initial);
    let all: BTreeSet<String> = [uid("web-1"), uid("web-2"), uid("web-3"), SERVICE.into()].into();
    assert_eq!(held.keys().cloned().collect::<BTreeSet<_>>(), all);
    drop(client);
    eventually("the first stream closed", || async {
        running.ads.stats().snapshot().connected_clients == 0
    })
    .await;

    // Meanwhile: web-1 moves, web-2 goes, web-4 comes.
    let mut changes: Vec<Change> = objects(&pod("web-1", "10.244.0.11"))
        .into_iter()
        .chain(objects(&pod("web-4", "10.244.0.4")))
        .map(Change::Upsert)
        .collect();
    changes.push(Change::Remove(ObjectKey::new(
        ObjectKind::Pod,
        "apps",
        "web-2",
    )));
    running.send(changes).await;
    let store = running.ads.store().clone();
    let stored =
        || -> BTreeMap<String, String> { store.versions(ADDRESS_TYPE_URL).into_iter().collect() };
    eventually("the changes pushed into the store", || async {
        let now = stored();
        now.contains_key(&uid("web-4"))
            && !now.contains_key(&uid("web-2"))
            && now.get(&uid("web-1")) != held.get(&uid("web-1"))
    })
    .await;

    // Reconnect declaring what it holds: only the difference comes back.
    let mut client = Client::connect(&running, node, held.clone()).await;
    let first = client.next().await;
    let now = stored();
    let expected: BTreeMap<String, String> = [uid("web-1"), uid("web-4")]
        .into_iter()
        .map(|name| {
            let version = now[&name].clone();
            (name, version)
        })
        .collect();
    assert_eq!(versions(&first), expected, "unchanged resources resent");
    assert_eq!(first.removed_resources, vec![uid("web-2")]);
    assert_eq!(now.get(&uid("web-3")), held.get(&uid("web-3")));
    assert_eq!(now.get(SERVICE), held.get(SERVICE));

    // And nothing else follows: the client is in sync.
    client.ack(&first).await;
    let extra = client.next_within(Duration::from_millis(300)).await;
    assert!(extra.is_none(), "unexpected push: {extra:?}");
    running.shutdown().await;
}

/// A log sink for the test binary's subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines().map(str::to_owned).collect()
    }
}

fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

#[tokio::test]
async fn nack_is_counted_logged_and_the_stream_keeps_pushing() {
    // Global, not scoped to this thread: a scoped subscriber can miss events
    // while another test registers the same callsites. The other test's logs
    // land here too; the NACK line is told apart by its node id.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber)
        .expect("only this test sets a subscriber in this binary");

    let running = synced_mesh().await;
    let node = "ztunnel~10.0.0.7~node-nack~istio-system.svc.cluster.local";
    let mut client = Client::connect(&running, node, BTreeMap::new()).await;
    let initial = client.next().await;
    assert!(versions(&initial).contains_key(&uid("web-1")));
    let error = "workload web-1: address is not valid (test)";
    client.nack(&initial, error).await;

    // Counted on the HTTP port, under istiod's metric name.
    let http = running.http;
    eventually("the NACK counted on /metrics", || async move {
        let (status, metrics) = http_get(http, "/metrics").await;
        status == 200 && metric(&metrics, "pilot_total_xds_rejects_total") == Some(1.0)
    })
    .await;
    let (_, metrics) = http_get(http, "/metrics").await;
    assert_eq!(metric(&metrics, "istiod_lite_xds_acks_total"), Some(0.0));

    // Logged with the client's node id and the error.
    let logged = captured
        .lines()
        .into_iter()
        .find(|line| line.contains("NACK") && line.contains(node))
        .unwrap_or_else(|| panic!("no NACK logged in:\n{}", captured.lines().join("\n")));
    assert!(logged.contains("WARN"), "{logged}");
    assert!(
        logged.contains(&format!("node.id={node}")),
        "node id missing: {logged}"
    );
    assert!(
        logged.contains(&format!("error.message={error}")),
        "error missing: {logged}"
    );

    // No resend of the rejected version, the stream stays open, and the next
    // change still arrives.
    let resent = client.next_within(Duration::from_millis(300)).await;
    assert!(resent.is_none(), "rejected state resent: {resent:?}");
    assert_eq!(running.ads.stats().snapshot().connected_clients, 1);
    running.upsert(&pod("web-5", "10.244.0.5")).await;
    let pushed = client.next().await;
    assert_eq!(
        versions(&pushed).into_keys().collect::<Vec<_>>(),
        vec![uid("web-5")]
    );
    client.ack(&pushed).await;
    running.shutdown().await;
}

//! `DestinationRule` `connectionPool` limits on the waypoint's upstream
//! connections, translated by the real istiod-lite, against a real
//! upstream that holds every answer until the test lets them go (so that
//! the tests wait on arrivals, not on time):
//!
//! - `tcp.maxConnections: 1` with `http.http1MaxPendingRequests: 1`:
//!   of three parallel HTTP/1 requests one is sent, one waits for its
//!   connection and one is refused with 503 `UO`; without limits all
//!   three reach the app at once, each on a connection of its own;
//! - a request waiting for a connection is bounded by its route's timeout
//!   and leaves the line when it times out;
//! - `http.maxRequestsPerConnection: 1`: the app sees a new connection
//!   per request; without it, one connection carries them all;
//! - `http.idleTimeout: 1s`: the waypoint closes its upstream connection
//!   once idle for a second and opens a new one for the next request,
//!   while, without it (Istio's default, 1 hour), a connection idle at
//!   least as long stays open.

// The helpers below are test code too: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::{Mesh, NODE_B, WAIT, eventually, ip, pod, vip};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use waypoint::balance::Limits;
use waypoint::route::ServiceKey;

const HOST: &str = "held.b.svc.cluster.local";

/// Envoy's body for a request refused by a circuit breaker.
const OVERFLOW_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow\n";

/// At most one upstream connection, and one request waiting for it.
const ONE_CONNECTION: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: held
  namespace: b
spec:
  host: held
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
---
";

const IDLE_ONE_SECOND: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: held
  namespace: b
spec:
  host: held
  trafficPolicy:
    connectionPool:
      http:
        idleTimeout: 1s
---
";

const ONE_REQUEST_PER_CONNECTION: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: held
  namespace: b
spec:
  host: held
  trafficPolicy:
    connectionPool:
      http:
        maxRequestsPerConnection: 1
---
";

/// `/timed...` may take 300 ms in all; anything else has no timeout.
const TIMED_ROUTE: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: held
  namespace: b
  creationTimestamp: "2024-05-01T10:00:00Z"
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: held
    port: 80
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /timed
    timeouts:
      request: 300ms
    backendRefs:
    - name: held
      port: 80
  - backendRefs:
    - name: held
      port: 80
---
"#;

/// The app behind service `held`, and the test's hold on it.
struct Held {
    /// TCP connections it has accepted.
    connections: Arc<AtomicUsize>,
    /// Of those, the ones that have ended.
    closed: Arc<AtomicUsize>,
    /// One message per request that has reached it.
    arrivals: mpsc::UnboundedReceiver<()>,
    /// `true`: every request held is answered, and every later one at once.
    release: watch::Sender<bool>,
}

impl Held {
    /// Waits for the next request to reach the app.
    async fn arrival(&mut self) {
        timeout(WAIT, self.arrivals.recv())
            .await
            .expect("a request reaches the app in time")
            .expect("the app runs");
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

/// An HTTP/1 app at `addr` that answers `held <path>` once released.
async fn held_app(addr: SocketAddr) -> Held {
    let listener = TcpListener::bind(addr).await.unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let (release, released) = watch::channel(false);
    let closed = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    let ended = closed.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let arrived = arrived.clone();
            let released = released.clone();
            let ended = ended.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let arrived = arrived.clone();
                    let mut released = released.clone();
                    async move {
                        let _ = arrived.send(());
                        let _ = released.wait_for(|go| *go).await;
                        let text = format!("held {}", request.uri().path());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Held {
        connections,
        closed,
        arrivals,
        release,
    }
}

/// The mesh plus service `held` (VIP `.5`, port 80 to 8080) with one pod
/// on node B at `.23` running [`held_app`], and `extra_yaml`. Returns once
/// the waypoint knows the endpoint and has `limits` for the service.
async fn held_mesh(net: u8, extra_yaml: &str, limits: Limits) -> (Mesh, Held) {
    let held = held_app(SocketAddr::new(ip(net, 23), 8080)).await;
    let mut yaml = pod("b", "held", "held", NODE_B, ip(net, 23), "app: held");
    yaml.push_str(&format!(
        "apiVersion: v1
kind: Service
metadata:
  name: held
  namespace: b
spec:
  clusterIP: {vip}
  selector:
    app: held
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
{extra_yaml}",
        vip = vip(net, 5)
    ));
    let mesh = Mesh::start(net, &yaml).await;
    eventually("the waypoint to know the endpoint of held", || {
        let state = mesh.waypoint.mesh().snapshot();
        let ready = state
            .service_by_vip("", vip(net, 5))
            .is_some_and(|service| state.endpoints(service).any(|w| w.healthy));
        async move { ready }
    })
    .await;
    eventually("the waypoint to have held's limits", || {
        let applied = mesh
            .waypoint
            .config()
            .snapshot()
            .backend_policy(HOST)
            .map_or(Limits::default(), |policy| policy.limits);
        async move { applied == limits }
    })
    .await;
    (mesh, held)
}

/// A new HTTP/1.1 client connection from pod `a` to service `held`.
async fn client(mesh: &Mesh) -> SendRequest<Empty<Bytes>> {
    let tcp = mesh.connect(SocketAddr::new(vip(mesh.net, 5), 80)).await;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// One GET: status and body.
async fn get(client: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, String) {
    let request = Request::get(path)
        .header("host", HOST)
        .body(Empty::new())
        .unwrap();
    client.ready().await.unwrap();
    let response = timeout(WAIT, client.send_request(request))
        .await
        .expect("an answer in time")
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The same GET on `count` client connections at once, each on a task.
async fn in_parallel(mesh: &Mesh, count: usize, path: &'static str) -> JoinSet<(u16, String)> {
    let mut requests = JoinSet::new();
    for _ in 0..count {
        let mut client = client(mesh).await;
        requests.spawn(async move { get(&mut client, path).await });
    }
    requests
}

async fn next_answer(requests: &mut JoinSet<(u16, String)>) -> (u16, String) {
    timeout(WAIT, requests.join_next())
        .await
        .expect("an answer in time")
        .expect("a request is left")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_and_one_pending_request_queue_the_second_and_refuse_the_third() {
    let limits = Limits {
        max_connections: Some(1),
        max_pending_requests: Some(1),
        ..Limits::default()
    };
    let (mesh, mut held) = held_mesh(90, ONE_CONNECTION, limits).await;
    let mut requests = in_parallel(&mesh, 3, "/limited").await;
    held.arrival().await;
    // While the app holds the one request it has, the only answer that
    // can come is the refusal.
    let refused = next_answer(&mut requests).await;
    assert_eq!(refused, (503, OVERFLOW_BODY.to_owned()));
    assert!(
        held.arrivals.try_recv().is_err(),
        "the waiting request is not sent while the connection is busy"
    );
    held.release.send_replace(true);
    for _ in 0..2 {
        let answered = next_answer(&mut requests).await;
        assert_eq!(answered, (200, "held /limited".to_owned()));
    }
    // The waiting one was sent on the connection the first one freed.
    assert_eq!(held.connections(), 1);
    let overflowed = support::wait_for_events(
        1,
        &[
            "request complete",
            "path=/limited",
            "response_code=503",
            "response_flags=\"UO\"",
            // The reason names the limit that refused it.
            "http1MaxPendingRequests",
        ],
    )
    .await;
    assert_eq!(overflowed.len(), 1, "{overflowed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_limits_parallel_requests_each_get_a_connection() {
    let (mesh, mut held) = held_mesh(91, "", Limits::default()).await;
    let mut requests = in_parallel(&mesh, 3, "/unlimited").await;
    // All three reach the app before it answers any.
    for _ in 0..3 {
        held.arrival().await;
    }
    held.release.send_replace(true);
    for _ in 0..3 {
        let answered = next_answer(&mut requests).await;
        assert_eq!(answered, (200, "held /unlimited".to_owned()));
    }
    assert_eq!(held.connections(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_for_a_connection_times_out_and_leaves_the_line() {
    let limits = Limits {
        max_connections: Some(1),
        max_pending_requests: Some(1),
        ..Limits::default()
    };
    let (mesh, mut held) = held_mesh(92, &format!("{ONE_CONNECTION}{TIMED_ROUTE}"), limits).await;
    let key = ServiceKey {
        hostname: HOST.into(),
        port: 80,
    };
    eventually("the waypoint to have held's route", || {
        let applied = mesh.waypoint.config().snapshot().routes(&key).is_some();
        async move { applied }
    })
    .await;
    let mut busy = in_parallel(&mesh, 1, "/busy").await;
    held.arrival().await;
    // Each waits in the line of one until its route's timeout: had the
    // first stayed in it, the second would be refused at once (503).
    for _ in 0..2 {
        let mut client = client(&mesh).await;
        let (status, body) = get(&mut client, "/timed").await;
        assert_eq!(status, 504, "{body}");
    }
    assert!(
        held.arrivals.try_recv().is_err(),
        "no timed-out request reached the app"
    );
    held.release.send_replace(true);
    assert_eq!(next_answer(&mut busy).await, (200, "held /busy".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_per_connection_opens_a_connection_for_each() {
    let limits = Limits {
        max_requests_per_connection: Some(1),
        ..Limits::default()
    };
    let (mesh, held) = held_mesh(93, ONE_REQUEST_PER_CONNECTION, limits).await;
    held.release.send_replace(true);
    let mut client = client(&mesh).await;
    for i in 1..=3 {
        let (status, body) = get(&mut client, &format!("/once/{i}")).await;
        assert_eq!((status, body), (200, format!("held /once/{i}")));
        // Each connection was accepted before its request was answered.
        assert_eq!(held.connections(), i, "a connection per request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_per_connection_limit_one_connection_carries_every_request() {
    let (mesh, held) = held_mesh(94, "", Limits::default()).await;
    held.release.send_replace(true);
    let mut client = client(&mesh).await;
    for i in 1..=3 {
        let (status, body) = get(&mut client, &format!("/kept/{i}")).await;
        assert_eq!((status, body), (200, format!("held /kept/{i}")));
    }
    assert_eq!(held.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upstream_connection_is_closed_at_the_idle_timeout_and_kept_without_one() {
    let idle = Limits {
        idle_timeout: Some(Duration::from_secs(1)),
        ..Limits::default()
    };
    let (timed_mesh, timed) = held_mesh(95, IDLE_ONE_SECOND, idle).await;
    let (kept_mesh, kept) = held_mesh(96, "", Limits::default()).await;
    timed.release.send_replace(true);
    kept.release.send_replace(true);
    // The one without an idle timeout goes first: it has been idle at
    // least as long as the other when that one is closed.
    let mut kept_client = client(&kept_mesh).await;
    let answer = get(&mut kept_client, "/kept/1").await;
    assert_eq!(answer, (200, "held /kept/1".to_owned()));
    let mut timed_client = client(&timed_mesh).await;
    let answer = get(&mut timed_client, "/idle/1").await;
    assert_eq!(answer, (200, "held /idle/1".to_owned()));
    let idle_since = Instant::now();
    eventually("the waypoint to close its idle upstream connection", || {
        let closed = timed.closed();
        async move { closed == 1 }
    })
    .await;
    assert!(
        idle_since.elapsed() >= Duration::from_millis(900),
        "closed at the idle timeout, not before"
    );
    assert_eq!(kept.closed(), 0, "Istio's default keeps it for an hour");
    // The client kept its connection to the waypoint: only the upstream
    // one was closed, and the next request opens another.
    let answer = get(&mut timed_client, "/idle/2").await;
    assert_eq!(answer, (200, "held /idle/2".to_owned()));
    assert_eq!(timed.connections(), 2);
    let answer = get(&mut kept_client, "/kept/2").await;
    assert_eq!(answer, (200, "held /kept/2".to_owned()));
    assert_eq!((kept.connections(), kept.closed()), (1, 0));
}

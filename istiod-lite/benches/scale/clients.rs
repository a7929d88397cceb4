//! The simulated proxies: each a real [`xds::DeltaClient`] on its own TLS
//! connection (its own HTTP/2 channel), subscribed to addresses and
//! authorizations, ACKing what it applies. A handler per client records
//! when the first response of each type arrived and, for the probe
//! workload, which health status arrived when; the TCP stream under TLS
//! counts the bytes received. [`wait_full`] and [`wait_probe`] turn those
//! records into the bench's figures, or into an error naming the client
//! that did not converge.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hyper_util::rt::TokioIo;
use prost::Message;
use proto::core::Node;
use proto::discovery::Resource;
use proto::workload::{Address, WorkloadStatus, address};
use proto::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
use xds::{ClientConfig, DeltaClient, Rejection, ResourceHandler, TokenSource};

use super::server::Istiod;

/// The DNS name clients verify, as ztunnel does by default.
const ISTIOD_NAME: &str = "istiod.istio-system.svc";

/// What one client has seen so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct View {
    /// Address resources received until the full state was complete.
    pub(crate) addresses: Option<usize>,
    /// Authorization resources received until the full state was complete.
    pub(crate) authorizations: Option<usize>,
    /// When the client held the full state of both types.
    pub(crate) full_at: Option<Instant>,
    /// The probe workload's latest `WorkloadStatus` and when it arrived.
    pub(crate) probe: Option<(i32, Instant)>,
}

/// One running client: its view and its byte counter.
#[derive(Debug)]
pub(crate) struct Client {
    pub(crate) view: watch::Receiver<View>,
    pub(crate) bytes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts `count` clients against `grpc`, trusting the root in `root_pem`.
/// Client `i` authenticates as node `i % NODES` with that node's bootstrap
/// token from `state_dir`, as a ztunnel there would. Must run inside a tokio
/// runtime.
pub(crate) fn start(
    count: usize,
    grpc: SocketAddr,
    root_pem: &[u8],
    probe_uid: &str,
    state_dir: &std::path::Path,
) -> anyhow::Result<Vec<Client>> {
    let tls = Arc::new(tls_config(root_pem)?);
    let name = ServerName::try_from(ISTIOD_NAME).context("bad server name")?;
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let bytes = Arc::new(AtomicU64::new(0));
        let connector = TlsConnector {
            addr: grpc,
            name: name.clone(),
            config: tls.clone(),
            bytes: bytes.clone(),
        };
        // One lazy channel per client: its own TCP + TLS + HTTP/2 connection.
        let channel: Channel = Endpoint::from_static("http://istiod.istio-system.svc:15012")
            .connect_with_connector_lazy(connector);
        let (view_tx, view) = watch::channel(View::default());
        let handler = Arc::new(ProbeHandler {
            probe_uid: probe_uid.to_owned(),
            view: view_tx,
        });
        let node = Node {
            id: format!(
                "ztunnel~10.0.{}.{}~ztunnel-{i}.istio-system~istio-system.svc.cluster.local",
                i / 250,
                i % 250 + 1
            ),
            ..Node::default()
        };
        let mut config = ClientConfig::new(
            node,
            vec![
                ADDRESS_TYPE_URL.to_owned(),
                AUTHORIZATION_TYPE_URL.to_owned(),
            ],
        );
        let token = state_dir
            .join("tokens")
            .join(format!("node-{:02}.token", i % super::mesh::NODES));
        config.token = TokenSource::file(token);
        let task = tokio::spawn(DeltaClient::new(channel, config, handler).run());
        clients.push(Client { view, bytes, task });
    }
    Ok(clients)
}

/// Waits until every client holds the full state and checks that it is the
/// whole store. Returns the first and the last client's time from spawn.
pub(crate) async fn wait_full(
    istiod: &mut Istiod,
    clients: &[Client],
    addresses: usize,
    authorizations: usize,
    within: Duration,
) -> anyhow::Result<(Duration, Duration)> {
    let deadline = Instant::now() + within;
    let mut times = Vec::with_capacity(clients.len());
    for (i, client) in clients.iter().enumerate() {
        let mut view = client.view.clone();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let waited = tokio::time::timeout(remaining, view.wait_for(|v| v.full_at.is_some())).await;
        let full = match waited {
            Ok(Ok(view)) => view.clone(),
            _ => {
                istiod.check_alive()?;
                let done = clients
                    .iter()
                    .filter(|c| c.view.borrow().full_at.is_some())
                    .count();
                bail!(
                    "only {done} of {} clients received the full state within {within:?} \
                     (client {i} did not)",
                    clients.len()
                );
            }
        };
        if full.addresses != Some(addresses) || full.authorizations != Some(authorizations) {
            bail!(
                "client {i}'s initial responses held {:?} addresses and {:?} authorizations; the \
                 server holds {addresses} and {authorizations}",
                full.addresses,
                full.authorizations
            );
        }
        if full.probe.map(|(status, _)| status) != Some(WorkloadStatus::Healthy as i32) {
            bail!("client {i} does not hold the probe workload as healthy after the full push");
        }
        if let Some(at) = full.full_at {
            times.push(at.duration_since(istiod.started));
        }
    }
    let first = times.iter().min().copied().unwrap_or_default();
    let last = times.iter().max().copied().unwrap_or_default();
    Ok((first, last))
}

/// Waits until every client holds the probe workload with `status`, received
/// after `changed_at`. Returns each client's latency.
pub(crate) async fn wait_probe(
    istiod: &mut Istiod,
    clients: &[Client],
    status: i32,
    changed_at: Instant,
    within: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let deadline = changed_at + within;
    let mut latencies = Vec::with_capacity(clients.len());
    for (i, client) in clients.iter().enumerate() {
        let mut view = client.view.clone();
        let arrived = |v: &View| {
            v.probe
                .is_some_and(|(seen, at)| seen == status && at >= changed_at)
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(remaining, view.wait_for(arrived)).await {
            Ok(Ok(view)) => {
                if let Some((_, at)) = view.probe {
                    latencies.push(at.duration_since(changed_at));
                }
            }
            _ => {
                istiod.check_alive()?;
                let done = clients.iter().filter(|c| arrived(&c.view.borrow())).count();
                bail!(
                    "the probe pod's readiness change reached only {done} of {} clients within \
                     {within:?} (client {i} did not); log tail:\n{}",
                    clients.len(),
                    istiod.log_tail(20)
                );
            }
        }
    }
    Ok(latencies)
}

fn tls_config(root_pem: &[u8]) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(root_pem) {
        roots
            .add(cert.context("root-cert.pem holds a bad certificate")?)
            .context("root-cert.pem holds an unusable certificate")?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(identity::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 unavailable")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Records the first full state and probe arrivals; accepts everything else
/// without decoding it (a real proxy's conversion cost is not ours).
struct ProbeHandler {
    probe_uid: String,
    view: watch::Sender<View>,
}

impl ResourceHandler for ProbeHandler {
    fn apply(
        &self,
        type_url: &str,
        upserts: Vec<Resource>,
        _removals: Vec<String>,
    ) -> Result<(), Vec<Rejection>> {
        let now = Instant::now();
        let mut rejected = Vec::new();
        let mut probe = None;
        if type_url == ADDRESS_TYPE_URL
            && let Some(resource) = upserts.iter().find(|r| r.name == self.probe_uid)
        {
            match workload_status(resource) {
                Ok(status) => probe = Some((status, now)),
                Err(reason) => rejected.push(Rejection {
                    name: resource.name.clone(),
                    reason,
                }),
            }
        }
        self.view.send_modify(|view| {
            let first = match type_url {
                ADDRESS_TYPE_URL => &mut view.addresses,
                _ => &mut view.authorizations,
            };
            // The first state arrives in several responses (the server
            // bounds their size): count until the mesh is complete.
            if view.full_at.is_none() {
                *first.get_or_insert(0) += upserts.len();
            }
            if view.full_at.is_none()
                && view.addresses >= Some(super::mesh::PODS + super::mesh::SERVICES)
                && view.authorizations >= Some(super::mesh::POLICIES)
            {
                view.full_at = Some(now);
            }
            if probe.is_some() {
                view.probe = probe;
            }
        });
        if rejected.is_empty() {
            Ok(())
        } else {
            Err(rejected)
        }
    }
}

fn workload_status(resource: &Resource) -> Result<i32, String> {
    let body = resource.resource.as_ref().ok_or("no body")?;
    let address = Address::decode(body.value.as_slice()).map_err(|e| e.to_string())?;
    match address.r#type {
        Some(address::Type::Workload(workload)) => Ok(workload.status),
        other => Err(format!("expected a workload, got {other:?}")),
    }
}

/// Connects TCP to a fixed address and runs the TLS handshake for a fixed
/// server name, counting the bytes read off the socket.
#[derive(Clone)]
struct TlsConnector {
    addr: SocketAddr,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    bytes: Arc<AtomicU64>,
}

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<Counted>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(this.addr).await?;
            tcp.set_nodelay(true)?;
            let counted = Counted {
                inner: tcp,
                bytes: this.bytes,
            };
            let tls = tokio_rustls::TlsConnector::from(this.config)
                .connect(this.name, counted)
                .await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A TCP stream that counts the bytes it reads.
struct Counted {
    inner: TcpStream,
    bytes: Arc<AtomicU64>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.bytes.fetch_add(read as u64, Ordering::Relaxed);
        poll
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

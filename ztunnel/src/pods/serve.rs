//! Setting up one pod: its listeners, its redirection rules and the
//! connector its proxy dials with, in either capture mode. Blocking (it
//! enters namespaces and runs `nft`): call it from `spawn_blocking`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use hbone::{ConnectFuture, Connector};
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tracing::warn;

use super::PodError;
use super::plan::DesiredPod;
use crate::capture::{self, NetnsConnector, PodNetns, Redirection, rules};
use crate::proxy::{self, Proxy};

/// How ztunnel serves its node's pods.
#[derive(Debug, Clone)]
pub enum CaptureMode {
    /// In-pod: listeners and redirection rules inside each pod's network
    /// namespace, found by the pod's IP among those in `dir`
    /// (`/var/run/netns` for named namespaces, `/proc` on a node).
    Netns {
        dir: PathBuf,
        redirection: Redirection,
    },
    /// No capture: HBONE on `<pod-ip>:15008` and SOCKS5 on `<pod-ip>:15080`
    /// in ztunnel's own namespace, for hosts where pods are addresses (local
    /// development, tests). Apps opt in by using the SOCKS5 proxy.
    Explicit,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Hbone,
    Outbound,
    InboundPlaintext,
    Socks5,
}

/// A pod ready to be served.
#[derive(Debug)]
pub(super) struct Prepared {
    listeners: Vec<(Role, std::net::TcpListener)>,
    connector: Arc<dyn Connector>,
    /// The pod's namespace, when captured in one (to remove its rules).
    pub(super) netns: Option<PodNetns>,
    /// How the pod is served, for `/config_dump`.
    pub(super) capture: String,
}

// === impl CaptureMode ===

impl CaptureMode {
    /// Finds the pod, binds its listeners, installs its rules.
    pub(super) fn prepare(&self, pod: &DesiredPod) -> Result<Prepared, PodError> {
        match self {
            CaptureMode::Netns { dir, redirection } => prepare_netns(dir, *redirection, pod),
            CaptureMode::Explicit => prepare_explicit(pod),
        }
    }
}

fn prepare_netns(
    dir: &PathBuf,
    redirection: Redirection,
    pod: &DesiredPod,
) -> Result<Prepared, PodError> {
    let ip = pod.addresses[0];
    let netns = capture::find_by_ip(dir, ip)?.ok_or_else(|| PodError::NoNetns {
        ip,
        dir: dir.clone(),
    })?;
    let mut listeners = Vec::new();
    let mut unspecified = vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)];
    if pod.addresses.iter().any(IpAddr::is_ipv6) {
        unspecified.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
    for any in unspecified {
        for (role, port) in [
            (Role::Outbound, redirection.outbound_port),
            (Role::InboundPlaintext, redirection.inbound_port),
            (Role::Hbone, redirection.hbone_port),
        ] {
            listeners.push((role, netns.bind(SocketAddr::new(any, port))?));
        }
    }
    // Listeners first: the moment the rules are in, redirected connections
    // must find someone listening.
    rules::install(&netns, &redirection)?;
    let connector = NetnsConnector::new(netns.clone(), redirection.mark);
    Ok(Prepared {
        listeners,
        connector: Arc::new(connector),
        capture: format!("netns {}", netns.path().display()),
        netns: Some(netns),
    })
}

fn prepare_explicit(pod: &DesiredPod) -> Result<Prepared, PodError> {
    let mut listeners = Vec::new();
    for ip in &pod.addresses {
        for (role, port) in [
            (Role::Hbone, proxy::INBOUND_HBONE_PORT),
            (Role::Socks5, proxy::SOCKS5_PORT),
        ] {
            let addr = SocketAddr::new(*ip, port);
            let listener = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|source| PodError::Bind { addr, source })?;
            listeners.push((role, listener));
        }
    }
    Ok(Prepared {
        listeners,
        connector: Arc::new(SourceConnector(pod.addresses.clone())),
        netns: None,
        capture: "explicit".to_owned(),
    })
}

// === impl Prepared ===

impl Prepared {
    pub(super) fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }

    /// Serves every listener with `proxy` on the pod's thread `on` until
    /// `stop` turns true (or its sender is dropped). Each listener is
    /// registered with that runtime's reactor, inside its task, so accepts
    /// never wait on the control runtime.
    pub(super) fn spawn(self, proxy: &Proxy, stop: &watch::Receiver<bool>, on: &Handle) {
        for (role, listener) in self.listeners {
            let (proxy, stop) = (proxy.clone(), stop.clone());
            on.spawn(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        warn!(%error, ?role, pod.uid = %proxy.workload_uid(), "cannot serve a listener of the pod");
                        return;
                    }
                };
                match role {
                    Role::Hbone => proxy.serve_inbound(listener, stop).await,
                    Role::Outbound => proxy.serve_outbound(listener, stop).await,
                    Role::InboundPlaintext => proxy.serve_inbound_plaintext(listener, stop).await,
                    Role::Socks5 => proxy.serve_socks5(listener, stop).await,
                }
            });
        }
    }
}

/// Dials from the pod's own address (explicit mode), so that peers see the
/// pod's IP as the source, as they would with capture.
#[derive(Debug)]
struct SourceConnector(Vec<IpAddr>);

impl Connector for SourceConnector {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_> {
        Box::pin(async move {
            let socket = match addr {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            if let Some(ip) = self.0.iter().find(|ip| ip.is_ipv4() == addr.is_ipv4()) {
                socket.bind(SocketAddr::new(*ip, 0))?;
            }
            socket.connect(addr).await
        })
    }
}

//! The proxies' connection to the control plane: a lazy tonic [`Channel`]
//! over TLS 1.3 with ALPN `h2`, as Istio's ztunnel opens to istiod.
//!
//! # The idea
//!
//! A proxy reaches the control plane at `XDS_ADDRESS` / `CA_ADDRESS`
//! (`https://host:port` or `host:port`), trusts only the root(s) in
//! `XDS_ROOT_CA` / `CA_ROOT_CA`, and checks that the server's certificate
//! names the host of the address, or `ALT_XDS_HOSTNAME` / `ALT_CA_HOSTNAME`
//! when the address is an IP or a name the certificate does not carry. It
//! presents no certificate: it proves who it is with a bearer token on each
//! stream or request ([`crate::token`]).
//!
//! The channel is lazy, so that a proxy starts while the control plane is
//! away: building it only parses the address and reads the root file, and
//! those are the errors it reports. Each (re)connect resolves the host again
//! (a replaced control plane may have moved), connects and handshakes within
//! one timeout, and fails with a message saying which step failed and what to
//! check; that message is what callers find in the `UNAVAILABLE` status.
//! HTTP/2 keepalive pings detect a control plane that vanished without
//! closing the connection (a lost node, a partition), which TCP alone notices
//! only after many minutes.
//!
//! The roots are read once, when the channel is built, as Istio's ztunnel
//! does: a root rotation that replaces the file needs a restart.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use identity::tls::ALPN_H2;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, DnsName, ServerName, TrustAnchor};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

#[cfg(test)]
mod tests;

/// Where Istio's proxies find istiod unless told otherwise.
pub const DEFAULT_ADDRESS: &str = "https://istiod.istio-system.svc:15012";

/// Where Istio's proxies find the mesh root unless told otherwise.
pub const DEFAULT_ROOT_CERT: &str = "./var/run/secrets/istio/root-cert.pem";

/// The port of an `https://` address that names none.
const HTTPS_PORT: u16 = 443;

/// Which of the proxy's two control plane connections a channel is for. It
/// only decides which environment variables error messages point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPlaneService {
    /// Discovery (delta ADS): `XDS_ADDRESS`, `XDS_ROOT_CA`, `ALT_XDS_HOSTNAME`.
    Xds,
    /// Certificates: `CA_ADDRESS`, `CA_ROOT_CA`, `ALT_CA_HOSTNAME`.
    Ca,
}

/// A parsed control plane address: a host to resolve (or an IP) and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneAddress {
    host: Host,
    port: u16,
}

/// The host part of a [`ControlPlaneAddress`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Resolved on every connect.
    Dns(String),
    Ip(IpAddr),
}

/// Why an address cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("it is not a URI ({0})")]
    Malformed(String),
    #[error(
        "scheme {0}:// is not supported: the control plane is reached over TLS only, use https://"
    )]
    Scheme(String),
    #[error("it has no port: write host:port, e.g. istiod.istio-system.svc:15012")]
    NoPort,
    #[error("port {0:?} is not a number from 1 to 65535")]
    Port(String),
    #[error("it has a path or query ({0:?}): give only https://host:port")]
    Path(String),
    #[error("it carries user information: give only https://host:port")]
    UserInfo,
    #[error("host {0:?} is neither an IP address nor a valid DNS name")]
    Host(String),
}

/// How to reach one control plane service.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    /// Which connection this is; names the environment variables in errors.
    pub service: ControlPlaneService,
    /// `https://host:port` or `host:port`; DNS names are resolved on every
    /// connect.
    pub address: String,
    /// PEM file with the root(s) the control plane's certificate must chain to.
    pub root_cert: PathBuf,
    /// The name the server's certificate must carry, instead of the
    /// address's host (Istio's `ALT_XDS_HOSTNAME` / `ALT_CA_HOSTNAME`).
    pub server_name: Option<String>,
    /// Bounds resolving, connecting and the TLS handshake together.
    pub connect_timeout: Duration,
    /// An HTTP/2 PING is sent after this long without a frame from the server.
    pub keepalive_interval: Duration,
    /// The connection is closed when a PING is not answered within this.
    pub keepalive_timeout: Duration,
}

/// Why a channel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("control plane address {address:?} cannot be used: {source}; set {env}")]
    Address {
        address: String,
        env: &'static str,
        #[source]
        source: AddressError,
    },
    #[error(
        "cannot read the root certificate at {path}: {source}; set {env} to the mesh root \
         certificate file (istiod-lite writes root-cert.pem to its state directory)"
    )]
    RootRead {
        path: PathBuf,
        env: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the root certificate file {path} is not valid PEM: {reason}; check {env}")]
    RootPem {
        path: PathBuf,
        env: &'static str,
        reason: String,
    },
    #[error(
        "no certificate in {path}: it must hold the mesh root as a PEM CERTIFICATE block; \
         check {env}"
    )]
    NoRoot { path: PathBuf, env: &'static str },
    #[error("the certificate in {path} is not a usable trust anchor: {reason}; check {env}")]
    BadRoot {
        path: PathBuf,
        env: &'static str,
        reason: String,
    },
    #[error(
        "server name {name:?} is neither a DNS name nor an IP address; check {env}, or leave it \
         unset to verify the host of the address"
    )]
    ServerName { name: String, env: &'static str },
    #[error("cannot build the TLS config for the control plane: {0}")]
    Tls(#[source] rustls::Error),
}

/// The roots read from a [`ChannelConfig::root_cert`] file, validated as
/// trust anchors; shared with the CA client, which trusts the same roots.
#[derive(Debug, Clone)]
pub(crate) struct TrustRoots {
    pub(crate) path: PathBuf,
    pub(crate) certs: Vec<CertificateDer<'static>>,
    pub(crate) anchors: Vec<TrustAnchor<'static>>,
}

/// The connector tonic calls for every new connection.
#[derive(Debug, Clone)]
struct Connector {
    dialer: Arc<Dialer>,
}

/// Everything a connect needs, shared by the connector's clones.
struct Dialer {
    service: ControlPlaneService,
    address: ControlPlaneAddress,
    server_name: ServerName<'static>,
    /// What errors name: `address` as `host:port`, the name verified, and
    /// the root file; shared so that an error is cheap to make and small.
    authority: Arc<str>,
    server_name_text: Arc<str>,
    root_cert: Arc<Path>,
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
}

/// Why one connection attempt failed. Its message becomes the message of the
/// `UNAVAILABLE` status the caller sees, so it carries its causes inline.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    #[error(
        "cannot resolve {host}: {source}: is the control plane address ({env}) right, and is \
         DNS reachable?"
    )]
    Resolve {
        host: String,
        env: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to no address: is the control plane address ({env}) right?")]
    NoAddresses { host: String, env: &'static str },
    #[error(
        "connect to {address}{} failed: {source}: is the control plane running, and is port \
         {port} reachable?",
        via(.address, .peer)
    )]
    Connect {
        address: Arc<str>,
        peer: SocketAddr,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "connecting to {address} timed out after {timeout:?}: is the control plane running, and \
         is port {port} reachable (network policy, firewall)?"
    )]
    TimedOut {
        address: Arc<str>,
        port: u16,
        timeout: Duration,
    },
    #[error(
        "TLS handshake with {address}{} failed: {source}: the control plane's certificate must \
         chain to the root in {} ({}) and name {server_name} (override the name with {})",
        via(.address, .peer), .root_cert.display(), .service.root_cert_env(),
        .service.server_name_env()
    )]
    Handshake {
        service: ControlPlaneService,
        address: Arc<str>,
        peer: SocketAddr,
        root_cert: Arc<Path>,
        server_name: Arc<str>,
        #[source]
        source: std::io::Error,
    },
    #[error("{address} did not agree to HTTP/2 (ALPN h2): is it a gRPC control plane?")]
    NoHttp2 { address: Arc<str> },
}

/// " (10.96.0.10:15012)" after a DNS name, nothing after the same address.
fn via(address: &str, peer: &SocketAddr) -> String {
    if peer.to_string() == address {
        String::new()
    } else {
        format!(" ({peer})")
    }
}

// === impl ControlPlaneService ===

impl ControlPlaneService {
    /// The variable holding the address.
    pub fn address_env(self) -> &'static str {
        match self {
            ControlPlaneService::Xds => "XDS_ADDRESS",
            ControlPlaneService::Ca => "CA_ADDRESS",
        }
    }

    /// The variable holding the root certificate file.
    pub fn root_cert_env(self) -> &'static str {
        match self {
            ControlPlaneService::Xds => "XDS_ROOT_CA",
            ControlPlaneService::Ca => "CA_ROOT_CA",
        }
    }

    /// The variable overriding the name verified in the server's certificate.
    pub fn server_name_env(self) -> &'static str {
        match self {
            ControlPlaneService::Xds => "ALT_XDS_HOSTNAME",
            ControlPlaneService::Ca => "ALT_CA_HOSTNAME",
        }
    }
}

impl fmt::Display for ControlPlaneService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ControlPlaneService::Xds => "xDS",
            ControlPlaneService::Ca => "CA",
        })
    }
}

// === impl ControlPlaneAddress ===

impl ControlPlaneAddress {
    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for ControlPlaneAddress {
    type Err = AddressError;

    /// Parses `https://host:port`, `https://host` (port 443) or `host:port`,
    /// with a DNS name, an IPv4 address or a bracketed IPv6 address.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uri: Uri = s
            .parse()
            .map_err(|e: tonic::codegen::http::uri::InvalidUri| {
                AddressError::Malformed(e.to_string())
            })?;
        let default_port = match uri.scheme_str() {
            None => None,
            Some(scheme) if scheme.eq_ignore_ascii_case("https") => Some(HTTPS_PORT),
            Some(other) => return Err(AddressError::Scheme(other.to_owned())),
        };
        if let Some(path) = uri.path_and_query()
            && (path.query().is_some() || !matches!(path.path(), "" | "/"))
        {
            return Err(AddressError::Path(path.as_str().to_owned()));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| AddressError::Malformed("no host".to_owned()))?;
        if authority.as_str().contains('@') {
            return Err(AddressError::UserInfo);
        }
        // Read the port text ourselves: `Authority::port` hides one that
        // does not fit a u16, which must not fall back to the default.
        let port_text = authority
            .as_str()
            .strip_prefix(authority.host())
            .and_then(|rest| rest.strip_prefix(':'));
        let port = match (port_text, default_port) {
            (Some(text), _) => match text.parse::<u16>() {
                Ok(0) | Err(_) => return Err(AddressError::Port(text.to_owned())),
                Ok(port) => port,
            },
            (None, Some(port)) => port,
            (None, None) => return Err(AddressError::NoPort),
        };
        let raw_host = authority.host();
        let bare = raw_host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(raw_host);
        let host = if let Ok(ip) = bare.parse::<IpAddr>() {
            Host::Ip(ip)
        } else if DnsName::try_from(bare).is_ok() && !raw_host.starts_with('[') {
            Host::Dns(bare.to_owned())
        } else {
            return Err(AddressError::Host(raw_host.to_owned()));
        };
        Ok(ControlPlaneAddress { host, port })
    }
}

/// `host:port`, with IPv6 addresses in brackets: the URI authority.
impl fmt::Display for ControlPlaneAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Dns(name) => write!(f, "{name}:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
        }
    }
}

// === impl ChannelConfig ===

impl ChannelConfig {
    /// Istio's settings: connect within 5 s, HTTP/2 PING after 30 s of
    /// silence, give up on the connection 10 s later.
    pub fn new(
        service: ControlPlaneService,
        address: impl Into<String>,
        root_cert: impl Into<PathBuf>,
    ) -> Self {
        ChannelConfig {
            service,
            address: address.into(),
            root_cert: root_cert.into(),
            server_name: None,
            connect_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }

    /// Builds the channel without connecting: the first request connects,
    /// and a failed connection is retried by the next request. Must be
    /// called inside a Tokio runtime (the channel spawns its worker task).
    pub fn connect_lazy(&self) -> Result<Channel, ChannelError> {
        let roots = self.load_roots()?;
        self.connect_lazy_with(&roots)
    }

    /// The parsed address, with the error naming the variable to fix.
    pub fn parsed_address(&self) -> Result<ControlPlaneAddress, ChannelError> {
        self.address
            .parse()
            .map_err(|source| ChannelError::Address {
                address: self.address.clone(),
                env: self.service.address_env(),
                source,
            })
    }

    /// Reads and validates the root file.
    pub(crate) fn load_roots(&self) -> Result<TrustRoots, ChannelError> {
        let path = &self.root_cert;
        let env = self.service.root_cert_env();
        let pem = std::fs::read(path).map_err(|source| ChannelError::RootRead {
            path: path.clone(),
            env,
            source,
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ChannelError::RootPem {
                path: path.clone(),
                env,
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(ChannelError::NoRoot {
                path: path.clone(),
                env,
            });
        }
        let anchors = certs
            .iter()
            .map(|cert| webpki::anchor_from_trusted_cert(cert).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ChannelError::BadRoot {
                path: path.clone(),
                env,
                reason: e.to_string(),
            })?;
        Ok(TrustRoots {
            path: path.clone(),
            certs,
            anchors,
        })
    }

    /// [`ChannelConfig::connect_lazy`] with roots already read.
    pub(crate) fn connect_lazy_with(&self, roots: &TrustRoots) -> Result<Channel, ChannelError> {
        let dialer = self.dialer(roots)?;
        // The connector decides where to connect and does TLS itself; the
        // endpoint's URI is plain `http` so that tonic never adds TLS of its
        // own, while the origin gives requests their real scheme and authority.
        let authority = dialer.authority.clone();
        let bad_uri = |e: &dyn fmt::Display| ChannelError::Address {
            address: self.address.clone(),
            env: self.service.address_env(),
            source: AddressError::Malformed(e.to_string()),
        };
        let origin: Uri = format!("https://{authority}")
            .parse()
            .map_err(|e| bad_uri(&e))?;
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| bad_uri(&e))?
            .origin(origin)
            .http2_keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout);
        let connector = Connector {
            dialer: Arc::new(dialer),
        };
        Ok(endpoint.connect_with_connector_lazy(connector))
    }

    /// The address, the name to verify and the TLS config, checked.
    fn dialer(&self, roots: &TrustRoots) -> Result<Dialer, ChannelError> {
        let address = self.parsed_address()?;
        let server_name = match &self.server_name {
            Some(name) => {
                ServerName::try_from(name.clone()).map_err(|_| ChannelError::ServerName {
                    name: name.clone(),
                    env: self.service.server_name_env(),
                })?
            }
            // The address's host passed the same checks when it was parsed.
            None => ServerName::try_from(address.host.to_string()).map_err(|_| {
                ChannelError::Address {
                    address: self.address.clone(),
                    env: self.service.address_env(),
                    source: AddressError::Host(address.host.to_string()),
                }
            })?,
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(identity::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(ChannelError::Tls)?
            .with_root_certificates(rustls::RootCertStore {
                roots: roots.anchors.clone(),
            })
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Dialer {
            service: self.service,
            authority: address.to_string().into(),
            server_name_text: server_name.to_str().into(),
            address,
            server_name,
            root_cert: roots.path.as_path().into(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout: self.connect_timeout,
        })
    }
}

// === impl Connector ===

impl tonic::codegen::Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    /// The URI only carries the authority; the dialer knows where to go.
    fn call(&mut self, _: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        Box::pin(async move { dialer.dial().await.map(TokioIo::new) })
    }
}

// === impl Dialer ===

impl Dialer {
    async fn dial(&self) -> Result<TlsStream<TcpStream>, DialError> {
        let result = tokio::time::timeout(self.connect_timeout, self.dial_untimed())
            .await
            .unwrap_or_else(|_| {
                Err(DialError::TimedOut {
                    address: self.authority.clone(),
                    port: self.address.port,
                    timeout: self.connect_timeout,
                })
            });
        match &result {
            Ok(_) => {
                debug!(service = %self.service, addr = %self.address, "connected to the control plane")
            }
            Err(error) => {
                debug!(service = %self.service, addr = %self.address, %error, "cannot connect to the control plane")
            }
        }
        result
    }

    /// Resolves, then tries each address in turn until one accepts.
    async fn dial_untimed(&self) -> Result<TlsStream<TcpStream>, DialError> {
        let env = self.service.address_env();
        let port = self.address.port;
        let candidates: Vec<SocketAddr> = match &self.address.host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Dns(name) => tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|source| DialError::Resolve {
                    host: name.clone(),
                    env,
                    source,
                })?
                .collect(),
        };
        let mut last_error = None;
        for peer in candidates {
            match TcpStream::connect(peer).await {
                Ok(tcp) => return self.handshake(peer, tcp).await,
                Err(source) => {
                    debug!(addr = %self.address, %peer, error = %source, "TCP connect failed");
                    last_error = Some(DialError::Connect {
                        address: self.authority.clone(),
                        peer,
                        port,
                        source,
                    });
                }
            }
        }
        Err(last_error.unwrap_or_else(|| DialError::NoAddresses {
            host: self.address.host.to_string(),
            env,
        }))
    }

    async fn handshake(
        &self,
        peer: SocketAddr,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, DialError> {
        // gRPC sends small frames that must not wait for Nagle.
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|source| DialError::Handshake {
                address: self.authority.clone(),
                peer,
                service: self.service,
                root_cert: self.root_cert.clone(),
                server_name: self.server_name_text.clone(),
                source,
            })?;
        if tls.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
            return Err(DialError::NoHttp2 {
                address: self.authority.clone(),
            });
        }
        Ok(tls)
    }
}

impl fmt::Debug for Dialer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialer")
            .field("service", &self.service)
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

// === impl Host ===

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Dns(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

//! Why a proxied connection failed. The message goes to the access log
//! (`error`), so it says which hop failed and what to check; the peer only
//! ever sees a status code or a closed connection.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use identity::CertManagerError;

use super::route::RouteError;
use super::socks5::Socks5Error;
use crate::connections::PipeError;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "this proxy's workload {0} is not in the state: has the control plane sent it to this node?"
    )]
    UnknownLocalWorkload(Arc<str>),
    #[error("no certificate to present: {0}")]
    Certificate(#[source] CertManagerError),
    #[error("{0}")]
    Route(#[from] RouteError),
    #[error("HBONE: {0}")]
    Hbone(#[from] hbone::Error),
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connect to {addr} timed out after {after:?}")]
    ConnectTimeout { addr: SocketAddr, after: Duration },
    #[error(
        "cannot read the original destination (SO_ORIGINAL_DST): {0}: \
         was the connection redirected by the pod's capture rules?"
    )]
    OriginalDst(#[source] io::Error),
    #[error(
        "the connection was not redirected (its original destination is the listener {0} \
         itself): connect to the application's address, not to the capture port"
    )]
    NotRedirected(SocketAddr),
    #[error("invalid :authority {authority:?}: {reason}")]
    BadAuthority {
        authority: String,
        reason: &'static str,
    },
    #[error("destination {dst} is not an address of this pod ({workload})")]
    NotThisPod { dst: SocketAddr, workload: Arc<str> },
    #[error("policy: {0}")]
    Denied(String),
    #[error("SOCKS5: {0}")]
    Socks5(#[from] Socks5Error),
    #[error("SOCKS5 handshake did not finish within {0:?}")]
    Socks5Timeout(Duration),
    #[error("answering the HBONE request failed: {0}")]
    Answer(#[source] h2::Error),
    #[error("connection broke while proxying: {0}")]
    Io(#[from] io::Error),
    #[error("closed by ztunnel: {0}")]
    Revoked(String),
}

impl From<PipeError> for ProxyError {
    fn from(error: PipeError) -> Self {
        match error {
            PipeError::Io(error) => ProxyError::Io(error),
            PipeError::Revoked(reason) => ProxyError::Revoked(reason),
        }
    }
}

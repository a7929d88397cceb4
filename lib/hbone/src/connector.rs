//! How the pool opens its TCP connections.
//!
//! A node proxy dials from inside the source pod's network namespace, with a
//! socket mark, so that the destination sees the pod's address and the pod's
//! own redirection rules let the connection out. Creating such a socket is
//! the caller's business; the pool only asks a [`Connector`] for a
//! connected stream.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::net::TcpStream;

/// The future a [`Connector`] returns.
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send + 'a>>;

/// Opens TCP connections for the pool.
pub trait Connector: Send + Sync + fmt::Debug + 'static {
    /// A connected stream to `addr`. The pool bounds the call with its
    /// connect timeout.
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_>;
}

/// Plain `connect(2)` from the process's own network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectConnector;

// === impl DirectConnector ===

impl Connector for DirectConnector {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_> {
        Box::pin(TcpStream::connect(addr))
    }
}

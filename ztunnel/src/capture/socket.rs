//! Sockets ztunnel opens *from* a pod: HBONE to other nodes on the pod's
//! behalf, and plaintext to the pod's own app for inbound traffic.
//!
//! Such a socket must be created inside the pod's namespace (so the
//! destination sees the pod's address and the pod's routes apply) and carry
//! ztunnel's mark (so the pod's rules do not redirect it back to ztunnel).
//! Only creation needs the namespace: connecting, reading and writing are
//! ordinary tokio I/O afterwards.
//!
//! Spawning a thread per connection would put a thread spawn on every
//! connection's critical path, so each [`NetnsConnector`] keeps one OS
//! thread that entered the namespace once and makes sockets on request; a
//! connection costs a channel round trip.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::mpsc;

use hbone::{ConnectFuture, Connector};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tracing::debug;

use super::{Error, PodNetns};

/// Stack of a socket thread, which only calls `socket(2)` and `setsockopt(2)`.
const SOCKET_THREAD_STACK: usize = 128 * 1024;

/// A request to the namespace's socket thread.
struct SocketRequest {
    domain: Domain,
    reply: oneshot::Sender<io::Result<Socket>>,
}

/// Opens marked TCP connections from inside a pod's network namespace; the
/// HBONE pool's [`Connector`] for that pod.
///
/// Clones share one socket thread. The thread ends when the last clone is
/// dropped (its request channel closes).
#[derive(Debug, Clone)]
pub struct NetnsConnector {
    /// The pod's namespace, where the sockets are made.
    netns: PodNetns,
    /// `SO_MARK` of every socket, which the pod's rules let through.
    mark: u32,
    /// Requests to the socket thread.
    requests: mpsc::Sender<SocketRequest>,
}

// === impl NetnsConnector ===

impl NetnsConnector {
    /// Starts the socket thread for `netns`, returning once it has entered
    /// the namespace (or failed to). Blocking for that short while.
    pub fn new(netns: PodNetns, mark: u32) -> Result<Self, Error> {
        let (requests, incoming) = mpsc::channel::<SocketRequest>();
        let (entered_tx, entered_rx) = mpsc::sync_channel::<Result<(), Error>>(1);
        let thread_netns = netns.clone();
        std::thread::Builder::new()
            .name("ztunnel-netns-sockets".into())
            // It only makes sockets; one per pod adds up.
            .stack_size(SOCKET_THREAD_STACK)
            .spawn(move || {
                let entered = thread_netns.enter_current_thread();
                let ok = entered.is_ok();
                // The constructor waits for this message; it cannot have
                // gone away.
                let _ = entered_tx.send(entered);
                if !ok {
                    return;
                }
                // Dropping the descriptor does not leave the namespace.
                drop(thread_netns);
                while let Ok(request) = incoming.recv() {
                    // The requester may have given up (timeout); nothing
                    // to do then, the socket just closes.
                    let _ = request.reply.send(marked_socket(request.domain, mark));
                }
            })
            .map_err(|source| Error::Thread {
                path: netns.path().to_path_buf(),
                source,
            })?;
        match entered_rx.recv() {
            Ok(entered) => entered?,
            // The thread ended without a word: it panicked.
            Err(_) => {
                return Err(Error::Thread {
                    path: netns.path().to_path_buf(),
                    source: io::Error::other("the netns socket thread died while starting"),
                });
            }
        }
        debug!(netns = %netns.path().display(), mark, "netns socket thread started");
        Ok(NetnsConnector {
            netns,
            mark,
            requests,
        })
    }

    /// The namespace sockets are made in.
    pub fn netns(&self) -> &PodNetns {
        &self.netns
    }

    /// The mark every socket carries.
    pub fn mark(&self) -> u32 {
        self.mark
    }

    /// An unconnected, marked TCP socket of `addr`'s family inside the pod,
    /// for callers that set options (keepalive, nodelay) before connecting.
    pub async fn socket_for(&self, addr: SocketAddr) -> io::Result<TcpSocket> {
        let (reply, response) = oneshot::channel();
        let request = SocketRequest {
            domain: Domain::for_address(addr),
            reply,
        };
        let gone = || {
            io::Error::other(format!(
                "the socket thread of network namespace {} has stopped",
                self.netns.path().display()
            ))
        };
        self.requests.send(request).map_err(|_| gone())?;
        let socket = response.await.map_err(|_| gone())??;
        Ok(TcpSocket::from_std_stream(socket.into()))
    }
}

impl Connector for NetnsConnector {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_> {
        Box::pin(async move { self.socket_for(addr).await?.connect(addr).await })
    }
}

/// Runs on the socket thread: a nonblocking, close-on-exec, marked socket.
fn marked_socket(domain: Domain, mark: u32) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_mark(mark)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The destination a redirected connection was addressed to before the
/// pod's rules sent it to ztunnel (`SO_ORIGINAL_DST`, from conntrack), for
/// a std or tokio `TcpStream` accepted on a capture listener.
pub fn original_dst(stream: &impl AsFd) -> io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let original = if socket.local_addr()?.is_ipv4() {
        socket.original_dst_v4()?
    } else {
        socket.original_dst_v6()?
    };
    original.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_ORIGINAL_DST returned a non-IP address",
        )
    })
}

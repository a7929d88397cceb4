//! Sockets ztunnel opens *from* a pod: HBONE to other nodes on the pod's
//! behalf, and plaintext to the pod's own app for inbound traffic.
//!
//! Such a socket must be created inside the pod's namespace (so the
//! destination sees the pod's address and the pod's routes apply) and carry
//! ztunnel's mark (so the pod's rules do not redirect it back to ztunnel).
//! Only creation needs the namespace: connecting, reading and writing are
//! ordinary tokio I/O afterwards.
//!
//! The calling thread, a tokio worker, enters the pod's namespace, makes the
//! socket and returns to its own namespace, all in one synchronous call:
//! nothing else can run on the thread in between. It costs two `setns(2)`
//! calls. Handing the work to a thread that lives in the namespace cost a
//! wake-up of that thread and of the task on every new connection, on a
//! machine whose cores are busy with the traffic itself (docs/performance.md).
//! A thread that cannot return would make its later sockets in the pod, so
//! then the process aborts rather than run on.

use std::cell::OnceCell;
use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;

use hbone::{ConnectFuture, Connector};
use nix::sched::CloneFlags;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::TcpSocket;

use super::PodNetns;

thread_local! {
    /// The namespace this thread runs in outside [`in_netns`], opened the
    /// first time the thread makes a socket in a pod.
    static HOME: OnceCell<File> = const { OnceCell::new() };
}

/// Opens marked TCP connections from inside a pod's network namespace; the
/// HBONE pool's [`Connector`] for that pod. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NetnsConnector {
    /// The pod's namespace, where the sockets are made.
    netns: PodNetns,
    /// `SO_MARK` of every socket, which the pod's rules let through.
    mark: u32,
}

// === impl NetnsConnector ===

impl NetnsConnector {
    pub fn new(netns: PodNetns, mark: u32) -> Self {
        NetnsConnector { netns, mark }
    }

    /// An unconnected, marked TCP socket of `addr`'s family inside the pod,
    /// for callers that set options (keepalive, nodelay) before connecting.
    pub fn socket_for(&self, addr: SocketAddr) -> io::Result<TcpSocket> {
        let domain = Domain::for_address(addr);
        let socket = in_netns(&self.netns, || marked_socket(domain, self.mark))?;
        Ok(TcpSocket::from_std_stream(socket.into()))
    }
}

impl Connector for NetnsConnector {
    fn connect(&self, addr: SocketAddr) -> ConnectFuture<'_> {
        let socket = self.socket_for(addr);
        Box::pin(async move { socket?.connect(addr).await })
    }
}

/// Runs `make` with the calling thread inside `netns`, then moves the thread
/// back to its own namespace. `make` must not block: the thread is a tokio
/// worker.
fn in_netns<T>(netns: &PodNetns, make: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    HOME.with(|home| {
        let home = match home.get() {
            Some(home) => home,
            None => {
                let opened = File::open("/proc/thread-self/ns/net")?;
                home.get_or_init(|| opened)
            }
        };
        netns.enter_current_thread().map_err(io::Error::other)?;
        // Returns on drop, so also if `make` panics.
        let _back = ReturnHome(home);
        make()
    })
}

/// Moves the thread back to its namespace when dropped.
struct ReturnHome<'a>(&'a File);

impl Drop for ReturnHome<'_> {
    fn drop(&mut self) {
        if let Err(errno) = nix::sched::setns(self.0, CloneFlags::CLONE_NEWNET) {
            tracing::error!(
                %errno,
                "could not return a thread to ztunnel's own network namespace after making a \
                 socket in a pod's; stopping, as its next sockets would be made in the pod"
            );
            telemetry::logging::flush();
            std::process::abort();
        }
    }
}

/// A nonblocking, close-on-exec, marked socket. Nonblocking from
/// `socket(2)` itself (`SOCK_NONBLOCK`), which saves the two `fcntl(2)`
/// calls of setting it afterwards on every connection to a pod.
fn marked_socket(domain: Domain, mark: u32) -> io::Result<Socket> {
    let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    socket.set_mark(mark)?;
    Ok(socket)
}

/// The destination a redirected connection was addressed to before the
/// pod's rules sent it to ztunnel (`SO_ORIGINAL_DST`, from conntrack), for
/// a std or tokio `TcpStream` accepted on a capture listener. `local` is
/// the socket's own address, which callers read anyway: it gives the
/// family without another `getsockname(2)` per connection.
pub fn original_dst(stream: &impl AsFd, local: SocketAddr) -> io::Result<SocketAddr> {
    let socket = SockRef::from(stream);
    let original = if local.is_ipv4() {
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

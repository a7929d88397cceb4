//! A pod's network namespace, held open by its file descriptor.
//!
//! Holding the descriptor (not the path) keeps the namespace alive and
//! meaning the same thing even if the path is unmounted or the pod's first
//! process exits and its pid is reused.
//!
//! Entering a namespace (`setns(2)`) changes the namespace of the calling
//! *thread*, and every socket created afterwards on it. A tokio worker left
//! there would silently move every task that later runs on it. So work in
//! a namespace runs on a short-lived OS thread made for it
//! ([`PodNetns::run`]); what it creates (a listener, a socket) stays in the
//! namespace after the thread is gone and is then driven by tokio as usual.
//! The one exception is the per-connection socket of
//! [`NetnsConnector`](super::NetnsConnector): the worker enters, makes it
//! and returns within one synchronous call.

use std::collections::HashSet;
use std::fs::{self, File};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use nix::net::if_::InterfaceFlags;
use nix::sched::CloneFlags;
use nix::sys::statfs::{self, NSFS_MAGIC, PROC_SUPER_MAGIC};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::debug;

use super::Error;

/// Where `ip netns` (and `meshctl up`) keep named network namespaces.
pub const DEFAULT_NETNS_DIR: &str = "/var/run/netns";

/// Backlog of the listeners made by [`PodNetns::bind`] (tokio's default).
const LISTEN_BACKLOG: i32 = 1024;

/// An open network namespace. Cheap to clone: clones share the descriptor.
#[derive(Debug, Clone)]
pub struct PodNetns {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The path it was opened from, for messages only: the namespace is
    /// `file`, whatever the path names now.
    path: PathBuf,
    /// The nsfs file; `setns(2)` takes it.
    file: File,
    /// The namespace's inode number, which identifies it on this host (what
    /// `ls -L -i /proc/<pid>/ns/net` shows).
    inode: u64,
}

// === impl PodNetns ===

impl PodNetns {
    /// Opens the namespace at `path`: a named one (`/var/run/netns/<name>`)
    /// or a process's (`/proc/<pid>/ns/net`).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        let file = File::open(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        match statfs::fstatfs(&file) {
            Ok(fs) if fs.filesystem_type() == NSFS_MAGIC => {}
            _ => return Err(Error::NotNetns { path }),
        }
        let inode = file
            .metadata()
            .map_err(|source| Error::Open {
                path: path.clone(),
                source,
            })?
            .ino();
        Ok(PodNetns {
            inner: Arc::new(Inner { path, file, inode }),
        })
    }

    /// Opens the named namespace `name` under `dir` (see
    /// [`DEFAULT_NETNS_DIR`]).
    pub fn named(dir: impl AsRef<Path>, name: &str) -> Result<Self, Error> {
        Self::open(dir.as_ref().join(name))
    }

    /// Opens the namespace of process `pid` (needs a host pid namespace,
    /// `hostPID` on Kubernetes).
    pub fn of_pid(pid: u32) -> Result<Self, Error> {
        Self::open(format!("/proc/{pid}/ns/net"))
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The namespace's inode number: two `PodNetns` with the same inode are
    /// the same namespace.
    pub fn inode(&self) -> u64 {
        self.inner.inode
    }

    /// Runs `f` on a new OS thread that has entered this namespace, and
    /// waits for it. Blocking: from async code, call it in
    /// `spawn_blocking`. A panic in `f` is resumed on the caller.
    pub fn run<F, T>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        thread::scope(|scope| {
            let handle = thread::Builder::new()
                .name("ztunnel-netns".into())
                .spawn_scoped(scope, || {
                    self.enter_current_thread()?;
                    Ok(f())
                })
                .map_err(|source| Error::Thread {
                    path: self.inner.path.clone(),
                    source,
                })?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Moves the calling thread into this namespace. Only for threads made
    /// for that purpose, or that return at once (see the module doc).
    pub(crate) fn enter_current_thread(&self) -> Result<(), Error> {
        nix::sched::setns(&self.inner.file, CloneFlags::CLONE_NEWNET).map_err(|source| {
            Error::Enter {
                path: self.inner.path.clone(),
                source,
            }
        })
    }

    /// The IP addresses assigned in this namespace, loopback excluded
    /// (IPv6 link-local addresses included). Costs a thread and a netlink
    /// dump.
    pub fn addresses(&self) -> Result<Vec<IpAddr>, Error> {
        self.run(local_addresses)?
            .map_err(|source| Error::Addresses {
                path: self.inner.path.clone(),
                source,
            })
    }

    /// A listening socket on `addr` inside this namespace: `SO_REUSEADDR`
    /// (a restarted ztunnel rebinds at once), nonblocking, ready for
    /// `tokio::net::TcpListener::from_std`. `addr` may be the unspecified
    /// address or one assigned in the pod. An IPv6 listener is IPv6-only,
    /// so `0.0.0.0:p` and `[::]:p` can both be bound.
    ///
    /// Connections redirected by the `output` rule arrive at `127.0.0.1`
    /// (`::1`), so the outbound capture listener must be bound to the
    /// unspecified or loopback address, not the pod IP.
    pub fn bind(&self, addr: SocketAddr) -> Result<TcpListener, Error> {
        self.run(|| listen(addr))?.map_err(|source| Error::Bind {
            path: self.inner.path.clone(),
            addr,
            source,
        })
    }
}

/// Runs in the namespace: `getifaddrs(3)`, non-loopback, deduplicated.
fn local_addresses() -> Result<Vec<IpAddr>, nix::errno::Errno> {
    let mut addresses = Vec::new();
    for interface in nix::ifaddrs::getifaddrs()? {
        if interface.flags.contains(InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        let Some(address) = interface.address else {
            continue;
        };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue; // link-layer (AF_PACKET) entries
        };
        if !ip.is_loopback() && !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    Ok(addresses)
}

/// Runs in the namespace: the listener of [`PodNetns::bind`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Finds the namespace holding `ip` among those in `dir`.
///
/// `dir` is either a directory of named namespaces (every entry is one, as
/// under [`DEFAULT_NETNS_DIR`]) or `/proc` (every `<pid>/ns/net`). The
/// namespace this process runs in is skipped: a workload's IP is never
/// ztunnel's own.
///
/// Cost: a `stat` per entry (for `/proc`, one per process), then, per
/// distinct namespace, an `open`, a short-lived thread, a `setns` and a
/// netlink address dump (tens of microseconds each), so milliseconds for a
/// few hundred pods. Call it once when a workload appears and keep the
/// [`PodNetns`]; never per connection. Entries that vanish or cannot be
/// entered while scanning are skipped (logged at debug).
pub fn find_by_ip(dir: impl AsRef<Path>, ip: IpAddr) -> Result<Option<PodNetns>, Error> {
    let dir = dir.as_ref();
    let read_dir_error = |source| Error::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let is_proc = statfs::statfs(dir)
        .map(|fs| fs.filesystem_type() == PROC_SUPER_MAGIC)
        .unwrap_or(false);
    let mut seen = HashSet::new();
    if let Ok(own) = fs::metadata("/proc/self/ns/net") {
        seen.insert(own.ino());
    }
    for entry in fs::read_dir(dir).map_err(read_dir_error)? {
        let entry = entry.map_err(read_dir_error)?;
        let path = if is_proc {
            let name = entry.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            entry.path().join("ns/net")
        } else {
            entry.path()
        };
        // `stat` follows the /proc magic link to the namespace's inode, so
        // the many processes sharing a namespace cost one scan.
        let Ok(metadata) = fs::metadata(&path) else {
            continue;
        };
        if metadata.is_dir() || !seen.insert(metadata.ino()) {
            continue;
        }
        let netns = match PodNetns::open(&path) {
            Ok(netns) => netns,
            Err(error) => {
                debug!(netns = %path.display(), %error, "skipping while looking for a workload's netns");
                continue;
            }
        };
        match netns.addresses() {
            Ok(addresses) if addresses.contains(&ip) => return Ok(Some(netns)),
            Ok(_) => {}
            Err(error) => {
                debug!(netns = %path.display(), %error, "skipping while looking for a workload's netns");
            }
        }
    }
    Ok(None)
}

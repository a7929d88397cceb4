//! Readiness checks from inside a network namespace: the mesh's
//! components listen on addresses that exist only there (istiod-lite on the
//! node network, each ztunnel's readiness port in its node, each app in
//! its pod). A short-lived thread enters the namespace, so meshctl itself
//! stays where it was.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

/// Runs `f` on a thread inside the named network namespace.
pub fn in_netns<T, F>(netns: &str, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let path = Path::new("/run/netns").join(netns);
    let file = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let thread = std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("enter network namespace {}: {e}", path.display()))?;
        f()
    });
    thread
        .join()
        .map_err(|_| "the probe thread panicked".to_owned())?
}

/// Enters the named network namespace on the calling thread: for a
/// single-threaded command (`meshctl ztunnel --node`) before it opens any
/// socket.
pub fn enter_netns(netns: &str) -> Result<(), String> {
    let path = Path::new("/run/netns").join(netns);
    let file = File::open(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("enter network namespace {}: {e}", path.display()))
}

/// The status code of `GET <path>` at `addr` (HTTP/1.0, so the server
/// closes when done).
pub fn http_status(addr: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        let n = stream
            .read(&mut head[read..])
            .map_err(|e| format!("read from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let text = String::from_utf8_lossy(&head[..read]);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{addr} did not answer HTTP: {text:?}"))
}

/// The status code and body of `GET <path>` at `addr` (HTTP/1.0: the
/// server closes when done, which ends the body).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{addr} did not answer HTTP: {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// Whether something accepts connections at `addr`.
pub fn accepts(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| format!("connect {addr}: {e}"))
}

//! Two plain TCP relays, one in each pod, for a third baseline between the
//! direct path and the mesh:
//!
//! ```text
//!  pod A app ──▶ relay A ── plain TCP over veth ──▶ relay B ──▶ pod B app
//! ```
//!
//! The same three TCP connections and two user-space hops as through the
//! mesh, without TLS, HTTP/2 or any proxy logic: what any pair of node
//! proxies costs before it does anything of its own. Each relay reads into
//! one 256 KiB buffer per direction (as large as ztunnel's) and writes it
//! out, on blocking threads.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

use ztunnel::capture::PodNetns;

const BUFFER: usize = 256 * 1024;

/// Starts relay A on `a_port` in pod A, forwarding to relay B on `b_port`
/// in pod B at `b_ip`, which forwards to `app_port` on pod B's loopback.
pub(crate) fn start(a: &PodNetns, b: &PodNetns, b_ip: std::net::Ipv4Addr, ports: (u16, u16, u16)) {
    let (a_port, b_port, app_port) = ports;
    let listen = |netns: &PodNetns, port| {
        netns
            .bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .unwrap_or_else(|e| panic!("bind relay port {port}: {e}"))
    };
    serve(
        listen(a, a_port),
        a.clone(),
        SocketAddr::from((b_ip, b_port)),
    );
    serve(
        listen(b, b_port),
        b.clone(),
        SocketAddr::from(([127, 0, 0, 1], app_port)),
    );
}

/// Accepts connections and pipes each to a new one to `to`, opened from
/// inside `netns`.
fn serve(listener: TcpListener, netns: PodNetns, to: SocketAddr) {
    // `PodNetns::bind` hands out non-blocking listeners (for tokio); this
    // one blocks in accept, or the loop would spin on EAGAIN and burn a
    // CPU for the rest of the bench.
    listener
        .set_nonblocking(false)
        .expect("make the relay listener blocking");
    std::thread::spawn(move || {
        for accepted in listener.incoming() {
            let client = match accepted {
                Ok(client) => client,
                Err(error) => {
                    eprintln!("relay on {to}: accept failed ({error}); relay stopped");
                    break;
                }
            };
            let upstream = netns
                .run(|| TcpStream::connect(to))
                .expect("enter the relay's namespace")
                .unwrap_or_else(|e| panic!("relay connect to {to}: {e}"));
            pipe(client, upstream);
        }
    });
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (a2, b2) = (
        a.try_clone().expect("clone socket"),
        b.try_clone().expect("clone socket"),
    );
    for (mut from, mut to) in [(a, b2), (b, a2)] {
        std::thread::spawn(move || {
            let mut buffer = vec![0u8; BUFFER];
            while let Ok(n) = from.read(&mut buffer) {
                if n == 0 || to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
    }
}

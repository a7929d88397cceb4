//! In-pod capture against real network namespaces: a "pod" namespace joined
//! by a veth pair to a "node" namespace standing in for the rest of the
//! network. These tests need root (namespaces, veth, nftables), as CI has;
//! without it they fail, they do not skip.

// Test helpers: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns_support;

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};

use netns_support::{Cleanup, require_root, sh};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hbone::Connector;
use socket2::SockRef;
use ztunnel::capture::{self, NetnsConnector, PodNetns, Redirection, rules};

const TIMEOUT: Duration = Duration::from_secs(3);
const MARK: u32 = ztunnel::config::DEFAULT_MARK;

/// A pod namespace and a node namespace joined by a veth pair, both with an
/// IPv4 and an IPv6 address; deleted on drop, whatever the test did.
struct Topology {
    pod_name: String,
    node_name: String,
    pod: PodNetns,
    node: PodNetns,
    pod_ip: Ipv4Addr,
    node_ip: Ipv4Addr,
    pod_ip6: Ipv6Addr,
    node_ip6: Ipv6Addr,
    _cleanup: Cleanup,
}

impl Topology {
    fn new() -> Topology {
        require_root();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let (pod_name, node_name) = (format!("zt-pod-{pid}-{n}"), format!("zt-node-{pid}-{n}"));
        let cleanup = Cleanup(vec![pod_name.clone(), node_name.clone()]);
        // A /30 in 198.18.0.0/15 (set aside for tests) per process and
        // topology, and a ULA /112 likewise; only ever assigned inside these
        // namespaces.
        let block = pid.wrapping_mul(64).wrapping_add(n) % (1 << 15);
        let base = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + block * 4;
        let (pod_ip, node_ip) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let prefix6 = format!("fd7a:{:x}:{:x}:{n:x}::", pid >> 16, pid & 0xffff);
        let pod_ip6: Ipv6Addr = format!("{prefix6}1").parse().unwrap();
        let node_ip6: Ipv6Addr = format!("{prefix6}2").parse().unwrap();
        let (pod_veth, node_veth) = (format!("zp{pid}n{n}"), format!("zn{pid}n{n}"));
        let address = |ns: &str, dev: &str, v4: Ipv4Addr, v6: Ipv6Addr| {
            format!(
                "ip -n {ns} link set lo up
                 ip -n {ns} addr add {v4}/30 dev {dev}
                 ip -n {ns} -6 addr add {v6}/112 dev {dev} nodad
                 ip -n {ns} link set {dev} up"
            )
        };
        sh(&format!(
            "command -v ip >/dev/null || {{ echo 'install the iproute2 package' >&2; exit 1; }}
             ip netns add {pod_name}
             ip netns add {node_name}
             ip link add {pod_veth} netns {pod_name} type veth \
                peer name {node_veth} netns {node_name}
             {}
             {}",
            address(&pod_name, &pod_veth, pod_ip, pod_ip6),
            address(&node_name, &node_veth, node_ip, node_ip6),
        ));
        Topology {
            pod: PodNetns::named(capture::DEFAULT_NETNS_DIR, &pod_name).unwrap(),
            node: PodNetns::named(capture::DEFAULT_NETNS_DIR, &node_name).unwrap(),
            pod_name,
            node_name,
            pod_ip,
            node_ip,
            pod_ip6,
            node_ip6,
            _cleanup: cleanup,
        }
    }

    /// `nft` inside the pod, through `ip netns exec`: an observer
    /// independent of the code under test.
    fn nft_in_pod(&self, args: &str) -> String {
        sh(&format!("ip netns exec {} nft {args}", self.pod_name))
    }

    fn with_rules() -> Topology {
        let topology = Topology::new();
        rules::install(&topology.pod, &Redirection::default()).unwrap();
        topology
    }

    /// A listener of the pod (ztunnel's or the app's) on `ip:port`.
    fn pod_listener(&self, ip: impl Into<IpAddr>, port: u16) -> TcpListener {
        self.pod.bind(SocketAddr::new(ip.into(), port)).unwrap()
    }

    /// The real destination, outside the pod.
    fn node_listener(&self, ip: impl Into<IpAddr>, port: u16) -> TcpListener {
        self.node.bind(SocketAddr::new(ip.into(), port)).unwrap()
    }

    /// An app in the pod connecting (an unmarked socket).
    fn app_connect(&self, dst: SocketAddr) -> TcpStream {
        connect_from(&self.pod, dst)
    }

    /// A peer outside the pod connecting to it.
    fn peer_connect(&self, dst: SocketAddr) -> TcpStream {
        connect_from(&self.node, dst)
    }
}

fn connect_from(netns: &PodNetns, dst: SocketAddr) -> TcpStream {
    let stream = netns
        .run(|| TcpStream::connect_timeout(&dst, TIMEOUT))
        .unwrap();
    let from = netns.path().display();
    stream.unwrap_or_else(|e| panic!("cannot connect from {from} to {dst}: {e}"))
}

/// The connection `listener` received, waiting up to [`TIMEOUT`].
fn accepted(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok(accepted) => return accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{what} received no connection: {e}"),
        }
    }
}

/// `listener` has no connection waiting. Called after the connection under
/// test was established elsewhere, so a stray one would already be queued.
fn untouched(listener: &TcpListener, what: &str) {
    match listener.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Ok((_, from)) => panic!("{what} received a connection from {from}"),
        Err(e) => panic!("{what}: {e}"),
    }
}

fn inode_of_current_thread() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

#[test]
fn outbound_tcp_from_the_app_is_redirected_to_15001() {
    let t = Topology::with_rules();
    let capture = t.pod_listener(Ipv4Addr::UNSPECIFIED, 15001);
    let peer = t.node_listener(t.node_ip, 8080);
    let dst = SocketAddr::from((t.node_ip, 8080));

    let app = t.app_connect(dst);
    let (redirected, from) = accepted(&capture, "the outbound capture listener");

    let original = SockRef::from(&redirected).original_dst_v4().unwrap();
    assert_eq!(original.as_socket(), Some(dst));
    assert_eq!(
        capture::original_dst(&redirected, redirected.local_addr().unwrap()).unwrap(),
        dst
    );
    assert_eq!(from, app.local_addr().unwrap());
    let seen_by_app = app.peer_addr().unwrap();
    assert_eq!(seen_by_app, dst, "the app must not see the redirect");
    untouched(&peer, "the real destination");
}

#[test]
fn outbound_ipv6_tcp_is_redirected_to_15001() {
    let t = Topology::with_rules();
    let capture = t.pod_listener(Ipv6Addr::UNSPECIFIED, 15001);
    let peer = t.node_listener(t.node_ip6, 8080);
    let dst = SocketAddr::from((t.node_ip6, 8080));

    let _app = t.app_connect(dst);
    let (redirected, _) = accepted(&capture, "the IPv6 outbound capture listener");

    assert_eq!(
        capture::original_dst(&redirected, redirected.local_addr().unwrap()).unwrap(),
        dst
    );
    untouched(&peer, "the real destination");
}

#[tokio::test]
async fn marked_connector_sockets_reach_the_real_destination() {
    let t = Topology::with_rules();
    let capture = t.pod_listener(Ipv4Addr::UNSPECIFIED, 15001);
    let peer = t.node_listener(t.node_ip, 8080);
    let connector = NetnsConnector::new(t.pod.clone(), MARK);
    // tokio needs it nonblocking before its first connect.
    let fresh = connector.socket_for((t.node_ip, 8080).into()).unwrap();
    assert!(SockRef::from(&fresh).nonblocking().unwrap());

    // Twice: one connector makes any number of sockets.
    for _ in 0..2 {
        let stream = connector.connect((t.node_ip, 8080).into()).await.unwrap();
        assert_eq!(SockRef::from(&stream).mark().unwrap(), MARK);
        let (_, from) = accepted(&peer, "the real destination");
        assert_eq!(from.ip(), t.pod_ip, "the connection must come from the pod");
        assert_eq!(stream.local_addr().unwrap(), from);
    }
    untouched(&capture, "the outbound capture listener");
}

/// The namespace the calling thread is in, as `ls -L -i` names it.
fn thread_netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

#[tokio::test(flavor = "current_thread")]
async fn connector_returns_the_thread_to_its_own_namespace() {
    let t = Topology::with_rules();
    let peer = t.node_listener(t.node_ip, 8080);
    let connector = NetnsConnector::new(t.pod.clone(), MARK);
    let home = thread_netns_inode();
    assert_ne!(home, t.pod.inode(), "the test must start outside the pod");

    for _ in 0..2 {
        let stream = connector.connect((t.node_ip, 8080).into()).await.unwrap();
        // Made in the pod...
        let (_, from) = accepted(&peer, "the real destination");
        assert_eq!(from.ip(), t.pod_ip, "the socket must be made in the pod");
        assert_eq!(stream.local_addr().unwrap(), from);
        // ...by a thread that is back where it was.
        assert_eq!(
            thread_netns_inode(),
            home,
            "the thread must leave the pod's namespace once the socket is made"
        );
    }
}

#[tokio::test]
async fn connector_sockets_without_the_mark_are_redirected() {
    let t = Topology::with_rules();
    let capture = t.pod_listener(Ipv4Addr::UNSPECIFIED, 15001);
    let peer = t.node_listener(t.node_ip, 8080);
    let connector = NetnsConnector::new(t.pod.clone(), MARK + 1);

    let _stream = connector.connect((t.node_ip, 8080).into()).await.unwrap();

    accepted(&capture, "the outbound capture listener");
    untouched(&peer, "the real destination");
}

#[tokio::test]
async fn connector_reaches_the_pods_own_app_unredirected() {
    let t = Topology::with_rules();
    let inbound = t.pod_listener(Ipv4Addr::UNSPECIFIED, 15006);
    let outbound = t.pod_listener(Ipv4Addr::UNSPECIFIED, 15001);
    let app = t.pod_listener(Ipv4Addr::UNSPECIFIED, 80);
    let connector = NetnsConnector::new(t.pod.clone(), MARK);

    let _stream = connector.connect((t.pod_ip, 80).into()).await.unwrap();

    accepted(&app, "the app");
    untouched(&inbound, "the inbound capture listener");
    untouched(&outbound, "the outbound capture listener");
}

#[test]
fn app_traffic_within_the_pod_is_not_redirected() {
    let t = Topology::with_rules();
    let outbound = t.pod_listener(Ipv4Addr::UNSPECIFIED, 15001);
    let inbound = t.pod_listener(Ipv4Addr::UNSPECIFIED, 15006);
    let app = t.pod_listener(Ipv4Addr::UNSPECIFIED, 80);

    for dst in [Ipv4Addr::LOCALHOST, t.pod_ip] {
        let _client = t.app_connect((dst, 80).into());
        accepted(&app, "the app");
    }
    untouched(&outbound, "the outbound capture listener");
    untouched(&inbound, "the inbound capture listener");
}

#[test]
fn inbound_tcp_to_the_pod_is_redirected_to_15006() {
    let t = Topology::with_rules();
    for (pod_ip, node_ip, any) in [
        (
            IpAddr::from(t.pod_ip),
            IpAddr::from(t.node_ip),
            IpAddr::from(Ipv4Addr::UNSPECIFIED),
        ),
        (
            t.pod_ip6.into(),
            t.node_ip6.into(),
            Ipv6Addr::UNSPECIFIED.into(),
        ),
    ] {
        let inbound = t.pod_listener(any, 15006);
        let app = t.pod_listener(any, 80);
        let dst = SocketAddr::new(pod_ip, 80);

        let _peer = t.peer_connect(dst);
        let (redirected, from) = accepted(&inbound, "the inbound capture listener");

        assert_eq!(
            capture::original_dst(&redirected, redirected.local_addr().unwrap()).unwrap(),
            dst
        );
        assert_eq!(from.ip(), node_ip, "the peer's address must be kept");
        untouched(&app, "the app");
    }
}

#[test]
fn inbound_hbone_on_15008_is_not_redirected() {
    let t = Topology::with_rules();
    let inbound = t.pod_listener(Ipv4Addr::UNSPECIFIED, 15006);
    let hbone = t.pod_listener(t.pod_ip, 15008);

    let _peer = t.peer_connect((t.pod_ip, 15008).into());

    let (_, from) = accepted(&hbone, "the HBONE listener");
    assert_eq!(from.ip(), t.node_ip);
    untouched(&inbound, "the inbound capture listener");
}

#[test]
fn installing_twice_leaves_one_table_with_the_same_rules() {
    let t = Topology::with_rules();
    let list = || t.nft_in_pod("list table inet ztunnel");
    let first = list();
    assert!(first.contains("redirect to :15001") && first.contains("redirect to :15006"));

    rules::install(&t.pod, &Redirection::default()).unwrap();
    assert_eq!(list(), first);
    let ruleset = t.nft_in_pod("list ruleset");
    let tables = ruleset.matches("table inet ztunnel").count();
    assert_eq!(tables, 1, "{ruleset}");
    assert_eq!(ruleset.matches("redirect to").count(), 2, "{ruleset}");

    // A reinstall replaces whatever the table holds, not only our rules.
    t.nft_in_pod("add rule inet ztunnel output tcp dport 9 return");
    assert_ne!(list(), first);
    rules::install(&t.pod, &Redirection::default()).unwrap();
    assert_eq!(list(), first);
    assert_eq!(rules::installed(&t.pod).unwrap(), Some(first));
}

#[test]
fn remove_deletes_the_table_and_stops_redirecting() {
    let t = Topology::with_rules();
    let capture = t.pod_listener(Ipv4Addr::UNSPECIFIED, 15001);
    let peer = t.node_listener(t.node_ip, 8080);

    rules::remove(&t.pod).unwrap();

    assert!(!t.nft_in_pod("list tables").contains("ztunnel"));
    assert_eq!(rules::installed(&t.pod).unwrap(), None);
    rules::remove(&t.pod).expect("removing twice is not an error");
    let _app = t.app_connect((t.node_ip, 8080).into());
    accepted(&peer, "the real destination");
    untouched(&capture, "the outbound capture listener");
}

#[test]
fn addresses_are_the_pods_without_loopback() {
    let t = Topology::new();
    let addresses = t.pod.addresses().unwrap();
    assert!(addresses.contains(&t.pod_ip.into()), "{addresses:?}");
    assert!(addresses.contains(&t.pod_ip6.into()), "{addresses:?}");
    assert!(!addresses.iter().any(|a| a.is_loopback()), "{addresses:?}");
    assert!(!addresses.contains(&t.node_ip.into()), "{addresses:?}");
}

#[test]
fn run_enters_the_netns_on_another_thread_only() {
    let t = Topology::new();
    let before = inode_of_current_thread();
    let inside = t.pod.run(inode_of_current_thread).unwrap();
    assert_eq!(inside, t.pod.inode());
    assert_ne!(inside, before);
    assert_eq!(inode_of_current_thread(), before);
}

/// Kills and reaps the process on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn find_by_ip_finds_the_pods_netns() {
    let t = Topology::new();
    // A directory holding only this test's namespaces (and a file that is
    // not one), so concurrent tests cannot interfere.
    let dir = tempfile::tempdir().unwrap();
    for name in [&t.pod_name, &t.node_name] {
        let target = format!("{}/{name}", capture::DEFAULT_NETNS_DIR);
        std::os::unix::fs::symlink(target, dir.path().join(name)).unwrap();
    }
    fs::write(dir.path().join("not-a-netns"), "").unwrap();
    let find = |ip: IpAddr| {
        capture::find_by_ip(dir.path(), ip)
            .unwrap()
            .map(|n| n.inode())
    };

    assert_eq!(find(t.pod_ip.into()), Some(t.pod.inode()));
    assert_eq!(find(t.pod_ip6.into()), Some(t.pod.inode()));
    assert_eq!(find(t.node_ip.into()), Some(t.node.inode()));
    assert_eq!(find(Ipv4Addr::new(192, 0, 2, 1).into()), None);
    assert_eq!(find(Ipv4Addr::LOCALHOST.into()), None);

    let named = capture::find_by_ip(capture::DEFAULT_NETNS_DIR, t.pod_ip.into()).unwrap();
    assert_eq!(named.map(|n| n.inode()), Some(t.pod.inode()));
}

#[test]
fn find_by_ip_finds_a_process_netns_under_proc() {
    let t = Topology::new();
    let child = Command::new("ip")
        .args(["netns", "exec", &t.pod_name, "sleep", "30"])
        .spawn()
        .unwrap();
    let child = Reaped(child);
    let pid = child.0.id();
    let deadline = Instant::now() + TIMEOUT;
    // `ip netns exec` enters the namespace right after it starts.
    while PodNetns::of_pid(pid).map(|n| n.inode()).ok() != Some(t.pod.inode()) {
        assert!(Instant::now() < deadline, "the child never entered the pod");
        thread::sleep(Duration::from_millis(10));
    }

    let found = capture::find_by_ip("/proc", t.pod_ip.into()).unwrap();
    assert_eq!(found.map(|n| n.inode()), Some(t.pod.inode()));
    assert!(
        capture::find_by_ip("/proc", Ipv4Addr::new(192, 0, 2, 1).into())
            .unwrap()
            .is_none()
    );
}

#[test]
fn open_rejects_what_is_not_a_netns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    fs::write(&file, "").unwrap();
    assert!(matches!(
        PodNetns::open(&file),
        Err(capture::Error::NotNetns { .. })
    ));
    let missing = PodNetns::open(dir.path().join("missing"));
    assert!(matches!(missing, Err(capture::Error::Open { .. })));
}

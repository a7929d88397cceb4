//! Shared by the tests that build network namespaces (`capture.rs`,
//! `netns_node.rs`) and the mesh benchmark (`benches/mesh.rs`): root
//! check, shell steps that fail loudly, cleanup of the namespaces a test
//! made, and two pods joined by a veth pair.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use tempfile::TempDir;
use ztunnel::capture::{DEFAULT_NETNS_DIR, PodNetns};

/// Deletes the namespaces (and with them the veth pair), also when setup
/// fails halfway.
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests need root (network namespaces, veth pairs, nftables), as CI has: \
         run them as root, e.g. `sudo -E cargo test -p ztunnel --test capture`"
    );
}

pub fn sh(script: &str) -> String {
    let output = Command::new("sh").args(["-euc", script]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}\nfailed: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// Two pods, `a` and `b`, each in its own namespace, joined by a veth pair
/// on a /24 from 100.64.0.0/10 (shared address space, never routed here)
/// chosen by process id; deleted on drop.
pub struct Pods {
    pub a: PodNetns,
    pub b: PodNetns,
    pub a_name: String,
    pub b_name: String,
    pub a_ip: Ipv4Addr,
    pub b_ip: Ipv4Addr,
    _cleanup: Cleanup,
}

impl Pods {
    pub fn new() -> Pods {
        require_root();
        let pid = std::process::id();
        let (a_name, b_name) = (format!("zt-app-{pid}-a"), format!("zt-app-{pid}-b"));
        let cleanup = Cleanup(vec![a_name.clone(), b_name.clone()]);
        let subnet = [100, 64 + ((pid >> 8) % 64) as u8, (pid % 256) as u8];
        let a_ip = Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 1);
        let b_ip = Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 2);
        sh(&format!(
            "ip netns add {a_name}
             ip netns add {b_name}
             ip link add za{pid} netns {a_name} type veth peer name zb{pid} netns {b_name}
             ip -n {a_name} link set lo up
             ip -n {b_name} link set lo up
             ip -n {a_name} addr add {a_ip}/24 dev za{pid}
             ip -n {b_name} addr add {b_ip}/24 dev zb{pid}
             ip -n {a_name} link set za{pid} up
             ip -n {b_name} link set zb{pid} up"
        ));
        Pods {
            a: PodNetns::named(DEFAULT_NETNS_DIR, &a_name).unwrap(),
            b: PodNetns::named(DEFAULT_NETNS_DIR, &b_name).unwrap(),
            a_name,
            b_name,
            a_ip,
            b_ip,
            _cleanup: cleanup,
        }
    }

    /// A directory where ztunnel finds only the namespace `name`.
    pub fn netns_dir(&self, name: &str) -> TempDir {
        let dir = TempDir::new().unwrap();
        let target = Path::new(DEFAULT_NETNS_DIR).join(name);
        std::os::unix::fs::symlink(target, dir.path().join(name)).unwrap();
        dir
    }

    /// The ztunnel table in a pod as `nft` lists it, or `None`.
    pub fn rules(&self, pod: &str) -> Option<String> {
        let tables = sh(&format!("ip netns exec {pod} nft list tables"));
        tables
            .lines()
            .any(|l| l.trim() == "table inet ztunnel")
            .then(|| sh(&format!("ip netns exec {pod} nft list table inet ztunnel")))
    }
}

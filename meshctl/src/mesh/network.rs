//! Builds and removes a local mesh's network with `ip`, the way a CNI
//! plugin would on a real node: a namespace for the node network (a
//! bridge, istiod-lite's address), one per node (an uplink to that bridge,
//! a bridge for its pods, routes to the other nodes' pod ranges, IP
//! forwarding on) and one per pod (a veth to its node's bridge, the pod's
//! address, a default route through the node).

use std::process::Command;

use super::error::MeshError;
use super::plan::{NodePlan, Plan, PodPlan};

/// The bridge of the node network, in the cluster namespace.
const CLUSTER_BRIDGE: &str = "br0";
/// Each node's bridge for its pods, named as flannel and the bridge CNI do.
const POD_BRIDGE: &str = "cni0";

/// Runs `ip <args>`; a failure names the command and carries `ip`'s words.
pub fn ip(args: &[&str]) -> Result<(), MeshError> {
    run("ip", args)
}

/// Runs a program to completion; a failure names the command line and
/// carries the program's stderr.
pub fn run(program: &str, args: &[&str]) -> Result<(), MeshError> {
    let action = format!("`{program} {}`", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| MeshError::Command {
            action: action.clone(),
            message: error.to_string(),
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(MeshError::Command {
            action,
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Whether a named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

pub fn add_netns(name: &str) -> Result<(), MeshError> {
    ip(&["netns", "add", name])?;
    ip(&["-n", name, "link", "set", "lo", "up"])
}

/// Deletes a namespace (and with it every veth end inside it); one that
/// is already gone is fine.
pub fn delete_netns(name: &str) -> Result<(), MeshError> {
    if !netns_exists(name) {
        return Ok(());
    }
    ip(&["netns", "delete", name])
}

/// The node network: a bridge holding the control plane's address.
pub fn setup_cluster(plan: &Plan) -> Result<(), MeshError> {
    let ns = plan.cluster_netns.as_str();
    let address = format!(
        "{}/{}",
        plan.control_plane_ip,
        plan.node_network.prefix_len()
    );
    ip(&["-n", ns, "link", "add", CLUSTER_BRIDGE, "type", "bridge"])?;
    ip(&["-n", ns, "addr", "add", &address, "dev", CLUSTER_BRIDGE])?;
    ip(&["-n", ns, "link", "set", CLUSTER_BRIDGE, "up"])
}

/// A node: uplink to the node network, a bridge for its pods, routes to the
/// other nodes' pods (and from the node network to its own), forwarding on.
pub fn setup_node(plan: &Plan, node: &NodePlan) -> Result<(), MeshError> {
    let (cluster, ns) = (plan.cluster_netns.as_str(), node.netns.as_str());
    let uplink = node.uplink.as_str();
    ip(&[
        "link", "add", uplink, "netns", cluster, "type", "veth", "peer", "name", "eth0", "netns",
        ns,
    ])?;
    ip(&[
        "-n",
        cluster,
        "link",
        "set",
        uplink,
        "master",
        CLUSTER_BRIDGE,
        "up",
    ])?;
    let address = format!("{}/{}", node.ip, plan.node_network.prefix_len());
    ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", ns, "link", "add", POD_BRIDGE, "type", "bridge"])?;
    let gateway = format!("{}/{}", node.gateway, node.pod_cidr.prefix_len());
    ip(&["-n", ns, "addr", "add", &gateway, "dev", POD_BRIDGE])?;
    ip(&["-n", ns, "link", "set", POD_BRIDGE, "up"])?;
    // The way back from the node network to this node's pods, as a
    // cluster's routing gives it: pods that run a proxy of their own (a
    // waypoint) reach istiod-lite.
    let (pods, via) = (node.pod_cidr.to_string(), node.ip.to_string());
    ip(&["-n", cluster, "route", "add", &pods, "via", &via])?;
    for other in plan.nodes.iter().filter(|other| other.name != node.name) {
        let (range, via) = (other.pod_cidr.to_string(), other.ip.to_string());
        ip(&["-n", ns, "route", "add", &range, "via", &via])?;
    }
    // /proc/sys/net belongs to the namespace of whoever opens it, so the
    // write has to happen inside; `sh` is there on every machine, unlike
    // `sysctl`.
    ip(&[
        "netns",
        "exec",
        ns,
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
    ])
}

/// A pod: a veth from its node's bridge, its address, a default route
/// through the node.
pub fn setup_pod(node: &NodePlan, pod: &PodPlan) -> Result<(), MeshError> {
    let (node_ns, ns, veth) = (
        node.netns.as_str(),
        pod.netns.as_str(),
        pod.host_veth.as_str(),
    );
    ip(&[
        "link", "add", veth, "netns", node_ns, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    ip(&[
        "-n", node_ns, "link", "set", veth, "master", POD_BRIDGE, "up",
    ])?;
    let address = format!("{}/{}", pod.ip, node.pod_cidr.prefix_len());
    ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        &node.gateway.to_string(),
    ])
}

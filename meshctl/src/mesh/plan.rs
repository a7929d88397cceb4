//! Where everything of a local mesh goes: each node's and pod's network
//! namespace, address and veth name, each Service's VIP. Pure: a
//! [`Topology`] in, a [`Plan`] out. The plan is saved with the mesh's
//! state, so that `down`, `exec` and `namespace` act on what `up` made even
//! if the topology file has changed since.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::cidr::Cidr;
use super::error::TopologyError;
use super::topology::{Namespace, Topology, resource_namespace};
use super::traces::Tracing;

/// Nodes take addresses on the node network from here on (`.1` is the
/// control plane's).
const FIRST_NODE_HOST: u32 = 11;
/// Pods take addresses from here on (`.1` is the node's bridge).
pub(super) const FIRST_POD_HOST: u32 = 10;
/// Service VIPs from here on.
pub(super) const FIRST_SERVICE_HOST: u32 = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub trust_domain: String,
    /// The network namespace of the node network, where istiod-lite runs.
    pub cluster_netns: String,
    pub node_network: Cidr,
    /// Where Service VIPs come from (`network.services`). States saved
    /// before this field existed get the topology default.
    #[serde(default = "super::topology::default_service_network")]
    pub service_network: Cidr,
    pub control_plane_ip: Ipv4Addr,
    pub nodes: Vec<NodePlan>,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<PodPlan>,
    pub services: Vec<ServicePlan>,
    /// The topology's resources, Services with their assigned VIPs.
    pub resources: Vec<serde_yaml_ng::Value>,
    pub ztunnel_args: Vec<String>,
    pub istiod_args: Vec<String>,
    /// Where waypoints send traces (the topology's, or `up`'s flags).
    #[serde(default)]
    pub tracing: Option<Tracing>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodePlan {
    pub name: String,
    pub netns: String,
    /// The node's address on the node network.
    pub ip: Ipv4Addr,
    pub pod_cidr: Cidr,
    /// The node's bridge address, the pods' gateway.
    pub gateway: Ipv4Addr,
    /// The node's veth in the cluster namespace (the other end is `eth0`).
    pub uplink: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodPlan {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The pod's veth in its node's namespace (the other end is `eth0`).
    pub host_veth: String,
    pub uid: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub command: Vec<String>,
    pub ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePlan {
    pub name: String,
    pub namespace: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<u16>,
}

// === impl Plan ===

impl Plan {
    /// Lays out `topology` as the mesh `name` (the topology's own name
    /// unless overridden); `source` names the file in errors.
    pub fn new(source: &str, topology: &Topology, name: &str) -> Result<Plan, TopologyError> {
        let fail = |message: String| TopologyError::Addresses {
            source_name: source.to_owned(),
            message,
        };
        let net = topology.network.nodes;
        let control_plane_ip = net
            .host(1)
            .ok_or_else(|| fail(format!("network.nodes {net} has no address .1")))?;
        let mut nodes = Vec::new();
        for (i, node) in topology.nodes.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let ip = net.host(FIRST_NODE_HOST + index).ok_or_else(|| {
                fail(format!(
                    "network.nodes {net} has no address for node {}",
                    node.name
                ))
            })?;
            let gateway = node.pod_cidr.host(1).ok_or_else(|| {
                fail(format!(
                    "nodes[{i}].podCIDR {} has no address .1",
                    node.pod_cidr
                ))
            })?;
            nodes.push(NodePlan {
                name: node.name.clone(),
                netns: format!("{name}-{}", node.name),
                ip,
                pod_cidr: node.pod_cidr,
                gateway,
                uplink: format!("node{i}"),
            });
        }
        let mut next_host: BTreeMap<&str, u32> = BTreeMap::new();
        let mut pods = Vec::new();
        for (i, pod) in topology.pods.iter().enumerate() {
            // Invariant: Topology::parse checked that every pod's node exists.
            let Some(node) = nodes.iter().find(|n| n.name == pod.node) else {
                return Err(fail(format!("pods[{i}].node `{}` is unknown", pod.node)));
            };
            let host = next_host
                .entry(node.name.as_str())
                .or_insert(FIRST_POD_HOST);
            let ip = node.pod_cidr.host(*host).ok_or_else(|| {
                fail(format!(
                    "podCIDR {} of node {} has no address left for pod {}/{}",
                    node.pod_cidr, node.name, pod.namespace, pod.name
                ))
            })?;
            *host += 1;
            pods.push(PodPlan {
                name: pod.name.clone(),
                namespace: pod.namespace.clone(),
                node: pod.node.clone(),
                netns: format!("{name}-{}-{}", pod.namespace, pod.name),
                ip,
                host_veth: format!("pod{i}"),
                uid: format!("{name}-{}-{}", pod.namespace, pod.name),
                service_account: pod.service_account.clone(),
                labels: pod.labels.clone(),
                command: pod.command.clone(),
                ports: pod.ports.clone(),
            });
        }
        let (resources, services) = assign_vips(topology, &fail)?;
        Ok(Plan {
            name: name.to_owned(),
            trust_domain: topology.trust_domain.clone(),
            cluster_netns: format!("{name}-net"),
            node_network: net,
            service_network: topology.network.services,
            control_plane_ip,
            nodes,
            namespaces: topology.all_namespaces(),
            pods,
            services,
            resources,
            ztunnel_args: topology.ztunnel.args.clone(),
            istiod_args: topology.istiod.args.clone(),
            tracing: topology.tracing.clone(),
        })
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|node| node.name == name)
    }

    /// The pod named `target`: `<name>` when only one namespace has such a
    /// pod, or `<namespace>/<name>`.
    pub fn find_pod(&self, target: &str) -> Result<&PodPlan, String> {
        let (namespace, name) = match target.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, target),
        };
        let found: Vec<&PodPlan> = self
            .pods
            .iter()
            .filter(|pod| pod.name == name && namespace.is_none_or(|ns| pod.namespace == ns))
            .collect();
        match found.as_slice() {
            [pod] => Ok(pod),
            [] => Err(format!(
                "mesh `{}` has no pod `{target}`; its pods are {}",
                self.name,
                self.pods
                    .iter()
                    .map(|pod| format!("{}/{}", pod.namespace, pod.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            _ => Err(format!(
                "several namespaces have a pod `{name}`: say which, e.g. `{}/{name}`",
                found[0].namespace
            )),
        }
    }

    /// Host names a pod resolves (its `/etc/hosts`): itself; every pod as
    /// `<name>.<ns>.pod` (there is no kube-proxy here, so a pod outside the
    /// mesh reaches others by pod address); and every Service as
    /// `<name>.<ns>.svc.cluster.local`, `<name>.<ns>.svc`, `<name>.<ns>`,
    /// and plain `<name>` for Services of its own namespace.
    pub fn hosts_file(&self, pod: &PodPlan) -> String {
        let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost\n");
        text.push_str(&format!("{}\t{}\n", pod.ip, pod.name));
        for other in &self.pods {
            text.push_str(&format!(
                "{}\t{}.{}.pod\n",
                other.ip, other.name, other.namespace
            ));
        }
        for svc in &self.services {
            let (name, ns) = (&svc.name, &svc.namespace);
            let mut line = format!(
                "{}\t{name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}",
                svc.vip
            );
            if *ns == pod.namespace {
                line.push_str(&format!(" {name}"));
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    }
}

/// Gives every Service without `spec.clusterIP` the next VIP of
/// `network.services`, and lists all Services with their ports.
fn assign_vips(
    topology: &Topology,
    fail: &dyn Fn(String) -> TopologyError,
) -> Result<(Vec<serde_yaml_ng::Value>, Vec<ServicePlan>), TopologyError> {
    use serde_yaml_ng::Value;
    let range = topology.network.services;
    let mut next = FIRST_SERVICE_HOST;
    let mut resources = Vec::new();
    let mut services = Vec::new();
    for (i, resource) in topology.resources.iter().enumerate() {
        let mut resource = resource.clone();
        if resource.get("kind").and_then(Value::as_str) == Some("Service") {
            let name = resource["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let namespace = resource_namespace(&resource).unwrap_or_else(|| "default".to_owned());
            let given = resource
                .get("spec")
                .and_then(|spec| spec.get("clusterIP"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let vip = match given {
                Some(ip) => ip.parse().map_err(|_| {
                    fail(format!(
                        "resources[{i}].spec.clusterIP `{ip}` is not an IPv4 address"
                    ))
                })?,
                None => {
                    let vip = range.host(next).ok_or_else(|| {
                        fail(format!("network.services {range} has no VIP left for Service {namespace}/{name}"))
                    })?;
                    next += 1;
                    set_cluster_ip(&mut resource, vip);
                    vip
                }
            };
            let ports = resource
                .get("spec")
                .and_then(|spec| spec.get("ports"))
                .and_then(Value::as_sequence)
                .map(|ports| {
                    ports
                        .iter()
                        .filter_map(|p| p.get("port").and_then(Value::as_u64))
                        .filter_map(|p| u16::try_from(p).ok())
                        .collect()
                })
                .unwrap_or_default();
            services.push(ServicePlan {
                name,
                namespace,
                vip,
                ports,
            });
        }
        resources.push(resource);
    }
    Ok((resources, services))
}

fn set_cluster_ip(service: &mut serde_yaml_ng::Value, vip: Ipv4Addr) {
    use serde_yaml_ng::{Mapping, Value};
    let Some(object) = service.as_mapping_mut() else {
        return;
    };
    let spec = object
        .entry(Value::from("spec"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if let Some(spec) = spec.as_mapping_mut() {
        spec.insert(Value::from("clusterIP"), Value::from(vip.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_NODES: &str = "
name: t
network: {nodes: 192.168.50.0/24, services: 10.96.0.0/24}
nodes:
  - {name: a, podCIDR: 10.1.0.0/24}
  - {name: b, podCIDR: 10.2.0.0/24}
pods:
  - {name: web, namespace: shop, node: a}
  - {name: db, namespace: shop, node: b}
  - {name: web, namespace: ops, node: a}
resources:
  - kind: Service
    metadata: {name: web, namespace: shop}
    spec: {ports: [{port: 80}]}
  - kind: Service
    metadata: {name: fixed, namespace: ops}
    spec: {clusterIP: 10.96.0.99, ports: [{port: 5432}]}
  - kind: Service
    metadata: {name: db, namespace: shop}
";

    fn plan() -> Plan {
        let topology = Topology::parse("t.yaml", TWO_NODES).unwrap();
        Plan::new("t.yaml", &topology, "m1").unwrap()
    }

    #[test]
    fn addresses_come_from_each_nodes_range() {
        let plan = plan();
        assert_eq!(plan.cluster_netns, "m1-net");
        assert_eq!(plan.control_plane_ip, Ipv4Addr::new(192, 168, 50, 1));
        assert_eq!(plan.nodes[1].ip, Ipv4Addr::new(192, 168, 50, 12));
        assert_eq!(plan.nodes[1].gateway, Ipv4Addr::new(10, 2, 0, 1));
        assert_eq!(plan.nodes[0].netns, "m1-a");
        let ips: Vec<_> = plan.pods.iter().map(|p| p.ip.to_string()).collect();
        assert_eq!(ips, ["10.1.0.10", "10.2.0.10", "10.1.0.11"]);
        assert_eq!(plan.pods[2].netns, "m1-ops-web");
        let veths: Vec<_> = plan.pods.iter().map(|p| p.host_veth.clone()).collect();
        assert_eq!(veths, ["pod0", "pod1", "pod2"], "unique within any node");
    }

    #[test]
    fn services_get_vips_unless_they_name_one() {
        let plan = plan();
        let vips: Vec<_> = plan.services.iter().map(|s| s.vip.to_string()).collect();
        assert_eq!(vips, ["10.96.0.10", "10.96.0.99", "10.96.0.11"]);
        assert_eq!(plan.services[0].ports, [80]);
        assert_eq!(
            plan.resources[0]["spec"]["clusterIP"].as_str(),
            Some("10.96.0.10")
        );
        assert_eq!(
            plan.resources[2]["spec"]["clusterIP"].as_str(),
            Some("10.96.0.11")
        );
    }

    #[test]
    fn pods_are_found_by_name_or_namespace_and_name() {
        let plan = plan();
        assert_eq!(plan.find_pod("db").unwrap().node, "b");
        assert_eq!(
            plan.find_pod("ops/web").unwrap().ip,
            Ipv4Addr::new(10, 1, 0, 11)
        );
        assert!(plan.find_pod("web").unwrap_err().contains("shop/web"));
        assert!(plan.find_pod("nope").unwrap_err().contains("ops/web"));
    }

    #[test]
    fn hosts_name_services_short_only_in_their_namespace() {
        let plan = plan();
        let shop_web = plan.find_pod("shop/web").unwrap();
        let hosts = plan.hosts_file(shop_web);
        assert!(
            hosts.contains("10.96.0.10\tweb.shop.svc.cluster.local web.shop.svc web.shop web\n"),
            "{hosts}"
        );
        assert!(
            hosts.contains("10.96.0.99\tfixed.ops.svc.cluster.local fixed.ops.svc fixed.ops\n"),
            "{hosts}"
        );
        assert!(hosts.contains("10.1.0.10\tweb\n"));
        assert!(hosts.contains("10.2.0.10\tdb.shop.pod\n"), "{hosts}");
    }

    #[test]
    fn running_out_of_addresses_is_an_error() {
        let text = TWO_NODES.replace("10.1.0.0/24", "10.1.0.0/28").replace(
            "pods:\n",
            "pods:\n  - {name: p1, node: a}\n  - {name: p2, node: a}\n  - {name: p3, node: a}\n  - {name: p4, node: a}\n  - {name: p5, node: a}\n",
        );
        let topology = Topology::parse("t.yaml", &text).unwrap();
        let error = Plan::new("t.yaml", &topology, "m").unwrap_err().to_string();
        assert!(error.contains("no address left"), "{error}");
    }
}

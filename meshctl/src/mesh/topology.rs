//! The topology file of `meshctl up`, parsed and checked: nodes, namespaces
//! with their labels, pods (node, service account, labels, command) and
//! the Kubernetes objects the mesh serves (Services, policies), as one
//! YAML document. Pure: a file's text in, a [`Topology`] or an error that
//! names the field out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::cidr::Cidr;
use super::error::TopologyError;
use super::traces::Tracing;

/// Mesh names become prefixes of network namespace names and of the
/// state directory: short, and safe in a path and in `ip netns`.
const MAX_MESH_NAME: usize = 24;

/// A parsed topology file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Topology {
    /// Names the mesh: its network namespaces are `<name>-...` and its
    /// state lives in `<state-dir>/<name>`. `--name` overrides it.
    pub name: String,
    /// Trust domain of the workload identities.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Address ranges of the node network and of service VIPs.
    #[serde(default)]
    pub network: Network,
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    /// Kubernetes objects served as they are (Services, AuthorizationPolicy,
    /// PeerAuthentication, ...). A Service without `spec.clusterIP` gets one
    /// from `network.services`.
    #[serde(default)]
    pub resources: Vec<serde_yaml_ng::Value>,
    /// Extra flags for every ztunnel and for istiod-lite, e.g. a short
    /// `--secret-ttl` to watch certificates rotate.
    #[serde(default)]
    pub ztunnel: Component,
    #[serde(default)]
    pub istiod: Component,
    /// Where waypoints send their traces (OTLP/gRPC); none when absent.
    /// `meshctl up --otlp-endpoint` overrides it.
    #[serde(default)]
    pub tracing: Option<Tracing>,
    /// Commands `up` suggests once the mesh is ready.
    #[serde(default)]
    pub hints: Vec<String>,
}

/// Extra command-line flags of a mesh component.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Component {
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    /// The network between nodes. Its first address is the control plane's
    /// (istiod-lite runs there), nodes take addresses from `.11` on.
    #[serde(default = "default_node_network")]
    pub nodes: Cidr,
    /// Service VIPs, assigned from `.10` on in the order Services appear.
    #[serde(default = "default_service_network")]
    pub services: Cidr,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            nodes: default_node_network(),
            services: default_service_network(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    pub name: String,
    /// Pod addresses of this node; its first address is the node's bridge,
    /// pods take addresses from `.10` on.
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Cidr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    pub name: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    pub node: String,
    #[serde(default = "default_service_account")]
    pub service_account: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What the pod runs, inside its network namespace. A bare program name
    /// is looked up beside meshctl first (the sample apps), then on PATH.
    /// Empty: the pod only holds an address (a client to `meshctl exec`).
    #[serde(default)]
    pub command: Vec<String>,
    /// Ports the command listens on: `up` waits until each accepts.
    #[serde(default)]
    pub ports: Vec<u16>,
}

fn default_trust_domain() -> String {
    "cluster.local".to_owned()
}

fn default_namespace() -> String {
    "default".to_owned()
}

fn default_service_account() -> String {
    "default".to_owned()
}

fn default_node_network() -> Cidr {
    Cidr::new(Ipv4Addr::new(172, 31, 0, 0), 24)
}

pub(super) fn default_service_network() -> Cidr {
    Cidr::new(Ipv4Addr::new(10, 96, 0, 0), 16)
}

// === impl Topology ===

impl Topology {
    /// Parses and checks a topology file; `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Topology, TopologyError> {
        let topology: Topology =
            serde_yaml_ng::from_str(text).map_err(|error| TopologyError::Syntax {
                source_name: source.to_owned(),
                message: error.to_string(),
            })?;
        topology.check().map_err(|message| TopologyError::Invalid {
            source_name: source.to_owned(),
            message,
        })?;
        Ok(topology)
    }

    /// The namespace's labels; a namespace that pods use without declaring
    /// it has none (it is outside the mesh).
    pub fn namespace_labels(&self, name: &str) -> BTreeMap<String, String> {
        self.namespaces
            .iter()
            .find(|ns| ns.name == name)
            .map(|ns| ns.labels.clone())
            .unwrap_or_default()
    }

    /// Every namespace: declared ones first, then those pods or resources
    /// name without declaring them.
    pub fn all_namespaces(&self) -> Vec<Namespace> {
        let mut all = self.namespaces.clone();
        let mut seen: BTreeSet<String> = all.iter().map(|ns| ns.name.clone()).collect();
        let used = self
            .pods
            .iter()
            .map(|pod| pod.namespace.clone())
            .chain(self.resources.iter().filter_map(resource_namespace));
        for name in used {
            if seen.insert(name.clone()) {
                all.push(Namespace {
                    name,
                    labels: BTreeMap::new(),
                });
            }
        }
        all
    }

    fn check(&self) -> Result<(), String> {
        check_name("name", &self.name, MAX_MESH_NAME)?;
        if let Some(tracing) = &self.tracing {
            tracing.check("tracing:")?;
        }
        if self.nodes.is_empty() {
            return Err("`nodes` is empty: a mesh needs at least one node".to_owned());
        }
        let mut nodes = BTreeSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            check_name(&format!("nodes[{i}].name"), &node.name, 63)?;
            if !nodes.insert(node.name.as_str()) {
                return Err(format!(
                    "nodes[{i}]: node `{}` is declared twice",
                    node.name
                ));
            }
            if node.pod_cidr.prefix_len() > 28 {
                return Err(format!(
                    "nodes[{i}].podCIDR {} is too small: use a /28 or larger",
                    node.pod_cidr
                ));
            }
        }
        let mut cidrs = vec![("network.nodes".to_owned(), self.network.nodes)];
        cidrs.push(("network.services".to_owned(), self.network.services));
        for (i, node) in self.nodes.iter().enumerate() {
            cidrs.push((format!("nodes[{i}].podCIDR"), node.pod_cidr));
        }
        for (i, (a_name, a)) in cidrs.iter().enumerate() {
            for (b_name, b) in &cidrs[i + 1..] {
                if a.overlaps(b) {
                    return Err(format!("{a_name} {a} overlaps {b_name} {b}"));
                }
            }
        }
        let mut namespaces = BTreeSet::new();
        for (i, ns) in self.namespaces.iter().enumerate() {
            check_name(&format!("namespaces[{i}].name"), &ns.name, 63)?;
            if !namespaces.insert(ns.name.as_str()) {
                return Err(format!("namespaces[{i}]: `{}` is declared twice", ns.name));
            }
        }
        let mut pods = BTreeSet::new();
        for (i, pod) in self.pods.iter().enumerate() {
            let at = format!("pods[{i}]");
            check_name(&format!("{at}.name"), &pod.name, 63)?;
            check_name(&format!("{at}.namespace"), &pod.namespace, 63)?;
            check_name(&format!("{at}.serviceAccount"), &pod.service_account, 63)?;
            if !nodes.contains(pod.node.as_str()) {
                return Err(format!(
                    "{at}.node: `{}` is not one of the nodes ({})",
                    pod.node,
                    nodes.iter().copied().collect::<Vec<_>>().join(", ")
                ));
            }
            if !pods.insert((pod.namespace.as_str(), pod.name.as_str())) {
                return Err(format!(
                    "{at}: pod `{}/{}` is declared twice",
                    pod.namespace, pod.name
                ));
            }
            if pod.command.first().is_some_and(String::is_empty) {
                return Err(format!("{at}.command: the program name is empty"));
            }
        }
        for (i, resource) in self.resources.iter().enumerate() {
            let kind = resource.get("kind").and_then(|k| k.as_str());
            let name = resource
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(|n| n.as_str());
            if kind.is_none() || name.is_none() {
                return Err(format!(
                    "resources[{i}] is not a Kubernetes object: it needs `kind` and `metadata.name`"
                ));
            }
            if matches!(kind, Some("Pod" | "Namespace")) {
                return Err(format!(
                    "resources[{i}] is a {}: declare it under `pods` or `namespaces`, \
                     so that meshctl gives it an address and a network namespace",
                    kind.unwrap_or_default()
                ));
            }
        }
        Ok(())
    }
}

/// `metadata.namespace` of a Kubernetes object, if it names one.
pub fn resource_namespace(resource: &serde_yaml_ng::Value) -> Option<String> {
    resource
        .get("metadata")?
        .get("namespace")?
        .as_str()
        .map(str::to_owned)
}

/// A Kubernetes-style name (lowercase letters, digits, `-`), which also
/// keeps network namespace names and paths free of surprises.
fn check_name(field: &str, value: &str, max: usize) -> Result<(), String> {
    let valid = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{field} `{value}` is not a valid name: use 1 to {max} lowercase letters, digits \
             and `-`, starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
name: t
nodes:
  - name: node-a
    podCIDR: 10.244.1.0/24
pods:
  - name: a
    node: node-a
";

    #[test]
    fn defaults_fill_what_a_minimal_file_leaves_out() {
        let topology = Topology::parse("t.yaml", MINIMAL).unwrap();
        assert_eq!(topology.trust_domain, "cluster.local");
        assert_eq!(topology.network.nodes.to_string(), "172.31.0.0/24");
        assert_eq!(topology.pods[0].namespace, "default");
        assert_eq!(topology.pods[0].service_account, "default");
        assert!(topology.pods[0].command.is_empty());
        let namespaces = topology.all_namespaces();
        assert_eq!(namespaces.len(), 1);
        assert_eq!(namespaces[0].name, "default");
        assert!(namespaces[0].labels.is_empty());
    }

    fn error(text: &str) -> String {
        Topology::parse("t.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_file_and_the_field() {
        let unknown = error(&format!("{MINIMAL}colour: blue\n"));
        assert!(
            unknown.contains("t.yaml") && unknown.contains("colour"),
            "{unknown}"
        );

        let node = error(&MINIMAL.replace("    node: node-a", "    node: node-z"));
        assert!(
            node.contains("pods[0].node") && node.contains("node-z"),
            "{node}"
        );

        let name = error(&MINIMAL.replace("name: t", "name: Big_Mesh"));
        assert!(name.contains("name `Big_Mesh`"), "{name}");

        let cidr = error(&MINIMAL.replace("10.244.1.0/24", "10.244.1.0/33"));
        assert!(cidr.contains("10.244.1.0/33"), "{cidr}");

        let overlap = error(&MINIMAL.replace("10.244.1.0/24", "172.31.0.128/25"));
        assert!(overlap.contains("overlaps"), "{overlap}");

        let twice = error(&format!("{MINIMAL}  - name: a\n    node: node-a\n"));
        assert!(
            twice.contains("pods[1]") && twice.contains("twice"),
            "{twice}"
        );

        let pod_resource = error(&format!(
            "{MINIMAL}resources:\n  - kind: Pod\n    metadata: {{name: x}}\n"
        ));
        assert!(pod_resource.contains("under `pods`"), "{pod_resource}");

        let not_object = error(&format!("{MINIMAL}resources:\n  - hello\n"));
        assert!(not_object.contains("resources[0]"), "{not_object}");
    }

    #[test]
    fn namespaces_used_but_not_declared_have_no_labels() {
        let text = format!(
            "{MINIMAL}namespaces:
  - name: shop
    labels: {{istio.io/dataplane-mode: ambient}}
resources:
  - kind: Service
    metadata: {{name: s, namespace: ops}}
"
        );
        let topology = Topology::parse("t.yaml", &text).unwrap();
        let names: Vec<_> = topology
            .all_namespaces()
            .into_iter()
            .map(|ns| ns.name)
            .collect();
        assert_eq!(names, ["shop", "default", "ops"]);
        assert_eq!(
            topology.namespace_labels("shop")["istio.io/dataplane-mode"],
            "ambient"
        );
        assert!(topology.namespace_labels("ops").is_empty());
    }
}

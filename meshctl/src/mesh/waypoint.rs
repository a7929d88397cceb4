//! Waypoints of the local mesh, laid out as Istio's waypoint deployment
//! lays them out on a cluster: a `Gateway` of class `istio-waypoint` with
//! the `mesh` listener on 15008, a `Service` of the same name fronting it
//! (managed, so it never goes through a waypoint itself), and a pod
//! running the waypoint, labelled with the Gateway's name and out of
//! ambient capture (the waypoint speaks HBONE itself). Pure: plan edits
//! and the Kubernetes objects; `meshctl waypoint` does the I/O.

use serde_json::json;

use super::plan::{FIRST_POD_HOST, FIRST_SERVICE_HOST, Plan, PodPlan, ServicePlan};
use super::topology::Namespace;

/// Label on a waypoint's pod naming its Gateway (the Service selects it).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Label on the Service Istio creates for a waypoint.
pub const MANAGED_LABEL: &str = "gateway.istio.io/managed";
pub const MANAGED_VALUE: &str = "istio.io-mesh-controller";
/// The label a namespace or service opts in with.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// HBONE, and readiness.
pub const WAYPOINT_PORTS: [u16; 2] = [15008, 15021];

/// A waypoint's pod name: its Gateway's (one replica; `add_waypoint`
/// refuses a name an app pod has).
pub fn pod_name(gateway: &str) -> String {
    gateway.to_owned()
}

/// The config file holding a waypoint's Gateway and Service.
pub fn file_name(namespace: &str, name: &str) -> String {
    format!("waypoint-{namespace}-{name}.yaml")
}

// === impl Plan ===

impl Plan {
    /// Adds the waypoint `name` of `namespace` on `node` (the first node
    /// when `None`): its pod with the next free address of that node, and
    /// its Service with the next free VIP. `command` is what the pod runs.
    pub fn add_waypoint(
        &mut self,
        namespace: &str,
        name: &str,
        node: Option<&str>,
        command: Vec<String>,
    ) -> Result<&PodPlan, String> {
        if !self.namespaces.iter().any(|ns| ns.name == namespace) {
            let names: Vec<&str> = self.namespaces.iter().map(|ns| ns.name.as_str()).collect();
            return Err(format!(
                "mesh `{}` has no namespace `{namespace}`; its namespaces are {}",
                self.name,
                names.join(", ")
            ));
        }
        let pod_name = pod_name(name);
        if self.find_waypoint(namespace, name).is_some() {
            return Err(format!(
                "namespace `{namespace}` already has a waypoint `{name}`: delete it first \
                 (`meshctl waypoint delete -n {namespace} --name {name}`)"
            ));
        }
        if let Some(taken) = self
            .services
            .iter()
            .find(|svc| svc.namespace == namespace && svc.name == name)
        {
            return Err(format!(
                "namespace `{namespace}` already has a Service `{}`: choose another waypoint \
                 name with --name",
                taken.name
            ));
        }
        if self
            .pods
            .iter()
            .any(|pod| pod.namespace == namespace && pod.name == pod_name)
        {
            return Err(format!(
                "namespace `{namespace}` already has a pod `{pod_name}`: choose another waypoint \
                 name with --name"
            ));
        }
        let node = match node {
            Some(wanted) => self.node(wanted).ok_or_else(|| {
                let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
                format!(
                    "mesh `{}` has no node `{wanted}`; its nodes are {}",
                    self.name,
                    names.join(", ")
                )
            })?,
            None => self
                .nodes
                .first()
                .ok_or_else(|| format!("mesh `{}` has no nodes", self.name))?,
        };
        let ip = (FIRST_POD_HOST..)
            .map_while(|n| node.pod_cidr.host(n))
            .find(|ip| !self.pods.iter().any(|pod| pod.ip == *ip))
            .ok_or_else(|| {
                format!(
                    "podCIDR {} of node {} has no address left for the waypoint",
                    node.pod_cidr, node.name
                )
            })?;
        let vip = (FIRST_SERVICE_HOST..)
            .map_while(|n| self.service_network.host(n))
            .find(|vip| !self.services.iter().any(|svc| svc.vip == *vip))
            .ok_or_else(|| {
                format!(
                    "network.services {} has no VIP left for the waypoint",
                    self.service_network
                )
            })?;
        // Veth names must be unique on the node, and short (15 bytes).
        let host_veth = (0..)
            .map(|n| format!("wp{n}"))
            .find(|veth| !self.pods.iter().any(|pod| &pod.host_veth == veth))
            .unwrap_or_default();
        let node_name = node.name.clone();
        let labels = [
            (GATEWAY_NAME_LABEL.to_owned(), name.to_owned()),
            // The waypoint terminates HBONE itself: ztunnel must not capture it.
            (super::objects::DATAPLANE_MODE.to_owned(), "none".to_owned()),
        ]
        .into_iter()
        .collect();
        self.services.push(ServicePlan {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            vip,
            ports: vec![WAYPOINT_PORTS[0]],
        });
        let pod = PodPlan {
            name: pod_name.clone(),
            namespace: namespace.to_owned(),
            node: node_name,
            netns: format!("{}-{namespace}-{pod_name}", self.name),
            ip,
            host_veth,
            uid: format!("{}-{namespace}-{pod_name}", self.name),
            service_account: name.to_owned(),
            labels,
            command,
            ports: WAYPOINT_PORTS.to_vec(),
        };
        self.pods.push(pod);
        let index = self.pods.len() - 1;
        Ok(&self.pods[index])
    }

    /// Removes the waypoint's pod and Service from the plan, returning the
    /// pod (whose namespace and process the caller removes).
    pub fn remove_waypoint(&mut self, namespace: &str, name: &str) -> Result<PodPlan, String> {
        let Some(index) = self.find_waypoint(namespace, name) else {
            return Err(format!(
                "namespace `{namespace}` has no waypoint `{name}` (see `meshctl waypoint list`)"
            ));
        };
        self.services
            .retain(|svc| !(svc.namespace == namespace && svc.name == name));
        Ok(self.pods.remove(index))
    }

    /// Every waypoint: its pod and its Service.
    pub fn waypoints(&self) -> impl Iterator<Item = (&PodPlan, &ServicePlan)> {
        self.pods.iter().filter_map(|pod| {
            let gateway = pod.labels.get(GATEWAY_NAME_LABEL)?;
            let service = self
                .services
                .iter()
                .find(|svc| svc.namespace == pod.namespace && &svc.name == gateway)?;
            Some((pod, service))
        })
    }

    fn find_waypoint(&self, namespace: &str, name: &str) -> Option<usize> {
        self.pods.iter().position(|pod| {
            pod.namespace == namespace
                && pod.labels.get(GATEWAY_NAME_LABEL).map(String::as_str) == Some(name)
        })
    }
}

/// The waypoint's Gateway and Service, as one YAML file's documents.
pub fn objects(pod: &PodPlan, service: &ServicePlan) -> Vec<serde_json::Value> {
    let (namespace, name) = (&service.namespace, &service.name);
    let gateway = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": WAYPOINT_PORTS[0], "protocol": "HBONE"}],
        },
    });
    let svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_LABEL: MANAGED_VALUE, GATEWAY_NAME_LABEL: name},
        },
        "spec": {
            "clusterIP": service.vip.to_string(),
            "selector": {GATEWAY_NAME_LABEL: pod.labels.get(GATEWAY_NAME_LABEL)},
            "ports": [{"name": "mesh", "port": WAYPOINT_PORTS[0], "appProtocol": "all"}],
        },
    });
    vec![gateway, svc]
}

/// `namespace` with `istio.io/use-waypoint` set to `waypoint`, or removed.
pub fn with_use_waypoint(namespace: &Namespace, waypoint: Option<&str>) -> Namespace {
    let mut labels = namespace.labels.clone();
    match waypoint {
        Some(name) => labels.insert(USE_WAYPOINT_LABEL.to_owned(), name.to_owned()),
        None => labels.remove(USE_WAYPOINT_LABEL),
    };
    Namespace {
        name: namespace.name.clone(),
        labels,
    }
}

#[cfg(test)]
mod tests;

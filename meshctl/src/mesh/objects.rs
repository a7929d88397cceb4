//! The Kubernetes objects of a local mesh, as istiod-lite reads them from
//! its config directory: a file per namespace (so that `meshctl namespace
//! enable|disable` rewrites one small file), one for the pods with the
//! nodes and addresses `up` gave them, and one for the topology's
//! resources. Pure: a [`Plan`] in, file names and YAML out.

use std::collections::BTreeMap;

use serde_json::json;

use super::plan::{Plan, PodPlan};
use super::topology::Namespace;

/// The label that enrolls a namespace (or pod) in the ambient mesh.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// Every file of the config directory, by file name.
pub fn config_files(plan: &Plan) -> Result<Vec<(String, String)>, serde_yaml_ng::Error> {
    let mut files = Vec::new();
    for namespace in &plan.namespaces {
        files.push(namespace_file(namespace)?);
    }
    files.push(pods_file(plan)?);
    if !plan.resources.is_empty() {
        files.push(("resources.yaml".to_owned(), documents(&plan.resources)?));
    }
    Ok(files)
}

/// The file of every pod, by file name.
pub fn pods_file(plan: &Plan) -> Result<(String, String), serde_yaml_ng::Error> {
    let pods: Vec<serde_json::Value> = plan.pods.iter().map(pod_object).collect();
    Ok(("pods.yaml".to_owned(), documents(&pods)?))
}

/// A file of several objects, as YAML documents.
pub fn documents_file<T: serde::Serialize>(objects: &[T]) -> Result<String, serde_yaml_ng::Error> {
    documents(objects)
}

/// The file of one namespace, by file name.
pub fn namespace_file(namespace: &Namespace) -> Result<(String, String), serde_yaml_ng::Error> {
    let object = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace.name, "labels": namespace.labels},
    });
    Ok((
        format!("namespace-{}.yaml", namespace.name),
        serde_yaml_ng::to_string(&object)?,
    ))
}

/// `namespace` with `istio.io/dataplane-mode` set to `ambient` (enrolled)
/// or removed.
pub fn with_enrollment(namespace: &Namespace, enrolled: bool) -> Namespace {
    let mut labels: BTreeMap<String, String> = namespace.labels.clone();
    if enrolled {
        labels.insert(DATAPLANE_MODE.to_owned(), "ambient".to_owned());
    } else {
        labels.remove(DATAPLANE_MODE);
    }
    Namespace {
        name: namespace.name.clone(),
        labels,
    }
}

fn pod_object(pod: &PodPlan) -> serde_json::Value {
    let program = pod
        .command
        .first()
        .map_or("pause", |p| p.rsplit('/').next().unwrap_or(p.as_str()));
    let ports: Vec<_> = pod
        .ports
        .iter()
        .map(|p| json!({"containerPort": p}))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "uid": pod.uid,
            "labels": pod.labels,
        },
        "spec": {
            "nodeName": pod.node,
            "serviceAccountName": pod.service_account,
            "containers": [{"name": "app", "image": format!("local/{program}"), "ports": ports}],
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "podIP": pod.ip.to_string(),
            "podIPs": [{"ip": pod.ip.to_string()}],
        },
    })
}

fn documents<T: serde::Serialize>(objects: &[T]) -> Result<String, serde_yaml_ng::Error> {
    let mut text = String::new();
    for object in objects {
        text.push_str("---\n");
        text.push_str(&serde_yaml_ng::to_string(object)?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::topology::Topology;

    fn plan() -> Plan {
        let topology = Topology::parse(
            "t.yaml",
            "
name: t
nodes: [{name: a, podCIDR: 10.1.0.0/24}]
namespaces:
  - {name: shop, labels: {istio.io/dataplane-mode: ambient, team: x}}
pods:
  - {name: web, namespace: shop, node: a, serviceAccount: web, labels: {app: web},
     command: [/usr/bin/echo-http, --listen, '0.0.0.0:80'], ports: [80]}
resources:
  - {apiVersion: v1, kind: Service, metadata: {name: web, namespace: shop}, spec: {selector: {app: web}, ports: [{port: 80}]}}
",
        )
        .unwrap();
        Plan::new("t.yaml", &topology, "t").unwrap()
    }

    #[test]
    fn pods_carry_their_node_address_and_identity() {
        let files = config_files(&plan()).unwrap();
        let names: Vec<_> = files.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["namespace-shop.yaml", "pods.yaml", "resources.yaml"]
        );
        let pods: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(files[1].1.trim_start_matches("---\n")).unwrap();
        assert_eq!(pods["spec"]["nodeName"].as_str(), Some("a"));
        assert_eq!(pods["spec"]["serviceAccountName"].as_str(), Some("web"));
        assert_eq!(pods["status"]["podIP"].as_str(), Some("10.1.0.10"));
        assert_eq!(pods["metadata"]["uid"].as_str(), Some("t-shop-web"));
        assert_eq!(
            pods["spec"]["containers"][0]["image"].as_str(),
            Some("local/echo-http")
        );
        assert!(
            files[2].1.contains("clusterIP: 10.96.0.10"),
            "{}",
            files[2].1
        );
    }

    #[test]
    fn enrollment_flips_only_the_dataplane_label() {
        let plan = plan();
        let off = with_enrollment(&plan.namespaces[0], false);
        assert_eq!(off.labels.len(), 1);
        assert_eq!(off.labels["team"], "x");
        let on = with_enrollment(&off, true);
        assert_eq!(on, plan.namespaces[0]);
        let (name, text) = namespace_file(&off).unwrap();
        assert_eq!(name, "namespace-shop.yaml");
        assert!(!text.contains(DATAPLANE_MODE), "{text}");
    }
}

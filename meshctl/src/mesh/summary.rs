//! What `up` prints once the mesh is ready: where every pod and Service
//! is, and what to try next. Pure.

use std::fmt::Write;
use std::path::Path;

use super::objects::DATAPLANE_MODE;
use super::state::MeshState;
use crate::table::Table;

pub fn render(state: &MeshState, hints: &[String], dir: &Path) -> String {
    let plan = &state.plan;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mesh `{}` is up: istiod-lite at {} (node network {}), {} ztunnels\n",
        plan.name,
        plan.control_plane_ip,
        plan.node_network,
        plan.nodes.len()
    );
    let mut pods = Table::new(["POD", "NODE", "IP", "MESH", "RUNS"]);
    for pod in &plan.pods {
        // A pod's own label wins over its namespace's, as in istiod-lite.
        let namespace_mode = plan
            .namespaces
            .iter()
            .find(|ns| ns.name == pod.namespace)
            .and_then(|ns| ns.labels.get(DATAPLANE_MODE));
        let enrolled = pod
            .labels
            .get(DATAPLANE_MODE)
            .or(namespace_mode)
            .is_some_and(|mode| mode == "ambient");
        pods.row(vec![
            format!("{}/{}", pod.namespace, pod.name),
            pod.node.clone(),
            pod.ip.to_string(),
            if enrolled { "ambient" } else { "-" }.to_owned(),
            pod.command
                .first()
                .cloned()
                .unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    out.push_str(&pods.render());
    if !plan.services.is_empty() {
        out.push('\n');
        let mut services = Table::new(["SERVICE", "VIP", "PORTS"]);
        for svc in &plan.services {
            let ports: Vec<String> = svc.ports.iter().map(u16::to_string).collect();
            services.row(vec![
                format!("{}.{}", svc.name, svc.namespace),
                svc.vip.to_string(),
                ports.join(","),
            ]);
        }
        out.push_str(&services.render());
    }
    out.push_str("\nTry:\n");
    for hint in hints {
        let _ = writeln!(out, "  {hint}");
    }
    let first_node = plan.nodes.first().map_or("", |n| n.name.as_str());
    let _ = writeln!(out, "  meshctl ztunnel status --node {first_node}");
    let _ = writeln!(out, "  meshctl ztunnel connections --node {first_node}");
    if let Some(pod) = plan.pods.first() {
        let _ = writeln!(
            out,
            "  meshctl exec {}/{} -- ip addr",
            pod.namespace, pod.name
        );
    }
    let _ = writeln!(out, "  meshctl down");
    let _ = writeln!(out, "\nLogs: {}", dir.join("logs").display());
    out
}

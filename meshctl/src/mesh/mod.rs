//! The local mesh: `meshctl up` turns one topology file into network
//! namespaces, istiod-lite, a ztunnel per node and the pods' processes;
//! `down` removes it all; `namespace enable|disable` flips a namespace's
//! enrollment live; `exec` runs a command inside a pod (or node).
//!
//! The pure parts (what goes where, which objects istiod-lite reads, what
//! is printed) are separate from the parts that act on the machine (`ip`,
//! processes, probes), which need root and are tested end to end in
//! `e2e/tests/`.
//!
//! # Layout
//!
//! - [`topology`]: pure: the topology file, parsed and checked.
//! - [`cidr`]: pure: address ranges.
//! - [`plan`]: pure: namespace names, addresses, VIPs, `/etc/hosts`.
//! - [`objects`]: pure: the Kubernetes YAML of istiod-lite's config dir.
//! - [`summary`]: pure: what `up` prints at the end.
//! - [`waypoint`]: pure: a waypoint's pod, Service and Gateway.
//! - [`waypoints`]: `meshctl waypoint apply|list|delete` on a running mesh.
//! - [`traces`]: pure: where the waypoints send their traces (OTLP).
//! - [`state`]: what a mesh made, on disk, and which mesh a command means.
//! - [`up`], [`down`]: the two lifecycles.
//! - [`network`], [`process`], [`probe`], [`binaries`]: the machine.

pub mod binaries;
pub mod cidr;
pub mod down;
pub mod error;
pub mod network;
pub mod objects;
pub mod plan;
pub mod probe;
pub mod process;
pub mod state;
pub mod summary;
pub mod topology;
pub mod traces;
pub mod up;
pub mod waypoint;
pub mod waypoints;

use std::path::Path;
use std::process::Command;

pub use error::{MeshError, TopologyError};
pub use up::{UpOptions, up};

use state::{MeshDir, write_atomic};

/// `meshctl down`: removes the mesh and says what it removed.
pub fn down(state_dir: &Path, mesh: Option<&str>) -> Result<String, MeshError> {
    let dir = state::select(state_dir, mesh)?;
    let state = dir.load()?;
    let report = down::teardown(&dir, &state);
    if !report.problems.is_empty() {
        return Err(MeshError::Command {
            action: format!("removing mesh `{}`", state.plan.name),
            message: format!(
                "{}\nthe state is kept in {}: run `meshctl down` again once fixed",
                report.problems.join("\n"),
                dir.path().display()
            ),
        });
    }
    let mut text = format!(
        "mesh `{}` is down: stopped {} processes, removed {} network namespaces\n",
        state.plan.name, report.stopped, report.netns_removed
    );
    if !report.killed.is_empty() {
        text.push_str(&format!(
            "killed after {} s without exiting: {}\n",
            down::STOP_GRACE.as_secs(),
            report.killed.join(", ")
        ));
    }
    Ok(text)
}

/// `meshctl namespace enable|disable <ns>`: sets or removes
/// `istio.io/dataplane-mode=ambient` in the file istiod-lite watches; the
/// push that follows makes each ztunnel capture or release the pods.
pub fn set_enrollment(
    state_dir: &Path,
    mesh: Option<&str>,
    namespace: &str,
    enrolled: bool,
) -> Result<String, MeshError> {
    let dir = state::select(state_dir, mesh)?;
    let mut state = dir.load()?;
    let names: Vec<String> = state
        .plan
        .namespaces
        .iter()
        .map(|ns| ns.name.clone())
        .collect();
    let Some(entry) = state
        .plan
        .namespaces
        .iter_mut()
        .find(|ns| ns.name == namespace)
    else {
        return Err(MeshError::NotFound(format!(
            "mesh `{}` has no namespace `{namespace}`; its namespaces are {}",
            state.plan.name,
            names.join(", ")
        )));
    };
    *entry = objects::with_enrollment(entry, enrolled);
    let (file, text) = objects::namespace_file(entry).map_err(|error| MeshError::State {
        path: dir.config_dir(),
        message: error.to_string(),
    })?;
    write_atomic(&dir.config_dir().join(file), text.as_bytes())?;
    dir.save(&state)?;
    let pods = state
        .plan
        .pods
        .iter()
        .filter(|p| p.namespace == namespace)
        .count();
    Ok(if enrolled {
        format!(
            "namespace `{namespace}` is enrolled ({}=ambient): its {pods} pods join the mesh\n",
            objects::DATAPLANE_MODE
        )
    } else {
        format!("namespace `{namespace}` left the mesh: its {pods} pods talk plaintext again\n")
    })
}

/// The prefix of files `meshctl apply` puts in istiod-lite's config
/// directory, so that `delete` removes only what `apply` wrote.
const APPLIED_PREFIX: &str = "applied-";

/// `meshctl apply -f <file>`: serves the Kubernetes objects of `file` in the
/// mesh (by copying it into istiod-lite's config directory, which it
/// watches); applying a file of the same name again replaces it.
pub fn apply(state_dir: &Path, mesh: Option<&str>, file: &Path) -> Result<String, MeshError> {
    let dir = state::select(state_dir, mesh)?;
    let text = std::fs::read_to_string(file).map_err(|source| MeshError::Io {
        action: "read",
        path: file.to_owned(),
        source,
    })?;
    let name = applied_name(file)?;
    write_atomic(&dir.config_dir().join(&name), text.as_bytes())?;
    Ok(format!(
        "{} applied: istiod-lite reads it within a second (problems show on its /debug/diagnostics)\n",
        file.display()
    ))
}

/// `meshctl delete -f <file>`: stops serving what `apply -f <file>` served.
pub fn delete(state_dir: &Path, mesh: Option<&str>, file: &Path) -> Result<String, MeshError> {
    let dir = state::select(state_dir, mesh)?;
    let path = dir.config_dir().join(applied_name(file)?);
    std::fs::remove_file(&path).map_err(|source| MeshError::Io {
        action: "remove (was it applied?)",
        path,
        source,
    })?;
    Ok(format!("{} deleted\n", file.display()))
}

fn applied_name(file: &Path) -> Result<String, MeshError> {
    let stem = file
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .ok_or_else(|| MeshError::NotFound(format!("{} is not a .yaml file", file.display())))?;
    Ok(format!("{APPLIED_PREFIX}{stem}"))
}

/// `meshctl restart <component>`: stops a component (SIGTERM; ztunnel
/// drains) if it runs, and starts it again as `up` did.
pub fn restart(state_dir: &Path, mesh: Option<&str>, component: &str) -> Result<String, MeshError> {
    let dir = state::select(state_dir, mesh)?;
    let mut state = dir.load()?;
    let name = process_name(&state, component)?;
    let Some(index) = state.processes.iter().position(|p| p.name == name) else {
        return Err(MeshError::NotFound(format!(
            "mesh `{}` runs no `{component}`",
            state.plan.name
        )));
    };
    let record = state.processes[index].clone();
    let Some(spawn) = record.spawn.clone() else {
        return Err(MeshError::NotFound(format!(
            "the state does not say how `{name}` was started"
        )));
    };
    let was_running = process::is_running(&record);
    let killed = process::stop_all(
        std::slice::from_ref(&record),
        std::time::Duration::from_secs(10),
    );
    let new = process::start(&spawn)?;
    let pid = new.pid;
    state.processes[index] = new;
    dir.save(&state)?;
    let how = match (was_running, killed.is_empty()) {
        (false, _) => "was not running; started",
        (true, true) => "stopped and started",
        (true, false) => "killed (it did not stop within 10 s) and started",
    };
    Ok(format!("{name} {how} again (pid {pid})\n"))
}

/// The record name of a component: `istiod-lite`, `ztunnel/<node>`, or a
/// pod (`<pod>` or `<ns>/<pod>`).
fn process_name(state: &state::MeshState, component: &str) -> Result<String, MeshError> {
    if component == "istiod-lite" || component.starts_with("ztunnel/") {
        return Ok(component.to_owned());
    }
    let pod = state
        .plan
        .find_pod(component)
        .map_err(MeshError::NotFound)?;
    Ok(format!("pod/{}/{}", pod.namespace, pod.name))
}

/// Where `meshctl exec` runs a command.
#[derive(Debug, Clone)]
pub enum ExecTarget {
    /// `<pod>` or `<namespace>/<pod>`.
    Pod(String),
    /// A node's namespace (where its ztunnel runs).
    Node(String),
    /// The node network's namespace (where istiod-lite runs).
    Cluster,
}

/// The command line that runs `command` inside `target`'s network
/// namespace, with the pod's environment.
pub fn exec_command(
    state_dir: &Path,
    mesh: Option<&str>,
    target: &ExecTarget,
    command: &[String],
) -> Result<Command, MeshError> {
    let state = state::select(state_dir, mesh)?.load()?;
    let plan = &state.plan;
    let mut cmd = Command::new("ip");
    let netns = match target {
        ExecTarget::Pod(name) => {
            let pod = plan.find_pod(name).map_err(MeshError::NotFound)?;
            cmd.env("POD_NAME", &pod.name)
                .env("POD_NAMESPACE", &pod.namespace)
                .env("POD_IP", pod.ip.to_string());
            pod.netns.clone()
        }
        ExecTarget::Node(name) => plan
            .node(name)
            .ok_or_else(|| {
                MeshError::NotFound(format!("mesh `{}` has no node `{name}`", plan.name))
            })?
            .netns
            .clone(),
        ExecTarget::Cluster => plan.cluster_netns.clone(),
    };
    cmd.args(["netns", "exec", &netns])
        .args(command)
        .env("PATH", binaries::pod_path());
    Ok(cmd)
}

/// The network namespace of a node's ztunnel, for `meshctl ztunnel --node`.
pub fn node_netns(state_dir: &Path, mesh: Option<&str>, node: &str) -> Result<String, MeshError> {
    let state = state::select(state_dir, mesh)?.load()?;
    state
        .plan
        .node(node)
        .map(|n| n.netns.clone())
        .ok_or_else(|| {
            MeshError::NotFound(format!(
                "mesh `{}` has no node `{node}`; its nodes are {}",
                state.plan.name,
                state
                    .plan
                    .nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The log file of a component: `istiod-lite`, `ztunnel/<node>`, or a
/// pod (`<pod>` or `<ns>/<pod>`).
pub fn log_file(
    state_dir: &Path,
    mesh: Option<&str>,
    component: &str,
) -> Result<std::path::PathBuf, MeshError> {
    let dir: MeshDir = state::select(state_dir, mesh)?;
    let state = dir.load()?;
    let name = if component == "istiod-lite" || component.starts_with("ztunnel/") {
        component.to_owned()
    } else {
        let pod = state
            .plan
            .find_pod(component)
            .map_err(MeshError::NotFound)?;
        format!("pod/{}/{}", pod.namespace, pod.name)
    };
    state
        .processes
        .iter()
        .find(|p| p.name == name)
        .map(|p| p.log.clone())
        .ok_or_else(|| {
            MeshError::NotFound(format!(
                "mesh `{}` runs no `{component}`; it runs {}",
                state.plan.name,
                state
                    .processes
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

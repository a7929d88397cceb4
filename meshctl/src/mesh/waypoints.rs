//! `meshctl waypoint apply|list|delete`: a waypoint's pod made, started
//! and removed on a running local mesh (the layout is in [`super::waypoint`]);
//! `meshctl namespace use-waypoint`: a namespace's `istio.io/use-waypoint`
//! label set or removed, with the waypoint left running.
//!
//! Order matters for traffic. `apply` writes the Gateway and Service first
//! (so the pod is a waypoint, whose identity its node may sign for, as soon
//! as istiod-lite sees it), then the pod; it starts the waypoint, waits for
//! its readiness, and only then labels the namespace, so no request is ever
//! sent to a waypoint that cannot serve it. `delete` takes the label off
//! first, for the same reason, then stops the waypoint.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::error::MeshError;
use super::process::{self, Spawn};
use super::state::{self, MeshDir, MeshState, write_atomic};
use super::up::{
    ISTIOD_HOSTNAME, XDS_PORT, ZTUNNEL_ADMIN_PORT, create_dir, create_netns, log_level, spawn,
    token_path, wait_ready,
};
use super::waypoint::{self as layout, USE_WAYPOINT_LABEL, WAYPOINT_PORTS};
use super::{binaries, network, objects, probe};
use crate::table::Table;

/// What `meshctl waypoint apply` was asked for.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub namespace: String,
    pub name: String,
    /// The node to run on (default: the first).
    pub node: Option<String>,
    /// Label the namespace `istio.io/use-waypoint=<name>` once ready.
    pub enroll_namespace: bool,
    pub timeout: Duration,
}

/// `meshctl waypoint apply`. A waypoint that fails to start is removed
/// again, so that a second try starts clean.
pub fn apply(
    state_dir: &Path,
    mesh: Option<&str>,
    options: &ApplyOptions,
) -> Result<String, MeshError> {
    let dir = state::select(state_dir, mesh)?;
    let before = dir.load()?;
    let result = start(&dir, options);
    let added = dir
        .load()
        .is_ok_and(|now| now.plan.waypoints().count() > before.plan.waypoints().count());
    match result {
        Err(error) if added => {
            let cleanup = delete(state_dir, mesh, &options.namespace, &options.name);
            Err(MeshError::Command {
                action: format!("starting waypoint {}/{}", options.namespace, options.name),
                message: match cleanup {
                    Ok(_) => format!("{error}\nthe waypoint was removed again"),
                    Err(cleanup) => format!(
                        "{error}\nremoving it again failed too ({cleanup}): run `meshctl waypoint delete -n {} --name {}`",
                        options.namespace, options.name
                    ),
                },
            })
        }
        other => other,
    }
}

fn start(dir: &MeshDir, options: &ApplyOptions) -> Result<String, MeshError> {
    let mut state = dir.load()?;
    let program = binaries::find("waypoint")?;
    let dir = dir.clone();
    let (namespace, name) = (options.namespace.as_str(), options.name.as_str());
    let pod = state
        .plan
        .add_waypoint(namespace, name, options.node.as_deref(), Vec::new())
        .map_err(MeshError::NotFound)?
        .clone();
    let istiod_dir = dir.istiod_dir();
    let cp = IpAddr::V4(state.plan.control_plane_ip);
    let args = vec![
        "--xds-address".to_owned(),
        format!("https://{}", SocketAddr::new(cp, XDS_PORT)),
        "--xds-root-ca".to_owned(),
        istiod_dir.join("root-cert.pem").display().to_string(),
        "--alt-xds-hostname".to_owned(),
        ISTIOD_HOSTNAME.to_owned(),
        "--alt-ca-hostname".to_owned(),
        ISTIOD_HOSTNAME.to_owned(),
        // Without Kubernetes the waypoint authenticates as its node.
        "--auth-token".to_owned(),
        token_path(&istiod_dir, &pod.node).display().to_string(),
        "--trust-domain".to_owned(),
        state.plan.trust_domain.clone(),
    ];
    if let Some(entry) = state
        .plan
        .pods
        .iter_mut()
        .find(|p| p.namespace == pod.namespace && p.name == pod.name)
    {
        entry.command = std::iter::once(program.display().to_string())
            .chain(args.iter().cloned())
            .collect();
    }

    let node = state
        .plan
        .node(&pod.node)
        .cloned()
        .ok_or_else(|| MeshError::NotFound(format!("node `{}` vanished", pod.node)))?;
    create_netns(&dir, &mut state, &pod.netns)?;
    network::setup_pod(&node, &pod)?;
    write_hosts_files(&dir, &mut state)?;
    write_objects(&dir, &state, namespace, name)?;

    let process_name = format!("pod/{namespace}/{}", pod.name);
    let env = vec![
        ("POD_NAME".to_owned(), pod.name.clone()),
        ("POD_NAMESPACE".to_owned(), namespace.to_owned()),
        ("SERVICE_ACCOUNT".to_owned(), pod.service_account.clone()),
        ("NODE_NAME".to_owned(), pod.node.clone()),
        ("INSTANCE_IP".to_owned(), pod.ip.to_string()),
        ("RUST_LOG".to_owned(), log_level()),
    ];
    let env = env
        .into_iter()
        .chain(state.plan.tracing.iter().flat_map(|t| t.waypoint_env()))
        .collect();
    let record = spawn(
        &dir,
        &mut state,
        Spawn {
            log: dir.log_file(&process_name),
            name: process_name,
            netns: pod.netns.clone(),
            program,
            args,
            env,
        },
    )?;
    let ready_at = SocketAddr::new(IpAddr::V4(pod.ip), WAYPOINT_PORTS[1]);
    let netns = pod.netns.clone();
    wait_ready(
        &format!("waypoint {namespace}/{name}"),
        &record,
        options.timeout,
        || {
            let status = probe::in_netns(&netns, move || {
                probe::http_status(ready_at, "/healthz/ready", Duration::from_secs(1))
            })?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("/healthz/ready answers {status}"))
            }
        },
    )?;

    let mut text = format!(
        "waypoint {namespace}/{name} is ready on node {} at {} (Service {name}.{namespace}, VIP {})\n",
        pod.node,
        pod.ip,
        state
            .plan
            .waypoints()
            .find(|(p, _)| p.name == pod.name && p.namespace == namespace)
            .map(|(_, svc)| svc.vip.to_string())
            .unwrap_or_default()
    );
    if options.enroll_namespace {
        set_use_waypoint(&dir, &mut state, namespace, Some(name))?;
        // So that the first request after this command goes through it.
        let vip = state
            .plan
            .waypoints()
            .find(|(p, _)| p.name == pod.name && p.namespace == namespace)
            .map(|(_, svc)| svc.vip.to_string())
            .unwrap_or_default();
        if let Err(waited) = wait_until_routed(&state, namespace, name, &vip) {
            let _ = writeln!(text, "note: {waited}; it will follow shortly");
        }
        let _ = writeln!(
            text,
            "namespace `{namespace}` now uses it ({USE_WAYPOINT_LABEL}={name}): its services' traffic goes through the waypoint"
        );
    } else {
        let _ = writeln!(
            text,
            "to send a namespace's traffic through it: label it {USE_WAYPOINT_LABEL}={name}, or apply again with --enroll-namespace"
        );
    }
    dir.save(&state)?;
    Ok(text)
}

/// `meshctl waypoint delete`.
pub fn delete(
    state_dir: &Path,
    mesh: Option<&str>,
    namespace: &str,
    name: &str,
) -> Result<String, MeshError> {
    let dir = state::select(state_dir, mesh)?;
    let mut state = dir.load()?;
    let mut text = String::new();
    let uses_it = state.plan.namespaces.iter().any(|ns| {
        ns.name == namespace && ns.labels.get(USE_WAYPOINT_LABEL).map(String::as_str) == Some(name)
    });
    if uses_it {
        set_use_waypoint(&dir, &mut state, namespace, None)?;
        let _ = writeln!(
            text,
            "namespace `{namespace}` no longer uses it: traffic goes straight to the services again"
        );
    }
    // The Gateway and Service go before the process: once every ztunnel
    // has seen them go (the label's removal, written first, is in that
    // push or an earlier one), nothing sends it traffic any more.
    remove_file(&dir.config_dir().join(layout::file_name(namespace, name)))?;
    if let Err(waited) = wait_until_unrouted(&state, namespace, name) {
        let _ = writeln!(text, "note: {waited}; stopping the waypoint anyway");
    }
    let pod = state
        .plan
        .remove_waypoint(namespace, name)
        .map_err(MeshError::NotFound)?;
    let process_name = format!("pod/{namespace}/{}", pod.name);
    let records: Vec<_> = state
        .processes
        .iter()
        .filter(|record| record.name == process_name)
        .cloned()
        .collect();
    let problems = process::stop_all(&records, super::down::STOP_GRACE);
    state.processes.retain(|record| record.name != process_name);
    dir.save(&state)?;
    if network::netns_exists(&pod.netns) {
        network::delete_netns(&pod.netns)?;
    }
    state.netns.retain(|netns| *netns != pod.netns);
    let etc = Path::new("/etc/netns").join(&pod.netns);
    if etc.exists() {
        let _ = std::fs::remove_dir_all(&etc);
    }
    state.etc_netns.retain(|path| *path != etc);
    write_pods(&dir, &state)?;
    write_hosts_files(&dir, &mut state)?;
    dir.save(&state)?;
    let _ = writeln!(text, "waypoint {namespace}/{name} is deleted");
    for problem in problems {
        let _ = writeln!(text, "note: {problem}");
    }
    Ok(text)
}

/// `meshctl namespace use-waypoint <ns> <name>|--none`: sets or removes
/// the namespace's `istio.io/use-waypoint` label, as `kubectl label` would
/// on a cluster, and waits until every ztunnel routes the namespace's
/// services accordingly. The waypoint itself keeps running either way.
pub fn use_waypoint(
    state_dir: &Path,
    mesh: Option<&str>,
    namespace: &str,
    waypoint: Option<&str>,
) -> Result<String, MeshError> {
    let dir = state::select(state_dir, mesh)?;
    let mut state = dir.load()?;
    let Some(name) = waypoint else {
        set_use_waypoint(&dir, &mut state, namespace, None)?;
        let mut text = format!(
            "namespace `{namespace}`: {USE_WAYPOINT_LABEL} removed; its services' traffic goes straight to them again\n"
        );
        if let Err(waited) = wait_until_direct(&state, namespace) {
            let _ = writeln!(text, "note: {waited}; it will follow shortly");
        }
        return Ok(text);
    };
    let Some(vip) = state
        .plan
        .waypoints()
        .find(|(pod, service)| pod.namespace == namespace && service.name == name)
        .map(|(_, service)| service.vip.to_string())
    else {
        return Err(MeshError::NotFound(format!(
            "namespace `{namespace}` has no waypoint `{name}`: deploy it first with \
             `meshctl waypoint apply -n {namespace} --name {name}`"
        )));
    };
    set_use_waypoint(&dir, &mut state, namespace, Some(name))?;
    let mut text = format!(
        "namespace `{namespace}`: {USE_WAYPOINT_LABEL}={name}; its services' traffic goes through the waypoint\n"
    );
    if let Err(waited) = wait_until_routed(&state, namespace, name, &vip) {
        let _ = writeln!(text, "note: {waited}; it will follow shortly");
    }
    Ok(text)
}

/// `meshctl waypoint list`.
pub fn list(state_dir: &Path, mesh: Option<&str>) -> Result<String, MeshError> {
    let dir = state::select(state_dir, mesh)?;
    let state = dir.load()?;
    let mut table = Table::new([
        "NAMESPACE",
        "NAME",
        "NODE",
        "ADDRESS",
        "VIP",
        "STATUS",
        "USED BY",
    ]);
    for (pod, service) in state.plan.waypoints() {
        let gateway = &service.name;
        let running = state
            .processes
            .iter()
            .find(|r| r.name == format!("pod/{}/{}", pod.namespace, pod.name))
            .is_some_and(process::is_running);
        let users: Vec<&str> = state
            .plan
            .namespaces
            .iter()
            .filter(|ns| ns.labels.get(USE_WAYPOINT_LABEL) == Some(gateway))
            .map(|ns| ns.name.as_str())
            .collect();
        table.row(vec![
            pod.namespace.clone(),
            gateway.clone(),
            pod.node.clone(),
            pod.ip.to_string(),
            service.vip.to_string(),
            if running { "running" } else { "stopped" }.to_owned(),
            if users.is_empty() {
                "-".to_owned()
            } else {
                users.join(",")
            },
        ]);
    }
    if state.plan.waypoints().next().is_none() {
        return Ok(
            "no waypoints: add one with `meshctl waypoint apply -n <namespace>`\n".to_owned(),
        );
    }
    Ok(table.render())
}

/// How long `apply` and `delete` wait for the ztunnels to follow.
const ZTUNNEL_SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Waits until every node's ztunnel holds a config (its admin API's
/// `/config_dump`, read inside the node's namespace) for which `done`
/// holds; `what` names the wait in the error.
fn wait_for_ztunnels(
    state: &MeshState,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool + Clone + Send + 'static,
) -> Result<(), String> {
    let admin = SocketAddr::from(([127, 0, 0, 1], ZTUNNEL_ADMIN_PORT));
    let deadline = std::time::Instant::now() + ZTUNNEL_SYNC_TIMEOUT;
    for node in &state.plan.nodes {
        loop {
            let done = done.clone();
            let reached = probe::in_netns(&node.netns, move || {
                let (code, body) = probe::http_get(admin, "/config_dump", Duration::from_secs(1))?;
                let dump: serde_json::Value = serde_json::from_str(&body)
                    .map_err(|e| format!("config_dump is not JSON: {e}"))?;
                Ok(code == 200 && done(&dump))
            });
            match reached {
                Ok(true) => break,
                _ if std::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "the ztunnel of {} did not {what} within {} s",
                        node.name,
                        ZTUNNEL_SYNC_TIMEOUT.as_secs()
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    Ok(())
}

fn services(dump: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    dump["services"].as_array().into_iter().flatten()
}

/// Every node's ztunnel has dropped the waypoint's own Service.
fn wait_until_unrouted(state: &MeshState, namespace: &str, name: &str) -> Result<(), String> {
    let hostname = format!("{name}.{namespace}.svc.cluster.local");
    wait_for_ztunnels(state, "drop the waypoint", move |dump| {
        !services(dump).any(|svc| svc["hostname"] == hostname.as_str())
    })
}

/// Every node's ztunnel sends the namespace's services to them directly,
/// through no waypoint.
fn wait_until_direct(state: &MeshState, namespace: &str) -> Result<(), String> {
    let namespace = namespace.to_owned();
    wait_for_ztunnels(
        state,
        "route the namespace around the waypoint",
        move |dump| {
            services(dump)
                .filter(|svc| svc["namespace"] == namespace.as_str())
                .all(|svc| svc["waypoint"].is_null())
        },
    )
}

/// Every node's ztunnel sends the namespace's services (but the
/// waypoint's own) to the waypoint at `vip`.
fn wait_until_routed(
    state: &MeshState,
    namespace: &str,
    name: &str,
    vip: &str,
) -> Result<(), String> {
    let (namespace, name, vip) = (namespace.to_owned(), name.to_owned(), vip.to_owned());
    wait_for_ztunnels(
        state,
        "route the namespace through the waypoint",
        move |dump| {
            services(dump)
                .filter(|svc| {
                    svc["namespace"] == namespace.as_str() && svc["name"] != name.as_str()
                })
                .all(|svc| svc["waypoint"]["destination"]["Address"]["ip"] == vip.as_str())
        },
    )
}

fn write_objects(
    dir: &MeshDir,
    state: &MeshState,
    namespace: &str,
    name: &str,
) -> Result<(), MeshError> {
    let config = dir.config_dir();
    let Some((pod, service)) = state
        .plan
        .waypoints()
        .find(|(p, s)| p.namespace == namespace && s.name == name)
    else {
        return Err(MeshError::NotFound(format!(
            "waypoint {namespace}/{name} vanished"
        )));
    };
    let text = objects::documents_file(&layout::objects(pod, service)).map_err(|error| {
        MeshError::State {
            path: config.clone(),
            message: error.to_string(),
        }
    })?;
    // Gateway and Service first: the pod is a waypoint from its first read.
    write_atomic(
        &config.join(layout::file_name(namespace, name)),
        text.as_bytes(),
    )?;
    write_pods(dir, state)
}

fn write_pods(dir: &MeshDir, state: &MeshState) -> Result<(), MeshError> {
    let config = dir.config_dir();
    let (file, text) = objects::pods_file(&state.plan).map_err(|error| MeshError::State {
        path: config.clone(),
        message: error.to_string(),
    })?;
    write_atomic(&config.join(file), text.as_bytes())
}

/// Every pod's `/etc/hosts`, so that each resolves the Services as they
/// are now.
fn write_hosts_files(dir: &MeshDir, state: &mut MeshState) -> Result<(), MeshError> {
    for pod in &state.plan.pods {
        let etc = Path::new("/etc/netns").join(&pod.netns);
        if !state.etc_netns.contains(&etc) {
            state.etc_netns.push(etc.clone());
            dir.save(state)?;
        }
        create_dir(&etc)?;
        write_atomic(&etc.join("hosts"), state.plan.hosts_file(pod).as_bytes())?;
    }
    Ok(())
}

fn set_use_waypoint(
    dir: &MeshDir,
    state: &mut MeshState,
    namespace: &str,
    waypoint: Option<&str>,
) -> Result<(), MeshError> {
    let Some(entry) = state
        .plan
        .namespaces
        .iter_mut()
        .find(|ns| ns.name == namespace)
    else {
        return Err(MeshError::NotFound(format!("no namespace `{namespace}`")));
    };
    *entry = layout::with_use_waypoint(entry, waypoint);
    let (file, text) = objects::namespace_file(entry).map_err(|error| MeshError::State {
        path: dir.config_dir(),
        message: error.to_string(),
    })?;
    write_atomic(&dir.config_dir().join(file), text.as_bytes())?;
    dir.save(state)
}

fn remove_file(path: &Path) -> Result<(), MeshError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MeshError::Io {
            action: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

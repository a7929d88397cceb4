//! `meshctl up`: a topology file becomes a running mesh. The steps, each
//! recorded in the state before it acts:
//!
//! 1. check: the file, root, `ip` and `nft`, the binaries, that the mesh
//!    is not up already;
//! 2. network: a namespace for the node network, per node, per pod;
//! 3. config: the Kubernetes objects into istiod-lite's directory, a
//!    bootstrap token per node, each pod's `/etc/hosts`;
//! 4. processes: istiod-lite (waited for), a ztunnel per node in netns
//!    capture mode, each pod's command inside its pod;
//! 5. ready: every ztunnel's readiness (first config arrived, every local
//!    pod captured) and every port the pods declare.
//!
//! A failure reports the component's last log lines and tears down what
//! was made, so there is never half a mesh; `--keep-on-failure` keeps it
//! for a look.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::binaries;
use super::down;
use super::error::{MeshError, TopologyError};
use super::network;
use super::objects;
use super::plan::Plan;
use super::probe;
use super::process::{self, Spawn};
use super::state::{MeshDir, MeshState, ProcessRecord, write_atomic};
use super::summary;
use super::topology::Topology;

pub const XDS_PORT: u16 = 15012;
pub const ISTIOD_HTTP_PORT: u16 = 15014;
pub const ZTUNNEL_READINESS_PORT: u16 = 15021;
/// ztunnel's admin API, on the node's loopback.
pub const ZTUNNEL_ADMIN_PORT: u16 = 15000;
/// ztunnel's server name check on istiod-lite's certificate.
pub(super) const ISTIOD_HOSTNAME: &str = "istiod.istio-system.svc";

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub file: PathBuf,
    /// Overrides the topology's `name`.
    pub name: Option<String>,
    pub state_dir: PathBuf,
    pub keep_on_failure: bool,
    /// How long each component may take to become ready.
    pub timeout: Duration,
    /// `--otlp-endpoint` and `--trace-sampling`: the waypoints' traces,
    /// over the topology's `tracing`.
    pub otlp_endpoint: Option<String>,
    pub trace_sampling: Option<f64>,
}

/// Brings the mesh up; progress goes to `progress` as it happens, and the
/// returned text says how to reach things.
pub fn up(options: &UpOptions, progress: &mut dyn Write) -> Result<String, MeshError> {
    let source = options.file.display().to_string();
    let text = fs::read_to_string(&options.file).map_err(|source_error| MeshError::Io {
        action: "read the topology file",
        path: options.file.clone(),
        source: source_error,
    })?;
    let topology = Topology::parse(&source, &text)?;
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| topology.name.clone());
    let mut plan = Plan::new(&source, &topology, &name)?;
    plan.tracing = super::traces::merge(
        topology.tracing.as_ref(),
        options.otlp_endpoint.as_deref(),
        options.trace_sampling,
    )
    .map_err(|message| TopologyError::Invalid {
        source_name: source.clone(),
        message,
    })?;
    check_system()?;
    let programs = Programs::find(&plan)?;
    let dir = MeshDir::new(&options.state_dir, &name);
    if dir.exists() {
        return Err(MeshError::AlreadyUp {
            name,
            state: dir.path().to_owned(),
        });
    }
    let mut netns = vec![plan.cluster_netns.clone()];
    netns.extend(plan.nodes.iter().map(|n| n.netns.clone()));
    netns.extend(plan.pods.iter().map(|p| p.netns.clone()));
    if let Some(taken) = netns.iter().find(|ns| network::netns_exists(ns)) {
        return Err(MeshError::NetnsExists(taken.clone()));
    }
    dir.create()?;
    let mut state = MeshState {
        plan,
        topology_file: fs::canonicalize(&options.file).unwrap_or_else(|_| options.file.clone()),
        netns: Vec::new(),
        etc_netns: Vec::new(),
        processes: Vec::new(),
        complete: false,
    };
    dir.save(&state)?;
    let started = Instant::now();
    match build(&dir, &mut state, &programs, options, progress) {
        Ok(()) => {
            state.complete = true;
            dir.save(&state)?;
            let _ = writeln!(
                progress,
                "ready in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(summary::render(&state, &topology.hints, dir.path()))
        }
        Err(error) if options.keep_on_failure => {
            let _ = writeln!(
                progress,
                "kept what was made: `meshctl down --mesh {name}` removes it"
            );
            Err(error)
        }
        Err(error) => {
            let _ = writeln!(progress, "removing what was made...");
            let report = down::teardown(&dir, &state);
            if !report.problems.is_empty() {
                let _ = writeln!(progress, "{}", report.problems.join("\n"));
            }
            Err(error)
        }
    }
}

/// Root, and the tools capture needs.
fn check_system() -> Result<(), MeshError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(MeshError::NotRoot);
    }
    for (tool, package) in [("ip", "iproute2"), ("nft", "nftables")] {
        if binaries::find(tool).is_err() {
            return Err(MeshError::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// The programs a mesh runs, found before anything is made.
struct Programs {
    istiod: PathBuf,
    ztunnel: PathBuf,
    /// Each pod's program, in plan order (`None`: the pod runs nothing).
    pods: Vec<Option<PathBuf>>,
}

impl Programs {
    fn find(plan: &Plan) -> Result<Programs, MeshError> {
        let pods = plan
            .pods
            .iter()
            .map(|pod| pod.command.first().map(|p| binaries::find(p)).transpose())
            .collect::<Result<_, _>>()?;
        Ok(Programs {
            istiod: binaries::find("istiod-lite")?,
            ztunnel: binaries::find("ztunnel")?,
            pods,
        })
    }
}

fn build(
    dir: &MeshDir,
    state: &mut MeshState,
    programs: &Programs,
    options: &UpOptions,
    progress: &mut dyn Write,
) -> Result<(), MeshError> {
    let plan = state.plan.clone();
    let _ = writeln!(
        progress,
        "[1/4] network: {} nodes, {} pods on {}",
        plan.nodes.len(),
        plan.pods.len(),
        plan.node_network
    );
    create_netns(dir, state, &plan.cluster_netns)?;
    network::setup_cluster(&plan)?;
    for node in &plan.nodes {
        create_netns(dir, state, &node.netns)?;
        network::setup_node(&plan, node)?;
    }
    for pod in &plan.pods {
        create_netns(dir, state, &pod.netns)?;
        // Invariant: every pod's node is in the plan (Plan::new checked).
        if let Some(node) = plan.node(&pod.node) {
            network::setup_pod(node, pod)?;
        }
        link_pod_netns(dir, &pod.node, &pod.netns)?;
        let etc = Path::new("/etc/netns").join(&pod.netns);
        state.etc_netns.push(etc.clone());
        dir.save(state)?;
        create_dir(&etc)?;
        write_atomic(&etc.join("hosts"), plan.hosts_file(pod).as_bytes())?;
    }

    let _ = writeln!(
        progress,
        "[2/4] control plane: istiod-lite at {}:{XDS_PORT}",
        plan.control_plane_ip
    );
    let config = dir.config_dir();
    let files = objects::config_files(&plan).map_err(|error| MeshError::State {
        path: config.clone(),
        message: error.to_string(),
    })?;
    for (name, text) in files {
        write_atomic(&config.join(name), text.as_bytes())?;
    }
    let istiod_dir = dir.istiod_dir();
    provision_tokens(&istiod_dir, &plan)?;
    let cp = IpAddr::V4(plan.control_plane_ip);
    let mut args = vec![
        "--config-dir".to_owned(),
        config.display().to_string(),
        "--state-dir".to_owned(),
        istiod_dir.display().to_string(),
        "--grpc-addr".to_owned(),
        SocketAddr::new(cp, XDS_PORT).to_string(),
        "--http-addr".to_owned(),
        SocketAddr::new(cp, ISTIOD_HTTP_PORT).to_string(),
        "--trust-domain".to_owned(),
        plan.trust_domain.clone(),
    ];
    args.extend(plan.istiod_args.iter().cloned());
    let istiod = spawn(
        dir,
        state,
        Spawn {
            name: "istiod-lite".to_owned(),
            netns: plan.cluster_netns.clone(),
            program: programs.istiod.clone(),
            args,
            env: vec![("RUST_LOG".to_owned(), log_level())],
            log: dir.log_file("istiod-lite"),
        },
    )?;
    let ready_at = SocketAddr::new(cp, ISTIOD_HTTP_PORT);
    wait_ready("istiod-lite", &istiod, options.timeout, || {
        let status = probe::in_netns(&plan.cluster_netns, move || {
            probe::http_status(ready_at, "/ready", Duration::from_secs(1))
        })?;
        if status == 200 {
            Ok(())
        } else {
            Err(format!("/ready answers {status}"))
        }
    })?;

    let _ = writeln!(
        progress,
        "[3/4] ztunnel on {}",
        join(plan.nodes.iter().map(|n| n.name.as_str()))
    );
    let mut ztunnels = Vec::new();
    for node in &plan.nodes {
        let mut args = vec![
            "--node-name".to_owned(),
            node.name.clone(),
            "--xds-address".to_owned(),
            format!("https://{}", SocketAddr::new(cp, XDS_PORT)),
            "--xds-root-ca".to_owned(),
            istiod_dir.join("root-cert.pem").display().to_string(),
            "--alt-xds-hostname".to_owned(),
            ISTIOD_HOSTNAME.to_owned(),
            "--alt-ca-hostname".to_owned(),
            ISTIOD_HOSTNAME.to_owned(),
            "--auth-token".to_owned(),
            token_path(&istiod_dir, &node.name).display().to_string(),
            "--trust-domain".to_owned(),
            plan.trust_domain.clone(),
            "--capture".to_owned(),
            "netns".to_owned(),
            "--netns-dir".to_owned(),
            dir.node_netns_dir(&node.name).display().to_string(),
            "--admin-addr".to_owned(),
            format!("127.0.0.1:{ZTUNNEL_ADMIN_PORT}"),
        ];
        args.extend(plan.ztunnel_args.iter().cloned());
        let name = format!("ztunnel/{}", node.name);
        let record = spawn(
            dir,
            state,
            Spawn {
                log: dir.log_file(&name),
                name,
                netns: node.netns.clone(),
                program: programs.ztunnel.clone(),
                args,
                env: vec![("RUST_LOG".to_owned(), log_level())],
            },
        )?;
        ztunnels.push((node.clone(), record));
    }

    let _ = writeln!(
        progress,
        "[4/4] pods: {}",
        join(plan.pods.iter().map(|p| p.name.as_str()))
    );
    let mut pods = Vec::new();
    for (pod, program) in plan.pods.iter().zip(&programs.pods) {
        let Some(program) = program else { continue };
        let mut env = vec![
            ("POD_NAME".to_owned(), pod.name.clone()),
            ("POD_NAMESPACE".to_owned(), pod.namespace.clone()),
            ("POD_IP".to_owned(), pod.ip.to_string()),
            ("NODE_NAME".to_owned(), pod.node.clone()),
            ("SERVICE_ACCOUNT".to_owned(), pod.service_account.clone()),
            ("PATH".to_owned(), binaries::pod_path()),
        ];
        if let Some(version) = pod.labels.get("version") {
            env.push(("VERSION".to_owned(), version.clone()));
        }
        let name = format!("pod/{}/{}", pod.namespace, pod.name);
        let record = spawn(
            dir,
            state,
            Spawn {
                log: dir.log_file(&name),
                name,
                netns: pod.netns.clone(),
                program: program.clone(),
                args: pod.command[1..].to_vec(),
                env,
            },
        )?;
        pods.push((pod.clone(), record));
    }

    for (node, record) in &ztunnels {
        let netns = node.netns.clone();
        let addr = SocketAddr::from(([127, 0, 0, 1], ZTUNNEL_READINESS_PORT));
        wait_ready(&record.name, record, options.timeout, || {
            let netns = netns.clone();
            let status = probe::in_netns(&netns, move || {
                probe::http_status(addr, "/healthz/ready", Duration::from_secs(1))
            })?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!(
                    "/healthz/ready answers {status}: see `meshctl ztunnel status --node {}`",
                    node.name
                ))
            }
        })?;
    }
    for (pod, record) in &pods {
        for port in &pod.ports {
            let addr = SocketAddr::new(IpAddr::V4(pod.ip), *port);
            let netns = pod.netns.clone();
            wait_ready(&record.name, record, options.timeout, || {
                let netns = netns.clone();
                probe::in_netns(&netns, move || probe::accepts(addr, Duration::from_secs(1)))
            })?;
        }
    }
    Ok(())
}

pub(super) fn create_netns(
    dir: &MeshDir,
    state: &mut MeshState,
    name: &str,
) -> Result<(), MeshError> {
    state.netns.push(name.to_owned());
    dir.save(state)?;
    network::add_netns(name)
}

pub(super) fn spawn(
    dir: &MeshDir,
    state: &mut MeshState,
    spawn: Spawn,
) -> Result<ProcessRecord, MeshError> {
    let record = process::start(&spawn)?;
    state.processes.push(record.clone());
    dir.save(state)?;
    Ok(record)
}

/// A link to the pod's namespace in its node's `--netns-dir`, so that each
/// ztunnel sees only the pods of its own node.
fn link_pod_netns(dir: &MeshDir, node: &str, netns: &str) -> Result<(), MeshError> {
    let node_dir = dir.node_netns_dir(node);
    create_dir(&node_dir)?;
    let link = node_dir.join(netns);
    std::os::unix::fs::symlink(Path::new("/run/netns").join(netns), &link).map_err(|source| {
        MeshError::Io {
            action: "link the pod's network namespace at",
            path: link,
            source,
        }
    })
}

pub(super) fn create_dir(path: &Path) -> Result<(), MeshError> {
    fs::create_dir_all(path).map_err(|source| MeshError::Io {
        action: "create",
        path: path.to_owned(),
        source,
    })
}

pub(super) fn token_path(istiod_dir: &Path, node: &str) -> PathBuf {
    istiod_dir.join("tokens").join(format!("{node}.token"))
}

/// Writes a bootstrap token for every node, as an operator provisions
/// them, so that a node's ztunnel can authenticate whether or not a pod
/// runs there yet; istiod-lite loads them at start.
fn provision_tokens(istiod_dir: &Path, plan: &Plan) -> Result<(), MeshError> {
    let tokens = istiod_dir.join("tokens");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&tokens)
        .map_err(|source| MeshError::Io {
            action: "create",
            path: tokens.clone(),
            source,
        })?;
    for node in &plan.nodes {
        let path = token_path(istiod_dir, &node.name);
        let mut random = [0u8; 32];
        let io = |action, source| MeshError::Io {
            action,
            path: PathBuf::from("/dev/urandom"),
            source,
        };
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .map_err(|e| io("read", e))?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| MeshError::Io {
                action: "create the node token",
                path: path.clone(),
                source,
            })?;
        writeln!(file, "{hex}").map_err(|source| MeshError::Io {
            action: "write the node token",
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Polls `check` until it passes, the process dies, or `timeout` passes;
/// either failure carries the process's last log lines.
pub(super) fn wait_ready(
    what: &str,
    record: &ProcessRecord,
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<(), MeshError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(()) => return Ok(()),
            Err(last) => last,
        };
        let exited = !process::is_running(record);
        if exited || Instant::now() >= deadline {
            let tail = process::log_tail(&record.log, 15);
            let detail = if exited {
                format!("it exited; last lines of {}:\n{tail}", record.log.display())
            } else {
                format!("{last}; last lines of {}:\n{tail}", record.log.display())
            };
            return Err(MeshError::NotReady {
                what: what.to_owned(),
                seconds: timeout.as_secs(),
                detail,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The mesh's processes log at `info` (one access-log line per
/// connection) unless meshctl's caller sets `RUST_LOG`.
pub(super) fn log_level() -> String {
    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned())
}

fn join<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

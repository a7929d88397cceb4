//! istiod-lite at scale (issue 3): a generated mesh of 10,000 pods, 1,000
//! services and 1,000 AuthorizationPolicies served by the real binary, as a
//! child process, to 100 simulated proxies.
//!
//! Measured per run:
//!
//! - **Startup**: from spawning the process to `/ready` (the full state
//!   translated and in the push store), the full translation time from
//!   `/metrics`, and to the first and the last of the clients holding the
//!   full state. The clients connect as soon as the gRPC port listens and
//!   are held by the readiness gate, like proxies reconnecting to a
//!   restarted control plane.
//! - **One change**: the probe pod's readiness is flipped by rewriting its
//!   own small YAML file (written elsewhere, then renamed into the config
//!   directory); the time from the rename to the moment a client holds the
//!   probe workload with the new `status`, for the first and the last client.
//!   Changes are spaced so that none coalesce.
//! - **Memory**: VmRSS and VmHWM of the istiod-lite process after the
//!   initial push and at the end.
//!
//! Two runs: the binary's default debounce (`--debounce-ms 10
//! --max-debounce-ms 100`) and istiod's (100 ms / 1000 ms), to show what the
//! quiet window costs. The bars (one change to all
//! clients p99 < 100 ms, memory < 300 MB) are reported, not enforced: the
//! bench fails only when the mesh does not converge.
//!
//! Run: `cargo bench -p istiod-lite --bench scale`. Knobs (environment):
//! `SCALE_SAMPLES` (default 100), `SCALE_ISTIOD_SAMPLES` (default 30; 0 skips
//! the run with istiod's debounce), `SCALE_CLIENTS` (default 100),
//! `SCALE_SERVER_LOG` (the child's `RUST_LOG`, default `info`). For
//! profiling: `SCALE_LOG_DIR` keeps the child's logs there, `SCALE_TRACE`
//! prints every change with its wall-clock time, and
//! `SCALE_SERVER_ENV_<NAME>=<value>` sets `<NAME>` in the child only.
//!
//! # Layout
//!
//! - `mesh`: the generated YAML.
//! - `server`: the child process, its HTTP port, metrics and memory.
//! - `clients`: the delta xDS clients, what they record, and the waits on it.
//! - `report`: percentiles and the printed table.

// A bench is a program whose output is its report.
#![allow(clippy::print_stdout)]

// A bench's crate root looks for modules next to itself, not in `scale/`.
#[path = "scale/clients.rs"]
mod clients;
#[path = "scale/mesh.rs"]
mod mesh;
#[path = "scale/report.rs"]
mod report;
#[path = "scale/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use istiod_lite::translate::{MeshConfig, pod_uid};
use proto::workload::WorkloadStatus;

use self::clients::Client;
use self::report::{ChangeFigures, Run, Startup};
use self::server::{Debounce, Istiod};

/// How long startup may take before the bench gives up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one change may take to reach every client.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Changes before the measured ones, not recorded.
const WARMUP_CHANGES: usize = 3;
/// Quiet time between changes: well over the file source's 75 ms quiet
/// window plus either debounce, so that no two changes share a push.
const PAUSE: Duration = Duration::from_millis(400);

fn main() -> ExitCode {
    match run_all() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("scale bench failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

fn run_all() -> anyhow::Result<()> {
    let samples = env_usize("SCALE_SAMPLES", 100)?.max(1);
    let default_samples = env_usize("SCALE_ISTIOD_SAMPLES", 30)?;
    let clients = env_usize("SCALE_CLIENTS", 100)?.max(1);

    let root = tempfile::TempDir::new().context("cannot create a temp dir")?;
    let dirs = Dirs {
        config: root.path().join("config"),
        staging: root.path().join("staging"),
        root: root.path().to_owned(),
    };
    std::fs::create_dir(&dirs.config)?;
    std::fs::create_dir(&dirs.staging)?;
    let started = Instant::now();
    let yaml_bytes = mesh::write(&dirs.config)?;
    println!(
        "generated {} pods, {} services, {} policies in {} namespaces on {} nodes: {:.1} MiB of YAML in {:?}",
        mesh::PODS,
        mesh::SERVICES,
        mesh::POLICIES,
        mesh::NAMESPACES,
        mesh::NODES,
        yaml_bytes as f64 / (1024.0 * 1024.0),
        started.elapsed()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let mut runs = Vec::new();
    let default = Debounce {
        debounce_ms: 10,
        max_debounce_ms: 100,
    };
    runs.push(runtime.block_on(run_one("default", default, samples, clients, &dirs))?);
    if default_samples > 0 {
        let istiod = Debounce {
            debounce_ms: 100,
            max_debounce_ms: 1000,
        };
        runs.push(runtime.block_on(run_one(
            "istiod's",
            istiod,
            default_samples,
            clients,
            &dirs,
        ))?);
    }
    report::print(&runs, clients);
    Ok(())
}

/// Where the generated files live.
struct Dirs {
    root: PathBuf,
    /// The watched config directory.
    config: PathBuf,
    /// Same filesystem, not watched: the probe file is written here first.
    staging: PathBuf,
}

/// Replaces the probe file atomically, the pod ready or not. Returns the
/// instant just before the rename.
fn write_probe(dirs: &Dirs, ready: bool) -> anyhow::Result<Instant> {
    let staged = dirs.staging.join(mesh::PROBE_FILE);
    std::fs::write(&staged, mesh::probe_file(ready))
        .with_context(|| format!("cannot write {}", staged.display()))?;
    let target = dirs.config.join(mesh::PROBE_FILE);
    let at = Instant::now();
    std::fs::rename(&staged, &target)
        .with_context(|| format!("cannot rename the probe file onto {}", target.display()))?;
    Ok(at)
}

/// One run of the binary: startup, then the changes, then memory.
async fn run_one(
    label: &'static str,
    debounce: Debounce,
    samples: usize,
    client_count: usize,
    dirs: &Dirs,
) -> anyhow::Result<Run> {
    write_probe(dirs, true)?;
    let state = dirs.root.join(format!("state-{label}"));
    std::fs::create_dir_all(&state)?;
    let log_dir =
        std::env::var_os("SCALE_LOG_DIR").map_or_else(|| dirs.root.clone(), PathBuf::from);
    let log = log_dir.join(format!("istiod-{label}.log"));
    let mut istiod = Istiod::spawn(&dirs.config, &state, &log, debounce)?;
    println!(
        "[{label}] istiod-lite pid {} (--debounce-ms {} --max-debounce-ms {})",
        istiod.pid(),
        debounce.debounce_ms,
        debounce.max_debounce_ms
    );

    let (clients, startup) = start_up(&mut istiod, client_count).await?;
    let memory_initial = istiod.memory()?;
    println!(
        "[{label}] ready {:?}, all {client_count} clients full {:?}; VmHWM {:.0} MB",
        startup.ready,
        startup.all_full,
        memory_initial.hwm as f64 / 1e6
    );
    let change = measure_changes(label, &mut istiod, &clients, samples, dirs).await?;
    let memory_end = istiod.memory()?;
    // Clients first, so that the server does not log their streams failing.
    drop(clients);
    drop(istiod);
    Ok(Run {
        label,
        debounce,
        startup,
        change,
        memory_initial,
        memory_end,
    })
}

/// Connects the clients as soon as the gRPC port listens, then waits for
/// `/ready` and for every client to hold the full state.
async fn start_up(
    istiod: &mut Istiod,
    client_count: usize,
) -> anyhow::Result<(Vec<Client>, Startup)> {
    let listening = istiod.wait_listening(STARTUP_TIMEOUT).await?;
    let root_pem = read_root(&istiod.state_dir).await?;
    let probe_uid = pod_uid(
        &MeshConfig::default(),
        mesh::PROBE_NAMESPACE,
        &mesh::probe_name(),
    );
    let clients = clients::start(
        client_count,
        istiod.grpc,
        &root_pem,
        &probe_uid,
        &istiod.state_dir,
    )?;

    let ready = istiod.wait_ready(STARTUP_TIMEOUT).await?;
    let metrics = istiod.metrics().await?;
    let addresses = metrics.value("istiod_lite_xds_resources", "Address")? as usize;
    let authorizations = metrics.value("istiod_lite_xds_resources", "Authorization")? as usize;
    let translate = metrics.value("istiod_lite_translate_seconds_total", "")?;
    let problems = metrics.value("istiod_lite_source_problems", "")?;
    if problems > 0.0
        || addresses != mesh::PODS + mesh::SERVICES
        || authorizations != mesh::POLICIES
    {
        let mut diagnostics = istiod.get("/debug/diagnostics").await?;
        diagnostics.truncate(4000);
        bail!(
            "istiod-lite serves {addresses} addresses and {authorizations} authorizations with \
             {problems} source problems; expected {} and {} and none. /debug/diagnostics \
             begins:\n{diagnostics}",
            mesh::PODS + mesh::SERVICES,
            mesh::POLICIES,
        );
    }

    let (first_full, all_full) =
        clients::wait_full(istiod, &clients, addresses, authorizations, STARTUP_TIMEOUT).await?;
    let startup = Startup {
        listening,
        ready,
        translate: Duration::from_secs_f64(translate),
        first_full,
        all_full,
        initial_bytes: received(&clients),
        addresses,
        authorizations,
    };
    Ok((clients, startup))
}

/// Flips the probe pod's readiness `WARMUP_CHANGES + samples` times and
/// measures each change's arrival at every client.
async fn measure_changes(
    label: &str,
    istiod: &mut Istiod,
    clients: &[Client],
    samples: usize,
    dirs: &Dirs,
) -> anyhow::Result<ChangeFigures> {
    let before = istiod.metrics().await?;
    let bytes_before = received(clients);
    let mut last = Vec::with_capacity(samples);
    let mut first = Vec::with_capacity(samples);
    let trace = std::env::var_os("SCALE_TRACE").is_some();
    let mut ready_now = true;
    for sample in 0..WARMUP_CHANGES + samples {
        ready_now = !ready_now;
        let expected = if ready_now {
            WorkloadStatus::Healthy
        } else {
            WorkloadStatus::Unhealthy
        } as i32;
        let wall = SystemTime::now();
        let changed_at = write_probe(dirs, ready_now)?;
        let arrivals =
            clients::wait_probe(istiod, clients, expected, changed_at, CHANGE_TIMEOUT).await?;
        let fastest = arrivals.iter().min().copied().unwrap_or_default();
        let slowest = arrivals.iter().max().copied().unwrap_or_default();
        if trace {
            // Wall-clock time, to line up with the server's log timestamps.
            let unix = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
            println!(
                "[{label}] change {sample}: renamed at {:.6} (unix s), first client {fastest:?}, last {slowest:?}",
                unix.as_secs_f64()
            );
        }
        if sample >= WARMUP_CHANGES {
            first.push(fastest);
            last.push(slowest);
        }
        tokio::time::sleep(PAUSE).await;
    }

    let after = istiod.metrics().await?;
    let changes = (WARMUP_CHANGES + samples) as f64;
    let delta = |name: &str| -> anyhow::Result<f64> {
        Ok(after.value(name, "")? - before.value(name, "")?)
    };
    Ok(ChangeFigures {
        last: report::Percentiles::of(&mut last),
        first: report::Percentiles::of(&mut first),
        samples,
        batches_per_change: delta("istiod_lite_debounce_batches_total")? / changes,
        translate: Duration::from_secs_f64(delta("istiod_lite_translate_seconds_total")? / changes),
        publish_to_queued: Duration::from_secs_f64(
            delta("pilot_proxy_convergence_time_seconds_sum")?
                / delta("pilot_proxy_convergence_time_seconds_count")?.max(1.0),
        ),
        bytes_per_change: ((received(clients) - bytes_before) as f64 / changes) as u64,
    })
}

/// Bytes all clients have read off their sockets so far.
fn received(clients: &[Client]) -> u64 {
    clients
        .iter()
        .map(|c| c.bytes.load(Ordering::Relaxed))
        .sum()
}

/// The mesh root, once the server has written it.
async fn read_root(state_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = state_dir.join("root-cert.pem");
    for _ in 0..500 {
        if let Ok(pem) = std::fs::read(&path)
            && !pem.is_empty()
        {
            return Ok(pem);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("{} did not appear within 5 s", path.display())
}

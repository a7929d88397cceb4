//! The node proxy: captures enrolled pods' TCP traffic, tunnels it over
//! HBONE and enforces L4 authorization. Everything but the runtime, the log
//! subscriber and the signals lives in the library (`ztunnel::app`).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use ztunnel::app::App;
use ztunnel::config::Args;
use ztunnel::pods::DataThreads;

fn main() -> ExitCode {
    // Before any other thread allocates.
    let malloc = ztunnel::malloc::tune();
    let args = Args::parse();
    raise_fd_limit();
    let logging = match telemetry::logging::init("info") {
        Ok(control) => Some(control),
        Err(error) => {
            eprintln!("ztunnel: {error}; logging without run-time filter changes");
            None
        }
    };
    tracing::debug!("{malloc}");
    let code = match run(args, logging) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let report = report(&error);
            tracing::error!("{report}");
            eprintln!("ztunnel: {report}");
            ExitCode::FAILURE
        }
    };
    // The lines still buffered, the last of them included.
    telemetry::logging::flush();
    code
}

/// The error and its causes, each cause only once: our messages already
/// name their source, which anyhow's `{:#}` would print a second time.
fn report(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

/// Every proxied connection holds two descriptors or more, so the usual
/// soft limit of 1024 caps a node at a few hundred connections: raise it to
/// the hard limit, as Istio's ztunnel does.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        eprintln!("ztunnel: cannot raise the open-file limit from {soft} to {hard}: {error}");
    }
}

fn run(args: Args, logging: Option<telemetry::logging::LogControl>) -> anyhow::Result<()> {
    args.validate()?;
    let data = hbone::Workers::start("ztunnel-worker", args.worker_threads)
        .context("cannot start the data path's worker threads")?;
    let data = DataThreads::Workers(Arc::new(data));
    // The control runtime is this thread: control-plane clients, pod
    // manager, status servers, signals (see `ztunnel::app`).
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the control runtime")?;
    control.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let app = App::start(&args, logging, data).await?;
        tokio::spawn(ztunnel::malloc::return_free_memory());
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: draining"),
            result = tokio::signal::ctrl_c() => {
                result.context("cannot listen for ctrl-c")?;
                tracing::info!("interrupted: draining");
            }
        }
        app.drain().await;
        Ok(())
    })
}

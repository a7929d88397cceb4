//! The waypoint, the per-namespace L7 proxy. Everything but the runtime,
//! the log subscriber and the signals lives in the library
//! (`waypoint::app`).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use waypoint::app::App;
use waypoint::config::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(error) = telemetry::logging::init("info") {
        eprintln!("waypoint: {error}; logging without run-time filter changes");
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("waypoint: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads)
        .thread_name("waypoint-worker")
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let app = App::start(args).await?;
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

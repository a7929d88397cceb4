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
    let logging = match telemetry::logging::init("info") {
        Ok(control) => Some(control),
        Err(error) => {
            eprintln!("waypoint: {error}; logging without run-time filter changes");
            None
        }
    };
    let code = match run(&args, logging) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("waypoint: {error:#}");
            ExitCode::FAILURE
        }
    };
    // The lines still buffered, the last of them included.
    telemetry::logging::flush();
    code
}

fn run(args: &Args, logging: Option<telemetry::logging::LogControl>) -> anyhow::Result<()> {
    args.validate()?;
    // The control plane client, admin, metrics and the accept loop: light
    // work, one thread. The data path runs on the app's worker threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let app = App::start_with_logging(args, logging).await?;
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

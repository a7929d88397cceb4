//! `echo-grpc`: flags, logging, the listener and the stop signal; the
//! server is `e2e::echo_grpc`.
//!
//! Exit codes: 0 after a clean stop (SIGTERM or ctrl-c), 1 when it cannot
//! start (the reason is logged), 2 for a usage error (clap's).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use e2e::duration::parse_duration;
use e2e::echo_grpc::{self, Config};
use tracing::error;

/// A gRPC echo server for mesh tests (`mesh.sample.v1.Echo/Echo`, HTTP/2
/// cleartext): every reply carries the message, the pod, the version, the
/// caller's address and metadata. Per call, metadata shapes the answer:
/// `x-echo-grpc-status: 14` (or UNAVAILABLE) with an optional
/// `x-echo-grpc-message` answers that status; `x-echo-delay: 150ms` waits
/// first.
#[derive(Debug, Parser)]
#[command(name = "echo-grpc")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:9090")]
    listen: SocketAddr,
    /// The pod's name: in every reply and in its x-echo-pod metadata.
    #[arg(long, env = "POD_NAME")]
    pod: String,
    /// The version label (v1, v2 of a backend): in every reply.
    #[arg(long, env = "VERSION", default_value = "v1")]
    version: String,
    /// How long calls in flight may take to finish after SIGTERM.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

fn main() -> ExitCode {
    e2e::logging::init("info");
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = Config::new(&args.pod, &args.version)?;
    config.drain_timeout = args.drain_timeout;
    e2e::signal::serve_until_signal(args.listen, |listener, stop| {
        echo_grpc::serve(listener, config, stop)
    })?;
    Ok(())
}

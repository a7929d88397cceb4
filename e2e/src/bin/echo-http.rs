//! `echo-http`: flags, logging, the listener and the stop signal; the
//! server is `e2e::echo_http`.
//!
//! Exit codes: 0 after a clean stop (SIGTERM or ctrl-c), 1 when it cannot
//! start (the reason is logged), 2 for a usage error (clap's).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use e2e::duration::parse_duration;
use e2e::echo_http::{self, Config};
use tracing::error;

/// An HTTP/1.1 echo server for mesh tests: every answer is a JSON report of
/// the request. Per request, `?status=503`, `?delay=150ms` and `?fail=0.5`
/// (or the headers x-echo-status, x-echo-delay, x-echo-fail) shape the
/// answer.
#[derive(Debug, Parser)]
#[command(name = "echo-http")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The pod's name: in every answer's body and its x-echo-pod header.
    #[arg(long, env = "POD_NAME")]
    pod: String,
    /// The version label (v1, v2 of a backend): in every answer.
    #[arg(long, env = "VERSION", default_value = "v1")]
    version: String,
    /// How long requests in flight may take to finish after SIGTERM.
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
        echo_http::serve(listener, config, stop)
    })?;
    Ok(())
}

//! `echo-tcp`: flags, logging, the listener and the stop signal; the
//! server is `e2e::echo_tcp`.
//!
//! Exit codes: 0 after a clean stop (SIGTERM or ctrl-c), 1 when it cannot
//! start (the reason is logged), 2 for a usage error (clap's).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use e2e::duration::parse_duration;
use e2e::echo_tcp::{self, Config};
use tracing::error;

/// A TCP echo server for mesh tests: sends back every byte until the client
/// half-closes, then half-closes.
#[derive(Debug, Parser)]
#[command(name = "echo-tcp")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:9000")]
    listen: SocketAddr,
    /// Sent as `<banner>\n` before the echo on each connection, so that a
    /// client can tell servers apart (the pod's name, say).
    #[arg(long)]
    banner: Option<String>,
    /// How long open connections may stay after SIGTERM.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
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
    let mut config = Config::new(args.banner.as_deref());
    config.drain_timeout = args.drain_timeout;
    e2e::signal::serve_until_signal(args.listen, |listener, stop| {
        echo_tcp::serve(listener, config, stop)
    })?;
    Ok(())
}

//! `otlp-sink`: a real OTLP/gRPC trace receiver for the mesh tests. It
//! serves `opentelemetry.proto.collector.trace.v1.TraceService/Export` and
//! prints each span it is sent as one JSON line on stdout
//! (`e2e::otlp_sink`), so that a test can point a waypoint at it and read
//! the trace back.
//!
//! Exit codes: 0 after a clean stop (SIGTERM or ctrl-c), 1 when it cannot
//! start (the reason is logged), 2 for a usage error (clap's).

// Printing the spans is the point of this program.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info};

/// Receives OTLP/gRPC traces and prints every span as a JSON line.
#[derive(Debug, Parser)]
#[command(name = "otlp-sink")]
struct Args {
    /// Address to listen on (OTLP/gRPC's port by default).
    #[arg(long, default_value = "0.0.0.0:4317")]
    listen: SocketAddr,
}

fn main() -> ExitCode {
    e2e::logging::init("info");
    let args = Args::parse();
    let result = e2e::signal::serve_until_signal(args.listen, |listener, stop| async move {
        info!(listen = %args.listen, "receiving OTLP/gRPC traces");
        let mut exports = telemetry::otlp::receiver::serve(listener, None);
        let mut stop = stop;
        loop {
            tokio::select! {
                export = exports.recv() => match export {
                    Some(export) => {
                        for line in e2e::otlp_sink::span_lines(&export) {
                            println!("{line}");
                        }
                    }
                    None => return,
                },
                () = &mut stop => return,
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

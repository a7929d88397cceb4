//! `traffic`: flags, the runtime, printing and the exit code; the runs are
//! `e2e::traffic`.
//!
//! Exit codes: 0 when every request got a 2xx (every call `OK`, every
//! connection a correct echo), or with `--allow-errors`; 1 otherwise; 2 for a usage error
//! (clap's). The summary goes to stdout either way, the verdict to stderr.

// The one place this crate prints: the summary is the point of the command.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::builder::RangedU64ValueParser;
use clap::{Parser, Subcommand, ValueEnum};
use e2e::duration::parse_duration;
use e2e::summary::Summary;
use e2e::traffic::grpc::parse_metadata;
use e2e::traffic::{GrpcRun, GrpcTarget, HttpRun, HttpTarget, TcpRun, TcpTarget};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};

/// A small traffic client for mesh tests: sends requests or echo
/// connections and summarizes statuses, errors, who answered and latency.
#[derive(Debug, Parser)]
#[command(name = "traffic")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    /// Exit 0 even when some attempts failed (the summary still counts them).
    #[arg(long, global = true)]
    allow_errors: bool,
    /// Deadline of each request (or connection), connecting included.
    #[arg(long, default_value = "10s", value_parser = parse_duration, global = true)]
    timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// GET an http:// URL, over HTTP/1.1 with one keep-alive connection per
    /// worker.
    Http {
        /// Where to send, like http://backend:8080/path?status=503.
        #[arg(value_parser = HttpTarget::parse)]
        url: HttpTarget,
        /// How many requests in all.
        #[arg(short = 'n', long = "requests", default_value_t = 1,
              value_parser = clap::value_parser!(u64).range(1..))]
        requests: u64,
        /// How many at a time (workers, each with its own connection).
        #[arg(short = 'c', long, default_value_t = 1,
              value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
        concurrency: usize,
    },
    /// Unary calls to echo-grpc (mesh.sample.v1.Echo/Echo) over HTTP/2
    /// cleartext, with one connection per worker. Every gRPC status counts
    /// as an answer; only OK succeeds.
    Grpc {
        /// The server, as host:port (or http://host:port).
        #[arg(value_parser = GrpcTarget::parse)]
        target: GrpcTarget,
        /// How many calls in all.
        #[arg(short = 'n', long = "calls", default_value_t = 1,
              value_parser = clap::value_parser!(u64).range(1..))]
        calls: u64,
        /// How many at a time (workers, each with its own connection).
        #[arg(short = 'c', long, default_value_t = 1,
              value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
        concurrency: usize,
        /// The message each call sends (echo-grpc echoes it).
        #[arg(long, default_value = "hello")]
        message: String,
        /// Metadata sent with every call, as name=value; repeatable.
        /// `x-echo-grpc-status=14` and `x-echo-grpc-message=...` make
        /// echo-grpc answer that status.
        #[arg(long = "metadata", value_name = "NAME=VALUE", value_parser = parse_metadata)]
        metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    },
    /// Echo random bytes through a TCP echo server, one connection after
    /// another, and check that they come back.
    Tcp {
        /// The echo server, as host:port.
        #[arg(value_parser = TcpTarget::parse)]
        addr: TcpTarget,
        /// How many connections.
        #[arg(short = 'n', long = "connections", default_value_t = 1,
              value_parser = clap::value_parser!(u64).range(1..))]
        connections: u64,
        /// Bytes each connection sends and expects back.
        #[arg(long, default_value_t = 1024)]
        payload_bytes: usize,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    /// A few lines for a person.
    Text,
    /// The summary as one JSON object, for scripts.
    Json,
}

fn main() -> ExitCode {
    e2e::logging::init("warn");
    let cli = Cli::parse();
    match run(&cli) {
        Ok(summary) => verdict(&summary, cli.allow_errors),
        Err(error) => {
            eprintln!("traffic: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let summary = runtime.block_on(async {
        match &cli.mode {
            Mode::Http {
                url,
                requests,
                concurrency,
            } => {
                let run = HttpRun {
                    target: url.clone(),
                    requests: *requests,
                    concurrency: *concurrency,
                    timeout: cli.timeout,
                };
                run.run().await
            }
            Mode::Grpc {
                target,
                calls,
                concurrency,
                message,
                metadata,
            } => {
                let run = GrpcRun {
                    target: target.clone(),
                    calls: *calls,
                    concurrency: *concurrency,
                    timeout: cli.timeout,
                    message: message.clone(),
                    metadata: metadata.clone(),
                };
                run.run().await
            }
            Mode::Tcp {
                addr,
                connections,
                payload_bytes,
            } => {
                let run = TcpRun {
                    target: addr.clone(),
                    connections: *connections,
                    payload_bytes: *payload_bytes,
                    timeout: cli.timeout,
                };
                run.run().await
            }
        }
    });
    match cli.output {
        Output::Text => print!("{}", summary.render_text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&summary).context("cannot encode the summary")?
        ),
    }
    Ok(summary)
}

fn verdict(summary: &Summary, allow_errors: bool) -> ExitCode {
    if summary.all_succeeded() || allow_errors {
        return ExitCode::SUCCESS;
    }
    let what = match summary.protocol {
        e2e::summary::Protocol::Http => "got no 2xx answer",
        e2e::summary::Protocol::Grpc => "got no OK",
        e2e::summary::Protocol::Tcp => "got no correct echo",
    };
    eprintln!(
        "traffic: {} of {} {} {what} (pass --allow-errors to exit 0 anyway)",
        summary.unsuccessful(),
        summary.attempts,
        summary.attempts_noun(),
    );
    ExitCode::FAILURE
}

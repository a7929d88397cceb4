//! `echo-http`: flags, logging, the listener and the stop signal; the
//! server is `e2e::echo_http`.
//!
//! Exit codes: 0 after a clean stop (SIGTERM or ctrl-c), 1 when it cannot
//! start (the reason is logged), 2 for a usage error (clap's).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use e2e::controls::parse_fail;
use e2e::duration::parse_duration;
use e2e::echo_http::{self, Config, Upstream, UpstreamUrlError};
use tracing::error;

/// An HTTP/1.1 and HTTP/2 (h2c, prior knowledge, same port) echo server
/// for mesh tests: every answer is a JSON report of the request. Per
/// request, `?status=503`, `?delay=150ms` and `?fail=0.5` (or the headers
/// x-echo-status, x-echo-delay, x-echo-fail) shape the answer.
///
/// With --upstream, every request first calls each upstream in order, and
/// the report gains `upstreams`: one
/// `{url, status, ok, body, error}` each, where `body` is the upstream's
/// reply (an echo-http upstream's report nests there, so a chain
/// frontend -> backend -> database shows in one answer). When any upstream
/// fails the answer is 502, so that `curl -f` fails, unless the request
/// asks for a status.
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
    /// An upstream to call on every request, in order; repeat the flag, or
    /// give UPSTREAMS comma-separated. `http://host:port/path`: a GET (a
    /// 2xx is success; `?status=503` in the URL steers an echo-http
    /// upstream). `tcp://host:port`: sends `hello from <pod>`, half-closes
    /// and reads up to 4 KiB until the server closes (echo-tcp sends its
    /// banner and the echo). Host names go to the system resolver, so
    /// /etc/hosts entries work.
    #[arg(long = "upstream", value_name = "URL", env = "UPSTREAMS",
          value_delimiter = ',', value_parser = upstream_entry)]
    upstreams: Vec<Option<Upstream>>,
    /// Deadline of each upstream call, connecting included. In a chain,
    /// give each hop more than the hop below it, so that a slow database
    /// shows as the backend's 502 rather than the frontend's timeout.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    upstream_timeout: Duration,
    /// Answer this fraction of requests (0 to 1) with 503, unless a request
    /// sets `fail` itself: `--fail 1` makes this pod the broken endpoint of
    /// its service.
    #[arg(long, value_parser = parse_fail)]
    fail: Option<f64>,
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

/// An entry of UPSTREAMS, where blanks are skipped: a manifest that sets
/// `UPSTREAMS: ""` for the last hop, or ends the list with a comma, means
/// no (more) upstreams rather than a bad one.
fn upstream_entry(value: &str) -> Result<Option<Upstream>, UpstreamUrlError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    Upstream::parse(value).map(Some)
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut config = Config::new(&args.pod, &args.version)?;
    config.drain_timeout = args.drain_timeout;
    config.upstreams = args.upstreams.into_iter().flatten().collect();
    config.upstream_timeout = args.upstream_timeout;
    config.defaults.fail = args.fail;
    e2e::signal::serve_until_signal(args.listen, |listener, stop| {
        echo_http::serve(listener, config, stop)
    })?;
    Ok(())
}

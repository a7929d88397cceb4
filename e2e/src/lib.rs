//! The mesh's own sample apps, which the end-to-end scenarios run inside
//! pods: three servers that say who they are and do what each request asks,
//! and a client that turns a burst of traffic into numbers a test can
//! assert on.
//!
//! - `echo-http` answers every request with a JSON report of what it saw
//!   (pod, version, method, path, query, headers, peer, body length) and can
//!   be told per request to answer a status, wait, or fail a fraction of the
//!   time (the waypoint's retry tests need that). With `--upstream <URL>`
//!   (repeatable, or UPSTREAMS comma-separated) it also calls, on every
//!   request and in order, `http://host:port/path` (a GET) or
//!   `tcp://host:port` (a line to echo-tcp), each within
//!   `--upstream-timeout` (5s), and reports each as
//!   `upstreams: [{url, status, ok, body, error}]`; the upstream's reply
//!   is `body`, so a chain frontend -> backend -> database nests report in
//!   report. A failed upstream makes the answer 502 unless the request asks
//!   for a status.
//! - `echo-grpc` serves the gRPC `mesh.sample.v1.Echo` service (HTTP/2
//!   cleartext): each call's reply says who answered, and request metadata
//!   can ask for an error status and message, or a delay.
//! - `echo-tcp` echoes bytes until the client half-closes, after an optional
//!   banner that names the pod.
//! - `otlp-sink` receives OTLP/gRPC traces and prints each span as a
//!   JSON line, for the waypoint's trace scenarios.
//! - `traffic http|grpc|tcp` sends N requests, unary calls or echo
//!   connections and prints a summary (statuses, errors, who answered,
//!   latency percentiles), as text or JSON; its exit code says whether
//!   everything succeeded.
//!
//! The binaries (`src/bin/`) parse flags, install logging and signal
//! handlers, and bind; everything else is this library, so that tests run
//! the servers in-process on port 0.
//!
//! # Layout
//!
//! - [`echo_http`]: the HTTP server: [`echo_http::serve`] on a bound
//!   listener, and the request lifecycle.
//!   - [`echo_http::report`]: pure: the JSON bodies it answers with.
//!   - [`echo_http::upstream`]: pure: `--upstream` URLs, reply bodies, and
//!     the answer once the upstreams are called.
//!   - [`echo_http::call`]: calling the upstreams (resolve, connect, GET or
//!     line exchange, deadline).
//! - [`echo_grpc`]: the gRPC server, [`echo_grpc::serve`].
//!   - [`echo_grpc::controls`]: pure: a call's metadata to the status,
//!     message and delay it asks for.
//! - [`sample`]: the generated `mesh.sample.v1` messages, client and server
//!   (`proto/mesh/sample/v1/echo.proto`, compiled by `build.rs`).
//! - [`grpc_code`]: pure: gRPC status codes by name.
//! - [`echo_tcp`]: the TCP echo server, [`echo_tcp::serve`].
//! - [`traffic`]: the client's three modes, [`traffic::http`],
//!   [`traffic::grpc`] and [`traffic::tcp`], each a run that returns a [`summary::Summary`].
//! - [`controls`]: pure: a request's query and headers to
//!   [`controls::Controls`] (status, delay, fail), and the answer they pick.
//! - [`otlp_sink`]: pure: an OTLP export to one flat JSON object per span.
//! - [`summary`]: pure: outcomes to counts and latency percentiles
//!   ([`summary::percentile`]), rendered as text or JSON.
//! - [`duration`]: pure: `150ms`/`2s` parsing and latency formatting.
//! - [`body`]: counting the bytes of an HTTP body, or keeping its start.
//! - [`signal`]: the servers' stop signal (SIGTERM or ctrl-c).
//! - [`logging`]: `tracing` to stderr.

pub mod body;
pub mod controls;
pub mod duration;
pub mod echo_grpc;
pub mod echo_http;
pub mod echo_tcp;
pub mod grpc_code;
pub mod logging;
pub mod otlp_sink;
pub mod signal;
pub mod summary;
pub mod traffic;

/// `mesh.sample.v1`, generated: the lints are relaxed for code that is not
/// ours to restyle.
#[allow(unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod sample {
    tonic::include_proto!("mesh.sample.v1");
}

//! echo-http: an HTTP/1.1 and HTTP/2 server that answers every request with a JSON
//! [`Report`] of what it saw (its own pod and version, the method, path,
//! query, headers, peer and body length), shaped by the request's
//! [`Controls`]: a status code, a delay, or a fraction of 503s. Given
//! [`Config::upstreams`], it also calls them and reports what they
//! answered, so that a few of them make a chain.
//!
//! The lifecycle of a request:
//! 1. its body is read to the end and counted (whatever the answer, so that
//!    the connection stays usable);
//! 2. the controls are parsed from the query and headers; a bad one is
//!    answered 400 with an [`ErrorReport`] naming it (no upstream is
//!    called for a request refused);
//! 3. the server waits `delay`;
//! 4. each upstream is called in order, each within
//!    [`Config::upstream_timeout`];
//! 5. `fail` is rolled, then the answer is `503`, `status`, `502` when an
//!    upstream failed, or `200`, with the report as its body and the pod in
//!    `x-echo-pod`.
//!
//! One port serves both versions: a connection that opens with the
//! HTTP/2 preface is HTTP/2 cleartext with prior knowledge (h2c, as `curl
//! --http2-prior-knowledge` and gRPC clients send it), any other is
//! HTTP/1.1. There is no `Upgrade: h2c`: nothing in the mesh sends it.
//!
//! [`serve`] runs on a bound listener, so that tests run it in-process on
//! port 0; on shutdown it stops accepting, lets requests in flight finish
//! (up to [`Config::drain_timeout`]) and closes idle connections.

pub mod call;
pub mod report;
pub mod upstream;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinError, JoinSet};
use tracing::{Instrument, debug, error, info, info_span, warn};

pub use self::call::DEFAULT_UPSTREAM_TIMEOUT;
pub use self::report::{ErrorReport, Report, UpstreamReport};
pub use self::upstream::{Upstream, UpstreamUrlError};
use crate::body::count_body;
use crate::controls::Controls;

/// The response header naming the pod that answered, so that a client can
/// tell endpoints apart without parsing the body.
pub const X_ECHO_POD: HeaderName = HeaderName::from_static("x-echo-pod");

/// The response header with the server's `--version`.
pub const X_ECHO_VERSION: HeaderName = HeaderName::from_static("x-echo-version");

/// How long requests in flight may take to finish once shutdown begins.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed accept (such as running out of descriptors), so
/// that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Who this server says it is, and how it stops.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--pod`: reported in every answer.
    pod: Arc<str>,
    /// `--version`: reported in every answer.
    version: Arc<str>,
    /// `pod`, checked once as a header value and cloned into each answer.
    pod_header: HeaderValue,
    /// `version`, likewise.
    version_header: HeaderValue,
    /// How long requests in flight may take once shutdown begins; then
    /// their connections are closed.
    pub drain_timeout: Duration,
    /// Called in order on every request; empty for the last hop of a
    /// chain.
    pub upstreams: Vec<Upstream>,
    /// How long each upstream call may take, connecting included. In a
    /// chain, each hop needs more than the hop below it, or a slow database
    /// shows as the frontend's timeout instead of the backend's 502.
    pub upstream_timeout: Duration,
    /// What a request gets for each control it does not set itself: the
    /// server's `--fail`, so that one endpoint of a service can be the
    /// failing one.
    pub defaults: Controls,
}

/// Why [`Config::new`] refused a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "the pod name {0:?} cannot be sent in the x-echo-pod header: \
         use a Kubernetes pod name (letters, digits, '-' and '.')"
    )]
    Pod(String),
    #[error(
        "the version {0:?} cannot be sent in the x-echo-version header: \
         use a label value such as v1 (letters, digits, '-', '_' and '.')"
    )]
    Version(String),
}

// === impl Config ===

impl Config {
    pub fn new(pod: &str, version: &str) -> Result<Self, ConfigError> {
        let pod_header =
            HeaderValue::from_str(pod).map_err(|_| ConfigError::Pod(pod.to_owned()))?;
        let version_header =
            HeaderValue::from_str(version).map_err(|_| ConfigError::Version(version.to_owned()))?;
        Ok(Config {
            pod: pod.into(),
            version: version.into(),
            pod_header,
            version_header,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            upstreams: Vec::new(),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            defaults: Controls::default(),
        })
    }

    pub fn pod(&self) -> &str {
        &self.pod
    }

    pub fn version(&self) -> &str {
        &self.version
    }
}

/// Serves echo-http on `listener` until `shutdown` resolves, then drains.
/// Returns when every connection is closed.
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) {
    let config = Arc::new(config);
    match listener.local_addr() {
        Ok(addr) => {
            let upstreams: Vec<_> = config.upstreams.iter().map(Upstream::url).collect();
            info!(
                %addr,
                pod = %config.pod,
                version = %config.version,
                upstreams = %upstreams.join(","),
                "echo-http listening"
            )
        }
        Err(error) => warn!(%error, "echo-http listening on an unknown address"),
    }
    // Connections run on tasks of this set, so that none outlives `serve`;
    // `graceful` tells them to finish their request and close.
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let task = serve_connection(stream, peer, config.clone(), graceful.watcher());
                    connections.spawn(task.instrument(info_span!("conn", %peer)));
                }
                Err(error) => {
                    warn!(%error, "accepting a connection failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(joined) = connections.join_next() => log_join(joined),
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    info!(
        open = graceful.count(),
        "echo-http stopped accepting; draining connections"
    );
    if tokio::time::timeout(config.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            after = ?config.drain_timeout,
            "requests still in flight after the drain timeout; closing their connections"
        );
    }
    connections.shutdown().await;
    info!("echo-http stopped");
}

fn log_join(joined: Result<(), JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        error!(%error, "a connection task panicked");
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    config: Arc<Config>,
    watcher: Watcher,
) {
    // Answers are small and written at once: do not hold them back.
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, "cannot set TCP_NODELAY");
    }
    let service = service_fn(move |request| handle(request, peer, config.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    match watcher.watch(connection).await {
        Ok(()) => debug!("connection closed"),
        Err(error) => debug!(%error, "connection ended with an error"),
    }
}

async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    config: Arc<Config>,
) -> Result<Response<String>, Infallible> {
    let (head, body) = request.into_parts();
    let body_bytes = match count_body(body).await {
        Ok(length) => length,
        Err(error) => {
            debug!(%error, "cannot read the request body");
            let report = ErrorReport::other(
                &config.pod,
                &config.version,
                format!("cannot read the request body: {error}"),
            );
            return Ok(json_response(&config, StatusCode::BAD_REQUEST, &report));
        }
    };
    let controls = match Controls::parse(head.uri.query(), &head.headers) {
        Ok(controls) => controls.or(config.defaults),
        Err(error) => {
            debug!(%error, "refused a bad control");
            let report = ErrorReport::control(&config.pod, &config.version, &error);
            return Ok(json_response(&config, StatusCode::BAD_REQUEST, &report));
        }
    };
    if let Some(delay) = controls.delay {
        tokio::time::sleep(delay).await;
    }
    let upstreams = call::call_all(&config.upstreams, &config.pod, config.upstream_timeout).await;
    let answer =
        upstream::answer_with_upstreams(&controls, controls.answer(fastrand::f64()), &upstreams);
    debug!(
        method = %head.method,
        path = head.uri.path(),
        status = answer.status.as_u16(),
        injected_failure = answer.injected_failure,
        body_bytes,
        upstreams_failed = upstreams.iter().filter(|upstream| !upstream.ok).count(),
        "answered"
    );
    let mut report = Report::new(
        &config.pod,
        &config.version,
        &head,
        peer,
        body_bytes,
        answer,
    );
    report.upstreams = upstreams;
    Ok(json_response(&config, answer.status, &report))
}

/// `body` as pretty JSON (it is read by people with curl as often as by
/// tests), with the server's identity headers.
fn json_response(config: &Config, status: StatusCode, body: &impl Serialize) -> Response<String> {
    let (status, body, content_type) = match serde_json::to_string_pretty(body) {
        Ok(mut json) => {
            json.push('\n');
            (status, json, "application/json")
        }
        // Only strings, numbers and maps with string keys: cannot happen,
        // but a 500 that says so beats a panic.
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the report as JSON: {error}\n"),
            "text/plain; charset=utf-8",
        ),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(X_ECHO_POD, config.pod_header.clone());
    headers.insert(X_ECHO_VERSION, config.version_header.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_names_that_are_not_header_values() {
        assert_eq!(
            Config::new("pod\na", "v1").unwrap_err(),
            ConfigError::Pod("pod\na".into())
        );
        assert_eq!(
            Config::new("pod-a", "v\r1").unwrap_err(),
            ConfigError::Version("v\r1".into())
        );
        let config = Config::new("pod-a", "v1").unwrap();
        assert_eq!((config.pod(), config.version()), ("pod-a", "v1"));
    }
}

//! Calling the upstreams: one at a time, in the order given, each on a
//! fresh connection and under its own deadline. Every call ends in an
//! [`UpstreamReport`], failures included: the point is to show which hop of
//! a chain broke, and why.
//!
//! Host names go to the system resolver (`getaddrinfo`, through
//! [`tokio::net::lookup_host`]), because that is what reads the
//! /etc/hosts entries pods get for services. Each address is tried in turn:
//! `localhost` may be `::1` first while the upstream listens on 127.0.0.1.
//!
//! Nothing outlives a call: the HTTP connection is driven inside the call's
//! future, so the deadline drops the socket with it rather than leaving a
//! task waiting on an upstream that never answers.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use hyper::StatusCode;
use hyper::client::conn::http1;
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, lookup_host};
use tracing::{Instrument, debug, info_span, warn};

use super::report::UpstreamReport;
use super::upstream::{Upstream, reply_body, tcp_greeting};
use crate::body::read_body_prefix;
use crate::traffic::{HttpTarget, TcpTarget, error_chain};

/// How long one upstream call may take, connecting included.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The most of a tcp:// reply that is read: an echo of our line and a
/// banner fit many times over.
pub const MAX_TCP_REPLY_BYTES: usize = 4096;

/// The most of an http:// answer kept for the report: a chain of echo-http
/// reports is a few KiB a hop. Past it the body is cut, and shown as text.
pub const MAX_HTTP_BODY_BYTES: usize = 64 * 1024;

/// Sent with every upstream request, so that the upstream's report (and
/// its logs) tell a hop of a chain from `traffic` or a person's curl.
const USER_AGENT_VALUE: &str = concat!("e2e-echo-http/", env!("CARGO_PKG_VERSION"));

/// Why a call failed, worded for the report after the URL.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(
        "cannot resolve {addr}: {source}: is there a service (or an /etc/hosts entry) \
         by that name?"
    )]
    Resolve {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("{0} resolves to no address: check the name")]
    NoAddress(String),
    #[error("connect to {addr}: {source}: is the upstream running and listening on that port?")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("HTTP/1.1 handshake: {0}")]
    Handshake(String),
    #[error("request: {0}")]
    Request(String),
    #[error("response body: {0}")]
    Body(String),
    #[error("answered {0}: its reply is in `body`")]
    Status(StatusCode),
    #[error("send: {0}")]
    Send(#[source] io::Error),
    #[error("receive: {0}")]
    Receive(#[source] io::Error),
    #[error(
        "closed the connection without a reply: is a server listening behind it? \
         (in the mesh, ztunnel accepts first and closes when it cannot reach the destination)"
    )]
    NoReply,
    #[error(
        "no {what} within {after:?}: the upstream is slow or gone (raise --upstream-timeout \
         if it is slow on purpose)"
    )]
    Timeout { what: &'static str, after: Duration },
}

/// Calls each upstream in order; one report each, in the same order.
pub async fn call_all(upstreams: &[Upstream], pod: &str, timeout: Duration) -> Vec<UpstreamReport> {
    let mut reports = Vec::with_capacity(upstreams.len());
    for upstream in upstreams {
        let span = info_span!("upstream", upstream.url = upstream.url());
        let report = call(upstream, pod, timeout).instrument(span).await;
        match &report.error {
            None => debug!(
                upstream.url = upstream.url(),
                upstream.status = report.status,
                "upstream answered"
            ),
            Some(error) => warn!(upstream.url = upstream.url(), %error, "upstream call failed"),
        }
        reports.push(report);
    }
    reports
}

async fn call(upstream: &Upstream, pod: &str, timeout: Duration) -> UpstreamReport {
    match upstream {
        Upstream::Http(target) => call_http(target, timeout).await,
        Upstream::Tcp { url, target } => call_tcp(url, target, pod, timeout).await,
    }
}

fn failed(
    url: &str,
    status: Option<u16>,
    body: Option<Vec<u8>>,
    error: CallError,
) -> UpstreamReport {
    UpstreamReport {
        url: url.to_owned(),
        status,
        ok: false,
        body: body.map(|bytes| reply_body(&bytes)),
        error: Some(format!("{url}: {error}")),
    }
}

fn succeeded(url: &str, status: Option<u16>, body: &[u8]) -> UpstreamReport {
    UpstreamReport {
        url: url.to_owned(),
        status,
        ok: true,
        body: Some(reply_body(body)),
        error: None,
    }
}

// === http:// ===

async fn call_http(target: &HttpTarget, timeout: Duration) -> UpstreamReport {
    let url = target.url();
    let result = tokio::time::timeout(timeout, get(target))
        .await
        .unwrap_or(Err(CallError::Timeout {
            what: "answer",
            after: timeout,
        }));
    match result {
        Ok((status, body)) if status.is_success() => succeeded(url, Some(status.as_u16()), &body),
        Ok((status, body)) => failed(
            url,
            Some(status.as_u16()),
            Some(body),
            CallError::Status(status),
        ),
        Err(error) => failed(url, None, None, error),
    }
}

/// One GET on a new connection: the status and the start of the body.
async fn get(target: &HttpTarget) -> Result<(StatusCode, Vec<u8>), CallError> {
    let stream = connect(target.connect_addr()).await?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| CallError::Handshake(error_chain(&error)))?;
    let request = target.request(HeaderValue::from_static(USER_AGENT_VALUE));
    let mut exchange = pin!(async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| CallError::Request(error_chain(&error)))?;
        let (head, body) = response.into_parts();
        let body = read_body_prefix(body, MAX_HTTP_BODY_BYTES)
            .await
            .map_err(|error| CallError::Body(error_chain(&error)))?;
        Ok((head.status, body))
    });
    let mut connection = pin!(connection);
    tokio::select! {
        result = &mut exchange => result,
        ended = &mut connection => {
            if let Err(error) = ended {
                debug!(%error, "upstream connection ended with an error");
            }
            // The end of the connection reaches the exchange too: as the
            // rest of the answer, or as the error to report.
            exchange.await
        }
    }
}

// === tcp:// ===

async fn call_tcp(url: &str, target: &TcpTarget, pod: &str, timeout: Duration) -> UpstreamReport {
    let greeting = tcp_greeting(pod);
    // Outside the deadline's future, so that what came before a timeout
    // is still shown: a server that sends a banner and then waits says
    // more than one that sends nothing.
    let mut reply = Vec::with_capacity(MAX_TCP_REPLY_BYTES);
    let result = tokio::time::timeout(
        timeout,
        exchange_line(target.as_str(), greeting.as_bytes(), &mut reply),
    )
    .await
    .unwrap_or(Err(CallError::Timeout {
        what: "end of the reply",
        after: timeout,
    }));
    let received = (!reply.is_empty()).then_some(reply);
    match (result, received) {
        (Ok(()), Some(reply)) => succeeded(url, None, &reply),
        (Ok(()), None) => failed(url, None, None, CallError::NoReply),
        (Err(error), received) => failed(url, None, received, error),
    }
}

/// Sends `line`, half-closes, and reads into `reply` until the server
/// closes or [`MAX_TCP_REPLY_BYTES`] came. echo-tcp echoes until the client
/// half-closes: without it, the call would always end at the deadline.
async fn exchange_line(addr: &str, line: &[u8], reply: &mut Vec<u8>) -> Result<(), CallError> {
    let mut stream = connect(addr).await?;
    stream.write_all(line).await.map_err(CallError::Send)?;
    stream.shutdown().await.map_err(CallError::Send)?;
    while reply.len() < MAX_TCP_REPLY_BYTES {
        let room = (MAX_TCP_REPLY_BYTES - reply.len()) as u64;
        // `read_buf` appends as it goes, so a deadline keeps what came.
        let read = (&mut stream)
            .take(room)
            .read_buf(reply)
            .await
            .map_err(CallError::Receive)?;
        if read == 0 {
            break;
        }
    }
    Ok(())
}

// === connecting ===

/// Resolves `addr` (`host:port`) and connects to the first address that
/// accepts; the error is the last address's.
async fn connect(addr: &str) -> Result<TcpStream, CallError> {
    let candidates = lookup_host(addr)
        .await
        .map_err(|source| CallError::Resolve {
            addr: addr.to_owned(),
            source,
        })?;
    let mut last_error = None;
    for candidate in candidates {
        match TcpStream::connect(candidate).await {
            Ok(stream) => {
                if let Err(error) = stream.set_nodelay(true) {
                    debug!(%error, "cannot set TCP_NODELAY");
                }
                return Ok(stream);
            }
            Err(source) => {
                debug!(addr = %candidate, error = %source, "connect failed");
                last_error = Some(CallError::Connect {
                    addr: candidate,
                    source,
                });
            }
        }
    }
    Err(last_error.unwrap_or_else(|| CallError::NoAddress(addr.to_owned())))
}

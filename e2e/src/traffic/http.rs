//! `traffic http`: `requests` GETs of one URL from `concurrency` workers.
//!
//! Each worker keeps one HTTP/1.1 connection alive across its requests and
//! opens a new one only when the last one is closed or failed, so a run
//! measures requests, not handshakes, unless the server (or the mesh)
//! closes connections. Workers take the next request number from a shared
//! counter, so a slow worker does not hold back the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HOST, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tracing::debug;

use super::{TargetError, error_chain, io_reason};
use crate::body::count_body;
use crate::echo_http::X_ECHO_POD;
use crate::summary::{Outcome, Protocol, Summary};

/// Sent with every request, so that server logs can tell test traffic
/// from a person's curl.
const USER_AGENT_VALUE: &str = concat!("e2e-traffic/", env!("CARGO_PKG_VERSION"));

/// Where the requests go: an `http://` URL, checked and taken apart once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// The URL as given, for messages.
    url: String,
    /// `host:port` to connect to (port 80 when the URL has none).
    connect_addr: String,
    /// The `Host` header: the URL's authority.
    host: HeaderValue,
    /// The request target: path and query.
    path_and_query: Uri,
}

/// One `traffic http` run.
#[derive(Debug, Clone)]
pub struct HttpRun {
    pub target: HttpTarget,
    /// How many requests in all.
    pub requests: u64,
    /// How many requests at a time, each worker on its own connection.
    pub concurrency: usize,
    /// Deadline of one request, connecting included.
    pub timeout: Duration,
}

// === impl HttpTarget ===

impl HttpTarget {
    /// Parses `http://host[:port][/path][?query]`.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let invalid = |reason: &str| TargetError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|error: hyper::http::uri::InvalidUri| invalid(&error.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(scheme) => {
                return Err(TargetError::Scheme {
                    url: url.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
            None => {
                return Err(TargetError::NoScheme {
                    url: url.to_owned(),
                });
            }
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let port = authority.port_u16().unwrap_or(80);
        let path_and_query = uri
            .path_and_query()
            .map_or("/", |path_and_query| path_and_query.as_str());
        Ok(HttpTarget {
            url: url.to_owned(),
            // `host` keeps the brackets of an IPv6 address, as
            // `TcpStream::connect` wants them.
            connect_addr: format!("{host}:{port}"),
            host: HeaderValue::from_str(authority.as_str())
                .map_err(|_| invalid("the host is not a valid Host header"))?,
            path_and_query: path_and_query
                .parse()
                .map_err(|_| invalid("the path is not a valid request target"))?,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn connect_addr(&self) -> &str {
        &self.connect_addr
    }

    /// The request target (path and query).
    pub fn path_and_query(&self) -> &str {
        self.path_and_query
            .path_and_query()
            .map_or("/", |path_and_query| path_and_query.as_str())
    }

    /// A GET of the target, with `Host` and `user_agent`. echo-http
    /// calls its upstreams with it too, under its own user agent.
    pub(crate) fn request(&self, user_agent: HeaderValue) -> Request<String> {
        let mut request = Request::new(String::new());
        *request.uri_mut() = self.path_and_query.clone();
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(USER_AGENT, user_agent);
        request
    }
}

// === impl HttpRun ===

impl HttpRun {
    /// Sends every request and summarizes; failures are in the summary.
    pub async fn run(&self) -> Summary {
        let started = Instant::now();
        let target = Arc::new(self.target.clone());
        let next_request = Arc::new(AtomicU64::new(0));
        // No more workers than requests: an idle worker would still connect.
        let workers = self.concurrency.clamp(
            1,
            usize::try_from(self.requests).unwrap_or(usize::MAX).max(1),
        );
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            tasks.spawn(worker(
                target.clone(),
                next_request.clone(),
                self.requests,
                self.timeout,
            ));
        }
        let mut outcomes = Vec::with_capacity(usize::try_from(self.requests).unwrap_or(0));
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(worker_outcomes) => outcomes.extend(worker_outcomes),
                // Its requests are lost; one failure keeps the exit code honest.
                Err(error) => outcomes.push(Outcome::Failed {
                    reason: format!("a worker failed: {error}"),
                }),
            }
        }
        Summary::new(Protocol::Http, &outcomes, started.elapsed())
    }
}

async fn worker(
    target: Arc<HttpTarget>,
    next_request: Arc<AtomicU64>,
    requests: u64,
    timeout: Duration,
) -> Vec<Outcome> {
    let mut connection = None;
    let mut outcomes = Vec::new();
    while next_request.fetch_add(1, Ordering::Relaxed) < requests {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(timeout, send(&target, &mut connection)).await {
            Ok(Ok((status, server))) => Outcome::Answered {
                status: Some(status),
                server,
                latency: started.elapsed(),
            },
            Ok(Err(reason)) => {
                connection = None;
                Outcome::Failed { reason }
            }
            Err(_) => {
                // The connection may still carry the late answer: start over.
                connection = None;
                Outcome::Failed {
                    reason: format!("no answer within {timeout:?}"),
                }
            }
        };
        if let Outcome::Failed { reason } = &outcome {
            debug!(url = target.url(), reason, "request failed");
        }
        outcomes.push(outcome);
    }
    outcomes
}

/// One request on the worker's connection (opened first when there is
/// none): the status and the `x-echo-pod` of the answer.
async fn send(
    target: &HttpTarget,
    connection: &mut Option<SendRequest<String>>,
) -> Result<(u16, Option<String>), String> {
    if let Some(sender) = connection.as_mut()
        && sender.ready().await.is_err()
    {
        *connection = None;
    }
    let sender = match connection {
        Some(sender) => sender,
        None => connection.insert(connect(target).await?),
    };
    let response = sender
        .send_request(target.request(HeaderValue::from_static(USER_AGENT_VALUE)))
        .await
        .map_err(|error| format!("request: {}", error_chain(&error)))?;
    let status = response.status().as_u16();
    let server = response
        .headers()
        .get(X_ECHO_POD)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    count_body(response.into_body())
        .await
        .map_err(|error| format!("response body: {}", error_chain(&error)))?;
    Ok((status, server))
}

async fn connect(target: &HttpTarget) -> Result<SendRequest<String>, String> {
    let stream = TcpStream::connect(target.connect_addr())
        .await
        .map_err(|error| format!("connect: {}", io_reason(&error)))?;
    if let Err(error) = stream.set_nodelay(true) {
        debug!(%error, "cannot set TCP_NODELAY");
    }
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|error| format!("handshake: {}", error_chain(&error)))?;
    // Drives the socket; ends when the worker drops `sender`, or with the
    // error that the next `send_request` also reports.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            debug!(%error, "connection ended with an error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_http_url() {
        let target = HttpTarget::parse("http://backend:8080/api?status=503").unwrap();
        assert_eq!(target.connect_addr(), "backend:8080");
        assert_eq!(target.host, "backend:8080");
        assert_eq!(target.path_and_query(), "/api?status=503");
        assert_eq!(target.url(), "http://backend:8080/api?status=503");
    }

    #[test]
    fn defaults_the_port_and_path() {
        let target = HttpTarget::parse("http://10.0.0.5").unwrap();
        assert_eq!(target.connect_addr(), "10.0.0.5:80");
        assert_eq!(target.host, "10.0.0.5");
        assert_eq!(target.path_and_query(), "/");
    }

    #[test]
    fn keeps_ipv6_brackets() {
        let target = HttpTarget::parse("http://[::1]:9090/x").unwrap();
        assert_eq!(target.connect_addr(), "[::1]:9090");
        assert_eq!(target.host, "[::1]:9090");
    }

    #[test]
    fn refuses_other_schemes_and_no_scheme() {
        assert_eq!(
            HttpTarget::parse("https://backend/"),
            Err(TargetError::Scheme {
                url: "https://backend/".into(),
                scheme: "https".into()
            })
        );
        assert_eq!(
            HttpTarget::parse("backend:8080"),
            Err(TargetError::NoScheme {
                url: "backend:8080".into()
            })
        );
        let error = HttpTarget::parse("http://bad host/").unwrap_err();
        assert!(matches!(error, TargetError::Url { .. }), "{error:?}");
        assert!(error.to_string().contains("http://backend:8080/path"));
    }

    #[test]
    fn requests_carry_host_and_target() {
        let request = HttpTarget::parse("http://backend:8080/a?b=c")
            .unwrap()
            .request(HeaderValue::from_static(USER_AGENT_VALUE));
        assert_eq!(request.uri(), "/a?b=c");
        assert_eq!(request.headers()[HOST], "backend:8080");
        assert!(
            request.headers()[USER_AGENT]
                .to_str()
                .unwrap()
                .starts_with("e2e-traffic/")
        );
    }
}

//! `traffic grpc`: `calls` unary `mesh.sample.v1.Echo/Echo` calls from
//! `concurrency` workers, over HTTP/2 cleartext (prior knowledge), as any
//! gRPC client in a pod sends them.
//!
//! Each worker has its own channel, so its own HTTP/2 connection, and
//! takes the next call number from a shared counter. A call that the
//! server (or a proxy) answered with a status is an answer, whatever the
//! code; one that never got a status (no connection, a broken stream, the
//! deadline) is a failure with its reason, and so is an `OK` reply whose
//! message is not the one sent: the echo is checked, as `traffic tcp`
//! checks its payload. Error statuses are counted with their messages.

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tracing::debug;

use super::{TargetError, error_chain};
use crate::echo_grpc::{EchoClient, EchoRequest, X_ECHO_POD};
use crate::grpc_code::code_name;
use crate::summary::{Outcome, Protocol, Summary};

/// Where the calls go: `host:port`, or `http://host:port`.
#[derive(Debug, Clone)]
pub struct GrpcTarget {
    /// As given, for messages.
    given: String,
    /// `http://host:port`, the channel's endpoint (built per connection:
    /// an `Endpoint` is large to keep around).
    uri: hyper::Uri,
}

/// One `traffic grpc` run.
#[derive(Debug, Clone)]
pub struct GrpcRun {
    pub target: GrpcTarget,
    /// How many calls in all.
    pub calls: u64,
    /// How many calls at a time, each worker on its own connection.
    pub concurrency: usize,
    /// Deadline of one call, connecting included.
    pub timeout: Duration,
    /// The message of every call.
    pub message: String,
    /// Sent with every call (`x-echo-grpc-status: 14` steers echo-grpc).
    pub metadata: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
}

/// A `--metadata` entry that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not name=value with a lower-case ASCII name and a text value, like x-echo-grpc-status=14"
)]
pub struct MetadataError(String);

// === impl GrpcTarget ===

impl GrpcTarget {
    /// Parses `host:port` or `http://host:port` (no path: the method names
    /// the path).
    pub fn parse(target: &str) -> Result<Self, TargetError> {
        let url = if target.contains("://") {
            target.to_owned()
        } else {
            format!("http://{target}")
        };
        let uri: hyper::Uri =
            url.parse()
                .map_err(|error: hyper::http::uri::InvalidUri| TargetError::Url {
                    url: target.to_owned(),
                    reason: error.to_string(),
                })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(scheme) => {
                return Err(TargetError::Scheme {
                    url: target.to_owned(),
                    scheme: scheme.to_owned(),
                });
            }
            None => return Err(TargetError::HostPort(target.to_owned())),
        }
        if uri.port_u16().is_none() || uri.path() != "/" {
            return Err(TargetError::HostPort(target.to_owned()));
        }
        Ok(GrpcTarget {
            given: target.to_owned(),
            uri,
        })
    }

    pub fn target(&self) -> &str {
        &self.given
    }
}

/// Parses a `--metadata name=value` entry.
pub fn parse_metadata(
    entry: &str,
) -> Result<(AsciiMetadataKey, AsciiMetadataValue), MetadataError> {
    let invalid = || MetadataError(entry.to_owned());
    let (name, value) = entry.split_once('=').ok_or_else(invalid)?;
    let name = AsciiMetadataKey::from_bytes(name.trim().as_bytes()).map_err(|_| invalid())?;
    let value = AsciiMetadataValue::try_from(value.trim()).map_err(|_| invalid())?;
    Ok((name, value))
}

// === impl GrpcRun ===

impl GrpcRun {
    /// Makes every call and summarizes; failures are in the summary.
    pub async fn run(&self) -> Summary {
        let started = Instant::now();
        let run = Arc::new(self.clone());
        let next_call = Arc::new(AtomicU64::new(0));
        let workers = self
            .concurrency
            .clamp(1, usize::try_from(self.calls).unwrap_or(usize::MAX).max(1));
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            tasks.spawn(worker(run.clone(), next_call.clone()));
        }
        let mut outcomes = Vec::with_capacity(usize::try_from(self.calls).unwrap_or(0));
        let mut messages = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((worker_outcomes, worker_messages)) => {
                    outcomes.extend(worker_outcomes);
                    messages.extend(worker_messages);
                }
                Err(error) => outcomes.push(Outcome::Failed {
                    reason: format!("a worker failed: {error}"),
                }),
            }
        }
        let mut summary = Summary::new(Protocol::Grpc, &outcomes, started.elapsed());
        for message in messages {
            *summary.grpc_messages.entry(message).or_default() += 1;
        }
        summary
    }
}

/// The worker's outcomes, and `<STATUS>: <message>` of each error answer.
async fn worker(run: Arc<GrpcRun>, next_call: Arc<AtomicU64>) -> (Vec<Outcome>, Vec<String>) {
    let mut client: Option<EchoClient<Channel>> = None;
    let mut outcomes = Vec::new();
    let mut messages = Vec::new();
    while next_call.fetch_add(1, Ordering::Relaxed) < run.calls {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(run.timeout, call(&run, &mut client)).await {
            Ok(Ok(answer)) => {
                if let Some(message) = answer.error_message {
                    messages.push(message);
                }
                Outcome::Answered {
                    status: Some(answer.code),
                    server: answer.server,
                    latency: started.elapsed(),
                }
            }
            Ok(Err(reason)) => {
                client = None;
                Outcome::Failed { reason }
            }
            Err(_) => {
                client = None;
                Outcome::Failed {
                    reason: format!("no answer within {:?}", run.timeout),
                }
            }
        };
        if let Outcome::Failed { reason } = &outcome {
            debug!(target = run.target.target(), reason, "call failed");
        }
        outcomes.push(outcome);
    }
    (outcomes, messages)
}

/// What a call got back.
struct Answer {
    code: u16,
    /// `x-echo-pod` of the answer, or the reply's `pod`.
    server: Option<String>,
    /// `<STATUS>: <message>` of an error status.
    error_message: Option<String>,
}

/// One call on the worker's channel (connected first when there is
/// none).
async fn call(run: &GrpcRun, client: &mut Option<EchoClient<Channel>>) -> Result<Answer, String> {
    let client = match client {
        Some(client) => client,
        None => {
            let channel = Endpoint::from(run.target.uri.clone())
                .tcp_nodelay(true)
                .connect()
                .await
                .map_err(|error| format!("connect: {}", error_chain(&error)))?;
            client.insert(EchoClient::new(channel))
        }
    };
    let mut request = Request::new(EchoRequest {
        message: run.message.clone(),
    });
    for (name, value) in &run.metadata {
        request.metadata_mut().insert(name.clone(), value.clone());
    }
    match client.echo(request).await {
        Ok(response) => {
            let server = pod(response.metadata()).or_else(|| Some(response.get_ref().pod.clone()));
            let echoed = &response.get_ref().message;
            if *echoed != run.message {
                return Err(format!(
                    "reply: the message came back as {echoed:?}, not {:?}",
                    run.message
                ));
            }
            Ok(Answer {
                code: 0,
                server: server.filter(|pod| !pod.is_empty()),
                error_message: None,
            })
        }
        Err(status) if is_answer(&status) => Ok(Answer {
            code: status.code() as u16,
            server: pod(status.metadata()),
            error_message: Some(format!(
                "{}: {}",
                code_name(status.code()),
                status.message()
            )),
        }),
        Err(status) => Err(match status.source() {
            Some(source) => format!("call: {}: {}", status.message(), error_chain(source)),
            None => format!("call: {}", status.message()),
        }),
    }
}

/// Whether `status` came in an answer (from the server or a proxy, in
/// `grpc-status` or mapped from the HTTP status) rather than from the
/// client's own transport, which tonic reports as a status with the
/// transport error as its source.
fn is_answer(status: &Status) -> bool {
    status.source().is_none()
}

fn pod(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get(X_ECHO_POD)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_with_or_without_the_scheme() {
        let target = GrpcTarget::parse("b.ns-b:9090").unwrap();
        assert_eq!(target.uri, "http://b.ns-b:9090/");
        assert_eq!(target.target(), "b.ns-b:9090");
        let target = GrpcTarget::parse("http://10.0.0.5:9090").unwrap();
        assert_eq!(target.uri, "http://10.0.0.5:9090/");
    }

    #[test]
    fn refuses_tls_paths_and_missing_ports() {
        assert!(matches!(
            GrpcTarget::parse("https://b:9090"),
            Err(TargetError::Scheme { .. })
        ));
        assert_eq!(
            GrpcTarget::parse("b.ns-b").unwrap_err(),
            TargetError::HostPort("b.ns-b".into())
        );
        assert_eq!(
            GrpcTarget::parse("http://b:9090/echo").unwrap_err(),
            TargetError::HostPort("http://b:9090/echo".into())
        );
    }

    #[test]
    fn parses_metadata_entries() {
        let (name, value) = parse_metadata("x-echo-grpc-status=UNAVAILABLE").unwrap();
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-echo-grpc-status", "UNAVAILABLE")
        );
        let (_, value) = parse_metadata("x-echo-grpc-message=try again = later").unwrap();
        assert_eq!(value.to_str().unwrap(), "try again = later");
        assert!(parse_metadata("no-equals").is_err());
        let error = parse_metadata("Bad Name=1").unwrap_err();
        assert!(
            error.to_string().contains("x-echo-grpc-status=14"),
            "{error}"
        );
    }
}

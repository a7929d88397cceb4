//! echo-grpc: the gRPC sample app, a real tonic server (HTTP/2 cleartext)
//! of `mesh.sample.v1.Echo`. Each call is answered with its message, who
//! answered (pod, version, in the reply and in `x-echo-pod` metadata), the
//! caller's address and its text metadata; or, when the call's
//! [`GrpcControls`] ask, with an error status and message. Error statuses
//! carry `x-echo-pod` too, so that a client can count who answered either
//! way.
//!
//! [`serve`] runs on a bound listener, so that tests run it in-process on
//! port 0; on shutdown it stops accepting, sends GOAWAY, and gives calls
//! in flight [`Config::drain_timeout`] to finish.

pub mod controls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::{Ascii, KeyAndValueRef, MetadataMap, MetadataValue};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tracing::{debug, error, info, warn};

pub use self::controls::{GrpcControlError, GrpcControls};
use crate::echo_http::ConfigError;
pub use crate::sample::echo_client::EchoClient;
use crate::sample::echo_server::{Echo, EchoServer};
pub use crate::sample::{EchoReply, EchoRequest};

/// The metadata naming the pod that answered, as echo-http's header.
pub const X_ECHO_POD: &str = "x-echo-pod";

/// How long calls in flight may take to finish once shutdown begins.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Who this server says it is, and how it stops.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--pod`: in every reply and status.
    pod: Arc<str>,
    /// `--version`: in every reply.
    version: Arc<str>,
    /// `pod`, checked once as a metadata value.
    pod_metadata: MetadataValue<Ascii>,
    /// How long calls in flight may take once shutdown begins; then their
    /// connections are closed.
    pub drain_timeout: Duration,
}

// === impl Config ===

impl Config {
    pub fn new(pod: &str, version: &str) -> Result<Self, ConfigError> {
        let pod_metadata =
            MetadataValue::try_from(pod).map_err(|_| ConfigError::Pod(pod.into()))?;
        Ok(Config {
            pod: pod.into(),
            version: version.into(),
            pod_metadata,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        })
    }
}

/// The `Echo` service.
#[derive(Debug, Clone)]
struct EchoService {
    config: Arc<Config>,
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let config = &self.config;
        let controls = GrpcControls::parse(request.metadata()).map_err(|error| {
            debug!(%error, "refused a bad control");
            self.signed(Status::invalid_argument(error.to_string()))
        })?;
        if let Some(delay) = controls.delay {
            tokio::time::sleep(delay).await;
        }
        if let Some(status) = controls.error_status(&config.pod) {
            debug!(code = ?status.code(), "answered an error status as asked");
            return Err(self.signed(status));
        }
        let peer = request
            .remote_addr()
            .map(|addr| addr.to_string())
            .unwrap_or_default();
        let metadata = text_metadata(request.metadata());
        let reply = EchoReply {
            message: request.into_inner().message,
            pod: config.pod.to_string(),
            version: config.version.to_string(),
            peer,
            metadata,
        };
        let mut response = Response::new(reply);
        response
            .metadata_mut()
            .insert(X_ECHO_POD, config.pod_metadata.clone());
        Ok(response)
    }
}

impl EchoService {
    /// `status` with `x-echo-pod`, which a trailers-only answer carries in
    /// its headers.
    fn signed(&self, mut status: Status) -> Status {
        status
            .metadata_mut()
            .insert(X_ECHO_POD, self.config.pod_metadata.clone());
        status
    }
}

/// The caller's text metadata by name; repeated entries joined by ", ".
fn text_metadata(metadata: &MetadataMap) -> std::collections::BTreeMap<String, String> {
    let mut text = std::collections::BTreeMap::<String, String>::new();
    for entry in metadata.iter() {
        if let KeyAndValueRef::Ascii(key, value) = entry
            && let Ok(value) = value.to_str()
        {
            text.entry(key.as_str().to_owned())
                .and_modify(|joined| {
                    joined.push_str(", ");
                    joined.push_str(value);
                })
                .or_insert_with(|| value.to_owned());
        }
    }
    text
}

/// Serves echo-grpc on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) {
    match listener.local_addr() {
        Ok(addr) => {
            info!(%addr, pod = %config.pod, version = %config.version, "echo-grpc listening")
        }
        Err(error) => warn!(%error, "echo-grpc listening on an unknown address"),
    }
    let drain_timeout = config.drain_timeout;
    let service = EchoServer::new(EchoService {
        config: Arc::new(config),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                // A dropped sender stops the server too.
                let _ = stopped.await;
            },
        );
    let mut server = std::pin::pin!(server);
    tokio::select! {
        ended = &mut server => return log_end(ended),
        () = shutdown => {}
    }
    info!("echo-grpc stopped accepting; draining calls");
    let _ = stop.send(());
    match tokio::time::timeout(drain_timeout, server).await {
        Ok(ended) => log_end(ended),
        Err(_) => warn!(
            after = ?drain_timeout,
            "calls still in flight after the drain timeout; closing their connections"
        ),
    }
}

fn log_end(ended: Result<(), tonic::transport::Error>) {
    match ended {
        Ok(()) => info!("echo-grpc stopped"),
        Err(error) => error!(%error, "echo-grpc stopped with an error"),
    }
}

//! The HTTP port (15014): `/ready`, `/metrics`, `/debug/config_dump`,
//! `/debug/diagnostics`. Plain HTTP/1.1 on hyper; every handler reads
//! snapshots and counters, so a scrape never waits on a push.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;
use xds::ResourceStore;

use super::debug;
use crate::pipeline::PipelineHandle;

/// What the handlers read.
#[derive(Debug)]
pub(super) struct HttpState {
    pub(super) pipeline: PipelineHandle,
    pub(super) store: Arc<ResourceStore>,
    pub(super) registry: Registry,
}

/// Serves until `shutdown` turns true. Requests in flight on open
/// connections finish; they are all short.
pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    mut shutdown: watch::Receiver<bool>,
) {
    while let Some((tcp, peer)) =
        super::accept_until_stopped(&listener, "HTTP", &mut shutdown).await
    {
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = route(&state, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(error) = connection.await {
                debug!(%peer, %error, "HTTP connection ended with an error");
            }
        });
    }
}

fn route(state: &HttpState, request: &Request<Incoming>) -> Response<String> {
    if request.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served here\n".into(),
        );
    }
    match request.uri().path() {
        "/ready" => ready(state),
        "/metrics" => metrics(state),
        "/debug/config_dump" => json(&debug::config_dump(&state.store)),
        "/debug/diagnostics" => json(&debug::diagnostics(&state.pipeline.status())),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /ready, /metrics, /debug/config_dump or /debug/diagnostics\n".into(),
        ),
    }
}

fn ready(state: &HttpState) -> Response<String> {
    let status = state.pipeline.status();
    match (status.synced, status.pushed) {
        (true, true) => text(StatusCode::OK, "ready\n".into()),
        (false, _) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the config source has not delivered its initial state yet\n".into(),
        ),
        (true, false) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the initial config is not pushed yet (see /debug/diagnostics)\n".into(),
        ),
    }
}

fn metrics(state: &HttpState) -> Response<String> {
    match super::metrics::encode(&state.registry) {
        Ok(body) => with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {error}\n"),
        ),
    }
}

fn json(value: &serde_json::Value) -> Response<String> {
    match serde_json::to_string_pretty(value) {
        Ok(body) => with_type(StatusCode::OK, "application/json", body + "\n"),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode JSON: {error}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<String> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

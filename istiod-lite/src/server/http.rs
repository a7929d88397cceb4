//! The HTTP port (15014): `/ready`, `/metrics`, `/debug/config_dump`,
//! `/debug/diagnostics`. Plain HTTP/1.1 on hyper; every handler reads
//! snapshots and counters, so a scrape never waits on a push.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use telemetry::http::{self, Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
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
    let stopped = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    http::serve(listener, move |request| route(&state, request), stopped).await;
}

fn route(state: &HttpState, request: &Request<()>) -> Response<String> {
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
        Ok(body) => http::json(body + "\n"),
        Err(error) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode JSON: {error}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<String> {
    http::text(status, body)
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<String> {
    http::with_type(status, content_type, body)
}

//! What the admin servers of ztunnel and the waypoint have in common: the
//! JSON shape of the control-plane connection and of certificates, the
//! timestamp format of every page, the `/logging` page and the Prometheus
//! page. Each binary keeps its own routes and its own `/config_dump`; the
//! shapes here are part of the contract with `meshctl` (docs/ztunnel-admin.md).

use std::time::SystemTime;

use identity::manager::{CertState, CertStatus};
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use xds::ClientStatus;

use crate::http::{self, Method, Request, Response, StatusCode};
use crate::logging::LogControl;

/// `control_plane` in `/config_dump`: the xDS connection as the client
/// sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ControlPlaneView {
    address: String,
    connected: bool,
    #[serde(serialize_with = "rfc3339")]
    since: SystemTime,
    synced: bool,
    config_version: String,
    responses: u64,
    nacks: u64,
    last_error: Option<String>,
}

/// One certificate the process holds (or is fetching): an entry of `/certs`.
#[derive(Debug, Clone, Serialize)]
pub struct CertView {
    identity: String,
    state: &'static str,
    error: Option<String>,
    serial: Option<String>,
    not_before: Option<String>,
    not_after: Option<String>,
}

// === impl ControlPlaneView ===

impl ControlPlaneView {
    pub fn new(address: &str, status: &ClientStatus) -> Self {
        ControlPlaneView {
            address: address.to_owned(),
            connected: status.connected,
            since: status.since,
            synced: status.synced,
            config_version: status.server_version.clone(),
            responses: status.responses,
            nacks: status.nacks,
            last_error: status.last_error.clone(),
        }
    }
}

// === impl CertView ===

impl From<&CertStatus> for CertView {
    fn from(status: &CertStatus) -> Self {
        let (state, error) = match &status.state {
            CertState::Initializing => ("initializing", None),
            CertState::Available => ("available", None),
            CertState::Failed { error } => ("failed", Some(error.clone())),
            CertState::Expired { error } => ("expired", Some(error.clone())),
        };
        let cert = status.cert.as_ref();
        CertView {
            identity: status.identity.to_string(),
            state,
            error,
            serial: cert.map(|c| c.serial.clone()),
            not_before: cert.map(|c| format_rfc3339(c.not_before)),
            not_after: cert.map(|c| format_rfc3339(c.not_after)),
        }
    }
}

/// RFC 3339 in UTC, to the second.
pub fn format_rfc3339(time: SystemTime) -> String {
    let time = OffsetDateTime::from(time);
    let time = time.replace_nanosecond(0).unwrap_or(time);
    time.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Serializes a `SystemTime` as RFC 3339 (`#[serde(serialize_with)]`).
pub fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_rfc3339(*time))
}

/// `value` as indented JSON, which people read with curl as often as
/// tools parse it.
pub fn pretty(value: &impl Serialize) -> Response<String> {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            http::json(body)
        }
        Err(error) => http::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the page: {error}\n"),
        ),
    }
}

/// `/logging`: the current filter on GET; `POST /logging?level=<filter>`
/// replaces it (a GET with `level` is refused, so that a crawler or a
/// link preview cannot change what is logged).
pub fn logging_page(control: Option<&LogControl>, request: &Request<()>) -> Response<String> {
    let Some(control) = control else {
        return http::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "this process's log filter cannot be changed at run time\n",
        );
    };
    if let Some(level) = http::query_param(request, "level") {
        if request.method() != Method::POST {
            return http::text(
                StatusCode::METHOD_NOT_ALLOWED,
                "changing the log filter needs POST /logging?level=<filter>\n",
            );
        }
        if let Err(error) = control.set(&level) {
            return http::text(StatusCode::BAD_REQUEST, format!("{error}\n"));
        }
    }
    pretty(&json!({ "level": control.current() }))
}

/// `/metrics` (and `/stats/prometheus`, where Istio's proxies serve it,
/// so that scrape configs written for Istio work) in the OpenMetrics text
/// format; any other path is 404.
pub fn metrics_page(registry: &Registry, request: &Request<()>) -> Response<String> {
    if !matches!(request.uri().path(), "/metrics" | "/stats/prometheus") {
        return http::text(StatusCode::NOT_FOUND, "metrics are at /metrics\n");
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => http::with_type(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(_) => http::text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_112_000_250);
        assert_eq!(format_rfc3339(time), "2026-12-01T08:00:00Z");
    }

    fn get(uri: &str) -> Request<()> {
        Request::builder().uri(uri).body(()).unwrap()
    }

    #[test]
    fn the_metrics_page_encodes_the_registry_at_metrics_only() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("example_requests", "Example.", counter.clone());
        counter.inc();
        let page = metrics_page(&registry, &get("/metrics"));
        assert_eq!(page.status(), StatusCode::OK);
        assert!(
            page.body().contains("example_requests_total 1"),
            "{}",
            page.body()
        );
        let istio_path = metrics_page(&registry, &get("/stats/prometheus"));
        assert_eq!(istio_path.body(), page.body());
        assert_eq!(
            metrics_page(&registry, &get("/stats")).status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn without_a_reloadable_filter_the_logging_page_says_so() {
        let page = logging_page(None, &get("/logging"));
        assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(page.body().contains("cannot be changed"));
    }
}

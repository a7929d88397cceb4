//! The JSON shapes of `/config_dump` that are not the state's own types
//! (those serialize themselves): the control plane connection and the
//! certificates, plus the timestamp format every page uses.

use std::time::SystemTime;

use identity::manager::{CertState, CertStatus};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use xds::ClientStatus;

/// `control_plane` in `/config_dump`.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct ControlPlaneView {
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

/// One entry of `/certs`.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct CertView {
    identity: String,
    state: &'static str,
    error: Option<String>,
    serial: Option<String>,
    not_before: Option<String>,
    not_after: Option<String>,
}

// === impl ControlPlaneView ===

impl ControlPlaneView {
    pub(super) fn new(address: &str, status: &ClientStatus) -> Self {
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
pub(super) fn format_rfc3339(time: SystemTime) -> String {
    let time = OffsetDateTime::from(time);
    let time = time.replace_nanosecond(0).unwrap_or(time);
    time.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Serializes a `SystemTime` as RFC 3339.
pub fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_rfc3339(*time))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_seconds() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_112_000_250);
        assert_eq!(format_rfc3339(time), "2026-12-01T08:00:00Z");
    }
}

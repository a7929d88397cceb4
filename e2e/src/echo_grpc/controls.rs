//! What a call asks echo-grpc to do: answer an error status (with a
//! message of the caller's choosing) or wait first. The controls are
//! request metadata, because a gRPC client has no query string and
//! metadata is what a proxy's header rules see. Pure: [`GrpcControls::parse`]
//! takes the metadata and returns data.

use std::time::Duration;

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::duration::parse_duration;
use crate::grpc_code::{code_name, parse_code};

/// The status to answer: a code (`14`) or its name (`UNAVAILABLE`).
pub const STATUS_KEY: &str = "x-echo-grpc-status";
/// The status message to answer with, when `x-echo-grpc-status` is an error.
pub const MESSAGE_KEY: &str = "x-echo-grpc-message";
/// How long to wait before answering (`150ms`, `2s`), as echo-http's.
pub const DELAY_KEY: &str = "x-echo-delay";

/// What one call asks for; `None` means "as normal".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrpcControls {
    /// The status to answer instead of a reply; `OK` is the normal reply.
    pub status: Option<Code>,
    /// The message of that status.
    pub message: Option<String>,
    pub delay: Option<Duration>,
}

/// A control the server cannot obey, worded for the caller (it is the
/// message of the `INVALID_ARGUMENT` answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrpcControlError {
    #[error(
        "{STATUS_KEY}: {0:?} is not a gRPC status: give a code from 0 to 16 (14) or its name \
         (UNAVAILABLE)"
    )]
    Status(String),
    #[error("{DELAY_KEY}: {value:?} is not a duration ({reason}): write it like 150ms or 2s")]
    Delay { value: String, reason: String },
    #[error("{0}: the value is not visible ASCII text")]
    NotText(&'static str),
}

// === impl GrpcControls ===

impl GrpcControls {
    pub fn parse(metadata: &MetadataMap) -> Result<Self, GrpcControlError> {
        let text = |key: &'static str| -> Result<Option<&str>, GrpcControlError> {
            metadata
                .get(key)
                .map(|value| value.to_str().map_err(|_| GrpcControlError::NotText(key)))
                .transpose()
        };
        let status = text(STATUS_KEY)?
            .map(|value| parse_code(value).ok_or_else(|| GrpcControlError::Status(value.into())))
            .transpose()?;
        let delay = text(DELAY_KEY)?
            .map(|value| {
                parse_duration(value).map_err(|error| GrpcControlError::Delay {
                    value: value.into(),
                    reason: error.to_string(),
                })
            })
            .transpose()?;
        Ok(GrpcControls {
            status,
            message: text(MESSAGE_KEY)?.map(str::to_owned),
            delay,
        })
    }

    /// The error status asked for, or `None` for a normal reply. Without
    /// `x-echo-grpc-message`, the message says who answered and why, so a
    /// test that sees it knows the status came from the app.
    pub fn error_status(&self, pod: &str) -> Option<Status> {
        let code = self.status.filter(|code| *code != Code::Ok)?;
        let message = self
            .message
            .clone()
            .unwrap_or_else(|| format!("echo-grpc {pod} answers {} as asked", code_name(code)));
        Some(Status::new(code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(entries: &[(&'static str, &'static str)]) -> MetadataMap {
        let mut map = MetadataMap::new();
        for (key, value) in entries {
            map.insert(*key, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn no_controls_is_a_normal_reply() {
        let controls = GrpcControls::parse(&metadata(&[])).unwrap();
        assert_eq!(controls, GrpcControls::default());
        assert!(controls.error_status("b").is_none());
        let ok = GrpcControls::parse(&metadata(&[(STATUS_KEY, "OK")])).unwrap();
        assert!(ok.error_status("b").is_none());
    }

    #[test]
    fn a_status_by_number_or_name_with_its_message() {
        let controls = GrpcControls::parse(&metadata(&[
            (STATUS_KEY, "14"),
            (MESSAGE_KEY, "try again later"),
            (DELAY_KEY, "150ms"),
        ]))
        .unwrap();
        assert_eq!(controls.delay, Some(Duration::from_millis(150)));
        let status = controls.error_status("b").unwrap();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "try again later");

        let named = GrpcControls::parse(&metadata(&[(STATUS_KEY, "not_found")])).unwrap();
        let status = named.error_status("b-v1").unwrap();
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            "echo-grpc b-v1 answers NOT_FOUND as asked"
        );
    }

    #[test]
    fn bad_controls_are_named() {
        let error = GrpcControls::parse(&metadata(&[(STATUS_KEY, "17")])).unwrap_err();
        assert_eq!(error, GrpcControlError::Status("17".into()));
        assert!(error.to_string().contains("UNAVAILABLE"), "{error}");
        let error = GrpcControls::parse(&metadata(&[(DELAY_KEY, "soon")])).unwrap_err();
        assert!(matches!(error, GrpcControlError::Delay { .. }), "{error:?}");
        assert!(
            error.to_string().starts_with("x-echo-delay: \"soon\""),
            "{error}"
        );
    }
}

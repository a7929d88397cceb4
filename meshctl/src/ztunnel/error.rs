//! What can go wrong reading ztunnel's admin API, each variant worded for
//! the person at the terminal: what happened, and what to try.
//!
//! Causes are part of the message (not `source()`), because the advice
//! follows the cause: "connection refused: is ztunnel running?".

use std::time::Duration;

/// How far a non-200 body is quoted: enough for ztunnel's one-line reasons,
/// not a screenful of HTML from whatever else answers on the port.
const QUOTED_BODY_CHARS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot reach ztunnel's admin API at {addr}: {reason}: is ztunnel running on this node? \
         (set --admin or MESHCTL_ZTUNNEL_ADMIN)"
    )]
    Connect { addr: String, reason: String },

    #[error(
        "ztunnel's admin API at {addr} did not answer GET {path} within {after:?}: \
         is ztunnel overloaded or stuck? (its logs say more)"
    )]
    Timeout {
        addr: String,
        path: String,
        after: Duration,
    },

    #[error(
        "GET {path} from ztunnel's admin API at {addr} failed: {reason}: \
         is it ztunnel's admin port? (set --admin or MESHCTL_ZTUNNEL_ADMIN)"
    )]
    Http {
        addr: String,
        path: String,
        reason: String,
    },

    #[error(
        "ztunnel's admin API at {addr} answered GET {path} with {status}{}",
        quote(body)
    )]
    Status {
        addr: String,
        path: String,
        status: hyper::StatusCode,
        body: String,
    },

    #[error(
        "ztunnel's admin API at {addr} answered GET {path} with more than {limit} bytes: \
         is it ztunnel's admin port?"
    )]
    TooLarge {
        addr: String,
        path: String,
        limit: usize,
    },

    #[error(
        "ztunnel's {path} is not the JSON meshctl expects: {reason}: \
         are meshctl and ztunnel from the same release? (docs/ztunnel-admin.md is the contract)"
    )]
    Decode { path: String, reason: String },

    #[error("cannot print as {format}: {reason}")]
    Encode {
        format: &'static str,
        reason: String,
    },
}

/// `: <body>` for a non-empty body, on one line and cut to
/// [`QUOTED_BODY_CHARS`].
fn quote(body: &str) -> String {
    let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.is_empty() {
        return String::new();
    }
    let mut quoted: String = body.chars().take(QUOTED_BODY_CHARS).collect();
    if quoted.len() < body.len() {
        quoted.push_str("...");
    }
    format!(": {quoted}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_carry_the_status_and_body() {
        let error = Error::Status {
            addr: "127.0.0.1:15000".into(),
            path: "/certs".into(),
            status: hyper::StatusCode::SERVICE_UNAVAILABLE,
            body: "certificate manager\n  not started\n".into(),
        };
        assert_eq!(
            error.to_string(),
            "ztunnel's admin API at 127.0.0.1:15000 answered GET /certs with \
             503 Service Unavailable: certificate manager not started"
        );
        let error = Error::Status {
            addr: "127.0.0.1:15000".into(),
            path: "/certs".into(),
            status: hyper::StatusCode::NOT_FOUND,
            body: "x".repeat(2000),
        };
        let text = error.to_string();
        assert!(text.contains("404 Not Found: xxx"), "{text}");
        assert!(text.ends_with("x..."), "{text}");
        assert!(text.len() < 700, "the body is cut: {}", text.len());
    }
}

//! The waypoint's own answers (a policy denial, no route, a fault abort, an
//! upstream that timed out or could not be reached) and how they are
//! written to the client.
//!
//! A gRPC client does not read an HTTP error: without `grpc-status` it
//! reports a protocol error that hides why. So, as Envoy does for every
//! local reply to a gRPC request, the answer to one is a trailers-only gRPC
//! response: HTTP 200, `content-type: application/grpc`, `grpc-status`
//! from the HTTP status by gRPC's table (grpc/grpc
//! `doc/http-grpc-status-mapping.md`, [`grpc_status_for`]), and the reply's
//! text as a percent-encoded `grpc-message`. Everyone else gets the HTTP
//! status with the text as a `text/plain` body.
//!
//! A request is gRPC here when its content type is `application/grpc` or
//! `application/grpc+<codec>`, Envoy's test: not gRPC-Web, whose clients
//! need their own framing. (The metrics' `request_protocol` uses Istio's
//! wider prefix test; that only labels the request.)
//!
//! A fault abort with Istio's `grpcStatus` sets its own `grpc-status`
//! instead of the mapped one (and HTTP 200, as Envoy aborts it), so a
//! request that is not gRPC gets 200 and the abort's body, as from Envoy.
//!
//! The access log and the metrics record what the client got, as Envoy
//! reports a converted reply: `response_code` 200 with the gRPC status
//! (`grpc_status`, `grpc_response_status`), the response flag kept (`200
//! UH`), and the reason.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::metrics::{ResponseFlag, grpc_status};
use crate::proxy::access_log::{Logged, RequestLog, ResponseBody};

/// gRPC status codes (grpc/grpc `doc/statuscodes.md`) a local reply maps to.
pub(crate) mod grpc_code {
    pub(crate) const UNKNOWN: u16 = 2;
    pub(crate) const PERMISSION_DENIED: u16 = 7;
    pub(crate) const UNIMPLEMENTED: u16 = 12;
    pub(crate) const INTERNAL: u16 = 13;
    pub(crate) const UNAVAILABLE: u16 = 14;
    pub(crate) const UNAUTHENTICATED: u16 = 16;
}

/// What a `grpc-message` may carry unencoded (gRPC's PROTOCOL-HTTP2.md,
/// `Percent-Byte-Unencoded`): space and visible ASCII but `%`. Bytes
/// outside ASCII are always encoded.
const GRPC_MESSAGE_ENCODED: &AsciiSet = &CONTROLS.add(b'%');

/// An answer the waypoint gives itself instead of forwarding.
#[derive(Debug)]
pub(super) struct LocalReply {
    pub(super) status: StatusCode,
    /// The text for the client: the HTTP body, or the `grpc-message`.
    pub(super) body: &'static str,
    /// Why, for the access log (more than the client is told).
    pub(super) reason: String,
    pub(super) location: Option<HeaderValue>,
    /// Envoy's response flag for it (`-` unless an upstream is to blame).
    pub(super) flag: ResponseFlag,
    /// The `grpc-status` for a gRPC request, instead of the one mapped
    /// from `status` (a fault's `grpcStatus`).
    pub(super) grpc_status: Option<u16>,
}

/// How the client expects an error: as HTTP, or as gRPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyForm {
    Http,
    Grpc,
}

// === impl ReplyForm ===

impl ReplyForm {
    /// From the request's headers, as the client sent them.
    pub(super) fn of(request_headers: &HeaderMap) -> Self {
        let grpc = request_headers.get(CONTENT_TYPE).is_some_and(|value| {
            value
                .as_bytes()
                .strip_prefix(b"application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"+"))
        });
        if grpc {
            ReplyForm::Grpc
        } else {
            ReplyForm::Http
        }
    }
}

// === impl LocalReply ===

impl LocalReply {
    pub(super) fn new(status: StatusCode, body: &'static str, reason: String) -> Self {
        LocalReply {
            status,
            body,
            reason,
            location: None,
            flag: ResponseFlag::None,
            grpc_status: None,
        }
    }

    pub(super) fn flagged(self, flag: ResponseFlag) -> Self {
        LocalReply { flag, ..self }
    }

    /// Answers a gRPC request with `grpc_status`, when set, instead of the
    /// status mapped from the HTTP one.
    pub(super) fn with_grpc_status(self, grpc_status: Option<u16>) -> Self {
        LocalReply {
            grpc_status,
            ..self
        }
    }

    /// The response the client gets, in `form`; pure.
    pub(super) fn to_response(&self, form: ReplyForm) -> Response<&'static str> {
        let mut response = match form {
            ReplyForm::Http => {
                let mut response = Response::new(self.body);
                *response.status_mut() = self.status;
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                response
            }
            ReplyForm::Grpc => {
                // Trailers-only: the status is in the head, and no body.
                let mut response = Response::new("");
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
                let grpc_status = self
                    .grpc_status
                    .unwrap_or_else(|| grpc_status_for(self.status));
                headers.insert("grpc-status", HeaderValue::from(grpc_status));
                if let Some(message) = grpc_message(self.body) {
                    headers.insert("grpc-message", message);
                }
                response
            }
        };
        if let Some(location) = &self.location {
            response.headers_mut().insert(LOCATION, location.clone());
        }
        response
    }
}

/// gRPC's status for an HTTP status, by grpc/grpc
/// `doc/http-grpc-status-mapping.md` (Envoy's `httpToGrpcStatus`, plus the
/// table's 431).
pub(super) fn grpc_status_for(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 | 431 => grpc_code::INTERNAL,
        401 => grpc_code::UNAUTHENTICATED,
        403 => grpc_code::PERMISSION_DENIED,
        404 => grpc_code::UNIMPLEMENTED,
        429 | 502 | 503 | 504 => grpc_code::UNAVAILABLE,
        _ => grpc_code::UNKNOWN,
    }
}

/// `text` as a `grpc-message`: without its final newline, percent-encoded
/// as gRPC asks; `None` when empty.
pub(super) fn grpc_message(text: &'static str) -> Option<HeaderValue> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.is_empty() {
        return None;
    }
    Some(
        match utf8_percent_encode(text, GRPC_MESSAGE_ENCODED).into() {
            // Nothing to encode: every byte is space or visible ASCII, all of
            // them valid in a header value, so `from_static` cannot panic.
            std::borrow::Cow::Borrowed(text) => HeaderValue::from_static(text),
            // Encoded: only ASCII is left, so the value is valid.
            std::borrow::Cow::Owned(encoded) => HeaderValue::try_from(encoded).ok()?,
        },
    )
}

/// Answers with `reply` in `form`, and records it on `log`: what the
/// client got (status, and gRPC status for a gRPC reply), and why.
pub(super) fn local(
    reply: LocalReply,
    form: ReplyForm,
    mut log: RequestLog,
) -> Response<ResponseBody> {
    let (head, body) = reply.to_response(form).into_parts();
    log.status = Some(head.status);
    log.grpc_status = grpc_status(&head.headers);
    log.reason = Some(reply.reason);
    log.flag = reply.flag;
    Response::from_parts(
        head,
        Logged::local(Bytes::from_static(body.as_bytes()), log),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        headers
    }

    #[test]
    fn http_statuses_map_to_grpc_by_the_specs_table() {
        let table = [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (431, 13),
            (502, 14),
            (503, 14),
            (504, 14),
            // All other codes, 200 included: there should have been a
            // grpc-status for a real OK.
            (200, 2),
            (301, 2),
            (405, 2),
            (500, 2),
            (501, 2),
            (599, 2),
        ];
        for (http, grpc) in table {
            let status = StatusCode::from_u16(http).unwrap();
            assert_eq!(grpc_status_for(status), grpc, "HTTP {http}");
        }
    }

    #[test]
    fn only_grpc_content_types_get_a_grpc_reply() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc+json",
        ] {
            assert_eq!(ReplyForm::of(&headers(grpc)), ReplyForm::Grpc, "{grpc}");
        }
        for http in [
            "application/grpc-web",
            "application/grpc-web-text",
            "application/grpcx",
            "application/json",
            "text/plain",
        ] {
            assert_eq!(ReplyForm::of(&headers(http)), ReplyForm::Http, "{http}");
        }
        assert_eq!(ReplyForm::of(&HeaderMap::new()), ReplyForm::Http);
    }

    #[test]
    fn a_grpc_reply_is_trailers_only_with_the_mapped_status_and_the_text() {
        let reply = LocalReply::new(
            StatusCode::NOT_FOUND,
            "no route matches the request\n",
            "no HTTPRoute rule matches".into(),
        );
        let response = reply.to_response(ReplyForm::Grpc);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(response.headers()["grpc-status"], "12");
        assert_eq!(
            response.headers()["grpc-message"],
            "no route matches the request"
        );
        assert_eq!(*response.body(), "");
    }

    #[test]
    fn a_plain_reply_keeps_its_http_status_and_body() {
        let reply = LocalReply::new(
            StatusCode::FORBIDDEN,
            "RBAC: access denied",
            "denied by policy b/no-admin".into(),
        );
        let response = reply.to_response(ReplyForm::Http);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[CONTENT_TYPE], "text/plain");
        assert!(response.headers().get("grpc-status").is_none());
        assert!(response.headers().get("grpc-message").is_none());
        assert_eq!(*response.body(), "RBAC: access denied");
    }

    #[test]
    fn each_kind_of_local_reply_gets_its_grpc_status() {
        let cases = [
            (StatusCode::FORBIDDEN, "RBAC: access denied", "7"),
            (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream request timeout\n",
                "14",
            ),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy upstream\n",
                "14",
            ),
            (StatusCode::BAD_REQUEST, "malformed request path\n", "13"),
            (StatusCode::INTERNAL_SERVER_ERROR, "invalid backend\n", "2"),
            (StatusCode::IM_A_TEAPOT, "fault filter abort", "2"),
        ];
        for (status, body, grpc) in cases {
            let response =
                LocalReply::new(status, body, String::new()).to_response(ReplyForm::Grpc);
            assert_eq!(response.status(), StatusCode::OK, "{status}");
            assert_eq!(response.headers()["grpc-status"], grpc, "{status}");
            assert_eq!(
                response.headers()["grpc-message"],
                body.trim_end_matches('\n'),
                "{status}"
            );
        }
    }

    #[test]
    fn a_redirect_keeps_its_location_and_has_no_message() {
        let mut reply = LocalReply::new(StatusCode::FOUND, "", "redirected".into());
        reply.location = Some(HeaderValue::from_static("http://elsewhere/"));
        let grpc = reply.to_response(ReplyForm::Grpc);
        assert_eq!(grpc.headers()["grpc-status"], "2");
        assert!(grpc.headers().get("grpc-message").is_none());
        assert_eq!(grpc.headers()[LOCATION], "http://elsewhere/");
        let http = reply.to_response(ReplyForm::Http);
        assert_eq!(http.status(), StatusCode::FOUND);
        assert_eq!(http.headers()[LOCATION], "http://elsewhere/");
    }

    #[test]
    fn a_fault_grpc_status_replaces_the_mapped_one_for_grpc_requests_only() {
        // Envoy's gRPC abort: HTTP 200 with the fault's gRPC status.
        let reply = LocalReply::new(StatusCode::OK, "fault filter abort", String::new())
            .with_grpc_status(Some(14));
        let grpc = reply.to_response(ReplyForm::Grpc);
        assert_eq!(grpc.status(), StatusCode::OK);
        assert_eq!(grpc.headers()["grpc-status"], "14");
        assert_eq!(grpc.headers()["grpc-message"], "fault filter abort");
        let http = reply.to_response(ReplyForm::Http);
        assert_eq!(http.status(), StatusCode::OK);
        assert!(http.headers().get("grpc-status").is_none());
        assert_eq!(*http.body(), "fault filter abort");
    }

    #[test]
    fn grpc_messages_are_percent_encoded_as_the_spec_asks() {
        // Space and visible ASCII pass, `%` and the rest are encoded.
        let encoded =
            |text: &'static str| grpc_message(text).map(|value| value.to_str().unwrap().to_owned());
        assert_eq!(
            encoded("reset reason: overflow (a=b; c~d)").as_deref(),
            Some("reset reason: overflow (a=b; c~d)")
        );
        assert_eq!(encoded("100% done").as_deref(), Some("100%25 done"));
        assert_eq!(encoded("tab\there").as_deref(), Some("tab%09here"));
        assert_eq!(encoded("déjà").as_deref(), Some("d%C3%A9j%C3%A0"));
        assert_eq!(encoded("two\nlines\n").as_deref(), Some("two%0Alines"));
        assert_eq!(encoded(""), None);
        assert_eq!(encoded("\n"), None);
    }
}

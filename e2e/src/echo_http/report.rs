//! The JSON bodies echo-http answers with: a [`Report`] of the request it
//! saw (with an [`UpstreamReport`] per upstream it called), or an
//! [`ErrorReport`] saying why it refused one. Built from data alone,
//! without I/O.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hyper::header::HeaderMap;
use hyper::http::request::Parts;
use serde::{Deserialize, Serialize};

use crate::controls::{Answer, ControlError};

/// What echo-http saw of a request, and how it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `--pod` (POD_NAME) of the server that answered.
    pub pod: String,
    /// `--version` (VERSION) of the server that answered.
    pub version: String,
    pub method: String,
    /// The HTTP version the request arrived in, `HTTP/1.1` or `HTTP/2.0`:
    /// through a proxy, whether it kept the client's version.
    #[serde(default)]
    pub http_version: String,
    pub path: String,
    /// The raw query string, as sent (not decoded); `None` without `?`.
    pub query: Option<String>,
    /// Header names in lower case; repeated headers joined with ", ", and
    /// bytes that are not UTF-8 replaced.
    pub headers: BTreeMap<String, String>,
    /// The client's address as the server saw it (through a proxy, that is
    /// the proxy's unless it preserves the source address).
    pub peer: String,
    /// Length of the request body.
    pub body_bytes: u64,
    /// The status of this answer.
    pub status: u16,
    /// Whether `fail` made this answer a 503.
    pub injected_failure: bool,
    /// What each `--upstream` answered to this request, in the order
    /// called. Left out when there are none, so that the report of a
    /// server without upstreams is what it always was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<UpstreamReport>,
}

/// What one upstream answered. Every field is always there (`null` when it
/// does not apply), so that `jq '.upstreams[0].body.upstreams[0]'` walks a
/// chain without guessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamReport {
    /// The upstream as given to `--upstream`.
    pub url: String,
    /// The HTTP status it answered; `None` for tcp://, and when no answer
    /// came.
    pub status: Option<u16>,
    /// Whether the call succeeded: a 2xx for http://, a reply and a close
    /// for tcp://.
    pub ok: bool,
    /// Its reply: the JSON value when it is JSON (another echo-http's
    /// report nests here), else the text; `None` when nothing came back.
    pub body: Option<serde_json::Value>,
    /// Why the call failed, starting with the URL; `None` when `ok`.
    pub error: Option<String>,
}

/// The body of a 400: which control was wrong and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub pod: String,
    pub version: String,
    /// The whole explanation, for a person.
    pub error: String,
    /// The control at fault (`status`, `delay`, `fail`), when it was one.
    pub parameter: Option<String>,
}

// === impl Report ===

impl Report {
    pub fn new(
        pod: &str,
        version: &str,
        head: &Parts,
        peer: SocketAddr,
        body_bytes: u64,
        answer: Answer,
    ) -> Self {
        Report {
            pod: pod.to_owned(),
            version: version.to_owned(),
            method: head.method.to_string(),
            http_version: format!("{:?}", head.version),
            path: head.uri.path().to_owned(),
            query: head.uri.query().map(str::to_owned),
            headers: header_map(&head.headers),
            peer: peer.to_string(),
            body_bytes,
            status: answer.status.as_u16(),
            injected_failure: answer.injected_failure,
            upstreams: Vec::new(),
        }
    }
}

// === impl ErrorReport ===

impl ErrorReport {
    pub fn control(pod: &str, version: &str, error: &ControlError) -> Self {
        ErrorReport {
            pod: pod.to_owned(),
            version: version.to_owned(),
            error: error.to_string(),
            parameter: Some(error.parameter.query_name().to_owned()),
        }
    }

    pub fn other(pod: &str, version: &str, error: String) -> Self {
        ErrorReport {
            pod: pod.to_owned(),
            version: version.to_owned(),
            error,
            parameter: None,
        }
    }
}

/// The headers as one string per name, in name order.
pub fn header_map(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .keys()
        .map(|name| {
            let values: Vec<_> = headers
                .get_all(name)
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()))
                .collect();
            (name.as_str().to_owned(), values.join(", "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;
    use hyper::{Request, StatusCode};

    use super::*;

    #[test]
    fn reports_the_request_head() {
        let request = Request::post("/api/items?status=201&x=%20")
            .header("host", "backend")
            .header("x-trace", "a")
            .header("x-trace", "b")
            .body(())
            .unwrap();
        let (head, ()) = request.into_parts();
        let answer = Answer {
            status: StatusCode::CREATED,
            injected_failure: false,
        };
        let report = Report::new(
            "pod-a",
            "v2",
            &head,
            "10.0.0.7:41000".parse().unwrap(),
            12,
            answer,
        );
        assert_eq!(report.pod, "pod-a");
        assert_eq!(report.version, "v2");
        assert_eq!(report.method, "POST");
        assert_eq!(report.path, "/api/items");
        assert_eq!(report.query.as_deref(), Some("status=201&x=%20"));
        assert_eq!(report.headers["host"], "backend");
        assert_eq!(report.headers["x-trace"], "a, b");
        assert_eq!(report.peer, "10.0.0.7:41000");
        assert_eq!(report.body_bytes, 12);
        assert_eq!(report.status, 201);
    }

    #[test]
    fn headers_that_are_not_utf8_are_reported_lossily() {
        let mut headers = HeaderMap::new();
        headers.insert("x-bytes", HeaderValue::from_bytes(b"a\xffb").unwrap());
        assert_eq!(header_map(&headers)["x-bytes"], "a\u{fffd}b");
    }
}

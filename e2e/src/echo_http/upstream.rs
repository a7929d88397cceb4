//! The upstreams echo-http calls on every request, so that the one binary
//! plays each hop of a chain (frontend -> backend -> database) and the
//! answer at the top shows the whole chain: each hop's report nests the
//! report of the hop below.
//!
//! An upstream is `http://host:port/path` (one HTTP/1.1 GET; a 2xx is
//! success) or `tcp://host:port` (one line to an echo server such as
//! echo-tcp, and its reply). This module is pure: parsing the URLs,
//! turning a reply into the report's `body`, and choosing the answer once
//! the upstreams are called. [`call`](super::call) does the I/O.

use hyper::StatusCode;
use serde_json::Value;

use super::report::UpstreamReport;
use crate::controls::{Answer, Controls};
use crate::traffic::{HttpTarget, TargetError, TcpTarget};

/// One `--upstream`, checked once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `http://host[:port][/path][?query]`: GET it.
    Http(HttpTarget),
    /// `tcp://host:port`: send a line, read the reply.
    Tcp {
        /// The URL as given, for the report.
        url: String,
        target: TcpTarget,
    },
}

/// An `--upstream` (or an entry of UPSTREAMS) that cannot be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamUrlError {
    #[error("an upstream URL is empty: write it like http://backend:8080/path or tcp://db:9000")]
    Empty,
    #[error(
        "the upstream `{0}` has no scheme: write it like http://backend:8080/path \
         or tcp://db:9000"
    )]
    NoScheme(String),
    #[error(
        "the upstream `{url}` is {scheme}://, but echo-http calls http:// (plain \
         HTTP/1.1; in the mesh, ztunnel adds the TLS) and tcp:// only"
    )]
    Scheme { url: String, scheme: String },
    #[error("the upstream {0}")]
    Http(#[source] TargetError),
    #[error("the upstream `{0}` is not tcp://host:port: write it like tcp://db:9000")]
    Tcp(String),
}

// === impl Upstream ===

impl Upstream {
    /// Parses `http://...` or `tcp://host:port` (IPv6 in brackets). The
    /// host is resolved on each call, not here: a service's address may
    /// appear after the pod starts.
    pub fn parse(url: &str) -> Result<Self, UpstreamUrlError> {
        if url.trim().is_empty() {
            return Err(UpstreamUrlError::Empty);
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(UpstreamUrlError::NoScheme(url.to_owned()));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "http" => HttpTarget::parse(url)
                .map(Upstream::Http)
                .map_err(UpstreamUrlError::Http),
            "tcp" => {
                let target =
                    TcpTarget::parse(rest).map_err(|_| UpstreamUrlError::Tcp(url.to_owned()))?;
                Ok(Upstream::Tcp {
                    url: url.to_owned(),
                    target,
                })
            }
            _ => Err(UpstreamUrlError::Scheme {
                url: url.to_owned(),
                scheme: scheme.to_owned(),
            }),
        }
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        match self {
            Upstream::Http(target) => target.url(),
            Upstream::Tcp { url, .. } => url,
        }
    }
}

/// The line a tcp:// upstream is sent: an echo server sends it back, so
/// the reply shows who called.
pub fn tcp_greeting(pod: &str) -> String {
    format!("hello from {pod}\n")
}

/// What the report shows of a reply: the JSON value when the bytes are a
/// JSON document (another echo-http's report then nests as an object that
/// `jq` can walk), else the text, with bytes that are not UTF-8 replaced.
pub fn reply_body(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The answer once the upstreams are called. A failed upstream makes it a
/// 502, so that `curl -f` at the top of a chain fails when any hop below
/// does; but what the request asked for wins: an explicit `status`, or a
/// 503 that `fail` rolled (retry tests count those).
pub fn answer_with_upstreams(
    controls: &Controls,
    answer: Answer,
    upstreams: &[UpstreamReport],
) -> Answer {
    let asked = controls.status.is_some() || answer.injected_failure;
    if asked || upstreams.iter().all(|upstream| upstream.ok) {
        return answer;
    }
    Answer {
        status: StatusCode::BAD_GATEWAY,
        injected_failure: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_and_tcp_upstreams() {
        let http = Upstream::parse("http://backend:8080/items?x=1").unwrap();
        let Upstream::Http(target) = &http else {
            panic!("{http:?}")
        };
        assert_eq!(target.connect_addr(), "backend:8080");
        assert_eq!(target.path_and_query(), "/items?x=1");
        assert_eq!(http.url(), "http://backend:8080/items?x=1");

        let tcp = Upstream::parse("tcp://db:9000").unwrap();
        assert_eq!(
            tcp,
            Upstream::Tcp {
                url: "tcp://db:9000".into(),
                target: TcpTarget::parse("db:9000").unwrap(),
            }
        );
        assert_eq!(tcp.url(), "tcp://db:9000");
        assert!(Upstream::parse("tcp://[::1]:9000").is_ok());
        assert!(Upstream::parse("HTTP://backend/").is_ok());
    }

    #[test]
    fn refuses_what_it_cannot_call() {
        assert_eq!(Upstream::parse(""), Err(UpstreamUrlError::Empty));
        assert_eq!(
            Upstream::parse("backend:8080"),
            Err(UpstreamUrlError::NoScheme("backend:8080".into()))
        );
        assert_eq!(
            Upstream::parse("https://backend/"),
            Err(UpstreamUrlError::Scheme {
                url: "https://backend/".into(),
                scheme: "https".into()
            })
        );
        for bad in ["tcp://db", "tcp://db:9000/", "tcp://:9000"] {
            assert_eq!(
                Upstream::parse(bad),
                Err(UpstreamUrlError::Tcp(bad.into())),
                "{bad}"
            );
        }
        let error = Upstream::parse("http://bad host/").unwrap_err();
        assert!(matches!(error, UpstreamUrlError::Http(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("the upstream `http://bad host/`"),
            "{error}"
        );
    }

    #[test]
    fn a_reply_is_json_when_it_parses_and_text_otherwise() {
        assert_eq!(
            reply_body(b"{\"pod\": \"db\"}\n"),
            serde_json::json!({"pod": "db"})
        );
        assert_eq!(
            reply_body(b"db\nhello\n"),
            Value::String("db\nhello\n".into())
        );
        assert_eq!(reply_body(b"a\xffb"), Value::String("a\u{fffd}b".into()));
        assert_eq!(reply_body(b""), Value::String(String::new()));
    }

    fn upstream(ok: bool) -> UpstreamReport {
        UpstreamReport {
            url: "http://backend/".into(),
            status: Some(if ok { 200 } else { 503 }),
            ok,
            body: None,
            error: (!ok).then(|| "http://backend/: answered 503".into()),
        }
    }

    fn answer(status: StatusCode, injected_failure: bool) -> Answer {
        Answer {
            status,
            injected_failure,
        }
    }

    #[test]
    fn a_failed_upstream_makes_a_502_unless_the_request_asked_for_a_status() {
        let none = Controls::default();
        let ok = answer(StatusCode::OK, false);
        assert_eq!(answer_with_upstreams(&none, ok, &[]), ok);
        assert_eq!(answer_with_upstreams(&none, ok, &[upstream(true)]), ok);
        assert_eq!(
            answer_with_upstreams(&none, ok, &[upstream(true), upstream(false)]),
            answer(StatusCode::BAD_GATEWAY, false)
        );

        let asked = Controls {
            status: Some(StatusCode::OK),
            ..Controls::default()
        };
        assert_eq!(answer_with_upstreams(&asked, ok, &[upstream(false)]), ok);

        let rolled = answer(StatusCode::SERVICE_UNAVAILABLE, true);
        let fail = Controls {
            fail: Some(1.0),
            ..Controls::default()
        };
        assert_eq!(
            answer_with_upstreams(&fail, rolled, &[upstream(false)]),
            rolled
        );
        // `fail` that did not strike asked for nothing.
        assert_eq!(
            answer_with_upstreams(&fail, ok, &[upstream(false)]),
            answer(StatusCode::BAD_GATEWAY, false)
        );
    }
}

//! The client of ztunnel's admin API: one HTTP/1.1 `GET` on a fresh
//! loopback connection per command, decoded into [`super::model`].
//!
//! A plain `TcpStream` and hyper's connection API are all it takes: the
//! admin server is plain HTTP on loopback, and a CLI that makes one request
//! has no use for a pooled client. Each phase has its own deadline, so a
//! wedged ztunnel is reported as such instead of hanging the terminal.

use std::future::poll_fn;
use std::io;
use std::pin::pin;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::Error;
use super::model::{Certificate, ConfigDump, Connection};

/// ztunnel's admin address, as Istio's.
pub const DEFAULT_ADDR: &str = "127.0.0.1:15000";

/// Long enough for a `/config_dump` of a large mesh on a busy node, short
/// enough that a wedged ztunnel does not look like a slow one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A `/config_dump` of 10,000 workloads is a few MiB; anything near this is
/// not ztunnel.
const MAX_BODY_BYTES: usize = 64 << 20;

/// Reads ztunnel's admin API at one address.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// `host:port` of the admin server, also sent as `Host`.
    addr: String,
    /// Deadline of each phase: connect, response head, body.
    timeout: Duration,
}

// === impl AdminClient ===

impl AdminClient {
    pub fn new(addr: impl Into<String>, timeout: Duration) -> Self {
        AdminClient {
            addr: addr.into(),
            timeout,
        }
    }

    /// `GET /config_dump`.
    pub async fn config_dump(&self) -> Result<ConfigDump, Error> {
        self.get_json("/config_dump").await
    }

    /// `GET /certs`.
    pub async fn certs(&self) -> Result<Vec<Certificate>, Error> {
        self.get_json("/certs").await
    }

    /// `GET /connections`.
    pub async fn connections(&self) -> Result<Vec<Connection>, Error> {
        self.get_json("/connections").await
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, Error> {
        let body = self.get(path).await?;
        decode(path, &body)
    }

    /// The body of a `200` answer to `GET path`.
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, Error> {
        let connect_error = |reason: String| Error::Connect {
            addr: self.addr.clone(),
            reason,
        };
        let stream = timeout(self.timeout, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| connect_error(format!("timed out after {:?}", self.timeout)))?
            .map_err(|error| connect_error(describe(&error)))?;

        let http_error = |error: hyper::Error| Error::Http {
            addr: self.addr.clone(),
            path: path.to_owned(),
            reason: error.to_string(),
        };
        let timed_out = |_| Error::Timeout {
            addr: self.addr.clone(),
            path: path.to_owned(),
            after: self.timeout,
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(stream))
                .await
                .map_err(http_error)?;
        // The connection task drives the socket; it ends when `sender` is
        // dropped, or with the error that `send_request` also reports.
        tokio::spawn(connection);

        let request = Request::get(path)
            .header(header::HOST, &self.addr)
            .header(header::ACCEPT, "application/json")
            .body(String::new())
            .map_err(|error| Error::Http {
                addr: self.addr.clone(),
                path: path.to_owned(),
                reason: format!("invalid request: {error}"),
            })?;
        let response = timeout(self.timeout, sender.send_request(request))
            .await
            .map_err(timed_out)?
            .map_err(http_error)?;
        let status = response.status();
        let body = timeout(self.timeout, collect(response.into_body()))
            .await
            .map_err(timed_out)?
            .map_err(|error| match error {
                CollectError::Http(error) => http_error(error),
                CollectError::TooLarge => Error::TooLarge {
                    addr: self.addr.clone(),
                    path: path.to_owned(),
                    limit: MAX_BODY_BYTES,
                },
            })?;
        if status != StatusCode::OK {
            return Err(Error::Status {
                addr: self.addr.clone(),
                path: path.to_owned(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(body)
    }
}

/// Parses the body of `path`; the error names the endpoint, and serde's
/// message says which field and where.
pub fn decode<T: DeserializeOwned>(path: &str, body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|error| Error::Decode {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// An I/O error in words: the error kind ("connection refused") where it
/// says it all, the OS's own message otherwise.
fn describe(error: &io::Error) -> String {
    use io::ErrorKind as Kind;
    match error.kind() {
        kind @ (Kind::ConnectionRefused
        | Kind::ConnectionReset
        | Kind::ConnectionAborted
        | Kind::TimedOut
        | Kind::HostUnreachable
        | Kind::NetworkUnreachable
        | Kind::AddrNotAvailable
        | Kind::PermissionDenied) => kind.to_string(),
        _ => error.to_string(),
    }
}

enum CollectError {
    Http(hyper::Error),
    TooLarge,
}

/// The whole body, frame by frame (hyper has no `collect` of its own, and
/// `http-body-util` is not a dependency of the workspace).
async fn collect(body: Incoming) -> Result<Vec<u8>, CollectError> {
    let mut body = pin!(body);
    let mut bytes = Vec::new();
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(CollectError::Http)?;
        // Trailers are not data; ztunnel sends none anyway.
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_BODY_BYTES {
                return Err(CollectError::TooLarge);
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port on loopback where nothing listens: bound, then released.
    fn dead_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn nothing_listening_says_is_ztunnel_running() {
        let addr = format!("127.0.0.1:{}", dead_port());
        let client = AdminClient::new(&addr, DEFAULT_TIMEOUT);
        let error = client.config_dump().await.unwrap_err();
        assert!(matches!(error, Error::Connect { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "cannot reach ztunnel's admin API at {addr}: connection refused: \
                 is ztunnel running on this node? (set --admin or MESHCTL_ZTUNNEL_ADMIN)"
            )
        );
    }

    /// A listener that accepts and never answers: a wedged ztunnel must
    /// not hang the terminal.
    #[tokio::test]
    async fn a_silent_admin_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accept = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            // Held open, never written to, until the test ends.
            std::future::pending::<()>().await;
            drop(socket);
        });
        let client = AdminClient::new(&addr, Duration::from_millis(200));
        let error = client.certs().await.unwrap_err();
        accept.abort();
        assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
        assert!(
            error.to_string().starts_with(&format!(
                "ztunnel's admin API at {addr} did not answer GET /certs within 200ms: \
                 is ztunnel overloaded or stuck?"
            )),
            "{error}"
        );
    }

    #[test]
    fn bad_json_names_the_endpoint_and_the_field() {
        let error = decode::<Vec<Certificate>>("/certs", br#"[{"identity": 7}]"#).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with("ztunnel's /certs is not the JSON meshctl expects: invalid type: integer `7`, expected a string"),
            "{text}"
        );
        assert!(text.contains("line 1 column"), "{text}");

        let error = decode::<ConfigDump>("/config_dump", b"<html>").unwrap_err();
        assert!(
            error.to_string().starts_with(
                "ztunnel's /config_dump is not the JSON meshctl expects: expected value"
            ),
            "{error}"
        );
    }
}

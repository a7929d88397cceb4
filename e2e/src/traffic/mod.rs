//! The `traffic` client: sends many requests (or echo connections) and
//! reduces what happened to a [`Summary`](crate::summary::Summary).
//!
//! Nothing is retried: a mesh test wants to see every failure. Each
//! failure is recorded with a short reason that is the same for the same
//! cause ("connect: connection refused"), so that the summary can count
//! causes.
//!
//! - [`http`]: `traffic http`: GET requests over HTTP/1.1, one keep-alive
//!   connection per worker.
//! - [`grpc`]: `traffic grpc`: unary calls to echo-grpc over HTTP/2
//!   cleartext, one channel (connection) per worker; every gRPC status is
//!   an answer, counted by name.
//! - [`tcp`]: `traffic tcp`: sequential connections that each echo a
//!   random payload through echo-tcp and check it.

pub mod grpc;
pub mod http;
pub mod tcp;

use std::error::Error;
use std::io;

pub use self::grpc::{GrpcRun, GrpcTarget};
pub use self::http::{HttpRun, HttpTarget};
pub use self::tcp::{TcpRun, TcpTarget};

/// A target the client cannot send to, worded for the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("`{url}` is not a URL ({reason}): write it like http://backend:8080/path")]
    Url { url: String, reason: String },
    #[error("`{url}` has no scheme: write it like http://{url}")]
    NoScheme { url: String },
    #[error(
        "`{url}` is {scheme}://, but traffic speaks plaintext only: use http:// \
         (in the mesh, ztunnel adds the TLS)"
    )]
    Scheme { url: String, scheme: String },
    #[error("`{0}` is not host:port: write it like 10.0.0.5:9000 or backend:9000")]
    HostPort(String),
}

/// An I/O error in words: the OS's message with its code ("Connection
/// refused (os error 111)"), which is the same for the same cause.
fn io_reason(error: &io::Error) -> String {
    error.to_string()
}

/// An error and its causes, `outer: inner: innermost`: hyper's own message
/// ("connection error") says little without the I/O error under it.
pub(crate) fn error_chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

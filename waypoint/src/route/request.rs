//! The parts of a request that routing and the filters look at, borrowed
//! from the request so that selecting a route copies nothing.

use std::str::FromStr;

use http::uri::Authority;
use http::{HeaderMap, Method, Uri, header};

/// A request's method, URI and headers. HTTP/1.1 origin-form requests carry
/// the host in the `Host` header; HTTP/2 requests in the URI's authority.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

// === impl RequestHead ===

impl<'a> RequestHead<'a> {
    pub fn new(method: &'a Method, uri: &'a Uri, headers: &'a HeaderMap) -> Self {
        Self {
            method,
            uri,
            headers,
        }
    }

    pub fn from_parts(parts: &'a http::request::Parts) -> Self {
        Self::new(&parts.method, &parts.uri, &parts.headers)
    }

    pub fn from_request<B>(request: &'a http::Request<B>) -> Self {
        Self::new(request.method(), request.uri(), request.headers())
    }

    /// The path, without the query; `/` when the URI has none.
    pub fn path(&self) -> &'a str {
        match self.uri.path() {
            "" => "/",
            path => path,
        }
    }

    pub fn query(&self) -> Option<&'a str> {
        self.uri.query()
    }

    /// The scheme the client used: the URI's (HTTP/2 `:scheme`, or an
    /// absolute-form HTTP/1.1 target), else `http`, since requests reach
    /// the waypoint as plaintext HTTP inside HBONE.
    pub fn scheme(&self) -> &'a str {
        self.uri.scheme_str().unwrap_or("http")
    }

    /// The host the client asked for, without a port: the URI's authority,
    /// else the `Host` header. `None` if neither is there or the header is
    /// not a valid authority.
    pub fn host(&self) -> Option<&'a str> {
        if let Some(authority) = self.uri.authority() {
            return Some(authority.host());
        }
        let value = self.headers.get(header::HOST)?.to_str().ok()?;
        // Parsed only to find where the port starts (IPv6 hosts contain
        // colons); the host is then borrowed from the header itself. A host
        // that is not where it should be (userinfo, which a `Host` header
        // must not carry) is no host.
        let authority = Authority::from_str(value).ok()?;
        let host = authority.host();
        value.get(..host.len()).filter(|prefix| *prefix == host)
    }
}

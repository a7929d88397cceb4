//! The `HTTPRoute` filters as pure functions over request and response
//! heads: header modification, redirects and URL rewrites. Mirroring is a
//! share of requests ([`Fraction::contains`](crate::route::Fraction::contains))
//! plus a copy the data path sends; it has no head to compute.
//!
//! Path modifiers follow the Gateway API table for `ReplacePrefixMatch`:
//! the matched prefix and the replacement are both taken without their
//! trailing `/`, so `/foo/bar` with prefix `/foo` becomes `/xyz/bar` for
//! `/xyz` and `/xyz/` alike, and `/bar` for the empty replacement. The
//! query string is kept.

use std::str::FromStr;

use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};

use crate::route::{HeaderModifier, PathModifier, RequestHead, RequestRedirect, UrlRewrite};

/// A redirect to answer with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub status: StatusCode,
    pub location: HeaderValue,
}

/// The parts of the request URL a [`UrlRewrite`] changes; `None` leaves a
/// part as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewrittenUrl {
    pub authority: Option<Authority>,
    pub path_and_query: Option<PathAndQuery>,
}

/// A filter that cannot be applied to this request.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error(
        "the request names no host (no URI authority, no valid Host header), so the redirect cannot \
         keep it; give the RequestRedirect filter a hostname"
    )]
    MissingHost,
    #[error(
        "ReplacePrefixMatch was asked to rewrite a request that no PathPrefix match selected; \
         the route table only accepts it on rules with exactly one PathPrefix match"
    )]
    NoPrefixMatch,
    #[error("the {what} {value:?} built by the filter is not valid")]
    InvalidUrl {
        what: &'static str,
        value: String,
        #[source]
        source: http::Error,
    },
}

/// Applies `modifier` to `headers`: set replaces every value of a header,
/// add appends one (as its own field line, which is the same value as the
/// comma-joined one and keeps `set-cookie` intact), remove drops them all.
pub fn apply_header_modifier(modifier: &HeaderModifier, headers: &mut HeaderMap) {
    for (name, value) in &modifier.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &modifier.add {
        headers.append(name.clone(), value.clone());
    }
    for name in &modifier.remove {
        headers.remove(name);
    }
}

/// The redirect `filter` answers `request` with. `matched_prefix` is the
/// prefix of the `PathPrefix` match that selected the rule
/// ([`Selected::matched_prefix`](crate::route::Selected::matched_prefix)),
/// and `listener_port` the port the request arrived on (the service port).
///
/// The port follows the Gateway API: the filter's port; else, when the
/// filter sets a scheme, that scheme's well-known port (80, 443); else the
/// listener port. It is left out of the `Location` when it is the default
/// port of the scheme used.
pub fn redirect(
    request: &RequestHead<'_>,
    filter: &RequestRedirect,
    matched_prefix: Option<&str>,
    listener_port: u16,
) -> Result<Redirect, FilterError> {
    let scheme = filter
        .scheme
        .as_ref()
        .map_or(request.scheme(), |scheme| scheme.as_str());
    let host = match &filter.hostname {
        Some(hostname) => hostname.as_ref(),
        None => request.host().ok_or(FilterError::MissingHost)?,
    };
    let port = match (filter.port, &filter.scheme) {
        (Some(port), _) => port,
        (None, Some(scheme)) => well_known_port(scheme.as_str()).unwrap_or(listener_port),
        (None, None) => listener_port,
    };
    let path = match &filter.path {
        Some(modifier) => modify_path(request.path(), modifier, matched_prefix)?,
        None => request.path().to_owned(),
    };

    let mut location = format!("{scheme}://{host}");
    if well_known_port(scheme) != Some(port) {
        location.push(':');
        location.push_str(&port.to_string());
    }
    location.push_str(&path);
    if let Some(query) = request.query() {
        location.push('?');
        location.push_str(query);
    }
    // Parsed as a URI so that a malformed hostname or path cannot produce
    // a `Location` that is a valid header but not a URL.
    if let Err(error) = Uri::from_str(&location) {
        return Err(invalid_url("redirect location", location, error.into()));
    }
    match HeaderValue::from_str(&location) {
        Ok(location) => Ok(Redirect {
            status: filter.status.status_code(),
            location,
        }),
        Err(error) => Err(invalid_url("redirect location", location, error.into())),
    }
}

/// The URL `filter` rewrites `request` to; see [`redirect`] for
/// `matched_prefix`.
pub fn rewrite_url(
    request: &RequestHead<'_>,
    filter: &UrlRewrite,
    matched_prefix: Option<&str>,
) -> Result<RewrittenUrl, FilterError> {
    let authority = match &filter.hostname {
        Some(hostname) => match Authority::from_str(hostname) {
            Ok(authority) => Some(authority),
            Err(error) => {
                return Err(invalid_url(
                    "rewritten host",
                    hostname.to_string(),
                    error.into(),
                ));
            }
        },
        None => None,
    };
    let path_and_query = match &filter.path {
        Some(modifier) => {
            let mut path = modify_path(request.path(), modifier, matched_prefix)?;
            if let Some(query) = request.query() {
                path.push('?');
                path.push_str(query);
            }
            match PathAndQuery::from_str(&path) {
                Ok(path_and_query) => Some(path_and_query),
                Err(error) => return Err(invalid_url("rewritten path", path, error.into())),
            }
        }
        None => None,
    };
    Ok(RewrittenUrl {
        authority,
        path_and_query,
    })
}

/// `path` changed by `modifier`. `ReplacePrefixMatch` needs the prefix
/// that matched (else [`FilterError::NoPrefixMatch`]).
pub fn modify_path(
    path: &str,
    modifier: &PathModifier,
    matched_prefix: Option<&str>,
) -> Result<String, FilterError> {
    match modifier {
        PathModifier::ReplaceFullPath(full) => Ok(absolute(full.clone())),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let prefix = matched_prefix.ok_or(FilterError::NoPrefixMatch)?;
            Ok(replace_prefix(path, prefix, replacement))
        }
    }
}

/// Replaces the path segments `prefix` matched with `replacement`. A path
/// that `prefix` does not match on whole segments is returned unchanged.
pub fn replace_prefix(path: &str, prefix: &str, replacement: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let Some(rest) = path
        .strip_prefix(prefix)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    else {
        return path.to_owned();
    };
    let replacement = replacement.trim_end_matches('/');
    let mut out = String::with_capacity(replacement.len() + rest.len() + 1);
    out.push_str(replacement);
    out.push_str(rest);
    absolute(out)
}

/// `path` as an absolute path: the empty path is `/`.
fn absolute(path: String) -> String {
    if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    }
}

fn well_known_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn invalid_url(what: &'static str, value: String, source: http::Error) -> FilterError {
    FilterError::InvalidUrl {
        what,
        value,
        source,
    }
}

// === impl RewrittenUrl ===

impl RewrittenUrl {
    /// Applies the rewrite to a request's URI and headers. A new host goes
    /// into the URI's authority when it has one (HTTP/2, absolute-form) and
    /// into the `Host` header when the request has one or the URI has no
    /// authority (HTTP/1.1 origin-form), so the two never disagree.
    pub fn apply(&self, uri: &mut Uri, headers: &mut HeaderMap) -> Result<(), FilterError> {
        if self.authority.is_none() && self.path_and_query.is_none() {
            return Ok(());
        }
        let mut parts = uri.clone().into_parts();
        if let Some(authority) = &self.authority {
            if headers.contains_key(header::HOST) || parts.authority.is_none() {
                let host = HeaderValue::from_str(authority.as_str()).map_err(|error| {
                    invalid_url("rewritten host", authority.to_string(), error.into())
                })?;
                headers.insert(header::HOST, host);
            }
            if parts.authority.is_some() {
                parts.authority = Some(authority.clone());
            }
        }
        if let Some(path_and_query) = &self.path_and_query {
            parts.path_and_query = Some(path_and_query.clone());
        }
        *uri = Uri::from_parts(parts)
            .map_err(|error| invalid_url("rewritten URI", uri.to_string(), error.into()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;

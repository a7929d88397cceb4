//! One [`RequestMatch`] compiled for matching: regexes built once, path
//! prefixes normalized, duplicate header and query names dropped; and what
//! the Gateway API precedence compares about it ([`Specificity`]).
//!
//! Regular expressions must match the whole path or value, as Envoy's
//! `safe_regex` (and so Istio) does: `/v[0-9]` matches `/v1`, not `/v1/x`.
//! They run over bytes, so a header value that is not UTF-8 can still be
//! matched.

use std::borrow::Cow;
use std::fmt;

use http::{HeaderMap, HeaderName, Method};
use percent_encoding::percent_decode_str;
use regex::bytes::Regex;

use super::config::{PathMatch, RequestMatch, ValueMatch};
use super::request::RequestHead;

/// A [`RequestMatch`] ready to be evaluated against requests.
#[derive(Debug)]
pub(crate) struct CompiledMatch {
    path: PathMatcher,
    headers: Vec<(HeaderName, ValueMatcher)>,
    query_params: Vec<(String, ValueMatcher)>,
    method: Option<Method>,
    specificity: Specificity,
}

#[derive(Debug)]
enum PathMatcher {
    Exact(String),
    /// Without trailing slashes: `/` is stored as the empty prefix.
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

/// What the Gateway API precedence compares between two matches, most
/// significant first; the greater one wins. Route age and name and rule
/// order break the ties that remain (see `table`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Specificity {
    path_kind: PathKind,
    /// Characters of the path value: the prefix without its trailing `/`
    /// (so `/foo/` and `/foo` tie), or the regex pattern (Istio's choice).
    path_len: usize,
    method: bool,
    headers: usize,
    query_params: usize,
}

/// Exact beats prefix beats regex (the Gateway API leaves regex to the
/// implementation; Istio ranks it last, and so do we).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PathKind {
    RegularExpression,
    Prefix,
    Exact,
}

/// A regex in a match that does not compile.
#[derive(Debug)]
pub(crate) struct InvalidRegex {
    pub(crate) field: MatchField,
    pub(crate) pattern: String,
    pub(crate) source: regex::Error,
}

/// Which condition of a match an error is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchField {
    Path,
    Header(HeaderName),
    QueryParam(String),
}

// === impl CompiledMatch ===

impl CompiledMatch {
    pub(crate) fn new(config: &RequestMatch) -> Result<Self, InvalidRegex> {
        let (path, path_kind, path_len) = match &config.path {
            PathMatch::Exact(value) => (
                PathMatcher::Exact(value.clone()),
                PathKind::Exact,
                value.len(),
            ),
            PathMatch::Prefix(value) => {
                let prefix = value.trim_end_matches('/');
                (
                    PathMatcher::Prefix(prefix.to_owned()),
                    PathKind::Prefix,
                    prefix.len(),
                )
            }
            PathMatch::RegularExpression(pattern) => {
                let regex = compile(pattern).map_err(|source| InvalidRegex {
                    field: MatchField::Path,
                    pattern: pattern.clone(),
                    source,
                })?;
                (
                    PathMatcher::Regex(regex),
                    PathKind::RegularExpression,
                    pattern.len(),
                )
            }
        };

        let mut headers: Vec<(HeaderName, ValueMatcher)> = Vec::new();
        for header in &config.headers {
            if headers.iter().any(|(name, _)| *name == header.name) {
                continue;
            }
            let matcher =
                ValueMatcher::new(&header.value, || MatchField::Header(header.name.clone()))?;
            headers.push((header.name.clone(), matcher));
        }

        let mut query_params: Vec<(String, ValueMatcher)> = Vec::new();
        for param in &config.query_params {
            if query_params.iter().any(|(name, _)| *name == param.name) {
                continue;
            }
            let matcher =
                ValueMatcher::new(&param.value, || MatchField::QueryParam(param.name.clone()))?;
            query_params.push((param.name.clone(), matcher));
        }

        let specificity = Specificity {
            path_kind,
            path_len,
            method: config.method.is_some(),
            headers: headers.len(),
            query_params: query_params.len(),
        };
        Ok(Self {
            path,
            headers,
            query_params,
            method: config.method.clone(),
            specificity,
        })
    }

    pub(crate) fn specificity(&self) -> Specificity {
        self.specificity
    }

    /// Whether every condition holds for `request`.
    pub(crate) fn matches(&self, request: &RequestHead<'_>) -> bool {
        if let Some(method) = &self.method
            && method != request.method
        {
            return false;
        }
        if !self.path.matches(request.path()) {
            return false;
        }
        let headers_match = self
            .headers
            .iter()
            .all(|(name, matcher)| header_matches(request.headers, name, matcher));
        if !headers_match {
            return false;
        }
        match request.query() {
            None => self.query_params.is_empty(),
            Some(query) => self.query_params.iter().all(|(name, matcher)| {
                first_query_value(query, name)
                    .is_some_and(|value| matcher.matches(value.as_bytes()))
            }),
        }
    }
}

// === impl PathMatcher ===

impl PathMatcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatcher::Exact(value) => path == value,
            PathMatcher::Prefix(prefix) => prefix_matches(prefix, path),
            PathMatcher::Regex(regex) => regex.is_match(path.as_bytes()),
        }
    }
}

/// Whether `prefix` (without a trailing `/`) matches `path` on whole
/// segments: `/foo` matches `/foo`, `/foo/` and `/foo/bar`, not `/foobar`.
pub(crate) fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

// === impl ValueMatcher ===

impl ValueMatcher {
    fn new(config: &ValueMatch, field: impl FnOnce() -> MatchField) -> Result<Self, InvalidRegex> {
        match config {
            ValueMatch::Exact(value) => Ok(ValueMatcher::Exact(value.clone())),
            ValueMatch::RegularExpression(pattern) => compile(pattern)
                .map(ValueMatcher::Regex)
                .map_err(|source| InvalidRegex {
                    field: field(),
                    pattern: pattern.clone(),
                    source,
                }),
        }
    }

    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatcher::Exact(expected) => value == expected.as_bytes(),
            ValueMatcher::Regex(regex) => regex.is_match(value),
        }
    }
}

/// A header holds if it is present and its value matches; a repeated
/// header is read as one comma-separated value (RFC 9110, section 5.3), as
/// Envoy does.
fn header_matches(headers: &HeaderMap, name: &HeaderName, matcher: &ValueMatcher) -> bool {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let Some(second) = values.next() else {
        return matcher.matches(first.as_bytes());
    };
    let mut joined = Vec::with_capacity(first.len() + 1 + second.len());
    joined.extend_from_slice(first.as_bytes());
    for value in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(value.as_bytes());
    }
    matcher.matches(&joined)
}

/// The percent-decoded value of the first parameter called `name` (the
/// Gateway API recommends the first when a parameter repeats). A parameter
/// without `=` has the empty value.
fn first_query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, str>> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode_str(key).decode_utf8_lossy() == name)
            .then(|| percent_decode_str(value).decode_utf8_lossy())
    })
}

/// Compiles `pattern` so that it must match a whole input.
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    // Compiled alone first: a pattern with unbalanced parentheses such as
    // `a)|(b` would otherwise escape the anchoring group and match anywhere.
    Regex::new(pattern)?;
    Regex::new(&format!("^(?:{pattern})$"))
}

// === impl MatchField ===

impl fmt::Display for MatchField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MatchField::Path => f.write_str("path"),
            MatchField::Header(name) => write!(f, "header {:?}", name.as_str()),
            MatchField::QueryParam(name) => write!(f, "query parameter {name:?}"),
        }
    }
}

#[cfg(test)]
mod tests;

//! The waypoint's route configuration as plain data: what istiod-lite
//! translates from Gateway API `HTTPRoute`s bound to a `Service` parentRef
//! (GAMMA). Field meanings follow kubernetes-sigs/gateway-api `apis/v1`;
//! the pushed message is converted into these types at the xDS edge, so
//! anything that can be malformed in a string (header names and values,
//! methods, status codes, durations) is already a typed value here.
//!
//! Defaults the Gateway API CRD fills in are explicit here: a match without
//! a path is `PathPrefix /` ([`RequestMatch::default`]), a rule without
//! matches gets that one match when its table is built, a redirect without a
//! status code is 302 ([`RedirectStatus::default`]), a mirror without a
//! fraction mirrors everything ([`Fraction::ALL`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::uri::Scheme;
use http::{HeaderName, HeaderValue, Method, StatusCode};

/// A service as the waypoint addresses it: the hostname its clients use
/// (`reviews.bookinfo.svc.cluster.local`) and a port. A route table belongs
/// to one; backends and mirrors point at one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub hostname: Arc<str>,
    pub port: u16,
}

/// One `HTTPRoute` attached to the table's service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    /// `metadata.creationTimestamp`: the older route wins a precedence tie.
    pub creation_timestamp: SystemTime,
    pub rules: Vec<Rule>,
}

/// One rule: any of its matches selects it; then its filters run and the
/// request goes to one of its backends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    /// The rule's optional `name` (unique within its route), for logs.
    pub name: Option<Arc<str>>,
    /// Empty means one match of `PathPrefix /`; the table fills that in.
    pub matches: Vec<RequestMatch>,
    /// Applied in the order given, as the Gateway API asks.
    pub filters: Vec<Filter>,
    /// Empty, or all weights zero: no backend, the caller answers 500
    /// (unless a filter such as a redirect answers first).
    pub backends: Vec<WeightedBackend>,
    pub timeouts: Timeouts,
    pub retry: Option<Retry>,
}

/// Conditions on a request; all of them must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMatch {
    pub path: PathMatch,
    /// Names are case-insensitive; of two entries with the same name only
    /// the first counts (the Gateway API rule).
    pub headers: Vec<HeaderMatch>,
    /// Names are case-sensitive; of two entries with the same name only the
    /// first counts.
    pub query_params: Vec<QueryParamMatch>,
    pub method: Option<Method>,
}

/// How the request path is matched. Paths are compared as they arrive, not
/// decoded or normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The whole path, case-sensitive: `/abc` matches neither `/abc/` nor
    /// `/abcd`.
    Exact(String),
    /// Whole path segments: `/abc` (or `/abc/`, a trailing `/` is ignored)
    /// matches `/abc`, `/abc/` and `/abc/def`, not `/abcd`.
    Prefix(String),
    /// A regular expression in the `regex` crate's RE2-like syntax that must
    /// match the whole path (as Envoy's `safe_regex` does). Ranked below every
    /// prefix match, as Istio does (the Gateway API leaves it to us).
    RegularExpression(String),
}

/// A header condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

/// A query parameter condition; the value is compared percent-decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryParamMatch {
    pub name: String,
    pub value: ValueMatch,
}

/// How a header or query parameter value is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatch {
    Exact(String),
    /// Must match the whole value.
    RegularExpression(String),
}

/// A filter of a rule or of a backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    RequestHeaderModifier(HeaderModifier),
    ResponseHeaderModifier(HeaderModifier),
    RequestRedirect(RequestRedirect),
    UrlRewrite(UrlRewrite),
    RequestMirror(RequestMirror),
}

/// Header edits. The Gateway API allows one action per header name, so the
/// order they are applied in (set, add, remove) only matters for
/// configurations it calls invalid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderModifier {
    /// Replaces every value of the header.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Appends a value after any existing ones.
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// Answer with a redirect instead of forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestRedirect {
    /// `http` or `https`; `None` keeps the request's scheme.
    pub scheme: Option<Scheme>,
    /// `None` keeps the request's host.
    pub hostname: Option<Arc<str>>,
    /// `None` derives the port from the scheme (see [`crate::filter::redirect`]).
    pub port: Option<u16>,
    /// `None` keeps the request's path.
    pub path: Option<PathModifier>,
    pub status: RedirectStatus,
}

/// The redirect status codes the Gateway API allows: 301 and 302 are core,
/// the others extended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedirectStatus {
    MovedPermanently,
    #[default]
    Found,
    SeeOther,
    TemporaryRedirect,
    PermanentRedirect,
}

/// Change the host and/or path before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlRewrite {
    /// Replaces the `Host` header (and the URI's authority, if it has one).
    pub hostname: Option<Arc<str>>,
    pub path: Option<PathModifier>,
}

/// A path rewrite, for redirects and URL rewrites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the part of the path the rule's `PathPrefix` match matched;
    /// only valid on a rule with exactly one match, of type `PathPrefix`.
    ReplacePrefixMatch(String),
}

/// Send a copy of the request to another service and ignore its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestMirror {
    pub backend: ServiceKey,
    pub fraction: Fraction,
}

/// A share of requests, `numerator / denominator` (the Gateway API's
/// `percent: p` is `p / 100`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: u32,
}

/// A backend and its share of the rule's traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightedBackend {
    pub backend: Backend,
    /// Relative weight; zero means no traffic (the Gateway API's default
    /// of 1 is filled in by the translation).
    pub weight: u32,
    /// Applied after the rule's filters, for requests sent to this backend.
    pub filters: Vec<Filter>,
}

/// Where a backend reference leads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    Service(ServiceKey),
    /// A reference the control plane could not resolve (unknown service,
    /// missing port, not permitted). It keeps its weight, so its share of
    /// requests gets 500, as the Gateway API requires.
    Invalid {
        reason: Arc<str>,
    },
}

/// `timeouts`; `None` means no timeout of that kind (the Gateway API's
/// `0s`, "disabled", is translated to `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// The whole exchange with the client, retries included.
    pub request: Option<Duration>,
    /// One attempt to a backend.
    pub backend_request: Option<Duration>,
}

impl Timeouts {
    /// How long the one attempt of a request without retries may wait for
    /// its response: the shorter of the two timeouts, since that attempt
    /// is the whole exchange too. `None`: no limit.
    pub fn single_attempt(&self) -> Option<Duration> {
        match (self.request, self.backend_request) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (one, other) => one.or(other),
        }
    }
}

/// `retry`: which answers to retry, how often, how long to wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    pub codes: Vec<StatusCode>,
    /// Retries after the first attempt; zero disables retries.
    pub attempts: u32,
    /// Base interval of the exponential backoff; `None` is our default.
    pub backoff: Option<Duration>,
}

// === impl Route ===

impl Route {
    /// `<namespace>/<name>`, as logs and errors name a route.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

// === impl RequestMatch ===

impl Default for RequestMatch {
    /// The Gateway API default: `PathPrefix /`, which matches every request.
    fn default() -> Self {
        Self {
            path: PathMatch::Prefix("/".into()),
            headers: Vec::new(),
            query_params: Vec::new(),
            method: None,
        }
    }
}

// === impl RedirectStatus ===

impl RedirectStatus {
    pub fn status_code(self) -> StatusCode {
        match self {
            RedirectStatus::MovedPermanently => StatusCode::MOVED_PERMANENTLY,
            RedirectStatus::Found => StatusCode::FOUND,
            RedirectStatus::SeeOther => StatusCode::SEE_OTHER,
            RedirectStatus::TemporaryRedirect => StatusCode::TEMPORARY_REDIRECT,
            RedirectStatus::PermanentRedirect => StatusCode::PERMANENT_REDIRECT,
        }
    }
}

// === impl Fraction ===

impl Fraction {
    /// Every request (the Gateway API default for a mirror).
    pub const ALL: Fraction = Fraction {
        numerator: 1,
        denominator: 1,
    };

    /// `percent` out of 100.
    pub fn percent(percent: u32) -> Self {
        Fraction {
            numerator: percent,
            denominator: 100,
        }
    }

    /// Whether a request drawn with the uniformly random `random` falls in
    /// this share: exactly `numerator / denominator` of all `u32` values do
    /// (up to rounding); a zero share is no request, a share of at least
    /// one every request.
    pub fn contains(self, random: u32) -> bool {
        if self.numerator == 0 {
            return false;
        }
        if self.numerator >= self.denominator {
            return true;
        }
        // Scale `random` onto [0, denominator) without modulo bias.
        let draw = (u64::from(random) * u64::from(self.denominator)) >> 32;
        draw < u64::from(self.numerator)
    }
}

#[cfg(test)]
mod timeout_tests {
    use super::*;

    #[test]
    fn a_single_attempt_waits_for_the_shorter_timeout() {
        let ms = Duration::from_millis;
        let both = |request, backend_request| Timeouts {
            request,
            backend_request,
        };
        assert_eq!(both(None, None).single_attempt(), None);
        assert_eq!(both(Some(ms(500)), None).single_attempt(), Some(ms(500)));
        assert_eq!(both(None, Some(ms(200))).single_attempt(), Some(ms(200)));
        assert_eq!(
            both(Some(ms(500)), Some(ms(200))).single_attempt(),
            Some(ms(200))
        );
        assert_eq!(
            both(Some(ms(100)), Some(ms(200))).single_attempt(),
            Some(ms(100))
        );
    }
}

//! A service's route table and the choice of route for a request.
//!
//! Building a table checks and compiles its routes once; selecting is a
//! pure function of the table and the request head. Every match of every
//! rule of every route becomes one entry, and the entries are sorted once,
//! at build time, in the Gateway API's precedence order, across routes:
//!
//! 1. an `Exact` path match;
//! 2. a `PathPrefix` match with the most characters;
//! 3. (ours, as Istio's) a `RegularExpression` path match with the longest
//!    pattern;
//! 4. a method match;
//! 5. the most header matches;
//! 6. the most query parameter matches;
//!
//! then, for ties, the oldest route by creation timestamp, the route first
//! in alphabetical order of `{namespace}/{name}`, and within a route the
//! first rule and the first match in list order. Selecting a route is then
//! the first entry that matches the request.

use std::cmp::Ordering;
use std::fmt;
use std::iter;
use std::sync::Arc;

use super::config::{Filter, PathMatch, PathModifier, RequestMatch, Route, Rule, ServiceKey};
use super::matcher::{CompiledMatch, InvalidRegex, MatchField};
use super::request::RequestHead;

/// The routes attached to one service, ready for [`RouteTable::select`].
/// Immutable: a config change builds a new table.
#[derive(Debug)]
pub struct RouteTable {
    service: ServiceKey,
    /// The routes as configured, with rules without matches given their
    /// default match (`PathPrefix /`).
    routes: Vec<Route>,
    /// Every match of every rule of every route, highest precedence first.
    entries: Vec<Entry>,
}

/// One match of one rule, with where it came from.
#[derive(Debug)]
struct Entry {
    route: usize,
    rule: usize,
    request_match: usize,
    matcher: CompiledMatch,
}

/// The outcome of [`RouteTable::select`].
#[derive(Clone, Copy, Debug)]
pub enum Selection<'t> {
    /// This rule of this route handles the request.
    Matched(Selected<'t>),
    /// Routes are attached but none matches: answer 404.
    NoRoute,
    /// No route is attached: forward to the service as it is.
    NoRoutes,
}

/// The route, rule and match that won.
#[derive(Clone, Copy, Debug)]
pub struct Selected<'t> {
    pub route: &'t Route,
    pub rule: &'t Rule,
    /// Position of `rule` in the route's rules.
    pub rule_index: usize,
    /// The match that selected the rule.
    pub request_match: &'t RequestMatch,
    /// Position of `request_match` in the rule's matches.
    pub match_index: usize,
}

/// A route table that cannot be built; it names the route and rule at
/// fault. The table is all-or-nothing, so the caller keeps serving with the
/// previous one.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Boxed: the error is rare, and this keeps `Result`s small.
    #[error(transparent)]
    InvalidRegex(Box<InvalidRegexError>),
    #[error(
        "HTTPRoute {route} {rule}: a ReplacePrefixMatch path modifier needs the rule to have exactly \
         one match, of type PathPrefix; give it one, or use ReplaceFullPath"
    )]
    ReplacePrefixNeedsOnePrefixMatch { route: String, rule: RuleName },
    #[error(
        "HTTPRoute {route} {rule}: RequestRedirect and URLRewrite cannot be combined on one rule or \
         backend; keep one of them"
    )]
    RedirectWithRewrite { route: String, rule: RuleName },
}

/// A regular expression in a match that does not compile.
#[derive(Debug, thiserror::Error)]
#[error(
    "HTTPRoute {route} {rule} match {match_index}: the {field} regular expression {pattern:?} does \
     not compile; write it in RE2 syntax (as the Rust `regex` crate reads it)"
)]
pub struct InvalidRegexError {
    pub route: String,
    pub rule: RuleName,
    pub match_index: usize,
    pub field: MatchField,
    pub pattern: String,
    #[source]
    pub source: regex::Error,
}

/// A rule as errors name it: its position, and its name if it has one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleName {
    pub index: usize,
    pub name: Option<Arc<str>>,
}

// === impl RouteTable ===

impl RouteTable {
    /// Checks and compiles `routes` for `service`. Regexes are compiled
    /// here, once; an invalid one fails the whole table.
    pub fn new(service: ServiceKey, mut routes: Vec<Route>) -> Result<Self, BuildError> {
        for rule in routes.iter_mut().flat_map(|route| route.rules.iter_mut()) {
            if rule.matches.is_empty() {
                rule.matches.push(RequestMatch::default());
            }
        }
        let mut entries = Vec::new();
        for (route_index, route) in routes.iter().enumerate() {
            for (rule_index, rule) in route.rules.iter().enumerate() {
                let rule_name = || RuleName {
                    index: rule_index,
                    name: rule.name.clone(),
                };
                check_filters(rule).map_err(|check| check.into_error(route.key(), rule_name()))?;
                for (match_index, request_match) in rule.matches.iter().enumerate() {
                    let matcher = CompiledMatch::new(request_match).map_err(|invalid| {
                        let InvalidRegex {
                            field,
                            pattern,
                            source,
                        } = invalid;
                        BuildError::InvalidRegex(Box::new(InvalidRegexError {
                            route: route.key(),
                            rule: rule_name(),
                            match_index,
                            field,
                            pattern,
                            source,
                        }))
                    })?;
                    entries.push(Entry {
                        route: route_index,
                        rule: rule_index,
                        request_match: match_index,
                        matcher,
                    });
                }
            }
        }
        entries.sort_by(|a, b| precedence(a, b, &routes));
        Ok(Self {
            service,
            routes,
            entries,
        })
    }

    /// A table without routes: every request goes to the service.
    pub fn empty(service: ServiceKey) -> Self {
        Self {
            service,
            routes: Vec::new(),
            entries: Vec::new(),
        }
    }

    pub fn service(&self) -> &ServiceKey {
        &self.service
    }

    /// The routes, in the order given, rules without matches having their
    /// default match.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The rule that handles `request`, by Gateway API precedence.
    pub fn select(&self, request: &RequestHead<'_>) -> Selection<'_> {
        if self.routes.is_empty() {
            return Selection::NoRoutes;
        }
        let Some(entry) = self.entries.iter().find(|e| e.matcher.matches(request)) else {
            return Selection::NoRoute;
        };
        // Entry indices were taken from `routes` when it was built, and
        // neither changes afterwards.
        let route = &self.routes[entry.route];
        let rule = &route.rules[entry.rule];
        Selection::Matched(Selected {
            route,
            rule,
            rule_index: entry.rule,
            request_match: &rule.matches[entry.request_match],
            match_index: entry.request_match,
        })
    }
}

/// Orders `a` before `b` when it takes precedence.
fn precedence(a: &Entry, b: &Entry, routes: &[Route]) -> Ordering {
    let (route_a, route_b) = (&routes[a.route], &routes[b.route]);
    b.matcher
        .specificity()
        .cmp(&a.matcher.specificity())
        .then_with(|| route_a.creation_timestamp.cmp(&route_b.creation_timestamp))
        .then_with(|| route_key_bytes(route_a).cmp(route_key_bytes(route_b)))
        .then_with(|| a.route.cmp(&b.route))
        .then_with(|| a.rule.cmp(&b.rule))
        .then_with(|| a.request_match.cmp(&b.request_match))
}

/// `{namespace}/{name}` without building the string: the Gateway API
/// compares that string, which is not the same as comparing namespace then
/// name (`a-b/x` sorts before `a/y`, since `-` sorts before `/`).
fn route_key_bytes(route: &Route) -> impl Iterator<Item = u8> + '_ {
    route
        .namespace
        .bytes()
        .chain(iter::once(b'/'))
        .chain(route.name.bytes())
}

// === impl Selection ===

impl<'t> Selection<'t> {
    pub fn matched(self) -> Option<Selected<'t>> {
        match self {
            Selection::Matched(selected) => Some(selected),
            Selection::NoRoute | Selection::NoRoutes => None,
        }
    }
}

// === impl Selected ===

impl<'t> Selected<'t> {
    /// The configured prefix of the `PathPrefix` match that selected the
    /// rule, which a `ReplacePrefixMatch` modifier replaces.
    pub fn matched_prefix(&self) -> Option<&'t str> {
        match &self.request_match.path {
            PathMatch::Prefix(prefix) => Some(prefix),
            PathMatch::Exact(_) | PathMatch::RegularExpression(_) => None,
        }
    }
}

// === impl RuleName ===

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "rule {} ({name:?})", self.index),
            None => write!(f, "rule {}", self.index),
        }
    }
}

/// A problem with a rule's filters, before it is given the route's name.
#[derive(Debug)]
enum FilterCheck {
    ReplacePrefixNeedsOnePrefixMatch,
    RedirectWithRewrite,
}

impl FilterCheck {
    fn into_error(self, route: String, rule: RuleName) -> BuildError {
        match self {
            FilterCheck::ReplacePrefixNeedsOnePrefixMatch => {
                BuildError::ReplacePrefixNeedsOnePrefixMatch { route, rule }
            }
            FilterCheck::RedirectWithRewrite => BuildError::RedirectWithRewrite { route, rule },
        }
    }
}

/// The rules the filters themselves rely on: `ReplacePrefixMatch` needs
/// the one prefix it replaces, and a redirect cannot also rewrite.
fn check_filters(rule: &Rule) -> Result<(), FilterCheck> {
    let filter_lists =
        iter::once(&rule.filters).chain(rule.backends.iter().map(|backend| &backend.filters));
    let mut replaces_prefix = false;
    for filters in filter_lists {
        let redirects = filters
            .iter()
            .any(|f| matches!(f, Filter::RequestRedirect(_)));
        let rewrites = filters.iter().any(|f| matches!(f, Filter::UrlRewrite(_)));
        if redirects && rewrites {
            return Err(FilterCheck::RedirectWithRewrite);
        }
        replaces_prefix |= filters.iter().any(|filter| {
            let path = match filter {
                Filter::RequestRedirect(redirect) => redirect.path.as_ref(),
                Filter::UrlRewrite(rewrite) => rewrite.path.as_ref(),
                _ => None,
            };
            matches!(path, Some(PathModifier::ReplacePrefixMatch(_)))
        });
    }
    let one_prefix_match =
        matches!(rule.matches.as_slice(), [only] if matches!(only.path, PathMatch::Prefix(_)));
    if replaces_prefix && !one_prefix_match {
        return Err(FilterCheck::ReplacePrefixNeedsOnePrefixMatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! Builders for route config and requests, shared by the unit tests.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::route::{
    HeaderMatch, PathMatch, QueryParamMatch, RequestHead, RequestMatch, Route, RouteTable, Rule,
    Selection, ServiceKey, ValueMatch,
};

pub(crate) fn service() -> ServiceKey {
    ServiceKey {
        hostname: "reviews.bookinfo.svc.cluster.local".into(),
        port: 9080,
    }
}

/// `secs` seconds after the epoch: a creation timestamp.
pub(crate) fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

pub(crate) fn route(namespace: &str, name: &str, created: u64, rules: Vec<Rule>) -> Route {
    Route {
        namespace: namespace.into(),
        name: name.into(),
        creation_timestamp: at(created),
        rules,
    }
}

pub(crate) fn rule(matches: Vec<RequestMatch>) -> Rule {
    Rule {
        matches,
        ..Rule::default()
    }
}

pub(crate) fn table(routes: Vec<Route>) -> RouteTable {
    RouteTable::new(service(), routes).unwrap()
}

pub(crate) fn exact(path: &str) -> RequestMatch {
    with_path(PathMatch::Exact(path.into()))
}

pub(crate) fn prefix(path: &str) -> RequestMatch {
    with_path(PathMatch::Prefix(path.into()))
}

pub(crate) fn regex(pattern: &str) -> RequestMatch {
    with_path(PathMatch::RegularExpression(pattern.into()))
}

fn with_path(path: PathMatch) -> RequestMatch {
    RequestMatch {
        path,
        ..RequestMatch::default()
    }
}

/// Adds conditions to a [`RequestMatch`] in a chain.
pub(crate) trait MatchExt {
    fn header(self, name: &str, value: &str) -> Self;
    fn header_regex(self, name: &str, pattern: &str) -> Self;
    fn query(self, name: &str, value: &str) -> Self;
    fn query_regex(self, name: &str, pattern: &str) -> Self;
    fn method(self, method: Method) -> Self;
}

impl MatchExt for RequestMatch {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(HeaderMatch {
            name: HeaderName::try_from(name).unwrap(),
            value: ValueMatch::Exact(value.into()),
        });
        self
    }

    fn header_regex(mut self, name: &str, pattern: &str) -> Self {
        self.headers.push(HeaderMatch {
            name: HeaderName::try_from(name).unwrap(),
            value: ValueMatch::RegularExpression(pattern.into()),
        });
        self
    }

    fn query(mut self, name: &str, value: &str) -> Self {
        self.query_params.push(QueryParamMatch {
            name: name.into(),
            value: ValueMatch::Exact(value.into()),
        });
        self
    }

    fn query_regex(mut self, name: &str, pattern: &str) -> Self {
        self.query_params.push(QueryParamMatch {
            name: name.into(),
            value: ValueMatch::RegularExpression(pattern.into()),
        });
        self
    }

    fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }
}

/// An owned request head, for tests to borrow a [`RequestHead`] from.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
}

/// A `GET` of `uri` (origin-form, or absolute-form for HTTP/2 style).
pub(crate) fn get(uri: &str) -> Request {
    request(Method::GET, uri, &[])
}

pub(crate) fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::try_from(*name).unwrap(),
            HeaderValue::try_from(*value).unwrap(),
        );
    }
    Request {
        method,
        uri: uri.parse().unwrap(),
        headers: map,
    }
}

impl Request {
    pub(crate) fn head(&self) -> RequestHead<'_> {
        RequestHead::new(&self.method, &self.uri, &self.headers)
    }
}

/// Which route (`ns/name`), rule and match `table` selects for `request`;
/// `None` for [`Selection::NoRoute`]. Panics on [`Selection::NoRoutes`].
pub(crate) fn winner(table: &RouteTable, request: &Request) -> Option<(String, usize, usize)> {
    match table.select(&request.head()) {
        Selection::Matched(selected) => Some((
            selected.route.key(),
            selected.rule_index,
            selected.match_index,
        )),
        Selection::NoRoute => None,
        Selection::NoRoutes => panic!("the table has routes; NoRoutes is wrong"),
    }
}

/// `(route, rule, match)` as [`winner`] returns it.
pub(crate) fn won(
    route: &str,
    rule: usize,
    request_match: usize,
) -> Option<(String, usize, usize)> {
    Some((route.to_owned(), rule, request_match))
}

/// The middle of the `i`th of `samples` equal slices of the `u32` range:
/// random numbers spread so evenly that shares come out exact.
pub(crate) fn spread(i: u32, samples: u32) -> u32 {
    let middle = ((2 * u64::from(i) + 1) << 32) / (2 * u64::from(samples));
    u32::try_from(middle).unwrap()
}

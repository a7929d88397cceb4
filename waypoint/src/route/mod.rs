//! Routing: a service's `HTTPRoute`s as a [`RouteTable`], and the choice of
//! rule for a request as a pure function over it ([`RouteTable::select`]).
//! Nothing here does I/O or reads a clock; the caller brings the request
//! head and, for weighted choices, the random number. The table is built
//! from the pushed `WaypointRoutes` resource with `TryFrom` (`convert`),
//! where every field is checked.

mod backend;
mod config;
mod convert;
mod matcher;
mod request;
mod table;

pub use backend::choose_backend;
pub use config::{
    Backend, Filter, Fraction, HeaderMatch, HeaderModifier, PathMatch, PathModifier,
    QueryParamMatch, RedirectStatus, RequestMatch, RequestMirror, RequestRedirect, Retry, Route,
    Rule, ServiceKey, Timeouts, UrlRewrite, ValueMatch, WeightedBackend,
};
pub(crate) use convert::is_precise_hostname;
pub use convert::{ConvertError, InvalidField, Problem, routes_from_proto};
pub use matcher::MatchField;
pub use request::RequestHead;
pub use table::{BuildError, InvalidRegexError, RouteTable, RuleName, Selected, Selection};

//! The waypoint, the optional per-namespace L7 proxy: it sits in the HBONE
//! path of a namespace's services and routes, retries, times out,
//! authorizes and traces their HTTP requests. Its decisions (which rule a
//! request matches, what a filter does to it, which backend it goes to)
//! are pure functions over config and request data, unit-tested without
//! sockets; the data path around them must never wait on the control
//! plane, only read the last config snapshot it was given.
//!
//! # Layout
//!
//! - `route`: the route configuration translated from Gateway API
//!   `HTTPRoute`s, one [`route::RouteTable`] per service, built with
//!   `TryFrom` from the pushed `WaypointRoutes` resource (every field
//!   checked there); request matching with Gateway API precedence;
//!   weighted backend choice.
//! - `filter`: the `HTTPRoute` filters as functions over request and
//!   response heads: header modifiers, redirects, URL rewrites.
//! - `located`: [`located::Located`], a field's problem and the way down
//!   to it, the error of every resource conversion.
//! - `authz`: L7 `AuthorizationPolicy`, one [`authz::ServicePolicies`] per
//!   service, built with `TryFrom` from the pushed `WaypointAuthorization`
//!   resource; [`authz::evaluate`] decides a request with Istio's
//!   precedence (DENY, then ALLOW; AUDIT and dry-run only reported).

pub mod authz;
pub mod filter;
pub mod located;
pub mod route;

#[cfg(test)]
mod testing;

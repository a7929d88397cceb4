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
//! - `fault`: fault injection from Istio `VirtualService` `fault`, one
//!   [`fault::ServiceFaults`] per service, built with `TryFrom` from the
//!   pushed `WaypointFaults` resource; which delay or abort a request gets,
//!   with the dice passed in.
//! - `balance`: the endpoint of a service a request goes to (least
//!   request by power of two choices, round robin, random) as a pure
//!   function of the requests in flight, and [`balance::BackendPolicy`],
//!   a service's `DestinationRule` policy from the pushed
//!   `WaypointBackendPolicy` resource.
//! - `breaker`: circuit breaking on a service's upstream connections
//!   (`maxConnections`, `http1MaxPendingRequests`,
//!   `maxRequestsPerConnection`): whether a request opens a connection,
//!   waits for one or is refused, and whether a connection is reused, as
//!   pure functions of the pool's counts.
//! - `outlier`: outlier detection, which ejects endpoints after
//!   consecutive failures and brings them back with backoff, with time
//!   passed in.
//! - `normalize`: request path normalization (RFC 3986, Istio's BASE)
//!   before policy and routing see the path.
//! - `snapshot`: routes and policies as one immutable [`snapshot::WaypointConfig`]
//!   the data path reads; the pure `apply_*` functions that build the next.
//! - `xds`: the handler of the delta ADS stream: `Address` into the shared
//!   `workload` state, the two waypoint types into the snapshot, NACKs for
//!   what does not convert.
//! - `proxy`: the data path: HBONE in, HTTP/1.1 and HTTP/2 (or TCP
//!   passthrough) on each tunnel, the request phases, WebSocket upgrades,
//!   upstream connections through HBONE to each endpoint's ztunnel, one
//!   access-log event per request (and per TCP passthrough).
//! - `metrics`: Istio's request metrics (`istio_requests_total`, ...) and
//!   TCP metrics (`istio_tcp_*`, for passthrough) with Istio's labels; the
//!   pure label building and Envoy's response flags.
//! - `retry`: which requests may be replayed, the jittered backoff and
//!   the per-service retry budget, all with time passed in.
//! - `trace`: OpenTelemetry spans (a server span per request, a client
//!   span per attempt), W3C `traceparent` continued or started, sampling;
//!   exported by `telemetry::otlp` when an OTLP endpoint is set.
//! - `config`: flags and environment, with Istio's variable names.
//! - `fast_map`: the hash map of the request path's lookups.
//! - `admin`: the admin server's pages (15000, loopback): the services
//!   served with their endpoints, routes and policies, the certificate,
//!   the control-plane connection, the log filter.
//! - `app`: the composition root and the drain protocol; `main.rs` adds
//!   only the runtime, logging and signals.

pub mod admin;
pub mod app;
pub mod authz;
pub mod balance;
pub mod breaker;
pub mod config;
mod fast_map;
pub mod fault;
pub mod filter;
pub mod located;
pub mod metrics;
pub mod normalize;
pub mod outlier;
pub mod proxy;
pub mod retry;
pub mod route;
pub mod snapshot;
pub mod trace;
pub mod xds;

#[cfg(test)]
mod testing;

//! ztunnel, the node proxy: captures enrolled pods' TCP traffic, carries it
//! to the destination node inside HBONE, and enforces L4 authorization on the
//! receiving side. It must never let a byte of an enrolled pod's traffic
//! cross the node in plaintext to another enrolled pod, and never wait on the
//! control plane on the data path.
//!
//! # Layout
//!
//! - `config`: flags and environment, with Istio's variable names.
//! - `state`: workloads, services and policies as immutable snapshots,
//!   converted from the pushed xDS resources at the edge.
//! - `authz`: L4 authorization, a pure function of policies and connection.
//! - `capture`: in-pod capture: pod network namespaces, listeners and marked
//!   sockets in them, and the nftables redirection rules.
//! - `xds`: the handler that turns pushed resources into state snapshots.
//! - `proxy`: one local pod's data path: inbound HBONE (15008), inbound
//!   plaintext (15006), outbound (15001) and SOCKS5 (15080), with route
//!   resolution as a pure function and one access-log event per connection.
//! - `pods`: which local pods to serve (a pure plan from the snapshot) and
//!   starting or stopping each one's listeners, rules and proxy.
//! - `connections`: every open connection node-wide, for `/connections`,
//!   drain, closing what a policy change no longer allows, and metrics.
//! - `metrics`: Istio's `istio_tcp_*` metrics and labels.
//! - `admin`: the admin (15000), metrics (15020) and readiness (15021)
//!   pages.
//! - `malloc`: glibc's allocator tuned for bulk data (the crate's only
//!   unsafe code).
//! - `app`: the composition root and the drain protocol; `main.rs` adds
//!   only the runtime, logging and signals.

pub mod admin;
pub mod app;
pub mod authz;
pub mod capture;
pub mod config;
pub mod connections;
pub mod malloc;
pub mod metrics;
pub mod pods;
pub mod proxy;
/// The mesh state lives in its own crate, shared with the waypoint.
pub use workload as state;
pub mod xds;

//! Logging, the small HTTP servers (admin, metrics, readiness) and OTLP
//! span export shared by every binary of the mesh.
//!
//! This crate must never sit on a data path's critical section: a log line
//! or a status page never takes a lock the data path holds, and the servers
//! here run their own accept loops on whatever runtime the binary gives
//! them.
//!
//! # Layout
//!
//! - `admin`: what the admin pages of ztunnel and the waypoint share: the
//!   control plane and certificate views, RFC 3339 timestamps, `/logging`
//!   and `/metrics`.
//! - `http`: serve a synchronous handler (`Request<()>` in, `Response<String>`
//!   out) over HTTP/1.1 until a shutdown signal; helpers for JSON and text.
//! - `logging`: install the global subscriber with a filter that `/logging`
//!   can change while running.
//! - `otlp`: finished spans queued without waiting and exported in batches
//!   to an OTLP/gRPC collector by a background task.

pub mod admin;
pub mod http;
pub mod logging;
pub mod otlp;

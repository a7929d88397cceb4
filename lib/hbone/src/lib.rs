//! HBONE: TCP streams carried as HTTP/2 `CONNECT` streams over mutual TLS.
//!
//! A client opens (or reuses) one TLS connection per source identity,
//! destination and expected peer identities, and multiplexes many tunnels on
//! it as HTTP/2 streams. A server accepts TLS, learns the peer's SPIFFE
//! identity from the handshake, and hands each `CONNECT` to a handler that
//! decides (200, 401, 400, 503). Once accepted, a stream is a byte pipe.
//!
//! This crate knows nothing about workloads, services or policy: callers say
//! which certificate to present, where to connect, and whom to expect.
//!
//! # Layout
//!
//! - [`settings`]: HTTP/2 windows, frame sizes and limits, shared by both ends.
//! - [`tunnel`]: [`Tunnel`], an HTTP/2 stream as `AsyncRead + AsyncWrite`.
//! - [`copy`]: bidirectional copy with half-close and adaptive buffers.
//! - [`tunnel_copy`]: the same between a [`Tunnel`] and a stream, zero-copy.
//! - [`server`]: TLS + HTTP/2 accept loop and the [`ConnectHandler`] contract.
//! - [`pool`]: the client, pooling HTTP/2 connections.
//! - `coalesce`: the TLS stream under HTTP/2, written to the socket once
//!   per flush.
//! - [`connector`]: how the pool opens TCP (a pod's netns, a socket mark).
//! - [`error`]: what went wrong, and where.
//! - [`workers`]: thread-per-core serving, each connection on one thread.

mod coalesce;
pub mod connector;
pub mod copy;
pub mod error;
pub mod pool;
pub mod server;
pub mod settings;
pub mod tunnel;
pub mod tunnel_copy;
pub mod workers;

pub use connector::{ConnectFuture, Connector, DirectConnector};
pub use copy::copy_bidirectional;
pub use error::Error;
pub use pool::{ConnectRequest, Pool, PoolConfig};
pub use server::{ConnectHandler, InboundConnect, Rejection, Server, ServerConfig};
pub use settings::H2Settings;
pub use tunnel::Tunnel;
pub use tunnel_copy::copy_tunnel;
pub use workers::{Placement, WorkerId, Workers, current_worker};

/// The port HBONE listens on, in pods and on waypoints.
pub const HBONE_PORT: u16 = 15008;

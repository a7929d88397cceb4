//! Delta ADS (`envoy.service.discovery.v3.AggregatedDiscoveryService/
//! DeltaAggregatedResources`) client and server plumbing, generic over
//! resource types: versions, nonces, subscriptions, ACK and NACK.
//!
//! The control plane puts resources into a [`ResourceStore`] by type URL and
//! name and serves them with a [`DeltaAdsServer`]; proxies follow them with a
//! [`DeltaClient`] and a [`ResourceHandler`] of their own. Resources travel as
//! `prost_types::Any`: this crate must never know what a workload, a policy or
//! a route is, and never decodes a resource body.
//!
//! The proxies' side of the control plane connection lives here too: the TLS
//! channel to istiod (or istiod-lite), the bearer token sent on every stream
//! and request, and the CA client that obtains workload certificates.
//!
//! # Layout
//!
//! - [`store`]: resources with content-derived versions, published as
//!   immutable snapshots plus a log of recent changes.
//! - [`server`]: the tonic service; one task per stream owning that stream's
//!   subscriptions, versions and nonces.
//! - [`stats`]: the server's counters and push latency histogram, in plain
//!   atomics for the control plane to export.
//! - [`client`]: the reconnecting client that hands responses to a handler
//!   and ACKs or NACKs them.
//! - [`channel`]: the lazy gRPC channel to the control plane: TLS 1.3 and
//!   ALPN `h2` to `XDS_ADDRESS` / `CA_ADDRESS`, trusting only the configured
//!   root, HTTP/2 keepalive.
//! - [`token`]: the bearer token (`AUTH_TOKEN`), read afresh for every
//!   stream and request.
//! - [`ca_client`]: `GrpcCaClient`, the `CaClient` that sends
//!   `CreateCertificate` as Istio's ztunnel does and checks what it gets.

pub mod ca_client;
pub mod channel;
pub mod client;
pub mod server;
pub mod stats;
pub mod store;
pub mod token;

pub use ca_client::{CaClientConfig, CaClientError, GrpcCaClient, ResponseError};
pub use channel::{
    AddressError, ChannelConfig, ChannelError, ControlPlaneAddress, ControlPlaneService, Host,
};
pub use client::{
    ClientConfig, ClientError, ClientStatus, DeltaClient, Rejection, ResourceHandler,
};
pub use server::{DeltaAdsServer, StreamError};
pub use stats::{PUSH_LATENCY_BUCKETS, ServerStats, StatsSnapshot};
pub use store::{ApplyOutcome, ResourceStore, StoreError, StoredResource};
pub use token::{TokenError, TokenSource, insert_bearer};

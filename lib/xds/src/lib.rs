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

pub mod client;
pub mod server;
pub mod stats;
pub mod store;

pub use client::{
    ClientConfig, ClientError, ClientStatus, DeltaClient, Rejection, ResourceHandler,
};
pub use server::{DeltaAdsServer, StreamError};
pub use stats::{PUSH_LATENCY_BUCKETS, ServerStats, StatsSnapshot};
pub use store::{ApplyOutcome, ResourceStore, StoreError, StoredResource};

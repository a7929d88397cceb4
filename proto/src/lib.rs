//! Generated protobuf and gRPC types for the APIs we share with Istio and
//! Envoy: the workload and authorization resources that the control plane
//! pushes to ztunnel, the delta aggregated discovery service that carries
//! them, and Istio's certificate signing service; and the waypoint's
//! configuration, an API of our own carried on the same stream. The
//! `.proto` files under `proto/` are our own, written to be wire-compatible
//! with the public definitions named at the top of each file (except
//! `mesh/`, which has no upstream); `build.rs` compiles them with protox, so
//! no `protoc` is needed.
//!
//! This crate must never contain hand-written logic: no conversions,
//! validation, defaults or helpers beyond type URL constants. Generated types
//! stop at the edge; the crates that use them convert into their own domain
//! types with `TryFrom`.
//!
//! # Layout
//!
//! - [`workload`]: `istio.workload`, the `Address` resource (a `Workload` or a
//!   `Service`) and everything it refers to.
//! - [`security`]: `istio.security`, the L4 `Authorization` resource.
//! - [`ca`]: `istio.v1.auth`, `IstioCertificateService` with its client
//!   (`ca::istio_certificate_service_client`) and server
//!   (`ca::istio_certificate_service_server`).
//! - [`discovery`]: `envoy.service.discovery.v3`, the delta discovery messages
//!   and `AggregatedDiscoveryService` (delta method only) with client and server.
//! - [`core`]: `envoy.config.core.v3`, the `Node` a discovery client presents.
//! - [`rpc`]: `google.rpc`, the `Status` carried by a NACK.
//! - [`waypoint`]: `mesh.waypoint.v1`, ours: the `WaypointRoutes` resource
//!   (a service port's `HTTPRoute`s, resolved by the control plane) and the
//!   `WaypointAuthorization` resource (a service's L7
//!   `AuthorizationPolicy`s), the `WaypointFaults` resource (a
//!   service's fault injection from `VirtualService`s) and the
//!   `WaypointBackendPolicy` resource (a service's load balancing, limits
//!   and outlier detection from a `DestinationRule`).
//! - [`otlp`]: `opentelemetry.proto.*`, the OTLP trace model
//!   ([`otlp::trace`], [`otlp::common`], [`otlp::resource`]) and the
//!   collector's `TraceService` with client and server
//!   ([`otlp::collector`]), as Jaeger and the OpenTelemetry Collector
//!   serve it on 4317.
//!
//! Well-known types (`Any`, `Struct`, `Duration`, `Empty`, wrappers) are
//! [`prost_types`]'s. Every message implements [`prost::Name`], so
//! `prost_types::Any::from_msg` and `to_msg` work with the type URLs below.
//! Protobuf maps are `BTreeMap`s, so a message always encodes to the same
//! bytes.
//!
//! The generated clients take any `tonic::client::GrpcService`; this crate
//! has no transport of its own.

/// Type URL of [`workload::Address`] on the discovery stream.
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";

/// Type URL of [`security::Authorization`] on the discovery stream.
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";

/// Type URL of [`waypoint::WaypointRoutes`] on the discovery stream.
pub const WAYPOINT_ROUTES_TYPE_URL: &str = "type.googleapis.com/mesh.waypoint.v1.WaypointRoutes";

/// Type URL of [`waypoint::WaypointAuthorization`] on the discovery stream.
pub const WAYPOINT_AUTHORIZATION_TYPE_URL: &str =
    "type.googleapis.com/mesh.waypoint.v1.WaypointAuthorization";

/// Type URL of [`waypoint::WaypointFaults`] on the discovery stream.
pub const WAYPOINT_FAULTS_TYPE_URL: &str = "type.googleapis.com/mesh.waypoint.v1.WaypointFaults";

/// Type URL of [`waypoint::WaypointBackendPolicy`] on the discovery stream.
pub const WAYPOINT_BACKEND_POLICY_TYPE_URL: &str =
    "type.googleapis.com/mesh.waypoint.v1.WaypointBackendPolicy";

pub use generated::envoy::config::core::v3 as core;
pub use generated::envoy::service::discovery::v3 as discovery;
pub use generated::google::rpc;
pub use generated::istio::security;
pub use generated::istio::v1::auth as ca;
pub use generated::istio::workload;
pub use generated::mesh::waypoint::v1 as waypoint;

/// OTLP, grouped as the OpenTelemetry packages are.
pub mod otlp {
    pub use super::generated::opentelemetry::proto::collector::trace::v1 as collector;
    pub use super::generated::opentelemetry::proto::common::v1 as common;
    pub use super::generated::opentelemetry::proto::resource::v1 as resource;
    pub use super::generated::opentelemetry::proto::trace::v1 as trace;
}

/// The generated code, nested by protobuf package because prost refers to
/// other packages with relative `super::` paths. Re-exported above under
/// short names.
///
/// Lints are relaxed here only: the package modules are `pub` but reached
/// through the re-exports (`unreachable_pub`), and the code is not ours to
/// restyle (`clippy::all`; today it trips `large_enum_variant` on oneofs).
#[allow(unreachable_pub, missing_debug_implementations, clippy::all)]
mod generated {
    pub mod istio {
        pub mod workload {
            tonic::include_proto!("istio.workload");
        }
        pub mod security {
            tonic::include_proto!("istio.security");
        }
        pub mod v1 {
            pub mod auth {
                tonic::include_proto!("istio.v1.auth");
            }
        }
    }
    pub mod envoy {
        pub mod config {
            pub mod core {
                pub mod v3 {
                    tonic::include_proto!("envoy.config.core.v3");
                }
            }
        }
        pub mod service {
            pub mod discovery {
                pub mod v3 {
                    tonic::include_proto!("envoy.service.discovery.v3");
                }
            }
        }
    }
    pub mod google {
        pub mod rpc {
            tonic::include_proto!("google.rpc");
        }
    }
    pub mod mesh {
        pub mod waypoint {
            pub mod v1 {
                tonic::include_proto!("mesh.waypoint.v1");
            }
        }
    }
    pub mod opentelemetry {
        pub mod proto {
            pub mod collector {
                pub mod trace {
                    pub mod v1 {
                        tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
                    }
                }
            }
            pub mod common {
                pub mod v1 {
                    tonic::include_proto!("opentelemetry.proto.common.v1");
                }
            }
            pub mod resource {
                pub mod v1 {
                    tonic::include_proto!("opentelemetry.proto.resource.v1");
                }
            }
            pub mod trace {
                pub mod v1 {
                    tonic::include_proto!("opentelemetry.proto.trace.v1");
                }
            }
        }
    }
}

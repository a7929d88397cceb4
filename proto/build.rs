//! Compiles `proto/**/*.proto` with protox (pure Rust, no `protoc`) and
//! generates prost messages plus tonic clients and servers into `OUT_DIR`.

use std::path::Path;

/// Every .proto we own, relative to `proto/`. Imports of
/// `google/protobuf/*.proto` resolve to protox's built-in copies.
const PROTOS: &[&str] = &[
    "istio/workload/workload.proto",
    "istio/security/authorization.proto",
    "istio/v1/auth/ca.proto",
    "envoy/config/core/v3/base.proto",
    "envoy/service/discovery/v3/discovery.proto",
    "envoy/service/discovery/v3/ads.proto",
    "google/rpc/status.proto",
    "mesh/waypoint/v1/waypoint.proto",
    "opentelemetry/proto/collector/trace/v1/trace_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    println!("cargo:rerun-if-changed={}", root.display());

    // The set includes the well-known types we import: prost needs their
    // descriptors to derive traits, and maps them to `prost_types` rather
    // than generating them.
    let fds = protox::compile(PROTOS.iter().map(|p| root.join(p)), [root])?;

    let mut config = tonic_prost_build::Config::new();
    // `prost::Name` on every message, so `prost_types::Any::from_msg` works
    // and type URLs come from one place.
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    // Ordered maps make encoding deterministic: the same resource always
    // yields the same bytes, so versions derived from a hash of the bytes
    // only change when the content does.
    config.btree_map(["."]);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Keep generated clients free of `tonic::transport`: callers bring
        // their own channel (any `GrpcService`).
        .build_transport(false)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

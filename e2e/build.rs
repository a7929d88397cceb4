//! Compiles the sample apps' `.proto` (`proto/mesh/sample/v1/echo.proto`)
//! with protox, as the `proto` crate does for the mesh's APIs, into a
//! prost message set plus a tonic client and server in `OUT_DIR`. It lives
//! here, not in `proto`, because only the test apps speak it.

use std::path::Path;

const PROTOS: &[&str] = &["mesh/sample/v1/echo.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(PROTOS.iter().map(|p| root.join(p)), [root])?;
    // Ordered maps, so that a reply's metadata prints in a stable order.
    let mut config = tonic_prost_build::Config::new();
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The client brings tonic's own channel (echo-grpc's clients are
        // plain h2c), so the generated `connect` helpers are not needed.
        .build_transport(false)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}

//! The control plane binary: config from a directory of Kubernetes YAML, the
//! CA, incremental delta xDS push over TLS on 15012, and readiness, metrics
//! and debug on 15014. Every flag can also be set from the environment.
//!
//! Logging follows `RUST_LOG` (default `info`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use istiod_lite::ca::CaConfig;
use istiod_lite::pipeline::PipelineConfig;
use istiod_lite::server::{Server, ServerConfig};
use istiod_lite::sources::file::FileSource;
use istiod_lite::translate::MeshConfig;
use tracing::error;

#[derive(Debug, Parser)]
#[command(name = "istiod-lite", version, about)]
struct Args {
    /// Directory of Kubernetes YAML files to serve (watched for changes).
    #[arg(long, env = "ISTIOD_LITE_CONFIG_DIR")]
    config_dir: PathBuf,
    /// Directory for the CA root, node tokens and root-cert.pem.
    #[arg(long, env = "ISTIOD_LITE_STATE_DIR")]
    state_dir: PathBuf,
    /// Istio plug-in CA directory (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem), instead of a self-signed root.
    #[arg(long, env = "ISTIOD_LITE_PLUGIN_CA_DIR")]
    plugin_ca_dir: Option<PathBuf>,
    /// gRPC over TLS: delta xDS and the CA.
    #[arg(long, env = "ISTIOD_LITE_GRPC_ADDR", default_value = "0.0.0.0:15012")]
    grpc_addr: SocketAddr,
    /// HTTP: /ready, /metrics, /debug/config_dump, /debug/diagnostics.
    #[arg(long, env = "ISTIOD_LITE_HTTP_ADDR", default_value = "0.0.0.0:15014")]
    http_addr: SocketAddr,
    /// Trust domain of workload identities.
    #[arg(
        long,
        env = "ISTIOD_LITE_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    trust_domain: String,
    /// Cluster name, the first segment of workload uids.
    #[arg(long, env = "ISTIOD_LITE_CLUSTER_ID", default_value = "Kubernetes")]
    cluster_id: String,
    /// Flush a batch of changes once the source has been quiet this long.
    #[arg(long, env = "ISTIOD_LITE_DEBOUNCE_MS", default_value_t = 100)]
    debounce_ms: u64,
    /// ... but never hold a change longer than this.
    #[arg(long, env = "ISTIOD_LITE_MAX_DEBOUNCE_MS", default_value_t = 1000)]
    max_debounce_ms: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.debounce_ms == 0 || args.max_debounce_ms < args.debounce_ms {
        bail!(
            "--max-debounce-ms ({}) must be at least --debounce-ms ({}), which must be above 0",
            args.max_debounce_ms,
            args.debounce_ms
        );
    }
    if !args.config_dir.is_dir() {
        bail!(
            "--config-dir {} is not a directory: create it, or point at the directory holding the mesh's YAML",
            args.config_dir.display()
        );
    }
    let config = ServerConfig {
        state_dir: args.state_dir,
        plugin_ca_dir: args.plugin_ca_dir,
        grpc_addr: args.grpc_addr,
        http_addr: args.http_addr,
        pipeline: PipelineConfig {
            mesh: MeshConfig {
                cluster_id: args.cluster_id,
                trust_domain: args.trust_domain,
                ..MeshConfig::default()
            },
            debounce: Duration::from_millis(args.debounce_ms),
            max_debounce: Duration::from_millis(args.max_debounce_ms),
        },
        ca: CaConfig::default(),
    };
    let config_dir = args.config_dir;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        Server::run(config, move |events| async move {
            if let Err(error) = FileSource::new(config_dir).run(events).await {
                // The server keeps serving the last pushed config; the
                // operator sees this and /ready or /debug.
                error!(%error, "the file config source stopped; changes are no longer picked up");
            }
        })
        .await
    })?;
    Ok(())
}

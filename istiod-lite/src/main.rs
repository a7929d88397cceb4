//! The control plane binary: config from a directory of Kubernetes YAML
//! (`--source files`) or from a Kubernetes API server (`--source kubernetes`),
//! the CA, incremental delta xDS push over TLS on 15012, and readiness,
//! metrics and debug on 15014. Every flag can also be set from the
//! environment.
//!
//! The source also decides how the CA authenticates its callers: in file
//! mode a ztunnel presents its node's bootstrap token from the state
//! directory; in Kubernetes mode a caller presents its projected
//! service-account token, which the API server reviews (`--token-audience`,
//! `--trusted-node-account`).
//!
//! In Kubernetes mode it also deploys waypoints: for each Gateway of class
//! `istio-waypoint`, a ServiceAccount, Deployment and Service
//! (`--deploy-waypoints`, on by default; `--waypoint-*` set what goes into
//! them). With the file source, `meshctl waypoint apply` does that job.
//! It also publishes the mesh root as the ConfigMap `istio-ca-root-cert` in
//! every namespace, as istiod does (`--publish-root-cert`, on by default):
//! the waypoints it deploys mount it.
//!
//! Logging follows `RUST_LOG` (default `info`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use futures_util::future::OptionFuture;
use istiod_lite::ca::{
    CaConfig, DEFAULT_AUDIENCE, DEFAULT_NODE_ACCOUNT, ServiceAccountName, TokenReviewConfig,
};
use istiod_lite::pipeline::PipelineConfig;
use istiod_lite::root_cert::RootCertController;
use istiod_lite::server::{CaAuth, Server, ServerConfig};
use istiod_lite::sources::file::{self, FileSource};
use istiod_lite::sources::kubernetes::KubeSource;
use istiod_lite::translate::MeshConfig;
use istiod_lite::waypoints::{
    DEFAULT_TRACE_SAMPLING, TracingSettings, WaypointController, WaypointSettings,
};
use tracing::error;

/// Where the mesh's config comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SourceKind {
    /// A directory of Kubernetes YAML (`--config-dir`), watched for changes.
    Files,
    /// The Kubernetes API server: in-cluster, or from the kubeconfig.
    Kubernetes,
}

#[derive(Debug, Parser)]
#[command(name = "istiod-lite", version, about)]
struct Args {
    /// Where the mesh's config comes from; also decides how CA callers
    /// authenticate (bootstrap tokens, or TokenReview).
    #[arg(long, env = "ISTIOD_LITE_SOURCE", value_enum, default_value_t = SourceKind::Files)]
    source: SourceKind,
    /// Directory of Kubernetes YAML files to serve (watched for changes).
    /// Required with `--source files`, refused otherwise.
    #[arg(long, env = "ISTIOD_LITE_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Directory for the CA root, node tokens (file mode) and root-cert.pem.
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
    /// Shorter than istiod's 100 ms: a push costs well under a millisecond
    /// of translation here (docs/performance.md), and bursts (a relist, a
    /// directory re-read) arrive back to back, so 10 ms still coalesces them.
    #[arg(long, env = "ISTIOD_LITE_DEBOUNCE_MS", default_value_t = 10)]
    debounce_ms: u64,
    /// ... but never hold a change longer than this.
    #[arg(long, env = "ISTIOD_LITE_MAX_DEBOUNCE_MS", default_value_t = 100)]
    max_debounce_ms: u64,
    /// `--source files`: read a changed file once the config directory has
    /// been quiet this long, so a file written in several steps is read
    /// whole. 0 suits directories written only by atomic renames.
    #[arg(long, env = "ISTIOD_LITE_FILE_SETTLE_MS", default_value_t = file::DEFAULT_SETTLE_MS)]
    file_settle_ms: u64,
    /// Kubernetes mode: an audience a caller's service-account token must be
    /// valid for (repeatable, or comma-separated).
    #[arg(
        long = "token-audience",
        value_name = "AUDIENCE",
        env = "ISTIOD_LITE_TOKEN_AUDIENCE",
        value_delimiter = ',',
        default_value = DEFAULT_AUDIENCE
    )]
    token_audiences: Vec<String>,
    /// Kubernetes mode: a service account `<namespace>/<name>` whose tokens
    /// make a node proxy, which may obtain the identities of workloads on its
    /// node (repeatable, or comma-separated; Istio's CA_TRUSTED_NODE_ACCOUNTS).
    #[arg(
        long = "trusted-node-account",
        value_name = "NAMESPACE/NAME",
        env = "ISTIOD_LITE_TRUSTED_NODE_ACCOUNT",
        value_delimiter = ',',
        default_value = DEFAULT_NODE_ACCOUNT
    )]
    trusted_node_accounts: Vec<ServiceAccountName>,
    /// Kubernetes mode: create and own a ServiceAccount, Deployment and
    /// Service for each Gateway of class istio-waypoint.
    #[arg(
        long,
        env = "ISTIOD_LITE_DEPLOY_WAYPOINTS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    deploy_waypoints: bool,
    /// Kubernetes mode: publish the mesh root as the ConfigMap
    /// istio-ca-root-cert (key root-cert.pem) in every namespace, as istiod
    /// does. Turn off only when another tool publishes that ConfigMap
    /// (cert-manager's istio-csr can): two writers would fight over it.
    #[arg(
        long,
        env = "ISTIOD_LITE_PUBLISH_ROOT_CERT",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    publish_root_cert: bool,
    /// The image of the waypoints istiod-lite deploys.
    #[arg(
        long,
        env = "ISTIOD_LITE_WAYPOINT_IMAGE",
        default_value = "waypoint:dev"
    )]
    waypoint_image: String,
    /// Where deployed waypoints reach xDS and the CA: this istiod-lite's
    /// Service.
    #[arg(
        long,
        env = "ISTIOD_LITE_WAYPOINT_XDS_ADDRESS",
        default_value = "https://istiod.istio-system.svc:15012"
    )]
    waypoint_xds_address: String,
    /// OTLP/gRPC endpoint deployed waypoints export traces to (their
    /// OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://jaeger-collector.istio-system:4317.
    /// Unset: tracing off.
    #[arg(long, env = "ISTIOD_LITE_WAYPOINT_OTLP_ENDPOINT")]
    waypoint_otlp_endpoint: Option<String>,
    /// Percentage of requests deployed waypoints start a trace for (their
    /// TRACE_SAMPLING), 0 to 100.
    #[arg(long, env = "ISTIOD_LITE_WAYPOINT_TRACE_SAMPLING", default_value_t = DEFAULT_TRACE_SAMPLING)]
    waypoint_trace_sampling: f64,
}

/// The config source, with what it needs.
enum Source {
    Files(FileSource),
    Kubernetes {
        review: TokenReviewConfig,
        /// The settings of the waypoints to deploy, unless turned off.
        waypoints: Option<WaypointSettings>,
        /// Whether to publish `istio-ca-root-cert` in every namespace.
        publish_root_cert: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colour only at a terminal, so log files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    check_debounce(args.debounce_ms, args.max_debounce_ms)?;
    let source = source(&args)?;
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
        auth: CaAuth::NodeTokens,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, source))
}

async fn serve(config: ServerConfig, source: Source) -> anyhow::Result<()> {
    match source {
        Source::Files(files) => {
            Server::run(config, move |server| {
                let events = server.source_events();
                async move {
                    if let Err(error) = files.run(events).await {
                        // The server keeps serving the last pushed config; the
                        // operator sees this and /ready or /debug.
                        error!(%error, "the file config source stopped; changes are no longer picked up");
                    }
                }
            })
            .await?;
        }
        Source::Kubernetes {
            review,
            waypoints,
            publish_root_cert,
        } => {
            // One client for the watchers and the CA's TokenReviews.
            let client = kube::Client::try_default().await.context(
                "cannot build a Kubernetes client: in a pod, check that the service account \
                 token is mounted (automountServiceAccountToken) and KUBERNETES_SERVICE_HOST is \
                 set; outside, check $KUBECONFIG or ~/.kube/config and its current context",
            )?;
            let auth = CaAuth::Kubernetes {
                client: client.clone(),
                review,
            };
            let waypoints =
                waypoints.map(|settings| WaypointController::new(client.clone(), settings));
            Server::run(ServerConfig { auth, ..config }, move |server| {
                let events = server.source_events();
                // The root is the one the server just opened and wrote.
                let root_cert = publish_root_cert
                    .then(|| RootCertController::new(client.clone(), server.roots_pem()));
                async move {
                    // All of them run until the process ends.
                    futures_util::future::join3(
                        KubeSource::new(client).run(events),
                        OptionFuture::from(waypoints.map(WaypointController::run)),
                        OptionFuture::from(root_cert.map(RootCertController::run)),
                    )
                    .await;
                }
            })
            .await?;
        }
    }
    Ok(())
}

fn check_debounce(debounce_ms: u64, max_debounce_ms: u64) -> anyhow::Result<()> {
    if debounce_ms == 0 || max_debounce_ms < debounce_ms {
        bail!(
            "--max-debounce-ms ({max_debounce_ms}) must be at least --debounce-ms \
             ({debounce_ms}), which must be above 0"
        );
    }
    Ok(())
}

/// The source `--source` names, checked against the flags it needs.
fn source(args: &Args) -> anyhow::Result<Source> {
    match (args.source, &args.config_dir) {
        (SourceKind::Files, None) => bail!(
            "--source files needs --config-dir (or ISTIOD_LITE_CONFIG_DIR): the directory \
             holding the mesh's YAML; or use --source kubernetes to read an API server"
        ),
        (SourceKind::Files, Some(dir)) if !dir.is_dir() => bail!(
            "--config-dir {} is not a directory: create it, or point at the directory holding \
             the mesh's YAML",
            dir.display()
        ),
        (SourceKind::Files, Some(dir)) => Ok(Source::Files(
            FileSource::new(dir).with_settle(Duration::from_millis(args.file_settle_ms)),
        )),
        (SourceKind::Kubernetes, Some(dir)) => bail!(
            "--config-dir {} is only read with --source files: with --source kubernetes the \
             config comes from the API server; remove --config-dir (or ISTIOD_LITE_CONFIG_DIR)",
            dir.display()
        ),
        (SourceKind::Kubernetes, None) => Ok(Source::Kubernetes {
            review: token_review_config(args)?,
            waypoints: waypoint_settings(args)?,
            publish_root_cert: args.publish_root_cert,
        }),
    }
}

fn token_review_config(args: &Args) -> anyhow::Result<TokenReviewConfig> {
    let audiences: Vec<String> = args
        .token_audiences
        .iter()
        .map(|audience| audience.trim().to_owned())
        .collect();
    if audiences.is_empty() || audiences.iter().any(String::is_empty) {
        bail!(
            "--token-audience must name at least one non-empty audience (Istio's is \
             {DEFAULT_AUDIENCE}): with none, every token would be refused"
        );
    }
    Ok(TokenReviewConfig {
        audiences,
        trusted_node_accounts: args.trusted_node_accounts.clone(),
        ..TokenReviewConfig::default()
    })
}

/// What goes into every deployed waypoint; `None` with `--deploy-waypoints
/// false`.
fn waypoint_settings(args: &Args) -> anyhow::Result<Option<WaypointSettings>> {
    if !args.deploy_waypoints {
        return Ok(None);
    }
    let sampling = args.waypoint_trace_sampling;
    if !(0.0..=100.0).contains(&sampling) {
        bail!(
            "--waypoint-trace-sampling {sampling} is not a percentage: give 0 to 100 \
             ({DEFAULT_TRACE_SAMPLING} is Istio's default)"
        );
    }
    let otlp_endpoint = args
        .waypoint_otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|endpoint| !endpoint.is_empty());
    if let Some(endpoint) = otlp_endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        bail!(
            "--waypoint-otlp-endpoint {endpoint} must be a URL with its scheme, such as \
             http://jaeger-collector.istio-system:4317 (OTLP over gRPC)"
        );
    }
    Ok(Some(WaypointSettings {
        image: args.waypoint_image.clone(),
        xds_address: args.waypoint_xds_address.clone(),
        trust_domain: args.trust_domain.clone(),
        cluster_id: args.cluster_id.clone(),
        // The waypoint's token must pass our own TokenReview.
        token_audience: args.token_audiences.first().map_or_else(
            || DEFAULT_AUDIENCE.to_owned(),
            |audience| audience.trim().to_owned(),
        ),
        tracing: TracingSettings {
            otlp_endpoint: otlp_endpoint.map(str::to_owned),
            sampling_percent: sampling,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let base = [
            "istiod-lite",
            "--source",
            "kubernetes",
            "--state-dir",
            "/tmp/s",
        ];
        Args::try_parse_from(base.iter().chain(extra)).expect("flags parse")
    }

    #[test]
    fn waypoints_are_deployed_by_default_with_tracing_off() {
        let settings = waypoint_settings(&args(&["--token-audience", "mesh-ca"]))
            .unwrap()
            .expect("on by default");
        assert_eq!(settings.image, "waypoint:dev");
        assert_eq!(settings.token_audience, "mesh-ca");
        assert_eq!(settings.tracing, TracingSettings::default());
    }

    #[test]
    fn the_flag_turns_waypoint_deployment_off() {
        let settings = waypoint_settings(&args(&["--deploy-waypoints", "false"])).unwrap();
        assert_eq!(settings, None);
    }

    #[test]
    fn the_root_is_published_by_default_and_the_flag_turns_it_off() {
        let Source::Kubernetes {
            publish_root_cert, ..
        } = source(&args(&[])).unwrap()
        else {
            panic!("--source kubernetes");
        };
        assert!(publish_root_cert);
        let Source::Kubernetes {
            publish_root_cert,
            waypoints,
            ..
        } = source(&args(&["--publish-root-cert", "false"])).unwrap()
        else {
            panic!("--source kubernetes");
        };
        assert!(!publish_root_cert);
        // Independent of waypoint deployment.
        assert!(waypoints.is_some());
    }

    #[test]
    fn tracing_settings_are_checked() {
        let on = waypoint_settings(&args(&[
            "--waypoint-otlp-endpoint",
            "http://jaeger-collector.istio-system:4317",
            "--waypoint-trace-sampling",
            "100",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            on.tracing.otlp_endpoint.as_deref(),
            Some("http://jaeger-collector.istio-system:4317")
        );
        assert_eq!(on.tracing.sampling_percent, 100.0);
        // Empty is unset, as the waypoint reads it.
        let empty = waypoint_settings(&args(&["--waypoint-otlp-endpoint", " "])).unwrap();
        assert_eq!(empty.unwrap().tracing.otlp_endpoint, None);

        let bad_sampling = waypoint_settings(&args(&["--waypoint-trace-sampling", "150"]));
        let message = bad_sampling.unwrap_err().to_string();
        assert!(message.contains("give 0 to 100"), "{message}");
        let no_scheme = waypoint_settings(&args(&["--waypoint-otlp-endpoint", "jaeger:4317"]));
        let message = no_scheme.unwrap_err().to_string();
        assert!(
            message.contains("must be a URL with its scheme"),
            "{message}"
        );
    }
}

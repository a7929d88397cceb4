//! The waypoint's settings, from flags or the environment. Where Istio's
//! proxies read a variable for a setting, we read the same name
//! (`XDS_ADDRESS`, `CA_ADDRESS`, `POD_NAMESPACE`, `SERVICE_ACCOUNT`, ...), so
//! a waypoint Deployment written for Istio carries over; our own settings
//! are prefixed `WAYPOINT_`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use identity::Identity;

use crate::trace::SamplingPercent;

/// Where Istio mounts the mesh root for proxies.
pub const DEFAULT_ROOT_CERT: &str = "./var/run/secrets/istio/root-cert.pem";
/// Where Istio mounts the projected service-account token.
pub const DEFAULT_TOKEN: &str = "./var/run/secrets/tokens/istio-token";
/// Istio's in-cluster control plane address.
pub const DEFAULT_XDS_ADDRESS: &str = "https://istiod.istio-system.svc:15012";

/// Command line and environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "waypoint", version, about)]
pub struct Args {
    /// Control plane address for delta xDS.
    #[arg(long, env = "XDS_ADDRESS", default_value = DEFAULT_XDS_ADDRESS)]
    pub xds_address: String,
    /// Control plane address for certificates (default: the xDS address).
    #[arg(long, env = "CA_ADDRESS")]
    pub ca_address: Option<String>,
    /// Root certificate the control plane's serving certificate chains to.
    #[arg(long, env = "XDS_ROOT_CA", default_value = DEFAULT_ROOT_CERT)]
    pub xds_root_ca: PathBuf,
    /// Root for the CA connection (default: the xDS root).
    #[arg(long, env = "CA_ROOT_CA")]
    pub ca_root_ca: Option<PathBuf>,
    /// Server name to verify instead of the xDS address's host.
    #[arg(long, env = "ALT_XDS_HOSTNAME")]
    pub alt_xds_hostname: Option<String>,
    /// Server name to verify instead of the CA address's host.
    #[arg(long, env = "ALT_CA_HOSTNAME")]
    pub alt_ca_hostname: Option<String>,
    /// File holding the bearer token for the control plane (re-read on use).
    #[arg(long, env = "AUTH_TOKEN", default_value = DEFAULT_TOKEN)]
    pub auth_token: PathBuf,
    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// The waypoint's namespace: part of its identity.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: String,
    /// The waypoint's service account: part of its identity.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: String,
    /// This waypoint's pod, for its xDS node id.
    #[arg(long, env = "POD_NAME", default_value = "waypoint")]
    pub pod_name: String,
    #[arg(long, env = "NODE_NAME", default_value = "")]
    pub node_name: String,
    #[arg(long, env = "INSTANCE_IP", default_value = "127.0.0.1")]
    pub instance_ip: String,
    /// The network whose service VIPs this waypoint serves.
    #[arg(long, env = "NETWORK", default_value = "")]
    pub network: String,
    /// Inbound HBONE.
    #[arg(long, env = "WAYPOINT_HBONE_ADDR", default_value = "0.0.0.0:15008")]
    pub hbone_addr: SocketAddr,
    /// Prometheus metrics (`/metrics`, and `/stats/prometheus` as Istio's
    /// proxies serve them).
    #[arg(long, env = "WAYPOINT_STATS_ADDR", default_value = "0.0.0.0:15020")]
    pub stats_addr: SocketAddr,
    /// Readiness (`/healthz/ready`).
    #[arg(long, env = "WAYPOINT_READINESS_ADDR", default_value = "0.0.0.0:15021")]
    pub readiness_addr: SocketAddr,
    /// Admin server (`/config_dump`, `/certs`, `/logging`): keep it on
    /// loopback, as ztunnel's.
    #[arg(long, env = "WAYPOINT_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// On SIGTERM, how long requests in flight get to finish (Istio's name).
    #[arg(long, env = "TERMINATION_DRAIN_DURATION_SECONDS", default_value_t = 5)]
    pub drain_seconds: u64,
    /// Worker threads for the data path; each HBONE connection is served
    /// on one of them, start to end.
    #[arg(long, env = "WAYPOINT_WORKER_THREADS", default_value_t = 2)]
    pub worker_threads: usize,
    /// OTLP/gRPC collector for traces, e.g.
    /// `http://jaeger-collector.istio-system:4317` (the OpenTelemetry
    /// SDKs' variable). Unset or empty: tracing is off.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Percentage (0 to 100) of requests traced when the caller did not
    /// decide (Istio's `PILOT_TRACE_SAMPLING`, 1 by default).
    #[arg(long, env = "TRACE_SAMPLING", default_value_t = SamplingPercent::DEFAULT)]
    pub trace_sampling: SamplingPercent,
    /// The waypoint's Deployment, for its spans' `service.name`
    /// (`<workload>.<namespace>`, as Istio names a proxy's spans); Istio's
    /// waypoint template sets it. Default: the pod name.
    #[arg(long, env = "ISTIO_META_WORKLOAD_NAME")]
    pub workload_name: Option<String>,
}

/// Why a setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "the waypoint's identity spiffe://{trust_domain}/ns/{namespace}/sa/{service_account} is \
         not valid ({reason}): set TRUST_DOMAIN, POD_NAMESPACE and SERVICE_ACCOUNT"
    )]
    Identity {
        trust_domain: String,
        namespace: String,
        service_account: String,
        reason: String,
    },
    #[error("WAYPOINT_WORKER_THREADS must be at least 1")]
    NoWorkers,
    #[error(
        "the admin address {0} is not on loopback: it serves certificates and config, \
         so bind it to 127.0.0.1 or ::1"
    )]
    AdminNotLoopback(SocketAddr),
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: {0}")]
    Otlp(#[from] telemetry::otlp::OtlpError),
}

// === impl Args ===

impl Args {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.identity()?;
        if self.worker_threads == 0 {
            return Err(ConfigError::NoWorkers);
        }
        if !self.admin_addr.ip().is_loopback() {
            return Err(ConfigError::AdminNotLoopback(self.admin_addr));
        }
        if let Some(endpoint) = self.otlp_endpoint() {
            telemetry::otlp::parse_endpoint(endpoint)?;
        }
        Ok(())
    }

    /// The OTLP endpoint, when tracing is on (an empty setting is off, so
    /// that a manifest can leave the variable blank).
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    /// The `service.name` of the waypoint's spans: `<workload>.<namespace>`,
    /// as Istio's default (`APP_LABEL_AND_NAMESPACE`) names a waypoint
    /// without an `app` label.
    pub fn trace_service_name(&self) -> String {
        let workload = self.workload_name.as_deref().unwrap_or(&self.pod_name);
        format!("{workload}.{}", self.pod_namespace)
    }

    /// `spiffe://<td>/ns/<POD_NAMESPACE>/sa/<SERVICE_ACCOUNT>`.
    pub fn identity(&self) -> Result<Identity, ConfigError> {
        Identity::new(
            &self.trust_domain,
            &self.pod_namespace,
            &self.service_account,
        )
        .map_err(|error| ConfigError::Identity {
            trust_domain: self.trust_domain.clone(),
            namespace: self.pod_namespace.clone(),
            service_account: self.service_account.clone(),
            reason: error.to_string(),
        })
    }

    pub fn ca_address(&self) -> &str {
        self.ca_address.as_deref().unwrap_or(&self.xds_address)
    }

    pub fn ca_root_ca(&self) -> &PathBuf {
        self.ca_root_ca.as_ref().unwrap_or(&self.xds_root_ca)
    }

    pub fn drain_deadline(&self) -> Duration {
        Duration::from_secs(self.drain_seconds)
    }

    /// The xDS node id in Istio's form for a waypoint (a router):
    /// `router~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`.
    pub fn node_id(&self) -> String {
        format!(
            "router~{}~{}.{ns}~{ns}.svc.cluster.local",
            self.instance_ip,
            self.pod_name,
            ns = self.pod_namespace
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["waypoint", "--pod-namespace", "b"];
        if !extra.contains(&"--service-account") {
            argv.extend_from_slice(&["--service-account", "wp"]);
        }
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_follow_istio() {
        let a = args(&[]);
        a.validate().unwrap();
        assert_eq!(
            a.identity().unwrap().to_string(),
            "spiffe://cluster.local/ns/b/sa/wp"
        );
        assert_eq!(a.ca_address(), DEFAULT_XDS_ADDRESS);
        assert_eq!(a.hbone_addr.port(), 15008);
        assert_eq!(a.readiness_addr.port(), 15021);
        assert_eq!(a.stats_addr.port(), 15020);
        assert_eq!(a.admin_addr, "127.0.0.1:15000".parse().unwrap());
        assert_eq!(
            a.node_id(),
            "router~127.0.0.1~waypoint.b~b.svc.cluster.local"
        );
        assert_eq!(a.otlp_endpoint(), None, "tracing is off unless asked for");
        assert_eq!(a.trace_sampling, SamplingPercent::DEFAULT);
        assert_eq!(a.trace_service_name(), "waypoint.b");
    }

    #[test]
    fn tracing_settings_are_read_and_checked() {
        let a = args(&[
            "--otlp-endpoint",
            "http://jaeger-collector.istio-system:4317",
            "--trace-sampling",
            "100",
            "--workload-name",
            "wp",
        ]);
        a.validate().unwrap();
        assert_eq!(
            a.otlp_endpoint(),
            Some("http://jaeger-collector.istio-system:4317")
        );
        assert_eq!(a.trace_sampling.get(), 100.0);
        assert_eq!(a.trace_service_name(), "wp.b");
        assert_eq!(args(&["--otlp-endpoint", " "]).otlp_endpoint(), None);

        let error = args(&["--otlp-endpoint", "https://collector:4317"])
            .validate()
            .unwrap_err();
        assert!(
            error.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{error}"
        );
        let mut argv = vec![
            "waypoint",
            "--pod-namespace",
            "b",
            "--service-account",
            "wp",
        ];
        argv.extend(["--trace-sampling", "150"]);
        let error = Args::try_parse_from(argv).unwrap_err().to_string();
        assert!(error.contains("from 0 to 100"), "{error}");
    }

    #[test]
    fn a_bad_identity_says_which_settings_make_it() {
        let error = args(&["--service-account", "a/b"]).validate().unwrap_err();
        assert!(error.to_string().contains("SERVICE_ACCOUNT"), "{error}");
        let error = args(&["--worker-threads", "0"]).validate().unwrap_err();
        assert_eq!(error, ConfigError::NoWorkers);
    }

    #[test]
    fn the_admin_server_stays_on_loopback() {
        args(&["--admin-addr", "[::1]:15000"]).validate().unwrap();
        let error = args(&["--admin-addr", "0.0.0.0:15000"])
            .validate()
            .unwrap_err();
        assert_eq!(
            error,
            ConfigError::AdminNotLoopback("0.0.0.0:15000".parse().unwrap())
        );
        assert!(error.to_string().contains("127.0.0.1"), "{error}");
    }
}

//! ztunnel's settings, from flags or the environment. Where Istio's ztunnel
//! has a variable for a setting, we read the same name (`XDS_ADDRESS`,
//! `CA_ADDRESS`, `NODE_NAME`, ...), so a DaemonSet written for it carries
//! over; our own settings are prefixed `ZTUNNEL_`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Where Istio mounts the mesh root for proxies.
pub const DEFAULT_ROOT_CERT: &str = "./var/run/secrets/istio/root-cert.pem";
/// Where Istio mounts the projected service-account token.
pub const DEFAULT_TOKEN: &str = "./var/run/secrets/tokens/istio-token";
/// Istio's in-cluster control plane address.
pub const DEFAULT_XDS_ADDRESS: &str = "https://istiod.istio-system.svc:15012";
/// Istio's mark for ztunnel's own sockets inside a pod (`INPOD_MARK`).
pub const DEFAULT_MARK: u32 = 1337;

/// Command line and environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "ztunnel", version, about)]
pub struct Args {
    /// Name of the node this ztunnel serves; it handles the workloads
    /// scheduled there and may obtain certificates only for them.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
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
    /// Lifetime asked for workload certificates (`24h`, `90m`, `30s`).
    #[arg(long, env = "SECRET_TTL", default_value = "24h", value_parser = parse_duration)]
    pub secret_ttl: Duration,
    /// Accept a `SECRET_TTL` down to 2 s (rotation tests); never in
    /// production, where each rotation is a CA request per pod.
    #[arg(long, env = "ZTUNNEL_ALLOW_SHORT_TTL")]
    pub allow_short_ttl: bool,
    /// This ztunnel's own pod, for its xDS node id.
    #[arg(long, env = "POD_NAME", default_value = "ztunnel")]
    pub pod_name: String,
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    pub pod_namespace: String,
    #[arg(long, env = "INSTANCE_IP", default_value = "127.0.0.1")]
    pub instance_ip: String,
    /// Admin server (config dump, certs, connections, log level): keep it on
    /// loopback.
    #[arg(long, env = "ZTUNNEL_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Prometheus metrics.
    #[arg(long, env = "ZTUNNEL_STATS_ADDR", default_value = "0.0.0.0:15020")]
    pub stats_addr: SocketAddr,
    /// Readiness (`/healthz/ready`).
    #[arg(long, env = "ZTUNNEL_READINESS_ADDR", default_value = "0.0.0.0:15021")]
    pub readiness_addr: SocketAddr,
    /// Socket mark of ztunnel's own connections inside pods, so the pod's
    /// redirection rules let them through.
    #[arg(long, env = "INPOD_MARK", default_value_t = DEFAULT_MARK)]
    pub mark: u32,
    /// On SIGTERM, how long open connections get to finish.
    #[arg(long, env = "ZTUNNEL_DRAIN_DEADLINE", default_value = "5s", value_parser = parse_duration)]
    pub drain_deadline: Duration,
    /// How local pods are served: `netns` (in-pod capture: listeners and
    /// redirection rules inside each pod's network namespace) or
    /// `explicit` (HBONE and SOCKS5 on each pod's address, no capture).
    #[arg(long, env = "ZTUNNEL_CAPTURE", value_enum, default_value_t = Capture::Netns)]
    pub capture: Capture,
    /// Where pod network namespaces are found: a directory of named
    /// namespaces (`ip netns`), or `/proc` on a Kubernetes node (hostPID).
    #[arg(long, env = "ZTUNNEL_NETNS_DIR", default_value = crate::capture::DEFAULT_NETNS_DIR)]
    pub netns_dir: PathBuf,
    /// Worker threads for the data path (Istio's default count: 2). Each
    /// local pod runs on one of them, the one with the fewest pods.
    #[arg(long, env = "ZTUNNEL_WORKER_THREADS", default_value_t = 2)]
    pub worker_threads: usize,
}

/// How local pods are served (see [`crate::pods::CaptureMode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Capture {
    Netns,
    Explicit,
}

/// Why a setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("NODE_NAME is empty: set it to the node this ztunnel runs on")]
    NoNodeName,
    #[error(
        "the admin address {0} is not on loopback: it serves certificates and config, \
         so bind it to 127.0.0.1 or ::1"
    )]
    AdminNotLoopback(SocketAddr),
    #[error(
        "SECRET_TTL must be at least one minute, not {0:?} (ZTUNNEL_ALLOW_SHORT_TTL=1 lowers \
         the floor to 2 s, for rotation tests only)"
    )]
    TtlTooShort(Duration),
    #[error("ZTUNNEL_WORKER_THREADS must be at least 1")]
    NoWorkers,
}

// === impl Args ===

impl Args {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_name.trim().is_empty() {
            return Err(ConfigError::NoNodeName);
        }
        if !self.admin_addr.ip().is_loopback() {
            return Err(ConfigError::AdminNotLoopback(self.admin_addr));
        }
        if self.secret_ttl < self.min_secret_ttl() {
            return Err(ConfigError::TtlTooShort(self.secret_ttl));
        }
        if self.worker_threads == 0 {
            return Err(ConfigError::NoWorkers);
        }
        Ok(())
    }

    /// The shortest certificate lifetime accepted: a minute, or 2 s when
    /// `allow_short_ttl` is set (to exercise rotation in tests).
    pub fn min_secret_ttl(&self) -> Duration {
        if self.allow_short_ttl {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(60)
        }
    }

    pub fn ca_address(&self) -> &str {
        self.ca_address.as_deref().unwrap_or(&self.xds_address)
    }

    pub fn ca_root_ca(&self) -> &PathBuf {
        self.ca_root_ca.as_ref().unwrap_or(&self.xds_root_ca)
    }

    /// The xDS node id in Istio's form, which istiod parses:
    /// `ztunnel~<ip>~<pod>.<ns>~<ns>.svc.<domain>`.
    pub fn node_id(&self) -> String {
        format!(
            "ztunnel~{}~{}.{ns}~{ns}.svc.cluster.local",
            self.instance_ip,
            self.pod_name,
            ns = self.pod_namespace
        )
    }
}

/// Parses Go-style durations as Istio's variables use them: a number and a
/// unit (`ms`, `s`, `m`, `h`), possibly several (`1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let error = || format!("{text:?} is not a duration like 24h, 90m, 30s or 1h30m");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(error());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(error)?;
        let value: u64 = rest[..digits].parse().map_err(|_| error())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value * 60),
            "h" => Duration::from_secs(value * 3600),
            _ => return Err(error()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["ztunnel", "--node-name", "node-1"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_follow_istio() {
        let a = args(&[]);
        a.validate().unwrap();
        assert_eq!(a.xds_address, DEFAULT_XDS_ADDRESS);
        assert_eq!(a.ca_address(), DEFAULT_XDS_ADDRESS);
        assert_eq!(a.secret_ttl, Duration::from_secs(24 * 3600));
        assert_eq!(a.mark, 1337);
        assert_eq!(
            a.node_id(),
            "ztunnel~127.0.0.1~ztunnel.istio-system~istio-system.svc.cluster.local"
        );
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let a = args(&["--admin-addr", "0.0.0.0:15000"]);
        assert_eq!(
            a.validate(),
            Err(ConfigError::AdminNotLoopback(
                "0.0.0.0:15000".parse().unwrap()
            ))
        );
        let a = args(&["--secret-ttl", "30s"]);
        assert!(matches!(a.validate(), Err(ConfigError::TtlTooShort(_))));
        let a = Args::try_parse_from(["ztunnel", "--node-name", " "]).unwrap();
        assert_eq!(a.validate(), Err(ConfigError::NoNodeName));
        let error = Args::try_parse_from(["ztunnel", "--node-name", "n", "--secret-ttl", "1d"])
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a duration"), "{error}");
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "h", "10", "10x", "-5s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }
}

//! `meshctl ztunnel status`: the node at a glance, from one `/config_dump`.
//!
//! [`Summary::new`] decides what matters (is the control plane there, did
//! every local pod get captured, which certificates are in trouble) and
//! [`Summary::text`] words it; `-o json|yaml` print the same summary as an
//! object, so a script sees exactly what a person does.

use std::time::SystemTime;

use serde::Serialize;

use super::model::{CertState, ConfigDump, ControlPlane, Direction, PodState};
use super::{Error, Output, age, render};

/// The summary `status` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub node: String,
    /// As ztunnel reports it.
    pub control_plane: ControlPlane,
    pub pods: Pods,
    pub mesh: Mesh,
    pub certificates: Certificates,
    pub connections: Connections,
}

/// The local pods ztunnel serves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pods {
    pub total: usize,
    pub captured: usize,
    pub failed: usize,
    /// Every pod that is not captured, failed or in a state this meshctl
    /// does not know.
    pub not_captured: Vec<PodProblem>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodProblem {
    pub namespace: String,
    pub name: String,
    pub state: PodState,
    pub error: Option<String>,
    pub since: Option<String>,
}

/// The mesh's config as pushed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mesh {
    pub workloads: usize,
    pub services: usize,
    pub policies: usize,
}

/// The certificates of the local identities.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Certificates {
    pub total: usize,
    /// Served now: `available`, or `failed` (renewal retried) and not past
    /// `not_after`.
    pub valid: usize,
    /// The valid certificate that expires first.
    pub nearest_expiry: Option<Expiry>,
    /// Every certificate that is not `available` and valid.
    pub problems: Vec<CertProblem>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expiry {
    pub identity: String,
    pub not_after: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CertProblem {
    pub identity: String,
    pub state: CertState,
    /// Whether a certificate is still served.
    pub valid: bool,
    pub error: Option<String>,
    pub not_after: Option<String>,
}

/// Open connections.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connections {
    pub open: usize,
    pub inbound: usize,
    pub outbound: usize,
}

/// `status` in `output`.
pub fn render(dump: &ConfigDump, output: Output, now: SystemTime) -> Result<String, Error> {
    let summary = Summary::new(dump, now);
    match output {
        Output::Json | Output::Yaml => render::encode(&summary, output),
        Output::Table | Output::Wide => Ok(summary.text(now)),
    }
}

/// The label column of the text form.
const LABEL_WIDTH: usize = 16;

// === impl Summary ===

impl Summary {
    pub fn new(dump: &ConfigDump, now: SystemTime) -> Self {
        let mut not_captured: Vec<PodProblem> = dump
            .pods
            .iter()
            .filter(|pod| pod.state != PodState::Captured)
            .map(|pod| PodProblem {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                state: pod.state.clone(),
                error: pod.error.clone(),
                since: pod.since.clone(),
            })
            .collect();
        not_captured.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let count_pods = |state: PodState| dump.pods.iter().filter(|p| p.state == state).count();

        let mut valid = 0;
        let mut nearest: Option<(SystemTime, Expiry)> = None;
        let mut problems = Vec::new();
        for cert in &dump.certificates {
            let not_after = cert.not_after.as_deref().and_then(age::parse);
            // A certificate past `not_after` is not served, whatever the
            // state says (ztunnel may not have noticed yet).
            let in_date = not_after.is_none_or(|at| at > now);
            let is_valid =
                in_date && matches!(cert.state, CertState::Available | CertState::Failed);
            if is_valid {
                valid += 1;
                if let (Some(at), Some(text)) = (not_after, &cert.not_after)
                    && nearest.as_ref().is_none_or(|(first, _)| at < *first)
                {
                    let expiry = Expiry {
                        identity: cert.identity.clone(),
                        not_after: text.clone(),
                    };
                    nearest = Some((at, expiry));
                }
            }
            if !(is_valid && cert.state == CertState::Available) {
                problems.push(CertProblem {
                    identity: cert.identity.clone(),
                    state: cert.state.clone(),
                    valid: is_valid,
                    error: cert.error.clone(),
                    not_after: cert.not_after.clone(),
                });
            }
        }
        problems.sort_by(|a, b| a.identity.cmp(&b.identity));

        let count_connections = |direction: Direction| {
            dump.connections
                .iter()
                .filter(|c| c.direction == direction)
                .count()
        };

        Summary {
            node: dump.node.clone(),
            control_plane: dump.control_plane.clone(),
            pods: Pods {
                total: dump.pods.len(),
                captured: count_pods(PodState::Captured),
                failed: count_pods(PodState::Failed),
                not_captured,
            },
            mesh: Mesh {
                workloads: dump.workloads.len(),
                services: dump.services.len(),
                policies: dump.policies.len(),
            },
            certificates: Certificates {
                total: dump.certificates.len(),
                valid,
                nearest_expiry: nearest.map(|(_, expiry)| expiry),
                problems,
            },
            connections: Connections {
                open: dump.connections.len(),
                inbound: count_connections(Direction::Inbound),
                outbound: count_connections(Direction::Outbound),
            },
        }
    }

    /// The text form: one labelled line per subject, problems indented
    /// under it.
    pub fn text(&self, now: SystemTime) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            let label = if label.is_empty() {
                String::new()
            } else {
                format!("{label}:")
            };
            out.push_str(&format!("{label:<LABEL_WIDTH$}{value}\n"));
        };

        line("Node", self.node.clone());

        let cp = &self.control_plane;
        let since = cp
            .since
            .as_deref()
            .map(|since| format!(" since {}", when(since, now)))
            .unwrap_or_default();
        if cp.connected {
            line(
                "Control plane",
                format!("connected to {}{since}", cp.address),
            );
        } else {
            let serving = if cp.synced {
                "serving the config it holds"
            } else {
                "no complete config yet"
            };
            line(
                "Control plane",
                format!("DISCONNECTED from {}{since}: {serving}", cp.address),
            );
        }
        let version = match &cp.config_version {
            Some(version) if !version.is_empty() => format!("version {version}"),
            _ => "no version yet".to_owned(),
        };
        let synced = if cp.synced {
            "synced"
        } else {
            "not synced (waiting for every config type)"
        };
        line(
            "Config",
            format!(
                "{version}, {synced}, {}, {}",
                plural(cp.responses, "response", "responses"),
                plural(cp.nacks, "NACK", "NACKs"),
            ),
        );
        if let Some(error) = &cp.last_error {
            line("Last error", error.clone());
        }

        let pods = &self.pods;
        if pods.total == 0 {
            line("Local pods", "none enrolled on this node".to_owned());
        } else {
            let mut counts = format!("{} captured, {} failed", pods.captured, pods.failed);
            let other = pods.total - pods.captured - pods.failed;
            if other > 0 {
                counts.push_str(&format!(", {other} in another state"));
            }
            line("Local pods", counts);
        }
        for pod in &pods.not_captured {
            let since = pod
                .since
                .as_deref()
                .map(|since| format!(" (since {})", when(since, now)))
                .unwrap_or_default();
            let error = pod.error.as_deref().unwrap_or("no reason given");
            line(
                "",
                format!(
                    "{}/{} {}: {error}{since}",
                    pod.namespace, pod.name, pod.state
                ),
            );
        }

        let mesh = &self.mesh;
        line(
            "Mesh",
            format!(
                "{}, {}, {}",
                plural(mesh.workloads as u64, "workload", "workloads"),
                plural(mesh.services as u64, "service", "services"),
                plural(mesh.policies as u64, "policy", "policies"),
            ),
        );

        let certs = &self.certificates;
        if certs.total == 0 {
            line(
                "Certificates",
                "none (no local workload identities)".to_owned(),
            );
        } else {
            let mut value = format!("{} of {} valid", certs.valid, certs.total);
            if let Some(nearest) = &certs.nearest_expiry {
                value.push_str(&format!(
                    ", nearest expiry {} {}",
                    nearest.identity,
                    age::relative_str(&nearest.not_after, now)
                ));
            }
            line("Certificates", value);
        }
        for cert in &certs.problems {
            line("", cert_problem(cert, now));
        }

        let conns = &self.connections;
        line(
            "Connections",
            format!(
                "{} open ({} inbound, {} outbound)",
                conns.open, conns.inbound, conns.outbound
            ),
        );
        out
    }
}

/// One line on a certificate that is not simply available.
fn cert_problem(cert: &CertProblem, now: SystemTime) -> String {
    let expiry = cert
        .not_after
        .as_deref()
        .map(|at| age::relative_str(at, now));
    let error = cert
        .error
        .as_deref()
        .map(|error| format!(": {error}"))
        .unwrap_or_default();
    let identity = &cert.identity;
    match (&cert.state, cert.valid) {
        (CertState::Initializing, _) => {
            format!("{identity}: waiting for the CA, no certificate yet{error}")
        }
        (CertState::Failed, true) => {
            let expiry = expiry.map(|e| format!(", expires {e}")).unwrap_or_default();
            format!("{identity}: renewal FAILED (retried); still served{expiry}{error}")
        }
        (CertState::Available | CertState::Failed | CertState::Expired, _) => {
            let expiry = expiry.map(|e| format!(" {e}")).unwrap_or_default();
            format!("{identity}: EXPIRED{expiry}, its connections fail closed{error}")
        }
        (CertState::Other(state), _) => format!("{identity}: {state}{error}"),
    }
}

/// A timestamp with its age: `2026-12-01T08:10:00Z (5m ago)`; as sent when
/// it does not parse.
fn when(timestamp: &str, now: SystemTime) -> String {
    match age::parse(timestamp) {
        Some(at) => format!("{timestamp} ({})", age::relative(at, now)),
        None => timestamp.to_owned(),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests;

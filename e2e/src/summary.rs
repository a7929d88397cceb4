//! What a `traffic` run saw, reduced to what a test asserts on: how many
//! attempts got which answer, who answered, the errors, and latency
//! percentiles. Pure: [`Summary::new`] takes the outcomes and returns data;
//! the text and JSON forms are renderings of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::{format_millis, millis};
use crate::grpc_code::name_of_number;

/// What was sent: the nouns of the summary follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// One attempt is one HTTP request.
    Http,
    /// One attempt is one unary gRPC call.
    Grpc,
    /// One attempt is one TCP connection that echoes a payload.
    Tcp,
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The server answered: over HTTP with `status` (any code), over gRPC
    /// with `status` the gRPC status code (0 is `OK`), over TCP (`status`
    /// is `None`) with an exact echo of the payload.
    Answered {
        status: Option<u16>,
        /// Who answered, when the server says so: echo-http's `x-echo-pod`
        /// header, echo-tcp's banner.
        server: Option<String>,
        /// From the start of the attempt (including connecting, when it had
        /// to) to the last byte of the answer.
        latency: Duration,
    },
    /// No (correct) answer: what went wrong, short and the same for the same
    /// cause, so that the summary can count causes.
    Failed { reason: String },
}

/// The latency percentiles of the attempts that got an answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub protocol: Protocol,
    /// Requests (HTTP) or connections (TCP) attempted.
    pub attempts: u64,
    /// Attempts that succeeded: a 2xx answer, an `OK` call, or a correct
    /// echo.
    pub succeeded: u64,
    /// HTTP answers by status code, gRPC answers by gRPC status code; empty
    /// for TCP.
    pub statuses: BTreeMap<u16, u64>,
    /// gRPC answers by status name (`OK`, `UNAVAILABLE`), the same counts as
    /// `statuses`, for people and tests to read; empty unless gRPC.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grpc_statuses: BTreeMap<String, u64>,
    /// gRPC error answers by `<STATUS>: <message>`, so that a test sees
    /// that a status message came through a proxy unchanged; empty unless
    /// gRPC. Filled by the gRPC run, which sees the messages.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grpc_messages: BTreeMap<String, u64>,
    /// Attempts with no answer (or a wrong echo).
    pub errors: u64,
    /// The errors by cause.
    pub error_reasons: BTreeMap<String, u64>,
    /// Answers by the server that gave them, when servers say who they are.
    pub servers: BTreeMap<String, u64>,
    /// Over the answered attempts only; `None` when none was answered.
    pub latency: Option<Latency>,
    /// Wall time of the whole run.
    pub elapsed_ms: f64,
}

// === impl Outcome ===

impl Outcome {
    /// Whether the attempt succeeded over `protocol`: `OK` for gRPC, else
    /// as [`Outcome::is_success`].
    pub fn is_success_over(&self, protocol: Protocol) -> bool {
        match (protocol, self) {
            (Protocol::Grpc, Outcome::Answered { status, .. }) => *status == Some(0),
            _ => self.is_success(),
        }
    }

    /// A 2xx answer, or (TCP) a correct echo.
    pub fn is_success(&self) -> bool {
        match self {
            Outcome::Answered { status, .. } => {
                status.is_none_or(|code| (200..300).contains(&code))
            }
            Outcome::Failed { .. } => false,
        }
    }
}

// === impl Latency ===

impl Latency {
    /// The percentiles of `samples`, in any order; `None` when empty.
    pub fn from_samples(mut samples: Vec<Duration>) -> Option<Self> {
        samples.sort_unstable();
        let at = |p| percentile(&samples, p).map(millis);
        Some(Latency {
            p50_ms: at(50.0)?,
            p90_ms: at(90.0)?,
            p99_ms: at(99.0)?,
            max_ms: at(100.0)?,
        })
    }
}

/// The `p`th percentile (0 to 100) of `sorted`, by the nearest-rank method:
/// the smallest sample that at least `p` percent of the samples are not
/// greater than. It is always one of the samples, never an interpolation,
/// so a p99 is a latency some request really had. `sorted` must be in
/// ascending order; `None` when it is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let last = sorted.len().checked_sub(1)?;
    let p = if p.is_nan() {
        100.0
    } else {
        p.clamp(0.0, 100.0)
    };
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(last)).copied()
}

// === impl Summary ===

impl Summary {
    pub fn new(protocol: Protocol, outcomes: &[Outcome], elapsed: Duration) -> Self {
        let mut summary = Summary {
            protocol,
            attempts: outcomes.len() as u64,
            succeeded: 0,
            statuses: BTreeMap::new(),
            grpc_statuses: BTreeMap::new(),
            grpc_messages: BTreeMap::new(),
            errors: 0,
            error_reasons: BTreeMap::new(),
            servers: BTreeMap::new(),
            latency: None,
            elapsed_ms: millis(elapsed),
        };
        let mut latencies = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            if outcome.is_success_over(protocol) {
                summary.succeeded += 1;
            }
            match outcome {
                Outcome::Answered {
                    status,
                    server,
                    latency,
                } => {
                    if let Some(code) = status {
                        *summary.statuses.entry(*code).or_default() += 1;
                        if protocol == Protocol::Grpc {
                            let name = name_of_number(*code)
                                .map_or_else(|| format!("code {code}"), str::to_owned);
                            *summary.grpc_statuses.entry(name).or_default() += 1;
                        }
                    }
                    if let Some(server) = server {
                        *summary.servers.entry(server.clone()).or_default() += 1;
                    }
                    latencies.push(*latency);
                }
                Outcome::Failed { reason } => {
                    summary.errors += 1;
                    *summary.error_reasons.entry(reason.clone()).or_default() += 1;
                }
            }
        }
        summary.latency = Latency::from_samples(latencies);
        summary
    }

    /// Whether every attempt succeeded (and there was at least one).
    pub fn all_succeeded(&self) -> bool {
        self.attempts > 0 && self.succeeded == self.attempts
    }

    /// The attempts that did not succeed: errors, and non-2xx answers.
    pub fn unsuccessful(&self) -> u64 {
        self.attempts - self.succeeded
    }

    /// What the attempts were: "requests" or "connections" (singular for
    /// one).
    pub fn attempts_noun(&self) -> &'static str {
        match (self.protocol, self.attempts) {
            (Protocol::Http, 1) => "request",
            (Protocol::Http, _) => "requests",
            (Protocol::Grpc, 1) => "call",
            (Protocol::Grpc, _) => "calls",
            (Protocol::Tcp, 1) => "connection",
            (Protocol::Tcp, _) => "connections",
        }
    }

    /// The summary for a terminal, one aspect a line.
    pub fn render_text(&self) -> String {
        let mut text = String::new();
        // `write!` to a `String` cannot fail; the results are ignored.
        let _ = writeln!(
            text,
            "{} {} in {:.2}s: {} succeeded, {} did not",
            self.attempts,
            self.attempts_noun(),
            self.elapsed_ms / 1e3,
            self.succeeded,
            self.unsuccessful(),
        );
        match self.protocol {
            Protocol::Http => {
                let _ = writeln!(text, "status   {}", counts(&self.statuses));
            }
            Protocol::Grpc => {
                let _ = writeln!(text, "status   {}", counts(&self.grpc_statuses));
                if !self.grpc_messages.is_empty() {
                    let _ = writeln!(text, "messages {}", counts(&self.grpc_messages));
                }
            }
            Protocol::Tcp => {}
        }
        let _ = writeln!(text, "errors   {}", counts(&self.error_reasons));
        if !self.servers.is_empty() {
            let _ = writeln!(text, "servers  {}", counts(&self.servers));
        }
        let _ = match &self.latency {
            Some(latency) => writeln!(
                text,
                "latency  p50 {}  p90 {}  p99 {}  max {}",
                format_millis(latency.p50_ms),
                format_millis(latency.p90_ms),
                format_millis(latency.p99_ms),
                format_millis(latency.max_ms),
            ),
            None => writeln!(text, "latency  none answered"),
        };
        text
    }
}

/// `200 x 90, 503 x 10`, or `none`.
fn counts<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    let parts: Vec<String> = map
        .iter()
        .map(|(key, count)| format!("{key} x {count}"))
        .collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests;

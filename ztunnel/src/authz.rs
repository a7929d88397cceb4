//! L4 authorization: whether a connection to a workload may proceed, with
//! Istio's precedence. A pure function of the applicable policies and the
//! connection.
//!
//! 1. A DENY policy that matches denies.
//! 2. Otherwise, if ALLOW policies apply, one of them must match.
//! 3. Otherwise the connection is allowed.
//!
//! Dry-run policies never decide; the ones that would have matched are
//! returned so the caller can log them.
//!
//! [`waypoint::authorize`] adds the implied ALLOW of the destination's own
//! waypoint; the proxy and the connection re-checks call it.

use std::sync::Arc;

use crate::state::policy::{Action, Connection, Policy};

/// The outcome for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// Dry-run policies whose action would have applied (for the log).
    pub dry_run: Vec<Arc<str>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied by this DENY policy (`<ns>/<name>`).
    DeniedBy(Arc<str>),
    /// ALLOW policies apply and none matched.
    NotAllowed,
}

// === impl Decision ===

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// The reason for an access log or error, without naming rules to the
    /// peer (the peer only ever sees "denied").
    pub fn reason(&self) -> String {
        match self {
            Decision::Allow => "allowed".into(),
            Decision::DeniedBy(policy) => format!("denied by DENY policy {policy}"),
            Decision::NotAllowed => "no ALLOW policy matched".into(),
        }
    }
}

/// Evaluates `policies` (those that apply to the destination workload) for
/// `conn`.
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a Arc<Policy>>,
    conn: &Connection,
) -> Verdict {
    let mut dry_run = Vec::new();
    let mut denied_by = None;
    let mut allow_policies = 0usize;
    let mut allowed = false;
    for policy in policies {
        if policy.dry_run {
            let would_apply = match policy.action {
                Action::Deny => policy.matches(conn),
                Action::Allow => !policy.matches(conn),
            };
            if would_apply {
                dry_run.push(policy.key());
            }
            continue;
        }
        match policy.action {
            Action::Deny => {
                if denied_by.is_none() && policy.matches(conn) {
                    denied_by = Some(policy.key());
                }
            }
            Action::Allow => {
                allow_policies += 1;
                allowed = allowed || policy.matches(conn);
            }
        }
    }
    let decision = match denied_by {
        Some(policy) => Decision::DeniedBy(policy),
        None if allow_policies == 0 || allowed => Decision::Allow,
        None => Decision::NotAllowed,
    };
    Verdict { decision, dry_run }
}

pub mod waypoint;

#[cfg(test)]
mod tests;

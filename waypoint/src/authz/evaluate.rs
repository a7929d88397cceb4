//! The decision for one request under the policies of its service, with
//! Istio's precedence (see the module doc of `authz`).

use http::StatusCode;

use super::policy::{Action, L7Request, Policy, PolicyName};

/// The status of a denied request, as Envoy's RBAC filter answers.
pub const DENIED_STATUS: StatusCode = StatusCode::FORBIDDEN;

/// The body of a denied request, Envoy's own: it says that policy denied
/// the request and never which policy or rule.
pub const DENIED_BODY: &str = "RBAC: access denied";

/// The outcome for one request: what is enforced, and what is only
/// reported (for the access log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Enforced.
    pub verdict: Verdict,
    /// AUDIT policies that matched, in the order given.
    pub audited_by: Vec<PolicyName>,
    /// What the dry-run policies would have decided.
    pub dry_run: DryRun,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Denied by this DENY policy (the first that matched, in the order
    /// given).
    DeniedBy(PolicyName),
    /// ALLOW policies apply and none matched.
    NotAllowed,
}

/// The dry-run policies evaluated on their own, as Istio's two shadow
/// engines do: the DENY ones together, the ALLOW ones together. `None`
/// where there is no dry-run policy of that action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DryRun {
    /// [`Verdict::DeniedBy`] the first dry-run DENY policy that matched,
    /// or [`Verdict::Allow`].
    pub deny: Option<Verdict>,
    /// [`Verdict::Allow`] when a dry-run ALLOW policy matched, or
    /// [`Verdict::NotAllowed`].
    pub allow: Option<Verdict>,
}

/// Evaluates `policies` (those that apply to the request's service) for
/// `request`. The order of the policies changes only which one is named.
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    request: &L7Request<'_>,
) -> Decision {
    let mut enforced = Engine::default();
    let mut shadow_deny = Engine::default();
    let mut shadow_allow = Engine::default();
    let mut audited_by = Vec::new();
    for policy in policies {
        match (policy.action, policy.dry_run) {
            (Action::Audit, _) => {
                if policy.matches(request) {
                    audited_by.push(policy.name.clone());
                }
            }
            (Action::Deny, false) => enforced.deny(policy, request),
            (Action::Allow, false) => enforced.allow(policy, request),
            (Action::Deny, true) => shadow_deny.deny(policy, request),
            (Action::Allow, true) => shadow_allow.allow(policy, request),
        }
    }
    Decision {
        verdict: enforced.verdict(),
        audited_by,
        dry_run: DryRun {
            deny: shadow_deny.has_deny.then(|| shadow_deny.verdict()),
            allow: (shadow_allow.allow_policies > 0).then(|| shadow_allow.verdict()),
        },
    }
}

/// One set of policies evaluated together.
#[derive(Debug, Default)]
struct Engine {
    /// The first DENY policy that matched.
    denied_by: Option<PolicyName>,
    /// Whether any DENY policy was seen (for a shadow engine's `None`).
    has_deny: bool,
    /// How many ALLOW policies were seen.
    allow_policies: usize,
    /// Whether one of them matched.
    allowed: bool,
}

// === impl Engine ===

impl Engine {
    fn deny(&mut self, policy: &Policy, request: &L7Request<'_>) {
        self.has_deny = true;
        if self.denied_by.is_none() && policy.matches(request) {
            self.denied_by = Some(policy.name.clone());
        }
    }

    fn allow(&mut self, policy: &Policy, request: &L7Request<'_>) {
        self.allow_policies += 1;
        // Once one matched, the others cannot change the outcome.
        self.allowed = self.allowed || policy.matches(request);
    }

    fn verdict(self) -> Verdict {
        match self.denied_by {
            Some(policy) => Verdict::DeniedBy(policy),
            None if self.allow_policies == 0 || self.allowed => Verdict::Allow,
            None => Verdict::NotAllowed,
        }
    }
}

// === impl Decision ===

impl Decision {
    pub fn is_allowed(&self) -> bool {
        self.verdict.is_allowed()
    }

    /// Why, for the access log; never for the peer, which only ever gets
    /// [`DENIED_BODY`].
    pub fn reason(&self) -> String {
        self.verdict.reason()
    }
}

// === impl Verdict ===

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allow)
    }

    pub fn reason(&self) -> String {
        match self {
            Verdict::Allow => "allowed".into(),
            Verdict::DeniedBy(policy) => format!("denied by DENY policy {policy}"),
            Verdict::NotAllowed => "denied: no ALLOW policy matched".into(),
        }
    }
}

#[cfg(test)]
mod tests;

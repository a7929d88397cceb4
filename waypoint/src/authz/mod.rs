//! L7 authorization: whether a request through the waypoint may proceed,
//! under the `AuthorizationPolicy`s that apply to its service, with
//! Istio's semantics and precedence. [`evaluate`] is a pure function of
//! the policies and the request ([`L7Request`]): no I/O, no clock.
//!
//! 1. A DENY policy that matches denies.
//! 2. Otherwise, if ALLOW policies apply, one of them must match.
//! 3. Otherwise the request is allowed.
//!
//! AUDIT policies never decide; the ones that match are reported for the
//! access log. Dry-run policies never decide either; what they would have
//! decided is reported as Istio's shadow engines do, one outcome for the
//! dry-run DENY policies and one for the dry-run ALLOW policies.
//! CUSTOM (ext_authz) is refused when the resource is converted.
//!
//! A denied request is answered [`DENIED_STATUS`] with [`DENIED_BODY`],
//! as Envoy does; the body never names the policy or the rule, which go
//! to the log only ([`Decision::reason`]).
//!
//! The policies come from the pushed `WaypointAuthorization` resource with
//! `TryFrom` (`convert`), where every field is checked, so that matching
//! itself cannot fail.

mod convert;
mod evaluate;
mod policy;

pub use convert::{ConvertError, Problem};
pub use evaluate::{DENIED_BODY, DENIED_STATUS, Decision, DryRun, Verdict, evaluate};
pub use policy::{
    Action, Condition, ConditionKey, L7Request, Operation, Policy, PolicyName, Rule,
    ServicePolicies, Source, StringMatch,
};

#[cfg(test)]
mod testing;

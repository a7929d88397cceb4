//! The destination's own waypoint is let in.
//!
//! Traffic that a waypoint forwards reaches the destination's ztunnel with
//! the waypoint's identity, not the original client's: the waypoint has
//! already applied the service's policies, at L7. So a connection from a
//! waypoint that stands in front of the destination (the workload's own
//! waypoint, or the waypoint of a service the workload backs) counts as
//! allowed, as if an ALLOW policy named it: Istio's control plane writes
//! exactly such an implicit policy for each waypoint. Like any ALLOW, it
//! does not override a DENY policy that matches the waypoint.
//!
//! "From the waypoint" needs both the proven identity of one of the
//! waypoint's workloads and that workload's address as the source, as
//! Istio's ztunnel checks: an identity alone could be shared by other
//! workloads of the same service account.

use super::{Decision, Verdict, evaluate};
use crate::state::{Connection, State, Workload};

/// L4 authorization of `conn` to `workload`: its policies, plus the
/// implied ALLOW of its own waypoint.
pub fn authorize(state: &State, workload: &Workload, conn: &Connection) -> Verdict {
    let mut verdict = evaluate(state.policies_for(workload), conn);
    if verdict.decision == Decision::NotAllowed && from_own_waypoint(state, workload, conn) {
        verdict.decision = Decision::Allow;
    }
    verdict
}

/// Whether `conn` comes from a waypoint in front of `workload`.
pub fn from_own_waypoint(state: &State, workload: &Workload, conn: &Connection) -> bool {
    let Some(identity) = &conn.src_identity else {
        return false;
    };
    let is_source = |w: &Workload| w.identity == *identity && w.addresses.contains(&conn.src_ip);
    let service_waypoints = workload
        .services
        .keys()
        .filter_map(|key| state.service_by_key(key))
        .filter_map(|service| service.waypoint.as_ref());
    workload
        .waypoint
        .iter()
        .chain(service_waypoints)
        .any(|waypoint| {
            state
                .gateway_workloads(waypoint)
                .into_iter()
                .any(|w| is_source(w))
        })
}

#[cfg(test)]
mod tests;

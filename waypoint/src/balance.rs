//! Which endpoint of a service gets a request: the `DestinationRule`
//! `loadBalancer.simple` policies as a pure function over the requests in
//! flight to each candidate, with the randomness and the round-robin
//! position passed in, so tests choose them.
//!
//! Least-request is Envoy's (and so Istio's) default: of two candidates
//! drawn at random, the one with fewer requests in flight ("power of two
//! choices"). It follows load without the herd effect of always taking the
//! least loaded, which every waypoint would pick at once.
//!
//! [`BackendPolicy`] is a service's whole `DestinationRule` policy (the
//! balancer, the limits, the outlier detection), built with `TryFrom` from
//! the pushed `WaypointBackendPolicy` resource.

mod policy;

#[cfg(test)]
mod tests;

pub use self::policy::{BackendPolicy, ConvertError, DEFAULT_IDLE_TIMEOUT, Limits, Problem};

/// `loadBalancer.simple`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LoadBalancer {
    /// Power of two choices over requests in flight (Istio's default).
    #[default]
    LeastRequest,
    RoundRobin,
    Random,
}

/// What one choice may read: two independent random numbers and the
/// service's round-robin position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    pub first: u32,
    pub second: u32,
    /// Advanced by the caller once per first attempt.
    pub round_robin: usize,
}

// === impl Draw ===

impl Draw {
    /// Fresh random numbers at round-robin position `round_robin`.
    pub fn random(round_robin: usize) -> Self {
        Draw {
            first: fastrand::u32(..),
            second: fastrand::u32(..),
            round_robin,
        }
    }
}

/// The index of the candidate to use, given the requests in flight to
/// each; `None` when there is no candidate.
pub fn pick(policy: LoadBalancer, in_flight: &[u64], draw: Draw) -> Option<usize> {
    let n = in_flight.len();
    if n == 0 {
        return None;
    }
    let index = match policy {
        LoadBalancer::RoundRobin => draw.round_robin % n,
        LoadBalancer::Random => scale(draw.first, n),
        LoadBalancer::LeastRequest if n == 1 => 0,
        LoadBalancer::LeastRequest => {
            let a = scale(draw.first, n);
            // The second draw over the other n - 1 candidates, so the two
            // are always distinct.
            let mut b = scale(draw.second, n - 1);
            if b >= a {
                b += 1;
            }
            // A tie goes to the first draw, so ties spread at random too.
            if in_flight[b] < in_flight[a] { b } else { a }
        }
    };
    Some(index)
}

/// `random` scaled onto `0..n` without modulo bias.
fn scale(random: u32, n: usize) -> usize {
    // A u32 times a usize fits in a u128, and the result is below `n`.
    ((u128::from(random) * n as u128) >> 32) as usize
}

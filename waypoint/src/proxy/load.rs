//! What the waypoint tracks of each service's endpoints to apply its
//! `DestinationRule` policy: requests in flight (per endpoint, for the
//! least-request balancer, and in total, for the request limit), the
//! round-robin position, and the outlier detector's state.
//!
//! The decisions are the pure ones of `balance` and `outlier`; this
//! module holds their inputs behind one lock per waypoint, taken briefly
//! to choose and once more when an attempt ends. An [`InFlight`] guard
//! counts an attempt from the moment its endpoint is chosen until it is
//! dropped, so a cancelled attempt (timeout, client gone) cannot leak a
//! count.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tracing::info;

use super::Candidates;
use crate::balance::{BackendPolicy, Draw, pick};
use crate::fast_map::FastMap;
use crate::outlier::{AttemptResult, OutlierState};

/// Per service hostname.
#[derive(Debug, Default)]
pub(crate) struct Loads {
    services: Mutex<FastMap<Arc<str>, ServiceLoad>>,
}

#[derive(Debug, Default)]
struct ServiceLoad {
    round_robin: usize,
    in_flight: FastMap<SocketAddr, u64>,
    total_in_flight: u64,
    outlier: OutlierState,
}

/// Why no endpoint was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No healthy endpoint that is not ejected (`UH`).
    NoEndpoint,
    /// The service's request limit is reached (`UO`).
    Overflow,
}

/// One attempt in flight to `addr`; counts until dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    loads: Arc<Loads>,
    service: Arc<str>,
    addr: SocketAddr,
    /// Candidates when it was chosen: what `maxEjectionPercent` is of.
    endpoints: usize,
    policy: Arc<BackendPolicy>,
}

// === impl Loads ===

impl Loads {
    /// Chooses among `candidates` (the healthy endpoints' addresses, the
    /// earlier attempts of this request already left out) with `policy`:
    /// ejected endpoints are skipped, and the request limit is checked
    /// first. `first_attempt` turns the round-robin wheel.
    pub(crate) fn choose(
        self: &Arc<Self>,
        service: &Arc<str>,
        candidates: &[SocketAddr],
        policy: &Arc<BackendPolicy>,
        first_attempt: bool,
        now: Instant,
    ) -> Result<(usize, InFlight), Refusal> {
        let mut services = self.services.lock().unwrap_or_else(PoisonError::into_inner);
        let load = services.entry(service.clone()).or_default();
        if let Some(limit) = policy.limits.max_requests
            && load.total_in_flight >= u64::from(limit)
        {
            return Err(Refusal::Overflow);
        }
        let usable: Candidates<usize> = (0..candidates.len())
            .filter(|&i| !load.outlier.is_ejected(&candidates[i], now))
            .collect();
        let in_flight: Candidates<u64> = usable
            .iter()
            .map(|&i| load.in_flight.get(&candidates[i]).copied().unwrap_or(0))
            .collect();
        let chosen = pick(
            policy.load_balancer,
            &in_flight,
            Draw::random(load.round_robin),
        )
        .map(|k| usable[k])
        .ok_or(Refusal::NoEndpoint)?;
        if first_attempt {
            load.round_robin = load.round_robin.wrapping_add(1);
        }
        let addr = candidates[chosen];
        *load.in_flight.entry(addr).or_default() += 1;
        load.total_in_flight += 1;
        let guard = InFlight {
            loads: self.clone(),
            service: service.clone(),
            addr,
            endpoints: candidates.len(),
            policy: policy.clone(),
        };
        Ok((chosen, guard))
    }
}

// === impl InFlight ===

impl InFlight {
    /// How the attempt ended, for outlier detection; the count itself ends
    /// when the guard is dropped.
    pub(crate) fn finish(&self, result: AttemptResult, now: Instant) {
        let Some(config) = &self.policy.outlier else {
            return;
        };
        let mut services = self
            .loads
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let load = services.entry(self.service.clone()).or_default();
        if let Some(ejected_for) =
            load.outlier
                .record(config, self.addr, result, self.endpoints, now)
        {
            info!(
                dst.service = %self.service,
                upstream.addr = %self.addr,
                ?ejected_for,
                "outlier detection ejected an endpoint"
            );
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut services = self
            .loads
            .services
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(load) = services.get_mut(&self.service) {
            load.total_in_flight = load.total_in_flight.saturating_sub(1);
            if let Some(count) = load.in_flight.get_mut(&self.addr) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    load.in_flight.remove(&self.addr);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::balance::LoadBalancer;
    use crate::outlier::OutlierConfig;

    fn addrs() -> [SocketAddr; 2] {
        [
            SocketAddr::from(([10, 0, 0, 1], 80)),
            SocketAddr::from(([10, 0, 0, 2], 80)),
        ]
    }

    fn policy(max_requests: Option<u32>, outlier: Option<OutlierConfig>) -> Arc<BackendPolicy> {
        let mut policy = BackendPolicy {
            hostname: "b.ns.svc.cluster.local".into(),
            load_balancer: LoadBalancer::LeastRequest,
            outlier,
            ..BackendPolicy::default()
        };
        policy.limits.max_requests = max_requests;
        Arc::new(policy)
    }

    #[test]
    fn the_request_limit_overflows_until_an_attempt_ends() {
        let loads = Arc::new(Loads::default());
        let service: Arc<str> = "b".into();
        let policy = policy(Some(1), None);
        let now = Instant::now();
        let first = loads
            .choose(&service, &addrs(), &policy, true, now)
            .unwrap();
        let refused = loads.choose(&service, &addrs(), &policy, true, now);
        assert_eq!(refused.map(|(i, _)| i), Err(Refusal::Overflow));
        drop(first);
        assert!(loads.choose(&service, &addrs(), &policy, true, now).is_ok());
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let loads = Arc::new(Loads::default());
        let service: Arc<str> = "b".into();
        let policy = policy(None, None);
        let now = Instant::now();
        let (busy, _held) = loads
            .choose(&service, &addrs(), &policy, true, now)
            .unwrap();
        // With two candidates, power of two choices compares both.
        for _ in 0..20 {
            let (other, _) = loads
                .choose(&service, &addrs(), &policy, true, now)
                .unwrap();
            assert_ne!(other, busy);
        }
    }

    #[test]
    fn an_ejected_endpoint_gets_nothing_until_it_is_back() {
        let loads = Arc::new(Loads::default());
        let service: Arc<str> = "b".into();
        let config = OutlierConfig {
            consecutive_5xx: Some(1),
            consecutive_gateway_errors: None,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 50,
        };
        let policy = policy(None, Some(config));
        let now = Instant::now();
        let (bad, guard) = loads
            .choose(&service, &addrs(), &policy, true, now)
            .unwrap();
        guard.finish(AttemptResult::Status(503), now);
        drop(guard);
        for _ in 0..20 {
            let (chosen, _) = loads
                .choose(&service, &addrs(), &policy, true, now)
                .unwrap();
            assert_ne!(chosen, bad);
        }
        // Only the bad one left as a candidate: none usable while ejected.
        let only_bad = [addrs()[bad]];
        let refused = loads.choose(&service, &only_bad, &policy, true, now);
        assert_eq!(refused.map(|(i, _)| i), Err(Refusal::NoEndpoint));
        let later = now + Duration::from_secs(30);
        assert!(
            loads
                .choose(&service, &only_bad, &policy, true, later)
                .is_ok()
        );
    }
}

//! Outlier detection from `DestinationRule` `outlierDetection`: an
//! endpoint that fails several requests in a row is ejected (taken out of
//! load balancing) for a while, and comes back on its own. Pure: every
//! call takes the time, so tests step a clock.
//!
//! As in Envoy:
//! - `consecutive5xxErrors` counts 5xx answers and connections that failed
//!   (Envoy maps those to 503); `consecutiveGatewayErrors` counts 502, 503,
//!   504 and failed connections. Any other answer resets both counts.
//! - An endpoint is ejected the moment a count reaches its threshold, for
//!   `baseEjectionTime` times the number of times it has been ejected, so
//!   an endpoint that keeps failing stays out longer each time (capped at
//!   Envoy's default `max_ejection_time`, 300 s).
//! - Never more than `maxEjectionPercent` of the endpoints at once, but at
//!   least one when the percentage is above zero, so two endpoints with
//!   Istio's default of 10% can still lose the bad one.
//! - Each `interval` an endpoint spends in service without being ejected
//!   takes one off its ejection count, so the backoff decays.
//!
//! An ejected endpoint is back as soon as its time is up (Envoy waits for
//! the next `interval` tick; here no timer is needed).

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::fast_map::FastMap;

/// Envoy's default `max_ejection_time`.
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// `outlierDetection`, defaults filled in by the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// `None`: 5xx answers do not eject.
    pub consecutive_5xx: Option<u32>,
    /// `None`: gateway errors do not eject (beyond counting as 5xx).
    pub consecutive_gateway_errors: Option<u32>,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    /// 0 to 100.
    pub max_ejection_percent: u32,
}

/// How one attempt to an endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// A response head with this status.
    Status(u16),
    /// No response: the connection failed or broke.
    ConnectionFailed,
}

/// What the detector knows of each endpoint of one service.
#[derive(Debug, Clone, Default)]
pub struct OutlierState {
    endpoints: FastMap<SocketAddr, EndpointHealth>,
}

#[derive(Debug, Clone, Default)]
struct EndpointHealth {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    /// Times ejected, decayed by one per healthy interval.
    ejections: u32,
    /// While ejected: until when.
    ejected_until: Option<Instant>,
    /// When `ejections` last changed, for the decay.
    since: Option<Instant>,
}

// === impl OutlierState ===

impl OutlierState {
    /// Whether `endpoint` is out of load balancing at `now`.
    pub fn is_ejected(&self, endpoint: &SocketAddr, now: Instant) -> bool {
        self.endpoints
            .get(endpoint)
            .and_then(|h| h.ejected_until)
            .is_some_and(|until| now < until)
    }

    /// Records how an attempt to `endpoint` (one of `endpoints` endpoints
    /// of the service) ended; returns how long it is ejected for, when
    /// this attempt ejects it.
    pub fn record(
        &mut self,
        config: &OutlierConfig,
        endpoint: SocketAddr,
        result: AttemptResult,
        endpoints: usize,
        now: Instant,
    ) -> Option<Duration> {
        let ejected_now = self.ejected_count(now);
        let health = self.endpoints.entry(endpoint).or_default();
        health.come_back(config, now);
        let (is_5xx, is_gateway) = match result {
            AttemptResult::ConnectionFailed => (true, true),
            AttemptResult::Status(status) => {
                ((500..600).contains(&status), matches!(status, 502..=504))
            }
        };
        if !is_5xx {
            health.consecutive_5xx = 0;
            health.consecutive_gateway = 0;
            return None;
        }
        health.consecutive_5xx += 1;
        if is_gateway {
            health.consecutive_gateway += 1;
        } else {
            health.consecutive_gateway = 0;
        }
        let reached = |count: u32, threshold: Option<u32>| threshold.is_some_and(|t| count >= t);
        let tripped = reached(health.consecutive_5xx, config.consecutive_5xx)
            || reached(
                health.consecutive_gateway,
                config.consecutive_gateway_errors,
            );
        if !tripped || health.ejected_until.is_some_and(|until| now < until) {
            return None;
        }
        if ejected_now >= max_ejected(config.max_ejection_percent, endpoints) {
            return None;
        }
        health.ejections += 1;
        health.since = Some(now);
        let duration = config
            .base_ejection_time
            .saturating_mul(health.ejections)
            .min(MAX_EJECTION_TIME.max(config.base_ejection_time));
        health.ejected_until = Some(now + duration);
        health.consecutive_5xx = 0;
        health.consecutive_gateway = 0;
        Some(duration)
    }

    /// Forgets endpoints that are no longer in the service.
    pub fn retain(&mut self, mut keep: impl FnMut(&SocketAddr) -> bool) {
        self.endpoints.retain(|addr, _| keep(addr));
    }

    fn ejected_count(&self, now: Instant) -> usize {
        self.endpoints
            .values()
            .filter(|h| h.ejected_until.is_some_and(|until| now < until))
            .count()
    }
}

// === impl EndpointHealth ===

impl EndpointHealth {
    /// Ends a finished ejection and decays the ejection count by one per
    /// whole `interval` spent in service since.
    fn come_back(&mut self, config: &OutlierConfig, now: Instant) {
        if let Some(until) = self.ejected_until
            && now >= until
        {
            self.ejected_until = None;
            self.since = Some(until);
        }
        if self.ejected_until.is_some() || config.interval.is_zero() {
            return;
        }
        if let Some(since) = self.since {
            let healthy = now.saturating_duration_since(since);
            let intervals = healthy.as_nanos() / config.interval.as_nanos();
            let decay = u32::try_from(intervals).unwrap_or(u32::MAX);
            if decay > 0 {
                self.ejections = self.ejections.saturating_sub(decay);
                self.since = Some(now);
            }
        }
    }
}

/// How many of `endpoints` may be ejected at once: `percent` of them,
/// rounded down, but at least one when `percent` is above zero.
fn max_ejected(percent: u32, endpoints: usize) -> usize {
    if percent == 0 {
        return 0;
    }
    let share = endpoints.saturating_mul(percent.min(100) as usize) / 100;
    share.max(1)
}

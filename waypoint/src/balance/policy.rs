//! The edge between pushed config and load balancing: a
//! `WaypointBackendPolicy` resource (type URL
//! [`proto::WAYPOINT_BACKEND_POLICY_TYPE_URL`]) becomes a
//! [`BackendPolicy`]: the balancer, the limits and the outlier detection
//! of one service. A resource is all-or-nothing: its first problem rejects
//! it, so the xDS client NACKs it and the service keeps its previous
//! policy.

use std::time::Duration;

use proto::waypoint as pb;
use proto::waypoint::waypoint_backend_policy::LoadBalancer as PbBalancer;

use super::LoadBalancer;
use crate::located::Located;
use crate::outlier::OutlierConfig;
use crate::route::is_precise_hostname;

/// How the endpoints of one service are chosen, limited and ejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendPolicy {
    pub hostname: std::sync::Arc<str>,
    pub load_balancer: LoadBalancer,
    pub limits: Limits,
    /// `None`: no outlier detection.
    pub outlier: Option<OutlierConfig>,
}

/// `connectionPool`; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the service.
    pub max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    /// `http.idleTimeout`: how long an HTTP connection without requests
    /// is kept; `None` keeps it until the peer closes it (`0s`).
    pub idle_timeout: Option<Duration>,
}

/// Istio's `http.idleTimeout` when a DestinationRule sets none (Envoy's
/// default too).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A `WaypointBackendPolicy` that cannot become a [`BackendPolicy`], and
/// where.
pub type ConvertError = Located<Problem>;

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error(
        "hostname `{0}` is not a valid host name: write a lowercase DNS name (RFC 1123) without \
         a port"
    )]
    InvalidHostname(String),
    #[error("load balancer {0} is not LEAST_REQUEST (0), RANDOM (2) or ROUND_ROBIN (4)")]
    UnknownLoadBalancer(i32),
    #[error("{0} must be a duration above zero")]
    InvalidDuration(&'static str),
    #[error("{0} must not be a negative duration")]
    NegativeDuration(&'static str),
    #[error("max_ejection_percent {0} is above 100")]
    InvalidPercent(u32),
}

// === impl Limits ===

impl Default for Limits {
    /// No limits, and Istio's idle timeout.
    fn default() -> Self {
        Limits {
            max_connections: None,
            max_pending_requests: None,
            max_requests: None,
            max_requests_per_connection: None,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

// === impl BackendPolicy ===

impl Default for BackendPolicy {
    /// Istio's defaults for a service without a DestinationRule.
    fn default() -> Self {
        BackendPolicy {
            hostname: "".into(),
            load_balancer: LoadBalancer::LeastRequest,
            limits: Limits::default(),
            outlier: None,
        }
    }
}

impl TryFrom<pb::WaypointBackendPolicy> for BackendPolicy {
    type Error = ConvertError;

    fn try_from(resource: pb::WaypointBackendPolicy) -> Result<Self, Self::Error> {
        let pb::WaypointBackendPolicy {
            hostname,
            load_balancer,
            limits,
            outlier_detection,
        } = resource;
        if hostname.is_empty() {
            return Err(Problem::Missing("the service hostname").into());
        }
        if !is_precise_hostname(&hostname) {
            return Err(Problem::InvalidHostname(hostname).into());
        }
        let load_balancer = match PbBalancer::try_from(load_balancer) {
            Ok(PbBalancer::LeastRequest) => LoadBalancer::LeastRequest,
            Ok(PbBalancer::RoundRobin) => LoadBalancer::RoundRobin,
            Ok(PbBalancer::Random) => LoadBalancer::Random,
            Err(_) => return Err(Problem::UnknownLoadBalancer(load_balancer).into()),
        };
        let nonzero = |v: u32| (v > 0).then_some(v);
        let limits = match limits {
            None => Limits::default(),
            Some(l) => Limits {
                max_connections: nonzero(l.max_connections),
                max_pending_requests: nonzero(l.max_pending_requests),
                max_requests: nonzero(l.max_requests),
                max_requests_per_connection: nonzero(l.max_requests_per_connection),
                idle_timeout: match l.idle_timeout {
                    None => Some(DEFAULT_IDLE_TIMEOUT),
                    Some(d) => Some(
                        Duration::try_from(d)
                            .map_err(|_| Problem::NegativeDuration("limits.idle_timeout"))?,
                    )
                    .filter(|d| !d.is_zero()),
                },
            },
        };
        let outlier = outlier_detection
            .map(|o| convert_outlier(o).map_err(|e| e.at("outlier_detection")))
            .transpose()?;
        Ok(BackendPolicy {
            hostname: hostname.into(),
            load_balancer,
            limits,
            outlier,
        })
    }
}

fn convert_outlier(o: pb::OutlierDetection) -> Result<OutlierConfig, ConvertError> {
    let positive = |d: Option<prost_types::Duration>, field: &'static str| {
        d.and_then(|d| Duration::try_from(d).ok())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ConvertError::from(Problem::InvalidDuration(field)))
    };
    if o.max_ejection_percent > 100 {
        return Err(Problem::InvalidPercent(o.max_ejection_percent).into());
    }
    let nonzero = |v: u32| (v > 0).then_some(v);
    Ok(OutlierConfig {
        consecutive_5xx: nonzero(o.consecutive_5xx_errors),
        consecutive_gateway_errors: nonzero(o.consecutive_gateway_errors),
        interval: positive(o.interval, "interval")?,
        base_ejection_time: positive(o.base_ejection_time, "base_ejection_time")?,
        max_ejection_percent: o.max_ejection_percent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_idle_timeout(idle_timeout: Option<prost_types::Duration>) -> pb::WaypointBackendPolicy {
        pb::WaypointBackendPolicy {
            hostname: "reviews.shop.svc.cluster.local".into(),
            limits: Some(pb::ConnectionLimits {
                idle_timeout,
                ..pb::ConnectionLimits::default()
            }),
            ..pb::WaypointBackendPolicy::default()
        }
    }

    fn idle_timeout(
        idle_timeout: Option<prost_types::Duration>,
    ) -> Result<Option<Duration>, ConvertError> {
        BackendPolicy::try_from(with_idle_timeout(idle_timeout)).map(|p| p.limits.idle_timeout)
    }

    #[test]
    fn idle_timeout_unset_is_istios_hour_and_zero_turns_it_off() {
        assert_eq!(idle_timeout(None), Ok(Some(DEFAULT_IDLE_TIMEOUT)));
        let zero = prost_types::Duration::default();
        assert_eq!(idle_timeout(Some(zero)), Ok(None));
        let one_and_a_half = prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000,
        };
        assert_eq!(
            idle_timeout(Some(one_and_a_half)),
            Ok(Some(Duration::from_millis(1500)))
        );
        // No `limits` at all: Istio's defaults, the idle timeout included.
        let bare = pb::WaypointBackendPolicy {
            limits: None,
            ..with_idle_timeout(None)
        };
        let limits = BackendPolicy::try_from(bare).map(|p| p.limits);
        assert_eq!(limits, Ok(Limits::default()));
    }

    #[test]
    fn a_negative_idle_timeout_rejects_the_resource() {
        let negative = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        let error = idle_timeout(Some(negative)).unwrap_err();
        assert!(error.to_string().contains("idle_timeout"), "{error}");
    }
}

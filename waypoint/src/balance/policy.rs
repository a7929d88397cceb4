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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the service.
    pub max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
}

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
    #[error("max_ejection_percent {0} is above 100")]
    InvalidPercent(u32),
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
        let limits = limits.map_or_else(Limits::default, |l| Limits {
            max_connections: nonzero(l.max_connections),
            max_pending_requests: nonzero(l.max_pending_requests),
            max_requests: nonzero(l.max_requests),
            max_requests_per_connection: nonzero(l.max_requests_per_connection),
        });
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

//! Istio `DestinationRule` `trafficPolicy` to the waypoint's
//! `WaypointBackendPolicy`, one resource per service, named `<hostname>`.
//!
//! Read: `loadBalancer.simple` (`LEAST_REQUEST`, the default, `ROUND_ROBIN`,
//! `RANDOM`), `connectionPool.tcp.maxConnections`,
//! `connectionPool.http.{http1MaxPendingRequests, http2MaxRequests,
//! maxRequestsPerConnection, idleTimeout}` and `outlierDetection.{consecutive5xxErrors,
//! consecutiveGatewayErrors, interval, baseEjectionTime,
//! maxEjectionPercent}`, with Istio's defaults filled in (5 consecutive
//! 5xx, gateway errors off, 10 s, 30 s, 10%; an unset `idleTimeout` is
//! left unset, which the waypoint reads as Istio's 1 hour, and `0s` turns
//! it off, as in Envoy). Everything else of a
//! DestinationRule (`subsets`, `portLevelSettings`, `tls`, consistent
//! hashing, the other pool and detection fields) is reported as not
//! applied, never dropped silently.
//!
//! `host` is resolved as a VirtualService's `hosts` are (short name,
//! `name.ns`, `name.ns.svc`, fully qualified); only Services behind a
//! waypoint get a resource. When several rules name one service, the
//! oldest wins and the others are reported. A value that cannot be sent
//! (an unknown balancer, a negative limit, a bad duration, a percentage
//! above 100) drops its part of the policy alone, with a warning: that
//! part falls back to Istio's default, which is what Istio does with a
//! field it rejects at admission.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use proto::waypoint as pb;
use proto::waypoint::waypoint_backend_policy::LoadBalancer as PbBalancer;

use super::notes::Notes;
use super::service::hostname;
use super::waypoint_authz::services_with_waypoints;
use super::waypoint_faults::{duration, service_of_host};
use super::{Diagnostic, Index, MeshConfig, ResourceType};
use crate::model::{
    ConnectionPoolSettings, DestinationRule, LoadBalancerSettings, ObjectKey, ObjectKind,
    OutlierDetection, TrafficPolicy,
};

/// Istio's `outlierDetection` defaults.
const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
const DEFAULT_INTERVAL: &str = "10s";
const DEFAULT_BASE_EJECTION_TIME: &str = "30s";
const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;

/// The waypoint backend policies of a whole index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaypointBackendsTranslated {
    /// By resource name, the service's hostname.
    pub policies: BTreeMap<String, pb::WaypointBackendPolicy>,
    /// Sorted, so two translations of the same input compare equal.
    pub diagnostics: Vec<Diagnostic>,
}

/// Translates every `DestinationRule` in `index`.
pub fn translate_waypoint_backends(
    index: &Index,
    config: &MeshConfig,
) -> WaypointBackendsTranslated {
    let served = services_with_waypoints(index);
    let mut diagnostics = Vec::new();
    let mut rules: Vec<&DestinationRule> = index.destination_rules(None).collect();
    rules.sort_by_key(|rule| {
        (
            rule.metadata.creation_timestamp.clone().map(|t| t.0),
            rule.metadata.namespace.clone(),
            rule.metadata.name.clone(),
        )
    });
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    let mut policies = BTreeMap::new();
    for rule in rules {
        let namespace = rule.metadata.namespace.as_deref().unwrap_or("default");
        let name = rule.metadata.name.as_deref().unwrap_or_default();
        let resource = format!("{namespace}/{name}");
        let mut notes = Notes::new(
            ResourceType::WaypointBackendPolicy,
            ObjectKey::new(ObjectKind::DestinationRule, namespace, name),
            &mut diagnostics,
        );
        let host = &rule.spec.host;
        let Some((svc_namespace, svc_name)) = service_of_host(config, namespace, host) else {
            notes.warn(format!(
                "host {host:?} is not a service name (short, name.namespace, or \
                 name.namespace.svc.{}); wildcards and external hosts are not supported, so the \
                 rule is ignored",
                config.cluster_domain
            ));
            continue;
        };
        let fqdn = hostname(config, &svc_namespace, &svc_name);
        if index.service(&svc_namespace, &svc_name).is_none() {
            notes.warn(format!(
                "host {host:?} ({fqdn}) is not a Service of the mesh; the rule is ignored"
            ));
            continue;
        }
        if !served.contains_key(&(svc_namespace.clone(), svc_name.clone())) {
            notes.warn(format!(
                "Service {svc_namespace}/{svc_name} does not use a waypoint, so nothing applies \
                 this rule to it; label it (or its namespace) istio.io/use-waypoint"
            ));
            continue;
        }
        if let Some(owner) = claimed.get(&fqdn) {
            notes.warn(format!(
                "DestinationRule {owner} already applies to {fqdn} and is older; this one is \
                 ignored (merge the two, or remove one)"
            ));
            continue;
        }
        claimed.insert(fqdn.clone(), resource);
        for (field, set) in [
            ("subsets", rule.spec.subsets.is_some()),
            ("workloadSelector", rule.spec.workload_selector.is_some()),
        ] {
            if set {
                notes.warn(format!(
                    "`{field}` is not supported by the waypoint; it is ignored"
                ));
            }
        }
        let policy = convert_policy(&fqdn, rule.spec.traffic_policy.as_ref(), &mut notes);
        policies.insert(fqdn, policy);
    }
    diagnostics.sort();
    WaypointBackendsTranslated {
        policies,
        diagnostics,
    }
}

fn convert_policy(
    fqdn: &str,
    policy: Option<&TrafficPolicy>,
    notes: &mut Notes<'_>,
) -> pb::WaypointBackendPolicy {
    let mut out = pb::WaypointBackendPolicy {
        hostname: fqdn.to_string(),
        ..pb::WaypointBackendPolicy::default()
    };
    let Some(policy) = policy else {
        return out;
    };
    notes.unsupported(
        "trafficPolicy",
        &[
            ("portLevelSettings", policy.port_level_settings.is_some()),
            ("tls", policy.tls.is_some()),
            ("tunnel", policy.tunnel.is_some()),
            ("proxyProtocol", policy.proxy_protocol.is_some()),
        ],
    );
    if let Some(balancer) = &policy.load_balancer {
        out.load_balancer = load_balancer(balancer, notes) as i32;
    }
    out.limits = policy
        .connection_pool
        .as_ref()
        .map(|pool| limits(pool, notes));
    out.outlier_detection = policy
        .outlier_detection
        .as_ref()
        .and_then(|detection| outlier_detection(detection, notes));
    out
}

fn load_balancer(settings: &LoadBalancerSettings, notes: &mut Notes<'_>) -> PbBalancer {
    notes.unsupported(
        "trafficPolicy.loadBalancer",
        &[
            ("consistentHash", settings.consistent_hash.is_some()),
            ("localityLbSetting", settings.locality_lb_setting.is_some()),
            (
                "warmupDurationSecs",
                settings.warmup_duration_secs.is_some(),
            ),
        ],
    );
    match settings.simple.as_deref() {
        None | Some("UNSPECIFIED" | "LEAST_REQUEST" | "LEAST_CONN") => PbBalancer::LeastRequest,
        Some("ROUND_ROBIN") => PbBalancer::RoundRobin,
        Some("RANDOM") => PbBalancer::Random,
        Some(other) => {
            notes.warn(format!(
                "`loadBalancer.simple: {other}` is not supported (LEAST_REQUEST, ROUND_ROBIN, \
                 RANDOM are); the waypoint uses LEAST_REQUEST"
            ));
            PbBalancer::LeastRequest
        }
    }
}

fn limits(pool: &ConnectionPoolSettings, notes: &mut Notes<'_>) -> pb::ConnectionLimits {
    let mut limit = |field: &str, value: Option<i32>| -> u32 {
        match value {
            None => 0,
            Some(v) if v > 0 => v.unsigned_abs(),
            Some(v) => {
                notes.warn(format!(
                    "`connectionPool.{field}: {v}` is not a positive number; no limit is applied"
                ));
                0
            }
        }
    };
    let tcp = pool.tcp.clone().unwrap_or_default();
    let http = pool.http.clone().unwrap_or_default();
    let out = pb::ConnectionLimits {
        max_connections: limit("tcp.maxConnections", tcp.max_connections),
        max_pending_requests: limit(
            "http.http1MaxPendingRequests",
            http.http1_max_pending_requests,
        ),
        max_requests: limit("http.http2MaxRequests", http.http2_max_requests),
        max_requests_per_connection: limit(
            "http.maxRequestsPerConnection",
            http.max_requests_per_connection,
        ),
        idle_timeout: http
            .idle_timeout
            .as_ref()
            .and_then(|value| idle_timeout(value, notes)),
    };
    notes.unsupported(
        "connectionPool.tcp",
        &[
            ("connectTimeout", tcp.connect_timeout.is_some()),
            ("tcpKeepalive", tcp.tcp_keepalive.is_some()),
            (
                "maxConnectionDuration",
                tcp.max_connection_duration.is_some(),
            ),
            ("idleTimeout", tcp.idle_timeout.is_some()),
        ],
    );
    notes.unsupported(
        "connectionPool.http",
        &[
            ("maxRetries", http.max_retries.is_some()),
            ("h2UpgradePolicy", http.h2_upgrade_policy.is_some()),
            ("useClientProtocol", http.use_client_protocol.is_some()),
            (
                "maxConcurrentStreams",
                http.max_concurrent_streams.is_some(),
            ),
        ],
    );
    out
}

/// `connectionPool.http.idleTimeout`, a protobuf duration such as `"30s"`
/// or `"1.5s"`; `0s` is sent as zero (no idle timeout). A value that is
/// not one is reported and left unset: Istio's default, 1 hour.
fn idle_timeout(value: &serde_json::Value, notes: &mut Notes<'_>) -> Option<prost_types::Duration> {
    const FIELD: &str = "connectionPool.http.idleTimeout";
    let parsed = match value {
        serde_json::Value::String(text) => duration(FIELD, text),
        other => Err(format!(
            "{FIELD} {other} is not a duration string such as \"30s\""
        )),
    };
    match parsed {
        Ok(d) => Some(d),
        Err(error) => {
            notes.warn(format!(
                "`{FIELD}`: {error}; the waypoint uses Istio's default, 1h"
            ));
            None
        }
    }
}

fn outlier_detection(
    detection: &OutlierDetection,
    notes: &mut Notes<'_>,
) -> Option<pb::OutlierDetection> {
    notes.unsupported(
        "outlierDetection",
        &[
            ("minHealthPercent", detection.min_health_percent.is_some()),
            (
                "splitExternalLocalOriginErrors",
                detection.split_external_local_origin_errors.is_some(),
            ),
            (
                "consecutiveLocalOriginFailures",
                detection.consecutive_local_origin_failures.is_some(),
            ),
            ("consecutiveErrors", detection.consecutive_errors.is_some()),
        ],
    );
    let mut time = |field: &str, value: Option<&String>, default: &str| {
        let text = value.map_or(default, String::as_str);
        match duration(&format!("outlierDetection.{field}"), text) {
            Ok(d) if d.seconds > 0 || d.nanos > 0 => d,
            Ok(_) | Err(_) => {
                notes.warn(format!(
                    "`outlierDetection.{field}: {text}` is not a duration above zero; Istio's \
                     default {default} is used"
                ));
                // The defaults are constants that parse.
                duration(field, default).unwrap_or_default()
            }
        }
    };
    let interval = time("interval", detection.interval.as_ref(), DEFAULT_INTERVAL);
    let base_ejection_time = time(
        "baseEjectionTime",
        detection.base_ejection_time.as_ref(),
        DEFAULT_BASE_EJECTION_TIME,
    );
    let max_ejection_percent = match detection.max_ejection_percent {
        None => DEFAULT_MAX_EJECTION_PERCENT,
        Some(p @ 0..=100) => p.unsigned_abs(),
        Some(p) => {
            notes.warn(format!(
                "`outlierDetection.maxEjectionPercent: {p}` is not from 0 to 100; Istio's \
                 default {DEFAULT_MAX_EJECTION_PERCENT} is used"
            ));
            DEFAULT_MAX_EJECTION_PERCENT
        }
    };
    let consecutive_5xx_errors = detection
        .consecutive_5xx_errors
        .unwrap_or(DEFAULT_CONSECUTIVE_5XX);
    let consecutive_gateway_errors = detection.consecutive_gateway_errors.unwrap_or(0);
    if consecutive_5xx_errors == 0 && consecutive_gateway_errors == 0 {
        // Both thresholds off: nothing to detect.
        return None;
    }
    Some(pb::OutlierDetection {
        consecutive_5xx_errors,
        consecutive_gateway_errors,
        interval: Some(interval),
        base_ejection_time: Some(base_ejection_time),
        max_ejection_percent,
    })
}

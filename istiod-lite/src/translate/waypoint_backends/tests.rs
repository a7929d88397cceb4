//! The waypoint backend-policy translation, from
//! `tests/fixtures/waypoint_backends.yaml`; what is sent is fed to the
//! waypoint's own conversion.

// Helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used)]

use super::*;

const FIXTURE: &str = include_str!("../../../tests/fixtures/waypoint_backends.yaml");
const REVIEWS: &str = "reviews.shop.svc.cluster.local";
const RATINGS: &str = "ratings.shop.svc.cluster.local";
const DETAILS: &str = "details.shop.svc.cluster.local";

fn translated() -> WaypointBackendsTranslated {
    let index = Index::from_yaml(FIXTURE).unwrap();
    translate_waypoint_backends(&index, &MeshConfig::default())
}

fn messages_about(out: &WaypointBackendsTranslated, rule: &str) -> Vec<String> {
    out.diagnostics
        .iter()
        .filter(|d| d.resource == rule)
        .map(|d| d.message.clone())
        .collect()
}

fn seconds(seconds: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos: 0 })
}

#[test]
fn every_read_field_carries_over_and_the_rest_is_reported() {
    let out = translated();
    assert_eq!(
        out.policies.keys().collect::<Vec<_>>(),
        [DETAILS, RATINGS, REVIEWS]
    );
    let reviews = &out.policies[REVIEWS];
    assert_eq!(reviews.load_balancer, PbBalancer::RoundRobin as i32);
    assert_eq!(
        reviews.limits,
        Some(pb::ConnectionLimits {
            max_connections: 10,
            max_pending_requests: 2,
            max_requests: 1,
            max_requests_per_connection: 100,
            idle_timeout: Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000,
            }),
        })
    );
    assert_eq!(
        reviews.outlier_detection,
        Some(pb::OutlierDetection {
            consecutive_5xx_errors: 2,
            consecutive_gateway_errors: 1,
            interval: seconds(1),
            base_ejection_time: seconds(300),
            max_ejection_percent: 50,
        })
    );
    let messages = messages_about(&out, "shop/reviews");
    // The four limits and the idle timeout are applied by the waypoint:
    // nothing to report.
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`subsets` is not supported"))
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("`connectionPool.tcp.connectTimeout` is not supported"))
    );
    let again = messages_about(&out, "shop/reviews-again");
    assert!(
        again[0].contains("DestinationRule shop/reviews already applies"),
        "{again:?}"
    );
    let web = messages_about(&out, "plain/web");
    assert!(
        web[0].contains("plain/web does not use a waypoint"),
        "{web:?}"
    );
}

#[test]
fn defaults_are_istios_and_a_bad_value_falls_back_alone() {
    let out = translated();
    let ratings = &out.policies[RATINGS];
    assert_eq!(ratings.load_balancer, PbBalancer::LeastRequest as i32);
    // The bad idleTimeout is left unset: the waypoint's default, 1h.
    assert_eq!(ratings.limits, Some(pb::ConnectionLimits::default()));
    assert_eq!(
        ratings.outlier_detection,
        Some(pb::OutlierDetection {
            consecutive_5xx_errors: 5,
            consecutive_gateway_errors: 0,
            interval: seconds(10),
            base_ejection_time: seconds(30),
            max_ejection_percent: 10,
        })
    );
    let messages = messages_about(&out, "shop/ratings");
    let has = |needle: &str| messages.iter().any(|m| m.contains(needle));
    assert!(
        has("`loadBalancer.simple: PASSTHROUGH` is not supported"),
        "{messages:?}"
    );
    assert!(
        has("`connectionPool.http.http2MaxRequests: -1`"),
        "{messages:?}"
    );
    assert!(
        has("`outlierDetection.baseEjectionTime: soon`"),
        "{messages:?}"
    );
    assert!(
        has(
            "`connectionPool.http.idleTimeout`: connectionPool.http.idleTimeout \"forever\" is \
             not a duration"
        ),
        "{messages:?}"
    );
    let bad = out
        .diagnostics
        .iter()
        .find(|d| d.message.contains("\"forever\""))
        .unwrap();
    // The report names the rule and the field.
    assert!(
        bad.to_string()
            .starts_with("warning: DestinationRule shop/ratings ("),
        "{bad}"
    );
    assert!(
        has("`outlierDetection.maxEjectionPercent: 150`"),
        "{messages:?}"
    );
}

#[test]
fn every_resource_converts_in_the_waypoint() {
    for resource in translated().policies.into_values() {
        let name = resource.hostname.clone();
        if let Err(error) = waypoint::balance::BackendPolicy::try_from(resource) {
            panic!("{name}: the waypoint rejects it: {error}");
        }
    }
}

#[test]
fn idle_timeout_zero_is_sent_as_zero_and_tcp_idle_timeout_is_reported() {
    let out = translated();
    let details = &out.policies[DETAILS];
    assert_eq!(
        details.limits,
        Some(pb::ConnectionLimits {
            idle_timeout: seconds(0),
            ..pb::ConnectionLimits::default()
        })
    );
    let messages = messages_about(&out, "shop/details");
    assert_eq!(
        messages,
        ["`connectionPool.tcp.idleTimeout` is not supported by the waypoint; it is ignored"]
    );
    let policy = waypoint::balance::BackendPolicy::try_from(details.clone()).unwrap();
    assert_eq!(policy.limits.idle_timeout, None, "0s: no idle timeout");
    let reviews =
        waypoint::balance::BackendPolicy::try_from(out.policies[REVIEWS].clone()).unwrap();
    assert_eq!(
        reviews.limits.idle_timeout,
        Some(std::time::Duration::from_millis(1500))
    );
    let ratings =
        waypoint::balance::BackendPolicy::try_from(out.policies[RATINGS].clone()).unwrap();
    assert_eq!(
        ratings.limits.idle_timeout,
        Some(waypoint::balance::DEFAULT_IDLE_TIMEOUT)
    );
}

//! What a waypoint Gateway's `status` says after a reconcile, as Istio
//! reports it: `Accepted` ("Resource accepted") and `Programmed`
//! ("Resource programmed, assigned to service(s) <host>:15008"), and
//! `status.addresses` holding the Service's ClusterIP, which is what
//! `kubectl get gateway` shows as the waypoint's address.
//!
//! A condition keeps its `lastTransitionTime` while its status stays the
//! same, so reconciling an unchanged Gateway yields an identical status,
//! the apply is a no-op on the API server, and the status write does not
//! wake the controller again.

use super::{HBONE_PORT, WaypointProblem};
use crate::model::{Gateway, GatewayAddress, GatewayCondition, GatewayStatus};

/// The Kubernetes DNS domain of Service hostnames (Istio's default domain
/// suffix; the trust domain is a different thing).
const DNS_DOMAIN: &str = "cluster.local";

/// What a reconcile of a waypoint Gateway came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// The objects are applied; the Service's ClusterIP once assigned.
    Deployed { cluster_ip: Option<String> },
    /// The Gateway is not deployable; nothing was applied.
    Invalid(WaypointProblem),
}

/// The status to apply on `gateway` after `outcome`. `now` (RFC 3339) is
/// the transition time of any condition whose status changes.
pub fn desired_status(gateway: &Gateway, outcome: &ReconcileOutcome, now: &str) -> GatewayStatus {
    let namespace = gateway.metadata.namespace.as_deref().unwrap_or("default");
    let name = gateway.metadata.name.as_deref().unwrap_or_default();
    let host = format!("{name}.{namespace}.svc.{DNS_DOMAIN}:{HBONE_PORT}");
    let (accepted, programmed, addresses) = match outcome {
        ReconcileOutcome::Deployed {
            cluster_ip: Some(ip),
        } => (
            ("True", "Accepted", "Resource accepted".to_owned()),
            (
                "True",
                "Programmed",
                format!("Resource programmed, assigned to service(s) {host}"),
            ),
            vec![GatewayAddress {
                address_type: Some("IPAddress".to_owned()),
                value: ip.clone(),
            }],
        ),
        ReconcileOutcome::Deployed { cluster_ip: None } => (
            ("True", "Accepted", "Resource accepted".to_owned()),
            (
                "False",
                "AddressNotAssigned",
                format!(
                    "the Service {namespace}/{name} has no ClusterIP yet; istiod-lite checks \
                     again shortly"
                ),
            ),
            Vec::new(),
        ),
        ReconcileOutcome::Invalid(problem) => {
            let reason = match problem {
                WaypointProblem::NoMeshListener { .. }
                | WaypointProblem::BadMeshListener { .. } => "ListenersNotValid",
                WaypointProblem::BadName { .. } | WaypointProblem::NoUid { .. } => "Invalid",
            };
            (
                ("False", reason, problem.to_string()),
                ("False", "Invalid", problem.to_string()),
                Vec::new(),
            )
        }
    };
    let previous = gateway
        .status
        .as_ref()
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let condition = |condition_type: &str, (status, reason, message): (&str, &str, String)| {
        // The transition time moves only when the status does.
        let last_transition_time = previous
            .iter()
            .find(|c| c.condition_type == condition_type && c.status == status)
            .map_or_else(|| now.to_owned(), |c| c.last_transition_time.clone());
        GatewayCondition {
            condition_type: condition_type.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time,
            observed_generation: gateway.metadata.generation,
        }
    };
    GatewayStatus {
        addresses,
        conditions: vec![
            condition("Accepted", accepted),
            condition("Programmed", programmed),
        ],
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::model::GatewaySpec;

    fn gateway(status: Option<GatewayStatus>) -> Gateway {
        Gateway {
            metadata: ObjectMeta {
                name: Some("waypoint".to_owned()),
                namespace: Some("apps".to_owned()),
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: GatewaySpec::default(),
            status,
        }
    }

    fn deployed(ip: Option<&str>) -> ReconcileOutcome {
        ReconcileOutcome::Deployed {
            cluster_ip: ip.map(str::to_owned),
        }
    }

    fn summary(status: &GatewayStatus) -> Vec<String> {
        status
            .conditions
            .iter()
            .map(|c| {
                format!(
                    "{} {} {} @{} gen {:?}",
                    c.condition_type,
                    c.status,
                    c.reason,
                    c.last_transition_time,
                    c.observed_generation
                )
            })
            .collect()
    }

    #[test]
    fn deployed_with_an_address_is_accepted_and_programmed() {
        let status = desired_status(&gateway(None), &deployed(Some("10.96.0.20")), "T1");
        assert_eq!(
            summary(&status),
            [
                "Accepted True Accepted @T1 gen Some(3)",
                "Programmed True Programmed @T1 gen Some(3)"
            ]
        );
        assert_eq!(
            status.conditions[1].message,
            "Resource programmed, assigned to service(s) waypoint.apps.svc.cluster.local:15008"
        );
        assert_eq!(
            status.addresses,
            [GatewayAddress {
                address_type: Some("IPAddress".to_owned()),
                value: "10.96.0.20".to_owned()
            }]
        );
    }

    #[test]
    fn without_a_cluster_ip_it_is_not_programmed_and_has_no_address() {
        let status = desired_status(&gateway(None), &deployed(None), "T1");
        assert_eq!(
            summary(&status),
            [
                "Accepted True Accepted @T1 gen Some(3)",
                "Programmed False AddressNotAssigned @T1 gen Some(3)"
            ]
        );
        assert!(status.addresses.is_empty());
    }

    #[test]
    fn an_invalid_gateway_is_neither_accepted_nor_programmed_and_says_why() {
        let problem = WaypointProblem::NoMeshListener {
            gateway: "apps/waypoint".to_owned(),
        };
        let status = desired_status(&gateway(None), &ReconcileOutcome::Invalid(problem), "T1");
        assert_eq!(
            summary(&status),
            [
                "Accepted False ListenersNotValid @T1 gen Some(3)",
                "Programmed False Invalid @T1 gen Some(3)"
            ]
        );
        assert!(status.conditions[0].message.contains("no listener `mesh`"));
        assert!(status.addresses.is_empty());
    }

    /// The same outcome again keeps every transition time, so the status
    /// written is identical; a changed status moves only its own time.
    #[test]
    fn transition_times_move_only_with_the_status() {
        let first = desired_status(&gateway(None), &deployed(None), "T1");
        let same = desired_status(&gateway(Some(first.clone())), &deployed(None), "T2");
        assert_eq!(same, first);
        let programmed = desired_status(&gateway(Some(first)), &deployed(Some("10.0.0.1")), "T3");
        assert_eq!(
            summary(&programmed),
            [
                "Accepted True Accepted @T1 gen Some(3)",
                "Programmed True Programmed @T3 gen Some(3)"
            ]
        );
    }
}

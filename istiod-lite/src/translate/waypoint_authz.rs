//! `AuthorizationPolicy`s bound with `targetRefs` to the waypoint's
//! `WaypointAuthorization`, one resource per service, named `<hostname>`.
//!
//! A policy reaches a service through a waypoint in three ways, as in
//! Istio:
//!
//! - a targetRef to the `Service` itself (`group: ""`, `kind: Service`),
//!   when that service's traffic goes through a waypoint;
//! - a targetRef to the waypoint `Gateway` (class `istio-waypoint`): every
//!   service that uses that waypoint;
//! - in the root namespace, a targetRef to the `GatewayClass`
//!   `istio-waypoint`: every service that uses any waypoint.
//!
//! A targetRef names objects in the policy's own namespace; one that names
//! another namespace, a kind we do not know, or something that does not
//! exist or has no waypoint is ignored with a warning, because nothing
//! would enforce it. Only services whose traffic actually reaches a
//! waypoint get a resource.
//!
//! The rules are converted fail-closed (see `rules`): what the waypoint
//! cannot evaluate never widens an ALLOW and never narrows a DENY.

mod rules;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use proto::waypoint as pb;

use super::notes::Notes;
use super::service::{hostname, service_waypoint};
use super::waypoint::WaypointRef;
use super::{Diagnostic, Index, MeshConfig, ResourceType, Severity};
use crate::model::{ObjectKey, ObjectKind, PolicyTargetReference, WAYPOINT_GATEWAY_CLASS};

/// Group of `Gateway` and `GatewayClass` targetRefs.
const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// The waypoint authorizations of a whole index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaypointAuthorizationsTranslated {
    /// By resource name, the service's hostname.
    pub policies: BTreeMap<String, pb::WaypointAuthorization>,
    /// Sorted, so two translations of the same input compare equal.
    pub diagnostics: Vec<Diagnostic>,
}

/// A Service, by namespace and name.
pub(super) type ServiceKey = (String, String);

/// Translates every `AuthorizationPolicy` with targetRefs in `index`.
pub fn translate_waypoint_authorizations(
    index: &Index,
    config: &MeshConfig,
) -> WaypointAuthorizationsTranslated {
    let served = services_with_waypoints(index);
    let mut diagnostics = Vec::new();
    let mut attached: BTreeMap<ServiceKey, Vec<pb::AuthorizationPolicy>> = BTreeMap::new();
    for policy in index.authorization_policies(None) {
        let refs: Vec<&PolicyTargetReference> = policy
            .spec
            .target_ref
            .iter()
            .chain(&policy.spec.target_refs)
            .collect();
        if refs.is_empty() {
            continue; // a selector policy: ztunnel's
        }
        let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
        let name = policy.metadata.name.as_deref().unwrap_or_default();
        let mut notes = Notes::new(
            ResourceType::WaypointAuthorization,
            ObjectKey::new(ObjectKind::AuthorizationPolicy, namespace, name),
            &mut diagnostics,
        );
        let mut targets = BTreeSet::new();
        for target in refs {
            targets.extend(resolve_target(
                index, config, &served, namespace, target, &mut notes,
            ));
        }
        if targets.is_empty() {
            continue;
        }
        let converted = rules::convert_policy(policy, namespace, name, config, &mut notes);
        for target in targets {
            attached.entry(target).or_default().push(converted.clone());
        }
    }
    let policies = attached
        .into_iter()
        .map(|((namespace, name), mut policies)| {
            policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            let hostname = hostname(config, &namespace, &name);
            let resource = pb::WaypointAuthorization {
                hostname: hostname.clone(),
                policies,
            };
            (hostname, resource)
        })
        .collect();
    diagnostics.sort();
    WaypointAuthorizationsTranslated {
        policies,
        diagnostics,
    }
}

/// Every Service whose traffic goes through a waypoint that resolves, with
/// that waypoint.
pub(super) fn services_with_waypoints(index: &Index) -> BTreeMap<ServiceKey, WaypointRef> {
    index
        .services(None)
        .filter_map(|svc| {
            let namespace = svc.metadata.namespace.as_deref().unwrap_or("default");
            let name = svc.metadata.name.as_deref()?;
            match service_waypoint(index, svc, namespace, name)? {
                Ok((waypoint, _)) => Some(((namespace.to_string(), name.to_string()), waypoint)),
                // The Service's own diagnostics say why.
                Err(_) => None,
            }
        })
        .collect()
}

/// The services one targetRef of a policy in `namespace` reaches.
fn resolve_target(
    index: &Index,
    config: &MeshConfig,
    served: &BTreeMap<ServiceKey, WaypointRef>,
    namespace: &str,
    target: &PolicyTargetReference,
    notes: &mut Notes<'_>,
) -> Vec<ServiceKey> {
    let PolicyTargetReference {
        group, kind, name, ..
    } = target;
    if let Some(other) = target.namespace.as_deref()
        && other != namespace
    {
        notes.push(
            Severity::Warning,
            format!(
                "targetRef {kind} {other}/{name} is in another namespace; a policy can only \
                 target objects in its own namespace ({namespace}), so this targetRef is ignored"
            ),
        );
        return Vec::new();
    }
    match (group.as_str(), kind.as_str()) {
        ("" | "core", "Service") => {
            let key = (namespace.to_string(), name.clone());
            if index.service(namespace, name).is_none() {
                notes.push(
                    Severity::Warning,
                    format!("targetRef Service {namespace}/{name} does not exist; it is ignored"),
                );
                Vec::new()
            } else if served.contains_key(&key) {
                vec![key]
            } else {
                notes.push(
                    Severity::Warning,
                    format!(
                        "Service {namespace}/{name} does not use a waypoint, so nothing enforces \
                         this policy for it; label it (or its namespace) istio.io/use-waypoint"
                    ),
                );
                Vec::new()
            }
        }
        (GATEWAY_API_GROUP, "Gateway") => {
            let Some(gateway) = index.gateway(namespace, name) else {
                notes.push(
                    Severity::Warning,
                    format!("targetRef Gateway {namespace}/{name} does not exist; it is ignored"),
                );
                return Vec::new();
            };
            if gateway.spec.gateway_class_name != WAYPOINT_GATEWAY_CLASS {
                notes.push(
                    Severity::Warning,
                    format!(
                        "targetRef Gateway {namespace}/{name} is of class {:?}, not a waypoint \
                         ({WAYPOINT_GATEWAY_CLASS}); it is ignored",
                        gateway.spec.gateway_class_name
                    ),
                );
                return Vec::new();
            }
            let users: Vec<ServiceKey> = served
                .iter()
                .filter(|(_, waypoint)| waypoint.namespace == namespace && &waypoint.name == name)
                .map(|(key, _)| key.clone())
                .collect();
            if users.is_empty() {
                notes.push(
                    Severity::Info,
                    format!("no service uses waypoint {namespace}/{name} yet"),
                );
            }
            users
        }
        (GATEWAY_API_GROUP, "GatewayClass")
            if name == WAYPOINT_GATEWAY_CLASS && namespace == config.root_namespace =>
        {
            served.keys().cloned().collect()
        }
        (GATEWAY_API_GROUP, "GatewayClass") => {
            notes.push(
                Severity::Warning,
                format!(
                    "targetRef GatewayClass {name} is supported only for {WAYPOINT_GATEWAY_CLASS} \
                     and only in the root namespace ({}); it is ignored",
                    config.root_namespace
                ),
            );
            Vec::new()
        }
        _ => {
            let group = if group.is_empty() { "core" } else { group };
            notes.push(
                Severity::Warning,
                format!(
                    "targetRef kind {kind} (group {group}) is not supported: use a Service, a \
                     waypoint Gateway, or the {WAYPOINT_GATEWAY_CLASS} GatewayClass; it is ignored"
                ),
            );
            Vec::new()
        }
    }
}

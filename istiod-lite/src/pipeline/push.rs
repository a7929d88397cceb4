//! Translated resources into the xDS store: one batch per type URL, bodies
//! encoded as `Any`.
//!
//! Authorizations go in before addresses. A client applies each type as it
//! arrives, so when a new workload and the policy that guards it change in
//! one batch, the policy is in force before the workload is reachable,
//! never after. For the same reason the waypoint's authorizations go in
//! before its faults, backend policies and routes, and all before addresses (a service that starts
//! using a waypoint must find the waypoint's policies there first).
//!
//! The waypoint sets always arrive whole (see `translate`); pushing them
//! as a full state makes the store keep the version of every unchanged
//! resource, so clients receive only what differs.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::Any;
use proto::{
    ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WAYPOINT_AUTHORIZATION_TYPE_URL,
    WAYPOINT_BACKEND_POLICY_TYPE_URL, WAYPOINT_FAULTS_TYPE_URL, WAYPOINT_ROUTES_TYPE_URL,
};
use xds::{ApplyOutcome, ResourceStore, StoreError};

use crate::translate::{Delta, ResourceDelta, Translated, WaypointTranslated};

/// What one push changed in the store, per type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PushOutcome {
    pub(super) addresses: ApplyOutcome,
    pub(super) authorizations: ApplyOutcome,
    pub(super) waypoint_routes: ApplyOutcome,
    pub(super) waypoint_authorizations: ApplyOutcome,
    pub(super) waypoint_faults: ApplyOutcome,
    pub(super) waypoint_backends: ApplyOutcome,
}

impl PushOutcome {
    pub(super) fn changed(&self) -> bool {
        self.addresses.changed()
            || self.authorizations.changed()
            || self.waypoint_routes.changed()
            || self.waypoint_authorizations.changed()
            || self.waypoint_faults.changed()
            || self.waypoint_backends.changed()
    }

    /// The store's revision after the push.
    pub(super) fn revision(&self) -> u64 {
        [
            self.addresses.revision,
            self.authorizations.revision,
            self.waypoint_routes.revision,
            self.waypoint_authorizations.revision,
            self.waypoint_faults.revision,
            self.waypoint_backends.revision,
        ]
        .into_iter()
        .max()
        .unwrap_or_default()
    }
}

/// What pushing the waypoint sets changed, per type.
#[derive(Debug, Clone, Copy)]
struct WaypointOutcome {
    routes: ApplyOutcome,
    authorizations: ApplyOutcome,
    faults: ApplyOutcome,
    backends: ApplyOutcome,
}

/// The waypoint sets as full states, when they were translated.
fn push_waypoint(
    store: &ResourceStore,
    waypoint: Option<&WaypointTranslated>,
) -> Result<WaypointOutcome, StoreError> {
    let Some(waypoint) = waypoint else {
        let unchanged = ApplyOutcome {
            revision: store.revision(),
            ..ApplyOutcome::default()
        };
        return Ok(WaypointOutcome {
            routes: unchanged,
            authorizations: unchanged,
            faults: unchanged,
            backends: unchanged,
        });
    };
    let authorizations = full_delta(
        store,
        WAYPOINT_AUTHORIZATION_TYPE_URL,
        &waypoint.authorizations,
    );
    let faults = full_delta(store, WAYPOINT_FAULTS_TYPE_URL, &waypoint.faults);
    let backends = full_delta(store, WAYPOINT_BACKEND_POLICY_TYPE_URL, &waypoint.backends);
    let routes = full_delta(store, WAYPOINT_ROUTES_TYPE_URL, &waypoint.routes);
    let authorizations = apply(store, WAYPOINT_AUTHORIZATION_TYPE_URL, &authorizations)?;
    let faults = apply(store, WAYPOINT_FAULTS_TYPE_URL, &faults)?;
    let backends = apply(store, WAYPOINT_BACKEND_POLICY_TYPE_URL, &backends)?;
    let routes = apply(store, WAYPOINT_ROUTES_TYPE_URL, &routes)?;
    Ok(WaypointOutcome {
        routes,
        authorizations,
        faults,
        backends,
    })
}

/// Pushes an incremental result.
pub(super) fn push_delta(store: &ResourceStore, delta: &Delta) -> Result<PushOutcome, StoreError> {
    let authorizations = apply(store, AUTHORIZATION_TYPE_URL, &delta.authorizations)?;
    let waypoint = push_waypoint(store, delta.waypoint.as_ref())?;
    let addresses = apply(store, ADDRESS_TYPE_URL, &delta.addresses)?;
    Ok(PushOutcome {
        addresses,
        authorizations,
        waypoint_routes: waypoint.routes,
        waypoint_authorizations: waypoint.authorizations,
        waypoint_faults: waypoint.faults,
        waypoint_backends: waypoint.backends,
    })
}

/// Pushes a full state: every resource, and the removal of every name the
/// store holds that `full` does not (after a resync, objects deleted while
/// the source was away). Unchanged resources keep their versions in the
/// store, so clients receive only what differs.
pub(super) fn push_full(
    store: &ResourceStore,
    full: &Translated,
) -> Result<PushOutcome, StoreError> {
    let authorizations = full_delta(store, AUTHORIZATION_TYPE_URL, &full.authorizations);
    let addresses = full_delta(store, ADDRESS_TYPE_URL, &full.addresses);
    let authorizations = apply(store, AUTHORIZATION_TYPE_URL, &authorizations)?;
    let waypoint = push_waypoint(store, Some(&full.waypoint))?;
    let addresses = apply(store, ADDRESS_TYPE_URL, &addresses)?;
    Ok(PushOutcome {
        addresses,
        authorizations,
        waypoint_routes: waypoint.routes,
        waypoint_authorizations: waypoint.authorizations,
        waypoint_faults: waypoint.faults,
        waypoint_backends: waypoint.backends,
    })
}

fn full_delta<T: Clone>(
    store: &ResourceStore,
    type_url: &str,
    resources: &BTreeMap<String, T>,
) -> ResourceDelta<T> {
    let removals: BTreeSet<String> = store
        .versions(type_url)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| !resources.contains_key(name))
        .collect();
    ResourceDelta {
        upserts: resources.clone(),
        removals,
    }
}

fn apply<T: Message>(
    store: &ResourceStore,
    type_url: &str,
    delta: &ResourceDelta<T>,
) -> Result<ApplyOutcome, StoreError> {
    if delta.is_empty() {
        return Ok(ApplyOutcome {
            revision: store.revision(),
            ..ApplyOutcome::default()
        });
    }
    let upserts = delta
        .upserts
        .iter()
        .map(|(name, resource)| {
            let body = Any {
                type_url: type_url.to_string(),
                value: resource.encode_to_vec(),
            };
            (name.clone(), body)
        })
        .collect();
    store.apply(type_url, upserts, delta.removals.iter().cloned().collect())
}

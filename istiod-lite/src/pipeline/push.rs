//! Translated resources into the xDS store: one batch per type URL, bodies
//! encoded as `Any`.
//!
//! Authorizations go in before addresses. A client applies each type as it
//! arrives, so when a new workload and the policy that guards it change in
//! one batch, the policy is in force before the workload is reachable,
//! never after.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_types::Any;
use proto::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use xds::{ApplyOutcome, ResourceStore, StoreError};

use crate::translate::{Delta, ResourceDelta, Translated};

/// What one push changed in the store, per type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PushOutcome {
    pub(super) addresses: ApplyOutcome,
    pub(super) authorizations: ApplyOutcome,
}

impl PushOutcome {
    pub(super) fn changed(&self) -> bool {
        self.addresses.changed() || self.authorizations.changed()
    }
}

/// Pushes an incremental result.
pub(super) fn push_delta(store: &ResourceStore, delta: &Delta) -> Result<PushOutcome, StoreError> {
    let authorizations = apply(store, AUTHORIZATION_TYPE_URL, &delta.authorizations)?;
    let addresses = apply(store, ADDRESS_TYPE_URL, &delta.addresses)?;
    Ok(PushOutcome {
        addresses,
        authorizations,
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
    let addresses = apply(store, ADDRESS_TYPE_URL, &addresses)?;
    Ok(PushOutcome {
        addresses,
        authorizations,
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

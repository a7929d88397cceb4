//! The xDS handler: decodes each pushed resource, converts it into the
//! state's own types and publishes the next snapshot. What cannot be decoded
//! or converted is returned as a rejection, so the client NACKs it with the
//! reason while everything else in the response is applied.

use std::sync::Arc;

use prost::Message;
use proto::discovery::Resource;
use proto::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use tracing::{debug, warn};
use xds::{Rejection, ResourceHandler};

use crate::{ConversionError, StateStore};

/// Applies pushed workloads, services and policies to a [`StateStore`].
#[derive(Debug, Clone)]
pub struct StateHandler {
    store: Arc<StateStore>,
}

// === impl StateHandler ===

impl StateHandler {
    pub fn new(store: Arc<StateStore>) -> Self {
        StateHandler { store }
    }

    /// The type URLs to subscribe to.
    pub fn type_urls() -> Vec<String> {
        vec![
            ADDRESS_TYPE_URL.to_owned(),
            AUTHORIZATION_TYPE_URL.to_owned(),
        ]
    }
}

impl ResourceHandler for StateHandler {
    fn apply(
        &self,
        type_url: &str,
        upserts: Vec<Resource>,
        removals: Vec<String>,
    ) -> Result<(), Vec<Rejection>> {
        let mut rejected = Vec::new();
        let converted = match type_url {
            ADDRESS_TYPE_URL => {
                let decoded = decode_all(type_url, upserts, &mut rejected);
                self.store
                    .update(|state| state.apply_addresses(decoded, &removals))
            }
            AUTHORIZATION_TYPE_URL => {
                let decoded = decode_all(type_url, upserts, &mut rejected);
                self.store
                    .update(|state| state.apply_policies(decoded, &removals))
            }
            other => return Err(unused_type(other, upserts, "the workload state")),
        };
        finish(type_url, removals.len(), rejected, converted, rejection)
    }
}

/// The rejection of a whole response of a type `who` never subscribed to:
/// sent back rather than silently lost.
pub fn unused_type(type_url: &str, upserts: Vec<Resource>, who: &str) -> Vec<Rejection> {
    warn!(type_url, "response of a type {who} does not use");
    upserts
        .into_iter()
        .map(|r| Rejection {
            name: r.name,
            reason: format!("{who} does not use type {type_url}"),
        })
        .collect()
}

/// Ends a handler's `apply`: the decoding rejections plus the conversion
/// errors of what was applied, logged.
pub fn finish<E>(
    type_url: &str,
    removals: usize,
    mut rejected: Vec<Rejection>,
    converted: Vec<E>,
    to_rejection: impl Fn(E) -> Rejection,
) -> Result<(), Vec<Rejection>> {
    rejected.extend(converted.into_iter().map(to_rejection));
    debug!(type_url, removals, rejected = rejected.len(), "applied");
    if rejected.is_empty() {
        Ok(())
    } else {
        Err(rejected)
    }
}

/// Decodes each resource's `Any` as `M`; failures join `rejected`. Public
/// for the handlers of other resource types (the waypoint's own).
pub fn decode_all<M: Message + Default>(
    type_url: &str,
    upserts: Vec<Resource>,
    rejected: &mut Vec<Rejection>,
) -> Vec<(String, M)> {
    let mut decoded = Vec::with_capacity(upserts.len());
    for resource in upserts {
        let Some(any) = resource.resource else {
            rejected.push(Rejection {
                name: resource.name,
                reason: "the resource carries no body".into(),
            });
            continue;
        };
        if any.type_url != type_url {
            rejected.push(Rejection {
                name: resource.name,
                reason: format!("body of type {} in a {type_url} response", any.type_url),
            });
            continue;
        }
        match M::decode(any.value.as_slice()) {
            Ok(message) => decoded.push((resource.name, message)),
            Err(error) => rejected.push(Rejection {
                name: resource.name,
                reason: format!("cannot decode: {error}"),
            }),
        }
    }
    decoded
}

pub fn rejection(error: ConversionError) -> Rejection {
    Rejection {
        name: error.name.clone(),
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use proto::workload as wl;

    use super::*;

    fn resource(name: &str, type_url: &str, value: Vec<u8>) -> Resource {
        Resource {
            name: name.into(),
            version: "1".into(),
            resource: Some(prost_types::Any {
                type_url: type_url.into(),
                value,
            }),
            ..Resource::default()
        }
    }

    fn workload(name: &str, ip: [u8; 4]) -> (String, Vec<u8>) {
        let uid = format!("Kubernetes//Pod/a/{name}");
        let address = wl::Address {
            r#type: Some(wl::address::Type::Workload(wl::Workload {
                uid: uid.clone(),
                name: name.into(),
                namespace: "a".into(),
                addresses: vec![ip.to_vec()],
                ..wl::Workload::default()
            })),
        };
        (uid, address.encode_to_vec())
    }

    #[test]
    fn good_resources_apply_and_bad_ones_are_rejected_with_reasons() {
        let store = Arc::new(StateStore::new());
        let handler = StateHandler::new(store.clone());
        let (good, good_bytes) = workload("good", [10, 0, 0, 1]);
        let (short, mut short_bytes) = workload("short", [10, 0, 0, 2]);
        short_bytes.truncate(short_bytes.len() / 2);
        let rejected = handler
            .apply(
                ADDRESS_TYPE_URL,
                vec![
                    resource(&good, ADDRESS_TYPE_URL, good_bytes.clone()),
                    resource(&short, ADDRESS_TYPE_URL, short_bytes),
                    resource("wrong-type", AUTHORIZATION_TYPE_URL, good_bytes),
                    Resource {
                        name: "empty".into(),
                        ..Resource::default()
                    },
                ],
                vec![],
            )
            .unwrap_err();
        let names: Vec<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec![short.as_str(), "wrong-type", "empty"]);
        assert!(
            rejected[0].reason.contains("cannot decode"),
            "{:?}",
            rejected[0]
        );
        let snapshot = store.snapshot();
        assert!(snapshot.workload_by_uid(&good).is_some());
        assert_eq!(snapshot.workloads().count(), 1);
    }

    #[test]
    fn removals_and_a_clean_response_ack() {
        let store = Arc::new(StateStore::new());
        let handler = StateHandler::new(store.clone());
        let (uid, bytes) = workload("w", [10, 0, 0, 1]);
        handler
            .apply(
                ADDRESS_TYPE_URL,
                vec![resource(&uid, ADDRESS_TYPE_URL, bytes)],
                vec![],
            )
            .unwrap();
        handler
            .apply(ADDRESS_TYPE_URL, vec![], vec![uid.clone()])
            .unwrap();
        assert!(store.snapshot().workload_by_uid(&uid).is_none());
        let error = handler
            .apply(
                "type.googleapis.com/other",
                vec![resource("x", "t", vec![])],
                vec![],
            )
            .unwrap_err();
        assert_eq!(error.len(), 1);
    }
}

//! The object store the translation reads.
//!
//! One ordered map keyed by [`ObjectKey`]. Because keys sort by kind, then
//! namespace, then name, "all pods", "all services in `ns`" and "policies in
//! the root namespace" are range scans of that one map: the reverse lookups
//! the incremental translation needs cost no second index to keep in sync.
//!
//! The index also remembers, for every object changed since the last
//! [`Index::take_changes`], the version it had then: the state the last
//! translation saw. What an object's *old* selector matched must be
//! re-translated too, and only the old version says what that was. The old
//! version is moved out of the map on the first change, not cloned, and kept
//! only until the next translation takes it.

use std::collections::BTreeMap;
use std::ops::Bound;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};

use crate::model::{
    AuthorizationPolicy, DestinationRule, Gateway, HTTPRoute, KubeObject, ObjectKey, ObjectKind,
    ParseError, PeerAuthentication, VirtualService, parse_documents,
};

/// All objects the translation may read, by key.
#[derive(Clone, Debug, Default)]
pub struct Index {
    objects: BTreeMap<ObjectKey, KubeObject>,
    /// Objects changed since the last [`Index::take_changes`], with the
    /// version each had then.
    changes: Changes,
}

/// Objects added, updated or removed since the last translation, each with
/// the version that translation saw (`None`: the object did not exist).
///
/// Several changes to one object keep the first previous version: the
/// versions in between were never translated, so nothing depends on them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    before: BTreeMap<ObjectKey, Option<KubeObject>>,
}

// === impl Index ===

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an index holding `objects` (later duplicates win), with no
    /// pending changes: its contents are the starting point.
    pub fn from_objects(objects: impl IntoIterator<Item = KubeObject>) -> Self {
        let mut index = Self::new();
        for object in objects {
            index.upsert(object);
        }
        index.changes = Changes::default();
        index
    }

    /// Builds an index from multi-document YAML, or returns every document
    /// that did not parse.
    pub fn from_yaml(yaml: &str) -> Result<Self, Vec<ParseError>> {
        let (objects, errors): (Vec<_>, Vec<_>) =
            parse_documents(yaml).into_iter().partition(Result::is_ok);
        if !errors.is_empty() {
            return Err(errors.into_iter().filter_map(Result::err).collect());
        }
        Ok(Self::from_objects(
            objects.into_iter().filter_map(Result::ok),
        ))
    }

    /// Inserts or replaces an object and records the change; returns the
    /// key and whether an object was replaced.
    pub fn upsert(&mut self, object: KubeObject) -> (ObjectKey, bool) {
        let key = object.key();
        let previous = self.objects.insert(key.clone(), object);
        let replaced = previous.is_some();
        self.changes.record(&key, previous);
        (key, replaced)
    }

    /// Removes an object and records the change; returns whether it was
    /// present.
    pub fn remove(&mut self, key: &ObjectKey) -> bool {
        let previous = self.objects.remove(key);
        let removed = previous.is_some();
        self.changes.record(key, previous);
        removed
    }

    /// The changes since the last call (or since [`Index::from_objects`]),
    /// for [`translate_affected`](super::translate_affected); the next
    /// changes are recorded against the current state. Call it at every
    /// translation, full ones included: changes left in place only make
    /// the next incremental translation re-translate more, never less.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&KubeObject> {
        self.objects.get(key)
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Every object, in key order.
    pub fn objects(&self) -> impl Iterator<Item = &KubeObject> {
        self.objects.values()
    }

    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        match self.get(&ObjectKey::new(ObjectKind::Namespace, "", name))? {
            KubeObject::Namespace(ns) => Some(ns),
            _ => None,
        }
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        match self.get(&ObjectKey::new(ObjectKind::Pod, namespace, name))? {
            KubeObject::Pod(pod) => Some(pod),
            _ => None,
        }
    }

    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        match self.get(&ObjectKey::new(ObjectKind::Service, namespace, name))? {
            KubeObject::Service(svc) => Some(svc),
            _ => None,
        }
    }

    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&Gateway> {
        match self.get(&ObjectKey::new(ObjectKind::Gateway, namespace, name))? {
            KubeObject::Gateway(gw) => Some(gw),
            _ => None,
        }
    }

    pub fn authorization_policy(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<&AuthorizationPolicy> {
        match self.get(&ObjectKey::new(
            ObjectKind::AuthorizationPolicy,
            namespace,
            name,
        ))? {
            KubeObject::AuthorizationPolicy(policy) => Some(policy),
            _ => None,
        }
    }

    /// Keys of every object of `kind`, optionally only in `namespace`.
    pub fn keys_of(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = &ObjectKey> {
        self.range(kind, namespace).map(|(key, _)| key)
    }

    pub fn pods(&self, namespace: Option<&str>) -> impl Iterator<Item = &Pod> {
        self.range(ObjectKind::Pod, namespace)
            .filter_map(|(_, object)| match object {
                KubeObject::Pod(pod) => Some(pod.as_ref()),
                _ => None,
            })
    }

    pub fn services(&self, namespace: Option<&str>) -> impl Iterator<Item = &Service> {
        self.range(ObjectKind::Service, namespace)
            .filter_map(|(_, object)| match object {
                KubeObject::Service(svc) => Some(svc.as_ref()),
                _ => None,
            })
    }

    pub fn authorization_policies(
        &self,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = &AuthorizationPolicy> {
        self.range(ObjectKind::AuthorizationPolicy, namespace)
            .filter_map(|(_, object)| match object {
                KubeObject::AuthorizationPolicy(policy) => Some(policy.as_ref()),
                _ => None,
            })
    }

    pub fn peer_authentications(
        &self,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = &PeerAuthentication> {
        self.range(ObjectKind::PeerAuthentication, namespace)
            .filter_map(|(_, object)| match object {
                KubeObject::PeerAuthentication(policy) => Some(policy.as_ref()),
                _ => None,
            })
    }

    pub fn virtual_services(
        &self,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = &VirtualService> {
        self.range(ObjectKind::VirtualService, namespace)
            .filter_map(|(_, object)| match object {
                KubeObject::VirtualService(vs) => Some(vs.as_ref()),
                _ => None,
            })
    }

    pub fn destination_rules(
        &self,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = &DestinationRule> {
        self.range(ObjectKind::DestinationRule, namespace)
            .filter_map(|(_, object)| match object {
                KubeObject::DestinationRule(rule) => Some(rule.as_ref()),
                _ => None,
            })
    }

    pub fn http_routes(&self, namespace: Option<&str>) -> impl Iterator<Item = &HTTPRoute> {
        self.range(ObjectKind::HttpRoute, namespace)
            .filter_map(|(_, object)| match object {
                KubeObject::HttpRoute(route) => Some(route.as_ref()),
                _ => None,
            })
    }

    /// Objects of `kind` (in `namespace`, if given), as a range of the one
    /// ordered map.
    fn range(
        &self,
        kind: ObjectKind,
        namespace: Option<&str>,
    ) -> impl Iterator<Item = (&ObjectKey, &KubeObject)> {
        let start = ObjectKey::new(kind, namespace.unwrap_or_default(), "");
        self.objects
            .range((Bound::Included(start), Bound::Unbounded))
            .take_while(move |(key, _)| {
                key.kind == kind && namespace.is_none_or(|ns| key.namespace == ns)
            })
    }
}

// === impl Changes ===

impl Changes {
    /// Records that `key` changed from `previous`, unless it already changed
    /// since the last translation (its first previous version is the one
    /// that was translated).
    fn record(&mut self, key: &ObjectKey, previous: Option<KubeObject>) {
        if !self.before.contains_key(key) {
            self.before.insert(key.clone(), previous);
        }
    }

    /// The changed keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.before.keys()
    }

    /// Each changed key with its version at the last translation.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjectKey, Option<&KubeObject>)> {
        self.before
            .iter()
            .map(|(key, before)| (key, before.as_ref()))
    }

    /// The version `key` had at the last translation: `None` if it did not
    /// exist then or has not changed since.
    pub fn before(&self, key: &ObjectKey) -> Option<&KubeObject> {
        self.before.get(key)?.as_ref()
    }

    pub fn len(&self) -> usize {
        self.before.len()
    }

    pub fn is_empty(&self) -> bool {
        self.before.is_empty()
    }
}

//! The object store the translation reads.
//!
//! One ordered map keyed by [`ObjectKey`]. Because keys sort by kind, then
//! namespace, then name, "all pods", "all services in `ns`" and "policies in
//! the root namespace" are range scans of that one map: the reverse lookups
//! the incremental translation needs cost no second index to keep in sync.

use std::collections::BTreeMap;
use std::ops::Bound;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};

use crate::model::{
    AuthorizationPolicy, Gateway, HTTPRoute, KubeObject, ObjectKey, ObjectKind, ParseError,
    PeerAuthentication, parse_documents,
};

/// All objects the translation may read, by key.
#[derive(Clone, Debug, Default)]
pub struct Index {
    objects: BTreeMap<ObjectKey, KubeObject>,
}

// === impl Index ===

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an index holding `objects` (later duplicates win).
    pub fn from_objects(objects: impl IntoIterator<Item = KubeObject>) -> Self {
        let mut index = Self::new();
        for object in objects {
            index.upsert(object);
        }
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

    /// Inserts or replaces an object; returns the key and the previous version.
    pub fn upsert(&mut self, object: KubeObject) -> (ObjectKey, Option<KubeObject>) {
        let key = object.key();
        let previous = self.objects.insert(key.clone(), object);
        (key, previous)
    }

    /// Removes an object; returns it if it was present.
    pub fn remove(&mut self, key: &ObjectKey) -> Option<KubeObject> {
        self.objects.remove(key)
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

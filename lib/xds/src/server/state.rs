//! What one stream knows about one type URL, and the diff of that against a
//! store snapshot: which resources to send and which names to remove. Pure
//! data in, data out; the connection sends what comes out.
//!
//! # What the client holds, for the cost of a pointer
//!
//! Versions are recorded when sent, so after every push a wildcard
//! subscription holds exactly the type's resources in the store at the
//! revision the stream has caught up to: everything exists in the store at
//! that version, and nothing else. The stream therefore keeps the store's
//! own (shared, immutable) map of that revision instead of a name -> version
//! map of its own ([`Held::Store`]), and a catch-up compares that map with
//! the new one. Explicit subscriptions, and a wildcard one's
//! `initial_resource_versions` until its first response, keep a map
//! ([`Held::Versions`]) whose names and versions are the store's `Arc`s
//! where they match.
//!
//! The price: a stream that lags behind the store keeps its revision's map
//! alive until it catches up. Streams at the same revision share one map,
//! and the bodies in it are shared with newer maps where unchanged.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::store::{ChangedSince, Snapshot, StoredResource, TypeResources};

/// The wildcard resource name.
pub(super) const WILDCARD: &str = "*";

/// A push being assembled: resources to send and names to remove.
#[derive(Debug, Default)]
pub(super) struct Delta {
    pub(super) upserts: Vec<Arc<StoredResource>>,
    pub(super) removals: Vec<Arc<str>>,
}

// === impl Delta ===

impl Delta {
    pub(super) fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// What one stream knows about one type URL.
#[derive(Debug)]
pub(super) struct TypeState {
    pub(super) type_url: Arc<str>,
    /// Subscribed to every resource of the type.
    pub(super) wildcard: bool,
    /// Explicitly subscribed names, besides the wildcard if any.
    pub(super) names: HashSet<Arc<str>>,
    /// What the client has: its `initial_resource_versions`, then everything
    /// sent to it.
    held: Held,
    /// Store revision this type has been brought up to.
    pub(super) revision: u64,
    /// Nonces of the latest push of this type, one per response, in order.
    /// ACKs and NACKs naming one of them are current; any other is stale.
    pub(super) nonces: Vec<String>,
}

/// name -> version of what a client holds of one type.
#[derive(Debug)]
enum Held {
    /// Exactly the type's resources in the store at the state's revision
    /// (`None`: the type had none). What a wildcard subscription holds after
    /// every push; shared with the store's snapshot.
    Store(Option<Arc<TypeResources>>),
    /// Explicit subscriptions, and a wildcard before its first response.
    Versions(HashMap<Arc<str>, Arc<str>>),
}

// === impl Held ===

impl Held {
    fn version(&self, name: &str) -> Option<&Arc<str>> {
        match self {
            Held::Store(resources) => resources
                .as_ref()
                .and_then(|m| m.get(name))
                .map(|r| &r.version),
            Held::Versions(versions) => versions.get(name),
        }
    }

    fn len(&self) -> usize {
        match self {
            Held::Store(resources) => resources.as_ref().map_or(0, |m| m.len()),
            Held::Versions(versions) => versions.len(),
        }
    }

    fn names(&self) -> impl Iterator<Item = &Arc<str>> {
        let (store, versions) = match self {
            Held::Store(resources) => (resources.as_deref().map(|m| m.keys()), None),
            Held::Versions(versions) => (None, Some(versions.keys())),
        };
        store
            .into_iter()
            .flatten()
            .chain(versions.into_iter().flatten())
    }
}

// === impl TypeState ===

impl TypeState {
    /// The state for a type's first request on a stream: it subscribes to
    /// `subscribe` (everything when empty or when it holds `*`) minus
    /// `unsubscribe`, and holds `initial` (name -> version) of what it wants.
    /// Names and versions equal to the store's share the store's `Arc`s.
    pub(super) fn first(
        type_url: Arc<str>,
        subscribe: &[String],
        unsubscribe: &[String],
        initial: impl IntoIterator<Item = (String, String)>,
        snapshot: &Snapshot,
    ) -> Self {
        let mut state = TypeState {
            wildcard: subscribe.is_empty() || subscribe.iter().any(|n| n == WILDCARD),
            names: subscribe
                .iter()
                .filter(|n| *n != WILDCARD)
                .map(|n| Arc::from(n.as_str()))
                .collect(),
            held: Held::Versions(HashMap::new()),
            revision: snapshot.revision,
            nonces: Vec::new(),
            type_url,
        };
        for name in unsubscribe {
            state.unsubscribe(name);
        }
        let resources = snapshot.resources(&state.type_url);
        let held = initial
            .into_iter()
            .filter(|(name, _)| state.wants(name))
            .map(
                |(name, version)| match resources.and_then(|m| m.get(name.as_str())) {
                    Some(r) if *r.version == *version => (r.name.clone(), r.version.clone()),
                    _ => (Arc::from(name), Arc::from(version)),
                },
            )
            .collect();
        state.held = Held::Versions(held);
        state
    }

    /// How many resources the client holds.
    pub(super) fn held_len(&self) -> usize {
        self.held.len()
    }

    pub(super) fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Subscribes to `names`. Returns whether the wildcard was added and
    /// which explicit names are new.
    pub(super) fn subscribe(&mut self, names: &[String]) -> (bool, Vec<Arc<str>>) {
        let mut became_wildcard = false;
        let mut added = Vec::new();
        for name in names {
            if name == WILDCARD {
                became_wildcard |= !self.wildcard;
                self.wildcard = true;
            } else {
                let name: Arc<str> = Arc::from(name.as_str());
                if self.names.insert(name.clone()) {
                    added.push(name);
                }
            }
        }
        (became_wildcard, added)
    }

    /// Stops watching `name` (or the wildcard). What is no longer wanted is
    /// forgotten, so a later subscribe sends it again.
    pub(super) fn unsubscribe(&mut self, name: &str) {
        if name == WILDCARD {
            self.wildcard = false;
        } else {
            self.names.remove(name);
        }
        if !self.wildcard {
            self.forget_unwanted();
        }
    }

    /// Keeps only what explicit names want, as a name -> version map: for a
    /// subscription that is not (or no longer) a wildcard.
    fn forget_unwanted(&mut self) {
        let names = &self.names;
        match &mut self.held {
            Held::Versions(versions) => versions.retain(|name, _| names.contains(name)),
            Held::Store(resources) => {
                let versions = match resources {
                    Some(resources) => names
                        .iter()
                        .filter_map(|name| resources.get(name))
                        .map(|r| (r.name.clone(), r.version.clone()))
                        .collect(),
                    None => HashMap::new(),
                };
                self.held = Held::Versions(versions);
            }
        }
    }

    /// Brings this type up to `snapshot`, plus `extra` names (newly
    /// subscribed) whatever their revision.
    pub(super) fn catch_up(&mut self, snapshot: &Snapshot, extra: &[Arc<str>]) -> Delta {
        match snapshot.changed_since(&self.type_url, self.revision) {
            ChangedSince::Names(names) => self.diff_names(snapshot, names.iter().chain(extra)),
            ChangedSince::TooOld => self.diff_all(snapshot),
        }
    }

    /// Compares everything wanted against what the client has, and brings
    /// this type up to `snapshot`.
    pub(super) fn diff_all(&mut self, snapshot: &Snapshot) -> Delta {
        let mut delta = Delta::default();
        let resources = snapshot.resources(&self.type_url);
        if let (Held::Store(Some(held)), Some(current)) = (&self.held, resources)
            && self.wildcard
            && std::ptr::eq(held.as_ref(), current)
        {
            // Already holds exactly this map: other types changed.
            self.revision = snapshot.revision;
            return delta;
        }
        for name in self.held.names() {
            if !resources.is_some_and(|m| m.contains_key(name)) {
                delta.removals.push(name.clone());
            }
        }
        for (name, current) in resources.into_iter().flatten() {
            if self.wants(name) && self.held.version(name) != Some(&current.version) {
                delta.upserts.push(current.clone());
            }
        }
        self.record(snapshot, &delta);
        delta
    }

    /// Compares the named resources against what the client has, and brings
    /// this type up to `snapshot` (the caller knows nothing else changed).
    fn diff_names<'a>(
        &mut self,
        snapshot: &Snapshot,
        names: impl IntoIterator<Item = &'a Arc<str>>,
    ) -> Delta {
        let mut delta = Delta::default();
        let resources = snapshot.resources(&self.type_url);
        // The change log may name a resource more than once.
        let mut seen: HashSet<&Arc<str>> = HashSet::new();
        for name in names {
            if !self.wants(name) || !seen.insert(name) {
                continue;
            }
            let current = resources.and_then(|m| m.get(name));
            match (current, self.held.version(name)) {
                (Some(current), Some(held)) if *held == current.version => {}
                (Some(current), _) => delta.upserts.push(current.clone()),
                (None, Some(_)) => delta.removals.push(name.clone()),
                (None, None) => {}
            }
        }
        self.record(snapshot, &delta);
        delta
    }

    /// Notes that `delta` is sent and that the client is now at `snapshot`.
    fn record(&mut self, snapshot: &Snapshot, delta: &Delta) {
        self.revision = snapshot.revision;
        if self.wildcard {
            // Everything wanted, at the snapshot's versions: see the module doc.
            self.held = Held::Store(snapshot.shared_resources(&self.type_url).cloned());
            return;
        }
        if let Held::Store(_) = self.held {
            // Not reached: leaving the wildcard already converts.
            self.forget_unwanted();
        }
        if let Held::Versions(versions) = &mut self.held {
            for resource in &delta.upserts {
                versions.insert(resource.name.clone(), resource.version.clone());
            }
            for name in &delta.removals {
                versions.remove(name);
            }
        }
    }

    /// Adds to `delta` the explicitly subscribed `names` that do not exist
    /// and that the client has not been told about: the delta protocol says
    /// so with `removed_resources`.
    pub(super) fn absent<'a>(
        &self,
        snapshot: &Snapshot,
        names: impl IntoIterator<Item = &'a Arc<str>>,
        delta: &mut Delta,
    ) {
        let resources = snapshot.resources(&self.type_url);
        for name in names {
            let exists = resources.is_some_and(|m| m.contains_key(name));
            if !exists && self.held.version(name).is_none() && !delta.removals.contains(name) {
                delta.removals.push(name.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The diff and what a stream holds, against real store snapshots.

use std::collections::HashMap;
use std::sync::Arc;

use prost_types::Any;

use super::*;
use crate::store::ResourceStore;

const TYPE: &str = "type.googleapis.com/test.Thing";

fn put(store: &ResourceStore, items: &[(&str, &str)]) {
    let upserts = items
        .iter()
        .map(|(name, content)| {
            let body = Any {
                type_url: TYPE.to_string(),
                value: content.as_bytes().to_vec(),
            };
            (name.to_string(), body)
        })
        .collect();
    store.apply(TYPE, upserts, vec![]).unwrap();
}

fn snapshot(store: &ResourceStore) -> Arc<Snapshot> {
    store.subscribe().borrow().clone()
}

fn names(resources: &[Arc<StoredResource>]) -> Vec<&str> {
    let mut names: Vec<&str> = resources.iter().map(|r| &*r.name).collect();
    names.sort_unstable();
    names
}

fn wildcard(snapshot: &Snapshot) -> TypeState {
    TypeState::first(Arc::from(TYPE), &[], &[], HashMap::new(), snapshot)
}

/// Whether the state holds the store's own map of `snapshot`, not a copy.
fn holds_store_map(state: &TypeState, snapshot: &Snapshot) -> bool {
    match (&state.held, snapshot.shared_resources(TYPE)) {
        (Held::Store(Some(held)), Some(map)) => Arc::ptr_eq(held, map),
        _ => false,
    }
}

#[test]
fn wildcard_holds_the_store_map_after_every_push() {
    let store = ResourceStore::new();
    put(&store, &[("a", "1"), ("b", "1")]);
    let first = snapshot(&store);
    let mut state = wildcard(&first);
    assert_eq!(names(&state.diff_all(&first).upserts), ["a", "b"]);
    assert!(holds_store_map(&state, &first));

    put(&store, &[("b", "2"), ("c", "1")]);
    store.apply(TYPE, vec![], vec!["a".into()]).unwrap();
    let second = snapshot(&store);
    let delta = state.catch_up(&second, &[]);
    assert_eq!(names(&delta.upserts), ["b", "c"]);
    assert_eq!(delta.removals, [Arc::from("a")]);
    assert!(holds_store_map(&state, &second));
    assert_eq!(state.revision, second.revision);

    // Nothing changed since: nothing to send.
    assert!(state.catch_up(&second, &[]).is_empty());
    assert!(state.diff_all(&second).is_empty());
}

#[test]
fn initial_versions_spare_what_the_client_has() {
    let store = ResourceStore::new();
    put(&store, &[("a", "1"), ("b", "1")]);
    let snapshot = snapshot(&store);
    let a = store.get(TYPE, "a").unwrap();
    let initial = HashMap::from([
        ("a".to_string(), a.version.to_string()),
        ("ghost".to_string(), "0".to_string()),
    ]);
    let mut state = TypeState::first(Arc::from(TYPE), &[], &[], initial, &snapshot);
    // The name and version equal to the store's are the store's own.
    match &state.held {
        Held::Versions(versions) => {
            let (name, version) = versions.get_key_value("a").unwrap();
            assert!(Arc::ptr_eq(name, &a.name) && Arc::ptr_eq(version, &a.version));
        }
        Held::Store(_) => panic!("no push yet: the client's own versions"),
    }
    let delta = state.diff_all(&snapshot);
    assert_eq!(names(&delta.upserts), ["b"]);
    assert_eq!(delta.removals, [Arc::from("ghost")]);
    assert!(holds_store_map(&state, &snapshot));
}

#[test]
fn a_name_changed_twice_is_sent_once() {
    let store = ResourceStore::new();
    put(&store, &[("a", "1")]);
    let first = snapshot(&store);
    let mut state = wildcard(&first);
    state.diff_all(&first);
    put(&store, &[("a", "2")]);
    put(&store, &[("a", "3")]);
    let delta = state.catch_up(&snapshot(&store), &[]);
    assert_eq!(names(&delta.upserts), ["a"]);
}

#[test]
fn leaving_the_wildcard_keeps_only_explicit_names() {
    let store = ResourceStore::new();
    put(&store, &[("a", "1"), ("b", "1")]);
    let first = snapshot(&store);
    let mut state = TypeState::first(
        Arc::from(TYPE),
        &["*".to_string(), "a".to_string()],
        &[],
        HashMap::new(),
        &first,
    );
    state.diff_all(&first);
    state.unsubscribe(WILDCARD);
    assert_eq!(state.held_len(), 1);
    assert!(state.held.version("a").is_some() && state.held.version("b").is_none());

    // Only the explicit name is followed now.
    put(&store, &[("a", "2"), ("b", "2")]);
    let delta = state.catch_up(&snapshot(&store), &[]);
    assert_eq!(names(&delta.upserts), ["a"]);

    // Back to the wildcard: what is not held is sent.
    let (became_wildcard, added) = state.subscribe(&["*".to_string()]);
    assert!(became_wildcard && added.is_empty());
    let now = snapshot(&store);
    assert_eq!(names(&state.diff_all(&now).upserts), ["b"]);
    assert!(holds_store_map(&state, &now));
}

//! The rules of [`DirState`] without a filesystem: reads in, events out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::state::{Digest, parse_file};
use super::*;
use crate::model::{KubeObject, ObjectKey, ObjectKind};
use crate::sources::Change;

fn pod(name: &str, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  \
         labels:\n    version: {version}\nspec:\n  containers:\n  - name: app\n    image: app\n"
    )
}

fn pod_key(name: &str) -> ObjectKey {
    ObjectKey::new(ObjectKind::Pod, "default", name)
}

/// The file whose definition of pod `name` is in force.
fn holder<'a>(state: &'a DirState, name: &str) -> &'a Path {
    let in_force = state.keys[&pod_key(name)].in_force.as_ref();
    &in_force.expect("every key has a definition in force").file
}

fn text(path: &str, docs: &[String]) -> (PathBuf, FileRead) {
    (PathBuf::from(path), FileRead::Text(docs.join("---\n")))
}

/// `(origin, upserted keys, removed keys)` of each `Changes`, and
/// `(origin, problems)` of each `Problems`, in order.
#[derive(Debug, PartialEq)]
enum Seen {
    Changes(String, Vec<ObjectKey>, Vec<ObjectKey>),
    Problems(String, usize),
}

fn seen(events: Vec<SourceEvent>) -> Vec<Seen> {
    events
        .into_iter()
        .map(|event| match event {
            SourceEvent::Changes { origin, changes } => {
                let mut upserts = Vec::new();
                let mut removes = Vec::new();
                for change in changes {
                    match change {
                        Change::Upsert(object) => upserts.push(object.key()),
                        Change::Remove(key) => removes.push(key),
                    }
                }
                Seen::Changes(origin, upserts, removes)
            }
            SourceEvent::Problems { origin, problems } => Seen::Problems(origin, problems.len()),
            SourceEvent::Synced => panic!("DirState never sends Synced"),
        })
        .collect()
}

#[test]
fn config_file_names() {
    for name in ["a.yaml", "b.yml", "C.YAML"] {
        assert!(is_config_file_name(name), "{name}");
    }
    for name in [
        ".a.yaml",
        ".a.yaml.swp",
        "a.yaml~",
        "a.yaml.swp",
        ".#a.yaml",
        "#a.yaml#",
        "a.json",
        "..data",
        "a.yaml.tmp",
    ] {
        assert!(!is_config_file_name(name), "{name}");
    }
}

#[test]
fn unchanged_text_sends_nothing() {
    let mut state = DirState::default();
    let first = state.apply(vec![text("/d/a.yaml", &[pod("x", "v1")])]);
    assert_eq!(
        seen(first),
        [Seen::Changes(
            "/d/a.yaml".into(),
            vec![pod_key("x")],
            vec![]
        )]
    );
    assert!(
        state
            .apply(vec![text("/d/a.yaml", &[pod("x", "v1")])])
            .is_empty()
    );
}

#[test]
fn a_bad_document_keeps_the_whole_last_good_file() {
    let mut state = DirState::default();
    state.apply(vec![text("/d/a.yaml", &[pod("x", "v1"), pod("y", "v1")])]);

    // y changed and a third document is broken: nothing of the file applies.
    let broken = state.apply(vec![text(
        "/d/a.yaml",
        &[pod("x", "v1"), pod("y", "v2"), "kind: [".to_string()],
    )]);
    assert_eq!(seen(broken), [Seen::Problems("/d/a.yaml".into(), 1)]);
    assert_eq!(state.objects(), 2);

    let fixed = state.apply(vec![text("/d/a.yaml", &[pod("y", "v2")])]);
    assert_eq!(
        seen(fixed),
        [
            Seen::Changes("/d/a.yaml".into(), vec![pod_key("y")], vec![pod_key("x")]),
            Seen::Problems("/d/a.yaml".into(), 0),
        ]
    );
}

#[test]
fn a_key_defined_twice_in_one_file_makes_it_bad() {
    let mut state = DirState::default();
    let events = state.apply(vec![text("/d/a.yaml", &[pod("x", "v1"), pod("x", "v2")])]);
    assert_eq!(seen(events), [Seen::Problems("/d/a.yaml".into(), 1)]);
    assert_eq!(state.objects(), 0);
}

#[test]
fn duplicates_across_files_first_definition_wins_then_hands_over() {
    let mut state = DirState::default();
    let initial = state.apply(vec![
        text("/d/a.yaml", &[pod("x", "from-a")]),
        text("/d/b.yaml", &[pod("x", "from-b"), pod("y", "v1")]),
    ]);
    assert_eq!(
        seen(initial),
        [
            Seen::Changes("/d/a.yaml".into(), vec![pod_key("x")], vec![]),
            Seen::Changes("/d/b.yaml".into(), vec![pod_key("y")], vec![]),
            Seen::Problems("/d/b.yaml".into(), 1),
        ]
    );
    assert_eq!(holder(&state, "x"), Path::new("/d/a.yaml"));

    // A file that sorts first does not steal an object already in force.
    let stealer = state.apply(vec![text("/d/0.yaml", &[pod("x", "from-0")])]);
    assert_eq!(seen(stealer), [Seen::Problems("/d/0.yaml".into(), 1)]);

    // The holder drops it: the first remaining definition (path order) takes
    // over, as one Upsert, and its problem clears; b's now names 0.yaml.
    let handed_over = state.apply(vec![(PathBuf::from("/d/a.yaml"), FileRead::Gone)]);
    assert_eq!(
        seen(handed_over),
        [
            Seen::Changes("/d/0.yaml".into(), vec![pod_key("x")], vec![]),
            Seen::Problems("/d/0.yaml".into(), 0),
            Seen::Problems("/d/b.yaml".into(), 1),
        ]
    );
    assert_eq!(holder(&state, "x"), Path::new("/d/0.yaml"));
}

#[test]
fn a_moved_object_with_the_same_content_is_not_resent() {
    let mut state = DirState::default();
    state.apply(vec![
        text("/d/a.yaml", &[pod("x", "v1")]),
        text("/d/b.yaml", &[pod("x", "v1")]),
    ]);
    let events = state.apply(vec![(PathBuf::from("/d/a.yaml"), FileRead::Gone)]);
    assert_eq!(seen(events), [Seen::Problems("/d/b.yaml".into(), 0)]);
    assert_eq!(holder(&state, "x"), Path::new("/d/b.yaml"));
}

#[test]
fn an_unreadable_file_keeps_its_objects_and_is_reread_when_readable() {
    let mut state = DirState::default();
    state.apply(vec![text("/d/a.yaml", &[pod("x", "v1")])]);
    let failed = state.apply(vec![(
        PathBuf::from("/d/a.yaml"),
        FileRead::Failed("/d/a.yaml: cannot read".into()),
    )]);
    assert_eq!(seen(failed), [Seen::Problems("/d/a.yaml".into(), 1)]);
    assert_eq!(state.objects(), 1);

    // Same text as before the failure: parsed again, problems cleared.
    let readable = state.apply(vec![text("/d/a.yaml", &[pod("x", "v1")])]);
    assert_eq!(seen(readable), [Seen::Problems("/d/a.yaml".into(), 0)]);
}

#[test]
fn deleting_a_file_with_problems_clears_them() {
    let mut state = DirState::default();
    state.apply(vec![text("/d/a.yaml", &["kind: [".to_string()])]);
    let events = state.apply(vec![(PathBuf::from("/d/a.yaml"), FileRead::Gone)]);
    assert_eq!(seen(events), [Seen::Problems("/d/a.yaml".into(), 0)]);
}

#[test]
fn a_new_text_with_the_same_objects_sends_nothing() {
    let mut state = DirState::default();
    state.apply(vec![text("/d/a.yaml", &[pod("x", "v1"), pod("y", "v1")])]);
    // Reordered, commented, quoted differently: the same objects.
    let rewritten = format!(
        "# reordered\n{}---\n{}",
        pod("y", "v1"),
        pod("x", "v1").replace("name: x", "name: \"x\"")
    );
    let events = state.apply(vec![(
        PathBuf::from("/d/a.yaml"),
        FileRead::Text(rewritten),
    )]);
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn only_the_changed_object_of_a_file_is_sent_with_its_new_content() {
    let mut state = DirState::default();
    state.apply(vec![
        text("/d/a.yaml", &[pod("x", "v1"), pod("y", "v1")]),
        text("/d/b.yaml", &[pod("z", "v1")]),
    ]);
    let events = state.apply(vec![text("/d/a.yaml", &[pod("x", "v1"), pod("y", "v2")])]);
    let [SourceEvent::Changes { origin, changes }] = events.as_slice() else {
        panic!("expected one Changes: {events:?}");
    };
    assert_eq!(origin, "/d/a.yaml");
    let [Change::Upsert(KubeObject::Pod(y))] = changes.as_slice() else {
        panic!("expected one Upsert of a pod: {changes:?}");
    };
    assert_eq!(y.metadata.name.as_deref(), Some("y"));
    assert_eq!(y.metadata.labels.as_ref().unwrap()["version"], "v2");
}

#[test]
fn a_broken_file_hands_over_its_last_good_definition() {
    let mut state = DirState::default();
    state.apply(vec![
        text("/d/a.yaml", &[pod("x", "from-a")]),
        text("/d/b.yaml", &[pod("x", "from-b")]),
    ]);
    // b breaks, and its broken text has a different x: the last good one counts.
    let broken = state.apply(vec![text(
        "/d/b.yaml",
        &[pod("x", "broken"), "kind: [".to_string()],
    )]);
    assert_eq!(seen(broken), [Seen::Problems("/d/b.yaml".into(), 2)]);

    let events = state.apply(vec![(PathBuf::from("/d/a.yaml"), FileRead::Gone)]);
    let SourceEvent::Changes { origin, changes } = &events[0] else {
        panic!("expected b's definition to take over: {events:?}");
    };
    assert_eq!(origin, "/d/b.yaml");
    let [Change::Upsert(KubeObject::Pod(x))] = changes.as_slice() else {
        panic!("expected one Upsert of a pod: {changes:?}");
    };
    assert_eq!(x.metadata.labels.as_ref().unwrap()["version"], "from-b");
    // b keeps its parse problem; the duplicate one is gone.
    assert_eq!(seen(events)[1..], [Seen::Problems("/d/b.yaml".into(), 1)]);
    assert_eq!(holder(&state, "x"), Path::new("/d/b.yaml"));
}

#[test]
fn an_object_moved_between_files_in_one_batch_is_one_upsert() {
    let mut state = DirState::default();
    state.apply(vec![
        text("/d/a.yaml", &[pod("x", "v1")]),
        text("/d/b.yaml", &[pod("y", "v1")]),
    ]);
    let events = state.apply(vec![
        text("/d/a.yaml", &[]),
        text("/d/b.yaml", &[pod("y", "v1"), pod("x", "v2")]),
    ]);
    assert_eq!(
        seen(events),
        [Seen::Changes(
            "/d/b.yaml".into(),
            vec![pod_key("x")],
            vec![]
        )]
    );
    assert_eq!(holder(&state, "x"), Path::new("/d/b.yaml"));
    assert_eq!(state.keys[&pod_key("x")].definers.len(), 1);
}

#[test]
fn digests_follow_content() {
    let parse = |yaml: &str| {
        let mut objects = parse_file(Path::new("/d/a.yaml"), yaml).unwrap();
        Digest::of(&objects.remove(&pod_key("x")).unwrap())
    };
    assert_eq!(parse(&pod("x", "v1")), parse(&pod("x", "v1")));
    assert_ne!(parse(&pod("x", "v1")), parse(&pod("x", "v2")));
}

//! The rules of [`DirState`] without a filesystem: reads in, events out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::model::ObjectKind;

fn pod(name: &str, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  \
         labels:\n    version: {version}\nspec:\n  containers:\n  - name: app\n    image: app\n"
    )
}

fn pod_key(name: &str) -> ObjectKey {
    ObjectKey::new(ObjectKind::Pod, "default", name)
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
    assert_eq!(state.in_force.len(), 2);

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
    assert!(state.in_force.is_empty());
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
    assert_eq!(state.in_force[&pod_key("x")].file, Path::new("/d/a.yaml"));

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
    assert_eq!(state.in_force[&pod_key("x")].file, Path::new("/d/0.yaml"));
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
    assert_eq!(state.in_force[&pod_key("x")].file, Path::new("/d/b.yaml"));
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
    assert_eq!(state.in_force.len(), 1);

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

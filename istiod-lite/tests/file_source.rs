//! The file source against real files and the real watcher: initial load,
//! edits as deltas, broken files kept at their last good version, deletes,
//! duplicates across files, editor-style saves and ignored swap files.
//!
//! Every wait is bounded; "nothing else happened" is shown by ordering: the
//! next event after a step must be the one that step causes, so a stray
//! event (a Remove of a broken file's objects, a swap file read as config)
//! fails the test instead of being slept past.

// Helpers outside #[test] functions unwrap too: a panic is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use istiod_lite::model::{KubeObject, ObjectKey, ObjectKind};
use istiod_lite::sources::file::{FileSource, FileSourceError};
use istiod_lite::sources::{Change, SourceEvent};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Long enough for a loaded CI machine, short enough to fail fast.
const WAIT: Duration = Duration::from_secs(10);

fn pod(name: &str, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: demo\n  labels:\n    \
         app: {name}\n    version: {version}\nspec:\n  nodeName: node-a\n  containers:\n  \
         - name: app\n    image: app\nstatus:\n  podIP: 10.1.0.7\n"
    )
}

fn service(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: demo\nspec:\n  \
         selector:\n    app: {name}\n  ports:\n  - port: 80\n"
    )
}

fn docs(docs: &[String]) -> String {
    docs.join("---\n")
}

fn pod_key(name: &str) -> ObjectKey {
    ObjectKey::new(ObjectKind::Pod, "demo", name)
}

fn pod_version(object: &KubeObject) -> String {
    let KubeObject::Pod(pod) = object else {
        panic!("expected a pod: {object:?}");
    };
    pod.metadata.labels.as_ref().unwrap()["version"].clone()
}

/// A running source over a temporary directory.
struct Harness {
    dir: tempfile::TempDir,
    events: mpsc::Receiver<SourceEvent>,
    task: JoinHandle<Result<(), FileSourceError>>,
}

impl Harness {
    /// Writes `files`, starts the source, and returns it with its initial
    /// events (everything up to `Synced`).
    async fn start(files: &[(&str, String)]) -> (Self, Vec<SourceEvent>) {
        Self::start_with_settle(files, Duration::from_millis(50)).await
    }

    /// [`Harness::start`] with the source's quiet window set to `settle`.
    async fn start_with_settle(
        files: &[(&str, String)],
        settle: Duration,
    ) -> (Self, Vec<SourceEvent>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let (tx, events) = mpsc::channel(64);
        // A long rescan interval: these tests prove the watcher, not the rescan.
        let source = FileSource::new(dir.path())
            .with_settle(settle)
            .with_rescan_interval(Duration::from_secs(3600));
        let task = tokio::spawn(source.run(tx));
        let mut harness = Self { dir, events, task };
        let mut initial = Vec::new();
        loop {
            match harness.next().await {
                SourceEvent::Synced => break,
                event => initial.push(event),
            }
        }
        (harness, initial)
    }

    /// The canonical path of a file in the directory (what origins name).
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().canonicalize().unwrap().join(name)
    }

    fn origin(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    /// Saves like vim/emacs/kubectl-style tools: a hidden temp file renamed
    /// over the target.
    fn write_atomically(&self, name: &str, text: &str) {
        let temp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, self.dir.path().join(name)).unwrap();
    }

    async fn next(&mut self) -> SourceEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("no event from the file source in time")
            .expect("the file source stopped")
    }

    /// The next event, which must be `Changes` from `name`.
    async fn changes(&mut self, name: &str) -> Vec<Change> {
        match self.next().await {
            SourceEvent::Changes { origin, changes } => {
                assert_eq!(origin, self.origin(name));
                changes
            }
            other => panic!("expected changes from {name}, got {other:?}"),
        }
    }

    /// The next event, which must be `Problems` about `name`.
    async fn problems(&mut self, name: &str) -> Vec<String> {
        match self.next().await {
            SourceEvent::Problems { origin, problems } => {
                assert_eq!(origin, self.origin(name));
                problems
            }
            other => panic!("expected problems about {name}, got {other:?}"),
        }
    }
}

/// The single Upsert in `changes`.
fn only_upsert(changes: Vec<Change>) -> KubeObject {
    match <[Change; 1]>::try_from(changes) {
        Ok([Change::Upsert(object)]) => object,
        Ok(other) => panic!("expected one Upsert, got {other:?}"),
        Err(changes) => panic!("expected one Upsert, got {changes:?}"),
    }
}

/// The single Remove in `changes`.
fn only_remove(changes: Vec<Change>) -> ObjectKey {
    match <[Change; 1]>::try_from(changes) {
        Ok([Change::Remove(key)]) => key,
        Ok(other) => panic!("expected one Remove, got {other:?}"),
        Err(changes) => panic!("expected one Remove, got {changes:?}"),
    }
}

fn upserted_keys(event: &SourceEvent) -> Vec<ObjectKey> {
    match event {
        SourceEvent::Changes { changes, .. } => changes
            .iter()
            .map(|change| match change {
                Change::Upsert(object) => object.key(),
                Change::Remove(key) => panic!("unexpected Remove of {key}"),
            })
            .collect(),
        other => panic!("expected changes, got {other:?}"),
    }
}

#[tokio::test]
async fn initial_load_sends_every_object_then_synced() {
    let (harness, initial) = Harness::start(&[
        ("a.yaml", docs(&[pod("a", "v1"), service("a")])),
        ("b.yml", pod("b", "v1")),
        ("notes.txt", "not config".to_string()),
    ])
    .await;
    assert_eq!(initial.len(), 2, "one Changes per file: {initial:?}");
    let SourceEvent::Changes { origin, .. } = &initial[0] else {
        panic!("expected changes: {initial:?}");
    };
    assert_eq!(*origin, harness.origin("a.yaml"));
    assert_eq!(
        upserted_keys(&initial[0]),
        [
            pod_key("a"),
            ObjectKey::new(ObjectKind::Service, "demo", "a")
        ]
    );
    assert_eq!(upserted_keys(&initial[1]), [pod_key("b")]);
}

#[tokio::test]
async fn edits_are_sent_as_differences() {
    let (mut harness, _) = Harness::start(&[(
        "apps.yaml",
        docs(&[pod("a", "v1"), pod("b", "v1"), service("a")]),
    )])
    .await;

    // Changing one pod's label sends exactly that pod.
    harness.write(
        "apps.yaml",
        &docs(&[pod("a", "v2"), pod("b", "v1"), service("a")]),
    );
    let object = only_upsert(harness.changes("apps.yaml").await);
    assert_eq!(
        (object.key(), pod_version(&object)),
        (pod_key("a"), "v2".into())
    );

    // Adding a document sends the new object.
    harness.write(
        "apps.yaml",
        &docs(&[pod("a", "v2"), pod("b", "v1"), service("a"), pod("c", "v1")]),
    );
    assert_eq!(
        only_upsert(harness.changes("apps.yaml").await).key(),
        pod_key("c")
    );

    // Removing a document removes its object.
    harness.write(
        "apps.yaml",
        &docs(&[pod("a", "v2"), service("a"), pod("c", "v1")]),
    );
    assert_eq!(
        only_remove(harness.changes("apps.yaml").await),
        pod_key("b")
    );
}

#[tokio::test]
async fn deleting_a_file_removes_its_objects() {
    let (mut harness, _) = Harness::start(&[
        ("a.yaml", docs(&[pod("a", "v1"), service("a")])),
        ("b.yaml", pod("b", "v1")),
    ])
    .await;
    std::fs::remove_file(harness.path("a.yaml")).unwrap();
    let mut removed: Vec<ObjectKey> = harness
        .changes("a.yaml")
        .await
        .into_iter()
        .map(|change| match change {
            Change::Remove(key) => key,
            Change::Upsert(object) => panic!("unexpected Upsert of {}", object.key()),
        })
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        [
            pod_key("a"),
            ObjectKey::new(ObjectKind::Service, "demo", "a")
        ]
    );

    // Proof that nothing happened to b.yaml: its next edit is the next event.
    harness.write("b.yaml", &pod("b", "v2"));
    assert_eq!(
        only_upsert(harness.changes("b.yaml").await).key(),
        pod_key("b")
    );
}

#[tokio::test]
async fn a_broken_file_keeps_its_last_good_objects_until_fixed() {
    let (mut harness, _) = Harness::start(&[
        ("a.yaml", docs(&[pod("a", "v1"), pod("a2", "v1")])),
        ("b.yaml", pod("b", "v1")),
    ])
    .await;

    // Bad YAML in the second document (index 1), plus an edit of the first:
    // nothing of the file applies, and the problem names file and document.
    harness.write(
        "a.yaml",
        &docs(&[pod("a", "v2"), "metadata: [unclosed\n".to_string()]),
    );
    let problems = harness.problems("a.yaml").await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(&harness.origin("a.yaml")),
        "{problems:?}"
    );
    assert!(problems[0].contains("document 1"), "{problems:?}");
    assert!(problems[0].contains("not valid YAML"), "{problems:?}");

    // Other files still flow, and the broken file sent no Remove before.
    harness.write("b.yaml", &pod("b", "v2"));
    assert_eq!(
        only_upsert(harness.changes("b.yaml").await).key(),
        pod_key("b")
    );

    // Now an unknown kind: still broken, the problem names the kind and name.
    harness.write(
        "a.yaml",
        &docs(&[
            pod("a", "v2"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n".to_string(),
        ]),
    );
    let problems = harness.problems("a.yaml").await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("document 1"), "{problems:?}");
    assert!(problems[0].contains("ConfigMap"), "{problems:?}");
    assert!(problems[0].contains("\"settings\""), "{problems:?}");

    // Fixed: the difference against the last good version, then the
    // problems cleared.
    harness.write("a.yaml", &pod("a", "v2"));
    let mut changes = harness.changes("a.yaml").await;
    changes.sort_by_key(|change| matches!(change, Change::Upsert(_)));
    match changes.as_slice() {
        [Change::Remove(removed), Change::Upsert(upserted)] => {
            assert_eq!(*removed, pod_key("a2"));
            assert_eq!(
                (upserted.key(), pod_version(upserted)),
                (pod_key("a"), "v2".into())
            );
        }
        other => panic!("expected Remove a2 and Upsert a: {other:?}"),
    }
    assert_eq!(harness.problems("a.yaml").await, Vec::<String>::new());
}

#[tokio::test]
async fn a_file_broken_from_the_start_is_reported_before_synced() {
    let (harness, initial) = Harness::start(&[
        ("good.yaml", pod("a", "v1")),
        (
            "typo.yaml",
            pod("b", "v1").replace("kind: Pod", "kind: Pdo"),
        ),
    ])
    .await;
    let origin = harness.origin("typo.yaml");
    match initial.as_slice() {
        [
            SourceEvent::Changes { .. },
            SourceEvent::Problems {
                origin: o,
                problems,
            },
        ] => {
            assert_eq!(*o, origin);
            assert!(problems[0].contains("document 0"), "{problems:?}");
            assert!(problems[0].contains("Pdo"), "{problems:?}");
        }
        other => panic!("expected the good file's objects and the typo's problem: {other:?}"),
    }
}

#[tokio::test]
async fn duplicate_keys_across_files_keep_the_first() {
    let (mut harness, initial) = Harness::start(&[
        ("a.yaml", pod("shared", "from-a")),
        ("b.yaml", docs(&[pod("shared", "from-b"), pod("b", "v1")])),
    ])
    .await;
    assert_eq!(upserted_keys(&initial[0]), [pod_key("shared")]);
    assert_eq!(
        upserted_keys(&initial[1]),
        [pod_key("b")],
        "b's other objects apply"
    );
    let SourceEvent::Problems { origin, problems } = &initial[2] else {
        panic!("expected the duplicate reported: {initial:?}");
    };
    assert_eq!(*origin, harness.origin("b.yaml"));
    assert!(problems[0].contains("Pod demo/shared"), "{problems:?}");
    assert!(
        problems[0].contains(&harness.origin("a.yaml")),
        "{problems:?}"
    );

    // When a.yaml goes, b.yaml's definition takes over and its problem clears.
    std::fs::remove_file(harness.path("a.yaml")).unwrap();
    let object = only_upsert(harness.changes("b.yaml").await);
    assert_eq!(pod_version(&object), "from-b");
    assert_eq!(harness.problems("b.yaml").await, Vec::<String>::new());
}

#[tokio::test]
async fn editor_style_atomic_saves_work() {
    let (mut harness, _) =
        Harness::start(&[("a.yaml", docs(&[pod("a", "v1"), service("a")]))]).await;

    // Write a hidden temp file, rename it over the target.
    harness.write_atomically("a.yaml", &docs(&[pod("a", "v2"), service("a")]));
    let object = only_upsert(harness.changes("a.yaml").await);
    assert_eq!(
        (object.key(), pod_version(&object)),
        (pod_key("a"), "v2".into())
    );

    // Renamed away (to a name we ignore) is a delete.
    std::fs::rename(harness.path("a.yaml"), harness.path("a.yaml.bak")).unwrap();
    assert_eq!(harness.changes("a.yaml").await.len(), 2);
}

#[tokio::test]
async fn a_file_written_in_two_parts_within_the_quiet_window_is_read_once_whole() {
    // A window far longer than the pause between the parts, so a loaded
    // machine cannot stretch the pause past it.
    let settle = Duration::from_millis(500);
    let (mut harness, _) = Harness::start_with_settle(
        &[("a.yaml", docs(&[pod("a", "v1"), pod("b", "v1")]))],
        settle,
    )
    .await;

    // The first part alone is a valid file without b: read early, it would
    // send a Remove of b.
    let first = format!("{}---\n", pod("a", "v2"));
    let mut file = std::fs::File::create(harness.path("a.yaml")).unwrap();
    file.write_all(first.as_bytes()).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    file.write_all(pod("b", "v2").as_bytes()).unwrap();
    drop(file);

    let mut changes = harness.changes("a.yaml").await;
    changes.sort_by_key(|change| match change {
        Change::Upsert(object) => object.key(),
        Change::Remove(key) => key.clone(),
    });
    match changes.as_slice() {
        [Change::Upsert(a), Change::Upsert(b)] => {
            assert_eq!((a.key(), pod_version(a)), (pod_key("a"), "v2".into()));
            assert_eq!((b.key(), pod_version(b)), (pod_key("b"), "v2".into()));
        }
        other => panic!("expected the whole file, a and b at v2, in one read: {other:?}"),
    }

    // Nothing else came of the write: the next event is the next edit's.
    harness.write("a.yaml", &docs(&[pod("a", "v3"), pod("b", "v2")]));
    let object = only_upsert(harness.changes("a.yaml").await);
    assert_eq!(pod_version(&object), "v3");
}

#[tokio::test]
async fn hidden_and_swap_files_are_ignored() {
    let (mut harness, initial) = Harness::start(&[
        ("a.yaml", pod("a", "v1")),
        (".hidden.yaml", pod("hidden", "v1")),
    ])
    .await;
    assert_eq!(initial.len(), 1, "{initial:?}");

    for name in [".a.yaml.swp", "a.yaml~", ".#a.yaml", "4913"] {
        harness.write(name, "garbage: [");
    }
    harness.write(".other.yaml", &pod("other", "v1"));
    // The next event is the real edit: none of the above produced one.
    harness.write("a.yaml", &pod("a", "v2"));
    assert_eq!(
        only_upsert(harness.changes("a.yaml").await).key(),
        pod_key("a")
    );
}

#[tokio::test]
async fn a_missing_directory_is_an_error_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("config");
    let (tx, _rx) = mpsc::channel(1);
    let error = FileSource::new(&missing).run(tx).await.unwrap_err();
    assert!(
        matches!(error, FileSourceError::DirectoryMissing { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("create it"), "{message}");

    let file = dir.path().join("file.yaml");
    std::fs::write(&file, "").unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let error = FileSource::new(&file).run(tx).await.unwrap_err();
    assert!(
        matches!(error, FileSourceError::NotADirectory { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn stops_when_the_pipeline_goes_away() {
    let (harness, _) = Harness::start(&[("a.yaml", pod("a", "v1"))]).await;
    let Harness { events, task, dir } = harness;
    drop(events);
    let result = tokio::time::timeout(WAIT, task)
        .await
        .expect("source did not stop");
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    drop(dir);
}

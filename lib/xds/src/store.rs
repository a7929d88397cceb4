//! The control plane's resource store: per type URL, `name -> (version, body)`,
//! changed in batches and read by every discovery stream.
//!
//! # The idea
//!
//! Writers (the push layer of the control plane) call
//! [`ResourceStore::apply`] with a batch of upserts and removals. Each batch
//! that changes anything produces a new immutable snapshot with the next
//! revision, published through a `tokio::sync::watch`. Readers (one per
//! connected client) hold an `Arc` of the snapshot they last looked at, so a
//! reader never holds a lock a writer needs, and a slow reader never delays
//! anyone: it simply skips to the newest snapshot when it wakes.
//!
//! Versions are derived from the encoded resource (a 64-bit FNV-1a hash of its
//! type URL and bytes). An unchanged resource keeps its version, so re-applying
//! it is a no-op that wakes nobody, and a version means the same thing across
//! control-plane restarts, which is what lets a reconnecting client's
//! `initial_resource_versions` spare it a full resend.
//!
//! # Cost of a change
//!
//! Every snapshot carries a bounded log of recent change records (which names
//! of which type changed at which revision). A reader that is at most
//! [`CHANGE_LOG_LEN`] revisions behind looks up only the changed names, so one
//! changed resource costs each client O(1), not O(all resources). A reader that
//! fell further behind does one full comparison instead. The writer pays, once
//! per batch and not per client, a copy of the changed type's name index
//! (reference-counted entries, no resource bytes are copied).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prost_types::Any;
use tokio::sync::watch;

/// How many change records a snapshot keeps. A reader further behind than
/// this compares its whole view against the snapshot instead; with debounced
/// writers that is rare, and the bound keeps snapshot creation cheap.
pub const CHANGE_LOG_LEN: usize = 1024;

/// Why a batch was refused. A refused batch changes nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The batch named no type.
    #[error(
        "resource batch has an empty type URL: pass the type URL the resources are pushed under"
    )]
    EmptyTypeUrl,
    /// A resource or removal had no name.
    #[error(
        "resource of type {type_url} has an empty name: every resource needs a name unique within its type"
    )]
    EmptyName {
        /// The batch's type URL.
        type_url: String,
    },
    /// A body's `Any` type URL differs from the batch's type URL; clients would
    /// fail to decode it.
    #[error(
        "resource {name} is a {found} but the batch is for {expected}: put it in a batch of its own type"
    )]
    TypeMismatch {
        /// The resource's name.
        name: String,
        /// The batch's type URL.
        expected: String,
        /// The type URL inside the resource's `Any`.
        found: String,
    },
}

/// One stored resource: its name, content-derived version and body.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    /// Name, unique within its type.
    pub name: Arc<str>,
    /// Version derived from the encoded body; equal bodies have equal versions.
    pub version: Arc<str>,
    /// The resource, as sent on the wire.
    pub body: Any,
}

/// What one [`ResourceStore::apply`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplyOutcome {
    /// Store revision after the batch; unchanged when nothing changed.
    pub revision: u64,
    /// Resources added or given a new version.
    pub upserted: usize,
    /// Resources that existed and were removed.
    pub removed: usize,
}

impl ApplyOutcome {
    /// Whether the batch changed anything (and so woke the readers).
    pub fn changed(&self) -> bool {
        self.upserted + self.removed > 0
    }
}

/// Resources of one type, by name.
pub(crate) type TypeResources = HashMap<Arc<str>, Arc<StoredResource>>;

/// Which names of which type changed at one revision.
#[derive(Debug)]
pub(crate) struct ChangeRecord {
    pub(crate) revision: u64,
    pub(crate) type_url: Arc<str>,
    pub(crate) names: Box<[Arc<str>]>,
}

/// An immutable view of the whole store at one revision.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Increases by one for every batch that changed something.
    pub(crate) revision: u64,
    /// When this revision was published, for push latency.
    pub(crate) published: Instant,
    /// Per type URL; a type's map is shared between snapshots until it changes.
    types: HashMap<Arc<str>, Arc<TypeResources>>,
    /// The most recent change records, oldest first, consecutive revisions.
    log: Arc<VecDeque<Arc<ChangeRecord>>>,
}

/// The names of one type that changed after a given revision, or `None` when
/// the change log no longer reaches back that far.
pub(crate) enum ChangedSince {
    Names(Vec<Arc<str>>),
    TooOld,
}

// === impl Snapshot ===

impl Snapshot {
    /// The resources of `type_url`, if any were ever applied.
    pub(crate) fn resources(&self, type_url: &str) -> Option<&TypeResources> {
        self.types.get(type_url).map(|m| m.as_ref())
    }

    /// The resources of `type_url` as the snapshot shares them, for a reader
    /// to keep as what a client holds.
    pub(crate) fn shared_resources(&self, type_url: &str) -> Option<&Arc<TypeResources>> {
        self.types.get(type_url)
    }

    /// Names of `type_url` changed in revisions `(after, self.revision]`.
    /// May contain duplicates; callers look each one up anyway.
    pub(crate) fn changed_since(&self, type_url: &str, after: u64) -> ChangedSince {
        if after >= self.revision {
            return ChangedSince::Names(Vec::new());
        }
        // Revisions in the log are consecutive, so the log covers `after` iff
        // its oldest record is no newer than `after + 1`.
        match self.log.front() {
            Some(oldest) if oldest.revision <= after + 1 => {}
            _ => return ChangedSince::TooOld,
        }
        let start = self.log.partition_point(|r| r.revision <= after);
        let names = self
            .log
            .range(start..)
            .filter(|r| &*r.type_url == type_url)
            .flat_map(|r| r.names.iter().cloned())
            .collect();
        ChangedSince::Names(names)
    }
}

/// Resources by type URL and name, with content-derived versions, observed by
/// discovery streams through snapshots. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ResourceStore {
    /// Serializes writers so that no batch is built on a stale snapshot.
    /// Readers never take it.
    writer: Mutex<()>,
    /// The current snapshot; every discovery stream holds a receiver.
    snapshots: watch::Sender<Arc<Snapshot>>,
}

// === impl ResourceStore ===

impl Default for ResourceStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ResourceStore {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        let (snapshots, _) = watch::channel(Arc::new(Snapshot {
            revision: 0,
            published: Instant::now(),
            types: HashMap::new(),
            log: Arc::default(),
        }));
        Self {
            writer: Mutex::new(()),
            snapshots,
        }
    }

    /// Applies one batch for `type_url`: upserts first, then removals (a name
    /// in both ends up removed). Resources whose content did not change keep
    /// their version and are not counted; a batch that changes nothing does
    /// not wake any client. The batch is validated as a whole first, so an
    /// error leaves the store unchanged.
    pub fn apply(
        &self,
        type_url: &str,
        upserts: Vec<(String, Any)>,
        removals: Vec<String>,
    ) -> Result<ApplyOutcome, StoreError> {
        validate(type_url, &upserts, &removals)?;

        // A poisoned lock only means another writer panicked between taking
        // the lock and publishing; the published snapshot is always whole,
        // so carrying on is safe.
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.snapshots.borrow().clone();

        let type_key: Arc<str> = current
            .types
            .get_key_value(type_url)
            .map(|(k, _)| k.clone())
            .unwrap_or_else(|| Arc::from(type_url));
        let mut resources: TypeResources = current
            .types
            .get(type_url)
            .map(|m| TypeResources::clone(m))
            .unwrap_or_default();

        let mut changed: Vec<Arc<str>> = Vec::new();
        let mut outcome = ApplyOutcome {
            revision: current.revision,
            ..ApplyOutcome::default()
        };
        for (name, body) in upserts {
            let version = content_version(&body);
            if resources
                .get(name.as_str())
                .is_some_and(|r| *r.version == *version)
            {
                continue;
            }
            let name: Arc<str> = Arc::from(name);
            let resource = StoredResource {
                name: name.clone(),
                version: Arc::from(version),
                body,
            };
            resources.insert(name.clone(), Arc::new(resource));
            changed.push(name);
            outcome.upserted += 1;
        }
        for name in removals {
            if let Some((name, _)) = resources.remove_entry(name.as_str()) {
                changed.push(name);
                outcome.removed += 1;
            }
        }
        if changed.is_empty() {
            return Ok(outcome);
        }

        let revision = current.revision + 1;
        let mut log = VecDeque::clone(&current.log);
        if log.len() >= CHANGE_LOG_LEN {
            log.pop_front();
        }
        log.push_back(Arc::new(ChangeRecord {
            revision,
            type_url: type_key.clone(),
            names: changed.into_boxed_slice(),
        }));
        let mut types = current.types.clone();
        types.insert(type_key, Arc::new(resources));
        self.snapshots.send_replace(Arc::new(Snapshot {
            revision,
            published: Instant::now(),
            types,
            log: Arc::new(log),
        }));
        outcome.revision = revision;
        tracing::debug!(
            type_url,
            revision,
            upserted = outcome.upserted,
            removed = outcome.removed,
            "resources changed"
        );
        Ok(outcome)
    }

    /// The current revision: the number of batches that changed something.
    pub fn revision(&self) -> u64 {
        self.snapshots.borrow().revision
    }

    /// One resource, as currently stored.
    pub fn get(&self, type_url: &str, name: &str) -> Option<Arc<StoredResource>> {
        self.snapshots
            .borrow()
            .resources(type_url)
            .and_then(|m| m.get(name).cloned())
    }

    /// Name and version of every resource of `type_url`, sorted by name; for
    /// debug endpoints and tests.
    pub fn versions(&self, type_url: &str) -> Vec<(String, String)> {
        let snapshot = self.snapshots.borrow().clone();
        let mut versions: Vec<(String, String)> = snapshot
            .resources(type_url)
            .map(|m| {
                m.values()
                    .map(|r| (r.name.to_string(), r.version.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        versions.sort();
        versions
    }

    /// A receiver of snapshots for one discovery stream.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }
}

fn validate(
    type_url: &str,
    upserts: &[(String, Any)],
    removals: &[String],
) -> Result<(), StoreError> {
    if type_url.is_empty() {
        return Err(StoreError::EmptyTypeUrl);
    }
    let empty_name = || StoreError::EmptyName {
        type_url: type_url.to_string(),
    };
    for (name, body) in upserts {
        if name.is_empty() {
            return Err(empty_name());
        }
        if body.type_url != type_url {
            return Err(StoreError::TypeMismatch {
                name: name.clone(),
                expected: type_url.to_string(),
                found: body.type_url.clone(),
            });
        }
    }
    if removals.iter().any(|n| n.is_empty()) {
        return Err(empty_name());
    }
    Ok(())
}

/// The version of a resource: FNV-1a (64 bit) over its type URL and encoded
/// bytes, in hex. Stable across processes and releases, unlike std's hasher,
/// so versions survive a control-plane restart. Protobuf maps are ordered in
/// our generated types, so equal content always encodes to equal bytes.
pub fn content_version(body: &Any) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let bytes = body
        .type_url
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(body.value.iter());
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPE: &str = "type.googleapis.com/test.Thing";

    fn body(value: &[u8]) -> Any {
        Any {
            type_url: TYPE.to_string(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn versions_follow_content() {
        let store = ResourceStore::new();
        let first = store
            .apply(TYPE, vec![("a".into(), body(b"1"))], vec![])
            .unwrap();
        assert_eq!((first.revision, first.upserted), (1, 1));
        let v1 = store.get(TYPE, "a").unwrap().version.clone();

        // Same content: no new revision, same version.
        let again = store
            .apply(TYPE, vec![("a".into(), body(b"1"))], vec![])
            .unwrap();
        assert!(!again.changed());
        assert_eq!(again.revision, 1);
        assert_eq!(store.get(TYPE, "a").unwrap().version, v1);

        store
            .apply(TYPE, vec![("a".into(), body(b"2"))], vec![])
            .unwrap();
        assert_ne!(store.get(TYPE, "a").unwrap().version, v1);
        assert_eq!(store.revision(), 2);
    }

    #[test]
    fn removal_of_unknown_name_changes_nothing() {
        let store = ResourceStore::new();
        let outcome = store.apply(TYPE, vec![], vec!["nope".into()]).unwrap();
        assert!(!outcome.changed());
        assert_eq!(store.revision(), 0);
    }

    #[test]
    fn invalid_batches_are_refused_whole() {
        let store = ResourceStore::new();
        let wrong = Any {
            type_url: "type.googleapis.com/other.Thing".into(),
            value: vec![],
        };
        let err = store
            .apply(
                TYPE,
                vec![("a".into(), body(b"1")), ("b".into(), wrong)],
                vec![],
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::TypeMismatch { .. }));
        assert!(store.get(TYPE, "a").is_none());
        assert_eq!(
            store.apply("", vec![], vec![]).unwrap_err(),
            StoreError::EmptyTypeUrl
        );
        assert!(matches!(
            store.apply(TYPE, vec![], vec![String::new()]),
            Err(StoreError::EmptyName { .. })
        ));
    }

    #[test]
    fn change_log_names_only_what_changed() {
        let store = ResourceStore::new();
        store
            .apply(
                TYPE,
                vec![("a".into(), body(b"1")), ("b".into(), body(b"1"))],
                vec![],
            )
            .unwrap();
        store
            .apply(TYPE, vec![("b".into(), body(b"2"))], vec![])
            .unwrap();
        store
            .apply("type.googleapis.com/test.Other", vec![], vec![])
            .unwrap();
        let snapshot = store.subscribe().borrow().clone();
        match snapshot.changed_since(TYPE, 1) {
            ChangedSince::Names(names) => assert_eq!(names, vec![Arc::from("b")]),
            ChangedSince::TooOld => panic!("log should reach revision 1"),
        }
        assert!(matches!(
            snapshot.changed_since(TYPE, 2),
            ChangedSince::Names(n) if n.is_empty()
        ));
    }

    #[test]
    fn change_log_is_bounded() {
        let store = ResourceStore::new();
        for i in 0..CHANGE_LOG_LEN + 10 {
            store
                .apply(TYPE, vec![("a".into(), body(&i.to_le_bytes()))], vec![])
                .unwrap();
        }
        let snapshot = store.subscribe().borrow().clone();
        assert!(matches!(
            snapshot.changed_since(TYPE, 0),
            ChangedSince::TooOld
        ));
        assert!(matches!(
            snapshot.changed_since(TYPE, 20),
            ChangedSince::Names(n) if n.len() == CHANGE_LOG_LEN - 10
        ));
    }
}

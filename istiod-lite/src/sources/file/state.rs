//! What the file source knows about its directory, and the rules that turn
//! fresh reads of some files into events (see the parent module's docs).
//!
//! Pure: file contents in, events out, no filesystem, so the rules are
//! tested without one.
//!
//! The work is proportional to what changed, not to the directory: a read
//! touches only the keys whose definition it added, removed or changed, and
//! only those keys get their definition in force chosen again. A map from
//! every key to the files defining it answers "who takes over" without a
//! scan, and only the re-read files plus the other definers of a key whose
//! holder changed get their problems recomputed.
//!
//! The source does not keep parsed objects: the pipeline's index holds the
//! one copy. Per object it keeps a [`Digest`] of its content to decide
//! whether it changed, and per file its last good text, parsed again only
//! when an object that was not just read must be sent (a file taking over
//! a key another file dropped).

use std::cmp::Ordering;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{debug, error, warn};

use super::{FileRead, origin};
use crate::model::{KubeObject, ObjectKey, parse_documents};
use crate::sources::{Change, SourceEvent};

/// What the source knows about the directory.
#[derive(Debug, Default)]
pub(super) struct DirState {
    /// Every config file seen and still present, by path.
    pub(super) files: BTreeMap<Arc<Path>, FileState>,
    /// Every object some file's last good version defines: who defines it
    /// and whose definition the pipeline has.
    pub(super) keys: BTreeMap<ObjectKey, KeyState>,
}

/// One file's history.
#[derive(Debug, Default)]
pub(super) struct FileState {
    /// The text last read, so unchanged files are not parsed again. `None`
    /// after a failed read, so the next read is always parsed.
    text: Option<Arc<str>>,
    /// The text of the last version that parsed (empty if none did),
    /// parsed again to send one of its objects that was not just read.
    /// Shares `text`'s allocation while the file is good.
    good_text: Arc<str>,
    /// The digest of each object of the last good version.
    good: BTreeMap<ObjectKey, Digest>,
    /// What is wrong with the current text (empty when it parsed).
    read_problems: Vec<String>,
    /// The problems last reported for this file, so only changes are sent.
    reported: Vec<String>,
}

/// Who defines one object, and whose definition the pipeline has.
#[derive(Debug)]
pub(super) struct KeyState {
    /// The definitions in the files' last good versions, in path order.
    /// Never empty outside [`DirState::apply`].
    pub(super) definers: Vec<Definition>,
    /// The definition the pipeline has. `None` only inside
    /// [`DirState::apply`], for an object no file defined before.
    pub(super) in_force: Option<Definition>,
}

/// One file's definition of an object.
#[derive(Debug, Clone)]
pub(super) struct Definition {
    /// The file.
    pub(super) file: Arc<Path>,
    /// What it defines the object as.
    digest: Digest,
}

/// A 128-bit digest of an object's content. Equal objects have equal
/// digests; two different objects share one with probability 2^-128, far
/// below anything else that can go wrong, so comparing digests stands in
/// for comparing objects the source no longer keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Digest([u64; 2]);

/// The `Changes` being built for one file: removals, then upserts.
#[derive(Debug, Default)]
struct FileChanges {
    removes: Vec<Change>,
    upserts: Vec<Change>,
}

// === impl DirState ===

impl DirState {
    /// The number of objects in force.
    pub(super) fn objects(&self) -> usize {
        self.keys.len()
    }

    /// The paths of the files seen and still present.
    pub(super) fn paths(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(|path| &**path)
    }

    /// Takes in fresh reads of some files and returns what the pipeline must
    /// hear: one `Changes` per file whose objects in force changed, then one
    /// `Problems` per file whose problems changed.
    pub(super) fn apply(&mut self, reads: Vec<(PathBuf, FileRead)>) -> Vec<SourceEvent> {
        // Keys whose definers or definition changed: the only ones whose
        // definition in force can change.
        let mut touched = BTreeSet::new();
        // Objects parsed by this call, by file: sent without parsing again.
        let mut parsed: BTreeMap<Arc<Path>, BTreeMap<ObjectKey, KubeObject>> = BTreeMap::new();
        // Files whose problems may have changed.
        let mut recheck = BTreeSet::new();
        // Removed files that had problems: their problems are cleared.
        let mut cleared = Vec::new();
        for (path, read) in reads {
            match read {
                FileRead::Gone => {
                    let Some((path, file)) = self.files.remove_entry(path.as_path()) else {
                        continue;
                    };
                    debug!(file = %path.display(), objects = file.good.len(), "config file removed");
                    for key in file.good.into_keys() {
                        undefine(&mut self.keys, &key, &path);
                        touched.insert(key);
                    }
                    if !file.reported.is_empty() {
                        cleared.push(path);
                    }
                }
                FileRead::Failed(problem) => {
                    let (path, file) = file_entry(&mut self.files, path);
                    file.text = None;
                    file.read_problems = vec![problem];
                    recheck.insert(path);
                }
                FileRead::Text(text) => {
                    let (path, file) = file_entry(&mut self.files, path);
                    if file.text.as_deref() == Some(text.as_str()) {
                        continue;
                    }
                    let text: Arc<str> = text.into();
                    match parse_file(&path, &text) {
                        Ok(objects) => {
                            let good = objects
                                .iter()
                                .map(|(key, object)| (key.clone(), Digest::of(object)))
                                .collect();
                            let old = std::mem::replace(&mut file.good, good);
                            diff_definitions(&old, &file.good, |key, digest| {
                                match digest {
                                    Some(digest) => define(&mut self.keys, key, &path, digest),
                                    None => undefine(&mut self.keys, key, &path),
                                }
                                touched.insert(key.clone());
                            });
                            file.good_text = Arc::clone(&text);
                            file.read_problems.clear();
                            parsed.insert(Arc::clone(&path), objects);
                        }
                        Err(problems) => {
                            warn!(
                                file = %path.display(),
                                problems = problems.len(),
                                kept_objects = file.good.len(),
                                "config file has problems; keeping its last good version"
                            );
                            file.read_problems = problems;
                        }
                    }
                    file.text = Some(text);
                    recheck.insert(path);
                }
            }
        }

        let mut by_file: BTreeMap<Arc<Path>, FileChanges> = BTreeMap::new();
        for key in touched {
            self.choose(key, &mut parsed, &mut by_file, &mut recheck);
        }

        let mut events: Vec<SourceEvent> = by_file
            .into_iter()
            .map(|(path, changes)| changes.into_event(&path))
            .collect();
        events.extend(cleared.iter().map(|path| SourceEvent::Problems {
            origin: origin(path),
            problems: Vec::new(),
        }));
        for path in recheck {
            if let Some(event) = self.report_problems(&path) {
                events.push(event);
            }
        }
        events
    }

    /// Chooses again which definition of `key` is in force: the current
    /// holder's while it still defines the object, otherwise the first file
    /// in path order that defines it. Records the change to send, if any,
    /// and which files' problems it may have changed.
    fn choose(
        &mut self,
        key: ObjectKey,
        parsed: &mut BTreeMap<Arc<Path>, BTreeMap<ObjectKey, KubeObject>>,
        by_file: &mut BTreeMap<Arc<Path>, FileChanges>,
        recheck: &mut BTreeSet<Arc<Path>>,
    ) {
        let Some(state) = self.keys.get_mut(&key) else {
            return;
        };
        let old = state.in_force.take();
        let holder = match &old {
            Some(old) => state
                .definers
                .iter()
                .find(|definer| definer.file == old.file)
                .or(state.definers.first()),
            None => state.definers.first(),
        };
        let Some(holder) = holder.cloned() else {
            self.keys.remove(&key);
            if let Some(old) = old {
                let changes = by_file.entry(old.file).or_default();
                changes.removes.push(Change::Remove(key));
            }
            return;
        };
        if old.as_ref().is_none_or(|old| old.file != holder.file) {
            // The message naming the holder changed for every other definer.
            recheck.extend(
                state
                    .definers
                    .iter()
                    .map(|definer| Arc::clone(&definer.file)),
            );
        }
        state.in_force = Some(holder.clone());
        if old.is_some_and(|old| old.digest == holder.digest) {
            return;
        }
        let holder = holder.file;
        match self.take_object(&holder, &key, parsed) {
            Some(object) => {
                let changes = by_file.entry(holder).or_default();
                changes.upserts.push(Change::Upsert(object));
            }
            None => {
                error!(%key, file = %holder.display(), "config source bug: a good version no longer parses; the object is not sent");
            }
        }
    }

    /// The object `key` as defined by `path`'s last good version: from this
    /// call's parse when there was one, otherwise by parsing it again.
    fn take_object(
        &self,
        path: &Arc<Path>,
        key: &ObjectKey,
        parsed: &mut BTreeMap<Arc<Path>, BTreeMap<ObjectKey, KubeObject>>,
    ) -> Option<KubeObject> {
        if !parsed.contains_key(path) {
            let file = self.files.get(path)?;
            // Parsed before without problems, and parsing is deterministic.
            let objects = parse_file(path, &file.good_text).ok()?;
            parsed.insert(Arc::clone(path), objects);
        }
        parsed.get_mut(path)?.remove(key)
    }

    /// `path`'s problems, as an event if they differ from those last
    /// reported.
    fn report_problems(&mut self, path: &Arc<Path>) -> Option<SourceEvent> {
        let file = self.files.get(path)?;
        let mut problems = file.read_problems.clone();
        for key in file.good.keys() {
            if let Some(held) = self.keys.get(key).and_then(|key| key.in_force.as_ref())
                && held.file != *path
            {
                problems.push(format!(
                    "{}: {key} is already defined in {}; this definition is ignored while \
                     that one exists (the first definition wins): remove one of them",
                    path.display(),
                    held.file.display()
                ));
            }
        }
        if problems == file.reported {
            return None;
        }
        let file = self.files.get_mut(path)?;
        file.reported = problems.clone();
        Some(SourceEvent::Problems {
            origin: origin(path),
            problems,
        })
    }
}

/// The entry of `path` in `files`, created if new, with its shared path.
fn file_entry(
    files: &mut BTreeMap<Arc<Path>, FileState>,
    path: PathBuf,
) -> (Arc<Path>, &mut FileState) {
    let entry = files.entry(Arc::from(path));
    let path = Arc::clone(entry.key());
    (path, entry.or_default())
}

/// Records that `path`'s good version defines `key` as `digest`.
fn define(
    keys: &mut BTreeMap<ObjectKey, KeyState>,
    key: &ObjectKey,
    path: &Arc<Path>,
    digest: Digest,
) {
    let state = keys.entry(key.clone()).or_insert_with(|| KeyState {
        definers: Vec::new(),
        in_force: None,
    });
    let definition = Definition {
        file: Arc::clone(path),
        digest,
    };
    match state
        .definers
        .binary_search_by(|definer| definer.file.cmp(path))
    {
        Ok(at) => state.definers[at] = definition,
        Err(at) => state.definers.insert(at, definition),
    }
}

/// Records that `path`'s good version no longer defines `key`.
fn undefine(keys: &mut BTreeMap<ObjectKey, KeyState>, key: &ObjectKey, path: &Path) {
    if let Some(state) = keys.get_mut(key) {
        state.definers.retain(|definer| *definer.file != *path);
    }
}

/// Calls `changed` for each key whose definition differs between two
/// versions of a file, with its digest in `new` (`None`: `new` does not
/// define it). One merge of two sorted maps: an unchanged object costs a
/// comparison.
fn diff_definitions(
    old: &BTreeMap<ObjectKey, Digest>,
    new: &BTreeMap<ObjectKey, Digest>,
    mut changed: impl FnMut(&ObjectKey, Option<Digest>),
) {
    let mut old = old.iter().peekable();
    let mut new = new.iter().peekable();
    loop {
        let order = match (old.peek(), new.peek()) {
            (None, None) => return,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((old_key, _)), Some((new_key, _))) => old_key.cmp(new_key),
        };
        match order {
            Ordering::Less => {
                if let Some((key, _)) = old.next() {
                    changed(key, None);
                }
            }
            Ordering::Greater => {
                if let Some((key, &digest)) = new.next() {
                    changed(key, Some(digest));
                }
            }
            Ordering::Equal => {
                if let (Some((_, old_digest)), Some((key, &digest))) = (old.next(), new.next())
                    && *old_digest != digest
                {
                    changed(key, Some(digest));
                }
            }
        }
    }
}

/// Parses a file into its objects, or every problem it has.
pub(super) fn parse_file(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<ObjectKey, KubeObject>, Vec<String>> {
    let mut objects = BTreeMap::new();
    let mut problems = Vec::new();
    for result in parse_documents(text) {
        match result {
            Ok(object) => {
                let key = object.key();
                match objects.entry(key) {
                    Entry::Occupied(entry) => problems.push(format!(
                        "{}: {} is defined more than once in this file: keep one definition",
                        path.display(),
                        entry.key()
                    )),
                    Entry::Vacant(entry) => {
                        entry.insert(object);
                    }
                }
            }
            Err(error) => problems.push(format!("{}: {error}", path.display())),
        }
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(problems)
    }
}

// === impl FileChanges ===

impl FileChanges {
    fn into_event(self, path: &Path) -> SourceEvent {
        debug!(
            file = %path.display(),
            upserts = self.upserts.len(),
            removes = self.removes.len(),
            "config file changed"
        );
        let mut changes = self.removes;
        changes.extend(self.upserts);
        SourceEvent::Changes {
            origin: origin(path),
            changes,
        }
    }
}

// === impl Digest ===

impl Digest {
    /// The digest of `object`'s JSON form: deterministic for equal objects
    /// (maps are ordered), and fed straight into the hashers, never
    /// buffered.
    pub(super) fn of(object: &KubeObject) -> Self {
        let mut sink = DigestSink::default();
        let written = match object {
            KubeObject::Namespace(o) => serde_json::to_writer(&mut sink, o),
            KubeObject::Pod(o) => serde_json::to_writer(&mut sink, o),
            KubeObject::Service(o) => serde_json::to_writer(&mut sink, o),
            KubeObject::AuthorizationPolicy(o) => serde_json::to_writer(&mut sink, o),
            KubeObject::PeerAuthentication(o) => serde_json::to_writer(&mut sink, o),
            KubeObject::Gateway(o) => serde_json::to_writer(&mut sink, o),
            KubeObject::HttpRoute(o) => serde_json::to_writer(&mut sink, o),
            KubeObject::VirtualService(o) => serde_json::to_writer(&mut sink, o),
            KubeObject::DestinationRule(o) => serde_json::to_writer(&mut sink, o),
        };
        if written.is_err() {
            // Our kinds always serialize (objects that came from YAML, string
            // map keys); should one not, its `Debug` form is just as
            // deterministic.
            sink = DigestSink::default();
            sink.hash(format!("{object:?}").as_bytes());
        }
        sink.finish()
    }
}

/// Two SipHash streams over the same bytes, the second one prefixed so
/// the two halves are independent.
struct DigestSink([DefaultHasher; 2]);

impl Default for DigestSink {
    fn default() -> Self {
        let mut second = DefaultHasher::new();
        second.write_u8(0x5a);
        Self([DefaultHasher::new(), second])
    }
}

impl DigestSink {
    fn hash(&mut self, bytes: &[u8]) {
        for hasher in &mut self.0 {
            hasher.write(bytes);
        }
    }

    fn finish(&self) -> Digest {
        Digest([self.0[0].finish(), self.0[1].finish()])
    }
}

impl io::Write for DigestSink {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.hash(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

//! The file source: a directory of Kubernetes YAML, watched for edits.
//!
//! This is the embedded default: the same manifests a user would
//! `kubectl apply`, kept in one directory (its direct children only; the
//! source does not descend into subdirectories). Every `*.yaml` / `*.yml`
//! file is read at start and sent as one [`SourceEvent::Changes`] per file,
//! then [`SourceEvent::Synced`]. After that the directory is watched and each
//! change re-reads only the files it touched and sends the *difference*
//! against what is in force: the pipeline sees the same kind of deltas a
//! Kubernetes watch would produce, never a relist.
//!
//! # Rules
//!
//! - **A file is all or nothing.** One bad document (YAML that does not
//!   parse, a kind we do not read, an object that does not fit its schema, an
//!   object defined twice in the same file) makes the whole file bad: it is
//!   reported with [`SourceEvent::Problems`] and the file's last good version
//!   stays in force untouched. A half-applied file would leave the mesh in a
//!   state nobody wrote. Once the file parses again, the difference against
//!   the last good version is sent and the problems are cleared with an empty
//!   list. Other files are never affected.
//! - **The first definition wins.** When two files define the same object
//!   (kind, namespace, name), the file that defined it first keeps it (at
//!   start, "first" is path order) and the other file gets a problem naming
//!   both. The other file's remaining objects still apply. When the winning
//!   file drops the object, the other file's definition takes over.
//! - **Content decides.** An object is sent again only when its content
//!   changed, and a file whose bytes did not change is not even parsed, so
//!   editors that save twice, `touch`, or our own periodic rescan cost nothing
//!   downstream.
//! - **Editors are expected.** Hidden files and swap/backup files (`.*`,
//!   `*~`, `*.swp`) are ignored, so `vim`'s and `emacs`' droppings never show
//!   up as config; write-to-temp-then-rename saves arrive as one change of
//!   the target file; bursts of events are debounced.
//! - **Events can be missed** (inotify queue overflow, network filesystems),
//!   so besides notify's recommended watcher (with notify's poll watcher as
//!   the fallback when the native one cannot start) the directory is rescanned
//!   periodically. Kubernetes ConfigMap volumes swap a hidden `..data`
//!   symlink; any change to such a `..` entry also triggers a rescan.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::{Change, SourceEvent};
use crate::model::{KubeObject, ObjectKey, parse_documents};

#[cfg(test)]
mod tests;

/// Quiet time after the last filesystem event before files are re-read:
/// long enough to cover an editor's truncate-write-rename sequence, short
/// enough that an edit reaches proxies well within a second.
const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(75);
/// Upper bound on how long a continuous stream of events can postpone a
/// re-read, so a file being rewritten in a loop cannot starve the others.
const MAX_BATCH_DELAY: Duration = Duration::from_secs(1);
/// How often the whole directory is re-read to catch events the watcher
/// missed. Unchanged files cost one read and a string comparison.
const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Poll interval of notify's poll watcher, used only when the native
/// watcher cannot start (for example, inotify watches exhausted).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Watches a directory of Kubernetes YAML and reports its objects.
#[derive(Debug, Clone)]
pub struct FileSource {
    /// The directory whose `*.yaml` / `*.yml` children hold the config.
    dir: PathBuf,
    /// Quiet time before a burst of filesystem events is acted on.
    debounce: Duration,
    /// Period of the full rescan that catches missed events.
    rescan_interval: Duration,
}

/// Why the file source could not start.
#[derive(Debug, thiserror::Error)]
pub enum FileSourceError {
    #[error(
        "config directory {} does not exist: create it, or point istiod-lite at the \
         directory that holds your YAML",
        path.display()
    )]
    DirectoryMissing { path: PathBuf },
    #[error(
        "config path {} is not a directory: point istiod-lite at the directory that holds \
         the YAML files, not at a file",
        path.display()
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "cannot read config directory {}: {source}: give the user istiod-lite runs as read \
         and execute permission on it",
        path.display()
    )]
    DirectoryPermission { path: PathBuf, source: io::Error },
    #[error("cannot read config directory {}: {source}", path.display())]
    ReadDirectory { path: PathBuf, source: io::Error },
    #[error(
        "cannot watch config directory {} for changes (native watcher: {native}; polling: \
         {polling}): check that the directory is readable",
        path.display()
    )]
    Watch {
        path: PathBuf,
        // Boxed: notify's errors are large and this variant is rare.
        native: Box<notify::Error>,
        polling: Box<notify::Error>,
    },
}

// === impl FileSource ===

impl FileSource {
    /// A source reading `dir` (not recursively).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            debounce: DEFAULT_DEBOUNCE,
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
        }
    }

    /// Sets the quiet time after a filesystem event before files are re-read
    /// (default 75 ms).
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Sets the period of the full rescan that catches missed events
    /// (default 30 s).
    pub fn with_rescan_interval(mut self, interval: Duration) -> Self {
        self.rescan_interval = interval;
        self
    }

    /// Reads the directory, reports its objects, then follows its changes.
    ///
    /// Returns `Ok(())` when `events` is closed (the pipeline shut down), and
    /// an error when the directory cannot be read or watched at start: there
    /// is no config to serve and the operator must fix the path. Once
    /// running, a directory that becomes unreadable is reported as a problem
    /// on the directory's path and everything stays in force.
    pub async fn run(self, events: mpsc::Sender<SourceEvent>) -> Result<(), FileSourceError> {
        let dir = check_directory(&self.dir)?;
        // Watch before the first read, so an edit landing between the two is
        // seen by the watcher rather than lost.
        let (raw_tx, mut raw_rx) = mpsc::unbounded_channel();
        let _watcher = start_watcher(&dir, raw_tx)?;

        let paths = list_config_files(&dir).map_err(|source| directory_error(&dir, source))?;
        let mut state = DirState::default();
        let initial = state.apply(read_files(paths).await);
        info!(
            dir = %dir.display(),
            files = state.files.len(),
            objects = state.in_force.len(),
            "loaded config directory"
        );
        for event in initial.into_iter().chain([SourceEvent::Synced]) {
            if events.send(event).await.is_err() {
                return Ok(());
            }
        }

        let mut rescan =
            tokio::time::interval_at(Instant::now() + self.rescan_interval, self.rescan_interval);
        rescan.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut directory_problem = false;
        loop {
            let batch = tokio::select! {
                first = raw_rx.recv() => match first {
                    Some(first) => self.collect_batch(&dir, first, &mut raw_rx).await,
                    // The watcher is owned by this function: it cannot be gone.
                    None => return Ok(()),
                },
                _ = rescan.tick() => Batch::Rescan,
                () = events.closed() => return Ok(()),
            };
            let reads = match batch {
                Batch::Files(paths) => read_files(paths).await,
                Batch::Rescan => match list_config_files(&dir) {
                    Ok(listed) => {
                        // Known files missing from the listing are gone.
                        let listed_set: BTreeSet<&PathBuf> = listed.iter().collect();
                        let gone: Vec<PathBuf> = state
                            .files
                            .keys()
                            .filter(|known| !listed_set.contains(known))
                            .cloned()
                            .collect();
                        let mut reads = read_files(listed).await;
                        reads.extend(gone.into_iter().map(|path| (path, FileRead::Gone)));
                        if std::mem::take(&mut directory_problem) {
                            let clear = SourceEvent::Problems {
                                origin: origin(&dir),
                                problems: Vec::new(),
                            };
                            if events.send(clear).await.is_err() {
                                return Ok(());
                            }
                        }
                        reads
                    }
                    Err(error) => {
                        // Keep everything in force: a directory that vanished
                        // for a moment (a remount, a redeploy) must not wipe
                        // the mesh's config.
                        let error = directory_error(&dir, error);
                        warn!(dir = %dir.display(), %error, "cannot rescan config directory; keeping current config");
                        directory_problem = true;
                        let report = SourceEvent::Problems {
                            origin: origin(&dir),
                            problems: vec![error.to_string()],
                        };
                        if events.send(report).await.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                },
            };
            for event in state.apply(reads) {
                if events.send(event).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// Gathers filesystem events until `debounce` passes without one (or
    /// [`MAX_BATCH_DELAY`] passes in total), and says what to re-read.
    async fn collect_batch(
        &self,
        dir: &Path,
        first: notify::Result<notify::Event>,
        raw_rx: &mut mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    ) -> Batch {
        let give_up_at = Instant::now() + MAX_BATCH_DELAY;
        let mut batch = Batch::Files(Vec::new());
        batch.add(dir, first);
        loop {
            let quiet_until = (Instant::now() + self.debounce).min(give_up_at);
            tokio::select! {
                next = raw_rx.recv() => match next {
                    Some(next) => batch.add(dir, next),
                    None => return batch,
                },
                () = tokio::time::sleep_until(quiet_until) => return batch,
            }
        }
    }
}

/// What a burst of filesystem events asks for.
#[derive(Debug)]
enum Batch {
    /// Re-read these files (each at most once).
    Files(Vec<PathBuf>),
    /// Re-read the whole directory: the watcher lost track.
    Rescan,
}

// === impl Batch ===

impl Batch {
    fn add(&mut self, dir: &Path, event: notify::Result<notify::Event>) {
        let Self::Files(paths) = self else {
            return;
        };
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                warn!(dir = %dir.display(), %error, "config directory watcher failed; rescanning");
                *self = Self::Rescan;
                return;
            }
        };
        // Opening and reading a file (including our own reads) is not a
        // change; closing a file written to is, and the rest are.
        if let EventKind::Access(access) = event.kind
            && access != notify::event::AccessKind::Close(notify::event::AccessMode::Write)
        {
            return;
        }
        if event.need_rescan() {
            *self = Self::Rescan;
            return;
        }
        for path in event.paths {
            let name = path.file_name().and_then(|name| name.to_str());
            let in_dir = path.parent().is_some_and(|parent| parent == dir);
            match name {
                Some(name) if in_dir && is_config_file_name(name) => {
                    let path = dir.join(name);
                    if !paths.contains(&path) {
                        paths.push(path);
                    }
                }
                // Kubernetes' atomic writer (ConfigMap volumes) swaps `..data`.
                Some(name) if in_dir && name.starts_with("..") => {
                    *self = Self::Rescan;
                    return;
                }
                Some(_) if in_dir => {}
                // The directory itself moved or vanished, or a path we cannot
                // place: only a listing tells what is there now.
                _ => {
                    *self = Self::Rescan;
                    return;
                }
            }
        }
    }
}

/// Whether a directory entry named `name` holds config: `*.yaml` / `*.yml`,
/// not hidden, not an editor's swap or backup file.
pub fn is_config_file_name(name: &str) -> bool {
    if name.starts_with('.') || name.ends_with('~') || name.ends_with(".swp") {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// The origin string of events about `path`.
fn origin(path: &Path) -> String {
    path.display().to_string()
}

/// Resolves `dir` to an absolute path (so origins and messages are
/// unambiguous) and checks that it is a readable directory.
fn check_directory(dir: &Path) -> Result<PathBuf, FileSourceError> {
    let canonical = dir
        .canonicalize()
        .map_err(|source| directory_error(dir, source))?;
    let metadata = std::fs::metadata(&canonical).map_err(|source| directory_error(dir, source))?;
    if !metadata.is_dir() {
        return Err(FileSourceError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    Ok(canonical)
}

fn directory_error(dir: &Path, source: io::Error) -> FileSourceError {
    let path = dir.to_path_buf();
    match source.kind() {
        io::ErrorKind::NotFound => FileSourceError::DirectoryMissing { path },
        io::ErrorKind::PermissionDenied => FileSourceError::DirectoryPermission { path, source },
        io::ErrorKind::NotADirectory => FileSourceError::NotADirectory { path },
        _ => FileSourceError::ReadDirectory { path, source },
    }
}

/// The config files directly in `dir`, in path order.
fn list_config_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if is_config_file_name(&name) {
            paths.push(dir.join(name));
        }
    }
    paths.sort();
    Ok(paths)
}

/// Starts notify's recommended watcher on `dir`, or its poll watcher when
/// the native one cannot start.
fn start_watcher(
    dir: &Path,
    raw_tx: mpsc::UnboundedSender<notify::Result<notify::Event>>,
) -> Result<Box<dyn Watcher + Send>, FileSourceError> {
    // A send fails only once `run` has returned: nobody is listening then.
    let handler = move |event| {
        let _ = raw_tx.send(event);
    };
    let native = notify::recommended_watcher(handler.clone()).and_then(|mut watcher| {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    let native = match native {
        Ok(watcher) => return Ok(Box::new(watcher)),
        Err(native) => native,
    };
    warn!(dir = %dir.display(), error = %native, "native file watcher unavailable; polling the config directory");
    let config = notify::Config::default().with_poll_interval(POLL_INTERVAL);
    let polling = notify::PollWatcher::new(handler, config).and_then(|mut watcher| {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    match polling {
        Ok(watcher) => Ok(Box::new(watcher)),
        Err(polling) => Err(FileSourceError::Watch {
            path: dir.to_path_buf(),
            native: Box::new(native),
            polling: Box::new(polling),
        }),
    }
}

/// What reading one file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileRead {
    /// The file's text.
    Text(String),
    /// The file is not there (deleted, renamed away, or no longer a file).
    Gone,
    /// The file is there but could not be read; the message says why.
    Failed(String),
}

/// Reads `paths` on the blocking pool: filesystems can stall.
async fn read_files(paths: Vec<PathBuf>) -> Vec<(PathBuf, FileRead)> {
    let task = tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .map(|path| {
                let read = read_file(&path);
                (path, read)
            })
            .collect::<Vec<_>>()
    });
    match task.await {
        Ok(reads) => reads,
        Err(error) => {
            // Reading cannot panic; if the runtime is shutting down the next
            // rescan (if any) reads again.
            warn!(%error, "reading config files was interrupted");
            Vec::new()
        }
    }
}

fn read_file(path: &Path) -> FileRead {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => {}
        Ok(_) => return FileRead::Gone,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return FileRead::Gone,
        Err(error) => return FileRead::Failed(read_problem(path, &error)),
    }
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => FileRead::Text(text),
            Err(error) => FileRead::Failed(format!(
                "{}: not UTF-8 text ({}): save the file as UTF-8",
                path.display(),
                error.utf8_error()
            )),
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => FileRead::Gone,
        Err(error) => FileRead::Failed(read_problem(path, &error)),
    }
}

fn read_problem(path: &Path, error: &io::Error) -> String {
    if error.kind() == io::ErrorKind::PermissionDenied {
        format!(
            "{}: cannot read: {error}: make the file readable by the user istiod-lite runs as",
            path.display()
        )
    } else {
        format!("{}: cannot read: {error}", path.display())
    }
}

/// Parses a file into its objects, or every problem it has.
fn parse_file(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<ObjectKey, Arc<KubeObject>>, Vec<String>> {
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
                        entry.insert(Arc::new(object));
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

/// What the source knows about the directory: each file's last good
/// objects, and which file's definition of each object is in force.
///
/// Pure: it takes file contents and returns events, so the rules in the
/// module docs are tested without a filesystem.
#[derive(Debug, Default)]
struct DirState {
    /// Every config file seen and still present, by path.
    files: BTreeMap<PathBuf, FileState>,
    /// The objects the pipeline has, with the file each came from.
    in_force: BTreeMap<ObjectKey, InForce>,
}

/// One file's history.
#[derive(Debug, Default)]
struct FileState {
    /// The text last read, so unchanged files are not parsed again. `None`
    /// after a failed read, so the next read is always parsed.
    text: Option<String>,
    /// The objects of the last version that parsed (empty if none did).
    good: BTreeMap<ObjectKey, Arc<KubeObject>>,
    /// What is wrong with the current text (empty when it parsed).
    read_problems: Vec<String>,
    /// The problems last reported for this file, so only changes are sent.
    reported: Vec<String>,
}

/// An object the pipeline has.
#[derive(Debug, Clone)]
struct InForce {
    file: PathBuf,
    object: Arc<KubeObject>,
}

// === impl DirState ===

impl DirState {
    /// Takes in fresh reads of some files and returns what the pipeline must
    /// hear: one `Changes` per file whose objects in force changed, then one
    /// `Problems` per file whose problems changed.
    fn apply(&mut self, reads: Vec<(PathBuf, FileRead)>) -> Vec<SourceEvent> {
        let mut cleared = Vec::new();
        for (path, read) in reads {
            match read {
                FileRead::Gone => {
                    if let Some(file) = self.files.remove(&path) {
                        debug!(file = %path.display(), objects = file.good.len(), "config file removed");
                        if !file.reported.is_empty() {
                            cleared.push(path);
                        }
                    }
                }
                FileRead::Failed(problem) => {
                    let file = self.files.entry(path).or_default();
                    file.text = None;
                    file.read_problems = vec![problem];
                }
                FileRead::Text(text) => {
                    let file = self.files.entry(path.clone()).or_default();
                    if file.text.as_deref() == Some(text.as_str()) {
                        continue;
                    }
                    match parse_file(&path, &text) {
                        Ok(objects) => {
                            file.good = objects;
                            file.read_problems.clear();
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
                }
            }
        }

        let next = self.next_in_force();
        let mut events = self.changes_to(&next);
        events.extend(cleared.iter().map(|path| SourceEvent::Problems {
            origin: origin(path),
            problems: Vec::new(),
        }));
        for (path, file) in &mut self.files {
            let mut problems = file.read_problems.clone();
            for key in file.good.keys() {
                if let Some(held) = next.get(key)
                    && held.file != *path
                {
                    problems.push(format!(
                        "{}: {key} is already defined in {}; this definition is ignored \
                         while that one exists (the first definition wins): remove one of them",
                        path.display(),
                        held.file.display()
                    ));
                }
            }
            if problems != file.reported {
                events.push(SourceEvent::Problems {
                    origin: origin(path),
                    problems: problems.clone(),
                });
                file.reported = problems;
            }
        }
        self.in_force = next;
        events
    }

    /// Which file's definition of each object should be in force: the
    /// current holder's while it still defines the object, otherwise the
    /// first file in path order that defines it.
    fn next_in_force(&self) -> BTreeMap<ObjectKey, InForce> {
        let mut next = BTreeMap::new();
        for (key, held) in &self.in_force {
            if let Some(object) = self.files.get(&held.file).and_then(|f| f.good.get(key)) {
                let object = Arc::clone(object);
                let file = held.file.clone();
                next.insert(key.clone(), InForce { file, object });
            }
        }
        for (path, file) in &self.files {
            for (key, object) in &file.good {
                next.entry(key.clone()).or_insert_with(|| InForce {
                    file: path.clone(),
                    object: Arc::clone(object),
                });
            }
        }
        next
    }

    /// The `Changes` events that take the pipeline from `self.in_force` to
    /// `next`. Each key gets at most one change, so the order of events
    /// cannot matter when an object moves from one file to another.
    fn changes_to(&self, next: &BTreeMap<ObjectKey, InForce>) -> Vec<SourceEvent> {
        let mut by_file: BTreeMap<&Path, Vec<Change>> = BTreeMap::new();
        for (key, held) in &self.in_force {
            if !next.contains_key(key) {
                by_file
                    .entry(&held.file)
                    .or_default()
                    .push(Change::Remove(key.clone()));
            }
        }
        for (key, held) in next {
            let unchanged = self.in_force.get(key).is_some_and(|old| {
                Arc::ptr_eq(&old.object, &held.object) || old.object == held.object
            });
            if !unchanged {
                by_file
                    .entry(&held.file)
                    .or_default()
                    .push(Change::Upsert(KubeObject::clone(&held.object)));
            }
        }
        by_file
            .into_iter()
            .map(|(path, changes)| {
                let upserts = changes
                    .iter()
                    .filter(|c| matches!(c, Change::Upsert(_)))
                    .count();
                debug!(
                    file = %path.display(),
                    upserts,
                    removes = changes.len() - upserts,
                    "config file changed"
                );
                SourceEvent::Changes {
                    origin: origin(path),
                    changes,
                }
            })
            .collect()
    }
}

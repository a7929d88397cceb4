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
//!   the target file; a burst of events is acted on once the directory has
//!   been quiet for a moment ([`FileSource::with_settle`]), so a file
//!   written in several steps is read once, whole.
//! - **Events can be missed** (inotify queue overflow, network filesystems),
//!   so besides notify's recommended watcher (with notify's poll watcher as
//!   the fallback when the native one cannot start) the directory is rescanned
//!   periodically. Kubernetes ConfigMap volumes swap a hidden `..data`
//!   symlink; any change to such a `..` entry also triggers a rescan.
//!
//! # Layout
//!
//! This module is the I/O: the watcher, batching events, reading files.
//! The rules above are `state`'s, a pure function from reads to events
//! whose cost follows the objects that changed, not the directory's size.
//! Both reading and applying run on the blocking pool.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use self::state::DirState;
use super::SourceEvent;

mod state;
#[cfg(test)]
mod tests;

/// Default of [`FileSource::with_settle`] (and of `--file-settle-ms`), in
/// milliseconds: how long the directory must be quiet after a filesystem
/// event before the files it named are read.
///
/// What it must cover, and how far apart those events are:
/// - an atomic save (write a temp file, rename it over the target; `sed -i`,
///   `kubectl`-style tools, most editors' default) needs no wait at all: the
///   temp file's events are ignored (hidden or not `*.yaml`) and the target
///   appears whole, in one rename event;
/// - a plain write (`>`, `cp`, `std::fs::write`) truncates, then writes in
///   chunks microseconds apart, then closes: under a millisecond even for a
///   few MB, since it lands in the page cache;
/// - vim's and emacs' backup-by-rename save moves the file away (it is gone
///   for a moment) and writes a new one right after, under a millisecond
///   later; their `fsync` comes after the data is written, so a read during
///   it sees the whole file.
///
/// 20 ms is twenty times the longest of these, leaving room for a loaded
/// node's scheduling delays and for scripts that append a document per
/// command, and it is a fifth of the 100 ms budget for one change to reach
/// every proxy. A writer pausing longer can be read half-way: a half file
/// that does not parse keeps its last good version; one cut exactly between
/// two documents applies until the rest arrives and is read in turn. Such
/// writers should write to a temp file and rename it, or this value be
/// raised.
pub const DEFAULT_SETTLE_MS: u64 = 20;
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
    settle: Duration,
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
            settle: Duration::from_millis(DEFAULT_SETTLE_MS),
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
        }
    }

    /// Sets how long the directory must be quiet after a filesystem event
    /// before the files it named are read, so that a file written in several
    /// steps is read once, whole (default [`DEFAULT_SETTLE_MS`]; capped at
    /// one second of continuous events).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
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
        let Some((mut state, initial)) = off_runtime(DirState::default(), move |state| {
            state.apply(read_files(paths))
        })
        .await
        else {
            return Ok(());
        };
        info!(
            dir = %dir.display(),
            files = state.files.len(),
            objects = state.objects(),
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
            let is_rescan = matches!(batch, Batch::Rescan);
            let listed_dir = dir.clone();
            let Some((next_state, outcome)) = off_runtime(state, move |state| match batch {
                Batch::Files(paths) => Ok(state.apply(read_files(paths))),
                Batch::Rescan => list_config_files(&listed_dir).map(|listed| {
                    // Known files missing from the listing are gone.
                    let listed_set: BTreeSet<&Path> = listed.iter().map(PathBuf::as_path).collect();
                    let gone: Vec<PathBuf> = state
                        .paths()
                        .filter(|known| !listed_set.contains(known))
                        .map(Path::to_path_buf)
                        .collect();
                    let mut reads = read_files(listed);
                    reads.extend(gone.into_iter().map(|path| (path, FileRead::Gone)));
                    state.apply(reads)
                }),
            })
            .await
            else {
                return Ok(());
            };
            state = next_state;
            let changes = match outcome {
                Ok(changes) => changes,
                Err(error) => {
                    // Keep everything in force: a directory that vanished for
                    // a moment (a remount, a redeploy) must not wipe the
                    // mesh's config.
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
            };
            if is_rescan && std::mem::take(&mut directory_problem) {
                let clear = SourceEvent::Problems {
                    origin: origin(&dir),
                    problems: Vec::new(),
                };
                if events.send(clear).await.is_err() {
                    return Ok(());
                }
            }
            for event in changes {
                if events.send(event).await.is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// Gathers filesystem events until `settle` passes without one (or
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
            let quiet_until = (Instant::now() + self.settle).min(give_up_at);
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

/// Reads `paths`, each once. Blocking: call it in [`off_runtime`].
fn read_files(paths: Vec<PathBuf>) -> Vec<(PathBuf, FileRead)> {
    paths
        .into_iter()
        .map(|path| {
            let read = read_file(&path);
            (path, read)
        })
        .collect()
}

/// Runs `work` on `state` on the blocking pool, and gives both back:
/// filesystems can stall, and reading and parsing a whole directory (at
/// start, at a rescan) takes long enough to hold up the runtime's workers,
/// which serve every xDS stream. `None` when the runtime is shutting down.
async fn off_runtime<T: Send + 'static>(
    mut state: DirState,
    work: impl FnOnce(&mut DirState) -> T + Send + 'static,
) -> Option<(DirState, T)> {
    let task = tokio::task::spawn_blocking(move || {
        let output = work(&mut state);
        (state, output)
    });
    match task.await {
        Ok(done) => Some(done),
        // A bug in the rules: fail as loudly as if it had run here.
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => None,
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

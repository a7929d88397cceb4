//! From source events to pushed resources: the one task that owns the
//! [`Index`], decides when to translate, and writes the xDS store.
//!
//! # Phases of one batch
//!
//! 1. **Collect.** Each [`SourceEvent::Changes`] is applied to the index at
//!    once (cheap) and its object keys join the pending set. Problems reports
//!    replace that origin's problems and are published right away.
//! 2. **Debounce.** The batch is flushed when the stream has been quiet for
//!    `debounce` since the last change, or when `max_debounce` has passed
//!    since the batch's first change, whichever comes first. The first rule
//!    turns a burst (a relist, a `kubectl apply` of a directory, a rollout)
//!    into one translation; the second bounds how long any change can wait
//!    under a steady trickle that never goes quiet.
//! 3. **Place.** Changed pods and namespaces update the node directory the CA
//!    authorizes with ([`WorkloadNodes`]); nodes seen for the first time get
//!    a bootstrap token ([`NodeTokens::ensure_node`]).
//! 4. **Translate.** `translate_affected` for the pending keys, on the
//!    blocking pool (it is pure and can take milliseconds on a large mesh;
//!    events queue in the channel meanwhile, which is more coalescing).
//! 5. **Push.** The delta goes into the [`ResourceStore`], which versions
//!    each resource by content and wakes the discovery streams.
//! 6. **Publish.** Diagnostics, source problems and readiness go out as an
//!    immutable [`PipelineStatus`] snapshot for `/ready` and `/debug`.
//!
//! Before [`SourceEvent::Synced`] nothing is translated or pushed (clients
//! would otherwise see a half-read mesh and delete what is not read yet);
//! phases 1 to 3 still run. At `Synced` the whole index is translated and
//! pushed at once, without waiting for the debounce window.

mod directory;
mod push;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use xds::ResourceStore;

use crate::ca::NodeTokens;
use crate::model::ObjectKey;
use crate::sources::{Change, SourceEvent};
use crate::translate::{
    Diagnostic, Index, MeshConfig, Translated, translate_affected, translate_all,
};

use self::directory::Placements;
pub use self::directory::WorkloadNodes;

/// Problems origin for nodes that could not be given a token.
const TOKENS_ORIGIN: &str = "istiod-lite:tokens";
/// Problems origin for translations that failed (a bug, never input).
const TRANSLATE_ORIGIN: &str = "istiod-lite:translate";

/// How the pipeline translates and when it flushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineConfig {
    pub mesh: MeshConfig,
    /// A batch is flushed once no change has arrived for this long.
    pub debounce: Duration,
    /// ... or once its first change has waited this long, whichever is first.
    pub max_debounce: Duration,
}

/// What readers (`/ready`, `/debug`) see: an immutable snapshot, replaced
/// after every batch.
#[derive(Debug, Clone, Default)]
pub struct PipelineStatus {
    /// The source has delivered its initial state.
    pub synced: bool,
    /// The first full state is in the store (and so served to clients).
    pub pushed: bool,
    /// Batches translated and pushed since start.
    pub generation: u64,
    /// Objects in the index.
    pub objects: usize,
    /// Translation diagnostics of the current state, sorted.
    pub diagnostics: Arc<Vec<Diagnostic>>,
    /// Source problems by origin (file path, `kube:<Kind>`, ...).
    pub problems: Arc<BTreeMap<String, Vec<String>>>,
}

/// Counters for `/metrics`, in relaxed atomics like the xDS server's.
#[derive(Debug, Default)]
pub struct PipelineStats {
    events: AtomicU64,
    object_changes: AtomicU64,
    batches: AtomicU64,
    config_pushes: AtomicU64,
    push_errors: AtomicU64,
    translate_micros: AtomicU64,
}

/// A point-in-time copy of [`PipelineStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineCounts {
    /// Source events received.
    pub events: u64,
    /// Object upserts and removals received.
    pub object_changes: u64,
    /// Debounced batches flushed (each one translation at most).
    pub batches: u64,
    /// Batches that changed the store.
    pub config_pushes: u64,
    /// Batches the store refused (a bug: translation made an unnamed resource).
    pub push_errors: u64,
    /// Time spent translating, in total, in microseconds.
    pub translate_micros: u64,
}

/// The readers' side of a running pipeline. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    status: watch::Receiver<Arc<PipelineStatus>>,
    stats: Arc<PipelineStats>,
    nodes: Arc<WorkloadNodes>,
}

/// The pipeline task's state. Build with [`Pipeline::new`], run with
/// [`Pipeline::run`].
#[derive(Debug)]
pub struct Pipeline {
    config: Arc<PipelineConfig>,
    store: Arc<ResourceStore>,
    /// Node tokens to create for new nodes (file mode); `None` when callers
    /// authenticate otherwise.
    tokens: Option<Arc<NodeTokens>>,
    /// Shared with the blocking translation task while it runs, and only
    /// then; mutated in place otherwise (`Arc::make_mut` does not copy).
    index: Arc<Index>,
    /// The state last pushed, for diagnostics and full resyncs.
    translated: Translated,
    /// Keys changed since the last flush.
    pending: BTreeSet<ObjectKey>,
    /// When the first and latest pending change arrived.
    first_change: Option<Instant>,
    last_change: Option<Instant>,
    /// The source has said `Synced` (at least once).
    synced: bool,
    /// A full state is in the store; incremental pushes may follow.
    pushed: bool,
    /// The source said `Synced` and a full push is due.
    full_push_due: bool,
    problems: BTreeMap<String, Vec<String>>,
    placements: Placements,
    nodes: Arc<WorkloadNodes>,
    status: watch::Sender<Arc<PipelineStatus>>,
    stats: Arc<PipelineStats>,
}

// === impl Pipeline ===

impl Pipeline {
    /// A pipeline pushing into `store`, and the handle its readers use.
    pub fn new(
        config: PipelineConfig,
        store: Arc<ResourceStore>,
        tokens: Option<Arc<NodeTokens>>,
    ) -> (Pipeline, PipelineHandle) {
        let (status, status_rx) = watch::channel(Arc::new(PipelineStatus::default()));
        let stats = Arc::new(PipelineStats::default());
        let nodes = Arc::new(WorkloadNodes::default());
        let handle = PipelineHandle {
            status: status_rx,
            stats: stats.clone(),
            nodes: nodes.clone(),
        };
        let pipeline = Pipeline {
            config: Arc::new(config),
            store,
            tokens,
            index: Arc::new(Index::new()),
            translated: Translated::default(),
            pending: BTreeSet::new(),
            first_change: None,
            last_change: None,
            synced: false,
            pushed: false,
            full_push_due: false,
            problems: BTreeMap::new(),
            placements: Placements::default(),
            nodes,
            status,
            stats,
        };
        (pipeline, handle)
    }

    /// Consumes events until every sender is gone, then flushes what is
    /// pending and returns. The store keeps the last pushed state.
    pub async fn run(mut self, mut events: mpsc::Receiver<SourceEvent>) {
        loop {
            let deadline = self.flush_deadline();
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.receive(event).await,
                    None => break,
                },
                () = sleep_until(deadline), if deadline.is_some() => self.flush().await,
            }
        }
        if !self.pending.is_empty() {
            self.flush().await;
        }
        info!("config source closed; serving the last pushed config");
    }

    async fn receive(&mut self, event: SourceEvent) {
        PipelineStats::add(&self.stats.events, 1);
        match event {
            SourceEvent::Changes { origin, changes } => {
                debug!(%origin, changes = changes.len(), "source changes");
                PipelineStats::add(&self.stats.object_changes, changes.len() as u64);
                let index = Arc::make_mut(&mut self.index);
                for change in changes {
                    let key = match change {
                        Change::Upsert(object) => index.upsert(object).0,
                        Change::Remove(key) => {
                            index.remove(&key);
                            key
                        }
                    };
                    self.pending.insert(key);
                }
                let now = Instant::now();
                self.first_change.get_or_insert(now);
                self.last_change = Some(now);
            }
            SourceEvent::Problems { origin, problems } => {
                if problems.is_empty() {
                    self.problems.remove(&origin);
                } else {
                    warn!(%origin, ?problems, "config source reports problems; its last good objects stay in force");
                    self.problems.insert(origin, problems);
                }
                self.publish();
            }
            SourceEvent::Synced => {
                info!(objects = self.index.len(), "config source synced");
                self.synced = true;
                self.full_push_due = true;
                self.flush().await;
            }
        }
    }

    /// When the pending batch must be flushed, if there is one.
    fn flush_deadline(&self) -> Option<Instant> {
        let first = self.first_change?;
        let last = self.last_change.unwrap_or(first);
        Some((last + self.config.debounce).min(first + self.config.max_debounce))
    }

    async fn flush(&mut self) {
        let changed = std::mem::take(&mut self.pending);
        let waited = self.first_change.take().map(|first| first.elapsed());
        self.last_change = None;
        PipelineStats::add(&self.stats.batches, 1);

        self.place(&changed);
        if self.full_push_due {
            self.push_full().await;
        } else if self.pushed && !changed.is_empty() {
            self.push_changes(changed, waited).await;
        }
        self.publish();
    }

    /// Phase 3: the node directory and tokens.
    fn place(&mut self, changed: &BTreeSet<ObjectKey>) {
        let trust_domain = &self.config.mesh.trust_domain;
        let new_nodes = self
            .placements
            .update(&self.index, trust_domain, changed, &self.nodes);
        let Some(tokens) = &self.tokens else { return };
        let mut failed = Vec::new();
        for node in new_nodes {
            // A small file write, once per node ever: not worth the blocking pool.
            if let Err(error) = tokens.ensure_node(&node) {
                warn!(node, %error, "cannot create a bootstrap token for node");
                failed.push(error.to_string());
            }
        }
        if !failed.is_empty() {
            self.problems
                .entry(TOKENS_ORIGIN.to_string())
                .or_default()
                .extend(failed);
        }
    }

    async fn push_full(&mut self) {
        // A full translation needs no changes; the next ones start from here.
        Arc::make_mut(&mut self.index).take_changes();
        let index = self.index.clone();
        let mesh = self.config.mesh.clone();
        let started = std::time::Instant::now();
        let full = tokio::task::spawn_blocking(move || translate_all(&index, &mesh)).await;
        self.count_translation(started);
        let full = match full {
            Ok(full) => full,
            Err(error) => return self.translation_failed(&error),
        };
        match push::push_full(&self.store, &full) {
            Ok(outcome) => {
                info!(
                    addresses = full.addresses.len(),
                    authorizations = full.authorizations.len(),
                    diagnostics = full.diagnostics.len(),
                    waypoint_routes = full.waypoint.routes.len(),
                    waypoint_authorizations = full.waypoint.authorizations.len(),
                    waypoint_faults = full.waypoint.faults.len(),
                    waypoint_backends = full.waypoint.backends.len(),
                    revision = outcome.revision(),
                    "pushed the full config"
                );
                PipelineStats::add(&self.stats.config_pushes, u64::from(outcome.changed()));
                self.translated = full;
                self.full_push_due = false;
                self.problems.remove(TRANSLATE_ORIGIN);
                self.pushed = true;
            }
            Err(error) => self.push_failed(&error),
        }
    }

    async fn push_changes(&mut self, changed: BTreeSet<ObjectKey>, waited: Option<Duration>) {
        // The same keys as `changed`, with the versions last translated.
        let changes = Arc::make_mut(&mut self.index).take_changes();
        let index = self.index.clone();
        let config = self.config.clone();
        let keys = changed.len();
        let started = std::time::Instant::now();
        let delta =
            tokio::task::spawn_blocking(move || translate_affected(&index, &config.mesh, &changes))
                .await;
        self.count_translation(started);
        let delta = match delta {
            Ok(delta) => delta,
            Err(error) => return self.translation_failed(&error),
        };
        match push::push_delta(&self.store, &delta) {
            Ok(outcome) => {
                debug!(
                    keys,
                    ?waited,
                    addresses.upserted = outcome.addresses.upserted,
                    addresses.removed = outcome.addresses.removed,
                    authorizations.upserted = outcome.authorizations.upserted,
                    authorizations.removed = outcome.authorizations.removed,
                    waypoint_routes.upserted = outcome.waypoint_routes.upserted,
                    waypoint_routes.removed = outcome.waypoint_routes.removed,
                    waypoint_authorizations.upserted = outcome.waypoint_authorizations.upserted,
                    waypoint_authorizations.removed = outcome.waypoint_authorizations.removed,
                    waypoint_faults.upserted = outcome.waypoint_faults.upserted,
                    waypoint_faults.removed = outcome.waypoint_faults.removed,
                    waypoint_backends.upserted = outcome.waypoint_backends.upserted,
                    waypoint_backends.removed = outcome.waypoint_backends.removed,
                    "pushed changes"
                );
                PipelineStats::add(&self.stats.config_pushes, u64::from(outcome.changed()));
                self.translated.apply(&delta);
                self.problems.remove(TRANSLATE_ORIGIN);
            }
            Err(error) => self.push_failed(&error),
        }
    }

    fn count_translation(&self, started: std::time::Instant) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        PipelineStats::add(&self.stats.translate_micros, micros);
    }

    /// Translation is pure, so a failure is a panic: a bug. Keep serving the
    /// last pushed state and say so on `/debug`, rather than crash-loop.
    fn translation_failed(&mut self, error: &tokio::task::JoinError) {
        error!(%error, "translation failed; serving the last pushed config");
        self.problems.insert(
            TRANSLATE_ORIGIN.to_string(),
            vec![format!(
                "translation failed ({error}); the last pushed config stays in force: please report this bug"
            )],
        );
    }

    fn push_failed(&mut self, error: &xds::StoreError) {
        error!(%error, "the xDS store refused translated resources");
        PipelineStats::add(&self.stats.push_errors, 1);
    }

    /// Phase 6.
    fn publish(&mut self) {
        let diagnostics = if self.status.borrow().diagnostics.as_slice()
            == self.translated.diagnostics.as_slice()
        {
            self.status.borrow().diagnostics.clone()
        } else {
            Arc::new(self.translated.diagnostics.clone())
        };
        let objects = self.index.len();
        let problems = Arc::new(self.problems.clone());
        let (synced, pushed) = (self.synced, self.pushed);
        self.status.send_modify(|status| {
            let status = Arc::make_mut(status);
            status.synced = synced;
            status.pushed = pushed;
            status.generation += 1;
            status.objects = objects;
            status.diagnostics = diagnostics;
            status.problems = problems;
        });
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

// === impl PipelineHandle ===

impl PipelineHandle {
    /// The current status snapshot.
    pub fn status(&self) -> Arc<PipelineStatus> {
        self.status.borrow().clone()
    }

    /// Follows status changes (tests and readiness waiters).
    pub fn watch_status(&self) -> watch::Receiver<Arc<PipelineStatus>> {
        self.status.clone()
    }

    /// Synced, and the first full state is in the store.
    pub fn is_ready(&self) -> bool {
        let status = self.status.borrow();
        status.synced && status.pushed
    }

    pub fn counts(&self) -> PipelineCounts {
        self.stats.counts()
    }

    /// The node directory, for the CA service.
    pub fn nodes(&self) -> Arc<WorkloadNodes> {
        self.nodes.clone()
    }
}

// === impl PipelineStats ===

impl PipelineStats {
    pub fn counts(&self) -> PipelineCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PipelineCounts {
            events: get(&self.events),
            object_changes: get(&self.object_changes),
            batches: get(&self.batches),
            config_pushes: get(&self.config_pushes),
            push_errors: get(&self.push_errors),
            translate_micros: get(&self.translate_micros),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

// === impl PipelineConfig ===

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            mesh: MeshConfig::default(),
            // The binary's defaults (see `--debounce-ms`).
            debounce: Duration::from_millis(10),
            max_debounce: Duration::from_millis(100),
        }
    }
}

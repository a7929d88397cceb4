//! The Kubernetes source: one kube-rs watcher per kind we read, reporting
//! the same [`SourceEvent`]s as the file source, so everything after the
//! source (index, translation, push) cannot tell the two apart.
//!
//! (The module is `kubernetes`, not `kube`, so that `kube::` always means the
//! kube-rs crate, in every file of this crate.)
//!
//! # Watch, store, diff
//!
//! Every kind (`Namespace`, `Pod`, `Service`, `AuthorizationPolicy`,
//! `PeerAuthentication`, `VirtualService`, `DestinationRule`, `Gateway`, `HTTPRoute`) is watched cluster-wide by
//! [`kube::runtime::watcher`]. Between the watch stream and the events we send
//! sits a kube-rs reflector store (`kube::runtime::reflector::store`), as in
//! kube-rs controllers: it holds what the API server last told us exists.
//!
//! - A watch event (`ADDED`/`MODIFIED`, `DELETED`) updates the store and
//!   becomes one `Changes` with one `Upsert` or `Remove`.
//! - A list (the initial one, or a relist after the watch lost its place,
//!   e.g. `410 Gone` once its resourceVersion is compacted away) arrives as
//!   `Init`, `InitApply`..., `InitDone`. The store keeps the previous set
//!   until `InitDone`, then swaps the listed set in. At that moment we compare
//!   the two: every listed object is an `Upsert` (the pipeline ignores content
//!   it already has), and every object the store held that the list lacks is a
//!   `Remove`: it was deleted while we were not watching, and no `DELETED`
//!   event will ever arrive for it. Without the store, a relist could only
//!   add, and objects deleted during a watch gap would live on in the mesh.
//!
//! One list is one `Changes` event (applied as a unit); an empty list with
//! nothing to remove sends nothing.
//!
//! # Sync and problems
//!
//! `Synced` is sent once, when every kind has completed its first list. A
//! custom-resource kind whose CRD is not installed (the list answers 404)
//! counts as listed and empty: it is reported as `Problems` for
//! `kube:<Kind>`, naming the CRD and how to install it, and its watcher keeps
//! retrying with backoff, so installing the CRD later needs no restart (the
//! problem is then cleared with an empty `Problems`). Any other list failure
//! (403 from RBAC, an unreachable API server) is reported the same way but
//! holds `Synced` back: pushing config from a partial view of the cluster
//! would remove everything we could not read. A problem is sent again only
//! when its text changes, so a retry loop does not flood the pipeline.
//!
//! # Watcher configuration
//!
//! Chosen explicitly rather than inherited from kube-rs defaults, which may
//! change between releases:
//!
//! - `InitialListStrategy::ListWatch`: a paginated list (500 objects per
//!   page), then a watch from the list's resourceVersion with bookmarks. Not
//!   streaming lists (`sendInitialEvents`): they need the `WatchList` feature
//!   of recent API servers, and list-then-watch works on every version.
//! - `ListSemantic::MostRecent`: lists are quorum reads. A relist served from
//!   a lagging API-server cache (`resourceVersion=0`) could be older than
//!   watch events we already sent, and would `Remove` objects that exist. A
//!   relist is rare (bookmarks keep the watch's resourceVersion fresh), so
//!   the cost of a quorum read is paid rarely.
//! - kube-rs's default backoff after any error (800 ms doubling to 30 s,
//!   with jitter, reset after two quiet minutes).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use futures_util::future;
use futures_util::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::{self, InitialListStrategy, ListSemantic};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{Change, SourceEvent};
use crate::model::{
    AuthorizationPolicy, DestinationRule, Gateway, HTTPRoute, KubeObject, ObjectKey, ObjectKind,
    PeerAuthentication, VirtualService,
};

/// Objects per list page: client-go's default, so a relist of a large
/// cluster neither times out nor loads the API server with one huge reply.
const LIST_PAGE_SIZE: u32 = 500;

/// What can go wrong before the source runs; once running, every failure is
/// retried and reported as a [`SourceEvent::Problems`] instead.
#[derive(Debug, thiserror::Error)]
pub enum KubeSourceError {
    #[error(
        "no Kubernetes API configuration found (neither the in-cluster service account nor a \
         kubeconfig from $KUBECONFIG or ~/.kube/config could be loaded): {0}; run inside a pod, \
         set KUBECONFIG, or use the file source"
    )]
    Config(#[source] kube::Error),
}

/// Watches the kinds we read on a Kubernetes API server and reports them as
/// [`SourceEvent`]s; see the module docs for the store and relist logic.
pub struct KubeSource {
    /// Client for the API server, cloned into each kind's watcher.
    client: Client,
    /// How every watcher lists and watches (see "Watcher configuration").
    config: watcher::Config,
}

// === impl KubeSource ===

impl KubeSource {
    /// A source over `client`, watching every kind cluster-wide.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            config: watcher_config(),
        }
    }

    /// A source over the in-cluster service account, or else the kubeconfig
    /// (`$KUBECONFIG`, `~/.kube/config`), as `kubectl` would find it.
    pub async fn try_default() -> Result<Self, KubeSourceError> {
        let client = Client::try_default()
            .await
            .map_err(KubeSourceError::Config)?;
        Ok(Self::new(client))
    }

    /// Watches until `events` is closed. Errors never end it: each watcher
    /// backs off and retries, and reports what it cannot read as problems.
    pub async fn run(self, events: mpsc::Sender<SourceEvent>) {
        let watchers = vec![
            watch_kind::<Namespace>(&self.client, &self.config),
            watch_kind::<Pod>(&self.client, &self.config),
            watch_kind::<Service>(&self.client, &self.config),
            watch_kind::<AuthorizationPolicy>(&self.client, &self.config),
            watch_kind::<PeerAuthentication>(&self.client, &self.config),
            watch_kind::<VirtualService>(&self.client, &self.config),
            watch_kind::<DestinationRule>(&self.client, &self.config),
            watch_kind::<Gateway>(&self.client, &self.config),
            watch_kind::<HTTPRoute>(&self.client, &self.config),
        ];
        let mut tracker = SyncTracker::new(watchers.len());
        let mut updates = stream::select_all(watchers);
        info!("watching the Kubernetes API server");
        while let Some((kind, update)) = updates.next().await {
            for event in tracker.handle(kind, update) {
                if events.send(event).await.is_err() {
                    debug!("config pipeline closed; stopping the Kubernetes source");
                    return;
                }
            }
        }
        // A watcher with the default backoff retries forever; this is only
        // reached if kube-rs changes that.
        warn!("every Kubernetes watcher ended; no further changes will be seen");
    }
}

impl fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeSource")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The watcher configuration of every kind; the module docs say why.
fn watcher_config() -> watcher::Config {
    let mut config = watcher::Config::default()
        .list_semantic(ListSemantic::MostRecent)
        .page_size(LIST_PAGE_SIZE);
    config.initial_list_strategy = InitialListStrategy::ListWatch;
    config.bookmarks = true;
    config
}

/// One kind's watcher, its events turned into [`KindUpdate`]s through its
/// store.
fn watch_kind<K: WatchedKind>(
    client: &Client,
    config: &watcher::Config,
) -> BoxStream<'static, (ObjectKind, KindUpdate)> {
    let api: Api<K> = Api::all(client.clone());
    let mut store = KindStore::<K>::new();
    watcher::watcher(api, config.clone())
        .default_backoff()
        .filter_map(move |event| {
            let update = match event {
                Ok(event) => store.apply(event),
                Err(error) => error_update::<K>(&error),
            };
            future::ready(update.map(|update| (K::KIND, update)))
        })
        .boxed()
}

/// What one kind's watcher has to say, already relative to its store.
#[derive(Debug)]
enum KindUpdate {
    /// One watch event.
    Changed(Change),
    /// A list completed: every listed object, then every object that
    /// vanished since the store last saw the kind.
    Listed(Vec<Change>),
    /// Listing failed. `not_served` is a 404: the API (a CRD) is not
    /// installed, so the kind is known to be empty.
    ListFailed { problem: String, not_served: bool },
}

/// Turns a watcher error into a problem to report, or logs it when the
/// watcher recovers from it on its own.
fn error_update<K: WatchedKind>(error: &watcher::Error) -> Option<KindUpdate> {
    let kind = K::KIND.as_str();
    match error {
        // By code, not only by reason: for a group/version nobody serves the
        // API server answers a plain-text "404 page not found", which kube-rs
        // turns into a `Status` with code 404 and a reason of its own.
        watcher::Error::InitialListFailed(kube::Error::Api(status))
            if status.code == 404 || status.is_not_found() =>
        {
            warn!(kind, "API not served (404); retrying with backoff");
            Some(KindUpdate::ListFailed {
                problem: not_served_problem::<K>(),
                not_served: true,
            })
        }
        watcher::Error::InitialListFailed(kube::Error::Api(status))
            if status.code == 403 || status.is_forbidden() =>
        {
            warn!(kind, error = %error, "list forbidden; retrying with backoff");
            Some(KindUpdate::ListFailed {
                problem: format!(
                    "listing {} is forbidden ({}): grant istiod-lite's service account \
                     get, list and watch on {} cluster-wide (RBAC); retrying",
                    api_name::<K>(),
                    status.message,
                    resource_name::<K>(),
                ),
                not_served: false,
            })
        }
        watcher::Error::InitialListFailed(source) => {
            warn!(kind, error = %error, "list failed; retrying with backoff");
            Some(KindUpdate::ListFailed {
                problem: format!(
                    "listing {} failed: {source}: is the API server reachable? retrying",
                    api_name::<K>(),
                ),
                not_served: false,
            })
        }
        // The watch's resourceVersion was compacted away: the watcher relists,
        // and the store turns the relist into upserts and removes.
        watcher::Error::WatchError(status) if status.code == 410 => {
            debug!(kind, "watch expired (410 Gone); relisting");
            None
        }
        _ => {
            warn!(kind, error = %error, "watch failed; retrying with backoff");
            None
        }
    }
}

/// The problem reported for a kind whose API the server does not serve.
fn not_served_problem<K: WatchedKind>() -> String {
    let crd = resource_name::<K>();
    let install = match K::group(&()).as_ref() {
        "security.istio.io" | "networking.istio.io" => {
            "install Istio's CRDs (manifests/crds, or Istio's `base` Helm chart)"
        }
        "gateway.networking.k8s.io" => {
            "install the Gateway API standard CRDs (manifests/crds, or the \
             gateway-api release's standard-install.yaml)"
        }
        _ => "check the API server's version",
    };
    format!(
        "the CustomResourceDefinition {crd} is not installed (listing {} answered 404): \
         {install}; {} objects are ignored until then, and the watch retries on its own",
        api_name::<K>(),
        K::KIND,
    )
}

/// `security.istio.io/v1 AuthorizationPolicy`, `v1 Pod`: how a user names
/// the API in a manifest.
fn api_name<K: WatchedKind>() -> String {
    format!("{} {}", K::api_version(&()), K::KIND)
}

/// `authorizationpolicies.security.istio.io`, `pods`: the resource name RBAC
/// rules and CRDs use.
fn resource_name<K: WatchedKind>() -> String {
    let group = K::group(&());
    let plural = K::plural(&());
    if group.is_empty() {
        plural.into_owned()
    } else {
        format!("{plural}.{group}")
    }
}

/// A kind we watch: a typed kube-rs resource that converts into the model.
trait WatchedKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static
{
    const KIND: ObjectKind;

    fn into_object(self) -> KubeObject;
}

macro_rules! watched_kind {
    ($($ty:ident => $variant:ident),* $(,)?) => {
        $(
            impl WatchedKind for $ty {
                const KIND: ObjectKind = ObjectKind::$variant;

                fn into_object(self) -> KubeObject {
                    KubeObject::$variant(Box::new(self))
                }
            }
        )*
    };
}

watched_kind! {
    Namespace => Namespace,
    Pod => Pod,
    Service => Service,
    AuthorizationPolicy => AuthorizationPolicy,
    PeerAuthentication => PeerAuthentication,
    Gateway => Gateway,
    HTTPRoute => HttpRoute,
    VirtualService => VirtualService,
    DestinationRule => DestinationRule,
}

/// The store key of an object, by the same rule as [`KubeObject::key`]
/// (without cloning the object into the model first).
fn object_key<K: WatchedKind>(object: &K) -> ObjectKey {
    let meta = object.meta();
    let namespace = if K::KIND.is_namespaced() {
        meta.namespace
            .clone()
            .unwrap_or_else(|| "default".to_string())
    } else {
        String::new()
    };
    ObjectKey::new(K::KIND, namespace, meta.name.clone().unwrap_or_default())
}

/// One kind's reflector store, and the diff of a list against it.
struct KindStore<K: WatchedKind> {
    /// What the API server last told us exists, as the watcher applies it.
    reader: Store<K>,
    /// The only writer of `reader`; swaps a list in at `InitDone`.
    writer: Writer<K>,
}

// === impl KindStore ===

impl<K: WatchedKind> KindStore<K> {
    fn new() -> Self {
        let (reader, writer) = reflector::store();
        Self { reader, writer }
    }

    /// Applies one watcher event to the store and says what changed.
    fn apply(&mut self, event: watcher::Event<K>) -> Option<KindUpdate> {
        if let watcher::Event::InitDone = event {
            return Some(KindUpdate::Listed(self.finish_list()));
        }
        self.writer.apply_watcher_event(&event);
        match event {
            watcher::Event::Apply(object) => {
                Some(KindUpdate::Changed(Change::Upsert(object.into_object())))
            }
            watcher::Event::Delete(object) => {
                Some(KindUpdate::Changed(Change::Remove(object_key(&object))))
            }
            // Buffered by the writer until `InitDone`.
            watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => None,
        }
    }

    /// Swaps the listed set into the store; returns an upsert for each
    /// listed object and a remove for each object that vanished, in key
    /// order so the pipeline (and tests) see a stable sequence.
    fn finish_list(&mut self) -> Vec<Change> {
        let before: BTreeSet<ObjectKey> = self
            .reader
            .state()
            .iter()
            .map(|object| object_key(&**object))
            .collect();
        self.writer.apply_watcher_event(&watcher::Event::InitDone);
        let listed: BTreeMap<ObjectKey, KubeObject> = self
            .reader
            .state()
            .iter()
            .map(|object| (object_key(&**object), K::clone(object).into_object()))
            .collect();
        let removed: Vec<Change> = before
            .into_iter()
            .filter(|key| !listed.contains_key(key))
            .map(Change::Remove)
            .collect();
        listed
            .into_values()
            .map(Change::Upsert)
            .chain(removed)
            .collect()
    }
}

/// Turns per-kind updates into the events the pipeline sees: changes as
/// they come, problems once per distinct text, `Synced` once.
#[derive(Debug)]
struct SyncTracker {
    /// How many kinds must settle before `Synced`.
    kinds: usize,
    /// Kinds whose state is known: listed at least once, or not served.
    settled: BTreeSet<ObjectKind>,
    /// The problem last reported per kind, until cleared by a list.
    problems: BTreeMap<ObjectKind, String>,
    /// Whether `Synced` has been sent; it is sent once per run.
    synced: bool,
}

// === impl SyncTracker ===

impl SyncTracker {
    fn new(kinds: usize) -> Self {
        Self {
            kinds,
            settled: BTreeSet::new(),
            problems: BTreeMap::new(),
            synced: false,
        }
    }

    fn handle(&mut self, kind: ObjectKind, update: KindUpdate) -> Vec<SourceEvent> {
        let origin = format!("kube:{kind}");
        let mut events = Vec::new();
        match update {
            KindUpdate::Changed(change) => events.push(SourceEvent::Changes {
                origin,
                changes: vec![change],
            }),
            KindUpdate::Listed(changes) => {
                self.settled.insert(kind);
                if self.problems.remove(&kind).is_some() {
                    events.push(SourceEvent::Problems {
                        origin: origin.clone(),
                        problems: Vec::new(),
                    });
                }
                if !changes.is_empty() {
                    events.push(SourceEvent::Changes { origin, changes });
                }
            }
            KindUpdate::ListFailed {
                problem,
                not_served,
            } => {
                if not_served {
                    self.settled.insert(kind);
                }
                if self.problems.get(&kind) != Some(&problem) {
                    self.problems.insert(kind, problem.clone());
                    events.push(SourceEvent::Problems {
                        origin,
                        problems: vec![problem],
                    });
                }
            }
        }
        if !self.synced && self.settled.len() == self.kinds {
            self.synced = true;
            info!(kinds = self.kinds, "initial list of every kind complete");
            events.push(SourceEvent::Synced);
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(name: &str, resource_version: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("default".to_string()),
                resource_version: Some(resource_version.to_string()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn describe(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|change| match change {
                Change::Upsert(object) => format!("+{}", object.key()),
                Change::Remove(key) => format!("-{key}"),
            })
            .collect()
    }

    /// A `Remove` must name exactly what the matching `Upsert` named, or the
    /// pipeline would keep the object.
    #[test]
    fn object_key_matches_the_model_key() {
        let namespaced = pod("a", "1");
        assert_eq!(
            object_key(&namespaced),
            namespaced.clone().into_object().key()
        );
        let cluster_scoped = Namespace {
            metadata: ObjectMeta {
                name: Some("default".to_string()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        assert_eq!(
            object_key(&cluster_scoped),
            cluster_scoped.clone().into_object().key()
        );
    }

    /// The store keeps the old set until `InitDone`, so a relist becomes
    /// upserts for what is listed and removes for what vanished.
    #[test]
    fn relist_is_diffed_against_the_store() {
        let mut store = KindStore::<Pod>::new();
        assert!(store.apply(watcher::Event::Init).is_none());
        assert!(
            store
                .apply(watcher::Event::InitApply(pod("a", "1")))
                .is_none()
        );
        assert!(
            store
                .apply(watcher::Event::InitApply(pod("b", "2")))
                .is_none()
        );
        let Some(KindUpdate::Listed(changes)) = store.apply(watcher::Event::InitDone) else {
            panic!("InitDone must complete the list");
        };
        assert_eq!(describe(&changes), ["+Pod default/a", "+Pod default/b"]);

        let Some(KindUpdate::Changed(change)) = store.apply(watcher::Event::Apply(pod("c", "3")))
        else {
            panic!("Apply must be a change");
        };
        assert_eq!(describe(&[change]), ["+Pod default/c"]);

        store.apply(watcher::Event::Init);
        store.apply(watcher::Event::InitApply(pod("b", "4")));
        store.apply(watcher::Event::InitApply(pod("d", "5")));
        // Until InitDone the store still holds the old set.
        assert_eq!(store.reader.state().len(), 3);
        let Some(KindUpdate::Listed(changes)) = store.apply(watcher::Event::InitDone) else {
            panic!("InitDone must complete the list");
        };
        assert_eq!(
            describe(&changes),
            [
                "+Pod default/b",
                "+Pod default/d",
                "-Pod default/a",
                "-Pod default/c"
            ]
        );
    }

    /// `Synced` waits for every kind, counts a 404 as settled but not a 403,
    /// and is sent once; a problem is repeated only when its text changes.
    #[test]
    fn synced_once_after_every_kind_settles() {
        let mut tracker = SyncTracker::new(2);
        let failed = |problem: &str, not_served| KindUpdate::ListFailed {
            problem: problem.to_string(),
            not_served,
        };
        let names = |events: Vec<SourceEvent>| -> Vec<String> {
            events
                .iter()
                .map(|event| match event {
                    SourceEvent::Changes { origin, .. } => format!("changes {origin}"),
                    SourceEvent::Problems { origin, problems } => {
                        format!("problems {origin} {}", problems.len())
                    }
                    SourceEvent::Synced => "synced".to_string(),
                })
                .collect()
        };

        let forbidden = failed("forbidden", false);
        assert_eq!(
            names(tracker.handle(ObjectKind::Pod, forbidden)),
            ["problems kube:Pod 1"]
        );
        let not_served = failed("not installed", true);
        assert_eq!(
            names(tracker.handle(ObjectKind::Gateway, not_served)),
            ["problems kube:Gateway 1"]
        );
        let again = failed("not installed", true);
        assert!(names(tracker.handle(ObjectKind::Gateway, again)).is_empty());
        let listed = KindUpdate::Listed(Vec::new());
        assert_eq!(
            names(tracker.handle(ObjectKind::Pod, listed)),
            ["problems kube:Pod 0", "synced"]
        );
        let relisted = KindUpdate::Listed(vec![Change::Upsert(pod("a", "1").into_object())]);
        assert_eq!(
            names(tracker.handle(ObjectKind::Pod, relisted)),
            ["changes kube:Pod"]
        );
    }
}

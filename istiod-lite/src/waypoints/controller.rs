//! The reconcile loop, in kube-rs style: a `Controller` over every
//! `Gateway`, which also watches the ServiceAccounts, Services and
//! Deployments it owns (selected by the managed label, so the watches stay
//! small), and maps each change back to its Gateway through the owner
//! reference. `reconcile` makes the cluster match `desired_objects` with
//! server-side apply (field manager `istiod-lite`, forced: these objects are
//! ours, and a hand edit of a field we set is put back), then applies the
//! Gateway's status. The same apply again changes nothing, so a reconcile
//! may run any number of times.
//!
//! A failure is logged with what to do (which verb on which resource when
//! RBAC refuses) and retried with per-Gateway exponential backoff, reset by
//! the next success. A Gateway that is not deployable gets its problem on
//! its status and is left as it is: whatever was deployed for its last good
//! spec keeps running.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, info, warn};

use super::{
    FIELD_MANAGER, MANAGED_LABEL, MANAGED_VALUE, ReconcileOutcome, WaypointSettings,
    desired_objects, desired_status,
};
use crate::model::Gateway;

/// How soon to look again at a Service the API server has not given a
/// ClusterIP yet (it normally assigns one when the Service is created).
const ADDRESS_RECHECK: Duration = Duration::from_secs(5);

/// Exponential backoff between retries of one Gateway's reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBackoff {
    /// The wait after the first failure; doubled after each further one.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for RetryBackoff {
    /// 1 s doubling to 5 min: quick after a blip, and at most one request
    /// per Gateway every 5 minutes while RBAC stays broken.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

// === impl RetryBackoff ===

impl RetryBackoff {
    /// The wait after `failures` consecutive failures (at least 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.initial
            .saturating_mul(1 << doublings)
            .min(self.max)
            .max(self.initial.min(self.max))
    }
}

/// Consecutive failures per object and the backoff they set: what both of
/// istiod-lite's controllers keep between reconciles.
#[derive(Debug)]
pub(crate) struct Retries<K> {
    backoff: RetryBackoff,
    failures: Mutex<HashMap<K, u32>>,
}

impl<K: Eq + Hash> Retries<K> {
    pub(crate) fn new(backoff: RetryBackoff) -> Self {
        Self {
            backoff,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one more failure of `key`: the count, and the wait before
    /// the retry.
    pub(crate) fn failed(&self, key: K) -> (u32, Duration) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        (*count, self.backoff.delay(*count))
    }

    /// Forgets `key`'s failures after a success (or a skip).
    pub(crate) fn succeeded(&self, key: &K) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

/// The HTTP status of the API server's answer in a failed list or watch,
/// when it answered at all.
pub(crate) fn watch_status_code(error: &watcher::Error) -> Option<u16> {
    match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.code),
        watcher::Error::WatchError(status) => Some(status.code),
        _ => None,
    }
}

/// Why one reconcile failed; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum WaypointError {
    #[error("cannot apply {object}: {}", advice(source, resource))]
    Apply {
        /// `ServiceAccount apps/waypoint`.
        object: String,
        /// The RBAC resource, `serviceaccounts`, `deployments.apps`.
        resource: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error(
        "cannot write the status of Gateway {gateway}: {}",
        advice(source, "gateways/status in gateway.networking.k8s.io")
    )]
    Status {
        gateway: String,
        #[source]
        source: kube::Error,
    },
}

/// What an API error means for the operator, and what to do.
fn advice(error: &kube::Error, resource: &str) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden ({}): grant istiod-lite's service account `patch` and `create` on \
             {resource} (the ClusterRole in manifests/istiod-lite.yaml has them); retrying with \
             backoff",
            status.message
        ),
        kube::Error::Api(status) if status.code == 404 => format!(
            "not found ({}): the namespace or the Gateway was deleted meanwhile, or the \
             Gateway API CRDs are not installed; retrying with backoff",
            status.message
        ),
        kube::Error::Api(status) if status.code == 422 => format!(
            "the API server refused it as invalid ({}): this is a bug in istiod-lite, please \
             report it with the Gateway's YAML; retrying with backoff",
            status.message
        ),
        kube::Error::Api(status) => format!(
            "the API server answered {} {} ({}); retrying with backoff",
            status.code, status.reason, status.message
        ),
        other => format!("{other}: is the API server reachable? retrying with backoff"),
    }
}

/// What a failed list or watch of Gateways or owned objects means. (The
/// error does not say which kind failed: kube-rs merges the watches.)
fn watch_advice(error: &watcher::Error) -> &'static str {
    match watch_status_code(error) {
        Some(403) => {
            "watching waypoint Gateways or their objects is forbidden: grant istiod-lite's \
             service account get, list and watch on gateways.gateway.networking.k8s.io, \
             serviceaccounts, services and deployments.apps; retrying with backoff"
        }
        Some(404) => {
            "the Gateway API is not served: install the Gateway API standard CRDs (or \
             manifests/crds.yaml); no waypoint is deployed until then; retrying with backoff"
        }
        // An expired resourceVersion: the watcher lists again by itself.
        Some(410) => "a watch of waypoint Gateways or their objects expired; listing again",
        _ => {
            "watching waypoint Gateways or their objects failed: is the API server \
              reachable? retrying with backoff"
        }
    }
}

/// Deploys a waypoint for each Gateway of class `istio-waypoint`; see the
/// module docs.
pub struct WaypointController {
    /// Client for the API server.
    client: Client,
    /// What goes into every waypoint.
    settings: WaypointSettings,
    /// Waits between retries of a failing Gateway.
    backoff: RetryBackoff,
}

impl fmt::Debug for WaypointController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaypointController")
            .field("settings", &self.settings)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// What every reconcile shares.
struct Context {
    client: Client,
    settings: WaypointSettings,
    /// Per Gateway; cleared on success.
    retries: Retries<ObjectRef<Gateway>>,
}

// === impl WaypointController ===

impl WaypointController {
    pub fn new(client: Client, settings: WaypointSettings) -> Self {
        Self {
            client,
            settings,
            backoff: RetryBackoff::default(),
        }
    }

    /// Replaces the default retry backoff (tests use a short one).
    pub fn with_backoff(self, backoff: RetryBackoff) -> Self {
        Self { backoff, ..self }
    }

    /// Reconciles until the process ends: watch errors back off and retry
    /// inside kube-rs, reconcile errors through the error policy.
    pub async fn run(self) {
        let owned = watcher::Config::default().labels(&format!("{MANAGED_LABEL}={MANAGED_VALUE}"));
        let client = &self.client;
        let context = Arc::new(Context {
            client: client.clone(),
            settings: self.settings,
            retries: Retries::new(self.backoff),
        });
        info!("deploying a waypoint for each Gateway of class istio-waypoint");
        Controller::new(
            Api::<Gateway>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(Api::<ServiceAccount>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<Deployment>::all(client.clone()), owned)
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            match result {
                Ok((gateway, _)) => debug!(gateway = %gateway, "waypoint reconciled"),
                // Logged with its advice by `error_policy`.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::QueueError(error)) => {
                    warn!(%error, "{}", watch_advice(&error));
                }
                Err(error) => debug!(%error, "waypoint controller"),
            }
            std::future::ready(())
        })
        .await;
    }
}

async fn reconcile(gateway: Arc<Gateway>, context: Arc<Context>) -> Result<Action, WaypointError> {
    let namespace = gateway.namespace().unwrap_or_else(|| "default".to_owned());
    let name = gateway.name_any();
    let outcome = match desired_objects(&gateway, &context.settings) {
        Ok(None) => return Ok(Action::await_change()),
        Err(problem) => {
            warn!(gateway = %format!("{namespace}/{name}"), %problem, "waypoint not deployed");
            ReconcileOutcome::Invalid(problem)
        }
        Ok(Some(objects)) => {
            let client = &context.client;
            apply(
                client,
                &namespace,
                &objects.service_account,
                "serviceaccounts",
            )
            .await?;
            let service: Service = apply(client, &namespace, &objects.service, "services").await?;
            apply(client, &namespace, &objects.deployment, "deployments.apps").await?;
            let cluster_ip = service
                .spec
                .and_then(|spec| spec.cluster_ip)
                .filter(|ip| !ip.is_empty() && ip != "None");
            ReconcileOutcome::Deployed { cluster_ip }
        }
    };
    let status = desired_status(&gateway, &outcome, &now_rfc3339());
    let body = json!({
        "apiVersion": Gateway::api_version(&()),
        "kind": Gateway::kind(&()),
        "metadata": { "name": name, "namespace": namespace },
        "status": status,
    });
    Api::<Gateway>::namespaced(context.client.clone(), &namespace)
        .patch_status(&name, &apply_params(), &Patch::Apply(&body))
        .await
        .map_err(|source| WaypointError::Status {
            gateway: format!("{namespace}/{name}"),
            source,
        })?;
    context.retries.succeeded(&ObjectRef::from_obj(&*gateway));
    Ok(match outcome {
        ReconcileOutcome::Deployed { cluster_ip: None } => Action::requeue(ADDRESS_RECHECK),
        _ => Action::await_change(),
    })
}

fn error_policy(gateway: Arc<Gateway>, error: &WaypointError, context: Arc<Context>) -> Action {
    let (failures, delay) = context.retries.failed(ObjectRef::from_obj(&*gateway));
    warn!(
        gateway = %format!("{}/{}", gateway.namespace().unwrap_or_default(), gateway.name_any()),
        failures,
        retry_in = ?delay,
        "{error}"
    );
    Action::requeue(delay)
}

/// Server-side applies `object` in `namespace`; returns what the API server
/// stored (with the fields it filled in, such as a Service's ClusterIP).
async fn apply<K>(
    client: &Client,
    namespace: &str,
    object: &K,
    resource: &'static str,
) -> Result<K, WaypointError>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + fmt::Debug,
{
    let name = object.name_any();
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(&name, &apply_params(), &Patch::Apply(object))
        .await
        .map_err(|source| WaypointError::Apply {
            object: format!("{} {namespace}/{name}", K::kind(&())),
            resource,
            source,
        })
}

/// Server-side apply as istiod-lite, taking over fields others set.
fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Now as RFC 3339 in whole seconds, as Kubernetes writes condition times.
fn now_rfc3339() -> String {
    let seconds = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    i64::try_from(seconds)
        .ok()
        .and_then(|seconds| k8s_openapi::jiff::Timestamp::from_second(seconds).ok())
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_initial_wait_up_to_the_cap() {
        let backoff = RetryBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        let waits: Vec<u64> = (1..=6).map(|n| backoff.delay(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert_eq!(backoff.delay(0), Duration::from_secs(1));
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn a_forbidden_apply_names_the_verbs_and_the_resource() {
        let status = kube::core::Status::failure("deployments.apps is forbidden", "Forbidden")
            .with_code(403);
        let error = WaypointError::Apply {
            object: "Deployment apps/waypoint".to_owned(),
            resource: "deployments.apps",
            source: kube::Error::Api(status.into()),
        };
        let message = error.to_string();
        assert!(
            message.starts_with("cannot apply Deployment apps/waypoint: forbidden"),
            "{message}"
        );
        assert!(
            message.contains("`patch` and `create` on deployments.apps"),
            "{message}"
        );
    }

    #[test]
    fn a_failed_watch_says_what_to_install_or_grant() {
        let api = |code: u16| {
            let status = kube::core::Status::failure("refused", "Reason").with_code(code);
            watcher::Error::InitialListFailed(kube::Error::Api(status.into()))
        };
        assert!(watch_advice(&api(403)).contains("grant istiod-lite's service account get"));
        assert!(watch_advice(&api(404)).contains("install the Gateway API standard CRDs"));
        assert!(watch_advice(&api(500)).contains("is the API server reachable?"));
        assert!(watch_advice(&watcher::Error::NoResourceVersion).contains("reachable"));
    }

    #[test]
    fn condition_times_are_rfc3339_in_whole_seconds() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2026-01-01T00:00:00Z".len(), "{now}");
        assert!(now.ends_with('Z'), "{now}");
    }
}

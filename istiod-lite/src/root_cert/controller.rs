//! The reconcile loop, in kube-rs style: a `Controller` over every
//! `Namespace`, which also watches the ConfigMaps named
//! `istio-ca-root-cert` (a field selector on the name, as Istio's informer
//! uses, so the watch holds one small object per namespace) and maps each
//! change back to its namespace. `reconcile` server-side applies
//! `desired_config_map` (field manager `istiod-lite`, forced: a hand edit of
//! the root is put back); a deleted ConfigMap triggers its namespace, whose
//! reconcile creates it again. The same apply again changes nothing, so a
//! reconcile may run any number of times, and it does not wake the loop.
//!
//! A namespace the API server reports as being deleted between our watch
//! and our apply (403 with cause `NamespaceTerminating`) is skipped, not
//! retried: the namespace's own watch event follows. Any other failure is
//! logged with what to do (which verb on which resource when RBAC refuses)
//! and retried with per-namespace exponential backoff, reset by the next
//! success.

use std::fmt;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use super::{ROOT_CERT_CONFIG_MAP, desired_config_map};
use crate::waypoints::{FIELD_MANAGER, Retries, RetryBackoff, watch_status_code};

/// The `causes[].type` of the 403 the API server answers a write into a
/// namespace that is being deleted (Kubernetes' `NamespaceTerminatingCause`).
const NAMESPACE_TERMINATING_CAUSE: &str = "NamespaceTerminating";

/// Why one namespace's reconcile failed; says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum RootCertError {
    #[error(
        "cannot apply ConfigMap {namespace}/{ROOT_CERT_CONFIG_MAP}: {}",
        advice(source)
    )]
    Apply {
        namespace: String,
        #[source]
        source: kube::Error,
    },
}

/// What an API error on the apply means for the operator, and what to do.
fn advice(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden ({}): grant istiod-lite's service account `create` and `patch` on \
             configmaps (the ClusterRole in manifests/istiod-lite.yaml has them); until then \
             waypoints and proxies in this namespace cannot mount the mesh root; retrying with \
             backoff",
            status.message
        ),
        kube::Error::Api(status) if status.code == 404 => format!(
            "not found ({}): the namespace was deleted meanwhile; retrying with backoff",
            status.message
        ),
        kube::Error::Api(status) if status.code == 422 => format!(
            "the API server refused it as invalid ({}): this is a bug in istiod-lite, please \
             report it; retrying with backoff",
            status.message
        ),
        kube::Error::Api(status) => format!(
            "the API server answered {} {} ({}); retrying with backoff",
            status.code, status.reason, status.message
        ),
        other => format!("{other}: is the API server reachable? retrying with backoff"),
    }
}

/// Whether `error` is the API server refusing a write because the
/// namespace is being deleted.
fn namespace_terminating(error: &kube::Error) -> bool {
    let kube::Error::Api(status) = error else {
        return false;
    };
    status.code == 403
        && status.details.as_ref().is_some_and(|details| {
            details
                .causes
                .iter()
                .any(|cause| cause.reason == NAMESPACE_TERMINATING_CAUSE)
        })
}

/// What a failed list or watch of Namespaces or of the ConfigMaps means.
/// (The error does not say which kind failed: kube-rs merges the watches.)
fn watch_advice(error: &watcher::Error) -> &'static str {
    match watch_status_code(error) {
        Some(403) => {
            "watching Namespaces or the istio-ca-root-cert ConfigMaps is forbidden: grant \
             istiod-lite's service account get, list and watch on namespaces and configmaps; \
             no namespace gets the mesh root until then; retrying with backoff"
        }
        // An expired resourceVersion: the watcher lists again by itself.
        Some(410) => {
            "a watch of Namespaces or istio-ca-root-cert ConfigMaps expired; listing again"
        }
        _ => {
            "watching Namespaces or the istio-ca-root-cert ConfigMaps failed: is the API server \
             reachable? retrying with backoff"
        }
    }
}

/// Publishes the mesh root as `istio-ca-root-cert` in every namespace; see
/// the module docs.
pub struct RootCertController {
    /// Client for the API server.
    client: Client,
    /// The mesh root(s), PEM: the content of `root-cert.pem`.
    roots_pem: Arc<str>,
    /// Waits between retries of a failing namespace.
    backoff: RetryBackoff,
}

impl fmt::Debug for RootCertController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCertController")
            .field("roots_pem_bytes", &self.roots_pem.len())
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// What every reconcile shares.
struct Context {
    client: Client,
    roots_pem: Arc<str>,
    /// Per namespace; cleared on success or skip.
    retries: Retries<String>,
}

// === impl RootCertController ===

impl RootCertController {
    /// `roots_pem` is what goes under `root-cert.pem`: the mesh root(s), as
    /// istiod-lite writes them to `<state_dir>/root-cert.pem`.
    pub fn new(client: Client, roots_pem: impl Into<Arc<str>>) -> Self {
        Self {
            client,
            roots_pem: roots_pem.into(),
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
        let client = &self.client;
        let context = Arc::new(Context {
            client: client.clone(),
            roots_pem: self.roots_pem,
            retries: Retries::new(self.backoff),
        });
        let config_maps =
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CERT_CONFIG_MAP}"));
        info!("publishing the mesh root as ConfigMap {ROOT_CERT_CONFIG_MAP} in every namespace");
        Controller::new(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        )
        .watches(
            Api::<ConfigMap>::all(client.clone()),
            config_maps,
            |config_map| config_map.namespace().map(|ns| ObjectRef::new(&ns)),
        )
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            match result {
                Ok((namespace, _)) => debug!(%namespace, "root certificate ConfigMap reconciled"),
                // Logged with its advice by `error_policy`.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(controller::Error::QueueError(error)) => {
                    warn!(%error, "{}", watch_advice(&error));
                }
                Err(error) => debug!(%error, "root certificate controller"),
            }
            std::future::ready(())
        })
        .await;
    }
}

async fn reconcile(
    namespace: Arc<Namespace>,
    context: Arc<Context>,
) -> Result<Action, RootCertError> {
    let name = namespace.name_any();
    match desired_config_map(&namespace, &context.roots_pem) {
        Err(skipped) => debug!(namespace = %name, %skipped, "no root certificate ConfigMap"),
        Ok(config_map) => {
            let applied = Api::<ConfigMap>::namespaced(context.client.clone(), &name)
                .patch(
                    ROOT_CERT_CONFIG_MAP,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&config_map),
                )
                .await;
            match applied {
                Ok(_) => {}
                Err(error) if namespace_terminating(&error) => {
                    debug!(namespace = %name, "namespace is being deleted; no root certificate ConfigMap");
                }
                Err(source) => {
                    return Err(RootCertError::Apply {
                        namespace: name,
                        source,
                    });
                }
            }
        }
    }
    context.retries.succeeded(&name);
    Ok(Action::await_change())
}

fn error_policy(namespace: Arc<Namespace>, error: &RootCertError, context: Arc<Context>) -> Action {
    let name = namespace.name_any();
    let (failures, delay) = context.retries.failed(name.clone());
    warn!(namespace = %name, failures, retry_in = ?delay, "{error}");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    /// The error of an API answer, from the JSON an API server sends.
    fn api_error(status: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(status).unwrap()))
    }

    fn rbac_forbidden() -> kube::Error {
        api_error(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "configmaps \"istio-ca-root-cert\" is forbidden: User \"system:serviceaccount:istio-system:istiod\" cannot patch resource \"configmaps\"",
            "reason": "Forbidden",
            "details": { "name": "istio-ca-root-cert", "kind": "configmaps" },
            "code": 403,
        }))
    }

    #[test]
    fn a_forbidden_apply_names_the_verbs_and_the_resource() {
        let error = RootCertError::Apply {
            namespace: "apps".to_owned(),
            source: rbac_forbidden(),
        };
        let message = error.to_string();
        assert!(
            message.starts_with("cannot apply ConfigMap apps/istio-ca-root-cert: forbidden"),
            "{message}"
        );
        assert!(
            message.contains("`create` and `patch` on configmaps"),
            "{message}"
        );
    }

    #[test]
    fn only_a_403_with_the_terminating_cause_means_the_namespace_is_going() {
        // What the NamespaceLifecycle admission plugin answers.
        let terminating = api_error(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "configmaps \"istio-ca-root-cert\" is forbidden: unable to create new content in namespace old because it is being terminated",
            "reason": "Forbidden",
            "details": {
                "name": "istio-ca-root-cert",
                "kind": "configmaps",
                "causes": [{
                    "reason": "NamespaceTerminating",
                    "message": "namespace old is being terminated",
                    "field": "metadata.namespace",
                }],
            },
            "code": 403,
        }));
        assert!(namespace_terminating(&terminating));
        // RBAC's 403 has no such cause: it is an error to report.
        assert!(!namespace_terminating(&rbac_forbidden()));
        let other = kube::core::Status::failure("gone", "NotFound").with_code(404);
        assert!(!namespace_terminating(&kube::Error::Api(other.into())));
    }

    #[test]
    fn a_failed_watch_says_what_to_grant() {
        let api = |code: u16| {
            let status = kube::core::Status::failure("refused", "Reason").with_code(code);
            watcher::Error::InitialListFailed(kube::Error::Api(status.into()))
        };
        assert!(
            watch_advice(&api(403)).contains("get, list and watch on namespaces and configmaps")
        );
        assert!(watch_advice(&api(500)).contains("is the API server reachable?"));
    }
}

//! The `istio-ca-root-cert` ConfigMap a namespace should hold, as a pure
//! function of the Namespace and the mesh root.
//!
//! Which namespaces get one follows Istio's namespace controller rather
//! than "every namespace":
//!
//! - every namespace, whether or not it is enrolled in the mesh: a pod may
//!   be enrolled on its own (`istio.io/dataplane-mode` on the pod), a
//!   waypoint may serve a namespace that is not ambient itself, and the
//!   ConfigMap holds only public data;
//! - but not a namespace being deleted (`status.phase: Terminating`): the
//!   API server refuses new objects there (403 with cause
//!   `NamespaceTerminating`), so applying would only fail and retry until
//!   the namespace is gone;
//! - and not Istio's ignored system namespaces ([`IGNORED_NAMESPACES`]:
//!   `kube-public`, `kube-node-lease`, `local-path-storage`), where no
//!   proxy runs. `kube-system` is served, as Istio serves it, because
//!   ztunnel may be installed there.
//!
//! The ConfigMap carries Istio's label `istio.io/config: "true"` and no
//! owner reference: it lives as long as its namespace.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{CONFIG_LABEL, ROOT_CERT_CONFIG_MAP, ROOT_CERT_KEY};

/// Namespaces that never get the ConfigMap: Istio's
/// `inject.IgnoredNamespaces` without `kube-system`, as its namespace
/// controller uses them.
pub const IGNORED_NAMESPACES: [&str; 3] = ["kube-public", "kube-node-lease", "local-path-storage"];

/// Why a namespace gets no ConfigMap; for the debug log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// `status.phase` is `Terminating`: the namespace is being deleted.
    Terminating { namespace: String },
    /// One of [`IGNORED_NAMESPACES`].
    Ignored { namespace: String },
    /// A Namespace without a name, which no API server sends.
    Unnamed,
}

// === impl Skipped ===

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skipped::Terminating { namespace } => write!(
                f,
                "namespace {namespace} is being deleted: the API server accepts no new objects \
                 in it"
            ),
            Skipped::Ignored { namespace } => write!(
                f,
                "namespace {namespace} is a Kubernetes system namespace where no proxy runs"
            ),
            Skipped::Unnamed => f.write_str("a Namespace without a name"),
        }
    }
}

/// The ConfigMap `istio-ca-root-cert` for `namespace`, holding `roots_pem`
/// (the mesh root(s), PEM, as written to `root-cert.pem`), or why the
/// namespace gets none.
pub fn desired_config_map(namespace: &Namespace, roots_pem: &str) -> Result<ConfigMap, Skipped> {
    let name = namespace.metadata.name.as_deref().ok_or(Skipped::Unnamed)?;
    if IGNORED_NAMESPACES.contains(&name) {
        return Err(Skipped::Ignored {
            namespace: name.to_owned(),
        });
    }
    let phase = namespace
        .status
        .as_ref()
        .and_then(|status| status.phase.as_deref());
    if phase == Some("Terminating") {
        return Err(Skipped::Terminating {
            namespace: name.to_owned(),
        });
    }
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CERT_CONFIG_MAP.to_owned()),
            namespace: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                CONFIG_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CERT_KEY.to_owned(),
            roots_pem.to_owned(),
        )])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use k8s_openapi::api::core::v1::NamespaceStatus;

    use super::*;

    const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn namespace(name: &str, phase: Option<&str>) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(BTreeMap::from([(
                    "istio.io/dataplane-mode".to_owned(),
                    "ambient".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            status: phase.map(|phase| NamespaceStatus {
                phase: Some(phase.to_owned()),
                ..NamespaceStatus::default()
            }),
            ..Namespace::default()
        }
    }

    #[test]
    fn an_active_namespace_gets_the_root_under_istios_names() {
        let config_map = desired_config_map(&namespace("apps", Some("Active")), ROOT).unwrap();
        assert_eq!(
            config_map.metadata.name.as_deref(),
            Some("istio-ca-root-cert")
        );
        assert_eq!(config_map.metadata.namespace.as_deref(), Some("apps"));
        assert_eq!(
            config_map.metadata.labels,
            Some(BTreeMap::from([(
                "istio.io/config".to_owned(),
                "true".to_owned()
            )]))
        );
        assert_eq!(
            config_map.data,
            Some(BTreeMap::from([(
                "root-cert.pem".to_owned(),
                ROOT.to_owned()
            )]))
        );
        // Nothing else: no owner (it lives as long as the namespace), no
        // binary data, no namespace labels copied over.
        assert_eq!(config_map.metadata.owner_references, None);
        assert_eq!(config_map.metadata.annotations, None);
        assert_eq!(config_map.binary_data, None);
    }

    #[test]
    fn the_applied_body_names_its_kind_and_version() {
        let config_map = desired_config_map(&namespace("apps", None), ROOT).unwrap();
        let body = serde_json::to_value(&config_map).unwrap();
        assert_eq!(body["apiVersion"], "v1");
        assert_eq!(body["kind"], "ConfigMap");
        assert_eq!(body["data"]["root-cert.pem"], ROOT);
    }

    #[test]
    fn a_namespace_without_a_status_yet_is_served() {
        // Freshly created namespaces may be seen before their phase is set.
        assert!(desired_config_map(&namespace("new", None), ROOT).is_ok());
        assert!(desired_config_map(&namespace("kube-system", Some("Active")), ROOT).is_ok());
    }

    #[test]
    fn a_terminating_namespace_is_skipped() {
        let skipped = desired_config_map(&namespace("old", Some("Terminating")), ROOT).unwrap_err();
        assert_eq!(
            skipped,
            Skipped::Terminating {
                namespace: "old".to_owned()
            }
        );
        assert!(skipped.to_string().contains("being deleted"), "{skipped}");
    }

    #[test]
    fn istios_ignored_system_namespaces_are_skipped() {
        for name in ["kube-public", "kube-node-lease", "local-path-storage"] {
            let skipped = desired_config_map(&namespace(name, Some("Active")), ROOT).unwrap_err();
            assert_eq!(
                skipped,
                Skipped::Ignored {
                    namespace: name.to_owned()
                }
            );
        }
    }

    #[test]
    fn a_namespace_without_a_name_is_skipped() {
        let unnamed = Namespace::default();
        assert_eq!(desired_config_map(&unnamed, ROOT), Err(Skipped::Unnamed));
    }
}

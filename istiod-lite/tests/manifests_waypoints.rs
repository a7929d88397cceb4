//! The manifests that deploy waypoints agree with the code: every document
//! of `manifests/*.yaml` parses into its typed Kubernetes object; the
//! ClusterRole grants the waypoint and root certificate controllers exactly
//! the writes they make; istiod-lite's Deployment sets only variables
//! istiod-lite reads; and the tracing endpoint it hands to waypoints is a
//! port Jaeger listens on.
//!
//! No API server runs on these machines, so this checks the files' content
//! (typed, as an API server would decode them), not a cluster's reaction.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_yaml_ng::Value;

fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("manifests")
}

/// One typed object of a manifest: the kinds the checks look into, and
/// the kind of every other one (decoded, then set aside).
#[derive(Debug)]
enum Object {
    ClusterRole(Box<ClusterRole>),
    Service(Box<Service>),
    Deployment(Box<Deployment>),
    Decoded(String),
}

/// Every document of `file`, typed. k8s-openapi checks `apiVersion` and
/// `kind` as it decodes, so a wrong group or version fails here too.
fn objects_of(file: &Path) -> Vec<Object> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut objects = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(document).unwrap();
        if value.is_null() {
            continue;
        }
        let kind = value["kind"].as_str().unwrap_or_default().to_owned();
        let at = format!("{} document {index} ({kind})", file.display());
        let object = match kind.as_str() {
            "ClusterRole" => Object::ClusterRole(typed(value, &at)),
            "Service" => Object::Service(typed(value, &at)),
            "Deployment" => Object::Deployment(typed(value, &at)),
            "Namespace" => decoded::<Namespace>(value, &at),
            "ServiceAccount" => decoded::<ServiceAccount>(value, &at),
            "ClusterRoleBinding" => decoded::<ClusterRoleBinding>(value, &at),
            "CustomResourceDefinition" => decoded::<CustomResourceDefinition>(value, &at),
            _ => panic!("{at}: a kind this test does not know; add it to `Object`"),
        };
        objects.push(object);
    }
    objects
}

fn typed<T: serde::de::DeserializeOwned>(value: Value, at: &str) -> Box<T> {
    Box::new(serde_yaml_ng::from_value(value).unwrap_or_else(|error| panic!("{at}: {error}")))
}

fn decoded<T: serde::de::DeserializeOwned>(value: Value, at: &str) -> Object {
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    typed::<T>(value, at);
    Object::Decoded(kind)
}

fn all_objects() -> Vec<Object> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifests_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    files.iter().flat_map(|file| objects_of(file)).collect()
}

fn deployment(name: &str) -> Deployment {
    all_objects()
        .into_iter()
        .find_map(|object| match object {
            Object::Deployment(d) if d.metadata.name.as_deref() == Some(name) => Some(*d),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Deployment {name} in manifests/"))
}

fn service(namespace: &str, name: &str) -> Service {
    all_objects()
        .into_iter()
        .find_map(|object| match object {
            Object::Service(s)
                if s.metadata.name.as_deref() == Some(name)
                    && s.metadata.namespace.as_deref() == Some(namespace) =>
            {
                Some(*s)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Service {namespace}/{name} in manifests/"))
}

fn container<'a>(deployment: &'a Deployment, name: &str) -> &'a Container {
    let pod = deployment.spec.template.spec.as_ref().unwrap();
    pod.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
        .collect()
}

fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|rule| {
        let has = |list: &Option<Vec<String>>, item: &str| {
            list.as_ref()
                .is_some_and(|l| l.iter().any(|x| x == item || x == "*"))
        };
        has(&rule.api_groups, group)
            && has(&rule.resources, resource)
            && rule.verbs.iter().any(|v| v == verb || v == "*")
    })
}

fn istiod_rules() -> Vec<PolicyRule> {
    all_objects()
        .into_iter()
        .find_map(|object| match object {
            Object::ClusterRole(role) if role.metadata.name.as_deref() == Some("istiod-lite") => {
                role.rules
            }
            _ => None,
        })
        .expect("the istiod-lite ClusterRole")
}

/// Whether `pod_labels` are selected by `service`.
fn selects(service: &Service, pod_labels: &BTreeMap<String, String>) -> bool {
    let selector = service.spec.as_ref().unwrap().selector.as_ref().unwrap();
    !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
}

#[test]
fn every_manifest_document_is_a_typed_kubernetes_object() {
    let objects = all_objects();
    // istiod-lite.yaml, jaeger.yaml and crds.yaml are all read.
    assert!(objects.iter().any(|o| matches!(o, Object::ClusterRole(_))));
    assert!(
        objects
            .iter()
            .any(|o| matches!(o, Object::Decoded(kind) if kind == "CustomResourceDefinition"))
    );
    assert!(deployment("jaeger").metadata.namespace.as_deref() == Some("istio-system"));
}

#[test]
fn the_waypoint_controller_may_apply_and_watch_what_it_owns() {
    let rules = istiod_rules();
    for (group, resource) in [
        ("", "serviceaccounts"),
        ("", "services"),
        ("apps", "deployments"),
    ] {
        for verb in ["get", "list", "watch", "create", "patch"] {
            assert!(
                grants(&rules, group, resource, verb),
                "the ClusterRole lacks {verb} on {resource} ({group:?})"
            );
        }
    }
    assert!(grants(
        &rules,
        "gateway.networking.k8s.io",
        "gateways/status",
        "patch"
    ));
}

#[test]
fn the_waypoint_controller_may_not_delete_or_rewrite_gateways() {
    let rules = istiod_rules();
    for verb in ["delete", "deletecollection", "update"] {
        for (group, resource) in [
            ("", "serviceaccounts"),
            ("", "services"),
            ("", "pods"),
            ("apps", "deployments"),
            ("gateway.networking.k8s.io", "gateways"),
            ("gateway.networking.k8s.io", "gateways/status"),
        ] {
            assert!(
                !grants(&rules, group, resource, verb),
                "the ClusterRole grants {verb} on {resource}"
            );
        }
    }
    // The Gateway itself is the user's: only its status is written.
    assert!(!grants(
        &rules,
        "gateway.networking.k8s.io",
        "gateways",
        "patch"
    ));
    assert!(!grants(&rules, "", "secrets", "get"));
}

#[test]
fn the_root_cert_controller_may_apply_and_watch_its_config_maps_only() {
    let rules = istiod_rules();
    // The Namespaces it reconciles, and the ConfigMaps it applies.
    for verb in ["get", "list", "watch"] {
        assert!(
            grants(&rules, "", "namespaces", verb),
            "the ClusterRole lacks {verb} on namespaces"
        );
    }
    for verb in ["get", "list", "watch", "create", "patch"] {
        assert!(
            grants(&rules, "", "configmaps", verb),
            "the ClusterRole lacks {verb} on configmaps"
        );
    }
    // Server-side apply needs no update, and the ConfigMap goes with its
    // namespace: no delete, and nothing written to namespaces.
    for verb in ["update", "delete", "deletecollection"] {
        assert!(
            !grants(&rules, "", "configmaps", verb),
            "the ClusterRole grants {verb} on configmaps"
        );
    }
    for verb in ["create", "patch", "update", "delete"] {
        assert!(
            !grants(&rules, "", "namespaces", verb),
            "the ClusterRole grants {verb} on namespaces"
        );
    }
}

#[test]
fn istiod_lite_is_given_only_waypoint_settings_it_reads() {
    let istiod = deployment("istiod");
    let env = env(container(&istiod, "discovery"));
    let main =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/main.rs"))
            .unwrap();
    for name in env.keys().filter(|name| name.starts_with("ISTIOD_LITE_")) {
        assert!(
            main.contains(&format!("env = \"{name}\"")),
            "manifests/istiod-lite.yaml sets {name}, which src/main.rs does not read"
        );
    }
    for name in [
        "ISTIOD_LITE_WAYPOINT_IMAGE",
        "ISTIOD_LITE_WAYPOINT_OTLP_ENDPOINT",
        "ISTIOD_LITE_WAYPOINT_TRACE_SAMPLING",
    ] {
        assert!(env.contains_key(name), "istiod's Deployment lacks {name}");
    }
    let sampling: f64 = env["ISTIOD_LITE_WAYPOINT_TRACE_SAMPLING"].parse().unwrap();
    assert!((0.0..=100.0).contains(&sampling));
}

#[test]
fn waypoint_traces_go_to_a_port_jaeger_listens_on() {
    let istiod = deployment("istiod");
    let endpoint =
        env(container(&istiod, "discovery"))["ISTIOD_LITE_WAYPOINT_OTLP_ENDPOINT"].clone();
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{endpoint} is not http://host:port"));
    let (host, port) = authority.rsplit_once(':').unwrap();
    let port: i32 = port.parse().unwrap();
    assert_eq!(port, 4317, "OTLP over gRPC is Jaeger's 4317");
    let (name, namespace) = host.split_once('.').unwrap();

    let jaeger = deployment("jaeger");
    let pod_labels = jaeger
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    let listens: Vec<i32> = container(&jaeger, "jaeger")
        .ports
        .as_deref()
        .unwrap()
        .iter()
        .map(|p| p.container_port)
        .collect();
    let reaches = |service: &Service, port: i32| -> Option<i32> {
        let ports = service.spec.as_ref()?.ports.as_deref()?;
        let found = ports.iter().find(|p| p.port == port)?;
        match &found.target_port {
            Some(IntOrString::Int(target)) => Some(*target),
            None => Some(found.port),
            Some(IntOrString::String(_)) => None,
        }
    };

    let collector = service(namespace, name);
    assert!(
        selects(&collector, &pod_labels),
        "{name} selects no Jaeger pod"
    );
    let target = reaches(&collector, port).expect("the collector Service has port 4317");
    assert!(
        listens.contains(&target),
        "Jaeger does not listen on {target}"
    );

    // The UI, under the name of Istio's addon.
    let ui = service("istio-system", "tracing");
    assert!(selects(&ui, &pod_labels));
    assert_eq!(reaches(&ui, 80), Some(16686));
    assert!(listens.contains(&16686));
}

#[test]
fn the_jaeger_check_notices_a_service_that_selects_nothing() {
    // `selects` must be able to fail, or the test above proves nothing.
    let mut ui = service("istio-system", "tracing");
    let labels = BTreeMap::from([("app".to_owned(), "jaeger".to_owned())]);
    assert!(selects(&ui, &labels));
    ui.spec.as_mut().unwrap().selector =
        Some(BTreeMap::from([("app".to_owned(), "zipkin".to_owned())]));
    assert!(!selects(&ui, &labels));
}

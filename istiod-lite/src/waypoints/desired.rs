//! The objects a waypoint Gateway asks for, as a pure function of the
//! Gateway and istiod-lite's settings.
//!
//! They follow what Istio generates for a waypoint where users or tools can
//! see it: the objects are named after the Gateway; each carries
//! `gateway.istio.io/managed: istio.io-mesh-controller` and the Gateway's
//! name and class labels; the pods are labelled `istio.io/dataplane-mode:
//! none` (a waypoint speaks HBONE itself and must never be captured), carry
//! Istio's canonical-service labels and the Prometheus scrape annotations
//! for 15020; the Service exposes `status-port` 15021 and `mesh` 15008
//! (`appProtocol: hbone`, the listener's protocol in lower case, as Istio
//! derives it). Istio's older `istio.io/gateway-name` label is not set: its
//! current controller no longer sets it either.
//!
//! The container's settings are the waypoint's own environment names
//! (waypoint/src/config.rs), with the identity from the downward API.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, SecurityContext, Service, ServiceAccount, ServiceAccountTokenProjection,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use super::{
    GATEWAY_CLASS_LABEL, GATEWAY_NAME_LABEL, HBONE_PORT, HBONE_PROTOCOL, MANAGED_LABEL,
    MANAGED_VALUE, MESH_LISTENER, METRICS_PORT, STATUS_PORT, WaypointSettings,
};
use crate::model::{DATAPLANE_MODE_LABEL, Gateway, WAYPOINT_GATEWAY_CLASS};
// The mesh root, which `root_cert` publishes in every namespace.
use crate::root_cert::{ROOT_CERT_CONFIG_MAP, ROOT_CERT_KEY};

/// Where the mesh root is mounted (Istio's path; the waypoint's
/// `XDS_ROOT_CA`).
const ROOT_CERT_DIR: &str = "/var/run/secrets/istio";
/// Where the projected service-account token is mounted (`AUTH_TOKEN`).
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
/// How long the projected token lives; the kubelet rotates it at 80 %.
const TOKEN_EXPIRATION_SECONDS: i64 = 43_200;
/// The uid and gid the waypoint runs as (Istio's proxy user).
const PROXY_UID: i64 = 1337;

/// The three objects of one waypoint, in the order they are applied: the
/// identity first, then the Service (whose ClusterIP the status reports),
/// then the pods.
#[derive(Clone, Debug, PartialEq)]
pub struct WaypointObjects {
    pub service_account: ServiceAccount,
    pub service: Service,
    pub deployment: Deployment,
}

/// Why a Gateway of class `istio-waypoint` cannot be deployed. The message
/// names the Gateway, what is wrong and how to fix it; it also becomes the
/// Gateway's `Accepted=False` condition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaypointProblem {
    #[error(
        "waypoint Gateway {gateway} has no listener `mesh`: add `listeners: [{{name: mesh, port: \
         15008, protocol: HBONE}}]` (as `meshctl waypoint apply` or `istioctl waypoint apply` \
         write it)"
    )]
    NoMeshListener { gateway: String },
    #[error(
        "waypoint Gateway {gateway}: listener `mesh` is port {port} / {protocol}, but a waypoint \
         accepts HBONE on 15008 only: set `port: 15008` and `protocol: HBONE`"
    )]
    BadMeshListener {
        gateway: String,
        port: u16,
        protocol: String,
    },
    #[error(
        "waypoint Gateway {gateway}: the name `{name}` cannot name its Service and label its \
         pods ({reason}): use a name of at most 63 lower-case letters, digits and '-', starting \
         with a letter"
    )]
    BadName {
        gateway: String,
        name: String,
        reason: &'static str,
    },
    #[error(
        "waypoint Gateway {gateway} has no metadata.uid, so nothing can be owned by it: only \
         Gateways read from the API server can be deployed"
    )]
    NoUid { gateway: String },
}

/// The objects `gateway` asks for: `Ok(None)` when it is not a waypoint
/// (another class), an error when it is one that cannot be deployed.
pub fn desired_objects(
    gateway: &Gateway,
    settings: &WaypointSettings,
) -> Result<Option<WaypointObjects>, WaypointProblem> {
    if gateway.spec.gateway_class_name != WAYPOINT_GATEWAY_CLASS {
        return Ok(None);
    }
    let waypoint = Waypoint::from_gateway(gateway)?;
    Ok(Some(WaypointObjects {
        service_account: waypoint.service_account(),
        service: waypoint.service(),
        deployment: waypoint.deployment(settings),
    }))
}

/// A checked waypoint Gateway: what the objects are built from.
struct Waypoint<'a> {
    namespace: &'a str,
    name: &'a str,
    owner: OwnerReference,
}

// === impl Waypoint ===

impl<'a> Waypoint<'a> {
    fn from_gateway(gateway: &'a Gateway) -> Result<Self, WaypointProblem> {
        let namespace = gateway.metadata.namespace.as_deref().unwrap_or("default");
        let name = gateway.metadata.name.as_deref().unwrap_or_default();
        let qualified = format!("{namespace}/{name}");
        check_name(name).map_err(|reason| WaypointProblem::BadName {
            gateway: qualified.clone(),
            name: name.to_owned(),
            reason,
        })?;
        let listener = gateway
            .spec
            .listeners
            .iter()
            .find(|listener| listener.name == MESH_LISTENER)
            .ok_or_else(|| WaypointProblem::NoMeshListener {
                gateway: qualified.clone(),
            })?;
        if listener.port != HBONE_PORT || listener.protocol != HBONE_PROTOCOL {
            return Err(WaypointProblem::BadMeshListener {
                gateway: qualified,
                port: listener.port,
                protocol: listener.protocol.clone(),
            });
        }
        let uid = gateway
            .metadata
            .uid
            .clone()
            .filter(|uid| !uid.is_empty())
            .ok_or(WaypointProblem::NoUid {
                gateway: qualified.clone(),
            })?;
        let owner = OwnerReference {
            api_version: Gateway::api_version(&()).into_owned(),
            kind: Gateway::kind(&()).into_owned(),
            name: name.to_owned(),
            uid,
            // `controller` makes the Gateway the managing owner, which is
            // what garbage collection and kube-rs's `owns` go by. Not
            // `blockOwnerDeletion`: setting it needs `update` on
            // gateways/finalizers, for no gain here.
            controller: Some(true),
            block_owner_deletion: None,
        };
        Ok(Self {
            namespace,
            name,
            owner,
        })
    }

    /// The labels of every object, and the selector of the pods.
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_LABEL.to_owned(), MANAGED_VALUE.to_owned()),
            (GATEWAY_NAME_LABEL.to_owned(), self.name.to_owned()),
            (
                GATEWAY_CLASS_LABEL.to_owned(),
                WAYPOINT_GATEWAY_CLASS.to_owned(),
            ),
        ])
    }

    fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(GATEWAY_NAME_LABEL.to_owned(), self.name.to_owned())])
    }

    fn metadata(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(self.name.to_owned()),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    fn service_account(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: self.metadata(),
            ..ServiceAccount::default()
        }
    }

    fn service(&self) -> Service {
        let port = |name: &str, port: u16, app_protocol: &str| ServicePort {
            name: Some(name.to_owned()),
            port: i32::from(port),
            protocol: Some("TCP".to_owned()),
            app_protocol: Some(app_protocol.to_owned()),
            ..ServicePort::default()
        };
        Service {
            metadata: self.metadata(),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                selector: Some(self.selector()),
                ports: Some(vec![
                    port("status-port", STATUS_PORT, "tcp"),
                    port(
                        MESH_LISTENER,
                        HBONE_PORT,
                        &HBONE_PROTOCOL.to_ascii_lowercase(),
                    ),
                ]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn deployment(&self, settings: &WaypointSettings) -> Deployment {
        let mut pod_labels = self.labels();
        pod_labels.extend([
            (DATAPLANE_MODE_LABEL.to_owned(), "none".to_owned()),
            (
                "service.istio.io/canonical-name".to_owned(),
                self.name.to_owned(),
            ),
            (
                "service.istio.io/canonical-revision".to_owned(),
                "latest".to_owned(),
            ),
            ("sidecar.istio.io/inject".to_owned(), "false".to_owned()),
        ]);
        let annotations = BTreeMap::from([
            (
                "prometheus.io/path".to_owned(),
                "/stats/prometheus".to_owned(),
            ),
            ("prometheus.io/port".to_owned(), METRICS_PORT.to_string()),
            ("prometheus.io/scrape".to_owned(), "true".to_owned()),
        ]);
        Deployment {
            metadata: self.metadata(),
            spec: DeploymentSpec {
                // Unset, as Istio leaves it: the API server defaults it to
                // 1, and since the field is not ours, `kubectl scale` or an
                // autoscaler can own it without the next apply undoing it.
                replicas: None,
                selector: LabelSelector {
                    match_labels: Some(self.selector()),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        annotations: Some(annotations),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(self.pod_spec(settings)),
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        }
    }

    fn pod_spec(&self, settings: &WaypointSettings) -> PodSpec {
        PodSpec {
            service_account_name: Some(self.name.to_owned()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(PROXY_UID),
                run_as_group: Some(PROXY_UID),
                ..PodSecurityContext::default()
            }),
            containers: vec![container(self.name, settings)],
            volumes: Some(vec![
                Volume {
                    name: "istiod-ca-cert".to_owned(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: ROOT_CERT_CONFIG_MAP.to_owned(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "istio-token".to_owned(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![VolumeProjection {
                            service_account_token: Some(ServiceAccountTokenProjection {
                                audience: Some(settings.token_audience.clone()),
                                expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                                path: "istio-token".to_owned(),
                                ..ServiceAccountTokenProjection::default()
                            }),
                            ..VolumeProjection::default()
                        }]),
                        ..ProjectedVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }
    }
}

/// The container of the waypoint of Deployment `name`.
fn container(name: &str, settings: &WaypointSettings) -> Container {
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let ready = |period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".to_owned()),
            port: IntOrString::Int(i32::from(STATUS_PORT)),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(1),
        ..Probe::default()
    };
    Container {
        name: "waypoint".to_owned(),
        image: Some(settings.image.clone()),
        env: Some(environment(name, settings)),
        ports: Some(vec![
            port("hbone", HBONE_PORT),
            port("metrics", METRICS_PORT),
            port("status-port", STATUS_PORT),
        ]),
        // Istio's probes: every second while starting (the waypoint is
        // ready once it has its first config and a certificate), then
        // every 15 s.
        startup_probe: Some(ready(1, 30)),
        readiness_probe: Some(ready(15, 4)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "istiod-ca-cert".to_owned(),
                mount_path: ROOT_CERT_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "istio-token".to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

/// The environment of the waypoint of Deployment `name`: settings first,
/// then the identity and addresses from the downward API, then tracing.
fn environment(name: &str, settings: &WaypointSettings) -> Vec<EnvVar> {
    let value = |name: &str, value: &str| EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    };
    let field = |name: &str, path: &str| EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut env = vec![
        value("XDS_ADDRESS", &settings.xds_address),
        value("CA_ADDRESS", &settings.xds_address),
        value("XDS_ROOT_CA", &format!("{ROOT_CERT_DIR}/{ROOT_CERT_KEY}")),
        value("AUTH_TOKEN", &format!("{TOKEN_DIR}/istio-token")),
        value("TRUST_DOMAIN", &settings.trust_domain),
        value("CLUSTER_ID", &settings.cluster_id),
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field("NODE_NAME", "spec.nodeName"),
        field("INSTANCE_IP", "status.podIP"),
        // The waypoint names its spans' service after its workload, as
        // Istio's waypoint template sets it.
        value("ISTIO_META_WORKLOAD_NAME", name),
        value(
            "TRACE_SAMPLING",
            &settings.tracing.sampling_percent.to_string(),
        ),
    ];
    if let Some(endpoint) = &settings.tracing.otlp_endpoint {
        env.push(value("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
    }
    env
}

/// Whether `name` can name a Service (an RFC 1035 label) and be a label
/// value: the Gateway's name is both.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 63 {
        return Err("it is longer than 63 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("it does not start with a lower-case letter");
    }
    if name.ends_with('-') {
        return Err("it ends with '-'");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err("it holds a character other than a-z, 0-9 and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests;

// Tests of the pure waypoint objects: names, labels, owner, ports, env.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::{Container, EnvVar};

use super::*;
use crate::model::{GatewaySpec, Listener};
use crate::waypoints::TracingSettings;

fn mesh_listener() -> Listener {
    Listener {
        name: "mesh".to_owned(),
        port: 15008,
        protocol: "HBONE".to_owned(),
        ..Listener::default()
    }
}

fn gateway(class: &str, listeners: Vec<Listener>) -> Gateway {
    Gateway {
        metadata: ObjectMeta {
            name: Some("waypoint".to_owned()),
            namespace: Some("apps".to_owned()),
            uid: Some("5c1e-uid".to_owned()),
            ..ObjectMeta::default()
        },
        spec: GatewaySpec {
            gateway_class_name: class.to_owned(),
            listeners,
            ..GatewaySpec::default()
        },
        status: None,
    }
}

fn waypoint_gateway() -> Gateway {
    gateway("istio-waypoint", vec![mesh_listener()])
}

fn objects(settings: &WaypointSettings) -> WaypointObjects {
    desired_objects(&waypoint_gateway(), settings)
        .unwrap()
        .expect("a waypoint Gateway")
}

fn container_of(objects: &WaypointObjects) -> &Container {
    let pod = objects.deployment.spec.template.spec.as_ref();
    &pod.unwrap().containers[0]
}

/// The env as `NAME=value`, or `NAME<-field.path` for downward-API values.
fn env_of(objects: &WaypointObjects) -> Vec<String> {
    container_of(objects)
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|var: &EnvVar| match (&var.value, &var.value_from) {
            (Some(value), _) => format!("{}={value}", var.name),
            (None, Some(from)) => {
                format!(
                    "{}<-{}",
                    var.name,
                    from.field_ref.as_ref().unwrap().field_path
                )
            }
            (None, None) => var.name.clone(),
        })
        .collect()
}

#[test]
fn every_object_is_named_after_the_gateway_in_its_namespace() {
    let objects = objects(&WaypointSettings::default());
    for meta in [
        &objects.service_account.metadata,
        &objects.service.metadata,
        &objects.deployment.metadata,
    ] {
        assert_eq!(meta.name.as_deref(), Some("waypoint"));
        assert_eq!(meta.namespace.as_deref(), Some("apps"));
    }
    let pod = objects.deployment.spec.template.spec.as_ref();
    assert_eq!(
        pod.unwrap().service_account_name.as_deref(),
        Some("waypoint")
    );
}

#[test]
fn every_object_carries_istios_labels_and_is_owned_by_the_gateway() {
    let objects = objects(&WaypointSettings::default());
    let expected_labels = BTreeMap::from([
        (
            "gateway.istio.io/managed".to_owned(),
            "istio.io-mesh-controller".to_owned(),
        ),
        (
            "gateway.networking.k8s.io/gateway-name".to_owned(),
            "waypoint".to_owned(),
        ),
        (
            "gateway.networking.k8s.io/gateway-class-name".to_owned(),
            "istio-waypoint".to_owned(),
        ),
    ]);
    let expected_owner = OwnerReference {
        api_version: "gateway.networking.k8s.io/v1".to_owned(),
        kind: "Gateway".to_owned(),
        name: "waypoint".to_owned(),
        uid: "5c1e-uid".to_owned(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    for meta in [
        &objects.service_account.metadata,
        &objects.service.metadata,
        &objects.deployment.metadata,
    ] {
        assert_eq!(meta.labels.as_ref(), Some(&expected_labels));
        assert_eq!(
            meta.owner_references.as_deref(),
            Some(&[expected_owner.clone()][..])
        );
    }
}

#[test]
fn the_pods_stay_out_of_capture_and_are_scraped_on_15020() {
    let objects = objects(&WaypointSettings::default());
    let spec = &objects.deployment.spec;
    // Scaling is left to the operator (and the API server's default of 1).
    assert_eq!(spec.replicas, None);
    let selector = spec.selector.match_labels.as_ref().unwrap();
    assert_eq!(
        selector,
        &BTreeMap::from([(GATEWAY_NAME_LABEL.to_owned(), "waypoint".to_owned())])
    );
    let template = spec.template.metadata.as_ref().unwrap();
    let labels = template.labels.as_ref().unwrap();
    assert_eq!(labels["istio.io/dataplane-mode"], "none");
    assert_eq!(labels[GATEWAY_NAME_LABEL], "waypoint");
    assert_eq!(labels["service.istio.io/canonical-name"], "waypoint");
    // The selector must select the template, or the API server refuses it.
    assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let annotations = template.annotations.as_ref().unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "15020");
    assert_eq!(annotations["prometheus.io/path"], "/stats/prometheus");
}

#[test]
fn the_service_exposes_hbone_and_the_status_port() {
    let objects = objects(&WaypointSettings::default());
    let spec = objects.service.spec.as_ref().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        spec.selector.as_ref().unwrap(),
        &BTreeMap::from([(GATEWAY_NAME_LABEL.to_owned(), "waypoint".to_owned())])
    );
    let ports: Vec<(String, i32, String)> = spec
        .ports
        .as_deref()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap(),
                p.port,
                p.app_protocol.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("status-port".to_owned(), 15021, "tcp".to_owned()),
            ("mesh".to_owned(), 15008, "hbone".to_owned()),
        ]
    );
}

#[test]
fn the_container_is_probed_on_15021_and_listens_on_the_waypoint_ports() {
    let settings = WaypointSettings {
        image: "registry.example/waypoint:1.2".to_owned(),
        ..WaypointSettings::default()
    };
    let objects = objects(&settings);
    let container = container_of(&objects);
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/waypoint:1.2")
    );
    let probe = container.readiness_probe.as_ref().unwrap();
    let get = probe.http_get.as_ref().unwrap();
    assert_eq!(get.path.as_deref(), Some("/healthz/ready"));
    assert_eq!(get.port, IntOrString::Int(15021));
    let ports: Vec<i32> = container
        .ports
        .as_deref()
        .unwrap()
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [15008, 15020, 15021]);
}

#[test]
fn the_environment_carries_the_settings_under_the_waypoints_names() {
    let settings = WaypointSettings {
        xds_address: "https://istiod.istio-system.svc:15012".to_owned(),
        trust_domain: "example.org".to_owned(),
        cluster_id: "east".to_owned(),
        ..WaypointSettings::default()
    };
    let env = env_of(&objects(&settings));
    assert_eq!(
        env,
        [
            "XDS_ADDRESS=https://istiod.istio-system.svc:15012",
            "CA_ADDRESS=https://istiod.istio-system.svc:15012",
            "XDS_ROOT_CA=/var/run/secrets/istio/root-cert.pem",
            "AUTH_TOKEN=/var/run/secrets/tokens/istio-token",
            "TRUST_DOMAIN=example.org",
            "CLUSTER_ID=east",
            "POD_NAME<-metadata.name",
            "POD_NAMESPACE<-metadata.namespace",
            "SERVICE_ACCOUNT<-spec.serviceAccountName",
            "NODE_NAME<-spec.nodeName",
            "INSTANCE_IP<-status.podIP",
            "ISTIO_META_WORKLOAD_NAME=waypoint",
            "TRACE_SAMPLING=1",
        ]
    );
}

#[test]
fn tracing_is_off_unless_an_endpoint_is_set() {
    let off = env_of(&objects(&WaypointSettings::default()));
    assert!(
        !off.iter()
            .any(|var| var.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT"))
    );
    let settings = WaypointSettings {
        tracing: TracingSettings {
            otlp_endpoint: Some("http://jaeger-collector.istio-system:4317".to_owned()),
            sampling_percent: 12.5,
        },
        ..WaypointSettings::default()
    };
    let on = env_of(&objects(&settings));
    assert!(on.contains(&"TRACE_SAMPLING=12.5".to_owned()), "{on:?}");
    assert!(
        on.contains(
            &"OTEL_EXPORTER_OTLP_ENDPOINT=http://jaeger-collector.istio-system:4317".to_owned()
        ),
        "{on:?}"
    );
}

#[test]
fn the_token_is_projected_for_the_audience_istiod_lite_reviews() {
    let settings = WaypointSettings {
        token_audience: "mesh-ca".to_owned(),
        ..WaypointSettings::default()
    };
    let objects = objects(&settings);
    let pod = objects.deployment.spec.template.spec.as_ref();
    let volumes = pod.unwrap().volumes.as_deref().unwrap();
    let token = volumes
        .iter()
        .find_map(|v| v.projected.as_ref())
        .and_then(|p| p.sources.as_deref())
        .and_then(|s| s[0].service_account_token.as_ref())
        .unwrap();
    assert_eq!(token.audience.as_deref(), Some("mesh-ca"));
    assert_eq!(token.path, "istio-token");
}

#[test]
fn a_gateway_of_another_class_asks_for_nothing() {
    for class in ["istio", "", "istio-waypoint-v2"] {
        let other = gateway(class, vec![mesh_listener()]);
        assert_eq!(
            desired_objects(&other, &WaypointSettings::default()),
            Ok(None)
        );
    }
}

#[test]
fn a_waypoint_without_the_mesh_listener_is_a_problem_that_says_what_to_add() {
    let http = Listener {
        name: "http".to_owned(),
        port: 80,
        protocol: "HTTP".to_owned(),
        ..Listener::default()
    };
    let problem = desired_objects(
        &gateway("istio-waypoint", vec![http]),
        &WaypointSettings::default(),
    )
    .unwrap_err();
    assert_eq!(
        problem,
        WaypointProblem::NoMeshListener {
            gateway: "apps/waypoint".to_owned()
        }
    );
    let message = problem.to_string();
    assert!(message.contains("apps/waypoint"), "{message}");
    assert!(
        message.contains("name: mesh, port: 15008, protocol: HBONE"),
        "{message}"
    );
}

#[test]
fn a_mesh_listener_on_the_wrong_port_or_protocol_is_a_problem() {
    for (port, protocol) in [(15009, "HBONE"), (15008, "HTTP"), (15008, "hbone")] {
        let listener = Listener {
            port,
            protocol: protocol.to_owned(),
            ..mesh_listener()
        };
        let problem = desired_objects(
            &gateway("istio-waypoint", vec![listener]),
            &WaypointSettings::default(),
        )
        .unwrap_err();
        assert_eq!(
            problem,
            WaypointProblem::BadMeshListener {
                gateway: "apps/waypoint".to_owned(),
                port,
                protocol: protocol.to_owned(),
            }
        );
        assert!(
            problem
                .to_string()
                .contains("set `port: 15008` and `protocol: HBONE`")
        );
    }
}

#[test]
fn a_name_that_cannot_name_a_service_is_a_problem() {
    for (name, reason) in [
        ("9lives", "it does not start with a lower-case letter"),
        ("Waypoint", "it does not start with a lower-case letter"),
        (
            "way.point",
            "it holds a character other than a-z, 0-9 and '-'",
        ),
        ("waypoint-", "it ends with '-'"),
    ] {
        let mut bad = waypoint_gateway();
        bad.metadata.name = Some(name.to_owned());
        let problem = desired_objects(&bad, &WaypointSettings::default()).unwrap_err();
        assert_eq!(
            problem,
            WaypointProblem::BadName {
                gateway: format!("apps/{name}"),
                name: name.to_owned(),
                reason,
            }
        );
    }
    let mut long = waypoint_gateway();
    long.metadata.name = Some("w".repeat(64));
    assert!(matches!(
        desired_objects(&long, &WaypointSettings::default()),
        Err(WaypointProblem::BadName {
            reason: "it is longer than 63 characters",
            ..
        })
    ));
    let mut fine = waypoint_gateway();
    fine.metadata.name = Some(format!("w{}", "-9".repeat(31)));
    assert!(desired_objects(&fine, &WaypointSettings::default()).is_ok());
}

#[test]
fn a_gateway_without_a_uid_cannot_own_anything() {
    let mut file_gateway = waypoint_gateway();
    file_gateway.metadata.uid = None;
    assert_eq!(
        desired_objects(&file_gateway, &WaypointSettings::default()),
        Err(WaypointProblem::NoUid {
            gateway: "apps/waypoint".to_owned()
        })
    );
}

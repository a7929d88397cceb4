//! A waypoint istiod-lite deploys accepts the environment it is given: each
//! variable of the Deployment is one the waypoint reads (checked against the
//! waypoint's own `clap` definition, not a copy of its names), and the
//! values, with the downward-API ones filled in as the kubelet would, pass
//! the waypoint's own validation.

// Test helpers outside #[test] functions panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::{CommandFactory, Parser};
use istiod_lite::model::{Gateway, GatewaySpec, Listener};
use istiod_lite::waypoints::{TracingSettings, WaypointSettings, desired_objects};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use waypoint::config::Args;

fn waypoint_gateway() -> Gateway {
    Gateway {
        metadata: ObjectMeta {
            name: Some("waypoint".to_owned()),
            namespace: Some("shop".to_owned()),
            uid: Some("uid-1".to_owned()),
            ..ObjectMeta::default()
        },
        spec: GatewaySpec {
            gateway_class_name: "istio-waypoint".to_owned(),
            listeners: vec![Listener {
                name: "mesh".to_owned(),
                port: 15008,
                protocol: "HBONE".to_owned(),
                ..Listener::default()
            }],
            ..GatewaySpec::default()
        },
        status: None,
    }
}

/// The Deployment's environment as `(name, value)`, downward-API fields
/// resolved as the kubelet would for a pod of that Deployment.
fn resolved_env(settings: &WaypointSettings) -> Vec<(String, String)> {
    let objects = desired_objects(&waypoint_gateway(), settings)
        .unwrap()
        .unwrap();
    let pod = objects.deployment.spec.template.spec.unwrap();
    pod.containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|var| {
            let value = match (var.value, var.value_from) {
                (Some(value), _) => value,
                (None, Some(from)) => match from.field_ref.unwrap().field_path.as_str() {
                    "metadata.name" => "waypoint-7d9c6b5f4-x2k8m".to_owned(),
                    "metadata.namespace" => "shop".to_owned(),
                    "spec.serviceAccountName" => "waypoint".to_owned(),
                    "spec.nodeName" => "node-1".to_owned(),
                    "status.podIP" => "10.244.1.7".to_owned(),
                    other => panic!("a field the test does not resolve: {other}"),
                },
                (None, None) => panic!("{} has no value", var.name),
            };
            (var.name, value)
        })
        .collect()
}

/// The waypoint's command line equivalent to `env`: each variable becomes
/// the flag that reads it. A variable no flag reads fails here.
fn as_waypoint_flags(env: &[(String, String)]) -> Vec<String> {
    let command = Args::command();
    let mut argv = vec!["waypoint".to_owned()];
    for (name, value) in env {
        let flag = command
            .get_arguments()
            .find(|arg| arg.get_env().is_some_and(|env| env == name.as_str()))
            .and_then(|arg| arg.get_long())
            .unwrap_or_else(|| panic!("the waypoint reads no variable {name}"));
        argv.push(format!("--{flag}={value}"));
    }
    argv
}

#[test]
fn a_deployed_waypoint_reads_every_variable_it_is_given() {
    let settings = WaypointSettings {
        trust_domain: "example.org".to_owned(),
        tracing: TracingSettings {
            otlp_endpoint: Some("http://jaeger-collector.istio-system:4317".to_owned()),
            sampling_percent: 12.5,
        },
        ..WaypointSettings::default()
    };
    let argv = as_waypoint_flags(&resolved_env(&settings));
    let args = Args::try_parse_from(&argv).unwrap_or_else(|error| panic!("{argv:?}: {error}"));
    args.validate().unwrap();
    assert_eq!(
        args.identity().unwrap().to_string(),
        "spiffe://example.org/ns/shop/sa/waypoint"
    );
    assert_eq!(args.ca_address(), "https://istiod.istio-system.svc:15012");
    assert_eq!(
        args.otlp_endpoint.as_deref(),
        Some("http://jaeger-collector.istio-system:4317")
    );
}

#[test]
fn tracing_off_is_also_accepted() {
    let argv = as_waypoint_flags(&resolved_env(&WaypointSettings::default()));
    let args = Args::try_parse_from(&argv).unwrap();
    args.validate().unwrap();
    assert_eq!(args.otlp_endpoint, None);
}

#[test]
fn a_variable_the_waypoint_does_not_read_is_noticed() {
    // The check above must be able to fail.
    let env = vec![("WAYPOINT_NO_SUCH_SETTING".to_owned(), "1".to_owned())];
    let result = std::panic::catch_unwind(|| as_waypoint_flags(&env));
    assert!(result.is_err());
}

//! The contract test: every JSON example of docs/ztunnel-admin.md parses
//! into its model type, read from the doc itself so that the two cannot
//! drift apart unnoticed.

use serde_json::json;

use super::*;

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/ztunnel-admin.md");

fn doc() -> String {
    std::fs::read_to_string(DOC_PATH)
        .unwrap_or_else(|error| panic!("cannot read {DOC_PATH}: {error}"))
}

/// Each ```json block of the doc with the heading it sits under.
fn json_examples() -> Vec<(String, String)> {
    let mut examples = Vec::new();
    let mut heading = String::new();
    let mut block: Option<String> = None;
    for line in doc().lines() {
        match &mut block {
            Some(text) if line.trim() == "```" => {
                examples.push((heading.clone(), std::mem::take(text)));
                block = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None if line.trim() == "```json" => block = Some(String::new()),
            None if line.starts_with('#') => {
                heading = line
                    .trim_start_matches('#')
                    .trim()
                    .trim_matches('`')
                    .to_owned();
            }
            None => {}
        }
    }
    assert!(block.is_none(), "a ```json block of the doc is not closed");
    examples
}

/// The example under `heading`.
fn example(heading: &str) -> String {
    json_examples()
        .into_iter()
        .find(|(h, _)| h == heading)
        .map(|(_, block)| block)
        .unwrap_or_else(|| panic!("docs/ztunnel-admin.md has no json example under `{heading}`"))
}

/// The `/config_dump` example with its `[ ...Pod ]` placeholders replaced
/// by the doc's own examples of each type.
fn config_dump_example() -> String {
    let mut dump = example("/config_dump");
    for name in [
        "Pod",
        "Workload",
        "Service",
        "Policy",
        "Certificate",
        "Connection",
    ] {
        let placeholder = format!("...{name}");
        assert!(
            dump.contains(&placeholder),
            "no `{placeholder}` in the config_dump example"
        );
        dump = dump.replace(&placeholder, &example(name));
    }
    dump
}

#[test]
fn every_json_example_of_the_doc_parses_into_its_type() {
    let examples = json_examples();
    let headings: Vec<&str> = examples.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(
        headings,
        [
            "/config_dump",
            "Pod",
            "Workload",
            "Service",
            "Policy",
            "Certificate",
            "Connection"
        ],
        "the doc's examples changed: give each new one a model type and a case below"
    );
    for (heading, block) in &examples {
        let parsed = match heading.as_str() {
            "/config_dump" => serde_json::from_str::<ConfigDump>(&config_dump_example()).map(drop),
            "Pod" => serde_json::from_str::<Pod>(block).map(drop),
            "Workload" => serde_json::from_str::<Workload>(block).map(drop),
            "Service" => serde_json::from_str::<Service>(block).map(drop),
            "Policy" => serde_json::from_str::<Policy>(block).map(drop),
            "Certificate" => serde_json::from_str::<Certificate>(block).map(drop),
            "Connection" => serde_json::from_str::<Connection>(block).map(drop),
            other => panic!("no model type for the example under `{other}`"),
        };
        if let Err(error) = parsed {
            panic!("the `{heading}` example does not parse: {error}\n{block}");
        }
    }
}

#[test]
fn the_config_dump_example_reads_as_documented() {
    let dump: ConfigDump = serde_json::from_str(&config_dump_example()).unwrap();
    assert_eq!(dump.node, "node-1");
    let cp = &dump.control_plane;
    assert_eq!(cp.address, "https://127.0.0.1:15012");
    assert!(cp.connected && cp.synced);
    assert_eq!(cp.since.as_deref(), Some("2026-12-01T08:10:00Z"));
    assert_eq!(cp.config_version.as_deref(), Some("17"));
    assert_eq!((cp.responses, cp.nacks), (12, 0));
    assert_eq!(cp.last_error, None);
    assert_eq!(dump.pods.len(), 1);
    assert_eq!(dump.workloads.len(), 1);
    assert_eq!(dump.services.len(), 1);
    assert_eq!(dump.policies.len(), 1);
    assert_eq!(dump.certificates.len(), 1);
    assert_eq!(dump.connections.len(), 1);
}

#[test]
fn the_type_examples_read_as_documented() {
    let pod: Pod = serde_json::from_str(&example("Pod")).unwrap();
    assert_eq!(pod.uid, "Kubernetes//Pod/demo/backend-v1");
    assert_eq!(pod.addresses, ["10.20.1.4"]);
    assert_eq!(
        pod.capture.as_deref(),
        Some("netns /var/run/netns/demo-backend-v1")
    );
    assert_eq!(pod.state, PodState::Captured);
    assert_eq!(pod.error, None);

    let w: Workload = serde_json::from_str(&example("Workload")).unwrap();
    assert_eq!(
        (w.namespace.as_str(), w.name.as_str()),
        ("demo", "backend-v1")
    );
    assert_eq!(w.protocol, "HBONE");
    assert_eq!(
        w.identity.as_deref(),
        Some("spiffe://cluster.local/ns/demo/sa/backend")
    );
    assert_eq!(w.waypoint, None);
    assert_eq!(w.node.as_deref(), Some("node-1"));
    assert_eq!(w.authorization_policies, ["demo/allow-frontend"]);
    assert!(w.healthy);
    let ports = &w.services["demo/backend.demo.svc.cluster.local"];
    assert_eq!((ports[0].service_port, ports[0].target_port), (80, 8080));
    assert!(
        w.extra.is_empty(),
        "every documented field is modelled: {:?}",
        w.extra
    );

    let s: Service = serde_json::from_str(&example("Service")).unwrap();
    assert_eq!(s.hostname, "backend.demo.svc.cluster.local");
    assert_eq!(s.vips[0].ip, "10.96.0.10");
    assert_eq!(s.ports, [(80, 8080)]);
    assert!(s.extra.is_empty(), "{:?}", s.extra);

    let p: Policy = serde_json::from_str(&example("Policy")).unwrap();
    assert_eq!(
        (p.scope.as_str(), p.action.as_str(), p.dry_run),
        ("WORKLOAD_SELECTOR", "ALLOW", false)
    );
    let m = &p.groups[0][0][0];
    assert_eq!(
        m.principals,
        [StringMatch::Exact(
            "cluster.local/ns/demo/sa/frontend".into()
        )]
    );
    assert!(m.namespaces.is_empty());
    // The doc's `"...": []` placeholder: kept, not a parse failure.
    assert_eq!(m.extra.get("..."), Some(&json!([])));

    let c: Certificate = serde_json::from_str(&example("Certificate")).unwrap();
    assert_eq!(c.state, CertState::Available);
    assert_eq!(c.not_after.as_deref(), Some("2026-12-02T08:10:01Z"));

    let c: Connection = serde_json::from_str(&example("Connection")).unwrap();
    assert_eq!(
        (c.id, &c.direction, c.protocol.as_str()),
        (42, &Direction::Inbound, "HBONE")
    );
    assert_eq!(c.dst_addr.as_deref(), Some("10.20.1.4:8080"));
    assert_eq!(
        c.dst_service.as_deref(),
        Some("backend.demo.svc.cluster.local")
    );
}

/// The two waypoint forms the doc gives inline, in backticks.
#[test]
fn the_waypoint_forms_of_the_doc_parse() {
    let doc = doc();
    let forms: Vec<&str> = doc
        .split('`')
        .filter(|span| span.starts_with("{\"destination\""))
        .collect();
    assert_eq!(
        forms.len(),
        2,
        "the doc shows a Hostname and an Address waypoint"
    );
    let shown: Vec<String> = forms
        .iter()
        .map(|form| {
            serde_json::from_str::<GatewayAddress>(form)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        shown,
        ["waypoint.demo.svc.cluster.local:15008", "10.20.1.9:15008"]
    );
}

#[test]
fn string_matches_of_every_documented_form() {
    let matches: Vec<StringMatch> = serde_json::from_value(json!([
        {"Exact": "a"}, {"Prefix": "b"}, {"Suffix": "c"}, "Presence"
    ]))
    .unwrap();
    let shown: Vec<String> = matches.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["a", "b*", "*c", "*"]);
}

#[test]
fn fields_and_states_added_later_survive_a_round_trip() {
    let sent = json!({
        "identity": "spiffe://cluster.local/ns/demo/sa/backend",
        "state": "rotating",
        "error": null,
        "serial": null,
        "not_before": null,
        "not_after": null,
        "key_algorithm": "ECDSA_P256"
    });
    let cert: Certificate = serde_json::from_value(sent.clone()).unwrap();
    assert_eq!(cert.state, CertState::Other("rotating".into()));
    assert_eq!(cert.state.to_string(), "rotating");
    assert_eq!(cert.extra["key_algorithm"], "ECDSA_P256");
    assert_eq!(serde_json::to_value(&cert).unwrap(), sent);
}

#[test]
fn absent_or_null_lists_are_empty_and_nulls_are_none() {
    let dump: ConfigDump = serde_json::from_value(json!({
        "node": "node-1",
        "control_plane": {
            "address": "https://istiod:15012", "connected": false, "since": null,
            "synced": false, "config_version": null, "responses": 0, "nacks": 0,
            "last_error": "connection refused"
        },
        "pods": [{
            "uid": "Kubernetes//Pod/demo/worker", "name": "worker", "namespace": "demo",
            "addresses": null, "capture": null, "state": "failed",
            "error": "no network namespace has 10.20.1.7", "since": "2026-12-01T08:10:01Z"
        }],
        "workloads": null
    }))
    .unwrap();
    assert!(dump.workloads.is_empty() && dump.connections.is_empty());
    assert_eq!(dump.control_plane.since, None);
    assert_eq!(
        dump.control_plane.last_error.as_deref(),
        Some("connection refused")
    );
    let pod = &dump.pods[0];
    assert_eq!(
        (pod.capture.as_deref(), &pod.state),
        (None, &PodState::Failed)
    );
    assert!(pod.addresses.is_empty());
}

#[test]
fn service_account_matches_of_unknown_shape_are_kept() {
    let m: Match = serde_json::from_value(json!({
        "service_accounts": [{"namespace": "demo", "service_account": "frontend"}, "demo/legacy"]
    }))
    .unwrap();
    let shown: Vec<String> = m.service_accounts.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["demo/frontend", "\"demo/legacy\""]);
}

#[test]
fn the_config_dump_example_round_trips_losslessly() {
    let mut sent: serde_json::Value = serde_json::from_str(&config_dump_example()).unwrap();
    let dump: ConfigDump = serde_json::from_value(sent.clone()).unwrap();
    // The doc abbreviates the policy match; ztunnel sends every field, and
    // meshctl prints an absent one as empty.
    let m = &mut sent["policies"][0]["groups"][0][0][0];
    for field in [
        "not_namespaces",
        "not_principals",
        "service_accounts",
        "not_service_accounts",
        "source_ips",
        "not_source_ips",
        "destination_ips",
        "not_destination_ips",
        "destination_ports",
        "not_destination_ports",
    ] {
        if m.get(field).is_none() {
            m[field] = json!([]);
        }
    }
    assert_eq!(serde_json::to_value(&dump).unwrap(), sent);

    // YAML keeps JSON's shape: enums are maps, never YAML tags.
    let yaml = serde_yaml_ng::to_string(&dump).unwrap();
    assert!(!yaml.contains('!'), "{yaml}");
    let from_yaml: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(from_yaml, sent);
}

#[test]
fn both_waypoint_forms_and_presence_serialize_as_in_json() {
    for sent in [
        json!({"destination": {"Hostname": {"namespace": "demo", "hostname": "w.demo"}}, "hbone_port": 15008}),
        json!({"destination": {"Address": {"network": "", "ip": "10.20.1.9"}}, "hbone_port": 15008}),
    ] {
        let waypoint: GatewayAddress = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!(serde_json::to_value(&waypoint).unwrap(), sent);
    }
    let sent = json!([{"Exact": "a"}, {"Prefix": "b"}, {"Suffix": "c"}, "Presence"]);
    let matches: Vec<StringMatch> = serde_json::from_value(sent.clone()).unwrap();
    assert_eq!(serde_json::to_value(&matches).unwrap(), sent);
    assert_eq!(
        serde_yaml_ng::to_string(&matches).unwrap(),
        "- Exact: a\n- Prefix: b\n- Suffix: c\n- Presence\n"
    );
}

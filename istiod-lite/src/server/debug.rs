//! `/debug/config_dump` and `/debug/diagnostics`: what is being served and
//! why, as JSON.
//!
//! The config dump reads the xDS store, not the pipeline: it shows exactly
//! what clients receive, with the versions they ACK. Generated protobuf
//! types do not derive `Serialize`, so each resource is shown as a few key
//! fields (enough to find a workload by name, IP or node) plus its full
//! `Debug` text.

use std::net::IpAddr;

use prost::Message;
use proto::security::Authorization;
use proto::workload::{Address, NetworkAddress, address};
use proto::{
    ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, WAYPOINT_AUTHORIZATION_TYPE_URL,
    WAYPOINT_BACKEND_POLICY_TYPE_URL, WAYPOINT_FAULTS_TYPE_URL, WAYPOINT_ROUTES_TYPE_URL,
};
use serde_json::{Value, json};
use xds::ResourceStore;

use crate::pipeline::PipelineStatus;
use crate::translate::{ResourceType, Severity};

/// Every pushed resource, by type URL.
pub(super) fn config_dump(store: &ResourceStore) -> Value {
    let revision = store.revision();
    let dump = |type_url: &str, view: fn(&[u8]) -> Value| -> Vec<Value> {
        store
            .versions(type_url)
            .into_iter()
            .filter_map(|(name, version)| {
                // Gone between listing and reading: it is in the next dump.
                let resource = store.get(type_url, &name)?;
                let mut entry = view(&resource.body.value);
                if let Value::Object(fields) = &mut entry {
                    fields.insert("name".into(), json!(name));
                    fields.insert("version".into(), json!(version));
                }
                Some(entry)
            })
            .collect()
    };
    json!({
        "revision": revision,
        "resources": {
            ADDRESS_TYPE_URL: dump(ADDRESS_TYPE_URL, address_view),
            AUTHORIZATION_TYPE_URL: dump(AUTHORIZATION_TYPE_URL, authorization_view),
        },
    })
}

/// Translation diagnostics and source problems.
pub(super) fn diagnostics(status: &PipelineStatus) -> Value {
    let diagnostics: Vec<Value> = status
        .diagnostics
        .iter()
        .map(|d| {
            json!({
                "severity": match d.severity {
                    Severity::Info => "info",
                    Severity::Warning => "warning",
                },
                "resource_type": match d.resource_type {
                    ResourceType::Address => ADDRESS_TYPE_URL,
                    ResourceType::Authorization => AUTHORIZATION_TYPE_URL,
                    ResourceType::WaypointRoutes => WAYPOINT_ROUTES_TYPE_URL,
                    ResourceType::WaypointAuthorization => WAYPOINT_AUTHORIZATION_TYPE_URL,
                    ResourceType::WaypointFaults => WAYPOINT_FAULTS_TYPE_URL,
                    ResourceType::WaypointBackendPolicy => WAYPOINT_BACKEND_POLICY_TYPE_URL,
                },
                "resource": d.resource,
                "object": d.object.to_string(),
                "message": d.message,
            })
        })
        .collect();
    json!({
        "synced": status.synced,
        "pushed": status.pushed,
        "objects": status.objects,
        "diagnostics": diagnostics,
        "source_problems": *status.problems,
    })
}

fn address_view(bytes: &[u8]) -> Value {
    let address = match Address::decode(bytes) {
        Ok(address) => address,
        Err(error) => return json!({ "decode_error": error.to_string() }),
    };
    match &address.r#type {
        Some(address::Type::Workload(w)) => json!({
            "kind": "workload",
            "uid": w.uid,
            "workload_name": w.name,
            "namespace": w.namespace,
            "addresses": w.addresses.iter().map(|a| ip_text(a)).collect::<Vec<_>>(),
            "node": w.node,
            "service_account": w.service_account,
            "services": w.services.keys().collect::<Vec<_>>(),
            "text": format!("{w:?}"),
        }),
        Some(address::Type::Service(s)) => json!({
            "kind": "service",
            "hostname": s.hostname,
            "namespace": s.namespace,
            "addresses": s.addresses.iter().map(network_address_text).collect::<Vec<_>>(),
            "text": format!("{s:?}"),
        }),
        None => json!({ "kind": "empty" }),
    }
}

fn authorization_view(bytes: &[u8]) -> Value {
    match Authorization::decode(bytes) {
        Ok(policy) => json!({
            "policy_name": policy.name,
            "namespace": policy.namespace,
            "text": format!("{policy:?}"),
        }),
        Err(error) => json!({ "decode_error": error.to_string() }),
    }
}

fn network_address_text(address: &NetworkAddress) -> String {
    let ip = ip_text(&address.address);
    if address.network.is_empty() {
        ip
    } else {
        format!("{}/{ip}", address.network)
    }
}

/// An address as text: IPv4 or IPv6 when it has the length of one, hex
/// otherwise (translation never produces that, but a dump must not fail).
fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .map_or_else(|_| String::new(), |b| IpAddr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .map_or_else(|_| String::new(), |b| IpAddr::from(b).to_string()),
        _ => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

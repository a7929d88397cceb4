//! Istio `VirtualService` `fault` to the waypoint's `WaypointFaults`, one
//! resource per service, named `<hostname>`.
//!
//! Only fault injection is read from a VirtualService: HTTPRoute routes.
//! Each `http` entry becomes a `FaultRule` with its matches and its fault
//! (entries without a fault too, because the first matching entry decides
//! in Istio, so an entry without a fault shields the ones after it). Every
//! other field of an entry (`route`, `redirect`, `rewrite`, `retries`,
//! `timeout`, mirrors, CORS, header edits), and `gateways`, `tcp`, `tls`
//! are reported as not applied, never dropped silently.
//!
//! `hosts` name services: a short name (in the VirtualService's namespace),
//! `name.ns`, `name.ns.svc`, or the fully qualified name. Wildcards and
//! names that are not a Service of the mesh are ignored with a warning; so
//! is a Service that does not use a waypoint, since nothing would inject
//! its faults. When several VirtualServices name one service, the oldest
//! (then the first by namespace and name) wins, as Istio picks, and the
//! others are reported.
//!
//! What cannot be sent as written fails small and leaves a warning: a
//! `match` with a condition the waypoint does not evaluate (`port`,
//! `queryParams`, `sourceLabels`, ...) or an invalid one is left out,
//! because the match without it would be wider; an entry whose matches
//! are all left out is left out. An invalid or unsupported delay or abort
//! (`http2Error`, `exponentialDelay`) is dropped alone. A `grpcStatus`
//! abort goes as Istio sends it to Envoy: HTTP 200 with that gRPC status,
//! which a gRPC request gets as its `grpc-status`.
//! A percentage left unset is 100, as in Istio.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use proto::waypoint as pb;
use proto::waypoint::fault_string_match::Kind as StringKind;

use super::notes::Notes;
use super::service::hostname;
use super::waypoint_authz::services_with_waypoints;
use super::{Diagnostic, Index, MeshConfig, ResourceType};
use crate::model::{
    FaultAbort, FaultDelay, HttpFaultInjection, HttpMatchRequest, IstioStringMatch, ObjectKey,
    ObjectKind, Percent, VirtualService, VirtualServiceHttpRoute,
};

/// The waypoint faults of a whole index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaypointFaultsTranslated {
    /// By resource name, the service's hostname.
    pub faults: BTreeMap<String, pb::WaypointFaults>,
    /// Sorted, so two translations of the same input compare equal.
    pub diagnostics: Vec<Diagnostic>,
}

/// Translates every `VirtualService` in `index`.
pub fn translate_waypoint_faults(index: &Index, config: &MeshConfig) -> WaypointFaultsTranslated {
    let served = services_with_waypoints(index);
    let mut diagnostics = Vec::new();
    // The oldest VirtualService first, so the first to claim a host keeps it.
    let mut virtual_services: Vec<&VirtualService> = index.virtual_services(None).collect();
    virtual_services.sort_by(|a, b| {
        let key = |vs: &VirtualService| {
            (
                vs.metadata.creation_timestamp.clone().map(|t| t.0),
                vs.metadata.namespace.clone(),
                vs.metadata.name.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    let mut faults = BTreeMap::new();
    for vs in virtual_services {
        let namespace = vs.metadata.namespace.as_deref().unwrap_or("default");
        let name = vs.metadata.name.as_deref().unwrap_or_default();
        let resource = format!("{namespace}/{name}");
        let mut notes = Notes::new(
            ResourceType::WaypointFaults,
            ObjectKey::new(ObjectKind::VirtualService, namespace, name),
            &mut diagnostics,
        );
        let mut targets = Vec::new();
        for host in &vs.spec.hosts {
            let Some((svc_namespace, svc_name)) = service_of_host(config, namespace, host) else {
                notes.warn(format!(
                    "host {host:?} is not a service name (short, name.namespace, or \
                     name.namespace.svc.{}); wildcards and external hosts are not supported, so \
                     it is ignored",
                    config.cluster_domain
                ));
                continue;
            };
            let fqdn = hostname(config, &svc_namespace, &svc_name);
            if index.service(&svc_namespace, &svc_name).is_none() {
                notes.warn(format!(
                    "host {host:?} ({fqdn}) is not a Service of the mesh; it is ignored"
                ));
            } else if !served.contains_key(&(svc_namespace.clone(), svc_name.clone())) {
                notes.warn(format!(
                    "Service {svc_namespace}/{svc_name} does not use a waypoint, so nothing \
                     injects these faults for it; label it (or its namespace) istio.io/use-waypoint"
                ));
            } else if let Some(owner) = claimed.get(&fqdn) {
                notes.warn(format!(
                    "VirtualService {owner} already applies to {fqdn} and is older; this one is \
                     ignored for it (merge the two, or remove one)"
                ));
            } else {
                claimed.insert(fqdn.clone(), resource.clone());
                targets.push(fqdn);
            }
        }
        if targets.is_empty() {
            continue;
        }
        let rules = convert_virtual_service(vs, &resource, &mut notes);
        for fqdn in targets {
            let resource = pb::WaypointFaults {
                hostname: fqdn.clone(),
                rules: rules.clone(),
            };
            faults.insert(fqdn, resource);
        }
    }
    diagnostics.sort();
    WaypointFaultsTranslated {
        faults,
        diagnostics,
    }
}

/// The namespace and name of the Service a `hosts` entry names, if it has
/// the shape of a service name.
pub(super) fn service_of_host(
    config: &MeshConfig,
    namespace: &str,
    host: &str,
) -> Option<(String, String)> {
    if host.contains('*') || host.is_empty() {
        return None;
    }
    let fqdn_suffix = format!(".svc.{}", config.cluster_domain);
    let trimmed = host
        .strip_suffix(&fqdn_suffix)
        .or_else(|| host.strip_suffix(".svc"))
        .unwrap_or(host);
    let parts: Vec<&str> = trimmed.split('.').collect();
    match parts.as_slice() {
        [name] if trimmed.len() == host.len() => Some((namespace.to_string(), name.to_string())),
        [name, service_namespace] => Some((service_namespace.to_string(), name.to_string())),
        _ => None,
    }
}

/// The fault rules of one VirtualService, reporting what is not applied.
fn convert_virtual_service(
    vs: &VirtualService,
    resource: &str,
    notes: &mut Notes<'_>,
) -> Vec<pb::FaultRule> {
    if !vs.spec.gateways.is_empty() {
        notes.warn(
            "`gateways` is not supported: the rules apply to the waypoint of each host, as for \
             `mesh`"
                .into(),
        );
    }
    for (field, set) in [
        ("tcp", vs.spec.tcp.is_some()),
        ("tls", vs.spec.tls.is_some()),
    ] {
        if set {
            notes.warn(format!(
                "`{field}` rules are not supported by the waypoint; they are ignored"
            ));
        }
    }
    let mut rules = Vec::new();
    for (position, entry) in vs.spec.http.iter().enumerate() {
        let label = match &entry.name {
            Some(name) => format!("http {position} ({name})"),
            None => format!("http {position}"),
        };
        report_routing_fields(entry, &label, notes);
        let mut matches = Vec::new();
        for (match_position, condition) in entry.matches.iter().enumerate() {
            match convert_match(condition) {
                Ok(converted) => matches.push(converted),
                Err(why) => notes.warn(format!(
                    "{label} match {match_position}: {why}; this match is left out"
                )),
            }
        }
        if !entry.matches.is_empty() && matches.is_empty() {
            notes.warn(format!(
                "{label}: no match is usable, so the entry is left out (its requests go on to \
                 the next entries)"
            ));
            continue;
        }
        let fault = entry
            .fault
            .as_ref()
            .and_then(|fault| convert_fault(fault, &label, notes));
        rules.push(pb::FaultRule {
            source: format!("{resource} {label}"),
            matches,
            fault,
        });
    }
    rules
}

/// Warns about each field of an `http` entry that the waypoint does not
/// apply.
fn report_routing_fields(entry: &VirtualServiceHttpRoute, label: &str, notes: &mut Notes<'_>) {
    let fields = [
        ("route", entry.route.is_some()),
        ("redirect", entry.redirect.is_some()),
        ("directResponse", entry.direct_response.is_some()),
        ("delegate", entry.delegate.is_some()),
        ("rewrite", entry.rewrite.is_some()),
        ("timeout", entry.timeout.is_some()),
        ("retries", entry.retries.is_some()),
        ("mirror", entry.mirror.is_some()),
        ("mirrors", entry.mirrors.is_some()),
        ("mirrorPercentage", entry.mirror_percentage.is_some()),
        ("corsPolicy", entry.cors_policy.is_some()),
        ("headers", entry.headers.is_some()),
    ];
    for (field, _) in fields.iter().filter(|(_, set)| *set) {
        notes.warn(format!(
            "{label}: `{field}` is not applied: the waypoint reads only `match` and `fault` from \
             a VirtualService; route with an HTTPRoute instead"
        ));
    }
}

fn convert_match(condition: &HttpMatchRequest) -> Result<pb::FaultMatch, String> {
    let unsupported = [
        ("scheme", condition.scheme.is_some()),
        ("authority", condition.authority.is_some()),
        ("port", condition.port.is_some()),
        ("sourceLabels", condition.source_labels.is_some()),
        ("gateways", condition.gateways.is_some()),
        ("queryParams", condition.query_params.is_some()),
        ("ignoreUriCase", condition.ignore_uri_case.is_some()),
        ("withoutHeaders", condition.without_headers.is_some()),
        ("sourceNamespace", condition.source_namespace.is_some()),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(format!(
            "`{field}` is not supported (only uri, method and headers are)"
        ));
    }
    let uri = condition
        .uri
        .as_ref()
        .map(|m| string_match("uri", m))
        .transpose()?;
    let method = condition
        .method
        .as_ref()
        .map(|m| string_match("method", m))
        .transpose()?;
    let mut headers = Vec::new();
    for (name, value) in &condition.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!(
                "header name {name:?} is not a valid HTTP header name"
            ));
        }
        headers.push(pb::FaultHeaderMatch {
            name: name.clone(),
            value: Some(string_match(&format!("header {name}"), value)?),
        });
    }
    Ok(pb::FaultMatch {
        uri,
        headers,
        method,
    })
}

fn string_match(field: &str, m: &IstioStringMatch) -> Result<pb::FaultStringMatch, String> {
    let kind = match (&m.exact, &m.prefix, &m.regex) {
        (Some(exact), None, None) => StringKind::Exact(exact.clone()),
        (None, Some(prefix), None) => StringKind::Prefix(prefix.clone()),
        (None, None, Some(pattern)) => {
            if regex::Regex::new(pattern).is_err() {
                return Err(format!(
                    "the {field} regex {pattern:?} does not compile; write it in RE2 syntax"
                ));
            }
            StringKind::Regex(pattern.clone())
        }
        _ => {
            return Err(format!(
                "{field} must set exactly one of exact, prefix and regex"
            ));
        }
    };
    Ok(pb::FaultStringMatch { kind: Some(kind) })
}

fn convert_fault(
    fault: &HttpFaultInjection,
    label: &str,
    notes: &mut Notes<'_>,
) -> Option<pb::Fault> {
    let delay = fault.delay.as_ref().and_then(|delay| {
        convert_delay(delay)
            .map_err(|why| notes.warn(format!("{label} fault.delay: {why}; the delay is dropped")))
            .ok()
    });
    let abort = fault.abort.as_ref().and_then(|abort| {
        convert_abort(abort)
            .map_err(|why| notes.warn(format!("{label} fault.abort: {why}; the abort is dropped")))
            .ok()
    });
    if delay.is_none() && abort.is_none() {
        if fault.delay.is_none() && fault.abort.is_none() {
            notes.warn(format!("{label}: `fault` sets neither delay nor abort"));
        }
        return None;
    }
    Some(pb::Fault { delay, abort })
}

fn convert_delay(delay: &FaultDelay) -> Result<pb::FaultDelay, String> {
    if delay.exponential_delay.is_some() {
        return Err(
            "exponentialDelay is not supported (Istio does not implement it either)".into(),
        );
    }
    let Some(text) = &delay.fixed_delay else {
        return Err("fixedDelay is not set".into());
    };
    Ok(pb::FaultDelay {
        fixed_delay: Some(duration("fixedDelay", text)?),
        percentage: percentage(delay.percentage.as_ref(), delay.percent)?,
    })
}

fn convert_abort(abort: &FaultAbort) -> Result<pb::FaultAbort, String> {
    if abort.http2_error.is_some() {
        return Err("http2Error is not supported: abort with httpStatus or grpcStatus".into());
    }
    let percentage = percentage(abort.percentage.as_ref(), None)?;
    match (abort.http_status, &abort.grpc_status) {
        (Some(_), Some(_)) => Err("sets both httpStatus and grpcStatus: keep one".into()),
        (None, None) => Err("sets neither httpStatus nor grpcStatus".into()),
        (Some(status), None) => {
            let http_status = u32::try_from(status)
                .ok()
                .filter(|s| (200..=599).contains(s))
                .ok_or_else(|| format!("httpStatus {status} is not a status from 200 to 599"))?;
            Ok(pb::FaultAbort {
                http_status,
                percentage,
                grpc_status: None,
            })
        }
        // As Istio translates it for Envoy's fault filter, which then
        // aborts with HTTP 200 and this gRPC status.
        (None, Some(name)) => Ok(pb::FaultAbort {
            http_status: 200,
            percentage,
            grpc_status: Some(grpc_status_code(name)?),
        }),
    }
}

/// The code of a gRPC status name, as Istio's `SupportedGRPCStatus` reads
/// `grpcStatus` (upper case, as grpc/grpc `doc/statuscodes.md` names them).
fn grpc_status_code(name: &str) -> Result<u32, String> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES
        .iter()
        .position(|known| *known == name)
        .and_then(|code| u32::try_from(code).ok())
        .ok_or_else(|| {
            format!(
                "grpcStatus {name:?} is not a gRPC status: write its name as                  https://github.com/grpc/grpc/blob/master/doc/statuscodes.md spells it, e.g.                  UNAVAILABLE"
            )
        })
}

/// `percentage.value`, else the deprecated integer `percent`, else 100.
fn percentage(percentage: Option<&Percent>, percent: Option<i32>) -> Result<f64, String> {
    let value = match (percentage, percent) {
        (Some(p), _) => p.value,
        (None, Some(percent)) => f64::from(percent),
        (None, None) => 100.0,
    };
    if value.is_finite() && (0.0..=100.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("percentage {value} is not from 0 to 100"))
    }
}

/// A duration as Istio writes it: the protobuf JSON form (`0.2s`, `5s`),
/// or with `ms`, `m` or `h` (`200ms`), as Kubernetes users often do.
pub(super) fn duration(field: &str, text: &str) -> Result<prost_types::Duration, String> {
    let bad = || {
        format!(
            "{field} {text:?} is not a duration: write a number and a unit s, ms, m or h, \
             e.g. \"5s\", \"0.2s\", \"200ms\""
        )
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let total = number * seconds_per_unit;
    // A day bounds any sensible delay and keeps the conversion exact enough.
    if !(0.0..=86_400.0).contains(&total) {
        return Err(format!("{field} {text:?} is longer than a day"));
    }
    let nanos_total = (total * 1e9).round();
    // Both fit: at most 86,400 s, and the remainder is under 10^9.
    let duration = prost_types::Duration {
        seconds: (nanos_total / 1e9).trunc() as i64,
        nanos: (nanos_total % 1e9) as i32,
    };
    Ok(duration)
}

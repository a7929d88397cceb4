//! `HTTPRoute`s bound to Services (GAMMA) to the waypoint's
//! `WaypointRoutes`, one resource per service port, named
//! `<hostname>:<port>`.
//!
//! A route attaches through a parentRef of `group: ""`, `kind: Service` in
//! its own namespace (a producer route), to every port of that Service, or
//! to the one its `port` (or `sectionName`, a port name) selects. A service
//! port with no route attached gets no resource: the waypoint then forwards
//! everything, which is what "no route" means. Precedence is the
//! waypoint's: every attached route is sent, with its namespace, name and
//! creation timestamp, and the waypoint sorts.
//!
//! `waypoint.proto` does not default zero values, so the Gateway API
//! defaults are filled in here: a backend weight of 1, a redirect status of
//! 302, a mirror of every request, and, GAMMA's rule, a rule without
//! backendRefs goes to the parent service port itself.
//!
//! What cannot be sent as written fails small, and always leaves a warning:
//!
//! - a backendRef that does not resolve (no such Service or port, another
//!   kind, or another namespace) stays, with its weight, as an invalid
//!   backend: its share of requests gets 500, as the Gateway API says;
//! - a rule whose filters, timeouts or retry are invalid (or unsupported,
//!   like `ExtensionRef`) keeps its matches and loses its backends, so its
//!   requests get 500 instead of being served with part of their config
//!   ignored; a RequestMirror whose backend does not resolve is dropped
//!   alone, as the Gateway API asks;
//! - a rule whose matches are invalid is left out, since no match can
//!   stand in for it;
//! - a route whose parent Service does not exist yields nothing.
//!
//! Cross-namespace references are refused, not allowed: a backendRef to
//! another namespace needs a `ReferenceGrant`, which we do not read yet,
//! and a parentRef to another namespace's Service is a consumer route,
//! which applies only to that namespace's callers, and the waypoint (the
//! producer side) cannot tell callers apart that way.
//!
//! `hostnames` is not read: GAMMA routes match by their parent Service.
//! An object without `creationTimestamp` (the file source's, usually) is
//! sent as created at the Unix epoch, so it is deterministic and such
//! routes tie-break by name.

mod filters;
mod values;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use proto::waypoint::{self as pb, path_match, string_match, weighted_backend};

use self::filters::{check_path_modifiers, filters};
use self::values::{Invalid, invalid};
use super::{Diagnostic, Index, MeshConfig, ResourceType, Severity, service};
use crate::model::{
    BackendObjectReference, HTTPBackendRef, HTTPPathMatch, HTTPRoute, HTTPRouteMatch,
    HTTPRouteRetry, HTTPRouteRule, HTTPRouteTimeouts, ObjectKey, ObjectKind, ParentReference,
    PathMatchType, ValueMatchType,
};

/// Retries after the first attempt when a `retry` leaves `attempts` unset
/// (the Gateway API leaves it to the implementation): Istio's default.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;

/// The default group of a parentRef, which the CRD fills in.
const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";

/// The waypoint routes of a whole index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaypointRoutesTranslated {
    /// By resource name, `<hostname>:<port>`.
    pub routes: BTreeMap<String, pb::WaypointRoutes>,
    /// Sorted, so two translations of the same input compare equal.
    pub diagnostics: Vec<Diagnostic>,
}

/// A port of a Service that routes attach to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ServicePort {
    namespace: String,
    name: String,
    port: u16,
}

/// What one route is being translated for, and where its notes go.
struct Context<'a> {
    index: &'a Index,
    config: &'a MeshConfig,
    route_namespace: &'a str,
    object: ObjectKey,
    parent: &'a ServicePort,
    /// The resource name the diagnostics concern.
    resource: &'a str,
    diagnostics: &'a mut Vec<Diagnostic>,
}

/// Translates every `HTTPRoute` with a Service parent in `index`.
pub fn translate_waypoint_routes(index: &Index, config: &MeshConfig) -> WaypointRoutesTranslated {
    let mut diagnostics = Vec::new();
    let mut attached: BTreeMap<ServicePort, Vec<&HTTPRoute>> = BTreeMap::new();
    for route in index.http_routes(None) {
        for port in attachments(index, config, route, &mut diagnostics) {
            attached.entry(port).or_default().push(route);
        }
    }
    let mut routes = BTreeMap::new();
    for (parent, attached_routes) in &attached {
        let hostname = service::hostname(config, &parent.namespace, &parent.name);
        let resource = format!("{hostname}:{}", parent.port);
        let translated = attached_routes
            .iter()
            .map(|route| {
                let (namespace, name) = route_name(route);
                let mut cx = Context {
                    index,
                    config,
                    route_namespace: namespace,
                    object: ObjectKey::new(ObjectKind::HttpRoute, namespace, name),
                    parent,
                    resource: &resource,
                    diagnostics: &mut diagnostics,
                };
                translate_route(&mut cx, route)
            })
            .collect();
        routes.insert(
            resource,
            pb::WaypointRoutes {
                hostname,
                port: u32::from(parent.port),
                routes: translated,
            },
        );
    }
    diagnostics.sort();
    WaypointRoutesTranslated {
        routes,
        diagnostics,
    }
}

fn route_name(route: &HTTPRoute) -> (&str, &str) {
    let meta = &route.metadata;
    (
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default(),
    )
}

// === attachment ===

/// The service ports `route` attaches to, each once.
fn attachments(
    index: &Index,
    config: &MeshConfig,
    route: &HTTPRoute,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeSet<ServicePort> {
    let (namespace, name) = route_name(route);
    let object = ObjectKey::new(ObjectKind::HttpRoute, namespace, name);
    let mut ports = BTreeSet::new();
    for parent in &route.spec.parent_refs {
        let parent_ns = parent.namespace.as_deref().unwrap_or(namespace);
        let hostname = service::hostname(config, parent_ns, &parent.name);
        let resource = match parent.port {
            Some(port) => format!("{hostname}:{port}"),
            None => hostname,
        };
        let mut note = |severity, message: String| {
            diagnostics.push(diagnostic(&resource, severity, object.clone(), message));
        };
        let kind = parent.kind.as_deref().unwrap_or("Gateway");
        if kind != "Service" {
            continue;
        }
        match parent.group.as_deref() {
            Some("") => {}
            None => {
                note(
                    Severity::Warning,
                    format!(
                        "parentRef to Service {:?} has no group, so the group is {GATEWAY_API_GROUP} \
                         and it names no Service: write `group: \"\"` to attach to the Service",
                        parent.name
                    ),
                );
                continue;
            }
            // Another group's kind that happens to be called Service.
            Some(_) => continue,
        }
        if parent_ns != namespace {
            note(
                Severity::Warning,
                format!(
                    "parentRef to Service {parent_ns}/{} in another namespace makes a consumer \
                     route, which waypoints do not apply; put the route in namespace {parent_ns}",
                    parent.name
                ),
            );
            continue;
        }
        let Some(svc) = index.service(parent_ns, &parent.name) else {
            note(
                Severity::Warning,
                format!(
                    "parent Service {parent_ns}/{} does not exist; the route is not applied",
                    parent.name
                ),
            );
            continue;
        };
        let selected: Vec<u16> = service_ports(svc)
            .into_iter()
            .filter(|(port_name, port)| selects(parent, port_name.as_deref(), *port))
            .map(|(_, port)| port)
            .collect();
        if selected.is_empty() {
            note(
                Severity::Warning,
                format!(
                    "parent Service {parent_ns}/{} has no port{}; the route is not applied",
                    parent.name,
                    port_selector(parent)
                ),
            );
        }
        ports.extend(selected.into_iter().map(|port| ServicePort {
            namespace: parent_ns.to_string(),
            name: parent.name.clone(),
            port,
        }));
    }
    ports
}

/// Whether `parent` selects the service port `port` named `port_name`.
fn selects(parent: &ParentReference, port_name: Option<&str>, port: u16) -> bool {
    parent.port.is_none_or(|wanted| wanted == port)
        && parent
            .section_name
            .as_deref()
            .is_none_or(|wanted| port_name == Some(wanted))
}

fn port_selector(parent: &ParentReference) -> String {
    match (parent.port, parent.section_name.as_deref()) {
        (None, None) => String::new(),
        (Some(port), None) => format!(" {port}"),
        (None, Some(name)) => format!(" named {name:?}"),
        (Some(port), Some(name)) => format!(" {port} named {name:?}"),
    }
}

/// The valid ports of a Service, with their names.
fn service_ports(svc: &Service) -> Vec<(Option<String>, u16)> {
    svc.spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .filter_map(|port| {
            let number = u16::try_from(port.port).ok().filter(|p| *p != 0)?;
            Some((port.name.clone(), number))
        })
        .collect()
}

// === routes and rules ===

fn translate_route(cx: &mut Context<'_>, route: &HTTPRoute) -> pb::Route {
    let (namespace, name) = route_name(route);
    let creation_timestamp = match &route.metadata.creation_timestamp {
        Some(time) => prost_types::Timestamp {
            seconds: time.0.as_second(),
            nanos: time.0.subsec_nanosecond(),
        },
        // Deterministic, and the oldest possible: see the module comment.
        None => prost_types::Timestamp::default(),
    };
    let rules = route
        .spec
        .rules
        .iter()
        .enumerate()
        .filter_map(|(position, rule)| translate_rule(cx, position, rule))
        .collect();
    pb::Route {
        namespace: namespace.to_string(),
        name: name.to_string(),
        creation_timestamp: Some(creation_timestamp),
        rules,
    }
}

/// One rule; `None` when its matches are invalid.
fn translate_rule(cx: &mut Context<'_>, position: usize, rule: &HTTPRouteRule) -> Option<pb::Rule> {
    let rule_label = match &rule.name {
        Some(name) => format!("rule {position} ({name:?})"),
        None => format!("rule {position}"),
    };
    let matches = match rule.matches.iter().map(request_match).collect() {
        Ok(matches) => matches,
        Err(problem) => {
            cx.warn(format!("{rule_label}: {problem}; the rule is left out"));
            return None;
        }
    };
    let mut out = pb::Rule {
        name: rule.name.clone().unwrap_or_default(),
        matches,
        ..Default::default()
    };
    match rule_actions(cx, &rule_label, rule) {
        Ok((filters, backends, timeouts, retry)) => {
            out.filters = filters;
            out.backends = backends;
            out.timeouts = timeouts;
            out.retry = retry;
        }
        Err(problem) => cx.warn(format!(
            "{rule_label}: {problem}; requests it matches get 500 until it is fixed"
        )),
    }
    Some(out)
}

type RuleActions = (
    Vec<pb::Filter>,
    Vec<pb::WeightedBackend>,
    Option<pb::Timeouts>,
    Option<pb::Retry>,
);

/// Everything of a rule but its matches, or why the rule cannot be served.
fn rule_actions(
    cx: &mut Context<'_>,
    rule_label: &str,
    rule: &HTTPRouteRule,
) -> Result<RuleActions, Invalid> {
    let filters = filters(cx, rule_label, &rule.filters)?;
    check_path_modifiers(rule, &filters)?;
    let mut backends = Vec::with_capacity(rule.backend_refs.len().max(1));
    for (position, backend_ref) in rule.backend_refs.iter().enumerate() {
        let label = format!("{rule_label} backendRef {position}");
        let backend = weighted_backend(cx, &label, rule, backend_ref);
        backends.push(backend);
    }
    if rule.backend_refs.is_empty() {
        // GAMMA: a rule without backends sends requests to the parent.
        let parent = cx.parent;
        backends.push(pb::WeightedBackend {
            backend: Some(weighted_backend::Backend::Service(pb::ServiceRef {
                hostname: service::hostname(cx.config, &parent.namespace, &parent.name),
                port: u32::from(parent.port),
            })),
            weight: 1,
            filters: Vec::new(),
        });
    }
    let timeouts = rule.timeouts.as_ref().map(timeouts).transpose()?;
    let retry = rule.retry.as_ref().map(retry).transpose()?;
    Ok((filters, backends, timeouts, retry))
}

/// A backendRef: a Service port, or an invalid backend with its weight.
fn weighted_backend(
    cx: &mut Context<'_>,
    label: &str,
    rule: &HTTPRouteRule,
    backend_ref: &HTTPBackendRef,
) -> pb::WeightedBackend {
    let weight = backend_ref.weight.unwrap_or(1);
    let resolved = resolve_service(cx, &backend_ref.backend).and_then(|service| {
        let filters = filters(cx, label, &backend_ref.filters)?;
        check_path_modifiers(rule, &filters)?;
        Ok((service, filters))
    });
    match resolved {
        Ok((service, filters)) => pb::WeightedBackend {
            backend: Some(weighted_backend::Backend::Service(service)),
            weight,
            filters,
        },
        Err(Invalid(reason)) => {
            cx.warn(format!(
                "{label}: {reason}; its share of requests (weight {weight}) gets 500"
            ));
            pb::WeightedBackend {
                backend: Some(weighted_backend::Backend::Invalid(pb::InvalidBackend {
                    reason,
                })),
                weight,
                filters: Vec::new(),
            }
        }
    }
}

/// A reference to a port of a Service in the route's namespace.
fn resolve_service(
    cx: &Context<'_>,
    reference: &BackendObjectReference,
) -> Result<pb::ServiceRef, Invalid> {
    let group = reference.group.as_deref().unwrap_or("");
    let kind = reference.kind.as_deref().unwrap_or("Service");
    let name = &reference.name;
    if !group.is_empty() || kind != "Service" {
        let kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        return Err(invalid(format!(
            "backend {kind} {name:?} is not supported: only Services are"
        )));
    }
    let namespace = reference.namespace.as_deref().unwrap_or(cx.route_namespace);
    if namespace != cx.route_namespace {
        return Err(invalid(format!(
            "service \"{namespace}/{name}\" is in another namespace, which needs a ReferenceGrant, \
             and ReferenceGrants are not supported yet"
        )));
    }
    let Some(svc) = cx.index.service(namespace, name) else {
        return Err(invalid(format!("service \"{namespace}/{name}\" not found")));
    };
    let Some(port) = reference.port else {
        return Err(invalid(format!(
            "service \"{namespace}/{name}\" is referenced without a port, which a Service \
             backend requires"
        )));
    };
    if !service_ports(svc).iter().any(|(_, p)| *p == port) {
        return Err(invalid(format!(
            "service \"{namespace}/{name}\" has no port {port}"
        )));
    }
    Ok(pb::ServiceRef {
        hostname: service::hostname(cx.config, namespace, name),
        port: u32::from(port),
    })
}

// === matches ===

fn request_match(m: &HTTPRouteMatch) -> Result<pb::RequestMatch, Invalid> {
    let headers = m
        .headers
        .iter()
        .map(|h| {
            values::header_name(&h.name)?;
            Ok(pb::HeaderMatch {
                name: h.name.clone(),
                value: Some(string_match(h.match_type, "header", &h.value)?),
            })
        })
        .collect::<Result<_, Invalid>>()?;
    let query_params = m
        .query_params
        .iter()
        .map(|q| {
            if q.name.is_empty() {
                return Err(invalid("a query parameter match has an empty name"));
            }
            Ok(pb::QueryParamMatch {
                name: q.name.clone(),
                value: Some(string_match(q.match_type, "query parameter", &q.value)?),
            })
        })
        .collect::<Result<_, Invalid>>()?;
    if let Some(method) = &m.method {
        values::method(method)?;
    }
    Ok(pb::RequestMatch {
        path: m.path.as_ref().map(path_match).transpose()?,
        headers,
        query_params,
        method: m.method.clone().unwrap_or_default(),
    })
}

fn path_match(path: &HTTPPathMatch) -> Result<pb::PathMatch, Invalid> {
    let value = path.value.clone();
    let kind = match path.match_type {
        PathMatchType::Exact => {
            values::absolute_path("exact path", &value)?;
            path_match::Kind::Exact(value)
        }
        PathMatchType::PathPrefix => {
            values::absolute_path("path prefix", &value)?;
            path_match::Kind::Prefix(value)
        }
        PathMatchType::RegularExpression => {
            values::regex("path", &value)?;
            path_match::Kind::RegularExpression(value)
        }
    };
    Ok(pb::PathMatch { kind: Some(kind) })
}

fn string_match(
    match_type: ValueMatchType,
    what: &str,
    value: &str,
) -> Result<pb::StringMatch, Invalid> {
    let kind = match match_type {
        ValueMatchType::Exact => string_match::Kind::Exact(value.to_string()),
        ValueMatchType::RegularExpression => {
            values::regex(what, value)?;
            string_match::Kind::RegularExpression(value.to_string())
        }
    };
    Ok(pb::StringMatch { kind: Some(kind) })
}

// === timeouts and retry ===

fn timeouts(t: &HTTPRouteTimeouts) -> Result<pb::Timeouts, Invalid> {
    let request = t
        .request
        .as_deref()
        .map(|d| values::duration("timeouts.request", d))
        .transpose()?;
    let backend_request = t
        .backend_request
        .as_deref()
        .map(|d| values::duration("timeouts.backendRequest", d))
        .transpose()?;
    Ok(pb::Timeouts {
        request,
        backend_request,
    })
}

fn retry(r: &HTTPRouteRetry) -> Result<pb::Retry, Invalid> {
    if let Some(code) = r.codes.iter().find(|code| !(400..=599).contains(*code)) {
        return Err(invalid(format!(
            "retry code {code} is not an HTTP status code from 400 to 599"
        )));
    }
    Ok(pb::Retry {
        codes: r.codes.iter().map(|code| u32::from(*code)).collect(),
        attempts: r.attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
        backoff: r
            .backoff
            .as_deref()
            .map(|d| values::duration("retry.backoff", d))
            .transpose()?,
    })
}

// === impl Context ===

impl Context<'_> {
    fn warn(&mut self, message: String) {
        self.diagnostics.push(diagnostic(
            self.resource,
            Severity::Warning,
            self.object.clone(),
            message,
        ));
    }
}

fn diagnostic(
    resource: &str,
    severity: Severity,
    object: ObjectKey,
    message: String,
) -> Diagnostic {
    Diagnostic {
        resource_type: ResourceType::WaypointRoutes,
        resource: resource.to_string(),
        severity,
        object,
        message,
    }
}

#[cfg(test)]
mod tests;

//! A finished span as the code that made it describes it, and its
//! conversion into OTLP's messages, grouped under one resource and one
//! instrumentation scope per export. Pure: no clock, no I/O; the
//! generated types appear only in the conversion.

use std::time::{SystemTime, UNIX_EPOCH};

use proto::otlp::collector::ExportTraceServiceRequest;
use proto::otlp::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use proto::otlp::resource::Resource;
use proto::otlp::trace::{ResourceSpans, ScopeSpans, Span, Status, span, status};

/// W3C trace flag: the trace is recorded.
pub const FLAG_SAMPLED: u8 = 0x01;
/// OTLP span flags: whether the parent is remote is known (bit 8), and it
/// is (bit 9).
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    /// Whether the parent came from another process (a `traceparent`
    /// header) rather than from this one.
    pub parent_is_remote: bool,
    /// The W3C `tracestate`, passed on as received (empty when none).
    pub trace_state: String,
    /// The W3C trace flags of the span's context.
    pub flags: u8,
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<Attribute>,
    pub status: SpanStatus,
}

/// OTLP's span kinds that a proxy makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Handles a request from a client.
    Server,
    /// Sends a request to a server.
    Client,
    Internal,
}

/// Unset unless something failed: OTLP's "OK" is for an application that
/// overrides an error, which a proxy never does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SpanStatus {
    #[default]
    Unset,
    Error(String),
}

/// One attribute. Keys are the instrumentation's constants.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub key: &'static str,
    pub value: Value,
}

/// An attribute value, in the types OTLP carries that spans here use.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Int(i64),
    Bool(bool),
}

// === impl Attribute ===

impl Attribute {
    pub fn new(key: &'static str, value: impl Into<Value>) -> Self {
        Attribute {
            key,
            value: value.into(),
        }
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::String(value.to_owned())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::String(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<u16> for Value {
    fn from(value: u16) -> Self {
        Value::Int(value.into())
    }
}

impl From<u32> for Value {
    fn from(value: u32) -> Self {
        Value::Int(value.into())
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

/// Who sends the spans: the resource attributes (`service.name`, ...) and
/// the instrumentation scope, the same for every export of a process.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub resource: Vec<Attribute>,
    pub scope_name: String,
    pub scope_version: String,
}

/// One export call's message: every span of the batch under `origin`.
pub fn export_request(origin: &Origin, spans: Vec<SpanData>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: origin.resource.iter().map(key_value).collect(),
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: origin.scope_name.clone(),
                    version: origin.scope_version.clone(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.into_iter().map(otlp_span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn otlp_span(data: SpanData) -> Span {
    let remote = match (data.parent_span_id, data.parent_is_remote) {
        (Some(_), true) => HAS_IS_REMOTE | IS_REMOTE,
        _ => HAS_IS_REMOTE,
    };
    Span {
        trace_id: data.trace_id.to_vec(),
        span_id: data.span_id.to_vec(),
        trace_state: data.trace_state,
        parent_span_id: data.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        name: data.name,
        kind: match data.kind {
            SpanKind::Server => span::SpanKind::Server,
            SpanKind::Client => span::SpanKind::Client,
            SpanKind::Internal => span::SpanKind::Internal,
        } as i32,
        start_time_unix_nano: unix_nanos(data.start),
        end_time_unix_nano: unix_nanos(data.end),
        attributes: data.attributes.iter().map(key_value).collect(),
        status: match data.status {
            SpanStatus::Unset => None,
            SpanStatus::Error(message) => Some(Status {
                message,
                code: status::StatusCode::Error as i32,
            }),
        },
        flags: u32::from(data.flags) | remote,
        ..Span::default()
    }
}

fn key_value(attribute: &Attribute) -> KeyValue {
    let value = match &attribute.value {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Int(i) => any_value::Value::IntValue(*i),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
    };
    KeyValue {
        key: attribute.key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

/// Nanoseconds since the Unix epoch; 0 for a clock set before 1970,
/// which OTLP reads as "unknown".
fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn span(parent: Option<[u8; 8]>, remote: bool) -> SpanData {
        SpanData {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: parent,
            parent_is_remote: remote,
            trace_state: "k=v".into(),
            flags: FLAG_SAMPLED,
            name: "b.ns-b.svc.cluster.local:8080/*".into(),
            kind: SpanKind::Server,
            start: UNIX_EPOCH + Duration::from_nanos(1_000),
            end: UNIX_EPOCH + Duration::from_nanos(2_500),
            attributes: vec![
                Attribute::new("http.method", "GET"),
                Attribute::new("http.status_code", 503u16),
                Attribute::new("retry", true),
            ],
            status: SpanStatus::Error("upstream failed".into()),
        }
    }

    fn origin() -> Origin {
        Origin {
            resource: vec![Attribute::new("service.name", "waypoint.ns-b")],
            scope_name: "waypoint".into(),
            scope_version: "0.1.0".into(),
        }
    }

    #[test]
    fn a_batch_is_one_resource_and_one_scope_with_every_span() {
        let request = export_request(&origin(), vec![span(None, false), span(None, false)]);
        assert_eq!(request.resource_spans.len(), 1);
        let resource = &request.resource_spans[0];
        let attributes = &resource.resource.as_ref().unwrap().attributes;
        assert_eq!(attributes[0].key, "service.name");
        assert_eq!(
            attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("waypoint.ns-b".into()))
        );
        assert_eq!(resource.scope_spans.len(), 1);
        assert_eq!(
            resource.scope_spans[0].scope.as_ref().unwrap().name,
            "waypoint"
        );
        assert_eq!(resource.scope_spans[0].spans.len(), 2);
    }

    #[test]
    fn a_span_keeps_its_ids_times_kind_attributes_and_error() {
        let request = export_request(&origin(), vec![span(Some([3; 8]), true)]);
        let otlp = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(otlp.trace_id, vec![1; 16]);
        assert_eq!(otlp.span_id, vec![2; 8]);
        assert_eq!(otlp.parent_span_id, vec![3; 8]);
        assert_eq!(otlp.trace_state, "k=v");
        assert_eq!(otlp.kind, span::SpanKind::Server as i32);
        assert_eq!(
            (otlp.start_time_unix_nano, otlp.end_time_unix_nano),
            (1_000, 2_500)
        );
        assert_eq!(
            otlp.flags, 0x301,
            "sampled, with a parent known to be remote"
        );
        let values: Vec<_> = otlp
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap()))
            .collect();
        assert_eq!(
            values,
            [
                ("http.method", any_value::Value::StringValue("GET".into())),
                ("http.status_code", any_value::Value::IntValue(503)),
                ("retry", any_value::Value::BoolValue(true)),
            ]
        );
        let status = otlp.status.as_ref().unwrap();
        assert_eq!(status.code, status::StatusCode::Error as i32);
        assert_eq!(status.message, "upstream failed");
    }

    #[test]
    fn a_root_span_has_no_parent_and_a_local_parent_is_not_remote() {
        let request = export_request(&origin(), vec![span(None, true), span(Some([3; 8]), false)]);
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        assert!(spans[0].parent_span_id.is_empty());
        assert_eq!(spans[0].flags, 0x101);
        assert_eq!(spans[1].flags, 0x101);
        let mut unset = span(None, false);
        unset.status = SpanStatus::Unset;
        let request = export_request(&origin(), vec![unset]);
        assert!(
            request.resource_spans[0].scope_spans[0].spans[0]
                .status
                .is_none()
        );
    }
}

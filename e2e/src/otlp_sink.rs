//! What `otlp-sink` prints: each span of an OTLP export as one flat JSON
//! object, so that a test reads a trace with a line filter and
//! `serde_json`, without OTLP's nesting. Pure.
//!
//! ```json
//! {"trace_id":"4bf9...","span_id":"00f0...","parent_span_id":"","name":"...",
//!  "kind":"server","service_name":"waypoint.ns-b","status":"error",
//!  "status_message":"503 URX","attributes":{"http.status_code":503,...}}
//! ```
//!
//! Ids are lowercase hex (empty for no parent); `kind` is `server`,
//! `client`, `internal`, `producer`, `consumer` or `unspecified`; `status`
//! is `unset`, `ok` or `error`; attribute values keep their type.

use proto::otlp::collector::ExportTraceServiceRequest;
use proto::otlp::common::{AnyValue, KeyValue, any_value};
use proto::otlp::trace::{span, status};
use serde_json::{Map, Value, json};

/// One JSON object per span of `export`.
pub fn span_lines(export: &ExportTraceServiceRequest) -> Vec<Value> {
    let mut lines = Vec::new();
    for resource_spans in &export.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service_name = resource.get("service.name").cloned().unwrap_or(Value::Null);
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let (status, message) = match &span.status {
                    Some(s) => (
                        match status::StatusCode::try_from(s.code) {
                            Ok(status::StatusCode::Ok) => "ok",
                            Ok(status::StatusCode::Error) => "error",
                            _ => "unset",
                        },
                        s.message.as_str(),
                    ),
                    None => ("unset", ""),
                };
                lines.push(json!({
                    "trace_id": hex(&span.trace_id),
                    "span_id": hex(&span.span_id),
                    "parent_span_id": hex(&span.parent_span_id),
                    "trace_state": span.trace_state,
                    "flags": span.flags,
                    "name": span.name,
                    "kind": kind(span.kind),
                    "start_time_unix_nano": span.start_time_unix_nano,
                    "end_time_unix_nano": span.end_time_unix_nano,
                    "service_name": service_name,
                    "status": status,
                    "status_message": message,
                    "attributes": attributes(&span.attributes),
                }));
            }
        }
    }
    lines
}

fn kind(kind: i32) -> &'static str {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Server) => "server",
        Ok(span::SpanKind::Client) => "client",
        Ok(span::SpanKind::Internal) => "internal",
        Ok(span::SpanKind::Producer) => "producer",
        Ok(span::SpanKind::Consumer) => "consumer",
        _ => "unspecified",
    }
}

fn attributes(list: &[KeyValue]) -> Map<String, Value> {
    list.iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, value)))
        .collect()
}

fn value(value: &AnyValue) -> Value {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        Some(any_value::Value::BytesValue(b)) => json!(hex(b)),
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(self::value).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => Value::Object(attributes(&list.values)),
        None => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use proto::otlp::common::KeyValue;
    use proto::otlp::resource::Resource;
    use proto::otlp::trace::{ResourceSpans, ScopeSpans, Span, Status};

    use super::*;

    fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
        }
    }

    #[test]
    fn each_span_is_one_flat_object_with_its_resource_service_name() {
        let export = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", "waypoint.ns-b")],
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![ScopeSpans {
                    scope: None,
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0x01; 8],
                        parent_span_id: vec![],
                        name: "b:8080/*".into(),
                        kind: span::SpanKind::Server as i32,
                        attributes: vec![
                            string("http.method", "GET"),
                            KeyValue {
                                key: "http.status_code".into(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::IntValue(503)),
                                }),
                            },
                        ],
                        status: Some(Status {
                            message: "503 URX".into(),
                            code: status::StatusCode::Error as i32,
                        }),
                        ..Span::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let lines = span_lines(&export);
        assert_eq!(lines.len(), 1);
        let line = &lines[0];
        assert_eq!(line["trace_id"], "abababababababababababababababab");
        assert_eq!(line["span_id"], "0101010101010101");
        assert_eq!(line["parent_span_id"], "");
        assert_eq!(line["kind"], "server");
        assert_eq!(line["service_name"], "waypoint.ns-b");
        assert_eq!(line["status"], "error");
        assert_eq!(line["status_message"], "503 URX");
        assert_eq!(line["attributes"]["http.method"], "GET");
        assert_eq!(line["attributes"]["http.status_code"], 503);
    }
}

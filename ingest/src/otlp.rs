//! OTLP, the OpenTelemetry protocol, as exporters send it (the SDKs, the OpenTelemetry Collector, the AWS
//! Distro for OpenTelemetry Lambda layer): export requests of traces and logs in protobuf, turned into
//! their OTLP/JSON mapping so that one reader (`trace` for spans, the pipeline for log records) takes
//! both encodings; and the answers of OTLP/HTTP, with partial success.
//!
//! Trace and span ids are stored in one canonical form, lowercase hex, whatever case or encoding the
//! exporter used.

use base64::Engine;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Map, Value as Json};
use store::ledger::hex;

/// What an export request carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Traces,
    Logs,
}

/// The JSON mapping of an attribute value (`{"stringValue": …}`, 64-bit integers as strings, bytes
/// as base64).
fn any_value(value: &AnyValue) -> Json {
    match &value.value {
        Some(any_value::Value::StringValue(text)) => json!({ "stringValue": text }),
        Some(any_value::Value::BoolValue(flag)) => json!({ "boolValue": flag }),
        Some(any_value::Value::IntValue(number)) => json!({ "intValue": number.to_string() }),
        Some(any_value::Value::DoubleValue(number)) => json!({ "doubleValue": number }),
        Some(any_value::Value::ArrayValue(array)) => {
            json!({ "arrayValue": { "values": array.values.iter().map(any_value).collect::<Vec<_>>() } })
        }
        Some(any_value::Value::KvlistValue(list)) => json!({ "kvlistValue": { "values": key_values(&list.values) } }),
        Some(any_value::Value::BytesValue(bytes)) => {
            json!({ "bytesValue": base64::engine::general_purpose::STANDARD.encode(bytes) })
        }
        _ => json!({}),
    }
}

fn key_values(attributes: &[KeyValue]) -> Vec<Json> {
    attributes
        .iter()
        .map(|kv| json!({ "key": kv.key, "value": kv.value.as_ref().map_or_else(|| json!({}), any_value) }))
        .collect()
}

fn resource(resource: &Option<Resource>) -> Json {
    json!({ "attributes": resource.as_ref().map(|r| key_values(&r.attributes)).unwrap_or_default() })
}

fn scope(scope: &Option<InstrumentationScope>) -> Json {
    scope.as_ref().map_or_else(|| json!({}), |s| json!({ "name": s.name, "version": s.version }))
}

/// A time in nanoseconds as OTLP/JSON writes it: a decimal string; unset (0) is left out.
fn nanos(value: u64, object: &mut Map<String, Json>, key: &str) {
    if value != 0 {
        object.insert(key.to_string(), json!(value.to_string()));
    }
}

/// An id, left out when empty (a root span's parent, a log record outside any trace).
fn id(bytes: &[u8], object: &mut Map<String, Json>, key: &str) {
    if !bytes.is_empty() {
        object.insert(key.to_string(), json!(hex(bytes)));
    }
}

/// Decodes a protobuf export request into its OTLP/JSON mapping.
///
/// # Errors
/// Bytes that are not an export request of `signal`.
pub fn protobuf_to_json(signal: Signal, bytes: &[u8]) -> Result<Json, String> {
    match signal {
        Signal::Traces => {
            let request =
                ExportTraceServiceRequest::decode(bytes).map_err(|e| format!("not an OTLP trace export: {e}"))?;
            let resource_spans: Vec<Json> = request
                .resource_spans
                .iter()
                .map(|rs| {
                    let scopes: Vec<Json> = rs
                        .scope_spans
                        .iter()
                        .map(|ss| {
                            let spans: Vec<Json> = ss
                                .spans
                                .iter()
                                .map(|span| {
                                    let mut object = Map::new();
                                    id(&span.trace_id, &mut object, "traceId");
                                    id(&span.span_id, &mut object, "spanId");
                                    id(&span.parent_span_id, &mut object, "parentSpanId");
                                    object.insert("name".into(), json!(span.name));
                                    object.insert("kind".into(), json!(span.kind));
                                    nanos(span.start_time_unix_nano, &mut object, "startTimeUnixNano");
                                    nanos(span.end_time_unix_nano, &mut object, "endTimeUnixNano");
                                    object.insert("attributes".into(), json!(key_values(&span.attributes)));
                                    if let Some(status) = &span.status {
                                        object.insert(
                                            "status".into(),
                                            json!({ "code": status.code, "message": status.message }),
                                        );
                                    }
                                    Json::Object(object)
                                })
                                .collect();
                            json!({ "scope": scope(&ss.scope), "spans": spans })
                        })
                        .collect();
                    json!({ "resource": resource(&rs.resource), "scopeSpans": scopes })
                })
                .collect();
            Ok(json!({ "resourceSpans": resource_spans }))
        }
        Signal::Logs => {
            let request =
                ExportLogsServiceRequest::decode(bytes).map_err(|e| format!("not an OTLP logs export: {e}"))?;
            let resource_logs: Vec<Json> = request
                .resource_logs
                .iter()
                .map(|rl| {
                    let scopes: Vec<Json> = rl
                        .scope_logs
                        .iter()
                        .map(|sl| {
                            let records: Vec<Json> = sl
                                .log_records
                                .iter()
                                .map(|record| {
                                    let mut object = Map::new();
                                    nanos(record.time_unix_nano, &mut object, "timeUnixNano");
                                    nanos(record.observed_time_unix_nano, &mut object, "observedTimeUnixNano");
                                    object.insert("severityNumber".into(), json!(record.severity_number));
                                    object.insert("severityText".into(), json!(record.severity_text));
                                    if let Some(body) = &record.body {
                                        object.insert("body".into(), any_value(body));
                                    }
                                    object.insert("attributes".into(), json!(key_values(&record.attributes)));
                                    id(&record.trace_id, &mut object, "traceId");
                                    id(&record.span_id, &mut object, "spanId");
                                    Json::Object(object)
                                })
                                .collect();
                            json!({ "scope": scope(&sl.scope), "logRecords": records })
                        })
                        .collect();
                    json!({ "resource": resource(&rl.resource), "scopeLogs": scopes })
                })
                .collect();
            Ok(json!({ "resourceLogs": resource_logs }))
        }
    }
}

/// The OTLP/HTTP answer to an export request: empty when everything was taken, else a partial success
/// with the number rejected and why, in the request's encoding.
pub fn response(signal: Signal, protobuf: bool, rejected: u64, message: &str) -> Vec<u8> {
    let rejected = rejected as i64;
    let message = if rejected > 0 { message.to_string() } else { String::new() };
    if protobuf {
        return match signal {
            Signal::Traces => ExportTraceServiceResponse {
                partial_success: (rejected > 0)
                    .then_some(ExportTracePartialSuccess { rejected_spans: rejected, error_message: message }),
            }
            .encode_to_vec(),
            Signal::Logs => ExportLogsServiceResponse {
                partial_success: (rejected > 0)
                    .then_some(ExportLogsPartialSuccess { rejected_log_records: rejected, error_message: message }),
            }
            .encode_to_vec(),
        };
    }
    let key = match signal {
        Signal::Traces => "rejectedSpans",
        Signal::Logs => "rejectedLogRecords",
    };
    let body = if rejected > 0 {
        json!({ "partialSuccess": { key: rejected.to_string(), "errorMessage": message } })
    } else {
        json!({})
    };
    body.to_string().into_bytes()
}

/// The `google.rpc.Status` that OTLP/HTTP answers a refused request with, in the request's encoding.
pub fn status(code: i32, message: &str, protobuf: bool) -> Vec<u8> {
    /// `google.rpc.Status` without details.
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    if protobuf {
        RpcStatus { code, message: message.to_string() }.encode_to_vec()
    } else {
        json!({ "code": code, "message": message }).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn attribute(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..KeyValue::default()
        }
    }

    #[test]
    fn protobuf_requests_map_to_otlp_json_with_lowercase_ids() {
        let span = Span {
            trace_id: vec![0xAB; 16],
            span_id: vec![0x0C; 8],
            name: "GET /orders".into(),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_123_456_789,
            end_time_unix_nano: 1_700_000_000_223_456_789,
            attributes: vec![attribute("faas.invocation_id", "8f507cfc-1a2b-4697-b07a-ac58fc914c95")],
            ..Span::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![attribute("faas.name", "orders")], ..Resource::default() }),
                scope_spans: vec![ScopeSpans { spans: vec![span], ..ScopeSpans::default() }],
                ..ResourceSpans::default()
            }],
        };
        let json = protobuf_to_json(Signal::Traces, &request.encode_to_vec()).unwrap();
        let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "abababababababababababababababab");
        assert_eq!(span["spanId"], "0c0c0c0c0c0c0c0c");
        assert_eq!(span["startTimeUnixNano"], "1700000000123456789");
        assert!(span.get("parentSpanId").is_none());
        assert_eq!(json["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"], "orders");

        let record = LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            body: Some(AnyValue { value: Some(any_value::Value::IntValue(7)) }),
            trace_id: vec![0xAB; 16],
            ..LogRecord::default()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs { log_records: vec![record], ..ScopeLogs::default() }],
                ..ResourceLogs::default()
            }],
        };
        let json = protobuf_to_json(Signal::Logs, &request.encode_to_vec()).unwrap();
        let record = &json["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0];
        assert_eq!(record["body"]["intValue"], "7");
        assert_eq!(record["timeUnixNano"], "1700000000000000000");
        assert!(protobuf_to_json(Signal::Logs, b"\xff\xff\xff").is_err());
    }

    #[test]
    fn answers_say_what_was_rejected_in_the_requests_encoding() {
        assert_eq!(response(Signal::Traces, false, 0, "x"), b"{}");
        let json: Json = serde_json::from_slice(&response(Signal::Logs, false, 2, "bad")).unwrap();
        assert_eq!(json["partialSuccess"]["rejectedLogRecords"], "2");
        let decoded = ExportTraceServiceResponse::decode(&response(Signal::Traces, true, 3, "bad")[..]).unwrap();
        assert_eq!(decoded.partial_success.unwrap().rejected_spans, 3);
        assert!(ExportTraceServiceResponse::decode(&response(Signal::Traces, true, 0, "")[..])
            .unwrap()
            .partial_success
            .is_none());
    }
}

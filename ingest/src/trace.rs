//! Traces: AWS X-Ray segment documents (nested subsegments, `error` / `fault` / `throttle`, `cause`,
//! `http`, `aws`; single documents, arrays, `BatchGetTraces` and `PutTraceSegments` shapes) and OTLP/JSON
//! `resourceSpans`, as `spans` rows linked to invocations by trace id and request id.

use serde_json::Value as Json;

use store::rows::{bounded, TableBuilder};
use store::tables::{Borrowed, SpanRow};

const ATTRIBUTES_BYTES_MAX: usize = 16 * 1024;
/// Subsegments nested deeper than this are not followed.
const SUBSEGMENT_DEPTH_MAX: usize = 32;

/// What a span says about an invocation, for linking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanLink {
    pub trace_id: String,
    pub request_id: Option<String>,
    pub function_name: Option<String>,
    pub start_micros: i64,
}

/// Whether a JSON document is a trace format this module reads.
pub fn looks_like(json: &Json) -> bool {
    let is_segment = |j: &Json| j.get("trace_id").is_some() && j.get("id").is_some() && j.get("start_time").is_some();
    match json {
        Json::Array(items) => items.first().is_some_and(is_segment),
        Json::Object(object) => {
            is_segment(json)
                || object.contains_key("resourceSpans")
                || object.contains_key("Traces")
                || object.contains_key("TraceSegmentDocuments")
        }
        _ => false,
    }
}

/// Appends the spans of a trace document; returns their links and collects rejected parts.
pub fn push_spans(
    builder: &mut TableBuilder,
    json: &Json,
    source: &str,
    position: &str,
    rejected: &mut Vec<(&'static str, String)>,
) -> Vec<SpanLink> {
    let mut links = Vec::new();
    if json.get("resourceSpans").is_some() {
        push_otlp(builder, json, source, position, rejected, &mut links);
        return links;
    }
    let mut documents: Vec<Json> = Vec::new();
    match json {
        Json::Array(items) => documents.extend(items.iter().cloned()),
        Json::Object(object) => {
            if let Some(Json::Array(traces)) = object.get("Traces") {
                for trace in traces {
                    for segment in trace.get("Segments").and_then(Json::as_array).into_iter().flatten() {
                        match segment.get("Document").and_then(Json::as_str).map(serde_json::from_str::<Json>) {
                            Some(Ok(document)) => documents.push(document),
                            _ => rejected.push(("bad_trace", "a Segments entry without a JSON Document".into())),
                        }
                    }
                }
            } else if let Some(Json::Array(texts)) = object.get("TraceSegmentDocuments") {
                for text in texts {
                    match text.as_str().map(serde_json::from_str::<Json>) {
                        Some(Ok(document)) => documents.push(document),
                        _ => rejected.push(("bad_trace", "a TraceSegmentDocuments entry that is not JSON".into())),
                    }
                }
            } else {
                documents.push(json.clone());
            }
        }
        _ => rejected.push(("bad_trace", "trace document is not an object or array".into())),
    }
    for document in &documents {
        let trace_id = document.get("trace_id").and_then(Json::as_str).map(|id| canonical_id(id).into_owned());
        match trace_id {
            Some(trace_id) => {
                push_xray(builder, document, &trace_id, None, None, 0, source, position, rejected, &mut links)
            }
            None => rejected.push(("bad_trace", "segment without trace_id".into())),
        }
    }
    links
}

fn seconds_to_micros(value: Option<&Json>) -> Option<i64> {
    let seconds = value?.as_f64()?;
    (seconds.is_finite() && (0.0..7.0e9).contains(&seconds)).then(|| (seconds * 1e6).round() as i64)
}

fn json_text(value: Option<&Json>) -> Option<String> {
    match value? {
        Json::Null => None,
        other => Some(bounded(&other.to_string(), ATTRIBUTES_BYTES_MAX).to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
fn push_xray(
    builder: &mut TableBuilder,
    segment: &Json,
    trace_id: &str,
    parent_id: Option<&str>,
    inherited_request: Option<&str>,
    depth: usize,
    source: &str,
    position: &str,
    rejected: &mut Vec<(&'static str, String)>,
    links: &mut Vec<SpanLink>,
) {
    if depth > SUBSEGMENT_DEPTH_MAX {
        rejected.push(("nesting_too_deep", format!("subsegments nested deeper than {SUBSEGMENT_DEPTH_MAX}")));
        return;
    }
    let (Some(id), Some(start)) =
        (segment.get("id").and_then(Json::as_str), seconds_to_micros(segment.get("start_time")))
    else {
        rejected.push(("bad_trace", "segment without id or start_time".into()));
        return;
    };
    let end = seconds_to_micros(segment.get("end_time"));
    let flag = |key: &str| segment.get(key).and_then(Json::as_bool).unwrap_or(false);
    let status = if flag("throttle") {
        "throttle"
    } else if flag("fault") {
        "fault"
    } else if flag("error") {
        "error"
    } else {
        "ok"
    };
    let origin = segment.get("origin").and_then(Json::as_str);
    let name = segment.get("name").and_then(Json::as_str);
    let request_id = segment.get("aws").and_then(|a| a.get("request_id")).and_then(Json::as_str).or(inherited_request);
    let function_name = origin.filter(|o| o.starts_with("AWS::Lambda")).and(name);
    let (id, parent) = (canonical_id(id), segment.get("parent_id").and_then(Json::as_str).map(canonical_id));
    let parent = parent.or(parent_id.map(std::borrow::Cow::Borrowed));
    let kind = if depth == 0 { "segment" } else { "subsegment" };
    let service = origin.or_else(|| segment.get("namespace").and_then(Json::as_str));
    let cause = json_text(segment.get("cause"));
    let http = json_text(segment.get("http"));
    let aws = json_text(segment.get("aws"));
    SpanRow::<Borrowed> {
        start_ts: start,
        end_ts: end,
        trace_id,
        span_id: &id,
        parent_span_id: parent.as_deref(),
        name,
        service,
        kind: Some(kind),
        status: Some(status),
        error: cause.as_deref(),
        http: http.as_deref(),
        aws: aws.as_deref(),
        request_id,
        function_name,
        ingest_source: Some(source),
        ingest_position: Some(position),
    }
    .push_to(builder);
    links.push(SpanLink {
        trace_id: trace_id.to_string(),
        request_id: request_id.map(str::to_string),
        function_name: function_name.map(str::to_string),
        start_micros: start,
    });
    for child in segment.get("subsegments").and_then(Json::as_array).into_iter().flatten() {
        push_xray(builder, child, trace_id, Some(&id), request_id, depth + 1, source, position, rejected, links);
    }
}

/// An OTLP trace id (32 hex digits) in X-Ray's form (`1-<8 hex>-<24 hex>`), as Lambda logs it, in
/// lowercase.
pub fn xray_trace_id(otlp: &str) -> String {
    let otlp = canonical_id(otlp);
    if otlp.len() == 32 && otlp.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("1-{}-{}", &otlp[..8], &otlp[8..])
    } else {
        otlp.into_owned()
    }
}

/// The one form in which trace and span ids are stored: lowercase (hex digits and X-Ray's `1-…-…`),
/// whatever case the input used, so that a lookup finds them.
pub fn canonical_id(id: &str) -> std::borrow::Cow<'_, str> {
    if id.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(id.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(id)
    }
}

/// The plain JSON of an OTLP/JSON attribute value (`{"stringValue": "x"}` is `"x"`).
pub fn otlp_value(value: &Json) -> Json {
    for key in ["stringValue", "boolValue", "doubleValue"] {
        if let Some(v) = value.get(key) {
            return v.clone();
        }
    }
    if let Some(v) = value.get("intValue") {
        return v.as_str().and_then(|s| s.parse::<i64>().ok()).map_or_else(|| v.clone(), Json::from);
    }
    value.clone()
}

/// Microseconds of an OTLP time in nanoseconds (a decimal string or a number).
pub fn nanos(value: Option<&Json>) -> Option<i64> {
    let value = value?;
    let nanos = value.as_str().and_then(|s| s.parse::<i64>().ok()).or_else(|| value.as_i64())?;
    Some(nanos / 1000)
}

fn push_otlp(
    builder: &mut TableBuilder,
    json: &Json,
    source: &str,
    position: &str,
    rejected: &mut Vec<(&'static str, String)>,
    links: &mut Vec<SpanLink>,
) {
    for resource_spans in json.get("resourceSpans").and_then(Json::as_array).into_iter().flatten() {
        let mut resource = serde_json::Map::new();
        for attribute in resource_spans
            .get("resource")
            .and_then(|r| r.get("attributes"))
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let (Some(key), Some(value)) = (attribute.get("key").and_then(Json::as_str), attribute.get("value")) {
                resource.insert(key.to_string(), otlp_value(value));
            }
        }
        let service = resource.get("service.name").and_then(Json::as_str).map(str::to_string);
        let resource_function = resource.get("faas.name").and_then(Json::as_str).map(str::to_string);
        let scopes = resource_spans.get("scopeSpans").or_else(|| resource_spans.get("instrumentationLibrarySpans"));
        for scope in scopes.and_then(Json::as_array).into_iter().flatten() {
            for span in scope.get("spans").and_then(Json::as_array).into_iter().flatten() {
                let (Some(trace_id), Some(span_id), Some(start)) = (
                    span.get("traceId").and_then(Json::as_str),
                    span.get("spanId").and_then(Json::as_str),
                    nanos(span.get("startTimeUnixNano")),
                ) else {
                    rejected.push(("bad_trace", "OTLP span without traceId, spanId or startTimeUnixNano".into()));
                    continue;
                };
                let trace_id = xray_trace_id(trace_id);
                let mut http = serde_json::Map::new();
                let mut aws = serde_json::Map::new();
                let mut request_id = None;
                for attribute in span.get("attributes").and_then(Json::as_array).into_iter().flatten() {
                    let (Some(key), Some(value)) =
                        (attribute.get("key").and_then(Json::as_str), attribute.get("value"))
                    else {
                        continue;
                    };
                    let value = otlp_value(value);
                    if key == "faas.invocation_id" || key == "faas.execution" || key == "aws.request_id" {
                        request_id = value.as_str().map(str::to_string);
                    }
                    if key.starts_with("http.")
                        || key.starts_with("url.")
                        || key.starts_with("client.")
                        || key.starts_with("net.")
                    {
                        http.insert(key.to_string(), value);
                    } else if key.starts_with("aws.")
                        || key.starts_with("rpc.")
                        || key.starts_with("faas.")
                        || key.starts_with("cloud.")
                    {
                        aws.insert(key.to_string(), value);
                    }
                }
                let status_code = span.get("status").and_then(|s| s.get("code"));
                let is_error =
                    status_code.is_some_and(|c| c.as_i64() == Some(2) || c.as_str() == Some("STATUS_CODE_ERROR"));
                let error =
                    span.get("status").and_then(|s| s.get("message")).and_then(Json::as_str).filter(|m| !m.is_empty());
                let kind = match span.get("kind").and_then(Json::as_i64) {
                    Some(1) => "internal",
                    Some(2) => "server",
                    Some(3) => "client",
                    Some(4) => "producer",
                    Some(5) => "consumer",
                    _ => "unspecified",
                };
                let parent =
                    span.get("parentSpanId").and_then(Json::as_str).filter(|p| !p.is_empty()).map(canonical_id);
                let span_id = canonical_id(span_id);
                let http = (!http.is_empty())
                    .then(|| bounded(&Json::Object(http).to_string(), ATTRIBUTES_BYTES_MAX).to_string());
                let aws = (!aws.is_empty())
                    .then(|| bounded(&Json::Object(aws).to_string(), ATTRIBUTES_BYTES_MAX).to_string());
                SpanRow::<Borrowed> {
                    start_ts: start,
                    end_ts: nanos(span.get("endTimeUnixNano")),
                    trace_id: &trace_id,
                    span_id: &span_id,
                    parent_span_id: parent.as_deref(),
                    name: span.get("name").and_then(Json::as_str),
                    service: service.as_deref(),
                    kind: Some(kind),
                    status: Some(if is_error { "error" } else { "ok" }),
                    error,
                    http: http.as_deref(),
                    aws: aws.as_deref(),
                    request_id: request_id.as_deref(),
                    function_name: resource_function.as_deref(),
                    ingest_source: Some(source),
                    ingest_position: Some(position),
                }
                .push_to(builder);
                links.push(SpanLink {
                    trace_id,
                    request_id,
                    function_name: resource_function.clone(),
                    start_micros: start,
                });
            }
        }
    }
}

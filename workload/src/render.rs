//! Generated invocations as what AWS would deliver: the Lambda log lines of each invocation (text format,
//! the function logging its trigger event on entry, runtime errors, timeouts, the REPORT line with its
//! X-Ray trace id), grouped into CloudWatch Logs subscription payloads, and X-Ray segment documents.
//! `coldtrail generate --out/--kafka` writes these; ingesting them gives back the invocations.

use arrow::array::RecordBatch;
use serde_json::{json, Value};
use store::rows::TableBuilder;
use store::tables::{Borrowed, InvocationRow};
use store::Table;

use crate::fleet::{FunctionProfile, Trigger};
use crate::generator::Invocation;
use crate::rng::Rng;

/// One CloudWatch Logs event: milliseconds since the epoch and the message.
pub type LogEvent = (i64, String);

/// `2024-03-05T10:00:00.123Z` of microseconds since the epoch.
pub fn iso_millis(ts_us: i64) -> String {
    let ms = ts_us.div_euclid(1_000);
    let secs = ms.div_euclid(1_000);
    let days = secs.div_euclid(86_400);
    let (year, month, day) = crate::generator::civil_from_days(days);
    let rem = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        ms.rem_euclid(1_000)
    )
}

/// The trigger event the function received, as its runtime would log it. A payload that is already a
/// whole trigger event (the demo's attack requests) is used as it is.
pub fn trigger_event(function: &FunctionProfile, invocation: &Invocation) -> Value {
    if let Ok(event @ Value::Object(_)) = serde_json::from_str::<Value>(&invocation.event_payload) {
        if event.get("requestContext").is_some() || event.get("Records").is_some() || event.get("detail-type").is_some()
        {
            return event;
        }
    }
    let caller = &invocation.caller;
    let ip = caller.source_ip.as_deref().unwrap_or("10.0.0.1");
    let agent = caller.user_agent.as_deref().unwrap_or("");
    let path = invocation.http_path.as_deref().unwrap_or("/");
    let method = invocation.http_method.unwrap_or("GET");
    let body = invocation.event_payload.as_str();
    match function.trigger {
        Trigger::ApiGateway => json!({
            "resource": "/{proxy+}",
            "path": path,
            "httpMethod": method,
            "headers": {"User-Agent": agent, "Host": "api.example.com", "X-Forwarded-For": ip},
            "requestContext": {
                "accountId": function.account,
                "stage": "prod",
                "requestId": invocation.request_id,
                "identity": {"sourceIp": ip, "userAgent": agent, "userArn": caller.principal},
                "httpMethod": method,
                "path": format!("/prod{path}"),
            },
            "body": body,
            "isBase64Encoded": false
        }),
        Trigger::FunctionUrl => json!({
            "version": "2.0",
            "rawPath": path,
            "headers": {"user-agent": agent},
            "requestContext": {
                "accountId": "anonymous",
                "domainName": format!("{}.lambda-url.{}.on.aws", function.name, function.region),
                "requestId": invocation.request_id,
                "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": ip, "userAgent": agent},
            },
            "body": body,
            "isBase64Encoded": false
        }),
        Trigger::Sqs => json!({"Records": [{
            "messageId": invocation.request_id,
            "eventSource": "aws:sqs",
            "eventSourceARN": format!("arn:aws:sqs:{}:{}:{}-queue", function.region, function.account, function.name),
            "awsRegion": function.region,
            "attributes": {"SenderId": caller.principal},
            "body": body,
        }]}),
        Trigger::S3 => json!({"Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": function.region,
            "eventTime": iso_millis(invocation.ts_us),
            "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": caller.principal},
            "requestParameters": {"sourceIPAddress": caller.source_ip},
            "s3": {"bucket": {"name": format!("{}-uploads", function.name)}, "object": serde_json::from_str::<Value>(body).unwrap_or(Value::Null)},
        }]}),
        Trigger::EventBridge => json!({
            "version": "0",
            "id": invocation.request_id,
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": function.account,
            "time": iso_millis(invocation.ts_us),
            "region": function.region,
            "resources": [format!("arn:aws:events:{}:{}:rule/{}-schedule", function.region, function.account, function.name)],
            "detail": {},
        }),
    }
}

/// The log events of one invocation, in order.
pub fn log_events(function: &FunctionProfile, invocation: &Invocation, rng: &mut Rng) -> Vec<LogEvent> {
    let id = &invocation.request_id;
    let start_us = invocation.ts_us;
    let end_us = start_us + (invocation.duration_ms * 1_000.0) as i64;
    let at = |us: i64| (us / 1_000, iso_millis(us));
    let mut events = Vec::with_capacity(5);
    events.push((start_us / 1_000, format!("START RequestId: {id} Version: $LATEST")));
    let (ms, iso) = at(start_us + 300);
    events.push((ms, format!("{iso}\t{id}\tINFO\tevent {}", trigger_event(function, invocation))));
    match invocation.status {
        "timeout" => {
            let (ms, iso) = at(end_us);
            events.push((ms, format!("{iso} {id} Task timed out after {:.2} seconds", function.timeout_ms / 1_000.0)));
        }
        "success" => {
            let (ms, iso) = at(start_us + (end_us - start_us) / 2);
            events.push((ms, format!("{iso}\t{id}\tINFO\thandled in {:.0} ms", invocation.duration_ms)));
        }
        _ => {
            let (ms, iso) = at(end_us.max(start_us + 400));
            let error = json!({
                "errorType": invocation.error_type.unwrap_or("Error"),
                "errorMessage": invocation.error_message.unwrap_or("failed"),
                "stackTrace": ["    at handler (/var/task/index.js:42:11)"],
            });
            events.push((ms, format!("{iso}\t{id}\tERROR\tInvoke Error \t{error}")));
        }
    }
    events.push((end_us / 1_000, format!("END RequestId: {id}")));
    let mut segment_id = String::with_capacity(16);
    rng.hex(16, &mut segment_id);
    let mut report = format!(
        "REPORT RequestId: {id}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB\t",
        invocation.duration_ms,
        invocation.duration_ms.ceil() as i64,
        function.memory_size_mb,
        invocation.max_memory_used_mb
    );
    if let Some(init) = invocation.init_duration_ms {
        report.push_str(&format!("Init Duration: {init:.2} ms\t"));
    }
    if invocation.status == "timeout" {
        report.push_str("Status: timeout\t");
    }
    report.push_str(&format!("\nXRAY TraceId: {}\tSegmentId: {segment_id}\tSampled: true\t", invocation.trace_id));
    events.push((end_us / 1_000, report));
    events
}

/// A CloudWatch Logs subscription payload (`DATA_MESSAGE`) of one log stream's events.
pub fn subscription_payload(function: &FunctionProfile, log_stream: &str, events: &[LogEvent], first_id: u64) -> Value {
    let log_events: Vec<Value> = events
        .iter()
        .enumerate()
        .map(|(i, (ts, message))| json!({"id": (first_id + i as u64).to_string(), "timestamp": ts, "message": message}))
        .collect();
    json!({
        "messageType": "DATA_MESSAGE",
        "owner": function.account,
        "logGroup": format!("/aws/lambda/{}", function.name),
        "logStream": log_stream,
        "subscriptionFilters": ["coldtrail"],
        "logEvents": log_events,
    })
}

/// One minute of invocations as AWS delivers it.
#[derive(Debug, Default)]
pub struct RenderedMinute {
    /// One subscription payload per function and log stream, in that order, with the function's index
    /// in the fleet and the log stream.
    pub payloads: Vec<(usize, String, Value)>,
    /// The X-Ray segment documents of the traced invocations, with their trace ids.
    pub segments: Vec<(String, Value)>,
    pub log_lines: u64,
}

/// Renders one minute's invocations: each invocation's log lines, grouped per log stream into
/// subscription payloads whose event ids continue from `next_event_id`, and the X-Ray segments of the
/// invocations `traced` chooses (it may draw from the same `rng`, in invocation order).
pub fn render_minute(
    functions: &[FunctionProfile],
    invocations: &[Invocation],
    rng: &mut Rng,
    next_event_id: &mut u64,
    mut traced: impl FnMut(&Invocation, &mut Rng) -> bool,
) -> RenderedMinute {
    let mut rendered = RenderedMinute::default();
    let mut streams: std::collections::BTreeMap<(usize, &str), Vec<LogEvent>> = std::collections::BTreeMap::new();
    for invocation in invocations {
        let function = &functions[invocation.function_idx];
        let events = log_events(function, invocation, rng);
        rendered.log_lines += events.len() as u64;
        streams.entry((invocation.function_idx, &invocation.log_stream)).or_default().extend(events);
        if traced(invocation, rng) {
            let segments = xray_segments(function, invocation, rng);
            rendered.segments.extend(segments.into_iter().map(|segment| (invocation.trace_id.clone(), segment)));
        }
    }
    for ((function_idx, log_stream), events) in streams {
        let payload = subscription_payload(&functions[function_idx], log_stream, &events, *next_event_id);
        *next_event_id += events.len() as u64;
        rendered.payloads.push((function_idx, log_stream.to_string(), payload));
    }
    rendered
}

/// The X-Ray segment documents of one invocation: the function's segment and a subsegment for its
/// downstream call.
pub fn xray_segments(function: &FunctionProfile, invocation: &Invocation, rng: &mut Rng) -> Vec<Value> {
    let start = invocation.ts_us as f64 / 1e6;
    let end = start + invocation.duration_ms / 1_000.0;
    let mut id = String::with_capacity(16);
    rng.hex(16, &mut id);
    let mut sub_id = String::with_capacity(16);
    rng.hex(16, &mut sub_id);
    let failed = invocation.status != "success";
    let downstream = match function.trigger {
        Trigger::S3 => "S3",
        Trigger::Sqs => "DynamoDB",
        _ => "DynamoDB",
    };
    vec![json!({
        "name": function.name,
        "id": id,
        "trace_id": invocation.trace_id,
        "start_time": start,
        "end_time": end,
        "origin": "AWS::Lambda::Function",
        "fault": failed,
        "aws": {
            "request_id": invocation.request_id,
            "function_arn": format!("arn:aws:lambda:{}:{}:function:{}", function.region, function.account, function.name),
            "cloudwatch_logs": {"log_group": format!("/aws/lambda/{}", function.name), "log_stream": invocation.log_stream},
        },
        "subsegments": [{
            "name": downstream,
            "id": sub_id,
            "namespace": "aws",
            "start_time": start + (end - start) * 0.2,
            "end_time": start + (end - start) * 0.8,
            "aws": {"operation": if downstream == "S3" { "GetObject" } else { "PutItem" }},
            "fault": invocation.status == "timeout",
        }],
    })]
}

/// The `invocations` rows of generated invocations.
pub fn invocations_batch(functions: &[FunctionProfile], invocations: &[Invocation]) -> Option<RecordBatch> {
    let mut builder = TableBuilder::new(Table::Invocations);
    for invocation in invocations {
        let function = &functions[invocation.function_idx];
        let billed_duration_ms = invocation.duration_ms.ceil() as i64;
        let log_group = format!("/aws/lambda/{}", function.name);
        // The trigger event as the function received it: what ingest keeps from its log line.
        let event = trigger_event(function, invocation).to_string();
        InvocationRow::<Borrowed> {
            ts: invocation.ts_us,
            end_ts: Some(invocation.ts_us + (invocation.duration_ms * 1_000.0) as i64),
            account: Some(&function.account),
            region: Some(&function.region),
            function_name: &function.name,
            function_version: Some("$LATEST"),
            request_id: &invocation.request_id,
            log_group: Some(&log_group),
            log_stream: Some(&invocation.log_stream),
            cold_start: Some(invocation.cold_start),
            init_duration_ms: invocation.init_duration_ms,
            restore_duration_ms: None,
            duration_ms: Some(invocation.duration_ms),
            billed_duration_ms: Some(billed_duration_ms),
            memory_size_mb: Some(function.memory_size_mb),
            max_memory_used_mb: Some(invocation.max_memory_used_mb),
            status: Some(invocation.status),
            error_type: invocation.error_type,
            error_message: invocation.error_message,
            trace_id: Some(&invocation.trace_id),
            trigger: Some(function.trigger.name()),
            source_ip: invocation.caller.source_ip.as_deref(),
            user_agent: invocation.caller.user_agent.as_deref(),
            principal: invocation.caller.principal.as_deref(),
            http_method: invocation.http_method,
            http_path: invocation.http_path.as_deref(),
            event_payload: Some(&event),
            ingest_source: Some("workload"),
            ingest_position: None,
        }
        .push_to(&mut builder);
    }
    builder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::fleet;
    use crate::generator::Generator;

    #[test]
    fn iso_times_are_utc_with_milliseconds() {
        assert_eq!(iso_millis(1_709_632_800_123_456), "2024-03-05T10:00:00.123Z");
        assert_eq!(iso_millis(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn every_invocation_has_start_end_and_report_and_its_trigger_event_names_the_caller() {
        let functions = fleet(12, &mut Rng::new(3));
        let mut generator = Generator::new(functions.clone(), 3);
        let mut invocations = Vec::new();
        generator.minute(1_709_632_800_000_000, &mut invocations);
        assert!(!invocations.is_empty());
        let mut rng = Rng::new(1);
        for invocation in &invocations {
            let function = &functions[invocation.function_idx];
            let events = log_events(function, invocation, &mut rng);
            assert!(events[0].1.starts_with("START RequestId: "));
            assert!(events.last().unwrap().1.starts_with("REPORT RequestId: "));
            assert!(events.windows(2).all(|w| w[0].0 <= w[1].0), "events in time order");
            let event = trigger_event(function, invocation);
            if let Some(ip) = &invocation.caller.source_ip {
                if function.trigger.is_http() {
                    assert!(event.to_string().contains(ip.as_str()));
                }
            }
            assert_eq!(xray_segments(function, invocation, &mut rng)[0]["trace_id"], invocation.trace_id.as_str());
        }
    }
}

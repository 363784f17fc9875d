//! Golden tests of every input format on the real samples of `tests/data/` and on hand-made samples of each
//! variant: what rows each produces, field by field.

use std::collections::BTreeMap;
use std::io::Write;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use ingest::{Format, Pipeline, Unit};
use store::Table;

type Row = BTreeMap<String, String>;

/// Runs a pipeline over units and returns the rows of each table (non-null cells only, as text).
fn run(format: Format, units: &[(&str, &[u8])]) -> BTreeMap<Table, Vec<Row>> {
    let mut pipeline = Pipeline::default();
    for (idx, (key, bytes)) in units.iter().enumerate() {
        let position = idx.to_string();
        let unit = Unit { source: "test", position: &position, key: Some(key), log_group: None };
        pipeline.ingest(format, bytes, &unit);
    }
    pipeline.finish();
    let mut tables: BTreeMap<Table, Vec<Row>> = BTreeMap::new();
    for (table, batch) in pipeline.take_batches() {
        tables.entry(table).or_default().extend(rows(&batch));
    }
    tables
}

fn rows(batch: &RecordBatch) -> Vec<Row> {
    let options = FormatOptions::default();
    let formatters: Vec<ArrayFormatter> =
        batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap()).collect();
    (0..batch.num_rows())
        .map(|row| {
            batch
                .schema()
                .fields()
                .iter()
                .zip(&formatters)
                .enumerate()
                .filter(|(idx, _)| batch.column(*idx).is_valid(row))
                .map(|(_, (field, formatter))| (field.name().clone(), formatter.value(row).to_string()))
                .collect()
        })
        .collect()
}

fn get<'r>(row: &'r Row, column: &str) -> Option<&'r str> {
    row.get(column).map(String::as_str)
}

/// The workspace's test data: real samples written by others, with their licenses (`tests/data/README.md`).
fn test_data() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../tests/data")
}

fn sample(path: &str) -> Vec<u8> {
    let path = test_data().join(path);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn the_aws_sample_cloudwatch_subscription_event_decodes() {
    let tables = run(Format::Auto, &[("event.json", &sample("aws-lambda-events/example-cloudwatch_logs-event.json"))]);
    let logs = &tables[&Table::Logs];
    assert_eq!(logs.len(), 2);
    assert_eq!(get(&logs[0], "message"), Some("[ERROR] First test message"));
    assert_eq!(get(&logs[0], "level"), Some("ERROR"));
    assert_eq!(get(&logs[0], "log_group"), Some("testLogGroup"));
    assert_eq!(get(&logs[0], "log_stream"), Some("testLogStream"));
    assert_eq!(get(&logs[0], "ts"), Some("2015-08-24T19:03:07Z"));
    assert_eq!(get(&logs[1], "ts"), Some("2015-08-24T19:03:07.001Z"));
    assert_eq!(get(&logs[1], "ingest_position"), Some("0#1"));
    assert!(!tables.contains_key(&Table::DeadLetters));
}

#[test]
fn all_310_stratus_cloudtrail_records_parse_with_their_fields() {
    let dir = test_data().join("stratus-detonation-logs");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let records: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        // Gzipped as CloudTrail delivers files to S3, in the `{"Records": [...]}` shape.
        let delivered = gzip(serde_json::json!({ "Records": records }).to_string().as_bytes());
        for input in [bytes.clone(), delivered] {
            let tables = run(Format::Auto, &[("file", &input)]);
            assert!(
                !tables.contains_key(&Table::DeadLetters),
                "{}: {:?}",
                path.display(),
                tables.get(&Table::DeadLetters)
            );
            let rows = &tables[&Table::Cloudtrail];
            assert_eq!(rows.len(), records.len(), "{}", path.display());
            for (record, row) in records.iter().zip(rows) {
                let text = |key: &str| record.get(key).and_then(|v| v.as_str());
                assert_eq!(get(row, "event_name"), text("eventName"));
                assert_eq!(get(row, "event_source"), text("eventSource"));
                assert_eq!(get(row, "aws_region"), text("awsRegion"));
                assert_eq!(get(row, "source_ip"), text("sourceIPAddress"));
                assert_eq!(get(row, "user_agent"), text("userAgent"));
                assert_eq!(get(row, "event_id"), text("eventID"));
                assert_eq!(get(row, "event_type"), text("eventType"));
                assert_eq!(get(row, "error_code"), text("errorCode"));
                assert_eq!(get(row, "error_message"), text("errorMessage"));
                assert_eq!(get(row, "recipient_account"), text("recipientAccountId"));
                let identity = &record["userIdentity"];
                assert_eq!(get(row, "principal_type"), identity["type"].as_str());
                assert_eq!(get(row, "access_key_id"), identity["accessKeyId"].as_str());
                if let Some(arn) = identity["arn"].as_str() {
                    assert_eq!(get(row, "principal_arn"), Some(arn));
                }
                if identity["type"] == "AssumedRole" {
                    assert!(get(row, "session_name").is_some(), "{row:?}");
                }
                assert_eq!(
                    get(row, "account").is_some(),
                    identity["accountId"].is_string() || record["recipientAccountId"].is_string()
                );
                for (key, column) in [
                    ("requestParameters", "request_parameters"),
                    ("responseElements", "response_elements"),
                    ("resources", "resources"),
                ] {
                    let present = record.get(key).is_some_and(|v| !v.is_null());
                    assert_eq!(get(row, column).is_some(), present, "{key} in {row:?}");
                    if present {
                        let stored: serde_json::Value = serde_json::from_str(get(row, column).unwrap()).unwrap();
                        assert_eq!(&stored, &record[key]);
                    }
                }
                if let Some(read_only) = record.get("readOnly").and_then(|v| v.as_bool()) {
                    assert_eq!(get(row, "read_only"), Some(if read_only { "true" } else { "false" }));
                }
                let expected = chrono::DateTime::parse_from_rfc3339(text("eventTime").unwrap())
                    .unwrap()
                    .with_timezone(&chrono::Utc);
                assert_eq!(get(row, "event_time"), Some(expected.format("%Y-%m-%dT%H:%M:%SZ").to_string().as_str()));
            }
        }
        total += records.len();
    }
    assert_eq!(total, 310);
}

#[test]
fn a_cloudtrail_event_from_eventbridge_and_the_fixture_records_parse() {
    let event = serde_json::json!({
        "version": "0", "id": "6a7e8feb", "detail-type": "AWS API Call via CloudTrail", "source": "aws.lambda",
        "detail": serde_json::from_slice::<serde_json::Value>(&sample("aws-lambda-events/example-cloudwatch-cloudtrail-assumed-role.json")).unwrap()
    });
    let tables = run(Format::Auto, &[("eb", event.to_string().as_bytes())]);
    let row = &tables[&Table::Cloudtrail][0];
    assert_eq!(get(row, "principal_type"), Some("AssumedRole"));
    assert_eq!(get(row, "session_name"), Some("me@dev.com"));
    let unknown =
        run(Format::Auto, &[("u", &sample("aws-lambda-events/example-cloudwatch-cloudtrail-unknown-user-auth.json"))]);
    assert_eq!(unknown[&Table::Cloudtrail].len(), 1);
}

const ID: &str = "8f507cfc-1a2b-4697-b07a-ac58fc914c95";

fn lambda_text_invocation() -> String {
    let event = r#"{"httpMethod":"POST","path":"/orders","requestContext":{"identity":{"sourceIp":"198.51.100.7","userAgent":"curl/8.0"},"authorizer":{"principalId":"user-42"}},"body":"{\"id\":1}"}"#;
    [
        "INIT_START Runtime Version: nodejs:20.v13\tRuntime Version ARN: arn:aws:lambda:eu-west-1::runtime:abc".to_string(),
        format!("START RequestId: {ID} Version: $LATEST"),
        format!("2024-03-05T10:00:00.120Z\t{ID}\tINFO\tEVENT: {event}"),
        format!("2024-03-05T10:00:00.150Z\t{ID}\tERROR\tTypeError: Cannot read properties of undefined"),
        "    at handler (/var/task/index.js:10:5)".to_string(),
        "    at Runtime.handleOnce (file:///var/runtime/index.mjs:1:1)".to_string(),
        format!("END RequestId: {ID}"),
        format!("REPORT RequestId: {ID}\tDuration: 52.41 ms\tBilled Duration: 53 ms\tMemory Size: 256 MB\tMax Memory Used: 81 MB\tInit Duration: 231.05 ms\t"),
        "XRAY TraceId: 1-65e6ed80-2c3b5b0a7c6e1d2f3a4b5c6d\tSegmentId: 1c02a1b2c3d4e5f6\tSampled: true\t".to_string(),
    ]
    .join("\n")
}

#[test]
fn a_text_format_invocation_becomes_one_row_with_its_caller() {
    // A log-tail style file: every line prefixed by the event time and the log stream.
    let stream = "2024/03/05/[$LATEST]0123456789abcdef0123456789abcdef";
    let text: String = lambda_text_invocation()
        .split('\n')
        .map(|line| {
            if line.starts_with(' ') || line.starts_with("XRAY") {
                line.to_string()
            } else {
                format!("2024-03-05T10:00:00.100000+00:00 {stream} {line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let tables = run(Format::Lambda, &[("tail.log", text.as_bytes())]);
    let invocations = &tables[&Table::Invocations];
    assert_eq!(invocations.len(), 1);
    let row = &invocations[0];
    assert_eq!(get(row, "request_id"), Some(ID));
    assert_eq!(get(row, "log_stream"), Some(stream));
    assert_eq!(get(row, "function_version"), Some("$LATEST"));
    assert_eq!(get(row, "cold_start"), Some("true"));
    assert_eq!(get(row, "init_duration_ms"), Some("231.05"));
    assert_eq!(get(row, "duration_ms"), Some("52.41"));
    assert_eq!(get(row, "billed_duration_ms"), Some("53"));
    assert_eq!(get(row, "memory_size_mb"), Some("256"));
    assert_eq!(get(row, "max_memory_used_mb"), Some("81"));
    assert_eq!(get(row, "trace_id"), Some("1-65e6ed80-2c3b5b0a7c6e1d2f3a4b5c6d"));
    assert_eq!(get(row, "trigger"), Some("api_gateway"));
    assert_eq!(get(row, "source_ip"), Some("198.51.100.7"));
    assert_eq!(get(row, "user_agent"), Some("curl/8.0"));
    assert_eq!(get(row, "principal"), Some("user-42"));
    assert_eq!(get(row, "http_method"), Some("POST"));
    assert_eq!(get(row, "http_path"), Some("/orders"));
    assert!(get(row, "event_payload").unwrap().starts_with("{\"httpMethod\":\"POST\""));
    assert_eq!(get(row, "status"), Some("error"));
    assert_eq!(get(row, "error_type"), Some("TypeError"));
    let logs = &tables[&Table::Logs];
    assert_eq!(logs.len(), 6, "the stack trace stays with its error line, XRAY with its REPORT: {logs:#?}");
    assert!(get(&logs[3], "message").unwrap().contains("at handler"));
    assert!(logs.iter().skip(1).all(|l| get(l, "request_id") == Some(ID)), "{logs:#?}");
    assert_eq!(get(&logs[2], "level"), Some("INFO"));
    assert_eq!(get(&logs[2], "ts"), Some("2024-03-05T10:00:00.100Z"));
}

#[test]
fn timeouts_crashes_and_out_of_memory_get_their_status() {
    let timeout = [
        format!("START RequestId: {ID} Version: 3"),
        format!("2024-03-05T10:00:03.010Z {ID} Task timed out after 3.00 seconds"),
        format!("END RequestId: {ID}"),
        format!("REPORT RequestId: {ID}\tDuration: 3000.00 ms\tBilled Duration: 3000 ms\tMemory Size: 128 MB\tMax Memory Used: 40 MB\tStatus: timeout"),
    ]
    .join("\n");
    let tables = run(Format::Lambda, &[("t", timeout.as_bytes())]);
    let row = &tables[&Table::Invocations][0];
    assert_eq!(get(row, "status"), Some("timeout"));
    assert_eq!(get(row, "cold_start"), Some("false"));
    assert_eq!(get(row, "error_message"), Some("Task timed out after 3.00 seconds"));

    let other = "2b1f8e2c-5a6d-4e7f-8a9b-0c1d2e3f4a5b";
    let oom = [
        format!("START RequestId: {other} Version: $LATEST"),
        format!("RequestId: {other} Error: Runtime exited with error: signal: killed\nRuntime.ExitError"),
        format!("END RequestId: {other}"),
        format!("REPORT RequestId: {other}\tDuration: 812.12 ms\tBilled Duration: 813 ms\tMemory Size: 128 MB\tMax Memory Used: 128 MB"),
    ]
    .join("\n");
    let tables = run(Format::Lambda, &[("o", oom.as_bytes())]);
    let row = &tables[&Table::Invocations][0];
    assert_eq!(get(row, "status"), Some("crash"));
    assert_eq!(get(row, "error_type"), Some("Runtime.ExitError"));
    assert!(get(row, "error_message").unwrap().contains("signal: killed"));
}

#[test]
fn parts_out_of_order_across_units_and_a_lone_report_make_exactly_one_row_each() {
    let lone = "3c2e9f3d-6b7e-4f80-9bac-1d2e3f4a5b6c";
    let report = format!(
        "REPORT RequestId: {ID}\tDuration: 5.00 ms\tBilled Duration: 5 ms\tMemory Size: 128 MB\tMax Memory Used: 50 MB"
    );
    let start = format!("START RequestId: {ID} Version: 7");
    let lone_report = format!("REPORT RequestId: {lone}\tDuration: 1.00 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 50 MB");
    let tables =
        run(Format::Lambda, &[("a", report.as_bytes()), ("b", lone_report.as_bytes()), ("c", start.as_bytes())]);
    let rows = &tables[&Table::Invocations];
    assert_eq!(rows.len(), 2, "{rows:#?}");
    let by_id: BTreeMap<&str, &Row> = rows.iter().map(|r| (get(r, "request_id").unwrap(), r)).collect();
    assert_eq!(get(by_id[ID], "function_version"), Some("7"), "START arriving after REPORT still completes the row");
    assert_eq!(get(by_id[lone], "status"), Some("success"));
}

#[test]
fn the_json_log_format_assembles_an_invocation() {
    let lines = [
        r#"{"time":"2024-03-05T10:00:00.000Z","type":"platform.initStart","record":{"initializationType":"on-demand","phase":"init","runtimeVersion":"python:3.12.v18","functionName":"orders","functionVersion":"$LATEST"}}"#.to_string(),
        format!(r#"{{"time":"2024-03-05T10:00:00.300Z","type":"platform.start","record":{{"requestId":"{ID}","version":"$LATEST","tracing":{{"spanId":"4f5a","type":"X-Amzn-Trace-Id","value":"Root=1-65e6ed80-aaaaaaaaaaaaaaaaaaaaaaaa;Parent=4f5a;Sampled=1"}}}}}}"#),
        format!(r#"{{"timestamp":"2024-03-05T10:00:00.310Z","level":"WARNING","message":"slow downstream","logger":"root","requestId":"{ID}"}}"#),
        format!(r#"{{"time":"2024-03-05T10:00:00.400Z","type":"platform.runtimeDone","record":{{"requestId":"{ID}","status":"success","metrics":{{"durationMs":98.5,"producedBytes":12}}}}}}"#),
        format!(r#"{{"time":"2024-03-05T10:00:00.410Z","type":"platform.report","record":{{"requestId":"{ID}","metrics":{{"durationMs":99.1,"billedDurationMs":100,"memorySizeMB":512,"maxMemoryUsedMB":120,"initDurationMs":410.2}},"status":"success"}}}}"#),
        r#"{"time":"2024-03-05T10:00:01.000Z","type":"platform.logsDropped","record":{"reason":"buffer full","droppedRecords":3,"droppedBytes":900}}"#.to_string(),
    ];
    let subscription = serde_json::json!({
        "messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "/aws/lambda/orders", "logStream": "2024/03/05/[$LATEST]abc",
        "subscriptionFilters": ["all"],
        "logEvents": lines.iter().enumerate().map(|(i, l)| serde_json::json!({"id": i.to_string(), "timestamp": 1709632800000i64 + i as i64, "message": l})).collect::<Vec<_>>(),
    });
    let tables = run(Format::Auto, &[("k", &gzip(subscription.to_string().as_bytes()))]);
    let row = &tables[&Table::Invocations][0];
    assert_eq!(tables[&Table::Invocations].len(), 1);
    assert_eq!(get(row, "function_name"), Some("orders"));
    assert_eq!(get(row, "account"), Some("111122223333"));
    assert_eq!(get(row, "cold_start"), Some("true"));
    assert_eq!(get(row, "duration_ms"), Some("99.1"));
    assert_eq!(get(row, "memory_size_mb"), Some("512"));
    assert_eq!(get(row, "trace_id"), Some("1-65e6ed80-aaaaaaaaaaaaaaaaaaaaaaaa"));
    assert_eq!(get(row, "status"), Some("success"));
    let logs = &tables[&Table::Logs];
    assert_eq!(logs.len(), 6);
    assert!(logs.iter().all(|l| get(l, "format") == Some("json")));
    assert_eq!(get(&logs[2], "level"), Some("WARN"));
    assert_eq!(get(&logs[2], "request_id"), Some(ID));
}

#[test]
fn application_lines_of_each_runtime_get_level_and_request_id() {
    let stream_lines = [
        format!("START RequestId: {ID} Version: $LATEST"),
        format!("[INFO]\t2024-03-05T10:00:00.120Z\t{ID}\tpython says hi"),
        "[ERROR] KeyError: 'order'".to_string(),
        "Traceback (most recent call last):".to_string(),
        "  File \"/var/task/app.py\", line 3, in handler".to_string(),
        format!("2024-03-05 10:00:00 {ID} WARN  OrderHandler - java warns"),
        format!("2024-03-05T10:00:00.130Z\t{ID}\tfail\tdotnet fails"),
        "2024/03/05 10:00:00 go prints".to_string(),
        format!("END RequestId: {ID}"),
    ];
    let tables = run(Format::Lambda, &[("x", stream_lines.join("\n").as_bytes())]);
    let logs = &tables[&Table::Logs];
    let levels: Vec<Option<&str>> = logs.iter().map(|l| get(l, "level")).collect();
    assert_eq!(
        levels,
        vec![Some("PLATFORM"), Some("INFO"), Some("ERROR"), Some("WARN"), Some("ERROR"), None, Some("PLATFORM")]
    );
    assert!(get(&logs[2], "message").unwrap().contains("line 3, in handler"), "traceback kept with its error");
    assert!(
        logs.iter().all(|l| get(l, "request_id") == Some(ID)),
        "lines between START and END belong to it: {logs:#?}"
    );
}

#[test]
fn an_export_object_takes_its_log_stream_from_the_key_and_keeps_multiline_events() {
    let other = "9a8b7c6d-1111-4222-8333-944455556666";
    let body = [
        format!("2024-03-05T10:00:02.000Z REPORT RequestId: {other}\tDuration: 1.0 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 30 MB"),
        format!("2024-03-05T10:00:01.000Z START RequestId: {other} Version: $LATEST"),
        format!("2024-03-05T10:00:01.500Z 2024-03-05T10:00:01.500Z\t{other}\tERROR\tInvoke Error"),
        "{".to_string(),
        "  \"errorType\": \"Error\"".to_string(),
        "}".to_string(),
    ]
    .join("\n");
    let key = "exports/0e2c5ba9-6d3b-4c1a-a1b2-1234567890ab/2024/03/05/[$LATEST]feed/000000.gz";
    let tables = run(Format::Auto, &[(key, &gzip(body.as_bytes()))]);
    let logs = &tables[&Table::Logs];
    assert_eq!(logs.len(), 3);
    assert!(logs.iter().all(|l| get(l, "log_stream") == Some("2024/03/05/[$LATEST]feed")));
    assert!(get(&logs[2], "message").unwrap().ends_with("\"errorType\": \"Error\"\n}"));
    assert_eq!(get(&logs[0], "ts"), Some("2024-03-05T10:00:02Z"));
    let rows = &tables[&Table::Invocations];
    assert_eq!(rows.len(), 1);
    assert_eq!(get(&rows[0], "ts"), Some("2024-03-05T10:00:01Z"));
    assert_eq!(get(&rows[0], "status"), Some("error"));
}

#[test]
fn xray_segments_and_otlp_spans_become_spans_linked_to_invocations() {
    let segment = serde_json::json!({
        "name": "orders", "id": "70de5b6f19ff9a0a", "trace_id": "1-581cf771-a006649127e371903a2de979",
        "start_time": 1478293361.271, "end_time": 1478293361.449, "origin": "AWS::Lambda::Function",
        "aws": {"request_id": ID}, "fault": true, "cause": {"exceptions": [{"message": "boom"}]},
        "subsegments": [
            {"id": "53995c3f42cd8ad8", "name": "DynamoDB", "start_time": 1478293361.3, "end_time": 1478293361.4, "namespace": "aws", "throttle": true, "aws": {"operation": "PutItem", "table_name": "orders"}},
            {"id": "63995c3f42cd8ad9", "name": "api.example.com", "start_time": 1478293361.31, "namespace": "remote", "http": {"request": {"url": "https://api.example.com/x", "method": "GET"}, "response": {"status": 500}}, "error": true}
        ]
    });
    let batch = serde_json::json!({ "Traces": [{ "Id": "1-581cf771-a006649127e371903a2de979", "Segments": [{ "Id": "70de5b6f19ff9a0a", "Document": segment.to_string() }] }] });
    let report = format!(
        "REPORT RequestId: {ID}\tDuration: 5.00 ms\tBilled Duration: 5 ms\tMemory Size: 128 MB\tMax Memory Used: 50 MB"
    );
    let tables = run(Format::Auto, &[("trace", batch.to_string().as_bytes()), ("log", report.as_bytes())]);
    let spans = &tables[&Table::Spans];
    assert_eq!(spans.len(), 3);
    assert_eq!(get(&spans[0], "status"), Some("fault"));
    assert_eq!(get(&spans[0], "function_name"), Some("orders"));
    assert!(get(&spans[0], "error").unwrap().contains("boom"));
    assert_eq!(get(&spans[1], "status"), Some("throttle"));
    assert_eq!(get(&spans[1], "parent_span_id"), Some("70de5b6f19ff9a0a"));
    assert_eq!(get(&spans[1], "request_id"), Some(ID), "subsegments inherit the request id");
    assert!(get(&spans[2], "http").unwrap().contains("api.example.com"));
    assert_eq!(get(&tables[&Table::Invocations][0], "trace_id"), Some("1-581cf771-a006649127e371903a2de979"));

    let otlp = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders"}}, {"key": "faas.name", "value": {"stringValue": "orders"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": "5759e988bd862e3fe1be46a994272793", "spanId": "051581bf3cb55c13", "parentSpanId": "", "name": "GET /orders", "kind": 2,
            "startTimeUnixNano": "1709632800000000000", "endTimeUnixNano": "1709632800250000000",
            "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}}, {"key": "faas.invocation_id", "value": {"stringValue": ID}}, {"key": "http.status_code", "value": {"intValue": "500"}}],
            "status": {"code": 2, "message": "internal error"}
        }]}]
    }]});
    let tables = run(Format::Auto, &[("otlp", otlp.to_string().as_bytes())]);
    let span = &tables[&Table::Spans][0];
    assert_eq!(get(span, "trace_id"), Some("1-5759e988-bd862e3fe1be46a994272793"));
    assert_eq!(get(span, "kind"), Some("server"));
    assert_eq!(get(span, "status"), Some("error"));
    assert_eq!(get(span, "request_id"), Some(ID));
    assert_eq!(get(span, "end_ts"), Some("2024-03-05T10:00:00.250Z"));
    assert_eq!(get(span, "http"), Some(r#"{"http.method":"GET","http.status_code":500}"#));
}

#[test]
fn a_trace_that_comes_long_before_its_log_lines_does_not_make_a_stub_invocation() {
    // Goal: traces and logs travel on different topics with different lag. A segment seen first, then
    // an hour of other traffic, then the request's lines: one whole invocation row, not a stub plus
    // dropped lines.
    let segment = serde_json::json!({"name": "orders", "id": "70de5b6f19ff9a0a", "trace_id": "1-65e6ed20-a006649127e371903a2de979",
        "start_time": 1709632800.0, "end_time": 1709632800.05, "origin": "AWS::Lambda::Function", "aws": {"request_id": ID}});
    let later = "2024-03-05T11:30:00.000Z\t9f507cfc-1a2b-4697-b07a-ac58fc914c95\tINFO\tother traffic";
    let lines = format!(
        "2024-03-05T10:00:00.000Z START RequestId: {ID} Version: $LATEST\n2024-03-05T10:00:00.050Z REPORT RequestId: {ID}\tDuration: 50.00 ms\tBilled Duration: 50 ms\tMemory Size: 128 MB\tMax Memory Used: 50 MB\n"
    );
    let tables = run(
        Format::Auto,
        &[("trace", segment.to_string().as_bytes()), ("other", later.as_bytes()), ("late", lines.as_bytes())],
    );
    let invocations: Vec<_> =
        tables[&Table::Invocations].iter().filter(|row| get(row, "request_id") == Some(ID)).collect();
    assert_eq!(invocations.len(), 1);
    assert_eq!(get(invocations[0], "duration_ms"), Some("50.0"));
    assert_eq!(get(invocations[0], "status"), Some("success"));
    assert_eq!(tables[&Table::Spans].len(), 1);
}

#[test]
fn newline_delimited_documents_of_an_explicit_format_are_read_line_by_line() {
    // Goal: X-Ray daemon output and `jq -c` CloudTrail come one document per line; a bad line is a dead
    // letter of its own and the others are kept.
    let segment = |id: &str| {
        serde_json::json!({"name": "orders", "id": id, "trace_id": "1-581cf771-a006649127e371903a2de979",
            "start_time": 1478293361.271, "end_time": 1478293361.449})
        .to_string()
    };
    let ndjson = format!("{}\n{{\"name\": \"cut\n{}\n\n", segment("70de5b6f19ff9a0a"), segment("80de5b6f19ff9a0b"));
    let tables = run(Format::XRay, &[("xray", ndjson.as_bytes())]);
    assert_eq!(tables[&Table::Spans].len(), 2);
    let dead = &tables[&Table::DeadLetters];
    assert_eq!(dead.len(), 1);
    assert_eq!(get(&dead[0], "reason"), Some("truncated_json"));
    let events = [r#"{"eventVersion":"1.08","eventTime":"2024-03-05T10:00:00Z","eventSource":"lambda.amazonaws.com","eventName":"GetFunction20150331v2","awsRegion":"us-east-1","sourceIPAddress":"203.0.113.9","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"},"eventID":"e1"}"#; 2]
        .join("\n");
    let tables = run(Format::CloudTrail, &[("trail", events.as_bytes())]);
    assert_eq!(tables[&Table::Cloudtrail].len(), 2);
}

#[test]
fn kinesis_and_firehose_deliveries_of_subscription_payloads_decode() {
    use base64::Engine;
    let payload = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "/aws/lambda/f", "logStream": "s", "subscriptionFilters": [], "logEvents": [{"id": "1", "timestamp": 1709632800000i64, "message": "hello"}]});
    let data = base64::engine::general_purpose::STANDARD.encode(gzip(payload.to_string().as_bytes()));
    let kinesis = serde_json::json!({"Records": [{"kinesis": {"data": data}, "eventSource": "aws:kinesis"}, {"kinesis": {"data": data}, "eventSource": "aws:kinesis"}]});
    let firehose = serde_json::json!({"invocationId": "x", "deliveryStreamArn": "arn", "records": [{"recordId": "1", "data": data}]});
    let control = serde_json::json!({"messageType": "CONTROL_MESSAGE", "owner": "CloudwatchLogs", "logGroup": "", "logStream": "", "subscriptionFilters": [], "logEvents": [{"id": "", "timestamp": 1, "message": "CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."}]});
    let tables = run(
        Format::Auto,
        &[
            ("k", kinesis.to_string().as_bytes()),
            ("f", firehose.to_string().as_bytes()),
            ("c", control.to_string().as_bytes()),
        ],
    );
    let logs = &tables[&Table::Logs];
    assert_eq!(logs.len(), 3);
    assert!(logs.iter().all(|l| get(l, "function_name") == Some("f")));
    assert!(!tables.contains_key(&Table::DeadLetters));
}

#[test]
fn otlp_log_records_are_log_lines_of_their_function_and_request() {
    let id = "8f507cfc-1a2b-4697-b07a-ac58fc914c95";
    let logs = serde_json::json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "aws.lambda.invoked_arn", "value": {"stringValue": "arn:aws:lambda:eu-west-1:111122223333:function:orders:live"}},
            {"key": "cloud.account.id", "value": {"stringValue": "111122223333"}},
            {"key": "faas.instance", "value": {"stringValue": "2024/03/05/[$LATEST]0123"}}]},
        "scopeLogs": [{"logRecords": [
            {"timeUnixNano": "1709632800100000000", "severityText": "INFO", "body": {"stringValue": "order placed"},
             "attributes": [{"key": "faas.invocation_id", "value": {"stringValue": id}}],
             "traceId": "5759E988BD862E3FE1BE46A994272793", "spanId": "53995C3F42CD8AD8"},
            {"observedTimeUnixNano": "1709632800200000000", "body": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "1"}}]}}},
            {"timeUnixNano": "1709632800300000000"}]}]}]});
    let tables = run(Format::Auto, &[("otlp.json", logs.to_string().as_bytes())]);
    let rows = &tables[&Table::Logs];
    assert_eq!(rows.len(), 2);
    assert_eq!(get(&rows[0], "function_name"), Some("orders"));
    assert_eq!(get(&rows[0], "log_group"), Some("/aws/lambda/orders"));
    assert_eq!(get(&rows[0], "log_stream"), Some("2024/03/05/[$LATEST]0123"));
    assert_eq!(get(&rows[0], "request_id"), Some(id));
    assert_eq!(get(&rows[0], "message"), Some("order placed"));
    assert_eq!(get(&rows[0], "ts"), Some("2024-03-05T10:00:00.100Z"));
    assert_eq!(get(&rows[1], "ts"), Some("2024-03-05T10:00:00.200Z"), "the observed time when no time is set");
    assert_eq!(tables[&Table::DeadLetters].len(), 1, "a record without a body");
}

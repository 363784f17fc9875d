//! Throughput of the security detections, per input kind, single-threaded (the detection thread):
//! invocations with their trigger payloads (injection matching, callers, resources), application log
//! lines (injection matching, denial bursts, Sigma log rules), and CloudTrail events (control plane,
//! bursts, the shipped Sigma rules).
//!
//! `cargo bench -p coldtrail-detect --bench security`

use std::time::Instant;

use arrow::array::RecordBatch;
use detect::security::{SecurityConfig, SecurityDetections, SigmaRules};
use store::rows::{TableBuilder, Value};
use store::Table;
use workload::cloudtrail::{routine, Team};
use workload::{fleet, invocations_batch, Generator, Rng};

const START_US: i64 = 1_795_219_200_000_000;

fn measure(name: &str, table: Table, batches: &[RecordBatch]) {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let rules = if std::env::var("NO_SIGMA").is_ok() { SigmaRules::default() } else { SigmaRules::shipped() };
    let mut security = SecurityDetections::new(SecurityConfig::default(), rules);
    let mut alerts = Vec::new();
    let started = Instant::now();
    for batch in batches {
        security.push(table, batch, &mut alerts);
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{name:<12} {rows:>9} rows  {:>8.2} s  {:>10.0} rows/s  {} alerts",
        seconds,
        rows as f64 / seconds,
        alerts.len()
    );
}

fn text(value: &serde_json::Value, key: &str) -> Option<String> {
    value.get(key).and_then(|v| v.as_str()).map(str::to_string)
}

fn main() {
    // A generated fleet's invocations: two hours of 200 functions.
    let mut functions = fleet(200, &mut Rng::new(4));
    for function in &mut functions {
        function.rate_per_minute = function.rate_per_minute.max(5.0);
    }
    let mut generator = Generator::new(functions.clone(), 4);
    let mut invocations = Vec::new();
    let mut batches = Vec::new();
    for minute in 0..120 {
        invocations.clear();
        generator.minute(START_US + minute * 60_000_000, &mut invocations);
        batches.extend(invocations_batch(&functions, &invocations));
    }
    measure("invocations", Table::Invocations, &batches);

    // Application log lines: JSON-format lines echoing requests, plain lines, one in a hundred hostile.
    let samples = [
        r#"{"level":"INFO","msg":"handled request","path":"/orders/42","query":{"status":"open","page":"2"},"ms":12}"#,
        "INFO processed 25 records from the queue in 310 ms",
        r#"{"level":"WARN","msg":"slow downstream call","url":"https://api.example.com/v1/items?id=7","ms":1250}"#,
        "ERROR ValidationError: field 'email' must be an address, got \"jane.o'connor at example\"",
    ];
    let mut builder = TableBuilder::new(Table::Logs);
    let mut log_batches = Vec::new();
    for i in 0..200_000i64 {
        let message = if i % 100 == 0 {
            "received q=1' UNION SELECT password FROM users--".to_string()
        } else {
            samples[i as usize % samples.len()].to_string()
        };
        let request = format!("req-{}", i / 4);
        builder.push(&[
            Value::Time(Some(START_US + i * 10_000)),
            Value::Text(Some(&functions[i as usize % functions.len()].name)),
            Value::Text(Some("/aws/lambda/x")),
            Value::Text(Some("2026/11/16/[$LATEST]abc")),
            Value::Text(Some(&request)),
            Value::Text(Some("INFO")),
            Value::Text(Some(&message)),
            Value::Text(Some("text")),
            Value::Text(Some("bench")),
            Value::Text(Some("0")),
        ]);
        if builder.rows() == 8_192 {
            log_batches.extend(builder.finish());
        }
    }
    log_batches.extend(builder.finish());
    measure("logs", Table::Logs, &log_batches);

    // Routine CloudTrail of a team running 50 functions for two weeks.
    let names: Vec<String> = functions.iter().take(50).map(|f| f.name.clone()).collect();
    let records = routine(&Team::new(&names), START_US, 14 * 24, 4);
    let mut builder = TableBuilder::new(Table::Cloudtrail);
    let mut trail_batches = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let identity = &record["userIdentity"];
        let request = record["requestParameters"].to_string();
        let response = record["responseElements"].to_string();
        let session = text(identity, "arn").and_then(|a| a.rsplit('/').next().map(str::to_string));
        let cells = [
            text(record, "eventSource"),
            text(record, "eventName"),
            text(record, "awsRegion"),
            text(record, "sourceIPAddress"),
            text(record, "userAgent"),
            text(identity, "arn"),
            text(identity, "type"),
            text(identity, "accessKeyId"),
            session,
            text(identity, "accountId"),
            text(record, "errorCode"),
            text(record, "errorMessage"),
        ];
        let mut row: Vec<Value> = vec![Value::Time(Some(START_US + i as i64 * 1_000_000))];
        row.extend(cells.iter().map(|c| Value::Text(c.as_deref())));
        row.extend([
            Value::Text(Some(&request)),
            Value::Text(Some(&response)),
            Value::Text(None),
            Value::Bool(record["readOnly"].as_bool()),
        ]);
        let event_id = text(record, "eventID");
        row.extend([
            Value::Text(event_id.as_deref()),
            Value::Text(Some("AwsApiCall")),
            Value::Text(Some("123456789012")),
            Value::Text(Some("bench")),
            Value::Text(Some("0")),
        ]);
        builder.push(&row);
        if builder.rows() == 8_192 {
            trail_batches.extend(builder.finish());
        }
    }
    trail_batches.extend(builder.finish());
    measure("cloudtrail", Table::Cloudtrail, &trail_batches);
}

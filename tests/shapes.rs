//! Golden test of every shape in which CloudWatch Logs events reach a SOC: one generated fleet, rendered
//! in each shape (`workload::shapes`), read by the real pipeline with the format detected, gives the same
//! invocations (request ids, durations, statuses, cold starts, trace ids) and the same log line times as
//! the subscription payloads it was rendered from.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use ingest::{Format, Pipeline, Unit};
use store::Table;
use workload::shapes::{render, Shape};
use workload::{fleet, Generator, Rng};

/// 2026-11-29T00:00:00Z.
const START_US: i64 = 1_795_910_400_000_000;
const MINUTE_US: i64 = 60_000_000;

/// An hour of a small fleet as subscription payloads, with the number of invocations.
fn payloads() -> (Vec<serde_json::Value>, usize) {
    let functions = fleet(4, &mut Rng::new(11));
    let mut generator = Generator::new(functions.clone(), 11);
    let mut rng = Rng::new(5);
    let (mut payloads, mut invocations, mut next_id) = (Vec::new(), 0, 0u64);
    for minute in 0..60 {
        let mut batch = Vec::new();
        generator.minute(START_US + minute * MINUTE_US, &mut batch);
        invocations += batch.len();
        let rendered = workload::render::render_minute(&functions, &batch, &mut rng, &mut next_id, |_, _| false);
        payloads.extend(rendered.payloads.into_iter().map(|(_, _, payload)| payload));
    }
    (payloads, invocations)
}

/// What a shape gives: per request id (duration, status, cold start, trace id, function), the times of
/// the log lines that have their own, and how many lines had to borrow one.
#[derive(Debug, PartialEq)]
struct Outcome {
    invocations: BTreeMap<String, (String, String, String, String, String)>,
    own_times: BTreeMap<(String, i64), usize>,
    borrowed_times: usize,
    dead_letters: usize,
}

/// A column as text, `∅` for null.
fn texts(batch: &RecordBatch, column: &str) -> Vec<String> {
    let column = cast(batch.column_by_name(column).unwrap(), &DataType::Utf8).unwrap();
    let column = column.as_string::<i32>();
    (0..column.len()).map(|row| if column.is_null(row) { "∅".into() } else { column.value(row).to_string() }).collect()
}

fn text(batch: &RecordBatch, column: &str, row: usize) -> String {
    texts(batch, column).swap_remove(row)
}

fn ingest(shape: Shape, payloads: &[serde_json::Value]) -> Outcome {
    let mut pipeline = Pipeline::default();
    // Firehose with message extraction keeps no group: the object's prefix names the function.
    let log_group = (shape == Shape::Messages).then_some("/aws/lambda/{-2}");
    for (path, bytes) in render(shape, payloads, "2026-11-29T00") {
        let source = format!("file:{path}");
        pipeline.ingest(Format::Auto, &bytes, &Unit { source: &source, position: "0", key: Some(&path), log_group });
    }
    pipeline.finish();
    let mut outcome = Outcome {
        invocations: BTreeMap::new(),
        own_times: BTreeMap::new(),
        borrowed_times: 0,
        dead_letters: pipeline.stats.dead_letters_total() as usize,
    };
    for (table, batch) in pipeline.take_batches() {
        match table {
            Table::Invocations => {
                let [ids, durations, statuses, colds, traces, functions] =
                    ["request_id", "duration_ms", "status", "cold_start", "trace_id", "function_name"]
                        .map(|column| texts(&batch, column));
                for row in 0..batch.num_rows() {
                    let key = ids[row].clone();
                    let value = (
                        durations[row].clone(),
                        statuses[row].clone(),
                        colds[row].clone(),
                        traces[row].clone(),
                        functions[row].clone(),
                    );
                    assert!(outcome.invocations.insert(key, value).is_none(), "{shape:?}: an invocation twice");
                }
            }
            Table::Logs => {
                let ts = batch.column_by_name("ts").unwrap().as_primitive::<TimestampMicrosecondType>();
                let (formats, messages) = (texts(&batch, "format"), texts(&batch, "message"));
                for row in 0..batch.num_rows() {
                    if formats[row].contains('+') {
                        outcome.borrowed_times += 1;
                    } else {
                        let key = (messages[row].clone(), ts.value(row));
                        *outcome.own_times.entry(key).or_default() += 1;
                    }
                }
            }
            _ => {}
        }
    }
    outcome
}

#[test]
fn every_shape_gives_the_same_invocations_and_log_times() {
    let (payloads, generated) = payloads();
    let expected = ingest(Shape::Subscription, &payloads);
    assert_eq!(expected.invocations.len(), generated, "subscription payloads give every invocation");
    assert_eq!((expected.borrowed_times, expected.dead_letters), (0, 0));
    assert!(expected.invocations.values().all(|(_, _, _, trace, function)| trace != "∅" && function != "∅"));
    let lines: usize = expected.own_times.values().sum();
    for shape in Shape::ALL.into_iter().skip(1) {
        let got = ingest(shape, &payloads);
        assert_eq!(got.dead_letters, 0, "{shape:?}");
        assert_eq!(got.invocations.len(), expected.invocations.len(), "{shape:?}");
        let differ: Vec<_> = expected
            .invocations
            .iter()
            .filter(|(id, value)| got.invocations.get(*id) != Some(value))
            .take(3)
            .map(|(id, value)| format!("{id}: {value:?} became {:?}", got.invocations.get(id)))
            .collect();
        assert!(differ.is_empty(), "{shape:?}: the invocations differ: {differ:#?}");
        if shape == Shape::Messages {
            // Bare messages carry no event time: START, END and REPORT lines borrow the time of the line
            // before them and say so; the lines with a time of their own keep it.
            assert_eq!(got.borrowed_times, 3 * generated, "{shape:?}");
            assert!(got.own_times.iter().all(|(key, n)| expected.own_times.get(key) == Some(n)), "{shape:?}");
            assert_eq!(got.own_times.values().sum::<usize>() + got.borrowed_times, lines, "{shape:?}");
        } else {
            assert_eq!(got.borrowed_times, 0, "{shape:?}");
            assert!(got.own_times == expected.own_times, "{shape:?}: the log times differ");
        }
    }
}

/// The NDJSON file that a new user tried first: 0 invocations and the time of the ingest before.
#[test]
fn ndjson_of_cloudwatch_events_becomes_invocations_at_their_event_times() {
    let id = "8f507cfc-1a2b-4697-b07a-ac58fc914c95";
    let lines = [
        (1_700_000_000_000i64, format!("START RequestId: {id} Version: $LATEST")),
        (1_700_000_000_100, format!("2023-11-14T22:13:20.100Z\t{id}\tINFO\thello")),
        (1_700_000_000_250, format!("END RequestId: {id}")),
        (
            1_700_000_000_250,
            format!("REPORT RequestId: {id}\tDuration: 249.50 ms\tBilled Duration: 250 ms\tMemory Size: 128 MB\tMax Memory Used: 60 MB\t"),
        ),
    ];
    let mut ndjson = String::new();
    for (idx, (ms, message)) in lines.iter().enumerate() {
        let event = serde_json::json!({"id": idx.to_string(), "timestamp": ms, "message": message,
            "logGroup": "/aws/lambda/orders", "logStream": "2023/11/14/[$LATEST]0123456789abcdef"});
        ndjson.push_str(&format!("{event}\n"));
    }
    let mut pipeline = Pipeline::default();
    pipeline.ingest(
        Format::Auto,
        ndjson.as_bytes(),
        &Unit { source: "test", position: "0", key: None, log_group: None },
    );
    pipeline.finish();
    let batches = pipeline.take_batches();
    let invocations: Vec<&RecordBatch> =
        batches.iter().filter(|(t, _)| *t == Table::Invocations).map(|(_, b)| b).collect();
    assert_eq!(invocations.len(), 1);
    let invocation = invocations[0];
    assert_eq!(invocation.num_rows(), 1);
    assert_eq!(text(invocation, "function_name", 0), "orders");
    assert_eq!(text(invocation, "duration_ms", 0), "249.5");
    let ts = invocation.column_by_name("ts").unwrap().as_primitive::<TimestampMicrosecondType>();
    assert_eq!(ts.value(0), 1_700_000_000_000_000);
    let logs = batches.iter().find(|(t, _)| *t == Table::Logs).map(|(_, b)| b).unwrap();
    let times = logs.column_by_name("ts").unwrap().as_primitive::<TimestampMicrosecondType>();
    let expected: Vec<i64> = lines.iter().map(|(ms, _)| ms * 1_000).collect();
    assert_eq!(times.values().to_vec(), expected);
    assert!((0..logs.num_rows()).all(|row| text(logs, "log_stream", row).starts_with("2023/11/14")));
}

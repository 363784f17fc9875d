//! Bad input: malformed, truncated, oversized and hostile data becomes dead letters with a reason and
//! the raw bytes; nothing panics and nothing good next to it is lost.

use arrow::array::{Array, BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use ingest::{Format, Pipeline, Unit};
use proptest::prelude::*;
use store::Table;

fn run(format: Format, bytes: &[u8]) -> (Pipeline, Vec<(Table, RecordBatch)>) {
    let mut pipeline = Pipeline::default();
    pipeline.ingest(format, bytes, &Unit { source: "test", position: "7", key: None, log_group: None });
    pipeline.finish();
    let batches = pipeline.take_batches();
    (pipeline, batches)
}

fn rows(batches: &[(Table, RecordBatch)], table: Table) -> usize {
    batches.iter().filter(|(t, _)| *t == table).map(|(_, b)| b.num_rows()).sum()
}

/// (reason, raw bytes, original length) of each dead letter.
fn dead_letters(batches: &[(Table, RecordBatch)]) -> Vec<(String, Vec<u8>, i64)> {
    let mut out = Vec::new();
    for (_, batch) in batches.iter().filter(|(t, _)| *t == Table::DeadLetters) {
        let reason = cast(batch.column_by_name("reason").unwrap(), &DataType::Utf8).unwrap();
        let reason = reason.as_any().downcast_ref::<StringArray>().unwrap();
        let raw = batch.column_by_name("raw").unwrap().as_any().downcast_ref::<BinaryArray>().unwrap();
        let len = batch.column_by_name("raw_bytes").unwrap().as_any().downcast_ref::<Int64Array>().unwrap();
        let source = batch.column_by_name("ingest_position").unwrap();
        assert_eq!(source.null_count(), 0, "every dead letter has its position");
        for row in 0..batch.num_rows() {
            out.push((reason.value(row).to_string(), raw.value(row).to_vec(), len.value(row)));
        }
    }
    out
}

#[test]
fn truncated_json_is_a_dead_letter_with_its_bytes() {
    let text = br#"{"Records": [{"eventTime": "2024-01-01T00:00:00Z", "eventSource": "lambda.amazonaws.com", "eventName": "AddPerm"#;
    let (_, batches) = run(Format::Auto, text);
    let dead = dead_letters(&batches);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "truncated_json");
    assert_eq!(dead[0].1, text.to_vec());
}

#[test]
fn broken_gzip_is_a_dead_letter() {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &vec![b'a'; 10_000]).unwrap();
    let mut gz = encoder.finish().unwrap();
    gz.truncate(gz.len() / 2);
    let (_, batches) = run(Format::Auto, &gz);
    let dead = dead_letters(&batches);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "gzip");
    assert_eq!(dead[0].2, gz.len() as i64);
}

#[test]
fn invalid_utf8_and_oversized_lines_are_dead_letters_and_their_neighbours_are_kept() {
    let mut input = b"START RequestId: 8f507cfc-1a2b-4697-b07a-ac58fc914c95 Version: 1\n".to_vec();
    input.extend_from_slice(b"bad \xff\xfe bytes\n");
    input.extend(std::iter::repeat_n(b'x', ingest::pipeline::LINE_BYTES_MAX + 10));
    input.extend_from_slice(b"\nEND RequestId: 8f507cfc-1a2b-4697-b07a-ac58fc914c95\n");
    let (_, batches) = run(Format::Lambda, &input);
    let dead = dead_letters(&batches);
    let reasons: Vec<&str> = dead.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(reasons, vec!["invalid_utf8", "oversized_line"]);
    assert_eq!(dead[1].1.len(), ingest::pipeline::DEAD_LETTER_RAW_BYTES_MAX, "raw bytes are bounded");
    assert_eq!(dead[1].2, ingest::pipeline::LINE_BYTES_MAX as i64 + 10, "the original length is kept");
    assert_eq!(rows(&batches, Table::Logs), 2);
}

#[test]
fn hostile_nesting_is_refused_without_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (_, batches) = run(Format::Auto, deep.as_bytes());
    assert_eq!(dead_letters(&batches)[0].0, "nesting_too_deep");
    let deep_object = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    let (_, batches) = run(Format::CloudTrail, deep_object.as_bytes());
    assert_eq!(dead_letters(&batches)[0].0, "nesting_too_deep");
}

#[test]
fn a_gzip_bomb_nested_in_base64_stops_at_the_depth_limit() {
    use base64::Engine;
    let mut payload = br#"{"messageType":"DATA_MESSAGE","logEvents":[]}"#.to_vec();
    for _ in 0..8 {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &payload).unwrap();
        payload = base64::engine::general_purpose::STANDARD.encode(encoder.finish().unwrap()).into_bytes();
    }
    let (_, batches) = run(Format::Auto, &payload);
    assert_eq!(dead_letters(&batches)[0].0, "nesting_too_deep");
}

#[test]
fn cloudtrail_records_without_required_fields_are_dead_letters_beside_good_ones() {
    let text = br#"{"Records": [
        {"eventTime": "2024-01-01T00:00:00Z", "eventSource": "lambda.amazonaws.com", "eventName": "GetFunction"},
        {"eventSource": "lambda.amazonaws.com", "eventName": "NoTime"},
        {"eventTime": "yesterday", "eventSource": "s3.amazonaws.com", "eventName": "GetObject"}
    ]}"#;
    let (pipeline, batches) = run(Format::CloudTrail, text);
    assert_eq!(rows(&batches, Table::Cloudtrail), 1);
    let reasons: Vec<String> = dead_letters(&batches).into_iter().map(|d| d.0).collect();
    assert_eq!(reasons, vec!["cloudtrail_missing_field", "cloudtrail_bad_time"]);
    assert_eq!(pipeline.stats.dead_letters_total(), 2);
}

#[test]
fn unrecognised_json_and_bad_subscriptions_are_dead_letters() {
    let (_, batches) = run(Format::Auto, br#"{"hello": "world"}"#);
    assert_eq!(dead_letters(&batches)[0].0, "unrecognised_json");
    let (_, batches) = run(Format::Auto, br#"{"awslogs": {"data": "!!not base64!!"}}"#);
    assert_eq!(dead_letters(&batches)[0].0, "bad_base64");
    let (_, batches) =
        run(Format::Subscription, br#"{"messageType": "DATA_MESSAGE", "logEvents": [{"timestamp": "x"}]}"#);
    assert_eq!(dead_letters(&batches)[0].0, "bad_subscription");
}

fn times(batches: &[(Table, RecordBatch)], table: Table) -> Vec<i64> {
    use arrow::array::AsArray;
    use arrow::datatypes::TimestampMicrosecondType;
    let mut out = Vec::new();
    for (_, batch) in batches.iter().filter(|(t, _)| *t == table) {
        out.extend(batch.column(0).as_primitive::<TimestampMicrosecondType>().values().iter().copied());
    }
    out
}

fn subscription(stream: &str, messages: &[&str]) -> String {
    let events: Vec<serde_json::Value> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| serde_json::json!({"id": i.to_string(), "timestamp": 1_700_000_000_000i64 + i as i64, "message": m}))
        .collect();
    serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "/aws/lambda/f", "logStream": stream,
        "subscriptionFilters": [], "logEvents": events})
    .to_string()
}

#[test]
fn payloads_back_to_back_are_each_read_and_a_truncated_last_one_is_a_dead_letter() {
    let (a, b, c) =
        (subscription("s1", &["one", "two"]), subscription("s2", &["three"]), subscription("s3", &["four"]));
    let text = format!("{a}{b}{}", &c[..c.len() / 2]);
    let (_, batches) = run(Format::Auto, text.as_bytes());
    assert_eq!(rows(&batches, Table::Logs), 3);
    let dead = dead_letters(&batches);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0, "truncated_json");
    assert_eq!(dead[0].1, c.as_bytes()[..c.len() / 2].to_vec());
    // Gzip'd members back to back, as Firehose writes them.
    let gzip = |text: &str| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut encoder, text.as_bytes()).unwrap();
        encoder.finish().unwrap()
    };
    let (_, batches) = run(Format::Auto, &[gzip(&a), gzip(&b), gzip(&c)].concat());
    assert_eq!((rows(&batches, Table::Logs), rows(&batches, Table::DeadLetters)), (4, 0));
}

#[test]
fn lines_without_a_time_of_their_own_say_so_and_dead_letters_keep_the_records_time() {
    let id = "8f507cfc-1a2b-4697-b07a-ac58fc914c95";
    // Bare messages: START borrows the time of the first line that has one, END the line's before it.
    let text = format!(
        "START RequestId: {id} Version: $LATEST\n2023-11-14T22:13:20.100Z\t{id}\tINFO\thi\nEND RequestId: {id}\n"
    );
    let (pipeline, batches) = run(Format::Auto, text.as_bytes());
    assert_eq!(times(&batches, Table::Logs), vec![1_700_000_000_100_000; 3]);
    assert_eq!(pipeline.stats.times_inferred, 2);
    // Nothing to borrow from: the time of the ingest, said in the format.
    let before = store::time::now_micros();
    let (pipeline, batches) = run(Format::Auto, format!("END RequestId: {id}").as_bytes());
    assert!(times(&batches, Table::Logs)[0] >= before);
    assert_eq!(pipeline.stats.times_of_ingest, 1);
    let format = batches.iter().find(|(t, _)| *t == Table::Logs).unwrap().1.column_by_name("format").unwrap().clone();
    let format = cast(&format, &DataType::Utf8).unwrap();
    assert_eq!(format.as_any().downcast_ref::<StringArray>().unwrap().value(0), "text+ingest_time");
    // A CloudTrail record that is refused keeps its eventTime; an oversized message its event's time.
    let trail = br#"{"Records": [{"eventTime": "2023-11-14T22:13:20Z", "eventName": "NoSource"}]}"#;
    let (_, batches) = run(Format::CloudTrail, trail);
    assert_eq!(times(&batches, Table::DeadLetters), vec![1_700_000_000_000_000]);
    let huge = "x".repeat(ingest::pipeline::LINE_BYTES_MAX + 1);
    let (_, batches) = run(Format::Auto, subscription("s1", &[&huge]).as_bytes());
    assert_eq!(dead_letters(&batches)[0].0, "oversized_line");
    assert_eq!(times(&batches, Table::DeadLetters), vec![1_700_000_000_000_000]);
}

#[test]
fn forced_event_format_refuses_what_is_no_event_line_by_line() {
    let text =
        "{\"logGroup\":\"/aws/lambda/f\",\"timestamp\":1700000000000,\"message\":\"ok\"}\n{\"hello\":1}\nnot json\n";
    let (_, batches) = run(Format::Events, text.as_bytes());
    assert_eq!(rows(&batches, Table::Logs), 1);
    let reasons: Vec<String> = dead_letters(&batches).into_iter().map(|d| d.0).collect();
    assert_eq!(reasons, vec!["not_an_event", "not_an_event"]);
    let csv = "@timestamp,@message\n2023-11-14 22:13:20.000,ok\n2023-11-14 22:13:21.000,\n\"unterminated";
    let (_, batches) = run(Format::Auto, csv.as_bytes());
    assert_eq!(rows(&batches, Table::Logs), 1);
    assert_eq!(times(&batches, Table::Logs), vec![1_700_000_000_000_000]);
    assert!(rows(&batches, Table::DeadLetters) >= 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_in_any_format(bytes in prop::collection::vec(any::<u8>(), 0..2048), format_idx in 0usize..8) {
        let format = [Format::Auto, Format::Lambda, Format::Subscription, Format::Export, Format::CloudTrail, Format::XRay, Format::Otlp, Format::Events][format_idx];
        let (_, batches) = run(format, &bytes);
        for (table, batch) in &batches {
            let (actual, expected) = (batch.schema(), table.schema());
            prop_assert_eq!(actual.fields(), expected.fields());
        }
    }

    #[test]
    fn arbitrary_text_lines_never_panic(lines in prop::collection::vec("[ -~\t]{0,120}", 0..40)) {
        let text = lines.join("\n");
        let (_, batches) = run(Format::Auto, text.as_bytes());
        // Every non-blank line is either a log row (possibly joined to the one before) or a dead letter.
        let non_blank = lines.iter().filter(|l| !l.trim().is_empty()).count();
        let stored = rows(&batches, Table::Logs) + rows(&batches, Table::DeadLetters) + rows(&batches, Table::Cloudtrail) + rows(&batches, Table::Spans);
        prop_assert!(stored <= non_blank.max(1));
        prop_assert!(non_blank == 0 || stored > 0);
    }

    #[test]
    fn mutated_lambda_reports_never_panic(cut in 0usize..200, flip in any::<prop::sample::Index>()) {
        let mut line = b"REPORT RequestId: 8f507cfc-1a2b-4697-b07a-ac58fc914c95\tDuration: 52.41 ms\tBilled Duration: 53 ms\tMemory Size: 256 MB\tMax Memory Used: 81 MB\tInit Duration: 231.05 ms\tStatus: error\tError Type: Runtime.Unknown".to_vec();
        let at = flip.index(line.len());
        line[at] = line[at].wrapping_add(1);
        line.truncate(cut.min(line.len()));
        let _ = run(Format::Lambda, &line);
    }
}

//! `coldtrail ingest` holds bounded memory whatever the size of its input: one Firehose object (gzip
//! members of subscription payloads back to back, as Firehose delivers CloudWatch Logs to S3) four times
//! larger than another is ingested in the same peak memory, under the 400 MB bound (BENCHMARKS.md,
//! "Ingest memory"), with every line stored; and the progress line shows bytes, records/s and an ETA.

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// The bound on the peak resident memory of an ingest, in MB.
const PEAK_MB_MAX: u64 = 400;
/// How much more the larger input may take: buffers fill up to their bounds, then memory stays flat
/// but for one known overlap: the appender's seal and the maintenance loop's can run at once, so a
/// longer ingest is more likely to hold two segments being encoded (measured growth 45-78 MB; issue 19).
const GROWTH_MB_MAX: u64 = 96;

fn coldtrail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coldtrail"))
}

/// A Firehose object of `invocations` Lambda invocations (four text-format lines each) in payloads of
/// 50, each payload its own gzip member. Returns the number of log lines.
fn write_firehose(path: &Path, invocations: usize) -> usize {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let start_ms = 1_795_996_800_000i64; // 2026-12-01T00:00:00Z
    let mut lines = 0;
    for first in (0..invocations).step_by(50) {
        let mut events = String::new();
        for invocation in first..(first + 50).min(invocations) {
            let rid = format!("5e1c0a3e-7b7d-4c6a-9f43-{invocation:012x}");
            let at = start_ms + invocation as i64 * 10;
            let messages = [
                format!("START RequestId: {rid} Version: $LATEST\\n"),
                format!("2026-12-01T00:00:00.000Z\\t{rid}\\tINFO\\tprocessed order {invocation} for c-{}\\n", invocation % 97),
                format!("END RequestId: {rid}\\n"),
                format!("REPORT RequestId: {rid}\\tDuration: 12.50 ms\\tBilled Duration: 13 ms\\tMemory Size: 256 MB\\tMax Memory Used: 81 MB\\t\\n"),
            ];
            for (offset, message) in messages.iter().enumerate() {
                if !events.is_empty() {
                    events.push(',');
                }
                events.push_str(&format!(
                    r#"{{"id":"{at}{invocation:012}{offset}","timestamp":{},"message":"{message}"}}"#,
                    at + offset as i64
                ));
                lines += 1;
            }
        }
        let payload = format!(
            r#"{{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/lambda/orders-{}","logStream":"2026/12/01/[$LATEST]{:032x}","subscriptionFilters":["coldtrail"],"logEvents":[{events}]}}"#,
            first / 50 % 8,
            first / 50 % 64
        );
        let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        member.write_all(payload.as_bytes()).unwrap();
        out.write_all(&member.finish().unwrap()).unwrap();
    }
    out.flush().unwrap();
    lines
}

/// What `ingest` saw of one run.
struct Run {
    /// The peak memory the summary reports, in MB.
    peak: u64,
    /// The log lines stored.
    lines: u64,
    /// What the progress line printed.
    progress: String,
    /// The summary.
    summary: String,
}

/// Ingests `file` into a new store, with the detectors on or off.
fn ingest(dir: &Path, file: &Path, detect: bool) -> Run {
    let name = file.file_name().unwrap().to_string_lossy();
    let data = dir.join(format!("data-{name}{}", if detect { "-detect" } else { "" }));
    let mut command = coldtrail();
    command.arg("--data").arg(&data).args(["ingest", "--progress", "always"]);
    if !detect {
        command.arg("--no-detect");
    }
    let output = command.arg(file).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let peak = stdout
        .split("peak memory ")
        .nth(1)
        .and_then(|rest| rest.split(" MB").next())
        .and_then(|mb| mb.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in the summary: {stdout}"));
    let lines = stdout
        .split(" log lines")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line count in the summary: {stdout}"));
    // The summary counts every segment the ingest sealed, those sealed by size while it ran included.
    let sealed: u64 = stdout
        .split(" new segments")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no segment count in the summary: {stdout}"));
    let info = coldtrail().arg("--data").arg(&data).args(["info", "--json"]).output().unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    let segments: u64 = info["tables"].as_object().unwrap().values().map(|t| t["segments"].as_u64().unwrap()).sum();
    assert_eq!(sealed, segments, "{stdout}");
    Run { peak, lines, progress: stderr, summary: stdout }
}

#[test]
fn ingest_memory_stays_under_its_bound_whatever_the_input_size() {
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (dir.path().join("small.gz"), dir.path().join("large.gz"));
    let small_lines = write_firehose(&small, 150_000);
    let large_lines = write_firehose(&large, 600_000);

    let Run { peak: small_peak, lines: stored, .. } = ingest(dir.path(), &small, false);
    assert_eq!(stored as usize, small_lines);
    let Run { peak: large_peak, lines: stored, progress, .. } = ingest(dir.path(), &large, false);
    assert_eq!(stored as usize, large_lines, "every line of the large object is read");
    assert!(large_peak <= PEAK_MB_MAX, "peak memory {large_peak} MB over the {PEAK_MB_MAX} MB bound");
    assert!(
        large_peak <= small_peak + GROWTH_MB_MAX,
        "memory grows with the input: {small_peak} MB for {small_lines} lines, {large_peak} MB for {large_lines}"
    );

    // The progress line, redrawn as chunks are read, ends at the whole object.
    let last = progress.rsplit('\r').next().unwrap();
    let size = std::fs::metadata(&large).unwrap().len() as f64 / 1e6;
    assert!(last.contains(&format!("of {size:.1} MB (100%)")), "{last:?}");
    assert!(last.contains("records (") && last.contains("/s)") && last.contains("ETA 0:00"), "{last:?}");
    assert!(progress.matches('\r').count() >= 2, "redrawn while reading, not only at the end: {progress:?}");

    // The same object again is skipped as ingested, without reading it.
    let data = dir.path().join("data-large.gz");
    let output = coldtrail().arg("--data").arg(&data).args(["ingest", "--no-detect"]).arg(&large).output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("skipped 1 files ingested before"));
}

/// With the detectors on, an ingest of files is scored from the store at its end, in reads of at most
/// `detect::replay::READ_ROWS_MAX` rows of whole minutes: 150,000 invocations and 600,000 lines within
/// 25 minutes of event time (all in one hour, which the detectors read at once before) stay under the
/// same bound.
#[test]
fn ingest_with_the_detectors_on_stays_under_the_same_bound() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dense.gz");
    let lines = write_firehose(&file, 150_000);
    let Run { peak, lines: stored, .. } = ingest(dir.path(), &file, true);
    eprintln!("peak memory with the detectors on: {peak} MB");
    assert_eq!(stored as usize, lines);
    assert!(peak <= PEAK_MB_MAX, "peak memory {peak} MB with the detectors on, over the {PEAK_MB_MAX} MB bound");
}

/// A CloudTrail file (`{"Records": [...]}`, one document) of `events` API calls. Returns its events.
fn write_trail_document(path: &Path, events: usize) -> usize {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    out.write_all(b"{\"Records\":[").unwrap();
    for n in 0..events {
        if n > 0 {
            out.write_all(b",").unwrap();
        }
        write!(
            out,
            r#"{{"eventVersion":"1.09","eventTime":"2026-12-01T{:02}:{:02}:{:02}Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"us-east-1","sourceIPAddress":"10.0.{}.{}","userAgent":"aws-sdk-js/3.600.0","userIdentity":{{"type":"AssumedRole","principalId":"AROAEXAMPLE:orders","arn":"arn:aws:sts::123456789012:assumed-role/orders-{}-role/x","accountId":"123456789012","accessKeyId":"ASIAEXAMPLE{:08}"}},"requestParameters":{{"bucketName":"orders-archive","key":"orders/{n}.json"}},"responseElements":null,"requestID":"{n:08x}-0000","eventID":"{n:08x}-1111-4000-8000-{n:012x}","readOnly":true,"eventType":"AwsApiCall","managementEvent":false,"recipientAccountId":"123456789012"}}"#,
            n / 36_000 % 24,
            n / 600 % 60,
            n / 10 % 60,
            n % 250,
            n % 199,
            n % 20,
            n % 500
        )
        .unwrap();
    }
    out.write_all(b"]}").unwrap();
    out.flush().unwrap();
    events
}

/// Issue 19: one JSON document is read in pieces of its largest array, so a CloudTrail file four times
/// larger than another is ingested in the same peak memory, under the same bound. Read whole, the
/// larger one (240,000 events, 166 MB) peaked at about four times its size.
#[test]
fn one_json_document_of_any_size_is_read_under_the_same_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (dir.path().join("small-trail.json"), dir.path().join("large-trail.json"));
    let small_events = write_trail_document(&small, 60_000);
    let large_events = write_trail_document(&large, 240_000);
    let mut peaks = Vec::new();
    for (file, events) in [(&small, small_events), (&large, large_events)] {
        let run = ingest(dir.path(), file, false);
        let summary = &run.summary;
        assert!(summary.contains(&format!(" {events} CloudTrail events, ")), "every event is read: {summary}");
        assert!(summary.contains(" 0 dead letters"), "{summary}");
        peaks.push(run.peak);
    }
    let size = std::fs::metadata(&large).unwrap().len() / 1_000_000;
    assert!(peaks[1] <= PEAK_MB_MAX, "peak memory {} MB for a {size} MB document, over {PEAK_MB_MAX} MB", peaks[1]);
    assert!(peaks[1] <= peaks[0] + GROWTH_MB_MAX, "memory grows with the document: {peaks:?} MB");
}

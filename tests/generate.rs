//! `coldtrail generate` as AWS would deliver it: files and Kafka records that, ingested through the real
//! parser, give back the very invocations that `generate` stores directly.

use std::path::Path;
use std::process::Command;

use rdkafka::mocking::MockCluster;

const START: &str = "2026-11-20T00:00:00Z";

fn coldtrail(data: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail")).arg("--data").arg(data).args(args).output().unwrap();
    assert!(output.status.success(), "coldtrail {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// What the invocations of a data directory look like, per function and status. Log lines carry
/// durations to the hundredth of a millisecond: each is rounded so before summing.
fn summary(data: &Path) -> String {
    coldtrail(
        data,
        &[
            "sql",
            "SELECT function_name, trigger, status, count(*) AS n, sum(CASE WHEN cold_start THEN 1 ELSE 0 END) AS cold, \
             round(sum(round(duration_ms, 2)), 1) AS duration, round(sum(round(init_duration_ms, 2)), 1) AS init, sum(max_memory_used_mb) AS memory, \
             count(DISTINCT source_ip) AS ips, count(DISTINCT principal) AS principals, count(DISTINCT http_path) AS paths, \
             count(DISTINCT trace_id) AS traces, count(DISTINCT error_type) AS errors \
             FROM invocations GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            "--format",
            "csv",
        ],
    )
}

fn count(data: &Path, table: &str) -> i64 {
    let out = coldtrail(data, &["sql", &format!("SELECT count(*) FROM {table}"), "--format", "csv"]);
    out.lines().nth(1).unwrap().trim().parse().unwrap()
}

#[test]
fn generated_files_ingest_into_the_invocations_generate_stores() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    let args = ["--functions", "16", "--minutes", "90", "--start", START, "--seed", "5"];
    let wrote = coldtrail(dir.path(), &[&["generate", "--out", files.to_str().unwrap()][..], &args[..]].concat());
    assert!(wrote.contains("X-Ray segments"), "{wrote}");
    for sub in ["logs", "xray", "cloudtrail"] {
        assert!(files.join(sub).read_dir().unwrap().next().is_some(), "{sub} files written");
    }
    let parsed = dir.path().join("parsed");
    let ingested = coldtrail(&parsed, &["ingest", "--no-detect", files.to_str().unwrap()]);
    assert!(ingested.contains(" 0 dead letters"), "{ingested}");
    let direct = dir.path().join("direct");
    coldtrail(&direct, &[&["generate", "--no-detect"][..], &args[..]].concat());
    let (from_logs, from_generator) = (summary(&parsed), summary(&direct));
    assert!(from_logs.lines().count() > 10, "{from_logs}");
    assert_eq!(from_logs, from_generator, "parsed from the rendered logs vs stored directly");
    assert!(count(&parsed, "spans") > 0);
    assert!(count(&parsed, "cloudtrail") > 0);
    assert!(count(&parsed, "logs") > 4 * count(&parsed, "invocations"));

    // With the detectors on, files of one function-hour each come out of event-time order; a backfill of
    // files is scored at its end in event-time order, so every invocation is scored and none is late
    // (before issue 16 a share came after its minute had closed and went unscored).
    let detected = coldtrail(&dir.path().join("detected"), &["ingest", files.to_str().unwrap()]);
    let invocations = count(&parsed, "invocations");
    assert!(
        detected.contains(&format!("detectors: {invocations} invocations in ")),
        "not every invocation was scored: {detected}"
    );
    assert!(detected.contains(" 0 rows came after their minute was scored"), "{detected}");
}

#[test]
fn generated_records_published_to_kafka_ingest_into_the_same_invocations() {
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["lambda-logs", "cloudtrail", "xray"] {
        cluster.create_topic(topic, 3, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let args = ["--functions", "8", "--minutes", "30", "--start", START, "--seed", "9"];
    let published = coldtrail(dir.path(), &[&["generate", "--kafka", &bootstrap][..], &args[..]].concat());
    assert!(published.starts_with("published "), "{published}");
    let parsed = dir.path().join("parsed");
    let input = format!("kafka://{bootstrap}/lambda-logs:subscription,cloudtrail:cloudtrail,xray:xray");
    let ingested = coldtrail(&parsed, &["ingest", "--no-detect", &input, "--idle-exit", "5"]);
    assert!(ingested.contains("position conflicts"), "{ingested}");
    let direct = dir.path().join("direct");
    coldtrail(&direct, &[&["generate", "--no-detect"][..], &args[..]].concat());
    assert_eq!(summary(&parsed), summary(&direct));
    assert!(count(&parsed, "spans") > 0);
    assert!(count(&parsed, "cloudtrail") > 0);
    assert_eq!(count(&parsed, "dead_letters"), 0);
}

#[test]
fn generate_refuses_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("--data")
        .arg(dir.path())
        .args(["generate", "--minutes", "5", "--xray-sample", "2"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--xray-sample"));
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("--data")
        .arg(dir.path())
        .args(["generate", "--minutes", "5", "--out", "/x", "--kafka", "b:1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}

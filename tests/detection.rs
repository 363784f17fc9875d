//! The live detection path through the binary: rows appended to the store reach the detection thread
//! through the store's subscription, alerts are stored rows that SQL reads, and the state checkpoint lets
//! a second run continue with its baselines.

use std::path::Path;
use std::process::Command;

fn coldtrail(data: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail")).arg("--data").arg(data).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "coldtrail {args:?}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn generated_anomalies_become_stored_alerts_and_state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let first = coldtrail(
        data,
        &[
            "generate",
            "--functions",
            "6",
            "--minutes",
            "420",
            "--start",
            "2026-11-16T00:00:00Z",
            "--anomaly",
            "spike:0:400",
            "--anomaly",
            "errors:1:400",
        ],
    );
    assert!(first.contains("detectors: "), "{first}");
    let checkpoints = detect::engine::Checkpoints::new(data.join("detect"));
    assert!(checkpoints.stream_path().exists(), "no detector checkpoint after the run");

    let csv = coldtrail(
        data,
        &[
            "sql",
            "SELECT function_name, detector, severity, window_start, evidence, query FROM alerts \
             WHERE window_start >= '2026-11-16T06:40:00Z' ORDER BY window_start",
            "--format",
            "csv",
        ],
    );
    let spike = csv.lines().find(|l| l.starts_with("orders-api,anomaly.invocations,"));
    assert!(spike.is_some(), "no invocation-rate alert for the spiked function:\n{csv}");
    assert!(spike.unwrap().contains("SELECT ts, request_id"), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("payments-worker,anomaly.errors,")), "no error-burst alert:\n{csv}");
    let onset_minute = csv
        .lines()
        .filter(|l| l.starts_with("orders-api,anomaly.invocations,"))
        .filter_map(|l| l.split(',').nth(3))
        .next()
        .unwrap()
        .to_string();
    assert!(onset_minute.starts_with("2026-11-16T06:4"), "spike found at {onset_minute}, not within minutes of 06:40");

    // A second run continues the same fleet where the first stopped: the checkpoint is restored, so no
    // warm-up passes and a new spike is found at once.
    let before = std::fs::read(checkpoints.progress_path()).unwrap();
    let second = coldtrail(
        data,
        &[
            "generate",
            "--functions",
            "6",
            "--minutes",
            "30",
            "--start",
            "2026-11-16T07:00:00Z",
            "--anomaly",
            "spike:2:10",
        ],
    );
    assert!(second.contains("detectors: "), "{second}");
    assert_ne!(std::fs::read(checkpoints.progress_path()).unwrap(), before, "the second run saved no checkpoint");
    let csv = coldtrail(
        data,
        &["sql", "SELECT function_name FROM alerts WHERE window_start >= '2026-11-16T07:10:00Z'", "--format", "csv"],
    );
    assert!(csv.lines().any(|l| l == "users-resize"), "the restored detectors missed the spike:\n{csv}");
}

/// Issue 16: a checkpoint that cannot be written does not fail an ingest whose rows are stored; it is
/// a warning, and the rows are there.
#[test]
fn an_unwritable_checkpoint_is_a_warning_and_the_rows_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // `<data>/detect` is a file: the checkpoint directory cannot be made (root ignores permissions).
    std::fs::write(data.join("detect"), b"not a directory").unwrap();
    let samples = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("tests/data/samples/orders-api.subscription.json");
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("--data")
        .arg(&data)
        .args(["ingest", samples.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("warning: the detectors' state was not saved"), "{stderr}");
    let count = coldtrail(&data, &["sql", "SELECT count(*) AS n FROM logs", "--format", "csv"]);
    assert!(count.lines().last().is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 0)), "{count}");
}

#[test]
fn detect_series_scores_every_row_of_a_series_with_a_repeated_hour_a_duplicate_and_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let mut series = String::from("timestamp,value\n");
    let mut rows = 0;
    let mut add = |minute: i64, series: &mut String| {
        series.push_str(&format!("2014-10-26 {:02}:{:02}:00,{}\n", minute / 60, minute % 60, 10 + minute % 7));
        rows += 1;
    };
    for minute in (0..180).step_by(5).chain((120..180).step_by(5)) {
        add(minute, &mut series); // 02:00 to 02:55 twice: a daylight-saving hour
    }
    add(180, &mut series);
    add(180, &mut series); // a duplicate
    for minute in (185..240).step_by(5).chain((360..420).step_by(5)) {
        add(minute, &mut series); // and two hours missing
    }
    let file = dir.path().join("series.csv");
    std::fs::write(&file, &series).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail")).arg("detect-series").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let scored: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(scored.len(), rows, "every row is scored:\n{stdout}");
    assert!(scored.iter().all(|line| line.rsplit(',').next().unwrap().parse::<f64>().is_ok()), "{stdout}");
    for warning in ["1 timestamps step back", "1 timestamps repeat", "1 gaps"] {
        assert!(stderr.contains(warning), "no warning {warning:?}: {stderr}");
    }
}

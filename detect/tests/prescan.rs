//! The injection pre-scan of an input scored at its end (`detect::security::prescan`): while the rows are
//! stored, the detection thread's pre-scan notes the clean texts, and the scoring at the end raises the
//! alerts a replay without notes raises.

use std::sync::Arc;
use std::time::{Duration, Instant};

use detect::engine::{Checkpoints, Engine, EngineConfig};
use detect::replay::{replay, stored_span};
use detect::runner::{DetectionThread, InputEnd, LiveConfig};
use detect::security::prescan::Scanned;
use detect::security::SigmaRules;
use store::rows::{TableBuilder, Value};
use store::{Store, StoreConfig, Table, TimeRange};

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
const LINES: i64 = 3_000;

fn message(i: i64) -> String {
    match i % 50 {
        0 => format!("received q={i}' UNION SELECT password FROM users--"),
        1 => format!(r#"event {{"queryStringParameters":{{"file":"../../../../etc/passwd"}},"n":{i}}}"#),
        2 => format!("handled order {i} in {} ms", i % 97),
        _ => format!(r#"{{"level":"INFO","msg":"handled request","path":"/orders/{i}","ms":{}}}"#, i % 31),
    }
}

/// Application log lines of three functions over 50 minutes, one in 25 hostile, in batches of 500;
/// `appended` is called with the lines stored so far after each.
async fn append_logs<F: std::future::Future<Output = ()>>(store: &Store, appended: impl Fn(i64) -> F) {
    let mut builder = TableBuilder::new(Table::Logs);
    for i in 0..LINES {
        let function = format!("orders-{}", i % 3);
        let request = format!("req-{}", i / 4);
        let message = message(i);
        builder.push(&[
            Value::Time(Some(T0 + i * 1_000_000)),
            Value::Text(Some(&function)),
            Value::Text(Some("/aws/lambda/orders")),
            Value::Text(Some("2026/01/01/[$LATEST]abc")),
            Value::Text(Some(&request)),
            Value::Text(Some("INFO")),
            Value::Text(Some(&message)),
            Value::Text(Some("text")),
            Value::Text(Some("test")),
            Value::Text(Some("0")),
        ]);
        if builder.rows() == 500 || i == LINES - 1 {
            let batch = builder.finish().expect("rows were pushed");
            store.append(&[(Table::Logs, batch)], &[]).unwrap();
            appended(i + 1).await;
        }
    }
}

fn hostile_before(lines: i64) -> usize {
    (0..lines).filter(|i| i % 50 < 2).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_ingest_pre_scans_its_rows_and_scores_them_with_the_alerts_of_a_replay() {
    // Scored at the end, as `coldtrail ingest` of files: the pre-scan notes clean lines meanwhile.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).await.unwrap());
    let engine = Engine::new(&EngineConfig::default(), SigmaRules::shipped());
    let clean = engine.clean_texts().expect("security detections are on");
    let config = LiveConfig { score_while_running: false, ..LiveConfig::default() };
    let detection =
        DetectionThread::start(store.clone(), engine, Checkpoints::new(dir.path().join("detect")), config).unwrap();
    // The pre-scan is best effort (a batch it is not ready for is left to the scoring): each batch is
    // given the time to be pre-scanned, so that every clean line is noted.
    append_logs(&store, |lines| {
        let clean = clean.clone();
        async move {
            let waited = Instant::now();
            while clean.len() < lines as usize - hostile_before(lines) && waited.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await;
    let hostile = hostile_before(LINES);
    // Every clean line is noted, none of the hostile ones.
    assert_eq!(clean.len(), LINES as usize - hostile, "the pre-scan noted every clean line and nothing else");
    for i in [0, 1, 50, 51] {
        assert!(!clean.is_clean(Scanned::LogLine, &message(i)), "{} was noted clean", message(i));
    }
    assert!(clean.is_clean(Scanned::LogLine, &message(2)));
    assert!(!clean.is_clean(Scanned::Payload, &message(2)), "a log line is not a payload");
    let prescanned = detection.stop(InputEnd::Closed).unwrap();

    // The same rows replayed by fresh detections without notes.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).await.unwrap());
    append_logs(&store, |_| async {}).await;
    let mut engine = Engine::new(&EngineConfig::default(), SigmaRules::shipped());
    let (oldest, newest) = stored_span(&store, &engine.tables()).unwrap();
    replay(&store, &mut engine, TimeRange::new(oldest, newest + 1), |_| Ok(())).await.unwrap();
    engine.finish();
    let replayed = engine.stats();

    let injection = |findings: &std::collections::BTreeMap<String, u64>| {
        findings.iter().filter(|(d, _)| d.starts_with("injection")).map(|(_, n)| n).sum::<u64>()
    };
    assert!(injection(&replayed.security.findings) > 0, "the hostile lines raise findings: {replayed:?}");
    assert_eq!(prescanned.security.findings, replayed.security.findings);
    assert_eq!(prescanned.security.log_lines, replayed.security.log_lines);
}

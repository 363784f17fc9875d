//! Issue 24: scale-out keeps detection right. One fleet with injected anomalies and CloudTrail stories is
//! published to librdkafka's mock cluster keyed as AWS delivers it (Lambda logs by log stream), then
//! consumed twice, each time into a shared location of its own: by one `coldtrail serve`, and by three in
//! one consumer group, one of them killed with SIGKILL (and started again, as a supervisor would) and one
//! stopped with SIGTERM while detection runs. Both runs store the same rows and the same alert ids, each
//! id once, and each alert reaches a real webhook receiver (axum) once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

const MINUTE_US: i64 = 60_000_000;
const PARTITIONS: u32 = 3;

type Received = Arc<Mutex<Vec<Value>>>;

fn receiver(listener: tokio::net::TcpListener) -> Received {
    let received: Received = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move |body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    received.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or_default());
                    axum::http::StatusCode::OK
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    received
}

fn coldtrail(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail")).args(args).output().unwrap();
    assert!(output.status.success(), "coldtrail {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn launch(data: &Path, location: &Path, config: &Path, webhook: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("--data")
        .arg(data)
        .arg("--location")
        .arg(location)
        .args(["serve", "--pg-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--webhook", webhook])
        .arg("--config")
        .arg(config)
        .env("COLDTRAIL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.with_extension("log")).unwrap())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, name: &str) {
    assert!(Command::new("kill").args([name, &child.id().to_string()]).status().unwrap().success());
}

/// The event time through which each detection partition has scored, from its state in the location.
fn scored_through(location: &Path) -> Vec<Option<i64>> {
    (0..PARTITIONS)
        .map(|p| {
            let path = location.join(format!("_detect/partitions-{PARTITIONS}/{p}/progress.json"));
            let progress: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
            progress["scored_through_us"].as_i64()
        })
        .collect()
}

/// Waits until every partition has scored through `target`.
async fn wait_scored(location: &Path, target: i64, what: &str) {
    let started = Instant::now();
    loop {
        let through = scored_through(location);
        if through.iter().all(|t| t.is_some_and(|t| t >= target)) {
            return;
        }
        if started.elapsed() > Duration::from_secs(300) {
            for log in std::fs::read_dir(location.parent().unwrap()).unwrap().flatten() {
                if log.path().extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(log.path()).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(40).collect();
                    eprintln!("== {}\n{}", log.path().display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
                }
            }
            panic!("{what}: partitions scored through {through:?}, not {target}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The stored alert ids with their detector, read with the CLI over the shared location. An id has a row
/// per count it reached (a group's first row, its final one); no row is stored twice.
fn stored_alerts(dir: &Path, location: &Path) -> Vec<(String, String)> {
    let data = dir.join("reader");
    let csv = coldtrail(&[
        "--data",
        data.to_str().unwrap(),
        "--location",
        location.to_str().unwrap(),
        "sql",
        "SELECT alert_id, detector, count(*) = count(DISTINCT count) AS once FROM alerts GROUP BY alert_id, detector ORDER BY alert_id",
        "--format",
        "csv",
    ]);
    csv.lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields[2], "true", "a row of alert {} stored twice", fields[0]);
            (fields[0].to_string(), fields[1].to_string())
        })
        .collect()
}

fn config(dir: &Path, name: &str, bootstrap: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[store]\nflush_after_secs = 1\nrefresh_secs = 0.5\n\n[detect]\nlateness = \"1m\"\npartitions = {PARTITIONS}\n\n\
             [alerting]\ngive_up_after_secs = 1000000000\n\n\
             [[sources]]\nname = \"kafka\"\nkind = \"kafka\"\nbrokers = \"{bootstrap}\"\ngroup = \"{name}\"\n\
             topics = [\"lambda-logs:subscription\", \"cloudtrail:cloudtrail\", \"xray:xray\"]\n"
        ),
    )
    .unwrap();
    path
}

/// CloudTrail stories that need no learned history: a function opened to everyone, a trail stopped.
async fn publish_stories(bootstrap: &str, start_us: i64) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let at = |minute: i64| {
        chrono::DateTime::from_timestamp_micros(start_us + minute * MINUTE_US)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let intruder = json!({"type": "IAMUser", "arn": "arn:aws:iam::123456789012:user/intern", "accountId": "123456789012", "accessKeyId": "AKIAINTERN"});
    let events = [
        json!({"eventVersion": "1.08", "eventTime": at(31), "eventSource": "lambda.amazonaws.com", "eventName": "AddPermission20150331v2", "eventID": "story-1", "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.66", "userAgent": "aws-cli/2.13.0", "userIdentity": intruder, "recipientAccountId": "123456789012", "requestParameters": {"functionName": "orders-api", "principal": "*", "action": "lambda:InvokeFunction", "statementId": "open"}, "responseElements": null}),
        json!({"eventVersion": "1.08", "eventTime": at(47), "eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging", "eventID": "story-2", "awsRegion": "us-east-1", "sourceIPAddress": "203.0.113.66", "userAgent": "aws-cli/2.13.0", "userIdentity": intruder, "recipientAccountId": "123456789012", "requestParameters": {"name": "management"}, "responseElements": null}),
    ];
    for event in events {
        let payload = event.to_string();
        let record = FutureRecord::to("cloudtrail").payload(&payload).key("123456789012");
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_with_a_sigkill_and_a_sigterm_raise_and_deliver_what_one_does() {
    let cluster = MockCluster::new(1).unwrap();
    // The mock cluster serves no topic creation: the detection topic is created as an operator would.
    for (topic, partitions) in
        [("lambda-logs", 4), ("cloudtrail", 2), ("xray", 2), ("coldtrail-detect", PARTITIONS as i32)]
    {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    // Five hours of a fleet from a fixed start (the fleet's traffic follows the time of day, so a fixed
    // start gives the same traffic, and the same anomalies found, on every run; the anomaly baselines
    // learn for hours). Every run scores the same minutes: the last one stays open, its input has not ended.
    let minutes = 300;
    let start_us = 1_796_083_200_000_000 - 2 * 24 * 60 * MINUTE_US; // 2026-11-29T00:00:00Z
    let start = chrono::DateTime::from_timestamp_micros(start_us).unwrap().to_rfc3339();
    // The stories first: CloudTrail delivers within minutes of an event, so its records come about in
    // event-time order (stories published after five hours of the fleet would be hours late, which is
    // what `tests/delivery_order.rs` is about, not scale-out).
    publish_stories(&bootstrap, start_us).await;
    coldtrail(&[
        "--data",
        dir.path().join("generator").to_str().unwrap(),
        "generate",
        "--functions",
        "8",
        "--minutes",
        &minutes.to_string(),
        "--start",
        &start,
        "--seed",
        "5",
        "--anomaly",
        "spike:3:240",
        "--anomaly",
        "errors:6:245",
        "--kafka",
        &bootstrap,
    ]);
    // The minutes every run scores: through the last complete one before the newest event less the lateness.
    let target = (start_us + minutes * MINUTE_US - 2 * MINUTE_US).div_euclid(MINUTE_US) * MINUTE_US;

    // One process.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let one_hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let one_received = receiver(listener);
    let one_location = dir.path().join("one-location");
    let one_config = config(dir.path(), "one", &bootstrap);
    let mut one = launch(&dir.path().join("one"), &one_location, &one_config, &one_hook);
    wait_scored(&one_location, target, "one process").await;
    signal(&one, "-TERM");
    assert!(one.wait().unwrap().success());
    let one_alerts = stored_alerts(dir.path(), &one_location);

    // Three processes; one is killed and one stopped while they detect.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let three_hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let three_received = receiver(listener);
    let location = dir.path().join("three-location");
    let three_config = config(dir.path(), "three", &bootstrap);
    let mut processes: Vec<Child> =
        (0..3).map(|i| launch(&dir.path().join(format!("three-{i}")), &location, &three_config, &three_hook)).collect();
    // Once detection is under way (some partition has scored something), kill one and stop another.
    let started = Instant::now();
    while scored_through(&location).iter().all(Option::is_none) {
        assert!(started.elapsed() < Duration::from_secs(120), "the three processes never started detecting");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    processes[0].kill().unwrap();
    processes[0].wait().unwrap();
    // Its supervisor starts it again on the same data directory: the rows it held unsealed (stored, their
    // Kafka positions published, so no other process reads them again) are in its WAL only until then.
    // Detection waits for them: its last publication holds the cluster's watermark.
    tokio::time::sleep(Duration::from_secs(2)).await;
    processes[0] = launch(&dir.path().join("three-0"), &location, &three_config, &three_hook);
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&processes[1], "-TERM");
    assert!(processes[1].wait().unwrap().success(), "SIGTERM drains and exits 0");
    wait_scored(&location, target, "the surviving processes").await;
    for i in [0, 2] {
        signal(&processes[i], "-TERM");
        assert!(processes[i].wait().unwrap().success());
    }
    let three_alerts = stored_alerts(dir.path(), &location);
    let stored = |location: &Path| {
        let data = dir.path().join("counter");
        let sql = "SELECT (SELECT count(*) FROM invocations) AS invocations, (SELECT count(*) FROM logs) AS logs";
        coldtrail(&["--data", data.to_str().unwrap(), "--location", location.to_str().unwrap(), "sql", sql])
    };
    assert_eq!(stored(&location), stored(&one_location), "three processes stored other rows than one");

    // The same alerts, each stored once.
    let ids = |alerts: &[(String, String)]| alerts.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
    let detectors: BTreeSet<&str> = one_alerts.iter().map(|(_, d)| d.as_str()).collect();
    for expected in ["lambda.public_permission", "trail.stopped"] {
        assert!(detectors.contains(expected), "{expected} not raised: {one_alerts:?}");
    }
    assert!(detectors.iter().any(|d| d.starts_with("anomaly.")), "no anomaly found: {one_alerts:?}");
    assert_eq!(ids(&three_alerts), ids(&one_alerts), "three processes:\n{three_alerts:?}\none:\n{one_alerts:?}");

    // The same incidents (issue 24: one builder cluster-wide, on partition 0's owner): each incident's
    // alerts, as one process groups them.
    let incidents = |location: &Path| -> BTreeSet<Vec<String>> {
        let data = dir.path().join("incidents-reader");
        let json = coldtrail(&[
            "--data",
            data.to_str().unwrap(),
            "--location",
            location.to_str().unwrap(),
            "sql",
            "SELECT alert_ids FROM (SELECT DISTINCT ON (incident_id) * FROM incidents \
             ORDER BY incident_id, ts DESC, alert_count DESC) latest WHERE status <> 'merged'",
            "--format",
            "json",
        ]);
        let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
        rows["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                let mut ids: Vec<String> = serde_json::from_str(row["alert_ids"].as_str().unwrap()).unwrap();
                ids.sort();
                ids
            })
            .collect()
    };
    let one_incidents = incidents(&one_location);
    assert!(!one_incidents.is_empty(), "one process built no incident");
    assert_eq!(incidents(&location), one_incidents, "three processes grouped the alerts otherwise");

    // Each delivered once to the webhook.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (what, received, alerts) in [("one", &one_received, &one_alerts), ("three", &three_received, &three_alerts)] {
        let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
        for body in received.lock().unwrap().iter() {
            *delivered.entry(body["id"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
        let twice: Vec<(&String, &usize)> = delivered.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{what}: delivered more than once: {twice:?}");
        let missing: Vec<String> = ids(alerts).into_iter().filter(|id| !delivered.contains_key(id)).collect();
        assert!(missing.is_empty(), "{what}: never delivered: {missing:?}");
    }
}

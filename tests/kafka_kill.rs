//! `coldtrail ingest kafka://…` killed with SIGKILL at random points: after each restart the store holds
//! every record of the mock cluster's topic exactly once.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::{Array, StringArray};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use store::{Store, StoreConfig, Table, TimeRange};

const TOPIC: &str = "lambda-logs";
const PARTITIONS: i32 = 3;

async fn stored_counts(dir: &std::path::Path) -> BTreeMap<usize, usize> {
    let store = Store::open(StoreConfig::new(dir)).await.unwrap();
    let mut counts = BTreeMap::new();
    for batch in store.scan(Table::Logs, None, TimeRange::ALL).await.unwrap() {
        let messages = batch.column_by_name("message").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
        for row in 0..messages.len() {
            let id: usize = messages.value(row).rsplit_once("record-").unwrap().1.parse().unwrap();
            *counts.entry(id).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_ingest_resumes_from_the_store_without_loss_or_duplicates() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();
    let n = 6_000;
    // Records keep arriving while the children are killed, so every kill hits a consumer at work.
    let producing = {
        let bootstrap = bootstrap.clone();
        tokio::spawn(async move {
            let producer: FutureProducer =
                ClientConfig::new().set("bootstrap.servers", &bootstrap).set("linger.ms", "5").create().unwrap();
            for chunk in (0..n).collect::<Vec<_>>().chunks(n / 30) {
                let sends = chunk.iter().map(|i| {
                    let payload =
                        format!("2024-03-05T10:00:00.000Z\t8f507cfc-1a2b-4697-b07a-ac58fc914c95\tINFO\trecord-{i}");
                    let producer = &producer;
                    async move {
                        let record =
                            FutureRecord::to(TOPIC).payload(&payload).key("k").partition(*i as i32 % PARTITIONS);
                        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
                    }
                });
                futures::future::join_all(sends).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let input = format!("kafka://{bootstrap}/{TOPIC}:lambda");
    let spawn = |idle_exit: &str| {
        Command::new(env!("CARGO_BIN_EXE_coldtrail"))
            .args(["--data", dir.path().to_str().unwrap(), "ingest", &input, "--idle-exit", idle_exit])
            .env("COLDTRAIL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut seed = 99u64;
    let mut kills = 0;
    let mut stored_at_kills = Vec::new();
    for _ in 0..4 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut child = spawn("30");
        // The group join takes about three seconds; then records flow.
        std::thread::sleep(Duration::from_millis(3_000 + (seed >> 33) % 1_500));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        stored_at_kills.push(stored_counts(dir.path()).await.len());
    }
    producing.await.unwrap();
    let partial = stored_counts(dir.path()).await;
    assert!(
        stored_at_kills.iter().any(|s| *s > 0 && *s < n),
        "kills hit a consumer mid-stream: stored {stored_at_kills:?}"
    );
    assert!(partial.values().all(|c| *c == 1), "no record doubled after {kills} kills");
    let started = Instant::now();
    let status = spawn("3").wait().unwrap();
    assert!(status.success(), "the last run exits by itself when idle");
    let counts = stored_counts(dir.path()).await;
    let missing = (0..n).filter(|i| !counts.contains_key(i)).count();
    let doubled = counts.values().filter(|c| **c != 1).count();
    assert_eq!(
        (missing, doubled),
        (0, 0),
        "after {kills} SIGKILLs ({} stored before the last run, which took {:?})",
        partial.len(),
        started.elapsed()
    );
}

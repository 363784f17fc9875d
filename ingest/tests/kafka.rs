//! The Kafka source against librdkafka's mock cluster (the real wire protocol on loopback): records
//! across several partitions are stored exactly once whatever happens to the consumers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, StringArray};
use ingest::kafka::{KafkaConfig, KafkaSource, TopicConfig};
use ingest::sink::StoreSink;
use ingest::Format;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use store::{Store, StoreConfig, Table, TimeRange};

const TOPIC: &str = "lambda-logs";
const PARTITIONS: i32 = 4;

async fn produce(bootstrap: &str, n: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "10000")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        futures::future::join_all(chunk.iter().map(|i| send_record(&producer, *i))).await;
    }
}

/// Sends `record-<i>` as a Lambda log line to its partition (i modulo the partitions).
async fn send_record(producer: &FutureProducer, i: usize) {
    let payload = format!("2024-03-05T10:00:00.000Z\t8f507cfc-1a2b-4697-b07a-ac58fc914c95\tINFO\trecord-{i}");
    let record = FutureRecord::to(TOPIC).payload(&payload).key("k").partition((i as i32) % PARTITIONS);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
}

fn config(bootstrap: &str) -> KafkaConfig {
    let mut config = KafkaConfig::new(
        bootstrap,
        "coldtrail-test",
        vec![TopicConfig { topic: TOPIC.into(), format: Format::Lambda, log_group: Some("/aws/lambda/orders".into()) }],
    );
    config.batch_records_max = 97;
    config.batch_wait = Duration::from_millis(50);
    config
}

/// How many times each `record-<i>` message is stored.
async fn stored_counts(store: &Store) -> BTreeMap<usize, usize> {
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

async fn wait_for_all(store: &Store, n: usize, limit: Duration) -> BTreeMap<usize, usize> {
    let deadline = Instant::now() + limit;
    loop {
        let counts = stored_counts(store).await;
        if counts.len() >= n || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_exactly_once(counts: &BTreeMap<usize, usize>, n: usize) {
    let missing: Vec<usize> = (0..n).filter(|i| !counts.contains_key(i)).collect();
    let doubled: Vec<(&usize, &usize)> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(missing.is_empty(), "{} records lost, first {:?}", missing.len(), &missing[..missing.len().min(10)]);
    assert!(
        doubled.is_empty(),
        "{} records stored more than once, first {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(10)]
    );
    assert_eq!(counts.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_stored_exactly_once_when_consumers_are_dropped_at_random_points() {
    // Goal: a consumer dropped anywhere (mid-batch, between store and offset commit) loses and doubles
    // nothing. Method: abort the consumer task after a random time, five times, then let one finish.
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let n = 3_000;
    produce(&cluster.bootstrap_servers(), n).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).await.unwrap());
    let mut seed = 17u64;
    for _ in 0..5 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut source = KafkaSource::new(StoreSink::new(store.clone()), config(&cluster.bootstrap_servers())).unwrap();
        let task = tokio::spawn(async move { source.run(std::future::pending()).await });
        // Joining the group takes about three seconds on the mock cluster; kill somewhere after.
        tokio::time::sleep(Duration::from_millis(2_500 + (seed >> 33) % 2_000)).await;
        task.abort();
        let _ = task.await;
    }
    let stored_before_last = stored_counts(&store).await.len();
    let mut source = KafkaSource::new(StoreSink::new(store.clone()), config(&cluster.bootstrap_servers())).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        source
            .run(async {
                stopped.await.ok();
            })
            .await
    });
    let counts = wait_for_all(&store, n, Duration::from_secs(60)).await;
    stop.send(()).unwrap();
    let stats = task.await.unwrap().unwrap();
    assert_exactly_once(&counts, n);
    assert!(stored_before_last < n, "the kills came before everything was stored ({stored_before_last})");
    // Every partition's stored position is its end.
    let positions = store.positions();
    let total: u64 = (0..PARTITIONS).map(|p| positions[&ingest::kafka::position_stream(TOPIC, p)]).sum();
    assert_eq!(total, n as u64);
    assert_eq!(stats.receive_errors, 0);
    // The source's rows carry their partition and offset.
    let batches = store.scan(Table::Logs, None, TimeRange::ALL).await.unwrap();
    let sources =
        arrow::compute::cast(batches[0].column_by_name("ingest_source").unwrap(), &arrow::datatypes::DataType::Utf8)
            .unwrap();
    assert!(sources.as_any().downcast_ref::<StringArray>().unwrap().value(0).starts_with("kafka:lambda-logs/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_consumer_joining_the_group_rebalances_without_loss_or_duplicates() {
    // Goal: partitions move between consumers mid-stream; positions in the store keep each record once.
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let n = 4_000;
    produce(&cluster.bootstrap_servers(), n / 2).await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).await.unwrap());
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let spawn = |store: Arc<Store>, stop: &tokio::sync::broadcast::Sender<()>| {
        let mut stopped = stop.subscribe();
        let mut source = KafkaSource::new(StoreSink::new(store), config(&cluster.bootstrap_servers())).unwrap();
        tokio::spawn(async move {
            source
                .run(async move {
                    stopped.recv().await.ok();
                })
                .await
        })
    };
    let first = spawn(store.clone(), &stop);
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let second = spawn(store.clone(), &stop);
    // The second half arrives while the group rebalances.
    let bootstrap = cluster.bootstrap_servers();
    let producer = tokio::spawn(async move {
        let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        for i in n / 2..n {
            send_record(&producer, i).await;
        }
    });
    producer.await.unwrap();
    let counts = wait_for_all(&store, n, Duration::from_secs(60)).await;
    stop.send(()).unwrap();
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert_exactly_once(&counts, n);
    assert!(
        first.stored_records > 0 && second.stored_records > 0,
        "both consumers stored records: {first:?} {second:?}"
    );
    assert_eq!(first.stored_records + second.stored_records, n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_their_own_stores_on_one_location_hand_partitions_over_exactly_once() {
    // Goal: scale-out. Two processes, each with its own WAL and positions, one consumer group and one
    // shared segment location: a node joining and a node leaving move partitions without loss or
    // duplicates. Kafka's committed offsets (committed synchronously at each revocation) are all the
    // nodes share about positions.
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let n = 6_000;
    let shared = tempfile::tempdir().unwrap();
    let node = |dir: &std::path::Path| {
        let mut config = StoreConfig::new(dir);
        config.location = Some(shared.path().to_str().unwrap().to_string());
        config
    };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store_a = Arc::new(Store::open(node(dir_a.path())).await.unwrap());
    let store_b = Arc::new(Store::open(node(dir_b.path())).await.unwrap());
    let spawn = |store: Arc<Store>| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut source = KafkaSource::new(StoreSink::new(store), config(&cluster.bootstrap_servers())).unwrap();
        let task = tokio::spawn(async move {
            source
                .run(async move {
                    stopped.await.ok();
                })
                .await
        });
        (stop, task)
    };
    let bootstrap = cluster.bootstrap_servers();
    // Records arrive all along, in thirds: before B joins, while both run, after A has left.
    let producer = tokio::spawn(async move {
        let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
        for i in 0..n {
            send_record(&producer, i).await;
            if i % 200 == 199 {
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
        }
    });
    let (stop_a, task_a) = spawn(store_a.clone());
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let (stop_b, task_b) = spawn(store_b.clone());
    // Once the group has rebalanced and B stores its share, A leaves.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored_counts(&store_b).await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_a.send(()).unwrap();
    let a = task_a.await.unwrap().unwrap();
    producer.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // (Each store scans its own hot rows and every node's segments: count distinct records.)
    let distinct = || async {
        let mut ids: std::collections::BTreeSet<usize> = stored_counts(&store_a).await.into_keys().collect();
        ids.extend(stored_counts(&store_b).await.into_keys());
        ids.len()
    };
    while distinct().await < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop_b.send(()).unwrap();
    let b = task_b.await.unwrap().unwrap();
    store_a.flush_all().await.unwrap();
    store_b.flush_all().await.unwrap();
    // A third node on the same location sees both nodes' rows, each once.
    let reader_dir = tempfile::tempdir().unwrap();
    let reader = Store::open(node(reader_dir.path())).await.unwrap();
    let counts = stored_counts(&reader).await;
    assert_exactly_once(&counts, n);
    assert!(a.stored_records > 0 && b.stored_records > 0, "both nodes stored records: {a:?} {b:?}");
    assert_eq!(a.stored_records + b.stored_records, n as u64, "{a:?} {b:?}");
}

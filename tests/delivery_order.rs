//! The alerts of one input do not depend on the order it arrives in (issue 16). One rendered fleet, with
//! an injected anomaly of every kind, is delivered three ways AWS and its tools deliver logs: as export
//! objects (one per log stream, in random order), as Firehose batches delayed up to the allowed lateness,
//! and through two Kafka partitions of librdkafka's mock cluster that lag each other by minutes. Each time
//! the live detections (`detect::runner`) store the same alert ids as a time-ordered replay of the same
//! rows, find every injected anomaly, stay quiet on the normal part, and leave no row late.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
use detect::engine::{Checkpoints, Engine, EngineConfig};
use detect::runner::{DetectionThread, InputEnd, LiveConfig};
use detect::security::SigmaRules;
use ingest::{Format, Pipeline, PipelineConfig, StoreSink, Unit};
use serde_json::Value;
use store::time::MICROS_PER_MINUTE;
use store::{Store, StoreConfig, Table, TimeRange};
use workload::{fleet, Anomaly, Generator, Injection, Rng};

const SEED: u64 = 16;
const FUNCTIONS: usize = 10;
const MINUTES: i64 = 420;
const ONSET_MINUTE: i64 = 360;
const START_US: i64 = 1_763_596_800_000_000; // 2025-11-20T00:00:00Z

/// An anomaly of every kind the generator injects, one per function from function 0; the rest are normal.
fn anomalies() -> Vec<Anomaly> {
    vec![
        Anomaly::Spike { factor: 6.0 },
        Anomaly::Drop,
        Anomaly::Ramp { factor_per_hour: 24.0 },
        Anomaly::DurationCreep { minutes: 10.0 },
        Anomaly::ErrorBurst { error_rate: 0.3 },
        Anomaly::ColdStartStorm,
        Anomaly::CostSurge { factor: 4.0 },
        Anomaly::NewCallers { n_callers: 6, share: 0.3 },
        Anomaly::CryptoMining,
    ]
}

/// One subscription payload: one log stream's events of one minute.
struct Payload {
    function: String,
    log_stream: String,
    first_us: i64,
    last_us: i64,
    body: Value,
}

struct Rendered {
    functions: Vec<String>,
    payloads: Vec<Payload>,
}

fn render() -> Rendered {
    let functions = fleet(FUNCTIONS, &mut Rng::new(SEED));
    let mut generator = Generator::new(functions.clone(), SEED);
    let onset = START_US + ONSET_MINUTE * MICROS_PER_MINUTE;
    for (function_idx, anomaly) in anomalies().into_iter().enumerate() {
        generator.inject(Injection { function_idx, anomaly, start_us: onset, end_us: onset + 30 * MICROS_PER_MINUTE });
    }
    let mut rng = Rng::new(SEED ^ 0x7e4d);
    let (mut invocations, mut payloads, mut event_id) = (Vec::new(), Vec::new(), 0u64);
    for minute in 0..MINUTES {
        invocations.clear();
        generator.minute(START_US + minute * MICROS_PER_MINUTE, &mut invocations);
        let rendered = workload::render::render_minute(&functions, &invocations, &mut rng, &mut event_id, |_, _| false);
        for (function_idx, log_stream, body) in rendered.payloads {
            let times: Vec<i64> = body["logEvents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["timestamp"].as_i64().unwrap() * 1_000)
                .collect();
            payloads.push(Payload {
                function: functions[function_idx].name.clone(),
                log_stream,
                first_us: *times.iter().min().unwrap(),
                last_us: *times.iter().max().unwrap(),
                body,
            });
        }
    }
    Rendered { functions: functions.iter().map(|f| f.name.clone()).collect(), payloads }
}

async fn open(dir: &std::path::Path) -> Arc<Store> {
    Arc::new(Store::open(StoreConfig::new(dir)).await.unwrap())
}

/// The live detections of a stream (scoring as the watermark passes), or of a backfill of files in no
/// order (scoring at the end), as `coldtrail serve` and `coldtrail ingest` run them.
fn live_detections(store: &Arc<Store>, dir: &std::path::Path, score_while_running: bool) -> DetectionThread {
    let engine = Engine::new(&EngineConfig::default(), SigmaRules::shipped());
    let config = LiveConfig { score_while_running, ..LiveConfig::default() };
    DetectionThread::start(store.clone(), engine, Checkpoints::new(dir.join("detect")), config).unwrap()
}

/// Parses units through one pipeline and stores their rows.
struct Feed {
    pipeline: Pipeline,
    sink: StoreSink,
}

impl Feed {
    fn new(store: &Arc<Store>) -> Feed {
        Feed { pipeline: Pipeline::new(PipelineConfig::default()), sink: StoreSink::new(store.clone()) }
    }

    /// Parses a unit; stores what is buffered once it is a source's batch (an append is an fsync).
    async fn unit(&mut self, format: Format, bytes: &[u8], unit: Unit<'_>) {
        self.pipeline.ingest(format, bytes, &unit);
        if self.pipeline.buffered_rows() >= 20_000 {
            self.store().await;
        }
    }

    async fn store(&mut self) {
        let batches = self.pipeline.take_batches();
        self.sink.append(batches, Vec::new(), Vec::new()).await.unwrap();
    }

    async fn finish(mut self) {
        self.pipeline.finish();
        self.store().await;
    }
}

/// An alert as the acceptance compares them: id, detector, function, window.
type AlertKey = (String, String, String, i64, i64);

async fn stored_alerts(store: &Store) -> BTreeSet<AlertKey> {
    let mut alerts = BTreeSet::new();
    for batch in store.scan(Table::Alerts, None, TimeRange::ALL).await.unwrap() {
        let text = |name: &str| {
            let column = batch.column_by_name(name).unwrap();
            arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap()
        };
        let time = |name: &str| {
            batch.column_by_name(name).unwrap().as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap().clone()
        };
        let (ids, detectors, functions) = (text("alert_id"), text("detector"), text("function_name"));
        let (ids, detectors, functions) = (
            ids.as_any().downcast_ref::<StringArray>().unwrap(),
            detectors.as_any().downcast_ref::<StringArray>().unwrap(),
            functions.as_any().downcast_ref::<StringArray>().unwrap(),
        );
        let (starts, ends) = (time("window_start"), time("window_end"));
        for row in 0..batch.num_rows() {
            alerts.insert((
                ids.value(row).to_string(),
                detectors.value(row).to_string(),
                if functions.is_null(row) { String::new() } else { functions.value(row).to_string() },
                starts.value(row),
                ends.value(row),
            ));
        }
    }
    alerts
}

/// The distinct alerts: a group's first and final rows share an id, detector, function and start; the
/// final row's end is the group's.
fn by_id(alerts: &BTreeSet<AlertKey>) -> BTreeMap<String, (String, String, i64, i64)> {
    let mut out: BTreeMap<String, (String, String, i64, i64)> = BTreeMap::new();
    for (id, detector, function, start, end) in alerts {
        let entry = out.entry(id.clone()).or_insert((detector.clone(), function.clone(), *start, *end));
        entry.3 = entry.3.max(*end);
    }
    out
}

/// Every payload stored, in rendering order, with no detection running.
async fn store_in_order(rendered: &Rendered, store: &Arc<Store>) {
    let mut feed = Feed::new(store);
    for payload in &rendered.payloads {
        let bytes = payload.body.to_string();
        feed.unit(Format::Auto, bytes.as_bytes(), Unit { source: "in-order", ..Unit::default() }).await;
    }
    feed.finish().await;
}

/// The reference: every row stored first, then one replay in time order through fresh detectors.
async fn replayed(rendered: &Rendered) -> (BTreeMap<String, (String, String, i64, i64)>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store_in_order(rendered, &store).await;
    let mut engine = Engine::new(&EngineConfig::default(), SigmaRules::shipped());
    let (oldest, newest) = detect::replay::stored_span(&store, &engine.tables()).unwrap();
    let mut alerts = Vec::new();
    detect::replay::replay(&store, &mut engine, TimeRange::new(oldest, newest + 1), |raised| {
        alerts.extend(raised);
        Ok(())
    })
    .await
    .unwrap();
    detect::runner::store_alerts(&store, &alerts).unwrap();
    (by_id(&stored_alerts(&store).await), engine.stats().stream.invocations)
}

/// What one delivery left: its distinct alerts, the invocations scored, and the late rows.
struct Outcome {
    alerts: BTreeMap<String, (String, String, i64, i64)>,
    scored: u64,
    late: u64,
}

async fn outcome(store: &Store, detection: DetectionThread) -> Outcome {
    let stats = detection.stop(InputEnd::Closed).unwrap();
    Outcome {
        alerts: by_id(&stored_alerts(store).await),
        scored: stats.stream.invocations,
        late: stats.late_rows.values().sum(),
    }
}

/// Export objects: per log stream, every event as `<timestamp> <message>`, gzip, under
/// `<task>/<log stream>/000000.gz`, ingested in random order.
async fn as_export_objects(rendered: &Rendered) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let detection = live_detections(&store, dir.path(), false);
    let mut streams: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    for payload in &rendered.payloads {
        let text = streams.entry((payload.function.clone(), payload.log_stream.clone())).or_default();
        for event in payload.body["logEvents"].as_array().unwrap() {
            let ts = workload::render::iso_millis(event["timestamp"].as_i64().unwrap() * 1_000);
            writeln!(text, "{ts} {}", event["message"].as_str().unwrap()).unwrap();
        }
    }
    let mut objects: Vec<((String, String), Vec<u8>)> = streams.into_iter().collect();
    let mut rng = Rng::new(SEED ^ 0xe0);
    for i in (1..objects.len()).rev() {
        objects.swap(i, rng.below(i + 1));
    }
    let mut feed = Feed::new(&store);
    for ((function, log_stream), text) in &objects {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text).unwrap();
        let key = format!("exports/0f6a1e4c-3b1d-4a8e-9f0e-2d7c5b9a1e01/{log_stream}/000000.gz");
        let group = format!("/aws/lambda/{function}");
        let unit = Unit { source: "s3://bucket/exports", position: "0", key: Some(&key), log_group: Some(&group) };
        feed.unit(Format::Auto, &gz.finish().unwrap(), unit).await;
    }
    feed.finish().await;
    outcome(&store, detection).await
}

/// A `serve` stopped over a backlog: every row stored first, the stream's detection started and stopped
/// at once (no time to score at stop), then started again from its checkpoint and run to the end. The
/// stop leaves the backlog at the checkpoint, in steps of an hour, instead of scoring it all first.
async fn stopped_with_a_backlog_and_started_again(rendered: &Rendered) -> (Outcome, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store_in_order(rendered, &store).await;
    let engine = Engine::new(&EngineConfig::default(), SigmaRules::shipped());
    let config = LiveConfig { stop_scoring_budget: Duration::ZERO, ..LiveConfig::default() };
    let first = DetectionThread::start(store.clone(), engine, Checkpoints::new(dir.path().join("detect")), config);
    let first = first.unwrap().stop(InputEnd::Open).unwrap();
    let checkpoints = Checkpoints::new(dir.path().join("detect"));
    let engine = checkpoints.load(&EngineConfig::default(), SigmaRules::shipped());
    let second = DetectionThread::start(store.clone(), engine, checkpoints, LiveConfig::default()).unwrap();
    (outcome(&store, second).await, first.stream.invocations)
}

/// Firehose: each payload reaches the store up to 15 minutes after its last event (the allowed
/// lateness), in batches of what arrived in the same minute.
async fn as_delayed_firehose_batches(rendered: &Rendered) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let detection = live_detections(&store, dir.path(), true);
    let lateness = LiveConfig::default().lateness_us;
    let mut rng = Rng::new(SEED ^ 0xf1);
    let mut arrivals: Vec<(i64, usize)> = rendered
        .payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (p.last_us + rng.below(lateness as usize + 1) as i64, i))
        .collect();
    arrivals.sort_unstable();
    let mut feed = Feed::new(&store);
    let mut batch = String::new();
    let mut batch_minute = None;
    for (arrival, i) in arrivals {
        let minute = arrival.div_euclid(MICROS_PER_MINUTE);
        if batch_minute.is_some_and(|m| m != minute) {
            feed.unit(Format::Auto, batch.as_bytes(), Unit { source: "firehose", ..Unit::default() }).await;
            batch.clear();
        }
        batch_minute = Some(minute);
        batch.push_str(&rendered.payloads[i].body.to_string());
        batch.push('\n');
    }
    feed.unit(Format::Auto, batch.as_bytes(), Unit { source: "firehose", ..Unit::default() }).await;
    feed.finish().await;
    outcome(&store, detection).await
}

/// Kafka: the payloads keyed by log stream on two partitions; partition 1 is published five minutes of
/// event time behind partition 0, and each round is consumed before the next is published.
async fn through_skewed_kafka_partitions(rendered: &Rendered) -> Outcome {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    const TOPIC: &str = "lambda-logs";
    const SKEW_MINUTES: i64 = 5;
    const ROUND_MINUTES: i64 = 5;
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic(TOPIC, 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let detection = live_detections(&store, dir.path(), true);
    let topic = ingest::kafka::TopicConfig { topic: TOPIC.into(), format: Format::Auto, log_group: None };
    let mut config = ingest::kafka::KafkaConfig::new(&brokers, "delivery-order", vec![topic]);
    config.session_timeout = Duration::from_secs(6);
    config.heartbeat_interval = Duration::from_secs(1);
    let mut source = ingest::kafka::KafkaSource::new(StoreSink::new(store.clone()), config).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let consumer = tokio::spawn(async move {
        source
            .run(async {
                stopped.await.ok();
            })
            .await
            .unwrap()
    });
    let producer: FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).set("linger.ms", "5").create().unwrap();
    let partition_of = |log_stream: &str| i32::from(log_stream.bytes().fold(0u8, |a, b| a.wrapping_add(b)) % 2 == 1);
    let mut offsets = [0u64; 2];
    let rounds = (MINUTES + SKEW_MINUTES).div_euclid(ROUND_MINUTES) + 1;
    for round in 0..rounds {
        let end = START_US + (round + 1) * ROUND_MINUTES * MICROS_PER_MINUTE;
        let mut round = Vec::new();
        for payload in &rendered.payloads {
            let partition = partition_of(&payload.log_stream);
            let lag = if partition == 1 { SKEW_MINUTES * MICROS_PER_MINUTE } else { 0 };
            let minute_end = payload.first_us - payload.first_us.rem_euclid(MICROS_PER_MINUTE) + lag;
            if minute_end < end - ROUND_MINUTES * MICROS_PER_MINUTE || minute_end >= end {
                continue;
            }
            round.push((partition, payload.log_stream.as_str(), payload.body.to_string()));
            offsets[partition as usize] += 1;
        }
        // In order within a partition: librdkafka keeps the order of one producer's sends to it.
        let sends = round.iter().map(|(partition, key, body)| {
            let record = FutureRecord::to(TOPIC).payload(body).key(*key).partition(*partition);
            producer.send(record, Duration::from_secs(10))
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(e, _)| e).unwrap();
        }
        // The round is stored before the next is published: the skew stays what it was made.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while (0..2).any(|p| {
            store.position(&ingest::kafka::position_stream(TOPIC, p)).unwrap_or(0) < offsets[p as usize]
                && offsets[p as usize] > 0
        }) {
            assert!(std::time::Instant::now() < deadline, "the consumer did not keep up: {offsets:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.send(()).unwrap();
    consumer.await.unwrap();
    outcome(&store, detection).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_the_same_whatever_order_the_logs_arrive_in() {
    let rendered = render();
    let started = std::time::Instant::now();
    let (reference, invocations) = replayed(&rendered).await;
    eprintln!(
        "{} payloads, {invocations} invocations replayed, {} alerts, in {:.1} s",
        rendered.payloads.len(),
        reference.len(),
        started.elapsed().as_secs_f64()
    );
    let onset = START_US + ONSET_MINUTE * MICROS_PER_MINUTE;
    let injected: Vec<&String> = rendered.functions.iter().take(anomalies().len()).collect();
    // Every injected anomaly is found within its first minutes, on the function it was injected into.
    for function in &injected {
        assert!(
            reference
                .values()
                .any(|(_, f, start, _)| f == *function && (onset..onset + 10 * MICROS_PER_MINUTE).contains(start)),
            "no alert for {function}'s anomaly: {reference:#?}"
        );
    }
    // The normal part, the function that was left alone and every function before the onset: no alert.
    // 10 functions over 7 hours are 2.9 function-days, and the aim is at most one alert per 50.
    let normal: Vec<_> =
        reference.values().filter(|(_, f, start, _)| !injected.contains(&f) || *start < onset).collect();
    assert!(normal.is_empty(), "alerts on normal traffic: {normal:#?}");

    for delivery in [
        "export objects in random order",
        "Firehose batches delayed up to 15 minutes",
        "two Kafka partitions skewed by 5 minutes",
    ] {
        let outcome = match delivery {
            "export objects in random order" => as_export_objects(&rendered).await,
            "Firehose batches delayed up to 15 minutes" => as_delayed_firehose_batches(&rendered).await,
            _ => through_skewed_kafka_partitions(&rendered).await,
        };
        eprintln!("{delivery}: done at {:.1} s", started.elapsed().as_secs_f64());
        assert_eq!(outcome.alerts, reference, "{delivery}: the stored alerts differ from a time-ordered replay");
        assert_eq!(outcome.scored, invocations, "{delivery}: not every invocation was scored");
        assert_eq!(outcome.late, 0, "{delivery}: rows within the allowed lateness came late");
    }
    let (outcome, scored_before_stop) = stopped_with_a_backlog_and_started_again(&rendered).await;
    assert!(scored_before_stop < invocations / 2, "the stop scored the backlog: {scored_before_stop} of {invocations}");
    assert_eq!(outcome.alerts, reference, "stopped over a backlog and started again: the alerts differ");
}

//! The Kafka source: a consumer group over one or more topics, each with its format.
//!
//! No loss, no duplicates: the position of every stored record (`kafka:<topic>/<partition>` → next
//! offset) is appended to the store in the same atomic append as the rows it produced, and the append is
//! conditional on the positions the batch was filtered against, so a record is stored by exactly one
//! consumer even across rebalances. Records below the stored position are skipped, so restarting after
//! a kill between the store and the offset commit re-reads but does not re-store them. Offsets are also
//! committed to Kafka after each stored batch, so that lag shows in the usual tools.
//!
//! Several processes in one consumer group (scale-out) have their own stores' positions. Each publishes
//! its partitions' positions to the shared store location after every stored batch
//! (`Store::publish_positions`), and a process given partitions first reads the highest position any
//! process published for them and skips what lies below (`Store::shared_positions`). Kafka's committed
//! offsets cannot serve for this: brokers refuse commits while the group rebalances, which is exactly
//! when partitions move. At a revocation the consumer drops the records of the revoked partitions that
//! it holds unstored; the new owner reads them. A handoff therefore stores every record once. A process
//! killed between its store append and the publication leaves that one batch to be read again by the
//! next owner (at least once for that batch; it is in the killed process's WAL too).
//!
//! Memory is bounded: a batch holds at most `batch_records_max` records and `batch_bytes_max` bytes, the
//! consumer's prefetch queue at most `queue_kbytes_max`, and nothing is consumed while a batch is being
//! stored (a slow store slows consumption). Back-of-envelope: 10,000 records of ~1 KB per batch, one
//! fsync per batch, so the store is not the bottleneck below ~1 M records/s.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::collections::BTreeSet;
use std::sync::Mutex;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use store::{Position, Store, StoreError};

use crate::error::IngestError;
use crate::pipeline::{Format, Pipeline, Unit};
use crate::sink::StoreSink;

/// A subscribed topic and how to read it.
#[derive(Clone, Debug)]
pub struct TopicConfig {
    pub topic: String,
    pub format: Format,
    /// Log group of plain log lines on this topic, when the records do not name one.
    pub log_group: Option<String>,
}

#[derive(Clone, Debug)]
pub struct KafkaConfig {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<TopicConfig>,
    pub batch_records_max: usize,
    pub batch_bytes_max: usize,
    /// A partial batch is stored after waiting this long for more records.
    pub batch_wait: Duration,
    pub session_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// A member that does not poll for this long leaves the group; brokers also use it as the rebalance
    /// timeout, i.e. how long a rebalance waits for a member that died without leaving.
    pub max_poll_interval: Duration,
    /// Bound on librdkafka's prefetch queue per consumer.
    pub queue_kbytes_max: usize,
    /// Stop once partitions are assigned and no record has come for this long (one-shot ingests, tests).
    pub idle_exit: Option<Duration>,
    /// Further librdkafka settings (`security.protocol`, `sasl.mechanism`, ...), applied last.
    pub client_options: BTreeMap<String, String>,
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>, group_id: impl Into<String>, topics: Vec<TopicConfig>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            group_id: group_id.into(),
            topics,
            batch_records_max: 10_000,
            batch_bytes_max: 32 * 1024 * 1024,
            batch_wait: Duration::from_millis(250),
            session_timeout: Duration::from_secs(6),
            heartbeat_interval: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(30),
            queue_kbytes_max: 64 * 1024,
            idle_exit: None,
            client_options: BTreeMap::new(),
        }
    }
}

/// The position stream of a partition.
pub fn position_stream(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}/{partition}")
}

/// The topic and partition of a position stream.
fn split_stream(stream: &str) -> Option<(&str, i32)> {
    let (topic, partition) = stream.strip_prefix("kafka:")?.rsplit_once('/')?;
    Some((topic, partition.parse().ok()?))
}

/// The newest event time of the rows decoded from each input stream (the `ingest_source` column).
fn newest_by_stream(rows: &[(store::Table, arrow::array::RecordBatch)]) -> BTreeMap<String, i64> {
    use arrow::array::{Array, AsArray};
    let mut newest: BTreeMap<String, i64> = BTreeMap::new();
    for (_, batch) in rows {
        let Ok(index) = batch.schema().index_of("ingest_source") else { continue };
        let Ok(sources) = arrow::compute::cast(batch.column(index), &arrow::datatypes::DataType::Utf8) else {
            continue;
        };
        let sources = sources.as_string::<i32>();
        let Some(times) = batch.column(0).as_primitive_opt::<arrow::datatypes::TimestampMicrosecondType>() else {
            continue;
        };
        for row in 0..batch.num_rows() {
            if sources.is_null(row) || times.is_null(row) {
                continue;
            }
            let entry = newest.entry(sources.value(row).to_string()).or_insert(i64::MIN);
            *entry = (*entry).max(times.value(row));
        }
    }
    newest
}

/// Counts of what the source did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KafkaStats {
    pub records: u64,
    pub stored_records: u64,
    pub skipped_below_position: u64,
    pub empty_records: u64,
    pub batches: u64,
    pub position_conflicts: u64,
    pub receive_errors: u64,
    pub commit_errors: u64,
    /// Records received but not stored because their partition was revoked first.
    pub dropped_at_revoke: u64,
}

/// Rebalance handling: at a revocation, commits what this consumer stored of the revoked partitions
/// during its assignment and tells the source to drop their unstored records.
pub struct Handoff {
    /// Next offset stored during the current assignment, by (topic, partition).
    stored: Mutex<BTreeMap<(String, i32), i64>>,
    /// Partitions revoked since the source last looked.
    revoked: Mutex<BTreeSet<(String, i32)>>,
    /// Whether partitions were assigned since the source last looked.
    assigned: std::sync::atomic::AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl rdkafka::ClientContext for Handoff {}

impl ConsumerContext for Handoff {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        let mut commit = TopicPartitionList::new();
        {
            let mut stored = lock(&self.stored);
            let mut revoked = lock(&self.revoked);
            for element in list.elements() {
                let key = (element.topic().to_string(), element.partition());
                if let Some(offset) = stored.remove(&key) {
                    let _ = commit.add_partition_offset(&key.0, key.1, Offset::Offset(offset));
                }
                revoked.insert(key);
            }
        }
        if commit.count() > 0 {
            // Synchronous, so that the next owner need not fetch again what this consumer stored; that it
            // does not store it again is the published positions' doing, not this commit's.
            match consumer.commit(&commit, CommitMode::Sync) {
                Ok(()) => {
                    tracing::info!(partitions = commit.count(), "committed stored positions of revoked partitions")
                }
                Err(error) => {
                    // Expected while the group rebalances; the published positions decide.
                    crate::metrics::metrics().kafka_commit_errors.inc();
                    tracing::debug!(error = %error, "committing revoked partitions failed")
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.assigned.store(true, std::sync::atomic::Ordering::SeqCst);
            tracing::info!(partitions = list.count(), "kafka partitions assigned");
            crate::metrics::metrics().kafka_rebalances.inc();
        }
    }
}

pub struct KafkaSource {
    consumer: StreamConsumer<Handoff>,
    config: KafkaConfig,
    store: Arc<Store>,
    sink: StoreSink,
    pipeline: Pipeline,
    /// The highest positions the group's processes published, read at each assignment.
    floors: BTreeMap<String, u64>,
    pub stats: KafkaStats,
}

impl KafkaSource {
    /// Creates the consumer and subscribes to the topics.
    pub fn new(sink: StoreSink, config: KafkaConfig) -> Result<Self, IngestError> {
        let store = sink.store().clone();
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group_id)
            .set("client.id", format!("coldtrail-{}", store.node_id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
            .set("heartbeat.interval.ms", config.heartbeat_interval.as_millis().to_string())
            .set("max.poll.interval.ms", config.max_poll_interval.as_millis().to_string())
            .set("queued.max.messages.kbytes", config.queue_kbytes_max.to_string())
            .set("enable.partition.eof", "false");
        for (key, value) in &config.client_options {
            client.set(key, value);
        }
        let handoff = Handoff {
            stored: Mutex::new(BTreeMap::new()),
            revoked: Mutex::new(BTreeSet::new()),
            assigned: std::sync::atomic::AtomicBool::new(false),
        };
        let consumer: StreamConsumer<Handoff> =
            client.create_with_context(handoff).map_err(|e| IngestError::Kafka(e.to_string()))?;
        let topics: Vec<&str> = config.topics.iter().map(|t| t.topic.as_str()).collect();
        consumer.subscribe(&topics).map_err(|e| IngestError::Kafka(e.to_string()))?;
        // Every partition of the topics is an input of the cluster's watermark from the start, held or
        // not: a process whose first records are not published yet must not be overtaken (`input_known`).
        for topic in &topics {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
                Ok(metadata) => {
                    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
                        store.input_known(&position_stream(topic, partition.id()));
                    }
                }
                Err(e) => tracing::warn!(topic, error = %e, "cannot list the topic's partitions"),
            }
        }
        Ok(KafkaSource {
            consumer,
            config,
            store,
            sink,
            pipeline: Pipeline::default(),
            floors: BTreeMap::new(),
            stats: KafkaStats::default(),
        })
    }

    /// Consumes until `shutdown` resolves, then stores what it holds and returns.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<KafkaStats, IngestError> {
        tokio::pin!(shutdown);
        let mut batch: Vec<OwnedMessage> = Vec::with_capacity(self.config.batch_records_max);
        let mut batch_bytes = 0usize;
        let mut batch_started = Instant::now();
        // When the consumer last had something to do: got a record, or got partitions assigned.
        let mut active_at: Option<Instant> = None;
        loop {
            let wait = if batch.is_empty() {
                self.config.batch_wait
            } else {
                self.config.batch_wait.saturating_sub(batch_started.elapsed())
            };
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                received = tokio::time::timeout(wait, self.consumer.recv()) => {
                    let received = received.map(|r| r.map(|m| m.detach()));
                    self.drop_revoked(&mut batch, &mut batch_bytes);
                    self.read_floors().await?;
                    match received {
                    Ok(Ok(message)) => {
                        active_at = Some(Instant::now());
                        if batch.is_empty() {
                            batch_started = Instant::now();
                        }
                        batch_bytes += message.payload().map_or(0, <[u8]>::len);
                        batch.push(message);
                        self.stats.records += 1;
                        if batch.len() >= self.config.batch_records_max || batch_bytes >= self.config.batch_bytes_max {
                            self.store_batch(&mut batch).await?;
                            batch_bytes = 0;
                        }
                    }
                    Ok(Err(error)) => {
                        self.stats.receive_errors += 1;
                        tracing::warn!(error = %error, "kafka receive failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(_elapsed) => {
                        if !batch.is_empty() {
                            self.store_batch(&mut batch).await?;
                            batch_bytes = 0;
                        }
                        if let Some(idle_exit) = self.config.idle_exit {
                            let assigned = self.consumer.assignment().is_ok_and(|list| list.count() > 0);
                            match active_at {
                                None if assigned => active_at = Some(Instant::now()),
                                Some(at) if at.elapsed() >= idle_exit => break,
                                _ => {}
                            }
                        }
                    }
                }},
            }
        }
        if !batch.is_empty() {
            self.store_batch(&mut batch).await?;
        }
        Ok(self.stats.clone())
    }

    /// After an assignment, reads where the group's processes stored their partitions up to.
    async fn read_floors(&mut self) -> Result<(), IngestError> {
        if !self.consumer.context().assigned.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        // The partitions held hold the detection watermark back until they deliver (`Store::input_open`).
        if let Ok(list) = self.consumer.assignment() {
            for element in list.elements() {
                self.store.input_open(&position_stream(element.topic(), element.partition()));
            }
        }
        // A process that cannot learn this must not consume: it could store records twice.
        let mut delay = Duration::from_millis(200);
        loop {
            match self.store.shared_positions(&self.config.group_id).await {
                Ok(floors) => {
                    self.floors = floors;
                    return Ok(());
                }
                Err(error) if delay < Duration::from_secs(30) => {
                    tracing::warn!(error = %error, "cannot read the group's published positions; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Removes from the batch the records of partitions revoked since the last look: their new owner
    /// reads them from the committed offset.
    fn drop_revoked(&mut self, batch: &mut Vec<OwnedMessage>, batch_bytes: &mut usize) {
        let revoked = std::mem::take(&mut *lock(&self.consumer.context().revoked));
        if revoked.is_empty() {
            return;
        }
        for (topic, partition) in &revoked {
            self.store.input_close(&position_stream(topic, *partition));
        }
        let before = batch.len();
        batch.retain(|m| !revoked.contains(&(m.topic().to_string(), m.partition())));
        *batch_bytes = batch.iter().map(|m| m.payload().map_or(0, <[u8]>::len)).sum();
        let dropped = (before - batch.len()) as u64;
        if dropped > 0 {
            self.stats.dropped_at_revoke += dropped;
            tracing::info!(dropped, "records of revoked partitions left to their next owner");
        }
    }

    /// Decodes and stores one batch with its positions; retries the decode once per conflict when a
    /// rebalance let another consumer store some of the same partitions first.
    async fn store_batch(&mut self, batch: &mut Vec<OwnedMessage>) -> Result<(), IngestError> {
        const CONFLICT_RETRIES_MAX: usize = 8;
        for _ in 0..CONFLICT_RETRIES_MAX {
            let (rows, positions, expected, stored) = self.decode(batch);
            let commit_positions = positions.clone();
            let newest = newest_by_stream(&rows);
            match self.sink.append(rows, positions, expected).await {
                Ok(_) => {
                    for (stream, newest_us) in newest {
                        self.store.input_note(&stream, newest_us);
                    }
                    self.stats.batches += 1;
                    self.stats.stored_records += stored;
                    self.remember(&commit_positions);
                    if let Err(error) = self.store.publish_positions(&self.config.group_id, "kafka:").await {
                        crate::metrics::metrics().kafka_publish_errors.inc();
                        tracing::warn!(error = %error, "cannot publish positions to the shared location");
                    }
                    self.commit(&commit_positions);
                    batch.clear();
                    return Ok(());
                }
                Err(IngestError::Store(StoreError::PositionConflict { stream, .. })) => {
                    self.stats.position_conflicts += 1;
                    crate::metrics::metrics().kafka_position_conflicts.inc();
                    tracing::info!(stream, "another consumer stored part of this batch first; decoding it again");
                }
                Err(e) => return Err(e),
            }
        }
        Err(IngestError::Internal("positions kept changing under this consumer".into()))
    }

    /// Decodes the records at or above their partition's stored position. Returns the rows, the new
    /// positions, the positions the filter assumed, and how many records it decoded.
    #[allow(clippy::type_complexity)]
    fn decode(
        &mut self,
        batch: &[OwnedMessage],
    ) -> (Vec<(store::Table, arrow::array::RecordBatch)>, Vec<Position>, Vec<(String, Option<u64>)>, u64) {
        let mut expected: BTreeMap<String, Option<u64>> = BTreeMap::new();
        let mut next: BTreeMap<String, u64> = BTreeMap::new();
        let mut decoded = 0u64;
        for message in batch {
            let stream = position_stream(message.topic(), message.partition());
            let stored = *expected.entry(stream.clone()).or_insert_with(|| self.store.position(&stream));
            let offset = message.offset().max(0) as u64;
            let shared = self.floors.get(&stream).copied();
            let floor = next.get(&stream).copied().or(stored.max(shared)).unwrap_or(0);
            if offset < floor {
                self.stats.skipped_below_position += 1;
                crate::metrics::metrics().kafka_skipped.inc();
                continue;
            }
            next.insert(stream.clone(), offset + 1);
            let Some(payload) = message.payload().filter(|p| !p.is_empty()) else {
                self.stats.empty_records += 1;
                continue;
            };
            let topic = self.config.topics.iter().find(|t| t.topic == message.topic());
            let format = topic.map_or(Format::Auto, |t| t.format);
            let position = offset.to_string();
            let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
            let unit = Unit {
                source: &stream,
                position: &position,
                key,
                log_group: topic.and_then(|t| t.log_group.as_deref()),
            };
            self.pipeline.ingest(format, payload, &unit);
            decoded += 1;
        }
        let positions = next.into_iter().map(|(stream, offset)| Position { stream, offset }).collect();
        (self.pipeline.take_batches(), positions, expected.into_iter().collect(), decoded)
    }

    /// Notes what this assignment stored, for the commit at a revocation.
    fn remember(&mut self, positions: &[Position]) {
        let mut stored = lock(&self.consumer.context().stored);
        for position in positions {
            if let Some((topic, partition)) = split_stream(&position.stream) {
                stored.insert((topic.to_string(), partition), position.offset as i64);
            }
        }
    }

    /// Commits the stored positions to Kafka, for lag tools only: where reading resumes is decided by the
    /// store's positions within one process and by the positions published to the shared location between
    /// processes (see the module doc), never by these commits, which brokers refuse during rebalances.
    fn commit(&mut self, positions: &[Position]) {
        let mut list = TopicPartitionList::new();
        for position in positions {
            let Some((topic, partition)) = split_stream(&position.stream) else { continue };
            if list.add_partition_offset(topic, partition, Offset::Offset(position.offset as i64)).is_err() {
                continue;
            }
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
            self.stats.commit_errors += 1;
            crate::metrics::metrics().kafka_commit_errors.inc();
            tracing::debug!(error = %error, "kafka offset commit failed");
        }
    }
}

/// Delivery failures librdkafka reports to a `Publisher`.
pub struct Deliveries {
    failed: std::sync::atomic::AtomicU64,
}

impl rdkafka::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            if self.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                tracing::error!(error = %error, "a record was not delivered");
            }
        }
    }
}

/// A producer for `coldtrail generate --kafka`: keyed records, waiting while librdkafka's queue is full.
pub struct Publisher {
    producer: rdkafka::producer::BaseProducer<Deliveries>,
    sent: u64,
}

impl Publisher {
    pub fn new(brokers: &str) -> Result<Publisher, IngestError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "20")
            .set("compression.type", "zstd")
            .set("message.timeout.ms", "60000")
            .create_with_context(Deliveries { failed: std::sync::atomic::AtomicU64::new(0) })
            .map_err(|e| IngestError::Kafka(e.to_string()))?;
        Ok(Publisher { producer, sent: 0 })
    }

    pub fn send(&mut self, topic: &str, key: &str, payload: &[u8]) -> Result<(), IngestError> {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        use rdkafka::producer::BaseRecord;
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(IngestError::Kafka(format!("publishing to {topic}: {e}"))),
            }
        }
    }

    /// Serves delivery reports without waiting.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every record is delivered or failed; the number sent, or an error naming the failures.
    pub fn finish(self, timeout: Duration) -> Result<u64, IngestError> {
        use rdkafka::producer::Producer;
        self.producer.flush(timeout).map_err(|e| IngestError::Kafka(format!("flushing the producer: {e}")))?;
        let failed = self.producer.context().failed.load(std::sync::atomic::Ordering::Relaxed);
        if failed > 0 {
            return Err(IngestError::Kafka(format!("{failed} of {} records were not delivered", self.sent)));
        }
        Ok(self.sent)
    }
}

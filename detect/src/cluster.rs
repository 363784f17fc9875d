//! Detection across the processes of one deployment (issue 24; ARCHITECTURE.md, "Detection follows event
//! time"). Processes that consume one Kafka consumer group into one shared location ingest whatever
//! partitions they are given, so one function's rows are spread over every process. Detection is
//! therefore not tied to ingest:
//!
//! - **Ownership.** Detection is split into `partitions` detection partitions. Partition `p` owns the
//!   functions whose name hashes to `p` (their invocations and log lines: the anomaly baselines, callers,
//!   resource abuse, injection) and partition 0 also owns CloudTrail (the control plane and trail rules;
//!   small, per account), to which the other partitions' invocations only contribute function names.
//!   Which process runs which partition is decided by a Kafka consumer group over a detection topic with
//!   that many partitions (`ingest::membership`), so a rebalance moves detection like it moves ingest.
//! - **Reads.** An owner reads the shared store (every process's sealed segments, its own hot rows), never
//!   its own appends, in the canonical order (`replay::score_range`).
//! - **Watermark.** Each process publishes the oldest event time it holds unsealed (`publish_unsealed`);
//!   an owner scores a minute only once it is older than every live process's unsealed rows and the
//!   usual lateness, so every row of the minute is in a segment it can read.
//! - **State.** Each partition's learned state and progress are checkpointed to the shared location after
//!   every scoring step (`Checkpoints::shared`): a new owner continues from it, it does not start afresh.
//! - **Alerts.** Before storing, an owner drops the alerts whose id (and count) the shared `alerts` table
//!   holds already, and seals the alerts it stores before it checkpoints: a new owner re-scoring the minutes
//!   after the last checkpoint raises the same ids and stores none twice, so each is delivered once.
//! - **Incidents.** The owner of partition 0 also builds the incidents, from every owner's alerts in the
//!   shared store (`IncidentThread::start_shared`): one builder cluster-wide, so incidents span processes
//!   and partitions; a new owner places the last horizon's alerts again and stores only what differs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use serde::{Deserialize, Serialize};
use store::{InputMark, Store, Table, TimeRange};

use crate::alert::Alert;
use crate::engine::{Checkpoints, EngineConfig, EngineStats};
use crate::error::DetectError;
use crate::incidents::{IncidentConfig, IncidentThread};
use crate::runner::{ClusterScope, DetectionThread, InputEnd, LiveConfig};
use crate::security::SigmaRules;

/// Which functions (and whether CloudTrail) one detection partition owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub partition: u32,
    pub partitions: u32,
}

impl Default for Ownership {
    /// Everything: one process detects alone.
    fn default() -> Self {
        Ownership { partition: 0, partitions: 1 }
    }
}

/// The detection partition of a function: FNV-1a of its name (stable across processes, builds and
/// platforms); rows without a function belong to partition 0.
pub fn partition_of(function: Option<&str>, partitions: u32) -> u32 {
    let Some(name) = function.filter(|_| partitions > 1) else { return 0 };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions)) as u32
}

impl Ownership {
    pub fn is_whole(&self) -> bool {
        self.partitions <= 1
    }

    /// Partition 0 owns CloudTrail and the rows without a function.
    pub fn owns_accounts(&self) -> bool {
        self.partition == 0
    }

    /// The rows of `batch` whose `function_name` this partition owns, and the others.
    pub fn split(&self, batch: &RecordBatch) -> Result<(RecordBatch, RecordBatch), DetectError> {
        let index = batch
            .schema()
            .index_of("function_name")
            .map_err(|_| DetectError::Internal("a batch without function_name".into()))?;
        let names = arrow::compute::cast(batch.column(index), &arrow::datatypes::DataType::Utf8)
            .map_err(|e| DetectError::Internal(format!("function names: {e}")))?;
        let names = names.as_string::<i32>();
        let mine: BooleanArray = (0..names.len())
            .map(|i| {
                let name = names.is_valid(i).then(|| names.value(i));
                Some(partition_of(name, self.partitions) == self.partition)
            })
            .collect();
        let theirs = arrow::compute::not(&mine).map_err(|e| DetectError::Internal(e.to_string()))?;
        let select = |mask: &BooleanArray| {
            arrow::compute::filter_record_batch(batch, mask).map_err(|e| DetectError::Internal(e.to_string()))
        };
        Ok((select(&mine)?, select(&theirs)?))
    }
}

/// Where the processes publish the oldest event time they hold unsealed.
const NODES_PREFIX: &str = "_detect/nodes";

/// One process's unsealed rows, as published.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Unsealed {
    node: String,
    /// The oldest event time of its rows not yet in a segment; `None` when all are sealed.
    oldest_us: Option<i64>,
    /// Event time through which every input partition it holds has delivered (`Store::input_watermark`;
    /// for `coldtrail info` and older readers).
    #[serde(default)]
    inputs_through_us: Option<i64>,
    /// Every input partition it has held since it started (and, through earlier publications of the same
    /// node, before): how far each has delivered.
    #[serde(default)]
    inputs: BTreeMap<String, InputMark>,
    /// Wall-clock time of the publication.
    at_us: i64,
}

/// The tables detection reads.
const TABLES: [Table; 3] = [Table::Cloudtrail, Table::Invocations, Table::Logs];

/// Publishes the oldest event time this process holds unsealed and how far its input partitions have
/// delivered, for the detection owners of the cluster. `known` carries the marks of the partitions this
/// node published before (a process started again on the same data directory keeps the marks of the
/// partitions it held when it was killed until another process carries them further).
pub async fn publish_unsealed(
    store: &Store,
    known: &mut Option<BTreeMap<String, InputMark>>,
) -> Result<(), DetectError> {
    let path = format!("{NODES_PREFIX}/{}.json", store.node_id());
    if known.is_none() {
        let before = store.location().get_opt(&path).await?;
        let before = before.and_then(|bytes| serde_json::from_slice::<Unsealed>(&bytes).ok());
        *known = Some(before.map(|b| b.inputs).unwrap_or_default());
    }
    let inputs = known.get_or_insert_with(BTreeMap::new);
    store::merge_marks(inputs, store.input_marks());
    let unsealed = Unsealed {
        node: store.node_id().to_string(),
        oldest_us: store.unsealed_oldest(&TABLES),
        inputs_through_us: store.input_watermark(INPUT_IDLE_AFTER),
        inputs: inputs.clone(),
        at_us: store::time::now_micros(),
    };
    let bytes = serde_json::to_vec(&unsealed).map_err(|e| DetectError::Internal(e.to_string()))?;
    store.location().put(&path, bytes.into()).await?;
    Ok(())
}

/// An input partition that delivers nothing for this long no longer holds the watermark back.
pub const INPUT_IDLE_AFTER: Duration = Duration::from_secs(120);

/// What holds the cluster's watermark back: the oldest event time any live process holds unsealed (a
/// process that has not published for `silent` is taken as gone: its unsealed rows come as late rows when
/// it returns), and the event time through which every input partition has delivered. A partition's
/// progress is the furthest any process, live or gone, published for it, so a partition between holders
/// (a rebalance, a killed holder, a process started again) holds the watermark where it stopped until
/// its next holder carries it further, or until it has been idle for `INPUT_IDLE_AFTER`.
pub async fn cluster_bounds(store: &Store, silent: Duration) -> Result<(Option<i64>, Option<i64>), DetectError> {
    let now = store::time::now_micros();
    let min = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut marks: BTreeMap<String, InputMark> = store.input_marks();
    let mut oldest: Option<i64> = store.unsealed_oldest(&TABLES);
    for object in store.location().list(NODES_PREFIX).await? {
        let Some(bytes) = store.location().get_opt(object.location.as_ref()).await? else { continue };
        let Ok(unsealed) = serde_json::from_slice::<Unsealed>(&bytes) else {
            tracing::warn!(path = %object.location, "an unreadable detection progress file is ignored");
            continue;
        };
        store::merge_marks(&mut marks, unsealed.inputs);
        if unsealed.node == store.node_id() || now.saturating_sub(unsealed.at_us) > silent.as_micros() as i64 {
            continue;
        }
        oldest = min(oldest, unsealed.oldest_us);
    }
    tracing::debug!(?marks, oldest, "the cluster's bounds");
    // No input known anywhere yet (the sources have not listed their partitions): nothing is complete.
    let inputs = match marks.is_empty() {
        true => Some(i64::MIN),
        false => store::marks_watermark(marks.values(), now, INPUT_IDLE_AFTER),
    };
    Ok((oldest, inputs))
}

/// The alert ids (with the highest count) stored anywhere in the cluster, so that an owner stores and
/// delivers each alert once.
#[derive(Default)]
pub struct StoredAlerts {
    counts: HashMap<String, i64>,
    loaded: bool,
}

/// How far before the event time being scored stored alerts are looked up: alert groups are 10 minutes,
/// re-scoring after a takeover goes back to the last checkpoint (a step).
const STORED_ALERTS_LOOKBACK_US: i64 = 24 * 3_600 * 1_000_000;

impl StoredAlerts {
    /// The alerts of `raised` not stored yet (a group's row counts as stored if one with its count or a
    /// higher one is). Reads the shared `alerts` table the first time.
    pub async fn unstored(
        &mut self,
        store: &Store,
        scored_from_us: i64,
        raised: Vec<Alert>,
    ) -> Result<Vec<Alert>, DetectError> {
        if raised.is_empty() {
            return Ok(raised);
        }
        if !self.loaded {
            let range = TimeRange::new(scored_from_us.saturating_sub(STORED_ALERTS_LOOKBACK_US), i64::MAX);
            for batch in store.scan(Table::Alerts, None, range).await? {
                self.note_batch(&batch);
            }
            self.loaded = true;
        }
        let mut out = Vec::with_capacity(raised.len());
        for alert in raised {
            let count = alert.count.max(1);
            let known = self.counts.get(&alert.alert_id).copied();
            if known.is_none_or(|known| known < count) {
                self.counts.insert(alert.alert_id.clone(), count);
                out.push(alert);
            }
        }
        Ok(out)
    }

    fn note_batch(&mut self, batch: &RecordBatch) {
        let schema = batch.schema();
        let (Ok(id), Ok(count)) = (schema.index_of("alert_id"), schema.index_of("count")) else { return };
        let Ok(ids) = arrow::compute::cast(batch.column(id), &arrow::datatypes::DataType::Utf8) else { return };
        let ids = ids.as_string::<i32>();
        let counts = batch.column(count).as_primitive_opt::<arrow::datatypes::Int64Type>();
        for row in 0..batch.num_rows() {
            if ids.is_null(row) {
                continue;
            }
            let count = counts.map_or(1, |c| c.value(row)).max(1);
            let entry = self.counts.entry(ids.value(row).to_string()).or_insert(count);
            *entry = (*entry).max(count);
        }
    }
}

/// The detection partitions this process runs, started and stopped as the group assigns and revokes
/// them, and the publication of this process's unsealed rows for every owner.
pub struct Partitions {
    store: Arc<Store>,
    live: LiveConfig,
    engine: EngineConfig,
    rules: Box<dyn Fn() -> SigmaRules + Send + Sync>,
    partitions: u32,
    running: Mutex<BTreeMap<u32, DetectionThread>>,
    /// Stats of the partitions stopped since the last `take_stopped`.
    stopped: Mutex<Vec<EngineStats>>,
    publishing: Arc<AtomicBool>,
    publisher: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The incident builder, while this process owns partition 0.
    incidents: Mutex<Option<IncidentThread>>,
}

/// How often the owner of partition 0 reads the shared alerts for incidents.
const INCIDENTS_EVERY: Duration = Duration::from_secs(2);

/// How often a process publishes its unsealed rows.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

impl Partitions {
    /// Starts publishing this process's unsealed rows; no partition runs until one is assigned.
    pub fn new(
        store: Arc<Store>,
        partitions: u32,
        live: LiveConfig,
        engine: EngineConfig,
        rules: impl Fn() -> SigmaRules + Send + Sync + 'static,
    ) -> Result<Partitions, DetectError> {
        let publishing = Arc::new(AtomicBool::new(true));
        let publisher = std::thread::Builder::new()
            .name("detect-publish".into())
            .spawn({
                let (store, publishing) = (store.clone(), publishing.clone());
                move || {
                    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                        tracing::error!("no runtime to publish unsealed rows: detection owners will wait");
                        return;
                    };
                    let mut known = None;
                    while publishing.load(Ordering::SeqCst) {
                        if let Err(e) = runtime.block_on(publish_unsealed(&store, &mut known)) {
                            tracing::warn!(error = %e, "publishing unsealed rows failed; retrying");
                        }
                        std::thread::sleep(PUBLISH_EVERY);
                    }
                }
            })
            .map_err(|e| DetectError::Internal(format!("cannot start the publishing thread: {e}")))?;
        Ok(Partitions {
            store,
            live,
            engine,
            rules: Box::new(rules),
            partitions: partitions.max(1),
            running: Mutex::new(BTreeMap::new()),
            stopped: Mutex::new(Vec::new()),
            publishing,
            publisher: Mutex::new(Some(publisher)),
            incidents: Mutex::new(None),
        })
    }

    /// Where a partition's state lives in the shared location (the count is part of the path: another
    /// split of the functions is another state).
    pub fn checkpoints(store: &Store, partitions: u32, partition: u32) -> Checkpoints {
        Checkpoints::shared(store.location().clone(), format!("_detect/partitions-{partitions}/{partition}"))
    }

    /// Starts the partitions given, each from its last checkpoint in the shared location.
    pub fn assign(&self, partitions: &[u32]) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for &partition in partitions {
            if partition >= self.partitions || running.contains_key(&partition) {
                continue;
            }
            let checkpoints = Partitions::checkpoints(&self.store, self.partitions, partition);
            let engine = checkpoints.load(&self.engine, (self.rules)());
            let ownership = Ownership { partition, partitions: self.partitions };
            let silent_after = Duration::from_secs(30);
            let live = LiveConfig { cluster: Some(ClusterScope { ownership, silent_after }), ..self.live };
            match DetectionThread::start(self.store.clone(), engine, checkpoints, live) {
                Ok(thread) => {
                    tracing::info!(partition, partitions = self.partitions, "detection partition started");
                    running.insert(partition, thread);
                }
                Err(e) => tracing::error!(partition, error = %e, "detection partition not started"),
            }
            if partition == 0 {
                let mut incidents = self.incidents.lock().unwrap_or_else(|e| e.into_inner());
                if incidents.is_none() {
                    match IncidentThread::start_shared(self.store.clone(), IncidentConfig::default(), INCIDENTS_EVERY) {
                        Ok(thread) => *incidents = Some(thread),
                        Err(e) => tracing::error!(error = %e, "the incident builder did not start"),
                    }
                }
            }
        }
    }

    /// Stops the partitions given: each scores what is complete, stores its alerts and checkpoints to the
    /// shared location before this returns (and before the group gives the partition to another process).
    pub fn revoke(&self, partitions: &[u32]) {
        let threads: Vec<(u32, DetectionThread)> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            partitions.iter().filter_map(|p| running.remove(p).map(|t| (*p, t))).collect()
        };
        for (partition, thread) in threads {
            match thread.stop(InputEnd::Open) {
                Ok(stats) => {
                    if let Some(error) = &stats.checkpoint_error {
                        tracing::error!(partition, error = %error, "detection partition stopped without its checkpoint");
                    }
                    tracing::info!(partition, "detection partition stopped and checkpointed");
                    self.stopped.lock().unwrap_or_else(|e| e.into_inner()).push(stats);
                }
                Err(e) => tracing::error!(partition, error = %e, "detection partition failed"),
            }
        }
        if partitions.contains(&0) {
            // After partition 0's last alerts are stored: the builder's last read places them.
            let incidents = self.incidents.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(Err(e)) = incidents.map(IncidentThread::stop) {
                tracing::error!(error = %e, "the incident builder failed");
            }
        }
    }

    /// The partitions running now.
    pub fn running(&self) -> Vec<u32> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect()
    }

    /// Stops every partition still running and the publication; returns the stats of every partition
    /// stopped.
    pub fn stop(&self) -> Vec<EngineStats> {
        let all = self.running();
        self.revoke(&all);
        self.publishing.store(false, Ordering::SeqCst);
        if let Some(publisher) = self.publisher.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = publisher.join();
        }
        std::mem::take(&mut *self.stopped.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_has_one_partition_and_the_split_is_even_enough() {
        let names: Vec<String> = (0..4_000).map(|i| format!("fn-{i}")).collect();
        let mut counts = [0usize; 4];
        for name in &names {
            let p = partition_of(Some(name), 4);
            assert_eq!(p, partition_of(Some(name), 4), "stable");
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(partition_of(None, 4), 0);
        assert_eq!(partition_of(Some("orders-api"), 1), 0);
        // Pinned (FNV-1a 64 of the name): every process, build and version must agree.
        assert_eq!((partition_of(Some("orders-api"), 7), partition_of(Some("orders-api"), 4)), (6, 1));
    }

    /// CI of af3f563: two processes started together; one scored 04:34 of a 05:00 backlog at once,
    /// before any process had listed its partitions or published its rows ("inputs=None"), and stored
    /// three false "invocation rate dropped" alerts for minutes whose rows the other held.
    #[tokio::test]
    async fn nothing_is_complete_until_the_partitions_are_known_and_a_known_one_holds_the_rest_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(store::StoreConfig::new(dir.path())).await.unwrap();
        let silent = Duration::from_secs(30);
        assert_eq!(cluster_bounds(&store, silent).await.unwrap().1, Some(i64::MIN), "no input known");
        // Both partitions listed; this process delivers from one, another (not published yet) holds the other.
        store.input_known("kafka:logs/0");
        store.input_known("kafka:logs/1");
        store.input_open("kafka:logs/0");
        store.input_note("kafka:logs/0", 5_000_000);
        assert_eq!(cluster_bounds(&store, silent).await.unwrap().1, Some(i64::MIN), "logs/1 delivered nothing yet");
        assert_eq!(store.input_watermark(INPUT_IDLE_AFTER), Some(5_000_000), "alone, only held partitions count");
    }
}

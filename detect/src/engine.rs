//! `Engine`: the anomaly stream, the security detections and the deduplicator behind one `push(table,
//! batch)`, `advance_to(now)` and `finish()`, with checkpoints. The live detection thread (`runner`) and
//! the replay of stored history (`replay`) both drive an engine, so live and replayed alerts come from
//! the same code and carry the same ids.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use store::Table;

use crate::alert::Alert;
use crate::cluster::Ownership;
use crate::dedup::Deduplicator;
use crate::error::DetectError;
use crate::security::{Learning, SecurityConfig, SecurityDetections, SecurityStats, SigmaRules};
use crate::stream::{AnomalyStream, AnomalyStreamConfig, AnomalyStreamStats};

/// Alerts of one detector and entity within this much event time are one alert with a count.
pub const DEDUP_WINDOW_US: i64 = 10 * 60 * 1_000_000;

/// Which detections an engine runs, and how.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The anomaly stream over `invocations`; `None` runs none.
    pub anomaly: Option<AnomalyStreamConfig>,
    /// The security detections over `cloudtrail`, `invocations` and `logs`; `None` runs none.
    pub security: Option<SecurityConfig>,
    pub dedup_window_us: i64,
}

impl Default for EngineConfig {
    /// Every detection with its default settings.
    fn default() -> Self {
        EngineConfig {
            anomaly: Some(AnomalyStreamConfig::default()),
            security: Some(SecurityConfig::default()),
            dedup_window_us: DEDUP_WINDOW_US,
        }
    }
}

impl EngineConfig {
    /// The anomaly stream only (`coldtrail detect`).
    pub fn anomaly_only() -> Self {
        EngineConfig { security: None, ..EngineConfig::default() }
    }

    /// The security detections only (`coldtrail hunt`).
    pub fn security_only() -> Self {
        EngineConfig { anomaly: None, ..EngineConfig::default() }
    }

    /// With `learning_us` as the learning period of the first-seen detections.
    pub fn with_learning(mut self, learning_us: i64) -> Self {
        if let Some(security) = &mut self.security {
            security.learning_us = learning_us;
        }
        self
    }
}

/// What an engine has done.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineStats {
    pub stream: AnomalyStreamStats,
    pub security: SecurityStats,
    /// Rows that arrived after their minute was scored, by table: stored, left out of the anomaly
    /// detectors, run through the security detections that need no order (`Engine::push_late`).
    pub late_rows: std::collections::BTreeMap<Table, u64>,
    /// Event time before which everything is scored (`Engine::scored_through_us`).
    pub scored_through_us: Option<i64>,
    /// Why the last checkpoint could not be written, if it could not (the rows and alerts are stored
    /// regardless; the next run starts from the last checkpoint that was written).
    pub checkpoint_error: Option<String>,
    /// The learning period's progress per account (the first-seen detections report once learned).
    pub learning: Vec<Learning>,
}

/// The detections of one process.
pub struct Engine {
    stream: Option<AnomalyStream>,
    security: Option<SecurityDetections>,
    dedup: Deduplicator,
    /// Stream counters already added to the metrics.
    published: AnomalyStreamStats,
    late_rows: std::collections::BTreeMap<Table, u64>,
    /// Event time before which the stored rows have been scored: where the next `replay::score_range`
    /// starts. Checkpointed with the learned state.
    scored_through_us: Option<i64>,
    /// Event time the anomaly stream is not moved past (`set_stream_horizon`).
    stream_horizon_us: Option<i64>,
    /// The functions (and whether CloudTrail) this engine detects on (`cluster`).
    ownership: Ownership,
}

impl Engine {
    /// An engine that starts without learned state.
    pub fn new(config: &EngineConfig, rules: SigmaRules) -> Engine {
        Engine {
            stream: config.anomaly.clone().map(AnomalyStream::new),
            security: config.security.clone().map(|security| SecurityDetections::new(security, rules)),
            dedup: Deduplicator::new(config.dedup_window_us),
            published: AnomalyStreamStats::default(),
            late_rows: std::collections::BTreeMap::new(),
            scored_through_us: None,
            stream_horizon_us: None,
            ownership: Ownership::default(),
        }
    }

    /// The tables whose rows the engine reads.
    pub fn tables(&self) -> Vec<Table> {
        let mut tables = Vec::new();
        if self.security.is_some() {
            tables.extend(SecurityDetections::TABLES);
        } else if self.stream.is_some() {
            tables.push(Table::Invocations);
        }
        tables
    }

    /// The clean texts of the security detections' injection scan, for a pre-scan (`security::prescan`);
    /// `None` without security detections.
    pub fn clean_texts(&self) -> Option<std::sync::Arc<crate::security::prescan::CleanTexts>> {
        self.security.as_ref().map(SecurityDetections::clean_texts)
    }

    /// Event time before which the stored rows have been scored (`None`: nothing yet).
    pub fn scored_through_us(&self) -> Option<i64> {
        self.scored_through_us
    }

    /// Keeps the anomaly stream's event time at or before `horizon_us` (`None`: no limit). At the end of a
    /// bounded input the minutes after its last invocation hold only the log lines of invocations that
    /// started before: they are not minutes in which the fleet fell silent, and must not be scored as
    /// such.
    pub fn set_stream_horizon(&mut self, horizon_us: Option<i64>) {
        self.stream_horizon_us = horizon_us;
    }

    /// Records that the stored rows before `ts_us` have been scored.
    pub fn set_scored_through(&mut self, ts_us: i64) {
        self.scored_through_us = Some(self.scored_through_us.map_or(ts_us, |t| t.max(ts_us)));
    }

    /// Rows that arrived after their minute was scored: counted by table, kept from the anomaly
    /// detectors (their minutes are scored already), and run through the security detections that need
    /// no order (injection, Sigma). Returns the alerts to store.
    pub fn push_late(&mut self, table: Table, batch: &RecordBatch) -> Vec<Alert> {
        let Some((batch, _)) = self.owned(table, batch) else { return Vec::new() };
        let batch = &batch;
        if batch.num_rows() == 0 {
            return Vec::new();
        }
        *self.late_rows.entry(table).or_default() += batch.num_rows() as u64;
        crate::metrics::metrics().late_rows.with_label_values(&[table.name()]).inc_by(batch.num_rows() as u64);
        if table == Table::Invocations && self.stream.is_some() {
            crate::metrics::metrics().late_invocations.inc_by(batch.num_rows() as u64);
        }
        let mut alerts = Vec::new();
        if let Some(security) = &mut self.security {
            security.push_late(table, batch, &mut alerts);
        }
        self.admit(alerts)
    }

    /// Runs the detections over a batch of `table` rows; returns the alerts to store.
    pub fn push(&mut self, table: Table, batch: &RecordBatch) -> Vec<Alert> {
        let mut alerts = Vec::new();
        self.detect(table, batch, &mut alerts);
        self.admit(alerts)
    }

    /// Detects on the rows of one detection partition only (`cluster`).
    pub fn set_ownership(&mut self, ownership: Ownership) {
        self.ownership = ownership;
    }

    /// The rows of `batch` this engine detects on and, for a detection partition's invocations and
    /// logs, the others; `None` when it owns none of the table's rows.
    fn owned(&self, table: Table, batch: &RecordBatch) -> Option<(RecordBatch, Option<RecordBatch>)> {
        match table {
            _ if self.ownership.is_whole() => Some((batch.clone(), None)),
            Table::Cloudtrail if self.ownership.owns_accounts() => Some((batch.clone(), None)),
            Table::Invocations | Table::Logs => match self.ownership.split(batch) {
                Ok((mine, theirs)) => Some((mine, Some(theirs))),
                Err(e) => {
                    tracing::warn!(error = %e, "rows not split by ownership; not scored");
                    None
                }
            },
            _ => None,
        }
    }

    fn detect(&mut self, table: Table, batch: &RecordBatch, alerts: &mut Vec<Alert>) {
        let Some((mine, theirs)) = self.owned(table, batch) else { return };
        self.detect_owned(table, &mine, alerts);
        // CloudTrail's owner learns every function's name (a role session named after one).
        if let (Table::Invocations, Some(theirs), true, Some(security)) =
            (table, theirs, self.ownership.owns_accounts(), &mut self.security)
        {
            security.note_functions(&theirs);
        }
    }

    fn detect_owned(&mut self, table: Table, batch: &RecordBatch, alerts: &mut Vec<Alert>) {
        if batch.num_rows() == 0 {
            return;
        }
        if table == Table::Invocations {
            if let Some(stream) = &mut self.stream {
                stream.push(batch, alerts);
            }
        }
        if let Some(security) = &mut self.security {
            security.push(table, batch, alerts);
        }
    }

    /// The raised alerts through the deduplicator: those to store now.
    fn admit(&mut self, alerts: Vec<Alert>) -> Vec<Alert> {
        let admitted = self.dedup.admit(alerts);
        self.publish(&admitted);
        admitted
    }

    /// Moves event time on to `now_us` without rows (a clock tick): the minutes of a fleet that went
    /// quiet are scored, and alert groups whose window ended get their final rows. Returns the alerts
    /// to store.
    pub fn advance_to(&mut self, now_us: i64) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if let Some(stream) = &mut self.stream {
            let until = self.stream_horizon_us.map_or(now_us, |horizon| now_us.min(horizon));
            if until > stream.watermark_us() {
                stream.advance_to(until, &mut alerts);
            }
        }
        let mut admitted = self.dedup.admit(alerts);
        admitted.extend(self.dedup.close_until(now_us));
        self.publish(&admitted);
        admitted
    }

    /// Closes every open alert group; returns their final rows. Open minutes stay open (they are
    /// checkpointed for the next run).
    pub fn finish(&mut self) -> Vec<Alert> {
        let closed = self.dedup.close_all();
        self.publish(&closed);
        closed
    }

    /// The current rows of open alert groups that grew since their last stored row, leaving them open
    /// (at the stop of a process whose state is checkpointed: the next run goes on counting them).
    pub fn flush_open(&mut self) -> Vec<Alert> {
        let rows = self.dedup.flush();
        self.publish(&rows);
        rows
    }

    fn publish(&mut self, alerts: &[Alert]) {
        let stats = self.stream.as_ref().map(AnomalyStream::stats).unwrap_or_default();
        crate::metrics::publish(&stats, &self.published, alerts);
        self.published = stats;
    }

    /// The learning period's progress per account; empty without security detections.
    pub fn learning(&self) -> Vec<Learning> {
        self.security.as_ref().map(SecurityDetections::learning).unwrap_or_default()
    }

    /// The learning period of the first-seen detections, when security detections run.
    pub fn learning_required_us(&self) -> Option<i64> {
        self.security.as_ref().map(|s| s.config().learning_us)
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            stream: self.stream.as_ref().map(AnomalyStream::stats).unwrap_or_default(),
            security: self.security.as_ref().map(|s| s.stats().clone()).unwrap_or_default(),
            late_rows: self.late_rows.clone(),
            scored_through_us: self.scored_through_us,
            checkpoint_error: None,
            learning: self.learning(),
        }
    }
}

/// Where an engine's learned state is kept between runs: `checkpoint-<generation>.json` (the anomaly
/// stream), `security-<generation>.json` (the security detections) and `progress.json` (how far event time
/// is scored, the open alert groups, and the generation of the state files that go with it). A save
/// writes a new generation's state files, then replaces the progress atomically, then removes the
/// generation before the one it replaced: a process killed anywhere in a save leaves the progress and the
/// state it names, never the progress of one step with the baselines of another (which a new owner would
/// re-score on top of, counting minutes twice). In a directory (`<data>/detect/` of one process), or in
/// the shared location under a prefix (a detection partition's state, which moves between processes:
/// `cluster`).
#[derive(Debug, Clone)]
pub struct Checkpoints {
    place: Place,
    /// The generations saved or loaded by this handle, newest last.
    generations: Arc<Mutex<Vec<u64>>>,
}

#[derive(Debug, Clone)]
enum Place {
    Dir(PathBuf),
    Shared { location: store::Location, prefix: String },
}

/// The state files of checkpoints written before generations (read when the progress names none).
const STREAM_FILE: &str = "checkpoint.json";
const SECURITY_FILE: &str = "security.json";
const PROGRESS_FILE: &str = "progress.json";

fn stream_file(generation: Option<u64>) -> String {
    generation.map_or(STREAM_FILE.to_string(), |g| format!("checkpoint-{g}.json"))
}

fn security_file(generation: Option<u64>) -> String {
    generation.map_or(SECURITY_FILE.to_string(), |g| format!("security-{g}.json"))
}

impl Checkpoints {
    pub fn new(dir: impl Into<PathBuf>) -> Checkpoints {
        Checkpoints { place: Place::Dir(dir.into()), generations: Arc::default() }
    }

    /// Checkpoints as objects under `prefix` of the shared location.
    pub fn shared(location: store::Location, prefix: impl Into<String>) -> Checkpoints {
        Checkpoints { place: Place::Shared { location, prefix: prefix.into() }, generations: Arc::default() }
    }

    fn path(&self, name: &str) -> PathBuf {
        match &self.place {
            Place::Dir(dir) => dir.join(name),
            Place::Shared { prefix, .. } => PathBuf::from(format!("{prefix}/{name}")),
        }
    }

    /// The anomaly stream's state that the progress names.
    pub fn stream_path(&self) -> PathBuf {
        self.path(&stream_file(self.saved_generation()))
    }

    /// The security detections' state that the progress names.
    pub fn security_path(&self) -> PathBuf {
        self.path(&security_file(self.saved_generation()))
    }

    fn saved_generation(&self) -> Option<u64> {
        self.progress().and_then(|p| p.generation)
    }

    pub fn progress_path(&self) -> PathBuf {
        self.path(PROGRESS_FILE)
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        match &self.place {
            Place::Dir(dir) => read_if_present(&dir.join(name)),
            Place::Shared { location, prefix } => {
                let key = format!("{prefix}/{name}");
                match object_io(location.get_opt(&key)) {
                    Ok(bytes) => bytes.map(|b| b.to_vec()),
                    Err(e) => {
                        tracing::warn!(path = %key, error = %e, "checkpoint unreadable; starting afresh");
                        None
                    }
                }
            }
        }
    }

    fn write(&self, name: &str, bytes: Vec<u8>) -> Result<(), DetectError> {
        match &self.place {
            Place::Dir(dir) => write_atomically(&dir.join(name), &bytes),
            Place::Shared { location, prefix } => {
                let key = format!("{prefix}/{name}");
                object_io(location.put(&key, bytes.into()))
                    .map_err(|e| DetectError::Checkpoint(format!("cannot write {key}: {e}")))
            }
        }
    }

    /// An engine with the learned state of the last checkpoint where there is a usable one; a part
    /// whose checkpoint is missing, unreadable, of another version or of another configuration starts
    /// afresh, with a warning that says why.
    pub fn load(&self, config: &EngineConfig, rules: SigmaRules) -> Engine {
        let mut engine = Engine::new(config, rules);
        let progress = self.read(PROGRESS_FILE).map(|bytes| serde_json::from_slice::<Progress>(&bytes));
        let generation = match &progress {
            Some(Ok(progress)) if progress.version == PROGRESS_VERSION => progress.generation,
            _ => None,
        };
        self.generations.lock().unwrap_or_else(|e| e.into_inner()).extend(generation);
        if let (Some(stream_config), Some(bytes)) = (&config.anomaly, self.read(&stream_file(generation))) {
            match AnomalyStream::restore(stream_config.clone(), &bytes) {
                Ok(stream) => engine.stream = Some(stream),
                Err(e) => tracing::warn!(
                    path = %self.stream_path().display(),
                    error = %e,
                    "detector checkpoint not used; baselines start afresh"
                ),
            }
        }
        if let (Some(security), Some(bytes)) = (&mut engine.security, self.read(&security_file(generation))) {
            if let Err(e) = security.restore_state(&bytes) {
                tracing::warn!(
                    path = %self.security_path().display(),
                    error = %e,
                    "security checkpoint not used; learning afresh"
                );
            }
        }
        if let Some(progress) = progress {
            match progress {
                Ok(progress) if progress.version == PROGRESS_VERSION => {
                    engine.scored_through_us = progress.scored_through_us;
                    engine.dedup.restore(progress.open_alerts);
                }
                Ok(progress) => {
                    tracing::warn!(version = progress.version, "detector progress of another version not used")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "detector progress unreadable; scoring starts at the oldest stored row")
                }
            }
        }
        engine
    }

    /// Writes the engine's state: each file replaced atomically (a temporary fsynced and renamed over
    /// it, or one object put), the progress last.
    pub fn save(&self, engine: &Engine) -> Result<(), DetectError> {
        let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        // Wall-clock microseconds, above every generation this handle knows: unique across the owners a
        // partition has over time.
        let generation = (store::time::now_micros().max(0) as u64).max(generations.last().map_or(0, |g| g + 1));
        if let Some(stream) = &engine.stream {
            self.write(&stream_file(Some(generation)), stream.checkpoint()?)?;
        }
        if let Some(security) = &engine.security {
            self.write(&security_file(Some(generation)), security.checkpoint()?)?;
        }
        let progress = Progress {
            version: PROGRESS_VERSION,
            scored_through_us: engine.scored_through_us,
            learning: engine.learning(),
            open_alerts: engine.dedup.checkpoint(),
            generation: Some(generation),
        };
        let bytes = serde_json::to_vec(&progress).map_err(|e| DetectError::Checkpoint(e.to_string()))?;
        self.write(PROGRESS_FILE, bytes)?;
        generations.push(generation);
        // The generation just replaced stays (a reader may hold the progress that named it); older ones go.
        while generations.len() > 2 {
            let old = generations.remove(0);
            self.remove(&stream_file(Some(old)));
            self.remove(&security_file(Some(old)));
        }
        crate::metrics::metrics().checkpoints.inc();
        Ok(())
    }

    /// Removes a state file no progress names any more; a failure only leaves a file behind.
    fn remove(&self, name: &str) {
        let removed = match &self.place {
            Place::Dir(dir) => match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            },
            Place::Shared { location, prefix } => {
                object_io(location.delete(&format!("{prefix}/{name}"))).map_err(|e| e.to_string())
            }
        };
        if let Err(error) = removed {
            tracing::debug!(name, error, "an old checkpoint generation was not removed");
        }
    }
}

/// Runs an object-store call to completion from any thread, inside an async runtime or not: on a thread
/// of its own with a runtime of its own (checkpoints are written once a step, so the cost is small).
fn object_io<T: Send, F: std::future::Future<Output = store::Result<T>> + Send>(future: F) -> store::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| store::StoreError::Internal(format!("a runtime for checkpoint IO: {e}")))?
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|_| Err(store::StoreError::Internal("checkpoint IO panicked".into())))
    })
}

const PROGRESS_VERSION: u32 = 1;

/// How far event time is scored, beside the learned state.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub version: u32,
    pub scored_through_us: Option<i64>,
    /// The learning period's progress per account, for `coldtrail info`.
    #[serde(default)]
    pub learning: Vec<Learning>,
    /// The alert groups open at the checkpoint (`dedup::Deduplicator`).
    #[serde(default)]
    pub open_alerts: Vec<crate::dedup::OpenGroup>,
    /// The generation of the state files saved with this progress; `None` in checkpoints written before
    /// generations (`checkpoint.json`, `security.json`).
    #[serde(default)]
    pub generation: Option<u64>,
}

impl Progress {
    /// How far scoring and learning have come, as `coldtrail info --json` shows it.
    pub fn summary(&self) -> serde_json::Value {
        let learning: Vec<serde_json::Value> = self
            .learning
            .iter()
            .map(|l| {
                serde_json::json!({
                    "account": l.account,
                    "watched_seconds": l.watched_us / 1_000_000,
                    "required_seconds": l.required_us / 1_000_000,
                    "learned": l.learned(),
                })
            })
            .collect();
        serde_json::json!({
            "scored_through": self.scored_through_us.map(store::time::format_seconds),
            "learning": learning,
        })
    }
}

impl Checkpoints {
    /// What the last checkpoint says of scoring and learning; `None` when there is none (or it cannot be
    /// read).
    pub fn progress(&self) -> Option<Progress> {
        serde_json::from_slice(&self.read(PROGRESS_FILE)?).ok()
    }
}

/// The file's bytes; `None` when it does not exist or cannot be read (then with a warning).
fn read_if_present(path: &Path) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "checkpoint unreadable; starting afresh");
            None
        }
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DetectError> {
    use std::io::Write;
    let failed =
        |what: &str, e: std::io::Error| DetectError::Checkpoint(format!("cannot {what} {}: {e}", path.display()));
    let dir = path.parent().expect("a checkpoint path is a file in a directory");
    std::fs::create_dir_all(dir).map_err(|e| failed("create the directory of", e))?;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary).map_err(|e| failed("create a temporary beside", e))?;
    file.write_all(bytes).map_err(|e| failed("write a temporary beside", e))?;
    file.sync_all().map_err(|e| failed("sync a temporary beside", e))?;
    std::fs::rename(&temporary, path).map_err(|e| failed("replace", e))
}

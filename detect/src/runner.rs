//! `DetectionThread`: the live detections of a running process (`serve`, `ingest`, `generate`). A thread
//! of its own, never the async runtime.
//!
//! Rows reach the detectors from the store, never from the appends themselves: the thread follows the
//! store's appends (`Store::subscribe`) only to learn how far event time has got, and once a minute is
//! complete it scores it from the store (`replay::score_range`), in the canonical order. So the alerts
//! of one input do not depend on the order it was delivered in (ARCHITECTURE.md, "Detection follows
//! event time").
//!
//! A minute is complete when the newest event time stored is `LiveConfig::lateness_us` past its end (the
//! watermark). A row stamped beyond the clock plus `future_skew_us` moves the watermark only that far.
//! With live input that went quiet, the clock moves the watermark, so that a fleet that went silent is
//! seen. A row that comes after its minute was scored is late: stored, counted, and run through the
//! detections that need no order (`Engine::push_late`). At stop, a bounded input (`InputEnd::Closed`:
//! files, a backfill) is scored to its end; an open one (`serve`, a stream) keeps its last minutes for
//! the next run, through the checkpoint. Scoring goes in steps of at most an hour of event time, and a
//! stream's stop scores its backlog for at most `LiveConfig::stop_scoring_budget` (10 s): a `serve` started over a day of
//! unscored rows stops within seconds, and the next start goes on from the checkpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{BooleanArray, TimestampMicrosecondArray};
use store::time::{MICROS_PER_MINUTE, MICROS_PER_SECOND};
use store::{Appended, Store, Table, TimeRange};

use crate::alert::{alerts_batch, Alert};
use crate::cluster::{cluster_bounds, Ownership, StoredAlerts, INPUT_IDLE_AFTER};
use crate::engine::{Checkpoints, Engine, EngineStats};
use crate::error::DetectError;
use crate::replay::{minute_ceiling, minute_floor, score_range, stored_span};
use crate::security::prescan::Prescan;

/// Appends buffered between the store and the detectors before appenders wait.
const QUEUE_APPENDS_MAX: usize = 64;
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);
/// Most event time one scoring step covers: a stop waits for one step at most.
const SCORE_STEP_US: i64 = 3_600 * 1_000_000;

/// How long the thread waits for rows before it looks at the clock and the stop flag.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Reads remembered to tell whether a row that comes late was in one (`Reads`).
const READS_REMEMBERED_MAX: usize = 4_096;

/// How the live detections decide that a span of event time is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConfig {
    /// How long after its event time a row may still arrive and be scored in order. The default covers
    /// Firehose's longest buffering (900 s) and CloudTrail's usual delivery delay.
    pub lateness_us: i64,
    /// How far past the clock a row's event time may move the watermark.
    pub future_skew_us: i64,
    /// With live input (event time within the lateness of the clock) and no rows for this long, the
    /// clock moves the watermark.
    pub idle_after: Duration,
    /// Score minutes as the watermark passes them while the run goes on. Off for a backfill of files in
    /// no particular order (export objects one per log stream, say): their delivery order says nothing
    /// about event time, so everything is scored at stop, as one replay.
    pub score_while_running: bool,
    /// Detection of one partition of a cluster (`cluster`): reads every process's sealed rows, waits for
    /// every live process's unsealed ones, stores each alert id once cluster-wide and checkpoints after
    /// every step. `None`: one process detects on what it stores.
    pub cluster: Option<ClusterScope>,
    /// How long a stream's stop goes on scoring a backlog (in steps of an hour of event time) before it
    /// checkpoints and leaves the rest to the next start.
    pub stop_scoring_budget: Duration,
}

/// One detection partition of a cluster, and when a silent process is taken as gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterScope {
    pub ownership: Ownership,
    /// A process that has not published its unsealed rows for this long no longer holds back the watermark.
    pub silent_after: Duration,
}

/// How often a cluster member reads the others' unsealed rows and their new segments.
const CLUSTER_TICK: Duration = Duration::from_secs(2);

/// The default allowed lateness: 15 minutes.
pub const LATENESS_DEFAULT_US: i64 = 15 * MICROS_PER_MINUTE;

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            lateness_us: LATENESS_DEFAULT_US,
            future_skew_us: 5 * MICROS_PER_MINUTE,
            idle_after: Duration::from_secs(120),
            score_while_running: true,
            cluster: None,
            stop_scoring_budget: Duration::from_secs(10),
        }
    }
}

/// Whether the input of a run has an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEnd {
    /// A stream: at stop, minutes the watermark has not passed stay for the next run.
    Open,
    /// Files, a backfill: at stop, everything stored is complete and is scored to its end.
    Closed,
}

/// The running detection thread.
pub struct DetectionThread {
    stop: Arc<AtomicBool>,
    end: Arc<std::sync::Mutex<InputEnd>>,
    thread: std::thread::JoinHandle<Result<EngineStats, DetectError>>,
}

impl DetectionThread {
    /// Subscribes to the store's appends of the engine's tables and starts the thread.
    pub fn start(
        store: Arc<Store>,
        engine: Engine,
        checkpoints: Checkpoints,
        config: LiveConfig,
    ) -> Result<DetectionThread, DetectError> {
        let mut engine = engine;
        if let Some(cluster) = &config.cluster {
            engine.set_ownership(cluster.ownership);
        }
        let receiver = store.subscribe(&engine.tables(), QUEUE_APPENDS_MAX);
        let stop = Arc::new(AtomicBool::new(false));
        let end = Arc::new(std::sync::Mutex::new(InputEnd::Open));
        let thread = std::thread::Builder::new()
            .name("detect".into())
            .spawn({
                let (stop, end) = (stop.clone(), end.clone());
                move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| DetectError::Internal(format!("cannot start the detection runtime: {e}")))?;
                    let mut live = Live::new(&store, engine, checkpoints, config, &runtime);
                    live.run(&receiver, &stop)?;
                    let end = *end.lock().unwrap_or_else(|e| e.into_inner());
                    live.finish(&receiver, end)
                }
            })
            .map_err(|e| DetectError::Internal(format!("cannot start the detection thread: {e}")))?;
        Ok(DetectionThread { stop, end, thread })
    }

    /// Takes what is queued, scores what is complete (with `InputEnd::Closed`, everything stored),
    /// stores the alerts, checkpoints and ends the thread.
    pub fn stop(self, end: InputEnd) -> Result<EngineStats, DetectError> {
        *self.end.lock().unwrap_or_else(|e| e.into_inner()) = end;
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().map_err(|_| DetectError::Internal("the detection thread panicked".into()))?
    }
}

/// Stores alerts as `alerts` rows.
pub fn store_alerts(store: &Store, alerts: &[Alert]) -> Result<(), DetectError> {
    if let Some(batch) = alerts_batch(alerts) {
        store.append(&[(Table::Alerts, batch)], &[])?;
    }
    Ok(())
}

/// The reads of recent scoring steps: which event time each covered and the last append it included. A
/// row of an append that a read covering its event time included was scored; any other row older than
/// the scored event time is late.
#[derive(Default)]
struct Reads {
    /// By the start of the event time read: its end and the read's sequence number. Reads do not overlap.
    reads: BTreeMap<i64, (i64, u64)>,
}

impl Reads {
    fn note(&mut self, range: TimeRange, seq: u64) {
        if self.reads.len() >= READS_REMEMBERED_MAX {
            self.reads.pop_first();
        }
        self.reads.insert(range.start_micros, (range.end_micros, seq));
    }

    fn scored(&self, ts_us: i64, seq: u64) -> bool {
        self.reads.range(..=ts_us).next_back().is_some_and(|(_, (end, read))| ts_us < *end && seq <= *read)
    }
}

/// The state of the live detections.
struct Live<'a> {
    store: &'a Store,
    engine: Engine,
    checkpoints: Checkpoints,
    config: LiveConfig,
    runtime: &'a tokio::runtime::Runtime,
    /// The newest event time stored (capped by the clock plus the allowed skew).
    newest_us: i64,
    /// Whether the input was live when rows last came: its event time within the lateness of the clock.
    live_input: bool,
    last_rows: Instant,
    reads: Reads,
    /// In a cluster: the oldest event time any live process holds unsealed, and the event time through
    /// which their input partitions have delivered, when last read.
    cluster_unsealed: Option<i64>,
    cluster_inputs: Option<i64>,
    cluster_read: Option<Instant>,
    stored_alerts: StoredAlerts,
    /// An input scored only at its end (`LiveConfig::score_while_running` off) has its appended rows
    /// scanned for injection meanwhile (`security::prescan`).
    prescan: Option<Prescan>,
}

impl<'a> Live<'a> {
    fn new(
        store: &'a Store,
        engine: Engine,
        checkpoints: Checkpoints,
        config: LiveConfig,
        runtime: &'a tokio::runtime::Runtime,
    ) -> Live<'a> {
        // Rows stored before this run (an earlier run's last minutes) count towards the watermark.
        let now = store::time::now_micros();
        let newest_us = stored_span(store, &engine.tables())
            .map_or(i64::MIN, |(_, newest)| newest.min(now.saturating_add(config.future_skew_us)));
        let prescan = engine.clean_texts().filter(|_| !config.score_while_running).and_then(|clean| {
            Prescan::start(clean)
                .inspect_err(
                    |e| tracing::warn!(error = %e, "cannot start the injection pre-scan; scoring scans it all"),
                )
                .ok()
        });
        Live {
            store,
            engine,
            checkpoints,
            config,
            runtime,
            newest_us,
            live_input: newest_us >= now.saturating_sub(config.lateness_us),
            last_rows: Instant::now(),
            reads: Reads::default(),
            cluster_unsealed: None,
            cluster_inputs: None,
            cluster_read: None,
            stored_alerts: StoredAlerts::default(),
            prescan,
        }
    }

    fn run(&mut self, receiver: &Receiver<Appended>, stop: &AtomicBool) -> Result<(), DetectError> {
        let mut last_checkpoint = Instant::now();
        // Behind the watermark (a backlog): the next step comes without waiting for an append.
        let mut behind = false;
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let next = match behind {
                true => receiver.try_recv().map_err(|e| match e {
                    std::sync::mpsc::TryRecvError::Empty => RecvTimeoutError::Timeout,
                    std::sync::mpsc::TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                }),
                false => receiver.recv_timeout(POLL_EVERY),
            };
            match next {
                Ok(appended) => self.take(&appended)?,
                Err(RecvTimeoutError::Timeout) if stopping => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            if self.config.cluster.is_some() && self.cluster_read.is_none_or(|at| at.elapsed() >= CLUSTER_TICK) {
                self.read_cluster();
            }
            if let Some(watermark) = self.watermark().filter(|_| self.config.score_while_running) {
                tracing::debug!(
                    watermark,
                    newest = self.newest_us,
                    inputs = ?self.cluster_inputs,
                    unsealed = ?self.cluster_unsealed,
                    idle_for = ?self.last_rows.elapsed(),
                    "scoring up to the watermark"
                );
                // One step of at most `SCORE_STEP_US` at a time, so that a stop is seen between steps
                // (a backlog of a day scored in one call kept a SIGTERM waiting for minutes).
                let target = minute_floor(watermark);
                let step_end =
                    self.scoring_from().map_or(target, |from| target.min(from.saturating_add(SCORE_STEP_US)));
                self.score_until(step_end)?;
                behind = step_end < target;
            } else {
                behind = false;
            }
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                if let Err(e) = self.checkpoints.save(&self.engine) {
                    crate::metrics::metrics().checkpoint_errors.inc();
                    tracing::error!(error = %e, "detector checkpoint failed; retrying in a minute");
                }
                last_checkpoint = Instant::now();
            }
        }
    }

    /// One append: moves the newest event time on, and sends rows older than the scored event time that
    /// no read included to `Engine::push_late`.
    fn take(&mut self, appended: &Appended) -> Result<(), DetectError> {
        let now = store::time::now_micros();
        self.last_rows = Instant::now();
        let cap = now.saturating_add(self.config.future_skew_us);
        let scored_through = self.engine.scored_through_us().unwrap_or(i64::MIN);
        let mut alerts = Vec::new();
        for (table, batch) in &appended.batches {
            if let Some(prescan) = &self.prescan {
                prescan.offer(*table, batch);
            }
            let Some(times) = batch.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>() else { continue };
            if let Some(max) = arrow::compute::max(times) {
                self.newest_us = self.newest_us.max(max.min(cap));
                self.live_input = self.newest_us >= now.saturating_sub(self.config.lateness_us);
            }
            if arrow::compute::min(times).is_some_and(|min| min < scored_through) {
                let late: BooleanArray = times
                    .iter()
                    .map(|ts| Some(ts.is_some_and(|ts| ts < scored_through && !self.reads.scored(ts, appended.seq))))
                    .collect();
                let late = arrow::compute::filter_record_batch(batch, &late)
                    .map_err(|e| DetectError::Internal(format!("selecting late rows: {e}")))?;
                alerts.extend(self.engine.push_late(*table, &late));
            }
        }
        self.store_raised(alerts)
    }

    /// Stores raised alerts; in a cluster only those no process stored yet.
    fn store_raised(&mut self, alerts: Vec<Alert>) -> Result<(), DetectError> {
        if self.config.cluster.is_none() || alerts.is_empty() {
            return store_alerts(self.store, &alerts);
        }
        let from = self.engine.scored_through_us().unwrap_or(i64::MIN);
        let (store, stored) = (self.store, &mut self.stored_alerts);
        let alerts = self.runtime.block_on(stored.unstored(store, from, alerts))?;
        store_alerts(self.store, &alerts)
    }

    /// In a cluster: reads how far every live process has sealed its rows, then the new segments (in that
    /// order, so that what was sealed before the read is in the catalog), and the newest event time.
    fn read_cluster(&mut self) {
        let Some(cluster) = self.config.cluster else { return };
        self.cluster_read = Some(Instant::now());
        let store = self.store;
        match self.runtime.block_on(cluster_bounds(store, cluster.silent_after)) {
            Ok((oldest, inputs)) => (self.cluster_unsealed, self.cluster_inputs) = (oldest, inputs),
            Err(e) => {
                // Not knowing what the others hold, score nothing new.
                tracing::warn!(error = %e, "reading the cluster's unsealed rows failed; retrying");
                self.cluster_unsealed = Some(i64::MIN);
                return;
            }
        }
        if let Err(e) = self.runtime.block_on(store.refresh()) {
            tracing::warn!(error = %e, "reading the other processes' segments failed; retrying");
            self.cluster_unsealed = Some(i64::MIN);
            return;
        }
        let cap = store::time::now_micros().saturating_add(self.config.future_skew_us);
        if let Some((_, newest)) = stored_span(store, &self.engine.tables()) {
            if newest.min(cap) > self.newest_us {
                self.newest_us = newest.min(cap);
                self.last_rows = Instant::now();
            }
        }
    }

    /// Event time before which the stored rows are complete, if there is any.
    fn watermark(&self) -> Option<i64> {
        if self.newest_us == i64::MIN {
            return None;
        }
        let mut watermark = self.newest_us.saturating_sub(self.config.lateness_us);
        if self.live_input && self.last_rows.elapsed() >= self.config.idle_after {
            watermark = watermark.max(store::time::now_micros().saturating_sub(self.config.lateness_us));
        }
        // Partitioned inputs (Kafka) deliver in event-time order per partition, not across partitions:
        // event time is complete only up to the slowest partition held (less the lateness). In a cluster,
        // the slowest of every live process's, and rows some process holds unsealed are not readable yet.
        let inputs = match self.config.cluster {
            Some(_) => self.cluster_inputs,
            None => self.store.input_watermark(INPUT_IDLE_AFTER),
        };
        if let Some(inputs) = inputs {
            watermark = watermark.min(inputs.saturating_sub(self.config.lateness_us));
        }
        if let (Some(_), Some(unsealed)) = (self.config.cluster, self.cluster_unsealed) {
            watermark = watermark.min(unsealed);
        }
        // An input that has delivered nothing yet holds everything back.
        if watermark < i64::MIN / 4 {
            return None;
        }
        crate::metrics::metrics().watermark.set(watermark.div_euclid(MICROS_PER_SECOND));
        Some(watermark)
    }

    /// Scores the stored rows from where scoring stopped up to `target` (a minute's start).
    /// Where the next scoring step starts: the event time scored through, else the oldest stored minute.
    fn scoring_from(&self) -> Option<i64> {
        match self.engine.scored_through_us() {
            Some(from) => Some(from),
            None => stored_span(self.store, &self.engine.tables()).map(|(oldest, _)| minute_floor(oldest)),
        }
    }

    fn score_until(&mut self, target: i64) -> Result<(), DetectError> {
        let Some(from) = self.scoring_from() else { return Ok(()) };
        if target <= from {
            return Ok(());
        }
        let (store, engine) = (self.store, &mut self.engine);
        let mut raised = Vec::new();
        let clustered = self.config.cluster.is_some();
        let stats = self.runtime.block_on(score_range(store, engine, TimeRange::new(from, target), |a| {
            if clustered {
                raised.extend(a);
                Ok(())
            } else {
                store_alerts(store, &a)
            }
        }))?;
        for (range, seq) in stats.reads {
            self.reads.note(range, seq);
        }
        if clustered {
            // Stored, sealed where the others read, then checkpointed: a new owner re-scoring from the
            // checkpoint finds these ids stored and stores none twice.
            self.store_raised(raised)?;
            self.runtime.block_on(store.flush_table(Table::Alerts))?;
        }
        self.engine.set_scored_through(target);
        crate::metrics::metrics().scored_through.set(target.div_euclid(MICROS_PER_SECOND));
        if let Some(required) = self.engine.learning_required_us() {
            crate::metrics::publish_learning(&self.engine.learning(), required);
        }
        if clustered {
            self.checkpoints.save(&self.engine)?;
        }
        Ok(())
    }

    /// At stop: takes what is queued; scores what is complete (everything, for a closed input); stores
    /// the current rows of open alert groups; checkpoints.
    fn finish(mut self, receiver: &Receiver<Appended>, end: InputEnd) -> Result<EngineStats, DetectError> {
        // Scoring takes the cores from here: what the pre-scan has not reached, it scans itself.
        if let Some(prescan) = &mut self.prescan {
            prescan.stop();
        }
        while let Ok(appended) = receiver.try_recv() {
            self.take(&appended)?;
        }
        let target = match end {
            InputEnd::Closed => {
                stored_span(self.store, &self.engine.tables()).map(|(_, newest)| minute_ceiling(newest))
            }
            InputEnd::Open => self.watermark().map(minute_floor),
        };
        if let Some(target) = target {
            if end == InputEnd::Closed {
                self.engine.set_stream_horizon(crate::replay::invocations_end(self.store, target));
                self.score_until(target)?;
            } else {
                // A stream's backlog is scored at stop for at most `STOP_SCORING_BUDGET`, in steps; what is
                // left waits for the next start (or, in a cluster, the next owner) at the checkpoint.
                let started = Instant::now();
                while let Some(from) = self.scoring_from().filter(|from| *from < target) {
                    if started.elapsed() >= self.config.stop_scoring_budget {
                        tracing::info!(
                            scored_through = from,
                            target,
                            "stopping with a backlog left for the next start"
                        );
                        break;
                    }
                    self.score_until(target.min(from.saturating_add(SCORE_STEP_US)))?;
                }
            }
            self.engine.set_stream_horizon(None);
        }
        // Open alert groups stay open in the checkpoint (a restart goes on counting them, as one run
        // would have); their current rows are stored now.
        let open = self.engine.flush_open();
        self.store_raised(open)?;
        if self.config.cluster.is_some() {
            self.runtime.block_on(self.store.flush_table(Table::Alerts))?;
        }
        let mut stats = self.engine.stats();
        stats.checkpoint_error = save_at_stop(&self.checkpoints, &self.engine).err().map(|e| e.to_string());
        Ok(stats)
    }
}

/// The last checkpoint, tried a few times. A failure does not fail the run: what was stored stays
/// stored, and the next run starts from the last checkpoint that was written; it is counted and logged.
fn save_at_stop(checkpoints: &Checkpoints, engine: &Engine) -> Result<(), DetectError> {
    const ATTEMPTS: u32 = 3;
    let mut attempt = 1;
    loop {
        match checkpoints.save(engine) {
            Ok(()) => return Ok(()),
            Err(e) => {
                crate::metrics::metrics().checkpoint_errors.inc();
                if attempt == ATTEMPTS {
                    tracing::error!(error = %e, attempts = ATTEMPTS, "detector checkpoint not written at stop");
                    return Err(e);
                }
                tracing::warn!(error = %e, attempt, "detector checkpoint failed at stop; retrying");
                std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_scored_only_by_a_read_of_its_time_that_included_its_append() {
        let mut reads = Reads::default();
        reads.note(TimeRange::new(0, 60), 10);
        reads.note(TimeRange::new(60, 120), 12);
        assert!(reads.scored(30, 10));
        assert!(!reads.scored(30, 11), "appended after the read of its minute");
        assert!(reads.scored(90, 11));
        assert!(!reads.scored(150, 1), "no read covered it");
    }
}

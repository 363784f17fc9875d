//! `DetectionThread`: the live detections of a running process (`serve`, `ingest`). A thread of its own,
//! never the async runtime: it takes every durable append of the engine's tables from the store
//! (`Store::subscribe`, bounded: a slow detector slows appends, nothing is lost), pushes it through an
//! `Engine`, stores the alerts, and checkpoints the engine every minute and at stop. With no rows for a
//! while, event time follows the clock, so that a fleet that went silent is seen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use store::{Appended, Store, Table};

use crate::alert::{alerts_batch, Alert};
use crate::engine::{Checkpoints, Engine, EngineStats};
use crate::error::DetectError;

/// Appends buffered between the store and the detectors before appenders wait.
const QUEUE_APPENDS_MAX: usize = 64;
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);
/// With no rows for this long, event time follows the clock.
const IDLE_ADVANCE_AFTER: Duration = Duration::from_secs(120);
/// How long the thread waits for rows before it looks at the clock and the stop flag.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// The running detection thread.
pub struct DetectionThread {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<EngineStats, DetectError>>,
}

impl DetectionThread {
    /// Subscribes to the store's appends of the engine's tables and starts the thread.
    pub fn start(store: Arc<Store>, engine: Engine, checkpoints: Checkpoints) -> Result<DetectionThread, DetectError> {
        let receiver = store.subscribe(&engine.tables(), QUEUE_APPENDS_MAX);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("detect".into())
            .spawn({
                let stop = stop.clone();
                move || run(&store, engine, &checkpoints, &receiver, &stop)
            })
            .map_err(|e| DetectError::Internal(format!("cannot start the detection thread: {e}")))?;
        Ok(DetectionThread { stop, thread })
    }

    /// Scores what is queued, stores its alerts, checkpoints and ends the thread.
    pub fn stop(self) -> Result<EngineStats, DetectError> {
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

fn run(
    store: &Store,
    mut engine: Engine,
    checkpoints: &Checkpoints,
    receiver: &Receiver<Appended>,
    stop: &AtomicBool,
) -> Result<EngineStats, DetectError> {
    let mut last_checkpoint = Instant::now();
    let mut last_rows = Instant::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let alerts = match receiver.recv_timeout(POLL_EVERY) {
            Ok(appended) => {
                last_rows = Instant::now();
                engine.push_all(&appended.batches)
            }
            Err(RecvTimeoutError::Timeout) if stopping => break,
            Err(RecvTimeoutError::Timeout) if last_rows.elapsed() >= IDLE_ADVANCE_AFTER => {
                engine.advance_to(store::time::now_micros())
            }
            Err(RecvTimeoutError::Timeout) => Vec::new(),
            Err(RecvTimeoutError::Disconnected) => break,
        };
        store_alerts(store, &alerts)?;
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            if let Err(e) = checkpoints.save(&engine) {
                crate::metrics::metrics().checkpoint_errors.inc();
                tracing::error!(error = %e, "detector checkpoint failed; retrying in a minute");
            }
            last_checkpoint = Instant::now();
        }
    }
    store_alerts(store, &engine.finish())?;
    let mut stats = engine.stats();
    stats.checkpoint_error = save_at_stop(checkpoints, &engine).err().map(|e| e.to_string());
    Ok(stats)
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

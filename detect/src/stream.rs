//! Windows and detectors together: batches of stored `invocations` rows in, alerts out, the same code for
//! live rows and for replayed history. The whole state (open windows, baselines, models, known callers)
//! checkpoints to JSON, so that a restart resumes where it stopped instead of relearning.

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::anomaly::{AnomalyConfig, AnomalyDetector};
use crate::error::DetectError;
use crate::features::{MinuteFeatures, MinuteWindows};

/// Version of the checkpoint format; a checkpoint of another version is ignored, not misread.
/// 2: windows close at the minute's end (rows come in canonical order, `replay`); the progress of
/// scoring is beside it (`engine::Checkpoints`).
pub const CHECKPOINT_VERSION: u32 = 2;

/// How the stream windows and scores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnomalyStreamConfig {
    /// How long past a minute's end the windows wait before closing it. 0 where rows come in the
    /// canonical order of `replay` (the engine's callers): the allowed lateness of delivery is the live
    /// runner's (`runner::LiveConfig::lateness_us`), applied before rows reach the detectors.
    pub lateness_us: i64,
    pub anomaly: AnomalyConfig,
}

/// Counters of a stream's work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnomalyStreamStats {
    /// Invocation rows pushed.
    pub invocations: u64,
    pub minutes_scored: u64,
    pub alerts: u64,
    /// Invocations that came after their minute was closed.
    pub late_invocations: u64,
    pub tracked_functions: u64,
    pub evicted_functions: u64,
    pub state_bytes: u64,
}

/// The streaming detection of invocation patterns.
#[derive(Debug, Serialize, Deserialize)]
pub struct AnomalyStream {
    version: u32,
    config: AnomalyStreamConfig,
    windows: MinuteWindows,
    anomaly: AnomalyDetector,
    #[serde(alias = "records")]
    invocations: u64,
    minutes_scored: u64,
    alerts: u64,
    #[serde(skip)]
    closed: Vec<MinuteFeatures>,
}

impl AnomalyStream {
    pub fn new(config: AnomalyStreamConfig) -> Self {
        AnomalyStream {
            version: CHECKPOINT_VERSION,
            windows: MinuteWindows::new(config.lateness_us, config.anomaly.functions_max),
            anomaly: AnomalyDetector::new(config.anomaly.clone()),
            config,
            invocations: 0,
            minutes_scored: 0,
            alerts: 0,
            closed: Vec::new(),
        }
    }

    /// Adds a batch of `invocations` rows and appends the alerts of every minute it closes.
    pub fn push(&mut self, batch: &RecordBatch, out: &mut Vec<Alert>) {
        self.invocations += batch.num_rows() as u64;
        self.windows.add(batch);
        self.score_closed(out);
    }

    /// Moves event time on to `now_us` without records (a clock tick), closing the minutes of a fleet that
    /// went quiet.
    pub fn advance_to(&mut self, now_us: i64, out: &mut Vec<Alert>) {
        self.windows.advance_to(now_us);
        self.score_closed(out);
    }

    fn score_closed(&mut self, out: &mut Vec<Alert>) {
        self.closed.clear();
        self.windows.close(&mut self.closed);
        let before = out.len();
        for minute in &self.closed {
            self.anomaly.observe(minute, out);
        }
        self.minutes_scored += self.closed.len() as u64;
        self.alerts += (out.len() - before) as u64;
    }

    pub fn config(&self) -> &AnomalyStreamConfig {
        &self.config
    }

    /// The largest event time seen, less the allowed lateness.
    pub fn watermark_us(&self) -> i64 {
        self.windows.watermark_us()
    }

    pub fn stats(&self) -> AnomalyStreamStats {
        AnomalyStreamStats {
            invocations: self.invocations,
            minutes_scored: self.minutes_scored,
            alerts: self.alerts,
            late_invocations: self.windows.late_invocations(),
            tracked_functions: self.anomaly.tracked_functions() as u64,
            evicted_functions: self.anomaly.evicted_functions() + self.windows.evicted_functions(),
            state_bytes: self.anomaly.state_bytes() as u64,
        }
    }

    /// The whole state as JSON.
    pub fn checkpoint(&self) -> Result<Vec<u8>, DetectError> {
        serde_json::to_vec(self).map_err(|e| DetectError::Checkpoint(format!("cannot encode the state: {e}")))
    }

    /// A stream from a checkpoint. A checkpoint of another version, or made with another configuration,
    /// is refused: its baselines would not mean what this configuration expects.
    pub fn restore(config: AnomalyStreamConfig, bytes: &[u8]) -> Result<AnomalyStream, DetectError> {
        let stream: AnomalyStream = serde_json::from_slice(bytes)
            .map_err(|e| DetectError::Checkpoint(format!("the checkpoint does not decode: {e}")))?;
        if stream.version != CHECKPOINT_VERSION {
            return Err(DetectError::Checkpoint(format!(
                "checkpoint version {} is not {CHECKPOINT_VERSION}",
                stream.version
            )));
        }
        if stream.config != config {
            return Err(DetectError::Checkpoint("the checkpoint was made with another configuration".into()));
        }
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restored_stream_continues_where_it_stopped() {
        let mut stream = AnomalyStream::new(AnomalyStreamConfig::default());
        stream.advance_to(1_000_000_000, &mut Vec::new());
        stream.invocations = 7;
        let bytes = stream.checkpoint().unwrap();
        let restored = AnomalyStream::restore(AnomalyStreamConfig::default(), &bytes).unwrap();
        assert_eq!(restored.stats(), stream.stats());
        assert_eq!(restored.watermark_us(), stream.watermark_us());
        let other = AnomalyStreamConfig { lateness_us: 1, ..AnomalyStreamConfig::default() };
        assert!(AnomalyStream::restore(other, &bytes).unwrap_err().to_string().contains("another configuration"));
        assert!(AnomalyStream::restore(AnomalyStreamConfig::default(), b"{\"version\":").is_err());
        let mut wrong_version: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        wrong_version["version"] = 99.into();
        let bytes = serde_json::to_vec(&wrong_version).unwrap();
        assert!(AnomalyStream::restore(AnomalyStreamConfig::default(), &bytes)
            .unwrap_err()
            .to_string()
            .contains("version 99"));
    }
}

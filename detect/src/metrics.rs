//! Detect's metrics, registered in the process's default Prometheus registry (served at `/metrics`).
//! The `detector` label takes the closed set of detector names of this crate, never input text.

use std::sync::OnceLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, IntCounter, IntCounterVec, IntGauge,
};

use crate::alert::Alert;
use crate::stream::StreamStats;

pub struct Metrics {
    pub records: IntCounter,
    pub minutes_scored: IntCounter,
    pub late_records: IntCounter,
    pub alerts: IntCounterVec,
    pub tracked_functions: IntGauge,
    pub evicted_functions: IntGauge,
    pub state_bytes: IntGauge,
    pub checkpoints: IntCounter,
}

/// The metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let metrics = new_metrics();
        // Every built-in detector is a series from the start (at 0), so that dashboards and alert rules
        // see it before its first alert; Sigma rules' series appear with their first alert.
        let anomaly = crate::anomaly::SIGNALS.iter().map(|s| s.detector()).chain(["anomaly.multivariate".to_string()]);
        for detector in anomaly.chain(crate::security::CATALOG.iter().map(|d| d.id.to_string())) {
            metrics.alerts.with_label_values(&[&detector]);
        }
        metrics
    })
}

fn new_metrics() -> Metrics {
    Metrics {
        records: register_int_counter!("detect_records_total", "Invocation rows seen by the streaming detectors.")
            .expect("metric registers once"),
        minutes_scored: register_int_counter!(
            "detect_minutes_scored_total",
            "Function-minutes closed and scored by the anomaly detectors."
        )
        .expect("metric registers once"),
        late_records: register_int_counter!(
            "detect_late_records_total",
            "Invocation rows that arrived after their minute was closed (stored, not scored)."
        )
        .expect("metric registers once"),
        alerts: register_int_counter_vec!("detect_alerts_total", "Alerts raised, by detector.", &["detector"])
            .expect("metric registers once"),
        tracked_functions: register_int_gauge!(
            "detect_tracked_functions",
            "Functions whose baselines the anomaly detectors keep."
        )
        .expect("metric registers once"),
        evicted_functions: register_int_gauge!(
            "detect_evicted_functions",
            "Functions forgotten to keep detector state bounded, since start."
        )
        .expect("metric registers once"),
        state_bytes: register_int_gauge!("detect_state_bytes", "Approximate memory of detector state, in bytes.")
            .expect("metric registers once"),
        checkpoints: register_int_counter!("detect_checkpoints_total", "Detector state checkpoints written.")
            .expect("metric registers once"),
    }
}

/// Publishes a stream's counters: `previous` is what was published last, so counters only move forward.
pub fn publish(stats: &StreamStats, previous: &StreamStats, alerts: &[Alert]) {
    let m = metrics();
    m.records.inc_by(stats.records.saturating_sub(previous.records));
    m.minutes_scored.inc_by(stats.minutes_scored.saturating_sub(previous.minutes_scored));
    m.late_records.inc_by(stats.late_records.saturating_sub(previous.late_records));
    m.tracked_functions.set(stats.tracked_functions as i64);
    m.evicted_functions.set(stats.evicted_functions as i64);
    m.state_bytes.set(stats.state_bytes as i64);
    for alert in alerts {
        m.alerts.with_label_values(&[alert.detector.as_str()]).inc();
    }
}

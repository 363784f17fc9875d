//! Detect's metrics, registered in the process's default Prometheus registry (served at `/metrics`).
//! The `detector` label takes the closed set of built-in detector names (the anomaly signals, the security
//! catalog and the shipped Sigma rules), never input text: alerts of Sigma rules loaded from a user's
//! directory count under `sigma.user_rule`, since those names are open-ended.

use std::sync::OnceLock;

use prometheus::{
    register_int_counter, register_int_counter_vec, register_int_gauge, register_int_gauge_vec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec,
};

use crate::alert::Alert;
use crate::stream::AnomalyStreamStats;

pub struct Metrics {
    pub invocations: IntCounter,
    pub minutes_scored: IntCounter,
    pub late_invocations: IntCounter,
    pub late_rows: IntCounterVec,
    pub watermark: IntGauge,
    pub scored_through: IntGauge,
    pub alerts: IntCounterVec,
    pub tracked_functions: IntGauge,
    pub evicted_functions: IntGauge,
    pub state_bytes: IntGauge,
    pub checkpoints: IntCounter,
    pub checkpoint_errors: IntCounter,
    pub learning_accounts: IntGaugeVec,
    pub learning_required: IntGauge,
    /// The `detector` label values of built-in detectors.
    builtin: std::collections::HashSet<String>,
}

/// The `detector` label of alerts raised by Sigma rules that are not shipped with coldtrail.
pub const USER_RULE_LABEL: &str = "sigma.user_rule";

/// The metrics, registered on first use.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let mut metrics = new_metrics();
        // Every table the detectors read is a late-rows series from the start, at 0.
        for table in crate::security::SecurityDetections::TABLES {
            metrics.late_rows.with_label_values(&[table.name()]);
        }
        let anomaly = crate::anomaly::SIGNALS.iter().map(|s| s.detector()).chain(["anomaly.multivariate".to_string()]);
        let catalog = crate::security::CATALOG.iter().map(|d| d.id.to_string());
        // Every built-in detector but the Sigma rules is a series from the start (at 0), so that dashboards
        // and alert rules see it before its first alert.
        for detector in anomaly.chain(catalog) {
            metrics.alerts.with_label_values(&[&detector]);
            metrics.builtin.insert(detector);
        }
        let shipped = crate::security::SigmaRules::shipped();
        metrics.builtin.extend(shipped.rules().iter().map(|rule| format!("sigma.{}", rule.id)));
        metrics
    })
}

/// The `detector` label of an alert: its detector when built in, else `USER_RULE_LABEL`.
pub fn detector_label(detector: &str) -> &str {
    if metrics().builtin.contains(detector) {
        detector
    } else {
        USER_RULE_LABEL
    }
}

fn new_metrics() -> Metrics {
    Metrics {
        invocations: register_int_counter!(
            "detect_invocations_total",
            "Invocation rows seen by the streaming detectors."
        )
        .expect("metric registers once"),
        minutes_scored: register_int_counter!(
            "detect_minutes_scored_total",
            "Function-minutes closed and scored by the anomaly detectors."
        )
        .expect("metric registers once"),
        late_invocations: register_int_counter!(
            "detect_late_invocations_total",
            "Invocation rows that arrived after their minute was scored (stored; not scored by the anomaly detectors)."
        )
        .expect("metric registers once"),
        late_rows: register_int_counter_vec!(
            "detect_late_rows_total",
            "Rows that arrived after their minute was scored, by table (stored; run through the injection and Sigma detections only).",
            &["table"]
        )
        .expect("metric registers once"),
        watermark: register_int_gauge!(
            "detect_watermark_seconds",
            "Event time (Unix seconds) before which the live detections take the stored rows as complete."
        )
        .expect("metric registers once"),
        scored_through: register_int_gauge!(
            "detect_scored_through_seconds",
            "Event time (Unix seconds) before which the stored rows have been scored."
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
        checkpoint_errors: register_int_counter!(
            "detect_checkpoint_errors_total",
            "Detector state checkpoints that could not be written (retried; the stored rows are not affected)."
        )
        .expect("metric registers once"),
        learning_accounts: register_int_gauge_vec!(
            "detect_learning_accounts",
            "Accounts whose CloudTrail has been watched (learned) or not yet (learning) for the learning period of the first-seen detections.",
            &["state"]
        )
        .expect("metric registers once"),
        learning_required: register_int_gauge!(
            "detect_learning_required_seconds",
            "The learning period: how long an account's CloudTrail is watched before first-seen detections report."
        )
        .expect("metric registers once"),
        builtin: std::collections::HashSet::new(),
    }
}

/// Publishes how far the learning period has come.
pub fn publish_learning(learning: &[crate::security::Learning], required_us: i64) {
    let m = metrics();
    let learned = learning.iter().filter(|l| l.learned()).count();
    m.learning_accounts.with_label_values(&["learned"]).set(learned as i64);
    m.learning_accounts.with_label_values(&["learning"]).set((learning.len() - learned) as i64);
    m.learning_required.set(required_us / 1_000_000);
}

/// Publishes a stream's counters: `previous` is what was published last, so counters only move forward.
pub fn publish(stats: &AnomalyStreamStats, previous: &AnomalyStreamStats, alerts: &[Alert]) {
    let m = metrics();
    m.invocations.inc_by(stats.invocations.saturating_sub(previous.invocations));
    m.minutes_scored.inc_by(stats.minutes_scored.saturating_sub(previous.minutes_scored));
    m.tracked_functions.set(stats.tracked_functions as i64);
    m.evicted_functions.set(stats.evicted_functions as i64);
    m.state_bytes.set(stats.state_bytes as i64);
    for alert in alerts {
        m.alerts.with_label_values(&[detector_label(&alert.detector)]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_sigma_rules_share_one_label_and_built_in_detectors_keep_theirs() {
        assert_eq!(detector_label("injection.sql"), "injection.sql");
        assert_eq!(detector_label("anomaly.invocations"), "anomaly.invocations");
        let shipped = crate::security::SigmaRules::shipped();
        let rule = format!("sigma.{}", shipped.rules()[0].id);
        assert_eq!(detector_label(&rule), rule);
        assert_eq!(detector_label("sigma.my-own-rule-7f3a"), USER_RULE_LABEL);
        assert_eq!(detector_label("anything else"), USER_RULE_LABEL);
    }
}

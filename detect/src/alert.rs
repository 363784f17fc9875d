//! Alerts as detectors raise them and as the `alerts` table stores them: detector, severity, function,
//! window, score, observed against expected, evidence (request ids and other row keys), ATT&CK ids and a
//! suggested forensic query.

use arrow::array::RecordBatch;
use sha2::{Digest, Sha256};

/// One alert: the store's typed `alerts` row, so that detectors, storage and delivery share one
/// definition.
pub use store::alerts::AlertRow as Alert;
pub use store::alerts::Severity;

/// The severity of an anomaly score.
pub fn severity_of_score(score: f64) -> Severity {
    if score >= 0.9 {
        Severity::High
    } else if score >= 0.7 {
        Severity::Medium
    } else {
        Severity::Low
    }
}

/// A stable alert id from what identifies a finding.
pub fn alert_id(detector: &str, entity: &str, window_start_us: i64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(detector.as_bytes());
    hasher.update([0]);
    hasher.update(entity.as_bytes());
    hasher.update([0]);
    hasher.update(window_start_us.to_le_bytes());
    let digest = hasher.finalize();
    let mut id = String::with_capacity(24);
    for byte in &digest[..12] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// The `alerts` rows of some alerts.
pub fn alerts_batch(alerts: &[Alert]) -> Option<RecordBatch> {
    Alert::batch(alerts)
}

/// SQL text literal.
pub fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct_and_rows_fit_the_table() {
        assert_eq!(alert_id("a", "f", 1), alert_id("a", "f", 1));
        assert_ne!(alert_id("a", "f", 1), alert_id("a", "f", 2));
        assert_ne!(alert_id("ab", "", 1), alert_id("a", "b", 1));
        let alert = Alert {
            ts_us: 60_000_000,
            alert_id: alert_id("anomaly.invocations", "f", 0),
            detector: "anomaly.invocations".into(),
            severity: severity_of_score(0.95),
            title: "t".into(),
            function: Some("f".into()),
            entity: None,
            window_start_us: 0,
            window_end_us: 60_000_000,
            score: 0.95,
            count: 1,
            observed: serde_json::json!({"invocations": 10}),
            expected: serde_json::json!({"invocations": [1, 2]}),
            evidence: vec!["r1".into()],
            attack_ids: vec![],
            query: format!("SELECT * FROM timeline({})", sql_literal("it's")),
            entities: Vec::new(),
        };
        let batch = alerts_batch(&[alert]).unwrap();
        assert_eq!(batch.schema(), store::Table::Alerts.schema());
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(severity_of_score(0.95), Severity::High);
        assert!(sql_literal("it's").contains("it''s"));
    }
}

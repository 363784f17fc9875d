//! Alerts as detectors raise them and as the `alerts` table stores them: detector, severity, function,
//! window, score, observed against expected, evidence (request ids and other row keys), ATT&CK ids and a
//! suggested forensic query.

use arrow::array::RecordBatch;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use store::alerts::AlertRow;

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

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Event time at which the alert was raised (the end of its window).
    pub ts_us: i64,
    /// Stable id: the same finding replayed gets the same id.
    pub alert_id: String,
    pub detector: String,
    pub severity: Severity,
    pub title: String,
    pub function: Option<String>,
    pub entity: Option<String>,
    pub window_start_us: i64,
    pub window_end_us: i64,
    /// JSON has no NaN: a score written as `null` reads back as NaN.
    #[serde(deserialize_with = "score_or_nan")]
    pub score: f64,
    pub count: i64,
    pub observed: serde_json::Value,
    pub expected: serde_json::Value,
    /// Keys of the rows to look at first (request ids, event ids).
    pub evidence: Vec<String>,
    pub attack_ids: Vec<String>,
    /// A forensic query that starts the investigation.
    pub query: String,
}

fn score_or_nan<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
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

impl Alert {
    /// The alert as an `alerts` row.
    pub fn to_row(&self) -> AlertRow {
        AlertRow {
            ts_us: self.ts_us,
            alert_id: self.alert_id.clone(),
            detector: self.detector.clone(),
            severity: self.severity,
            title: self.title.clone(),
            function: self.function.clone(),
            entity: self.entity.clone(),
            window_start_us: Some(self.window_start_us),
            window_end_us: Some(self.window_end_us),
            score: Some(self.score),
            count: self.count,
            first_seen_us: Some(self.window_start_us),
            last_seen_us: Some(self.window_end_us),
            observed: Some(self.observed.to_string()),
            expected: Some(self.expected.to_string()),
            evidence: Some(serde_json::to_string(&self.evidence).expect("strings serialise")),
            attack_ids: Some(serde_json::to_string(&self.attack_ids).expect("strings serialise")),
            query: Some(self.query.clone()),
        }
    }
}

/// The `alerts` rows of some alerts.
pub fn alerts_batch(alerts: &[Alert]) -> Option<RecordBatch> {
    AlertRow::batch(&alerts.iter().map(Alert::to_row).collect::<Vec<_>>())
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
        };
        let batch = alerts_batch(&[alert]).unwrap();
        assert_eq!(batch.schema(), store::Table::Alerts.schema());
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(severity_of_score(0.95), Severity::High);
        assert!(sql_literal("it's").contains("it''s"));
    }
}

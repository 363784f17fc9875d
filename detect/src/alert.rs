//! Alerts as detectors raise them and as the `alerts` table stores them: detector, severity, function,
//! window, score, observed against expected, evidence (request ids and other row keys), ATT&CK ids and a
//! suggested forensic query.

use arrow::array::RecordBatch;
use serde::Serialize;
use sha2::{Digest, Sha256};
use store::rows::{TableBuilder, Value};
use store::Table;

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity of an anomaly score.
    pub fn of_score(score: f64) -> Severity {
        if score >= 0.9 {
            Severity::High
        } else if score >= 0.7 {
            Severity::Medium
        } else {
            Severity::Low
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    let mut builder = TableBuilder::new(Table::Alerts);
    for alert in alerts {
        let observed = alert.observed.to_string();
        let expected = alert.expected.to_string();
        let evidence = serde_json::to_string(&alert.evidence).expect("strings serialise");
        let attack_ids = serde_json::to_string(&alert.attack_ids).expect("strings serialise");
        builder.push(&[
            Value::Time(Some(alert.ts_us)),
            Value::Text(Some(&alert.alert_id)),
            Value::Text(Some(&alert.detector)),
            Value::Text(Some(alert.severity.name())),
            Value::Text(Some(&alert.title)),
            Value::Text(alert.function.as_deref()),
            Value::Text(alert.entity.as_deref()),
            Value::Time(Some(alert.window_start_us)),
            Value::Time(Some(alert.window_end_us)),
            Value::Float(Some(alert.score)),
            Value::Int(Some(alert.count)),
            Value::Time(Some(alert.window_start_us)),
            Value::Time(Some(alert.window_end_us)),
            Value::Text(Some(&observed)),
            Value::Text(Some(&expected)),
            Value::Text(Some(&evidence)),
            Value::Text(Some(&attack_ids)),
            Value::Text(Some(&alert.query)),
        ]);
    }
    builder.finish()
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
            severity: Severity::of_score(0.95),
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
        assert_eq!(batch.schema(), Table::Alerts.schema());
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(Severity::of_score(0.95), Severity::High);
        assert!(sql_literal("it's").contains("it''s"));
    }
}

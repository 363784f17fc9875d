//! The alert, and its rows in the `alerts` table: `AlertRow` is what the detectors raise, and it encodes
//! to and decodes from the table's Arrow batches in one place, so that the detectors that write alerts
//! and the delivery that reads them agree on every column (no positional cells at the writer, no guessed
//! defaults at the reader). `Severity` is the one severity scale of the whole product.

use arrow::array::RecordBatch;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value as JsonValue;

use crate::error::{Result, StoreError};
use crate::rows::{TableBuilder, Value};
use crate::schema::Table;
use crate::tables::{Columns, Kind};

/// How urgent an alert is, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

    /// The name stored in the `severity` column and used in routing rules.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity of a stored or configured name.
    pub fn from_name(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|severity| severity.name() == name)
    }
}

/// What an alert is about, by kind: the entities alerts are correlated by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    /// A source IP address.
    Address,
    /// An IAM identity, with a role session reduced to its role.
    Principal,
    AccessKey,
    Function,
    /// A function's execution environment: its log stream.
    Environment,
    Trace,
}

/// One entity of an alert, stored as `["address", "203.0.113.9"]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entity(pub EntityKind, pub String);

/// One alert: as detectors raise it, as the `alerts` table stores it (one row), and as delivery reads it
/// back. The JSON columns (`observed`, `expected`, `evidence`, `attack_ids`) are typed here and text in
/// the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRow {
    /// Event time at which the alert was raised (the end of its window).
    pub ts_us: i64,
    /// Stable: the same finding replayed gets the same id.
    pub alert_id: String,
    pub detector: String,
    pub severity: Severity,
    pub title: String,
    pub function: Option<String>,
    pub entity: Option<String>,
    /// The window the alert covers; for a deduplicated group, its first and last alert (stored also as
    /// `first_seen` and `last_seen`).
    pub window_start_us: i64,
    pub window_end_us: i64,
    /// NaN for none (a null in the table; JSON has no NaN, so `null` reads back as NaN).
    #[serde(deserialize_with = "score_or_nan")]
    pub score: f64,
    /// How many raised alerts this row stands for (a deduplicated group's final row counts them all).
    pub count: i64,
    /// What was seen.
    pub observed: JsonValue,
    /// What was expected.
    pub expected: JsonValue,
    /// Keys of the rows to look at first (request ids, event ids).
    pub evidence: Vec<String>,
    /// ATT&CK technique ids.
    pub attack_ids: Vec<String>,
    /// A forensic query that starts the investigation.
    pub query: String,
    /// What the alert is about, each entity once (empty in rows written before schema version 2).
    #[serde(default)]
    pub entities: Vec<Entity>,
}

fn score_or_nan<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// The columns of `alerts` with the kind each is read as, in schema order.
const COLUMNS: [(&str, Kind); 19] = [
    ("ts", Kind::Time),
    ("alert_id", Kind::Text),
    ("detector", Kind::Text),
    ("severity", Kind::Text),
    ("title", Kind::Text),
    ("function_name", Kind::Text),
    ("entity", Kind::Text),
    ("window_start", Kind::Time),
    ("window_end", Kind::Time),
    ("score", Kind::Float),
    ("count", Kind::Int),
    ("first_seen", Kind::Time),
    ("last_seen", Kind::Time),
    ("observed", Kind::Text),
    ("expected", Kind::Text),
    ("evidence", Kind::Text),
    ("attack_ids", Kind::Text),
    ("query", Kind::Text),
    ("entities", Kind::Text),
];

impl AlertRow {
    /// The rows as one `alerts` batch; `None` for no rows.
    pub fn batch(rows: &[AlertRow]) -> Option<RecordBatch> {
        let mut builder = TableBuilder::new(Table::Alerts);
        for row in rows {
            let (observed, expected) = (row.observed.to_string(), row.expected.to_string());
            let evidence = serde_json::to_string(&row.evidence).expect("strings serialise");
            let attack_ids = serde_json::to_string(&row.attack_ids).expect("strings serialise");
            let entities = serde_json::to_string(&row.entities).expect("entities serialise");
            builder.push(&[
                Value::Time(Some(row.ts_us)),
                Value::Text(Some(&row.alert_id)),
                Value::Text(Some(&row.detector)),
                Value::Text(Some(row.severity.name())),
                Value::Text(Some(&row.title)),
                Value::Text(row.function.as_deref()),
                Value::Text(row.entity.as_deref()),
                Value::Time(Some(row.window_start_us)),
                Value::Time(Some(row.window_end_us)),
                Value::Float(Some(row.score).filter(|s| !s.is_nan())),
                Value::Int(Some(row.count)),
                Value::Time(Some(row.window_start_us)),
                Value::Time(Some(row.window_end_us)),
                Value::Text(Some(&observed)),
                Value::Text(Some(&expected)),
                Value::Text(Some(&evidence)),
                Value::Text(Some(&attack_ids)),
                Value::Text(Some(&row.query)),
                Value::Text(Some(&entities)),
            ]);
        }
        builder.finish()
    }

    /// The rows of an `alerts` batch, as stored or scanned.
    ///
    /// # Errors
    /// `SchemaMismatch` when the batch is not of the `alerts` table (a projection, another table), or
    /// a row has a severity no version of coldtrail writes or JSON columns that are not what it writes.
    pub fn from_batch(batch: &RecordBatch) -> Result<Vec<AlertRow>> {
        let mismatch = |reason: String| StoreError::SchemaMismatch { table: Table::Alerts.name().into(), reason };
        if !crate::schema::is_older_version_of(&batch.schema(), Table::Alerts) {
            return Err(mismatch("not a batch of every column of alerts".into()));
        }
        let c = Columns::new(batch, Table::Alerts, &COLUMNS)?;
        let json = |column: usize, row: usize| -> Result<JsonValue> {
            c.text(column, row).map_or(Ok(JsonValue::Null), |text| {
                serde_json::from_str(text).map_err(|e| mismatch(format!("{} of row {row}: {e}", COLUMNS[column].0)))
            })
        };
        fn list<T: serde::de::DeserializeOwned>(c: &Columns, column: usize, row: usize) -> Result<Vec<T>> {
            c.text(column, row).map_or(Ok(Vec::new()), |text| {
                serde_json::from_str(text).map_err(|e| StoreError::SchemaMismatch {
                    table: Table::Alerts.name().into(),
                    reason: format!("{} of row {row}: {e}", COLUMNS[column].0),
                })
            })
        }
        let text = |column: usize, row: usize| c.text(column, row).map(str::to_string);
        (0..c.rows())
            .map(|row| {
                let ts_us = c.time(0, row).unwrap_or_default();
                let severity = c.text(3, row).unwrap_or_default();
                let severity = Severity::from_name(severity)
                    .ok_or_else(|| mismatch(format!("severity {severity:?} of row {row}")))?;
                Ok(AlertRow {
                    ts_us,
                    alert_id: text(1, row).unwrap_or_default(),
                    detector: text(2, row).unwrap_or_default(),
                    severity,
                    title: text(4, row).unwrap_or_default(),
                    function: text(5, row),
                    entity: text(6, row),
                    window_start_us: c.time(7, row).or(c.time(11, row)).unwrap_or(ts_us),
                    window_end_us: c.time(8, row).or(c.time(12, row)).unwrap_or(ts_us),
                    score: c.float(9, row).unwrap_or(f64::NAN),
                    // A row without a count stands for one alert: rows written before counts were kept.
                    count: c.int(10, row).unwrap_or(1),
                    observed: json(13, row)?,
                    expected: json(14, row)?,
                    evidence: list(&c, 15, row)?,
                    attack_ids: list(&c, 16, row)?,
                    query: text(17, row).unwrap_or_default(),
                    entities: list(&c, 18, row)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    fn row(id: &str, severity: Severity) -> AlertRow {
        AlertRow {
            ts_us: 1_767_225_660_000_000,
            alert_id: id.into(),
            detector: "injection.sql".into(),
            severity,
            title: "SQL injection in function input".into(),
            function: Some("orders-api".into()),
            entity: None,
            window_start_us: 1_767_225_600_000_000,
            window_end_us: 1_767_225_660_000_000,
            score: 0.97,
            count: 3,
            observed: serde_json::json!({"payload": "1' OR 1=1--"}),
            expected: JsonValue::Null,
            evidence: vec!["r-1".into()],
            attack_ids: vec!["T1190".into()],
            query: "SELECT 1".into(),
            entities: vec![
                Entity(EntityKind::Function, "orders-api".into()),
                Entity(EntityKind::Address, "203.0.113.9".into()),
            ],
        }
    }

    #[test]
    fn rows_round_trip_through_an_alerts_batch() {
        let rows = vec![row("a", Severity::High), row("b", Severity::Low)];
        let batch = AlertRow::batch(&rows).unwrap();
        assert_eq!(batch.schema(), Table::Alerts.schema());
        assert_eq!(AlertRow::from_batch(&batch).unwrap(), rows);
        assert!(AlertRow::batch(&[]).is_none());
    }

    #[test]
    fn another_table_or_an_unknown_severity_is_an_error_not_a_default() {
        let logs = crate::fixtures::batch_with_ids(Table::Logs, &[1], |_| 0);
        assert!(matches!(AlertRow::from_batch(&logs), Err(StoreError::SchemaMismatch { .. })));
        let mut builder = TableBuilder::new(Table::Alerts);
        let mut cells = vec![Value::Time(Some(0)), Value::Text(Some("x")), Value::Text(Some("d"))];
        cells.push(Value::Text(Some("urgent")));
        cells.push(Value::Text(Some("t")));
        cells.extend([Value::Text(None), Value::Text(None), Value::Time(None), Value::Time(None)]);
        cells.extend([Value::Float(None), Value::Int(None), Value::Time(None), Value::Time(None)]);
        cells.extend([Value::Text(None); 6]);
        builder.push(&cells);
        let error = AlertRow::from_batch(&builder.finish().unwrap()).unwrap_err();
        assert!(error.to_string().contains("urgent"), "{error}");
        // Evidence that is not the JSON list coldtrail writes is an error too.
        cells[3] = Value::Text(Some("low"));
        cells[15] = Value::Text(Some("r-1, r-2"));
        builder.push(&cells);
        let error = AlertRow::from_batch(&builder.finish().unwrap()).unwrap_err();
        assert!(error.to_string().contains("evidence"), "{error}");
    }

    #[test]
    fn rows_of_schema_version_1_read_without_entities() {
        let batch = AlertRow::batch(&[row("a", Severity::High)]).unwrap();
        let version_1 = batch.project(&(0..18).collect::<Vec<_>>()).unwrap();
        let read = AlertRow::from_batch(&version_1).unwrap().remove(0);
        assert_eq!(read, AlertRow { entities: Vec::new(), ..row("a", Severity::High) });
        let upgraded = crate::schema::upgrade(Table::Alerts, version_1).unwrap();
        assert_eq!(upgraded.schema(), Table::Alerts.schema());
        assert!(upgraded.column(18).is_null(0));
        // A batch that is no version of the table is not upgraded.
        let logs = crate::fixtures::batch_with_ids(Table::Logs, &[1], |_| 0);
        assert!(crate::schema::upgrade(Table::Alerts, logs).is_err());
    }

    #[test]
    fn nulls_of_older_rows_read_as_what_they_meant() {
        let mut builder = TableBuilder::new(Table::Alerts);
        let mut cells = vec![Value::Time(Some(7)), Value::Text(Some("x")), Value::Text(Some("d"))];
        cells.extend([Value::Text(Some("low")), Value::Text(Some("t")), Value::Text(None), Value::Text(None)]);
        cells.extend([Value::Time(None), Value::Time(None), Value::Float(None), Value::Int(None)]);
        cells.extend([Value::Time(Some(3)), Value::Time(None)]);
        cells.extend([Value::Text(None); 6]);
        builder.push(&cells);
        let read = AlertRow::from_batch(&builder.finish().unwrap()).unwrap().remove(0);
        // No window: first_seen where there is one, else the alert's time; no count: one alert.
        assert_eq!((read.window_start_us, read.window_end_us, read.count), (3, 7, 1));
        assert!(read.score.is_nan() && read.observed.is_null() && read.evidence.is_empty() && read.query.is_empty());
        // And a NaN score is stored as a null.
        let batch = AlertRow::batch(&[AlertRow { score: f64::NAN, ..row("n", Severity::Low) }]).unwrap();
        assert!(batch.column_by_name("score").unwrap().is_null(0));
    }

    #[test]
    fn severities_order_from_low_to_critical_and_name_themselves() {
        assert!(Severity::Low < Severity::Medium && Severity::High < Severity::Critical);
        for severity in Severity::ALL {
            assert_eq!(Severity::from_name(severity.name()), Some(severity));
        }
        assert_eq!(Severity::from_name("severe"), None);
    }
}

//! Typed rows of the `alerts` table: `AlertRow` encodes to and decodes from the table's Arrow batches in
//! one place, so that the detectors that write alerts and the delivery that reads them agree on every
//! column (no positional cells at the writer, no guessed defaults at the reader). `Severity` is the one
//! severity scale of the whole product.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMicrosecondType};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::rows::{TableBuilder, Value};
use crate::schema::Table;

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

/// One `alerts` row.
#[derive(Debug, Clone, PartialEq)]
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
    pub window_start_us: Option<i64>,
    pub window_end_us: Option<i64>,
    pub score: Option<f64>,
    /// How many raised alerts this row stands for (a deduplicated group's final row counts them all).
    pub count: i64,
    pub first_seen_us: Option<i64>,
    pub last_seen_us: Option<i64>,
    /// JSON: what was seen.
    pub observed: Option<String>,
    /// JSON: what was expected.
    pub expected: Option<String>,
    /// JSON array of row keys to look at first (request ids, event ids).
    pub evidence: Option<String>,
    /// JSON array of ATT&CK technique ids.
    pub attack_ids: Option<String>,
    /// A forensic query that starts the investigation.
    pub query: Option<String>,
}

impl AlertRow {
    /// The rows as one `alerts` batch; `None` for no rows.
    pub fn batch(rows: &[AlertRow]) -> Option<RecordBatch> {
        let mut builder = TableBuilder::new(Table::Alerts);
        for row in rows {
            builder.push(&[
                Value::Time(Some(row.ts_us)),
                Value::Text(Some(&row.alert_id)),
                Value::Text(Some(&row.detector)),
                Value::Text(Some(row.severity.name())),
                Value::Text(Some(&row.title)),
                Value::Text(row.function.as_deref()),
                Value::Text(row.entity.as_deref()),
                Value::Time(row.window_start_us),
                Value::Time(row.window_end_us),
                Value::Float(row.score),
                Value::Int(Some(row.count)),
                Value::Time(row.first_seen_us),
                Value::Time(row.last_seen_us),
                Value::Text(row.observed.as_deref()),
                Value::Text(row.expected.as_deref()),
                Value::Text(row.evidence.as_deref()),
                Value::Text(row.attack_ids.as_deref()),
                Value::Text(row.query.as_deref()),
            ]);
        }
        builder.finish()
    }

    /// The rows of an `alerts` batch with every column, as stored or scanned.
    ///
    /// # Errors
    /// `SchemaMismatch` when the batch is not of the `alerts` table (a projection, another table), or
    /// a row has a severity no version of coldtrail writes.
    pub fn from_batch(batch: &RecordBatch) -> Result<Vec<AlertRow>> {
        let mismatch = |reason: String| StoreError::SchemaMismatch { table: Table::Alerts.name().into(), reason };
        let schema = Table::Alerts.schema();
        if batch.num_columns() != schema.fields().len() {
            return Err(mismatch(format!("{} columns, expected {}", batch.num_columns(), schema.fields().len())));
        }
        let column = |name: &str| {
            let index = schema.index_of(name).expect("the alerts schema names its columns");
            Arc::clone(batch.column(index))
        };
        let text = |name: &str| -> Result<arrow::array::StringArray> {
            let utf8 = cast(&column(name), &DataType::Utf8)?;
            Ok(utf8.as_string::<i32>().clone())
        };
        let time = |name: &str| -> Result<arrow::array::TimestampMicrosecondArray> {
            column(name)
                .as_primitive_opt::<TimestampMicrosecondType>()
                .cloned()
                .ok_or_else(|| mismatch(format!("column {name} is not a microsecond timestamp")))
        };
        let (ids, detectors, severities, titles) =
            (text("alert_id")?, text("detector")?, text("severity")?, text("title")?);
        let (functions, entities, observed, expected) =
            (text("function_name")?, text("entity")?, text("observed")?, text("expected")?);
        let (evidence, attack_ids, queries) = (text("evidence")?, text("attack_ids")?, text("query")?);
        let (ts, starts, ends, firsts, lasts) =
            (time("ts")?, time("window_start")?, time("window_end")?, time("first_seen")?, time("last_seen")?);
        let scores = column("score");
        let scores =
            scores.as_primitive_opt::<Float64Type>().ok_or_else(|| mismatch("column score is not a float".into()))?;
        let counts = column("count");
        let counts =
            counts.as_primitive_opt::<Int64Type>().ok_or_else(|| mismatch("column count is not an integer".into()))?;
        let optional_text =
            |array: &arrow::array::StringArray, row: usize| array.is_valid(row).then(|| array.value(row).to_string());
        let optional_time =
            |array: &arrow::array::TimestampMicrosecondArray, row: usize| array.is_valid(row).then(|| array.value(row));
        (0..batch.num_rows())
            .map(|row| {
                let severity = Severity::from_name(severities.value(row))
                    .ok_or_else(|| mismatch(format!("severity {:?} of row {row}", severities.value(row))))?;
                Ok(AlertRow {
                    ts_us: ts.value(row),
                    alert_id: ids.value(row).to_string(),
                    detector: detectors.value(row).to_string(),
                    severity,
                    title: titles.value(row).to_string(),
                    function: optional_text(&functions, row),
                    entity: optional_text(&entities, row),
                    window_start_us: optional_time(&starts, row),
                    window_end_us: optional_time(&ends, row),
                    score: scores.is_valid(row).then(|| scores.value(row)),
                    // A row without a count stands for one alert: rows written before counts were kept.
                    count: if counts.is_valid(row) { counts.value(row) } else { 1 },
                    first_seen_us: optional_time(&firsts, row),
                    last_seen_us: optional_time(&lasts, row),
                    observed: optional_text(&observed, row),
                    expected: optional_text(&expected, row),
                    evidence: optional_text(&evidence, row),
                    attack_ids: optional_text(&attack_ids, row),
                    query: optional_text(&queries, row),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, severity: Severity) -> AlertRow {
        AlertRow {
            ts_us: 1_767_225_660_000_000,
            alert_id: id.into(),
            detector: "injection.sql".into(),
            severity,
            title: "SQL injection in function input".into(),
            function: Some("orders-api".into()),
            entity: None,
            window_start_us: Some(1_767_225_600_000_000),
            window_end_us: Some(1_767_225_660_000_000),
            score: Some(0.97),
            count: 3,
            first_seen_us: Some(1_767_225_600_000_000),
            last_seen_us: None,
            observed: Some("{\"payload\":\"1' OR 1=1--\"}".into()),
            expected: None,
            evidence: Some("[\"r-1\"]".into()),
            attack_ids: Some("[\"T1190\"]".into()),
            query: Some("SELECT 1".into()),
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
        cells.extend([Value::Text(None); 5]);
        builder.push(&cells);
        let error = AlertRow::from_batch(&builder.finish().unwrap()).unwrap_err();
        assert!(error.to_string().contains("urgent"), "{error}");
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

//! Rows for tests and benchmarks of this and the other crates: batches of any table whose rows carry an
//! id, so that exactly-once checks can count them. Not used by the product itself.

use std::sync::Arc;

use arrow::array::{
    new_null_array, ArrayRef, RecordBatch, StringArray, StringDictionaryBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Int32Type};

use crate::schema::{Table, TIME_ZONE};

/// A batch of `table` with one row per id: the time column is `time_of(id)`, the id is written into the
/// table's first required text column (or `ingest_position`), required columns are filled and every other
/// column is null.
pub fn batch_with_ids(table: Table, ids: &[u64], time_of: impl Fn(u64) -> i64) -> RecordBatch {
    let schema = table.schema();
    let id_column = id_column(table);
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(idx, field)| -> ArrayRef {
            if idx == 0 {
                return Arc::new(
                    TimestampMicrosecondArray::from_iter_values(ids.iter().map(|id| time_of(*id)))
                        .with_timezone(TIME_ZONE),
                );
            }
            if field.name() == id_column {
                return Arc::new(StringArray::from_iter_values(ids.iter().map(|id| id.to_string())));
            }
            match (field.data_type(), field.is_nullable()) {
                (DataType::Utf8, false) => {
                    Arc::new(StringArray::from_iter_values(ids.iter().map(|id| format!("{}-{id}", field.name()))))
                }
                (DataType::Dictionary(_, _), false) => {
                    let mut builder = StringDictionaryBuilder::<Int32Type>::new();
                    for id in ids {
                        builder.append_value(format!("{}-{}", field.name(), id % 7));
                    }
                    Arc::new(builder.finish())
                }
                (data_type, _) => new_null_array(data_type, ids.len()),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).expect("fixture columns match the schema")
}

/// The column `batch_with_ids` writes ids into.
pub fn id_column(table: Table) -> &'static str {
    match table {
        Table::Invocations => "request_id",
        Table::Spans => "span_id",
        Table::Alerts | Table::AlertDeliveries => "alert_id",
        Table::QueryAudit => "sql",
        Table::Incidents => "incident_id",
        _ => "ingest_position",
    }
}

/// Reads the ids back from batches of `table` (full schema or a projection that keeps the id column).
pub fn ids_of(table: Table, batches: &[RecordBatch]) -> Vec<u64> {
    let mut ids = Vec::new();
    for batch in batches {
        let column = batch.column_by_name(id_column(table)).expect("the id column is present");
        let column = column.as_any().downcast_ref::<StringArray>().expect("the id column is text");
        ids.extend(column.iter().map(|id| id.expect("ids are not null").parse::<u64>().expect("ids are numbers")));
    }
    ids
}

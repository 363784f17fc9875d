//! Typed rows of the tables: one struct per table, declared once below, that encodes into the table's
//! `TableBuilder` and decodes from its Arrow batches. Parsers, generators and detectors name columns as
//! fields instead of writing positional cells or looking columns up by string.
//!
//! A row is generic over how it holds text: `Borrowed` rows point into the input being parsed (writing
//! costs no allocation) or into a batch being read (`Columns`: dictionaries, views and plain strings
//! alike, no cast per column, no clone per row); `Owned` rows keep their text. Field names are the
//! column names, in schema order, and `every_row_follows_its_table_schema` holds each struct to
//! `schema.rs`, which stays the contract.
//!
//! ```
//! use store::tables::{Borrowed, LogRow};
//! use store::rows::TableBuilder;
//! let mut builder = TableBuilder::new(store::Table::Logs);
//! LogRow::<Borrowed> { ts: 1, message: "hello", function_name: Some("orders-api"), ..Default::default() }
//!     .push_to(&mut builder);
//! let batch = builder.finish().unwrap();
//! let columns = LogRow::columns(&batch).unwrap();
//! assert_eq!(LogRow::read(&columns, 0).function_name, Some("orders-api"));
//! ```

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int32Array, Int64Array, LargeStringArray,
    RecordBatch, StringArray, StringViewArray, TimestampMicrosecondArray,
};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{DataType, Int32Type};
use std::fmt::Debug;
use std::marker::PhantomData;

use crate::error::{Result, StoreError};
use crate::rows::{TableBuilder, Value};
use crate::schema::{timestamp_type, Table};

/// How a row holds its text and bytes.
pub trait Strings: Clone + Debug + Default + PartialEq {
    type Text: AsRef<str> + Clone + Debug + Default + PartialEq;
    type Bytes: AsRef<[u8]> + Clone + Debug + Default + PartialEq;
}

/// Rows that own their text: kept past the batch or the input they came from.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Owned;

impl Strings for Owned {
    type Text = String;
    type Bytes = Vec<u8>;
}

/// Rows that borrow their text from an input being parsed or a batch being read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Borrowed<'a>(PhantomData<&'a ()>);

impl<'a> Strings for Borrowed<'a> {
    type Text = &'a str;
    type Bytes = &'a [u8];
}

/// The Arrow type family of a column, as rows read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Time,
    Text,
    Int,
    Float,
    Bool,
    Bytes,
}

/// One column of a batch, resolved once to a typed array.
enum Reader {
    Missing,
    Time(TimestampMicrosecondArray),
    Utf8(StringArray),
    LargeUtf8(LargeStringArray),
    View(StringViewArray),
    Dictionary(Int32Array, StringArray),
    Int(Int64Array),
    Float(Float64Array),
    Bool(BooleanArray),
    Bytes(BinaryArray),
}

impl Reader {
    fn of(column: &ArrayRef, kind: Kind) -> std::result::Result<Reader, arrow::error::ArrowError> {
        // A value that does not convert is an error, not a null.
        let options = CastOptions { safe: false, ..CastOptions::default() };
        let to = |data_type: &DataType| cast_with_options(column, data_type, &options);
        Ok(match (kind, column.data_type()) {
            (Kind::Text, DataType::Utf8) => Reader::Utf8(column.as_string::<i32>().clone()),
            (Kind::Text, DataType::LargeUtf8) => Reader::LargeUtf8(column.as_string::<i64>().clone()),
            (Kind::Text, DataType::Utf8View) => Reader::View(column.as_string_view().clone()),
            (Kind::Text, DataType::Dictionary(key, value)) if **key == DataType::Int32 && **value == DataType::Utf8 => {
                let dictionary = column.as_dictionary::<Int32Type>();
                Reader::Dictionary(dictionary.keys().clone(), dictionary.values().as_string::<i32>().clone())
            }
            (Kind::Text, _) => Reader::Utf8(to(&DataType::Utf8)?.as_string::<i32>().clone()),
            (Kind::Time, _) => Reader::Time(to(&timestamp_type())?.as_primitive().clone()),
            (Kind::Int, _) => Reader::Int(to(&DataType::Int64)?.as_primitive().clone()),
            (Kind::Float, _) => Reader::Float(to(&DataType::Float64)?.as_primitive().clone()),
            (Kind::Bool, _) => Reader::Bool(to(&DataType::Boolean)?.as_boolean().clone()),
            (Kind::Bytes, _) => Reader::Bytes(to(&DataType::Binary)?.as_binary::<i32>().clone()),
        })
    }
}

/// The columns of one batch as a table's rows read them: by name, whatever their encoding (a dictionary,
/// a view or plain text, another width of number). A column the batch lacks reads as null, so a
/// projection or a batch of an older schema version still reads.
pub struct Columns {
    readers: Vec<Reader>,
    rows: usize,
}

impl Columns {
    /// `batch`'s columns of a table as `columns` (name, kind) lists them; see the rows' `columns`.
    ///
    /// # Errors
    /// `SchemaMismatch` when a column cannot be read as its kind (text where a time must be).
    pub fn new(batch: &RecordBatch, table: Table, columns: &[(&str, Kind)]) -> Result<Columns> {
        let schema = batch.schema();
        let readers = columns
            .iter()
            .map(|(name, kind)| match schema.index_of(name) {
                Err(_) => Ok(Reader::Missing),
                Ok(index) => Reader::of(batch.column(index), *kind).map_err(|e| StoreError::SchemaMismatch {
                    table: table.name().into(),
                    reason: format!("column {name} does not read as {kind:?}: {e}"),
                }),
            })
            .collect::<Result<_>>()?;
        Ok(Columns { readers, rows: batch.num_rows() })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn time(&self, column: usize, row: usize) -> Option<i64> {
        match &self.readers[column] {
            Reader::Time(a) => a.is_valid(row).then(|| a.value(row)),
            _ => None,
        }
    }

    pub fn text(&self, column: usize, row: usize) -> Option<&str> {
        match &self.readers[column] {
            Reader::Utf8(a) => a.is_valid(row).then(|| a.value(row)),
            Reader::LargeUtf8(a) => a.is_valid(row).then(|| a.value(row)),
            Reader::View(a) => a.is_valid(row).then(|| a.value(row)),
            Reader::Dictionary(keys, values) => {
                let key = keys.is_valid(row).then(|| keys.value(row) as usize)?;
                values.is_valid(key).then(|| values.value(key))
            }
            _ => None,
        }
    }

    pub fn int(&self, column: usize, row: usize) -> Option<i64> {
        match &self.readers[column] {
            Reader::Int(a) => a.is_valid(row).then(|| a.value(row)),
            _ => None,
        }
    }

    pub fn float(&self, column: usize, row: usize) -> Option<f64> {
        match &self.readers[column] {
            Reader::Float(a) => a.is_valid(row).then(|| a.value(row)),
            _ => None,
        }
    }

    pub fn bool(&self, column: usize, row: usize) -> Option<bool> {
        match &self.readers[column] {
            Reader::Bool(a) => a.is_valid(row).then(|| a.value(row)),
            _ => None,
        }
    }

    pub fn bytes(&self, column: usize, row: usize) -> Option<&[u8]> {
        match &self.readers[column] {
            Reader::Bytes(a) => a.is_valid(row).then(|| a.value(row)),
            _ => None,
        }
    }
}

/// The Rust type of a field of a kind; `_opt` marks a nullable one.
macro_rules! field_type {
    (time, $k:ty) => { i64 };
    (time_opt, $k:ty) => { Option<i64> };
    (text, $k:ty) => { <$k as Strings>::Text };
    (text_opt, $k:ty) => { Option<<$k as Strings>::Text> };
    (int_opt, $k:ty) => { Option<i64> };
    (float_opt, $k:ty) => { Option<f64> };
    (bool_opt, $k:ty) => { Option<bool> };
    (bytes_opt, $k:ty) => { Option<<$k as Strings>::Bytes> };
}

macro_rules! field_kind {
    (time) => {
        Kind::Time
    };
    (time_opt) => {
        Kind::Time
    };
    (text) => {
        Kind::Text
    };
    (text_opt) => {
        Kind::Text
    };
    (int_opt) => {
        Kind::Int
    };
    (float_opt) => {
        Kind::Float
    };
    (bool_opt) => {
        Kind::Bool
    };
    (bytes_opt) => {
        Kind::Bytes
    };
}

macro_rules! field_cell {
    (time, $v:expr) => {
        Value::Time(Some($v))
    };
    (time_opt, $v:expr) => {
        Value::Time($v)
    };
    (text, $v:expr) => {
        Value::Text(Some($v.as_ref()))
    };
    (text_opt, $v:expr) => {
        Value::Text($v.as_ref().map(AsRef::as_ref))
    };
    (int_opt, $v:expr) => {
        Value::Int($v)
    };
    (float_opt, $v:expr) => {
        Value::Float($v)
    };
    (bool_opt, $v:expr) => {
        Value::Bool($v)
    };
    (bytes_opt, $v:expr) => {
        Value::Binary($v.as_ref().map(AsRef::as_ref))
    };
}

/// A required column that is null (only a damaged or foreign batch has one) reads as zero or empty.
macro_rules! field_read {
    (time, $c:expr, $k:expr, $i:expr) => {
        $c.time($k, $i).unwrap_or_default()
    };
    (time_opt, $c:expr, $k:expr, $i:expr) => {
        $c.time($k, $i)
    };
    (text, $c:expr, $k:expr, $i:expr) => {
        $c.text($k, $i).unwrap_or_default()
    };
    (text_opt, $c:expr, $k:expr, $i:expr) => {
        $c.text($k, $i)
    };
    (int_opt, $c:expr, $k:expr, $i:expr) => {
        $c.int($k, $i)
    };
    (float_opt, $c:expr, $k:expr, $i:expr) => {
        $c.float($k, $i)
    };
    (bool_opt, $c:expr, $k:expr, $i:expr) => {
        $c.bool($k, $i)
    };
    (bytes_opt, $c:expr, $k:expr, $i:expr) => {
        $c.bytes($k, $i)
    };
}

macro_rules! field_owned {
    (text, $v:expr) => {
        $v.as_ref().to_owned()
    };
    (text_opt, $v:expr) => {
        $v.as_ref().map(|t| t.as_ref().to_owned())
    };
    (bytes_opt, $v:expr) => {
        $v.as_ref().map(|b| b.as_ref().to_vec())
    };
    ($other:ident, $v:expr) => {
        $v
    };
}

macro_rules! table_rows {
    ($(
        $(#[$doc:meta])*
        $row:ident for $table:ident {
            $( $(#[$field_doc:meta])* $field:ident: $kind:ident ),* $(,)?
        }
    )*) => {$(
        $(#[$doc])*
        pub struct $row<K: Strings = Owned> {
            $( $(#[$field_doc])* pub $field: field_type!($kind, K), )*
        }

        // Written out, not derived: derives do not see through the field types' macros.
        impl<K: Strings> Clone for $row<K> {
            fn clone(&self) -> Self {
                $row { $( $field: self.$field.clone(), )* }
            }
        }

        impl<K: Strings> Default for $row<K> {
            fn default() -> Self {
                $row { $( $field: Default::default(), )* }
            }
        }

        impl<K: Strings> PartialEq for $row<K> {
            fn eq(&self, other: &Self) -> bool {
                true $( && self.$field == other.$field )*
            }
        }

        impl<K: Strings> Debug for $row<K> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($row)) $( .field(stringify!($field), &self.$field) )* .finish()
            }
        }

        impl $row {
            pub const TABLE: Table = Table::$table;
            /// The columns, in schema order, with the kind each is read as.
            pub const COLUMNS: &'static [(&'static str, Kind)] = &[$( (stringify!($field), field_kind!($kind)) ),*];

            /// `batch`'s columns, ready for `read`.
            pub fn columns(batch: &RecordBatch) -> Result<Columns> {
                Columns::new(batch, Self::TABLE, Self::COLUMNS)
            }

            /// Every row of `batch`, owning its text.
            pub fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>> {
                let columns = Self::columns(batch)?;
                Ok((0..columns.rows()).map(|i| $row::read(&columns, i).owned()).collect())
            }

            /// The rows as one batch of the table; `None` for no rows.
            pub fn batch<K: Strings>(rows: &[$row<K>]) -> Option<RecordBatch> {
                let mut builder = TableBuilder::new(Self::TABLE);
                rows.iter().for_each(|row| row.push_to(&mut builder));
                builder.finish()
            }
        }

        impl<'a> $row<Borrowed<'a>> {
            /// Row `i` of `columns`, borrowing its text from the batch.
            pub fn read(columns: &'a Columns, i: usize) -> Self {
                let mut next_column = 0..;
                let mut next = || next_column.next().expect("columns are counted");
                $row { $( $field: field_read!($kind, columns, next(), i), )* }
            }
        }

        impl<K: Strings> $row<K> {
            /// Appends this row to a builder of its table.
            pub fn push_to(&self, builder: &mut TableBuilder) {
                assert_eq!(builder.table(), Table::$table, "a row pushed to another table's builder");
                let mut column = 0..;
                $( builder.push_cell(column.next().expect("columns are counted"), field_cell!($kind, self.$field)); )*
                builder.end_row();
            }

            /// The row with its own copy of its text.
            pub fn owned(&self) -> $row<Owned> {
                $row { $( $field: field_owned!($kind, self.$field), )* }
            }
        }
    )*};
}

table_rows! {
    /// One `invocations` row: one run of a function, assembled from its log lines (or generated).
    InvocationRow for Invocations {
        ts: time,
        end_ts: time_opt,
        account: text_opt,
        region: text_opt,
        function_name: text,
        function_version: text_opt,
        request_id: text,
        log_group: text_opt,
        log_stream: text_opt,
        cold_start: bool_opt,
        init_duration_ms: float_opt,
        restore_duration_ms: float_opt,
        duration_ms: float_opt,
        billed_duration_ms: int_opt,
        memory_size_mb: int_opt,
        max_memory_used_mb: int_opt,
        /// success, error, crash, timeout or throttled.
        status: text_opt,
        error_type: text_opt,
        error_message: text_opt,
        trace_id: text_opt,
        trigger: text_opt,
        source_ip: text_opt,
        user_agent: text_opt,
        principal: text_opt,
        http_method: text_opt,
        http_path: text_opt,
        /// The trigger event as the function received it, bounded.
        event_payload: text_opt,
        ingest_source: text_opt,
        ingest_position: text_opt,
    }

    /// One `logs` row: one line a function wrote.
    LogRow for Logs {
        ts: time,
        function_name: text_opt,
        log_group: text_opt,
        log_stream: text_opt,
        request_id: text_opt,
        level: text_opt,
        message: text,
        format: text_opt,
        ingest_source: text_opt,
        ingest_position: text_opt,
    }

    /// One `spans` row: an X-Ray segment or subsegment, or an OTLP span.
    SpanRow for Spans {
        start_ts: time,
        end_ts: time_opt,
        trace_id: text,
        span_id: text,
        parent_span_id: text_opt,
        name: text_opt,
        service: text_opt,
        kind: text_opt,
        status: text_opt,
        error: text_opt,
        /// JSON.
        http: text_opt,
        /// JSON.
        aws: text_opt,
        request_id: text_opt,
        function_name: text_opt,
        ingest_source: text_opt,
        ingest_position: text_opt,
    }

    /// One `cloudtrail` row: one management or data event.
    CloudtrailRow for Cloudtrail {
        event_time: time,
        event_source: text_opt,
        event_name: text_opt,
        aws_region: text_opt,
        source_ip: text_opt,
        user_agent: text_opt,
        principal_arn: text_opt,
        principal_type: text_opt,
        access_key_id: text_opt,
        session_name: text_opt,
        account: text_opt,
        error_code: text_opt,
        error_message: text_opt,
        /// JSON as the record had it.
        request_parameters: text_opt,
        /// JSON as the record had it.
        response_elements: text_opt,
        /// JSON as the record had it.
        resources: text_opt,
        read_only: bool_opt,
        event_id: text_opt,
        event_type: text_opt,
        recipient_account: text_opt,
        ingest_source: text_opt,
        ingest_position: text_opt,
    }

    /// One `alert_deliveries` row: one attempt to deliver an alert to one destination.
    AlertDeliveryRow for AlertDeliveries {
        ts: time,
        alert_id: text,
        destination: text,
        state: text_opt,
        attempt: int_opt,
        http_status: int_opt,
        error: text_opt,
    }

    /// One `dead_letters` row: input that could not be decoded, kept with why.
    DeadLetterRow for DeadLetters {
        ts: time,
        reason: text,
        error: text_opt,
        /// The first bytes of the input.
        raw: bytes_opt,
        /// The input's whole size.
        raw_bytes: int_opt,
        ingest_source: text_opt,
        ingest_position: text_opt,
    }

    /// One `incidents` row: the state of an incident after a change (an alert joined it, it merged
    /// into another, an analyst changed its status). The latest row of an `incident_id` is its state.
    IncidentRow for Incidents {
        ts: time,
        incident_id: text,
        /// open, acknowledged, resolved, false_positive or merged.
        status: text_opt,
        severity: text_opt,
        title: text_opt,
        summary: text_opt,
        first_seen: time_opt,
        last_seen: time_opt,
        alert_count: int_opt,
        /// JSON array of alert ids.
        alert_ids: text_opt,
        /// JSON array of `store::alerts::Entity`.
        entities: text_opt,
        /// JSON array of ATT&CK tactics in kill-chain order.
        tactics: text_opt,
        /// JSON array of ATT&CK technique ids.
        techniques: text_opt,
        merged_into: text_opt,
        assignee: text_opt,
        note: text_opt,
        /// The analyst who last changed status, assignee or note.
        changed_by: text_opt,
    }

    /// One `query_audit` row: one statement an analyst ran.
    QueryAuditRow for QueryAudit {
        ts: time,
        user_name: text_opt,
        client_addr: text_opt,
        protocol: text_opt,
        sql: text_opt,
        status: text_opt,
        rows: int_opt,
        duration_ms: float_opt,
        error: text_opt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::compute::cast;
    use std::sync::Arc;

    /// `batch` with its column `name` replaced by `column`: a damaged or foreign batch.
    fn with_column(batch: &RecordBatch, name: &str, column: ArrayRef) -> RecordBatch {
        let schema = batch.schema();
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .map(|f| {
                if f.name() == name {
                    Arc::new(f.as_ref().clone().with_data_type(column.data_type().clone()))
                } else {
                    f.clone()
                }
            })
            .collect();
        let columns = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| if f.name() == name { column.clone() } else { c.clone() })
            .collect();
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).expect("same length")
    }

    fn names(columns: &[(&str, Kind)]) -> Vec<String> {
        columns.iter().map(|(name, _)| name.to_string()).collect()
    }

    fn schema_names(table: Table) -> Vec<String> {
        table.schema().fields().iter().map(|f| f.name().clone()).collect()
    }

    #[test]
    fn every_row_follows_its_table_schema() {
        let tables = [
            (InvocationRow::TABLE, InvocationRow::COLUMNS),
            (LogRow::TABLE, LogRow::COLUMNS),
            (SpanRow::TABLE, SpanRow::COLUMNS),
            (CloudtrailRow::TABLE, CloudtrailRow::COLUMNS),
            (AlertDeliveryRow::TABLE, AlertDeliveryRow::COLUMNS),
            (DeadLetterRow::TABLE, DeadLetterRow::COLUMNS),
            (QueryAuditRow::TABLE, QueryAuditRow::COLUMNS),
            (IncidentRow::TABLE, IncidentRow::COLUMNS),
        ];
        for (table, columns) in tables {
            assert_eq!(names(columns), schema_names(table), "{table}");
            for ((_, kind), field) in columns.iter().zip(table.schema().fields()) {
                let expected = match field.data_type() {
                    DataType::Timestamp(_, _) => Kind::Time,
                    DataType::Utf8 | DataType::Dictionary(_, _) => Kind::Text,
                    DataType::Int64 => Kind::Int,
                    DataType::Float64 => Kind::Float,
                    DataType::Boolean => Kind::Bool,
                    DataType::Binary => Kind::Bytes,
                    other => panic!("{table}.{}: no kind for {other}", field.name()),
                };
                assert_eq!(*kind, expected, "{table}.{}", field.name());
            }
        }
    }

    fn invocation(i: i64) -> InvocationRow {
        InvocationRow {
            ts: 1_767_225_600_000_000 + i,
            end_ts: Some(1_767_225_600_500_000 + i),
            function_name: format!("f{}", i % 2),
            request_id: format!("r-{i}"),
            cold_start: Some(i == 0),
            duration_ms: Some(12.5),
            billed_duration_ms: Some(13),
            memory_size_mb: None,
            status: Some(if i == 1 { "error" } else { "success" }.into()),
            event_payload: Some("{\"q\":\"1' OR 1=1--\"}".into()),
            ingest_position: Some(String::new()),
            ..InvocationRow::default()
        }
    }

    #[test]
    fn rows_round_trip_through_batches_and_borrow_when_read() {
        let rows: Vec<_> = (0..3).map(invocation).collect();
        let batch = InvocationRow::batch(&rows).unwrap();
        assert_eq!(batch.schema(), Table::Invocations.schema());
        assert_eq!(InvocationRow::from_batch(&batch).unwrap(), rows);
        let columns = InvocationRow::columns(&batch).unwrap();
        let second = InvocationRow::read(&columns, 1);
        assert_eq!((second.function_name, second.status, second.account), ("f1", Some("error"), None));
        // Empty text stays empty text: it is not a null.
        assert_eq!(second.ingest_position, Some(""));
        assert!(InvocationRow::batch::<Owned>(&[]).is_none());

        let dead =
            DeadLetterRow::<Borrowed> { ts: 5, reason: "bad_json", raw: Some(&[0, 159, 146]), ..Default::default() };
        let batch = DeadLetterRow::batch(std::slice::from_ref(&dead)).unwrap();
        assert_eq!(DeadLetterRow::from_batch(&batch).unwrap(), vec![dead.owned()]);
    }

    #[test]
    fn plain_text_where_a_dictionary_is_stored_and_missing_columns_read_alike() {
        let rows: Vec<_> = (0..2).map(invocation).collect();
        let batch = InvocationRow::batch(&rows).unwrap();
        let plain = cast(batch.column_by_name("function_name").unwrap(), &DataType::Utf8).unwrap();
        let view = cast(batch.column_by_name("request_id").unwrap(), &DataType::Utf8View).unwrap();
        let foreign = with_column(&with_column(&batch, "function_name", plain), "request_id", view);
        assert_eq!(InvocationRow::from_batch(&foreign).unwrap(), rows);
        // A projection: the columns it lacks read as null.
        let projected = batch.project(&[0, 4]).unwrap();
        let read = InvocationRow::from_batch(&projected).unwrap();
        assert_eq!((read[1].function_name.as_str(), read[1].status.as_deref()), ("f1", None));
    }

    #[test]
    fn a_column_that_cannot_be_its_kind_is_a_schema_mismatch() {
        let batch = InvocationRow::batch(&[invocation(0)]).unwrap();
        let text = Arc::new(StringArray::from(vec!["not a time"])) as ArrayRef;
        let error = InvocationRow::from_batch(&with_column(&batch, "ts", text)).map(|_| ()).unwrap_err();
        assert!(matches!(&error, StoreError::SchemaMismatch { reason, .. } if reason.contains("ts")), "{error}");
    }
}

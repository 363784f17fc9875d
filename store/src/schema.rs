//! The versioned Arrow schemas of every stored table: the contract between ingest, detect and query.

use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Version of the table schemas. Stored in every WAL frame and every segment's Parquet metadata;
/// bump it when a field is added, removed or changes type, and teach readers the old version.
///
/// 1: the first tables. 2: `alerts.entities`, and the `incidents` table. 3: `incidents.changed_by`. Fields are only ever added, nullable and at the end of
/// a table, so a batch of an older version is a prefix of the current fields: `upgrade` reads it, and
/// segment reads fill the columns a file lacks with nulls.
pub const SCHEMA_VERSION: u32 = 3;

/// Parquet key-value metadata keys written into every segment.
pub const METADATA_SCHEMA_VERSION: &str = "coldtrail.schema_version";
pub const METADATA_TABLE: &str = "coldtrail.table";

/// Time zone of every timestamp column: all times are UTC, written as an offset (what DataFusion's
/// `now()` returns, and what Arrow formats without a time zone database).
pub const TIME_ZONE: &str = "+00:00";

/// Every timestamp is microseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(TIME_ZONE.into()))
}

/// Low-cardinality text (status, trigger, level, ...) is dictionary-encoded.
pub fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// A stored table. The ledger and the query audit are tables too; the ledger is not written through
/// `Store::append` but exposed as rows by `Store::ledger_batch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    Invocations,
    Logs,
    Spans,
    Cloudtrail,
    Alerts,
    AlertDeliveries,
    DeadLetters,
    QueryAudit,
    Incidents,
}

impl Table {
    /// Every table that is appended to and flushed into segments.
    pub const ALL: [Table; 9] = [
        Table::Invocations,
        Table::Logs,
        Table::Spans,
        Table::Cloudtrail,
        Table::Alerts,
        Table::AlertDeliveries,
        Table::DeadLetters,
        Table::QueryAudit,
        Table::Incidents,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Invocations => "invocations",
            Table::Logs => "logs",
            Table::Spans => "spans",
            Table::Cloudtrail => "cloudtrail",
            Table::Alerts => "alerts",
            Table::AlertDeliveries => "alert_deliveries",
            Table::DeadLetters => "dead_letters",
            Table::QueryAudit => "query_audit",
            Table::Incidents => "incidents",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.name() == name)
    }

    /// Stable one-byte id used in WAL frames. Never reuse a retired id.
    pub fn id(self) -> u8 {
        match self {
            Table::Invocations => 1,
            Table::Logs => 2,
            Table::Spans => 3,
            Table::Cloudtrail => 4,
            Table::Alerts => 5,
            Table::AlertDeliveries => 6,
            Table::DeadLetters => 7,
            Table::QueryAudit => 8,
            Table::Incidents => 9,
        }
    }

    pub fn from_id(id: u8) -> Option<Table> {
        Table::ALL.into_iter().find(|table| table.id() == id)
    }

    /// The event-time column: segments are partitioned and sorted by it and time ranges prune on it.
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Spans => "start_ts",
            Table::Cloudtrail => "event_time",
            _ => "ts",
        }
    }

    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
        let schemas = SCHEMAS.get_or_init(|| Table::ALL.iter().map(|t| Arc::new(t.build_schema())).collect());
        let idx = Table::ALL.iter().position(|t| *t == self).expect("every table is in Table::ALL");
        schemas[idx].clone()
    }

    fn build_schema(self) -> Schema {
        let ts = |name: &str, nullable: bool| Field::new(name, timestamp_type(), nullable);
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        let required_text = |name: &str| Field::new(name, DataType::Utf8, false);
        let dict = |name: &str| Field::new(name, dictionary_type(), true);
        let int = |name: &str| Field::new(name, DataType::Int64, true);
        let float = |name: &str| Field::new(name, DataType::Float64, true);
        let boolean = |name: &str| Field::new(name, DataType::Boolean, true);
        // Where a row came from: "kafka:topic/3", "file:/path", "s3://bucket/key", and the
        // position inside it (offset, line); lets an analyst go back to the raw bytes.
        let provenance = || vec![dict("ingest_source"), text("ingest_position")];
        let mut fields = match self {
            Table::Invocations => vec![
                ts("ts", false),
                ts("end_ts", true),
                dict("account"),
                dict("region"),
                Field::new("function_name", dictionary_type(), false),
                dict("function_version"),
                required_text("request_id"),
                text("log_group"),
                text("log_stream"),
                boolean("cold_start"),
                float("init_duration_ms"),
                float("restore_duration_ms"),
                float("duration_ms"),
                int("billed_duration_ms"),
                int("memory_size_mb"),
                int("max_memory_used_mb"),
                dict("status"),
                dict("error_type"),
                text("error_message"),
                text("trace_id"),
                dict("trigger"),
                text("source_ip"),
                text("user_agent"),
                text("principal"),
                dict("http_method"),
                text("http_path"),
                text("event_payload"),
            ],
            Table::Logs => vec![
                ts("ts", false),
                Field::new("function_name", dictionary_type(), true),
                dict("log_group"),
                text("log_stream"),
                text("request_id"),
                dict("level"),
                Field::new("message", DataType::Utf8, false),
                dict("format"),
            ],
            Table::Spans => vec![
                ts("start_ts", false),
                ts("end_ts", true),
                required_text("trace_id"),
                required_text("span_id"),
                text("parent_span_id"),
                text("name"),
                dict("service"),
                dict("kind"),
                dict("status"),
                text("error"),
                text("http"),
                text("aws"),
                text("request_id"),
                dict("function_name"),
            ],
            Table::Cloudtrail => vec![
                ts("event_time", false),
                dict("event_source"),
                dict("event_name"),
                dict("aws_region"),
                text("source_ip"),
                text("user_agent"),
                text("principal_arn"),
                dict("principal_type"),
                text("access_key_id"),
                text("session_name"),
                dict("account"),
                dict("error_code"),
                text("error_message"),
                text("request_parameters"),
                text("response_elements"),
                text("resources"),
                boolean("read_only"),
                text("event_id"),
                dict("event_type"),
                dict("recipient_account"),
            ],
            Table::Alerts => vec![
                ts("ts", false),
                required_text("alert_id"),
                Field::new("detector", dictionary_type(), false),
                dict("severity"),
                text("title"),
                dict("function_name"),
                text("entity"),
                ts("window_start", true),
                ts("window_end", true),
                float("score"),
                int("count"),
                ts("first_seen", true),
                ts("last_seen", true),
                text("observed"),
                text("expected"),
                text("evidence"),
                text("attack_ids"),
                text("query"),
                // JSON array of [kind, value] pairs: the addresses, principals, access keys, functions,
                // execution environments and traces the alert is about (schema version 2).
                text("entities"),
            ],
            Table::AlertDeliveries => vec![
                ts("ts", false),
                required_text("alert_id"),
                Field::new("destination", dictionary_type(), false),
                dict("state"),
                int("attempt"),
                int("http_status"),
                text("error"),
            ],
            Table::DeadLetters => vec![
                ts("ts", false),
                Field::new("reason", dictionary_type(), false),
                text("error"),
                Field::new("raw", DataType::Binary, true),
                int("raw_bytes"),
            ],
            // One row per change of an incident: the latest row of an `incident_id` is its state.
            Table::Incidents => vec![
                ts("ts", false),
                required_text("incident_id"),
                dict("status"),
                dict("severity"),
                text("title"),
                text("summary"),
                ts("first_seen", true),
                ts("last_seen", true),
                int("alert_count"),
                // JSON arrays: alert ids, [kind, value] entities, ATT&CK tactics in kill-chain order and
                // techniques.
                text("alert_ids"),
                text("entities"),
                text("tactics"),
                text("techniques"),
                // The incident this one was merged into, when an alert joined two.
                text("merged_into"),
                // What analysts set (`CALL incident_status`, ...), carried on every later row.
                text("assignee"),
                text("note"),
                // Who last changed status, assignee or note.
                text("changed_by"),
            ],
            Table::QueryAudit => vec![
                ts("ts", false),
                text("user_name"),
                text("client_addr"),
                dict("protocol"),
                text("sql"),
                dict("status"),
                int("rows"),
                float("duration_ms"),
                text("error"),
            ],
        };
        if !matches!(self, Table::QueryAudit | Table::AlertDeliveries | Table::Alerts | Table::Incidents) {
            fields.extend(provenance());
        }
        Schema::new(fields)
    }
}

/// Whether `schema` is the schema of `table` at this or an older version: the current fields or a
/// prefix of them (the fields that were added since are nullable).
pub fn is_older_version_of(schema: &Schema, table: Table) -> bool {
    let current = table.schema();
    let (older, now) = (schema.fields(), current.fields());
    older.len() <= now.len()
        && older.iter().zip(now.iter()).all(|(a, b)| a == b)
        && now.iter().skip(older.len()).all(|f| f.is_nullable())
}

/// A batch of `table` at the current version: one of an older version gets nulls for the fields added
/// since.
///
/// # Errors
/// When the batch is of no version of the table's schema.
pub fn upgrade(table: Table, batch: RecordBatch) -> Result<RecordBatch, String> {
    let current = table.schema();
    if batch.schema().fields() == current.fields() {
        return Ok(batch);
    }
    if !is_older_version_of(&batch.schema(), table) {
        return Err(format!("batch schema is no version (up to v{SCHEMA_VERSION}) of the schema of {table}"));
    }
    let rows = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    for field in current.fields().iter().skip(columns.len()) {
        columns.push(arrow::array::new_null_array(field.data_type(), rows));
    }
    RecordBatch::try_new(current, columns).map_err(|e| format!("upgrading a batch of {table}: {e}"))
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Schema of the ledger as rows (see `Store::ledger_batch`).
pub fn ledger_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("ts", timestamp_type(), false),
                Field::new("node", DataType::Utf8, false),
                Field::new("seq", DataType::Int64, false),
                Field::new("op", DataType::Utf8, false),
                Field::new("table_name", DataType::Utf8, false),
                Field::new("partition", DataType::Utf8, false),
                Field::new("path", DataType::Utf8, true),
                Field::new("sha256", DataType::Utf8, true),
                Field::new("rows", DataType::Int64, true),
                Field::new("min_ts", timestamp_type(), true),
                Field::new("max_ts", timestamp_type(), true),
                Field::new("removed", DataType::Utf8, true),
                Field::new("prev_hash", DataType::Utf8, false),
                Field::new("entry_hash", DataType::Utf8, false),
            ]))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_its_time_column_first_and_required() {
        for table in Table::ALL {
            let schema = table.schema();
            let field = schema.field(0);
            assert_eq!(field.name(), table.time_column(), "{table}");
            assert_eq!(field.data_type(), &timestamp_type(), "{table}");
            assert!(!field.is_nullable(), "{table}");
        }
    }

    #[test]
    fn table_ids_and_names_round_trip() {
        for table in Table::ALL {
            assert_eq!(Table::from_id(table.id()), Some(table));
            assert_eq!(Table::from_name(table.name()), Some(table));
        }
        assert_eq!(Table::from_id(0), None);
        assert_eq!(Table::from_name("ledger"), None);
    }
}

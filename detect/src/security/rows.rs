//! The rows the security detections read (`cloudtrail`, `invocations`, `logs`) as plain values, and a
//! CloudTrail row back in the shape of a CloudTrail record, which is what Sigma rules are written against.

use crate::features::{DURATION_MS_MAX, MEMORY_MB_MAX};
use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, TimestampMicrosecondType};
use serde_json::{json, Map, Value};

/// Text columns of a batch, whatever their encoding (dictionary or plain).
struct Texts {
    columns: Vec<Option<StringArray>>,
}

impl Texts {
    fn of(batch: &RecordBatch, names: &[&str]) -> Texts {
        let columns = names
            .iter()
            .map(|name| {
                let column = batch.column_by_name(name)?;
                let text = cast(column, &DataType::Utf8).ok()?;
                Some(text.as_string::<i32>().clone())
            })
            .collect();
        Texts { columns }
    }

    fn get(&self, column: usize, row: usize) -> Option<String> {
        let array = self.columns[column].as_ref()?;
        (array.is_valid(row) && !array.value(row).is_empty()).then(|| array.value(row).to_string())
    }
}

fn floats(batch: &RecordBatch, name: &str) -> Option<arrow::array::Float64Array> {
    let column = batch.column_by_name(name)?;
    Some(cast(column, &DataType::Float64).ok()?.as_primitive::<Float64Type>().clone())
}

fn times(batch: &RecordBatch) -> Option<&arrow::array::TimestampMicrosecondArray> {
    batch.column(0).as_primitive_opt::<TimestampMicrosecondType>()
}

/// The value when it lies within `[low, high]`: the limits of what Lambda reports
/// (`features::DURATION_MS_MAX`, `features::MEMORY_MB_MAX`); beyond them a row is broken or hostile.
fn within(value: Option<f64>, low: f64, high: f64) -> Option<f64> {
    value.filter(|v| (low..=high).contains(v))
}

/// The value, when it is a finite number: NaN and infinities of a hostile or broken row are missing values.
fn float_at(array: &Option<arrow::array::Float64Array>, row: usize) -> Option<f64> {
    array.as_ref().filter(|a| a.is_valid(row)).map(|a| a.value(row)).filter(|v| v.is_finite())
}

/// Lambda's CloudTrail event names carry the API version (`UpdateFunctionCode20150331v2`); this is the
/// operation without it.
pub fn operation(event_name: &str) -> &str {
    let bytes = event_name.as_bytes();
    let mut end = bytes.len();
    // An optional `v<digits>` suffix, then eight digits.
    let mut i = end;
    while i > 0 && bytes[i - 1].is_ascii_digit() {
        i -= 1;
    }
    if i < end && i > 0 && bytes[i - 1] == b'v' {
        end = i - 1;
    }
    let mut j = end;
    while j > 0 && bytes[j - 1].is_ascii_digit() {
        j -= 1;
    }
    if end - j == 8 && j > 0 {
        &event_name[..j]
    } else {
        event_name
    }
}

/// One `cloudtrail` row.
#[derive(Debug, Clone, Default)]
pub struct CloudTrailEvent {
    pub ts_us: i64,
    pub event_source: String,
    pub event_name: String,
    pub region: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub principal_arn: Option<String>,
    pub principal_type: Option<String>,
    pub access_key_id: Option<String>,
    pub session_name: Option<String>,
    pub account: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub request: Value,
    pub response: Value,
    pub resources: Value,
    pub read_only: Option<bool>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub recipient_account: Option<String>,
}

const CLOUDTRAIL_TEXT: [&str; 18] = [
    "event_source",
    "event_name",
    "aws_region",
    "source_ip",
    "user_agent",
    "principal_arn",
    "principal_type",
    "access_key_id",
    "session_name",
    "account",
    "error_code",
    "error_message",
    "request_parameters",
    "response_elements",
    "resources",
    "event_id",
    "event_type",
    "recipient_account",
];

fn parse_json(text: Option<String>) -> Value {
    match text {
        None => Value::Null,
        Some(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

impl CloudTrailEvent {
    pub fn rows(batch: &RecordBatch) -> Vec<CloudTrailEvent> {
        let Some(ts) = times(batch) else { return Vec::new() };
        let texts = Texts::of(batch, &CLOUDTRAIL_TEXT);
        let read_only = batch.column_by_name("read_only").and_then(|c| c.as_boolean_opt().cloned());
        (0..batch.num_rows())
            .map(|row| CloudTrailEvent {
                ts_us: ts.value(row),
                event_source: texts.get(0, row).unwrap_or_default(),
                event_name: texts.get(1, row).unwrap_or_default(),
                region: texts.get(2, row),
                source_ip: texts.get(3, row),
                user_agent: texts.get(4, row),
                principal_arn: texts.get(5, row),
                principal_type: texts.get(6, row),
                access_key_id: texts.get(7, row),
                session_name: texts.get(8, row),
                account: texts.get(9, row),
                error_code: texts.get(10, row),
                error_message: texts.get(11, row),
                request: parse_json(texts.get(12, row)),
                response: parse_json(texts.get(13, row)),
                resources: parse_json(texts.get(14, row)),
                read_only: read_only.as_ref().filter(|a| a.is_valid(row)).map(|a| a.value(row)),
                event_id: texts.get(15, row),
                event_type: texts.get(16, row),
                recipient_account: texts.get(17, row),
            })
            .collect()
    }

    /// The operation without Lambda's API version suffix.
    pub fn operation(&self) -> &str {
        operation(&self.event_name)
    }

    pub fn succeeded(&self) -> bool {
        self.error_code.is_none()
    }

    /// The identity that acted, with a role session reduced to its role
    /// (`arn:aws:sts::1:assumed-role/R/s` is `arn:aws:iam::1:role/R`): CI runs get a new session each time.
    pub fn actor(&self) -> Option<String> {
        self.principal_arn.as_deref().map(actor_of)
    }

    /// The key of this event in the store: its event id, or its time and name.
    pub fn key(&self) -> String {
        self.event_id.clone().unwrap_or_else(|| format!("{}:{}", self.ts_us, self.event_name))
    }

    /// A request parameter as text.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.request.get(name).and_then(Value::as_str)
    }

    /// The CloudTrail record this row was stored from, as far as the row keeps it.
    pub fn record(&self) -> Value {
        let mut identity = Map::new();
        let put = |map: &mut Map<String, Value>, key: &str, value: &Option<String>| {
            if let Some(v) = value {
                map.insert(key.to_string(), Value::String(v.clone()));
            }
        };
        put(&mut identity, "type", &self.principal_type);
        put(&mut identity, "arn", &self.principal_arn);
        put(&mut identity, "accessKeyId", &self.access_key_id);
        put(&mut identity, "accountId", &self.account);
        if let Some(session) = &self.session_name {
            identity.insert("sessionName".into(), json!(session));
        }
        if let Some(arn) = &self.principal_arn {
            if let Some(role) = arn.contains(":assumed-role/").then(|| actor_of(arn)) {
                identity.insert(
                    "sessionContext".into(),
                    json!({"sessionIssuer": {"type": "Role", "arn": role, "userName": role.rsplit('/').next()}}),
                );
            }
        }
        let mut record = Map::new();
        record.insert("eventTime".into(), json!(store::time::format_seconds(self.ts_us)));
        record.insert("eventSource".into(), json!(self.event_source));
        record.insert("eventName".into(), json!(self.event_name));
        put(&mut record, "awsRegion", &self.region);
        put(&mut record, "sourceIPAddress", &self.source_ip);
        put(&mut record, "userAgent", &self.user_agent);
        record.insert("userIdentity".into(), Value::Object(identity));
        put(&mut record, "errorCode", &self.error_code);
        put(&mut record, "errorMessage", &self.error_message);
        if !self.request.is_null() {
            record.insert("requestParameters".into(), self.request.clone());
        }
        if !self.response.is_null() {
            record.insert("responseElements".into(), self.response.clone());
        }
        if !self.resources.is_null() {
            record.insert("resources".into(), self.resources.clone());
        }
        if let Some(read_only) = self.read_only {
            record.insert("readOnly".into(), json!(read_only));
        }
        put(&mut record, "eventID", &self.event_id);
        put(&mut record, "eventType", &self.event_type);
        put(&mut record, "recipientAccountId", &self.recipient_account);
        Value::Object(record)
    }
}

/// An identity with a role session reduced to its role.
pub fn actor_of(arn: &str) -> String {
    if let Some((prefix, rest)) = arn.split_once(":assumed-role/") {
        let role = rest.split('/').next().unwrap_or(rest);
        let account = prefix.rsplit(':').next().unwrap_or_default();
        let partition = prefix.split(':').nth(1).unwrap_or("aws");
        return format!("arn:{partition}:iam::{account}:role/{role}");
    }
    arn.to_string()
}

/// One `invocations` row, the columns the security detections use.
#[derive(Debug, Clone, Default)]
pub struct InvocationRow {
    pub ts_us: i64,
    pub function: String,
    pub request_id: String,
    pub log_stream: Option<String>,
    pub status: Option<String>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub trigger: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub principal: Option<String>,
    pub http_method: Option<String>,
    pub http_path: Option<String>,
    pub payload: Option<String>,
    pub duration_ms: Option<f64>,
    pub billed_duration_ms: Option<f64>,
    pub memory_size_mb: Option<f64>,
    pub max_memory_used_mb: Option<f64>,
}

const INVOCATION_TEXT: [&str; 13] = [
    "function_name",
    "request_id",
    "log_stream",
    "status",
    "error_type",
    "error_message",
    "trigger",
    "source_ip",
    "user_agent",
    "principal",
    "http_method",
    "http_path",
    "event_payload",
];

impl InvocationRow {
    pub fn rows(batch: &RecordBatch) -> Vec<InvocationRow> {
        let Some(ts) = times(batch) else { return Vec::new() };
        let texts = Texts::of(batch, &INVOCATION_TEXT);
        let duration = floats(batch, "duration_ms");
        let billed = floats(batch, "billed_duration_ms");
        let memory = floats(batch, "memory_size_mb");
        let used = floats(batch, "max_memory_used_mb");
        (0..batch.num_rows())
            .map(|row| InvocationRow {
                ts_us: ts.value(row),
                function: texts.get(0, row).unwrap_or_default(),
                request_id: texts.get(1, row).unwrap_or_default(),
                log_stream: texts.get(2, row),
                status: texts.get(3, row),
                error_type: texts.get(4, row),
                error_message: texts.get(5, row),
                trigger: texts.get(6, row),
                source_ip: texts.get(7, row),
                user_agent: texts.get(8, row),
                principal: texts.get(9, row),
                http_method: texts.get(10, row),
                http_path: texts.get(11, row),
                payload: texts.get(12, row),
                duration_ms: within(float_at(&duration, row), 0.0, DURATION_MS_MAX),
                billed_duration_ms: within(float_at(&billed, row), 0.0, DURATION_MS_MAX),
                memory_size_mb: within(float_at(&memory, row), 1.0, MEMORY_MB_MAX as f64),
                max_memory_used_mb: within(float_at(&used, row), 0.0, MEMORY_MB_MAX as f64),
            })
            .collect()
    }
}

/// One `logs` row.
#[derive(Debug, Clone, Default)]
pub struct LogRow {
    pub ts_us: i64,
    pub function: Option<String>,
    pub log_stream: Option<String>,
    pub request_id: Option<String>,
    pub level: Option<String>,
    pub message: String,
}

impl LogRow {
    pub fn rows(batch: &RecordBatch) -> Vec<LogRow> {
        let Some(ts) = times(batch) else { return Vec::new() };
        let texts = Texts::of(batch, &["function_name", "log_stream", "request_id", "level", "message"]);
        (0..batch.num_rows())
            .map(|row| LogRow {
                ts_us: ts.value(row),
                function: texts.get(0, row),
                log_stream: texts.get(1, row),
                request_id: texts.get(2, row),
                level: texts.get(3, row),
                message: texts.get(4, row).unwrap_or_default(),
            })
            .collect()
    }

    /// The log line as a flat event for Sigma rules over Lambda logs.
    pub fn record(&self) -> Value {
        json!({
            "message": self.message,
            "level": self.level,
            "function_name": self.function,
            "log_stream": self.log_stream,
            "request_id": self.request_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_lose_the_api_version() {
        assert_eq!(operation("AddPermission20150331v2"), "AddPermission");
        assert_eq!(operation("UpdateFunctionCode20150331v2"), "UpdateFunctionCode");
        assert_eq!(operation("CreateFunctionUrlConfig20211031"), "CreateFunctionUrlConfig");
        assert_eq!(operation("StopLogging"), "StopLogging");
        assert_eq!(operation("Get2"), "Get2");
        assert_eq!(operation("12345678"), "12345678");
    }

    #[test]
    fn role_sessions_reduce_to_their_role() {
        assert_eq!(
            actor_of("arn:aws:sts::123456789012:assumed-role/deployer/GitHubActions-99"),
            "arn:aws:iam::123456789012:role/deployer"
        );
        assert_eq!(actor_of("arn:aws:iam::1:user/alice"), "arn:aws:iam::1:user/alice");
    }
}

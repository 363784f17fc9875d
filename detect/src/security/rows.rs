//! The rows the security detections read (`cloudtrail`, `invocations`, `logs`), as the store's typed
//! rows with empty text taken as none, and a CloudTrail row decoded back into the shape of a CloudTrail
//! record (its JSON parsed), which is what the control plane detections and Sigma rules read.

use crate::features::{DURATION_MS_MAX, MEMORY_MB_MAX};
use arrow::array::RecordBatch;
use serde_json::{json, Map, Value};
use store::alerts::{Entity, EntityKind};
use store::tables::{Borrowed, CloudtrailRow, Columns, InvocationRow, LogRow};

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

fn parse_json(text: Option<&str>) -> Value {
    match present(text) {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string())),
    }
}

/// Text that says something: an empty string is as good as none.
fn present(text: Option<&str>) -> Option<&str> {
    text.filter(|t| !t.is_empty())
}

fn owned(text: Option<&str>) -> Option<String> {
    present(text).map(str::to_string)
}

impl CloudTrailEvent {
    /// The events of a `cloudtrail` batch; none when the batch is not of that table.
    pub fn rows(batch: &RecordBatch) -> Vec<CloudTrailEvent> {
        let Ok(columns) = CloudtrailRow::columns(batch) else { return Vec::new() };
        (0..columns.rows()).map(|i| CloudTrailEvent::of(&CloudtrailRow::read(&columns, i))).collect()
    }

    fn of(row: &CloudtrailRow<Borrowed>) -> CloudTrailEvent {
        CloudTrailEvent {
            ts_us: row.event_time,
            event_source: owned(row.event_source).unwrap_or_default(),
            event_name: owned(row.event_name).unwrap_or_default(),
            region: owned(row.aws_region),
            source_ip: owned(row.source_ip),
            user_agent: owned(row.user_agent),
            principal_arn: owned(row.principal_arn),
            principal_type: owned(row.principal_type),
            access_key_id: owned(row.access_key_id),
            session_name: owned(row.session_name),
            account: owned(row.account),
            error_code: owned(row.error_code),
            error_message: owned(row.error_message),
            request: parse_json(row.request_parameters),
            response: parse_json(row.response_elements),
            resources: parse_json(row.resources),
            read_only: row.read_only,
            event_id: owned(row.event_id),
            event_type: owned(row.event_type),
            recipient_account: owned(row.recipient_account),
        }
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

    /// What the event is about: who acted (as a role, not a session), with which key, from where (an
    /// AWS service calling on someone's behalf is no address).
    pub fn entities(&self) -> Vec<Entity> {
        let mut entities = Vec::new();
        if let Some(actor) = self.actor() {
            entities.push(Entity(EntityKind::Principal, actor));
        }
        if let Some(key) = &self.access_key_id {
            entities.push(Entity(EntityKind::AccessKey, key.clone()));
        }
        if let Some(ip) = self.source_ip.as_ref().filter(|ip| ip.parse::<std::net::IpAddr>().is_ok()) {
            entities.push(Entity(EntityKind::Address, ip.clone()));
        }
        entities
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
        self.record_of(&|_| true)
    }

    /// `record` with only the top-level fields that `keep` names.
    pub fn record_of(&self, keep: &dyn Fn(&str) -> bool) -> Value {
        let mut record = Map::new();
        let mut put = |key: &str, value: &dyn Fn() -> Option<Value>| {
            if keep(key) {
                if let Some(value) = value() {
                    record.insert(key.to_string(), value);
                }
            }
        };
        let text = |value: &Option<String>| value.as_ref().map(|v| Value::String(v.clone()));
        let tree = |value: &Value| (!value.is_null()).then(|| value.clone());
        put("eventTime", &|| Some(json!(store::time::format_seconds(self.ts_us))));
        put("eventSource", &|| Some(json!(self.event_source)));
        put("eventName", &|| Some(json!(self.event_name)));
        put("awsRegion", &|| text(&self.region));
        put("sourceIPAddress", &|| text(&self.source_ip));
        put("userAgent", &|| text(&self.user_agent));
        put("userIdentity", &|| Some(self.identity()));
        put("errorCode", &|| text(&self.error_code));
        put("errorMessage", &|| text(&self.error_message));
        put("requestParameters", &|| tree(&self.request));
        put("responseElements", &|| tree(&self.response));
        put("resources", &|| tree(&self.resources));
        put("readOnly", &|| self.read_only.map(|r| json!(r)));
        put("eventID", &|| text(&self.event_id));
        put("eventType", &|| text(&self.event_type));
        put("recipientAccountId", &|| text(&self.recipient_account));
        Value::Object(record)
    }

    /// `userIdentity` as far as the row keeps it.
    fn identity(&self) -> Value {
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
        Value::Object(identity)
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

/// The `invocations` rows of a batch as the security detections read them: empty text is no text,
/// and a duration or memory size beyond what Lambda reports (`features::DURATION_MS_MAX`,
/// `features::MEMORY_MB_MAX`; a broken or hostile row) is none. No rows when the batch is of another
/// table.
pub fn invocations(columns: &Columns) -> Vec<InvocationRow<Borrowed<'_>>> {
    let durations = 0.0..=DURATION_MS_MAX;
    (0..columns.rows())
        .map(|i| {
            let row = InvocationRow::read(columns, i);
            InvocationRow {
                log_stream: present(row.log_stream),
                status: present(row.status),
                error_type: present(row.error_type),
                error_message: present(row.error_message),
                trigger: present(row.trigger),
                source_ip: present(row.source_ip),
                user_agent: present(row.user_agent),
                principal: present(row.principal),
                http_method: present(row.http_method),
                http_path: present(row.http_path),
                event_payload: present(row.event_payload),
                trace_id: present(row.trace_id),
                duration_ms: row.duration_ms.filter(|d| durations.contains(d)),
                billed_duration_ms: row.billed_duration_ms.filter(|d| durations.contains(&(*d as f64))),
                memory_size_mb: row.memory_size_mb.filter(|m| (1..=MEMORY_MB_MAX).contains(m)),
                max_memory_used_mb: row.max_memory_used_mb.filter(|m| (0..=MEMORY_MB_MAX).contains(m)),
                ..row
            }
        })
        .collect()
}

/// The `logs` rows of a batch, with empty text as no text.
pub fn logs(columns: &Columns) -> Vec<LogRow<Borrowed<'_>>> {
    (0..columns.rows())
        .map(|i| {
            let row = LogRow::read(columns, i);
            LogRow {
                function_name: present(row.function_name),
                log_stream: present(row.log_stream),
                request_id: present(row.request_id),
                level: present(row.level),
                ..row
            }
        })
        .collect()
}

/// What an invocation is about: its function, caller address and principal, execution environment and
/// trace.
pub fn invocation_entities(row: &InvocationRow<Borrowed>) -> Vec<Entity> {
    let mut entities = vec![Entity(EntityKind::Function, row.function_name.to_string())];
    let optional = [
        (EntityKind::Address, row.source_ip),
        (EntityKind::Principal, row.principal),
        (EntityKind::Environment, row.log_stream),
        (EntityKind::Trace, row.trace_id),
    ];
    for (kind, value) in optional {
        if let Some(value) = value {
            let value = if kind == EntityKind::Principal { actor_of(value) } else { value.to_string() };
            entities.push(Entity(kind, value));
        }
    }
    entities
}

/// What a log line is about: its function and execution environment.
pub fn log_entities(row: &LogRow<Borrowed>) -> Vec<Entity> {
    let optional = [(EntityKind::Function, row.function_name), (EntityKind::Environment, row.log_stream)];
    optional.into_iter().filter_map(|(kind, value)| Some(Entity(kind, value?.to_string()))).collect()
}

/// A log line as a flat event for Sigma rules over Lambda logs.
pub fn log_record(row: &LogRow<Borrowed>) -> Value {
    log_record_of(row, &|_| true)
}

/// `log_record` with only the fields `keep` keeps (those some Sigma rule reads: the shipped ones read the
/// message alone), so that each log line's record copies one text, not five.
pub fn log_record_of(row: &LogRow<Borrowed>, keep: &dyn Fn(&str) -> bool) -> Value {
    let mut record = Map::new();
    let fields = [
        ("message", Some(row.message)),
        ("level", row.level),
        ("function_name", row.function_name),
        ("log_stream", row.log_stream),
        ("request_id", row.request_id),
    ];
    for (key, value) in fields {
        if keep(key) {
            record.insert(key.to_string(), json!(value));
        }
    }
    Value::Object(record)
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

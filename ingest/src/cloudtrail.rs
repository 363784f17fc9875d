//! CloudTrail: `{"Records": [...]}` files (gzipped or not), arrays of records, single records, and
//! events delivered by EventBridge (`{"detail-type": "AWS API Call via CloudTrail", "detail": {...}}`).

use serde_json::Value as Json;

use crate::timestamp;
use store::rows::{bounded, TableBuilder};
use store::tables::{Borrowed, CloudtrailRow};

/// JSON text columns are bounded so that one hostile record cannot blow up a batch.
pub const JSON_COLUMN_BYTES_MAX: usize = 64 * 1024;

/// Why a CloudTrail record was not stored as a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: &'static str,
    pub detail: String,
}

/// The records in a CloudTrail document, whatever its shape.
pub fn records(document: &Json) -> Vec<&Json> {
    match document {
        Json::Array(items) => items.iter().collect(),
        Json::Object(object) => {
            if let Some(Json::Array(records)) = object.get("Records") {
                records.iter().collect()
            } else if let Some(detail) = object.get("detail").filter(|d| d.get("eventName").is_some()) {
                vec![detail]
            } else {
                vec![document]
            }
        }
        _ => vec![document],
    }
}

/// Whether a JSON document looks like CloudTrail (records or one event).
pub fn looks_like(document: &Json) -> bool {
    let first = match document {
        Json::Array(items) => items.first(),
        Json::Object(object) => match object.get("Records") {
            Some(Json::Array(records)) => records.first(),
            _ => object.get("detail").or(Some(document)),
        },
        _ => None,
    };
    first.is_some_and(|r| r.get("eventName").is_some() && r.get("eventSource").is_some())
}

fn text<'j>(json: &'j Json, key: &str) -> Option<&'j str> {
    json.get(key)?.as_str()
}

fn json_text(json: &Json, key: &str) -> Option<String> {
    match json.get(key)? {
        Json::Null => None,
        Json::String(s) => Some(bounded(s, JSON_COLUMN_BYTES_MAX).to_string()),
        other => {
            let text = other.to_string();
            Some(bounded(&text, JSON_COLUMN_BYTES_MAX).to_string())
        }
    }
}

/// The role session name of an assumed-role identity:
/// `arn:aws:sts::123:assumed-role/<role>/<session>`.
pub fn session_name(identity: &Json) -> Option<String> {
    let from_arn = text(identity, "arn")
        .and_then(|arn| arn.split_once(":assumed-role/"))
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, session)| session.to_string());
    // `principalId` of a role session is `<role id>:<session name>`.
    from_arn.or_else(|| {
        let is_session = matches!(text(identity, "type"), Some("AssumedRole" | "FederatedUser"));
        text(identity, "principalId")
            .filter(|_| is_session)
            .and_then(|id| id.split_once(':'))
            .map(|(_, session)| session.to_string())
    })
}

/// Appends one record as a `cloudtrail` row.
pub fn push_record(builder: &mut TableBuilder, record: &Json, source: &str, position: &str) -> Result<(), Rejected> {
    let Some(event_time) = text(record, "eventTime") else {
        return Err(Rejected { reason: "cloudtrail_missing_field", detail: "record without eventTime".into() });
    };
    let Some(event_time) = timestamp::parse(event_time) else {
        return Err(Rejected {
            reason: "cloudtrail_bad_time",
            detail: format!("eventTime {event_time:?} is not a timestamp"),
        });
    };
    let (Some(event_source), Some(event_name)) = (text(record, "eventSource"), text(record, "eventName")) else {
        return Err(Rejected {
            reason: "cloudtrail_missing_field",
            detail: "record without eventSource or eventName".into(),
        });
    };
    let null = Json::Null;
    let identity = record.get("userIdentity").unwrap_or(&null);
    let principal_type = text(identity, "type");
    let principal_arn = text(identity, "arn")
        .or_else(|| text(identity, "invokedBy"))
        .or_else(|| identity.get("sessionContext").and_then(|s| s.get("sessionIssuer")).and_then(|i| text(i, "arn")));
    let session = session_name(identity);
    let account = text(identity, "accountId").or_else(|| text(record, "recipientAccountId"));
    let read_only = match record.get("readOnly") {
        Some(Json::Bool(b)) => Some(*b),
        Some(Json::String(s)) => s.parse::<bool>().ok(),
        _ => None,
    };
    let request_parameters = json_text(record, "requestParameters");
    let response_elements = json_text(record, "responseElements");
    let resources = json_text(record, "resources");
    CloudtrailRow::<Borrowed> {
        event_time,
        event_source: Some(event_source),
        event_name: Some(event_name),
        aws_region: text(record, "awsRegion"),
        source_ip: text(record, "sourceIPAddress"),
        user_agent: text(record, "userAgent").map(|ua| bounded(ua, 1024)),
        principal_arn,
        principal_type,
        access_key_id: text(identity, "accessKeyId"),
        session_name: session.as_deref(),
        account,
        error_code: text(record, "errorCode"),
        error_message: text(record, "errorMessage").map(|m| bounded(m, 4096)),
        request_parameters: request_parameters.as_deref(),
        response_elements: response_elements.as_deref(),
        resources: resources.as_deref(),
        read_only,
        event_id: text(record, "eventID"),
        event_type: text(record, "eventType"),
        recipient_account: text(record, "recipientAccountId"),
        ingest_source: Some(source),
        ingest_position: Some(position),
    }
    .push_to(builder);
    Ok(())
}

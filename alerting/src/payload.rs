//! Alerts as the `alerts` table stores them, and their bodies for each kind of destination: a signed
//! generic JSON webhook, a Slack incoming webhook, Prometheus Alertmanager API v2 and PagerDuty Events
//! API v2. Signing: `X-Coldtrail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.

use arrow::array::RecordBatch;
use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::{json, Value};
use store::alerts::AlertRow;
pub use store::alerts::Severity;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "X-Coldtrail-Signature";

/// One stored alert, as destinations receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertDoc {
    pub id: String,
    pub ts: String,
    pub detector: String,
    pub severity: Severity,
    pub title: String,
    pub function: Option<String>,
    pub entity: Option<String>,
    pub window_start: Option<String>,
    pub window_end: Option<String>,
    pub score: Option<f64>,
    pub count: i64,
    pub observed: Value,
    pub expected: Value,
    pub evidence: Value,
    pub attack_ids: Value,
    /// A forensic query to start from.
    pub query: Option<String>,
    /// What the alert is about: `[["address", "203.0.113.9"], ["function", "orders-api"], ...]`.
    pub entities: Vec<store::alerts::Entity>,
}

impl AlertDoc {
    /// The alerts of an `alerts` batch. A batch that is not one (a bug upstream) is logged and yields
    /// none, rather than alerts made of guesses.
    pub fn rows(batch: &RecordBatch) -> Vec<AlertDoc> {
        match AlertRow::from_batch(batch) {
            Ok(rows) => rows.into_iter().map(AlertDoc::from).collect(),
            Err(e) => {
                tracing::error!(error = %e, "an alerts batch that does not decode; its alerts are not delivered");
                Vec::new()
            }
        }
    }
}

impl From<AlertRow> for AlertDoc {
    fn from(row: AlertRow) -> AlertDoc {
        AlertDoc {
            id: row.alert_id,
            ts: store::time::format_seconds(row.ts_us),
            detector: row.detector,
            severity: row.severity,
            title: row.title,
            function: row.function,
            entity: row.entity,
            window_start: Some(store::time::format_seconds(row.window_start_us)),
            window_end: Some(store::time::format_seconds(row.window_end_us)),
            score: Some(row.score).filter(|score| !score.is_nan()),
            count: row.count,
            observed: row.observed,
            expected: row.expected,
            evidence: json!(row.evidence),
            attack_ids: json!(row.attack_ids),
            query: Some(row.query).filter(|query| !query.is_empty()),
            entities: row.entities,
        }
    }
}

/// The generic webhook body: the alert itself.
pub fn webhook_body(alert: &AlertDoc) -> Vec<u8> {
    serde_json::to_vec(alert).expect("alerts serialise")
}

/// A Slack incoming-webhook message: readable text and blocks, with the query to investigate.
pub fn slack_body(alert: &AlertDoc) -> Vec<u8> {
    let emoji = match alert.severity {
        Severity::Critical => ":rotating_light:",
        Severity::High => ":red_circle:",
        Severity::Medium => ":large_orange_circle:",
        Severity::Low => ":white_circle:",
    };
    let text = format!("{emoji} [{}] {}", alert.severity.name().to_uppercase(), alert.title);
    let mut fields = vec![json!({"type": "mrkdwn", "text": format!("*Detector*\n`{}`", alert.detector)})];
    if let Some(function) = &alert.function {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Function*\n{function}")}));
    }
    fields.push(json!({"type": "mrkdwn", "text": format!("*Count*\n{}", alert.count)}));
    fields.push(json!({"type": "mrkdwn", "text": format!("*ATT&CK*\n{}", alert.attack_ids)}));
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(query) = &alert.query {
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("Investigate:\n```{query}```")}}),
        );
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("coldtrail alert {} at {}", alert.id, alert.ts)}]}));
    serde_json::to_vec(&json!({"text": text, "blocks": blocks})).expect("json")
}

/// Prometheus Alertmanager API v2 (`POST /api/v2/alerts`): a list of one alert. Labels identify it
/// (Alertmanager groups and silences on them); annotations describe it.
pub fn alertmanager_body(alert: &AlertDoc) -> Vec<u8> {
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), json!(alert.detector));
    labels.insert("severity".into(), json!(alert.severity.name()));
    labels.insert("coldtrail_alert_id".into(), json!(alert.id));
    if let Some(function) = &alert.function {
        labels.insert("function".into(), json!(function));
    }
    let body = json!([{
        "labels": labels,
        "annotations": {
            "summary": alert.title,
            "entity": alert.entity,
            "count": alert.count.to_string(),
            "query": alert.query,
            "attack_ids": alert.attack_ids.to_string(),
        },
        "startsAt": alert.window_start.clone().unwrap_or_else(|| alert.ts.clone()),
        "generatorURL": format!("coldtrail://alerts/{}", alert.id),
    }]);
    serde_json::to_vec(&body).expect("json")
}

/// PagerDuty Events API v2: a `trigger` event whose dedup key is the alert id.
pub fn pagerduty_body(alert: &AlertDoc, routing_key: &str) -> Vec<u8> {
    let severity = match alert.severity {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low => "info",
    };
    let body = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.id,
        "payload": {
            "summary": alert.title.chars().take(1024).collect::<String>(),
            "source": alert.function.clone().unwrap_or_else(|| "coldtrail".into()),
            "severity": severity,
            "timestamp": alert.ts,
            "component": alert.function,
            "class": alert.detector,
            "custom_details": alert,
        },
    });
    serde_json::to_vec(&body).expect("json")
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header value for `body` at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Why a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header is not t=<seconds>,v1=<hex>")]
    Malformed,
    #[error("signature timestamp is {0} s away from now (replayed or delayed)")]
    Stale(i64),
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks a signature header as a receiver should: well formed, within `tolerance_secs` of `now`, and
/// the HMAC of exactly this body (compared in constant time).
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", hex)) => signatures.push(hex),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::Stale(now - timestamp));
    }
    for hex in signatures {
        let Some(bytes) = decode_hex(hex) else { continue };
        if mac(secret, timestamp, body).verify_slice(&bytes).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> AlertDoc {
        AlertDoc {
            id: "a1".into(),
            ts: "2026-11-16T10:00:00Z".into(),
            detector: "trail.stopped".into(),
            severity: Severity::Critical,
            title: "CloudTrail logging stopped: trail t stopped logging".into(),
            function: None,
            entity: Some("arn:aws:iam::1:user/mallory".into()),
            window_start: Some("2026-11-16T10:00:00Z".into()),
            window_end: Some("2026-11-16T10:00:00Z".into()),
            score: Some(1.0),
            count: 3,
            observed: json!({"trail": "t"}),
            expected: json!({}),
            evidence: json!(["e1"]),
            attack_ids: json!(["T1562.008"]),
            query: Some("SELECT * FROM timeline('arn:aws:iam::1:user/mallory')".into()),
            entities: vec![store::alerts::Entity(
                store::alerts::EntityKind::Principal,
                "arn:aws:iam::1:user/mallory".into(),
            )],
        }
    }

    #[test]
    fn signatures_verify_and_reject_tampering_replays_and_garbage() {
        let body = webhook_body(&alert());
        let header = sign(b"secret", 1_000, &body);
        assert_eq!(verify(b"secret", &header, &body, 1_010, 300), Ok(()));
        let mut tampered = body.clone();
        tampered[5] ^= 1;
        assert_eq!(verify(b"secret", &header, &tampered, 1_010, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"other", &header, &body, 1_010, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"secret", &header, &body, 2_000, 300), Err(SignatureError::Stale(1_000)));
        for garbage in ["", "t=x,v1=00", "v1=abcd", "t=1000", "t=1000,v1=zz", "t=1000,v1=abc"] {
            assert!(verify(b"secret", garbage, &body, 1_000, 300).is_err(), "{garbage}");
        }
    }

    #[test]
    fn each_destination_kind_gets_its_format() {
        let a = alert();
        let hook: Value = serde_json::from_slice(&webhook_body(&a)).unwrap();
        assert_eq!((hook["id"].as_str(), hook["count"].as_i64()), (Some("a1"), Some(3)));
        assert!(hook["query"].as_str().unwrap().contains("timeline("));
        let slack: Value = serde_json::from_slice(&slack_body(&a)).unwrap();
        assert!(slack["text"].as_str().unwrap().contains("CRITICAL"));
        assert!(slack["blocks"].to_string().contains("timeline("));
        let am: Value = serde_json::from_slice(&alertmanager_body(&a)).unwrap();
        assert_eq!(am[0]["labels"]["alertname"], "trail.stopped");
        assert_eq!(am[0]["labels"]["coldtrail_alert_id"], "a1");
        let pd: Value = serde_json::from_slice(&pagerduty_body(&a, "key")).unwrap();
        assert_eq!((pd["dedup_key"].as_str(), pd["payload"]["severity"].as_str()), (Some("a1"), Some("critical")));
    }
}

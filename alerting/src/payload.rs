//! Alerts as the `alerts` table stores them, and their bodies for each kind of destination: a signed
//! generic JSON webhook, a Slack incoming webhook, Prometheus Alertmanager API v2 and PagerDuty Events
//! API v2. Signing: `X-Coldtrail-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.

use arrow::array::RecordBatch;
use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::{json, Value};
use store::alerts::AlertRow;
pub use store::alerts::Severity;
use store::tables::IncidentRow;

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
    /// The incident: of an incident's message, and of an alert whose incident was known when it was
    /// queued (incidents are built from stored alerts, so a new alert's usually is not yet).
    pub incident_id: Option<String>,
}

/// Prefix of the detector of incidents' messages.
pub const INCIDENT_DETECTOR: &str = "incident.";

impl AlertDoc {
    /// Whether this is an incident's message rather than an alert.
    pub fn is_incident(&self) -> bool {
        self.detector.starts_with(INCIDENT_DETECTOR)
    }

    /// The message an incident's row calls for, given the highest severity already announced of it: one
    /// when it opens, and one each time its severity rises. Analysts' rows, merged incidents and rows
    /// that change nothing announced call for none. The message's id names the incident and the step
    /// (`<incident>/opened`, `<incident>/escalated/<severity>`), so that it is sent once.
    pub fn incident_message(row: &IncidentRow, announced: Option<Severity>) -> Option<AlertDoc> {
        if row.changed_by.is_some() || row.status.as_deref() == Some("merged") {
            return None;
        }
        let severity = row.severity.as_deref().and_then(Severity::from_name)?;
        let step = match announced {
            None => "opened".to_string(),
            Some(before) if severity > before => format!("escalated/{}", severity.name()),
            Some(_) => return None,
        };
        let entities: Vec<store::alerts::Entity> =
            row.entities.as_deref().and_then(|e| serde_json::from_str(e).ok()).unwrap_or_default();
        let json_list = |text: &Option<String>| -> Value {
            text.as_deref().and_then(|t| serde_json::from_str(t).ok()).unwrap_or_else(|| json!([]))
        };
        let function = entities.iter().find_map(|store::alerts::Entity(kind, value)| {
            (*kind == store::alerts::EntityKind::Function).then(|| value.clone())
        });
        let id = &row.incident_id;
        Some(AlertDoc {
            id: format!("{id}/{step}"),
            ts: store::time::format_seconds(row.ts),
            detector: format!("{INCIDENT_DETECTOR}{}", step.split('/').next().unwrap_or_default()),
            severity,
            title: row.title.clone().unwrap_or_default(),
            function,
            entity: None,
            window_start: row.first_seen.map(store::time::format_seconds),
            window_end: row.last_seen.map(store::time::format_seconds),
            score: None,
            count: row.alert_count.unwrap_or(1),
            observed: json!({"summary": row.summary, "tactics": json_list(&row.tactics), "status": row.status}),
            expected: Value::Null,
            evidence: json_list(&row.alert_ids),
            attack_ids: json_list(&row.techniques),
            query: Some(format!("SELECT * FROM incident('{id}')")),
            entities,
            incident_id: Some(id.clone()),
        })
    }

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
            incident_id: None,
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
    if let Some(incident) = &alert.incident_id {
        fields.push(json!({"type": "mrkdwn", "text": format!("*Incident*\n`{incident}`")}));
    }
    fields.push(json!({"type": "mrkdwn", "text": format!("*ATT&CK*\n{}", alert.attack_ids)}));
    let mut blocks = vec![
        json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}),
        json!({"type": "section", "fields": fields}),
    ];
    if let Some(summary) = alert.observed.get("summary").and_then(Value::as_str).filter(|_| alert.is_incident()) {
        blocks.push(json!({"type": "section", "text": {"type": "plain_text", "text": summary}}));
    }
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
    if let Some(incident) = &alert.incident_id {
        labels.insert("coldtrail_incident_id".into(), json!(incident));
    }
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

/// PagerDuty Events API v2: a `trigger` event whose dedup key is the alert id, or the incident id for an
/// incident's messages (so that its escalation updates the page it opened).
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
        "dedup_key": match alert.is_incident() {
            true => alert.incident_id.clone().unwrap_or_else(|| alert.id.clone()),
            false => alert.id.clone(),
        },
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
            incident_id: None,
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

    fn incident(severity: &str, changed_by: Option<&str>) -> IncidentRow {
        IncidentRow {
            ts: 1_795_168_800_000_000,
            incident_id: "0f1e2d3c4b5a6978".into(),
            status: Some("open".into()),
            severity: Some(severity.into()),
            title: Some("185.220.101.34: SQL injection (+2 more alerts)".into()),
            summary: Some("185.220.101.34 probed orders-api with 3 injection classes.".into()),
            alert_count: Some(3),
            alert_ids: Some(r#"["a1","a2","a3"]"#.into()),
            entities: Some(r#"[["address","185.220.101.34"],["function","orders-api"]]"#.into()),
            techniques: Some(r#"["T1190"]"#.into()),
            changed_by: changed_by.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn an_incident_is_announced_when_it_opens_and_escalates_in_every_format() {
        let opened = AlertDoc::incident_message(&incident("high", None), None).unwrap();
        assert_eq!((opened.id.as_str(), opened.detector.as_str()), ("0f1e2d3c4b5a6978/opened", "incident.opened"));
        assert!(opened.is_incident() && !alert().is_incident());
        assert_eq!(opened.function.as_deref(), Some("orders-api"));
        assert!(AlertDoc::incident_message(&incident("high", None), Some(Severity::High)).is_none(), "no rise");
        assert!(AlertDoc::incident_message(&incident("critical", Some("alice")), Some(Severity::High)).is_none());
        let escalated = AlertDoc::incident_message(&incident("critical", None), Some(Severity::High)).unwrap();
        assert_eq!(escalated.id, "0f1e2d3c4b5a6978/escalated/critical");
        let merged = IncidentRow { status: Some("merged".into()), ..incident("critical", None) };
        assert!(AlertDoc::incident_message(&merged, None).is_none());
        // Every format carries the incident id; PagerDuty keys the page by it, so the escalation updates
        // the page the opening raised.
        let hook: Value = serde_json::from_slice(&webhook_body(&opened)).unwrap();
        assert_eq!(hook["incident_id"], "0f1e2d3c4b5a6978");
        let slack = String::from_utf8(slack_body(&escalated)).unwrap();
        assert!(slack.contains("0f1e2d3c4b5a6978") && slack.contains("probed orders-api"), "{slack}");
        let am: Value = serde_json::from_slice(&alertmanager_body(&opened)).unwrap();
        assert_eq!(am[0]["labels"]["coldtrail_incident_id"], "0f1e2d3c4b5a6978");
        for message in [&opened, &escalated] {
            let pd: Value = serde_json::from_slice(&pagerduty_body(message, "key")).unwrap();
            assert_eq!(pd["dedup_key"], "0f1e2d3c4b5a6978");
        }
        // An alert's page stays keyed by the alert, its incident named in the details.
        let known = AlertDoc { incident_id: Some("0f1e2d3c4b5a6978".into()), ..alert() };
        let pd: Value = serde_json::from_slice(&pagerduty_body(&known, "key")).unwrap();
        assert_eq!(pd["dedup_key"], "a1");
        assert_eq!(pd["payload"]["custom_details"]["incident_id"], "0f1e2d3c4b5a6978");
    }
}

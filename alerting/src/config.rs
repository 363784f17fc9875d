//! The `[alerting]` section of the configuration: destinations with their routing, suppressions, and how
//! long delivery is retried.

use serde::Deserialize;

use crate::payload::AlertDoc;
use store::alerts::Severity;

/// What a destination speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Generic JSON, signed with HMAC-SHA256 (`X-Coldtrail-Signature`).
    Webhook,
    /// Slack incoming webhook.
    Slack,
    /// Prometheus Alertmanager API v2 (the base URL or the full `/api/v2/alerts` URL).
    Alertmanager,
    /// PagerDuty Events API v2 (`routing_key` required).
    Pagerduty,
}

/// What a destination is sent: each alert, or each incident as it opens and escalates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Per {
    #[default]
    Alert,
    /// One message when an incident opens, one more each time its severity rises.
    Incident,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub name: String,
    pub kind: Kind,
    /// `alert` (the default) or `incident`.
    #[serde(default)]
    pub per: Per,
    pub url: String,
    /// HMAC secret of a webhook; `COLDTRAIL_WEBHOOK_SECRET` when absent.
    pub secret: Option<String>,
    /// PagerDuty integration key.
    pub routing_key: Option<String>,
    /// Routing: the lowest severity sent (`low`, `medium`, `high`, `critical`).
    pub min_severity: Option<String>,
    /// Routing: detector id prefixes (`trail.`, `injection.`); empty sends every detector. An incident's
    /// messages are `incident.opened` and `incident.escalated`.
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Routing: function names; empty sends alerts of every function (and of none). An alert or an
    /// incident is of a function when it names it among its entities.
    #[serde(default)]
    pub functions: Vec<String>,
    /// Routing: ATT&CK technique ids (tags), one of which the alert must carry; empty sends all.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Seconds one request may take.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// Requests per second at most.
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
    /// First retry delay; doubled per attempt (with jitter) up to `backoff_max_secs`.
    #[serde(default = "default_backoff")]
    pub backoff_initial_secs: f64,
    #[serde(default = "default_backoff_max")]
    pub backoff_max_secs: f64,
    /// Consecutive failures that open the circuit (requests pause for the backoff, then one probe).
    #[serde(default = "default_breaker")]
    pub breaker_failures: u32,
}

fn default_timeout() -> f64 {
    10.0
}
fn default_rate() -> f64 {
    20.0
}
fn default_backoff() -> f64 {
    1.0
}
fn default_backoff_max() -> f64 {
    300.0
}
fn default_breaker() -> u32 {
    5
}
fn default_give_up() -> u64 {
    86_400
}

impl DestinationConfig {
    /// A signed generic webhook with default settings (`--webhook URL`).
    pub fn webhook(url: &str) -> Self {
        DestinationConfig {
            name: url.to_string(),
            kind: Kind::Webhook,
            per: Per::Alert,
            url: url.to_string(),
            secret: None,
            routing_key: None,
            min_severity: None,
            detectors: Vec::new(),
            functions: Vec::new(),
            tags: Vec::new(),
            timeout_secs: default_timeout(),
            rate_per_second: default_rate(),
            backoff_initial_secs: default_backoff(),
            backoff_max_secs: default_backoff_max(),
            breaker_failures: default_breaker(),
        }
    }

    /// Whether this destination's routing takes `alert`.
    pub fn routes(&self, alert: &AlertDoc) -> bool {
        if (self.per == Per::Incident) != alert.is_incident() {
            return false;
        }
        let severity =
            self.min_severity.as_deref().and_then(Severity::from_name).is_none_or(|min| alert.severity >= min);
        let detector =
            self.detectors.is_empty() || self.detectors.iter().any(|p| alert.detector.starts_with(p.as_str()));
        let function = self.functions.is_empty()
            || alert.function.as_ref().is_some_and(|f| self.functions.contains(f))
            || alert.entities.iter().any(|store::alerts::Entity(kind, value)| {
                *kind == store::alerts::EntityKind::Function && self.functions.contains(value)
            });
        let tag = self.tags.is_empty()
            || alert
                .attack_ids
                .as_array()
                .is_some_and(|ids| ids.iter().any(|id| self.tags.iter().any(|t| id == t.as_str())));
        severity && detector && function && tag
    }
}

/// Alerts that are stored but not sent, until a time, for a reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suppression {
    /// Detector id prefix.
    pub detector: Option<String>,
    pub function: Option<String>,
    /// A principal (or any entity) the alert's entity contains.
    pub principal: Option<String>,
    /// RFC 3339; the suppression ends then.
    pub until: String,
    pub reason: String,
}

impl Suppression {
    /// Whether the suppression holds `alert` at `now_us`.
    pub fn holds(&self, alert: &AlertDoc, now_us: i64) -> bool {
        let until = chrono::DateTime::parse_from_rfc3339(&self.until).map(|t| t.timestamp_micros()).unwrap_or(i64::MIN);
        now_us < until
            && self.detector.as_ref().is_none_or(|d| alert.detector.starts_with(d.as_str()))
            && self.function.as_ref().is_none_or(|f| alert.function.as_ref() == Some(f))
            && self.principal.as_ref().is_none_or(|p| alert.entity.as_ref().is_some_and(|e| e.contains(p.as_str())))
    }
}

/// Publishing the ledger's chain head to a destination on a schedule, so that a copy of the integrity
/// proof lives outside coldtrail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerPublish {
    /// The name of a webhook destination.
    #[serde(default)]
    pub destination: Option<String>,
    /// An S3 bucket with Object Lock, `s3://BUCKET/PREFIX`: each published head is also put there
    /// write-once (compliance mode) for `retain_days` (`store::aws::publish_locked`).
    #[serde(default)]
    pub object_lock_url: Option<String>,
    #[serde(default = "default_retain_days")]
    pub retain_days: u32,
    #[serde(default = "default_ledger_every")]
    pub every_secs: f64,
}

fn default_retain_days() -> u32 {
    365
}

fn default_ledger_every() -> f64 {
    3_600.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertingConfig {
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    pub ledger: Option<LedgerPublish>,
    #[serde(default)]
    pub suppress: Vec<Suppression>,
    /// Seconds after which an undelivered alert is given up (state `failed`).
    #[serde(default = "default_give_up")]
    pub give_up_after_secs: u64,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            destinations: Vec::new(),
            ledger: None,
            suppress: Vec::new(),
            give_up_after_secs: default_give_up(),
        }
    }
}

impl AlertingConfig {
    /// Every problem of the section, at once.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = std::collections::HashSet::new();
        for d in &self.destinations {
            if !names.insert(d.name.as_str()) {
                problems.push(format!("alerting destination {:?} is named twice", d.name));
            }
            if !(d.url.starts_with("http://") || d.url.starts_with("https://")) {
                problems.push(format!("alerting destination {:?}: url {:?} is not http(s)", d.name, d.url));
            }
            if d.kind == Kind::Pagerduty && d.routing_key.is_none() {
                problems.push(format!("alerting destination {:?}: pagerduty needs routing_key", d.name));
            }
            if let Some(min) = &d.min_severity {
                if Severity::from_name(min).is_none() {
                    problems.push(format!(
                        "alerting destination {:?}: min_severity {min:?} is not low, medium, high or critical",
                        d.name
                    ));
                }
            }
            if d.timeout_secs <= 0.0
                || d.rate_per_second <= 0.0
                || d.backoff_initial_secs <= 0.0
                || d.backoff_max_secs < d.backoff_initial_secs
            {
                problems.push(format!(
                    "alerting destination {:?}: timeouts, rates and backoffs must be positive (max ≥ initial)",
                    d.name
                ));
            }
        }
        if let Some(ledger) = &self.ledger {
            match (&ledger.destination, &ledger.object_lock_url) {
                (None, None) => problems.push("alerting.ledger needs a destination or an object_lock_url".into()),
                (_, Some(url)) if !url.starts_with("s3://") => {
                    problems.push(format!("alerting.ledger.object_lock_url {url:?} must be s3://BUCKET/PREFIX"))
                }
                _ => {}
            }
            let named =
                ledger.destination.as_ref().map(|name| (name, self.destinations.iter().find(|d| d.name == *name)));
            match named {
                Some((name, None)) => {
                    problems.push(format!("alerting.ledger.destination {name:?} is not a configured destination"))
                }
                Some((name, Some(d))) if d.kind != Kind::Webhook => {
                    problems.push(format!("alerting.ledger.destination {name:?} must be a webhook"))
                }
                _ => {}
            }
            if ledger.every_secs <= 0.0 {
                problems.push("alerting.ledger.every_secs must be positive".to_string());
            }
        }
        for s in &self.suppress {
            if chrono::DateTime::parse_from_rfc3339(&s.until).is_err() {
                problems
                    .push(format!("alerting suppression ({}): until {:?} is not an RFC 3339 time", s.reason, s.until));
            }
        }
        problems
    }
}

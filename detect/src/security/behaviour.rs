//! Detections over behaviour rather than single records: bursts of authorization failures, new callers of
//! a function after it has learned its callers, and resource abuse (crypto-mining, denial of wallet).
//!
//! Windows are tumbling and keyed by event time, and a finding's id comes from its window, so a replay
//! of the same records raises the same alerts as the stream did.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::rows::{actor_of, CloudTrailEvent};
use super::Finding;
use store::alerts::Entity;
use store::tables::{Borrowed, InvocationRow, LogRow};
use store::time::MICROS_PER_MINUTE;

/// Tunables of the behavioural detections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviourConfig {
    /// Authorization failures of one entity within `burst_window_us` that make a burst.
    pub denials_per_burst: u64,
    pub burst_window_us: i64,
    /// How long a function's callers are learned before new ones are reported.
    pub caller_learning_us: i64,
    /// Invocations seen before new callers are reported.
    pub caller_learning_invocations: u64,
    /// An attribute whose last new value is more recent than this is still growing: not reported.
    pub caller_stable_us: i64,
    /// Resource windows learned before crypto-mining and denial of wallet are judged.
    pub resource_learning_windows: u32,
    pub resource_window_us: i64,
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        BehaviourConfig {
            denials_per_burst: 20,
            burst_window_us: 5 * MICROS_PER_MINUTE,
            caller_learning_us: 6 * 60 * MICROS_PER_MINUTE,
            caller_learning_invocations: 200,
            caller_stable_us: 60 * MICROS_PER_MINUTE,
            resource_learning_windows: 12,
            resource_window_us: 5 * MICROS_PER_MINUTE,
        }
    }
}

const CLOUD_DENIALS: [&str; 11] = [
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "Client.UnauthorizedOperation",
    "UnauthorizedAccess",
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "NotAuthorized",
    "NotAuthorizedException",
    "UnrecognizedClientException",
];

/// An application-level authorization failure in an error or a log line.
fn is_denial_text(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("unauthorized")
        || lower.contains("unauthorised")
        || lower.contains("forbidden")
        || lower.contains("access denied")
        || lower.contains("accessdenied")
        || lower.contains("invalid token")
        || lower.contains("invalid api key")
        || lower.contains("jwt expired")
        || lower.contains("token expired")
        || lower.contains("\"effect\":\"deny\"")
        || lower.contains("\"effect\": \"deny\"")
        || lower.contains("statuscode\":401")
        || lower.contains("statuscode\":403")
        || lower.contains("statuscode\": 401")
        || lower.contains("statuscode\": 403")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Burst {
    count: u64,
    function: Option<String>,
    evidence: Vec<String>,
    /// The other entities of the denials (a principal's addresses, an address's principals), a few.
    #[serde(default)]
    related: BTreeSet<Entity>,
}

/// Entities kept per burst beyond its own.
const RELATED_MAX: usize = 8;

/// One authorization failure, as bursts count it.
struct Denial<'a> {
    ts_us: i64,
    /// The failed row's key, for evidence.
    key: &'a str,
    function: Option<&'a str>,
    /// What the failed row is about.
    entities: Vec<Entity>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Known {
    values: BTreeSet<String>,
    last_new_us: i64,
    /// Too many values to tell a new one from the crowd.
    open: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CallerBook {
    first_us: i64,
    invocations: u64,
    attributes: BTreeMap<String, Known>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ResourceWindow {
    start_us: i64,
    invocations: u64,
    durations: Vec<f64>,
    memory_ratio_sum: f64,
    memory_ratio_n: u64,
    gb_seconds: f64,
    evidence: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ResourceBook {
    windows_learned: u32,
    /// Exponentially weighted means of the median duration (log) and of GB-seconds per window.
    log_duration: f64,
    gb_seconds: f64,
    /// Consecutive windows kept out of the baseline; after an hour of them the new level is accepted.
    #[serde(default)]
    held_back: u32,
    open: Option<ResourceWindow>,
}

/// Most tracked values per caller attribute, functions, and open burst windows.
const VALUES_MAX: usize = 512;
const FUNCTIONS_MAX: usize = 20_000;
const BURSTS_MAX: usize = 100_000;
const EVIDENCE_MAX: usize = 5;
/// Billed GB-seconds in one window below which no cost surge is reported (tiny functions).
const WALLET_GB_SECONDS_MIN: f64 = 10.0;

/// State of the behavioural detections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Behaviour {
    #[serde(skip)]
    config: BehaviourConfig,
    /// Keyed by (entity, window start): written as a list of pairs, since JSON keys are strings only.
    #[serde(with = "pairs")]
    bursts: BTreeMap<(String, i64), Burst>,
    callers: BTreeMap<String, CallerBook>,
    resources: BTreeMap<String, ResourceBook>,
    newest_us: i64,
}

/// A map whose keys are not strings (tuples), written to JSON as a list of `[key, value]` pairs. Before
/// this, a checkpoint with an open burst failed with "key must be a string" (issue 16).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, K, V, D>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?.into_iter().collect())
    }
}

/// The network of an address: /24 for IPv4, /48 for IPv6.
pub fn network_of(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        Err(_) => ip.to_string(),
    }
}

/// A user agent without versions: `python-requests/2.31` is `python-requests`.
pub fn agent_family(agent: &str) -> String {
    agent.split(['/', ' ', '(']).next().unwrap_or(agent).to_ascii_lowercase()
}

impl Behaviour {
    pub fn new(config: BehaviourConfig) -> Self {
        Behaviour { config, ..Behaviour::default() }
    }

    pub fn set_config(&mut self, config: BehaviourConfig) {
        self.config = config;
    }

    fn burst(&mut self, kind: &str, entity: &str, denial: &Denial, out: &mut Vec<Finding>) {
        let (ts_us, key, function) = (denial.ts_us, denial.key, denial.function);
        let window = self.config.burst_window_us;
        let start = ts_us.div_euclid(window) * window;
        if self.bursts.len() >= BURSTS_MAX {
            let first = self.bursts.keys().next().cloned().expect("not empty");
            self.bursts.remove(&first);
        }
        let burst = self.bursts.entry((format!("{kind}\u{0}{entity}"), start)).or_default();
        burst.count += 1;
        if burst.function.is_none() {
            burst.function = function.map(str::to_string);
        }
        if burst.evidence.len() < EVIDENCE_MAX {
            burst.evidence.push(key.to_string());
        }
        for related in &denial.entities {
            if burst.related.len() < RELATED_MAX {
                burst.related.insert(related.clone());
            }
        }
        if burst.count == self.config.denials_per_burst {
            out.push(Finding {
                detection: "access.denied_burst",
                ts_us,
                function: burst.function.clone(),
                entity: format!("{kind} {entity}"),
                key: format!("{kind}|{entity}"),
                window: true,
                window_start_us: start,
                window_end_us: start + window,
                count: burst.count as i64,
                detail: format!(
                    "{} authorization failures of {kind} {entity} within {} minutes",
                    burst.count,
                    window / MICROS_PER_MINUTE
                ),
                observed: json!({"failures": burst.count, "kind": kind, "entity": entity}),
                expected: json!({"failures_below": self.config.denials_per_burst}),
                evidence: burst.evidence.clone(),
                principal: (kind == "principal").then(|| entity.to_string()),
                entities: burst.related.iter().cloned().collect(),
                ..Finding::default()
            });
        }
    }

    fn expire(&mut self, ts_us: i64) {
        if ts_us <= self.newest_us {
            return;
        }
        self.newest_us = ts_us;
        let horizon = ts_us - 4 * self.config.burst_window_us;
        self.bursts.retain(|(_, start), _| *start >= horizon);
    }

    pub fn cloudtrail(&mut self, event: &CloudTrailEvent, out: &mut Vec<Finding>) {
        self.expire(event.ts_us);
        let Some(code) = event.error_code.as_deref() else { return };
        if !CLOUD_DENIALS.contains(&code) {
            return;
        }
        let key = event.key();
        let denial = Denial { ts_us: event.ts_us, key: &key, function: None, entities: event.entities() };
        if let Some(actor) = event.actor() {
            self.burst("principal", &actor, &denial, out);
        }
        if let Some(ip) = event.source_ip.as_deref().filter(|ip| !ip.ends_with(".amazonaws.com")) {
            self.burst("address", ip, &denial, out);
        }
    }

    pub fn log(&mut self, row: &LogRow<Borrowed>, out: &mut Vec<Finding>) {
        self.expire(row.ts);
        let Some(function) = row.function_name else { return };
        if is_denial_text(row.message) {
            let key =
                row.request_id.map_or_else(|| format!("{}@{}", row.log_stream.unwrap_or("?"), row.ts), str::to_string);
            let entities = super::rows::log_entities(row);
            self.burst(
                "function",
                function,
                &Denial { ts_us: row.ts, key: &key, function: Some(function), entities },
                out,
            );
        }
    }

    pub fn invocation(&mut self, row: &InvocationRow<Borrowed>, out: &mut Vec<Finding>) {
        self.expire(row.ts);
        let denied = [row.error_type, row.error_message].into_iter().flatten().any(is_denial_text);
        if denied {
            let entities = super::rows::invocation_entities(row);
            let denial = Denial { ts_us: row.ts, key: row.request_id, function: Some(row.function_name), entities };
            if let Some(ip) = row.source_ip {
                self.burst("address", ip, &denial, out);
            }
            if let Some(principal) = row.principal {
                self.burst("principal", &actor_of(principal), &denial, out);
            }
        }
        self.new_callers(row, out);
        self.resources(row, out);
    }

    fn new_callers(&mut self, row: &InvocationRow<Borrowed>, out: &mut Vec<Finding>) {
        if !self.callers.contains_key(row.function_name) && self.callers.len() >= FUNCTIONS_MAX {
            return;
        }
        let config = self.config.clone();
        let book = self
            .callers
            .entry(row.function_name.to_string())
            .or_insert_with(|| CallerBook { first_us: row.ts, ..CallerBook::default() });
        book.invocations += 1;
        book.first_us = book.first_us.min(row.ts);
        let learned = row.ts - book.first_us >= config.caller_learning_us
            && book.invocations > config.caller_learning_invocations;
        let attributes = [
            ("principal", row.principal.map(actor_of)),
            ("network", row.source_ip.map(network_of)),
            ("user_agent", row.user_agent.map(agent_family)),
            ("trigger", row.trigger.map(str::to_string)),
        ];
        for (kind, value) in attributes {
            let Some(value) = value.filter(|v| !v.is_empty()) else { continue };
            let known = book.attributes.entry(kind.to_string()).or_default();
            if known.open || known.values.contains(&value) {
                continue;
            }
            let stable = row.ts - known.last_new_us >= config.caller_stable_us;
            if learned && stable && !known.values.is_empty() {
                out.push(Finding {
                    detection: "callers.new",
                    ts_us: row.ts,
                    function: Some(row.function_name.to_string()),
                    entity: format!("{kind} {value}"),
                    key: format!("{}|{kind}|{value}", row.function_name),
                    detail: format!("{} called by a new {kind}: {value}", row.function_name),
                    observed: json!({kind: value, "source_ip": row.source_ip, "user_agent": row.user_agent, "principal": row.principal}),
                    expected: json!({"known": known.values.iter().take(20).collect::<Vec<_>>(), "known_count": known.values.len()}),
                    evidence: vec![row.request_id.to_string()],
                    principal: row.principal.map(str::to_string),
                    ..Finding::default()
                });
            }
            known.last_new_us = known.last_new_us.max(row.ts);
            if known.values.len() >= VALUES_MAX {
                known.open = true;
                known.values.clear();
            } else {
                known.values.insert(value);
            }
        }
    }

    fn resources(&mut self, row: &InvocationRow<Borrowed>, out: &mut Vec<Finding>) {
        if !self.resources.contains_key(row.function_name) && self.resources.len() >= FUNCTIONS_MAX {
            return;
        }
        let config = self.config.clone();
        let window = config.resource_window_us;
        let start = row.ts.div_euclid(window) * window;
        let book = self.resources.entry(row.function_name.to_string()).or_default();
        let current = book.open.get_or_insert_with(|| ResourceWindow { start_us: start, ..ResourceWindow::default() });
        if start < current.start_us {
            return; // late for a window already judged
        }
        if start > current.start_us {
            let closed =
                book.open.replace(ResourceWindow { start_us: start, ..ResourceWindow::default() }).expect("open");
            judge(row.function_name, book, closed, &config, out);
        }
        let current = book.open.as_mut().expect("open");
        current.invocations += 1;
        if let Some(duration) = row.duration_ms {
            if current.durations.len() < 4_096 {
                current.durations.push(duration);
            }
        }
        if let (Some(used), Some(size)) = (row.max_memory_used_mb, row.memory_size_mb.filter(|s| *s > 0)) {
            current.memory_ratio_sum += used as f64 / size as f64;
            current.memory_ratio_n += 1;
        }
        let billed = row.billed_duration_ms.map(|billed| billed as f64).or(row.duration_ms).unwrap_or(0.0);
        current.gb_seconds += billed / 1000.0 * row.memory_size_mb.unwrap_or(128) as f64 / 1024.0;
        if current.evidence.len() < EVIDENCE_MAX {
            current.evidence.push(row.request_id.to_string());
        }
    }
}

fn judge(
    function: &str,
    book: &mut ResourceBook,
    window: ResourceWindow,
    config: &BehaviourConfig,
    out: &mut Vec<Finding>,
) {
    let mut durations = window.durations.clone();
    durations.sort_by(f64::total_cmp);
    let median = durations.get(durations.len() / 2).copied().unwrap_or(0.0).max(1.0);
    let memory = if window.memory_ratio_n > 0 { window.memory_ratio_sum / window.memory_ratio_n as f64 } else { 0.0 };
    let learned = book.windows_learned >= config.resource_learning_windows;
    let typical_duration = book.log_duration.exp();
    // What both resource findings share: the function and its window.
    let base = Finding {
        ts_us: window.start_us + config.resource_window_us,
        function: Some(function.to_string()),
        entity: function.to_string(),
        key: function.to_string(),
        window: true,
        window_start_us: window.start_us,
        window_end_us: window.start_us + config.resource_window_us,
        count: window.invocations as i64,
        evidence: window.evidence.clone(),
        ..Finding::default()
    };
    let mut abnormal = false;
    if learned && window.invocations >= 3 {
        if median >= 10.0 * typical_duration && median >= 1_000.0 && memory >= 0.85 {
            abnormal = true;
            out.push(Finding {
                detection: "resource.cryptomining",
                detail: format!("{function} runs pinned: median {median:.0} ms (typically {typical_duration:.0} ms) at {:.0}% memory", memory * 100.0),
                observed: json!({"median_duration_ms": median, "memory_ratio": memory, "invocations": window.invocations}),
                expected: json!({"median_duration_ms": typical_duration}),
                ..base.clone()
            });
        }
        if window.gb_seconds >= 10.0 * book.gb_seconds.max(0.01) && window.gb_seconds >= WALLET_GB_SECONDS_MIN {
            abnormal = true;
            out.push(Finding {
                detection: "resource.denial_of_wallet",
                detail: format!(
                    "{function} billed {:.0} GB-s in {} minutes, {:.0}x its usual",
                    window.gb_seconds,
                    config.resource_window_us / MICROS_PER_MINUTE,
                    window.gb_seconds / book.gb_seconds.max(0.01)
                ),
                observed: json!({"gb_seconds": window.gb_seconds, "invocations": window.invocations}),
                expected: json!({"gb_seconds": book.gb_seconds}),
                ..base.clone()
            });
        }
    }
    // Abnormal windows, and surges too small to report, do not teach the baseline.
    let surge = learned && window.gb_seconds >= 5.0 * book.gb_seconds.max(0.01);
    let held_back = (abnormal || surge) && book.held_back < config.resource_learning_windows;
    book.held_back = if held_back { book.held_back + 1 } else { 0 };
    if !held_back && window.invocations > 0 {
        let alpha = if book.windows_learned == 0 { 1.0 } else { 0.1f64.max(1.0 / (book.windows_learned as f64 + 1.0)) };
        book.log_duration += alpha * (median.ln() - book.log_duration);
        book.gb_seconds += alpha * (window.gb_seconds - book.gb_seconds);
        book.windows_learned = book.windows_learned.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_agent_families() {
        assert_eq!(network_of("198.51.100.7"), "198.51.100.0/24");
        assert_eq!(network_of("2001:db8:1:2::5"), "2001:db8:1::/48");
        assert_eq!(network_of("not an ip"), "not an ip");
        assert_eq!(agent_family("python-requests/2.31.0"), "python-requests");
        assert_eq!(agent_family("Mozilla/5.0 (X11)"), "mozilla");
        assert!(is_denial_text("{\"statusCode\":403,\"body\":\"Forbidden\"}"));
        assert!(!is_denial_text("order 403 shipped"));
    }

    #[test]
    fn denied_invocations_and_log_lines_burst_per_address_and_function() {
        let mut behaviour = Behaviour::new(BehaviourConfig::default());
        let mut out = Vec::new();
        for i in 0..30 {
            let request_id = format!("r{i}");
            let row = InvocationRow::<Borrowed> {
                ts: i * 2_000_000,
                function_name: "orders-api",
                request_id: &request_id,
                error_type: Some("UnauthorizedError"),
                source_ip: Some("198.51.100.9"),
                ..InvocationRow::default()
            };
            behaviour.invocation(&row, &mut out);
            let log_request_id = format!("u{i}");
            let line = LogRow::<Borrowed> {
                ts: i * 2_000_000,
                function_name: Some("users-api"),
                request_id: Some(&log_request_id),
                message: "{\"statusCode\": 403, \"message\": \"Forbidden\"}",
                ..LogRow::default()
            };
            behaviour.log(&line, &mut out);
            // Ordinary errors and lines are not denials.
            let ok = LogRow { message: "order 403 shipped", ..line };
            behaviour.log(&ok, &mut out);
        }
        let entities: Vec<&str> = out.iter().map(|f| f.entity.as_str()).collect();
        assert_eq!(entities, vec!["address 198.51.100.9", "function users-api"], "{out:?}");
        assert_eq!(out[0].function.as_deref(), Some("orders-api"));
    }

    #[test]
    fn a_burst_of_denials_is_reported_once_per_window() {
        let mut behaviour = Behaviour::new(BehaviourConfig::default());
        let mut out = Vec::new();
        for i in 0..50 {
            let event = CloudTrailEvent {
                ts_us: i * 1_000_000,
                event_source: "s3.amazonaws.com".into(),
                event_name: "GetObject".into(),
                error_code: Some("AccessDenied".into()),
                principal_arn: Some("arn:aws:iam::1:user/mallory".into()),
                source_ip: Some("203.0.113.9".into()),
                event_id: Some(format!("e{i}")),
                ..CloudTrailEvent::default()
            };
            behaviour.cloudtrail(&event, &mut out);
        }
        assert_eq!(out.len(), 2, "{out:?}"); // the principal and the address
        assert!(out.iter().all(|f| f.count == 20 && f.evidence.len() == EVIDENCE_MAX));
    }

    #[test]
    fn state_with_open_bursts_checkpoints_and_restores_the_same() {
        // Issue 16: `coldtrail ingest` of real CloudTrail (Stratus's ec2-get-password-data) exited 2 with
        // "detector checkpoint: key must be a string" while a burst was open.
        let mut behaviour = Behaviour::new(BehaviourConfig::default());
        let mut out = Vec::new();
        let denied = |i: i64| CloudTrailEvent {
            ts_us: i * 1_000_000,
            event_source: "ec2.amazonaws.com".into(),
            event_name: "GetPasswordData".into(),
            error_code: Some("Client.UnauthorizedOperation".into()),
            principal_arn: Some("arn:aws:iam::1:user/mallory".into()),
            source_ip: Some("203.0.113.9".into()),
            event_id: Some(format!("e{i}")),
            ..CloudTrailEvent::default()
        };
        for i in 0..5 {
            behaviour.cloudtrail(&denied(i), &mut out);
        }
        assert!(!behaviour.bursts.is_empty(), "a burst is open");
        let bytes = serde_json::to_vec(&behaviour).expect("open bursts checkpoint");
        let mut restored: Behaviour = serde_json::from_slice(&bytes).unwrap();
        restored.set_config(BehaviourConfig::default());
        assert_eq!(serde_json::to_vec(&restored).unwrap(), bytes);
        // Both go on to report the same burst.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 5..50 {
            behaviour.cloudtrail(&denied(i), &mut a);
            restored.cloudtrail(&denied(i), &mut b);
        }
        assert!(!a.is_empty());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}

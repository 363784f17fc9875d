//! The anomaly detector of invocation patterns: per function, one univariate detector for each signal
//! (rate, errors, timeouts, cold starts, p95 duration, memory, cost, new callers) and one multivariate
//! detector over them all; minutes in, alerts with observed and expected values and evidence out.
//! State is bounded (functions, callers, windows) and serialisable, so that a restart resumes its
//! baselines from a checkpoint.

use crate::features::FastMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::alert::{alert_id, sql_literal, Alert};
use crate::features::MinuteFeatures;
use crate::multivariate::{Multivariate, MultivariateConfig, MultivariateVerdict};
use crate::series::{SeriesConfig, SeriesDetector, Verdict};
use store::alerts::{Entity, EntityKind};
use store::time::MICROS_PER_MINUTE;

/// One signal watched per function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Invocations,
    Errors,
    Timeouts,
    ColdStarts,
    DurationP95,
    MemoryUsed,
    Cost,
    NewCallers,
}

/// Every signal, in the order that names an alert when several fire in one minute: causes before
/// consequences (a spike brings cold starts and cost with it).
pub const SIGNALS: [Signal; 8] = [
    Signal::Invocations,
    Signal::NewCallers,
    Signal::Errors,
    Signal::Timeouts,
    Signal::DurationP95,
    Signal::Cost,
    Signal::MemoryUsed,
    Signal::ColdStarts,
];

impl Signal {
    pub fn name(self) -> &'static str {
        match self {
            Signal::Invocations => "invocations",
            Signal::Errors => "errors",
            Signal::Timeouts => "timeouts",
            Signal::ColdStarts => "cold_starts",
            Signal::DurationP95 => "duration_p95_ms",
            Signal::MemoryUsed => "memory_used_ratio",
            Signal::Cost => "gb_seconds_typical",
            Signal::NewCallers => "new_callers",
        }
    }

    /// The `detector` column of its alerts.
    pub fn detector(self) -> String {
        format!("anomaly.{}", self.name())
    }

    fn value(self, features: &MinuteFeatures, new_callers: usize) -> f64 {
        match self {
            Signal::Invocations => features.invocations as f64,
            Signal::Errors => features.errors as f64,
            Signal::Timeouts => features.timeouts as f64,
            Signal::ColdStarts => features.cold_starts as f64,
            Signal::DurationP95 => features.duration_p95_ms,
            Signal::MemoryUsed => features.memory_used_ratio,
            Signal::Cost => features.gb_seconds_typical,
            Signal::NewCallers => new_callers as f64,
        }
    }

    /// Signals that count events, judged also against a Poisson rate.
    fn is_count(self) -> bool {
        matches!(
            self,
            Signal::Invocations | Signal::Errors | Signal::Timeouts | Signal::ColdStarts | Signal::NewCallers
        )
    }

    /// Signals that vary by factors: durations and costs.
    fn is_multiplicative(self) -> bool {
        matches!(self, Signal::DurationP95 | Signal::Cost)
    }

    /// Only the invocation rate is anomalous both ways (a function that went silent); fewer errors or
    /// shorter durations are good news.
    fn both_ways(self) -> bool {
        self == Signal::Invocations
    }

    /// Whether a deviation is big enough in practice to tell a person, beyond being unlikely: an error
    /// burst is a tenth of the invocations failing, not three errors in a busy minute.
    fn substantial(self, value: f64, expected: f64, features: &MinuteFeatures) -> bool {
        let invocations = features.invocations as f64;
        match self {
            Signal::Invocations => {
                (value - expected).abs() >= 5.0 && (value >= 2.0 * expected || value <= 0.5 * expected)
            }
            Signal::Errors => value >= 3.0 && value >= 0.1 * invocations,
            Signal::Timeouts => value >= 3.0 && value >= 0.05 * invocations,
            Signal::ColdStarts => value >= 5.0 && value >= 0.2 * invocations,
            Signal::NewCallers => value >= 3.0,
            // The p95 of fewer than 20 invocations is their slowest: one slow invocation (a timeout, which
            // the timeouts signal reports) is not a shift of the p95 unless a second one is slow too.
            Signal::DurationP95 => {
                let second_slow = features.evidence.slowest.get(1).is_some_and(|(ms, _)| *ms >= expected * 2.0);
                value >= expected * 2.0
                    && value - expected >= 100.0
                    && (invocations >= 10.0 || value >= expected * 4.0)
                    && (invocations >= 20.0 || second_slow)
            }
            Signal::MemoryUsed => value >= 0.8 && value >= expected + 0.15,
            Signal::Cost => value >= expected * 2.0,
        }
    }

    fn attack_ids(self, rising: bool) -> Vec<String> {
        let ids: &[&str] = match (self, rising) {
            // Endpoint denial of service; denial of wallet.
            (Signal::Invocations, true) | (Signal::Cost, _) => &["T1499", "T1496"],
            // Resource hijacking: mining pins durations and memory.
            (Signal::DurationP95, _) | (Signal::MemoryUsed, _) => &["T1496"],
            // Valid accounts used from somewhere new.
            (Signal::NewCallers, _) => &["T1078"],
            _ => &[],
        };
        ids.iter().map(|id| id.to_string()).collect()
    }

    fn title(self, function: &str, rising: bool) -> String {
        match (self, rising) {
            (Signal::Invocations, true) => format!("invocation rate of {function} is far above normal"),
            (Signal::Invocations, false) => format!("invocation rate of {function} dropped far below normal"),
            (Signal::Errors, _) => format!("error burst in {function}"),
            (Signal::Timeouts, _) => format!("timeouts in {function}"),
            (Signal::ColdStarts, _) => format!("cold-start storm in {function}"),
            (Signal::DurationP95, _) => format!("p95 duration of {function} is far above normal"),
            (Signal::MemoryUsed, _) => format!("memory use of {function} is far above normal"),
            (Signal::Cost, _) => format!("cost (GB-seconds) of {function} surged"),
            (Signal::NewCallers, _) => format!("new callers are invoking {function}"),
        }
    }

    fn evidence(self, features: &MinuteFeatures, new_caller_requests: &[String]) -> Vec<String> {
        let evidence = &features.evidence;
        let ids: Vec<String> = match self {
            Signal::Errors | Signal::Timeouts => evidence.failed.clone(),
            Signal::ColdStarts => evidence.cold.clone(),
            Signal::DurationP95 | Signal::MemoryUsed | Signal::Cost => {
                evidence.slowest.iter().map(|(_, id)| id.clone()).collect()
            }
            Signal::NewCallers => new_caller_requests.to_vec(),
            Signal::Invocations => evidence.first.clone(),
        };
        if ids.is_empty() {
            evidence.first.clone()
        } else {
            ids
        }
    }
}

/// Tuning of the anomaly detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnomalyConfig {
    pub series: SeriesConfig,
    pub multivariate: MultivariateConfig,
    /// Scores at or above this raise an alert.
    pub score_threshold: f64,
    /// Functions whose baselines are kept; the one idle longest is forgotten first.
    pub functions_max: usize,
    /// Minutes a function is watched before callers count as new.
    pub learning_minutes: u64,
    /// Known callers remembered per function.
    pub known_callers_max: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            // Minute steps: a four-hour baseline, a daily profile of 15-minute buckets.
            series: SeriesConfig { daily_buckets: 96, ..SeriesConfig::default() },
            multivariate: MultivariateConfig::default(),
            score_threshold: 0.8,
            functions_max: 10_000,
            learning_minutes: 60,
            known_callers_max: 2_048,
        }
    }
}

/// What the detector keeps for one function.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FunctionState {
    signals: Vec<SeriesDetector>,
    multivariate: Multivariate,
    /// Caller key to the last minute it was seen.
    known_callers: FastMap<String, i64>,
    minutes: u64,
    last_minute_us: i64,
    /// The last request id seen: the evidence of a function that went silent.
    last_request_id: Option<String>,
}

/// The anomaly detector over every function's minutes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnomalyDetector {
    config: AnomalyConfig,
    functions: FastMap<String, FunctionState>,
    evicted_functions: u64,
}

impl AnomalyDetector {
    pub fn new(config: AnomalyConfig) -> Self {
        AnomalyDetector { config, functions: FastMap::default(), evicted_functions: 0 }
    }

    pub fn config(&self) -> &AnomalyConfig {
        &self.config
    }

    pub fn tracked_functions(&self) -> usize {
        self.functions.len()
    }

    pub fn evicted_functions(&self) -> u64 {
        self.evicted_functions
    }

    /// Approximate bytes of state, for the memory metric.
    pub fn state_bytes(&self) -> usize {
        let series = &self.config.series;
        let per_series = 2 * series.baseline_steps * 8 + series.daily_buckets * 24 + 2 * 144 * 8 + 272;
        let per_multivariate = self.config.multivariate.history_minutes * 64 + 144 * 8 + 2_048;
        self.functions
            .iter()
            .map(|(name, state)| {
                let callers: usize = state.known_callers.keys().map(|k| k.len() + 48).sum();
                name.len() + SIGNALS.len() * per_series + per_multivariate + callers + 128
            })
            .sum()
    }

    /// Scores one closed minute of one function and appends any alerts.
    pub fn observe(&mut self, features: &MinuteFeatures, out: &mut Vec<Alert>) {
        if !self.functions.contains_key(features.function.as_str()) {
            self.make_room();
            let state = FunctionState {
                signals: SIGNALS
                    .iter()
                    .map(|signal| {
                        SeriesDetector::new(SeriesConfig {
                            counts: signal.is_count(),
                            log_scale: signal.is_multiplicative(),
                            ..self.config.series.clone()
                        })
                    })
                    .collect(),
                multivariate: Multivariate::with_phase(self.config.multivariate.clone(), phase_of(&features.function)),
                known_callers: FastMap::default(),
                minutes: 0,
                last_minute_us: features.minute_us,
                last_request_id: None,
            };
            self.functions.insert(features.function.clone(), state);
        }
        let config = &self.config;
        let state = self.functions.get_mut(features.function.as_str()).expect("inserted above");
        state.minutes += 1;
        state.last_minute_us = state.last_minute_us.max(features.minute_us);

        let learning = state.minutes <= config.learning_minutes;
        let mut new_caller_requests = Vec::new();
        for (key, request_id) in &features.callers {
            if !state.known_callers.contains_key(key) && !learning {
                new_caller_requests.push(request_id.clone());
            }
            state.known_callers.insert(key.clone(), features.minute_us);
        }
        if state.known_callers.len() > config.known_callers_max {
            let mut by_age: Vec<(i64, String)> = state.known_callers.iter().map(|(k, v)| (*v, k.clone())).collect();
            by_age.sort_unstable();
            for (_, key) in by_age.into_iter().take(state.known_callers.len() - config.known_callers_max) {
                state.known_callers.remove(&key);
            }
        }

        let mut findings = Vec::new();
        for (signal, detector) in SIGNALS.iter().zip(state.signals.iter_mut()) {
            let value = signal.value(features, new_caller_requests.len());
            let verdict = detector.observe(features.minute_us, value);
            let rising = value >= verdict.expected;
            if verdict.score >= config.score_threshold
                && (rising || signal.both_ways())
                && signal.substantial(value, verdict.expected, features)
            {
                findings.push(SignalResult::Signal { signal: *signal, verdict, value, rising });
            }
        }
        if let Some(verdict) = state.multivariate.observe(features) {
            let strongest = verdict.deviations.first().map_or(0.0, |d| d.1.abs());
            if verdict.score >= config.score_threshold && strongest >= 3.0 {
                findings.push(SignalResult::Multivariate(verdict));
            }
        }
        if !findings.is_empty() {
            let mut alert = incident(features, &findings, &new_caller_requests);
            if alert.evidence.is_empty() {
                alert.evidence.extend(state.last_request_id.iter().cloned());
            }
            out.push(alert);
        }
        if let Some(last) = features.evidence.first.last() {
            state.last_request_id = Some(last.clone());
        }
    }

    fn make_room(&mut self) {
        while self.functions.len() >= self.config.functions_max.max(1) {
            let idlest =
                self.functions.iter().min_by_key(|(_, state)| state.last_minute_us).map(|(name, _)| name.clone());
            let Some(name) = idlest else { return };
            self.functions.remove(&name);
            self.evicted_functions += 1;
        }
    }
}

/// A stable small number from a function's name, to spread its periodic work.
fn phase_of(function: &str) -> usize {
    function.bytes().fold(0usize, |hash, byte| hash.wrapping_mul(31).wrapping_add(byte as usize))
}

fn round(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}

fn window_query(function: &str, start_us: i64, end_us: i64) -> String {
    format!(
        "SELECT ts, request_id, status, duration_ms, max_memory_used_mb, cold_start, source_ip, principal \
         FROM invocations WHERE function_name = {} AND ts >= '{}' AND ts < '{}' ORDER BY ts",
        sql_literal(function),
        store::time::format_micros(start_us),
        store::time::format_micros(end_us)
    )
}

/// One reason to alert on a function-minute.
enum SignalResult {
    Signal { signal: Signal, verdict: Verdict, value: f64, rising: bool },
    Multivariate(MultivariateVerdict),
}

impl SignalResult {
    fn score(&self) -> f64 {
        match self {
            SignalResult::Signal { verdict, .. } => verdict.score,
            SignalResult::Multivariate(verdict) => verdict.score,
        }
    }
}

/// One alert for everything found in one function-minute: the strongest finding names it, the others
/// add their observed and expected values, evidence and ATT&CK ids.
fn incident(features: &MinuteFeatures, findings: &[SignalResult], new_caller_requests: &[String]) -> Alert {
    let function = features.function.as_str();
    let window_end = features.minute_us + MICROS_PER_MINUTE;
    // A named signal explains more than the mixture: the first signal found (in `SIGNALS` order) names
    // the alert, the mixture only when no single signal stood out.
    let primary = findings.first().expect("at least one finding");
    let mut observed = serde_json::Map::new();
    let mut expected = serde_json::Map::new();
    let mut evidence: Vec<String> = Vec::new();
    let mut attack_ids: Vec<String> = Vec::new();
    let mut titles = Vec::new();
    observed.insert("invocations".into(), json!(features.invocations));
    for finding in findings {
        let (ids, more_evidence, title) = match finding {
            SignalResult::Signal { signal, verdict, value, rising } => {
                observed.insert(signal.name().into(), json!(round(*value)));
                expected.insert(signal.name().into(), json!(round(verdict.expected)));
                expected.insert(
                    format!("{}_range", signal.name()),
                    json!([round(verdict.expected_low.max(0.0)), round(verdict.expected_high)]),
                );
                (
                    signal.attack_ids(*rising),
                    signal.evidence(features, new_caller_requests),
                    signal.title(function, *rising),
                )
            }
            SignalResult::Multivariate(verdict) => {
                for (name, _, value, mean) in &verdict.deviations {
                    observed.entry(name.to_string()).or_insert(json!(round(*value)));
                    expected.entry(name.to_string()).or_insert(json!(round(*mean)));
                }
                let names: Vec<&str> = verdict.deviations.iter().map(|d| d.0).collect();
                (
                    vec!["T1496".to_string()],
                    features.evidence.slowest.iter().map(|(_, id)| id.clone()).collect(),
                    format!("unusual combination of {} in {function}", names.join(", ")),
                )
            }
        };
        for id in ids {
            if !attack_ids.contains(&id) {
                attack_ids.push(id);
            }
        }
        for id in more_evidence {
            if !evidence.contains(&id) && evidence.len() < 10 {
                evidence.push(id);
            }
        }
        titles.push(title);
    }
    let detector = match primary {
        SignalResult::Signal { signal, .. } => signal.detector(),
        SignalResult::Multivariate(_) => "anomaly.multivariate".to_string(),
    };
    let mut title = match primary {
        SignalResult::Signal { signal, rising, .. } => signal.title(function, *rising),
        SignalResult::Multivariate(_) => titles.last().cloned().unwrap_or_default(),
    };
    let others: Vec<String> = findings
        .iter()
        .filter(|f| !std::ptr::eq(*f, primary))
        .map(|f| match f {
            SignalResult::Signal { signal, .. } => signal.name().to_string(),
            SignalResult::Multivariate(_) => "feature combination".to_string(),
        })
        .collect();
    if !others.is_empty() {
        title.push_str(&format!(" (also {})", others.join(", ")));
    }
    Alert {
        ts_us: window_end,
        alert_id: alert_id(&detector, function, features.minute_us),
        severity: crate::alert::severity_of_score(primary.score()),
        title,
        function: Some(function.to_string()),
        entity: Some(function.to_string()),
        window_start_us: features.minute_us,
        window_end_us: window_end,
        score: primary.score(),
        count: 1,
        observed: serde_json::Value::Object(observed),
        expected: serde_json::Value::Object(expected),
        evidence,
        attack_ids,
        query: window_query(function, features.minute_us, window_end),
        detector,
        entities: vec![Entity(EntityKind::Function, function.to_string())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(minute_idx: i64, invocations: u64, callers: &[&str]) -> MinuteFeatures {
        MinuteFeatures {
            function: "orders-api".to_string(),
            minute_us: 1_763_769_600_000_000 + minute_idx * MICROS_PER_MINUTE,
            invocations,
            errors: 0,
            timeouts: 0,
            throttles: 0,
            crashes: 0,
            cold_starts: 0,
            duration_p50_ms: 50.0,
            duration_p95_ms: 120.0,
            duration_max_ms: 200.0,
            memory_used_ratio: 0.4,
            gb_seconds: invocations as f64 * 0.05,
            gb_seconds_typical: invocations as f64 * 0.05,
            source_ips: callers.len() as u64,
            principals: 0,
            environments: 4,
            payload_bytes_mean: 100.0,
            callers: callers.iter().map(|c| (c.to_string(), format!("req-{c}-{minute_idx}"))).collect(),
            evidence: crate::features::Evidence { first: vec![format!("first-{minute_idx}")], ..Default::default() },
        }
    }

    #[test]
    fn one_slow_invocation_in_a_quiet_minute_is_no_p95_shift_and_two_are() {
        let run = |second_slowest_ms: f64| {
            let mut detector = AnomalyDetector::new(AnomalyConfig::default());
            let mut alerts = Vec::new();
            for i in 0..600 {
                detector.observe(&minute(i, 12, &[]), &mut alerts);
            }
            alerts.clear();
            let mut quiet = minute(600, 12, &[]);
            quiet.duration_p95_ms = 6_000.0;
            quiet.duration_max_ms = 6_000.0;
            quiet.evidence.slowest = vec![(6_000.0, "req-slow".into()), (second_slowest_ms, "req-next".into())];
            detector.observe(&quiet, &mut alerts);
            alerts.iter().any(|a| a.detector == "anomaly.duration_p95_ms")
        };
        assert!(!run(110.0), "one timeout among twelve raised a p95 alert");
        assert!(run(5_800.0), "two slow invocations among twelve raised no p95 alert");
    }

    #[test]
    fn one_error_among_two_invocations_is_no_unusual_combination() {
        let run = |invocations: u64, errors: u64| {
            let mut detector = AnomalyDetector::new(AnomalyConfig::default());
            let mut alerts = Vec::new();
            for i in 0..900 {
                detector.observe(&minute(i, 1 + (i % 4) as u64, &[]), &mut alerts);
            }
            alerts.clear();
            let mut odd = minute(900, invocations, &[]);
            odd.errors = errors;
            detector.observe(&odd, &mut alerts);
            alerts.iter().map(|a| a.detector.clone()).collect::<Vec<_>>()
        };
        assert_eq!(run(2, 1), Vec::<String>::new());
        assert!(run(4, 4).iter().any(|d| d == "anomaly.multivariate" || d == "anomaly.errors"));
    }

    #[test]
    fn a_spike_raises_one_alert_with_evidence_and_a_query() {
        let mut detector = AnomalyDetector::new(AnomalyConfig::default());
        let mut alerts = Vec::new();
        for i in 0..600 {
            let n = 50 + (i * 37 % 11) as u64;
            detector.observe(&minute(i, n, &["net:198.51.100.0/24"]), &mut alerts);
        }
        assert!(alerts.is_empty(), "steady traffic alerted: {alerts:?}");
        detector.observe(&minute(600, 400, &["net:198.51.100.0/24"]), &mut alerts);
        let spike: Vec<&Alert> = alerts.iter().filter(|a| a.detector == "anomaly.invocations").collect();
        assert_eq!(spike.len(), 1, "{alerts:?}");
        assert_eq!(spike[0].evidence, vec!["first-600".to_string()]);
        assert_eq!(spike[0].observed["invocations"].as_f64(), Some(400.0));
        assert!(spike[0].expected["invocations_range"][1].as_f64().unwrap() < 100.0);
        assert!(spike[0].query.contains("function_name = 'orders-api'"));
        assert_eq!(spike[0].attack_ids, vec!["T1499".to_string(), "T1496".to_string()]);
    }

    #[test]
    fn new_callers_count_only_after_the_learning_period() {
        let mut detector = AnomalyDetector::new(AnomalyConfig::default());
        let mut alerts = Vec::new();
        for i in 0..300 {
            let callers: &[&str] = if i == 10 { &["net:a", "net:b", "net:c", "net:d"] } else { &["net:home"] };
            detector.observe(&minute(i, 50, callers), &mut alerts);
        }
        assert!(alerts.iter().all(|a| a.detector != "anomaly.new_callers"), "{alerts:?}");
        let outsiders = ["principal:x1", "principal:x2", "principal:x3", "principal:x4", "principal:x5"];
        detector.observe(&minute(300, 50, &outsiders), &mut alerts);
        let found: Vec<&Alert> = alerts.iter().filter(|a| a.detector == "anomaly.new_callers").collect();
        assert_eq!(found.len(), 1, "{alerts:?}");
        assert_eq!(found[0].evidence.len(), 5);
        assert!(found[0].evidence[0].starts_with("req-principal:x"));
    }

    #[test]
    fn state_is_bounded_and_survives_a_checkpoint() {
        let config = AnomalyConfig { functions_max: 3, ..AnomalyConfig::default() };
        let mut detector = AnomalyDetector::new(config);
        let mut alerts = Vec::new();
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let mut features = minute(i as i64, 10, &[]);
            features.function = name.to_string();
            detector.observe(&features, &mut alerts);
        }
        assert_eq!(detector.tracked_functions(), 3);
        assert_eq!(detector.evicted_functions(), 1);
        assert!(detector.state_bytes() > 3 * 8 * 1_000);
        let saved = serde_json::to_string(&detector).unwrap();
        let restored: AnomalyDetector = serde_json::from_str(&saved).unwrap();
        assert_eq!(restored.tracked_functions(), 3);
        assert_eq!(restored.functions["d"].minutes, 1);
        assert_eq!(restored.config, detector.config);
    }
}

//! The invocation generator: minute by minute, every function's invocations with execution environments
//! (cold starts), durations, errors and callers, with anomalies injected into chosen functions.

use crate::fleet::{caller, Caller, FunctionProfile, Trigger};
use crate::rng::Rng;
use store::time::MICROS_PER_MINUTE;

/// A change to one function's traffic from a start time on; the scenario tests and attack stories are
/// made of these.
#[derive(Debug, Clone, PartialEq)]
pub enum Anomaly {
    /// The rate multiplied by `factor`.
    Spike { factor: f64 },
    /// No invocations at all: the function went silent.
    Drop,
    /// The rate grows by `factor_per_hour` of the baseline each hour.
    Ramp { factor_per_hour: f64 },
    /// Durations move linearly to the timeout over `minutes`.
    DurationCreep { minutes: f64 },
    /// A share of invocations fails with errors.
    ErrorBurst { error_rate: f64 },
    /// Every invocation lands in a new execution environment.
    ColdStartStorm,
    /// Durations multiplied by `factor` and memory use near the limit: more GB-seconds for the same work.
    CostSurge { factor: f64 },
    /// A share of invocations comes from `n_callers` callers never seen before, with larger payloads.
    NewCallers { n_callers: usize, share: f64 },
    /// Normal rate, durations pinned near the timeout and memory near the limit: a miner in the function.
    CryptoMining,
}

/// One anomaly on one function within `[start_us, end_us)`.
#[derive(Debug, Clone)]
pub struct Injection {
    pub function_idx: usize,
    pub anomaly: Anomaly,
    pub start_us: i64,
    pub end_us: i64,
}

/// One generated invocation: the `invocations` row without the columns every row shares.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub ts_us: i64,
    pub function_idx: usize,
    pub request_id: String,
    pub log_stream: String,
    pub cold_start: bool,
    pub init_duration_ms: Option<f64>,
    pub duration_ms: f64,
    pub max_memory_used_mb: i64,
    pub status: &'static str,
    pub error_type: Option<&'static str>,
    pub error_message: Option<&'static str>,
    pub trace_id: String,
    pub caller: Caller,
    pub http_method: Option<&'static str>,
    pub http_path: Option<String>,
    pub event_payload: String,
}

/// An execution environment of one function: its log stream and when it was last busy.
#[derive(Debug, Clone)]
struct Environment {
    log_stream: String,
    idle_since_us: i64,
}

/// Generates invocations for a fleet, one minute at a time, deterministically for one seed.
pub struct Generator {
    functions: Vec<FunctionProfile>,
    environments: Vec<Vec<Environment>>,
    injections: Vec<Injection>,
    new_callers: Vec<Vec<Caller>>,
    rng: Rng,
}

impl Generator {
    pub fn new(functions: Vec<FunctionProfile>, seed: u64) -> Self {
        let n_functions = functions.len();
        Generator {
            functions,
            environments: vec![Vec::new(); n_functions],
            injections: Vec::new(),
            new_callers: vec![Vec::new(); n_functions],
            rng: Rng::new(seed).fork(0x6e6e),
        }
    }

    pub fn functions(&self) -> &[FunctionProfile] {
        &self.functions
    }

    /// Adds an anomaly. New callers are drawn now, so that they are the same callers for its whole span.
    ///
    /// # Panics
    /// On a function index outside the fleet.
    pub fn inject(&mut self, injection: Injection) {
        assert!(injection.function_idx < self.functions.len(), "injection into a function outside the fleet");
        if let Anomaly::NewCallers { n_callers, .. } = injection.anomaly {
            let function = &self.functions[injection.function_idx];
            let mut rng = self.rng.fork(0xca11 + injection.function_idx as u64);
            self.new_callers[injection.function_idx] = (0..n_callers)
                .map(|caller_idx| {
                    let mut caller = caller(function.trigger, injection.function_idx, 1_000 + caller_idx, &mut rng);
                    if let Some(ip) = &mut caller.source_ip {
                        *ip = format!("185.220.{}.{}", rng.below(256), 1 + rng.below(254));
                    }
                    if let Some(principal) = &mut caller.principal {
                        *principal = format!("arn:aws:iam::999988887777:role/outsider-{caller_idx}");
                    }
                    caller
                })
                .collect();
        }
        self.injections.push(injection);
    }

    fn active(&self, function_idx: usize, ts_us: i64) -> impl Iterator<Item = &Injection> {
        self.injections
            .iter()
            .filter(move |i| i.function_idx == function_idx && i.start_us <= ts_us && ts_us < i.end_us)
    }

    /// Appends the invocations of every function in the minute starting at `minute_us`, in time order.
    pub fn minute(&mut self, minute_us: i64, out: &mut Vec<Invocation>) {
        let first = out.len();
        for function_idx in 0..self.functions.len() {
            self.function_minute(function_idx, minute_us, out);
        }
        out[first..].sort_unstable_by_key(|invocation| invocation.ts_us);
    }

    fn function_minute(&mut self, function_idx: usize, minute_us: i64, out: &mut Vec<Invocation>) {
        let function = &self.functions[function_idx];
        let mut rate = function.rate_per_minute * function.cycle_factor(minute_us);
        let mut duration_factor = 1.0;
        let mut duration_target_ms = None;
        let mut memory_ratio = function.memory_used_ratio;
        let mut error_rate = function.error_rate;
        let mut cold_storm = false;
        let mut new_caller_share = 0.0;
        for injection in self.active(function_idx, minute_us) {
            let elapsed_minutes = (minute_us - injection.start_us) as f64 / MICROS_PER_MINUTE as f64;
            match injection.anomaly {
                Anomaly::Spike { factor } => rate *= factor,
                Anomaly::Drop => rate = 0.0,
                Anomaly::Ramp { factor_per_hour } => rate *= 1.0 + factor_per_hour * elapsed_minutes / 60.0,
                Anomaly::DurationCreep { minutes } => {
                    let progress = (elapsed_minutes / minutes).min(1.0);
                    let target = function.duration_median_ms
                        + progress * (function.timeout_ms * 0.97 - function.duration_median_ms);
                    duration_target_ms = Some(target);
                }
                Anomaly::ErrorBurst { error_rate: burst } => error_rate = burst,
                Anomaly::ColdStartStorm => cold_storm = true,
                Anomaly::CostSurge { factor } => {
                    duration_factor *= factor;
                    memory_ratio = 0.95;
                }
                Anomaly::NewCallers { share, .. } => new_caller_share = share,
                Anomaly::CryptoMining => {
                    duration_target_ms = Some(function.timeout_ms * 0.995);
                    memory_ratio = 0.97;
                }
            }
        }
        let n_invocations = self.rng.poisson(rate);
        for _ in 0..n_invocations {
            let function = &self.functions[function_idx];
            let ts_us = minute_us + self.rng.below(MICROS_PER_MINUTE as usize) as i64;
            let mut duration_ms = match duration_target_ms {
                Some(target) => target * (1.0 + 0.01 * self.rng.normal()),
                None => self.rng.log_normal(function.duration_median_ms, function.duration_sigma),
            } * duration_factor;
            let (status, error_type, error_message) = if self.rng.chance(function.timeout_rate) {
                duration_ms = function.timeout_ms;
                ("timeout", Some("Sandbox.Timedout"), Some("Task timed out"))
            } else if self.rng.chance(error_rate) {
                duration_ms *= 0.4;
                ("error", Some("Error"), Some("upstream request failed: connect ECONNREFUSED"))
            } else {
                ("success", None, None)
            };
            duration_ms = duration_ms.clamp(0.5, function.timeout_ms);
            let max_memory_used_mb = ((function.memory_size_mb as f64)
                * (memory_ratio * (1.0 + 0.05 * self.rng.normal())).clamp(0.05, 1.0))
            .round() as i64;
            let from_new_caller = new_caller_share > 0.0 && self.rng.chance(new_caller_share);
            let caller = if from_new_caller && !self.new_callers[function_idx].is_empty() {
                let callers = &self.new_callers[function_idx];
                callers[self.rng.below(callers.len())].clone()
            } else {
                function.callers[self.rng.below(function.callers.len())].clone()
            };
            let (http_method, http_path) = if function.trigger.is_http() {
                let path = function.paths[self.rng.below(function.paths.len())];
                let method = if path.ends_with("{id}") || self.rng.chance(0.6) { "GET" } else { "POST" };
                (Some(method), Some(path.replace("{id}", &(1 + self.rng.below(99_999)).to_string())))
            } else if matches!(function.trigger, Trigger::S3) {
                // What an S3 notification says: the event name and the object's key.
                (Some("ObjectCreated:Put"), Some(format!("uploads/{}.jpg", self.rng.below(1 << 30))))
            } else {
                (None, None)
            };
            let event_payload = self.payload(function_idx, from_new_caller, http_path.as_deref());
            let (log_stream, cold_start) = self.environment(function_idx, ts_us, duration_ms, cold_storm);
            let init_duration_ms = cold_start.then(|| {
                let median = self.functions[function_idx].init_duration_median_ms;
                self.rng.log_normal(median, 0.3)
            });
            let mut trace_id = format!("1-{:08x}-", ts_us / 1_000_000);
            self.rng.hex(24, &mut trace_id);
            out.push(Invocation {
                ts_us,
                function_idx,
                request_id: self.rng.uuid(),
                log_stream,
                cold_start,
                init_duration_ms,
                duration_ms,
                max_memory_used_mb,
                status,
                error_type,
                error_message,
                trace_id,
                caller,
                http_method,
                http_path,
                event_payload,
            });
        }
        // Environments idle past their lifetime are reclaimed at the end of the minute.
        let idle_us = self.functions[function_idx].environment_idle_minutes * MICROS_PER_MINUTE;
        self.environments[function_idx].retain(|environment| environment.idle_since_us + idle_us > minute_us);
    }

    /// Picks a warm environment that is free at `ts_us`, or starts a new one (a cold start).
    fn environment(&mut self, function_idx: usize, ts_us: i64, duration_ms: f64, cold_storm: bool) -> (String, bool) {
        let end_us = ts_us + (duration_ms * 1_000.0) as i64;
        let environments = &mut self.environments[function_idx];
        if !cold_storm {
            let n = environments.len();
            if n > 0 {
                let start = self.rng.below(n);
                for probe in 0..n {
                    let environment = &mut environments[(start + probe) % n];
                    if environment.idle_since_us <= ts_us {
                        environment.idle_since_us = end_us;
                        return (environment.log_stream.clone(), false);
                    }
                }
            }
        }
        let day = chrono_day(ts_us);
        let mut log_stream = format!("{day}/[$LATEST]");
        self.rng.hex(32, &mut log_stream);
        environments.push(Environment { log_stream: log_stream.clone(), idle_since_us: end_us });
        (log_stream, true)
    }

    /// The request body or message the function receives (`key`: an S3 object's key).
    fn payload(&mut self, function_idx: usize, from_new_caller: bool, key: Option<&str>) -> String {
        let function = &self.functions[function_idx];
        let mut payload = match function.trigger {
            Trigger::ApiGateway | Trigger::FunctionUrl => format!(
                r#"{{"itemId":{},"quantity":{},"currency":"USD"}}"#,
                1 + self.rng.below(99_999),
                1 + self.rng.below(5)
            ),
            Trigger::Sqs => {
                format!(r#"{{"orderId":"o-{}","action":"fulfil"}}"#, self.rng.below(10_000_000))
            }
            Trigger::S3 => {
                format!(r#"{{"key":"{}","size":{}}}"#, key.unwrap_or("uploads/object"), 1 + self.rng.below(8_000_000))
            }
            Trigger::EventBridge => r#"{"detail-type":"Scheduled Event","source":"aws.events"}"#.to_string(),
        };
        if from_new_caller {
            payload.push_str(&" ".repeat(2_048));
        }
        payload
    }
}

/// `YYYY/MM/DD` of a time, as Lambda log stream names start.
fn chrono_day(ts_us: i64) -> String {
    let days = ts_us.div_euclid(86_400_000_000);
    let (year, month, day) = civil_from_days(days);
    format!("{year:04}/{month:02}/{day:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::fleet;
    use crate::render::invocations_batch;
    use store::Table;

    fn generator(n_functions: usize) -> Generator {
        let mut rng = Rng::new(11);
        Generator::new(fleet(n_functions, &mut rng), 11)
    }

    fn minutes(generator: &mut Generator, start_us: i64, n_minutes: i64) -> Vec<Invocation> {
        let mut out = Vec::new();
        for minute_idx in 0..n_minutes {
            generator.minute(start_us + minute_idx * MICROS_PER_MINUTE, &mut out);
        }
        out
    }

    const START_US: i64 = 1_763_769_600_000_000; // 2025-11-22T00:00:00Z

    #[test]
    fn rows_fit_the_invocations_schema_and_follow_the_profiles() {
        let mut generator = generator(20);
        let invocations = minutes(&mut generator, START_US, 30);
        assert!(invocations.windows(2).all(|w| w[0].ts_us <= w[1].ts_us));
        let batch = invocations_batch(generator.functions(), &invocations).expect("some invocations");
        assert_eq!(batch.num_rows(), invocations.len());
        assert_eq!(batch.schema(), Table::Invocations.schema());
        let cold = invocations.iter().filter(|i| i.cold_start).count();
        assert!(cold > 0 && cold < invocations.len() / 5, "{cold} cold starts of {}", invocations.len());
        for invocation in &invocations {
            let function = &generator.functions()[invocation.function_idx];
            assert!(invocation.duration_ms <= function.timeout_ms);
            assert_eq!(invocation.cold_start, invocation.init_duration_ms.is_some());
            assert!(invocation.log_stream.starts_with("2025/11/22/[$LATEST]"), "{}", invocation.log_stream);
        }
        let mut ids: Vec<&str> = invocations.iter().map(|i| i.request_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), invocations.len());
    }

    #[test]
    fn the_same_seed_gives_the_same_traffic() {
        let a = minutes(&mut generator(5), START_US, 3);
        let b = minutes(&mut generator(5), START_US, 3);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.request_id == y.request_id && x.duration_ms == y.duration_ms));
    }

    #[test]
    fn injected_anomalies_change_only_their_function_and_span() {
        let mut plain = generator(4);
        let mut injected = generator(4);
        let start_us = START_US + 10 * MICROS_PER_MINUTE;
        for (function_idx, anomaly) in [
            (0, Anomaly::Spike { factor: 10.0 }),
            (1, Anomaly::Drop),
            (2, Anomaly::NewCallers { n_callers: 5, share: 0.5 }),
        ] {
            injected.inject(Injection { function_idx, anomaly, start_us, end_us: start_us + 10 * MICROS_PER_MINUTE });
        }
        let before = minutes(&mut plain, START_US, 30);
        let after = minutes(&mut injected, START_US, 30);
        let count = |rows: &[Invocation], function_idx: usize, from: i64, to: i64| {
            rows.iter().filter(|i| i.function_idx == function_idx && i.ts_us >= from && i.ts_us < to).count()
        };
        let span = (start_us, start_us + 10 * MICROS_PER_MINUTE);
        assert!(count(&after, 0, span.0, span.1) > 5 * count(&before, 0, span.0, span.1));
        assert_eq!(count(&after, 1, span.0, span.1), 0);
        assert!(count(&after, 1, START_US, span.0) > 0);
        let outsiders = after.iter().filter(|i| {
            i.function_idx == 2 && i.caller.source_ip.as_deref().is_some_and(|ip| ip.starts_with("185.220."))
                || i.caller.principal.as_deref().is_some_and(|p| p.contains("999988887777"))
        });
        assert!(outsiders.clone().count() > 0);
        assert!(outsiders.clone().all(|i| i.ts_us >= span.0 && i.ts_us < span.1 && i.event_payload.len() > 2_000));
    }

    #[test]
    fn a_cold_start_storm_starts_every_invocation_cold() {
        let mut generator = generator(3);
        let start_us = START_US + 5 * MICROS_PER_MINUTE;
        generator.inject(Injection { function_idx: 0, anomaly: Anomaly::ColdStartStorm, start_us, end_us: i64::MAX });
        let rows = minutes(&mut generator, START_US, 10);
        let stormed: Vec<&Invocation> = rows.iter().filter(|i| i.function_idx == 0 && i.ts_us >= start_us).collect();
        assert!(!stormed.is_empty());
        assert!(stormed.iter().all(|i| i.cold_start));
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}

//! Event-time windows of one minute per function over `invocations` rows, with a watermark and allowed
//! lateness: each closed window becomes one `MinuteFeatures` (counts, duration percentiles, memory, cost,
//! distinct callers and environments, and a sample of request ids as evidence). Minutes in which a known
//! function ran nothing are closed too, as zeros. Records for an already closed minute are late: counted,
//! not scored (they are stored all the same).

use std::collections::BTreeMap;

/// Sets and maps keyed by text seen once per invocation: foldhash, not SipHash (a twentieth of a replay).
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use store::tables::{Borrowed, InvocationRow};
use store::time::MICROS_PER_MINUTE;

/// Durations kept per window for the percentiles; beyond it, a uniform reservoir sample.
const DURATION_SAMPLE_MAX: usize = 2_048;
/// Distinct caller keys kept per window; beyond it callers are counted but not remembered.
const CALLERS_PER_WINDOW_MAX: usize = 512;
/// Request ids kept per kind of evidence in one window.
const EVIDENCE_PER_KIND_MAX: usize = 3;
/// The largest duration (and billed duration) taken as real: Lambda stops a function at 15 minutes; a
/// larger value is a broken or hostile row and counts as missing (huge values would overflow the
/// detectors' sums into infinities that no checkpoint can hold).
pub const DURATION_MS_MAX: f64 = 3_600_000.0;
/// The largest memory size taken as real (Lambda's is 10,240 MB).
pub const MEMORY_MB_MAX: i64 = 1 << 20;

/// Silent minutes of one function closed as zeros after its last active minute, at most: past a day of
/// silence the function's series skips to its next activity (or to the watermark). A row stamped decades
/// away, from a broken clock or a hostile record, then costs a day of zeros, not millions of minutes.
pub const SILENT_MINUTES_MAX: i64 = 24 * 60;

/// What one function did in one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteFeatures {
    pub function: String,
    pub minute_us: i64,
    pub invocations: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub throttles: u64,
    pub crashes: u64,
    pub cold_starts: u64,
    pub duration_p50_ms: f64,
    pub duration_p95_ms: f64,
    pub duration_max_ms: f64,
    /// Mean of max-memory-used over memory size.
    pub memory_used_ratio: f64,
    /// Billed GB-seconds: billed duration times memory size.
    pub gb_seconds: f64,
    /// Invocations times the median GB-seconds of one: the cost of the minute's typical work, which one
    /// invocation stuck until its timeout does not move.
    pub gb_seconds_typical: f64,
    pub source_ips: u64,
    pub principals: u64,
    pub environments: u64,
    pub payload_bytes_mean: f64,
    /// Distinct callers (principal, or source address /24) with one request id of each.
    pub callers: Vec<(String, String)>,
    pub evidence: Evidence,
}

/// Request ids worth looking at first, by what made them interesting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub first: Vec<String>,
    pub failed: Vec<String>,
    pub slowest: Vec<(f64, String)>,
    pub cold: Vec<String>,
}

impl Evidence {
    fn note(&mut self, request_id: &str, failed: bool, cold: bool, duration_ms: f64) {
        if self.first.len() < EVIDENCE_PER_KIND_MAX {
            self.first.push(request_id.to_string());
        }
        if failed && self.failed.len() < EVIDENCE_PER_KIND_MAX {
            self.failed.push(request_id.to_string());
        }
        if cold && self.cold.len() < EVIDENCE_PER_KIND_MAX {
            self.cold.push(request_id.to_string());
        }
        if self.slowest.len() < EVIDENCE_PER_KIND_MAX || self.slowest.iter().any(|(d, _)| *d < duration_ms) {
            self.slowest.push((duration_ms, request_id.to_string()));
            self.slowest.sort_by(|a, b| b.0.total_cmp(&a.0));
            self.slowest.truncate(EVIDENCE_PER_KIND_MAX);
        }
    }
}

/// One minute of one function being accumulated.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Window {
    invocations: u64,
    errors: u64,
    timeouts: u64,
    throttles: u64,
    crashes: u64,
    cold_starts: u64,
    durations: Vec<f64>,
    /// GB-seconds of the same invocations as `durations`, slot for slot.
    invocation_gb_seconds: Vec<f64>,
    durations_seen: u64,
    duration_max_ms: f64,
    memory_ratio_sum: f64,
    memory_ratio_n: u64,
    gb_seconds: f64,
    source_ips: FastSet<String>,
    principals: FastSet<String>,
    environments: FastSet<String>,
    payload_bytes: u64,
    callers: BTreeMap<String, String>,
    evidence: Evidence,
}

/// The per-function minute windows of a stream of invocations.
#[derive(Debug, Serialize, Deserialize)]
pub struct MinuteWindows {
    lateness_us: i64,
    functions_max: usize,
    /// Largest event time seen.
    event_time_max_us: i64,
    open: FastMap<String, BTreeMap<i64, Window>>,
    /// Per function: the last closed minute, and the last minute it had invocations.
    closed_through: FastMap<String, (i64, i64)>,
    #[serde(alias = "late_records")]
    late_invocations: u64,
    evicted_functions: u64,
    sample_state: u64,
}

impl MinuteWindows {
    /// Windows that close `lateness_us` after the largest event time seen passes their end, for at most
    /// `functions_max` functions (the one idle longest is forgotten first).
    pub fn new(lateness_us: i64, functions_max: usize) -> Self {
        MinuteWindows {
            lateness_us,
            functions_max: functions_max.max(1),
            event_time_max_us: i64::MIN,
            open: FastMap::default(),
            closed_through: FastMap::default(),
            late_invocations: 0,
            evicted_functions: 0,
            sample_state: 0x2545_F491_4F6C_DD1D,
        }
    }

    pub fn late_invocations(&self) -> u64 {
        self.late_invocations
    }

    pub fn evicted_functions(&self) -> u64 {
        self.evicted_functions
    }

    pub fn tracked_functions(&self) -> usize {
        self.closed_through.len().max(self.open.len())
    }

    /// Everything before the watermark is final.
    pub fn watermark_us(&self) -> i64 {
        self.event_time_max_us.saturating_sub(self.lateness_us)
    }

    /// Moves the watermark on without records, from a clock: a fleet that went silent still closes its
    /// minutes.
    pub fn advance_to(&mut self, event_time_us: i64) {
        self.event_time_max_us = self.event_time_max_us.max(event_time_us);
    }

    /// Adds the rows of an `invocations` batch. A batch of another shape is a bug upstream and is
    /// ignored.
    pub fn add(&mut self, batch: &RecordBatch) {
        let Ok(columns) = InvocationRow::columns(batch) else { return };
        for row in (0..columns.rows()).map(|i| InvocationRow::read(&columns, i)) {
            let (ts, function) = (row.ts, row.function_name);
            if function.is_empty() {
                continue;
            }
            let minute = ts.div_euclid(MICROS_PER_MINUTE) * MICROS_PER_MINUTE;
            self.event_time_max_us = self.event_time_max_us.max(ts);
            if self.closed_through.get(function).is_some_and(|(closed, _)| minute <= *closed) {
                self.late_invocations += 1;
                continue;
            }
            let sample = self.next_sample();
            let minutes = match self.open.get_mut(function) {
                Some(minutes) => minutes,
                None => self.open.entry(function.to_string()).or_default(),
            };
            let window = minutes.entry(minute).or_default();
            accumulate(&row, window, sample);
        }
        self.evict_if_needed();
    }

    fn next_sample(&mut self) -> u64 {
        // xorshift64*, for the duration reservoir.
        self.sample_state ^= self.sample_state >> 12;
        self.sample_state ^= self.sample_state << 25;
        self.sample_state ^= self.sample_state >> 27;
        self.sample_state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn evict_if_needed(&mut self) {
        while self.closed_through.len() > self.functions_max {
            let idlest = self
                .closed_through
                .iter()
                .filter(|(function, _)| !self.open.contains_key(*function))
                .min_by_key(|(_, (_, last_active))| *last_active)
                .map(|(function, _)| function.clone());
            let Some(function) = idlest else { break };
            self.closed_through.remove(&function);
            self.evicted_functions += 1;
        }
    }

    /// Closes every window that ends at or before the watermark, in time order per function, including
    /// the silent minutes of functions seen before.
    pub fn close(&mut self, out: &mut Vec<MinuteFeatures>) {
        let watermark = self.watermark_us();
        if watermark == i64::MIN {
            return;
        }
        let last_closable = (watermark - MICROS_PER_MINUTE).div_euclid(MICROS_PER_MINUTE) * MICROS_PER_MINUTE;
        let mut functions: Vec<String> = self.open.keys().chain(self.closed_through.keys()).cloned().collect();
        functions.sort_unstable();
        functions.dedup();
        for function in functions {
            let (closed, mut last_active) = self.closed_through.get(&function).copied().unwrap_or((i64::MIN, i64::MIN));
            let mut windows = self.open.remove(&function).unwrap_or_default();
            let first_open = windows.keys().next().copied();
            let mut minute = match (closed, first_open) {
                (i64::MIN, Some(first)) => first,
                (i64::MIN, None) => continue,
                (closed, _) => closed + MICROS_PER_MINUTE,
            };
            let mut closed_now = closed;
            while minute <= last_closable {
                if last_active != i64::MIN
                    && minute > last_active.saturating_add(SILENT_MINUTES_MAX * MICROS_PER_MINUTE)
                    && !windows.contains_key(&minute)
                {
                    // A long silence: on to the next active minute, or to the watermark.
                    let next = windows.keys().next().copied().unwrap_or(i64::MAX).min(last_closable);
                    if next > minute {
                        closed_now = next - MICROS_PER_MINUTE;
                        minute = next;
                        if !windows.contains_key(&minute) {
                            closed_now = minute;
                            minute += MICROS_PER_MINUTE;
                        }
                        continue;
                    }
                }
                let window = windows.remove(&minute).unwrap_or_default();
                if window.invocations > 0 {
                    last_active = minute;
                }
                out.push(finish(&function, minute, window));
                closed_now = minute;
                minute += MICROS_PER_MINUTE;
            }
            if !windows.is_empty() {
                self.open.insert(function.clone(), windows);
            }
            if closed_now != i64::MIN {
                self.closed_through.insert(function, (closed_now, last_active));
            }
        }
        self.evict_if_needed();
    }
}

fn finish(function: &str, minute_us: i64, mut window: Window) -> MinuteFeatures {
    window.durations.sort_by(f64::total_cmp);
    let quantile = |q: f64| -> f64 {
        if window.durations.is_empty() {
            return 0.0;
        }
        let idx = ((window.durations.len() - 1) as f64 * q).round() as usize;
        window.durations[idx]
    };
    MinuteFeatures {
        function: function.to_string(),
        minute_us,
        invocations: window.invocations,
        errors: window.errors,
        timeouts: window.timeouts,
        throttles: window.throttles,
        crashes: window.crashes,
        cold_starts: window.cold_starts,
        duration_p50_ms: quantile(0.5),
        duration_p95_ms: quantile(0.95),
        duration_max_ms: window.duration_max_ms,
        memory_used_ratio: if window.memory_ratio_n > 0 {
            window.memory_ratio_sum / window.memory_ratio_n as f64
        } else {
            0.0
        },
        gb_seconds: window.gb_seconds,
        gb_seconds_typical: {
            let mut costs = std::mem::take(&mut window.invocation_gb_seconds);
            if costs.is_empty() {
                0.0
            } else {
                let mid = costs.len() / 2;
                let (_, median, _) = costs.select_nth_unstable_by(mid, f64::total_cmp);
                *median * window.invocations as f64
            }
        },
        source_ips: window.source_ips.len() as u64,
        principals: window.principals.len() as u64,
        environments: window.environments.len() as u64,
        payload_bytes_mean: if window.invocations > 0 {
            window.payload_bytes as f64 / window.invocations as f64
        } else {
            0.0
        },
        callers: window.callers.into_iter().collect(),
        evidence: window.evidence,
    }
}

/// The caller of an invocation as the detectors group it: the principal, else the source address's /24
/// (IPv4) or /64 (IPv6) network.
pub fn caller_key(principal: Option<&str>, source_ip: Option<&str>) -> Option<String> {
    if let Some(principal) = principal.filter(|p| !p.is_empty()) {
        return Some(format!("principal:{principal}"));
    }
    let ip = source_ip.filter(|ip| !ip.is_empty())?;
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            Some(format!("net:{a}.{b}.{c}.0/24"))
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            Some(format!("net:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
        }
        Err(_) => Some(format!("ip:{ip}")),
    }
}

/// Adds one invocation to its minute's window.
fn accumulate(row: &InvocationRow<Borrowed>, window: &mut Window, sample: u64) {
    window.invocations += 1;
    let status = row.status.unwrap_or("success");
    let failed = matches!(status, "error" | "crash" | "timeout");
    match status {
        "error" => window.errors += 1,
        "crash" => {
            window.crashes += 1;
            window.errors += 1;
        }
        "timeout" => window.timeouts += 1,
        "throttled" => window.throttles += 1,
        _ => {}
    }
    let cold = row.cold_start.unwrap_or(false);
    if cold {
        window.cold_starts += 1;
    }
    // A duration that is not a finite, non-negative number (a hostile or broken row) is no duration:
    // NaN would poison the percentiles and could not be checkpointed as JSON.
    let duration = row.duration_ms.filter(|d| (0.0..=DURATION_MS_MAX).contains(d));
    let duration_ms = duration.unwrap_or(0.0);
    let memory_mb = row.memory_size_mb.filter(|size| (1..=MEMORY_MB_MAX).contains(size));
    let used = row.max_memory_used_mb.filter(|used| (0..=MEMORY_MB_MAX).contains(used));
    if let (Some(size), Some(used)) = (memory_mb, used) {
        if size > 0 {
            window.memory_ratio_sum += used as f64 / size as f64;
            window.memory_ratio_n += 1;
        }
    }
    let invocation_gb_seconds = memory_mb.map(|size| {
        let billed = row
            .billed_duration_ms
            .map(|billed| billed as f64)
            .filter(|billed| (0.0..=DURATION_MS_MAX).contains(billed))
            .unwrap_or_else(|| duration_ms.ceil());
        billed / 1_000.0 * size as f64 / 1_024.0
    });
    window.gb_seconds += invocation_gb_seconds.unwrap_or(0.0);
    if duration.is_some() {
        window.durations_seen += 1;
        let cost = invocation_gb_seconds.unwrap_or(0.0);
        if window.durations.len() < DURATION_SAMPLE_MAX {
            window.durations.push(duration_ms);
            window.invocation_gb_seconds.push(cost);
        } else {
            let slot = (sample % window.durations_seen) as usize;
            if slot < DURATION_SAMPLE_MAX {
                window.durations[slot] = duration_ms;
                window.invocation_gb_seconds[slot] = cost;
            }
        }
        window.duration_max_ms = window.duration_max_ms.max(duration_ms);
    }
    let source_ip = row.source_ip;
    let principal = row.principal;
    if let Some(ip) = source_ip {
        if window.source_ips.len() < CALLERS_PER_WINDOW_MAX {
            window.source_ips.insert(ip.to_string());
        }
    }
    if let Some(principal) = principal {
        if window.principals.len() < CALLERS_PER_WINDOW_MAX {
            window.principals.insert(principal.to_string());
        }
    }
    if let Some(stream) = row.log_stream {
        if window.environments.len() < CALLERS_PER_WINDOW_MAX {
            window.environments.insert(stream.to_string());
        }
    }
    window.payload_bytes += row.event_payload.map_or(0, str::len) as u64;
    let request_id = row.request_id;
    if let Some(key) = caller_key(principal, source_ip) {
        if window.callers.len() < CALLERS_PER_WINDOW_MAX && !window.callers.contains_key(&key) {
            window.callers.insert(key, request_id.to_string());
        }
    }
    window.evidence.note(request_id, failed, cold, duration_ms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::rows::TableBuilder;
    use store::Table;

    const T0: i64 = 1_763_769_600_000_000;

    fn row(builder: &mut TableBuilder, ts: i64, function: &str, id: &str, status: &str, duration: f64, ip: &str) {
        InvocationRow::<Borrowed> {
            ts,
            function_name: function,
            request_id: id,
            status: Some(status),
            duration_ms: Some(duration),
            billed_duration_ms: Some(duration.ceil() as i64),
            memory_size_mb: Some(1024),
            max_memory_used_mb: Some(512),
            cold_start: Some(status == "success" && duration > 900.0),
            source_ip: Some(ip),
            log_stream: Some("2025/11/22/[$LATEST]abc"),
            ..InvocationRow::default()
        }
        .push_to(builder);
    }

    #[test]
    fn windows_close_behind_the_watermark_with_their_features_and_silent_minutes() {
        let mut windows = MinuteWindows::new(30_000_000, 100);
        let mut builder = TableBuilder::new(Table::Invocations);
        for i in 0..10 {
            let status = if i == 3 {
                "error"
            } else if i == 4 {
                "timeout"
            } else {
                "success"
            };
            row(&mut builder, T0 + i * 1_000_000, "a", &format!("r{i}"), status, 100.0 + i as f64 * 100.0, "10.0.0.1");
        }
        row(&mut builder, T0 + 5_000_000, "b", "b0", "success", 10.0, "10.0.1.9");
        // Minute 3 of "a", nothing in minutes 1 and 2, and the watermark at minute 3 + 40 s.
        row(&mut builder, T0 + 3 * MICROS_PER_MINUTE + 40_000_000, "a", "late-minute", "success", 5.0, "192.0.2.1");
        windows.add(&builder.finish().unwrap());
        let mut out = Vec::new();
        windows.close(&mut out);
        let a: Vec<&MinuteFeatures> = out.iter().filter(|f| f.function == "a").collect();
        assert_eq!(a.iter().map(|f| (f.minute_us - T0) / MICROS_PER_MINUTE).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(a[0].invocations, 10);
        assert_eq!((a[0].errors, a[0].timeouts), (1, 1));
        assert_eq!(a[0].duration_max_ms, 1_000.0);
        assert_eq!(a[0].duration_p50_ms, 600.0);
        assert!((a[0].gb_seconds - 5.5).abs() < 1e-9, "{}", a[0].gb_seconds);
        assert_eq!(a[0].evidence.failed, vec!["r3".to_string(), "r4".to_string()]);
        assert_eq!(a[0].evidence.slowest[0].1, "r9");
        assert_eq!(a[0].callers, vec![("net:10.0.0.0/24".to_string(), "r0".to_string())]);
        assert_eq!((a[1].invocations, a[2].invocations), (0, 0));
        // "b" closes its minute 0 and, as a known function, its silent minutes 1 and 2.
        assert_eq!(out.iter().filter(|f| f.function == "b").count(), 3);

        // A record for a closed minute is late: counted, not scored.
        let mut late = TableBuilder::new(Table::Invocations);
        row(&mut late, T0 + 2_000_000, "a", "too-late", "success", 1.0, "10.0.0.1");
        windows.add(&late.finish().unwrap());
        assert_eq!(windows.late_invocations(), 1);
        // Moving the clock closes minute 3 with the record that was in it.
        windows.advance_to(T0 + 5 * MICROS_PER_MINUTE);
        out.clear();
        windows.close(&mut out);
        let minute3 = out.iter().find(|f| f.function == "a" && f.minute_us == T0 + 3 * MICROS_PER_MINUTE).unwrap();
        assert_eq!(minute3.invocations, 1);
        assert_eq!(minute3.evidence.first, vec!["late-minute".to_string()]);
    }

    #[test]
    fn the_number_of_tracked_functions_is_bounded() {
        let mut windows = MinuteWindows::new(0, 3);
        for (i, function) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            let mut builder = TableBuilder::new(Table::Invocations);
            row(&mut builder, T0 + i as i64 * MICROS_PER_MINUTE, function, "x", "success", 1.0, "10.0.0.1");
            windows.add(&builder.finish().unwrap());
            windows.close(&mut Vec::new());
        }
        windows.advance_to(T0 + 10 * MICROS_PER_MINUTE);
        windows.close(&mut Vec::new());
        assert!(windows.tracked_functions() <= 3);
        assert_eq!(windows.evicted_functions(), 2);
    }

    #[test]
    fn callers_group_by_principal_or_network() {
        assert_eq!(
            caller_key(Some("arn:aws:iam::1:role/x"), Some("1.2.3.4")).unwrap(),
            "principal:arn:aws:iam::1:role/x"
        );
        assert_eq!(caller_key(None, Some("198.51.100.77")).unwrap(), "net:198.51.100.0/24");
        assert_eq!(caller_key(None, Some("2001:db8:1:2:3::9")).unwrap(), "net:2001:db8:1:2::/64");
        assert_eq!(caller_key(Some(""), None), None);
        assert_eq!(caller_key(None, Some("not-an-ip")).unwrap(), "ip:not-an-ip");
    }
}

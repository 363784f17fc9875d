//! Invocation assembly: turns `START`, `END`, `REPORT`, platform events, application lines, trigger
//! events and trace ids into exactly one `invocations` row per request id, whatever order they come in.
//!
//! An invocation is emitted as soon as its `START` and `REPORT` are both seen; one missing a part waits
//! until event time in its own log stream has moved `grace` past its last part (inputs that are read
//! one log group or stream after another, such as saved API pages or export objects, do not cut each
//! other's invocations short), until event time anywhere has moved `QUIET_GRACE_FACTOR` times `grace`
//! past it (its environment went quiet for good), or until the end of a finite input. Emitted
//! request ids are remembered (bounded) so that a part arriving after emission does not make a second row.
//! Memory is bounded by `pending_max`: past it, the oldest pending invocation is emitted as it is.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use crate::lambda::{Message, Report};
use crate::trigger::Trigger;
use store::rows::{bounded, TableBuilder};
use store::tables::{Borrowed, InvocationRow};

/// Bytes of the trigger event kept in `event_payload`.
pub const EVENT_PAYLOAD_BYTES_MAX: usize = 8 * 1024;
/// Bytes of an error message kept in `error_message`.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 2 * 1024;

/// How many `grace` periods event time in any stream must move past an invocation's last part before
/// it is emitted although its own log stream has not moved on.
pub const QUIET_GRACE_FACTOR: i64 = 24;

/// Where an invocation's parts came from.
#[derive(Debug, Clone, Default)]
pub struct Origin<'a> {
    pub function_name: Option<&'a str>,
    pub log_group: Option<&'a str>,
    pub log_stream: Option<&'a str>,
    pub account: Option<&'a str>,
    pub region: Option<&'a str>,
    pub source: &'a str,
    pub position: &'a str,
}

impl Origin<'_> {
    /// What identifies the execution environment: the log stream, or the input itself when the
    /// stream is unknown (a plain log file of one function).
    pub fn environment(&self) -> &str {
        self.log_stream.unwrap_or(self.source)
    }
}

#[derive(Debug, Default)]
struct Pending {
    function_name: Option<Arc<str>>,
    function_version: Option<String>,
    log_group: Option<Arc<str>>,
    log_stream: Option<Arc<str>>,
    account: Option<Arc<str>>,
    region: Option<Arc<str>>,
    start_ts: Option<i64>,
    end_ts: Option<i64>,
    last_ts: i64,
    seen_start: bool,
    report: Option<Report<'static>>,
    cold_start: bool,
    status: Option<String>,
    error_type: Option<String>,
    error_message: Option<String>,
    trace_id: Option<String>,
    trigger: Option<Trigger>,
    event_payload: Option<String>,
    source: Arc<str>,
    position: String,
    /// Whether any log line of the request has been seen; a trace alone is not an invocation row.
    logged: bool,
}

/// Per execution environment (log stream): whether the next invocation is a cold start, and which
/// request is running, for lines that do not name their request.
#[derive(Debug, Default)]
struct Environment {
    cold_next: bool,
    /// Empty when none is: request ids are never empty. One buffer reused from request to request.
    current_request: String,
    /// The newest event time of a line in this environment.
    newest_ts: i64,
}

/// Counters of the assembler, for metrics and the ingest summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AssemblyStats {
    pub emitted: u64,
    pub evicted: u64,
    pub late_parts: u64,
    /// Traces whose request's log lines never came while they waited: their spans are stored, no
    /// invocation row is made of them.
    pub traces_unmatched: u64,
}

/// The context of the lines read last, shared by the invocations they belong to: the lines of one
/// payload or file name the same function, group, stream and source, so each is allocated once per
/// run of lines rather than once per invocation.
#[derive(Default)]
struct Recent {
    function_name: Option<Arc<str>>,
    log_group: Option<Arc<str>>,
    log_stream: Option<Arc<str>>,
    account: Option<Arc<str>>,
    region: Option<Arc<str>>,
    source: Option<Arc<str>>,
}

/// `value`, shared with `last` when it is the same text, and kept there as the new last otherwise.
fn shared(last: &mut Option<Arc<str>>, value: &str) -> Arc<str> {
    match last {
        Some(text) if **text == *value => Arc::clone(text),
        _ => Arc::clone(last.insert(Arc::from(value))),
    }
}

/// A map keyed by request ids and log streams, looked up for every line: a fast hash, seeded per map.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub struct Assembler {
    /// Keyed by request id; the map, `arrival` and `completed` share one allocation of each id.
    pending: Map<Arc<str>, Pending>,
    /// Request ids in the order they became pending, for eviction; may hold ids already emitted.
    arrival: VecDeque<Arc<str>>,
    /// Emitted request ids, as 64-bit hashes (a fifth of the memory of the ids; a collision, about one
    /// in 10^8 at the 400,000 remembered, would drop a late part of another request as late).
    emitted: HashSet<u64, foldhash::fast::RandomState>,
    emitted_order: VecDeque<u64>,
    /// Keys of `id_hash`, random per assembler so that no input can aim at a collision.
    hash_keys: std::collections::hash_map::RandomState,
    environments: Map<String, Environment>,
    /// Request ids whose START and REPORT are both in; emitted at the end of the unit.
    completed: Vec<Arc<str>>,
    recent: Recent,
    pending_max: usize,
    emitted_memory: usize,
    grace_micros: i64,
    pub stats: AssemblyStats,
}

impl Assembler {
    pub fn new(pending_max: usize, grace_micros: i64) -> Self {
        Assembler {
            pending: Map::default(),
            arrival: VecDeque::new(),
            emitted: HashSet::default(),
            emitted_order: VecDeque::new(),
            hash_keys: std::collections::hash_map::RandomState::new(),
            environments: Map::default(),
            completed: Vec::new(),
            recent: Recent::default(),
            pending_max,
            emitted_memory: pending_max * 4,
            grace_micros,
            stats: AssemblyStats::default(),
        }
    }

    fn id_hash(&self, request_id: &str) -> u64 {
        std::hash::BuildHasher::hash_one(&self.hash_keys, request_id)
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The request currently running in an environment (see `Origin::environment`), for lines that do
    /// not name one.
    pub fn current_request(&self, environment: &str) -> Option<&str> {
        Some(self.environments.get(environment)?.current_request.as_str()).filter(|id| !id.is_empty())
    }

    /// Makes the pending invocation of `request_id` (first seen from `origin` at `ts`, from a log line if
    /// `logged`) if there is none.
    fn make_pending(&mut self, request_id: &str, origin: &Origin<'_>, ts: i64, logged: bool) {
        if !self.pending.contains_key(request_id) {
            let key: Arc<str> = Arc::from(request_id);
            self.arrival.push_back(Arc::clone(&key));
            let first = Pending {
                source: shared(&mut self.recent.source, origin.source),
                position: origin.position.to_string(),
                last_ts: ts,
                logged,
                ..Pending::default()
            };
            self.pending.insert(key, first);
        }
    }

    fn entry(&mut self, request_id: &str, origin: &Origin<'_>, ts: i64) -> Option<&mut Pending> {
        if self.emitted.contains(&self.id_hash(request_id)) {
            self.stats.late_parts += 1;
            return None;
        }
        self.make_pending(request_id, origin, ts, true);
        let pending = self.pending.get_mut(request_id).expect("made above");
        let recent = &mut self.recent;
        let fill = |slot: &mut Option<Arc<str>>, last: &mut Option<Arc<str>>, value: Option<&str>| {
            if slot.is_none() {
                *slot = value.map(|value| shared(last, value));
            }
        };
        if !pending.logged {
            // A trace came first: the log lines are the invocation's origin.
            pending.logged = true;
            pending.source = shared(&mut recent.source, origin.source);
            pending.position = origin.position.to_string();
        }
        fill(&mut pending.function_name, &mut recent.function_name, origin.function_name);
        fill(&mut pending.log_group, &mut recent.log_group, origin.log_group);
        fill(&mut pending.log_stream, &mut recent.log_stream, origin.log_stream);
        fill(&mut pending.account, &mut recent.account, origin.account);
        fill(&mut pending.region, &mut recent.region, origin.region);
        pending.last_ts = pending.last_ts.max(ts);
        Some(pending)
    }

    /// Feeds one classified message at event time `ts`. Returns whether an invocation became complete;
    /// completed invocations are appended to `out` right away.
    pub fn observe(&mut self, message: &Message<'_>, ts: i64, origin: &Origin<'_>, out: &mut TableBuilder) {
        let environment = origin.environment();
        // The environment's state, looked up once per line.
        let env = match self.environments.get_mut(environment) {
            Some(env) => {
                env.newest_ts = env.newest_ts.max(ts);
                env
            }
            None => self
                .environments
                .entry(environment.to_string())
                .or_insert(Environment { newest_ts: ts, ..Environment::default() }),
        };
        let cold = match message {
            Message::InitStart { .. } => {
                env.cold_next = true;
                false
            }
            Message::Start { request_id, .. } => {
                env.current_request.clear();
                env.current_request.push_str(request_id);
                std::mem::take(&mut env.cold_next)
            }
            Message::End { request_id } => {
                if env.current_request == **request_id {
                    env.current_request.clear();
                }
                false
            }
            _ => false,
        };
        match message {
            Message::InitStart { .. } => {}
            Message::Start { request_id, version, trace_id } => {
                if let Some(pending) = self.entry(request_id, origin, ts) {
                    pending.seen_start = true;
                    pending.start_ts = Some(pending.start_ts.map_or(ts, |t| t.min(ts)));
                    pending.cold_start |= cold;
                    if pending.function_version.is_none() {
                        pending.function_version = version.as_deref().map(str::to_string);
                    }
                    if pending.trace_id.is_none() {
                        pending.trace_id = trace_id.as_deref().map(str::to_string);
                    }
                }
                self.emit_if_complete(request_id, out);
            }
            Message::End { request_id } => {
                if let Some(pending) = self.entry(request_id, origin, ts) {
                    pending.end_ts = Some(pending.end_ts.map_or(ts, |t| t.max(ts)));
                }
            }
            Message::Report(report) => {
                if let Some(pending) = self.entry(&report.request_id, origin, ts) {
                    pending.cold_start |= report.init_duration_ms.is_some() || report.restore_duration_ms.is_some();
                    if pending.trace_id.is_none() {
                        pending.trace_id = report.trace_id.as_deref().map(str::to_string);
                    }
                    if pending.end_ts.is_none() {
                        pending.end_ts = Some(ts);
                    }
                    pending.report = Some(report.to_static());
                }
                self.emit_if_complete(&report.request_id, out);
            }
            Message::RuntimeDone { request_id, status, error_type } => {
                if let Some(pending) = self.entry(request_id, origin, ts) {
                    set_status(pending, status.as_deref(), error_type.as_deref(), None);
                }
            }
            Message::Timeout { request_id, seconds } => {
                let request_id = request_id
                    .as_deref()
                    .map(str::to_string)
                    .or_else(|| self.current_request(origin.environment()).map(str::to_string));
                if let Some(pending) = request_id.and_then(|id| self.entry(&id, origin, ts)) {
                    let text = seconds
                        .map_or("Task timed out".to_string(), |s| format!("Task timed out after {s:.2} seconds"));
                    set_status(pending, Some("timeout"), Some("Sandbox.Timedout"), Some(&text));
                }
            }
            Message::RuntimeExit { request_id, error, error_type } => {
                let request_id = request_id
                    .as_deref()
                    .map(str::to_string)
                    .or_else(|| self.current_request(origin.environment()).map(str::to_string));
                if let Some(pending) = request_id.and_then(|id| self.entry(&id, origin, ts)) {
                    set_status(pending, Some("crash"), Some(error_type), Some(error));
                }
            }
            Message::App { request_id, level, message, .. } => {
                // Most application lines are neither a trigger event nor an error: leave them at once.
                let trigger = crate::trigger::find_in_message(message);
                let is_error = matches!(level.as_deref(), Some("ERROR" | "FATAL"));
                if trigger.is_none() && !is_error {
                    return;
                }
                let request_id = request_id
                    .as_deref()
                    .map(str::to_string)
                    .or_else(|| self.current_request(origin.environment()).map(str::to_string));
                let Some(request_id) = request_id else { return };
                if let Some(pending) = self.entry(&request_id, origin, ts) {
                    if let Some((trigger, at)) = trigger {
                        if pending.trigger.is_none() {
                            pending.event_payload = Some(bounded(&message[at..], EVENT_PAYLOAD_BYTES_MAX).to_string());
                            pending.trigger = Some(trigger);
                        }
                    } else if is_error && pending.error_message.is_none() {
                        pending.error_message = Some(bounded(message, ERROR_MESSAGE_BYTES_MAX).to_string());
                        if let Some(error_type) = error_type_of(message) {
                            pending.error_type.get_or_insert(error_type);
                        }
                    }
                }
            }
            Message::InitReport { .. } | Message::PlatformNotice { .. } => {}
        }
    }

    /// Attaches a trace id learned elsewhere (an X-Ray segment naming the request).
    /// Links a span's trace to its request. A trace may come before the request's log lines (another
    /// topic, another lag): it waits for them as long as a pending invocation does, but is never emitted as
    /// an invocation on its own, so that late log lines still make a whole row.
    pub fn link_trace(&mut self, request_id: &str, trace_id: &str, origin: &Origin<'_>, ts: i64) {
        if self.emitted.contains(&self.id_hash(request_id)) {
            return;
        }
        self.make_pending(request_id, origin, ts, false);
        let pending = self.pending.get_mut(request_id).expect("made above");
        pending.trace_id.get_or_insert_with(|| trace_id.to_string());
        pending.last_ts = pending.last_ts.max(ts);
    }

    fn emit_if_complete(&mut self, request_id: &str, out: &mut TableBuilder) {
        if let Some((key, _)) =
            self.pending.get_key_value(request_id).filter(|(_, p)| p.seen_start && p.report.is_some())
        {
            self.completed.push(Arc::clone(key));
        }
        self.enforce_limit(out);
    }

    /// Emits the invocations whose `START` and `REPORT` have both been seen.
    pub fn emit_completed(&mut self, out: &mut TableBuilder) {
        for request_id in std::mem::take(&mut self.completed) {
            self.emit(&request_id, out);
        }
    }

    fn enforce_limit(&mut self, out: &mut TableBuilder) {
        while self.pending.len() > self.pending_max {
            let Some(oldest) = self.arrival.pop_front() else { break };
            if self.pending.contains_key(&oldest) {
                self.stats.evicted += 1;
                self.emit(&oldest, out);
            }
        }
        // The arrival queue also holds ids emitted on completion; trim it when it outgrows the map.
        if self.arrival.len() > self.pending.len() * 2 + 1024 {
            let pending = &self.pending;
            self.arrival.retain(|id| pending.contains_key(id));
        }
    }

    /// Emits every invocation whose last part is `grace` older than the newest line of its log stream,
    /// or `QUIET_GRACE_FACTOR` times `grace` older than `watermark_micros`, the newest event time of all.
    /// A trace waiting for its request's lines has no stream: it waits `grace` behind the watermark.
    pub fn flush_older_than(&mut self, watermark_micros: i64, out: &mut TableBuilder) {
        let grace = self.grace_micros;
        let quiet_cutoff = watermark_micros.saturating_sub(grace.saturating_mul(QUIET_GRACE_FACTOR));
        let environments = &self.environments;
        let due: Vec<Arc<str>> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                if p.last_ts < quiet_cutoff {
                    return true;
                }
                if !p.logged {
                    return p.last_ts < watermark_micros.saturating_sub(grace);
                }
                let environment = p.log_stream.as_deref().unwrap_or(&p.source);
                environments.get(environment).is_some_and(|env| p.last_ts < env.newest_ts.saturating_sub(grace))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.emit(&id, out);
        }
    }

    /// Emits every pending invocation: the input ended.
    pub fn flush_all(&mut self, out: &mut TableBuilder) {
        let all: Vec<Arc<str>> = self.pending.keys().cloned().collect();
        for id in all {
            self.emit(&id, out);
        }
        self.arrival.clear();
    }

    fn emit(&mut self, request_id: &str, out: &mut TableBuilder) {
        let Some(p) = self.pending.remove(request_id) else { return };
        if !p.logged {
            // Only a trace: its request's lines may still come and make the row.
            self.stats.traces_unmatched += 1;
            return;
        }
        self.stats.emitted += 1;
        let hash = self.id_hash(request_id);
        if self.emitted.insert(hash) {
            self.emitted_order.push_back(hash);
            while self.emitted_order.len() > self.emitted_memory {
                if let Some(old) = self.emitted_order.pop_front() {
                    self.emitted.remove(&old);
                }
            }
        }
        let report = p.report.clone().unwrap_or_default();
        let status = final_status(&p);
        let error_type =
            p.error_type.clone().or_else(|| report.error_type.as_deref().map(str::to_string)).or_else(|| {
                (status == "crash"
                    && report.max_memory_used_mb.is_some()
                    && report.max_memory_used_mb == report.memory_size_mb)
                    .then(|| "Runtime.OutOfMemory".to_string())
            });
        let start = p.start_ts.or_else(|| {
            let end = p.end_ts?;
            Some(end - report.duration_ms.map_or(0, |d| (d * 1000.0) as i64))
        });
        let ts = start.unwrap_or(p.last_ts);
        let trigger = p.trigger.as_ref();
        let function_name = p.function_name.as_deref().unwrap_or("unknown");
        let trace_id = p.trace_id.as_deref().map(crate::trace::canonical_id);
        InvocationRow::<Borrowed> {
            ts,
            end_ts: p.end_ts,
            account: p.account.as_deref(),
            region: p.region.as_deref(),
            function_name,
            function_version: p.function_version.as_deref(),
            request_id,
            log_group: p.log_group.as_deref(),
            log_stream: p.log_stream.as_deref(),
            cold_start: Some(p.cold_start),
            init_duration_ms: report.init_duration_ms,
            restore_duration_ms: report.restore_duration_ms,
            duration_ms: report.duration_ms,
            billed_duration_ms: report.billed_duration_ms,
            memory_size_mb: report.memory_size_mb,
            max_memory_used_mb: report.max_memory_used_mb,
            status: Some(status),
            error_type: error_type.as_deref(),
            error_message: p.error_message.as_deref(),
            trace_id: trace_id.as_deref(),
            trigger: Some(trigger.map_or("unknown", |t| t.trigger)),
            source_ip: trigger.and_then(|t| t.source_ip.as_deref()),
            user_agent: trigger.and_then(|t| t.user_agent.as_deref()),
            principal: trigger.and_then(|t| t.principal.as_deref()),
            http_method: trigger.and_then(|t| t.http_method.as_deref()),
            http_path: trigger.and_then(|t| t.http_path.as_deref()),
            event_payload: p.event_payload.as_deref(),
            ingest_source: Some(&*p.source),
            ingest_position: Some(&p.position),
        }
        .push_to(out);
    }
}

/// Records the strongest outcome seen: crash and timeout beat error, error beats success.
fn set_status(pending: &mut Pending, status: Option<&str>, error_type: Option<&str>, message: Option<&str>) {
    let rank = |s: &str| match s {
        "crash" => 4,
        "timeout" => 3,
        "error" => 2,
        _ => 1,
    };
    if let Some(status) = status.map(normalise_status) {
        if pending.status.as_deref().is_none_or(|current| rank(status) > rank(current)) {
            pending.status = Some(status.to_string());
            if let Some(error_type) = error_type {
                pending.error_type = Some(error_type.to_string());
            }
            if let Some(message) = message {
                pending.error_message = Some(bounded(message, ERROR_MESSAGE_BYTES_MAX).to_string());
            }
        }
    }
}

/// Lambda's status words in both formats, to this table's: success, error, timeout, crash, throttled.
fn normalise_status(status: &str) -> &'static str {
    match status {
        "success" => "success",
        "timeout" => "timeout",
        "failure" | "crash" => "crash",
        "throttled" => "throttled",
        _ => "error",
    }
}

fn final_status(pending: &Pending) -> &'static str {
    let from_report = pending.report.as_ref().and_then(|r| r.status.as_deref()).map(normalise_status);
    let from_parts = pending.status.as_deref().map(normalise_status);
    let status = match (from_report, from_parts) {
        (Some("success"), Some(parts)) => parts,
        (Some(report), _) => report,
        (None, Some(parts)) => parts,
        (None, None) if pending.report.is_some() => {
            if pending.error_message.is_some() {
                "error"
            } else {
                "success"
            }
        }
        (None, None) => "unknown",
    };
    if status == "success" && pending.error_type.is_some() {
        return "error";
    }
    status
}

/// The error type at the start of an error line: `Runtime.ImportModuleError: …`, `TypeError: …`,
/// `{"errorType":"…"}`.
fn error_type_of(message: &str) -> Option<String> {
    if let Some(at) = message.find("\"errorType\":\"") {
        let rest = &message[at + 13..];
        return rest.split('"').next().map(str::to_string);
    }
    let head = message.split([':', '\n']).next()?.trim();
    let looks_like_type = !head.is_empty()
        && head.len() <= 80
        && !head.contains(' ')
        && head.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && (head.contains("Error") || head.contains("Exception"));
    looks_like_type.then(|| head.to_string())
}

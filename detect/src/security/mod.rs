//! Security detections for serverless attacks, over `invocations`, `logs` and `cloudtrail` rows, streaming
//! and as a retro-hunt through the same code (`SecurityDetections::push`).
//!
//! - `injection` (with `decode`): event injection in trigger payloads and logged input.
//! - `controlplane`: risky Lambda changes, trail tampering, execution-role credentials used outside Lambda.
//! - `behaviour`: authorization-failure bursts, new callers, crypto-mining and denial of wallet.
//! - `sigma`: Sigma rules over CloudTrail records and Lambda log lines.
//!
//! Every detection is in `CATALOG` with a stable id, a severity, ATT&CK technique ids and what to check
//! next. Alert ids come from the detection, the entity and the evidence key (or the event-time window),
//! never from when the record was processed, so a replay raises the same ids as the stream did.

pub mod behaviour;
pub mod controlplane;
pub mod decode;
pub mod injection;
pub mod prescan;
pub mod rows;
pub mod sigma;

use std::collections::{BTreeMap, HashSet, VecDeque};

use arrow::array::RecordBatch;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::Table;

use crate::alert::{alert_id, sql_literal, Alert};
use crate::{DetectError, Severity};
use behaviour::Behaviour;
pub use behaviour::BehaviourConfig;
use controlplane::ControlPlane;
use injection::InjectionMatcher;
use rows::CloudTrailEvent;
pub use sigma::SigmaRules;
use store::alerts::{Entity, EntityKind};
use store::tables::{Borrowed, InvocationRow, LogRow};

/// One detection of the catalog.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CatalogEntry {
    pub id: &'static str,
    pub title: &'static str,
    pub severity: Severity,
    pub attack: &'static [&'static str],
    /// What an analyst checks next.
    pub next: &'static str,
}

const fn detection(
    id: &'static str,
    title: &'static str,
    severity: Severity,
    attack: &'static [&'static str],
    next: &'static str,
) -> CatalogEntry {
    CatalogEntry { id, title, severity, attack, next }
}

/// Every built-in detection (Sigma rules bring their own).
pub const CATALOG: &[CatalogEntry] = &[
    detection("injection.sql", "SQL injection in function input", Severity::Medium, &["T1190"], "Run timeline() on the request id; check the function's logs for database errors and the response size, and other requests from the same address."),
    detection("injection.command", "OS command injection in function input", Severity::High, &["T1190", "T1059"], "Check the request's logs for command output, outbound connections in its trace, and environment() of its execution environment for later invocations."),
    detection("injection.path_traversal", "Path traversal or local file read in function input", Severity::Medium, &["T1190", "T1083"], "Check whether the response carried file contents (/proc/self/environ holds the role credentials) and whether those credentials were used afterwards."),
    detection("injection.metadata_ssrf", "Server-side request forgery to a metadata endpoint", Severity::High, &["T1190", "T1552.005"], "Look for the function's role session in cloudtrail from addresses outside Lambda (credentials.outside_lambda) after this request."),
    detection("injection.jndi", "JNDI lookup (Log4Shell) in function input", Severity::High, &["T1190", "T1203"], "Check spans and logs of the request for outbound LDAP/RMI/DNS connections and class loading."),
    detection("injection.template", "Server-side template injection in function input", Severity::Medium, &["T1190", "T1059"], "Check whether the response evaluated the expression (49 for 7*7) and what later requests from the address sent."),
    detection("injection.xxe", "XML external entity in function input", Severity::Medium, &["T1190"], "Check the response and outbound requests of the invocation for resolved entities (file contents, metadata)."),
    detection("injection.deserialization", "Deserialization gadget in function input", Severity::High, &["T1190", "T1059"], "Check for errors naming the gadget classes, new child processes or outbound connections during the invocation."),
    detection("injection.nosql", "NoSQL operator injection in function input", Severity::Medium, &["T1190"], "Check whether the request authenticated or returned more records than usual; look at other requests from the address."),
    detection("injection.xss", "Cross-site scripting in function input (stored payloads reach front ends)", Severity::Medium, &["T1189", "T1059.007"], "Check where the function stores the field and which pages render it; look for the same address probing other fields."),
    detection("access.denied_burst", "Burst of authorization failures", Severity::Medium, &["T1110", "T1580"], "Run timeline() on the principal or address: what did it try, and did any call succeed after the failures?"),
    detection("callers.new", "New caller of a function after its callers were learned", Severity::Low, &["T1078"], "Check who owns the new principal, network or client; compare its requests with the function's usual callers."),
    detection("resource.cryptomining", "Function pinned at long durations and full memory (crypto-mining)", Severity::High, &["T1496"], "Compare the code sha256 of the running version with the last deployment; look for UpdateFunctionCode and new layers before the change."),
    detection("resource.denial_of_wallet", "Function cost surge (denial of wallet)", Severity::High, &["T1496", "T1499.003"], "Find the callers responsible (group invocations by source_ip and principal) and whether the function is publicly reachable (function URL, AddPermission)."),
    detection("lambda.public_permission", "Lambda function made invocable by everyone or another account", Severity::High, &["T1098", "T1648"], "Review the function's policy (GetPolicy); check who added the statement and invocations from new callers since."),
    detection("lambda.url_without_auth", "Lambda function URL without authentication", Severity::High, &["T1190", "T1648"], "Check whether the URL was intended to be public and what has called it since (invocations with trigger function-url)."),
    detection("lambda.code_by_new_principal", "Lambda code replaced by a principal that never deployed it", Severity::High, &["T1648", "T1525"], "Compare the new code sha256 with the build pipeline's artifacts; run timeline() on the principal and its access key."),
    detection("lambda.layer_added", "Layer or extension added to a Lambda function", Severity::Medium, &["T1648", "T1546"], "Inspect the layer's content and owner account; extensions run with the function's role and see every event."),
    detection("lambda.role_swapped", "Lambda function's execution role changed or privileged", Severity::High, &["T1098.003"], "Review the new role's policies and what the function did with it since."),
    detection("lambda.runtime_hijack", "Lambda environment variable that loads code before the handler", Severity::High, &["T1574"], "Check the variable's value and the layer or path it points to."),
    detection("lambda.privileged_role", "Lambda function created with a privileged role", Severity::High, &["T1098.003", "T1648"], "Check who passed the role (iam:PassRole) and whether the function was invoked."),
    detection("lambda.concurrency_zero", "Lambda function throttled to zero concurrency", Severity::Medium, &["T1489"], "Check who set it and whether a security tool or an attacker disabled the function."),
    detection("trail.stopped", "CloudTrail logging stopped", Severity::Critical, &["T1562.008"], "Restart logging; run timeline() on the principal for what it did while the trail was off."),
    detection("trail.deleted", "CloudTrail trail deleted", Severity::Critical, &["T1562.008"], "Recreate the trail; look for the principal's other activity around the deletion."),
    detection("trail.selectors_reduced", "CloudTrail event selectors reduced", Severity::High, &["T1562.008"], "Restore the selectors; find what the dropped events would have recorded since."),
    detection("trail.weakened", "CloudTrail trail coverage weakened", Severity::Medium, &["T1562.008"], "Restore the trail's settings and check the principal's other changes."),
    detection("credentials.outside_lambda", "Lambda execution-role credentials used outside Lambda", Severity::Critical, &["T1078.004", "T1552.001"], "Revoke the role's sessions; timeline() the access key id for everything done with it, and find the invocation that leaked it."),
];

/// The catalog entry of a detection id.
pub fn catalog(id: &str) -> Option<&'static CatalogEntry> {
    CATALOG.iter().find(|d| d.id == id)
}

/// What a detection found, before it becomes an alert.
#[derive(Debug, Clone, Default)]
pub struct Finding {
    pub detection: &'static str,
    pub ts_us: i64,
    pub function: Option<String>,
    pub entity: String,
    /// What makes the finding unique within its detection and entity (an event id, a request id and class).
    pub key: String,
    /// A windowed finding: its id comes from the window.
    pub window: bool,
    pub window_start_us: i64,
    pub window_end_us: i64,
    pub count: i64,
    pub detail: String,
    pub observed: Value,
    pub expected: Value,
    pub evidence: Vec<String>,
    pub principal: Option<String>,
    pub severity: Option<Severity>,
    /// For a Sigma rule: its id, title, level and techniques.
    pub sigma: Option<(String, String, Severity, Vec<String>)>,
    /// What the finding is about, beyond its function and principal: for a finding in one row, the
    /// row's entities (`SecurityDetections::push` adds them).
    pub entities: Vec<Entity>,
}

impl Finding {
    /// Its entities with its function and principal, each once, in order.
    fn all_entities(&self) -> Vec<Entity> {
        let mut entities = self.entities.clone();
        entities.extend(self.function.iter().map(|f| Entity(EntityKind::Function, f.clone())));
        entities.extend(self.principal.iter().map(|p| Entity(EntityKind::Principal, rows::actor_of(p))));
        entities.sort();
        entities.dedup();
        entities
    }

    fn detection_id(&self) -> String {
        match &self.sigma {
            Some((id, ..)) => format!("sigma.{id}"),
            None => self.detection.to_string(),
        }
    }

    /// The alert of this finding.
    pub fn alert(&self) -> Alert {
        let detector = self.detection_id();
        let (title, severity, attack, next) = match (&self.sigma, catalog(self.detection)) {
            (Some((_, title, level, attack)), _) => (title.clone(), *level, attack.clone(), None),
            (None, Some(d)) => {
                (d.title.to_string(), d.severity, d.attack.iter().map(|s| s.to_string()).collect(), Some(d.next))
            }
            (None, None) => (self.detection.to_string(), Severity::Medium, Vec::new(), None),
        };
        let severity = self.severity.unwrap_or(severity);
        let (start, end) =
            if self.window { (self.window_start_us, self.window_end_us) } else { (self.ts_us, self.ts_us) };
        let id_window = if self.window { self.window_start_us } else { 0 };
        let mut expected = match &self.expected {
            Value::Object(map) => Value::Object(map.clone()),
            Value::Null => json!({}),
            other => json!({"expected": other}),
        };
        if let Some(next) = next {
            expected["next"] = json!(next);
        }
        let query = match (&self.principal, self.evidence.first()) {
            (Some(principal), _) => format!("SELECT * FROM timeline({})", sql_literal(principal)),
            (None, Some(key)) => format!("SELECT * FROM timeline({})", sql_literal(key)),
            (None, None) => format!("SELECT * FROM alerts WHERE detector = {}", sql_literal(&detector)),
        };
        Alert {
            ts_us: self.ts_us,
            alert_id: alert_id(&detector, &format!("{}\u{0}{}", self.entity, self.key), id_window),
            title: if self.detail.is_empty() { title } else { format!("{title}: {}", self.detail) },
            detector,
            severity,
            function: self.function.clone(),
            entity: Some(self.entity.clone()),
            window_start_us: start,
            window_end_us: end,
            score: match severity {
                Severity::Critical => 1.0,
                Severity::High => 0.9,
                Severity::Medium => 0.7,
                Severity::Low => 0.5,
            },
            count: self.count.max(1),
            observed: self.observed.clone(),
            expected,
            evidence: self.evidence.clone(),
            attack_ids: attack,
            query,
            entities: self.all_entities(),
        }
    }
}

/// Tunables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityConfig {
    pub behaviour: BehaviourConfig,
    /// How long an account's CloudTrail is watched before the rules that compare with history (a new
    /// deployer, layer or role) report (`controlplane::LEARNING_US_DEFAULT`, 7 days).
    pub learning_us: i64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig { behaviour: BehaviourConfig::default(), learning_us: controlplane::LEARNING_US_DEFAULT }
    }
}

/// How far the learning period of one account has come.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Learning {
    pub account: String,
    /// The span of the account's CloudTrail watched, in event time.
    pub watched_us: i64,
    pub required_us: i64,
}

impl Learning {
    pub fn learned(&self) -> bool {
        self.watched_us >= self.required_us
    }
}

/// `account 123456789012 2.5 of 7.0 days of CloudTrail watched; …` as `coldtrail info` prints it.
impl std::fmt::Display for Learning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let account = if self.account.is_empty() { "(records without an account)" } else { &self.account };
        let days = |us: i64| us as f64 / 86_400e6;
        if self.learned() {
            write!(f, "account {account} learned ({:.1} days of CloudTrail watched)", days(self.watched_us))
        } else {
            write!(
                f,
                "account {account} {:.1} of {:.1} days of CloudTrail watched; first-seen detections quiet until then",
                days(self.watched_us),
                days(self.required_us)
            )
        }
    }
}

/// Counts of what the security detections looked at and found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SecurityStats {
    pub cloudtrail_events: u64,
    pub invocations: u64,
    pub log_lines: u64,
    pub findings: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    controlplane: ControlPlane,
    behaviour: Behaviour,
    /// The alert ids reported, oldest first (bounded by `REPORTED_MAX`): a finding seen again after a
    /// restart is not reported twice.
    #[serde(default)]
    reported: VecDeque<String>,
}

const STATE_VERSION: u32 = 1;
/// Findings remembered so that one request's injection is one alert, whether seen in its payload or its logs.
const REPORTED_MAX: usize = 200_000;

/// The security detections over stored rows.
pub struct SecurityDetections {
    config: SecurityConfig,
    injection: InjectionMatcher,
    /// Texts a pre-scan found clean (`prescan`): their injection scan is skipped.
    clean: std::sync::Arc<prescan::CleanTexts>,
    sigma: SigmaRules,
    state: State,
    /// The ids of `state.reported`, for lookups.
    reported: HashSet<String>,
    stats: SecurityStats,
    /// Set while late rows are pushed (`push_late`): the detections that learn or window are skipped.
    late: bool,
}

impl SecurityDetections {
    /// The tables the detections read.
    pub const TABLES: [Table; 3] = [Table::Cloudtrail, Table::Invocations, Table::Logs];

    pub fn new(config: SecurityConfig, sigma: SigmaRules) -> Self {
        SecurityDetections {
            injection: InjectionMatcher::new(),
            clean: Default::default(),
            sigma,
            state: State {
                version: STATE_VERSION,
                behaviour: Behaviour::new(config.behaviour.clone()),
                ..State::default()
            },
            config,
            reported: HashSet::new(),
            stats: SecurityStats::default(),
            late: false,
        }
    }

    /// The clean texts the injection scan skips, for a pre-scan to note into (`prescan::Prescan`).
    pub fn clean_texts(&self) -> std::sync::Arc<prescan::CleanTexts> {
        self.clean.clone()
    }

    /// Restores learned state (deployers, callers, baselines) from what `checkpoint` wrote.
    pub fn restore_state(&mut self, bytes: &[u8]) -> Result<(), DetectError> {
        let mut state: State = serde_json::from_slice(bytes).map_err(|e| DetectError::Checkpoint(e.to_string()))?;
        if state.version != STATE_VERSION {
            return Err(DetectError::Checkpoint(format!(
                "security state version {} is not {STATE_VERSION}",
                state.version
            )));
        }
        state.behaviour.set_config(self.config.behaviour.clone());
        self.reported = state.reported.iter().cloned().collect();
        self.state = state;
        Ok(())
    }

    pub fn checkpoint(&self) -> Result<Vec<u8>, DetectError> {
        serde_json::to_vec(&self.state).map_err(|e| DetectError::Checkpoint(e.to_string()))
    }

    pub fn stats(&self) -> &SecurityStats {
        &self.stats
    }

    pub fn config(&self) -> &SecurityConfig {
        &self.config
    }

    /// The learning period's progress for every account whose CloudTrail was seen.
    pub fn learning(&self) -> Vec<Learning> {
        self.state
            .controlplane
            .watched()
            .iter()
            .map(|(account, watched)| Learning {
                account: account.clone(),
                watched_us: watched.span_us(),
                required_us: self.config.learning_us,
            })
            .collect()
    }

    pub fn sigma(&self) -> &SigmaRules {
        &self.sigma
    }

    /// Runs every detection over one batch of `table` and appends the alerts raised.
    pub fn push(&mut self, table: Table, batch: &RecordBatch, out: &mut Vec<Alert>) {
        let mut findings = Vec::new();
        match table {
            Table::Cloudtrail => {
                for event in CloudTrailEvent::rows(batch) {
                    self.stats.cloudtrail_events += 1;
                    let from = findings.len();
                    self.cloudtrail(&event, &mut findings);
                    about(&mut findings[from..], || event.entities());
                }
            }
            Table::Invocations => {
                let Ok(columns) = InvocationRow::columns(batch) else { return };
                let rows = rows::invocations(&columns);
                let (matcher, clean) = (&self.injection, &*self.clean);
                let hits = on_cores(&rows, |row| invocation_hits(matcher, clean, row));
                for (row, hits) in rows.iter().zip(hits) {
                    self.stats.invocations += 1;
                    let from = findings.len();
                    self.invocation(row, hits, &mut findings);
                    about(&mut findings[from..], || rows::invocation_entities(row));
                }
            }
            Table::Logs => {
                let Ok(columns) = LogRow::columns(batch) else { return };
                let rows = rows::logs(&columns);
                let (matcher, clean) = (&self.injection, &*self.clean);
                let hits = on_cores(&rows, |row| log_hits(matcher, clean, row));
                for (row, hits) in rows.iter().zip(hits) {
                    self.stats.log_lines += 1;
                    let from = findings.len();
                    self.log(row, hits, &mut findings);
                    about(&mut findings[from..], || rows::log_entities(row));
                }
            }
            _ => {}
        }
        for finding in findings {
            let alert = finding.alert();
            if self.remember(&alert.alert_id) {
                *self.stats.findings.entry(alert.detector.clone()).or_default() += 1;
                out.push(alert);
            }
        }
    }

    /// Learns the function names of invocations another detection partition scores (`cluster`): a role
    /// session named after one is then recognised.
    pub fn note_functions(&mut self, batch: &RecordBatch) {
        let Ok(columns) = InvocationRow::columns(batch) else { return };
        for row in (0..columns.rows()).map(|i| InvocationRow::read(&columns, i)) {
            self.state.controlplane.note_function(row.function_name);
        }
    }

    /// Rows that came after their minute was scored: only the detections that need no order and learn
    /// nothing run over them (injection, Sigma), so that a late row neither corrupts learned state nor goes
    /// unexamined. The control plane's and the windowed detections see rows in event-time order only.
    pub fn push_late(&mut self, table: Table, batch: &RecordBatch, out: &mut Vec<Alert>) {
        self.late = true;
        self.push(table, batch, out);
        self.late = false;
    }

    /// True the first time an alert id is seen (within the bounded memory).
    fn remember(&mut self, id: &str) -> bool {
        if self.reported.contains(id) {
            return false;
        }
        if self.state.reported.len() >= REPORTED_MAX {
            if let Some(old) = self.state.reported.pop_front() {
                self.reported.remove(&old);
            }
        }
        self.reported.insert(id.to_string());
        self.state.reported.push_back(id.to_string());
        true
    }

    fn cloudtrail(&mut self, event: &CloudTrailEvent, out: &mut Vec<Finding>) {
        if !self.late {
            self.state.controlplane.observe(event, self.config.learning_us, out);
            self.state.behaviour.cloudtrail(event, out);
        } else {
            controlplane::ControlPlane::observe_late(event, out);
        }
        if !self.sigma.is_empty() {
            for rule in self.sigma.matching_fields(sigma::Target::CloudTrail, |keep| event.record_of(keep)) {
                out.push(Finding {
                    detection: "sigma",
                    ts_us: event.ts_us,
                    function: event.param("functionName").map(|f| controlplane::function_name(f).to_string()),
                    entity: event.actor().unwrap_or_default(),
                    key: event.key(),
                    detail: format!("{} by {}", event.event_name, event.principal_arn.as_deref().unwrap_or("?")),
                    observed: json!({"rule": rule.source, "eventName": event.event_name, "eventSource": event.event_source, "sourceIPAddress": event.source_ip, "requestParameters": event.request}),
                    expected: json!({"description": rule.description}),
                    evidence: vec![event.key()],
                    principal: event.principal_arn.clone(),
                    sigma: Some((rule.id.clone(), rule.title.clone(), rule.severity, rule.attack.clone())),
                    ..Finding::default()
                });
            }
        }
    }

    fn injection_findings(&self, hits: Vec<injection::Hit>, base: &Finding, out: &mut Vec<Finding>) {
        for hit in hits {
            out.push(Finding {
                detection: hit.class.detection(),
                key: format!("{}|{}", base.key, hit.class.name()),
                detail: format!("{} in {}", hit.rule, hit.field),
                observed: json!({"field": hit.field, "decoded": hit.snippet, "rule": hit.rule}),
                ..base.clone()
            });
        }
    }

    fn invocation(&mut self, row: &InvocationRow<Borrowed>, hits: Vec<injection::Hit>, out: &mut Vec<Finding>) {
        if !self.late {
            self.state.controlplane.note_function(row.function_name);
            self.state.behaviour.invocation(row, out);
        }
        if hits.is_empty() {
            return;
        }
        // The entity is the function: the same request seen in its logs (without its address) must
        // get the same alert id.
        let base = Finding {
            ts_us: row.ts,
            function: Some(row.function_name.to_string()),
            entity: row.function_name.to_string(),
            key: row.request_id.to_string(),
            evidence: vec![row.request_id.to_string()],
            principal: row.principal.map(str::to_string),
            ..Finding::default()
        };
        self.injection_findings(hits, &base, out);
    }

    fn log(&mut self, row: &LogRow<Borrowed>, hits: Vec<injection::Hit>, out: &mut Vec<Finding>) {
        if !self.late {
            self.state.behaviour.log(row, out);
        }
        let Some(function) = row.function_name.map(str::to_string) else { return };
        if row.message.starts_with("START RequestId")
            || row.message.starts_with("END RequestId")
            || row.message.starts_with("REPORT RequestId")
        {
            return;
        }
        if !hits.is_empty() {
            let key =
                row.request_id.map_or_else(|| format!("{}@{}", row.log_stream.unwrap_or("?"), row.ts), str::to_string);
            let base = Finding {
                ts_us: row.ts,
                function: Some(function.clone()),
                entity: function.clone(),
                key: key.clone(),
                evidence: vec![key],
                ..Finding::default()
            };
            self.injection_findings(
                hits.into_iter().map(|h| injection::Hit { field: format!("log message ({})", h.field), ..h }).collect(),
                &base,
                out,
            );
        }
        if !self.sigma.is_empty() {
            for rule in self.sigma.matching_fields(sigma::Target::LambdaLogs, |keep| rows::log_record_of(row, keep)) {
                let key = row
                    .request_id
                    .map_or_else(|| format!("{}@{}", row.log_stream.unwrap_or("?"), row.ts), str::to_string);
                out.push(Finding {
                    detection: "sigma",
                    ts_us: row.ts,
                    function: Some(function.clone()),
                    entity: function.clone(),
                    key: key.clone(),
                    detail: format!("in {function}'s log"),
                    observed: json!({"rule": rule.source, "message": row.message.chars().take(500).collect::<String>()}),
                    expected: json!({"description": rule.description}),
                    evidence: vec![key],
                    sigma: Some((rule.id.clone(), rule.title.clone(), rule.severity, rule.attack.clone())),
                    ..Finding::default()
                });
            }
        }
    }
}

/// The injection found in an invocation's payload, path and user agent: what needs no state, so it
/// is found for a batch's rows on every core (`on_cores`).
fn invocation_hits(
    matcher: &InjectionMatcher,
    clean: &prescan::CleanTexts,
    row: &InvocationRow<Borrowed>,
) -> Vec<injection::Hit> {
    let mut hits = Vec::new();
    if let Some(payload) = row.event_payload {
        if !clean.is_clean(prescan::Scanned::Payload, payload) {
            hits = matcher.scan_payload(payload);
        }
    }
    for (field, text) in [("http_path", row.http_path), ("user_agent", row.user_agent)] {
        if let Some(text) = text {
            let mut more = Vec::new();
            matcher.scan_text(field, text, &mut more);
            hits.extend(more.into_iter().filter(|h| !hits.iter().any(|k| k.class == h.class)).collect::<Vec<_>>());
        }
    }
    hits
}

/// The injection found in an application log line (none in platform lines, START, END and REPORT,
/// which carry no input, nor in lines of no function).
fn log_hits(matcher: &InjectionMatcher, clean: &prescan::CleanTexts, row: &LogRow<Borrowed>) -> Vec<injection::Hit> {
    match prescan::log_line_scanned(row) {
        Some(text) if !clean.is_clean(prescan::Scanned::LogLine, &text) => matcher.scan_payload(&text),
        _ => Vec::new(),
    }
}

/// Gives the findings of one row that row's entities. A windowed finding, which a row closes but is
/// about the window's rows, keeps only its own.
fn about(findings: &mut [Finding], entities: impl Fn() -> Vec<Entity>) {
    for finding in findings.iter_mut().filter(|f| !f.window) {
        finding.entities.extend(entities());
    }
}

/// Rows of one batch at least this many are scanned on every core.
const ROWS_PER_CORE_MIN: usize = 256;

/// `scan` of every row, in row order, the rows shared out over the machine's cores (scoped threads)
/// when there are enough of them: the per-row detections are pure, and the injection scan of every
/// application line is most of what detection costs (BENCHMARKS.md).
fn on_cores<R: Sync, T: Send>(rows: &[R], scan: impl Fn(&R) -> T + Sync) -> Vec<T> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_core = rows.len().div_ceil(cores).max(ROWS_PER_CORE_MIN);
    if cores == 1 || rows.len() <= per_core {
        return rows.iter().map(&scan).collect();
    }
    std::thread::scope(|scope| {
        let scan = &scan;
        let mut parts = rows.chunks(per_core);
        let first = parts.next().unwrap_or_default();
        let others: Vec<_> = parts.map(|part| scope.spawn(move || part.iter().map(scan).collect::<Vec<T>>())).collect();
        let mut out: Vec<T> = first.iter().map(scan).collect();
        for other in others {
            out.extend(other.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_scanned_on_every_core_come_back_in_row_order() {
        let rows: Vec<u64> = (0..10_001).collect();
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        let out = on_cores(&rows, |row| {
            threads.lock().unwrap().insert(std::thread::current().id());
            row * 3
        });
        assert_eq!(out, rows.iter().map(|row| row * 3).collect::<Vec<_>>());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(threads.lock().unwrap().len(), cores.min(10_001 / ROWS_PER_CORE_MIN));
        assert_eq!(on_cores(&rows[..10], |row| row + 1), (1..11).collect::<Vec<u64>>(), "few rows: on this thread");
    }

    fn log_alerts(message: &str) -> Vec<Alert> {
        use store::rows::{TableBuilder, Value as Cell};
        let mut builder = TableBuilder::new(Table::Logs);
        let cells: Vec<Cell> = Table::Logs
            .schema()
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "ts" => Cell::Time(Some(1_000_000)),
                "function_name" => Cell::Text(Some("orders-api")),
                "request_id" => Cell::Text(Some("r1")),
                "level" => Cell::Text(Some("ERROR")),
                "message" => Cell::Text(Some(message)),
                _ => match f.data_type() {
                    arrow::datatypes::DataType::Timestamp(..) => Cell::Time(None),
                    arrow::datatypes::DataType::Boolean => Cell::Bool(None),
                    arrow::datatypes::DataType::Int64 => Cell::Int(None),
                    _ => Cell::Text(None),
                },
            })
            .collect();
        builder.push(&cells);
        let mut security = SecurityDetections::new(SecurityConfig::default(), SigmaRules::default());
        let mut alerts = Vec::new();
        security.push(Table::Logs, &builder.finish().unwrap(), &mut alerts);
        alerts
    }

    #[test]
    fn stack_traces_naming_the_functions_own_code_are_not_file_reads() {
        for message in [
            r#"2024-03-05T10:00:00.000Z	r1	ERROR	Invoke Error 	{"errorType":"Error","errorMessage":"boom","stackTrace":["    at handler (/var/task/index.js:42:11)","    at process (/var/runtime/index.mjs:1:1)"]}"#,
            r#"[ERROR] KeyError: 'id' Traceback (most recent call last): File "/var/task/app.py", line 12, in handler"#,
        ] {
            let alerts = log_alerts(message);
            assert!(alerts.is_empty(), "{message}: {alerts:?}");
        }
        // Input that names a sensitive file is still one.
        let alerts = log_alerts("2024-03-05T10:00:00.000Z\tr1\tINFO\tfile=../../../../etc/passwd");
        assert!(alerts.iter().any(|a| a.detector == "injection.path_traversal"), "{alerts:?}");
    }

    #[test]
    fn the_catalog_is_complete_and_unique() {
        let mut ids: Vec<&str> = CATALOG.iter().map(|d| d.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CATALOG.len());
        for d in CATALOG {
            assert!(!d.attack.is_empty() && !d.next.is_empty(), "{}", d.id);
            assert!(d.attack.iter().all(|a| a.starts_with('T')), "{}", d.id);
        }
        for class in injection::Class::ALL {
            assert!(catalog(class.detection()).is_some());
        }
    }

    /// One CloudTrail row: the given columns set, the others null.
    fn cloudtrail_event(source: &str, name: &str, actor: &str, request: &str, id: &str) -> arrow::array::RecordBatch {
        let row = store::tables::CloudtrailRow::<Borrowed> {
            event_time: 1_000_000,
            event_source: Some(source),
            event_name: Some(name),
            principal_arn: Some(actor),
            request_parameters: Some(request),
            event_id: Some(id),
            source_ip: Some("198.51.100.7"),
            access_key_id: Some("AKIAEXAMPLE"),
            ..Default::default()
        };
        store::tables::CloudtrailRow::batch(&[row]).unwrap()
    }

    #[test]
    fn alerts_name_the_entities_of_the_rows_they_were_found_in() {
        let mut security = SecurityDetections::new(SecurityConfig::default(), SigmaRules::default());
        let mut alerts = Vec::new();
        let invocation = InvocationRow::<Borrowed> {
            ts: 1_000_000,
            function_name: "orders-api",
            request_id: "r-1",
            source_ip: Some("203.0.113.9"),
            principal: Some("arn:aws:sts::1:assumed-role/web/session-7"),
            log_stream: Some("2026/12/01/[$LATEST]abc"),
            trace_id: Some(""),
            event_payload: Some(r#"{"q": "1' UNION SELECT password FROM users--"}"#),
            ..Default::default()
        };
        security.push(Table::Invocations, &InvocationRow::batch(&[invocation]).unwrap(), &mut alerts);
        let alert = alerts.iter().find(|a| a.detector == "injection.sql").expect("the injection is found");
        assert_eq!(
            alert.entities,
            vec![
                Entity(EntityKind::Address, "203.0.113.9".into()),
                Entity(EntityKind::Principal, "arn:aws:iam::1:role/web".into()),
                Entity(EntityKind::Function, "orders-api".into()),
                Entity(EntityKind::Environment, "2026/12/01/[$LATEST]abc".into()),
            ],
            "an empty trace id is no entity; a role session is its role"
        );
        alerts.clear();
        let stop = cloudtrail_event("cloudtrail.amazonaws.com", "StopLogging", "arn:aws:iam::1:user/m", "{}", "e-1");
        security.push(Table::Cloudtrail, &stop, &mut alerts);
        assert_eq!(
            alerts[0].entities,
            vec![
                Entity(EntityKind::Address, "198.51.100.7".into()),
                Entity(EntityKind::Principal, "arn:aws:iam::1:user/m".into()),
                Entity(EntityKind::AccessKey, "AKIAEXAMPLE".into()),
            ]
        );
    }

    #[test]
    fn learned_state_survives_a_checkpoint() {
        let batch = cloudtrail_event(
            "lambda.amazonaws.com",
            "UpdateFunctionCode20150331v2",
            "arn:aws:iam::1:user/ci",
            "{\"functionName\":\"f\"}",
            "e1",
        );
        let config = SecurityConfig { learning_us: 0, ..SecurityConfig::default() };
        let mut first = SecurityDetections::new(config.clone(), SigmaRules::default());
        let mut alerts = Vec::new();
        first.push(Table::Cloudtrail, &batch, &mut alerts);
        assert_eq!(alerts.len(), 1, "the first deployer of an unknown function is new");
        let mut second = SecurityDetections::new(config, SigmaRules::default());
        second.restore_state(&first.checkpoint().unwrap()).unwrap();
        alerts.clear();
        second.push(Table::Cloudtrail, &batch, &mut alerts);
        assert!(alerts.is_empty(), "the restored state knows the deployer: {alerts:?}");
        assert!(second.restore_state(b"{not json").is_err());
    }

    /// Late CloudTrail rows (after their minute was scored) still raise the rules that need no history:
    /// before, a late StopLogging or public AddPermission raised nothing. A late deployment teaches and
    /// raises nothing: learning out of order would be wrong.
    #[test]
    fn late_cloudtrail_raises_the_rules_that_need_no_history() {
        let intern = "arn:aws:iam::123456789012:user/intern";
        let event = |source, name, request, id| cloudtrail_event(source, name, intern, request, id);
        let config = SecurityConfig { learning_us: 0, ..SecurityConfig::default() };
        let mut security = SecurityDetections::new(config, SigmaRules::default());
        let mut alerts = Vec::new();
        for batch in [
            event("cloudtrail.amazonaws.com", "StopLogging", r#"{"name":"management"}"#, "late-1"),
            event(
                "lambda.amazonaws.com",
                "AddPermission20150331v2",
                r#"{"functionName":"orders-api","principal":"*","action":"lambda:InvokeFunction"}"#,
                "late-2",
            ),
            event("lambda.amazonaws.com", "UpdateFunctionCode20150331v2", r#"{"functionName":"orders-api"}"#, "late-3"),
        ] {
            security.push_late(Table::Cloudtrail, &batch, &mut alerts);
        }
        let mut detectors: Vec<&str> = alerts.iter().map(|a| a.detector.as_str()).collect();
        detectors.sort();
        assert_eq!(detectors, ["lambda.public_permission", "trail.stopped"], "{alerts:?}");
    }

    #[test]
    fn shipped_sigma_rules_load() {
        let rules = SigmaRules::shipped();
        assert!(rules.len() >= 14, "{}", rules.len());
        assert!(rules.skipped.is_empty());
        assert!(rules.rules().iter().all(|r| !r.attack.is_empty()));
    }
}

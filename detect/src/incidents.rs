//! Incidents: alerts correlated by the entities they share within a time horizon (24 hours by default),
//! the unit an analyst works on.
//!
//! Alerts are linked through correlation keys made from their entities (`store::alerts::Entity`): an
//! address's network (its /24, or /48 for IPv6), a principal, an access key, a function, an execution
//! environment (log stream) or a trace. An alert that shares a key with an incident last seen within the
//! horizon joins it; one that links two incidents merges them into the older, whose id stays (the other
//! gets a last row, `merged`, naming it). A security alert of medium severity or more that joins nothing
//! opens an incident; anomaly alerts and low-severity alerts never open one (a noisy function or a new
//! caller alone is not an attack), but they join one that opens within the horizon on a key they share.
//!
//! An incident's id comes from the alert that opened it, so that the same alerts in the same order give
//! the same incidents, live, replayed or hunted. Its severity is its highest alert's, raised one level
//! when it chains three ATT&CK tactics or more; its tactics are in kill-chain order; its summary is one
//! paragraph generated from its alerts. `Correlator::add` returns the incidents an alert changed, as rows
//! of the `incidents` table, whose latest row per id is the incident's state.
//!
//! Analysts triage incidents (status, assignee, note) by storing rows of their own (`changed_by` set; see
//! `query::procedures`). The correlator learns them (`Correlator::triaged`, fed by `IncidentThread` from the
//! store's appends and, at start, from the stored rows) and carries them on every row it writes later, at
//! a time after theirs, so that the latest row stays the whole state. A resolved incident that grows is
//! open again; one acknowledged or marked a false positive keeps its status.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use store::alerts::{Entity, EntityKind, Severity};
use store::tables::IncidentRow;
use store::{Store, Table, TimeRange};

use crate::alert::Alert;
use crate::error::DetectError;

/// How incidents are formed.
#[derive(Debug, Clone)]
pub struct IncidentConfig {
    /// An alert joins an incident that shares a key with it and was last seen at most this long before.
    pub horizon_us: i64,
    /// Incidents and loose alerts kept in memory at most; the oldest are forgotten beyond.
    pub remembered_max: usize,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig { horizon_us: 24 * 3_600 * 1_000_000, remembered_max: 100_000 }
    }
}

/// The tactics of ATT&CK's enterprise matrix, in kill-chain order.
pub const KILL_CHAIN: [&str; 14] = [
    "reconnaissance",
    "resource-development",
    "initial-access",
    "execution",
    "persistence",
    "privilege-escalation",
    "defense-evasion",
    "credential-access",
    "discovery",
    "lateral-movement",
    "collection",
    "command-and-control",
    "exfiltration",
    "impact",
];

/// The tactic a technique (or its parent, for a sub-technique) serves first, for the techniques the
/// detections and the shipped Sigma rules name. A technique not listed adds no tactic.
const TECHNIQUE_TACTICS: [(&str, &str); 24] = [
    ("T1059", "execution"),
    ("T1078", "initial-access"),
    ("T1083", "discovery"),
    ("T1098", "persistence"),
    ("T1110", "credential-access"),
    ("T1136", "persistence"),
    ("T1189", "initial-access"),
    ("T1190", "initial-access"),
    ("T1203", "execution"),
    ("T1489", "impact"),
    ("T1496", "impact"),
    ("T1499", "impact"),
    ("T1525", "persistence"),
    ("T1530", "collection"),
    ("T1537", "exfiltration"),
    ("T1546", "persistence"),
    ("T1548", "privilege-escalation"),
    ("T1552", "credential-access"),
    ("T1562", "defense-evasion"),
    ("T1574", "persistence"),
    ("T1580", "discovery"),
    ("T1606", "credential-access"),
    ("T1648", "execution"),
    ("T1651", "execution"),
];

/// The tactic of an ATT&CK technique id (`T1552.005` is `T1552`'s).
pub fn tactic_of(technique: &str) -> Option<&'static str> {
    let parent = technique.split('.').next().unwrap_or(technique);
    TECHNIQUE_TACTICS.iter().find(|(id, _)| *id == parent).map(|(_, tactic)| *tactic)
}

/// A key two alerts share when they are about the same thing.
fn keys(entities: &[Entity]) -> Vec<String> {
    entities
        .iter()
        .map(|Entity(kind, value)| match kind {
            EntityKind::Address => format!("network:{}", network(value)),
            EntityKind::Principal => format!("principal:{value}"),
            EntityKind::AccessKey => format!("access-key:{value}"),
            EntityKind::Function => format!("function:{value}"),
            EntityKind::Environment => format!("environment:{value}"),
            EntityKind::Trace => format!("trace:{value}"),
        })
        .collect()
}

/// The /24 of an IPv4 address or the /48 of an IPv6 one; the text itself when it is neither.
fn network(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
        Err(_) => address.to_string(),
    }
}

/// What an incident keeps of each of its alerts.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    ts_us: i64,
    alert_id: String,
    detector: String,
    title: String,
    severity: Severity,
    function: Option<String>,
    attack_ids: Vec<String>,
    entities: Vec<Entity>,
}

impl Member {
    fn of(alert: &Alert) -> Member {
        let mut entities = alert.entities.clone();
        if entities.is_empty() {
            // Alerts stored before entities were kept: their function is what they are about.
            entities.extend(alert.function.iter().map(|f| Entity(EntityKind::Function, f.clone())));
        }
        Member {
            ts_us: alert.ts_us,
            alert_id: alert.alert_id.clone(),
            detector: alert.detector.clone(),
            title: alert.title.clone(),
            severity: alert.severity,
            function: alert.function.clone(),
            attack_ids: alert.attack_ids.clone(),
            entities,
        }
    }

    /// Whether this alert alone is worth an analyst's time.
    fn opens(&self) -> bool {
        !self.detector.starts_with("anomaly.") && self.severity >= Severity::Medium
    }
}

/// One incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub incident_id: String,
    members: Vec<Member>,
    merged_into: Option<String>,
}

impl Incident {
    fn opened_by(member: Member) -> Incident {
        Incident { incident_id: incident_id(&member.alert_id), members: vec![member], merged_into: None }
    }

    pub fn first_seen_us(&self) -> i64 {
        self.members.iter().map(|m| m.ts_us).min().unwrap_or_default()
    }

    pub fn last_seen_us(&self) -> i64 {
        self.members.iter().map(|m| m.ts_us).max().unwrap_or_default()
    }

    pub fn alert_ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.alert_id.clone()).collect()
    }

    /// Every entity of its alerts, each once.
    pub fn entities(&self) -> BTreeSet<Entity> {
        self.members.iter().flat_map(|m| m.entities.iter().cloned()).collect()
    }

    pub fn techniques(&self) -> BTreeSet<String> {
        self.members.iter().flat_map(|m| m.attack_ids.iter().cloned()).collect()
    }

    /// Its tactics, in kill-chain order.
    pub fn tactics(&self) -> Vec<&'static str> {
        let techniques = self.techniques();
        let found: BTreeSet<&str> = techniques.iter().filter_map(|t| tactic_of(t)).collect();
        KILL_CHAIN.iter().copied().filter(|t| found.contains(t)).collect()
    }

    /// The highest severity of its alerts, raised one level when three tactics or more chain.
    pub fn severity(&self) -> Severity {
        let highest = self.members.iter().map(|m| m.severity).max().unwrap_or(Severity::Low);
        if self.tactics().len() >= 3 {
            match highest {
                Severity::Low => Severity::Medium,
                Severity::Medium => Severity::High,
                Severity::High | Severity::Critical => Severity::Critical,
            }
        } else {
            highest
        }
    }

    /// Who or what the incident is about first: the address, else the principal, else the function of
    /// its earliest alert that names one.
    fn actor(&self) -> String {
        let mut members: Vec<&Member> = self.members.iter().collect();
        members.sort_by(|a, b| (a.ts_us, &a.alert_id).cmp(&(b.ts_us, &b.alert_id)));
        for kind in [EntityKind::Address, EntityKind::Principal, EntityKind::Function] {
            let named = members.iter().flat_map(|m| m.entities.iter()).find(|Entity(k, _)| *k == kind);
            if let Some(Entity(_, value)) = named {
                return value.clone();
            }
        }
        "an unknown actor".to_string()
    }

    /// One paragraph from its alerts, in the order they happened: "185.220.101.34 probed orders-api
    /// with 9 injection classes, then used users-resize's role credentials outside Lambda."
    pub fn summary(&self) -> String {
        let mut members: Vec<&Member> = self.members.iter().collect();
        members.sort_by(|a, b| (a.ts_us, &a.alert_id).cmp(&(b.ts_us, &b.alert_id)));
        // One phrase per kind of finding, where it first happened.
        let mut phrases: Vec<(String, BTreeSet<String>, BTreeSet<String>)> = Vec::new();
        for member in &members {
            let family = phrase_of(&member.detector);
            let function = member.function.clone().unwrap_or_else(|| "the account".into());
            match phrases.iter_mut().find(|(f, ..)| *f == family) {
                Some((_, functions, detectors)) => {
                    functions.insert(function);
                    detectors.insert(member.detector.clone());
                }
                None => phrases.push((family, BTreeSet::from([function]), BTreeSet::from([member.detector.clone()]))),
            }
        }
        let parts: Vec<String> = phrases
            .iter()
            .map(|(family, functions, detectors)| {
                let functions = join(functions);
                match family.as_str() {
                    "injection" => format!("probed {functions} with {} injection classes", detectors.len()),
                    "credentials" => format!("used {functions}'s role credentials outside Lambda"),
                    "denied" => format!("was denied again and again on {functions}"),
                    "callers" => format!("called {functions} as a new caller"),
                    "cost" => format!("ran up {functions}'s cost"),
                    "mining" => format!("pinned {functions} at full memory and duration (crypto-mining)"),
                    "trail" => "weakened CloudTrail".to_string(),
                    "lambda" => format!("changed {functions} ({})", join(detectors)),
                    "anomaly" => format!("made {functions} behave unusually ({})", join(detectors)),
                    _ => format!("set off {} on {functions}", join(detectors)),
                }
            })
            .collect();
        let alerts = self.members.len();
        format!(
            "{} {}. {alerts} alert{} from {} to {}.",
            self.actor(),
            parts.join(", then "),
            if alerts == 1 { "" } else { "s" },
            store::time::format_seconds(self.first_seen_us()),
            store::time::format_seconds(self.last_seen_us())
        )
    }

    /// A one-line title: the actor, the most severe alert's title, and how many more.
    pub fn title(&self) -> String {
        let worst = self
            .members
            .iter()
            .max_by(|a, b| (a.severity, std::cmp::Reverse(a.ts_us)).cmp(&(b.severity, std::cmp::Reverse(b.ts_us))))
            .map(|m| m.title.clone())
            .unwrap_or_default();
        let worst: String = worst.chars().take(160).collect();
        match self.members.len() {
            1 => format!("{}: {worst}", self.actor()),
            n => format!("{}: {worst} (+{} more alerts)", self.actor(), n - 1),
        }
    }

    /// The incident as an `incidents` row at `ts_us`.
    pub fn row(&self, ts_us: i64) -> IncidentRow {
        let json = |value: serde_json::Value| Some(value.to_string());
        IncidentRow {
            ts: ts_us,
            incident_id: self.incident_id.clone(),
            status: Some(if self.merged_into.is_some() { "merged" } else { "open" }.to_string()),
            severity: Some(self.severity().name().to_string()),
            title: Some(self.title()),
            summary: Some(self.summary()),
            first_seen: Some(self.first_seen_us()),
            last_seen: Some(self.last_seen_us()),
            alert_count: Some(self.members.len() as i64),
            alert_ids: json(serde_json::json!(self.alert_ids())),
            entities: json(serde_json::json!(self.entities())),
            tactics: json(serde_json::json!(self.tactics())),
            techniques: json(serde_json::json!(self.techniques())),
            merged_into: self.merged_into.clone(),
            assignee: None,
            note: None,
            changed_by: None,
        }
    }
}

/// What analysts set on an incident, from its latest row that one of them wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Triage {
    pub status: Option<String>,
    pub assignee: Option<String>,
    pub note: Option<String>,
    pub changed_by: Option<String>,
    /// The time of that row: later rows are written after it.
    pub at_us: i64,
}

impl Triage {
    fn apply_to(&self, row: &mut IncidentRow) {
        if row.status.as_deref() != Some("merged") {
            if let Some(status) = &self.status {
                row.status = Some(status.clone());
            }
        }
        row.assignee.clone_from(&self.assignee);
        row.note.clone_from(&self.note);
        row.changed_by.clone_from(&self.changed_by);
        row.ts = row.ts.max(self.at_us.saturating_add(1));
    }
}

/// The family of a detector, for the summary.
fn phrase_of(detector: &str) -> String {
    let family = detector.split('.').next().unwrap_or(detector);
    match detector {
        "resource.cryptomining" => "mining".into(),
        "resource.denial_of_wallet" => "cost".into(),
        "access.denied_burst" => "denied".into(),
        _ => family.into(),
    }
}

fn join(items: &BTreeSet<String>) -> String {
    let items: Vec<&str> = items.iter().map(String::as_str).collect();
    match items.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] if rest.len() < 3 => format!("{} and {last}", rest.join(", ")),
        [first, second, rest @ ..] => format!("{first}, {second} and {} more", rest.len()),
    }
}

/// The stable id of an incident opened by `alert_id`.
pub fn incident_id(alert_id: &str) -> String {
    let digest = Sha256::digest(format!("incident\u{0}{alert_id}").as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect::<String>()
}

/// Alerts into incidents, one alert at a time.
#[derive(Debug)]
pub struct Correlator {
    config: IncidentConfig,
    /// Incidents that alerts may still join, by id.
    open: BTreeMap<String, Incident>,
    /// Correlation key to the open incident that holds it.
    index: HashMap<String, String>,
    /// Alerts that opened nothing, within the horizon: they join an incident that opens on their key.
    loose: VecDeque<Member>,
    /// Alert ids placed, so that an alert seen again (a group's final count) changes nothing.
    placed: HashMap<String, i64>,
    /// What analysts set, by incident id.
    triage: HashMap<String, Triage>,
    newest_us: i64,
    /// When what is past the horizon was last forgotten.
    forgotten_at_us: i64,
}

impl Correlator {
    pub fn new(config: IncidentConfig) -> Correlator {
        Correlator {
            config,
            open: BTreeMap::new(),
            index: HashMap::new(),
            loose: VecDeque::new(),
            placed: HashMap::new(),
            triage: HashMap::new(),
            newest_us: i64::MIN,
            forgotten_at_us: i64::MIN,
        }
    }

    /// Incidents alerts may still join.
    pub fn open(&self) -> impl Iterator<Item = &Incident> {
        self.open.values()
    }

    /// Learns an analyst's change from a stored row: one with `changed_by`, newer than what is known of
    /// its incident. Rows without (the correlator's own) and older ones change nothing.
    pub fn triaged(&mut self, row: &IncidentRow) {
        if row.changed_by.is_none() || self.triage.get(&row.incident_id).is_some_and(|t| t.at_us > row.ts) {
            return;
        }
        let triage = Triage {
            status: row.status.clone().filter(|s| s != "merged"),
            assignee: row.assignee.clone(),
            note: row.note.clone(),
            changed_by: row.changed_by.clone(),
            at_us: row.ts,
        };
        self.triage.insert(row.incident_id.clone(), triage);
    }

    /// Whether an alert id has been placed (within the horizon).
    pub fn has_placed(&self, alert_id: &str) -> bool {
        self.placed.contains_key(alert_id)
    }

    /// What analysts set on an incident.
    pub fn triage(&self, incident_id: &str) -> Option<&Triage> {
        self.triage.get(incident_id)
    }

    /// The row of incident `id` (open) at `ts_us`, with what analysts set on it.
    fn row(&self, id: &str, ts_us: i64) -> IncidentRow {
        let mut row = self.open[id].row(ts_us);
        if let Some(triage) = self.triage.get(id) {
            triage.apply_to(&mut row);
        }
        row
    }

    /// Places one alert: the rows of the incidents it opened, grew or merged, in id order.
    pub fn add(&mut self, alert: &Alert) -> Vec<IncidentRow> {
        if self.placed.contains_key(&alert.alert_id) {
            return Vec::new();
        }
        self.placed.insert(alert.alert_id.clone(), alert.ts_us);
        self.newest_us = self.newest_us.max(alert.ts_us);
        if self.newest_us.saturating_sub(self.forgotten_at_us) >= 60_000_000
            || self.open.len() > self.config.remembered_max
        {
            self.forgotten_at_us = self.newest_us;
            self.forget_before(self.newest_us.saturating_sub(self.config.horizon_us));
        }
        let member = Member::of(alert);
        let member_keys = keys(&member.entities);
        let horizon = alert.ts_us.saturating_sub(self.config.horizon_us);
        let mut joined: Vec<String> = member_keys
            .iter()
            .filter_map(|key| self.index.get(key))
            .filter(|id| self.open.get(*id).is_some_and(|i| i.last_seen_us() >= horizon))
            .cloned()
            .collect();
        joined.sort_by_key(|id| (self.open[id].first_seen_us(), id.clone()));
        joined.dedup();
        let mut rows = Vec::new();
        let target = match joined.first() {
            Some(target) => target.clone(),
            None if member.opens() => {
                let incident = Incident::opened_by(member.clone());
                let id = incident.incident_id.clone();
                self.open.insert(id.clone(), incident);
                self.index_keys(&member_keys, &id);
                self.gather_loose(&id);
                rows.push(self.row(&id, alert.ts_us));
                return rows;
            }
            None => {
                self.loose.push_back(member);
                if self.loose.len() > self.config.remembered_max {
                    self.loose.pop_front();
                }
                return rows;
            }
        };
        for other in joined.iter().skip(1) {
            let Some(mut merged) = self.open.remove(other) else { continue };
            merged.merged_into = Some(target.clone());
            let mut row = merged.row(alert.ts_us);
            if let Some(triage) = self.triage.get(other) {
                triage.apply_to(&mut row);
            }
            rows.push(row);
            let moved = std::mem::take(&mut merged.members);
            for member in &moved {
                self.index_keys(&keys(&member.entities), &target);
            }
            self.open.get_mut(&target).expect("the target is open").members.extend(moved);
        }
        self.open.get_mut(&target).expect("the target is open").members.push(member);
        self.index_keys(&member_keys, &target);
        if let Some(triage) = self.triage.get_mut(&target).filter(|t| t.status.as_deref() == Some("resolved")) {
            triage.status = Some("open".into());
        }
        rows.push(self.row(&target, alert.ts_us));
        rows.sort_by(|a, b| a.incident_id.cmp(&b.incident_id));
        rows
    }

    fn index_keys(&mut self, keys: &[String], id: &str) {
        for key in keys {
            self.index.insert(key.clone(), id.to_string());
        }
    }

    /// Moves the loose alerts that share a key with incident `id` into it.
    fn gather_loose(&mut self, id: &str) {
        let incident_keys: BTreeSet<String> =
            keys(&self.open[id].entities().into_iter().collect::<Vec<_>>()).into_iter().collect();
        let (joining, staying): (Vec<Member>, Vec<Member>) = std::mem::take(&mut self.loose)
            .into_iter()
            .partition(|m| keys(&m.entities).iter().any(|k| incident_keys.contains(k)));
        self.loose = staying.into();
        for member in &joining {
            self.index_keys(&keys(&member.entities), id);
        }
        let incident = self.open.get_mut(id).expect("the incident is open");
        incident.members.extend(joining);
    }

    /// Forgets what is older than `cutoff`: incidents last seen before it can no longer be joined.
    fn forget_before(&mut self, cutoff: i64) {
        let stale: Vec<String> =
            self.open.iter().filter(|(_, i)| i.last_seen_us() < cutoff).map(|(id, _)| id.clone()).collect();
        for id in stale {
            self.open.remove(&id);
        }
        if self.open.len() > self.config.remembered_max {
            let oldest: Vec<String> = {
                let mut by_age: Vec<(&String, i64)> = self.open.iter().map(|(id, i)| (id, i.last_seen_us())).collect();
                by_age.sort_by_key(|(_, last)| *last);
                by_age.iter().take(self.open.len() - self.config.remembered_max).map(|(id, _)| (*id).clone()).collect()
            };
            for id in oldest {
                self.open.remove(&id);
            }
        }
        let open = &self.open;
        self.index.retain(|_, id| open.contains_key(id));
        self.triage.retain(|id, t| open.contains_key(id) || t.at_us >= cutoff);
        self.loose.retain(|m| m.ts_us >= cutoff);
        self.placed.retain(|_, ts| *ts >= cutoff);
    }
}

/// Appends buffered between the store and the incident builder before appenders wait.
const QUEUE_APPENDS_MAX: usize = 64;

/// Builds incidents live on a thread of its own and appends the `incidents` rows each alert changes: from
/// the alerts a process stores (`start`: the store's appends of `alerts` and analysts' `incidents` rows),
/// or, in a cluster, from every process's (`start_shared`: the owner of detection partition 0 reads the
/// shared store's `alerts` and `incidents` every few seconds, since alerts are raised by every partition's
/// owner and triaged through any process).
///
/// It keeps no checkpoint: at start it places the stored alerts of the last horizon again (alert ids and
/// incident ids are stable), and stores the incidents whose state differs from their latest stored row
/// (an alert stored just before a crash whose incident row was not; in a cluster, what the previous owner
/// had not stored).
pub struct IncidentThread {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<u64, DetectError>>,
}

impl IncidentThread {
    /// Runs `build` on a thread of its own, with a runtime for the store's reads and a correlator caught up
    /// with the stored alerts; `build` returns the rows it wrote once the stop flag is set.
    fn spawn<F>(store: Arc<Store>, config: IncidentConfig, build: F) -> Result<IncidentThread, DetectError>
    where
        F: FnOnce(&Store, &tokio::runtime::Runtime, &mut Correlator, &AtomicBool) -> Result<u64, DetectError>
            + Send
            + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("incidents".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| DetectError::Internal(format!("cannot start the incidents runtime: {e}")))?;
                    let mut correlator = Correlator::new(config);
                    let written = catch_up(&store, &runtime, &mut correlator)?;
                    Ok(written + build(&store, &runtime, &mut correlator, &stop)?)
                }
            })
            .map_err(|e| DetectError::Internal(format!("cannot start the incidents thread: {e}")))?;
        Ok(IncidentThread { stop, thread })
    }

    pub fn start(store: Arc<Store>, config: IncidentConfig) -> Result<IncidentThread, DetectError> {
        // Subscribed before the stored alerts are read, so that none falls between the two.
        let receiver = store.subscribe(&[Table::Alerts, Table::Incidents], QUEUE_APPENDS_MAX);
        IncidentThread::spawn(store, config, move |store, _, correlator, stop| {
            let mut written = 0;
            loop {
                let stopping = stop.load(Ordering::SeqCst);
                let appended = match receiver.recv_timeout(std::time::Duration::from_millis(200)) {
                    Ok(appended) => appended,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) if stopping => break,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                };
                let mut rows = Vec::new();
                for (table, batch) in &appended.batches {
                    if *table == Table::Incidents {
                        for row in analysts_rows(batch)? {
                            correlator.triaged(&row);
                        }
                        continue;
                    }
                    for alert in Alert::from_batch(batch)? {
                        rows.extend(correlator.add(&alert));
                    }
                }
                written += store_incidents(store, &rows)?;
            }
            Ok(written)
        })
    }

    /// Builds incidents from the shared store, read every `every`: the alerts of the last horizon not
    /// placed yet (in event-time order), and analysts' rows. The rows it stores are sealed at once, so that
    /// every process (and a next owner) reads them.
    pub fn start_shared(
        store: Arc<Store>,
        config: IncidentConfig,
        every: Duration,
    ) -> Result<IncidentThread, DetectError> {
        IncidentThread::spawn(store, config, move |store, runtime, correlator, stop| {
            let mut written = 0;
            let mut triage_from = store::time::now_micros();
            loop {
                let stopping = stop.load(Ordering::SeqCst);
                match poll_shared(store, runtime, correlator, &mut triage_from) {
                    Ok(n) => written += n,
                    Err(e) => tracing::warn!(error = %e, "building incidents from the shared store failed; retrying"),
                }
                if stopping {
                    break;
                }
                let started = std::time::Instant::now();
                while started.elapsed() < every && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Ok(written)
        })
    }

    /// Places the alerts already appended and ends the thread; the number of incident rows written.
    pub fn stop(self) -> Result<u64, DetectError> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().map_err(|_| DetectError::Internal("the incidents thread panicked".into()))?
    }
}

/// One read of the shared store: the other processes' new segments, analysts' rows since `triage_from`
/// (a margin before the last read: rows sealed late), then the alerts of the last horizon not placed yet.
fn poll_shared(
    store: &Store,
    runtime: &tokio::runtime::Runtime,
    correlator: &mut Correlator,
    triage_from: &mut i64,
) -> Result<u64, DetectError> {
    runtime.block_on(store.refresh())?;
    let now = store::time::now_micros();
    let range = TimeRange::new(triage_from.saturating_sub(TRIAGE_LOOKBACK_US), i64::MAX);
    for batch in runtime.block_on(store.scan(Table::Incidents, None, range))? {
        for row in analysts_rows(&batch)? {
            correlator.triaged(&row);
        }
    }
    *triage_from = now;
    let Some((_, newest)) = store.event_time_span(Table::Alerts) else { return Ok(0) };
    let range = TimeRange::new(newest.saturating_sub(correlator.config.horizon_us), i64::MAX);
    let mut alerts = Vec::new();
    for batch in runtime.block_on(store.scan(Table::Alerts, None, range))? {
        alerts.extend(Alert::from_batch(&batch)?.into_iter().filter(|a| !correlator.has_placed(&a.alert_id)));
    }
    alerts.sort_by(|a, b| (a.ts_us, &a.alert_id).cmp(&(b.ts_us, &b.alert_id)));
    alerts.dedup_by(|a, b| a.alert_id == b.alert_id);
    let rows: Vec<IncidentRow> = alerts.iter().flat_map(|alert| correlator.add(alert)).collect();
    let written = store_incidents(store, &rows)?;
    if written > 0 {
        runtime.block_on(store.flush_table(Table::Incidents))?;
    }
    Ok(written)
}

/// The analysts' rows of an `incidents` batch (those with `changed_by`); the builder's own rows, most of
/// them, are not copied.
fn analysts_rows(batch: &arrow::array::RecordBatch) -> Result<Vec<IncidentRow>, DetectError> {
    let columns = IncidentRow::columns(batch)?;
    let rows = (0..columns.rows()).map(|i| IncidentRow::read(&columns, i));
    Ok(rows.filter(|row| row.changed_by.is_some()).map(|row| row.owned()).collect())
}

/// How far before the last read analysts' rows are read again (a process seals its rows within seconds
/// to minutes: `[store] flush_after_secs`).
const TRIAGE_LOOKBACK_US: i64 = 30 * 60 * 1_000_000;

/// Stores incident rows; how many.
pub fn store_incidents(store: &Store, rows: &[IncidentRow]) -> Result<u64, DetectError> {
    if let Some(batch) = IncidentRow::batch(rows) {
        store.append(&[(Table::Incidents, batch)], &[])?;
    }
    Ok(rows.len() as u64)
}

/// Learns what analysts set from the stored rows, places the stored alerts of the last horizon, and
/// stores the incidents whose state is not their latest stored row.
fn catch_up(store: &Store, runtime: &tokio::runtime::Runtime, correlator: &mut Correlator) -> Result<u64, DetectError> {
    // Other processes' segments too, in a cluster (a process alone has none).
    runtime.block_on(store.refresh())?;
    let Some((_, newest)) = store.event_time_span(Table::Alerts) else { return Ok(0) };
    let range = TimeRange::new(newest.saturating_sub(correlator.config.horizon_us), newest.saturating_add(1));
    let mut stored: HashMap<String, IncidentRow> = HashMap::new();
    for batch in runtime.block_on(store.scan(Table::Incidents, None, TimeRange::new(range.start_micros, i64::MAX)))? {
        for row in IncidentRow::from_batch(&batch)? {
            correlator.triaged(&row);
            if stored.get(&row.incident_id).is_none_or(|s| s.ts <= row.ts) {
                stored.insert(row.incident_id.clone(), row);
            }
        }
    }
    let mut alerts = Vec::new();
    for batch in runtime.block_on(store.scan(Table::Alerts, None, range))? {
        alerts.extend(Alert::from_batch(&batch)?);
    }
    alerts.sort_by(|a, b| (a.ts_us, &a.alert_id).cmp(&(b.ts_us, &b.alert_id)));
    let mut latest: BTreeMap<String, IncidentRow> = BTreeMap::new();
    for alert in &alerts {
        for row in correlator.add(alert) {
            latest.insert(row.incident_id.clone(), row);
        }
    }
    let state = |row: &IncidentRow| (row.alert_count, row.status.clone(), row.assignee.clone(), row.note.clone());
    let missing: Vec<IncidentRow> = latest
        .into_values()
        .filter(|row| stored.get(&row.incident_id).is_none_or(|s| state(s) != state(row)))
        .collect();
    store_incidents(store, &missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000_000;
    const MINUTE: i64 = 60_000_000;

    fn alert(id: &str, detector: &str, severity: Severity, ts_us: i64, entities: &[(EntityKind, &str)]) -> Alert {
        let function = entities.iter().find(|(k, _)| *k == EntityKind::Function).map(|(_, v)| v.to_string());
        Alert {
            ts_us,
            alert_id: id.into(),
            detector: detector.into(),
            severity,
            title: format!("{detector} title"),
            function,
            entity: None,
            window_start_us: ts_us,
            window_end_us: ts_us,
            score: 0.9,
            count: 1,
            observed: serde_json::Value::Null,
            expected: serde_json::Value::Null,
            evidence: Vec::new(),
            attack_ids: match detector {
                d if d.starts_with("injection.") => vec!["T1190".into(), "T1059".into()],
                "credentials.outside_lambda" => vec!["T1078.004".into(), "T1552.001".into()],
                "trail.stopped" => vec!["T1562.008".into()],
                _ => Vec::new(),
            },
            query: String::new(),
            entities: entities.iter().map(|(k, v)| Entity(*k, v.to_string())).collect(),
        }
    }

    use EntityKind::{Address, Environment, Function, Principal, Trace};

    fn campaign() -> Vec<Alert> {
        let mut alerts: Vec<Alert> = ["sql", "command", "xss"]
            .iter()
            .enumerate()
            .map(|(i, class)| {
                alert(
                    &format!("inj-{class}"),
                    &format!("injection.{class}"),
                    Severity::High,
                    T0 + i as i64 * MINUTE,
                    &[(Address, "185.220.101.34"), (Function, "orders-api"), (Environment, "2026/01/01/[$LATEST]a")],
                )
            })
            .collect();
        // The stolen credentials are used from a neighbour of the probing address.
        alerts.push(alert(
            "creds",
            "credentials.outside_lambda",
            Severity::Critical,
            T0 + 30 * MINUTE,
            &[(Address, "185.220.101.77"), (Principal, "arn:aws:iam::1:role/users-resize-exec")],
        ));
        alerts
    }

    fn run(alerts: &[Alert]) -> (Correlator, Vec<IncidentRow>) {
        let mut correlator = Correlator::new(IncidentConfig::default());
        let rows = alerts.iter().flat_map(|a| correlator.add(a)).collect();
        (correlator, rows)
    }

    #[test]
    fn a_campaign_and_its_use_of_stolen_credentials_are_one_incident_with_its_story() {
        let (correlator, rows) = run(&campaign());
        let incidents: Vec<&Incident> = correlator.open().collect();
        assert_eq!(incidents.len(), 1);
        let incident = incidents[0];
        assert_eq!(incident.incident_id, incident_id("inj-sql"), "the opening alert names the incident");
        assert_eq!(incident.alert_ids().len(), 4);
        assert_eq!(incident.severity(), Severity::Critical);
        assert_eq!(incident.tactics(), vec!["initial-access", "execution", "credential-access"]);
        assert_eq!(
            incident.summary().split(". ").next().unwrap(),
            "185.220.101.34 probed orders-api with 3 injection classes, then used the account's role credentials \
             outside Lambda"
        );
        // One row per change, the latest the state.
        assert_eq!(rows.len(), 4);
        let last = rows.last().unwrap();
        assert_eq!((last.alert_count, last.status.as_deref()), (Some(4), Some("open")));
        // The same alert again (a group's final count) changes nothing.
        let mut again = Correlator::new(IncidentConfig::default());
        for alert in &campaign() {
            again.add(alert);
        }
        assert!(again.add(&campaign()[0]).is_empty());
        assert_eq!(again.open().next(), Some(incident), "the same alerts give the same incident");
    }

    #[test]
    fn anomalies_and_low_alerts_open_nothing_but_join_an_incident_on_their_function() {
        let noise = [
            alert("spike", "anomaly.invocations", Severity::High, T0, &[(Function, "orders-api"), (Trace, "1-spiky")]),
            alert("caller", "callers.new", Severity::Low, T0 + MINUTE, &[(Function, "billing")]),
        ];
        let (correlator, rows) = run(&noise);
        assert!(rows.is_empty() && correlator.open().next().is_none());
        let mut alerts = noise.to_vec();
        alerts.extend(campaign());
        let (correlator, _) = run(&alerts);
        let incident = correlator.open().next().unwrap();
        assert!(incident.alert_ids().contains(&"spike".to_string()), "the spike joins the attack on its function");
        assert!(!incident.alert_ids().contains(&"caller".to_string()), "another function's caller does not");
        // The spike's keys are the incident's now: a later alert that shares only them joins it.
        let mut correlator = correlator;
        let later = alert("later", "injection.xss", Severity::Medium, T0 + 40 * MINUTE, &[(Trace, "1-spiky")]);
        let rows = correlator.add(&later);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].incident_id, incident_id("inj-sql"));
    }

    /// An analyst's row, as `query::procedures` stores it.
    fn triage_row(of: &IncidentRow, ts: i64, status: &str, assignee: Option<&str>, note: Option<&str>) -> IncidentRow {
        IncidentRow {
            ts,
            status: Some(status.into()),
            assignee: assignee.map(Into::into),
            note: note.map(Into::into),
            changed_by: Some("alice".into()),
            ..of.clone()
        }
    }

    #[test]
    fn what_an_analyst_sets_is_carried_on_later_rows_written_after_it() {
        let alerts = campaign();
        let mut correlator = Correlator::new(IncidentConfig::default());
        let opened = correlator.add(&alerts[0]).pop().unwrap();
        // Acknowledged an hour of wall-clock time after the alert (a replay's rows are older than now).
        let acknowledged = triage_row(&opened, T0 + 60 * MINUTE, "acknowledged", Some("alice"), Some("blocking it"));
        correlator.triaged(&acknowledged);
        // The correlator's own rows (no `changed_by`) and older analyst rows change nothing.
        correlator.triaged(&opened);
        correlator.triaged(&triage_row(&opened, T0, "false_positive", None, None));
        let grown = correlator.add(&alerts[1]).pop().unwrap();
        assert_eq!(grown.status.as_deref(), Some("acknowledged"));
        assert_eq!((grown.assignee.as_deref(), grown.note.as_deref()), (Some("alice"), Some("blocking it")));
        assert_eq!(grown.changed_by.as_deref(), Some("alice"));
        assert_eq!(grown.alert_count, Some(2));
        assert!(grown.ts > acknowledged.ts, "the latest row stays the whole state");
        // Resolved, then the attack goes on: open again, with the analyst's note.
        correlator.triaged(&triage_row(&grown, grown.ts + 1, "resolved", Some("alice"), Some("fixed")));
        let reopened = correlator.add(&alerts[2]).pop().unwrap();
        assert_eq!((reopened.status.as_deref(), reopened.note.as_deref()), (Some("open"), Some("fixed")));
        // A false positive stays one.
        correlator.triaged(&triage_row(&reopened, reopened.ts + 1, "false_positive", None, Some("pentest")));
        let last = correlator.add(&alerts[3]).pop().unwrap();
        assert_eq!((last.status.as_deref(), last.assignee.as_deref()), (Some("false_positive"), None));
    }

    #[test]
    fn an_alert_that_links_two_incidents_merges_the_newer_into_the_older() {
        let first = alert("a", "injection.sql", Severity::Medium, T0, &[(Address, "198.51.100.1"), (Function, "f")]);
        let second =
            alert("b", "trail.stopped", Severity::Critical, T0 + MINUTE, &[(Principal, "arn:aws:iam::1:user/m")]);
        let link = alert(
            "c",
            "credentials.outside_lambda",
            Severity::Critical,
            T0 + 2 * MINUTE,
            &[(Address, "198.51.100.9"), (Principal, "arn:aws:iam::1:user/m")],
        );
        let (correlator, rows) = run(&[first, second, link]);
        assert_eq!(correlator.open().count(), 1);
        let survivor = correlator.open().next().unwrap();
        assert_eq!(survivor.incident_id, incident_id("a"));
        assert_eq!(survivor.alert_ids().len(), 3);
        let merged = rows.iter().rfind(|r| r.incident_id == incident_id("b"));
        assert_eq!(merged.and_then(|r| r.status.clone()).as_deref(), Some("merged"));
        assert_eq!(merged.and_then(|r| r.merged_into.clone()), Some(incident_id("a")));
        assert_eq!(survivor.tactics(), vec!["initial-access", "execution", "defense-evasion", "credential-access"]);
    }

    #[test]
    fn the_horizon_ends_an_incident_and_the_same_address_later_opens_another() {
        let early = alert("a", "injection.sql", Severity::Medium, T0, &[(Address, "203.0.113.5")]);
        let late = alert("b", "injection.xss", Severity::Medium, T0 + 25 * 60 * MINUTE, &[(Address, "203.0.113.5")]);
        let (_, rows) = run(&[early, late]);
        let ids: BTreeSet<&str> = rows.iter().map(|r| r.incident_id.as_str()).collect();
        assert_eq!(ids.len(), 2, "{rows:?}");
    }

    #[test]
    fn rows_fit_the_incidents_table_and_severity_rises_with_the_chain() {
        let alerts = [
            alert("a", "injection.sql", Severity::Medium, T0, &[(Address, "203.0.113.5")]),
            alert("b", "trail.stopped", Severity::Medium, T0 + MINUTE, &[(Address, "203.0.113.5")]),
            alert("c", "credentials.outside_lambda", Severity::Medium, T0 + 2 * MINUTE, &[(Address, "203.0.113.5")]),
        ];
        let (correlator, rows) = run(&alerts);
        assert_eq!(correlator.open().next().unwrap().severity(), Severity::High);
        let batch = IncidentRow::batch(&rows).unwrap();
        assert_eq!(batch.schema(), store::Table::Incidents.schema());
        let read = IncidentRow::from_batch(&batch).unwrap();
        let entities: Vec<Entity> = serde_json::from_str(read[2].entities.as_deref().unwrap()).unwrap();
        assert_eq!(entities, vec![Entity(Address, "203.0.113.5".into())]);
        assert_eq!(read[2].severity.as_deref(), Some("high"));
    }

    #[test]
    fn tactics_come_from_techniques_and_their_parents() {
        assert_eq!(tactic_of("T1552.005"), Some("credential-access"));
        assert_eq!(tactic_of("T1190"), Some("initial-access"));
        assert_eq!(tactic_of("T9999"), None);
        assert_eq!(network("2001:db8:1:2::5"), "2001:db8:1::/48");
        assert_eq!(network("10.1.2.3"), "10.1.2.0/24");
    }
}

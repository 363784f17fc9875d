//! The durable outbox: every stored alert routed to a destination is delivered there once, or given up
//! after `give_up_after_secs`, and every state it passes through is a row of `alert_deliveries` (pending,
//! retrying with the error, delivered with the HTTP status, failed, suppressed). Those rows are the
//! outbox's memory: after a restart, alerts whose last state is not final are queued again.
//!
//! Input is the store's subscription to `alerts` and `incidents`: an alert is delivered only after it is
//! durably stored. Rows that repeat an alert id (a deduplicated group's final count, a replay) are not
//! sent again. Destinations with `per = "incident"` get incidents' messages instead (`AlertDoc::
//! incident_message`: opened, then each escalation), through the same states, keyed by message id.
//! Suppressions are the configuration's and those admins add at run time (`store::suppressions`, read
//! again every few seconds while alerts come). Retries back off exponentially with jitter up to a bound; each destination has a request timeout, a
//! rate limit and a circuit breaker.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use store::tables::AlertDeliveryRow;
use store::{Store, Table, TimeRange};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{AlertingConfig, DestinationConfig, Kind};
use crate::error::AlertingError;
use crate::metrics::metrics;
use crate::payload::{self, AlertDoc, Severity, SIGNATURE_HEADER};
use store::tables::IncidentRow;

/// Delivery states, as `alert_deliveries.state` stores them.
pub mod state {
    pub const PENDING: &str = "pending";
    pub const RETRYING: &str = "retrying";
    pub const DELIVERED: &str = "delivered";
    pub const FAILED: &str = "failed";
    pub const SUPPRESSED: &str = "suppressed";

    pub fn is_final(state: &str) -> bool {
        matches!(state, DELIVERED | FAILED | SUPPRESSED)
    }
}

/// Concurrent requests at most, over all destinations.
const IN_FLIGHT_MAX: usize = 64;
/// How often the suppressions added at run time are read again (when alerts come).
const SUPPRESSIONS_READ_EVERY: Duration = Duration::from_secs(5);
/// Alerts whose incident is remembered at most (then forgotten all at once: a payload then lacks its
/// incident id, nothing worse).
const INCIDENTS_REMEMBERED_MAX: usize = 1_000_000;

fn now_us() -> i64 {
    store::time::now_micros()
}

struct Destination {
    config: DestinationConfig,
    secret: Option<Vec<u8>>,
    consecutive_failures: u32,
    open_until_us: i64,
    tokens: f64,
    tokens_at_us: i64,
}

impl Destination {
    fn backoff_us(&self, attempt: u32) -> i64 {
        let seconds =
            (self.config.backoff_initial_secs * 2f64.powi(attempt.min(30) as i32)).min(self.config.backoff_max_secs);
        // Full jitter over the upper half: retries of many alerts do not arrive together.
        let jitter = 0.5 + 0.5 * pseudo_random();
        (seconds * jitter * 1e6) as i64
    }

    /// Takes a token if one is there; otherwise the time one will be.
    fn take_token(&mut self, now: i64) -> Result<(), i64> {
        let rate = self.config.rate_per_second;
        self.tokens = (self.tokens + (now - self.tokens_at_us) as f64 / 1e6 * rate).min(rate.max(1.0));
        self.tokens_at_us = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + ((1.0 - self.tokens) / rate * 1e6) as i64 + 1)
        }
    }
}

fn pseudo_random() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let mut x = STATE.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ (now_us() as u64);
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[derive(Clone)]
struct Job {
    alert: AlertDoc,
    destination: usize,
    attempt: u32,
    first_us: i64,
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    Retry(Option<u16>, String),
    Reject(u16, String),
}

/// The outbox of one process.
pub struct Outbox {
    store: Arc<Store>,
    config: AlertingConfig,
    destinations: Vec<Destination>,
    client: reqwest::Client,
    jobs: BTreeMap<(i64, u64), Job>,
    seq: u64,
    known: HashSet<(String, usize)>,
    /// The incident of each alert placed in one (as the incidents' rows say), for alerts' payloads.
    incident_of: HashMap<String, String>,
    /// The highest severity announced of each incident.
    announced: HashMap<String, Severity>,
    /// Suppressions added at run time (`store::suppressions`), beside the configured ones, and when they
    /// were last read.
    runtime_suppressions: Vec<crate::config::Suppression>,
    suppressions_read: Option<std::time::Instant>,
    /// `alert_deliveries` rows not yet written; `write_rows` stamps them with the time it writes them.
    rows: Vec<AlertDeliveryRow>,
}

impl Outbox {
    pub fn new(store: Arc<Store>, config: AlertingConfig) -> Outbox {
        let env_secret = std::env::var("COLDTRAIL_WEBHOOK_SECRET").ok();
        let destinations: Vec<Destination> = config
            .destinations
            .iter()
            .map(|d| Destination {
                secret: d.secret.clone().or_else(|| env_secret.clone()).map(String::into_bytes),
                config: d.clone(),
                consecutive_failures: 0,
                open_until_us: 0,
                tokens: d.rate_per_second.max(1.0),
                tokens_at_us: now_us(),
            })
            .collect();
        for d in &destinations {
            metrics().pending.with_label_values(&[&d.config.name]).set(0);
        }
        Outbox {
            store,
            config,
            destinations,
            client: reqwest::Client::builder().build().expect("an HTTP client"),
            jobs: BTreeMap::new(),
            seq: 0,
            known: HashSet::new(),
            incident_of: HashMap::new(),
            announced: HashMap::new(),
            runtime_suppressions: Vec::new(),
            suppressions_read: None,
            rows: Vec::new(),
        }
    }

    /// Subscribes to stored alerts, queues what an earlier run left undelivered, and delivers until `stop`.
    pub fn start(self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<Result<(), AlertingError>> {
        let receiver = self.store.subscribe(&[Table::Alerts, Table::Incidents], 1_024);
        let (sender, mut appended) = tokio::sync::mpsc::channel::<store::Appended>(64);
        // The store's subscription is a blocking channel: a thread moves it onto the runtime.
        std::thread::Builder::new()
            .name("alerting-tap".into())
            .spawn(move || {
                while let Ok(batch) = receiver.recv() {
                    if sender.blocking_send(batch).is_err() {
                        return;
                    }
                }
            })
            .expect("a thread");
        let mut outbox = self;
        tokio::spawn(async move {
            outbox.recover().await?;
            let ledger_every = outbox.config.ledger.as_ref().map(|l| Duration::from_secs_f64(l.every_secs));
            let mut next_ledger = tokio::time::Instant::now() + ledger_every.unwrap_or(Duration::from_secs(3_600));
            let mut publish_ledger = false;
            let mut in_flight: JoinSet<(Job, Outcome)> = JoinSet::new();
            let mut arrived: Option<store::Appended> = None;
            loop {
                outbox.dispatch(&mut in_flight);
                outbox.write_rows().await?;
                let next_due = outbox.jobs.keys().next().map(|(due, _)| *due);
                let wait = next_due.map_or(Duration::from_secs(3600), |due| {
                    Duration::from_micros((due - now_us()).clamp(1_000, 3_600_000_000) as u64)
                });
                tokio::select! {
                    batch = appended.recv() => match batch {
                        Some(batch) => arrived = Some(batch),
                        None => break,
                    },
                    Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                        if let Ok((job, outcome)) = done {
                            outbox.settle(job, outcome);
                        }
                    }
                    _ = tokio::time::sleep(wait) => {}
                    _ = tokio::time::sleep_until(next_ledger), if ledger_every.is_some() => {
                        next_ledger = tokio::time::Instant::now() + ledger_every.unwrap_or_default();
                        publish_ledger = true;
                    }
                    _ = stop.wait_for(|s| *s) => break,
                }
                if let Some(batch) = arrived.take() {
                    // Awaited here, not in the select's arm (whose other outputs are not `Send`).
                    outbox.read_suppressions().await;
                    outbox.admit_appended(&batch);
                }
                if std::mem::take(&mut publish_ledger) {
                    outbox.publish_ledger_head().await;
                }
                // Whatever else is ready joins this round: one store append for all their states.
                while let Some(done) = in_flight.try_join_next() {
                    if let Ok((job, outcome)) = done {
                        outbox.settle(job, outcome);
                    }
                }
                while let Ok(batch) = appended.try_recv() {
                    outbox.admit_appended(&batch);
                }
            }
            // Requests under way finish (each is bounded by its timeout); the rest stay queued in the store.
            while let Some(done) = in_flight.join_next().await {
                if let Ok((job, outcome)) = done {
                    outbox.settle(job, outcome);
                }
            }
            outbox.write_rows().await?;
            Ok(())
        })
    }

    /// Puts this node's exported head, write-once, into the Object Lock bucket; a failure is logged and
    /// counted, and the next round tries again.
    async fn publish_locked(&self, url: &str, retain_days: u32) {
        let head = self.store.ledger_head();
        let result = async {
            let bytes = self
                .store
                .location()
                .get_opt(&store::ledger::head_path(&head.node))
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no ledger head yet")?;
            let export = store::verify::ExportedHead::from_head_file(&bytes, &self.store.verifying_key())?;
            let aws = store::aws::Aws::from_env()?;
            store::aws::publish_locked(&aws, url, &export, retain_days).await
        }
        .await;
        match result {
            Ok(key) => {
                metrics().deliveries.with_label_values(&["object_lock", state::DELIVERED]).inc();
                tracing::info!(key, seq = head.seq, "ledger head published write-once");
            }
            Err(error) => {
                metrics().deliveries.with_label_values(&["object_lock", state::RETRYING]).inc();
                tracing::warn!(error, "publishing the ledger head write-once failed; the next round tries again");
            }
        }
    }

    /// Sends this node's signed ledger head to the ledger destination; its state row has the id
    /// `ledger:<node>:<seq>`. A failure is recorded and the next round tries again.
    async fn publish_ledger_head(&mut self) {
        let Some(ledger) = self.config.ledger.clone() else { return };
        if let Some(url) = &ledger.object_lock_url {
            self.publish_locked(url, ledger.retain_days).await;
        }
        let Some(name) = &ledger.destination else { return };
        let Some(destination) = self.destinations.iter().position(|d| d.config.name == *name) else {
            return;
        };
        let head = self.store.ledger_head();
        let signed = match self.store.location().get_opt(&store::ledger::head_path(&head.node)).await {
            Ok(bytes) => bytes.map(|b| String::from_utf8_lossy(&b).into_owned()),
            Err(e) => {
                tracing::warn!(error = %e, "ledger head unreadable; not published this round");
                return;
            }
        };
        let body = serde_json::to_vec(&serde_json::json!({
            "kind": "coldtrail.ledger_head",
            "node": head.node,
            "seq": head.seq,
            "hash": head.hash,
            "ts": head.ts,
            "signed_head": signed,
        }))
        .expect("json");
        let id = format!("ledger:{}:{}", head.node, head.seq);
        let d = &self.destinations[destination];
        let request = post(&self.client, d, d.config.url.clone(), body);
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                self.record(&id, destination, state::DELIVERED, 1, Some(response.status().as_u16()), None)
            }
            Ok(response) => {
                let status = response.status().as_u16();
                self.record(&id, destination, state::RETRYING, 1, Some(status), Some(format!("HTTP {status}")))
            }
            Err(e) => self.record(&id, destination, state::RETRYING, 1, None, Some(delivery_error(e))),
        }
    }

    fn record(
        &mut self,
        alert_id: &str,
        destination: usize,
        state: &str,
        attempt: u32,
        status: Option<u16>,
        error: Option<String>,
    ) {
        let name = self.destinations[destination].config.name.clone();
        metrics().deliveries.with_label_values(&[&name, state]).inc();
        self.rows.push(AlertDeliveryRow {
            ts: 0,
            alert_id: alert_id.to_string(),
            destination: name,
            state: Some(state.to_string()),
            attempt: Some(i64::from(attempt)),
            http_status: status.map(i64::from),
            error,
        });
    }

    async fn write_rows(&mut self) -> Result<(), AlertingError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let ts = now_us();
        let rows: Vec<_> = self.rows.drain(..).map(|row| AlertDeliveryRow { ts, ..row }).collect();
        if let Some(batch) = AlertDeliveryRow::batch(&rows) {
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.append(&[(Table::AlertDeliveries, batch)], &[]))
                .await
                .map_err(|e| AlertingError::Internal(format!("the task storing delivery states failed: {e}")))??;
        }
        for (i, d) in self.destinations.iter().enumerate() {
            let pending = self.jobs.values().filter(|j| j.destination == i).count();
            metrics().pending.with_label_values(&[&d.config.name]).set(pending as i64);
        }
        Ok(())
    }

    fn enqueue(&mut self, job: Job, due_us: i64) {
        self.seq += 1;
        self.jobs.insert((due_us, self.seq), job);
    }

    /// Reads the suppressions added at run time, at most every `SUPPRESSIONS_READ_EVERY`; a failed read
    /// keeps the last list.
    async fn read_suppressions(&mut self) {
        if self.suppressions_read.is_some_and(|at| at.elapsed() < SUPPRESSIONS_READ_EVERY) {
            return;
        }
        self.suppressions_read = Some(std::time::Instant::now());
        match store::suppressions::read(self.store.location()).await {
            Ok(list) => {
                self.runtime_suppressions = list
                    .into_iter()
                    .map(|s| crate::config::Suppression {
                        detector: s.detector,
                        function: s.function,
                        principal: s.principal,
                        until: s.until,
                        reason: format!("{} (suppression {} by {})", s.reason, s.id, s.added_by),
                    })
                    .collect();
            }
            Err(e) => {
                tracing::warn!(error = %e, "the suppressions added at run time are unreadable; the last ones hold")
            }
        }
    }

    /// The suppression that holds for `alert` now: configured or added at run time.
    fn suppression(&self, alert: &AlertDoc, now: i64) -> Option<String> {
        let mut all = self.config.suppress.iter().chain(&self.runtime_suppressions);
        all.find(|s| s.holds(alert, now)).map(|s| s.reason.clone())
    }

    /// Stored alerts and incident rows: alerts as they are, incidents as the messages they call for.
    fn admit_appended(&mut self, appended: &store::Appended) {
        for (table, batch) in &appended.batches {
            match table {
                Table::Incidents => {
                    let rows = IncidentRow::from_batch(batch).unwrap_or_else(|e| {
                        tracing::error!(error = %e, "an incidents batch that does not decode; no message for it");
                        Vec::new()
                    });
                    let messages = self.incident_messages(&rows);
                    self.admit(messages);
                }
                _ => {
                    let mut alerts = AlertDoc::rows(batch);
                    for alert in &mut alerts {
                        alert.incident_id = self.incident_of.get(&alert.id).cloned();
                    }
                    self.admit(alerts);
                }
            }
        }
    }

    /// The messages incident rows call for (in their order), remembering what each announced and which
    /// incident holds each alert.
    fn incident_messages(&mut self, rows: &[IncidentRow]) -> Vec<AlertDoc> {
        if self.incident_of.len() > INCIDENTS_REMEMBERED_MAX {
            self.incident_of.clear();
        }
        let mut messages = Vec::new();
        for row in rows {
            let alert_ids: Vec<String> =
                row.alert_ids.as_deref().and_then(|ids| serde_json::from_str(ids).ok()).unwrap_or_default();
            for alert_id in alert_ids {
                self.incident_of.insert(alert_id, row.incident_id.clone());
            }
            if let Some(message) = AlertDoc::incident_message(row, self.announced.get(&row.incident_id).copied()) {
                self.announced.insert(row.incident_id.clone(), message.severity);
                messages.push(message);
            }
        }
        messages
    }

    /// New stored alerts or incident messages: route, suppress or queue each, once per id and destination.
    fn admit(&mut self, alerts: Vec<AlertDoc>) {
        let now = now_us();
        for alert in alerts {
            for destination in 0..self.destinations.len() {
                if !self.destinations[destination].config.routes(&alert)
                    || !self.known.insert((alert.id.clone(), destination))
                {
                    continue;
                }
                if let Some(reason) = self.suppression(&alert, now) {
                    self.record(&alert.id, destination, state::SUPPRESSED, 0, None, Some(reason));
                    continue;
                }
                self.record(&alert.id, destination, state::PENDING, 0, None, None);
                self.enqueue(Job { alert: alert.clone(), destination, attempt: 0, first_us: now }, now);
            }
        }
    }

    /// Queues again what an earlier run on this data directory left undelivered: alerts this node stored,
    /// younger than the give-up horizon, whose last delivery state for a destination is not final (or
    /// that never got one).
    async fn recover(&mut self) -> Result<(), AlertingError> {
        self.read_suppressions().await;
        let horizon = now_us() - self.config.give_up_after_secs as i64 * 1_000_000;
        let mut last: HashMap<(String, String), (i64, String, u32)> = HashMap::new();
        // This node's alerts and deliveries only: in a cluster each process delivers what it stored (its
        // subscription), and another live process's deliveries may not be sealed yet; read here, its
        // alerts would look undelivered and be sent twice.
        let deliveries = self.store.scan_own(Table::AlertDeliveries, None, TimeRange::ALL).await?;
        for batch in &deliveries {
            let columns = AlertDeliveryRow::columns(batch)?;
            for row in (0..columns.rows()).map(|i| AlertDeliveryRow::read(&columns, i)) {
                let state = row.state.unwrap_or_default();
                let attempt = row.attempt.map_or(0, |a| a as u32);
                let entry = last.entry((row.alert_id.to_string(), row.destination.to_string())).or_insert((
                    i64::MIN,
                    String::new(),
                    0,
                ));
                // A final state wins over anything written at the same time.
                if row.ts > entry.0 || (row.ts == entry.0 && state::is_final(state)) {
                    *entry = (row.ts, state.to_string(), attempt);
                }
            }
        }
        let stored = self.store.scan_own(Table::Alerts, None, TimeRange::new(horizon, i64::MAX)).await?;
        let mut alerts: Vec<AlertDoc> = Vec::new();
        let mut seen = HashSet::new();
        for batch in &stored {
            for alert in AlertDoc::rows(batch) {
                if seen.insert(alert.id.clone()) {
                    alerts.push(alert);
                }
            }
        }
        // Incidents' messages, made again from this node's rows in their order: the same ids.
        let mut incidents: Vec<IncidentRow> = Vec::new();
        for batch in self.store.scan_own(Table::Incidents, None, TimeRange::new(horizon, i64::MAX)).await? {
            incidents.extend(IncidentRow::from_batch(&batch)?);
        }
        incidents.sort_by(|a, b| (a.ts, &a.incident_id).cmp(&(b.ts, &b.incident_id)));
        let messages = self.incident_messages(&incidents);
        for alert in &mut alerts {
            alert.incident_id = self.incident_of.get(&alert.id).cloned();
        }
        alerts.extend(messages);
        let now = now_us();
        let mut requeued = 0;
        for alert in alerts {
            for destination in 0..self.destinations.len() {
                if !self.destinations[destination].config.routes(&alert) {
                    continue;
                }
                let name = self.destinations[destination].config.name.clone();
                self.known.insert((alert.id.clone(), destination));
                let last = last.get(&(alert.id.clone(), name));
                if last.is_none_or(|(_, s, _)| !state::is_final(s)) {
                    // A suppression holds for an alert left by an earlier run as for a new one.
                    if let Some(reason) = self.suppression(&alert, now) {
                        self.record(&alert.id, destination, state::SUPPRESSED, 0, None, Some(reason));
                        continue;
                    }
                }
                match last {
                    Some((_, s, _)) if state::is_final(s) => {}
                    Some((_, _, attempt)) => {
                        requeued += 1;
                        self.enqueue(Job { alert: alert.clone(), destination, attempt: *attempt, first_us: now }, now);
                    }
                    None => {
                        requeued += 1;
                        self.record(&alert.id, destination, state::PENDING, 0, None, None);
                        self.enqueue(Job { alert: alert.clone(), destination, attempt: 0, first_us: now }, now);
                    }
                }
            }
        }
        if requeued > 0 {
            tracing::info!(requeued, "alert deliveries left by an earlier run queued again");
        }
        Ok(())
    }

    /// Starts the requests that are due, within each destination's circuit and rate.
    fn dispatch(&mut self, in_flight: &mut JoinSet<(Job, Outcome)>) {
        let now = now_us();
        while in_flight.len() < IN_FLIGHT_MAX {
            let Some((&(due, seq), _)) = self.jobs.iter().next() else { break };
            if due > now {
                break;
            }
            let job = self.jobs.remove(&(due, seq)).expect("present");
            let destination = &mut self.destinations[job.destination];
            if destination.open_until_us > now {
                let reopen = destination.open_until_us;
                self.enqueue(job, reopen);
                continue;
            }
            if let Err(at) = destination.take_token(now) {
                self.enqueue(job, at);
                continue;
            }
            let request = build_request(&self.client, destination, &job.alert);
            in_flight.spawn(async move {
                let outcome = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let body: String = response.text().await.unwrap_or_default().chars().take(200).collect();
                        let error = redact_urls(&format!("HTTP {status}: {body}"));
                        match status {
                            200..=299 => Outcome::Delivered(status),
                            408 | 429 | 500..=599 => Outcome::Retry(Some(status), error),
                            _ => Outcome::Reject(status, error),
                        }
                    }
                    Err(e) => Outcome::Retry(None, delivery_error(e)),
                };
                (job, outcome)
            });
        }
    }

    fn settle(&mut self, mut job: Job, outcome: Outcome) {
        let now = now_us();
        let give_up = self.config.give_up_after_secs as i64 * 1_000_000;
        let id = job.alert.id.clone();
        match outcome {
            Outcome::Delivered(status) => {
                let destination = &mut self.destinations[job.destination];
                destination.consecutive_failures = 0;
                let name = destination.config.name.clone();
                metrics().latency.with_label_values(&[&name]).observe((now - job.first_us) as f64 / 1e6);
                self.record(&id, job.destination, state::DELIVERED, job.attempt + 1, Some(status), None);
            }
            Outcome::Reject(status, error) => {
                tracing::warn!(alert = %id, status, error, "destination refused an alert; not retried");
                self.record(&id, job.destination, state::FAILED, job.attempt + 1, Some(status), Some(error));
            }
            Outcome::Retry(status, error) => {
                job.attempt += 1;
                let destination = &mut self.destinations[job.destination];
                destination.consecutive_failures += 1;
                let backoff = destination.backoff_us(job.attempt - 1);
                if destination.consecutive_failures >= destination.config.breaker_failures {
                    let open =
                        destination.backoff_us(destination.consecutive_failures - destination.config.breaker_failures);
                    destination.open_until_us = now + open;
                }
                if now - job.first_us >= give_up {
                    self.record(&id, job.destination, state::FAILED, job.attempt, status, Some(error));
                } else {
                    self.record(&id, job.destination, state::RETRYING, job.attempt, status, Some(error));
                    self.enqueue(job, now + backoff);
                }
            }
        }
    }
}

/// A failed request as stored in `alert_deliveries.error`, which analysts read: the error and its causes
/// without the destination's URL (a Slack or PagerDuty URL is the credential).
fn delivery_error(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    redact_urls(&text)
}

/// `text` with every `http://…` and `https://…` (to the next space or quote) replaced by `<url>`: a
/// receiver's answer or a cause may echo the URL it was called on.
fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some(start) = ["http://", "https://"].iter().filter_map(|scheme| lower.find(scheme)).min() else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        out.push_str("<url>");
        let end =
            rest[start..].find(|c: char| c.is_whitespace() || "\"'<>)".contains(c)).map_or(rest.len(), |e| start + e);
        rest = &rest[end..];
    }
}

fn build_request(client: &reqwest::Client, destination: &Destination, alert: &AlertDoc) -> reqwest::RequestBuilder {
    let config = &destination.config;
    let (url, body) = match config.kind {
        Kind::Webhook => (config.url.clone(), payload::webhook_body(alert)),
        Kind::Slack => (config.url.clone(), payload::slack_body(alert)),
        Kind::Alertmanager => {
            let url = if config.url.ends_with("/api/v2/alerts") {
                config.url.clone()
            } else {
                format!("{}/api/v2/alerts", config.url.trim_end_matches('/'))
            };
            (url, payload::alertmanager_body(alert))
        }
        Kind::Pagerduty => {
            (config.url.clone(), payload::pagerduty_body(alert, config.routing_key.as_deref().unwrap_or_default()))
        }
    };
    post(client, destination, url, body)
}

/// A JSON POST to a destination within its timeout; webhooks with a secret are signed.
fn post(client: &reqwest::Client, destination: &Destination, url: String, body: Vec<u8>) -> reqwest::RequestBuilder {
    let config = &destination.config;
    let mut request = client
        .post(url)
        .timeout(Duration::from_secs_f64(config.timeout_secs))
        .header("content-type", "application/json")
        .header("user-agent", concat!("coldtrail/", env!("CARGO_PKG_VERSION")));
    if let (Kind::Webhook, Some(secret)) = (config.kind, &destination.secret) {
        request = request.header(SIGNATURE_HEADER, payload::sign(secret, now_us() / 1_000_000, &body));
    }
    request.body(body)
}

#[cfg(test)]
mod tests {
    #[test]
    fn stored_delivery_errors_carry_no_url() {
        assert_eq!(
            super::redact_urls("HTTP 404: no such hook https://hooks.slack.com/services/T0/B0/XyZsecret, try again"),
            "HTTP 404: no such hook <url> try again"
        );
        assert_eq!(super::redact_urls("(HTTP://h/x?token=1) ok"), "(<url>) ok");
        assert_eq!(super::redact_urls("connection refused"), "connection refused");
    }

    use super::*;

    fn destination(rate: f64) -> Destination {
        let mut config = DestinationConfig::webhook("http://127.0.0.1:1/hook");
        config.rate_per_second = rate;
        config.backoff_initial_secs = 1.0;
        config.backoff_max_secs = 8.0;
        config.breaker_failures = 3;
        Destination {
            config,
            secret: None,
            consecutive_failures: 0,
            open_until_us: 0,
            tokens: rate.max(1.0),
            tokens_at_us: 0,
        }
    }

    #[test]
    fn the_rate_limit_hands_out_tokens_at_its_rate() {
        let mut d = destination(2.0);
        assert!(d.take_token(0).is_ok() && d.take_token(0).is_ok());
        let next = d.take_token(0).unwrap_err();
        assert!((499_000..=501_000).contains(&next), "{next}");
        assert!(d.take_token(next).is_ok());
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_bound() {
        let d = destination(1.0);
        for attempt in 0..10u32 {
            let ceiling = (1.0 * 2f64.powi(attempt as i32)).min(8.0) * 1e6;
            for _ in 0..20 {
                let backoff = d.backoff_us(attempt) as f64;
                assert!(backoff >= ceiling * 0.5 - 1.0 && backoff <= ceiling, "attempt {attempt}: {backoff}");
            }
        }
    }

    #[tokio::test]
    async fn consecutive_failures_open_the_circuit_and_a_success_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(store::StoreConfig::new(dir.path())).await.unwrap());
        let mut config = AlertingConfig { destinations: vec![destination(1.0).config], ..AlertingConfig::default() };
        config.give_up_after_secs = 3_600;
        let mut outbox = Outbox::new(store, config);
        let alert = AlertDoc {
            id: "a".into(),
            ts: String::new(),
            detector: "trail.stopped".into(),
            severity: store::alerts::Severity::Critical,
            title: String::new(),
            function: None,
            entity: None,
            window_start: None,
            window_end: None,
            score: None,
            count: 1,
            observed: serde_json::Value::Null,
            expected: serde_json::Value::Null,
            evidence: serde_json::Value::Null,
            attack_ids: serde_json::Value::Null,
            query: None,
            entities: Vec::new(),
            incident_id: None,
        };
        let job = || Job { alert: alert.clone(), destination: 0, attempt: 0, first_us: now_us() };
        for _ in 0..2 {
            outbox.settle(job(), Outcome::Retry(Some(503), "down".into()));
        }
        assert_eq!(outbox.destinations[0].open_until_us, 0, "below the threshold the circuit stays closed");
        outbox.settle(job(), Outcome::Retry(None, "connection refused".into()));
        assert!(outbox.destinations[0].open_until_us > now_us(), "the third failure opens it");
        // While open, a due job is put back to the reopening time without an attempt.
        let mut in_flight = JoinSet::new();
        outbox.jobs.clear();
        outbox.enqueue(job(), 0);
        outbox.dispatch(&mut in_flight);
        assert!(in_flight.is_empty());
        assert_eq!(outbox.jobs.keys().next().unwrap().0, outbox.destinations[0].open_until_us);
        outbox.settle(job(), Outcome::Delivered(200));
        assert_eq!(outbox.destinations[0].consecutive_failures, 0);
        // A refusal (4xx) is final: no retry is queued.
        let queued = outbox.jobs.len();
        outbox.settle(job(), Outcome::Reject(400, "bad request".into()));
        assert_eq!(outbox.jobs.len(), queued);
        assert_eq!(outbox.rows.last().and_then(|r| r.state.as_deref()), Some(state::FAILED));
    }
}

//! The CloudWatch Logs API as a pull source (`coldtrail ingest cloudwatch://PREFIX`, `[[sources]]` kind
//! `cloudwatch`), reading log groups as logstash's `cloudwatch_logs` input does, with nothing to export
//! or subscribe:
//! - log groups are found by prefix (`DescribeLogGroups`, `/aws/lambda/` by default) and looked for
//!   again while it runs;
//! - each is read with `FilterLogEvents` from its stored position (or `since`), page after page, each
//!   page's rows stored with the group's position (the newest event time stored) in one append;
//! - CloudWatch makes events readable some time after their timestamp, so every read starts `overlap`
//!   before the position, and events already stored are dropped by event id: nothing missed within the
//!   overlap, nothing doubled. After a restart the ids of the overlap are read back from the store;
//! - `ThrottlingException` and server errors are retried with exponential backoff and full jitter;
//!   every request counts in `cloudwatch_requests_total{outcome}`.
//!
//! Requests are signed and credentials found as `store::aws` does; the endpoint comes from
//! `AWS_ENDPOINT_URL_CLOUDWATCH_LOGS` or `AWS_ENDPOINT_URL`.

use std::collections::HashMap;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use serde_json::{json, Value as Json};
use store::{Table, TimeRange};

use crate::error::IngestError;
use crate::pipeline::Pipeline;
use crate::sink::StoreSink;

/// Overlap re-read before a group's position by default: CloudWatch's ingestion delay.
pub const OVERLAP_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// How long a throttled or failed request is retried before the pass gives up (and the next pass
/// resumes from the stored position).
const RETRY_FOR: Duration = Duration::from_secs(120);
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(20);
/// Requests a second, below CloudWatch Logs' default quota of 5 a second per action.
const REQUESTS_PER_SECOND: f64 = 4.0;

/// The requests made, by outcome.
fn requests_metric() -> &'static prometheus::IntCounterVec {
    static METRIC: std::sync::OnceLock<prometheus::IntCounterVec> = std::sync::OnceLock::new();
    METRIC.get_or_init(|| {
        prometheus::register_int_counter_vec!(
            "cloudwatch_requests_total",
            "CloudWatch Logs API requests, by outcome (ok, throttled, error).",
            &["outcome"]
        )
        .expect("metric registers once")
    })
}

/// What the source reads.
#[derive(Clone, Debug)]
pub struct LogsApiConfig {
    /// Log group name prefixes (`/aws/lambda/`), or whole names.
    pub prefixes: Vec<String>,
    /// Where a group never read before starts, milliseconds since the epoch.
    pub since_ms: i64,
    pub overlap: Duration,
    /// Between passes over the groups (`serve`).
    pub poll: Duration,
}

/// One log event as `FilterLogEvents` returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiEvent {
    pub event_id: String,
    pub timestamp_ms: i64,
    pub log_stream: String,
    pub message: String,
}

/// Counts of one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassStats {
    pub groups: u64,
    pub requests: u64,
    pub events: u64,
    /// Events of the overlap stored before, dropped.
    pub duplicates: u64,
}

/// The event ids of one group stored within the overlap behind its newest event: what a re-read of the
/// overlap drops.
#[derive(Debug, Default)]
pub struct Seen {
    ids: HashMap<String, i64>,
    newest_ms: i64,
}

impl Seen {
    /// Whether an event is new; notes it.
    pub fn fresh(&mut self, event_id: &str, timestamp_ms: i64) -> bool {
        if self.ids.contains_key(event_id) {
            return false;
        }
        self.ids.insert(event_id.to_string(), timestamp_ms);
        self.newest_ms = self.newest_ms.max(timestamp_ms);
        true
    }

    /// Forgets the ids older than the overlap behind the newest event: they are never read again.
    pub fn prune(&mut self, overlap_ms: i64) {
        let cutoff = self.newest_ms.saturating_sub(overlap_ms);
        self.ids.retain(|_, ts| *ts >= cutoff);
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Where a read of a group starts: the overlap before its stored position, or `since` the first time.
pub fn read_from(position_ms: Option<u64>, since_ms: i64, overlap_ms: i64) -> i64 {
    match position_ms {
        Some(position) => (position as i64).saturating_sub(overlap_ms).max(0),
        None => since_ms,
    }
}

/// The position stream of a log group.
pub fn stream_of(group: &str) -> String {
    format!("cloudwatch:{group}")
}

/// A signed client of the CloudWatch Logs API.
pub struct LogsApi {
    next_request: tokio::sync::Mutex<tokio::time::Instant>,
    aws: store::aws::Aws,
    endpoint: String,
}

impl LogsApi {
    pub fn from_env() -> Result<Self, IngestError> {
        let aws = store::aws::Aws::from_env().map_err(IngestError::Config)?;
        let endpoint = aws.endpoint("logs", "CLOUDWATCH_LOGS");
        Ok(LogsApi { next_request: tokio::sync::Mutex::new(tokio::time::Instant::now()), aws, endpoint })
    }

    /// One signed request, retried with backoff and full jitter while throttled or failing on the
    /// server's side, for up to `RETRY_FOR`.
    async fn call(&self, action: &str, body: &Json) -> Result<Json, IngestError> {
        let started = std::time::Instant::now();
        let mut backoff = BACKOFF_FIRST;
        loop {
            let (retry, error) = match self.call_once(action, body).await {
                Ok(answer) => {
                    requests_metric().with_label_values(&["ok"]).inc();
                    return Ok(answer);
                }
                Err(failure) => failure,
            };
            let outcome = if error.contains("Throttling") { "throttled" } else { "error" };
            requests_metric().with_label_values(&[outcome]).inc();
            if !retry || started.elapsed() > RETRY_FOR {
                return Err(IngestError::Api(format!("CloudWatch Logs {action}: {error}")));
            }
            tracing::warn!(action, error, "CloudWatch Logs request failed; retrying");
            let jitter = backoff.mul_f64(rand_unit());
            tokio::time::sleep(jitter).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One request: its answer, or whether to retry and why not.
    async fn call_once(&self, action: &str, body: &Json) -> Result<Json, (bool, String)> {
        {
            let mut next = self.next_request.lock().await;
            tokio::time::sleep_until(*next).await;
            *next = tokio::time::Instant::now() + Duration::from_secs_f64(1.0 / REQUESTS_PER_SECOND);
        }
        let headers = [
            ("content-type", "application/x-amz-json-1.1".to_string()),
            ("x-amz-target", format!("Logs_20140328.{action}")),
        ];
        let url = format!("{}/", self.endpoint);
        let (status, text) = self.aws.send("POST", &url, "logs", &headers, body.to_string().into_bytes()).await?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&text).map_err(|e| (false, format!("answer is not JSON: {e}")));
        }
        let kind = serde_json::from_str::<Json>(&text)
            .ok()
            .and_then(|j| j.get("__type").and_then(Json::as_str).map(|t| t.rsplit('#').next().unwrap_or(t).to_string()))
            .unwrap_or_default();
        let retry = status >= 500
            || status == 429
            || matches!(
                kind.as_str(),
                "ThrottlingException" | "ServiceUnavailableException" | "LimitExceededException"
            );
        Err((retry, format!("{status} {kind}: {}", store::rows::bounded(&text, 512))))
    }

    /// The log groups whose names start with `prefix`.
    pub async fn log_groups(&self, prefix: &str) -> Result<Vec<String>, IngestError> {
        let mut groups = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = json!({ "logGroupNamePrefix": prefix });
            if let Some(token) = &token {
                body["nextToken"] = json!(token);
            }
            let answer = self.call("DescribeLogGroups", &body).await?;
            groups.extend(
                answer["logGroups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g["logGroupName"].as_str())
                    .map(str::to_string),
            );
            match answer["nextToken"].as_str() {
                Some(next) if Some(next) != token.as_deref() => token = Some(next.to_string()),
                _ => return Ok(groups),
            }
        }
    }

    /// One page of a group's events from `start_ms` on, and the token of the next.
    pub async fn filter_page(
        &self,
        group: &str,
        start_ms: i64,
        token: Option<&str>,
    ) -> Result<(Vec<ApiEvent>, Option<String>), IngestError> {
        let mut body = json!({ "logGroupName": group, "startTime": start_ms, "interleaved": true });
        if let Some(token) = token {
            body["nextToken"] = json!(token);
        }
        let answer = self.call("FilterLogEvents", &body).await?;
        let events = answer["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some(ApiEvent {
                    event_id: e["eventId"].as_str()?.to_string(),
                    timestamp_ms: e["timestamp"].as_i64()?,
                    log_stream: e["logStreamName"].as_str().unwrap_or_default().to_string(),
                    message: e["message"].as_str().unwrap_or_default().to_string(),
                })
            })
            .collect();
        let next = answer["nextToken"].as_str().filter(|next| Some(*next) != token).map(str::to_string);
        Ok((events, next))
    }
}

/// A uniform number in [0, 1) for jitter.
fn rand_unit() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// The source: groups, their positions and the ids of their overlaps.
pub struct CloudWatchSource {
    api: LogsApi,
    config: LogsApiConfig,
    seen: HashMap<String, Seen>,
}

impl CloudWatchSource {
    pub fn new(api: LogsApi, config: LogsApiConfig) -> Self {
        CloudWatchSource { api, config, seen: HashMap::new() }
    }

    pub fn config(&self) -> &LogsApiConfig {
        &self.config
    }

    /// The ids of a group's events stored within the overlap behind its position, read back from the
    /// store (rows and dead letters name them in `ingest_position`).
    async fn seen_from_store(&self, sink: &StoreSink, group: &str, position_ms: u64) -> Result<Seen, IngestError> {
        let stream = stream_of(group);
        let overlap_ms = self.config.overlap.as_millis() as i64;
        let from_us = (position_ms as i64).saturating_sub(overlap_ms).saturating_mul(1000);
        let mut seen = Seen::default();
        for table in [Table::Logs, Table::DeadLetters] {
            let schema = table.schema();
            let columns: Vec<usize> = [table.time_column(), "ingest_source", "ingest_position"]
                .iter()
                .filter_map(|name| schema.index_of(name).ok())
                .collect();
            let batches = sink.store().scan(table, Some(&columns), TimeRange::new(from_us, i64::MAX)).await?;
            for batch in batches {
                let sources = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Utf8)
                    .map_err(|e| IngestError::Internal(e.to_string()))?;
                let sources = sources.as_string::<i32>();
                let positions = batch.column(2).as_string::<i32>();
                let times = batch.column(0).as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
                for row in 0..batch.num_rows() {
                    if sources.is_valid(row) && sources.value(row) == stream && positions.is_valid(row) {
                        seen.fresh(positions.value(row), times.value(row) / 1000);
                    }
                }
            }
        }
        Ok(seen)
    }

    /// One pass: finds the groups, and reads each from its position to now, storing page by page.
    /// Stops early, with what it read stored, when `stop` turns true.
    pub async fn pass(
        &mut self,
        sink: &StoreSink,
        pipeline: &mut Pipeline,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<PassStats, IngestError> {
        let mut stats = PassStats::default();
        let mut groups = Vec::new();
        for prefix in &self.config.prefixes {
            groups.extend(self.api.log_groups(prefix).await?);
            stats.requests += 1;
        }
        groups.sort();
        groups.dedup();
        let overlap_ms = self.config.overlap.as_millis() as i64;
        for group in groups {
            stats.groups += 1;
            let stream = stream_of(&group);
            let position = sink.store().position(&stream);
            if !self.seen.contains_key(&group) {
                let seen = match position {
                    Some(position) => self.seen_from_store(sink, &group, position).await?,
                    None => Seen::default(),
                };
                self.seen.insert(group.clone(), seen);
            }
            let start = read_from(position, self.config.since_ms, overlap_ms);
            let mut token: Option<String> = None;
            let mut newest = position.unwrap_or(0) as i64;
            loop {
                if *stop.borrow() {
                    return Ok(stats);
                }
                let (events, next) = self.api.filter_page(&group, start, token.as_deref()).await?;
                stats.requests += 1;
                let seen = self.seen.get_mut(&group).expect("inserted above");
                let fresh: Vec<ApiEvent> = events
                    .into_iter()
                    .filter(|e| {
                        let new = seen.fresh(&e.event_id, e.timestamp_ms);
                        stats.duplicates += u64::from(!new);
                        new
                    })
                    .collect();
                seen.prune(overlap_ms);
                stats.events += fresh.len() as u64;
                newest = fresh.iter().map(|e| e.timestamp_ms).fold(newest, i64::max);
                if !fresh.is_empty() {
                    pipeline.ingest_api_events(&stream, &group, &fresh);
                    let positions = vec![store::wal::Position { stream: stream.clone(), offset: newest.max(0) as u64 }];
                    sink.append(pipeline.take_batches(), positions, Vec::new()).await?;
                }
                match next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
        }
        Ok(stats)
    }

    /// Passes every `poll` until `stop`; errors are logged and the next pass resumes from the stored
    /// positions.
    pub async fn run(mut self, sink: StoreSink, name: String, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut pipeline = Pipeline::default();
        loop {
            match self.pass(&sink, &mut pipeline, &stop).await {
                Ok(stats) => tracing::debug!(source = %name, ?stats, "CloudWatch Logs pass"),
                Err(e) => {
                    crate::metrics::metrics().source_errors.with_label_values(&[&name]).inc();
                    tracing::error!(source = %name, error = %e, "CloudWatch Logs pass failed; resuming at the next");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                pipeline.finish();
                if let Err(e) = sink.append(pipeline.take_batches(), Vec::new(), Vec::new()).await {
                    tracing::error!(source = %name, error = %e, "storing at stop failed");
                }
                return;
            }
        }
    }
}

/// `coldtrail ingest cloudwatch://PREFIX[,PREFIX...]` (`/aws/lambda/` when empty): one pass over the
/// groups, each from its stored position (or `since_ms`) to now; returns a summary line.
///
/// # Errors
/// The client cannot be configured, or a request failed past its retries.
pub async fn ingest_url(
    url: &str,
    since_ms: i64,
    sink: &StoreSink,
    pipeline: &mut Pipeline,
) -> Result<String, IngestError> {
    let spec = url.strip_prefix("cloudwatch://").unwrap_or(url);
    let mut prefixes: Vec<String> = spec.split(',').filter(|p| !p.is_empty()).map(str::to_string).collect();
    if prefixes.is_empty() {
        prefixes.push("/aws/lambda/".to_string());
    }
    let config = LogsApiConfig { prefixes, since_ms, overlap: OVERLAP_DEFAULT, poll: Duration::ZERO };
    let mut source = CloudWatchSource::new(LogsApi::from_env()?, config);
    let (_stop, never) = tokio::sync::watch::channel(false);
    let stats = source.pass(sink, pipeline, &never).await?;
    pipeline.finish();
    sink.append(pipeline.take_batches(), Vec::new(), Vec::new()).await?;
    Ok(format!(
        "{url}: {} log groups, {} requests, {} events stored, {} read again in the overlap and dropped",
        stats.groups, stats.requests, stats.events, stats.duplicates
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reread_overlap_drops_what_was_stored_and_keeps_late_events() {
        let overlap_ms = 250_000;
        let mut seen = Seen::default();
        // First read: three events.
        for (id, ts) in [("a", 1_000_000), ("b", 1_100_000), ("c", 1_200_000)] {
            assert!(seen.fresh(id, ts));
        }
        // The position is the newest stored; the next read starts the overlap before it.
        assert_eq!(read_from(Some(1_200_000), 0, overlap_ms), 950_000);
        assert_eq!(read_from(None, 42, overlap_ms), 42);
        // The re-read returns b and c again, and d, which became readable late though older than c.
        let reread = [("b", 1_100_000), ("d", 1_150_000), ("c", 1_200_000), ("e", 1_300_000)];
        let fresh: Vec<&str> = reread.iter().filter(|(id, ts)| seen.fresh(id, *ts)).map(|(id, _)| *id).collect();
        assert_eq!(fresh, vec!["d", "e"]);
        // Ids older than the overlap behind the newest are forgotten: they are never read again.
        seen.prune(overlap_ms);
        assert_eq!(seen.len(), 4, "a is older than 1_300_000 - 250_000");
        assert!(seen.fresh("a", 1_000_000), "a forgotten");
    }
}

//! The streaming detectors inside `serve` and `ingest`: a thread of its own (never the async runtime)
//! that takes every stored `invocations` append from the store, runs `detect::Stream`, stores the alerts,
//! and checkpoints its state to `<data>/detect/checkpoint.json`. Also `coldtrail detect`, which replays
//! stored history through the same code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use detect::alert::alerts_batch;
use detect::security::{Security, SecurityConfig, SigmaRules};
use detect::{Alert, Deduplicator, Stream, StreamConfig, StreamStats};
use store::time::{hour_of, MICROS_PER_HOUR};
use store::{Store, Table, TimeRange};

use crate::commands::Paths;

/// Appends buffered between the store and the detectors before ingest waits.
const QUEUE_APPENDS_MAX: usize = 64;
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);
/// Alerts of one detector and entity within this much event time are one alert with a count.
pub const DEDUP_WINDOW_US: i64 = 10 * 60 * 1_000_000;
/// With no records for this long, event time follows the clock, so that a fleet that went silent is seen.
const IDLE_ADVANCE_AFTER: Duration = Duration::from_secs(120);

pub fn checkpoint_path(data: &Path) -> PathBuf {
    data.join("detect").join("checkpoint.json")
}

pub fn security_checkpoint_path(data: &Path) -> PathBuf {
    data.join("detect").join("security.json")
}

/// The Sigma rules: the shipped ones, and those under `dir` (or `COLDTRAIL_SIGMA_RULES`) when given.
pub fn sigma_rules(dir: Option<&Path>) -> anyhow::Result<SigmaRules> {
    let mut rules = SigmaRules::shipped();
    let from_env = std::env::var_os("COLDTRAIL_SIGMA_RULES").map(PathBuf::from);
    if let Some(dir) = dir.map(Path::to_path_buf).or(from_env) {
        let added = rules.load_dir(&dir)?;
        tracing::info!(dir = %dir.display(), added, skipped = rules.skipped.len(), "Sigma rules loaded");
    }
    Ok(rules)
}

/// The security detections, with their learned state if there is a usable checkpoint.
pub fn load_security(data: &Path, rules: SigmaRules) -> Security {
    let path = security_checkpoint_path(data);
    let mut security = Security::new(SecurityConfig::default(), rules);
    match std::fs::read(&path) {
        Ok(bytes) => {
            if let Err(e) = security.restore_state(&bytes) {
                tracing::warn!(path = %path.display(), error = %e, "security checkpoint not used; learning afresh");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "security checkpoint unreadable; learning afresh"),
    }
    security
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().expect("checkpoints live in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let temporary = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// Loads the checkpoint if there is a usable one; otherwise starts afresh and says why.
pub fn load_stream(data: &Path, config: StreamConfig) -> Stream {
    let path = checkpoint_path(data);
    match std::fs::read(&path) {
        Ok(bytes) => match Stream::restore(config.clone(), &bytes) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "detector checkpoint not used; baselines start afresh");
                Stream::new(config)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stream::new(config),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "detector checkpoint unreadable; baselines start afresh");
            Stream::new(config)
        }
    }
}

/// Writes the checkpoints atomically: a temporary file, fsynced, renamed over the old one.
pub fn save_checkpoint(data: &Path, stream: &Stream, security: &Security) -> anyhow::Result<()> {
    write_atomically(&checkpoint_path(data), &stream.checkpoint()?)?;
    write_atomically(&security_checkpoint_path(data), &security.checkpoint()?)?;
    detect::metrics::metrics().checkpoints.inc();
    Ok(())
}

fn store_alerts(store: &Store, alerts: &[Alert]) -> anyhow::Result<()> {
    if let Some(batch) = alerts_batch(alerts) {
        store.append(&[(Table::Alerts, batch)], &[]).context("cannot store alerts")?;
    }
    Ok(())
}

/// The detection thread of a running process.
pub struct Detection {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<StreamStats>>,
}

impl Detection {
    /// Subscribes to the store's appends and starts the thread.
    pub fn start(store: Arc<Store>, data: &Path, config: StreamConfig) -> anyhow::Result<Detection> {
        let receiver = store.subscribe(&Security::TABLES, QUEUE_APPENDS_MAX);
        let stream = load_stream(data, config);
        let security = load_security(data, sigma_rules(None)?);
        let stop = Arc::new(AtomicBool::new(false));
        let data = data.to_path_buf();
        let thread = std::thread::Builder::new().name("detect".into()).spawn({
            let stop = stop.clone();
            move || run(&store, &data, stream, security, receiver, &stop)
        })?;
        Ok(Detection { stop, thread })
    }

    /// Scores what is queued, stores its alerts, checkpoints and ends the thread.
    pub fn stop(self) -> anyhow::Result<StreamStats> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().map_err(|_| anyhow::anyhow!("the detection thread panicked"))?
    }
}

fn run(
    store: &Store,
    data: &Path,
    mut stream: Stream,
    mut security: Security,
    receiver: std::sync::mpsc::Receiver<store::Appended>,
    stop: &AtomicBool,
) -> anyhow::Result<StreamStats> {
    let mut alerts = Vec::new();
    let mut dedup = Deduplicator::new(DEDUP_WINDOW_US);
    let mut published = StreamStats::default();
    let mut last_checkpoint = Instant::now();
    let mut last_record = Instant::now();
    let mut idle_now = None;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(appended) => {
                for (table, batch) in &appended.batches {
                    if *table == Table::Invocations {
                        stream.push(batch, &mut alerts);
                    }
                    security.push(*table, batch, &mut alerts);
                }
                last_record = Instant::now();
            }
            Err(RecvTimeoutError::Timeout) if stopping => break,
            Err(RecvTimeoutError::Timeout) => {
                if last_record.elapsed() >= IDLE_ADVANCE_AFTER {
                    let now = store::time::now_micros();
                    if now > stream.watermark_us() {
                        stream.advance_to(now, &mut alerts);
                    }
                    idle_now = Some(now);
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let mut stored = dedup.admit(std::mem::take(&mut alerts));
        if let Some(now) = idle_now.take() {
            // Groups whose window ended while nothing arrived get their final rows.
            stored.extend(dedup.close_until(now));
        }
        if !stored.is_empty() {
            store_alerts(store, &stored)?;
        }
        let stats = stream.stats();
        detect::metrics::publish(&stats, &published, &stored);
        published = stats;
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            if let Err(e) = save_checkpoint(data, &stream, &security) {
                tracing::error!(error = %e, "detector checkpoint failed; retrying in a minute");
            }
            last_checkpoint = Instant::now();
        }
    }
    store_alerts(store, &dedup.close_all())?;
    save_checkpoint(data, &stream, &security)?;
    Ok(stream.stats())
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Replay stored invocations from this time (RFC 3339); defaults to the oldest stored.
    #[arg(long)]
    from: Option<String>,
    /// Replay up to this time (RFC 3339, exclusive); defaults to everything stored.
    #[arg(long)]
    to: Option<String>,
}

/// `coldtrail detect`: replays stored invocations, hour by hour in time order, through fresh detectors
/// and stores the alerts they raise (alert ids are stable: a replay raises the same ids again).
pub async fn backfill(paths: &Paths, args: DetectArgs) -> anyhow::Result<ExitCode> {
    let parse = |text: &Option<String>, flag: &str| -> anyhow::Result<Option<i64>> {
        text.as_ref()
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|d| d.timestamp_micros())
                    .with_context(|| format!("--{flag} {t:?} is not an RFC 3339 time"))
            })
            .transpose()
    };
    let from = parse(&args.from, "from")?;
    let to = parse(&args.to, "to")?;
    let store = Store::open(paths.store_config()).await.context("cannot open the store")?;
    let Some((oldest, newest)) = stored_span(&store) else {
        outln!("no stored invocations to replay");
        return Ok(ExitCode::SUCCESS);
    };
    let start = from.unwrap_or(oldest);
    let end = to.unwrap_or(newest + 1);
    let mut stream = Stream::new(StreamConfig::default());
    let mut dedup = Deduplicator::new(DEDUP_WINDOW_US);
    let mut alerts = Vec::new();
    let mut n_alerts = 0;
    let mut hour = hour_of(start);
    while hour < end {
        let range = TimeRange::new(hour.max(start), (hour + MICROS_PER_HOUR).min(end));
        let batches = store.scan(Table::Invocations, None, range).await?;
        if let Some(batch) = sorted_by_time(&batches)? {
            stream.push(&batch, &mut alerts);
        }
        let stored = dedup.admit(std::mem::take(&mut alerts));
        n_alerts += stored.len();
        store_alerts(&store, &stored)?;
        hour += MICROS_PER_HOUR;
    }
    stream.advance_to(end + StreamConfig::default().lateness_us + 60_000_000, &mut alerts);
    let mut stored = dedup.admit(std::mem::take(&mut alerts));
    stored.extend(dedup.close_all());
    n_alerts += stored.len();
    store_alerts(&store, &stored)?;
    store.flush_all().await?;
    let stats = stream.stats();
    outln!(
        "replayed {} invocations: {} function-minutes scored, {n_alerts} alerts stored",
        stats.records,
        stats.minutes_scored
    );
    Ok(ExitCode::SUCCESS)
}

/// The oldest and newest event time of stored invocations, from segment metadata and hot rows.
fn stored_span(store: &Store) -> Option<(i64, i64)> {
    stored_span_of(store, Table::Invocations)
}

/// The oldest and newest event time of a table's rows.
fn stored_span_of(store: &Store, table: Table) -> Option<(i64, i64)> {
    let snapshot = store.snapshot(table, TimeRange::ALL);
    let mut span: Option<(i64, i64)> = None;
    let mut widen = |min: i64, max: i64| {
        span = Some(span.map_or((min, max), |(a, b)| (a.min(min), b.max(max))));
    };
    for segment in &snapshot.segments {
        widen(segment.min_ts_micros, segment.max_ts_micros);
    }
    for batch in &snapshot.hot {
        if let Some(times) = batch.column(0).as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>() {
            if let (Some(min), Some(max)) = (arrow::compute::min(times), arrow::compute::max(times)) {
                widen(min, max);
            }
        }
    }
    span
}

fn sorted_by_time(batches: &[arrow::array::RecordBatch]) -> anyhow::Result<Option<arrow::array::RecordBatch>> {
    if batches.is_empty() {
        return Ok(None);
    }
    let batch = arrow::compute::concat_batches(&batches[0].schema(), batches)?;
    let order = arrow::compute::sort_to_indices(batch.column(0), None, None)?;
    Ok(Some(arrow::compute::take_record_batch(&batch, &order)?))
}

#[derive(Args, Debug)]
pub struct DetectSeriesArgs {
    /// A `timestamp,value` CSV file (a header line is skipped); timestamps as `YYYY-MM-DD HH:MM:SS`,
    /// RFC 3339 or epoch seconds.
    file: PathBuf,
    /// Where to write `timestamp,value,anomaly_score` (NAB's results format); standard output by default.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// `coldtrail detect-series`: the univariate detector over one series file.
pub fn detect_series(args: DetectSeriesArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("cannot read {}", args.file.display()))?;
    let rows = detect::series::parse_series(&text).with_context(|| format!("in {}", args.file.display()))?;
    let times: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let mut detector = detect::SeriesDetector::new(detect::SeriesConfig::for_step(detect::series::median_step(&times)));
    let mut out = String::with_capacity(text.len() + rows.len() * 24);
    out.push_str("timestamp,value,anomaly_score\n");
    for (stamp, ts, value) in &rows {
        let verdict = detector.observe(*ts, *value);
        out.push_str(&format!("{stamp},{value},{}\n", verdict.score));
    }
    match &args.output {
        Some(path) => std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            use std::io::Write;
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(out.as_bytes()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct HuntArgs {
    /// Hunt from this time: RFC 3339, or a duration before now (`24h`, `7d`, `30m`); defaults to the
    /// oldest stored record.
    #[arg(long)]
    since: Option<String>,
    /// Hunt up to this time (RFC 3339 or a duration before now, exclusive); defaults to everything.
    #[arg(long)]
    until: Option<String>,
    /// A directory of Sigma rules (YAML) to run besides the shipped ones.
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Store the alerts found that the `alerts` table does not hold yet.
    #[arg(long)]
    store: bool,
    /// `table` (default) or `json` (one alert per line).
    #[arg(long, default_value = "table")]
    format: String,
}

/// RFC 3339, or a duration (`90s`, `30m`, `24h`, `7d`) before now.
fn parse_time(text: &str, flag: &str) -> anyhow::Result<i64> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.timestamp_micros());
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if seconds > 0 && n >= 0 => Ok(store::time::now_micros() - n * seconds * 1_000_000),
        _ => anyhow::bail!("--{flag} {text:?} is neither an RFC 3339 time nor a duration like 24h"),
    }
}

/// `coldtrail hunt`: the security detections over stored history (retro-hunt), hour by hour in time
/// order through the same code as the stream, with fresh state. Alert ids are stable, so what the stream
/// raised is raised again with the same ids.
pub async fn hunt(paths: &Paths, args: HuntArgs) -> anyhow::Result<ExitCode> {
    if args.format != "table" && args.format != "json" {
        anyhow::bail!("--format must be table or json, not {:?}", args.format);
    }
    let since = args.since.as_deref().map(|t| parse_time(t, "since")).transpose()?;
    let until = args.until.as_deref().map(|t| parse_time(t, "until")).transpose()?;
    let rules = sigma_rules(args.rules.as_deref())?;
    let n_rules = rules.len();
    let store = Store::open(paths.store_config()).await.context("cannot open the store")?;
    let span =
        Security::TABLES.iter().filter_map(|t| stored_span_of(&store, *t)).reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    let Some((oldest, newest)) = span else {
        outln!("nothing stored to hunt in");
        return Ok(ExitCode::SUCCESS);
    };
    let start = since.unwrap_or(oldest).max(oldest);
    let end = until.unwrap_or(newest + 1).min(newest + 1);
    let mut security = Security::new(SecurityConfig::default(), rules);
    let mut dedup = Deduplicator::new(DEDUP_WINDOW_US);
    let mut alerts = Vec::new();
    let mut raised = Vec::new();
    let mut hour = hour_of(start);
    while hour < end {
        let range = TimeRange::new(hour.max(start), (hour + MICROS_PER_HOUR).min(end));
        for table in Security::TABLES {
            let batches = store.scan(table, None, range).await?;
            if let Some(batch) = sorted_by_time(&batches)? {
                security.push(table, &batch, &mut raised);
                alerts.extend(dedup.admit(std::mem::take(&mut raised)));
            }
        }
        hour += MICROS_PER_HOUR;
    }
    alerts.extend(dedup.close_all());
    // One line per alert: a group's final row replaces its first.
    let alerts = detect::dedup::latest_by_id(alerts);
    let stats = security.stats().clone();
    if args.format == "json" {
        for alert in &alerts {
            outln!("{}", serde_json::to_string(alert)?);
        }
    } else {
        outln!("{:<20}  {:<8}  {:<40}  {:<24}  title", "time", "severity", "detector", "function");
        for alert in &alerts {
            let title: String = alert.title.chars().take(100).collect();
            outln!(
                "{:<20}  {:<8}  {:<40}  {:<24}  {title}",
                detect::security::rfc3339(alert.ts_us),
                alert.severity.name(),
                alert.detector,
                alert.function.as_deref().unwrap_or("-")
            );
        }
    }
    let mut stored = 0;
    if args.store && !alerts.is_empty() {
        let mut known = std::collections::HashSet::new();
        for batch in store.scan(Table::Alerts, Some(&[1]), TimeRange::ALL).await? {
            if let Some(ids) = batch.column(0).as_any().downcast_ref::<arrow::array::StringArray>() {
                known.extend(ids.iter().flatten().map(str::to_string));
            }
        }
        let new: Vec<Alert> = alerts.iter().filter(|a| !known.contains(&a.alert_id)).cloned().collect();
        stored = new.len();
        store_alerts(&store, &new)?;
        store.flush_all().await?;
    }
    eprintln!(
        "hunted {} CloudTrail events, {} invocations and {} log lines with {} detections and {n_rules} Sigma rules: {} alerts{}",
        stats.cloudtrail_events,
        stats.invocations,
        stats.log_lines,
        detect::security::CATALOG.len(),
        alerts.len(),
        if args.store { format!(", {stored} new ones stored") } else { String::new() }
    );
    Ok(ExitCode::SUCCESS)
}

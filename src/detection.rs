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
use detect::{Alert, Stream, StreamConfig, StreamStats};
use store::time::{hour_of, MICROS_PER_HOUR};
use store::{Store, Table, TimeRange};

use crate::commands::Paths;

/// Appends buffered between the store and the detectors before ingest waits.
const QUEUE_APPENDS_MAX: usize = 64;
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);
/// With no records for this long, event time follows the clock, so that a fleet that went silent is seen.
const IDLE_ADVANCE_AFTER: Duration = Duration::from_secs(120);

pub fn checkpoint_path(data: &Path) -> PathBuf {
    data.join("detect").join("checkpoint.json")
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

/// Writes the checkpoint atomically: a temporary file, fsynced, renamed over the old one.
pub fn save_checkpoint(data: &Path, stream: &Stream) -> anyhow::Result<()> {
    let path = checkpoint_path(data);
    let dir = path.parent().expect("the checkpoint lives in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bytes = stream.checkpoint()?;
    let temporary = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &path).with_context(|| format!("cannot replace {}", path.display()))?;
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
        let receiver = store.subscribe(&[Table::Invocations], QUEUE_APPENDS_MAX);
        let stream = load_stream(data, config);
        let stop = Arc::new(AtomicBool::new(false));
        let data = data.to_path_buf();
        let thread = std::thread::Builder::new().name("detect".into()).spawn({
            let stop = stop.clone();
            move || run(&store, &data, stream, receiver, &stop)
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
    receiver: std::sync::mpsc::Receiver<store::Appended>,
    stop: &AtomicBool,
) -> anyhow::Result<StreamStats> {
    let mut alerts = Vec::new();
    let mut published = StreamStats::default();
    let mut last_checkpoint = Instant::now();
    let mut last_record = Instant::now();
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        match receiver.recv_timeout(Duration::from_millis(200)) {
            Ok(appended) => {
                for (_, batch) in &appended.batches {
                    stream.push(batch, &mut alerts);
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
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if !alerts.is_empty() {
            store_alerts(store, &alerts)?;
        }
        let stats = stream.stats();
        detect::metrics::publish(&stats, &published, &alerts);
        published = stats;
        alerts.clear();
        if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
            if let Err(e) = save_checkpoint(data, &stream) {
                tracing::error!(error = %e, "detector checkpoint failed; retrying in a minute");
            }
            last_checkpoint = Instant::now();
        }
    }
    save_checkpoint(data, &stream)?;
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
    let mut alerts = Vec::new();
    let mut n_alerts = 0;
    let mut hour = hour_of(start);
    while hour < end {
        let range = TimeRange::new(hour.max(start), (hour + MICROS_PER_HOUR).min(end));
        let batches = store.scan(Table::Invocations, None, range).await?;
        if let Some(batch) = sorted_by_time(&batches)? {
            stream.push(&batch, &mut alerts);
        }
        n_alerts += alerts.len();
        store_alerts(&store, &alerts)?;
        alerts.clear();
        hour += MICROS_PER_HOUR;
    }
    stream.advance_to(end + StreamConfig::default().lateness_us + 60_000_000, &mut alerts);
    n_alerts += alerts.len();
    store_alerts(&store, &alerts)?;
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
    let snapshot = store.snapshot(Table::Invocations, TimeRange::ALL);
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

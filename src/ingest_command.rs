//! `coldtrail ingest`: files, directories and stdin into the store, with progress and a summary.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ingest::file::{FileOptions, FileSource};
use ingest::{Format, IngestStats, StoreSink};
use store::Store;

use crate::commands::Paths;

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Files or directories (recursive, plain or gzip), `-` for stdin, `s3://bucket/prefix` (each object
    /// once), `kafka://BROKERS/TOPIC[:FORMAT][,TOPIC...]` (a consumer group), `http://ADDR:PORT` (serve
    /// `POST /ingest` and OTLP until Ctrl-C), or `cloudwatch://PREFIX[,PREFIX]` (the CloudWatch Logs API).
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Input format; detected per file when `auto`: auto, lambda, subscription, export, cloudtrail, xray, otlp, events.
    #[arg(long, default_value = "auto")]
    format: Format,
    /// Log group of files that do not name theirs; `{N}`, `{-N}`: parts of the path; `GROUP:STREAM`: a stream.
    #[arg(long)]
    log_group: Option<String>,
    /// Where the log groups of a `cloudwatch://` input never read before start, back from now.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    since: i64,
    /// Ingest files again even when their position says they were ingested.
    #[arg(long)]
    again: bool,
    /// File holding the bearer token an `http://ADDR` input requires (else `COLDTRAIL_INGEST_TOKEN`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Consumer group of `kafka://` inputs.
    #[arg(long, default_value = "coldtrail")]
    group: String,
    /// Stop a `kafka://` input once it has partitions and no record came for this many seconds
    /// (default: run until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    idle_exit: Option<f64>,
    /// Do not run the detectors over what is stored.
    #[arg(long)]
    no_detect: bool,
    /// How long after its event time a row of a `kafka://` or `http://` input may arrive and still be
    /// scored in order while the ingest runs (`15m`, `30s`). Files are scored at the end, and at the end
    /// everything stored is scored.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    lateness: i64,
    /// How long an account's CloudTrail is watched before the first-seen detections (code deployed by a
    /// principal that never deployed it, a new layer, a changed role) report; `0s` reports at once.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    learning: i64,
    /// Show progress (bytes, records/s, ETA) on stderr: auto (when stderr is a terminal), always, never.
    #[arg(long, value_enum, default_value = "auto")]
    progress: ShowProgress,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ShowProgress {
    Auto,
    Always,
    Never,
}

pub fn parse_duration(text: &str) -> Result<i64, String> {
    store::time::parse_duration_micros(text).ok_or_else(|| format!("{text:?} is not a duration like 15m or 30s"))
}

/// glibc keeps freed memory in per-thread arenas and, once large blocks have been freed, raises the size
/// from which it maps them: the Arrow buffers of sealed rows then stay resident, and peak RSS was 1.5×
/// the live heap (BENCHMARKS.md, "Ingest memory"). Blocks of 1 MiB and more are mapped and returned
/// when freed, and two arenas are shared by the threads. glibc's own tunables (`MALLOC_MMAP_THRESHOLD_`,
/// `MALLOC_ARENA_MAX`), when an operator sets them, win.
fn bound_allocator_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (parameter, variable, value) in
        [(libc::M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 1 << 20), (libc::M_ARENA_MAX, "MALLOC_ARENA_MAX", 2)]
    {
        if std::env::var_os(variable).is_none() {
            #[allow(unsafe_code)]
            // SAFETY: mallopt takes no pointers and is thread-safe; it only changes the allocator's parameters.
            unsafe {
                libc::mallopt(parameter, value);
            }
        }
    }
}

/// Bytes of unsealed rows an `ingest` holds at most (then half of it after sealing).
const INGEST_HOT_BYTES_MAX: usize = 64 * 1024 * 1024;

pub async fn ingest(paths: &Paths, args: IngestArgs) -> anyhow::Result<ExitCode> {
    bound_allocator_retention();
    let mut config = paths.store_config();
    // Seal segments while ingesting, on the other core, instead of all at the end.
    config.flush.partition_rows_max = 250_000;
    // The hot buffer's share of the memory bound (BENCHMARKS.md, "Ingest memory"): the appender seals
    // past it before it stores more.
    config.flush.hot_bytes_max = INGEST_HOT_BYTES_MAX;
    // One partition on one thread while parsing (the parser, the longer, is the other); the last on all.
    (config.flush.encoders, config.flush.threads) = (1, 1);
    let store = Arc::new(Store::open(config).await?);
    let segments = |store: &Store| store.stats().values().map(|t| t.segments).sum::<u64>();
    let segments_before = segments(&store);
    // Files, objects and stdin come in no particular order of event time (an export is one object per
    // log stream): scored at the end, as one replay. Streams are scored as the watermark passes.
    let streams = args.inputs.iter().any(|i| i.starts_with("kafka://") || i.starts_with("http://"));
    let live =
        detect::runner::LiveConfig { lateness_us: args.lateness, score_while_running: streams, ..Default::default() };
    let detection = if args.no_detect {
        None
    } else {
        let config = detect::engine::EngineConfig::default().with_learning(args.learning);
        Some(crate::detection::LiveDetections::start(store.clone(), &paths.data, live, &config)?)
    };
    let (stop_maintenance, maintenance) = flush_while_ingesting(store.clone());
    let sink = StoreSink::new(store.clone());
    let options = FileOptions { format: args.format, log_group: args.log_group.clone(), again: args.again };
    let mut files = FileSource::new(sink.clone(), options);
    let started = Instant::now();
    if args.progress == ShowProgress::Always || (args.progress == ShowProgress::Auto && std::io::stderr().is_terminal())
    {
        // The files' bytes, listed up front so that the estimate covers all of them; stdin has no size.
        let listed: Option<Vec<_>> = (args.inputs.iter().filter(|i| !i.contains("://")))
            .map(|i| (i != "-").then(|| ingest::file::list(std::path::Path::new(i)).ok()).flatten())
            .collect();
        let total = listed.map(|lists| lists.iter().flatten().map(|f| f.bytes).sum());
        files.show_progress(ingest::progress::Progress::new(total, Box::new(std::io::stderr())));
    }
    // Files named one after another (a shell's glob) are one list, read ahead across all of them.
    let mut listed = Vec::new();
    for input in &args.inputs {
        if input != "-" && !input.contains("://") {
            listed.extend(ingest::file::list(&PathBuf::from(input))?);
        } else {
            files.ingest_files(&std::mem::take(&mut listed))?;
            ingest_input(input, &args, &sink, &mut files).await?;
        }
    }
    files.ingest_files(&listed)?;
    let (file_stats, stats) = files.finish()?;
    // An ingest has an end: what it stored is complete, and is scored to its last minute.
    let detected = detection.map(|d| d.stop(detect::runner::InputEnd::Closed)).transpose()?;
    // Stopped between turns: a seal cut between its ledger entry and dropping its hot rows seals them twice.
    let _ = stop_maintenance.send(());
    maintenance.await?;
    store.flush_all_with(std::thread::available_parallelism().map_or(1, |n| n.get())).await?;
    // Sealed while the ingest ran (by size) and at its end.
    let flushed = segments(&store).saturating_sub(segments_before);
    if stats.units == 0 && args.inputs.iter().all(|i| i.contains("://")) {
        return Ok(ExitCode::SUCCESS);
    }
    print_summary(&stats, &file_stats, flushed, detected.as_ref(), started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// Seals full partitions every half second, on the other core, instead of all at the end, until stopped.
fn flush_while_ingesting(store: Arc<Store>) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    (stop, tokio::spawn(store.maintain_until(std::time::Duration::from_millis(500), None, stopped)))
}

/// Stdin, an HTTP endpoint (until Ctrl-C), an S3 prefix or a Kafka group. Before any but stdin, what
/// the files before it queued is stored first, so that positions stay in order.
async fn ingest_input(input: &str, args: &IngestArgs, sink: &StoreSink, files: &mut FileSource) -> anyhow::Result<()> {
    if input == "-" {
        files.ingest_stream(&mut std::io::stdin().lock(), "stdin")?;
    } else if let Some(address) = input.strip_prefix("http://") {
        files.drain()?;
        let token = match &args.token_file {
            Some(path) => {
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_string()
            }
            None => std::env::var("COLDTRAIL_INGEST_TOKEN")
                .context("an http input needs --token-file or COLDTRAIL_INGEST_TOKEN")?,
        };
        crate::http_ingest::serve(sink.store().clone(), address.trim_end_matches('/'), token).await?;
    } else if input.starts_with("s3://") {
        files.drain()?;
        let source = ingest::s3::S3Source::new(input, args.format, args.log_group.clone())?;
        let stats = source.poll(sink, files.pipeline_mut()).await?;
        outln!(
            "{input}: {} objects listed, {} ingested ({:.1} MB), {} ingested before",
            stats.objects_listed,
            stats.objects_ingested,
            stats.bytes as f64 / 1e6,
            stats.objects_skipped
        );
    } else if input.starts_with("cloudwatch://") {
        files.drain()?;
        let since_ms = (store::time::now_micros() - args.since) / 1000;
        outln!("{}", ingest::logs_api::ingest_url(input, since_ms, sink, files.pipeline_mut()).await?);
    } else if let Some(spec) = input.strip_prefix("kafka://") {
        files.drain()?;
        let stats = ingest_kafka(sink, args, spec).await?;
        outln!(
            "kafka: {} records received, {} stored in {} batches, {} below the stored position skipped, {} position conflicts",
            stats.records,
            stats.stored_records,
            stats.batches,
            stats.skipped_below_position,
            stats.position_conflicts
        );
    } else {
        anyhow::bail!("{input}: not an input coldtrail reads (files, -, s3://, kafka://, http://, cloudwatch://)");
    }
    Ok(())
}

fn print_summary(
    stats: &IngestStats,
    file_stats: &ingest::file::FileStats,
    flushed: u64,
    detected: Option<&detect::EngineStats>,
    seconds: f64,
) {
    outln!(
        "ingested {} units ({:.1} MB) in {seconds:.2} s: {} log lines, {} CloudTrail events, {} spans, {} invocations, {} dead letters; {} rows stored in {flushed} new segments",
        stats.units,
        stats.bytes as f64 / 1e6,
        stats.log_lines,
        stats.cloudtrail_events,
        stats.spans,
        stats.assembly.emitted,
        stats.dead_letters_total(),
        file_stats.rows_queued,
    );
    if file_stats.files_skipped > 0 {
        outln!("skipped {} files ingested before (--again to ingest them anyway)", file_stats.files_skipped);
    }
    for (reason, count) in &stats.dead_letters {
        outln!("  dead letters {reason}: {count}");
    }
    if let Some(note) = stats.borrowed_times_note() {
        outln!("  {note}");
    }
    if let Some(detected) = detected {
        let late: u64 = detected.late_rows.values().sum();
        outln!(
            "detectors: {} invocations in {} function-minutes scored, {} alerts stored, {late} rows came after their minute was scored",
            detected.stream.invocations,
            detected.stream.minutes_scored,
            detected.stream.alerts + detected.security.findings.values().sum::<u64>(),
        );
        if late > 0 {
            outln!(
                "  late rows are stored and were run through the injection and Sigma detections; the anomaly \
                 detectors had scored their minutes already (see detect_late_rows_total)"
            );
        }
    }
    outln!(
        "throughput: {:.0} records/s, {:.1} MB/s; peak memory {}",
        stats.records() as f64 / seconds.max(1e-6),
        stats.bytes as f64 / 1e6 / seconds.max(1e-6),
        peak_rss_mb().map_or("unknown".to_string(), |mb| format!("{mb} MB"))
    );
}

/// The process's peak resident memory so far (Linux's high-water mark), in MB.
fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024 / 1_000_000)
}

/// `kafka://BROKER[,BROKER]/TOPIC[:FORMAT][,TOPIC[:FORMAT]]`: consumes until Ctrl-C or `--idle-exit`.
async fn ingest_kafka(sink: &StoreSink, args: &IngestArgs, spec: &str) -> anyhow::Result<ingest::kafka::KafkaStats> {
    let (brokers, topics) = spec.split_once('/').context("kafka input is kafka://BROKERS/TOPIC[:FORMAT][,TOPIC...]")?;
    let mut topic_configs = Vec::new();
    for topic in topics.split(',').filter(|t| !t.is_empty()) {
        let (topic, format) = match topic.split_once(':') {
            Some((topic, format)) => (topic, format.parse::<Format>().map_err(anyhow::Error::msg)?),
            None => (topic, args.format),
        };
        topic_configs.push(ingest::kafka::TopicConfig {
            topic: topic.to_string(),
            format,
            log_group: args.log_group.clone(),
        });
    }
    anyhow::ensure!(!topic_configs.is_empty(), "kafka input names no topic");
    let mut config = ingest::kafka::KafkaConfig::new(brokers, args.group.clone(), topic_configs);
    config.idle_exit = args.idle_exit.map(std::time::Duration::from_secs_f64);
    let mut source = ingest::kafka::KafkaSource::new(sink.clone(), config)?;
    Ok(source
        .run(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?)
}

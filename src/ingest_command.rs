//! `coldtrail ingest`: files, directories and stdin into the store, with progress and a summary.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use ingest::file::FileInput;
use ingest::{Format, IngestStats, Pipeline, Unit};
use store::{Position, Store};

use crate::commands::Paths;

/// Rows buffered before they are appended to the store.
const BUFFERED_ROWS_MAX: usize = 200_000;
/// Text bytes buffered before they are appended to the store.
const BUFFERED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Arrow bytes per append; larger outputs of one unit are stored in slices.
const APPEND_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Line-oriented files larger than this are read in chunks of about this size, each stored with the
/// file offset it reaches, so that a large file streams and an interrupted ingest resumes mid-file.
const FILE_CHUNK_BYTES: usize = 8 * 1024 * 1024;
/// Bytes read from stdin per unit when it carries lines.
const STDIN_CHUNK_BYTES: usize = 4 * 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Files or directories (recursive, plain or gzip), `-` for stdin, `s3://bucket/prefix` (each object
    /// once), `kafka://BROKERS/TOPIC[:FORMAT][,TOPIC...]` (a consumer group), or `http://ADDR:PORT` (serve
    /// `POST /ingest` until Ctrl-C).
    #[arg(required = true)]
    inputs: Vec<String>,
    /// Input format; detected per file when `auto`: auto, lambda, subscription, export, cloudtrail, xray, otlp.
    #[arg(long, default_value = "auto")]
    format: Format,
    /// Log group of plain log files that do not name theirs (`/aws/lambda/<function>`).
    #[arg(long)]
    log_group: Option<String>,
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
    /// Do not run the streaming anomaly detectors over what is stored.
    #[arg(long)]
    no_detect: bool,
}

/// Work for the appender thread.
enum Job {
    Append(Vec<(store::Table, arrow::array::RecordBatch)>, Vec<Position>),
    /// Answered once every job before it is done, with the first error so far.
    Barrier(std::sync::mpsc::SyncSender<Result<(), String>>),
}

/// Stores batches on a thread of its own, in order, so that parsing the next input overlaps the WAL
/// write of the last (two cores: parse on one, compress and fsync on the other). The queue holds two
/// jobs: a slow store slows parsing, memory stays bounded.
struct Appender {
    jobs: std::sync::mpsc::SyncSender<Job>,
}

impl Appender {
    fn start(store: Arc<Store>) -> Appender {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Job>(2);
        std::thread::spawn(move || {
            let mut failed: Option<String> = None;
            for job in queue {
                match job {
                    Job::Append(batches, positions) => {
                        if failed.is_none() {
                            if let Err(e) = store.append(&batches, &positions) {
                                failed = Some(format!("storing ingested rows: {e}"));
                            }
                        }
                    }
                    Job::Barrier(reply) => {
                        let _ = reply.send(failed.clone().map_or(Ok(()), Err));
                    }
                }
            }
        });
        Appender { jobs }
    }

    fn append(
        &self,
        batches: Vec<(store::Table, arrow::array::RecordBatch)>,
        positions: Vec<Position>,
    ) -> anyhow::Result<()> {
        self.jobs.send(Job::Append(batches, positions)).map_err(|_| anyhow::anyhow!("bug: the appender thread ended"))
    }

    /// Waits until everything sent is stored; the first error if not.
    fn drain(&self) -> anyhow::Result<()> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.jobs.send(Job::Barrier(reply)).map_err(|_| anyhow::anyhow!("bug: the appender thread ended"))?;
        answer.recv().map_err(|_| anyhow::anyhow!("bug: the appender thread ended"))?.map_err(anyhow::Error::msg)
    }
}

struct Run<'a> {
    store: &'a Arc<Store>,
    appender: Appender,
    pipeline: Pipeline,
    /// Positions of the files whose rows are in the pipeline's buffers.
    positions: Vec<Position>,
    started: Instant,
    progress: bool,
    files_done: u64,
    rows_stored: u64,
}

impl Run<'_> {
    fn store_buffered(&mut self) -> anyhow::Result<()> {
        let batches = self.pipeline.take_batches();
        let rows: usize = batches.iter().map(|(_, b)| b.num_rows()).sum();
        if batches.is_empty() && self.positions.is_empty() {
            return Ok(());
        }
        // One unit (a large gzip object, say) can decode into more than one WAL frame may hold: such
        // rows go in slices, and the positions with the last slice.
        let bytes: usize = batches.iter().map(|(_, b)| b.get_array_memory_size()).sum();
        let slices = bytes.div_ceil(APPEND_BYTES_MAX).max(1);
        for slice in 0..slices {
            let part: Vec<_> = batches
                .iter()
                .map(|(table, batch)| {
                    let per_slice = batch.num_rows().div_ceil(slices);
                    let start = (slice * per_slice).min(batch.num_rows());
                    (*table, batch.slice(start, per_slice.min(batch.num_rows() - start)))
                })
                .filter(|(_, batch)| batch.num_rows() > 0)
                .collect();
            let positions = if slice + 1 == slices { std::mem::take(&mut self.positions) } else { Vec::new() };
            self.appender.append(part, positions)?;
        }
        self.positions.clear();
        self.rows_stored += rows as u64;
        Ok(())
    }

    fn maybe_store(&mut self) -> anyhow::Result<()> {
        if self.pipeline.buffered_rows() >= BUFFERED_ROWS_MAX || self.pipeline.buffered_bytes() >= BUFFERED_BYTES_MAX {
            self.store_buffered()?;
        }
        if self.progress {
            let stats = &self.pipeline.stats;
            let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\r{} files, {:.1} MB, {} records, {} dead letters, {:.1} MB/s   ",
                self.files_done,
                stats.bytes as f64 / 1e6,
                records(stats),
                stats.dead_letters_total(),
                stats.bytes as f64 / 1e6 / seconds
            );
        }
        Ok(())
    }
}

/// Whether enough invocations were late for the detectors that the user should replay instead: more than
/// 1% of them.
fn late_share_is_high(late: u64, invocations: u64) -> bool {
    late > 0 && late * 100 > invocations
}

fn records(stats: &IngestStats) -> u64 {
    stats.log_lines + stats.cloudtrail_events + stats.spans + stats.dead_letters_total()
}

pub async fn ingest(paths: &Paths, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let mut config = paths.store_config();
    // Seal segments while ingesting, on the other core, instead of all at the end.
    config.flush.partition_rows_max = 250_000;
    let store = Arc::new(Store::open(config).await?);
    let detection = if args.no_detect {
        None
    } else {
        Some(crate::detection::Detection::start(store.clone(), &paths.data, detect::StreamConfig::default())?)
    };
    let maintenance = {
        let store = store.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if let Err(e) = store.maintain(false).await {
                    tracing::warn!(error = %e, "flush during ingest failed; retried at the end");
                }
            }
        })
    };
    let mut run = Run {
        store: &store,
        appender: Appender::start(store.clone()),
        pipeline: Pipeline::default(),
        positions: Vec::new(),
        started: Instant::now(),
        progress: std::io::stderr().is_terminal(),
        files_done: 0,
        rows_stored: 0,
    };
    let mut skipped = 0u64;
    for input in &args.inputs {
        if input == "-" {
            ingest_stdin(&mut run, &args)?;
            continue;
        }
        if let Some(address) = input.strip_prefix("http://") {
            run.store_buffered()?;
            run.appender.drain()?;
            let token = match &args.token_file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim()
                    .to_string(),
                None => std::env::var("COLDTRAIL_INGEST_TOKEN")
                    .context("an http input needs --token-file or COLDTRAIL_INGEST_TOKEN")?,
            };
            anyhow::ensure!(token.len() >= 16, "the ingest token must have at least 16 characters");
            crate::http_ingest::serve(store.clone(), address.trim_end_matches('/'), token).await?;
            continue;
        }
        if input.starts_with("s3://") {
            run.store_buffered()?;
            run.appender.drain()?;
            let source = ingest::s3::S3Source::new(input, args.format, args.log_group.clone())?;
            let stats = source.poll(&store, &mut run.pipeline).await?;
            outln!(
                "{input}: {} objects listed, {} ingested ({:.1} MB), {} ingested before",
                stats.objects_listed,
                stats.objects_ingested,
                stats.bytes as f64 / 1e6,
                stats.objects_skipped
            );
            continue;
        }
        if let Some(spec) = input.strip_prefix("kafka://") {
            // Stores as it goes; files before it are stored first so positions stay in order.
            run.store_buffered()?;
            run.appender.drain()?;
            let stats = ingest_kafka(&store, &args, spec).await?;
            outln!(
                "kafka: {} records received, {} stored in {} batches, {} below the stored position skipped, {} position conflicts",
                stats.records,
                stats.stored_records,
                stats.batches,
                stats.skipped_below_position,
                stats.position_conflicts
            );
            continue;
        }
        let files = ingest::file::list(&PathBuf::from(input))?;
        for file in files {
            let stream = file.stream();
            if !args.again && store.position(&stream) == Some(file.bytes) {
                skipped += 1;
                continue;
            }
            ingest_file(&mut run, &args, &file, &stream)?;
        }
    }
    run.pipeline.finish();
    run.store_buffered()?;
    run.appender.drain()?;
    let detected = detection.map(crate::detection::Detection::stop).transpose()?;
    maintenance.abort();
    let flushed = store.flush_all().await?;
    if run.progress {
        eprintln!();
    }
    let stats = run.pipeline.stats.clone();
    let seconds = run.started.elapsed().as_secs_f64();
    if stats.units == 0 && args.inputs.iter().all(|i| i.contains("://")) {
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "ingested {} units ({:.1} MB) in {seconds:.2} s: {} log lines, {} CloudTrail events, {} spans, {} invocations, {} dead letters; {} rows stored in {flushed} new segments",
        stats.units,
        stats.bytes as f64 / 1e6,
        stats.log_lines,
        stats.cloudtrail_events,
        stats.spans,
        stats.assembly.emitted,
        stats.dead_letters_total(),
        run.rows_stored,
    );
    if skipped > 0 {
        outln!("skipped {skipped} files ingested before (--again to ingest them anyway)");
    }
    for (reason, count) in &stats.dead_letters {
        outln!("  dead letters {reason}: {count}");
    }
    if let Some(detected) = detected {
        outln!(
            "detectors: {} function-minutes scored, {} alerts stored, {} late records (minutes still open are kept for the next run)",
            detected.minutes_scored,
            detected.alerts,
            detected.late_records
        );
        if late_share_is_high(detected.late_records, stats.assembly.emitted) {
            outln!(
                "  many invocations came after their minute was closed (files of several log streams overlap in time): \
                 their rows are stored, but the anomaly detectors skipped them; for history, ingest with --no-detect \
                 and then run `coldtrail detect`, which replays the stored rows in time order"
            );
        }
    }
    outln!(
        "throughput: {:.0} records/s, {:.1} MB/s",
        records(&stats) as f64 / seconds.max(1e-6),
        stats.bytes as f64 / 1e6 / seconds.max(1e-6)
    );
    Ok(ExitCode::SUCCESS)
}

fn ingest_file(run: &mut Run<'_>, args: &IngestArgs, file: &FileInput, stream: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(&file.path).with_context(|| format!("reading {}", file.path.display()))?;
    let key = file.path.to_string_lossy();
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
    let line_oriented = bytes.len() > FILE_CHUNK_BYTES
        && !bytes.starts_with(&[0x1f, 0x8b])
        && bytes.get(start) != Some(&b'[')
        && (bytes.get(start) != Some(&b'{') || looks_like_ndjson(&bytes[start..]));
    if !line_oriented {
        let unit = Unit { source: stream, position: "0", key: Some(&key), log_group: args.log_group.as_deref() };
        run.pipeline.ingest(args.format, &bytes, &unit);
        run.positions.push(Position { stream: stream.to_string(), offset: file.bytes });
        run.files_done += 1;
        return run.maybe_store();
    }
    // Resume where an interrupted ingest of this file stopped.
    let mut offset = run.store.position(stream).filter(|at| *at < file.bytes && !args.again).unwrap_or(0) as usize;
    while offset < bytes.len() {
        let end = (offset + FILE_CHUNK_BYTES).min(bytes.len());
        let end = if end == bytes.len() {
            end
        } else {
            bytes[offset..end].iter().rposition(|b| *b == b'\n').map_or(end, |at| offset + at + 1)
        };
        let position = offset.to_string();
        let unit = Unit { source: stream, position: &position, key: Some(&key), log_group: args.log_group.as_deref() };
        run.pipeline.ingest(args.format, &bytes[offset..end], &unit);
        offset = end;
        let reached = if offset == bytes.len() { file.bytes } else { offset as u64 };
        run.positions.retain(|p| p.stream != stream);
        run.positions.push(Position { stream: stream.to_string(), offset: reached });
        run.maybe_store()?;
    }
    run.files_done += 1;
    Ok(())
}

/// Stdin carrying lines is read in chunks, so that `tail -f … | coldtrail ingest -` streams; a JSON
/// document or gzip is read whole.
fn ingest_stdin(run: &mut Run<'_>, args: &IngestArgs) -> anyhow::Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut buffer = Vec::with_capacity(STDIN_CHUNK_BYTES);
    let mut first = true;
    let mut whole = false;
    let mut offset = 0u64;
    loop {
        let mut chunk = vec![0u8; STDIN_CHUNK_BYTES];
        let read = stdin.read(&mut chunk).context("reading stdin")?;
        buffer.extend_from_slice(&chunk[..read]);
        if first && !buffer.is_empty() {
            first = false;
            let start = buffer.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
            whole = buffer[start..].starts_with(&[0x1f, 0x8b])
                || (buffer[start] == b'[')
                || (buffer[start] == b'{' && !looks_like_ndjson(&buffer[start..]));
        }
        let done = read == 0;
        let cut = if done || whole {
            if done {
                buffer.len()
            } else {
                0
            }
        } else {
            buffer.iter().rposition(|b| *b == b'\n').map_or(0, |at| at + 1)
        };
        if cut > 0 && (done || buffer.len() >= STDIN_CHUNK_BYTES / 2) {
            let unit_bytes: Vec<u8> = buffer.drain(..cut).collect();
            let position = offset.to_string();
            run.pipeline.ingest(
                args.format,
                &unit_bytes,
                &Unit { source: "stdin", position: &position, key: None, log_group: args.log_group.as_deref() },
            );
            offset += unit_bytes.len() as u64;
            run.maybe_store()?;
        }
        if done {
            break;
        }
    }
    std::io::stdout().flush().ok();
    Ok(())
}

/// Whether a buffer starting with `{` holds one JSON object per line.
fn looks_like_ndjson(buffer: &[u8]) -> bool {
    let Some(end) = buffer.iter().position(|b| *b == b'\n') else { return false };
    serde_json::from_slice::<serde_json::Value>(&buffer[..end]).is_ok()
}

/// `kafka://BROKER[,BROKER]/TOPIC[:FORMAT][,TOPIC[:FORMAT]]`: consumes until Ctrl-C or `--idle-exit`.
async fn ingest_kafka(
    store: &std::sync::Arc<Store>,
    args: &IngestArgs,
    spec: &str,
) -> anyhow::Result<ingest::kafka::KafkaStats> {
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
    let mut source = ingest::kafka::KafkaSource::new(store.clone(), config)?;
    Ok(source
        .run(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?)
}

//! `coldtrail generate`: the demo's workload, for load tests, benchmarks and trying the sources. Straight
//! into the store as invocation rows (the default), or as what AWS would deliver about it: Lambda log
//! lines in CloudWatch Logs subscription payloads, X-Ray segment documents and the team's CloudTrail,
//! written to files (`--out DIR`) or published to Kafka (`--kafka BROKERS`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use workload::cloudtrail::{routine, Team};

use anyhow::{bail, Context};
use clap::Args;
use store::{Store, Table};
use workload::shapes::{write_file, Shape};
use workload::{fleet, invocations_batch, Anomaly, Generator, Injection, Rng};

use crate::commands::Paths;
use store::time::MICROS_PER_MINUTE;

/// Rows per store append: large enough to amortise the WAL fsync, small enough to bound memory.
const APPEND_ROWS_MAX: usize = 200_000;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Number of functions in the fleet.
    #[arg(long, default_value_t = 50)]
    functions: usize,
    /// Stop after this many invocations (the last minute is completed).
    #[arg(long)]
    invocations: Option<u64>,
    /// Stop after this many minutes of event time.
    #[arg(long)]
    minutes: Option<i64>,
    /// Event time of the first minute (RFC 3339); defaults to 24 hours before now, on the hour.
    #[arg(long)]
    start: Option<String>,
    /// Seed of the workload: the same seed gives the same rows.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Inject an anomaly for 30 minutes: KIND:FUNCTION:MINUTE, where KIND is spike, drop, ramp, creep,
    /// errors, cold, cost, callers or mining, FUNCTION the function's index in the fleet and MINUTE the
    /// start, counted from the first minute. Repeatable.
    #[arg(long, value_name = "KIND:FUNCTION:MINUTE")]
    anomaly: Vec<String>,
    /// Do not run the streaming anomaly detectors over what is written (into the store).
    #[arg(long)]
    no_detect: bool,
    /// Write files instead of storing rows: DIR/logs/<function>/<hour>.ndjson.gz (subscription payloads),
    /// DIR/xray/<hour>.ndjson.gz and DIR/cloudtrail/<account>_CloudTrail_<region>_<hour>.json.gz, each
    /// hour's files complete when written. `coldtrail ingest DIR` reads them.
    #[arg(long, value_name = "DIR", conflicts_with = "kafka")]
    out: Option<std::path::PathBuf>,
    /// Publish instead of storing rows: subscription payloads to <prefix>lambda-logs (keyed by log stream,
    /// so that an invocation's lines stay in one partition), CloudTrail events to <prefix>cloudtrail and
    /// X-Ray segments to <prefix>xray.
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// Prefix of the Kafka topic names.
    #[arg(long, default_value = "")]
    topic_prefix: String,
    /// Share of invocations traced by X-Ray (files and Kafka).
    #[arg(long, default_value_t = 0.05)]
    xray_sample: f64,
    /// With --out: the shape of the log files, as an AWS delivery path or tool writes them (gzip'd
    /// subscription payloads by default; `workload::shapes::Shape::ALL` lists the others).
    #[arg(long, default_value = "subscription", requires = "out")]
    shape: workload::shapes::Shape,
}

fn parse_anomaly(spec: &str, start_us: i64, n_functions: usize) -> anyhow::Result<Injection> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [kind, function, minute] = parts[..] else {
        bail!("--anomaly {spec:?}: expected KIND:FUNCTION:MINUTE");
    };
    let anomaly = match kind {
        "spike" => Anomaly::Spike { factor: 6.0 },
        "drop" => Anomaly::Drop,
        "ramp" => Anomaly::Ramp { factor_per_hour: 24.0 },
        "creep" => Anomaly::DurationCreep { minutes: 10.0 },
        "errors" => Anomaly::ErrorBurst { error_rate: 0.3 },
        "cold" => Anomaly::ColdStartStorm,
        "cost" => Anomaly::CostSurge { factor: 4.0 },
        "callers" => Anomaly::NewCallers { n_callers: 6, share: 0.3 },
        "mining" => Anomaly::CryptoMining,
        other => bail!("--anomaly {spec:?}: unknown kind {other:?}"),
    };
    let function_idx: usize = function.parse().with_context(|| format!("--anomaly {spec:?}: bad function index"))?;
    if function_idx >= n_functions {
        bail!("--anomaly {spec:?}: the fleet has {n_functions} functions (0 to {})", n_functions - 1);
    }
    let minute: i64 = minute.parse().with_context(|| format!("--anomaly {spec:?}: bad minute"))?;
    let start_us = start_us + minute * MICROS_PER_MINUTE;
    Ok(Injection { function_idx, anomaly, start_us, end_us: start_us + 30 * MICROS_PER_MINUTE })
}

pub async fn generate(paths: &Paths, args: GenerateArgs) -> anyhow::Result<ExitCode> {
    if args.functions == 0 {
        bail!("--functions must be at least 1");
    }
    if args.invocations.is_none() && args.minutes.is_none() {
        bail!("say how much to generate: --invocations N or --minutes N");
    }
    let start_us = match &args.start {
        Some(text) => chrono::DateTime::parse_from_rfc3339(text)
            .with_context(|| format!("--start {text:?} is not an RFC 3339 time"))?
            .timestamp_micros(),
        None => {
            let now_us = chrono::Utc::now().timestamp_micros();
            now_us - now_us.rem_euclid(3_600 * 1_000_000) - 24 * 3_600 * 1_000_000
        }
    };
    let injections: Vec<Injection> =
        args.anomaly.iter().map(|spec| parse_anomaly(spec, start_us, args.functions)).collect::<anyhow::Result<_>>()?;
    if !(0.0..=1.0).contains(&args.xray_sample) {
        bail!("--xray-sample is a share between 0 and 1");
    }
    if args.out.is_some() || args.kafka.is_some() {
        return deliver(&args, start_us, injections);
    }
    let store = std::sync::Arc::new(Store::open(paths.store_config()).await?);
    let live = detect::runner::LiveConfig::default();
    let detection = if args.no_detect {
        None
    } else {
        Some(crate::detection::LiveDetections::start(
            store.clone(),
            &paths.data,
            live,
            &detect::engine::EngineConfig::default(),
        )?)
    };
    let functions = fleet(args.functions, &mut Rng::new(args.seed));
    let mut generator = Generator::new(functions, args.seed);
    for injection in injections {
        generator.inject(injection);
    }
    let started = Instant::now();
    let mut pending = Vec::with_capacity(APPEND_ROWS_MAX + 100_000);
    let mut n_invocations = 0u64;
    let mut minute_idx = 0i64;
    loop {
        let done_by_count = args.invocations.is_some_and(|max| n_invocations >= max);
        let done_by_time = args.minutes.is_some_and(|max| minute_idx >= max);
        if done_by_count || done_by_time {
            break;
        }
        let before = pending.len();
        generator.minute(start_us + minute_idx * MICROS_PER_MINUTE, &mut pending);
        n_invocations += (pending.len() - before) as u64;
        minute_idx += 1;
        if pending.len() >= APPEND_ROWS_MAX {
            append(&store, &generator, &mut pending).await?;
        }
    }
    append(&store, &generator, &mut pending).await?;
    let detected = detection.map(|d| d.stop(detect::runner::InputEnd::Closed)).transpose()?;
    store.flush_all().await?;
    let seconds = started.elapsed().as_secs_f64();
    outln!(
        "generated {n_invocations} invocations of {} functions over {minute_idx} minutes in {seconds:.1} s ({:.0} rows/s)",
        args.functions,
        n_invocations as f64 / seconds
    );
    if let Some(detected) = detected {
        outln!(
            "detectors: {} function-minutes scored, {} alerts stored",
            detected.stream.minutes_scored,
            detected.stream.alerts
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn append(store: &Store, generator: &Generator, pending: &mut Vec<workload::Invocation>) -> anyhow::Result<()> {
    if let Some(batch) = invocations_batch(generator.functions(), pending) {
        // An fsync, and a wait when the detectors are behind: off the async workers.
        tokio::task::block_in_place(|| store.append(&[(Table::Invocations, batch)], &[]))?;
        store.flush_due().await?;
    }
    pending.clear();
    Ok(())
}

/// Where `deliver` puts what it renders.
enum Sink {
    Files { dir: std::path::PathBuf, shape: Shape, logs: Vec<Value>, xray: Vec<u8>, trail: Vec<Value>, files: u64 },
    Kafka { producer: ingest::kafka::Publisher, prefix: String },
}

impl Sink {
    fn log_payload(&mut self, log_stream: &str, payload: &Value) -> anyhow::Result<()> {
        match self {
            Sink::Files { logs, .. } => logs.push(payload.clone()),
            Sink::Kafka { producer, prefix } => {
                producer.send(&format!("{prefix}lambda-logs"), log_stream, payload.to_string().as_bytes())?;
            }
        }
        Ok(())
    }

    fn segment(&mut self, trace_id: &str, segment: &Value) -> anyhow::Result<()> {
        match self {
            Sink::Files { xray, .. } => {
                serde_json::to_writer(&mut *xray, segment)?;
                xray.push(b'\n');
            }
            Sink::Kafka { producer, prefix } => {
                producer.send(&format!("{prefix}xray"), trace_id, segment.to_string().as_bytes())?;
            }
        }
        Ok(())
    }

    fn cloudtrail(&mut self, record: Value) -> anyhow::Result<()> {
        match self {
            Sink::Files { trail, .. } => trail.push(record),
            Sink::Kafka { producer, prefix } => {
                let key = record["eventID"].as_str().unwrap_or("").to_string();
                producer.send(&format!("{prefix}cloudtrail"), &key, record.to_string().as_bytes())?;
            }
        }
        Ok(())
    }

    /// Files: writes the hour's buffers (gzip, then renamed into place). Kafka: serves delivery reports.
    fn end_hour(&mut self, hour_us: i64) -> anyhow::Result<()> {
        match self {
            Sink::Files { dir, shape, logs, xray, trail, files } => {
                let hour = workload::render::iso_millis(hour_us)[..13].to_string();
                for (path, bytes) in workload::shapes::render(*shape, &std::mem::take(logs), &hour) {
                    match shape {
                        Shape::Subscription => write_file(&dir.join(format!("{path}.gz")), &bytes, true)?,
                        _ => write_file(&dir.join(path), &bytes, false)?,
                    }
                    *files += 1;
                }
                if !xray.is_empty() {
                    write_file(&dir.join("xray").join(format!("{hour}.ndjson.gz")), &std::mem::take(xray), true)?;
                    *files += 1;
                }
                if !trail.is_empty() {
                    let stamp = hour.replace(['-', ':'], "");
                    let body = serde_json::to_vec(&json!({ "Records": std::mem::take(trail) }))?;
                    let name = format!(
                        "{}_CloudTrail_{}_{stamp}00Z.json.gz",
                        workload::fleet::ACCOUNT,
                        workload::fleet::REGION
                    );
                    write_file(&dir.join("cloudtrail").join(name), &body, true)?;
                    *files += 1;
                }
            }
            Sink::Kafka { producer, .. } => producer.poll(),
        }
        Ok(())
    }
}

/// Renders the workload into files or Kafka, an hour at a time.
fn deliver(args: &GenerateArgs, start_us: i64, injections: Vec<Injection>) -> anyhow::Result<ExitCode> {
    let functions = fleet(args.functions, &mut Rng::new(args.seed));
    let names: Vec<String> = functions.iter().map(|f| f.name.clone()).collect();
    let mut generator = Generator::new(functions.clone(), args.seed);
    for injection in injections {
        generator.inject(injection);
    }
    let mut sink = match (&args.out, &args.kafka) {
        (Some(dir), _) => Sink::Files {
            dir: dir.clone(),
            shape: args.shape,
            logs: Vec::new(),
            xray: Vec::new(),
            trail: Vec::new(),
            files: 0,
        },
        (None, Some(brokers)) => Sink::Kafka {
            producer: ingest::kafka::Publisher::new(brokers)
                .with_context(|| format!("cannot create a Kafka producer for {brokers}"))?,
            prefix: args.topic_prefix.clone(),
        },
        (None, None) => unreachable!("deliver is called with --out or --kafka"),
    };
    let max_minutes = args.minutes.unwrap_or(i64::MAX);
    // The team's routine CloudTrail, a day at a time.
    let team = Team::new(&names);
    let day_us = 24 * 60 * MICROS_PER_MINUTE;
    let mut trail_day = 0i64;
    let mut trail = routine(&team, start_us, 24, args.seed).into_iter().peekable();
    let mut rng = Rng::new(args.seed ^ 0x7e4d);
    let started = Instant::now();
    let mut invocations = Vec::new();
    let (mut n_invocations, mut n_lines, mut n_segments, mut n_trail) = (0u64, 0u64, 0u64, 0u64);
    let mut minute_idx = 0i64;
    let mut payload_id = 0u64;
    loop {
        let done_by_count = args.invocations.is_some_and(|max| n_invocations >= max);
        if done_by_count || minute_idx >= max_minutes {
            break;
        }
        let minute_us = start_us + minute_idx * MICROS_PER_MINUTE;
        invocations.clear();
        generator.minute(minute_us, &mut invocations);
        n_invocations += invocations.len() as u64;
        // One subscription payload per log stream and minute, as CloudWatch Logs batches them.
        let rendered =
            workload::render::render_minute(&functions, &invocations, &mut rng, &mut payload_id, |i, rng| {
                i.status != "success" || rng.chance(args.xray_sample)
            });
        n_lines += rendered.log_lines;
        for (trace_id, segment) in &rendered.segments {
            sink.segment(trace_id, segment)?;
            n_segments += 1;
        }
        for (_, log_stream, payload) in &rendered.payloads {
            sink.log_payload(log_stream, payload)?;
        }
        if minute_us >= start_us + (trail_day + 1) * day_us {
            trail_day += 1;
            let day = routine(&team, start_us + trail_day * day_us, 24, args.seed.wrapping_add(trail_day as u64));
            trail = day.into_iter().peekable();
        }
        while let Some(record) = trail.next_if(|r| workload::cloudtrail::event_time(r) < minute_us + MICROS_PER_MINUTE)
        {
            sink.cloudtrail(record)?;
            n_trail += 1;
        }
        minute_idx += 1;
        if minute_idx % 60 == 0 {
            sink.end_hour(start_us + (minute_idx - 60) * MICROS_PER_MINUTE)?;
        }
    }
    if minute_idx % 60 != 0 {
        sink.end_hour(start_us + (minute_idx - minute_idx % 60) * MICROS_PER_MINUTE)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let summary = format!(
        "{n_invocations} invocations of {} functions over {minute_idx} minutes: {n_lines} log lines, {n_segments} X-Ray segments, {n_trail} CloudTrail events",
        args.functions
    );
    match sink {
        Sink::Files { dir, files, .. } => {
            outln!("wrote {summary} in {files} files under {} ({seconds:.1} s)", dir.display());
        }
        Sink::Kafka { producer, .. } => {
            let sent = producer.finish(Duration::from_secs(120))?;
            outln!("published {summary} as {sent} records ({seconds:.1} s)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

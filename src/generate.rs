//! `coldtrail generate`: the demo's workload, for load tests, benchmarks and trying the sources. Straight
//! into the store as invocation rows (the default), or as what AWS would deliver about it: Lambda log
//! lines in CloudWatch Logs subscription payloads, X-Ray segment documents and the team's CloudTrail,
//! written to files (`--out DIR`) or published to Kafka (`--kafka BROKERS`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::Value;
use store::{Store, Table};
use workload::delivery::{parse_injection, Delivered, Destination, Files, InvocationBatches, Plan};

use crate::commands::Paths;

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

pub async fn generate(paths: &Paths, args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let plan = plan(&args)?;
    if args.out.is_some() || args.kafka.is_some() {
        return deliver(&args, &plan);
    }
    let store = std::sync::Arc::new(Store::open(paths.store_config()).await?);
    let detection = if args.no_detect {
        None
    } else {
        Some(crate::detection::LiveDetections::start(
            store.clone(),
            &paths.data,
            detect::runner::LiveConfig::default(),
            &detect::engine::EngineConfig::default(),
        )?)
    };
    let started = Instant::now();
    let mut batches = InvocationBatches::new(plan, APPEND_ROWS_MAX);
    for batch in batches.by_ref() {
        // An fsync, and a wait when the detectors are behind: off the async workers.
        tokio::task::block_in_place(|| store.append(&[(Table::Invocations, batch)], &[]))?;
        store.flush_due().await?;
    }
    let detected = detection.map(|d| d.stop(detect::runner::InputEnd::Closed)).transpose()?;
    store.flush_all().await?;
    let seconds = started.elapsed().as_secs_f64();
    outln!(
        "generated {} invocations of {} functions over {} minutes in {seconds:.1} s ({:.0} rows/s)",
        batches.invocations,
        args.functions,
        batches.minutes,
        batches.invocations as f64 / seconds
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

/// The workload the arguments ask for.
fn plan(args: &GenerateArgs) -> anyhow::Result<Plan> {
    if args.functions == 0 {
        bail!("--functions must be at least 1");
    }
    if args.invocations.is_none() && args.minutes.is_none() {
        bail!("say how much to generate: --invocations N or --minutes N");
    }
    if !(0.0..=1.0).contains(&args.xray_sample) {
        bail!("--xray-sample is a share between 0 and 1");
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
    let injections = args
        .anomaly
        .iter()
        .map(|spec| parse_injection(spec, start_us, args.functions).map_err(|e| anyhow!("--anomaly {e}")))
        .collect::<anyhow::Result<_>>()?;
    Ok(Plan {
        functions: args.functions,
        seed: args.seed,
        start_us,
        minutes: args.minutes,
        invocations: args.invocations,
        injections,
        xray_sample: args.xray_sample,
    })
}

/// Subscription payloads, X-Ray segments and CloudTrail published to Kafka.
struct Kafka {
    producer: ingest::kafka::Publisher,
    prefix: String,
}

impl Destination for Kafka {
    type Error = anyhow::Error;

    fn log_payload(&mut self, log_stream: &str, payload: &Value) -> anyhow::Result<()> {
        Ok(self.producer.send(&format!("{}lambda-logs", self.prefix), log_stream, payload.to_string().as_bytes())?)
    }

    fn segment(&mut self, trace_id: &str, segment: &Value) -> anyhow::Result<()> {
        Ok(self.producer.send(&format!("{}xray", self.prefix), trace_id, segment.to_string().as_bytes())?)
    }

    fn cloudtrail(&mut self, record: Value) -> anyhow::Result<()> {
        let key = record["eventID"].as_str().unwrap_or("").to_string();
        Ok(self.producer.send(&format!("{}cloudtrail", self.prefix), &key, record.to_string().as_bytes())?)
    }

    /// Serves delivery reports.
    fn end_hour(&mut self, _hour_us: i64) -> anyhow::Result<()> {
        self.producer.poll();
        Ok(())
    }
}

/// Renders the workload into files or Kafka, an hour at a time.
fn deliver(args: &GenerateArgs, plan: &Plan) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let summary = |d: Delivered| {
        format!(
            "{} invocations of {} functions over {} minutes: {} log lines, {} X-Ray segments, {} CloudTrail events",
            d.invocations, plan.functions, d.minutes, d.log_lines, d.segments, d.cloudtrail_events
        )
    };
    match (&args.out, &args.kafka) {
        (Some(dir), _) => {
            let mut files = Files::new(dir, args.shape);
            let delivered = workload::delivery::deliver(plan, &mut files)?;
            let seconds = started.elapsed().as_secs_f64();
            outln!("wrote {} in {} files under {} ({seconds:.1} s)", summary(delivered), files.files, dir.display());
        }
        (None, Some(brokers)) => {
            let producer = ingest::kafka::Publisher::new(brokers)
                .with_context(|| format!("cannot create a Kafka producer for {brokers}"))?;
            let mut kafka = Kafka { producer, prefix: args.topic_prefix.clone() };
            let delivered = workload::delivery::deliver(plan, &mut kafka)?;
            let seconds = started.elapsed().as_secs_f64();
            let sent = kafka.producer.finish(Duration::from_secs(120))?;
            outln!("published {} as {sent} records ({seconds:.1} s)", summary(delivered));
        }
        (None, None) => bail!("deliver needs --out or --kafka"),
    }
    Ok(ExitCode::SUCCESS)
}

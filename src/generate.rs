//! `coldtrail generate`: the demo's workload written straight into a store, for load tests and benchmarks.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use store::{Store, Table};
use workload::{fleet, invocations_batch, Anomaly, Generator, Injection, Rng};

use crate::commands::Paths;

const MINUTE_US: i64 = 60_000_000;
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
    /// Do not run the streaming anomaly detectors over what is written.
    #[arg(long)]
    no_detect: bool,
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
    let start_us = start_us + minute * MINUTE_US;
    Ok(Injection { function_idx, anomaly, start_us, end_us: start_us + 30 * MINUTE_US })
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
    let store = std::sync::Arc::new(Store::open(paths.store_config()).await?);
    let detection = if args.no_detect {
        None
    } else {
        Some(crate::detection::Detection::start(store.clone(), &paths.data, detect::StreamConfig::default())?)
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
        generator.minute(start_us + minute_idx * MINUTE_US, &mut pending);
        n_invocations += (pending.len() - before) as u64;
        minute_idx += 1;
        if pending.len() >= APPEND_ROWS_MAX {
            append(&store, &generator, &mut pending).await?;
        }
    }
    append(&store, &generator, &mut pending).await?;
    let detected = detection.map(crate::detection::Detection::stop).transpose()?;
    store.flush_all().await?;
    let seconds = started.elapsed().as_secs_f64();
    outln!(
        "generated {n_invocations} invocations of {} functions over {minute_idx} minutes in {seconds:.1} s ({:.0} rows/s)",
        args.functions,
        n_invocations as f64 / seconds
    );
    if let Some(detected) = detected {
        outln!("detectors: {} function-minutes scored, {} alerts stored", detected.minutes_scored, detected.alerts);
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

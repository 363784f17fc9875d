//! `coldtrail generate`: the demo's workload written straight into a store, for load tests and benchmarks.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use store::{Store, Table};
use workload::{fleet, invocations_batch, Generator, Rng};

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
    let store = Store::open(paths.store_config()).await?;
    let functions = fleet(args.functions, &mut Rng::new(args.seed));
    let mut generator = Generator::new(functions, args.seed);
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
    store.flush_all().await?;
    let seconds = started.elapsed().as_secs_f64();
    outln!(
        "generated {n_invocations} invocations of {} functions over {minute_idx} minutes in {seconds:.1} s ({:.0} rows/s)",
        args.functions,
        n_invocations as f64 / seconds
    );
    Ok(ExitCode::SUCCESS)
}

async fn append(store: &Store, generator: &Generator, pending: &mut Vec<workload::Invocation>) -> anyhow::Result<()> {
    if let Some(batch) = invocations_batch(generator.functions(), pending) {
        store.append(&[(Table::Invocations, batch)], &[])?;
        store.flush_due().await?;
    }
    pending.clear();
    Ok(())
}

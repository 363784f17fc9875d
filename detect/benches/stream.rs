//! Event-to-alert latency of the streaming detectors at a sustained input rate, and memory per tracked
//! function.
//!
//! `cargo bench -p coldtrail-detect --bench stream` (env `EVENTS_PER_SECOND`, default 50,000;
//! `FUNCTIONS`, default 500).
//!
//! Event time runs faster than the clock (one event-minute every two seconds) so that minutes close often
//! enough to measure; the input is paced in real time at the target rate in batches of 100 ms. The
//! latency of an alert is the wall time from the arrival of the batch that closes its minute (moves the
//! watermark past it) to the alert leaving the detector, including any time the batch waited because the
//! detector was behind. The minute itself and the allowed lateness are event time, not counted.

use std::time::{Duration, Instant};

use detect::{AnomalyStream, AnomalyStreamConfig};
use store::time::MICROS_PER_MINUTE;
use workload::{fleet, invocations_batch, Anomaly, Generator, Injection, Rng};

const START_US: i64 = 1_795_219_200_000_000;

fn main() {
    let events_per_second: f64 =
        std::env::var("EVENTS_PER_SECOND").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000.0);
    let n_functions: usize = std::env::var("FUNCTIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let wall_per_event_minute = Duration::from_secs(2);
    let events_per_minute = events_per_second * wall_per_event_minute.as_secs_f64();

    let mut rng = Rng::new(3);
    let mut functions = fleet(n_functions, &mut rng);
    let total_rate: f64 = functions.iter().map(|f| f.rate_per_minute).sum();
    for function in &mut functions {
        function.rate_per_minute *= events_per_minute / total_rate;
        function.daily_amplitude = 0.2;
    }
    let mut generator = Generator::new(functions, 3);
    let warm_minutes = 300;
    let measured_minutes = 30;
    // A spike in a different function every minute of the measured phase.
    for minute in 0..measured_minutes {
        let start_us = START_US + (warm_minutes + minute) * MICROS_PER_MINUTE;
        generator.inject(Injection {
            function_idx: (minute as usize * 7) % n_functions,
            anomaly: Anomaly::Spike { factor: 8.0 },
            start_us,
            end_us: start_us + MICROS_PER_MINUTE,
        });
    }

    let mut stream = AnomalyStream::new(AnomalyStreamConfig::default());
    let mut alerts = Vec::new();
    let mut invocations = Vec::new();
    let warm_started = Instant::now();
    let mut warm_events = 0usize;
    for minute in 0..warm_minutes {
        invocations.clear();
        generator.minute(START_US + minute * MICROS_PER_MINUTE, &mut invocations);
        warm_events += invocations.len();
        if let Some(batch) = invocations_batch(generator.functions(), &invocations) {
            stream.push(&batch, &mut alerts);
        }
    }
    let warm_seconds = warm_started.elapsed().as_secs_f64();
    println!(
        "warm-up: {warm_minutes} event-minutes, {warm_events} events of {n_functions} functions in {warm_seconds:.1} s \
         ({:.0} events/s unpaced, generator included); {} alerts",
        warm_events as f64 / warm_seconds,
        alerts.len()
    );

    // Pre-generate the measured phase in 100 ms batches so that the generator is not timed.
    let batches_per_minute = (wall_per_event_minute.as_millis() / 100) as usize;
    let mut batches = Vec::new();
    for minute in warm_minutes..warm_minutes + measured_minutes {
        invocations.clear();
        generator.minute(START_US + minute * MICROS_PER_MINUTE, &mut invocations);
        let chunk = invocations.len().div_ceil(batches_per_minute).max(1);
        for part in invocations.chunks(chunk) {
            batches.push(invocations_batch(generator.functions(), part).expect("non-empty chunk"));
        }
    }
    let n_events: usize = batches.iter().map(|b| b.num_rows()).sum();
    let interval = Duration::from_secs_f64(n_events as f64 / events_per_second / batches.len() as f64);

    let mut latencies = Vec::new();
    let mut batch_times = Vec::new();
    let started = Instant::now();
    for (batch_idx, batch) in batches.iter().enumerate() {
        let due = started + interval * batch_idx as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let before = alerts.len();
        stream.push(batch, &mut alerts);
        let done = Instant::now();
        let latency = done.duration_since(due);
        batch_times.push(latency);
        if alerts.len() > before {
            latencies.extend(std::iter::repeat_n(latency, alerts.len() - before));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let percentile = |values: &mut Vec<Duration>, q: f64| -> f64 {
        values.sort_unstable();
        values.get(((values.len() as f64 - 1.0) * q).round() as usize).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    let stats = stream.stats();
    let checkpoint = stream.checkpoint().expect("state encodes");
    println!(
        "measured: {n_events} events in {elapsed:.1} s = {:.0} events/s (target {events_per_second:.0}), {} batches of {:.0} ms",
        n_events as f64 / elapsed,
        batches.len(),
        interval.as_secs_f64() * 1e3
    );
    println!(
        "event-to-alert latency over {} alerts: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&mut latencies.clone(), 0.5),
        percentile(&mut latencies.clone(), 0.99),
        percentile(&mut latencies, 1.0)
    );
    println!(
        "batch latency (arrival to processed): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&mut batch_times.clone(), 0.5),
        percentile(&mut batch_times.clone(), 0.99),
        percentile(&mut batch_times, 1.0)
    );
    println!(
        "state: {} functions, {:.1} KiB estimated per function, checkpoint {:.1} KiB per function ({:.1} MB)",
        stats.tracked_functions,
        stats.state_bytes as f64 / stats.tracked_functions.max(1) as f64 / 1024.0,
        checkpoint.len() as f64 / stats.tracked_functions.max(1) as f64 / 1024.0,
        checkpoint.len() as f64 / 1e6
    );
}

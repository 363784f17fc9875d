//! Ingest benchmarks: Lambda log lines in CloudWatch Logs subscription payloads, parsed into Arrow
//! rows, and parsed then stored durably (WAL fsync), per core.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ingest::{Format, Pipeline, Unit};
use store::{FlushPolicy, Store, StoreConfig};

/// Subscription payloads of `n_lines` Lambda log lines: per invocation START, four Node.js application
/// lines, END and REPORT, 200 lines per payload as CloudWatch batches them.
pub fn payloads(n_lines: usize) -> Vec<Vec<u8>> {
    let mut payloads = Vec::new();
    let mut events = Vec::new();
    let t0 = 1_709_632_800_000i64;
    let mut line = 0usize;
    let mut invocation = 0usize;
    while line < n_lines {
        let id = format!("8f507cfc-1a2b-4697-b07a-{invocation:012x}");
        let t = t0 + invocation as i64 * 20;
        let mut messages = vec![format!("START RequestId: {id} Version: $LATEST")];
        for k in 0..4 {
            messages.push(format!("2024-03-05T10:00:00.{:03}Z\t{id}\tINFO\tprocessed order {invocation}-{k} for customer c-{} in 12 ms, total=129.95 USD", k * 3, invocation % 9973));
        }
        messages.push(format!("END RequestId: {id}"));
        messages.push(format!("REPORT RequestId: {id}\tDuration: 52.41 ms\tBilled Duration: 53 ms\tMemory Size: 256 MB\tMax Memory Used: 81 MB\t"));
        for (k, message) in messages.into_iter().enumerate() {
            events.push(serde_json::json!({"id": format!("{line}"), "timestamp": t + k as i64, "message": message}));
            line += 1;
            if events.len() == 200 || line == n_lines {
                let payload = serde_json::json!({"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": format!("/aws/lambda/orders-{}", payloads.len() % 20),
                    "logStream": format!("2024/03/05/[$LATEST]{:032x}", payloads.len()), "subscriptionFilters": ["coldtrail"], "logEvents": std::mem::take(&mut events)});
                payloads.push(serde_json::to_vec(&payload).unwrap());
            }
            if line == n_lines {
                break;
            }
        }
        invocation += 1;
    }
    payloads
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn parse_all(payloads: &[Vec<u8>]) -> usize {
    let mut pipeline = Pipeline::default();
    for (idx, payload) in payloads.iter().enumerate() {
        let position = idx.to_string();
        pipeline.ingest(
            Format::Auto,
            payload,
            &Unit { source: "kafka:logs/0", position: &position, key: None, log_group: None },
        );
    }
    pipeline.finish();
    pipeline.take_batches().iter().map(|(_, b)| b.num_rows()).sum()
}

fn ingest(c: &mut Criterion) {
    let n_lines = 100_000;
    let plain = payloads(n_lines);
    let gzipped: Vec<Vec<u8>> = plain.iter().map(|p| gzip(p)).collect();
    // `COLDTRAIL_PARSE_ITERATIONS=n`: parse the plain payloads n times and stop, for counting
    // instructions (`valgrind --tool=cachegrind`), which this machine's noise does not move as it moves time.
    if let Some(iterations) = std::env::var("COLDTRAIL_PARSE_ITERATIONS").ok().and_then(|n| n.parse::<usize>().ok()) {
        let rows: usize = (0..iterations).map(|_| parse_all(&plain)).sum();
        println!("parsed {iterations} times: {rows} rows");
        std::process::exit(0);
    }
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(n_lines as u64));
    group.sample_size(20);
    group.bench_function(format!("subscription_json/lines={n_lines}"), |b| b.iter(|| parse_all(&plain)));
    group.bench_function(format!("subscription_gzip/lines={n_lines}"), |b| b.iter(|| parse_all(&gzipped)));
    group.finish();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.flush = FlushPolicy { partition_age_max: Duration::from_secs(3600), ..FlushPolicy::default() };
    let store = Arc::new(runtime.block_on(Store::open(config)).unwrap());
    let mut group = c.benchmark_group("durable");
    group.throughput(Throughput::Elements(n_lines as u64));
    group.sample_size(10);
    group.bench_function(format!("subscription_gzip_to_wal/lines={n_lines}"), |b| {
        b.iter_batched(
            || (),
            |()| {
                let mut pipeline = Pipeline::default();
                for (idx, payload) in gzipped.iter().enumerate() {
                    let position = idx.to_string();
                    pipeline.ingest(
                        Format::Auto,
                        payload,
                        &Unit { source: "kafka:logs/0", position: &position, key: None, log_group: None },
                    );
                    if idx % 50 == 49 {
                        store.append(&pipeline.take_batches(), &[]).unwrap();
                    }
                }
                pipeline.finish();
                store.append(&pipeline.take_batches(), &[]).unwrap();
            },
            BatchSize::PerIteration,
        );
        runtime.block_on(store.flush_all()).unwrap();
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);

//! Store benchmarks: durable append throughput (WAL fsync on) and the cost of flushing hot rows into a
//! segment, on realistic Lambda log rows.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, RecordBatch, StringArray, StringDictionaryBuilder, TimestampMicrosecondArray};
use arrow::datatypes::Int32Type;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use store::{FlushPolicy, Store, StoreConfig, Table};

const T0: i64 = 1_767_225_600_000_000;

/// Log rows like a Node.js function writes them: about 160 bytes of text per row.
fn log_rows(start: u64, rows: usize) -> RecordBatch {
    let schema = Table::Logs.schema();
    let dictionary = |values: &dyn Fn(u64) -> String| -> ArrayRef {
        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
        for id in start..start + rows as u64 {
            builder.append_value(values(id));
        }
        Arc::new(builder.finish())
    };
    let text = |values: &dyn Fn(u64) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values((start..start + rows as u64).map(values)))
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMicrosecondArray::from_iter_values((start..start + rows as u64).map(|id| T0 + id as i64 * 1_000))
                .with_timezone("+00:00"),
        ),
        dictionary(&|id| format!("orders-api-{}", id % 20)),
        dictionary(&|id| format!("/aws/lambda/orders-api-{}", id % 20)),
        text(&|id| format!("2026/01/01/[$LATEST]{:032x}", id / 500)),
        text(&|id| format!("{:08x}-4f5e-4a1b-9c2d-{:012x}", id / 4, id / 4)),
        dictionary(&|id| if id % 50 == 0 { "ERROR".into() } else { "INFO".into() }),
        text(&|id| {
            format!(
                "processed order {id} for customer c-{} in {} ms, items=3, total=129.95 USD, status=ok",
                id % 9973,
                id % 400
            )
        }),
        dictionary(&|_| "text".into()),
        dictionary(&|id| format!("kafka:lambda-logs/{}", id % 6)),
        text(&|id| id.to_string()),
    ];
    RecordBatch::try_new(schema, columns).expect("bench rows match the logs schema")
}

fn append(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(dir.path());
    config.flush = FlushPolicy { partition_age_max: Duration::from_secs(3600), ..FlushPolicy::default() };
    let store = runtime.block_on(Store::open(config)).unwrap();
    let mut group = c.benchmark_group("append");
    for rows in [1_000usize, 10_000] {
        let batch = log_rows(0, rows);
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let wal_bytes = store::wal::encode_frame(1, &[(Table::Logs, batch.clone())], &[], &key).unwrap().len();
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(format!("logs_fsync/rows={rows}/wal_bytes={wal_bytes}"), |b| {
            b.iter(|| store.append_batch(Table::Logs, batch.clone()).unwrap());
            // Keep the hot buffer from growing across samples.
            runtime.block_on(store.flush_all()).unwrap();
        });
    }
    group.finish();

    let mut group = c.benchmark_group("flush");
    group.sample_size(10);
    let rows = 100_000;
    group.throughput(Throughput::Elements(rows as u64));
    group.bench_function(format!("logs/rows={rows}"), |b| {
        b.iter_batched(
            || {
                for chunk in 0..10 {
                    store.append_batch(Table::Logs, log_rows(chunk * 10_000, 10_000)).unwrap();
                }
            },
            |()| runtime.block_on(store.flush_all()).unwrap(),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);

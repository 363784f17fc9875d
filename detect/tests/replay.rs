//! `detect::replay` over a real store: hour by hour over the stored range, every row pushed once.

use std::sync::Arc;

use detect::engine::{Engine, EngineConfig};
use detect::replay::{replay, score_range_in_reads_of, stored_span, ReplayStats};
use detect::security::SigmaRules;
use detect::Alert;
use store::time::{MICROS_PER_HOUR, MICROS_PER_MINUTE};
use store::{Store, StoreConfig, Table, TimeRange};
use workload::{fleet, invocations_batch, Anomaly, Generator, Injection, Rng};

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

#[tokio::test]
async fn a_replay_reads_the_stored_hours_only_and_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).await.unwrap());
    let ids: Vec<u64> = (0..300).collect();
    // 300 invocations over two and a half hours.
    let batch = store::fixtures::batch_with_ids(Table::Invocations, &ids, |id| T0 + id as i64 * 30_000_000);
    store.append(&[(Table::Invocations, batch)], &[]).unwrap();
    let (oldest, newest) = stored_span(&store, &[Table::Invocations]).unwrap();
    assert_eq!((oldest, newest), (T0, T0 + 299 * 30_000_000));
    let mut engine = Engine::new(&EngineConfig::anomaly_only(), SigmaRules::default());
    let stats = replay(&store, &mut engine, TimeRange::new(oldest, newest + 1), |_| Ok(())).await.unwrap();
    // Before the fix the loop started at the hour's number, not its time, and walked from 1970.
    assert_eq!(stats.hours, 3, "{stats:?}");
    assert_eq!(stats.rows, 300);
    assert_eq!(engine.stats().stream.invocations, 300);
    assert!(newest - oldest < 3 * MICROS_PER_HOUR);
}

/// Scores `range` of `store` with fresh detectors in reads of at most `rows_max` rows; the alerts as
/// their debug text (a NaN score is not equal to itself), the stats and what the engine counted.
async fn scored(store: &Store, range: TimeRange, rows_max: u64) -> (Vec<String>, ReplayStats, String) {
    let mut engine = Engine::new(&EngineConfig::default(), SigmaRules::shipped());
    let mut alerts: Vec<Alert> = Vec::new();
    let stats = score_range_in_reads_of(store, &mut engine, range, rows_max, |raised| {
        alerts.extend(raised);
        Ok(())
    })
    .await
    .unwrap();
    alerts.extend(engine.finish());
    (alerts.iter().map(|a| format!("{a:?}")).collect(), stats, format!("{:?}", engine.stats()))
}

#[tokio::test]
async fn a_dense_hour_is_read_in_bounded_spans_of_whole_minutes_with_the_alerts_of_one_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(StoreConfig::new(dir.path())).await.unwrap());
    let mut rng = Rng::new(8);
    let mut functions = fleet(4, &mut rng);
    for function in &mut functions {
        function.rate_per_minute = function.rate_per_minute.max(20.0);
    }
    let mut generator = Generator::new(functions, 8);
    // Nine hours: eight to learn from, then a crypto-miner and a flood in the ninth.
    let onset_us = T0 + 8 * MICROS_PER_HOUR;
    for (function_idx, anomaly) in [Anomaly::CryptoMining, Anomaly::Spike { factor: 20.0 }].into_iter().enumerate() {
        generator.inject(Injection {
            function_idx,
            anomaly,
            start_us: onset_us,
            end_us: onset_us + 30 * MICROS_PER_MINUTE,
        });
    }
    let mut invocations = Vec::new();
    for minute in 0..9 * 60 {
        invocations.clear();
        generator.minute(T0 + minute * MICROS_PER_MINUTE, &mut invocations);
        if let Some(batch) = invocations_batch(generator.functions(), &invocations) {
            store.append(&[(Table::Invocations, batch)], &[]).unwrap();
        }
    }
    let range = TimeRange::new(T0, T0 + 9 * MICROS_PER_HOUR);
    let (whole, whole_stats, whole_engine) = scored(&store, range, u64::MAX).await;
    assert_eq!(whole_stats.reads.len(), 9, "one read per hour when nothing bounds it");
    assert!(!whole.is_empty(), "the injected anomalies raise alerts");
    let rows_max = 500;
    let (bounded, bounded_stats, bounded_engine) = scored(&store, range, rows_max).await;
    assert_eq!(bounded, whole, "reads of whole minutes show the detectors the same rows in the same order");
    assert_eq!(bounded_engine, whole_engine);
    assert_eq!(bounded_stats.rows, whole_stats.rows);
    assert!(bounded_stats.reads.len() > 9 * 10, "{} reads", bounded_stats.reads.len());
    // The spans tile the range, each starts and ends on a minute, and each holds at most `rows_max` rows
    // unless it is one minute long.
    let mut next = range.start_micros;
    for (span, _) in &bounded_stats.reads {
        assert_eq!(span.start_micros, next);
        assert_eq!(span.start_micros % MICROS_PER_MINUTE, 0);
        next = span.end_micros;
        let rows: usize =
            store.scan(Table::Invocations, Some(&[0]), *span).await.unwrap().iter().map(|b| b.num_rows()).sum();
        assert!(
            rows as u64 <= rows_max || span.end_micros - span.start_micros == MICROS_PER_MINUTE,
            "{span:?}: {rows} rows"
        );
    }
    assert_eq!(next, range.end_micros);
}

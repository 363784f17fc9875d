//! `detect::replay` over a real store: hour by hour over the stored range, every row pushed once.

use std::sync::Arc;

use detect::engine::{Engine, EngineConfig};
use detect::replay::{replay, stored_span};
use detect::security::SigmaRules;
use store::time::MICROS_PER_HOUR;
use store::{Store, StoreConfig, Table, TimeRange};

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

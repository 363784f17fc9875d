//! Store behaviour through its public API: append, scan, restart, flush, positions, retention, compaction.

use std::collections::BTreeMap;
use std::time::Duration;

use store::fixtures::{batch_with_ids, ids_of};
use store::time::{partition_dir, MICROS_PER_HOUR};
use store::{FlushPolicy, Position, Store, StoreConfig, Table, TimeRange};

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

fn config(dir: &std::path::Path) -> StoreConfig {
    let mut config = StoreConfig::new(dir);
    config.flush = FlushPolicy { partition_age_max: Duration::from_secs(3600), ..FlushPolicy::default() };
    config
}

fn ids(range: std::ops::Range<u64>) -> Vec<u64> {
    range.collect()
}

async fn all_ids(store: &Store, table: Table) -> Vec<u64> {
    let mut ids = ids_of(table, &store.scan(table, None, TimeRange::ALL).await.unwrap());
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn appended_rows_are_visible_at_once_and_exactly_once_after_restarts() {
    // Goal: acknowledged rows survive restarts through WAL replay and flushes, never doubled.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids(0..100), |id| T0 + id as i64)).unwrap();
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..100));
    drop(store);

    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..100), "replayed from the WAL");
    assert_eq!(store.flush_all().await.unwrap(), 1);
    store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids(100..150), |id| T0 + id as i64)).unwrap();
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..150), "segment and hot rows together");
    drop(store);

    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..150), "flushed rows are not replayed again");
    let stats = store.stats();
    assert_eq!(stats[&Table::Logs].segment_rows, 100);
    assert_eq!(stats[&Table::Logs].hot_rows, 50);
}

#[tokio::test]
async fn flush_writes_one_time_sorted_segment_per_hour() {
    // Goal: segments are partitioned by hour and sorted by time inside, whatever the append order.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    let shuffled: Vec<u64> = (0..300).rev().collect();
    let time_of = |id: u64| T0 + (id as i64 % 3) * MICROS_PER_HOUR + id as i64;
    store.append_batch(Table::Invocations, batch_with_ids(Table::Invocations, &shuffled, time_of)).unwrap();
    assert_eq!(store.flush_all().await.unwrap(), 3);
    let snapshot = store.snapshot(Table::Invocations, TimeRange::ALL);
    assert_eq!(snapshot.segments.len(), 3);
    assert!(snapshot.hot.is_empty());
    for segment in &snapshot.segments {
        assert!(segment.path.starts_with(&format!("invocations/{}/", partition_dir(segment.hour))), "{}", segment.path);
        assert_eq!(segment.rows, 100);
        let file = dir.path().join(&segment.path);
        let bytes = bytes::Bytes::from(std::fs::read(&file).unwrap());
        let batches =
            store::segment::decode_segment(Table::Invocations, &segment.path, bytes, None, TimeRange::ALL).unwrap();
        let times: Vec<i64> = batches
            .iter()
            .flat_map(|b| store::segment::time_values(Table::Invocations, b).unwrap().values().to_vec())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "sorted by time");
        assert_eq!(times.len(), 100);
    }
}

#[tokio::test]
async fn time_ranges_prune_segments_and_filter_rows() {
    // Goal: a time range reads only overlapping segments and returns only rows inside it.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    for hour in 0..4 {
        let ids: Vec<u64> = (hour * 10..hour * 10 + 10).collect();
        let batch =
            batch_with_ids(Table::Cloudtrail, &ids, |id| T0 + (id / 10) as i64 * MICROS_PER_HOUR + (id % 10) as i64);
        store.append_batch(Table::Cloudtrail, batch).unwrap();
    }
    store.flush_all().await.unwrap();
    // One more hot row in hour 1.
    store
        .append_batch(Table::Cloudtrail, batch_with_ids(Table::Cloudtrail, &[99], |_| T0 + MICROS_PER_HOUR + 50))
        .unwrap();
    let range = TimeRange::new(T0 + MICROS_PER_HOUR + 5, T0 + 2 * MICROS_PER_HOUR + 3);
    let snapshot = store.snapshot(Table::Cloudtrail, range);
    assert_eq!(snapshot.segments.len(), 2, "hours 1 and 2 only");
    let mut got = ids_of(Table::Cloudtrail, &store.scan(Table::Cloudtrail, None, range).await.unwrap());
    got.sort_unstable();
    assert_eq!(got, vec![15, 16, 17, 18, 19, 20, 21, 22, 99]);
    assert!(store.scan(Table::Cloudtrail, None, TimeRange::new(0, 1)).await.unwrap().is_empty());
    // A projection returns just those columns, in the order asked.
    let projected = store.scan(Table::Cloudtrail, Some(&[2, 0]), range).await.unwrap();
    for batch in &projected {
        assert_eq!(batch.schema().field(0).name(), "event_name");
        assert_eq!(batch.schema().field(1).name(), "event_time");
    }
}

#[tokio::test]
async fn positions_are_stored_with_their_rows_and_survive_wal_collection() {
    // Goal: positions become durable in the same append as their rows and outlive WAL deletion.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    let batch = batch_with_ids(Table::Logs, &ids(0..10), |id| T0 + id as i64);
    let positions =
        [Position { stream: "kafka:logs/0".into(), offset: 10 }, Position { stream: "kafka:logs/1".into(), offset: 3 }];
    store.append(&[(Table::Logs, batch)], &positions).unwrap();
    store.append(&[], &[Position { stream: "kafka:logs/0".into(), offset: 12 }]).unwrap();
    assert_eq!(store.position("kafka:logs/0"), Some(12));
    drop(store);
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.positions(), BTreeMap::from([("kafka:logs/0".into(), 12), ("kafka:logs/1".into(), 3)]));
    store.flush_all().await.unwrap();
    assert_eq!(store.wal_stats().0, 1, "only the new empty active WAL file is left");
    drop(store);
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.position("kafka:logs/0"), Some(12));
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..10));
}

#[tokio::test]
async fn sealing_what_is_due_deletes_the_wal_it_covers() {
    // Goal: a process that only appends and seals (a file ingest, `generate`) keeps a WAL of its hot rows,
    // not of everything it ever wrote (a 50M-row `generate` left 17 GB of WAL behind until it ended).
    let dir = tempfile::tempdir().unwrap();
    let mut sealing = config(dir.path());
    sealing.flush.partition_rows_max = 10;
    let store = Store::open(sealing).await.unwrap();
    for hour in 0..5u64 {
        let batch =
            batch_with_ids(Table::Logs, &ids(hour * 10..hour * 10 + 10), |id| T0 + id as i64 * MICROS_PER_HOUR / 10);
        let position = Position { stream: "file:/input".into(), offset: hour + 1 };
        store.append(&[(Table::Logs, batch)], &[position]).unwrap();
        assert_eq!(store.flush_due().await.unwrap(), 1);
        assert_eq!(store.wal_stats(), (1, 0), "after sealing hour {hour}, only an empty active WAL file is left");
    }
    drop(store);
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.position("file:/input"), Some(5));
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..50));
}

#[tokio::test]
async fn a_batch_that_is_not_the_table_schema_is_refused_and_nothing_is_written() {
    // Goal: bad input is refused with a clear error before it reaches the WAL.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    let logs = batch_with_ids(Table::Logs, &[1], |_| T0);
    let err = store.append_batch(Table::Invocations, logs).unwrap_err().to_string();
    assert!(err.contains("does not match its schema"), "{err}");
    assert!(store.scan(Table::Invocations, None, TimeRange::ALL).await.unwrap().is_empty());
    drop(store);
    let store = Store::open(config(dir.path())).await.unwrap();
    assert!(store.scan(Table::Logs, None, TimeRange::ALL).await.unwrap().is_empty());
}

#[tokio::test]
async fn retention_and_compaction_keep_rows_and_the_ledger_consistent() {
    // Goal: retention deletes whole old segments, compaction merges small ones, both recorded so that
    // verify stays clean and no row is lost or doubled.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.retention.insert(Table::Logs, Duration::from_secs(24 * 3600));
    config.compaction.small_segments_min = 3;
    let store = Store::open(config.clone()).await.unwrap();
    let now = T0 + 48 * MICROS_PER_HOUR;
    // Old data, two days before `now`.
    store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids(0..10), |id| T0 + id as i64)).unwrap();
    store.flush_all().await.unwrap();
    // Recent data in three small segments of one hour.
    for chunk in 1..4u64 {
        let ids: Vec<u64> = (chunk * 100..chunk * 100 + 5).collect();
        store
            .append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids, |id| now - MICROS_PER_HOUR / 2 + id as i64))
            .unwrap();
        store.flush_all().await.unwrap();
    }
    assert_eq!(store.stats()[&Table::Logs].segments, 4);
    assert_eq!(store.apply_retention(now).await.unwrap(), 1);
    assert_eq!(store.compact(now).await.unwrap(), 3);
    let stats = store.stats();
    assert_eq!(stats[&Table::Logs].segments, 1);
    assert_eq!(stats[&Table::Logs].segment_rows, 15);
    let expected: Vec<u64> = [100..105, 200..205, 300..305].into_iter().flatten().collect();
    assert_eq!(all_ids(&store, Table::Logs).await, expected);
    let report = store::verify_location(store.location(), &Default::default(), &[]).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.entries_checked, 6, "4 adds, 1 retention, 1 compaction");
    drop(store);
    let store = Store::open(config).await.unwrap();
    assert_eq!(all_ids(&store, Table::Logs).await, expected, "nothing replayed twice after compaction");
    let ledger = store.ledger_batch().await.unwrap();
    assert_eq!(ledger.num_rows(), 6);
}

#[tokio::test]
async fn a_segment_left_unrecorded_by_a_crash_is_removed_on_open() {
    // Goal: a crash between writing a segment and its ledger entry leaves no duplicate rows.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids(0..20), |id| T0 + id as i64)).unwrap();
    let node = store.node_id().to_string();
    drop(store);
    // What a crash after the put and before the ledger append leaves behind.
    let orphan =
        store::segment::encode_segment(Table::Logs, &[batch_with_ids(Table::Logs, &ids(0..20), |id| T0 + id as i64)])
            .unwrap();
    let orphan_path = store::segment_path::segment_path(Table::Logs, store::time::hour_of(T0), &node, 1);
    std::fs::create_dir_all(dir.path().join(&orphan_path).parent().unwrap()).unwrap();
    std::fs::write(dir.path().join(&orphan_path), &orphan.bytes).unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    assert!(!dir.path().join(&orphan_path).exists());
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..20));
    store.flush_all().await.unwrap();
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..20));
}

#[tokio::test]
async fn two_nodes_sharing_one_location_see_each_others_segments() {
    // Goal: several writers share a prefix; node ids keep their segments and ledgers apart.
    let shared = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let open = |dir: &std::path::Path, node: &str| {
        let mut config = config(dir);
        config.location = Some(shared.path().to_string_lossy().into_owned());
        config.node_id = Some(node.into());
        Store::open(config)
    };
    let a = open(a_dir.path(), "node-a").await.unwrap();
    let b = open(b_dir.path(), "node-b").await.unwrap();
    a.append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids(0..5), |id| T0 + id as i64)).unwrap();
    b.append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids(5..9), |id| T0 + id as i64)).unwrap();
    a.flush_all().await.unwrap();
    b.flush_all().await.unwrap();
    a.refresh().await.unwrap();
    assert_eq!(all_ids(&a, Table::Logs).await, ids(0..9));
    let report = store::verify_location(a.location(), &Default::default(), &[]).await.unwrap();
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(report.nodes, vec!["node-a".to_string(), "node-b".to_string()]);
    drop(a);
    assert!(open(a_dir.path(), "node-c").await.is_err(), "a data directory keeps its node id");
}

#[tokio::test]
async fn subscribers_receive_appended_rows_of_their_tables_with_backpressure() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(config(dir.path())).await.unwrap());
    let receiver = store.subscribe(&[Table::Invocations], 1);
    let invocations = batch_with_ids(Table::Invocations, &ids(0..3), |id| T0 + id as i64);
    let logs = batch_with_ids(Table::Logs, &ids(0..2), |id| T0 + id as i64);
    let seq = store.append(&[(Table::Invocations, invocations.clone()), (Table::Logs, logs.clone())], &[]).unwrap();
    // Appends of other tables only are not delivered and do not wait.
    store.append(&[(Table::Logs, logs)], &[]).unwrap();
    // The channel holds one append: the next one waits until the subscriber takes the first.
    let writer = {
        let store = store.clone();
        let batch = batch_with_ids(Table::Invocations, &ids(3..5), |id| T0 + id as i64);
        std::thread::spawn(move || store.append(&[(Table::Invocations, batch)], &[]).unwrap())
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!writer.is_finished(), "the second append should wait for the subscriber");
    // Meanwhile appends of other tables go through, also to their own subscribers: the subscriber that
    // holds the writer back (a detection thread) can store its alerts while the writer waits for it.
    let alerts_receiver = store.subscribe(&[Table::Alerts], 4);
    let other = {
        let store = store.clone();
        let batch = batch_with_ids(Table::Alerts, &ids(0..1), |id| T0 + id as i64);
        std::thread::spawn(move || store.append(&[(Table::Alerts, batch)], &[]).unwrap())
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(other.is_finished(), "an append of another table waited for a full subscriber of invocations");
    assert_eq!(alerts_receiver.recv().unwrap().batches[0].0, Table::Alerts);
    let first = receiver.recv().unwrap();
    assert_eq!(first.seq, seq);
    assert_eq!(first.batches.len(), 1);
    assert_eq!(first.batches[0].0, Table::Invocations);
    assert_eq!(ids_of(Table::Invocations, &[first.batches[0].1.clone()]), vec![0, 1, 2]);
    let second_seq = writer.join().unwrap();
    let second = receiver.recv().unwrap();
    assert_eq!(second.seq, second_seq);
    assert_eq!(ids_of(Table::Invocations, &[second.batches[0].1.clone()]), vec![3, 4]);
    // A dropped subscriber no longer holds appends back.
    drop(receiver);
    for _ in 0..3 {
        store.append(&[(Table::Invocations, invocations.clone())], &[]).unwrap();
    }
}

#[tokio::test]
async fn a_damaged_positions_checkpoint_is_corruption_not_a_bug() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids(0..10), |id| T0 + id as i64)).unwrap();
    store.append(&[], &[Position { stream: "file:/a".into(), offset: 10 }]).unwrap();
    store.flush_all().await.unwrap();
    drop(store);
    let checkpoints: Vec<_> = std::fs::read_dir(dir.path().join("_positions"))
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(checkpoints.len(), 1, "{checkpoints:?}");
    std::fs::write(&checkpoints[0], b"{\"positions\": {\"file:/a\": ").unwrap();
    let error = Store::open(config(dir.path())).await.err().expect("a damaged checkpoint is refused");
    assert!(error.is_corruption(), "{error}");
    assert!(error.to_string().contains("positions"), "{error}");
}

#[tokio::test]
async fn the_event_time_span_covers_sealed_and_hot_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.event_time_span(Table::Logs), None);
    store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids(0..10), |id| T0 + id as i64 * 1_000)).unwrap();
    store.flush_all().await.unwrap();
    store
        .append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids(10..12), |id| T0 + MICROS_PER_HOUR + id as i64))
        .unwrap();
    assert_eq!(store.event_time_span(Table::Logs), Some((T0, T0 + MICROS_PER_HOUR + 11)));
}

/// Issue 18, item 11: the data directory, the WAL and the segments are the owner's only.
#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_wal_and_segments_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = Store::open(config(&data)).await.unwrap();
    store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids(0..10), |id| T0 + id as i64)).unwrap();
    let mode = |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "an existing data directory is tightened");
    assert_eq!(mode(&data.join("wal")), 0o700);
    for entry in std::fs::read_dir(data.join("wal")).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }
    store.flush_all().await.unwrap();
    let segment = store.snapshot(Table::Logs, TimeRange::ALL).segments[0].path.clone();
    assert_eq!(mode(&data.join(segment)), 0o600);
}

#[tokio::test]
async fn the_hot_buffer_counts_a_batch_over_two_hours_once_until_its_last_hour_is_sealed() {
    // Goal: rows of one append that span hours are held as slices of one batch; the bound on the hot
    // buffer counts the batch once, and frees it only when no hour holds a part of it any more.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.flush.partition_rows_max = 1_500;
    let store = Store::open(config.clone()).await.unwrap();
    let batch = batch_with_ids(Table::Logs, &ids(0..2_000), |id| T0 + if id < 1_600 { 0 } else { MICROS_PER_HOUR });
    let whole = batch.get_array_memory_size();
    store.append_batch(Table::Logs, batch).unwrap();
    assert_eq!(store.hot_bytes().0, whole, "two hours of one batch count once");
    assert_eq!(store.flush_due().await.unwrap(), 1, "the first hour is over its row bound");
    assert_eq!(store.hot_bytes().0, whole, "the second hour still holds the batch");
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..2_000));
    drop(store);

    let store = Store::open(config).await.unwrap();
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..2_000), "the unsealed hour replayed, the sealed one not");
    assert!(store.hot_bytes().0 > 0);
    assert_eq!(store.flush_all().await.unwrap(), 1);
    assert_eq!(store.hot_bytes().0, 0, "nothing holds the batch once both hours are sealed");
    assert_eq!(all_ids(&store, Table::Logs).await, ids(0..2_000));
}

#[tokio::test]
async fn partitions_encoded_at_once_are_entered_in_order_and_a_failed_write_leaves_the_rest_hot() {
    // Goal: a flush that encodes several partitions at once writes the ledger as one encoder would, one
    // entry per partition in order; when a segment cannot be written, the segments entered before it
    // stay, the partitions still encoding stay hot, and the next flush seals them, every row once.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.flush.encoders = 3;
    let store = Store::open(config).await.unwrap();
    let time_of = |id: u64| T0 + (id as i64 % 6) * MICROS_PER_HOUR + id as i64;
    for table in [Table::Invocations, Table::Logs] {
        store.append_batch(table, batch_with_ids(table, &ids(0..600), time_of)).unwrap();
    }
    // The fourth partition in sealing order (invocations of hour 3) cannot be written: its directory
    // is a file.
    let blocked = dir.path().join("invocations").join(partition_dir(store::time::hour_of(T0) + 3));
    std::fs::create_dir_all(blocked.parent().unwrap()).unwrap();
    std::fs::write(&blocked, b"not a directory").unwrap();
    assert!(store.flush_all().await.is_err());
    let ledger = store.ledger_batch().await.unwrap();
    let partitions = |ledger: &arrow::array::RecordBatch| -> Vec<(String, String)> {
        let column = |name: &str| {
            ledger.column_by_name(name).unwrap().as_any().downcast_ref::<arrow::array::StringArray>().unwrap().clone()
        };
        let (tables, partitions) = (column("table_name"), column("partition"));
        (0..ledger.num_rows()).map(|i| (tables.value(i).to_string(), partitions.value(i).to_string())).collect()
    };
    let hour = |h: i64| partition_dir(store::time::hour_of(T0) + h);
    let entered: Vec<(String, String)> = (0..3).map(|h| ("invocations".to_string(), hour(h))).collect();
    assert_eq!(partitions(&ledger), entered, "the three partitions before the failed one, in order");
    assert_eq!(store.stats()[&Table::Invocations].hot_rows, 300, "hours 3 to 5 stay hot");
    assert_eq!(store.stats()[&Table::Logs].hot_rows, 600, "the partitions after the failure stay hot");
    assert_eq!(all_ids(&store, Table::Invocations).await, ids(0..600));

    std::fs::remove_file(&blocked).unwrap();
    assert_eq!(store.flush_all().await.unwrap(), 9);
    let ledger = store.ledger_batch().await.unwrap();
    let mut expected = entered;
    expected.extend((3..6).map(|h| ("invocations".to_string(), hour(h))));
    expected.extend((0..6).map(|h| ("logs".to_string(), hour(h))));
    assert_eq!(partitions(&ledger), expected, "one entry per partition, in sealing order");
    let seqs = ledger.column_by_name("seq").unwrap().as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
    assert_eq!(seqs.values().to_vec(), (1..=12).collect::<Vec<i64>>());
    for table in [Table::Invocations, Table::Logs] {
        assert_eq!(all_ids(&store, table).await, ids(0..600), "{table}: every row once");
        assert_eq!(store.stats()[&table].hot_rows, 0);
    }
    let report = store::verify_location(store.location(), &Default::default(), &[]).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
}

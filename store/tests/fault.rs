//! A write that fails between the frames of one append (the disk filled up: `COLDTRAIL_FAULT` makes the
//! second frame's write fail with ENOSPC) stores none of the append, and the WAL is cut back so that the
//! retry, and a restart after it, store every row once with its position. Its own test binary: the fault
//! is armed for the whole process.

use store::fixtures::{batch_with_ids, ids_of};
use store::{Position, Store, StoreConfig, StoreError, Table, TimeRange};

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

async fn open(dir: &std::path::Path) -> Store {
    let mut config = StoreConfig::new(dir);
    config.frame_bytes_max = 8 * 1024;
    Store::open(config).await.unwrap()
}

async fn ids(store: &Store) -> Vec<u64> {
    let mut ids = ids_of(Table::Logs, &store.scan(Table::Logs, None, TimeRange::ALL).await.unwrap());
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_write_failing_between_the_frames_of_an_append_stores_none_of_it_and_the_retry_stores_it_once() {
    std::env::set_var(store::fault::FAULT_ENV, "wal.frame:3:enospc");
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let before: Vec<u64> = (0..10).collect();
    store.append(&[(Table::Logs, batch_with_ids(Table::Logs, &before, |id| T0 + id as i64))], &[]).unwrap();
    // Frame 1 was the first append; this one needs several frames and its second write fails.
    let ids_big: Vec<u64> = (10..3_000).collect();
    let big = [(Table::Logs, batch_with_ids(Table::Logs, &ids_big, |id| T0 + id as i64))];
    let position = Position { stream: "file:/x".into(), offset: 99 };
    let failed = store.append(&big, std::slice::from_ref(&position));
    match &failed {
        Err(StoreError::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(28), "{source}"),
        other => panic!("the second frame's write fails: {other:?}"),
    }
    assert_eq!(ids(&store).await, before, "none of the failed append is visible");
    assert_eq!(store.position("file:/x"), None);
    drop(store);
    let store = open(dir.path()).await;
    assert_eq!(ids(&store).await, before, "nor replayed after a restart");
    assert_eq!(store.position("file:/x"), None);

    // Run again (space freed): every row once, with its position, also after a restart.
    store.append(&big, std::slice::from_ref(&position)).unwrap();
    let all: Vec<u64> = (0..3_000).collect();
    assert_eq!(ids(&store).await, all);
    drop(store);
    let store = open(dir.path()).await;
    assert_eq!(ids(&store).await, all);
    assert_eq!(store.position("file:/x"), Some(99));
}

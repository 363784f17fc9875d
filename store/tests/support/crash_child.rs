//! The child process of the crash test (`store/tests/crash.rs`): appends batches of logs rows with
//! consecutive ids in a loop, printing `BEGIN lo hi` before and `ACK lo hi` after each acknowledged
//! append, and runs flushes, WAL collection and compaction in between, until it is killed.
//!
//! Usage: crash_child DATA_DIR SEED

use std::io::Write;
use std::time::Duration;

use store::fixtures::{batch_with_ids, ids_of};
use store::{FlushPolicy, Position, Store, StoreConfig, Table, TimeRange};

const T0: i64 = 1_767_225_600_000_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: crash_child DATA_DIR SEED");
    let mut seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut config = StoreConfig::new(&dir);
    config.flush =
        FlushPolicy { partition_rows_max: 600, partition_age_max: Duration::from_millis(30), ..FlushPolicy::default() };
    config.compaction.small_segments_min = 3;
    let store = Store::open(config).await.expect("store opens after a crash");
    let existing = ids_of(Table::Logs, &store.scan(Table::Logs, None, TimeRange::ALL).await.expect("scan"));
    let mut next = existing.iter().max().map_or(0, |max| max + 1);
    let mut stdout = std::io::stdout();
    writeln!(stdout, "OPEN {next}").unwrap();
    stdout.flush().unwrap();
    let mut round = 0u64;
    loop {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let rows = 1 + (seed >> 33) % 64;
        let ids: Vec<u64> = (next..next + rows).collect();
        // Two thousand rows per hour, so partitions roll over while the test runs.
        let batch =
            batch_with_ids(Table::Logs, &ids, |id| T0 + (id as i64 / 2_000) * 3_600_000_000 + (id % 2_000) as i64);
        writeln!(stdout, "BEGIN {next} {}", next + rows).unwrap();
        stdout.flush().unwrap();
        store
            .append(&[(Table::Logs, batch)], &[Position { stream: "crash".into(), offset: next + rows }])
            .expect("append");
        writeln!(stdout, "ACK {next} {}", next + rows).unwrap();
        stdout.flush().unwrap();
        next += rows;
        round += 1;
        if round.is_multiple_of(5) {
            store.maintain(round.is_multiple_of(20)).await.expect("maintenance");
        }
    }
}

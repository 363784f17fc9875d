//! Crash test: a child process appends in a loop and is killed with SIGKILL at random moments; after
//! every restart each acknowledged row is present exactly once and every unacknowledged batch is either
//! wholly present or wholly absent.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use store::fixtures::ids_of;
use store::{Store, StoreConfig, Table, TimeRange};

const KILLS: usize = 24;

fn child_binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_store-crash-child"))
}

#[test]
fn acknowledged_rows_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let binary = child_binary();
    // Batches announced by BEGIN: (lo, hi) -> acknowledged?
    let mut batches: HashMap<u64, (u64, bool)> = HashMap::new();
    let mut seed = 0x5eed_u64;
    let mut total_acked = 0usize;
    for kill in 0..KILLS {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let run_for = Duration::from_millis(40 + (seed >> 33) % 400);
        let mut child = Command::new(&binary)
            .arg(dir.path())
            .arg(seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::sync_channel::<String>(1024);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill only once the child has opened the store and started appending.
        let mut opened = false;
        let mut deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match lines_rx.recv_timeout(deadline - now) {
                Ok(line) => {
                    if line.starts_with("OPEN") && !opened {
                        opened = true;
                        deadline = Instant::now() + run_for;
                    }
                    record(&mut batches, &line, &mut total_acked);
                }
                Err(_) => break,
            }
        }
        assert!(opened, "child {kill} did not open the store within a minute");
        eprintln!("kill {kill}: acked so far {total_acked}, batches {}", batches.len());
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok(line) = lines_rx.try_recv() {
            record(&mut batches, &line, &mut total_acked);
        }
    }
    assert!(total_acked > KILLS * 5, "the children acknowledged only {total_acked} batches");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(StoreConfig::new(dir.path())).await.unwrap();
        let mut ids = ids_of(Table::Logs, &store.scan(Table::Logs, None, TimeRange::ALL).await.unwrap());
        ids.sort_unstable();
        let n_ids = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n_ids, "no row is stored twice");
        let present: std::collections::HashSet<u64> = ids.iter().copied().collect();
        for (lo, (hi, acked)) in &batches {
            let n_present = (*lo..*hi).filter(|id| present.contains(id)).count() as u64;
            if *acked {
                assert_eq!(n_present, hi - lo, "acknowledged batch {lo}..{hi} is complete");
            } else {
                assert!(
                    n_present == 0 || n_present == hi - lo,
                    "unacknowledged batch {lo}..{hi} is all or nothing: {n_present}"
                );
            }
        }
        // Every stored row belongs to an announced batch.
        assert!(ids.iter().all(|id| batches.iter().any(|(lo, (hi, _))| lo <= id && id < hi)));
        // The position is that of the last stored batch.
        let last = ids.last().copied().unwrap();
        assert_eq!(store.position("crash"), Some(last + 1));
        let report = store::verify_location(store.location(), &Default::default(), &[]).await.unwrap();
        assert!(report.is_intact(), "{:?}", report.problems);
        assert!(report.entries_checked > 0, "the children flushed segments");
    });
}

fn record(batches: &mut HashMap<u64, (u64, bool)>, line: &str, total_acked: &mut usize) {
    let parts: Vec<&str> = line.split_whitespace().collect();
    match parts.as_slice() {
        ["BEGIN", lo, hi] => {
            batches.insert(lo.parse().unwrap(), (hi.parse().unwrap(), false));
        }
        ["ACK", lo, hi] => {
            let entry = batches.get_mut(&lo.parse().unwrap()).expect("ACK follows BEGIN");
            assert_eq!(entry.0, hi.parse::<u64>().unwrap());
            entry.1 = true;
            *total_acked += 1;
        }
        _ => {}
    }
}

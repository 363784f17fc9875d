//! `coldtrail ingest` of a large file is exactly-once across crashes: SIGKILLs at random moments from
//! 0.1 s into a run, each followed by a resume (the same command again), and a write that fails for lack
//! of space followed by the same command again. Every row is stored once, checked by request ids and by
//! log lines (each line of the input is unique).
//!
//! The input is CloudWatch subscription payloads (one per line, uncompressed) of Lambda text-format
//! lines, the shape issue 19 measured: large enough to be read in several chunks, stored in several
//! appends, and sealed at the end.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Invocations in the input, four lines each.
const INVOCATIONS: usize = 120_000;
/// Invocations per subscription payload (one log stream each).
const PER_PAYLOAD: usize = 25;
const KILLS_MIN: usize = 50;

fn coldtrail() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coldtrail"))
}

/// Writes the payloads; returns the number of log lines.
fn write_payloads(path: &Path) -> usize {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let start_ms = 1_795_996_800_000i64; // 2026-12-01T00:00:00Z
    let mut lines = 0;
    for first in (0..INVOCATIONS).step_by(PER_PAYLOAD) {
        let stream = format!("2026/12/01/[$LATEST]{:032x}", first / PER_PAYLOAD % 64);
        let function = first / PER_PAYLOAD % 8;
        let mut events = Vec::with_capacity(PER_PAYLOAD * 4);
        for invocation in first..(first + PER_PAYLOAD).min(INVOCATIONS) {
            let rid = format!("5e1c0a3e-7b7d-4c6a-9f43-{invocation:012x}");
            let at = start_ms + invocation as i64 * 40;
            let time = chrono::DateTime::from_timestamp_millis(at + 3).unwrap().format("%Y-%m-%dT%H:%M:%S%.3fZ");
            let messages = [
                format!("START RequestId: {rid} Version: $LATEST\n"),
                format!("{time}\t{rid}\tINFO\tprocessed order {invocation} for customer c-{}\n", invocation % 9973),
                format!("END RequestId: {rid}\n"),
                format!(
                    "REPORT RequestId: {rid}\tDuration: {}.{:02} ms\tBilled Duration: {} ms\tMemory Size: 256 MB\tMax Memory Used: 81 MB\t\n",
                    10 + invocation % 50,
                    invocation % 100,
                    11 + invocation % 50
                ),
            ];
            for (offset, message) in messages.into_iter().enumerate() {
                events.push(serde_json::json!({
                    "id": format!("{}{invocation:012}{offset}", at),
                    "timestamp": at + offset as i64 * 5,
                    "message": message,
                }));
                lines += 1;
            }
        }
        let payload = serde_json::json!({
            "messageType": "DATA_MESSAGE",
            "owner": "123456789012",
            "logGroup": format!("/aws/lambda/orders-{function}"),
            "logStream": stream,
            "subscriptionFilters": ["coldtrail"],
            "logEvents": events,
        });
        serde_json::to_writer(&mut out, &payload).unwrap();
        out.write_all(b"\n").unwrap();
    }
    out.flush().unwrap();
    lines
}

/// `(invocation rows, distinct request ids, log rows, distinct log lines)`.
fn counts(data: &Path) -> (i64, i64, i64, i64) {
    let query =
        "SELECT (SELECT count(*) FROM invocations) AS a, (SELECT count(DISTINCT request_id) FROM invocations) AS b, \
                 (SELECT count(*) FROM logs) AS c, (SELECT count(DISTINCT message) FROM logs) AS d";
    let output = coldtrail().arg("--data").arg(data).args(["sql", query, "--format", "csv"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let cells: Vec<i64> = text.lines().nth(1).unwrap().split(',').map(|cell| cell.trim().parse().unwrap()).collect();
    (cells[0], cells[1], cells[2], cells[3])
}

fn ingest(data: &Path, input: &Path) -> Command {
    let mut command = coldtrail();
    command.arg("--data").arg(data).args(["ingest", "--no-detect"]).arg(input);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

/// Runs an ingest to its end; returns its stdout.
fn ingest_to_end(data: &Path, input: &Path) -> String {
    let output = ingest(data, input).stdout(Stdio::piped()).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A small xorshift generator: the kill moments, reproducible from the seed printed.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}

fn assert_exactly_once(data: &Path, input: &Path, lines: usize, what: &str) {
    assert_each_once(data, input, INVOCATIONS, lines, what)
}

fn assert_each_once(data: &Path, input: &Path, invocations: usize, lines: usize, what: &str) {
    let invocations = invocations as i64;
    let lines = lines as i64;
    assert_eq!(counts(data), (invocations, invocations, lines, lines), "{what}: each row once");
    let again = ingest_to_end(data, input);
    assert!(again.contains("skipped 1 files"), "{what}: the file is skipped next time: {again}");
}

#[test]
fn fifty_sigkills_at_random_moments_each_followed_by_a_resume_store_every_row_once() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("payloads.ndjson");
    let lines = write_payloads(&input);
    let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("kill moments from seed {seed} (CRASH_SEED={seed} repeats them)");
    let mut moments = Moments(seed);
    // How long one run takes here, so that the kills fall across it.
    let timed = work.path().join("timed");
    let started = Instant::now();
    ingest_to_end(&timed, &input);
    let run_ms = (started.elapsed().as_millis() as u64).max(400);
    assert_exactly_once(&timed, &input, lines, "a run without kills");

    let mut kills = 0;
    let mut round = 0;
    while kills < KILLS_MIN {
        round += 1;
        let data = work.path().join(format!("round-{round}"));
        let mut resumes = 0;
        loop {
            let mut child = ingest(&data, &input).spawn().unwrap();
            let at = Duration::from_millis(moments.next_ms(100, run_ms));
            let deadline = Instant::now() + at;
            let finished = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            match finished {
                Some(status) => {
                    let mut stderr = String::new();
                    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
                    assert!(status.success(), "round {round}, after {resumes} resumes: {stderr}");
                    break;
                }
                None => {
                    child.kill().unwrap();
                    child.wait().unwrap();
                    kills += 1;
                    resumes += 1;
                }
            }
        }
        assert_exactly_once(&data, &input, lines, &format!("round {round}, {resumes} kills (seed {seed})"));
        std::fs::remove_dir_all(&data).unwrap();
    }
    eprintln!("{kills} SIGKILLs in {round} rounds, each row stored once");
}

/// A kill between a ledger entry and the head that names it (`store::fault`'s `ledger.head`), at the
/// chain's first entry and a later one: the next run opens the store and stores every row once. At the
/// first entry this failed with "head file is missing" before the head was written ahead of the chain.
#[test]
fn a_kill_between_a_ledger_entry_and_its_head_and_the_same_ingest_again_store_every_row_once() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("payloads.ndjson");
    let lines = write_payloads(&input);
    for nth in [1, 3] {
        let data = work.path().join(format!("head-{nth}"));
        let killed =
            ingest(&data, &input).env(store::fault::FAULT_ENV, format!("ledger.head:{nth}:abort")).output().unwrap();
        assert!(!killed.status.success(), "entry {nth}: the ingest dies at the fault");
        let entries = std::fs::read_dir(data.join("_ledger")).unwrap().flatten().filter(|e| e.path().is_dir()).count();
        assert!(entries > 0, "entry {nth}: a chain was started");
        ingest_to_end(&data, &input);
        assert_exactly_once(
            &data,
            &input,
            lines,
            &format!("a kill before the head of entry {nth}, then the same ingest"),
        );
        let verify = coldtrail().arg("--data").arg(&data).arg("verify").output().unwrap();
        assert!(verify.status.success(), "entry {nth}: verify passes: {}", String::from_utf8_lossy(&verify.stdout));
    }
}

#[test]
fn a_write_that_fails_for_lack_of_space_and_the_same_ingest_again_store_every_row_once() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("payloads.ndjson");
    let lines = write_payloads(&input);
    // The n-th WAL frame's write fails with ENOSPC (`store::fault`): the first append, one in the middle,
    // one near the end.
    for nth in [1, 2, 3] {
        let data = work.path().join(format!("full-{nth}"));
        let failed =
            ingest(&data, &input).env(store::fault::FAULT_ENV, format!("wal.frame:{nth}:enospc")).output().unwrap();
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(!failed.status.success(), "frame {nth}: the ingest fails");
        assert!(stderr.contains("No space left on device"), "frame {nth}: a clear error: {stderr}");
        ingest_to_end(&data, &input);
        assert_exactly_once(&data, &input, lines, &format!("a failed write at frame {nth}, then the same ingest"));
    }
}

/// A small filesystem that really fills up, where this machine lets the test mount one (root): the ingest
/// stops with ENOSPC, the filesystem is grown, and the same ingest stores every row once.
#[test]
fn an_ingest_into_a_full_filesystem_then_again_after_it_is_grown_stores_every_row_once() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("payloads.ndjson");
    let lines = write_payloads(&input);
    let mount = work.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"]).arg(&mount).output();
    if !mounted.as_ref().is_ok_and(|output| output.status.success()) {
        eprintln!("no tmpfs mount here ({mounted:?}): the full disk is covered by the injected ENOSPC test only");
        return;
    }
    let data = mount.join("data");
    let run = || {
        let failed = ingest(&data, &input).output().unwrap();
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(!failed.status.success(), "8 MB do not hold the store");
        assert!(stderr.contains("No space left on device"), "a clear error: {stderr}");
        let grown = Command::new("mount").args(["-o", "remount,size=1g"]).arg(&mount).status().unwrap();
        assert!(grown.success());
        ingest_to_end(&data, &input);
        assert_exactly_once(&data, &input, lines, "a full filesystem, grown, then the same ingest");
    };
    let outcome = std::panic::catch_unwind(run);
    let _ = Command::new("umount").arg(&mount).status();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// One JSON document of `invocations` invocations' log lines, as `aws logs filter-log-events` writes a
/// page (`events`, then its paging keys), gzip'd or not. Returns the number of log lines.
fn write_document(path: &Path, invocations: usize, gzip: bool) -> usize {
    let file = std::fs::File::create(path).unwrap();
    let mut out: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(std::io::BufWriter::new(file), flate2::Compression::fast()))
    } else {
        Box::new(std::io::BufWriter::new(file))
    };
    out.write_all(b"{\"events\": [\n").unwrap();
    let start_ms = 1_795_996_800_000i64;
    for invocation in 0..invocations {
        let rid = format!("7d0c4e2a-1b3c-4d5e-8f90-{invocation:012x}");
        let at = start_ms + invocation as i64 * 40;
        let messages = [
            format!("START RequestId: {rid} Version: $LATEST\n"),
            format!("2026-12-01T00:00:00.000Z\t{rid}\tINFO\tprocessed order {invocation}\n"),
            format!("END RequestId: {rid}\n"),
            format!("REPORT RequestId: {rid}\tDuration: 12.50 ms\tBilled Duration: 13 ms\tMemory Size: 256 MB\tMax Memory Used: 81 MB\t\n"),
        ];
        for (k, message) in messages.into_iter().enumerate() {
            let event = serde_json::json!({
                "logStreamName": format!("2026/12/01/[$LATEST]{:032x}", invocation % 32),
                "timestamp": at + k as i64, "message": message, "ingestionTime": at + 900,
                "eventId": format!("{at}{invocation:012}{k}"),
            });
            let separator = if invocation == 0 && k == 0 { "" } else { ",\n" };
            write!(out, "{separator}    {event}").unwrap();
        }
    }
    out.write_all(b"\n], \"searchedLogStreams\": [], \"nextToken\": \"f/1\"}\n").unwrap();
    out.flush().unwrap();
    drop(out);
    invocations * 4
}

/// Issue 19: a JSON document larger than a chunk is stored in pieces, each append with the offset of the
/// next element; a kill between two appends, then the same ingest, resumes there: every row once, plain
/// and gzip'd. The document's log group comes from `--log-group`.
#[test]
fn a_document_read_in_pieces_and_killed_between_two_appends_resumes_to_store_every_row_once() {
    let work = tempfile::tempdir().unwrap();
    let invocations = 40_000;
    for name in ["page.json", "page.json.gz"] {
        let input = work.path().join(name);
        let lines = write_document(&input, invocations, name.ends_with(".gz"));
        for nth in [2, 3] {
            let data = work.path().join(format!("{name}-{nth}"));
            let killed = ingest(&data, &input)
                .arg("--log-group")
                .arg("/aws/lambda/orders")
                .env(store::fault::FAULT_ENV, format!("wal.frame:{nth}:abort"))
                .output()
                .unwrap();
            assert!(!killed.status.success(), "{name}, frame {nth}: the ingest dies at the fault");
            let (stored, _, _, _) = counts(&data);
            assert!(stored > 0 && (stored as usize) < invocations, "{name}, frame {nth}: a part was stored: {stored}");
            let resumed = ingest(&data, &input).arg("--log-group").arg("/aws/lambda/orders").output().unwrap();
            assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
            assert_each_once(
                &data,
                &input,
                invocations,
                lines,
                &format!("{name}: a kill before frame {nth}, then the same ingest"),
            );
        }
    }
}

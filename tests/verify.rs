//! Tamper tests: each kind of tampering with a store is reported as exactly that by `coldtrail verify`,
//! with a non-zero exit; an untouched store verifies clean.

use std::path::{Path, PathBuf};
use std::process::Command;

use store::fixtures::batch_with_ids;
use store::{Store, StoreConfig, Table};

const T0: i64 = 1_767_225_600_000_000;

/// A store with three ledger entries, one segment each, in three hours.
fn make_store(dir: &Path) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(StoreConfig::new(dir)).await.unwrap();
        for hour in 0..3u64 {
            let ids: Vec<u64> = (hour * 10..hour * 10 + 10).collect();
            let batch = batch_with_ids(Table::Logs, &ids, |id| T0 + (id / 10) as i64 * 3_600_000_000 + id as i64);
            store.append_batch(Table::Logs, batch).unwrap();
            store.flush_all().await.unwrap();
        }
        let mut paths: Vec<String> =
            store.snapshot(Table::Logs, store::TimeRange::ALL).segments.into_iter().map(|s| s.path).collect();
        paths.sort();
        paths
    })
}

struct Verified {
    code: i32,
    kinds: Vec<String>,
    messages: Vec<String>,
}

fn verify(dir: &Path) -> Verified {
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("verify")
        .arg("--json")
        .arg("--data")
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("verify printed no JSON ({e}): {stdout} {}", String::from_utf8_lossy(&output.stderr))
    });
    let findings = report["findings"].as_array().unwrap();
    Verified {
        code: output.status.code().unwrap(),
        kinds: findings.iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect(),
        messages: findings.iter().map(|f| f["message"].as_str().unwrap().to_string()).collect(),
    }
}

fn node_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("node.id")).unwrap().trim().to_string()
}

fn entry_file(dir: &Path, seq: u64) -> PathBuf {
    dir.join("_ledger").join(node_of(dir)).join(format!("{seq:012}.entry"))
}

fn assert_only(verified: &Verified, kind: &str) {
    assert_eq!(verified.code, 1, "{:?}", verified.messages);
    assert_eq!(verified.kinds, vec![kind.to_string()], "{:?}", verified.messages);
}

#[test]
fn an_untouched_store_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    let verified = verify(dir.path());
    assert_eq!(verified.code, 0, "{:?}", verified.messages);
    assert!(verified.kinds.is_empty());
    let human =
        Command::new(env!("CARGO_BIN_EXE_coldtrail")).arg("verify").arg("--data").arg(dir.path()).output().unwrap();
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.contains("checked 3 ledger entries of 1 node(s) and 3 segments"), "{text}");
    assert!(text.trim_end().ends_with("intact"), "{text}");
}

#[test]
fn one_flipped_byte_in_a_segment_is_reported_as_a_modified_segment() {
    let dir = tempfile::tempdir().unwrap();
    let segments = make_store(dir.path());
    let path = dir.path().join(&segments[1]);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let verified = verify(dir.path());
    assert_only(&verified, "segment_modified");
    assert!(verified.messages[0].contains(&segments[1]), "{:?}", verified.messages);
}

#[test]
fn a_deleted_segment_is_reported_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    let segments = make_store(dir.path());
    std::fs::remove_file(dir.path().join(&segments[0])).unwrap();
    let verified = verify(dir.path());
    assert_only(&verified, "segment_missing");
    assert!(verified.messages[0].contains(&segments[0]));
}

#[test]
fn a_foreign_segment_is_reported_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let segments = make_store(dir.path());
    let foreign = Path::new(&segments[2]).with_file_name("intruder-000000000001.parquet");
    std::fs::copy(dir.path().join(&segments[2]), dir.path().join(&foreign)).unwrap();
    let verified = verify(dir.path());
    assert_only(&verified, "unknown_segment");
    assert!(verified.messages[0].contains("intruder-000000000001.parquet"));
}

#[test]
fn a_deleted_ledger_entry_is_reported_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    std::fs::remove_file(entry_file(dir.path(), 2)).unwrap();
    let verified = verify(dir.path());
    assert_only(&verified, "ledger_entry_missing");
    assert!(verified.messages[0].contains("entry 2 was deleted"));
}

#[test]
fn deleting_the_last_ledger_entries_is_reported_as_truncation() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    std::fs::remove_file(entry_file(dir.path(), 3)).unwrap();
    std::fs::remove_file(entry_file(dir.path(), 2)).unwrap();
    let verified = verify(dir.path());
    assert_only(&verified, "ledger_truncated");
    assert!(verified.messages[0].contains("signed head is entry 3, the chain ends at 1"));
}

#[test]
fn swapped_ledger_entries_are_reported_as_reordered() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    let (one, two) = (entry_file(dir.path(), 1), entry_file(dir.path(), 2));
    let (bytes_one, bytes_two) = (std::fs::read(&one).unwrap(), std::fs::read(&two).unwrap());
    std::fs::write(&one, bytes_two).unwrap();
    std::fs::write(&two, bytes_one).unwrap();
    let verified = verify(dir.path());
    assert_eq!(verified.code, 1);
    assert_eq!(verified.kinds, vec!["ledger_reordered", "ledger_reordered"], "{:?}", verified.messages);
}

#[test]
fn an_entry_forged_without_the_node_key_is_reported_as_a_bad_signature() {
    // The forger hides a modified segment: rewrites the entry with the new hash, recomputes the entry
    // hash so the content matches, links it correctly, and signs with a key of their own.
    let dir = tempfile::tempdir().unwrap();
    let segments = make_store(dir.path());
    let segment = dir.path().join(&segments[2]);
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let file = entry_file(dir.path(), 3);
    let text = std::fs::read_to_string(&file).unwrap();
    let json = text.lines().next().unwrap();
    let mut entry: serde_json::Value = serde_json::from_str(json).unwrap();
    entry["segment"]["sha256"] = serde_json::Value::String(store::ledger::sha256_hex(&bytes));
    let forged_json = serde_json::to_string(&entry).unwrap();
    let hash = store::ledger::sha256_hex(forged_json.as_bytes());
    let forger = ed25519_dalek_key();
    let signature = store::ledger::hex(&forger(&store::ledger::unhex(&hash).unwrap()));
    std::fs::write(&file, format!("{forged_json}\n{hash} {signature}\n")).unwrap();
    let verified = verify(dir.path());
    assert_eq!(verified.code, 1);
    assert!(verified.kinds.contains(&"ledger_bad_signature".to_string()), "{:?}", verified.messages);
    assert!(
        verified.kinds.iter().all(|k| k == "ledger_bad_signature" || k == "ledger_head_invalid"),
        "{:?}",
        verified.messages
    );
}

/// A signing function with a key that is not the node's: what a forger has.
fn ed25519_dalek_key() -> impl Fn(&[u8]) -> Vec<u8> {
    use store::ledger::testing_sign;
    |message| testing_sign(&[42u8; 32], message)
}

#[test]
fn an_altered_entry_is_reported_as_altered() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    let file = entry_file(dir.path(), 1);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("\"rows\":10", "\"rows\":11", 1)).unwrap();
    let verified = verify(dir.path());
    assert_only(&verified, "ledger_entry_altered");
}

#[test]
fn a_missing_data_directory_is_an_error_not_a_clean_report() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("verify")
        .arg("--data")
        .arg(dir.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no data directory"));
}

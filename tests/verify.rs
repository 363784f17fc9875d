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
    verify_with(dir, &[])
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
    assert!(text.contains("checked 3 ledger entries of 1 node(s), 3 segments"), "{text}");
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

// Issue 18, item 3: what `verify` proves with a trust root outside the data directory. Each attack below
// rewrites the data directory consistently; `coldtrail ledger --export` kept elsewhere (here, another
// temporary directory) is what catches it. SECURITY.md states the result without an anchor, which each
// test checks too.

/// Adds `hours` of rows to the store in `dir`, one segment and one ledger entry each.
fn grow(dir: &Path, hours: std::ops::Range<u64>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(StoreConfig::new(dir)).await.unwrap();
        for hour in hours {
            let ids: Vec<u64> = (hour * 10..hour * 10 + 10).collect();
            let batch = batch_with_ids(Table::Logs, &ids, |id| T0 + (id / 10) as i64 * 3_600_000_000 + id as i64);
            store.append_batch(Table::Logs, batch).unwrap();
            store.flush_all().await.unwrap();
        }
    });
}

/// `coldtrail ledger --export`, written to a file outside the data directory.
fn export(dir: &Path, outside: &Path) -> PathBuf {
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .arg("--data")
        .arg(dir)
        .args(["ledger", "--export"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let path = outside.join("head.json");
    std::fs::write(&path, &output.stdout).unwrap();
    path
}

fn verify_with(dir: &Path, args: &[&str]) -> Verified {
    let output = Command::new(env!("CARGO_BIN_EXE_coldtrail"))
        .args(["verify", "--json"])
        .args(args)
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

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn a_wiped_store_is_a_finding_and_a_wholly_wiped_one_is_caught_by_the_anchor() {
    let (dir, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_store(dir.path());
    let anchor = export(dir.path(), outside.path());
    let anchor = anchor.to_str().unwrap();
    std::fs::remove_dir_all(dir.path().join("_ledger")).unwrap();
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    for segment in segment_files(dir.path()) {
        std::fs::remove_file(segment).unwrap();
    }
    // The data directory still names its node: a node without a ledger is a finding by itself.
    let verified = verify_with(dir.path(), &[]);
    assert_only(&verified, "ledger_missing");
    // The wiper removes the node's identity too: without an anchor, an empty store (SECURITY.md)...
    for file in ["node.id", "node.pub", "node.key"] {
        let _ = std::fs::remove_file(dir.path().join(file));
    }
    let verified = verify_with(dir.path(), &[]);
    assert_eq!((verified.code, verified.kinds.len()), (0, 0), "{:?}", verified.messages);
    // ...with one, the wipe.
    let verified = verify_with(dir.path(), &["--expect-head", anchor]);
    assert_eq!(verified.code, 1);
    assert_eq!(verified.kinds, ["ledger_missing", "anchor_not_held"], "{:?}", verified.messages);
}

#[test]
fn a_chain_re_signed_with_a_new_key_is_caught_by_the_anchor_and_the_trusted_key() {
    let (dir, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_store(dir.path());
    let anchor = export(dir.path(), outside.path());
    let anchor = anchor.to_str().unwrap();
    // The forger removes rows from the segment of entry 2 (here: changes its bytes), then re-hashes and
    // re-signs the whole chain and the head with a key of their own, and replaces every copy of the
    // public key.
    let text = std::fs::read_to_string(entry_file(dir.path(), 2)).unwrap();
    let second: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let segment = dir.path().join(second["segment"]["path"].as_str().unwrap());
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    let secret = [42u8; 32];
    let sign =
        |hash: &str| store::ledger::hex(&store::ledger::testing_sign(&secret, &store::ledger::unhex(hash).unwrap()));
    let mut prev = store::ledger::GENESIS_HASH.to_string();
    for seq in 1..=3 {
        let file = entry_file(dir.path(), seq);
        let text = std::fs::read_to_string(&file).unwrap();
        let mut entry: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        if seq == 2 {
            entry["segment"]["sha256"] = serde_json::Value::String(store::ledger::sha256_hex(&bytes));
        }
        entry["prev_hash"] = serde_json::Value::String(prev.clone());
        let json = serde_json::to_string(&entry).unwrap();
        let hash = store::ledger::sha256_hex(json.as_bytes());
        std::fs::write(&file, format!("{json}\n{hash} {}\n", sign(&hash))).unwrap();
        prev = hash;
    }
    let node = node_of(dir.path());
    let head_file = dir.path().join("_ledger").join(format!("{node}.head"));
    let head_text = std::fs::read_to_string(&head_file).unwrap();
    let mut head: serde_json::Value = serde_json::from_str(head_text.lines().next().unwrap()).unwrap();
    head["hash"] = serde_json::Value::String(prev);
    let json = serde_json::to_string(&head).unwrap();
    std::fs::write(&head_file, format!("{json}\n{}\n", sign(&store::ledger::sha256_hex(json.as_bytes())))).unwrap();
    let public = format!("{}\n", store::ledger::testing_public_key(&secret));
    std::fs::write(dir.path().join("_ledger").join(format!("{node}.pub")), &public).unwrap();
    std::fs::write(dir.path().join("node.pub"), &public).unwrap();

    // Without a trust root outside the directory the forgery is consistent (SECURITY.md).
    let verified = verify_with(dir.path(), &[]);
    assert_eq!((verified.code, verified.kinds.len()), (0, 0), "{:?}", verified.messages);
    let verified = verify_with(dir.path(), &["--expect-head", anchor]);
    assert_only(&verified, "anchor_not_held");
    assert!(verified.messages[0].contains("rewritten"), "{:?}", verified.messages);
    let verified = verify_with(dir.path(), &["--trusted-key", anchor]);
    assert_eq!(verified.code, 1);
    assert!(verified.kinds.contains(&"public_key_invalid".to_string()), "{:?}", verified.messages);
    assert!(verified.kinds.contains(&"ledger_bad_signature".to_string()), "{:?}", verified.messages);
}

#[test]
fn a_rolled_back_chain_is_caught_by_the_anchor() {
    let (dir, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    grow(dir.path(), 0..2);
    let node = node_of(dir.path());
    let head_file = dir.path().join("_ledger").join(format!("{node}.head"));
    let older_head = std::fs::read(&head_file).unwrap();
    grow(dir.path(), 2..3);
    let anchor = export(dir.path(), outside.path());
    let anchor = anchor.to_str().unwrap();
    // Back to the older head: the newest entry and its segment deleted, the old head file put back.
    let text = std::fs::read_to_string(entry_file(dir.path(), 3)).unwrap();
    let entry: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    std::fs::remove_file(dir.path().join(entry["segment"]["path"].as_str().unwrap())).unwrap();
    std::fs::remove_file(entry_file(dir.path(), 3)).unwrap();
    std::fs::write(&head_file, older_head).unwrap();

    let verified = verify_with(dir.path(), &[]);
    assert_eq!(
        (verified.code, verified.kinds.len()),
        (0, 0),
        "without an anchor (SECURITY.md): {:?}",
        verified.messages
    );
    let verified = verify_with(dir.path(), &["--expect-head", anchor]);
    assert_only(&verified, "anchor_not_held");
    assert!(verified.messages[0].contains("ends at entry 2"), "{:?}", verified.messages);
    // The same anchor given as NODE:SEQ:HASH.
    let export: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(anchor).unwrap()).unwrap();
    let spec = format!("{}:{}:{}", export["node"].as_str().unwrap(), export["seq"], export["hash"].as_str().unwrap());
    assert_only(&verify_with(dir.path(), &["--expect-head", &spec]), "anchor_not_held");
}

/// Appends rows that stay in the WAL (not sealed), in two frames.
fn append_unsealed(dir: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(StoreConfig::new(dir)).await.unwrap();
        for ids in [[100u64, 101], [102, 103]] {
            store.append_batch(Table::Logs, batch_with_ids(Table::Logs, &ids, |id| T0 + id as i64)).unwrap();
        }
    });
}

/// Re-signs every frame of the data directory's WAL with `secret`, replacing the first frame's rows.
fn forge_wal(dir: &Path, secret: [u8; 32]) {
    let node_key = store::ledger::parse_public_key(&std::fs::read_to_string(dir.join("node.pub")).unwrap()).unwrap();
    let forger = ed25519_dalek::SigningKey::from_bytes(&secret);
    for entry in std::fs::read_dir(dir.join("wal")).unwrap() {
        let path = entry.unwrap().path();
        let decoded = store::wal::decode_frames(&std::fs::read(&path).unwrap(), &node_key);
        let mut bytes = Vec::new();
        for (idx, frame) in decoded.frames.iter().enumerate() {
            let batches = if idx == 0 {
                vec![(Table::Logs, batch_with_ids(Table::Logs, &[100], |id| T0 + id as i64))]
            } else {
                frame.batches.clone()
            };
            bytes.extend(store::wal::encode_frame(frame.seq, &batches, &frame.positions, &forger).unwrap());
        }
        std::fs::write(&path, bytes).unwrap();
    }
}

#[test]
fn rows_edited_in_the_wal_are_reported_and_a_re_keyed_wal_is_caught_by_the_trusted_key() {
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    append_unsealed(dir.path());
    let verified = verify(dir.path());
    assert_eq!((verified.code, verified.kinds.len()), (0, 0), "{:?}", verified.messages);

    // An attacker without the node key rewrites the rows waiting in the WAL.
    forge_wal(dir.path(), [9; 32]);
    let verified = verify(dir.path());
    assert_only(&verified, "wal_tampered");
    assert!(verified.messages[0].contains("not signed by the node key"), "{:?}", verified.messages);

    // An attacker who also replaces the node's key pair and re-signs the frames: the key kept outside the
    // data directory still catches the rewritten rows.
    let (dir, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_store(dir.path());
    append_unsealed(dir.path());
    let anchor = export(dir.path(), outside.path());
    let anchor = anchor.to_str().unwrap();
    let secret = [42u8; 32];
    forge_wal(dir.path(), secret);
    std::fs::write(dir.path().join("node.pub"), format!("{}\n", store::ledger::testing_public_key(&secret))).unwrap();
    let verified = verify_with(dir.path(), &["--trusted-key", anchor]);
    assert!(verified.kinds.contains(&"wal_tampered".to_string()), "{:?}", verified.messages);
}

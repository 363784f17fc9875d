//! The tamper-evident ledger: a signed hash chain with one entry per segment change.
//!
//! Each node appends to its own chain under `_ledger/<node>/<seq>.entry`; an entry file is the entry as
//! JSON on the first line and `<sha256 of that line> <ed25519 signature of the hash>` on the second.
//! `_ledger/<node>.head` holds the signed chain head, `_ledger/<node>.pub` the node's public key.
//! Like CloudTrail's digest files, the chain proves what was written and in which order: changing,
//! removing, adding or reordering anything afterwards is detected by `verify`.

use std::path::Path as FsPath;

use bytes::Bytes;
pub use ed25519_dalek::VerifyingKey;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::location::Location;
use crate::time::{format_micros, now_micros};

pub const LEDGER_DIR: &str = "_ledger";
pub const LEDGER_VERSION: u32 = 1;
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerOp {
    /// A new segment was sealed.
    Add,
    /// `segment` replaces the `removed` segments, which hold the same rows.
    Compact,
    /// The `removed` segments were deleted because they are older than the table's retention.
    Retention,
}

impl LedgerOp {
    pub fn name(self) -> &'static str {
        match self {
            LedgerOp::Add => "add",
            LedgerOp::Compact => "compact",
            LedgerOp::Retention => "retention",
        }
    }
}

/// A sealed segment as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentRecord {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    pub rows: u64,
    pub min_ts_micros: i64,
    pub max_ts_micros: i64,
    /// The highest WAL sequence number whose rows of this partition are in the segment (or in the
    /// segments it replaces); WAL replay skips those rows.
    pub wal_seq_hi: u64,
}

/// A segment an entry deletes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemovedSegment {
    pub path: String,
    pub sha256: String,
    pub rows: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    pub version: u32,
    pub node: String,
    pub seq: u64,
    pub ts: String,
    pub prev_hash: String,
    pub op: LedgerOp,
    pub table: String,
    pub partition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<RemovedSegment>,
}

/// An entry with the exact bytes that were hashed and signed.
#[derive(Clone, Debug)]
pub struct SignedEntry {
    pub entry: LedgerEntry,
    pub json: String,
    pub hash: String,
    pub signature: String,
}

/// The signed head of one node's chain, for anchoring outside the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerHead {
    pub node: String,
    pub seq: u64,
    pub hash: String,
    pub ts: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[(byte >> 4) as usize] as char);
        out.push(DIGITS[(byte & 0xf) as usize] as char);
    }
    out
}

pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

pub fn entry_path(node: &str, seq: u64) -> String {
    format!("{LEDGER_DIR}/{node}/{seq:012}.entry")
}

pub fn head_path(node: &str) -> String {
    format!("{LEDGER_DIR}/{node}.head")
}

pub fn public_key_path(node: &str) -> String {
    format!("{LEDGER_DIR}/{node}.pub")
}

/// The sequence number in an entry file's name, if the path is one.
pub fn parse_entry_path(path: &str) -> Option<(String, u64)> {
    let rest = path.strip_prefix(LEDGER_DIR)?.strip_prefix('/')?;
    let (node, file) = rest.split_once('/')?;
    let seq = file.strip_suffix(".entry")?.parse().ok()?;
    Some((node.to_string(), seq))
}

fn sign_text(key: &SigningKey, text: &str) -> (String, String) {
    let hash = Sha256::digest(text.as_bytes());
    let signature = key.sign(&hash);
    (hex(&hash), hex(&signature.to_bytes()))
}

/// Whether `signature_hex` is `key`'s signature of the hash `hash_hex`.
pub fn signature_valid(key: &VerifyingKey, hash_hex: &str, signature_hex: &str) -> bool {
    let (Some(hash), Some(signature)) = (unhex(hash_hex), unhex(signature_hex)) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(&signature) else {
        return false;
    };
    key.verify(&hash, &signature).is_ok()
}

/// Parses an entry file. The error says what is wrong with it.
pub fn parse_entry_file(bytes: &[u8]) -> std::result::Result<SignedEntry, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "entry file is not utf-8".to_string())?;
    let mut lines = text.lines();
    let json = lines.next().ok_or("empty entry file")?;
    let seal = lines.next().ok_or("entry file without hash and signature")?;
    if lines.next().is_some() {
        return Err("entry file has trailing lines".into());
    }
    let (hash, signature) = seal.split_once(' ').ok_or("malformed hash and signature line")?;
    let entry: LedgerEntry = serde_json::from_str(json).map_err(|e| format!("malformed entry: {e}"))?;
    Ok(SignedEntry { entry, json: json.to_string(), hash: hash.to_string(), signature: signature.to_string() })
}

/// Parses a head file into the head and whether `key` signed it.
pub fn parse_head_file(bytes: &[u8], key: &VerifyingKey) -> std::result::Result<(LedgerHead, bool), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "head file is not utf-8".to_string())?;
    let (json, signature) = text.trim_end().split_once('\n').ok_or("head file without signature")?;
    let head: LedgerHead = serde_json::from_str(json).map_err(|e| format!("malformed head: {e}"))?;
    let valid = signature_valid(key, &sha256_hex(json.as_bytes()), signature.trim());
    Ok((head, valid))
}

/// Reads all entry files of one node, keyed by the sequence number in their names.
pub async fn read_entry_files(location: &Location, node: &str) -> Result<Vec<(u64, String, Bytes)>> {
    let mut files = Vec::new();
    for meta in location.list(&format!("{LEDGER_DIR}/{node}")).await? {
        let path = meta.location.to_string();
        if let Some((entry_node, seq)) = parse_entry_path(&path) {
            if entry_node == node {
                let bytes = location.get(&path).await?;
                files.push((seq, path, bytes));
            }
        }
    }
    files.sort_by_key(|(seq, _, _)| *seq);
    Ok(files)
}

/// The nodes that have a ledger in this location.
pub async fn list_nodes(location: &Location) -> Result<Vec<String>> {
    let mut nodes: Vec<String> = location
        .list(LEDGER_DIR)
        .await?
        .iter()
        .filter_map(|meta| {
            let path = meta.location.to_string();
            let rest = path.strip_prefix(LEDGER_DIR)?.strip_prefix('/')?;
            if let Some((node, _)) = rest.split_once('/') {
                return Some(node.to_string());
            }
            rest.strip_suffix(".pub").or_else(|| rest.strip_suffix(".head")).map(str::to_string)
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    Ok(nodes)
}

/// Appends signed entries to this node's chain. One writer per node; the store serialises calls.
pub struct LedgerWriter {
    location: Location,
    node: String,
    key: SigningKey,
    last_seq: u64,
    last_hash: String,
}

impl LedgerWriter {
    /// A writer that continues the chain after `last` (or starts it).
    pub fn new(location: Location, node: String, key: SigningKey, last: Option<&SignedEntry>) -> Self {
        let (last_seq, last_hash) = last.map_or((0, GENESIS_HASH.to_string()), |e| (e.entry.seq, e.hash.clone()));
        LedgerWriter { location, node, key, last_seq, last_hash }
    }

    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    pub fn head(&self) -> LedgerHead {
        LedgerHead {
            node: self.node.clone(),
            seq: self.last_seq,
            hash: self.last_hash.clone(),
            ts: format_micros(now_micros()),
        }
    }

    /// Writes the entry durably, then the new head. Returns the signed entry.
    pub async fn append(
        &mut self,
        op: LedgerOp,
        table: &str,
        partition: &str,
        segment: Option<SegmentRecord>,
        removed: Vec<RemovedSegment>,
    ) -> Result<SignedEntry> {
        let entry = LedgerEntry {
            version: LEDGER_VERSION,
            node: self.node.clone(),
            seq: self.last_seq + 1,
            ts: format_micros(now_micros()),
            prev_hash: self.last_hash.clone(),
            op,
            table: table.to_string(),
            partition: partition.to_string(),
            segment,
            removed,
        };
        let json =
            serde_json::to_string(&entry).map_err(|e| StoreError::Internal(format!("ledger entry encode: {e}")))?;
        let (hash, signature) = sign_text(&self.key, &json);
        let file = format!("{json}\n{hash} {signature}\n");
        if self.last_seq == 0 {
            // The chain's head exists before its first entry: a crash between an entry and its head
            // leaves the head one entry behind (which `verify` accepts), never missing (which it must
            // not accept: deleting the head would hide a truncation).
            self.write_head().await?;
        }
        self.location.put(&entry_path(&self.node, entry.seq), Bytes::from(file)).await?;
        crate::fault::hit("ledger.head").map_err(|e| StoreError::Internal(format!("ledger head: {e}")))?;
        self.last_seq = entry.seq;
        self.last_hash = hash.clone();
        self.write_head().await?;
        Ok(SignedEntry { entry, json, hash, signature })
    }

    /// Rewrites the signed head file from the writer's state.
    pub async fn write_head(&self) -> Result<()> {
        let json = serde_json::to_string(&self.head())
            .map_err(|e| StoreError::Internal(format!("ledger head encode: {e}")))?;
        let (_, signature) = sign_text(&self.key, &json);
        self.location.put(&head_path(&self.node), Bytes::from(format!("{json}\n{signature}\n"))).await
    }

    /// Publishes the node's public key next to its chain.
    pub async fn publish_public_key(&self) -> Result<()> {
        let public = hex(self.key.verifying_key().as_bytes());
        self.location.put(&public_key_path(&self.node), Bytes::from(format!("{public}\n"))).await
    }
}

/// Signs `message` with the key whose secret is `secret`: for tests that play a forger holding a key
/// that is not the node's.
pub fn testing_sign(secret: &[u8; 32], message: &[u8]) -> Vec<u8> {
    SigningKey::from_bytes(secret).sign(message).to_bytes().to_vec()
}

/// The hex public key of the key whose secret is `secret` (the forger's of `testing_sign`).
pub fn testing_public_key(secret: &[u8; 32]) -> String {
    hex(SigningKey::from_bytes(secret).verifying_key().as_bytes())
}

/// Parses a hex public key file.
pub fn parse_public_key(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = unhex(text.trim())?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Loads the node's signing key from `path` or creates one (owner-only permissions).
pub fn load_or_create_key(path: &FsPath) -> Result<SigningKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes: [u8; 32] = unhex(text.trim())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StoreError::BadKey { path: path.into(), reason: "expected 64 hex digits".into() })?;
            Ok(SigningKey::from_bytes(&bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| StoreError::Internal(format!("no randomness for the node key: {e}")))?;
            write_private(path, &format!("{}\n", hex(&secret)))?;
            Ok(SigningKey::from_bytes(&secret))
        }
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Writes a file readable by its owner only, atomically.
pub fn write_private(path: &FsPath, text: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| StoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
        assert_eq!(unhex("000fff"), Some(vec![0, 15, 255]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn entry_paths_parse_back() {
        assert_eq!(parse_entry_path(&entry_path("n1", 42)), Some(("n1".into(), 42)));
        assert_eq!(parse_entry_path("_ledger/n1.head"), None);
        assert_eq!(parse_entry_path("_ledger/n1/x.entry"), None);
    }

    #[test]
    fn a_signature_only_verifies_with_its_key_and_hash() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let (hash, signature) = sign_text(&key, "{\"a\":1}");
        assert!(signature_valid(&key.verifying_key(), &hash, &signature));
        assert!(!signature_valid(&other.verifying_key(), &hash, &signature));
        assert!(!signature_valid(&key.verifying_key(), &sha256_hex(b"x"), &signature));
        assert!(!signature_valid(&key.verifying_key(), &hash, "zz"));
    }
}

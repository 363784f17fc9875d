//! Recomputes the ledger chains and segment hashes of a location and reports every discrepancy.

use std::collections::{BTreeMap, HashMap};

use ed25519_dalek::VerifyingKey;

use crate::error::Result;
use crate::ledger::{
    head_path, list_nodes, parse_entry_file, parse_head_file, parse_public_key, public_key_path, read_entry_files,
    sha256_hex, signature_valid, LedgerOp, SignedEntry, GENESIS_HASH,
};
use crate::location::Location;
use crate::segment_path::parse_segment_path;

/// One thing found wrong. Each names exactly what was tampered with or lost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntegrityProblem {
    /// A segment's bytes differ from the hash its ledger entry recorded.
    SegmentModified { path: String, expected_sha256: String, actual_sha256: String },
    /// A live segment recorded in the ledger is gone.
    SegmentMissing { path: String, added_by_seq: u64 },
    /// A segment file that no ledger entry added.
    UnknownSegment { path: String },
    /// A segment that the ledger removed (retention, compaction) is still there.
    RemovedSegmentPresent { path: String, removed_by_seq: u64 },
    /// An entry in the middle of a chain is missing.
    LedgerEntryMissing { node: String, seq: u64 },
    /// The entry file for one position holds the entry of another.
    LedgerReordered { node: String, file_seq: u64, entry_seq: u64 },
    /// The chain ends before its signed head.
    LedgerTruncated { node: String, head_seq: u64, last_seq: u64 },
    /// An entry's content does not hash to its recorded hash.
    LedgerEntryAltered { node: String, seq: u64 },
    /// An entry's signature is not the node key's.
    LedgerBadSignature { node: String, seq: u64 },
    /// An entry does not link to its predecessor.
    LedgerChainBroken { node: String, seq: u64 },
    /// An entry file that cannot be parsed.
    LedgerEntryUnreadable { node: String, seq: u64, reason: String },
    /// The head file is missing, unreadable, badly signed or names another hash.
    LedgerHeadInvalid { node: String, reason: String },
    /// The node's public key is missing or is not the key this data directory holds.
    PublicKeyInvalid { node: String, reason: String },
    /// A node that must have a ledger here (this data directory's, or an anchored one) has none: no
    /// public key, no entry, no head.
    LedgerMissing { node: String },
    /// The chain does not hold a head anchored outside the store (`Anchor`).
    AnchorNotHeld { node: String, seq: u64, reason: String },
    /// Rows not sealed yet were edited in the WAL: a frame the node key did not sign, an unsigned frame,
    /// or frames removed from the middle of a file.
    WalTampered { file: String, offset: u64, reason: String },
    /// A WAL frame that is damaged where no crash can leave it (before the newest file's end).
    WalCorrupt { file: String, offset: u64, reason: String },
}

/// A ledger head kept outside the data directory (`coldtrail ledger --export`, the signed heads published
/// to a webhook or a WORM bucket): the node's chain must still hold entry `seq` with `hash`. An attacker
/// who can rewrite the data directory cannot rewrite this copy, so a wiped, rolled back or re-signed chain
/// no longer holds it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    pub node: String,
    pub seq: u64,
    pub hash: String,
}

impl IntegrityProblem {
    /// A short stable name for the kind of problem, for scripts and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            IntegrityProblem::SegmentModified { .. } => "segment_modified",
            IntegrityProblem::SegmentMissing { .. } => "segment_missing",
            IntegrityProblem::UnknownSegment { .. } => "unknown_segment",
            IntegrityProblem::RemovedSegmentPresent { .. } => "removed_segment_present",
            IntegrityProblem::LedgerEntryMissing { .. } => "ledger_entry_missing",
            IntegrityProblem::LedgerReordered { .. } => "ledger_reordered",
            IntegrityProblem::LedgerTruncated { .. } => "ledger_truncated",
            IntegrityProblem::LedgerEntryAltered { .. } => "ledger_entry_altered",
            IntegrityProblem::LedgerBadSignature { .. } => "ledger_bad_signature",
            IntegrityProblem::LedgerChainBroken { .. } => "ledger_chain_broken",
            IntegrityProblem::LedgerEntryUnreadable { .. } => "ledger_entry_unreadable",
            IntegrityProblem::LedgerHeadInvalid { .. } => "ledger_head_invalid",
            IntegrityProblem::PublicKeyInvalid { .. } => "public_key_invalid",
            IntegrityProblem::LedgerMissing { .. } => "ledger_missing",
            IntegrityProblem::AnchorNotHeld { .. } => "anchor_not_held",
            IntegrityProblem::WalTampered { .. } => "wal_tampered",
            IntegrityProblem::WalCorrupt { .. } => "wal_corrupt",
        }
    }
}

impl std::fmt::Display for IntegrityProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntegrityProblem::SegmentModified { path, expected_sha256, actual_sha256 } => {
                write!(
                    f,
                    "segment {path} was modified: sha256 is {actual_sha256}, the ledger recorded {expected_sha256}"
                )
            }
            IntegrityProblem::SegmentMissing { path, added_by_seq } => {
                write!(f, "segment {path} was deleted: ledger entry {added_by_seq} added it and none removed it")
            }
            IntegrityProblem::UnknownSegment { path } => {
                write!(f, "segment {path} is unknown: no ledger entry added it")
            }
            IntegrityProblem::RemovedSegmentPresent { path, removed_by_seq } => {
                write!(f, "segment {path} is still present although ledger entry {removed_by_seq} removed it")
            }
            IntegrityProblem::LedgerEntryMissing { node, seq } => {
                write!(f, "ledger of node {node}: entry {seq} was deleted")
            }
            IntegrityProblem::LedgerReordered { node, file_seq, entry_seq } => {
                write!(f, "ledger of node {node}: entries reordered, position {file_seq} holds entry {entry_seq}")
            }
            IntegrityProblem::LedgerTruncated { node, head_seq, last_seq } => {
                write!(f, "ledger of node {node} was truncated: the signed head is entry {head_seq}, the chain ends at {last_seq}")
            }
            IntegrityProblem::LedgerEntryAltered { node, seq } => {
                write!(f, "ledger of node {node}: entry {seq} was altered: its content does not match its hash")
            }
            IntegrityProblem::LedgerBadSignature { node, seq } => {
                write!(f, "ledger of node {node}: entry {seq} has a bad signature: forged without the node key")
            }
            IntegrityProblem::LedgerChainBroken { node, seq } => {
                write!(f, "ledger of node {node}: entry {seq} does not link to the entry before it")
            }
            IntegrityProblem::LedgerEntryUnreadable { node, seq, reason } => {
                write!(f, "ledger of node {node}: entry {seq} is unreadable: {reason}")
            }
            IntegrityProblem::LedgerHeadInvalid { node, reason } => {
                write!(f, "ledger head of node {node} is invalid: {reason}")
            }
            IntegrityProblem::PublicKeyInvalid { node, reason } => {
                write!(f, "public key of node {node} is invalid: {reason}")
            }
            IntegrityProblem::LedgerMissing { node } => {
                write!(f, "node {node} has no ledger in this location (no public key, entry or head): deleted")
            }
            IntegrityProblem::AnchorNotHeld { node, seq, reason } => {
                write!(f, "ledger of node {node} does not hold the anchored entry {seq}: {reason}")
            }
            IntegrityProblem::WalTampered { file, offset, reason } => {
                write!(f, "write-ahead log {file} was tampered with at byte {offset}: {reason}")
            }
            IntegrityProblem::WalCorrupt { file, offset, reason } => {
                write!(f, "write-ahead log {file} is damaged at byte {offset}: {reason}")
            }
        }
    }
}

/// The result of checking one node's chain.
#[derive(Debug, Default)]
pub struct ChainCheck {
    /// Every entry that could be parsed, in file order.
    pub entries: Vec<SignedEntry>,
    pub problems: Vec<IntegrityProblem>,
    /// The head file's sequence number, when it is valid.
    pub head_seq: Option<u64>,
}

/// Checks one node's chain: sequence, hashes, links, signatures and head.
pub fn check_chain(
    node: &str,
    files: &[(u64, String, bytes::Bytes)],
    head: Option<&[u8]>,
    key: &VerifyingKey,
) -> ChainCheck {
    let mut check = ChainCheck::default();
    let mut expected_seq = 1u64;
    // The hash the next entry must link to; `None` right after a gap or a bad entry, where the link
    // cannot be judged without reporting the same problem twice.
    let mut expected_prev: Option<String> = Some(GENESIS_HASH.to_string());
    for (file_seq, _, bytes) in files {
        while expected_seq < *file_seq {
            check.problems.push(IntegrityProblem::LedgerEntryMissing { node: node.into(), seq: expected_seq });
            expected_seq += 1;
            expected_prev = None;
        }
        expected_seq = file_seq + 1;
        let signed = match parse_entry_file(bytes) {
            Ok(signed) => signed,
            Err(reason) => {
                check.problems.push(IntegrityProblem::LedgerEntryUnreadable {
                    node: node.into(),
                    seq: *file_seq,
                    reason,
                });
                expected_prev = None;
                continue;
            }
        };
        let entry = &signed.entry;
        if entry.seq != *file_seq || entry.node != node {
            check.problems.push(IntegrityProblem::LedgerReordered {
                node: node.into(),
                file_seq: *file_seq,
                entry_seq: entry.seq,
            });
            expected_prev = None;
            check.entries.push(signed);
            continue;
        }
        if sha256_hex(signed.json.as_bytes()) != signed.hash {
            check.problems.push(IntegrityProblem::LedgerEntryAltered { node: node.into(), seq: entry.seq });
        } else if !signature_valid(key, &signed.hash, &signed.signature) {
            check.problems.push(IntegrityProblem::LedgerBadSignature { node: node.into(), seq: entry.seq });
        } else if expected_prev.as_ref().is_some_and(|prev| *prev != entry.prev_hash) {
            check.problems.push(IntegrityProblem::LedgerChainBroken { node: node.into(), seq: entry.seq });
        }
        expected_prev = Some(signed.hash.clone());
        check.entries.push(signed);
    }
    let last_seq = expected_seq - 1;
    match head {
        None if last_seq > 0 => check
            .problems
            .push(IntegrityProblem::LedgerHeadInvalid { node: node.into(), reason: "head file is missing".into() }),
        None => {}
        Some(bytes) => match parse_head_file(bytes, key) {
            Err(reason) => check.problems.push(IntegrityProblem::LedgerHeadInvalid { node: node.into(), reason }),
            Ok((_, false)) => check.problems.push(IntegrityProblem::LedgerHeadInvalid {
                node: node.into(),
                reason: "bad signature: forged without the node key".into(),
            }),
            Ok((head, true)) => {
                check.head_seq = Some(head.seq);
                if head.seq > last_seq {
                    check.problems.push(IntegrityProblem::LedgerTruncated {
                        node: node.into(),
                        head_seq: head.seq,
                        last_seq,
                    });
                } else if head.seq > 0 {
                    // The head may lag the chain by the entry being written when a crash came; it must still
                    // name an entry of this chain.
                    let named = check.entries.iter().find(|e| e.entry.seq == head.seq);
                    if named.is_some_and(|e| e.hash != head.hash) {
                        check.problems.push(IntegrityProblem::LedgerHeadInvalid {
                            node: node.into(),
                            reason: format!("head names entry {} with another hash", head.seq),
                        });
                    }
                }
            }
        },
    }
    check
}

/// A live or removed segment as the ledgers describe it.
#[derive(Debug, Clone)]
struct SegmentState {
    sha256: String,
    added_by_seq: u64,
    removed_by_seq: Option<u64>,
}

/// What `verify` checked and found.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub nodes: Vec<String>,
    pub entries_checked: u64,
    pub segments_checked: u64,
    pub bytes_checked: u64,
    /// Frames of the data directory's WAL whose signatures were checked (`verify_wal`).
    pub wal_frames_checked: u64,
    pub problems: Vec<IntegrityProblem>,
    /// Each node's verified chain head: (node, seq, hash).
    pub heads: Vec<(String, u64, String)>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// Checks the WAL of a data directory (`dir`, its `wal/`) against the node's key: every frame must be
    /// signed by it, the frames of a file numbered without gaps, and damage is only allowed at the newest
    /// file's end, where a crash leaves a torn write. A missing WAL directory is no finding: a node sealed
    /// everything and removed it, or never wrote.
    pub fn verify_wal(&mut self, dir: &std::path::Path, key: &VerifyingKey) -> Result<()> {
        let wal = dir.join("wal");
        let mut files = Vec::new();
        match std::fs::read_dir(&wal) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| crate::StoreError::io(&wal, e))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if let Some(first_seq) = name.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok()) {
                        files.push((first_seq, entry.path()));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(crate::StoreError::io(&wal, e)),
        }
        files.sort();
        let newest = files.last().map(|(seq, _)| *seq);
        for (first_seq, path) in files {
            let bytes = std::fs::read(&path).map_err(|e| crate::StoreError::io(&path, e))?;
            let decoded = crate::wal::decode_frames(&bytes, key);
            self.wal_frames_checked += decoded.frames.len() as u64;
            let file = path.display().to_string();
            if let Some((offset, reason)) = crate::wal::tampering(first_seq, &decoded) {
                self.problems.push(IntegrityProblem::WalTampered { file, offset, reason });
            } else if let (Some(reason), false) = (decoded.stopped, Some(first_seq) == newest) {
                let offset = decoded.valid_bytes as u64;
                self.problems.push(IntegrityProblem::WalCorrupt { file, offset, reason });
            }
        }
        Ok(())
    }
}

/// Verifies every chain and segment in `location`. `trusted_keys` overrides the published public key of
/// a node (the local node's own key from its data directory, or a key the operator kept elsewhere);
/// `anchors` are heads kept outside the store that the chains must still hold.
pub async fn verify_location(
    location: &Location,
    trusted_keys: &HashMap<String, VerifyingKey>,
    anchors: &[Anchor],
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut segments: BTreeMap<String, SegmentState> = BTreeMap::new();
    let mut nodes = list_nodes(location).await?;
    for node in trusted_keys.keys().chain(anchors.iter().map(|a| &a.node)) {
        if !nodes.contains(node) {
            nodes.push(node.clone());
        }
    }
    nodes.sort();
    nodes.dedup();
    for node in &nodes {
        let published = location.get_opt(&public_key_path(node)).await?;
        let published = published.as_ref().and_then(|b| std::str::from_utf8(b).ok()).and_then(parse_public_key);
        let anchored: Vec<&Anchor> = anchors.iter().filter(|a| a.node == *node).collect();
        if published.is_none() && location.get_opt(&head_path(node)).await?.is_none() {
            let files = read_entry_files(location, node).await?;
            if files.is_empty() {
                // Nothing of this node is left: a wiped ledger (its data directory or an anchor says the
                // node wrote here).
                report.problems.push(IntegrityProblem::LedgerMissing { node: node.clone() });
                for anchor in anchored {
                    report.problems.push(IntegrityProblem::AnchorNotHeld {
                        node: node.clone(),
                        seq: anchor.seq,
                        reason: "the node has no ledger at all".into(),
                    });
                }
                continue;
            }
        }
        let key = match (trusted_keys.get(node), published) {
            (Some(trusted), Some(published)) if *trusted != published => {
                report.problems.push(IntegrityProblem::PublicKeyInvalid {
                    node: node.clone(),
                    reason: "the published public key is not the key of this data directory".into(),
                });
                *trusted
            }
            (Some(trusted), _) => *trusted,
            (None, Some(published)) => published,
            (None, None) => {
                report.problems.push(IntegrityProblem::PublicKeyInvalid {
                    node: node.clone(),
                    reason: "no readable public key".into(),
                });
                continue;
            }
        };
        let files = read_entry_files(location, node).await?;
        let head = location.get_opt(&head_path(node)).await?;
        let check = check_chain(node, &files, head.as_deref(), &key);
        report.entries_checked += check.entries.len() as u64;
        report.problems.extend(check.problems);
        for anchor in anchored {
            let last = check.entries.iter().map(|e| e.entry.seq).max().unwrap_or(0);
            let reason = match check.entries.iter().find(|e| e.entry.seq == anchor.seq) {
                Some(entry) if entry.hash == anchor.hash => continue,
                Some(entry) => format!(
                    "entry {} hashes to {}, the anchor says {}: the chain was rewritten",
                    anchor.seq, entry.hash, anchor.hash
                ),
                None => format!("the chain ends at entry {last}: entries after it were removed (a rollback)"),
            };
            report.problems.push(IntegrityProblem::AnchorNotHeld { node: node.clone(), seq: anchor.seq, reason });
        }
        if let Some(last) = check.entries.last() {
            report.heads.push((node.clone(), last.entry.seq, last.hash.clone()));
        }
        let mut entries: Vec<&SignedEntry> = check.entries.iter().collect();
        entries.sort_by_key(|e| e.entry.seq);
        for signed in entries {
            let entry = &signed.entry;
            for removed in &entry.removed {
                segments
                    .entry(removed.path.clone())
                    .or_insert(SegmentState { sha256: removed.sha256.clone(), added_by_seq: 0, removed_by_seq: None })
                    .removed_by_seq = Some(entry.seq);
            }
            if let Some(segment) = &entry.segment {
                if matches!(entry.op, LedgerOp::Add | LedgerOp::Compact) {
                    segments.insert(
                        segment.path.clone(),
                        SegmentState { sha256: segment.sha256.clone(), added_by_seq: entry.seq, removed_by_seq: None },
                    );
                }
            }
        }
    }
    report.nodes = nodes;
    let mut present = BTreeMap::new();
    for meta in location.list("").await? {
        let path = meta.location.to_string();
        if parse_segment_path(&path).is_some() || path.ends_with(".parquet") {
            present.insert(path, meta.size);
        }
    }
    // A segment whose ledger entry was deleted or cut off is explained by that problem already.
    let explained = |path: &str| {
        let Some(name) = parse_segment_path(path) else { return false };
        report.problems.iter().any(|problem| match problem {
            IntegrityProblem::LedgerEntryMissing { node, seq } => *node == name.node && *seq == name.seq,
            IntegrityProblem::LedgerTruncated { node, head_seq, last_seq } => {
                *node == name.node && name.seq > *last_seq && name.seq <= *head_seq
            }
            _ => false,
        })
    };
    let mut segment_problems = Vec::new();
    for (path, size) in &present {
        match segments.get(path) {
            None if explained(path) => {}
            None => segment_problems.push(IntegrityProblem::UnknownSegment { path: path.clone() }),
            Some(SegmentState { removed_by_seq: Some(seq), .. }) => segment_problems
                .push(IntegrityProblem::RemovedSegmentPresent { path: path.clone(), removed_by_seq: *seq }),
            Some(state) => {
                let bytes = location.get(path).await?;
                report.segments_checked += 1;
                report.bytes_checked += size;
                let actual = sha256_hex(&bytes);
                if actual != state.sha256 {
                    segment_problems.push(IntegrityProblem::SegmentModified {
                        path: path.clone(),
                        expected_sha256: state.sha256.clone(),
                        actual_sha256: actual,
                    });
                }
            }
        }
    }
    report.problems.extend(segment_problems);
    for (path, state) in &segments {
        if state.removed_by_seq.is_none() && !present.contains_key(path) {
            report
                .problems
                .push(IntegrityProblem::SegmentMissing { path: path.clone(), added_by_seq: state.added_by_seq });
        }
    }
    Ok(report)
}

/// A node's signed head with its public key, as `coldtrail ledger --export` prints it: everything needed
/// to anchor the chain elsewhere (`--expect-head`) and to trust the key later (`--trusted-key`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportedHead {
    pub node: String,
    pub seq: u64,
    pub hash: String,
    pub ts: String,
    /// The node's ed25519 public key, hex.
    pub public_key: String,
    /// The node's signature of the head (`{"node","seq","hash","ts"}` as in the head file), hex.
    pub signature: String,
}

impl ExportedHead {
    /// The export of a signed head file, if `key` signed it.
    pub fn from_head_file(bytes: &[u8], key: &VerifyingKey) -> std::result::Result<ExportedHead, String> {
        let (head, valid) = parse_head_file(bytes, key)?;
        if !valid {
            return Err(format!("the ledger head of node {} has a bad signature: run `coldtrail verify`", head.node));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "head file is not utf-8".to_string())?;
        let signature = text.trim_end().split_once('\n').map(|(_, s)| s.trim().to_string()).unwrap_or_default();
        Ok(ExportedHead {
            node: head.node,
            seq: head.seq,
            hash: head.hash,
            ts: head.ts,
            public_key: crate::ledger::hex(key.as_bytes()),
            signature,
        })
    }
}

impl Anchor {
    /// Parses what `verify --expect-head` takes: an exported head (JSON), `NODE:SEQ:HASH`, or `SEQ:HASH`
    /// of `local_node`.
    pub fn parse(spec: &str, local_node: Option<&str>) -> std::result::Result<Anchor, String> {
        let spec = spec.trim();
        if spec.starts_with('{') {
            let export: ExportedHead =
                serde_json::from_str(spec).map_err(|e| format!("not an exported ledger head: {e}"))?;
            return Ok(Anchor { node: export.node, seq: export.seq, hash: export.hash });
        }
        let parts: Vec<&str> = spec.split(':').collect();
        let (node, seq, hash) = match parts[..] {
            [node, seq, hash] => (node.to_string(), seq, hash),
            [seq, hash] => (
                local_node.ok_or("SEQ:HASH needs this data directory's node; give NODE:SEQ:HASH")?.to_string(),
                seq,
                hash,
            ),
            _ => return Err(format!("{spec:?} is not an exported head, NODE:SEQ:HASH or SEQ:HASH")),
        };
        let seq = seq.parse().map_err(|_| format!("{seq:?} is not an entry number"))?;
        if hash.len() != 64 || crate::ledger::unhex(hash).is_none() {
            return Err(format!("{hash:?} is not a SHA-256 in hex"));
        }
        Ok(Anchor { node, seq, hash: hash.to_string() })
    }
}

/// Parses what `verify --trusted-key` takes: an exported head (its node and public key), `NODE=HEX`, or a
/// bare hex key (a `node.pub`) of `local_node`.
pub fn parse_trusted_key(text: &str, local_node: Option<&str>) -> std::result::Result<(String, VerifyingKey), String> {
    let text = text.trim();
    let (node, hex) = if text.starts_with('{') {
        let export: ExportedHead =
            serde_json::from_str(text).map_err(|e| format!("not an exported ledger head: {e}"))?;
        (export.node, export.public_key)
    } else if let Some((node, hex)) = text.split_once('=') {
        (node.to_string(), hex.to_string())
    } else {
        (local_node.ok_or("a bare key needs this data directory's node; give NODE=HEX")?.to_string(), text.to_string())
    };
    let key = parse_public_key(&hex).ok_or_else(|| format!("{hex:?} is not an ed25519 public key in hex"))?;
    Ok((node, key))
}

impl VerifyReport {
    /// The report as `verify --json` prints it.
    pub fn to_json(&self, location: &str) -> serde_json::Value {
        let findings: Vec<serde_json::Value> =
            self.problems.iter().map(|f| serde_json::json!({ "kind": f.kind(), "message": f.to_string() })).collect();
        let heads: Vec<serde_json::Value> = self
            .heads
            .iter()
            .map(|(node, seq, hash)| serde_json::json!({"node": node, "seq": seq, "hash": hash}))
            .collect();
        serde_json::json!({
            "location": location,
            "intact": self.is_intact(),
            "nodes": self.nodes,
            "entries_checked": self.entries_checked,
            "segments_checked": self.segments_checked,
            "bytes_checked": self.bytes_checked,
            "wal_frames_checked": self.wal_frames_checked,
            "heads": heads,
            "findings": findings,
        })
    }

    /// The report as `verify` prints it, a line each.
    pub fn to_text(&self, location: &str) -> String {
        let mut lines = vec![format!(
            "checked {} ledger entries of {} node(s), {} segments ({} bytes) in {location} and {} WAL frames",
            self.entries_checked,
            self.nodes.len(),
            self.segments_checked,
            self.bytes_checked,
            self.wal_frames_checked,
        )];
        lines.extend(self.heads.iter().map(|(node, seq, hash)| format!("head of node {node}: entry {seq} {hash}")));
        lines.extend(self.problems.iter().map(|finding| format!("FAIL {}: {finding}", finding.kind())));
        lines.push(if self.is_intact() { "intact" } else { "TAMPERED OR DAMAGED" }.to_string());
        lines.join("\n")
    }
}

//! The write-ahead log: every append is framed, checksummed and fsynced here before it is acknowledged.
//!
//! Frame layout (format 2, little endian):
//! `magic u32 | payload_len u32 | crc32(seq ++ signature ++ payload) u32 | seq u64 | signature [u8; 64] | payload`,
//! payload: `version u8 (2) | flags u8 | n_positions u32 | (stream_len u32, stream, offset u64)* | n_batches u32 |
//! (table u8, ipc_len u32, ipc)*`. Each IPC part is an Arrow IPC stream (schema and one batch). Payload
//! version 1 had no flags byte and is read as a frame of its own.
//!
//! One append is one frame, or, when its rows do not fit one, a group of consecutive frames written and
//! fsynced together under the WAL lock: every frame but the last has `FLAG_CONTINUES`, every frame but
//! the first `FLAG_CONTINUED`, and the positions are in the last. An append is acknowledged, and
//! replayed, only whole: a group cut short by a crash or a failed write (its last frame missing) is left
//! out on replay, so rows never come back without the positions stored with them.
//!
//! The signature is the node key's Ed25519 signature of `FRAME_SIGNED_PREFIX ++ seq ++ sha256(payload)`.
//! The checksum tells a torn or damaged frame; the signature tells a forged one: rows edited in the WAL
//! before they are sealed into a segment (where the ledger covers them), with the checksum recomputed.
//!
//! A crash can leave a torn frame at the end of the newest file only: replay cuts the file there. A bad
//! frame anywhere else is corruption and refuses to open, because skipping it would lose acknowledged rows.
//! A forged frame refuses to open wherever it is, and so does a gap in the sequence numbers of one file
//! (frames removed) and a frame of format 1 (unsigned: written before frames were signed, or forged to
//! dodge the signature).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::ipc::CompressionType;
use arrow::record_batch::RecordBatch;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{Result, StoreError};
use crate::schema::Table;

/// Format 1 frames: unsigned. Recognised only to name them when they are refused.
const FRAME_MAGIC_UNSIGNED: u32 = 0x4354_574c; // "CTWL"
const FRAME_MAGIC: u32 = 0x4354_5732; // "CTW2"
const SIGNATURE_BYTES: usize = 64;
const FRAME_HEADER_BYTES: usize = 4 + 4 + 4 + 8 + SIGNATURE_BYTES;
/// What a frame's signature covers, before the sequence number and the payload's SHA-256.
const FRAME_SIGNED_PREFIX: &[u8] = b"coldtrail wal frame v2\n";
const PAYLOAD_VERSION: u8 = 2;
/// Payload version 1: no flags byte.
const PAYLOAD_VERSION_UNFLAGGED: u8 = 1;
/// The offset of the flags byte in a frame.
const FLAGS_AT: usize = FRAME_HEADER_BYTES + 1;
/// The next frame belongs to the same append.
pub const FLAG_CONTINUES: u8 = 1;
/// This frame belongs to the append of the frame before it.
pub const FLAG_CONTINUED: u8 = 2;
/// The largest payload one frame may carry; larger appends are refused before anything is written.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = 256 * 1024 * 1024;
/// A WAL file is closed and a new one started past this size.
pub const WAL_FILE_BYTES_ROTATE: u64 = 64 * 1024 * 1024;

/// The next offset to read in one input stream ("kafka:logs/3", "s3://bucket/key", ...), stored in the
/// same frame as the rows read before it so that both become durable together.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub stream: String,
    pub offset: u64,
}

/// One decoded frame: batches for one or more tables and the input positions they reach, all
/// acknowledged together.
#[derive(Debug, Clone)]
pub struct Frame {
    pub seq: u64,
    pub batches: Vec<(Table, RecordBatch)>,
    pub positions: Vec<Position>,
    /// `FLAG_CONTINUES` and `FLAG_CONTINUED`: where the frame stands in a multi-frame append.
    pub flags: u8,
}

impl Frame {
    pub fn continues(&self) -> bool {
        self.flags & FLAG_CONTINUES != 0
    }

    pub fn continued(&self) -> bool {
        self.flags & FLAG_CONTINUED != 0
    }
}

/// A frame encoded before its sequence number is known: the header is filled in by `seal`, under the
/// WAL lock, so that the expensive encoding runs outside it.
#[derive(Debug)]
pub struct UnsealedFrame {
    bytes: Vec<u8>,
    /// The payload's SHA-256, computed with the encoding (outside the WAL lock).
    digest: [u8; 32],
}

impl UnsealedFrame {
    /// Writes the sequence number, the signature and the checksum into the header and returns the frame
    /// bytes.
    pub fn seal(&mut self, seq: u64, key: &SigningKey) -> &[u8] {
        let signature = key.sign(&signed_message(seq, &self.digest)).to_bytes();
        self.bytes[12..20].copy_from_slice(&seq.to_le_bytes());
        self.bytes[20..FRAME_HEADER_BYTES].copy_from_slice(&signature);
        let crc = frame_crc(&self.bytes[12..]);
        self.bytes[8..12].copy_from_slice(&crc.to_le_bytes());
        &self.bytes
    }

    /// Marks the frame as a part of a multi-frame append (`FLAG_CONTINUES`, `FLAG_CONTINUED`); the
    /// payload's digest is computed again.
    pub fn set_flags(&mut self, flags: u8) {
        if self.bytes[FLAGS_AT] != flags {
            self.bytes[FLAGS_AT] = flags;
            self.digest = Sha256::digest(&self.bytes[FRAME_HEADER_BYTES..]).into();
        }
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Encodes one frame. The batches must already match their tables' schemas.
pub fn encode_frame(
    seq: u64,
    batches: &[(Table, RecordBatch)],
    positions: &[Position],
    key: &SigningKey,
) -> Result<Vec<u8>> {
    encode_frame_flagged(seq, batches, positions, 0, key)
}

/// `encode_frame` with `flags` (a part of a multi-frame append).
pub fn encode_frame_flagged(
    seq: u64,
    batches: &[(Table, RecordBatch)],
    positions: &[Position],
    flags: u8,
    key: &SigningKey,
) -> Result<Vec<u8>> {
    let mut frame = encode_unsealed(batches, positions, FRAME_PAYLOAD_BYTES_MAX)?;
    frame.set_flags(flags);
    frame.seal(seq, key);
    Ok(frame.bytes)
}

/// Encodes the payload of a frame behind a header to be sealed later.
pub fn encode_unsealed(
    batches: &[(Table, RecordBatch)],
    positions: &[Position],
    payload_bytes_max: usize,
) -> Result<UnsealedFrame> {
    // LZ4 shrinks log text several-fold: reserved for a quarter of the rows' memory, grown if needed,
    // so that a large append does not hold its uncompressed size a second time.
    let estimate: usize = batches.iter().map(|(_, b)| b.get_array_memory_size()).sum();
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + 64 + (estimate / 4).min(payload_bytes_max));
    bytes.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&[0u8; FRAME_HEADER_BYTES - 4]);
    bytes.push(PAYLOAD_VERSION);
    bytes.push(0);
    bytes.extend_from_slice(&(positions.len() as u32).to_le_bytes());
    for position in positions {
        bytes.extend_from_slice(&(position.stream.len() as u32).to_le_bytes());
        bytes.extend_from_slice(position.stream.as_bytes());
        bytes.extend_from_slice(&position.offset.to_le_bytes());
    }
    bytes.extend_from_slice(&(batches.len() as u32).to_le_bytes());
    for (table, batch) in batches {
        bytes.push(table.id());
        let ipc_len_at = bytes.len();
        bytes.extend_from_slice(&0u32.to_le_bytes());
        // LZ4 frames: the WAL write is a copy into the page cache, and log text compresses several-fold at
        // a few GB/s.
        let options = IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME))?;
        let mut writer = StreamWriter::try_new_with_options(&mut bytes, &batch.schema(), options)?;
        writer.write(batch)?;
        writer.finish()?;
        drop(writer);
        let ipc_len = bytes.len() - ipc_len_at - 4;
        if bytes.len() - FRAME_HEADER_BYTES > payload_bytes_max.min(FRAME_PAYLOAD_BYTES_MAX) {
            return Err(StoreError::FrameTooLarge {
                table: table.name().into(),
                bytes: bytes.len(),
                limit: payload_bytes_max.min(FRAME_PAYLOAD_BYTES_MAX),
            });
        }
        bytes[ipc_len_at..ipc_len_at + 4].copy_from_slice(&(ipc_len as u32).to_le_bytes());
    }
    let payload_len = (bytes.len() - FRAME_HEADER_BYTES) as u32;
    bytes[4..8].copy_from_slice(&payload_len.to_le_bytes());
    let digest = Sha256::digest(&bytes[FRAME_HEADER_BYTES..]).into();
    Ok(UnsealedFrame { bytes, digest })
}

/// The checksum of everything after it: sequence number, signature and payload.
fn frame_crc(from_seq: &[u8]) -> u32 {
    crc32fast::hash(from_seq)
}

fn signed_message(seq: u64, digest: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(FRAME_SIGNED_PREFIX.len() + 8 + 32);
    message.extend_from_slice(FRAME_SIGNED_PREFIX);
    message.extend_from_slice(&seq.to_le_bytes());
    message.extend_from_slice(digest);
    message
}

/// The frames decoded from a byte buffer, how many bytes they cover, and why decoding stopped early.
#[derive(Debug)]
pub struct Decoded {
    pub frames: Vec<Frame>,
    /// The byte offset of each frame.
    pub offsets: Vec<usize>,
    pub valid_bytes: usize,
    pub stopped: Option<String>,
    /// Decoding stopped at a whole frame (its checksum holds) that the key did not sign, or an unsigned
    /// one: not a torn write, and never cut as one.
    pub forged: bool,
}

/// Why one frame was not decoded.
enum FrameError {
    /// Torn or damaged: a crash or the disk, not a signer.
    Bad(String),
    /// Whole, but not signed by the key.
    Forged(String),
}

impl From<String> for FrameError {
    fn from(reason: String) -> Self {
        FrameError::Bad(reason)
    }
}

impl From<&str> for FrameError {
    fn from(reason: &str) -> Self {
        FrameError::Bad(reason.into())
    }
}

/// Decodes frames until the buffer ends or a frame is torn, bad or not signed by `key`. Never panics on
/// any input.
pub fn decode_frames(bytes: &[u8], key: &VerifyingKey) -> Decoded {
    let mut frames = Vec::new();
    let mut offsets = Vec::new();
    let mut at = 0usize;
    let mut forged = false;
    let stopped = loop {
        if at == bytes.len() {
            break None;
        }
        match decode_one(&bytes[at..], key) {
            Ok((frame, len)) => {
                frames.push(frame);
                offsets.push(at);
                at += len;
            }
            Err(FrameError::Bad(reason)) => break Some(reason),
            Err(FrameError::Forged(reason)) => {
                forged = true;
                break Some(reason);
            }
        }
    };
    Decoded { frames, offsets, valid_bytes: at, stopped, forged }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at.checked_add(4)?).map(|b| u32::from_le_bytes(b.try_into().expect("slice of 4")))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    bytes.get(at..at.checked_add(8)?).map(|b| u64::from_le_bytes(b.try_into().expect("slice of 8")))
}

fn decode_one(bytes: &[u8], key: &VerifyingKey) -> std::result::Result<(Frame, usize), FrameError> {
    if let Some(FRAME_MAGIC_UNSIGNED) = read_u32(bytes, 0) {
        return Err(FrameError::Forged(
            "unsigned frame of format 1 (written before WAL frames were signed, or forged)".into(),
        ));
    }
    if bytes.len() < FRAME_HEADER_BYTES {
        return Err(format!("torn frame header ({} bytes)", bytes.len()).into());
    }
    let magic = read_u32(bytes, 0).expect("header length checked");
    if magic != FRAME_MAGIC {
        return Err(format!("bad frame magic {magic:#x}").into());
    }
    let payload_len = read_u32(bytes, 4).expect("header length checked") as usize;
    if payload_len > FRAME_PAYLOAD_BYTES_MAX {
        return Err(format!("frame length {payload_len} over the limit").into());
    }
    let crc = read_u32(bytes, 8).expect("header length checked");
    let seq = read_u64(bytes, 12).expect("header length checked");
    let Some(frame_bytes) = bytes.get(..FRAME_HEADER_BYTES + payload_len) else {
        return Err(format!(
            "torn frame: {payload_len} payload bytes announced, {} present",
            bytes.len() - FRAME_HEADER_BYTES
        )
        .into());
    };
    if frame_crc(&frame_bytes[12..]) != crc {
        return Err("frame checksum mismatch".into());
    }
    let payload = &frame_bytes[FRAME_HEADER_BYTES..];
    let signature = Signature::from_slice(&frame_bytes[20..FRAME_HEADER_BYTES]).expect("64 bytes");
    let digest: [u8; 32] = Sha256::digest(payload).into();
    if key.verify(&signed_message(seq, &digest), &signature).is_err() {
        return Err(FrameError::Forged(format!("frame {seq} is not signed by the node key: its rows were edited")));
    }
    let frame = decode_payload(seq, payload)?;
    Ok((frame, FRAME_HEADER_BYTES + payload_len))
}

fn decode_payload(seq: u64, payload: &[u8]) -> std::result::Result<Frame, String> {
    let version = *payload.first().ok_or("empty payload")?;
    let (flags, mut at) = match version {
        PAYLOAD_VERSION => (*payload.get(1).ok_or("payload without flags")?, 2usize),
        PAYLOAD_VERSION_UNFLAGGED => (0, 1usize),
        _ => return Err(format!("unknown payload version {version}")),
    };
    if flags & !(FLAG_CONTINUES | FLAG_CONTINUED) != 0 {
        return Err(format!("unknown frame flags {flags:#x}"));
    }
    let n_positions = read_u32(payload, at).ok_or("payload without position count")? as usize;
    at += 4;
    let mut positions = Vec::with_capacity(n_positions.min(1024));
    for _ in 0..n_positions {
        let stream_len = read_u32(payload, at).ok_or("truncated position")? as usize;
        at += 4;
        let stream = payload.get(at..at.saturating_add(stream_len)).ok_or("truncated position stream")?;
        let stream = String::from_utf8(stream.to_vec()).map_err(|_| "position stream is not utf-8")?;
        at += stream_len;
        let offset = read_u64(payload, at).ok_or("truncated position offset")?;
        at += 8;
        positions.push(Position { stream, offset });
    }
    let n_batches = read_u32(payload, at).ok_or("payload without batch count")? as usize;
    at += 4;
    let mut batches = Vec::with_capacity(n_batches.min(64));
    for _ in 0..n_batches {
        let table_id = *payload.get(at).ok_or("truncated batch table")?;
        let table = Table::from_id(table_id).ok_or_else(|| format!("unknown table id {table_id}"))?;
        let ipc_len = read_u32(payload, at + 1).ok_or("truncated batch length")? as usize;
        at += 5;
        let ipc = payload.get(at..at.saturating_add(ipc_len)).ok_or("truncated ipc")?;
        at += ipc_len;
        let mut reader = StreamReader::try_new(ipc, None).map_err(|e| format!("bad ipc: {e}"))?;
        let batch = reader.next().ok_or("ipc stream without batch")?.map_err(|e| format!("bad ipc batch: {e}"))?;
        // A frame written by an older version replays as the current schema.
        batches.push((table, crate::schema::upgrade(table, batch)?));
    }
    if at != payload.len() {
        return Err("trailing bytes after the last batch".into());
    }
    Ok(Frame { seq, batches, positions, flags })
}

/// What one WAL file holds: for each (table, hour) partition the highest sequence number in it.
#[derive(Debug, Default)]
struct WalFileInfo {
    max_seq: u64,
    partitions: HashMap<(Table, i64), u64>,
}

/// The set of WAL files of one node; only the newest is written.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    active: File,
    active_first_seq: u64,
    active_bytes: u64,
    files: BTreeMap<u64, WalFileInfo>,
}

fn wal_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(dir, e))
}

impl Wal {
    /// Opens the WAL in `dir`, returning every intact frame in sequence order. A torn tail of the newest file
    /// is cut off; corruption anywhere else is an error.
    pub fn open(
        dir: &Path,
        key: &VerifyingKey,
        partitions_of: impl Fn(&Frame) -> Vec<(Table, i64)>,
    ) -> Result<(Wal, Vec<Frame>)> {
        crate::location::private_dir(dir)?;
        let mut first_seqs = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(seq) = name.strip_suffix(".wal").and_then(|s| s.parse::<u64>().ok()) {
                first_seqs.push(seq);
            }
        }
        first_seqs.sort_unstable();
        let mut frames = Vec::new();
        let mut files = BTreeMap::new();
        let n_files = first_seqs.len();
        let mut last_seq = 0u64;
        for (file_idx, first_seq) in first_seqs.iter().copied().enumerate() {
            let path = wal_path(dir, first_seq);
            let mut bytes = Vec::new();
            File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| StoreError::io(&path, e))?;
            let decoded = decode_frames(&bytes, key);
            if let Some(problem) = tampering(first_seq, &decoded) {
                return Err(StoreError::WalTampered { path, offset: problem.0, reason: problem.1 });
            }
            if let Some(reason) = &decoded.stopped {
                if file_idx + 1 != n_files {
                    return Err(StoreError::WalCorrupt {
                        path,
                        offset: decoded.valid_bytes as u64,
                        reason: reason.clone(),
                    });
                }
                tracing::warn!(path = %path.display(), offset = decoded.valid_bytes, reason, "cutting torn wal tail");
                let file = OpenOptions::new().write(true).open(&path).map_err(|e| StoreError::io(&path, e))?;
                file.set_len(decoded.valid_bytes as u64).map_err(|e| StoreError::io(&path, e))?;
                file.sync_all().map_err(|e| StoreError::io(&path, e))?;
            }
            let mut info = WalFileInfo { max_seq: first_seq.saturating_sub(1), ..Default::default() };
            for frame in &decoded.frames {
                if frame.seq < first_seq || frame.seq <= last_seq {
                    return Err(StoreError::WalCorrupt {
                        path,
                        offset: 0,
                        reason: format!("sequence {} after {last_seq} is out of order", frame.seq),
                    });
                }
                last_seq = frame.seq;
                info.max_seq = frame.seq;
            }
            // The frames of one append are written to one file: a group cut short ends with it.
            for frame in whole_appends(&path, decoded.frames) {
                for partition in partitions_of(&frame) {
                    info.partitions.insert(partition, frame.seq);
                }
                frames.push(frame);
            }
            files.insert(first_seq, info);
        }
        // A new file per start keeps every file's frames from a single run; an empty newest file is reused.
        let next_seq = last_seq + 1;
        let (active, active_bytes) = open_active(dir, next_seq)?;
        files.entry(next_seq).or_insert(WalFileInfo { max_seq: last_seq, ..Default::default() });
        let wal = Wal { dir: dir.to_path_buf(), active, active_first_seq: next_seq, active_bytes, files };
        Ok((wal, frames))
    }

    /// The sequence number the next frame must carry at least.
    pub fn next_seq(&self) -> u64 {
        self.files.values().map(|info| info.max_seq).max().unwrap_or(0) + 1
    }

    /// Starts a new active file whose first frame will have `first_seq`.
    fn start_file(&mut self, first_seq: u64) -> Result<()> {
        let (file, len) = open_active(&self.dir, first_seq)?;
        self.active = file;
        self.active_first_seq = first_seq;
        self.active_bytes = len;
        self.files
            .entry(first_seq)
            .or_insert(WalFileInfo { max_seq: first_seq.saturating_sub(1), ..Default::default() });
        Ok(())
    }

    /// Writes one encoded frame and fsyncs it. Only after this returns is the frame acknowledged.
    pub fn append(&mut self, seq: u64, partitions: &[(Table, i64)], frame: &[u8]) -> Result<()> {
        self.append_group(seq, partitions, &[frame])
    }

    /// Writes the frames of one append (sequence numbers from `first_seq` on) into one file and fsyncs
    /// them once. Only after this returns are they acknowledged; after an error the file is cut back to
    /// where it was, and a crash half way leaves a group that replay leaves out.
    pub fn append_group(&mut self, first_seq: u64, partitions: &[(Table, i64)], frames: &[&[u8]]) -> Result<()> {
        let Some(last_seq) = (first_seq + frames.len() as u64).checked_sub(1).filter(|_| !frames.is_empty()) else {
            return Ok(());
        };
        if self.active_bytes >= WAL_FILE_BYTES_ROTATE {
            self.start_file(first_seq)?;
        }
        let path = wal_path(&self.dir, self.active_first_seq);
        let started = std::time::Instant::now();
        let written = frames.iter().try_for_each(|frame| {
            crate::fault::hit("wal.frame")?;
            self.active.write_all(frame)
        });
        if let Err(e) = written.and_then(|()| self.active.sync_data()) {
            // Partly written frames would be cut as a torn tail or left out as a cut group on restart;
            // cut them now so later frames are not written behind them.
            let _ = self.active.set_len(self.active_bytes).and_then(|()| self.active.sync_data());
            return Err(StoreError::io(path, e));
        }
        let bytes: usize = frames.iter().map(|frame| frame.len()).sum();
        crate::metrics::wal_appended(bytes, started.elapsed());
        self.active_bytes += bytes as u64;
        let info = self.files.get_mut(&self.active_first_seq).expect("the active file is tracked");
        info.max_seq = last_seq;
        for partition in partitions {
            info.partitions.insert(*partition, last_seq);
        }
        Ok(())
    }

    /// Deletes every WAL file whose frames are all covered by `watermark` (the highest flushed
    /// sequence number of a partition) and by `positions_seq` (the sequence the positions checkpoint
    /// covers). The active file is rotated first when it is fully covered.
    pub fn collect_garbage(
        &mut self,
        watermark: impl Fn(Table, i64) -> u64,
        positions_seq: u64,
        next_seq: u64,
    ) -> Result<usize> {
        let covered = |info: &WalFileInfo| {
            info.max_seq <= positions_seq
                && info.partitions.iter().all(|((table, hour), seq)| watermark(*table, *hour) >= *seq)
        };
        let active_info = self.files.get(&self.active_first_seq).expect("the active file is tracked");
        if self.active_bytes > 0 && covered(active_info) {
            self.start_file(next_seq)?;
        }
        let doomed: Vec<u64> = self
            .files
            .iter()
            .filter(|(first_seq, info)| **first_seq != self.active_first_seq && covered(info))
            .map(|(first_seq, _)| *first_seq)
            .collect();
        for first_seq in &doomed {
            let path = wal_path(&self.dir, *first_seq);
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            self.files.remove(first_seq);
        }
        if !doomed.is_empty() {
            sync_dir(&self.dir)?;
        }
        Ok(doomed.len())
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    pub fn bytes_active(&self) -> u64 {
        self.active_bytes
    }
}

/// The frames of whole appends, in order: a group of frames whose last is missing (a crash or a failed
/// write between its frames) is left out, with a warning, and so is a continuation without its start.
fn whole_appends(path: &Path, frames: Vec<Frame>) -> Vec<Frame> {
    let mut whole = Vec::with_capacity(frames.len());
    let mut group: Vec<Frame> = Vec::new();
    let cut = |group: &mut Vec<Frame>| {
        if let (Some(first), Some(last)) = (group.first(), group.last()) {
            tracing::warn!(path = %path.display(), first = first.seq, last = last.seq, "leaving out an append cut short between its frames (never acknowledged)");
        }
        group.clear();
    };
    for frame in frames {
        // A frame that starts an append while a group is open, or continues none, breaks the run.
        if frame.continued() == group.is_empty() {
            cut(&mut group);
            if frame.continued() {
                tracing::warn!(path = %path.display(), seq = frame.seq, "leaving out a frame that continues no append");
                continue;
            }
        }
        let continues = frame.continues();
        group.push(frame);
        if !continues {
            whole.append(&mut group);
        }
    }
    cut(&mut group);
    whole
}

/// How the frames of one WAL file (named after `first_seq`) show tampering, if they do: a forged frame,
/// or a gap in their sequence numbers (the frames of one file are numbered one after another, so a gap
/// is frames removed). The byte offset and the reason.
pub fn tampering(first_seq: u64, decoded: &Decoded) -> Option<(u64, String)> {
    if decoded.forged {
        return Some((decoded.valid_bytes as u64, decoded.stopped.clone().unwrap_or_default()));
    }
    let mut previous: Option<u64> = None;
    for (frame, at) in decoded.frames.iter().zip(&decoded.offsets) {
        let at = *at as u64;
        match previous {
            Some(previous) if frame.seq != previous + 1 => {
                return Some((at, format!("frame {} follows frame {previous}: frames were removed", frame.seq)))
            }
            None if frame.seq < first_seq => {
                return Some((at, format!("frame {} opens the file of frames from {first_seq}", frame.seq)))
            }
            _ => {}
        }
        previous = Some(frame.seq);
    }
    None
}

fn open_active(dir: &Path, first_seq: u64) -> Result<(File, u64)> {
    let path = wal_path(dir, first_seq);
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&path).map_err(|e| StoreError::io(&path, e))?;
    let len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
    sync_dir(dir)?;
    Ok((file, len))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, RecordBatchOptions};

    use super::*;

    fn empty_batch(table: Table) -> RecordBatch {
        let schema = table.schema();
        let columns: Vec<ArrayRef> =
            schema.fields().iter().map(|f| arrow::array::new_empty_array(f.data_type())).collect();
        RecordBatch::try_new_with_options(schema, columns, &RecordBatchOptions::new().with_row_count(Some(0))).unwrap()
    }

    #[test]
    fn frames_round_trip_with_and_without_batches() {
        let positions = vec![Position { stream: "kafka:logs/3".into(), offset: 42 }];
        let batches =
            vec![(Table::Logs, empty_batch(Table::Logs)), (Table::DeadLetters, empty_batch(Table::DeadLetters))];
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut bytes = encode_frame(7, &batches, &positions, &key).unwrap();
        bytes.extend(encode_frame(8, &[], &[], &key).unwrap());
        let decoded = decode_frames(&bytes, &key.verifying_key());
        assert!(decoded.stopped.is_none());
        assert_eq!(decoded.valid_bytes, bytes.len());
        assert_eq!(decoded.frames.len(), 2);
        assert_eq!(decoded.frames[0].positions, positions);
        assert_eq!(decoded.frames[0].batches.len(), 2);
        assert_eq!(decoded.frames[0].batches[1].0, Table::DeadLetters);
        assert_eq!(decoded.frames[0].batches[0].1.schema().fields(), Table::Logs.schema().fields());
        assert!(decoded.frames[1].batches.is_empty());
        assert_eq!(decoded.frames[1].seq, 8);
    }

    #[test]
    fn a_frame_with_a_foreign_schema_is_rejected_on_decode() {
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "x",
            arrow::datatypes::DataType::Int64,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(arrow::array::Int64Array::from(vec![1]))]).unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let bytes = encode_frame(1, &[(Table::Logs, batch)], &[], &key).unwrap();
        let decoded = decode_frames(&bytes, &key.verifying_key());
        assert!(decoded.frames.is_empty());
        assert!(decoded.stopped.unwrap().contains("schema"));
    }
}

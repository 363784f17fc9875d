//! `Store`: appends through the WAL into the hot buffer, flushes hot partitions into segments recorded
//! in the ledger, applies retention and compaction, and serves scans over hot rows and segments together.

mod append;
mod inputs;
pub use inputs::{marks_watermark, merge_marks, InputMark};
mod maintenance;
mod open;
mod positions;
mod scan;
mod taps;

use append::*;
use open::*;
use positions::*;
use taps::Tap;

pub use scan::catalog_stats;
pub use taps::Appended;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::take_record_batch;
use bytes::Bytes;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::ledger::{
    head_path, hex, list_nodes, load_or_create_key, parse_entry_file, read_entry_files, LedgerHead, LedgerOp,
    LedgerWriter, RemovedSegment, SegmentRecord, SignedEntry,
};
use crate::location::Location;
use crate::schema::{ledger_schema, timestamp_type, Table};
use crate::segment::{
    encode_segment, encode_segment_on, filter_time, project, projected_schema, read_segment, time_values,
    EncodedSegment,
};
use crate::segment_path::{parse_segment_path, segment_path, valid_node_id};
use crate::time::{hour_of, now_micros, partition_dir, TimeRange, MICROS_PER_HOUR};
use crate::verify::check_chain;
use crate::wal::{encode_unsealed, Frame, Position, UnsealedFrame, Wal, FLAG_CONTINUED, FLAG_CONTINUES};

/// Partitions encoded at once by default, at most: past a few, a flush holds more sorted copies than it
/// gains cores.
const ENCODERS_MAX: usize = 4;

/// When hot partitions are sealed into segments.
#[derive(Clone, Debug)]
pub struct FlushPolicy {
    /// A partition with this many hot rows is flushed.
    pub partition_rows_max: usize,
    /// A partition with this many hot bytes (Arrow memory) is flushed.
    pub partition_bytes_max: usize,
    /// A partition whose oldest hot row arrived this long ago is flushed.
    pub partition_age_max: Duration,
    /// Past this many hot bytes in all, the largest partitions are flushed first.
    pub hot_bytes_max: usize,
    /// Partitions of one flush encoded at once (sorting, Parquet, zstd: the cost of a seal, each on a
    /// core of its own); their segments are still written and entered in the ledger one after another,
    /// in order.
    pub encoders: usize,
    /// Threads the partitions of one flush are encoded on in all: shared by the `encoders`, so that a
    /// partition encoded alone (the last of an ingest, the one of a quiet minute) encodes its columns on
    /// all of them (`segment::encode_segment_on`).
    pub threads: usize,
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            partition_rows_max: 1_000_000,
            partition_bytes_max: 128 * 1024 * 1024,
            partition_age_max: Duration::from_secs(60),
            hot_bytes_max: 512 * 1024 * 1024,
            encoders: std::thread::available_parallelism().map_or(1, |n| n.get()).min(ENCODERS_MAX),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// When small segments of one partition are merged.
#[derive(Clone, Debug)]
pub struct CompactionPolicy {
    /// Segments with fewer rows are small and candidates for merging.
    pub small_segment_rows_max: u64,
    /// An open partition is compacted once it has this many small segments; a partition whose hour ended
    /// more than `closed_after` ago is compacted as soon as it has two.
    pub small_segments_min: usize,
    pub closed_after: Duration,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            small_segment_rows_max: 250_000,
            small_segments_min: 8,
            closed_after: Duration::from_secs(600),
        }
    }
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Local directory of the WAL, the node id and the node key.
    pub data_dir: PathBuf,
    /// Where segments, ledgers and position checkpoints live: a directory or an `s3://` URL. Defaults to
    /// `data_dir`.
    pub location: Option<String>,
    /// The node id; defaults to the one stored in `data_dir`, created at random on first start.
    pub node_id: Option<String>,
    pub flush: FlushPolicy,
    pub compaction: CompactionPolicy,
    /// Per-table retention by age of event time; tables without one are kept forever.
    pub retention: BTreeMap<Table, Duration>,
    /// Payload bytes of one WAL frame (one append), at most; capped at `wal::FRAME_PAYLOAD_BYTES_MAX`.
    /// Lower only to test how callers slice large appends.
    pub frame_bytes_max: usize,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            data_dir: data_dir.into(),
            location: None,
            node_id: None,
            flush: FlushPolicy::default(),
            compaction: CompactionPolicy::default(),
            retention: BTreeMap::new(),
            frame_bytes_max: crate::wal::FRAME_PAYLOAD_BYTES_MAX,
        }
    }
}

/// A sealed segment in the catalog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub table: Table,
    pub hour: i64,
    pub path: String,
    pub node: String,
    pub rows: u64,
    pub bytes: u64,
    pub min_ts_micros: i64,
    pub max_ts_micros: i64,
    pub sha256: String,
}

/// What a table holds at one instant: the segments and hot batches overlapping a time range. Rows are in
/// exactly one of the two.
#[derive(Clone, Debug, Default)]
pub struct TableSnapshot {
    pub segments: Vec<SegmentInfo>,
    pub hot: Vec<RecordBatch>,
}

/// Counts per table, for `coldtrail info` and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TableStats {
    pub hot_rows: u64,
    pub hot_bytes: u64,
    pub segments: u64,
    pub segment_rows: u64,
    pub segment_bytes: u64,
}

/// What one maintenance pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub segments_flushed: usize,
    pub segments_compacted: usize,
    pub segments_expired: usize,
    pub wal_files_deleted: usize,
}

struct HotPartition {
    batches: Vec<HotBatch>,
    rows: usize,
    bytes: usize,
    first_append: Instant,
}

/// Rows of one append in a hot partition: its WAL sequence number and the memory it holds (see
/// `append::HourPart`).
struct HotBatch {
    seq: u64,
    batch: RecordBatch,
    share: usize,
    held: Arc<usize>,
}

/// Guarded by `Store::wal`; taken before `Store::state` when both are needed.
struct WalState {
    wal: Wal,
    next_seq: u64,
    /// Signs each frame (`wal` module docs).
    key: ed25519_dalek::SigningKey,
}

/// Guarded by `Store::state`, held only for memory operations, never across IO.
#[derive(Default)]
struct State {
    hot: BTreeMap<(Table, i64), HotPartition>,
    hot_bytes: usize,
    positions: BTreeMap<String, u64>,
    /// The highest WAL sequence whose rows of a partition are in a segment.
    watermarks: HashMap<(Table, i64), u64>,
    catalog: BTreeMap<Table, BTreeMap<String, SegmentInfo>>,
    head: Option<LedgerHead>,
    positions_checkpoint_seq: u64,
}

/// The store. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    config: StoreConfig,
    /// Holds an exclusive lock on `<data_dir>/LOCK` for the store's lifetime: one process per WAL.
    _lock_file: std::fs::File,
    node: String,
    location: Location,
    verifying_key: VerifyingKey,
    wal: Mutex<WalState>,
    state: Mutex<State>,
    /// Serialises everything that writes the ledger (flush, compaction, retention); held across IO.
    ledger: tokio::sync::Mutex<LedgerWriter>,
    /// Subscribers to appended rows (see `Store::subscribe`).
    taps: Mutex<Vec<Arc<Tap>>>,
    /// Event-time progress of the partitioned inputs this process holds (`inputs`).
    inputs: Mutex<BTreeMap<String, inputs::InputProgress>>,
}

fn apply_entry(catalog: &mut BTreeMap<Table, BTreeMap<String, SegmentInfo>>, signed: &SignedEntry) {
    let entry = &signed.entry;
    let Some(table) = Table::from_name(&entry.table) else {
        tracing::warn!(node = %entry.node, seq = entry.seq, table = %entry.table, "ledger entry for an unknown table");
        return;
    };
    let segments = catalog.entry(table).or_default();
    for removed in &entry.removed {
        segments.remove(&removed.path);
    }
    if let Some(segment) = &entry.segment {
        let hour = parse_segment_path(&segment.path).map_or_else(|| hour_of(segment.min_ts_micros), |name| name.hour);
        segments.insert(
            segment.path.clone(),
            SegmentInfo {
                table,
                hour,
                path: segment.path.clone(),
                node: entry.node.clone(),
                rows: segment.rows,
                bytes: segment.bytes,
                min_ts_micros: segment.min_ts_micros,
                max_ts_micros: segment.max_ts_micros,
                sha256: segment.sha256.clone(),
            },
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a store lock leaves state that is still consistent for readers: every update
    // under the locks is a single insert or remove. Carry on rather than poison every later call.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Store {
    pub fn node_id(&self) -> &str {
        &self.node
    }

    pub fn location(&self) -> &Location {
        &self.location
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The node's public key, to verify its ledger.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.verifying_key
    }

    /// This node's ledger head: the last entry's sequence number and hash.
    pub fn ledger_head(&self) -> LedgerHead {
        lock(&self.state).head.clone().expect("the head is set at open")
    }

    /// Bytes of rows in the hot buffer (Arrow memory), and the flush policy's bound on them.
    pub fn hot_bytes(&self) -> (usize, usize) {
        (lock(&self.state).hot_bytes, self.config.flush.hot_bytes_max)
    }

    /// Row, byte and segment counts per table.
    pub fn stats(&self) -> BTreeMap<Table, TableStats> {
        let state = lock(&self.state);
        let mut stats: BTreeMap<Table, TableStats> = Table::ALL.iter().map(|t| (*t, TableStats::default())).collect();
        for ((table, _), partition) in &state.hot {
            let entry = stats.entry(*table).or_default();
            entry.hot_rows += partition.rows as u64;
            entry.hot_bytes += partition.bytes as u64;
        }
        for (table, segments) in &state.catalog {
            let entry = stats.entry(*table).or_default();
            for segment in segments.values() {
                entry.segments += 1;
                entry.segment_rows += segment.rows;
                entry.segment_bytes += segment.bytes;
            }
        }
        stats
    }

    /// Number of WAL files on disk and bytes in the active one.
    pub fn wal_stats(&self) -> (usize, u64) {
        let wal = lock(&self.wal);
        (wal.wal.file_count(), wal.wal.bytes_active())
    }
}

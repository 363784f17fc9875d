//! `Store`: appends through the WAL into the hot buffer, flushes hot partitions into segments recorded
//! in the ledger, applies retention and compaction, and serves scans over hot rows and segments together.

use std::collections::{BTreeMap, HashMap};
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
use crate::segment::{encode_segment, filter_time, project, projected_schema, read_segment, time_values};
use crate::segment_path::{parse_segment_path, segment_path, valid_node_id};
use crate::time::{hour_of, now_micros, partition_dir, TimeRange, MICROS_PER_HOUR};
use crate::verify::check_chain;
use crate::wal::{encode_unsealed, Frame, Position, Wal};

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
}

impl Default for FlushPolicy {
    fn default() -> Self {
        FlushPolicy {
            partition_rows_max: 1_000_000,
            partition_bytes_max: 128 * 1024 * 1024,
            partition_age_max: Duration::from_secs(60),
            hot_bytes_max: 512 * 1024 * 1024,
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
    batches: Vec<(u64, RecordBatch)>,
    rows: usize,
    bytes: usize,
    first_append: Instant,
}

/// The durable position checkpoint: positions as of WAL sequence `wal_seq`.
#[derive(Serialize, Deserialize, Default)]
struct PositionsCheckpoint {
    wal_seq: u64,
    positions: BTreeMap<String, u64>,
}

/// Guarded by `Store::wal`; taken before `Store::state` when both are needed.
struct WalState {
    wal: Wal,
    next_seq: u64,
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
}

/// Rows of one append, as a subscriber receives them: the WAL sequence number and the batches of the
/// subscribed tables.
#[derive(Debug, Clone)]
pub struct Appended {
    pub seq: u64,
    pub batches: Vec<(Table, RecordBatch)>,
}

struct Tap {
    tables: Vec<Table>,
    /// `None` once the receiver is gone. Locked per tap while sending: a full channel blocks the appends
    /// of its tables only, never the appends that other subscribers wait for.
    sender: Mutex<Option<std::sync::mpsc::SyncSender<Appended>>>,
}

/// A group name as one path segment.
fn group_key(group: &str) -> String {
    group.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

fn shared_positions_path(group: &str, node: &str) -> String {
    format!("_positions/groups/{}/{node}.json", group_key(group))
}

fn positions_path(node: &str) -> String {
    format!("_positions/{node}.json")
}

fn schema_mismatch(table: Table, batch: &RecordBatch) -> Option<String> {
    let expected = table.schema();
    let actual = batch.schema();
    if actual.fields().len() != expected.fields().len() {
        return Some(format!("{} columns, expected {}", actual.fields().len(), expected.fields().len()));
    }
    for (actual, expected) in actual.fields().iter().zip(expected.fields()) {
        if actual.name() != expected.name() || actual.data_type() != expected.data_type() {
            return Some(format!(
                "column {} of type {} where {} of type {} was expected",
                actual.name(),
                actual.data_type(),
                expected.name(),
                expected.data_type()
            ));
        }
        if actual.is_nullable() && !expected.is_nullable() {
            return Some(format!("column {} is nullable but must not be", actual.name()));
        }
    }
    None
}

/// Splits a batch into one batch per hour of its time column.
fn split_by_hour(table: Table, batch: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
    let times = time_values(table, batch)?;
    if times.null_count() > 0 {
        return Err(StoreError::NullTime { table: table.name().into(), column: table.time_column().into() });
    }
    let hours: Vec<i64> = times.values().iter().map(|t| hour_of(*t)).collect();
    let Some(first) = hours.first().copied() else {
        return Ok(Vec::new());
    };
    if hours.iter().all(|h| *h == first) {
        return Ok(vec![(first, batch.clone())]);
    }
    let mut groups: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (row, hour) in hours.iter().enumerate() {
        groups.entry(*hour).or_default().push(row as u32);
    }
    groups.into_iter().map(|(hour, rows)| Ok((hour, take_record_batch(batch, &UInt32Array::from(rows))?))).collect()
}

fn frame_partitions(frame: &Frame) -> Vec<(Table, i64)> {
    let mut partitions = Vec::new();
    for (table, batch) in &frame.batches {
        if let Ok(times) = time_values(*table, batch) {
            for time in times.values().iter() {
                let partition = (*table, hour_of(*time));
                if !partitions.contains(&partition) {
                    partitions.push(partition);
                }
            }
        }
    }
    partitions
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
    /// Opens (or creates) the store: loads the node identity, checks this node's ledger, removes segment
    /// files that a crash left unrecorded, and replays the WAL into the hot buffer.
    pub async fn open(config: StoreConfig) -> Result<Store> {
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(|e| StoreError::io(&data_dir, e))?;
        let lock_path = data_dir.join("LOCK");
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        if let Err(e) = lock_file.try_lock() {
            return Err(StoreError::Locked { path: lock_path, reason: e.to_string() });
        }
        let node = load_or_create_node_id(&data_dir, config.node_id.as_deref())?;
        let key = load_or_create_key(&data_dir.join("node.key"))?;
        let verifying_key = key.verifying_key();
        std::fs::write(data_dir.join("node.pub"), format!("{}\n", hex(verifying_key.as_bytes())))
            .map_err(|e| StoreError::io(data_dir.join("node.pub"), e))?;
        let location = Location::open(config.location.as_deref().unwrap_or(&data_dir.to_string_lossy()))?;

        // This node's chain must be intact before anything is added to it.
        let files = read_entry_files(&location, &node).await?;
        let head_bytes = location.get_opt(&head_path(&node)).await?;
        let check = check_chain(&node, &files, head_bytes.as_deref(), &verifying_key);
        if let Some(finding) = check.findings.first() {
            return Err(StoreError::LedgerCorrupt {
                node: node.clone(),
                seq: check.entries.last().map_or(0, |e| e.entry.seq),
                reason: format!("{finding} ({} findings in all; run `coldtrail verify`)", check.findings.len()),
            });
        }
        let ledger = LedgerWriter::new(location.clone(), node.clone(), key, check.entries.last());
        ledger.publish_public_key().await?;
        if check.head_seq != check.entries.last().map(|e| e.entry.seq) {
            ledger.write_head().await?;
        }

        let mut state = State { head: Some(ledger.head()), ..State::default() };
        for signed in &check.entries {
            apply_entry(&mut state.catalog, signed);
            if let (Some(segment), Some(table)) = (&signed.entry.segment, Table::from_name(&signed.entry.table)) {
                let hour = parse_segment_path(&segment.path).map_or(0, |name| name.hour);
                let watermark = state.watermarks.entry((table, hour)).or_default();
                *watermark = (*watermark).max(segment.wal_seq_hi);
            }
        }
        load_other_nodes(&location, &node, &mut state.catalog).await?;
        remove_unrecorded_segments(&location, &node, &state.catalog).await?;

        let checkpoint: PositionsCheckpoint = match location.get_opt(&positions_path(&node)).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::PositionsCorrupt { path: positions_path(&node), reason: e.to_string() })?,
            None => PositionsCheckpoint::default(),
        };
        state.positions = checkpoint.positions;
        state.positions_checkpoint_seq = checkpoint.wal_seq;

        let wal_dir = data_dir.join("wal");
        let (wal, frames) = Wal::open(&wal_dir, frame_partitions)?;
        let mut replayed_rows = 0usize;
        for frame in &frames {
            if frame.seq > checkpoint.wal_seq {
                for position in &frame.positions {
                    state.positions.insert(position.stream.clone(), position.offset);
                }
            }
            for (table, batch) in &frame.batches {
                for (hour, part) in split_by_hour(*table, batch)? {
                    if frame.seq > state.watermarks.get(&(*table, hour)).copied().unwrap_or(0) {
                        replayed_rows += part.num_rows();
                        insert_hot(&mut state, *table, hour, frame.seq, part);
                    }
                }
            }
        }
        let max_watermark = state.watermarks.values().copied().max().unwrap_or(0);
        let next_seq = wal.next_seq().max(max_watermark + 1).max(checkpoint.wal_seq + 1);
        tracing::info!(node = %node, frames = frames.len(), replayed_rows, next_seq, "store opened");
        Ok(Store {
            config,
            _lock_file: lock_file,
            node,
            location,
            verifying_key,
            wal: Mutex::new(WalState { wal, next_seq }),
            state: Mutex::new(state),
            ledger: tokio::sync::Mutex::new(ledger),
            taps: Mutex::new(Vec::new()),
        })
    }

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

    /// The oldest and newest event time of a table's rows (sealed and hot), from segment metadata and the
    /// hot batches' time columns; `None` when the table is empty.
    pub fn event_time_span(&self, table: Table) -> Option<(i64, i64)> {
        let snapshot = self.snapshot(table, TimeRange::ALL);
        let mut span: Option<(i64, i64)> = None;
        let mut widen = |min: i64, max: i64| span = Some(span.map_or((min, max), |(a, b)| (a.min(min), b.max(max))));
        for segment in &snapshot.segments {
            widen(segment.min_ts_micros, segment.max_ts_micros);
        }
        for batch in &snapshot.hot {
            let times = batch.column(0).as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>();
            if let Some((min, max)) = times.and_then(|t| Some((arrow::compute::min(t)?, arrow::compute::max(t)?))) {
                widen(min, max);
            }
        }
        span
    }

    /// Payload bytes one append may encode to (`StoreError::FrameTooLarge` past it).
    pub fn frame_bytes_max(&self) -> usize {
        self.config.frame_bytes_max.min(crate::wal::FRAME_PAYLOAD_BYTES_MAX)
    }

    /// Appends batches to their tables together with input positions, atomically: after this returns
    /// `Ok`, the rows and positions are fsynced in the WAL and visible to scans; after an error, none of
    /// them is. Blocks for one fsync: call it from a blocking thread in async code.
    /// Returns the WAL sequence number of the append.
    pub fn append(&self, batches: &[(Table, RecordBatch)], positions: &[Position]) -> Result<u64> {
        self.append_checked(batches, positions, &[])
    }

    /// `append`, on condition that each stream in `expected` is at the given position (`None`: no position
    /// yet) when the append is made; otherwise nothing is written and the error is
    /// `StoreError::PositionConflict`. Consumers that share partitions over time use it so that a record
    /// is stored by one of them only.
    pub fn append_checked(
        &self,
        batches: &[(Table, RecordBatch)],
        positions: &[Position],
        expected: &[(String, Option<u64>)],
    ) -> Result<u64> {
        let mut splits = Vec::with_capacity(batches.len());
        let mut partitions = Vec::new();
        for (table, batch) in batches {
            if let Some(reason) = schema_mismatch(*table, batch) {
                return Err(StoreError::SchemaMismatch { table: table.name().into(), reason });
            }
            let parts = split_by_hour(*table, batch)?;
            partitions.extend(parts.iter().map(|(hour, _)| (*table, *hour)));
            splits.push((*table, parts));
        }
        let mut frame = encode_unsealed(batches, positions, self.frame_bytes_max())?;
        let mut wal = lock(&self.wal);
        if !expected.is_empty() {
            // Positions change only under the WAL lock, which is held from here to the insert below.
            let state = lock(&self.state);
            for (stream, position) in expected {
                let actual = state.positions.get(stream).copied();
                if actual != *position {
                    return Err(StoreError::PositionConflict { stream: stream.clone(), expected: *position, actual });
                }
            }
        }
        let seq = wal.next_seq;
        let bytes = frame.seal(seq);
        wal.wal.append(seq, &partitions, bytes)?;
        wal.next_seq += 1;
        // Still under the WAL lock, so that hot batches are inserted in sequence order.
        let mut state = lock(&self.state);
        for (table, parts) in splits {
            for (hour, part) in parts {
                insert_hot(&mut state, table, hour, seq, part);
            }
        }
        for position in positions {
            state.positions.insert(position.stream.clone(), position.offset);
        }
        drop(state);
        drop(wal);
        self.deliver(seq, batches);
        Ok(seq)
    }

    /// Delivers the rows of every append of `tables`, once durable, to the returned receiver (concurrent
    /// appends may arrive in either order; `Appended::seq` tells). The channel holds `capacity` appends;
    /// when it is full, appending waits for the subscriber (backpressure, never loss). Dropping the
    /// receiver ends the subscription. A subscriber must not wait for its own appends of subscribed
    /// tables while the channel is full.
    pub fn subscribe(&self, tables: &[Table], capacity: usize) -> std::sync::mpsc::Receiver<Appended> {
        let (sender, receiver) = std::sync::mpsc::sync_channel(capacity.max(1));
        lock(&self.taps).push(Arc::new(Tap { tables: tables.to_vec(), sender: Mutex::new(Some(sender)) }));
        receiver
    }

    fn deliver(&self, seq: u64, batches: &[(Table, RecordBatch)]) {
        // The list is locked only to pick the taps: a subscriber whose channel is full blocks this
        // append, but not the appends of other tables (the detection thread storing its alerts while an
        // ingest waits for it to take invocations, say).
        let taps: Vec<Arc<Tap>> = {
            let taps = lock(&self.taps);
            taps.iter().filter(|tap| batches.iter().any(|(table, _)| tap.tables.contains(table))).cloned().collect()
        };
        let mut gone = false;
        for tap in taps {
            let wanted: Vec<(Table, RecordBatch)> =
                batches.iter().filter(|(table, _)| tap.tables.contains(table)).cloned().collect();
            let mut sender = lock(&tap.sender);
            if let Some(channel) = sender.as_ref() {
                if channel.send(Appended { seq, batches: wanted }).is_err() {
                    *sender = None;
                    gone = true;
                }
            }
        }
        if gone {
            lock(&self.taps).retain(|tap| lock(&tap.sender).is_some());
        }
    }

    /// Convenience for appending one batch without positions.
    pub fn append_batch(&self, table: Table, batch: RecordBatch) -> Result<u64> {
        self.append(&[(table, batch)], &[])
    }

    /// The stored position of every input stream: where reading resumes.
    pub fn positions(&self) -> BTreeMap<String, u64> {
        lock(&self.state).positions.clone()
    }

    pub fn position(&self, stream: &str) -> Option<u64> {
        lock(&self.state).positions.get(stream).copied()
    }

    /// Publishes this node's positions of the streams starting with `prefix` (a consumer group's
    /// partitions, say) to the shared location, where the group's other nodes read them
    /// (`shared_positions`): several nodes consuming one group into one location agree on where each
    /// partition was stored up to, whatever their commits to the source did.
    pub async fn publish_positions(&self, group: &str, prefix: &str) -> Result<()> {
        let positions: BTreeMap<String, u64> = {
            let state = lock(&self.state);
            state
                .positions
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        let bytes =
            serde_json::to_vec(&positions).map_err(|e| StoreError::Internal(format!("positions encode: {e}")))?;
        self.location.put(&shared_positions_path(group, &self.node), bytes.into()).await
    }

    /// The highest position of every stream any node published for `group`.
    pub async fn shared_positions(&self, group: &str) -> Result<BTreeMap<String, u64>> {
        let mut merged: BTreeMap<String, u64> = BTreeMap::new();
        for object in self.location.list(&format!("_positions/groups/{}", group_key(group))).await? {
            let bytes = self.location.get(object.location.as_ref()).await?;
            let positions: BTreeMap<String, u64> = serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::PositionsCorrupt { path: object.location.to_string(), reason: e.to_string() }
            })?;
            for (stream, offset) in positions {
                let entry = merged.entry(stream).or_insert(offset);
                *entry = (*entry).max(offset);
            }
        }
        Ok(merged)
    }

    /// The segments and hot batches of `table` overlapping `range`. Hot batches are not yet filtered by
    /// time within a partition: `scan` does that; DataFusion does it with the pushed-down filter.
    pub fn snapshot(&self, table: Table, range: TimeRange) -> TableSnapshot {
        let state = lock(&self.state);
        let segments = state
            .catalog
            .get(&table)
            .map(|segments| {
                segments.values().filter(|s| range.overlaps(s.min_ts_micros, s.max_ts_micros)).cloned().collect()
            })
            .unwrap_or_default();
        let hot = state
            .hot
            .range((table, i64::MIN)..=(table, i64::MAX))
            .filter(|((_, hour), _)| range.overlaps(hour * MICROS_PER_HOUR, (hour + 1) * MICROS_PER_HOUR - 1))
            .flat_map(|(_, partition)| partition.batches.iter().map(|(_, batch)| batch.clone()))
            .collect();
        TableSnapshot { segments, hot }
    }

    /// Reads the rows of `table` in `range`, hot and sealed, with columns `projection` (indices into the
    /// table's schema). Row order is not defined.
    pub async fn scan(&self, table: Table, projection: Option<&[usize]>, range: TimeRange) -> Result<Vec<RecordBatch>> {
        // A compaction or retention pass may delete a segment between the snapshot and the read; the
        // second snapshot then names its replacement.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.scan_once(table, projection, range).await {
                Err(StoreError::ObjectStore(object_store::Error::NotFound { .. })) if attempt < 3 => continue,
                other => return other,
            }
        }
    }

    async fn scan_once(
        &self,
        table: Table,
        projection: Option<&[usize]>,
        range: TimeRange,
    ) -> Result<Vec<RecordBatch>> {
        let snapshot = self.snapshot(table, range);
        let mut out = Vec::new();
        for segment in &snapshot.segments {
            out.extend(read_segment(&self.location, table, &segment.path, projection, range).await?);
        }
        for batch in &snapshot.hot {
            let batch = filter_time(table, batch, range)?;
            if batch.num_rows() > 0 {
                out.push(project(&batch, projection)?);
            }
        }
        Ok(out)
    }

    /// The schema `scan` returns for a projection.
    pub fn scan_schema(&self, table: Table, projection: Option<&[usize]>) -> Result<arrow::datatypes::SchemaRef> {
        projected_schema(table, projection)
    }

    /// Flushes the hot partitions that the flush policy says are due.
    pub async fn flush_due(&self) -> Result<usize> {
        let policy = &self.config.flush;
        let due: Vec<(Table, i64)> = {
            let state = lock(&self.state);
            let mut due: Vec<(Table, i64)> = state
                .hot
                .iter()
                .filter(|(_, p)| {
                    p.rows >= policy.partition_rows_max
                        || p.bytes >= policy.partition_bytes_max
                        || p.first_append.elapsed() >= policy.partition_age_max
                })
                .map(|(key, _)| *key)
                .collect();
            if state.hot_bytes > policy.hot_bytes_max {
                let mut by_size: Vec<(&(Table, i64), &HotPartition)> = state.hot.iter().collect();
                by_size.sort_by_key(|(_, p)| std::cmp::Reverse(p.bytes));
                let mut remaining = state.hot_bytes;
                for (key, partition) in by_size {
                    if remaining <= policy.hot_bytes_max / 2 {
                        break;
                    }
                    remaining -= partition.bytes;
                    if !due.contains(key) {
                        due.push(*key);
                    }
                }
            }
            due
        };
        self.flush_partitions(&due).await
    }

    /// Flushes every hot partition.
    pub async fn flush_all(&self) -> Result<usize> {
        let all: Vec<(Table, i64)> = lock(&self.state).hot.keys().copied().collect();
        let flushed = self.flush_partitions(&all).await?;
        self.checkpoint_and_collect_wal().await?;
        Ok(flushed)
    }

    async fn flush_partitions(&self, partitions: &[(Table, i64)]) -> Result<usize> {
        let mut ledger = self.ledger.lock().await;
        let mut flushed = 0;
        for (table, hour) in partitions {
            if self.flush_partition(&mut ledger, *table, *hour).await? {
                flushed += 1;
            }
        }
        Ok(flushed)
    }

    async fn flush_partition(&self, ledger: &mut LedgerWriter, table: Table, hour: i64) -> Result<bool> {
        let (batches, seq_hi): (Vec<RecordBatch>, u64) = {
            let state = lock(&self.state);
            let Some(partition) = state.hot.get(&(table, hour)) else {
                return Ok(false);
            };
            let seq_hi = partition.batches.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
            (partition.batches.iter().map(|(_, batch)| batch.clone()).collect(), seq_hi)
        };
        if batches.is_empty() {
            return Ok(false);
        }
        let started = Instant::now();
        let encoded = tokio::task::spawn_blocking(move || encode_segment(table, &batches))
            .await
            .map_err(|e| StoreError::Internal(format!("segment encoding task failed: {e}")))??;
        let path = segment_path(table, hour, &self.node, ledger.next_seq());
        let bytes = encoded.bytes.len() as u64;
        self.location.put(&path, encoded.bytes.clone()).await?;
        let record = SegmentRecord {
            path: path.clone(),
            sha256: encoded.sha256.clone(),
            bytes,
            rows: encoded.rows,
            min_ts_micros: encoded.min_ts_micros,
            max_ts_micros: encoded.max_ts_micros,
            wal_seq_hi: seq_hi,
        };
        let signed = ledger.append(LedgerOp::Add, table.name(), &partition_dir(hour), Some(record), Vec::new()).await?;
        let mut state = lock(&self.state);
        apply_entry(&mut state.catalog, &signed);
        state.head = Some(ledger.head());
        let watermark = state.watermarks.entry((table, hour)).or_default();
        *watermark = (*watermark).max(seq_hi);
        if let Some(partition) = state.hot.get_mut(&(table, hour)) {
            partition.batches.retain(|(seq, _)| *seq > seq_hi);
            let (rows, bytes) = partition
                .batches
                .iter()
                .fold((0, 0), |(r, b), (_, batch)| (r + batch.num_rows(), b + batch.get_array_memory_size()));
            let freed = partition.bytes - bytes;
            partition.rows = rows;
            partition.bytes = bytes;
            partition.first_append = Instant::now();
            if partition.batches.is_empty() {
                state.hot.remove(&(table, hour));
            }
            state.hot_bytes -= freed;
        }
        tracing::debug!(table = %table, path, rows = encoded.rows, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "segment flushed");
        Ok(true)
    }

    /// Writes the positions checkpoint and deletes the WAL files whose frames are all in segments.
    async fn checkpoint_and_collect_wal(&self) -> Result<usize> {
        let (seq, positions, already) = {
            let wal = lock(&self.wal);
            let state = lock(&self.state);
            (wal.next_seq - 1, state.positions.clone(), state.positions_checkpoint_seq)
        };
        if seq > already {
            let checkpoint = PositionsCheckpoint { wal_seq: seq, positions };
            let json =
                serde_json::to_vec(&checkpoint).map_err(|e| StoreError::Internal(format!("positions encode: {e}")))?;
            self.location.put(&positions_path(&self.node), Bytes::from(json)).await?;
            lock(&self.state).positions_checkpoint_seq = seq;
        }
        let mut wal = lock(&self.wal);
        let state = lock(&self.state);
        let next_seq = wal.next_seq;
        let checkpoint_seq = state.positions_checkpoint_seq;
        wal.wal.collect_garbage(
            |table, hour| state.watermarks.get(&(table, hour)).copied().unwrap_or(0),
            checkpoint_seq,
            next_seq,
        )
    }

    /// Deletes segments whose newest row is older than the table's retention. Returns segments removed.
    pub async fn apply_retention(&self, now_micros: i64) -> Result<usize> {
        let mut ledger = self.ledger.lock().await;
        let mut removed_count = 0;
        for (table, age) in &self.config.retention {
            let cutoff = now_micros.saturating_sub(age.as_micros().min(i64::MAX as u128) as i64);
            let expired: BTreeMap<i64, Vec<SegmentInfo>> = {
                let state = lock(&self.state);
                let mut by_hour: BTreeMap<i64, Vec<SegmentInfo>> = BTreeMap::new();
                for segment in state.catalog.get(table).into_iter().flat_map(|s| s.values()) {
                    if segment.node == self.node && segment.max_ts_micros < cutoff {
                        by_hour.entry(segment.hour).or_default().push(segment.clone());
                    }
                }
                by_hour
            };
            for (hour, segments) in expired {
                let removed: Vec<RemovedSegment> = segments
                    .iter()
                    .map(|s| RemovedSegment { path: s.path.clone(), sha256: s.sha256.clone(), rows: s.rows })
                    .collect();
                let signed =
                    ledger.append(LedgerOp::Retention, table.name(), &partition_dir(hour), None, removed).await?;
                {
                    let mut state = lock(&self.state);
                    apply_entry(&mut state.catalog, &signed);
                    state.head = Some(ledger.head());
                }
                for segment in &segments {
                    self.location.delete(&segment.path).await?;
                }
                removed_count += segments.len();
            }
        }
        Ok(removed_count)
    }

    /// Merges small segments of this node's partitions. Returns how many segments were replaced.
    pub async fn compact(&self, now_micros: i64) -> Result<usize> {
        let policy = &self.config.compaction;
        let mut ledger = self.ledger.lock().await;
        let candidates: Vec<Vec<SegmentInfo>> = {
            let state = lock(&self.state);
            let mut groups: BTreeMap<(Table, i64), Vec<SegmentInfo>> = BTreeMap::new();
            for segments in state.catalog.values() {
                for segment in segments.values() {
                    if segment.node == self.node && segment.rows < policy.small_segment_rows_max {
                        groups.entry((segment.table, segment.hour)).or_default().push(segment.clone());
                    }
                }
            }
            let closed_before = now_micros - policy.closed_after.as_micros() as i64;
            groups
                .into_iter()
                .filter(|((_, hour), segments)| {
                    let closed = (hour + 1) * MICROS_PER_HOUR <= closed_before;
                    segments.len() >= policy.small_segments_min || (closed && segments.len() >= 2)
                })
                .map(|(_, segments)| segments)
                .collect()
        };
        let mut replaced = 0;
        for segments in candidates {
            let table = segments[0].table;
            let hour = segments[0].hour;
            let mut batches = Vec::new();
            for segment in &segments {
                batches.extend(read_segment(&self.location, table, &segment.path, None, TimeRange::ALL).await?);
            }
            let rows_in: u64 = segments.iter().map(|s| s.rows).sum();
            let encoded = tokio::task::spawn_blocking(move || encode_segment(table, &batches))
                .await
                .map_err(|e| StoreError::Internal(format!("compaction task failed: {e}")))??;
            assert_eq!(encoded.rows, rows_in, "compaction of {table} hour {hour} must keep every row");
            let path = segment_path(table, hour, &self.node, ledger.next_seq());
            let wal_seq_hi = lock(&self.state).watermarks.get(&(table, hour)).copied().unwrap_or(0);
            self.location.put(&path, encoded.bytes.clone()).await?;
            let record = SegmentRecord {
                path,
                sha256: encoded.sha256,
                bytes: encoded.bytes.len() as u64,
                rows: encoded.rows,
                min_ts_micros: encoded.min_ts_micros,
                max_ts_micros: encoded.max_ts_micros,
                wal_seq_hi,
            };
            let removed = segments
                .iter()
                .map(|s| RemovedSegment { path: s.path.clone(), sha256: s.sha256.clone(), rows: s.rows })
                .collect();
            let signed =
                ledger.append(LedgerOp::Compact, table.name(), &partition_dir(hour), Some(record), removed).await?;
            {
                let mut state = lock(&self.state);
                apply_entry(&mut state.catalog, &signed);
                state.head = Some(ledger.head());
            }
            for segment in &segments {
                self.location.delete(&segment.path).await?;
            }
            replaced += segments.len();
        }
        Ok(replaced)
    }

    /// One maintenance pass: flush what is due, checkpoint positions and collect the WAL; with
    /// `deep`, also retention and compaction.
    pub async fn maintain(&self, deep: bool) -> Result<MaintenanceReport> {
        let mut report = MaintenanceReport { segments_flushed: self.flush_due().await?, ..Default::default() };
        report.wal_files_deleted = self.checkpoint_and_collect_wal().await?;
        if deep {
            let now = now_micros();
            report.segments_expired = self.apply_retention(now).await?;
            report.segments_compacted = self.compact(now).await?;
        }
        Ok(report)
    }

    /// Background maintenance of a running process until `stop` completes: every `every`, full and old
    /// hot partitions are sealed and WAL files collected (`maintain(false)`); every `refresh_every`, when
    /// given, the segments that other processes sealed into the shared location become visible
    /// (`refresh`). Failures are logged and retried at the next turn.
    pub async fn maintain_until(
        self: Arc<Self>,
        every: Duration,
        refresh_every: Option<Duration>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut refreshed = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stop => return,
            }
            if let Err(e) = self.maintain(false).await {
                tracing::warn!(error = %e, "maintenance failed; retrying");
            }
            if refresh_every.is_some_and(|period| refreshed.elapsed() >= period) {
                refreshed = Instant::now();
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "reading the other processes' ledgers failed; retrying");
                }
            }
        }
    }

    /// Re-reads the other nodes' ledgers so that their new segments become visible to scans.
    pub async fn refresh(&self) -> Result<()> {
        let mut others = BTreeMap::new();
        load_other_nodes(&self.location, &self.node, &mut others).await?;
        let mut state = lock(&self.state);
        for (table, segments) in state.catalog.iter_mut() {
            segments.retain(|_, s| s.node == self.node);
            if let Some(theirs) = others.remove(table) {
                segments.extend(theirs);
            }
        }
        for (table, theirs) in others {
            state.catalog.insert(table, theirs);
        }
        Ok(())
    }

    /// This node's ledger head: the last entry's sequence number and hash.
    pub fn ledger_head(&self) -> LedgerHead {
        lock(&self.state).head.clone().expect("the head is set at open")
    }

    /// Every ledger entry of every node, as rows of `schema::ledger_schema`.
    pub async fn ledger_batch(&self) -> Result<RecordBatch> {
        let mut entries = Vec::new();
        for node in list_nodes(&self.location).await? {
            for (_, path, bytes) in read_entry_files(&self.location, &node).await? {
                match parse_entry_file(&bytes) {
                    Ok(signed) => entries.push(signed),
                    Err(reason) => tracing::warn!(path, reason, "unreadable ledger entry skipped"),
                }
            }
        }
        let ts: Vec<i64> = entries
            .iter()
            .map(|e| chrono::DateTime::parse_from_rfc3339(&e.entry.ts).map_or(0, |t| t.timestamp_micros()))
            .collect();
        let text = |f: &dyn Fn(&SignedEntry) -> Option<String>| -> ArrayRef {
            std::sync::Arc::new(entries.iter().map(f).collect::<StringArray>())
        };
        let columns: Vec<ArrayRef> = vec![
            std::sync::Arc::new(TimestampMicrosecondArray::from(ts).with_timezone(crate::schema::TIME_ZONE)),
            text(&|e| Some(e.entry.node.clone())),
            std::sync::Arc::new(entries.iter().map(|e| e.entry.seq as i64).collect::<Int64Array>()),
            text(&|e| Some(e.entry.op.name().to_string())),
            text(&|e| Some(e.entry.table.clone())),
            text(&|e| Some(e.entry.partition.clone())),
            text(&|e| e.entry.segment.as_ref().map(|s| s.path.clone())),
            text(&|e| e.entry.segment.as_ref().map(|s| s.sha256.clone())),
            std::sync::Arc::new(
                entries.iter().map(|e| e.entry.segment.as_ref().map(|s| s.rows as i64)).collect::<Int64Array>(),
            ),
            std::sync::Arc::new(
                entries
                    .iter()
                    .map(|e| e.entry.segment.as_ref().map(|s| s.min_ts_micros))
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone(crate::schema::TIME_ZONE),
            ),
            std::sync::Arc::new(
                entries
                    .iter()
                    .map(|e| e.entry.segment.as_ref().map(|s| s.max_ts_micros))
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone(crate::schema::TIME_ZONE),
            ),
            text(&|e| {
                (!e.entry.removed.is_empty())
                    .then(|| e.entry.removed.iter().map(|r| r.path.as_str()).collect::<Vec<_>>().join(","))
            }),
            text(&|e| Some(e.entry.prev_hash.clone())),
            text(&|e| Some(e.hash.clone())),
        ];
        debug_assert_eq!(ledger_schema().field(0).data_type(), &timestamp_type());
        Ok(RecordBatch::try_new(ledger_schema(), columns)?)
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

/// Segment counts per table from the ledgers alone, without opening the store (no lock, no WAL).
pub async fn catalog_stats(location: &Location) -> Result<BTreeMap<Table, TableStats>> {
    let mut catalog = BTreeMap::new();
    load_other_nodes(location, "", &mut catalog).await?;
    let mut stats: BTreeMap<Table, TableStats> = Table::ALL.iter().map(|t| (*t, TableStats::default())).collect();
    for (table, segments) in &catalog {
        let entry = stats.entry(*table).or_default();
        for segment in segments.values() {
            entry.segments += 1;
            entry.segment_rows += segment.rows;
            entry.segment_bytes += segment.bytes;
        }
    }
    Ok(stats)
}

fn insert_hot(state: &mut State, table: Table, hour: i64, seq: u64, batch: RecordBatch) {
    let bytes = batch.get_array_memory_size();
    let partition = state.hot.entry((table, hour)).or_insert_with(|| HotPartition {
        batches: Vec::new(),
        rows: 0,
        bytes: 0,
        first_append: Instant::now(),
    });
    partition.rows += batch.num_rows();
    partition.bytes += bytes;
    partition.batches.push((seq, batch));
    state.hot_bytes += bytes;
}

fn load_or_create_node_id(data_dir: &FsPath, wanted: Option<&str>) -> Result<String> {
    let path = data_dir.join("node.id");
    let stored = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let node = match (stored, wanted) {
        (Some(stored), Some(wanted)) if stored != wanted => {
            return Err(StoreError::BadLocation {
                location: data_dir.display().to_string(),
                reason: format!("data directory belongs to node {stored}, not {wanted}"),
            })
        }
        (Some(stored), _) => stored,
        (None, Some(wanted)) => wanted.to_string(),
        (None, None) => {
            let mut random = [0u8; 4];
            getrandom::fill(&mut random)
                .map_err(|e| StoreError::Internal(format!("no randomness for the node id: {e}")))?;
            format!("n{}", hex(&random))
        }
    };
    if !valid_node_id(&node) {
        return Err(StoreError::BadLocation {
            location: data_dir.display().to_string(),
            reason: format!("node id {node:?} must be 1-64 of a-z, 0-9, _ and -"),
        });
    }
    std::fs::write(&path, format!("{node}\n")).map_err(|e| StoreError::io(&path, e))?;
    Ok(node)
}

/// Adds the live segments of every other node's ledger to the catalog. Their chains are checked by
/// `verify`, not here: a damaged foreign ledger must not stop this node.
async fn load_other_nodes(
    location: &Location,
    own: &str,
    catalog: &mut BTreeMap<Table, BTreeMap<String, SegmentInfo>>,
) -> Result<()> {
    for node in list_nodes(location).await? {
        if node == own {
            continue;
        }
        for (seq, path, bytes) in read_entry_files(location, &node).await? {
            match parse_entry_file(&bytes) {
                Ok(signed) => apply_entry(catalog, &signed),
                Err(reason) => {
                    tracing::warn!(node, seq, path, reason, "unreadable ledger entry of another node skipped")
                }
            }
        }
    }
    Ok(())
}

/// Deletes this node's segment files that no live ledger entry records: written before a crash cut off
/// their ledger entry, or removed by an entry before a crash cut off the deletion.
async fn remove_unrecorded_segments(
    location: &Location,
    node: &str,
    catalog: &BTreeMap<Table, BTreeMap<String, SegmentInfo>>,
) -> Result<()> {
    for table in Table::ALL {
        for meta in location.list(table.name()).await? {
            let path = meta.location.to_string();
            let Some(name) = parse_segment_path(&path) else { continue };
            if name.node != node {
                continue;
            }
            if !catalog.get(&table).is_some_and(|segments| segments.contains_key(&path)) {
                tracing::warn!(path, "removing segment that no ledger entry records (left by a crash)");
                location.delete(&path).await?;
            }
        }
    }
    Ok(())
}

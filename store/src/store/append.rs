//! Appends: the schema check, the split by hour, the WAL frames of the append (one, or a group when the
//! rows do not fit one) fsynced, then the hot buffer and the positions, all under the WAL lock so that hot
//! batches are in sequence order.

use super::*;

impl Store {
    /// Payload bytes one append may encode to (`StoreError::FrameTooLarge` past it).
    pub fn frame_bytes_max(&self) -> usize {
        self.config.frame_bytes_max.min(crate::wal::FRAME_PAYLOAD_BYTES_MAX)
    }

    /// Appends batches to their tables together with input positions, atomically: after this returns
    /// `Ok`, the rows and positions are fsynced in the WAL and visible to scans; after an error or a crash
    /// before it returns, none of them is, whatever the size (rows that do not fit one frame go in a
    /// group of frames written together and replayed only whole). Blocks for one fsync: call it from a
    /// blocking thread in async code. Returns the WAL sequence number of the append (its last frame's).
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
            partitions.extend(parts.iter().map(|part| (*table, part.hour)));
            splits.push((*table, parts));
        }
        let mut frames = encode_append(batches, positions, self.frame_bytes_max())?;
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
        let first_seq = wal.next_seq;
        let key = wal.key.clone();
        let sealed: Vec<&[u8]> = frames.iter_mut().zip(first_seq..).map(|(frame, seq)| frame.seal(seq, &key)).collect();
        wal.wal.append_group(first_seq, &partitions, &sealed)?;
        // The rows are in the hot buffer under the group's last number: a segment that holds them covers
        // every frame of the group.
        let seq = first_seq + sealed.len() as u64 - 1;
        wal.next_seq = seq + 1;
        // Still under the WAL lock, so that hot batches are inserted in sequence order.
        let mut state = lock(&self.state);
        for (table, parts) in splits {
            insert_hot(&mut state, table, seq, parts);
        }
        for position in positions {
            state.positions.insert(position.stream.clone(), position.offset);
        }
        drop(state);
        drop(wal);
        self.deliver(seq, batches);
        Ok(seq)
    }

    /// Convenience for appending one batch without positions.
    pub fn append_batch(&self, table: Table, batch: RecordBatch) -> Result<u64> {
        self.append(&[(table, batch)], &[])
    }
}

/// Encodes an append as WAL frames that each fit `limit`: one when the rows fit, else runs of them
/// (zero-copy slices, halved until each fits) with the positions in the last, flagged as one group.
fn encode_append(batches: &[(Table, RecordBatch)], positions: &[Position], limit: usize) -> Result<Vec<UnsealedFrame>> {
    // Cut up front by the uncompressed size, so that a large append is not encoded whole only to be
    // refused: half the limit leaves room for IPC framing around incompressible text.
    let bytes: usize = batches.iter().map(|(_, batch)| batch.get_array_memory_size()).sum();
    let rows_max = batches.iter().map(|(_, batch)| batch.num_rows()).max().unwrap_or(0);
    let slices = bytes.div_ceil((limit / 2).max(1)).clamp(1, rows_max.max(1));
    let mut frames = Vec::with_capacity(slices);
    if slices == 1 {
        encode_fitting(batches, positions, limit, &mut frames)?;
    } else {
        let parts = slice_rows(batches, slices);
        let last = parts.len() - 1;
        for (index, part) in parts.iter().enumerate() {
            encode_fitting(part, if index == last { positions } else { &[] }, limit, &mut frames)?;
        }
    }
    let last = frames.len() - 1;
    if last > 0 {
        for (index, frame) in frames.iter_mut().enumerate() {
            let continues = if index < last { FLAG_CONTINUES } else { 0 };
            let continued = if index > 0 { FLAG_CONTINUED } else { 0 };
            frame.set_flags(continues | continued);
        }
    }
    Ok(frames)
}

/// One frame, or two halves of the rows when it does not fit (the size estimate is of uncompressed
/// buffers, which a slice may share with its neighbours).
fn encode_fitting(
    batches: &[(Table, RecordBatch)],
    positions: &[Position],
    limit: usize,
    frames: &mut Vec<UnsealedFrame>,
) -> Result<()> {
    match encode_unsealed(batches, positions, limit) {
        Ok(frame) => {
            frames.push(frame);
            Ok(())
        }
        Err(StoreError::FrameTooLarge { .. }) if batches.iter().any(|(_, batch)| batch.num_rows() > 1) => {
            let halves = slice_rows(batches, 2);
            encode_fitting(&halves[0], &[], limit, frames)?;
            encode_fitting(&halves[1], positions, limit, frames)
        }
        Err(e) => Err(e),
    }
}

/// Cuts every batch into `slices` runs of rows (zero-copy), slice by slice; empty batches are left out.
fn slice_rows(batches: &[(Table, RecordBatch)], slices: usize) -> Vec<Vec<(Table, RecordBatch)>> {
    (0..slices)
        .map(|index| {
            batches
                .iter()
                .filter_map(|(table, batch)| {
                    let per_slice = batch.num_rows().div_ceil(slices);
                    let start = (index * per_slice).min(batch.num_rows());
                    let length = per_slice.min(batch.num_rows() - start);
                    (length > 0).then(|| (*table, batch.slice(start, length)))
                })
                .collect()
        })
        .collect()
}

pub(super) fn schema_mismatch(table: Table, batch: &RecordBatch) -> Option<String> {
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

/// Splits a batch into parts of one hour each of its time column. Rows usually come in runs of one hour
/// (a file, a chunk or a stream in time order), so each run is a zero-copy slice and an hour may have
/// several parts; rows interleaved between hours in many short runs are gathered into one copy per hour.
pub(super) fn split_by_hour(table: Table, batch: &RecordBatch) -> Result<Vec<HourPart>> {
    let times = time_values(table, batch)?;
    if times.null_count() > 0 {
        return Err(StoreError::NullTime { table: table.name().into(), column: table.time_column().into() });
    }
    let mut runs: Vec<(i64, usize, usize)> = Vec::new();
    for (row, time) in times.values().iter().enumerate() {
        let hour = hour_of(*time);
        match runs.last_mut() {
            Some((last, _, length)) if *last == hour => *length += 1,
            _ => runs.push((hour, row, 1)),
        }
    }
    if runs.len() <= SLICED_RUNS_MIN.max(batch.num_rows() / ROWS_PER_SLICED_RUN) {
        // The slices share the batch's buffers: each stands for its rows' share of them, and the batch is
        // held in memory until the last of them is sealed.
        let (bytes, rows) = (batch.get_array_memory_size(), batch.num_rows().max(1));
        let held = Arc::new(bytes);
        return Ok(runs
            .into_iter()
            .map(|(hour, start, length)| HourPart {
                hour,
                batch: batch.slice(start, length),
                share: bytes * length / rows,
                held: held.clone(),
            })
            .collect());
    }
    let mut groups: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (hour, start, length) in runs {
        groups.entry(hour).or_default().extend(start as u32..(start + length) as u32);
    }
    groups
        .into_iter()
        .map(|(hour, rows)| {
            let batch = take_record_batch(batch, &UInt32Array::from(rows))?;
            let bytes = batch.get_array_memory_size();
            Ok(HourPart { hour, batch, share: bytes, held: Arc::new(bytes) })
        })
        .collect()
}

/// The rows of a batch that fall in one hour, and the memory they hold.
pub(super) struct HourPart {
    pub hour: i64,
    pub batch: RecordBatch,
    /// The rows' share of the buffers: what the partition is sized by when choosing what to seal.
    pub share: usize,
    /// The bytes of the buffers the rows are in, shared by the parts of one batch that are slices of it:
    /// what the hot buffer holds until the last of them is sealed.
    pub held: Arc<usize>,
}

/// A batch is cut into slices by hour when its runs of one hour are at most this many, or when they are
/// this long on average ...
const SLICED_RUNS_MIN: usize = 16;
/// ... rows; otherwise its rows are copied per hour, so that the hot buffer does not fill with tiny slices.
const ROWS_PER_SLICED_RUN: usize = 1024;

/// Puts the parts of one batch in the hot buffer under `seq`; the memory they hold counts once, however
/// many hours share it. Returns the rows put.
pub(super) fn insert_hot(state: &mut State, table: Table, seq: u64, parts: Vec<HourPart>) -> usize {
    let mut counted: Vec<Arc<usize>> = Vec::new();
    let mut rows = 0;
    for HourPart { hour, batch, share, held } in parts {
        if !counted.iter().any(|c| Arc::ptr_eq(c, &held)) {
            state.hot_bytes += *held;
            counted.push(held.clone());
        }
        rows += batch.num_rows();
        let partition = state.hot.entry((table, hour)).or_insert_with(|| HotPartition {
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
            first_append: Instant::now(),
        });
        partition.rows += batch.num_rows();
        partition.bytes += share;
        partition.batches.push(HotBatch { seq, batch, share, held });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{batch_with_ids, ids_of};

    const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

    #[test]
    fn a_batch_over_three_hours_splits_into_one_part_per_hour_without_losing_rows() {
        let ids: Vec<u64> = (0..90).collect();
        // Rows alternate between hours 0, 1 and 2, so each part is gathered from all over the batch.
        let batch = batch_with_ids(Table::Logs, &ids, |id| T0 + (id % 3) as i64 * MICROS_PER_HOUR + id as i64);
        let parts = split_by_hour(Table::Logs, &batch).unwrap();
        let hours: Vec<i64> = parts.iter().map(|part| part.hour).collect();
        let first = hour_of(T0);
        assert_eq!(hours, vec![first, first + 1, first + 2]);
        let mut all: Vec<u64> =
            parts.iter().flat_map(|part| ids_of(Table::Logs, std::slice::from_ref(&part.batch))).collect();
        all.sort_unstable();
        assert_eq!(all, ids);
        for part in &parts {
            let times = time_values(Table::Logs, &part.batch).unwrap();
            assert!(times.values().iter().all(|t| hour_of(*t) == part.hour));
            assert_eq!(*part.held, part.batch.get_array_memory_size(), "a copy holds its own buffers");
        }
    }

    #[test]
    fn runs_of_one_hour_are_sliced_without_a_copy_and_keep_their_rows() {
        // Two files' rows one after the other, each over an hour boundary: hours 0, 1, 0, 1 in four runs.
        let ids: Vec<u64> = (0..40).collect();
        let batch = batch_with_ids(Table::Logs, &ids, |id| T0 + ((id % 20) / 10) as i64 * MICROS_PER_HOUR + id as i64);
        let parts = split_by_hour(Table::Logs, &batch).unwrap();
        let first = hour_of(T0);
        assert_eq!(parts.iter().map(|part| part.hour - first).collect::<Vec<_>>(), vec![0, 1, 0, 1]);
        let all: Vec<u64> =
            parts.iter().flat_map(|part| ids_of(Table::Logs, std::slice::from_ref(&part.batch))).collect();
        assert_eq!(all, ids);
        for part in &parts {
            let (slice, whole) = (part.batch.column(0).to_data(), batch.column(0).to_data());
            let (at, start) = (slice.buffers()[0].as_ptr() as usize, whole.buffers()[0].as_ptr() as usize);
            assert!(at >= start && at < start + whole.buffers()[0].len(), "a slice of the batch's buffer, not a copy");
        }
        // The slices hold the batch once between them, and each is sized by its share of it.
        let whole = batch.get_array_memory_size();
        let shares: usize = parts.iter().map(|part| part.share).sum();
        assert!(shares <= whole && shares + parts.len() >= whole, "{shares} for a batch of {whole}");
        assert!(parts.iter().all(|part| Arc::ptr_eq(&part.held, &parts[0].held) && *part.held == whole));
    }

    #[test]
    fn a_batch_within_one_hour_is_not_copied() {
        let batch = batch_with_ids(Table::Logs, &[1, 2, 3], |id| T0 + id as i64);
        let parts = split_by_hour(Table::Logs, &batch).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].batch.column(0).to_data().buffers()[0].as_ptr(),
            batch.column(0).to_data().buffers()[0].as_ptr()
        );
    }

    #[test]
    fn a_batch_of_another_table_is_named_by_its_first_wrong_column() {
        let logs = batch_with_ids(Table::Logs, &[1], |id| T0 + id as i64);
        assert_eq!(schema_mismatch(Table::Logs, &logs), None);
        let reason = schema_mismatch(Table::Invocations, &logs).expect("logs rows are not invocations");
        assert!(reason.contains("columns") || reason.contains("column"), "{reason}");
    }
}

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
            partitions.extend(parts.iter().map(|(hour, _)| (*table, *hour)));
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

/// Splits a batch into one batch per hour of its time column.
pub(super) fn split_by_hour(table: Table, batch: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
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

pub(super) fn insert_hot(state: &mut State, table: Table, hour: i64, seq: u64, batch: RecordBatch) {
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
        let hours: Vec<i64> = parts.iter().map(|(hour, _)| *hour).collect();
        let first = hour_of(T0);
        assert_eq!(hours, vec![first, first + 1, first + 2]);
        let mut all: Vec<u64> =
            parts.iter().flat_map(|(_, part)| ids_of(Table::Logs, std::slice::from_ref(part))).collect();
        all.sort_unstable();
        assert_eq!(all, ids);
        for (hour, part) in &parts {
            let times = time_values(Table::Logs, part).unwrap();
            assert!(times.values().iter().all(|t| hour_of(*t) == *hour));
        }
    }

    #[test]
    fn a_batch_within_one_hour_is_not_copied() {
        let batch = batch_with_ids(Table::Logs, &[1, 2, 3], |id| T0 + id as i64);
        let parts = split_by_hour(Table::Logs, &batch).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(
            parts[0].1.column(0).to_data().buffers()[0].as_ptr(),
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

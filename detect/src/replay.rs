//! `replay`: stored history through an `Engine`, hour by hour in event-time order, for `coldtrail detect`
//! (the anomaly stream) and `coldtrail hunt` (the security detections). Alert ids depend only on what was
//! found, so a replay raises the ids the live detections raised.
//!
//! Memory holds one hour of one table at a time (its rows are sorted by time before they are pushed).

use arrow::array::RecordBatch;
use store::time::{hour_of, MICROS_PER_HOUR};
use store::{Store, Table, TimeRange};

use crate::alert::Alert;
use crate::engine::Engine;
use crate::error::DetectError;

/// Event time after the end of a replay that the anomaly stream is moved to, past its lateness, so
/// that its last minutes close.
const CLOSING_MARGIN_US: i64 = 60_000_000;

/// What a replay read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub hours: u64,
    pub rows: u64,
}

/// The oldest and newest event time stored in any of `tables`, from segment metadata and hot rows.
pub fn stored_span(store: &Store, tables: &[Table]) -> Option<(i64, i64)> {
    tables.iter().filter_map(|table| store.event_time_span(*table)).reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
}

/// Pushes the stored rows of the engine's tables with event time in `range` through `engine`, an hour
/// at a time (each table's rows of the hour sorted by time), then moves event time past the end and
/// closes every alert group. Every alert to store is handed to `alerts` as it is raised.
pub async fn replay(
    store: &Store,
    engine: &mut Engine,
    range: TimeRange,
    mut alerts: impl FnMut(Vec<Alert>) -> Result<(), DetectError>,
) -> Result<ReplayStats, DetectError> {
    let mut stats = ReplayStats::default();
    let tables = engine.tables();
    let mut hour_start = hour_of(range.start_micros) * MICROS_PER_HOUR;
    while hour_start < range.end_micros {
        let hour =
            TimeRange::new(hour_start.max(range.start_micros), (hour_start + MICROS_PER_HOUR).min(range.end_micros));
        for table in &tables {
            let batches = store.scan(*table, None, hour).await?;
            if let Some(batch) = sorted_by_time(&batches)? {
                stats.rows += batch.num_rows() as u64;
                alerts(engine.push(*table, &batch))?;
            }
        }
        stats.hours += 1;
        hour_start += MICROS_PER_HOUR;
    }
    alerts(engine.advance_to(range.end_micros.saturating_add(engine.lateness_us() + CLOSING_MARGIN_US)))?;
    alerts(engine.finish())?;
    Ok(stats)
}

/// The batches as one, sorted by event time (column 0); `None` when there are no rows.
fn sorted_by_time(batches: &[RecordBatch]) -> Result<Option<RecordBatch>, DetectError> {
    let Some(first) = batches.first() else { return Ok(None) };
    let sort = |e: arrow::error::ArrowError| DetectError::Internal(format!("sorting stored rows by time: {e}"));
    let batch = arrow::compute::concat_batches(&first.schema(), batches).map_err(sort)?;
    if batch.num_rows() == 0 {
        return Ok(None);
    }
    let order = arrow::compute::sort_to_indices(batch.column(0), None, None).map_err(sort)?;
    Ok(Some(arrow::compute::take_record_batch(&batch, &order).map_err(sort)?))
}

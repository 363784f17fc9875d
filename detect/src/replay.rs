//! Stored event time through an `Engine`, in one canonical order: the one way rows reach the detectors,
//! live (`runner`, once the watermark says a span of event time is complete) and replayed (`coldtrail
//! detect`, `coldtrail hunt`). Whatever order the rows were delivered and stored in, the detectors see
//! them in this order, so the alerts of one input are the same however it arrived.
//!
//! The order: minute by minute of event time; within a minute, the tables in `TABLE_ORDER`; within a
//! table, rows by event time, ties broken by the row's own identity (request id, event id, log stream
//! and message), never by where or when it was stored. After each minute with rows, and at the end of
//! each scored range, event time advances to the end of that minute, closing its windows.
//!
//! Only the hours that hold rows are read (`Store::stored_hours`). An hour is read at once when it holds
//! at most `READ_ROWS_MAX` rows of the engine's tables; a denser hour is read in spans of whole minutes
//! of at most that many rows each (counted from the time column alone first). So memory holds at most
//! `READ_ROWS_MAX` rows, or the rows of the densest single minute where one minute holds more: a minute
//! is the unit of the canonical order and is sorted as a whole.

use arrow::array::RecordBatch;
use arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
use store::time::{MICROS_PER_HOUR, MICROS_PER_MINUTE};
use store::{Store, Table, TimeRange};

use crate::alert::Alert;
use crate::engine::Engine;
use crate::error::DetectError;

/// The order in which the tables' rows of one minute are pushed: the control plane first (a deployment
/// and the invocations it changes, in the same minute), then invocations, then their log lines.
pub const TABLE_ORDER: [Table; 3] = [Table::Cloudtrail, Table::Invocations, Table::Logs];

/// Most rows (of all the engine's tables together) one read of `score_range` holds, unless a single
/// minute holds more. A row of `logs` takes a few hundred bytes in Arrow, held up to three times while
/// it is put in order (read, concatenated, sorted): about 100 MB per read.
pub const READ_ROWS_MAX: u64 = 100_000;

/// What a replay read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub hours: u64,
    pub rows: u64,
    /// Each read: the event time it covered and the WAL sequence number of the last append it included.
    pub reads: Vec<(TimeRange, u64)>,
}

/// The oldest and newest event time stored in any of `tables`, from segment metadata and hot rows.
pub fn stored_span(store: &Store, tables: &[Table]) -> Option<(i64, i64)> {
    tables.iter().filter_map(|table| store.event_time_span(*table)).reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
}

/// The end of the minute of the newest stored invocation before `until_us`: how far the anomaly stream
/// goes at the end of a bounded input (`Engine::set_stream_horizon`).
pub fn invocations_end(store: &Store, until_us: i64) -> Option<i64> {
    let (_, newest) = store.event_time_span(Table::Invocations)?;
    Some(minute_ceiling(newest.min(until_us.saturating_sub(1))))
}

/// The start of the minute that holds `ts_us`.
pub fn minute_floor(ts_us: i64) -> i64 {
    ts_us.div_euclid(MICROS_PER_MINUTE) * MICROS_PER_MINUTE
}

/// The end of the minute that holds `ts_us` (the start of the next).
pub fn minute_ceiling(ts_us: i64) -> i64 {
    minute_floor(ts_us).saturating_add(MICROS_PER_MINUTE)
}

/// Pushes the stored rows of the engine's tables in `range` through `engine` in the canonical order
/// (module doc), then moves event time to `range`'s end. `range` should start and end on minutes; a live
/// caller scores consecutive ranges, and the detectors then see exactly what one replay of the union
/// would show them. Every alert to store is handed to `alerts` as it is raised.
pub async fn score_range(
    store: &Store,
    engine: &mut Engine,
    range: TimeRange,
    alerts: impl FnMut(Vec<Alert>) -> Result<(), DetectError>,
) -> Result<ReplayStats, DetectError> {
    score_range_in_reads_of(store, engine, range, READ_ROWS_MAX, alerts).await
}

/// `score_range` with reads of at most `rows_max` rows (or one minute's).
///
/// The reads are made and put in order ahead, on a thread of their own (with a runtime of its own),
/// while this one pushes the read before through `engine`: reading and sorting one span overlaps
/// detecting on the last. The reader waits until its read is taken, so memory holds at most two reads.
pub async fn score_range_in_reads_of(
    store: &Store,
    engine: &mut Engine,
    range: TimeRange,
    rows_max: u64,
    mut alerts: impl FnMut(Vec<Alert>) -> Result<(), DetectError>,
) -> Result<ReplayStats, DetectError> {
    let mut stats = ReplayStats::default();
    let tables: Vec<Table> = TABLE_ORDER.into_iter().filter(|t| engine.tables().contains(t)).collect();
    if range.end_micros <= range.start_micros || tables.is_empty() {
        return Ok(stats);
    }
    std::thread::scope(|scope| {
        let (reads, taken) = std::sync::mpsc::sync_channel::<Result<Read, DetectError>>(0);
        let tables = &tables;
        std::thread::Builder::new()
            .name("detect-read".into())
            .spawn_scoped(scope, move || read_ahead(store, tables, range, rows_max, &reads))
            .map_err(|e| DetectError::Internal(format!("starting the reader of stored rows: {e}")))?;
        for read in taken {
            let read = read?;
            stats.hours += u64::from(read.first_of_hour);
            stats.reads.push((read.span, read.seq));
            stats.rows += read.sorted.iter().map(|(_, batch, _)| batch.num_rows() as u64).sum::<u64>();
            let mut sorted = read.sorted;
            push_by_minute(engine, &mut sorted, &mut alerts)?;
        }
        Ok::<(), DetectError>(())
    })?;
    alerts(engine.advance_to(range.end_micros))?;
    Ok(stats)
}

/// One read of `score_range`, in canonical order.
struct Read {
    span: TimeRange,
    /// The WAL sequence number of the last append it includes.
    seq: u64,
    /// Whether it is the first read of its hour.
    first_of_hour: bool,
    sorted: Vec<(Table, RecordBatch, usize)>,
}

/// The reader thread of `score_range_in_reads_of`: every read of `range`, in order, into `reads`, until
/// they are all sent, one fails (its error is sent), or the receiver is gone.
fn read_ahead(
    store: &Store,
    tables: &[Table],
    range: TimeRange,
    rows_max: u64,
    reads: &std::sync::mpsc::SyncSender<Result<Read, DetectError>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = reads.send(Err(DetectError::Internal(format!("a runtime for reading stored rows: {e}"))));
            return;
        }
    };
    let all = runtime.block_on(async {
        for hour in store.stored_hours(tables, range) {
            let start = (hour * MICROS_PER_HOUR).max(range.start_micros);
            let end = ((hour + 1) * MICROS_PER_HOUR).min(range.end_micros);
            if end <= start {
                continue;
            }
            for (at, span) in
                reads_of(store, tables, TimeRange::new(start, end), rows_max).await?.into_iter().enumerate()
            {
                let (seq, read) = store.scan_consistent(tables, span).await?;
                let mut sorted = Vec::with_capacity(read.len());
                for (table, batches) in read {
                    if let Some(batch) = canonical(table, &batches)? {
                        sorted.push((table, batch, 0usize));
                    }
                }
                if reads.send(Ok(Read { span, seq, first_of_hour: at == 0, sorted })).is_err() {
                    return Ok(());
                }
            }
        }
        Ok::<(), DetectError>(())
    });
    if let Err(e) = all {
        let _ = reads.send(Err(e));
    }
}

/// The spans `range` (within one hour, starting and ending on minutes) is read in: itself when the
/// segments and hot batches it overlaps hold at most `rows_max` rows, else consecutive spans of whole
/// minutes of at most `rows_max` rows each (a minute with more is a span of its own), counted from the
/// time column. Rows stored between the count and the reads only make a read larger.
async fn reads_of(
    store: &Store,
    tables: &[Table],
    range: TimeRange,
    rows_max: u64,
) -> Result<Vec<TimeRange>, DetectError> {
    let estimate: u64 = tables
        .iter()
        .map(|table| {
            let snapshot = store.snapshot(*table, range);
            let sealed: u64 = snapshot.segments.iter().map(|s| s.rows).sum();
            sealed + snapshot.hot.iter().map(|b| b.num_rows() as u64).sum::<u64>()
        })
        .sum();
    if estimate <= rows_max {
        return Ok(vec![range]);
    }
    let mut per_minute = std::collections::BTreeMap::<i64, u64>::new();
    for table in tables {
        for batch in store.scan(*table, Some(&[0]), range).await? {
            let Some(times) = batch.column(0).as_any().downcast_ref::<arrow::array::TimestampMicrosecondArray>() else {
                continue;
            };
            for ts in times.iter().flatten() {
                *per_minute.entry(minute_floor(ts)).or_default() += 1;
            }
        }
    }
    let mut spans = Vec::new();
    let (mut from, mut rows) = (range.start_micros, 0u64);
    for (minute, count) in per_minute {
        if rows > 0 && rows + count > rows_max && minute > from {
            spans.push(TimeRange::new(from, minute));
            (from, rows) = (minute, 0);
        }
        rows += count;
    }
    spans.push(TimeRange::new(from, range.end_micros));
    Ok(spans)
}

/// Pushes the sorted rows of one read, minute by minute, tables in order; advances to the end of each
/// minute that had rows.
fn push_by_minute(
    engine: &mut Engine,
    sorted: &mut [(Table, RecordBatch, usize)],
    alerts: &mut impl FnMut(Vec<Alert>) -> Result<(), DetectError>,
) -> Result<(), DetectError> {
    loop {
        // The earliest minute any table still has rows of.
        let next = sorted
            .iter()
            .filter(|(_, batch, offset)| *offset < batch.num_rows())
            .map(|(_, batch, offset)| minute_floor(time_at(batch, *offset)))
            .min();
        let Some(minute) = next else { return Ok(()) };
        let minute_end = minute + MICROS_PER_MINUTE;
        let mut raised = Vec::new();
        for (table, batch, offset) in sorted.iter_mut() {
            let mut until = *offset;
            while until < batch.num_rows() && time_at(batch, until) < minute_end {
                until += 1;
            }
            if until > *offset {
                raised.extend(engine.push(*table, &batch.slice(*offset, until - *offset)));
                *offset = until;
            }
        }
        raised.extend(engine.advance_to(minute_end));
        alerts(raised)?;
    }
}

fn time_at(batch: &RecordBatch, row: usize) -> i64 {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
        .map_or(i64::MIN, |times| times.value(row))
}

/// The columns that order rows of one event time: the row's own identity, never its provenance.
fn tie_breakers(table: Table) -> &'static [&'static str] {
    match table {
        Table::Invocations => &["request_id", "function_name", "log_stream"],
        Table::Cloudtrail => &["event_id", "event_name", "principal_arn"],
        Table::Logs => &["log_stream", "request_id", "message"],
        _ => &[],
    }
}

/// The batches as one, in canonical order; `None` when there are no rows.
fn canonical(table: Table, batches: &[RecordBatch]) -> Result<Option<RecordBatch>, DetectError> {
    let Some(first) = batches.first() else { return Ok(None) };
    let sort = |e: arrow::error::ArrowError| DetectError::Internal(format!("ordering stored rows: {e}"));
    let batch = arrow::compute::concat_batches(&first.schema(), batches).map_err(sort)?;
    if batch.num_rows() == 0 {
        return Ok(None);
    }
    let mut columns = vec![SortColumn { values: batch.column(0).clone(), options: None }];
    for name in tie_breakers(table) {
        if let Ok(index) = batch.schema().index_of(name) {
            columns.push(SortColumn { values: batch.column(index).clone(), options: None });
        }
    }
    let order = lexsort_to_indices(&columns, None).map_err(sort)?;
    Ok(Some(take_record_batch(&batch, &order).map_err(sort)?))
}

/// Replays `range` and drops its alerts: the engine learns from stored history (`hunt --learn-from`).
/// Ends at the minute `range` ends in, so that a replay from there scores each minute once.
pub async fn learn(store: &Store, engine: &mut Engine, range: TimeRange) -> Result<(), DetectError> {
    let range = TimeRange::new(range.start_micros, minute_floor(range.end_micros));
    if range.start_micros < range.end_micros {
        replay(store, engine, range, |_| Ok(())).await?;
    }
    Ok(())
}

/// Replays stored history: `score_range` over `range` widened to whole minutes, then closes every alert
/// group (`coldtrail detect`, `coldtrail hunt`, and a bounded ingest at its end).
pub async fn replay(
    store: &Store,
    engine: &mut Engine,
    range: TimeRange,
    mut alerts: impl FnMut(Vec<Alert>) -> Result<(), DetectError>,
) -> Result<ReplayStats, DetectError> {
    let range = TimeRange::new(minute_floor(range.start_micros), minute_ceiling(range.end_micros.saturating_sub(1)));
    engine.set_stream_horizon(invocations_end(store, range.end_micros));
    let stats = score_range(store, engine, range, &mut alerts).await?;
    engine.set_stream_horizon(None);
    alerts(engine.finish())?;
    Ok(stats)
}

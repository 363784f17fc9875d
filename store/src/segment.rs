//! Sealed segments: one Parquet file of one table and one hour, zstd-compressed, with row-group
//! statistics, readable by any Parquet reader. Row groups follow one another in time; inside one, the
//! rows of some tables are ordered by log stream first (`cluster_column`).

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, Scalar, TimestampMicrosecondArray};
use arrow::compute::{and, filter_record_batch, interleave, kernels::cmp};
use arrow::datatypes::DataType;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowColumnWriter};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;

use crate::error::{Result, StoreError};
use crate::ledger::sha256_hex;
use crate::location::Location;
use crate::schema::{Table, METADATA_SCHEMA_VERSION, METADATA_TABLE, SCHEMA_VERSION, TIME_ZONE};
use crate::time::TimeRange;

/// Rows per Parquet row group: small enough that time-range statistics prune and that a lookup, once
/// bloom filters have found the row group, decodes few ids (a random id's page cannot be found by page
/// statistics); large enough to compress.
pub const ROW_GROUP_ROWS_MAX: usize = 64 * 1024;

/// False-positive rate of the lookup columns' bloom filters: each false positive costs a lookup the
/// decoding of a row group's ids.
pub const BLOOM_FILTER_FPP: f64 = 0.001;

/// Rows per data page at most (and 1 MiB, Parquet's default): what a point lookup decodes per column
/// once bloom filters have found the row group and the page index the page.
pub const DATA_PAGE_ROWS_MAX: usize = 4 * 1024;

/// Bytes of a data page of a distinct id (`unique_columns`) before compression, at most: 1 Ki ids of
/// 32 to 40 characters pass it, so their pages are a quarter of `DATA_PAGE_ROWS_MAX`.
pub const ID_PAGE_BYTES_MAX: usize = 32 * 1024;
/// Bytes of a data page of a log line's message (`wide_text_columns`) before compression, at most: 1 Ki
/// messages of 64 bytes or more pass it (the writer checks every 1 Ki values), so a page of messages
/// holds about 1 Ki rows where a longer one would be as many bytes as 4 Ki ids.
pub const WIDE_TEXT_PAGE_BYTES_MAX: usize = 64 * 1024;

/// A segment encoded in memory, ready to be put into the location.
#[derive(Debug, Clone)]
pub struct EncodedSegment {
    pub bytes: Bytes,
    pub rows: u64,
    pub min_ts_micros: i64,
    pub max_ts_micros: i64,
    pub sha256: String,
}

/// The rows of `batches` in the order a segment holds them: the rows of each row group are the next
/// `ROW_GROUP_ROWS_MAX` rows in time order (so row groups follow one another in time, and a time range
/// prunes them), ordered inside the row group by the table's `cluster_column` and then time, rows of
/// equal key and time in their order. The batch itself when it is one batch already in that order,
/// else the order in which to take rows from the batches (`interleave`). Each column of each row group
/// is taken on its own when it is encoded, so no sorted copy of the whole partition is ever made (a
/// concatenation, then a `take` by the sorted indices, copied every row twice: a tenth of an ingest's
/// sealing time, and its page faults).
enum SegmentOrder<'a> {
    InOrder(&'a RecordBatch),
    Interleaved { batches: Vec<&'a RecordBatch>, order: Vec<(usize, usize)> },
}

impl<'a> SegmentOrder<'a> {
    fn of(table: Table, batches: &'a [RecordBatch]) -> Result<(SegmentOrder<'a>, Option<(i64, i64)>)> {
        let times: Vec<&[i64]> =
            batches.iter().map(|b| time_values(table, b).map(|t| &t.values()[..])).collect::<Result<_>>()?;
        let in_order = |t: &[i64]| t.windows(2).all(|w| w[0] <= w[1]);
        let nonempty: Vec<usize> = (0..batches.len()).filter(|b| !times[*b].is_empty()).collect();
        if let [only] = nonempty[..] {
            if cluster_column(table).is_none() && in_order(times[only]) {
                let t = times[only];
                return Ok((SegmentOrder::InOrder(&batches[only]), Some((t[0], t[t.len() - 1]))));
            }
        }
        let mut order: Vec<(usize, usize)> =
            times.iter().enumerate().flat_map(|(b, t)| (0..t.len()).map(move |row| (b, row))).collect();
        order.sort_by_key(|&(b, row)| times[b][row]);
        let bounds = match (order.first(), order.last()) {
            (Some(&(b0, r0)), Some(&(b1, r1))) => Some((times[b0][r0], times[b1][r1])),
            _ => None,
        };
        if let Some(column) = cluster_column(table) {
            let keys = cluster_keys(table, column, batches)?;
            let mut keyed = Vec::with_capacity(ROW_GROUP_ROWS_MAX.min(order.len()));
            for row_group in order.chunks_mut(ROW_GROUP_ROWS_MAX) {
                // Unstable but exact: ties of key and time are ordered by their place in the input,
                // which is the order the time sort left them in.
                keyed.clear();
                keyed.extend(row_group.iter().map(|&(b, row)| (keys[b][row], times[b][row], b, row)));
                keyed.sort_unstable();
                for (slot, &(_, _, b, row)) in row_group.iter_mut().zip(&keyed) {
                    *slot = (b, row);
                }
            }
            if let [only] = nonempty[..] {
                if order.iter().enumerate().all(|(at, &(b, row))| b == only && row == at) {
                    return Ok((SegmentOrder::InOrder(&batches[only]), bounds));
                }
            }
        }
        Ok((SegmentOrder::Interleaved { batches: batches.iter().collect(), order }, bounds))
    }

    fn rows(&self) -> usize {
        match self {
            SegmentOrder::InOrder(batch) => batch.num_rows(),
            SegmentOrder::Interleaved { order, .. } => order.len(),
        }
    }

    /// Column `column` of the sorted rows `rows`.
    fn column(&self, column: usize, rows: std::ops::Range<usize>) -> Result<ArrayRef> {
        match self {
            SegmentOrder::InOrder(batch) => Ok(batch.column(column).slice(rows.start, rows.len())),
            SegmentOrder::Interleaved { batches, order } => {
                let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(column).as_ref()).collect();
                Ok(interleave(&arrays, &order[rows])?)
            }
        }
    }
}

/// The column that orders the rows inside each row group of a segment of `table`, before time.
/// Analysts look up an execution environment's rows (`environment()`, or `WHERE log_stream = …`), and
/// a row group of an hour holds some rows of nearly every busy environment: in time order those rows
/// are spread over all its pages, so such a lookup decoded nearly every page of the columns it reads.
/// Ordered by log stream, an environment's rows of a row group are one run in a page or two, which the
/// page index finds by the pages' min and max (and a log stream's function repeats along it). The row
/// groups themselves keep following time, so time ranges prune them as before. One column only: a
/// second one is ordered only inside the first's runs, and a page that spans several runs has a min and
/// max of the second that rule nothing out.
pub fn cluster_column(table: Table) -> Option<&'static str> {
    match table {
        Table::Invocations | Table::Logs => Some("log_stream"),
        _ => None,
    }
}

/// Each row's rank in the order of the values of the string column `name` (nulls first).
fn cluster_keys(table: Table, name: &str, batches: &[RecordBatch]) -> Result<Vec<Vec<u32>>> {
    let column = table.schema().index_of(name)?;
    // Each distinct value numbered as it is first met (0 is null), then ranked by value.
    let mut distinct = Distinct::default();
    let mut keys: Vec<Vec<u32>> =
        batches.iter().map(|batch| distinct.ids_of(batch.column(column).as_ref())).collect::<Result<_>>()?;
    let rank = distinct.ranks();
    for key in keys.iter_mut().flatten() {
        *key = rank[*key as usize];
    }
    Ok(keys)
}

/// The distinct strings of a column, numbered from 1 as they are first met (0 is null).
#[derive(Default)]
struct Distinct<'a> {
    ids: foldhash::HashMap<&'a str, u32>,
    values: Vec<&'a str>,
}

impl<'a> Distinct<'a> {
    fn id(&mut self, value: &'a str) -> u32 {
        let next = self.values.len() as u32 + 1;
        let id = *self.ids.entry(value).or_insert(next);
        if id == next {
            self.values.push(value);
        }
        id
    }

    /// The id of each row's value of a string or dictionary-of-string column.
    fn ids_of(&mut self, array: &'a dyn Array) -> Result<Vec<u32>> {
        use arrow::array::AsArray;
        use arrow::datatypes::Int32Type;
        let mut of_strings = |values: &mut dyn Iterator<Item = Option<&'a str>>| -> Vec<u32> {
            // Rows of one value come in runs (a log stream's lines): the last value is checked first.
            let mut last: Option<(&'a str, u32)> = None;
            values
                .map(|value| match (value, last) {
                    (None, _) => 0,
                    (Some(v), Some((l, id))) if v == l => id,
                    (Some(v), _) => {
                        let id = self.id(v);
                        last = Some((v, id));
                        id
                    }
                })
                .collect()
        };
        match array.data_type() {
            DataType::Utf8 => Ok(of_strings(&mut array.as_string::<i32>().iter())),
            DataType::Utf8View => Ok(of_strings(&mut array.as_string_view().iter())),
            DataType::Dictionary(key, value) if **key == DataType::Int32 && **value == DataType::Utf8 => {
                let dictionary = array.as_dictionary::<Int32Type>();
                let value_ids = of_strings(&mut dictionary.values().as_string::<i32>().iter());
                Ok(dictionary.keys().iter().map(|key| key.map_or(0, |key| value_ids[key as usize])).collect())
            }
            other => Err(StoreError::Internal(format!("a segment is not ordered by a column of type {other}"))),
        }
    }

    /// The rank of each id by value (ids are indices; null, id 0, ranks first).
    fn ranks(&self) -> Vec<u32> {
        let mut by_value: Vec<u32> = (1..=self.values.len() as u32).collect();
        by_value.sort_unstable_by_key(|id| self.values[*id as usize - 1]);
        let mut rank = vec![0u32; self.values.len() + 1];
        for (at, id) in by_value.into_iter().enumerate() {
            rank[id as usize] = at as u32 + 1;
        }
        rank
    }
}

/// The time column of a batch of `table`. The schema check at append makes it present and non-null.
pub fn time_values(table: Table, batch: &RecordBatch) -> Result<&TimestampMicrosecondArray> {
    batch
        .column(0)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| StoreError::Internal(format!("time column of {table} is not a microsecond timestamp")))
}

/// Identifier columns that analysts look up one value of (`WHERE request_id = ...`): each gets a Parquet
/// bloom filter per row group, so that a lookup skips the row groups that cannot hold the value.
pub fn lookup_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Invocations => &["request_id", "trace_id", "log_stream", "source_ip", "principal", "function_name"],
        Table::Logs => &["request_id", "log_stream"],
        Table::Spans => &["trace_id", "span_id", "request_id"],
        Table::Cloudtrail => &["event_id", "access_key_id", "principal_arn", "source_ip"],
        Table::Alerts | Table::AlertDeliveries => &["alert_id"],
        Table::Incidents => &["incident_id"],
        Table::DeadLetters | Table::QueryAudit => &[],
    }
}

/// Columns written without a dictionary, and the encoding of their values (`None`: plain): those whose
/// values are nearly all distinct, where a dictionary only adds a page that every read of one row
/// must decode whole: a point lookup read 1.8 MB of them for one row (Parquet falls back to plain
/// pages only once a dictionary passes 1 MiB). Times are written as deltas (a segment's rows follow
/// time, along each log stream's run where a row group is ordered by stream, so the deltas are small), measurements plain, and the ids that
/// name one row of their table plain. Other columns keep Parquet's choice: a log stream's dictionary,
/// for one, is a fifth of its plain pages.
fn plain_columns(table: Table) -> impl Iterator<Item = (String, Option<Encoding>)> {
    let schema = table.schema();
    let by_type: Vec<(String, Option<Encoding>)> = schema
        .fields()
        .iter()
        .filter_map(|field| match field.data_type() {
            DataType::Timestamp(..) => Some((field.name().clone(), Some(Encoding::DELTA_BINARY_PACKED))),
            DataType::Float64 => Some((field.name().clone(), None)),
            _ => None,
        })
        .collect();
    by_type.into_iter().chain(unique_columns(table).iter().map(|c| (c.to_string(), None)))
}

/// The ids that name one row of their table: nearly every value distinct, and the widest columns a
/// lookup or a timeline decodes.
fn unique_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Invocations => &["request_id", "trace_id"],
        Table::Spans => &["span_id"],
        Table::Cloudtrail => &["event_id"],
        Table::Alerts => &["alert_id"],
        _ => &[],
    }
}

/// Text columns far wider than the rest of their row: a log line's message.
fn wide_text_columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Logs => &["message"],
        _ => &[],
    }
}

/// The order of a row group's rows, as Parquet records it: the cluster column (nulls first), then time.
fn sorting_columns(table: Table) -> Vec<SortingColumn> {
    let cluster = cluster_column(table).and_then(|name| table.schema().index_of(name).ok());
    cluster
        .map(|column| SortingColumn { column_idx: column as i32, descending: false, nulls_first: true })
        .into_iter()
        .chain(std::iter::once(SortingColumn { column_idx: 0, descending: false, nulls_first: false }))
        .collect()
}

/// The writer properties of a segment of `table`.
fn writer_properties(table: Table) -> WriterProperties {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("zstd level 3 is valid")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS_MAX))
        // Small pages: a lookup of one row decodes one page of each column, found by the page index.
        .set_data_page_row_count_limit(DATA_PAGE_ROWS_MAX)
        .set_sorting_columns(Some(sorting_columns(table)))
        .set_key_value_metadata(Some(vec![
            KeyValue::new(METADATA_SCHEMA_VERSION.to_string(), SCHEMA_VERSION.to_string()),
            KeyValue::new(METADATA_TABLE.to_string(), table.name().to_string()),
        ]))
        .set_created_by(format!("coldtrail {}", env!("CARGO_PKG_VERSION")));
    let properties = plain_columns(table).fold(properties, |properties, (column, encoding)| {
        let path = ColumnPath::from(column);
        let properties = properties.set_column_dictionary_enabled(path.clone(), false);
        match encoding {
            Some(encoding) => properties.set_column_encoding(path, encoding),
            None => properties,
        }
    });
    // A distinct id's pages hold about 1 Ki rows (the writer checks a page's size every 1 Ki values), not
    // 4 Ki: a query that picks rows scattered over a row group (a principal's timeline, an address's
    // invocations) decodes the pages that hold them, and ids are most of those bytes.
    let properties = unique_columns(table).iter().fold(properties, |properties, column| {
        properties.set_column_data_page_size_limit(ColumnPath::from(*column), ID_PAGE_BYTES_MAX)
    });
    // A log line's message is a row group's widest column by far: an execution environment's lines
    // (`environment()`, clustered as a run of each row group) or a request's decode a page of about 1 Ki
    // messages around them, not 4 Ki.
    let properties = wide_text_columns(table).iter().fold(properties, |properties, column| {
        properties.set_column_data_page_size_limit(ColumnPath::from(*column), WIDE_TEXT_PAGE_BYTES_MAX)
    });
    lookup_columns(table)
        .iter()
        .fold(properties, |properties, column| {
            let path = ColumnPath::from(*column);
            // Sized for a row group of distinct values (Parquet's default is a million, a filter of
            // 1.8 MB per row group and column at this rate, zeroed, filled and then folded down).
            properties
                .set_column_bloom_filter_enabled(path.clone(), true)
                .set_column_bloom_filter_fpp(path.clone(), BLOOM_FILTER_FPP)
                .set_column_bloom_filter_max_ndv(path, ROW_GROUP_ROWS_MAX as u64)
        })
        .build()
}

/// Puts the rows of one partition in a segment's order (`SegmentOrder`) and encodes them as one Parquet
/// file, on one thread.
pub fn encode_segment(table: Table, batches: &[RecordBatch]) -> Result<EncodedSegment> {
    encode_segment_on(table, batches, 1)
}

/// One column (its Parquet leaves) of one row group: what one thread sorts and encodes at a time.
struct ColumnJob {
    row_group: usize,
    field: usize,
    writers: Vec<ArrowColumnWriter>,
}

/// `encode_segment` on `threads` threads: each column of each row group is taken in the segment's
/// order and encoded (Parquet encoding, statistics, bloom filter, zstd) as a job of its own, the
/// largest columns first, and the chunks are written in order. The file is the one `ArrowWriter`
/// writes from the ordered rows, byte for byte, whatever the number of threads; a seal that has the cores to itself
/// (the last partition of an ingest, one partition of a quiet server) takes them all.
pub fn encode_segment_on(table: Table, batches: &[RecordBatch], threads: usize) -> Result<EncodedSegment> {
    let schema = table.schema();
    let (sorted, bounds) = SegmentOrder::of(table, batches)?;
    let (min_ts_micros, max_ts_micros) = bounds.unwrap_or((0, 0));
    let rows = sorted.rows();
    let bytes_in: usize = batches.iter().map(RecordBatch::get_array_memory_size).sum();
    let mut buffer = Vec::with_capacity(bytes_in / 4 + 4096);
    let writer = ArrowWriter::try_new(&mut buffer, schema.clone(), Some(writer_properties(table)))?;
    let (mut file, factory) = writer.into_serialized_writer()?;
    // The Parquet leaves of each field, in order (one each for this crate's flat schemas).
    let leaves: Vec<usize> = schema
        .fields()
        .iter()
        .map(|field| file.schema_descr().columns().iter().filter(|c| c.path().parts()[0] == *field.name()).count())
        .collect();
    // Largest columns first, so that the last job to end is a small one.
    let mut by_size: Vec<usize> = (0..schema.fields().len()).collect();
    let size = |f: usize| batches.iter().map(|b| b.column(f).get_array_memory_size()).sum::<usize>();
    by_size.sort_by_key(|f| std::cmp::Reverse(size(*f)));
    let row_groups = rows.div_ceil(ROW_GROUP_ROWS_MAX);
    let mut jobs = Vec::with_capacity(row_groups * leaves.len());
    for row_group in 0..row_groups {
        let mut writers = factory.create_column_writers(row_group)?.into_iter();
        let mut of_field: Vec<Option<Vec<ArrowColumnWriter>>> =
            leaves.iter().map(|n| Some(writers.by_ref().take(*n).collect())).collect();
        for field in &by_size {
            let writers = of_field[*field].take().expect("each field once");
            jobs.push(ColumnJob { row_group, field: *field, writers });
        }
    }
    // Taken from the front: row group by row group, largest column first.
    jobs.reverse();
    let jobs = std::sync::Mutex::new(jobs);
    let encode = |job: ColumnJob| -> Result<(usize, usize, Vec<ArrowColumnChunk>)> {
        let start = job.row_group * ROW_GROUP_ROWS_MAX;
        let array = sorted.column(job.field, start..rows.min(start + ROW_GROUP_ROWS_MAX))?;
        let mut chunks = Vec::with_capacity(job.writers.len());
        let leaves = compute_leaves(schema.field(job.field), &array)?;
        for (mut writer, leaf) in job.writers.into_iter().zip(&leaves) {
            writer.write(leaf)?;
            chunks.push(writer.close()?);
        }
        Ok((job.row_group, job.field, chunks))
    };
    let work = || -> Result<Chunks> {
        let mut done = Vec::new();
        loop {
            let job = jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
            match job {
                Some(job) => done.push(encode(job)?),
                None => return Ok(done),
            }
        }
    };
    let helpers = threads.max(1).min(row_groups * leaves.len()).saturating_sub(1);
    type Chunks = Vec<(usize, usize, Vec<ArrowColumnChunk>)>;
    let mut encoded = std::thread::scope(|scope| -> Result<Chunks> {
        let handles: Vec<_> = (0..helpers).map(|_| scope.spawn(work)).collect();
        let mut encoded = work()?;
        for handle in handles {
            encoded
                .extend(handle.join().map_err(|_| StoreError::Internal("segment encoding thread panicked".into()))??);
        }
        Ok(encoded)
    })?;
    encoded.sort_unstable_by_key(|(row_group, field, _)| (*row_group, *field));
    let mut encoded = encoded.into_iter().peekable();
    for row_group in 0..row_groups {
        let mut writer = file.next_row_group()?;
        while let Some((_, _, chunks)) = encoded.next_if(|(g, _, _)| *g == row_group) {
            for chunk in chunks {
                chunk.append_to_row_group(&mut writer)?;
            }
        }
        writer.close()?;
    }
    file.close()?;
    let sha256 = sha256_hex(&buffer);
    Ok(EncodedSegment { bytes: Bytes::from(buffer), rows: rows as u64, min_ts_micros, max_ts_micros, sha256 })
}

/// Keeps the rows of `batch` whose time (column 0) lies in `range`.
pub fn filter_time(table: Table, batch: &RecordBatch, range: TimeRange) -> Result<RecordBatch> {
    if range == TimeRange::ALL {
        return Ok(batch.clone());
    }
    let times = time_values(table, batch)?;
    let scalar = |micros: i64| Scalar::new(TimestampMicrosecondArray::from(vec![micros]).with_timezone(TIME_ZONE));
    let (start, end) = (scalar(range.start_micros), scalar(range.end_micros));
    let mask: BooleanArray = and(&cmp::gt_eq(times, &start)?, &cmp::lt(times, &end)?)?;
    Ok(filter_record_batch(batch, &mask)?)
}

/// Reads the rows of one segment in `range`, pruning row groups by their time statistics, with the
/// table's columns `projection` (indices into the table schema; `None` for all).
///
/// The whole object is fetched: segments are bounded by the flush policy, and the SQL engine reads
/// segments with its own ranged Parquet reader.
pub async fn read_segment(
    location: &Location,
    table: Table,
    path: &str,
    projection: Option<&[usize]>,
    range: TimeRange,
) -> Result<Vec<RecordBatch>> {
    let bytes = location.get(path).await?;
    let path = path.to_string();
    let projection = projection.map(<[usize]>::to_vec);
    tokio::task::spawn_blocking(move || decode_segment(table, &path, bytes, projection.as_deref(), range))
        .await
        .map_err(|e| StoreError::Internal(format!("segment decoding task failed: {e}")))?
}

/// Decodes the rows of a segment's bytes in `range` with columns `projection`.
pub fn decode_segment(
    table: Table,
    path: &str,
    bytes: Bytes,
    projection: Option<&[usize]>,
    range: TimeRange,
) -> Result<Vec<RecordBatch>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| StoreError::SegmentCorrupt { path: path.into(), reason: e.to_string() })?;
    // A segment of an older schema version holds a prefix of the current columns (`schema::upgrade`).
    let file_width = builder.schema().fields().len();
    if !crate::schema::is_older_version_of(builder.schema(), table) {
        return Err(StoreError::SegmentCorrupt {
            path: path.into(),
            reason: format!("schema is not a schema of {table}"),
        });
    }
    let row_groups: Vec<usize> = builder
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .filter(|(_, row_group)| match row_group.column(0).statistics() {
            Some(Statistics::Int64(stats)) => match (stats.min_opt(), stats.max_opt()) {
                (Some(min), Some(max)) => range.overlaps(*min, *max),
                _ => true,
            },
            _ => true,
        })
        .map(|(idx, _)| idx)
        .collect();
    let requested: Vec<usize> =
        projection.map_or_else(|| (0..table.schema().fields().len()).collect(), <[usize]>::to_vec);
    // The time column is always read, to filter on it; the columns the file lacks are not read.
    let mut read: Vec<usize> = requested.iter().copied().filter(|c| *c < file_width).collect();
    read.push(0);
    read.sort_unstable();
    read.dedup();
    let mask = ProjectionMask::roots(builder.parquet_schema(), read.iter().copied());
    let reader = builder.with_row_groups(row_groups).with_projection(mask).build()?;
    let batches = reader.collect::<std::result::Result<Vec<RecordBatch>, _>>()?;
    let schema = projected_schema(table, projection)?;
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        // The reader returns the columns read in file order; the requested order is mapped onto it.
        let batch = filter_time(table, &batch, range)?;
        let columns = requested
            .iter()
            .zip(schema.fields())
            .map(|(c, field)| match read.binary_search(c) {
                Ok(at) => Arc::clone(batch.column(at)),
                Err(_) => arrow::array::new_null_array(field.data_type(), batch.num_rows()),
            })
            .collect();
        out.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(out)
}

/// Projects a hot batch (full table schema) the same way `read_segment` projects a segment.
pub fn project(batch: &RecordBatch, projection: Option<&[usize]>) -> Result<RecordBatch> {
    match projection {
        Some(columns) => Ok(batch.project(columns)?),
        None => Ok(batch.clone()),
    }
}

/// The schema of a projection of `table`.
pub fn projected_schema(table: Table, projection: Option<&[usize]>) -> Result<arrow::datatypes::SchemaRef> {
    match projection {
        Some(columns) => Ok(Arc::new(table.schema().project(columns)?)),
        None => Ok(table.schema()),
    }
}

#[cfg(test)]
mod tests {
    use parquet::file::properties::ReaderProperties;
    use parquet::file::reader::FileReader;
    use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};

    use super::*;
    use crate::fixtures::{batch_with_ids, ids_of};

    #[test]
    fn a_segment_of_several_batches_is_sorted_by_time_keeping_the_order_of_equal_times() {
        let times = [5, 1, 3, 1, 4];
        let first = batch_with_ids(Table::Invocations, &[0, 1, 2], |id| times[id as usize]);
        let second = batch_with_ids(Table::Invocations, &[3, 4], |id| times[id as usize]);
        let encoded = encode_segment(Table::Invocations, &[first, second.slice(0, 2)]).unwrap();
        assert_eq!((encoded.rows, encoded.min_ts_micros, encoded.max_ts_micros), (5, 1, 5));
        let batches = decode_segment(Table::Invocations, "s", encoded.bytes, None, TimeRange::ALL).unwrap();
        assert_eq!(ids_of(Table::Invocations, &batches), [1, 3, 2, 4, 0]);
        // One batch in order is written as it is; a slice of one reads its own rows.
        let sorted = batch_with_ids(Table::Invocations, &[7, 8, 9], |id| id as i64);
        let encoded = encode_segment(Table::Invocations, &[sorted.slice(1, 2)]).unwrap();
        let batches = decode_segment(Table::Invocations, "s", encoded.bytes, None, TimeRange::ALL).unwrap();
        assert_eq!(ids_of(Table::Invocations, &batches), [8, 9]);
    }

    /// A batch of `table` whose every column holds values of its type, repeated and distinct, with nulls
    /// where the column takes them, at the times `time_of` gives.
    fn varied_batch(table: Table, ids: std::ops::Range<u64>, time_of: impl Fn(u64) -> i64) -> RecordBatch {
        use arrow::array::*;
        use arrow::datatypes::Int32Type;
        let ids: Vec<u64> = ids.collect();
        let base = batch_with_ids(table, &ids, &time_of);
        let schema = table.schema();
        let columns = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(c, field)| -> ArrayRef {
                let null = |id: u64| field.is_nullable() && (id * 7 + c as u64).is_multiple_of(11);
                let text = |id: u64| format!("{}-{}-{}", field.name(), id % (13 + c as u64), id / 1000);
                match field.data_type() {
                    _ if c == 0 || field.name() == crate::fixtures::id_column(table) => Arc::clone(base.column(c)),
                    DataType::Utf8 => {
                        Arc::new(ids.iter().map(|id| (!null(*id)).then(|| text(*id))).collect::<StringArray>())
                    }
                    DataType::Binary => Arc::new(
                        ids.iter().map(|id| (!null(*id)).then(|| text(*id).into_bytes())).collect::<BinaryArray>(),
                    ),
                    DataType::Dictionary(..) => Arc::new(
                        ids.iter()
                            .map(|id| (!null(*id)).then(|| text(*id)))
                            .collect::<Vec<_>>()
                            .iter()
                            .map(Option::as_deref)
                            .collect::<DictionaryArray<Int32Type>>(),
                    ),
                    DataType::Int64 => {
                        Arc::new(ids.iter().map(|id| (!null(*id)).then_some(*id as i64 * 31)).collect::<Int64Array>())
                    }
                    DataType::Int32 => {
                        Arc::new(ids.iter().map(|id| (!null(*id)).then_some((id % 977) as i32)).collect::<Int32Array>())
                    }
                    DataType::Float64 => Arc::new(
                        ids.iter().map(|id| (!null(*id)).then_some(*id as f64 / 7.0)).collect::<Float64Array>(),
                    ),
                    DataType::Boolean => {
                        Arc::new(ids.iter().map(|id| (!null(*id)).then_some(id % 3 == 0)).collect::<BooleanArray>())
                    }
                    DataType::Timestamp(..) => Arc::new(
                        ids.iter()
                            .map(|id| (!null(*id)).then(|| time_of(*id) + 5))
                            .collect::<TimestampMicrosecondArray>()
                            .with_timezone(TIME_ZONE),
                    ),
                    other => panic!("no varied values for {other}"),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn a_segment_encoded_on_several_threads_is_the_file_one_writer_writes_from_the_sorted_rows() {
        // Three batches whose times interleave (and repeat), over three row groups and a partial one.
        let time_of = |id: u64| 1_700_000_000_000_000 + ((id * 7_919) % 50_021) as i64 * 1_000;
        for table in [Table::Invocations, Table::Logs, Table::Spans, Table::Cloudtrail, Table::Alerts] {
            let batches = [
                varied_batch(table, 0..90_000, time_of),
                varied_batch(table, 90_000..150_000, time_of),
                varied_batch(table, 150_000..210_001, time_of),
            ];
            let sorted = {
                let (order, _) = SegmentOrder::of(table, &batches).unwrap();
                let SegmentOrder::Interleaved { batches, order } = order else {
                    panic!("three batches are interleaved")
                };
                arrow::compute::interleave_record_batch(&batches, &order).unwrap()
            };
            let mut expected = Vec::new();
            let mut writer =
                ArrowWriter::try_new(&mut expected, table.schema(), Some(writer_properties(table))).unwrap();
            writer.write(&sorted).unwrap();
            writer.close().unwrap();
            let times = time_values(table, &sorted).unwrap();
            let bounds = (arrow::compute::min(times).unwrap(), arrow::compute::max(times).unwrap());
            for threads in [1, 2, 3] {
                let encoded = encode_segment_on(table, &batches, threads).unwrap();
                assert!(encoded.bytes[..] == expected[..], "{table} on {threads} threads");
                assert_eq!(encoded.rows, 210_001);
                assert_eq!((encoded.min_ts_micros, encoded.max_ts_micros), bounds);
            }
            // One batch already in the order of a segment is encoded from itself, as one writer writes
            // it: whole row groups of a segment, or, without cluster columns, any rows in time order.
            let rows = if cluster_column(table).is_none() { 10..70_010 } else { 0..2 * ROW_GROUP_ROWS_MAX };
            let in_order = sorted.slice(rows.start, rows.len());
            let mut expected = Vec::new();
            let mut writer =
                ArrowWriter::try_new(&mut expected, table.schema(), Some(writer_properties(table))).unwrap();
            writer.write(&in_order).unwrap();
            writer.close().unwrap();
            let batches = [in_order];
            assert!(matches!(SegmentOrder::of(table, &batches).unwrap().0, SegmentOrder::InOrder(_)), "{table}");
            let encoded = encode_segment_on(table, &batches, 2).unwrap();
            assert!(encoded.bytes[..] == expected[..], "{table}: one batch in order");
        }
        // No rows: an empty file of the table, as before.
        let empty = encode_segment_on(Table::Logs, &[], 2).unwrap();
        assert_eq!((empty.rows, empty.min_ts_micros, empty.max_ts_micros), (0, 0, 0));
        let read = decode_segment(Table::Logs, "s", empty.bytes, None, TimeRange::ALL).unwrap();
        assert_eq!(read.iter().map(RecordBatch::num_rows).sum::<usize>(), 0);
    }

    /// The (log stream, time) of every row of `batches` of `table`, and a text of the whole row (every
    /// column) to compare rows by.
    fn keyed_rows(table: Table, batches: &[RecordBatch]) -> Vec<((Option<String>, i64), String)> {
        let batch = arrow::compute::concat_batches(&table.schema(), batches).unwrap();
        let text = |name: &str| {
            let column = arrow::compute::cast(batch.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
            let column = column.as_any().downcast_ref::<arrow::array::StringArray>().unwrap().clone();
            (0..batch.num_rows()).map(move |row| column.is_valid(row).then(|| column.value(row).to_string()))
        };
        let options = arrow::util::display::FormatOptions::default();
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        let times = time_values(table, &batch).unwrap();
        text("log_stream")
            .enumerate()
            .map(|(row, stream)| {
                let whole = formatters.iter().map(|f| f.value(row).to_string()).collect::<Vec<_>>().join("|");
                ((stream, times.value(row)), whole)
            })
            .collect()
    }

    #[test]
    fn a_row_groups_rows_are_ordered_by_log_stream_and_row_groups_follow_time() {
        let time_of = |id: u64| 1_700_000_000_000_000 + ((id * 7_919) % 50_021) as i64 * 1_000;
        for table in [Table::Invocations, Table::Logs] {
            let batches = [varied_batch(table, 0..70_000, time_of), varied_batch(table, 70_000..150_000, time_of)];
            let encoded = encode_segment_on(table, &batches, 2).unwrap();
            let reader = SerializedFileReader::new_with_options(
                encoded.bytes.clone(),
                ReadOptionsBuilder::new().with_page_index().build(),
            )
            .unwrap();
            let metadata = reader.metadata();
            assert_eq!(metadata.num_row_groups(), 3, "{table}");
            let read = decode_segment(table, "s", encoded.bytes.clone(), None, TimeRange::ALL).unwrap();
            let rows = keyed_rows(table, &read);
            // The same rows.
            let mut stored: Vec<&String> = rows.iter().map(|(_, whole)| whole).collect();
            let input = keyed_rows(table, &batches);
            let mut expected: Vec<&String> = input.iter().map(|(_, whole)| whole).collect();
            stored.sort_unstable();
            expected.sort_unstable();
            assert!(stored == expected, "{table}: the rows stored are the rows given");
            // Each row group holds the next rows in time, ordered by log stream and time.
            let mut start = 0;
            let mut last_max = i64::MIN;
            let mut runs = 0;
            for row_group in metadata.row_groups() {
                let group = &rows[start..start + row_group.num_rows() as usize];
                assert!(group.windows(2).all(|w| w[0].0 <= w[1].0), "{table}: a row group out of order");
                let (min, max) =
                    (group.iter().map(|r| r.0 .1).min().unwrap(), group.iter().map(|r| r.0 .1).max().unwrap());
                assert!(min >= last_max, "{table}: row groups overlap in time");
                last_max = max;
                runs += group.windows(2).filter(|w| w[0].0 .0 != w[1].0 .0).count() + 1;
                start += group.len();
            }
            // A log stream's rows of a row group are found in a page or two by the page index.
            let stream_column = table.schema().index_of("log_stream").unwrap();
            let (group, stream) = (1, rows[ROW_GROUP_ROWS_MAX + 30_000].0 .0.clone().unwrap());
            let index = &metadata.column_index().unwrap()[group][stream_column];
            let parquet::file::page_index::column_index::ColumnIndexMetaData::BYTE_ARRAY(index) = index else {
                panic!("{table}: log_stream has no page index")
            };
            let pages = (0..index.num_pages() as usize)
                .filter(|page| {
                    let (min, max) = (index.min_value(*page), index.max_value(*page));
                    min.zip(max).is_some_and(|(min, max)| min <= stream.as_bytes() && stream.as_bytes() <= max)
                })
                .count();
            let holding = rows[ROW_GROUP_ROWS_MAX..2 * ROW_GROUP_ROWS_MAX]
                .iter()
                .filter(|r| r.0 .0.as_deref() == Some(stream.as_str()))
                .count();
            assert!(holding > 1 && pages <= 2, "{table}: {stream} ({holding} rows) in {pages} pages");
            assert!(runs < rows.len() / 10, "{table}: {runs} runs of a log stream");
        }
    }

    #[test]
    fn a_segment_of_an_older_schema_version_reads_with_nulls_for_the_newer_columns() {
        // An `alerts` segment of schema version 1: every column but `entities`.
        let batch = batch_with_ids(Table::Alerts, &[1, 2], |i| 1_000_000 * i as i64);
        let version_1 = batch.project(&(0..18).collect::<Vec<_>>()).unwrap();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, version_1.schema(), None).unwrap();
        writer.write(&version_1).unwrap();
        writer.close().unwrap();
        let bytes = Bytes::from(bytes);
        let read = decode_segment(Table::Alerts, "old.parquet", bytes.clone(), None, TimeRange::ALL).unwrap();
        assert_eq!(read[0].schema(), Table::Alerts.schema());
        assert_eq!(read[0].column(18).null_count(), 2);
        assert_eq!(read[0].column(1), batch.column(1));
        let projected = decode_segment(Table::Alerts, "old.parquet", bytes, Some(&[18, 1]), TimeRange::ALL).unwrap();
        assert_eq!((projected[0].num_columns(), projected[0].column(0).null_count()), (2, 2));
        assert_eq!(projected[0].column(1), batch.column(1));
        // A file of another table is refused.
        let logs = batch_with_ids(Table::Logs, &[1], |_| 0);
        let mut other = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut other, logs.schema(), None).unwrap();
        writer.write(&logs).unwrap();
        writer.close().unwrap();
        let error = decode_segment(Table::Alerts, "x.parquet", Bytes::from(other), None, TimeRange::ALL).unwrap_err();
        assert!(matches!(error, StoreError::SegmentCorrupt { .. }), "{error}");
    }

    #[test]
    fn every_lookup_column_exists_in_its_table() {
        for table in Table::ALL {
            for column in lookup_columns(table) {
                assert!(table.schema().field_with_name(column).is_ok(), "{table} has no column {column}");
            }
        }
    }

    #[test]
    fn ids_times_and_measurements_are_written_without_a_dictionary_that_a_lookup_would_decode() {
        let ids: Vec<u64> = (0..20_000).collect();
        let batch = batch_with_ids(Table::Invocations, &ids, |id| 1_700_000_000_000_000 + 37 * id as i64);
        let segment = encode_segment(Table::Invocations, std::slice::from_ref(&batch)).unwrap();
        let reader = SerializedFileReader::new(segment.bytes.clone()).unwrap();
        let row_group = reader.metadata().row_group(0);
        let chunk = |name: &str| row_group.column(Table::Invocations.schema().index_of(name).unwrap());
        for name in ["request_id", "trace_id", "ts", "end_ts", "duration_ms"] {
            assert!(chunk(name).dictionary_page_offset().is_none(), "{name} has a dictionary page");
        }
        for name in ["ts", "end_ts"] {
            assert!(chunk(name).encodings().any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED), "{name}");
        }
        assert!(chunk("function_name").dictionary_page_offset().is_some(), "repeated names keep their dictionary");
        let read = decode_segment(Table::Invocations, "s", segment.bytes, None, TimeRange::ALL).unwrap();
        assert_eq!(arrow::compute::concat_batches(&Table::Invocations.schema(), &read).unwrap(), batch);
    }

    #[test]
    fn a_distinct_ids_pages_hold_a_quarter_of_the_rows_of_the_other_columns_pages() {
        use arrow::array::StringArray;
        let ids: Vec<u64> = (0..20_000).collect();
        let mut batch = batch_with_ids(Table::Invocations, &ids, |id| 1_700_000_000_000_000 + 37 * id as i64);
        let schema = Table::Invocations.schema();
        let mut columns = batch.columns().to_vec();
        let uuid = |id: u64| {
            format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                id * 2_654_435_761,
                id % 65_521,
                id % 4_093,
                id % 4_091,
                id * 40_503
            )
        };
        columns[schema.index_of("request_id").unwrap()] =
            Arc::new(StringArray::from_iter_values(ids.iter().map(|id| uuid(*id))));
        columns[schema.index_of("trace_id").unwrap()] = Arc::new(StringArray::from_iter_values(
            ids.iter().map(|id| format!("1-{:08x}-{:024x}", id / 300, id * 977)),
        ));
        batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let segment = encode_segment(Table::Invocations, std::slice::from_ref(&batch)).unwrap();
        let page_rows = page_rows_of(&segment.bytes, Table::Invocations);
        let largest_page = |name: &str| page_rows(name).into_iter().max().unwrap();
        for name in ["request_id", "trace_id"] {
            // The writer checks a page's size once per 1 Ki values of each piece it is given, so a page
            // may hold a little more than 1 Ki ids, never the 4 Ki rows of the other columns' pages.
            let pages = page_rows(name).len();
            assert!(largest_page(name) <= 2 * 1_024 && ids.len() / pages <= 1_100, "{name}: {pages} pages");
        }
        for name in ["ts", "function_name", "duration_ms"] {
            assert_eq!(largest_page(name), DATA_PAGE_ROWS_MAX as i64, "{name}");
        }
        let read = decode_segment(Table::Invocations, "s", segment.bytes, None, TimeRange::ALL).unwrap();
        assert_eq!(arrow::compute::concat_batches(&schema, &read).unwrap(), batch);
    }

    /// The rows of each data page of a column of a segment's first row group, by the page index.
    fn page_rows_of(segment: &bytes::Bytes, table: Table) -> impl Fn(&str) -> Vec<i64> {
        let reader = SerializedFileReader::new_with_options(
            segment.clone(),
            ReadOptionsBuilder::new().with_page_index().build(),
        )
        .unwrap();
        let metadata = reader.metadata();
        let rows = metadata.row_group(0).num_rows();
        let offsets = metadata.offset_index().expect("a page index")[0].clone();
        move |name| {
            let pages = offsets[table.schema().index_of(name).unwrap()].page_locations();
            let starts: Vec<i64> = pages.iter().map(|p| p.first_row_index).chain([rows]).collect();
            starts.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    #[test]
    fn a_log_lines_messages_pages_hold_a_quarter_of_the_rows_of_the_other_columns_pages() {
        use arrow::array::{AsArray, StringArray};
        let ids: Vec<u64> = (0..20_000).collect();
        let batch = batch_with_ids(Table::Logs, &ids, |id| 1_700_000_000_000_000 + 37 * id as i64);
        let schema = Table::Logs.schema();
        let mut columns = batch.columns().to_vec();
        // Lines of 100 to 300 bytes, as a function logs them.
        columns[schema.index_of("message").unwrap()] = Arc::new(StringArray::from_iter_values(ids.iter().map(|id| {
            format!("{id} connect ECONNREFUSED 10.0.0.1:5432 {}", "x".repeat(60 + (*id as usize * 7) % 200))
        })));
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let segment = encode_segment(Table::Logs, std::slice::from_ref(&batch)).unwrap();
        let page_rows = page_rows_of(&segment.bytes, Table::Logs);
        let largest_page = |name: &str| page_rows(name).into_iter().max().unwrap();
        // Past the dictionary's first megabyte (pages of its keys, 4 Ki rows each), the writer writes the
        // messages themselves, in pages of about 1 Ki.
        let sizes = page_rows("message");
        assert!(
            sizes.iter().filter(|rows| **rows > 1_100).count() <= 2 && sizes.len() >= 15,
            "message: pages of {sizes:?} rows"
        );
        for name in ["ts", "log_stream", "ingest_position"] {
            assert_eq!(largest_page(name), DATA_PAGE_ROWS_MAX as i64, "{name}");
        }
        let read = decode_segment(Table::Logs, "s", segment.bytes, None, TimeRange::ALL).unwrap();
        let read = arrow::compute::concat_batches(&schema, &read).unwrap();
        let messages = |b: &RecordBatch| {
            let mut all: Vec<String> = b
                .column(schema.index_of("message").unwrap())
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect();
            all.sort();
            all
        };
        assert_eq!(messages(&read), messages(&batch));
    }

    #[test]
    fn request_ids_get_bloom_filters_that_answer_lookups() {
        let ids: Vec<u64> = (0..50_000).collect();
        let batch = batch_with_ids(Table::Invocations, &ids, |id| 1_700_000_000_000_000 + id as i64);
        let segment = encode_segment(Table::Invocations, &[batch]).unwrap();
        let options = ReadOptionsBuilder::new()
            .with_reader_properties(ReaderProperties::builder().set_read_bloom_filter(true).build())
            .build();
        let reader = SerializedFileReader::new_with_options(segment.bytes.clone(), options).unwrap();
        let row_group = reader.get_row_group(0).unwrap();
        let column_idx = Table::Invocations.schema().index_of("request_id").unwrap();
        let filter = row_group.get_column_bloom_filter(column_idx).expect("request_id has a bloom filter");
        assert!(ids.iter().all(|id| filter.check(id.to_string().as_str())));
        let false_positives = (100_000..110_000u64).filter(|id| filter.check(id.to_string().as_str())).count();
        assert!(false_positives < 300, "{false_positives} false positives in 10,000 absent ids");
        let status_idx = Table::Invocations.schema().index_of("status").unwrap();
        assert!(row_group.get_column_bloom_filter(status_idx).is_none());
    }
}

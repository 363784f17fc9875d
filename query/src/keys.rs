//! Which segments can hold a looked-up key, answered from memory.
//!
//! A point lookup (`WHERE request_id = '…'`, a trace id, an event id) has no time bound, so every
//! segment of the table is a candidate, and DataFusion's Parquet reader would open each one to read its
//! bloom filters: at 56 segments that was 40 ms of a 42 ms lookup, and it grows with the table. The
//! bloom filters a segment was written with (`store::segment::lookup_columns`, one per row group) are
//! read once per segment and column and kept here, so a lookup skips, without any IO, every segment
//! whose filters say the key is not in it. Segments are immutable under their names, so an entry never
//! goes stale; the cache is bounded in bytes and drops the least recently used entries past it.
//! Inside a row group, filters of each data page, made here from the column's values, narrow a lookup
//! to the pages that may hold its key (a `RowSelection`).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use bytes::Bytes;
use datafusion::common::ScalarValue;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::logical_expr::utils::{disjunction, split_binary, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::future::BoxFuture;
use futures::StreamExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::bloom_filter::Sbbf;
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use store::Table;

/// Bytes of filters kept at most. An id column whose row groups' page positions `serve` makes when
/// it starts takes about 3 bytes per stored row, another id's bloom filters about 2 (Parquet sizes
/// them for `store::segment::BLOOM_FILTER_FPP`), and a column of few values per row group (a log
/// stream, an address, a principal) little: Parquet folds its filters to their size. 100M invocations
/// looked up by request id and by trace id take about 510 MB.
pub const KEY_FILTER_CACHE_BYTES: usize = 1024 * 1024 * 1024;
/// Segments whose filters are read at once when a lookup finds them missing.
const LOADS_IN_FLIGHT: usize = 8;
/// Row groups whose page filters one lookup makes at most (see [`SegmentKeys::load_pages`]).
const PAGE_FILTER_ROW_GROUPS_MAX: usize = 8;

/// One conjunct of a scan's filters that pins rows to literals of lookup columns: `column = 'v'`, `'v' =
/// column`, `column IN ('v', …)`, or a disjunction of those over lookup columns (`request_id IN (…) OR
/// log_stream IN (…)`: a row may match through any of them). A segment's bloom filters can rule out
/// each term on its own.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The terms of the disjunction, in order.
    terms: Vec<Expr>,
    /// The column and values of each term, in the same order.
    pub keys: Keys,
}

impl Lookup {
    /// The disjunction of the terms that `may` (one flag per term, as [`SegmentKeys::may_hold`] answers)
    /// keeps: over a segment whose filters rule out the other terms, it keeps the same rows as the whole
    /// disjunction (a bloom filter has no false negatives). `None` when it keeps none.
    pub fn terms_that_may_hold(&self, may: &[bool]) -> Option<Expr> {
        disjunction(self.terms.iter().zip(may).filter(|(_, may)| **may).map(|(term, _)| term.clone()))
    }

    /// The whole disjunction.
    pub fn expr(&self) -> Expr {
        disjunction(self.terms.iter().cloned()).expect("a lookup has a term")
    }
}

/// Every conjunct of `filters` that is a lookup of keys (see [`Lookup`]), in order.
pub fn lookups(filters: &[Expr], table: Table) -> Vec<Lookup> {
    let columns = store::segment::lookup_columns(table);
    filters.iter().flat_map(|f| split_conjunction(f)).filter_map(|conjunct| lookup_of(conjunct, columns)).collect()
}

/// Whether `filter` is, as a whole, a lookup of keys: the scan can apply it exactly, segment by segment.
pub fn is_lookup(filter: &Expr, table: Table) -> bool {
    lookup_of(filter, store::segment::lookup_columns(table)).is_some()
}

fn lookup_of(expr: &Expr, columns: &[&'static str]) -> Option<Lookup> {
    let terms: Vec<Expr> = split_binary(expr, Operator::Or).into_iter().cloned().collect();
    let keys = terms.iter().map(|term| key_of(term, columns)).collect::<Option<Keys>>()?;
    Some(Lookup { terms, keys })
}

/// Values of lookup columns, any of which a row must have.
pub type Keys = Vec<(&'static str, Vec<String>)>;

/// The column and values of one term of a lookup: `column = 'v'`, `'v' = column` or `column IN ('v', …)`.
fn key_of(expr: &Expr, columns: &[&'static str]) -> Option<(&'static str, Vec<String>)> {
    let column_of = |expr: &Expr| match expr {
        Expr::Column(column) => columns.iter().copied().find(|c| *c == column.name),
        _ => None,
    };
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => match (column_of(left), column_of(right)) {
            (Some(column), None) => text(right).map(|v| (column, vec![v])),
            (None, Some(column)) => text(left).map(|v| (column, vec![v])),
            _ => None,
        },
        Expr::InList(list) if !list.negated => {
            let column = column_of(&list.expr)?;
            let values: Vec<String> = list.list.iter().map(text).collect::<Option<_>>()?;
            (!values.is_empty()).then_some((column, values))
        }
        _ => None,
    }
}

/// A text literal's value.
fn text(expr: &Expr) -> Option<String> {
    fn of(value: &ScalarValue) -> Option<String> {
        match value {
            ScalarValue::Utf8(Some(v)) | ScalarValue::Utf8View(Some(v)) | ScalarValue::LargeUtf8(Some(v)) => {
                Some(v.clone())
            }
            ScalarValue::Dictionary(_, inner) => of(inner),
            _ => None,
        }
    }
    match expr {
        Expr::Literal(value, _) => of(value),
        _ => None,
    }
}

/// What a segment's bloom filters say of a lookup's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentMay {
    /// For each term, whether the segment may hold one of its values.
    pub terms: Vec<bool>,
    /// For each row group, which of its rows may hold a value of any term; `None` when the filters
    /// held do not say for every row group and term (the Parquet reader then reads them itself).
    pub row_groups: Option<Vec<Rows>>,
}

/// Which rows of one row group may hold a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rows {
    None,
    All,
    /// The rows of these ranges (in order, apart, within the row group), of `total`.
    Ranges {
        ranges: Vec<Range<usize>>,
        total: usize,
    },
}

impl Rows {
    /// Whether any row may.
    pub fn any(&self) -> bool {
        !matches!(self, Rows::None)
    }

    /// Rows that one or the other may hold.
    pub fn or(self, other: Rows) -> Rows {
        match (self, other) {
            (Rows::All, _) | (_, Rows::All) => Rows::All,
            (Rows::None, rows) | (rows, Rows::None) => rows,
            (Rows::Ranges { ranges: a, total }, Rows::Ranges { ranges: b, .. }) => {
                let mut all: Vec<Range<usize>> = a.into_iter().chain(b).collect();
                all.sort_unstable_by_key(|r| r.start);
                let mut merged: Vec<Range<usize>> = Vec::with_capacity(all.len());
                for range in all {
                    match merged.last_mut() {
                        Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
                        _ => merged.push(range),
                    }
                }
                Rows::ranges(merged, total)
            }
        }
    }

    /// Rows that both may hold.
    pub fn and(self, other: Rows) -> Rows {
        match (self, other) {
            (Rows::None, _) | (_, Rows::None) => Rows::None,
            (Rows::All, rows) | (rows, Rows::All) => rows,
            (Rows::Ranges { ranges: a, total }, Rows::Ranges { ranges: b, .. }) => {
                let (mut i, mut j, mut both) = (0, 0, Vec::new());
                while i < a.len() && j < b.len() {
                    let (start, end) = (a[i].start.max(b[j].start), a[i].end.min(b[j].end));
                    if start < end {
                        both.push(start..end);
                    }
                    if a[i].end < b[j].end {
                        i += 1;
                    } else {
                        j += 1;
                    }
                }
                Rows::ranges(both, total)
            }
        }
    }

    fn ranges(ranges: Vec<Range<usize>>, total: usize) -> Rows {
        match ranges.as_slice() {
            [] => Rows::None,
            [only] if only.start == 0 && only.end >= total => Rows::All,
            _ => Rows::Ranges { ranges, total },
        }
    }
}

/// A segment's filters of one column, a row group each (`None`: that row group has none).
type RowGroupFilters = Vec<Option<Sbbf>>;

/// Page filters of some row groups of a segment, by row group index.
type PagesOfRowGroups = Vec<(usize, PageFilters)>;

/// Where in one row group a column's values are: the data page of each of its distinct values, by a
/// fingerprint of the value's hash, made from the column's values when `serve` warms the cache or the
/// first time a lookup finds that row group (Parquet keeps one bloom filter per row group and column;
/// a page is 4 Ki rows at most, `store::segment::DATA_PAGE_ROWS_MAX`, and about 1 Ki of an id): a
/// lookup of a key in that row group then decodes only the pages that may hold it, not the row
/// group's 64 Ki values.
///
/// The hashes' top `bucket_bits` pick a bucket (about 64 values each), and the next 16 bits are the
/// fingerprint kept, with the value's page: 3 bytes a value and a row group's table of buckets. An
/// absent key passes with a chance of the values over 2^(bucket_bits + 16), about 0.1% per row group,
/// the rate of the row group's own filter (`store::segment::BLOOM_FILTER_FPP`) that this replaces,
/// whatever the number of pages; and it then names one page, not all. (Bloom filters per page were
/// tried first: at 2.6 bytes a row, 10 of the 763 row groups of 64 pages of request ids at 50M
/// invocations let one absent key through, and sized for 0.1% a row group (3.5 bytes a row) they still
/// let 0.5% through, since a blocked filter's rate is worse than its sizing assumes. Each such row
/// group is one more segment a lookup opens.)
struct PageFilters {
    /// The rows of the row group.
    total: usize,
    /// The rows of each unit of pages the positions name: a page, or, past 256 pages, runs of them.
    pages: Vec<Range<usize>>,
    bucket_bits: u32,
    /// Where each bucket's entries start in `fingerprints` and `page_of`, and where the last ends.
    starts: Vec<u32>,
    fingerprints: Vec<u16>,
    page_of: Vec<u8>,
}

/// The hash of a value that page positions are kept by (the same in every process: a fixed seed).
fn key_hash(value: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x636f_6c64_7472_6169).hash_one(value)
}

impl PageFilters {
    /// The positions of `values`, each a page's values (rows `pages[i]` of `total`).
    fn new<'a>(total: usize, pages: Vec<(Range<usize>, impl IntoIterator<Item = &'a str>)>) -> PageFilters {
        // Past 256 pages (very long values), a unit is a run of pages, so that its index fits a byte.
        let per_unit = pages.len().div_ceil(256).max(1);
        let mut units: Vec<Range<usize>> = Vec::with_capacity(pages.len().div_ceil(per_unit));
        let mut hashes: Vec<(u64, u8)> = Vec::new();
        for (index, (rows, values)) in pages.into_iter().enumerate() {
            let unit = index / per_unit;
            match units.get_mut(unit) {
                Some(run) => run.end = rows.end,
                None => units.push(rows),
            }
            hashes.extend(values.into_iter().map(|v| (key_hash(v), unit as u8)));
        }
        hashes.sort_unstable();
        hashes.dedup();
        // About 64 values a bucket: 2^bucket_bits at least a 64th of the values, a power of two.
        let bucket_bits = (hashes.len().div_ceil(64).max(1).next_power_of_two().trailing_zeros()).min(32);
        let mut starts = vec![0u32; (1 << bucket_bits) + 1];
        for (hash, _) in &hashes {
            starts[bucket(*hash, bucket_bits) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let fingerprints = hashes.iter().map(|(hash, _)| fingerprint(*hash, bucket_bits)).collect();
        let page_of = hashes.iter().map(|(_, unit)| *unit).collect();
        PageFilters { total, pages: units, bucket_bits, starts, fingerprints, page_of }
    }

    fn bytes(&self) -> usize {
        self.starts.len() * 4 + self.fingerprints.len() * 3 + self.pages.len() * 16 + 64
    }

    fn may_hold(&self, values: &[String]) -> Rows {
        let mut units: Vec<usize> = Vec::new();
        for value in values {
            let hash = key_hash(value);
            let bucket = bucket(hash, self.bucket_bits);
            let (start, end) = (self.starts[bucket] as usize, self.starts[bucket + 1] as usize);
            let wanted = fingerprint(hash, self.bucket_bits);
            units.extend((start..end).filter(|&i| self.fingerprints[i] == wanted).map(|i| self.page_of[i] as usize));
        }
        units.sort_unstable();
        units.dedup();
        let mut ranges: Vec<Range<usize>> = Vec::with_capacity(units.len());
        for rows in units.into_iter().map(|unit| self.pages[unit].clone()) {
            match ranges.last_mut() {
                Some(last) if last.end == rows.start => last.end = rows.end,
                _ => ranges.push(rows),
            }
        }
        Rows::ranges(ranges, self.total)
    }
}

/// The bucket of `hash`: its top `bucket_bits`.
fn bucket(hash: u64, bucket_bits: u32) -> usize {
    hash.checked_shr(64 - bucket_bits).unwrap_or(0) as usize
}

/// The 16 bits of `hash` after its bucket's.
fn fingerprint(hash: u64, bucket_bits: u32) -> u16 {
    (hash.wrapping_shl(bucket_bits) >> 48) as u16
}

/// One segment's filters of one column, a row group each (`None`: that row group has none, so it may
/// hold anything), and the filters of its pages where a lookup has made them.
struct Filters {
    row_groups: Vec<Option<Sbbf>>,
    pages: Vec<Option<PageFilters>>,
    bytes: usize,
    used: u64,
}

impl Filters {
    /// The row groups without page filters whose row-group filter `may` accepts (a row group with
    /// neither has no filter to make them from: Parquet wrote none).
    fn without_pages(&self, may: impl Fn(&Sbbf) -> bool) -> Vec<usize> {
        (self.row_groups.iter().zip(&self.pages).enumerate())
            .filter(|(_, (filter, pages))| pages.is_none() && filter.as_ref().is_some_and(&may))
            .map(|(group, _)| group)
            .collect()
    }
}

#[derive(Default)]
struct Cache {
    entries: HashMap<(String, &'static str), Filters>,
    bytes: usize,
    clock: u64,
}

/// The bloom filters of the store's segments, by segment path and column, shared by every scan.
pub struct SegmentKeys {
    cache: Mutex<Cache>,
    bytes_max: usize,
}

impl SegmentKeys {
    pub fn new(bytes_max: usize) -> SegmentKeys {
        SegmentKeys { cache: Mutex::new(Cache::default()), bytes_max }
    }

    /// Bytes of filters held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// For each of `segments` (path and size), in their order: for each of `keys`, whether the segment
    /// may hold one of that entry's values, and which of its row groups may hold one of any entry's. A
    /// segment whose filters cannot be read may: the scan then reads it, and reports why it cannot.
    pub async fn may_hold(
        &self,
        files: &Arc<dyn ParquetFileReaderFactory>,
        segments: &[(&str, u64)],
        keys: &[(&'static str, Vec<String>)],
    ) -> Vec<SegmentMay> {
        let mut columns: Vec<&'static str> = keys.iter().map(|(column, _)| *column).collect();
        columns.sort_unstable();
        columns.dedup();
        self.load(files, segments, &columns).await;
        self.load_pages(files, segments, keys).await;
        let mut cache = self.lock();
        cache.clock += 1;
        let now = cache.clock;
        let mut may_hold = Vec::with_capacity(segments.len());
        for (path, _) in segments {
            let mut may = SegmentMay { terms: Vec::with_capacity(keys.len()), row_groups: Some(Vec::new()) };
            for (column, values) in keys {
                let Some(entry) = cache.entries.get_mut(&(path.to_string(), *column)) else {
                    // Unreadable, or dropped again at once because the cache is smaller than one entry.
                    may.terms.push(true);
                    may.row_groups = None;
                    continue;
                };
                entry.used = now;
                let row_groups: Vec<Rows> = entry
                    .row_groups
                    .iter()
                    .zip(&entry.pages)
                    .map(|(filter, pages)| match (filter, pages) {
                        (Some(f), _) if !values.iter().any(|v| f.check(&v.as_str())) => Rows::None,
                        (_, Some(pages)) => pages.may_hold(values),
                        _ => Rows::All,
                    })
                    .collect();
                // A segment without the column (no row groups listed) holds no value of it.
                may.terms.push(row_groups.iter().any(Rows::any));
                if row_groups.is_empty() {
                    continue;
                }
                match &mut may.row_groups {
                    Some(held) if held.is_empty() => *held = row_groups,
                    Some(held) if held.len() == row_groups.len() => {
                        for (held, may) in held.iter_mut().zip(row_groups) {
                            *held = std::mem::replace(held, Rows::None).or(may);
                        }
                    }
                    _ => may.row_groups = None,
                }
            }
            may_hold.push(may);
        }
        let skipped = may_hold.iter().filter(|may| !may.terms.contains(&true)).count();
        crate::metrics::metrics().segments_skipped.inc_by(skipped as u64);
        may_hold
    }

    /// Makes the page filters of the row groups of `segments` whose filters may hold one of `keys`
    /// and that have none yet, when they are few (a lookup of a key finds one row group, and now and
    /// then a false positive); a lookup that many row groups may answer, such as a principal in every
    /// row group, is a scan, and reads as before.
    async fn load_pages(
        &self,
        files: &Arc<dyn ParquetFileReaderFactory>,
        segments: &[(&str, u64)],
        keys: &[(&'static str, Vec<String>)],
    ) {
        // Owned, and columns by index: a borrowed item in the stream makes the scan's future not `Send`.
        let wanted: Vec<(String, u64, usize, Vec<usize>)> = {
            let cache = self.lock();
            let mut wanted = Vec::new();
            let mut row_groups = 0;
            for (path, bytes) in segments {
                for (key, (column, values)) in keys.iter().enumerate() {
                    let Some(entry) = cache.entries.get(&(path.to_string(), *column)) else { continue };
                    let groups = entry.without_pages(|f| values.iter().any(|v| f.check(v.as_str())));
                    row_groups += groups.len();
                    if row_groups > PAGE_FILTER_ROW_GROUPS_MAX {
                        return;
                    }
                    if !groups.is_empty() {
                        wanted.push((path.to_string(), *bytes, key, groups));
                    }
                }
            }
            wanted
        };
        let columns: Vec<&'static str> = keys.iter().map(|(column, _)| *column).collect();
        self.build_pages(files, wanted, &columns).await;
    }

    /// Makes the page filters of the row groups `wanted` lists (segment path and size, index into
    /// `columns`, row groups) and puts them in place of the row groups' filters.
    async fn build_pages(
        &self,
        files: &Arc<dyn ParquetFileReaderFactory>,
        wanted: Vec<(String, u64, usize, Vec<usize>)>,
        columns: &[&'static str],
    ) {
        let built: Vec<(String, &'static str, Option<PagesOfRowGroups>)> = futures::stream::iter(wanted)
            .map(|(path, bytes, column, groups)| {
                let (files, column) = (files.clone(), columns[column]);
                async move {
                    let pages = read_page_filters(&files, &path, bytes, column, &groups).await;
                    (path, column, pages)
                }
            })
            .buffer_unordered(LOADS_IN_FLIGHT)
            .collect()
            .await;
        let mut cache = self.lock();
        for (path, column, pages) in built {
            let Some(pages) = pages else { continue };
            // Dropped meanwhile: the next lookup reads its filters again.
            let Some(entry) = cache.entries.get_mut(&(path, column)) else { continue };
            let before = entry.bytes;
            for (group, filters) in pages {
                if let Some(slot @ None) = entry.pages.get_mut(group) {
                    // The pages' positions say all the row group's filter did, at its rate, and name the page.
                    if let Some(replaced) = entry.row_groups[group].take() {
                        entry.bytes -= replaced.num_blocks() * 32;
                    }
                    entry.bytes += filters.bytes();
                    *slot = Some(filters);
                }
            }
            let after = entry.bytes;
            cache.bytes = cache.bytes + after - before;
        }
        self.evict(&mut cache);
        crate::metrics::metrics().key_filter_bytes.set(cache.bytes as i64);
    }

    /// Reads the filters of `columns` that the cache does not hold for `segments`; returns how many
    /// it read.
    async fn load(
        &self,
        files: &Arc<dyn ParquetFileReaderFactory>,
        segments: &[(&str, u64)],
        columns: &[&'static str],
    ) -> usize {
        // Owned, and columns by index: a borrowed item in the stream makes the scan's future not `Send`.
        let missing: Vec<(String, u64, usize)> = {
            let cache = self.lock();
            segments
                .iter()
                .flat_map(|(path, bytes)| (0..columns.len()).map(move |column| (path.to_string(), *bytes, column)))
                .filter(|(path, _, column)| !cache.entries.contains_key(&(path.clone(), columns[*column])))
                .collect()
        };
        let loaded: Vec<(String, usize, Option<RowGroupFilters>)> = futures::stream::iter(missing)
            .map(|(path, bytes, column)| {
                let (files, name) = (files.clone(), columns[column]);
                async move {
                    let filters = read_filters(&files, &path, bytes, name).await;
                    (path, column, filters)
                }
            })
            .buffer_unordered(LOADS_IN_FLIGHT)
            .collect()
            .await;
        let read = loaded.len();
        let mut cache = self.lock();
        for (path, column, filters) in loaded {
            if let Some(row_groups) = filters {
                self.insert(&mut cache, path, columns[column], row_groups);
            }
        }
        crate::metrics::metrics().key_filter_bytes.set(cache.bytes as i64);
        read
    }

    /// Reads the filters of `column` for `segments`, in their order, while the cache holds less than
    /// nine tenths of its bound: what the first lookups after a start would otherwise read; with
    /// `pages`, also makes the page filters of every row group (decoding the column once). Returns
    /// how many segments' filters it read.
    pub async fn warm(
        &self,
        files: &Arc<dyn ParquetFileReaderFactory>,
        segments: &[(&str, u64)],
        column: &'static str,
        pages: bool,
    ) -> usize {
        let mut read = 0;
        for chunk in segments.chunks(LOADS_IN_FLIGHT * 4) {
            if self.bytes() >= self.bytes_max / 10 * 9 {
                break;
            }
            read += self.load(files, chunk, &[column]).await;
            if pages {
                let wanted: Vec<(String, u64, usize, Vec<usize>)> = {
                    let cache = self.lock();
                    (chunk.iter())
                        .filter_map(|(path, bytes)| {
                            let groups = cache.entries.get(&(path.to_string(), column))?.without_pages(|_| true);
                            (!groups.is_empty()).then(|| (path.to_string(), *bytes, 0, groups))
                        })
                        .collect()
                };
                self.build_pages(files, wanted, &[column]).await;
            }
        }
        read
    }

    fn insert(&self, cache: &mut Cache, path: String, column: &'static str, row_groups: Vec<Option<Sbbf>>) {
        let bytes = row_groups.iter().flatten().map(|f| f.num_blocks() * 32).sum::<usize>() + path.len() + 64;
        cache.clock += 1;
        let used = cache.clock;
        let pages = row_groups.iter().map(|_| None).collect();
        if let Some(old) = cache.entries.insert((path, column), Filters { row_groups, pages, bytes, used }) {
            cache.bytes -= old.bytes;
        }
        cache.bytes += bytes;
        self.evict(cache);
    }

    /// Drops the least recently used entries while the cache holds more than its bound.
    fn evict(&self, cache: &mut Cache) {
        if cache.bytes > self.bytes_max {
            // Down to nine tenths of the bound at once, oldest first: one sort per overflow, not a
            // search per entry dropped.
            let mut by_age: Vec<(u64, (String, &'static str))> =
                cache.entries.iter().map(|(key, filters)| (filters.used, key.clone())).collect();
            by_age.sort_unstable_by_key(|(used, _)| *used);
            for (_, key) in by_age {
                if cache.bytes <= self.bytes_max / 10 * 9 {
                    break;
                }
                let dropped = cache.entries.remove(&key).expect("listed above");
                cache.bytes -= dropped.bytes;
            }
        }
    }
}

/// A segment's reader as the scans' factory makes it, `Send` for a scan's future.
struct Reader(Box<dyn AsyncFileReader + Send>);

impl AsyncFileReader for Reader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.0.get_bytes(range)
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        self.0.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        self.0.get_metadata(options)
    }
}

/// Filters of each data page of `column` in `row_groups` of the segment at `path`, from its values
/// (pages as the offset index places them); `None` when the file cannot be read.
async fn read_page_filters(
    files: &Arc<dyn ParquetFileReaderFactory>,
    path: &str,
    bytes: u64,
    column: &str,
    row_groups: &[usize],
) -> Option<PagesOfRowGroups> {
    let read = async {
        let mut reader = open(files, path, bytes)?;
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
        let metadata = ArrowReaderMetadata::load_async(&mut reader, options).await?;
        let parquet = metadata.metadata().clone();
        let schema = parquet.file_metadata().schema_descr();
        let index = (schema.columns().iter().position(|c| c.path().string() == column))
            .ok_or_else(|| ParquetError::General(format!("no column {column}")))?;
        let offsets = parquet.offset_index().ok_or_else(|| ParquetError::General("no offset index".into()))?;
        let mut stream = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata.clone())
            .with_row_groups(row_groups.to_vec())
            .with_projection(ProjectionMask::leaves(schema, [index]))
            .build()?;
        // The column of the row groups read, in their order, then cut at each row group's rows.
        let mut arrays: Vec<ArrayRef> = Vec::new();
        while let Some(batch) = stream.next().await {
            arrays.push(cast(batch?.column(0), &DataType::Utf8).map_err(|e| ParquetError::External(Box::new(e)))?);
        }
        let values: Vec<Option<&str>> = arrays.iter().flat_map(|a| a.as_string::<i32>().iter()).collect();
        let mut out = Vec::with_capacity(row_groups.len());
        let mut first = 0;
        for &group in row_groups {
            let total = parquet.row_group(group).num_rows() as usize;
            let Some(values) = values.get(first..first + total) else {
                return Err(ParquetError::General(format!("row group {group} has {total} rows, fewer read")));
            };
            first += total;
            let starts: Vec<usize> =
                offsets[group][index].page_locations().iter().map(|p| p.first_row_index as usize).collect();
            let ends = starts.iter().skip(1).copied().chain([total]);
            let pages = (starts.iter().zip(ends))
                .map(|(&start, end)| (start..end, values[start.min(end)..end].iter().flatten().copied()))
                .collect();
            out.push((group, PageFilters::new(total, pages)));
        }
        Ok::<_, ParquetError>(out)
    };
    let pages = read.await;
    warned(pages, path, column, "making a segment's page filters failed; its row groups are scanned")
}

/// A reader of the segment at `path` through the scans' factory, and so their footer cache.
fn open(files: &Arc<dyn ParquetFileReaderFactory>, path: &str, bytes: u64) -> Result<Reader, ParquetError> {
    let file = PartitionedFile::new(path.to_string(), bytes);
    let reader = files.create_reader(0, file, None, &ExecutionPlanMetricsSet::new());
    reader.map(Reader).map_err(|e| ParquetError::External(Box::new(e)))
}

/// The value read, or `None` after a warning that says what failed for which segment and column.
fn warned<T>(read: Result<T, ParquetError>, path: &str, column: &str, failed: &str) -> Option<T> {
    read.map_err(|error| tracing::warn!(path, column, %error, "{failed}")).ok()
}

/// The bloom filters of `column` in the segment at `path`, a row group each; `None` when the file
/// cannot be read. The footer comes through the scans' reader, and so from their footer cache.
async fn read_filters(
    files: &Arc<dyn ParquetFileReaderFactory>,
    path: &str,
    bytes: u64,
    column: &str,
) -> Option<Vec<Option<Sbbf>>> {
    let read = async {
        let mut reader = open(files, path, bytes)?;
        let metadata = reader.get_metadata(None).await?;
        let Some(index) =
            metadata.file_metadata().schema_descr().columns().iter().position(|c| c.path().string() == column)
        else {
            // A segment without the column (written before it was added) holds no value of it.
            return Ok(Vec::new());
        };
        let mut filters = Vec::with_capacity(metadata.num_row_groups());
        for row_group in metadata.row_groups() {
            let chunk = row_group.column(index);
            filters.push(match (chunk.bloom_filter_offset(), chunk.bloom_filter_length()) {
                (Some(offset), Some(length)) => {
                    let (offset, length) = (offset as u64, length as u64);
                    Some(Sbbf::from_bytes(&reader.get_bytes(offset..offset + length).await?)?)
                }
                _ => None,
            });
        }
        Ok::<_, ParquetError>(filters)
    };
    let filters = read.await;
    warned(filters, path, column, "reading a segment's bloom filters failed; the segment is scanned")
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
    use datafusion::execution::cache::default_cache::DefaultCache;
    use datafusion::prelude::{col, lit};
    use object_store::memory::InMemory;
    use object_store::{ObjectStore, ObjectStoreExt};
    use store::fixtures::batch_with_ids;

    fn reader_of(store: &Arc<dyn ObjectStore>) -> Arc<dyn ParquetFileReaderFactory> {
        Arc::new(CachedParquetFileReaderFactory::new(store.clone(), Arc::new(DefaultCache::new(1 << 20))))
    }

    /// Two segments of invocations in an object store: ids 0..1000 and 1000..2000 (request ids
    /// `<id>`), and one path that holds no Parquet.
    async fn segments() -> (Arc<dyn ObjectStore>, Vec<(String, u64)>) {
        let object_store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut paths = Vec::new();
        for (n, ids) in [(0u64, 0..1000u64), (1, 1000..2000)] {
            let ids: Vec<u64> = ids.collect();
            let batch = batch_with_ids(Table::Invocations, &ids, |id| 1_767_225_600_000_000 + id as i64);
            let encoded = store::segment::encode_segment(Table::Invocations, &[batch]).unwrap();
            let path = format!("invocations/segment-{n}.parquet");
            object_store
                .put(&object_store::path::Path::from(path.as_str()), encoded.bytes.clone().into())
                .await
                .unwrap();
            paths.push((path, encoded.bytes.len() as u64));
        }
        object_store
            .put(&object_store::path::Path::from("invocations/broken.parquet"), b"not parquet".to_vec().into())
            .await
            .unwrap();
        paths.push(("invocations/broken.parquet".to_string(), 11));
        (object_store, paths)
    }

    async fn kept(
        keys: &SegmentKeys,
        store: &Arc<dyn ObjectStore>,
        paths: &[(String, u64)],
        values: &[&str],
    ) -> Vec<String> {
        let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let candidates: Vec<(&str, u64)> = paths.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        let may_hold = keys.may_hold(&reader_of(store), &candidates, &[("request_id", values)]).await;
        paths.iter().zip(may_hold).filter(|(_, may)| may.terms[0]).map(|((path, _), _)| path.clone()).collect()
    }

    /// A row group of request ids is 64 pages of about 1 Ki ids (`store::segment::ID_PAGE_BYTES_MAX`):
    /// its page positions let as few absent keys through as the row group's own filter would, name the
    /// page of every present key, and take about 3 bytes a value.
    #[test]
    fn a_row_groups_page_positions_let_through_as_few_absent_keys_as_its_own_filter() {
        let (count, per_page) = (64, 1024);
        let keys: Vec<Vec<String>> = (0..count)
            .map(|page| (0..per_page).map(|i| format!("present-{}", page * per_page + i)).collect())
            .collect();
        let pages = keys
            .iter()
            .enumerate()
            .map(|(page, keys)| (page * per_page..(page + 1) * per_page, keys.iter().map(String::as_str)));
        let row_group = PageFilters::new(count * per_page, pages.collect());
        for key in [0, 1, 1023, 1024, 40_000, count * per_page - 1] {
            let page = key / per_page;
            assert_eq!(
                row_group.may_hold(&[format!("present-{key}")]),
                Rows::Ranges {
                    ranges: std::iter::once(page * per_page..(page + 1) * per_page).collect(),
                    total: count * per_page
                },
                "present-{key}"
            );
        }
        let probes = 200_000;
        let through = (0..probes).filter(|i| row_group.may_hold(&[format!("absent-{i}")]).any()).count();
        let rate = through as f64 / probes as f64;
        assert!(
            rate <= 2.0 * store::segment::BLOOM_FILTER_FPP,
            "{through} of {probes} absent keys ({:.3}%) may be in the row group",
            rate * 100.0
        );
        let bytes_per_value = row_group.bytes() as f64 / (count * per_page) as f64;
        assert!(bytes_per_value < 3.2, "{bytes_per_value} bytes a value");
    }

    /// Past 256 pages, a position names a run of pages; a key's run holds its row, and adjacent pages
    /// are one range.
    #[test]
    fn positions_of_more_than_256_pages_name_runs_of_pages() {
        let pages: Vec<(Range<usize>, Vec<String>)> =
            (0..600).map(|page| (page * 2..page * 2 + 2, vec![format!("k{page}"), format!("k{page}")])).collect();
        let row_group =
            PageFilters::new(1200, pages.iter().map(|(r, v)| (r.clone(), v.iter().map(String::as_str))).collect());
        assert_eq!(row_group.pages.len(), 200);
        for page in [0, 1, 2, 299, 599] {
            let Rows::Ranges { ranges, .. } = row_group.may_hold(&[format!("k{page}")]) else { panic!("k{page}") };
            assert!(ranges.iter().any(|r| r.contains(&(page * 2))), "k{page}: {ranges:?}");
            assert!(ranges.iter().all(|r| r.len() <= 6), "k{page}: {ranges:?}");
        }
        let both = row_group.may_hold(&["k0".to_string(), "k3".to_string()]);
        assert_eq!(both, Rows::Ranges { ranges: std::iter::once(0..12).collect(), total: 1200 });
    }

    #[tokio::test]
    async fn a_key_reads_only_the_segments_whose_filters_may_hold_it() {
        let (store, paths) = segments().await;
        let keys = SegmentKeys::new(KEY_FILTER_CACHE_BYTES);
        let broken = "invocations/broken.parquet".to_string();
        assert_eq!(kept(&keys, &store, &paths, &["5"]).await, [paths[0].0.clone(), broken.clone()]);
        assert!(keys.bytes() > 0, "the two segments' filters are held");
        assert_eq!(kept(&keys, &store, &paths, &["1500"]).await, [paths[1].0.clone(), broken.clone()]);
        assert_eq!(kept(&keys, &store, &paths, &["5", "1999"]).await.len(), 3);
        assert_eq!(
            kept(&keys, &store, &paths, &["no-such-request"]).await,
            std::slice::from_ref(&broken),
            "only what cannot be read"
        );
        // Cached: the segments are gone from the object store, the answers are not.
        store.delete(&object_store::path::Path::from(paths[0].0.as_str())).await.unwrap();
        assert_eq!(kept(&keys, &store, &paths, &["7"]).await, [paths[0].0.clone(), broken]);
    }

    #[tokio::test]
    async fn warming_reads_each_segments_filters_once_and_stops_at_the_bound() {
        let (store, paths) = segments().await;
        let candidates: Vec<(&str, u64)> = paths.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        let keys = SegmentKeys::new(KEY_FILTER_CACHE_BYTES);
        assert_eq!(keys.warm(&reader_of(&store), &candidates, "request_id", false).await, 3);
        assert_eq!(
            keys.warm(&reader_of(&store), &candidates, "request_id", false).await,
            1,
            "only the broken file again"
        );
        // Held: with the segments gone from the object store, lookups are answered from memory.
        for (path, _) in &paths[..2] {
            store.delete(&object_store::path::Path::from(path.as_str())).await.unwrap();
        }
        let broken = "invocations/broken.parquet".to_string();
        assert_eq!(kept(&keys, &store, &paths, &["1500"]).await, [paths[1].0.clone(), broken]);
        // A cache at its bound is not filled by warming.
        let full = SegmentKeys::new(1);
        assert_eq!(full.warm(&reader_of(&store), &candidates, "request_id", false).await, 0);
    }

    #[tokio::test]
    async fn past_its_bound_the_cache_forgets_and_keeps_every_segment_it_cannot_rule_out() {
        let (store, paths) = segments().await;
        let one_entry = {
            let keys = SegmentKeys::new(usize::MAX);
            kept(&keys, &store, &paths[..1], &["5"]).await;
            keys.bytes()
        };
        let keys = SegmentKeys::new(one_entry);
        let answer = kept(&keys, &store, &paths[..2], &["5"]).await;
        assert!(keys.bytes() <= one_entry, "{} bytes held, bound {one_entry}", keys.bytes());
        assert!(answer.contains(&paths[0].0), "the segment that holds the key is never skipped: {answer:?}");
        let tiny = SegmentKeys::new(1);
        assert_eq!(kept(&tiny, &store, &paths[..2], &["5"]).await.len(), 2, "nothing held, nothing skipped");
        assert_eq!(tiny.bytes(), 0);
    }

    /// One segment of 20,000 invocations in one row group (request ids `<id>`, id n at row n), in an
    /// object store.
    async fn one_segment() -> (Arc<dyn ObjectStore>, String, u64) {
        let object_store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let ids: Vec<u64> = (0..20_000).collect();
        let batch = batch_with_ids(Table::Invocations, &ids, |id| 1_767_225_600_000_000 + id as i64);
        let encoded = store::segment::encode_segment(Table::Invocations, &[batch]).unwrap();
        let path = "invocations/segment.parquet".to_string();
        object_store.put(&object_store::path::Path::from(path.as_str()), encoded.bytes.clone().into()).await.unwrap();
        (object_store, path, encoded.bytes.len() as u64)
    }

    fn rows_of(may: &SegmentMay) -> (Vec<Range<usize>>, usize) {
        match may.row_groups.as_deref() {
            Some([Rows::Ranges { ranges, total }]) => (ranges.clone(), *total),
            other => panic!("one row group narrowed to pages: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_key_found_in_a_row_group_is_then_found_in_one_page_of_it() {
        let (object_store, path, bytes) = one_segment().await;
        let keys = SegmentKeys::new(KEY_FILTER_CACHE_BYTES);
        let segments = [(path.as_str(), bytes)];
        let may = |values: &[&str]| {
            let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            let keys = &keys;
            let reader = reader_of(&object_store);
            async move { keys.may_hold(&reader, &segments, &[("request_id", values)]).await.remove(0) }
        };
        // Rows are in time order, so id n is row n; pages are 4 Ki rows.
        let (ranges, total) = rows_of(&may(&["9000"]).await);
        assert_eq!(total, 20_000);
        assert_eq!((ranges[0].clone(), ranges.len()), (8192..12_288, 1));
        let (ranges, _) = rows_of(&may(&["5", "19999"]).await);
        assert_eq!(ranges, [0..4096, 16_384..20_000]);
        assert!(keys.bytes() > 20_000, "page filters are held: {}", keys.bytes());
        // A key in no page, and a key the row group's filter rules out (nothing more to read).
        assert_eq!(may(&["no-such-request"]).await.terms, [false]);
        // Answers stay exact: every key of the segment is in the pages given for it.
        for id in (0..20_000).step_by(997) {
            let (ranges, _) = rows_of(&may(&[id.to_string().as_str()]).await);
            assert!(ranges.iter().any(|r| r.contains(&(id as usize))), "{id} not in {ranges:?}");
        }
    }

    #[tokio::test]
    async fn warming_makes_the_page_filters_that_lookups_then_answer_from_memory() {
        let (object_store, path, bytes) = one_segment().await;
        let keys = SegmentKeys::new(KEY_FILTER_CACHE_BYTES);
        let segments = [(path.as_str(), bytes)];
        assert_eq!(keys.warm(&reader_of(&object_store), &segments, "request_id", true).await, 1);
        object_store.delete(&object_store::path::Path::from(path.as_str())).await.unwrap();
        let may = keys.may_hold(&reader_of(&object_store), &segments, &[("request_id", vec!["13000".into()])]).await;
        let (ranges, total) = rows_of(&may[0]);
        assert_eq!((ranges[0].clone(), ranges.len(), total), (12_288..16_384, 1, 20_000));
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // lists of row ranges, some of one range
    fn rows_of_several_terms_and_lookups_combine_as_unions_and_intersections() {
        let ranges = |ranges: &[Range<usize>]| Rows::Ranges { ranges: ranges.to_vec(), total: 100 };
        assert_eq!(ranges(&[0..10, 50..60]).or(ranges(&[5..20, 90..100])), ranges(&[0..20, 50..60, 90..100]));
        assert_eq!(ranges(&[0..10]).or(Rows::None), ranges(&[0..10]));
        assert_eq!(ranges(&[0..10]).or(Rows::All), Rows::All);
        assert_eq!(ranges(&[0..50]).or(ranges(&[50..100])), Rows::All);
        assert_eq!(ranges(&[0..10, 50..60]).and(ranges(&[5..55])), ranges(&[5..10, 50..55]));
        assert_eq!(ranges(&[0..10]).and(ranges(&[10..20])), Rows::None);
        assert_eq!(ranges(&[0..10]).and(Rows::All), ranges(&[0..10]));
        assert_eq!(Rows::All.and(Rows::None), Rows::None);
    }

    #[test]
    fn equality_and_in_lists_of_lookup_columns_are_keys() {
        let keys = |filters: Vec<Expr>| lookups(&filters, Table::Invocations).into_iter().next().map(|l| l.keys);
        let one = |column: &'static str, values: &[&str]| (column, values.iter().map(|v| v.to_string()).collect());
        assert_eq!(keys(vec![col("request_id").eq(lit("r-1"))]), Some(vec![one("request_id", &["r-1"])]));
        assert_eq!(keys(vec![lit("r-2").eq(col("request_id"))]), Some(vec![one("request_id", &["r-2"])]));
        let either = col("request_id").in_list(vec![lit("a"), lit("b")], false);
        assert_eq!(keys(vec![either]), Some(vec![one("request_id", &["a", "b"])]));
        let conjunction = col("status").eq(lit("error")).and(col("request_id").eq(lit("r-3")));
        assert_eq!(keys(vec![conjunction]), Some(vec![one("request_id", &["r-3"])]));
        let any = col("request_id").in_list(vec![lit("k")], false).or(col("log_stream").eq(lit("k")));
        assert_eq!(keys(vec![any]), Some(vec![one("request_id", &["k"]), one("log_stream", &["k"])]));
    }

    #[test]
    fn other_filters_are_not_keys() {
        let keys = |filters: Vec<Expr>| lookups(&filters, Table::Invocations).into_iter().next().map(|l| l.keys);
        assert_eq!(keys(vec![col("status").eq(lit("error"))]), None, "not a lookup column");
        assert_eq!(keys(vec![col("request_id").not_eq(lit("r-1"))]), None);
        assert_eq!(keys(vec![col("request_id").in_list(vec![lit("a")], true)]), None, "NOT IN");
        assert_eq!(keys(vec![col("request_id").like(lit("r-%"))]), None);
        let either = col("request_id").eq(lit("a")).or(col("status").eq(lit("error")));
        assert_eq!(keys(vec![either]), None, "a row may match through a column that is not a lookup column");
        assert_eq!(keys(vec![col("request_id").in_list(vec![lit("a"), col("function_name")], false)]), None);
    }
}

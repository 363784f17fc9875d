//! The store's tables as DataFusion table providers.
//!
//! A scan reads a table's sealed Parquet segments through DataFusion's Parquet reader (projection,
//! row-group and page pruning by the pushed-down predicate) and its hot rows from memory, as one union.
//! Time-range filters on the table's time column prune whole hour partitions and segments before any
//! file is opened: `EXPLAIN` shows only the segments whose time range overlaps the filter. The scan
//! applies them itself, and only to the segments whose time range they cut and to the hot rows.
//! Lookups of keys (`request_id = …`, or `timeline()`'s disjunction over six id columns) skip the
//! segments whose bloom filters rule the key out, and the scan applies them itself too: to each
//! segment only the terms whose columns may hold the key, so the others are not decoded.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetAccessPlan, RowGroupAccess,
};
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use parquet::arrow::arrow_reader::RowSelection;
use store::{SegmentInfo, Store, Table, TimeRange};

use crate::keys::{self, Rows, SegmentKeys, SegmentMay};

/// The URL under which the store's object store is registered in DataFusion's runtime.
pub const STORE_URL: &str = "coldtrail://store/";

/// Name of the ledger table (not a `store::Table`: it is read from the ledger entries).
pub const LEDGER_TABLE: &str = "ledger";

/// Registers every store table, the ledger and the store's object store in `ctx`.
pub fn register_store(ctx: &SessionContext, store: &Arc<Store>, key_filter_bytes: usize) -> DfResult<()> {
    let url = url::Url::parse(STORE_URL).map_err(|e| DataFusionError::External(Box::new(e)))?;
    ctx.runtime_env().register_object_store(&url, store.location().object_store());
    let keys = Arc::new(SegmentKeys::new(key_filter_bytes));
    for table in Table::ALL {
        ctx.register_table(table.name(), Arc::new(StoreTable::new(store.clone(), table, keys.clone())))?;
    }
    ctx.register_table(LEDGER_TABLE, Arc::new(LedgerTable { store: store.clone() }))?;
    Ok(())
}

/// One store table: hot rows and sealed segments.
pub struct StoreTable {
    store: Arc<Store>,
    table: Table,
    schema: SchemaRef,
    /// The segments' bloom filters, shared by every table of the store.
    keys: Arc<SegmentKeys>,
}

impl std::fmt::Debug for StoreTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTable").field("table", &self.table).finish()
    }
}

impl StoreTable {
    pub fn new(store: Arc<Store>, table: Table, keys: Arc<SegmentKeys>) -> Self {
        StoreTable { schema: table.schema(), store, table, keys }
    }
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Time bounds and lookups of keys are applied here, segment by segment (`scan`): a scan of a day
        // whose segments lie inside it never decodes the time column for them, and a lookup through
        // several columns decodes in each segment only the columns its bloom filters say may hold the
        // key. Every other filter prunes what it can (Parquet statistics, bloom filters) and DataFusion
        // still applies it to the rows.
        let time_column = self.table.time_column();
        Ok(filters
            .iter()
            .map(|f| {
                if time_bound(f, time_column) || keys::is_lookup(f, self.table) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let time_column = self.table.time_column();
        let range = time_range(filters, time_column);
        let snapshot = self.store.snapshot(self.table, range);
        let partitions = state.config().target_partitions().max(1);
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();

        let files = files(state)?;
        let mut segments = snapshot.segments;
        segments.sort_by(|a, b| a.min_ts_micros.cmp(&b.min_ts_micros).then_with(|| a.path.cmp(&b.path)));
        // A lookup of a key reads only the segments whose bloom filters may hold it (`keys`), and in
        // each only the terms of the lookup whose columns may: for each segment and lookup, one flag per
        // term.
        let lookups = keys::lookups(filters, self.table);
        let mut may_hold: Vec<Vec<SegmentMay>> = vec![Vec::with_capacity(lookups.len()); segments.len()];
        if !segments.is_empty() {
            let candidates: Vec<(&str, u64)> = segments.iter().map(|s| (s.path.as_str(), s.bytes)).collect();
            for lookup in &lookups {
                let answers = self.keys.may_hold(&files, &candidates, &lookup.keys).await;
                may_hold.iter_mut().zip(answers).for_each(|(segment, may)| segment.push(may));
            }
        }
        let bounds = TimeBounds::new(state, &self.schema, time_column, filters)?;
        // Segments scanned alike: those that need the time bounds applied or not, and the same terms of
        // each lookup, in the order of their first segment.
        let mut groups: Vec<((bool, Vec<Vec<bool>>), Vec<Candidate>)> = Vec::new();
        for (segment, may) in segments.into_iter().zip(may_hold) {
            let row_groups = row_groups_of_every_lookup(&may);
            let terms: Vec<Vec<bool>> = may.into_iter().map(|may| may.terms).collect();
            if terms.iter().any(|terms| !terms.contains(&true))
                || row_groups.as_ref().is_some_and(|r| !r.iter().any(Rows::any))
            {
                continue;
            }
            let across =
                bounds.as_ref().is_some_and(|b| !b.hold_throughout(segment.min_ts_micros, segment.max_ts_micros));
            let kind = (across, terms);
            let candidate = Candidate { segment, row_groups };
            match groups.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, group)) => group.push(candidate),
                None => groups.push((kind, vec![candidate])),
            }
        }
        // Filters evaluated while decoding (late materialisation) pay for a selective filter and cost
        // for one that keeps nearly every row. The time bounds of segments inside them are not applied
        // at all, and those of segments across them are selective, as lookups are; other filters may be.
        // The session leaves it off (`engine::build_context`); DataFusion turns it on for a scan when
        // either the session or the scan asks.
        let others = filters.iter().any(|f| !time_bound(f, time_column) && !keys::is_lookup(f, self.table));
        for ((across, may), group) in groups {
            let mut applied: Vec<Expr> = bounds.iter().filter(|_| across).map(|b| b.expr.clone()).collect();
            applied.extend(lookups.iter().zip(&may).filter_map(|(lookup, may)| lookup.terms_that_may_hold(may)));
            inputs.push(match conjunction(applied) {
                None => self.segments_exec(state, &group, projection, others, limit, &files, partitions)?,
                Some(filter) => {
                    let filter = Applied::new(state, &self.schema, filter, projection)?;
                    let scan = self.segments_exec(state, &group, Some(&filter.read), true, None, &files, partitions)?;
                    filter.apply(scan)?
                }
            });
        }
        if !snapshot.hot.is_empty() || inputs.is_empty() {
            let hot = spread(snapshot.hot, partitions);
            let mut applied: Vec<Expr> = bounds.iter().map(|b| b.expr.clone()).collect();
            applied.extend(lookups.iter().map(|lookup| lookup.expr()));
            inputs.push(match conjunction(applied) {
                None => MemorySourceConfig::try_new_exec(&hot, self.schema.clone(), projection.cloned())?,
                Some(filter) => {
                    let filter = Applied::new(state, &self.schema, filter, projection)?;
                    filter.apply(MemorySourceConfig::try_new_exec(
                        &hot,
                        self.schema.clone(),
                        Some(filter.read.clone()),
                    )?)?
                }
            });
        }
        UnionExec::try_new(inputs)
    }
}

/// The segments' files, through the session's footer cache: segments are immutable under their names,
/// so cached footers never go stale.
fn files(state: &dyn Session) -> DfResult<Arc<dyn ParquetFileReaderFactory>> {
    let object_store = state.runtime_env().object_store(ObjectStoreUrl::parse(STORE_URL)?)?;
    let metadata_cache = state.runtime_env().cache_manager.get_file_metadata_cache();
    Ok(Arc::new(CachedParquetFileReaderFactory::new(object_store, metadata_cache)))
}

impl StoreTable {
    /// Reads the bloom filters of the table's first lookup column (its id: `request_id`, `event_id`,
    /// …) for its segments, newest first, into the shared cache while it has room, and makes the filters
    /// of their pages; returns how many segments' filters it read.
    pub async fn warm_keys(&self, state: &dyn Session) -> DfResult<usize> {
        let Some(&column) = store::segment::lookup_columns(self.table).first() else { return Ok(0) };
        let mut segments = self.store.snapshot(self.table, TimeRange::ALL).segments;
        segments.sort_by(|a, b| b.max_ts_micros.cmp(&a.max_ts_micros).then_with(|| a.path.cmp(&b.path)));
        let segments: Vec<(&str, u64)> = segments.iter().map(|s| (s.path.as_str(), s.bytes)).collect();
        Ok(self.keys.warm(&files(state)?, &segments, column, true).await)
    }

    /// One Parquet scan of `segments`, in `partitions` groups, with the session's Parquet options and
    /// footer cache. A segment's row groups that its bloom filters held in memory rule out are skipped
    /// (a `ParquetAccessPlan`); when the filters held answered for every segment, the reader does not
    /// read them again.
    #[allow(clippy::too_many_arguments)]
    fn segments_exec(
        &self,
        state: &dyn Session,
        segments: &[Candidate],
        projection: Option<&Vec<usize>>,
        pushdown_filters: bool,
        limit: Option<usize>,
        files: &Arc<dyn ParquetFileReaderFactory>,
        partitions: usize,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let narrowed = |row_groups: &[Rows]| row_groups.iter().any(|rows| *rows != Rows::All);
        let planned = segments.iter().any(|c| c.row_groups.as_deref().is_some_and(narrowed));
        let parts = segments.iter().map(|candidate| {
            let file = PartitionedFile::new(candidate.segment.path.clone(), candidate.segment.bytes);
            match &candidate.row_groups {
                Some(row_groups) if narrowed(row_groups) => file.with_extension(ParquetAccessPlan::new(
                    row_groups
                        .iter()
                        .map(|rows| match rows {
                            Rows::None => RowGroupAccess::Skip,
                            Rows::All => RowGroupAccess::Scan,
                            Rows::Ranges { ranges, total } => RowGroupAccess::Selection(
                                RowSelection::from_consecutive_ranges(ranges.iter().cloned(), *total),
                            ),
                        })
                        .collect(),
                )),
                _ => file,
            }
        });
        let groups = spread(parts, partitions).into_iter().map(FileGroup::new).collect();
        // DataFusion's filter pushdown gives the filters to the Parquet source, which prunes row groups
        // and pages by their statistics.
        let mut options = state.table_options().parquet.clone();
        options.global.pushdown_filters = pushdown_filters;
        if !segments.is_empty() && segments.iter().all(|c| c.row_groups.is_some()) {
            options.global.bloom_filter_on_read = false;
        }
        let source = ParquetSource::new(self.schema.clone())
            .with_table_parquet_options(options)
            .with_parquet_file_reader_factory(files.clone());
        // The row count is known from the catalog: the optimizer sees which side of a join is small
        // (and broadcasts it instead of repartitioning both), and a `count(*)` without filters needs
        // no file opened. Row groups skipped make it an upper bound.
        let rows = segments.iter().map(|c| c.segment.rows).sum::<u64>() as usize;
        let rows = if planned { Precision::Inexact(rows) } else { Precision::Exact(rows) };
        let statistics = Statistics::new_unknown(&self.schema).with_num_rows(rows);
        let config = FileScanConfigBuilder::new(ObjectStoreUrl::parse(STORE_URL)?, Arc::new(source))
            .with_file_groups(groups)
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

/// A segment a scan reads, and which rows of its row groups may hold the scan's keys (`None`: any).
struct Candidate {
    segment: SegmentInfo,
    row_groups: Option<Vec<Rows>>,
}

/// The rows of each row group that may hold a key of every lookup (one [`SegmentMay`] each), when the
/// filters held say for each; `None` without lookups or when they do not.
fn row_groups_of_every_lookup(may: &[SegmentMay]) -> Option<Vec<Rows>> {
    let mut row_groups: Option<Vec<Rows>> = None;
    for may in may {
        let these = may.row_groups.as_ref()?;
        row_groups = Some(match row_groups {
            None => these.clone(),
            Some(held) if held.len() == these.len() => {
                held.into_iter().zip(these).map(|(a, b)| a.and(b.clone())).collect()
            }
            Some(_) => return None,
        });
    }
    row_groups
}

/// The time bounds of a scan (the comparisons of its time column with constants, which `StoreTable`
/// takes as exact), ready to test against a segment's time range.
struct TimeBounds {
    /// The bounds, one conjunction.
    expr: Expr,
    /// The bounds over a batch of the time column alone.
    times: Arc<dyn PhysicalExpr>,
    time_field: FieldRef,
}

impl TimeBounds {
    fn new(state: &dyn Session, schema: &SchemaRef, time_column: &str, filters: &[Expr]) -> DfResult<Option<Self>> {
        let bounds = filters.iter().filter(|f| time_bound(f, time_column)).cloned().map(unnormalize_col);
        let Some(expr) = conjunction(bounds) else { return Ok(None) };
        let time_field = schema.field_with_name(time_column)?.clone();
        let times = Schema::new(vec![time_field.clone()]);
        let times = state.create_physical_expr(expr.clone(), &DFSchema::try_from(times)?)?;
        Ok(Some(TimeBounds { expr, times, time_field: Arc::new(time_field) }))
    }

    /// Whether every time from `min` to `max` (microseconds, both included) meets the bounds. They
    /// are comparisons of the time column with constants, so each holds on an interval of time, and
    /// holding at both ends is holding throughout.
    fn hold_throughout(&self, min: i64, max: i64) -> bool {
        let ends = || -> DfResult<bool> {
            let values = arrow::compute::cast(&Int64Array::from(vec![min, max]), self.time_field.data_type())?;
            let batch = RecordBatch::try_new(Arc::new(Schema::new(vec![self.time_field.clone()])), vec![values])?;
            let held = self.times.evaluate(&batch)?.into_array(2)?;
            let held = held.as_boolean_opt().ok_or_else(|| DataFusionError::Internal("bounds not boolean".into()))?;
            Ok(held.null_count() == 0 && held.true_count() == 2)
        };
        // A range that cannot be tested is filtered row by row.
        ends().unwrap_or(false)
    }
}

/// A filter the scan applies itself (time bounds, lookups), ready to apply to rows.
struct Applied {
    /// The columns read where it is applied: the scan's projection, then the filter's other columns.
    read: Vec<usize>,
    /// How many of `read` the scan returns (the filter's columns are dropped again when they were added).
    returned: usize,
    /// The filter over `read`'s columns.
    rows: Arc<dyn PhysicalExpr>,
}

impl Applied {
    fn new(state: &dyn Session, schema: &SchemaRef, filter: Expr, projection: Option<&Vec<usize>>) -> DfResult<Self> {
        let filter = unnormalize_col(filter);
        let mut read = projection.cloned().unwrap_or_else(|| (0..schema.fields().len()).collect());
        let returned = read.len();
        let mut columns =
            filter.column_refs().into_iter().map(|c| schema.index_of(&c.name)).collect::<Result<Vec<_>, _>>()?;
        columns.sort_unstable();
        read.extend(columns.into_iter().filter(|c| !read.contains(c)).collect::<Vec<_>>());
        let rows = state.create_physical_expr(filter, &DFSchema::try_from(schema.project(&read)?)?)?;
        Ok(Applied { read, returned, rows })
    }

    /// `input` (which returns `read`) with the filter applied, returning the scan's projection.
    fn apply(&self, input: Arc<dyn ExecutionPlan>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let projection = (self.returned < self.read.len()).then(|| (0..self.returned).collect());
        Ok(Arc::new(FilterExecBuilder::new(self.rows.clone(), input).apply_projection(projection)?.build()?))
    }
}

/// Deals `items` round-robin into at most `n` non-empty groups.
fn spread<T>(items: impl IntoIterator<Item = T>, n: usize) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = (0..n).map(|_| Vec::new()).collect();
    for (i, item) in items.into_iter().enumerate() {
        groups[i % n].push(item);
    }
    groups.retain(|g| !g.is_empty());
    if groups.is_empty() {
        groups.push(Vec::new());
    }
    groups
}

/// The time range that `filters` (a conjunction) restrict `column` to; `TimeRange::ALL` when they don't.
/// Understands comparisons with timestamp literals in either order, `BETWEEN`, casts of the column, and
/// conjunctions; anything else leaves the range as it is (DataFusion still applies every filter).
pub fn time_range(filters: &[Expr], column: &str) -> TimeRange {
    let mut range = TimeRange::ALL;
    for filter in filters {
        narrow(filter, column, &mut range);
    }
    range
}

fn narrow(expr: &Expr, column: &str, range: &mut TimeRange) {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            narrow(left, column, range);
            narrow(right, column, range);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (op, value) = if is_column(left, column) {
                (*op, micros(right))
            } else if is_column(right, column) {
                match op.swap() {
                    Some(op) => (op, micros(left)),
                    None => return,
                }
            } else {
                return;
            };
            let Some((v, exact)) = value else { return };
            // `v` is the literal rounded down to a microsecond; `exact` when nothing was rounded.
            match op {
                Operator::Eq => {
                    range.start_micros = range.start_micros.max(v);
                    range.end_micros = range.end_micros.min(v + 1);
                }
                Operator::Gt | Operator::GtEq => range.start_micros = range.start_micros.max(v),
                Operator::Lt => range.end_micros = range.end_micros.min(if exact { v } else { v + 1 }),
                Operator::LtEq => range.end_micros = range.end_micros.min(v + 1),
                _ => {}
            }
        }
        Expr::Between(between) if !between.negated && is_column(&between.expr, column) => {
            if let Some((low, _)) = micros(&between.low) {
                range.start_micros = range.start_micros.max(low);
            }
            if let Some((high, _)) = micros(&between.high) {
                range.end_micros = range.end_micros.min(high + 1);
            }
        }
        _ => {}
    }
}

/// Whether `expr` only bounds `column` by timestamp literals (a comparison, `BETWEEN`, a conjunction of
/// them): the filters that [`time_range`] reads in full.
fn time_bound(expr: &Expr, column: &str) -> bool {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            time_bound(left, column) && time_bound(right, column)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            matches!(op, Operator::Gt | Operator::GtEq | Operator::Lt | Operator::LtEq)
                && ((is_column(left, column) && micros(right).is_some())
                    || (is_column(right, column) && micros(left).is_some()))
        }
        Expr::Between(between) => {
            !between.negated
                && is_column(&between.expr, column)
                && micros(&between.low).is_some()
                && micros(&between.high).is_some()
        }
        _ => false,
    }
}

fn is_column(expr: &Expr, column: &str) -> bool {
    match expr {
        Expr::Column(c) => c.name == column,
        Expr::Cast(cast) => is_column(&cast.expr, column),
        Expr::TryCast(cast) => is_column(&cast.expr, column),
        _ => false,
    }
}

/// A timestamp literal in microseconds, rounded down, and whether that was exact.
fn micros(expr: &Expr) -> Option<(i64, bool)> {
    match expr {
        Expr::Literal(value, _) => match value {
            ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000).map(|v| (v, true)),
            ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000).map(|v| (v, true)),
            ScalarValue::TimestampMicrosecond(Some(v), _) => Some((*v, true)),
            ScalarValue::TimestampNanosecond(Some(v), _) => Some((v.div_euclid(1_000), v.rem_euclid(1_000) == 0)),
            _ => None,
        },
        Expr::Cast(cast) => micros(&cast.expr),
        _ => None,
    }
    .map(|(v, exact)| (v.clamp(i64::MIN + 1, i64::MAX - 1), exact))
}

/// The ledger of every node, one row per entry (`store::schema::ledger_schema`).
pub struct LedgerTable {
    store: Arc<Store>,
}

impl std::fmt::Debug for LedgerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerTable")
    }
}

#[async_trait]
impl TableProvider for LedgerTable {
    fn schema(&self) -> SchemaRef {
        store::schema::ledger_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch: RecordBatch = self.store.ledger_batch().await.map_err(|e| DataFusionError::External(Box::new(e)))?;
        MemorySourceConfig::try_new_exec(&[vec![batch]], self.schema(), projection.cloned())
            .map(|exec| exec as Arc<dyn ExecutionPlan>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(Some(v), Some("+00:00".into())))
    }

    #[test]
    fn comparisons_and_between_narrow_the_range() {
        let filters = vec![col("ts").gt_eq(ts(100)), ts(500).gt(col("ts"))];
        assert_eq!(time_range(&filters, "ts"), TimeRange::new(100, 500));
        let inclusive = vec![col("ts").lt_eq(ts(500))];
        assert_eq!(time_range(&inclusive, "ts").end_micros, 501);
        let between = vec![col("ts").between(ts(10), ts(20))];
        assert_eq!(time_range(&between, "ts"), TimeRange::new(10, 21));
        let and = vec![col("ts").gt(ts(7)).and(col("ts").lt(ts(9)))];
        assert_eq!(time_range(&and, "ts"), TimeRange::new(7, 9));
    }

    #[test]
    fn filters_on_other_columns_or_disjunctions_leave_all() {
        assert_eq!(time_range(&[col("end_ts").gt(ts(5))], "ts"), TimeRange::ALL);
        assert_eq!(time_range(&[col("ts").gt(ts(5)).or(col("ts").lt(ts(1)))], "ts"), TimeRange::ALL);
        assert_eq!(time_range(&[col("ts").not_eq(ts(5))], "ts"), TimeRange::ALL);
    }

    #[test]
    fn only_comparisons_with_timestamps_are_time_bounds() {
        assert!(time_bound(&col("ts").gt_eq(ts(5)).and(col("ts").lt(ts(9))), "ts"));
        assert!(time_bound(&ts(5).lt(col("ts")), "ts"));
        assert!(time_bound(&col("ts").between(ts(1), ts(2)), "ts"));
        assert!(!time_bound(&col("ts").eq(ts(5)), "ts"), "an instant is selective");
        assert!(!time_bound(&col("ts").gt(ts(5)).or(col("ts").lt(ts(1))), "ts"));
        assert!(!time_bound(&col("end_ts").gt(ts(5)), "ts"));
        assert!(!time_bound(&col("ts").gt(ts(5)).and(col("request_id").eq(lit("x"))), "ts"));
    }

    #[test]
    fn nanosecond_bounds_round_to_the_enclosing_microsecond() {
        let filters = vec![col("ts").gt(lit(ScalarValue::TimestampNanosecond(Some(1_999), None)))];
        assert_eq!(time_range(&filters, "ts").start_micros, 1);
        let below = vec![col("ts").lt(lit(ScalarValue::TimestampNanosecond(Some(1_999), None)))];
        assert_eq!(time_range(&below, "ts").end_micros, 2, "1 µs is below 1999 ns and stays in range");
    }
}

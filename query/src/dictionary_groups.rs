//! A physical optimizer rule for the group-by analysts write most: by a dictionary-encoded column
//! (`GROUP BY function_name`, `status`, `trigger`).
//!
//! DataFusion 55 groups a dictionary column through its row format (`GroupValuesRows`): every row's
//! string is copied into a row and hashed, which is most of a top-10's aggregation. Only primitive and
//! plain string columns have fast group values. This rule gives a partial aggregation an integer in
//! place of each dictionary column it groups by: each batch's dictionary (a few hundred values) is
//! looked up in a table shared by the query's partitions, and the row's integer is its key's. The
//! partial aggregation then groups integers, and its few output rows get their strings back before
//! anything else sees them, so the plan above is unchanged.
//!
//! Grouped by one dictionary column alone (a top 10 of functions), the integers are the groups
//! themselves (`DenseGroupsExec`): each row's group is its key's integer, looked up in an array, and
//! DataFusion's own accumulators add the rows into it, where a hash table of the integers took about a
//! tenth of a top 10's time.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::execution_plan::ChildrenPropertiesMode;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, InputOrderMode, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures::StreamExt;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct DictionaryGroups;

/// The strings of one query's dictionary group columns and their integers, shared by its partitions.
#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<String, u32>,
    values: Vec<String>,
}

impl Interner {
    /// The integers of a dictionary's values (NULL for NULL), new ones given to strings not seen yet.
    fn ids_of(&mut self, values: &dyn Array) -> Result<UInt32Array> {
        let values = cast(values, &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let mut ids = Vec::with_capacity(values.len());
        for value in values.iter() {
            ids.push(match value {
                None => None,
                Some(value) => Some(match self.ids.get(value) {
                    Some(&id) => id,
                    None => {
                        let id = u32::try_from(self.values.len())
                            .map_err(|_| DataFusionError::Internal("too many groups".into()))?;
                        self.ids.insert(value.to_string(), id);
                        self.values.push(value.to_string());
                        id
                    }
                }),
            });
        }
        Ok(UInt32Array::from(ids))
    }

    /// The values of `ids` as `data_type` (the dictionary type they stood for).
    fn decode(&self, ids: &dyn Array, data_type: &DataType) -> Result<ArrayRef> {
        let ids = ids
            .as_primitive_opt::<arrow::datatypes::UInt32Type>()
            .ok_or_else(|| DataFusionError::Internal(format!("not group ids: {}", ids.data_type())))?;
        let strings: StringArray = ids.iter().map(|id| id.and_then(|id| self.values.get(id as usize))).collect();
        Ok(cast(&strings, data_type)?)
    }
}

/// Which batches a [`Mapped`] node changes, and how.
#[derive(Debug, Clone)]
enum Mapping {
    /// Appends the integer of each dictionary column at these input indices.
    Encode(Vec<usize>),
    /// Turns the integers at these output indices back into values of their dictionary type.
    Decode(Vec<usize>),
}

/// A node that maps each batch of its input through the shared [`Interner`].
#[derive(Debug)]
struct Mapped {
    input: Arc<dyn ExecutionPlan>,
    mapping: Mapping,
    interner: Arc<Mutex<Interner>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl Mapped {
    /// The node over `input`, returning `schema`: the input's partitions, without orderings (a partial
    /// aggregation of unordered input has none to keep).
    fn new(input: Arc<dyn ExecutionPlan>, mapping: Mapping, interner: Arc<Mutex<Interner>>, schema: SchemaRef) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        Mapped { input, mapping, interner, schema, properties: Arc::new(properties) }
    }
}

/// The integers of the last dictionary one column of one partition had: the Parquet reader shares a
/// row group's dictionary between its batches, so it is looked up once per row group.
type LastDictionary = Option<(ArrayRef, UInt32Array)>;

/// Each row's integer (NULL for NULL): the one of its key's value.
fn encode(interner: &Mutex<Interner>, column: &dyn Array, last: &mut LastDictionary) -> Result<ArrayRef> {
    let dictionary = column
        .as_any_dictionary_opt()
        .ok_or_else(|| DataFusionError::Internal(format!("not a dictionary: {}", column.data_type())))?;
    let ids = match last {
        Some((values, ids)) if Arc::ptr_eq(values, dictionary.values()) => ids.clone(),
        _ => {
            let mut interner = interner.lock().map_err(|_| DataFusionError::Internal("interner poisoned".into()))?;
            let ids = interner.ids_of(dictionary.values().as_ref())?;
            *last = Some((dictionary.values().clone(), ids.clone()));
            ids
        }
    };
    Ok(take(&ids, &cast(dictionary.keys(), &DataType::UInt32)?, None)?)
}

/// `batch` mapped as `mapping` says, into `schema`; `last` has one entry per encoded column.
fn map(
    mapping: &Mapping,
    interner: &Mutex<Interner>,
    schema: &SchemaRef,
    last: &mut [LastDictionary],
    batch: RecordBatch,
) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    match mapping {
        Mapping::Encode(indices) => {
            for (&i, last) in indices.iter().zip(last.iter_mut()) {
                columns.push(encode(interner, batch.column(i).as_ref(), last)?);
            }
        }
        Mapping::Decode(indices) => {
            let interner = interner.lock().map_err(|_| DataFusionError::Internal("interner poisoned".into()))?;
            for &i in indices {
                columns[i] = interner.decode(batch.column(i).as_ref(), schema.field(i).data_type())?;
            }
        }
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

impl DisplayAs for Mapped {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.mapping {
            Mapping::Encode(indices) => write!(f, "DictionaryGroupsExec: encode={indices:?}"),
            Mapping::Decode(indices) => write!(f, "DictionaryGroupsExec: decode={indices:?}"),
        }
    }
}

impl ExecutionPlan for Mapped {
    fn name(&self) -> &str {
        "DictionaryGroupsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Mapped::new(
            only_child(&mut children, "DictionaryGroupsExec")?,
            self.mapping.clone(),
            self.interner.clone(),
            self.schema.clone(),
        )))
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let (mapping, interner, schema) = (self.mapping.clone(), self.interner.clone(), self.schema.clone());
        let mut last: Vec<LastDictionary> = match &mapping {
            Mapping::Encode(indices) => vec![None; indices.len()],
            Mapping::Decode(_) => Vec::new(),
        };
        let stream = input.map(move |batch| map(&mapping, &interner, &schema, &mut last, batch?));
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }
}

/// Whether `data_type` is a dictionary of strings.
fn string_dictionary(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Dictionary(_, value) if matches!(**value, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View))
}

/// `aggregate` rewritten to group integers for its dictionary columns, when it is a partial
/// aggregation of plain groups (no grouping sets, no limit, no input order it relies on).
fn rewrite(aggregate: &AggregateExec) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let group_by = aggregate.group_expr();
    if *aggregate.mode() != AggregateMode::Partial
        || group_by.has_grouping_set()
        || !group_by.null_expr().is_empty()
        || aggregate.limit_options().is_some()
        || *aggregate.input_order_mode() != InputOrderMode::Linear
    {
        return Ok(None);
    }
    let input = aggregate.input().clone();
    let input_schema = input.schema();
    // The dictionary columns among the group expressions: (position in the groups, input column index).
    let mut dictionaries = Vec::new();
    for (position, (expr, _)) in group_by.expr().iter().enumerate() {
        if let Some(column) = expr.downcast_ref::<Column>() {
            if string_dictionary(input_schema.field(column.index()).data_type()) {
                dictionaries.push((position, column.index()));
            }
        }
    }
    if dictionaries.is_empty() {
        return Ok(None);
    }
    let interner = Arc::new(Mutex::new(Interner::default()));
    let mut fields: Vec<Field> = input_schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut exprs = group_by.expr().to_vec();
    for (n, &(position, index)) in dictionaries.iter().enumerate() {
        let name = format!("__coldtrail_group_{n}");
        fields.push(Field::new(&name, DataType::UInt32, input_schema.field(index).is_nullable()));
        exprs[position].0 = Arc::new(Column::new(&name, input_schema.fields().len() + n));
    }
    let encoded_schema = Arc::new(Schema::new_with_metadata(fields, input_schema.metadata().clone()));
    let encoded: Arc<dyn ExecutionPlan> = Arc::new(Mapped::new(
        input,
        Mapping::Encode(dictionaries.iter().map(|&(_, index)| index).collect()),
        interner.clone(),
        encoded_schema.clone(),
    ));
    let grouped = AggregateExec::try_new(
        AggregateMode::Partial,
        PhysicalGroupBy::new_single(exprs),
        aggregate.aggr_expr().to_vec(),
        aggregate.filter_expr().to_vec(),
        encoded,
        encoded_schema,
    )?;
    // Grouped by one dictionary column alone, by aggregates that DataFusion accumulates per group, the
    // integers are the groups: the same output, without the hash table.
    let dense = group_by.expr().len() == 1
        && aggregate
            .aggr_expr()
            .iter()
            .all(|a| !a.is_distinct() && a.order_bys().is_empty() && a.groups_accumulator_supported());
    let grouped: Arc<dyn ExecutionPlan> = if dense {
        let aggregation = Aggregation {
            column: dictionaries[0].1,
            aggregates: aggregate.aggr_expr().to_vec(),
            filters: aggregate.filter_expr().to_vec(),
            interner: interner.clone(),
            schema: grouped.schema(),
        };
        Arc::new(DenseGroups::new(aggregate.input().clone(), Arc::new(aggregation)))
    } else {
        Arc::new(grouped)
    };
    // The partial aggregation's output begins with its group columns, in order.
    Ok(Some(Arc::new(Mapped::new(
        grouped,
        Mapping::Decode(dictionaries.iter().map(|&(position, _)| position).collect()),
        interner,
        aggregate.schema(),
    ))))
}

/// A partial aggregation grouped by one dictionary column, whose groups are the column's integers
/// (see the module documentation). Its output is the partial aggregation's: the integer of each group
/// that had rows in this partition (NULL for the NULL group), then each aggregate's state.
#[derive(Debug)]
struct DenseGroups {
    input: Arc<dyn ExecutionPlan>,
    aggregation: Arc<Aggregation>,
    properties: Arc<PlanProperties>,
}

/// What a [`DenseGroups`] computes, shared by its partitions' streams.
#[derive(Debug)]
struct Aggregation {
    /// The dictionary column's index in the input.
    column: usize,
    aggregates: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    interner: Arc<Mutex<Interner>>,
    /// The partial aggregation's output.
    schema: SchemaRef,
}

impl DenseGroups {
    fn new(input: Arc<dyn ExecutionPlan>, aggregation: Arc<Aggregation>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(aggregation.schema.clone()),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        DenseGroups { input, aggregation, properties: Arc::new(properties) }
    }
}

/// One partition's groups: group 0 is NULL, group `n + 1` the string of integer `n`.
struct Groups {
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Whether a row of this partition was in each group (a dictionary holds values no row may have).
    seen: Vec<bool>,
    /// The groups of the last dictionary's keys, which the next batches of its row group share.
    last: Option<(ArrayRef, Vec<usize>)>,
}

impl Groups {
    /// Each row's group.
    fn of_rows(&mut self, interner: &Mutex<Interner>, column: &dyn Array) -> Result<Vec<usize>> {
        let dictionary = column
            .as_any_dictionary_opt()
            .ok_or_else(|| DataFusionError::Internal(format!("not a dictionary: {}", column.data_type())))?;
        if !matches!(&self.last, Some((values, _)) if Arc::ptr_eq(values, dictionary.values())) {
            let ids = interner
                .lock()
                .map_err(|_| DataFusionError::Internal("interner poisoned".into()))?
                .ids_of(dictionary.values().as_ref())?;
            let groups: Vec<usize> = ids.iter().map(|id| id.map_or(0, |id| id as usize + 1)).collect();
            // Sized once per dictionary, not per batch: its groups are all a batch's rows can name.
            let total = groups.iter().max().map_or(1, |max| max + 1);
            if self.seen.len() < total {
                self.seen.resize(total, false);
            }
            self.last = Some((dictionary.values().clone(), groups));
        }
        let groups = self.last.as_ref().map(|(_, groups)| groups.as_slice()).unwrap_or_default();
        let keys = dictionary.normalized_keys();
        let rows: Vec<usize> = match column.logical_nulls() {
            None => keys.iter().map(|&key| groups[key]).collect(),
            Some(nulls) => {
                keys.iter().zip(nulls.iter()).map(|(&key, valid)| if valid { groups[key] } else { 0 }).collect()
            }
        };
        for &group in &rows {
            self.seen[group] = true;
        }
        Ok(rows)
    }

    fn update(&mut self, node: &Aggregation, batch: &RecordBatch) -> Result<()> {
        let rows = self.of_rows(&node.interner, batch.column(node.column).as_ref())?;
        let total = self.seen.len();
        for ((accumulator, aggregate), filter) in self.accumulators.iter_mut().zip(&node.aggregates).zip(&node.filters)
        {
            let values = aggregate
                .expressions()
                .iter()
                .map(|expr| expr.evaluate(batch).and_then(|value| value.into_array(batch.num_rows())))
                .collect::<Result<Vec<_>>>()?;
            let filter =
                filter.as_ref().map(|f| f.evaluate(batch).and_then(|v| v.into_array(batch.num_rows()))).transpose()?;
            let filter = filter
                .as_ref()
                .map(|f| {
                    f.as_boolean_opt().ok_or_else(|| DataFusionError::Internal("a filter that is not boolean".into()))
                })
                .transpose()?;
            accumulator.update_batch(&values, &rows, filter, total)?;
        }
        Ok(())
    }

    /// The groups that had rows, and their states, as `schema`.
    fn emit(mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let total = self.seen.len().max(1);
        self.seen.resize(total, false);
        let ids: UInt32Array = (0..total).map(|group| group.checked_sub(1).map(|id| id as u32)).collect();
        let mut columns: Vec<ArrayRef> = vec![Arc::new(ids)];
        for accumulator in &mut self.accumulators {
            // An accumulator has grown to the groups it was given: a partition without rows gave none.
            let state = accumulator.state(EmitTo::All)?;
            if state.first().is_some_and(|s| s.len() != total) {
                return Ok(RecordBatch::new_empty(schema.clone()));
            }
            columns.extend(state);
        }
        // Filtered before the batch is made: the NULL group's slot is there when no row had it, in a
        // column that may be declared without nulls.
        let seen = BooleanArray::from(self.seen);
        let columns =
            columns.iter().map(|column| arrow::compute::filter(column, &seen)).collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

impl DisplayAs for DenseGroups {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let names: Vec<&str> = self.aggregation.aggregates.iter().map(|a| a.name()).collect();
        write!(f, "DenseGroupsExec: column={}, aggr=[{}]", self.aggregation.column, names.join(", "))
    }
}

impl ExecutionPlan for DenseGroups {
    fn name(&self) -> &str {
        "DenseGroupsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let aggregation = &self.aggregation;
        let arguments = aggregation.aggregates.iter().flat_map(|aggregate| aggregate.expressions());
        for expr in arguments.chain(aggregation.filters.iter().flatten().cloned()) {
            if f(&expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(DenseGroups::new(only_child(&mut children, "DenseGroupsExec")?, self.aggregation.clone())))
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context)?;
        let node = self.aggregation.clone();
        let accumulators = node.aggregates.iter().map(|a| a.create_groups_accumulator()).collect::<Result<Vec<_>>>()?;
        let stream = futures::stream::once(async move {
            let mut groups = Groups { accumulators, seen: Vec::new(), last: None };
            while let Some(batch) = input.next().await {
                groups.update(&node, &batch?)?;
            }
            groups.emit(&node.schema)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.aggregation.schema.clone(), stream)))
    }
}

/// The one child of a node with one input, taken out of `children`.
fn only_child(children: &mut Vec<Arc<dyn ExecutionPlan>>, node: &str) -> Result<Arc<dyn ExecutionPlan>> {
    match children.len() {
        1 => Ok(children.swap_remove(0)),
        n => Err(DataFusionError::Internal(format!("{node} has one input, not {n}"))),
    }
}

impl PhysicalOptimizerRule for DictionaryGroups {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else { return Ok(Transformed::no(node)) };
            Ok(match rewrite(aggregate)? {
                Some(rewritten) => Transformed::yes(rewritten),
                None => Transformed::no(node),
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "coldtrail_dictionary_groups"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rows;
    use arrow::array::{DictionaryArray, Int64Array};
    use arrow::datatypes::{Int32Type, Int8Type};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Four batches in two partitions; each batch has its own dictionaries, with the same strings under
    /// other keys, NULL keys, a NULL value in a dictionary, and values no other batch has.
    fn context(with_rule: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("f", DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), true),
            Field::new("g", DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)), true),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = |seed: i64| {
            let names = ["alpha", "beta", "gamma", "delta"];
            let f: DictionaryArray<Int32Type> = (0..50)
                .map(|i| (i % 11 != 0).then(|| names[((i + seed) % 4) as usize]))
                .chain(std::iter::once(Some(if seed == 2 { "only-in-two" } else { "alpha" })))
                .collect();
            let g_values = StringArray::from(vec![Some("x"), None, Some(if seed % 2 == 0 { "y" } else { "z" })]);
            let g_keys =
                arrow::array::Int8Array::from_iter((0..51).map(|i| (i % 7 != 0).then_some(((i + seed) % 3) as i8)));
            let g = DictionaryArray::<Int8Type>::try_new(g_keys, Arc::new(g_values)).unwrap();
            let v = Int64Array::from_iter_values((0..51).map(|i| i * 3 + seed));
            RecordBatch::try_new(schema.clone(), vec![Arc::new(f), Arc::new(g), Arc::new(v)]).unwrap()
        };
        let table =
            MemTable::try_new(schema.clone(), vec![vec![batch(0), batch(1)], vec![batch(2), batch(3)]]).unwrap();
        let config = SessionConfig::new().with_target_partitions(2);
        let ctx = SessionContext::new_with_config(config);
        let ctx = if with_rule {
            SessionContext::new_with_state(
                SessionStateBuilder::new_from_existing(ctx.state())
                    .with_physical_optimizer_rule(Arc::new(DictionaryGroups))
                    .build(),
            )
        } else {
            ctx
        };
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    #[tokio::test]
    async fn groups_by_dictionary_columns_answer_the_same_through_integers() {
        let queries = [
            "SELECT f, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi FROM t GROUP BY f ORDER BY f",
            "SELECT f, g, count(*) AS n, avg(v) AS a FROM t GROUP BY f, g ORDER BY f, g",
            "SELECT g, v % 3 AS r, count(DISTINCT f) AS fs FROM t GROUP BY g, v % 3 ORDER BY g, r",
            "SELECT f, count(*) AS n FROM t WHERE v > 20 GROUP BY f HAVING count(*) > 3 ORDER BY n DESC, f",
            "SELECT f, sum(CASE WHEN g = 'x' THEN 1 ELSE 0 END) AS xs FROM t GROUP BY f ORDER BY xs DESC, f LIMIT 2",
            "SELECT arrow_typeof(f) AS ty, count(*) FROM (SELECT f FROM t GROUP BY f) GROUP BY 1",
            // Aggregate filters; a dictionary value no row keeps; float sums, averages and booleans.
            "SELECT f, count(*) FILTER (WHERE v > 30) AS n, sum(v) FILTER (WHERE g = 'x') AS s FROM t GROUP BY f ORDER BY f",
            "SELECT f, count(*) AS n, sum(v) AS s FROM t WHERE f <> 'beta' OR f IS NULL GROUP BY f ORDER BY f",
            "SELECT g, sum(v * 0.5) AS s, max(v * 0.5) AS m, avg(v) AS a, bool_and(v > 3) AS b FROM t GROUP BY g ORDER BY g",
        ];
        let (plain, rule) = (context(false), context(true));
        for sql in queries {
            let expected = rows(&plain, sql).await;
            assert!(expected.len() > 4, "{sql}: {expected:?}");
            assert_eq!(rows(&rule, sql).await, expected, "{sql}");
            let plan = rows(&rule, &format!("EXPLAIN {sql}")).await.join("\n");
            assert!(plan.contains("DictionaryGroupsExec: decode"), "{sql}: {plan}");
            // One dictionary column alone is grouped by its integers; with more columns, DataFusion's
            // hash table groups them.
            let several = sql.contains("GROUP BY f, g") || sql.contains("GROUP BY g, v");
            assert_eq!(plan.contains("DenseGroupsExec"), !several, "{sql}: {plan}");
            assert_eq!(plan.contains("DictionaryGroupsExec: encode"), several, "{sql}: {plan}");
        }
        // A partition without rows, and a query without any, answer as before.
        for sql in [
            "SELECT f, count(*), sum(v) FROM t WHERE v < 0 GROUP BY f",
            "SELECT f, count(*) FROM t WHERE v < 80 GROUP BY f ORDER BY f",
        ] {
            assert_eq!(rows(&rule, sql).await, rows(&plain, sql).await, "{sql}");
        }
        // Grouping sets are left alone, and answer as before.
        let sets = "SELECT f, g, count(*) FROM t GROUP BY GROUPING SETS ((f), (g), ()) ORDER BY f, g";
        assert_eq!(rows(&rule, sets).await, rows(&plain, sets).await);
        let plan = rows(&rule, &format!("EXPLAIN {sets}")).await.join("\n");
        assert!(!plan.contains("DictionaryGroupsExec"), "{plan}");
    }

    #[tokio::test]
    async fn a_dictionary_column_without_nulls_is_grouped_by_its_integers() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)), false),
            Field::new("v", DataType::Int64, false),
        ]));
        let batch = |names: &[&str]| {
            let k: DictionaryArray<Int32Type> = names.iter().map(|n| Some(*n)).collect();
            let v = Int64Array::from_iter_values((0..names.len() as i64).map(|i| i * 10));
            RecordBatch::try_new(schema.clone(), vec![Arc::new(k), Arc::new(v)]).unwrap()
        };
        let table = MemTable::try_new(
            schema.clone(),
            vec![vec![batch(&["a", "b", "a"]), batch(&["c"])], vec![batch(&["b", "b"])]],
        )
        .unwrap();
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
        let ctx = SessionContext::new_with_state(
            SessionStateBuilder::new_from_existing(ctx.state())
                .with_physical_optimizer_rule(Arc::new(DictionaryGroups))
                .build(),
        );
        ctx.register_table("t", Arc::new(table)).unwrap();
        let sql = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k ORDER BY k";
        let plan = rows(&ctx, &format!("EXPLAIN {sql}")).await.join("\n");
        assert!(plan.contains("DenseGroupsExec"), "{plan}");
        let expected = [
            "+---+---+----+",
            "| k | n | s  |",
            "+---+---+----+",
            "| a | 2 | 20 |",
            "| b | 3 | 20 |",
            "| c | 1 | 0  |",
            "+---+---+----+",
        ];
        assert_eq!(rows(&ctx, sql).await, expected);
    }

    #[test]
    fn one_interner_gives_a_string_one_integer_whatever_its_key() {
        let interner = Mutex::new(Interner::default());
        let a: DictionaryArray<Int32Type> = vec![Some("a"), Some("b"), None, Some("a")].into_iter().collect();
        let b: DictionaryArray<Int32Type> = vec![Some("b"), Some("c"), Some("a")].into_iter().collect();
        let mut last = None;
        let (a, b) = (encode(&interner, &a, &mut last).unwrap(), encode(&interner, &b, &mut last).unwrap());
        // A batch sharing the last one's dictionary takes its integers without a lookup.
        let c = DictionaryArray::<Int32Type>::try_new(
            arrow::array::Int32Array::from(vec![2, 0]),
            last.as_ref().unwrap().0.clone(),
        )
        .unwrap();
        let strings = interner.lock().unwrap().values.len();
        let c = encode(&interner, &c, &mut last).unwrap();
        assert_eq!(interner.lock().unwrap().values.len(), strings);
        let ids = |x: &ArrayRef| x.as_primitive::<arrow::datatypes::UInt32Type>().iter().collect::<Vec<_>>();
        assert_eq!(ids(&a), vec![Some(0), Some(1), None, Some(0)]);
        assert_eq!(ids(&b), vec![Some(1), Some(2), Some(0)]);
        assert_eq!(ids(&c), vec![Some(0), Some(1)]);
        let interner = interner.lock().unwrap();
        let ty = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let back = interner.decode(&b, &ty).unwrap();
        let back = cast(&back, &DataType::Utf8).unwrap();
        assert_eq!(back.as_string::<i32>().iter().collect::<Vec<_>>(), vec![Some("b"), Some("c"), Some("a")]);
    }
}

//! An optimizer rule: `count(column)` of a column that cannot be null is `count(*)`, so that the column
//! is neither read nor carried (`count(i.request_id)` over a join read and decoded a million request ids
//! only to count them). The output keeps its name.

use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{DFSchema, ExprSchema, Result};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::prelude::lit;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct CountRows;

/// `expr` as a count of rows, when it counts a column of `input` that cannot be null.
fn counting_rows(expr: &Expr, input: &DFSchema) -> Option<Expr> {
    let (inner, name) = match expr {
        Expr::Alias(alias) => (alias.expr.as_ref(), alias.name.clone()),
        other => (other, other.schema_name().to_string()),
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else { return None };
    let plain = !params.distinct && params.filter.is_none() && params.order_by.is_empty();
    let [Expr::Column(column)] = &params.args[..] else { return None };
    if func.name() != "count" || !plain || input.field_from_column(column).ok()?.is_nullable() {
        return None;
    }
    let mut params = params.clone();
    params.args = vec![lit(1i64)];
    Some(Expr::AggregateFunction(AggregateFunction { func: func.clone(), params }).alias(name))
}

impl OptimizerRule for CountRows {
    fn name(&self) -> &str {
        "coldtrail_count_rows"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = plan else { return Ok(Transformed::no(plan)) };
        let rewritten: Vec<Option<Expr>> =
            aggregate.aggr_expr.iter().map(|e| counting_rows(e, aggregate.input.schema())).collect();
        if rewritten.iter().all(Option::is_none) {
            return Ok(Transformed::no(LogicalPlan::Aggregate(aggregate)));
        }
        let aggr_expr = rewritten.into_iter().zip(aggregate.aggr_expr).map(|(new, old)| new.unwrap_or(old)).collect();
        let input = Arc::clone(&aggregate.input);
        Ok(Transformed::yes(LogicalPlan::Aggregate(Aggregate::try_new(input, aggregate.group_expr, aggr_expr)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    async fn context(with_rule: bool) -> SessionContext {
        let ctx = SessionContext::new();
        if with_rule {
            ctx.add_optimizer_rule(Arc::new(CountRows));
        }
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("note", DataType::Utf8, true),
            Field::new("n", DataType::Int64, false),
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(StringArray::from_iter_values((0..100).map(|i| format!("id-{i}")))),
                Arc::new(StringArray::from(
                    (0..100).map(|i| (i % 3 == 0).then(|| format!("n{i}"))).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from_iter_values((0..100).map(|i| i % 7))),
            ],
        )
        .unwrap();
        ctx.register_batch("t", batch).unwrap();
        ctx
    }

    async fn text(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn counts_of_columns_that_cannot_be_null_read_no_column_and_keep_their_name() {
        let queries = [
            "SELECT n, count(id), count(note), count(DISTINCT id) AS d FROM t GROUP BY n ORDER BY n",
            "SELECT count(a.id) AS c, count(b.note) FROM t a JOIN t b ON a.n = b.n",
            "SELECT count(id) FILTER (WHERE n > 3) FROM t",
        ];
        let (plain, rule) = (context(false).await, context(true).await);
        for sql in queries {
            let expected = text(&plain, sql).await;
            assert_eq!(text(&rule, sql).await, expected, "{sql}");
        }
        assert!(text(&rule, queries[0]).await.contains("count(t.id)"), "the column keeps its name");
        let explain = "EXPLAIN SELECT n, count(id) FROM t GROUP BY n";
        let scan = |plan: String| plan.lines().find(|l| l.contains("TableScan")).unwrap_or_default().to_string();
        assert!(scan(text(&plain, explain).await).contains("id"), "without the rule, id is read");
        let plan = text(&rule, explain).await;
        assert!(!scan(plan.clone()).contains("id"), "id is still read: {plan}");
        // A column that may be null is still counted as itself.
        let plan = text(&rule, "EXPLAIN SELECT count(note) FROM t").await;
        assert!(plan.contains("count(t.note)"), "{plan}");
    }
}

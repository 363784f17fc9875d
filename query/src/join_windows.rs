//! An optimizer rule for the joins analysts write to relate events in time: `ON i.function_name =
//! c.session_name AND i.ts >= c.event_time - INTERVAL '5 minutes' AND i.ts <= c.event_time`.
//!
//! DataFusion evaluates a join's filter once per candidate pair, so the window's bound
//! (`c.event_time - INTERVAL '5 minutes'`) is computed again for every pair that shares the key: 5 M
//! times for 1.6 K CloudTrail calls and 1 M invocations of a day, most of the join's time (timestamp
//! minus interval is calendar arithmetic). This rule computes such a bound once per row of its side, in
//! a projection below the join, and the filter compares two columns. The join's output is unchanged: a
//! projection above it keeps its columns as they were.
//!
//! Only a column plus or minus a literal (and sums of those) is moved: it cannot fail where the
//! filter would not have been evaluated, unlike a cast or a division, so computing it for rows that
//! meet no pair changes no answer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::logical_expr::{BinaryExpr, Expr, Join, LogicalPlan, Operator, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// Names of the computed columns: unique in a process, and removed again above the join.
static NEXT: AtomicUsize = AtomicUsize::new(0);
const PREFIX: &str = "__coldtrail_window_";

/// See the module documentation.
#[derive(Debug, Default)]
pub struct JoinWindows;

/// Whether `expr` is a column plus or minus a literal, or a sum of those.
fn is_shift(expr: &Expr) -> bool {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Plus | Operator::Minus, right }) => {
            let shifted = |e: &Expr| matches!(e, Expr::Column(_)) || is_shift(e);
            (shifted(left) && matches!(**right, Expr::Literal(..)))
                || (matches!(**left, Expr::Literal(..)) && shifted(right))
        }
        _ => false,
    }
}

/// Which side's schema holds every column of `expr`: `Some(true)` the left, `Some(false)` the right.
fn side(expr: &Expr, left: &DFSchema, right: &DFSchema) -> Option<bool> {
    let columns = expr.column_refs();
    if columns.iter().all(|c| left.has_column(c)) {
        Some(true)
    } else if columns.iter().all(|c| right.has_column(c)) {
        Some(false)
    } else {
        None
    }
}

/// `input` with the columns it has and `computed` added.
fn with_columns(input: Arc<LogicalPlan>, computed: Vec<Expr>) -> Result<Arc<LogicalPlan>> {
    if computed.is_empty() {
        return Ok(input);
    }
    let mut exprs: Vec<Expr> = input.schema().columns().into_iter().map(Expr::Column).collect();
    exprs.extend(computed);
    Ok(Arc::new(LogicalPlan::Projection(Projection::try_new(exprs, input)?)))
}

impl OptimizerRule for JoinWindows {
    fn name(&self) -> &str {
        "coldtrail_join_windows"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(&self, plan: LogicalPlan, _config: &dyn OptimizerConfig) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Join(join) = plan else { return Ok(Transformed::no(plan)) };
        let Some(filter) = join.filter.clone() else { return Ok(Transformed::no(LogicalPlan::Join(join))) };
        let (mut left, mut right) = (Vec::new(), Vec::new());
        let filter = filter.transform_down(|expr| {
            if !is_shift(&expr) {
                return Ok(Transformed::no(expr));
            }
            let Some(on_left) = side(&expr, join.left.schema(), join.right.schema()) else {
                return Ok(Transformed::no(expr));
            };
            let name = format!("{PREFIX}{}", NEXT.fetch_add(1, Ordering::Relaxed));
            (if on_left { &mut left } else { &mut right }).push(expr.alias(&name));
            Ok(Transformed::new(Expr::Column(Column::new_unqualified(name)), true, TreeNodeRecursion::Jump))
        })?;
        if !filter.transformed {
            return Ok(Transformed::no(LogicalPlan::Join(join)));
        }
        let output: Vec<Expr> = join.schema.columns().into_iter().map(Expr::Column).collect();
        let rewritten = Join::try_new(
            with_columns(join.left, left)?,
            with_columns(join.right, right)?,
            join.on,
            Some(filter.data),
            join.join_type,
            join.join_constraint,
            join.null_equality,
            join.null_aware,
        )?;
        let above = Projection::try_new(output, Arc::new(LogicalPlan::Join(rewritten)))?;
        Ok(Transformed::yes(LogicalPlan::Projection(above)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::prelude::SessionContext;

    const MINUTE: i64 = 60_000_000;

    /// Calls of 3 sessions, and invocations of the same names a minute apart over two hours.
    async fn context(with_rule: bool) -> SessionContext {
        let ctx = SessionContext::new();
        if with_rule {
            ctx.add_optimizer_rule(Arc::new(JoinWindows));
        }
        let ts = |name: &str| Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false);
        let calls = Schema::new(vec![ts("event_time"), Field::new("session_name", DataType::Utf8, true)]);
        let names = ["a", "b", "c"];
        let times: Vec<i64> = (0..30).map(|i| i * 4 * MINUTE + 90_000_000).collect();
        let sessions: Vec<Option<&str>> = (0..30).map(|i| (i % 7 != 0).then_some(names[i % 3])).collect();
        let batch = RecordBatch::try_new(
            Arc::new(calls),
            vec![
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                Arc::new(StringArray::from(sessions)),
            ],
        )
        .unwrap();
        ctx.register_batch("cloudtrail", batch).unwrap();
        let invocations = Schema::new(vec![
            ts("ts"),
            Field::new("function_name", DataType::Utf8, false),
            Field::new("id", DataType::Int64, false),
        ]);
        let n = 360i64;
        let batch = RecordBatch::try_new(
            Arc::new(invocations),
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values((0..n).map(|i| i * MINUTE / 3)).with_timezone("UTC"),
                ),
                Arc::new(StringArray::from_iter_values((0..n).map(|i| names[(i % 3) as usize]))),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap();
        ctx.register_batch("invocations", batch).unwrap();
        ctx
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
        text.lines().map(str::to_string).collect()
    }

    #[tokio::test]
    async fn windows_are_computed_once_per_row_and_answers_do_not_change() {
        let queries = [
            "SELECT c.event_time, c.session_name, count(i.id) AS n FROM cloudtrail c JOIN invocations i
               ON i.function_name = c.session_name AND i.ts >= c.event_time - INTERVAL '5 minutes' AND i.ts <= c.event_time
             GROUP BY 1, 2 ORDER BY 1, 2",
            // An outer join keeps the calls no invocation is near; the bound is on either side.
            "SELECT c.event_time, c.session_name, i.id FROM cloudtrail c LEFT JOIN invocations i
               ON i.function_name = c.session_name AND i.ts + INTERVAL '2 minutes' >= c.event_time
              AND i.ts <= c.event_time + INTERVAL '1 minute' - INTERVAL '30 seconds'
             ORDER BY 1, 2, 3",
            "SELECT * FROM cloudtrail c WHERE EXISTS (SELECT 1 FROM invocations i
               WHERE i.function_name = c.session_name AND i.ts BETWEEN c.event_time - INTERVAL '1 minute' AND c.event_time)
             ORDER BY 1",
        ];
        let (plain, rule) = (context(false).await, context(true).await);
        for sql in queries {
            let expected = rows(&plain, sql).await;
            assert!(expected.len() > 5, "{sql}: {expected:?}");
            assert_eq!(rows(&rule, sql).await, expected, "{sql}");
        }
        let plan = rows(&rule, &format!("EXPLAIN {}", queries[0])).await.join("\n");
        assert!(plan.contains(PREFIX), "{plan}");
        let filter = plan.lines().find(|l| l.contains("HashJoinExec")).unwrap_or_default();
        assert!(!filter.contains("IntervalMonthDayNano"), "the window is still computed per pair: {filter}");
    }

    #[test]
    fn only_a_column_shifted_by_literals_is_moved() {
        use datafusion::prelude::{col, lit};
        assert!(is_shift(&(col("t") - lit(5))));
        assert!(is_shift(&(lit(5) + (col("t") - lit(1)))));
        assert!(!is_shift(&col("t")));
        assert!(!is_shift(&(col("t") / lit(0))));
        assert!(!is_shift(&(col("t") - col("u"))));
    }
}

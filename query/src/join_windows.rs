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
//!
//! An inner join whose filter holds one side's timestamp in a window of fixed width around the other's
//! (`i.ts >= c.event_time - INTERVAL '5 minutes' AND i.ts <= c.event_time`) also gets a band key. The
//! hash key alone (a function's name) pairs every call with every invocation of its function in the
//! range, and the filter then throws away all but five minutes of them: at 50M invocations, most of
//! the join's time. Time is cut into buckets at least as wide as the window, so a window touches at
//! most two: the bucket of its start and that of its end. The window's side is repeated once per
//! bucket it touches (the second copy's bucket is NULL when both are the same, which matches
//! nothing), the other side is in the one bucket of its timestamp, and the bucket joins the hash key.
//! Every pair the filter accepts still meets exactly once, so an inner join's answer is unchanged;
//! outer, semi and anti joins would count a repeated row twice and are left alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, NullEquality, Result, ScalarValue};
use datafusion::functions_nested::expr_fn::make_array;
use datafusion::logical_expr::expr_fn::when;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    cast, lit, BinaryExpr, Expr, Join, JoinType, LogicalPlan, LogicalPlanBuilder, Operator, Projection,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// Names of the computed columns: unique in a process, and removed again above the join.
static NEXT: AtomicUsize = AtomicUsize::new(0);
const PREFIX: &str = "__coldtrail_window_";
/// Names of the band keys: a join with one already has its band.
const BAND: &str = "__coldtrail_band_";
const NANOS_PER_SECOND: i128 = 1_000_000_000;

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

/// A fixed duration written as a literal, in nanoseconds: an interval without months or days (whose
/// length depends on the calendar), or a duration.
fn duration_nanos(value: &ScalarValue) -> Option<i128> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 && v.days == 0 => Some(v.nanoseconds.into()),
        ScalarValue::IntervalDayTime(Some(v)) if v.days == 0 => Some(i128::from(v.milliseconds) * 1_000_000),
        ScalarValue::DurationSecond(Some(v)) => Some(i128::from(*v) * NANOS_PER_SECOND),
        ScalarValue::DurationMillisecond(Some(v)) => Some(i128::from(*v) * 1_000_000),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(i128::from(*v) * 1_000),
        ScalarValue::DurationNanosecond(Some(v)) => Some((*v).into()),
        _ => None,
    }
}

/// `expr` as a column shifted by a fixed duration: the column and the shift in nanoseconds.
fn shifted_column(expr: &Expr) -> Option<(&Column, i128)> {
    match expr {
        Expr::Column(column) => Some((column, 0)),
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Plus, right }) => match (&**left, &**right) {
            (Expr::Literal(value, _), other) | (other, Expr::Literal(value, _)) => {
                let (column, shift) = shifted_column(other)?;
                Some((column, shift.checked_add(duration_nanos(value)?)?))
            }
            _ => None,
        },
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Minus, right }) => match &**right {
            Expr::Literal(value, _) => {
                let (column, shift) = shifted_column(left)?;
                Some((column, shift.checked_sub(duration_nanos(value)?)?))
            }
            _ => None,
        },
        _ => None,
    }
}

/// One side's timestamp held in a window of the other's: `point` lies within `[window + from, window +
/// to]` (nanoseconds).
#[derive(Debug, Clone, PartialEq)]
struct Band {
    point: Column,
    window: Column,
    from: i128,
    to: i128,
    /// Whether `point` is a column of the join's left input.
    point_on_left: bool,
}

/// The band of `join`'s filter, if it is an inner join whose filter bounds a timestamp of one side from
/// below and above by the same timestamp of the other, each shifted by a fixed duration.
fn band(join: &Join) -> Option<Band> {
    let filter = join.filter.as_ref()?;
    let in_on = |e: &Expr| e.column_refs().iter().any(|c| c.name.starts_with(BAND));
    if join.join_type != JoinType::Inner
        || join.null_equality != NullEquality::NullEqualsNothing
        || join.on.iter().any(|(l, r)| in_on(l) || in_on(r))
    {
        return None;
    }
    let (left, right) = (join.left.schema(), join.right.schema());
    let timestamp = |c: &Column| {
        let schema = if left.has_column(c) { left } else { right };
        schema.qualified_field_from_column(c).is_ok_and(|(_, f)| matches!(f.data_type(), DataType::Timestamp(..)))
    };
    // Each comparison `x + a >= y + b` read both ways: x is at least y + (b - a), and y is at most x +
    // (a - b). The reading with the written left operand as the point comes first, so the side that
    // carries the window's arithmetic (the event) is the one repeated.
    let mut bounds: Vec<(Band, bool)> = Vec::new();
    for conjunct in split_conjunction(filter) {
        let Expr::BinaryExpr(BinaryExpr { left: x, op, right: y }) = conjunct else { continue };
        let at_least = match op {
            Operator::GtEq | Operator::Gt => true,
            Operator::LtEq | Operator::Lt => false,
            _ => continue,
        };
        let (Some((x, a)), Some((y, b))) = (shifted_column(x), shifted_column(y)) else { continue };
        let x_on_left = left.has_column(x);
        let y_on_left = left.has_column(y);
        if x_on_left == y_on_left
            || !(x_on_left || right.has_column(x))
            || !(y_on_left || right.has_column(y))
            || !timestamp(x)
            || !timestamp(y)
        {
            continue;
        }
        let (Some(shift_x), Some(shift_y)) = (b.checked_sub(a), a.checked_sub(b)) else { continue };
        let reading = |point: &Column, window: &Column, point_on_left, shift| Band {
            point: point.clone(),
            window: window.clone(),
            from: shift,
            to: shift,
            point_on_left,
        };
        bounds.push((reading(x, y, x_on_left, shift_x), at_least));
        bounds.push((reading(y, x, y_on_left, shift_y), !at_least));
    }
    for (lower, is_lower) in &bounds {
        for (upper, is_upper_lower) in &bounds {
            if *is_lower
                && !*is_upper_lower
                && lower.point == upper.point
                && lower.window == upper.window
                && lower.from <= upper.to
            {
                return Some(Band { to: upper.to, ..lower.clone() });
            }
        }
    }
    None
}

/// How many of a timestamp's `unit` make a second.
fn per_second(unit: &TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// The bucket of `timestamp` (an expression of a timestamp in `unit`) in buckets of `seconds`: its
/// value divided by the bucket's width. Division truncates, so the bucket around the epoch is twice as
/// wide as the others, which only makes it hold more.
fn bucket(timestamp: Expr, unit: &TimeUnit, seconds: i64) -> Expr {
    cast(timestamp, DataType::Int64) / lit(seconds.saturating_mul(per_second(unit)))
}

/// The band's keys: the expression of the point's bucket, and the list of the window's buckets.
fn band_keys(band: &Band, join: &Join) -> Option<(Expr, Expr)> {
    let unit = |c: &Column, schema: &DFSchema| match schema.qualified_field_from_column(c).ok()?.1.data_type() {
        DataType::Timestamp(unit, _) => Some(*unit),
        _ => None,
    };
    let (point_schema, window_schema) = if band.point_on_left {
        (join.left.schema(), join.right.schema())
    } else {
        (join.right.schema(), join.left.schema())
    };
    let (point_unit, window_unit) = (unit(&band.point, point_schema)?, unit(&band.window, window_schema)?);
    // Whole seconds, so that a bucket is a whole number of either side's unit.
    let width = band.to - band.from;
    let seconds = i64::try_from(((width + NANOS_PER_SECOND - 1) / NANOS_PER_SECOND).max(1)).ok()?;
    let shifted = |nanos: i128| -> Option<Expr> {
        let column = Expr::Column(band.window.clone());
        if nanos == 0 {
            return Some(column);
        }
        let interval = IntervalMonthDayNano { months: 0, days: 0, nanoseconds: i64::try_from(nanos).ok()? };
        Some(column + lit(ScalarValue::IntervalMonthDayNano(Some(interval))))
    };
    let first = bucket(shifted(band.from)?, &window_unit, seconds);
    let last = bucket(shifted(band.to)?, &window_unit, seconds);
    let second = when(last.clone().not_eq(first.clone()), last).end().ok()?;
    Some((bucket(Expr::Column(band.point.clone()), &point_unit, seconds), make_array(vec![first, second])))
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
        let keys = band(&join).and_then(|band| Some((band_keys(&band, &join)?, band.point_on_left)));
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
        if !filter.transformed && keys.is_none() {
            return Ok(Transformed::no(LogicalPlan::Join(join)));
        }
        let output: Vec<Expr> = join.schema.columns().into_iter().map(Expr::Column).collect();
        let mut on = join.on;
        let (mut left_input, mut right_input) = (join.left, join.right);
        if let Some(((point, windows), point_on_left)) = keys {
            let id = NEXT.fetch_add(1, Ordering::Relaxed);
            let (point_name, window_name) = (format!("{BAND}{id}_point"), format!("{BAND}{id}_window"));
            let (point_side, window_side) =
                if point_on_left { (&mut left, &mut right) } else { (&mut right, &mut left) };
            point_side.push(point.alias(&point_name));
            window_side.push(windows.alias(&window_name));
            let windows = |input: Arc<LogicalPlan>, computed| -> Result<Arc<LogicalPlan>> {
                let input = with_columns(input, computed)?;
                Ok(Arc::new(LogicalPlanBuilder::from(input).unnest_column(window_name.as_str())?.build()?))
            };
            let (point_key, window_key) = (
                Expr::Column(Column::new_unqualified(&point_name)),
                Expr::Column(Column::new_unqualified(&window_name)),
            );
            if point_on_left {
                left_input = with_columns(left_input, std::mem::take(&mut left))?;
                right_input = windows(right_input, std::mem::take(&mut right))?;
                on.push((point_key, window_key));
            } else {
                left_input = windows(left_input, std::mem::take(&mut left))?;
                right_input = with_columns(right_input, std::mem::take(&mut right))?;
                on.push((window_key, point_key));
            }
        }
        let rewritten = Join::try_new(
            with_columns(left_input, left)?,
            with_columns(right_input, right)?,
            on,
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
    use crate::testing::rows;
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

    #[tokio::test]
    async fn an_inner_join_in_a_time_window_is_keyed_on_time_buckets_and_answers_do_not_change() {
        let queries = [
            // The invocations in the five minutes before each call: the calls are repeated per bucket.
            "SELECT c.event_time, c.session_name, i.id FROM cloudtrail c JOIN invocations i
               ON i.function_name = c.session_name AND i.ts >= c.event_time - INTERVAL '5 minutes' AND i.ts <= c.event_time
             ORDER BY 1, 2, 3",
            // The point on the other side, written as BETWEEN: the invocations are repeated.
            "SELECT c.event_time, i.id FROM cloudtrail c JOIN invocations i
               ON i.function_name = c.session_name AND c.event_time BETWEEN i.ts AND i.ts + INTERVAL '7 minutes'
             ORDER BY 1, 2",
            // Strict bounds, a width of no whole number of seconds, shifts on both sides.
            "SELECT c.event_time, i.id FROM cloudtrail c JOIN invocations i
               ON i.function_name = c.session_name AND i.ts + INTERVAL '500 milliseconds' > c.event_time - INTERVAL '90 seconds'
              AND i.ts < c.event_time + INTERVAL '1 second'
             ORDER BY 1, 2",
            // Windows that start before the epoch, where buckets are cut by truncation.
            "SELECT c.event_time, i.id FROM cloudtrail c JOIN invocations i
               ON i.function_name = c.session_name AND i.ts >= c.event_time - INTERVAL '10 minutes'
              AND i.ts <= c.event_time - INTERVAL '1 minute'
             ORDER BY 1, 2",
            // No key but the window: the buckets make it a hash join rather than a nested loop.
            "SELECT c.event_time, count(*) AS n, sum(i.id) AS ids FROM cloudtrail c JOIN invocations i
               ON i.ts >= c.event_time - INTERVAL '3 minutes' AND i.ts < c.event_time
             GROUP BY 1 ORDER BY 1",
        ];
        let (plain, rule) = (context(false).await, context(true).await);
        for sql in queries {
            let expected = rows(&plain, sql).await;
            assert!(expected.len() > 5, "{sql}: {expected:?}");
            assert_eq!(rows(&rule, sql).await, expected, "{sql}");
            let plan = rows(&rule, &format!("EXPLAIN {sql}")).await.join("\n");
            let join = plan.lines().find(|l| l.contains("HashJoinExec")).unwrap_or_default();
            assert!(join.contains(BAND), "no band key: {plan}");
            assert!(!plan.contains("NestedLoopJoinExec"), "{plan}");
        }
    }

    #[test]
    fn a_band_needs_an_inner_join_and_two_bounds_of_fixed_width() {
        use datafusion::logical_expr::JoinConstraint;
        use datafusion::prelude::{col, lit as value};
        let ts = |name: &str| Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false);
        let table = |name: &str, field: Field| {
            let schema = Arc::new(Schema::new(vec![field]));
            Arc::new(datafusion::logical_expr::table_scan(Some(name), &schema, None).unwrap().build().unwrap())
        };
        let minutes = |m: i64| {
            value(ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 0, m * 60_000_000_000))))
        };
        let join = |filter: Expr, join_type| {
            let (c, i) = (table("c", ts("t")), table("i", ts("ts")));
            Join::try_new(
                c,
                i,
                vec![],
                Some(filter),
                join_type,
                JoinConstraint::On,
                NullEquality::NullEqualsNothing,
                false,
            )
            .unwrap()
        };
        let window = col("i.ts").gt_eq(col("c.t") - minutes(5)).and(col("i.ts").lt_eq(col("c.t")));
        let found = band(&join(window.clone(), JoinType::Inner)).expect("a band");
        assert_eq!((found.point.name.as_str(), found.window.name.as_str()), ("ts", "t"));
        assert_eq!((found.from, found.to, found.point_on_left), (-300 * NANOS_PER_SECOND, 0, false));
        for other in [JoinType::Left, JoinType::Right, JoinType::Full, JoinType::LeftSemi, JoinType::RightAnti] {
            assert_eq!(band(&join(window.clone(), other)), None, "{other}");
        }
        // One bound only, an empty window, a month (whose length varies), a column that is not a time.
        let one = col("i.ts").gt_eq(col("c.t") - minutes(5));
        let empty = col("i.ts").gt_eq(col("c.t")).and(col("i.ts").lt_eq(col("c.t") - minutes(1)));
        let month = ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(1, 0, 0)));
        let calendar = col("i.ts").gt_eq(col("c.t") - value(month)).and(col("i.ts").lt_eq(col("c.t")));
        for filter in [one, empty, calendar] {
            assert_eq!(band(&join(filter.clone(), JoinType::Inner)), None, "{filter}");
        }
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

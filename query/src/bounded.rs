//! Bounds on the functions whose result can be far larger than their arguments: `repeat`, `lpad`,
//! `rpad`, `array_repeat`, `array_resize`, `range` and `generate_series` (the array ones), `replace`
//! and `regexp_replace`.
//!
//! DataFusion's memory pool counts what sorts, joins and aggregations hold, not the arrays a function
//! returns, so `SELECT length(repeat('x', 1000000000)) FROM generate_series(1, 3)` grew the server by
//! 2.8 GB with a pool of 512 MiB, and a few analysts at once could exhaust it for everyone. Each of these
//! functions is registered again under its name (and aliases), wrapped: before it runs, the bytes its
//! result can reach in one batch are worked out from its arguments, and past `GROWTH_BYTES_MAX` the
//! statement fails with a clear error instead.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, IntervalUnit, TimeUnit};
use datafusion::common::{exec_err, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// Most bytes one call of a bounded function may make for one batch.
pub const GROWTH_BYTES_MAX: u64 = 256 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(text, n)`: each text `n` times.
    Repeat,
    /// `lpad(text, n [, fill])`, `rpad`: `n` characters, up to 4 bytes each.
    Pad,
    /// `array_repeat(element, n)`, `array_resize(array, n [, value])`: `n` elements.
    Elements,
    /// `range([start,] stop [, step])`, `generate_series`: one element per step.
    Range,
    /// `replace(text, from, to)`, `regexp_replace(text, pattern, to [, flags])`.
    Replace,
}

const BOUNDED: [(&str, Growth); 9] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("array_repeat", Growth::Elements),
    ("array_resize", Growth::Elements),
    ("range", Growth::Range),
    ("generate_series", Growth::Range),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::Replace),
];

/// Wraps the registered functions that `BOUNDED` names.
pub fn register(ctx: &SessionContext) {
    let state = ctx.state();
    for (name, growth) in BOUNDED {
        if let Some(inner) = state.scalar_functions().get(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded { inner: inner.as_ref().clone(), growth }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    growth: Growth,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.result_bytes(&args.args, args.number_rows)?;
        if bytes > GROWTH_BYTES_MAX as u128 {
            return exec_err!(
                "{}(...) would make about {bytes} bytes for {} rows, more than the {} bytes one call may make; \
                 ask for less or for fewer rows at once",
                self.name(),
                args.number_rows,
                GROWTH_BYTES_MAX
            );
        }
        self.inner.invoke_with_args(args)
    }
}

impl Bounded {
    /// The most bytes the result can hold, from the arguments.
    fn result_bytes(&self, args: &[ColumnarValue], rows: usize) -> Result<u128> {
        let arg = |i: usize| args.get(i);
        Ok(match self.growth {
            Growth::Repeat => sum_of_products(byte_lengths(arg(0), rows)?, values(arg(1), rows)?, |len, n| len * n),
            Growth::Pad => values(arg(1), rows)?.iter().map(|n| 4 * n).sum(),
            Growth::Elements => {
                let element = args.first().map_or(0, |value| array_bytes(value, rows));
                values(arg(1), rows)?.iter().map(|n| n * (element + 8)).sum()
            }
            Growth::Range => {
                let (start, stop, step) = match args.len() {
                    1 => (vec![0; rows], signed(arg(0), rows)?, vec![1; rows]),
                    2 => (signed(arg(0), rows)?, signed(arg(1), rows)?, vec![1; rows]),
                    _ => (signed(arg(0), rows)?, signed(arg(1), rows)?, signed(arg(2), rows)?),
                };
                let steps = start.iter().zip(&stop).zip(&step).map(|((start, stop), step)| match step {
                    0 => 0,
                    step => ((stop - start) / step).max(-1) as u128 + 1,
                });
                steps.map(|n| n * 8).sum()
            }
            Growth::Replace => {
                let (text, to) = (byte_lengths(arg(0), rows)?, byte_lengths(arg(2), rows)?);
                // Every position of the text may match (an empty match), and each match becomes `to`.
                sum_of_products(text, to, |text, to| (text + 1) * (to + 1))
            }
        })
    }
}

fn sum_of_products(a: Vec<u128>, b: Vec<u128>, f: impl Fn(u128, u128) -> u128) -> u128 {
    a.into_iter().zip(b).map(|(a, b)| f(a, b)).sum()
}

fn to_array(value: &ColumnarValue, rows: usize) -> Result<ArrayRef> {
    value.to_array(rows.max(1))
}

/// The byte length of each text, 0 for a null or a missing argument.
fn byte_lengths(value: Option<&ColumnarValue>, rows: usize) -> Result<Vec<u128>> {
    let Some(value) = value else { return Ok(vec![0; rows]) };
    if let ColumnarValue::Scalar(scalar) = value {
        let len = match scalar {
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => s.len(),
            _ => 0,
        };
        return Ok(vec![len as u128; rows]);
    }
    let lengths = arrow::compute::kernels::length::length(to_array(value, rows)?.as_ref())?;
    signed_of(&lengths).map(|v| v.into_iter().map(|n| n.max(0) as u128).collect())
}

/// Each value as a count (negative and null: 0).
fn values(value: Option<&ColumnarValue>, rows: usize) -> Result<Vec<u128>> {
    Ok(signed(value, rows)?.into_iter().map(|n| n.max(0) as u128).collect())
}

/// Each value as a signed integer: integers as they are, dates and times in nanoseconds, intervals in
/// nanoseconds (a month as 30 days). Null and missing: 0.
fn signed(value: Option<&ColumnarValue>, rows: usize) -> Result<Vec<i128>> {
    let Some(value) = value else { return Ok(vec![0; rows]) };
    let array = to_array(value, rows)?;
    let mut out = signed_of(&array)?;
    out.resize(rows, *out.last().unwrap_or(&0));
    Ok(out)
}

fn signed_of(array: &ArrayRef) -> Result<Vec<i128>> {
    const DAY_NANOS: i128 = 86_400_000_000_000;
    let out = match array.data_type() {
        DataType::Interval(_) => {
            let intervals = cast(array, &DataType::Interval(IntervalUnit::MonthDayNano))?;
            let intervals = intervals.as_primitive::<IntervalMonthDayNanoType>();
            (0..intervals.len())
                .map(|i| match intervals.is_null(i) {
                    true => 0,
                    false => {
                        let v = intervals.value(i);
                        (v.months as i128 * 30 + v.days as i128) * DAY_NANOS + v.nanoseconds as i128
                    }
                })
                .collect()
        }
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(..) => {
            let nanos = cast(&cast(array, &DataType::Timestamp(TimeUnit::Nanosecond, None))?, &DataType::Int64)?;
            nanos.as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(0) as i128).collect()
        }
        _ => match cast(array, &DataType::Int64) {
            Ok(ints) => ints.as_primitive::<Int64Type>().iter().map(|v| v.unwrap_or(0) as i128).collect(),
            Err(_) => vec![0; array.len()],
        },
    };
    Ok(out)
}

/// The bytes of one row of an argument (an element to repeat).
fn array_bytes(value: &ColumnarValue, rows: usize) -> u128 {
    match value {
        ColumnarValue::Scalar(scalar) => scalar.size() as u128,
        ColumnarValue::Array(array) => (array.get_array_memory_size() / rows.max(1)) as u128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(ctx: &SessionContext, sql: &str) -> Result<usize> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn functions_that_outgrow_their_arguments_fail_past_the_bound_and_work_below_it() {
        let ctx = SessionContext::new();
        register(&ctx);
        let refused = [
            "SELECT length(repeat('x', 1000000000)) FROM generate_series(1, 3)",
            "SELECT length(repeat(v, 300000000)) FROM (VALUES ('x'), ('y')) t(v)",
            "SELECT lpad('x', 2000000000)",
            "SELECT rpad(v, 100000000) FROM (VALUES ('a')) t(v)",
            "SELECT cardinality(range(1, 1000000000))",
            "SELECT cardinality(generate_series(0, 100000000000, 7))",
            "SELECT cardinality(range(TIMESTAMP '2026-01-01', TIMESTAMP '2026-12-31', INTERVAL '100 milliseconds'))",
            "SELECT cardinality(array_repeat(1, 100000000))",
            "SELECT cardinality(array_repeat(repeat('x', 1000), 1000000))",
            "SELECT cardinality(array_resize([1], 100000000, 0))",
            "SELECT length(replace(repeat('a', 1000), 'a', repeat('b', 1000000)))",
            "SELECT length(regexp_replace(repeat('a', 100000), '', repeat('b', 10000), 'g'))",
        ];
        for sql in refused {
            let err = run(&ctx, sql).await.expect_err(sql).to_string();
            assert!(err.contains("would make about"), "{sql}: {err}");
        }
        let allowed = [
            "SELECT repeat('-', 80), lpad('7', 10, '0'), rpad('x', 3)",
            "SELECT cardinality(range(1, 1000000)), cardinality(generate_series(1, 10))",
            "SELECT range(DATE '2026-01-01', DATE '2026-02-01', INTERVAL '1 day')",
            "SELECT array_repeat('a', 3), array_resize([1, 2], 5, 0)",
            "SELECT replace(v, 'a', 'bb'), regexp_replace(v, '[0-9]+', 'N', 'g') FROM (VALUES ('a1'), ('b22')) t(v)",
            "SELECT repeat(v, n) FROM (VALUES ('ab', 2), (NULL, 3), ('c', -1)) t(v, n)",
        ];
        for sql in allowed {
            assert!(run(&ctx, sql).await.is_ok(), "{sql}: {:?}", run(&ctx, sql).await);
        }
    }
}

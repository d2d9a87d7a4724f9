//! Functions that make more than they read, bounded before they run.
//!
//! DataFusion's operators reserve memory from the query's pool before they hold data,
//! but a scalar function allocates its answer without asking: `repeat('x', 800000000)`
//! is 800 MB in one call, `range(1, 1000000000)` 8 GB, and the process was killed by
//! the kernel long before the query's timeout was checked. Each function below is
//! wrapped in [`Capped`], which, before the function runs on a batch:
//!
//! - estimates what it will make for that batch (an upper bound from its arguments:
//!   lengths and counts, per row, summed over the batch's rows; a constant argument
//!   counts once per row, since the answer is repeated per row downstream);
//! - refuses with 413 past `sql.max_function_output_bytes`;
//! - reserves the estimate in the query's pool (so `sql.memory_per_query_bytes` and
//!   `sql.memory_total_bytes` hold) and returns it when the call ends.
//!
//! The wrapper is volatile, so the optimizer never folds a constant call at planning
//! time into a literal that would escape the estimate (a folded call would be
//! evaluated once for one row, then copied into every row of every batch).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{
    DataType, FieldRef, Int64Type, IntervalMonthDayNanoType, IntervalUnit, TimeUnit,
};
use datafusion::common::{DataFusionError, ExprSchema, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::sort_properties::{ExprProperties, SortProperties};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// The functions wrapped, by their DataFusion name (aliases follow their function).
pub const CAPPED: &[&str] = &[
    "repeat",
    "lpad",
    "rpad",
    "replace",
    "regexp_replace",
    "range",
    "generate_series",
    "array_repeat",
    "array_resize",
];

/// Replaces each [`CAPPED`] function of `ctx` by its bounded wrapper, charging `pool`.
pub fn install(ctx: &SessionContext, pool: &Arc<dyn MemoryPool>, max_bytes: usize) {
    let functions = ctx.state().scalar_functions().clone();
    for name in CAPPED {
        if let Some(udf) = functions.get(*name) {
            let capped = Capped::new(Arc::clone(udf.inner()), Arc::clone(pool), max_bytes);
            ctx.register_udf(ScalarUDF::new_from_impl(capped));
        }
    }
}

#[derive(Debug)]
pub struct Capped {
    inner: Arc<dyn ScalarUDFImpl>,
    signature: Signature,
    pool: Arc<dyn MemoryPool>,
    max_bytes: usize,
}

impl Capped {
    fn new(inner: Arc<dyn ScalarUDFImpl>, pool: Arc<dyn MemoryPool>, max_bytes: usize) -> Self {
        let mut signature = inner.signature().clone();
        signature.volatility = Volatility::Volatile;
        Capped {
            inner,
            signature,
            pool,
            max_bytes,
        }
    }
}

impl PartialEq for Capped {
    fn eq(&self, other: &Self) -> bool {
        self.inner.name() == other.inner.name()
            && self.max_bytes == other.max_bytes
            && Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Eq for Capped {}

impl Hash for Capped {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
        self.max_bytes.hash(state);
    }
}

/// An argument as one array and whether it is a constant (one row for all).
struct Arg {
    values: ArrayRef,
    constant: bool,
}

impl Arg {
    fn of(v: &ColumnarValue) -> Result<Arg> {
        Ok(match v {
            ColumnarValue::Array(a) => Arg {
                values: Arc::clone(a),
                constant: false,
            },
            ColumnarValue::Scalar(s) => Arg {
                values: s.to_array_of_size(1)?,
                constant: true,
            },
        })
    }

    fn row(&self, i: usize) -> usize {
        if self.constant { 0 } else { i }
    }

    /// The argument as integers, per row of the batch (null: 0).
    fn ints(&self) -> Result<Vec<i64>> {
        let a = datafusion::arrow::compute::cast(&self.values, &DataType::Int64)?;
        let a = a.as_primitive::<Int64Type>();
        Ok((0..a.len())
            .map(|i| if a.is_null(i) { 0 } else { a.value(i) })
            .collect())
    }

    /// The argument as nanoseconds since the epoch (dates and timestamps).
    fn nanos(&self) -> Result<Vec<i64>> {
        let ts = datafusion::arrow::compute::cast(
            &self.values,
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
        )?;
        Arg {
            values: ts,
            constant: self.constant,
        }
        .ints()
    }

    /// An interval as nanoseconds (a month as 28 days: an upper bound on the count).
    fn interval_nanos(&self) -> Result<Vec<i64>> {
        let a = datafusion::arrow::compute::cast(
            &self.values,
            &DataType::Interval(IntervalUnit::MonthDayNano),
        )?;
        let a = a.as_primitive::<IntervalMonthDayNanoType>();
        const DAY: i128 = 86_400_000_000_000;
        Ok((0..a.len())
            .map(|i| {
                if a.is_null(i) {
                    return 0;
                }
                let v = a.value(i);
                let n = v.months as i128 * 28 * DAY + v.days as i128 * DAY + v.nanoseconds as i128;
                n.clamp(i64::MIN as i128, i64::MAX as i128) as i64
            })
            .collect())
    }

    /// Bytes of each value of a string or binary argument (null: 0).
    fn lens(&self) -> Result<Vec<i64>> {
        if self.values.data_type().is_null() {
            return Ok(vec![0; self.values.len()]);
        }
        let l = length(&self.values)?;
        Arg {
            values: l,
            constant: self.constant,
        }
        .ints()
    }

    /// Bytes a value of this argument takes, on average (lists, structs, anything).
    fn value_bytes(&self) -> u128 {
        (self.values.get_array_memory_size() / self.values.len().max(1)).max(8) as u128
    }
}

/// The rows of the batch, and an upper bound of what `name` makes from `args`.
fn estimate(name: &str, args: &[ColumnarValue], rows: usize) -> Result<u128> {
    let a: Vec<Arg> = args.iter().map(Arg::of).collect::<Result<_>>()?;
    let get = |i: usize| a.get(i);
    let per_row = |f: &dyn Fn(usize) -> u128| -> u128 { (0..rows).map(f).sum() };
    let pos = |v: i64| v.max(0) as u128;
    Ok(match name {
        "repeat" => match (get(0), get(1)) {
            (Some(s), Some(n)) => {
                let (l, n_) = (s.lens()?, n.ints()?);
                per_row(&|i| pos(l[s.row(i)]) * pos(n_[n.row(i)]))
            }
            _ => 0,
        },
        "lpad" | "rpad" => match get(1) {
            Some(n) => {
                let n_ = n.ints()?;
                // Up to four bytes a character.
                per_row(&|i| pos(n_[n.row(i)]) * 4)
            }
            None => 0,
        },
        "replace" | "regexp_replace" => match (get(0), get(2)) {
            (Some(s), Some(t)) => {
                let (l, lt) = (s.lens()?, t.lens()?);
                // Every position may match (an empty pattern) and take the replacement.
                per_row(&|i| {
                    let ls = pos(l[s.row(i)]);
                    ls + (ls + 1) * pos(lt[t.row(i)])
                })
            }
            _ => 0,
        },
        "range" | "generate_series" => {
            let (start, stop, step) = match a.len() {
                1 => (None, &a[0], None),
                2 => (Some(&a[0]), &a[1], None),
                3 => (Some(&a[0]), &a[1], Some(&a[2])),
                _ => return Ok(0),
            };
            let temporal = matches!(
                stop.values.data_type(),
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(..)
            );
            let (lo, hi) = if temporal {
                (start.map(Arg::nanos).transpose()?, stop.nanos()?)
            } else {
                (start.map(Arg::ints).transpose()?, stop.ints()?)
            };
            let st = match step {
                Some(s) if temporal => Some(s.interval_nanos()?),
                Some(s) => Some(s.ints()?),
                None => None,
            };
            per_row(&|i| {
                let l = lo.as_ref().map_or(0, |v| v[start.map_or(0, |s| s.row(i))]);
                let h = hi[stop.row(i)];
                let s = st.as_ref().map_or(1, |v| v[step.map_or(0, |s| s.row(i))]);
                let span = (h as i128 - l as i128).unsigned_abs();
                let step = s.unsigned_abs().max(1) as u128;
                (span / step + 1) * 8
            })
        }
        "array_repeat" => match (get(0), get(1)) {
            (Some(e), Some(n)) => {
                let n_ = n.ints()?;
                let each = e.value_bytes();
                per_row(&|i| pos(n_[n.row(i)]) * each)
            }
            _ => 0,
        },
        "array_resize" => match (get(1), get(2)) {
            (Some(n), fill) => {
                let n_ = n.ints()?;
                let each = fill.map_or(8, Arg::value_bytes);
                per_row(&|i| pos(n_[n.row(i)]) * each)
            }
            _ => 0,
        },
        _ => 0,
    })
}

fn too_big(name: &str, bytes: u128, rows: usize, max: usize) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{name}() would make about {bytes} bytes for {rows} rows, more than \
         what one call may make ({max} bytes: sql.max_function_output_bytes, at most \
         sql.memory_per_query_bytes); ask for less per row"
    ))
}

impl ScalarUDFImpl for Capped {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    #[allow(deprecated)]
    fn is_nullable(&self, args: &[Expr], schema: &dyn ExprSchema) -> bool {
        self.inner.is_nullable(args, schema)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.inner.name();
        let rows = args.number_rows;
        let bytes = estimate(name, &args.args, rows)?;
        if bytes > self.max_bytes as u128 {
            return Err(too_big(name, bytes, rows, self.max_bytes));
        }
        let reservation = MemoryConsumer::new(format!("{name}()")).register(&self.pool);
        reservation.try_grow(bytes as usize)?;
        let out = self.inner.invoke_with_args(args);
        drop(reservation);
        out
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn output_ordering(&self, inputs: &[ExprProperties]) -> Result<SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::common::ScalarValue;

    fn int(v: i64) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(v)))
    }

    fn text(v: &str) -> ColumnarValue {
        ColumnarValue::Scalar(ScalarValue::Utf8(Some(v.into())))
    }

    #[test]
    fn estimates_bound_what_each_function_makes() {
        assert_eq!(estimate("repeat", &[text("ab"), int(10)], 1).unwrap(), 20);
        assert_eq!(estimate("repeat", &[text("ab"), int(10)], 3).unwrap(), 60);
        let col = ColumnarValue::Array(Arc::new(StringArray::from(vec!["a", "bbb"])));
        let n = ColumnarValue::Array(Arc::new(Int64Array::from(vec![5, -2])));
        assert_eq!(estimate("repeat", &[col, n], 2).unwrap(), 5);
        assert_eq!(
            estimate("range", &[int(1), int(1_000_000_001)], 1).unwrap(),
            8 * 1_000_000_001
        );
        assert_eq!(estimate("range", &[int(10)], 1).unwrap(), 8 * 11);
        assert_eq!(
            estimate("generate_series", &[int(0), int(100), int(10)], 2).unwrap(),
            2 * 8 * 11
        );
        assert_eq!(estimate("lpad", &[text("x"), int(100)], 1).unwrap(), 400);
        assert!(estimate("array_repeat", &[int(1), int(1000)], 1).unwrap() >= 8000);
        // An empty pattern matches at every position.
        assert_eq!(
            estimate("replace", &[text("aaaa"), text(""), text("bb")], 1).unwrap(),
            4 + 5 * 2
        );
    }
}

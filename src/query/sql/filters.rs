//! Which WHERE conditions the store answers itself, and what they ask for.
//!
//! DataFusion hands a table scan the conjuncts of the WHERE clause. Those the store can
//! answer exactly are accepted as `Exact`, so DataFusion adds no filter of its own:
//! - `symbol`, `timeframe`, `category`, `name` compared with `=` or `IN (...)`: only
//!   the matching series are opened (the choice is made on the in-memory catalog);
//! - `ts` compared with `=`, `<`, `<=`, `>`, `>=` or `BETWEEN`: one inclusive range,
//!   which prunes months and chunks from the manifest and cuts the boundary chunks;
//! - `value` of the scalar tables compared with a number (`=`, `<>`, `<`, `<=`, `>`,
//!   `>=`, `BETWEEN`, `IN`, `NOT IN`): the predicate engine with zone maps and the
//!   value index. As in the native predicate query, NaN matches no comparison.
//!
//! Anything else (OR across columns, functions of a column, comparisons between
//! columns) is left to DataFusion. A conjunct is classified once by [`classify`]; the
//! scan folds the accepted ones into a [`ScanFilter`].

use std::collections::BTreeSet;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, expr::InList};

use crate::query::predicate::{Compiled, Op, Pred};
use crate::record::{SeriesKey, TsRange, ValueType};

/// The series key columns, in key order.
pub const KEY_COLUMNS: [&str; 4] = ["symbol", "timeframe", "category", "name"];

/// A WHERE conjunct the store answers exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// Key column `KEY_COLUMNS[i]` is one of these values.
    Key(usize, BTreeSet<String>),
    /// `ts` lies in this inclusive range (possibly empty).
    Ts(TsRange),
    /// `value` satisfies this predicate.
    Value(Compiled),
}

/// What a table's columns allow to be pushed.
#[derive(Debug, Clone, Copy)]
pub struct Pushable {
    /// How many of [`KEY_COLUMNS`] the table has (kline: 2, scalar: 4).
    pub keys: usize,
    /// The scalar value column's type, if the table has one.
    pub value: Option<ValueType>,
    /// The unit of the table's `ts` column (ms for bars and scalars, ns for ticks).
    pub ts_unit: TimeUnit,
}

/// The accepted conjuncts of one scan, folded together.
#[derive(Debug, Clone, Default)]
pub struct ScanFilter {
    /// Per key column: the values allowed (None: any).
    pub keys: [Option<BTreeSet<String>>; 4],
    pub ts: TsRange,
    /// Conjunction of value predicates; the first drives the predicate engine.
    pub value: Vec<Compiled>,
}

impl ScanFilter {
    pub fn new(filters: &[Expr], table: Pushable) -> ScanFilter {
        let mut f = ScanFilter::default();
        for p in filters.iter().filter_map(|e| classify(e, table)) {
            match p {
                Pushed::Key(i, vals) => {
                    f.keys[i] = Some(match f.keys[i].take() {
                        None => vals,
                        Some(prev) => prev.intersection(&vals).cloned().collect(),
                    });
                }
                Pushed::Ts(r) => f.ts = intersect(f.ts, r),
                Pushed::Value(c) => f.value.push(c),
            }
        }
        // DataFusion rewrites `BETWEEN a AND b` into `>= a` and `<= b`; one range
        // lets the engine use the value index, two half-open bounds do not.
        f.value = merge_bounds(std::mem::take(&mut f.value));
        // The most selective kind of predicate drives the engine (an equality or a
        // range can use the value index; `<>` and NOT IN cannot).
        f.value.sort_by_key(|c| match c {
            Compiled::I64(p) => rank(p),
            Compiled::F64(p) => rank(p),
        });
        f
    }

    /// Whether the series with this key is selected.
    pub fn admits(&self, key: &SeriesKey) -> bool {
        let parts = [
            Some(key.symbol()),
            Some(key.timeframe()),
            key.category(),
            key.name(),
        ];
        self.keys
            .iter()
            .zip(parts)
            .all(|(allowed, v)| match (allowed, v) {
                (None, _) => true,
                (Some(set), Some(v)) => set.contains(v),
                (Some(_), None) => false,
            })
    }

    /// The one value key column `i` is pinned to, if an equality pins it.
    pub fn pinned(&self, i: usize) -> Option<&str> {
        match &self.keys[i] {
            Some(set) if set.len() == 1 => set.iter().next().map(String::as_str),
            _ => None,
        }
    }

    /// True when some accepted conjunct can never hold.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
            || self
                .keys
                .iter()
                .any(|k| k.as_ref().is_some_and(BTreeSet::is_empty))
    }
}

/// Folds the tightest inclusive lower and upper bounds of the same type into one
/// `Between`. Integer bounds are made inclusive (`> a` is `>= a + 1`); an exclusive
/// float bound is left as it is.
fn merge_bounds(preds: Vec<Compiled>) -> Vec<Compiled> {
    let mut out = Vec::new();
    let (mut ilo, mut ihi): (Option<i64>, Option<i64>) = (None, None);
    let (mut flo, mut fhi): (Option<f64>, Option<f64>) = (None, None);
    for p in preds {
        match p {
            Compiled::I64(Pred::Cmp(Op::Gte, v)) => ilo = Some(ilo.map_or(v, |x| x.max(v))),
            Compiled::I64(Pred::Cmp(Op::Gt, v)) if v < i64::MAX => {
                ilo = Some(ilo.map_or(v + 1, |x| x.max(v + 1)))
            }
            Compiled::I64(Pred::Cmp(Op::Lte, v)) => ihi = Some(ihi.map_or(v, |x| x.min(v))),
            Compiled::I64(Pred::Cmp(Op::Lt, v)) if v > i64::MIN => {
                ihi = Some(ihi.map_or(v - 1, |x| x.min(v - 1)))
            }
            Compiled::F64(Pred::Cmp(Op::Gte, v)) => flo = Some(flo.map_or(v, |x| x.max(v))),
            Compiled::F64(Pred::Cmp(Op::Lte, v)) => fhi = Some(fhi.map_or(v, |x| x.min(v))),
            other => out.push(other),
        }
    }
    match (ilo, ihi) {
        (Some(a), Some(b)) => out.push(Compiled::I64(between(a, b))),
        (Some(a), None) => out.push(Compiled::I64(Pred::Cmp(Op::Gte, a))),
        (None, Some(b)) => out.push(Compiled::I64(Pred::Cmp(Op::Lte, b))),
        (None, None) => {}
    }
    match (flo, fhi) {
        (Some(a), Some(b)) => out.push(Compiled::F64(between(a, b))),
        (Some(a), None) => out.push(Compiled::F64(Pred::Cmp(Op::Gte, a))),
        (None, Some(b)) => out.push(Compiled::F64(Pred::Cmp(Op::Lte, b))),
        (None, None) => {}
    }
    out
}

fn rank<T>(p: &Pred<T>) -> u8 {
    match p {
        Pred::Cmp(Op::Eq, _) | Pred::In(_) => 0,
        Pred::Between(..) => 1,
        Pred::Cmp(Op::Ne, _) | Pred::NotIn(_) => 3,
        Pred::Cmp(..) => 2,
    }
}

fn intersect(a: TsRange, b: TsRange) -> TsRange {
    let lo = a.lo().max(b.lo());
    let hi = a.hi().min(b.hi());
    TsRange::new(
        (lo != i64::MIN).then_some(lo),
        (hi != i64::MAX).then_some(hi),
    )
}

/// The conjunct as something the store answers, or None to leave it to DataFusion.
pub fn classify(e: &Expr, table: Pushable) -> Option<Pushed> {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            op: Operator::Or, ..
        }) => key_disjunction(e, table),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col, op, lit) = match (
                column(left, table),
                literal(right),
                column(right, table),
                literal(left),
            ) {
                (Some(c), Some(l), _, _) => (c, *op, l),
                (_, _, Some(c), Some(l)) => (c, op.swap()?, l),
                _ => return None,
            };
            compare(col, op, lit, table)
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            let col = column(expr, table)?;
            let (lo, hi) = (literal(low)?, literal(high)?);
            match col {
                Col::Ts(unit) => {
                    let a = ts_bound(lo, unit, table.ts_unit, Operator::GtEq)?;
                    let b = ts_bound(hi, unit, table.ts_unit, Operator::LtEq)?;
                    Some(Pushed::Ts(intersect(a, b)))
                }
                Col::Value => match table.value? {
                    ValueType::I64 => {
                        let (a, b) = (int(lo)?, int(hi)?);
                        Some(Pushed::Value(Compiled::I64(between(a, b))))
                    }
                    ValueType::F64 => {
                        let (a, b) = (float(lo)?, float(hi)?);
                        Some(Pushed::Value(Compiled::F64(between(a, b))))
                    }
                },
                Col::Key(_) => None,
            }
        }
        Expr::InList(InList {
            expr,
            list,
            negated,
        }) => {
            let col = column(expr, table)?;
            let lits = list.iter().map(literal).collect::<Option<Vec<_>>>()?;
            if lits.is_empty() || lits.len() > 10_000 {
                return None;
            }
            match col {
                Col::Key(i) if i < table.keys && !negated => Some(Pushed::Key(
                    i,
                    lits.into_iter().map(string).collect::<Option<_>>()?,
                )),
                Col::Value => match table.value? {
                    ValueType::I64 => {
                        let v = sorted(lits.into_iter().map(int).collect::<Option<Vec<i64>>>()?);
                        Some(Pushed::Value(Compiled::I64(if *negated {
                            Pred::NotIn(v)
                        } else {
                            Pred::In(v)
                        })))
                    }
                    ValueType::F64 => {
                        let v = sorted(lits.into_iter().map(float).collect::<Option<Vec<f64>>>()?);
                        Some(Pushed::Value(Compiled::F64(if *negated {
                            Pred::NotIn(v)
                        } else {
                            Pred::In(v)
                        })))
                    }
                },
                _ => None,
            }
        }
        _ => None,
    }
}

/// `symbol = 'A' OR symbol = 'B' OR symbol IN (...)`: one key column's set of values
/// (DataFusion writes a short IN list as such a chain). Anything else in the chain
/// leaves the whole disjunction to DataFusion.
fn key_disjunction(e: &Expr, table: Pushable) -> Option<Pushed> {
    let mut stack = vec![e];
    let mut key: Option<usize> = None;
    let mut values = BTreeSet::new();
    while let Some(d) = stack.pop() {
        if let Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) = d
        {
            stack.push(right);
            stack.push(left);
            continue;
        }
        let Some(Pushed::Key(i, vals)) = classify(d, table) else {
            return None;
        };
        if key.is_some_and(|k| k != i) || values.len() + vals.len() > 10_000 {
            return None;
        }
        key = Some(i);
        values.extend(vals);
    }
    Some(Pushed::Key(key?, values))
}

/// The values ascending (the predicate engine's IN lists are sorted).
fn sorted<T: PartialOrd>(mut v: Vec<T>) -> Vec<T> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v
}

/// `[a, b]` inclusive; an inverted pair matches nothing (SQL BETWEEN semantics).
fn between<T: Copy + PartialOrd>(a: T, b: T) -> Pred<T> {
    if a > b {
        // Empty: no value is both >= a and <= b. `In([])` never matches.
        Pred::In(Vec::new())
    } else {
        Pred::Between(a, b, true)
    }
}

/// A column the store can filter on.
#[derive(Debug, Clone, Copy)]
enum Col {
    Key(usize),
    /// `ts`, possibly inside a cast to a timestamp of this unit (the literal's).
    Ts(TimeUnit),
    Value,
}

fn column(e: &Expr, table: Pushable) -> Option<Col> {
    match e {
        Expr::Column(c) => match c.name.as_str() {
            "ts" => Some(Col::Ts(table.ts_unit)),
            "value" => Some(Col::Value),
            n => KEY_COLUMNS.iter().position(|k| *k == n).map(Col::Key),
        },
        // DataFusion may compare through a cast: `CAST(ts AS Timestamp(ns))` against a
        // nanosecond literal, `CAST(symbol AS Utf8View)` against a view literal.
        Expr::Cast(c) => cast_column(&c.expr, c.field.data_type(), table),
        Expr::TryCast(c) => cast_column(&c.expr, c.field.data_type(), table),
        _ => None,
    }
}

fn cast_column(inner: &Expr, to: &DataType, table: Pushable) -> Option<Col> {
    match (column(inner, table)?, to) {
        // Only a cast to the same or a finer unit keeps every value exact; a coarser
        // one truncates (`CAST(ts AS Timestamp(s)) = 5` holds for a whole second of
        // `ts`), so it is left to DataFusion.
        (Col::Ts(from), DataType::Timestamp(unit, _))
            if units_per_second(*unit) >= units_per_second(from) =>
        {
            Some(Col::Ts(*unit))
        }
        (Col::Key(i), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            Some(Col::Key(i))
        }
        _ => None,
    }
}

fn units_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) if !v.is_null() => Some(v),
        _ => None,
    }
}

fn compare(col: Col, op: Operator, lit: &ScalarValue, table: Pushable) -> Option<Pushed> {
    match col {
        Col::Key(i) if i < table.keys && op == Operator::Eq => {
            Some(Pushed::Key(i, BTreeSet::from([string(lit)?])))
        }
        Col::Key(_) => None,
        Col::Ts(unit) => ts_bound(lit, unit, table.ts_unit, op).map(Pushed::Ts),
        Col::Value => {
            let op = match op {
                Operator::Eq => Op::Eq,
                Operator::NotEq => Op::Ne,
                Operator::Lt => Op::Lt,
                Operator::LtEq => Op::Lte,
                Operator::Gt => Op::Gt,
                Operator::GtEq => Op::Gte,
                _ => return None,
            };
            Some(Pushed::Value(match table.value? {
                ValueType::I64 => Compiled::I64(Pred::Cmp(op, int(lit)?)),
                ValueType::F64 => Compiled::F64(Pred::Cmp(op, float(lit)?)),
            }))
        }
    }
}

/// The inclusive range of `ts op lit` in the column's unit `col`, where `lit` counts
/// `unit`s since the epoch (a finer literal is rounded the way that keeps the
/// comparison exact; an integer literal counts the column's units).
fn ts_bound(lit: &ScalarValue, unit: TimeUnit, col: TimeUnit, op: Operator) -> Option<TsRange> {
    // A timestamp literal names its own unit (the comparison is between instants,
    // exact whatever the cast, as only lossless casts reach here).
    let (v, unit) = match (lit, unit) {
        (ScalarValue::TimestampSecond(Some(v), _), _) => (*v, TimeUnit::Second),
        (ScalarValue::TimestampMillisecond(Some(v), _), _) => (*v, TimeUnit::Millisecond),
        (ScalarValue::TimestampMicrosecond(Some(v), _), _) => (*v, TimeUnit::Microsecond),
        (ScalarValue::TimestampNanosecond(Some(v), _), _) => (*v, TimeUnit::Nanosecond),
        (ScalarValue::Int64(Some(v)), u) if u == col => (*v, u),
        _ => return None,
    };
    // (floor, ceil): the column values c nearest `v` from below and above.
    let (per_lit, per_col) = (units_per_second(unit), units_per_second(col));
    let (floor, ceil) = if per_lit <= per_col {
        let m = v.checked_mul(per_col / per_lit)?;
        (m, m)
    } else {
        let f = per_lit / per_col;
        (v.div_euclid(f), v.checked_add(f - 1)?.div_euclid(f))
    };
    let exact = floor == ceil;
    Some(match op {
        Operator::Eq if exact => TsRange::new(Some(floor), Some(floor)),
        // Between two column values: no stored ts equals it.
        Operator::Eq => TsRange::new(Some(1), Some(0)),
        Operator::Gt => TsRange::new(floor.checked_add(1), None),
        Operator::GtEq => TsRange::new(Some(ceil), None),
        Operator::Lt => TsRange::new(None, Some(ceil.checked_sub(1)?)),
        Operator::LtEq => TsRange::new(None, Some(floor)),
        _ => return None,
    })
}

fn string(v: &ScalarValue) -> Option<String> {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.clone()),
        ScalarValue::Dictionary(_, inner) => string(inner),
        _ => None,
    }
}

fn int(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::Int8(Some(x)) => Some(*x as i64),
        ScalarValue::Int16(Some(x)) => Some(*x as i64),
        ScalarValue::Int32(Some(x)) => Some(*x as i64),
        ScalarValue::Int64(Some(x)) => Some(*x),
        ScalarValue::UInt8(Some(x)) => Some(*x as i64),
        ScalarValue::UInt16(Some(x)) => Some(*x as i64),
        ScalarValue::UInt32(Some(x)) => Some(*x as i64),
        ScalarValue::UInt64(Some(x)) => i64::try_from(*x).ok(),
        _ => None,
    }
}

fn float(v: &ScalarValue) -> Option<f64> {
    match v {
        ScalarValue::Float64(Some(x)) => Some(*x),
        ScalarValue::Float32(Some(x)) => Some(*x as f64),
        // A NaN literal compares by IEEE rules here and by total order in DataFusion;
        // leave it to DataFusion.
        _ => int(v).map(|x| x as f64),
    }
    .filter(|x| !x.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    const SCALAR: Pushable = Pushable {
        keys: 4,
        value: Some(ValueType::F64),
        ts_unit: TimeUnit::Millisecond,
    };
    const KLINE: Pushable = Pushable {
        keys: 2,
        value: None,
        ts_unit: TimeUnit::Millisecond,
    };
    const TRADE: Pushable = Pushable {
        keys: 1,
        value: None,
        ts_unit: TimeUnit::Nanosecond,
    };

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn a_disjunction_on_one_key_column_is_one_key_set() {
        let e = col("symbol")
            .eq(lit("A"))
            .or(col("symbol").eq(lit("B")))
            .or(col("symbol").in_list(vec![lit("C"), lit("A")], false));
        let want: BTreeSet<String> = ["A", "B", "C"].into_iter().map(String::from).collect();
        assert_eq!(classify(&e, KLINE), Some(Pushed::Key(0, want)));
        // Two columns, another condition, or a negation: left to DataFusion.
        let mixed = col("symbol")
            .eq(lit("A"))
            .or(col("timeframe").eq(lit("1m")));
        assert_eq!(classify(&mixed, KLINE), None);
        let other = col("symbol").eq(lit("A")).or(col("close").gt(lit(1.0)));
        assert_eq!(classify(&other, KLINE), None);
        let negated = col("symbol")
            .eq(lit("A"))
            .or(col("symbol").in_list(vec![lit("B")], true));
        assert_eq!(classify(&negated, KLINE), None);
    }

    #[test]
    fn keys_ts_and_values_fold_into_one_filter() {
        let f = ScanFilter::new(
            &[
                col("symbol").eq(lit("BTC")),
                col("timeframe").in_list(vec![lit("1m"), lit("1h")], false),
                col("ts").gt_eq(ts(100)),
                ts(500).gt(col("ts")),
                col("value").between(lit(1.0), lit(2.0)),
                col("value").not_eq(lit(1.5)),
                col("open").gt(lit(3)),
            ],
            SCALAR,
        );
        assert_eq!(f.pinned(0), Some("BTC"));
        assert_eq!(f.pinned(1), None);
        assert_eq!((f.ts.lo(), f.ts.hi()), (100, 499));
        assert_eq!(f.value.len(), 2);
        assert!(
            matches!(f.value[0], Compiled::F64(Pred::Between(..))),
            "{:?}",
            f.value
        );
        assert!(!f.is_empty());
        let k = SeriesKey::scalar("BTC", "1h", "ind", "rsi").unwrap();
        assert!(f.admits(&k));
        assert!(!f.admits(&SeriesKey::scalar("ETH", "1h", "ind", "rsi").unwrap()));
    }

    #[test]
    fn two_bounds_become_one_range_for_the_index() {
        let i64_table = Pushable {
            keys: 4,
            value: Some(ValueType::I64),
            ts_unit: TimeUnit::Millisecond,
        };
        let f = ScanFilter::new(
            &[
                col("value").gt_eq(lit(100_i64)),
                col("value").lt_eq(lit(200_i64)),
                col("value").gt(lit(150_i64)),
            ],
            i64_table,
        );
        assert_eq!(f.value, vec![Compiled::I64(Pred::Between(151, 200, true))]);
        let f = ScanFilter::new(
            &[col("value").gt_eq(lit(5.0)), col("value").lt_eq(lit(1.0))],
            SCALAR,
        );
        assert_eq!(
            f.value,
            vec![Compiled::F64(Pred::In(Vec::new()))],
            "an empty range"
        );
    }

    #[test]
    fn what_is_not_exact_is_left_to_datafusion() {
        for e in [
            col("symbol").not_eq(lit("BTC")),
            col("symbol").eq(col("timeframe")),
            col("symbol").eq(lit("A")).or(col("timeframe").eq(lit("B"))),
            col("value").gt(lit(1.0)),
            col("category").eq(lit("x")),
        ] {
            assert_eq!(classify(&e, KLINE), None, "{e}");
        }
        // A float literal against an integer series is DataFusion's (it casts).
        let i64_table = Pushable {
            keys: 4,
            value: Some(ValueType::I64),
            ts_unit: TimeUnit::Millisecond,
        };
        assert_eq!(classify(&col("value").gt(lit(1.5)), i64_table), None);
        assert!(classify(&col("value").gt(lit(1_i64)), i64_table).is_some());
    }

    #[test]
    fn finer_timestamps_round_so_the_comparison_stays_exact() {
        let us = |v| lit(ScalarValue::TimestampMicrosecond(Some(v), None));
        let cast = Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(col("ts")),
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ));
        let r = |e: Expr| match classify(&e, KLINE) {
            Some(Pushed::Ts(r)) => (r.lo(), r.hi()),
            other => panic!("{other:?}"),
        };
        assert_eq!(r(cast.clone().gt(us(1500))), (2, i64::MAX));
        assert_eq!(r(cast.clone().gt_eq(us(1500))), (2, i64::MAX));
        assert_eq!(r(cast.clone().lt(us(1500))), (i64::MIN, 1));
        assert_eq!(r(cast.clone().lt_eq(us(1500))), (i64::MIN, 1));
        assert_eq!(r(cast.clone().gt_eq(us(2000))), (2, i64::MAX));
        assert_eq!(r(cast.clone().lt(us(2000))), (i64::MIN, 1));
        assert!(TsRange::new(Some(1), Some(0)).is_empty());
        let (lo, hi) = r(cast.eq(us(1500)));
        assert!(lo > hi, "no whole millisecond equals 1.5 ms");
    }

    #[test]
    fn a_nanosecond_table_takes_its_bounds_in_nanoseconds() {
        let r = |e: Expr| match classify(&e, TRADE) {
            Some(Pushed::Ts(r)) => (r.lo(), r.hi()),
            other => panic!("{other:?}"),
        };
        let ns = |v| lit(ScalarValue::TimestampNanosecond(Some(v), None));
        let ms = |v| lit(ScalarValue::TimestampMillisecond(Some(v), None));
        assert_eq!(r(col("ts").gt_eq(ns(1_500))), (1_500, i64::MAX));
        assert_eq!(r(col("ts").lt(ns(1_500))), (i64::MIN, 1_499));
        // A coarser literal is exact: 2 ms is 2,000,000 ns.
        assert_eq!(r(col("ts").lt_eq(ms(2))), (i64::MIN, 2_000_000));
        assert_eq!(r(col("ts").gt(ms(2))), (2_000_001, i64::MAX));
        // An integer counts the column's unit.
        assert_eq!(r(col("ts").eq(lit(7_i64))), (7, 7));
        // Only `symbol` is a key of a tick table.
        assert!(classify(&col("symbol").eq(lit("AAPL")), TRADE).is_some());
        assert!(classify(&col("timeframe").eq(lit("tick")), TRADE).is_none());
        // A cast to a coarser unit truncates: not exact, left to DataFusion.
        let to_ms = Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(col("ts")),
            DataType::Timestamp(TimeUnit::Millisecond, None),
        ));
        assert!(classify(&to_ms.eq(ms(2)), TRADE).is_none());
    }
}

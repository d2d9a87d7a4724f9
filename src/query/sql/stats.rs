//! Table statistics for the planner, from what each series' state already holds (its
//! chunk entries): no file is mapped and no row is read.
//!
//! A scan with no row filter (no `ts` range, no value predicate, no limit) reports
//! exact figures: rows, the `ts` bounds, the distinct values of each key column, and
//! no nulls in its non-null columns. DataFusion then answers `count(*)`, `min(ts)` and
//! `max(ts)` from them without scanning (its aggregate-statistics rule), and orders
//! joins by size. A filtered scan reports the same figures as bounds (inexact): the
//! rows of the chunks that overlap the `ts` range, and the range itself clamped to the
//! data.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};

use super::filters::ScanFilter;
use super::scan::key_part;
use super::tables::ColRole;
use crate::record::{SeriesMeta, TsRange};
use crate::storage::snapshot::Snapshot;

/// Bytes of one value of every stored column (int64 or float64 in every table).
const VALUE_BYTES: usize = 8;

/// The statistics of a scan that reads `runs` of series (one per partition it
/// reports on), producing the columns `cols` (`schema`) under `filter`, at most `limit`
/// rows per run.
pub fn scan_statistics(
    schema: &SchemaRef,
    cols: &[ColRole],
    runs: &[&[Arc<Snapshot>]],
    filter: &ScanFilter,
    limit: Option<usize>,
) -> Statistics {
    assert_eq!(
        schema.fields().len(),
        cols.len(),
        "stats: one role per output column"
    );
    let ts = filter.ts;
    let row_filter = ts.start.is_some() || ts.end.is_some() || !filter.value.is_empty();
    let mut out_rows: usize = 0;
    // Whether a limit cut a run short.
    let mut cut = false;
    let mut first: Option<i64> = None;
    let mut last: Option<i64> = None;
    let mut with_rows: Vec<&SeriesMeta> = Vec::new();
    for run in runs {
        let mut rows: u64 = 0;
        for snap in run.iter() {
            let n = rows_within(snap, ts);
            if n == 0 {
                continue;
            }
            rows += n;
            with_rows.push(&snap.meta);
            let (Some(a), Some(b)) = (snap.first_ts(), snap.last_ts()) else {
                continue;
            };
            let a = ts.start.map_or(a, |s| a.max(s));
            let b = ts.end.map_or(b, |e| b.min(e));
            first = Some(first.map_or(a, |f| f.min(a)));
            last = Some(last.map_or(b, |l| l.max(b)));
        }
        let rows = usize::try_from(rows).unwrap_or(usize::MAX);
        cut |= limit.is_some_and(|l| rows > l);
        out_rows = out_rows.saturating_add(limit.map_or(rows, |l| rows.min(l)));
    }
    // Exact only when the scan yields every row of its series: a limit that cuts a
    // run short, or a row filter, leaves bounds.
    let exact = !row_filter && !cut;
    let pick = |v: usize| {
        if exact {
            Precision::Exact(v)
        } else {
            Precision::Inexact(v)
        }
    };
    let column_statistics = cols
        .iter()
        .zip(schema.fields())
        .map(|(role, field)| {
            let mut c = ColumnStatistics::new_unknown();
            if !field.is_nullable() {
                c.null_count = Precision::Exact(0);
            }
            match role {
                ColRole::Stored(0) => {
                    let (unit, tz) = match field.data_type() {
                        DataType::Timestamp(unit, tz) => (*unit, tz.clone()),
                        _ => (TimeUnit::Millisecond, None),
                    };
                    let value = |v: i64| match unit {
                        TimeUnit::Nanosecond => {
                            ScalarValue::TimestampNanosecond(Some(v), tz.clone())
                        }
                        _ => ScalarValue::TimestampMillisecond(Some(v), tz.clone()),
                    };
                    let at = |v: Option<i64>| match v {
                        Some(v) if exact => Precision::Exact(value(v)),
                        Some(v) => Precision::Inexact(value(v)),
                        None => Precision::Absent,
                    };
                    c.min_value = at(first);
                    c.max_value = at(last);
                }
                ColRole::Key(k) => {
                    let distinct: BTreeSet<&str> =
                        with_rows.iter().filter_map(|m| key_part(m, *k)).collect();
                    if !distinct.is_empty() {
                        c.distinct_count = pick(distinct.len());
                    }
                }
                _ => {}
            }
            c
        })
        .collect();
    Statistics {
        num_rows: pick(out_rows),
        total_byte_size: Precision::Inexact(out_rows.saturating_mul(VALUE_BYTES * cols.len())),
        column_statistics,
    }
}

/// Rows of `snap` inside `ts`: exact with no bounds; otherwise the rows of every chunk
/// that overlaps them (a bound from above, with no file read).
fn rows_within(snap: &Snapshot, ts: TsRange) -> u64 {
    if ts.start.is_none() && ts.end.is_none() {
        return snap.rows();
    }
    snap.chunks()
        .filter(|c| {
            ts.start.is_none_or(|s| c.entry.last_ts >= s)
                && ts.end.is_none_or(|e| c.entry.first_ts <= e)
        })
        .map(|c| c.entry.rows)
        .sum()
}

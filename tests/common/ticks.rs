//! Tick series for the tests: a trade series in day partitions and a quote series
//! in hour partitions, rows derived from one value, and the contract's model of a
//! write (`seq` numbering and replacement) over a `BTreeMap<(ts, seq), row>`.

use std::collections::BTreeMap;

use fastk::record::{SEQ_UNASSIGNED, SeriesKey, SeriesMeta, TsRange, ValueType, tick_partition_ms};
use fastk::storage::WriteBatch;

/// 2024-03-10T00:00:00Z in nanoseconds: a day boundary (and an hour boundary).
pub const DAY0: i64 = 1_710_028_800_000_000_000;
pub const HOUR_NS: i64 = 3_600_000_000_000;
pub const DAY_NS: i64 = 24 * HOUR_NS;

/// A row to write: timestamp, `seq` (`None`: the store assigns), value.
pub type Row = (i64, Option<u64>, i64);
/// The model of one series: `(ts, seq)` to the stored columns after `seq`.
pub type Model = BTreeMap<(i64, u64), Vec<i64>>;

pub fn metas() -> Vec<SeriesMeta> {
    vec![
        SeriesMeta {
            key: SeriesKey::trade("BTCUSDT").unwrap(),
            timeframe_ms: tick_partition_ms("day").unwrap(),
            price_scale: 100,
            volume_scale: 1000,
            value_type: ValueType::I64,
        },
        SeriesMeta {
            key: SeriesKey::quote("BTCUSDT").unwrap(),
            timeframe_ms: tick_partition_ms("hour").unwrap(),
            price_scale: 100,
            volume_scale: 1000,
            value_type: ValueType::I64,
        },
    ]
}

/// The stored columns after `seq` for value `v` (a valid trade or quote).
pub fn row_cols(series: usize, v: i64) -> Vec<i64> {
    let p = v.rem_euclid(1_000_000);
    match series {
        0 => vec![
            p,
            v.rem_euclid(977),
            v.rem_euclid(3) - 1,
            v.rem_euclid(1 << 40),
        ],
        _ => vec![p, p + v.rem_euclid(7), v.rem_euclid(50), v.rem_euclid(51)],
    }
}

pub fn batch(series: usize, rows: &[Row]) -> WriteBatch {
    let mut b = WriteBatch::with_capacity(6, rows.len());
    for &(ts, seq, v) in rows {
        b.cols[0].push(ts);
        b.cols[1].push(seq.map_or(SEQ_UNASSIGNED, |s| s as i64));
        for (c, x) in row_cols(series, v).into_iter().enumerate() {
            b.cols[c + 2].push(x);
        }
    }
    b
}

/// What the contract says a write does to `model`; `Err` (and no change) when an
/// explicit `(ts, seq)` repeats inside the request.
pub fn apply_model(series: usize, model: &mut Model, rows: &[Row]) -> Result<(), ()> {
    let mut explicit = std::collections::HashSet::new();
    for &(ts, seq, _) in rows {
        if let Some(s) = seq
            && !explicit.insert((ts, s))
        {
            return Err(());
        }
    }
    // The largest seq stored or given explicitly, per ts, before the assignment.
    let mut next: BTreeMap<i64, u64> = BTreeMap::new();
    for &(ts, seq, _) in rows {
        let stored = model
            .range((ts, 0)..=(ts, u64::MAX))
            .next_back()
            .map(|(k, _)| k.1);
        let top = stored.max(seq).map(|s| s + 1);
        let e = next.entry(ts).or_insert(0);
        *e = (*e).max(top.unwrap_or(0));
    }
    let mut assigned = Vec::new();
    for &(ts, seq, v) in rows {
        let s = match seq {
            Some(s) => s,
            None => {
                let n = next.get_mut(&ts).expect("every ts has a next seq");
                *n += 1;
                *n - 1
            }
        };
        assigned.push(((ts, s), row_cols(series, v)));
    }
    model.extend(assigned);
    Ok(())
}

pub fn model_rows(model: &Model, range: TsRange) -> Vec<Vec<i64>> {
    model
        .range((range.lo(), 0)..=(range.hi(), u64::MAX))
        .map(|(&(ts, seq), cols)| {
            [ts, seq as i64]
                .into_iter()
                .chain(cols.iter().copied())
                .collect()
        })
        .collect()
}

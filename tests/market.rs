//! Market queries over the engine (no sockets), each against a naive model written
//! independently of the implementation: resample (every target, offset, fill and
//! aggregation, over months with deltas and replacements, paged and whole), coverage
//! and gaps under each calendar, the as-of cross section, and the aligned view. A
//! resample also agrees with the same aggregation in SQL. The wire forms are tested in
//! `tests/flight_market.rs`, `tests/http_api/market.rs` and the Python suite.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use common::*;
use fastk::error::ErrorKind;
use fastk::query::Engine;
use fastk::query::market::spec::{
    Agg, AlignedBody, AsOf, CoverageRequest, Fill, Join, Resample, ScalarRef, Symbols,
};
use fastk::query::market::{ReadArgs, ReadSpec, Selection};
use fastk::record::{KlineRecord, MonthPartition, SeriesKey, SeriesKind, ValueType};
use fastk::storage::WriteBatch;
use proptest::prelude::*;

fn cases() -> u32 {
    if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") {
        256
    } else {
        24
    }
}

// ---------------------------------------------------------------------------
// Data

fn bar(ts: i64, seed: i64) -> KlineRecord {
    let p = 10_000 + (seed * 7919).rem_euclid(997);
    let spread = 1 + seed.rem_euclid(13);
    KlineRecord {
        ts,
        open: p + seed.rem_euclid(3),
        high: p + 3 + spread,
        low: p - 5 - spread,
        close: p - seed.rem_euclid(5) + 2,
        volume: 1 + seed.rem_euclid(1000),
    }
}

fn scalar_series(e: &Engine, symbol: &str, name: &str, vt: ValueType) -> SeriesKey {
    e.register_scalar(&scalar_registration(symbol, "1m", "ind", name, Some(vt)))
        .unwrap();
    SeriesKey::scalar(symbol, "1m", "ind", name).unwrap()
}

fn write_scalar(e: &Engine, key: &SeriesKey, rows: &[(i64, i64)]) {
    let mut b = WriteBatch::with_capacity(2, rows.len());
    for &(t, v) in rows {
        b.cols[0].push(t);
        b.cols[1].push(v);
    }
    e.write(key, b, None).unwrap();
}

/// Minutes on the 1m grid inside about 70 days from late January, written in
/// several batches so months get delta chunks and stored rows get replaced.
fn minutes() -> impl Strategy<Value = Vec<Vec<i64>>> {
    let start = JAN_2024 + 20 * DAY;
    prop::collection::vec(
        prop::collection::vec(
            (0i64..70 * 24 * 60, 0i64..20)
                .prop_map(move |(m, spread)| start + (m / (spread + 1)) * (spread + 1) * MINUTE),
            1..400,
        ),
        1..4,
    )
}

// ---------------------------------------------------------------------------
// The model's own bucketing: arithmetic on days, independent of `market::grid`.

#[derive(Debug, Clone, Copy)]
enum Target {
    Fixed(i64),
    Week,
    Month,
}

fn target_of(name: &str) -> Target {
    match name {
        "1w" => Target::Week,
        "1M" => Target::Month,
        "1m" => Target::Fixed(MINUTE),
        "5m" => Target::Fixed(5 * MINUTE),
        "15m" => Target::Fixed(15 * MINUTE),
        "1h" => Target::Fixed(HOUR),
        "4h" => Target::Fixed(4 * HOUR),
        "1d" => Target::Fixed(DAY),
        _ => unreachable!(),
    }
}

fn model_bucket(t: Target, offset: i64, ts: i64) -> i64 {
    let x = ts - offset;
    offset
        + match t {
            Target::Fixed(w) => x.div_euclid(w) * w,
            Target::Week => {
                let day = x.div_euclid(DAY);
                let monday_based = (day + 3).rem_euclid(7); // 1970-01-01 was a Thursday
                (day - monday_based) * DAY
            }
            Target::Month => MonthPartition::from_ts(x).start_ts(),
        }
}

fn model_next(t: Target, offset: i64, start: i64) -> i64 {
    match t {
        Target::Fixed(w) => start + w,
        Target::Week => start + 7 * DAY,
        Target::Month => model_bucket(t, offset, start + 32 * DAY),
    }
}

/// One output row: ts, values (None when filled with nulls), complete.
type Row = (i64, Option<Vec<i64>>, bool);

/// Aggregates stored rows (ts → values) the way the documentation says.
fn model_agg(kline: bool, vt: ValueType, agg: Agg, rows: &[(i64, Vec<i64>)]) -> Vec<i64> {
    if kline {
        return vec![
            rows[0].1[0],
            rows.iter().map(|r| r.1[1]).max().unwrap(),
            rows.iter().map(|r| r.1[2]).min().unwrap(),
            rows[rows.len() - 1].1[3],
            rows.iter().map(|r| r.1[4]).sum(),
        ];
    }
    let v = match vt {
        ValueType::I64 => {
            let xs: Vec<i64> = rows.iter().map(|r| r.1[0]).collect();
            match agg {
                Agg::First => xs[0],
                Agg::Last => xs[xs.len() - 1],
                Agg::Min => *xs.iter().min().unwrap(),
                Agg::Max => *xs.iter().max().unwrap(),
                Agg::Sum => xs.iter().sum(),
                Agg::Count => xs.len() as i64,
                Agg::Mean => (xs.iter().map(|&x| x as i128).sum::<i128>() as f64 / xs.len() as f64)
                    .to_bits() as i64,
            }
        }
        ValueType::F64 => {
            let xs: Vec<f64> = rows
                .iter()
                .map(|r| f64::from_bits(r.1[0] as u64))
                .filter(|x| !x.is_nan())
                .collect();
            let f = |x: f64| x.to_bits() as i64;
            match agg {
                Agg::Count => xs.len() as i64,
                Agg::Sum => f(xs.iter().fold(0.0, |a, b| a + b)),
                _ if xs.is_empty() => f(f64::NAN),
                Agg::First => f(xs[0]),
                Agg::Last => f(xs[xs.len() - 1]),
                Agg::Min => f(xs.iter().copied().fold(f64::INFINITY, f64::min)),
                Agg::Max => f(xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                Agg::Mean => f(xs.iter().fold(0.0, |a, b| a + b) / xs.len() as f64),
            }
        }
    };
    vec![v]
}

struct ModelRead<'a> {
    kline: bool,
    vt: ValueType,
    agg: Agg,
    target: Target,
    offset: i64,
    fill: Fill,
    start: Option<i64>,
    end: Option<i64>,
    stored: &'a BTreeMap<i64, Vec<i64>>,
}

fn model_resample(m: &ModelRead<'_>) -> Vec<Row> {
    let bucket = |ts| model_bucket(m.target, m.offset, ts);
    let next = |s| model_next(m.target, m.offset, s);
    let series_last = *m.stored.keys().next_back().unwrap();
    let lo = m.start.unwrap_or(i64::MIN);
    let hi = m.end.unwrap_or(i64::MAX);
    let mut groups: BTreeMap<i64, Vec<(i64, Vec<i64>)>> = BTreeMap::new();
    for (&ts, v) in m.stored.range(lo..=hi) {
        groups.entry(bucket(ts)).or_default().push((ts, v.clone()));
    }
    let complete = |s: i64| !(s <= series_last && series_last < next(s));
    let aggregated: BTreeMap<i64, Vec<i64>> = groups
        .iter()
        .map(|(&s, rows)| (s, model_agg(m.kline, m.vt, m.agg, rows)))
        .collect();
    let mut out = Vec::new();
    if m.fill == Fill::None || aggregated.is_empty() {
        for (&s, v) in &aggregated {
            out.push((s, Some(v.clone()), complete(s)));
        }
        return out;
    }
    // With a fill: from the bucket of `start` when the series has a bar before `start`,
    // else from the first bucket; to the last bucket.
    let last = *aggregated.keys().next_back().unwrap();
    let mut prev: Option<Vec<i64>> = None;
    let mut at = *aggregated.keys().next().unwrap();
    if let Some(s) = m.start {
        // Seeded by the bucket of the last bar before `start`, over its rows before it.
        if let Some((&t, _)) = m.stored.range(..s).next_back() {
            let rows: Vec<(i64, Vec<i64>)> = m
                .stored
                .range(bucket(t)..s)
                .map(|(&ts, v)| (ts, v.clone()))
                .collect();
            prev = Some(model_agg(m.kline, m.vt, m.agg, &rows));
            at = bucket(s);
        }
    }
    while at <= last {
        match aggregated.get(&at) {
            Some(v) => {
                out.push((at, Some(v.clone()), complete(at)));
                prev = Some(v.clone());
            }
            None => {
                let p = prev.clone().expect("filling starts after a bucket");
                let filled = match m.fill {
                    Fill::Null => None,
                    _ if m.kline => Some(vec![p[3], p[3], p[3], p[3], 0]),
                    _ => Some(match m.agg {
                        Agg::Sum if m.vt == ValueType::F64 => vec![0f64.to_bits() as i64],
                        Agg::Sum | Agg::Count => vec![0],
                        _ => p,
                    }),
                };
                out.push((at, filled, complete(at)));
            }
        }
        at = next(at);
    }
    out
}

/// Rows of resampled batches: ts, stored-width values (f64 as bits), complete.
fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
        let n = b.num_columns();
        let complete = b.column(n - 1).as_boolean();
        for r in 0..b.num_rows() {
            let vals = (1..n - 1)
                .map(|c| {
                    let col = b.column(c);
                    (!col.is_null(r)).then(|| match col.data_type() {
                        DataType::Int64 => col.as_primitive::<Int64Type>().value(r),
                        _ => col.as_primitive::<Float64Type>().value(r).to_bits() as i64,
                    })
                })
                .collect::<Option<Vec<i64>>>();
            out.push((ts.value(r), vals, complete.value(r)));
        }
    }
    out
}

/// NaN equals NaN (whatever its payload) when comparing f64 bits.
fn norm(rows: Vec<Row>, f64_values: bool) -> Vec<Row> {
    rows.into_iter()
        .map(|(t, v, c)| {
            let v = v.map(|v| {
                v.into_iter()
                    .map(|x| {
                        if f64_values && f64::from_bits(x as u64).is_nan() {
                            f64::NAN.to_bits() as i64
                        } else {
                            x
                        }
                    })
                    .collect()
            });
            (t, v, c)
        })
        .collect()
}

fn spec(
    start: Option<i64>,
    end: Option<i64>,
    target: &str,
    offset: i64,
    fill: Fill,
    agg: Option<Agg>,
) -> ReadSpec {
    ReadSpec::new(ReadArgs {
        start_ts: start,
        end_ts: end,
        resample: Some(Resample {
            timeframe: target.into(),
            offset_ms: Some(offset),
            fill: Some(fill),
            agg: None,
        }),
        agg,
        ..ReadArgs::default()
    })
    .unwrap()
}

/// The whole read, and the same read paged by `page` buckets through `next_start_ts`.
fn read_whole_and_paged(
    e: &Engine,
    key: &SeriesKey,
    s: &ReadSpec,
    page: usize,
) -> (Vec<RecordBatch>, Vec<RecordBatch>) {
    let series = e.series(key).unwrap();
    let mut whole = Vec::new();
    let next = e
        .read_into(&series, s, 7, None, &mut |b| {
            whole.push(b);
            true
        })
        .unwrap();
    assert_eq!(next, None);
    // At most about 20 pages, however many buckets the read has.
    let total: usize = whole.iter().map(RecordBatch::num_rows).sum();
    let page = page.max(total / 20 + 1);
    let mut paged = Vec::new();
    let mut spec = s.clone();
    for _ in 0..100_000 {
        let (batches, next) = e.read_page(&series, &spec, page).unwrap();
        assert!(batches.iter().map(RecordBatch::num_rows).sum::<usize>() <= page);
        paged.extend(batches);
        match next {
            Some(t) => spec.range.start = Some(t),
            None => return (whole, paged),
        }
    }
    panic!("paging did not end");
}

const TARGETS: [&str; 8] = ["1m", "5m", "15m", "1h", "4h", "1d", "1w", "1M"];
const OFFSETS: [i64; 4] = [0, -2 * HOUR, 30 * MINUTE, -3 * MINUTE];

fn pick_offset(target: &str, o: usize) -> i64 {
    let off = OFFSETS[o % OFFSETS.len()];
    let width = match target_of(target) {
        Target::Fixed(w) => w,
        _ => 28 * DAY,
    };
    if off.abs() < width { off } else { 0 }
}

fn fills() -> impl Strategy<Value = Fill> {
    prop_oneof![Just(Fill::None), Just(Fill::Prev), Just(Fill::Null)]
}

fn aggs() -> impl Strategy<Value = Agg> {
    prop_oneof![
        Just(Agg::Last),
        Just(Agg::First),
        Just(Agg::Min),
        Just(Agg::Max),
        Just(Agg::Mean),
        Just(Agg::Sum),
        Just(Agg::Count)
    ]
}

fn bounds() -> impl Strategy<Value = (Option<i64>, Option<i64>)> {
    let lo = JAN_2024 + 15 * DAY;
    (
        prop::option::of(0i64..80 * DAY),
        prop::option::of(0i64..80 * DAY),
    )
        .prop_map(move |(a, b)| match (a, b) {
            (Some(a), Some(b)) => (Some(lo + a.min(b) + 17), Some(lo + a.max(b))),
            (a, b) => (a.map(|a| lo + a), b.map(|b| lo + b)),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), .. ProptestConfig::default() })]

    #[test]
    fn kline_resample_matches_the_model(
        writes in minutes(),
        t in 0usize..TARGETS.len(),
        o in 0usize..OFFSETS.len(),
        fill in fills(),
        (start, end) in bounds(),
        page in 1usize..40,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let e = engine_with(dir.path(), |_| {});
        let key = register_kline(&e, "AAA");
        let mut stored = BTreeMap::new();
        for (w, batch) in writes.iter().enumerate() {
            let mut rows: BTreeMap<i64, KlineRecord> = BTreeMap::new();
            for (i, &ts) in batch.iter().enumerate() {
                rows.insert(ts, bar(ts, (w * 1000 + i) as i64));
            }
            let rows: Vec<KlineRecord> = rows.into_values().collect();
            e.write_kline(&key, &rows, None).unwrap();
            for r in rows {
                stored.insert(r.ts, vec![r.open, r.high, r.low, r.close, r.volume]);
            }
        }
        let target = TARGETS[t];
        let offset = pick_offset(target, o);
        let s = spec(start, end, target, offset, fill, None);
        let (whole, paged) = read_whole_and_paged(&e, &key, &s, page);
        let want = model_resample(&ModelRead {
            kline: true, vt: ValueType::I64, agg: Agg::Last, target: target_of(target),
            offset, fill, start, end, stored: &stored,
        });
        prop_assert_eq!(rows_of(&whole), want.clone(), "{} offset {} {:?}", target, offset, fill);
        prop_assert_eq!(rows_of(&paged), want);
        for b in &whole {
            prop_assert!(b.num_rows() <= 7);
        }
    }

    #[test]
    fn scalar_resample_matches_the_model(
        writes in minutes(),
        t in 0usize..TARGETS.len(),
        o in 0usize..OFFSETS.len(),
        fill in fills(),
        agg in aggs(),
        f64_series in any::<bool>(),
        (start, end) in bounds(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let e = engine_with(dir.path(), |_| {});
        let vt = if f64_series { ValueType::F64 } else { ValueType::I64 };
        let key = scalar_series(&e, "AAA", "x", vt);
        let mut stored = BTreeMap::new();
        for (w, batch) in writes.iter().enumerate() {
            let mut rows: BTreeMap<i64, i64> = BTreeMap::new();
            for (i, &ts) in batch.iter().enumerate() {
                let seed = (w * 7919 + i * 31) as i64;
                let v = match vt {
                    ValueType::I64 => seed % 1000 - 500,
                    // Every 9th value is NaN, which every aggregation skips.
                    ValueType::F64 if seed % 9 == 0 => f64::NAN.to_bits() as i64,
                    ValueType::F64 => ((seed % 1000) as f64 / 7.0 - 40.0).to_bits() as i64,
                };
                rows.insert(ts, v);
            }
            let rows: Vec<(i64, i64)> = rows.into_iter().collect();
            write_scalar(&e, &key, &rows);
            for (t, v) in rows {
                stored.insert(t, vec![v]);
            }
        }
        let target = TARGETS[t];
        let offset = pick_offset(target, o);
        let s = spec(start, end, target, offset, fill, Some(agg));
        let (whole, paged) = read_whole_and_paged(&e, &key, &s, 13);
        let want = model_resample(&ModelRead {
            kline: false, vt, agg, target: target_of(target), offset, fill, start, end,
            stored: &stored,
        });
        let out_f64 = matches!(agg, Agg::Mean) || (vt == ValueType::F64 && agg != Agg::Count);
        let want = norm(want, out_f64);
        prop_assert_eq!(norm(rows_of(&whole), out_f64), want.clone(), "{} {:?} {:?}", target, agg, fill);
        prop_assert_eq!(norm(rows_of(&paged), out_f64), want);
    }
}

#[test]
fn latest_buckets_equal_the_tail_of_the_whole_read() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    let key = register_kline(&e, "AAA");
    // 40 days of 1m bars with the weekends missing.
    let rows: Vec<KlineRecord> = (0..40 * 1440)
        .map(|i| JAN_2024 + i * MINUTE)
        .filter(|ts| (ts / DAY + 3) % 7 < 5)
        .enumerate()
        .map(|(i, ts)| bar(ts, i as i64))
        .collect();
    e.write_kline(&key, &rows, None).unwrap();
    let series = e.series(&key).unwrap();
    for (target, fill) in [("1h", Fill::None), ("1d", Fill::Prev), ("4h", Fill::Null)] {
        let whole_spec = spec(None, None, target, 0, fill, None);
        let (whole, _) = e.read_page(&series, &whole_spec, 100_000).unwrap();
        let whole = rows_of(&whole);
        for n in [1, 5, 100, 5000] {
            let mut s = whole_spec.clone();
            s.latest = Some(n);
            let mut got = Vec::new();
            e.read_into(&series, &s, 1000, None, &mut |b| {
                got.push(b);
                true
            })
            .unwrap();
            let tail = &whole[whole.len().saturating_sub(n)..];
            assert_eq!(rows_of(&got), tail, "{target} {fill:?} latest {n}");
        }
    }
}

#[test]
fn bad_resamples_say_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    e.register_kline(&kline_registration("AAA", "5m")).unwrap();
    let key = SeriesKey::kline("AAA", "5m").unwrap();
    let series = e.series(&key).unwrap();
    let err = |s: ReadSpec| {
        e.read_into(&series, &s, 10, None, &mut |_| true)
            .unwrap_err()
    };
    let not_multiple = err(spec(None, None, "7m", 0, Fill::None, None));
    assert_eq!(not_multiple.kind, ErrorKind::InvalidArgument);
    assert!(
        not_multiple.to_string().contains("multiple"),
        "{not_multiple}"
    );
    let agg_on_kline = err(spec(None, None, "1h", 0, Fill::None, Some(Agg::Mean)));
    assert!(
        agg_on_kline.to_string().contains("scalar"),
        "{agg_on_kline}"
    );
    for (args, says) in [
        (
            ReadArgs {
                start_ts: Some(5),
                end_ts: Some(1),
                ..ReadArgs::default()
            },
            "start_ts",
        ),
        (
            ReadArgs {
                as_of: Some(AsOf::Ts(5)),
                latest: Some(3),
                ..ReadArgs::default()
            },
            "as_of",
        ),
        (
            ReadArgs {
                agg: Some(Agg::Sum),
                ..ReadArgs::default()
            },
            "resample",
        ),
        (
            ReadArgs {
                latest: Some(fastk::query::market::LATEST_BUCKETS_MAX + 1),
                resample: Some(Resample {
                    timeframe: "1h".into(),
                    offset_ms: None,
                    fill: None,
                    agg: None,
                }),
                ..ReadArgs::default()
            },
            "at most",
        ),
    ] {
        let e = ReadSpec::new(args).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.to_string().contains(says), "{e}");
    }
}

// ---------------------------------------------------------------------------
// Many series and as-of

#[test]
fn as_of_cross_section_matches_the_model_and_reads_only_the_newest_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    let mut stored: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for i in 0..30 {
        let sym = format!("S{i:02}");
        let key = register_kline(&e, &sym);
        // Series start at different times and have different densities; S00 is empty.
        let ts: Vec<i64> = (0..(i * 211) as i64)
            .map(|k| JAN_2024 + (i as i64) * 37 * MINUTE + k * (1 + i as i64 % 4) * 17 * MINUTE)
            .collect();
        let rows: Vec<KlineRecord> = ts.iter().map(|&t| bar(t, t / MINUTE)).collect();
        if !rows.is_empty() {
            e.write_kline(&key, &rows, None).unwrap();
        }
        stored.insert(sym, ts);
    }
    let sel = Selection {
        kind: SeriesKind::Kline,
        timeframe: "1m".into(),
        scalar: None,
        symbols: Symbols::All("*".into()),
    };
    let series = e.select(&sel, 1000).unwrap();
    assert_eq!(series.len(), 30);
    for t in [JAN_2024 - 1, JAN_2024 + 3 * DAY + 7, JAN_2024 + 40 * DAY] {
        for start in [None, Some(t - 2 * HOUR)] {
            let s = ReadSpec::new(ReadArgs {
                start_ts: start,
                as_of: Some(AsOf::Ts(t)),
                ..ReadArgs::default()
            })
            .unwrap();
            for sr in &series {
                let sym = sr.meta.key.symbol();
                let want = stored[sym]
                    .iter()
                    .copied()
                    .filter(|&x| x <= t && start.is_none_or(|s| x >= s))
                    .max();
                let (got, next) = e.read_page(sr, &s, 10).unwrap();
                assert_eq!(next, None);
                let got: Vec<i64> = got
                    .iter()
                    .flat_map(|b| {
                        b.column(0)
                            .as_primitive::<TimestampMillisecondType>()
                            .values()
                            .to_vec()
                    })
                    .collect();
                assert_eq!(got, want.into_iter().collect::<Vec<_>>(), "{sym} as of {t}");
            }
        }
    }
}

#[test]
fn selections_refuse_what_they_cannot_answer() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    register_kline(&e, "AAA");
    register_kline(&e, "BBB");
    scalar_series(&e, "AAA", "x", ValueType::I64);
    scalar_series(&e, "BBB", "x", ValueType::F64);
    let kl = |symbols| Selection {
        kind: SeriesKind::Kline,
        timeframe: "1m".into(),
        scalar: None,
        symbols,
    };
    let list = |v: &[&str]| Symbols::List(v.iter().map(|s| s.to_string()).collect());
    let got = e.select(&kl(list(&["BBB", "AAA"])), 10).unwrap();
    let names: Vec<&str> = got.iter().map(|s| s.meta.key.symbol()).collect();
    assert_eq!(names, ["AAA", "BBB"], "symbol order");
    for (sel, max, kind, says) in [
        (kl(list(&[])), 10, ErrorKind::InvalidArgument, "empty"),
        (
            kl(list(&["AAA", "AAA"])),
            10,
            ErrorKind::InvalidArgument,
            "twice",
        ),
        (
            kl(list(&["AAA", "BBB"])),
            1,
            ErrorKind::InvalidArgument,
            "at most 1",
        ),
        (
            kl(Symbols::All("*".into())),
            1,
            ErrorKind::InvalidArgument,
            "at most 1",
        ),
        (
            kl(Symbols::All("all".into())),
            10,
            ErrorKind::InvalidArgument,
            "\"*\"",
        ),
        (kl(list(&["AAA", "ZZZ"])), 10, ErrorKind::NotFound, "ZZZ"),
        (
            Selection {
                kind: SeriesKind::Scalar,
                timeframe: "1m".into(),
                scalar: Some(("ind".into(), "x".into())),
                symbols: Symbols::All("*".into()),
            },
            10,
            ErrorKind::InvalidArgument,
            "value_type",
        ),
    ] {
        let err = e.select(&sel, max).unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Aligned view

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), .. ProptestConfig::default() })]

    #[test]
    fn aligned_view_matches_the_model(
        bars_at in minutes(),
        a_at in minutes(),
        b_at in minutes(),
        asof in any::<bool>(),
        tolerance in prop::option::of(0i64..30 * MINUTE),
        (start, end) in bounds(),
        page in 1usize..300,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let e = engine_with(dir.path(), |_| {});
        let key = register_kline(&e, "AAA");
        let bar_ts: std::collections::BTreeSet<i64> = bars_at.concat().into_iter().collect();
        let rows: Vec<KlineRecord> = bar_ts.iter().map(|&t| bar(t, t / MINUTE)).collect();
        e.write_kline(&key, &rows, None).unwrap();
        let a = scalar_series(&e, "AAA", "a", ValueType::I64);
        let b = scalar_series(&e, "AAA", "b", ValueType::F64);
        let mut model: Vec<BTreeMap<i64, i64>> = vec![BTreeMap::new(), BTreeMap::new()];
        for (i, (k, at)) in [(&a, &a_at), (&b, &b_at)].into_iter().enumerate() {
            for w in at {
                let vals: BTreeMap<i64, i64> = w
                    .iter()
                    .map(|&t| (t, if i == 0 { t / MINUTE % 977 } else { (t as f64 / 1e9).to_bits() as i64 }))
                    .collect();
                write_scalar(&e, k, &vals.iter().map(|(&t, &v)| (t, v)).collect::<Vec<_>>());
                model[i].extend(vals);
            }
        }
        let join = if asof { Join::Asof } else { Join::Exact };
        let body = AlignedBody {
            scalars: vec![
                ScalarRef { category: "ind".into(), name: "a".into() },
                ScalarRef { category: "ind".into(), name: "b".into() },
            ],
            start_ts: start,
            end_ts: end,
            join: Some(join),
            tolerance_ms: if asof { tolerance } else { None },
            price_format: None,
            limit: None,
            snapshot: None,
            as_of_commit: None,
        };
        let plan = e.aligned(&key, &body).unwrap();
        let names: Vec<String> = plan.schema.fields().iter().map(|f| f.name().clone()).collect();
        prop_assert_eq!(names, ["ts", "open", "high", "low", "close", "volume", "ind.a", "ind.b"]);
        let mut got = Vec::new();
        let (next, _) = plan.run(page, None, &mut |b| { got.push(b); true }).unwrap();
        prop_assert_eq!(next, None);
        let lo = start.unwrap_or(i64::MIN);
        let hi = end.unwrap_or(i64::MAX);
        let tol = tolerance.filter(|_| asof).unwrap_or(i64::MAX);
        let want: Vec<(i64, Option<i64>, Option<i64>)> = bar_ts
            .range(lo..=hi)
            .map(|&t| {
                let pick = |m: &BTreeMap<i64, i64>| match join {
                    Join::Exact => m.get(&t).copied(),
                    Join::Asof => m.range(..=t).next_back().filter(|(s, _)| t - **s <= tol).map(|(_, v)| *v),
                };
                (t, pick(&model[0]), pick(&model[1]))
            })
            .collect();
        let mut have = Vec::new();
        for batch in &got {
            prop_assert!(batch.num_rows() <= page);
            let ts = batch.column(0).as_primitive::<TimestampMillisecondType>();
            let ca = batch.column(6).as_primitive::<Int64Type>();
            let cb = batch.column(7).as_primitive::<Float64Type>();
            for r in 0..batch.num_rows() {
                have.push((
                    ts.value(r),
                    (!ca.is_null(r)).then(|| ca.value(r)),
                    (!cb.is_null(r)).then(|| cb.value(r).to_bits() as i64),
                ));
            }
        }
        prop_assert_eq!(have, want);
    }
}

#[test]
fn aligned_view_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    let key = register_kline(&e, "AAA");
    scalar_series(&e, "AAA", "a", ValueType::I64);
    let r = |name: &str| ScalarRef {
        category: "ind".into(),
        name: name.into(),
    };
    let body = |scalars, join, tolerance_ms| AlignedBody {
        scalars,
        start_ts: None,
        end_ts: None,
        join,
        tolerance_ms,
        price_format: None,
        limit: None,
        snapshot: None,
        as_of_commit: None,
    };
    for (b, kind, says) in [
        (
            body(vec![], None, None),
            ErrorKind::InvalidArgument,
            "1 to 64",
        ),
        (
            body(vec![r("a"), r("a")], None, None),
            ErrorKind::InvalidArgument,
            "twice",
        ),
        (body(vec![r("zz")], None, None), ErrorKind::NotFound, ""),
        (
            body(vec![r("a")], None, Some(5)),
            ErrorKind::InvalidArgument,
            "asof",
        ),
        (
            body(vec![r("a")], Some(Join::Asof), Some(-1)),
            ErrorKind::InvalidArgument,
            "negative",
        ),
    ] {
        let err = e.aligned(&key, &b).err().unwrap();
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Coverage

fn weekday(ts: i64) -> i64 {
    (ts.div_euclid(DAY) + 3).rem_euclid(7)
}

/// A run or a gap: first ts, last ts, bars.
type Span = (i64, i64, u64);
/// Expected, present, gaps and the last long-enough run.
type ModelCoverage = (u64, u64, Vec<Span>, Option<Span>);

/// Gaps, present count and expected count from every grid point, one by one.
fn model_coverage(
    stored: &std::collections::BTreeSet<i64>,
    tf: i64,
    mask: u8,
    lo: i64,
    hi: i64,
    complete_n: u64,
) -> ModelCoverage {
    let anchor = *stored.iter().next().unwrap();
    let mut k = (lo - anchor).div_euclid(tf);
    if anchor + k * tf < lo {
        k += 1;
    }
    let (mut expected, mut present) = (0, 0);
    let mut gaps: Vec<(i64, i64, u64)> = Vec::new();
    let mut open_gap: Option<(i64, i64, u64)> = None;
    let mut run: Option<(i64, i64, u64)> = None;
    let mut last_run = None;
    loop {
        let g = anchor + k * tf;
        if g > hi {
            break;
        }
        k += 1;
        if mask >> weekday(g) & 1 == 0 {
            continue;
        }
        expected += 1;
        if stored.contains(&g) {
            present += 1;
            if let Some(gap) = open_gap.take() {
                gaps.push(gap);
                run = None;
            }
            let r = run.map_or((g, g, 1), |(s, _, n)| (s, g, n + 1));
            run = Some(r);
            if r.2 >= complete_n {
                last_run = Some(r);
            }
        } else {
            open_gap = Some(open_gap.map_or((g, g, 1), |(s, _, n)| (s, g, n + 1)));
        }
    }
    gaps.extend(open_gap);
    (expected, present, gaps, last_run)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), .. ProptestConfig::default() })]

    #[test]
    fn coverage_matches_the_model(
        writes in minutes(),
        holes in prop::collection::vec((0i64..70 * 1440, 1i64..3000), 0..8),
        dense in any::<bool>(),
        cal in 0usize..3,
        (start, end) in bounds(),
        complete_n in 1u64..200,
        max_gaps in 0usize..20,
        off_grid in prop::collection::vec(0i64..70 * 1440, 0..5),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let e = engine_with(dir.path(), |_| {});
        // Irregular: the model puts bars off the grid, which a regular series refuses.
        e.register_kline(&fastk::query::types::RegisterKline {
            price_scale: 1,
            irregular: Some(true),
            ..kline_registration("AAA", "1m")
        })
        .unwrap();
        let key = SeriesKey::kline("AAA", "1m").unwrap();
        let base = JAN_2024 + 20 * DAY;
        // Dense series (long unbroken runs, the fast path) with holes punched in, or
        // the sparse random ones; plus a few bars off the grid.
        let mut ts: std::collections::BTreeSet<i64> = if dense {
            (0..30 * 1440).map(|m| base + m * MINUTE).collect()
        } else {
            writes.concat().into_iter().collect()
        };
        for (at, len) in holes {
            for m in at..at + len {
                ts.remove(&(base + m * MINUTE));
            }
        }
        let first = *ts.iter().next().unwrap_or(&base);
        ts.insert(first);
        let mut all = ts.clone();
        // Off-grid bars after the first one (the first bar anchors the grid).
        for m in off_grid {
            let t = base + m * MINUTE + 7_000;
            if t > first {
                all.insert(t);
            }
        }
        let rows: Vec<KlineRecord> = all.iter().map(|&t| bar(t, t / MINUTE)).collect();
        e.write_kline(&key, &rows, None).unwrap();
        let (name, mask) = [("24x7", 0x7f), ("weekdays", 0x1f), ("1011110", 0b0111101)][cal];
        let req = CoverageRequest {
            start_ts: start,
            end_ts: end,
            calendar: Some(name.into()),
            complete_n: Some(complete_n),
            max_gaps: Some(max_gaps),
            snapshot: None,
            version: None,
            as_of_commit: None,
        };
        let lo = start.unwrap_or(first);
        let hi = end.unwrap_or(*all.iter().next_back().unwrap());
        if lo > hi {
            return Ok(());
        }
        let c = e.coverage(&key, &req).unwrap();
        let (expected, present, gaps, last_run) = model_coverage(&ts, MINUTE, mask, lo, hi, complete_n);
        prop_assert_eq!(c.expected, expected);
        prop_assert_eq!(c.present, present);
        let in_range = all.range(lo..=hi).count() as u64;
        prop_assert_eq!(c.extra, in_range - present);
        prop_assert_eq!(c.gap_count, gaps.len() as u64);
        let listed: Vec<(i64, i64, u64)> = c.gaps.iter().map(|g| (g.start_ts, g.end_ts, g.missing)).collect();
        prop_assert_eq!(&listed[..], &gaps[..gaps.len().min(max_gaps)]);
        prop_assert_eq!(c.gaps_truncated, gaps.len() > max_gaps);
        prop_assert_eq!(c.last_run.map(|r| (r.start_ts, r.end_ts, r.bars)), last_run);
        prop_assert_eq!(c.last_complete_ts, last_run.map(|r| r.1));
        prop_assert_eq!(c.calendar, name);
    }
}

#[test]
fn coverage_of_ten_years_is_one_pass() {
    // Ten years of 1m bars with three known holes, weekdays only, 5.26M rows: the
    // answer lists exactly the holes, and a weekend never counts as one.
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    let key = register_kline(&e, "AAA");
    let years = if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") {
        10
    } else {
        1
    };
    let start = JAN_2024 - years * 365 * DAY;
    let holes = [
        (start + 100 * DAY + 5 * MINUTE, 3),
        (start + 200 * DAY, 1440),
        (start + 300 * DAY + 7 * HOUR, 1),
    ];
    let in_hole = |t: i64| holes.iter().any(|&(h, n)| t >= h && t < h + n * MINUTE);
    let mut batch = Vec::new();
    let mut t = start;
    let end = JAN_2024;
    while t < end {
        if !in_hole(t) && weekday(t) < 5 {
            batch.push(bar(t, t / MINUTE));
        }
        if batch.len() == 200_000 || t + MINUTE >= end {
            e.write_kline(&key, &batch, None).unwrap();
            batch.clear();
        }
        t += MINUTE;
    }
    let c = e
        .coverage(
            &key,
            &CoverageRequest {
                calendar: Some("weekdays".into()),
                ..CoverageRequest::default()
            },
        )
        .unwrap();
    let gaps: Vec<(i64, u64)> = c.gaps.iter().map(|g| (g.start_ts, g.missing)).collect();
    let want: Vec<(i64, u64)> = holes
        .iter()
        .filter(|&&(h, _)| weekday(h) < 5)
        .map(|&(h, n)| {
            let missing = (0..n).filter(|k| weekday(h + k * MINUTE) < 5).count() as u64;
            (h, missing)
        })
        .collect();
    assert_eq!(gaps, want);
    assert_eq!(
        c.present + want.iter().map(|w| w.1).sum::<u64>(),
        c.expected
    );
    assert_eq!(c.extra, 0);
}

// ---------------------------------------------------------------------------
// SQL agrees

#[test]
fn resample_agrees_with_sql() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    let key = register_kline(&e, "AAA");
    let rows: Vec<KlineRecord> = (0..20_000)
        .map(|i| JAN_2024 + 25 * DAY + i * 3 * MINUTE)
        .filter(|t| t % (7 * HOUR) > 20 * MINUTE)
        .map(|t| bar(t, t / MINUTE))
        .collect();
    e.write_kline(&key, &rows, None).unwrap();
    let series = e.series(&key).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (target, interval) in [("1h", "1 hour"), ("1d", "1 day"), ("15m", "15 minutes")] {
        let (native, _) = e
            .read_page(
                &series,
                &spec(None, None, target, 0, Fill::None, None),
                100_000,
            )
            .unwrap();
        let q = format!(
            "SELECT date_bin(INTERVAL '{interval}', ts) AS ts, \
             first_value(open ORDER BY ts) AS open, max(high) AS high, min(low) AS low, \
             last_value(close ORDER BY ts) AS close, sum(volume) AS volume \
             FROM kline_raw WHERE symbol = 'AAA' AND timeframe = '1m' GROUP BY 1 ORDER BY 1"
        );
        let engine = Arc::clone(&e);
        let answer = rt
            .block_on(fastk::query::sql::collect(&engine, &q, vec![], None))
            .unwrap();
        let sql: Vec<Row> = answer
            .batches
            .iter()
            .flat_map(|b| {
                let ts_type = DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, None);
                let ts = arrow_cast::cast(b.column(0), &ts_type).unwrap();
                let ts = ts.as_primitive::<TimestampMillisecondType>();
                (0..b.num_rows())
                    .map(|r| {
                        let v = (1..6)
                            .map(|c| b.column(c).as_primitive::<Int64Type>().value(r))
                            .collect();
                        (ts.value(r), Some(v), true)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let native: Vec<Row> = rows_of(&native)
            .into_iter()
            .map(|(t, v, _)| (t, v, true))
            .collect();
        assert!(native.len() > 10);
        assert_eq!(native, sql, "{target}");
    }
}

#[test]
fn many_series_reads_agree_with_sql() {
    // A range of every 1m kline series, and the as-of cross section, read through
    // `Engine::select` + `read_into` equal the same questions asked in SQL.
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    for (i, sym) in ["CCC", "AAA", "BBB"].iter().enumerate() {
        let key = register_kline(&e, sym);
        let rows: Vec<KlineRecord> = (0..500 + 100 * i as i64)
            .map(|k| JAN_2024 + (k * 7 + i as i64) * MINUTE)
            .map(|t| bar(t, t / MINUTE))
            .collect();
        e.write_kline(&key, &rows, None).unwrap();
    }
    let sel = Selection {
        kind: SeriesKind::Kline,
        timeframe: "1m".into(),
        scalar: None,
        symbols: Symbols::All("*".into()),
    };
    let (lo, hi) = (JAN_2024 + 600 * MINUTE, JAN_2024 + 3000 * MINUTE);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sql_rows = |q: &str| -> Vec<(String, i64, i64)> {
        let answer = rt
            .block_on(fastk::query::sql::collect(&e, q, vec![], None))
            .unwrap();
        let mut out = Vec::new();
        for b in &answer.batches {
            let sym = arrow_cast::cast(b.column(0), &DataType::Utf8).unwrap();
            let sym = sym.as_string::<i32>();
            let ts_type = DataType::Timestamp(arrow_schema::TimeUnit::Millisecond, None);
            let ts = arrow_cast::cast(b.column(1), &ts_type).unwrap();
            let ts = ts.as_primitive::<TimestampMillisecondType>();
            let close = b.column(2).as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                out.push((sym.value(r).to_string(), ts.value(r), close.value(r)));
            }
        }
        out
    };
    let native = |spec: &ReadSpec| -> Vec<(String, i64, i64)> {
        let mut out = Vec::new();
        for s in e.select(&sel, 10).unwrap() {
            let (batches, _) = e.read_page(&s, spec, 100_000).unwrap();
            for b in &batches {
                let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
                let close = b.column(1).as_primitive::<Int64Type>();
                for r in 0..b.num_rows() {
                    out.push((s.meta.key.symbol().to_string(), ts.value(r), close.value(r)));
                }
            }
        }
        out
    };
    let range = ReadSpec::new(ReadArgs {
        start_ts: Some(lo),
        end_ts: Some(hi),
        columns: Some(vec!["close".into()]),
        ..ReadArgs::default()
    })
    .unwrap();
    let want = sql_rows(&format!(
        "SELECT symbol, ts, close FROM kline_raw WHERE timeframe = '1m' AND ts BETWEEN \
         to_timestamp_millis({lo}) AND to_timestamp_millis({hi}) ORDER BY symbol, ts"
    ));
    assert!(want.len() > 500);
    assert_eq!(native(&range), want);
    let as_of = ReadSpec::new(ReadArgs {
        as_of: Some(AsOf::Ts(hi)),
        columns: Some(vec!["close".into()]),
        ..ReadArgs::default()
    })
    .unwrap();
    let want = sql_rows(&format!(
        "SELECT symbol, ts, close FROM (SELECT symbol, ts, close, row_number() OVER \
         (PARTITION BY symbol ORDER BY ts DESC) AS n FROM kline_raw WHERE timeframe = '1m' \
         AND ts <= to_timestamp_millis({hi})) WHERE n = 1 ORDER BY symbol"
    ));
    assert_eq!(want.len(), 3);
    assert_eq!(native(&as_of), want);
}

/// A cross section of more series than one part (1,024 series) is gathered on several
/// threads: its rows are each series' last row in range, in symbol order, exactly as
/// one series at a time answers, cold (after a reopen: each row read from a chunk
/// header) and warm, with the series that have no row in range left out.
#[test]
fn a_cross_section_of_thousands_of_series_equals_the_per_series_answers() {
    use fastk::query::stream::{ReadCommand, ReadPlan, Target};
    let dir = tempfile::tempdir().unwrap();
    let n = 2_600usize;
    let name = |i: usize| format!("X{i:05}");
    // Series i has 1 + i % 5 rows an hour apart from minute i % 13; every seventh has
    // none, and as of `t` (below) those starting after it have none in range either.
    let rows = |i: usize| -> Vec<(i64, i64)> {
        if i.is_multiple_of(7) {
            return Vec::new();
        }
        (0..1 + i as i64 % 5)
            .map(|r| {
                (
                    JAN_2024 + (i as i64 % 13) * MINUTE + r * HOUR,
                    i as i64 * 100 + r,
                )
            })
            .collect()
    };
    {
        let e = engine_with(dir.path(), |_| {});
        let regs: Vec<_> = (0..n)
            .map(|i| scalar_registration(&name(i), "1m", "ind", "v", Some(ValueType::I64)))
            .collect();
        e.register_scalar_many(&regs).unwrap();
        let entries = (0..n)
            .filter(|&i| !i.is_multiple_of(7))
            .map(|i| {
                let mut b = WriteBatch::with_capacity(2, 5);
                for (t, v) in rows(i) {
                    b.cols[0].push(t);
                    b.cols[1].push(v);
                }
                (SeriesKey::scalar(&name(i), "1m", "ind", "v").unwrap(), b)
            })
            .collect();
        e.write_many(entries).unwrap();
        e.store.fold_all();
    }
    let e = engine_with(dir.path(), |_| {});
    let t = JAN_2024 + 2 * HOUR + 6 * MINUTE;
    let want: Vec<(String, i64, i64)> = (0..n)
        .filter_map(|i| {
            let (ts, v) = rows(i).into_iter().rfind(|&(ts, _)| ts <= t)?;
            Some((name(i), ts, v))
        })
        .collect();
    assert!(
        want.len() > 2_000 && want.len() < n,
        "{} of {n} answer",
        want.len()
    );
    for round in ["cold", "warm"] {
        let spec = ReadSpec::new(ReadArgs {
            as_of: Some(AsOf::Ts(t)),
            ..ReadArgs::default()
        })
        .unwrap();
        let plan = ReadPlan::new(
            &e,
            ReadCommand {
                target: Target::Many(Selection {
                    kind: SeriesKind::Scalar,
                    timeframe: "1m".into(),
                    scalar: Some(("ind".into(), "v".into())),
                    symbols: Symbols::All("*".into()),
                }),
                spec,
                predicate: None,
            },
        )
        .unwrap();
        assert_eq!(plan.series.len(), n);
        let mut got: Vec<(String, i64, i64)> = Vec::new();
        plan.produce(&e, 1_000, &mut |b| {
            let dict = b.column(0).as_dictionary::<Int32Type>();
            let names = dict.values().as_string::<i32>();
            let ts = b.column(1).as_primitive::<TimestampMillisecondType>();
            let v = b.column(2).as_primitive::<Int64Type>();
            for r in 0..b.num_rows() {
                let sym = names.value(dict.keys().value(r) as usize);
                got.push((sym.to_string(), ts.value(r), v.value(r)));
            }
            true
        })
        .unwrap();
        assert_eq!(got, want, "{round}");
    }
}

//! SQL over trade and quote series: the tables `trade`, `trade_raw`, `quote` and
//! `quote_raw` answer what the store holds (checked against the contract's model of
//! the writes), with `ts` in nanoseconds, and push `symbol`, `ts` and limits down to
//! the store like the kline tables.

mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, Int8Type, Int64Type, TimestampMillisecondType, TimestampNanosecondType, UInt64Type,
};
use arrow_schema::{DataType, TimeUnit};
use common::sql::{rt, run};
use common::ticks::{DAY_NS, DAY0, Model, Row, apply_model, batch, model_rows};
use common::*;
use fastk::query::sql;
use fastk::query::tick::RegisterTick;
use fastk::query::{Engine, sql::SqlAnswer};
use fastk::record::{SeriesKey, SeriesKind, TsRange};

fn explain(e: &Arc<Engine>, q: &str) -> String {
    let a = run(e, &format!("EXPLAIN ANALYZE {q}"));
    a.batches
        .iter()
        .flat_map(|b| {
            let plans = b.column(1).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| plans.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Column `c` of every batch as i64 (timestamps, uint64 seq and int8 side widened).
fn ints(a: &SqlAnswer, c: usize) -> Vec<i64> {
    let mut out = Vec::new();
    for b in &a.batches {
        let col = b.column(c);
        match col.data_type() {
            DataType::Timestamp(TimeUnit::Nanosecond, _) => out.extend(
                col.as_primitive::<TimestampNanosecondType>()
                    .values()
                    .iter()
                    .copied(),
            ),
            DataType::Timestamp(_, _) => out.extend(
                col.as_primitive::<TimestampMillisecondType>()
                    .values()
                    .iter()
                    .copied(),
            ),
            DataType::UInt64 => out.extend(
                col.as_primitive::<UInt64Type>()
                    .values()
                    .iter()
                    .map(|&v| v as i64),
            ),
            DataType::Int8 => out.extend(
                col.as_primitive::<Int8Type>()
                    .values()
                    .iter()
                    .map(|&v| i64::from(v)),
            ),
            _ => out.extend(col.as_primitive::<Int64Type>().values().iter().copied()),
        }
    }
    out
}

fn floats(a: &SqlAnswer, c: usize) -> Vec<f64> {
    a.batches
        .iter()
        .flat_map(|b| b.column(c).as_primitive::<Float64Type>().values().to_vec())
        .collect()
}

/// The rows of `model` in `range` as columns (ts, seq, then the stored columns).
fn columns_of(model: &Model, range: TsRange) -> Vec<Vec<i64>> {
    let rows = model_rows(model, range);
    (0..6)
        .map(|c| rows.iter().map(|r| r[c]).collect())
        .collect()
}

const SYMBOLS: [&str; 2] = ["AAA", "BBB"];

/// Trades for AAA and BBB over three days (day partitions) and quotes for AAA (hour
/// partitions): bursts of events in one nanosecond, assigned and explicit `seq`, a
/// replacement. Returns the engine and the model of each trade series.
fn dataset(dir: &std::path::Path) -> (Arc<Engine>, Vec<Model>, Model) {
    let e = engine_with(dir, |_| {});
    let reg = |symbol: &str, partition: &str, kind: SeriesKind| {
        e.register_tick(
            kind,
            &RegisterTick {
                symbol: symbol.into(),
                price_scale: 100,
                size_scale: 1000,
                partition: Some(partition.into()),
                retention_ms: None,
            },
        )
        .unwrap();
    };
    let mut models = Vec::new();
    for (i, sym) in SYMBOLS.iter().enumerate() {
        reg(sym, "day", SeriesKind::Trade);
        let key = SeriesKey::trade(sym).unwrap();
        let mut model = Model::new();
        // Three days; every 7th instant holds a burst of three trades.
        let rows: Vec<Row> = (0..3 * 400)
            .flat_map(|j: i64| {
                let ts = DAY0 + (j / 400) * DAY_NS + (j % 400) * 1_000_003 + i as i64;
                let n = if j % 7 == 0 { 3 } else { 1 };
                (0..n).map(move |k| (ts, None, j * 10 + k))
            })
            .collect();
        for part in rows.chunks(500) {
            e.write(&key, batch(0, part), None).unwrap();
            apply_model(0, &mut model, part).unwrap();
        }
        // A retry of a venue-numbered trade replaces it.
        let fix = [(DAY0 + i as i64, Some(1), 77_777)];
        e.write(&key, batch(0, &fix), None).unwrap();
        apply_model(0, &mut model, &fix).unwrap();
        models.push(model);
    }
    reg("AAA", "hour", SeriesKind::Quote);
    let key = SeriesKey::quote("AAA").unwrap();
    let mut quotes = Model::new();
    let rows: Vec<Row> = (0..900)
        .map(|j: i64| (DAY0 + j * 10_000_000_000, None, j))
        .collect();
    e.write(&key, batch(1, &rows), None).unwrap();
    apply_model(1, &mut quotes, &rows).unwrap();
    (e, models, quotes)
}

#[test]
fn trade_tables_answer_the_model_with_nanosecond_ts() {
    let dir = tempfile::tempdir().unwrap();
    let (e, models, _) = dataset(dir.path());
    let a = run(
        &e,
        "SELECT ts, seq, price, size, side, trade_id FROM trade_raw \
         WHERE symbol = 'AAA' ORDER BY ts, seq",
    );
    let schema = a.batches[0].schema();
    assert_eq!(
        schema.field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
    );
    assert_eq!(schema.field(1).data_type(), &DataType::UInt64);
    assert_eq!(schema.field(4).data_type(), &DataType::Int8);
    let want = columns_of(&models[0], TsRange::all());
    assert!(want[0].len() > 1_200, "the bursts share nanoseconds");
    for (c, w) in want.iter().enumerate() {
        assert_eq!(&ints(&a, c), w, "column {c} of trade_raw");
    }

    // The scaled table divides price by price_scale and size by size_scale.
    let s = run(
        &e,
        "SELECT price, size FROM trade WHERE symbol = 'AAA' ORDER BY ts, seq",
    );
    let price: Vec<f64> = want[2].iter().map(|&p| p as f64 / 100.0).collect();
    let size: Vec<f64> = want[3].iter().map(|&v| v as f64 / 1000.0).collect();
    assert_eq!(floats(&s, 0), price);
    assert_eq!(floats(&s, 1), size);

    // trade_raw carries the scales.
    let scales = run(
        &e,
        "SELECT DISTINCT price_scale, size_scale FROM trade_raw WHERE symbol = 'BBB'",
    );
    assert_eq!(
        (ints(&scales, 0), ints(&scales, 1)),
        (vec![100], vec![1000])
    );

    // Every symbol, in (symbol, ts, seq) order without a sort of our own.
    let all = run(&e, "SELECT symbol, ts, seq FROM trade_raw");
    let want_ts: Vec<i64> = models
        .iter()
        .flat_map(|m| columns_of(m, TsRange::all())[0].clone())
        .collect();
    let mut got_ts = ints(&all, 1);
    got_ts.sort_unstable();
    let mut sorted = want_ts.clone();
    sorted.sort_unstable();
    assert_eq!(got_ts, sorted);
}

#[test]
fn symbol_and_nanosecond_ranges_are_pushed_and_prune_days() {
    let dir = tempfile::tempdir().unwrap();
    let (e, models, _) = dataset(dir.path());
    // One nanosecond-exact window inside the second day.
    let (lo, hi) = (
        DAY0 + DAY_NS + 7 * 1_000_003,
        DAY0 + DAY_NS + 40 * 1_000_003,
    );
    let q = format!(
        "SELECT ts, seq FROM trade_raw WHERE symbol = 'BBB' \
         AND ts >= to_timestamp_nanos({lo}) AND ts <= to_timestamp_nanos({})",
        hi + 1
    );
    let a = run(&e, &q);
    let want = columns_of(&models[1], TsRange::new(Some(lo), Some(hi + 1)));
    assert!(!want[0].is_empty());
    assert_eq!(ints(&a, 0), want[0]);
    assert_eq!(ints(&a, 1), want[1]);
    let plan = explain(&e, &q);
    assert!(plan.contains("series=1 of 2"), "{plan}");
    assert!(
        plan.contains(&format!("ts=[{lo}, {}]", hi + 1)),
        "the range reaches the scan in ns: {plan}"
    );
    let pruned = plan
        .split("chunks_pruned=")
        .nth(1)
        .and_then(|t| t.split(',').next())
        .and_then(|t| t.split_once('/'))
        .map(|(a, b)| (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
    let (pruned, total) = pruned.unwrap_or_else(|| panic!("no chunk figures: {plan}"));
    assert!(total >= 3, "three days at least: {plan}");
    assert_eq!(pruned, total - 1, "only the second day is read: {plan}");
    assert!(
        !plan.contains("FilterExec"),
        "nothing left to filter: {plan}"
    );

    // A timestamp literal compares exactly: 1 ms after DAY0 is 1,000,000 ns.
    let q = "SELECT count(*) FROM trade_raw WHERE symbol = 'AAA' \
             AND ts < TIMESTAMP '2024-03-10T00:00:00.001Z'";
    let n = ints(&run(&e, q), 0)[0];
    let want = models[0].range(..(DAY0 + 1_000_000, 0)).count() as i64;
    assert_eq!(n, want);
}

#[test]
fn latest_limits_and_statistics_work_as_for_bars() {
    let dir = tempfile::tempdir().unwrap();
    let (e, models, quotes) = dataset(dir.path());
    let q = "SELECT ts FROM trade_raw WHERE symbol = 'AAA' ORDER BY ts DESC LIMIT 5";
    let a = run(&e, q);
    let mut want: Vec<i64> = columns_of(&models[0], TsRange::all())[0].clone();
    want.reverse();
    assert_eq!(ints(&a, 0), want[..5].to_vec());
    let plan = explain(&e, q);
    assert!(plan.contains("order=ts desc (latest)"), "{plan}");
    assert!(!plan.contains("SortExec"), "{plan}");

    // count(*) and the ts bounds come from the series' state.
    let c = run(
        &e,
        "SELECT count(*), min(ts), max(ts) FROM quote_raw WHERE symbol = 'AAA'",
    );
    let (first, last) = (
        *quotes.keys().next().unwrap(),
        *quotes.keys().next_back().unwrap(),
    );
    assert_eq!(ints(&c, 0), vec![quotes.len() as i64]);
    assert_eq!((ints(&c, 1), ints(&c, 2)), (vec![first.0], vec![last.0]));

    // The quote table: bid <= ask, scaled like trades.
    let qt = run(
        &e,
        "SELECT bid, ask, bid_size FROM quote WHERE symbol = 'AAA' ORDER BY ts",
    );
    let cols = columns_of(&quotes, TsRange::all());
    let bid: Vec<f64> = cols[2].iter().map(|&v| v as f64 / 100.0).collect();
    let bid_size: Vec<f64> = cols[4].iter().map(|&v| v as f64 / 1000.0).collect();
    assert_eq!(floats(&qt, 0), bid);
    assert_eq!(floats(&qt, 2), bid_size);
    assert!(
        floats(&qt, 0)
            .iter()
            .zip(floats(&qt, 1))
            .all(|(b, a)| *b <= a)
    );

    // The series table lists tick series with their bounds in milliseconds.
    let s = run(
        &e,
        "SELECT kind, symbol, timeframe, first_ts FROM series WHERE kind = 'quote'",
    );
    assert_eq!(s.batches[0].column(0).as_string::<i32>().value(0), "quote");
    assert_eq!(s.batches[0].column(2).as_string::<i32>().value(0), "tick");
    assert_eq!(ints(&s, 3), vec![first.0 / 1_000_000]);

    // A table a kind has no cross section for says so.
    let err = rt()
        .block_on(sql::collect(
            &e,
            "SELECT * FROM latest('trade', 'tick')",
            Vec::new(),
            None,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("no cross section"), "{err}");
}

#[test]
fn a_snapshot_schema_reads_ticks_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let (e, models, _) = dataset(dir.path());
    e.create_snapshot(&fastk::query::snapshots::SnapshotCreate {
        name: "before".into(),
        series: None,
        note: None,
    })
    .unwrap();
    // After the snapshot: more trades in a new day, and a replacement by `seq`.
    let key = SeriesKey::trade("AAA").unwrap();
    let mut now = models[0].clone();
    let more: Vec<Row> = (0..50)
        .map(|j| (DAY0 + 3 * DAY_NS + j, None, j))
        .chain([(DAY0, Some(1), 4_242)])
        .collect();
    e.write(&key, batch(0, &more), None).unwrap();
    apply_model(0, &mut now, &more).unwrap();
    let q = |schema: &str| {
        format!(
            "SELECT ts, seq, price FROM {schema}.trade_raw WHERE symbol = 'AAA' ORDER BY ts, seq"
        )
    };
    for (schema, model) in [("\"before\"", &models[0]), ("public", &now)] {
        let a = run(&e, &q(schema));
        let want = columns_of(model, TsRange::all());
        for (c, w) in want.iter().take(3).enumerate() {
            assert_eq!(&ints(&a, c), w, "{schema}: column {c} (ts, seq, price)");
        }
    }
}

//! SQL over the engine (no sockets): pushdown visible in plans and in the scans'
//! figures, answers equal to the native reads on random series, the zero-copy scan,
//! limits, cancellation and the read-only rule. HTTP and Flight SQL have their own
//! tests (`tests/http_api/sql.rs`, `tests/flight_sql.rs`).

mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use common::sql::{rt, run};
use common::*;
use datafusion::common::ScalarValue;
use fastk::error::ErrorKind;
use fastk::query::Engine;
use fastk::query::sql;
use fastk::record::{KlineRecord, SeriesKey, TsRange, ValueType};
use fastk::storage::WriteBatch;
use proptest::prelude::*;

fn bars(from: i64, n: usize, step: i64, seed: i64) -> Vec<KlineRecord> {
    (0..n as i64)
        .map(|i| {
            let p = 10_000 + (i * 7 + seed) % 500;
            KlineRecord {
                ts: from + i * step,
                open: p,
                high: p + 9,
                low: p - 9,
                close: p + 3,
                volume: 1 + i % 13,
            }
        })
        .collect()
}

fn scalar(e: &Engine, symbol: &str, name: &str, vt: ValueType) -> SeriesKey {
    e.register_scalar(&scalar_registration(symbol, "1m", "factor", name, Some(vt)))
        .unwrap();
    SeriesKey::scalar(symbol, "1m", "factor", name).unwrap()
}

fn write_values(e: &Engine, key: &SeriesKey, ts: &[i64], bits: &[i64]) {
    let mut b = WriteBatch::with_capacity(2, ts.len());
    b.cols[0].extend_from_slice(ts);
    b.cols[1].extend_from_slice(bits);
    e.write(key, b, None).unwrap();
}

/// Three kline series over three months and two scalar series; returns the engine.
fn dataset(dir: &std::path::Path) -> Arc<Engine> {
    let e = engine_with(dir, |c| c.storage.zonemap_block_rows = 256);
    for (i, sym) in ["AAA", "BBB", "CCC"].iter().enumerate() {
        let key = register_kline(&e, sym);
        // 90 days of 10-minute bars: three monthly partitions.
        e.write_kline(&key, &bars(JAN_2024, 90 * 144, 10 * MINUTE, i as i64), None)
            .unwrap();
    }
    let f = scalar(&e, "AAA", "momentum", ValueType::F64);
    let ts: Vec<i64> = (0..20_000).map(|i| JAN_2024 + i * MINUTE).collect();
    let vals: Vec<i64> = (0..20_000)
        .map(|i| (((i * 37) % 1000) as f64 / 100.0).to_bits() as i64)
        .collect();
    write_values(&e, &f, &ts, &vals);
    let g = scalar(&e, "AAA", "signal", ValueType::I64);
    let ivals: Vec<i64> = (0..20_000).map(|i| (i * 13) % 97).collect();
    write_values(&e, &g, &ts, &ivals);
    e
}

fn explain(e: &Arc<Engine>, q: &str) -> String {
    let a = run(e, &format!("EXPLAIN {q}"));
    let mut out = String::new();
    for b in &a.batches {
        let plans = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push_str(plans.value(i));
            out.push('\n');
        }
    }
    out
}

fn i64s(a: &sql::SqlAnswer, col: usize) -> Vec<i64> {
    a.batches
        .iter()
        .flat_map(|b| {
            let c = b.column(col);
            match c.data_type() {
                arrow_schema::DataType::Timestamp(..) => c
                    .as_primitive::<TimestampMillisecondType>()
                    .values()
                    .to_vec(),
                _ => c.as_primitive::<Int64Type>().values().to_vec(),
            }
        })
        .collect()
}

fn f64s(a: &sql::SqlAnswer, col: usize) -> Vec<f64> {
    a.batches
        .iter()
        .flat_map(|b| {
            b.column(col)
                .as_primitive::<Float64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// Asserts that `q` is refused as the client's error, with `needle` in the message.
fn expect_invalid(r: &tokio::runtime::Runtime, e: &Arc<Engine>, q: &str, needle: &str) {
    let err = r
        .block_on(sql::collect(e, q, Vec::new(), None))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{q}: {err}");
    assert!(err.message.contains(needle), "{q}: {}", err.message);
}

#[test]
fn key_and_ts_conditions_are_pushed_and_prune_months() {
    let dir = tempfile::tempdir().unwrap();
    let e = dataset(dir.path());
    let (lo, hi) = (JAN_2024 + 40 * DAY, JAN_2024 + 41 * DAY);
    let q = format!(
        "SELECT ts, close FROM kline WHERE symbol = 'BBB' AND timeframe = '1m' \
         AND ts >= to_timestamp_millis({lo}) AND ts < to_timestamp_millis({hi}) ORDER BY ts"
    );
    let plan = explain(&e, &q);
    assert!(
        plan.contains("FastkScan: table=kline, series=1 of 3"),
        "{plan}"
    );
    assert!(plan.contains(&format!("ts=[{lo}, {}]", hi - 1)), "{plan}");
    assert!(
        !plan.contains("FilterExec"),
        "every condition is exact: {plan}"
    );
    assert!(
        !plan.contains("SortExec"),
        "one series is already in ts order: {plan}"
    );
    let a = run(&e, &q);
    assert_eq!(a.rows(), 144);
    assert_eq!(i64s(&a, 0)[0], lo);
    let s = &a.stats;
    assert_eq!((s.series_total, s.series_selected), (3, 1));
    assert!(s.chunks_pruned >= 2, "other months are not read: {s:?}");
    assert_eq!(s.rows_scanned, 144, "only the range is read: {s:?}");
    // The scaled price equals the stored integer over the scale.
    let native = e
        .read(
            &SeriesKey::kline("BBB", "1m").unwrap(),
            TsRange::new(Some(lo), Some(hi - 1)),
            1000,
        )
        .unwrap();
    let closes: Vec<f64> = native
        .slices
        .iter()
        .flat_map(|s| {
            s.col(4)
                .iter()
                .map(|&v| v as f64 / 100.0)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(f64s(&a, 1), closes);
}

#[test]
fn order_by_ts_desc_limit_is_the_latest_path() {
    let dir = tempfile::tempdir().unwrap();
    let e = dataset(dir.path());
    let q = "SELECT ts, open FROM kline_raw WHERE symbol = 'CCC' AND timeframe = '1m' ORDER BY ts DESC LIMIT 5";
    let plan = explain(&e, q);
    assert!(plan.contains("order=ts desc (latest)"), "{plan}");
    assert!(plan.contains("limit=5"), "{plan}");
    assert!(!plan.contains("SortExec"), "{plan}");
    let a = run(&e, q);
    let latest = e
        .latest(&SeriesKey::kline("CCC", "1m").unwrap(), TsRange::all(), 5)
        .unwrap();
    let mut want: Vec<i64> = latest.slices.iter().flat_map(|s| s.ts().to_vec()).collect();
    want.reverse();
    assert_eq!(i64s(&a, 0), want);
    assert_eq!(a.stats.rows_out, 5, "the scan stopped at the limit");
    // Ascending: the scan's own order; the LIMIT must still reach it (a leaf that
    // claimed to pass limits through to children once lost it).
    let q = "SELECT ts FROM kline WHERE symbol = 'CCC' ORDER BY ts LIMIT 7";
    let plan = explain(&e, q);
    assert!(plan.contains("limit=7"), "{plan}");
    let a = run(&e, q);
    assert_eq!(
        i64s(&a, 0),
        (0..7)
            .map(|i| JAN_2024 + i * 10 * MINUTE)
            .collect::<Vec<_>>()
    );
    let a = run(&e, "SELECT ts FROM kline LIMIT 3");
    assert_eq!(a.rows(), 3);
    assert!(
        a.stats.rows_scanned < 1000,
        "only the last chunk is read: {:?}",
        a.stats
    );
}

#[test]
fn value_conditions_use_the_zone_maps_and_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let e = dataset(dir.path());
    let q = "SELECT ts, value FROM scalar WHERE name = 'momentum' AND value >= 9.98";
    let plan = explain(&e, q);
    assert!(plan.contains("value: "), "{plan}");
    assert!(!plan.contains("FilterExec"), "{plan}");
    let a = run(&e, q);
    let want = (0..20_000).filter(|i| (i * 37) % 1000 >= 998).count();
    assert_eq!(a.rows(), want);
    assert!(f64s(&a, 1).iter().all(|v| *v >= 9.98));
    assert_ne!(a.stats.index_used, "none", "{:?}", a.stats);
    // Two conditions on value: both exact, the second checked row by row.
    let a = run(
        &e,
        "SELECT count(*) FROM scalar_i64 WHERE name = 'signal' AND value BETWEEN 10 AND 20 AND value <> 15",
    );
    let want = (0..20_000i64)
        .filter(|i| {
            let v = (i * 13) % 97;
            (10..=20).contains(&v) && v != 15
        })
        .count() as i64;
    assert_eq!(i64s(&a, 0), vec![want]);
}

#[test]
fn raw_columns_are_the_chunk_memory() {
    let dir = tempfile::tempdir().unwrap();
    let e = dataset(dir.path());
    let key = SeriesKey::kline("AAA", "1m").unwrap();
    let native = e.read(&key, TsRange::all(), 10).unwrap();
    let a = run(
        &e,
        "SELECT ts, open FROM kline_raw WHERE symbol = 'AAA' AND timeframe = '1m' LIMIT 10",
    );
    let b: &RecordBatch = &a.batches[0];
    let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
    let open = b.column(1).as_primitive::<Int64Type>();
    assert_eq!(
        ts.values().as_ptr(),
        native.slices[0].ts().as_ptr(),
        "ts was copied"
    );
    assert_eq!(
        open.values().as_ptr(),
        native.slices[0].col(1).as_ptr(),
        "open was copied"
    );
}

#[test]
fn catalog_tables_list_series_and_registry_rows() {
    let dir = tempfile::tempdir().unwrap();
    let e = dataset(dir.path());
    let a = run(
        &e,
        "SELECT symbol, rows FROM series WHERE kind = 'kline' ORDER BY symbol",
    );
    assert_eq!(a.rows(), 3);
    assert_eq!(i64s(&a, 1), vec![90 * 144; 3]);
    let a = run(&e, "SELECT count(*) FROM datasets");
    assert_eq!(i64s(&a, 0), vec![0]);
    let a = run(
        &e,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    );
    assert_eq!(
        a.rows(),
        12,
        "kline, scalar, trade and quote tables (plain and raw or i64) and four catalog tables"
    );
}

#[test]
fn parameters_bind_positionally() {
    let dir = tempfile::tempdir().unwrap();
    let e = dataset(dir.path());
    let a = rt()
        .block_on(sql::collect(
            &e,
            "SELECT count(*) FROM kline WHERE symbol = $1 AND ts < to_timestamp_millis($2)",
            vec![
                ScalarValue::Utf8(Some("AAA".into())),
                ScalarValue::Int64(Some(JAN_2024 + DAY)),
            ],
            None,
        ))
        .unwrap();
    assert_eq!(i64s(&a, 0), vec![144]);
}

#[test]
fn bad_sql_and_writes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = dataset(dir.path());
    let r = rt();
    for (q, needle) in [
        ("SELEC 1", "SELEC"),
        ("SELECT nope FROM kline", "nope"),
        ("SELECT * FROM missing_table", "missing_table"),
        (
            "INSERT INTO kline VALUES ('A','1m',0,1,1,1,1,1)",
            "read-only",
        ),
        ("CREATE TABLE t (a INT)", "read-only"),
        ("DROP TABLE kline", "read-only"),
        ("SET datafusion.execution.batch_size = 1", "read-only"),
        ("", "empty"),
    ] {
        expect_invalid(&r, &e, q, needle);
    }
}

#[test]
fn memory_time_and_concurrency_limits_end_queries_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let e = dataset(&root);
    drop(e);
    let e = engine_with(&root, |c| {
        c.sql.memory_per_query_bytes = 16 << 20;
        c.sql.memory_total_bytes = 16 << 20;
        c.sql.query_timeout_s = 2;
        c.sql.max_concurrent_queries = 1;
    });
    let r = rt();
    // An unbounded sort of a cross join needs far more than 16 MiB.
    let err = r
        .block_on(sql::collect(
            &e,
            "SELECT a.ts, b.close FROM kline a, kline b WHERE a.symbol = 'AAA' AND b.symbol = 'BBB' ORDER BY a.close + b.close",
            Vec::new(),
            None,
        ))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PayloadTooLarge, "{err}");
    assert!(err.message.contains("memory"), "{}", err.message);
    // The failed query's tasks are aborted asynchronously; its memory comes back
    // once they are gone (bounded wait, not a timing assertion).
    let mut waited = 0;
    while e.sql.memory_used() != 0 && waited < 200 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    assert_eq!(
        e.sql.memory_used(),
        0,
        "the failed query gave its memory back"
    );
    // A query that runs past the timeout is cancelled.
    let err = r
        .block_on(sql::collect(
            &e,
            // (A plain count(*) of the product comes from the tables' statistics.)
            "SELECT count(*) FROM kline a, kline b, kline c WHERE a.close + b.close + c.close > 0",
            Vec::new(),
            None,
        ))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::PayloadTooLarge, "{err}");
    assert!(
        err.message.contains("sql.query_timeout_s"),
        "{}",
        err.message
    );
    // One query at a time: a second is refused while the first holds its permit.
    let held = r.block_on(sql::plan(&e, "SELECT 1", Vec::new())).unwrap();
    let err = r
        .block_on(sql::plan(&e, "SELECT 2", Vec::new()))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    drop(held);
    r.block_on(sql::collect(&e, "SELECT 3", Vec::new(), None))
        .unwrap();
    // Dropping a running stream (a client gone) cancels the query and frees the slot.
    r.block_on(async {
        use futures::StreamExt;
        let mut s = sql::plan(&e, "SELECT ts FROM kline", Vec::new())
            .await
            .unwrap()
            .execute()
            .unwrap();
        s.next().await.unwrap().unwrap();
        drop(s);
        sql::collect(&e, "SELECT 4", Vec::new(), None)
            .await
            .unwrap();
    });
}

/// `count(*)`, `min(ts)` and `max(ts)` of a scan with no row filter come from the
/// series' states (the planner's statistics), not from a scan; with a `ts` range the
/// scan runs, and both answers are the data's.
#[test]
fn count_and_ts_bounds_come_from_table_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let e = dataset(dir.path());
    let bars_each = 90 * 144_i64;
    let last = JAN_2024 + (bars_each - 1) * 10 * MINUTE;
    let q = "SELECT count(*), min(ts), max(ts) FROM kline_raw";
    let plan = explain(&e, q);
    assert!(
        !plan.contains("FastkScan"),
        "answered without a scan:\n{plan}"
    );
    let a = run(&e, q);
    assert_eq!(i64s(&a, 0), vec![3 * bars_each]);
    assert_eq!(i64s(&a, 1), vec![JAN_2024]);
    assert_eq!(i64s(&a, 2), vec![last]);
    // A key condition selects series: still exact, still no scan.
    let q = "SELECT count(*), max(ts) FROM kline WHERE symbol = 'BBB'";
    let plan = explain(&e, q);
    assert!(
        !plan.contains("FastkScan"),
        "answered without a scan:\n{plan}"
    );
    let a = run(&e, q);
    assert_eq!(i64s(&a, 0), vec![bars_each]);
    assert_eq!(i64s(&a, 1), vec![last]);
    // A ts range filters rows: the figures are bounds only, so the scan runs.
    let from = JAN_2024 + 31 * DAY;
    let q = format!(
        "SELECT count(*), min(ts) FROM kline WHERE symbol = 'CCC' AND ts >= to_timestamp_millis({from})"
    );
    let plan = explain(&e, &q);
    assert!(plan.contains("FastkScan"), "a ranged count scans:\n{plan}");
    let a = run(&e, &q);
    let want = e
        .read(
            &SeriesKey::kline("CCC", "1m").unwrap(),
            TsRange::new(Some(from), None),
            usize::MAX,
        )
        .unwrap()
        .slices
        .iter()
        .map(|s| s.ts().len() as i64)
        .sum::<i64>();
    assert_eq!(want, bars_each - 31 * 144, "the native read");
    assert_eq!(i64s(&a, 0), vec![want]);
    assert_eq!(i64s(&a, 1), vec![from]);
    // A series with rows still in the log (in memory) counts them too.
    let key = SeriesKey::kline("AAA", "1m").unwrap();
    let more = bars(last + 10 * MINUTE, 3, 10 * MINUTE, 0);
    e.write_kline(&key, &more, None).unwrap();
    let a = run(&e, "SELECT count(*), max(ts) FROM kline_raw");
    assert_eq!(i64s(&a, 0), vec![3 * bars_each + 3]);
    assert_eq!(i64s(&a, 1), vec![last + 30 * MINUTE]);
}

/// One random series history: months, appended deltas and replaced rows.
fn history() -> impl Strategy<Value = Vec<(i64, usize, i64)>> {
    // (start offset in days, rows, seed) per write; rows are hourly.
    prop::collection::vec((0i64..100, 1usize..300, 0i64..1000), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Whatever the write history, SQL answers equal the native reads: whole series,
    /// a range, the latest N and a value predicate.
    #[test]
    fn sql_equals_native_reads(writes in history(), lo_day in 0i64..100, span in 1i64..60, n in 1usize..50) {
        let dir = tempfile::tempdir().unwrap();
        let e = engine_with(dir.path(), |c| c.storage.zonemap_block_rows = 64);
        let key = register_kline(&e, "PROP");
        let f = scalar(&e, "PROP", "x", ValueType::F64);
        for (day, rows, seed) in &writes {
            let b = bars(JAN_2024 + day * DAY, *rows, 3_600_000, *seed);
            e.write_kline(&key, &b, None).unwrap();
            let ts: Vec<i64> = b.iter().map(|r| r.ts).collect();
            let v: Vec<i64> = b.iter().map(|r| ((r.close % 100) as f64 / 10.0).to_bits() as i64).collect();
            write_values(&e, &f, &ts, &v);
        }
        let (lo, hi) = (JAN_2024 + lo_day * DAY, JAN_2024 + (lo_day + span) * DAY);
        let native = |r: TsRange| -> Vec<(i64, i64)> {
            e.read(&key, r, usize::MAX).unwrap().slices.iter()
                .flat_map(|s| s.ts().iter().copied().zip(s.col(4).iter().copied()).collect::<Vec<_>>())
                .collect()
        };
        let pairs = |a: &sql::SqlAnswer| -> Vec<(i64, i64)> { i64s(a, 0).into_iter().zip(i64s(a, 1)).collect() };
        let all = run(&e, "SELECT ts, close FROM kline_raw WHERE symbol = 'PROP' ORDER BY ts");
        prop_assert_eq!(pairs(&all), native(TsRange::all()));
        // The planner's statistics (no scan) give the same count and bounds.
        let every = native(TsRange::all());
        let stats = run(&e, "SELECT count(*), min(ts), max(ts) FROM kline_raw WHERE symbol = 'PROP'");
        prop_assert_eq!(i64s(&stats, 0), vec![every.len() as i64]);
        prop_assert_eq!(i64s(&stats, 1), vec![every[0].0]);
        prop_assert_eq!(i64s(&stats, 2), vec![every[every.len() - 1].0]);
        let ranged = run(&e, &format!(
            "SELECT ts, close FROM kline_raw WHERE symbol = 'PROP' AND ts BETWEEN to_timestamp_millis({lo}) AND to_timestamp_millis({hi}) ORDER BY ts"));
        prop_assert_eq!(pairs(&ranged), native(TsRange::new(Some(lo), Some(hi))));
        let latest = run(&e, &format!("SELECT ts, close FROM kline_raw WHERE symbol = 'PROP' ORDER BY ts DESC LIMIT {n}"));
        let mut want = native(TsRange::all());
        want.reverse();
        want.truncate(n);
        prop_assert_eq!(pairs(&latest), want);
        let m = run(&e, "SELECT ts FROM scalar WHERE symbol = 'PROP' AND value > 5.0 ORDER BY ts");
        let got = i64s(&m, 0);
        let q = fastk::query::types::QueryRequest {
            predicate: serde_json::from_value(serde_json::json!({"op": "gt", "value": 5.0})).unwrap(),
            start_ts: None, end_ts: None, limit: None, return_values: None, strategy: None, snapshot: None, version: None, as_of_commit: None,
        };
        let want = e.query(&f, &q, usize::MAX).unwrap().timestamps;
        prop_assert_eq!(got, want);
    }
}

/// `asof(...)` and `latest(...)` answer what the slow SQL way answers (the row of
/// each series at its greatest ts at or before the instant), in the columns of the
/// table they name, without scanning the series.
#[test]
fn asof_and_latest_are_the_native_cross_section() {
    let dir = tempfile::tempdir().unwrap();
    let e = dataset(dir.path());
    // A stale series (one day of bars) and one that starts after the instant.
    let stale = register_kline(&e, "DDD");
    e.write_kline(&stale, &bars(JAN_2024, 144, 10 * MINUTE, 9), None)
        .unwrap();
    let late = register_kline(&e, "EEE");
    e.write_kline(&late, &bars(JAN_2024 + 80 * DAY, 10, MINUTE, 5), None)
        .unwrap();
    let at = "TIMESTAMP '2024-02-10 12:34:56.789'";
    let cols = "symbol, ts, open, high, low, close, volume";
    let slow = |table: &str, bound: &str| {
        format!(
            "SELECT k.symbol, k.ts, k.open, k.high, k.low, k.close, k.volume FROM {table} k \
             JOIN (SELECT symbol, max(ts) AS m FROM {table} WHERE timeframe = '1m' {bound} GROUP BY symbol) l \
             ON k.symbol = l.symbol AND k.ts = l.m WHERE k.timeframe = '1m' ORDER BY k.symbol"
        )
    };
    let fast = run(
        &e,
        &format!("SELECT {cols} FROM asof('kline', '1m', {at}) ORDER BY symbol"),
    );
    let want = run(&e, &slow("kline", &format!("AND ts <= {at}")));
    assert_eq!(
        fast.rows(),
        4,
        "AAA, BBB, CCC and the stale DDD; EEE starts later"
    );
    assert_eq!(i64s(&fast, 1), i64s(&want, 1));
    for c in 2..=6 {
        assert_eq!(f64s(&fast, c), f64s(&want, c), "column {c}");
    }
    let syms: Vec<String> = fast
        .batches
        .iter()
        .flat_map(|b| {
            let s = b.column(0).as_string::<i32>();
            (0..s.len())
                .map(|i| s.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(syms, ["AAA", "BBB", "CCC", "DDD"]);

    // kline_raw: stored integers with each series' scales; latest: no bound.
    let raw = run(
        &e,
        "SELECT symbol, ts, close, price_scale, volume_scale FROM latest('kline_raw', '1m') ORDER BY symbol",
    );
    let raw_want = run(&e, &slow("kline_raw", ""));
    assert_eq!(raw.rows(), 5);
    assert_eq!(i64s(&raw, 1), i64s(&raw_want, 1));
    assert_eq!(i64s(&raw, 2), i64s(&raw_want, 5));
    assert_eq!(i64s(&raw, 3), vec![100; 5]);
    assert_eq!(i64s(&raw, 4), vec![1; 5]);

    // A query treats the function as it would the table: filters, aggregates, joins.
    let n = run(
        &e,
        &format!(
            "SELECT count(*) FROM asof('kline', '1m', {at}) a JOIN kline_raw r ON a.symbol = r.symbol AND a.ts = r.ts WHERE a.close > 0"
        ),
    );
    assert_eq!(i64s(&n, 0), vec![4]);
    // Before every row: no rows, the table's columns.
    let none = run(
        &e,
        "SELECT * FROM asof('kline', '1m', TIMESTAMP '2023-06-01 00:00:00')",
    );
    assert_eq!(none.rows(), 0);
    // Milliseconds and ISO strings are instants too; another timeframe has no series.
    let ms = run(
        &e,
        "SELECT count(*) FROM asof('kline', '1m', 1707568496789)",
    );
    assert_eq!(i64s(&ms, 0), vec![4]);
    let iso = run(
        &e,
        "SELECT count(*) FROM asof('kline', '1h', '2024-02-10T12:34:56Z')",
    );
    assert_eq!(i64s(&iso, 0), vec![0]);

    // Scalar tables take category and name; the value type picks the table.
    let f = run(
        &e,
        &format!(
            "SELECT symbol, category, name, ts, value FROM asof('scalar', '1m', {at}, 'factor', 'momentum')"
        ),
    );
    let f_want = run(
        &e,
        &format!(
            "SELECT ts, value FROM scalar WHERE name = 'momentum' AND ts <= {at} ORDER BY ts DESC LIMIT 1"
        ),
    );
    assert_eq!(f.rows(), 1);
    assert_eq!(i64s(&f, 3), i64s(&f_want, 0));
    assert_eq!(f64s(&f, 4), f64s(&f_want, 1));
    let i = run(
        &e,
        "SELECT value FROM latest('scalar_i64', '1m', 'factor', 'signal')",
    );
    let i_want = run(
        &e,
        "SELECT value FROM scalar_i64 WHERE name = 'signal' ORDER BY ts DESC LIMIT 1",
    );
    assert_eq!(i64s(&i, 0), i64s(&i_want, 0));
    let wrong_type = run(
        &e,
        "SELECT * FROM latest('scalar', '1m', 'factor', 'signal')",
    );
    assert_eq!(
        wrong_type.rows(),
        0,
        "an i64 series is not in the f64 table"
    );

    let r = rt();
    for (q, needle) in [
        ("SELECT * FROM asof('kline', '1m')", "asof('kline'"),
        ("SELECT * FROM asof('klines', '1m', 0)", "no data table"),
        (
            "SELECT * FROM asof('kline', '1m', 'yesterday')",
            "instant must be a timestamp",
        ),
        ("SELECT * FROM asof('scalar', '1m', 0)", "asof('scalar'"),
        (
            "SELECT * FROM latest('kline', '1m', 'x', 'y')",
            "got 4 arguments",
        ),
        (
            "SELECT * FROM latest('kline', '1m', 0)",
            "snapshot name must be a string",
        ),
        // DataFusion plans the arguments without a schema: a column is refused there.
        ("SELECT * FROM asof('kline', '1m', ts)", "ts"),
        ("SELECT * FROM latest('kline', 'one minute')", "timeframe"),
    ] {
        expect_invalid(&r, &e, q, needle);
    }
}

/// `asof(...)` and `latest(...)` with a snapshot's name as the last argument answer the
/// cross section of the series as the snapshot holds them, after the series moved on;
/// an unknown snapshot is 404.
#[test]
fn asof_and_latest_read_a_named_snapshot() {
    use fastk::query::snapshots::SnapshotCreate;
    let dir = tempfile::tempdir().unwrap();
    let e = dataset(dir.path());
    let at = "TIMESTAMP '2024-02-10 12:34:56.789'";
    let section = |q: &str| {
        let a = run(&e, q);
        (i64s(&a, 0), f64s(&a, 1))
    };
    let asof_now = format!("SELECT ts, close FROM asof('kline', '1m', {at}) ORDER BY symbol");
    let asof_fri =
        format!("SELECT ts, close FROM asof('kline', '1m', {at}, 'fri') ORDER BY symbol");
    let latest_now = "SELECT ts, close FROM latest('kline', '1m') ORDER BY symbol";
    let latest_fri = "SELECT ts, close FROM latest('kline', '1m', 'fri') ORDER BY symbol";
    let factor_fri =
        format!("SELECT ts, value FROM asof('scalar', '1m', {at}, 'factor', 'momentum', 'fri')");
    let factor_now =
        format!("SELECT ts, value FROM asof('scalar', '1m', {at}, 'factor', 'momentum')");
    let (asof_before, latest_before, factor_before) = (
        section(&asof_now),
        section(latest_now),
        section(&factor_now),
    );
    e.create_snapshot(&SnapshotCreate {
        name: "fri".into(),
        series: None,
        note: None,
    })
    .unwrap();
    // Every series moves on: the bars around the instant are replaced, a later bar
    // appended, and the factor rewritten.
    let keys: Vec<SeriesKey> = e
        .store
        .list()
        .iter()
        .map(|s| s.meta.key.clone())
        .filter(|k| k.kind() == fastk::record::SeriesKind::Kline)
        .collect();
    assert!(!keys.is_empty());
    for k in &keys {
        e.write_kline(k, &bars(JAN_2024 + 40 * DAY, 2 * 1440, MINUTE, 77), None)
            .unwrap();
        e.write_kline(k, &bars(JAN_2024 + 100 * DAY, 5, MINUTE, 78), None)
            .unwrap();
    }
    let factor = SeriesKey::scalar("AAA", "1m", "factor", "momentum").unwrap();
    let mut b = WriteBatch::with_capacity(2, 3 * 1440);
    for i in 0..3 * 1440 {
        b.cols[0].push(JAN_2024 + 39 * DAY + i * MINUTE);
        b.cols[1].push((-1.5f64 - i as f64).to_bits() as i64);
    }
    e.write(&factor, b, None).unwrap();
    assert_ne!(section(&asof_now), asof_before, "the series moved on");
    assert_ne!(section(latest_now), latest_before);
    assert_ne!(section(&factor_now), factor_before);
    assert_eq!(section(&asof_fri), asof_before, "the snapshot did not");
    assert_eq!(section(latest_fri), latest_before);
    assert_eq!(section(&factor_fri), factor_before);
    let err = rt()
        .block_on(sql::collect(
            &e,
            "SELECT * FROM latest('kline', '1m', 'nope')",
            Vec::new(),
            None,
        ))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    assert!(err.message.contains("nope"), "{}", err.message);
}

/// A scan of very many small series (a factor library) hands the plan a few gathered
/// batches, not one per series, and keeps every row, in key order where the query
/// asks for it, with a large series among the small ones.
#[test]
fn many_small_series_scan_as_few_batches_with_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), |_| {});
    let value = |i: usize, k: usize| (i * 1000 + k) as f64;
    let mut want: Vec<(String, String, i64, f64)> = Vec::new();
    for i in 0..600 {
        let (sym, name) = (format!("S{:03}", i / 3), format!("f{}", i % 3));
        let key = scalar(&e, &sym, &name, ValueType::F64);
        // Series 301 is large: 20,000 rows; the others have 3.
        let n = if i == 301 { 20_000 } else { 3 };
        let ts: Vec<i64> = (0..n).map(|k| JAN_2024 + k as i64 * MINUTE).collect();
        let bits: Vec<i64> = (0..n).map(|k| value(i, k).to_bits() as i64).collect();
        write_values(&e, &key, &ts, &bits);
        want.extend((0..n).map(|k| (sym.clone(), name.clone(), ts[k], value(i, k))));
    }
    e.store.fold_all();
    want.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
    let total: f64 = want.iter().map(|w| w.3).sum();

    let a = run(&e, "SELECT count(*), sum(value) FROM scalar");
    assert_eq!(i64s(&a, 0), vec![want.len() as i64]);
    assert_eq!(f64s(&a, 1), vec![total]);

    let a = run(&e, "SELECT symbol, name, ts, value FROM scalar");
    assert_eq!(
        a.batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        want.len()
    );
    assert!(
        a.batches.len() <= 16,
        "{} batches for 600 series: small series are gathered",
        a.batches.len()
    );

    let a = run(
        &e,
        "SELECT symbol, name, ts, value FROM scalar ORDER BY symbol, name, ts",
    );
    let mut got = Vec::with_capacity(want.len());
    for b in &a.batches {
        let (sym, name) = (
            b.column(0).as_string::<i32>(),
            b.column(1).as_string::<i32>(),
        );
        let ts = b.column(2).as_primitive::<TimestampMillisecondType>();
        let v = b.column(3).as_primitive::<Float64Type>();
        for r in 0..b.num_rows() {
            got.push((
                sym.value(r).to_string(),
                name.value(r).to_string(),
                ts.value(r),
                v.value(r),
            ));
        }
    }
    assert_eq!(got, want);
}

//! `fastk import` / `fastk export` through the real binary, checked against the store.
//!
//! Every test gets its own data root. After a CLI call the test opens the root itself
//! (the CLI has exited, so the lock is free) and checks what the store holds: rows,
//! values and, for refused imports, that the series version did not move.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use arrow_array::{Array, Float64Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use common::cli::{fastk, ok, rows, write};
use common::{DAY, JAN_2024, MINUTE, engine_with, kline_registration};
use fastk::query::Engine;
use fastk::record::SeriesKey;

fn engine(root: &Path) -> Arc<Engine> {
    engine_with(root, |_| {})
}

fn version(root: &Path, key: &SeriesKey) -> Option<u64> {
    engine(root).series(key).ok().map(|s| s.version())
}

fn kline() -> SeriesKey {
    SeriesKey::kline("BTCUSDT", "1m").unwrap()
}

/// `n` valid 1m bars from `start` as CSV lines `ts,open,high,low,close,volume`, with
/// prices of two decimals and volume of three; `ts` is rendered by `ts_text`.
fn bars_csv(n: usize, start: i64, ts_text: impl Fn(i64) -> String) -> String {
    let mut s = String::from("open_time,open,high,low,close,volume\n");
    let mut price: i64 = 4_200_000;
    for i in 0..n as i64 {
        let close = price + (i * 7919 % 1001) - 500;
        let (hi, lo) = (price.max(close) + i % 37, price.min(close) - i % 41);
        let p = |v: i64| format!("{}.{:02}", v / 100, v % 100);
        s += &format!(
            "{},{},{},{},{},{}.{:03}\n",
            ts_text(start + i * MINUTE),
            p(price),
            p(hi),
            p(lo),
            p(close),
            i % 5000,
            i % 1000
        );
        price = close;
    }
    s
}

fn import_kline(root: &Path, files: &[&Path], extra: &[&str]) -> Output {
    let mut args = vec![
        "import",
        "kline",
        "--symbol",
        "BTCUSDT",
        "--timeframe",
        "1m",
        "--price-scale",
        "100",
        "--volume-scale",
        "1000",
        "--quiet",
        "--root",
    ];
    let root = root.to_str().unwrap();
    args.push(root);
    args.extend_from_slice(extra);
    let files: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
    args.extend(files);
    fastk(&args)
}

fn export_kline(root: &Path, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "export",
        "kline",
        "--symbol",
        "BTCUSDT",
        "--timeframe",
        "1m",
        "--quiet",
        "--root",
        root.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(fastk(&args))
}

/// The data lines of a CSV (header dropped).
fn data_lines(text: &str) -> Vec<String> {
    text.lines().skip(1).map(String::from).collect()
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn i64_col(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let a = b.column_by_name(name).unwrap();
        let a = arrow_cast::cast(a, &DataType::Int64).unwrap();
        out.extend(
            a.as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .iter()
                .copied(),
        );
    }
    out
}

#[test]
fn csv_round_trips_through_csv_parquet_and_arrow_exports() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    // 50,000 bars from Jan 31 cross into February: two month partitions.
    let start = JAN_2024 + 30 * DAY;
    let text = bars_csv(50_000, start, fastk::record::format_ts);
    let input = write(dir.path(), "in.csv", &text);
    let out = ok(import_kline(&root, &[&input], &[]));
    assert!(
        out.contains("rows read 50000, written 50000 (inserted 50000, replaced 0), rejected 0"),
        "{out}"
    );
    assert!(out.contains("2024-01, 2024-02"), "{out}");

    // CSV out, real prices: the same decimals, ts as epoch ms.
    let csv_out = dir.path().join("out.csv");
    export_kline(&root, &csv_out, &[]);
    let exported = std::fs::read_to_string(&csv_out).unwrap();
    assert_eq!(
        exported.lines().next(),
        Some("ts,open,high,low,close,volume")
    );
    let want: Vec<String> = bars_csv(50_000, start, |ts| ts.to_string())
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    assert_eq!(data_lines(&exported), want);
    // ISO timestamps reproduce the input exactly (it was written with format_ts).
    let iso_out = dir.path().join("iso.csv");
    export_kline(&root, &iso_out, &["--ts-format", "iso"]);
    assert_eq!(
        data_lines(&std::fs::read_to_string(&iso_out).unwrap()),
        data_lines(&text)
    );

    // Parquet out, raw and real, equals the store.
    let stored = rows(&root, &kline());
    let pq_raw = dir.path().join("raw.parquet");
    export_kline(&root, &pq_raw, &["--prices", "raw"]);
    let batches = read_parquet(&pq_raw);
    for (c, name) in ["ts", "open", "high", "low", "close", "volume"]
        .iter()
        .enumerate()
    {
        assert_eq!(i64_col(&batches, name), stored[c], "{name}");
    }
    let pq_real = dir.path().join("real.parquet");
    export_kline(&root, &pq_real, &[]);
    let batches = read_parquet(&pq_real);
    let close: Vec<f64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("close")
                .unwrap()
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    let want: Vec<f64> = stored[4].iter().map(|&v| v as f64 / 100.0).collect();
    assert_eq!(close, want);

    // Arrow IPC out, then in again (real float64 prices) into a second root.
    let ipc = dir.path().join("out.arrow");
    export_kline(&root, &ipc, &[]);
    let root2 = dir.path().join("data2");
    ok(import_kline(&root2, &[&ipc], &[]));
    assert_eq!(rows(&root2, &kline()), stored);
}

#[test]
fn every_timestamp_form_is_understood() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let t = JAN_2024;
    // Epoch units are detected per file, so each unit has its own file.
    let files = [
        write(dir.path(), "s.csv", &format!("ts,value\n{},1\n", t / 1000)),
        write(
            dir.path(),
            "ms.csv",
            &format!("ts,value\n{},2\n", t + MINUTE),
        ),
        write(
            dir.path(),
            "us.csv",
            &format!("ts,value\n{},3\n", (t + 2 * MINUTE) * 1000),
        ),
        write(
            dir.path(),
            "ns.csv",
            &format!("ts,value\n{},4\n", (t + 3 * MINUTE) * 1_000_000),
        ),
        write(
            dir.path(),
            "frac.csv",
            &format!("ts,value\n{}.250,5\n", (t + 4 * MINUTE) / 1000),
        ),
        write(
            dir.path(),
            "text.csv",
            "time;value\n2024-01-01T00:05:00Z;6\n2024-01-01T00:06:00.000+00:00;7\n\
             2024-01-01T02:07:00+02:00;8\n2024-01-01 00:08:00;9\n2024-01-01 00:09:00.5;10\n\
             2023-12-31T19:10:00-05:00;11\n2024-01-02;12\n",
        ),
    ];
    let mut args = vec![
        "import",
        "scalar",
        "--symbol",
        "BTCUSDT",
        "--timeframe",
        "1m",
        "--category",
        "feature",
        "--name",
        "x",
        "--value-type",
        "i64",
        "-q",
        "--root",
        root.to_str().unwrap(),
    ];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));
    ok(fastk(&args));
    let key = SeriesKey::scalar("BTCUSDT", "1m", "feature", "x").unwrap();
    let got = rows(&root, &key);
    let mut want_ts: Vec<i64> = (0..12).map(|i| t + i * MINUTE).collect();
    want_ts[4] += 250;
    want_ts[9] += 500;
    want_ts[11] = t + 86_400_000;
    assert_eq!(got[0], want_ts);
    assert_eq!(got[1], (1..=12).collect::<Vec<i64>>());
}

/// One line per kind of bad row, each with the reason its rejection must name.
const BAD_ROWS: &[(&str, &str)] = &[
    ("yesterday,1,2,0.5,1.5,10", "ts: not a timestamp"),
    (
        "2024-02-30T00:00:00Z,1,2,0.5,1.5,10",
        "invalid calendar date",
    ),
    (
        "2024-01-01T00:10:00Z,abc,2,0.5,1.5,10",
        "open: not a number",
    ),
    (
        "2024-01-01T00:11:00Z,1,2,0.5,nan,10",
        "close: NaN or infinite",
    ),
    (
        "2024-01-01T00:12:00Z,1,2,0.5,1.5,99999999999999999999",
        "volume: value out of the 64-bit integer range",
    ),
    (
        "2024-01-01T00:13:00Z,1,0.9,0.5,1.5,10",
        "high is less than max(open, close)",
    ),
    (
        "2024-01-01T00:14:00Z,1,2,1.2,1.5,10",
        "low is greater than min(open, close)",
    ),
    ("2024-01-01T00:15:00Z,1,2,0.5,1.5,-1", "volume is negative"),
    (
        "2024-01-01T00:16:00Z,1,2,0.5",
        "expected at least 6 fields, found 4",
    ),
    (
        "0999-12-31T00:00:00Z,1,2,0.5,1.5,10",
        "ts outside years 1000 to 9999",
    ),
    (
        "2024-01-01T00:00:00Z,1,2,0.5,1.5,11",
        "duplicate ts 1704067200000 (first at ",
    ),
];

#[test]
fn bad_rows_stop_the_import_or_go_to_the_rejects_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let good = bars_csv(5, JAN_2024, fastk::record::format_ts);
    let seed = write(dir.path(), "seed.csv", &good);
    ok(import_kline(&root, &[&seed], &[]));
    assert_eq!(version(&root, &kline()), Some(1));

    let mut text = good.replace("open_time", "ts");
    for (line, _) in BAD_ROWS {
        text += line;
        text.push('\n');
    }
    let input = write(dir.path(), "bad.csv", &text);
    // The default refuses: exit 1, the first rows named by file:line, nothing written.
    let out = import_kline(&root, &[&input], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nothing was written"), "{err}");
    for (i, (_, reason)) in BAD_ROWS.iter().enumerate().take(10) {
        assert!(
            err.contains(&format!("bad.csv:{}: ", i + 7)),
            "line {} missing: {err}",
            i + 7
        );
        assert!(err.contains(reason), "{reason:?} missing: {err}");
    }
    assert_eq!(
        version(&root, &kline()),
        Some(1),
        "a refused import changes nothing"
    );

    // --skip-invalid writes the five good rows (replacing the seed) and every reject.
    let rejects = dir.path().join("rejects.csv");
    let out = ok(import_kline(
        &root,
        &[&input],
        &["--skip-invalid", "--rejects", rejects.to_str().unwrap()],
    ));
    assert!(
        out.contains("written 5 (inserted 0, replaced 5), rejected 11"),
        "{out}"
    );
    assert_eq!(version(&root, &kline()), Some(2));
    let rej = std::fs::read_to_string(&rejects).unwrap();
    let lines: Vec<&str> = rej.lines().collect();
    assert_eq!(lines[0], "file,line,reason,raw");
    assert_eq!(lines.len(), 1 + BAD_ROWS.len());
    for (i, (raw, reason)) in BAD_ROWS.iter().enumerate() {
        let l = lines[1..]
            .iter()
            .find(|l| l.contains(&format!("bad.csv,{},", i + 7)))
            .expect("reject listed");
        assert!(l.contains(reason), "{l}");
        if !reason.starts_with("duplicate") {
            assert!(l.contains(raw), "{l} should carry the original line");
        }
    }
    // The default rejects path is beside the first input.
    ok(import_kline(&root, &[&input], &["--skip-invalid"]));
    assert!(dir.path().join("bad.csv.rejects.csv").is_file());
}

#[test]
fn empty_and_header_only_files_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let empty = write(dir.path(), "empty.csv", "");
    let header = write(
        dir.path(),
        "header.csv",
        "ts,open,high,low,close,volume\r\n",
    );
    for f in [&empty, &header] {
        let out = ok(import_kline(&root, &[f], &[]));
        assert!(out.contains("rows read 0, written 0"), "{out}");
    }
    // The flags registered the series; it holds no rows and no write was committed.
    assert_eq!(version(&root, &kline()), Some(0));
    assert!(rows(&root, &kline())[0].is_empty());
}

#[test]
fn a_failed_import_does_not_even_register_the_series() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let input = write(
        dir.path(),
        "bad.csv",
        "ts,open,high,low,close,volume\n2024-01-01,1,0,2,1,1\n",
    );
    assert_eq!(import_kline(&root, &[&input], &[]).status.code(), Some(1));
    assert_eq!(version(&root, &kline()), None);
}

#[test]
fn a_ts_repeated_across_two_files_is_refused_or_keeps_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let a = write(
        dir.path(),
        "a.csv",
        "1704067200000,1,2,0.5,1.5,10\n1704067260000,1,2,0.5,1.5,10\n",
    );
    let b = write(
        dir.path(),
        "b.csv",
        "1704067320000,1,2,0.5,1.5,20\n1704067260000,1,3,0.5,1.5,20\n",
    );
    let out = import_kline(&root, &[&a, &b], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b.csv:2: duplicate ts 1704067260000 (first at ") && err.contains("a.csv:2)"),
        "{err}"
    );
    assert_eq!(version(&root, &kline()), None);

    let out = ok(import_kline(&root, &[&a, &b], &["--skip-invalid"]));
    assert!(out.contains("written 3"), "{out}");
    let got = rows(&root, &kline());
    assert_eq!(
        got[0],
        vec![JAN_2024, JAN_2024 + MINUTE, JAN_2024 + 2 * MINUTE]
    );
    assert_eq!(got[2][1], 200, "the first occurrence (a.csv) wins");
}

#[test]
fn floats_round_half_away_from_zero_and_strict_scale_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    // open 0.125 -> 13, high 1.005 -> 101 (exact decimal text), low 0.004 -> 0,
    // close 0.995 -> 100 (half away from zero), volume 2.0005 -> 2001 at scale 1000.
    let input = write(
        dir.path(),
        "r.csv",
        "ts,open,high,low,close,volume\n1704067200000,0.125,1.005,0.004,0.995,2.0005\n",
    );
    ok(import_kline(&root, &[&input], &[]));
    let got = rows(&root, &kline());
    assert_eq!(
        [got[1][0], got[2][0], got[3][0], got[4][0], got[5][0]],
        [13, 101, 0, 100, 2001]
    );
    let out = import_kline(&root, &[&input], &["--strict-scale"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more precision than the series' scale"));

    // Floats in Parquet follow the same rule; timestamps in microseconds are floored.
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("open", DataType::Float64, false),
        Field::new("high", DataType::Float64, false),
        Field::new("low", DataType::Float64, false),
        Field::new("close", DataType::Float64, false),
        Field::new("volume", DataType::Float64, false),
    ]));
    let f = |v: f64| Arc::new(Float64Array::from(vec![v])) as Arc<dyn Array>;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(TimestampMicrosecondArray::from(vec![
                (JAN_2024 + MINUTE) * 1000 + 999,
            ])),
            f(-0.125),
            f(0.5),
            f(-0.135),
            f(0.0),
            f(0.0005),
        ],
    )
    .unwrap();
    let pq = dir.path().join("f.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&pq).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    ok(import_kline(&root, &[&pq], &[]));
    let got = rows(&root, &kline());
    assert_eq!(got[0][1], JAN_2024 + MINUTE);
    assert_eq!(
        [got[1][1], got[2][1], got[3][1], got[4][1], got[5][1]],
        [-13, 50, -14, 0, 1]
    );
}

#[test]
fn arrow_ipc_stream_files_import_and_raw_prices_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("value", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![JAN_2024, JAN_2024 + MINUTE])),
            Arc::new(arrow_array::StringArray::from(vec!["1.5", "-2.25"])),
        ],
    )
    .unwrap();
    let path = dir.path().join("s.arrows");
    let mut w =
        arrow_ipc::writer::StreamWriter::try_new(std::fs::File::create(&path).unwrap(), &schema)
            .unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let args = [
        "import",
        "scalar",
        "--symbol",
        "ETH",
        "--timeframe",
        "1m",
        "--category",
        "indicator",
        "--name",
        "z",
        "--value-type",
        "f64",
        "-q",
        "--root",
        root.to_str().unwrap(),
        path.to_str().unwrap(),
    ];
    ok(fastk(&args));
    let key = SeriesKey::scalar("ETH", "1m", "indicator", "z").unwrap();
    let got = rows(&root, &key);
    assert_eq!(
        got[1]
            .iter()
            .map(|&b| f64::from_bits(b as u64))
            .collect::<Vec<_>>(),
        vec![1.5, -2.25]
    );

    // --prices raw stores integers as they are and refuses fractions.
    let raw = write(
        dir.path(),
        "raw.csv",
        "1704067200000,100,120,90,110,5\n1704067260000,1.5,2,1,1,1\n",
    );
    let out = import_kline(&root, &[&raw], &["--prices", "raw", "--skip-invalid"]);
    let text = ok(out);
    assert!(text.contains("rejected 1"), "{text}");
    assert_eq!(rows(&root, &kline())[1], vec![100]);
}

#[test]
fn a_locked_root_is_refused_with_a_pointer_to_flight() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    let held = engine(&root);
    let input = write(dir.path(), "a.csv", "1704067200000,1,2,0.5,1.5,10\n");
    let out = import_kline(&root, &[&input], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--flight"), "{err}");
    drop(held);
    let missing = fastk(&[
        "import",
        "kline",
        "--symbol",
        "X",
        "--timeframe",
        "1m",
        "--root",
        root.to_str().unwrap(),
        input.to_str().unwrap(),
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--price-scale"));
}

#[test]
fn the_library_api_imports_without_the_cli() {
    use fastk::transfer::import::{ImportOptions, Registration};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let input = write(
        dir.path(),
        "a.tsv",
        "time\tclose\topen\thigh\tlow\tvol\n2024-01-01\t1.5\t1\t2\t0.5\t10\n",
    );
    let opts = ImportOptions {
        key: kline(),
        register: Some(Registration::Kline(fastk::query::types::RegisterKline {
            price_scale: 10,
            ..kline_registration("BTCUSDT", "1m")
        })),
        files: vec![input],
        format: None,
        csv: Default::default(),
        ts_unit: None,
        prices: Default::default(),
        strict_scale: false,
        overrides: Default::default(),
        skip_invalid: false,
        rejects: None,
        dry_run: false,
        quiet: true,
        dest: fastk::transfer::Destination::Root(root.clone()),
    };
    let s = fastk::transfer::import(&opts).expect("imports");
    assert_eq!((s.rows_read, s.rows_written, s.version), (1, 1, 1));
    assert_eq!(s.months, vec!["2024-01".to_string()]);
    let got = rows(&root, &kline());
    assert_eq!(
        [got[1][0], got[2][0], got[3][0], got[4][0], got[5][0]],
        [10, 20, 5, 15, 10]
    );
}

/// pandas' `DataFrame.to_csv()` writes a `DatetimeIndex` as an unnamed first column
/// (header `,open,high,low,close,volume`), which is how most downloaded market data
/// comes; a tz-aware index is written with `+00:00`. The import used to stop with "no column for ts" unless the user passed
/// `--ts-column 1`. Now an unnamed first column whose values parse as timestamps is
/// `ts`, and the summary says so; one that does not parse is still refused, with the
/// hint, and nothing is registered.
#[test]
fn a_pandas_to_csv_file_with_an_unnamed_index_column_imports() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let input = write(
        dir.path(),
        "pandas.csv",
        ",open,high,low,close,volume\n\
         2024-01-01 00:00:00,42000.5,42010.0,41990.0,42005.25,1.5\n\
         2024-01-01 00:01:00+00:00,42005.25,42020.0,42000.0,42019.0,0.25\n",
    );
    let out = ok(import_kline(&root, &[&input], &[]));
    assert!(out.contains("using unnamed first column as ts"), "{out}");
    let cols = rows(&root, &kline());
    assert_eq!(cols[0], vec![JAN_2024, JAN_2024 + MINUTE]);
    assert_eq!(cols[1], vec![4_200_050, 4_200_525]);
    assert_eq!(cols[5], vec![1_500, 250]);

    // A default RangeIndex (`to_csv()` of a frame with a named time column) keeps
    // finding ts by name and says nothing about the unnamed column.
    let root2 = dir.path().join("data2");
    let ranged = write(
        dir.path(),
        "ranged.csv",
        ",timestamp,open,high,low,close,volume\n0,2024-01-01T00:00:00Z,1,2,1,1,1\n",
    );
    let out = ok(import_kline(&root2, &[&ranged], &[]));
    assert!(!out.contains("unnamed first column"), "{out}");
    assert_eq!(rows(&root2, &kline())[0], vec![JAN_2024]);

    let root3 = dir.path().join("data3");
    let labels = write(
        dir.path(),
        "labels.csv",
        ",open,high,low,close,volume\nfirst,1,2,1,1,1\n",
    );
    let out = import_kline(&root3, &[&labels], &[]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "a usage error: {text}");
    assert!(text.contains("--ts-column"), "{text}");
    assert_eq!(version(&root3, &kline()), None);
}

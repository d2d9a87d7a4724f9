//! `fastk import trade|quote` and `fastk export trade|quote` through the real binary:
//! tick files as vendors ship them (ISO text with nanoseconds, epoch microseconds,
//! `B`/`S` sides, a buyer-maker flag, no `seq`), checked against what the store holds;
//! bad rows; a round trip through every export format; and a running server.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use arrow_array::{BooleanArray, Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use common::cli::{fastk, ok, rows, text, write};
use common::engine_with;
use fastk::record::SeriesKey;

/// 2024-03-01T14:30:00Z in nanoseconds.
const OPEN_NS: i64 = 1_709_303_400_000_000_000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `fastk import <kind> --symbol <symbol> --price-scale 10000 --size-scale 100` into
/// `root`, then `extra` and `files`.
fn import(kind: &str, symbol: &str, root: &Path, extra: &[&str], files: &[&Path]) -> Output {
    let mut args = vec![
        "import",
        kind,
        "--symbol",
        symbol,
        "--price-scale",
        "10000",
        "--size-scale",
        "100",
        "--quiet",
        "--root",
        s(root),
    ];
    args.extend_from_slice(extra);
    args.extend(files.iter().map(|p| s(p)));
    fastk(&args)
}

#[test]
fn a_vendor_csv_of_trades_maps_sides_numbers_seq_and_keeps_nanoseconds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    // Out of order, three trades in one nanosecond, sides as a vendor writes them.
    let csv = write(
        dir.path(),
        "trades.csv",
        "timestamp,price,qty,side,trade_id\n\
         2024-03-01T14:30:00.000000001Z,187.25,100,B,11\n\
         2024-03-01T14:30:00.000000001Z,187.26,0.5,S,12\n\
         2024-03-01 14:30:00.000000001,187.2601,25,sell,13\n\
         2024-03-01T15:30:00.5+01:00,187.3,10,N,14\n\
         2024-03-01T14:29:59.999999999Z,187.2,5,buy,10\n",
    );
    let out = ok(import("trade", "AAPL", &root, &[], &[&csv]));
    assert!(out.contains("written 5"), "{out}");
    assert!(
        out.contains("seq: no column; assigned by the store"),
        "{out}"
    );
    assert!(
        out.contains("ts: dates and times as text, stored as nanoseconds"),
        "{out}"
    );
    assert!(
        out.contains("\"S\" -> -1 (seller-initiated) x1") && out.contains("\"buy\" -> 1"),
        "{out}"
    );
    let key = SeriesKey::trade("AAPL").unwrap();
    let c = rows(&root, &key);
    assert_eq!(
        c[0],
        vec![
            OPEN_NS - 1,
            OPEN_NS + 1,
            OPEN_NS + 1,
            OPEN_NS + 1,
            OPEN_NS + 500_000_000
        ]
    );
    assert_eq!(
        c[1],
        vec![0, 0, 1, 2, 0],
        "seq numbered in file order per ts"
    );
    assert_eq!(
        c[2],
        vec![1_872_000, 1_872_500, 1_872_600, 1_872_601, 1_873_000]
    );
    assert_eq!(c[3], vec![500, 10_000, 50, 2_500, 1_000]);
    assert_eq!(c[4], vec![1, 1, -1, -1, 0]);
    assert_eq!(c[5], vec![10, 11, 12, 13, 14]);

    // A second import of the same trades appends: each ts numbers on from its last seq.
    ok(import("trade", "AAPL", &root, &[], &[&csv]));
    let c = rows(&root, &key);
    assert_eq!(c[0].len(), 10);
    let at_open: Vec<i64> = (0..10)
        .filter(|&r| c[0][r] == OPEN_NS + 1)
        .map(|r| c[1][r])
        .collect();
    assert_eq!(at_open, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_binance_style_parquet_with_microseconds_and_a_buyer_maker_flag_imports() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let us0 = OPEN_NS / 1000;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("price", DataType::Float64, false),
        Field::new("qty", DataType::Float64, false),
        Field::new("quote_qty", DataType::Float64, false),
        Field::new("time", DataType::Int64, false),
        Field::new("is_buyer_maker", DataType::Boolean, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(vec![900, 901, 902])),
            Arc::new(Float64Array::from(vec![61_000.5, 61_000.25, 60_999.75])),
            Arc::new(Float64Array::from(vec![0.01, 1.5, 0.25])),
            Arc::new(Float64Array::from(vec![610.0, 91_500.0, 15_250.0])),
            Arc::new(Int64Array::from(vec![us0, us0, us0 + 7])),
            Arc::new(BooleanArray::from(vec![true, false, true])),
        ],
    )
    .unwrap();
    let pq = dir.path().join("BTCUSDT-trades.parquet");
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&pq).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let out = ok(import("trade", "BTCUSDT", &root, &[], &[&pq]));
    assert!(
        out.contains(
            "ts: epoch microseconds (detected from the first value), stored as nanoseconds"
        ),
        "{out}"
    );
    assert!(out.contains("side: read from a buyer-maker flag"), "{out}");
    assert!(
        out.contains("\"true\" -> -1 (seller-initiated) x2"),
        "{out}"
    );
    let c = rows(&root, &SeriesKey::trade("BTCUSDT").unwrap());
    assert_eq!(c[0], vec![OPEN_NS, OPEN_NS, OPEN_NS + 7_000]);
    assert_eq!(c[1], vec![0, 1, 0]);
    assert_eq!(c[2], vec![610_005_000, 610_002_500, 609_997_500]);
    assert_eq!(c[3], vec![1, 150, 25]);
    assert_eq!(c[4], vec![-1, 1, -1]);
    assert_eq!(c[5], vec![900, 901, 902]);
}

#[test]
fn bad_tick_rows_stop_the_import_or_go_to_the_rejects_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let csv = write(
        dir.path(),
        "bad.csv",
        "ts,seq,price,size,side\n\
         1709303400000000000,0,10.5,1,1\n\
         1709303400000000000,1,10.5,-1,1\n\
         1709303400000000001,0,10.5,1,X\n\
         1969-12-31T23:59:59Z,0,10.5,1,1\n\
         1709303400000000000,0,10.6,2,-1\n\
         1709303400000000002,18446744073709551615,10.5,1,1\n",
    );
    let out = import("trade", "BAD", &root, &[], &[&csv]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    for want in [
        "bad.csv:3: size is negative",
        "bad.csv:4: side: side must be",
        "bad.csv:5: ts outside 1970-01-01 to 2262-04-11",
        "bad.csv:7: seq: seq must be",
    ] {
        assert!(t.contains(want), "{want:?} missing from {t}");
    }
    let e = engine_with(&root, |_| {});
    assert!(
        e.series(&SeriesKey::trade("BAD").unwrap()).is_err(),
        "a refused import registers nothing"
    );
    drop(e);

    let rejects = dir.path().join("rejects.csv");
    let out = ok(import(
        "trade",
        "BAD",
        &root,
        &["--skip-invalid", "--rejects", s(&rejects)],
        &[&csv],
    ));
    assert!(
        out.contains("written 1") && out.contains("rejected 5"),
        "{out}"
    );
    let listed = std::fs::read_to_string(&rejects).unwrap();
    assert!(
        listed.contains("duplicate (ts, seq) (1709303400000000000, 0) (first at"),
        "{listed}"
    );
    let c = rows(&root, &SeriesKey::trade("BAD").unwrap());
    assert_eq!((c[0].clone(), c[2].clone()), (vec![OPEN_NS], vec![105_000]));
}

#[test]
fn quotes_import_from_vendor_names_and_round_trip_through_every_export() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut body = String::from("ts_event,bid_px_00,ask_px_00,bid_sz_00,ask_sz_00\n");
    for i in 0..300i64 {
        let bid = 100.0 + (i % 17) as f64 * 0.01;
        // Every fifth quote repeats the nanosecond of the one before.
        let ts = OPEN_NS + (i - i / 5) * 1_000;
        body += &format!("{ts},{bid:.2},{:.2},{},{}\n", bid + 0.02, i % 9, 3);
    }
    body += &format!("{},101.00,100.99,1,1\n", OPEN_NS + 9_999_999);
    let csv = write(dir.path(), "quotes.csv", &body);
    let out = ok(import("quote", "MSFT", &root, &["--skip-invalid"], &[&csv]));
    assert!(
        out.contains("written 300") && out.contains("rejected 1"),
        "{out}"
    );
    assert!(out.contains("ts: epoch nanoseconds (detected"), "{out}");
    let key = SeriesKey::quote("MSFT").unwrap();
    let want = rows(&root, &key);
    assert_eq!(want[0].len(), 300);
    assert_eq!(want[2][..3], [1_000_000, 1_000_100, 1_000_200]);

    // Every export format, read back by an import into a fresh symbol, gives the same
    // rows: nanoseconds, seq and prices included.
    for (name, extra) in [
        ("q.csv", &[][..]),
        ("q-iso.csv", &["--ts-format", "iso"][..]),
        ("q-raw.csv", &["--prices", "raw"][..]),
        ("q.parquet", &[][..]),
        ("q.arrow", &[][..]),
    ] {
        let file = dir.path().join(name);
        let mut args = vec!["export", "quote", "--symbol", "MSFT", "--quiet"];
        args.extend_from_slice(&["--root", s(&root), "-o", s(&file)]);
        args.extend_from_slice(extra);
        let out = ok(fastk(&args));
        assert!(out.contains("exported 300 rows"), "{out}");
        let symbol = format!("R{}", name.replace(['.', '-'], "_"));
        let back = match extra.contains(&"raw") {
            true => import("quote", &symbol, &root, &["--prices", "raw"], &[&file]),
            false => import("quote", &symbol, &root, &[], &[&file]),
        };
        ok(back);
        let got = rows(&root, &SeriesKey::quote(&symbol).unwrap());
        assert_eq!(got, want, "round trip through {name}");
    }
    let iso = std::fs::read_to_string(dir.path().join("q-iso.csv")).unwrap();
    assert!(
        iso.lines()
            .nth(2)
            .unwrap()
            .starts_with("2024-03-01T14:30:00.000001000Z,0,"),
        "{iso}"
    );
    let out = fastk(&[
        "export",
        "quote",
        "--symbol",
        "MSFT",
        "--root",
        s(&root),
        "-o",
        s(&dir.path().join("x.csv")),
        "--ts-format",
        "ms",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("nanoseconds"), "{}", text(&out));
}

#[test]
fn ticks_import_and_export_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    let server = common::spawn_server(&root, &[]);
    let http = format!("http://{}", server.http);
    let mut body = String::from("time,sequence,price,size,aggressor,id\n");
    for i in 0..2_000i64 {
        let side = ["B", "A", "N"][(i % 3) as usize];
        body += &format!(
            "{},{},{}.{:02},{},{side},{}\n",
            OPEN_NS + i / 4,
            i % 4,
            50 + i % 7,
            i % 100,
            i + 1,
            i
        );
    }
    let csv = write(dir.path(), "feed.csv", &body);
    // Flight carries the rows, HTTP registers the missing series.
    let out = ok(fastk(&[
        "import",
        "trade",
        "--symbol",
        "SPY",
        "--price-scale",
        "100",
        "--size-scale",
        "1",
        "--flight",
        &server.flight,
        "--server",
        &http,
        "--quiet",
        s(&csv),
    ]));
    assert!(out.contains("written 2000"), "{out}");
    // Without --flight, the rows travel as one JSON request, seq left to the store;
    // the contract's spelling `import --kind trade` works too.
    let no_seq = write(
        dir.path(),
        "no-seq.csv",
        &format!("ts,price,size\n{0},1.5,3\n{0},1.25,4\n", OPEN_NS),
    );
    let out = ok(fastk(&[
        "import",
        "--kind",
        "trade",
        "--symbol",
        "QQQ",
        "--price-scale",
        "100",
        "--size-scale",
        "1",
        "--server",
        &http,
        "--quiet",
        s(&no_seq),
    ]));
    assert!(out.contains("written 2"), "{out}");
    let exported = dir.path().join("spy.csv");
    ok(fastk(&[
        "export",
        "trade",
        "--symbol",
        "SPY",
        "--flight",
        &server.flight,
        "--quiet",
        "-o",
        s(&exported),
    ]));
    let lines: Vec<String> = std::fs::read_to_string(&exported)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines[0], "ts,seq,price,size,side,trade_id");
    assert_eq!(lines.len(), 2_001);
    assert_eq!(lines[1], format!("{OPEN_NS},0,50.00,1,1,0"));
    assert_eq!(lines[2], format!("{OPEN_NS},1,51.01,2,-1,1"));
    let qqq = dir.path().join("qqq.csv");
    ok(fastk(&[
        "export",
        "trade",
        "--symbol",
        "QQQ",
        "--flight",
        &server.flight,
        "--quiet",
        "-o",
        s(&qqq),
    ]));
    let q = std::fs::read_to_string(&qqq).unwrap();
    assert!(
        q.contains(&format!("{OPEN_NS},0,1.50,3,0,0"))
            && q.contains(&format!("{OPEN_NS},1,1.25,4,0,0")),
        "{q}"
    );
    drop(server);
}

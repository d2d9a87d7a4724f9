//! Market queries over Flight against a real server on port 0: many-series tickets
//! (list and `"*"`, the dictionary `symbol` column, symbol-then-ts order, as-of, and
//! FlightInfo endpoints whose union is the result), resample tickets, the aligned
//! ticket and the coverage action, with their error codes. The engine's answers are
//! checked against models in `tests/market.rs`; here the wire agrees with the engine.

mod common;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_flight::{Action, FlightDescriptor};
use arrow_schema::DataType;
use bytes::Bytes;
use common::*;
use fastk::query::market::spec::{Coverage, CoverageRequest, Resample};
use fastk::query::market::{ReadArgs, ReadSpec};
use fastk::record::{SeriesKey, ValueType};
use futures::TryStreamExt;
use serde_json::json;
use tonic::Code;

const SYMBOLS: [&str; 4] = ["ETH", "BTC", "SOL", "ADA"];

async fn with_series() -> Fixture {
    let fx = Fixture::start(|c| c.flight.max_batch_rows = 500).await;
    for (i, sym) in SYMBOLS.iter().enumerate() {
        let key = fx.kline_series(sym, "1m");
        // Different lengths and starts: 1,000 to 2,500 bars.
        let rows = klines(
            JAN_2024 + i as i64 * 7 * MINUTE,
            1000 + 500 * i,
            MINUTE,
            i as i64,
        );
        for part in rows.chunks(700) {
            fx.write_klines(&key, part);
        }
    }
    fx
}

/// (symbol, ts) of every row of a many-series answer.
fn symbol_ts(batches: &[RecordBatch]) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for b in batches {
        let sym = b.column(0).as_dictionary::<Int32Type>();
        let values = sym.values().as_string::<i32>();
        let ts = b
            .column(1)
            .as_primitive::<arrow_array::types::TimestampMillisecondType>();
        for r in 0..b.num_rows() {
            let k = sym.keys().value(r) as usize;
            out.push((values.value(k).to_string(), ts.value(r)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_series_stream_in_symbol_order_with_a_dictionary_column() {
    let mut fx = with_series().await;
    let start = JAN_2024 + 100 * MINUTE;
    let t = json!({"kind": "kline", "symbols": ["SOL", "BTC"], "timeframe": "1m",
                   "start_ts": start, "columns": ["close"]});
    let batches = get(&mut fx.client, t).await.unwrap();
    let schema = batches[0].schema();
    assert_eq!(
        schema.field(0).data_type(),
        &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
    );
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["symbol", "ts", "close"]);
    assert!(!schema.metadata().contains_key("fastk.symbol"));
    let mut want = Vec::new();
    let mut closes = Vec::new();
    for sym in ["BTC", "SOL"] {
        let one = get(
            &mut fx.client,
            json!({"kind": "kline", "symbol": sym, "timeframe": "1m", "start_ts": start}),
        )
        .await
        .unwrap();
        want.extend(
            col_i64(&one, "ts")
                .into_iter()
                .map(|t| (sym.to_string(), t)),
        );
        closes.extend(col_i64(&one, "close"));
    }
    assert_eq!(symbol_ts(&batches), want);
    assert_eq!(col_i64(&batches, "close"), closes);

    // "*" is every 1m kline series; latest 1 is the last bar of each.
    let last = get(
        &mut fx.client,
        json!({"kind": "kline", "symbols": "*", "timeframe": "1m", "latest": 1}),
    )
    .await
    .unwrap();
    let got = symbol_ts(&last);
    let mut sorted = SYMBOLS.to_vec();
    sorted.sort();
    assert_eq!(got.len(), 4, "one row per series, merged into few batches");
    assert!(last.len() <= 2, "{} batches", last.len());
    for ((sym, ts), want_sym) in got.iter().zip(&sorted) {
        assert_eq!(sym, want_sym);
        let i = SYMBOLS.iter().position(|s| s == want_sym).unwrap() as i64;
        assert_eq!(
            *ts,
            JAN_2024 + i * 7 * MINUTE + (1000 + 500 * i - 1) * MINUTE
        );
    }
    // As of a time inside every series.
    let at = JAN_2024 + 30 * MINUTE + 1;
    let x = get(
        &mut fx.client,
        json!({"kind": "kline", "symbols": "*", "timeframe": "1m", "as_of": at}),
    )
    .await
    .unwrap();
    let got = symbol_ts(&x);
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|(_, ts)| *ts <= at && at - ts < MINUTE));
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_info_endpoints_cover_the_result() {
    let mut fx = with_series().await;
    let cmd = json!({"kind": "kline", "symbols": "*", "timeframe": "1m", "end_ts": JAN_2024 + 2000 * MINUTE});
    let whole = get(&mut fx.client, cmd.clone()).await.unwrap();
    let info = fx
        .client
        .get_flight_info(FlightDescriptor::new_cmd(cmd.to_string()))
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 4, "one endpoint per series");
    let rows: usize = whole.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(info.total_records, rows as i64);
    let mut union = Vec::new();
    for e in &info.endpoint {
        let t = e.ticket.clone().unwrap();
        let part = fetch(&mut fx.client, t).await;
        union.extend(symbol_ts(&part));
    }
    assert_eq!(union, symbol_ts(&whole));
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resample_and_aligned_tickets_and_the_coverage_action() {
    let mut fx = with_series().await;
    let key = fx.kline_series("BTC", "1m");
    let batches = get(
        &mut fx.client,
        json!({"kind": "kline", "symbol": "BTC", "timeframe": "1m",
               "resample": {"timeframe": "15m", "fill": "null"}, "price_format": "float64"}),
    )
    .await
    .unwrap();
    let schema = batches[0].schema();
    let last = schema.fields().last().unwrap();
    assert_eq!(
        (last.name().as_str(), last.data_type(), last.is_nullable()),
        ("complete", &DataType::Boolean, false)
    );
    assert_eq!(schema.field(1).data_type(), &DataType::Float64);
    let spec = ReadSpec::new(ReadArgs {
        resample: Some(Resample {
            timeframe: "15m".into(),
            offset_ms: None,
            fill: Some(fastk::query::market::spec::Fill::Null),
            agg: None,
        }),
        price_format: fastk::storage::batch::PriceFormat::Float64,
        ..ReadArgs::default()
    })
    .unwrap();
    let series = fx.engine().series(&key).unwrap();
    let (native, _) = fx.engine().read_page(&series, &spec, 100_000).unwrap();
    assert_eq!(col_i64(&batches, "ts"), col_i64(&native, "ts"));
    assert_eq!(col_f64(&batches, "high"), col_f64(&native, "high"));

    let sc = fx.scalar_series("BTC", "rsi", fastk::record::ValueType::I64);
    let values: Vec<(i64, i64)> = (0..100).map(|i| (JAN_2024 + i * 3 * MINUTE, i)).collect();
    fx.write_scalars(&sc, &values);
    let aligned = get(
        &mut fx.client,
        json!({"kind": "aligned", "symbol": "BTC", "timeframe": "1m",
               "scalars": [{"category": "indicator", "name": "rsi"}], "join": "asof",
               "end_ts": JAN_2024 + 16 * MINUTE}),
    )
    .await
    .unwrap();
    let s = aligned[0].schema();
    assert_eq!(s.field(6).name(), "indicator.rsi");
    // BTC's bars start at minute 7; values were stored every third minute.
    let want: Vec<i64> = (7..=16).map(|m| m / 3).collect();
    assert_eq!(col_i64(&aligned, "indicator.rsi"), want);

    let body = json!({"kind": "kline", "symbol": "BTC", "timeframe": "1m", "calendar": "weekdays"});
    let out: Vec<Bytes> = fx
        .client
        .do_action(Action::new("coverage", body.to_string()))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let c: Coverage = serde_json::from_slice(&out[0]).unwrap();
    let want = fx
        .engine()
        .coverage(
            &key,
            &CoverageRequest {
                calendar: Some("weekdays".into()),
                ..CoverageRequest::default()
            },
        )
        .unwrap();
    assert_eq!(c, want);
    assert_eq!(c.calendar, "weekdays");
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_market_tickets_are_invalid_argument_or_not_found() {
    let mut fx = with_series().await;
    for (t, want, says) in [
        (
            json!({"kind": "kline", "symbols": [], "timeframe": "1m"}),
            Code::InvalidArgument,
            "empty",
        ),
        (
            json!({"kind": "kline", "symbols": ["BTC", "NOPE"], "timeframe": "1m"}),
            Code::NotFound,
            "NOPE",
        ),
        (
            json!({"kind": "kline", "symbol": "BTC", "timeframe": "1m", "resample": {"timeframe": "90s"}}),
            Code::InvalidArgument,
            "multiple",
        ),
        (
            json!({"kind": "kline", "symbol": "BTC", "timeframe": "1m", "resample": {"timeframe": "1h", "agg": "mean"}}),
            Code::InvalidArgument,
            "scalar",
        ),
        (
            json!({"kind": "aligned", "symbol": "BTC", "timeframe": "1m", "scalars": []}),
            Code::InvalidArgument,
            "1 to 64",
        ),
    ] {
        let err = get(&mut fx.client, t.clone()).await.unwrap_err();
        assert_eq!(code(&err), want, "{t}: {}", message(&err));
        assert!(message(&err).contains(says), "{t}: {}", message(&err));
    }
    let err = fx
        .client
        .do_action(Action::new(
            "coverage",
            r#"{"kind":"kline","symbol":"BTC","timeframe":"1m","calendar":"x"}"#,
        ))
        .await
        .err()
        .unwrap();
    assert_eq!(code(&err), Code::InvalidArgument);
    fx.shutdown().await;
}

/// A cross section (`latest: 1` or `as_of` over many series) takes a path of its own:
/// one row per series gathered into columns, from each chunk's kept last row when the
/// chunk ends inside the range. Every shape of it (every column raw, float64 prices
/// with a subset of columns, as-of inside a chunk and at a chunk's end, a staleness
/// bound that leaves series out, f64 scalars), cold and then warm, equals what the
/// per-series reads answer, value for value and in symbol order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_sections_equal_the_per_series_reads_cold_and_warm() {
    let mut fx = with_series().await;
    let f64s: Vec<SeriesKey> = SYMBOLS
        .iter()
        .map(|s| fx.scalar_series(s, "score", ValueType::F64))
        .collect();
    for (i, k) in f64s.iter().enumerate() {
        let rows: Vec<(i64, i64)> = (0..300 + 40 * i as i64)
            .map(|r| {
                (
                    JAN_2024 + r * MINUTE,
                    ((r as f64) * 0.25 - i as f64).to_bits() as i64,
                )
            })
            .collect();
        fx.write_scalars(k, &rows);
    }
    let mut sorted = SYMBOLS.to_vec();
    sorted.sort();
    // Chunks hold 700 bars (written in parts of 700): one as-of inside the first chunk,
    // one exactly at its last bar.
    let chunk_end = JAN_2024 + 699 * MINUTE;
    let shapes = [
        json!({"kind": "kline", "timeframe": "1m", "latest": 1}),
        json!({"kind": "kline", "timeframe": "1m", "latest": 1, "price_format": "float64",
               "columns": ["close", "volume"]}),
        json!({"kind": "kline", "timeframe": "1m", "as_of": JAN_2024 + 30 * MINUTE + 1}),
        json!({"kind": "kline", "timeframe": "1m", "as_of": chunk_end}),
        // Only series with a bar in the last 100 minutes before the as-of time.
        json!({"kind": "kline", "timeframe": "1m", "as_of": JAN_2024 + 1500 * MINUTE,
               "start_ts": JAN_2024 + 1400 * MINUTE}),
        json!({"kind": "scalar", "timeframe": "1m", "category": "indicator", "name": "score",
               "latest": 1}),
        json!({"kind": "scalar", "timeframe": "1m", "category": "indicator", "name": "score",
               "as_of": JAN_2024 + 310 * MINUTE}),
    ];
    for round in ["cold", "warm"] {
        for shape in &shapes {
            let mut many = shape.clone();
            many["symbols"] = json!("*");
            let got = get(&mut fx.client, many).await.unwrap();
            let schema = got[0].schema();
            let mut want_rows: Vec<(String, Vec<i64>)> = Vec::new();
            for sym in &sorted {
                let mut one = shape.clone();
                one["symbol"] = json!(sym);
                let b = get(&mut fx.client, one).await.unwrap();
                let n: usize = b.iter().map(RecordBatch::num_rows).sum();
                assert!(n <= 1, "{round} {shape}: {sym} answered {n} rows");
                if n == 1 {
                    let row = schema.fields()[1..]
                        .iter()
                        .map(|f| col_i64(&b, f.name())[0])
                        .collect();
                    want_rows.push((sym.to_string(), row));
                }
            }
            let syms: Vec<String> = symbol_ts(&got).into_iter().map(|(s, _)| s).collect();
            let got_rows: Vec<(String, Vec<i64>)> = syms
                .into_iter()
                .enumerate()
                .map(|(r, s)| {
                    let row = schema.fields()[1..]
                        .iter()
                        .map(|f| col_i64(&got, f.name())[r])
                        .collect();
                    (s, row)
                })
                .collect();
            assert_eq!(got_rows, want_rows, "{round} {shape}");
            assert!(!want_rows.is_empty(), "{round} {shape}: some series answer");
        }
    }
    fx.shutdown().await;
}

/// Story: `"symbols": "*"` over a timeframe with no series answered NotFound, where a
/// selection is a filter and matching nothing is an answer: now it is an empty stream
/// in the columns a series of that kind would have, and a FlightInfo with no endpoint
/// and 0 records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_star_selection_matching_nothing_is_an_empty_answer() {
    let mut fx = with_series().await;
    for t in [
        json!({"kind": "kline", "symbols": "*", "timeframe": "5m"}),
        json!({"kind": "kline", "symbols": "*", "timeframe": "5m", "latest": 1}),
        json!({"kind": "kline", "symbols": "*", "timeframe": "5m", "price_format": "float64"}),
        json!({"kind": "scalar", "symbols": "*", "timeframe": "1m", "category": "indicator", "name": "none"}),
        json!({"kind": "kline", "symbols": "*", "timeframe": "5m", "resample": {"timeframe": "1h"}}),
    ] {
        let batches = get(&mut fx.client, t.clone()).await.unwrap();
        assert_eq!(
            batches.iter().map(RecordBatch::num_rows).sum::<usize>(),
            0,
            "{t}"
        );
        let d = FlightDescriptor::new_cmd(t.to_string());
        let info = fx.client.get_flight_info(d.clone()).await.unwrap();
        assert!(info.endpoint.is_empty(), "{t}");
        let schema = info.try_decode_schema().unwrap();
        assert_eq!(schema.field(0).name(), "symbol", "{t}");
        assert_eq!(schema.field(1).name(), "ts", "{t}");
        assert!(schema.fields().len() >= 3, "{t}");
        let served = fx.client.get_schema(d).await.unwrap();
        assert_eq!(served.fields(), schema.fields(), "{t}");
    }
    // The series that exist are unaffected.
    let some = get(
        &mut fx.client,
        json!({"kind": "kline", "symbols": "*", "timeframe": "1m", "latest": 1}),
    )
    .await
    .unwrap();
    assert_eq!(
        some.iter().map(RecordBatch::num_rows).sum::<usize>(),
        SYMBOLS.len()
    );
    fx.shutdown().await;
}

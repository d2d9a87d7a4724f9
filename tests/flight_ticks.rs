//! Trade and quote series over Arrow Flight against a real server on port 0: the
//! contract's schema (`ts` as `timestamp[ns, UTC]`, `seq` uint64, `side` int8, prices
//! raw or scaled), ranges in nanoseconds, latest, columns, a path descriptor and
//! ListFlights' ticket of a tick series, and what is not served yet refused by name.

mod common;

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int8Type, Int64Type, TimestampNanosecondType, UInt64Type};
use arrow_flight::FlightDescriptor;
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use common::*;
use fastk::query::tick::{RegisterTick, TradeIn, trade_batch};
use fastk::record::{SeriesKey, SeriesKind};
use futures::TryStreamExt;
use serde_json::json;
use tonic::Code;

/// 2024-03-10T00:00:00Z in nanoseconds.
const DAY0: i64 = 1_710_028_800_000_000_000;

fn trades() -> Vec<TradeIn> {
    (0..10)
        .map(|i| TradeIn {
            ts: DAY0 + (i / 3) * 1_000,
            seq: None,
            price: 6_843_200 + i,
            size: 1_000 * (i + 1),
            side: [1, -1, 0][i as usize % 3],
            trade_id: 500 + i,
        })
        .collect()
}

#[tokio::test]
async fn trades_read_over_flight_in_the_contract_schema() {
    let mut f = Fixture::start(|_| {}).await;
    let reg = RegisterTick {
        symbol: "BTCUSDT".into(),
        price_scale: 100,
        size_scale: 1000,
        partition: None,
        retention_ms: None,
    };
    f.engine().register_tick(SeriesKind::Trade, &reg).unwrap();
    let key = SeriesKey::trade("BTCUSDT").unwrap();
    f.engine()
        .write(&key, trade_batch(&trades()).unwrap(), None)
        .unwrap();

    let batches = get(&mut f.client, json!({"kind": "trade", "symbol": "BTCUSDT"}))
        .await
        .unwrap();
    let schema = batches[0].schema();
    assert_eq!(
        schema.field(0).data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
    );
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["ts", "seq", "price", "size", "side", "trade_id"]);
    assert_eq!(schema.metadata()["fastk.size_scale"], "1000");
    assert_eq!(schema.metadata()["fastk.partition"], "day");
    let b = arrow_select::concat::concat_batches(&schema, &batches).unwrap();
    let ts: Vec<i64> = b
        .column(0)
        .as_primitive::<TimestampNanosecondType>()
        .values()
        .to_vec();
    let seq: Vec<u64> = b.column(1).as_primitive::<UInt64Type>().values().to_vec();
    let side: Vec<i8> = b.column(4).as_primitive::<Int8Type>().values().to_vec();
    let id: Vec<i64> = b.column(5).as_primitive::<Int64Type>().values().to_vec();
    let want = trades();
    assert_eq!(ts, want.iter().map(|t| t.ts).collect::<Vec<_>>());
    assert_eq!(seq, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]);
    assert_eq!(side, want.iter().map(|t| t.side as i8).collect::<Vec<_>>());
    assert_eq!(id, want.iter().map(|t| t.trade_id).collect::<Vec<_>>());

    // A range in nanoseconds, float prices, a subset of columns.
    let batches = get(
        &mut f.client,
        json!({"kind": "trade", "symbol": "BTCUSDT", "start_ns": DAY0 + 1_000,
               "end_ns": DAY0 + 2_000, "price_format": "float64", "columns": ["price", "size"]}),
    )
    .await
    .unwrap();
    let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(b.num_columns(), 3);
    let price: Vec<f64> = b.column(1).as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(
        price,
        [
            68_432.03, 68_432.04, 68_432.05, 68_432.06, 68_432.07, 68_432.08
        ]
    );
    let size: Vec<f64> = b.column(2).as_primitive::<Float64Type>().values().to_vec();
    assert_eq!(size[0], 4.0);

    let latest = get(
        &mut f.client,
        json!({"kind": "trade", "symbol": "BTCUSDT", "latest": 2}),
    )
    .await
    .unwrap();
    let rows: usize = latest.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 2);

    // A path descriptor and the ticket ListFlights gives read the whole series.
    let info = f
        .client
        .get_flight_info(FlightDescriptor::new_path(vec![
            "trade".into(),
            "BTCUSDT".into(),
        ]))
        .await
        .unwrap();
    let t = info.endpoint[0].ticket.clone().unwrap();
    let rows: usize = fetch(&mut f.client, t)
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 10);
    let listed: Vec<_> = f
        .client
        .list_flights(Bytes::new())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(!listed.is_empty());
    for info in listed {
        let t = info.endpoint[0].ticket.clone().unwrap();
        assert!(!fetch(&mut f.client, t).await.is_empty());
    }

    // Not served yet: refused by name, not misread.
    for (ticket, says) in [
        (
            json!({"kind": "trade", "symbols": ["BTCUSDT"], "order": "time"}),
            "order must be",
        ),
        (
            json!({"kind": "trade", "symbols": ["BTCUSDT"], "latest": 3}),
            "for one symbol",
        ),
        (
            json!({"kind": "quote", "symbol": "BTCUSDT", "resample": {"timeframe": "1m"}}),
            "use a trade ticket",
        ),
        (
            json!({"kind": "trade", "symbol": "BTCUSDT", "columns": ["open"]}),
            "unknown column",
        ),
        (json!({"kind": "quote", "symbol": "BTCUSDT"}), "BTCUSDT"),
    ] {
        let err = get(&mut f.client, ticket.clone()).await.unwrap_err();
        assert!(
            matches!(code(&err), Code::InvalidArgument | Code::NotFound),
            "{ticket}: {err}"
        );
        assert!(message(&err).contains(says), "{ticket}: {}", message(&err));
    }
    f.shutdown().await;
}

async fn put(
    client: &mut arrow_flight::FlightClient,
    path: Vec<&str>,
    batches: Vec<arrow_array::RecordBatch>,
) -> Result<Vec<arrow_flight::PutResult>, arrow_flight::error::FlightError> {
    let data = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(
            path.into_iter().map(String::from).collect(),
        )))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    client.do_put(data).await?.try_collect().await
}

/// A trade batch: `ts` of `ts_type`, no `seq` and no `trade_id` column, `side` int8.
fn trade_put_batch(ts_type: DataType, ts: Vec<i64>, side: Vec<i8>) -> arrow_array::RecordBatch {
    use arrow_array::{ArrayRef, Int8Array, Int64Array};
    use std::sync::Arc;
    let n = ts.len();
    let ts_array: ArrayRef = match &ts_type {
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            Arc::new(arrow_array::TimestampNanosecondArray::from(ts).with_timezone("UTC"))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Arc::new(arrow_array::TimestampMillisecondArray::from(ts).with_timezone("UTC"))
        }
        _ => Arc::new(Int64Array::from(ts)),
    };
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("ts", ts_array.data_type().clone(), false),
        arrow_schema::Field::new("price", DataType::Int64, false),
        arrow_schema::Field::new("size", DataType::Int64, false),
        arrow_schema::Field::new("side", DataType::Int8, false),
    ]));
    arrow_array::RecordBatch::try_new(
        schema,
        vec![
            ts_array,
            Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| 100 + i))),
            Arc::new(Int64Array::from(vec![7; n])),
            Arc::new(Int8Array::from(side)),
        ],
    )
    .unwrap()
}

/// DoPut of one trade series: `ts` as timestamp[ns] or int64 nanoseconds, `seq` and
/// `trade_id` left out (assigned, 0); a millisecond timestamp, a bad side and a
/// many-series path are refused and write nothing.
#[tokio::test]
async fn trades_put_over_flight() {
    let mut f = Fixture::start(|_| {}).await;
    let reg = RegisterTick {
        symbol: "ETHUSDT".into(),
        price_scale: 100,
        size_scale: 1000,
        partition: Some("hour".into()),
        retention_ms: None,
    };
    f.engine().register_tick(SeriesKind::Trade, &reg).unwrap();
    let ns = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
    // Out of order and several per ns, across an hour boundary.
    let hour = 3_600_000_000_000;
    let ts = [DAY0 + hour, DAY0, DAY0, DAY0 + 1, DAY0 + hour];
    let r = put(
        &mut f.client,
        vec!["trade", "ETHUSDT"],
        vec![
            trade_put_batch(ns.clone(), ts[..3].to_vec(), vec![1, -1, 0]),
            trade_put_batch(DataType::Int64, ts[3..].to_vec(), vec![0, 1]),
        ],
    )
    .await
    .unwrap();
    let w: serde_json::Value = serde_json::from_slice(&r[0].app_metadata).unwrap();
    assert_eq!(w["inserted"], 5, "{w}");
    assert_eq!(
        w["months"],
        json!(["2024-03-10T00", "2024-03-10T01"]),
        "{w}"
    );
    let batches = get(&mut f.client, json!({"kind": "trade", "symbol": "ETHUSDT"}))
        .await
        .unwrap();
    let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let got_ts: Vec<i64> = b
        .column(0)
        .as_primitive::<TimestampNanosecondType>()
        .values()
        .to_vec();
    let seq: Vec<u64> = b.column(1).as_primitive::<UInt64Type>().values().to_vec();
    let id: Vec<i64> = b.column(5).as_primitive::<Int64Type>().values().to_vec();
    assert_eq!(got_ts, [DAY0, DAY0, DAY0 + 1, DAY0 + hour, DAY0 + hour]);
    assert_eq!(seq, [0, 1, 0, 0, 1], "numbered in arrival order per ts");
    assert_eq!(id, [0; 5]);

    let ms = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    for (batch, path, says) in [
        (
            trade_put_batch(ms, vec![1_710_028_800_000], vec![0]),
            vec!["trade", "ETHUSDT"],
            "timestamp[ns] or int64",
        ),
        (
            trade_put_batch(ns.clone(), vec![DAY0], vec![2]),
            vec!["trade", "ETHUSDT"],
            "side must be",
        ),
    ] {
        let err = put(&mut f.client, path, vec![batch]).await.unwrap_err();
        assert!(message(&err).contains(says), "{says}: {}", message(&err));
    }
    let rows: usize = get(&mut f.client, json!({"kind": "trade", "symbol": "ETHUSDT"}))
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 5, "refused streams wrote nothing");
    f.shutdown().await;
}

/// Bars from trades and trades with the quote in force, over Flight, against a
/// naive reference computed here: bursts of trades sharing a nanosecond, quotes ten
/// times as frequent, bar edges and quotes at a trade's exact `ts`.
#[tokio::test]
async fn bars_and_trade_quote_match_a_reference() {
    use fastk::query::tick::{QuoteIn, quote_batch};
    // Small batches: bars leave as each batch fills, trade_quote streams in parts.
    let mut f = Fixture::start(|c| c.flight.max_batch_rows = 3).await;
    let reg = |s: &str| RegisterTick {
        symbol: s.into(),
        price_scale: 100,
        size_scale: 1000,
        partition: None,
        retention_ms: None,
    };
    f.engine()
        .register_tick(SeriesKind::Trade, &reg("SOLUSDT"))
        .unwrap();
    f.engine()
        .register_tick(SeriesKind::Quote, &reg("SOLUSDT"))
        .unwrap();
    let minute = 60_000_000_000i64;
    let mut x = 42u64;
    let mut rnd = |m: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % m
    };
    let (mut trades, mut quotes) = (Vec::new(), Vec::new());
    let mut t = DAY0 - 1_000;
    for _ in 0..400 {
        t += [0i64, 0, 1, 7_000_000_000, 300][rnd(5) as usize];
        trades.push(TradeIn {
            ts: t,
            seq: None,
            price: 10_000 + rnd(200) as i64,
            size: 1 + rnd(900) as i64,
            side: rnd(3) as i64 - 1,
            trade_id: 0,
        });
    }
    let mut q = DAY0 - 5_000_000_000;
    while q < t + minute {
        q += 1 + rnd(900_000_000) as i64;
        let bid = 10_000 + rnd(200) as i64;
        quotes.push(QuoteIn {
            ts: q,
            seq: None,
            bid,
            ask: bid + 1,
            bid_size: 5,
            ask_size: rnd(9) as i64,
        });
    }
    // One quote exactly at a trade's ts: it is in force for that trade.
    quotes.push(QuoteIn {
        ts: trades[200].ts,
        seq: None,
        bid: 9_000,
        ask: 9_001,
        bid_size: 1,
        ask_size: 1,
    });
    let tk = SeriesKey::trade("SOLUSDT").unwrap();
    let qk = SeriesKey::quote("SOLUSDT").unwrap();
    f.engine()
        .write(&tk, trade_batch(&trades).unwrap(), None)
        .unwrap();
    f.engine()
        .write(&qk, quote_batch(&quotes).unwrap(), None)
        .unwrap();
    quotes.sort_by_key(|q| q.ts); // stable: arrival order within a ts, as seq is

    // Bars: 1m, raw prices.
    let batches = get(
        &mut f.client,
        json!({"kind": "trade", "symbol": "SOLUSDT",
        "resample": {"timeframe": "1m"}}),
    )
    .await
    .unwrap();
    assert!(batches.len() > 1 && batches.iter().all(|b| b.num_rows() <= 3));
    let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let mut want: Vec<(i64, [i64; 5], i64, i128)> = Vec::new();
    for tr in &trades {
        let start = tr.ts.div_euclid(1_000_000).div_euclid(60_000) * 60_000;
        match want.last_mut() {
            Some((s, v, n, notional)) if *s == start => {
                v[1] = v[1].max(tr.price);
                v[2] = v[2].min(tr.price);
                v[3] = tr.price;
                v[4] += tr.size;
                *n += 1;
                *notional += tr.price as i128 * tr.size as i128;
            }
            _ => want.push((
                start,
                [tr.price, tr.price, tr.price, tr.price, tr.size],
                1,
                tr.price as i128 * tr.size as i128,
            )),
        }
    }
    assert_eq!(b.num_rows(), want.len());
    let col = |i: usize| b.column(i).as_primitive::<Int64Type>().values().to_vec();
    let starts: Vec<i64> = b
        .column(0)
        .as_primitive::<arrow_array::types::TimestampMillisecondType>()
        .values()
        .to_vec();
    assert_eq!(starts, want.iter().map(|w| w.0).collect::<Vec<_>>());
    for k in 0..5 {
        assert_eq!(
            col(k + 1),
            want.iter().map(|w| w.1[k]).collect::<Vec<_>>(),
            "column {k}"
        );
    }
    assert_eq!(
        col(7),
        want.iter().map(|w| w.2).collect::<Vec<_>>(),
        "trades"
    );
    let vwap: Vec<f64> = b.column(6).as_primitive::<Float64Type>().values().to_vec();
    for (v, w) in vwap.iter().zip(&want) {
        assert_eq!(*v, w.3 as f64 / w.1[4] as f64 / 100.0);
    }
    let complete = b.column(8).as_boolean();
    assert!(
        complete.value(0) && !complete.value(b.num_rows() - 1),
        "only the last bar is open"
    );

    // Trades with the quote in force, from the middle of the day on.
    let from = trades[150].ts;
    let batches = get(
        &mut f.client,
        json!({"kind": "trade_quote", "symbol": "SOLUSDT",
        "start_ns": from}),
    )
    .await
    .unwrap();
    let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let in_range: Vec<&TradeIn> = trades.iter().filter(|t| t.ts >= from).collect();
    assert_eq!(b.num_rows(), in_range.len());
    let bid = b.column(6).as_primitive::<Int64Type>();
    let ask_size = b.column(9).as_primitive::<Int64Type>();
    for (i, tr) in in_range.iter().enumerate() {
        let q = quotes.iter().rev().find(|q| q.ts <= tr.ts);
        assert_eq!(
            bid.is_valid(i).then(|| bid.value(i)),
            q.map(|q| q.bid),
            "trade {i}"
        );
        assert_eq!(
            ask_size.is_valid(i).then(|| ask_size.value(i)),
            q.map(|q| q.ask_size)
        );
    }
    assert!(in_range.iter().any(|t| t.ts == trades[200].ts));

    // Trades before the first quote have none in force (null), across batch edges;
    // quotes written in two writes, two at one `ts` (the later `seq` is in force);
    // float prices and sizes by the series' scales.
    for kind in [SeriesKind::Trade, SeriesKind::Quote] {
        f.engine().register_tick(kind, &reg("LATE")).unwrap();
    }
    let late: Vec<TradeIn> = (0..10)
        .map(|i| TradeIn {
            ts: DAY0 + i * 1_000,
            seq: None,
            price: 100 + i,
            size: 1,
            side: 1,
            trade_id: 0,
        })
        .collect();
    let quote = |ts: i64, bid: i64| QuoteIn {
        ts,
        seq: None,
        bid,
        ask: bid + 1,
        bid_size: 2_000,
        ask_size: 3_000,
    };
    let (ltk, lqk) = (
        SeriesKey::trade("LATE").unwrap(),
        SeriesKey::quote("LATE").unwrap(),
    );
    f.engine()
        .write(&ltk, trade_batch(&late).unwrap(), None)
        .unwrap();
    for qs in [
        vec![quote(DAY0 + 4_500, 50)],
        vec![quote(DAY0 + 6_000, 60), quote(DAY0 + 6_000, 61)],
    ] {
        f.engine()
            .write(&lqk, quote_batch(&qs).unwrap(), None)
            .unwrap();
    }
    let batches = get(
        &mut f.client,
        json!({"kind": "trade_quote", "symbol": "LATE", "price_format": "float64"}),
    )
    .await
    .unwrap();
    assert!(batches.len() > 1, "the answer spans batches of 3 rows");
    let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let floats = |i: usize| {
        let c = b.column(i).as_primitive::<Float64Type>();
        (0..c.len())
            .map(|r| c.is_valid(r).then(|| c.value(r)))
            .collect::<Vec<_>>()
    };
    let bids: Vec<Option<i64>> = (0..10)
        .map(|i| match i {
            0..=4 => None,
            5 => Some(50),
            _ => Some(61),
        })
        .collect();
    let want = |f: &dyn Fn(i64) -> f64| bids.iter().map(|b| b.map(f)).collect::<Vec<_>>();
    assert_eq!(floats(6), want(&|b| b as f64 / 100.0), "bid");
    assert_eq!(floats(7), want(&|b| (b + 1) as f64 / 100.0), "ask");
    assert_eq!(floats(9), want(&|_| 3.0), "ask_size by size_scale 1000");
    f.shutdown().await;
}

/// The tape: trades of several symbols merged into one stream ascending by
/// `(ts, symbol, seq)`, equal `ts` across symbols included; the default order is by
/// symbol; `"*"` names every trade series; float prices use each symbol's scale.
#[tokio::test]
async fn the_tape_merges_symbols_by_time() {
    use arrow_array::StringArray;
    let mut f = Fixture::start(|_| {}).await;
    let mut all: Vec<(i64, String, u64, i64)> = Vec::new();
    for (n, sym) in ["CCC", "AAA", "BBB"].iter().enumerate() {
        let reg = RegisterTick {
            symbol: (*sym).into(),
            price_scale: 10i64.pow(n as u32 + 1),
            size_scale: 1,
            partition: None,
            retention_ms: None,
        };
        f.engine().register_tick(SeriesKind::Trade, &reg).unwrap();
        let trades: Vec<TradeIn> = (0..50)
            .map(|i| TradeIn {
                ts: DAY0 + (i * (n as i64 + 2)) / 3 * 1_000,
                seq: None,
                price: 1_000 + i,
                size: 1,
                side: 0,
                trade_id: i,
            })
            .collect();
        let mut seq_at = std::collections::HashMap::new();
        for t in &trades {
            let s = seq_at.entry(t.ts).or_insert(0u64);
            all.push((t.ts, sym.to_string(), *s, t.price));
            *s += 1;
        }
        let key = SeriesKey::trade(sym).unwrap();
        f.engine()
            .write(&key, trade_batch(&trades).unwrap(), None)
            .unwrap();
    }
    let read = |b: &arrow_array::RecordBatch| -> Vec<(i64, String, u64, i64)> {
        let sym = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let ts = b.column(1).as_primitive::<TimestampNanosecondType>();
        let seq = b.column(2).as_primitive::<UInt64Type>();
        let price = b.column(3).as_primitive::<Int64Type>();
        (0..b.num_rows())
            .map(|r| {
                (
                    ts.value(r),
                    sym.value(r).to_string(),
                    seq.value(r),
                    price.value(r),
                )
            })
            .collect()
    };
    let rows = |batches: Vec<arrow_array::RecordBatch>| -> Vec<(i64, String, u64, i64)> {
        batches.iter().flat_map(read).collect()
    };
    let mut tape = all.clone();
    tape.sort();
    let got = rows(
        get(
            &mut f.client,
            json!({"kind": "trade", "symbols": ["CCC", "AAA", "BBB"],
        "order": "ts"}),
        )
        .await
        .unwrap(),
    );
    assert_eq!(got, tape, "one stream by (ts, symbol, seq)");
    let mut by_symbol = all.clone();
    by_symbol.sort_by(|a, b| (&a.1, a.0, a.2).cmp(&(&b.1, b.0, b.2)));
    let got = rows(
        get(&mut f.client, json!({"kind": "trade", "symbols": "*"}))
            .await
            .unwrap(),
    );
    assert_eq!(got, by_symbol, "by symbol, then (ts, seq)");
    // A range, and float prices by each symbol's own scale.
    let (lo, hi) = (DAY0 + 5_000, DAY0 + 9_000);
    let batches = get(
        &mut f.client,
        json!({"kind": "trade", "symbols": ["AAA", "CCC"],
        "order": "ts", "start_ns": lo, "end_ns": hi, "price_format": "float64"}),
    )
    .await
    .unwrap();
    let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let want: Vec<&(i64, String, u64, i64)> = tape
        .iter()
        .filter(|r| r.0 >= lo && r.0 <= hi && r.1 != "BBB")
        .collect();
    assert_eq!(b.num_rows(), want.len());
    let price = b.column(3).as_primitive::<Float64Type>();
    for (r, w) in want.iter().enumerate() {
        let scale = if w.1 == "CCC" { 10.0 } else { 100.0 };
        assert_eq!(price.value(r), w.3 as f64 / scale);
    }
    f.shutdown().await;
}

/// The tape copies runs of one symbol at a time: with batches of 7 rows, symbols whose
/// bursts share nanoseconds, and each series in three chunks (three slices per
/// cursor), the stream is still exactly `(ts, symbol, seq)` ascending, in batches of at
/// most 7 rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tape_is_exact_across_batch_and_chunk_edges() {
    use arrow_array::StringArray;
    let mut f = Fixture::start(|c| c.flight.max_batch_rows = 7).await;
    let mut all: Vec<(i64, String, u64, i64)> = Vec::new();
    for (n, sym) in ["BBB", "AAA", "CCC"].iter().enumerate() {
        let reg = RegisterTick {
            symbol: (*sym).into(),
            price_scale: 100,
            size_scale: 1,
            partition: None,
            retention_ms: None,
        };
        f.engine().register_tick(SeriesKind::Trade, &reg).unwrap();
        let key = SeriesKey::trade(sym).unwrap();
        let mut seq_at = std::collections::HashMap::new();
        for part in 0..3i64 {
            // Runs of 1 to 5 trades in one nanosecond, offset per symbol so that
            // symbols interleave and sometimes meet in one nanosecond.
            let trades: Vec<TradeIn> = (0..40i64)
                .map(|i| {
                    let j = part * 40 + i;
                    TradeIn {
                        ts: DAY0 + (j / (n as i64 + 1)) * 1_000 + (j % 5) * (n as i64),
                        seq: None,
                        price: 1_000 + j,
                        size: 1,
                        side: 0,
                        trade_id: j,
                    }
                })
                .collect();
            let mut trades = trades;
            trades.sort_by_key(|t| t.ts);
            // AAA's and BBB's parts start after the last one ends (appended chunks:
            // three slices per cursor); CCC's overlap and are merged.
            for t in &trades {
                let s = seq_at.entry(t.ts).or_insert(0u64);
                all.push((t.ts, sym.to_string(), *s, t.price));
                *s += 1;
            }
            f.engine()
                .write(&key, trade_batch(&trades).unwrap(), None)
                .unwrap();
        }
    }
    let mut want = all;
    want.sort_by(|a, b| (a.0, &a.1, a.2).cmp(&(b.0, &b.1, b.2)));
    let batches = get(
        &mut f.client,
        json!({"kind": "trade", "symbols": "*", "order": "ts"}),
    )
    .await
    .unwrap();
    assert!(
        batches.iter().all(|b| b.num_rows() <= 7),
        "batches of at most 7 rows"
    );
    let mut got = Vec::new();
    for b in &batches {
        let sym = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let ts = b.column(1).as_primitive::<TimestampNanosecondType>();
        let seq = b.column(2).as_primitive::<UInt64Type>();
        let price = b.column(3).as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            got.push((
                ts.value(r),
                sym.value(r).to_string(),
                seq.value(r),
                price.value(r),
            ));
        }
    }
    // Prices are unique per symbol: a row moved to another place, or a seq paired
    // with another row's price, differs.
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want, "one stream by (ts, symbol, seq)");
    f.shutdown().await;
}

/// A trade batch of many symbols for DoPut `["trade", "*"]`: a dictionary-encoded
/// `symbol` column, nanosecond `ts`, and `seq` as given (`None`: the column is left out).
fn trades_of_symbols(
    symbols: &[&str],
    ts: &[i64],
    seq: Option<Vec<u64>>,
) -> arrow_array::RecordBatch {
    use arrow_array::types::Int32Type;
    use arrow_array::{ArrayRef, DictionaryArray, Int8Array, Int64Array, UInt64Array};
    use std::sync::Arc;
    let n = ts.len();
    let dict: DictionaryArray<Int32Type> = symbols.iter().copied().collect();
    let mut fields = vec![
        arrow_schema::Field::new("symbol", dict.data_type().clone(), false),
        arrow_schema::Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(dict),
        Arc::new(arrow_array::TimestampNanosecondArray::from(ts.to_vec()).with_timezone("UTC")),
    ];
    if let Some(seq) = seq {
        fields.push(arrow_schema::Field::new("seq", DataType::UInt64, false));
        cols.push(Arc::new(UInt64Array::from(seq)));
    }
    fields.extend([
        arrow_schema::Field::new("price", DataType::Int64, false),
        arrow_schema::Field::new("size", DataType::Int64, false),
        arrow_schema::Field::new("side", DataType::Int8, false),
    ]);
    cols.extend([
        Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| 100 + i))) as ArrayRef,
        Arc::new(Int64Array::from(vec![7; n])),
        Arc::new(Int8Array::from(vec![1; n])),
    ]);
    arrow_array::RecordBatch::try_new(Arc::new(arrow_schema::Schema::new(fields)), cols).unwrap()
}

/// DoPut `["trade", "*"]`: one stream of trades of many symbols is one all-or-nothing
/// write; `seq` is numbered per symbol and `ts` in stream order; a bad row, an unknown
/// symbol or a reserved `seq` refuses the whole stream.
#[tokio::test]
async fn trades_of_many_symbols_put_as_one_stream() {
    let mut f = Fixture::start(|_| {}).await;
    for s in ["AAA", "BBB"] {
        let reg = RegisterTick {
            symbol: s.into(),
            price_scale: 100,
            size_scale: 1,
            partition: None,
            retention_ms: None,
        };
        f.engine().register_tick(SeriesKind::Trade, &reg).unwrap();
    }
    let r = put(
        &mut f.client,
        vec!["trade", "*"],
        vec![
            trades_of_symbols(&["AAA", "BBB", "AAA"], &[DAY0, DAY0, DAY0], None),
            trades_of_symbols(&["BBB", "AAA"], &[DAY0 + 1, DAY0], None),
        ],
    )
    .await
    .unwrap();
    let w: serde_json::Value = serde_json::from_slice(&r[0].app_metadata).unwrap();
    assert_eq!(
        (w["written"].as_u64(), w["inserted"].as_u64()),
        (Some(5), Some(5)),
        "{w}"
    );
    // AAA: rows 0 and 2 of the first batch, row 1 of the second (prices 100 + row).
    assert_eq!(
        read_trades(&mut f, "AAA").await,
        [(DAY0, 0, 100), (DAY0, 1, 102), (DAY0, 2, 101)]
    );
    assert_eq!(
        read_trades(&mut f, "BBB").await,
        [(DAY0, 0, 101), (DAY0 + 1, 0, 100)]
    );

    for (batch, says) in [
        (
            trades_of_symbols(&["AAA", "ZZZ"], &[DAY0, DAY0], None),
            "ZZZ",
        ),
        (
            trades_of_symbols(&["AAA", "BBB"], &[DAY0, DAY0], Some(vec![5, u64::MAX])),
            "reserved",
        ),
        (
            trades_of_symbols(&["AAA", "AAA"], &[DAY0, DAY0], Some(vec![5, 5])),
            "repeats",
        ),
    ] {
        let err = put(&mut f.client, vec!["trade", "*"], vec![batch])
            .await
            .unwrap_err();
        assert!(message(&err).contains(says), "{says}: {}", message(&err));
    }
    assert_eq!(
        read_trades(&mut f, "AAA").await.len(),
        3,
        "refused streams wrote nothing"
    );
    assert_eq!(
        read_trades(&mut f, "BBB").await.len(),
        2,
        "refused streams wrote nothing"
    );
    f.shutdown().await;
}

/// `(ts, seq, price)` of every trade of `symbol`, read over Flight.
async fn read_trades(f: &mut Fixture, symbol: &str) -> Vec<(i64, u64, i64)> {
    let batches = get(&mut f.client, json!({"kind": "trade", "symbol": symbol}))
        .await
        .unwrap();
    let mut keys = Vec::new();
    for b in &batches {
        let ts = b.column(0).as_primitive::<TimestampNanosecondType>();
        let seq = b.column(1).as_primitive::<UInt64Type>();
        let price = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            keys.push((ts.value(i), seq.value(i), price.value(i)));
        }
    }
    keys
}

/// Tick reads at a past moment (docs/research.md): a named snapshot that lists a trade
/// and a quote series, a past `version` and `as_of_commit` answer what the series held
/// then, over every tick read (the plain read, latest, bars, `trade_quote`, the tape,
/// and the HTTP pages), whatever was appended, replaced or range-deleted since.
#[tokio::test]
async fn tick_reads_answer_a_snapshot_a_version_and_a_commit_time() {
    use fastk::query::snapshots::{SnapshotCreate, SnapshotScope, SnapshotSeries};
    use fastk::query::tick::{QuoteIn, quote_batch};
    let mut f = Fixture::start(|c| c.storage.keep_versions_s = 3_600).await;
    let reg = |s: &str| RegisterTick {
        symbol: s.into(),
        price_scale: 100,
        size_scale: 1,
        partition: None,
        retention_ms: None,
    };
    let e = f.engine();
    for s in ["AAA", "BBB"] {
        e.register_tick(SeriesKind::Trade, &reg(s)).unwrap();
    }
    e.register_tick(SeriesKind::Quote, &reg("AAA")).unwrap();
    let (a, b, qa) = (
        SeriesKey::trade("AAA").unwrap(),
        SeriesKey::trade("BBB").unwrap(),
        SeriesKey::quote("AAA").unwrap(),
    );
    let trade = |ts: i64, seq: Option<u64>, price: i64| TradeIn {
        ts,
        seq,
        price,
        size: 1,
        side: 1,
        trade_id: 0,
    };
    let first: Vec<TradeIn> = (0..6)
        .map(|i| trade(DAY0 + (i / 2) * 1_000, None, 100 + i))
        .collect();
    let v1 = e
        .write(&a, trade_batch(&first).unwrap(), None)
        .unwrap()
        .version;
    e.write(
        &b,
        trade_batch(&[trade(DAY0 + 500, None, 7)]).unwrap(),
        None,
    )
    .unwrap();
    let quote = QuoteIn {
        ts: DAY0 - 1,
        seq: None,
        bid: 90,
        ask: 91,
        bid_size: 1,
        ask_size: 1,
    };
    e.write(&qa, quote_batch(&[quote]).unwrap(), None).unwrap();
    let list = |kind: &str, symbol: &str| SnapshotSeries {
        kind: kind.into(),
        symbol: symbol.into(),
        timeframe: None,
        category: None,
        name: None,
    };
    e.create_snapshot(&SnapshotCreate {
        name: "before".into(),
        series: Some(SnapshotScope::List(vec![
            list("trade", "AAA"),
            list("trade", "BBB"),
            list("quote", "AAA"),
        ])),
        note: None,
    })
    .unwrap();
    let bad = e.create_snapshot(&SnapshotCreate {
        name: "bad".into(),
        series: Some(SnapshotScope::List(vec![SnapshotSeries {
            timeframe: Some("1m".into()),
            ..list("trade", "AAA")
        }])),
        note: None,
    });
    assert!(bad.unwrap_err().message.contains("kind and symbol alone"));
    std::thread::sleep(std::time::Duration::from_millis(5));
    let between = fastk::storage::now_ms();
    std::thread::sleep(std::time::Duration::from_millis(5));
    // After the snapshot: a replacement by seq, an append, a range delete, a new quote.
    e.write(
        &a,
        trade_batch(&[trade(DAY0, Some(0), 999), trade(DAY0 + 9_000, None, 5)]).unwrap(),
        None,
    )
    .unwrap();
    e.delete_range(&b, Some(DAY0), Some(DAY0 + 1_000), None)
        .unwrap();
    e.write(
        &qa,
        quote_batch(&[QuoteIn {
            ts: DAY0,
            bid: 50,
            ask: 51,
            ..quote
        }])
        .unwrap(),
        None,
    )
    .unwrap();

    let prices = |batches: &[arrow_array::RecordBatch], col: &str| -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let i = b.schema().index_of(col).unwrap();
                b.column(i).as_primitive::<Int64Type>().values().to_vec()
            })
            .collect()
    };
    let then: Vec<i64> = (100..106).collect();
    let now = vec![999, 101, 102, 103, 104, 105, 5];
    for at in [
        json!({"snapshot": "before"}),
        json!({"version": v1}),
        json!({"as_of_commit": between}),
    ] {
        let mut t = json!({"kind": "trade", "symbol": "AAA"});
        t.as_object_mut()
            .unwrap()
            .extend(at.as_object().unwrap().clone());
        let got = get(&mut f.client, t.clone()).await.unwrap();
        assert_eq!(prices(&got, "price"), then, "{t}");
        t["latest"] = json!(2);
        assert_eq!(
            prices(&get(&mut f.client, t.clone()).await.unwrap(), "price"),
            [104, 105],
            "{t}"
        );
        t.as_object_mut().unwrap().remove("latest");
        t["resample"] = json!({"timeframe": "1m"});
        let bars = get(&mut f.client, t.clone()).await.unwrap();
        assert_eq!(
            (prices(&bars, "open"), prices(&bars, "close")),
            (vec![100], vec![105]),
            "{t}"
        );
    }
    assert_eq!(
        prices(
            &get(&mut f.client, json!({"kind": "trade", "symbol": "AAA"}))
                .await
                .unwrap(),
            "price"
        ),
        now
    );
    // trade_quote and the tape take a snapshot or a commit time.
    for at in [
        json!({"snapshot": "before"}),
        json!({"as_of_commit": between}),
    ] {
        let mut t = json!({"kind": "trade_quote", "symbol": "AAA"});
        t.as_object_mut()
            .unwrap()
            .extend(at.as_object().unwrap().clone());
        let got = get(&mut f.client, t.clone()).await.unwrap();
        assert_eq!(prices(&got, "bid"), [90; 6], "{t}");
        let mut tape = json!({"kind": "trade", "symbols": "*", "order": "ts"});
        tape.as_object_mut()
            .unwrap()
            .extend(at.as_object().unwrap().clone());
        let got = get(&mut f.client, tape.clone()).await.unwrap();
        assert_eq!(
            prices(&got, "price"),
            [100, 101, 7, 102, 103, 104, 105],
            "{tape}"
        );
    }
    let now_tq = get(
        &mut f.client,
        json!({"kind": "trade_quote", "symbol": "AAA"}),
    )
    .await
    .unwrap();
    assert_eq!(prices(&now_tq, "bid"), [50, 50, 50, 50, 50, 50, 50]);
    let err = get(
        &mut f.client,
        json!({"kind": "trade_quote", "symbol": "AAA", "version": v1}),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(
        message(&err).contains("snapshot or as_of_commit"),
        "{}",
        message(&err)
    );

    // HTTP: pages, latest and the versions list at those moments.
    let http = reqwest::Client::new();
    let base = format!("http://{}", f.running.http_addr);
    for q in [
        "snapshot=before".to_string(),
        format!("version={v1}"),
        format!("as_of_commit={between}"),
    ] {
        let page: serde_json::Value =
            get_json(&http, format!("{base}/v1/trade/AAA/records?{q}&limit=4")).await;
        let got: Vec<i64> = page["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["price"].as_i64().unwrap())
            .collect();
        assert_eq!(got, [100, 101, 102, 103], "{q}: {page}");
        assert_eq!(page["next"], json!({"ts": DAY0 + 1_000, "seq": 1}), "{q}");
        let latest: serde_json::Value =
            get_json(&http, format!("{base}/v1/trade/AAA/latest?{q}&n=1")).await;
        assert_eq!(latest["records"][0]["price"], 105, "{q}");
    }
    let versions: serde_json::Value =
        get_json(&http, format!("{base}/v1/trade/AAA/versions")).await;
    let listed: Vec<u64> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert!(listed.contains(&v1) && listed.len() >= 2, "{versions}");
    f.shutdown().await;
}

/// The JSON answer of an HTTP GET.
async fn get_json(http: &reqwest::Client, url: String) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Bars from trades and `trade_quote` of many symbols in one ticket (`symbols`: a list
/// or `"*"`): each symbol's answer in turn, in symbol order, led by a `symbol` column,
/// equal row for row to that symbol's own ticket (a symbol with no quote series gets
/// null quotes). Small batches, so answers cross batch edges.
#[tokio::test]
async fn bars_and_trade_quote_of_many_symbols_equal_each_symbols_own() {
    use fastk::query::tick::{QuoteIn, quote_batch};
    let mut f = Fixture::start(|c| c.flight.max_batch_rows = 4).await;
    let reg = |s: &str| RegisterTick {
        symbol: s.into(),
        price_scale: 100,
        size_scale: 1,
        partition: None,
        retention_ms: None,
    };
    let e = f.engine();
    let minute = 60_000_000_000i64;
    for (k, s) in ["CCC", "AAA", "BBB"].into_iter().enumerate() {
        e.register_tick(SeriesKind::Trade, &reg(s)).unwrap();
        let trades: Vec<TradeIn> = (0..9 + k as i64)
            .map(|i| TradeIn {
                ts: DAY0 + i * minute / 3 + (i % 2),
                seq: None,
                price: 1_000 * (k as i64 + 1) + i * 7 % 11,
                size: 1 + i % 4,
                side: 1,
                trade_id: 0,
            })
            .collect();
        e.write(
            &SeriesKey::trade(s).unwrap(),
            trade_batch(&trades).unwrap(),
            None,
        )
        .unwrap();
        if s != "CCC" {
            e.register_tick(SeriesKind::Quote, &reg(s)).unwrap();
            let quotes: Vec<QuoteIn> = (0..5)
                .map(|i| QuoteIn {
                    ts: DAY0 + i * minute / 2,
                    seq: None,
                    bid: 900 + i,
                    ask: 950 + i,
                    bid_size: i,
                    ask_size: 1,
                })
                .collect();
            e.write(
                &SeriesKey::quote(s).unwrap(),
                quote_batch(&quotes).unwrap(),
                None,
            )
            .unwrap();
        }
    }
    let concat = |batches: Vec<arrow_array::RecordBatch>| {
        arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap()
    };
    for (one, many) in [
        (
            json!({"kind": "trade", "resample": {"timeframe": "1m"}}),
            json!({"kind": "trade", "resample": {"timeframe": "1m"}}),
        ),
        (
            json!({"kind": "trade_quote"}),
            json!({"kind": "trade_quote"}),
        ),
    ] {
        for symbols in [json!("*"), json!(["BBB", "CCC", "AAA"])] {
            let mut t = many.clone();
            t["symbols"] = symbols.clone();
            let got = concat(get(&mut f.client, t.clone()).await.unwrap());
            assert_eq!(got.schema().field(0).name(), "symbol", "{t}");
            let mut at = 0;
            for s in ["AAA", "BBB", "CCC"] {
                let mut o = one.clone();
                o["symbol"] = json!(s);
                let want = concat(get(&mut f.client, o.clone()).await.unwrap());
                let part = got.slice(at, want.num_rows());
                let names = part.column(0).as_string::<i32>();
                assert!(
                    (0..part.num_rows()).all(|r| names.value(r) == s),
                    "{t}: {s}"
                );
                for c in 0..want.num_columns() {
                    assert_eq!(
                        part.column(c + 1).as_ref(),
                        want.column(c).as_ref(),
                        "{t}: {s} column {c}"
                    );
                }
                at += want.num_rows();
            }
            assert_eq!(at, got.num_rows(), "{t}: nothing more");
        }
    }
    for (ticket, says) in [
        (
            json!({"kind": "trade", "symbols": "*", "order": "ts", "resample": {"timeframe": "1m"}}),
            "one symbol after the other",
        ),
        (
            json!({"kind": "quote", "symbols": "*", "resample": {"timeframe": "1m"}}),
            "use a trade ticket",
        ),
        (
            json!({"kind": "trade_quote", "symbols": ["AAA"], "symbol": "AAA"}),
            "not both",
        ),
        (
            json!({"kind": "trade_quote", "symbols": ["AAA", "ZZZ"]}),
            "ZZZ",
        ),
    ] {
        let err = get(&mut f.client, ticket.clone()).await.unwrap_err();
        assert!(message(&err).contains(says), "{ticket}: {}", message(&err));
    }
    f.shutdown().await;
}

//! Flight reads against a real server on port 0: DoGet of ranges, latest-N, column
//! selection, float64 prices, scalar series and predicates; GetFlightInfo, GetSchema,
//! ListFlights; error codes; and stream release on disconnect. Zero copy and
//! corruption are in `flight_chunks.rs`.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow_flight::FlightDescriptor;
use arrow_schema::{DataType, Schema, TimeUnit};
use common::*;
use fastk::record::{SeriesKey, ValueType};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;
use tonic::Code;

/// Three months of 5m bars written in four appends, so months hold delta chunks.
fn btc_rows() -> Vec<fastk::record::KlineRecord> {
    klines(JAN_2024, 3 * 30 * 288, 5 * MINUTE, 1)
}

fn write_btc(fx: &Fixture) -> (SeriesKey, Vec<fastk::record::KlineRecord>) {
    let key = fx.kline_series("BTCUSDT", "5m");
    let rows = btc_rows();
    for part in rows.chunks(rows.len() / 4 + 1) {
        fx.write_klines(&key, part);
    }
    (key, rows)
}

fn kline_ticket(extra: serde_json::Value) -> serde_json::Value {
    let mut t = json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "5m"});
    for (k, v) in extra.as_object().expect("object") {
        t[k] = v.clone();
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kline_range_round_trips_across_months_and_deltas() {
    let mut fx = Fixture::start(|c| c.flight.max_batch_rows = 1000).await;
    let (key, rows) = write_btc(&fx);
    let info = fx.engine().series_info(&key).unwrap();
    let parts = info.partitions.unwrap();
    assert!(parts.len() >= 3, "spans several months");
    assert!(parts.iter().any(|p| p.chunks > 1), "holds delta chunks");

    let batches = get(&mut fx.client, kline_ticket(json!({}))).await.unwrap();
    assert!(batches.len() >= rows.len() / 1000);
    for b in &batches {
        assert!(b.num_rows() <= 1000, "batch of {} rows", b.num_rows());
    }
    let want = kline_cols(&rows);
    for (i, name) in KLINE_NAMES.iter().enumerate() {
        assert_eq!(col_i64(&batches, name), want[i], "column {name}");
    }
    let schema = batches[0].schema();
    let ts = schema.field_with_name("ts").unwrap();
    assert_eq!(
        ts.data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    assert!(!ts.is_nullable());
    for name in &KLINE_NAMES[1..] {
        assert_eq!(
            schema.field_with_name(name).unwrap().data_type(),
            &DataType::Int64
        );
    }
    let md = schema.metadata();
    assert_eq!(md["fastk.kind"], "kline");
    assert_eq!(md["fastk.symbol"], "BTCUSDT");
    assert_eq!(md["fastk.timeframe"], "5m");
    assert_eq!(md["fastk.timeframe_ms"], "300000");
    assert_eq!(md["fastk.price_scale"], "100");
    assert_eq!(md["fastk.volume_scale"], "1000");

    // An inclusive sub-range crossing a month boundary.
    let (a, b) = (rows[8000].ts, rows[9500].ts);
    let part = get(
        &mut fx.client,
        kline_ticket(json!({"start_ts": a, "end_ts": b})),
    )
    .await
    .unwrap();
    assert_eq!(col_i64(&part, "ts"), want[0][8000..=9500].to_vec());
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_columns_and_float64_prices() {
    let mut fx = Fixture::start(|_| {}).await;
    let (_, rows) = write_btc(&fx);
    let want = kline_cols(&rows);
    let n = rows.len();

    let last = get(&mut fx.client, kline_ticket(json!({"latest": 7})))
        .await
        .unwrap();
    assert_eq!(col_i64(&last, "close"), want[4][n - 7..].to_vec());
    let end = rows[5000].ts;
    let last = get(
        &mut fx.client,
        kline_ticket(json!({"latest": 3000, "end_ts": end})),
    )
    .await
    .unwrap();
    assert_eq!(col_i64(&last, "ts"), want[0][2001..=5000].to_vec());

    let sel = get(
        &mut fx.client,
        kline_ticket(json!({"columns": ["close", "ts"], "latest": 100})),
    )
    .await
    .unwrap();
    let names: Vec<String> = sel[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["ts", "close"]);
    assert_eq!(col_i64(&sel, "close"), want[4][n - 100..].to_vec());

    let float = get(
        &mut fx.client,
        kline_ticket(json!({"price_format": "float64", "columns": ["open", "volume"]})),
    )
    .await
    .unwrap();
    assert_eq!(
        float[0]
            .schema()
            .field_with_name("open")
            .unwrap()
            .data_type(),
        &DataType::Float64
    );
    let open: Vec<f64> = want[1].iter().map(|&v| v as f64 / 100.0).collect();
    let volume: Vec<f64> = want[5].iter().map(|&v| v as f64 / 1000.0).collect();
    assert_eq!(col_f64(&float, "open"), open);
    assert_eq!(col_f64(&float, "volume"), volume);

    let bad = get(&mut fx.client, kline_ticket(json!({"columns": ["vwap"]}))).await;
    let err = bad.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(message(&err).contains("vwap"));
    fx.shutdown().await;
}

/// i64 values cycle 0..100 and f64 values follow a sine, with one NaN.
fn scalar_rows(n: usize, f64s: bool) -> Vec<(i64, i64)> {
    (0..n as i64)
        .map(|i| {
            let ts = JAN_2024 + 25 * 24 * 60 * MINUTE + i * 3 * MINUTE;
            let v = if !f64s {
                (i * 37) % 100
            } else if i == 77 {
                f64::NAN.to_bits() as i64
            } else {
                ((i as f64 * 0.37).sin() * 100.0).to_bits() as i64
            };
            (ts, v)
        })
        .collect()
}

fn scalar_ticket(name: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut t = json!({"kind": "scalar", "symbol": "ETHUSDT", "timeframe": "1m",
                       "category": "indicator", "name": name});
    for (k, v) in extra.as_object().expect("object") {
        t[k] = v.clone();
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scalar_series_and_predicates_match_a_naive_filter() {
    let mut fx = Fixture::start(|c| c.flight.max_batch_rows = 1000).await;
    let ki = fx.scalar_series("ETHUSDT", "score", ValueType::I64);
    let kf = fx.scalar_series("ETHUSDT", "rsi", ValueType::F64);
    let (ri, rf) = (scalar_rows(30_000, false), scalar_rows(30_000, true));
    for part in ri.chunks(7_000) {
        fx.write_scalars(&ki, part);
    }
    fx.write_scalars(&kf, &rf);

    let all = get(&mut fx.client, scalar_ticket("score", json!({})))
        .await
        .unwrap();
    assert_eq!(
        all[0]
            .schema()
            .field_with_name("value")
            .unwrap()
            .data_type(),
        &DataType::Int64
    );
    assert_eq!(all[0].schema().metadata()["fastk.kind"], "scalar");
    assert_eq!(
        col_i64(&all, "ts"),
        ri.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(
        col_i64(&all, "value"),
        ri.iter().map(|r| r.1).collect::<Vec<_>>()
    );
    let all = get(&mut fx.client, scalar_ticket("rsi", json!({})))
        .await
        .unwrap();
    assert_eq!(
        all[0]
            .schema()
            .field_with_name("value")
            .unwrap()
            .data_type(),
        &DataType::Float64
    );
    assert_eq!(
        col_i64(&all, "value"),
        rf.iter().map(|r| r.1).collect::<Vec<_>>()
    );

    let naive_i = |f: &dyn Fn(i64) -> bool| -> Vec<(i64, i64)> {
        ri.iter().copied().filter(|r| f(r.1)).collect()
    };
    for strategy in ["auto", "scan", "zonemap", "value_index"] {
        let pred = json!({"predicate": {"op": "gte", "value": 90}, "strategy": strategy});
        let got = get(&mut fx.client, scalar_ticket("score", pred))
            .await
            .unwrap();
        let want = naive_i(&|v| v >= 90);
        assert_eq!(
            col_i64(&got, "ts"),
            want.iter().map(|r| r.0).collect::<Vec<_>>()
        );
        assert_eq!(
            col_i64(&got, "value"),
            want.iter().map(|r| r.1).collect::<Vec<_>>()
        );
    }
    // Every row matches: batches still respect max_batch_rows.
    let pred = json!({"predicate": {"op": "gte", "value": 0}});
    let got = get(&mut fx.client, scalar_ticket("score", pred))
        .await
        .unwrap();
    assert_eq!(got.iter().map(|b| b.num_rows()).sum::<usize>(), ri.len());
    assert!(got.iter().all(|b| b.num_rows() <= 1000));

    let (a, b) = (ri[1000].0, ri[20_000].0);
    let pred = json!({"predicate": {"op": "in", "values": [3, 50, 99]}, "start_ts": a,
                      "end_ts": b, "latest": 5, "return_values": false});
    let got = get(&mut fx.client, scalar_ticket("score", pred))
        .await
        .unwrap();
    assert_eq!(got[0].schema().fields().len(), 1, "ts only");
    let want: Vec<i64> = ri[1000..=20_000]
        .iter()
        .filter(|r| [3, 50, 99].contains(&r.1))
        .map(|r| r.0)
        .collect();
    assert_eq!(col_i64(&got, "ts"), want[want.len() - 5..].to_vec());

    let pred = json!({"predicate": {"op": "between", "min": -10.5, "max": 20.25}});
    let got = get(&mut fx.client, scalar_ticket("rsi", pred))
        .await
        .unwrap();
    let want: Vec<i64> = rf
        .iter()
        .filter(|r| (-10.5..=20.25).contains(&f64::from_bits(r.1 as u64)))
        .map(|r| r.1)
        .collect();
    assert_eq!(col_i64(&got, "value"), want);
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_info_schema_and_list_flights() {
    let mut fx = Fixture::start(|_| {}).await;
    let (key, rows) = write_btc(&fx);
    fx.scalar_series("ETHUSDT", "score", ValueType::I64);
    let ks = fx.scalar_series("BTCUSDT", "rsi", ValueType::F64);
    fx.write_scalars(&ks, &scalar_rows(500, true));

    let cmd = kline_ticket(json!({"start_ts": rows[100].ts, "end_ts": rows[2099].ts})).to_string();
    let info = fx
        .client
        .get_flight_info(FlightDescriptor::new_cmd(cmd.clone()))
        .await
        .unwrap();
    assert_eq!(info.total_records, 2000);
    assert_eq!(info.total_bytes, 2000 * 6 * 8);
    let endpoint_ticket = info.endpoint[0].ticket.clone().unwrap();
    assert_eq!(endpoint_ticket.ticket.as_ref(), cmd.as_bytes());
    let schema = info.clone().try_decode_schema().unwrap();
    let batches = fetch(&mut fx.client, endpoint_ticket).await;
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2000);
    assert_eq!(batches[0].schema().as_ref(), &schema);

    let path = FlightDescriptor::new_path(key.parts());
    let info = fx.client.get_flight_info(path).await.unwrap();
    assert_eq!(info.total_records, rows.len() as i64);
    let whole = fetch(&mut fx.client, info.endpoint[0].ticket.clone().unwrap()).await;
    assert_eq!(col_i64(&whole, "ts").len(), rows.len());

    let cmd = kline_ticket(json!({"columns": ["high"], "price_format": "float64"})).to_string();
    let schema: Schema = fx
        .client
        .get_schema(FlightDescriptor::new_cmd(cmd))
        .await
        .unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["ts", "high"]);
    assert_eq!(schema.field(1).data_type(), &DataType::Float64);
    assert_eq!(schema.metadata()["fastk.price_scale"], "100");

    let list = |expr: &'static str| bytes::Bytes::from_static(expr.as_bytes());
    let infos: Vec<_> = fx
        .client
        .list_flights(list(""))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(infos.len(), 3);
    let by_path = |p: &[&str]| {
        infos
            .iter()
            .find(|i| i.flight_descriptor.as_ref().unwrap().path == p)
            .unwrap_or_else(|| panic!("{p:?} listed"))
    };
    assert_eq!(
        by_path(&["kline", "BTCUSDT", "5m"]).total_records,
        rows.len() as i64
    );
    assert_eq!(
        by_path(&["scalar", "BTCUSDT", "1m", "indicator", "rsi"]).total_records,
        500
    );
    assert_eq!(
        by_path(&["scalar", "ETHUSDT", "1m", "indicator", "score"]).total_records,
        0
    );
    // An empty series still sends its schema, so clients learn the column types.
    let empty = json!({"kind": "scalar", "symbol": "ETHUSDT", "timeframe": "1m",
                       "category": "indicator", "name": "score"});
    let mut s = fx.client.do_get(ticket(empty)).await.unwrap();
    assert!(s.next().await.is_none());
    let schema = s.schema().expect("schema sent without rows");
    assert_eq!(schema.field(1).data_type(), &DataType::Int64);

    let count = |mut c: arrow_flight::FlightClient, e: &'static str| async move {
        let s = c.list_flights(list(e)).await?;
        s.try_collect::<Vec<_>>().await.map(|v| v.len())
    };
    let addr = fx.running.flight_addr;
    assert_eq!(
        count(client(addr).await, r#"{"kind":"scalar"}"#)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        count(client(addr).await, r#"{"symbol":"BTCUSDT"}"#)
            .await
            .unwrap(),
        2
    );
    let both = r#"{"kind":"kline","symbol":"ETHUSDT"}"#;
    assert_eq!(count(client(addr).await, both).await.unwrap(), 0);
    let bad = count(client(addr).await, r#"{"sym":"X"}"#)
        .await
        .unwrap_err();
    assert_eq!(code(&bad), Code::InvalidArgument);
    let bad = count(client(addr).await, r#"{"limit":0}"#)
        .await
        .unwrap_err();
    assert_eq!(code(&bad), Code::InvalidArgument);

    // Pages of `limit` in key order (the key as text, as /inventory), each starting
    // after the last key of the one before, list every series exactly once.
    let paths = |infos: &[arrow_flight::FlightInfo]| -> Vec<String> {
        infos
            .iter()
            .map(|i| i.flight_descriptor.as_ref().unwrap().path.join("/"))
            .collect()
    };
    let mut all = paths(&infos);
    all.sort();
    assert_eq!(paths(&infos), all, "ListFlights lists in key order");
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut crit = json!({"limit": 2});
        if let Some(a) = &after {
            crit["after"] = json!(a);
        }
        let page: Vec<_> = client(addr)
            .await
            .list_flights(bytes::Bytes::from(crit.to_string()))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        // A page's schema is the one GetSchema of its path gives.
        for i in &page {
            let want = fx
                .client
                .get_schema(i.flight_descriptor.clone().unwrap())
                .await
                .unwrap();
            let got: Schema = i.clone().try_decode_schema().unwrap();
            assert_eq!(got, want);
        }
        after = paths(&page).last().cloned();
        paged.extend(paths(&page));
    }
    assert_eq!(paged, all);
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tickets_and_unknown_series_get_the_right_codes() {
    let mut fx = Fixture::start(|_| {}).await;
    write_btc(&fx);
    let raw = |s: &str| arrow_flight::Ticket::new(s.to_string());
    let err = fx.client.do_get(raw("{not json")).await.err().unwrap();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(message(&err).contains("JSON"));
    for (t, needle) in [
        (kline_ticket(json!({"limit": 5})), "limit"),
        (kline_ticket(json!({"price_format": "decimal"})), "decimal"),
        (
            kline_ticket(json!({"start_ts": 5, "end_ts": 1})),
            "start_ts",
        ),
        (
            json!({"kind": "kline", "symbol": "a/b", "timeframe": "5m"}),
            "symbol",
        ),
        (
            json!({"kind": "bars", "symbol": "A", "timeframe": "5m"}),
            "bars",
        ),
    ] {
        let err = get(&mut fx.client, t).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{needle}");
        assert!(message(&err).contains(needle), "{}", message(&err));
    }
    let missing = json!({"kind": "kline", "symbol": "NOPE", "timeframe": "5m"});
    let err = get(&mut fx.client, missing.clone()).await.unwrap_err();
    assert_eq!(code(&err), Code::NotFound);
    let err = fx
        .client
        .get_flight_info(FlightDescriptor::new_cmd(missing.to_string()))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::NotFound);
    let err = fx
        .client
        .get_flight_info(FlightDescriptor::new_path(vec!["kline".into()]))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    fx.shutdown().await;
}

/// Polls `f` for up to ten seconds; the server releases streams asynchronously.
async fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_streams_are_released_and_the_limit_holds() {
    let mut fx = Fixture::start(|c| {
        c.flight.max_batch_rows = 500;
        c.flight.max_concurrent_streams = 1;
    })
    .await;
    // Far more than the HTTP/2 windows and socket buffers between the two ends hold
    // (24 MB), so the server is still producing when the client lets go.
    let key = fx.scalar_series("ETHUSDT", "score", ValueType::I64);
    fx.write_scalars(&key, &scalar_rows(1_500_000, false));
    let engine = Arc::clone(&fx.running.engine);
    let open = move || engine.metrics.flight_streams_open.load(Ordering::Relaxed);

    let mut stream = fx
        .client
        .do_get(ticket(scalar_ticket("score", json!({}))))
        .await
        .unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.num_rows(), 500);
    assert_eq!(open(), 1);

    let mut second = client(fx.running.flight_addr).await;
    let err = get(&mut second, scalar_ticket("score", json!({})))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::Unavailable);
    assert!(message(&err).contains("max_concurrent_streams"));

    drop(stream);
    assert!(eventually(|| open() == 0).await, "stream still open");
    let all = get(&mut second, scalar_ticket("score", json!({})))
        .await
        .unwrap();
    assert_eq!(all.iter().map(|b| b.num_rows()).sum::<usize>(), 1_500_000);
    assert!(eventually(|| open() == 0).await);
    let text = fx.engine().metrics_text();
    assert!(text.contains(r#"fastk_flight_requests_total{method="DoGet",code="Cancelled"} 1"#));
    assert!(text.contains(r#"fastk_flight_requests_total{method="DoGet",code="Ok"} 1"#));
    assert!(text.contains(r#"fastk_flight_requests_total{method="DoGet",code="Unavailable"} 1"#));
    fx.shutdown().await;
}

/// The server answers DoGet through `flight::wire` (column bytes straight from the
/// mapping); the generated tonic service keeps an arrow-flight `FlightDataEncoder`
/// path for the same calls. Both must send the same batches, predicates included.
#[tokio::test]
async fn zero_copy_and_generated_doget_send_the_same_batches() {
    let mut fx = Fixture::start(|c| c.flight.max_batch_rows = 700).await;
    let (_key, rows) = write_btc(&fx);
    let skey = fx.scalar_series("ETHUSDT", "rsi", ValueType::I64);
    let scalars: Vec<(i64, i64)> = (0..3000i64)
        .map(|i| (JAN_2024 + i * MINUTE, (i * 7919) % 97))
        .collect();
    fx.write_scalars(&skey, &scalars);
    // Chunk files, as this test was written for (the log's small in-memory chunks
    // split batches at other places, and the generated path does not coalesce).
    fx.engine().store.fold_all();

    // The generated service alone, on its own port, over the same engine.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = arrow_flight::flight_service_server::FlightServiceServer::new(
        fastk::flight::FlightSvc::new(Arc::clone(&fx.running.engine)),
    );
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let mut generated = client(addr).await;

    let (a, b) = (rows[100].ts, rows[rows.len() - 100].ts);
    for t in [
        kline_ticket(json!({})),
        kline_ticket(json!({"start_ts": a, "end_ts": b})),
        kline_ticket(json!({"latest": 1234, "columns": ["close", "volume"]})),
        scalar_ticket(
            "rsi",
            json!({"predicate": {"op": "between", "min": 20, "max": 55}}),
        ),
    ] {
        let wire = get(&mut fx.client, t.clone()).await.unwrap();
        let gen_ = get(&mut generated, t.clone()).await.unwrap();
        let rows: usize = wire.iter().map(|b| b.num_rows()).sum();
        assert!(rows > 700, "{t}: {rows} rows, more than one batch");
        assert_eq!(wire, gen_, "{t}");
    }
    server.abort();
    fx.shutdown().await;
}

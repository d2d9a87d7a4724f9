//! Flight writes and operations against a real server on port 0: DoPut (one stream =
//! one all-or-nothing write, schema checks, expected versions), DoAction and
//! ListActions, and bearer-token auth.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightClient, FlightDescriptor, PutResult};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use common::*;
use fastk::query::types::{AdminReport, Health, Inventory, WriteResponse};
use fastk::record::{KlineRecord, SeriesKey, ValueType};
use futures::{TryStreamExt, stream};
use serde_json::json;
use tonic::Code;

fn ts_field() -> Field {
    Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    )
}

/// Record batches of `rows` in the read schema, `per` rows each.
fn kline_batches(rows: &[KlineRecord], per: usize) -> Vec<RecordBatch> {
    let mut fields = vec![ts_field()];
    fields.extend(
        KLINE_NAMES[1..]
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, false)),
    );
    let schema = Arc::new(Schema::new(fields));
    rows.chunks(per)
        .map(|part| {
            let cols = kline_cols(part);
            let mut arrays: Vec<ArrayRef> = vec![Arc::new(
                TimestampMillisecondArray::from(cols[0].clone()).with_timezone("UTC"),
            )];
            for c in &cols[1..] {
                arrays.push(Arc::new(Int64Array::from(c.clone())));
            }
            RecordBatch::try_new(Arc::clone(&schema), arrays).unwrap()
        })
        .collect()
}

/// DoPut of `batches` to `path`, with optional app_metadata on the first message.
async fn put(
    client: &mut FlightClient,
    path: Option<Vec<String>>,
    metadata: Option<serde_json::Value>,
    batches: Vec<RecordBatch>,
) -> Result<Vec<PutResult>, FlightError> {
    let mut enc = FlightDataEncoderBuilder::new()
        .with_max_flight_data_size(64 << 20)
        .with_flight_descriptor(path.map(FlightDescriptor::new_path));
    if let Some(m) = metadata {
        enc = enc.with_metadata(Bytes::from(m.to_string()));
    }
    let data = enc.build(stream::iter(batches.into_iter().map(Ok)));
    client.do_put(data).await?.try_collect().await
}

fn response(results: &[PutResult]) -> WriteResponse {
    assert_eq!(results.len(), 1, "one PutResult per stream");
    serde_json::from_slice(&results[0].app_metadata).expect("WriteResponse JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_200k_rows_then_read_them_back() {
    let mut fx = Fixture::start(|_| {}).await;
    let key = fx.kline_series("BTCUSDT", "1m");
    let rows = klines(JAN_2024, 200_000, MINUTE, 5);
    let results = put(
        &mut fx.client,
        Some(key.parts()),
        None,
        kline_batches(&rows, 65_536),
    )
    .await
    .unwrap();
    let r = response(&results);
    assert_eq!(
        (r.written, r.inserted, r.replaced, r.version),
        (200_000, 200_000, 0, 1)
    );
    assert_eq!(
        r.months,
        ["2024-01", "2024-02", "2024-03", "2024-04", "2024-05"]
    );

    let back = get(
        &mut fx.client,
        json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m"}),
    )
    .await
    .unwrap();
    let want = kline_cols(&rows);
    for (i, name) in KLINE_NAMES.iter().enumerate() {
        assert_eq!(col_i64(&back, name), want[i], "column {name}");
    }

    // A second stream upserts: ts as plain int64, columns in another order.
    let changed: Vec<KlineRecord> = rows[..10]
        .iter()
        .map(|r| KlineRecord {
            volume: r.volume + 1,
            ..*r
        })
        .collect();
    let cols = kline_cols(&changed);
    let schema = Schema::new(
        ["volume", "ts", "open", "high", "low", "close"]
            .map(|n| Field::new(n, DataType::Int64, false))
            .to_vec(),
    );
    let order = [5, 0, 1, 2, 3, 4];
    let arrays: Vec<ArrayRef> = order
        .iter()
        .map(|&c| Arc::new(Int64Array::from(cols[c].clone())) as ArrayRef)
        .collect();
    let batch = RecordBatch::try_new(Arc::new(schema), arrays).unwrap();
    let meta = json!({"expected_version": 1});
    let r = response(
        &put(&mut fx.client, Some(key.parts()), Some(meta), vec![batch])
            .await
            .unwrap(),
    );
    assert_eq!(
        (r.written, r.inserted, r.replaced, r.version),
        (10, 0, 10, 2)
    );
    let head = get(
        &mut fx.client,
        json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m", "end_ts": rows[9].ts}),
    )
    .await
    .unwrap();
    assert_eq!(col_i64(&head, "volume"), cols[5]);
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scalar_put_and_version_mismatch_changes_nothing() {
    let mut fx = Fixture::start(|_| {}).await;
    let key = fx.scalar_series("ETHUSDT", "rsi", ValueType::F64);
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", DataType::Int64, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let ts: Vec<i64> = (0..1000).map(|i| JAN_2024 + i * MINUTE).collect();
    let values: Vec<f64> = (0..1000).map(|i| i as f64 / 7.0).collect();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(ts.clone())),
            Arc::new(Float64Array::from(values.clone())),
        ],
    )
    .unwrap();
    let r = response(
        &put(&mut fx.client, Some(key.parts()), None, vec![batch.clone()])
            .await
            .unwrap(),
    );
    assert_eq!(r.version, 1);
    let back = get(
        &mut fx.client,
        json!({"kind": "scalar", "symbol": "ETHUSDT", "timeframe": "1m", "category": "indicator", "name": "rsi"}),
    )
    .await
    .unwrap();
    assert_eq!(col_i64(&back, "ts"), ts);
    assert_eq!(col_f64(&back, "value"), values);

    let err = put(
        &mut fx.client,
        Some(key.parts()),
        Some(json!({"expected_version": 7})),
        vec![batch],
    )
    .await
    .unwrap_err();
    assert_eq!(code(&err), Code::FailedPrecondition);
    let info = fx.engine().series_info(&key).unwrap();
    assert_eq!((info.version, info.rows), (1, 1000), "nothing changed");
    fx.shutdown().await;
}

/// The fields and columns of `b`, to change one and rebuild with [`kline_batch_with`].
fn parts(b: &RecordBatch) -> (Vec<Field>, Vec<ArrayRef>) {
    let fields = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    (fields, b.columns().to_vec())
}

fn kline_batch_with(fields: Vec<Field>, arrays: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_puts_are_refused_naming_the_field() {
    let mut fx = Fixture::start(|_| {}).await;
    let key = fx.kline_series("BTCUSDT", "1m");
    let good = kline_batches(&klines(JAN_2024, 10, MINUTE, 1), 10).remove(0);
    let mut cases: Vec<(RecordBatch, &str)> = Vec::new();
    // open as float64.
    let (mut fields, mut arrays) = parts(&good);
    fields[1] = Field::new("open", DataType::Float64, false);
    arrays[1] = Arc::new(Float64Array::from(vec![1.0; 10]));
    cases.push((kline_batch_with(fields, arrays), "open"));
    // volume missing.
    cases.push((good.project(&[0, 1, 2, 3, 4]).unwrap(), "volume"));
    // an extra column.
    let (mut fields, mut arrays) = parts(&good);
    fields.push(Field::new("vwap", DataType::Int64, false));
    arrays.push(Arc::new(Int64Array::from(vec![1; 10])));
    cases.push((kline_batch_with(fields, arrays), "vwap"));
    // a null close.
    let (mut fields, mut arrays) = parts(&good);
    fields[4] = Field::new("close", DataType::Int64, true);
    arrays[4] = Arc::new(Int64Array::from(
        vec![Some(1); 9]
            .into_iter()
            .chain([None])
            .collect::<Vec<_>>(),
    ));
    cases.push((kline_batch_with(fields, arrays), "close"));
    // ts in seconds.
    let (mut fields, mut arrays) = parts(&good);
    fields[0] = Field::new("ts", DataType::Timestamp(TimeUnit::Second, None), false);
    arrays[0] = Arc::new(arrow_array::TimestampSecondArray::from(vec![1; 10]));
    cases.push((kline_batch_with(fields, arrays), "ts"));
    for (batch, field) in cases {
        let err = put(&mut fx.client, Some(key.parts()), None, vec![batch])
            .await
            .unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{field}");
        assert!(message(&err).contains(field), "{field}: {}", message(&err));
    }
    // OHLC violations are unprocessable: InvalidArgument on the wire, with the code in metadata.
    let mut bad = klines(JAN_2024, 5, MINUTE, 1);
    bad[3].low = bad[3].high + 1;
    let err = put(
        &mut fx.client,
        Some(key.parts()),
        None,
        kline_batches(&bad, 5),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(message(&err).contains("record 3"), "{}", message(&err));
    if let FlightError::Tonic(s) = &err {
        assert_eq!(
            s.metadata().get("fastk-error-code").unwrap(),
            "unprocessable"
        );
    }

    let unknown = SeriesKey::kline("NOPE", "1m").unwrap().parts();
    let err = put(&mut fx.client, Some(unknown), None, vec![good.clone()])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::NotFound);
    let err = put(&mut fx.client, None, None, vec![good.clone()])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(message(&err).contains("PATH descriptor"));
    let meta = json!({"expected": 1});
    let err = put(&mut fx.client, Some(key.parts()), Some(meta), vec![good])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert_eq!(
        fx.engine().series_info(&key).unwrap().rows,
        0,
        "nothing was written"
    );
    fx.shutdown().await;
}

async fn action(
    client: &mut FlightClient,
    name: &str,
    body: &str,
) -> Result<Vec<Bytes>, FlightError> {
    client
        .do_action(Action::new(name, body.to_string()))
        .await?
        .try_collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_answer_with_the_http_json_bodies() {
    let mut fx = Fixture::start(|_| {}).await;
    let key = fx.kline_series("BTCUSDT", "1m");
    fx.write_klines(&key, &klines(JAN_2024, 100, MINUTE, 1));
    let names: Vec<String> = fx
        .client
        .list_actions()
        .await
        .unwrap()
        .map_ok(|a| a.r#type)
        .try_collect()
        .await
        .unwrap();
    let want = [
        "health",
        "inventory",
        "coverage",
        "delete-range",
        "shard-map",
        "local-read",
        "snapshot-create",
        "snapshot-list",
        "snapshot-delete",
        "validate",
        "scrub",
        "repair",
        "rebuild-manifest",
        "compact",
        // Flight SQL's prepared statements share the action namespace (docs/sql.md).
        "CreatePreparedStatement",
        "ClosePreparedStatement",
    ];
    assert_eq!(names, want);

    // Outside a cluster the shard map names no node.
    let body = action(&mut fx.client, "shard-map", "").await.unwrap();
    let map: serde_json::Value = serde_json::from_slice(&body[0]).unwrap();
    assert_eq!(map, serde_json::json!({"node": null}));

    let body = action(&mut fx.client, "health", "").await.unwrap();
    let health: Health = serde_json::from_slice(&body[0]).unwrap();
    assert_eq!((health.status.as_str(), health.series), ("ok", 1));
    let body = action(&mut fx.client, "inventory", "{}").await.unwrap();
    let inv: Inventory = serde_json::from_slice(&body[0]).unwrap();
    assert_eq!((inv.series.len(), inv.total_rows), (1, 100));
    let body = action(&mut fx.client, "inventory", r#"{"kind": "scalar"}"#)
        .await
        .unwrap();
    let inv: Inventory = serde_json::from_slice(&body[0]).unwrap();
    assert_eq!(
        (inv.series.len(), inv.total_rows),
        (0, 0),
        "the kind filter"
    );
    let body = action(
        &mut fx.client,
        "inventory",
        r#"{"partitions": false, "limit": 1}"#,
    )
    .await
    .unwrap();
    let inv: Inventory = serde_json::from_slice(&body[0]).unwrap();
    assert!(inv.series[0].partitions.is_none() && inv.next_after.is_none());
    let err = action(&mut fx.client, "inventory", r#"{"bogus": 1}"#)
        .await
        .unwrap_err();
    assert_eq!(code(&err), tonic::Code::InvalidArgument);
    let body = action(&mut fx.client, "validate", r#"{"deep": true}"#)
        .await
        .unwrap();
    let report: AdminReport = serde_json::from_slice(&body[0]).unwrap();
    assert_eq!(report.action, "validate");
    assert!(report.clean && report.deep);
    assert_eq!(report.series_checked, 1);
    let body = action(&mut fx.client, "compact", r#"{"dry_run": true}"#)
        .await
        .unwrap();
    let report: AdminReport = serde_json::from_slice(&body[0]).unwrap();
    assert!(report.dry_run);

    let err = action(&mut fx.client, "explode", "").await.unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    let err = action(&mut fx.client, "validate", r#"{"deeep": true}"#)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Code::InvalidArgument);
    assert!(message(&err).contains("deeep"));
    fx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_writes_admin_and_protected_reads() {
    let mut fx = Fixture::start(|c| {
        c.auth.token = "s3cret".into();
        c.auth.protect_reads = true;
    })
    .await;
    let key = fx.kline_series("BTCUSDT", "1m");
    let rows = klines(JAN_2024, 50, MINUTE, 1);
    let read = json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m"});

    let err = get(&mut fx.client, read.clone()).await.unwrap_err();
    assert_eq!(code(&err), Code::Unauthenticated);
    let err = put(
        &mut fx.client,
        Some(key.parts()),
        None,
        kline_batches(&rows, 50),
    )
    .await
    .unwrap_err();
    assert_eq!(code(&err), Code::Unauthenticated);
    let err = action(&mut fx.client, "validate", "").await.unwrap_err();
    assert_eq!(code(&err), Code::Unauthenticated);
    let err = fx.client.list_flights(Bytes::new()).await.err().unwrap();
    assert_eq!(code(&err), Code::Unauthenticated);
    assert!(
        action(&mut fx.client, "health", "").await.is_ok(),
        "health is open"
    );

    fx.client
        .add_header("authorization", "Bearer wrong")
        .unwrap();
    let err = get(&mut fx.client, read.clone()).await.unwrap_err();
    assert_eq!(code(&err), Code::Unauthenticated);

    fx.client
        .add_header("authorization", "Bearer s3cret")
        .unwrap();
    let r = response(
        &put(
            &mut fx.client,
            Some(key.parts()),
            None,
            kline_batches(&rows, 50),
        )
        .await
        .unwrap(),
    );
    assert_eq!(r.written, 50);
    let back = get(&mut fx.client, read).await.unwrap();
    assert_eq!(col_i64(&back, "ts").len(), 50);
    assert!(action(&mut fx.client, "validate", "").await.is_ok());
    fx.shutdown().await;
}

/// Sends `first`, waits until the server holds it (the stream is open and bound to
/// its series), runs `between`, then sends `rest` and ends the stream: the PutResult
/// or the error.
async fn put_with_pause(
    fx: &mut Fixture,
    path: Vec<String>,
    first: RecordBatch,
    rest: RecordBatch,
    between: impl FnOnce(&fastk::query::Engine),
) -> Result<Vec<PutResult>, FlightError> {
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<RecordBatch, FlightError>>();
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(path)))
        .build(rx);
    let mut client = fastk_client(fx).await;
    let call =
        tokio::spawn(async move { client.do_put(data).await?.try_collect::<Vec<_>>().await });
    tx.unbounded_send(Ok(first)).unwrap();
    let held = std::time::Instant::now();
    while fx.engine().write_budget.used_bytes() == 0 {
        assert!(
            held.elapsed() < std::time::Duration::from_secs(60),
            "the first batch never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    between(fx.engine());
    tx.unbounded_send(Ok(rest)).unwrap();
    drop(tx);
    call.await.unwrap()
}

async fn fastk_client(fx: &Fixture) -> FlightClient {
    common::flight::client(fx.running.flight_addr).await
}

fn register_race(e: &fastk::query::Engine, symbol: &str, price_scale: i64) {
    e.register_kline(&fastk::query::types::RegisterKline {
        price_scale,
        volume_scale: 1000,
        ..kline_registration(symbol, "1m")
    })
    .expect("register");
}

/// Story: a DoPut to RACE2 (price scale 100) was acknowledged after RACE2 had been
/// deleted and registered again with price scale 10000 while the stream was sent,
/// and every row landed in the new series, its prices read 100 times too small. A
/// write stream is now bound to the series that existed when it opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_never_lands_in_a_series_registered_again_while_it_streams() {
    let mut fx = Fixture::start(|_| {}).await;
    let rows = klines(JAN_2024, 2_000, MINUTE, 7);
    let b = kline_batches(&rows, 1_000);
    // One series.
    let key = fx.kline_series("RACE2", "1m");
    let path = vec!["kline".to_string(), "RACE2".into(), "1m".into()];
    let k = key.clone();
    let err = put_with_pause(&mut fx, path, b[0].clone(), b[1].clone(), move |e| {
        e.delete_series(&k).unwrap();
        register_race(e, "RACE2", 10_000);
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, FlightError::Tonic(s) if s.code() == Code::NotFound && s.message().contains("deleted")),
        "{err:?}"
    );
    let series = fx.engine().series(&key).unwrap();
    assert_eq!(series.meta.price_scale, 10_000);
    assert_eq!(
        series.snapshot().rows(),
        0,
        "nothing of the old stream landed in the new series"
    );
    // Many series ("*"): the re-registered symbol fails the whole write.
    fx.kline_series("RACEA", "1m");
    let key_b = fx.kline_series("RACEB", "1m");
    let many = |symbol: &str| {
        let mut fields = vec![Field::new("symbol", DataType::Utf8, false), ts_field()];
        fields.extend(
            KLINE_NAMES[1..]
                .iter()
                .map(|n| Field::new(*n, DataType::Int64, false)),
        );
        let cols = kline_cols(&rows[..10]);
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(arrow_array::StringArray::from(vec![symbol; 10])),
            Arc::new(TimestampMillisecondArray::from(cols[0].clone()).with_timezone("UTC")),
        ];
        arrays.extend(
            cols[1..]
                .iter()
                .map(|c| Arc::new(Int64Array::from(c.clone())) as ArrayRef),
        );
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    };
    let path = vec!["kline".to_string(), "*".into(), "1m".into()];
    let kb = key_b.clone();
    let err = put_with_pause(&mut fx, path, many("RACEA"), many("RACEB"), move |e| {
        e.delete_series(&kb).unwrap();
        register_race(e, "RACEB", 10_000);
    })
    .await
    .unwrap_err();
    assert!(
        matches!(&err, FlightError::Tonic(s) if s.code() == Code::NotFound && s.message().contains("RACEB")),
        "{err:?}"
    );
    for k in [SeriesKey::kline("RACEA", "1m").unwrap(), key_b] {
        assert_eq!(
            fx.engine().series(&k).unwrap().snapshot().rows(),
            0,
            "{k}: all or nothing"
        );
    }
    // Unraced, the same streams write.
    let path = vec!["kline".to_string(), "RACE2".into(), "1m".into()];
    let ok = put_with_pause(&mut fx, path, b[0].clone(), b[1].clone(), |_| {})
        .await
        .unwrap();
    assert_eq!(response(&ok).written, 2_000);
    fx.shutdown().await;
}

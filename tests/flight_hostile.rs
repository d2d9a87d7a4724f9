//! Flight against clients that misbehave: uploads cancelled or timed out half-way,
//! readers that stop reading, bursts of writes over the memory budget, too many or idle
//! connections, and `latest: 0`. Each test opens with the story of its bug.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Empty, FlightData, FlightDescriptor, PutResult};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use common::*;
use fastk::query::Engine;
use fastk::record::{KlineRecord, SeriesKey, ValueType};
use futures::{TryStreamExt, stream};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// The bound on every wait for the server to settle (it frees streams, budget and
/// connections asynchronously); generous for a loaded machine, never asserted on.
const SETTLE: Duration = Duration::from_secs(60);

/// Polls `f` until it holds or [`SETTLE`] has passed.
async fn eventually(f: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < SETTLE {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    f()
}

/// A raw tonic Flight client on its own connection; `small_windows` makes its
/// HTTP/2 receive windows 64 KiB, so a client that does not read stalls the server
/// after a few batches.
async fn raw_client(addr: SocketAddr, small_windows: bool) -> FlightServiceClient<Channel> {
    let mut ep = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    if small_windows {
        ep = ep
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535);
    }
    FlightServiceClient::new(ep.connect().await.unwrap())
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

/// The DoPut messages of `rows` to `key`: descriptor and schema, then batches of `per`.
async fn put_messages(key: &SeriesKey, rows: &[KlineRecord], per: usize) -> Vec<FlightData> {
    let mut fields = vec![Field::new(
        "ts",
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    )];
    fields.extend(
        KLINE_NAMES[1..]
            .iter()
            .map(|n| Field::new(*n, DataType::Int64, false)),
    );
    let schema = Arc::new(Schema::new(fields));
    let batches: Vec<RecordBatch> = rows
        .chunks(per)
        .map(|part| {
            let cols = kline_cols(part);
            let mut arrays: Vec<ArrayRef> = vec![Arc::new(
                TimestampMillisecondArray::from(cols[0].clone()).with_timezone("UTC"),
            )];
            arrays.extend(
                cols[1..]
                    .iter()
                    .map(|c| Arc::new(Int64Array::from(c.clone())) as ArrayRef),
            );
            RecordBatch::try_new(Arc::clone(&schema), arrays).unwrap()
        })
        .collect();
    FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(key.parts())))
        .build(stream::iter(batches.into_iter().map(Ok)))
        .try_collect()
        .await
        .unwrap()
}

/// A DoPut whose messages have all been sent but whose stream the client keeps open
/// (no half-close). Dropping the sender would end the stream normally.
struct OpenPut {
    call: tokio::task::JoinHandle<Result<Vec<PutResult>, tonic::Status>>,
    _tx: mpsc::Sender<FlightData>,
    /// The connection outlives the call, so aborting the call resets only its stream
    /// (`RST_STREAM(CANCEL)`), as a client's cancel or deadline does.
    _conn: FlightServiceClient<Channel>,
}

async fn open_put(addr: SocketAddr, msgs: Vec<FlightData>, timeout: Option<Duration>) -> OpenPut {
    let (tx, rx) = mpsc::channel(msgs.len() + 1);
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    let conn = raw_client(addr, false).await;
    let mut raw = conn.clone();
    let call = tokio::spawn(async move {
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(t) = timeout {
            req.set_timeout(t);
        }
        let resp = raw.do_put(req).await?;
        resp.into_inner().try_collect().await
    });
    OpenPut {
        call,
        _tx: tx,
        _conn: conn,
    }
}

/// Budget bytes a DoPut of `rows` kline rows reserves (Arrow bytes, twice).
fn put_bytes(rows: u64) -> u64 {
    rows * 6 * 8 * 2
}

fn streams_open(engine: &Engine) -> u64 {
    engine.metrics.flight_streams_open.load(Ordering::Relaxed) as u64
}

/// Story: tonic's request decoder reports a client's `RST_STREAM(CANCEL)` as a clean
/// end of the stream, so a client that sent five batches of a DoPut and then cancelled
/// the call (or let its own deadline expire) without half-closing got all 50,000 rows
/// committed. Now the route watches the raw body, and only a stream the client ended
/// normally is written; a cancel and an expired deadline write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_timed_out_put_writes_nothing() {
    let fx = Fixture::start(|_| {}).await;
    let addr = fx.running.flight_addr;
    let engine = Arc::clone(&fx.running.engine);
    let key = fx.kline_series("BTCUSDT", "1m");
    let rows = klines(JAN_2024, 50_000, MINUTE, 1);
    let msgs = put_messages(&key, &rows, 10_000).await;
    assert_eq!(msgs.len(), 6, "schema and five batches");

    // 1. The client cancels the call once the server holds all five batches (they are
    // counted against the write budget as they arrive).
    let put = open_put(addr, msgs.clone(), None).await;
    assert!(eventually(|| engine.write_budget.used_bytes() >= put_bytes(50_000)).await);
    put.call.abort();
    assert!(
        eventually(|| engine.write_budget.used_bytes() == 0 && streams_open(&engine) == 0).await
    );
    let info = engine.series_info(&key).unwrap();
    assert_eq!(
        (info.rows, info.version),
        (0, 0),
        "a cancelled DoPut wrote rows"
    );

    // 2. The client's deadline expires while it keeps the stream open: the request
    // carries grpc-timeout and the client gives up at the same moment.
    let put = open_put(addr, msgs.clone(), Some(Duration::from_secs(1))).await;
    assert!(eventually(|| engine.write_budget.used_bytes() >= put_bytes(50_000)).await);
    let result = tokio::time::timeout(Duration::from_secs(2), put.call).await;
    if let Ok(Ok(r)) = result {
        let status = r.expect_err("a DoPut past its deadline must fail");
        assert!(
            matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
            "{status:?}"
        );
    }
    assert!(
        eventually(|| engine.write_budget.used_bytes() == 0 && streams_open(&engine) == 0).await
    );
    let info = engine.series_info(&key).unwrap();
    assert_eq!(
        (info.rows, info.version),
        (0, 0),
        "a timed-out DoPut wrote rows"
    );

    // 3. The same messages, half-closed normally, are one write.
    let put = open_put(addr, msgs, None).await;
    drop(put._tx);
    let results = put.call.await.unwrap().unwrap();
    assert_eq!(results.len(), 1);
    let info = engine.series_info(&key).unwrap();
    assert_eq!((info.rows, info.version), (50_000, 1));
    let text = engine.metrics_text();
    assert!(text.contains(r#"fastk_flight_requests_total{method="DoPut",code="Ok"} 1"#));
    fx.shutdown().await;
}

/// Story: DoGet and DoPut shared one pool of `flight.max_concurrent_streams` slots, and
/// a stream held its slot for as long as its client stayed connected. 64 DoGets that
/// read one batch and stopped reading made every other DoGet and DoPut `Unavailable`
/// for minutes. Now DoPut has its own pool, and a stream whose client accepts no
/// message for `flight.stall_timeout_s` is ended and its slot freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_are_ended_and_never_starve_writers() {
    let fx = Fixture::start(|c| {
        c.flight.max_batch_rows = 1000;
        c.flight.max_concurrent_streams = 3;
        c.flight.stall_timeout_s = 2;
    })
    .await;
    let addr = fx.running.flight_addr;
    let engine = Arc::clone(&fx.running.engine);
    let skey = fx.scalar_series("ETHUSDT", "score", ValueType::I64);
    let n = 200_000;
    let scalars: Vec<(i64, i64)> = (0..n as i64)
        .map(|i| (JAN_2024 + i * MINUTE, i % 97))
        .collect();
    fx.write_scalars(&skey, &scalars);
    let t = json!({"kind": "scalar", "symbol": "ETHUSDT", "timeframe": "1m", "category": "indicator", "name": "score"});

    // Fill the DoGet pool with readers that take one message and stop reading.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut c = raw_client(addr, true).await;
        let mut s = c.do_get(ticket(t.clone())).await.unwrap().into_inner();
        assert!(s.message().await.unwrap().is_some());
        stalled.push((c, s));
    }
    let mut other = client(addr).await;
    let err = get(&mut other, t.clone()).await.unwrap_err();
    assert_eq!(code(&err), Code::Unavailable, "the DoGet pool is full");

    // A DoPut has a pool of its own: it succeeds while every DoGet slot is taken.
    let kkey = fx.kline_series("BTCUSDT", "1m");
    let msgs = put_messages(&kkey, &klines(JAN_2024, 1000, MINUTE, 2), 1000).await;
    let put = open_put(addr, msgs, None).await;
    drop(put._tx);
    put.call
        .await
        .unwrap()
        .expect("DoPut beside a full DoGet pool");
    assert_eq!(engine.series_info(&kkey).unwrap().rows, 1000);

    // After the stall timeout the stalled streams are ended and their slots freed.
    assert!(
        eventually(|| streams_open(&engine) == 0).await,
        "stalled streams still hold their slots"
    );
    let all = get(&mut other, t.clone()).await.unwrap();
    assert_eq!(all.iter().map(|b| b.num_rows()).sum::<usize>(), n);

    // A stalled client that reads on gets what was already in flight, then the end.
    for (_c, mut s) in stalled {
        let status = loop {
            match s.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a stalled stream ended as if it were complete"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert!(status.message().contains("stall_timeout_s"));
    }
    let text = engine.metrics_text();
    assert!(
        text.contains(r#"fastk_flight_requests_total{method="DoGet",code="DeadlineExceeded"} 3"#),
        "{text}"
    );
    fx.shutdown().await;
}

/// Story: in-flight writes had no memory bound: a DoPut buffers about twice its Arrow
/// size, and ten parallel 55 MB HTTP writes peaked at 1.2 GB. Now every write reserves
/// its estimate in `storage.max_inflight_write_bytes`; past it a write waits briefly,
/// then is refused (`Unavailable` / 503) with nothing stored, while reads go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_write_budget_is_refused_cleanly_while_reads_go_on() {
    let mut fx = Fixture::start(|c| {
        c.storage.max_inflight_write_bytes = 8 << 20;
        c.storage.write_budget_wait_ms = 200;
    })
    .await;
    let addr = fx.running.flight_addr;
    let http = format!("http://{}", fx.running.http_addr);
    let engine = Arc::clone(&fx.running.engine);
    let btc = fx.kline_series("BTCUSDT", "1m");
    let eth = fx.kline_series("ETHUSDT", "1m");
    fx.write_klines(&btc, &klines(JAN_2024, 5000, MINUTE, 3));

    // An upload that has sent 60,000 rows (5.5 MiB of the 8 MiB budget) and stays open.
    let hold_rows = klines(JAN_2024 + 10_000 * MINUTE, 60_000, MINUTE, 4);
    let hold = open_put(addr, put_messages(&btc, &hold_rows, 20_000).await, None).await;
    assert!(eventually(|| engine.write_budget.used_bytes() >= put_bytes(60_000)).await);
    let metrics = engine.metrics_text();
    assert!(
        metrics.contains("fastk_write_budget_limit_bytes 8388608"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("fastk_write_budget_used_bytes 0\n"),
        "the held upload's reservation shows in /metrics"
    );

    // A burst of uploads of 30,000 rows each (2.7 MiB, more than is left): refused.
    let burst_rows = klines(JAN_2024, 30_000, MINUTE, 5);
    let burst_msgs = put_messages(&eth, &burst_rows, 30_000).await;
    let mut burst = Vec::new();
    for _ in 0..4 {
        let put = open_put(addr, burst_msgs.clone(), None).await;
        burst.push(put);
    }
    for put in burst {
        drop(put._tx);
        let status = put.call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("max_inflight_write_bytes"));
    }
    // An HTTP write of 1 MB (3 MB reserved) is refused too, with the contract's body.
    let records: Vec<serde_json::Value> = burst_rows[..10_000]
        .iter()
        .map(|r| json!({"ts": r.ts, "open": r.open, "high": r.high, "low": r.low, "close": r.close, "volume": r.volume}))
        .collect();
    let body = json!({ "records": records }).to_string();
    assert!(body.len() > 800_000);
    let web = reqwest::Client::new();
    let url = format!("{http}/v1/kline/ETHUSDT/1m/records");
    let resp = web
        .post(&url)
        .body(body.clone())
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "unavailable");

    // Reads go on meanwhile, on both front ends.
    let read = get(
        &mut fx.client,
        json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m"}),
    )
    .await
    .unwrap();
    assert_eq!(read.iter().map(|b| b.num_rows()).sum::<usize>(), 5000);
    let resp = web
        .get(format!("{http}/v1/kline/BTCUSDT/1m/latest?n=3"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        engine.series_info(&eth).unwrap().rows,
        0,
        "nothing of the burst is stored"
    );

    // The held upload is cancelled: its memory returns and nothing of it is stored.
    hold.call.abort();
    assert!(eventually(|| engine.write_budget.used_bytes() == 0).await);
    assert!(
        engine
            .metrics_text()
            .contains("fastk_write_budget_used_bytes 0\n")
    );
    assert_eq!(engine.series_info(&btc).unwrap().rows, 5000);

    // With room again, the same writes succeed.
    let put = open_put(addr, burst_msgs, None).await;
    drop(put._tx);
    put.call
        .await
        .unwrap()
        .expect("DoPut with room in the budget");
    let resp = web
        .post(&url)
        .body(body)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // One upload larger than the whole budget can never fit: ResourceExhausted at once.
    let big = klines(JAN_2024, 100_000, MINUTE, 6);
    let put = open_put(addr, put_messages(&eth, &big, 20_000).await, None).await;
    drop(put._tx);
    let status = put.call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(engine.series_info(&eth).unwrap().rows, 30_000);
    assert!(
        eventually(|| engine.write_budget.used_bytes() == 0).await,
        "budget leaked"
    );
    fx.shutdown().await;
}

/// Story: the Flight listener took any number of connections and kept idle ones
/// forever, so a client could exhaust the process by opening connections. Now
/// `flight.max_connections` caps them (the ones past the cap are closed at accept,
/// the open ones keep being served) and HTTP `/health` answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_refused_and_health_answers() {
    let fx = Fixture::start(|c| c.flight.max_connections = 2).await;
    let addr = fx.running.flight_addr;
    // The fixture's own client holds one connection; this one takes the second.
    let mut second = raw_client(addr, false).await;
    second.list_actions(Empty {}).await.unwrap();

    let status = raw_client_lazy(addr)
        .list_actions(Empty {})
        .await
        .unwrap_err();
    // A transport error: tonic reports the closed connection as Unknown, or as
    // Cancelled when the close races the request it was writing; gRPC C++ clients
    // as Unavailable.
    assert!(
        matches!(
            status.code(),
            Code::Unknown | Code::Cancelled | Code::Unavailable
        ),
        "{status:?}"
    );
    let health = reqwest::get(format!("http://{}/health", fx.running.http_addr))
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        200,
        "/health answers while the Flight cap is hit"
    );
    second
        .list_actions(Empty {})
        .await
        .expect("open connections are still served");

    // A closed connection gives its slot back.
    drop(second);
    assert!(
        served_eventually(addr).await,
        "the closed connection's slot never came back"
    );
    fx.shutdown().await;
}

/// Story: an idle Flight connection was kept forever. Now one with no call in progress
/// for `flight.idle_timeout_s` is closed. With a cap of one connection, held idle by
/// the fixture's client, a second client can only ever be served once the server has
/// closed that idle connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let fx = Fixture::start(|c| {
        c.flight.max_connections = 1;
        c.flight.idle_timeout_s = 1;
    })
    .await;
    assert!(
        served_eventually(fx.running.flight_addr).await,
        "the idle connection was never closed"
    );
    fx.shutdown().await;
}

/// Tries a call on a new connection every 100 ms until one is served (or [`SETTLE`]).
async fn served_eventually(addr: SocketAddr) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < SETTLE {
        if raw_client_lazy(addr).list_actions(Empty {}).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A client whose connection is made on its first call (a refused connection is then
/// that call's `Unavailable`, not a panic in the test's connect).
fn raw_client_lazy(addr: SocketAddr) -> FlightServiceClient<Channel> {
    let ep = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    FlightServiceClient::new(ep.connect_lazy())
}

/// Story: HTTP `latest?n=0` is a 400, but a Flight ticket with `latest: 0` streamed an
/// empty result, so the two front ends disagreed about the same request. Both now
/// refuse it as `invalid_argument` / `InvalidArgument`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_zero_is_invalid_on_both_front_ends() {
    let mut fx = Fixture::start(|_| {}).await;
    let key = fx.kline_series("BTCUSDT", "1m");
    fx.write_klines(&key, &klines(JAN_2024, 100, MINUTE, 1));
    let skey = fx.scalar_series("ETHUSDT", "rsi", ValueType::I64);
    fx.write_scalars(&skey, &[(JAN_2024, 5), (JAN_2024 + MINUTE, 80)]);

    for t in [
        json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m", "latest": 0}),
        json!({"kind": "scalar", "symbol": "ETHUSDT", "timeframe": "1m", "category": "indicator",
               "name": "rsi", "latest": 0, "predicate": {"op": "gt", "value": 1}}),
    ] {
        let err = get(&mut fx.client, t.clone()).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{t}");
        assert!(message(&err).contains("latest must be at least 1"), "{t}");
        let d = FlightDescriptor::new_cmd(t.to_string());
        let err = fx.client.get_flight_info(d).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{t}");
    }
    // latest: 1 still reads the last row.
    let one = get(
        &mut fx.client,
        json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m", "latest": 1}),
    )
    .await
    .unwrap();
    assert_eq!(one.iter().map(|b| b.num_rows()).sum::<usize>(), 1);

    let http = format!("http://{}", fx.running.http_addr);
    let resp = reqwest::get(format!("{http}/v1/kline/BTCUSDT/1m/latest?n=0"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_argument");
    fx.shutdown().await;
}

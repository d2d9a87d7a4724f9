//! SIGKILL of a real `fastk serve` process under concurrent HTTP and Flight writes,
//! repeated at random points. After each kill the store is reopened: every
//! acknowledged write is readable, every write is all-or-nothing, no temp file
//! survives, and a deep validation is clean.
//!
//! Quick by default (3 kills); `FASTK_TEST_LONG=1` runs 15.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightClient, FlightDescriptor};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use common::{MINUTE, engine_with};
use fastk::query::Engine;
use fastk::record::{SeriesKey, TsRange};
use futures::TryStreamExt;

const BASE: i64 = 1_600_000_000_000;
const HTTP_ROWS: i64 = 400;
const FLIGHT_ROWS: i64 = 3000;
const HTTP_WINDOW: i64 = 1000;
const FLIGHT_WINDOW: i64 = 5000;

fn spawn_server(root: &Path) -> common::ServerProcess {
    common::spawn_server(root, &[])
}

fn kline_body(i: i64) -> serde_json::Value {
    let start = BASE + i * HTTP_WINDOW * MINUTE;
    let recs: Vec<_> = (0..HTTP_ROWS)
        .map(|k| serde_json::json!({"ts": start + k * MINUTE, "open": i, "high": i + 5, "low": i - 5, "close": i, "volume": k}))
        .collect();
    serde_json::json!({ "records": recs })
}

fn scalar_batch(i: i64) -> RecordBatch {
    let start = BASE + i * FLIGHT_WINDOW * MINUTE;
    let schema = Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("value", DataType::Int64, false),
    ]));
    let ts =
        TimestampMillisecondArray::from_iter_values((0..FLIGHT_ROWS).map(|k| start + k * MINUTE))
            .with_timezone("UTC");
    let v = Int64Array::from_iter_values((0..FLIGHT_ROWS).map(|k| i << 20 | k));
    RecordBatch::try_new(schema, vec![Arc::new(ts), Arc::new(v)]).unwrap()
}

async fn http_writer(base: String, mut i: i64, acked: Arc<Mutex<BTreeSet<i64>>>) {
    let client = reqwest::Client::new();
    loop {
        let url = format!("{base}/v1/kline/CRASH/1m/records");
        match client.post(&url).json(&kline_body(i)).send().await {
            Ok(r) if r.status().is_success() => {
                acked.lock().unwrap().insert(i);
                i += 1;
            }
            _ => return,
        }
    }
}

async fn flight_writer(addr: String, mut i: i64, acked: Arc<Mutex<BTreeSet<i64>>>) {
    let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
    else {
        return;
    };
    let mut client = FlightClient::new(channel);
    loop {
        let desc = FlightDescriptor::new_path(vec![
            "scalar".into(),
            "CRASH".into(),
            "1m".into(),
            "signal".into(),
            "s".into(),
        ]);
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(desc))
            .build(futures::stream::iter(vec![Ok(scalar_batch(i))]));
        let put = async { client.do_put(data).await?.try_collect::<Vec<_>>().await };
        match put.await {
            Ok(_) => {
                acked.lock().unwrap().insert(i);
                i += 1;
            }
            Err(_) => return,
        }
    }
}

async fn register(base: &str) {
    let c = reqwest::Client::new();
    let r = c.post(format!("{base}/v1/kline/series")).json(&serde_json::json!({"symbol": "CRASH", "timeframe": "1m", "price_scale": 1, "volume_scale": 1})).send().await.unwrap();
    assert!(r.status().is_success(), "register kline: {}", r.status());
    let r = c.post(format!("{base}/v1/scalar/series")).json(&serde_json::json!({"symbol": "CRASH", "timeframe": "1m", "category": "signal", "name": "s"})).send().await.unwrap();
    assert!(r.status().is_success(), "register scalar: {}", r.status());
}

/// Rows per window present in a series, with the window's tag taken from column 1.
fn windows(
    e: &Engine,
    key: &SeriesKey,
    width: i64,
    tag: impl Fn(i64) -> i64,
) -> BTreeMap<i64, (i64, bool)> {
    let page = e.read(key, TsRange::all(), usize::MAX).unwrap();
    let mut out: BTreeMap<i64, (i64, bool)> = BTreeMap::new();
    for s in &page.slices {
        for (ts, v) in s.ts().iter().zip(s.col(1)) {
            let w = (ts - BASE) / (width * MINUTE);
            let entry = out.entry(w).or_insert((0, true));
            entry.0 += 1;
            entry.1 &= tag(*v) == w;
        }
    }
    out
}

fn verify(
    root: &Path,
    http_acked: &BTreeSet<i64>,
    flight_acked: &BTreeSet<i64>,
    round: usize,
) -> (i64, i64) {
    let e = engine_with(root, |_| {});
    let kw = windows(
        &e,
        &SeriesKey::kline("CRASH", "1m").unwrap(),
        HTTP_WINDOW,
        |v| v,
    );
    let sw = windows(
        &e,
        &SeriesKey::scalar("CRASH", "1m", "signal", "s").unwrap(),
        FLIGHT_WINDOW,
        |v| v >> 20,
    );
    for (name, acked, seen, rows) in [
        ("http", http_acked, &kw, HTTP_ROWS),
        ("flight", flight_acked, &sw, FLIGHT_ROWS),
    ] {
        for i in acked {
            assert_eq!(
                seen.get(i),
                Some(&(rows, true)),
                "round {round}: acknowledged {name} write {i} lost or damaged"
            );
        }
        for (w, (n, tagged)) in seen {
            assert!(
                *n == rows && *tagged,
                "round {round}: {name} write {w} is partial ({n} of {rows} rows)"
            );
        }
    }
    let report = common::validate_deep(&e);
    assert!(report.clean, "round {round}: {:#?}", report.findings);
    for s in e.store.list() {
        for f in std::fs::read_dir(s.dir()).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().to_string();
            assert!(
                !name.starts_with(".tmp-"),
                "round {round}: temp file {name} leaked"
            );
        }
    }
    let next = |m: &BTreeMap<i64, (i64, bool)>| m.keys().next_back().map_or(0, |k| k + 1);
    (next(&kw), next(&sw))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_concurrent_http_and_flight_writes() {
    let rounds = if std::env::var("FASTK_TEST_LONG").is_ok_and(|v| v == "1") {
        15
    } else {
        3
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut next_http, mut next_flight) = (0i64, 0i64);
    let mut seed: u64 = 0x1234_5678;
    let (mut total_http, mut total_flight) = (0, 0);
    for round in 0..rounds {
        let mut server = spawn_server(dir.path());
        let base = format!("http://{}", server.http);
        register(&base).await;
        let http_acked = Arc::new(Mutex::new(BTreeSet::new()));
        let flight_acked = Arc::new(Mutex::new(BTreeSet::new()));
        let h = tokio::spawn(http_writer(base, next_http, Arc::clone(&http_acked)));
        let f = tokio::spawn(flight_writer(
            server.flight.clone(),
            next_flight,
            Arc::clone(&flight_acked),
        ));
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(300 + seed % 900)).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(30), h).await;
        let _ = tokio::time::timeout(Duration::from_secs(30), f).await;
        let (ha, fa) = (
            http_acked.lock().unwrap().clone(),
            flight_acked.lock().unwrap().clone(),
        );
        total_http += ha.len();
        total_flight += fa.len();
        let root = dir.path().to_path_buf();
        let (nh, nf) = tokio::task::spawn_blocking(move || verify(&root, &ha, &fa, round))
            .await
            .unwrap();
        next_http = nh.max(next_http);
        next_flight = nf.max(next_flight);
    }
    assert!(
        total_http > 0 && total_flight > 0,
        "both writers must have been acknowledged at least once ({total_http}, {total_flight})"
    );
}

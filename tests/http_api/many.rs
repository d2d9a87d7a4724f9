//! Many series in one write over HTTP (`POST /v1/kline/records`, `/v1/scalar/records`):
//! one all-or-nothing unit, readable at once, with its errors naming the series.

use serde_json::{Value, json};

use crate::common::{JAN_2024, MINUTE, app};

fn bar(symbol: &str, i: i64) -> Value {
    let open = 4_200_000 + i;
    json!({"symbol": symbol, "ts": JAN_2024 + i * MINUTE, "open": open,
        "high": open + 5, "low": open - 5, "close": open + 1, "volume": 1000 + i})
}

#[tokio::test]
async fn kline_many_write_is_one_unit_and_readable_at_once() {
    let app = app();
    for s in ["AAA", "BBB", "CCC"] {
        app.register_kline(s).await;
    }
    // One minute of every symbol, twice (the second minute replaces BBB's first bar too).
    let first: Vec<Value> = ["AAA", "BBB", "CCC"].iter().map(|s| bar(s, 0)).collect();
    let r = app
        .post(
            "/v1/kline/records",
            &json!({"timeframe": "1m", "records": first}),
        )
        .await
        .expect(200);
    assert_eq!(
        (
            r["written"].as_u64(),
            r["inserted"].as_u64(),
            r["replaced"].as_u64()
        ),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(
        r["series"],
        json!([{"symbol": "AAA", "version": 1}, {"symbol": "BBB", "version": 1}, {"symbol": "CCC", "version": 1}])
    );
    let mut again = vec![bar("CCC", 1), bar("AAA", 1), bar("BBB", 1)];
    let mut replaced = bar("BBB", 0);
    replaced["close"] = json!(4_200_003);
    again.push(replaced);
    let r = app
        .post(
            "/v1/kline/records",
            &json!({"timeframe": "1m", "records": again}),
        )
        .await
        .expect(200);
    assert_eq!(
        (r["written"].as_u64(), r["replaced"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(
        r["series"][0],
        json!({"symbol": "CCC", "version": 2}),
        "order of first appearance"
    );
    let b = app.get("/v1/kline/BBB/1m/records").await.expect(200);
    let recs = b["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["close"], 4_200_003);
    let latest = app.get("/v1/kline/AAA/1m/latest?n=1").await.expect(200);
    assert_eq!(latest["records"][0]["ts"], JAN_2024 + MINUTE);
    // The series' metadata counts the unfolded rows (written through the log).
    let info = app.get("/v1/kline/AAA/1m").await.expect(200);
    assert_eq!(info["rows"], 2);
    let inv = app.get("/inventory?partitions=false").await.expect(200);
    assert!(inv["log"]["bytes"].as_u64().unwrap() > 0, "{inv}");
    let metrics = app.get("/metrics").await.text();
    assert!(metrics.contains("fastk_wal_records_total"), "{metrics}");
}

#[tokio::test]
async fn a_bad_row_anywhere_writes_nothing() {
    let app = app();
    for s in ["AAA", "BBB"] {
        app.register_kline(s).await;
    }
    // An unknown symbol: 404 naming it.
    let body = json!({"timeframe": "1m", "records": [bar("AAA", 0), bar("ZZZ", 0)]});
    let msg = app
        .post("/v1/kline/records", &body)
        .await
        .expect_error(404, "not_found");
    assert!(msg.contains("ZZZ"), "{msg}");
    // A (symbol, ts) repeated: 422.
    let body = json!({"timeframe": "1m", "records": [bar("AAA", 0), bar("BBB", 0), bar("BBB", 0)]});
    let msg = app
        .post("/v1/kline/records", &body)
        .await
        .expect_error(422, "unprocessable");
    assert!(msg.contains("BBB"), "{msg}");
    // An OHLC violation in one series.
    let mut broken = bar("BBB", 1);
    broken["high"] = json!(1);
    let body = json!({"timeframe": "1m", "records": [bar("AAA", 1), broken]});
    app.post("/v1/kline/records", &body)
        .await
        .expect_error(422, "unprocessable");
    // A bad symbol name and an unknown field: 400.
    let body = json!({"timeframe": "1m", "records": [bar("a/b", 0)]});
    app.post("/v1/kline/records", &body)
        .await
        .expect_error(400, "invalid_argument");
    let body = json!({"timeframe": "1m", "records": [], "extra": 1});
    app.post("/v1/kline/records", &body)
        .await
        .expect_error(400, "invalid_argument");
    for s in ["AAA", "BBB"] {
        let r = app.get(&format!("/v1/kline/{s}/1m")).await.expect(200);
        assert_eq!(
            (r["rows"].as_u64(), r["version"].as_u64()),
            (Some(0), Some(0)),
            "{s}"
        );
    }
    // Nothing to write is a no-op.
    let r = app
        .post(
            "/v1/kline/records",
            &json!({"timeframe": "1m", "records": []}),
        )
        .await
        .expect(200);
    assert_eq!(r["written"], 0);
}

#[tokio::test]
async fn scalar_many_write_parses_each_series_value_type() {
    let app = app();
    app.register_scalar("AAA", "rsi", "f64").await;
    app.register_scalar("BBB", "rsi", "i64").await;
    let body = json!({"timeframe": "1m", "category": "indicator", "name": "rsi", "records": [
        {"symbol": "AAA", "ts": JAN_2024, "value": 71.25},
        {"symbol": "BBB", "ts": JAN_2024, "value": 7},
        {"symbol": "AAA", "ts": JAN_2024 + MINUTE, "value": null}]});
    let r = app.post("/v1/scalar/records", &body).await.expect(200);
    assert_eq!(r["written"], 3);
    let a = app
        .get("/v1/scalar/AAA/1m/indicator/rsi/records")
        .await
        .expect(200);
    assert_eq!(a["records"][0]["value"], 71.25);
    let b = app
        .get("/v1/scalar/BBB/1m/indicator/rsi/records")
        .await
        .expect(200);
    assert_eq!(b["records"][0]["value"], 7);
    // 7.5 into the i64 series: 400 naming the record, and AAA's row is not written.
    let body = json!({"timeframe": "1m", "category": "indicator", "name": "rsi", "records": [
        {"symbol": "AAA", "ts": JAN_2024 + 2 * MINUTE, "value": 1.0},
        {"symbol": "BBB", "ts": JAN_2024 + MINUTE, "value": 7.5}]});
    let msg = app
        .post("/v1/scalar/records", &body)
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("record 1"), "{msg}");
    let a = app.get("/v1/scalar/AAA/1m/indicator/rsi").await.expect(200);
    assert_eq!(a["rows"], 2);
}

#[tokio::test]
async fn batch_registration_is_all_or_nothing_and_idempotent() {
    let app = app();
    app.register_kline("AAA").await;
    let body = |syms: &[&str], scale: i64| {
        json!({"series": syms.iter().map(|s| json!({"symbol": s, "timeframe": "1m",
            "price_scale": scale, "volume_scale": 1000})).collect::<Vec<_>>()})
    };
    let syms: Vec<String> = (0..300).map(|i| format!("S{i:04}")).collect();
    let refs: Vec<&str> = syms.iter().map(String::as_str).chain(["AAA"]).collect();
    let r = app
        .post("/v1/kline/series/many", &body(&refs, 100))
        .await
        .expect(200);
    assert_eq!(
        (r["created"].as_u64(), r["existing"].as_u64()),
        (Some(300), Some(1))
    );
    let r = app
        .post("/v1/kline/series/many", &body(&refs, 100))
        .await
        .expect(200);
    assert_eq!(
        (r["created"].as_u64(), r["existing"].as_u64()),
        (Some(0), Some(301))
    );
    let list = app.get("/v1/kline/series").await.expect(200);
    assert_eq!(list["series"].as_array().unwrap().len(), 301);
    // Every new series takes writes at once.
    app.post(
        "/v1/kline/records",
        &json!({"timeframe": "1m", "records": [bar("S0299", 0)]}),
    )
    .await
    .expect(200);
    // A conflict (AAA with another scale) fails the whole batch: NEW0 is not made.
    let msg = app
        .post("/v1/kline/series/many", &body(&["NEW0", "AAA"], 7))
        .await
        .expect_error(409, "conflict");
    assert!(msg.contains("AAA"), "{msg}");
    app.get("/v1/kline/NEW0/1m")
        .await
        .expect_error(404, "not_found");
    // A bad name names its index; a key twice is refused.
    let msg = app
        .post("/v1/kline/series/many", &body(&["OK1", "a/b"], 100))
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("series 1"), "{msg}");
    app.post("/v1/kline/series/many", &body(&["DUP", "DUP"], 100))
        .await
        .expect_error(400, "invalid_argument");
    app.get("/v1/kline/OK1/1m")
        .await
        .expect_error(404, "not_found");
    // Scalars, with a retention.
    let r = app
        .post("/v1/scalar/series/many", &json!({"series": [
            {"symbol": "AAA", "timeframe": "1m", "category": "indicator", "name": "rsi", "value_type": "f64", "retention_ms": 86400000},
            {"symbol": "BBB", "timeframe": "1m", "category": "indicator", "name": "rsi"}]}))
        .await
        .expect(200);
    assert_eq!(r["created"], 2);
    let a = app.get("/v1/scalar/AAA/1m/indicator/rsi").await.expect(200);
    assert_eq!(a["retention_ms"], 86400000);
}

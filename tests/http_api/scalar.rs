//! Scalar series: i64 and f64 values, type checks, reads, latest and predicate queries.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::common::{JAN_2024, MINUTE, app};

const RSI: &str = "/v1/scalar/BTCUSDT/1m/indicator/rsi_14";
const COUNT: &str = "/v1/scalar/BTCUSDT/1m/metric/trades";

#[derive(Deserialize)]
struct RawRecord<'a> {
    ts: i64,
    #[serde(borrow)]
    value: &'a RawValue,
}

#[derive(Deserialize)]
struct RawPage<'a> {
    #[serde(borrow)]
    records: Vec<RawRecord<'a>>,
}

fn ts(i: i64) -> i64 {
    JAN_2024 + i * MINUTE
}

#[tokio::test]
async fn scalar_registration_and_listing() {
    let app = app();
    let info = app.register_scalar("BTCUSDT", "rsi_14", "f64").await;
    assert_eq!(info["kind"], "scalar");
    assert_eq!(info["category"], "indicator");
    assert_eq!(info["value_type"], "f64");
    assert!(info.get("price_scale").is_none());
    let body = json!({"symbol": "BTCUSDT", "timeframe": "1m", "category": "indicator",
        "name": "rsi_14", "value_type": "f64"});
    app.post("/v1/scalar/series", &body).await.expect(200);
    let differs = json!({"symbol": "BTCUSDT", "timeframe": "1m", "category": "indicator",
        "name": "rsi_14"});
    app.post("/v1/scalar/series", &differs)
        .await
        .expect_error(409, "conflict");
    let list = app.get("/v1/scalar/series").await.expect(200);
    assert_eq!(list["series"].as_array().unwrap().len(), 1);
    assert_eq!(app.get(RSI).await.expect(200)["name"], "rsi_14");
    assert_eq!(app.delete(RSI).await.status.as_u16(), 204);
    app.get(RSI).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn f64_values_round_trip_exactly_and_nan_reads_as_null() {
    let app = app();
    app.register_scalar("BTCUSDT", "rsi_14", "f64").await;
    let values: [f64; 5] = [71.25, -0.1, 1e-300, 123_456_789.123_456_78, 3.0];
    let mut records: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"ts": ts(i as i64), "value": v}))
        .collect();
    // An integer is a valid f64 value; null stores NaN.
    records.push(json!({"ts": ts(5), "value": 7}));
    records.push(json!({"ts": ts(6), "value": null}));
    let w = app
        .post(&format!("{RSI}/records"), &json!({"records": records}))
        .await
        .expect(200);
    assert_eq!(w["written"], 7);
    let r = app.get(&format!("{RSI}/records")).await;
    // The value texts are parsed with std's correctly rounded parser: serde_json's
    // default float parser may be one ulp off, which would hide a server-side error.
    let page: RawPage<'_> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(page.records.len(), 7);
    for (i, v) in values.iter().enumerate() {
        assert_eq!(page.records[i].ts, ts(i as i64));
        let got: f64 = page.records[i].value.get().parse().unwrap();
        assert_eq!(got.to_bits(), v.to_bits(), "{}", page.records[i].value);
    }
    assert_eq!(page.records[5].value.get().parse::<f64>().unwrap(), 7.0);
    assert_eq!(page.records[6].value.get(), "null");
    let rows = r.json()["records"].as_array().unwrap().clone();
    let latest = app.get(&format!("{RSI}/latest?n=2")).await.expect(200);
    assert_eq!(latest["records"], json!([rows[5], rows[6]]));
}

#[tokio::test]
async fn i64_series_takes_only_integers() {
    let app = app();
    let body =
        json!({"symbol": "BTCUSDT", "timeframe": "1m", "category": "metric", "name": "trades"});
    app.post("/v1/scalar/series", &body).await.expect(201);
    let records =
        json!({"records": [{"ts": ts(1), "value": i64::MAX}, {"ts": ts(0), "value": -5}]});
    app.post(&format!("{COUNT}/records"), &records)
        .await
        .expect(200);
    let page = app.get(&format!("{COUNT}/records")).await.expect(200);
    assert_eq!(
        page["records"],
        json!([{"ts": ts(0), "value": -5}, {"ts": ts(1), "value": i64::MAX}])
    );
    for (bad, why) in [
        (json!(1.5), "not a 64-bit integer"),
        (json!(u64::MAX), "not a 64-bit integer"),
        (json!(null), "not a 64-bit integer"),
        (json!("7"), "not a 64-bit integer"),
        (json!(1e3), "not a 64-bit integer"),
    ] {
        let body = json!({"records": [{"ts": ts(2), "value": 1}, {"ts": ts(3), "value": bad}]});
        let msg = app
            .post(&format!("{COUNT}/records"), &body)
            .await
            .expect_error(400, "invalid_argument");
        assert!(msg.contains(why), "{bad}: {msg}");
    }
    let missing = json!({"records": [{"ts": ts(4)}]});
    let msg = app
        .post(&format!("{COUNT}/records"), &missing)
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("missing field `value`"), "{msg}");
    let text = json!({"records": [{"ts": ts(4), "value": "7"}]});
    app.register_scalar("BTCUSDT", "rsi_14", "f64").await;
    let msg = app
        .post("/v1/scalar/BTCUSDT/1m/indicator/rsi_14/records", &text)
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("must be a number or null"), "{msg}");
    let dup = json!({"records": [{"ts": ts(4), "value": 1}, {"ts": ts(4), "value": 2}]});
    app.post(&format!("{COUNT}/records"), &dup)
        .await
        .expect_error(422, "unprocessable");
    let info = app.get(COUNT).await.expect(200);
    assert_eq!(info["rows"], 2, "rejected writes changed nothing");
}

#[tokio::test]
async fn query_returns_matches_values_and_stats() {
    let app = app();
    app.register_scalar("BTCUSDT", "rsi_14", "f64").await;
    let records: Vec<Value> = (0..500)
        .map(|i| json!({"ts": ts(i), "value": (i % 100) as f64}))
        .collect();
    app.post(&format!("{RSI}/records"), &json!({"records": records}))
        .await
        .expect(200);
    let q = json!({"predicate": {"op": "gte", "value": 98}, "return_values": true});
    let r = app.post(&format!("{RSI}/query"), &q).await.expect(200);
    let want: Vec<i64> = (0..500).filter(|i| i % 100 >= 98).map(ts).collect();
    assert_eq!(r["timestamps"], json!(want));
    assert_eq!(r["values"].as_array().unwrap().len(), want.len());
    assert!(
        r["values"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_f64() >= Some(98.0))
    );
    let stats = &r["stats"];
    for field in [
        "chunks_total",
        "chunks_pruned",
        "blocks_total",
        "blocks_pruned",
        "rows_checked",
        "rows_matched",
    ] {
        assert!(stats[field].is_u64(), "{field}: {stats}");
    }
    assert_eq!(stats["rows_matched"], want.len());
    assert!(stats["index_used"].is_string());
    // Without return_values there is no `values`; a range and a limit apply.
    let q = json!({"start_ts": ts(100), "end_ts": ts(299), "limit": 2,
        "predicate": {"op": "between", "min": 10, "max": 11}});
    let r = app.post(&format!("{RSI}/query"), &q).await.expect(200);
    assert_eq!(r["timestamps"], json!([ts(110), ts(111)]));
    assert!(r.get("values").is_none());
    let next = r["next_start_ts"]
        .as_i64()
        .expect("a limited query pages on");
    let q = json!({"start_ts": next, "end_ts": ts(299), "limit": 2,
        "predicate": {"op": "between", "min": 10, "max": 11}});
    let r = app.post(&format!("{RSI}/query"), &q).await.expect(200);
    assert_eq!(r["timestamps"], json!([ts(210), ts(211)]));
    let in_q = json!({"predicate": {"op": "in", "values": [5, 6]}});
    let r = app.post(&format!("{RSI}/query"), &in_q).await.expect(200);
    assert_eq!(r["timestamps"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn query_errors() {
    let app = app();
    app.register_scalar("BTCUSDT", "rsi_14", "f64").await;
    let missing = "/v1/scalar/ETHUSDT/1m/indicator/rsi_14/query";
    let q = json!({"predicate": {"op": "gt", "value": 1}});
    app.post(missing, &q).await.expect_error(404, "not_found");
    for bad in [
        json!({"predicate": {"op": "like", "value": 1}}),
        json!({"predicate": {"op": "gt"}}),
        json!({"predicate": {"op": "gt", "value": 1}, "extra": true}),
        json!({"predicate": {"op": "gt", "value": 1}, "limit": 0}),
        json!({"predicate": {"op": "gt", "value": 1}, "start_ts": 5, "end_ts": 4}),
        json!({}),
    ] {
        app.post(&format!("{RSI}/query"), &bad)
            .await
            .expect_error(400, "invalid_argument");
    }
}

//! Market queries over HTTP: resample on a records read, batch reads (as-of, limits,
//! resample), the aligned view and coverage, with their errors. The answers are
//! checked against what was written; the engine's models are in `tests/market.rs`.

use serde_json::{Value, json};

use crate::common::{HOUR, JAN_2024, MINUTE, app_with, klines};

/// The `indicator.rsi` column of an aligned view's records.
fn rsi_column(view: &Value) -> Vec<Value> {
    view["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["indicator.rsi"].clone())
        .collect()
}

async fn with_data(max_batch_series: usize) -> crate::common::App {
    let app = app_with(|c| {
        c.http.max_batch_series = max_batch_series;
        c.http.max_limit = 500;
        c.http.default_limit = 100;
    });
    for sym in ["AAA", "BBB", "CCC"] {
        app.register_kline(sym).await;
        // 300 bars from 2024-01-01 00:00, one per minute; BBB misses 00:10-00:19.
        let records: Vec<Value> = klines(300)
            .into_iter()
            .filter(|r| {
                sym != "BBB"
                    || !(10..20).contains(&((r["ts"].as_i64().unwrap() - JAN_2024) / MINUTE))
            })
            .collect();
        app.post(
            &format!("/v1/kline/{sym}/1m/records"),
            &json!({"records": records}),
        )
        .await
        .expect(200);
    }
    app
}

#[tokio::test]
async fn records_resample_pages_and_marks_the_open_bucket() {
    let app = with_data(10).await;
    let whole = app
        .get("/v1/kline/AAA/1m/records?resample=1h&limit=100")
        .await
        .expect(200);
    let recs = whole["records"].as_array().unwrap();
    assert_eq!(recs.len(), 5, "300 minutes are five hours");
    let written = klines(300);
    for (h, r) in recs.iter().enumerate() {
        let bars = &written[h * 60..(h + 1) * 60];
        assert_eq!(r["ts"], JAN_2024 + h as i64 * HOUR);
        assert_eq!(r["open"], bars[0]["open"]);
        assert_eq!(r["close"], bars[59]["close"]);
        let high = bars
            .iter()
            .map(|b| b["high"].as_i64().unwrap())
            .max()
            .unwrap();
        let vol: i64 = bars.iter().map(|b| b["volume"].as_i64().unwrap()).sum();
        assert_eq!(r["high"], high);
        assert_eq!(r["volume"], vol);
        // The last stored bar (04:59) lies in the fifth bucket.
        assert_eq!(r["complete"], h < 4, "bucket {h}");
    }
    assert_eq!(whole["next_start_ts"], Value::Null);
    let page = app
        .get("/v1/kline/AAA/1m/records?resample=1h&limit=2")
        .await
        .expect(200);
    assert_eq!(page["records"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_start_ts"], JAN_2024 + 2 * HOUR);
    // Fill: BBB's missing ten minutes become null buckets at 10m.
    let filled = app
        .get("/v1/kline/BBB/1m/records?resample=10m&fill=null&end_ts=1704068999999")
        .await
        .expect(200);
    let r = &filled["records"][1];
    assert_eq!(r["ts"], JAN_2024 + 10 * MINUTE);
    assert_eq!(r["open"], Value::Null);
    assert_eq!(r["complete"], true);
    let prev = app
        .get("/v1/kline/BBB/1m/records?resample=10m&fill=prev&end_ts=1704068999999")
        .await
        .expect(200);
    let before = &prev["records"][0];
    let r = &prev["records"][1];
    assert_eq!(r["open"], before["close"]);
    assert_eq!(r["low"], before["close"]);
    assert_eq!(r["volume"], 0);
}

#[tokio::test]
async fn resample_errors_say_what_to_change() {
    let app = with_data(10).await;
    for (uri, says) in [
        ("/v1/kline/AAA/1m/records?resample=90s", "multiple"),
        ("/v1/kline/AAA/1m/records?resample=1y", "resample timeframe"),
        ("/v1/kline/AAA/1m/records?resample=1h&agg=mean", "scalar"),
        ("/v1/kline/AAA/1m/records?fill=prev", "resample"),
        (
            "/v1/kline/AAA/1m/records?resample=1h&fill=sometimes",
            "fill",
        ),
        (
            "/v1/kline/AAA/1m/records?resample=1h&offset_ms=3600000",
            "offset_ms",
        ),
    ] {
        let msg = app.get(uri).await.expect_error(400, "invalid_argument");
        assert!(msg.contains(says), "{uri}: {msg}");
    }
}

#[tokio::test]
async fn batch_reads_as_of_resample_and_limits() {
    let app = with_data(3).await;
    let t = JAN_2024 + 15 * MINUTE + 30_000;
    let v = app
        .post(
            "/v1/kline/batch",
            &json!({"timeframe": "1m", "symbols": "*", "as_of": t}),
        )
        .await
        .expect(200);
    let series = v["series"].as_array().unwrap();
    let got: Vec<(&str, i64)> = series
        .iter()
        .map(|s| {
            (
                s["symbol"].as_str().unwrap(),
                s["records"][0]["ts"].as_i64().unwrap(),
            )
        })
        .collect();
    // BBB has no bar between 00:10 and 00:19: its last one at or before T is 00:09.
    assert_eq!(
        got,
        [
            ("AAA", JAN_2024 + 15 * MINUTE),
            ("BBB", JAN_2024 + 9 * MINUTE),
            ("CCC", JAN_2024 + 15 * MINUTE)
        ]
    );
    // Resampled, columns selected, per-series limit cut to max_limit / series.
    let v = app
        .post(
            "/v1/kline/batch",
            &json!({"timeframe": "1m", "symbols": ["CCC", "AAA"], "limit": 1000,
                    "columns": ["close"]}),
        )
        .await
        .expect(200);
    let s = v["series"].as_array().unwrap();
    assert_eq!(s[0]["symbol"], "AAA");
    assert_eq!(
        s[0]["records"].as_array().unwrap().len(),
        250,
        "500 records in all"
    );
    assert_eq!(s[0]["next_start_ts"], JAN_2024 + 250 * MINUTE);
    assert_eq!(
        s[0]["records"][0]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["close", "ts"]
    );
    let v = app
        .post(
            "/v1/kline/batch",
            &json!({"timeframe": "1m", "symbols": ["BBB"], "latest": 400}),
        )
        .await
        .expect(200);
    let recs = v["series"][0]["records"].as_array().unwrap();
    assert_eq!(recs.len(), 290, "every bar of BBB, the latest 400 asked");
    assert_eq!(v["series"][0]["next_start_ts"], Value::Null);
    let v = app
        .post(
            "/v1/kline/batch",
            &json!({"timeframe": "1m", "symbols": ["AAA"], "resample": {"timeframe": "1h"}, "latest": 2}),
        )
        .await
        .expect(200);
    let recs = v["series"][0]["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert_eq!(v["series"][0]["next_start_ts"], Value::Null);
    assert_eq!(recs[1]["ts"], JAN_2024 + 4 * HOUR);
    assert_eq!(recs[1]["complete"], false);

    for (body, status, code, says) in [
        (
            json!({"timeframe": "1m", "symbols": []}),
            400,
            "invalid_argument",
            "empty",
        ),
        (
            json!({"timeframe": "1m", "symbols": ["A", "B", "C", "D"]}),
            400,
            "invalid_argument",
            "at most 3",
        ),
        (
            json!({"timeframe": "1m", "symbols": ["AAA", "ZZZ"]}),
            404,
            "not_found",
            "ZZZ",
        ),
        (
            json!({"timeframe": "1m", "symbols": ["AAA"], "as_of": 5, "end_ts": 9}),
            400,
            "invalid_argument",
            "as_of",
        ),
        (
            json!({"timeframe": "1m", "symbols": ["AAA"], "latest": 600}),
            400,
            "invalid_argument",
            "latest",
        ),
        (
            json!({"timeframe": "1m", "symbols": ["AAA"], "as_of": "yesterday"}),
            400,
            "invalid_argument",
            "as_of",
        ),
    ] {
        let msg = app
            .post("/v1/kline/batch", &body)
            .await
            .expect_error(status, code);
        assert!(msg.contains(says), "{body}: {msg}");
    }
}

#[tokio::test]
async fn scalar_batch_aligned_view_and_coverage() {
    let app = with_data(10).await;
    app.register_scalar("AAA", "rsi", "f64").await;
    let values: Vec<Value> = (0..300)
        .step_by(5)
        .map(|i| json!({"ts": JAN_2024 + i * MINUTE, "value": i as f64 / 2.0}))
        .collect();
    app.post(
        "/v1/scalar/AAA/1m/indicator/rsi/records",
        &json!({"records": values}),
    )
    .await
    .expect(200);
    let v = app
        .post(
            "/v1/scalar/batch",
            &json!({"timeframe": "1m", "category": "indicator", "name": "rsi", "symbols": "*",
                    "resample": {"timeframe": "1h", "agg": "max"}}),
        )
        .await
        .expect(200);
    let recs = v["series"][0]["records"].as_array().unwrap();
    assert_eq!(recs.len(), 5);
    assert_eq!(
        recs[0]["value"], 27.5,
        "max of minutes 0, 5, ..., 55 halved"
    );

    let body = json!({"scalars": [{"category": "indicator", "name": "rsi"}], "end_ts": JAN_2024 + 6 * MINUTE});
    let exact = app
        .post("/v1/kline/AAA/1m/aligned", &body)
        .await
        .expect(200);
    let col = rsi_column(&exact);
    assert_eq!(
        col,
        [
            json!(0.0),
            Value::Null,
            Value::Null,
            Value::Null,
            Value::Null,
            json!(2.5),
            Value::Null
        ]
    );
    let mut asof = body.clone();
    asof["join"] = json!("asof");
    asof["tolerance_ms"] = json!(2 * MINUTE);
    let v = app
        .post("/v1/kline/AAA/1m/aligned", &asof)
        .await
        .expect(200);
    let col = rsi_column(&v);
    assert_eq!(
        col,
        [
            json!(0.0),
            json!(0.0),
            json!(0.0),
            Value::Null,
            Value::Null,
            json!(2.5),
            json!(2.5)
        ]
    );
    let unknown = json!({"scalars": [{"category": "indicator", "name": "nope"}]});
    app.post("/v1/kline/AAA/1m/aligned", &unknown)
        .await
        .expect_error(404, "not_found");

    let c = app.get("/v1/kline/BBB/1m/coverage").await.expect(200);
    assert_eq!(c["expected"], 300);
    assert_eq!(c["present"], 290);
    assert_eq!(
        c["gaps"],
        json!([{"start_ts": JAN_2024 + 10 * MINUTE, "end_ts": JAN_2024 + 19 * MINUTE, "missing": 10}])
    );
    assert_eq!(c["calendar"], "24x7");
    let c = app
        .get("/v1/kline/BBB/1m/coverage?complete_n=281")
        .await
        .expect(200);
    assert_eq!(
        c["last_complete_ts"],
        Value::Null,
        "the longest run is 280 bars"
    );
    let c = app
        .get("/v1/kline/BBB/1m/coverage?complete_n=280")
        .await
        .expect(200);
    assert_eq!(c["last_run"]["start_ts"], JAN_2024 + 20 * MINUTE);
    let c = app
        .get("/v1/scalar/AAA/1m/indicator/rsi/coverage")
        .await
        .expect(200);
    assert_eq!(c["present"], 60);
    assert_eq!(c["gap_count"], 59);
    for (uri, says) in [
        ("/v1/kline/BBB/1m/coverage?calendar=sometimes", "calendar"),
        ("/v1/kline/BBB/1m/coverage?start_ts=9&end_ts=1", "start_ts"),
        ("/v1/kline/BBB/1m/coverage?max_gaps=100001", "max_gaps"),
    ] {
        let msg = app.get(uri).await.expect_error(400, "invalid_argument");
        assert!(msg.contains(says), "{uri}: {msg}");
    }
}

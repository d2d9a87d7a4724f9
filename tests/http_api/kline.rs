//! Kline series: registration, writes, reads, paging, latest, If-Match, delete.

use serde_json::{Value, json};

use crate::common::{JAN_2024, MINUTE, app, app_with, klines};

const SERIES: &str = "/v1/kline/BTCUSDT/1m";

#[tokio::test]
async fn registration_is_created_then_identical_then_conflicting() {
    let app = app();
    let body =
        json!({"symbol": "BTCUSDT", "timeframe": "1m", "price_scale": 100, "volume_scale": 1000});
    let created = app.post("/v1/kline/series", &body).await.expect(201);
    assert_eq!(created["kind"], "kline");
    assert_eq!(created["timeframe_ms"], 60_000);
    assert_eq!(created["price_scale"], 100);
    assert_eq!(created["rows"], 0);
    let again = app.post("/v1/kline/series", &body).await.expect(200);
    assert_eq!(again, created);
    let differs =
        json!({"symbol": "BTCUSDT", "timeframe": "1m", "price_scale": 10, "volume_scale": 1000});
    app.post("/v1/kline/series", &differs)
        .await
        .expect_error(409, "conflict");
    // A non-standard timeframe needs timeframe_ms.
    let custom =
        json!({"symbol": "BTCUSDT", "timeframe": "7m", "price_scale": 1, "volume_scale": 1});
    app.post("/v1/kline/series", &custom)
        .await
        .expect_error(400, "invalid_argument");
    let list = app.get("/v1/kline/series").await.expect(200);
    let series = list["series"].as_array().unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0]["symbol"], "BTCUSDT");
}

#[tokio::test]
async fn write_then_read_round_trips_every_value() {
    let app = app();
    app.register_kline("BTCUSDT").await;
    let records = klines(100);
    let mut shuffled = records.clone();
    shuffled.reverse();
    let w = app
        .post(&format!("{SERIES}/records"), &json!({"records": shuffled}))
        .await
        .expect(200);
    assert_eq!(w["written"], 100);
    assert_eq!(w["inserted"], 100);
    assert_eq!(w["replaced"], 0);
    assert_eq!(w["months"], json!(["2024-01"]));
    let page = app.get(&format!("{SERIES}/records")).await.expect(200);
    assert_eq!(page["records"], Value::Array(records.clone()));
    assert_eq!(page["next_start_ts"], Value::Null);
    // Re-writing two stored records replaces them (upsert).
    let mut changed = records[10].clone();
    changed["volume"] = json!(5);
    let w2 = app
        .post(
            &format!("{SERIES}/records"),
            &json!({"records": [changed, records[11]]}),
        )
        .await
        .expect(200);
    assert_eq!(
        (w2["inserted"].as_u64(), w2["replaced"].as_u64()),
        (Some(0), Some(2))
    );
    assert!(w2["version"].as_u64() > w["version"].as_u64());
    let ts = records[10]["ts"].as_i64().unwrap();
    let one = app
        .get(&format!("{SERIES}/records?start_ts={ts}&end_ts={ts}"))
        .await
        .expect(200);
    assert_eq!(one["records"], json!([changed]));
    let info = app.get(SERIES).await.expect(200);
    assert_eq!(info["rows"], 100);
    assert_eq!(info["version"], w2["version"]);
    assert_eq!(info["first_ts"], JAN_2024);
    assert_eq!(info["partitions"][0]["month"], "2024-01");
    assert_eq!(info["partitions"][0]["rows"], 100);
}

#[tokio::test]
async fn paging_with_next_start_ts_returns_the_full_set() {
    let app = app();
    app.register_kline("BTCUSDT").await;
    // 3000 bars from Jan 31 cross into February: pages span two partitions.
    let records: Vec<Value> = klines(3000)
        .into_iter()
        .map(|mut r| {
            r["ts"] = json!(r["ts"].as_i64().unwrap() + 30 * 1440 * MINUTE);
            r
        })
        .collect();
    app.post(&format!("{SERIES}/records"), &json!({"records": records}))
        .await
        .expect(200);
    let mut got = Vec::new();
    let mut start = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .get(&format!("{SERIES}/records?limit=700{start}"))
            .await
            .expect(200);
        pages += 1;
        let rows = page["records"].as_array().unwrap();
        assert!(rows.len() <= 700);
        got.extend(rows.iter().cloned());
        match page["next_start_ts"].as_i64() {
            Some(next) => start = format!("&start_ts={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 5);
    assert_eq!(got, records);
    // A bounded range pages the same way and stops at end_ts.
    let end = records[1499]["ts"].as_i64().unwrap();
    let first = app
        .get(&format!("{SERIES}/records?end_ts={end}&limit=1000"))
        .await
        .expect(200);
    let next = first["next_start_ts"].as_i64().unwrap();
    assert_eq!(next, records[1000]["ts"].as_i64().unwrap());
    let second = app
        .get(&format!(
            "{SERIES}/records?start_ts={next}&end_ts={end}&limit=1000"
        ))
        .await
        .expect(200);
    assert_eq!(second["records"].as_array().unwrap().len(), 500);
    assert_eq!(second["next_start_ts"], Value::Null);
}

#[tokio::test]
async fn limit_defaults_and_is_capped_by_config() {
    let app = app_with(|c| {
        c.http.default_limit = 20;
        c.http.max_limit = 50;
    });
    app.register_kline("BTCUSDT").await;
    app.post(
        &format!("{SERIES}/records"),
        &json!({"records": klines(80)}),
    )
    .await
    .expect(200);
    let default = app.get(&format!("{SERIES}/records")).await.expect(200);
    assert_eq!(default["records"].as_array().unwrap().len(), 20);
    let capped = app
        .get(&format!("{SERIES}/records?limit=1000000"))
        .await
        .expect(200);
    assert_eq!(capped["records"].as_array().unwrap().len(), 50);
    assert_eq!(capped["next_start_ts"], JAN_2024 + 50 * MINUTE);
    app.get(&format!("{SERIES}/records?limit=0"))
        .await
        .expect_error(400, "invalid_argument");
}

#[tokio::test]
async fn latest_returns_the_last_n_ascending() {
    let app = app_with(|c| c.http.max_latest = 100);
    app.register_kline("BTCUSDT").await;
    let records = klines(30);
    app.post(&format!("{SERIES}/records"), &json!({"records": records}))
        .await
        .expect(200);
    let three = app.get(&format!("{SERIES}/latest?n=3")).await.expect(200);
    assert_eq!(three["records"], json!(records[27..]));
    assert_eq!(three["next_start_ts"], Value::Null);
    let one = app.get(&format!("{SERIES}/latest")).await.expect(200);
    assert_eq!(one["records"], json!(records[29..]));
    let end = records[9]["ts"].as_i64().unwrap();
    let in_range = app
        .get(&format!("{SERIES}/latest?n=2&end_ts={end}"))
        .await
        .expect(200);
    assert_eq!(in_range["records"], json!(records[8..10]));
    for bad in ["n=0", "n=101", "n=-1", "n=x"] {
        app.get(&format!("{SERIES}/latest?{bad}"))
            .await
            .expect_error(400, "invalid_argument");
    }
}

#[tokio::test]
async fn if_match_guards_the_write() {
    let app = app();
    app.register_kline("BTCUSDT").await;
    let records = klines(4);
    let url = format!("{SERIES}/records");
    let w = app
        .post(&url, &json!({"records": records[..2]}))
        .await
        .expect(200);
    let version = w["version"].as_u64().unwrap();
    let stale = format!("\"{}\"", version + 5);
    let msg = app
        .post_with(
            &url,
            &[("if-match", &stale)],
            &json!({"records": records[2..3]}),
        )
        .await
        .expect_error(412, "precondition_failed");
    assert!(msg.contains(&version.to_string()), "{msg}");
    assert_eq!(
        app.get(SERIES).await.expect(200)["rows"],
        2,
        "412 wrote nothing"
    );
    let quoted = format!("\"{version}\"");
    let w2 = app
        .post_with(
            &url,
            &[("if-match", &quoted)],
            &json!({"records": records[2..3]}),
        )
        .await
        .expect(200);
    let unquoted = w2["version"].to_string();
    app.post_with(
        &url,
        &[("if-match", &unquoted)],
        &json!({"records": records[3..]}),
    )
    .await
    .expect(200);
    for bad in ["W/\"1\"", "*", "abc", "\"1", "-1"] {
        app.post_with(&url, &[("if-match", bad)], &json!({"records": []}))
            .await
            .expect_error(400, "invalid_argument");
    }
    assert_eq!(app.get(SERIES).await.expect(200)["rows"], 4);
}

#[tokio::test]
async fn duplicate_ts_and_ohlc_violations_are_422_naming_the_index() {
    let app = app();
    app.register_kline("BTCUSDT").await;
    let records = klines(5);
    let url = format!("{SERIES}/records");
    let mut dup = records.clone();
    dup.push(records[1].clone());
    let msg = app
        .post(&url, &json!({"records": dup}))
        .await
        .expect_error(422, "unprocessable");
    assert!(msg.contains("record 5"), "{msg}");
    let mut bad = records.clone();
    bad[3]["low"] = json!(bad[3]["high"].as_i64().unwrap() + 1);
    let msg = app
        .post(&url, &json!({"records": bad}))
        .await
        .expect_error(422, "unprocessable");
    assert!(msg.contains("record 3"), "{msg}");
    let mut negative = records.clone();
    negative[2]["volume"] = json!(-1);
    let msg = app
        .post(&url, &json!({"records": negative}))
        .await
        .expect_error(422, "unprocessable");
    assert!(msg.contains("record 2") && msg.contains("volume"), "{msg}");
    assert_eq!(
        app.get(SERIES).await.expect(200)["rows"],
        0,
        "rejected writes are invisible"
    );
}

#[tokio::test]
async fn delete_removes_the_series_and_its_data() {
    let app = app();
    app.register_kline("BTCUSDT").await;
    app.post(&format!("{SERIES}/records"), &json!({"records": klines(3)}))
        .await
        .expect(200);
    let r = app.delete(SERIES).await;
    assert_eq!(r.status.as_u16(), 204);
    assert!(r.body.is_empty());
    app.get(SERIES).await.expect_error(404, "not_found");
    app.get(&format!("{SERIES}/records"))
        .await
        .expect_error(404, "not_found");
    app.delete(SERIES).await.expect_error(404, "not_found");
    let list = app.get("/v1/kline/series").await.expect(200);
    assert_eq!(list["series"], json!([]));
    // The key can be registered again, empty.
    assert_eq!(app.register_kline("BTCUSDT").await["rows"], 0);
}

#[tokio::test]
async fn range_delete_removes_exactly_the_range_with_the_version_check() {
    let app = app();
    app.register_kline("BTCUSDT").await;
    // 31 days of hourly-spaced minutes across January into February: two months.
    let records: Vec<Value> = klines(800)
        .into_iter()
        .map(|mut r| {
            let i = (r["ts"].as_i64().unwrap() - JAN_2024) / MINUTE;
            r["ts"] = json!(JAN_2024 + i * 60 * MINUTE);
            r
        })
        .collect();
    let w = app
        .post(&format!("{SERIES}/records"), &json!({"records": records}))
        .await
        .expect(200);
    let version = w["version"].as_i64().unwrap();
    let feb = 1_706_745_600_000_i64;
    // A stale If-Match deletes nothing.
    let stale = app
        .send(
            axum::http::Method::DELETE,
            &format!("{SERIES}/records?start_ts={feb}"),
            &[("If-Match", "\"999\"")],
            axum::body::Body::empty(),
        )
        .await;
    stale.expect_error(412, "precondition_failed");
    let cut = JAN_2024 + 100 * 60 * MINUTE;
    let r = app
        .send(
            axum::http::Method::DELETE,
            &format!("{SERIES}/records?start_ts={cut}"),
            &[("If-Match", &format!("\"{version}\""))],
            axum::body::Body::empty(),
        )
        .await
        .expect(200);
    assert_eq!(r["deleted"], 700);
    assert_eq!(r["months"], json!(["2024-01", "2024-02"]));
    assert_eq!(r["version"], version + 1);
    let page = app
        .get(&format!("{SERIES}/records?limit=1000"))
        .await
        .expect(200);
    let ts: Vec<i64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ts"].as_i64().unwrap())
        .collect();
    assert_eq!(ts.len(), 100);
    assert!(ts.iter().all(|&t| t < cut));
    // Nothing left to delete: 0, same version.
    let again = app
        .delete(&format!("{SERIES}/records?start_ts={cut}"))
        .await
        .expect(200);
    assert_eq!(
        (again["deleted"].as_i64(), again["version"].as_i64()),
        (Some(0), Some(version + 1))
    );
    for (uri, says) in [
        (format!("{SERIES}/records"), "start_ts"),
        (format!("{SERIES}/records?start_ts=9&end_ts=1"), "after"),
    ] {
        let msg = app.delete(&uri).await.expect_error(400, "invalid_argument");
        assert!(msg.contains(says), "{uri}: {msg}");
    }
    app.delete("/v1/kline/NOPE/1m/records?end_ts=5")
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn registration_takes_and_changes_a_retention() {
    let app = app();
    let body = json!({"symbol": "RET", "timeframe": "1m", "price_scale": 100,
        "volume_scale": 1, "retention_ms": 86_400_000});
    let info = app.post("/v1/kline/series", &body).await.expect(201);
    assert_eq!(info["retention_ms"], 86_400_000);
    let mut again = body.clone();
    again["retention_ms"] = json!(0);
    let info = app.post("/v1/kline/series", &again).await.expect(200);
    assert_eq!(
        info["retention_ms"], 0,
        "registering again changes the retention"
    );
    assert_eq!(
        app.get("/v1/kline/RET/1m").await.expect(200)["retention_ms"],
        0
    );
    let mut bad = body.clone();
    bad["retention_ms"] = json!(-5);
    let msg = app
        .post("/v1/kline/series", &bad)
        .await
        .expect_error(400, "invalid_argument");
    assert!(msg.contains("retention_ms"), "{msg}");
}

/// Story: a bar at `ts + 1 ms` on a 1m series was stored, a bar no exchange makes and
/// every resample and coverage then had to explain. Bars now sit on the series' grid
/// (its first bar + k * timeframe_ms) unless it is registered `"irregular": true`.
#[tokio::test]
async fn bars_off_the_timeframes_grid_are_refused_unless_the_series_is_irregular() {
    let app = app();
    app.register_kline("GRID").await;
    let path = "/v1/kline/GRID/1m/records";
    app.post(path, &json!({"records": klines(10)}))
        .await
        .expect(200);
    let mut off = klines(12);
    off[11]["ts"] = json!(off[11]["ts"].as_i64().unwrap() + 1);
    let m = app
        .post(path, &json!({"records": off[10..]}))
        .await
        .expect_error(422, "unprocessable");
    assert!(m.contains("record 1") && m.contains("irregular"), "{m}");
    // Nothing of the refused write was stored.
    let r = app.get(&format!("{path}?limit=100")).await.expect(200);
    assert_eq!(r["records"].as_array().map(Vec::len), Some(10));
    // An empty series takes its grid from the write's first bar: hourly bars at :30.
    app.register_kline("HALF").await;
    let half: Vec<Value> = (0..3)
        .map(|i| {
            let mut b = klines(1)[0].clone();
            b["ts"] = json!(JAN_2024 + 30 * MINUTE + i * MINUTE);
            b
        })
        .collect();
    app.post("/v1/kline/HALF/1m/records", &json!({"records": half}))
        .await
        .expect(200);
    // Many series: the symbol is named, nothing is written.
    let many = json!({"timeframe": "1m", "records": [
        {"symbol": "HALF", "ts": JAN_2024 + 60 * MINUTE, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1},
        {"symbol": "GRID", "ts": JAN_2024 + 3, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1},
    ]});
    let m = app
        .post("/v1/kline/records", &many)
        .await
        .expect_error(422, "unprocessable");
    assert!(m.contains("GRID"), "{m}");
    // Registered again as irregular, the same bars are stored; the info says so.
    let r = app
        .post(
            "/v1/kline/series",
            &json!({"symbol": "GRID", "timeframe": "1m", "price_scale": 100, "volume_scale": 1000, "irregular": true}),
        )
        .await
        .expect(200);
    assert_eq!(r["irregular"], json!(true), "{r}");
    app.post(path, &json!({"records": off[10..]}))
        .await
        .expect(200);
    let r = app.get(&format!("{path}?limit=100")).await.expect(200);
    assert_eq!(r["records"].as_array().map(Vec::len), Some(12));
    // Registering again without the field leaves it as it is.
    let r = app
        .post(
            "/v1/kline/series",
            &json!({"symbol": "GRID", "timeframe": "1m", "price_scale": 100, "volume_scale": 1000}),
        )
        .await
        .expect(200);
    assert_eq!(r["irregular"], json!(true), "{r}");
}

//! Admin actions and the dataset, feature and factor registries.

use axum::body::Body;
use axum::http::Method;
use serde_json::{Value, json};

use crate::common::{app, klines};

#[tokio::test]
async fn validate_reports_a_clean_store() {
    // The series' rows fold into chunk files to be checked (not into the catalog).
    let app = crate::common::app_with(|c| c.storage.resident_rows_max = 0);
    app.register_kline("BTCUSDT").await;
    app.post(
        "/v1/kline/BTCUSDT/1m/records",
        &json!({"records": klines(50)}),
    )
    .await
    .expect(200);
    // An empty body is allowed and means every series.
    let r = app
        .send(Method::POST, "/v1/admin/validate", &[], Body::empty())
        .await
        .expect(200);
    assert_eq!(r["action"], "validate");
    assert_eq!(r["clean"], true, "{r}");
    assert_eq!(r["findings"], json!([]));
    assert_eq!(r["series_checked"], 1);
    assert!(r["chunks_checked"].as_u64() >= Some(1), "{r}");
    let deep = app
        .post(
            "/v1/admin/validate",
            &json!({"deep": true, "series": {"symbol": "BTCUSDT"}}),
        )
        .await
        .expect(200);
    assert_eq!(deep["deep"], true);
    assert_eq!(deep["clean"], true);
    assert!(deep["bytes_checked"].as_u64() > Some(0), "{deep}");
    let null_body = app.post("/v1/admin/scrub", &Value::Null).await.expect(200);
    assert_eq!(
        (null_body["action"].as_str(), null_body["deep"].as_bool()),
        (Some("scrub"), Some(true))
    );
    let health = app.get("/health").await.expect(200);
    assert!(health["last_validation_ts"].as_i64() > Some(0), "{health}");
}

#[tokio::test]
async fn every_admin_action_runs() {
    // Every write as chunk files (none through the write-ahead log, which would fold
    // them into one chunk): several small writes leave several chunks in one month,
    // and compact merges them.
    let app = crate::common::app_with(|c| c.storage.wal_direct_rows = 0);
    app.register_kline("BTCUSDT").await;
    let url = "/v1/kline/BTCUSDT/1m/records";
    for chunk in klines(40).chunks(10) {
        app.post(url, &json!({"records": chunk})).await.expect(200);
    }
    for action in ["repair", "rebuild-manifest", "compact"] {
        let r = app
            .post(&format!("/v1/admin/{action}"), &json!({"dry_run": true}))
            .await
            .expect(200);
        assert_eq!(r["action"], action);
        assert_eq!(r["dry_run"], true);
    }
    let r = app.post("/v1/admin/compact", &json!({})).await.expect(200);
    assert!(!r["actions"].as_array().unwrap().is_empty(), "{r}");
    let info = app.get("/v1/kline/BTCUSDT/1m").await.expect(200);
    assert_eq!(info["partitions"][0]["chunks"], 1, "{info}");
    assert_eq!(app.get(url).await.expect(200)["records"], json!(klines(40)));
    app.post("/v1/admin/validate", &json!({"deep": "yes"}))
        .await
        .expect_error(400, "invalid_argument");
    app.post("/v1/admin/validate", &json!({"everything": true}))
        .await
        .expect_error(400, "invalid_argument");
}

fn dataset(checksum: &str) -> Value {
    json!({"name": "binance-spot-1m", "version": "2024-06", "source": "binance", "market": "spot",
        "start_ts": 1704067200000_i64, "end_ts": 1719791999999_i64, "checksum": checksum})
}

#[tokio::test]
async fn datasets_are_created_identical_or_conflicting() {
    let app = app();
    let created = app
        .post("/v1/datasets", &dataset("xxh3:1"))
        .await
        .expect(201);
    assert_eq!(created["status"], "active", "defaults are filled in");
    assert_eq!(
        app.post("/v1/datasets", &dataset("xxh3:1"))
            .await
            .expect(200),
        created
    );
    app.post("/v1/datasets", &dataset("xxh3:2"))
        .await
        .expect_error(409, "conflict");
    let mut other = dataset("xxh3:3");
    other["name"] = json!("okx-swap-1m");
    app.post("/v1/datasets", &other).await.expect(201);
    let all = app.get("/v1/datasets").await.expect(200);
    assert_eq!(all["datasets"].as_array().unwrap().len(), 2);
    let one = app.get("/v1/datasets?name=okx-swap-1m").await.expect(200);
    assert_eq!(
        one["datasets"],
        json!([app.post("/v1/datasets", &other).await.expect(200)])
    );
    let mut bad = dataset("x");
    bad["name"] = json!("..");
    app.post("/v1/datasets", &bad)
        .await
        .expect_error(400, "invalid_argument");
    let mut inverted = dataset("x");
    inverted["version"] = json!("v2");
    inverted["end_ts"] = json!(0);
    app.post("/v1/datasets", &inverted)
        .await
        .expect_error(400, "invalid_argument");
}

#[tokio::test]
async fn features_and_factors_are_separate_registries() {
    let app = app();
    let def = json!({"name": "rsi_14", "version": "1", "input_dataset": "binance-spot-1m",
        "symbol": "BTCUSDT", "timeframe": "1m", "category": "indicator", "series_name": "rsi_14",
        "config_hash": "sha256:5d41402a", "code_version": "git:1a2b3c4"});
    for uri in ["/v1/features", "/v1/factors"] {
        let created = app.post(uri, &def).await.expect(201);
        assert_eq!(created["name"], "rsi_14");
        app.post(uri, &def).await.expect(200);
        let mut changed = def.clone();
        changed["code_version"] = json!("git:ffff");
        app.post(uri, &changed).await.expect_error(409, "conflict");
        let list = app.get(&format!("{uri}?name=rsi_14")).await.expect(200);
        assert_eq!(list["definitions"], json!([created]));
        let none = app.get(&format!("{uri}?name=other")).await.expect(200);
        assert_eq!(none["definitions"], json!([]));
    }
    let mut bad = def.clone();
    bad["series_name"] = json!("a/b");
    app.post("/v1/features", &bad)
        .await
        .expect_error(400, "invalid_argument");
}

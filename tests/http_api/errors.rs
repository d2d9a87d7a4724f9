//! Bad input of every kind gets the contract's 4xx body: never axum's plain text,
//! never a 500.

use axum::body::Body;
use axum::http::Method;
use serde_json::json;

use crate::common::{app, app_with, klines};

#[tokio::test]
async fn malformed_bodies_are_400_with_the_contract_body() {
    let app = app();
    app.register_kline("BTCUSDT").await;
    let url = "/v1/kline/BTCUSDT/1m/records";
    let cases: [(&str, &str); 7] = [
        ("{", "EOF"),
        ("not json", "expected"),
        ("", "EOF"),
        (r#"{"records": "x"}"#, "invalid type"),
        (
            r#"{"records": [{"ts": "1", "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1}]}"#,
            "invalid type",
        ),
        (r#"{"records": [], "extra": 1}"#, "unknown field `extra`"),
        (
            r#"{"records": [{"ts": 1, "open": 1, "high": 1, "low": 1, "close": 1}]}"#,
            "missing field `volume`",
        ),
    ];
    for (body, needle) in cases {
        let r = app
            .send(
                Method::POST,
                url,
                &[("content-type", "application/json")],
                body.to_string(),
            )
            .await;
        let msg = r.expect_error(400, "invalid_argument");
        assert!(msg.contains(needle), "{body:?}: {msg}");
    }
    // Out-of-range numbers: beyond i64, and timestamps beyond year 9999.
    let huge = r#"{"records": [{"ts": 99999999999999999999, "open": 1, "high": 1, "low": 1, "close": 1, "volume": 1}]}"#;
    app.send(Method::POST, url, &[], huge.to_string())
        .await
        .expect_error(400, "invalid_argument");
    let mut far = klines(1);
    far[0]["ts"] = json!(i64::MAX);
    app.post(url, &json!({"records": far}))
        .await
        .expect_error(400, "invalid_argument");
    // Registration bodies are checked the same way.
    let unknown =
        json!({"symbol": "X", "timeframe": "1m", "price_scale": 1, "volume_scale": 1, "tick": 1});
    app.post("/v1/kline/series", &unknown)
        .await
        .expect_error(400, "invalid_argument");
    let zero = json!({"symbol": "X", "timeframe": "1m", "price_scale": 0, "volume_scale": 1});
    app.post("/v1/kline/series", &zero)
        .await
        .expect_error(400, "invalid_argument");
}

#[tokio::test]
async fn bad_names_never_reach_the_disk() {
    let app = app();
    for symbol in ["..", ".", "a/b", "sp ace", "", &"x".repeat(65)] {
        let body =
            json!({"symbol": symbol, "timeframe": "1m", "price_scale": 1, "volume_scale": 1});
        app.post("/v1/kline/series", &body)
            .await
            .expect_error(400, "invalid_argument");
    }
    for path in [
        "/v1/kline/%2E%2E/1m",
        "/v1/kline/%2E/1m/records",
        "/v1/kline/a%2Fb/1m",
        "/v1/kline/BTCUSDT/..",
        "/v1/kline/BTCUSDT/%2E%2E/latest",
        "/v1/scalar/BTCUSDT/1m/%2E%2E/rsi/records",
        "/v1/scalar/BTCUSDT/1m/indicator/%2E%2E",
        "/v1/kline/%FF/1m",
    ] {
        let msg = app.get(path).await.expect_error(400, "invalid_argument");
        assert!(msg.contains("invalid"), "{path}: {msg}");
    }
    let list = app.get("/v1/kline/series").await.expect(200);
    assert_eq!(list["series"], json!([]));
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let app = app();
    app.register_kline("BTCUSDT").await;
    for q in [
        "limit=abc",
        "limit=-5",
        "start_ts=1.5",
        "start_ts=10&end_ts=9",
        "start=5",
        "limit=",
    ] {
        let msg = app
            .get(&format!("/v1/kline/BTCUSDT/1m/records?{q}"))
            .await
            .expect_error(400, "invalid_argument");
        assert!(!msg.is_empty(), "{q}");
    }
    app.get("/v1/datasets?nam=x")
        .await
        .expect_error(400, "invalid_argument");
}

#[tokio::test]
async fn unknown_series_route_and_method() {
    let app = app();
    app.get("/v1/kline/NOPE/1m")
        .await
        .expect_error(404, "not_found");
    app.get("/v1/kline/NOPE/1m/records")
        .await
        .expect_error(404, "not_found");
    app.get("/v1/kline/NOPE/1m/latest")
        .await
        .expect_error(404, "not_found");
    app.post("/v1/kline/NOPE/1m/records", &json!({"records": klines(1)}))
        .await
        .expect_error(404, "not_found");
    app.get("/v1/scalar/NOPE/1m/indicator/x/records")
        .await
        .expect_error(404, "not_found");
    app.post(
        "/v1/scalar/NOPE/1m/indicator/x/records",
        &json!({"records": []}),
    )
    .await
    .expect_error(404, "not_found");
    app.get("/no/such/route")
        .await
        .expect_error(404, "not_found");
    // An unknown admin action is a bad argument (the message lists the actions).
    app.post("/v1/admin/explode", &json!({}))
        .await
        .expect_error(400, "invalid_argument");
    let r = app
        .send(Method::PUT, "/v1/kline/series", &[], Body::empty())
        .await;
    r.expect_error(405, "invalid_argument");
    let allow = r.headers["allow"].to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let app = app_with(|c| c.http.max_body_bytes = 4096);
    app.register_kline("BTCUSDT").await;
    let big = json!({"records": klines(200)});
    assert!(big.to_string().len() > 4096);
    let msg = app
        .post("/v1/kline/BTCUSDT/1m/records", &big)
        .await
        .expect_error(413, "payload_too_large");
    assert!(msg.contains("4096"), "{msg}");
    // A body without Content-Length (streamed) is cut off the same way.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok(big.to_string()[..3000].into()),
        Ok(big.to_string()[3000..].into()),
    ];
    let streamed = Body::from_stream(futures::stream::iter(chunks));
    app.send(Method::POST, "/v1/kline/BTCUSDT/1m/records", &[], streamed)
        .await
        .expect_error(413, "payload_too_large");
    let small = json!({"records": klines(10)});
    app.post("/v1/kline/BTCUSDT/1m/records", &small)
        .await
        .expect(200);
}

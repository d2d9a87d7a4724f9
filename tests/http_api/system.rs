//! Health, inventory, metrics, docs, request ids, CORS and gzip.

use axum::body::Body;
use axum::http::Method;
use serde_json::json;

use crate::common::{app, app_with, klines};

#[tokio::test]
async fn health_is_ok_then_503_when_the_data_root_is_gone() {
    let app = app();
    let h = app.get("/health").await.expect(200);
    assert_eq!(h["status"], "ok");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["series"], 0);
    assert!(h["uptime_s"].is_u64() && h["issues"].is_u64());
    app.register_kline("BTCUSDT").await;
    assert_eq!(app.get("/health").await.expect(200)["series"], 1);
    std::fs::rename(
        app.engine.config.storage.root.join("series"),
        app.engine.config.storage.root.join("moved"),
    )
    .unwrap();
    let failing = app.get("/health").await.expect(503);
    assert_eq!(failing["status"], "failing");
    assert!(failing["issues"].as_u64() >= Some(1));
}

#[tokio::test]
async fn inventory_lists_every_series_with_partitions() {
    let app = app();
    app.register_kline("BTCUSDT").await;
    app.register_scalar("BTCUSDT", "rsi_14", "f64").await;
    app.post(
        "/v1/kline/BTCUSDT/1m/records",
        &json!({"records": klines(10)}),
    )
    .await
    .expect(200);
    let inv = app.get("/inventory").await.expect(200);
    let series = inv["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    let kline = series.iter().find(|s| s["kind"] == "kline").unwrap();
    assert_eq!(kline["rows"], 10);
    assert_eq!(kline["partitions"][0]["month"], "2024-01");
    assert_eq!(kline["partitions"][0]["rows"], 10);
    let scalar = series.iter().find(|s| s["kind"] == "scalar").unwrap();
    assert_eq!(scalar["rows"], 0);
    assert_eq!(scalar["partitions"], json!([]));
    assert_eq!(inv["total_rows"], 10);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = app();
    app.register_kline("BTCUSDT").await;
    app.post(
        "/v1/kline/BTCUSDT/1m/records",
        &json!({"records": klines(7)}),
    )
    .await
    .expect(200);
    app.get("/v1/kline/BTCUSDT/1m/records").await.expect(200);
    app.get("/v1/kline/NOPE/1m/records")
        .await
        .expect_error(404, "not_found");
    app.get("/random/path").await.expect_error(404, "not_found");
    let r = app.get("/metrics").await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(
        r.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text();
    let route = "route=\"/v1/kline/{symbol}/{timeframe}/records\"";
    for line in [
        format!("fastk_http_requests_total{{method=\"GET\",{route},status=\"200\"}} 1"),
        format!("fastk_http_requests_total{{method=\"GET\",{route},status=\"404\"}} 1"),
        format!("fastk_http_requests_total{{method=\"POST\",{route},status=\"200\"}} 1"),
        "fastk_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1".into(),
        "fastk_rows_written_total 7".into(),
        "fastk_rows_read_total 7".into(),
        "fastk_series 1".into(),
    ] {
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("fastk_http_request_duration_seconds_bucket{method=\"GET\","));
    assert!(!text.contains("NOPE"), "concrete paths never become labels");
}

#[tokio::test]
async fn docs_work_offline() {
    let app = app();
    let redirect = app.get("/docs").await;
    assert_eq!(redirect.status.as_u16(), 303);
    assert_eq!(redirect.headers["location"], "/docs/");
    let page = app.get("/docs/").await;
    assert_eq!(page.status.as_u16(), 200);
    assert!(page.text().to_lowercase().contains("swagger"));
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        let r = app.get(&format!("/docs/{asset}")).await;
        assert_eq!(r.status.as_u16(), 200, "{asset}");
        assert!(r.body.len() > 100, "{asset}");
    }
    let init = app.get("/docs/swagger-initializer.js").await.text();
    assert!(init.contains("/openapi.json"), "{init}");
    app.get("/docs/nope.js")
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn request_ids_are_set_and_propagated() {
    let app = app();
    let r = app.get("/health").await;
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let r = app
        .send(
            Method::GET,
            "/health",
            &[("x-request-id", "abc-123")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
    let err = app.get("/nope").await;
    assert!(
        err.headers.contains_key("x-request-id"),
        "errors carry the id too"
    );
}

#[tokio::test]
async fn cors_and_gzip_follow_the_config() {
    let plain = app_with(|c| c.http.gzip = false);
    let r = plain
        .send(
            Method::GET,
            "/openapi.json",
            &[("accept-encoding", "gzip"), ("origin", "http://x")],
            Body::empty(),
        )
        .await;
    assert!(r.headers.get("content-encoding").is_none());
    assert!(
        r.headers.get("access-control-allow-origin").is_none(),
        "CORS is off by default"
    );

    let app = app_with(|c| c.http.cors_origins = vec!["http://dash.local".into()]);
    let r = app
        .send(
            Method::GET,
            "/openapi.json",
            &[("accept-encoding", "gzip"), ("origin", "http://dash.local")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.headers["content-encoding"], "gzip");
    assert_eq!(
        r.headers["access-control-allow-origin"],
        "http://dash.local"
    );
    let preflight = app
        .send(
            Method::OPTIONS,
            "/v1/kline/series",
            &[
                ("origin", "http://dash.local"),
                ("access-control-request-method", "POST"),
            ],
            Body::empty(),
        )
        .await;
    assert_eq!(preflight.status.as_u16(), 200);
    assert!(
        preflight.headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let other = app
        .send(
            Method::GET,
            "/health",
            &[("origin", "http://evil")],
            Body::empty(),
        )
        .await;
    assert!(other.headers.get("access-control-allow-origin").is_none());

    let any = app_with(|c| c.http.cors_origins = vec!["*".into()]);
    let r = any
        .send(
            Method::GET,
            "/health",
            &[("origin", "http://anything")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn inventory_filters_and_pages_in_key_order() {
    let app = crate::common::app();
    for sym in ["CCC", "AAA", "BBB"] {
        app.register_kline(sym).await;
    }
    app.register_scalar("AAA", "rsi", "f64").await;
    let all = app.get("/inventory").await.expect(200);
    assert_eq!(
        all["series"].as_array().unwrap().len(),
        4,
        "every series by default"
    );
    assert!(all.get("next_after").is_none());
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let uri = if after.is_empty() {
            "/inventory?kind=kline&limit=2&partitions=false".to_string()
        } else {
            format!("/inventory?kind=kline&limit=2&partitions=false&after={after}")
        };
        let page = app.get(&uri).await.expect(200);
        for s in page["series"].as_array().unwrap() {
            assert!(s.get("partitions").is_none());
            seen.push(s["symbol"].as_str().unwrap().to_string());
        }
        match page["next_after"].as_str() {
            Some(a) => after = a.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["AAA", "BBB", "CCC"]);
    let aaa = app.get("/inventory?symbol=AAA").await.expect(200);
    assert_eq!(aaa["series"].as_array().unwrap().len(), 2);
    app.get("/inventory?limit=0")
        .await
        .expect_error(400, "invalid_argument");
    app.get("/inventory?kind=candle")
        .await
        .expect_error(400, "invalid_argument");
}

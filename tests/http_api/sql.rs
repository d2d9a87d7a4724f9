//! `POST /v1/sql`: JSON and Arrow answers, parameters, errors and the JSON row cap.

use serde_json::json;

use crate::common::{JAN_2024, MINUTE, app, app_with, klines};

const SERIES: &str = "/v1/kline/BTCUSDT/1m";

async fn seeded(app: &crate::common::App, n: usize) {
    app.register_kline("BTCUSDT").await;
    app.post(&format!("{SERIES}/records"), &json!({"records": klines(n)}))
        .await
        .expect(200);
}

#[tokio::test]
async fn json_answer_has_columns_rows_and_stats() {
    let app = app();
    seeded(&app, 100).await;
    let r = app
        .post(
            "/v1/sql",
            &json!({"query": "SELECT ts, close, symbol FROM kline WHERE symbol = $1 ORDER BY ts DESC LIMIT 2", "params": ["BTCUSDT"]}),
        )
        .await
        .expect(200);
    assert_eq!(r["columns"][0]["name"], "ts");
    assert_eq!(r["columns"][1]["type"], "Float64");
    let bars = klines(100);
    assert_eq!(r["rows"][0][0], bars[99]["ts"], "timestamps are epoch ms");
    let close = bars[99]["close"].as_i64().unwrap() as f64 / 100.0;
    assert_eq!(r["rows"][0][1], json!(close));
    assert_eq!(r["rows"][1][2], "BTCUSDT");
    assert_eq!(r["stats"]["series_selected"], 1);
    assert_eq!(r["stats"]["rows_out"], 2);
    let r = app
        .post(
            "/v1/sql",
            &json!({"query": "SELECT count(*) AS n FROM kline_raw WHERE ts >= to_timestamp_millis($1)", "params": [JAN_2024 + 90 * MINUTE]}),
        )
        .await
        .expect(200);
    assert_eq!(r["rows"], json!([[10]]));
}

#[tokio::test]
async fn arrow_answer_is_an_ipc_stream_of_the_same_rows() {
    let app = app();
    seeded(&app, 50).await;
    let q = json!({"query": "SELECT ts, open FROM kline_raw ORDER BY ts"});
    let r = app
        .post_with(
            "/v1/sql",
            &[("accept", "application/vnd.apache.arrow.stream")],
            &q,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.headers["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(r.body.clone()), None)
            .unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    let opens: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            use arrow_array::cast::AsArray;
            b.column(1)
                .as_primitive::<arrow_array::types::Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    let want: Vec<i64> = klines(50)
        .iter()
        .map(|b| b["open"].as_i64().unwrap())
        .collect();
    assert_eq!(opens, want);
}

#[tokio::test]
async fn errors_name_the_problem() {
    let app = app_with(|c| c.http.max_limit = 10);
    seeded(&app, 20).await;
    let m = app
        .post("/v1/sql", &json!({"query": "SELEC ts FROM kline"}))
        .await
        .expect_error(400, "invalid_argument");
    assert!(m.contains("SELEC"), "{m}");
    let m = app
        .post("/v1/sql", &json!({"query": "DELETE FROM kline"}))
        .await
        .expect_error(400, "invalid_argument");
    assert!(m.contains("read-only"), "{m}");
    let m = app
        .post("/v1/sql", &json!({"query": "SELECT ts FROM kline"}))
        .await
        .expect_error(413, "payload_too_large");
    assert!(m.contains("Arrow") && m.contains("Flight SQL"), "{m}");
    // At the cap exactly is fine.
    let r = app
        .post(
            "/v1/sql",
            &json!({"query": "SELECT ts FROM kline LIMIT 10"}),
        )
        .await
        .expect(200);
    assert_eq!(r["rows"].as_array().map(Vec::len), Some(10));
    app.post(
        "/v1/sql",
        &json!({"query": "SELECT $1", "params": [{"a": 1}]}),
    )
    .await
    .expect_error(400, "invalid_argument");
    app.post("/v1/sql", &json!({"sql": "SELECT 1"}))
        .await
        .expect_error(400, "invalid_argument");
}

#[tokio::test]
async fn reads_protection_and_metrics_cover_sql() {
    let app = app_with(|c| {
        c.auth.token = "tok".into();
        c.auth.protect_reads = true;
    });
    app.post("/v1/sql", &json!({"query": "SELECT 1"}))
        .await
        .expect_error(401, "unauthorized");
    let r = app
        .post_with(
            "/v1/sql",
            &[("authorization", "Bearer tok")],
            &json!({"query": "SELECT 1 AS one"}),
        )
        .await
        .expect(200);
    assert_eq!(r["rows"], json!([[1]]));
    let m = app.get("/metrics").await.text();
    assert!(m.contains("fastk_sql_memory_used_bytes 0"), "{m}");
    assert!(m.contains("fastk_sql_queries_running 0"), "{m}");
}

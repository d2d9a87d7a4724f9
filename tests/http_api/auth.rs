//! Bearer-token auth: writes, deletes, admin and registrations need the token when one
//! is configured; reads only with `protect_reads`; operational endpoints never.

use axum::body::Body;
use axum::http::Method;
use serde_json::json;

use crate::common::{app_with, klines};

const TOKEN: &str = "s3cret-token";
const GOOD: &str = "Bearer s3cret-token";

#[tokio::test]
async fn writes_need_the_token() {
    let app = app_with(|c| c.auth.token = TOKEN.into());
    let spec =
        json!({"symbol": "BTCUSDT", "timeframe": "1m", "price_scale": 100, "volume_scale": 1000});
    let r = app.post("/v1/kline/series", &spec).await;
    let msg = r.expect_error(401, "unauthorized");
    assert!(msg.contains("Bearer"), "{msg}");
    assert!(
        r.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    for wrong in ["Bearer nope", "Bearer s3cret-toke", "Basic czNjcmV0", TOKEN] {
        app.post_with("/v1/kline/series", &[("authorization", wrong)], &spec)
            .await
            .expect_error(401, "unauthorized");
    }
    app.post_with("/v1/kline/series", &[("authorization", GOOD)], &spec)
        .await
        .expect(201);

    let url = "/v1/kline/BTCUSDT/1m/records";
    let body = json!({"records": klines(3)});
    app.post(url, &body).await.expect_error(401, "unauthorized");
    app.post_with(url, &[("authorization", "Bearer wrong")], &body)
        .await
        .expect_error(401, "unauthorized");
    let w = app
        .post_with(url, &[("authorization", GOOD)], &body)
        .await
        .expect(200);
    assert_eq!(w["written"], 3);
    // Reads stay open without protect_reads.
    assert_eq!(
        app.get(url).await.expect(200)["records"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    for uri in [
        "/v1/admin/validate",
        "/v1/datasets",
        "/v1/features",
        "/v1/factors",
        "/v1/scalar/series",
    ] {
        app.post(uri, &json!({}))
            .await
            .expect_error(401, "unauthorized");
    }
    app.delete("/v1/kline/BTCUSDT/1m")
        .await
        .expect_error(401, "unauthorized");
    let r = app
        .send(
            Method::DELETE,
            "/v1/kline/BTCUSDT/1m",
            &[("authorization", GOOD)],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status.as_u16(), 204);
}

#[tokio::test]
async fn protect_reads_guards_reads_but_not_operations() {
    let app = app_with(|c| {
        c.auth.token = TOKEN.into();
        c.auth.protect_reads = true;
    });
    let spec =
        json!({"symbol": "BTCUSDT", "timeframe": "1m", "price_scale": 100, "volume_scale": 1000});
    app.post_with("/v1/kline/series", &[("authorization", GOOD)], &spec)
        .await
        .expect(201);
    for uri in [
        "/v1/kline/series",
        "/v1/kline/BTCUSDT/1m",
        "/v1/kline/BTCUSDT/1m/records",
        "/v1/kline/BTCUSDT/1m/latest",
        "/v1/scalar/series",
        "/v1/datasets",
        "/inventory",
    ] {
        app.get(uri).await.expect_error(401, "unauthorized");
        let r = app
            .send(Method::GET, uri, &[("authorization", GOOD)], Body::empty())
            .await;
        assert_eq!(r.status.as_u16(), 200, "{uri}: {}", r.text());
    }
    let q = json!({"predicate": {"op": "gt", "value": 1}});
    app.post("/v1/scalar/A/1m/c/n/query", &q)
        .await
        .expect_error(401, "unauthorized");
    for uri in ["/health", "/metrics", "/openapi.json", "/docs/"] {
        assert_eq!(app.get(uri).await.status.as_u16(), 200, "{uri}");
    }
}

//! Operational endpoints: health, inventory, Prometheus metrics and the OpenAPI
//! document. Only `/inventory` is a data read; the others never need a token.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::ReadAccess;
use super::error::AppError;
use super::extract::{QueryParams, blocking};
use crate::query::Engine;
use crate::query::types::{Health, Inventory, InventoryQuery};

/// Content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The serialized OpenAPI document, built once with the router.
#[derive(Debug, Clone)]
pub struct OpenApiJson(pub Bytes);

/// Health of the server and store
///
/// Cached state (never scans the store): cheap enough to poll.
#[utoipa::path(get, path = "/health", tag = "system", operation_id = "health",
    responses(
        (status = 200, description = "`ok` or `degraded`: the server is serving.", body = Health),
        (status = 503, description = "`failing`: the data root is not accessible.", body = Health),
    ))]
pub async fn health(State(engine): State<Arc<Engine>>) -> Result<Response, AppError> {
    let h = blocking(move || Ok(engine.health())).await?;
    let status = if h.status == "failing" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok((status, Json(h)).into_response())
}

/// Inventory of every series
///
/// Kind, key, rows, first and last `ts`, bytes, version and monthly partitions. With
/// no parameters, every series; `kind` and `symbol` filter, `partitions=false` leaves
/// the partitions out, and `limit` with `after` pages through a large store in key
/// order (`next_after` is the next page's `after`).
#[utoipa::path(get, path = "/inventory", tag = "system", operation_id = "inventory",
    params(InventoryQuery),
    security((), ("bearer" = [])),
    responses((status = 200, description = "The selected series (with partitions unless asked not to), and totals.", body = Inventory)))]
pub async fn inventory(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    QueryParams(q): QueryParams<InventoryQuery>,
) -> Result<Json<Inventory>, AppError> {
    blocking(move || engine.inventory_page(&q)).await.map(Json)
}

/// Prometheus metrics
///
/// Request counts and latency histograms per route and status, rows and bytes read
/// and written, Flight streams, store size.
#[utoipa::path(get, path = "/metrics", tag = "system", operation_id = "metrics",
    responses((status = 200, description = "The Prometheus text exposition format, version 0.0.4.",
        body = String, content_type = "text/plain")))]
pub async fn metrics(State(engine): State<Arc<Engine>>) -> Result<Response, AppError> {
    let text = blocking(move || Ok(engine.metrics_text())).await?;
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
    );
    Ok(resp)
}

/// This OpenAPI document
///
/// The same bytes as `openapi/openapi.json` in the repository.
#[utoipa::path(get, path = "/openapi.json", tag = "system", operation_id = "openapi_document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API.",
        body = Object, content_type = "application/json")))]
pub async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    let mut resp = doc.0.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

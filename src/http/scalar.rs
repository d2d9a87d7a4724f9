//! Scalar series (indicators, features, factors, signals...): registration, listing,
//! metadata, delete, writes, reads and predicate queries.
//!
//! Errors every operation shares (400, 401, 413, 500, 503) are added to the document
//! by [`super::openapi`]; the attributes here list what is specific to each.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::auth::{ReadAccess, WriteAccess};
use super::error::{AppError, ErrorBody};
use super::extract::{BodyBytes, IfMatch, JsonBody, PathParams, QueryParams, blocking};
use super::series::{self, WriteReservation};
use super::types::{
    DeleteRangeParams, LatestParams, ReadParams, ScalarPage, ScalarPath, ScalarWrite, SeriesList,
    WriteHeaders,
};
use crate::query::Engine;
use crate::query::snapshots::VersionList;
use crate::query::types::{
    DeleteRangeResponse, QueryRequest, QueryResponse, RegisterScalar, SeriesInfo, WriteResponse,
};
use crate::record::{SeriesKey, SeriesKind};

fn key(p: &ScalarPath) -> Result<SeriesKey, AppError> {
    Ok(SeriesKey::scalar(
        &p.symbol,
        &p.timeframe,
        &p.category,
        &p.name,
    )?)
}

/// Register a scalar series
///
/// `value_type` is `i64` (default) or `f64`. `timeframe_ms` may be omitted for the
/// standard timeframes. Registering again with identical fields is a no-op (200).
#[utoipa::path(post, path = "/v1/scalar/series", tag = "scalar", operation_id = "register_scalar_series",
    request_body = RegisterScalar,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "The series was created.", body = SeriesInfo),
        (status = 200, description = "An identical series already exists; nothing changed.", body = SeriesInfo),
        (status = 409, description = "`conflict`: the series exists with different fields.", body = ErrorBody),
    ))]
pub async fn register(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    JsonBody(req): JsonBody<RegisterScalar>,
) -> Result<(StatusCode, Json<SeriesInfo>), AppError> {
    blocking(move || engine.register_scalar(&req))
        .await
        .map(series::registered)
}

/// List scalar series
#[utoipa::path(get, path = "/v1/scalar/series", tag = "scalar", operation_id = "list_scalar_series",
    security((), ("bearer" = [])),
    responses((status = 200, description = "Every scalar series with its metadata and statistics.", body = SeriesList)))]
pub async fn list(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
) -> Result<Json<SeriesList>, AppError> {
    blocking(move || {
        Ok(SeriesList {
            series: engine.list_series(SeriesKind::Scalar),
        })
    })
    .await
    .map(Json)
}

/// Get one scalar series
///
/// Metadata, statistics and monthly partitions.
#[utoipa::path(get, path = "/v1/scalar/{symbol}/{timeframe}/{category}/{name}", tag = "scalar", operation_id = "get_scalar_series",
    params(ScalarPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The series' metadata, statistics and partitions.", body = SeriesInfo),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn get(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<ScalarPath>,
) -> Result<Json<SeriesInfo>, AppError> {
    series::info(engine, key(&p)?).await
}

/// Delete a scalar series and all its data
#[utoipa::path(delete, path = "/v1/scalar/{symbol}/{timeframe}/{category}/{name}", tag = "scalar", operation_id = "delete_scalar_series",
    params(ScalarPath),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "The series and its data are gone."),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn delete(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    PathParams(p): PathParams<ScalarPath>,
) -> Result<StatusCode, AppError> {
    series::delete(engine, key(&p)?).await
}

/// Write scalar records
///
/// All-or-nothing upsert: records in any order, a stored `ts` is replaced. Values
/// must be integers for `i64` series; `f64` series take any number, and `null`
/// stores NaN. With `If-Match: "<version>"` the write only applies at that version.
#[utoipa::path(post, path = "/v1/scalar/{symbol}/{timeframe}/{category}/{name}/records", tag = "scalar", operation_id = "write_scalar_records",
    params(ScalarPath, WriteHeaders),
    request_body = ScalarWrite,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every record is durable.", body = WriteResponse),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: the series is not at the If-Match version; nothing was written.", body = ErrorBody),
        (status = 422, description = "`unprocessable`: a `ts` repeats within the request; the message names the record index.", body = ErrorBody),
    ))]
pub async fn write(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    PathParams(p): PathParams<ScalarPath>,
    IfMatch(expected): IfMatch,
    WriteReservation(held, since): WriteReservation,
    BodyBytes(body): BodyBytes,
) -> Result<Json<WriteResponse>, AppError> {
    series::write_scalar(engine, key(&p)?, body, expected, held, since).await
}

/// Read scalar records
///
/// Ascending by `ts`, at most `limit` per page; `next_start_ts` is where the next
/// page starts (null on the last page).
#[utoipa::path(get, path = "/v1/scalar/{symbol}/{timeframe}/{category}/{name}/records", tag = "scalar", operation_id = "read_scalar_records",
    params(ScalarPath, ReadParams),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of records.", body = ScalarPage),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn read(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<ScalarPath>,
    QueryParams(q): QueryParams<ReadParams>,
) -> Result<Response, AppError> {
    series::read(engine, key(&p)?, q).await
}

/// Latest scalar records
///
/// The last `n` records (of the range, when given), ascending by `ts`.
#[utoipa::path(get, path = "/v1/scalar/{symbol}/{timeframe}/{category}/{name}/latest", tag = "scalar", operation_id = "latest_scalar_records",
    params(ScalarPath, LatestParams),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The latest records; `next_start_ts` is always null.", body = ScalarPage),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn latest(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<ScalarPath>,
    QueryParams(q): QueryParams<LatestParams>,
) -> Result<Response, AppError> {
    series::latest(engine, key(&p)?, q).await
}

/// Query a scalar series by value
///
/// Timestamps (and, with `return_values`, values) of the records in the range whose
/// value matches the predicate, with statistics of how much was pruned. A read: it
/// needs a token only when reads are protected. `limit` defaults to
/// `http.default_limit` and is capped at `http.max_limit`; `next_start_ts` pages on.
#[utoipa::path(post, path = "/v1/scalar/{symbol}/{timeframe}/{category}/{name}/query", tag = "scalar", operation_id = "query_scalar_series",
    params(ScalarPath),
    request_body = QueryRequest,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The matching timestamps, values when asked, and query statistics.", body = QueryResponse),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn query(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<ScalarPath>,
    JsonBody(req): JsonBody<QueryRequest>,
) -> Result<Json<QueryResponse>, AppError> {
    let key = key(&p)?;
    let limit = series::page_limit(&engine.config.http, req.limit.map(|l| l as u64))?;
    series::ts_range(req.start_ts, req.end_ts)?;
    blocking(move || engine.query(&key, &req, limit))
        .await
        .map(Json)
}

/// Delete the records of a range
///
/// Removes every record with `start_ts <= ts <= end_ts` (at least one bound) as one
/// all-or-nothing, crash-safe commit: months the range covers are dropped whole, a
/// month it cuts is rewritten. With `If-Match: "<version>"` it applies only at that
/// version. Deleting nothing commits nothing (`deleted` 0, version unchanged).
#[utoipa::path(delete, path = "/v1/scalar/{symbol}/{timeframe}/{category}/{name}/records", tag = "scalar", operation_id = "delete_scalar_records",
    params(ScalarPath, DeleteRangeParams, WriteHeaders),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The rows are gone, durably.", body = DeleteRangeResponse),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: the series is not at the If-Match version; nothing was deleted.", body = ErrorBody),
    ))]
pub async fn delete_records(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    PathParams(p): PathParams<ScalarPath>,
    QueryParams(q): QueryParams<DeleteRangeParams>,
    IfMatch(expected): IfMatch,
) -> Result<Json<DeleteRangeResponse>, AppError> {
    series::delete_range(engine, key(&p)?, q, expected).await
}

/// Readable versions of a scalar series
///
/// The versions a read may name with `version` (or find with `as_of_commit`): the
/// superseded ones still kept (`storage.keep_versions_s`), oldest first, then the
/// current one. A version no longer kept reads 410 `gone` (docs/research.md).
#[utoipa::path(get, path = "/v1/scalar/{symbol}/{timeframe}/{category}/{name}/versions", tag = "scalar", operation_id = "scalar_versions",
    params(ScalarPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The readable versions, the current one last.", body = VersionList),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn versions(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<ScalarPath>,
) -> Result<Json<VersionList>, AppError> {
    let key = key(&p)?;
    blocking(move || engine.versions(&key)).await.map(Json)
}

//! Kline (OHLCV) series: registration, listing, metadata, delete, writes and reads.
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
    DeleteRangeParams, KlinePage, KlinePath, KlineWrite, LatestParams, ReadParams, SeriesList,
    WriteHeaders,
};
use crate::query::Engine;
use crate::query::snapshots::VersionList;
use crate::query::types::{DeleteRangeResponse, RegisterKline, SeriesInfo, WriteResponse};
use crate::record::{SeriesKey, SeriesKind};

fn key(p: &KlinePath) -> Result<SeriesKey, AppError> {
    Ok(SeriesKey::kline(&p.symbol, &p.timeframe)?)
}

/// Register a kline series
///
/// `timeframe_ms` may be omitted for the standard timeframes (1s 1m 3m 5m 15m 30m 1h
/// 2h 4h 6h 8h 12h 1d 1w). Registering again with identical fields is a no-op (200).
#[utoipa::path(post, path = "/v1/kline/series", tag = "kline", operation_id = "register_kline_series",
    request_body = RegisterKline,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "The series was created.", body = SeriesInfo),
        (status = 200, description = "An identical series already exists; nothing changed.", body = SeriesInfo),
        (status = 409, description = "`conflict`: the series exists with different fields.", body = ErrorBody),
    ))]
pub async fn register(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    JsonBody(req): JsonBody<RegisterKline>,
) -> Result<(StatusCode, Json<SeriesInfo>), AppError> {
    blocking(move || engine.register_kline(&req))
        .await
        .map(series::registered)
}

/// List kline series
#[utoipa::path(get, path = "/v1/kline/series", tag = "kline", operation_id = "list_kline_series",
    security((), ("bearer" = [])),
    responses((status = 200, description = "Every kline series with its metadata and statistics.", body = SeriesList)))]
pub async fn list(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
) -> Result<Json<SeriesList>, AppError> {
    blocking(move || {
        Ok(SeriesList {
            series: engine.list_series(SeriesKind::Kline),
        })
    })
    .await
    .map(Json)
}

/// Get one kline series
///
/// Metadata, statistics and monthly partitions.
#[utoipa::path(get, path = "/v1/kline/{symbol}/{timeframe}", tag = "kline", operation_id = "get_kline_series",
    params(KlinePath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The series' metadata, statistics and partitions.", body = SeriesInfo),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn get(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<KlinePath>,
) -> Result<Json<SeriesInfo>, AppError> {
    series::info(engine, key(&p)?).await
}

/// Delete a kline series and all its data
#[utoipa::path(delete, path = "/v1/kline/{symbol}/{timeframe}", tag = "kline", operation_id = "delete_kline_series",
    params(KlinePath),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "The series and its data are gone."),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn delete(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    PathParams(p): PathParams<KlinePath>,
) -> Result<StatusCode, AppError> {
    series::delete(engine, key(&p)?).await
}

/// Write kline records
///
/// All-or-nothing upsert: records in any order, a stored `ts` is replaced. With
/// `If-Match: "<version>"` the write only applies at that series version.
#[utoipa::path(post, path = "/v1/kline/{symbol}/{timeframe}/records", tag = "kline", operation_id = "write_kline_records",
    params(KlinePath, WriteHeaders),
    request_body = KlineWrite,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every record is durable.", body = WriteResponse),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: the series is not at the If-Match version; nothing was written.", body = ErrorBody),
        (status = 422, description = "`unprocessable`: a `ts` repeats within the request or a record breaks the OHLC rules; the message names the record index.", body = ErrorBody),
    ))]
pub async fn write(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    PathParams(p): PathParams<KlinePath>,
    IfMatch(expected): IfMatch,
    WriteReservation(held, since): WriteReservation,
    BodyBytes(body): BodyBytes,
) -> Result<Json<WriteResponse>, AppError> {
    series::write_kline(engine, key(&p)?, body, expected, held, since).await
}

/// Read kline records
///
/// Ascending by `ts`, at most `limit` per page; `next_start_ts` is where the next
/// page starts (null on the last page).
#[utoipa::path(get, path = "/v1/kline/{symbol}/{timeframe}/records", tag = "kline", operation_id = "read_kline_records",
    params(KlinePath, ReadParams),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of records.", body = KlinePage),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn read(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<KlinePath>,
    QueryParams(q): QueryParams<ReadParams>,
) -> Result<Response, AppError> {
    series::read(engine, key(&p)?, q).await
}

/// Latest kline records
///
/// The last `n` records (of the range, when given), ascending by `ts`.
#[utoipa::path(get, path = "/v1/kline/{symbol}/{timeframe}/latest", tag = "kline", operation_id = "latest_kline_records",
    params(KlinePath, LatestParams),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The latest records; `next_start_ts` is always null.", body = KlinePage),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn latest(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<KlinePath>,
    QueryParams(q): QueryParams<LatestParams>,
) -> Result<Response, AppError> {
    series::latest(engine, key(&p)?, q).await
}

/// Delete the records of a range
///
/// Removes every record with `start_ts <= ts <= end_ts` (at least one bound) as one
/// all-or-nothing, crash-safe commit: months the range covers are dropped whole, a
/// month it cuts is rewritten. With `If-Match: "<version>"` it applies only at that
/// version. Deleting nothing commits nothing (`deleted` 0, version unchanged).
#[utoipa::path(delete, path = "/v1/kline/{symbol}/{timeframe}/records", tag = "kline", operation_id = "delete_kline_records",
    params(KlinePath, DeleteRangeParams, WriteHeaders),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The rows are gone, durably.", body = DeleteRangeResponse),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: the series is not at the If-Match version; nothing was deleted.", body = ErrorBody),
    ))]
pub async fn delete_records(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    PathParams(p): PathParams<KlinePath>,
    QueryParams(q): QueryParams<DeleteRangeParams>,
    IfMatch(expected): IfMatch,
) -> Result<Json<DeleteRangeResponse>, AppError> {
    series::delete_range(engine, key(&p)?, q, expected).await
}

/// Readable versions of a kline series
///
/// The versions a read may name with `version` (or find with `as_of_commit`): the
/// superseded ones still kept (`storage.keep_versions_s`), oldest first, then the
/// current one. A version no longer kept reads 410 `gone` (docs/research.md).
#[utoipa::path(get, path = "/v1/kline/{symbol}/{timeframe}/versions", tag = "kline", operation_id = "kline_versions",
    params(KlinePath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The readable versions, the current one last.", body = VersionList),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn versions(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<KlinePath>,
) -> Result<Json<VersionList>, AppError> {
    let key = key(&p)?;
    blocking(move || engine.versions(&key)).await.map(Json)
}

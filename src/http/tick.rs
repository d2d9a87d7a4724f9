//! Trade and quote series (docs/ticks.md): registration, listing, metadata, delete,
//! writes, pages keyed by `(ts, seq)`, latest and range deletes. One set of handlers
//! serves both kinds through the `{kind}` path segment (`trade` or `quote`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{ReadAccess, WriteAccess};
use super::error::{AppError, ErrorBody};
use super::extract::{BodyBytes, IfMatch, JsonBody, PathParams, QueryParams, blocking, parse_json};
use super::series::{self, WriteReservation, json_bytes, latest_n, page_limit, ts_range};
use super::types::SeriesList;
use crate::error::Error;
use crate::query::Engine;
use crate::query::snapshots::{At, VersionList};
use crate::query::tick::{
    QuoteWrite, RegisterTick, TickCursor, TickPage, TradeWrite, quote_batch, tick_key, trade_batch,
};
use crate::query::types::{DeleteRangeResponse, SeriesInfo, WriteResponse};
use crate::record::{SeriesKey, SeriesKind};

/// The kind segment of a tick route.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TickKindPath {
    /// `trade` or `quote`.
    #[param(pattern = "^(trade|quote)$", example = "trade")]
    pub kind: String,
}

/// Path of a trade or quote series.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TickPath {
    /// `trade` or `quote`.
    #[param(pattern = "^(trade|quote)$", example = "trade")]
    pub kind: String,
    /// Symbol: `[A-Za-z0-9._-]{1,64}`, not `.` or `..`.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "BTCUSDT")]
    pub symbol: String,
}

/// Range and paging of a tick read (nanoseconds since the epoch, UTC, inclusive).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TickReadParams {
    /// First timestamp (ns), inclusive; omitted: from the first record.
    #[param(example = 1710028800000000000_i64)]
    pub start_ns: Option<i64>,
    /// Last timestamp (ns), inclusive; omitted: to the last record.
    #[param(example = 1710115199999999999_i64)]
    pub end_ns: Option<i64>,
    /// Maximum records returned (default `http.default_limit`), capped at
    /// `http.max_limit`; `next` pages on.
    #[param(minimum = 1, example = 1000)]
    pub limit: Option<u64>,
    /// Page on after this key: the `ts` of the previous page's `next`.
    pub after_ts: Option<i64>,
    /// Page on after this key: the `seq` of the previous page's `next`.
    pub after_seq: Option<u64>,
    /// Read the series as this snapshot holds it (docs/research.md).
    #[param(example = "q3-2026")]
    pub snapshot: Option<String>,
    /// Read this past version of the series (`GET .../versions` lists them; 410 once
    /// no longer kept).
    pub version: Option<u64>,
    /// Read the version current at this time (ms since the epoch).
    pub as_of_commit: Option<i64>,
}

/// The last records of a tick series.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TickLatestParams {
    /// Number of records, 1 to `http.max_latest`; default 1.
    #[param(minimum = 1, example = 100)]
    pub n: Option<u64>,
    /// Only records at or after this timestamp (ns) count.
    pub start_ns: Option<i64>,
    /// Only records at or before this timestamp (ns) count.
    pub end_ns: Option<i64>,
    /// Read the series as this snapshot holds it (docs/research.md).
    pub snapshot: Option<String>,
    /// Read this past version of the series.
    pub version: Option<u64>,
    /// Read the version current at this time (ms since the epoch).
    pub as_of_commit: Option<i64>,
}

/// The range of a tick delete (ns, inclusive; at least one bound).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TickDeleteParams {
    /// First timestamp deleted (ns), inclusive.
    pub start_ns: Option<i64>,
    /// Last timestamp deleted (ns), inclusive.
    pub end_ns: Option<i64>,
}

pub(super) fn kind_of(kind: &str) -> Result<SeriesKind, AppError> {
    match kind {
        "trade" => Ok(SeriesKind::Trade),
        "quote" => Ok(SeriesKind::Quote),
        other => Err(Error::not_found(format!(
            "no route for kind {}: /v1/{{kind}}/... serves trade and quote series",
            crate::record::echo(other)
        ))
        .into()),
    }
}

fn key(p: &TickPath) -> Result<SeriesKey, AppError> {
    kind_of(&p.kind)?;
    Ok(tick_key(&p.kind, &p.symbol)?)
}

/// Register a trade or quote series
///
/// Registering again with identical fields is a no-op (200); other fields are 409.
#[utoipa::path(post, path = "/v1/{kind}/series", tag = "ticks", operation_id = "register_tick_series",
    params(TickKindPath),
    request_body = RegisterTick,
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "The series was created.", body = SeriesInfo),
        (status = 200, description = "An identical series already exists; nothing changed.", body = SeriesInfo),
        (status = 404, description = "`not_found`: the kind is not trade or quote.", body = ErrorBody),
        (status = 409, description = "`conflict`: the series exists with different fields.", body = ErrorBody),
    ))]
pub async fn register(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    PathParams(p): PathParams<TickKindPath>,
    JsonBody(req): JsonBody<RegisterTick>,
) -> Result<(StatusCode, Json<SeriesInfo>), AppError> {
    let kind = kind_of(&p.kind)?;
    blocking(move || engine.register_tick(kind, &req))
        .await
        .map(series::registered)
}

/// List trade or quote series
#[utoipa::path(get, path = "/v1/{kind}/series", tag = "ticks", operation_id = "list_tick_series",
    params(TickKindPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every series of the kind with its metadata and statistics.", body = SeriesList),
        (status = 404, description = "`not_found`: the kind is not trade or quote.", body = ErrorBody),
    ))]
pub async fn list(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<TickKindPath>,
) -> Result<Json<SeriesList>, AppError> {
    let kind = kind_of(&p.kind)?;
    blocking(move || {
        Ok(SeriesList {
            series: engine.list_series(kind),
        })
    })
    .await
    .map(Json)
}

/// Get one trade or quote series
///
/// Metadata, statistics and partitions (days, hours or months).
#[utoipa::path(get, path = "/v1/{kind}/{symbol}", tag = "ticks", operation_id = "get_tick_series",
    params(TickPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The series' metadata, statistics and partitions.", body = SeriesInfo),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn get(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<TickPath>,
) -> Result<Json<SeriesInfo>, AppError> {
    series::info(engine, key(&p)?).await
}

/// Delete a trade or quote series and all its data
#[utoipa::path(delete, path = "/v1/{kind}/{symbol}", tag = "ticks", operation_id = "delete_tick_series",
    params(TickPath),
    security((), ("bearer" = [])),
    responses(
        (status = 204, description = "The series and its data are gone."),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn delete(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    PathParams(p): PathParams<TickPath>,
) -> Result<StatusCode, AppError> {
    series::delete(engine, key(&p)?).await
}

/// Write trades or quotes
///
/// All-or-nothing, durable before the answer. `ts` in nanoseconds. A record without
/// `seq` gets the next one for its `ts` (an append); a stored `(ts, seq)` is replaced.
/// The body is `{"records": [...]}` of trades (`ts`, `seq`?, `price`, `size`, `side`?,
/// `trade_id`?) or quotes (`ts`, `seq`?, `bid`, `ask`, `bid_size`, `ask_size`).
#[utoipa::path(post, path = "/v1/{kind}/{symbol}/records", tag = "ticks", operation_id = "write_tick_records",
    params(TickPath),
    request_body(content = TradeWrite, description = "Trades, or for `quote` a `QuoteWrite`."),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every record is durable.", body = WriteResponse),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: the series is not at the If-Match version; nothing was written.", body = ErrorBody),
        (status = 422, description = "`unprocessable`: a `(ts, seq)` repeats within the request, a size is negative, a side is not -1/0/1 or a quote is crossed; the message names the record index.", body = ErrorBody),
    ))]
pub async fn write(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    PathParams(p): PathParams<TickPath>,
    IfMatch(expected): IfMatch,
    WriteReservation(held, since): WriteReservation,
    BodyBytes(body): BodyBytes,
) -> Result<Json<WriteResponse>, AppError> {
    let key = key(&p)?;
    blocking(move || {
        let _held = held;
        let batch = match key.kind() {
            SeriesKind::Trade => trade_batch(&parse_json::<TradeWrite>(&body)?.records)?,
            _ => quote_batch(&parse_json::<QuoteWrite>(&body)?.records)?,
        };
        engine.write_since(&key, batch, expected, since)
    })
    .await
    .map(Json)
}

/// Read trades or quotes
///
/// Ascending by `(ts, seq)`, at most `limit` per page; `next` is the key of the page's
/// last record when more follow (pass it as `after_ts` and `after_seq`), else null.
#[utoipa::path(get, path = "/v1/{kind}/{symbol}/records", tag = "ticks", operation_id = "read_tick_records",
    params(TickPath, TickReadParams),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of records.", body = TickPage),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn read(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<TickPath>,
    QueryParams(q): QueryParams<TickReadParams>,
) -> Result<Response, AppError> {
    let key = key(&p)?;
    let limit = page_limit(&engine.config.http, q.limit)?;
    let range = ts_range(q.start_ns, q.end_ns)?;
    let after = match (q.after_ts, q.after_seq) {
        (Some(ts), Some(seq)) => Some(TickCursor { ts, seq }),
        (None, None) => None,
        _ => {
            return Err(AppError::invalid(
                "after_ts and after_seq go together (the previous page's next)",
            ));
        }
    };
    let at = At::new(q.snapshot, q.version, q.as_of_commit)?;
    let bytes = blocking(move || {
        let page = engine.tick_page(&key, &at, range, after, limit)?;
        super::json::tick_page(&page).map_err(Error::internal)
    })
    .await?;
    Ok(json_bytes(bytes))
}

/// Latest trades or quotes
///
/// The last `n` records (of the range, when given), ascending by `(ts, seq)`.
#[utoipa::path(get, path = "/v1/{kind}/{symbol}/latest", tag = "ticks", operation_id = "latest_tick_records",
    params(TickPath, TickLatestParams),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The latest records; `next` is always null.", body = TickPage),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn latest(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<TickPath>,
    QueryParams(q): QueryParams<TickLatestParams>,
) -> Result<Response, AppError> {
    let key = key(&p)?;
    let n = latest_n(&engine.config.http, q.n)?;
    let range = ts_range(q.start_ns, q.end_ns)?;
    let at = At::new(q.snapshot, q.version, q.as_of_commit)?;
    let bytes = blocking(move || {
        let page = engine.latest_at(&key, &at, range, n)?;
        let rows = crate::query::tick::TickRows {
            meta: page.meta,
            slices: page.slices,
            next: None,
        };
        super::json::tick_page(&rows).map_err(Error::internal)
    })
    .await?;
    Ok(json_bytes(bytes))
}

/// Delete the trades or quotes of a range
///
/// Removes every record with `start_ns <= ts <= end_ns` (at least one bound) as one
/// all-or-nothing, crash-safe commit: partitions the range covers are dropped whole,
/// a partition it cuts is rewritten. With `If-Match` it applies only at that version.
#[utoipa::path(delete, path = "/v1/{kind}/{symbol}/records", tag = "ticks", operation_id = "delete_tick_records",
    params(TickPath, TickDeleteParams),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The rows are gone, durably.", body = DeleteRangeResponse),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
        (status = 412, description = "`precondition_failed`: the series is not at the If-Match version; nothing was deleted.", body = ErrorBody),
    ))]
pub async fn delete_records(
    State(engine): State<Arc<Engine>>,
    _: WriteAccess,
    PathParams(p): PathParams<TickPath>,
    QueryParams(q): QueryParams<TickDeleteParams>,
    IfMatch(expected): IfMatch,
) -> Result<Json<DeleteRangeResponse>, AppError> {
    let key = key(&p)?;
    blocking(move || engine.delete_range(&key, q.start_ns, q.end_ns, expected))
        .await
        .map(Json)
}

/// Readable versions of a trade or quote series
///
/// As for klines: the superseded versions still kept (`storage.keep_versions_s`),
/// oldest first, then the current one; a read names one with `version` (or finds one
/// with `as_of_commit`).
#[utoipa::path(get, path = "/v1/{kind}/{symbol}/versions", tag = "ticks", operation_id = "tick_versions",
    params(TickPath),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The readable versions, the current one last.", body = VersionList),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn versions(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<TickPath>,
) -> Result<Json<VersionList>, AppError> {
    let key = key(&p)?;
    blocking(move || engine.versions(&key)).await.map(Json)
}

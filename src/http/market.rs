//! Market queries over HTTP: batch reads of many series (with as-of and resample),
//! the aligned backtest view, and coverage with gaps. The engine does the work
//! ([`crate::query::market`]); these handlers translate bodies and bound pages.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::Response;

use super::auth::{ReadAccess, ReadSymbols};
use super::error::{AppError, ErrorBody};
use super::extract::{JsonBody, PathParams, QueryParams, blocking};
use super::json::{self, SeriesPart};
use super::series::{json_bytes, page_limit};
use super::types::{
    AlignedPage, BatchPage, CoverageParams, KlineBatchRead, KlinePath, ScalarBatchRead, ScalarPath,
};
use crate::error::Error;
use crate::query::Engine;
use crate::query::PriceFormat;
use crate::query::market::spec::{AlignedBody, Coverage, CoverageRequest};
use crate::query::market::{ReadArgs, ReadSpec, Selection};
use crate::record::{SeriesKey, SeriesKind};

/// Read many kline series
///
/// One page per series, in symbol order, with the options of a single-series read
/// plus `as_of` (the cross section: the last bar of each series at or before it)
/// and `latest`. At most `http.max_batch_series` series; `limit` applies to each
/// series and the whole answer holds at most `http.max_limit` records (each series
/// pages on from its own `next_start_ts`). Many more series: Flight tickets with
/// `symbols` (docs/market-queries.md).
#[utoipa::path(post, path = "/v1/kline/batch", tag = "kline", operation_id = "read_kline_batch",
    request_body = KlineBatchRead,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page per series, in symbol order.", body = BatchPage),
        (status = 404, description = "`not_found`: a named series does not exist.", body = ErrorBody),
    ))]
pub async fn kline_batch(
    State(engine): State<Arc<Engine>>,
    access: ReadSymbols,
    JsonBody(req): JsonBody<KlineBatchRead>,
) -> Result<Response, AppError> {
    let sel = Selection {
        kind: SeriesKind::Kline,
        timeframe: req.timeframe,
        scalar: None,
        symbols: req.symbols,
    };
    sel.symbols
        .check(&access.0)
        .inspect_err(|e| engine.auth.note_forbidden(e))?;
    let args = ReadArgs {
        start_ts: req.start_ts,
        end_ts: req.end_ts,
        latest: latest_arg(req.latest)?,
        as_of: req.as_of,
        columns: req.columns,
        price_format: PriceFormat::Raw,
        resample: req.resample,
        agg: None,
        snapshot: req.snapshot,
        version: None,
        as_of_commit: req.as_of_commit,
    };
    batch(engine, sel, args, req.limit).await
}

/// Read many scalar series
///
/// As `POST /v1/kline/batch`, for the scalar series of one category and name.
#[utoipa::path(post, path = "/v1/scalar/batch", tag = "scalar", operation_id = "read_scalar_batch",
    request_body = ScalarBatchRead,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page per series, in symbol order.", body = BatchPage),
        (status = 404, description = "`not_found`: a named series does not exist.", body = ErrorBody),
    ))]
pub async fn scalar_batch(
    State(engine): State<Arc<Engine>>,
    access: ReadSymbols,
    JsonBody(req): JsonBody<ScalarBatchRead>,
) -> Result<Response, AppError> {
    let sel = Selection {
        kind: SeriesKind::Scalar,
        timeframe: req.timeframe,
        scalar: Some((req.category, req.name)),
        symbols: req.symbols,
    };
    sel.symbols
        .check(&access.0)
        .inspect_err(|e| engine.auth.note_forbidden(e))?;
    let args = ReadArgs {
        start_ts: req.start_ts,
        end_ts: req.end_ts,
        latest: latest_arg(req.latest)?,
        as_of: req.as_of,
        columns: None,
        price_format: PriceFormat::Raw,
        resample: req.resample,
        agg: req.agg,
        snapshot: req.snapshot,
        version: None,
        as_of_commit: req.as_of_commit,
    };
    batch(engine, sel, args, req.limit).await
}

fn latest_arg(latest: Option<u64>) -> Result<Option<usize>, AppError> {
    latest
        .map(|n| usize::try_from(n).map_err(|_| AppError::invalid("latest is too large")))
        .transpose()
}

/// A batch read: resolves the series, cuts each page so the whole answer stays
/// within `http.max_limit` records, and serializes the pages in symbol order.
async fn batch(
    engine: Arc<Engine>,
    sel: Selection,
    args: ReadArgs,
    limit: Option<u64>,
) -> Result<Response, AppError> {
    let spec = ReadSpec::new(args)?;
    let per_series = page_limit(&engine.config.http, limit)?;
    let bytes = blocking(move || {
        let http = &engine.config.http;
        let series = engine.select_at(&sel, http.max_batch_series, &spec.at)?;
        let share = (http.max_limit / series.len().max(1)).max(1);
        if let Some(n) = spec.latest
            && n > share.min(http.max_latest)
        {
            return Err(Error::invalid(format!(
                "latest {n} for {} series is over the answer's limit: at most {} per series (http.max_limit {} in all, http.max_latest each)",
                series.len(),
                share.min(http.max_latest),
                http.max_limit
            )));
        }
        // `latest` bounds each series by itself (checked against the share above).
        let limit = match spec.latest {
            Some(n) => n,
            None => per_series.min(share),
        };
        let mut parts = Vec::with_capacity(series.len());
        for s in &series {
            let (batches, next_start_ts) = engine.read_page(s, &spec, limit)?;
            parts.push(SeriesPart {
                symbol: s.meta.key.symbol().into(),
                batches,
                next_start_ts,
            });
        }
        json::series_page(&parts).map_err(Error::internal)
    })
    .await?;
    Ok(json_bytes(bytes))
}

/// Aligned backtest view
///
/// The kline series and named scalar series of the same symbol and timeframe,
/// joined on the kline's `ts`: `exact` takes the value stored at the bar's `ts`,
/// `asof` the last value at or before it within `tolerance_ms`. Each scalar is a
/// nullable column named `category.name`. Paged by bars (`limit`, `next_start_ts`).
#[utoipa::path(post, path = "/v1/kline/{symbol}/{timeframe}/aligned", tag = "kline", operation_id = "read_kline_aligned",
    params(KlinePath),
    request_body = AlignedBody,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "One page of bars with their scalar values.", body = AlignedPage),
        (status = 404, description = "`not_found`: the kline series or a scalar series does not exist.", body = ErrorBody),
    ))]
pub async fn aligned(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<KlinePath>,
    JsonBody(body): JsonBody<AlignedBody>,
) -> Result<Response, AppError> {
    let key = SeriesKey::kline(&p.symbol, &p.timeframe)?;
    let limit = page_limit(&engine.config.http, body.limit)?;
    let bytes = blocking(move || {
        let plan = engine.aligned(&key, &body)?;
        let mut batches = Vec::new();
        let (next, rows) = plan.run(limit, Some(limit), &mut |b| {
            batches.push(b);
            true
        })?;
        let ncols = plan.schema.fields().len() as u64;
        engine.metrics.add_read(rows, rows * ncols * 8);
        json::batches_page(&batches, next).map_err(Error::internal)
    })
    .await?;
    Ok(json_bytes(bytes))
}

/// Coverage and gaps of a kline series
///
/// Expected bars are the grid `first bar + k * timeframe_ms` inside the range
/// (default: the series' first to last bar); `calendar=weekdays` expects none on
/// Saturday and Sunday UTC. Gaps are runs of missing grid points (an excluded
/// weekend does not split one); `last_run` is the latest run of `complete_n`
/// consecutive present bars or more.
#[utoipa::path(get, path = "/v1/kline/{symbol}/{timeframe}/coverage", tag = "kline", operation_id = "kline_coverage",
    params(KlinePath, CoverageParams),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Coverage, gaps and the last complete run.", body = Coverage),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn kline_coverage(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<KlinePath>,
    QueryParams(q): QueryParams<CoverageParams>,
) -> Result<Json<Coverage>, AppError> {
    let key = SeriesKey::kline(&p.symbol, &p.timeframe)?;
    coverage(engine, key, q).await
}

/// Coverage and gaps of a scalar series
///
/// As the kline coverage, over the scalar series' timestamps.
#[utoipa::path(get, path = "/v1/scalar/{symbol}/{timeframe}/{category}/{name}/coverage", tag = "scalar", operation_id = "scalar_coverage",
    params(ScalarPath, CoverageParams),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Coverage, gaps and the last complete run.", body = Coverage),
        (status = 404, description = "`not_found`: no such series.", body = ErrorBody),
    ))]
pub async fn scalar_coverage(
    State(engine): State<Arc<Engine>>,
    _: ReadAccess,
    PathParams(p): PathParams<ScalarPath>,
    QueryParams(q): QueryParams<CoverageParams>,
) -> Result<Json<Coverage>, AppError> {
    let key = SeriesKey::scalar(&p.symbol, &p.timeframe, &p.category, &p.name)?;
    coverage(engine, key, q).await
}

async fn coverage(
    engine: Arc<Engine>,
    key: SeriesKey,
    q: CoverageParams,
) -> Result<Json<Coverage>, AppError> {
    let req = CoverageRequest {
        start_ts: q.start_ts,
        end_ts: q.end_ts,
        calendar: q.calendar,
        complete_n: q.complete_n,
        max_gaps: q.max_gaps,
        snapshot: q.snapshot,
        version: q.version,
        as_of_commit: q.as_of_commit,
    };
    blocking(move || engine.coverage(&key, &req))
        .await
        .map(Json)
}

//! What kline and scalar handlers share: limits, ranges, reads, writes, deletes.
//! The handlers in [`super::kline`] and [`super::scalar`] only build the key.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::error::AppError;
use super::extract::{blocking, parse_json};
use super::json;
use super::types::{
    DeleteRangeParams, KlineWrite, LatestParams, ReadParams, ScalarRecordIn, ScalarWrite,
};
use crate::config::HttpConfig;
use crate::error::Error;
use crate::query::Engine;
use crate::query::WriteBatch;
use crate::query::budget::{HTTP_BODY_EXPANSION, Reservation};
use crate::query::market::spec::Resample;
use crate::query::market::{ReadArgs, ReadSpec};
use crate::query::snapshots::At;
use crate::query::types::{DeleteRangeResponse, SeriesInfo, WriteResponse};
use crate::record::{SeriesKey, TsRange, ValueType};

/// The page size of a read: `limit` or `http.default_limit`, silently capped at
/// `http.max_limit` (the client pages on with `next_start_ts`); 0 is refused.
pub fn page_limit(cfg: &HttpConfig, limit: Option<u64>) -> Result<usize, AppError> {
    match limit {
        None => Ok(cfg.default_limit),
        Some(0) => Err(AppError::invalid(
            "limit must be at least 1 (omit it for the default page size)",
        )),
        Some(n) => Ok(usize::try_from(n).map_or(cfg.max_limit, |n| n.min(cfg.max_limit))),
    }
}

/// An inclusive range; `start_ts` after `end_ts` is a client mistake, not an empty read.
pub fn ts_range(start_ts: Option<i64>, end_ts: Option<i64>) -> Result<TsRange, AppError> {
    if let (Some(a), Some(b)) = (start_ts, end_ts)
        && a > b
    {
        return Err(AppError::invalid(format!(
            "start_ts ({a}) must not be after end_ts ({b}); both ends are inclusive"
        )));
    }
    Ok(TsRange::new(start_ts, end_ts))
}

/// A JSON body that is already serialized.
pub fn json_bytes(bytes: Vec<u8>) -> Response {
    let mut resp = bytes.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `GET .../records`: one page, serialized from the mapped chunks on a blocking thread.
pub async fn read(
    engine: Arc<Engine>,
    key: SeriesKey,
    p: ReadParams,
) -> Result<Response, AppError> {
    let limit = page_limit(&engine.config.http, p.limit)?;
    let range = ts_range(p.start_ts, p.end_ts)?;
    if let Some(timeframe) = p.resample {
        let spec = ReadSpec::new(ReadArgs {
            start_ts: p.start_ts,
            end_ts: p.end_ts,
            resample: Some(Resample {
                timeframe,
                offset_ms: p.offset_ms,
                fill: p.fill,
                agg: None,
            }),
            agg: p.agg,
            snapshot: p.snapshot.clone(),
            version: p.version,
            as_of_commit: p.as_of_commit,
            ..ReadArgs::default()
        })?;
        let bytes = blocking(move || {
            let series = engine.series_at(&key, &spec.at)?;
            let (batches, next) = engine.read_page(&series, &spec, limit)?;
            json::batches_page(&batches, next).map_err(Error::internal)
        })
        .await?;
        return Ok(json_bytes(bytes));
    }
    if p.offset_ms.is_some() || p.fill.is_some() || p.agg.is_some() {
        return Err(AppError::invalid(
            "offset_ms, fill and agg apply together with resample (e.g. ?resample=1h&fill=prev)",
        ));
    }
    let at = At::new(p.snapshot, p.version, p.as_of_commit)?;
    let bytes = blocking(move || {
        let page = engine.read_at(&key, &at, range, limit)?;
        json::page(&page).map_err(Error::internal)
    })
    .await?;
    Ok(json_bytes(bytes))
}

/// The `n` of a latest read: 1 when absent, else 1 to `http.max_latest`.
pub fn latest_n(cfg: &HttpConfig, n: Option<u64>) -> Result<usize, AppError> {
    let max = cfg.max_latest;
    match n {
        None => Ok(1),
        Some(n) if n >= 1 && n <= max as u64 => Ok(n as usize),
        Some(n) => Err(AppError::invalid(format!(
            "n must be between 1 and {max} (http.max_latest), got {n}"
        ))),
    }
}

/// `GET .../latest`: the last `n` records of the range (default 1), ascending.
pub async fn latest(
    engine: Arc<Engine>,
    key: SeriesKey,
    p: LatestParams,
) -> Result<Response, AppError> {
    let n = latest_n(&engine.config.http, p.n)?;
    let range = ts_range(p.start_ts, p.end_ts)?;
    let at = At::new(p.snapshot, p.version, p.as_of_commit)?;
    let bytes = blocking(move || {
        let page = engine.latest_at(&key, &at, range, n)?;
        json::page(&page).map_err(Error::internal)
    })
    .await?;
    Ok(json_bytes(bytes))
}

/// `GET` of one series: metadata, statistics and partitions.
pub async fn info(engine: Arc<Engine>, key: SeriesKey) -> Result<Json<SeriesInfo>, AppError> {
    blocking(move || engine.series_info(&key)).await.map(Json)
}

/// `DELETE` of one series and its data.
pub async fn delete(engine: Arc<Engine>, key: SeriesKey) -> Result<StatusCode, AppError> {
    blocking(move || engine.delete_series(&key)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE .../records`: the rows of a range, all-or-nothing, `If-Match` honoured.
pub async fn delete_range(
    engine: Arc<Engine>,
    key: SeriesKey,
    p: DeleteRangeParams,
    expected: Option<u64>,
) -> Result<Json<DeleteRangeResponse>, AppError> {
    blocking(move || engine.delete_range(&key, p.start_ts, p.end_ts, expected))
        .await
        .map(Json)
}

/// 201 when the registration created the series, 200 when an identical one existed.
pub fn registered((info, created): (SeriesInfo, bool)) -> (StatusCode, Json<SeriesInfo>) {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(info))
}

/// Builds the column-major batch of a scalar write from the values' JSON text:
/// integers for `i64` series; any number for `f64` series (stored as its bits, parsed
/// with correct rounding), where `null` stores NaN so a read page can be written back.
pub fn scalar_batch(records: &[ScalarRecordIn<'_>], vt: ValueType) -> Result<WriteBatch, Error> {
    let mut b = WriteBatch::with_capacity(2, records.len());
    for (i, r) in records.iter().enumerate() {
        b.cols[0].push(r.ts);
        b.cols[1].push(scalar_value_bits(i, r.value.get(), vt)?);
    }
    Ok(b)
}

/// The stored bits of record `i`'s value `text` (its JSON text) for a series of `vt`.
pub fn scalar_value_bits(i: usize, text: &str, vt: ValueType) -> Result<i64, Error> {
    Ok(match vt {
        ValueType::I64 => text.parse::<i64>().map_err(|_| {
            Error::invalid(format!(
                "record {i}: value {} is not a 64-bit integer; this series stores i64 values",
                clip(text)
            ))
        })?,
        ValueType::F64 if text == "null" => f64::NAN.to_bits() as i64,
        ValueType::F64 => match text.as_bytes().first() {
            Some(b'-' | b'0'..=b'9') => text.parse::<f64>().map_err(|_| {
                Error::invalid(format!("record {i}: value {} is not a number", clip(text)))
            })?,
            _ => {
                return Err(Error::invalid(format!(
                    "record {i}: value {} must be a number or null",
                    clip(text)
                )));
            }
        }
        .to_bits() as i64,
    })
}

/// At most 40 characters of client text for an error message.
fn clip(text: &str) -> String {
    text.chars().take(40).collect()
}

/// A record POST's share of the in-flight write budget, reserved before its body is
/// read: `Content-Length` (or, without one, `http.max_body_bytes`) times
/// [`HTTP_BODY_EXPANSION`]. A full budget waits up to `storage.write_budget_wait_ms`,
/// then answers 503 `unavailable` (retry); a body that could never fit, 413.
pub struct WriteReservation(pub Reservation, pub u64);

impl FromRequestParts<Arc<Engine>> for WriteReservation {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, engine: &Arc<Engine>) -> Result<Self, AppError> {
        let max = engine.config.http.max_body_bytes as u64;
        let len = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(max, |n| n.min(max));
        let held = engine
            .write_budget
            .reserve(len.saturating_mul(HTTP_BODY_EXPANSION))
            .await?;
        // Taken as the request arrives, before its body: the write is bound to the
        // series that exist now (`Engine::series_since`).
        let since = engine.write_begins();
        Ok(WriteReservation(held, since))
    }
}

/// `POST .../records` of a kline series: parsed and written on a blocking thread,
/// which holds the request's budget reservation until the write is done.
pub async fn write_kline(
    engine: Arc<Engine>,
    key: SeriesKey,
    body: Bytes,
    expected: Option<u64>,
    held: Reservation,
    since: u64,
) -> Result<Json<WriteResponse>, AppError> {
    blocking(move || {
        let _held = held;
        let w: KlineWrite = parse_json(&body)?;
        engine.write_kline_since(&key, &w.records, expected, since)
    })
    .await
    .map(Json)
}

/// `POST .../records` of a scalar series: as [`write_kline`].
pub async fn write_scalar(
    engine: Arc<Engine>,
    key: SeriesKey,
    body: Bytes,
    expected: Option<u64>,
    held: Reservation,
    since: u64,
) -> Result<Json<WriteResponse>, AppError> {
    blocking(move || {
        let _held = held;
        let w: ScalarWrite<'_> = parse_json(&body)?;
        let vt = engine.series_since(&key, since)?.meta.value_type;
        let batch = scalar_batch(&w.records, vt)?;
        engine.write_since(&key, batch, expected, since)
    })
    .await
    .map(Json)
}

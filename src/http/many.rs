//! Many series in one write: `POST /v1/kline/records` and `POST /v1/scalar/records`
//! carry rows of many symbols of one timeframe (and, for scalars, one category and
//! name), `POST /v1/trade/records` and `POST /v1/quote/records` trades or quotes of
//! many symbols, committed as one all-or-nothing unit through the write-ahead log: the write
//! a feed handler makes once a minute for every symbol.

use std::borrow::Cow;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::auth::WriteSymbols;
use super::error::{AppError, ErrorBody};
use super::extract::{BodyBytes, JsonBody, PathParams, blocking, parse_json};
use super::series::{WriteReservation, scalar_value_bits};
use crate::query::Engine;
use crate::query::many::{Grouped, ManyRows};
use crate::query::tick::{seq_value, tick_key};
use crate::query::types::{
    ManyWriteResponse, RegisterKlineMany, RegisterManyResponse, RegisterScalarMany,
};
use crate::record::{SeriesKey, SeriesKind};

/// One kline record of a many-series write.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"symbol": "BTCUSDT", "ts": 1704067200000_i64, "open": 4200000, "high": 4210000, "low": 4195000, "close": 4205000, "volume": 1250}))]
pub struct KlineSymbolRecord<'a> {
    // Borrowed from the request body when it has no escapes (a write of thousands of
    // symbols allocates none for them).
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub symbol: Cow<'a, str>,
    /// Milliseconds since the Unix epoch, UTC.
    pub ts: i64,
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    pub volume: i64,
}

/// Kline records of many symbols of one timeframe, written as one unit.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"timeframe": "1m", "records": [
    {"symbol": "BTCUSDT", "ts": 1704067200000_i64, "open": 4200000, "high": 4210000, "low": 4195000, "close": 4205000, "volume": 1250},
    {"symbol": "ETHUSDT", "ts": 1704067200000_i64, "open": 228000, "high": 228500, "low": 227900, "close": 228200, "volume": 9100}]}))]
pub struct KlineManyWrite<'a> {
    pub timeframe: String,
    /// Any order; a (symbol, ts) may appear once; a stored ts is replaced.
    #[serde(borrow)]
    pub records: Vec<KlineSymbolRecord<'a>>,
}

/// One scalar record of a many-series write.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"symbol": "BTCUSDT", "ts": 1704067200000_i64, "value": 71.25}))]
pub struct ScalarSymbolRecordIn<'a> {
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub symbol: Cow<'a, str>,
    /// Milliseconds since the Unix epoch, UTC.
    pub ts: i64,
    /// An integer for `i64` series; any number for `f64` series, where `null` stores NaN.
    #[serde(borrow)]
    #[schema(value_type = Option<f64>, required = true)]
    pub value: &'a RawValue,
}

/// Scalar records of many symbols of one (timeframe, category, name), written as one unit.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"timeframe": "1m", "category": "indicator", "name": "rsi_14", "records": [
    {"symbol": "BTCUSDT", "ts": 1704067200000_i64, "value": 71.25},
    {"symbol": "ETHUSDT", "ts": 1704067200000_i64, "value": 48.5}]}))]
pub struct ScalarManyWrite<'a> {
    pub timeframe: String,
    pub category: String,
    pub name: String,
    /// Any order; a (symbol, ts) may appear once; a stored ts is replaced.
    #[serde(borrow)]
    pub records: Vec<ScalarSymbolRecordIn<'a>>,
}

/// One trade of a many-symbol write: a trade record (`POST /v1/trade/{symbol}/records`)
/// with its symbol.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"symbol": "AAPL", "ts": 1710028800123456789_i64, "price": 17250, "size": 100, "side": 1}))]
pub struct TradeSymbolIn<'a> {
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub symbol: Cow<'a, str>,
    /// Nanoseconds since the Unix epoch, UTC.
    pub ts: i64,
    /// Omitted: the next `seq` for this `ts` (an append). Given: a stored
    /// `(ts, seq)` is replaced (a safe retry). `2^64 - 1` is reserved.
    #[serde(default)]
    pub seq: Option<u64>,
    pub price: i64,
    pub size: i64,
    /// 1 buyer-initiated, -1 seller-initiated, 0 unknown (default).
    #[serde(default)]
    pub side: i64,
    /// The venue's trade id; 0 when absent.
    #[serde(default)]
    pub trade_id: i64,
}

/// One quote of a many-symbol write: a quote record with its symbol.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"symbol": "AAPL", "ts": 1710028800123456789_i64, "bid": 17249, "ask": 17251, "bid_size": 300, "ask_size": 200}))]
pub struct QuoteSymbolIn<'a> {
    #[serde(borrow)]
    #[schema(value_type = String)]
    pub symbol: Cow<'a, str>,
    /// Nanoseconds since the Unix epoch, UTC.
    pub ts: i64,
    /// As for trades.
    #[serde(default)]
    pub seq: Option<u64>,
    pub bid: i64,
    pub ask: i64,
    pub bid_size: i64,
    pub ask_size: i64,
}

/// Trades of many symbols, written as one unit (`POST /v1/trade/records`).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"records": [
    {"symbol": "AAPL", "ts": 1710028800123456789_i64, "price": 17250, "size": 100, "side": 1},
    {"symbol": "MSFT", "ts": 1710028800123456789_i64, "price": 41520, "size": 20, "side": -1, "trade_id": 9912}]}))]
pub struct TradeManyWrite<'a> {
    /// Any order; a record without `seq` gets the next one of its symbol and `ts` in
    /// the order of this list.
    #[serde(borrow)]
    pub records: Vec<TradeSymbolIn<'a>>,
}

/// Quotes of many symbols, written as one unit (`POST /v1/quote/records`).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"records": [
    {"symbol": "AAPL", "ts": 1710028800123456789_i64, "bid": 17249, "ask": 17251, "bid_size": 300, "ask_size": 200}]}))]
pub struct QuoteManyWrite<'a> {
    /// As for trades.
    #[serde(borrow)]
    pub records: Vec<QuoteSymbolIn<'a>>,
}

/// Write trades or quotes of many symbols
///
/// One all-or-nothing write of records of many trade (or quote) series, each record
/// naming its symbol: every named series must exist; on any error nothing is written.
/// The whole request is one record of the write-ahead log, durable before the answer:
/// the write a feed handler makes for every symbol it saw since the last one. A
/// record without `seq` gets the next `seq` of its symbol and `ts`, in request order.
/// A record that breaks a rule is named by its symbol and its index among that
/// symbol's records.
#[utoipa::path(post, path = "/v1/{kind}/records", tag = "ticks", operation_id = "write_tick_many",
    params(super::tick::TickKindPath),
    request_body(content = TradeManyWrite, description = "Trades, or for `quote` a `QuoteManyWrite`."),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every record of every series is durable.", body = ManyWriteResponse),
        (status = 404, description = "`not_found`: a named series does not exist, or the kind is not trade or quote (the message names it); nothing was written.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: more rows than `storage.max_write_rows` or the log's record size; nothing was written.", body = ErrorBody),
        (status = 422, description = "`unprocessable`: a `(symbol, ts, seq)` repeats, a size is negative, a side is not -1/0/1 or a quote is crossed; the message names the symbol and the record; nothing was written.", body = ErrorBody),
    ))]
pub async fn write_ticks(
    State(engine): State<Arc<Engine>>,
    access: WriteSymbols,
    PathParams(p): PathParams<super::tick::TickKindPath>,
    WriteReservation(held, since): WriteReservation,
    BodyBytes(body): BodyBytes,
) -> Result<Json<ManyWriteResponse>, AppError> {
    let kind = super::tick::kind_of(&p.kind)?;
    blocking(move || {
        let _held = held;
        let template = tick_key(&p.kind, "_")?;
        let rows = match kind {
            SeriesKind::Trade => {
                let w: TradeManyWrite = parse_json(&body)?;
                let rows = w.records.iter().map(|r| {
                    (
                        &*r.symbol,
                        r.seq,
                        [r.ts, 0, r.price, r.size, r.side, r.trade_id],
                    )
                });
                tick_rows(&engine, &access, template, since, w.records.len(), rows)?
            }
            _ => {
                let w: QuoteManyWrite = parse_json(&body)?;
                let rows = w.records.iter().map(|r| {
                    (
                        &*r.symbol,
                        r.seq,
                        [r.ts, 0, r.bid, r.ask, r.bid_size, r.ask_size],
                    )
                });
                tick_rows(&engine, &access, template, since, w.records.len(), rows)?
            }
        };
        engine.write_rows(rows)
    })
    .await
    .map(Json)
}

/// The groups of a many-symbol tick write: each record's symbol (checked against the
/// token first), its `seq` (`None`: numbered by the store) and its six columns (the
/// `seq` slot is filled here).
fn tick_rows<'a>(
    engine: &Engine,
    access: &WriteSymbols,
    template: SeriesKey,
    since: u64,
    records: usize,
    rows: impl Iterator<Item = (&'a str, Option<u64>, [i64; 6])> + Clone,
) -> Result<Grouped, crate::error::Error> {
    access.check(engine, rows.clone().map(|r| r.0))?;
    let mut groups = ManyRows::new(template, records, since);
    for (i, (symbol, seq, mut row)) in rows.enumerate() {
        row[1] = seq_value(i, seq)?;
        let g = groups.group(engine, symbol)?;
        for (col, v) in groups.batch(g).cols.iter_mut().zip(row) {
            col.push(v);
        }
    }
    Ok(groups.finish())
}

/// Write kline records of many symbols
///
/// One all-or-nothing write of rows of many series of one timeframe: every named series
/// must exist; on any error nothing is written. The whole request is one record of the
/// write-ahead log, durable before the answer.
#[utoipa::path(post, path = "/v1/kline/records", tag = "kline", operation_id = "write_kline_many",
    request_body = KlineManyWrite,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every record of every series is durable.", body = ManyWriteResponse),
        (status = 404, description = "`not_found`: a named series does not exist (the message names it); nothing was written.", body = ErrorBody),
        (status = 422, description = "`unprocessable`: a (symbol, ts) repeats or a record breaks the OHLC rules; nothing was written.", body = ErrorBody),
    ))]
pub async fn write_kline(
    State(engine): State<Arc<Engine>>,
    access: WriteSymbols,
    WriteReservation(held, since): WriteReservation,
    BodyBytes(body): BodyBytes,
) -> Result<Json<ManyWriteResponse>, AppError> {
    blocking(move || {
        let _held = held;
        let w: KlineManyWrite = parse_json(&body)?;
        access.check(&engine, w.records.iter().map(|r| &*r.symbol))?;
        let template = SeriesKey::kline("_", &w.timeframe)?;
        let mut rows = ManyRows::new(template, w.records.len(), since);
        for r in &w.records {
            let g = rows.group(&engine, &r.symbol)?;
            let b = rows.batch(g);
            for (c, v) in [r.ts, r.open, r.high, r.low, r.close, r.volume]
                .into_iter()
                .enumerate()
            {
                b.cols[c].push(v);
            }
        }
        engine.write_rows(rows.finish())
    })
    .await
    .map(Json)
}

/// Write scalar records of many symbols
///
/// As `POST /v1/kline/records`, for the scalar series (symbol, timeframe, category,
/// name) of every symbol named.
#[utoipa::path(post, path = "/v1/scalar/records", tag = "scalar", operation_id = "write_scalar_many",
    request_body = ScalarManyWrite,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every record of every series is durable.", body = ManyWriteResponse),
        (status = 404, description = "`not_found`: a named series does not exist (the message names it); nothing was written.", body = ErrorBody),
        (status = 422, description = "`unprocessable`: a (symbol, ts) repeats; nothing was written.", body = ErrorBody),
    ))]
pub async fn write_scalar(
    State(engine): State<Arc<Engine>>,
    access: WriteSymbols,
    WriteReservation(held, since): WriteReservation,
    BodyBytes(body): BodyBytes,
) -> Result<Json<ManyWriteResponse>, AppError> {
    blocking(move || {
        let _held = held;
        let w: ScalarManyWrite<'_> = parse_json(&body)?;
        access.check(&engine, w.records.iter().map(|r| &*r.symbol))?;
        let template = SeriesKey::scalar("_", &w.timeframe, &w.category, &w.name)?;
        let mut rows = ManyRows::new(template, w.records.len(), since);
        for (i, r) in w.records.iter().enumerate() {
            let g = rows.group(&engine, &r.symbol)?;
            let bits = scalar_value_bits(i, r.value.get(), rows.value_type(g))?;
            let b = rows.batch(g);
            b.cols[0].push(r.ts);
            b.cols[1].push(bits);
        }
        engine.write_rows(rows.finish())
    })
    .await
    .map(Json)
}

/// Register many kline series
///
/// One all-or-nothing batch (at most 100,000 series): each is checked as a single
/// registration is; series that exist with identical fields are left as they are;
/// different fields under an existing key fail the whole request (409). Much cheaper
/// per series than one request each.
#[utoipa::path(post, path = "/v1/kline/series/many", tag = "kline", operation_id = "register_kline_series_many",
    request_body = RegisterKlineMany,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every series exists now.", body = RegisterManyResponse),
        (status = 409, description = "`conflict`: a series exists with different fields; nothing was registered.", body = ErrorBody),
    ))]
pub async fn register_kline(
    State(engine): State<Arc<Engine>>,
    access: WriteSymbols,
    JsonBody(req): JsonBody<RegisterKlineMany>,
) -> Result<Json<RegisterManyResponse>, AppError> {
    access.check(&engine, req.series.iter().map(|r| r.symbol.as_str()))?;
    blocking(move || engine.register_kline_many(&req.series))
        .await
        .map(Json)
}

/// Register many scalar series
///
/// As `POST /v1/kline/series/many`, for scalar series.
#[utoipa::path(post, path = "/v1/scalar/series/many", tag = "scalar", operation_id = "register_scalar_series_many",
    request_body = RegisterScalarMany,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Every series exists now.", body = RegisterManyResponse),
        (status = 409, description = "`conflict`: a series exists with different fields; nothing was registered.", body = ErrorBody),
    ))]
pub async fn register_scalar(
    State(engine): State<Arc<Engine>>,
    access: WriteSymbols,
    JsonBody(req): JsonBody<RegisterScalarMany>,
) -> Result<Json<RegisterManyResponse>, AppError> {
    access.check(&engine, req.series.iter().map(|r| r.symbol.as_str()))?;
    blocking(move || engine.register_scalar_many(&req.series))
        .await
        .map(Json)
}

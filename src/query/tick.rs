//! Trade and quote series (docs/ticks.md): registration, JSON records in and out,
//! pages keyed by `(ts, seq)`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::types::SeriesInfo;
use super::{Engine, WriteBatch};
use crate::error::{Error, Result};
use crate::record::{
    SEQ_UNASSIGNED, SeriesKey, SeriesKind, SeriesMeta, TsRange, ValueType, tick_partition_ms,
};
use crate::storage::snapshot::ChunkSlice;

/// Register a trade or quote series.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"symbol": "BTCUSDT", "price_scale": 100, "size_scale": 100000, "partition": "day"}))]
pub struct RegisterTick {
    pub symbol: String,
    /// Prices are stored as integers: real price = integer / price_scale.
    pub price_scale: i64,
    /// Sizes are stored as integers: real size = integer / size_scale.
    pub size_scale: i64,
    /// The unit of files, sealing, retention and rewrites: `day` (default), `hour`
    /// or `month`.
    #[serde(default)]
    pub partition: Option<String>,
    /// Partitions entirely older than `now - retention_ms` are dropped in the
    /// background; 0 keeps everything; absent: `storage.retention_ms`.
    #[serde(default)]
    pub retention_ms: Option<i64>,
}

/// One trade as written. `ts` in nanoseconds since the epoch, UTC.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ts": 1710028800123456789_i64, "price": 6843250, "size": 1500, "side": 1}))]
pub struct TradeIn {
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

/// One quote (best bid and offer) as written. `ts` in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ts": 1710028800123456789_i64, "bid": 6843200, "ask": 6843250, "bid_size": 12000, "ask_size": 8000}))]
pub struct QuoteIn {
    pub ts: i64,
    /// As for trades.
    #[serde(default)]
    pub seq: Option<u64>,
    pub bid: i64,
    pub ask: i64,
    pub bid_size: i64,
    pub ask_size: i64,
}

/// `POST /v1/trade/{symbol}/records`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"records": [{"ts": 1710028800123456789_i64, "price": 6843250, "size": 1500, "side": 1}, {"ts": 1710028800123456789_i64, "price": 6843300, "size": 20, "side": -1, "trade_id": 9912}]}))]
pub struct TradeWrite {
    pub records: Vec<TradeIn>,
}

/// `POST /v1/quote/{symbol}/records`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"records": [{"ts": 1710028800123456789_i64, "bid": 6843200, "ask": 6843250, "bid_size": 12000, "ask_size": 8000}]}))]
pub struct QuoteWrite {
    pub records: Vec<QuoteIn>,
}

/// Where the next page of ticks starts: pass them as `after_ts` and `after_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"ts": 1710028800123456789_i64, "seq": 2}))]
pub struct TickCursor {
    pub ts: i64,
    pub seq: u64,
}

/// A page of ticks: the records (every column of the kind, `seq` included) and the
/// key after which the next page starts (`null` on the last page).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"records": [{"ts": 1710028800123456789_i64, "seq": 0, "price": 6843250, "size": 1500, "side": 1, "trade_id": 0}], "next": null}))]
pub struct TickPage {
    pub records: Vec<serde_json::Value>,
    #[schema(required = true)]
    pub next: Option<TickCursor>,
}

/// A page of tick rows and where the next one starts.
pub struct TickRows {
    pub meta: Arc<SeriesMeta>,
    pub slices: Vec<ChunkSlice>,
    pub next: Option<TickCursor>,
}

/// The key of a trade or quote series from its kind's path segment.
pub fn tick_key(kind: &str, symbol: &str) -> Result<SeriesKey> {
    let key = match kind {
        "trade" => SeriesKey::trade(symbol),
        "quote" => SeriesKey::quote(symbol),
        other => {
            return Err(Error::not_found(format!(
                "no such kind {}: tick series are trade or quote",
                crate::record::echo(other)
            )));
        }
    };
    Ok(key?)
}

/// The metadata a registration asks for.
fn tick_meta(kind: SeriesKind, r: &RegisterTick) -> Result<SeriesMeta> {
    let key = match kind {
        SeriesKind::Trade => SeriesKey::trade(&r.symbol)?,
        _ => SeriesKey::quote(&r.symbol)?,
    };
    if r.price_scale <= 0 || r.size_scale <= 0 {
        return Err(Error::invalid(
            "price_scale and size_scale must be positive integers",
        ));
    }
    let partition = r.partition.as_deref().unwrap_or("day");
    let timeframe_ms = tick_partition_ms(partition).ok_or_else(|| {
        Error::invalid(format!(
            "partition must be \"day\", \"hour\" or \"month\", got {}",
            crate::record::echo(partition)
        ))
    })?;
    Ok(SeriesMeta {
        key,
        timeframe_ms,
        price_scale: r.price_scale,
        volume_scale: r.size_scale,
        value_type: ValueType::I64,
    })
}

/// The `seq` column value of a record: its `seq`, or "assign one".
fn seq_value(i: usize, seq: Option<u64>) -> Result<i64> {
    match seq {
        None => Ok(SEQ_UNASSIGNED),
        Some(s) if s == SEQ_UNASSIGNED as u64 => Err(Error::invalid(format!(
            "record {i}: seq {s} is reserved (omit seq to have the next one assigned)"
        ))),
        Some(s) => Ok(s as i64),
    }
}

/// The column-major batch of a trade write.
pub fn trade_batch(records: &[TradeIn]) -> Result<WriteBatch> {
    let mut b = WriteBatch::with_capacity(6, records.len());
    for (i, r) in records.iter().enumerate() {
        let row = [
            r.ts,
            seq_value(i, r.seq)?,
            r.price,
            r.size,
            r.side,
            r.trade_id,
        ];
        for (col, v) in b.cols.iter_mut().zip(row) {
            col.push(v);
        }
    }
    Ok(b)
}

/// The column-major batch of a quote write.
pub fn quote_batch(records: &[QuoteIn]) -> Result<WriteBatch> {
    let mut b = WriteBatch::with_capacity(6, records.len());
    for (i, r) in records.iter().enumerate() {
        let row = [
            r.ts,
            seq_value(i, r.seq)?,
            r.bid,
            r.ask,
            r.bid_size,
            r.ask_size,
        ];
        for (col, v) in b.cols.iter_mut().zip(row) {
            col.push(v);
        }
    }
    Ok(b)
}

impl Engine {
    /// Registers a trade or quote series (201 created, 200 identical, 409 differs).
    pub fn register_tick(&self, kind: SeriesKind, r: &RegisterTick) -> Result<(SeriesInfo, bool)> {
        debug_assert!(kind.is_tick(), "{kind:?} is not a tick kind");
        self.register(
            tick_meta(kind, r)?,
            crate::storage::Settings {
                retention_ms: r.retention_ms,
                irregular: None,
            },
        )
    }

    /// One page of a tick series: the rows of `range` after `after` (a `(ts, seq)`
    /// cursor), at most `limit`, ascending by `(ts, seq)`.
    pub fn tick_page(
        &self,
        key: &SeriesKey,
        range: TsRange,
        after: Option<TickCursor>,
        limit: usize,
    ) -> Result<TickRows> {
        let series = self.series(key)?;
        let snap = series.snapshot();
        // The cursor's `ts` starts the scan; rows at that `ts` up to its `seq` are skipped.
        let range = match after {
            Some(a) => TsRange::new(Some(range.lo().max(a.ts)), range.end),
            None => range,
        };
        let mut slices = Vec::new();
        let mut rows = 0;
        for s in snap.range(range) {
            let s = s?;
            let skip = match after {
                Some(a) => (0..s.len())
                    .take_while(|&r| (s.col(0)[r], s.col(1)[r] as u64) <= (a.ts, a.seq))
                    .count(),
                None => 0,
            };
            let take = (limit - rows).min(s.len() - skip);
            if take > 0 {
                rows += take;
                slices.push(s.sub(skip, skip + take));
            }
            if rows == limit {
                break;
            }
        }
        let last = slices.last().filter(|_| rows == limit).map(|l| {
            let r = l.len() - 1;
            TickCursor {
                ts: l.col(0)[r],
                seq: l.col(1)[r] as u64,
            }
        });
        // A full page has a next one only when a row follows its last.
        let next = match last {
            Some(c) => {
                let mut more = false;
                for s in snap.range(TsRange::new(Some(c.ts), range.end)) {
                    let s = s?;
                    if (0..s.len()).any(|r| (s.col(0)[r], s.col(1)[r] as u64) > (c.ts, c.seq)) {
                        more = true;
                        break;
                    }
                }
                more.then_some(c)
            }
            None => None,
        };
        self.count_read(&series, rows);
        Ok(TickRows {
            meta: Arc::clone(&series.meta),
            slices,
            next,
        })
    }
}

//! Trade and quote series (docs/ticks.md): registration, JSON records in and out,
//! pages keyed by `(ts, seq)`.

use std::sync::Arc;

use arrow_array::RecordBatch;

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

/// The metadata a registration asks for (checked as the registration checks it).
pub fn tick_meta(kind: SeriesKind, r: &RegisterTick) -> Result<SeriesMeta> {
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
pub fn seq_value(i: usize, seq: Option<u64>) -> Result<i64> {
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
        at: &super::snapshots::At,
        range: TsRange,
        after: Option<TickCursor>,
        limit: usize,
    ) -> Result<TickRows> {
        let series = self.series_at(key, at)?;
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

/// What a trade or quote ticket computes beyond a plain read.
#[derive(Debug, Clone, PartialEq)]
pub enum TickOp {
    /// Bars from trades: OHLCV on the grid of `timeframe` (shifted by `offset_ms`),
    /// plus the volume-weighted average price and the trade count.
    Bars {
        range: TsRange,
        timeframe: String,
        offset_ms: i64,
        format: crate::query::PriceFormat,
    },
    /// Each trade with the quote in force: the last quote of the symbol at or before
    /// the trade's `ts`.
    TradeQuote {
        range: TsRange,
        format: crate::query::PriceFormat,
    },
}

/// A tick read that is more than one plain range: what a trade or quote ticket asks.
#[derive(Debug, Clone, PartialEq)]
pub enum TickRequest {
    /// Bars or trades with the quote in force, of one trade series, as it was at `at`.
    One {
        key: SeriesKey,
        op: TickOp,
        at: super::snapshots::At,
    },
    /// Many series of one kind, by symbol or merged by time (the tape), as they were
    /// at `at` (a snapshot or a commit time).
    Many {
        kind: SeriesKind,
        symbols: super::market::spec::Symbols,
        range: TsRange,
        order_by_ts: bool,
        format: crate::query::PriceFormat,
        at: super::snapshots::At,
        /// Bars or `trade_quote` of each trade series in turn (their own range and
        /// format are `op`'s); `None`: the records themselves.
        op: Option<TickOp>,
    },
}

/// A [`TickRequest`] checked against the store, ready to stream.
pub enum TickStream {
    One(TickPlan),
    Many(TickMany),
    Plans(TickPlans),
}

impl TickStream {
    pub fn schema(&self) -> arrow_schema::SchemaRef {
        match self {
            TickStream::One(p) => Arc::clone(&p.schema),
            TickStream::Many(p) => Arc::clone(&p.schema),
            TickStream::Plans(p) => Arc::clone(&p.schema),
        }
    }

    /// Streams the answer in batches of at most `max_rows` to `sink` (false stops).
    pub fn run(self, max_rows: usize, sink: &mut dyn FnMut(RecordBatch) -> bool) -> Result<()> {
        match self {
            TickStream::One(p) => p.run(max_rows, sink),
            TickStream::Many(p) => p.run(max_rows, sink),
            TickStream::Plans(p) => p.run(max_rows, sink),
        }
    }
}

impl Engine {
    /// Resolves and checks `req`: its series exist, its fields fit; says its schema.
    pub fn tick_stream(&self, req: TickRequest) -> Result<TickStream> {
        Ok(match req {
            TickRequest::One { key, op, at } => TickStream::One(self.tick_plan(&key, op, &at)?),
            TickRequest::Many {
                kind,
                symbols,
                range,
                order_by_ts,
                format,
                at,
                op: None,
            } => {
                TickStream::Many(self.tick_many(kind, &symbols, range, order_by_ts, format, &at)?)
            }
            TickRequest::Many {
                symbols,
                at,
                op: Some(op),
                ..
            } => TickStream::Plans(self.tick_plans(&symbols, op, &at)?),
        })
    }
}

/// Bars from trades, or trades with the quote in force, ready to stream.
pub struct TickPlan {
    pub schema: arrow_schema::SchemaRef,
    trades: Arc<crate::query::Series>,
    quotes: Option<Arc<crate::query::Series>>,
    op: TickOp,
}

/// One bar being built.
#[derive(Clone, Copy)]
struct Bar {
    start: i64,
    open: i64,
    high: i64,
    low: i64,
    close: i64,
    volume: i64,
    notional: i128,
    trades: i64,
}

impl Engine {
    /// Checks a tick computation on trade series `key` as it was at `at` and says its
    /// schema. `trade_quote` reads the quote series at the same moment.
    pub fn tick_plan(
        &self,
        key: &SeriesKey,
        op: TickOp,
        at: &super::snapshots::At,
    ) -> Result<TickPlan> {
        if key.kind() != SeriesKind::Trade {
            return Err(Error::invalid(
                "bars and trade_quote read a trade series (kind \"trade\")",
            ));
        }
        if matches!(op, TickOp::TradeQuote { .. }) && matches!(at, super::snapshots::At::Version(_))
        {
            return Err(Error::invalid(
                "trade_quote reads two series: name the moment with snapshot or as_of_commit, not version",
            ));
        }
        let trades = self.series_at(key, at)?;
        let (fields, md) = op_fields(&trades.meta, &op)?;
        let quotes = match &op {
            TickOp::Bars { .. } => None,
            TickOp::TradeQuote { .. } => {
                match self.series_at(&SeriesKey::quote(key.symbol())?, at) {
                    Ok(q) => Some(q),
                    Err(e) if e.kind == crate::error::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(TickPlan {
            schema: Arc::new(arrow_schema::Schema::new_with_metadata(fields, md)),
            trades,
            quotes,
            op,
        })
    }

    /// Bars or `trade_quote` of many trade series (`symbols`: a list or `"*"`) as they
    /// were at `at`: each series' answer in turn, in symbol order, every batch led by a
    /// `symbol` column.
    pub fn tick_plans(
        &self,
        symbols: &super::market::spec::Symbols,
        op: TickOp,
        at: &super::snapshots::At,
    ) -> Result<TickPlans> {
        use arrow_schema::{DataType, Field, Schema};
        let series = self.tick_series(SeriesKind::Trade, symbols, at)?;
        let plans = series
            .iter()
            .map(|s| {
                let plan = self.tick_plan(&s.meta.key, op.clone(), at)?;
                Ok((Arc::from(s.meta.key.symbol()), plan))
            })
            .collect::<Result<Vec<(Arc<str>, TickPlan)>>>()?;
        let template = match series.first() {
            Some(s) => Arc::clone(&s.meta),
            None => Arc::new(tick_template(SeriesKind::Trade)?),
        };
        let (fields, _) = op_fields(&template, &op)?;
        let mut all = vec![Field::new("symbol", DataType::Utf8, false)];
        all.extend(fields);
        let mut md = std::collections::HashMap::new();
        md.insert("fastk.kind".to_string(), "trade".to_string());
        if let TickOp::Bars {
            timeframe,
            offset_ms,
            ..
        } = &op
        {
            md.insert("fastk.resample".into(), timeframe.clone());
            md.insert("fastk.resample_offset_ms".into(), offset_ms.to_string());
        }
        Ok(TickPlans {
            schema: Arc::new(Schema::new_with_metadata(all, md)),
            plans,
        })
    }
}

/// The metadata of an empty many-symbol answer's schema (no series to take it from).
fn tick_template(kind: SeriesKind) -> Result<SeriesMeta> {
    Ok(SeriesMeta {
        key: match kind {
            SeriesKind::Trade => SeriesKey::trade("_")?,
            _ => SeriesKey::quote("_")?,
        },
        timeframe_ms: crate::record::tick_partition_ms("day").unwrap_or(1),
        price_scale: 1,
        volume_scale: 1,
        value_type: ValueType::I64,
    })
}

/// The fields of `op`'s answer on a trade series of `meta`, and its schema metadata.
type OpFields = (
    Vec<arrow_schema::Field>,
    std::collections::HashMap<String, String>,
);

/// The fields and schema metadata of `op`'s answer on a trade series of `meta`.
fn op_fields(meta: &SeriesMeta, op: &TickOp) -> Result<OpFields> {
    use arrow_schema::{DataType, Field, TimeUnit};
    let priced = |format| match format {
        crate::query::PriceFormat::Raw => DataType::Int64,
        crate::query::PriceFormat::Float64 => DataType::Float64,
    };
    let mut md = crate::storage::batch::series_metadata(meta);
    let fields = match op {
        TickOp::Bars {
            timeframe,
            offset_ms,
            format,
            ..
        } => {
            super::market::grid::Grid::parse(timeframe, *offset_ms)?;
            md.insert("fastk.resample".into(), timeframe.clone());
            md.insert("fastk.resample_offset_ms".into(), offset_ms.to_string());
            let mut f = vec![Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            )];
            for name in ["open", "high", "low", "close", "volume"] {
                f.push(Field::new(name, priced(*format), false));
            }
            f.push(Field::new("vwap", DataType::Float64, false));
            f.push(Field::new("trades", DataType::Int64, false));
            f.push(Field::new("complete", DataType::Boolean, false));
            f
        }
        TickOp::TradeQuote { format, .. } => {
            let projection = crate::storage::batch::Projection::new(meta, None, *format)
                .map_err(Error::invalid)?;
            let mut f: Vec<Field> = projection
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            for name in ["bid", "ask", "bid_size", "ask_size"] {
                f.push(Field::new(name, priced(*format), true));
            }
            f
        }
    };
    Ok((fields, md))
}

/// Bars or `trade_quote` of many symbols, ready to stream.
pub struct TickPlans {
    pub schema: arrow_schema::SchemaRef,
    plans: Vec<(Arc<str>, TickPlan)>,
}

impl TickPlans {
    /// Each symbol's answer in turn, each batch with its `symbol` column first.
    pub fn run(&self, max_rows: usize, sink: &mut dyn FnMut(RecordBatch) -> bool) -> Result<()> {
        for (symbol, plan) in &self.plans {
            let mut stopped = false;
            let mut failed = None;
            plan.run(max_rows, &mut |b: RecordBatch| {
                let mut cols: Vec<arrow_array::ArrayRef> = Vec::with_capacity(b.num_columns() + 1);
                cols.push(Arc::new(arrow_array::StringArray::from_iter_values(
                    std::iter::repeat_n(symbol.as_ref(), b.num_rows()),
                )));
                cols.extend(b.columns().iter().cloned());
                match RecordBatch::try_new(Arc::clone(&self.schema), cols) {
                    Ok(out) => {
                        stopped = !sink(out);
                        !stopped
                    }
                    Err(e) => {
                        failed = Some(Error::internal(format!("{symbol}: {e}")));
                        false
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            if stopped {
                break;
            }
        }
        Ok(())
    }
}

impl TickPlan {
    /// Streams the answer in batches of at most `max_rows` rows to `sink` (which
    /// answers false to stop).
    pub fn run(&self, max_rows: usize, sink: &mut dyn FnMut(RecordBatch) -> bool) -> Result<()> {
        match &self.op {
            TickOp::Bars {
                range,
                timeframe,
                offset_ms,
                format,
            } => self.bars(*range, timeframe, *offset_ms, *format, max_rows, sink),
            TickOp::TradeQuote { range, format } => {
                self.trade_quote(*range, *format, max_rows.max(1), sink)
            }
        }
    }

    fn bars(
        &self,
        range: TsRange,
        timeframe: &str,
        offset_ms: i64,
        format: crate::query::PriceFormat,
        max_rows: usize,
        sink: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<()> {
        const NS_PER_MS: i64 = 1_000_000;
        let grid = super::market::grid::Grid::parse(timeframe, offset_ms)?;
        let meta = &self.trades.meta;
        let snap = self.trades.snapshot();
        // A bar is complete once the series holds a trade at or after its end.
        let newest_ms = snap.last_ts().map(|t| t.div_euclid(NS_PER_MS));
        let (ps, ss) = (meta.price_scale as f64, meta.volume_scale as f64);
        let max_rows = max_rows.max(1);
        // One batch of bars, in the answer's schema, to the sink; false: stop.
        let mut emit = |part: &[Bar]| -> Result<bool> {
            let col = |f: fn(&Bar) -> i64, scale: f64| -> arrow_array::ArrayRef {
                match format {
                    crate::query::PriceFormat::Raw => Arc::new(
                        arrow_array::Int64Array::from_iter_values(part.iter().map(f)),
                    ),
                    crate::query::PriceFormat::Float64 => {
                        Arc::new(arrow_array::Float64Array::from_iter_values(
                            part.iter().map(|b| f(b) as f64 / scale),
                        ))
                    }
                }
            };
            let columns: Vec<arrow_array::ArrayRef> = vec![
                Arc::new(
                    arrow_array::TimestampMillisecondArray::from_iter_values(
                        part.iter().map(|b| b.start),
                    )
                    .with_timezone("UTC"),
                ),
                col(|b| b.open, ps),
                col(|b| b.high, ps),
                col(|b| b.low, ps),
                col(|b| b.close, ps),
                col(|b| b.volume, ss),
                Arc::new(arrow_array::Float64Array::from_iter_values(
                    part.iter().map(|b| {
                        if b.volume > 0 {
                            b.notional as f64 / b.volume as f64 / ps
                        } else {
                            b.close as f64 / ps
                        }
                    }),
                )),
                Arc::new(arrow_array::Int64Array::from_iter_values(
                    part.iter().map(|b| b.trades),
                )),
                Arc::new(arrow_array::BooleanArray::from_iter(part.iter().map(|b| {
                    Some(newest_ms.is_some_and(|n| n >= grid.next(b.start)))
                }))),
            ];
            let batch =
                RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(Error::internal)?;
            Ok(sink(batch))
        };
        // Bars are sent as each batch fills (the open one stays): memory is one batch.
        let mut bars: Vec<Bar> = Vec::with_capacity(max_rows + 1);
        for s in snap.range(range) {
            let s = s?;
            let (ts, price, size) = (s.col(0), s.col(2), s.col(3));
            for r in 0..s.len() {
                let start = grid.bucket(ts[r].div_euclid(NS_PER_MS));
                match bars.last_mut() {
                    Some(b) if b.start == start => {
                        b.high = b.high.max(price[r]);
                        b.low = b.low.min(price[r]);
                        b.close = price[r];
                        b.volume = b.volume.saturating_add(size[r]);
                        b.notional += price[r] as i128 * size[r] as i128;
                        b.trades += 1;
                    }
                    _ => {
                        if bars.len() == max_rows {
                            if !emit(&bars)? {
                                return Ok(());
                            }
                            bars.clear();
                        }
                        bars.push(Bar {
                            start,
                            open: price[r],
                            high: price[r],
                            low: price[r],
                            close: price[r],
                            volume: size[r],
                            notional: price[r] as i128 * size[r] as i128,
                            trades: 1,
                        });
                    }
                }
            }
        }
        if !bars.is_empty() {
            emit(&bars)?;
        }
        Ok(())
    }

    fn trade_quote(
        &self,
        range: TsRange,
        format: crate::query::PriceFormat,
        max_rows: usize,
        sink: &mut dyn FnMut(RecordBatch) -> bool,
    ) -> Result<()> {
        let projection = crate::storage::batch::Projection::new(&self.trades.meta, None, format)
            .map_err(Error::invalid)?;
        let quotes = self.quotes.as_ref().map(|q| q.snapshot());
        // The quote in force before the range, then the quotes of the range in order.
        let current: Option<[i64; 4]> = match (&quotes, range.start) {
            (Some(q), Some(lo)) if lo > 0 => q
                .with_last_row(TsRange::new(None, Some(lo - 1)), |r| {
                    [r[2], r[3], r[4], r[5]]
                })?,
            _ => None,
        };
        let mut cursor = QuoteCursor {
            pending: quotes
                .as_ref()
                .map(|q| q.range(TsRange::new(range.start, range.end))),
            slice: None,
            at: 0,
            current,
        };
        let m = &self.trades.meta;
        let (price_scale, size_scale) = (m.price_scale as f64, m.volume_scale as f64);
        let snap = self.trades.snapshot();
        let mut quote_cols: [Vec<i64>; 4] = Default::default();
        for s in snap.range(range) {
            let s = s?;
            for a in (0..s.len()).step_by(max_rows) {
                let part = s.sub(a, (a + max_rows).min(s.len()));
                let ts = part.col(0);
                // Trades before the first quote have none in force: they lead the part.
                let before_first = cursor.fill(ts, &mut quote_cols)?;
                debug_assert!(quote_cols.iter().all(|c| c.len() == ts.len()));
                let nulls = (before_first > 0).then(|| {
                    arrow_buffer::NullBuffer::from_iter((0..ts.len()).map(|i| i >= before_first))
                });
                let mut columns = projection.batch(&part).columns().to_vec();
                for (k, vals) in quote_cols.iter_mut().enumerate() {
                    let vals = std::mem::take(vals);
                    let scale = if k >= 2 { size_scale } else { price_scale };
                    columns.push(match format {
                        crate::query::PriceFormat::Raw => {
                            Arc::new(arrow_array::Int64Array::new(vals.into(), nulls.clone()))
                        }
                        crate::query::PriceFormat::Float64 => {
                            Arc::new(arrow_array::Float64Array::new(
                                vals.into_iter().map(|v| v as f64 / scale).collect(),
                                nulls.clone(),
                            ))
                        }
                    });
                }
                let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)
                    .map_err(Error::internal)?;
                if !sink(batch) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The quotes of a `trade_quote` answer, walked once in `(ts, seq)` order beside the
/// trades: the quote in force at a trade is the last one at or before its `ts`.
struct QuoteCursor {
    pending: Option<crate::storage::snapshot::RangeIter>,
    slice: Option<ChunkSlice>,
    /// The next quote of `slice` not yet in force.
    at: usize,
    /// bid, ask, bid_size, ask_size of the quote in force.
    current: Option<[i64; 4]>,
}

impl QuoteCursor {
    /// Appends to `out` the quote in force at each of `ts` (ascending), and answers how
    /// many of them lead with none (0 in those rows). The quote slice's columns are
    /// borrowed once per slice, not once per quote.
    fn fill(&mut self, ts: &[i64], out: &mut [Vec<i64>; 4]) -> Result<usize> {
        for c in out.iter_mut() {
            c.clear();
            c.reserve(ts.len());
        }
        let mut before_first = 0;
        let mut j = 0;
        while j < ts.len() {
            if let Some(q) = &self.slice {
                let (qts, cols) = (q.col(0), [q.col(2), q.col(3), q.col(4), q.col(5)]);
                while j < ts.len() {
                    let start = self.at;
                    while self.at < qts.len() && qts[self.at] <= ts[j] {
                        self.at += 1;
                    }
                    if self.at > start {
                        let i = self.at - 1;
                        self.current = Some([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]);
                    }
                    if self.at == qts.len() {
                        break; // a later slice may hold quotes at or before ts[j]
                    }
                    push_quote(self.current, out, &mut before_first);
                    j += 1;
                }
                if j == ts.len() {
                    break;
                }
            }
            match self.pending.as_mut().and_then(Iterator::next) {
                Some(q) => {
                    self.slice = Some(q?);
                    self.at = 0;
                }
                None => {
                    // No quote left: the one in force stays for the rest.
                    self.slice = None;
                    self.pending = None;
                    for _ in j..ts.len() {
                        push_quote(self.current, out, &mut before_first);
                    }
                    break;
                }
            }
        }
        Ok(before_first)
    }
}

fn push_quote(q: Option<[i64; 4]>, out: &mut [Vec<i64>; 4], before_first: &mut usize) {
    match q {
        Some(q) => {
            for (c, v) in out.iter_mut().zip(q) {
                c.push(v);
            }
        }
        None => {
            debug_assert_eq!(out[0].len(), *before_first, "rows with no quote lead");
            *before_first += 1;
            for c in out.iter_mut() {
                c.push(0);
            }
        }
    }
}

/// One series' cursor of a many-symbol read: its slices in order, the current one.
struct Cursor {
    symbol: Arc<str>,
    meta: Arc<SeriesMeta>,
    slices: crate::storage::snapshot::RangeIter,
    slice: Option<ChunkSlice>,
    at: usize,
    /// The index of `slice` among the batch being gathered's slices, once a run of
    /// it is in that batch (`ManyOut::segs`).
    seg: Option<u32>,
}

impl Cursor {
    /// The current row's key, loading the next slice when this one is done (`None`
    /// at the end).
    fn peek(&mut self) -> Result<Option<(i64, u64)>> {
        loop {
            if let Some(s) = &self.slice
                && self.at < s.len()
            {
                return Ok(Some((s.col(0)[self.at], s.col(1)[self.at] as u64)));
            }
            match self.slices.next() {
                Some(s) => {
                    self.slice = Some(s?);
                    self.at = 0;
                    self.seg = None;
                }
                None => return Ok(None),
            }
        }
    }
}

/// Rows of many tick series gathered into a batch as runs: each run is rows `at..end`
/// of one of the batch's slices. The columns are copied once the batch is full, a
/// column at a time over every run. A tape's runs are short (6.4 rows on average in
/// the benchmark's hour), and a call to `memmove` per run and column cost about a
/// tenth more of the server's time than this (journal: 2026-11-28-tape-wire).
struct ManyOut {
    /// The batch's slices, and the cursor each came from.
    segs: Vec<(ChunkSlice, u32)>,
    runs: Vec<(u32, u32, u32)>,
    rows: usize,
    /// The rows of a full batch.
    max_rows: usize,
}

/// Runs shorter than this are copied a value at a time rather than by `memmove`.
const SHORT_RUN: usize = 16;

impl ManyOut {
    fn len(&self) -> usize {
        self.rows
    }

    /// Adds rows `at..end` of cursor `i`'s current slice.
    fn extend(&mut self, i: usize, c: &mut Cursor, at: usize, end: usize) {
        let seg = match c.seg {
            Some(seg) => seg,
            None => {
                let s = c.slice.as_ref().expect("a run is of the cursor's slice");
                let index =
                    u32::try_from(i).expect("cursors are at most flight.max_series_per_ticket");
                let seg = u32::try_from(self.segs.len()).expect("a batch's runs fit u32");
                self.segs.push((s.clone(), index));
                c.seg = Some(seg);
                seg
            }
        };
        let to_u32 = |v: usize| u32::try_from(v).expect("a slice's rows fit u32");
        self.runs.push((seg, to_u32(at), to_u32(end)));
        self.rows += end - at;
        debug_assert!(self.rows <= self.max_rows, "a batch holds at most max_rows");
    }

    /// Column `k` of the gathered rows, in run order.
    fn column(&self, k: usize) -> Vec<i64> {
        let srcs: Vec<&[i64]> = self.segs.iter().map(|(s, _)| s.col(k)).collect();
        let mut col = Vec::with_capacity(self.rows);
        for &(seg, at, end) in &self.runs {
            let src = &srcs[seg as usize][at as usize..end as usize];
            if src.len() < SHORT_RUN {
                for &v in src {
                    col.push(v);
                }
            } else {
                col.extend_from_slice(src);
            }
        }
        debug_assert_eq!(col.len(), self.rows, "every run's rows, once");
        col
    }

    /// Per row, the index of its cursor.
    fn series(&self) -> Vec<u32> {
        let mut series = Vec::with_capacity(self.rows);
        for &(seg, at, end) in &self.runs {
            let index = self.segs[seg as usize].1;
            series.extend(std::iter::repeat_n(index, (end - at) as usize));
        }
        series
    }

    /// Empties the batch; the cursors' slices are no longer in it.
    fn clear(&mut self, cursors: &mut [Cursor]) {
        self.segs.clear();
        self.runs.clear();
        self.rows = 0;
        for c in cursors {
            c.seg = None;
        }
    }
}

impl Engine {
    /// The tick series of `kind` that `symbols` names (a list, or `"*"`), as they were
    /// at `at`, in symbol order (the tape breaks ties on the cursor's index, and
    /// `"order": "symbol"` follows it), at most `flight.max_series_per_ticket`.
    fn tick_series(
        &self,
        kind: SeriesKind,
        symbols: &super::market::spec::Symbols,
        at: &super::snapshots::At,
    ) -> Result<Vec<Arc<crate::query::Series>>> {
        let past = *at != super::snapshots::At::Now;
        let mut series: Vec<Arc<crate::query::Series>> = match symbols {
            // A past moment: the series a snapshot holds, or those that existed at a
            // commit time, each as it was then (the selection of bars and scalars).
            _ if past => {
                let sel = super::market::Selection {
                    kind,
                    timeframe: crate::record::TICK_TIMEFRAME.to_string(),
                    scalar: None,
                    symbols: symbols.clone(),
                };
                self.select_at(&sel, self.config.flight.max_series_per_ticket, at)?
            }
            super::market::spec::Symbols::All(star) if star == "*" => self.store.list_kind(kind),
            super::market::spec::Symbols::All(other) => {
                return Err(Error::invalid(format!(
                    "symbols must be a list or \"*\", got {}",
                    crate::record::echo(other)
                )));
            }
            super::market::spec::Symbols::List(list) => {
                let mut list = list.clone();
                list.sort();
                list.dedup();
                list.iter()
                    .map(|s| {
                        let key = match kind {
                            SeriesKind::Trade => SeriesKey::trade(s)?,
                            _ => SeriesKey::quote(s)?,
                        };
                        self.series(&key)
                    })
                    .collect::<Result<_>>()?
            }
        };
        // Cursors in symbol order: the tape's tie-break on symbol is then the cursor's
        // index, and the symbol order of `"order": "symbol"` is the cursors' order.
        series.sort_by(|a, b| a.meta.key.symbol().cmp(b.meta.key.symbol()));
        let max = self.config.flight.max_series_per_ticket;
        if series.len() > max {
            return Err(Error::invalid(format!(
                "the ticket names {} series, more than {max} (flight.max_series_per_ticket)",
                series.len()
            )));
        }
        Ok(series)
    }

    /// Many tick series of one kind in one stream (docs/ticks.md, "The tape"):
    /// `order_by_ts` merges them into one stream ascending by `(ts, symbol, seq)` in
    /// one pass over every series' cursor (nothing is read ahead beyond one slice per
    /// series); otherwise series follow one another by symbol, each by `(ts, seq)`.
    pub fn tick_many(
        &self,
        kind: SeriesKind,
        symbols: &super::market::spec::Symbols,
        range: TsRange,
        order_by_ts: bool,
        format: crate::query::PriceFormat,
        at: &super::snapshots::At,
    ) -> Result<TickMany> {
        use arrow_schema::{DataType, Field, Schema};
        let series = self.tick_series(kind, symbols, at)?;
        let template = match series.first() {
            Some(s) => Arc::clone(&s.meta),
            None => Arc::new(tick_template(kind)?),
        };
        let projection = crate::storage::batch::Projection::new(&template, None, format)
            .map_err(Error::invalid)?;
        let mut fields = vec![Field::new("symbol", DataType::Utf8, false)];
        fields.extend(
            projection
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone()),
        );
        let mut md = std::collections::HashMap::new();
        md.insert("fastk.kind".to_string(), kind.as_str().to_string());
        md.insert(
            "fastk.order".to_string(),
            if order_by_ts { "ts" } else { "symbol" }.to_string(),
        );
        let cursors = series
            .iter()
            .map(|s| Cursor {
                symbol: s.meta.key.symbol().into(),
                meta: Arc::clone(&s.meta),
                slices: s.snapshot().range(range),
                slice: None,
                at: 0,
                seg: None,
            })
            .collect();
        Ok(TickMany {
            schema: Arc::new(Schema::new_with_metadata(fields, md)),
            cursors,
            order_by_ts,
        })
    }
}

/// A many-symbol tick read, ready to stream.
pub struct TickMany {
    pub schema: arrow_schema::SchemaRef,
    cursors: Vec<Cursor>,
    order_by_ts: bool,
}

impl TickMany {
    /// Streams the rows in batches of at most `max_rows` to `sink` (false stops).
    ///
    /// The tape pops the least `(ts, cursor, seq)` from a heap of the cursors' next
    /// keys (cursors are in symbol order, so the cursor's index orders like its
    /// symbol), then copies that cursor's whole run of rows below the next cursor's
    /// key in one slice copy per column: a burst of one symbol costs one heap pop,
    /// not one per row.
    pub fn run(mut self, max_rows: usize, sink: &mut dyn FnMut(RecordBatch) -> bool) -> Result<()> {
        use std::cmp::Reverse;
        let max_rows = max_rows.max(1);
        let mut out = ManyOut {
            segs: Vec::new(),
            runs: Vec::new(),
            rows: 0,
            max_rows,
        };
        let mut heap = std::collections::BinaryHeap::with_capacity(self.cursors.len());
        if self.order_by_ts {
            for i in 0..self.cursors.len() {
                if let Some((ts, seq)) = self.cursors[i].peek()? {
                    heap.push(Reverse((ts, i, seq)));
                }
            }
        }
        let mut next_series = 0;
        loop {
            // The cursor whose rows come next, and the key its run must stay below:
            // the heap's least (ts, cursor, seq) after it, or none.
            let (i, bound) = if self.order_by_ts {
                match heap.pop() {
                    Some(Reverse((_, i, _))) => {
                        (i, heap.peek().map(|Reverse((ts, j, _))| (*ts, *j)))
                    }
                    None => break,
                }
            } else {
                while next_series < self.cursors.len()
                    && self.cursors[next_series].peek()?.is_none()
                {
                    next_series += 1;
                }
                if next_series == self.cursors.len() {
                    break;
                }
                (next_series, None)
            };
            let c = &mut self.cursors[i];
            let s = c.slice.as_ref().expect("a row was peeked");
            let room = max_rows - out.len();
            let limit = s.len().min(c.at + room);
            let ts = s.col(0);
            // The row at `c.at` is below the bound (it was the heap's least); rows of
            // this cursor carry its index, so a row is below `(bts, j)` when its ts is
            // less, or equal and this cursor comes first.
            let mut end = c.at + 1;
            while end < limit
                && bound.is_none_or(|(bts, j)| ts[end] < bts || (ts[end] == bts && i < j))
            {
                end += 1;
            }
            debug_assert!(
                end > c.at && end <= s.len(),
                "a run holds at least the peeked row"
            );
            let at = c.at;
            out.extend(i, c, at, end);
            c.at = end;
            if self.order_by_ts
                && let Some((ts, seq)) = c.peek()?
            {
                heap.push(Reverse((ts, i, seq)));
            }
            if out.len() == max_rows && !sink(self.batch(&mut out)?) {
                return Ok(());
            }
        }
        if out.len() > 0 {
            sink(self.batch(&mut out)?);
        }
        Ok(())
    }

    /// The gathered rows as one batch in the schema; empties `out`.
    fn batch(&mut self, out: &mut ManyOut) -> Result<RecordBatch> {
        use arrow_array::{
            ArrayRef, Float64Array, Int8Array, Int64Array, StringArray, TimestampNanosecondArray,
            UInt64Array,
        };
        use arrow_schema::DataType;
        let series = out.series();
        let symbols: ArrayRef = Arc::new(StringArray::from_iter_values(
            series
                .iter()
                .map(|&i| self.cursors[i as usize].symbol.as_ref()),
        ));
        let mut arrays = vec![symbols];
        let names = self
            .cursors
            .first()
            .map_or(&[][..], |c| c.meta.layout().columns);
        for (k, field) in self.schema.fields().iter().skip(1).enumerate() {
            let values = out.column(k);
            let size = matches!(names.get(k), Some(&("size" | "bid_size" | "ask_size")));
            arrays.push(match field.data_type() {
                DataType::Timestamp(..) => {
                    Arc::new(TimestampNanosecondArray::from(values).with_timezone("UTC"))
                }
                // In place: the same allocation, reinterpreted value by value.
                DataType::UInt64 => Arc::new(UInt64Array::from(
                    values.into_iter().map(|v| v as u64).collect::<Vec<u64>>(),
                )),
                DataType::Int8 => {
                    Arc::new(Int8Array::from_iter_values(values.iter().map(|&v| v as i8)))
                }
                DataType::Float64 => Arc::new(Float64Array::from_iter_values(
                    values.iter().zip(&series).map(|(&v, &i)| {
                        let meta = &self.cursors[i as usize].meta;
                        let scale = if size {
                            meta.volume_scale
                        } else {
                            meta.price_scale
                        };
                        v as f64 / scale as f64
                    }),
                )),
                _ => Arc::new(Int64Array::from(values)),
            });
        }
        out.clear(&mut self.cursors);
        RecordBatch::try_new(Arc::clone(&self.schema), arrays).map_err(Error::internal)
    }
}

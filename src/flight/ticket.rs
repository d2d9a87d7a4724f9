//! Tickets and flight descriptors: the contract's UTF-8 JSON commands, parsed and
//! validated once into a [`ReadCommand`].
//!
//! A ticket and a descriptor `cmd` share one grammar, so the ticket of a FlightInfo is
//! simply the command that produced it. Path descriptors (`["kline", symbol,
//! timeframe]`, `["scalar", symbol, timeframe, category, name]`) name a whole series.

use arrow_flight::FlightDescriptor;
use arrow_flight::flight_descriptor::DescriptorType;
use bytes::Bytes;
use serde::Deserialize;
use tonic::Status;

use super::error::invalid;
use crate::query::PriceFormat;
use crate::query::market::spec::{
    Agg, AlignedBody, AsOf, Join, PriceFormatName, Resample, ScalarRef, Symbols,
};
use crate::query::market::{ReadArgs, ReadSpec, Selection};
use crate::query::snapshots::At;
pub use crate::query::stream::{PredicateQuery, ReadCommand, Target};
use crate::query::tick::{TickOp, TickRequest};
use crate::query::types::{Predicate, Strategy};
use crate::record::{SeriesKey, SeriesKind, TsRange};

/// The most matches a predicate ticket with `latest` keeps in memory while it scans
/// for the last ones (16 bytes each, so 16 MiB).
pub const LATEST_MATCHES_MAX: usize = 1 << 20;

/// The contract's ticket shapes, told apart by `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Wire {
    Kline(KlineTicket),
    Scalar(ScalarTicket),
    Aligned(AlignedTicket),
    Trade(TickTicket),
    Quote(TickTicket),
    #[serde(rename = "trade_quote")]
    TradeQuote(TradeQuoteTicket),
}

/// Trades of one symbol with the quote in force (docs/ticks.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TradeQuoteTicket {
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    symbols: Option<Symbols>,
    #[serde(default)]
    start_ns: Option<i64>,
    #[serde(default)]
    end_ns: Option<i64>,
    #[serde(default)]
    price_format: Option<PriceFormatName>,
    #[serde(default)]
    snapshot: Option<String>,
    /// Refused with a reason (two series are read), rather than as an unknown field.
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    as_of_commit: Option<i64>,
}

/// `resample` of a trade ticket: bars from trades.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TradeBars {
    timeframe: String,
    #[serde(default)]
    offset_ms: Option<i64>,
}

/// A read of one trade or quote series (docs/ticks.md); ranges in nanoseconds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TickTicket {
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    symbols: Option<Symbols>,
    #[serde(default)]
    start_ns: Option<i64>,
    #[serde(default)]
    end_ns: Option<i64>,
    #[serde(default)]
    latest: Option<usize>,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    price_format: Option<PriceFormatName>,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    resample: Option<TradeBars>,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    as_of_commit: Option<i64>,
}

/// The one symbol of a tick ticket that names no `symbols`.
fn one_symbol(symbol: Option<String>) -> Result<String, Status> {
    symbol.ok_or_else(|| invalid("the ticket names no series: give symbol or symbols"))
}

/// A tick ticket's range: inclusive nanoseconds, `start_ns` not after `end_ns`.
fn ns_range(start: Option<i64>, end: Option<i64>) -> Result<TsRange, Status> {
    if let (Some(a), Some(b)) = (start, end)
        && a > b
    {
        return Err(invalid(format!(
            "start_ns ({a}) must not be after end_ns ({b}); both ends are inclusive"
        )));
    }
    Ok(TsRange::new(start, end))
}

impl TradeQuoteTicket {
    fn command(self) -> Result<GetCommand, Status> {
        let range = ns_range(self.start_ns, self.end_ns)?;
        let format: PriceFormat = self.price_format.unwrap_or_default().into();
        let op = TickOp::TradeQuote { range, format };
        let at = At::new(self.snapshot, self.version, self.as_of_commit).map_err(Status::from)?;
        if let Some(symbols) = self.symbols {
            if self.symbol.is_some() {
                return Err(invalid(
                    "give either symbol (one series) or symbols (a list or \"*\"), not both",
                ));
            }
            // Each symbol's trades with its quotes, one symbol after the other.
            return Ok(GetCommand::Ticks(TickRequest::Many {
                kind: SeriesKind::Trade,
                symbols,
                range,
                order_by_ts: false,
                format,
                at,
                op: Some(op),
            }));
        }
        let symbol = one_symbol(self.symbol)?;
        Ok(GetCommand::Ticks(TickRequest::One {
            key: SeriesKey::trade(&symbol).map_err(name_error)?,
            op,
            at,
        }))
    }
}

impl TickTicket {
    /// The read of one series of `kind` (bars from trades with `resample`); what is
    /// not served yet is refused by name.
    fn command(self, kind: SeriesKind) -> Result<GetCommand, Status> {
        let order_by_ts = match self.order.as_deref() {
            None | Some("symbol") => false,
            Some("ts") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "order must be \"symbol\" or \"ts\" (the tape), got {}",
                    crate::record::echo(other)
                )));
            }
        };
        if let Some(symbols) = self.symbols {
            if self.symbol.is_some() {
                return Err(invalid(
                    "give either symbol (one series) or symbols (a list or \"*\"), not both",
                ));
            }
            if self.latest.is_some() || self.columns.is_some() {
                return Err(invalid(
                    "a many-symbol tick ticket reads ranges of whole records (or bars with resample): latest and columns are for one symbol",
                ));
            }
            let range = ns_range(self.start_ns, self.end_ns)?;
            let format: PriceFormat = self.price_format.unwrap_or_default().into();
            let op = match self.resample {
                Some(_) if kind != SeriesKind::Trade => {
                    return Err(invalid(
                        "resample makes bars from trades: use a trade ticket",
                    ));
                }
                Some(_) if order_by_ts => {
                    return Err(invalid(
                        "bars of many symbols come one symbol after the other: order \"ts\" is the tape of records",
                    ));
                }
                Some(bars) => Some(TickOp::Bars {
                    range,
                    timeframe: bars.timeframe,
                    offset_ms: bars.offset_ms.unwrap_or(0),
                    format,
                }),
                None => None,
            };
            return Ok(GetCommand::Ticks(TickRequest::Many {
                kind,
                symbols,
                range,
                order_by_ts,
                format,
                at: At::new(self.snapshot, self.version, self.as_of_commit)
                    .map_err(Status::from)?,
                op,
            }));
        }
        let symbol = one_symbol(self.symbol)?;
        let key = match kind {
            SeriesKind::Trade => SeriesKey::trade(&symbol),
            _ => SeriesKey::quote(&symbol),
        }
        .map_err(name_error)?;
        if let Some(bars) = self.resample {
            if kind != SeriesKind::Trade {
                return Err(invalid(
                    "resample makes bars from trades: use a trade ticket",
                ));
            }
            if self.latest.is_some() || self.columns.is_some() {
                return Err(invalid("latest and columns do not combine with resample"));
            }
            return Ok(GetCommand::Ticks(TickRequest::One {
                key,
                op: TickOp::Bars {
                    range: ns_range(self.start_ns, self.end_ns)?,
                    timeframe: bars.timeframe,
                    offset_ms: bars.offset_ms.unwrap_or(0),
                    format: self.price_format.unwrap_or_default().into(),
                },
                at: At::new(self.snapshot, self.version, self.as_of_commit)
                    .map_err(Status::from)?,
            }));
        }
        Ok(GetCommand::Read(ReadCommand {
            target: Target::One(key),
            spec: ReadSpec::new(ReadArgs {
                start_ts: self.start_ns,
                end_ts: self.end_ns,
                latest: self.latest,
                columns: self.columns,
                price_format: self.price_format.unwrap_or_default().into(),
                snapshot: self.snapshot,
                version: self.version,
                as_of_commit: self.as_of_commit,
                ..ReadArgs::default()
            })
            .map_err(Status::from)?,
            predicate: None,
        }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KlineTicket {
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    symbols: Option<Symbols>,
    timeframe: String,
    #[serde(default)]
    start_ts: Option<i64>,
    #[serde(default)]
    end_ts: Option<i64>,
    #[serde(default)]
    latest: Option<usize>,
    #[serde(default)]
    as_of: Option<AsOf>,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    price_format: Option<PriceFormatName>,
    #[serde(default)]
    resample: Option<Resample>,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    as_of_commit: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScalarTicket {
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    symbols: Option<Symbols>,
    timeframe: String,
    category: String,
    name: String,
    #[serde(default)]
    start_ts: Option<i64>,
    #[serde(default)]
    end_ts: Option<i64>,
    #[serde(default)]
    latest: Option<usize>,
    #[serde(default)]
    as_of: Option<AsOf>,
    #[serde(default)]
    predicate: Option<Predicate>,
    #[serde(default)]
    return_values: Option<bool>,
    #[serde(default)]
    strategy: Option<Strategy>,
    #[serde(default)]
    resample: Option<Resample>,
    #[serde(default)]
    agg: Option<Agg>,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    as_of_commit: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlignedTicket {
    symbol: String,
    timeframe: String,
    scalars: Vec<ScalarRef>,
    #[serde(default)]
    start_ts: Option<i64>,
    #[serde(default)]
    end_ts: Option<i64>,
    #[serde(default)]
    join: Option<Join>,
    #[serde(default)]
    tolerance_ms: Option<i64>,
    #[serde(default)]
    price_format: Option<PriceFormatName>,
    #[serde(default)]
    snapshot: Option<String>,
    #[serde(default)]
    as_of_commit: Option<i64>,
}

/// Any DoGet command of the JSON grammar.
#[derive(Debug, Clone, PartialEq)]
pub enum GetCommand {
    Read(ReadCommand),
    /// The aligned backtest view of one kline series.
    Aligned {
        key: SeriesKey,
        body: AlignedBody,
    },
    /// A trade or quote read beyond one plain range: bars, trade_quote, many symbols.
    Ticks(TickRequest),
}

/// `symbol` or `symbols`, exactly one of them.
fn target(
    symbol: Option<String>,
    symbols: Option<Symbols>,
    one: impl Fn(&str) -> Result<SeriesKey, Status>,
    many: impl Fn(Symbols) -> Selection,
) -> Result<Target, Status> {
    match (symbol, symbols) {
        (Some(s), None) => Ok(Target::One(one(&s)?)),
        (None, Some(list)) => Ok(Target::Many(many(list))),
        (Some(_), Some(_)) => Err(invalid(
            "give either symbol (one series) or symbols (a list or \"*\"), not both",
        )),
        (None, None) => Err(invalid(
            "the ticket names no series: give symbol, or symbols (a list or \"*\")",
        )),
    }
}

impl GetCommand {
    /// Parses a ticket or descriptor `cmd`.
    pub fn parse(bytes: &[u8]) -> Result<GetCommand, Status> {
        let text = std::str::from_utf8(bytes).map_err(|_| {
            invalid("the ticket must be UTF-8 JSON, e.g. {\"kind\":\"kline\",\"symbol\":\"BTCUSDT\",\"timeframe\":\"1m\"}")
        })?;
        let wire: Wire =
            serde_json::from_str(text).map_err(|e| invalid(format!("invalid ticket JSON: {e}")))?;
        let cmd = match wire {
            Wire::Kline(t) => {
                let tf = t.timeframe.clone();
                ReadCommand {
                    target: target(
                        t.symbol,
                        t.symbols,
                        |s| SeriesKey::kline(s, &tf).map_err(name_error),
                        |symbols| Selection {
                            kind: SeriesKind::Kline,
                            timeframe: tf.clone(),
                            scalar: None,
                            symbols,
                        },
                    )?,
                    spec: ReadSpec::new(ReadArgs {
                        start_ts: t.start_ts,
                        end_ts: t.end_ts,
                        latest: t.latest,
                        as_of: t.as_of,
                        columns: t.columns,
                        price_format: t.price_format.unwrap_or_default().into(),
                        resample: t.resample,
                        agg: None,
                        snapshot: t.snapshot,
                        version: t.version,
                        as_of_commit: t.as_of_commit,
                    })
                    .map_err(Status::from)?,
                    predicate: None,
                }
            }
            Wire::Scalar(t) => {
                let (tf, c, n) = (t.timeframe.clone(), t.category.clone(), t.name.clone());
                let predicate = predicate_query(t.predicate, t.return_values, t.strategy)?;
                if predicate.is_some() && t.resample.is_some() {
                    return Err(invalid(
                        "a predicate and resample do not combine: filter the resampled values in SQL instead",
                    ));
                }
                ReadCommand {
                    target: target(
                        t.symbol,
                        t.symbols,
                        |s| SeriesKey::scalar(s, &tf, &c, &n).map_err(name_error),
                        |symbols| Selection {
                            kind: SeriesKind::Scalar,
                            timeframe: tf.clone(),
                            scalar: Some((c.clone(), n.clone())),
                            symbols,
                        },
                    )?,
                    spec: ReadSpec::new(ReadArgs {
                        start_ts: t.start_ts,
                        end_ts: t.end_ts,
                        latest: t.latest,
                        as_of: t.as_of,
                        columns: None,
                        price_format: PriceFormat::Raw,
                        resample: t.resample,
                        agg: t.agg,
                        snapshot: t.snapshot,
                        version: t.version,
                        as_of_commit: t.as_of_commit,
                    })
                    .map_err(Status::from)?,
                    predicate,
                }
            }
            Wire::Trade(t) => return t.command(SeriesKind::Trade),
            Wire::Quote(t) => return t.command(SeriesKind::Quote),
            Wire::TradeQuote(t) => return t.command(),
            Wire::Aligned(t) => {
                return Ok(GetCommand::Aligned {
                    key: SeriesKey::kline(&t.symbol, &t.timeframe).map_err(name_error)?,
                    body: AlignedBody {
                        scalars: t.scalars,
                        start_ts: t.start_ts,
                        end_ts: t.end_ts,
                        join: t.join,
                        tolerance_ms: t.tolerance_ms,
                        price_format: t.price_format,
                        limit: None,
                        snapshot: t.snapshot,
                        as_of_commit: t.as_of_commit,
                    },
                });
            }
        };
        cmd.check()?;
        Ok(GetCommand::Read(cmd))
    }

    /// Parses a CMD descriptor as a ticket, or a PATH descriptor as a whole series.
    pub fn from_descriptor(d: &FlightDescriptor) -> Result<GetCommand, Status> {
        match DescriptorType::try_from(d.r#type) {
            Ok(DescriptorType::Cmd) => GetCommand::parse(&d.cmd),
            Ok(DescriptorType::Path) => ReadCommand::from_path(&d.path).map(GetCommand::Read),
            _ => Err(invalid(
                "the descriptor must be a CMD (JSON ticket) or a PATH ([kind, symbol, timeframe, ...])",
            )),
        }
    }
}

impl ReadCommand {
    /// A read of a whole series, named by a path descriptor.
    pub fn from_path(path: &[String]) -> Result<ReadCommand, Status> {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let key = SeriesKey::from_parts(&parts)
            .map_err(|e| invalid(format!("invalid descriptor path {path:?}: {e}")))?;
        Ok(ReadCommand::whole(key))
    }

    fn check(&self) -> Result<(), Status> {
        if self.predicate.is_some() && self.spec.latest.is_some_and(|n| n > LATEST_MATCHES_MAX) {
            return Err(invalid(format!(
                "latest with a predicate keeps the matches in memory: at most {LATEST_MATCHES_MAX}"
            )));
        }
        Ok(())
    }
}

/// The JSON ticket that reads the whole series `key` (used by ListFlights and path
/// descriptors, whose FlightInfo needs a ticket DoGet accepts).
pub fn whole_series_ticket(key: &SeriesKey) -> Bytes {
    let mut v = serde_json::json!({
        "kind": key.kind().as_str(),
        "symbol": key.symbol(),
    });
    if !key.kind().is_tick() {
        v["timeframe"] = key.timeframe().into();
    }
    if let (Some(c), Some(n)) = (key.category(), key.name()) {
        v["category"] = c.into();
        v["name"] = n.into();
    }
    Bytes::from(v.to_string())
}

pub(crate) fn predicate_query(
    predicate: Option<Predicate>,
    return_values: Option<bool>,
    strategy: Option<Strategy>,
) -> Result<Option<PredicateQuery>, Status> {
    match predicate {
        Some(predicate) => Ok(Some(PredicateQuery {
            predicate,
            return_values: return_values.unwrap_or(true),
            strategy: strategy.unwrap_or_default(),
        })),
        None if return_values.is_some() || strategy.is_some() => Err(invalid(
            "return_values and strategy only apply together with a predicate",
        )),
        None => Ok(None),
    }
}

fn name_error(e: crate::record::NameError) -> Status {
    invalid(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TsRange;

    fn err(s: &str) -> String {
        GetCommand::parse(s.as_bytes())
            .unwrap_err()
            .message()
            .to_string()
    }

    fn read(s: &[u8]) -> ReadCommand {
        match GetCommand::parse(s).unwrap() {
            GetCommand::Read(r) => r,
            other => panic!("not a read: {other:?}"),
        }
    }

    #[test]
    fn parses_both_kinds() {
        let k = read(
            br#"{"kind":"kline","symbol":"BTCUSDT","timeframe":"1m","start_ts":5,"latest":3,"columns":["close"],"price_format":"float64"}"#,
        );
        assert_eq!(
            k.target,
            Target::One(SeriesKey::kline("BTCUSDT", "1m").unwrap())
        );
        assert_eq!(k.spec.range, TsRange::new(Some(5), None));
        assert_eq!(k.spec.latest, Some(3));
        assert_eq!(k.spec.price_format, PriceFormat::Float64);
        let s = read(
            br#"{"kind":"scalar","symbol":"X","timeframe":"1h","category":"indicator","name":"rsi","predicate":{"op":"gt","value":70}}"#,
        );
        let p = s.predicate.unwrap();
        assert!(p.return_values);
        assert_eq!(p.strategy, Strategy::Auto);
    }

    #[test]
    fn parses_many_series_as_of_resample_and_aligned() {
        let m = read(br#"{"kind":"kline","symbols":"*","timeframe":"1m","as_of":100}"#);
        assert!(matches!(&m.target, Target::Many(s) if s.symbols == Symbols::All("*".into())));
        assert_eq!(m.spec.range, TsRange::new(None, Some(100)));
        assert_eq!(m.spec.latest, Some(1));
        let r = read(
            br#"{"kind":"scalar","symbols":["A","B"],"timeframe":"1m","category":"c","name":"n","resample":{"timeframe":"1h","fill":"prev"},"agg":"mean"}"#,
        );
        assert_eq!(r.spec.resample.as_ref().unwrap().1, Some(Agg::Mean));
        let a = GetCommand::parse(
            br#"{"kind":"aligned","symbol":"A","timeframe":"1m","scalars":[{"category":"c","name":"n"}],"join":"asof","tolerance_ms":5}"#,
        )
        .unwrap();
        assert!(matches!(a, GetCommand::Aligned { body, .. } if body.join == Some(Join::Asof)));
    }

    #[test]
    fn rejects_with_clear_messages() {
        assert!(err("not json").contains("invalid ticket JSON"));
        assert!(
            err(r#"{"kind":"kline","symbol":"A","timeframe":"1m","bogus":1}"#).contains("bogus")
        );
        assert!(err(r#"{"kind":"candle","symbol":"A","timeframe":"1m"}"#).contains("candle"));
        assert!(err(r#"{"kind":"kline","symbol":"../x","timeframe":"1m"}"#).contains("symbol"));
        assert!(
            err(r#"{"kind":"kline","symbol":"A","timeframe":"1m","start_ts":9,"end_ts":1}"#)
                .contains("start_ts")
        );
        assert!(
            err(r#"{"kind":"scalar","symbol":"A","timeframe":"1m","category":"c","name":"n","return_values":false}"#)
                .contains("predicate")
        );
        assert!(err(r#"{"kind":"kline","timeframe":"1m"}"#).contains("symbols"));
        assert!(
            err(r#"{"kind":"kline","symbol":"A","symbols":["B"],"timeframe":"1m"}"#)
                .contains("not both")
        );
        assert!(
            err(r#"{"kind":"kline","symbol":"A","timeframe":"1m","as_of":5,"latest":2}"#)
                .contains("as_of")
        );
        assert!(
            err(r#"{"kind":"kline","symbol":"A","timeframe":"1m","resample":{"timeframe":"1y"}}"#)
                .contains("resample timeframe")
        );
        assert!(
            GetCommand::parse(&[0xff, 0xfe])
                .unwrap_err()
                .message()
                .contains("UTF-8")
        );
    }

    #[test]
    fn whole_series_ticket_round_trips() {
        let key = SeriesKey::scalar("A", "1m", "c", "n").unwrap();
        assert_eq!(read(&whole_series_ticket(&key)), ReadCommand::whole(key));
    }
}

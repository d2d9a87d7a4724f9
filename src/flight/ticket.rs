//! Tickets and flight descriptors: the contract's UTF-8 JSON commands, parsed and
//! validated once into a [`ReadCommand`].
//!
//! A ticket and a descriptor `cmd` share one grammar, so the ticket of a FlightInfo is
//! simply the command that produced it. Path descriptors (`["kline", symbol,
//! timeframe]`, `["scalar", symbol, timeframe, category, name]`) name a whole series.

use std::sync::Arc;

use arrow_flight::FlightDescriptor;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_schema::{Schema, SchemaRef};
use bytes::Bytes;
use serde::Deserialize;
use tonic::Status;

use super::error::invalid;
use crate::query::types::{Predicate, Strategy};
use crate::record::{SeriesKey, SeriesMeta, TsRange};
use crate::storage::batch::{PriceFormat, Projection, series_metadata, ts_field};

/// The most matches a predicate ticket with `latest` keeps in memory while it scans
/// for the last ones (16 bytes each, so 16 MiB).
pub const LATEST_MATCHES_MAX: usize = 1 << 20;

/// The contract's two ticket shapes, told apart by `kind`.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Wire {
    Kline(KlineTicket),
    Scalar(ScalarTicket),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KlineTicket {
    symbol: String,
    timeframe: String,
    #[serde(default)]
    start_ts: Option<i64>,
    #[serde(default)]
    end_ts: Option<i64>,
    #[serde(default)]
    latest: Option<usize>,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    price_format: Option<WirePriceFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WirePriceFormat {
    Raw,
    Float64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScalarTicket {
    symbol: String,
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
    predicate: Option<Predicate>,
    #[serde(default)]
    return_values: Option<bool>,
    #[serde(default)]
    strategy: Option<Strategy>,
}

/// A predicate query carried by a scalar ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct PredicateQuery {
    pub predicate: Predicate,
    /// Whether the result carries the `value` column (default true on Flight).
    pub return_values: bool,
    pub strategy: Strategy,
}

/// A validated read: which series, which rows, and how to shape them.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadCommand {
    pub key: SeriesKey,
    pub range: TsRange,
    /// Only the last `n` rows (or matches) of the range.
    pub latest: Option<usize>,
    pub columns: Option<Vec<String>>,
    pub price_format: PriceFormat,
    pub predicate: Option<PredicateQuery>,
}

impl ReadCommand {
    /// Parses a ticket or descriptor `cmd`.
    pub fn parse(bytes: &[u8]) -> Result<ReadCommand, Status> {
        let text = std::str::from_utf8(bytes).map_err(|_| {
            invalid("the ticket must be UTF-8 JSON, e.g. {\"kind\":\"kline\",\"symbol\":\"BTCUSDT\",\"timeframe\":\"1m\"}")
        })?;
        let wire: Wire =
            serde_json::from_str(text).map_err(|e| invalid(format!("invalid ticket JSON: {e}")))?;
        let cmd = match wire {
            Wire::Kline(t) => ReadCommand {
                key: SeriesKey::kline(&t.symbol, &t.timeframe).map_err(name_error)?,
                range: TsRange::new(t.start_ts, t.end_ts),
                latest: t.latest,
                columns: t.columns,
                price_format: match t.price_format {
                    Some(WirePriceFormat::Float64) => PriceFormat::Float64,
                    Some(WirePriceFormat::Raw) | None => PriceFormat::Raw,
                },
                predicate: None,
            },
            Wire::Scalar(t) => ReadCommand {
                key: SeriesKey::scalar(&t.symbol, &t.timeframe, &t.category, &t.name)
                    .map_err(name_error)?,
                range: TsRange::new(t.start_ts, t.end_ts),
                latest: t.latest,
                columns: None,
                price_format: PriceFormat::Raw,
                predicate: predicate_query(t.predicate, t.return_values, t.strategy)?,
            },
        };
        cmd.check()?;
        Ok(cmd)
    }

    /// A read of a whole series, named by a path descriptor.
    pub fn from_path(path: &[String]) -> Result<ReadCommand, Status> {
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        let key = SeriesKey::from_parts(&parts)
            .map_err(|e| invalid(format!("invalid descriptor path {path:?}: {e}")))?;
        Ok(ReadCommand::whole(key))
    }

    /// A read of every row of `key`, raw.
    pub fn whole(key: SeriesKey) -> ReadCommand {
        ReadCommand {
            key,
            range: TsRange::all(),
            latest: None,
            columns: None,
            price_format: PriceFormat::Raw,
            predicate: None,
        }
    }

    /// Parses a CMD descriptor as a ticket, or a PATH descriptor as a whole series.
    pub fn from_descriptor(d: &FlightDescriptor) -> Result<ReadCommand, Status> {
        match DescriptorType::try_from(d.r#type) {
            Ok(DescriptorType::Cmd) => ReadCommand::parse(&d.cmd),
            Ok(DescriptorType::Path) => ReadCommand::from_path(&d.path),
            _ => Err(invalid(
                "the descriptor must be a CMD (JSON ticket) or a PATH ([kind, symbol, timeframe, ...])",
            )),
        }
    }

    fn check(&self) -> Result<(), Status> {
        if self.range.is_empty() {
            return Err(invalid("start_ts must not be after end_ts"));
        }
        // HTTP refuses `latest?n=0` (400); a ticket asking for the last 0 rows is the
        // same mistake, not an empty read, so the two front ends agree.
        if self.latest == Some(0) {
            return Err(invalid(
                "latest must be at least 1 (omit it to read the whole range)",
            ));
        }
        if self.predicate.is_some() && self.latest.is_some_and(|n| n > LATEST_MATCHES_MAX) {
            return Err(invalid(format!(
                "latest with a predicate keeps the matches in memory: at most {LATEST_MATCHES_MAX}"
            )));
        }
        Ok(())
    }

    /// The projection of a plain (non-predicate) read of a series with `meta`.
    pub fn projection(&self, meta: &SeriesMeta) -> Result<Projection, Status> {
        Projection::new(meta, self.columns.as_deref(), self.price_format).map_err(invalid)
    }

    /// The schema this command's stream carries.
    pub fn schema(&self, meta: &SeriesMeta) -> Result<SchemaRef, Status> {
        match &self.predicate {
            None => Ok(self.projection(meta)?.schema),
            Some(p) if p.return_values => Ok(Projection::all(meta).schema),
            Some(_) => Ok(Arc::new(Schema::new_with_metadata(
                vec![ts_field()],
                series_metadata(meta),
            ))),
        }
    }
}

/// The JSON ticket that reads the whole series `key` (used by ListFlights and path
/// descriptors, whose FlightInfo needs a ticket DoGet accepts).
pub fn whole_series_ticket(key: &SeriesKey) -> Bytes {
    let mut v = serde_json::json!({
        "kind": key.kind().as_str(),
        "symbol": key.symbol(),
        "timeframe": key.timeframe(),
    });
    if let (Some(c), Some(n)) = (key.category(), key.name()) {
        v["category"] = c.into();
        v["name"] = n.into();
    }
    Bytes::from(v.to_string())
}

fn predicate_query(
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

    fn err(s: &str) -> String {
        ReadCommand::parse(s.as_bytes())
            .unwrap_err()
            .message()
            .to_string()
    }

    #[test]
    fn parses_both_kinds() {
        let k = ReadCommand::parse(
            br#"{"kind":"kline","symbol":"BTCUSDT","timeframe":"1m","start_ts":5,"latest":3,"columns":["close"],"price_format":"float64"}"#,
        )
        .unwrap();
        assert_eq!(k.key, SeriesKey::kline("BTCUSDT", "1m").unwrap());
        assert_eq!(k.range, TsRange::new(Some(5), None));
        assert_eq!(k.latest, Some(3));
        assert_eq!(k.price_format, PriceFormat::Float64);
        let s = ReadCommand::parse(
            br#"{"kind":"scalar","symbol":"X","timeframe":"1h","category":"indicator","name":"rsi","predicate":{"op":"gt","value":70}}"#,
        )
        .unwrap();
        let p = s.predicate.unwrap();
        assert!(p.return_values);
        assert_eq!(p.strategy, Strategy::Auto);
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
        assert!(
            ReadCommand::parse(&[0xff, 0xfe])
                .unwrap_err()
                .message()
                .contains("UTF-8")
        );
    }

    #[test]
    fn whole_series_ticket_round_trips() {
        let key = SeriesKey::scalar("A", "1m", "c", "n").unwrap();
        let cmd = ReadCommand::parse(&whole_series_ticket(&key)).unwrap();
        assert_eq!(cmd, ReadCommand::whole(key));
    }
}

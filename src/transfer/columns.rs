//! Which input column feeds which field of a record.
//!
//! With a header (CSV) or a schema (Parquet, Arrow), fields are found by the common
//! names exchanges, vendors, pandas and Polars use (case-insensitive); without a
//! header, by position (kline: ts, open, high, low, close, volume; scalar: ts, value),
//! which matches the headerless Binance dumps. `--ts-column` and friends override
//! either: a column name, or a 1-based position.

use crate::record::{QUOTE_LAYOUT, SeriesKind, TRADE_LAYOUT};

/// Names accepted for each field, in order of preference.
const TS_NAMES: &[&str] = &[
    "ts",
    "timestamp",
    "time",
    "open_time",
    "opentime",
    "open time",
    "datetime",
    "date_time",
    "date",
    "t",
];
const OPEN_NAMES: &[&str] = &["open", "o", "open_price"];
const HIGH_NAMES: &[&str] = &["high", "h", "high_price"];
const LOW_NAMES: &[&str] = &["low", "l", "low_price"];
const CLOSE_NAMES: &[&str] = &["close", "c", "close_price"];
const VOLUME_NAMES: &[&str] = &["volume", "vol", "v", "base_volume"];
const VALUE_NAMES: &[&str] = &["value", "val", "v"];
/// Tick files as exchanges and vendors ship them (Binance, Databento, Polygon, LOBSTER
/// and the like).
const TICK_TS_NAMES: &[&str] = &[
    "ts",
    "ts_event",
    "timestamp",
    "time",
    "transact_time",
    "trade_time",
    "sip_timestamp",
    "datetime",
    "date_time",
    "ts_recv",
    "t",
];
const SEQ_NAMES: &[&str] = &["seq", "sequence", "sequence_number", "seq_num", "seqno"];
const PRICE_NAMES: &[&str] = &["price", "px", "trade_price", "last_price", "p"];
const SIZE_NAMES: &[&str] = &[
    "size",
    "qty",
    "quantity",
    "amount",
    "sz",
    "trade_size",
    "volume",
    "q",
];
/// A side column; a buyer-maker flag is one too, read the other way round.
const SIDE_NAMES: &[&str] = &[
    "side",
    "aggressor",
    "aggressor_side",
    "taker_side",
    "direction",
    "is_buyer_maker",
    "isbuyermaker",
    "buyer_maker",
];
/// Columns whose `true` means the seller initiated the trade (Binance's
/// `is_buyer_maker`): the import reads them as `side` -1 for true and 1 for false.
pub const BUYER_MAKER_NAMES: &[&str] = &["is_buyer_maker", "isbuyermaker", "buyer_maker"];
const TRADE_ID_NAMES: &[&str] = &[
    "trade_id",
    "tradeid",
    "id",
    "agg_trade_id",
    "match_id",
    "trade_no",
];
const BID_NAMES: &[&str] = &[
    "bid",
    "bid_price",
    "bid_px",
    "bidprice",
    "best_bid",
    "bid_px_00",
    "bp",
];
const ASK_NAMES: &[&str] = &[
    "ask",
    "ask_price",
    "ask_px",
    "askprice",
    "best_ask",
    "ask_px_00",
    "offer",
    "offer_price",
    "ap",
];
const BID_SIZE_NAMES: &[&str] = &[
    "bid_size",
    "bid_sz",
    "bid_qty",
    "bidsize",
    "bid_quantity",
    "bid_sz_00",
    "bs",
];
const ASK_SIZE_NAMES: &[&str] = &[
    "ask_size",
    "ask_sz",
    "ask_qty",
    "asksize",
    "ask_quantity",
    "ask_sz_00",
    "offer_size",
    "as",
];

/// Whether a file may leave out `field` of `kind`: a tick's `seq` (then assigned by
/// the store), `side` (then 0, unknown) and `trade_id` (then 0).
pub fn optional(kind: SeriesKind, field: &str) -> bool {
    kind.is_tick() && matches!(field, "seq" | "side" | "trade_id")
}

/// The fields of a record after `ts`, in storage order.
pub fn value_fields(kind: SeriesKind) -> &'static [&'static str] {
    match kind {
        SeriesKind::Kline => &["open", "high", "low", "close", "volume"],
        SeriesKind::Scalar => &["value"],
        SeriesKind::Trade => &TRADE_LAYOUT.columns[1..],
        SeriesKind::Quote => &QUOTE_LAYOUT.columns[1..],
    }
}

/// User overrides: field name → column name or 1-based position.
#[derive(Debug, Clone, Default)]
pub struct ColumnOverrides {
    pub pairs: Vec<(&'static str, String)>,
}

impl ColumnOverrides {
    fn get(&self, field: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, c)| c.as_str())
    }
}

/// Whether `name` is one of the common column names of any field.
pub fn is_known_name(name: &str) -> bool {
    let n = name.trim().trim_matches('"').to_ascii_lowercase();
    [
        TS_NAMES,
        OPEN_NAMES,
        HIGH_NAMES,
        LOW_NAMES,
        CLOSE_NAMES,
        VOLUME_NAMES,
        VALUE_NAMES,
        TICK_TS_NAMES,
        SEQ_NAMES,
        PRICE_NAMES,
        SIZE_NAMES,
        SIDE_NAMES,
        TRADE_ID_NAMES,
        BID_NAMES,
        ASK_NAMES,
        BID_SIZE_NAMES,
        ASK_SIZE_NAMES,
    ]
    .iter()
    .any(|names| names.contains(&n.as_str()))
}

/// Resolves the source column of `ts` and of each value field (storage order).
///
/// `names` are the header or schema names (`None` for a headerless CSV, which maps by
/// position); `ncols` is the number of columns; `series_name` is a scalar series'
/// name, accepted as its value column's name (a Polars frame often names it so).
/// Every field needs a column here; see [`resolve_optional`] for tick files.
pub fn resolve(
    kind: SeriesKind,
    names: Option<&[String]>,
    ncols: usize,
    overrides: &ColumnOverrides,
    series_name: Option<&str>,
) -> Result<Vec<usize>, String> {
    resolve_optional(kind, names, ncols, overrides, series_name)?
        .into_iter()
        .enumerate()
        .map(|(pos, idx)| {
            idx.ok_or_else(|| {
                let field = if pos == 0 {
                    "ts"
                } else {
                    value_fields(kind)[pos - 1]
                };
                missing(field, None, names, ncols)
            })
        })
        .collect()
}

/// [`resolve`], with `None` for an [`optional`] field the file does not have. A
/// headerless file maps by position only when it has every field.
pub fn resolve_optional(
    kind: SeriesKind,
    names: Option<&[String]>,
    ncols: usize,
    overrides: &ColumnOverrides,
    series_name: Option<&str>,
) -> Result<Vec<Option<usize>>, String> {
    let fields: Vec<&str> = std::iter::once("ts")
        .chain(value_fields(kind).iter().copied())
        .collect();
    let lower: Option<Vec<String>> = names.map(|n| {
        n.iter()
            .map(|s| s.trim().trim_matches('"').to_ascii_lowercase())
            .collect()
    });
    let mut out = Vec::with_capacity(fields.len());
    for (pos, field) in fields.iter().enumerate() {
        let found = match overrides.get(field) {
            Some(spec) => Some(
                by_spec(spec, lower.as_deref(), ncols)
                    .ok_or_else(|| missing(field, Some(spec), names, ncols))?,
            ),
            None => match &lower {
                Some(l) => by_alias(kind, field, l, series_name),
                None if pos < ncols => Some(pos),
                None => None,
            },
        };
        let Some(idx) = found else {
            if optional(kind, field) {
                out.push(None);
                continue;
            }
            return Err(missing(field, None, names, ncols));
        };
        if out.contains(&Some(idx)) {
            return Err(format!(
                "column {} would feed two fields; pick another with --{field}-column",
                idx + 1
            ));
        }
        out.push(Some(idx));
    }
    Ok(out)
}

/// A column name (case-insensitive), else a 1-based position.
fn by_spec(spec: &str, lower: Option<&[String]>, ncols: usize) -> Option<usize> {
    let want = spec.trim().to_ascii_lowercase();
    if let Some(i) = lower.and_then(|l| l.iter().position(|n| *n == want)) {
        return Some(i);
    }
    match want.parse::<usize>() {
        Ok(n) if (1..=ncols).contains(&n) => Some(n - 1),
        _ => None,
    }
}

fn by_alias(
    kind: SeriesKind,
    field: &str,
    lower: &[String],
    series_name: Option<&str>,
) -> Option<usize> {
    let aliases = match field {
        "ts" if kind.is_tick() => TICK_TS_NAMES,
        "ts" => TS_NAMES,
        "seq" => SEQ_NAMES,
        "price" => PRICE_NAMES,
        "size" => SIZE_NAMES,
        "side" => SIDE_NAMES,
        "trade_id" => TRADE_ID_NAMES,
        "bid" => BID_NAMES,
        "ask" => ASK_NAMES,
        "bid_size" => BID_SIZE_NAMES,
        "ask_size" => ASK_SIZE_NAMES,
        "open" => OPEN_NAMES,
        "high" => HIGH_NAMES,
        "low" => LOW_NAMES,
        "close" => CLOSE_NAMES,
        "volume" => VOLUME_NAMES,
        _ => VALUE_NAMES,
    };
    let found = aliases
        .iter()
        .find_map(|a| lower.iter().position(|n| n == a));
    if found.is_some() || field != "value" {
        return found;
    }
    // A scalar file often names its value column after the series (`rsi_14`), or has
    // just two columns: ts and the value.
    if let Some(name) = series_name.map(str::to_ascii_lowercase)
        && let Some(i) = lower.iter().position(|n| *n == name)
    {
        return Some(i);
    }
    (lower.len() == 2).then(|| {
        let ts = TS_NAMES
            .iter()
            .find_map(|a| lower.iter().position(|n| n == a));
        if ts == Some(0) { 1 } else { 0 }
    })
}

fn missing(field: &str, spec: Option<&str>, names: Option<&[String]>, ncols: usize) -> String {
    let have = match names {
        Some(n) => format!("the columns are {}", n.join(", ")),
        None => format!("the file has {ncols} columns and no header"),
    };
    match spec {
        Some(s) => format!("--{field}-column {s:?} matches no column ({have})"),
        None => format!(
            "no column for {field} ({have}); name it with --{field}-column NAME_OR_POSITION"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tick_files_map_by_vendor_names_and_may_leave_out_optional_fields() {
        let none = ColumnOverrides::default();
        let h = names(&["id", "price", "qty", "quote_qty", "time", "is_buyer_maker"]);
        assert_eq!(
            resolve_optional(SeriesKind::Trade, Some(&h), 6, &none, None),
            Ok(vec![Some(4), None, Some(1), Some(2), Some(5), Some(0)])
        );
        let h = names(&[
            "ts_event",
            "bid_px_00",
            "ask_px_00",
            "bid_sz_00",
            "ask_sz_00",
        ]);
        assert_eq!(
            resolve_optional(SeriesKind::Quote, Some(&h), 5, &none, None),
            Ok(vec![Some(0), None, Some(1), Some(2), Some(3), Some(4)])
        );
        let h = names(&["ts", "size"]);
        let err = resolve_optional(SeriesKind::Trade, Some(&h), 2, &none, None).unwrap_err();
        assert!(err.contains("no column for price"), "{err}");
        assert!(
            resolve(
                SeriesKind::Trade,
                Some(&names(&["ts", "price", "size"])),
                3,
                &none,
                None
            )
            .is_err()
        );
    }

    #[test]
    fn common_names_positions_and_overrides() {
        let none = ColumnOverrides::default();
        let h = names(&[
            "Open_Time",
            "OPEN",
            "high",
            "low",
            "close",
            "Volume",
            "trades",
        ]);
        assert_eq!(
            resolve(SeriesKind::Kline, Some(&h), 7, &none, None),
            Ok(vec![0, 1, 2, 3, 4, 5])
        );
        let h = names(&["close", "date", "o", "h", "l", "vol"]);
        assert_eq!(
            resolve(SeriesKind::Kline, Some(&h), 6, &none, None),
            Ok(vec![1, 2, 3, 4, 0, 5])
        );
        assert_eq!(
            resolve(SeriesKind::Kline, None, 12, &none, None),
            Ok(vec![0, 1, 2, 3, 4, 5])
        );
        assert!(resolve(SeriesKind::Kline, None, 5, &none, None).is_err());
        let h = names(&["time", "rsi_14"]);
        assert_eq!(
            resolve(SeriesKind::Scalar, Some(&h), 2, &none, Some("rsi_14")),
            Ok(vec![0, 1])
        );
        let over = ColumnOverrides {
            pairs: vec![("ts", "when".into()), ("value", "3".into())],
        };
        let h = names(&["when", "x", "y"]);
        assert_eq!(
            resolve(SeriesKind::Scalar, Some(&h), 3, &over, None),
            Ok(vec![0, 2])
        );
        let bad = ColumnOverrides {
            pairs: vec![("value", "nope".into())],
        };
        let err = resolve(SeriesKind::Scalar, Some(&h), 3, &bad, None).unwrap_err();
        assert!(err.contains("when, x, y"), "{err}");
    }
}

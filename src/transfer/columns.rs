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
    ]
    .iter()
    .any(|names| names.contains(&n.as_str()))
}

/// Resolves the source column of `ts` and of each value field (storage order).
///
/// `names` are the header or schema names (`None` for a headerless CSV, which maps by
/// position); `ncols` is the number of columns; `series_name` is a scalar series'
/// name, accepted as its value column's name (a Polars frame often names it so).
pub fn resolve(
    kind: SeriesKind,
    names: Option<&[String]>,
    ncols: usize,
    overrides: &ColumnOverrides,
    series_name: Option<&str>,
) -> Result<Vec<usize>, String> {
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
        let idx = match overrides.get(field) {
            Some(spec) => by_spec(spec, lower.as_deref(), ncols)
                .ok_or_else(|| missing(field, Some(spec), names, ncols))?,
            None => match &lower {
                Some(l) => by_alias(field, l, series_name)
                    .ok_or_else(|| missing(field, None, names, ncols))?,
                None if pos < ncols => pos,
                None => return Err(missing(field, None, names, ncols)),
            },
        };
        if out.contains(&idx) {
            return Err(format!(
                "column {} would feed two fields; pick another with --{field}-column",
                idx + 1
            ));
        }
        out.push(idx);
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

fn by_alias(field: &str, lower: &[String], series_name: Option<&str>) -> Option<usize> {
    let aliases = match field {
        "ts" => TS_NAMES,
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

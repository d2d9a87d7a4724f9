//! Record types, names, timestamps and month partitions.
//!
//! Everything a client sends is validated here once, at the edge; the rest of the
//! crate trusts these types. Names double as directory names, so the validation is
//! also what keeps a request from escaping the data root.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Earliest timestamp a store accepts: 1000-01-01T00:00:00Z. Month partitions are
/// named `YYYY-MM`, so years must have four digits.
pub const TS_MIN: i64 = -30_610_224_000_000;
/// Latest timestamp a store accepts: 9999-12-31T23:59:59.999Z.
pub const TS_MAX: i64 = 253_402_300_799_999;

/// One OHLCV bar. Prices and volume are fixed-point integers (real = int / scale).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlineRecord {
    /// Milliseconds since the Unix epoch, UTC.
    pub ts: i64,
    pub open: i64,
    pub high: i64,
    pub low: i64,
    pub close: i64,
    pub volume: i64,
}

const _: () = assert!(std::mem::size_of::<KlineRecord>() == 48);
const _: () = assert!(std::mem::align_of::<KlineRecord>() == 8);

impl KlineRecord {
    /// Checks the OHLC invariants of the contract; returns the reason on failure.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.low > self.high {
            return Err("low is greater than high");
        }
        if self.low > self.open.min(self.close) {
            return Err("low is greater than min(open, close)");
        }
        if self.high < self.open.max(self.close) {
            return Err("high is less than max(open, close)");
        }
        if self.volume < 0 {
            return Err("volume is negative");
        }
        Ok(())
    }
}

/// Value type of a scalar series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    #[default]
    I64,
    F64,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::I64 => "i64",
            ValueType::F64 => "f64",
        }
    }
    pub fn code(self) -> u8 {
        match self {
            ValueType::I64 => 0,
            ValueType::F64 => 1,
        }
    }
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(ValueType::I64),
            1 => Some(ValueType::F64),
            _ => None,
        }
    }
}

/// Kind of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesKind {
    Kline,
    Scalar,
    /// Trades (ticks): `(ts, seq)` keyed, nanosecond time. See [`Layout`].
    Trade,
    /// Best bid and offer changes (ticks): `(ts, seq)` keyed, nanosecond time.
    Quote,
}

impl SeriesKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesKind::Kline => "kline",
            SeriesKind::Scalar => "scalar",
            SeriesKind::Trade => "trade",
            SeriesKind::Quote => "quote",
        }
    }
    /// Number of 8-byte columns a record of this kind has, `ts` included.
    pub fn ncols(self) -> usize {
        self.layout().columns.len()
    }
    /// How a record of this kind is stored: its columns, time unit and key.
    pub fn layout(self) -> &'static Layout {
        match self {
            SeriesKind::Kline => &KLINE_LAYOUT,
            SeriesKind::Scalar => &SCALAR_LAYOUT,
            SeriesKind::Trade => &TRADE_LAYOUT,
            SeriesKind::Quote => &QUOTE_LAYOUT,
        }
    }
    /// How many parts a key of this kind has, the kind included: its directory's
    /// depth under `series/` (`kline/S/TF`, `scalar/S/TF/C/N`, `trade/S`).
    pub fn key_parts(self) -> usize {
        match self {
            SeriesKind::Kline => 3,
            SeriesKind::Scalar => 5,
            SeriesKind::Trade | SeriesKind::Quote => 2,
        }
    }
    /// A tick kind (trade or quote): `(ts, seq)` keys in nanoseconds.
    pub fn is_tick(self) -> bool {
        self.layout().key == KeyShape::TsSeq
    }
    pub fn code(self) -> u8 {
        match self {
            SeriesKind::Kline => 1,
            SeriesKind::Scalar => 2,
            SeriesKind::Trade => 3,
            SeriesKind::Quote => 4,
        }
    }
    pub fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(SeriesKind::Kline),
            2 => Some(SeriesKind::Scalar),
            3 => Some(SeriesKind::Trade),
            4 => Some(SeriesKind::Quote),
            _ => None,
        }
    }
}

/// The unit of a layout's `ts` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Milliseconds since the epoch (bars and scalar series).
    Millis,
    /// Nanoseconds since the epoch (ticks): 1970-01-01 to 2262-04-11.
    Nanos,
}

/// What identifies a row inside its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyShape {
    /// `ts` alone (column 0): one row per timestamp, a write of a stored `ts`
    /// replaces it.
    Ts,
    /// `(ts, seq)` (columns 0 and 1, `seq` an unsigned 64-bit integer held in an
    /// `i64`'s bits): many events per timestamp, ascending by `ts` then `seq`.
    TsSeq,
}

/// How the rows of a kind are stored: its columns (each eight bytes, column 0 the
/// timestamp), the unit of that timestamp and the key. The engine (write, merge,
/// partitions, checks) reads these, not the kind, so a tick kind is a layout and
/// not a second engine. The partition is per series ([`SeriesMeta::partitioning`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Layout {
    pub columns: &'static [&'static str],
    pub unit: TimeUnit,
    pub key: KeyShape,
}

pub static KLINE_LAYOUT: Layout = Layout {
    columns: &["ts", "open", "high", "low", "close", "volume"],
    unit: TimeUnit::Millis,
    key: KeyShape::Ts,
};
pub static SCALAR_LAYOUT: Layout = Layout {
    columns: &["ts", "value"],
    unit: TimeUnit::Millis,
    key: KeyShape::Ts,
};
pub static TRADE_LAYOUT: Layout = Layout {
    columns: &["ts", "seq", "price", "size", "side", "trade_id"],
    unit: TimeUnit::Nanos,
    key: KeyShape::TsSeq,
};
pub static QUOTE_LAYOUT: Layout = Layout {
    columns: &["ts", "seq", "bid", "ask", "bid_size", "ask_size"],
    unit: TimeUnit::Nanos,
    key: KeyShape::TsSeq,
};

/// Whether the rows' keys increase strictly, the order every chunk holds (`cols`
/// needs the key's columns: `ts`, and `seq` for [`KeyShape::TsSeq`]).
pub fn keys_increase(key: KeyShape, cols: &[&[i64]]) -> bool {
    match key {
        KeyShape::Ts => cols[0].windows(2).all(|w| w[0] < w[1]),
        KeyShape::TsSeq => {
            (1..cols[0].len()).all(|r| row_key(key, cols, r - 1) < row_key(key, cols, r))
        }
    }
}

/// Why a trade or quote row fails the contract's sanity checks, or `None`: a trade's
/// `size` is `>= 0` and its `side` -1, 0 or 1; a quote's sizes are `>= 0` and
/// `bid <= ask` unless a side is 0 (an empty book side). `col(c)` is the row's value
/// of column `c` (storage order); only the checked columns are read. Other kinds have
/// no such checks here.
#[inline]
pub fn tick_row_error(kind: SeriesKind, col: impl Fn(usize) -> i64) -> Option<&'static str> {
    match kind {
        SeriesKind::Trade if col(3) < 0 => Some("size is negative"),
        SeriesKind::Trade if !(-1..=1).contains(&col(4)) => {
            Some("side must be 1 (buy), -1 (sell) or 0 (unknown)")
        }
        SeriesKind::Quote if col(4) < 0 || col(5) < 0 => Some("a size is negative"),
        SeriesKind::Quote => {
            let (bid, ask) = (col(2), col(3));
            (bid > ask && bid != 0 && ask != 0).then_some("bid is greater than ask")
        }
        _ => None,
    }
}

/// A `seq` the writer left out: the store assigns the next one for its `ts` (an
/// append). `u64::MAX` as the column's `i64` bits; a client may not send it.
pub const SEQ_UNASSIGNED: i64 = -1;

/// The row key of `cols` at `r` under `key`: `(ts, seq)`, with `seq` 0 for a
/// [`KeyShape::Ts`] layout. Keys order rows the way the engine stores them.
#[inline]
pub fn row_key(key: KeyShape, cols: &[&[i64]], r: usize) -> (i64, u64) {
    match key {
        KeyShape::Ts => (cols[0][r], 0),
        KeyShape::TsSeq => (cols[0][r], cols[1][r] as u64),
    }
}

impl std::str::FromStr for SeriesKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kline" => Ok(SeriesKind::Kline),
            "scalar" => Ok(SeriesKind::Scalar),
            "trade" => Ok(SeriesKind::Trade),
            "quote" => Ok(SeriesKind::Quote),
            other => Err(format!(
                "unknown series kind {other:?}: expected \"kline\", \"scalar\", \"trade\" or \"quote\""
            )),
        }
    }
}

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {}: {reason}", echo(.value))]
pub struct NameError {
    pub field: &'static str,
    /// The refused value; messages show only a prefix of it (see [`echo`]).
    pub value: String,
    pub reason: &'static str,
}

/// Characters of a client-supplied value an error message repeats.
pub const ECHO_MAX_CHARS: usize = 64;

/// `value` quoted for an error message: whole when it is short, else its first
/// [`ECHO_MAX_CHARS`] characters and its length in bytes.
///
/// The story: a refused name was echoed whole, so a 100 KB action name came back in a
/// 100 KB message, which overflowed the client's metadata limit and hid the error.
pub fn echo(value: &str) -> String {
    match value.char_indices().nth(ECHO_MAX_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
    }
}

/// A validated symbol, category or name: `[A-Za-z0-9._-]{1,64}`, not `.` or `..`.
///
/// Shared text (`Arc<str>`): a series' key is held by its series, the store's maps,
/// the catalog and its manifest, and at 100,000 series a `String` per copy was a
/// heap block per name and copy. Compared, ordered and hashed as its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(std::sync::Arc<str>);

impl Name {
    pub fn parse(field: &'static str, s: &str) -> Result<Self, NameError> {
        let err = |reason| NameError {
            field,
            value: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("must not be empty"));
        }
        if s.len() > 64 {
            return Err(err("must be at most 64 characters"));
        }
        if s == "." || s == ".." {
            return Err(err("must not be \".\" or \"..\""));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return Err(err("may only contain A-Z a-z 0-9 . _ -"));
        }
        Ok(Name(s.into()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Most bytes of a timeframe's name.
pub const TIMEFRAME_MAX_LEN: usize = 16;

/// A validated timeframe: `[0-9]+[smhdwM]` or `[A-Za-z0-9_-]{1,16}`. Held inline (the
/// bytes, zero-padded, and their length): every series key has one, and a
/// many-series write parses a key per series, thousands per request, each a heap
/// allocation if it were a `String`. Compared, ordered and hashed as its text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Timeframe {
    len: u8,
    bytes: [u8; TIMEFRAME_MAX_LEN],
}

impl std::fmt::Debug for Timeframe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::hash::Hash for Timeframe {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes (its bytes, then 0xff), without the UTF-8 check of `as_str`:
        // every lookup of a series hashes its key.
        state.write(self.text());
        state.write_u8(0xff);
    }
}

impl PartialOrd for Timeframe {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Timeframe {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Byte order is `str` order; no UTF-8 check on every comparison of two keys.
        self.text().cmp(other.text())
    }
}

impl Timeframe {
    /// The name's bytes (ASCII).
    fn text(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn parse(s: &str) -> Result<Self, NameError> {
        let err = |reason| NameError {
            field: "timeframe",
            value: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(err("must not be empty"));
        }
        if s.len() > TIMEFRAME_MAX_LEN {
            return Err(err("must be at most 16 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(err("may only contain A-Z a-z 0-9 _ - (e.g. 1m, 1h, 1d)"));
        }
        let mut bytes = [0; TIMEFRAME_MAX_LEN];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Timeframe {
            len: s.len() as u8,
            bytes,
        })
    }
    pub fn as_str(&self) -> &str {
        // Parsed from ASCII only: always valid UTF-8.
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("a timeframe is ASCII")
    }
}

/// Milliseconds implied by the contract's standard timeframe names.
pub fn standard_timeframe_ms(tf: &str) -> Option<i64> {
    const S: i64 = 1000;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;
    const D: i64 = 24 * H;
    Some(match tf {
        "1s" => S,
        "1m" => M,
        "3m" => 3 * M,
        "5m" => 5 * M,
        "15m" => 15 * M,
        "30m" => 30 * M,
        "1h" => H,
        "2h" => 2 * H,
        "4h" => 4 * H,
        "6h" => 6 * H,
        "8h" => 8 * H,
        "12h" => 12 * H,
        "1d" => D,
        "1w" => 7 * D,
        _ => return None,
    })
}

/// Identity of a series. Its fields are validated names, so its directory is safe.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SeriesKey {
    Kline {
        symbol: Name,
        timeframe: Timeframe,
    },
    Scalar {
        symbol: Name,
        timeframe: Timeframe,
        category: Name,
        name: Name,
    },
    /// Trades of one symbol (`series/trade/SYMBOL`).
    Trade {
        symbol: Name,
    },
    /// Quotes (best bid and offer) of one symbol (`series/quote/SYMBOL`).
    Quote {
        symbol: Name,
    },
}

/// What [`SeriesKey::timeframe`] answers for a tick series, which has none (its
/// partition length is in [`SeriesMeta::timeframe_ms`]).
pub const TICK_TIMEFRAME: &str = "tick";

impl SeriesKey {
    pub fn trade(symbol: &str) -> Result<Self, NameError> {
        Ok(SeriesKey::Trade {
            symbol: Name::parse("symbol", symbol)?,
        })
    }
    pub fn quote(symbol: &str) -> Result<Self, NameError> {
        Ok(SeriesKey::Quote {
            symbol: Name::parse("symbol", symbol)?,
        })
    }
    pub fn kline(symbol: &str, timeframe: &str) -> Result<Self, NameError> {
        Ok(SeriesKey::Kline {
            symbol: Name::parse("symbol", symbol)?,
            timeframe: Timeframe::parse(timeframe)?,
        })
    }
    pub fn scalar(
        symbol: &str,
        timeframe: &str,
        category: &str,
        name: &str,
    ) -> Result<Self, NameError> {
        Ok(SeriesKey::Scalar {
            symbol: Name::parse("symbol", symbol)?,
            timeframe: Timeframe::parse(timeframe)?,
            category: Name::parse("category", category)?,
            name: Name::parse("name", name)?,
        })
    }
    /// Builds a key from path parts: `[kind, symbol, timeframe, (category, name)]`.
    pub fn from_parts(parts: &[&str]) -> Result<Self, String> {
        match parts {
            ["kline", s, tf] => Self::kline(s, tf).map_err(|e| e.to_string()),
            ["scalar", s, tf, c, n] => Self::scalar(s, tf, c, n).map_err(|e| e.to_string()),
            ["trade", s] => Self::trade(s).map_err(|e| e.to_string()),
            ["quote", s] => Self::quote(s).map_err(|e| e.to_string()),
            _ => Err("expected [\"kline\", symbol, timeframe], [\"scalar\", symbol, timeframe, category, name], [\"trade\", symbol] or [\"quote\", symbol]".into()),
        }
    }
    pub fn kind(&self) -> SeriesKind {
        match self {
            SeriesKey::Kline { .. } => SeriesKind::Kline,
            SeriesKey::Scalar { .. } => SeriesKind::Scalar,
            SeriesKey::Trade { .. } => SeriesKind::Trade,
            SeriesKey::Quote { .. } => SeriesKind::Quote,
        }
    }
    pub fn symbol(&self) -> &str {
        match self {
            SeriesKey::Kline { symbol, .. }
            | SeriesKey::Scalar { symbol, .. }
            | SeriesKey::Trade { symbol }
            | SeriesKey::Quote { symbol } => symbol.as_str(),
        }
    }
    /// The key of the same kind, timeframe (and scalar category and name) for
    /// `symbol`: how a many-series write names each of its series.
    pub fn with_symbol(&self, symbol: &str) -> Result<Self, NameError> {
        let mut k = self.clone();
        match &mut k {
            SeriesKey::Kline { symbol: s, .. }
            | SeriesKey::Scalar { symbol: s, .. }
            | SeriesKey::Trade { symbol: s }
            | SeriesKey::Quote { symbol: s } => {
                *s = Name::parse("symbol", symbol)?;
            }
        }
        Ok(k)
    }
    /// The symbol of a key that is done with (a many-series write answers with the
    /// symbol of each of its thousands of series, from the keys it parsed).
    pub fn into_symbol(self) -> String {
        match self {
            SeriesKey::Kline { symbol, .. }
            | SeriesKey::Scalar { symbol, .. }
            | SeriesKey::Trade { symbol }
            | SeriesKey::Quote { symbol } => symbol.as_str().to_string(),
        }
    }
    pub fn timeframe(&self) -> &str {
        match self {
            SeriesKey::Kline { timeframe, .. } | SeriesKey::Scalar { timeframe, .. } => {
                timeframe.as_str()
            }
            SeriesKey::Trade { .. } | SeriesKey::Quote { .. } => TICK_TIMEFRAME,
        }
    }
    pub fn category(&self) -> Option<&str> {
        match self {
            SeriesKey::Scalar { category, .. } => Some(category.as_str()),
            _ => None,
        }
    }
    pub fn name(&self) -> Option<&str> {
        match self {
            SeriesKey::Scalar { name, .. } => Some(name.as_str()),
            _ => None,
        }
    }
    /// Path parts: `["kline", symbol, timeframe]` or `["scalar", symbol, timeframe, category, name]`.
    /// The names after the kind, borrowed: symbol, timeframe, then category and name
    /// for a scalar series (what [`SeriesKey::parts`] lists after the kind, with no
    /// allocation: the write-ahead log encodes thousands of keys per record).
    pub fn name_parts(&self) -> impl Iterator<Item = &str> {
        let tick = self.kind().is_tick();
        [
            Some(self.symbol()),
            (!tick).then(|| self.timeframe()),
            self.category(),
            self.name(),
        ]
        .into_iter()
        .flatten()
    }

    pub fn parts(&self) -> Vec<String> {
        self.str_parts().map(str::to_string).collect()
    }
    /// The key's parts as borrowed text, in `parts` order (no allocation: an open of
    /// 100,000 series makes each series' directory and sorts by key).
    pub fn str_parts(&self) -> impl Iterator<Item = &str> {
        let (kind, symbol) = (self.kind().as_str(), self.symbol());
        let timeframe = (!self.kind().is_tick()).then(|| self.timeframe());
        let rest = match self {
            SeriesKey::Scalar { category, name, .. } => Some([category.as_str(), name.as_str()]),
            _ => None,
        };
        [kind, symbol]
            .into_iter()
            .chain(timeframe)
            .chain(rest.into_iter().flatten())
    }
    /// Directory of the series relative to the store's `series/` folder.
    pub fn rel_dir(&self) -> PathBuf {
        let mut p = PathBuf::with_capacity(self.str_parts().map(|s| s.len() + 1).sum());
        for part in self.str_parts() {
            p.push(part);
        }
        p
    }
}

impl fmt::Display for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, part) in self.str_parts().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(part)?;
        }
        Ok(())
    }
}

/// Everything fixed at registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesMeta {
    pub key: SeriesKey,
    pub timeframe_ms: i64,
    /// Kline only (1 for scalar series).
    pub price_scale: i64,
    /// Kline only (1 for scalar series).
    pub volume_scale: i64,
    /// Scalar only (`I64` for kline series).
    pub value_type: ValueType,
}

impl SeriesMeta {
    /// How this series' rows split into partitions (files and the unit of sealing,
    /// retention and rewrites): calendar months for bars and scalar series; for a
    /// tick series, the hour, day or month its registration chose, recorded as the
    /// partition's length in `timeframe_ms`.
    pub fn partitioning(&self) -> Partitioning {
        if !self.key.kind().is_tick() {
            return Partitioning::MonthMs;
        }
        match self.timeframe_ms {
            HOUR_MS => Partitioning::HourNs,
            DAY_MS => Partitioning::DayNs,
            _ => Partitioning::MonthNs,
        }
    }
    pub fn layout(&self) -> &'static Layout {
        self.key.kind().layout()
    }
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// `timeframe_ms` of a tick series partitioned by calendar month (a month has no
/// fixed length; this marks the choice).
pub const TICK_MONTH_PARTITION_MS: i64 = 30 * DAY_MS;

/// A tick series' partition choice, as registration names it.
pub fn tick_partition_ms(name: &str) -> Option<i64> {
    match name {
        "hour" => Some(HOUR_MS),
        "day" => Some(DAY_MS),
        "month" => Some(TICK_MONTH_PARTITION_MS),
        _ => None,
    }
}

/// The partition name of a tick series' `timeframe_ms` (inverse of [`tick_partition_ms`]).
pub fn tick_partition_name(timeframe_ms: i64) -> &'static str {
    match timeframe_ms {
        HOUR_MS => "hour",
        DAY_MS => "day",
        _ => "month",
    }
}

const NS_PER_MS: i64 = 1_000_000;
const NS_PER_HOUR: i64 = HOUR_MS * NS_PER_MS;
const NS_PER_DAY: i64 = DAY_MS * NS_PER_MS;

/// Partition ids of day partitions start here (ids of month partitions, months
/// since 1970-01, stay far below for the years the store accepts), so that an id
/// alone names its file ([`partition_label`]).
pub const DAY_PARTITION_BASE: i32 = 1 << 24;
/// Partition ids of hour partitions start here.
pub const HOUR_PARTITION_BASE: i32 = 1 << 28;

/// How timestamps map to partitions. A partition has an `i32` id, ordered as time
/// within one series, a first and last timestamp, and a label that names its files:
/// `YYYY-MM` (id = months since 1970-01), `YYYY-MM-DD` (id =
/// [`DAY_PARTITION_BASE`] + days since 1970-01-01) or `YYYY-MM-DDTHH` (id =
/// [`HOUR_PARTITION_BASE`] + hours since 1970-01-01T00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioning {
    /// Calendar months of millisecond timestamps.
    MonthMs,
    /// Calendar months of nanosecond timestamps.
    MonthNs,
    /// UTC days of nanosecond timestamps.
    DayNs,
    /// UTC hours of nanosecond timestamps.
    HourNs,
}

impl Partitioning {
    /// The smallest and largest timestamp a series stores.
    pub fn ts_bounds(self) -> (i64, i64) {
        match self {
            Partitioning::MonthMs => (TS_MIN, TS_MAX),
            _ => (0, i64::MAX),
        }
    }
    /// Id of the partition holding `ts` (a `ts` inside [`Partitioning::ts_bounds`]).
    pub fn of(self, ts: i64) -> i32 {
        match self {
            Partitioning::MonthMs => MonthPartition::from_ts(ts).0,
            Partitioning::MonthNs => MonthPartition::from_ts(ts.div_euclid(NS_PER_MS)).0,
            Partitioning::DayNs => DAY_PARTITION_BASE + ts.div_euclid(NS_PER_DAY) as i32,
            Partitioning::HourNs => HOUR_PARTITION_BASE + ts.div_euclid(NS_PER_HOUR) as i32,
        }
    }
    /// First timestamp of partition `p`, in the series' unit.
    pub fn start_ts(self, p: i32) -> i64 {
        match self {
            Partitioning::MonthMs => MonthPartition(p).start_ts(),
            Partitioning::MonthNs => MonthPartition(p).start_ts().saturating_mul(NS_PER_MS),
            Partitioning::DayNs => ((p - DAY_PARTITION_BASE) as i64).saturating_mul(NS_PER_DAY),
            Partitioning::HourNs => ((p - HOUR_PARTITION_BASE) as i64).saturating_mul(NS_PER_HOUR),
        }
    }
    /// Last timestamp of partition `p`, in the series' unit.
    pub fn end_ts(self, p: i32) -> i64 {
        match self {
            Partitioning::MonthMs => MonthPartition(p).end_ts(),
            _ => match self.start_ts(p + 1) {
                i64::MAX => i64::MAX,
                next => next - 1,
            },
        }
    }
    /// Last millisecond of partition `p` (what sealing and retention compare with
    /// the wall clock).
    pub fn end_ms(self, p: i32) -> i64 {
        match self {
            Partitioning::MonthMs => MonthPartition(p).end_ts(),
            _ => self.end_ts(p).div_euclid(NS_PER_MS),
        }
    }
    /// First millisecond of partition `p`.
    pub fn start_ms(self, p: i32) -> i64 {
        match self {
            Partitioning::MonthMs => MonthPartition(p).start_ts(),
            _ => self.start_ts(p).div_euclid(NS_PER_MS),
        }
    }
    /// The timestamp, in the series' unit, of wall-clock millisecond `ms`, clamped
    /// to [`Partitioning::ts_bounds`].
    pub fn ts_of_ms(self, ms: i64) -> i64 {
        let (lo, hi) = self.ts_bounds();
        match self {
            Partitioning::MonthMs => ms.clamp(lo, hi),
            _ => ms.saturating_mul(NS_PER_MS).clamp(lo, hi),
        }
    }
    /// Parses a label of this partitioning (the inverse of [`partition_label`]).
    pub fn parse(self, s: &str) -> Option<i32> {
        let p = parse_partition_label(s)?;
        let space = match p {
            p if p >= HOUR_PARTITION_BASE => Partitioning::HourNs,
            p if p >= DAY_PARTITION_BASE => Partitioning::DayNs,
            _ => Partitioning::MonthMs,
        };
        let month = matches!(self, Partitioning::MonthMs | Partitioning::MonthNs);
        (space == self || (month && space == Partitioning::MonthMs)).then_some(p)
    }
}

/// The label of partition id `p`: `YYYY-MM`, `YYYY-MM-DD` or `YYYY-MM-DDTHH` (see
/// [`Partitioning`]). An id alone names its partition's files.
pub fn partition_label(p: i32) -> String {
    if p >= HOUR_PARTITION_BASE {
        let h = (p - HOUR_PARTITION_BASE) as i64;
        let (y, m, d) = civil_from_days(h.div_euclid(24));
        format!("{y:04}-{m:02}-{d:02}T{:02}", h.rem_euclid(24))
    } else if p >= DAY_PARTITION_BASE {
        let (y, m, d) = civil_from_days((p - DAY_PARTITION_BASE) as i64);
        format!("{y:04}-{m:02}-{d:02}")
    } else {
        MonthPartition(p).label()
    }
}

/// Parses what [`partition_label`] makes.
pub fn parse_partition_label(s: &str) -> Option<i32> {
    let day = |s: &str| -> Option<i64> {
        let (ym, d) = s.rsplit_once('-')?;
        let (y, mo) = MonthPartition::parse(ym)?.year_month();
        if d.len() != 2 || !d.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let d: u32 = d.parse().ok()?;
        let days = days_from_civil(y, mo, d);
        (d >= 1 && civil_from_days(days) == (y, mo, d) && days >= 0).then_some(days)
    };
    match s.len() {
        7 => MonthPartition::parse(s).map(|m| m.0),
        10 => i32::try_from(day(s)?).ok()?.checked_add(DAY_PARTITION_BASE),
        13 => {
            let (d, h) = s.split_once('T')?;
            if h.len() != 2 || !h.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let h: i64 = h.parse().ok()?;
            if h >= 24 {
                return None;
            }
            i32::try_from(day(d)? * 24 + h)
                .ok()?
                .checked_add(HOUR_PARTITION_BASE)
        }
        _ => None,
    }
}

/// Inclusive timestamp range; `None` ends are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TsRange {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

impl TsRange {
    pub fn new(start: Option<i64>, end: Option<i64>) -> Self {
        TsRange { start, end }
    }
    pub fn all() -> Self {
        TsRange::default()
    }
    pub fn lo(&self) -> i64 {
        self.start.unwrap_or(i64::MIN)
    }
    pub fn hi(&self) -> i64 {
        self.end.unwrap_or(i64::MAX)
    }
    pub fn contains(&self, ts: i64) -> bool {
        ts >= self.lo() && ts <= self.hi()
    }
    pub fn is_empty(&self) -> bool {
        self.lo() > self.hi()
    }
}

/// A UTC calendar month, counted in months since 1970-01 (negative before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MonthPartition(pub i32);

const MS_PER_DAY: i64 = 86_400_000;

impl MonthPartition {
    pub fn from_ts(ts: i64) -> Self {
        let days = ts.div_euclid(MS_PER_DAY);
        let (y, m, _) = civil_from_days(days);
        MonthPartition(((y - 1970) * 12 + (m as i64 - 1)) as i32)
    }
    pub fn year_month(self) -> (i64, u32) {
        let y = 1970 + (self.0 as i64).div_euclid(12);
        let m = (self.0 as i64).rem_euclid(12) as u32 + 1;
        (y, m)
    }
    /// First millisecond of the month.
    pub fn start_ts(self) -> i64 {
        let (y, m) = self.year_month();
        days_from_civil(y, m, 1) * MS_PER_DAY
    }
    /// Last millisecond of the month.
    pub fn end_ts(self) -> i64 {
        MonthPartition(self.0 + 1).start_ts() - 1
    }
    /// Parses `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Self> {
        let (y, m) = s.split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        let y: i64 = y.parse().ok()?;
        let m: i64 = m.parse().ok()?;
        if !(1..=12).contains(&m) {
            return None;
        }
        Some(MonthPartition(((y - 1970) * 12 + m - 1) as i32))
    }
}

impl MonthPartition {
    /// `YYYY-MM` as a `String`, without the formatting machinery (a many-series write
    /// labels a month for each of thousands of series). Equals `to_string()` for the
    /// years the store accepts (0000-9999).
    pub fn label(&self) -> String {
        let (y, m) = self.year_month();
        if !(0..=9999).contains(&y) {
            return self.to_string();
        }
        let (y, m) = (y as u32, m);
        let digit = |d: u32| char::from(b'0' + d as u8);
        let mut out = String::with_capacity(7);
        for d in [y / 1000, y / 100 % 10, y / 10 % 10, y % 10] {
            out.push(digit(d));
        }
        out.push('-');
        out.push(digit(m / 10));
        out.push(digit(m % 10));
        out
    }
}

impl fmt::Display for MonthPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m) = self.year_month();
        write!(f, "{y:04}-{m:02}")
    }
}

/// Days since 1970-01-01 to (year, month, day). Howard Hinnant's algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats a timestamp as RFC 3339 with milliseconds (`2024-01-01T00:00:00.000Z`).
pub fn format_ts(ts: i64) -> String {
    let days = ts.div_euclid(MS_PER_DAY);
    let ms = ts.rem_euclid(MS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A timeframe held inline reads, compares, orders and hashes as its text, up to
    /// the longest name allowed; one byte more is refused.
    #[test]
    fn a_timeframe_behaves_as_its_text() {
        use std::hash::{BuildHasher, RandomState};
        let longest = "a".repeat(TIMEFRAME_MAX_LEN);
        let names = ["1m", "15m", "1h", "1M", "w_-9", longest.as_str()];
        let parsed: Vec<Timeframe> = names.iter().map(|n| Timeframe::parse(n).unwrap()).collect();
        let hasher = RandomState::new();
        for (a, ta) in names.iter().zip(&parsed) {
            assert_eq!(ta.as_str(), *a);
            assert_eq!(format!("{ta:?}"), format!("{a:?}"));
            assert_eq!(hasher.hash_one(ta), hasher.hash_one(*a));
            for (b, tb) in names.iter().zip(&parsed) {
                assert_eq!(ta.cmp(tb), a.cmp(b), "{a} against {b}");
                assert_eq!(ta == tb, a == b);
            }
        }
        let err = Timeframe::parse(&"a".repeat(TIMEFRAME_MAX_LEN + 1)).unwrap_err();
        assert_eq!(err.reason, "must be at most 16 characters");
        assert!(Timeframe::parse("").is_err() && Timeframe::parse("1 m").is_err());
    }

    #[test]
    fn a_month_label_is_its_display() {
        for m in [
            -23_641, -1, 0, 11, 12, 648, 659, 1_000, 96_011, 96_012, -30_000,
        ] {
            let p = MonthPartition(m);
            assert_eq!(p.label(), p.to_string(), "month {m}");
        }
    }

    #[test]
    fn months_round_trip_across_boundaries() {
        for ts in [
            0,
            -1,
            1_704_067_199_999,
            1_704_067_200_000,
            TS_MIN,
            TS_MAX,
            951_782_400_000,
        ] {
            let m = MonthPartition::from_ts(ts);
            assert!(m.start_ts() <= ts && ts <= m.end_ts(), "{ts} in {m}");
            assert_eq!(MonthPartition::parse(&m.to_string()), Some(m));
        }
        assert_eq!(
            MonthPartition::from_ts(1_704_067_200_000).to_string(),
            "2024-01"
        );
        assert_eq!(
            MonthPartition::from_ts(1_704_067_199_999).to_string(),
            "2023-12"
        );
        assert_eq!(MonthPartition::from_ts(-1).to_string(), "1969-12");
        assert_eq!(format_ts(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", ".", "..", "a/b", "a\\b", &"x".repeat(65), "sp ace", "é"] {
            assert!(Name::parse("symbol", bad).is_err(), "{bad:?} accepted");
        }
        assert!(Name::parse("symbol", &"x".repeat(64)).is_ok());
        assert!(Name::parse("symbol", "BTC-USDT.P_1").is_ok());
        assert!(Timeframe::parse("1m").is_ok());
        assert!(Timeframe::parse("1M").is_ok());
        assert!(Timeframe::parse("..").is_err());
        assert!(Timeframe::parse(&"1".repeat(17)).is_err());
        assert_eq!(standard_timeframe_ms("1h"), Some(3_600_000));
        assert_eq!(standard_timeframe_ms("7m"), None);
    }

    #[test]
    fn refused_names_are_echoed_short() {
        let huge = "x/".repeat(50_000);
        let msg = Name::parse("name", &huge).unwrap_err().to_string();
        assert!(msg.len() < 200, "{} bytes: {}", msg.len(), &msg[..200]);
        assert!(msg.contains("(100000 bytes)"), "{msg}");
        assert!(msg.starts_with("invalid name \"x/x/"), "{msg}");
        let msg = Timeframe::parse(&"é".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("... (20000 bytes)"), "{msg}");
        assert_eq!(echo("BTC"), "\"BTC\"");
        assert_eq!(echo(&"a".repeat(64)), format!("{:?}", "a".repeat(64)));
    }

    #[test]
    fn ohlc_rules() {
        let ok = KlineRecord {
            ts: 0,
            open: 10,
            high: 12,
            low: 9,
            close: 11,
            volume: 0,
        };
        assert!(ok.check().is_ok());
        assert!(KlineRecord { high: 10, ..ok }.check().is_err());
        assert!(KlineRecord { low: 11, ..ok }.check().is_err());
        assert!(KlineRecord { volume: -1, ..ok }.check().is_err());
    }
}

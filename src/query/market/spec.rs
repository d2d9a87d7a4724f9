//! The request and answer bodies of the market queries, shared by HTTP and Flight,
//! and their validation into the plans the engine runs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Resample on read: the target timeframe, an optional offset and how empty buckets
/// are filled. Scalar reads may put `agg` here (or next to `resample`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"timeframe": "1h", "offset_ms": 0, "fill": "none"}))]
pub struct Resample {
    /// `<n><unit>`, unit `s m h d w M`: `5m`, `1h`, `4h`, `1d`, `1w` (Monday), `1M` (calendar month).
    pub timeframe: String,
    /// Shifts every bucket boundary (e.g. -7200000 for a day that starts at 22:00 UTC).
    #[serde(default)]
    pub offset_ms: Option<i64>,
    #[serde(default)]
    pub fill: Option<Fill>,
    /// Scalar series only: how values of a bucket are aggregated (default `last`).
    #[serde(default)]
    pub agg: Option<Agg>,
}

/// What an empty bucket becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(example = "prev")]
pub enum Fill {
    /// Left out.
    #[default]
    None,
    /// The previous close (or value) repeated, volume 0.
    Prev,
    /// Every value null.
    Null,
}

/// How the values of a scalar bucket are aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(example = "mean")]
pub enum Agg {
    #[default]
    Last,
    First,
    Min,
    Max,
    Mean,
    Sum,
    Count,
}

/// Which symbols a many-series read covers: a list, or `"*"` for every series of the
/// timeframe (and, for scalars, of the category and name).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(example = json!(["BTCUSDT", "ETHUSDT"]))]
pub enum Symbols {
    List(Vec<String>),
    #[schema(value_type = String, example = "*")]
    All(String),
}

impl Symbols {
    /// `forbidden` unless `p` may read every symbol this names (`"*"`: only a token
    /// not limited to symbols).
    pub fn check(&self, p: &crate::auth::Principal) -> crate::error::Result<()> {
        match self {
            Symbols::List(list) => list.iter().try_for_each(|s| p.check_symbol(s)),
            Symbols::All(_) => p.check_every_symbol("symbols \"*\""),
        }
    }
}

/// A point in time for an as-of read: milliseconds since the epoch, or `"now"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AsOf {
    Ts(i64),
    #[serde(serialize_with = "now_word")]
    Now,
}

impl utoipa::PartialSchema for AsOf {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type,
        };
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["now"])),
            )
            .description(Some("A timestamp in ms since the epoch (UTC), or \"now\"."))
            .examples([serde_json::json!(1704153540000_i64)])
            .into()
    }
}

impl ToSchema for AsOf {}

fn now_word<S: serde::Serializer>(s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str("now")
}

impl<'de> Deserialize<'de> for AsOf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<AsOf, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AsOf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("as_of: a timestamp in ms since the epoch, or \"now\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<AsOf, E> {
                Ok(AsOf::Ts(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<AsOf, E> {
                i64::try_from(v)
                    .map(AsOf::Ts)
                    .map_err(|_| E::custom("as_of is out of range"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<AsOf, E> {
                match v {
                    "now" => Ok(AsOf::Now),
                    _ => Err(E::custom(
                        "as_of must be a timestamp in ms since the epoch, or \"now\"",
                    )),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl AsOf {
    pub fn ts(self) -> i64 {
        match self {
            AsOf::Ts(t) => t,
            AsOf::Now => super::super::now_ms(),
        }
    }
}

/// A scalar series of the aligned view's symbol and timeframe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"category": "indicator", "name": "rsi_14"}))]
pub struct ScalarRef {
    pub category: String,
    pub name: String,
}

/// How scalars meet the bars of an aligned view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(example = "asof")]
pub enum Join {
    /// The value stored at the bar's `ts`.
    #[default]
    Exact,
    /// The last value at or before the bar's `ts`, within `tolerance_ms`.
    Asof,
}

/// One gap: a run of missing grid points.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"start_ts": 1704070800000_i64, "end_ts": 1704070920000_i64, "missing": 3}))]
pub struct Gap {
    /// First missing grid `ts`.
    pub start_ts: i64,
    /// Last missing grid `ts`.
    pub end_ts: i64,
    /// Grid points missing in between (the calendar's excluded days not counted).
    pub missing: u64,
}

/// A run of consecutive present bars.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"start_ts": 1704070980000_i64, "end_ts": 1704153540000_i64, "bars": 1384}))]
pub struct Run {
    pub start_ts: i64,
    pub end_ts: i64,
    pub bars: u64,
}

/// Coverage of a series over a range.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"start_ts": 1704067200000_i64, "end_ts": 1704153540000_i64, "calendar": "24x7", "timeframe_ms": 60000, "expected": 1440, "present": 1437, "extra": 0, "ratio": 0.997916, "gaps": [{"start_ts": 1704070800000_i64, "end_ts": 1704070920000_i64, "missing": 3}], "gap_count": 1, "gaps_truncated": false, "last_complete_ts": 1704153540000_i64, "last_run": {"start_ts": 1704070980000_i64, "end_ts": 1704153540000_i64, "bars": 1384}}))]
pub struct Coverage {
    /// The range examined (defaults: the series' first and last `ts`; null for an empty series).
    pub start_ts: Option<i64>,
    pub end_ts: Option<i64>,
    /// `24x7`, `weekdays` or a Monday-first mask such as `1111110`.
    pub calendar: String,
    pub timeframe_ms: i64,
    /// Grid points in the range that the calendar includes.
    pub expected: u64,
    /// Stored bars on those grid points.
    pub present: u64,
    /// Stored bars that are not expected: off the grid or on an excluded day.
    pub extra: u64,
    /// `present / expected` (1 when nothing is expected).
    pub ratio: f64,
    /// The gaps in ascending order, at most `max_gaps` of them.
    pub gaps: Vec<Gap>,
    /// Every gap, including those past `max_gaps`.
    pub gap_count: u64,
    pub gaps_truncated: bool,
    /// Last bar of `last_run`; null when no run of `complete_n` bars exists.
    pub last_complete_ts: Option<i64>,
    /// The most recent run of consecutive present bars at least `complete_n` long.
    pub last_run: Option<Run>,
}

/// The most gaps one coverage answer lists.
pub const MAX_GAPS: usize = 100_000;
/// Gaps listed when the request does not say.
pub const DEFAULT_GAPS: usize = 1_000;
/// The most scalars one aligned view joins.
pub const MAX_ALIGNED_SCALARS: usize = 64;

/// What coverage to compute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"start_ts": 1704067200000_i64, "calendar": "weekdays", "complete_n": 500}))]
pub struct CoverageRequest {
    #[serde(default)]
    pub start_ts: Option<i64>,
    #[serde(default)]
    pub end_ts: Option<i64>,
    /// `24x7` (default), `weekdays`, or seven `0`/`1` from Monday to Sunday.
    #[serde(default)]
    pub calendar: Option<String>,
    /// Length of the run `last_complete_ts` looks for (default 1).
    #[serde(default)]
    pub complete_n: Option<u64>,
    /// Gaps listed at most (default 1000, at most 100000).
    #[serde(default)]
    pub max_gaps: Option<usize>,
    /// Count the bars of the series as this snapshot holds it (docs/research.md).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Count the bars of this past version of the series.
    #[serde(default)]
    pub version: Option<u64>,
    /// Count the bars of the version current at this time (ms since the epoch).
    #[serde(default)]
    pub as_of_commit: Option<i64>,
}

/// How kline prices are delivered (`raw`: the stored integers; `float64`: / scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(example = "float64")]
pub enum PriceFormatName {
    #[default]
    Raw,
    Float64,
}

impl From<PriceFormatName> for crate::storage::batch::PriceFormat {
    fn from(p: PriceFormatName) -> Self {
        match p {
            PriceFormatName::Raw => crate::storage::batch::PriceFormat::Raw,
            PriceFormatName::Float64 => crate::storage::batch::PriceFormat::Float64,
        }
    }
}

/// The aligned backtest view of one kline series (its symbol and timeframe come from
/// the path or the ticket).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scalars": [{"category": "indicator", "name": "rsi_14"}], "start_ts": 1704067200000_i64, "join": "asof", "tolerance_ms": 300000}))]
pub struct AlignedBody {
    /// Scalar series of the same symbol and timeframe, 1 to 64, each once.
    pub scalars: Vec<ScalarRef>,
    #[serde(default)]
    pub start_ts: Option<i64>,
    #[serde(default)]
    pub end_ts: Option<i64>,
    #[serde(default)]
    pub join: Option<Join>,
    /// `asof` only: the oldest a value may be, in ms before the bar (default: any age).
    #[serde(default)]
    pub tolerance_ms: Option<i64>,
    #[serde(default)]
    pub price_format: Option<PriceFormatName>,
    /// HTTP: bars per page (default `http.default_limit`, capped at `http.max_limit`).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Read the kline and the scalars as this snapshot holds them (docs/research.md).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Read the kline and each scalar at the version current at this time (ms since
    /// the epoch).
    #[serde(default)]
    pub as_of_commit: Option<i64>,
}

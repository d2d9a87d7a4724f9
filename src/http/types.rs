//! Bodies and parameters that exist only on the HTTP surface. Shared bodies live in
//! [`crate::query::types`]; read responses are written by [`super::json`] straight
//! from the mapped columns, and the page types here describe them in the document.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::query::market::spec::{Agg, AsOf, Fill, Resample, Symbols};
use crate::record::KlineRecord;
use crate::registry::{Dataset, Definition};

/// Path of a kline series. Names are checked again by the engine; the patterns let
/// generated clients and fuzzers know the shape up front.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KlinePath {
    /// Symbol: `[A-Za-z0-9._-]{1,64}`, not `.` or `..`.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "BTCUSDT")]
    pub symbol: String,
    /// Timeframe: `[0-9]+[smhdwM]` or `[A-Za-z0-9_-]{1,16}`.
    #[param(pattern = "^[A-Za-z0-9_-]{1,16}$", example = "1m")]
    pub timeframe: String,
}

/// Path of a scalar series.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ScalarPath {
    /// Symbol: `[A-Za-z0-9._-]{1,64}`, not `.` or `..`.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "BTCUSDT")]
    pub symbol: String,
    /// Timeframe: `[0-9]+[smhdwM]` or `[A-Za-z0-9_-]{1,16}`.
    #[param(pattern = "^[A-Za-z0-9_-]{1,16}$", example = "1m")]
    pub timeframe: String,
    /// Category (the caller's convention, e.g. `indicator`): `[A-Za-z0-9._-]{1,64}`.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "indicator")]
    pub category: String,
    /// Series name: `[A-Za-z0-9._-]{1,64}`, not `.` or `..`.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$", example = "rsi_14")]
    pub name: String,
}

/// Range and page size of a records read.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    /// First timestamp (ms since the epoch, UTC), inclusive; omitted: from the first record.
    #[param(example = 1704067200000_i64)]
    pub start_ts: Option<i64>,
    /// Last timestamp (ms since the epoch, UTC), inclusive; omitted: to the last record.
    #[param(example = 1704153599999_i64)]
    pub end_ts: Option<i64>,
    /// Maximum records returned (default `http.default_limit`, 10000). Larger values are
    /// capped at `http.max_limit` (100000) without an error; `next_start_ts` pages on.
    #[param(minimum = 1, example = 1000)]
    pub limit: Option<u64>,
    /// Resample on read to this timeframe (`5m`, `1h`, `1d`, `1w` from Monday, `1M`
    /// calendar months; a whole multiple of the stored one). Each record then carries
    /// `complete`, `limit` counts buckets, and `fill=null` gives null values.
    #[param(example = "1h")]
    pub resample: Option<String>,
    /// With `resample`: shifts every bucket boundary (e.g. -7200000: days from 22:00 UTC).
    #[param(example = 0)]
    pub offset_ms: Option<i64>,
    /// With `resample`: `none` (default) leaves empty buckets out, `prev` repeats the
    /// previous close with volume 0, `null` emits nulls.
    pub fill: Option<Fill>,
    /// With `resample`, scalar series only: `last` (default), `first`, `min`, `max`,
    /// `mean`, `sum` or `count`.
    pub agg: Option<Agg>,
    /// Read the series as this snapshot holds it (docs/research.md).
    #[param(example = "q3-2026")]
    pub snapshot: Option<String>,
    /// Read this past version of the series (`GET .../versions` lists them; 410 once
    /// no longer kept).
    #[param(example = 12)]
    pub version: Option<u64>,
    /// Read the version current at this time (ms since the epoch).
    #[param(example = 1764000000000_i64)]
    pub as_of_commit: Option<i64>,
}

/// The range of a range delete: at least one bound.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteRangeParams {
    /// First timestamp deleted (ms since the epoch, UTC), inclusive; omitted: from the first record.
    #[param(example = 1704067200000_i64)]
    pub start_ts: Option<i64>,
    /// Last timestamp deleted, inclusive; omitted: to the last record.
    #[param(example = 1704153599999_i64)]
    pub end_ts: Option<i64>,
}

/// Range, calendar and limits of a coverage question.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CoverageParams {
    /// First timestamp examined (default: the series' first bar).
    #[param(example = 1704067200000_i64)]
    pub start_ts: Option<i64>,
    /// Last timestamp examined (default: the series' last bar).
    #[param(example = 1735689540000_i64)]
    pub end_ts: Option<i64>,
    /// `24x7` (default), `weekdays` (no bars expected Saturday and Sunday UTC), or
    /// seven `0`/`1` from Monday to Sunday such as `1111110`.
    #[param(example = "weekdays")]
    pub calendar: Option<String>,
    /// Length of the run of consecutive present bars `last_complete_ts` looks for (default 1).
    #[param(minimum = 1, example = 500)]
    pub complete_n: Option<u64>,
    /// Gaps listed at most (default 1000, at most 100000); `gap_count` has them all.
    #[param(minimum = 0, maximum = 100000, example = 1000)]
    pub max_gaps: Option<usize>,
    /// Count the bars of the series as this snapshot holds it (docs/research.md).
    #[param(example = "q3-2026")]
    pub snapshot: Option<String>,
    /// Count the bars of this past version of the series.
    #[param(example = 12)]
    pub version: Option<u64>,
    /// Count the bars of the version current at this time (ms since the epoch).
    #[param(example = 1764000000000_i64)]
    pub as_of_commit: Option<i64>,
}

/// A read of many kline series in one request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"timeframe": "1m", "symbols": ["BTCUSDT", "ETHUSDT"], "start_ts": 1704067200000_i64, "resample": {"timeframe": "1h"}}))]
pub struct KlineBatchRead {
    pub timeframe: String,
    /// A list of symbols, or `"*"` for every series of the timeframe (at most `http.max_batch_series`).
    pub symbols: Symbols,
    #[serde(default)]
    pub start_ts: Option<i64>,
    #[serde(default)]
    pub end_ts: Option<i64>,
    /// Records per series (default `http.default_limit`); the whole answer holds at most `http.max_limit`.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Only the last n records (or buckets) of each series.
    #[serde(default)]
    pub latest: Option<u64>,
    /// The last record of each series at or before this ts (or `"now"`).
    #[serde(default)]
    pub as_of: Option<AsOf>,
    #[serde(default)]
    pub resample: Option<Resample>,
    /// Kline columns to return (`ts` always comes first).
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Read the series as this snapshot holds them (docs/research.md).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Read each series at its version current at this time (ms since the epoch).
    #[serde(default)]
    pub as_of_commit: Option<i64>,
}

/// A read of many scalar series (one category and name) in one request.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"timeframe": "1m", "category": "indicator", "name": "rsi_14", "symbols": "*", "as_of": 1704153540000_i64}))]
pub struct ScalarBatchRead {
    pub timeframe: String,
    pub category: String,
    pub name: String,
    /// A list of symbols, or `"*"` for every series of the timeframe, category and name.
    pub symbols: Symbols,
    #[serde(default)]
    pub start_ts: Option<i64>,
    #[serde(default)]
    pub end_ts: Option<i64>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub latest: Option<u64>,
    #[serde(default)]
    pub as_of: Option<AsOf>,
    #[serde(default)]
    pub resample: Option<Resample>,
    /// With `resample`: the aggregation (may also be given inside `resample`).
    #[serde(default)]
    pub agg: Option<Agg>,
    /// Read the series as this snapshot holds them (docs/research.md).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Read each series at its version current at this time (ms since the epoch).
    #[serde(default)]
    pub as_of_commit: Option<i64>,
}

/// One series of a batch read.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"symbol": "BTCUSDT", "records": [{"ts": 1704067200000_i64, "open": 4200000, "high": 4210000, "low": 4195000, "close": 4205000, "volume": 1250}], "next_start_ts": null}))]
pub struct SeriesRecords {
    pub symbol: String,
    /// Records as a single-series read returns them (with `complete` when resampled).
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<serde_json::Value>,
    #[schema(required = true)]
    pub next_start_ts: Option<i64>,
}

/// A batch read's answer, in symbol order.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"series": [{"symbol": "BTCUSDT", "records": [{"ts": 1704067200000_i64, "open": 4200000, "high": 4210000, "low": 4195000, "close": 4205000, "volume": 1250, "complete": true}], "next_start_ts": null}]}))]
pub struct BatchPage {
    pub series: Vec<SeriesRecords>,
}

/// A page of the aligned view: kline columns, then one `category.name` per scalar.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"records": [{"ts": 1704067200000_i64, "open": 4200000, "high": 4210000, "low": 4195000, "close": 4205000, "volume": 1250, "indicator.rsi_14": 55.2}], "next_start_ts": null}))]
pub struct AlignedPage {
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<serde_json::Value>,
    #[schema(required = true)]
    pub next_start_ts: Option<i64>,
}

/// How many of the latest records to return, optionally within a range.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LatestParams {
    /// Number of records, 1 to `http.max_latest` (100000); default 1.
    #[param(minimum = 1, example = 100)]
    pub n: Option<u64>,
    /// Only records at or after this timestamp count.
    #[param(example = 1704067200000_i64)]
    pub start_ts: Option<i64>,
    /// Only records at or before this timestamp count.
    #[param(example = 1704153599999_i64)]
    pub end_ts: Option<i64>,
    /// Read the series as this snapshot holds it (docs/research.md).
    #[param(example = "q3-2026")]
    pub snapshot: Option<String>,
    /// Read this past version of the series (`GET .../versions` lists them; 410 once
    /// no longer kept).
    #[param(example = 12)]
    pub version: Option<u64>,
    /// Read the version current at this time (ms since the epoch).
    #[param(example = 1764000000000_i64)]
    pub as_of_commit: Option<i64>,
}

/// Headers of a write, for the document; [`super::extract::IfMatch`] parses them.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Header)]
pub struct WriteHeaders {
    /// Expected series version (its `version` from a GET), e.g. `"7"`; the quotes may be
    /// omitted. When the series is at another version the write is refused with 412.
    #[serde(rename = "If-Match")]
    #[param(value_type = String, required = false, pattern = r#"^("[0-9]{1,19}"|[0-9]{1,19})$"#, example = "\"7\"")]
    pub if_match: Option<String>,
}

/// Optional name filter of a registry listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct NameFilter {
    /// Only entries with exactly this name.
    #[param(example = "binance-spot-1m")]
    pub name: Option<String>,
}

/// Records to write to a kline series.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"records": [{"ts": 1704067200000_i64, "open": 4200000, "high": 4210000, "low": 4195000, "close": 4205000, "volume": 1250}]}))]
pub struct KlineWrite {
    /// Any order; a `ts` may appear once per request; a stored `ts` is replaced.
    pub records: Vec<KlineRecord>,
}

/// One scalar record as written.
// The value is kept as its JSON text so `f64` values parse with correct rounding and
// `i64` values are never routed through a float.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ts": 1704067200000_i64, "value": 71.25}))]
pub struct ScalarRecordIn<'a> {
    /// Milliseconds since the Unix epoch, UTC.
    pub ts: i64,
    /// An integer for `i64` series; any number for `f64` series, where `null` stores NaN.
    #[serde(borrow)]
    #[schema(value_type = Option<f64>, required = true)]
    pub value: &'a RawValue,
}

/// Records to write to a scalar series.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"records": [{"ts": 1704067200000_i64, "value": 71.25}, {"ts": 1704067260000_i64, "value": 69.5}]}))]
pub struct ScalarWrite<'a> {
    /// Any order; a `ts` may appear once per request; a stored `ts` is replaced.
    #[serde(borrow)]
    pub records: Vec<ScalarRecordIn<'a>>,
}

/// One kline record as read. Values are null only in a resampled read with
/// `fill=null`; `complete` is present only in resampled reads.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"ts": 1704067200000_i64, "open": 4200000, "high": 4210000, "low": 4195000, "close": 4205000, "volume": 1250}))]
pub struct KlineRecordRead {
    /// Milliseconds since the Unix epoch, UTC (a resampled bucket: its start).
    pub ts: i64,
    #[schema(required = true)]
    pub open: Option<i64>,
    #[schema(required = true)]
    pub high: Option<i64>,
    #[schema(required = true)]
    pub low: Option<i64>,
    #[schema(required = true)]
    pub close: Option<i64>,
    #[schema(required = true)]
    pub volume: Option<i64>,
    /// Resampled reads: false only for the bucket holding the series' last bar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

/// A page of kline records, ascending by `ts`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"records": [{"ts": 1704067200000_i64, "open": 4200000, "high": 4210000, "low": 4195000, "close": 4205000, "volume": 1250}], "next_start_ts": 1704067260000_i64}))]
pub struct KlinePage {
    pub records: Vec<KlineRecordRead>,
    /// Where the next page starts (pass it as `start_ts`); `null` when this page is the last.
    #[schema(required = true)]
    pub next_start_ts: Option<i64>,
}

/// One scalar record as read.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"ts": 1704067200000_i64, "value": 71.25}))]
pub struct ScalarRecord {
    /// Milliseconds since the Unix epoch, UTC.
    pub ts: i64,
    /// An integer for `i64` series; a number for `f64` series, `null` for NaN and infinities.
    #[schema(required = true)]
    pub value: Option<f64>,
    /// Resampled reads: false only for the bucket holding the series' last value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
}

/// A page of scalar records, ascending by `ts`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"records": [{"ts": 1704067200000_i64, "value": 71.25}], "next_start_ts": null}))]
pub struct ScalarPage {
    pub records: Vec<ScalarRecord>,
    /// Where the next page starts (pass it as `start_ts`); `null` when this page is the last.
    #[schema(required = true)]
    pub next_start_ts: Option<i64>,
}

/// Series of one kind.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"series": [{"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m", "timeframe_ms": 60000, "price_scale": 100, "volume_scale": 1000, "rows": 525600, "first_ts": 1704067200000_i64, "last_ts": 1735689540000_i64, "bytes": 25231360, "version": 12}]}))]
pub struct SeriesList {
    pub series: Vec<crate::query::types::SeriesInfo>,
}

/// Registered datasets, ascending by name and version.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"datasets": [{"name": "binance-spot-1m", "version": "2024-06", "source": "binance", "market": "spot", "start_ts": 1704067200000_i64, "end_ts": 1719791999999_i64, "checksum": "xxh3:9f2c41d07a3b5e11", "status": "active", "description": "1m bars of the top 10 pairs"}]}))]
pub struct DatasetList {
    pub datasets: Vec<Dataset>,
}

/// Registered feature or factor definitions, ascending by name and version.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(example = json!({"definitions": [{"name": "rsi_14", "version": "1", "input_dataset": "binance-spot-1m", "symbol": "BTCUSDT", "timeframe": "1m", "category": "indicator", "series_name": "rsi_14", "config_hash": "sha256:5d41402a", "code_version": "git:1a2b3c4", "status": "active", "description": "Wilder RSI over 14 bars"}]}))]
pub struct DefinitionList {
    pub definitions: Vec<Definition>,
}

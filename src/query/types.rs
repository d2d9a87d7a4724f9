//! Request and response bodies shared by the HTTP and Flight front ends.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::record::{SeriesKind, ValueType};

// The admin bodies live with admin (which must not depend on `query`); they are part of
// the same wire, so they are re-exported here under their old paths.
pub use crate::admin::report::{ActionTaken, AdminReport, AdminRequest, Finding, SeriesSelector};

/// Register a kline series.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"symbol": "BTCUSDT", "timeframe": "1m", "price_scale": 100, "volume_scale": 1000}))]
pub struct RegisterKline {
    pub symbol: String,
    pub timeframe: String,
    /// Required unless `timeframe` is a standard name (1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 1w).
    #[serde(default)]
    pub timeframe_ms: Option<i64>,
    /// Prices are stored as integers: real price = integer / price_scale.
    pub price_scale: i64,
    /// Volume is stored as an integer: real volume = integer / volume_scale.
    pub volume_scale: i64,
    /// Months entirely older than `now - retention_ms` are dropped in the background;
    /// 0 keeps everything; absent: `storage.retention_ms`. Registering again with
    /// another value changes it.
    #[serde(default)]
    pub retention_ms: Option<i64>,
    /// Bars may sit at any `ts`. By default (false) every bar of a series sits on its
    /// timeframe's grid: `first bar + k * timeframe_ms`; a write with a bar off it is
    /// 422. Registering again with another value changes it; absent leaves it as is
    /// (false for a new series).
    #[serde(default)]
    pub irregular: Option<bool>,
}

/// Register a scalar series.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"symbol": "BTCUSDT", "timeframe": "1m", "category": "indicator", "name": "rsi_14", "value_type": "f64"}))]
pub struct RegisterScalar {
    pub symbol: String,
    pub timeframe: String,
    #[serde(default)]
    pub timeframe_ms: Option<i64>,
    pub category: String,
    pub name: String,
    /// `i64` (default) or `f64`.
    #[serde(default)]
    pub value_type: Option<ValueType>,
    /// As for kline series.
    #[serde(default)]
    pub retention_ms: Option<i64>,
}

/// One UTC month of a series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"month": "2024-01", "rows": 44640, "bytes": 2143232, "chunks": 1, "first_ts": 1704067200000_i64, "last_ts": 1706745540000_i64}))]
pub struct PartitionInfo {
    pub month: String,
    pub rows: u64,
    pub bytes: u64,
    pub chunks: usize,
    pub first_ts: i64,
    pub last_ts: i64,
}

/// A series' metadata and statistics.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"kind": "kline", "symbol": "BTCUSDT", "timeframe": "1m", "timeframe_ms": 60000, "price_scale": 100, "volume_scale": 1000, "rows": 525600, "first_ts": 1704067200000_i64, "last_ts": 1735689540000_i64, "bytes": 25231360, "version": 12}))]
pub struct SeriesInfo {
    pub kind: SeriesKind,
    pub symbol: String,
    pub timeframe: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub timeframe_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_scale: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_scale: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_type: Option<ValueType>,
    /// Trade and quote series: sizes are stored as integers, real = integer / size_scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_scale: Option<i64>,
    /// Trade and quote series: `day`, `hour` or `month` (`timeframe_ms` is its length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    pub rows: u64,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
    /// Bytes on disk: chunk files and sidecars.
    pub bytes: u64,
    pub version: u64,
    /// The series' own retention in ms; 0: none of its own (`storage.retention_ms` applies).
    #[serde(default)]
    pub retention_ms: i64,
    /// Kline only: bars may sit off the timeframe's grid (registered with
    /// `"irregular": true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub irregular: Option<bool>,
    /// Chunk and sidecar files on disk.
    #[serde(default)]
    pub files: u64,
    /// What `bytes` would be with every chunk stored uncompressed (equal to `bytes`
    /// when nothing is compressed).
    #[serde(default)]
    pub raw_bytes: u64,
    /// Rows written through the log and not yet folded into chunk files (readable;
    /// counted in `rows`, not in `bytes`).
    #[serde(default)]
    pub unfolded_rows: u64,
    /// A derived series: its base (`kline/BTCUSDT/1m`; docs/derived.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derived_from: Option<String>,
    /// A derived series: its stored bars before this bucket start are materialized
    /// (reads add the rest from the base on the fly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub materialized_through_ts: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<PartitionInfo>>,
}

/// Result of a committed write.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"written": 2, "inserted": 1, "replaced": 1, "months": ["2024-01"], "version": 7}))]
pub struct WriteResponse {
    pub written: u64,
    pub inserted: u64,
    pub replaced: u64,
    pub months: Vec<String>,
    pub version: u64,
}

/// Register many kline series in one request.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"series": [{"symbol": "BTCUSDT", "timeframe": "1m", "price_scale": 100, "volume_scale": 1000}, {"symbol": "ETHUSDT", "timeframe": "1m", "price_scale": 100, "volume_scale": 1000}]}))]
pub struct RegisterKlineMany {
    pub series: Vec<RegisterKline>,
}

/// Register many scalar series in one request.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"series": [{"symbol": "BTCUSDT", "timeframe": "1m", "category": "indicator", "name": "rsi_14", "value_type": "f64"}]}))]
pub struct RegisterScalarMany {
    pub series: Vec<RegisterScalar>,
}

/// What a batch registration did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"created": 9998, "existing": 2}))]
pub struct RegisterManyResponse {
    /// Series made by this request.
    pub created: u64,
    /// Series that already existed with identical metadata (left as they were).
    pub existing: u64,
}

/// One series of a many-series write and the version it is at after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"symbol": "BTCUSDT", "version": 8}))]
pub struct SeriesVersion {
    pub symbol: String,
    pub version: u64,
}

/// Result of a committed many-series write (one all-or-nothing unit).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"written": 2, "inserted": 2, "replaced": 0, "series": [{"symbol": "BTCUSDT", "version": 8}, {"symbol": "ETHUSDT", "version": 5}]}))]
pub struct ManyWriteResponse {
    pub written: u64,
    pub inserted: u64,
    pub replaced: u64,
    /// Every series written, in the order of first appearance in the request.
    pub series: Vec<SeriesVersion>,
}

impl ManyWriteResponse {
    /// The answer of a many-series write: `symbols[i]` is the series of `reports[i]`.
    pub fn of(symbols: Vec<String>, reports: Vec<crate::storage::WriteReport>) -> Self {
        assert_eq!(symbols.len(), reports.len(), "one report per series");
        let mut out = ManyWriteResponse {
            written: 0,
            inserted: 0,
            replaced: 0,
            series: Vec::with_capacity(reports.len()),
        };
        for (symbol, r) in symbols.into_iter().zip(reports) {
            out.written += r.written;
            out.inserted += r.inserted;
            out.replaced += r.replaced;
            out.series.push(SeriesVersion {
                symbol,
                version: r.version,
            });
        }
        out
    }
}

/// What one pass of the retention task dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RetentionReport {
    /// Series that lost months.
    pub series: u64,
    pub months: u64,
    pub rows: u64,
}

/// Result of a committed range delete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"deleted": 1440, "months": ["2024-01"], "version": 8}))]
pub struct DeleteRangeResponse {
    /// Rows removed (0: nothing matched, nothing was committed, the version is unchanged).
    pub deleted: u64,
    /// Months dropped or rewritten, `YYYY-MM`, ascending.
    pub months: Vec<String>,
    pub version: u64,
}

/// A value predicate on a scalar series. Numbers must be integers for i64 series.
/// On f64 series NaN never matches any predicate (not even `ne` or `not_in`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
#[schema(example = json!({"op": "gt", "value": 70}))]
pub enum Predicate {
    Eq {
        #[schema(value_type = f64)]
        value: serde_json::Number,
    },
    Ne {
        #[schema(value_type = f64)]
        value: serde_json::Number,
    },
    Gt {
        #[schema(value_type = f64)]
        value: serde_json::Number,
    },
    Gte {
        #[schema(value_type = f64)]
        value: serde_json::Number,
    },
    Lt {
        #[schema(value_type = f64)]
        value: serde_json::Number,
    },
    Lte {
        #[schema(value_type = f64)]
        value: serde_json::Number,
    },
    Between {
        #[schema(value_type = f64)]
        min: serde_json::Number,
        #[schema(value_type = f64)]
        max: serde_json::Number,
        /// Both ends included (default true); false excludes both.
        #[serde(default = "yes")]
        inclusive: bool,
    },
    In {
        #[schema(value_type = Vec<f64>)]
        values: Vec<serde_json::Number>,
    },
    NotIn {
        #[schema(value_type = Vec<f64>)]
        values: Vec<serde_json::Number>,
    },
}

fn yes() -> bool {
    true
}

/// How a predicate query finds its rows. `auto` picks by a cost rule; the others force
/// a strategy (for tests and benchmarks; a missing sidecar still falls back to scan).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Auto,
    Scan,
    Zonemap,
    ValueIndex,
}

/// A predicate query over a scalar series.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"start_ts": 1704067200000_i64, "predicate": {"op": "gt", "value": 70}, "return_values": true, "limit": 1000}))]
pub struct QueryRequest {
    #[serde(default)]
    pub start_ts: Option<i64>,
    #[serde(default)]
    pub end_ts: Option<i64>,
    pub predicate: Predicate,
    #[serde(default)]
    pub return_values: Option<bool>,
    /// Defaults to http.default_limit; capped by http.max_limit. `next_start_ts` pages on.
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub strategy: Option<Strategy>,
    /// Read the series as this snapshot holds it (docs/research.md).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Read this past version of the series (`storage.keep_versions_s`).
    #[serde(default)]
    pub version: Option<u64>,
    /// Read the version current at this time (ms since the epoch).
    #[serde(default)]
    pub as_of_commit: Option<i64>,
}

/// How much work a predicate query did.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct QueryStats {
    pub chunks_total: u64,
    pub chunks_pruned: u64,
    pub blocks_total: u64,
    pub blocks_pruned: u64,
    pub rows_checked: u64,
    pub rows_matched: u64,
    /// `value_index`, `zonemap`, `scan`, or `mixed` when chunks differed.
    pub index_used: String,
    /// Chunks whose sidecar was missing or corrupt, answered by scanning instead.
    pub sidecar_fallbacks: u64,
}

/// Result of a predicate query.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"timestamps": [1704067260000_i64], "values": [71.2], "next_start_ts": null, "stats": {"chunks_total": 12, "chunks_pruned": 11, "blocks_total": 132, "blocks_pruned": 131, "rows_checked": 4096, "rows_matched": 1, "index_used": "zonemap", "sidecar_fallbacks": 0}}))]
pub struct QueryResponse {
    pub timestamps: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<f64>>)]
    pub values: Option<Vec<serde_json::Value>>,
    pub next_start_ts: Option<i64>,
    pub stats: QueryStats,
}

/// `/health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[schema(example = json!({"status": "ok", "version": "0.1.0", "uptime_s": 42, "series": 3, "issues": 0, "store_bytes": 1048576, "disk_free_bytes": 53687091200_u64, "mapped_files": 120, "max_mapped_files": 16384, "details": []}))]
pub struct Health {
    /// `ok`, `degraded` or `failing`.
    pub status: String,
    pub version: String,
    pub uptime_s: u64,
    pub series: u64,
    /// Open findings from the last validation, recovery and disk checks.
    pub issues: u64,
    /// Bytes of the series' files on disk, summed at most once a second (at most a
    /// second old; `/inventory` and `fastk_store_bytes` sum afresh).
    pub store_bytes: u64,
    pub disk_free_bytes: Option<u64>,
    /// Data files mapped right now (cached or held by reads in progress).
    #[serde(default)]
    pub mapped_files: u64,
    /// The mapping budget, `storage.max_mapped_files`.
    #[serde(default)]
    pub max_mapped_files: u64,
    /// Milliseconds since the epoch of the last validation, if any ran.
    pub last_validation_ts: Option<i64>,
    /// Read replication (`replica.publish_to` or `replica.follow_from`), once its
    /// first pass has ended; absent on a node that neither publishes nor follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaHealth>,
    /// This node's place in a cluster (`cluster.shard_map`); absent outside one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterHealth>,
    /// One line per open issue.
    pub details: Vec<String>,
}

/// A node of a cluster in `/health` (docs/scale-out.md, "Symbol-sharded nodes").
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"node": "a", "owns": [""], "peers": 2, "unreachable": ["b (grpc://10.0.0.2:8815)"], "checked_ts": 1704067200000_i64}))]
pub struct ClusterHealth {
    /// This node's name in the map.
    pub node: String,
    /// The first symbol (`from`) of each range this node owns.
    pub owns: Vec<String>,
    /// Other nodes and replicas the map names, probed every few seconds.
    pub peers: u64,
    /// Those that did not accept a connection at the last probe, as "name (uri)".
    pub unreachable: Vec<String>,
    /// Milliseconds since the epoch of the last probe (none yet: no probe ended).
    pub checked_ts: Option<i64>,
    /// Whether the map comes from `cluster.shard_map_path`, read again at every probe.
    #[serde(default)]
    pub map_from_file: bool,
    /// Why the last read of that file was refused (unreadable, or not a valid map for
    /// this node): the map read before it is still the one in use. None otherwise.
    #[serde(default)]
    pub map_refused: Option<String>,
}

/// The replication passes of this node, in `/health` (docs/scale-out.md, "Read
/// replicas"). A follower serves what it had at its last successful pass, so
/// `since_ok_s` bounds how far it trails the publications it can see; the primary's
/// own `publish_interval_s` (and `storage.fold_age_s`) come on top.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"role": "follower", "passes": 120, "last_ok_ts": 1704067200000_i64, "since_ok_s": 4, "failed_passes": 0, "last_failed_series": 0, "last_error": null, "published_ts": 1704067170000_i64, "lag_s": 34}))]
pub struct ReplicaHealth {
    /// `publisher` or `follower`.
    pub role: String,
    /// Passes since the server started.
    pub passes: u64,
    /// Milliseconds since the epoch when the last pass completed.
    pub last_ok_ts: Option<i64>,
    /// Seconds since then.
    pub since_ok_s: Option<u64>,
    /// Passes in a row that failed as a whole (object store unreachable); 3 or more
    /// make `/health` degraded.
    pub failed_passes: u64,
    /// Series whose publication or apply failed in the last completed pass (their
    /// previous state is kept); above 0 makes `/health` degraded.
    pub last_failed_series: u64,
    /// Why the last pass failed, while `failed_passes` is above 0.
    pub last_error: Option<String>,
    /// A follower: the primary's clock (ms since the epoch) at the start of its last
    /// complete publication pass that this node has applied whole. Every write the
    /// primary committed to a manifest before it is here (writes still in the
    /// primary's log are not published until folded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_ts: Option<i64>,
    /// Seconds from `published_ts` to now: the follower's lag behind the primary's
    /// publications (clocks synchronized, e.g. NTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_s: Option<u64>,
}

/// `/inventory`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Inventory {
    pub series: Vec<SeriesInfo>,
    /// Rows, bytes and files of every series the filters select, not only this page's.
    pub total_rows: u64,
    pub total_bytes: u64,
    #[serde(default)]
    pub total_files: u64,
    /// `total_bytes` with every chunk uncompressed.
    #[serde(default)]
    pub total_raw_bytes: u64,
    /// The write-ahead log, store-wide.
    #[serde(default)]
    pub log: LogInfo,
    /// Named snapshots (docs/research.md).
    #[serde(default)]
    pub snapshots: u64,
    /// Bytes of chunk files and sidecars that only named snapshots keep (not in
    /// `total_bytes`: no series serves them now).
    #[serde(default)]
    pub snapshot_only_bytes: u64,
    /// With `limit`: the key to pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// The write-ahead log's size and what waits in memory to be folded into chunk files.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"bytes": 1048576, "segments": 2, "unfolded_series": 2000, "unfolded_rows": 24000, "unfolded_bytes": 3200000, "fold_lag_ms": 41000}))]
pub struct LogInfo {
    /// Bytes of log segments on disk.
    pub bytes: u64,
    pub segments: u64,
    /// Series holding rows that are only in the log (and in memory).
    pub unfolded_series: u64,
    pub unfolded_rows: u64,
    /// Bytes of those rows in memory, laid out as chunk files.
    pub unfolded_bytes: u64,
    /// Age of the oldest unfolded row in milliseconds (0: nothing waits).
    pub fold_lag_ms: u64,
}

/// Which series `/inventory` lists (every one by default, with partitions).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct InventoryQuery {
    /// Only series of this kind.
    pub kind: Option<SeriesKind>,
    /// Only series of this symbol.
    #[param(example = "BTCUSDT")]
    pub symbol: Option<String>,
    /// Include each series' monthly partitions (default true; false keeps a large
    /// inventory small).
    pub partitions: Option<bool>,
    /// At most this many series (ascending by key); `next_after` pages on.
    #[param(minimum = 1, example = 1000)]
    pub limit: Option<usize>,
    /// Only series whose key (`kind/symbol/timeframe[/category/name]`) sorts after this.
    #[param(example = "kline/BTCUSDT/1m")]
    pub after: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicate_numbers_round_trip_exactly() {
        let p: Predicate =
            serde_json::from_str(r#"{"op": "gt", "value": 0.30000000000000004}"#).unwrap();
        let Predicate::Gt { value } = p else {
            panic!("wrong op")
        };
        assert_eq!(value.as_f64(), Some(0.30000000000000004));
    }
}

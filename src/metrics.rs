//! Process metrics in the Prometheus text exposition format.
//!
//! Counters are atomics bumped on the hot paths; per-route HTTP latencies are kept in
//! fixed-bucket histograms keyed by (method, route template, status).

use crate::sync::LockExt;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS_S.len()],
    count: u64,
    sum_s: f64,
}

/// Gauges computed at scrape time by the caller.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub store_bytes: u64,
    /// Named snapshots, and the bytes of chunk files only they keep (docs/research.md).
    pub snapshots: (u64, u64),
    pub store_rows: u64,
    pub series: u64,
    /// 0 ok, 1 degraded, 2 failing.
    pub health_status: u8,
    pub uptime_s: u64,
    /// The store's mapping cache (None where no store is open).
    pub maps: Option<crate::storage::mapcache::MapStats>,
    /// Bytes reserved by in-flight writes, and the budget
    /// (`storage.max_inflight_write_bytes`).
    pub write_budget_used_bytes: u64,
    pub write_budget_limit_bytes: u64,
    /// SQL: memory reserved by running queries, and how many run.
    pub sql_memory_used_bytes: u64,
    pub sql_queries_running: u64,
    /// SQL's process-wide memory guard (`query::sql::watch`): the process's resident
    /// anonymous bytes at the last reading, the limit (0: off), and the queries it
    /// cancelled and refused since start.
    pub sql_guard_resident_bytes: u64,
    pub sql_guard_limit_bytes: u64,
    pub sql_guard_cancelled: u64,
    pub sql_guard_refused: u64,
    /// The write-ahead log and the fold (None where no store is open).
    pub wal: Option<crate::storage::WalStats>,
    /// Chunk and sidecar files of every series.
    pub store_files: u64,
    /// What `store_bytes` would be with every chunk uncompressed.
    pub store_raw_bytes: u64,
    /// Bytes of decompressed images cached for reads of compressed months, the
    /// cache's budget, and the idle images (and their bytes) released because the
    /// host ran short of memory.
    pub decompressed_bytes: u64,
    pub decompressed_max_bytes: u64,
    pub decompressed_released: (u64, u64),
    /// Bytes of raw copies of compressed months kept for co-located readers, and
    /// their budget (`storage::localcopy`).
    pub local_copy_bytes: u64,
    pub local_copy_max_bytes: u64,
    /// Read replication, once its first pass ended (None on a node that neither
    /// publishes nor follows): seconds since the last completed pass (None before
    /// one completed), failed passes in a row, series failed in the last pass, and a
    /// follower's lag behind the primary's publications (None before one applied).
    pub replica: Option<(Option<u64>, u64, u64, Option<u64>)>,
    /// Calls refused for a missing or unknown token, refused for scope or symbols,
    /// and failures answered late by the brute-force throttle.
    pub auth: (u64, u64, u64),
    /// TLS certificate reloads and failed reloads (None with TLS off).
    pub tls: Option<(u64, u64)>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub rows_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub rows_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub writes_committed: AtomicU64,
    pub flight_streams_open: AtomicI64,
    pub flight_streams_total: AtomicU64,
    pub flight_rows_sent: AtomicU64,
    pub flight_bytes_sent: AtomicU64,
    /// Stages of distributed SQL queries this node ran for another node (or itself).
    pub sql_worker_tasks: AtomicU64,
    /// Distributed SQL queries run a second time on a replica of a node that failed.
    pub sql_replica_retries: AtomicU64,
    http: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    flight_calls: Mutex<BTreeMap<(String, String), u64>>,
}

impl Metrics {
    pub fn add_read(&self, rows: u64, bytes: u64) {
        self.rows_read.fetch_add(rows, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn add_written(&self, rows: u64, bytes: u64) {
        self.rows_written.fetch_add(rows, Ordering::Relaxed);
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.writes_committed.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one HTTP request. `route` is the route template (`/v1/kline/{symbol}/{timeframe}`).
    pub fn observe_http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut map = self.http.locked();
        let h = map
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        h.count += 1;
        h.sum_s += seconds;
        for (i, &b) in LATENCY_BUCKETS_S.iter().enumerate() {
            if seconds <= b {
                h.buckets[i] += 1;
            }
        }
    }

    /// Records one Flight RPC by method and gRPC code name.
    pub fn observe_flight(&self, method: &str, code: &str) {
        let mut map = self.flight_calls.locked();
        *map.entry((method.to_string(), code.to_string()))
            .or_default() += 1;
    }

    /// Renders every metric in the Prometheus text format.
    ///
    /// Long on purpose: one statement per exported family, in the order `/metrics`
    /// prints them, each independent of the others; split, the exposition's order
    /// would be spread over several functions.
    pub fn render(&self, g: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "fastk_rows_read_total",
            "Rows returned by reads (HTTP and Flight).",
            ld(&self.rows_read),
        );
        counter(
            &mut out,
            "fastk_bytes_read_total",
            "Bytes of stored columns returned by reads.",
            ld(&self.bytes_read),
        );
        counter(
            &mut out,
            "fastk_rows_written_total",
            "Rows committed by writes.",
            ld(&self.rows_written),
        );
        counter(
            &mut out,
            "fastk_bytes_written_total",
            "Bytes of record data committed by writes.",
            ld(&self.bytes_written),
        );
        counter(
            &mut out,
            "fastk_writes_total",
            "Committed write requests.",
            ld(&self.writes_committed),
        );
        gauge(
            &mut out,
            "fastk_flight_streams_open",
            "Flight DoGet/DoPut streams in progress.",
            self.flight_streams_open.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "fastk_flight_streams_total",
            "Flight DoGet/DoPut streams started.",
            ld(&self.flight_streams_total),
        );
        counter(
            &mut out,
            "fastk_sql_worker_tasks_total",
            "Stages of distributed SQL queries this node's worker ran.",
            ld(&self.sql_worker_tasks),
        );
        counter(
            &mut out,
            "fastk_sql_replica_retries_total",
            "Distributed SQL queries run again on a replica after a node did not answer.",
            ld(&self.sql_replica_retries),
        );
        counter(
            &mut out,
            "fastk_flight_rows_sent_total",
            "Rows sent by Flight DoGet.",
            ld(&self.flight_rows_sent),
        );
        counter(
            &mut out,
            "fastk_flight_bytes_sent_total",
            "Arrow buffer bytes sent by Flight DoGet.",
            ld(&self.flight_bytes_sent),
        );
        gauge(
            &mut out,
            "fastk_store_bytes",
            "Bytes of chunk files and sidecars on disk.",
            g.store_bytes as i64,
        );
        gauge(
            &mut out,
            "fastk_store_rows",
            "Rows stored across all series.",
            g.store_rows as i64,
        );
        gauge(
            &mut out,
            "fastk_series",
            "Registered series.",
            g.series as i64,
        );
        gauge(
            &mut out,
            "fastk_health_status",
            "0 ok, 1 degraded, 2 failing.",
            g.health_status as i64,
        );
        gauge(
            &mut out,
            "fastk_uptime_seconds",
            "Seconds since the server started.",
            g.uptime_s as i64,
        );
        if let Some(m) = &g.maps {
            gauge(
                &mut out,
                "fastk_mapped_files",
                "Data files mapped now (cached or held by reads in progress).",
                m.live as i64,
            );
            gauge(
                &mut out,
                "fastk_mapped_files_in_use",
                "Mapped files held by reads in progress (not evictable).",
                m.in_use as i64,
            );
            gauge(
                &mut out,
                "fastk_mapped_files_max",
                "The mapping budget, storage.max_mapped_files.",
                m.max as i64,
            );
            counter(
                &mut out,
                "fastk_map_failures_total",
                "Reads refused a mapping (budget exhausted or kernel refusal).",
                m.failures_total,
            );
            gauge(
                &mut out,
                "fastk_zonemap_cache_bytes",
                "Bytes of parsed zone maps cached.",
                m.zonemap_bytes as i64,
            );
        }
        gauge(
            &mut out,
            "fastk_write_budget_used_bytes",
            "Bytes reserved by in-flight writes (HTTP record POSTs, DoPut streams).",
            g.write_budget_used_bytes as i64,
        );
        gauge(
            &mut out,
            "fastk_write_budget_limit_bytes",
            "The in-flight write budget, storage.max_inflight_write_bytes.",
            g.write_budget_limit_bytes as i64,
        );
        gauge(
            &mut out,
            "fastk_sql_memory_used_bytes",
            "Bytes reserved by running SQL queries (of sql.memory_total_bytes).",
            g.sql_memory_used_bytes as i64,
        );
        gauge(
            &mut out,
            "fastk_sql_queries_running",
            "SQL queries running (of sql.max_concurrent_queries).",
            g.sql_queries_running as i64,
        );
        gauge(
            &mut out,
            "fastk_process_resident_anon_bytes",
            "Resident anonymous memory of the process at the SQL memory guard's last reading.",
            g.sql_guard_resident_bytes as i64,
        );
        gauge(
            &mut out,
            "fastk_sql_process_memory_limit_bytes",
            "sql.process_memory_limit_bytes as resolved (0: the guard is off).",
            g.sql_guard_limit_bytes as i64,
        );
        counter(
            &mut out,
            "fastk_sql_guard_cancelled_total",
            "SQL queries cancelled because the process passed sql.process_memory_limit_bytes.",
            g.sql_guard_cancelled,
        );
        let (unauthorized, forbidden, throttled) = g.auth;
        let _ = writeln!(
            out,
            "# HELP fastk_auth_failures_total Calls refused: a missing or unknown token (unauthorized), or a token outside its scopes or symbols (forbidden).\n\
             # TYPE fastk_auth_failures_total counter\n\
             fastk_auth_failures_total{{reason=\"unauthorized\"}} {unauthorized}\n\
             fastk_auth_failures_total{{reason=\"forbidden\"}} {forbidden}"
        );
        counter(
            &mut out,
            "fastk_auth_throttled_total",
            "Failed authentications answered after a delay because their address kept failing.",
            throttled,
        );
        if let Some((reloads, errors)) = g.tls {
            counter(
                &mut out,
                "fastk_tls_reloads_total",
                "TLS certificate files loaded again after they changed.",
                reloads,
            );
            counter(
                &mut out,
                "fastk_tls_reload_errors_total",
                "TLS certificate files that changed but did not load (the previous ones stay).",
                errors,
            );
        }
        counter(
            &mut out,
            "fastk_sql_guard_refused_total",
            "SQL queries refused (503) while the process was over sql.process_memory_limit_bytes.",
            g.sql_guard_refused,
        );
        gauge(
            &mut out,
            "fastk_store_files",
            "Chunk and sidecar files of every series.",
            g.store_files as i64,
        );
        gauge(
            &mut out,
            "fastk_store_raw_bytes",
            "What fastk_store_bytes would be with every chunk uncompressed.",
            g.store_raw_bytes as i64,
        );
        gauge(
            &mut out,
            "fastk_snapshots",
            "Named snapshots (docs/research.md).",
            g.snapshots.0 as i64,
        );
        gauge(
            &mut out,
            "fastk_snapshot_only_bytes",
            "Bytes of chunk files and sidecars only named snapshots keep (no series serves them now).",
            g.snapshots.1 as i64,
        );
        gauge(
            &mut out,
            "fastk_decompressed_cache_bytes",
            "Bytes of decompressed compressed months cached for reads (storage.decompressed_cache_bytes).",
            g.decompressed_bytes as i64,
        );
        gauge(
            &mut out,
            "fastk_local_copy_bytes",
            "Bytes of raw copies of compressed months kept in <root>/local/ for co-located readers (local-read).",
            g.local_copy_bytes as i64,
        );
        gauge(
            &mut out,
            "fastk_local_copy_max_bytes",
            "The raw copies' budget (storage.local_copy_bytes).",
            g.local_copy_max_bytes as i64,
        );
        gauge(
            &mut out,
            "fastk_decompressed_cache_max_bytes",
            "The decompressed-month cache's budget (storage.decompressed_cache_bytes; 0 there: an eighth of the memory limit, 16 MiB to 4 GiB).",
            g.decompressed_max_bytes as i64,
        );
        counter(
            &mut out,
            "fastk_decompressed_released_images_total",
            "Idle decompressed months dropped because the host or cgroup had less than storage.release_below_available_percent of its memory left.",
            g.decompressed_released.0,
        );
        counter(
            &mut out,
            "fastk_decompressed_released_bytes_total",
            "Bytes of the idle decompressed months dropped under memory pressure.",
            g.decompressed_released.1,
        );
        if let Some((since_ok_s, failed_passes, failed_series, lag_s)) = g.replica {
            if let Some(lag) = lag_s {
                gauge(
                    &mut out,
                    "fastk_replica_lag_seconds",
                    "A follower's lag: seconds since the start of the primary's last complete publication pass that this node holds whole (writes committed on the primary before it are here).",
                    lag as i64,
                );
            }
            if let Some(s) = since_ok_s {
                gauge(
                    &mut out,
                    "fastk_replica_seconds_since_ok",
                    "Seconds since this node's last completed replication pass (a follower's own share of its lag).",
                    s as i64,
                );
            }
            gauge(
                &mut out,
                "fastk_replica_failed_passes",
                "Replication passes in a row that failed as a whole (3 or more: /health degraded).",
                failed_passes as i64,
            );
            gauge(
                &mut out,
                "fastk_replica_failed_series",
                "Series whose publication or apply failed in the last completed replication pass.",
                failed_series as i64,
            );
        }
        if let Some(w) = &g.wal {
            gauge(
                &mut out,
                "fastk_wal_bytes",
                "Bytes of write-ahead log on disk.",
                w.bytes as i64,
            );
            gauge(
                &mut out,
                "fastk_wal_segments",
                "Segments of the write-ahead log.",
                w.segments as i64,
            );
            gauge(
                &mut out,
                "fastk_wal_unfolded_rows",
                "Rows in the log and in memory, not yet folded into chunk files.",
                w.unfolded_rows as i64,
            );
            gauge(
                &mut out,
                "fastk_wal_unfolded_bytes",
                "Bytes of those rows in memory.",
                w.unfolded_bytes as i64,
            );
            gauge(
                &mut out,
                "fastk_store_resident_series",
                "Small series whose rows the catalog keeps (no directory of their own).",
                w.resident_series as i64,
            );
            gauge(
                &mut out,
                "fastk_store_dormant_series",
                "Series not built now: their catalog entry and rows only, built when first asked for (after a start, or back to sleep once idle).",
                w.dormant_series as i64,
            );
            counter(
                &mut out,
                "fastk_store_series_slept_total",
                "Built series that went back to sleep, idle for storage.dormant_after_s, since the start.",
                w.slept_series,
            );
            gauge(
                &mut out,
                "fastk_store_resident_bytes",
                "Bytes of those series' rows in memory (bounded by storage.resident_bytes_max).",
                w.resident_bytes as i64,
            );
            gauge(
                &mut out,
                "fastk_wal_fold_lag_ms",
                "Age of the oldest unfolded row (0: nothing waits).",
                w.fold_lag_ms as i64,
            );
            counter(
                &mut out,
                "fastk_wal_syncs_total",
                "Syncs of the write-ahead log.",
                w.syncs,
            );
            counter(
                &mut out,
                "fastk_wal_records_total",
                "Writes made durable by the write-ahead log (records / syncs is the group-commit factor).",
                w.records,
            );
        }
        self.render_http(&mut out);
        let calls = self.flight_calls.locked();
        let _ = writeln!(
            out,
            "# HELP fastk_flight_requests_total Flight RPCs by method and gRPC code."
        );
        let _ = writeln!(out, "# TYPE fastk_flight_requests_total counter");
        for ((method, code), n) in calls.iter() {
            let _ = writeln!(
                out,
                "fastk_flight_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
            );
        }
        out
    }

    fn render_http(&self, out: &mut String) {
        let map = self.http.locked();
        let _ = writeln!(
            out,
            "# HELP fastk_http_requests_total HTTP requests by method, route and status."
        );
        let _ = writeln!(out, "# TYPE fastk_http_requests_total counter");
        for ((m, r, s), h) in map.iter() {
            let _ = writeln!(
                out,
                "fastk_http_requests_total{{method=\"{m}\",route=\"{r}\",status=\"{s}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP fastk_http_request_duration_seconds HTTP request latency by method, route and status."
        );
        let _ = writeln!(out, "# TYPE fastk_http_request_duration_seconds histogram");
        for ((m, r, s), h) in map.iter() {
            let labels = format!("method=\"{m}\",route=\"{r}\",status=\"{s}\"");
            for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "fastk_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "fastk_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "fastk_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum_s
            );
            let _ = writeln!(
                out,
                "fastk_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
}

//! Configuration: defaults < TOML file < environment (`FASTK__SECTION__KEY`).
//!
//! Every key is named, has a default, and is validated at load; unknown keys in the
//! file or the environment are errors, so a typo never silently falls back.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::StoreOptions;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub storage: StorageConfig,
    pub http: HttpConfig,
    pub flight: FlightConfig,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub log: LogConfig,
    pub sql: SqlConfig,
    pub cluster: ClusterConfig,
    pub replica: ReplicaConfig,
}

/// Read replicas through object storage (`src/replica`, docs/scale-out.md section 2).
/// A primary publishes with `publish_to`; a replica follows with `follow_from` and
/// refuses every write. Both empty, the default: neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaConfig {
    /// Object store URL this primary publishes its sealed files and manifests to
    /// (`file:///srv/fastk-objects`, or `s3://bucket/prefix` configured by the standard
    /// `AWS_*` variables; `gs://`, `az://` need the `object_store` crate's gcp and
    /// azure features, not in this build).
    pub publish_to: String,
    /// Seconds between two publication passes.
    pub publish_interval_s: u64,
    /// Seconds an object stays in the store after no published manifest names it
    /// (a replica that read the older manifest can still fetch it).
    pub gc_grace_s: u64,
    /// Object store URL this node follows as a read-only replica.
    pub follow_from: String,
    /// Seconds between two polls of the followed store.
    pub poll_interval_s: u64,
    /// Series published or followed at once (each its own sequence of object calls).
    pub concurrency: usize,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            publish_to: String::new(),
            publish_interval_s: 30,
            gc_grace_s: 3_600,
            follow_from: String::new(),
            poll_interval_s: 10,
            concurrency: 8,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: String::new(),
            shard_map: String::new(),
            shard_map_path: PathBuf::new(),
            forward_timeout_s: 60,
            sql: "local".to_string(),
        }
    }
}

/// Symbol-sharded nodes (`src/cluster.rs`, docs/scale-out.md): both empty, the
/// default, means one node that serves every series it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name in the map.
    pub node: String,
    /// The shard map as JSON text, the same on every node: `{"nodes": {name: flight
    /// URI}, "ranges": [{"from", "node"}]}`.
    pub shard_map: String,
    /// Or a file holding it, read again every few seconds while the node runs
    /// (`cluster::ClusterCell::reload`); at most one of the two is set.
    pub shard_map_path: PathBuf,
    /// Seconds a node waits for another node's answer to a forwarded call before it
    /// counts that node as down (and tries its replicas).
    pub forward_timeout_s: u64,
    /// `"local"` (the default): SQL reads this node's series only. `"distributed"`: a
    /// query runs on every node that owns series it reads (`src/query/sql/dist`), and
    /// this node serves the engine's worker service on its Flight port.
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub root: PathBuf,
    pub max_chunks_per_month: usize,
    pub zonemap_block_rows: usize,
    pub value_index: bool,
    /// Scalar chunks of fewer rows get no zone map and no value index.
    pub sidecar_min_rows: usize,
    pub write_threads: usize,
    pub sync_threads: usize,
    /// Series the background compression and pack pass, and `admin compact`, rewrite
    /// at once (each is its own commit, waiting on the codec or the disk).
    pub maintenance_threads: usize,
    pub low_disk_bytes: u64,
    pub max_write_rows: usize,
    pub max_mapped_files: usize,
    pub zonemap_cache_bytes: usize,
    /// Most bytes all in-flight writes (HTTP record POSTs, DoPut streams) may hold in
    /// memory together (`src/query/budget.rs`).
    pub max_inflight_write_bytes: u64,
    /// How long a write waits for room in that budget before it is refused (503 /
    /// Unavailable, retry).
    pub write_budget_wait_ms: u64,
    /// Default retention of series registered without their own `retention_ms`:
    /// months entirely older than `now - retention_ms` are dropped (0: keep forever).
    pub retention_ms: u64,
    /// Seconds between two passes of the retention task.
    pub retention_interval_s: u64,
    /// A write-ahead log segment past this many bytes is closed and a new one started.
    pub wal_segment_bytes: u64,
    /// Most bytes of one log record (one write); a larger many-series write is refused.
    pub wal_max_record_bytes: usize,
    /// Microseconds the log's committer waits for more writes before each sync (0: the
    /// sync in progress is the window).
    pub wal_group_window_us: u64,
    /// Single-series writes of more rows than this skip the log (bulk loads are written
    /// as chunk files directly).
    pub wal_direct_rows: usize,
    /// Past this many bytes of log, the series holding its oldest segments are folded.
    pub wal_max_bytes: u64,
    /// A series' log rows are folded into chunk files once this many wait in memory...
    pub fold_rows: u64,
    /// ... or once the oldest of them has waited this many seconds.
    pub fold_age_s: u64,
    /// Past this many bytes of unfolded rows in memory, every series is folded.
    pub fold_memory_bytes: u64,
    /// A series with no directory of its own that holds at most this many rows is
    /// folded into the store's catalog with other small series, not into a
    /// directory, a manifest and a chunk file of its own (0: never). Off on a primary
    /// that publishes to replicas (`replica.publish_to`): replicas ship directories.
    pub resident_rows_max: u64,
    /// Most bytes of rows (in memory, as chunk images) the series kept in the catalog
    /// hold together; past it, small series fold into directories as large ones do.
    pub resident_bytes_max: u64,
    /// Series one fold pass folds at once: each fold waits on its own fsyncs, so a
    /// pass over thousands of series (after a many-series write) shares the device.
    pub fold_threads: usize,
    /// Codec of sealed months: "pco" (pcodec per column) or "none" (raw, as before).
    pub compression: String,
    /// A month is sealed (and compressed) once it ended this many seconds ago.
    pub compress_after_s: u64,
    /// Seconds between two background passes that compress sealed months.
    pub compress_interval_s: u64,
    /// A write that makes a sealed month its one chunk writes it compressed (and
    /// packed) in the same pass; false leaves it raw for the background pass.
    pub compress_on_write: bool,
    /// Bytes of decompressed compressed months kept in memory for reads (0: an
    /// eighth of the host's or cgroup's memory, 16 MiB to 4 GiB).
    pub decompressed_cache_bytes: usize,
    /// Below this percentage of memory left (host or cgroup), idle decompressed
    /// months are dropped at once (0: never).
    pub release_below_available_percent: u8,
    /// Whether a clean stop folds the log's rows into chunk files before it exits
    /// (false: they stay in the durable log and the next start replays them).
    pub fold_on_stop: bool,
    /// With `fold_on_stop` false: whether a clean stop still writes the log's rows of
    /// small series with no directory into the catalog (one bulk write), so the next
    /// start replays none of them and builds none until asked (true by default).
    pub fold_small_on_stop: bool,
    /// Sealed compressed months of small chunks are gathered into pack files of at most
    /// this many bytes by the compression pass (0: never pack).
    pub pack_target_bytes: u64,
    /// Chunk and pack files of a write at least this large bypass the page cache
    /// (`O_DIRECT`; 0: never).
    pub direct_write_min_bytes: u64,
    /// Seconds a superseded version of a series stays readable by `version` or
    /// `as_of_commit` (0: only the current version; docs/research.md).
    pub keep_versions_s: u64,
    /// Bytes of raw copies of compressed months kept in `<root>/local/` for
    /// co-located readers (`local-read`; 0: none, those months go through DoGet).
    pub local_copy_bytes: u64,
    /// A built small series (no directory, its rows in the catalog) that no one asked
    /// for during this many seconds goes back to sleep: its state is dropped and
    /// built again on the next request (0: never; at most a day).
    pub dormant_after_s: u64,
}

/// Longest `storage.dormant_after_s` (a day).
pub const MAX_DORMANT_AFTER_S: u64 = 86_400;
/// Default of `storage.dormant_after_s`: five minutes.
pub const DEFAULT_DORMANT_AFTER_S: u64 = 300;

/// Longest `storage.keep_versions_s` (a year): a kept version holds its files and the
/// log rows it read in memory.
pub const MAX_KEEP_VERSIONS_S: u64 = 365 * 86_400;

impl Default for StorageConfig {
    /// The storage engine's own defaults (`StoreOptions`, `WalOptions`), said once
    /// there; only what the engine has no default for (the root, the background
    /// tasks' schedules, the write budget, codecs by name) is set here.
    fn default() -> Self {
        let store = StoreOptions::default();
        let wal = &store.wal;
        StorageConfig {
            root: PathBuf::from("./data"),
            max_chunks_per_month: store.max_chunks_per_month,
            zonemap_block_rows: store.zonemap_block_rows.unwrap_or(0),
            value_index: store.value_index,
            sidecar_min_rows: store.sidecar_min_rows,
            write_threads: store.write_threads,
            sync_threads: store.sync_threads,
            maintenance_threads: store.maintenance_threads,
            low_disk_bytes: 1 << 30,
            max_write_rows: store.max_write_rows,
            max_mapped_files: store.max_mapped_files,
            zonemap_cache_bytes: store.zonemap_cache_bytes,
            max_inflight_write_bytes: 4 << 30,
            write_budget_wait_ms: 2_000,
            retention_ms: 0,
            retention_interval_s: 600,
            wal_segment_bytes: wal.segment_bytes,
            wal_max_record_bytes: wal.max_record_bytes,
            wal_group_window_us: wal.group_window.as_micros() as u64,
            wal_direct_rows: wal.direct_rows,
            wal_max_bytes: wal.max_log_bytes,
            fold_rows: wal.fold_rows,
            fold_age_s: wal.fold_age.as_secs(),
            fold_memory_bytes: wal.memory_bytes,
            fold_threads: wal.fold_threads,
            resident_rows_max: crate::storage::resident::DEFAULT_RESIDENT_ROWS_MAX,
            resident_bytes_max: store.resident_bytes_max,
            compression: "pco".into(),
            compress_after_s: 3 * 86_400,
            compress_interval_s: 3_600,
            compress_on_write: store.compress_on_write,
            decompressed_cache_bytes: 0,
            release_below_available_percent: 10,
            fold_on_stop: false,
            fold_small_on_stop: true,
            pack_target_bytes: store.pack_target_bytes,
            direct_write_min_bytes: store.direct_write_min_bytes,
            keep_versions_s: 0,
            local_copy_bytes: store.local_copy_bytes,
            dormant_after_s: DEFAULT_DORMANT_AFTER_S,
        }
    }
}

impl StorageConfig {
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            max_chunks_per_month: self.max_chunks_per_month,
            zonemap_block_rows: (self.zonemap_block_rows > 0).then_some(self.zonemap_block_rows),
            value_index: self.value_index,
            sidecar_min_rows: self.sidecar_min_rows,
            write_threads: self.write_threads,
            sync_threads: self.sync_threads,
            maintenance_threads: self.maintenance_threads,
            max_write_rows: self.max_write_rows,
            max_mapped_files: self.max_mapped_files,
            zonemap_cache_bytes: self.zonemap_cache_bytes,
            wal: crate::storage::wal::WalOptions {
                segment_bytes: self.wal_segment_bytes,
                max_record_bytes: self.wal_max_record_bytes,
                group_window: std::time::Duration::from_micros(self.wal_group_window_us),
                direct_rows: self.wal_direct_rows,
                fold_rows: self.fold_rows,
                fold_age: std::time::Duration::from_secs(self.fold_age_s),
                max_log_bytes: self.wal_max_bytes,
                memory_bytes: self.fold_memory_bytes,
                fold_threads: self.fold_threads,
                ..crate::storage::wal::WalOptions::default()
            },
            decompressed_cache_bytes: match self.decompressed_cache_bytes {
                0 => crate::storage::pressure::auto_cache_bytes(),
                n => n,
            },
            fold_on_close: self.fold_on_stop,
            fold_small_on_close: self.fold_small_on_stop,
            compress_after_ms: (self.compression == "pco").then(|| {
                i64::try_from(self.compress_after_s.saturating_mul(1000)).unwrap_or(i64::MAX)
            }),
            compress_on_write: self.compress_on_write,
            pack_target_bytes: self.pack_target_bytes,
            direct_write_min_bytes: self.direct_write_min_bytes,
            keep_versions_ms: i64::try_from(self.keep_versions_s.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            resident_rows_max: self.resident_rows_max,
            resident_bytes_max: self.resident_bytes_max,
            local_copy_bytes: self.local_copy_bytes,
            dormant_after: (self.dormant_after_s > 0)
                .then_some(std::time::Duration::from_secs(self.dormant_after_s)),
            ..StoreOptions::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub addr: String,
    pub max_body_bytes: usize,
    pub default_limit: usize,
    pub max_limit: usize,
    pub max_latest: usize,
    /// Series one HTTP batch read may name (or `"*"` may match).
    pub max_batch_series: usize,
    pub cors_origins: Vec<String>,
    pub gzip: bool,
    pub request_timeout_s: u64,
    /// Seconds a new connection may take to send its first request's headers
    /// (slowloris bound).
    pub header_read_timeout_s: u64,
    /// Seconds a connection with no request in flight is kept open after its last
    /// response (silent, or halfway through its next request head).
    pub keep_alive_idle_s: u64,
    /// Connections served at once; further ones first displace the oldest idle one.
    pub max_connections: usize,
    /// Most bytes of an unread request body drained after an early rejection to keep
    /// the connection; a larger remainder closes it instead.
    pub max_drain_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:8080".into(),
            max_body_bytes: 64 << 20,
            default_limit: 10_000,
            max_limit: 100_000,
            max_latest: 100_000,
            max_batch_series: 100,
            cors_origins: Vec::new(),
            gzip: true,
            request_timeout_s: 120,
            header_read_timeout_s: 10,
            keep_alive_idle_s: 60,
            max_connections: 1024,
            max_drain_bytes: 64 << 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightConfig {
    pub addr: String,
    pub max_batch_rows: usize,
    pub max_message_bytes: usize,
    pub max_put_rows: usize,
    /// DoGet streams served at once (the name predates the separate DoPut pool).
    pub max_concurrent_streams: usize,
    /// Series one many-series ticket may name (or `"*"` may match).
    pub max_series_per_ticket: usize,
    /// A Unix domain socket path on which Flight (and Flight SQL) is served too, for
    /// clients on the same host (`grpc+unix://`); empty: off.
    pub unix_socket: String,
    /// DoPut streams served at once, a pool of their own so stalled readers cannot
    /// starve writers.
    pub max_put_streams: usize,
    /// A DoGet whose client accepts no message, or a DoPut whose client sends none, for
    /// this long is ended and its slot freed.
    pub stall_timeout_s: u64,
    /// HTTP/2 PING interval on every Flight connection (0: off).
    pub keepalive_interval_s: u64,
    /// A connection that does not answer a PING within this long is closed.
    pub keepalive_timeout_s: u64,
    /// A connection with no call in progress for this long is closed (0: never).
    pub idle_timeout_s: u64,
    /// Flight connections open at once; further ones are closed at accept.
    pub max_connections: usize,
    /// Concurrent HTTP/2 streams (calls) one connection may open.
    pub max_streams_per_connection: u32,
    /// Chunks one `local-read` plan may span (its parts are at most this many).
    pub max_local_parts: usize,
}

impl Default for FlightConfig {
    fn default() -> Self {
        FlightConfig {
            addr: "127.0.0.1:8815".into(),
            max_batch_rows: 65_536,
            max_concurrent_streams: 64,
            max_series_per_ticket: 100_000,
            unix_socket: String::new(),
            max_message_bytes: 256 << 20,
            max_put_rows: 50_000_000,
            max_put_streams: 16,
            stall_timeout_s: 30,
            keepalive_interval_s: 30,
            keepalive_timeout_s: 10,
            idle_timeout_s: 300,
            max_connections: 256,
            max_streams_per_connection: 128,
            max_local_parts: 10_000,
        }
    }
}

/// SQL (HTTP `POST /v1/sql` and Flight SQL): what one query, and all of them
/// together, may take. A query over a limit ends with a clear error, never an
/// out-of-memory kill (docs/sql.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqlConfig {
    /// Queries running at once; more are refused with 503 / Unavailable (retry).
    pub max_concurrent_queries: usize,
    /// Memory one query's operators (sorts, joins, aggregates) may reserve.
    pub memory_per_query_bytes: usize,
    /// Memory every running query together may reserve.
    pub memory_total_bytes: usize,
    /// A query still running this long after it started is cancelled.
    pub query_timeout_s: u64,
    /// Longest SQL text accepted.
    pub max_query_bytes: usize,
    /// Prepared statements (Flight SQL) kept at once; the least recently used is closed.
    pub max_prepared_statements: usize,
    /// A prepared statement unused this long is closed.
    pub prepared_idle_s: u64,
    /// Partitions a query's plan runs in (0: one per core).
    pub target_partitions: usize,
    /// Operators and keywords in one query's text (identifiers, literals, commas and
    /// parentheses are free): bounds how deep a tree the parser can build.
    pub max_query_operators: usize,
    /// How deeply a parsed query may nest: each link of an operator chain, function
    /// around its argument, subquery, set operation, common table expression and
    /// joined table counts one level.
    pub max_query_depth: usize,
    /// Expressions in one parsed query.
    pub max_query_nodes: usize,
    /// What one call of a function that makes more than it reads (`repeat`, `lpad`,
    /// `range`, `array_repeat`, ...) may produce for one batch, estimated before it
    /// runs and charged to the query's memory while it runs (the smaller of this and
    /// `memory_per_query_bytes` applies).
    pub max_function_output_bytes: usize,
    /// The process's resident anonymous memory above which new queries are refused
    /// and the running query holding the most memory is cancelled (0: four fifths of
    /// the host's memory, or of the cgroup's limit when one is set).
    pub process_memory_limit_bytes: u64,
}

impl SqlConfig {
    /// What one function call may make: `max_function_output_bytes`, or the query's
    /// whole memory when that is smaller.
    pub fn function_output_cap(&self) -> usize {
        self.max_function_output_bytes
            .min(self.memory_per_query_bytes)
    }
}

impl Default for SqlConfig {
    fn default() -> Self {
        SqlConfig {
            max_concurrent_queries: 16,
            memory_per_query_bytes: 1 << 30,
            memory_total_bytes: 4 << 30,
            query_timeout_s: 300,
            max_query_bytes: 1 << 20,
            max_prepared_statements: 1024,
            prepared_idle_s: 3600,
            target_partitions: 0,
            max_query_operators: 20_000,
            max_query_depth: 256,
            max_query_nodes: 100_000,
            max_function_output_bytes: 256 << 20,
            process_memory_limit_bytes: 0,
        }
    }
}

/// Who may call (`src/auth`, docs/operations.md "Security").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// One token with every scope, named `default` (empty: none).
    pub token: String,
    /// Reads need a token with the `read` scope too.
    pub protect_reads: bool,
    /// A TOML file of `[[token]]` entries (SHA-256, scopes, symbol patterns), re-read
    /// when it changes (empty: none).
    pub tokens_file: String,
    /// Seconds a session token from Flight's Handshake stays valid.
    pub session_ttl_s: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            token: String::new(),
            protect_reads: false,
            tokens_file: String::new(),
            session_ttl_s: 3600,
        }
    }
}

/// TLS on the HTTP and Flight TCP listeners (`src/tls.rs`). Empty `cert_path`: off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's certificate first.
    pub cert_path: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: String,
    /// PEM CA certificates: set, clients must present a certificate signed by one.
    pub client_ca_path: String,
    /// Seconds between two looks at the three files; a change is loaded for new
    /// connections.
    pub reload_interval_s: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_path: String::new(),
            key_path: String::new(),
            client_ca_path: String::new(),
            reload_interval_s: 2,
        }
    }
}

impl TlsConfig {
    /// True when the listeners speak TLS.
    pub fn enabled(&self) -> bool {
        !self.cert_path.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError(format!("tls.{k}: {why}")));
        if self.cert_path.is_empty() != self.key_path.is_empty() {
            return bad(
                "key_path",
                "set cert_path and key_path together (both empty: TLS off)",
            );
        }
        if !self.enabled() && !self.client_ca_path.is_empty() {
            return bad(
                "client_ca_path",
                "mutual TLS needs TLS: set cert_path and key_path too",
            );
        }
        if !(1..=3600).contains(&self.reload_interval_s) {
            return bad("reload_interval_s", "must be between 1 and 3600");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// A configuration that could not be loaded; the message names the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Defaults, then `file` (if any), then `FASTK__SECTION__KEY` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut merged =
            toml::Table::try_from(Config::default()).map_err(|e| ConfigError(e.to_string()))?;
        let defaults = merged.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            merge(&mut merged, table);
        }
        for (k, v) in env {
            let Some(rest) = k.strip_prefix("FASTK__") else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                return Err(ConfigError(format!("{k}: expected FASTK__SECTION__KEY")));
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let default = defaults.get(&section).and_then(|s| s.get(&key));
            let value = env_value(&v, default);
            let Some(toml::Value::Table(t)) = merged.get_mut(&section) else {
                return Err(ConfigError(format!("{k}: unknown section [{section}]")));
            };
            if !t.contains_key(&key) {
                return Err(ConfigError(format!(
                    "{k}: unknown key {key} in [{section}]"
                )));
            }
            t.insert(key, value);
        }
        let config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e| ConfigError(format!("{e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Loads with the process environment.
    pub fn from_env(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load(file, std::env::vars())
    }

    /// Checks every limit and address; errors name the key.
    ///
    /// Long on purpose: one independent check per key, in the order of the reference
    /// in docs/operations.md, each two to eight lines with its own message; the first
    /// failing key is the error.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError(format!("{k}: {why}")));
        if self.http.addr.parse::<SocketAddr>().is_err() {
            return bad(
                "http.addr",
                "must be host:port with an IP address, e.g. 127.0.0.1:8080",
            );
        }
        if self.flight.addr.parse::<SocketAddr>().is_err() {
            return bad(
                "flight.addr",
                "must be host:port with an IP address, e.g. 127.0.0.1:8815",
            );
        }
        if !matches!(self.cluster.sql.as_str(), "local" | "distributed") {
            return bad("cluster.sql", "must be \"local\" or \"distributed\"");
        }
        if !(1..=3600).contains(&self.cluster.forward_timeout_s) {
            return bad("cluster.forward_timeout_s", "must be between 1 and 3600");
        }
        if let Err(why) = crate::cluster::ClusterCell::open(
            &self.cluster.node,
            &self.cluster.shard_map,
            &self.cluster.shard_map_path,
        ) {
            return Err(ConfigError(why));
        }
        if self.storage.root.as_os_str().is_empty() {
            return bad("storage.root", "must not be empty");
        }
        if let Ok(m) = std::fs::metadata(&self.storage.root)
            && !m.is_dir()
        {
            return Err(ConfigError(format!(
                "storage.root: {} exists and is not a directory; point it at a directory \
                 (it is made if missing)",
                self.storage.root.display()
            )));
        }
        self.replica.validate()?;
        self.tls.validate()?;
        if !(1..=30 * 86_400).contains(&self.auth.session_ttl_s) {
            return bad(
                "auth.session_ttl_s",
                "must be between 1 and 2592000 (30 days)",
            );
        }
        if self.storage.max_chunks_per_month < 1 || self.storage.max_chunks_per_month > 1024 {
            return bad("storage.max_chunks_per_month", "must be between 1 and 1024");
        }
        if self.storage.zonemap_block_rows > 1 << 24 {
            return bad(
                "storage.zonemap_block_rows",
                "must be at most 16777216 (0 disables zone maps)",
            );
        }
        if self.storage.sidecar_min_rows > 1 << 24 {
            return bad(
                "storage.sidecar_min_rows",
                "must be at most 16777216 (0: every scalar chunk gets its sidecars)",
            );
        }
        if self.storage.resident_rows_max > crate::storage::catalog::RESIDENT_ROWS_MAX {
            return bad(
                "storage.resident_rows_max",
                "must be at most 65536 (0: small series fold into directories)",
            );
        }
        if !(1..=64).contains(&self.storage.write_threads) {
            return bad("storage.write_threads", "must be between 1 and 64");
        }
        if !(1..=64).contains(&self.storage.sync_threads) {
            return bad("storage.sync_threads", "must be between 1 and 64");
        }
        if !(1..=64).contains(&self.storage.maintenance_threads) {
            return bad("storage.maintenance_threads", "must be between 1 and 64");
        }
        if !(1..=u32::MAX as usize).contains(&self.storage.max_write_rows) {
            return bad(
                "storage.max_write_rows",
                "must be between 1 and 4294967295 (a chunk's row count is a u32)",
            );
        }
        let map_limit = max_mapped_files_limit();
        if !(1..=map_limit).contains(&self.storage.max_mapped_files) {
            return Err(ConfigError(format!(
                "storage.max_mapped_files: must be between 1 and {map_limit} (three quarters \
                 of the kernel's vm.max_map_count; the rest is for thread stacks, the \
                 allocator and libraries)"
            )));
        }
        if self.http.max_body_bytes < 1024 {
            return bad("http.max_body_bytes", "must be at least 1024");
        }
        if self.http.max_limit == 0
            || self.http.default_limit == 0
            || self.http.default_limit > self.http.max_limit
        {
            return bad(
                "http.default_limit",
                "must be positive and at most http.max_limit",
            );
        }
        if self.storage.wal_segment_bytes < 1 << 20 {
            return bad("storage.wal_segment_bytes", "must be at least 1048576");
        }
        if !(1 << 20..=1 << 31).contains(&self.storage.wal_max_record_bytes) {
            return bad(
                "storage.wal_max_record_bytes",
                "must be between 1048576 and 2147483648",
            );
        }
        if self.storage.wal_group_window_us > 100_000 {
            return bad(
                "storage.wal_group_window_us",
                "must be at most 100000 (0.1 s)",
            );
        }
        if self.storage.wal_direct_rows > 1 << 20 {
            return bad("storage.wal_direct_rows", "must be at most 1048576");
        }
        if self.storage.fold_rows == 0 || self.storage.fold_rows > u32::MAX as u64 {
            return bad("storage.fold_rows", "must be between 1 and 4294967295");
        }
        if !(1..=64).contains(&self.storage.fold_threads) {
            return bad("storage.fold_threads", "must be between 1 and 64");
        }
        if self.storage.fold_age_s == 0 || self.storage.fold_age_s > 86_400 {
            return bad("storage.fold_age_s", "must be between 1 and 86400");
        }
        if self.storage.wal_max_bytes < self.storage.wal_segment_bytes {
            return bad(
                "storage.wal_max_bytes",
                "must be at least storage.wal_segment_bytes",
            );
        }
        if !matches!(self.storage.compression.as_str(), "pco" | "none") {
            return bad("storage.compression", "must be \"pco\" or \"none\"");
        }
        if self.storage.pack_target_bytes > crate::storage::pack::MAX_PACK_TARGET_BYTES {
            return bad(
                "storage.pack_target_bytes",
                "must be at most 1073741824 (a pack is built in memory; 0 turns packing off)",
            );
        }
        if self.storage.keep_versions_s > MAX_KEEP_VERSIONS_S {
            return bad(
                "storage.keep_versions_s",
                "must be at most 31536000 (a year); for longer, take a named snapshot",
            );
        }
        if self.storage.dormant_after_s > MAX_DORMANT_AFTER_S {
            return bad(
                "storage.dormant_after_s",
                "must be at most 86400 (a day); 0 keeps built series built",
            );
        }
        if self.storage.compress_interval_s == 0 {
            return bad("storage.compress_interval_s", "must be positive");
        }
        if self.storage.release_below_available_percent > 90 {
            return bad(
                "storage.release_below_available_percent",
                "must be between 0 (off) and 90",
            );
        }
        if self.storage.retention_interval_s == 0 {
            return bad("storage.retention_interval_s", "must be positive");
        }
        if self.storage.retention_ms > i64::MAX as u64 {
            return bad("storage.retention_ms", "must fit a signed 64-bit integer");
        }
        if self.http.max_batch_series == 0 {
            return bad("http.max_batch_series", "must be positive");
        }
        if self.flight.max_series_per_ticket == 0 {
            return bad("flight.max_series_per_ticket", "must be positive");
        }
        if self.http.max_latest == 0 {
            return bad("http.max_latest", "must be positive");
        }
        if !(1..=3600).contains(&self.http.header_read_timeout_s) {
            return bad("http.header_read_timeout_s", "must be between 1 and 3600");
        }
        if !(1..=86_400).contains(&self.http.keep_alive_idle_s) {
            return bad("http.keep_alive_idle_s", "must be between 1 and 86400");
        }
        if !(1..=1 << 20).contains(&self.http.max_connections) {
            return bad("http.max_connections", "must be between 1 and 1048576");
        }
        if self.http.max_drain_bytes > self.http.max_body_bytes {
            return bad(
                "http.max_drain_bytes",
                "must be at most http.max_body_bytes (0 never drains)",
            );
        }
        if !(1..=1 << 20).contains(&self.flight.max_batch_rows) {
            return bad("flight.max_batch_rows", "must be between 1 and 1048576");
        }
        if self.flight.max_concurrent_streams == 0 {
            return bad("flight.max_concurrent_streams", "must be positive");
        }
        if self.flight.max_message_bytes < 4 << 20 {
            return bad("flight.max_message_bytes", "must be at least 4194304");
        }
        if !(1..=u32::MAX as usize).contains(&self.flight.max_put_rows) {
            return bad("flight.max_put_rows", "must be between 1 and 4294967295");
        }
        if !(1..=1_000_000).contains(&self.flight.max_local_parts) {
            return bad("flight.max_local_parts", "must be between 1 and 1000000");
        }
        if self.flight.max_put_streams == 0 {
            return bad("flight.max_put_streams", "must be positive");
        }
        if !(1..=86_400).contains(&self.flight.stall_timeout_s) {
            return bad("flight.stall_timeout_s", "must be between 1 and 86400");
        }
        if self.flight.keepalive_interval_s > 86_400 {
            return bad(
                "flight.keepalive_interval_s",
                "must be at most 86400 (0 turns keep-alive pings off)",
            );
        }
        if !(1..=3_600).contains(&self.flight.keepalive_timeout_s) {
            return bad("flight.keepalive_timeout_s", "must be between 1 and 3600");
        }
        if self.flight.idle_timeout_s > 7 * 86_400 {
            return bad(
                "flight.idle_timeout_s",
                "must be at most 604800 (0 keeps idle connections open)",
            );
        }
        if self.flight.max_connections == 0 {
            return bad("flight.max_connections", "must be positive");
        }
        if self.flight.max_streams_per_connection == 0 {
            return bad("flight.max_streams_per_connection", "must be positive");
        }
        if self.storage.max_inflight_write_bytes < 1 << 20 {
            return bad(
                "storage.max_inflight_write_bytes",
                "must be at least 1048576 (1 MiB)",
            );
        }
        if self.storage.write_budget_wait_ms > 600_000 {
            return bad("storage.write_budget_wait_ms", "must be at most 600000");
        }
        let q = &self.sql;
        if !(1..=4096).contains(&q.max_concurrent_queries) {
            return bad("sql.max_concurrent_queries", "must be between 1 and 4096");
        }
        if q.memory_per_query_bytes < 16 << 20 {
            return bad(
                "sql.memory_per_query_bytes",
                "must be at least 16777216 (16 MiB)",
            );
        }
        if q.memory_total_bytes < q.memory_per_query_bytes {
            return bad(
                "sql.memory_total_bytes",
                "must be at least sql.memory_per_query_bytes",
            );
        }
        if !(1..=86_400).contains(&q.query_timeout_s) {
            return bad("sql.query_timeout_s", "must be between 1 and 86400");
        }
        if !(64..=64 << 20).contains(&q.max_query_bytes) {
            return bad("sql.max_query_bytes", "must be between 64 and 67108864");
        }
        if !(1..=1 << 20).contains(&q.max_prepared_statements) {
            return bad(
                "sql.max_prepared_statements",
                "must be between 1 and 1048576",
            );
        }
        if !(1..=7 * 86_400).contains(&q.prepared_idle_s) {
            return bad("sql.prepared_idle_s", "must be between 1 and 604800");
        }
        if q.target_partitions > 1024 {
            return bad(
                "sql.target_partitions",
                "must be at most 1024 (0: one per core)",
            );
        }
        // The planner thread's stack (query::sql::guard::PLANNER_STACK_BYTES) is sized
        // for these maxima: the drop of a chain of 20,000 links, DataFusion's planning
        // of 512 levels.
        if !(16..=20_000).contains(&q.max_query_operators) {
            return bad("sql.max_query_operators", "must be between 16 and 20000");
        }
        if !(8..=512).contains(&q.max_query_depth) {
            return bad("sql.max_query_depth", "must be between 8 and 512");
        }
        if !(16..=1_000_000).contains(&q.max_query_nodes) {
            return bad("sql.max_query_nodes", "must be between 16 and 1000000");
        }
        if q.max_function_output_bytes < 1 << 20 {
            return bad(
                "sql.max_function_output_bytes",
                "must be at least 1048576 (1 MiB)",
            );
        }
        if q.process_memory_limit_bytes != 0 && q.process_memory_limit_bytes < 64 << 20 {
            return bad(
                "sql.process_memory_limit_bytes",
                "must be 0 (automatic) or at least 67108864 (64 MiB)",
            );
        }
        if let Err(why) = check_log_level(&self.log.level) {
            return bad("log.level", &why);
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad("log.format", "must be \"text\" or \"json\"");
        }
        Ok(())
    }
}

/// `log.level` as the tracing filter reads it, refused where the filter would only
/// warn and go on: a directive that does not parse, or a bare word that is neither a
/// level nor a module path (`verbose`, `inf`), which the filter would take for a target.
fn check_log_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |w: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(w.trim()));
    for d in level.split(',').filter(|d| !d.trim().is_empty()) {
        let d = d.trim();
        let ok = match d.rsplit_once('=') {
            Some((_, l)) => is_level(l),
            None => is_level(d) || d.contains("::") || d.contains('['),
        };
        if !ok {
            return Err(format!(
                "{d:?} is not a level (off, error, warn, info, debug, trace) or a \
                 target=level directive"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map(drop)
        .map_err(|e| format!("{level:?} is not a tracing filter: {e}"))
}

/// The largest `storage.max_mapped_files` allowed: three quarters of the kernel's
/// `vm.max_map_count` where it can be read (Linux), else of its default, 65530.
pub fn max_mapped_files_limit() -> usize {
    let kernel = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(65_530);
    kernel / 4 * 3
}

fn merge(into: &mut toml::Table, from: toml::Table) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

/// Environment values are strings; give them the type of the default they replace.
fn env_value(raw: &str, default: Option<&toml::Value>) -> toml::Value {
    match default {
        Some(toml::Value::String(_)) | None => toml::Value::String(raw.to_string()),
        Some(toml::Value::Array(_)) if !raw.trim_start().starts_with('[') => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        ),
        Some(_) => toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
    }
}

impl ReplicaConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |k: &str, why: &str| Err(ConfigError(format!("replica.{k}: {why}")));
        for (k, url) in [
            ("publish_to", &self.publish_to),
            ("follow_from", &self.follow_from),
        ] {
            if !url.is_empty()
                && let Err(why) = crate::replica::check_url(url)
            {
                return Err(ConfigError(format!("replica.{k}: {why}")));
            }
        }
        if !self.publish_to.is_empty() && !self.follow_from.is_empty() {
            return bad(
                "follow_from",
                "a replica publishes nothing: set publish_to or follow_from, not both",
            );
        }
        if !(1..=86_400).contains(&self.publish_interval_s) {
            return bad("publish_interval_s", "must be between 1 and 86400");
        }
        if !(1..=86_400).contains(&self.poll_interval_s) {
            return bad("poll_interval_s", "must be between 1 and 86400");
        }
        if self.gc_grace_s > 30 * 86_400 {
            return bad("gc_grace_s", "must be at most 2592000 (30 days)");
        }
        if !(1..=64).contains(&self.concurrency) {
            return bad("concurrency", "must be between 1 and 64");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_and_types() {
        let c = Config::load(
            None,
            env(&[
                ("FASTK__HTTP__ADDR", "0.0.0.0:9000"),
                ("FASTK__AUTH__PROTECT_READS", "true"),
                ("FASTK__FLIGHT__MAX_BATCH_ROWS", "1024"),
                ("FASTK__HTTP__CORS_ORIGINS", "http://a, http://b"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.http.addr, "0.0.0.0:9000");
        assert!(c.auth.protect_reads);
        assert_eq!(c.flight.max_batch_rows, 1024);
        assert_eq!(c.http.cors_origins, vec!["http://a", "http://b"]);
    }

    #[test]
    fn unknown_and_invalid_keys_are_errors() {
        assert!(Config::load(None, env(&[("FASTK__HTTP__ADRR", "x")])).is_err());
        assert!(Config::load(None, env(&[("FASTK__NOPE__X", "1")])).is_err());
        assert!(Config::load(None, env(&[("FASTK__HTTP__ADDR", "localhost")])).is_err());
        assert!(Config::load(None, env(&[("FASTK__FLIGHT__MAX_BATCH_ROWS", "0")])).is_err());
        // A stream's rows are numbered in u32 (flight::doput's group order).
        assert!(Config::load(None, env(&[("FASTK__FLIGHT__MAX_PUT_ROWS", "4294967296")])).is_err());
        assert!(Config::load(None, env(&[("FASTK__FLIGHT__MAX_PUT_ROWS", "4294967295")])).is_ok());
        assert!(Config::load(None, env(&[("FASTK__HTTP__MAX_LIMIT", "abc")])).is_err());
        assert!(Config::load(None, env(&[("FASTK__STORAGE__MAX_MAPPED_FILES", "0")])).is_err());
        let over = (max_mapped_files_limit() + 1).to_string();
        assert!(Config::load(None, env(&[("FASTK__STORAGE__MAX_MAPPED_FILES", &over)])).is_err());
        // Idle series go back to sleep after at most a day; 0 keeps them built.
        assert!(Config::load(None, env(&[("FASTK__STORAGE__DORMANT_AFTER_S", "86401")])).is_err());
        let c = Config::load(None, env(&[("FASTK__STORAGE__DORMANT_AFTER_S", "0")])).unwrap();
        assert_eq!(c.storage.store_options().dormant_after, None);
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(
            c.storage.store_options().dormant_after,
            Some(std::time::Duration::from_secs(DEFAULT_DORMANT_AFTER_S))
        );
        for (k, v) in [
            ("FASTK__HTTP__HEADER_READ_TIMEOUT_S", "0"),
            ("FASTK__HTTP__KEEP_ALIVE_IDLE_S", "0"),
            ("FASTK__HTTP__MAX_CONNECTIONS", "0"),
            ("FASTK__HTTP__MAX_DRAIN_BYTES", "1073741824"),
        ] {
            assert!(
                Config::load(None, env(&[(k, v)])).is_err(),
                "{k}={v} accepted"
            );
        }
    }

    /// Story: `log.level = "verbose"` started the server with a warning (the filter
    /// took the word for a target), and a `storage.root` that is a file failed the
    /// start with "internal error". Both now stop the start, saying what is wrong.
    #[test]
    fn a_bad_log_level_and_a_root_that_is_a_file_stop_the_start() {
        for bad in ["verbose", "inf", "info,fastk=loud", "fastk=debug,warning"] {
            let e = Config::load(None, env(&[("FASTK__LOG__LEVEL", bad)])).unwrap_err();
            assert!(e.to_string().contains("log.level"), "{bad}: {e}");
        }
        for good in [
            "warn",
            "INFO",
            "fastk=debug,tower_http=info",
            "fastk::query=trace",
        ] {
            Config::load(None, env(&[("FASTK__LOG__LEVEL", good)])).unwrap();
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        let root = file.path().to_str().unwrap();
        let e = Config::load(None, env(&[("FASTK__STORAGE__ROOT", root)])).unwrap_err();
        assert!(
            e.to_string().contains("storage.root") && e.to_string().contains("not a directory"),
            "{e}"
        );
    }

    #[test]
    fn tls_and_auth_keys_are_checked() {
        for pairs in [
            &[("FASTK__TLS__CERT_PATH", "c.pem")][..],
            &[("FASTK__TLS__KEY_PATH", "k.pem")][..],
            &[("FASTK__TLS__CLIENT_CA_PATH", "ca.pem")][..],
            &[
                ("FASTK__TLS__CERT_PATH", "c.pem"),
                ("FASTK__TLS__KEY_PATH", "k.pem"),
                ("FASTK__TLS__RELOAD_INTERVAL_S", "0"),
            ][..],
            &[("FASTK__AUTH__SESSION_TTL_S", "0")][..],
        ] {
            let e = Config::load(None, env(pairs)).expect_err("refused");
            let key = pairs.last().expect("a pair").0;
            let named = key
                .trim_start_matches("FASTK__")
                .to_lowercase()
                .replace("__", ".");
            assert!(
                e.to_string().contains(&named) || e.to_string().contains("tls."),
                "{pairs:?}: {e}"
            );
        }
        let c = Config::load(
            None,
            env(&[
                ("FASTK__TLS__CERT_PATH", "c.pem"),
                ("FASTK__TLS__KEY_PATH", "k.pem"),
                ("FASTK__AUTH__TOKENS_FILE", "tokens.toml"),
            ]),
        )
        .unwrap();
        assert!(c.tls.enabled());
        assert_eq!(c.tls.reload_interval_s, 2);
        assert_eq!(c.auth.session_ttl_s, 3600);
    }

    #[test]
    fn sql_shape_and_memory_keys_are_bounded() {
        for (k, v) in [
            ("FASTK__SQL__MAX_QUERY_DEPTH", "513"),
            ("FASTK__SQL__MAX_QUERY_OPERATORS", "20001"),
            ("FASTK__SQL__MAX_QUERY_NODES", "0"),
            ("FASTK__SQL__MAX_FUNCTION_OUTPUT_BYTES", "1000"),
            ("FASTK__SQL__PROCESS_MEMORY_LIMIT_BYTES", "1000"),
        ] {
            assert!(
                Config::load(None, env(&[(k, v)])).is_err(),
                "{k}={v} accepted"
            );
        }
        let c = Config::load(
            None,
            env(&[(
                "FASTK__SQL__MEMORY_PER_QUERY_BYTES",
                &(64u64 << 20).to_string(),
            )]),
        )
        .unwrap();
        assert_eq!(
            c.sql.function_output_cap(),
            64 << 20,
            "the query's memory caps a call"
        );
    }
}

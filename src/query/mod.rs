//! The command and query layer: one implementation of every operation, called by the
//! HTTP and Flight adapters (which only translate wire formats) and by the CLI.

pub mod budget;
mod catalog;
pub mod derive;
pub mod local;
pub mod many;
pub mod market;
pub mod predicate;
pub mod snapshots;
pub mod sql;
pub mod stream;
pub mod tick;
pub mod types;

use crate::sync::LockExt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::admin::AdminAction;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::metrics::{Gauges, Metrics};
use crate::record::{
    KlineRecord, SeriesKey, SeriesKind, SeriesMeta, TsRange, ValueType, partition_label,
};
use crate::registry::{Dataset, Definition, DefinitionKind, Registry, RegistryError};
use crate::storage::Store;
use snapshots::At;
use types::*;

pub use crate::registry::REGISTRY_FILE;
/// The storage value types a front end carries, re-exported so that front ends depend
/// on this layer only (`tests/architecture.rs`): a series handle, rows to write, a
/// zero-copy slice of a read page, and how stored columns are projected and priced.
/// Walking snapshots and chunks stays here and below.
pub use crate::storage::batch::{KLINE_COLUMNS, PriceFormat, Projection};
pub use crate::storage::{ChunkSlice, Series, WriteBatch};

/// Rows of one read, as zero-copy slices of the mapped chunks.
#[derive(Debug)]
pub struct ReadPage {
    pub meta: Arc<SeriesMeta>,
    pub slices: Vec<ChunkSlice>,
    /// Where the next page starts when `limit` cut the result short.
    pub next_start_ts: Option<i64>,
    pub rows: usize,
}

/// A lazily mapped sequence of slices for streaming (Flight DoGet).
pub type SliceStream = Box<dyn Iterator<Item = crate::storage::Result<ChunkSlice>> + Send>;

/// Cached health inputs; `/health` never scans.
#[derive(Debug, Default)]
struct HealthState {
    validation_findings: Vec<String>,
    last_validation_ts: Option<i64>,
    open_issues: Vec<String>,
    /// The replication loop's last passes (none until its first pass ends).
    replica: Option<ReplicaHealth>,
    /// The last probe of the cluster's peers: when, and the ones that did not answer.
    peers: Option<(i64, Vec<String>)>,
    /// `store_bytes` as last summed over every series, and when: `/health` sums again
    /// at most every [`HEALTH_SIZE_REFRESH`], so a liveness probe does not visit
    /// 100,000 series on every call.
    store_bytes: Option<(Instant, u64)>,
}

/// How old `/health`'s `store_bytes` may be (`/metrics` and `/inventory` sum afresh).
pub const HEALTH_SIZE_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Consecutive failed replication passes past which `/health` is degraded: one
/// failure is a blip of the object store, three in a row is an outage.
pub const REPLICA_FAILED_PASSES_DEGRADED: u64 = 3;

/// The engine: storage, registry, metrics and configuration behind one API.
#[derive(Debug)]
pub struct Engine {
    pub config: Arc<Config>,
    pub store: Store,
    pub registry: Registry,
    pub metrics: Metrics,
    /// The memory budget every in-flight write reserves from ([`budget`]).
    pub write_budget: Arc<budget::WriteBudget>,
    /// SQL admission permits and the memory budget all queries share ([`sql`]).
    pub sql: sql::SqlState,
    /// Tokens, scopes and sessions every front end authorizes calls with.
    pub auth: Arc<crate::auth::Authority>,
    /// The listeners' TLS, once the server has loaded it (for `/metrics`).
    pub tls: std::sync::OnceLock<Arc<crate::tls::Tls>>,
    /// Derive rules and the derived series they maintain ([`derive`]).
    pub derive: derive::Derived,
    /// The shard map this node serves with, when it is one of a cluster (read again
    /// from its file by the server's peer loop).
    pub cluster: crate::cluster::ClusterCell,
    /// Connections to the other nodes' SQL workers (distributed SQL), by URL.
    pub dist_channels: std::sync::OnceLock<sql::dist::OpenChannels>,
    started: Instant,
    health: Mutex<HealthState>,
}

impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Error {
        match e {
            RegistryError::Conflict(m) => Error::conflict(m),
            // A full disk (or a registry opened read-only because of one) is a
            // condition to retry after, not a server fault.
            RegistryError::Unavailable(m) => Error::new(ErrorKind::Unavailable, m),
            e => Error::internal(e),
        }
    }
}

impl AsRef<Store> for Engine {
    fn as_ref(&self) -> &Store {
        &self.store
    }
}

impl Engine {
    /// Opens the store and registry under `config.storage.root`, recovering both.
    pub fn open(config: Config) -> Result<Arc<Engine>> {
        let root = config.storage.root.clone();
        let started = std::time::Instant::now();
        // An open that fails on corrupt data says which file and why (the operator is
        // reading this, not a client); the write-ahead log's message names the repair.
        let mut options = config.storage.store_options();
        if !config.replica.publish_to.is_empty() {
            // Replicas ship series directories: a publishing primary keeps no rows in
            // its catalog (docs/scale-out.md).
            options.resident_rows_max = 0;
        }
        let store = Store::open(&root, options).map_err(|e| match e {
            crate::storage::StorageError::Corrupted { file, detail } => Error::new(
                ErrorKind::Corrupted,
                format!("the store cannot open: {file}: {detail}"),
            ),
            e => Error::from(e),
        })?;
        let store_ms = started.elapsed().as_millis() as u64;
        let mut issues = Vec::new();
        let registry = catalog::open_registry(&root, &mut issues)?;
        catalog::reconcile_on_open(&store, &registry)?;
        // What a restart costs, and where (docs/operations.md, "After a crash").
        tracing::info!(
            series = store.series_count(),
            store_ms,
            registry_ms = started.elapsed().as_millis() as u64 - store_ms,
            replayed_records = store.wal_recovery().records,
            "store opened"
        );
        for n in store.recovery() {
            tracing::info!(notes = ?n, "recovery");
            for f in &n.unknown_files {
                issues.push(format!("unknown file {f} (run admin repair)"));
            }
            for f in &n.corrupt_files {
                issues.push(format!("corrupt chunk {f} (run admin repair)"));
            }
        }
        for (dir, why) in store.unopenable() {
            issues.push(format!("series directory {dir} could not be opened: {why}"));
        }
        let health = HealthState {
            open_issues: issues,
            ..Default::default()
        };
        let write_budget = budget::WriteBudget::new(
            config.storage.max_inflight_write_bytes,
            std::time::Duration::from_millis(config.storage.write_budget_wait_ms),
        );
        let derive = derive::Derived::open(&root)?;
        let c = &config.cluster;
        // Config::validate refused a bad map before the server started.
        let cluster = crate::cluster::ClusterCell::open(&c.node, &c.shard_map, &c.shard_map_path)
            .unwrap_or_else(|why| {
                tracing::error!(%why, "the shard map is not usable; serving as a single node");
                crate::cluster::ClusterCell::default()
            });
        let engine = Arc::new(Engine {
            cluster,
            dist_channels: std::sync::OnceLock::new(),
            write_budget,
            sql: sql::SqlState::new(&config.sql),
            auth: Arc::new(crate::auth::Authority::new(&config.auth)),
            tls: std::sync::OnceLock::new(),
            config: Arc::new(config),
            store,
            registry,
            metrics: Metrics::default(),
            derive,
            started: Instant::now(),
            health: Mutex::new(health),
        });
        engine.apply_derive_rules();
        // The open's scratch structures are dropped: their pages go back to the kernel
        // now, not whenever this thread allocates again (an idle server's resident set).
        crate::storage::mmap::release_free_memory();
        Ok(engine)
    }

    /// Whether this node follows a primary (`replica.follow_from`): read-only.
    pub fn is_replica(&self) -> bool {
        !self.config.replica.follow_from.is_empty()
    }

    /// Refuses a change on a read replica: `precondition_failed` (HTTP 412, gRPC
    /// `FailedPrecondition`): the node is not in a state that allows writes, and
    /// retrying here cannot help (docs/scale-out.md, "Read replicas").
    pub fn check_writable(&self) -> Result<()> {
        if self.is_replica() {
            return Err(Error::new(
                ErrorKind::PreconditionFailed,
                "this node is a read-only replica (replica.follow_from is set): writes, \
                 registrations, deletes and admin changes go to the primary it follows",
            ));
        }
        Ok(())
    }

    /// Makes the registry's series catalog match storage (a replica, after following
    /// created or deleted series).
    pub fn reconcile_catalog(&self) -> Result<()> {
        catalog::reconcile_on_open(&self.store, &self.registry)
    }

    pub fn series(&self, key: &SeriesKey) -> Result<Arc<Series>> {
        Ok(self.store.get(key)?)
    }

    /// The series of `key` as it was when a write began at `since`
    /// ([`crate::storage::series::registration_stamp`]; `u64::MAX`: any). A series
    /// deleted and registered again after that is not the one the write was for: the
    /// write fails `not_found` and writes nothing.
    pub fn series_since(&self, key: &SeriesKey, since: u64) -> Result<Arc<Series>> {
        let series = self.series(key)?;
        if series.born() > since {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "{} series {key} was deleted and registered again after this write began; \
                     nothing was written",
                    key.kind().as_str()
                ),
            ));
        }
        Ok(series)
    }

    /// The stamp a write is bound to as it arrives: a series deleted and registered
    /// again after it refuses the write ([`Engine::series_since`]).
    pub fn write_begins(&self) -> u64 {
        crate::storage::series::registration_stamp()
    }

    /// Series of `kind` and `symbol` (`None`: any), ordered by the key as text: the
    /// order `/inventory` and ListFlights page in.
    pub fn series_by_key(
        &self,
        kind: Option<SeriesKind>,
        symbol: Option<&str>,
    ) -> Vec<(String, Listed)> {
        // A dormant series is listed from its seed, not built.
        let mut series: Vec<(String, Listed)> = self
            .store
            .listed(|m| {
                kind.is_none_or(|k| k == m.key.kind()) && symbol.is_none_or(|x| x == m.key.symbol())
            })
            .into_iter()
            .map(|l| (l.meta().key.to_string(), l))
            .collect();
        series.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        series
    }

    /// Rows a listed series holds now (a dormant one: its seed's).
    pub fn listed_rows(l: &Listed) -> u64 {
        match l {
            Listed::Built(s) => Engine::rows_of(s),
            Listed::Dormant { rows, .. } => *rows,
        }
    }

    /// Rows `series` holds now.
    pub fn rows_of(series: &Series) -> u64 {
        series.snapshot().rows()
    }

    pub fn register_kline(&self, r: &RegisterKline) -> Result<(SeriesInfo, bool)> {
        self.register(
            kline_meta(r)?,
            crate::storage::Settings {
                retention_ms: r.retention_ms,
                irregular: r.irregular,
            },
        )
    }

    pub fn register_scalar(&self, r: &RegisterScalar) -> Result<(SeriesInfo, bool)> {
        self.register(
            scalar_meta(r)?,
            crate::storage::Settings {
                retention_ms: r.retention_ms,
                irregular: None,
            },
        )
    }

    /// A batch registration of kline series (`/v1/kline/series/many`); the error of
    /// series `i` names it.
    pub fn register_kline_many(&self, series: &[RegisterKline]) -> Result<RegisterManyResponse> {
        self.register_each(series, |r| {
            let settings = crate::storage::Settings {
                retention_ms: r.retention_ms,
                irregular: r.irregular,
            };
            Ok((kline_meta(r)?, settings))
        })
    }

    /// A batch registration of scalar series (`/v1/scalar/series/many`), as
    /// [`Engine::register_kline_many`].
    pub fn register_scalar_many(&self, series: &[RegisterScalar]) -> Result<RegisterManyResponse> {
        self.register_each(series, |r| {
            let settings = crate::storage::Settings {
                retention_ms: r.retention_ms,
                irregular: None,
            };
            Ok((scalar_meta(r)?, settings))
        })
    }

    /// [`Engine::register_many`] of `series`, each turned into its metadata and settings
    /// by `meta`; the error of series `i` names it.
    fn register_each<T>(
        &self,
        series: &[T],
        meta: impl Fn(&T) -> Result<(SeriesMeta, crate::storage::Settings)>,
    ) -> Result<RegisterManyResponse> {
        let metas = series
            .iter()
            .enumerate()
            .map(|(i, r)| meta(r).map_err(|e| nth(i, e)))
            .collect::<Result<Vec<_>>>()?;
        self.register_many(metas)
    }

    /// Registers many series in one all-or-nothing batch (at most
    /// [`MAX_REGISTER_BATCH`]): each is checked as a single registration is, then the
    /// store makes them together (`Store::register_many`) and the catalog records them
    /// in one transaction. An error names the series (its index in the request).
    pub fn register_many(
        &self,
        metas: Vec<(SeriesMeta, crate::storage::Settings)>,
    ) -> Result<RegisterManyResponse> {
        self.check_writable()?;
        if metas.len() > MAX_REGISTER_BATCH {
            return Err(Error::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "one request may register at most {MAX_REGISTER_BATCH} series, this one has {}; split it",
                    metas.len()
                ),
            ));
        }
        self.recover_registry(true);
        let done = self.store.register_many(metas)?;
        let created: Vec<SeriesMeta> = done
            .iter()
            .filter(|(_, c)| *c)
            .map(|(s, _)| (*s.meta).clone())
            .collect();
        if !created.is_empty()
            && let Err(e) = self.registry.upsert_many(&created)
        {
            // Storage is the source of truth; the catalog is reconciled on the next open.
            tracing::error!(error = %e, "registry catalog update failed");
        }
        for m in &created {
            self.derive_registered(&m.key);
        }
        Ok(RegisterManyResponse {
            created: created.len() as u64,
            existing: (done.len() - created.len()) as u64,
        })
    }

    /// Registers `meta` (idempotent), then sets the settings given (retention, grid).
    fn register(
        &self,
        meta: SeriesMeta,
        settings: crate::storage::Settings,
    ) -> Result<(SeriesInfo, bool)> {
        self.check_writable()?;
        if settings.retention_ms.is_some_and(|r| r < 0) {
            return Err(Error::invalid(
                "retention_ms must be 0 (keep forever) or a positive number of milliseconds",
            ));
        }
        self.recover_registry(true);
        // A new series takes its settings in its registration record; an existing one
        // has them set (the store does both).
        let (series, created) = self
            .store
            .register_many(vec![(meta, settings)])?
            .pop()
            .expect("one series registered");
        if created && let Err(e) = self.registry.upsert_series(&series.meta) {
            // Storage is the source of truth; the catalog is reconciled on the next open.
            tracing::error!(error = %e, "registry catalog update failed");
        }
        if created {
            self.derive_registered(&series.meta.key);
        }
        Ok((series_info(&series, false), created))
    }

    pub fn list_series(&self, kind: SeriesKind) -> Vec<SeriesInfo> {
        self.store
            .list_kind(kind)
            .iter()
            .map(|s| series_info(s, false))
            .collect()
    }

    /// Metadata, statistics and partitions of one series.
    pub fn series_info(&self, key: &SeriesKey) -> Result<SeriesInfo> {
        let s = self.series(key)?;
        let mut info = series_info(&s, true);
        if let Some((base, through)) = self.derive_status(key) {
            info.derived_from = Some(base.to_string());
            info.materialized_through_ts = through;
        }
        Ok(info)
    }

    pub fn delete_series(&self, key: &SeriesKey) -> Result<()> {
        self.check_writable()?;
        self.derive.refuse_write(key)?;
        // The series derived from this one go with it (first: a snapshot holding one
        // refuses the whole delete).
        for d in self.derive.derived_of(key) {
            self.derive.forget(&d);
            self.store.delete(&d)?;
            if let Err(e) = self.registry.remove_series(&d) {
                tracing::error!(error = %e, "registry catalog update failed");
            }
        }
        self.store.delete(key)?;
        if let Err(e) = self.registry.remove_series(key) {
            tracing::error!(error = %e, "registry catalog update failed");
        }
        Ok(())
    }

    /// Writes kline records (OHLC rules checked first; all-or-nothing).
    pub fn write_kline(
        &self,
        key: &SeriesKey,
        records: &[KlineRecord],
        expected: Option<u64>,
    ) -> Result<WriteResponse> {
        self.write_kline_since(key, records, expected, u64::MAX)
    }

    /// [`Engine::write_kline`] for a write that began at `since` ([`Engine::series_since`]).
    pub fn write_kline_since(
        &self,
        key: &SeriesKey,
        records: &[KlineRecord],
        expected: Option<u64>,
        since: u64,
    ) -> Result<WriteResponse> {
        self.check_writable()?;
        let mut b = WriteBatch::with_capacity(6, records.len());
        for r in records {
            for (c, v) in [r.ts, r.open, r.high, r.low, r.close, r.volume]
                .into_iter()
                .enumerate()
            {
                b.cols[c].push(v);
            }
        }
        self.write_since(key, b, expected, since)
    }

    /// Writes a column-major batch (kline: ts, open, high, low, close, volume; scalar:
    /// ts, value bits). Kline rows are checked against the OHLC rules first.
    pub fn write(
        &self,
        key: &SeriesKey,
        batch: WriteBatch,
        expected: Option<u64>,
    ) -> Result<WriteResponse> {
        self.write_since(key, batch, expected, u64::MAX)
    }

    /// [`Engine::write`] for a write that began at `since` ([`Engine::series_since`]).
    pub fn write_since(
        &self,
        key: &SeriesKey,
        batch: WriteBatch,
        expected: Option<u64>,
        since: u64,
    ) -> Result<WriteResponse> {
        self.check_writable()?;
        self.derive.refuse_write(key)?;
        let series = self.series_since(key, since)?;
        if key.kind() == SeriesKind::Kline && batch.cols.len() == 6 {
            check_ohlc(&batch)?;
            check_grid(&series, [&batch.cols[0][..]])?;
        }
        let ncols = batch.cols.len() as u64;
        let r = self.store.write(&series, batch, expected)?;
        Ok(self.written(r, ncols))
    }

    /// Counts a write's rows and bytes in the metrics and answers it.
    fn written(&self, r: crate::storage::WriteReport, ncols: u64) -> WriteResponse {
        if r.written > 0 {
            self.metrics.add_written(r.written, r.written * ncols * 8);
        }
        WriteResponse {
            written: r.written,
            inserted: r.inserted,
            replaced: r.replaced,
            months: r.months.iter().map(|m| partition_label(m.0)).collect(),
            version: r.version,
        }
    }

    /// [`Engine::write`] of rows given in pieces (a DoPut's received batches, each the
    /// series' columns at one length), read in place where they are in order
    /// (`Store::write_pieces`).
    pub fn write_pieces(
        &self,
        key: &SeriesKey,
        pieces: &[Vec<&[i64]>],
        expected: Option<u64>,
    ) -> Result<WriteResponse> {
        let series = self.series(key)?;
        self.write_pieces_to(&series, pieces, expected)
    }

    /// [`Engine::write_pieces`] to the incarnation `series`, resolved when the write
    /// began (a DoPut stream's open): if it was deleted since, the write fails
    /// `not_found` and writes nothing, even when the key was registered again.
    pub fn write_pieces_to(
        &self,
        series: &Arc<Series>,
        pieces: &[Vec<&[i64]>],
        expected: Option<u64>,
    ) -> Result<WriteResponse> {
        self.check_writable()?;
        let key = &series.meta.key;
        self.derive.refuse_write(key)?;
        if key.kind() == SeriesKind::Kline {
            let mut first = 0;
            for p in pieces {
                check_ohlc_cols(p, first)?;
                first += p.first().map_or(0, |c| c.len());
            }
            check_grid(series, pieces.iter().filter_map(|p| p.first().copied()))?;
        }
        let ncols = key.kind().ncols() as u64;
        let r = self.store.write_pieces(series, pieces, expected)?;
        Ok(self.written(r, ncols))
    }

    /// A kline batch of a many-series write against the OHLC rules and its series'
    /// grid (scalar rows need no check beyond the storage's own).
    fn check_many_rows(&self, series: &Series, batch: &WriteBatch) -> Result<()> {
        if series.meta.key.kind() == SeriesKind::Kline && batch.cols.len() == 6 {
            check_ohlc(batch)?;
            check_grid(series, [&batch.cols[0][..]])?;
        }
        Ok(())
    }

    /// Deletes the rows of `[start_ts, end_ts]` (at least one bound) all-or-nothing,
    /// at `expected` version when given.
    pub fn delete_range(
        &self,
        key: &SeriesKey,
        start_ts: Option<i64>,
        end_ts: Option<i64>,
        expected: Option<u64>,
    ) -> Result<DeleteRangeResponse> {
        self.check_writable()?;
        if start_ts.is_none() && end_ts.is_none() {
            return Err(Error::invalid(
                "a range delete needs start_ts, end_ts or both (to delete every row, delete the series)",
            ));
        }
        if let (Some(a), Some(b)) = (start_ts, end_ts)
            && a > b
        {
            return Err(Error::invalid(format!(
                "start_ts ({a}) must not be after end_ts ({b}); both ends are inclusive"
            )));
        }
        self.derive.refuse_write(key)?;
        let series = self.series(key)?;
        let r = series.delete_range(TsRange::new(start_ts, end_ts), expected)?;
        Ok(DeleteRangeResponse {
            deleted: r.deleted,
            months: r.months,
            version: r.version,
        })
    }

    /// One pass of retention at `now`: every series whose retention (its own, else
    /// `storage.retention_ms`) is set loses the months entirely older than
    /// `now - retention`, whole months only, each series in one commit. A series
    /// deleted meanwhile is skipped; another failure is logged and the pass goes on.
    pub fn enforce_retention(&self, now: i64) -> RetentionReport {
        // A replica changes only by following its primary.
        if self.is_replica() {
            return RetentionReport::default();
        }
        let default = i64::try_from(self.config.storage.retention_ms).unwrap_or(i64::MAX);
        let mut report = RetentionReport::default();
        // A dormant series is built only when retention has something to drop from it.
        let due = |seed: &crate::storage::seriesmap::Seed| {
            let keep = if seed.manifest.retention_ms > 0 {
                seed.manifest.retention_ms
            } else {
                default
            };
            let first = seed.months.first().and_then(|m| m.cols[0].first());
            let part = seed.manifest.meta.partitioning();
            let boundary = part.start_ts(part.of(part.ts_of_ms(now.saturating_sub(keep))));
            keep > 0 && first.is_some_and(|&f| f < boundary)
        };
        for series in self.store.list_built_and(due) {
            // A derived series follows its base: the base's retention drops its
            // months, and the next pass drops the buckets they made.
            if self.derive.base_of(&series.meta.key).is_some() {
                continue;
            }
            let snap = series.snapshot();
            let keep = if snap.retention_ms > 0 {
                snap.retention_ms
            } else {
                default
            };
            let Some(first) = snap.first_ts() else {
                continue;
            };
            if keep == 0 {
                continue;
            }
            // The first partition that still holds data younger than the cutoff stays.
            let part = series.meta.partitioning();
            let boundary = part.start_ts(part.of(part.ts_of_ms(now.saturating_sub(keep))));
            if first >= boundary {
                continue;
            }
            match series.delete_range(TsRange::new(None, Some(boundary - 1)), None) {
                Ok(r) if r.deleted > 0 => {
                    tracing::info!(series = %series.meta.key, rows = r.deleted, months = ?r.months, "retention dropped months");
                    report.series += 1;
                    report.months += r.months.len() as u64;
                    report.rows += r.deleted;
                }
                Ok(_) => {}
                Err(crate::storage::StorageError::NotFound(_)) => {}
                Err(e) => {
                    tracing::error!(series = %series.meta.key, error = %e, "retention pass failed for a series");
                }
            }
        }
        report
    }

    /// One pass of sealed-month compression at `now`: every series' months that ended
    /// more than `storage.compress_after_s` ago become one compressed chunk each. A
    /// series deleted meanwhile is skipped; another failure is logged and the pass goes
    /// on. Then the pack pass gathers each series' small sealed months into pack files
    /// (`storage::pack`). Returns the months compressed.
    pub fn compress_sealed(&self, now: i64) -> u64 {
        // A replica changes only by following its primary.
        if self.is_replica() {
            return 0;
        }
        // Each series is its own commits (compress, then pack): several at once share
        // the cores (the codec) and the device's queue. A dormant series has no files
        // (its rows are in the catalog): nothing to compress or pack.
        let list = self.store.list_built_and(|_| false);
        let threads = self.store.options().maintenance_threads;
        let done = crate::storage::parallel::map_in_order(
            &list,
            threads,
            "fastk-compress",
            || false,
            |_, series| {
                let months = match series.compress_sealed(now) {
                    Ok(m) => m.len() as u64,
                    Err(crate::storage::StorageError::NotFound(_)) => 0,
                    Err(e) => {
                        tracing::error!(series = %series.meta.key, error = %e, "compressing sealed months failed");
                        0
                    }
                };
                // Then small sealed months are packed (storage.pack_target_bytes).
                let packed = match series.pack_sealed(now) {
                    Ok(m) => m.len() as u64,
                    Err(crate::storage::StorageError::NotFound(_)) => 0,
                    Err(e) => {
                        tracing::error!(series = %series.meta.key, error = %e, "packing sealed months failed");
                        0
                    }
                };
                (months, packed)
            },
        );
        let (months, packed) = done
            .into_iter()
            .flatten()
            .fold((0, 0), |(m, p), (a, b)| (m + a, p + b));
        if packed > 0 {
            tracing::info!(months = packed, "packed sealed months");
        }
        if months > 0 {
            tracing::info!(months, "compressed sealed months");
        }
        months
    }

    /// Rows of `range`, at most `limit`, with the ts where the next page starts.
    pub fn read(&self, key: &SeriesKey, range: TsRange, limit: usize) -> Result<ReadPage> {
        self.read_at(key, &At::Now, range, limit)
    }

    /// [`Engine::read`] of the series at moment `at`.
    pub fn read_at(
        &self,
        key: &SeriesKey,
        at: &At,
        range: TsRange,
        limit: usize,
    ) -> Result<ReadPage> {
        let series = self.series_at(key, at)?;
        let snap = series.snapshot();
        let mut slices = Vec::new();
        let mut rows = 0;
        let mut next_start_ts = None;
        for s in snap.range(range) {
            let s = s?;
            if rows == limit {
                next_start_ts = s.ts().first().copied();
                break;
            }
            let take = (limit - rows).min(s.len());
            if take < s.len() {
                next_start_ts = Some(s.ts()[take]);
            }
            rows += take;
            slices.push(s.sub(0, take));
            if next_start_ts.is_some() {
                break;
            }
        }
        self.count_read(&series, rows);
        Ok(ReadPage {
            meta: Arc::clone(&series.meta),
            slices,
            next_start_ts,
            rows,
        })
    }

    /// The last `n` rows of `range`, ascending.
    pub fn latest(&self, key: &SeriesKey, range: TsRange, n: usize) -> Result<ReadPage> {
        self.latest_at(key, &At::Now, range, n)
    }

    /// [`Engine::latest`] of the series at moment `at`.
    pub fn latest_at(
        &self,
        key: &SeriesKey,
        at: &At,
        range: TsRange,
        n: usize,
    ) -> Result<ReadPage> {
        let series = self.series_at(key, at)?;
        let slices = series.snapshot().latest(range, n)?;
        let rows = slices.iter().map(ChunkSlice::len).sum();
        self.count_read(&series, rows);
        Ok(ReadPage {
            meta: Arc::clone(&series.meta),
            slices,
            next_start_ts: None,
            rows,
        })
    }

    /// A lazy stream of the slices of `range` (or its last `latest` rows) for Flight.
    /// Chunks are mapped as the stream reaches them, so memory stays flat.
    pub fn stream(
        &self,
        key: &SeriesKey,
        range: TsRange,
        latest: Option<usize>,
    ) -> Result<(Arc<SeriesMeta>, SliceStream)> {
        let series = self.live_view(self.series(key)?)?;
        let stream = slice_stream(&series.snapshot(), range, latest)?;
        Ok((Arc::clone(&series.meta), stream))
    }

    /// Exact row count of `range` (for FlightInfo `total_records`).
    pub fn count(&self, key: &SeriesKey, range: TsRange, latest: Option<usize>) -> Result<u64> {
        Engine::count_of(&*self.live_view(self.series(key)?)?, range, latest)
    }

    /// Exact row count of `range` of `series` (a live series or a snapshot's view).
    pub fn count_of(series: &Series, range: TsRange, latest: Option<usize>) -> Result<u64> {
        let n = series.snapshot().count(range)?;
        Ok(latest.map_or(n, |l| n.min(l as u64)))
    }

    fn count_read(&self, series: &Series, rows: usize) {
        let ncols = series.meta.key.kind().ncols() as u64;
        self.metrics.add_read(rows as u64, rows as u64 * ncols * 8);
    }

    /// Runs a predicate query over a scalar series.
    pub fn query(
        &self,
        key: &SeriesKey,
        req: &QueryRequest,
        limit: usize,
    ) -> Result<QueryResponse> {
        let at = At::new(req.snapshot.clone(), req.version, req.as_of_commit)?;
        let series = self.series_at(key, &at)?;
        if key.kind() != SeriesKind::Scalar {
            return Err(Error::invalid("predicate queries apply to scalar series"));
        }
        let range = TsRange::new(req.start_ts, req.end_ts);
        let pred = predicate::Compiled::new(&req.predicate, series.meta.value_type)?;
        let strategy = req.strategy.unwrap_or_default();
        let mut out = predicate::Matches::default();
        let stats = predicate::run(
            &series.snapshot(),
            range,
            &pred,
            strategy,
            Some(limit),
            &mut out,
        )?;
        let values = req.return_values.unwrap_or(false).then(|| {
            out.values
                .iter()
                .map(|&bits| match series.meta.value_type {
                    ValueType::I64 => serde_json::Value::from(bits),
                    ValueType::F64 => serde_json::Number::from_f64(f64::from_bits(bits as u64))
                        .map_or(serde_json::Value::Null, serde_json::Value::Number),
                })
                .collect()
        });
        self.metrics
            .add_read(out.ts.len() as u64, out.ts.len() as u64 * 16);
        Ok(QueryResponse {
            timestamps: out.ts,
            values,
            next_start_ts: out.next_start_ts,
            stats,
        })
    }

    /// Runs an admin action over the store and registry.
    pub fn admin(&self, action: AdminAction, req: &AdminRequest) -> Result<AdminReport> {
        self.admin_with_progress(action, req, &|_, _, _| {})
    }

    /// As [`Engine::admin`], reporting progress per series (for the CLI). A validation
    /// refreshes the findings `/health` reports; an applied repair clears them.
    pub fn admin_with_progress(
        &self,
        action: AdminAction,
        req: &AdminRequest,
        progress: crate::admin::Progress<'_>,
    ) -> Result<AdminReport> {
        if !matches!(action, AdminAction::Validate | AdminAction::Scrub) {
            self.check_writable()?;
        }
        // Every action works on chunk files: what the write-ahead log holds in memory is
        // folded into them first, so validation checks every acknowledged row and
        // compaction merges it. A series that cannot be folded is left as it is (its
        // rows stay in the log) and the action goes on.
        let folded = self.store.fold_all();
        if folded.failed > 0 {
            tracing::warn!(
                failed = folded.failed,
                "admin: some series could not be folded first"
            );
        }
        let report = crate::admin::run(&self.store, &self.registry, action, req, progress)?;
        let mut h = self.health.locked();
        match action {
            AdminAction::Validate | AdminAction::Scrub => {
                h.validation_findings = report
                    .findings
                    .iter()
                    .map(|f| format!("{}: {}", f.kind, f.detail))
                    .collect();
                h.last_validation_ts = Some(now_ms());
                h.open_issues.clear();
            }
            AdminAction::Repair if !report.dry_run => {
                h.open_issues.clear();
                h.validation_findings.clear();
            }
            AdminAction::Repair | AdminAction::RebuildManifest | AdminAction::Compact => {}
        }
        Ok(report)
    }

    /// Notes the outcome of one replication pass (`replica.publish_to` or
    /// `replica.follow_from`) at `now_ms`: `Ok` with the count of series whose
    /// publication or apply failed in an otherwise completed pass and the first one's
    /// reason, `Err` when the pass itself failed (the object store could not be listed
    /// or written). `/health` reports it: `last_error` is the reason either way.
    /// The peer probe's result (`server`): the peers, as "name (uri)", that did not
    /// accept a connection at `now_ms`.
    pub fn note_peer_probe(&self, now_ms: i64, unreachable: Vec<String>) {
        self.health.locked().peers = Some((now_ms, unreachable));
    }

    /// A peer that a call just failed to reach, as "name (uri)": counted unreachable
    /// until the next probe says otherwise.
    pub fn note_peer_failed(&self, now_ms: i64, peer: String) {
        let mut h = self.health.locked();
        let (_, list) = h.peers.get_or_insert_with(|| (now_ms, Vec::new()));
        if !list.contains(&peer) {
            list.push(peer);
        }
    }

    /// Whether the peer at `uri` did not answer the last probe (or a call since).
    pub fn peer_unreachable(&self, uri: &str) -> bool {
        let needle = format!("({uri})");
        self.health
            .locked()
            .peers
            .as_ref()
            .is_some_and(|(_, list)| list.iter().any(|p| p.ends_with(&needle)))
    }

    /// This node's place in its cluster, with the last probe of its peers.
    fn cluster_health(&self, probe: Option<&(i64, Vec<String>)>) -> Option<ClusterHealth> {
        let cluster = self.cluster.get()?;
        Some(ClusterHealth {
            node: cluster.me().to_string(),
            owns: cluster
                .map()
                .ranges
                .iter()
                .filter(|r| cluster.is_me(&r.node))
                .map(|r| r.from.clone())
                .collect(),
            peers: cluster.peers().len() as u64,
            unreachable: probe.map(|(_, u)| u.clone()).unwrap_or_default(),
            checked_ts: probe.map(|(t, _)| *t),
            map_from_file: self.cluster.reloads(),
            map_refused: self.cluster.refused(),
        })
    }

    pub fn note_replica_pass(
        &self,
        role: &str,
        now_ms: i64,
        outcome: std::result::Result<(u64, Option<String>), String>,
    ) {
        let mut h = self.health.locked();
        let r = h.replica.get_or_insert_with(|| ReplicaHealth {
            role: role.to_string(),
            ..ReplicaHealth::default()
        });
        r.passes += 1;
        match outcome {
            Ok((failed_series, first_failure)) => {
                r.last_ok_ts = Some(now_ms);
                r.failed_passes = 0;
                r.last_failed_series = failed_series;
                r.last_error = first_failure.filter(|_| failed_series > 0);
            }
            Err(why) => {
                r.failed_passes += 1;
                r.last_error = Some(why);
            }
        }
    }

    /// Notes that this follower applied, whole, every manifest of the primary's pass
    /// that began at `started_ms` (the primary's clock): `/health`'s `published_ts`
    /// and `lag_s`, and `fastk_replica_lag_seconds`. A later pass never moves it back.
    pub fn note_replica_published(&self, started_ms: i64) {
        let mut h = self.health.locked();
        let r = h.replica.get_or_insert_with(|| ReplicaHealth {
            role: "follower".to_string(),
            ..ReplicaHealth::default()
        });
        r.published_ts = Some(r.published_ts.map_or(started_ms, |t| t.max(started_ms)));
    }

    /// Cached health: cheap enough for a dashboard to poll.
    pub fn health(&self) -> Health {
        let mut h = self.health.locked();
        let store_bytes = match h.store_bytes {
            Some((at, bytes)) if at.elapsed() < HEALTH_SIZE_REFRESH => bytes,
            _ => {
                let bytes = self.store.bytes();
                h.store_bytes = Some((Instant::now(), bytes));
                bytes
            }
        };
        let mut details: Vec<String> = h
            .open_issues
            .iter()
            .chain(&h.validation_findings)
            .cloned()
            .collect();
        let root = &self.config.storage.root;
        let disk_free = fs4::available_space(root).ok();
        let serving = root.join("series").is_dir();
        if !serving {
            details.push("the data root is not accessible".into());
        }
        details.extend(self.registry_issue());
        if let Some(free) = disk_free
            && free < self.config.storage.low_disk_bytes
        {
            details.push(format!("low disk space: {free} bytes free"));
        }
        let maps = self.store.options().map_cache.stats();
        details.extend(mapping_issues(&maps));
        if let Some(why) = self.store.wal_poisoned() {
            details.push(why);
        }
        let replica = h.replica.clone().map(|mut r| {
            let now = now_ms();
            r.since_ok_s = r
                .last_ok_ts
                .map(|t| (now.saturating_sub(t) / 1000).max(0) as u64);
            r.lag_s = r
                .published_ts
                .map(|t| (now.saturating_sub(t) / 1000).max(0) as u64);
            r
        });
        if let Some(r) = &replica {
            if r.failed_passes >= REPLICA_FAILED_PASSES_DEGRADED {
                details.push(format!(
                    "replication ({}): the last {} passes failed: {}",
                    r.role,
                    r.failed_passes,
                    r.last_error.as_deref().unwrap_or("?")
                ));
            }
            if r.last_failed_series > 0 {
                details.push(format!(
                    "replication ({}): {} series failed in the last pass (their previous state is kept; see the log)",
                    r.role, r.last_failed_series
                ));
            }
        }
        let cluster = self.cluster_health(h.peers.as_ref());
        if let Some(c) = cluster.as_ref().filter(|c| !c.unreachable.is_empty()) {
            details.push(format!(
                "cluster: peers not reachable at the last probe: {}",
                c.unreachable.join(", ")
            ));
        }
        if let Some(why) = cluster.as_ref().and_then(|c| c.map_refused.as_ref()) {
            details.push(format!(
                "cluster: the shard map file was refused, the map read before it is in use: {why}"
            ));
        }
        let status = if !serving {
            "failing"
        } else if details.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        Health {
            status: status.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: self.started.elapsed().as_secs(),
            series: self.store.series_count() as u64,
            issues: details.len() as u64,
            store_bytes,
            disk_free_bytes: disk_free,
            mapped_files: maps.live as u64,
            max_mapped_files: maps.max as u64,
            last_validation_ts: h.last_validation_ts,
            replica,
            cluster,
            details,
        }
    }

    pub fn inventory(&self) -> Inventory {
        self.inventory_page(&InventoryQuery::default())
            .expect("the default inventory takes no input")
    }

    /// The series `q` selects, ascending by key, at most `q.limit` of them after
    /// `q.after`, with or without partitions; totals cover every selected series.
    pub fn inventory_page(&self, q: &InventoryQuery) -> Result<Inventory> {
        if q.limit == Some(0) {
            return Err(Error::invalid(
                "limit must be at least 1 (omit it for every series)",
            ));
        }
        // Totals from every selected series as it is: a dormant one (its rows in the
        // catalog, no files) is counted from its seed, and only the page is built.
        let mut all = self.store.listed(|m| {
            q.kind.is_none_or(|k| k == m.key.kind())
                && q.symbol.as_deref().is_none_or(|x| x == m.key.symbol())
        });
        let (mut total_rows, mut total_bytes, mut total_files, mut total_raw_bytes) = (0, 0, 0, 0);
        for l in &all {
            match l {
                Listed::Built(s) => {
                    let snap = s.snapshot();
                    total_rows += snap.rows();
                    total_bytes += snap.bytes();
                    total_files += files_of(&snap);
                    total_raw_bytes += snap.raw_bytes();
                }
                Listed::Dormant { rows, .. } => total_rows += rows,
            }
        }
        let mut keyed: Vec<(String, Listed)> = all
            .drain(..)
            .map(|l| (l.meta().key.to_string(), l))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let std::ops::Range { start, end } = page_bounds(&keyed, q.after.as_deref(), q.limit);
        let with_partitions = q.partitions.unwrap_or(true);
        let mut page = Vec::with_capacity(end - start);
        for (k, l) in keyed.drain(start..end) {
            let s = match l {
                Listed::Built(s) => s,
                // Deleted since it was listed: not on the page.
                Listed::Dormant { meta, .. } => match self.store.get(&meta.key) {
                    Ok(s) => s,
                    Err(_) => continue,
                },
            };
            page.push((k, s));
        }

        // `keyed` lost the page: what is left past it is what a next page holds.
        let more = q.limit.is_some() && keyed.len() > start;
        let w = self.store.wal_stats();
        Ok(Inventory {
            log: LogInfo {
                bytes: w.bytes,
                segments: w.segments,
                unfolded_series: w.unfolded_series,
                unfolded_rows: w.unfolded_rows,
                unfolded_bytes: w.unfolded_bytes,
                fold_lag_ms: w.fold_lag_ms,
            },
            total_files,
            total_raw_bytes,
            snapshots: self.store.snapshots().len() as u64,
            snapshot_only_bytes: self.store.snapshot_only_bytes(),
            series: page
                .iter()
                .map(|(_, s)| series_info(s, with_partitions))
                .collect(),
            total_rows,
            total_bytes,
            next_after: more.then(|| page.last().map(|(k, _)| k.clone())).flatten(),
        })
    }

    /// Prometheus exposition of every metric.
    pub fn metrics_text(&self) -> String {
        let health = self.health();
        // Files and raw bytes from the built series only: a dormant one has no files
        // (its rows are in the catalog), and is not built for a scrape.
        let series = self.store.list_built_and(|_| false);
        let cache = self.store.options().map_cache.stats();
        let g = Gauges {
            store_bytes: health.store_bytes,
            snapshots: (
                self.store.snapshots().len() as u64,
                self.store.snapshot_only_bytes(),
            ),
            store_rows: self.store.total_rows(),
            series: self.store.series_count() as u64,
            health_status: match health.status.as_str() {
                "ok" => 0,
                "degraded" => 1,
                _ => 2,
            },
            uptime_s: health.uptime_s,
            maps: Some(cache.clone()),
            write_budget_used_bytes: self.write_budget.used_bytes(),
            write_budget_limit_bytes: self.write_budget.limit_bytes(),
            sql_memory_used_bytes: self.sql.memory_used() as u64,
            sql_queries_running: self.sql.running(&self.config.sql) as u64,
            sql_guard_resident_bytes: self.sql.running.resident(),
            sql_guard_limit_bytes: self.sql.running.limit(),
            sql_guard_cancelled: self
                .sql
                .running
                .cancelled
                .load(std::sync::atomic::Ordering::Relaxed),
            sql_guard_refused: self
                .sql
                .running
                .refused
                .load(std::sync::atomic::Ordering::Relaxed),
            wal: Some(self.store.wal_stats()),
            store_files: series.iter().map(|s| files_of(&s.snapshot())).sum(),
            store_raw_bytes: series.iter().map(|s| s.snapshot().raw_bytes()).sum(),
            decompressed_bytes: cache.decompressed_bytes as u64,
            decompressed_max_bytes: cache.decompressed_max_bytes as u64,
            decompressed_released: (cache.released_images_total, cache.released_bytes_total),
            local_copy_bytes: self.store.local_copies().bytes(),
            local_copy_max_bytes: self.store.local_copies().budget(),
            replica: health
                .replica
                .as_ref()
                .map(|r| (r.since_ok_s, r.failed_passes, r.last_failed_series, r.lag_s)),
            auth: {
                let c = &self.auth.counters;
                let ld =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                (ld(&c.unauthorized), ld(&c.forbidden), ld(&c.throttled))
            },
            tls: self.tls.get().map(|t| {
                let ld =
                    |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                (ld(&t.reloads), ld(&t.reload_errors))
            }),
        };
        self.metrics.render(&g)
    }

    pub fn put_dataset(&self, d: &Dataset) -> Result<bool> {
        self.check_writable()?;
        check_registry_name("name", &d.name)?;
        check_registry_name("version", &d.version)?;
        if let (Some(a), Some(b)) = (d.start_ts, d.end_ts)
            && a > b
        {
            return Err(Error::invalid("start_ts must not be after end_ts"));
        }
        self.recover_registry(true);
        Ok(self.registry.put_dataset(d)?)
    }

    pub fn list_datasets(&self, name: Option<&str>) -> Result<Vec<Dataset>> {
        Ok(self.registry.list_datasets(name)?)
    }

    pub fn put_definition(&self, kind: DefinitionKind, d: &Definition) -> Result<bool> {
        self.check_writable()?;
        check_registry_name("name", &d.name)?;
        check_registry_name("version", &d.version)?;
        if !d.symbol.is_empty() || !d.series_name.is_empty() {
            SeriesKey::scalar(&d.symbol, &d.timeframe, &d.category, &d.series_name)?;
        }
        self.recover_registry(true);
        Ok(self.registry.put_definition(kind, d)?)
    }

    pub fn list_definitions(
        &self,
        kind: DefinitionKind,
        name: Option<&str>,
    ) -> Result<Vec<Definition>> {
        Ok(self.registry.list_definitions(kind, name)?)
    }
}

/// Why the mapping budget makes `/health` degraded, if it does: reads in progress
/// hold 90% of it or more, or a mapping failed recently (until one succeeds again).
fn mapping_issues(m: &crate::storage::mapcache::MapStats) -> Vec<String> {
    let mut out = Vec::new();
    if m.near_budget() {
        out.push(format!(
            "mapped files near the budget: {} of {} held by reads in progress \
             (storage.max_mapped_files); further reads may be refused with 503",
            m.in_use, m.max
        ));
    }
    if let Some((ago_s, why)) = &m.recent_failure {
        out.push(format!(
            "a read could not map a data file {ago_s} s ago: {why}"
        ));
    }
    out
}

fn check_registry_name(field: &'static str, v: &str) -> Result<()> {
    crate::record::Name::parse(field, v)?;
    Ok(())
}

/// The slices of `range` of `snap` (or its last `latest` rows), mapped lazily.
fn slice_stream(
    snap: &crate::storage::Snapshot,
    range: TsRange,
    latest: Option<usize>,
) -> Result<SliceStream> {
    Ok(match latest {
        Some(n) => Box::new(snap.latest(range, n)?.into_iter().map(Ok)),
        None => Box::new(snap.range(range)),
    })
}

/// The page of `sorted` (ascending by its key text) that starts after the key `after`
/// and holds at most `limit` entries, as an index range: how `/inventory`, its Flight
/// action and ListFlights page a store of many series.
pub fn page_bounds<T>(
    sorted: &[(String, T)],
    after: Option<&str>,
    limit: Option<usize>,
) -> std::ops::Range<usize> {
    let start = after.map_or(0, |a| sorted.partition_point(|(k, _)| k.as_str() <= a));
    let end = limit.map_or(sorted.len(), |l| start.saturating_add(l).min(sorted.len()));
    start..end
}

/// A series as a listing gives it: built, or dormant with its row count.
pub use crate::storage::Listed;
pub use crate::storage::now_ms;

/// `timeframe_ms` from the request, or implied by a standard timeframe name.
pub fn resolve_timeframe_ms(timeframe: &str, given: Option<i64>) -> Result<i64> {
    let standard = crate::record::standard_timeframe_ms(timeframe);
    match (given, standard) {
        (Some(ms), _) if ms <= 0 => Err(Error::invalid("timeframe_ms must be a positive integer")),
        (Some(ms), Some(std_ms)) if ms != std_ms => Err(Error::invalid(format!(
            "timeframe {timeframe} means {std_ms} ms; omit timeframe_ms or use a non-standard timeframe name"
        ))),
        (Some(ms), _) => Ok(ms),
        (None, Some(ms)) => Ok(ms),
        (None, None) => Err(Error::invalid(format!(
            "timeframe_ms is required for the non-standard timeframe {timeframe:?} (standard: 1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 1w)"
        ))),
    }
}

/// Refuses the first kline row that breaks the OHLC rules, naming its request index.
fn check_ohlc(b: &WriteBatch) -> Result<()> {
    let cols: Vec<&[i64]> = b.cols.iter().map(|c| &c[..]).collect();
    check_ohlc_cols(&cols, 0)
}

/// Refuses a kline bar off the series' grid, `anchor + k * timeframe_ms`: the anchor is
/// the series' first stored bar, or the write's first bar when the series is empty
/// (the coverage grid is the same). A series registered `"irregular": true` takes any
/// `ts`. `ts` is the write's `ts` column, in pieces, in record order.
fn check_grid<'a>(series: &Series, ts: impl IntoIterator<Item = &'a [i64]>) -> Result<()> {
    let snap = series.snapshot();
    if snap.irregular {
        return Ok(());
    }
    let tf = series.meta.timeframe_ms;
    let mut anchor = snap.first_ts();
    drop(snap);
    let mut record = 0usize;
    for piece in ts {
        for &t in piece {
            if !(crate::record::TS_MIN..=crate::record::TS_MAX).contains(&t) {
                // The store refuses it as out of range (invalid_argument).
                record += 1;
                continue;
            }
            let a = *anchor.get_or_insert(t);
            if (t as i128 - a as i128).rem_euclid(tf as i128) != 0 {
                return Err(Error::new(
                    ErrorKind::Unprocessable,
                    format!(
                        "record {record} (ts {t}): off the grid of this {} series, whose bars \
                         sit at {a} + k * {tf} ms; register the series with \"irregular\": true \
                         to store bars at any ts",
                        series.meta.key.timeframe()
                    ),
                ));
            }
            record += 1;
        }
    }
    Ok(())
}

/// [`check_ohlc`] over kline columns whose first row is record `first` of the write.
fn check_ohlc_cols(cols: &[&[i64]], first: usize) -> Result<()> {
    let [ts, open, high, low, close, volume] = cols else {
        return Ok(());
    };
    for i in 0..ts.len() {
        let r = KlineRecord {
            ts: ts[i],
            open: open[i],
            high: high[i],
            low: low[i],
            close: close[i],
            volume: volume[i],
        };
        if let Err(why) = r.check() {
            return Err(Error::new(
                ErrorKind::Unprocessable,
                format!("record {} (ts {}): {why}", first + i, r.ts),
            ));
        }
    }
    Ok(())
}

/// Metadata and statistics of a series from its current snapshot.
pub fn series_info(s: &Series, with_partitions: bool) -> SeriesInfo {
    let snap = s.snapshot();
    let m = &s.meta;
    let kline = m.key.kind() == SeriesKind::Kline;
    let tick = m.key.kind().is_tick();
    let partitions = with_partitions.then(|| {
        snap.live
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(month, chunks)| PartitionInfo {
                month: partition_label(*month),
                rows: chunks.iter().map(|c| c.entry.rows).sum(),
                bytes: chunks
                    .iter()
                    .map(|c| c.entry.file_len + c.entry.zonemap.len + c.entry.vindex.len)
                    .sum(),
                chunks: chunks.len(),
                first_ts: chunks.first().map_or(0, |c| c.entry.first_ts),
                last_ts: chunks.last().map_or(0, |c| c.entry.last_ts),
            })
            .collect()
    });
    SeriesInfo {
        kind: m.key.kind(),
        symbol: m.key.symbol().into(),
        timeframe: m.key.timeframe().into(),
        category: m.key.category().map(String::from),
        name: m.key.name().map(String::from),
        timeframe_ms: m.timeframe_ms,
        price_scale: (kline || tick).then_some(m.price_scale),
        volume_scale: kline.then_some(m.volume_scale),
        value_type: (m.key.kind() == SeriesKind::Scalar).then_some(m.value_type),
        size_scale: tick.then_some(m.volume_scale),
        partition: tick.then(|| crate::record::tick_partition_name(m.timeframe_ms).to_string()),
        rows: snap.rows(),
        first_ts: snap.first_ts(),
        last_ts: snap.last_ts(),
        bytes: snap.bytes(),
        version: snap.version,
        retention_ms: snap.retention_ms,
        irregular: kline.then_some(snap.irregular),
        files: files_of(&snap),
        raw_bytes: snap.raw_bytes(),
        unfolded_rows: snap.unfolded.map_or(0, |u| u.rows),
        derived_from: None,
        materialized_through_ts: None,
        partitions,
    }
}

/// Most series one batch registration may carry.
pub const MAX_REGISTER_BATCH: usize = 100_000;

/// The metadata a kline registration asks for, checked.
pub fn kline_meta(r: &RegisterKline) -> Result<SeriesMeta> {
    let key = SeriesKey::kline(&r.symbol, &r.timeframe)?;
    let timeframe_ms = resolve_timeframe_ms(&r.timeframe, r.timeframe_ms)?;
    if r.price_scale <= 0 || r.volume_scale <= 0 {
        return Err(Error::invalid(
            "price_scale and volume_scale must be positive integers (e.g. 100 for cents)",
        ));
    }
    Ok(SeriesMeta {
        key,
        timeframe_ms,
        price_scale: r.price_scale,
        volume_scale: r.volume_scale,
        value_type: ValueType::I64,
    })
}

/// The metadata a scalar registration asks for, checked.
pub fn scalar_meta(r: &RegisterScalar) -> Result<SeriesMeta> {
    let key = SeriesKey::scalar(&r.symbol, &r.timeframe, &r.category, &r.name)?;
    let timeframe_ms = resolve_timeframe_ms(&r.timeframe, r.timeframe_ms)?;
    Ok(SeriesMeta {
        key,
        timeframe_ms,
        price_scale: 1,
        volume_scale: 1,
        value_type: r.value_type.unwrap_or_default(),
    })
}

/// Chunk and sidecar files a series' live chunks have on disk.
fn files_of(snap: &crate::storage::Snapshot) -> u64 {
    // A pack holds several chunks and their sidecars: one file, counted once.
    let mut packs = std::collections::HashSet::new();
    snap.chunks()
        .filter(|c| !c.is_memory())
        .map(|c| match c.entry.pack.is_packed() {
            true => u64::from(packs.insert(c.entry.pack.generation)),
            false => 1 + u64::from(c.entry.zonemap.present()) + u64::from(c.entry.vindex.present()),
        })
        .sum()
}

/// The error of series `i` of a batch registration, naming it.
fn nth(i: usize, e: Error) -> Error {
    Error::new(e.kind, format!("series {i}: {}", e.message))
}

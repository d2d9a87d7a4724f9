//! The SQLite control plane: the series catalog and the dataset, feature and factor
//! registries.
//!
//! One source of truth per fact: series *data and metadata* belong to storage (each
//! series directory's manifest); the `series` table is a catalog rebuilt from storage
//! by [`Registry::reconcile`] on every open and by `repair`. Datasets, features and
//! factors live only here.

mod access;

use crate::sync::LockExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, params};

pub use access::Access;
use serde::{Deserialize, Serialize};

use crate::record::{SeriesKey, SeriesMeta, ValueType};

/// Name of the registry database inside the data root.
pub const REGISTRY_FILE: &str = "registry.sqlite";

/// Registry failures. Messages never carry file paths.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Conflict(String),
    #[error("registry database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("registry database is corrupt: {0}")]
    Corrupted(String),
    /// The registry cannot record a change now: the disk is full, or the registry was
    /// opened read-only because the disk was full at start. Nothing was written. The
    /// message is meant for the client (503).
    #[error("{0}")]
    Unavailable(String),
}

/// A dataset manifest: where a body of data came from and what it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "binance-spot-1m", "version": "2024-06", "source": "binance", "market": "spot", "start_ts": 1704067200000_i64, "end_ts": 1719791999999_i64, "checksum": "xxh3:9f2c41d07a3b5e11", "status": "active", "description": "1m bars of the top 10 pairs"}))]
pub struct Dataset {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub market: String,
    #[serde(default)]
    pub start_ts: Option<i64>,
    #[serde(default)]
    pub end_ts: Option<i64>,
    #[serde(default)]
    pub checksum: String,
    #[serde(default = "default_status")]
    pub status: String,
    #[serde(default)]
    pub description: String,
}

/// A feature or factor definition: how a scalar series was produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "rsi_14", "version": "1", "input_dataset": "binance-spot-1m", "symbol": "BTCUSDT", "timeframe": "1m", "category": "indicator", "series_name": "rsi_14", "config_hash": "sha256:5d41402a", "code_version": "git:1a2b3c4", "status": "active", "description": "Wilder RSI over 14 bars"}))]
pub struct Definition {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub input_dataset: String,
    /// Series key the definition's output is stored under.
    #[serde(default)]
    pub symbol: String,
    #[serde(default)]
    pub timeframe: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub series_name: String,
    #[serde(default)]
    pub config_hash: String,
    #[serde(default)]
    pub code_version: String,
    #[serde(default = "default_status")]
    pub status: String,
    #[serde(default)]
    pub description: String,
}

fn default_status() -> String {
    "active".into()
}

/// Which definition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefinitionKind {
    Feature,
    Factor,
}

impl DefinitionKind {
    fn table(self) -> &'static str {
        match self {
            DefinitionKind::Feature => "features",
            DefinitionKind::Factor => "factors",
        }
    }
}

/// What [`Registry::reconcile`] changed to match storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub updated: Vec<String>,
}

impl ReconcileReport {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.updated.is_empty()
    }
}

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE series (
    kind TEXT NOT NULL, symbol TEXT NOT NULL, timeframe TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '', name TEXT NOT NULL DEFAULT '',
    timeframe_ms INTEGER NOT NULL, price_scale INTEGER NOT NULL, volume_scale INTEGER NOT NULL,
    value_type TEXT NOT NULL, created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (kind, symbol, timeframe, category, name));
CREATE TABLE datasets (
    name TEXT NOT NULL, version TEXT NOT NULL, source TEXT NOT NULL, market TEXT NOT NULL,
    start_ts INTEGER, end_ts INTEGER, checksum TEXT NOT NULL, status TEXT NOT NULL, description TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (name, version));
CREATE TABLE features (
    name TEXT NOT NULL, version TEXT NOT NULL, input_dataset TEXT NOT NULL, symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL, category TEXT NOT NULL, series_name TEXT NOT NULL, config_hash TEXT NOT NULL,
    code_version TEXT NOT NULL, status TEXT NOT NULL, description TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    PRIMARY KEY (name, version));
CREATE TABLE factors AS SELECT * FROM features WHERE 0;
CREATE UNIQUE INDEX factors_key ON factors (name, version);
"#,
    r#"
CREATE TABLE series_digest (
    one INTEGER PRIMARY KEY CHECK (one = 1), digest BLOB NOT NULL, rows INTEGER NOT NULL);
CREATE TRIGGER series_digest_on_insert AFTER INSERT ON series BEGIN DELETE FROM series_digest; END;
CREATE TRIGGER series_digest_on_update AFTER UPDATE ON series BEGIN DELETE FROM series_digest; END;
CREATE TRIGGER series_digest_on_delete AFTER DELETE ON series BEGIN DELETE FROM series_digest; END;
"#,
];

/// The registry database (one SQLite file inside the data root, WAL mode).
///
/// On a full disk SQLite cannot even open the database read-write (WAL mode has to
/// size its `-shm` file), so the registry also opens read-only, or, failing that,
/// offline ([`Access`]); it then refuses changes with [`RegistryError::Unavailable`]
/// and goes back to read-write by itself once space returns ([`Registry::try_recover`]).
pub struct Registry {
    path: PathBuf,
    conn: Mutex<Connection>,
    access: AtomicU8,
    /// The `series` catalog may disagree with storage: a catalog write failed (or was
    /// refused) since the last successful reconcile.
    catalog_stale: AtomicBool,
    last_recovery_attempt: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry")
    }
}

impl Registry {
    /// Opens or creates the database read-write and applies pending migrations. A
    /// failure for lack of space (or a read-only file system) is
    /// [`RegistryError::Unavailable`]: the caller may then use
    /// [`Registry::open_degraded`] rather than treat the database as damaged.
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        let conn = access::open_read_write(path, MIGRATIONS)?;
        Ok(Registry::with(path, conn, Access::ReadWrite))
    }

    /// Opens the database without writing to it, for a disk too full to open it
    /// read-write: read-only when SQLite can, otherwise offline (every call is
    /// refused until space returns). Never fails for lack of space.
    pub fn open_degraded(path: &Path) -> Result<Registry, RegistryError> {
        match access::open_read_only(path, MIGRATIONS.len()) {
            Ok(conn) => Ok(Registry::with(path, conn, Access::ReadOnly)),
            Err(e) => {
                tracing::error!(error = %e, "registry cannot be opened even read-only; it is offline until space returns");
                let conn = Connection::open_in_memory()?;
                Ok(Registry::with(path, conn, Access::Offline))
            }
        }
    }

    fn with(path: &Path, conn: Connection, access: Access) -> Registry {
        Registry {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            access: AtomicU8::new(access as u8),
            catalog_stale: AtomicBool::new(access != Access::ReadWrite),
            last_recovery_attempt: Mutex::new(None),
        }
    }

    /// How the database is open now.
    pub fn access(&self) -> Access {
        Access::from_u8(self.access.load(Ordering::Acquire))
    }

    /// Whether the series catalog may disagree with storage (a catalog write failed).
    pub fn catalog_stale(&self) -> bool {
        self.catalog_stale.load(Ordering::Acquire)
    }

    /// Why `/health` should say `degraded` because of the registry, if it should.
    pub fn health_issue(&self) -> Option<String> {
        match self.access() {
            Access::Offline => Some(
                "registry offline: disk full: writes refused; the registry could not be opened at \
                 start, so datasets, features and factors are unavailable until space is freed \
                 (series are served from storage)"
                    .into(),
            ),
            Access::ReadOnly => Some(
                "registry read-only: disk full: writes refused; registrations of datasets, features \
                 and factors are refused until space is freed (series are served from storage)"
                    .into(),
            ),
            Access::ReadWrite if self.catalog_stale() => Some(
                "registry catalog stale: disk full: writes refused; the series catalog is \
                 reconciled with storage when space returns"
                    .into(),
            ),
            Access::ReadWrite => None,
        }
    }

    /// Brings a degraded registry back: reopens it read-write and reconciles a stale
    /// catalog with `truth()` (the series storage holds). Without `force`, at most one
    /// attempt per [`access::RETRY_INTERVAL`] (for `/health`, polled by dashboards).
    /// Returns whether the registry is healthy afterwards.
    pub fn try_recover(&self, truth: impl FnOnce() -> Vec<SeriesMeta>, force: bool) -> bool {
        if self.access() == Access::ReadWrite && !self.catalog_stale() {
            return true;
        }
        {
            let mut last = self.last_recovery_attempt.locked();
            if !force && last.is_some_and(|t| t.elapsed() < access::RETRY_INTERVAL) {
                return false;
            }
            *last = Some(Instant::now());
        }
        if self.access() != Access::ReadWrite {
            match access::open_read_write(&self.path, MIGRATIONS) {
                Ok(conn) => {
                    *self.conn() = conn;
                    self.access
                        .store(Access::ReadWrite as u8, Ordering::Release);
                    tracing::warn!("registry is writable again");
                }
                Err(e) => {
                    tracing::debug!(error = %e, "registry still cannot be opened read-write");
                    return false;
                }
            }
        }
        match self.reconcile(&truth(), false) {
            Ok(rec) => {
                if !rec.is_empty() {
                    tracing::warn!(?rec, "registry catalog reconciled with storage");
                }
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "registry catalog still cannot be reconciled");
                false
            }
        }
    }

    /// Runs a read. Offline: refused.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, RegistryError> {
        if self.access() == Access::Offline {
            return Err(RegistryError::Unavailable(access::OFFLINE.into()));
        }
        let conn = self.conn();
        f(&conn).map_err(|e| access::classify(e, &self.path))
    }

    /// Runs a change. Read-only or offline: refused before SQLite is asked.
    fn write<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, RegistryError> {
        match self.access() {
            Access::ReadWrite => {}
            Access::ReadOnly => return Err(RegistryError::Unavailable(access::READ_ONLY.into())),
            Access::Offline => return Err(RegistryError::Unavailable(access::OFFLINE.into())),
        }
        let conn = self.conn();
        f(&conn).map_err(|e| access::classify(e, &self.path))
    }

    /// A catalog change: on failure the catalog is marked stale (storage stays the
    /// truth; the next reconcile repairs it).
    fn write_catalog<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, RegistryError> {
        let r = self.write(f);
        if r.is_err() {
            self.catalog_stale.store(true, Ordering::Release);
        }
        r
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.locked()
    }

    /// Runs SQLite's integrity check; returns the problems found (empty: clean).
    pub fn integrity_check(&self) -> Result<Vec<String>, RegistryError> {
        let rows = self.read(|conn| {
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(rows.into_iter().filter(|r| r != "ok").collect())
    }

    pub fn upsert_series(&self, meta: &SeriesMeta) -> Result<(), RegistryError> {
        self.write_catalog(|conn| upsert_series(conn, meta))
    }

    /// Catalogs many series in one transaction (a batch registration).
    pub fn upsert_many(&self, metas: &[SeriesMeta]) -> Result<(), RegistryError> {
        self.write_catalog(|conn| {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            for m in metas {
                if let Err(e) = upsert_series(conn, m) {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
            conn.execute_batch("COMMIT")
        })
    }

    pub fn remove_series(&self, k: &SeriesKey) -> Result<(), RegistryError> {
        self.write_catalog(|conn| {
            conn.execute(
                "DELETE FROM series WHERE kind = ?1 AND symbol = ?2 AND timeframe = ?3 AND category = ?4 AND name = ?5",
                params![k.kind().as_str(), k.symbol(), k.timeframe(), k.category().unwrap_or(""), k.name().unwrap_or("")],
            )
        })?;
        Ok(())
    }

    /// Every catalogued series, in no particular order; rows that no longer parse are
    /// reported as `Err` strings.
    pub fn list_series(&self) -> Result<Vec<Result<SeriesMeta, String>>, RegistryError> {
        self.read(list_series)
    }

    /// Makes the catalog equal to `truth` (the series storage holds), in one
    /// transaction. With `dry_run` only reports what would change. A catalog that
    /// already agrees needs no write, so this succeeds on a read-only registry too.
    pub fn reconcile<M: std::borrow::Borrow<SeriesMeta>>(
        &self,
        truth: &[M],
        dry_run: bool,
    ) -> Result<ReconcileReport, RegistryError> {
        let mut report = ReconcileReport::default();
        // The digest of the catalog as the last reconcile left it: every change of the
        // `series` table since (by FastK or by hand) has deleted it (its triggers).
        let digest = SeriesDigest::of(truth);
        if !dry_run && self.read(stored_digest)? == Some(digest) {
            self.catalog_stale.store(false, Ordering::Release);
            return Ok(report);
        }
        // What the table was when read: the digest is stored below only if nothing
        // changed it since (this connection's writes, or another process's).
        let (marker, have) = self.read(|conn| Ok((change_marker(conn)?, list_series(conn)?)))?;
        // Hashed by key, so a store of 100,000 series reconciles in linear time, not
        // n squared (each key hashed once, not compared log n times).
        let valid: std::collections::HashMap<&SeriesKey, &SeriesMeta, foldhash::fast::RandomState> =
            have.iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|m| (&m.key, m))
                .collect();
        let truth_keys: std::collections::HashSet<&SeriesKey, foldhash::fast::RandomState> =
            truth.iter().map(|m| &m.borrow().key).collect();
        for m in truth.iter().map(|m| m.borrow()) {
            match valid.get(&m.key) {
                None => report.added.push(m.key.to_string()),
                Some(h) if *h != m => report.updated.push(m.key.to_string()),
                Some(_) => {}
            }
        }
        let mut removed: Vec<&SeriesKey> = valid
            .keys()
            .filter(|k| !truth_keys.contains(*k))
            .copied()
            .collect();
        removed.sort_unstable();
        report.removed = removed.iter().map(|k| k.to_string()).collect();
        let invalid = have.iter().filter(|r| r.is_err()).count();
        if dry_run {
            return Ok(report);
        }
        if !report.is_empty() || invalid > 0 {
            self.write_catalog(|conn| {
                let tx = conn.unchecked_transaction()?;
                tx.execute("DELETE FROM series", [])?;
                for m in truth {
                    upsert_series(&tx, m.borrow())?;
                }
                store_digest(&tx, digest)?;
                tx.commit()
            })?;
        } else if self.access() == Access::ReadWrite {
            // The catalog agrees: its digest lets the next open skip the comparison.
            // Best effort: a registry that cannot take it compares again next time.
            let stored = self.write(|conn| {
                if change_marker(conn)? == marker {
                    store_digest(conn, digest)?;
                }
                Ok(())
            });
            if let Err(e) = stored {
                tracing::debug!(error = %e, "registry catalog digest not stored");
            }
        }
        self.catalog_stale.store(false, Ordering::Release);
        Ok(report)
    }

    /// Creates a dataset; `Ok(false)` when an identical one exists; `Conflict` when
    /// `(name, version)` exists with different fields.
    pub fn put_dataset(&self, d: &Dataset) -> Result<bool, RegistryError> {
        if let Some(existing) = self.get_dataset(&d.name, &d.version)? {
            return if existing == *d {
                Ok(false)
            } else {
                Err(RegistryError::Conflict(format!(
                    "dataset {} version {} exists with different fields; register a new version instead",
                    d.name, d.version
                )))
            };
        }
        self.write(|conn| {
            conn.execute(
                "INSERT INTO datasets (name, version, source, market, start_ts, end_ts, checksum, status, description)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![d.name, d.version, d.source, d.market, d.start_ts, d.end_ts, d.checksum, d.status, d.description],
            )
        })?;
        Ok(true)
    }

    pub fn get_dataset(&self, name: &str, version: &str) -> Result<Option<Dataset>, RegistryError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT name, version, source, market, start_ts, end_ts, checksum, status, description
                 FROM datasets WHERE name = ?1 AND version = ?2",
                params![name, version],
                dataset_row,
            )
            .optional()
        })
    }

    pub fn list_datasets(&self, name: Option<&str>) -> Result<Vec<Dataset>, RegistryError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT name, version, source, market, start_ts, end_ts, checksum, status, description
                 FROM datasets WHERE ?1 IS NULL OR name = ?1 ORDER BY name, version",
            )?;
            stmt.query_map(params![name], dataset_row)?
                .collect::<Result<Vec<_>, _>>()
        })
    }

    /// As [`Registry::put_dataset`], for feature and factor definitions.
    pub fn put_definition(
        &self,
        kind: DefinitionKind,
        d: &Definition,
    ) -> Result<bool, RegistryError> {
        let existing = self
            .list_definitions(kind, Some(&d.name))?
            .into_iter()
            .find(|e| e.version == d.version);
        if let Some(existing) = existing {
            return if existing == *d {
                Ok(false)
            } else {
                Err(RegistryError::Conflict(format!(
                    "{} {} version {} exists with different fields; register a new version instead",
                    &kind.table()[..kind.table().len() - 1],
                    d.name,
                    d.version
                )))
            };
        }
        let sql = format!(
            "INSERT INTO {} (name, version, input_dataset, symbol, timeframe, category, series_name, config_hash,
             code_version, status, description) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            kind.table()
        );
        self.write(|conn| {
            conn.execute(
                &sql,
                params![
                    d.name,
                    d.version,
                    d.input_dataset,
                    d.symbol,
                    d.timeframe,
                    d.category,
                    d.series_name,
                    d.config_hash,
                    d.code_version,
                    d.status,
                    d.description
                ],
            )
        })?;
        Ok(true)
    }

    pub fn list_definitions(
        &self,
        kind: DefinitionKind,
        name: Option<&str>,
    ) -> Result<Vec<Definition>, RegistryError> {
        let sql = format!(
            "SELECT name, version, input_dataset, symbol, timeframe, category, series_name, config_hash, code_version,
             status, description FROM {} WHERE ?1 IS NULL OR name = ?1 ORDER BY name, version",
            kind.table()
        );
        self.read(|conn| {
            let mut stmt = conn.prepare(&sql)?;
            stmt.query_map(params![name], |r| {
                Ok(Definition {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    input_dataset: r.get(2)?,
                    symbol: r.get(3)?,
                    timeframe: r.get(4)?,
                    category: r.get(5)?,
                    series_name: r.get(6)?,
                    config_hash: r.get(7)?,
                    code_version: r.get(8)?,
                    status: r.get(9)?,
                    description: r.get(10)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()
        })
    }
}

fn upsert_series(conn: &Connection, meta: &SeriesMeta) -> rusqlite::Result<()> {
    let k = &meta.key;
    // Cached: a batch registration runs this once per series in one transaction.
    conn.prepare_cached(
        "INSERT INTO series (kind, symbol, timeframe, category, name, timeframe_ms, price_scale, volume_scale, value_type)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT DO UPDATE SET timeframe_ms = excluded.timeframe_ms, price_scale = excluded.price_scale,
           volume_scale = excluded.volume_scale, value_type = excluded.value_type",
    )?
    .execute(params![
            k.kind().as_str(),
            k.symbol(),
            k.timeframe(),
            k.category().unwrap_or(""),
            k.name().unwrap_or(""),
            meta.timeframe_ms,
            meta.price_scale,
            meta.volume_scale,
            meta.value_type.as_str()
        ])?;
    Ok(())
}

/// An order-free digest of a set of series metadata: the wrapping sum of each one's
/// 128-bit xxh3 over its catalog fields, and their count. Equal digests stand for
/// equal sets (a collision is as likely as a 128-bit hash's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeriesDigest {
    sum: u128,
    rows: u64,
}

impl SeriesDigest {
    fn of<M: std::borrow::Borrow<SeriesMeta>>(metas: &[M]) -> SeriesDigest {
        let mut buf = Vec::with_capacity(128);
        let mut sum = 0u128;
        for m in metas {
            let m = m.borrow();
            let k = &m.key;
            buf.clear();
            for part in [
                k.kind().as_str(),
                k.symbol(),
                k.timeframe(),
                k.category().unwrap_or(""),
                k.name().unwrap_or(""),
                m.value_type.as_str(),
            ] {
                // Length-prefixed: no two different field lists give the same bytes.
                buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
                buf.extend_from_slice(part.as_bytes());
            }
            for v in [m.timeframe_ms, m.price_scale, m.volume_scale] {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            sum = sum.wrapping_add(xxhash_rust::xxh3::xxh3_128(&buf));
        }
        SeriesDigest {
            sum,
            rows: metas.len() as u64,
        }
    }
}

fn stored_digest(conn: &Connection) -> rusqlite::Result<Option<SeriesDigest>> {
    let row = conn
        .query_row(
            "SELECT digest, rows FROM series_digest WHERE one = 1",
            [],
            |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()?;
    Ok(row.and_then(|(d, rows)| {
        Some(SeriesDigest {
            sum: u128::from_le_bytes(d.try_into().ok()?),
            rows: u64::try_from(rows).ok()?,
        })
    }))
}

/// Changes to the database since the connection opened: its own (`total_changes`,
/// triggers' included) and other connections' (`PRAGMA data_version`).
fn change_marker(conn: &Connection) -> rusqlite::Result<(u64, i64)> {
    let other: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
    Ok((conn.total_changes(), other))
}

/// Records `d` as the digest of the `series` table as it is now (after any change of
/// the table in the same transaction: its triggers delete the digest).
fn store_digest(conn: &Connection, d: SeriesDigest) -> rusqlite::Result<()> {
    let rows = i64::try_from(d.rows).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT OR REPLACE INTO series_digest (one, digest, rows) VALUES (1, ?1, ?2)",
        params![d.sum.to_le_bytes().to_vec(), rows],
    )?;
    Ok(())
}

fn list_series(conn: &Connection) -> rusqlite::Result<Vec<Result<SeriesMeta, String>>> {
    let mut stmt = conn.prepare(
        // No ORDER BY: the table in its own order, not through the key's index (which
        // would cost a lookup of the table per row).
        "SELECT kind, symbol, timeframe, category, name, timeframe_ms, price_scale, volume_scale, value_type
         FROM series",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let (kind, s, tf, c, n) = (
            text(r, 0)?,
            text(r, 1)?,
            text(r, 2)?,
            text(r, 3)?,
            text(r, 4)?,
        );
        let (tf_ms, ps, vs) = (
            r.get::<_, i64>(5)?,
            r.get::<_, i64>(6)?,
            r.get::<_, i64>(7)?,
        );
        let vt = text(r, 8)?;
        let key = match kind {
            "kline" => SeriesKey::kline(s, tf).map_err(|e| e.to_string()),
            "scalar" => SeriesKey::scalar(s, tf, c, n).map_err(|e| e.to_string()),
            "trade" => SeriesKey::trade(s).map_err(|e| e.to_string()),
            "quote" => SeriesKey::quote(s).map_err(|e| e.to_string()),
            other => Err(format!("unknown kind {other:?}")),
        };
        let value_type = if vt == "f64" {
            ValueType::F64
        } else {
            ValueType::I64
        };
        out.push(key.map(|key| SeriesMeta {
            key,
            timeframe_ms: tf_ms,
            price_scale: ps,
            volume_scale: vs,
            value_type,
        }));
    }
    Ok(out)
}

/// Column `i` of `r` as text borrowed from SQLite's row (no string allocated).
fn text<'a>(r: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a str> {
    r.get_ref(i)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn dataset_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Dataset> {
    Ok(Dataset {
        name: r.get(0)?,
        version: r.get(1)?,
        source: r.get(2)?,
        market: r.get(3)?,
        start_ts: r.get(4)?,
        end_ts: r.get(5)?,
        checksum: r.get(6)?,
        status: r.get(7)?,
        description: r.get(8)?,
    })
}

//! The storage engine: series directories of immutable, column-major month chunks,
//! memory-mapped for reads, committed through per-series manifests.
//!
//! Architecture invariant: this module knows nothing of HTTP, gRPC or SQLite. It
//! imports no axum, tonic or rusqlite (a test in `tests/architecture.rs` checks).
//!
//! Layout of a store root:
//! ```text
//! <root>/LOCK                               OS file lock: one process per store
//! <root>/series/kline/<symbol>/<timeframe>/MANIFEST, <YYYY-MM>.g<gen>.chunk
//! <root>/series/scalar/<symbol>/<timeframe>/<category>/<name>/...  (+ .zmap, .vidx)
//! <root>/trash/                             deleted series and half-made
//!                                           registrations, emptied on open
//! ```

pub mod batch;
pub mod chunk;
pub mod error;
pub mod format;
pub mod fsio;
pub mod maintain;
pub mod mapcache;
pub mod mmap;
pub mod recover;
pub mod series;
pub mod sidecar;
pub mod snapshot;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub use error::{Result, StorageError};
pub use recover::RecoveryNotes;
pub use series::{DeleteReport, Series, WriteBatch, WriteReport};
pub use snapshot::{ChunkSlice, Snapshot};

use crate::record::{SeriesKey, SeriesKind, SeriesMeta};

// Chunk files store little-endian integers that are mapped and read in place.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "FastK stores little-endian data and maps it in place"
);

/// Tunables of the engine (see `[storage]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// A month with this many chunks is rewritten into one on the next write to it.
    pub max_chunks_per_month: usize,
    /// Rows per zone-map block; `None` disables zone maps.
    pub zonemap_block_rows: Option<usize>,
    /// Whether scalar chunks get a value index.
    pub value_index: bool,
    /// Threads that publish the chunks of one write.
    pub write_threads: usize,
    /// Threads that fsync a write's new files while the writers go on.
    pub sync_threads: usize,
    /// Most rows one write may carry, whatever the front end (HTTP, Flight, import).
    pub max_write_rows: usize,
    /// Live mappings (chunk files and value indexes) the store may hold at once.
    pub max_mapped_files: usize,
    /// Bytes of parsed zone maps the store keeps cached.
    pub zonemap_cache_bytes: usize,
    /// The store's mapping and zone-map cache. `Store::open` installs a fresh one sized
    /// by the two keys above, so every open store has its own.
    pub map_cache: Arc<mapcache::MapCache>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_chunks_per_month: 8,
            zonemap_block_rows: Some(4096),
            value_index: true,
            write_threads: 2,
            sync_threads: 8,
            max_write_rows: 50_000_000,
            max_mapped_files: mapcache::DEFAULT_MAX_MAPPED_FILES,
            zonemap_cache_bytes: mapcache::DEFAULT_ZONEMAP_CACHE_BYTES,
            map_cache: mapcache::MapCache::new(
                mapcache::DEFAULT_MAX_MAPPED_FILES,
                mapcache::DEFAULT_ZONEMAP_CACHE_BYTES,
            ),
        }
    }
}

/// An open store. One process at a time holds it (an OS file lock on `<root>/LOCK`).
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    opts: StoreOptions,
    _lock: File,
    series: RwLock<BTreeMap<SeriesKey, Arc<Series>>>,
    recovery: Vec<RecoveryNotes>,
    /// Series directories that could not be opened (relative path, reason).
    unopenable: Vec<(String, String)>,
}

static TRASH_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating if needed) the store at `root`, recovering every series.
    pub fn open(root: impl AsRef<Path>, mut opts: StoreOptions) -> Result<Store> {
        opts.map_cache = mapcache::MapCache::new(opts.max_mapped_files, opts.zonemap_cache_bytes);
        let root = root.as_ref().to_path_buf();
        let io = |what: &str| {
            let what = what.to_string();
            move |e| StorageError::io(what, e)
        };
        fsio::create_dir_durable(&root.join("series")).map_err(io("series"))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("LOCK"))
            .map_err(io("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(StorageError::Locked),
            Err(fs::TryLockError::Error(e)) => return Err(StorageError::io("LOCK", e)),
        }
        let trash = root.join("trash");
        if trash.exists() {
            fs::remove_dir_all(&trash).map_err(io("trash"))?;
            fsio::fsync_dir(&root).map_err(io("."))?;
        }
        let mut store = Store {
            root,
            opts,
            _lock: lock,
            series: RwLock::new(BTreeMap::new()),
            recovery: Vec::new(),
            unopenable: Vec::new(),
        };
        store.load_all()?;
        Ok(store)
    }

    fn load_all(&mut self) -> Result<()> {
        let mut dirs = Vec::new();
        collect_series_dirs(&self.root.join("series"), &mut Vec::new(), &mut dirs)
            .map_err(|e| StorageError::io("series", e))?;
        let mut map = BTreeMap::new();
        for (parts, dir) in dirs {
            let rel = format!("series/{}", parts.join("/"));
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let key = match SeriesKey::from_parts(&refs) {
                Ok(k) => k,
                Err(e) => {
                    self.unopenable.push((rel, e));
                    continue;
                }
            };
            match recover::open_series(dir, rel.clone(), &self.opts) {
                Ok((series, notes)) if series.meta.key == key => {
                    if !notes.is_quiet() {
                        self.recovery.push(notes);
                    }
                    map.insert(key, Arc::new(series));
                }
                Ok(_) => self
                    .unopenable
                    .push((rel, "manifest names a different series".into())),
                Err(e) => self.unopenable.push((rel, e.to_string())),
            }
        }
        *self.series.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// What recovery did when the store was opened (series where anything happened).
    pub fn recovery(&self) -> &[RecoveryNotes] {
        &self.recovery
    }

    /// Series directories that could not be opened, with the reason.
    pub fn unopenable(&self) -> &[(String, String)] {
        &self.unopenable
    }

    /// Registers a series. Returns it and whether it was created (false: an identical
    /// one exists). Different metadata under the same key is a `Conflict`.
    ///
    /// The directory is made complete (with its first `MANIFEST`) under `trash/` and
    /// renamed into place, so a registration that fails, or a crash during one,
    /// leaves nothing behind in `series/`.
    pub fn register(&self, meta: SeriesMeta) -> Result<(Arc<Series>, bool)> {
        check_meta(&meta)?;
        let mut map = self.series.write().unwrap_or_else(|p| p.into_inner());
        // A series whose delete is between its rename and its removal from the map is
        // already gone: register anew.
        if let Some(s) = map.get(&meta.key).filter(|s| !s.is_deleted()) {
            if *s.meta == meta {
                return Ok((Arc::clone(s), false));
            }
            return Err(StorageError::Conflict(describe_conflict(&s.meta, &meta)));
        }
        let rel = format!("series/{}", meta.key.rel_dir().display());
        let dir = self.root.join(&rel);
        let meta = Arc::new(meta);
        let snap = Snapshot::empty(Arc::clone(&meta));
        self.create_series_dir(&dir, &rel, &snap.to_manifest().encode())?;
        let series = Arc::new(Series::new(
            Arc::clone(&meta),
            dir,
            rel,
            self.opts.clone(),
            snap,
        ));
        map.insert(meta.key.clone(), Arc::clone(&series));
        Ok((series, true))
    }

    /// Builds a series directory holding `manifest` in `trash/` and renames it to
    /// `dir`; on failure removes whatever it made.
    fn create_series_dir(&self, dir: &Path, rel: &str, manifest: &[u8]) -> Result<()> {
        let trash = self.root.join("trash");
        let n = TRASH_COUNTER.fetch_add(1, Ordering::Relaxed);
        let staging = trash.join(format!("new-{}-{n}", std::process::id()));
        let parent = dir.parent().unwrap_or(&self.root);
        let made = (|| -> Result<()> {
            fsio::create_dir_durable(&staging).map_err(|e| StorageError::io("trash", e))?;
            fsio::write_atomic(&staging, series::MANIFEST_NAME, &[manifest])
                .map_err(|e| StorageError::io(format!("{rel}/MANIFEST"), e))?;
            fsio::create_dir_durable(parent).map_err(|e| StorageError::io(rel, e))?;
            fsio::rename(&staging, dir).map_err(|e| StorageError::io(rel, e))?;
            Ok(())
        })();
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
        if let Err(e) = fsio::fsync_dir(parent) {
            // The new directory is in place but may not be durable: take it back out
            // so the refusal stays true.
            if fs::rename(dir, &staging).is_ok() {
                let _ = fs::remove_dir_all(&staging);
                let _ = fsio::fsync_dir(parent);
            }
            return Err(StorageError::io(rel, e));
        }
        Ok(())
    }

    pub fn get(&self, key: &SeriesKey) -> Result<Arc<Series>> {
        self.series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
            .ok_or_else(|| {
                StorageError::NotFound(format!(
                    "{} series {key} is not registered",
                    key.kind().as_str()
                ))
            })
    }

    /// Every series, ordered by key.
    pub fn list(&self) -> Vec<Arc<Series>> {
        self.series
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn list_kind(&self, kind: SeriesKind) -> Vec<Arc<Series>> {
        self.list()
            .into_iter()
            .filter(|s| s.meta.key.kind() == kind)
            .collect()
    }

    /// Deletes a series and its data. The directory is renamed into `trash/` (atomic),
    /// then removed; open readers keep their mappings until they finish.
    ///
    /// The directory moves and the handle is marked deleted in one hold of the series'
    /// writer lock, so a write that holds the handle but not yet the lock fails
    /// `NotFound` and writes nothing, even if the key is registered again meanwhile. The store's
    /// map is not locked while waiting for a write in flight.
    pub fn delete(&self, key: &SeriesKey) -> Result<()> {
        let series = self.get(key)?;
        let guard = series.lock_live()?;
        let trash = self.root.join("trash");
        fsio::create_dir_durable(&trash).map_err(|e| StorageError::io("trash", e))?;
        let n = TRASH_COUNTER.fetch_add(1, Ordering::Relaxed);
        let target = trash.join(format!("{}-{n}", std::process::id()));
        fsio::rename(series.dir.as_path(), &target)
            .map_err(|e| StorageError::io(series.rel_dir.to_string(), e))?;
        series.mark_deleted(&guard);
        {
            let mut map = self.series.write().unwrap_or_else(|p| p.into_inner());
            if map.get(key).is_some_and(|s| Arc::ptr_eq(s, &series)) {
                map.remove(key);
            }
        }
        drop(guard);
        let synced = series
            .dir
            .parent()
            .map_or(Ok(()), fsio::fsync_dir)
            .map_err(|e| StorageError::io(series.rel_dir.to_string(), e));
        let _ = fs::remove_dir_all(&target);
        synced
    }

    /// Total bytes of live chunks and sidecars.
    pub fn bytes(&self) -> u64 {
        self.list().iter().map(|s| s.snapshot().bytes()).sum()
    }
}

fn check_meta(meta: &SeriesMeta) -> Result<()> {
    if meta.timeframe_ms <= 0 {
        return Err(StorageError::InvalidArgument(
            "timeframe_ms must be a positive integer".into(),
        ));
    }
    if meta.price_scale <= 0 || meta.volume_scale <= 0 {
        return Err(StorageError::InvalidArgument(
            "price_scale and volume_scale must be positive integers".into(),
        ));
    }
    Ok(())
}

fn describe_conflict(have: &SeriesMeta, want: &SeriesMeta) -> String {
    let mut diffs = Vec::new();
    if have.timeframe_ms != want.timeframe_ms {
        diffs.push(format!(
            "timeframe_ms {} (requested {})",
            have.timeframe_ms, want.timeframe_ms
        ));
    }
    if have.price_scale != want.price_scale {
        diffs.push(format!(
            "price_scale {} (requested {})",
            have.price_scale, want.price_scale
        ));
    }
    if have.volume_scale != want.volume_scale {
        diffs.push(format!(
            "volume_scale {} (requested {})",
            have.volume_scale, want.volume_scale
        ));
    }
    if have.value_type != want.value_type {
        diffs.push(format!(
            "value_type {} (requested {})",
            have.value_type.as_str(),
            want.value_type.as_str()
        ));
    }
    format!(
        "series {} already exists with {}; delete it first to change its metadata",
        have.key,
        diffs.join(", ")
    )
}

/// Finds series directories: `kline/<s>/<tf>` and `scalar/<s>/<tf>/<c>/<n>`.
fn collect_series_dirs(
    dir: &Path,
    parts: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, PathBuf)>,
) -> std::io::Result<()> {
    let depth = match parts.first().map(String::as_str) {
        Some("kline") => 3,
        Some("scalar") => 5,
        Some(_) => return Ok(()),
        None => 0,
    };
    if depth > 0 && parts.len() == depth {
        out.push((parts.clone(), dir.to_path_buf()));
        return Ok(());
    }
    let mut names: Vec<_> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        parts.push(e.file_name().to_string_lossy().to_string());
        collect_series_dirs(&e.path(), parts, out)?;
        parts.pop();
    }
    Ok(())
}

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
//! <root>/wal/<lsn>.wal                    the write-ahead log (see `wal`)
//! <root>/trash/                             deleted series and half-made
//!                                           registrations, emptied on open
//! ```

pub mod batch;
pub mod catalog;
pub mod chunk;
pub mod codec;
pub mod error;
pub mod follow;
pub mod follow_snapshot;
pub mod format;
pub mod fsio;
pub mod localcopy;
pub mod locate;
pub mod maintain;
pub mod mapcache;
pub mod mapped;
pub mod mmap;
pub mod named;
pub mod pack;
mod packer;
pub mod parallel;
pub mod pressure;
pub mod recover;
pub mod resident;
pub mod series;
pub mod seriesmap;
pub mod sidecar;
pub mod snapshot;
pub mod upgrade;
pub mod verify;
pub mod versions;
pub mod wal;

use crate::sync::{LockExt, RwLockExt};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

pub use error::{Result, StorageError};
pub use recover::RecoveryNotes;
pub use series::{DeleteReport, Series, WriteBatch, WriteReport};

/// The settings a registration may give besides the metadata; `None` leaves a setting
/// as it is (a new series: retention 0, regular).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// Retention in ms (0: keep forever).
    pub retention_ms: Option<i64>,
    /// Kline bars may sit off the timeframe's grid.
    pub irregular: Option<bool>,
}
use seriesmap::SeriesMap;
pub use snapshot::{ChunkSlice, Snapshot};

use crate::record::{SeriesKey, SeriesKind, SeriesMeta, keys_increase};

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
    /// Scalar chunks of fewer rows get no sidecars (zone map, value index): a chunk
    /// that small is read whole faster than its sidecars are opened, and a series of
    /// a few rows would otherwise cost three files instead of one.
    pub sidecar_min_rows: usize,
    /// Threads that publish the chunks of one write.
    pub write_threads: usize,
    /// Threads that fsync a write's new files while the writers go on.
    pub sync_threads: usize,
    /// Series the compression and pack pass, and `admin compact`, rewrite at once.
    pub maintenance_threads: usize,
    /// Most rows one write may carry, whatever the front end (HTTP, Flight, import).
    pub max_write_rows: usize,
    /// Live mappings (chunk files and value indexes) the store may hold at once.
    pub max_mapped_files: usize,
    /// Bytes of parsed zone maps the store keeps cached.
    pub zonemap_cache_bytes: usize,
    /// The write-ahead log and the fold (see `wal`).
    pub wal: wal::WalOptions,
    /// Bytes of decompressed images of compressed chunks the cache may keep.
    pub decompressed_cache_bytes: usize,
    /// Months that ended more than this long ago (ms) are compressed (`None`: never).
    pub compress_after_ms: Option<i64>,
    /// Whether closing the store (`Drop`, not [`Store::abandon`]) folds the rows the log
    /// holds in memory into chunk files first. Off, a close only finishes the queued
    /// writes: the log is durable, and the next open replays it (a fast stop).
    pub fold_on_close: bool,
    /// Without `fold_on_close`: whether a close still writes the unfolded rows of the
    /// small series with no directory into the catalog (a few records for all of
    /// them), so the next open leaves them dormant instead of replaying them
    /// (`storage::seriesmap`). Off by default here (tests of the replay rely on it);
    /// the server's `storage.fold_small_on_stop` turns it on.
    pub fold_small_on_close: bool,
    /// Whether a commit that makes a sealed month its one chunk (a bulk load of
    /// finished months, a fold, a rewrite) writes it compressed in the same pass
    /// (`series::sealed`); off, only the compression pass compresses.
    pub compress_on_write: bool,
    /// Sealed compressed months whose chunks are small are gathered into pack files
    /// of at most this many bytes (`storage::pack`; 0: never packed).
    pub pack_target_bytes: u64,
    /// Chunk and pack files of a write at least this large are written around the
    /// page cache (`O_DIRECT`, `fsio::write_unreferenced_sized`; 0: never).
    pub direct_write_min_bytes: u64,
    /// The store's mapping and zone-map cache. `Store::open` installs a fresh one sized
    /// by the two keys above, so every open store has its own.
    pub map_cache: Arc<mapcache::MapCache>,
    /// Bytes of rows waiting in memory to be folded, over every series of the store.
    /// The committer checks it before every group (the hard memory limit holds per
    /// write, not per fold pass) and the fold pass reads it without visiting every
    /// series. `Store::open` installs a fresh one.
    pub unfolded_bytes: Arc<wal::UnfoldedBytes>,
    /// How long superseded versions stay readable (ms; 0: not at all;
    /// `storage.keep_versions_s`).
    pub keep_versions_ms: i64,
    /// A series with no directory that holds at most this many rows folds into the
    /// store's catalog, not into files of its own (`storage::resident`; 0: never).
    pub resident_rows_max: u64,
    /// Most bytes of in-memory rows the series kept in the catalog hold together.
    pub resident_bytes_max: u64,
    /// The history settings every series of the store shares. `Store::open` installs
    /// a fresh one (its `keep_ms` stays 0 until the log is replayed).
    pub versions: Arc<series::VersionSettings>,
    /// Bytes of raw copies of compressed chunks kept in `<root>/local/` for
    /// co-located readers (`localcopy`; 0: none).
    pub local_copy_bytes: u64,
    /// A built series that the catalog holds whole and no one asked for during this
    /// long goes back to sleep (`storage::seriesmap`; `None`: never). The fold thread
    /// sweeps this often (on its `wal.fold_interval` tick), so an idle series sleeps one to
    /// two of these after its last use.
    pub dormant_after: Option<std::time::Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_chunks_per_month: 8,
            zonemap_block_rows: Some(4096),
            value_index: true,
            sidecar_min_rows: DEFAULT_SIDECAR_MIN_ROWS,
            write_threads: 2,
            sync_threads: 8,
            maintenance_threads: 2,
            max_write_rows: 50_000_000,
            max_mapped_files: mapcache::DEFAULT_MAX_MAPPED_FILES,
            zonemap_cache_bytes: mapcache::DEFAULT_ZONEMAP_CACHE_BYTES,
            wal: wal::WalOptions::default(),
            decompressed_cache_bytes: mapcache::DEFAULT_DECOMPRESSED_CACHE_BYTES,
            compress_after_ms: None,
            compress_on_write: true,
            fold_on_close: true,
            fold_small_on_close: false,
            pack_target_bytes: pack::DEFAULT_PACK_TARGET_BYTES,
            direct_write_min_bytes: DEFAULT_DIRECT_WRITE_MIN_BYTES,
            map_cache: mapcache::MapCache::new(
                mapcache::DEFAULT_MAX_MAPPED_FILES,
                mapcache::DEFAULT_ZONEMAP_CACHE_BYTES,
            ),
            unfolded_bytes: Arc::default(),
            keep_versions_ms: 0,
            versions: Arc::default(),
            // Off in the engine's defaults (its tests fold into files); the server's
            // configuration turns it on (`storage.resident_rows_max`).
            resident_rows_max: 0,
            resident_bytes_max: resident::DEFAULT_RESIDENT_BYTES_MAX,
            local_copy_bytes: localcopy::DEFAULT_LOCAL_COPY_BYTES,
            // Off in the engine's defaults (its tests look at built series); the
            // server's configuration turns it on (`storage.dormant_after_s`).
            dormant_after: None,
        }
    }
}

/// Milliseconds since the Unix epoch, now (what decides which months are sealed).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Default of `storage.direct_write_min_bytes`: above a month of 1m bars (2.1 MB), so
/// the fold of a live month stays in the page cache for its readers, and below a
/// pack of a bulk load (`storage.pack_target_bytes`, 32 MiB).
pub const DEFAULT_DIRECT_WRITE_MIN_BYTES: u64 = 8 << 20;

/// How long [`lock_root`] keeps trying a `LOCK` that another descriptor holds before
/// it answers [`StorageError::Locked`].
///
/// Why wait at all: a lock this process released a moment ago can still be held for
/// it. An OS file lock belongs to the open file, and a child process spawned by any
/// thread of this process holds a copy of every open descriptor between its fork and
/// its exec (close-on-exec closes them only at the exec). A store dropped and opened
/// again in one process (a library user, a test, `fastk import` followed by a read)
/// while another thread spawns a process would otherwise be refused for that window,
/// which lasts microseconds on an idle host and tens of milliseconds on a loaded one.
/// A store held by another server stays refused: after this wait.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The longest sleep between two tries of the lock: the first tries come quickly
/// (the window is usually short), later ones less often.
const LOCK_RETRY_MAX: std::time::Duration = std::time::Duration::from_millis(50);

/// Takes the store's OS file lock on `<root>/LOCK` (creating the file), trying again
/// for up to [`LOCK_WAIT`] while another descriptor holds it. The lock is held as long
/// as the returned file is open.
pub(crate) fn lock_root(root: &Path) -> Result<File> {
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("LOCK"))
        .map_err(|e| StorageError::io("LOCK", e))?;
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(lock),
            Err(fs::TryLockError::Error(e)) => return Err(StorageError::io("LOCK", e)),
            Err(fs::TryLockError::WouldBlock) => {
                let now = std::time::Instant::now();
                if now >= deadline {
                    return Err(StorageError::Locked);
                }
                std::thread::sleep(pause.min(deadline - now));
                pause = (pause * 2).min(LOCK_RETRY_MAX);
            }
        }
    }
}

/// An open store. One process at a time holds it (an OS file lock on `<root>/LOCK`).
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    opts: Arc<StoreOptions>,
    _lock: File,
    series: Arc<RwLock<SeriesMap>>,
    recovery: Vec<RecoveryNotes>,
    /// What replaying the write-ahead log did on open.
    wal_recovery: WalRecovery,
    /// The log every small write goes through (group commit).
    wal: Arc<wal::Wal>,
    /// The committer and the background fold; joined on drop.
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Set by [`Store::abandon`]: drop folds nothing, as if the process died.
    abandoned: std::sync::atomic::AtomicBool,
    /// Series directories that could not be opened (relative path, reason).
    unopenable: Vec<(String, String)>,
    /// The named snapshots (`named`).
    named: named::Named,
    /// The series catalog (`catalog`): registrations, and deletes of what it lists.
    catalog: Arc<catalog::Catalog>,
    /// What opening the catalog found.
    catalog_open: catalog::CatalogOpen,
    /// The format upgrade this open made (`storage::upgrade`).
    upgraded: Option<upgrade::Upgraded>,
    /// Raw copies of compressed chunks for co-located readers (`localcopy`).
    local_copies: localcopy::LocalCopies,
    /// Series that went back to sleep since the open (`Store::sleep_idle`).
    slept: Arc<AtomicU64>,
}

static TRASH_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `StoreOptions::sidecar_min_rows` by default: a month of daily rows (31) gets no
/// sidecars, a month of hourly rows (744) does.
pub const DEFAULT_SIDECAR_MIN_ROWS: usize = 64;

/// Most threads that open series directories at start (at most one per core).
const OPEN_THREADS_MAX: usize = 8;

/// A series as [`Store::listed`] gives it.
#[derive(Debug, Clone)]
pub enum Listed {
    Built(Arc<Series>),
    /// Not built: its rows are in the catalog (no files, nothing unfolded).
    Dormant {
        meta: SeriesMeta,
        rows: u64,
    },
}

impl Listed {
    pub fn meta(&self) -> &SeriesMeta {
        match self {
            Listed::Built(s) => &s.meta,
            Listed::Dormant { meta, .. } => meta,
        }
    }
}

/// What replaying the write-ahead log did when the store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalRecovery {
    /// Records applied (not yet in their series' manifests).
    pub records: u64,
    /// Rows those records held.
    pub rows: u64,
    /// Records skipped: their series is gone, or already holds them.
    pub skipped: u64,
    /// A torn record cut off the end of the log: (segment, offset, bytes).
    pub cut_tail: Option<(String, u64, u64)>,
}

/// The log's figures for `/inventory` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalStats {
    pub bytes: u64,
    pub segments: u64,
    pub committed_lsn: u64,
    /// Rows and bytes in memory waiting to be folded, over every series.
    pub unfolded_rows: u64,
    pub unfolded_bytes: u64,
    /// Series holding unfolded rows.
    pub unfolded_series: u64,
    /// Age of the oldest unfolded row, in milliseconds (the fold lag).
    pub fold_lag_ms: u64,
    /// Syncs of the log since open, and the records they made durable.
    pub syncs: u64,
    pub records: u64,
    /// Series with no directory whose rows the catalog keeps (nothing unfolded), and
    /// the bytes of their in-memory chunks (`storage.resident_bytes_max` bounds them).
    pub resident_series: u64,
    pub resident_bytes: u64,
    /// Series not built now (`storage::seriesmap`): their catalog entry and rows only,
    /// since the open or back to sleep.
    pub dormant_series: u64,
    /// Built series that went back to sleep since the open ([`Store::sleep_idle`]).
    pub slept_series: u64,
}

/// What one fold pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldReport {
    pub series: u64,
    pub failed: u64,
    pub segments_removed: u64,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, recovering every series.
    pub fn open(root: impl AsRef<Path>, mut opts: StoreOptions) -> Result<Store> {
        opts.map_cache = mapcache::MapCache::with_decompressed(
            opts.max_mapped_files,
            opts.zonemap_cache_bytes,
            opts.decompressed_cache_bytes,
        );
        opts.unfolded_bytes = Arc::default();
        // Zero until the log is replayed: a replayed version's commit time is unknown.
        opts.versions = Arc::default();
        let opts = Arc::new(opts);
        let root = root.as_ref().to_path_buf();
        let io = |what: &str| {
            let what = what.to_string();
            move |e| StorageError::io(what, e)
        };
        let fresh = !root.join("series").is_dir();
        fsio::create_dir_durable(&root.join("series")).map_err(io("series"))?;
        let lock = lock_root(&root)?;
        // Before anything in the store is read or written: a newer store is refused.
        let format_found = upgrade::read(&root)?;
        let trash = root.join("trash");
        if trash.exists() {
            fs::remove_dir_all(&trash).map_err(io("trash"))?;
            fsio::fsync_dir(&root).map_err(io("."))?;
        }
        let local_copies = localcopy::LocalCopies::open(&root, opts.local_copy_bytes)?;
        let mut recovery = Vec::new();
        let mut unopenable = Vec::new();
        let (named, decoded, mut pins) = named::Named::open(&root)?;
        let opened_ts = now_ms();
        let histories = versions::read(&root, opts.keep_versions_ms, opened_ts, &mut pins)?;
        let (catalog, listed, mut catalog_open) = catalog::Catalog::open(&root)?;
        // One walk of `series/` finds every directory: the checks below look in it
        // rather than asking the file system once per listed series.
        let mut dirs = Vec::new();
        collect_series_dirs(&root.join("series"), &mut Vec::new(), &mut dirs)
            .map_err(|e| StorageError::io("series", e))?;
        let mut on_disk: HashSet<String> =
            dirs.iter().map(|(parts, _)| series_rel(parts)).collect();
        // A directory of a series the catalog lists that has no MANIFEST is a first
        // commit to files that never finished: the catalog's entry is the series.
        for m in &listed {
            let rel = format!("series/{}", m.meta.key);
            if !on_disk.contains(&rel) {
                continue;
            }
            if let Some(notes) = set_aside_first_commit(&root, &rel, opened_ts)? {
                recovery.push(notes);
                on_disk.remove(&rel);
            }
        }
        dirs.retain(|(parts, _)| on_disk.contains(&series_rel(parts)));
        let entries = load_all(dirs, &opts, &pins, &mut recovery, &mut unopenable)?;
        // Series the catalog registers that have no directory (one that exists but
        // did not open is not hidden behind an empty series).
        let listed: Vec<format::Manifest> = if entries.is_empty() && on_disk.is_empty() {
            // No series has a directory (a store of small series only): every listed
            // one stays, with no key formatted or hashed to find that out.
            listed
        } else {
            let loaded: HashSet<&SeriesKey, foldhash::fast::RandomState> =
                entries.iter().map(|(k, _)| k).collect();
            listed
                .into_iter()
                .filter(|m| {
                    let k = &m.meta.key;
                    !loaded.contains(k) && !on_disk.contains(&format!("series/{k}"))
                })
                .collect()
        };
        drop(on_disk);
        catalog_open.compacted = catalog.shed_garbage(&listed)?;
        let dormant = catalog_seeds(&catalog, listed, opened_ts)?;
        let ctx = seriesmap::BuildContext {
            root: root.clone(),
            opts: Arc::clone(&opts),
            born: series::registration_stamp(),
        };
        let map = SeriesMap::from_entries(entries, dormant, ctx);
        // Before the replay: the states snapshots and kept versions pin share the
        // handles of the chunks the manifests list, before any replayed write can
        // supersede them (a dormant series a snapshot holds is built for it).
        let mut extra = named::Extra::new();
        named.attach(decoded, |k| map.get(k), &mut extra);
        let attached = attach_histories(&map, histories, &mut extra);
        drop(extra);
        let (wal, wal_recovery) = replay(&root, &opts, &map)?;
        versions::restore(attached, &map.built(), opened_ts);
        opts.versions.set_keep_ms(opts.keep_versions_ms);
        // The store opened whole: only now is it marked as this binary's format.
        let upgraded = upgrade::finish(&root, &catalog, format_found, fresh)?;
        let store = Store {
            root,
            opts,
            _lock: lock,
            series: Arc::new(RwLock::new(map)),
            recovery,
            unopenable,
            wal_recovery,
            wal: Arc::new(wal),
            threads: std::sync::Mutex::new(Vec::new()),
            abandoned: std::sync::atomic::AtomicBool::new(false),
            named,
            catalog: Arc::new(catalog),
            catalog_open,
            upgraded,
            local_copies,
            slept: Arc::default(),
        };
        store.start_threads()?;
        Ok(store)
    }

    fn start_threads(&self) -> Result<()> {
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| StorageError::io("wal", e))
        };
        let w = Arc::clone(&self.wal);
        let committer = spawn("fastk-wal", Box::new(move || w.run()))?;
        let w = Arc::clone(&self.wal);
        let map = Arc::clone(&self.series);
        let root = self.root.clone();
        let settings = Arc::clone(&self.opts.versions);
        let into_catalog = self.catalog_fold();
        let dormant_after = self.opts.dormant_after;
        let slept = Arc::clone(&self.slept);
        let folder = spawn(
            "fastk-fold",
            Box::new(move || {
                let mut last_checkpoint = std::time::Instant::now();
                let mut last_sweep = std::time::Instant::now();
                while !w.is_stopping() {
                    w.wait_fold(w.opts.fold_interval);
                    if w.is_stopping() {
                        break;
                    }
                    fold_pass(&map, &w, &into_catalog, false);
                    if last_checkpoint.elapsed() >= versions::CHECKPOINT_EVERY {
                        last_checkpoint = std::time::Instant::now();
                        checkpoint_versions(&root, &map, &settings);
                    }
                    if let Some(after) = dormant_after
                        && last_sweep.elapsed() >= after
                    {
                        last_sweep = std::time::Instant::now();
                        let n = sleep_idle(&map);
                        slept.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }),
        );
        let mut threads = self.threads.locked();
        threads.push(committer);
        match folder {
            Ok(f) => threads.push(f),
            Err(e) => {
                drop(threads);
                self.wal.stop();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Closes the store the way a crash would: the threads stop, and nothing held in
    /// memory is folded, so the next open replays the log. For crash tests.
    #[doc(hidden)]
    pub fn abandon(self) {
        self.abandoned.store(true, Ordering::SeqCst);
        drop(self);
    }

    /// What opening the series catalog found (a torn tail dropped, garbage shed).
    pub fn catalog_recovery(&self) -> &catalog::CatalogOpen {
        &self.catalog_open
    }

    /// The upgrade of the store's format this open made, if it made one.
    pub fn upgraded(&self) -> Option<upgrade::Upgraded> {
        self.upgraded
    }

    /// What replaying the write-ahead log did on open.
    pub fn wal_recovery(&self) -> &WalRecovery {
        &self.wal_recovery
    }

    /// Why the write-ahead log refuses writes, if it does (for `/health`).
    pub fn wal_poisoned(&self) -> Option<String> {
        self.wal.poisoned()
    }

    /// The log's size and what waits in memory to be folded.
    pub fn wal_stats(&self) -> WalStats {
        let mut st = WalStats {
            bytes: self.wal.bytes(),
            segments: self.wal.segments() as u64,
            committed_lsn: self.wal.committed_lsn(),
            syncs: self.wal.sync_counts().0,
            records: self.wal.sync_counts().1,
            slept_series: self.slept.load(Ordering::Relaxed),
            ..WalStats::default()
        };
        let mut oldest: Option<std::time::Instant> = None;
        self.series.read_now().peek_each(|p| match p {
            seriesmap::Peek::Built(s) => {
                if let Some(u) = s.snapshot().unfolded {
                    st.unfolded_rows += u.rows;
                    st.unfolded_bytes += u.bytes;
                    st.unfolded_series += 1;
                    oldest = Some(oldest.map_or(u.since, |o| o.min(u.since)));
                } else if !s.is_materialized() {
                    let snap = s.snapshot();
                    if !snap.live.is_empty() {
                        st.resident_series += 1;
                        st.resident_bytes += snap.chunks().map(|c| c.entry.file_len).sum::<u64>();
                    }
                }
            }
            seriesmap::Peek::Dormant(seed) => {
                st.dormant_series += 1;
                if !seed.months.is_empty() {
                    st.resident_series += 1;
                    st.resident_bytes += seed.memory_bytes();
                }
            }
        });
        st.fold_lag_ms = oldest.map_or(0, |o| o.elapsed().as_millis() as u64);
        st
    }

    /// Folds every series' memory rows now (small series with no directory into the
    /// catalog, the others into chunk files) and drops the log segments that no longer
    /// hold anything unfolded (`admin compact`, shutdown, tests).
    pub fn fold_all(&self) -> FoldReport {
        fold_pass(&self.series, &self.wal, &self.catalog_fold(), true)
    }

    /// Where the fold puts small series that have no directory.
    fn catalog_fold(&self) -> IntoCatalog {
        IntoCatalog {
            catalog: Arc::clone(&self.catalog),
            rows_max: self.opts.resident_rows_max,
            bytes_max: self.opts.resident_bytes_max,
        }
    }

    /// Writes `batch` to one series (any order; upsert) as one all-or-nothing write,
    /// at `expected` version when given. Up to `storage.wal_direct_rows` rows go
    /// through the write-ahead log (group commit); larger writes are written as chunk
    /// files directly, after the series' memory rows are folded.
    pub fn write(
        &self,
        series: &Arc<Series>,
        mut batch: WriteBatch,
        expected: Option<u64>,
    ) -> Result<WriteReport> {
        let bytes = wal::RECORD_HEADER_LEN + 512 + batch.cols.len() * batch.len() * 8;
        if batch.len() > self.opts.wal.direct_rows || bytes > self.opts.wal.max_record_bytes {
            return series.write(batch, expected);
        }
        series.prepare(&mut batch)?;
        let mut r = self
            .wal
            .submit(vec![(Arc::clone(series), batch, expected)])?;
        Ok(r.pop().expect("one report per series"))
    }

    /// Writes rows given in pieces (each piece: the series' columns, equal lengths) as
    /// one all-or-nothing write. A bulk write whose timestamps increase across the
    /// pieces is written from them in place ([`Series::write_pieces`]); anything else
    /// (a small write for the log, rows out of order) is gathered into one batch and
    /// goes through [`Store::write`], which checks and sorts it. Ragged pieces are
    /// refused.
    pub fn write_pieces(
        &self,
        series: &Arc<Series>,
        pieces: &[Vec<&[i64]>],
        expected: Option<u64>,
    ) -> Result<WriteReport> {
        let ncols = series.meta.key.kind().ncols();
        if let Some(p) = pieces
            .iter()
            .find(|p| p.len() != ncols || p.iter().any(|c| c.len() != p[0].len()))
        {
            return Err(StorageError::InvalidArgument(format!(
                "a {} write needs {ncols} columns of one length, got {} of lengths {:?}",
                series.meta.key.kind().as_str(),
                p.len(),
                p.iter().map(|c| c.len()).collect::<Vec<_>>()
            )));
        }
        let rows: usize = pieces.iter().map(|p| p[0].len()).sum();
        // A tick write is sorted, checked and numbered by `Series::write` (a missing
        // `seq` is a placeholder until then), never written in place.
        let tick = series.meta.key.kind().is_tick();
        if !tick && rows > self.opts.wal.direct_rows && series::pieces_in_order(pieces) {
            return series.write_pieces(pieces, expected);
        }
        let mut batch = WriteBatch::with_capacity(ncols, rows);
        for p in pieces {
            for (out, col) in batch.cols.iter_mut().zip(p) {
                out.extend_from_slice(col);
            }
        }
        self.write(series, batch, expected)
    }

    /// Writes rows of many series as one all-or-nothing write: one log record, one
    /// sync, every series' new state installed together. A series may appear once.
    pub fn write_many(&self, entries: Vec<(Arc<Series>, WriteBatch)>) -> Result<Vec<WriteReport>> {
        let mut seen: std::collections::HashSet<usize, foldhash::fast::RandomState> =
            std::collections::HashSet::with_capacity_and_hasher(entries.len(), Default::default());
        let mut rows = 0usize;
        let mut bytes = wal::RECORD_HEADER_LEN;
        let mut prepared = Vec::with_capacity(entries.len());
        if entries.len() > wal::MAX_RECORD_ENTRIES {
            return Err(StorageError::PayloadTooLarge(format!(
                "a write may name at most {} series, this one names {}",
                wal::MAX_RECORD_ENTRIES,
                entries.len()
            )));
        }
        for (series, mut batch) in entries {
            if !seen.insert(Arc::as_ptr(&series) as usize) {
                return Err(StorageError::InvalidArgument(format!(
                    "series {} appears twice in one write",
                    series.meta.key
                )));
            }
            series
                .prepare(&mut batch)
                .map_err(|e| e.about(&format!("symbol {}", series.meta.key.symbol())))?;
            rows += batch.len();
            bytes += 4 * 64 + batch.cols.len() * batch.len() * 8;
            prepared.push((series, batch, None));
        }
        if rows > self.opts.max_write_rows || bytes > self.opts.wal.max_record_bytes {
            return Err(StorageError::PayloadTooLarge(format!(
                "a many-series write may carry at most {} rows (storage.max_write_rows) and {} bytes of rows (storage.wal_max_record_bytes); this one has {rows} rows, about {bytes} bytes: split it",
                self.opts.max_write_rows, self.opts.wal.max_record_bytes
            )));
        }
        self.wal.submit(prepared)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// The raw copies of compressed chunks handed to co-located readers.
    pub fn local_copies(&self) -> &localcopy::LocalCopies {
        &self.local_copies
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
    /// One record in the store's catalog (`catalog`), durable before this returns;
    /// the series' directory is made by its first commit to files.
    pub fn register(&self, meta: SeriesMeta) -> Result<(Arc<Series>, bool)> {
        let mut out = self.register_many(vec![(meta, Settings::default())])?;
        Ok(out.pop().expect("one series registered"))
    }

    /// Registers many series at once: all or none. Series that exist identically are
    /// returned as they are (`false`; their retention is set when `retention_ms` is
    /// given, as [`Store::register`]'s caller does); different metadata under an
    /// existing key fails the whole batch before anything is made. The new series
    /// are one record of the store's catalog (one write and one fsync, all or none
    /// across a crash too): no directory and no file per series. A key given twice
    /// is refused.
    pub fn register_many(
        &self,
        metas: Vec<(SeriesMeta, Settings)>,
    ) -> Result<Vec<(Arc<Series>, bool)>> {
        let mut seen = std::collections::HashSet::new();
        for (m, settings) in &metas {
            check_meta(m)?;
            if settings.retention_ms.is_some_and(|r| r < 0) {
                return Err(StorageError::InvalidArgument(
                    "retention_ms must be 0 (keep forever) or a positive number of milliseconds"
                        .into(),
                ));
            }
            if !seen.insert(m.key.clone()) {
                return Err(StorageError::InvalidArgument(format!(
                    "series {} appears twice in one registration",
                    m.key
                )));
            }
        }
        // The map's write lock is held from the check to the insert: two
        // registrations of one key cannot both make it.
        let mut map = self.series.write_now();
        let mut out: Vec<Option<(Arc<Series>, bool)>> = vec![None; metas.len()];
        let mut new = Vec::new();
        for (i, (m, _)) in metas.iter().enumerate() {
            // A series whose delete is between its rename and its removal from the
            // map is already gone: register anew.
            match map.get(&m.key).filter(|s| !s.is_deleted()) {
                Some(s) if *s.meta == *m => out[i] = Some((s, false)),
                Some(s) => return Err(StorageError::Conflict(describe_conflict(&s.meta, m))),
                None => new.push(i),
            }
        }
        // Log records of an earlier series under a key (deleted) are all at or
        // before the committed lsn: replay must not apply them to the new one.
        let committed = self.wal.committed_lsn();
        let snaps: Vec<Snapshot> = new
            .iter()
            .map(|&i| {
                let (m, settings) = &metas[i];
                let mut snap = Snapshot::empty(Arc::new(m.clone()));
                snap.wal_lsn = committed;
                snap.retention_ms = settings.retention_ms.unwrap_or(0);
                snap.irregular = settings.irregular.unwrap_or(false);
                snap
            })
            .collect();
        let manifests: Vec<format::Manifest> = snaps.iter().map(Snapshot::to_manifest).collect();
        self.catalog.put(&manifests.iter().collect::<Vec<_>>())?;
        for (&i, snap) in new.iter().zip(snaps) {
            let meta = Arc::clone(&snap.meta);
            let rel = format!("series/{}", meta.key.rel_dir().display());
            let s = Arc::new(Series::new(
                Arc::clone(&meta),
                self.root.join(&rel),
                rel,
                Arc::clone(&self.opts),
                snap,
            ));
            s.set_unmaterialized();
            s.restore_history(series::History::new(s.version(), now_ms(), true));
            map.insert(meta.key.clone(), Arc::clone(&s));
            out[i] = Some((s, true));
        }
        drop(map);
        let out: Vec<(Arc<Series>, bool)> = out
            .into_iter()
            .map(|o| o.expect("every series is registered or existed"))
            .collect();
        for ((s, created), (_, settings)) in out.iter().zip(&metas) {
            if !created && *settings != Settings::default() {
                s.set_settings(settings.retention_ms, settings.irregular)?;
            }
        }
        Ok(out)
    }

    pub fn get(&self, key: &SeriesKey) -> Result<Arc<Series>> {
        self.series.read_now().get(key).ok_or_else(|| {
            StorageError::NotFound(format!(
                "{} series {key} is not registered",
                key.kind().as_str()
            ))
        })
    }

    /// The series of each key, in order, under one hold of the map's lock (a
    /// many-series write resolves thousands).
    pub fn get_many<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a SeriesKey>,
    ) -> Vec<Result<Arc<Series>>> {
        let map = self.series.read_now();
        keys.into_iter()
            .map(|key| {
                map.get(key).ok_or_else(|| {
                    StorageError::NotFound(format!(
                        "{} series {key} is not registered",
                        key.kind().as_str()
                    ))
                })
            })
            .collect()
    }

    /// Every series, ordered by key (a dormant one is built: see
    /// [`Store::list_built_and`] and [`Store::metas`] for what needs no state).
    pub fn list(&self) -> Vec<Arc<Series>> {
        self.series.read_now().all()
    }

    /// The series whose state is built, plus the dormant ones `pick` chooses (built
    /// now), ordered by key: for passes that a dormant series (no files, nothing
    /// unfolded, its rows in the catalog) concerns only sometimes.
    pub fn list_built_and(&self, pick: impl FnMut(&seriesmap::Seed) -> bool) -> Vec<Arc<Series>> {
        self.series.read_now().built_and(pick)
    }

    /// The metadata of every series, ordered by key, with no state built.
    pub fn metas(&self) -> Vec<SeriesMeta> {
        self.series.read_now().metas()
    }

    /// The series `pick` selects by metadata, ordered by key, each as it is now:
    /// built, or dormant with its row count (not built for this: listings that show a
    /// page of series build only the page, [`Store::get`]).
    pub fn listed(&self, mut pick: impl FnMut(&SeriesMeta) -> bool) -> Vec<Listed> {
        let mut out = Vec::new();
        self.series.read_now().peek_each(|p| match p {
            seriesmap::Peek::Built(s) => {
                if pick(&s.meta) {
                    out.push(Listed::Built(s));
                }
            }
            seriesmap::Peek::Dormant(seed) => {
                if pick(&seed.manifest.meta) {
                    out.push(Listed::Dormant {
                        meta: seed.manifest.meta.clone(),
                        rows: seed.rows(),
                    });
                }
            }
        });
        out
    }

    /// One sweep for idle series now (the fold thread makes one every
    /// `dormant_after`): each built series that no one asked for since the previous
    /// sweep, that the catalog holds whole and that no one holds goes back to sleep
    /// (`storage::seriesmap`). Returns how many did.
    pub fn sleep_idle(&self) -> u64 {
        let n = sleep_idle(&self.series);
        self.slept.fetch_add(n, Ordering::Relaxed);
        n
    }

    /// Series that went back to sleep since the open ([`Store::sleep_idle`]).
    pub fn slept_count(&self) -> u64 {
        self.slept.load(Ordering::Relaxed)
    }

    /// Whether the series of `key` is registered and dormant (not built now).
    pub fn is_dormant(&self, key: &SeriesKey) -> bool {
        self.series.read_now().is_dormant(key)
    }

    /// Series whose state is not built yet (`storage::seriesmap`): kept as their
    /// catalog entry and rows until first asked for.
    pub fn dormant_count(&self) -> usize {
        let mut n = 0;
        self.series.read_now().peek_each(|p| {
            if let seriesmap::Peek::Dormant(_) = p {
                n += 1;
            }
        });
        n
    }

    /// Rows over every series, with no state built.
    pub fn total_rows(&self) -> u64 {
        let mut rows = 0;
        self.series.read_now().peek_each(|p| {
            rows += match p {
                seriesmap::Peek::Built(s) => s.snapshot().rows(),
                seriesmap::Peek::Dormant(seed) => seed.rows(),
            }
        });
        rows
    }

    /// How many series the store holds ([`Store::list`]'s length, without the list).
    pub fn series_count(&self) -> usize {
        self.series.read_now().len()
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
        // No snapshot may take the series while it goes (creates hold this too).
        let _snapshots = self.named.change.locked();
        if let Some(name) = self.named.holder(key) {
            return Err(StorageError::Conflict(format!(
                "series {key} is held by snapshot {name}: delete the snapshot first"
            )));
        }
        let guard = series.lock_live()?;
        // The catalog's record first: a crash before the rename below leaves the
        // directory, which wins on open (the delete was not acknowledged).
        self.catalog.drop_series(&series.meta)?;
        if !series.is_materialized() {
            // No MANIFEST: at most a directory of uncommitted files (a first commit to
            // files that failed), removed with the series.
            let _ = fs::remove_dir_all(series.dir.as_path());
            series.mark_deleted(&guard);
            let mut map = self.series.write_now();
            if map.get_built(key).is_some_and(|s| Arc::ptr_eq(&s, &series)) {
                map.remove(key);
            }
            return Ok(());
        }
        let trash = self.root.join("trash");
        fsio::create_dir_durable(&trash).map_err(|e| StorageError::io("trash", e))?;
        let n = TRASH_COUNTER.fetch_add(1, Ordering::Relaxed);
        let target = trash.join(format!("{}-{n}", std::process::id()));
        fsio::rename(series.dir.as_path(), &target)
            .map_err(|e| StorageError::io(series.rel_dir.to_string(), e))?;
        series.mark_deleted(&guard);
        {
            let mut map = self.series.write_now();
            if map.get_built(key).is_some_and(|s| Arc::ptr_eq(&s, &series)) {
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
        // A dormant series has no files: its rows are in the catalog.
        self.series
            .read_now()
            .built()
            .iter()
            .map(|s| s.snapshot().bytes())
            .sum()
    }
}

/// A directory of `key` without a `MANIFEST`, when the catalog lists `key`: its first
/// commit to files (`Series::materialize` makes the directory, the commit's `MANIFEST`
/// rename is its commit point) never finished. Its files are uncommitted: moved to
/// `quarantine/<opened_ms>/` (nothing is deleted that an outside hand may have
/// damaged rather than a crash left), the empty directory removed. Returns what it
/// did, if anything.
fn set_aside_first_commit(root: &Path, rel: &str, opened_ms: i64) -> Result<Option<RecoveryNotes>> {
    let dir = root.join(rel);
    if dir.join(series::MANIFEST_NAME).exists() {
        return Ok(None);
    }
    let rel = rel.to_string();
    let io = |e| StorageError::io(rel.clone(), e);
    let mut notes = RecoveryNotes {
        series: rel.clone(),
        ..Default::default()
    };
    for entry in fs::read_dir(&dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().to_string();
        if recover::is_temp(&name) {
            fs::remove_file(entry.path()).map_err(io)?;
            notes.temp_files_removed += 1;
            continue;
        }
        let target = root
            .join("quarantine")
            .join(opened_ms.to_string())
            .join(&rel);
        fsio::create_dir_durable(&target).map_err(io)?;
        fsio::rename(&entry.path(), &target.join(&name)).map_err(io)?;
        notes.uncommitted_removed += 1;
    }
    fs::remove_dir(&dir).map_err(io)?;
    if let Some(parent) = dir.parent() {
        fsio::fsync_dir(parent).map_err(io)?;
    }
    tracing::warn!(series = %rel, files = notes.uncommitted_removed,
        "a first commit to files did not finish (no MANIFEST); its files are in quarantine/ and the catalog's entry stands");
    Ok(Some(notes))
}

impl Drop for Store {
    /// Stops the committer (queued writes are finished first) and the fold, then, with
    /// `fold_on_close`, folds what is left in memory, so a clean restart has no log to
    /// replay; without, the durable log keeps those rows for the next open.
    fn drop(&mut self) {
        self.wal.stop();
        for t in self.threads.locked().drain(..) {
            let _ = t.join();
        }
        if !self.abandoned.load(Ordering::SeqCst)
            && !self.opts.fold_on_close
            && self.opts.fold_small_on_close
        {
            let r = fold_small(&self.series, &self.wal, &self.catalog_fold());
            if r.failed > 0 {
                tracing::warn!(
                    failed = r.failed,
                    "some small series could not be folded into the catalog at close; the log keeps their rows"
                );
            }
        }
        if !self.abandoned.load(Ordering::SeqCst) && self.opts.fold_on_close {
            let r = fold_pass(&self.series, &self.wal, &self.catalog_fold(), true);
            if r.failed > 0 {
                tracing::warn!(
                    failed = r.failed,
                    "some series could not be folded at close; the log keeps their rows"
                );
            }
        }
        let (list, dormant) = versions_rows(&self.series.read_now());
        if !self.abandoned.load(Ordering::SeqCst)
            && let Err(e) = versions::write(&self.root, &list, &dormant)
        {
            tracing::warn!(error = %e,
                "the versions file could not be written: past versions since the last checkpoint are forgotten");
        }
        // The files of the kept versions stay for the next open, which pins those the
        // versions file names and sweeps the others (as after a crash, which unlinks
        // nothing).
        list.iter().for_each(|s| s.keep_version_files());
        // Last: the files only snapshots read stay for the next open, which pins them
        // again (their handles would unlink them as they go).
        self.named.close();
    }
}

/// Series a sweep takes under one hold of the map's write lock: readers and writers
/// look series up under its read lock, so a sweep of 100,000 series lets them in
/// between batches.
const SLEEP_BATCH: usize = 1024;

/// A sweep for idle series ([`Store::sleep_idle`]): the candidates under the map's
/// read lock, each one's state taken with no lock of the map held, then each put to
/// sleep under its write lock, a batch at a time, if nothing changed meanwhile
/// ([`SeriesMap::put_to_sleep`]). Returns how many slept.
fn sleep_idle(map: &RwLock<SeriesMap>) -> u64 {
    let idle = map.read_now().idle_candidates();
    if idle.is_empty() {
        return 0;
    }
    let mut slept = 0;
    for batch in idle.chunks(SLEEP_BATCH) {
        let states: Vec<_> = batch
            .iter()
            .map(|i| match i.series.sleep_state() {
                Ok(state) => state,
                Err(e) => {
                    tracing::warn!(series = %i.series.meta.key, error = %e, "could not take an idle series' rows; it stays built");
                    None
                }
            })
            .collect();
        if states.iter().all(Option::is_none) {
            continue;
        }
        let mut m = map.write_now();
        for (i, state) in batch.iter().zip(states) {
            if let Some(sleep) = state
                && m.put_to_sleep(i, sleep)
            {
                slept += 1;
            }
        }
    }
    // The batches' series go here, after the map's lock: their memory back to the
    // allocator, and from it to the system.
    drop(idle);
    if slept > 0 {
        mmap::release_free_memory();
        tracing::debug!(series = slept, "idle series went back to sleep");
    }
    slept
}

/// What the versions file is written from: the built series, and the history of each
/// dormant one (its commit time; a dormant series keeps no past version).
fn versions_rows(map: &SeriesMap) -> (Vec<Arc<Series>>, Vec<versions::Plain>) {
    let mut built = Vec::new();
    let mut dormant = Vec::new();
    map.peek_each(|p| match p {
        seriesmap::Peek::Built(s) => built.push(s),
        seriesmap::Peek::Dormant(seed) => dormant.push(versions::Plain {
            rel_dir: format!("series/{}", seed.manifest.meta.key),
            version: seed.manifest.version,
            committed_ts: seed.committed.0,
            exact: seed.committed.1,
        }),
    });
    (built, dormant)
}

/// Expires the past versions of every series past their time and, when some history
/// changed, writes the versions file (the fold thread, every
/// [`versions::CHECKPOINT_EVERY`]).
fn checkpoint_versions(root: &Path, map: &RwLock<SeriesMap>, settings: &series::VersionSettings) {
    if settings.keep_ms() == 0 && !settings.take_dirty() {
        return;
    }
    let (list, dormant) = versions_rows(&map.read_now());
    let now = now_ms();
    for s in &list {
        s.expire_versions(now);
    }
    if settings.take_dirty()
        && let Err(e) = versions::write(root, &list, &dormant)
    {
        tracing::warn!(error = %e, "the versions file could not be written; retried at the next checkpoint");
        // Try again next time.
        settings.mark_dirty_again();
    }
}

/// The series the catalog lists that have no directory (`listed`), each with the rows
/// its state record holds, as dormant seeds (built when first asked for).
fn catalog_seeds(
    catalog: &catalog::Catalog,
    listed: Vec<format::Manifest>,
    opened_ts: i64,
) -> Result<Vec<(SeriesKey, Box<seriesmap::Seed>)>> {
    let mut resident = catalog.take_resident();
    let mut out = Vec::with_capacity(listed.len());
    for m in listed {
        let key = m.meta.key.clone();
        let months = resident.remove(&key).unwrap_or_default();
        out.push((key, Box::new(seriesmap::Seed::new(m, months, opened_ts)?)));
    }
    // Rows of keys that have a directory now are the catalog's garbage.
    drop(resident);
    Ok(out)
}

/// Gives the versions file's histories to their series before the replay: a dormant
/// series with no kept version takes its commit time into its seed (and stays
/// dormant); the others are attached (`versions::attach`), a dormant one built for it.
fn attach_histories(
    map: &SeriesMap,
    histories: Vec<versions::DecodedHistory>,
    extra: &mut named::Extra,
) -> Vec<versions::Attached> {
    if histories.is_empty() {
        return Vec::new();
    }
    let built = map.built();
    let built_dirs: HashSet<&str, foldhash::fast::RandomState> =
        built.iter().map(|s| s.rel_dir()).collect();
    let mut rest = Vec::new();
    let mut woken = Vec::new();
    for h in histories {
        if built_dirs.contains(h.rel_dir()) {
            rest.push(h);
            continue;
        }
        let Some(key) = h.key() else {
            continue; // not a series directory: nothing to give it to
        };
        match h.plain() {
            Some((version, ts, exact)) if map.is_dormant(&key) => {
                map.with_seed(&key, |seed| {
                    if seed.manifest.version == version {
                        seed.committed = (ts, exact);
                    }
                });
            }
            _ => {
                if let Some(s) = map.get(&key) {
                    woken.push(s);
                    rest.push(h);
                }
            }
        }
    }
    let by_dir: HashMap<&str, &Arc<Series>, foldhash::fast::RandomState> = built
        .iter()
        .chain(&woken)
        .map(|s| (s.rel_dir(), s))
        .collect();
    versions::attach(rest, &by_dir, extra)
}

fn load_all(
    dirs: Vec<(Vec<String>, PathBuf)>,
    opts: &Arc<StoreOptions>,
    pins: &named::Pins,
    recovery: &mut Vec<RecoveryNotes>,
    unopenable: &mut Vec<(String, String)>,
) -> Result<Vec<(SeriesKey, Arc<Series>)>> {
    // Each directory is opened on its own (a listing, the manifest, the recovery
    // sweep), so a store of 100,000 series opens on several threads: the reads of
    // one wait on the disk while another decodes. Outcomes keep the listing's order.
    let next = AtomicUsize::new(0);
    let open_some = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((parts, dir)) = dirs.get(i) else {
                return done;
            };
            let rel = series_rel(parts);
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let outcome = match SeriesKey::from_parts(&refs) {
                Err(e) => Err((rel, e)),
                Ok(key) => {
                    match recover::open_series(dir.clone(), rel.clone(), opts, pins.get(&rel)) {
                        Ok((series, notes)) if series.meta.key == key => Ok((key, series, notes)),
                        Ok(_) => Err((rel, "manifest names a different series".into())),
                        Err(e) => Err((rel, e.to_string())),
                    }
                }
            };
            done.push((i, outcome));
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, OPEN_THREADS_MAX)
        .min(dirs.len().max(1));
    let mut outcomes = std::thread::scope(|scope| {
        // A helper that cannot be spawned only costs parallelism.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("fastk-open".into())
                    .spawn_scoped(scope, open_some)
                    .ok()
            })
            .collect();
        let mut all = open_some();
        for h in helpers {
            match h.join() {
                Ok(done) => all.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    outcomes.sort_unstable_by_key(|(i, _)| *i);
    assert_eq!(
        outcomes.len(),
        dirs.len(),
        "every series directory was opened once"
    );
    let mut opened = Vec::with_capacity(outcomes.len());
    for (_, outcome) in outcomes {
        match outcome {
            Ok((key, series, notes)) => {
                if !notes.is_quiet() {
                    recovery.push(notes);
                }
                opened.push((key, Arc::new(series)));
            }
            Err(bad) => unopenable.push(bad),
        }
    }
    Ok(opened)
}

/// Reads the log, cuts a torn tail, applies every record a series' manifest does not
/// hold yet, and opens the log for appending after the highest lsn seen anywhere.
/// Applies the entries of one log record to the series they name (those a manifest
/// already holds, and those of series gone, are skipped), counting them in `rec`.
fn replay_record(
    map: &SeriesMap,
    r: wal::Record,
    now: std::time::Instant,
    rec: &mut WalRecovery,
) -> Result<()> {
    for (key, mut batch) in r.entries {
        // A dormant series already holds every record up to its catalog state's lsn:
        // it is not built to skip one.
        if map
            .with_seed(&key, |seed| r.lsn <= seed.manifest.wal_lsn)
            .unwrap_or(false)
        {
            rec.skipped += 1;
            continue;
        }
        let Some(series) = map.get(&key) else {
            rec.skipped += 1;
            continue;
        };
        let guard = series.lock_live()?;
        let snap = series.snapshot();
        if r.lsn <= snap.wal_lsn {
            rec.skipped += 1;
            continue;
        }
        let key_cols: Vec<&[i64]> = batch.cols.iter().take(2).map(|c| &c[..]).collect();
        let sorted = keys_increase(series.meta.layout().key, &key_cols);
        if !sorted || batch.is_empty() {
            return Err(StorageError::corrupted(
                wal::WAL_DIR,
                format!("record {} holds rows of {key} that are not sorted", r.lsn),
            ));
        }
        let rows = batch.len() as u64;
        series
            .prepare(&mut batch)
            .map_err(|e| StorageError::corrupted(wal::WAL_DIR, format!("record {}: {e}", r.lsn)))?;
        let (next, _) = series.apply_logged(&snap, &batch, r.lsn, now)?;
        series.install_logged(&guard, Arc::new(next));
        rec.records += 1;
        rec.rows += rows;
    }
    Ok(())
}

fn replay(root: &Path, opts: &StoreOptions, map: &SeriesMap) -> Result<(wal::Wal, WalRecovery)> {
    let dir = root.join(wal::WAL_DIR);
    let now = std::time::Instant::now();
    let mut last = 0;
    map.peek_each(|p| {
        last = last.max(match p {
            seriesmap::Peek::Built(s) => s.snapshot().wal_lsn,
            seriesmap::Peek::Dormant(seed) => seed.manifest.wal_lsn,
        })
    });
    let mut rec = WalRecovery::default();
    // Each record is applied as it is read, and dropped: the log is never held whole in
    // memory (a corrupt record in the middle fails the open, which drops what was
    // applied before it with the series map).
    let scanned = wal::scan_each(&dir, true, |r| {
        last = last.max(r.lsn);
        replay_record(map, r, now, &mut rec)
    })?;
    let scan = match scanned {
        Ok(s) => s,
        Err(c) => {
            return Err(StorageError::corrupted(
                format!("{}/{}", wal::WAL_DIR, c.segment),
                format!(
                    "write-ahead log record at byte {} is corrupt ({}) and valid records follow it; \
                     `fastk admin repair --apply` cuts the log there (that record and every later one are lost: \
                     see docs/operations.md, \"Write-ahead log\")",
                    c.offset, c.detail
                ),
            ));
        }
    };
    rec.cut_tail = scan.cut_tail.clone();
    if let Some((seg, at, n)) = &scan.cut_tail {
        tracing::warn!(segment = %seg, offset = at, bytes = n, "cut a torn record off the end of the write-ahead log");
    }
    // A segment is named by its first lsn, so every lsn before it was given out, even
    // when no record of them is left: the segments before were removed once folded,
    // and their series may be gone too (deleted), so that no manifest holds their
    // lsns either. The next lsn must follow the name of an empty last segment, or the
    // next open finds a segment that starts past the records before it.
    for (first, _, _) in &scan.segments {
        last = last.max(first.saturating_sub(1));
    }
    if rec.records > 0 {
        tracing::info!(
            records = rec.records,
            rows = rec.rows,
            "replayed the write-ahead log"
        );
    }
    // A manifest ahead of the log's last record (a store restored from a backup, a log
    // cut by `admin repair`, a series registered after the last record) would leave a
    // hole in the lsn sequence between the old segments and the new one, which the
    // next open takes for a lost segment. So then everything replayed is folded now and
    // the old segments go: the log starts afresh after `last`.
    let log_end = scan.segments.iter().filter(|s| s.2 > 0).map(|s| s.1).max();
    let mut segments = scan.segments.clone();
    if log_end.is_some_and(|end| end < last) {
        // Only what the log holds: rows the catalog keeps (`storage::resident`) are
        // durable without it.
        for s in map
            .built()
            .iter()
            .filter(|s| s.snapshot().unfolded.is_some())
        {
            s.fold()?;
        }
        for (first, _, _) in &segments {
            let name = wal::segment_name(*first);
            fs::remove_file(dir.join(&name))
                .map_err(|e| StorageError::io(format!("{}/{name}", wal::WAL_DIR), e))?;
        }
        fsio::fsync_dir(&dir).map_err(|e| StorageError::io(wal::WAL_DIR, e))?;
        tracing::info!(log_end = ?log_end, last, "the manifests are ahead of the log: folded and started the log afresh");
        segments.clear();
    }
    let wal = wal::Wal::open(
        &dir,
        opts.wal.clone(),
        Arc::clone(&opts.unfolded_bytes),
        last,
        &segments,
    )?;
    Ok((wal, rec))
}

/// The catalog and limits of the catalog fold (`storage::resident`).
struct IntoCatalog {
    catalog: Arc<catalog::Catalog>,
    rows_max: u64,
    bytes_max: u64,
}

/// One pass of the background fold: folds each series whose memory rows passed a
/// threshold (rows, age, the memory budget, or records in a closed segment when the
/// log is over its size), every series with `all`, then removes the segments nothing
/// unfolded needs.
fn fold_pass(
    map: &RwLock<SeriesMap>,
    w: &wal::Wal,
    into_catalog: &IntoCatalog,
    all: bool,
) -> FoldReport {
    let committed = w.committed_lsn();
    // A dormant series has nothing unfolded, so nothing to fold; with the catalog fold
    // off (a publishing primary), the rows it holds go to its directory (below).
    let (list, dormant_bytes) = {
        let map = map.read_now();
        let list = if into_catalog.rows_max == 0 {
            map.built_and(|seed| !seed.months.is_empty())
        } else {
            map.built()
        };
        (list, map.dormant_memory_bytes())
    };
    let o = &w.opts;
    // Past the soft limit every series is folded; past the hard one (twice it) the
    // committer is already holding writers until this pass brings it back under.
    let over_memory = w.unfolded_bytes() > o.memory_bytes;
    let open_first = w.open_segment_first();
    let over_log = w.bytes() > o.max_log_bytes;
    let due: Vec<&Arc<Series>> = list
        .iter()
        .filter(|s| {
            let snap = s.snapshot();
            // With the catalog fold off (a publishing primary), rows the catalog
            // kept (in memory, nothing unfolded) go to directories, which replicas
            // ship; logged rows wait for the thresholds below as always.
            if into_catalog.rows_max == 0
                && snap.unfolded.is_none()
                && !s.is_materialized()
                && !snap.live.is_empty()
            {
                return true;
            }
            snap.unfolded.is_some_and(|u| {
                all || over_memory
                    || u.rows >= o.fold_rows
                    || u.since.elapsed() >= o.fold_age
                    || (over_log && u.first_lsn < open_first)
            })
        })
        .collect();
    // Small series with no directory fold into the catalog, a few records for all of
    // them; the rest fold into files.
    let mut resident = resident::ResidentFold::default();
    let due = if into_catalog.rows_max > 0 && due.iter().any(|s| !s.is_materialized()) {
        let held = resident::held_bytes(&list) + dormant_bytes;
        let unfolded: u64 = due
            .iter()
            .filter(|s| !s.is_materialized())
            .filter_map(|s| s.snapshot().unfolded.map(|u| u.bytes))
            .sum();
        // What the catalog series hold once these are folded: their resident rows
        // (held, less what is unfolded) plus what each folded series brings.
        let room = into_catalog
            .bytes_max
            .saturating_sub(held.saturating_sub(unfolded));
        let (take, rest) = resident::split_due(due, into_catalog.rows_max, room);
        resident = resident::fold_into_catalog(&into_catalog.catalog, &take);
        rest
    } else {
        due
    };
    // A fold is one small commit that waits on the disk (a chunk file, the directory and
    // the manifest fsynced): `fold_threads` of them at once share the device's queue, so
    // a pass over many series (the minute after a feed wrote every symbol) costs about
    // one fold time per `fold_threads` series instead of one per series.
    let folded = AtomicU64::new(resident.folded);
    let failed = AtomicU64::new(resident.failed);
    // A background pass of a stopping store ends early: what it has not folded is in
    // the durable log, and a stop should not wait for it.
    let stop = || !all && w.is_stopping();
    parallel::map_in_order(
        &due,
        o.fold_threads,
        "fastk-fold-helper",
        stop,
        |_, s| match s.fold() {
            Ok(_) => {
                folded.fetch_add(1, Ordering::Relaxed);
            }
            Err(StorageError::NotFound(_)) => {}
            Err(e) => {
                tracing::error!(series = %s.meta.key, error = %e, "fold failed; the rows stay in the log and in memory");
                failed.fetch_add(1, Ordering::Relaxed);
            }
        },
    );
    FoldReport {
        series: folded.into_inner(),
        failed: failed.into_inner(),
        segments_removed: remove_folded_segments(&list, w, committed),
    }
}

/// Removes the log segments that hold nothing `list` (every built series) still has
/// unfolded, up to `committed`; returns how many went.
fn remove_folded_segments(list: &[Arc<Series>], w: &wal::Wal, committed: u64) -> u64 {
    let mut keep_from = committed + 1;
    for s in list {
        if let Some(u) = s.snapshot().unfolded
            && !s.is_deleted()
        {
            keep_from = keep_from.min(u.first_lsn);
        }
    }
    match w.remove_folded(keep_from) {
        Ok(n) => n as u64,
        Err(e) => {
            tracing::error!(error = %e, "could not remove a folded log segment");
            0
        }
    }
}

/// The clean stop's fold of small series (`storage.fold_small_on_stop`): every series
/// with no directory whose unfolded rows the catalog can take (`resident_rows_max`,
/// within `resident_bytes_max`) is written into the catalog in a few state records,
/// so the next start has nothing of theirs to replay and leaves them dormant. The
/// others keep their rows in the log. One bulk write, not a fold per series.
fn fold_small(map: &RwLock<SeriesMap>, w: &wal::Wal, into_catalog: &IntoCatalog) -> FoldReport {
    if into_catalog.rows_max == 0 {
        return FoldReport::default();
    }
    let committed = w.committed_lsn();
    let (list, dormant_bytes) = {
        let map = map.read_now();
        (map.built(), map.dormant_memory_bytes())
    };
    let due: Vec<&Arc<Series>> = list
        .iter()
        .filter(|s| !s.is_materialized() && s.snapshot().unfolded.is_some())
        .collect();
    if due.is_empty() {
        return FoldReport::default();
    }
    let held = resident::held_bytes(&list) + dormant_bytes;
    let unfolded: u64 = due
        .iter()
        .filter_map(|s| s.snapshot().unfolded.map(|u| u.bytes))
        .sum();
    let room = into_catalog
        .bytes_max
        .saturating_sub(held.saturating_sub(unfolded));
    let (take, _rest) = resident::split_due(due, into_catalog.rows_max, room);
    let r = resident::fold_into_catalog(&into_catalog.catalog, &take);
    // The records just appended replaced earlier entries of the same series: the
    // rewrite without them is done here rather than by the next open.
    if r.folded > 0
        && let Err(e) = into_catalog.catalog.compact_if_garbage()
    {
        tracing::warn!(error = %e, "could not rewrite the catalog without its garbage at close; the next open does");
    }
    FoldReport {
        series: r.folded,
        failed: r.failed,
        segments_removed: remove_folded_segments(&list, w, committed),
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
/// A series directory's path relative to the root (`series/<parts joined by />`).
fn series_rel(parts: &[String]) -> String {
    format!("series/{}", parts.join("/"))
}

fn collect_series_dirs(
    dir: &Path,
    parts: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, PathBuf)>,
) -> std::io::Result<()> {
    let depth = match parts
        .first()
        .map(|k| k.parse::<crate::record::SeriesKind>())
    {
        Some(Ok(kind)) => kind.key_parts(),
        Some(Err(_)) => return Ok(()),
        None => 0,
    };
    if depth > 0 && parts.len() == depth {
        out.push((parts.clone(), dir.to_path_buf()));
        return Ok(());
    }
    // The entry's type comes with the listing (no stat per directory); a symbolic
    // link is followed, as before.
    let mut names: Vec<_> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| match e.file_type() {
            Ok(t) if t.is_symlink() => e.path().is_dir(),
            Ok(t) => t.is_dir(),
            Err(_) => false,
        })
        .collect();
    names.sort_by_key(|e| e.file_name());
    for e in names {
        parts.push(e.file_name().to_string_lossy().to_string());
        collect_series_dirs(&e.path(), parts, out)?;
        parts.pop();
    }
    Ok(())
}

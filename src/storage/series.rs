//! One series: its directory, its current snapshot, and its single-writer write path.
//!
//! A write sorts the request, splits it by month, and per month either appends a
//! delta chunk (all new rows after the month's last ts) or rewrites the month
//! copy-on-write (replacements, out-of-order rows, or too many deltas). New files are
//! published first; the manifest rename is the commit point; superseded files are
//! unlinked once no snapshot refers to them.
//!
//! A `Series` value is one incarnation of its key: once [`Store::delete`] has marked it
//! deleted (under the writer lock, before the directory moves), every writer that
//! still holds the old handle fails `NotFound` at the lock and writes nothing, so it
//! can never publish into the directory of a newer series registered under the same
//! key.
//!
//! The write path's steps are one file each under `series/`: `write` (checks, sort,
//! month split), `plan` (append or rewrite, per month), `publish` (a commit's files),
//! `commit` (the manifest, the new state, the unlinks), `checks` (commit-point
//! assertions); `fold` (the logged path into memory, then into files), `rewrite`
//! (compaction, compression, range delete, settings), `sealed` (sealed months
//! compressed as they are written), `followed` (a replica's commit), `history` (kept
//! versions).
//!
//! [`Store::delete`]: super::Store::delete

use crate::sync::{LockExt, RwLockExt};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use smallvec::SmallVec;

use super::StoreOptions;
use super::chunk::{ChunkRef, FileKind, data_file_name};
use super::error::{Result, StorageError};
use super::format::{
    CHUNK_HEADER_LEN, COLUMN_ALIGN, ChunkEntry, ChunkHeader, ChunkParts, FLAG_COMPRESSED,
    FLAG_FULL, STATE_LIVE, STATE_OBSOLETE, SidecarRef, align_up, stride_of,
};
use super::fsio::{self, failpoints};
use super::pack::{PackEntry, PackIndex, pack_file_name};
use super::sidecar;

use super::snapshot::Snapshot;
use crate::record::{
    KeyShape, MonthPartition, Partitioning, SEQ_UNASSIGNED, SeriesKind, SeriesMeta, TsRange,
    keys_increase, partition_label, row_key,
};

mod checks;
mod commit;
mod fold;
mod followed;
mod history;
mod pipeline;
mod plan;
mod publish;
mod resident;
pub use resident::SleepState;
mod rewrite;
mod sealed;
mod write;
pub(super) use checks::assert_next;
use checks::{assert_entries, assert_packs, assert_plans};
pub(crate) use commit::live_map;
use fold::unfolded_bytes;
pub use history::{Found, History, Kept, MAX_KEPT_VERSIONS, Pick, VersionInfo, VersionSettings};
use publish::sidecar_ref;
use write::{MonthRuns, check_expected, push_row};
pub use write::{month_groups, pieces_in_order, sort_and_check_duplicates};
pub(in crate::storage) use write::{needs_seq, numbered, numbered_append};

/// Name of the manifest file in a series directory.
pub const MANIFEST_NAME: &str = "MANIFEST";

/// One column of a [`WriteBatch`]. A row sits inline: a many-series write carries one
/// row of each of thousands of series, and a vector per column would be six or seven
/// allocations per series and request, made by the handler and freed by the log's
/// reaper on another thread (a large share of what the reaper frees).
pub type Column = SmallVec<[i64; 1]>;

/// Column-major rows to write: `cols[0]` is `ts`, then the record's other fields in
/// schema order (kline: open, high, low, close, volume; scalar: value bits). The columns
/// sit inline too (at most [`MAX_NCOLS`]): a one-row write allocates nothing.
#[derive(Debug, Default, PartialEq)]
pub struct WriteBatch {
    pub cols: SmallVec<[Column; MAX_NCOLS]>,
}

/// A copy column by column in one `memcpy` each (`SmallVec`'s own `clone` copies
/// element by element: a tick write's `seq` numbering copies its batch, and those
/// copies were about a tenth of the server's time on a live feed).
impl Clone for WriteBatch {
    fn clone(&self) -> WriteBatch {
        WriteBatch {
            cols: self.cols.iter().map(|c| Column::from_slice(c)).collect(),
        }
    }
}

impl WriteBatch {
    pub fn with_capacity(ncols: usize, rows: usize) -> WriteBatch {
        WriteBatch {
            cols: (0..ncols).map(|_| Column::with_capacity(rows)).collect(),
        }
    }

    /// The columns as vectors (tests compare a read with what was written).
    pub fn to_vecs(&self) -> Vec<Vec<i64>> {
        self.cols.iter().map(|c| c.to_vec()).collect()
    }

    /// A batch of these columns (each moved in, not copied).
    pub fn from_cols(cols: Vec<Vec<i64>>) -> WriteBatch {
        WriteBatch {
            cols: cols.into_iter().map(Column::from_vec).collect(),
        }
    }
    pub fn len(&self) -> usize {
        self.cols.first().map_or(0, |c| c.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a committed write did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WriteReport {
    pub written: u64,
    pub inserted: u64,
    pub replaced: u64,
    /// Months touched, ascending (labelled `YYYY-MM` in answers; the label is made
    /// only where it is shown: a many-series write answers without it). Two sit
    /// inline: a many-series write makes a report per series, mostly of one month.
    pub months: SmallVec<[MonthPartition; 2]>,
    pub version: u64,
}

/// What a range delete removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteReport {
    pub deleted: u64,
    /// Months touched (dropped or rewritten), `YYYY-MM`, ascending.
    pub months: Vec<String>,
    pub version: u64,
}

/// Which manifest is on disk after a failed [`Series::publish_manifest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnDisk {
    /// The state before the commit (`durable`: known to have reached the disk).
    Previous { durable: bool },
    /// The new state: it must be served, though the commit was refused.
    Next,
}

/// A registered series.
#[derive(Debug)]
pub struct Series {
    pub meta: Arc<SeriesMeta>,
    pub(crate) dir: Arc<PathBuf>,
    pub(crate) rel_dir: Arc<str>,
    /// The store's options, one copy shared by every series (100,000 series held a
    /// copy each).
    pub(crate) opts: Arc<StoreOptions>,
    write_lock: Mutex<()>,
    /// Set by `Store::delete` under `write_lock`: this incarnation is gone, and its
    /// directory path may already belong to a newer one.
    deleted: AtomicBool,
    /// The series' `MANIFEST` exists (in its directory). A series registered
    /// through the store's catalog has none until its first commit to files renames
    /// one into place (`publish_manifest_over`); until then the catalog's entry is its
    /// recorded state. Changed only under `write_lock`.
    materialized: AtomicBool,
    /// Shared by the chunk and pack handles of this incarnation, ended with it, so a
    /// superseded file's last reader never unlinks a newer incarnation's file.
    incarnation: Arc<super::chunk::Incarnation>,
    /// When this incarnation was made, on the process-wide count of series made
    /// ([`registration_stamp`]): a write that began at stamp `s` may only land in a
    /// series with `born <= s`, never in one registered after it began.
    born: u64,
    current: RwLock<Arc<Snapshot>>,
    /// The manifest as last published: what a failed commit puts back. It differs from
    /// `current` while log rows wait in memory to be folded.
    on_disk: Mutex<super::format::Manifest>,
    /// The pack files the chunk handles of this series share (see `pack::PackFile`).
    packs: Mutex<std::collections::HashMap<u64, std::sync::Weak<super::pack::PackFile>>>,
    /// Where this series' one-row appends sit on the merge schedule of its in-memory
    /// tail (a hash of its directory): series that all get a row each minute merge
    /// their tails at different writes, not all at the 16th, 32nd... one together
    /// (see [`Series::tail_merge`]).
    merge_phase: u64,
    /// The current version's commit time and the past versions kept readable
    /// (`history`); locked after `current`, never before it.
    history: Mutex<History>,
    /// Handles of chunks this series superseded that some reader may still hold (their
    /// files go with the last one). A followed snapshot that needs such a file shares
    /// the handle instead of making a second one that would unlink it too early.
    retired: Mutex<std::collections::HashMap<(i32, u64), std::sync::Weak<ChunkRef>>>,
}

/// One month's share of a write, planned before any file is written. An append
/// borrows its rows from the request; a rewrite owns the merged month.
pub(super) struct MonthPlan<'a> {
    month: i32,
    generation: u64,
    full: bool,
    cols: Vec<Cow<'a, [i64]>>,
    /// A month that spans pieces of a write ([`Series::write_pieces`]): each column's
    /// runs, in order, with `cols` empty. The runs are joined only when the chunk is
    /// built, into a writer thread's reused buffer ([`MonthPlan::columns`]), so a
    /// bulk load never holds a second copy of its rows.
    split: Vec<Vec<&'a [i64]>>,
    inserted: u64,
    replaced: u64,
    /// Written compressed, and how hard (a sealed month, see `storage::codec`).
    compressed: Option<super::codec::Effort>,
}

impl MonthPlan<'_> {
    fn rows(&self) -> usize {
        match self.split.first() {
            Some(runs) => runs.iter().map(|r| r.len()).sum(),
            None => self.cols[0].len(),
        }
    }

    fn ncols(&self) -> usize {
        if self.split.is_empty() {
            self.cols.len()
        } else {
            self.split.len()
        }
    }

    /// The month's columns; a split month's runs are joined into `scratch`, whose
    /// buffers keep their capacity from one month to the next.
    fn columns<'s>(&'s self, scratch: &'s mut Vec<Vec<i64>>) -> Vec<&'s [i64]> {
        if self.split.is_empty() {
            return self.cols.iter().map(|c| &**c).collect();
        }
        scratch.resize_with(self.split.len(), Vec::new);
        for (out, runs) in scratch.iter_mut().zip(&self.split) {
            out.clear();
            for r in runs {
                out.extend_from_slice(r);
            }
        }
        let cols: Vec<&[i64]> = scratch[..self.split.len()].iter().map(|c| &c[..]).collect();
        debug_assert!(cols.iter().all(|c| c.len() == self.rows()));
        cols
    }
}

/// A run of a commit's plans written as one pack file (`pipeline::PackCutter`).
pub(super) struct WritePack {
    /// The plans it holds (two or more, consecutive).
    plans: std::ops::Range<usize>,
    /// The pack's generation: past every chunk generation of the commit.
    generation: u64,
}

/// A writer thread's buffers for joining split months: per month of a unit, per
/// column (see [`MonthPlan::columns`]).
type Scratch = Vec<Vec<Vec<i64>>>;

/// One month's chunk as built for writing: a raw chunk's bytes (borrowing the plan's
/// columns) and sidecars, or a sealed month compressed before the write was laid out
/// ([`sealed::SealedChunk`]).
enum BuiltChunk<'p> {
    Raw {
        // Boxed: the encoded header alone is 512 bytes, and a pack's months are
        // built into one vector.
        raw: Box<ChunkParts<'p>>,
        // Built before the month was placed ([`sealed::prebuild_one`]), or here
        // for a month across pieces.
        sidecars: Cow<'p, sidecar::Sidecars>,
    },
    Sealed(&'p sealed::SealedChunk),
}

impl BuiltChunk<'_> {
    fn header(&self) -> &ChunkHeader {
        match self {
            BuiltChunk::Raw { raw, .. } => &raw.header,
            BuiltChunk::Sealed(s) => &s.header,
        }
    }

    fn sidecars(&self) -> &sidecar::Sidecars {
        match self {
            BuiltChunk::Raw { sidecars, .. } => sidecars,
            BuiltChunk::Sealed(s) => &s.sidecars,
        }
    }

    /// The chunk's bytes, in order.
    fn slices(&self) -> Vec<&[u8]> {
        match self {
            BuiltChunk::Raw { raw, .. } => raw.slices(),
            BuiltChunk::Sealed(s) => vec![&s.header_bytes[..], &s.body[..]],
        }
    }

    /// The manifest entry of the chunk, stored at `pack`.
    fn entry(&self, pack: super::format::PackLoc) -> ChunkEntry {
        let side = |b: &Option<Vec<u8>>| b.as_deref().map_or_else(SidecarRef::default, sidecar_ref);
        let sidecars = self.sidecars();
        ChunkEntry::live(
            self.header(),
            side(&sidecars.zonemap),
            side(&sidecars.vindex),
            pack,
        )
    }
}

/// What one commit lays out: its plans, the packs among them, and each plan's chunk
/// when it was compressed before the layout.
type Layout<'a, 'p> = (&'a [MonthPlan<'p>], &'a [WritePack], &'a [sealed::Prebuilt]);

/// Zeros for the padding between the aligned parts of a pack.
static PAD: [u8; COLUMN_ALIGN] = [0; COLUMN_ALIGN];

/// The pieces an append joins into one in-memory chunk (the merged chunks of the
/// month's tail, then the new rows), on the stack up to a tail's usual length: a
/// many-series write appends to thousands of series, and a vector here was one more
/// allocation per series, freed by another thread.
type Pieces<T> = smallvec::SmallVec<[T; 8]>;

/// Rows and bytes (laid out as files) of the in-memory chunks of one month's list.
fn memory_totals(list: &[Arc<ChunkRef>]) -> (u64, u64) {
    list.iter()
        .filter(|c| c.is_memory())
        .fold((0, 0), |(r, b), c| (r + c.entry.rows, b + c.entry.file_len))
}

/// Series made (opened or registered) by this process so far.
static SERIES_MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The count of series made so far: taken when a write begins (a request arrives, a
/// DoPut stream opens), it tells the series that existed then from any registered
/// after ([`Series::born`]).
pub fn registration_stamp() -> u64 {
    SERIES_MADE.load(Ordering::SeqCst)
}

impl Series {
    /// Absolute directory of the series.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// This incarnation's place on the count of [`registration_stamp`].
    pub fn born(&self) -> u64 {
        self.born
    }

    /// A series built after its open from what the open read (`storage::seriesmap`) is
    /// as old as that open (`born`, the stamp then): a write that began after the open
    /// finds it the series it was for.
    pub(in crate::storage) fn set_born(&mut self, born: u64) {
        assert!(
            born <= self.born,
            "a series is stamped no later than it is built"
        );
        self.born = born;
    }

    pub(crate) fn new(
        meta: Arc<SeriesMeta>,
        dir: PathBuf,
        rel_dir: String,
        opts: Arc<StoreOptions>,
        snap: Snapshot,
    ) -> Series {
        let version = snap.version;
        let series = Series {
            meta,
            dir: Arc::new(dir),
            rel_dir: rel_dir.as_str().into(),
            opts,
            write_lock: Mutex::new(()),
            deleted: AtomicBool::new(false),
            materialized: AtomicBool::new(true),
            incarnation: Arc::default(),
            born: SERIES_MADE.fetch_add(1, Ordering::SeqCst) + 1,
            on_disk: Mutex::new(snap.to_manifest()),
            current: RwLock::new(Arc::new(snap)),
            packs: Mutex::new(Default::default()),
            merge_phase: xxhash_rust::xxh3::xxh3_64(rel_dir.as_bytes()),
            history: Mutex::new(History::new(version, super::now_ms(), false)),
            retired: Mutex::default(),
        };
        series.account_unfolded(unfolded_bytes(&series.snapshot()), 0);
        series
    }

    /// A read-only view of this series at `state` (a named snapshot's): every read
    /// through it answers exactly `state`. It refuses writes (it counts as deleted:
    /// writes find their series through the store, never through a view) and moves
    /// no store-wide count.
    pub(crate) fn view(&self, state: Arc<Snapshot>) -> Series {
        let mut opts = (*self.opts).clone();
        opts.unfolded_bytes = Arc::default();
        let opts = Arc::new(opts);
        let on_disk = super::format::Manifest {
            meta: (*self.meta).clone(),
            version: state.version,
            next_generation: state.next_generation,
            retention_ms: state.retention_ms,
            irregular: state.irregular,
            wal_lsn: state.wal_lsn,
            entries: Vec::new(),
        };
        let version = state.version;
        let series = Series {
            meta: Arc::clone(&self.meta),
            dir: Arc::clone(&self.dir),
            rel_dir: Arc::clone(&self.rel_dir),
            opts,
            write_lock: Mutex::new(()),
            deleted: AtomicBool::new(true),
            materialized: AtomicBool::new(self.is_materialized()),
            incarnation: Arc::clone(&self.incarnation),
            born: self.born,
            on_disk: Mutex::new(on_disk),
            current: RwLock::new(state),
            packs: Mutex::new(Default::default()),
            merge_phase: self.merge_phase,
            history: Mutex::new(History::new(version, super::now_ms(), false)),
            retired: Mutex::default(),
        };
        series.account_unfolded(unfolded_bytes(&series.snapshot()), 0);
        series
    }

    /// Swaps in the series' next state: the one place that does, so the store-wide
    /// count of bytes waiting in memory (`StoreOptions::unfolded_bytes`) moves by
    /// exactly what this series' state changed.
    /// Installs `next` and returns the state it replaced (the caller drops it, maybe
    /// later: the group commit answers its writers first).
    fn set_current(&self, next: Arc<Snapshot>) -> Arc<Snapshot> {
        let added = unfolded_bytes(&next);
        let next_version = next.version;
        let mut current = self.current.write_now();
        let prev = std::mem::replace(&mut *current, next);
        // Under the state's lock: two swaps of one series count in the order they
        // swapped, so the store's count never dips below this series' share.
        self.account_unfolded(added, unfolded_bytes(&prev));
        if next_version > prev.version {
            // Under the same lock: a reader sees the new version and its history
            // together (`history::Series::history`).
            self.note_superseded(&prev, next_version);
        }
        drop(current);
        prev
    }

    fn account_unfolded(&self, added: u64, removed: u64) {
        self.opts.unfolded_bytes.shift(added, removed);
    }

    /// The current committed state. Cheap: an `Arc` clone under a read lock.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read_now())
    }

    pub fn version(&self) -> u64 {
        self.snapshot().version
    }

    /// Directory of the series relative to the store root.
    pub fn rel_dir(&self) -> &str {
        &self.rel_dir
    }

    pub(crate) fn chunk_ref(&self, entry: ChunkEntry) -> Arc<ChunkRef> {
        let pack = entry
            .pack
            .is_packed()
            .then(|| self.pack_handle(entry.pack.generation));
        Arc::new(
            ChunkRef::new(
                entry,
                Arc::clone(&self.dir),
                Arc::clone(&self.rel_dir),
                Arc::clone(&self.opts.map_cache),
                pack,
            )
            .of_incarnation(Arc::clone(&self.incarnation)),
        )
    }

    /// The shared handle of pack `generation`: the live one, or a new one.
    fn pack_handle(&self, generation: u64) -> Arc<super::pack::PackFile> {
        let mut packs = self.packs.locked();
        if let Some(p) = packs.get(&generation).and_then(std::sync::Weak::upgrade) {
            return p;
        }
        packs.retain(|_, w| w.strong_count() > 0);
        let path = self.dir.join(super::pack::pack_file_name(generation));
        let p = Arc::new(
            super::pack::PackFile::new(generation, path)
                .of_incarnation(Arc::clone(&self.incarnation)),
        );
        packs.insert(generation, Arc::downgrade(&p));
        p
    }

    /// Whether the series has its `MANIFEST`: false for a series the store's catalog
    /// registered that no commit has written files for yet.
    pub fn is_materialized(&self) -> bool {
        self.materialized.load(Ordering::Acquire)
    }

    /// Marks a series made from the store's catalog: no directory yet.
    pub(super) fn set_unmaterialized(&self) {
        self.materialized.store(false, Ordering::Release);
    }

    /// Makes the series' directory (durably: its parents are fsynced) if it has none:
    /// the first step of every commit to files. No `MANIFEST` is written here: the
    /// commit's own `MANIFEST` is its commit point, and until it exists the store's
    /// catalog entry is the series (an open sets aside a directory of a listed series
    /// that has no `MANIFEST`: `set_aside_first_commit`). The caller holds the
    /// writer lock.
    pub(super) fn materialize(&self) -> Result<()> {
        if self.is_materialized() {
            return Ok(());
        }
        fsio::create_dir_durable(&self.dir)
            .map_err(|e| StorageError::io(self.rel_dir.to_string(), e))
    }

    /// A `MANIFEST` was renamed into the series' directory.
    pub(super) fn set_materialized(&self) {
        self.materialized.store(true, Ordering::Release);
    }

    /// The manifest as last recorded (in the directory, or in the store's catalog).
    pub(super) fn on_disk_manifest(&self) -> super::format::Manifest {
        self.on_disk.locked().clone()
    }

    /// Whether [`Store::delete`](super::Store::delete) removed this incarnation.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::SeqCst)
    }

    /// Marks this incarnation deleted. The caller holds the writer lock (the guard of
    /// [`Series::lock_live`]), so no write is between its check and its commit.
    pub(crate) fn mark_deleted(&self, _guard: &MutexGuard<'_, ()>) {
        self.incarnation.end();
        self.deleted.store(true, Ordering::SeqCst);
    }

    /// Takes the writer lock of a series that still exists: every path that changes
    /// the directory (write, compact, admin commits, delete) goes through here, so a
    /// handle that outlived a delete can never write into a re-registered directory.
    pub(crate) fn lock_live(&self) -> Result<MutexGuard<'_, ()>> {
        failpoints::check(&self.dir, failpoints::Op::Lock)
            .map_err(|e| StorageError::io(self.rel_dir.to_string(), e))?;
        let guard = self.write_lock.locked();
        if self.is_deleted() {
            return Err(StorageError::NotFound(format!(
                "{} series {} was deleted while the write was in flight; nothing was written",
                self.meta.key.kind().as_str(),
                self.meta.key
            )));
        }
        Ok(guard)
    }

    /// Takes the writer lock of a live series and folds what the log left in memory,
    /// so the state is exactly its manifest: every path that commits a manifest itself
    /// (direct writes, compaction, deletes, retention, admin) starts here.
    pub(crate) fn lock_folded(&self) -> Result<MutexGuard<'_, ()>> {
        let guard = self.lock_live()?;
        self.fold_locked(&guard)?;
        Ok(guard)
    }

    /// Every file chunk handle of this incarnation that is in use: the current
    /// state's (and the chunks it superseded in memory), the kept versions', and the
    /// superseded chunks some reader still holds. A state rebuilt from a list of
    /// entries shares these, so no file ever has two handles.
    pub(super) fn handles_in_use(&self) -> std::collections::HashMap<(i32, u64), Arc<ChunkRef>> {
        let (cur, history) = self.history();
        let mut out: std::collections::HashMap<(i32, u64), Arc<ChunkRef>> = self
            .retired
            .locked()
            .values()
            .filter_map(std::sync::Weak::upgrade)
            .map(|c| ((c.entry.month, c.entry.generation), c))
            .collect();
        let states = std::iter::once(&cur).chain(history.kept.iter().map(|k| &k.state));
        for st in states {
            for c in st.chunks().chain(st.superseded.iter()) {
                if !c.is_memory() {
                    out.insert((c.entry.month, c.entry.generation), Arc::clone(c));
                }
            }
        }
        out
    }

    /// Whether a handle of pack `generation` is alive (its file stays while it is).
    pub(super) fn pack_in_use(&self, generation: u64) -> bool {
        self.packs
            .locked()
            .get(&generation)
            .is_some_and(|p| p.strong_count() > 0)
    }

    pub(super) fn file_exists(&self, e: &ChunkEntry) -> bool {
        super::chunk::entry_file_exists(&self.dir, e)
    }

    /// Holds the writer lock while `f` runs (admin actions that rewrite the manifest).
    /// Fails `NotFound` without running `f` when the series was deleted meanwhile.
    /// A series with no directory is not folded first: these actions check files, and
    /// it has none (folding would give a small series a directory it does not need).
    pub fn with_write_lock<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let guard = self.lock_live()?;
        if self.is_materialized() {
            self.fold_locked(&guard)?;
        }
        f()
    }
}

/// A series that goes (deleted, or its store closed) takes its rows in memory out of
/// the store's count.
impl Drop for Series {
    fn drop(&mut self) {
        let held = unfolded_bytes(&self.snapshot());
        self.account_unfolded(0, held);
    }
}

/// Most columns of a series (a kline's ts, open, high, low, close, volume).
pub const MAX_NCOLS: usize = 6;
const _: () = assert!(MAX_NCOLS == 1 + crate::storage::batch::KLINE_COLUMNS.len());

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-row write (a many-series write's share of each series) holds its row
    /// inline: no allocation for the handler to make and the reaper to free; a larger
    /// one moves to the heap and keeps every row.
    #[test]
    fn a_one_row_batch_allocates_nothing() {
        let mut b = WriteBatch::with_capacity(MAX_NCOLS, 1);
        for (i, c) in b.cols.iter_mut().enumerate() {
            c.push(i as i64);
        }
        assert!(!b.cols.spilled() && b.cols.iter().all(|c| !c.spilled()));
        assert_eq!(b.len(), 1);
        for (i, c) in b.cols.iter_mut().enumerate() {
            c.extend([10 + i as i64, 20 + i as i64]);
        }
        assert!(b.cols.iter().all(|c| c.spilled()));
        assert_eq!(b.to_vecs()[5], vec![5, 15, 25]);
        assert_eq!(WriteBatch::from_cols(b.to_vecs()), b);
    }

    /// The iterator the log's apply uses splits exactly as `month_groups` does:
    /// one month, several, month ends on the first and the last row, empty.
    #[test]
    fn month_runs_match_month_groups() {
        const DAY: i64 = 86_400_000;
        // 2024-01-01T00:00:00Z.
        let jan = 1_704_067_200_000i64;
        let mut cases: Vec<Vec<i64>> = vec![
            vec![],
            vec![jan],
            vec![jan - 1, jan],
            (0..100).map(|i| jan + i * 60_000).collect(),
            (0..400).map(|i| jan + i * DAY / 3).collect(),
        ];
        // Pseudo-random sorted runs over two years.
        let mut x = 7u64;
        for _ in 0..50 {
            let mut ts = Vec::new();
            let mut t = jan;
            for _ in 0..(x % 300) {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                t += 1 + (x >> 33) as i64 % (40 * DAY);
                ts.push(t);
            }
            cases.push(ts);
        }
        for ts in &cases {
            let runs: Vec<_> = MonthRuns::new(Partitioning::MonthMs, ts).collect();
            assert_eq!(runs, month_groups(Partitioning::MonthMs, ts), "{ts:?}");
        }
        // The same over nanosecond ticks in day and hour partitions.
        for part in [
            Partitioning::DayNs,
            Partitioning::HourNs,
            Partitioning::MonthNs,
        ] {
            for ts in &cases {
                let ns: Vec<i64> = ts.iter().map(|t| t * 1_000_000).collect();
                let runs: Vec<_> = MonthRuns::new(part, &ns).collect();
                assert_eq!(runs, month_groups(part, &ns), "{part:?} {ns:?}");
                for (p, r) in &runs {
                    assert!(ns[r.clone()].iter().all(|&t| part.of(t) == *p));
                }
            }
        }
    }
}

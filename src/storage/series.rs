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
//! [`Store::delete`]: super::Store::delete

use crate::sync::{LockExt, RwLockExt};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

mod history;
mod sealed;
use super::snapshot::Snapshot;
use crate::record::{MonthPartition, SeriesMeta, TS_MAX, TS_MIN, TsRange};
pub use history::{Found, History, Kept, MAX_KEPT_VERSIONS, Pick, VersionInfo, VersionSettings};

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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    pub cols: SmallVec<[Column; MAX_NCOLS]>,
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
    pub(crate) opts: StoreOptions,
    write_lock: Mutex<()>,
    /// Set by `Store::delete` under `write_lock`: this incarnation is gone, and its
    /// directory path may already belong to a newer one.
    deleted: AtomicBool,
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

/// A run of a commit's plans written as one pack file (`Series::write_packs`).
pub(super) struct WritePack {
    /// The plans it holds (two or more, consecutive).
    plans: std::ops::Range<usize>,
    /// The pack's generation: past every chunk generation of the commit.
    generation: u64,
}

/// A writer thread's buffers for joining split months: per month of a unit, per
/// column (see [`MonthPlan::columns`]).
type Scratch = Vec<Vec<Vec<i64>>>;

/// What one writer thread takes at a time: one month's own files, or a whole pack.
#[derive(Debug, Clone, Copy)]
enum WriteUnit {
    File(usize),
    Pack(usize),
}

/// The units of a commit of `plans` plans of which `packs` form packs, in plan order.
fn write_units(plans: usize, packs: &[WritePack]) -> Vec<WriteUnit> {
    let mut units = Vec::with_capacity(plans);
    let mut k = 0;
    let mut i = 0;
    while i < plans {
        if let Some(pack) = packs.get(k).filter(|p| p.plans.start == i) {
            units.push(WriteUnit::Pack(k));
            i = pack.plans.end;
            k += 1;
        } else {
            units.push(WriteUnit::File(i));
            i += 1;
        }
    }
    assert_eq!(k, packs.len(), "every pack of a write is a unit");
    units
}

/// One month's chunk as built for writing: a raw chunk's bytes (borrowing the plan's
/// columns) and sidecars, or a sealed month compressed before the write was laid out
/// ([`sealed::SealedChunk`]).
enum BuiltChunk<'p> {
    Raw {
        // Boxed: the encoded header alone is 512 bytes, and a pack's months are
        // built into one vector.
        raw: Box<ChunkParts<'p>>,
        sidecars: sidecar::Sidecars,
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

/// The manifest's record of sidecar `bytes`.
fn sidecar_ref(bytes: &[u8]) -> SidecarRef {
    SidecarRef {
        len: bytes.len() as u64,
        xxh3: xxhash_rust::xxh3::xxh3_64(bytes),
    }
}

/// What one commit lays out: its plans, the packs among them, and each plan's chunk
/// when it was compressed before the layout.
type Layout<'a, 'p> = (
    &'a [MonthPlan<'p>],
    &'a [WritePack],
    &'a [Option<sealed::SealedChunk>],
);

/// Zeros for the padding between the aligned parts of a pack.
static PAD: [u8; COLUMN_ALIGN] = [0; COLUMN_ALIGN];

/// Appends to `runs` the padding from `at` up to `to`, then `run`, and moves `at` to
/// its end. Parts are laid out in ascending offsets, at most one alignment apart.
fn put_at<'b>(runs: &mut Vec<&'b [u8]>, at: &mut u64, run: &'b [u8], to: u64) {
    assert!(
        to >= *at && to - *at < COLUMN_ALIGN as u64,
        "pack parts ascend and are at most one alignment apart"
    );
    runs.push(&PAD[..(to - *at) as usize]);
    runs.push(run);
    *at = to + run.len() as u64;
}

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
    /// This incarnation's place on the count of [`registration_stamp`].
    pub fn born(&self) -> u64 {
        self.born
    }

    pub(crate) fn new(
        meta: Arc<SeriesMeta>,
        dir: PathBuf,
        rel_dir: String,
        opts: StoreOptions,
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
        let mut opts = self.opts.clone();
        opts.unfolded_bytes = Arc::default();
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

    /// Folds the rows held in memory into chunk files now (see [`Series::fold_locked`]).
    /// Returns whether there was anything to fold.
    pub fn fold(&self) -> Result<bool> {
        let guard = self.lock_live()?;
        self.fold_locked(&guard)
    }

    /// Folds the rows that write-ahead log records put in memory into chunk files, in
    /// one commit whose manifest also records the log position they reach (from then
    /// on the log may drop those records). Per month: an in-memory rewrite of the month
    /// becomes a full chunk; appended rows become a delta chunk, or the month is merged
    /// into one chunk when it already has `max_chunks_per_month` files. The version is
    /// unchanged: each logged write already counted. The caller holds the writer lock.
    fn fold_locked(&self, _guard: &MutexGuard<'_, ()>) -> Result<bool> {
        let snap = self.snapshot();
        if snap.unfolded.is_none() {
            return Ok(false);
        }
        let ncols = self.meta.key.kind().ncols();
        // The state on disk: the file chunks, with those an in-memory rewrite
        // superseded put back where the manifest still has them.
        let mut live: BTreeMap<i32, Vec<Arc<ChunkRef>>> = BTreeMap::new();
        // Per month, the rows of its in-memory chunks (they are its last chunks, in
        // order) concatenated, and whether the first of them rewrote the month.
        let mut memory: Vec<(i32, Vec<Vec<i64>>, bool)> = Vec::new();
        for (&month, chunks) in &snap.live {
            for c in chunks.iter() {
                if !c.is_memory() {
                    live.entry(month).or_default().push(Arc::clone(c));
                    continue;
                }
                let m = c.map()?;
                if memory.last().is_none_or(|(mo, _, _)| *mo != month) {
                    let full = c.entry.flags & FLAG_FULL != 0;
                    memory.push((month, vec![Vec::new(); ncols], full));
                }
                let (_, cols, _) = memory.last_mut().expect("pushed above");
                for (i, out) in cols.iter_mut().enumerate() {
                    out.extend_from_slice(m.col(i));
                }
            }
        }
        for c in &snap.superseded {
            live.entry(c.entry.month).or_default().push(Arc::clone(c));
        }
        for v in live.values_mut() {
            v.sort_by_key(|c| c.entry.generation);
        }
        let base = Snapshot {
            meta: Arc::clone(&snap.meta),
            version: snap.version,
            next_generation: snap.next_generation,
            retention_ms: snap.retention_ms,
            irregular: snap.irregular,
            live: super::snapshot::month_lists(live),
            obsolete: snap.obsolete.clone(),
            wal_lsn: snap.wal_lsn,
            unfolded: None,
            superseded: Vec::new(),
        };
        let mut next_gen = base.next_generation;
        let mut plans = Vec::with_capacity(memory.len());
        for (month, m, full) in &memory {
            let cols: Vec<&[i64]> = m.iter().map(Vec::as_slice).collect();
            let files = base.live.get(month).map_or(0, |l| l.len());
            let plan = if *full || files == 0 {
                MonthPlan {
                    split: Vec::new(),
                    month: *month,
                    generation: next_gen,
                    full: true,
                    cols: cols.iter().map(|&c| Cow::Borrowed(c)).collect(),
                    inserted: 0,
                    replaced: 0,
                    compressed: None,
                }
            } else if files >= self.opts.max_chunks_per_month {
                self.merge_month(&base, *month, &cols, next_gen)?
            } else {
                MonthPlan {
                    split: Vec::new(),
                    month: *month,
                    generation: next_gen,
                    full: false,
                    cols: cols.iter().map(|&c| Cow::Borrowed(c)).collect(),
                    inserted: 0,
                    replaced: 0,
                    compressed: None,
                }
            };
            plans.push(plan);
            next_gen += 1;
        }
        assert!(
            !plans.is_empty(),
            "a series with unfolded rows holds a chunk in memory"
        );
        self.commit_dropping(&base, plans, &[], next_gen, false)?;
        Ok(true)
    }

    /// How many of a month's last chunks (`list`) an append of `n` rows merges with
    /// its rows: the trailing in-memory chunks, as long as the merged chunk stays
    /// within `memory_chunk_rows`, chosen as a binary counter.
    ///
    /// A write of several rows counts in sizes: it merges a chunk no larger than what
    /// it has gathered so far. A one-row append (a live feed's bar) counts in rows,
    /// offset by the series' `merge_phase`: the tail's rows sit at positions
    /// `phase + 0, phase + 1, ...` and a chunk is merged when the merged rows end on a
    /// multiple of their span rounded up to a power of two, so past the first (the rows
    /// up to the phase's next boundary) its chunks are aligned blocks of that position.
    /// Both bound the chunks and the copies alike, but the
    /// offset spreads the merges of many series fed in lockstep over the writes: with
    /// sizes alone, 2,000 symbols that get a bar each minute all copy their 16-row
    /// tails at the 16th write, their 32-row tails at the 32nd, and so on (the spikes
    /// of a many-series write's latency); with the phase, a write merges the same
    /// number of rows on average and about as many every time. Finding the position
    /// walks the month's in-memory chunks: at most `storage.fold_rows` rows (the fold
    /// folds a series there), so `fold_rows / memory_chunk_rows` full chunks and a few
    /// smaller ones; a live feed folds after `storage.fold_age_s` and holds a handful.
    fn tail_merge(&self, list: &[Arc<ChunkRef>], n: u64) -> usize {
        let cap = self.opts.wal.memory_chunk_rows;
        let tail: &[Arc<ChunkRef>] = {
            let files = list
                .iter()
                .rposition(|c| !c.is_memory())
                .map_or(0, |i| i + 1);
            &list[files..]
        };
        let mut merge = 0;
        let mut acc = n;
        if n == 1 {
            let held: u64 = tail.iter().map(|c| c.entry.rows).sum();
            // The position past the new row, and where the merged run starts.
            let end = self.merge_phase.wrapping_add(held + 1);
            let mut start = end.wrapping_sub(1);
            for c in tail.iter().rev() {
                if acc + c.entry.rows > cap {
                    break;
                }
                start = start.wrapping_sub(c.entry.rows);
                let span = end.wrapping_sub(start);
                if end & (span.next_power_of_two() - 1) != 0 {
                    break;
                }
                acc += c.entry.rows;
                merge += 1;
            }
        } else {
            for c in tail.iter().rev() {
                if c.entry.rows > acc || acc + c.entry.rows > cap {
                    break;
                }
                acc += c.entry.rows;
                merge += 1;
            }
        }
        debug_assert!(acc <= cap.max(n), "a merged chunk stays within the cap");
        merge
    }

    /// The state after one logged write, applied at log position `lsn` at `now`:
    /// `batch` (sorted, unique, checked by the caller) goes into in-memory chunks laid
    /// out as files, always the month's last chunks. Rows past
    /// the month's last `ts` are appended (to its in-memory chunk, or as a new one
    /// after its files); anything else rewrites the month in memory as one full chunk,
    /// and its file chunks wait in `superseded` for the fold. Readers see the result
    /// as soon as it is installed; nothing touches the disk here. The caller holds
    /// the writer lock, and the log record is durable before the result is installed.
    ///
    /// Long on purpose: one loop over the write's months whose append and rewrite
    /// cases update the same new state (live and superseded lists, row and byte
    /// totals, the report) declared at its top.
    pub(super) fn apply_logged(
        &self,
        snap: &Snapshot,
        batch: &WriteBatch,
        lsn: u64,
        now: std::time::Instant,
    ) -> Result<(Snapshot, WriteReport)> {
        assert!(!batch.is_empty(), "an empty write is not logged");
        assert!(lsn > snap.wal_lsn, "log records apply in order");
        failpoints::check(&self.dir, failpoints::Op::Apply)
            .map_err(|e| StorageError::io(self.rel_dir.to_string(), e))?;
        let ncols = self.meta.key.kind().ncols();
        let version = snap.version + 1;
        let mut live = snap.live.clone();
        let mut superseded = snap.superseded.clone();
        let mut report = WriteReport {
            version,
            ..WriteReport::default()
        };
        // Rows and bytes of the in-memory chunks (`snap.unfolded`'s totals: none when
        // the state is exactly the manifest), kept up to date month by month.
        let (mut rows, mut bytes) = snap.unfolded.map_or((0, 0), |u| (u.rows, u.bytes));
        // Column slices live in fixed arrays, not vectors: a many-series write applies
        // thousands of series per group, and each allocation here is paid twice (the
        // reaper frees what the apply helper allocated).
        assert!(
            ncols <= MAX_NCOLS,
            "a series has at most {MAX_NCOLS} columns"
        );
        for (month, range) in MonthRuns::new(&batch.cols[0]) {
            let mut new_cols: [&[i64]; MAX_NCOLS] = [&[]; MAX_NCOLS];
            for (slot, c) in new_cols.iter_mut().zip(&batch.cols) {
                *slot = &c[range.clone()];
            }
            let new = &new_cols[..ncols];
            let n = new[0].len() as u64;
            // This month's list as the state before the write has it (shared: the
            // new state gets a new list, built once below).
            let old_list = live.get(&month).cloned().unwrap_or_default();
            let list = old_list.as_slice();
            let last = list.last();
            let appends = last.is_none_or(|c| new[0][0] > c.entry.last_ts);
            // An append merges some of the month's last in-memory chunks into one with
            // the new rows, a binary counter (`tail_merge`): a month holds
            // O(log memory_chunk_rows) small chunks past its full ones, and each row is
            // copied O(log) times, not once per write. The merged chunks (`heads`,
            // oldest first) and the new rows become one.
            let merge = if appends { self.tail_merge(list, n) } else { 0 };
            let heads: Pieces<Arc<super::chunk::MappedChunk>> = list[list.len() - merge..]
                .iter()
                .map(|c| c.map())
                .collect::<Result<_>>()?;
            let (merged, full, inserted, replaced, supersede) = if appends {
                // A month's first chunk is full (it holds the whole month); merged
                // chunks keep the flag of the oldest of them.
                let full = heads
                    .first()
                    .map_or(list.is_empty(), |m| m.header.flags & FLAG_FULL != 0);
                (None, full, n, 0, false)
            } else {
                let plan = self.merge_month(snap, month, new, 0)?;
                debug_assert!(plan.split.is_empty(), "a merged month owns its rows");
                let (i, r) = (plan.inserted, plan.replaced);
                (Some(plan), true, i, r, true)
            };
            // The rows the new chunk adds: the write's, or the merged month.
            let mut add_cols = new_cols;
            if let Some(plan) = &merged {
                for (slot, c) in add_cols.iter_mut().zip(&plan.cols) {
                    *slot = c;
                }
            }
            // What leaves the month's list: the merged heads of an append (all in
            // memory), or the whole list of a rewrite (its files stay listed in the
            // manifest until the next fold, as superseded).
            let (kept, gone) = if supersede {
                superseded.extend(list.iter().filter(|c| !c.is_memory()).cloned());
                (&[][..], list)
            } else {
                list.split_at(list.len() - merge)
            };
            let before = memory_totals(gone);
            let header = ChunkHeader {
                meta: Arc::clone(&self.meta),
                ncols,
                rows: 0,
                first_ts: 0,
                last_ts: 0,
                month,
                flags: if full { FLAG_FULL } else { 0 },
                generation: 0,
                write_version: version,
                write_chunks: 1,
                body_xxh3: 0,
                stride: 0,
                wal_lsn: lsn,
                body_len: 0,
            };
            let head_cols: Pieces<[&[i64]; MAX_NCOLS]> = heads
                .iter()
                .map(|m| std::array::from_fn(|i| if i < ncols { m.col(i) } else { &[] }))
                .collect();
            let mut pieces: Pieces<&[&[i64]]> = Pieces::new();
            pieces.extend(head_cols.iter().map(|c| &c[..ncols]));
            pieces.push(&add_cols[..ncols]);
            let chunk = super::chunk::MappedChunk::in_memory_joined(header, &pieces);
            let chunk = Arc::new(ChunkRef::in_memory(
                chunk,
                Arc::clone(&self.dir),
                Arc::clone(&self.rel_dir),
            ));
            // Only this month's in-memory chunks changed: the totals move by what left
            // and what came (a series with years of months is not walked per write).
            rows = rows - before.0 + chunk.entry.rows;
            bytes = bytes - before.1 + chunk.entry.file_len;
            let mut next_list = super::snapshot::ChunkList::with_capacity(kept.len() + 1);
            next_list.extend(kept.iter().cloned());
            next_list.push(chunk);
            live.insert(month, Arc::new(next_list));
            report.inserted += inserted;
            report.replaced += replaced;
            report.months.push(MonthPartition(month));
        }
        report.written = report.inserted + report.replaced;
        debug_assert_eq!(
            (rows, bytes),
            live.values()
                .map(|l| memory_totals(l))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
            "the unfolded totals are those of the in-memory chunks"
        );
        let unfolded = super::snapshot::Unfolded {
            first_lsn: snap.unfolded.map_or(lsn, |u| u.first_lsn),
            since: snap.unfolded.map_or(now, |u| u.since),
            rows,
            bytes,
        };
        let next = Snapshot {
            meta: Arc::clone(&snap.meta),
            version,
            next_generation: snap.next_generation,
            retention_ms: snap.retention_ms,
            irregular: snap.irregular,
            live,
            obsolete: snap.obsolete.clone(),
            wal_lsn: lsn,
            unfolded: Some(unfolded),
            superseded,
        };
        Ok((next, report))
    }

    /// Checks a write's expected version against `snap` (the group commit checks each
    /// write against the state the writes before it in the group leave).
    pub(super) fn check_expected(snap: &Snapshot, expected: Option<u64>) -> Result<()> {
        check_expected(snap, expected)
    }

    /// Installs a state made by [`Series::apply_logged`] once its log record is durable.
    /// Returns the state it replaced, for the caller to drop.
    pub(super) fn install_logged(
        &self,
        _guard: &MutexGuard<'_, ()>,
        snap: Arc<Snapshot>,
    ) -> Arc<Snapshot> {
        self.set_current(snap)
    }

    /// Checks a write's shape, size and timestamps and sorts it by `ts` (refusing a
    /// `ts` repeated inside it): what every write path does before anything else.
    pub fn prepare(&self, batch: &mut WriteBatch) -> Result<()> {
        check_shape(&self.meta, batch)?;
        check_row_limit(batch.len(), self.opts.max_write_rows)?;
        check_ts_bounds(&batch.cols[0])?;
        sort_and_check_duplicates(batch)
    }

    /// Writes `batch` (any order; upsert) as one all-or-nothing commit of chunk files,
    /// bypassing the write-ahead log (bulk writes; [`super::Store::write`] routes).
    pub fn write(
        &self,
        mut batch: WriteBatch,
        expected_version: Option<u64>,
    ) -> Result<WriteReport> {
        self.prepare(&mut batch)?;
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        check_expected(&snap, expected_version)?;
        if batch.is_empty() {
            return Ok(WriteReport {
                version: snap.version,
                ..WriteReport::default()
            });
        }
        let mut next_gen = snap.next_generation;
        let mut plans = Vec::new();
        for (month, range) in month_groups(&batch.cols[0]) {
            let new: Vec<&[i64]> = batch.cols.iter().map(|c| &c[range.clone()]).collect();
            plans.push(self.plan_month(&snap, month, &new, next_gen)?);
            next_gen += 1;
        }
        self.commit(&snap, plans, next_gen)
    }

    /// Writes rows given in pieces (a DoPut's received batches, read in place) as
    /// one all-or-nothing commit, like [`Series::write`] but without gathering them
    /// into one batch first: a month inside one piece is written from that piece's
    /// memory, a month that spans pieces is joined (at most a month's rows). The
    /// caller ([`super::Store::write_pieces`]) checked that every piece has the
    /// series' columns at equal lengths and that the timestamps increase strictly
    /// across all of them; anything else goes through [`Series::write`].
    pub(crate) fn write_pieces(
        &self,
        pieces: &[Vec<&[i64]>],
        expected_version: Option<u64>,
    ) -> Result<WriteReport> {
        let ncols = self.meta.key.kind().ncols();
        debug_assert!(
            pieces_in_order(pieces)
                && pieces
                    .iter()
                    .all(|p| p.len() == ncols && p.iter().all(|c| c.len() == p[0].len())),
            "pieces checked by the caller"
        );
        let rows: usize = pieces.iter().map(|p| p[0].len()).sum();
        check_row_limit(rows, self.opts.max_write_rows)?;
        let mut at = 0;
        for p in pieces {
            check_ts_bounds(p[0]).map_err(|e| match e {
                StorageError::InvalidArgument(m) if at > 0 => {
                    StorageError::InvalidArgument(format!("{m} (piece starting at record {at})"))
                }
                e => e,
            })?;
            at += p[0].len();
        }
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        check_expected(&snap, expected_version)?;
        if rows == 0 {
            return Ok(WriteReport {
                version: snap.version,
                ..WriteReport::default()
            });
        }
        // Each month's runs, in order: (piece, rows of that piece).
        type Runs = Vec<(usize, std::ops::Range<usize>)>;
        let mut months: Vec<(i32, Runs)> = Vec::new();
        for (k, p) in pieces.iter().enumerate() {
            for (month, range) in month_groups(p[0]) {
                match months.last_mut() {
                    Some((m, runs)) if *m == month => runs.push((k, range)),
                    _ => months.push((month, vec![(k, range)])),
                }
            }
        }
        let mut next_gen = snap.next_generation;
        let mut plans = Vec::with_capacity(months.len());
        for (month, runs) in &months {
            let (k0, r0) = &runs[0];
            let plan = if runs.len() == 1 {
                let new: Vec<&[i64]> = pieces[*k0].iter().map(|c| &c[r0.clone()]).collect();
                self.plan_month(&snap, *month, &new, next_gen)?
            } else if self.appends_as_chunk(&snap, *month, pieces[*k0][0][r0.start]) {
                // A month across pieces, new or appended to: its runs stay in place
                // until a writer thread builds its chunk.
                let split: Vec<Vec<&[i64]>> = (0..ncols)
                    .map(|c| {
                        runs.iter()
                            .map(|(k, r)| &pieces[*k][c][r.clone()])
                            .collect()
                    })
                    .collect();
                let n: usize = runs.iter().map(|(_, r)| r.len()).sum();
                let existing = snap.live.get(month).map_or(0, |l| l.len());
                MonthPlan {
                    month: *month,
                    generation: next_gen,
                    full: existing == 0,
                    cols: Vec::new(),
                    split,
                    inserted: n as u64,
                    replaced: 0,
                    compressed: None,
                }
            } else {
                // A rewrite of the month merges from one joined copy of the new rows.
                let joined: Vec<Vec<i64>> = (0..ncols)
                    .map(|c| {
                        runs.iter()
                            .flat_map(|(k, r)| &pieces[*k][c][r.clone()])
                            .copied()
                            .collect()
                    })
                    .collect();
                let new: Vec<&[i64]> = joined.iter().map(|c| &c[..]).collect();
                self.merge_month(&snap, *month, &new, next_gen)?
            };
            plans.push(plan);
            next_gen += 1;
        }
        self.commit(&snap, plans, next_gen)
    }

    /// Merges every month that has more than one live chunk into one chunk.
    /// Returns the months compacted.
    pub fn compact(&self) -> Result<Vec<String>> {
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        let mut next_gen = snap.next_generation;
        let mut plans = Vec::new();
        for (&month, chunks) in &snap.live {
            if chunks.len() > 1 {
                let none: Vec<&[i64]> = vec![&[]; self.meta.key.kind().ncols()];
                plans.push(self.merge_month(&snap, month, &none, next_gen)?);
                next_gen += 1;
            }
        }
        if plans.is_empty() {
            return Ok(Vec::new());
        }
        let months = plans
            .iter()
            .map(|p| MonthPartition(p.month).to_string())
            .collect();
        self.commit_inner(&snap, plans, next_gen, false)?;
        Ok(months)
    }

    /// Months of this series that ended more than `storage.compress_after` before
    /// `now_ms` and are not yet one compressed chunk (nothing when compression is off).
    pub fn sealed_uncompressed(&self, now_ms: i64) -> Vec<i32> {
        let Some(after) = self.opts.compress_after_ms else {
            return Vec::new();
        };
        let snap = self.snapshot();
        snap.live
            .iter()
            .filter(|(m, _)| MonthPartition(**m).end_ts() < now_ms.saturating_sub(after))
            .filter(|(_, c)| !(c.len() == 1 && c[0].entry.flags & FLAG_COMPRESSED != 0))
            .map(|(m, _)| *m)
            .collect()
    }

    /// Rewrites each sealed month (see [`Series::sealed_uncompressed`]) as one
    /// compressed chunk with fresh sidecars, in one commit that keeps the version (the
    /// rows are the same). Returns the months compressed.
    pub fn compress_sealed(&self, now_ms: i64) -> Result<Vec<String>> {
        if self.sealed_uncompressed(now_ms).is_empty() {
            return Ok(Vec::new());
        }
        let _guard = self.lock_folded()?;
        let months = self.sealed_uncompressed(now_ms);
        if months.is_empty() {
            return Ok(Vec::new());
        }
        let snap = self.snapshot();
        let none: Vec<&[i64]> = vec![&[]; self.meta.key.kind().ncols()];
        let mut next_gen = snap.next_generation;
        let mut plans = Vec::with_capacity(months.len());
        for &month in &months {
            let mut plan = self.merge_month(&snap, month, &none, next_gen)?;
            plan.compressed = Some(super::codec::Effort::Thorough);
            plans.push(plan);
            next_gen += 1;
        }
        self.commit_inner(&snap, plans, next_gen, false)?;
        Ok(months
            .iter()
            .map(|m| MonthPartition(*m).to_string())
            .collect())
    }

    /// Deletes the rows of `range` as one all-or-nothing commit: a month the range
    /// covers whole is dropped (its chunks become obsolete and are unlinked once no
    /// reader holds them), a month it cuts is rewritten without those rows. Deleting
    /// nothing commits nothing and keeps the version.
    pub fn delete_range(
        &self,
        range: TsRange,
        expected_version: Option<u64>,
    ) -> Result<DeleteReport> {
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        check_expected(&snap, expected_version)?;
        let mut next_gen = snap.next_generation;
        let (mut plans, mut dropped, mut months) = (Vec::new(), Vec::new(), Vec::new());
        let mut deleted = 0u64;
        for (&month, chunks) in &snap.live {
            let inside = |c: &Arc<ChunkRef>| {
                range.contains(c.entry.first_ts) && range.contains(c.entry.last_ts)
            };
            let touches = |c: &&Arc<ChunkRef>| {
                c.entry.last_ts >= range.lo() && c.entry.first_ts <= range.hi()
            };
            if !chunks.iter().any(|c| touches(&c)) {
                continue;
            }
            if chunks.iter().all(inside) {
                deleted += chunks.iter().map(|c| c.entry.rows).sum::<u64>();
                dropped.push(month);
            } else {
                let (plan, removed) = self.month_without(&snap, month, range, next_gen)?;
                if removed == 0 {
                    continue;
                }
                deleted += removed;
                plans.push(plan);
                next_gen += 1;
            }
            months.push(MonthPartition(month).to_string());
        }
        if deleted == 0 {
            return Ok(DeleteReport {
                version: snap.version,
                ..DeleteReport::default()
            });
        }
        if plans.is_empty() {
            // Every commit moves next_generation on, including one that only drops.
            next_gen += 1;
        }
        self.commit_dropping(&snap, plans, &dropped, next_gen, true)?;
        Ok(DeleteReport {
            deleted,
            months,
            version: snap.version + 1,
        })
    }

    /// Sets the retention (0: keep forever) by publishing the manifest again with it;
    /// the rows and the version are unchanged. Returns whether it changed.
    pub fn set_retention(&self, retention_ms: i64) -> Result<bool> {
        assert!(retention_ms >= 0, "a retention is not negative");
        self.set_settings(Some(retention_ms), None)
    }

    /// Sets the series' settings given (retention, whether kline bars may sit off the
    /// timeframe's grid) by publishing the manifest again with them; the rows and the
    /// version are unchanged. Returns whether anything changed.
    pub fn set_settings(&self, retention_ms: Option<i64>, irregular: Option<bool>) -> Result<bool> {
        assert!(
            retention_ms.is_none_or(|r| r >= 0),
            "a retention is not negative"
        );
        if retention_ms.is_none() && irregular.is_none() {
            return Ok(false);
        }
        let _guard = self.lock_folded()?;
        let snap = self.snapshot();
        let retention_ms = retention_ms.unwrap_or(snap.retention_ms);
        let irregular = irregular.unwrap_or(snap.irregular);
        if snap.retention_ms == retention_ms && snap.irregular == irregular {
            return Ok(false);
        }
        let next = Snapshot {
            meta: Arc::clone(&snap.meta),
            version: snap.version,
            next_generation: snap.next_generation,
            retention_ms,
            irregular,
            live: snap.live.clone(),
            obsolete: snap.obsolete.clone(),
            wal_lsn: snap.wal_lsn,
            unfolded: None,
            superseded: Vec::new(),
        };
        match self.publish_manifest(&next.to_manifest()) {
            Ok(()) => {
                self.install(next);
                Ok(true)
            }
            Err((e, OnDisk::Next)) => {
                self.install(next);
                Err(e)
            }
            Err((e, OnDisk::Previous { .. })) => Err(e),
        }
    }

    /// `month` rewritten without the rows of `range`; also returns how many went.
    fn month_without(
        &self,
        snap: &Snapshot,
        month: i32,
        range: TsRange,
        generation: u64,
    ) -> Result<(MonthPlan<'static>, u64)> {
        let existing = snap.live.get(&month).map_or(&[][..], |l| l.as_slice());
        let mapped = existing
            .iter()
            .map(|c| c.map())
            .collect::<Result<Vec<_>>>()?;
        let ncols = self.meta.key.kind().ncols();
        let old_rows: usize = mapped.iter().map(|m| m.rows()).sum();
        let mut cols: Vec<Vec<i64>> = (0..ncols).map(|_| Vec::with_capacity(old_rows)).collect();
        for m in &mapped {
            for (r, &t) in m.ts().iter().enumerate() {
                if !range.contains(t) {
                    for (c, out) in cols.iter_mut().enumerate() {
                        out.push(m.col(c)[r]);
                    }
                }
            }
        }
        let removed = (old_rows - cols[0].len()) as u64;
        let plan = MonthPlan {
            split: Vec::new(),
            month,
            generation,
            full: true,
            cols: cols.into_iter().map(Cow::Owned).collect(),
            inserted: 0,
            replaced: 0,
            compressed: None,
        };
        Ok((plan, removed))
    }

    /// Whether rows of `month` from `first_ts` on go into a chunk of their own (the
    /// month is new, or they come after its last row and it has room for a chunk),
    /// rather than a rewrite of the month.
    fn appends_as_chunk(&self, snap: &Snapshot, month: i32, first_ts: i64) -> bool {
        let existing = snap.live.get(&month).map_or(&[][..], |l| l.as_slice());
        existing.last().is_none_or(|c| first_ts > c.entry.last_ts)
            && existing.len() < self.opts.max_chunks_per_month
    }

    fn plan_month<'a>(
        &self,
        snap: &Snapshot,
        month: i32,
        new: &[&'a [i64]],
        generation: u64,
    ) -> Result<MonthPlan<'a>> {
        if self.appends_as_chunk(snap, month, new[0][0]) {
            let existing = snap.live.get(&month).map_or(&[][..], |l| l.as_slice());
            let n = new[0].len() as u64;
            return Ok(MonthPlan {
                split: Vec::new(),
                month,
                generation,
                full: existing.is_empty(),
                cols: new.iter().map(|&c| Cow::Borrowed(c)).collect(),
                inserted: n,
                replaced: 0,
                compressed: None,
            });
        }
        self.merge_month(snap, month, new, generation)
    }

    /// Copy-on-write rewrite of `month`: existing rows merged with `new` (new wins).
    pub(super) fn merge_month(
        &self,
        snap: &Snapshot,
        month: i32,
        new: &[&[i64]],
        generation: u64,
    ) -> Result<MonthPlan<'static>> {
        let ncols = new.len();
        let existing = snap.live.get(&month).map_or(&[][..], |l| l.as_slice());
        let mapped = existing
            .iter()
            .map(|c| c.map())
            .collect::<Result<Vec<_>>>()?;
        let old_rows: usize = mapped.iter().map(|m| m.rows()).sum();
        let mut cols: Vec<Vec<i64>> = (0..ncols)
            .map(|_| Vec::with_capacity(old_rows + new[0].len()))
            .collect();
        let (mut replaced, mut j) = (0u64, 0usize);
        let new_ts = new[0];
        for m in &mapped {
            for (r, &t) in m.ts().iter().enumerate() {
                while j < new_ts.len() && new_ts[j] < t {
                    push_row(&mut cols, new, j);
                    j += 1;
                }
                if j < new_ts.len() && new_ts[j] == t {
                    push_row(&mut cols, new, j);
                    j += 1;
                    replaced += 1;
                } else {
                    for (c, out) in cols.iter_mut().enumerate() {
                        out.push(m.col(c)[r]);
                    }
                }
            }
        }
        while j < new_ts.len() {
            push_row(&mut cols, new, j);
            j += 1;
        }
        let inserted = new_ts.len() as u64 - replaced;
        Ok(MonthPlan {
            split: Vec::new(),
            month,
            generation,
            full: true,
            cols: cols.into_iter().map(Cow::Owned).collect(),
            inserted,
            replaced,
            compressed: None,
        })
    }

    fn commit(&self, snap: &Snapshot, plans: Vec<MonthPlan>, next_gen: u64) -> Result<WriteReport> {
        let report = WriteReport {
            written: plans.iter().map(|p| p.inserted + p.replaced).sum(),
            inserted: plans.iter().map(|p| p.inserted).sum(),
            replaced: plans.iter().map(|p| p.replaced).sum(),
            months: plans.iter().map(|p| MonthPartition(p.month)).collect(),
            version: snap.version + 1,
        };
        self.commit_inner(snap, plans, next_gen, true)?;
        Ok(report)
    }

    /// Publishes the planned chunks, commits the manifest, swaps the snapshot.
    /// The caller holds the writer lock of a live series ([`Series::lock_live`]).
    pub(super) fn commit_inner(
        &self,
        snap: &Snapshot,
        plans: Vec<MonthPlan>,
        next_gen: u64,
        bump: bool,
    ) -> Result<()> {
        self.commit_dropping(snap, plans, &[], next_gen, bump)
    }

    /// As [`Series::commit_inner`], also dropping the months `dropped` whole (their
    /// chunks become obsolete like superseded ones).
    fn commit_dropping(
        &self,
        snap: &Snapshot,
        plans: Vec<MonthPlan>,
        dropped: &[i32],
        next_gen: u64,
        bump: bool,
    ) -> Result<()> {
        let mut plans = plans;
        self.seal_plans(&mut plans);
        let version = if bump { snap.version + 1 } else { snap.version };
        let write_chunks = u32::try_from(plans.len()).expect("a write touches < 2^32 months");
        // Phase times, for the debug event at the end.
        let started = std::time::Instant::now();
        let sealed = sealed::prebuild(self, &plans, (version, snap.wal_lsn, write_chunks));
        let packs = self.write_packs(&plans, &sealed, next_gen);
        let next_gen = next_gen + packs.len() as u64;
        assert_plans(snap, &plans, dropped, next_gen);
        assert_packs(&plans, &packs, next_gen);
        let layout = (&plans[..], &packs[..], &sealed[..]);
        let entries = match self.publish_chunks(layout, (version, snap.wal_lsn), write_chunks) {
            Ok(e) => e,
            Err(e) => {
                self.remove_unpublished(layout);
                return Err(e);
            }
        };
        assert_entries(&plans, &entries, version);
        let mut live = snap.live.clone();
        let mut superseded = Vec::new();
        for month in dropped {
            let gone = live.remove(month).expect("a dropped month is live");
            superseded.extend(gone.iter().cloned());
        }
        for (plan, entry) in plans.iter().zip(entries) {
            let list = Arc::make_mut(live.get_or_default_mut(plan.month));
            if plan.full {
                superseded.extend(list.drain(..));
            }
            list.push(self.chunk_ref(entry));
        }
        let obsolete = self.next_obsolete(snap, &superseded);
        let next = Snapshot {
            meta: Arc::clone(&self.meta),
            version,
            next_generation: next_gen,
            retention_ms: snap.retention_ms,
            irregular: snap.irregular,
            live,
            obsolete: Arc::new(obsolete),
            wal_lsn: snap.wal_lsn,
            unfolded: None,
            superseded: Vec::new(),
        };
        assert_next(snap, &next, bump);
        let published = std::time::Instant::now();
        let r = self.publish_next(next, superseded, || self.remove_unpublished(layout));
        tracing::debug!(
            series = %self.meta.key,
            months = plans.len(),
            packs = packs.len(),
            files_ms = (published - started).as_secs_f64() * 1e3,
            manifest_ms = published.elapsed().as_secs_f64() * 1e3,
            "storage: commit"
        );
        r
    }

    /// Which runs of `plans` a commit writes as one pack file each (generations from
    /// `next_gen` on, after every chunk's): consecutive months, greedily, while the
    /// pack stays within `storage.pack_target_bytes` (0: never), at least two months
    /// per pack. A bulk write of years thus creates a few files instead of one per
    /// month (three for a scalar month, with its sidecars): on a filesystem that has
    /// deleted many files, creating one costs up to half a millisecond.
    ///
    /// Raw and compressed months go into separate packs. A raw month counts at the
    /// most its chunk and sidecars can take. A compressed month (`sealed`, built
    /// already) counts its exact size, so a run of sealed months is cut exactly where
    /// the pack pass would cut it (`storage::packer`): a bulk load of finished months
    /// leaves that pass nothing to rewrite.
    fn write_packs(
        &self,
        plans: &[MonthPlan],
        sealed: &[Option<sealed::SealedChunk>],
        next_gen: u64,
    ) -> Vec<WritePack> {
        let target = self.opts.pack_target_bytes;
        let mut out = Vec::new();
        if target == 0 || plans.len() < 2 {
            return out;
        }
        let ncols = self.meta.key.kind().ncols();
        let size = |i: usize| match &sealed[i] {
            // The entry as a file of its own: what the pack pass sizes packs by.
            Some(z) => super::packer::packed_size(
                &BuiltChunk::Sealed(z).entry(super::format::PackLoc::NONE),
            ),
            None => {
                let rows = plans[i].rows();
                let chunk = CHUNK_HEADER_LEN as u64 + ncols as u64 * stride_of(rows as u64);
                // Each of the three parts starts aligned: at most one alignment's
                // padding after each.
                chunk + sidecar::max_len(&self.meta, rows, &self.opts) + 3 * COLUMN_ALIGN as u64
            }
        };
        let close = |run: std::ops::Range<usize>, out: &mut Vec<WritePack>| {
            if run.len() >= 2 {
                let generation = next_gen + out.len() as u64;
                out.push(WritePack {
                    plans: run,
                    generation,
                });
            }
        };
        let fits = |count: usize, bytes: u64| PackIndex::data_start(count) + bytes <= target;
        let (mut start, mut bytes) = (0, 0u64);
        for (i, p) in plans.iter().enumerate() {
            let n = size(i);
            if !fits(1, n) {
                close(start..i, &mut out);
                (start, bytes) = (i + 1, 0);
                continue;
            }
            let other_kind =
                i > start && plans[i - 1].compressed.is_some() != p.compressed.is_some();
            if other_kind || !fits(i - start + 1, bytes + n) {
                close(start..i, &mut out);
                (start, bytes) = (i, 0);
            }
            bytes += n;
        }
        close(start..plans.len(), &mut out);
        out
    }

    /// The commit point shared by writes, compression and packing: publishes `next`'s
    /// manifest and installs it; the chunks it `superseded` are marked obsolete. When
    /// the previous manifest is durably back, `remove_new` removes the files the
    /// commit wrote (they are past its `next_generation`, recovery would too).
    pub(super) fn publish_next(
        &self,
        next: Snapshot,
        superseded: Vec<Arc<ChunkRef>>,
        remove_new: impl FnOnce(),
    ) -> Result<()> {
        match self.publish_manifest(&next.to_manifest()) {
            Ok(()) => {
                self.set_current(Arc::new(next));
                let mut retired = self.retired.locked();
                retired.retain(|_, c| c.strong_count() > 0);
                for c in superseded {
                    c.mark_obsolete();
                    retired.insert((c.entry.month, c.entry.generation), Arc::downgrade(&c));
                }
                Ok(())
            }
            Err((e, OnDisk::Previous { durable: true })) => {
                remove_new();
                Err(e)
            }
            // The new files stay for recovery: they are past the previous manifest's
            // `next_generation`, and needed if the new manifest is the durable one.
            Err((e, OnDisk::Previous { durable: false })) => Err(e),
            Err((e, OnDisk::Next)) => {
                // The chunks the write superseded are not unlinked, in case the old
                // manifest is the one a crash brings back.
                drop(superseded);
                self.set_current(Arc::new(next));
                Err(e)
            }
        }
    }

    /// Publishes `next` as the series' `MANIFEST` (temp, fsync, rename, directory
    /// fsync): the commit point of writes and of maintenance alike. On failure it says
    /// which manifest is on disk now, and the caller serves exactly that one:
    ///
    /// * writing or renaming the new manifest failed: the previous one is untouched;
    /// * the directory fsync after the rename failed, so the new manifest's
    ///   durability is unknown and the commit is about to be refused: the previous
    ///   manifest is put back so the refusal is true (`durable` says whether that put
    ///   back reached the disk too);
    /// * the previous manifest could not be put back: the new one is on disk and must
    ///   be served (the outcome is unknown to the client, as after a timeout).
    pub(super) fn publish_manifest(
        &self,
        next: &super::format::Manifest,
    ) -> std::result::Result<(), (StorageError, OnDisk)> {
        let mut on_disk = self.on_disk.locked();
        let r = self.publish_manifest_over(&on_disk, next);
        if matches!(r, Ok(()) | Err((_, OnDisk::Next))) {
            *on_disk = next.clone();
        }
        r
    }

    fn publish_manifest_over(
        &self,
        previous: &super::format::Manifest,
        next: &super::format::Manifest,
    ) -> std::result::Result<(), (StorageError, OnDisk)> {
        let rel = format!("{}/{MANIFEST_NAME}", self.rel_dir);
        if let Err(e) = fsio::write_file_synced(&self.dir, MANIFEST_NAME, &[&next.encode()]) {
            return Err((StorageError::io(rel, e), OnDisk::Previous { durable: true }));
        }
        let Err(e) = fsio::fsync_dir(&self.dir) else {
            return Ok(());
        };
        let err = StorageError::io(rel, e);
        match fsio::write_file_synced(&self.dir, MANIFEST_NAME, &[&previous.encode()]) {
            Ok(()) => {
                let durable = fsio::fsync_dir(&self.dir).is_ok();
                Err((err, OnDisk::Previous { durable }))
            }
            Err(e) => {
                tracing::error!(series = %self.rel_dir, error = %e,
                    "could not restore the previous manifest after a failed directory fsync; serving the new one");
                Err((err, OnDisk::Next))
            }
        }
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

    /// The obsolete entries of the state after a commit: those of `snap` whose files
    /// are still there (recovery deletes the rest), then the chunks it `superseded`.
    pub(super) fn next_obsolete(
        &self,
        snap: &Snapshot,
        superseded: &[Arc<ChunkRef>],
    ) -> Vec<ChunkEntry> {
        let mut obsolete: Vec<ChunkEntry> = snap
            .obsolete
            .iter()
            .filter(|e| self.file_exists(e))
            .cloned()
            .collect();
        obsolete.extend(superseded.iter().map(|c| ChunkEntry {
            state: STATE_OBSOLETE,
            ..c.entry.clone()
        }));
        obsolete
    }

    /// Writes every planned chunk (and its sidecars), as files of their own or into the
    /// write's `packs`, fsyncs them and the directory, and returns the manifest
    /// entries, in plan order. `write_threads` threads (the caller's among them) build
    /// and write the files (checksums, sidecars, copies into the page cache), a pack
    /// or a file's month at a time; `sync_threads` more fsync them meanwhile, so the
    /// fsyncs of a many-month write wait on the device together instead of one after
    /// another. A one-month write spawns no thread at all. Every file is fsynced
    /// before this returns.
    fn publish_chunks(
        &self,
        layout: Layout<'_, '_>,
        (version, wal_lsn): (u64, u64),
        write_chunks: u32,
    ) -> Result<Vec<ChunkEntry>> {
        let plans = layout.0;
        let sync_threads = if plans.len() > 1 {
            self.opts.sync_threads
        } else {
            0
        };
        let (results, synced) = fsio::SyncPool::run(&self.dir, sync_threads, |pool| {
            self.publish_all(layout, (version, wal_lsn), write_chunks, pool)
        });
        let mut entries = Vec::with_capacity(plans.len());
        for r in results {
            entries.extend(r?);
        }
        synced.map_err(|(name, e)| StorageError::io(format!("{}/{name}", self.rel_dir), e))?;
        // Every plan has its entry unless a failure stopped the workers, and that
        // failure was returned above.
        assert_eq!(
            entries.len(),
            plans.len(),
            "a chunk of the write went missing"
        );
        fsio::fsync_dir(&self.dir).map_err(|e| StorageError::io(self.rel_dir.to_string(), e))?;
        Ok(entries)
    }

    /// Runs the write's units (a pack, or one month's files) on the caller's thread
    /// and up to `write_threads - 1` helpers; stops at the first failure. Each unit's
    /// entries come back in its place, so the concatenation is in plan order. A helper
    /// that cannot be spawned only costs parallelism.
    fn publish_all(
        &self,
        (plans, packs, sealed): Layout<'_, '_>,
        (version, wal_lsn): (u64, u64),
        write_chunks: u32,
        pool: &fsio::SyncPool<'_>,
    ) -> Vec<Result<Vec<ChunkEntry>>> {
        let units = write_units(plans.len(), packs);
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<Vec<ChunkEntry>>>>> =
            Mutex::new((0..units.len()).map(|_| None).collect());
        let stamp = (version, wal_lsn, write_chunks);
        let work = || {
            // This thread's buffers for split months, reused from unit to unit.
            let mut scratch = Scratch::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= units.len() || pool.failed() {
                    break;
                }
                let r = match units[i] {
                    WriteUnit::File(p) => self
                        .publish_one(&plans[p], sealed[p].as_ref(), stamp, pool, &mut scratch)
                        .map(|e| vec![e]),
                    WriteUnit::Pack(k) => self.publish_pack(
                        (
                            &plans[packs[k].plans.clone()],
                            &sealed[packs[k].plans.clone()],
                        ),
                        &packs[k],
                        stamp,
                        pool,
                        &mut scratch,
                    ),
                };
                let failed = r.is_err();
                results.locked()[i] = Some(r);
                if failed {
                    next.store(units.len(), Ordering::Relaxed);
                }
            }
        };
        let helpers = units
            .len()
            .min(self.opts.write_threads.max(1))
            .saturating_sub(1);
        if helpers == 0 {
            work();
        } else {
            std::thread::scope(|s| {
                for _ in 0..helpers {
                    if fsio::spawn_scoped(s, &self.dir, "fastk-write", work).is_err() {
                        break;
                    }
                }
                work();
            });
        }
        // Units after a failure never ran: the failure comes first in unit order or
        // is among the results, and the caller stops at it.
        results.into_value().into_iter().map_while(|r| r).collect()
    }

    /// The header of `plan`'s chunk before its columns fill in rows, bounds, stride
    /// and checksum ([`ChunkParts::new`]).
    fn chunk_header(
        &self,
        plan: &MonthPlan,
        (version, wal_lsn, write_chunks): (u64, u64, u32),
    ) -> ChunkHeader {
        ChunkHeader {
            meta: Arc::clone(&self.meta),
            ncols: plan.ncols(),
            rows: 0,
            first_ts: 0,
            last_ts: 0,
            month: plan.month,
            flags: if plan.full { FLAG_FULL } else { 0 },
            generation: plan.generation,
            write_version: version,
            write_chunks,
            body_xxh3: 0,
            stride: 0,
            wal_lsn,
            body_len: 0,
        }
    }

    /// One raw month's chunk and its sidecars, built from its plan (a compressed
    /// month was built before the write was laid out: [`sealed::prebuild`]).
    fn build_chunk<'p>(
        &self,
        plan: &'p MonthPlan,
        stamp: (u64, u64, u32),
        cols: &'p [&'p [i64]],
    ) -> BuiltChunk<'p> {
        assert!(
            plan.compressed.is_none(),
            "a compressed month is built before the layout of its write"
        );
        BuiltChunk::Raw {
            raw: Box::new(ChunkParts::new(self.chunk_header(plan, stamp), cols)),
            sidecars: sidecar::build(&self.meta, cols, &self.opts),
        }
    }

    /// Builds and writes one month's chunk and sidecars as files of their own,
    /// queueing each file on `pool` for its fsync.
    fn publish_one(
        &self,
        plan: &MonthPlan,
        sealed: Option<&sealed::SealedChunk>,
        stamp: (u64, u64, u32),
        pool: &fsio::SyncPool<'_>,
        scratch: &mut Scratch,
    ) -> Result<ChunkEntry> {
        scratch.resize_with(1, Vec::new);
        let cols;
        let built = match sealed {
            Some(s) => BuiltChunk::Sealed(s),
            None => {
                cols = plan.columns(&mut scratch[0]);
                self.build_chunk(plan, stamp, &cols)
            }
        };
        let write = |kind: FileKind, bytes: &[&[u8]]| -> Result<()> {
            let name = data_file_name(plan.month, plan.generation, kind);
            let direct = self.opts.direct_write_min_bytes;
            let file = fsio::write_unreferenced_sized(&self.dir, &name, bytes, direct)
                .map_err(|e| StorageError::io(format!("{}/{name}", self.rel_dir), e))?;
            pool.push(file, name);
            Ok(())
        };
        write(FileKind::Chunk, &built.slices())?;
        if let Some(z) = &built.sidecars().zonemap {
            write(FileKind::ZoneMap, &[z])?;
        }
        if let Some(v) = &built.sidecars().vindex {
            write(FileKind::ValueIndex, &[v])?;
        }
        Ok(built.entry(super::format::PackLoc::NONE))
    }

    /// Builds the months of `plans` (one [`WritePack`]) and writes them as one pack
    /// file (layout in `storage::pack`): the index, then each chunk image and its
    /// sidecars at the next aligned offsets, in one sequential write. The pack is
    /// queued on `pool` for its fsync. Returns the packed entries, in plan order.
    fn publish_pack(
        &self,
        (plans, sealed): (&[MonthPlan], &[Option<sealed::SealedChunk>]),
        pack: &WritePack,
        stamp: (u64, u64, u32),
        pool: &fsio::SyncPool<'_>,
        scratch: &mut Scratch,
    ) -> Result<Vec<ChunkEntry>> {
        scratch.resize_with(plans.len(), Vec::new);
        // A sealed month's columns are not needed again: its bytes are built.
        let cols: Vec<Vec<&[i64]>> = plans
            .iter()
            .zip(sealed)
            .zip(scratch.iter_mut())
            .map(|((p, z), s)| {
                if z.is_some() {
                    Vec::new()
                } else {
                    p.columns(s)
                }
            })
            .collect();
        let built: Vec<BuiltChunk> = plans
            .iter()
            .zip(sealed)
            .zip(&cols)
            .map(|((p, z), c)| match z {
                Some(z) => BuiltChunk::Sealed(z),
                None => self.build_chunk(p, stamp, c),
            })
            .collect();
        let mut index = PackIndex {
            generation: pack.generation,
            entries: Vec::with_capacity(built.len()),
        };
        // The manifest entries (sidecar checksums made once), placed below.
        let mut entries: Vec<ChunkEntry> = built
            .iter()
            .map(|b| b.entry(super::format::PackLoc::NONE))
            .collect();
        let mut offset = PackIndex::data_start(built.len());
        for c in &entries {
            let e = PackEntry {
                month: c.month,
                generation: c.generation,
                offset,
                chunk_len: c.file_len,
                zonemap: c.zonemap,
                vindex: c.vindex,
            };
            offset = align_up(e.end() as usize) as u64;
            index.entries.push(e);
        }
        let pack_len = offset;
        let head = index.encode();
        // The runs of the file in order, each after the padding up to its offset.
        let mut runs: Vec<&[u8]> = Vec::with_capacity(2 + built.len() * 16);
        let mut at = 0u64;
        put_at(&mut runs, &mut at, &head, 0);
        for (b, e) in built.iter().zip(&index.entries) {
            let (z, v) = super::pack::sidecar_offsets(e.offset, e.chunk_len, e.zonemap.len);
            let mut to = e.offset;
            for run in b.slices() {
                put_at(&mut runs, &mut at, run, to);
                to += run.len() as u64;
            }
            if let Some(zm) = &b.sidecars().zonemap {
                put_at(&mut runs, &mut at, zm, z);
            }
            if let Some(vi) = &b.sidecars().vindex {
                put_at(&mut runs, &mut at, vi, v);
            }
        }
        put_at(&mut runs, &mut at, &[], pack_len);
        assert_eq!(at, pack_len, "a pack ends where its index says");
        let name = pack_file_name(pack.generation);
        let direct = self.opts.direct_write_min_bytes;
        let file = fsio::write_unreferenced_sized(&self.dir, &name, &runs, direct)
            .map_err(|e| StorageError::io(format!("{}/{name}", self.rel_dir), e))?;
        pool.push(file, name);
        for (c, e) in entries.iter_mut().zip(&index.entries) {
            c.pack = super::format::PackLoc {
                generation: pack.generation,
                offset: e.offset,
                len: pack_len,
            };
        }
        Ok(entries)
    }

    /// Best-effort removal of files of a write that did not commit.
    fn remove_unpublished(&self, (plans, packs, _): Layout<'_, '_>) {
        for p in plans {
            for kind in [FileKind::Chunk, FileKind::ZoneMap, FileKind::ValueIndex] {
                let _ = std::fs::remove_file(self.dir.join(data_file_name(
                    p.month,
                    p.generation,
                    kind,
                )));
            }
        }
        for pack in packs {
            let _ = std::fs::remove_file(self.dir.join(pack_file_name(pack.generation)));
        }
        let _ = fsio::fsync_dir(&self.dir);
    }

    /// Replaces the current snapshot after recovery or maintenance committed a manifest.
    pub(crate) fn install(&self, snap: Snapshot) {
        *self.on_disk.locked() = snap.to_manifest();
        self.set_current(Arc::new(snap));
    }

    /// The manifest on disk and the current snapshot, taken together under the writer
    /// lock (a replica publisher's consistent state). The snapshot holds a `ChunkRef`
    /// of every file the manifest lists as live (its live chunks, and those an
    /// in-memory rewrite of the log superseded), so none of them is unlinked while
    /// the caller copies it. Rows only in the log are not in the manifest.
    pub fn published(&self) -> Result<(super::format::Manifest, Arc<Snapshot>)> {
        let _guard = self.lock_live()?;
        let m = self.on_disk.locked().clone();
        Ok((m, self.snapshot()))
    }

    /// Replica side (`super::follow`): commits the primary's manifest `next`, whose
    /// new live files are already written, verified and fsynced in this directory,
    /// with this store's `wal_lsn`, and swaps the snapshot. `next` must continue this
    /// series (`follow::continues`): an entry live here is reused (its mapping and
    /// verified identity survive), a new one has a generation at or past the current
    /// `next_generation`, so before this commit recovery treats it as uncommitted.
    /// Chunks no longer live are listed obsolete and unlinked once unread.
    pub(super) fn apply_followed(&self, next: super::format::Manifest, wal_lsn: u64) -> Result<()> {
        let _guard = self.lock_live()?;
        let snap = self.snapshot();
        if !super::follow::continues(&snap, &next) {
            return Err(StorageError::Conflict(format!(
                "{}: the manifest does not continue the local series",
                self.rel_dir
            )));
        }
        let mut old: std::collections::HashMap<(i32, u64), Arc<ChunkRef>> = snap
            .live
            .values()
            .flat_map(|l| l.iter())
            .map(|c| ((c.entry.month, c.entry.generation), Arc::clone(c)))
            .collect();
        let mut live: BTreeMap<i32, Vec<Arc<ChunkRef>>> = BTreeMap::new();
        for e in next.entries.iter().filter(|e| e.state == STATE_LIVE) {
            let c = match old.remove(&(e.month, e.generation)) {
                Some(c) => c,
                None if self.file_exists(e) => self.chunk_ref(e.clone()),
                None => {
                    return Err(StorageError::NotFound(format!(
                        "{}: a file of the followed manifest is missing",
                        self.rel_dir
                    )));
                }
            };
            live.entry(e.month).or_default().push(c);
        }
        for v in live.values_mut() {
            v.sort_by_key(|c| c.entry.generation);
        }
        let superseded: Vec<Arc<ChunkRef>> = old.into_values().filter(|c| !c.is_memory()).collect();
        let obsolete = self.next_obsolete(&snap, &superseded);
        let state = Snapshot {
            meta: Arc::clone(&self.meta),
            version: next.version,
            next_generation: next.next_generation,
            retention_ms: next.retention_ms,
            irregular: next.irregular,
            live: super::snapshot::month_lists(live),
            obsolete: Arc::new(obsolete),
            wal_lsn,
            unfolded: None,
            superseded: Vec::new(),
        };
        let manifest = state.to_manifest();
        manifest.validate().map_err(|why| {
            StorageError::corrupted(format!("{}/{MANIFEST_NAME}", self.rel_dir), why)
        })?;
        // The followed files stay when the previous manifest is back: they are past its
        // `next_generation`, so recovery removes them, and the next poll fetches again.
        self.publish_next(state, superseded, || {})
    }

    /// Holds the writer lock while `f` runs (admin actions that rewrite the manifest).
    /// Fails `NotFound` without running `f` when the series was deleted meanwhile.
    pub fn with_write_lock<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _guard = self.lock_folded()?;
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

/// Bytes of a state's rows waiting in memory to be folded.
fn unfolded_bytes(snap: &Snapshot) -> u64 {
    snap.unfolded.as_ref().map_or(0, |u| u.bytes)
}

fn push_row(cols: &mut [Vec<i64>], src: &[&[i64]], j: usize) {
    for (c, out) in cols.iter_mut().enumerate() {
        out.push(src[c][j]);
    }
}

fn check_shape(meta: &SeriesMeta, batch: &WriteBatch) -> Result<()> {
    let ncols = meta.key.kind().ncols();
    if batch.cols.len() != ncols {
        return Err(StorageError::InvalidArgument(format!(
            "a {} write needs {ncols} columns, got {}",
            meta.key.kind().as_str(),
            batch.cols.len()
        )));
    }
    let n = batch.len();
    if batch.cols.iter().any(|c| c.len() != n) {
        return Err(StorageError::InvalidArgument(
            "columns have different lengths".into(),
        ));
    }
    Ok(())
}

/// Refuses a write of more rows than `storage.max_write_rows`, whatever the front end.
fn check_row_limit(rows: usize, max: usize) -> Result<()> {
    if rows > max {
        return Err(StorageError::PayloadTooLarge(format!(
            "a write may carry at most {max} rows (storage.max_write_rows), this one has {rows}; split it into several writes"
        )));
    }
    Ok(())
}

fn check_ts_bounds(ts: &[i64]) -> Result<()> {
    if let Some(i) = ts.iter().position(|t| !(TS_MIN..=TS_MAX).contains(t)) {
        return Err(StorageError::InvalidArgument(format!(
            "record {i}: ts {} is outside the supported range {TS_MIN}..={TS_MAX} (years 1000 to 9999, in milliseconds)",
            ts[i]
        )));
    }
    Ok(())
}

fn check_expected(snap: &Snapshot, expected: Option<u64>) -> Result<()> {
    match expected {
        Some(v) if v != snap.version => Err(StorageError::PreconditionFailed(format!(
            "expected version {v}, but the series is at version {}",
            snap.version
        ))),
        _ => Ok(()),
    }
}

/// Sorts all columns by `ts` and refuses a `ts` repeated inside the request, naming
/// the first record (in request order) that repeats an earlier one.
pub fn sort_and_check_duplicates(batch: &mut WriteBatch) -> Result<()> {
    let ts = &batch.cols[0];
    if ts.windows(2).all(|w| w[0] < w[1]) {
        return Ok(());
    }
    let mut perm: Vec<u32> = (0..ts.len() as u32).collect();
    perm.sort_by_key(|&i| ts[i as usize]);
    let dup = perm
        .windows(2)
        .filter(|w| ts[w[0] as usize] == ts[w[1] as usize])
        .map(|w| w[0].max(w[1]) as usize)
        .min();
    if let Some(i) = dup {
        let first = (0..i).find(|&k| ts[k] == ts[i]).unwrap_or(0);
        return Err(StorageError::Unprocessable(format!(
            "record {i}: ts {} repeats record {first} of the same request",
            ts[i]
        )));
    }
    for col in batch.cols.iter_mut() {
        *col = perm.iter().map(|&i| col[i as usize]).collect();
    }
    Ok(())
}

/// Whether the pieces of a write (their shapes already checked) can be written in
/// place by [`Series::write_pieces`]: the timestamps (column 0) increase strictly
/// within and across pieces.
pub fn pieces_in_order(pieces: &[Vec<&[i64]>]) -> bool {
    let mut last: Option<i64> = None;
    for p in pieces {
        let ts = p[0];
        let (Some(&first), Some(&end)) = (ts.first(), ts.last()) else {
            continue;
        };
        if last.is_some_and(|l| l >= first) || !ts.windows(2).all(|w| w[0] < w[1]) {
            return false;
        }
        last = Some(end);
    }
    true
}

/// Most columns of a series (a kline's ts, open, high, low, close, volume).
pub const MAX_NCOLS: usize = 6;
const _: () = assert!(MAX_NCOLS == 1 + crate::storage::batch::KLINE_COLUMNS.len());

/// [`month_groups`] as an iterator: the runs of one month each of sorted timestamps,
/// without a vector (the log's apply visits thousands of one-row batches per group).
struct MonthRuns<'a> {
    ts: &'a [i64],
    start: usize,
}

impl<'a> MonthRuns<'a> {
    fn new(ts: &'a [i64]) -> MonthRuns<'a> {
        MonthRuns { ts, start: 0 }
    }
}

impl Iterator for MonthRuns<'_> {
    type Item = (i32, std::ops::Range<usize>);

    fn next(&mut self) -> Option<Self::Item> {
        let start = self.start;
        let &first = self.ts.get(start)?;
        let month = MonthPartition::from_ts(first);
        let end_ts = month.end_ts();
        // One probe settles the common case: the rest of the batch is in this month.
        let len = if self.ts[self.ts.len() - 1] <= end_ts {
            self.ts.len() - start
        } else {
            self.ts[start..].partition_point(|&t| t <= end_ts)
        };
        self.start = start + len;
        Some((month.0, start..start + len))
    }
}

/// Splits sorted timestamps into runs of one month each.
pub fn month_groups(ts: &[i64]) -> Vec<(i32, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < ts.len() {
        let month = MonthPartition::from_ts(ts[start]);
        let end_ts = month.end_ts();
        let len = ts[start..].partition_point(|&t| t <= end_ts);
        out.push((month.0, start..start + len));
        start += len;
    }
    out
}

/// Groups manifest entries into the live map of a snapshot.
pub(crate) fn live_map(series: &Series, entries: &[ChunkEntry]) -> super::snapshot::MonthMap {
    let mut live: BTreeMap<i32, Vec<Arc<ChunkRef>>> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.state == STATE_LIVE) {
        live.entry(e.month)
            .or_default()
            .push(series.chunk_ref(e.clone()));
    }
    for v in live.values_mut() {
        v.sort_by_key(|c| c.entry.generation);
    }
    super::snapshot::month_lists(live)
}

impl Series {
    /// Absolute directory of the series.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

/// Commit-point assertions on the plans (cheap, on in release builds too): months
/// strictly ascending within a write, generations ascending from the snapshot's
/// `next_generation` and below the new one, row counts that fit the format's `u32`.
fn assert_plans(snap: &Snapshot, plans: &[MonthPlan], dropped: &[i32], next_gen: u64) {
    assert!(
        !plans.is_empty() || !dropped.is_empty(),
        "a commit publishes a chunk or drops a month"
    );
    assert!(
        dropped.windows(2).all(|w| w[0] < w[1]),
        "dropped months must be strictly ascending"
    );
    assert!(
        dropped
            .iter()
            .all(|m| snap.live.contains_key(m) && plans.iter().all(|p| p.month != *m)),
        "a dropped month must be live and not rewritten by the same commit"
    );
    if plans.is_empty() {
        assert!(next_gen > snap.next_generation, "next_generation grows");
        return;
    }
    assert!(
        plans.windows(2).all(|w| w[0].month < w[1].month),
        "months of one write must be strictly ascending"
    );
    assert!(
        plans.windows(2).all(|w| w[0].generation < w[1].generation),
        "generations of one write must be strictly ascending"
    );
    assert!(
        plans[0].generation >= snap.next_generation,
        "a new chunk reuses generation {} below next_generation {}",
        plans[0].generation,
        snap.next_generation
    );
    assert!(
        plans[plans.len() - 1].generation < next_gen,
        "a new chunk's generation is not below the new next_generation"
    );
    for p in plans {
        let rows = p.rows();
        assert!(rows > 0, "an empty chunk was planned");
        assert!(u32::try_from(rows).is_ok(), "a chunk's rows must fit u32");
        assert!(p.cols.iter().all(|c| c.len() == rows), "ragged columns");
        assert!(
            p.split
                .iter()
                .all(|runs| runs.iter().map(|r| r.len()).sum::<usize>() == rows),
            "ragged split columns"
        );
        assert!(
            p.split.is_empty() || (p.cols.is_empty() && p.split.len() == p.ncols()),
            "a split month keeps its rows in its runs only"
        );
    }
}

/// The packs of a commit: ascending, disjoint runs of two or more plans, all raw or
/// all compressed, with generations past every plan's and below the new
/// `next_generation`.
fn assert_packs(plans: &[MonthPlan], packs: &[WritePack], next_gen: u64) {
    let last_plan = plans.last().map_or(0, |p| p.generation);
    for (k, pack) in packs.iter().enumerate() {
        assert!(
            pack.plans.len() >= 2 && pack.plans.end <= plans.len(),
            "a pack holds two or more of the commit's plans"
        );
        let run = &plans[pack.plans.clone()];
        assert!(
            run.iter()
                .all(|p| p.compressed.is_some() == run[0].compressed.is_some()),
            "a pack of a write holds raw or compressed chunks, not both"
        );
        assert!(
            pack.generation > last_plan && pack.generation < next_gen,
            "a pack's generation follows its chunks' and precedes next_generation"
        );
        if k > 0 {
            assert!(
                packs[k - 1].plans.end <= pack.plans.start
                    && packs[k - 1].generation < pack.generation,
                "packs of a write ascend and do not overlap"
            );
        }
    }
}

/// The entries written match their plans: month, generation, rows, version.
fn assert_entries(plans: &[MonthPlan], entries: &[ChunkEntry], version: u64) {
    assert_eq!(plans.len(), entries.len(), "one entry per plan");
    for (p, e) in plans.iter().zip(entries) {
        assert_eq!(
            (e.month, e.generation),
            (p.month, p.generation),
            "entry/plan"
        );
        assert_eq!(e.rows, p.rows() as u64, "entry rows match the plan");
        assert_eq!(e.write_version, version, "entry write_version");
        assert_eq!(e.flags & FLAG_FULL != 0, p.full, "entry full flag");
    }
}

/// The new snapshot follows the old one: version up by exactly one (by zero for a
/// compaction), every generation below `next_generation`, months' chunks in
/// generation order.
pub(super) fn assert_next(prev: &Snapshot, next: &Snapshot, bump: bool) {
    assert_eq!(next.version, prev.version + u64::from(bump), "version step");
    assert!(
        next.next_generation > prev.next_generation,
        "next_generation grows"
    );
    for chunks in next.live.values() {
        assert!(
            chunks
                .windows(2)
                .all(|w| w[0].entry.generation < w[1].entry.generation)
        );
        assert!(
            chunks
                .iter()
                .all(|c| c.entry.generation < next.next_generation),
            "a live chunk at or past next_generation"
        );
    }
}

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
            let runs: Vec<_> = MonthRuns::new(ts).collect();
            assert_eq!(runs, month_groups(ts), "{ts:?}");
        }
    }
}

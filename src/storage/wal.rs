//! The store's write-ahead log: small writes, to one series or to thousands, are made
//! durable here many at a time (group commit), applied to in-memory chunks that
//! readers see at once, and folded into chunk files later by size and age.
//!
//! ```text
//! <root>/wal/<first lsn, 16 hex digits>.wal    segments, in lsn order
//!
//! record = header, payload
//!   header (RECORD_HEADER_LEN bytes):
//!     magic      u32  "FKWR"
//!     payload    u32  payload length in bytes
//!     lsn        u64  log sequence number: the previous record's plus one
//!     xxh3       u64  of the first 16 header bytes and the payload
//!   payload:
//!     entries    u32
//!     per entry:
//!       kind     u8   the series kind's code (1 kline, 2 scalar)
//!       parts    (u8 length, bytes) for symbol, timeframe (and category, name)
//!       ncols    u8
//!       rows     u32
//!       columns  ncols x rows x i64 (ts first), column after column
//! ```
//!
//! One record is one write, all-or-nothing: a many-series write is one record. Every
//! integer is little-endian. Invariants:
//!
//! 1. A write is acknowledged only after its record and every record before it are on
//!    disk (`fdatasync` of the segment); the in-memory state is installed after that
//!    sync, so no reader sees a row that a crash could take back.
//! 2. Record lsns are consecutive across segments; a segment is named by its first.
//! 3. A series' manifest records the last lsn folded into its chunks (`wal_lsn`);
//!    replay applies exactly the later records, so replay is idempotent.
//! 4. A segment is removed only when every series holding rows of its records in
//!    memory has folded them ([`Wal::remove_folded`]).
//! 5. A large group of writes that can only append (no expected version, every row
//!    after its series' last) is written and synced by the sync helper while the
//!    committer applies it in memory ([`Wal::commit_group`]); should such a write still be
//!    refused, its records are cut off the log again before anything is answered, and
//!    the group is applied and logged again one write after the other, as any group.
//!
//! On open, a record that is cut short or fails its checksum at the end of the last
//! segment (a crash mid-append) is cut off, with a note. One followed by valid records
//! is corruption in the middle: the open fails with a clear error, and
//! `fastk admin repair` cuts the log there, reporting what it dropped.

use crate::sync::{CondvarExt, LockExt, RwLockExt};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use xxhash_rust::xxh3::Xxh3;

use super::error::{Result, StorageError};
use super::fsio::{self, failpoints};
use super::series::{Series, WriteBatch, WriteReport};
use super::snapshot::Snapshot;
use crate::record::{SeriesKey, SeriesKind};

mod apply;
mod group;
mod record;
mod segments;
use apply::*;
pub use record::{Record, RecordError, decode_record, encode_record};
pub use segments::{
    Corrupt, LogRepair, Scan, cut_at_corruption, list_segments, repair_log, scan, scan_each,
    segment_name,
};

/// Directory of the log under the store root.
pub const WAL_DIR: &str = "wal";
/// Extension of a segment file.
pub const SEGMENT_EXT: &str = "wal";
const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"FKWR");

const U8_LEN: usize = 1;
const U32_LEN: usize = 4;
const U64_LEN: usize = 8;
const MAGIC_OFFSET: usize = 0;
const PAYLOAD_LEN_OFFSET: usize = MAGIC_OFFSET + U32_LEN;
const LSN_OFFSET: usize = PAYLOAD_LEN_OFFSET + U32_LEN;
const XXH3_OFFSET: usize = LSN_OFFSET + U64_LEN;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = XXH3_OFFSET + U64_LEN;
const _: () = assert!(RECORD_HEADER_LEN == 24);
/// Most entries (series) one record may hold.
pub const MAX_RECORD_ENTRIES: usize = 1 << 20;

/// Tunables of the log and the fold (see `[storage]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment past this size is closed and a new one started.
    pub segment_bytes: u64,
    /// Most bytes of one record (one write); a larger many-series write is refused.
    pub max_record_bytes: usize,
    /// How long the committer waits for more writes before a sync (0: none; the
    /// sync in progress is the window, and writes arriving meanwhile share the next).
    pub group_window: Duration,
    /// A single-series write of more rows than this skips the log: it is written as
    /// chunk files directly (bulk loads), after the series' memory rows are folded.
    pub direct_rows: usize,
    /// A series is folded once this many rows wait in memory.
    pub fold_rows: u64,
    /// ... or once its oldest unfolded row has waited this long.
    pub fold_age: Duration,
    /// Past this many bytes of log, every series holding the oldest segment is folded.
    pub max_log_bytes: u64,
    /// Past this many bytes of rows in memory, every series is folded.
    pub memory_bytes: u64,
    /// How often the background fold looks at the series.
    pub fold_interval: Duration,
    /// How long queued writes wait for the fold while the log is over its limits
    /// (twice `max_log_bytes`, or rows in memory past twice `memory_bytes`) before
    /// they are refused as unavailable (retry).
    pub full_wait: Duration,
    /// Series one fold pass folds at once (each fold waits on a few fsyncs).
    pub fold_threads: usize,
    /// Most rows of one in-memory chunk: an append to a month's last in-memory chunk
    /// copies it, so past this size a new one starts instead, which bounds the copy a
    /// tiny write makes (a month's in-memory chunks are concatenated by the fold).
    pub memory_chunk_rows: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            max_record_bytes: 256 << 20,
            group_window: Duration::ZERO,
            direct_rows: 8192,
            fold_rows: 8192,
            fold_age: Duration::from_secs(600),
            max_log_bytes: 1 << 30,
            memory_bytes: 512 << 20,
            fold_interval: Duration::from_secs(1),
            full_wait: Duration::from_secs(30),
            fold_threads: 4,
            memory_chunk_rows: 256,
        }
    }
}

/// Bytes of rows waiting in memory to be folded, over every series of a store. Each
/// series moves it by exactly the change of its own state (`Series::set_current`, the
/// one place a state is swapped, and its drop), so it is the sum of their shares
/// without visiting them: the committer checks it before every group.
#[derive(Debug, Default)]
pub struct UnfoldedBytes(AtomicU64);

impl UnfoldedBytes {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// One series' share moved from `removed` to `added` bytes.
    pub(super) fn shift(&self, added: u64, removed: u64) {
        if added >= removed {
            self.0.fetch_add(added - removed, Ordering::SeqCst);
        } else {
            let before = self.0.fetch_sub(removed - added, Ordering::SeqCst);
            assert!(
                before >= removed - added,
                "unfolded bytes: the store's count holds every series' share"
            );
        }
    }
}

/// One count per open store: compared by identity, like the map cache.
impl PartialEq for UnfoldedBytes {
    fn eq(&self, other: &UnfoldedBytes) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for UnfoldedBytes {}

// ---------------------------------------------------------------- records

// ---------------------------------------------------------------- reading the log

// ---------------------------------------------------------------- the live log

/// One write waiting for the committer: its series and rows (sorted and checked), the
/// versions it expects, and where its outcome goes.
struct Request {
    /// Shared with the apply helper while it applies part of a many-series write.
    entries: Arc<Vec<Entry>>,
    reply: mpsc::SyncSender<Result<Vec<WriteReport>>>,
}

/// One series of a write: its rows (sorted and checked) and the version it expects.
type Entry = (Arc<Series>, WriteBatch, Option<u64>);

/// One entry checked and applied in memory, not yet durable: the series' new state
/// (none for an empty batch), its report, and the rows as logged when they differ
/// from the entry's (a tick batch whose `seq`s the apply numbered).
type Applied = (Option<Snapshot>, WriteReport, Option<WriteBatch>);

/// One write checked and applied in memory, not yet durable: the new state of each of
/// its series (by index in the group), its reports, and the rows numbered by the apply
/// (by entry; see [`Applied`]).
type Planned = (
    Vec<(usize, Snapshot)>,
    Vec<WriteReport>,
    Vec<Option<WriteBatch>>,
);

/// A write that names at least this many series is applied in memory by the
/// committer and the apply helper together, block by block ([`SharedApply`]; each
/// entry is independent: a series appears once in a write). Below it, handing over
/// costs more than it saves.
const PARALLEL_APPLY_ENTRIES: usize = 256;

/// A group that names at least this many series (over all its writes) is synced while
/// it applies, when it can only append (invariant 5). A smaller group applies in
/// microseconds, less than handing its records to the sync helper and waking it costs.
const OVERLAP_SYNC_ENTRIES: usize = PARALLEL_APPLY_ENTRIES;

/// Entries of a many-series write that one thread claims at a time while the
/// committer and the apply helper share it (about 80 µs of work for 1-bar appends).
/// Small enough that neither thread waits long for the other's last block, large
/// enough that claiming costs nothing beside it.
const APPLY_BLOCK_ENTRIES: usize = 64;

#[derive(Default)]
struct Queue {
    pending: Vec<Request>,
    stop: bool,
}

/// The open segment and the closed ones still held.
struct LogFile {
    file: File,
    /// First lsn of the open segment (its name).
    first: u64,
    /// Bytes of the open segment.
    len: u64,
    /// Closed segments: (first lsn, last lsn, bytes).
    closed: VecDeque<(u64, u64, u64)>,
}

/// The live log: a queue of writes, one committer thread that logs them in groups,
/// and the segments.
pub struct Wal {
    dir: PathBuf,
    pub(super) opts: WalOptions,
    queue: Mutex<Queue>,
    wake: Condvar,
    log: Mutex<LogFile>,
    /// The last lsn on disk (assigned and synced).
    committed: AtomicU64,
    /// Bytes of all segments.
    bytes: AtomicU64,
    /// Syncs of the log since open, and records they made durable (group commit
    /// makes the first smaller than the second under concurrent writes).
    syncs: AtomicU64,
    records: AtomicU64,
    /// Set when a failed sync could not be undone: the log refuses writes until the
    /// store is reopened (replay then decides what is durable).
    poisoned: Mutex<Option<String>>,
    /// Pokes the fold thread (a series crossed a threshold).
    pub(super) fold_wake: (Mutex<bool>, Condvar),
    /// Bytes of rows waiting in memory over every series (`StoreOptions::unfolded_bytes`,
    /// kept by the series as they swap states). Past twice `memory_bytes` the committer
    /// holds new writes until the fold has caught up ([`Wal::over_limits`]), so a
    /// sustained many-series load cannot grow memory and the log without bound.
    unfolded: Arc<UnfoldedBytes>,
    /// Held (read) while a group's states are installed, and (write) while a named
    /// snapshot takes its states (`named`): a snapshot never holds part of a
    /// many-series write.
    pub(super) gate: std::sync::RwLock<()>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("committed", &self.committed)
            .finish()
    }
}

impl Wal {
    /// Opens the log for appending after `last_lsn` (the highest lsn any record or
    /// manifest holds): a new segment starts at `last_lsn + 1`. `segments` are the
    /// ones [`scan`] found.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        unfolded: Arc<UnfoldedBytes>,
        last_lsn: u64,
        segments: &[(u64, u64, u64)],
    ) -> Result<Wal> {
        let io_err = |what: String, e| StorageError::io(format!("{WAL_DIR}/{what}"), e);
        fsio::create_dir_durable(dir).map_err(|e| io_err(String::new(), e))?;
        let first = last_lsn + 1;
        let mut closed: VecDeque<(u64, u64, u64)> = segments.iter().copied().collect();
        // An empty segment named `first` (left by an open that wrote nothing) is reused.
        if closed.back().is_some_and(|s| s.0 == first) {
            closed.pop_back();
        }
        let name = segment_name(first);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(&name))
            .map_err(|e| io_err(name.clone(), e))?;
        let len = file.metadata().map_err(|e| io_err(name.clone(), e))?.len();
        assert_eq!(len, 0, "wal: the new segment is empty");
        fsio::fsync_dir(dir).map_err(|e| io_err(String::new(), e))?;
        let bytes = closed.iter().map(|s| s.2).sum();
        Ok(Wal {
            dir: dir.to_path_buf(),
            opts,
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            log: Mutex::new(LogFile {
                file,
                first,
                len: 0,
                closed,
            }),
            committed: AtomicU64::new(last_lsn),
            bytes: AtomicU64::new(bytes),
            syncs: AtomicU64::new(0),
            records: AtomicU64::new(0),
            poisoned: Mutex::new(None),
            fold_wake: (Mutex::new(false), Condvar::new()),
            unfolded,
            gate: std::sync::RwLock::new(()),
        })
    }

    /// The last lsn on disk.
    pub fn committed_lsn(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// (syncs, records) since open.
    pub fn sync_counts(&self) -> (u64, u64) {
        (
            self.syncs.load(Ordering::Relaxed),
            self.records.load(Ordering::Relaxed),
        )
    }

    /// Why the log refuses writes (a sync failed and could not be undone), if it does.
    pub fn poisoned(&self) -> Option<String> {
        self.poisoned.locked().clone()
    }

    /// Bytes of log on disk.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// First lsn of the open segment: records before it are in closed segments.
    pub fn open_segment_first(&self) -> u64 {
        self.log.locked().first
    }

    /// Segments on disk, the open one included.
    pub fn segments(&self) -> usize {
        self.log.locked().closed.len() + 1
    }

    /// First lsn of the oldest segment.
    pub fn oldest_lsn(&self) -> u64 {
        let log = self.log.locked();
        log.closed.front().map_or(log.first, |s| s.0)
    }

    /// Logs one write of one or many series as one record and waits until it is
    /// durable and applied. Batches are sorted and checked by the caller; a series may
    /// appear once.
    pub fn submit(
        &self,
        entries: Vec<(Arc<Series>, WriteBatch, Option<u64>)>,
    ) -> Result<Vec<WriteReport>> {
        if let Some(why) = self.poisoned.locked().clone() {
            return Err(StorageError::Unavailable(why));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut q = self.queue.locked();
            if q.stop {
                return Err(StorageError::Unavailable("the store is closing".into()));
            }
            q.pending.push(Request {
                entries: Arc::new(entries),
                reply: tx,
            });
        }
        self.wake.notify_one();
        rx.recv().unwrap_or_else(|_| {
            Err(StorageError::Unavailable(
                "the log's committer stopped before answering".into(),
            ))
        })
    }

    /// Asks the committer to finish the queued writes and stop.
    pub fn stop(&self) {
        self.queue.locked().stop = true;
        self.wake.notify_all();
        *self.fold_wake.0.locked() = true;
        self.fold_wake.1.notify_all();
    }

    pub fn is_stopping(&self) -> bool {
        self.queue.locked().stop
    }

    /// The committer: takes every queued write, logs them with one sync, installs their
    /// states and answers, until [`Wal::stop`] and an empty queue.
    pub fn run(&self) {
        // The apply helper lives as long as the committer (it is no thread per write):
        // it applies blocks of a many-series write beside the committer. Without a
        // second core, or if it cannot be spawned, the committer applies everything
        // itself.
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        std::thread::scope(|scope| {
            let spawn = |name: &str| {
                let (tx, rx) = mpsc::channel::<HelperJob>();
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn_scoped(scope, move || {
                        while let Ok(job) = rx.recv() {
                            match job {
                                HelperJob::Apply(job) => job.work(true),
                                HelperJob::Drop(states, entries) => drop((states, entries)),
                                HelperJob::Sync(job) => {
                                    let synced = self.append(&job.buf, job.first, job.last);
                                    let _ = job.reply.send(synced);
                                }
                            }
                        }
                    })
                    .ok()
                    .map(|_| tx)
            };
            // Two threads, so that freeing what one group leaves never delays the
            // apply of the next.
            let helpers = Helpers {
                apply: (cores > 1).then(|| spawn("fastk-wal-apply")).flatten(),
                reap: (cores > 1).then(|| spawn("fastk-wal-reap")).flatten(),
                sync: spawn("fastk-wal-sync"),
            };
            self.run_with(&helpers);
            // Dropping the senders ends the helpers; the scope joins them.
            drop(helpers);
        });
    }

    fn run_with(&self, helpers: &Helpers) {
        loop {
            let mut group = {
                let mut q = self.queue.locked();
                while q.pending.is_empty() && !q.stop {
                    q = self.wake.wait_now(q);
                }
                if q.pending.is_empty() {
                    return;
                }
                std::mem::take(&mut q.pending)
            };
            if !self.opts.group_window.is_zero() {
                std::thread::sleep(self.opts.group_window);
                let mut q = self.queue.locked();
                group.append(&mut q.pending);
            }
            if !self.wait_for_room() {
                let why = "the write-ahead log is over its limits (twice storage.wal_max_bytes in closed \
                           segments, or rows in memory past twice storage.fold_memory_bytes) and the fold \
                           has not caught up; retry";
                for req in group {
                    let _ = req.reply.send(Err(StorageError::Unavailable(why.into())));
                }
                continue;
            }
            self.commit_group(group, helpers);
        }
    }

    /// Whether the log is over its hard limits: more than twice `max_log_bytes` in
    /// closed segments (which folds can always free; the open one cannot be dropped),
    /// or rows in memory past twice `memory_bytes`. The soft limits make the fold fold;
    /// these make writers wait for it. Checked before every group, so rows in memory
    /// pass the hard limit by at most one group (itself bounded by
    /// `storage.max_inflight_write_bytes`).
    pub fn over_limits(&self) -> bool {
        if self.unfolded_bytes() > self.opts.memory_bytes.saturating_mul(2) {
            return true;
        }
        let open = self.log.locked().len;
        self.bytes().saturating_sub(open) > self.opts.max_log_bytes.saturating_mul(2)
    }

    /// Bytes of rows waiting in memory to be folded, over every series.
    pub fn unfolded_bytes(&self) -> u64 {
        self.unfolded.get()
    }

    /// Waits, poking the fold, while the log is over its limits: false when
    /// `full_wait` passed and it still is (the group is refused). A closing store
    /// commits what is queued whatever the limits: its close folds everything.
    fn wait_for_room(&self) -> bool {
        let deadline = Instant::now() + self.opts.full_wait;
        while self.over_limits() && !self.is_stopping() {
            if Instant::now() >= deadline {
                return false;
            }
            *self.fold_wake.0.locked() = true;
            self.fold_wake.1.notify_all();
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// Appends the records `first..=last` (already encoded in `buf`) and syncs. A new
    /// segment is started first when the open one is full. On a failed write or sync
    /// the segment is cut back to where it was, so the refusal is true; if even that
    /// fails the log is poisoned.
    fn append(&self, buf: &[u8], first: u64, last: u64) -> Result<()> {
        let mut log = self.log.locked();
        let io_err = |name: String, e| StorageError::io(format!("{WAL_DIR}/{name}"), e);
        if log.len > 0 && log.len + buf.len() as u64 > self.opts.segment_bytes {
            let name = segment_name(first);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(&name))
                .map_err(|e| io_err(name.clone(), e))?;
            fsio::fsync_dir(&self.dir).map_err(|e| io_err(String::new(), e))?;
            let old = (log.first, first - 1, log.len);
            log.closed.push_back(old);
            log.file = file;
            log.first = first;
            log.len = 0;
        }
        let name = segment_name(log.first);
        let path = self.dir.join(&name);
        let wrote = failpoints::check(&path, failpoints::Op::Write)
            .and_then(|()| log.file.write_all(buf))
            .and_then(|()| failpoints::check(&path, failpoints::Op::Fsync))
            .and_then(|()| log.file.sync_data());
        match wrote {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                self.records.fetch_add(last + 1 - first, Ordering::Relaxed);
                log.len += buf.len() as u64;
                self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                debug_assert_eq!(
                    log.file.metadata().map(|m| m.len()).ok(),
                    Some(log.len),
                    "wal: segment length"
                );
                Ok(())
            }
            Err(e) => {
                let back = log.len;
                let undone = log.file.set_len(back).and_then(|()| log.file.sync_all());
                if let Err(u) = undone {
                    let why = format!(
                        "the write-ahead log could not be synced ({e}) nor cut back ({u}); writes are refused until the server restarts"
                    );
                    tracing::error!("{why}");
                    *self.poisoned.locked() = Some(why);
                }
                Err(io_err(name, e))
            }
        }
    }

    /// Removes the closed segments whose records are all folded: `keep_from` is the
    /// first lsn some series still holds in memory only (or past the last committed).
    pub fn remove_folded(&self, keep_from: u64) -> Result<usize> {
        let mut log = self.log.locked();
        let mut removed = 0;
        while let Some(&(first, last, len)) = log.closed.front() {
            if last >= keep_from {
                break;
            }
            let name = segment_name(first);
            fs::remove_file(self.dir.join(&name))
                .map_err(|e| StorageError::io(format!("{WAL_DIR}/{name}"), e))?;
            log.closed.pop_front();
            self.bytes.fetch_sub(len, Ordering::Relaxed);
            removed += 1;
        }
        if removed > 0 {
            let _ = fsio::fsync_dir(&self.dir);
        }
        Ok(removed)
    }

    /// Waits for a poke from the committer or `timeout`, whichever comes first.
    pub(super) fn wait_fold(&self, timeout: Duration) {
        let (m, c) = &self.fold_wake;
        let mut poked = m.locked();
        if !*poked {
            poked = c.wait_timeout_now(poked, timeout).0;
        }
        *poked = false;
    }
}
